"""Validation by extrapolation: fit on the cheaper runs, predict the final loss of the dearest.

A law earns trust by predicting runs larger than any it saw. Whole runs are held out (all their
checkpoints), chosen either as every run above a model size, or as the most expensive fraction
of runs by compute 6·N·D at their final checkpoint. The error reported is on each held-out run's
final loss, |L_pred/L_obs - 1|, which is the number a planner relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.errors import PlannerInputError
from planner.laws.bootstrap import canonical_run_rank
from planner.laws.data import LossData
from planner.laws.fitter import LawFitter, refit_like

DEFAULT_HOLDOUT_FRACTION = 0.1


@dataclass(frozen=True)
class ExtrapolationResult:
    rule: str                 # which runs were held out, in words
    n_train_runs: int
    n_heldout_runs: int
    mean_abs_rel_error: float
    max_abs_rel_error: float
    rows: tuple[dict, ...]    # per held-out run: name, N, D, observed, predicted, rel_error


def heldout_runs(data: LossData, n_above: float | None = None,
                 top_fraction: float = DEFAULT_HOLDOUT_FRACTION) -> tuple[np.ndarray, str]:
    """Boolean mask over run codes of the runs to hold out, and the rule in words."""
    if n_above is not None:
        run_n = np.zeros(data.n_runs)
        np.maximum.at(run_n, data.run, data.N)
        return run_n > n_above, f"runs with N > {n_above:.3g}"
    if not 0.0 < top_fraction < 1.0:
        raise PlannerInputError(f"--holdout-fraction: expected a fraction in (0, 1), got {top_fraction}")
    compute = data.run_compute()
    count = max(1, int(round(top_fraction * data.n_runs)))
    mask = np.zeros(data.n_runs, dtype=bool)
    # Runs tied on 6ND go by their points, not by their names (line numbers when the file names no runs).
    rank = canonical_run_rank(data.N, data.D, data.loss, data.run, data.n_runs)
    mask[np.lexsort((rank, compute))[-count:]] = True
    return mask, f"the {count} most expensive runs by 6ND ({top_fraction:.0%})"


def extrapolation_error(fitter: LawFitter, data: LossData, heldout: np.ndarray, rule: str) -> ExtrapolationResult:
    """Refit `fitter`'s settings on the runs not held out; score the held-out runs' final losses."""
    if heldout.all() or not heldout.any():
        raise PlannerInputError(f"the extrapolation check holds out {rule}: "
                                f"{int(heldout.sum())} of {data.n_runs} runs; it needs some runs on each side")
    test_point = heldout[data.run]
    train = data.subset(~test_point)
    try:
        fitted = refit_like(fitter).fit(train.N, train.D, train.loss)
    except PlannerInputError as error:
        raise PlannerInputError(f"extrapolation check (fit without {rule}): {error}; "
                                f"change --holdout-n-above / --holdout-fraction or pass --no-holdout") from None
    final = data.final_points() & test_point
    predicted = fitted.predict(data.N[final], data.D[final])
    rel = predicted / data.loss[final] - 1.0
    rows = tuple(
        {"run": data.run_names[data.run[i]], "N": float(data.N[i]), "D": float(data.D[i]),
         "observed": float(data.loss[i]), "predicted": float(p), "rel_error": float(r)}
        for i, p, r in zip(np.flatnonzero(final), predicted, rel))
    return ExtrapolationResult(rule, train.n_runs, int(heldout.sum()), float(np.mean(np.abs(rel))),
                               float(np.max(np.abs(rel))), rows)
