"""Which feasible plan is best: the lowest loss (GPU-seconds in target mode), ties broken by the shorter wall-clock
at the slow end of each plan's step-time band; and the loss-vs-wall-clock frontier.

Why the band's slow end: plans whose losses tie are the same plan by the law, and what tells them apart is how
long they take. Each stack's predictions carry their own held-out error band (calibrate.error_bands: the
cluster's calibration, else `planner validate` on the published runs): on published hardware Megatron-LM's runs
ran x0.98-x1.07 of prediction, DeepSpeed's x1.11-x1.48. Ranking tied plans by wall-clock x the band's upper
ratio takes the plan that is fast even where its stack's predictions have erred slow, instead of one whose
own band says it will most likely not deliver its point estimate. On a calibrated cluster the band is one
for every stack, and the rule is the plain shorter wall-clock.

Its own module because the selection rule is what the brute-force tests check the search against
(tests/search/test_bruteforce.py), and the search's bound uses its tie tolerance.
"""

from __future__ import annotations

import numpy as np

from planner.search.score import Problem

# Losses within 0.1% (cost within 1% in target mode) count as equal - far inside the law's own
# uncertainty band - and the shorter slow-end wall-clock (pessimistic_wall_s) wins among them.
LOSS_TIE_RELATIVE = 1e-3
COST_TIE_RELATIVE = 1e-2
WALL_TIE_RELATIVE = 1e-6


def tie_tolerance(problem: Problem) -> float:
    return LOSS_TIE_RELATIVE if problem.constraints.target_loss is None else COST_TIE_RELATIVE


def primary_objective(problem: Problem, feasible: dict) -> tuple[np.ndarray, float]:
    """What is minimised first (loss, or GPU-seconds in target mode) and its tie tolerance."""
    key = "loss" if problem.constraints.target_loss is None else "gpu_seconds"
    return feasible[key], tie_tolerance(problem)


def pessimistic_wall_s(feasible: dict) -> np.ndarray:
    """Each plan's wall-clock at the slow end of its stack's 90% step-time band (score.py's `step_band_high`,
    the band's measured/predicted upper ratio; 1 where no band is known)."""
    return feasible["wall_s"] * feasible.get("step_band_high", 1.0)


def select(problem: Problem, feasible: dict, mask: np.ndarray | None = None) -> int | None:
    """Position (into feasible) of the best candidate, optionally among `mask`.

    Best = lowest primary objective; candidates within the tie tolerance of it are ordered by
    wall-clock at the slow end of their band (pessimistic_wall_s), then by the objective itself.
    """
    primary, tolerance = primary_objective(problem, feasible)
    allowed = np.ones(len(primary), bool) if mask is None else mask
    if not allowed.any():
        return None
    best = np.min(primary[allowed])
    near = allowed & (primary <= best + abs(best) * tolerance)
    # Wall-clocks within WALL_TIE_RELATIVE are equal too (plans bound by the same budget differ only by
    # rounding, or by a negligible serving demand), and then the objective decides.
    wall = pessimistic_wall_s(feasible)
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
        # Evenly in log wall-clock (the first and last kept): the plans stopped early crowd the fast end, and an even
        # pick by position left the slow end's GPU counts out.
        log_wall = np.log(np.maximum(feasible["wall_s"][front], 1e-30))
        targets = np.linspace(log_wall[0], log_wall[-1], limit)
        front = front[np.unique(np.abs(log_wall[None, :] - targets[:, None]).argmin(axis=1))]
    return front
