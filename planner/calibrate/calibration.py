"""Fit the cost model's efficiency parameters to measured runs, and say honestly how well it predicts.

The fit is robust least squares (scipy `least_squares`, soft-L1 loss) on log(predicted / measured)
step time, over the parameters the data can identify, in a transformed space that keeps each one
inside its physical bounds (fractions in (0, 1) through a logit, positive quantities through a log).
A weak prior pulls every parameter toward its default, so a parameter the rows barely constrain
stays near its assumed value instead of wandering.

Identifiability: the Jacobian of log step time with respect to each parameter is measured by finite
differences. A parameter whose column is tiny (the rows do not depend on it), or nearly a multiple
of a chosen parameter's (the rows cannot tell them apart), is left at its default and reported so.

Selection: of the others, only those that earn their place are fitted. Forward selection adds one
parameter at a time while it lowers the cross-validated error on the fitting rows (folds by source
where there are several), so with few or heterogeneous rows the calibration fits one or two
parameters, or none, rather than every knob the rows can move. Identifiability is checked again
each round at the parameters fitted so far.

Held-out error comes from k-fold cross-validation by group (by source when there are several, else
by row): each fold is predicted by a calibration (identification, selection and fit) that never saw
it. Prediction intervals are the empirical quantiles of those held-out log-residuals.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from planner.cost.step_time import step_time
from planner.errors import PlannerInputError
from planner.specs.clusters import load_cluster
from planner.specs.hardware import ClusterSpec
from planner.specs.candidate_batch import layouts_batch
from planner.specs.layout import Layout
from planner.specs.model import ModelSpec
from planner.profile.runs_csv import MeasuredRun
from planner.calibrate.validation import run_to_config

# name -> (kind, lower, upper): "fraction" parameters live in (lower, upper) through a logit,
# "positive" ones in (lower, upper) through a log.
PARAMETERS = {
    "matmul_peak_fraction": ("fraction", 0.02, 1.0),
    "matmul_half_size": ("positive", 1.0, 1e5),
    "attention_relative_efficiency": ("fraction", 0.05, 1.5),
    "hbm_efficiency": ("fraction", 0.02, 1.0),
    "optimizer_relative_efficiency": ("fraction", 0.001, 1.0),
    "scale_up_bandwidth_efficiency": ("fraction", 0.005, 1.0),
    "scale_out_bandwidth_efficiency": ("fraction", 0.005, 1.0),
    "dp_overlap": ("fraction", 0.0, 1.0),
    "tp_overlap": ("fraction", 0.0, 1.0),
    "step_overhead_s": ("positive", 1e-4, 1e3),
    "microbatch_overhead_s": ("positive", 1e-5, 1e2),
    "layer_overhead_s": ("positive", 1e-6, 10.0),
    "latency_scale": ("positive", 0.01, 1e4),
}
# Fixed overheads default to 0, where a log-space sensitivity sees nothing; they start instead at a
# small share of the measured step time (of a micro-batch, of a layer), so the data can move them.
OVERHEAD_START_SHARE = {"step_overhead_s": 0.02, "microbatch_overhead_s": 0.01, "layer_overhead_s": 0.005}
PRIOR_WEIGHT = 0.03  # residual weight of each fitted parameter's pull toward its default (in transformed units)
SELECTION_MIN_GAIN = 0.02  # a parameter is fitted only if it cuts the cross-validated MAPE by 2% of itself
INNER_FOLDS = 3  # folds of the cross-validation that selects the parameters
POSITIVE_PROBE_FACTOR = 100.0  # identifiability probe of a positive quantity: x100 (or /100 at the upper bound)
ROBUST_SCALE = 0.02  # soft-L1 scale on log residuals: errors beyond ~2% count linearly, not squared
MIN_SENSITIVITY = 0.001  # rms change of log step time under the identifiability probe: 0.1%
MAX_COLLINEARITY = 0.98  # |cosine| above which a column adds nothing new
# A fitted efficiency more than this factor away from its default (a datasheet- or benchmark-derived value,
# specs/hardware.py) is reported as implausible: it more likely absorbs a cost the model does not have than
# measures the hardware. A reporting threshold, not a model constant: the fit is kept or refused on its
# held-out error alone.
IMPLAUSIBLE_FACTOR = 2.0


@dataclass(frozen=True)
class Sample:
    """One measured row ready to simulate."""

    run: MeasuredRun
    model: ModelSpec
    layout: Layout
    group: str


def _start_value(cluster: ClusterSpec, name: str, samples: list[Sample] | None = None) -> float:
    value = getattr(cluster.efficiency, name)
    if name == "matmul_half_size" and value is None:
        dtypes = [s.layout.dtype for s in samples] if samples else ["bf16"]
        return cluster.matmul_half_size(max(set(dtypes), key=dtypes.count))
    if name in OVERHEAD_START_SHARE and value <= 0:
        if not samples:
            return PARAMETERS[name][1] * 10  # zero sits on the log bound; start just inside it
        step = float(np.median([s.run.step_time_s for s in samples]))
        per = {"step_overhead_s": 1.0,
               "microbatch_overhead_s": float(np.median([s.layout.grad_accumulation for s in samples])),
               "layer_overhead_s": float(np.median([s.layout.grad_accumulation * s.model.layers for s in samples]))}[name]
        return max(OVERHEAD_START_SHARE[name] * step / per, PARAMETERS[name][1] * 10)
    return value


def _default_value(cluster: ClusterSpec, name: str, samples: list[Sample]) -> float:
    """The value the uncalibrated spec uses (a derived matmul half-size is shown as derived)."""
    value = getattr(cluster.efficiency, name)
    return _start_value(cluster, name, samples) if value is None else value


def _to_free(name: str, value: float) -> float:
    kind, low, high = PARAMETERS[name]
    # A default sitting on a bound (tp_overlap = 0) starts just inside it, where the fit can move it.
    margin = 0.02 * (high - low) if kind == "fraction" else 0.0
    value = min(max(value, low + margin + 1e-9 * (high - low)), high - margin - 1e-9 * (high - low))
    if kind == "fraction":
        x = (value - low) / (high - low)
        return float(np.log(x / (1 - x)))
    return float(np.log(value))


def _from_free(name: str, free: float) -> float:
    kind, low, high = PARAMETERS[name]
    if kind == "fraction":
        return float(low + (high - low) / (1 + np.exp(-free)))
    return float(min(max(np.exp(free), low), high))


CALIBRATED_SUFFIX = ".calibrated"


def base_name(cluster: ClusterSpec) -> str:
    """The name of the spec a calibrated one was made from ('x' for 'x.calibrated'); a recalibration writes
    'x.calibrated' again, never 'x.calibrated.calibrated'."""
    return cluster.name.removesuffix(CALIBRATED_SUFFIX)


def _spec_named_by_path(run: MeasuredRun, cluster_dir=None) -> ClusterSpec | None:
    """The spec a row's cluster cell names by file path (spec/runs_csv.md: "or a path to a spec file"); None
    for a plain name. Raises PlannerInputError with the row's place when the path does not resolve."""
    if Path(run.cluster or "").suffix not in (".yaml", ".yml"):
        return None
    where = run.origin or run.id
    try:
        return load_cluster(run.cluster, cluster_dir, data_file=where)
    except PlannerInputError as error:
        text = str(error)
        raise PlannerInputError(text if text.startswith(f"{where}:") else f"{where}: {text}") from None


