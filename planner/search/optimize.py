"""Choose N, D, GPUs and layout under a budget: enumerate, score in vectorised chunks, pick, explain.

The chosen plan is the exact optimum of the scored space (ties broken by the shorter wall-clock at the slow
end of each plan's step-time band: search.selection), so a brute force over the same space with the scalar
simulator finds nothing better (tests/search).
`optimize` ties the steps together: the problem (search.problem_setup), the exact search
(search.branch_and_bound), the choice (search.selection), the plan records (search.plan_record) and,
when nothing is feasible, the explanation (search.infeasibility).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from planner.errors import PlannerInputError
from planner.laws.plan_curve import plan_loss_curve
from planner.search.branch_and_bound import branch_and_bound
from planner.search.budget import Constraints
from planner.search.infeasibility import explain_infeasible
from planner.search.plan_record import alternatives, binding, describe
from planner.search.problem_setup import build_problem, candidate_gpu_counts, context_counts, context_models
from planner.search.score import DROP_REASONS
from planner.search.selection import pareto_front, select
from planner.search.stopping import frontier_rows
from planner.search.space import BUDGET_STACK, LOSSLESS_HIERARCHY, checked_stacks, layout_space
from planner.specs.hardware import ClusterSpec


@dataclass
class OptimizeResult:
    status: str  # "ok" or "infeasible"
    plan: dict | None
    alternatives: list = field(default_factory=list)
    pareto: list = field(default_factory=list)
    dropped: dict = field(default_factory=dict)  # scored candidates dropped, by reason
    ruled_out: dict = field(default_factory=dict)  # (model, GPU count) cells never scored, by reason
    scored: int = 0
    skipped_invalid: int = 0
    explanation: list = field(default_factory=list)
    assumptions: dict = field(default_factory=dict)
    elapsed_s: float = 0.0


def optimize(cluster: ClusterSpec, law, constraints: Constraints, dtype: str | None = None, batch_rule: str = "step-law",
             seq_len: int = 4096, vocab: int = 32000, progress=None, hierarchy: tuple = LOSSLESS_HIERARCHY,
             frameworks: tuple = (BUDGET_STACK,)) -> OptimizeResult:
    """The best plan under `constraints` (module docstring). `hierarchy`: the ZeRO-3 hierarchy choices tried
    besides flat ZeRO-3 (space.hierarchy_choices: () = flat only; default hpZ and MiCS / HSDP shard groups).
    `frameworks`: the training stacks whose layouts are searched (planner.frameworks names). `dtype` None: the
    cluster's own training format (ClusterSpec.default_training_dtype)."""
    started = time.perf_counter()
    dtype = dtype or cluster.default_training_dtype
    cluster.peak_flops_per_s(dtype)
    if constraints.gpus is not None and constraints.gpus > cluster.total_gpus:
        raise PlannerInputError(f"--gpus {constraints.gpus} exceeds cluster {cluster.name!r} "
                                f"({cluster.max_nodes} nodes x {cluster.gpus_per_node} GPUs)")
    problem, models, n_opt = build_problem(cluster, law, constraints, dtype, batch_rule, seq_len, vocab)
    # The family's shape (planner.search.space.family_model: every size the same MLP, norm and attention) for the
    # stacks whose layers build one shape in some dtype (frameworks.model_unsupported in that dtype).
    frameworks = checked_stacks(frameworks, dtype, models[-1] if models else None)
    problem = dataclasses.replace(problem, hierarchy=hierarchy, frameworks=frameworks)
    counts = candidate_gpu_counts(cluster, constraints)
    context = (context_models(models, n_opt), context_counts(counts, constraints))
    scored, space, ruled_out = branch_and_bound(problem, models, counts, context, progress)
    feasible = scored["feasible"]
    searched_models = np.unique(space.arrays["model_index"])
    assumptions = {
        "cluster": cluster.name, "calibration": cluster.calibration, "law": law.name, "law_source": law.source,
        "law_n_definition": law.n_definition, "dtype": dtype, "seq_len": seq_len, "vocab": vocab,
        "batch_rule": batch_rule, "deadline_s": constraints.deadline_s,
        "deadline_is_default": constraints.deadline_is_default, "budget_gpu_hours": constraints.gpu_hours,
        "budget_usd": constraints.money, "target_loss": constraints.target_loss,
        "unique_tokens": constraints.unique_tokens, "inference_tokens": constraints.inference_tokens,
        "models_searched": len(models), "models_scored": int(len(searched_models)),
        "model_size_range": [models[0].total_params, models[-1].total_params],
        "compute_optimal_params_estimate": n_opt,
        # The ZeRO-3 hierarchy options tried, as (hpZ, qwZ, qgZ, shard group) flags (space.hierarchy_choices).
        "zero3_hierarchy": [list(choice) for choice in hierarchy],
        "frameworks": list(frameworks),
        "layout_space": layout_space(),
    }
    result = OptimizeResult(status="infeasible", plan=None, dropped=scored["dropped"], scored=len(space),
                            ruled_out={k: v for k, v in ruled_out.items() if k in DROP_REASONS},
                            skipped_invalid=space.skipped_invalid, assumptions=assumptions)
    if len(feasible["index"]) == 0:
        result.explanation = explain_infeasible(problem, scored, ruled_out, models)
    else:
        best = select(problem, feasible)
        result.status = "ok"
        result.plan = describe(problem, space, feasible, best, "chosen plan")
        result.plan["binds"] = binding(constraints, result.plan, counts, cluster.total_gpus)
        # The chosen plan only: its loss along training, ending at the law's L(N, D) (planner.laws.plan_curve).
        result.plan["loss_curve"] = plan_loss_curve(float(result.plan["params"]), result.plan["tokens"],
                                                    result.plan["predicted_loss"],
                                                    result.plan["hyperparameters"]["schedule"],
                                                    aspect=result.plan["shape"]["hidden"] / result.plan["shape"]["layers"],
                                                    vocab=result.plan["shape"]["vocab"])
        result.alternatives = alternatives(problem, space, feasible, best, counts)
        # Over the plans stopped early too (search.stopping): in budget mode every scored plan spends the budget.
        rows = frontier_rows(problem, space, feasible)
        front = pareto_front({key: np.concatenate([row[key] for row in rows]) for key in ("wall_s", "loss")})
        result.pareto = [_frontier_point(problem, space, rows[i]) for i in front]
    result.elapsed_s = time.perf_counter() - started
    return result


def _frontier_point(problem, space, row: dict) -> dict:
    """One row of the loss-vs-wall-clock frontier from a candidate's one-row arrays (scored, or stopped early)."""
    index = row["index"][0]
    return {"wall_clock_days": float(row["wall_s"][0]) / 86400.0, "predicted_loss": float(row["loss"][0]),
            "gpus": int(space.arrays["gpus"][index]), "params": int(problem.total_params[space.arrays["model_index"][index]]),
            "tokens": float(row["tokens"][0]), "gpu_hours": float(row["gpu_seconds"][0]) / 3600.0}
