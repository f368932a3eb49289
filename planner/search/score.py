"""Score a chunk of enumerated candidates: simulate, then turn throughput into tokens, loss and cost.

Budget mode (maximise quality): a plan runs until its GPU-hours or the deadline run out,
  wall = min(budget / gpus, deadline), D = tokens_per_s x goodput x wall, loss = L(N, D).
Target mode (minimise cost): D is what the law needs to reach the target loss at N,
  wall = D / (tokens_per_s x goodput), cost = gpus x wall, and the deadline/budget must hold.
With --inference-tokens, serving cost 2·N FLOP per token (Sardana et al. 2024) at the plan's achieved
FLOP rate is added to the cost (target mode) or taken out of the budget first (budget mode).

Every candidate that is scored but cannot be used is counted under the first reason that drops it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.budget import Constraints
from planner.cost.memory import per_gpu_memory
from planner.cost.step_time import step_time
from planner.cost.goodput import goodput
from planner.hardware import ClusterSpec
from planner.laws import batch_size
from planner.layout import DTYPE_CODES, build_batch

DROP_REASONS = (
    "does not fit GPU memory",
    "offload exceeds host memory",
    # Before the batch check: a plan whose serving eats the whole budget trains 0 tokens, and the
    # batch limit at D = 0 would otherwise be blamed for it.
    "inference alone exceeds the budget",
    "global batch above the batch-size limit",
    "target loss unreachable at this model size",
    "misses the deadline",
    "over the budget",
)


@dataclass(frozen=True)
class Problem:
    """Everything scoring needs besides the candidates themselves."""

    cluster: ClusterSpec
    law: object  # planner.laws.base.LossLaw
    constraints: Constraints
    dtype: str
    batch_rule: str
    law_params: np.ndarray  # per model: N as the law defines it
    total_params: np.ndarray  # per model: total parameters (memory, checkpoints, inference FLOPs)
    nonembedding_params: np.ndarray  # per model (batch-size rules use non-embedding N)
    tokens_estimate: np.ndarray  # per model: D used to size the global batch before D is known
    tokens_needed: np.ndarray | None  # per model, target mode: D reaching the target loss (inf if never)


def global_batch_sequences(problem: Problem, arrays: dict, seq_len: np.ndarray) -> np.ndarray:
    """Global batch per candidate: the batch-size law's B_opt rounded to whole micro-batches x dp."""
    mi = arrays["model_index"]
    b_opt = batch_size.optimal_batch_tokens(problem.tokens_estimate[mi], problem.nonembedding_params[mi],
                                            problem.batch_rule)
    per_step = arrays["micro_batch"] * arrays["dp"]
    accumulation = np.maximum(1, np.round(b_opt / seq_len / per_step))
    return accumulation * per_step


def score_chunk(problem: Problem, space_models: list, arrays: dict) -> dict[str, np.ndarray]:
    """Simulate and evaluate one chunk. Returns per-candidate metrics, `feasible` and `drop_code`."""
    seq_len = np.array([m.seq_len for m in space_models], dtype=float)[arrays["model_index"]]
    global_batch = global_batch_sequences(problem, arrays, seq_len)
    batch = build_batch(
        space_models, arrays["model_index"], tp=arrays["tp"], pp=arrays["pp"], dp=arrays["dp"], vpp=arrays["vpp"],
        cp=arrays["cp"], zero=arrays["zero"], offload=arrays["offload"], micro_batch=arrays["micro_batch"],
        global_batch=global_batch, recompute=arrays["recompute"], seq_parallel=arrays["seq_parallel"], flash_attention=True,
        dtype=DTYPE_CODES[problem.dtype],
    )
    # Memory is cheap; step time is only computed for candidates that fit (the rest are dropped anyway).
    memory = per_gpu_memory(batch, problem.cluster)
    fits = memory["fits"] & memory["host_fits"]
    fitting = np.flatnonzero(fits)
    time_parts = step_time(batch.take(fitting), problem.cluster)
    n = len(batch)

    def spread(values):  # back to the whole chunk; non-fitting candidates get NaN
        out = np.full(n, np.nan)
        out[fitting] = values
        return out

    tokens_per_s = spread(time_parts["tokens_per_s"])
    mi = arrays["model_index"]
    gpus = arrays["gpus"].astype(float)
    gp = goodput(problem.total_params[mi], gpus, problem.cluster)["goodput"]
    effective_rate = tokens_per_s * gp
    c = problem.constraints
    flops_rate = spread(time_parts["tflops_per_gpu"]) * 1e12 * gpus  # achieved model FLOP/s of the job
    inference_gpu_s = (2.0 * problem.total_params[mi] * c.inference_tokens / flops_rate * gpus
                       if c.inference_tokens else np.zeros(len(gpus)))

    if c.target_loss is None:
        training_gpu_s = c.gpu_seconds - inference_gpu_s
        wall = np.minimum(np.maximum(training_gpu_s, 0.0) / gpus, c.deadline_s)
        tokens = effective_rate * wall
    else:
        tokens = problem.tokens_needed[mi]
        wall = tokens / effective_rate
    gpu_seconds = gpus * wall + inference_gpu_s
    # Target mode: model sizes that never reach the target have D = inf (dropped below); inf - inf in
    # the batch limit must not print a RuntimeWarning on stderr.
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = problem.law.predict(problem.law_params[mi], np.maximum(tokens, 1.0))
        limit = batch_size.max_batch_tokens(np.maximum(tokens, 1.0), problem.nonembedding_params[mi],
                                            problem.batch_rule)

    checks = [
        ~memory["fits"],
        ~memory["host_fits"],
        (inference_gpu_s >= c.gpu_seconds) if (c.inference_tokens and c.gpu_seconds) else np.zeros(len(gpus), bool),
        global_batch * seq_len > limit,
        ~np.isfinite(tokens) if c.target_loss is not None else np.zeros(len(gpus), bool),
        wall > c.deadline_s * (1 + 1e-9),
        (gpu_seconds > c.gpu_seconds * (1 + 1e-9)) if c.gpu_seconds is not None else np.zeros(len(gpus), bool),
    ]
    drop_code = np.full(len(gpus), -1)
    for code, failed in reversed(list(enumerate(checks))):
        drop_code = np.where(failed, code, drop_code)
    return {
        "feasible": drop_code < 0, "drop_code": drop_code, "loss": loss, "tokens": tokens, "wall_s": wall,
        "gpu_seconds": gpu_seconds, "inference_gpu_seconds": inference_gpu_s, "tokens_per_s": tokens_per_s,
        "step_time_s": spread(time_parts["step_time_s"]), "mfu": spread(time_parts["mfu"]), "goodput": gp,
        "global_batch": global_batch, "memory_bytes": memory["total_bytes"],
    }
