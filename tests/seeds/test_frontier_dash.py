"""Dash et al., "Optimizing Distributed Training on Frontier for Large Language Models" (ISC 2024,
arXiv:2312.12705): the headline rows of issue 16, reproduced by the planner on `frontier-mi250x`.

Headlines (abstract): GPT models of 22B, 175B and 1T parameters at 38.38%, 36.14% and 31.96% of the MI250X
GCD's peak; 100% weak-scaling efficiency to 1,024 GCDs (175B) and 3,072 GCDs (1T); 89% and 87% strong-scaling
efficiency for the same two models. Tolerance: 15% (relative) on each (issue 16's acceptance table).

Configurations. The paper's text beyond its abstract was not in the stored corpora this was written from
(search: pages/docs/code), so the settings below are the paper's as recalled and flagged where assumed:
- Models (the paper's model table): 22B = 48 layers, hidden 6144, 48 heads; 175B = 96 layers, hidden 12288,
  96 heads (GPT-3's shape, Brown et al. 2020 Table 2.1); 1T = 128 layers, hidden 25600, 160 heads. Sequence
  2048. Vocabulary 51,200 (assumed: GPT-2/3's 50,257 BPE padded to Megatron's multiple of 128 x tp).
- Layouts (the paper's best settings as recalled): 175B tp 4 x pp 16, 1T tp 8 x pp 64, 22B tp 2 x pp 4
  (one node; assumed); ZeRO-1 under Megatron-DeepSpeed (framework deepspeed), micro-batch 1, bf16.
- Activation checkpointing on (assumed: Megatron-DeepSpeed's --checkpoint-activations; the planner finds the
  1T stage 100 GiB without it). The paper's "% of peak" is Megatron-DeepSpeed's printed TFLOP/s over the peak:
  `throughput_calculator` (microsoft/Megatron-DeepSpeed@f4157be, megatron/utils.py:270-312, after Narayanan
  et al. 2021 eq. 3) counts the full attention square, the logits, and one more forward with checkpointing.
  The same formula is applied here to the planner's step time (`_megatron_deepspeed_tflops`).
- Global batch 1,536 sequences (assumed: GPT-3 175B's 3.2M tokens, Brown et al. 2020 Table 2.1) at the largest
  GCD count; weak scaling keeps the per-replica batch, strong scaling keeps the global batch. Scaling ranges
  (assumed): weak 175B 128 -> 1,024 GCDs, 1T 512 -> 3,072; strong 175B 256 -> 1,024, 1T 1,024 -> 3,072.

The authors' own launch scripts, found later (github.com/sajal-vt/Megatron-DeepSpeed-ORNL, commit 43e2250
"Updated launch scripts", 2024-01-04, after the paper; launch_gpt{22b,175b,1T}_bf16.slurm): 22B tp 1 x pp 8,
ZeRO-0; 175B tp 4 x pp 16, ZeRO-1; 1T tp 4 x pp 128 with 200 heads, ZeRO-1; micro-batch 1, full recompute,
--use-flash-attn-v2, fp16, ROCm 5.7; GPT-2's vocabulary padded by tp. The older OLCF training-series script
has 1T at tp 8 x pp 64 (olcf/ai-training-series launch_gpt1T_srun.frontier), as here. They are not confirmed as
the paper's rows, so the layouts above stay; on the scripts' layouts the planner gives 0.573 / 0.537 / 0.436 of
peak (measured 2026-12-01), as far from the paper as these: the gap is not the assumed layouts. The MI250X GEMM
ceiling (147 TFLOP/s MAMF, ROCm 6.2) is the likely part: a second user measured 127 on one GCD (stas00/
ml-engineering issue #76, "setup differences"), and the paper ran ROCm 5.x; no dated ROCm 5 figure was found,
so the spec is unchanged.
"""

from __future__ import annotations

import pytest

from planner.cost.estimate import simulate
from planner.specs.clusters import load_cluster
from planner.specs.layout import make_layout
from planner.specs.model import make_model

TOLERANCE = 0.15
GLOBAL_BATCH = 1536
MODELS = {
    "22b": dict(layers=48, hidden=6144, heads=48, seq_len=2048, vocab=51200),
    "175b": dict(layers=96, hidden=12288, heads=96, seq_len=2048, vocab=51200),
    "1t": dict(layers=128, hidden=25600, heads=160, seq_len=2048, vocab=51200),
}
MODEL_PARALLEL = {"22b": (2, 4), "175b": (4, 16), "1t": (8, 64)}  # (tp, pp)
LARGEST_DP = {"22b": 1, "175b": 16, "1t": 6}  # 8, 1,024 and 3,072 GCDs


@pytest.fixture(scope="module")
def frontier():
    return load_cluster("frontier-mi250x")


def _run(frontier, name: str, dp: int, global_batch: int) -> dict:
    tp, pp = MODEL_PARALLEL[name]
    layout = make_layout(tp=tp, pp=pp, dp=dp, micro_batch=1, global_batch=global_batch, zero=1,
                         framework="deepspeed", recompute="full", dtype="bf16")
    result = simulate(make_model(**MODELS[name]), layout, frontier)
    assert result["fits"], f"{name} on {tp * pp * dp} GCDs does not fit in 64 GiB"
    return result


