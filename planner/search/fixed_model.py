"""Fixed-model planning: for a model already chosen, the GPU count, layout, days, GPU-hours and cost.

Each GPU count is a layout search (search/layouts.py). Tokens turn the best step time into time and
cost: days = tokens / (tokens/s x goodput), GPU-hours = GPUs x that, cost at the cluster price, with
the step-time band (error_bands: the cluster's own calibration, else the published runs). Which count is chosen:

  --deadline     the smallest count whose best layout meets it (within --budget when given too);
  --budget       the count whose plan is fastest among those whose GPU-hours fit it (the fastest plan the
                 budget pays for: usually the largest affordable count, a smaller one where a larger count is
                 slower). The scaling knee does not limit it: a count past the knee is chosen when it is the
                 fastest affordable (the CLI refuses --knee here);
  a sweep        (several --gpus): the fastest count before the knee, where scaling efficiency (tokens/s
                 per GPU relative to the smallest count's) falls below --knee (the largest, unless a larger
                 count is slower);
  batch          without --global-batch each layout rounds the batch law's target to micro-batch x dp, and a
                 layout whose batch exceeds the law's largest useful batch (laws.batch_size.max_batch_tokens,
                 the budget search's limit) is ruled out;
  one --gpus     that count.

Counts that cannot meet the deadline even at the best FLOP rate any kernel reaches
(gemm.flop_rate_ceiling) are skipped without a search, as the budget search's bounds do.

Runners-up (runners_up) are other layouts at the chosen count, each the fastest under one restriction (no
pipeline, no tensor parallelism, ZeRO-3, no recompute, another stack). They meet every limit the chosen plan
meets: its GPU count, memory and batch limit by construction, and --deadline / --budget by a check: a slower
layout on the same GPUs takes longer and spends more GPU-hours, so one can miss what the chosen plan meets
(Llama 3 70B, 15T tokens, 90 days: the chosen 1,536 GPUs take 89.6 days, their fastest layout without tensor
parallelism 110). Those are set aside with the limits they miss, for the report to name, never shown as plans,
each with where its restriction does meet them (where_restrictions_meet_limits): with --deadline the smallest
count whose fastest layout under it meets every limit given (2,048 GPUs there, 83 days), with --budget alone the
fastest count within it, as the plan's count is chosen.

The plan's step time carries a 90% band (error_bands). Where the chosen plan meets --deadline / --budget at its
point estimate but not at the band's slow end (the same 90-day plan: 89.1 days, band 87.3-95.4),
where_the_band_meets_limits says so and names the count whose plan meets the limits even there (2,048 GPUs,
67.5 days, band 66.2-72.3), by the plan's own rule; the plan itself stays the point estimate's choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from planner.cost.gemm import flop_rate_ceiling, rank_share
from planner.frameworks import FRAMEWORK_CODES
from planner.calibrate.error_bands import interval as step_time_interval
from planner.calibrate.error_bands import slow_end_ratios
from planner.specs.hardware import ClusterSpec
from planner.specs.model import ModelSpec, model_training_flops
from planner.specs.units import human_amount
from planner.search.layouts import DEFAULT_FRAMEWORKS, LayoutSearch, search_layouts
from planner.search.space import LOSSLESS_HIERARCHY

DEFAULT_KNEE = 0.8  # assumed: below 80% scaling efficiency more GPUs mostly buy waste
# Assumed, a cost limit and no modelling constant: at most this many GPU counts searched anew to find where a
# set-aside runner-up's restriction meets the limits (where_restrictions_meet_limits); one search there of a 70B
# model's restricted layouts takes 0.1-0.3 s on the 2-core development machine.
MAX_RESTRICTED_SEARCHES = 4


@dataclass
class CountPlan:
    """The best layout at one GPU count and what it means for the run."""

    gpus: int
    search: LayoutSearch | None  # None: skipped by the bound
    best: int | None
    reason: str = ""  # why there is no plan at this count
    days: float | None = None
    gpu_hours: float | None = None
    cost_usd: float | None = None
    days_band: list | None = None
    scaling_efficiency: float | None = None
    # With tokens: the whole optimizer steps the tokens take (the last one full: a step trains a whole global
    # batch) and the tokens they train, at least the tokens asked.
    steps: int | None = None
    trained_tokens: float | None = None
    # The limits given (--deadline, --budget) this count's plan misses ("deadline", "budget"): a count can have
    # a layout that fits and still be out of bounds.
    misses: list = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return self.best is not None and not self.reason

    @property
    def row(self) -> dict | None:
        return self.search.rows([self.best])[0] if self.best is not None else None


@dataclass
class FixedModelPlan:
    model: ModelSpec
    cluster: ClusterSpec
    tokens: float | None
    counts: list[CountPlan]
    chosen: CountPlan | None
    explanation: list[str] = field(default_factory=list)
    knee_gpus: int | None = None
    assumptions: dict = field(default_factory=dict)
    # Other layouts at the chosen count (runners_up): those within every limit given, and those set aside with
    # the limits they miss ("violates": ["deadline", "budget"]).
    runners_up: list[dict] = field(default_factory=list)
    runners_up_set_aside: list[dict] = field(default_factory=list)
    # The counts were the user's own list (--gpus), not the cluster's grid up to --max-gpus: the hint for a plan too
    # slow then asks for larger counts in that list.
    counts_listed: bool = False
    # Set when the chosen plan meets --deadline / --budget at its point estimate but not at the slow end of its
    # step-time band (where_the_band_meets_limits): the limits it then misses, and where a plan meets them there.
    band_check: dict | None = None
    # The searches made after the choice, at counts it had not searched (where_restrictions_meet_limits,
    # where_the_band_meets_limits): {"gpus", "layouts_scored", "purpose": "runners-up" | "band check"}, so the
    # search's own account ("searched N layouts") counts every layout scored.
    further_searches: list[dict] = field(default_factory=list)


def fastest_days(model: ModelSpec, cluster: ClusterSpec, gpus: int, tokens: float, dtype: str) -> float:
    """Fewest days `tokens` can take on `gpus` GPUs: every FLOP at the cost model's ceiling rate, goodput 1."""
    rate = cluster.peak_flops_per_s(dtype) * flop_rate_ceiling(cluster) * float(rank_share(gpus, cluster)) * gpus
    # The model's own (active, for MoE) FLOPs per token, counted as the cost model's MFU counts them.
    return tokens * float(model_training_flops(model, 1.0, causal=True)["total"]) / rate / 86400.0


