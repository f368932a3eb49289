"""Score a chunk of enumerated candidates: simulate, then turn throughput into tokens, loss and cost.

Budget mode (maximise quality): a plan runs until its GPU-hours or the deadline run out,
  wall = min(budget / gpus, deadline), D = tokens_per_s x goodput x wall, loss = L(N, D).
Target mode (minimise cost): D is what the law needs to reach the target loss at N,
  wall = D / (tokens_per_s x goodput), cost = gpus x wall, and the deadline/budget must hold. Goodput counts
  failures and checkpoints (cost.goodput) and the launch's evaluation passes (cost.evaluation).
With --inference-tokens, serving cost 2·N FLOP per token (Sardana et al. 2024) at the plan's achieved
FLOP rate is added to the cost (target mode) or taken out of the budget first (budget mode).

Every candidate that is scored but cannot be used is counted under the first reason that drops it,
and its full set of failed checks is kept as a bit mask (`failed`), so an infeasible result can name
the constraints that alone stand in the way (optimize.explain_infeasible).

Physical bounds are checked, not assumed: a plan predicted to lose more than uniform guessing over the
vocabulary (ln V nats) is dropped with that reason, and a non-finite score is an error naming the
cluster spec it came from, never a candidate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import partial

import numpy as np

from planner.calibrate.error_bands import slow_end_ratios
from planner.search.budget import Constraints
from planner.errors import PlannerInputError
from planner.cost import distinct
from planner.cost.memory import per_gpu_memory, within_hbm
from planner.cost.gemm import flop_rate_ceiling, rank_share
from planner.cost.step_time import step_time
from planner.cost.evaluation import batch_evaluation_fraction, with_evaluation
from planner.cost.goodput import goodput
from planner.frameworks import (FRAMEWORK_CODES, FRAMEWORK_NAMES, flash_attention_by_default, framework_arrays,
                                runnable_micro_batches)
from planner.specs.hardware import ClusterSpec
from planner.laws import batch_size
from planner.specs.candidate_batch import DTYPE_CODES, CandidateBatch, build_batch
from planner.search.bounds import inference_gpu_seconds_floor, training_gpu_seconds
from planner.search.space import BUDGET_STACK, LOSSLESS_HIERARCHY

# The ZeRO-3 hierarchy columns of a space (space.with_hierarchy), passed to the cost model as they are.
HIERARCHY_COLUMNS = ("zero_hpz", "zero_quantized_weights", "zero_quantized_gradients", "shard_group")
# The stack of each candidate and the overlaps it runs with (space.stack_columns).
STACK_COLUMNS = ("framework", "tp_comm_overlap", "dp_comm_overlap")
NOMINAL_MFU = 0.45  # assumed, only to size the global batch before a candidate's own throughput is known

DROP_REASONS = (
    "does not fit GPU memory",
    "offload exceeds host memory",
    # Before the batch check: a plan whose serving eats the whole budget trains 0 tokens, and the
    # batch limit at D = 0 would otherwise be blamed for it.
    "inference alone exceeds the budget",
    "global batch above the batch-size limit",
    "target loss unreachable at this model size",
    "predicted loss above uniform guessing (ln vocab)",
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
    tokens_estimate: np.ndarray | None  # per model, target mode: D used to size the global batch
    tokens_needed: np.ndarray | None  # per model, target mode: D reaching the target loss (inf if never)
    flops_per_token: np.ndarray | None = None  # per model: model FLOPs per token as MFU counts them
    # ZeRO-3 hierarchy choices also tried on flat ZeRO-3 layouts (space.hierarchy_choices: default hpZ and
    # MiCS / HSDP shard groups; () = flat only).
    hierarchy: tuple = LOSSLESS_HIERARCHY
    # Training stacks whose layouts are searched (planner.frameworks names; space.BUDGET_STACK by default).
    frameworks: tuple = (BUDGET_STACK,)

    @property
    def peak(self) -> float:
        return self.cluster.peak_flops_per_s(self.dtype)

    @functools.cached_property
    def step_band_high_by_stack(self) -> np.ndarray:
        """Per stack code: the slow end of its step-time band on this cluster, as a ratio
        (calibrate.error_bands.slow_end_ratios); once per problem, not per chunk."""
        return slow_end_ratios(self.cluster, FRAMEWORK_NAMES)


def batch_tokens_estimate(problem: Problem, model_index: np.ndarray, gpus: np.ndarray) -> np.ndarray:
    """D used to size a candidate's global batch before its own D is known.

    Target mode: the D the law needs. Budget mode: what this GPU count can spend (budget after serving,
    capped by gpus x deadline) at a nominal MFU, so a budget the deadline makes unspendable never sizes
    the batch.
    """
    if problem.constraints.target_loss is not None:
        return problem.tokens_estimate[model_index]
    serving = inference_gpu_seconds_floor(problem.constraints, problem.total_params[model_index], problem.peak)
    spendable = training_gpu_seconds(problem.constraints, gpus, serving)
    return np.maximum(spendable * problem.peak * NOMINAL_MFU / problem.flops_per_token[model_index], 1.0)


def tokens_allowing_batch(batch_tokens: np.ndarray, nonembedding_params: np.ndarray, rule: str) -> np.ndarray:
    """Smallest D whose batch-size limit admits `batch_tokens` (bisection in log D; the limit rises with D).

    Target mode trains at least this much: a target reached with fewer tokens than one allowed step
    needs is reached, more cheaply than not at all, by training the first allowed D.
    """
    lo, hi = np.zeros(len(batch_tokens)), np.full(len(batch_tokens), np.log(1e18))
    for _ in range(48):  # 2^-48 of the log range: far below a token
        mid = (lo + hi) / 2
        ok = batch_size.max_batch_tokens(np.exp(mid), nonembedding_params, rule) >= batch_tokens
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    return np.exp(hi)


def global_batch_sequences(problem: Problem, arrays: dict, seq_len: np.ndarray) -> np.ndarray:
    """Global batch per candidate: the batch-size law's B_opt rounded to whole micro-batches x dp."""
    mi = arrays["model_index"]
    estimate = batch_tokens_estimate(problem, mi, arrays["gpus"])
    b_opt = batch_size.optimal_batch_tokens(estimate, problem.nonembedding_params[mi], problem.batch_rule)
    per_step = arrays["micro_batch"] * arrays["dp"]
    accumulation = np.maximum(1, np.round(b_opt / seq_len / per_step))
    if "framework" in arrays:  # the next micro-batch count the stack's pipeline schedule runs
        accumulation = runnable_micro_batches(framework_arrays(arrays["framework"]), arrays["pp"], arrays["vpp"],
                                              accumulation.astype(np.int64)).astype(float)
    return accumulation * per_step


