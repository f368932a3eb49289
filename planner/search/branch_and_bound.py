"""Exact search over (model, GPU count) cells: score candidates in vectorised chunks, most promising cells first,
and stop where no cell's optimistic bound can reach the best plan found.

The scoreboard keeps the metrics of feasible candidates and, for the infeasible, which checks each failed.
Its own module because how the space is walked and tallied is apart from which plan is chosen
(search.selection) and how a plan is described (search.plan_record).
"""

from __future__ import annotations

import numpy as np

from planner.cost import row_chunks
from planner.cost.gemm import flop_rate_ceiling, rank_share
from planner.search.bounds import MISSES_DEADLINE, OVER_BUDGET, cell_bounds
from planner.search.score import DROP_REASONS, Problem, score_chunk
from planner.search.selection import primary_objective, tie_tolerance
from planner.search.space import Space, concatenate, enumerate_cells

# Candidates scored at once, over all threads: large enough for numpy, small enough for memory. Each thread's chunk is
# its share, and no smaller than row_chunks.FEWEST_ROWS_PER_CHUNK. `planner optimize --budget 10000gpuh` (4.8M
# candidates, 2-core machine) searched in 20 s on one thread (chunks of 262,144 or 131,072 alike), and in 14.6 s on
# two threads of 131,072, with a peak of 1.8 GB (1.3 GB on one thread; 2.3 GB with two chunks of 262,144 in flight:
# each thread keeps its own freed blocks, cli.allocator).
ROWS_IN_FLIGHT = 262_144
CELLS_PER_ROUND = 48  # (model, GPU count) cells enumerated at once between bound checks


def _progress(done: int, total: int, progress) -> None:
    """Report `done` of `total` (model, GPU count) cells scored to the caller's `progress(done, total)`, if any."""
    if callable(progress):
        progress(done, total)


class Scoreboard:
    """What scoring keeps: metrics of feasible candidates and, for the infeasible, how many failed each
    combination of checks (a bit mask per candidate, score.DROP_REASONS order). The drop counts (first
    failed check) and the candidates failing one constraint alone (relaxing it would make them feasible)
    both follow from those combinations."""

    def __init__(self) -> None:
        self.kept: dict[str, list] = {}
        self.combinations: dict[int, int] = {}  # failed-check bit mask -> candidates
        self.closest = {"deadline_wall_s": np.inf, "budget_gpu_s": np.inf, "memory_bytes": np.inf,
                        "memory_alone_bytes": np.inf}
        self.offset = 0
        self.best = np.inf  # best primary objective seen so far (branch-and-bound threshold)

    def add(self, problem: Problem, space: Space) -> None:
        n = len(space)

        threads = row_chunks.thread_count()

        def score(rows: tuple[int, int]) -> tuple[np.ndarray, dict]:
            index = np.arange(*rows)
            return index, score_chunk(problem, space.models, {k: v[index] for k, v in space.arrays.items()})

        # Chunks scored on the process's cores and tallied in order, as one after another would be.
        bounds = row_chunks.row_bounds(n, threads, in_flight=ROWS_IN_FLIGHT) if n else []
        for index, metrics in row_chunks.in_threads(score, bounds, threads):
            failed, good = metrics["failed"], metrics["feasible"]
            masks, counts = np.unique(failed[~good], return_counts=True)
            for mask, count in zip(masks.tolist(), counts.tolist()):
                self.combinations[mask] = self.combinations.get(mask, 0) + count
            # How close candidates came: any that do not fit (memory), those failing memory, the deadline or
            # the budget alone (what relaxing that constraint alone would have made a plan).
            for hit, key, value in (((failed & 1).astype(bool), "memory_bytes", "memory_bytes"),
                                    (failed == _bit(MEMORY), "memory_alone_bytes", "memory_bytes"),
                                    (failed == _bit(DEADLINE), "deadline_wall_s", "wall_s"),
                                    (failed == _bit(BUDGET), "budget_gpu_s", "gpu_seconds")):
                if hit.any():
                    self.closest[key] = min(self.closest[key], float(np.min(metrics[value][hit])))
            self.kept.setdefault("index", []).append(self.offset + index[good])
            for key, value in metrics.items():
                if key not in ("feasible", "failed"):
                    self.kept.setdefault(key, []).append(value[good])
            if good.any():
                primary, _ = primary_objective(problem, {k: v[good] for k, v in metrics.items()})
                self.best = min(self.best, float(np.min(primary)))
        self.offset += n

    def result(self) -> dict:
        feasible = {k: np.concatenate(v) for k, v in self.kept.items()} if self.kept else {"index": np.array([], int)}
        dropped = dict.fromkeys(DROP_REASONS, 0)
        for mask, count in self.combinations.items():
            dropped[DROP_REASONS[(mask & -mask).bit_length() - 1]] += count  # the first failed check
        sole = {reason: self.combinations.get(_bit(reason), 0) for reason in DROP_REASONS}
        return {"feasible": feasible, "dropped": dropped, "combinations": self.combinations, "sole": sole,
                "closest": self.closest}