def on_cluster(run: MeasuredRun, cluster: ClusterSpec, cluster_dir=None) -> bool:
    """The row was measured on `cluster` (or on the spec a `.calibrated` one was made from), named by its
    name or by a path to its spec file. Raises PlannerInputError when the row's spec path does not resolve."""
    if run.cluster in (cluster.name, base_name(cluster)):
        return True
    spec = _spec_named_by_path(run, cluster_dir)
    if spec is None:
        return False
    same_file = bool(cluster.source_file) and Path(spec.source_file).resolve() == Path(cluster.source_file).resolve()
    return same_file or spec.name in (cluster.name, base_name(cluster))


def other_cluster_reason(run: MeasuredRun, cluster: ClusterSpec) -> str:
    """load_samples' reason for a row of another cluster (the CLI lists the other reasons only)."""
    return f"{run.origin or run.id}: cluster {run.cluster!r} is not {base_name(cluster)!r}"


def other_cluster_reasons(runs: list[MeasuredRun], cluster: ClusterSpec, cluster_dir=None) -> set[str]:
    """The reasons load_samples gives for rows measured on another cluster (a spec path that does not
    resolve is not among them: that row may be this cluster's, and is listed)."""
    reasons = set()
    for run in runs:
        try:
            if not on_cluster(run, cluster, cluster_dir):
                reasons.add(other_cluster_reason(run, cluster))
        except PlannerInputError:
            continue
    return reasons