def evaluate_count(model, cluster, gpus, *, tokens, global_batch, frameworks, dtype, batch_rule,
                   min_headroom=0.0, moe_load_imbalance=1.0, hierarchy=LOSSLESS_HIERARCHY,
                   grad_reduce_in_fp32=None) -> CountPlan:
    search = search_layouts(model, cluster, gpus, global_batch=global_batch, tokens=tokens, frameworks=frameworks,
                            dtype=dtype, batch_rule=batch_rule, min_headroom=min_headroom,
                            moe_load_imbalance=moe_load_imbalance, hierarchy=hierarchy,
                            grad_reduce_in_fp32=grad_reduce_in_fp32)
    best = search.best
    if best is None:
        # The check the layouts came closest to passing: reasons are coded in the order the layouts are checked
        # (HBM, host memory, NVMe, the batch limit), so the last one any layout failed on is a check that layout
        # fails with every earlier one passed. The most common reason named memory where layouts that fit it failed
        # only the batch limit, and the advice (more GPUs) could not help (the fixed-model audit).
        reasons = search.reason_counts()
        why = ("no layout divides the model and batch" if len(search) == 0
               else list(reasons)[-1] if reasons else "no layout fits")
        return CountPlan(gpus=gpus, search=search, best=None, reason=why)
    plan = CountPlan(gpus=gpus, search=search, best=best)
    if tokens:
        spent = layout_time_and_cost(search, best, tokens)
        plan.days, plan.gpu_hours, plan.cost_usd = spent["days"], spent["gpu_hours"], spent["cost_usd"]
        plan.steps, plan.trained_tokens = spent["steps"], spent["trained_tokens"]
        row = search.rows([best])[0]
        band = step_time_interval(float(search.step_time_s[best]), row["framework"], search.cluster)
        if band is not None:
            step = float(search.step_time_s[best])
            plan.days_band = [plan.days * band["low_s"] / step, plan.days * band["high_s"] / step]
    return plan


