"""Data-constrained scaling (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models").

With only U unique tokens, D > U training tokens repeat data; repeated tokens are worth less.
Their eq. 5 replaces D and N in a Chinchilla-form law by effective values:
    D' = U_D + U_D·R_D*·(1 - exp(-R_D/R_D*)),  U_D = min(U, D),  R_D = D/U_D - 1 (repeat epochs)
    N' = U_N + U_N·R_N*·(1 - exp(-R_N/R_N*)),  U_N = min(N_opt(U_D), N),  R_N = N/U_N - 1
where N_opt(U_D) is the model size for which U_D tokens are compute-optimal under the base law:
parameters beyond it see the same data repeatedly and also decay in value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.laws.base import LossLaw, as_array
from planner.laws.chinchilla import ChinchillaLaw

# Muennighoff et al. 2023, section 3.1 / Table: decay constants fitted with their own base law.
R_D_STAR = 15.39
R_N_STAR = 5.31

# ASSUMED: warn beyond this many epochs. Muennighoff et al. find up to ~4 epochs cost almost
# nothing and that by ~40 epochs added repeated data is worth close to zero; their fits cover
# that range, so the law's shape beyond it is untested.
MAX_EPOCHS_VALIDATED = 40.0


def effective_amount(amount, unique, r_star: float) -> np.ndarray:
    """U + U·R*·(1 - exp(-R/R*)) with R = amount/U - 1 repeats beyond the first pass (eq. 5)."""
    amount, unique = as_array(amount), as_array(unique)
    repeats = np.maximum(amount / unique - 1.0, 0.0)
    return unique + unique * r_star * (1.0 - np.exp(-repeats / r_star))


@dataclass(frozen=True, kw_only=True, eq=False)
class DataConstrainedLaw(LossLaw):
    """A Chinchilla-form `base` law seen through Muennighoff's effective N' and D'.

    `compute_optimal` is the numerical iso-FLOP minimum (base class): the effective-data
    substitution has no closed-form frontier. Intervals are the base law's band at (N', D').
    """

    base: ChinchillaLaw
    unique_tokens: float
    r_d_star: float = R_D_STAR
    r_n_star: float = R_N_STAR

    form = "data-constrained"

    def coefficients(self) -> dict[str, float]:
        return {**self.base.coefficients(), "U": self.unique_tokens,
                "R_D*": self.r_d_star, "R_N*": self.r_n_star}

    def effective_inputs(self, N, D) -> tuple[np.ndarray, np.ndarray]:
        N, D = as_array(N), as_array(D)
        unique_d = np.minimum(self.unique_tokens, D)
        unique_n = np.minimum(self.base.optimal_params_for_tokens(unique_d), N)
        return (effective_amount(N, unique_n, self.r_n_star),
                effective_amount(D, unique_d, self.r_d_star))

    def predict(self, N, D) -> np.ndarray:
        return self.base.predict(*self.effective_inputs(N, D))

    def predict_interval(self, N, D, level: float = 0.8):
        return self.base.predict_interval(*self.effective_inputs(N, D), level=level)

    def extrapolation_warnings(self, N, D) -> list[str]:
        out = self.base.extrapolation_warnings(N, D)
        epochs = float(np.max(as_array(D))) / self.unique_tokens
        if epochs > MAX_EPOCHS_VALIDATED:
            out.append(f"{self.name}: {epochs:.0f} epochs over {self.unique_tokens:.3g} unique tokens; "
                       f"the data-constrained law was validated up to about {MAX_EPOCHS_VALIDATED:.0f}")
        return out


def data_constrained(base: ChinchillaLaw, unique_tokens: float) -> DataConstrainedLaw:
    """`base` with a cap of `unique_tokens` unique tokens (name and source say so)."""
    return DataConstrainedLaw(
        name=f"{base.name}+unique-tokens",
        source=f"{base.source}; repeated data per Muennighoff et al. 2023 eq. 5 "
               f"(R_D* = {R_D_STAR}, R_N* = {R_N_STAR})",
        n_definition=base.n_definition,
        c_definition=base.c_definition,
        validity=base.validity,
        base=base,
        unique_tokens=float(unique_tokens),
    )

