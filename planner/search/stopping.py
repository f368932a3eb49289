"""Plans that stop early: a scored candidate trained only until a shorter wall-clock (budget mode).

In budget mode every candidate trains for what the budget and the deadline allow (search.score: wall =
min((budget - serving) / gpus, deadline)), so the scored plans that finish sooner are only those the budget cut
short: on a fixed GPU count, the larger models whose serving (--inference-tokens) leaves less to train. The same
layout and batch stopped at a wall-clock T is as real a plan: it trains effective_rate x T tokens and spends
gpus x T GPU-seconds beside its serving, within the budget and the deadline since the full run was. The runner-up
"finishing in at most half the wall-clock" and the loss-vs-wall-clock frontier are chosen among these. (The audit:
`--gpus 1024 --deadline 30d --inference-tokens 1T` offered a 384B model on 218B tokens in 12.5 days as the best
half-time plan, and a frontier of 250-500B models, where a 47.6B model stopped at 12.9 days reaches 1.973 against
2.011.)

Only candidates the search scored are stopped: cells branch-and-bound ruled out at the full budget are not
revisited. Target mode needs the tokens that reach the target, so nothing stops early there.
"""

from __future__ import annotations

import numpy as np

from planner.search.score import Problem, loss_checks
from planner.search.selection import pareto_front
from planner.search.space import Space

# Frontier wall-clocks tried between the fastest plan's and the slowest (geometric), beside the plans' own.
FRONTIER_GRID_POINTS = 48
# Per model size, GPU count and global batch, the layouts the frontier stops early: the fastest (by trained tokens a
# second) and the one that trains the most tokens in all. At a wall-clock the best plan of a model size on a GPU count
# is its fastest layout whose batch the stopped D still allows: one batch passes or fails the limit alike for every
# layout that trains as many tokens, so each batch is kept (a smaller batch passes at a shorter stop), and each
# count (fewer GPUs run longer on the same budget). Serving (--inference-tokens) ends the faster layouts' runs
# sooner, so the one that trains the most tokens in all is kept beside them.
FRONTIER_LAYOUTS_PER_SHAPE = 4
# How far below the longest plan's wall-clock the frontier's grid reaches (a hundredth: 30 days -> 7.2 hours).
FRONTIER_SPAN = 100.0
# A grid wall-clock within this share below a plan's own end is that plan's (see frontier_rows).
GRID_MERGE_RELATIVE = 0.01


def stops_early(problem: Problem) -> bool:
    """Whether plans may stop before their budget runs out (budget mode)."""
    return problem.constraints.target_loss is None


def stopped_at(problem: Problem, space: Space, feasible: dict, wall_limit: float) -> dict:
    """`feasible` (search.branch_and_bound's arrays, with `index` into `space`) with every candidate that runs past
    `wall_limit` trained only until then (`stopped`): its tokens, wall-clock, GPU-seconds and loss at the shorter
    run; those whose batch the fewer tokens no longer allow (the batch-size limit rises with D) or whose loss would
    be above uniform guessing are left out. In target mode, only the candidates that finish by then."""
    wall = feasible["wall_s"]
    if not stops_early(problem):
        return _subset(feasible, wall <= wall_limit * (1 + 1e-9))
    index = feasible["index"]
    mi, gpus = space.arrays["model_index"][index], space.arrays["gpus"][index].astype(float)
    stopped_wall = np.minimum(wall, wall_limit)
    tokens = feasible["tokens"] * np.where(wall > 0, stopped_wall / np.where(wall > 0, wall, 1.0), 1.0)
    seq_len = np.array([m.seq_len for m in space.models], dtype=float)[mi]
    loss, batch_too_large, above_uniform_guess = loss_checks(problem, space.models, mi, tokens,
                                                             feasible["global_batch"] * seq_len)
    keep = ~batch_too_large & ~above_uniform_guess
    stopped = {**feasible, "tokens": tokens, "wall_s": stopped_wall, "loss": loss,
               "gpu_seconds": gpus * stopped_wall + feasible["inference_gpu_seconds"], "stopped": wall > wall_limit}
    return _subset(stopped, keep)