def layout_time_and_cost(search: LayoutSearch, i: int, tokens: float) -> dict:
    """Days, GPU-hours and cost of training `tokens` on layout i of `search`: the whole steps they take (a step
    trains its whole global batch, so the last one is full: `steps`, `trained_tokens`) at its trained tokens per
    second (tokens/s x its stack's goodput), on all the search's GPUs, at the cluster's price."""
    step_s = float(search.step_time_s[i])
    tokens_per_step = int(search.arrays["global_batch"][i]) * search.model.seq_len  # exact: whole sequences
    steps = max(1, math.ceil(tokens / tokens_per_step))
    seconds = steps * step_s / float(search.goodputs[i])
    gpu_hours = search.gpus * seconds / 3600.0
    price = search.cluster.price_per_accelerator_hour
    return {"days": seconds / 86400.0, "gpu_hours": gpu_hours, "cost_usd": gpu_hours * price if price else None,
            "steps": steps, "trained_tokens": steps * tokens_per_step}


def missed_limits(days: float, gpu_hours: float, deadline_s: float | None, budget_gpu_s: float | None) -> list[str]:
    """The limits given that a plan of `days` and `gpu_hours` misses ("deadline", "budget"), by the comparisons
    plan_fixed_model chooses the count with."""
    return ([] if deadline_s is None or days * 86400.0 <= deadline_s else ["deadline"]) + \
           ([] if budget_gpu_s is None or gpu_hours * 3600.0 <= budget_gpu_s else ["budget"])


