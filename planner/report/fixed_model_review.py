"""The review document of a fixed-model plan (`planner report --model X --tokens D`, `optimize --model X --report`):
which GPU count and layout, how long, at what cost and why, as the budget review is written (HTML with embedded
figures and its Markdown twin, report.typeset).

`build_review(result, command)` gathers the numbers: the search's FixedModelPlan (search.fixed_model) and one
simulate of the chosen layout for its memory and step-time breakdowns. `document(review)` lays them out as blocks
with every number formatted; `figures(review)` draws them (report.plots). Nothing is searched here.
"""

from __future__ import annotations

from planner import __version__
from planner.cost.estimate import simulate
from planner.report.document import LAYOUT_LEGEND, cluster_blocks, hyperparameter_table_blocks, memory_risk
from planner.report.render import human_amount, human_bytes, human_count, human_days, human_days_range, human_seconds
from planner.report.render import layout_text, limits_given, peak_phase_text
from planner.report.review import MEMORY_PARTS, cluster_assumptions
from planner.report.runners_up import (band_check_sentences, limit_names, limits_met_text, missed_limit_text,
                                       searched_text)
from planner.search.fixed_model import FixedModelPlan, fixed_model_hyperparameters
from planner.search.budget import MEMORY_RISK_FRACTION

FIGURES = ("gpu_counts", "memory", "step_time")
MEMORY_LABELS = dict(MEMORY_PARTS)


def _label(key: str) -> str:
    return MEMORY_LABELS.get(key, key.replace("_", " "))


def build_review(result: FixedModelPlan, command: str = "") -> dict:
    """The numbers the fixed-model review shows: the plan itself, the chosen layout's breakdowns (simulate, as
    `optimize --model` prints them) and the cluster spec it rests on."""
    review = {"result": result, "command": command, "dtype": result.assumptions["dtype"],
              "cluster": cluster_assumptions(result.cluster, result.assumptions["dtype"]),
              "hyperparameters": fixed_model_hyperparameters(result), "chosen": None}
    chosen = result.chosen
    if chosen is not None:
        sim = simulate(result.model, chosen.search.layout(chosen.best), result.cluster)
        memory = sim["memory"]
        review["chosen"] = {
            "row": chosen.row, "goodput": chosen.search.goodput, "step_time_s": sim["step_time_s"],
            "memory_bytes": memory["total_bytes"], "hbm_bytes": memory["hbm_bytes"],
            "memory_peak": peak_phase_text(memory),  # the phase that holds it, as simulate's `peak:` line says
            # Every part, largest first: MoE and offload layouts have parts the budget review's dense plans do not.
            "memory_parts": sorted(((_label(k), float(v)) for k, v in sim["memory_parts"].items() if v > 0),
                                   key=lambda part: -part[1]),
            "time_parts": sorted(((k.replace("_", " "), float(v)) for k, v in sim["time"].items() if v > 0),
                                 key=lambda part: -part[1]),
        }
    return review


def _title(result: FixedModelPlan) -> str:
    tokens = f" on {human_count(result.tokens)} tokens" if result.tokens else ""
    return f"Training plan: {result.model.name} ({human_count(result.model.total_params)} params){tokens}, {result.cluster.name}"


def _limits_text(assumptions: dict) -> str:
    return ", ".join(limits_given(assumptions)) or "none (every GPU count given is planned)"


def _days_text(count) -> str:
    if count.days is None:
        return "-"
    return human_days(count.days) + (f" ({human_days_range(*count.days_band)})" if count.days_band else "")