def score_chunk(problem: Problem, space_models: list, arrays: dict) -> dict[str, np.ndarray]:
    """Simulate and evaluate one chunk. Returns per-candidate metrics, `feasible` and `failed` (a bit per
    DROP_REASONS entry the candidate fails)."""
    seq_len = np.array([m.seq_len for m in space_models], dtype=float)[arrays["model_index"]]
    global_batch = global_batch_sequences(problem, arrays, seq_len)
    batch = _chunk_batch(problem, space_models, arrays, global_batch)
    # Memory is cheap; step time is only computed for candidates that fit (the rest are dropped anyway).
    memory = per_gpu_memory(batch, problem.cluster)
    # --min-headroom: the plan must leave that fraction of HBM free.
    in_hbm = within_hbm(memory, problem.constraints.min_headroom)
    fits = in_hbm & memory["host_fits"]
    fitting = np.flatnonzero(fits)
    fitted = distinct.take(batch, fitting)
    time_parts = step_time(fitted, problem.cluster)
    n = len(batch)
    spread = partial(_spread, fitting=fitting, n=n)  # back to the whole chunk; non-fitting candidates get NaN
    # A candidate that does not fit is not simulated; its other checks are judged at the best rate any
    # layout could reach (gemm.flop_rate_ceiling), so "memory binds" means relaxing memory alone
    # could give a plan. Only fitting candidates can be feasible, so these rates never reach a plan.
    best_tflops = _best_tflops_per_gpu(problem, arrays)
    optimistic = best_tflops * 1e12 * arrays["gpus"] / problem.flops_per_token[arrays["model_index"]]
    simulated_tokens_per_s = spread(time_parts["tokens_per_s"])
    tokens_per_s = np.where(fits, simulated_tokens_per_s, optimistic)
    mi = arrays["model_index"]
    gpus = arrays["gpus"].astype(float)
    # The launch's evaluation passes take wall-clock too (cost.evaluation); candidates that do not fit have none.
    gp = _goodput(problem, arrays, gpus, np.nan_to_num(spread(batch_evaluation_fraction(fitted, time_parts))))
    effective_rate = tokens_per_s * gp
    c = problem.constraints
    flops_rate = np.where(fits, spread(time_parts["tflops_per_gpu"]), best_tflops) * 1e12 * gpus  # achieved model FLOP/s of the job
    inference_gpu_s = _inference_gpu_seconds(problem, mi, gpus, flops_rate)
    batch_tokens = global_batch * seq_len
    tokens, wall = _tokens_and_wall(problem, mi, gpus, effective_rate, inference_gpu_s, batch_tokens)
    gpu_seconds = gpus * wall + inference_gpu_s
    loss, batch_too_large, above_uniform_guess = loss_checks(problem, space_models, mi, tokens, batch_tokens)
    _check_finite(problem, fitting, time_parts)

    none = np.zeros(n, bool)
    failed = _failed_bits(n, [
        ~in_hbm,
        ~memory["host_fits"],
        (inference_gpu_s >= c.gpu_seconds) if (c.inference_tokens and c.gpu_seconds) else none,
        batch_too_large,
        ~np.isfinite(tokens) if c.target_loss is not None else none,
        above_uniform_guess,
        wall > c.deadline_s * (1 + 1e-9),
        (gpu_seconds > c.gpu_seconds * (1 + 1e-9)) if c.gpu_seconds is not None else none,
    ])
    return {
        "feasible": failed == 0, "failed": failed, "loss": loss, "tokens": tokens,
        "wall_s": wall, "gpu_seconds": gpu_seconds, "inference_gpu_seconds": inference_gpu_s,
        "tokens_per_s": simulated_tokens_per_s, "step_time_s": spread(time_parts["step_time_s"]),
        "mfu": spread(time_parts["mfu"]), "goodput": gp, "global_batch": global_batch,
        "memory_bytes": memory["total_bytes"],
        # The slow end of each candidate's stack's step-time band, which breaks ties between plans (search.selection).
        "step_band_high": problem.step_band_high_by_stack[arrays["framework"]],
    }