def plan_fixed_model(model: ModelSpec, cluster: ClusterSpec, gpu_options: list[int], *, tokens: float | None = None,
                     global_batch: int | None = None, frameworks=DEFAULT_FRAMEWORKS, dtype: str | None = None,
                     deadline_s: float | None = None, budget_gpu_s: float | None = None, knee: float = DEFAULT_KNEE,
                     batch_rule: str = "step-law", min_headroom: float = 0.0,
                     moe_load_imbalance: float = 1.0, hierarchy: tuple = LOSSLESS_HIERARCHY,
                     counts_listed: bool = False, grad_reduce_in_fp32: bool | None = None) -> FixedModelPlan:
    """Evaluate GPU counts and choose one (module docstring). `moe_load_imbalance`: MoE models' busiest
    expert rank's load over the mean (layout.Layout.moe_load_imbalance); `hierarchy` False searches flat
    ZeRO-3 only (no ZeRO++ / MiCS / HSDP: search_layouts). `dtype` None: the cluster's own training format
    (ClusterSpec.default_training_dtype). `grad_reduce_in_fp32`: the gradient reduction's dtype of every layout
    (search_layouts); None: each stack's default."""
    dtype = dtype or cluster.default_training_dtype
    common = dict(tokens=tokens, global_batch=global_batch, frameworks=tuple(frameworks), dtype=dtype,
                  batch_rule=batch_rule, min_headroom=min_headroom, moe_load_imbalance=moe_load_imbalance,
                  hierarchy=hierarchy, grad_reduce_in_fp32=grad_reduce_in_fp32)
    options = sorted(set(int(g) for g in gpu_options))
    result = FixedModelPlan(model=model, cluster=cluster, tokens=tokens, counts=[], chosen=None, counts_listed=counts_listed,
                            assumptions={"frameworks": list(frameworks), "dtype": dtype, "knee": knee,
                                         "global_batch": global_batch, "batch_rule": batch_rule,
                                         "deadline_s": deadline_s, "budget_gpu_hours": None if budget_gpu_s is None
                                         else budget_gpu_s / 3600.0,
                                         **({"moe_load_imbalance": moe_load_imbalance} if model.is_moe else {}),
                                         **({} if grad_reduce_in_fp32 is None
                                            else {"grad_reduce_in_fp32": grad_reduce_in_fp32})})
    if deadline_s is not None and tokens:
        for gpus in options:
            if fastest_days(model, cluster, gpus, tokens, dtype) * 86400.0 > deadline_s:
                result.counts.append(CountPlan(gpus=gpus, search=None, best=None,
                                               reason="misses the deadline even at the best FLOP rate"))
                continue
            plan = evaluate_count(model, cluster, gpus, **common)
            result.counts.append(plan)
            if plan.feasible and not missed_limits(plan.days, plan.gpu_hours, deadline_s, budget_gpu_s):
                result.chosen = plan
                break
    elif budget_gpu_s is not None and tokens:
        # The fastest plan within the budget: more GPUs are not always faster (past the scaling knee a larger
        # count can take longer), so counts below the first affordable one are searched too, down to where even
        # the best FLOP rate (fastest_days, falling with the count) cannot beat the fastest found.
        for gpus in reversed(options):
            if result.chosen is not None and fastest_days(model, cluster, gpus, tokens, dtype) >= result.chosen.days:
                break
            plan = evaluate_count(model, cluster, gpus, **common)
            result.counts.insert(0, plan)
            if (plan.feasible and not missed_limits(plan.days, plan.gpu_hours, None, budget_gpu_s)
                    and (result.chosen is None or plan.days < result.chosen.days)):
                result.chosen = plan
    else:
        result.counts = [evaluate_count(model, cluster, gpus, **common) for gpus in options]
    _scaling(result, knee)
    for count in result.counts:
        if count.feasible and count.days is not None:
            count.misses = missed_limits(count.days, count.gpu_hours, deadline_s, budget_gpu_s)
    if result.chosen is None and deadline_s is None and budget_gpu_s is None:
        feasible = [c for c in result.counts if c.feasible]
        if feasible:
            before_knee = [c for c in feasible if result.knee_gpus is None or c.gpus < result.knee_gpus]
            # The fastest of them (the largest count, unless a larger one is slower): fewer GPUs on ties.
            speed = lambda c: float(c.search.tokens_per_s[c.best]) * c.search.goodput  # noqa: E731
            result.chosen = max(before_knee or feasible, key=lambda c: (speed(c), -c.gpus))
    if result.chosen is None:
        result.explanation = _explain(result, deadline_s, budget_gpu_s, min_headroom)
    else:
        result.runners_up, result.runners_up_set_aside = runners_up(result.chosen, tokens, deadline_s, budget_gpu_s)
        where_restrictions_meet_limits(result, options, common, deadline_s, budget_gpu_s)
        where_the_band_meets_limits(result, options, common, deadline_s, budget_gpu_s)
    return result


def fixed_model_hyperparameters(result: FixedModelPlan) -> dict | None:
    """Learning rate, schedule and batch of the chosen plan (planner.laws.hyperparameters), with --tokens."""
    if result.chosen is None or not result.tokens:
        return None
    from planner.laws.hyperparameters import plan_hyperparameters
    row = result.chosen.row
    return plan_hyperparameters(float(result.model.non_embedding_params), result.tokens,
                                float(row["global_batch"] * result.model.seq_len),
                                batch_rule=result.assumptions["batch_rule"])  # the rule the batch was sized by


def slow_end(count: CountPlan) -> dict:
    """Days and GPU-hours of `count`'s plan at the slow end of its step-time band (its days_band's upper end;
    the point estimate where no band is known): the band scales the step, and with it days and GPU-hours."""
    ratio = 1.0 if count.days_band is None else count.days_band[1] / count.days
    return {"days": count.days * ratio, "gpu_hours": count.gpu_hours * ratio}


