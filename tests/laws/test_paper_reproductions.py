"""Inference-aware and data-constrained sizing reproduced from their papers (issue 14 item 5).

Sardana et al. 2024, "Beyond Chinchilla-Optimal" (arXiv 2401.00448), Figure 1: "An LLM developer seeking to
train a 13B model who expects 2 trillion tokens of inference demand during the model's lifetime can reduce their
total compute by 1.7 x 10^22 FLOPs (17%) by instead training a 7B model on more data." Their law is Chinchilla
approach 3 (Hoffmann et al. 2022), FLOPs 6ND for training and 2N per inference token.

Muennighoff et al. 2023, "Scaling Data-Constrained Language Models" (arXiv 2305.16264), Figure 1 (right) and the
optimal allocation its authors print in their repository (huggingface/datablations, README.md section "Parametric
Fit", commit 1370131): with 25B unique tokens, L(6.34B params, 242B tokens) = 2.2256 < L(8.67B, 178B) = 2.2270,
and at C = 1e22 FLOPs the optimum is 237.3B tokens (9.49 epochs) on 7.02B parameters.
"""

from __future__ import annotations

import pytest

from planner.laws.inference import inference_optimal, lifetime_flops
from planner.laws.published import HOFFMANN_2022, MUENNIGHOFF_2023
from planner.laws.registry import load_law

SARDANA_N, SARDANA_SAVING_FLOPS, SARDANA_SAVING_FRACTION = 7e9, 1.7e22, 0.17


def chinchilla_13b():
    """The 13B model trained compute-optimally (Hoffmann eq. 4 inverted) and its loss, the quality target."""
    a, _ = HOFFMANN_2022.frontier_exponents()
    g = HOFFMANN_2022.frontier_coefficient()
    n = 13e9
    d = (n / g) ** (1.0 / a) / n  # N_opt = G (C/6)^a  ->  C/6 = (N/G)^(1/a), D = (C/6)/N
    return n, d, float(HOFFMANN_2022.predict(n, d))


def test_sardana_figure_1_law_level():
    """Measured: 7.12B parameters (paper: 7B), saving 1.63e22 FLOPs = 16.3% (paper: 1.7e22, 17%). Tolerances:
    5% on N and 10% on the saving, for the paper's rounding and its unstated rounding of the 13B model's D."""
    n0, d0, target = chinchilla_13b()
    best = inference_optimal(HOFFMANN_2022, target, 2e12)
    saving = float(lifetime_flops(n0, d0, 2e12)) - best["total_flops"]
    assert best["params"] == pytest.approx(SARDANA_N, rel=0.05)
    assert saving == pytest.approx(SARDANA_SAVING_FLOPS, rel=0.10)
    assert saving / float(lifetime_flops(n0, d0, 2e12)) == pytest.approx(SARDANA_SAVING_FRACTION, abs=0.015)
    assert best["tokens"] / best["params"] > 3 * d0 / n0  # "smaller and longer than Chinchilla-optimal"
    assert float(HOFFMANN_2022.predict(best["params"], best["tokens"])) == pytest.approx(target, rel=1e-9)


def test_sardana_figure_1_through_the_planner_search():
    """The planner's own search (target loss = the 13B model's, --inference-tokens 2T, GPU time on a DGX H100
    cluster at each plan's modelled MFU) picks 6.64B parameters (measured); paper 7B. Tolerance 15%: the search
    minimises GPU-hours, not FLOPs, over discrete model shapes whose MFU differs."""
    from planner.search.budget import build_constraints
    from planner.specs.clusters import load_cluster
    from planner.search.optimize import optimize

    spec = load_cluster("dgx-h100")
    _, _, target = chinchilla_13b()
    constraints = build_constraints(budget=None, deadline="365d", gpus=None, max_gpus=None, unique_tokens=None,
                                    target_loss=target, inference_tokens="2T",
                                    price_per_gpu_hour=spec.price_per_accelerator_hour, cluster_name=spec.name)
    result = optimize(spec, load_law("chinchilla"), constraints, seq_len=4096)
    assert result.status == "ok"
    assert result.plan["params"] == pytest.approx(SARDANA_N, rel=0.15)
    assert result.plan["predicted_loss"] <= target + 1e-9


def test_muennighoff_figure_1_right():
    """Measured 2.22514 and 2.22645 (authors' 2.22564, 2.22696: our coefficients are theirs rounded to 4-5
    figures, planner/laws/published.py). Tolerance 0.1%; the ordering (more epochs, fewer parameters wins) exact."""
    law = load_law("muennighoff", unique_tokens=25e9)
    assert law.base is MUENNIGHOFF_2023
    many_epochs, fewer_epochs = float(law.predict(6.34e9, 242e9)), float(law.predict(8.67e9, 178e9))
    assert many_epochs == pytest.approx(2.2256440889984477, rel=1e-3)
    assert fewer_epochs == pytest.approx(2.2269634075087867, rel=1e-3)
    assert many_epochs < fewer_epochs


def test_muennighoff_optimal_allocation_at_1e22():
    """Measured 7.027B parameters, 237.17B tokens (9.49 epochs) against the authors' grid search 7.022B, 237.34B.
    Tolerance 1%: their grid steps the N/D ratio by 0.4%."""
    law = load_law("muennighoff", unique_tokens=25e9)
    n_opt, d_opt = law.compute_optimal(1e22)
    assert float(n_opt) == pytest.approx(7022364735.879969, rel=0.01)
    assert float(d_opt) == pytest.approx(237336955477.55075, rel=0.01)
    assert float(d_opt) / 25e9 == pytest.approx(9.49, rel=0.01)