def _chunk_batch(problem: Problem, space_models: list, arrays: dict, global_batch: np.ndarray) -> CandidateBatch:
    """The chunk's candidates as one CandidateBatch for the cost model, with the ZeRO-3 hierarchy and stack
    columns where the space has them (flash attention as the stack runs it by default, the problem's dtype)."""
    stack = {k: arrays[k] for k in HIERARCHY_COLUMNS + STACK_COLUMNS if k in arrays}
    flash = flash_attention_by_default(stack["framework"] if "framework" in stack else FRAMEWORK_CODES["other"],
                                       problem.dtype)
    return build_batch(
        space_models, arrays["model_index"], tp=arrays["tp"], pp=arrays["pp"], dp=arrays["dp"], vpp=arrays["vpp"],
        cp=arrays["cp"], zero=arrays["zero"], offload=arrays["offload"], micro_batch=arrays["micro_batch"],
        global_batch=global_batch, recompute=arrays["recompute"], seq_parallel=arrays["seq_parallel"],
        flash_attention=flash, dtype=DTYPE_CODES[problem.dtype], **stack,
    )


def _spread(values: np.ndarray, fitting: np.ndarray, n: int) -> np.ndarray:
    """Values of the fitting candidates back to the whole chunk of `n`; non-fitting candidates get NaN."""
    out = np.full(n, np.nan)
    out[fitting] = values
    return out


def _best_tflops_per_gpu(problem: Problem, arrays: dict) -> np.ndarray:
    """The best TFLOP/s per GPU any layout could reach at each candidate's GPU count (gemm.flop_rate_ceiling
    times the rank share): the rate a candidate that does not fit is judged at, as it is never simulated."""
    return problem.peak * flop_rate_ceiling(problem.cluster) * rank_share(arrays["gpus"], problem.cluster) / 1e12


