"""Robust least-squares fit of the cost model's efficiency parameters to measured step times.

The fit is robust least squares (scipy `least_squares`, soft-L1 loss) on log(predicted / measured)
step time, in a transformed space that keeps each parameter inside its physical bounds (fractions in
(0, 1) through a logit, positive quantities through a log). A weak prior pulls every parameter toward
its default, so a parameter the rows barely constrain stays near its assumed value instead of wandering.
Its own module because it answers one question, "given these parameters, which values?", while which
parameters to fit is calibrate.selection's and how well it predicts is calibrate.calibration's.
"""

from __future__ import annotations

import numpy as np

from planner.calibrate.samples import Sample, sample_batch
from planner.cost.efficiency_sweep import step_times_under
from planner.errors import PlannerInputError
from planner.specs.hardware import ClusterSpec

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
ROBUST_SCALE = 0.02  # soft-L1 scale on log residuals: errors beyond ~2% count linearly, not squared


# A fitted value this close to a limit of PARAMETERS (a share of the range for fractions, a ratio for positive
# ones) was stopped by the limit, not set by the data: the transforms only approach their limits.
AT_LIMIT_SHARE = 0.01


def at_limits(fitted: dict) -> dict:
    """{name: (side, limit)} for each fitted parameter that ended at a limit of PARAMETERS ("lower"/"upper"):
    the data pushed it as far as it may go, as step times in the wrong unit do (ms read as s sent
    microbatch_overhead_s to 100 s)."""
    out = {}
    for name, value in fitted.items():
        if name not in PARAMETERS:
            continue
        kind, lower, upper = PARAMETERS[name]
        if kind == "fraction":
            margin = AT_LIMIT_SHARE * (upper - lower)
            near_low, near_high = value <= lower + margin, value >= upper - margin
        else:
            near_low, near_high = value <= lower * (1 + AT_LIMIT_SHARE), value >= upper * (1 - AT_LIMIT_SHARE)
        if near_low or near_high:
            out[name] = ("lower", lower) if near_low else ("upper", upper)
    return out


def start_value(cluster: ClusterSpec, name: str, samples: list[Sample] | None = None) -> float:
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


def to_free(name: str, value: float) -> float:
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


def _cluster_with(cluster: ClusterSpec, names: list[str], free: np.ndarray) -> ClusterSpec:
    return cluster.with_efficiency(**{n: _from_free(n, f) for n, f in zip(names, free)})


def log_residuals_many(samples, names, frees, price) -> np.ndarray:
    """log(predicted / measured) step time of the rows at each row of `frees` (points in the free coordinates), with
    `price(settings)` the rows' step times under each setting: shape (len(frees), len(samples))."""
    measured = np.array([s.run.step_time_s for s in samples])
    settings = [{n: _from_free(n, f) for n, f in zip(names, free)} for free in np.atleast_2d(frees)]
    return np.log(price(settings) / measured)


def pricing(samples: list[Sample], cluster: ClusterSpec):
    """price(settings): the rows' step times under each setting, priced in one sweep (cost.efficiency_sweep)."""
    batch = sample_batch(samples)
    return lambda settings: step_times_under(batch, cluster, settings)


def fit(samples: list[Sample], cluster: ClusterSpec, names: list[str], prior_weight: float = PRIOR_WEIGHT,
        price=None) -> ClusterSpec:
    """Robust least-squares fit of `names`; returns the cluster with the fitted efficiencies. `price(settings)`,
    when given, gives the rows' step times under each setting (shape (len(settings), len(samples))): how fits run
    side by side have theirs priced together (calibrate.lockstep); by default `pricing(samples, cluster)`."""
    if not names:
        return cluster
    start = np.array([to_free(n, start_value(cluster, n, samples)) for n in names])
    price = price if price is not None else pricing(samples, cluster)

    def residuals_at(frees):  # one residual vector per row of `frees`, priced in one sweep
        frees = np.atleast_2d(frees)
        data = log_residuals_many(samples, names, frees, price)
        return np.concatenate([data, prior_weight * (frees - start)], axis=1)

    residuals = _last_value_kept(lambda free: residuals_at(free)[0])

    def objectives(frees):  # the soft-L1 cost least_squares minimises, at each row of `frees`
        r = residuals_at(frees) / ROBUST_SCALE
        return np.sum(2.0 * (np.sqrt(1.0 + r * r) - 1.0), axis=1)

    # Coordinate pre-search over decades for positive quantities: least squares only follows local
    # slopes, and a latency that is negligible at its default has none.
    x0 = start.copy()
    for i, name in enumerate(names):
        if PARAMETERS[name][0] != "positive":
            continue
        trials = [x0[i] + np.log(10.0) * k for k in (-2, -1, 0, 1, 2, 3)]
        candidates = np.repeat(x0[None, :], len(trials), axis=0)
        candidates[:, i] = trials
        x0[i] = trials[int(np.argmin(objectives(candidates)))]

    with np.errstate(all="ignore"):
        finite = bool(np.all(np.isfinite(residuals(x0))))
    if not finite:  # scipy would raise "Residuals are not finite in the initial point"
        raise PlannerInputError(f"calibration of {', '.join(names)}: the model's step time is not finite at the "
                                f"starting values for some of the {len(samples)} rows; check their shapes and layouts")
    from scipy.optimize import least_squares  # here, not at module level: ~0.5 s of every CLI start

    solution = least_squares(residuals, x0, jac=_forward_differences(residuals, residuals_at), loss="soft_l1",
                             f_scale=ROBUST_SCALE, max_nfev=200 * len(names))
    return _cluster_with(cluster, names, solution.x)


def _last_value_kept(function):
    """`function` of a float vector, remembering its last argument and value: least_squares evaluates the
    residuals at a point and then asks for the Jacobian there, whose forward differences start from the same
    value. The same numbers, one model evaluation fewer per Jacobian (a third of a two-parameter fit's)."""
    last = {}

    def kept(free):
        key = np.asarray(free, dtype=float).tobytes()
        if last.get("key") != key:
            last["key"], last["value"] = key, function(free)
        return last["value"].copy()

    return kept


# Step of the finite-difference Jacobian in the free (logit / log) coordinates: absolute, because scipy's
# relative diff_step shrinks to nothing at a free value of 0 (a fraction at 0.5), where the slope then reads
# as zero and the fit stops.
JACOBIAN_STEP = 1e-3


def _forward_differences(residuals, residuals_at):
    """The forward-difference Jacobian of `residuals` at a point: its value there (kept from the step that asked)
    and the moved points' (`residuals_at`, one row per point) in one sweep."""
    def jacobian(free):
        base = residuals(free)
        free = np.asarray(free, dtype=float)
        moved = free + JACOBIAN_STEP * np.eye(len(free))  # row j: free with its j-th coordinate moved
        return ((residuals_at(moved) - base) / JACOBIAN_STEP).T

    return jacobian
