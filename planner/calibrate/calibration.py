"""Calibrate a cluster spec on measured runs, and say honestly how well it predicts.

`calibrate` selects and fits the parameters (calibrate.selection, calibrate.fitting) on the rows, then
reports the error before/after on them and on held-out rows. Held-out error comes from k-fold
cross-validation by group (by source when there are several, else by row): each fold is predicted by a
calibration (identification, selection and fit) that never saw it. Prediction intervals are the
empirical quantiles of those held-out log-residuals. A fit that predicts held-out rows worse than the
defaults is not applied. Its own module because the held-out judgement is what decides whether a fit
is kept, apart from how it was made.
"""

from __future__ import annotations

import numpy as np

from planner.calibrate.fitting import PARAMETERS, start_value
from planner.calibrate.samples import Sample, predict
from planner.calibrate.selection import folds, held_out_predictions, select_parameters
from planner.errors import PlannerInputError
from planner.specs.hardware import ClusterSpec

# A fitted efficiency more than this factor away from its default (a datasheet- or benchmark-derived value,
# specs/hardware.py) is reported as implausible: it more likely absorbs a cost the model does not have than
# measures the hardware. A reporting threshold, not a model constant: the fit is kept or refused on its
# held-out error alone.
IMPLAUSIBLE_FACTOR = 2.0
# Fewest rows a calibration is made from: calibrate refuses fewer, and a cross-validation fold that leaves fewer to
# calibrate on predicts its rows by the defaults (said in the held-out kind, never counted as a fit's error).
MIN_ROWS = 3


def _default_value(cluster: ClusterSpec, name: str, samples: list[Sample]) -> float:
    """The value the uncalibrated spec uses (a derived matmul half-size is shown as derived)."""
    value = getattr(cluster.efficiency, name)
    return start_value(cluster, name, samples) if value is None else value


def _stats(errors: np.ndarray) -> dict:
    absolute = np.abs(errors)
    return {"rows": int(len(errors)), "mape": float(absolute.mean()), "median_ape": float(np.median(absolute)),
            "worst_ape": float(absolute.max()), "bias": float(errors.mean())}


def earlier_defaults(cluster: ClusterSpec, uncalibrated: ClusterSpec | None = None) -> dict[str, float]:
    """The uncalibrated values of what an earlier calibration of `cluster` fitted: its record
    (CalibratedOn.defaults), else, for a spec calibrated before the record was kept, the values of
    `uncalibrated` (the spec it was made from) that differ from it; empty for an uncalibrated spec."""
    if cluster.calibrated_on is not None and cluster.calibrated_on.defaults:
        return dict(cluster.calibrated_on.defaults)
    if uncalibrated is None:
        return {}
    return {n: _default_value(uncalibrated, n, []) for n in PARAMETERS
            if getattr(uncalibrated.efficiency, n) != getattr(cluster.efficiency, n)}