def _goodput(problem: Problem, arrays: dict, gpus: np.ndarray, evaluation_fraction: np.ndarray) -> np.ndarray:
    """Share of wall-clock that trains: what failures and checkpoints leave (cost.goodput, at each stack's
    checkpoint size) once the launch's evaluation passes (`evaluation_fraction` of training time) are counted."""
    checkpoint_bytes = (framework_arrays(arrays["framework"])["checkpoint_bytes_per_param"] if "framework" in arrays
                        else None)  # each stack's checkpoint size (frameworks/base.py)
    gp = goodput(problem.total_params[arrays["model_index"]], gpus, problem.cluster,
                 bytes_per_param=checkpoint_bytes)["goodput"]
    return with_evaluation(gp, evaluation_fraction)


def _inference_gpu_seconds(problem: Problem, mi: np.ndarray, gpus: np.ndarray, flops_rate: np.ndarray) -> np.ndarray:
    """GPU-seconds of serving --inference-tokens at 2·N FLOP per token (Sardana et al. 2024) at the job's
    achieved FLOP rate `flops_rate`; zero without --inference-tokens."""
    c = problem.constraints
    return (2.0 * problem.total_params[mi] * (c.inference_tokens / flops_rate) * gpus
            if c.inference_tokens else np.zeros(len(gpus)))


def _tokens_and_wall(problem: Problem, mi: np.ndarray, gpus: np.ndarray, effective_rate: np.ndarray,
                     inference_gpu_s: np.ndarray, batch_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D, wall seconds) per candidate: budget mode trains for what the budget (after serving) and deadline
    allow; target mode trains the D the law needs, at least one allowed batch's worth (module doc)."""
    c = problem.constraints
    if c.target_loss is None:
        training_gpu_s = c.gpu_seconds - inference_gpu_s
        wall = np.minimum(np.maximum(training_gpu_s, 0.0) / gpus, c.deadline_s)
        return effective_rate * wall, wall
    needed = problem.tokens_needed[mi]
    # Target mode: at least the tokens this candidate's batch is allowed at (tokens_allowing_batch).
    floor = np.ones(len(mi))
    reachable = np.isfinite(needed)
    if reachable.any():
        floor[reachable] = tokens_allowing_batch(batch_tokens[reachable],
                                                 problem.nonembedding_params[mi][reachable], problem.batch_rule)
    tokens = np.maximum(needed, floor)
    return tokens, tokens / effective_rate


def loss_checks(problem: Problem, space_models: list, mi: np.ndarray, tokens: np.ndarray,
                batch_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The law's predicted loss at (N, D), D taken as at least 1, and the two checks that hang on D: the batch is
    above the batch-size limit at D (which rises with D), and the loss is above uniform guessing (ln vocab)."""
    # Target mode: model sizes that never reach the target have D = inf (dropped by score_chunk); inf - inf in
    # the batch limit must not print a RuntimeWarning on stderr.
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = problem.law.predict(problem.law_params[mi], np.maximum(tokens, 1.0))
        limit = batch_size.max_batch_tokens(np.maximum(tokens, 1.0), problem.nonembedding_params[mi],
                                            problem.batch_rule)
    uniform_guess = np.log(np.array([m.vocab for m in space_models], dtype=float))[mi]
    return loss, batch_tokens > limit, loss > uniform_guess


def _failed_bits(n: int, checks: list) -> np.ndarray:
    """Per candidate of `n`, one bit per failed check: bit i for DROP_REASONS[i] (`checks` are in that order)."""
    failed = np.zeros(n, dtype=np.int64)
    for code, check in enumerate(checks):
        failed |= check.astype(np.int64) << code
    return failed


def _check_finite(problem: Problem, fitting: np.ndarray, time_parts: dict) -> None:
    """A NaN or infinite step time is a spec the cost model cannot use: an error, never a score."""
    if len(fitting) and not np.all(np.isfinite(time_parts["step_time_s"]) & (time_parts["step_time_s"] > 0)):
        raise PlannerInputError(
            f"cluster spec {problem.cluster.name!r}: its figures give a non-finite step time; check the "
            "accelerator's peak FLOP/s, bandwidths and efficiency values are finite and positive")
