"""The Chinchilla form L(N, D) = E + A/N^alpha + B/D^beta and its closed-form frontier.

Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models"), approach 3, eq. 2; the
Epoch AI refit (Besiroglu et al. 2024) and Muennighoff et al. 2023 use the same form. The
over-training form of Gadre et al. 2024 is this form with alpha = beta, written in C and M = D/N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.laws.base import LossLaw, as_array
from planner.laws.training_compute import FLOPS_PER_PARAM_TOKEN


@dataclass(frozen=True, kw_only=True, eq=False)
class ChinchillaLaw(LossLaw):
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    form = "chinchilla"
    coefficient_names = ("E", "A", "B", "alpha", "beta")

    def predict(self, N, D) -> np.ndarray:
        return self.E + self.A * as_array(N) ** -self.alpha + self.B * as_array(D) ** -self.beta

    def frontier_exponents(self) -> tuple[float, float]:
        """(a, b) with N_opt ∝ C^a, D_opt ∝ C^b (Hoffmann et al. 2022, eq. 4)."""
        total = self.alpha + self.beta
        return self.beta / total, self.alpha / total

    def frontier_coefficient(self) -> float:
        """G = (alpha·A / (beta·B))^(1/(alpha+beta)) of Hoffmann et al. 2022, eq. 4."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def compute_optimal(self, C) -> tuple[np.ndarray, np.ndarray]:
        """N_opt = G·(C/6)^a, D_opt = G^-1·(C/6)^b: where dL/dN = 0 along 6·N·D = C."""
        a, b = self.frontier_exponents()
        g = self.frontier_coefficient()
        half_flops = as_array(C) / FLOPS_PER_PARAM_TOKEN
        return g * half_flops**a, half_flops**b / g

    def optimal_params_for_tokens(self, D) -> np.ndarray:
        """The N for which D tokens are compute-optimal: invert D_opt(C) (Muennighoff eq. 5 uses it)."""
        a, b = self.frontier_exponents()
        g = self.frontier_coefficient()
        return g * (as_array(D) * g) ** (a / b)


@dataclass(frozen=True, kw_only=True, eq=False)
class OvertrainingLaw(ChinchillaLaw):
    """Gadre et al. 2024, eq. 4: L(C, M) = E + (a·M^eta + b·M^-eta)·C^-eta, M = D/N, C = 6ND.

    Substituting C and M gives E + a·6^-eta·N^-2eta + b·6^-eta·D^-2eta: the Chinchilla form with
    alpha = beta = 2·eta, A = a·6^-eta, B = b·6^-eta. It is stored that way (one predict, one
    frontier) and shown in Gadre's terms. The optimal M does not depend on C: M* = (b/a)^(1/(2 eta)).
    """

    form = "overtraining"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not np.isclose(self.alpha, self.beta, rtol=1e-9, atol=0.0):
            raise ValueError(f"the over-training form needs alpha = beta, got {self.alpha} and {self.beta}")

    def gadre_coefficients(self) -> dict[str, float]:
        eta = self.alpha / 2.0
        return {"E": self.E, "a": self.A * FLOPS_PER_PARAM_TOKEN**eta, "b": self.B * FLOPS_PER_PARAM_TOKEN**eta, "eta": eta}

    def predict_cm(self, C, M) -> np.ndarray:
        """Loss at compute C (FLOP) and M tokens per parameter, in Gadre's own variables."""
        g = self.gadre_coefficients()
        M, C = as_array(M), as_array(C)
        return g["E"] + (g["a"] * M ** g["eta"] + g["b"] * M ** -g["eta"]) * C ** -g["eta"]