def where_the_band_meets_limits(result: FixedModelPlan, options: list[int], common: dict,
                                deadline_s: float | None, budget_gpu_s: float | None) -> None:
    """result.band_check, when the chosen plan meets --deadline / --budget at its point estimate but misses one at
    the slow end of its 90% step-time band (error_bands: the stack's validate residuals, or the cluster's
    calibration): the limits it misses there ("misses"), its days and GPU-hours there ("slow_end"), and
    "meets_at": the GPU count whose plan meets every limit given even at its band's slow end, chosen by the
    plan's own rule (with --deadline the smallest such count above the chosen one; with --budget alone the
    fastest, walked down from the largest), with "counts_tried" / "counts_not_tried" (the cost limit,
    MAX_RESTRICTED_SEARCHES, on counts the choice did not search).

    The plan itself stays the point estimate's choice: the band is the model's error on held-out published runs,
    and the user decides whether to buy that margin. A count whose plan cannot meet the limits at the slow end
    even at the best FLOP rate (fastest_days x the smallest slow-end ratio of the stacks searched) is passed
    without a search."""
    chosen, tokens = result.chosen, result.tokens
    if chosen is None or not tokens or chosen.days_band is None or (deadline_s is None and budget_gpu_s is None):
        return
    spent = slow_end(chosen)
    misses = missed_limits(spent["days"], spent["gpu_hours"], deadline_s, budget_gpu_s)
    if not misses:
        return
    check = {"misses": misses, "slow_end": spent, "meets_at": None, "counts_tried": [], "counts_not_tried": []}
    result.band_check = check
    least_ratio = float(np.min(slow_end_ratios(result.cluster, common["frameworks"])))
    fastest = deadline_s is None  # --budget alone: the fastest count within it; else the smallest
    walk = _counts_to_walk(options, chosen.gpus, fastest)
    evaluated = {c.gpus: c for c in result.counts}
    met, searches_left = None, MAX_RESTRICTED_SEARCHES
    for gpus in walk:
        bound = fastest_days(result.model, result.cluster, gpus, tokens, common["dtype"])
        if met is not None and bound >= met.days:  # (--budget alone) no plan here can be faster than the one met
            break
        plan = evaluated.get(gpus)
        if plan is None or plan.search is None:
            there = bound * least_ratio  # the fewest days any plan here can take at its band's slow end
            if missed_limits(there, gpus * there * 24.0, deadline_s, budget_gpu_s):
                continue
            if not searches_left:
                check["counts_not_tried"].append(gpus)
                continue
            searches_left -= 1
            plan = evaluate_count(result.model, result.cluster, gpus, **common)
            _record_search(result, gpus, plan.search, "band check")
        check["counts_tried"].append(gpus)
        there = slow_end(plan) if plan.feasible else None
        if there is None or missed_limits(there["days"], there["gpu_hours"], deadline_s, budget_gpu_s):
            continue
        if met is None or plan.days < met.days:
            met = plan
        if not fastest:
            break
    if met is not None:
        check["meets_at"] = {"gpus": met.gpus, "layout": met.row, "days": met.days, "days_band": met.days_band,
                             "gpu_hours": met.gpu_hours, "cost_usd": met.cost_usd, "slow_end": slow_end(met)}
    check["counts_tried"].sort()
    check["counts_not_tried"].sort()


# Runners-up that differ materially from the best: each the fastest under its own restriction, as masks
# over the search's layout arrays (besides these, the fastest on each other stack searched).
RUNNER_UP_RULES = (
    ("fastest without pipeline parallelism", lambda a: a["pp"] == 1),
    ("fastest without tensor parallelism", lambda a: a["tp"] == 1),
    ("fastest with ZeRO-3 / FSDP", lambda a: a["zero"] == 3),
    ("fastest without recompute", lambda a: a["recompute"] == 0),
)


def restrictions(search: LayoutSearch) -> list[tuple]:
    """(label, mask over layout arrays, stack or None) for each runner-up rule of `search`: RUNNER_UP_RULES and
    one per stack other than the best layout's (its stack named, so a search for it alone need enumerate no other)."""
    best_code = search.arrays["framework"][int(search.order[0])]
    return ([(label, rule, None) for label, rule in RUNNER_UP_RULES]
            + [(f"fastest on {name}", lambda a, c=code: a["framework"] == c, name)
               for name, code in FRAMEWORK_CODES.items() if code != best_code])


def fastest_under(search: LayoutSearch, rule) -> int | None:
    """The fastest layout of `search` (its order: within memory and the batch limit, most trained tokens per
    second first) that `rule` keeps, or None."""
    kept = search.order[np.asarray(rule(search.arrays), dtype=bool)[search.order]]
    return int(kept[0]) if len(kept) else None


