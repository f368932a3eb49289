"""Goodput: the fraction of wall-clock that trains, given failures, checkpoints and restarts.

Job failures arrive at rate gpus / MTBF_per_gpu. A checkpoint stops training for delta seconds; Young/Daly's
first-order optimal interval is tau = sqrt(2·delta·M) with M the job's mean time between failures. Per unit of
useful work the job also spends delta/tau checkpointing and, per failure, redoes the work since the last
checkpoint it can restore (on average tau/2 plus how far that checkpoint lags) and waits the restart time R:
  goodput = 1 / (1 + delta/tau + (tau/2 + lag + R) / M)          (Daly 2006, first order)

How a checkpoint is taken sets delta and the lag (`CHECKPOINT_MODES`):
  sync       training stops while the whole state is written to storage: delta = lag = S / storage bandwidth
             (S = the stack's checkpoint_bytes_per_param x parameters, frameworks/base.py; the job's writers
             share the storage bandwidth).
  async      two stages (MegaScale, Jiang et al. 2024 section 4.3; PyTorch DCP async_save; CheckFreq): training
             stops only while each GPU copies its share S / gpus to host memory over PCIe (every GPU at once);
             a background process then persists it, so the next checkpoint waits for that (tau >= S / storage
             bandwidth) and a failure restores the last persisted one (lag = the persist time).
  in-memory  as async, but a failure restores the host-memory copy (kept on peers, Gemini, Wang et al. 2023),
             so the lag is only the copy.
Evaluation passes (planner.cost.evaluation) divide it by 1 + their share of training time.
The mode is the spec's `reliability.checkpoint` unless given. `restart_s` overrides the spec's restart time (a fast restart: MegaScale's in-place restart without a requeue).
"""

from __future__ import annotations

import numpy as np

from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORKS
from planner.specs.hardware import ClusterSpec

CHECKPOINT_MODES = ("sync", "async", "in-memory")


def checkpoint_bytes_per_param(framework: str) -> float:
    """Bytes per parameter the stack's restartable checkpoint holds (frameworks/base.py, cited per stack)."""
    return FRAMEWORKS[framework].checkpoint_bytes_per_param


def goodput(params, gpus, cluster: ClusterSpec, checkpoint: str | None = None, restart_s=None,
            bytes_per_param=None) -> dict[str, np.ndarray]:
    """Goodput fraction and its inputs for arrays of (params, gpus); `checkpoint` defaults to the spec's
    reliability.checkpoint (sync unless the spec says otherwise); `bytes_per_param` (an array, or one value) is
    the stacks' checkpoint_bytes_per_param, by default the neutral `other` stack's."""
    checkpoint = cluster.reliability.checkpoint_mode if checkpoint is None else checkpoint
    if checkpoint not in CHECKPOINT_MODES:
        raise PlannerInputError(f"checkpoint mode: expected one of {', '.join(CHECKPOINT_MODES)}, got {checkpoint!r}")
    reliability = cluster.reliability
    params = np.asarray(params, dtype=float)
    gpus = np.asarray(gpus, dtype=float)
    restart = reliability.restart_s if restart_s is None else float(restart_s)
    job_mtbf = reliability.mtbf_per_gpu_s / gpus
    bytes_per_param = checkpoint_bytes_per_param("other") if bytes_per_param is None else bytes_per_param
    state_bytes = np.asarray(bytes_per_param, dtype=float) * params
    persist_s = state_bytes / reliability.checkpoint_bytes_per_s
    if checkpoint == "sync":
        stall_s, lag_s, floor_s = persist_s, persist_s, 0.0
    else:
        # Every GPU copies its share to host memory at once, over its own PCIe link.
        stall_s = state_bytes / gpus / cluster.node.pcie_bytes_per_s_per_accelerator
        lag_s = persist_s if checkpoint == "async" else stall_s
        floor_s = persist_s  # the next snapshot waits for the background write of the last
    interval = np.maximum(np.sqrt(2.0 * stall_s * job_mtbf), floor_s)
    overhead = stall_s / interval + (interval / 2.0 + lag_s + restart) / job_mtbf
    return {
        "goodput": 1.0 / (1.0 + overhead),
        "job_mtbf_s": job_mtbf,
        "checkpoint_write_s": persist_s,
        "checkpoint_stall_s": np.broadcast_to(stall_s, np.shape(overhead)),
        "checkpoint_interval_s": interval,
        "expected_failures_per_day": 86400.0 / job_mtbf,
    }


def goodput_summary(params: float, gpus: int, cluster: ClusterSpec, checkpoint: str | None = None,
                    framework: str = "other", evaluation_fraction: float = 0.0) -> dict:
    """goodput() of one job on `framework` as plain numbers, with the inputs it rests on (what `planner simulate`
    reports). `evaluation_fraction` (planner.cost.evaluation: evaluation seconds per second of training) is
    folded in, as the search folds it: `goodput` is then the fraction of wall-clock that trains."""
    mode = cluster.reliability.checkpoint_mode if checkpoint is None else checkpoint
    bytes_per_param = checkpoint_bytes_per_param(framework)
    result = {key: float(np.asarray(value).item())
              for key, value in goodput(params, gpus, cluster, mode, bytes_per_param=bytes_per_param).items()}
    stack = FRAMEWORKS[framework]
    return {
        **result,
        "goodput": result["goodput"] / (1.0 + evaluation_fraction),
        "failure_goodput": result["goodput"],
        "evaluation_fraction": float(evaluation_fraction),
        "eval_interval_steps": stack.eval_interval_steps, "eval_iters": stack.eval_iters,
        "checkpoint_mode": mode,
        "checkpoint_bytes": bytes_per_param * float(params),
        "checkpoint_bytes_per_s": cluster.reliability.checkpoint_bytes_per_s,
        "mtbf_per_gpu_s": cluster.reliability.mtbf_per_gpu_s,
        "restart_s": cluster.reliability.restart_s,
    }