def load_samples(runs: list[MeasuredRun], cluster: ClusterSpec, time_column: str = "step_time_s",
                 cluster_dir=None) -> tuple[list[Sample], list[str]]:
    """Rows with a measured step time that simulate on this cluster; the rest with reasons.

    `time_column` picks another measured column as the step time, e.g. `step_time_p10_s` from
    `planner profile` on a shared machine: contention only ever slows a step down, so a low
    percentile is the better estimate of the uncontended time.
    """
    samples, skipped = [], []
    for run in runs:
        if time_column != "step_time_s":
            raw = run.extra.get(time_column, "")
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if not np.isfinite(value) or value <= 0:
                skipped.append(f"{run.origin or run.id}: no positive {time_column} (got {raw!r})")
                continue
            run = dataclasses.replace(run, step_time_s=value)
        if run.step_time_s is None:
            skipped.append(f"{run.origin or run.id}: no measured step time")
            continue
        if not np.isfinite(run.step_time_s) or run.step_time_s <= 0:  # the CSV reader refuses these; rows built in code may not
            skipped.append(f"{run.origin or run.id}: step time {run.step_time_s!r} is not a positive finite number of seconds")
            continue
        try:
            if not on_cluster(run, cluster, cluster_dir):
                skipped.append(other_cluster_reason(run, cluster))
                continue
            model, layout, _ = run_to_config(run, clusters={run.cluster: cluster})
        except PlannerInputError as error:
            skipped.append(str(error))
            continue
        samples.append(Sample(run, model, layout, run.source or "(no source)"))
    if samples:
        # The fit takes log(predicted / measured): a row the model cannot predict (a zero, NaN or infinite
        # step time) would make every residual vector non-finite, so it is skipped here with its reason.
        with np.errstate(all="ignore"):
            predicted = predict(samples, cluster)
        keep = np.isfinite(predicted) & (predicted > 0)
        skipped += [f"{s.run.origin or s.run.id}: predicted step time {float(p)!r} is not a positive finite number"
                    for s, p, ok in zip(samples, predicted, keep) if not ok]
        samples = [s for s, ok in zip(samples, keep) if ok]
    return samples, skipped


def sample_batch(samples: list[Sample]):
    """All rows as one candidate batch, so each evaluation of the fit is one vectorised call."""
    return layouts_batch([s.model for s in samples], [s.layout for s in samples])


def predict(samples: list[Sample], cluster: ClusterSpec, batch=None) -> np.ndarray:
    """Predicted step times of the rows (the same vectorised code `simulate` runs)."""
    return step_time(batch if batch is not None else sample_batch(samples), cluster)["step_time_s"]


def _cluster_with(cluster: ClusterSpec, names: list[str], free: np.ndarray) -> ClusterSpec:
    return cluster.with_efficiency(**{n: _from_free(n, f) for n, f in zip(names, free)})