def recommendation_blocks(review: dict) -> list:
    result, view = review["result"], review["chosen"]
    c, r = result.chosen, view["row"]
    nodes = -(-c.gpus // result.cluster.gpus_per_node)
    overlaps = [name for key, name in (("tp_comm_overlap", "tp communication"), ("dp_comm_overlap", "gradient reduce"))
                if r.get(key)]
    headroom = view["hbm_bytes"] - view["memory_bytes"]
    # The budget review's risk flag, at the fraction optimize flags (search.budget.MEMORY_RISK_FRACTION).
    risk = memory_risk({"memory_headroom_bytes": headroom, "hbm_bytes": view["hbm_bytes"]}, MEMORY_RISK_FRACTION)
    facts = [f"Layout: {layout_text(r)}, global batch {r['global_batch']:,} sequences"
             + (f" (overlaps: {', '.join(overlaps)})" if overlaps else "") + ".",
             f"Speed: step {human_seconds(r['step_time_s'])}, {r['tokens_per_s']:,.0f} tokens/s, MFU "
             f"{100 * r['mfu']:.1f}%, goodput {100 * view['goodput']:.1f}% (after failures, checkpoints, restarts and "
             "evaluation).",
             f"Memory: {human_bytes(view['memory_bytes'])} of {human_bytes(view['hbm_bytes'])} per GPU (headroom "
             f"{human_bytes(headroom)}).{risk}"]
    if c.days is not None:
        band = (f" (90% band {human_days_range(*c.days_band)}: the cost model's step-time error on held-out "
                "published runs)" if c.days_band else "")
        cost = f", ${human_amount(c.cost_usd)}" if c.cost_usd else ""
        facts.append(f"Time and cost: {human_days(c.days)}{band}, {human_amount(c.gpu_hours)} GPU-hours{cost}.")
    # The band check's warning, in the words `optimize --model` prints it.
    warning = "; ".join(band_check_sentences(result))
    if warning:
        facts.append(f"**Warning:** {warning}.")
    return [("p", f"Train on **{c.gpus} GPUs** ({nodes} node{'s' if nodes > 1 else ''} of {result.cluster.name}) "
                  f"with the fastest layout that fits{_rule_text(result)}."),
            ("list", facts)]


def _rule_text(result: FixedModelPlan) -> str:
    """How the count was chosen (search.fixed_model.plan_fixed_model)."""
    given = limit_names(result.assumptions)
    if "deadline" in given:
        return ": the fewest GPUs that meet the " + " and ".join(given)
    if given:
        return ": the fastest plan within the budget"
    if len([c for c in result.counts if c.search is not None]) > 1:
        return (f": the fastest count before scaling efficiency falls below {100 * result.assumptions['knee']:.0f}% "
                "of the smallest count's (the knee)")
    return ""


def counts_blocks(review: dict) -> list:
    result = review["result"]
    timed = bool(result.tokens)  # days, GPU-hours and cost need the tokens
    headers = ["GPUs", "best layout (or why none)", "step", "MFU", "scaling"] + (
        ["wall-clock", "GPU-hours", "cost"] if timed else [])
    rows = []
    for c in result.counts:
        if c.search is None:
            continue  # skipped by the bound: said once below the table
        if not c.feasible:
            rows.append([str(c.gpus), c.reason or "-"] + ["-"] * (len(headers) - 2))
            continue
        r = c.row
        mark = " (chosen)" if result.chosen is c else (" (knee)" if result.knee_gpus == c.gpus else "")
        rows.append([f"{c.gpus}{mark}", layout_text(r), human_seconds(r["step_time_s"]), f"{100 * r['mfu']:.1f}%",
                     f"{100 * c.scaling_efficiency:.0f}%"]
                    + ([_days_text(c), "-" if c.gpu_hours is None else human_amount(c.gpu_hours),
                        f"${human_amount(c.cost_usd)}" if c.cost_usd else "-"] if timed else []))
    skipped = [c for c in result.counts if c.search is None]
    skipped_text = ([("p", f"Not searched: {len(skipped)} count(s) from {skipped[0].gpus} to {skipped[-1].gpus} GPUs, "
                           f"each {skipped[0].reason}.")] if skipped else [])
    band = "; wall-clock in brackets is its 90% band" if timed else " (give --tokens for days, GPU-hours and cost)"
    return [("figure", "gpu_counts", "The best layout at each GPU count searched."),
            ("p", f"S{searched_text(result)[1:]}. "
                  "Each row is the fastest layout that fits at that count; scaling is tokens per second per GPU "
                  f"relative to the smallest count planned{band}. " + LAYOUT_LEGEND),
            ("table", headers, rows), *skipped_text]


def runners_up_blocks(review: dict) -> list:
    result = review["result"]
    ups, aside = result.runners_up, result.runners_up_set_aside
    if not ups and not aside:
        return []
    timed = bool(result.tokens)
    blocks = [("h2", "Runners-up"),
              ("p", f"On the chosen {result.chosen.gpus} GPUs, the fastest layout under each restriction the chosen "
                    "one does not meet (another stack, no pipeline or tensor parallelism, ZeRO-3, no recompute).")]
    if ups:
        blocks.append(("table", ["", "layout", "step", "MFU", "GiB/GPU"] + (["wall-clock", "GPU-hours"] if timed else []),
                       [[u["label"], layout_text(u), human_seconds(u["step_time_s"]), f"{100 * u['mfu']:.1f}%",
                         f"{u['memory_gib']:.1f}"] + ([human_days(u["days"]), human_amount(u["gpu_hours"])] if timed else [])
                        for u in ups]))
    if aside:
        blocks.append(("p", "Set aside: these miss a limit given on the chosen GPUs (slower layouts under the same "
                            "restriction miss it by more)."))
        blocks.append(("table", ["", "layout", "misses", "where it meets the limits"],
                       [[u["label"], layout_text(u),
                         "; ".join(missed_limit_text(limit, u, result.assumptions) for limit in u["violates"]),
                         limits_met_text(u, result.assumptions) if "meets_limits_at" in u else "-"] for u in aside]))
    return blocks


def breakdown_blocks(review: dict) -> list:
    view = review["chosen"]
    memory_rows = [[name, human_bytes(value)] for name, value in view["memory_parts"]]
    memory_rows += [["total", human_bytes(view["memory_bytes"])], ["HBM capacity", human_bytes(view["hbm_bytes"])]]
    step = view["step_time_s"]
    time_rows = [[name, human_seconds(value), f"{100 * value / step:.1f}%"] for name, value in view["time_parts"]]
    time_rows.append(["step", human_seconds(step), "100%"])
    return [("h2", "Memory per GPU"), ("figure", "memory", "Per-GPU memory of the chosen layout against HBM."),
            ("p", "The fullest pipeline stage's GPU. Model states shrink with ZeRO and tp/pp; activations grow with "
                  "the micro-batch and the sequence; the CUDA context, NCCL buffers and fragmentation come on top."),
            ("table", ["part", "per GPU"], memory_rows),
            *([("p", f"The peak is in {view['memory_peak']}.")] if view.get("memory_peak") else []),
            ("h2", "Step time"), ("figure", "step_time", "Where the chosen layout's step goes."),
            ("p", "One optimizer step; communication counts only where compute does not hide it."),
            ("table", ["part", "time", "share"], time_rows)]


def assumption_blocks(review: dict) -> list:
    result = review["result"]
    a, m = result.assumptions, result.model
    counts = [c.gpus for c in result.counts]
    batch = (f"{a['global_batch']:,} sequences (given)" if a.get("global_batch") else
             f"the {a['batch_rule']} batch law for the tokens, rounded to each layout's micro-batch x dp")
    rows = [("model", f"{m.name}: {human_count(m.total_params)} params, {m.layers} layers x {m.hidden} hidden, "
                      f"{m.heads} heads ({m.kv} kv), ffn {m.ffn_size}, vocabulary {m.vocab}, sequence {m.seq_len}"),
            ("tokens", human_count(result.tokens) if result.tokens else "not given (no days or cost)"),
            ("stacks", ", ".join(a["frameworks"])), ("precision", a["dtype"]), ("batch", batch),
            ("limits", _limits_text(a)),
            ("GPU counts planned", f"{len(counts)}, {counts[0]} to {counts[-1]}" if len(counts) > 1 else str(counts[0]))]
    return [("h2", "Assumptions"), *cluster_blocks(review["cluster"], review["dtype"]),
            ("h3", "Search"), ("table", ["", ""], [[k, str(v)] for k, v in rows])]


def document(review: dict) -> list:
    """The fixed-model review as blocks: ("h1"|"h2"|"h3"|"p", text), ("list", items), ("table", headers, rows),
    ("figure", name, caption), as report.typeset writes them."""
    result = review["result"]
    blocks = [("h1", _title(result)),
              ("p", f"Generated by planner {__version__}" + (f": `{review['command']}`." if review["command"] else "."))]
    if result.chosen is None:
        return blocks + [("h2", "No feasible plan"), ("list", result.explanation), *counts_blocks(review),
                         *assumption_blocks(review)]
    return blocks + [("h2", "Recommendation"), *recommendation_blocks(review),
                     ("h2", "GPU counts"), *counts_blocks(review),
                     *runners_up_blocks(review),
                     *hyperparameter_table_blocks(review["hyperparameters"]),
                     *breakdown_blocks(review),
                     *assumption_blocks(review)]


def figures(review: dict) -> dict[str, bytes]:
    """The review's figures by the names document() places them under (none without a plan)."""
    from planner.report import plots

    result, view = review["result"], review["chosen"]
    if view is None:
        return {}
    rows = [{"gpus": c.gpus, "mfu": float(c.row["mfu"]), "step_time_s": float(c.row["step_time_s"]),
             "days": c.days, "days_band": c.days_band} for c in result.counts if c.feasible]
    deadline = result.assumptions.get("deadline_s")
    label = f"{result.chosen.gpus} GPUs (chosen)"
    return {"gpu_counts": plots.gpu_counts(rows, result.chosen.gpus, None if deadline is None else deadline / 86400.0),
            "memory": plots.memory([(label, view["memory_parts"], view["memory_bytes"])], view["hbm_bytes"]),
            "step_time": plots.step_time([(label, view["time_parts"], view["step_time_s"])])}
