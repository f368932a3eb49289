"""Goodput: the fraction of wall-clock that trains, given failures, checkpoints and restarts.

Job failures arrive at rate gpus / MTBF_per_gpu. Checkpoints cost delta seconds to write (model-state
bytes over the storage bandwidth); Young/Daly's first-order optimal interval is tau = sqrt(2·delta·M)
with M the job's mean time between failures. Per unit of useful work the job also spends delta/tau
writing checkpoints and, per failure, redoes on average tau/2 of work and waits the restart time R:
  goodput = 1 / (1 + delta/tau + (tau/2 + delta + R) / M)          (Daly 2006, first order)
"""

from __future__ import annotations

import numpy as np

from planner.hardware import ClusterSpec

# Bytes per parameter in a restartable checkpoint: 16-bit weights 2 + fp32 master 4 + Adam m 4 + v 4.
CHECKPOINT_BYTES_PER_PARAM = 14.0


def goodput(params, gpus, cluster: ClusterSpec) -> dict[str, np.ndarray]:
    """Goodput fraction and its inputs for arrays of (params, gpus)."""
    reliability = cluster.reliability
    params = np.asarray(params, dtype=float)
    gpus = np.asarray(gpus, dtype=float)
    job_mtbf = reliability.mtbf_per_gpu_s / gpus
    checkpoint_s = CHECKPOINT_BYTES_PER_PARAM * params / reliability.checkpoint_bytes_per_s
    interval = np.sqrt(2.0 * checkpoint_s * job_mtbf)
    overhead = checkpoint_s / interval + (interval / 2.0 + checkpoint_s + reliability.restart_s) / job_mtbf
    return {
        "goodput": 1.0 / (1.0 + overhead),
        "job_mtbf_s": job_mtbf,
        "checkpoint_write_s": checkpoint_s,
        "checkpoint_interval_s": interval,
        "expected_failures_per_day": 86400.0 / job_mtbf,
    }