def _log_residuals(samples, cluster, names, free, batch=None) -> np.ndarray:
    measured = np.array([s.run.step_time_s for s in samples])
    return np.log(predict(samples, _cluster_with(cluster, names, free), batch) / measured)


def _probe(name: str, value: float) -> float:
    """A change of a parameter the data could plausibly ask for, as the probed value.

    A factor of 100 for a positive quantity (a latency negligible at its default can dominate at
    100x); for a fraction, halfway to the farther bound (an overlap of 0.8 probes at 0.4, a ceiling of
    1.0 at 0.5), so a fraction sitting at its bound is not probed by a sliver."""
    kind, low, high = PARAMETERS[name]
    if kind == "positive":
        return value * POSITIVE_PROBE_FACTOR if value * POSITIVE_PROBE_FACTOR <= high else value / POSITIVE_PROBE_FACTOR
    far = low if value - low > high - value else high
    return (value + far) / 2.0


def sensitivity_columns(samples: list[Sample], cluster: ClusterSpec, candidates=tuple(PARAMETERS)) -> dict[str, np.ndarray]:
    """Per parameter, the change of each row's log step time when the parameter takes its probe value."""
    values = [_start_value(cluster, n, samples) for n in candidates]
    base = np.array([_to_free(n, v) for n, v in zip(candidates, values)])
    batch = sample_batch(samples)
    r0 = _log_residuals(samples, cluster, list(candidates), base, batch)
    columns = {}
    for i, name in enumerate(candidates):
        shifted = base.copy()
        shifted[i] = _to_free(name, _probe(name, values[i]))
        columns[name] = _log_residuals(samples, cluster, list(candidates), shifted, batch) - r0
    return columns


def identifiable(samples: list[Sample], cluster: ClusterSpec, candidates=tuple(PARAMETERS),
                 columns: dict | None = None) -> tuple[list[str], dict]:
    """Parameters the rows respond to, and why each other one is left at its default.

    Parameters that the rows cannot tell apart (collinear columns) are all returned: which one of
    them to fit is the selection's call, by held-out error (see `select_parameters`)."""
    columns = columns if columns is not None else sensitivity_columns(samples, cluster, candidates)
    names, reasons = [], {}
    for name in candidates:
        sensitivity = float(np.sqrt(np.mean(columns[name] ** 2)))
        if sensitivity < MIN_SENSITIVITY:
            reasons[name] = f"no measurable effect on these rows (sensitivity {sensitivity:.2g})"
        else:
            names.append(name)
    return names, reasons


def _collinear(a: np.ndarray, b: np.ndarray) -> bool:
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return norms > 0 and abs(np.dot(a, b)) / norms > MAX_COLLINEARITY


def fit(samples: list[Sample], cluster: ClusterSpec, names: list[str], prior_weight: float = PRIOR_WEIGHT) -> ClusterSpec:
    """Robust least-squares fit of `names`; returns the cluster with the fitted efficiencies."""
    if not names:
        return cluster
    start = np.array([_to_free(n, _start_value(cluster, n, samples)) for n in names])
    batch = sample_batch(samples)

    def residuals(free):
        data = _log_residuals(samples, cluster, names, free, batch)
        return np.concatenate([data, prior_weight * (free - start)])

    def objective(free):  # the soft-L1 cost least_squares minimises
        r = residuals(free) / ROBUST_SCALE
        return float(np.sum(2.0 * (np.sqrt(1.0 + r * r) - 1.0)))

    # Coordinate pre-search over decades for positive quantities: least squares only follows local
    # slopes, and a latency that is negligible at its default has none.
    x0 = start.copy()
    for i, name in enumerate(names):
        if PARAMETERS[name][0] != "positive":
            continue
        trials = [x0[i] + np.log(10.0) * k for k in (-2, -1, 0, 1, 2, 3)]
        costs = []
        for value in trials:
            candidate = x0.copy()
            candidate[i] = value
            costs.append(objective(candidate))
        x0[i] = trials[int(np.argmin(costs))]

    with np.errstate(all="ignore"):
        finite = bool(np.all(np.isfinite(residuals(x0))))
    if not finite:  # scipy would raise "Residuals are not finite in the initial point"
        raise PlannerInputError(f"calibration of {', '.join(names)}: the model's step time is not finite at the "
                                f"starting values for some of the {len(samples)} rows; check their shapes and layouts")
    solution = least_squares(residuals, x0, jac=_forward_differences(residuals), loss="soft_l1", f_scale=ROBUST_SCALE,
                             max_nfev=200 * len(names))
    return _cluster_with(cluster, names, solution.x)


