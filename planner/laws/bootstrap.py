"""Uncertainty of a law fit: bootstrap over runs, intervals on parameters and derived quantities.

Checkpoints of one run share its seed, data order and learning-rate schedule, so they are not
independent: a resample draws whole runs with replacement and keeps all their checkpoints
(a run drawn k times weighs k). Resampling is done with integer weights on the original points,
which is the same objective as copying rows, without the copies.

A and B of the Chinchilla form are weakly identified (Besiroglu et al. 2024: very different
(A, B) reach the same objective), so intervals are reported also for what a planner uses:
N_opt(C), D_opt(C) and the tokens per parameter D_opt/N_opt at given budgets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.errors import PlannerInputError
from planner.laws.base import MIN_INTERVAL_SAMPLES, LossLaw, interval_holding, percentile_interval
from planner.laws.fitter import LawFitter, refit_like, soundness_problem

# Bootstrap refits start from the full-data optimum and from other distinct optima the full fit
# found whose objective is within this factor of the best (plausible alternative basins), at most
# MAX_BOOTSTRAP_STARTS; re-running the whole grid per resample would cost 200x more.
ALTERNATIVE_OPTIMUM_FACTOR = 1.1
MAX_BOOTSTRAP_STARTS = 3
EQUIVALENT_OPTIMUM_RTOL = 1e-8
# More failed refits than this fraction of resamples makes the intervals untrustworthy.
MAX_FAILED_FRACTION = 0.1


@dataclass(frozen=True, eq=False)
class BootstrapResult:
    samples: np.ndarray  # (resamples that converged, n coefficients), natural units
    names: tuple[str, ...]
    n_failed: int


def bootstrap_over_runs(fitter: LawFitter, N, D, loss, run, n_resamples: int = 200,
                        seed: int = 0, progress=None) -> BootstrapResult:
    """Refit `n_resamples` run-level resamples; `fitter` must already be fitted on the full data.
    `progress(done, total)`, if given, hears of each resample refitted."""
    run = np.asarray(run)
    n_runs = int(run.max()) + 1
    if n_runs < 2:
        raise PlannerInputError("the bootstrap over runs needs at least 2 runs; pass --bootstrap 0 to skip it")
    rng = np.random.default_rng(seed)
    best = fitter.optima_objective_[0]
    # An optimum at the best objective (to 1e-8) is the same fit reached along a flat direction (Farseer's
    # alpha and beta once a1 = a2 = 0), not an alternative basin: refitting from it too only costs time.
    alternatives = [theta for theta, value in zip(fitter.optima_[1:], fitter.optima_objective_[1:])
                    if best * (1 + EQUIVALENT_OPTIMUM_RTOL) < value <= ALTERNATIVE_OPTIMUM_FACTOR * best]
    starts = np.array([fitter.optima_[0], *alternatives][:MAX_BOOTSTRAP_STARTS])
    names = fitter.law_.coefficient_names
    rank = canonical_run_rank(N, D, loss, run, n_runs)
    samples, failed = [], 0
    for done in range(n_resamples):
        if progress:
            progress(done, n_resamples)
        weight = rng.multinomial(n_runs, np.full(n_runs, 1.0 / n_runs))[rank[run]].astype(float)
        try:
            refit = refit_like(fitter).fit(N, D, loss, sample_weight=weight, starts=starts)
        except PlannerInputError:
            failed += 1
            continue
        if soundness_problem(refit.law_, interior_frontier=False) is not None:  # a resample law must be usable too
            failed += 1
            continue
        samples.append([refit.coef_[name] for name in names])
    if n_resamples and failed > MAX_FAILED_FRACTION * n_resamples:
        raise PlannerInputError(f"{failed} of {n_resamples} bootstrap refits failed (no convergence, or too few "
                                f"distinct points in a resample); fix or tie parameters, or pass --bootstrap 0")
    return BootstrapResult(np.array(samples).reshape(-1, len(names)), tuple(names), failed)


def canonical_run_rank(N, D, loss, run, n_runs: int) -> np.ndarray:
    """Each run's place in an order set by its points, not by the file: runs without a run column are named by
    line number, so drawing by run code made a seeded bootstrap depend on the order of the rows. Runs are
    ordered by their first point in (N, D, loss) order, then by code (only runs that share that point tie)."""
    N, D, loss = np.asarray(N), np.asarray(D), np.asarray(loss)
    first = np.full(n_runs, -1)
    for i in np.lexsort((loss, D, N))[::-1]:  # last write wins: each run keeps its smallest point
        first[run[i]] = i
    rank = np.empty(n_runs, dtype=int)
    rank[np.lexsort((np.arange(n_runs), loss[first], D[first], N[first]))] = np.arange(n_runs)
    return rank


def bootstrap_se(samples: np.ndarray) -> np.ndarray:
    """The bootstrap standard error: the standard deviation (ddof 1) of the resampled values, axis 0.

    It is the spread of the same samples the percentile intervals come from, so the two always go
    together; a heavy tail (weakly identified A, B) shows as an se wide next to a narrower interval."""
    with np.errstate(over="ignore", invalid="ignore"):  # an ill-posed fit can spread over 100 decades: inf
        return np.std(samples, axis=0, ddof=1)


def parameter_intervals(result: BootstrapResult, level: float,
                        center: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """{name: {low, high, se}}: percentile interval at `level` and the bootstrap standard error, both from
    the resamples; none at all (no interval without its se) when fewer than MIN_INTERVAL_SAMPLES resamples
    converged. `center` (the full-data fit's coefficients): each interval widened to hold its value, as
    LossLaw.predict_interval widens its bands (base.interval_holding)."""
    if len(result.samples) < MIN_INTERVAL_SAMPLES:
        return {}
    low, high = percentile_interval(result.samples, level)
    if center is not None:
        low, high = interval_holding(np.array([center[name] for name in result.names]), low, high)
    se = bootstrap_se(result.samples)
    return {name: {"low": float(lo), "high": float(hi), "se": float(s)}
            for name, lo, hi, s in zip(result.names, low, high, se)}


def frontier_samples(law: LossLaw, samples: np.ndarray, budgets) -> dict[str, np.ndarray]:
    """N_opt, D_opt, tokens per parameter and loss at the optimum for every sample (rows) and budget."""
    columns = {"N_opt": [], "D_opt": [], "tokens_per_param": [], "loss": []}
    for row in samples:
        sample_law = law.with_coefficients(row)
        n_opt, d_opt = sample_law.compute_optimal(budgets)
        columns["N_opt"].append(n_opt)
        columns["D_opt"].append(d_opt)
        columns["tokens_per_param"].append(d_opt / n_opt)
        columns["loss"].append(sample_law.predict(n_opt, d_opt))
    return {key: np.array(value).reshape(len(samples), -1) for key, value in columns.items()}
