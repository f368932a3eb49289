"""Robust multi-start fitting of a loss-law form (scikit-learn style: fit() returns self).

The procedure is Besiroglu et al. 2024's replication of Hoffmann et al. 2022, approach 3:
minimise the SUM over points of Huber_delta(log L_pred - log L_obs), delta = 1e-3, with
L-BFGS(-B) and the analytic gradient, from a grid of starting points, keeping the best optimum.

Starts: the objective is evaluated at every grid start in one vectorised call and L-BFGS-B runs
from the `n_starts` cheapest of them (`n_starts=None` runs all). This is a heuristic, not a
proof: on the Epoch digitisation of Chinchilla (240 points) all 4,500 starts find the same
optimum as the default 20 (coefficients within 4e-8 relative; 1,519 starts reach it, the
top-ranked among them): `benchmarks/bench_law_fit.py --exhaustive` repeats the check, and
`tests/laws/test_fitter.py` compares the default with 60 starts.

Sum, not mean: averaged, the objective is ~1e-5 and L-BFGS-B's stopping tests (relative to
max(|f|, 1)) can end the search early; Besiroglu et al. suggest this is how Hoffmann's fit went
wrong. For the same reason the objective is divided by delta internally: the minimiser is
unchanged and f is of order one, so the tolerances below mean what they say.
"""

from __future__ import annotations

import contextlib

import numpy as np

from planner.errors import PlannerInputError
from planner.laws.base import LossLaw, Validity, behaviour_problem
from planner.laws.forms import FORMS, FitForm
from planner.laws.parameters import ParameterMap
from planner.laws.training_compute import dense_training_flops

_CHUNK_ELEMENTS = 2_000_000  # grid evaluation in chunks of starts x points, to bound memory

try:
    from threadpoolctl import ThreadpoolController

    _THREADPOOLS = ThreadpoolController()

    def single_threaded_blas():
        """Run BLAS on one thread. scipy's L-BFGS-B calls OpenBLAS on tiny matrices; with its
        threads spin-waiting on a busy 2-core machine, fits ran 10-20x slower (measured)."""
        return _THREADPOOLS.limit(limits=1, user_api="blas")
except ImportError:  # threadpoolctl is optional: without it fits are correct, only slower under load
    def single_threaded_blas():
        return contextlib.nullcontext()


# Range of the Huber delta, a threshold on |log L_pred - log L_obs|. Above 1 (a loss off by a factor
# e = 2.7) every residual of real data lies inside it and the fit is plain least squares, so nothing is
# gained beyond; below 1e-9 it is under the rounding of log L in the objective (float64 eps x the sum
# over points), a plain L1 fit. Hoffmann et al. 2022 and Besiroglu et al. 2024 use 1e-3.
HUBER_DELTA_RANGE = (1e-9, 1.0)


def check_huber_delta(delta) -> None:
    """Refuse a delta the objective cannot use (it divides by delta): --huber-delta's rule."""
    low, high = HUBER_DELTA_RANGE
    if not isinstance(delta, (int, float)) or not np.isfinite(delta) or not low <= delta <= high:
        raise PlannerInputError(f"--huber-delta: expected a finite number from {low:g} to {high:g} "
                                f"(a threshold on |log L_pred - log L_obs|), got {delta!r}")


# Lower bound on the loss floor (E, or exp(b3) for Farseer) as a fraction of the smallest loss fitted,
# unless --bound or --fix sets it. CHOSEN: published floors are most of the loss (Chinchilla E = 1.69
# against losses of 2-4; Epoch 1.82; Gemstones ~1.95 against 2.5-4), so a tenth is far below any real
# fit and only stops bootstrap resamples from running E to 0 (a pure power law with no floor).
FLOOR_FRACTION = 0.1
# Points per axis of the soundness grid over the validity range extended by its far_factor (10x).
SOUNDNESS_GRID_POINTS = 25
# Just inside the tokens-per-parameter range planner.laws.base searches for the frontier (1e-2 to 1e5): an
# optimum at its edge is the search box's, not the law's (a law whose data term vanishes puts it there).
FRONTIER_TPP_EDGES = (1.05e-2, 0.95e5)


