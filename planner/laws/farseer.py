"""The Farseer form (Li et al. 2025, "Farseer: A Refined Scaling Law in Large Language Models").

L(N, D) = exp(a3·x^gamma + b3) + exp(a2·x^beta + b2) · D^(-exp(a1·x^alpha + b1)),  x = N / N_REF.

The data exponent exp(a1·x^alpha + b1) depends on model size, which the Chinchilla form (one
beta for all N) cannot express. The form is taken as summarised in REFERENCE.md; the paper
writes it in N itself. Scaling N by N_REF is an exact reparameterisation (a_i absorbs
N_REF^exponent) that keeps the fit well conditioned; coefficients are therefore stated for
x = N / 1e9, not for raw N. There are no published coefficients here: the law is fitted from data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.laws.base import LossLaw, as_array

N_REF = 1e9  # parameters; chosen, see the module docstring


@dataclass(frozen=True, kw_only=True, eq=False)
class FarseerLaw(LossLaw):
    a1: float
    b1: float
    alpha: float
    a2: float
    b2: float
    beta: float
    a3: float
    b3: float
    gamma: float

    form = "farseer"
    coefficient_names = ("a1", "b1", "alpha", "a2", "b2", "beta", "a3", "b3", "gamma")

    def data_exponent(self, N) -> np.ndarray:
        """The N-dependent exponent of D: exp(a1·x^alpha + b1)."""
        return np.exp(self.a1 * (as_array(N) / N_REF) ** self.alpha + self.b1)

    def predict(self, N, D) -> np.ndarray:
        x = as_array(N) / N_REF
        with np.errstate(over="ignore"):  # far outside the fitted range a term may overflow to inf
            floor = np.exp(self.a3 * x**self.gamma + self.b3)
            data_term = np.exp(self.a2 * x**self.beta + self.b2) * as_array(D) ** -self.data_exponent(N)
        return floor + data_term
