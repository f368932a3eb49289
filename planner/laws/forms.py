"""Law forms as the fitter sees them: log L as a function of a parameter vector, with its gradient.

Each form maps a vector theta (one row per candidate; log-scale coordinates for positive
coefficients such as E, A, B) to log of the predicted loss, vectorised over many thetas at once so
a grid of thousands of starting points costs one numpy call. The Chinchilla form is written in
the log-sum-exp parameterisation of Besiroglu et al. 2024 (and Hoffmann et al. 2022, eq. 8):
    log L = LSE(e, a - alpha·log N, b - beta·log D),  E = exp(e), A = exp(a), B = exp(b).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from planner.laws.base import LossLaw
from planner.laws.chinchilla import ChinchillaLaw, OvertrainingLaw
from planner.laws.farseer import N_REF, FarseerLaw
from planner.laws.kaplan import KaplanLaw


@dataclass(frozen=True)
class FitForm:
    """One fittable form. `log_params` are fitted as log(value); bounds are in natural units."""

    name: str
    law_class: type[LossLaw]
    log_params: frozenset[str]
    # (theta (S, P), log N (n,), log D (n,), with_grad) -> (log L (S, n), d log L / d theta (S, P, n) or None)
    log_predict: Callable
    default_starts: Callable[[], np.ndarray] | None = None
    default_ties: tuple[tuple[str, str], ...] = ()
    default_bounds: tuple[tuple[str, float, float], ...] = ()
    seed_form: str | None = None  # fit this form first and derive starts from it (see `starts_from_seed`)
    starts_from_seed: Callable[[dict[str, float], np.ndarray], np.ndarray] | None = None  # (seed coef, N)
    summary: str = ""
    # The parameter that sets the loss floor (E, or its log), and the map from a floor in loss units to
    # that parameter: the fitter bounds it from below so the floor cannot collapse to 0 (see fitter.py).
    floor: tuple[str, Callable[[float], float]] | None = None

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.law_class.coefficient_names

    def to_theta(self, name: str, value: float) -> float:
        return float(np.log(value)) if name in self.log_params else float(value)

    def to_coefficients(self, theta: np.ndarray) -> dict[str, float]:
        return {name: float(np.exp(v) if name in self.log_params else v)
                for name, v in zip(self.param_names, theta)}

    def to_theta_vector(self, coefficients: dict[str, float]) -> np.ndarray:
        return np.array([self.to_theta(n, coefficients[n]) for n in self.param_names])


def _softmax_lse(terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log-sum-exp over axis 0 and the softmax weights (its gradient), overflow-safe."""
    top = terms.max(axis=0)
    scaled = np.exp(terms - top)
    total = scaled.sum(axis=0)
    return top + np.log(total), scaled / total


def _chinchilla_log_predict(theta, log_n, log_d, with_grad):
    e, a, b, alpha, beta = (theta[:, k, None] for k in range(5))
    n_term = a - alpha * log_n
    terms = np.stack(np.broadcast_arrays(e, n_term, b - beta * log_d))
    log_l, w = _softmax_lse(terms)
    if not with_grad:
        return log_l, None
    return log_l, np.stack([w[0], w[1], w[2], -w[1] * log_n, -w[2] * log_d], axis=1)


def _chinchilla_starts() -> np.ndarray:
    """Besiroglu et al. 2024: e in {-1,...,1}, a, b in {0,5,...,25}, alpha, beta in {0,0.5,...,2}."""
    e = np.arange(-1.0, 1.01, 0.5)
    ab = np.arange(0.0, 25.1, 5.0)
    exponents = np.arange(0.0, 2.01, 0.5)
    return np.array(list(itertools.product(e, ab, ab, exponents, exponents)))


def _kaplan_log_predict(theta, log_n, log_d, with_grad):
    log_nc, log_dc, alpha_n, alpha_d = (theta[:, k, None] for k in range(4))
    ratio = alpha_n / alpha_d
    gap = log_nc - log_n
    terms = np.stack(np.broadcast_arrays(ratio * gap, log_dc - log_d))
    inner, w = _softmax_lse(terms)
    log_l = alpha_d * inner
    if not with_grad:
        return log_l, None
    jac = [w[0] * alpha_n, alpha_d * w[1], w[0] * gap, inner - w[0] * ratio * gap]
    return log_l, np.stack(np.broadcast_arrays(*jac), axis=1)


def _kaplan_starts() -> np.ndarray:
    grid = ([20.0, 25.0, 30.0, 35.0], [15.0, 20.0, 25.0, 30.0], [0.05, 0.1, 0.2], [0.05, 0.1, 0.2, 0.4])
    return np.array(list(itertools.product(*grid)))


# Numerical guard: the data exponent exp(a1·x^alpha + b1) is evaluated with its argument capped
# here, so wild trial points during a line search give a large finite loss instead of inf/NaN.
_FARSEER_EXP_CAP = 30.0


