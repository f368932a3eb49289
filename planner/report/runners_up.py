"""The fixed-model plan's runners-up and warnings as text: the table of runners-up within the limits given, and for
each one set aside, what it misses and where its restriction meets the limits (search.fixed_model.runners_up,
where_restrictions_meet_limits); the band check (where_the_band_meets_limits); the account of layouts scored. Shared
by `optimize --model`, its --emit note and the fixed-model review document (report.fixed_model_review)."""

from __future__ import annotations

from planner.report.render import human_amount, human_days, human_days_range, human_seconds, layout_text, table

# The plan's limits, as the words the text uses and the assumptions' keys that hold them.
LIMITS = (("deadline", "deadline_s"), ("budget", "budget_gpu_hours"))


def limit_names(assumptions: dict) -> list[str]:
    """The names of the limits the user gave ('deadline', 'budget'), in the order the text names them; their values:
    report.render.limits_given."""
    return [name for name, key in LIMITS if assumptions.get(key) is not None]


def runner_up_lines(result) -> list[str]:
    """The runners-up table (search.fixed_model.runners_up: each within every limit given) and a line for each
    restriction whose fastest layout misses the deadline or budget, with what it would take."""
    ups, aside, c = result.runners_up, result.runners_up_set_aside, result.chosen
    lines = []
    if ups:
        timed = result.tokens is not None and result.tokens > 0
        given = " and ".join(limit_names(result.assumptions))
        lines += ["", f"runners-up on the chosen {c.gpus} GPUs (each the fastest under its restriction"
                  + (f", within the {given})" if given else ")")]
        # "batch": a restriction's fastest layout may round the batch to its own micro-batch x dp
        lines.append(table(["", "layout", "batch", "step", "MFU", "GiB/GPU"] + (["wall-clock", "GPU-h"] if timed else []),
                           [[u["label"], layout_text(u), str(u["global_batch"]), human_seconds(u["step_time_s"]),
                             f"{100 * u['mfu']:.1f}%", f"{u['memory_gib']:.1f}"]
                            + ([human_days(u["days"]), human_amount(u["gpu_hours"])] if timed else [])
                            for u in ups], align="llrrrr" + ("rr" if timed else "")))
    if aside:
        rule = ("the fastest GPU count within it, as the plan's" if result.assumptions.get("deadline_s") is None
                else "the smallest GPU count where it meets them")
        lines += ["", f"runners-up set aside: on the chosen {c.gpus} GPUs the fastest layout under each of these "
                      f"restrictions misses a limit given (slower ones miss it by more); under each, {rule}"]
        for u in aside:
            lines.append(f"  {u['label']} ({layout_text(u)}): "
                         + "; ".join(missed_limit_text(limit, u, result.assumptions) for limit in u["violates"]))
            if "meets_limits_at" in u:
                lines.append(f"    {limits_met_text(u, result.assumptions)}")
    return lines


def limits_pronoun(assumptions: dict) -> str:
    """'it' for one limit given, else 'the deadline and budget'."""
    given = limit_names(assumptions)
    return "it" if len(given) == 1 else "the " + " and ".join(given)


def count_span(counts: list[int]) -> str:
    """'64' or '64-512': the first and last of sorted GPU counts."""
    return f"{counts[0]}{'' if len(counts) == 1 else '-' + str(counts[-1])}"


def limits_met_text(entry: dict, assumptions: dict) -> str:
    """Where a set-aside runner-up's restriction meets every limit given (search.fixed_model.
    where_restrictions_meet_limits): 'meets it on 3072 GPUs: deepspeed tp8 ..., 63.2 days, 4,660,827 GPU-hours,
    $13,982,480', or 'no count up to 6144 GPUs meets it (8192-32768 not searched: ...)'; with --budget alone
    'fastest within it on 3072 GPUs: ...' (the count is chosen as the plan's is)."""
    limits = limits_pronoun(assumptions)
    budget_alone = limit_names(assumptions) == ["budget"]  # then the fastest count within it, as the plan's
    tried, skipped, met = entry["counts_tried"], entry["counts_not_tried"], entry["meets_limits_at"]
    not_searched = count_span(skipped) if skipped else ""
    unsearched = f" ({not_searched} not searched: the cost limit on further searches)" if skipped else ""
    if met is not None:
        cost = f", ${human_amount(met['cost_usd'])}" if met["cost_usd"] else ""
        where = f"fastest within it on {met['gpus']} GPUs" if budget_alone else f"meets {limits} on {met['gpus']} GPUs"
        return (f"{where}: {layout_text(met['layout'])}, {human_days(met['days'])}, "
                f"{human_amount(met['gpu_hours'])} GPU-hours{cost}{unsearched}")
    if not tried and skipped:
        return f"not searched on {not_searched} GPUs (the cost limit on further searches)"
    if not tried:
        return (f"no {'other' if budget_alone else 'larger'} GPU count is a candidate here (--gpus, --max-gpus, "
                f"the cluster's size){unsearched}")
    span = f"from {tried[0]} to {tried[-1]}" if budget_alone else f"up to {tried[-1]}"
    return f"no count {span} GPUs {'is within' if budget_alone else 'meets'} {limits}{unsearched}"