def huber(residual: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative (scipy.special.huber convention: 0.5 r^2 inside delta)."""
    size = np.abs(residual)
    value = np.where(size <= delta, 0.5 * residual**2, delta * (size - 0.5 * delta))
    return value, np.clip(residual, -delta, delta)


class LawFitter:
    """Fit a law form to (N, D, loss) points.

    Settings (stored as given, sklearn style): `form` (a name in forms.FORMS), `huber_delta`,
    `fixed` {name: value}, `tied` [(name, name)], `bounds` {name: (low, high)} in natural units,
    `n_starts` (L-BFGS-B runs; None = every grid start), `max_iter` per run.

    Learned values: `coef_` (dict), `law_` (a LossLaw), `objective_` (summed Huber loss),
    `optima_` (distinct local optima found, best first, as full theta vectors) and their
    `optima_objective_`, `n_iter_`,
    `residuals_` (log L_pred - log L_obs on the fitted points), `n_free_params_`.
    """

    def __init__(self, form: str = "chinchilla", huber_delta: float = 1e-3, fixed=None, tied=(),
                 bounds=None, n_starts: int | None = 20, max_iter: int = 10_000):
        self.form = form
        self.huber_delta = huber_delta
        self.fixed = fixed
        self.tied = tied
        self.bounds = bounds
        self.n_starts = n_starts
        self.max_iter = max_iter

    def get_params(self) -> dict:
        return {"form": self.form, "huber_delta": self.huber_delta, "fixed": self.fixed, "tied": self.tied,
                "bounds": self.bounds, "n_starts": self.n_starts, "max_iter": self.max_iter}

    # ------------------------------------------------------------------------------------------
    def fit(self, N, D, loss, sample_weight=None, starts=None) -> "LawFitter":
        """Fit; `starts` (rows of full theta vectors) replaces the form's grid, e.g. for bootstrap refits."""
        form = self._form()
        check_huber_delta(self.huber_delta)
        N, D, loss = (np.asarray(v, dtype=float) for v in (N, D, loss))
        weight = np.ones_like(loss) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        bounds = self._bounds_with_floor(form, loss, weight)
        pmap = ParameterMap(form, self.fixed, self.tied, bounds)
        _check_points(N, D, loss, weight, pmap.n_free)
        log_n, log_d, log_l = np.log(N), np.log(D), np.log(loss)
        objective = _Objective(form, pmap, log_n, log_d, log_l, weight, self.huber_delta)

        if starts is None:
            starts = self._grid_starts(form, N, D, loss, weight)
        free_starts = pmap.clip(np.unique(pmap.to_free(np.atleast_2d(starts)), axis=0))
        ranked = free_starts[np.argsort(objective.many(free_starts), kind="stable")]
        chosen = ranked if self.n_starts is None else ranked[: self.n_starts]
        with single_threaded_blas():
            results = sorted((self._run(objective, pmap, x0) for x0 in chosen), key=lambda r: r.fun)
        best = results[0]
        if not best.converged:
            raise PlannerInputError(
                f"the {form.name} fit did not converge ({best.message.strip()}) after {best.nit} "
                f"iterations from its best start; raise --max-iter, fix or tie parameters, or check the data")

        theta = pmap.to_full(best.x)
        with np.errstate(over="ignore"):  # a diverged fit overflows exp(log-parameter); refused just below
            coef = form.to_coefficients(theta)
        diverged = [name for name, value in coef.items()
                    if not np.isfinite(value) or (value == 0.0 and name in form.log_params)]
        if diverged:
            raise PlannerInputError(
                f"the {form.name} fit diverged: {', '.join(diverged)} ran off to 0 or infinity; "
                "fix or bound that parameter (--fix/--bound), or check the data")
        self.coef_ = coef
        self.objective_ = float(best.fun) * self.huber_delta
        self.n_iter_ = int(best.nit)
        self.n_free_params_ = pmap.n_free
        optima = _distinct([(r.fun * self.huber_delta, pmap.to_full(r.x)) for r in results if r.converged])
        self.optima_ = [theta for _, theta in optima]
        self.optima_objective_ = [value for value, _ in optima]
        self.residuals_ = objective.residuals(best.x)
        self.at_bounds_ = self._at_bounds(form, pmap, best.x, bounds)
        self.law_ = form.law_class(
            name=f"fitted-{form.name}", source="fitted by planner.laws.LawFitter",
            n_definition="total", c_definition="6ND",
            validity=_validity_of(N[weight > 0], D[weight > 0]), **self.coef_)
        return self

    def predict(self, N, D) -> np.ndarray:
        return self.law_.predict(N, D)

    # ------------------------------------------------------------------------------------------
    def _form(self) -> FitForm:
        if self.form not in FORMS:
            raise PlannerInputError(f"--form: unknown law form {self.form!r}; choose one of {', '.join(FORMS)}")
        return FORMS[self.form]

    def _bounds_with_floor(self, form: FitForm, loss: np.ndarray, weight: np.ndarray) -> dict:
        """The settings' bounds plus a lower bound on the loss floor (FLOOR_FRACTION of the smallest
        loss fitted) unless the floor parameter is bounded, fixed or tied by the caller."""
        bounds = dict(self.bounds or {})
        if form.floor is None or loss.size != weight.size or not np.any(weight > 0):
            return bounds
        name, to_parameter = form.floor
        taken = set(bounds) | set(self.fixed or {}) | {n for pair in self.tied or () for n in pair}
        smallest = float(np.min(loss[weight > 0]))
        if name not in taken and np.isfinite(smallest) and smallest > 0:
            bounds[name] = (float(to_parameter(FLOOR_FRACTION * smallest)), None)
        return bounds

    def _at_bounds(self, form: FitForm, pmap: ParameterMap, x: np.ndarray, bounds: dict) -> list[str]:
        """One line per free coefficient the optimum left on a bound: there the bound, not the data, chose its
        value (the floor's default bound was otherwise silent), so the report says so."""
        out = []
        for i, ((low, high), names) in enumerate(zip(pmap.free_bounds, pmap.free_names)):
            group = names.split(", ")
            for side, limit in (("lower", low), ("upper", high)):
                # L-BFGS-B projects onto the box, so an optimum on a bound equals it to rounding
                if limit is None or abs(x[i] - limit) > 1e-9 * max(1.0, abs(limit)):
                    continue
                natural = float(np.exp(limit)) if group[0] in form.log_params else float(limit)
                out.append(f"{names} sits at its {side} bound {natural:.6g} ({self._bound_origin(form, group, bounds)}):"
                           " the bound, not the data, set it")
        return out

    def _bound_origin(self, form: FitForm, group: list[str], bounds: dict) -> str:
        """Who set a bound: the user's --bound, the default floor bound, or the form."""
        if set(self.bounds or {}) & set(group):
            return "set by --bound"
        if form.floor is not None and form.floor[0] in group and form.floor[0] in bounds:
            return f"the default floor bound, {FLOOR_FRACTION:g} x the smallest loss fitted; --bound or --fix overrides it"
        return f"the {form.name} form's default bound"

    def _grid_starts(self, form: FitForm, N, D, loss, weight) -> np.ndarray:
        if form.seed_form is None:
            return form.default_starts()
        seed = LawFitter(form=form.seed_form, huber_delta=self.huber_delta, n_starts=self.n_starts,
                         max_iter=self.max_iter).fit(N, D, loss, sample_weight=weight)
        return form.starts_from_seed(seed.coef_, N[weight > 0])

    def _run(self, objective: "_Objective", pmap: ParameterMap, x0: np.ndarray):
        options = {"maxiter": self.max_iter, "ftol": 1e-14, "gtol": 1e-9, "maxcor": 20}
        from scipy.optimize import minimize  # here, not at module level: ~0.5 s of every CLI start

        result = minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=pmap.free_bounds, options=options)
        result.converged = bool(result.success)
        if result.status == 2:
            # "ABNORMAL_TERMINATION_IN_LNSRCH": the line search found no decrease, which happens at
            # an optimum of a piecewise objective too. Accept it if one restart cannot improve on it.
            again = minimize(objective, result.x, jac=True, method="L-BFGS-B", bounds=pmap.free_bounds,
                             options=options)
            if again.fun < result.fun - 1e-10 * max(abs(result.fun), 1.0):
                again.nit += result.nit
                result = again
                result.converged = bool(result.success)
            else:
                result.converged = True
        return result


