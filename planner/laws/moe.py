"""Mixture-of-experts loss law: Krajewski et al. 2024, "Scaling Laws for Fine-Grained Mixture of Experts".

Their eq. 9, fitted on decoder-only MoE Transformers on C4 with expansion rate E = 64:
    L(N, D, G) = c + (g / G^gamma + a) / N^alpha + b / D^beta
  N  total non-embedding parameters (section 5: "total number of non-embedding parameters N"),
  D  training tokens,
  G  granularity = d_ff / d_expert (section 4): each expert is G times narrower than the dense FFN
     and a token goes to G of them, so active parameters do not change with G.
Published coefficients: Table 1 ("MoE" row); the dense baseline ("Dense" row) is eq. 1 with its own
coefficients. The fit covers E = 64 only (section 5, "To constrain the search space, E = 64 is fixed");
G from 1 to 16; N from 129M to 3.7B; D from 16B to 130B (section 5).

The paper's architecture ties total to active parameters (section 6.1): a block has 12·d^2 active
non-embedding parameters (attention 4·d^2, FFN 8·d^2) and d^2·(8E + 4) in all, so
    N_total = N_act · (8E + 4) / 12,
and training FLOPs with routing are eq. 10, F = (12 d^2 c_f + d E G c_r)·D·n_blocks with c_f = 6,
c_r = 14 (Appendix E) and d_model = 64·n_blocks (section 6.1).

Dense limit: the paper does NOT model E = 1 with this law. Its eq. 9 keeps the constant a so that "a
sparse MoE is unlikely to surpass the performance of an equivalent dense model that has a matching total
number of parameters, all of which are active" (section 5.3): at equal total N and D the MoE law gives a
higher loss than the paper's dense law; `tests/laws/test_moe.py` checks that over the fitted range.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from planner.errors import PlannerInputError
from planner.laws.base import LossLaw, Validity, as_array
from planner.laws.chinchilla import ChinchillaLaw
from planner.laws.training_compute import FLOPS_PER_PARAM_TOKEN

# Krajewski et al. 2024, Table 1.
KRAJEWSKI_MOE_COEFFICIENTS = {"a": 18.1, "alpha": 0.115, "b": 30.8, "beta": 0.147, "g": 2.1, "gamma": 0.58, "c": 0.47}
KRAJEWSKI_DENSE_COEFFICIENTS = {"E": 0.47, "A": 16.3, "alpha": 0.126, "B": 26.7, "beta": 0.127}
FITTED_EXPANSION_RATE = 64.0  # section 5
# Section 6.1 / Appendix E: FLOPs per active parameter per token in the network (c_f, the dense 6 of C = 6ND:
# laws.training_compute) and the router (c_r).
FLOPS_PER_PARAM = FLOPS_PER_PARAM_TOKEN
ROUTER_FLOPS_PER_PARAM = 14.0
D_MODEL_PER_BLOCK = 64.0  # section 6.1: d_model = 64 n_blocks
# Section 5.4: validation RMSE 0.019 (loss units) on losses of about 3 (their Figure 5a). As a relative
# one-sigma band: 0.019 / 3. DERIVED with an ASSUMED typical loss of 3; the paper gives no covariance.
_RELATIVE_SIGMA = 0.019 / 3.0


@dataclass(frozen=True, kw_only=True, eq=False)
class FineGrainedMoELaw(LossLaw):
    """Krajewski et al. 2024 eq. 9. `predict(N, D)` reads N as total non-embedding parameters at this
    law's `granularity` (a setting, not a coefficient: `with_granularity(G)` gives the law at G).
    C = 6ND on total N is NOT the training compute of an MoE (it runs N_act per token): use
    `training_flops` for that; the generic frontier of the base class is kept only for the soundness check."""

    a: float
    alpha: float
    b: float
    beta: float
    g: float
    gamma: float
    c: float
    granularity: float = 1.0
    expansion_rate: float = FITTED_EXPANSION_RATE  # the E the coefficients were fitted at (a setting)

    form = "moe"
    coefficient_names = ("a", "alpha", "b", "beta", "g", "gamma", "c")

    def with_granularity(self, granularity: float) -> "FineGrainedMoELaw":
        if not np.isfinite(granularity) or granularity < 1:
            raise PlannerInputError(f"--granularity: expected a number >= 1 (d_ff / d_expert), got {granularity!r}")
        return type(self)(**{**self.__dict__, "granularity": float(granularity)})

    def predict(self, N, D) -> np.ndarray:
        return self.loss(N, D, self.granularity)

    def training_flops(self, N, D, *, active_params=None, expansion_rate=None):
        """Eq. 10 at this law's granularity, at `expansion_rate` (the law's own when None): on `active_params`
        where the model states them (a real MoE's shape), else on the active parameters the section 6.1
        architecture gives N total at that rate."""
        rate = self.expansion_rate if expansion_rate is None else expansion_rate
        active = active_params_from_total(N, rate) if active_params is None else active_params
        return training_flops(active, D, self.granularity, rate)

    def loss(self, N, D, G) -> np.ndarray:
        """Eq. 9 for arrays of total parameters N, tokens D and granularity G (broadcast together)."""
        N, D, G = as_array(N), as_array(D), as_array(G)
        return self.c + (self.g * G ** -self.gamma + self.a) * N ** -self.alpha + self.b * D ** -self.beta

    def extrapolation_warnings(self, N, D) -> list[str]:
        out = super().extrapolation_warnings(N, D)
        if self.granularity > _G_RANGE[1] * self.validity.far_factor:
            out.append(f"{self.name}: granularity {self.granularity:g} is far above the largest fitted ({_G_RANGE[1]:g})")
        return out


_G_RANGE = (1.0, 16.0)  # section 5: "logarithmically spaced values of granularity between 1 and 16"

KRAJEWSKI_2024 = FineGrainedMoELaw(
    name="krajewski-moe",
    source="Krajewski et al. 2024, 'Scaling Laws for Fine-Grained Mixture of Experts', eq. 9, Table 1 "
           "(MoE, expansion rate 64, C4)",
    n_definition="non-embedding", c_definition="6ND on total N (not MoE training FLOPs; see training_flops)",
    validity=Validity(n_min=129e6, n_max=3.7e9, d_min=16e9, d_max=130e9, tpp_min=16e9 / 3.7e9, tpp_max=130e9 / 129e6),
    relative_sigma=_RELATIVE_SIGMA,
    **KRAJEWSKI_MOE_COEFFICIENTS,
)

# Appendix D, Table 8: the same fit at expansion rate E = 16 (their Table 7 runs: D 8B-66B, G 1-16; model
# sizes listed as in Table 3, so N from 64x3M to 64x49M active-parameter notation, i.e. the same blocks at E = 16:
# total = active (8*16 + 4)/12 = 11x active, 3.1M-49M active -> 35M-550M total; ASSUMED reading of Table 7).
KRAJEWSKI_2024_E16 = FineGrainedMoELaw(
    name="krajewski-moe-e16",
    source="Krajewski et al. 2024, 'Scaling Laws for Fine-Grained Mixture of Experts', eq. 9, Appendix D Table 8 "
           "(MoE, expansion rate 16, C4)",
    n_definition="non-embedding", c_definition=KRAJEWSKI_2024.c_definition,
    validity=Validity(n_min=3.1e6 * 11, n_max=4.9e7 * 11, d_min=8e9, d_max=66e9, tpp_min=8e9 / (4.9e7 * 11),
                      tpp_max=66e9 / (3.1e6 * 11)),
    relative_sigma=_RELATIVE_SIGMA, expansion_rate=16.0,
    a=19.64, alpha=0.124, b=57.07, beta=0.169, g=1.18, gamma=0.986, c=0.472,
)

KRAJEWSKI_2024_DENSE = ChinchillaLaw(
    name="krajewski-dense",
    source="Krajewski et al. 2024, eq. 1, Table 1 (dense baseline, C4)",
    n_definition="non-embedding", c_definition="6ND", validity=KRAJEWSKI_2024.validity,
    relative_sigma=_RELATIVE_SIGMA, **KRAJEWSKI_DENSE_COEFFICIENTS,
)


def total_params_from_active(active_params, expansion_rate=FITTED_EXPANSION_RATE) -> np.ndarray:
    """N_total = N_act (8E + 4) / 12: the paper's blocks (section 6.1), embeddings excluded."""
    return as_array(active_params) * (8.0 * as_array(expansion_rate) + 4.0) / 12.0


def active_params_from_total(total_params, expansion_rate=FITTED_EXPANSION_RATE) -> np.ndarray:
    """N_act = 12 N_total / (8E + 4): total_params_from_active inverted."""
    return as_array(total_params) * 12.0 / (8.0 * as_array(expansion_rate) + 4.0)


def expansion_rate_from_params(total_params, active_params) -> np.ndarray:
    """E = (12 N_total / N_act - 4) / 8: the expansion rate total_params_from_active implies."""
    return (12.0 * as_array(total_params) / as_array(active_params) - 4.0) / 8.0


def training_flops(active_params, tokens, granularity, expansion_rate=FITTED_EXPANSION_RATE) -> np.ndarray:
    """Eq. 10 with the section 6.1 shape: N_act = 12 d^2 n_blocks, d = 64 n_blocks."""
    n_blocks = (as_array(active_params) / (12.0 * D_MODEL_PER_BLOCK**2)) ** (1.0 / 3.0)
    d_model = D_MODEL_PER_BLOCK * n_blocks
    per_token = (12.0 * d_model**2 * FLOPS_PER_PARAM
                 + d_model * as_array(expansion_rate) * as_array(granularity) * ROUTER_FLOPS_PER_PARAM) * n_blocks
    return per_token * as_array(tokens)


def moe_loss(active_params, tokens, granularity=1.0, total_params=None, expansion_rate=None,
             law: FineGrainedMoELaw = KRAJEWSKI_2024) -> np.ndarray:
    """Loss of MoE models, vectorised over numpy arrays (for the planner's search).

    Give `total_params` (non-embedding) directly, or `expansion_rate` E (total / active in the MoE layers;
    default the law's own, 64 for Table 1) to derive it with the paper's architecture. Raises PlannerInputError when total
    is below active or an input is not positive."""
    active = as_array(active_params)
    if total_params is None:
        total = total_params_from_active(active, law.expansion_rate if expansion_rate is None else expansion_rate)
    else:
        total = as_array(total_params)
    for label, values in (("active_params", active), ("tokens", as_array(tokens)), ("total_params", total)):
        if not np.all(np.isfinite(values) & (values > 0)):
            raise PlannerInputError(f"{label}: expected positive finite counts")
    if np.any(total < active):
        raise PlannerInputError("total_params: expected at least active_params (total counts every expert)")
    if np.any(as_array(granularity) < 1):
        raise PlannerInputError("granularity: expected values >= 1 (d_ff / d_expert)")
    return law.loss(total, tokens, granularity)


# Granularities the compute-optimal search tries: powers of two, as in the paper's Table 2 (G = 8 ... 64).
OPTIMAL_GRANULARITIES = 2.0 ** np.arange(0, 9)


def moe_compute_optimal(flops, law: FineGrainedMoELaw = KRAJEWSKI_2024, granularities=OPTIMAL_GRANULARITIES,
                        active_range: tuple[float, float] = (1e6, 1e14)) -> dict[str, np.ndarray]:
    """Section 6.2: minimise eq. 9 over active parameters, tokens and G subject to eq. 10's FLOPs = F (the
    paper reduces it to one dimension and uses Brent's method; here a log grid over N_act for every G, then
    golden-section refinement at the best G). Arrays over `flops`: active_params, total_params, tokens,
    granularity, loss."""
    flops = np.atleast_1d(as_array(flops))
    grid = np.linspace(np.log(active_range[0]), np.log(active_range[1]), 801)
    G = np.asarray(granularities, dtype=float)

    def loss_at(log_active, g, budget):
        active = np.exp(log_active)
        tokens = budget / training_flops(active, 1.0, g, law.expansion_rate)
        return law.loss(total_params_from_active(active, law.expansion_rate), tokens, g)

    out = {k: np.empty(flops.shape) for k in ("active_params", "total_params", "tokens", "granularity", "loss")}
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for k, budget in enumerate(flops):
        table = loss_at(grid[:, None], G[None, :], budget)
        i, j = np.unravel_index(np.argmin(table), table.shape)
        i = int(np.clip(i, 1, grid.size - 2))
        low, high = grid[i - 1], grid[i + 1]
        for _ in range(60):
            x1, x2 = high - ratio * (high - low), low + ratio * (high - low)
            if loss_at(x1, G[j], budget) < loss_at(x2, G[j], budget):
                high = x2
            else:
                low = x1
        active = float(np.exp(0.5 * (low + high)))
        out["active_params"][k] = active
        out["total_params"][k] = float(total_params_from_active(active, law.expansion_rate))
        out["tokens"][k] = budget / float(training_flops(active, 1.0, G[j], law.expansion_rate))
        out["granularity"][k] = G[j]
        out["loss"][k] = float(loss_at(np.log(active), G[j], budget))
    return out


# --- fitting ---------------------------------------------------------------------------------------
_LOG_PARAMS = ("a", "b", "g", "c")  # fitted as logs (positive); exponents in natural units
_EXPONENT_BOUNDS = (0.0, 2.0)


def _unpack(x: np.ndarray) -> dict[str, float]:
    names = KRAJEWSKI_2024.coefficient_names
    return {n: float(np.exp(v)) if n in _LOG_PARAMS else float(v) for n, v in zip(names, x)}


def _log_predict(x, log_n, log_d, log_g):
    log_a, alpha, log_b, beta, log_g_coef, gamma, log_c = x
    terms = np.stack([np.full_like(log_n, log_c),
                      np.logaddexp(log_g_coef - gamma * log_g, log_a) - alpha * log_n,
                      log_b - beta * log_d])
    return np.logaddexp.reduce(terms, axis=0)


def fit_moe_law(N, D, G, loss, huber_delta: float = 1e-3, name: str = "fitted-moe") -> tuple[FineGrainedMoELaw, dict]:
    """Fit eq. 9 to (total N, D, G, loss) points: Huber loss on log L (delta as the dense fits, Hoffmann
    et al. 2022; Krajewski et al. used Huber 0.1 with BFGS), trust-region least squares from a grid of
    starts, best optimum kept. Returns the law and {objective, residuals (log), starts}."""
    N, D, G, loss = (np.asarray(v, dtype=float) for v in (N, D, G, loss))
    if not (N.shape == D.shape == G.shape == loss.shape) or N.ndim != 1:
        raise PlannerInputError("N, D, G and loss must be 1-D arrays of the same length")
    for label, values in (("N", N), ("D", D), ("loss", loss)):
        if not np.all(np.isfinite(values) & (values > 0)):
            raise PlannerInputError(f"{label}: values must be positive and finite")
    if not np.all(np.isfinite(G) & (G >= 1)):
        raise PlannerInputError("granularity: values must be finite and >= 1")
    distinct = len(np.unique(np.stack([N, D, G], axis=1), axis=0))
    if distinct <= 7:
        raise PlannerInputError(f"{distinct} distinct (N, D, G) points for 7 free parameters; need at least 8")
    if np.unique(G).size < 2:
        raise PlannerInputError("granularity: all points have the same G; g and gamma cannot be fitted (need 2+ values)")
    log_n, log_d, log_g, log_l = np.log(N), np.log(D), np.log(G), np.log(loss)
    residual = lambda x: _log_predict(x, log_n, log_d, log_g) - log_l
    floor = np.log(0.1 * loss.min())  # as fitter.FLOOR_FRACTION: the floor cannot collapse to 0
    low = [-10, _EXPONENT_BOUNDS[0], -10, _EXPONENT_BOUNDS[0], -10, _EXPONENT_BOUNDS[0], floor]
    high = [15, _EXPONENT_BOUNDS[1], 15, _EXPONENT_BOUNDS[1], 15, _EXPONENT_BOUNDS[1], np.log(loss.min())]
    best = None
    from scipy.optimize import least_squares  # here, not at module level: ~0.5 s of every CLI start

    for alpha, beta, gamma, c_frac in itertools.product((0.1, 0.3), (0.1, 0.3), (0.3, 1.0), (0.2, 0.6)):
        x0 = np.array([np.log(10.0), alpha, np.log(10.0), beta, np.log(1.0), gamma, np.log(c_frac * loss.min())])
        x0 = np.clip(x0, np.array(low) + 1e-9, np.array(high) - 1e-9)
        result = least_squares(residual, x0, bounds=(low, high), loss="huber", f_scale=huber_delta,
                               x_scale="jac", max_nfev=5000)
        if best is None or result.cost < best.cost:
            best = result
    coefficients = _unpack(best.x)
    tpp = D / N
    law = FineGrainedMoELaw(
        name=name, source=f"fitted by planner.laws.moe.fit_moe_law (Krajewski et al. 2024 eq. 9), Huber delta {huber_delta:g}",
        n_definition="non-embedding", c_definition=KRAJEWSKI_2024.c_definition,
        validity=Validity(n_min=float(N.min()), n_max=float(N.max()), d_min=float(D.min()), d_max=float(D.max()),
                          tpp_min=float(tpp.min()), tpp_max=float(tpp.max())),
        **coefficients)
    return law, {"objective": float(best.cost), "residuals": residual(best.x), "converged": bool(best.success),
                 "at_bounds": _at_bounds(best.x, low, high)}


def _at_bounds(x: np.ndarray, low: list, high: list) -> list[str]:
    """A line per coefficient the optimum left on a bound, as the dense fits report them (fitter.LawFitter):
    there the bound, not the data, chose the value. The trust-region solver stays strictly inside the box, so
    'on' is within a millionth of the bound's scale."""
    out = []
    for i, name in enumerate(KRAJEWSKI_2024.coefficient_names):
        for side, limit in (("lower", low[i]), ("upper", high[i])):
            if abs(x[i] - limit) > 1e-6 * max(1.0, abs(limit)):
                continue
            natural = float(np.exp(limit)) if name in _LOG_PARAMS else float(limit)
            origin = ("the default floor bound, 0.1 x the smallest loss fitted" if (name, side) == ("c", "lower")
                      else "the smallest loss fitted" if (name, side) == ("c", "upper")
                      else "the moe form's default bound")
            out.append(f"{name} sits at its {side} bound {natural:.6g} ({origin}): the bound, not the data, set it")
    return out
