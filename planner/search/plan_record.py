"""The record of one chosen plan, and of its runners-up: shape, layout, step time, memory, loss and its interval,
hyperparameters and the step-time band, re-simulated on the scalar path.

Its own module because turning a scored candidate into the full plan the report and CLI print is separate
from finding it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from planner.calibrate.error_bands import interval as step_time_interval
from planner.cost.estimate import simulate
from planner.cost.evaluation import evaluation_record
from planner.laws.base import NO_INTERVAL, interval_basis
from planner.laws.hyperparameters import plan_hyperparameters
from planner.search.score import Problem
from planner.search.selection import select
from planner.search.space import Space, layout_fields
from planner.search.stopping import stopped_at
from planner.specs.layout import make_layout, settings_used, train_steps

def describe(problem: Problem, space: Space, feasible: dict, position: int, label: str | None = None) -> dict:
    """Full plan record for one feasible candidate, re-simulated on the scalar path."""
    cluster = problem.cluster
    i = int(feasible["index"][position])
    a = {k: v[i] for k, v in space.arrays.items()}
    mi = int(a["model_index"])
    model = space.models[mi]
    layout = make_layout("plan", **layout_fields(a), global_batch=int(feasible["global_batch"][position]),
                         dtype=problem.dtype)
    sim = simulate(model, layout, cluster)
    tokens = float(feasible["tokens"][position])
    law_n = float(problem.law_params[mi])
    low, high = problem.law.predict_interval(np.array([law_n]), np.array([tokens]), 0.8)
    gpu_hours = float(feasible["gpu_seconds"][position]) / 3600.0
    price = cluster.price_per_accelerator_hour
    plan = {
        "label": label,
        "params": int(model.total_params), "law_params": law_n, "non_embedding_params": int(model.non_embedding_params),
        "shape": {k: getattr(model, k) for k in ("layers", "hidden", "heads", "kv_heads", "ffn", "mlp", "vocab", "seq_len")},
        "tokens": tokens, "tokens_per_param": tokens / model.total_params,
        "gpus": layout.gpus, "nodes": -(-layout.gpus // cluster.gpus_per_node),
        "layout": {**settings_used(layout), "grad_accumulation": layout.grad_accumulation, "gpus": layout.gpus},
        "step_time_s": sim["step_time_s"], "tokens_per_s": sim["tokens_per_s"], "mfu": sim["mfu"],
        "tflops_per_gpu": sim["tflops_per_gpu"], "steps": train_steps(layout, tokens, model.seq_len),
        "memory_bytes": sim["memory"]["total_bytes"], "hbm_bytes": sim["memory"]["hbm_bytes"],
        "memory_headroom_bytes": sim["memory"]["hbm_bytes"] - sim["memory"]["total_bytes"],
        "memory": {k: v for k, v in sim["memory"].items()}, "time": sim["time"],
        "goodput": float(feasible["goodput"][position]), "wall_clock_s": float(feasible["wall_s"][position]),
        "wall_clock_days": float(feasible["wall_s"][position]) / 86400.0,
        "gpu_hours": gpu_hours, "inference_gpu_hours": float(feasible["inference_gpu_seconds"][position]) / 3600.0,
        "cost_usd": gpu_hours * price if price else None,
        "predicted_loss": float(feasible["loss"][position]),
        # No band for a law with no uncertainty (its "band" is the point twice): null, and the basis says so.
        "loss_interval": [float(low[0]), float(high[0])] if interval_basis(problem.law) else None,
        "loss_interval_basis": interval_basis(problem.law) or NO_INTERVAL,
        "law_warnings": problem.law.extrapolation_warnings(np.array([law_n]), np.array([tokens])),
    }
    # The launch's evaluation passes its goodput counts (cost/evaluation.py), for the report to name: the simulation
    # above has their share already.
    plan["evaluation"] = evaluation_record(layout.framework, sim["evaluation_fraction"])
    plan["hyperparameters"] = plan_hyperparameters(float(model.non_embedding_params), tokens,
                                                   float(layout.global_batch * model.seq_len),
                                                   batch_rule=problem.batch_rule)
    # The step-time band (error_bands: the cluster's own calibration, else the published runs): at a fixed budget
    # a slower step trains fewer tokens; at a fixed token count (target mode) it takes longer and costs more.
    band = step_time_interval(sim["step_time_s"], layout.framework, cluster)
    if band is not None:
        low, high = band["low_s"] / sim["step_time_s"], band["high_s"] / sim["step_time_s"]
        plan["step_time_band"] = band
        if problem.constraints.target_loss is None:
            plan["tokens_band"] = [tokens / high, tokens / low]
        else:
            plan["wall_clock_days_band"] = [plan["wall_clock_days"] * low, plan["wall_clock_days"] * high]
            plan["gpu_hours_band"] = [gpu_hours * low, gpu_hours * high]
    return plan


# What binds a runner-up stopped at half the chosen plan's wall-clock (plan["binds"]["constraint"]).
HALF_WALL_CLOCK = "half the wall-clock"


def alternatives(problem, space, feasible, best: int, counts: list[int]) -> list[dict]:
    """Runners-up that differ materially from the best plan, each with what binds it (binding, as the chosen plan).
    `counts`: the GPU counts the search offered; the half-the-GPUs rule leaves only those up to half the best's."""
    gpus, wall = space.arrays["gpus"][feasible["index"]], feasible["wall_s"]
    tp = space.arrays["tp"][feasible["index"]]
    pp = space.arrays["pp"][feasible["index"]]
    params = problem.total_params[space.arrays["model_index"][feasible["index"]]]
    half = gpus[best] / 2
    # Half the wall-clock: among the plans stopped by then too (search.stopping; in budget mode every scored plan
    # spends the budget, so those finishing sooner were only the ones serving cut short). Its deadline is the rule's.
    half_wall = wall[best] / 2
    stopped = stopped_at(problem, space, feasible, half_wall)
    by_half = dataclasses.replace(problem.constraints, deadline_s=min(half_wall, problem.constraints.deadline_s),
                                  deadline_is_default=False)
    # (label, arrays, mask, the counts the rule leaves when it limits them: then the rule is what caps the GPUs,
    # the constraints the plan is held to)
    rules = [
        ("best with at most half the GPUs", feasible, gpus <= half, [c for c in counts if c <= half], None),
        ("best finishing in at most half the wall-clock", stopped, None, None, by_half),
        ("best with data parallelism only (tp = pp = 1)", feasible, (tp == 1) & (pp == 1), None, None),
        ("best with a model at least 1.5x smaller", feasible, params <= params[best] / 1.5, None, None),
        ("best with a model at least 1.5x larger", feasible, params >= params[best] * 1.5, None, None),
    ]
    cluster_gpus = problem.cluster.total_gpus
    # A plan is its candidate and its wall-clock (a candidate stopped early is another plan).
    out, seen = [], {(int(feasible["index"][best]), float(wall[best]))}
    for label, arrays, mask, rule_counts, held_to in rules:
        position = select(problem, arrays, mask) if len(arrays["loss"]) else None
        if position is None or (int(arrays["index"][position]), float(arrays["wall_s"][position])) in seen:
            continue
        seen.add((int(arrays["index"][position]), float(arrays["wall_s"][position])))
        plan = describe(problem, space, arrays, position, label)
        # A plan stopped early is held to the rule's wall-clock; one that ends by then on its own, as it is.
        stopped_early = held_to is not None and "stopped" in arrays and bool(arrays["stopped"][position])
        plan["binds"] = binding(held_to if stopped_early else problem.constraints, plan,
                                counts if rule_counts is None else rule_counts, cluster_gpus,
                                rule_caps=rule_counts is not None)
        if stopped_early:  # the rule's wall-clock stops it, not the user's deadline (report.render.binding_text)
            plan["binds"]["constraint"] = HALF_WALL_CLOCK
        out.append(plan)
    return out