class _Objective:
    """Summed Huber loss on log L, divided by delta, with its gradient in free coordinates."""

    def __init__(self, form: FitForm, pmap: ParameterMap, log_n, log_d, log_l, weight, delta):
        self.form, self.pmap, self.delta = form, pmap, delta
        keep = weight > 0  # zero-weight points (bootstrap) cost nothing
        self.log_n, self.log_d, self.log_l, self.weight = log_n[keep], log_d[keep], log_l[keep], weight[keep]
        self._all = (log_n, log_d, log_l)

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        theta = self.pmap.to_full(x)[None, :]
        log_pred, jac = self.form.log_predict(theta, self.log_n, self.log_d, True)
        value, slope = huber(log_pred[0] - self.log_l, self.delta)
        grad_full = jac[0] @ (self.weight * slope)
        with np.errstate(invalid="ignore"):
            f = float(self.weight @ value) / self.delta
        return (f if np.isfinite(f) else 1e300), self.pmap.grad_to_free(grad_full) / self.delta

    def many(self, free: np.ndarray) -> np.ndarray:
        """Objective at many points (rows) at once, in chunks; NaN/inf count as +inf."""
        rows = max(1, _CHUNK_ELEMENTS // max(1, self.log_n.size))
        out = []
        for start in range(0, len(free), rows):
            theta = self.pmap.to_full(free[start:start + rows])
            with np.errstate(over="ignore", invalid="ignore"):
                log_pred, _ = self.form.log_predict(theta, self.log_n, self.log_d, False)
                value, _ = huber(log_pred - self.log_l, self.delta)
                out.append(value @ self.weight)
        total = np.concatenate(out)
        return np.where(np.isfinite(total), total, np.inf)

    def residuals(self, x: np.ndarray) -> np.ndarray:
        log_n, log_d, log_l = self._all
        log_pred, _ = self.form.log_predict(self.pmap.to_full(x)[None, :], log_n, log_d, False)
        return log_pred[0] - log_l


class DataError(PlannerInputError):
    """The points cannot be fitted (too few, not positive and finite); the caller names the data file."""


def _check_points(N, D, loss, weight, n_free: int) -> None:
    if not (N.shape == D.shape == loss.shape == weight.shape) or N.ndim != 1:
        raise PlannerInputError("N, D and loss must be 1-D arrays of the same length")
    for label, values in (("N", N), ("D", D), ("loss", loss)):
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            raise DataError(f"{label}: {int(bad.sum())} value(s) not positive and finite "
                                    f"(first at index {int(np.argmax(bad))}: {values[bad][0]!r})")
    # Points at the same (N, D) (seeds, copies) pin the law at one place only: a law with k free
    # parameters needs k + 1 distinct places, one more than it can pass through exactly, so that the
    # residuals say something about its error. Counted among the points a (bootstrap) weight keeps.
    used = weight > 0
    distinct = len(np.unique(np.stack([N[used], D[used]], axis=1), axis=0)) if used.any() else 0
    if distinct <= n_free:
        raise DataError(f"{int(used.sum())} data point(s) at {distinct} distinct (N, D) but the fit has {n_free} free "
                        f"parameters; need at least {n_free + 1} distinct (N, D) points (or fix or tie parameters)")


def _distinct(optima: list[tuple[float, np.ndarray]], tol: float = 1e-3) -> list[tuple[float, np.ndarray]]:
    """Distinct optima, best first: same objective (1e-8 relative) and theta within tol repeat."""
    kept: list[tuple[float, np.ndarray]] = []
    for value, theta in optima:
        if not any(abs(value - v) <= 1e-8 * abs(v) and np.allclose(theta, t, rtol=tol, atol=tol) for v, t in kept):
            kept.append((value, theta))
    return kept


def _validity_of(N: np.ndarray, D: np.ndarray) -> Validity:
    tpp = D / N
    return Validity(n_min=float(N.min()), n_max=float(N.max()), d_min=float(D.min()),
                    d_max=float(D.max()), tpp_min=float(tpp.min()), tpp_max=float(tpp.max()))


def soundness_problem(law: LossLaw, interior_frontier: bool = True) -> str | None:
    """Why `law` is unsound, in one line, or None.

    Sound: the loss is finite, positive and falls (weakly) with N and with D on a log grid over the
    runs it was fitted on, extended by its validity's far_factor (10x) each way, and it passes
    planner.laws.base.behaviour_problem (the same over every size a plan may ask about, and a finite
    frontier), which is what loading a law file demands: a law that fails is never saved.
    `interior_frontier`: also demand that the compute-optimal tokens per parameter over the fitted
    budgets lie inside the range searched, not at its edge (where a law whose data term vanishes puts
    it). Bootstrap resamples skip this: they need only be usable, and the frontier intervals show them.
    """
    v = law.validity
    n = np.geomspace(v.n_min / v.far_factor, v.n_max * v.far_factor, SOUNDNESS_GRID_POINTS)
    d = np.geomspace(v.d_min / v.far_factor, v.d_max * v.far_factor, SOUNDNESS_GRID_POINTS)
    N, D = np.meshgrid(n, d, indexing="ij")
    with np.errstate(all="ignore"):
        loss = np.asarray(law.predict(N, D), dtype=float)
    where = f"over N {n[0]:.3g}-{n[-1]:.3g}, D {d[0]:.3g}-{d[-1]:.3g} (the fitted range, 10x wider)"
    bad = ~np.isfinite(loss) | (loss <= 0)
    if bad.any():
        i, j = np.unravel_index(np.argmax(bad), bad.shape)
        return f"the loss is {loss[i, j]:.4g} at N = {n[i]:.3g}, D = {d[j]:.3g}: not finite and positive {where}"
    for axis, symbol, values in ((0, "N", n), (1, "D", d)):
        rise = np.diff(loss, axis=axis) > 1e-12 * np.abs(np.delete(loss, 0, axis=axis))
        if rise.any():
            i, j = np.unravel_index(np.argmax(rise), rise.shape)
            a, b = ((i, j), (i + 1, j)) if axis == 0 else ((i, j), (i, j + 1))
            step = f"{symbol} = {values[a[axis]]:.3g} to {values[b[axis]]:.3g}"
            other = f"D = {d[j]:.3g}" if axis == 0 else f"N = {n[i]:.3g}"
            return (f"the loss rises with {symbol} from {loss[a]:.6g} to {loss[b]:.6g} ({step} at {other}) "
                    f"{where}")
    with np.errstate(all="ignore"):  # a fit to a far-off cell (N = 1e300) overflows here; refused below, not warned
        budgets = np.geomspace(dense_training_flops(v.n_min, v.d_min), dense_training_flops(v.n_max, v.d_max), 5)  # over the fitted runs
        try:
            raw = np.asarray(law.tokens_per_param_opt(budgets)) if interior_frontier else np.ones(1)
        except (OverflowError, ZeroDivisionError, ValueError):  # Python floats of such coefficients: no optimum
            raw = np.full(np.shape(budgets), np.nan)
    # Coefficients off their signs (--fix alpha=-1) take fractional powers of negatives: complex, no optimum
    # (cast to float, numpy would warn on stderr and keep the real part).
    tpp = np.where(raw.imag == 0, raw.real, np.nan) if np.iscomplexobj(raw) else raw.astype(float)
    edge = ~np.isfinite(tpp) | (tpp <= FRONTIER_TPP_EDGES[0]) | (tpp >= FRONTIER_TPP_EDGES[1])
    if edge.any():
        return (f"its compute-optimal tokens per parameter at C = {budgets[np.argmax(edge)]:.3g} is "
                f"{tpp[np.argmax(edge)]:.3g}, at the edge of the range searched: the loss has no optimum along C = 6ND")
    broken = behaviour_problem(law)
    if broken is not None:
        return (f"its {broken} is not finite, positive and falling with N and D over N 1e6-1e14, D 1e6-1e17 "
                "(every size a plan may ask about)")
    return None


def refit_like(fitter: LawFitter) -> LawFitter:
    """An unfitted copy with the same settings (sklearn's `clone`)."""
    return LawFitter(**fitter.get_params())

