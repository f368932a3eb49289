"""Helpers of the cost-model tests, handed out as fixtures (the suite runs with --import-mode=importlib)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from planner.frameworks import FRAMEWORK_NAMES
from planner.specs.candidate_batch import DTYPE_CODES, CandidateBatch, build_batch
from planner.specs.model import preset


@pytest.fixture
def flatten():
    """flatten(tree) -> (path, array) of every leaf of a nested dict of a cost-model result."""
    return _flatten


@pytest.fixture
def mixed_batch():
    """mixed_batch(model_name, models=None) -> a CandidateBatch of mixed layouts whose rows repeat (_mixed_batch)."""
    return _mixed_batch


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        for name, value in tree.items():
            yield from _flatten(value, f"{prefix}/{name}")
    else:
        yield prefix, np.asarray(tree)


def _mixed_batch(model_name: str, models: list | None = None) -> CandidateBatch:
    """Layouts of every stack with random dtypes, switches, offload and hierarchies, each repeated four times; of
    `model_name`, or with `models` each row of a random one of them (a budget search's chunk)."""
    rng = np.random.default_rng(7)
    table = np.array([row for row in itertools.product(
        (1, 2, 8), (1, 4), (1, 2), (1, 16), (1, 2), (0, 1, 2, 3), (1, 2), (0, 2), range(len(FRAMEWORK_NAMES)))
        if not (row[2] > 1 and row[1] == 1)], dtype=float)
    tp, pp, vpp, dp, cp, zero, mb, recompute, framework = table.T
    n = len(table)
    dtype = rng.choice([DTYPE_CODES["bf16"], DTYPE_CODES["fp16"], DTYPE_CODES["fp8"]], n)
    columns = dict(
        tp=tp, pp=pp, vpp=vpp, dp=dp, cp=cp, zero=zero, micro_batch=mb, global_batch=mb * dp * rng.choice([1, 4, 8], n),
        recompute=recompute,
        framework=framework, dtype=dtype, fp8_current_scaling=(dtype == DTYPE_CODES["fp8"]) & (rng.random(n) < 0.5),
        seq_parallel=(tp > 1) & (rng.random(n) < 0.5),
        tp_comm_overlap=(tp > 1) & (rng.random(n) < 0.5), dp_comm_overlap=rng.random(n) < 0.5,
        offload=np.where(zero >= 1, rng.choice([0, 1], n) + (zero == 3), 0), flash_attention=rng.random(n) < 0.8,
        shard_group=np.where((zero == 3) & (rng.random(n) < 0.3), np.minimum(dp, 8), 0),
        zero_hpz=np.where((zero == 3) & (rng.random(n) < 0.3), np.minimum(dp, 2), 1),
        partition_activations=rng.random(n) < 0.5)
    if models is None and preset(model_name).is_moe:  # the all-to-all overlaps, DualPipe's stage pairing among them
        columns["a2a_overlap"] = rng.choice([0.0, 1.0, 2.0], n)
    index = np.zeros(4 * n, dtype=np.int64) if models is None else rng.integers(0, len(models), 4 * n)
    return build_batch(models or [preset(model_name)], index,
                       **{name: np.tile(values, 4) for name, values in columns.items()})