def calibrate(samples: list[Sample], cluster: ClusterSpec, k: int = 5, holdout: list[Sample] | None = None,
              progress=None, uncalibrated: ClusterSpec | None = None) -> dict:
    """Fit on `samples`; report error before/after on them and on held-out rows (given or k-fold).
    `progress(done, total)`, if given, hears of each calibration done: the fit, then one per fold. When
    `cluster` was calibrated before, the defaults reported and judged are the uncalibrated spec's
    (earlier_defaults; `uncalibrated` is that spec, for a calibrated one without the record)."""
    if len(samples) < MIN_ROWS:
        raise PlannerInputError(f"calibration needs at least {MIN_ROWS} measured rows on cluster {cluster.name!r}, got {len(samples)}")
    measured = np.array([s.run.step_time_s for s in samples])
    total = 1 if holdout else 1 + len(folds(samples, k))
    select = _counted_selection(cluster, total, progress)
    if progress:
        progress(0, total)
    fitted, decided = select(samples)
    before = predict(samples, cluster) / measured - 1
    after = predict(samples, fitted) / measured - 1
    report = _fit_report(samples, cluster, uncalibrated, fitted, decided, before, after)
    held_before, held_after, report["heldout_kind"], judged = _held_out_errors(
        samples, cluster, k, holdout, fitted, decided, measured, before, select, progress, total)
    report["heldout"] = {"before": _stats(held_before), "after": _stats(held_after)}
    report["applied"] = True
    if decided["fitted"] and not judged:
        # No held-out row was predicted by a calibration: nothing shows the fit generalises (README, "Calibration").
        held_after = _keep_defaults(report, cluster, decided, held_before,
                                    f"no held-out row was predicted by a calibration (each fold left fewer than "
                                    f"{MIN_ROWS} rows to calibrate on)")
    elif decided["fitted"] and report["heldout"]["after"]["mape"] >= report["heldout"]["before"]["mape"]:
        held_after = _keep_defaults(report, cluster, decided, held_before,
                                    f"calibrating predicted held-out rows worse than the defaults "
                                    f"({100 * report['heldout']['after']['mape']:.1f}% vs "
                                    f"{100 * report['heldout']['before']['mape']:.1f}%)")
    report.update(_held_out_spread(report, held_after))
    # What the fit saw: the efficiencies need not transfer to another stack or number format.
    report["fitted_frameworks"] = sorted({s.layout.framework for s in samples})
    report["fitted_dtypes"] = sorted({s.layout.dtype for s in samples})
    return report


def _counted_selection(cluster: ClusterSpec, total: int, progress):
    """select_parameters on `cluster` for the rows given, telling `progress(done, total)` of each one done."""
    done = [0]

    def select(train):  # a parameter selection and fit, counted for `progress`
        chosen = select_parameters(train, cluster)
        done[0] += 1
        if progress:
            progress(done[0], total)
        return chosen

    return select


def _fit_report(samples, cluster, uncalibrated, fitted, decided, before, after) -> dict:
    """The fit on all the rows: what it fitted, the defaults it is judged against, what stays at an earlier
    fit's value or at its default and why, the error before/after on the rows, and the fitted spec."""
    # A spec calibrated before keeps the uncalibrated values of what it fitted (CalibratedOn.defaults): the
    # report compares against those, and lists what stays at an earlier fit's value as such.
    earlier = earlier_defaults(cluster, uncalibrated)
    return {"fitted_parameters": {n: getattr(fitted.efficiency, n) for n in decided["fitted"]},
            "defaults": {n: earlier.get(n, _default_value(cluster, n, samples)) for n in PARAMETERS},
            "earlier_fitted": {n: _default_value(cluster, n, samples) for n in PARAMETERS if n in earlier},
            "left_at_default": decided["left_at_default"], "selection_path": decided["selection_path"],
            "train": {"before": _stats(before), "after": _stats(after)}, "cluster": fitted}


