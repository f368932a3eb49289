"""The one interface every loss law offers: predict L(N, D), the compute-optimal frontier, intervals.

A law is a frozen object: its coefficients, where they come from, what it means by N (total or
non-embedding parameters) and by C (6ND), and the range of runs it was fitted on. Everything is
vectorised: N, D and C are numpy arrays (scalars are size-1 arrays) and broadcast together.

`compute_optimal` here is the generic numerical answer (minimise L along the iso-FLOP line
C = 6ND); laws with a closed form override it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from planner.laws.training_compute import FLOPS_PER_PARAM_TOKEN, dense_training_flops, tokens_for_compute

N_DEFINITIONS = ("total", "non-embedding")

# Tokens-per-parameter range searched by the numerical frontier. Wide on purpose: the answer
# must come from the law, not from the search box (runs at 1e-2 or 1e5 tokens/param are absurd).
_SEARCH_TPP = (1e-2, 1e5)


def as_array(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def percentile_interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central `level` interval of `values` along axis 0 (rows are samples)."""
    tail = (1.0 - level) / 2.0
    return np.quantile(values, tail, axis=0), np.quantile(values, 1.0 - tail, axis=0)


def interval_holding(center, low, high) -> tuple[np.ndarray, np.ndarray]:
    """[low, high] widened to hold `center`, the fit's own value: the samples' quantiles need not straddle it (few
    samples, a narrow level), and an interval printed beside a point must hold that point."""
    return np.minimum(low, center), np.maximum(high, center)


# Fewer coefficient samples than this give no spread to take quantiles of (one sample is a zero-width band
# away from the point): the law then falls back to its relative_sigma, or no interval.
MIN_INTERVAL_SAMPLES = 2
# What a law with neither samples nor a relative sigma prints instead of a band (predict_interval gives the point
# itself twice: a zero-width "band" would claim a certainty nobody measured).
NO_INTERVAL = "no interval: the law carries no uncertainty"


def interval_basis(law) -> str | None:
    """Where `law.predict_interval`'s band comes from, or None when the law carries no uncertainty (the band is
    then the point itself). A data-constrained law's band is its base law's (it has a `base`)."""
    source = getattr(law, "base", law)
    if source.samples is not None and len(source.samples) >= MIN_INTERVAL_SAMPLES:
        return f"spread of the law over {len(source.samples)} coefficient samples (not run-to-run scatter)"
    if source.relative_sigma:
        return f"an assumed {source.relative_sigma:.3g} relative error (one sigma) stated with the law"
    return None


@dataclass(frozen=True, kw_only=True)
class Validity:
    """The runs a law was fitted on: model sizes, token counts and tokens per parameter.

    `far_factor`: a query this many times outside a range draws a warning. Scaling laws are built
    to extrapolate somewhat (that is their use), so only an order of magnitude beyond is "far".
    """

    n_min: float
    n_max: float
    d_min: float
    d_max: float
    tpp_min: float
    tpp_max: float
    far_factor: float = 10.0

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def warnings(self, N, D, law_name: str) -> list[str]:
        N, D = np.broadcast_arrays(as_array(N), as_array(D))
        checks = (
            ("N", N, self.n_min, self.n_max, "parameters"),
            ("D", D, self.d_min, self.d_max, "tokens"),
            ("D/N", D / N, self.tpp_min, self.tpp_max, "tokens per parameter"),
        )
        out = []
        for symbol, values, low, high, what in checks:
            if values.size == 0:
                continue
            with np.errstate(all="ignore"):
                top, bottom = float(np.nanmax(values)), float(np.nanmin(values))
            if top > high * self.far_factor:
                out.append(f"{law_name}: {symbol} = {top:.3g} is {_times(top / high)} above the largest "
                           f"{what} it was fitted on ({high:.3g}); the prediction is a far extrapolation")
            if bottom < low / self.far_factor:
                # A query of 0 (or below) is infinitely far below any fitted range: no ratio to print.
                ratio = _times(low / bottom) if bottom > 0 else "far"
                out.append(f"{law_name}: {symbol} = {bottom:.3g} is {ratio} below the smallest "
                           f"{what} it was fitted on ({low:.3g}); the prediction is a far extrapolation")
        return out


def _times(ratio: float) -> str:
    """'42x', or 'over 1e+100x' for a ratio too large to print usefully (or infinite)."""
    return f"{ratio:.0f}x" if ratio < 1e100 else "over 1e+100x"