def runners_up(count: CountPlan, tokens: float | None = None, deadline_s: float | None = None,
               budget_gpu_s: float | None = None) -> tuple[list[dict], list[dict]]:
    """(shown, set aside): for each restriction the chosen layout does not already satisfy, the fastest layout
    of `count` under it (count.search.order: those within memory and the batch limit, most trained tokens per
    second first), as a row with its days, GPU-hours and cost for `tokens`. Set aside, with "violates", are
    those that miss the deadline or budget; a slower layout under the same restriction would miss it by more
    (time and GPU-hours on these GPUs fall with the trained tokens per second the order ranks by)."""
    search = count.search
    order = search.order
    arrays = {key: values[order] for key, values in search.arrays.items()}
    best = int(order[0])
    shown, set_aside, seen = [], [], {best}
    for label, rule, _ in restrictions(search):
        if rule({k: v[[0]] for k, v in arrays.items()})[0]:
            continue  # the best already satisfies it
        hits = np.flatnonzero(rule(arrays))
        if not len(hits) or int(order[hits[0]]) in seen:
            continue
        i = int(order[hits[0]])
        seen.add(i)
        spent = layout_time_and_cost(search, i, tokens) if tokens else {"days": None, "gpu_hours": None,
                                                                        "cost_usd": None}
        violates = missed_limits(spent["days"], spent["gpu_hours"], deadline_s, budget_gpu_s) if tokens else []
        record = {"label": label, **search.rows([i])[0], **spent, "violates": violates}
        (set_aside if violates else shown).append(record)
    return shown, set_aside


def where_restrictions_meet_limits(result: FixedModelPlan, options: list[int], common: dict,
                                   deadline_s: float | None, budget_gpu_s: float | None) -> None:
    """Beside each set-aside runner-up, "meets_limits_at": the GPU count of `options` (the candidates the choice
    walked) where the fastest layout under its restriction meets every limit given, picked by the chosen count's
    own rule, with that layout, days, GPU-hours and cost (None where no count tried does); "counts_tried" and
    "counts_not_tried" (left unsearched by the cost limit, MAX_RESTRICTED_SEARCHES).

    With --deadline: the smallest such count. Only counts above the chosen one can be: each smaller count's best
    layout misses a limit (or was skipped by the bound, or fits nothing), and a restricted one, no faster on the
    same GPUs, takes as long and spends as much or more. With --budget alone: the fastest such count, as the
    plan's (usually fewer GPUs: they spend fewer GPU-hours and take longer), walked down from the largest and
    stopped where even the best FLOP rate cannot beat the fastest found (fastest_days), as the choice is.
    Counts the choice searched are reused; others get one search of the layouts the restrictions still open
    there keep (search_layouts' `restrict`); a count that misses the limits even at the best FLOP rate is
    passed without one."""
    aside, tokens, chosen = result.runners_up_set_aside, result.tokens, result.chosen
    if not aside or not tokens:
        return
    rule_of = {label: (rule, stack) for label, rule, stack in restrictions(chosen.search)}
    searched = {c.gpus: c.search for c in result.counts if c.search is not None}
    for entry in aside:
        entry.update(meets_limits_at=None, counts_tried=[], counts_not_tried=[])
    fastest = deadline_s is None  # --budget alone: the fastest count within it; else the smallest
    walk = _counts_to_walk(options, chosen.gpus, fastest)
    searches_left = MAX_RESTRICTED_SEARCHES
    for gpus in walk:
        bound = fastest_days(result.model, result.cluster, gpus, tokens, common["dtype"])
        # Still open: not met yet, or (--budget alone) met on more GPUs, which this count could beat.
        open_ = [e for e in aside if e["meets_limits_at"] is None or (fastest and bound < e["meets_limits_at"]["days"])]
        if not open_:
            break
        search = searched.get(gpus)
        if search is None and not missed_limits(bound, gpus * bound * 24.0, deadline_s, budget_gpu_s):
            if not searches_left:
                for entry in open_:
                    entry["counts_not_tried"].append(gpus)
                continue
            searches_left -= 1
            search = _restricted_search(result, gpus, [rule_of[e["label"]] for e in open_], common)
            _record_search(result, gpus, search, "runners-up")
        for entry in open_:
            entry["counts_tried"].append(gpus)
            i = None if search is None else fastest_under(search, rule_of[entry["label"]][0])
            spent = None if i is None else layout_time_and_cost(search, i, tokens)
            if spent is None or missed_limits(spent["days"], spent["gpu_hours"], deadline_s, budget_gpu_s) or (
                    entry["meets_limits_at"] is not None and spent["days"] >= entry["meets_limits_at"]["days"]):
                continue
            entry["meets_limits_at"] = {"gpus": gpus, "layout": search.rows([i])[0], **spent}
    for entry in aside:
        entry["counts_tried"].sort()
        entry["counts_not_tried"].sort()


