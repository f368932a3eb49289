"""Step times of one batch under several settings of the cluster's efficiency parameters, in one vectorised call.

Calibration prices the same few dozen measured rows thousands of times, each under other efficiency values: every
finite-difference Jacobian column, every trial of the fit's pre-search, every probe of the identifiability check.
On a batch that small a `step_time` call is almost all numpy's per-call overhead (~5 ms for 59 rows, ~3,600 Python
calls), so pricing K settings as K calls costs nearly K times what one call on K x rows costs. Here the batch is
tiled K times and each copy of a row carries its own setting's efficiencies as a per-row array: the cost model's
arithmetic is elementwise, so each row gets the numbers it gets under its own setting alone (the property test
holds them equal, tests/property/test_efficiency_sweep.py).

The cost model computes a batch of fewer than `distinct.FEWEST_KEYED_ROWS` rows row by row. A larger batch is priced
once per distinct combination of the columns a part reads, which the efficiencies are not among, so a sweep keeps
its tiled batch below that size (and prices a larger one setting by setting). The cluster a sweep builds is for that
one `step_time` call: its efficiencies (and what reads them, such as `ClusterSpec.matmul_half_size()`) are arrays.

`step_times_of` prices several requests at once, each its own rows of the batch under its own settings: how fits run
side by side have their evaluations priced together (calibrate.lockstep).
"""

from __future__ import annotations

import numpy as np

from planner.cost import distinct
from planner.cost.step_time import step_time
from planner.specs.candidate_batch import CandidateBatch
from planner.specs.hardware import ClusterSpec, Efficiency


def _with_row_efficiencies(cluster: ClusterSpec, blocks: list[tuple[int, dict]]) -> ClusterSpec:
    """`cluster` with every parameter the settings name as a per-row array over consecutive blocks of rows: block i's
    `rows` rows take its setting's value (the cluster's own where the setting does not name it)."""
    names = sorted({name for _, setting in blocks for name in setting})
    base = cluster.efficiency.model_dump(by_alias=False)
    columns = {}
    for name in names:
        values = [setting.get(name, base[name]) for _, setting in blocks]
        if any(value is None for value in values):  # a derived GEMM half size in every block (step_times_of)
            columns[name] = None
            continue
        columns[name] = np.repeat(np.asarray(values, dtype=float), [rows for rows, _ in blocks])
    # model_construct: the values were validated where they were made (calibrate's transforms keep each within
    # its bounds); an array is not a float to pydantic.
    return cluster.model_copy(update={"efficiency": Efficiency.model_construct(**(base | columns))})


def step_times_of(batch: CandidateBatch, cluster: ClusterSpec, requests: list[tuple]) -> list[np.ndarray]:
    """Each request's step times, all priced together: `requests` is a list of (rows, settings), rows an index
    array into `batch` (None: every row) and settings a list of dicts of efficiency parameters replacing the
    cluster's. Returns per request an array (len(settings), its rows), equal to one `step_time` per setting on
    those rows."""
    whole = np.arange(len(batch))
    units = [(r, k, whole if rows is None else np.asarray(rows, dtype=np.int64), setting, rows is None)
             for r, (rows, settings) in enumerate(requests) for k, setting in enumerate(settings)]
    out = [np.empty((len(settings), len(batch) if rows is None else len(rows))) for rows, settings in requests]
    # A derived GEMM half size (None) prices GEMMs by another rule than a number (gemm.matmul_efficiency): apart.
    derived = [unit[3].get("matmul_half_size", cluster.efficiency.matmul_half_size) is None for unit in units]
    for group in (True, False):
        chunk, size = [], 0
        for unit in (u for u, d in zip(units, derived) if d == group):
            if chunk and size + len(unit[2]) >= distinct.FEWEST_KEYED_ROWS:
                _price(batch, cluster, chunk, out)
                chunk, size = [], 0
            chunk.append(unit)
            size += len(unit[2])
        if chunk:
            _price(batch, cluster, chunk, out)
    return out


def _price(batch, cluster, units, out) -> None:
    """One step_time call for `units` (request, setting, rows, setting dict, whole batch?), written into `out`. A
    unit alone runs on its rows as a batch of its own (the whole batch itself where it is, keeping its cached
    columns), under its setting as scalars: a unit of any size is then priced right, keyed or not."""
    if len(units) == 1:
        r, k, rows, setting, is_whole = units[0]
        own = batch if is_whole else batch.take(rows)
        out[r][k] = step_time(own, cluster.with_efficiency(**setting))["step_time_s"]
        return
    index = np.concatenate([rows for _, _, rows, _, _ in units])
    if not len(index):  # no rows: every output is empty already
        return
    # Below it the cost model computes every row (distinct.py); above, rows alike but for their efficiencies would
    # be priced once, under one setting. step_times_of's chunks keep below it.
    assert len(index) < distinct.FEWEST_KEYED_ROWS, len(index)
    efficiencies = _with_row_efficiencies(cluster, [(len(rows), setting) for _, _, rows, setting, _ in units])
    times = step_time(batch.take(index), efficiencies)["step_time_s"]
    start = 0
    for r, k, rows, _, _ in units:
        out[r][k] = times[start:start + len(rows)]
        start += len(rows)


def step_times_under(batch: CandidateBatch, cluster: ClusterSpec, settings: list[dict]) -> np.ndarray:
    """step_time_s of every row of `batch` under each setting (a dict of efficiency parameters replacing the
    cluster's): an array of shape (len(settings), len(batch)), equal to one `step_time` per setting."""
    return step_times_of(batch, cluster, [(None, settings)])[0]