# Step of the finite-difference Jacobian in the free (logit / log) coordinates: absolute, because scipy's
# relative diff_step shrinks to nothing at a free value of 0 (a fraction at 0.5), where the slope then reads
# as zero and the fit stops.
JACOBIAN_STEP = 1e-3


def _forward_differences(residuals):
    def jacobian(free):
        base = residuals(free)
        columns = []
        for j in range(len(free)):
            moved = np.array(free, dtype=float)
            moved[j] += JACOBIAN_STEP
            columns.append((residuals(moved) - base) / JACOBIAN_STEP)
        return np.stack(columns, axis=1)

    return jacobian


def _folds(samples: list[Sample], k: int) -> list[np.ndarray]:
    groups = sorted({s.group for s in samples})
    if len(groups) >= 2:
        labels = np.array([groups.index(s.group) for s in samples]) % min(k, len(groups))
    else:
        labels = np.arange(len(samples)) % k
    return [np.flatnonzero(labels == f) for f in range(labels.max() + 1)]


def _stats(errors: np.ndarray) -> dict:
    absolute = np.abs(errors)
    return {"rows": int(len(errors)), "mape": float(absolute.mean()), "median_ape": float(np.median(absolute)),
            "worst_ape": float(absolute.max()), "bias": float(errors.mean())}


def held_out_predictions(samples: list[Sample], k: int, calibrate_on) -> np.ndarray:
    """Each fold's rows predicted by `calibrate_on(training rows)`, a cluster made without that fold."""
    predicted = np.empty(len(samples))
    for fold in _folds(samples, k):
        held = set(fold.tolist())
        train = [s for i, s in enumerate(samples) if i not in held]
        predicted[fold] = predict([samples[i] for i in fold], calibrate_on(train))
    return predicted


def _cv_mape(samples, cluster, names, k: int) -> float:
    """Mean absolute held-out error when `names` are fitted (the defaults' error when none are)."""
    measured = np.array([s.run.step_time_s for s in samples])
    held = (held_out_predictions(samples, k, lambda train: fit(train, cluster, names)) if names
            else predict(samples, cluster))
    return float(np.mean(np.abs(held / measured - 1)))


