"""The Farseer form (Li et al. 2025, "Predictable Scale: Part II, Farseer: A Refined Scaling Law in
Large Language Models", arXiv:2506.10972).

The paper builds the loss surface in Sec. 3 from L(N, D) = E + U(N) + V(D) + H(N, D). Its differential
analysis (Delta_D L = L(N, D) - L(N, lambda D) is a power law in D at every N, with an N-dependent
slope: Fig. 3) gives V(D) + H(N, D) = B(N)·D^(-A(N)), and each N-dependent piece is fitted as a
stretched exponential exp(a·N^c + b) (its differential piecewise fitting, Algorithm 2 of App. C.1).
The resulting law, in the paper's own variables, is

    L(N, D) = exp(a3·N^gamma + b3) + exp(a2·N^beta + b2) · D^(-exp(a1·N^alpha + b1))

with E + U(N) = exp(a3·N^gamma + b3), B(N) = exp(a2·N^beta + b2), A(N) = exp(a1·N^alpha + b1).
Sources checked: the paper's equation numbers could NOT be read from here: of
arXiv 2506.10972v3 only the abstract and introduction were reachable. The decomposition
L = E + U(N) + V(D) + H(N, D), the differences Delta_D L (Fig. 3a, Figs. 12-14 of App. C.2), the power law
V(D) + H(N, D) ~ B(N) D^(-A(N)) and Algorithm 2 (App. C.1) agree with a secondary review of the paper
(themoonlight.io, "Farseer: A Refined Scaling Law in Large Language Models"); the stretched-exponential
pieces and the final form above are as the paper's project page and review describe them, not checked
against a numbered equation. Cite it by section, figure and algorithm until the equations can be read.

Here N is scaled by N_REF: x = N / N_REF replaces N, an exact reparameterisation (a_i absorbs
N_REF^exponent) that keeps the fit well conditioned; coefficients are therefore stated for
x = N / 1e9, not for raw N. No published coefficients are carried: the paper's were fitted in
bits per character on its own corpus, so the law is fitted from data here.

Physical range (planner.laws.forms bounds the fit to it): with a3 >= 0, gamma <= 0 the first term
falls with N towards the floor exp(b3); with a2 >= 0, beta <= 0 the coefficient B(N) falls with N;
with a1 <= 0, alpha <= 0 the data exponent A(N) > 0 grows with N towards exp(b1). Then dL/dN < 0 and dL/dD < 0 for
every D > 1 token and L > exp(b3) > 0: sufficient (not necessary) conditions, so a fit inside the
bounds falls with N and D everywhere, not only where it was fitted, and each N-dependent factor
saturates as N grows. (Finite is not guaranteed: a large a·x^c with a negative exponent can overflow
at tiny N; the soundness check of planner.laws.fitter refuses such a fit.)
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
        """A(N) = exp(a1·x^alpha + b1), the N-dependent exponent of D."""
        with np.errstate(over="ignore"):
            return np.exp(self.a1 * (as_array(N) / N_REF) ** self.alpha + self.b1)

    def predict(self, N, D) -> np.ndarray:
        x = as_array(N) / N_REF
        # The data term in log space, exp(a2·x^beta + b2 - A(N)·log D): far outside the fitted range
        # A(N) may overflow to inf and the term is then 0 (D^-inf·B overflows to inf·0 = NaN).
        with np.errstate(over="ignore"):
            floor = np.exp(self.a3 * x**self.gamma + self.b3)
            log_data = self.a2 * x**self.beta + self.b2 - self.data_exponent(N) * np.log(as_array(D))
            return floor + np.exp(log_data)