def _bit(reason: str) -> int:
    return 1 << DROP_REASONS.index(reason)


MEMORY, DEADLINE, BUDGET = DROP_REASONS[0], "misses the deadline", "over the budget"


def score_space(problem: Problem, space: Space, progress=None) -> dict:
    """Score every candidate of `space` in chunks; keep the metrics of feasible ones and count the dropped."""
    board = Scoreboard()
    board.add(problem, space)
    _progress(1, 1, progress)
    return board.result()


def branch_and_bound(problem: Problem, models: list, counts: list[int], context: tuple[np.ndarray, np.ndarray],
                     progress=None) -> tuple[dict, Space, dict]:
    """Exact search over every (model, GPU count) cell: context cells first, then the rest by bound,
    stopping where no cell's bound can reach the best found (within the tie tolerance).

    Returns the scoreboard result, the scored candidates as one Space, and the cells ruled out by
    their bound alone, by reason.
    """
    cell_model, cell_gpus = (g.reshape(-1) for g in np.meshgrid(np.arange(len(models)), np.array(counts), indexing="ij"))
    best_rate = problem.peak * flop_rate_ceiling(problem.cluster) * rank_share(cell_gpus, problem.cluster)
    cells = cell_bounds(problem.law, problem.constraints, best_rate, problem.law_params, problem.total_params,
                        problem.flops_per_token, problem.tokens_needed,
                        np.log(np.array([m.vocab for m in models], dtype=float)), cell_model, cell_gpus)
    bound, reason = cells["bound"], cells["reason"]
    in_context = np.isin(cell_model, context[0]) & np.isin(cell_gpus, context[1])
    # Context cells first (smallest bound first within them), then everything else by bound.
    order = np.lexsort((bound, ~in_context))
    order = order[np.isfinite(bound[order])]
    ruled_out = {r: int(np.count_nonzero(reason == r)) for r in set(reason.tolist()) if r}
    # The least wall-clock and GPU-seconds of the cells ruled out for the deadline or the budget, for the
    # explanation ("even at the best rate the fastest plan needs ...").
    for key, floor, why in (("deadline_wall_s", "wall_floor_s", MISSES_DEADLINE), ("budget_gpu_s", "gpu_seconds_floor", OVER_BUDGET)):
        hit = reason == why
        if hit.any():
            ruled_out[key] = float(np.min(cells[floor][hit]))
    board, spaces, done = Scoreboard(), [], 0
    tolerance = tie_tolerance(problem)
    while done < len(order):
        threshold = board.best + abs(board.best) * tolerance
        # The context in one round (it is scored whatever the bounds say), then the rest a round at a time.
        size = max(CELLS_PER_ROUND, int(np.count_nonzero(in_context[order[done:]])))
        take = order[done:done + size]
        take = take[in_context[take] | (bound[take] <= threshold)]
        if len(take) == 0:
            break
        space = enumerate_cells(models, cell_model[take], cell_gpus[take], problem.cluster.gpus_per_node,
                                problem.hierarchy, problem.frameworks, problem.dtype)
        board.add(problem, space)
        spaces.append(space)
        done += size
        _progress(min(done, len(order)), len(order), progress)
    _progress(len(order), len(order), progress)
    scored = concatenate(spaces) if spaces else enumerate_cells(models, cell_model[:0], cell_gpus[:0],
                                                                problem.cluster.gpus_per_node, problem.hierarchy,
                                                                problem.frameworks, problem.dtype)
    return board.result(), scored, ruled_out