def _record_search(result: FixedModelPlan, gpus: int, search: LayoutSearch, purpose: str) -> None:
    result.further_searches.append({"gpus": gpus, "layouts_scored": len(search), "purpose": purpose})


def _counts_to_walk(options: list[int], chosen_gpus: int, fastest: bool) -> list[int]:
    """The counts other than the chosen one where a limit may be met by the plan's own rule: with --budget alone
    (`fastest`) every other count, largest first; else the larger ones, smallest first."""
    return [g for g in sorted(options, reverse=fastest) if g != chosen_gpus and (fastest or g > chosen_gpus)]


def _restricted_search(result: FixedModelPlan, gpus: int, rules: list[tuple], common: dict) -> LayoutSearch:
    """The layouts on `gpus` GPUs that any of `rules` ((mask, stack or None) pairs) keeps, scored as the choice's
    searches are; only the stacks named when every rule names one."""
    stacks = {stack for _, stack in rules}
    frameworks = common["frameworks"] if None in stacks else tuple(f for f in common["frameworks"] if f in stacks)
    return search_layouts(result.model, result.cluster, gpus, **{**common, "frameworks": frameworks},
                          restrict=lambda a: np.logical_or.reduce([rule(a) for rule, _ in rules]))


def _scaling(result: FixedModelPlan, knee: float) -> None:
    """Scaling efficiency of each feasible count relative to the smallest feasible one, and the knee."""
    feasible = [c for c in result.counts if c.feasible]
    if not feasible:
        return
    base = feasible[0]
    base_rate = float(base.search.tokens_per_s[base.best]) * base.search.goodput / base.gpus
    for count in feasible:
        rate = float(count.search.tokens_per_s[count.best]) * count.search.goodput / count.gpus
        count.scaling_efficiency = rate / base_rate
    below = [c.gpus for c in feasible if c.scaling_efficiency < knee]
    result.knee_gpus = below[0] if below else None


def _within_limit(search: LayoutSearch) -> np.ndarray:
    return np.ones(len(search.memory_bytes), dtype=bool) if search.within_batch_limit is None else search.within_batch_limit


def _memory_binds_line(result: FixedModelPlan, min_headroom: float) -> str:
    """Why memory binds: HBM itself, or the --min-headroom margin, when some layout ruled out for GPU memory
    would fit within HBM without it (then lowering the margin is the first thing to relax)."""
    hbm = result.cluster.accelerator.hbm_bytes
    margin_only = [c.search.memory_bytes[c.search.fits_without_headroom & _within_limit(c.search)]
                   for c in result.counts if c.search is not None and c.search.fits_without_headroom is not None]
    smallest = min((float(np.min(m)) for m in margin_only if len(m)), default=None)
    if min_headroom and smallest is not None:
        return (f"memory binds through the {100 * min_headroom:g}% --min-headroom: the smallest layout needs "
                f"{smallest / 2**30:.2f} GiB per GPU, within the {hbm / 2**30:.2f} GiB of HBM but not the "
                f"{hbm * (1 - min_headroom) / 2**30:.2f} GiB the margin leaves; lower --min-headroom, allow more "
                "GPUs, a cluster with more HBM, or offload")
    return ("memory binds: no layout of this model fits at these GPU counts; allow more GPUs, "
            "a cluster with more HBM, or offload")