def _held_out_errors(samples, cluster, k, holdout, fitted, decided, measured, before, select, progress, total):
    """Held-out errors (predicted / measured - 1) before and after calibrating, how the rows were held out, and
    whether any held-out row was predicted by a calibration: the given hold-out rows, or k-fold cross-validation
    with selection and fit redone per fold (`select`, which tells `progress` of each fold; a fold that leaves fewer
    than MIN_ROWS rows to calibrate on predicts its rows by the defaults, and says so; `progress` hears at the end
    that all `total` are done)."""
    if holdout:
        held_measured = np.array([s.run.step_time_s for s in holdout])
        held_before = predict(holdout, cluster) / held_measured - 1
        held_after = predict(holdout, fitted) / held_measured - 1
        return held_before, held_after, "given hold-out rows", True
    if not decided["fitted"]:
        # Nothing chosen on all the rows: the spec written is the defaults, fitted to none of the rows, so each
        # row's error under it is already a held-out error. Fold fits could choose parameters this spec lacks;
        # their errors would describe a spec that is not written.
        if progress:
            progress(total, total)
        return before, before, "no parameter chosen: the defaults, fitted to no row, on every row", True
    # Nested: each fold's calibration, selection included, never saw that fold.
    held_after = held_out_predictions(
        samples, k, lambda train: select(train)[0] if len(train) >= MIN_ROWS else cluster
    ) / measured - 1
    if progress:
        progress(total, total)  # folds too small to calibrate on were never counted
    every = len(folds(samples, k))
    small = sum(len(samples) - len(fold) < MIN_ROWS for fold in folds(samples, k))
    kind = f"{every}-fold cross-validation by {'source' if len({s.group for s in samples}) >= 2 else 'row'}"
    if small == every:
        return before, held_after, (f"{kind}: every fold left fewer than {MIN_ROWS} rows to calibrate on, so every "
                                    "held-out row is predicted by the defaults"), False
    if small:
        kind += (f" ({small} of {every} folds left fewer than {MIN_ROWS} rows to calibrate on: their rows are "
                 "predicted by the defaults)")
    return before, held_after, f"{kind}, selection and fit redone per fold", True


def _keep_defaults(report: dict, cluster: ClusterSpec, decided: dict, held_before: np.ndarray, why: str) -> np.ndarray:
    """Turn `report` into keeping the defaults because of `why`, and return the held-out errors that then stand
    (the defaults')."""
    # Calibrating predicted the held-out rows worse than the defaults (the rows a fold never saw, each
    # fold's calibration done the same way on the others, or the user's own --holdout-source rows), or no
    # held-out row could be predicted by a calibration: nothing shows the fit generalises, so the spec keeps
    # the defaults (README, "Calibration"). (A given hold-out set decides only this yes/no; it never chooses
    # or fits a parameter.)
    reason = f"kept: {why}"
    report.update(applied=False, not_applied_because=why, cluster=cluster, fitted_parameters={},
                  left_at_default={**{n: reason for n in decided["fitted"]}, **decided["left_at_default"]})
    report["train"]["after"] = report["train"]["before"]
    return held_before


def _held_out_spread(report: dict, held_after: np.ndarray) -> dict:
    """The implausible fits, and the spread of the held-out errors that stand: the 90% prediction interval and
    the held-out band."""
    log_residuals = np.log1p(held_after)
    return {"implausible": implausible_fits(report["fitted_parameters"], report["defaults"]),
            "prediction_interval_90": [float(np.expm1(np.quantile(log_residuals, 0.05))),
                                       float(np.expm1(np.quantile(log_residuals, 0.95)))],
            "held_out_band": held_out_band(held_after)}


def held_out_band(errors: np.ndarray) -> dict:
    """The 90% band of held-out step-time errors (predicted / measured - 1) as measured / predicted ratios at
    the 5th and 95th percentiles, the form simulate and optimize scale a prediction by (error_bands.interval,
    which takes the published runs' band the same way); and the rows behind it."""
    ratios = -np.log1p(np.asarray(errors, dtype=float))  # log(measured / predicted)
    return {"rows": int(len(ratios)), "low": float(np.exp(np.quantile(ratios, 0.05))),
            "high": float(np.exp(np.quantile(ratios, 0.95)))}


def implausible_fits(fitted: dict, defaults: dict) -> dict[str, float]:
    """Fitted efficiencies (fractions) that moved more than IMPLAUSIBLE_FACTOR away from their default,
    as fitted / default. Overheads default to 0 and latency_scale is a multiplier: not judged."""
    out = {}
    for name, value in fitted.items():
        if PARAMETERS[name][0] != "fraction" or not defaults.get(name):
            continue
        ratio = value / defaults[name]
        if not 1.0 / IMPLAUSIBLE_FACTOR <= ratio <= IMPLAUSIBLE_FACTOR:
            out[name] = float(ratio)
    return out