def missed_limit_text(limit: str, spent: dict, assumptions: dict) -> str:
    """'109.9 days, past the 90.0 days deadline' or '4,251,925 GPU-hours, over the budget of 3,500,000': a plan's
    `spent` days or GPU-hours against the `limit` ("deadline", "budget") it misses (search.fixed_model.missed_limits)."""
    if limit == "deadline":
        return f"{human_days(spent['days'])}, past the {human_days(assumptions['deadline_s'] / 86400.0)} deadline"
    return f"{human_amount(spent['gpu_hours'])} GPU-hours, over the budget of {human_amount(assumptions['budget_gpu_hours'])}"


def searched_text(result) -> str:
    """"searched N layouts over M GPU count(s)[, then K more over J count(s) for the runners-up and the band check]":
    the account of every layout the fixed-model plan scored, the choice's searches and those made after it
    (FixedModelPlan.further_searches)."""
    scored = sum(len(c.search) for c in result.counts if c.search is not None)
    searched = sum(1 for c in result.counts if c.search is not None)
    text = f"searched {scored:,} layouts over {searched} GPU count(s)"
    further = result.further_searches
    if not further:
        return text
    more = sum(s["layouts_scored"] for s in further)
    counts = len({s["gpus"] for s in further})
    purposes = " and ".join(dict.fromkeys(f"the {s['purpose']}" for s in further))
    return f"{text}, then {more:,} more over {counts} count(s) for {purposes}"


def band_check_sentences(result) -> list[str]:
    """When the chosen plan meets --deadline / --budget at its point estimate but not at the slow end of its
    step-time band: what it misses there, then the GPU count whose plan meets the limits even there (or why none
    is named) (search.fixed_model.where_the_band_meets_limits). Plain sentences: band_check_lines sets them as the
    CLI's warning, the fixed-model review as its own."""
    check = result.band_check
    if not check:
        return []
    missed = "; ".join(missed_limit_text(limit, check["slow_end"], result.assumptions) for limit in check["misses"])
    sentences = [f"at the slow end of its step-time band it misses the {' and '.join(check['misses'])}: {missed}"]
    limits = limits_pronoun(result.assumptions)
    met, tried, skipped = check["meets_at"], check["counts_tried"], check["counts_not_tried"]
    unsearched = f" ({count_span(skipped)} not searched: the cost limit on further searches)" if skipped else ""
    if met is not None:
        band = f" (band {human_days_range(*met['days_band'])})" if met["days_band"] else ""
        sentences.append(f"{met['gpus']} GPUs meet {limits} even there: {layout_text(met['layout'])}, "
                         f"{human_days(met['days'])}{band}, {human_amount(met['gpu_hours'])} GPU-hours "
                         f"({human_amount(met['slow_end']['gpu_hours'])} at the slow end){unsearched}")
    elif tried or skipped:
        span = f"of {count_span(tried)} GPUs" if tried else "searched"
        sentences.append(f"no other count {span} meets {limits} at its band's slow end{unsearched}")
    else:
        sentences.append(f"no other GPU count allowed (--gpus, --max-gpus, the cluster's size) can meet {limits} there")
    return sentences


def band_check_lines(result) -> list[str]:
    """band_check_sentences as the CLI's warning lines."""
    sentences = band_check_sentences(result)
    return [("  warning    " if i == 0 else "             ") + text for i, text in enumerate(sentences)]