def select_parameters(samples, cluster, candidates=tuple(PARAMETERS), k: int = INNER_FOLDS) -> tuple[ClusterSpec, dict]:
    """Which parameters to fit: forward selection by cross-validation on the fitting rows.

    Starting from the defaults, each round adds the parameter whose fit most lowers the k-fold
    (by source where there are several) held-out MAPE, and stops when none lowers it by
    SELECTION_MIN_GAIN. Each round looks again at what the rows respond to, at the parameters fitted
    so far: a bandwidth the default overlap hides can matter once the overlap is fitted. A parameter
    the rows do not respond to, or cannot tell apart from one already chosen (collinear sensitivity
    columns), is not tried. Rows from other implementations or eras can pull a parameter to a value
    that does not transfer; cross-validation by source sees that and keeps it at its default, so a
    calibration that would not generalise is not applied.

    Returns the cluster fitted on all the rows with the chosen parameters, and what was decided: the
    fitted names, the path (parameters and cross-validated MAPE after each round), and why each
    other candidate was left at its default.
    """
    chosen: list[str] = []
    score = _cv_mape(samples, cluster, chosen, k)
    path = [{"parameters": [], "cv_mape": score}]
    remaining = list(candidates)
    while True:
        current = fit(samples, cluster, chosen) if chosen else cluster
        columns = sensitivity_columns(samples, current, remaining + chosen) if remaining else {}
        responsive, reasons = identifiable(samples, current, remaining, columns)
        eligible = []
        for name in responsive:
            if twin := next((c for c in chosen if _collinear(columns[name], columns[c])), None):
                reasons[name] = f"indistinguishable from {twin} on these rows"
            else:
                eligible.append(name)
                reasons[name] = "kept: fitting it did not lower the cross-validated error"
        if not eligible:
            break
        trials = {name: _cv_mape(samples, cluster, chosen + [name], k) for name in eligible}
        best = min(trials, key=trials.get)
        if trials[best] > score * (1.0 - SELECTION_MIN_GAIN):
            break
        chosen.append(best)
        remaining.remove(best)
        score = trials[best]
        path.append({"parameters": list(chosen), "cv_mape": score})
    # `current` is the fit of the final choice: the last round fitted it to check identifiability.
    return current, {"fitted": chosen, "selection_path": path, "left_at_default": reasons}


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
    if len(samples) < 3:
        raise PlannerInputError(f"calibration needs at least 3 measured rows on cluster {cluster.name!r}, got {len(samples)}")
    measured = np.array([s.run.step_time_s for s in samples])
    total = 1 if holdout else 1 + len(_folds(samples, k))
    done = [0]

    def select(train):  # a parameter selection and fit, counted for `progress`
        chosen = select_parameters(train, cluster)
        done[0] += 1
        if progress:
            progress(done[0], total)
        return chosen

    if progress:
        progress(0, total)
    fitted, decided = select(samples)
    before = predict(samples, cluster) / measured - 1
    after = predict(samples, fitted) / measured - 1
    # A spec calibrated before keeps the uncalibrated values of what it fitted (CalibratedOn.defaults): the
    # report compares against those, and lists what stays at an earlier fit's value as such.
    earlier = earlier_defaults(cluster, uncalibrated)
    report = {"fitted_parameters": {n: getattr(fitted.efficiency, n) for n in decided["fitted"]},
              "defaults": {n: earlier.get(n, _default_value(cluster, n, samples)) for n in PARAMETERS},
              "earlier_fitted": {n: _default_value(cluster, n, samples) for n in PARAMETERS if n in earlier},
              "left_at_default": decided["left_at_default"], "selection_path": decided["selection_path"],
              "train": {"before": _stats(before), "after": _stats(after)}, "cluster": fitted}
    if holdout:
        held_measured = np.array([s.run.step_time_s for s in holdout])
        held_before = predict(holdout, cluster) / held_measured - 1
        held_after = predict(holdout, fitted) / held_measured - 1
        report["heldout_kind"] = "given hold-out rows"
    elif not decided["fitted"]:
        # Nothing chosen on all the rows: the spec written is the defaults, fitted to none of the rows, so each
        # row's error under it is already a held-out error. Fold fits could choose parameters this spec lacks;
        # their errors would describe a spec that is not written.
        held_before = held_after = before
        report["heldout_kind"] = "no parameter chosen: the defaults, fitted to no row, on every row"
        if progress:
            progress(total, total)
    else:
        held_before = before
        # Nested: each fold's calibration, selection included, never saw that fold.
        held_after = held_out_predictions(
            samples, k, lambda train: select(train)[0] if len(train) >= 3 else cluster
        ) / measured - 1
        by = "source" if len({s.group for s in samples}) >= 2 else "row"
        report["heldout_kind"] = f"{len(_folds(samples, k))}-fold cross-validation by {by}, selection and fit redone per fold"
    report["heldout"] = {"before": _stats(held_before), "after": _stats(held_after)}
    report["applied"] = True
    if decided["fitted"] and report["heldout"]["after"]["mape"] >= report["heldout"]["before"]["mape"]:
        # Calibrating predicted the held-out rows worse than the defaults: the rows a fold never saw (each
        # fold's calibration done the same way on the others), or the user's own --holdout-source rows.
        # The fit would not generalise, so the spec keeps the defaults (README, "Calibration"). (A given
        # hold-out set decides only this yes/no; it never chooses or fits a parameter.)
        reason = (f"kept: calibrating predicted held-out rows worse than the defaults "
                  f"({100 * report['heldout']['after']['mape']:.1f}% vs {100 * report['heldout']['before']['mape']:.1f}%)")
        report.update(applied=False, cluster=cluster, fitted_parameters={},
                      left_at_default={**{n: reason for n in decided["fitted"]}, **decided["left_at_default"]})
        report["train"]["after"] = report["train"]["before"]
        held_after = held_before
    report["implausible"] = implausible_fits(report["fitted_parameters"], report["defaults"])
    log_residuals = np.log1p(held_after)
    report["prediction_interval_90"] = [float(np.expm1(np.quantile(log_residuals, 0.05))),
                                        float(np.expm1(np.quantile(log_residuals, 0.95)))]
    report["held_out_band"] = held_out_band(held_after)
    # What the fit saw: the efficiencies need not transfer to another stack or number format.
    report["fitted_frameworks"] = sorted({s.layout.framework for s in samples})
    report["fitted_dtypes"] = sorted({s.layout.dtype for s in samples})
    return report


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


