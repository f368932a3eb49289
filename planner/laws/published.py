"""Published loss laws with their coefficients, sources, validity ranges and uncertainty bands.

Coefficients as in shared/REFERENCE.md (primary sources cited per law). Bands for
`predict_interval`:
- Chinchilla-form laws (Hoffmann, Epoch, Muennighoff): coefficient samples drawn from a normal
  distribution in (log E, log A, log B, alpha, beta) around the law's own estimates, with the
  covariance MEASURED here by 2,000 run-level bootstrap refits of the Epoch digitisation of
  Chinchilla with Epoch's procedure (`benchmarks/bench_law_fit.py --covariance` reruns them; since
  the bootstrap draws runs in an order set by their points rather than by file line, it draws other
  resamples than the ones stored below, so it prints a matrix within bootstrap noise of this one, not
  the same digits; its standard errors match Epoch's published ones: E 0.026 vs 0.03, A 120 vs 125, B 1400 vs
  1293, alpha 0.015 vs 0.02, beta 0.020 vs 0.02). For Hoffmann and Muennighoff this covariance is a proxy: Hoffmann
  published no intervals for approach 3, and his point estimates are themselves off (Besiroglu
  et al. 2024), which the band does not show; Muennighoff fitted other data.
- Kaplan: no published uncertainty; an ASSUMED 2% (one sigma) relative band.
"""

from __future__ import annotations

import numpy as np

from planner.laws.base import Validity
from planner.laws.chinchilla import ChinchillaLaw
from planner.laws.kaplan import KaplanLaw

# Bootstrap covariance of (log E, log A, log B, alpha, beta), Epoch digitisation of Chinchilla
# Figure 4, 240 points (5 highest-loss dropped as Epoch did), Huber delta 1e-3, 2,000 resamples.
_CHINCHILLA_COVARIANCE = np.array([
    [1.974e-04, 2.140e-03, 3.565e-03, 1.262e-04, 1.737e-04],
    [2.140e-03, 6.492e-02, -2.546e-02, 3.869e-03, -1.277e-03],
    [3.565e-03, -2.546e-02, 1.733e-01, -1.586e-03, 8.474e-03],
    [1.262e-04, 3.869e-03, -1.586e-03, 2.308e-04, -7.959e-05],
    [1.737e-04, -1.277e-03, 8.474e-03, -7.959e-05, 4.147e-04],
])
_BAND_SAMPLES = 400
_BAND_SEED = 20240417  # fixed: the band of a published law is the same on every call


def _chinchilla_band(E: float, A: float, B: float, alpha: float, beta: float) -> np.ndarray:
    rng = np.random.default_rng(_BAND_SEED)
    center = np.array([np.log(E), np.log(A), np.log(B), alpha, beta])
    draws = rng.multivariate_normal(center, _CHINCHILLA_COVARIANCE, size=_BAND_SAMPLES)
    draws[:, :3] = np.exp(draws[:, :3])
    return draws


# The fitted points of the Epoch digitisation (240 of 245 rows): N 5.7e7..1.6e10 parameters,
# D 8.2e8..3.2e11 tokens, 0.46..341 tokens per parameter (planner.laws.data on the shared CSV).
_CHINCHILLA_RUNS = Validity(n_min=5.7e7, n_max=1.6e10, d_min=8.2e8, d_max=3.2e11, tpp_min=0.46, tpp_max=341.0)


def _chinchilla_law(name: str, source: str, validity: Validity, **coefficients: float) -> ChinchillaLaw:
    return ChinchillaLaw(name=name, source=source, n_definition="total", c_definition="6ND",
                         validity=validity, samples=_chinchilla_band(**coefficients), **coefficients)


# Hoffmann et al. 2022, approach 3 (section 3.3, eq. 10 with the unrounded values of appendix D.2).
# N counts all parameters, embeddings included (Pearce & Song 2024 trace the Kaplan/Chinchilla
# exponent gap to exactly this difference); C = 6ND for the frontier.
HOFFMANN_2022 = _chinchilla_law(
    "chinchilla",
    "Hoffmann et al. 2022, 'Training Compute-Optimal Large Language Models', approach 3",
    _CHINCHILLA_RUNS, E=1.6934, A=406.40, B=410.72, alpha=0.33917, beta=0.28491)

# Besiroglu et al. 2024 refit of the same runs (their Table 1).
EPOCH_2024 = _chinchilla_law(
    "epoch",
    "Besiroglu et al. 2024, 'Chinchilla Scaling: A replication attempt' (Epoch AI), refit of Hoffmann's data",
    _CHINCHILLA_RUNS, E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)

# Muennighoff et al. 2023, base law fitted on their C4 runs (with D -> D', N -> N' applied;
# see data_constrained.py). Models up to 9e9 parameters and 9e11 tokens; the smallest 1e7.
# The paper states no joint (N, D) range, so tokens per parameter span the ratio of extremes.
MUENNIGHOFF_2023 = _chinchilla_law(
    "muennighoff",
    "Muennighoff et al. 2023, 'Scaling Data-Constrained Language Models', eq. 5 fit",
    Validity(n_min=1e7, n_max=9e9, d_min=1e8, d_max=9e11, tpp_min=1e8 / 9e9, tpp_max=9e11 / 1e7),
    E=1.869, A=520.8, B=1487.7, alpha=0.3527, beta=0.3527)

# Kaplan et al. 2020, Table 2 / eq. 1.5: non-embedding N from 768 to 1.5e9, datasets from
# 2.2e7 to 2.3e10 tokens (section 3); tokens per parameter span the ratio of extremes.
KAPLAN_2020 = KaplanLaw(
    name="kaplan",
    source="Kaplan et al. 2020, 'Scaling Laws for Neural Language Models', eq. 1.5 (loss in nats, WebText2)",
    n_definition="non-embedding", c_definition="6ND",
    validity=Validity(n_min=768.0, n_max=1.5e9, d_min=2.2e7, d_max=2.3e10, tpp_min=2.2e7 / 1.5e9,
                      tpp_max=2.3e10 / 768.0),
    relative_sigma=0.02,  # ASSUMED, see the module docstring
    N_c=6.4e13, D_c=1.8e13, alpha_N=0.076, alpha_D=0.103)
