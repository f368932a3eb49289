"""Which feasible plan is best: the lowest loss (GPU-seconds in target mode), ties broken by shorter wall-clock;
and the loss-vs-wall-clock frontier.

Its own module because the selection rule is what the brute-force tests check the search against
(tests/search/test_bruteforce.py), and the search's bound uses its tie tolerance.
"""

from __future__ import annotations

import numpy as np

from planner.search.score import Problem

# Losses within 0.1% (cost within 1% in target mode) count as equal - far inside the law's own
# uncertainty band - and the shorter wall-clock wins among them.
LOSS_TIE_RELATIVE = 1e-3
COST_TIE_RELATIVE = 1e-2
WALL_TIE_RELATIVE = 1e-6


def tie_tolerance(problem: Problem) -> float:
    return LOSS_TIE_RELATIVE if problem.constraints.target_loss is None else COST_TIE_RELATIVE


def primary_objective(problem: Problem, feasible: dict) -> tuple[np.ndarray, float]:
    """What is minimised first (loss, or GPU-seconds in target mode) and its tie tolerance."""
    key = "loss" if problem.constraints.target_loss is None else "gpu_seconds"
    return feasible[key], tie_tolerance(problem)


def select(problem: Problem, feasible: dict, mask: np.ndarray | None = None) -> int | None:
    """Position (into feasible) of the best candidate, optionally among `mask`.

    Best = lowest primary objective; candidates within the tie tolerance of it are ordered by
    wall-clock, then by the objective itself.
    """
    primary, tolerance = primary_objective(problem, feasible)
    allowed = np.ones(len(primary), bool) if mask is None else mask
    if not allowed.any():
        return None
    best = np.min(primary[allowed])
    near = allowed & (primary <= best + abs(best) * tolerance)
    # Wall-clocks within WALL_TIE_RELATIVE are equal too (plans bound by the same budget differ only by
    # rounding, or by a negligible serving demand), and then the objective decides.
    wall = feasible["wall_s"]
    fastest = np.min(wall[near])
    candidates = np.flatnonzero(near & (wall <= fastest * (1 + WALL_TIE_RELATIVE)))
    order = np.lexsort((wall[candidates], primary[candidates]))
    return int(candidates[order[0]])


def pareto_front(feasible: dict, limit: int = 24) -> np.ndarray:
    """Positions of the loss-vs-wall-clock frontier: no other plan is both faster and better."""
    order = np.lexsort((feasible["loss"], feasible["wall_s"]))
    best_loss = np.minimum.accumulate(feasible["loss"][order])
    improving = np.concatenate([[True], best_loss[1:] < best_loss[:-1] - 1e-12])
    front = order[improving]
    if len(front) > limit:
        front = front[np.linspace(0, len(front) - 1, limit).round().astype(int)]
    return front