def calibrated_spec_mapping(raw: dict, report: dict, sources: list[str], rows: int) -> dict:
    """The original spec mapping with the fitted efficiency block, a new name and the provenance."""
    fitted: ClusterSpec = report["cluster"]
    efficiency = {k: v for k, v in fitted.efficiency.model_dump(by_alias=True).items() if v is not None}
    date = _dt.date.today().isoformat()
    applied = report.get("applied", True)
    held = report["heldout"]["after" if applied else "before"]["mape"]
    fitted_names = ", ".join(report["fitted_parameters"]) or "nothing"
    if not applied:
        fitted_names += " (a fit predicted held-out rows worse than the defaults)"
    mapping = dict(raw)
    mapping["name"] = f"{str(raw['name']).removesuffix(CALIBRATED_SUFFIX)}{CALIBRATED_SUFFIX}"
    mapping["efficiency"] = efficiency
    mapping["calibration"] = (f"calibrated {date} on {rows} rows of {', '.join(sources)}; fitted {fitted_names}; "
                              f"held-out step-time MAPE {100 * held:.1f}% ({report['heldout_kind']})")
    band = report["held_out_band"]
    before = raw.get("calibrated_on") if isinstance(raw.get("calibrated_on"), dict) else {}
    fitted_or_earlier = set(report["fitted_parameters"]) | set(report.get("earlier_fitted", {}))
    mapping["calibrated_on"] = {"held_out_rows": band["rows"],
                                "held_out_step_time_ratio_90": [round(band["low"], 4), round(band["high"], 4)],
                                "frameworks": report["fitted_frameworks"], "dtypes": report["fitted_dtypes"],
                                "defaults": {n: float(report["defaults"][n]) for n in PARAMETERS if n in fitted_or_earlier},
                                "earlier": earlier_records(raw, before)}
    return mapping


def earlier_records(raw: dict, before: dict) -> list[str]:
    """The provenance lines a recalibration keeps: those the spec kept, then its own calibration line (a spec
    loaded from a calibrated file; the uncalibrated default line is no record)."""
    records = list(before.get("earlier", []))
    line = str(raw.get("calibration", ""))
    if line.startswith("calibrated"):
        records.append(line)
    return records