# Default bounds of the Farseer fit: the sign conditions of planner/laws/farseer.py under which the
# law is finite, positive and falls with N and D everywhere (a3, a2 >= 0; a1 <= 0; gamma, beta,
# alpha <= 0: each N-dependent factor saturates as N grows). CHOSEN: |exponent| <= 1 keeps each N-dependent factor within 10^+-3 over 1e6..1e12
# parameters; wider, a 9-parameter fit to a few model sizes bends those factors to chase residuals.
# Without the sign conditions the Gemstones fit (N <= 600M) took a data exponent that falls with N
# and B(N) at its bound, predicted the 1-2B runs to 4.1% and rose with N at large D (measured).
_FARSEER_MAX_EXPONENT = 1.0
_FARSEER_BOUNDS = (
    ("a1", None, 0.0), ("alpha", -_FARSEER_MAX_EXPONENT, 0.0),
    ("a2", 0.0, None), ("beta", -_FARSEER_MAX_EXPONENT, 0.0),
    ("a3", 0.0, None), ("gamma", -_FARSEER_MAX_EXPONENT, 0.0),
)


def _farseer_log_predict(theta, log_n, log_d, with_grad):
    a1, b1, alpha, a2, b2, beta, a3, b3, gamma = (theta[:, k, None] for k in range(9))
    log_x = log_n - np.log(N_REF)
    x_alpha, x_beta, x_gamma = np.exp(alpha * log_x), np.exp(beta * log_x), np.exp(gamma * log_x)
    exponent = np.exp(np.minimum(a1 * x_alpha + b1, _FARSEER_EXP_CAP))
    floor_term = a3 * x_gamma + b3
    data_term = a2 * x_beta + b2 - exponent * log_d
    log_l, w = _softmax_lse(np.stack(np.broadcast_arrays(floor_term, data_term)))
    if not with_grad:
        return log_l, None
    d_exponent = -w[1] * exponent * log_d
    jac = [d_exponent * x_alpha, d_exponent, d_exponent * a1 * x_alpha * log_x,
           w[1] * x_beta, w[1], w[1] * a2 * x_beta * log_x,
           w[0] * x_gamma, w[0], w[0] * a3 * x_gamma * log_x]
    return log_l, np.stack(np.broadcast_arrays(*jac), axis=1)


def _farseer_starts_from_chinchilla(c: dict[str, float], N: np.ndarray) -> np.ndarray:
    """Starts that reproduce a Chinchilla fit, with N-dependence of the data term switched on a little.

    Data term: exp(b2)·D^-exp(b1) is B·D^-beta exactly with b2 = log B, b1 = log beta, a1 = a2 = 0.
    Floor: log(E + A/N^alpha) is matched over the fitted model sizes by a3·x^gamma + b3, least squares
    in (a3, b3) for each gamma on a grid (a first-order match, E·(1 + a3·x^gamma), is 20% off at the
    smallest Gemstones models, and from there the fit fell into a basin with no data term: measured).
    """
    x = np.geomspace(N.min(), N.max(), 50) / N_REF
    target = np.log(c["E"] + c["A"] * (x * N_REF) ** -c["alpha"])
    floors = []
    for gamma in -np.linspace(0.02, _FARSEER_MAX_EXPONENT, 50):
        design = np.stack([x**gamma, np.ones_like(x)], axis=1)
        (a3, b3), *_ = np.linalg.lstsq(design, target, rcond=None)
        if a3 >= 0:
            floors.append((float(np.sum((design @ (a3, b3) - target) ** 2)), a3, b3, gamma))
    _, a3, b3, gamma = min(floors) if floors else (0.0, 0.0, np.log(c["E"]), -0.1)
    rows = []
    for alpha, beta, a1, a2 in itertools.product([-0.25, -0.5], [-0.25, -0.5], [0.0, -0.01], [0.0, 0.01]):
        rows.append([a1, np.log(c["beta"]), alpha, a2, np.log(c["B"]), beta, a3, b3, gamma])
    return np.array(rows)


FORMS: dict[str, FitForm] = {
    "chinchilla": FitForm(
        name="chinchilla", law_class=ChinchillaLaw, log_params=frozenset({"E", "A", "B"}),
        log_predict=_chinchilla_log_predict, default_starts=_chinchilla_starts, floor=("E", float),
        summary="L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022; LSE fit of Besiroglu et al. 2024)",
    ),
    "overtraining": FitForm(
        name="overtraining", law_class=OvertrainingLaw, log_params=frozenset({"E", "A", "B"}),
        log_predict=_chinchilla_log_predict, default_starts=_chinchilla_starts,
        default_ties=(("alpha", "beta"),), floor=("E", float),
        summary="L = E + (a M^eta + b M^-eta) C^-eta, M = D/N (Gadre et al. 2024): Chinchilla with alpha = beta",
    ),
    "kaplan": FitForm(
        name="kaplan", law_class=KaplanLaw, log_params=frozenset({"N_c", "D_c"}),
        log_predict=_kaplan_log_predict, default_starts=_kaplan_starts,
        default_bounds=(("alpha_N", 1e-3, 5.0), ("alpha_D", 1e-3, 5.0)),
        summary="L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (Kaplan et al. 2020, eq. 1.5)",
    ),
    "farseer": FitForm(
        name="farseer", law_class=FarseerLaw, log_params=frozenset(),
        log_predict=_farseer_log_predict, seed_form="chinchilla",
        starts_from_seed=_farseer_starts_from_chinchilla,
        default_bounds=_FARSEER_BOUNDS, floor=("b3", np.log),
        summary="L = exp(a3 x^gamma + b3) + exp(a2 x^beta + b2) D^-exp(a1 x^alpha + b1), x = N/1e9 (Li et al. 2025, Sec. 3)",
    ),
}
