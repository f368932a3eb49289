"""Optimistic bounds per (model, GPU count) cell: what no layout of that cell can beat.

The search is exact over every family shape and every GPU count (branch and bound): a cell whose
bound is already worse than a scored plan cannot hold a better one, so it is never scored. The
bounds rest on physical limits the cost model is built to respect (tests/property):

* a job's model FLOP rate is at most gpus x peak x the cost model's FLOP-rate ceiling
  (gemm.flop_rate_ceiling: no FLOP runs faster than the best GEMM or attention kernel, so
  MFU <= ceiling <= 1), and goodput is at most 1, so
  tokens <= spendable GPU-seconds x ceiling x peak / (model FLOPs per token);
* serving costs at least 2·N FLOPs per token at the same rate (Sardana et al. 2024's 2N per token);
* the loss law is non-increasing in D (tests/laws), so L(N, most tokens) bounds the loss below.

Budget mode bounds the loss; target mode bounds the GPU-seconds. A cell that breaks a hard limit
even at these optimistic rates (serving eats the budget, the target needs more time than the
deadline leaves) gets an infinite bound and the reason, so it is counted rather than scored.
"""

from __future__ import annotations

import numpy as np

from planner.search.budget import Constraints
from planner.specs.model import mlp_matrices, training_flops_breakdown

# Reasons a cell is ruled out before scoring (names shared with score.DROP_REASONS).
INFERENCE_EXCEEDS_BUDGET = "inference alone exceeds the budget"
TARGET_UNREACHABLE = "target loss unreachable at this model size"
MISSES_DEADLINE = "misses the deadline"
OVER_BUDGET = "over the budget"
ABOVE_UNIFORM_GUESS = "predicted loss above uniform guessing (ln vocab)"


def flops_per_token(models) -> np.ndarray:
    """Model training FLOPs per token for each model, counted as the cost model's MFU counts them."""
    return np.array([training_flops_breakdown(m.layers, m.hidden, m.heads, m.kv, m.ffn_size, mlp_matrices(m.mlp),
                                              m.vocab, m.seq_len, 1.0, causal=True)["total"] for m in models],
                    dtype=float)


def inference_gpu_seconds_floor(constraints: Constraints, total_params: np.ndarray, rate: float) -> np.ndarray:
    """Least GPU-seconds serving --inference-tokens can take: 2·N FLOPs per token at `rate` FLOP/s per GPU."""
    if not constraints.inference_tokens:
        return np.zeros_like(np.asarray(total_params, dtype=float))
    # Divided before multiplied: 1e300 tokens must give a large finite number, not an overflow.
    return 2.0 * np.asarray(total_params, dtype=float) * (constraints.inference_tokens / rate)


def training_gpu_seconds(constraints: Constraints, gpus: np.ndarray, inference_floor: np.ndarray) -> np.ndarray:
    """Budget mode: the most GPU-seconds a cell can train for (budget left after serving, and gpus x deadline)."""
    left = constraints.gpu_seconds - inference_floor
    return np.maximum(np.minimum(left, np.asarray(gpus, dtype=float) * constraints.deadline_s), 0.0)


def cell_bounds(law, constraints: Constraints, best_rate, law_params: np.ndarray, total_params: np.ndarray,
                per_token_flops: np.ndarray, tokens_needed: np.ndarray | None, uniform_guess: np.ndarray,
                cell_model: np.ndarray, cell_gpus: np.ndarray) -> dict[str, np.ndarray]:
    """Per cell: `bound` (lower bound on the objective), `reason` ("" or why the cell cannot hold a plan),
    and in target mode the least wall-clock (`wall_floor_s`) and GPU-seconds (`gpu_seconds_floor`).

    The objective is the loss in budget mode and the GPU-seconds in target mode, as in optimize's
    `primary_objective`. `best_rate` (per cell or one number) is the most model FLOP/s one GPU can reach (peak x ceiling x
    the rank's share of a shared CPU node);
    `uniform_guess` per model is ln(vocab), the loss of guessing uniformly.
    A cell with a reason has an infinite bound.
    """
    gpus = np.asarray(cell_gpus, dtype=float)
    n_law, n_total, fpt = law_params[cell_model], total_params[cell_model], per_token_flops[cell_model]
    serving = inference_gpu_seconds_floor(constraints, n_total, best_rate)
    reason = np.full(len(gpus), "", dtype=object)
    wall_floor = cost_floor = np.full(len(gpus), np.nan)
    if constraints.target_loss is None:
        if constraints.inference_tokens:
            reason[serving >= constraints.gpu_seconds] = INFERENCE_EXCEEDS_BUDGET
        most_tokens = training_gpu_seconds(constraints, gpus, serving) * best_rate / fpt
        with np.errstate(invalid="ignore", divide="ignore"):
            bound = np.asarray(law.predict(n_law, np.maximum(most_tokens, 1.0)), dtype=float)
        reason[(reason == "") & (bound > uniform_guess[cell_model])] = ABOVE_UNIFORM_GUESS
    else:
        needed = tokens_needed[cell_model]
        training = np.where(np.isfinite(needed), needed * fpt / best_rate, np.inf)
        bound = cost_floor = training + serving
        wall_floor = training / gpus
        reason[wall_floor > constraints.deadline_s * (1 + 1e-9)] = MISSES_DEADLINE
        if constraints.gpu_seconds is not None:
            reason[bound > constraints.gpu_seconds * (1 + 1e-9)] = OVER_BUDGET
        reason[~np.isfinite(needed)] = TARGET_UNREACHABLE
    bound = np.where((reason == "") & np.isfinite(bound), bound, np.inf)
    return {"bound": bound, "reason": reason, "wall_floor_s": wall_floor, "gpu_seconds_floor": cost_floor}