@dataclass(frozen=True, kw_only=True, eq=False)
class LossLaw:
    """Base class. Subclasses add their coefficients as fields and implement `predict`.

    `samples`: plausible coefficient vectors (rows, in `coefficient_names` order): bootstrap refits
    for fitted laws, draws around published estimates for built-in ones (see `published.py`).
    `relative_sigma`: used only when a law has no samples: an assumed 1-sigma relative error of the
    predicted loss, stated where the law is defined.
    """

    name: str
    source: str
    n_definition: str
    c_definition: str
    validity: Validity
    samples: np.ndarray | None = None
    relative_sigma: float | None = None

    form: ClassVar[str] = ""
    coefficient_names: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if self.n_definition not in N_DEFINITIONS:
            raise ValueError(f"n_definition must be one of {N_DEFINITIONS}, got {self.n_definition!r}")

    # --- what subclasses provide -------------------------------------------------------------
    def predict(self, N, D) -> np.ndarray:
        raise NotImplementedError

    # --- shared behaviour --------------------------------------------------------------------
    def counted_params(self, total, non_embedding):
        """A model's N as this law counts it (its n_definition) from its total and non-embedding counts (scalars
        or arrays): what the law was fitted on, so what predict takes."""
        return non_embedding if self.n_definition == "non-embedding" else total

    def training_flops(self, N, D, *, active_params=None, expansion_rate=None):
        """The training compute this law counts for N parameters (as `predict` reads N) on D tokens: C = 6·N·D
        (laws.training_compute). A dense model runs every parameter per token, so a mixture of experts' active
        parameters and expansion rate (laws.moe) do not enter."""
        return dense_training_flops(as_array(N), as_array(D))

    def coefficients(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in self.coefficient_names}

    def with_coefficients(self, values) -> "LossLaw":
        """The same law with other coefficient values (a dict, or a row in coefficient order)."""
        if not isinstance(values, dict):
            values = dict(zip(self.coefficient_names, (float(v) for v in values)))
        return dataclasses.replace(self, **values)

    def compute_optimal(self, C) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) minimising predict(N, D) subject to 6·N·D = C, for an array of C."""
        return _iso_flop_minimum(self.predict, as_array(C))

    def tokens_per_param_opt(self, C) -> np.ndarray:
        n_opt, d_opt = self.compute_optimal(C)
        return d_opt / n_opt

    def extrapolation_warnings(self, N, D) -> list[str]:
        return self.validity.warnings(N, D, self.name)

    def predict_interval(self, N, D, level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        """Central `level` band of the predicted loss from coefficient uncertainty.

        This is the uncertainty of the law (where its mean curve lies), not the seed-to-seed
        scatter of single runs around it.
        """
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        if self.samples is not None and len(self.samples) >= MIN_INTERVAL_SAMPLES:
            preds = np.stack([self.with_coefficients(row).predict(N, D) for row in self.samples])
            return interval_holding(self.predict(N, D), *percentile_interval(preds, level))
        center = self.predict(N, D)
        sigma = self.relative_sigma if self.relative_sigma is not None else 0.0
        from scipy.special import ndtri  # here, not at module level: scipy.special adds ~0.2 s to every CLI start

        z = float(ndtri(0.5 + level / 2.0))
        return center * np.exp(-z * sigma), center * np.exp(z * sigma)


def _iso_flop_minimum(predict, C: np.ndarray, grid_points: int = 241, refine_steps: int = 60):
    """Minimise predict(N, C/(6N)) over N for each C: a log grid, then golden section.

    The grid brackets the minimum for any law with one minimum along the iso-FLOP line (all laws
    here); golden section then refines it to ~1e-10 in log N. Arrays carry a trailing axis
    (grid points, then 1) so every step is one vectorised call of `predict`.
    """
    shape = np.shape(C)
    C = np.atleast_1d(C)[..., None]
    loss = lambda log_n: predict(np.exp(log_n), tokens_for_compute(C, np.exp(log_n)))
    # N = sqrt(C / (6 M)) with M tokens per parameter.
    log_tpp = np.linspace(np.log(_SEARCH_TPP[1]), np.log(_SEARCH_TPP[0]), grid_points)
    log_n = 0.5 * (np.log(C / FLOPS_PER_PARAM_TOKEN) - log_tpp)
    best = np.clip(np.nanargmin(loss(log_n), axis=-1), 1, grid_points - 2)[..., None]
    low = np.take_along_axis(log_n, best - 1, axis=-1)
    high = np.take_along_axis(log_n, best + 1, axis=-1)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(refine_steps):
        x1 = high - ratio * (high - low)
        x2 = low + ratio * (high - low)
        left_better = loss(x1) < loss(x2)
        high = np.where(left_better, x2, high)
        low = np.where(left_better, low, x1)
    n_opt = np.exp(0.5 * (low + high))[..., 0]
    return n_opt.reshape(shape), tokens_for_compute(C[..., 0], n_opt).reshape(shape)


# Model sizes, token counts and compute budgets a plan can ask a law about (the search's whole range).
_CHECK_N = np.logspace(6, 14, 9)
_CHECK_D = np.logspace(6, 17, 12)
_CHECK_C = np.logspace(15, 30, 16)


def behaviour_problem(law: LossLaw) -> str | None:
    """"loss" or "compute-optimal frontier" when that part of `law` is unusable, else None.

    Usable: losses finite, positive and non-increasing in N and D, and the compute-optimal frontier
    finite and positive, over every size the search can ask about (N 1e6-1e14, D 1e6-1e17, C
    1e15-1e30). Coefficients outside that (a negative exponent, fitted to columns that are not N, D
    and loss) make the planner divide by zero, overflow or raise later."""
    N, D = np.meshgrid(_CHECK_N, _CHECK_D, indexing="ij")
    loss = _evaluated(lambda: law.predict(N, D))
    sane = (loss is not None and loss.shape == N.shape and np.all(loss > 0)
            and np.all(np.diff(loss, axis=0) <= 1e-12 * loss[1:]) and np.all(np.diff(loss, axis=1) <= 1e-12 * loss[:, 1:]))
    if not sane:
        return "loss"
    frontier = _evaluated(lambda: np.stack(law.compute_optimal(_CHECK_C)))
    return None if frontier is not None and np.all(frontier > 0) else "compute-optimal frontier"


def _evaluated(compute) -> np.ndarray | None:
    """compute() as a real, finite array, or None (it raised, or gave complex, NaN or infinite values:
    a negative base to a fractional power is complex in Python and NaN in numpy)."""
    try:
        with np.errstate(all="ignore"):
            values = np.asarray(compute())
    except (ArithmeticError, ValueError, TypeError):
        return None
    if np.iscomplexobj(values) or not np.all(np.isfinite(values)):
        return None
    return values
