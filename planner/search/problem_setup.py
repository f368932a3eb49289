"""The budget question as a scoring problem: the law's parameter counts, the tokens a target loss needs, the GPU
counts a plan may use, and the window of model sizes and GPU counts always scored around the compute-optimal N.

Its own module because it turns the user's constraints into what the search scores, before any candidate is
enumerated; the search itself (search.branch_and_bound) and the choice (search.selection) come after.
"""

from __future__ import annotations

import math

import numpy as np

from planner.laws.inference import tokens_for_loss  # the one bisection for D at a target loss
from planner.search.bounds import flops_per_token
from planner.search.budget import Constraints
from planner.search.score import NOMINAL_MFU, Problem
from planner.search.space import family_models, gpu_counts
from planner.specs.hardware import ClusterSpec

WINDOW_BELOW, WINDOW_ABOVE = 12.0, 6.0  # context: model sizes always scored around the compute-optimal N
MAX_CONTEXT_MODELS = 48


def _law_params(law, models) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    total = np.array([m.total_params for m in models], dtype=float)
    nonemb = np.array([m.non_embedding_params for m in models], dtype=float)
    return law.counted_params(total, nonemb), total, nonemb


def most_gpus(cluster: ClusterSpec, constraints: Constraints) -> int:
    """The largest GPU count a plan may use: --gpus, else --max-gpus, else the whole cluster."""
    whole = cluster.total_gpus
    if constraints.gpus is not None:
        return constraints.gpus
    return min(whole, constraints.max_gpus) if constraints.max_gpus is not None else whole


def spendable_gpu_seconds(cluster: ClusterSpec, constraints: Constraints) -> float:
    """Budget mode: the GPU-seconds a plan can actually spend (the deadline and GPU cap may leave less)."""
    return min(constraints.gpu_seconds, most_gpus(cluster, constraints) * constraints.deadline_s)


def _context_centre(law, constraints: Constraints, cluster: ClusterSpec, dtype: str) -> float:
    """Compute-optimal N for the spendable compute at a nominal MFU (centres the always-scored window)."""
    if constraints.target_loss is None:
        flops = spendable_gpu_seconds(cluster, constraints) * cluster.peak_flops_per_s(dtype) * NOMINAL_MFU
    else:
        budgets = np.logspace(17, 28, 221)
        n_opt, d_opt = law.compute_optimal(budgets)
        reach = np.flatnonzero(law.predict(n_opt, d_opt) <= constraints.target_loss)
        flops = budgets[reach[0]] if len(reach) else budgets[-1]
    return float(law.compute_optimal(np.array([max(flops, 1.0)]))[0][0])


def context_models(models: list, n_opt: float) -> np.ndarray:
    """Indices of the models always scored: a window around n_opt (for alternatives and the frontier).

    The chosen plan does not depend on it (the search is exact over every model); it only decides
    which runners-up and frontier points are there to show.
    """
    total = np.array([m.total_params for m in models], dtype=float)
    inside = np.flatnonzero((total >= n_opt / WINDOW_BELOW) & (total <= n_opt * WINDOW_ABOVE))
    if len(inside) == 0:
        inside = np.array([int(np.argmin(np.abs(np.log(total / n_opt))))])
    if len(inside) > MAX_CONTEXT_MODELS:
        inside = inside[np.linspace(0, len(inside) - 1, MAX_CONTEXT_MODELS).round().astype(int)]
    return inside


UNIFORM_MARGIN = 1e-9  # relative: "just below" ln V, so the plan's predicted loss passes score's `loss > ln V` check


def build_problem(cluster, law, constraints, dtype, batch_rule, seq_len, vocab):
    """The scoring set-up over every family shape, and the compute-optimal N estimate."""
    models = family_models(seq_len, vocab, 0, np.inf)
    law_n, total, nonemb = _law_params(law, models)
    # A target at or above ln V (uniform guessing, which every model starts from and no plan is allowed to
    # predict above) is aimed at just below ln V: the cheapest plans that reach it. (Aimed at the target
    # itself, only plans pushed far past it by the batch floor survived, and it cost more than a harder one.)
    target = None if constraints.target_loss is None else min(constraints.target_loss,
                                                               math.log(vocab) * (1.0 - UNIFORM_MARGIN))
    needed = None if target is None else tokens_for_loss(law, law_n, target)
    problem = Problem(cluster=cluster, law=law, constraints=constraints, dtype=dtype, batch_rule=batch_rule,
                      law_params=law_n, total_params=total, nonembedding_params=nonemb,
                      tokens_estimate=None if needed is None else np.where(np.isfinite(needed), needed, 1e12),
                      tokens_needed=needed, flops_per_token=flops_per_token(models))
    return problem, models, _context_centre(law, constraints, cluster, dtype)


def candidate_gpu_counts(cluster: ClusterSpec, constraints: Constraints) -> list[int]:
    """Every GPU count the grid offers up to the caps (bounds, not a window, rule out the hopeless)."""
    return gpu_counts(cluster.gpus_per_node, cluster.max_nodes, constraints.gpus, constraints.max_gpus)


def context_counts(counts: list[int], constraints: Constraints) -> np.ndarray:
    """GPU counts always scored: those that can spend a quarter of the budget and still take an hour."""
    counts = np.array(counts)
    if constraints.target_loss is not None or constraints.gpus is not None:
        return counts
    spend = constraints.gpu_seconds
    inside = counts[(counts >= spend / (4.0 * constraints.deadline_s)) & (counts <= spend / 3600.0)]
    return inside if len(inside) else counts[-1:]