def _megatron_deepspeed_tflops(model: dict, global_batch: int, step_s: float, gcds: int) -> float:
    """FLOP/s per GCD as Megatron-DeepSpeed prints it (megatron/utils.py:295-311), GPT (MHA, GELU 4h MLP, one
    expert), with full activation checkpointing (the forward counted twice)."""
    h, layers, s, vocab = model["hidden"], model["layers"], model["seq_len"], model["vocab"]
    projections = global_batch * layers * (1 + 2 + 1) * h * h * s
    attention = global_batch * layers * 2 * h * s * s  # head_dim x heads = h
    mlp = global_batch * layers * 2 * (4 * h) * h * s
    logits = global_batch * vocab * h * s
    forward_macs = projections + attention + mlp + logits
    return 2.0 * (3.0 + 1.0) * forward_macs / (step_s * gcds)


def _per_gcd(result: dict, gcds: int) -> float:
    return result["tokens_per_s"] / gcds


@pytest.mark.parametrize("name, paper", [
    pytest.param("22b", 0.3838, marks=pytest.mark.xfail(strict=True, reason=(
        "measured 0.575 of peak vs 0.3838 (+50%; 0.578 at the assumed 0.75 link efficiencies before the LUMI-G rccl-tests ones, cluster_specs/frontier-mi250x.yaml; 0.577 before dropout became a model property: the seed states no dropout, and Dash et al.'s scripts, which would say, were not read; 0.598 in an earlier session): the MI250X runs at uncalibrated GPU efficiencies (GEMMs at the "
        "MAMF-derived 0.691 of peak, docs/gemm_ceiling.md; attention as GEMMs), not calibrated to ROCm; the paper's "
        "22B layout is assumed"))),
    pytest.param("175b", 0.3614, marks=pytest.mark.xfail(strict=True, reason=(
        "measured 0.461 of peak vs 0.3614 (+28%; 0.459 before the pipeline's fill and drain ran at each stage's own speed; 0.462 at the assumed 0.75 link efficiencies; 0.461 with dropout masks, 0.481 earlier): uncalibrated MI250X GEMM/attention efficiency (see 22B)"))),
    pytest.param("1t", 0.3196, marks=pytest.mark.xfail(strict=True, reason=(
        "measured 0.444 of peak vs 0.3196 (+39%; 0.440 before the pipeline's fill and drain ran at each stage's own speed; 0.441 at the assumed 0.75 link efficiencies; 0.440 with dropout masks, 0.459 earlier): uncalibrated MI250X GEMM/attention efficiency (see 22B)"))),
])
def test_fraction_of_peak(frontier, name, paper):
    """Abstract: 38.38% / 36.14% / 31.96% of the MI250X GCD's peak (191.5 TFLOP/s bf16), as Megatron-DeepSpeed
    counts FLOPs."""
    tp, pp = MODEL_PARALLEL[name]
    dp = LARGEST_DP[name]
    result = _run(frontier, name, dp, GLOBAL_BATCH)
    flops = _megatron_deepspeed_tflops(MODELS[name], GLOBAL_BATCH, result["step_time_s"], tp * pp * dp)
    fraction = flops / frontier.peak_flops_per_s("bf16")
    assert fraction == pytest.approx(paper, rel=TOLERANCE), f"{name}: {fraction:.3f} of peak vs paper {paper}"


@pytest.mark.parametrize("name, small_dp", [("175b", 2), ("1t", 1)])
def test_weak_scaling_is_full(frontier, name, small_dp):
    """Abstract: 100% weak-scaling efficiency to 1,024 (175B) and 3,072 (1T) GCDs (measured 0.992, 0.993): per-GCD throughput held as
    data-parallel replicas are added with the batch per replica fixed."""
    tp, pp = MODEL_PARALLEL[name]
    large_dp = LARGEST_DP[name]
    per_replica = GLOBAL_BATCH // large_dp
    small = _per_gcd(_run(frontier, name, small_dp, per_replica * small_dp), tp * pp * small_dp)
    large = _per_gcd(_run(frontier, name, large_dp, per_replica * large_dp), tp * pp * large_dp)
    assert large / small == pytest.approx(1.0, rel=TOLERANCE)


@pytest.mark.parametrize("name, small_dp, paper", [("175b", 4, 0.89), ("1t", 2, 0.87)])
def test_strong_scaling(frontier, name, small_dp, paper):
    """Abstract: 89% (175B) and 87% (1T) strong-scaling efficiency (measured 0.890, 0.863): the global batch fixed, more replicas, so
    fewer micro-batches per pipeline and a larger bubble share."""
    tp, pp = MODEL_PARALLEL[name]
    large_dp = LARGEST_DP[name]
    small = _per_gcd(_run(frontier, name, small_dp, GLOBAL_BATCH), tp * pp * small_dp)
    large = _per_gcd(_run(frontier, name, large_dp, GLOBAL_BATCH), tp * pp * large_dp)
    assert large / small == pytest.approx(paper, rel=TOLERANCE), f"{name}: efficiency {large / small:.3f}"
