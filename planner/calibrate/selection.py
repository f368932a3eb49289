"""Which efficiency parameters to fit: identifiability, then forward selection by cross-validation.

Identifiability: the change of log step time under a plausible probe of each parameter is measured by
finite differences. A parameter whose column is tiny (the rows do not depend on it), or nearly a multiple
of a chosen parameter's (the rows cannot tell them apart), is left at its default and reported so.

Selection: of the others, only those that earn their place are fitted. Forward selection adds one
parameter at a time while it lowers the cross-validated error on the fitting rows (folds by source
where there are several), so with few or heterogeneous rows the calibration fits one or two
parameters, or none, rather than every knob the rows can move. Identifiability is checked again
each round at the parameters fitted so far. Its own module because choosing the parameters is a
separate question from fitting their values (calibrate.fitting).
"""

from __future__ import annotations

import numpy as np

from planner.calibrate.fitting import PARAMETERS, fit, log_residuals_many, pricing, start_value, to_free
from planner.calibrate.lockstep import run_together
from planner.calibrate.samples import Sample, predict, sample_batch
from planner.cost.efficiency_sweep import step_times_of
from planner.specs.hardware import ClusterSpec

SELECTION_MIN_GAIN = 0.02  # a parameter is fitted only if it cuts the cross-validated MAPE by 2% of itself
INNER_FOLDS = 3  # folds of the cross-validation that selects the parameters
POSITIVE_PROBE_FACTOR = 100.0  # identifiability probe of a positive quantity: x100 (or /100 at the upper bound)
MIN_SENSITIVITY = 0.001  # rms change of log step time under the identifiability probe: 0.1%
MAX_COLLINEARITY = 0.98  # |cosine| above which a column adds nothing new


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
    values = [start_value(cluster, n, samples) for n in candidates]
    base = np.array([to_free(n, v) for n, v in zip(candidates, values)])
    points = np.repeat(base[None, :], len(candidates) + 1, axis=0)  # row 0 the start, row i + 1 parameter i probed
    for i, name in enumerate(candidates):
        points[i + 1, i] = to_free(name, _probe(name, values[i]))
    residuals = log_residuals_many(samples, list(candidates), points, pricing(samples, cluster))
    return {name: residuals[i + 1] - residuals[0] for i, name in enumerate(candidates)}


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


def folds(samples: list[Sample], k: int) -> list[np.ndarray]:
    """The cross-validation folds (indices into `samples`): whole sources where there are two or more, else
    every k-th row in the order of the rows' ids, so that a file's row order does not change the folds (and
    with them the calibration)."""
    groups = sorted({s.group for s in samples})
    if len(groups) >= 2:
        labels = np.array([groups.index(s.group) for s in samples]) % min(k, len(groups))
    else:
        id_rank = np.argsort(np.argsort([s.run.id for s in samples], kind="stable"), kind="stable")
        labels = id_rank % k
    return [np.flatnonzero(labels == f) for f in range(labels.max() + 1)]


def held_out_predictions(samples: list[Sample], k: int, calibrate_on) -> np.ndarray:
    """Each fold's rows predicted by `calibrate_on(training rows)`, a cluster made without that fold."""
    predicted = np.empty(len(samples))
    for fold in folds(samples, k):
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


def _cv_mapes(samples, cluster, name_sets: list[list[str]], k: int) -> list[float]:
    """`_cv_mape` of each set of names (none empty), every set's fit on every fold run side by side
    (calibrate.lockstep) and the held-out rows priced in one sweep: the same numbers as one _cv_mape per set."""
    measured = np.array([s.run.step_time_s for s in samples])
    held = folds(samples, k)
    trains = [np.setdiff1d(np.arange(len(samples)), fold) for fold in held]  # in the rows' order, as held_out_predictions
    batch = sample_batch(samples)

    def job(names, train):
        rows = [samples[i] for i in train]
        return lambda ask: fit(rows, cluster, names, price=lambda settings: ask(train, settings))

    fitted = run_together(batch, cluster, [job(names, train) for names in name_sets for train in trains])
    per_set = len(held)  # fitted[i * per_set + f]: set i fitted without fold f
    requests = [(fold, [{n: getattr(fitted[i * per_set + f].efficiency, n) for n in names}])
                for i, names in enumerate(name_sets) for f, fold in enumerate(held)]
    times = step_times_of(batch, cluster, requests)
    mapes = []
    for i in range(len(name_sets)):
        predicted = np.empty(len(samples))
        for f, fold in enumerate(held):
            predicted[fold] = times[i * per_set + f][0]
        mapes.append(float(np.mean(np.abs(predicted / measured - 1))))
    return mapes


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
        trials = dict(zip(eligible, _cv_mapes(samples, cluster, [chosen + [name] for name in eligible], k)))
        best = min(trials, key=trials.get)
        if trials[best] > score * (1.0 - SELECTION_MIN_GAIN):
            break
        chosen.append(best)
        remaining.remove(best)
        score = trials[best]
        path.append({"parameters": list(chosen), "cv_mape": score})
    # `current` is the fit of the final choice: the last round fitted it to check identifiability.
    return current, {"fitted": chosen, "selection_path": path, "left_at_default": reasons}