def _more_gpus_hint(result: FixedModelPlan) -> str:
    """What to relax for a plan too slow: more GPUs while the cluster has more than the largest count searched; at
    its whole size (where --gpus past it is refused) only a longer deadline or a larger cluster."""
    capacity = result.cluster.total_gpus
    if max(c.gpus for c in result.counts) >= capacity:
        return (f"the cluster's {capacity:,} GPUs were searched: allow a longer --deadline, or a cluster spec with more "
                "nodes (max_nodes)")
    if result.counts_listed:
        return "give larger counts (--gpus) or a longer --deadline"
    return "allow more GPUs (--max-gpus) or a longer --deadline"


def _explain(result: FixedModelPlan, deadline_s, budget_gpu_s, min_headroom: float = 0.0) -> list[str]:
    # GPU-hours as every command prints them: grouped digits, exponent form where a double's digits end (a
    # --tokens 1e25 plan needs 2.5e+17 GPU-hours).

    lines = [f"{c.gpus} GPUs: {c.reason}" for c in result.counts if c.reason]
    feasible = [c for c in result.counts if c.feasible]
    if not feasible:
        reasons = {c.reason for c in result.counts}
        if any("memory" in r for r in reasons):
            lines.append(_memory_binds_line(result, min_headroom))
        if any("divides" in r for r in reasons):
            lines.append("batch divisibility binds: no data-parallel size divides --global-batch at these counts")
        if any("deadline" in r for r in reasons):
            largest = max(c.gpus for c in result.counts)
            bound = fastest_days(result.model, result.cluster, largest, result.tokens, result.assumptions["dtype"])
            lines.append(f"the deadline binds: even the largest count allowed cannot finish in time ({largest} GPUs "
                         f"need at least {bound:.1f} days at the best FLOP rate)")
        if any("batch law" in r for r in reasons):
            lines.append("the batch limit binds: at these counts every layout's micro-batch x data-parallel size "
                         "exceeds the largest useful global batch for these tokens (the batch law's limit); "
                         "allow fewer GPUs or give --global-batch")
        return lines
    if deadline_s is not None:
        fastest = min(feasible, key=lambda c: c.days)
        in_time = [c for c in feasible if c.days * 86400.0 <= deadline_s]
        # Whether any count could be within the budget at any duration: if none can, no longer deadline helps. A
        # count the bound skipped costs at least its GPU-hours at the best FLOP rate (fastest_days).
        cheapest_any = min(feasible, key=lambda c: c.gpu_hours)
        over_budget = budget_gpu_s is not None and cheapest_any.gpu_hours * 3600.0 > budget_gpu_s and all(
            fastest_days(result.model, result.cluster, c.gpus, result.tokens, result.assumptions["dtype"])
            * 86400.0 * c.gpus > budget_gpu_s for c in result.counts if not c.feasible and c.search is None)
        if in_time and budget_gpu_s is not None:  # some plan meets the deadline: the budget is what binds
            cheapest = min(in_time, key=lambda c: c.gpu_hours)
            lines.append(f"the budget binds: the cheapest plan meeting the deadline ({cheapest.gpus} GPUs, "
                         f"{cheapest.days:.1f} days) needs {human_amount(cheapest.gpu_hours)} GPU-hours (budget "
                         f"{human_amount(budget_gpu_s / 3600)}); raise --budget"
                         + ("" if over_budget else " or allow a longer --deadline"))
        else:
            lines.append(f"the deadline binds: the fastest plan ({fastest.gpus} GPUs) needs {fastest.days:.1f} days "
                         f"(deadline {deadline_s / 86400:.1f} d); {_more_gpus_hint(result)}")
            if over_budget:
                lines.append(f"the budget binds too: the cheapest plan searched ({cheapest_any.gpus} GPUs, "
                             f"{cheapest_any.days:.1f} days) needs {human_amount(cheapest_any.gpu_hours)} GPU-hours "
                             f"(budget {human_amount(budget_gpu_s / 3600)}); raise --budget")
    elif budget_gpu_s is not None:
        cheapest = min(feasible, key=lambda c: c.gpu_hours)
        lines.append(f"the budget binds: the cheapest plan ({cheapest.gpus} GPUs) needs "
                     f"{human_amount(cheapest.gpu_hours)} GPU-hours; raise --budget")
    return lines
