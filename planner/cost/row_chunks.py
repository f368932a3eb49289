"""Score a large candidate batch in row chunks, on the machine's cores.

Every number the cost model gives a candidate comes from that candidate's own columns: its arithmetic is
elementwise over rows, and cost.distinct evaluates shared parts once per combination and spreads them back bit for
bit. So a batch cut into contiguous row chunks gives, chunk by chunk and concatenated, the arrays the whole batch
gives, and the chunks can run at once. numpy releases the GIL inside its array loops, where the cost model spends
nearly all its time, so threads suffice: no process start, no pickling of the batch.

Measured on the 2-core development machine (benchmarks/bench_cost_model.py, 1,000,000 llama2-70b layouts on
dgx-a100-80gb, best of 3): the whole batch in one call 1.02-1.24 s; four chunks of 250,000 rows one after another
1.14-1.16 s; the same four chunks on two threads 0.78-0.80 s. Chunks of 65,536 rows were slower (0.94 s on two
threads): the fewer rows a chunk has, the fewer of them share a combination for cost.distinct to reuse.

`PLANNER_THREADS` (a whole number >= 1) sets the threads; unset, every core this process may run on, at most 8, and
no more than a container's CPU quota allows (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
"""

from __future__ import annotations

import contextvars
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

from planner.errors import PlannerInputError

THREADS_VARIABLE = "PLANNER_THREADS"
# Most rows in a chunk: large enough for numpy and for cost.distinct's reuse, and a chunk's arrays (tens of float64
# columns) stay at tens of MB.
ROWS_PER_CHUNK = 262_144
# A batch is cut only where every chunk keeps at least this many rows: below it, the threads' start and the
# concatenation cost more than they save, and fewer rows share combinations (above).
FEWEST_ROWS_PER_CHUNK = 65_536

# Threads used by default at most. Each holds a chunk's working arrays (about 0.5 GB for one of the budget search's
# chunks) and keeps its own freed blocks (cli/allocator.py); PLANNER_THREADS asks for more.
MOST_DEFAULT_THREADS = 8
# Where the kernel shows this process's CPU quota (the cgroup mounts; see the kernel's
# Documentation/admin-guide/cgroup-v2.rst, "cpu.max", and cgroup-v1/cfs-bandwidth: "cpu.cfs_quota_us").
CGROUP_ROOT = Path("/sys/fs/cgroup")

Item = TypeVar("Item")
Result = TypeVar("Result")


def thread_count() -> int:
    """Threads to score with: PLANNER_THREADS, or the cores this process may run on, at most MOST_DEFAULT_THREADS."""
    setting = os.environ.get(THREADS_VARIABLE, "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise PlannerInputError(f"environment variable {THREADS_VARIABLE}={setting!r}: expected a whole number >= 1")
        return int(setting)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cpu_quota_cores()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, min(cores, MOST_DEFAULT_THREADS))


def cpu_quota_cores(root: Path = CGROUP_ROOT) -> int | None:
    """The cores a container's CPU quota pays for, rounded up (quota / period), or None where no quota is set or
    none can be read. A pod limited to 2 CPUs on a 64-core host sees all 64 in its affinity mask; its threads beyond 2
    would only wait for the quota."""
    candidates = [(root / "cpu.max", None),  # cgroup v2: "<quota|max> <period>"
                  (root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"),  # cgroup v1
                  (root / "cpu,cpuacct" / "cpu.cfs_quota_us", root / "cpu,cpuacct" / "cpu.cfs_period_us")]
    for quota_file, period_file in candidates:
        try:
            fields = quota_file.read_text().split()
            if period_file is not None:
                fields = fields[:1] + period_file.read_text().split()[:1]
        except OSError:
            continue
        if len(fields) != 2 or fields[0] in ("max", "-1"):
            return None
        try:
            quota, period = int(fields[0]), int(fields[1])
        except ValueError:
            return None
        return math.ceil(quota / period) if quota > 0 and period > 0 else None
    return None


def row_bounds(rows: int, threads: int, in_flight: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) of the contiguous chunks to score `rows` rows in, all of nearly equal size: none above
    ROWS_PER_CHUNK, or, given `in_flight` (the rows a caller's threads may hold at once), above each thread's share of
    it, but no share below FEWEST_ROWS_PER_CHUNK; and with more than one thread at least one chunk per thread where
    each keeps FEWEST_ROWS_PER_CHUNK."""
    most_rows = ROWS_PER_CHUNK if in_flight is None else max(in_flight // max(threads, 1), FEWEST_ROWS_PER_CHUNK)
    chunks = max(1, math.ceil(rows / most_rows), min(threads, rows // FEWEST_ROWS_PER_CHUNK))
    edges = np.linspace(0, rows, chunks + 1).round().astype(int).tolist()
    return list(zip(edges[:-1], edges[1:]))


def in_threads(function: Callable[[Item], Result], items: Iterable[Item], threads: int) -> Iterator[Result]:
    """function(item) for each item, in order, computed on up to `threads` threads at once; at most `threads`
    results wait unread (a search's chunks are tens of MB each). An exception in any call is raised here."""
    if threads <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = deque()
        for item in items:
            # Each call in a copy of this thread's context: numpy's error state (np.errstate) lives there, and a
            # caller's `errstate(all="raise")` must hold in the workers too (calibrate/lockstep.py does the same).
            pending.append(pool.submit(contextvars.copy_context().run, function, item))
            if len(pending) >= threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# A value a chunk's result does not have (concatenate_rows).
_ABSENT = object()


def concatenate_rows(parts: list, lengths: list[int]):
    """The chunks' results (arrays nested in dicts and tuples, the row axis last; chunk i has lengths[i] rows) as one
    result over all rows. A value without a row axis in every chunk, and the same in each, is kept once; one that has
    a row axis in some chunks only is broadcast over the others' rows. A part the cost model leaves out where no row
    of the batch has it (an MoE model's expert memory in a chunk of dense models, the interleaved schedule's lock-step
    in a chunk without interleaving) is zero on the rows of the chunks that lack it, as in the whole batch
    (tests/cost/test_row_chunks.py: batches sorted so that chunks differ)."""
    present = [part for part in parts if part is not _ABSENT]
    first = present[0]
    if isinstance(first, dict):
        names = dict.fromkeys(name for part in present for name in part)  # in order of first appearance
        return {name: concatenate_rows([_ABSENT if part is _ABSENT else part.get(name, _ABSENT) for part in parts],
                                       lengths) for name in names}
    if isinstance(first, tuple):
        return tuple(concatenate_rows([_ABSENT if part is _ABSENT else part[i] for part in parts], lengths)
                     for i in range(len(first)))
    if (len(present) == len(parts) and all(np.ndim(part) == 0 for part in parts)
            and all(np.array_equal(part, first) for part in parts)):
        return first
    shaped = next((np.shape(part) for part in present if np.ndim(part) > 0), (1,))
    dtype = np.result_type(*present)
    return np.concatenate([np.zeros(shaped[:-1] + (length,), dtype=dtype) if part is _ABSENT
                           else np.broadcast_to(part, shaped[:-1] + (length,)) for part, length in zip(parts, lengths)],
                          axis=-1)