def frontier_rows(problem: Problem, space: Space, feasible: dict) -> list[dict]:
    """One-row arrays of each wall-clock the frontier tries: the best plan finishing by then, among the candidates
    stopped early where that is allowed (budget mode), else the scored plans as they are."""
    wall = feasible["wall_s"]
    if not stops_early(problem) or len(wall) == 0:
        return [_row(feasible, int(p)) for p in pareto_front(feasible, limit=len(wall))]
    fastest = _fastest_per_shape(space, feasible)
    # The full runs' own frontier ends, and a geometric grid between them from FRONTIER_SPAN below the longest plan:
    # on one GPU count every plan spends the budget in the same time, and the stopped plans are the whole frontier
    # (those whose batch the fewer tokens no longer allow drop out).
    own = np.unique(fastest["wall_s"][pareto_front(fastest, limit=len(fastest["wall_s"]))])
    between = np.geomspace(min(wall.min(), wall.max() / FRONTIER_SPAN), wall.max(), FRONTIER_GRID_POINTS)
    # A point just short of a plan's own end adds a row that differs from that plan's by a rounding: left out.
    next_own = own[np.minimum(np.searchsorted(own, between), len(own) - 1)]
    grid = np.unique(np.concatenate([between[next_own > between * (1 + GRID_MERGE_RELATIVE)], own]))
    rows = []
    for limit in grid:
        stopped = stopped_at(problem, space, fastest, float(limit))
        if len(stopped["loss"]):
            rows.append(_row(stopped, int(np.lexsort((stopped["wall_s"], stopped["loss"]))[0])))
    return rows


def _fastest_per_shape(space: Space, feasible: dict) -> dict:
    """Of each (model size, GPU count, global batch), the FRONTIER_LAYOUTS_PER_SHAPE candidates that train the most
    tokens a second and the one that trains the most tokens."""
    index = feasible["index"]
    shape = _shape_codes(space.arrays["model_index"][index], space.arrays["gpus"][index], feasible["global_batch"])
    rate = feasible["tokens"] / np.maximum(feasible["wall_s"], 1e-30)
    keep = np.zeros(len(shape), bool)
    for value, count in ((rate, FRONTIER_LAYOUTS_PER_SHAPE), (feasible["tokens"], 1)):
        order = np.lexsort((-value, shape))
        rank = np.arange(len(order)) - np.searchsorted(shape[order], shape[order], side="left")
        keep[order[rank < count]] = True
    return _subset(feasible, keep)


def _shape_codes(*columns) -> np.ndarray:
    """Each row's combination of the whole-number `columns` (model index, GPU count, global batch), numbered in
    lexicographic order: the numbers np.unique over the stacked columns (axis=1) gives, from one int64 key per row
    (key = ((a x span_b) + b) x span_c + c, each value below its own column's span = its maximum + 1), which sorts
    ~7x faster on the 2.2M feasible rows of a 10,000 GPU-hour budget search (2.4 s -> 0.34 s). Where a value is not
    a finite whole number >= 0, or the key could pass 2^62, the stacked np.unique."""
    values = [np.asarray(column) for column in columns]
    whole = all(np.all(np.isfinite(v)) and np.all(v >= 0) and np.all(v == np.floor(v)) for v in values)
    spans = [float(v.max()) + 1.0 if len(v) else 1.0 for v in values] if whole else []
    if not whole or float(np.prod(spans)) >= 2.0 ** 62:
        _, codes = np.unique(np.stack(values), axis=1, return_inverse=True)
        return codes.reshape(-1)
    spans = [int(span) for span in spans]
    key = np.zeros(len(values[0]), dtype=np.int64)
    for v, span in zip(values, spans):
        key = key * span + v.astype(np.int64)
    _, codes = np.unique(key, return_inverse=True)
    return codes.reshape(-1)


def _row(arrays: dict, position: int) -> dict:
    return {key: value[position:position + 1] for key, value in arrays.items()}


def _subset(arrays: dict, mask: np.ndarray) -> dict:
    return {key: value[mask] for key, value in arrays.items()}
