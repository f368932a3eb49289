"""Xu et al., "Scaling Large Language Model Training on Frontier with Low-Bandwidth Partitioning"
(arXiv:2501.04266): the headline row of issue 16, reproduced by the planner on `frontier-mi250x`.

Headline (abstract): for a 20B GPT, 1.71x the TFLOP/s per GCD of ZeRO++ at up to 384 GCDs with their 3-level
partitioning (GCD-GCD, GPU-GPU in the node, inter-node), and a scaling efficiency of 0.94 up to 384 GCDs.
Tolerance 15% (issue 16's acceptance table).

Configuration. Only the abstract was in the stored corpora, so the settings are assumed and said so:
- Model: GPT-NeoX-20B's shape (Black et al. 2022: 44 layers, hidden 6144, 64 heads, vocabulary 50,432,
  sequence 2048), the 20B GPT of GPT-NeoX, which the paper's authors use (assumed).
- ZeRO-3 over all 384 GCDs (48 nodes), micro-batch 1, one micro-batch per step, bf16, full activation
  checkpointing (assumed).
- ZeRO++: hpZ over the node's 8 GCDs with qwZ and qgZ (DeepSpeed's ZeRO++ as the paper's baseline).
  3-level: the weights' secondary copy over the GCD pair of one MI250X (zero_hpz 2), gradients over the node
  (grad_shard_group 8), optimizer and primary weights over all ranks, qwZ and qgZ kept (the mapping of
  tests/cost/test_hierarchy.py). Both under framework `other`: the planner's `deepspeed` has no gradient group
  (Xu et al. patch DeepSpeed for theirs), and one stack for both keeps the comparison to the partitioning.
- Scaling efficiency: TFLOP/s per GCD at 384 GCDs over that at 16 (2 nodes; the 3-level layout does not fit
  64 GiB on one node), the batch per GCD fixed.
"""

from __future__ import annotations

import pytest

from planner.cost.estimate import simulate
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import make_model

TOLERANCE = 0.15
# GPT-NeoX-20B trains without dropout ("hidden-dropout": 0, "attention-dropout": 0 in EleutherAI/gpt-neox@252ddc52
# configs/20B.yml), ModelSpec's default.
MODEL = make_model("gpt-neox-20b", layers=44, hidden=6144, heads=64, seq_len=2048, vocab=50432)
ZEROPP = dict(zero_hpz=8, zero_quantized_weights=True, zero_quantized_gradients=True)
THREE_LEVEL = dict(zero_hpz=2, grad_shard_group=8, zero_quantized_weights=True, zero_quantized_gradients=True)


@pytest.fixture(scope="module")
def frontier():
    return load_cluster("frontier-mi250x")


def _tflops_per_gcd(frontier, gcds: int, options: dict) -> float:
    layout = Layout(dp=gcds, zero=3, dtype="bf16", framework="other", recompute="full", micro_batch=1,
                    global_batch=gcds, **options)
    result = simulate(MODEL, layout, frontier)
    assert result["fits"], f"{options} on {gcds} GCDs does not fit"
    return result["tflops_per_gpu"]


@pytest.mark.xfail(strict=True, reason=(
    "measured 0.99x (3-level 86.4 vs ZeRO++ 87.5 model TFLOP/s per GCD; 85.9 vs 87.3 at the assumed 0.75 link "
    "efficiencies before the LUMI-G rccl-tests ones, cluster_specs/frontier-mi250x.yaml; 86.0 vs 87.4 before ZeRO++'s "
    "per-tensor calls, cost/hierarchy.py) vs paper 1.71x: with one 2048-token "
    "micro-batch per GCD the planner hides every ZeRO-3 gather of this 20B model behind its layer's compute "
    "(at the uncalibrated MI250X efficiencies, GEMMs at 0.691 of peak), so no partitioning can gain; the paper's ZeRO++ "
    "baseline was communication-bound on Frontier"))
def test_three_level_over_zeropp_at_384_gcds(frontier):
    ratio = _tflops_per_gcd(frontier, 384, THREE_LEVEL) / _tflops_per_gcd(frontier, 384, ZEROPP)
    assert ratio == pytest.approx(1.71, rel=TOLERANCE), f"3-level / ZeRO++ = {ratio:.3f}"


def test_scaling_efficiency_to_384_gcds(frontier):
    """Abstract: scaling efficiency 0.94 up to 384 GCDs (measured 1.001 from 16 GCDs, +6%; 0.999 at the assumed 0.75 link
    efficiencies)."""
    efficiency = _tflops_per_gcd(frontier, 384, THREE_LEVEL) / _tflops_per_gcd(frontier, 16, THREE_LEVEL)
    assert efficiency == pytest.approx(0.94, rel=TOLERANCE), f"efficiency {efficiency:.3f}"
