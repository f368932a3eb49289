"""Kaplan et al. 2020 ("Scaling Laws for Neural Language Models"), eq. 1.5: the joint L(N, D).

L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D, with N the NON-embedding parameters and
loss in nats on WebText2 with GPT-2's tokenizer, so absolute values do not compare with the
Chinchilla-form laws (MassiveText, SentencePiece).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.laws.base import LossLaw, as_array
from planner.laws.training_compute import tokens_for_compute


@dataclass(frozen=True, kw_only=True, eq=False)
class KaplanLaw(LossLaw):
    N_c: float
    D_c: float
    alpha_N: float
    alpha_D: float

    form = "kaplan"
    coefficient_names = ("N_c", "D_c", "alpha_N", "alpha_D")

    def predict(self, N, D) -> np.ndarray:
        ratio = self.alpha_N / self.alpha_D
        return ((self.N_c / as_array(N)) ** ratio + self.D_c / as_array(D)) ** self.alpha_D

    def compute_optimal(self, C) -> tuple[np.ndarray, np.ndarray]:
        """Iso-FLOP minimum of eq. 1.5 with D = C/(6N), in closed form.

        The bracket is N_c^p·N^-p + (6·D_c/C)·N with p = alpha_N/alpha_D; setting its derivative to
        zero gives N^(p+1) = p·N_c^p·C/(6·D_c), so N_opt ∝ C^(1/(1+p)) ≈ C^0.58. This is NOT Kaplan's
        headline N_opt ∝ C^0.73, which comes from L(N, S_min) with early stopping at B_crit
        (their section 6); the planner trains to a fixed token count, which is what eq. 1.5 models.
        """
        p = self.alpha_N / self.alpha_D
        C = as_array(C)
        n_opt = (p * self.N_c**p * tokens_for_compute(C, self.D_c)) ** (1.0 / (1.0 + p))
        return n_opt, tokens_for_compute(C, n_opt)