# A plan spends its budget when its GPU-hours are this close to it (search.score: wall = min(budget / gpus, deadline),
# so a budget-bound plan spends it up to rounding).
SPENT_RELATIVE = 1e-6


def binding(constraints, plan: dict, counts: list[int], cluster_gpus: int, rule_caps: bool = False) -> dict:
    """What binds a feasible plan: "target loss" (target mode: the cheapest plan reaching it), "budget" (the plan
    spends it), "deadline" (the plan runs the whole deadline on its GPUs and leaves budget unspent), or "budget and
    deadline" (it spends the budget in exactly the deadline). With the deadline, `gpu_cap` names what stops more
    GPUs when the plan uses the largest count allowed (`counts`, the grid search.problem_setup.candidate_gpu_counts
    offers): "--gpus", "--max-gpus" or "cluster"; None when larger counts were allowed and none gave a better
    feasible plan (search.score, search.selection). A runner-up gets the same record; `rule_caps`: its rule left it
    only `counts` (alternatives: at most half the best plan's GPUs), so at their largest gpu_cap is "rule"."""
    budget_s = constraints.gpu_seconds
    spent = budget_s is not None and plan["gpu_hours"] * 3600.0 >= budget_s * (1.0 - SPENT_RELATIVE)
    # Both when the budget is exactly the GPUs for the deadline (`--gpus N --deadline T`, or a budget sized so).
    whole_deadline = plan["wall_clock_s"] >= constraints.deadline_s * (1.0 - SPENT_RELATIVE)
    if constraints.target_loss is not None:
        constraint = "target loss"
    elif spent:
        constraint = "budget and deadline" if whole_deadline else "budget"
    else:
        constraint = "deadline"
    largest = max(counts)
    gpu_cap = None
    if constraint != "target loss" and whole_deadline and plan["gpus"] >= largest:
        capped = constraints.max_gpus is not None and constraints.max_gpus < cluster_gpus
        gpu_cap = ("--gpus" if constraints.gpus is not None else "rule" if rule_caps else "--max-gpus" if capped
                   else "cluster")
    return {"constraint": constraint, "gpu_hours": plan["gpu_hours"],
            "budget_gpu_hours": constraints.gpu_hours, "target_loss": constraints.target_loss,
            "deadline_days": constraints.deadline_s / 86400.0, "deadline_is_default": constraints.deadline_is_default,
            "gpus": plan["gpus"], "largest_gpus": largest, "gpu_cap": gpu_cap}
