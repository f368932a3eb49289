"""How the plan moves when an input is off: GEMM efficiency or network bandwidth 20% lower, budget 2x.

Each case answers two questions a planning meeting asks:
- keep the chosen plan (same model, tokens, GPUs, layout): how long does it take and what does it cost
  under the changed conditions? (the chosen layout re-simulated on the changed cluster)
- re-plan: what would the optimizer choose instead? (a full `optimize` run with the changed inputs)

"GEMM efficiency 20% lower" scales the matmul efficiency ceiling (matmul_peak_fraction) by 0.8: compute-bound
time grows 25%, so achieved MFU falls by up to 20% (less where communication or memory-bound work
dominates the step: 60.6% -> 50.4% for the 10,000 GPU-hour plan on dgx-h100). It was labelled "achieved MFU
20% lower", which the MFU it printed beside did not show. "Network 20% slower" scales the achieved bandwidth of both the in-node
(NVLink) and the scale-out (NIC) links by 0.8. Each case is one more search (~1-3 s).
"""

from __future__ import annotations

import dataclasses

from planner.search.budget import Constraints
from planner.cost.estimate import simulate
from planner.specs.hardware import ClusterSpec
from planner.report.render import human_amount
from planner.report.review import plan_layout, plan_model
from planner.search.optimize import OptimizeResult, optimize

DEGRADATION = 0.8  # "20% lower": the question, not a measured spread
BUDGET_FACTOR = 2.0


def cases(cluster: ClusterSpec, constraints: Constraints) -> list[dict]:
    """The changed inputs of each case: a cluster and constraints to re-run with, and what changed."""
    e = cluster.efficiency
    slow_compute = cluster.with_efficiency(matmul_peak_fraction=e.matmul_peak_fraction * DEGRADATION)
    slow_network = cluster.with_efficiency(
        scale_up_bandwidth_efficiency=e.scale_up_bandwidth_efficiency * DEGRADATION,
        scale_out_bandwidth_efficiency=e.scale_out_bandwidth_efficiency * DEGRADATION)
    out = [
        {"key": "mfu", "label": "GEMM efficiency 20% lower",
         "change": f"matmul_peak_fraction {e.matmul_peak_fraction:.3g} -> {e.matmul_peak_fraction * DEGRADATION:.3g}",
         "cluster": slow_compute, "constraints": constraints},
        {"key": "network", "label": "network bandwidth 20% lower",
         "change": (f"scale-up efficiency {e.scale_up_bandwidth_efficiency:.3g} -> "
                    f"{e.scale_up_bandwidth_efficiency * DEGRADATION:.3g}, scale-out "
                    f"{e.scale_out_bandwidth_efficiency:.3g} -> {e.scale_out_bandwidth_efficiency * DEGRADATION:.3g}"),
         "cluster": slow_network, "constraints": constraints},
    ]
    if constraints.gpu_seconds is not None:
        bigger = dataclasses.replace(
            constraints, gpu_seconds=constraints.gpu_seconds * BUDGET_FACTOR,
            money=constraints.money * BUDGET_FACTOR if constraints.money else None)
        out.append({"key": "budget", "label": "budget 2x larger",
                    "change": f"{human_amount(constraints.gpu_hours)} -> {human_amount(bigger.gpu_hours)} GPU-hours",
                    "cluster": cluster, "constraints": bigger})
    return out


def keep_plan(plan: dict, cluster: ClusterSpec) -> dict:
    """The chosen plan re-simulated on a changed cluster: same tokens, so wall-clock and GPU-hours move."""
    result = simulate(plan_model(plan), plan_layout(plan), cluster)
    wall_s = plan["steps"] * result["step_time_s"] / plan["goodput"]
    # Serving (--inference-tokens) runs at the plan's achieved FLOP rate (search/score.py), so its
    # GPU-hours scale with 1 / MFU as well.
    inference_hours = plan.get("inference_gpu_hours", 0.0) * plan["mfu"] / result["mfu"]
    return {"step_time_s": result["step_time_s"], "mfu": result["mfu"], "wall_clock_days": wall_s / 86400.0,
            "gpu_hours": plan["gpus"] * wall_s / 3600.0 + inference_hours}


def run_cases(cluster: ClusterSpec, law, constraints: Constraints, result: OptimizeResult, *, dtype: str,
              batch_rule: str, seq_len: int, vocab: int, progress=None) -> list[dict]:
    """Every case: what changed, the kept plan under it, and the re-planned optimum (or why none).
    `progress(done, total)`, if given, hears of each case re-planned (each is a full search)."""
    if result.status != "ok":
        return []
    out = []
    todo = cases(cluster, constraints)
    # Re-plan over what the plan's own search covered: its stacks and ZeRO-3 hierarchy options.
    searched = {"frameworks": tuple(result.assumptions["frameworks"]),
                "hierarchy": tuple(tuple(choice) for choice in result.assumptions["zero3_hierarchy"])}
    for case in todo:
        if progress:
            progress(len(out), len(todo))
        replanned = optimize(case["cluster"], law, case["constraints"], dtype=dtype, batch_rule=batch_rule,
                             seq_len=seq_len, vocab=vocab, **searched)
        kept = keep_plan(result.plan, case["cluster"]) if case["cluster"] is not cluster else None
        out.append({"key": case["key"], "label": case["label"], "change": case["change"], "kept": kept,
                    "replanned": replanned.plan, "explanation": replanned.explanation})
    if progress:
        progress(len(out), len(todo))
    return out
