"""Step times of one batch under several settings of the cluster's efficiency parameters, in one vectorised call.

Calibration prices the same few dozen measured rows thousands of times, each under other efficiency values: every
finite-difference Jacobian column, every trial of the fit's pre-search, every probe of the identifiability check.
On a batch that small a `step_time` call is almost all numpy's per-call overhead (~5 ms for 59 rows, ~3,600 Python
calls), so pricing K settings as K calls costs nearly K times what one call on K x rows costs. Here the batch is
tiled K times and each copy of a row carries its own setting's efficiencies as a per-row array: the cost model's
arithmetic is elementwise, so each row gets the numbers it gets under its own setting alone (the property test
holds them equal, tests/calibrate/test_efficiency_sweep.py).

The cost model computes a batch of fewer than `distinct.FEWEST_KEYED_ROWS` rows row by row. A larger batch is priced
once per distinct combination of the columns a part reads, which the efficiencies are not among, so a sweep keeps
its tiled batch below that size (and prices a larger one setting by setting).
"""

from __future__ import annotations

import numpy as np

from planner.cost import distinct
from planner.cost.step_time import step_time
from planner.specs.candidate_batch import CandidateBatch
from planner.specs.hardware import ClusterSpec, Efficiency


def _with_row_efficiencies(cluster: ClusterSpec, settings: list[dict], rows: int) -> ClusterSpec:
    """`cluster` with every parameter the settings name as a per-row array: setting i's value on rows
    i*rows .. (i+1)*rows - 1, the others as they are."""
    names = sorted({name for setting in settings for name in setting})
    base = cluster.efficiency.model_dump(by_alias=False)
    columns = {}
    for name in names:
        values = [setting.get(name, base[name]) for setting in settings]
        if any(value is None for value in values):  # a derived GEMM half size in every setting (step_times_under)
            columns[name] = None
            continue
        columns[name] = np.repeat(np.asarray(values, dtype=float), rows)
    # model_construct: the values were validated where they were made (calibrate's transforms keep each within
    # its bounds); an array is not a float to pydantic.
    return cluster.model_copy(update={"efficiency": Efficiency.model_construct(**(base | columns))})


def step_times_under(batch: CandidateBatch, cluster: ClusterSpec, settings: list[dict]) -> np.ndarray:
    """step_time_s of every row of `batch` under each setting (a dict of efficiency parameters replacing the
    cluster's): an array of shape (len(settings), len(batch)), equal to one `step_time` per setting."""
    rows = len(batch)
    out = np.empty((len(settings), rows))
    per_call = max(1, (distinct.FEWEST_KEYED_ROWS - 1) // max(rows, 1))
    half_sizes = {setting.get("matmul_half_size", cluster.efficiency.matmul_half_size) is None for setting in settings}
    if len(half_sizes) > 1:  # a derived half size (None) prices GEMMs by another rule (gemm.matmul_efficiency)
        per_call = 1
    for start in range(0, len(settings), per_call):
        chunk = settings[start:start + per_call]
        if len(chunk) == 1 or rows == 0:
            for i, setting in enumerate(chunk):
                out[start + i] = step_time(batch, cluster.with_efficiency(**setting))["step_time_s"]
            continue
        tiled = batch.take(np.tile(np.arange(rows), len(chunk)))
        times = step_time(tiled, _with_row_efficiencies(cluster, chunk, rows))["step_time_s"]
        out[start:start + len(chunk)] = np.reshape(times, (len(chunk), rows))
    return out
