"""Inference-aware sizing in FLOPs: Sardana et al. 2024, "Beyond Chinchilla-Optimal: Accounting for Inference in
Language Model Scaling Laws" (arXiv 2401.00448, section 2).

For a target loss l and D_inf tokens of lifetime inference, choose N and training tokens D to minimise
    6 N D  +  2 N D_inf      subject to  L(N, D) = l,
training at 6 FLOPs per parameter per token and inference at 2 (their FLOP counts, after Kaplan et al. 2020).
The planner's search (planner/search/score.py, --inference-tokens) uses the same costs in GPU time; this module
is the law-level answer the paper computes, used to check the planner against the paper.
"""

from __future__ import annotations

import numpy as np

from planner.errors import PlannerInputError
from planner.laws.base import LossLaw, as_array
from planner.laws.training_compute import dense_training_flops

INFERENCE_FLOPS_PER_PARAM_TOKEN = 2.0  # the forward pass alone: a third of training's 6 (laws.training_compute)
_D_RANGE = (1e3, 1e20)  # tokens searched for the loss target


def tokens_for_loss(law: LossLaw, N, target_loss: float) -> np.ndarray:
    """Training tokens D with L(N, D) = target (bisection in log D; the law falls with D). inf where even
    1e20 tokens do not reach the target at that N."""
    N = as_array(N)
    low = np.full(N.shape, np.log(_D_RANGE[0]))
    high = np.full(N.shape, np.log(_D_RANGE[1]))
    reachable = law.predict(N, np.exp(high)) <= target_loss
    for _ in range(100):
        mid = 0.5 * (low + high)
        above = law.predict(N, np.exp(mid)) > target_loss
        low, high = np.where(above, mid, low), np.where(above, high, mid)
    return np.where(reachable, np.exp(high), np.inf)


def lifetime_flops(N, D, inference_tokens: float) -> np.ndarray:
    return dense_training_flops(as_array(N), as_array(D)) + INFERENCE_FLOPS_PER_PARAM_TOKEN * as_array(N) * inference_tokens


def inference_optimal(law: LossLaw, target_loss: float, inference_tokens: float,
                      n_range: tuple[float, float] = (1e6, 1e14)) -> dict[str, float]:
    """The (N, D) reaching `target_loss` with the least training + inference FLOPs: a log grid over N, then
    golden-section refinement (the total is unimodal in N: training grows as N shrinks towards the loss floor,
    inference grows with N)."""
    if not target_loss > 0 or inference_tokens < 0:
        raise PlannerInputError("target loss must be positive and inference tokens non-negative")
    total = lambda log_n: lifetime_flops(np.exp(log_n), tokens_for_loss(law, np.exp(log_n), target_loss), inference_tokens)
    grid = np.linspace(np.log(n_range[0]), np.log(n_range[1]), 401)
    values = total(grid)
    if not np.any(np.isfinite(values)):
        raise PlannerInputError(f"target loss {target_loss:g}: below what {law.name} reaches at any N up to {n_range[1]:.0e}")
    best = int(np.clip(np.nanargmin(values), 1, grid.size - 2))
    low, high = grid[best - 1], grid[best + 1]
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(80):
        x1, x2 = high - ratio * (high - low), low + ratio * (high - low)
        if total(np.array([x1]))[0] < total(np.array([x2]))[0]:
            high = x2
        else:
            low = x1
    N = float(np.exp(0.5 * (low + high)))
    D = float(tokens_for_loss(law, np.array([N]), target_loss)[0])
    training = dense_training_flops(N, D)
    inference = INFERENCE_FLOPS_PER_PARAM_TOKEN * N * inference_tokens
    return {"params": N, "tokens": D, "training_flops": training, "inference_flops": inference,
            "total_flops": training + inference}
