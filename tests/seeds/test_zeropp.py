"""ZeRO++ (Wang et al. 2023, "ZeRO++: Extremely Efficient Collective Communication for Giant Model Training",
arXiv:2306.10209): 4x less cross-node volume than ZeRO-3, and up to ~2.2x its throughput on 384 V100s at
low cross-node bandwidth.

Configuration (the paper's evaluation and DeepSpeed's ZeRO++ tutorial, docs/_tutorials/zeropp.md@38327e07):
the 18B GPT of the tutorial, 40 layers, hidden 6144, 32 heads, sequence 512, fp16, tp = pp = 1, ZeRO-3 with
activation checkpointing; 384 V100-32GB in 24 DGX-2 nodes (16 GPUs each); ZeRO++ = qwZ + hpZ over the 16
GPUs of a node + qgZ (the tutorial's ds_config: zero_hpz_partition_size 16). Throughputs from the ZeRO++
blog's Figures 6 and 7 (DeepSpeed blogs/zeropp, assets eval1.png / eval2.png): "IB: 1" / "IB: 4" 100 Gb/s
links per node, micro-batch 1K or 2K tokens per GPU.
Assumed where the paper is silent: vocabulary 50257 (GPT-2); 1K tokens = micro-batch 2 x 512; one
micro-batch per step (global batch = micro-batch x 384); the TFLOP/s of the figures are Megatron-DeepSpeed's,
which count the recompute forward (HFU), so the planner's hfu x peak is compared.
"""

from __future__ import annotations

import math

import pytest

from planner.cost.estimate import simulate
from planner.specs.candidate_batch import single_batch
from planner.specs.layout import Layout
from planner.specs.pipeline_stages import stage_param_counts
from planner.specs.model import make_model

MODEL_18B = make_model("zeropp-18b", layers=40, hidden=6144, heads=32, seq_len=512, vocab=50257)
GPUS = 384
V100_FP16_PEAK = 125e12
ZEROPP = dict(zero_hpz=16, zero_quantized_weights=True, zero_quantized_gradients=True)


def _layout(micro_batch: int, **options) -> Layout:
    return Layout(dp=GPUS, zero=3, dtype="fp16", framework="deepspeed", recompute="full", micro_batch=micro_batch,
                  global_batch=micro_batch * GPUS, **options)


def test_cross_node_volume_is_a_quarter_of_zero3(nics):
    """ZeRO++ section 3 / Figure 1: ZeRO-3 moves 3M across nodes per step (forward all-gather, backward
    all-gather, gradient reduce-scatter, M the fp16 model), ZeRO++ 0.75M (int8 forward 0.5M, hpZ backward 0,
    int4 qgZ 0.25M). Exact: scales and (N-1)/N factors are left out on both sides, as in the paper."""
    cluster = nics("dgx2-v100", 1)
    zero3 = simulate(MODEL_18B, _layout(2), cluster)["comm_bytes_per_step"]["dp_cross_node"]
    zeropp = simulate(MODEL_18B, _layout(2, **ZEROPP), cluster)["comm_bytes_per_step"]["dp_cross_node"]
    # fp16 bytes of the model as one rank holds it (tp = pp = 1: all of it; the cost model's own parameter split),
    # with the vocabulary Megatron-DeepSpeed pads to a multiple of 128 (frameworks/deepspeed.py)
    m = 2.0 * float(stage_param_counts(single_batch(MODEL_18B, _layout(2)))[0][0])
    padding_rows = (math.ceil(MODEL_18B.vocab / 128) * 128 - MODEL_18B.vocab) * (1 if MODEL_18B.tied_embeddings else 2)
    assert m == pytest.approx(2.0 * (MODEL_18B.total_params + padding_rows * MODEL_18B.hidden), rel=1e-5)
    assert zero3 == pytest.approx(3.0 * m, rel=1e-12)
    assert zeropp == pytest.approx(0.75 * m, rel=1e-12)
    # Each technique alone: qwZ halves the forward gather, hpZ removes the backward one, qgZ quarters the reduce.
    alone = {key: simulate(MODEL_18B, _layout(2, **{key: value}), cluster)["comm_bytes_per_step"]["dp_cross_node"]
             for key, value in ZEROPP.items()}
    assert alone["zero_quantized_weights"] == pytest.approx(2.0 * m, rel=1e-12)  # 0.5 + 0.5 (bwd) + 1
    assert alone["zero_hpz"] == pytest.approx(2.0 * m, rel=1e-12)
    assert alone["zero_quantized_gradients"] == pytest.approx(2.25 * m, rel=1e-12)


def _speedup(cluster, micro_batch: int) -> tuple[float, float]:
    base = simulate(MODEL_18B, _layout(micro_batch), cluster)
    plus = simulate(MODEL_18B, _layout(micro_batch, **ZEROPP), cluster)
    assert base["fits"] and plus["fits"]
    return base["hfu"] * V100_FP16_PEAK / 1e12, plus["hfu"] * V100_FP16_PEAK / 1e12


# (IB links per node, micro-batch, paper baseline TFLOP/s, paper ZeRO++ TFLOP/s): blog Figures 6 and 7, 18B.
# Measured by the planner (HFU TFLOP/s, baseline -> ZeRO++): 1 IB 1K 14.4 -> 43.1 (2.99x); 1 IB 2K 28.7 -> 64.3
# (2.24x); 4 IB 1K 45.2 -> 68.4 (1.51x); 4 IB 2K 76.1 -> 87.1 (1.15x), with the EDR NICs at the NCCL maintainers' 12 of
# 12.5 GB/s and the NVSwitch at its measured 0.824 (cluster_specs/dgx2-v100.yaml; 43.0, 64.3, 68.3, 86.9 at the assumed
# 0.75 there; with both at the assumed 0.75 before: 11.5 -> 36.3, 23.0 -> 58.6, 37.5 -> 64.7,
# 71.3 -> 85.7: 3.15x, 2.55x, 1.73x, 1.20x), with DeepSpeed ZeRO-3's gradient copies
# (cost/shard_copies.py) in both, less the interleave and pre-divide that qgZ skips (0.36 -> 0.12 s a step; before:
# 34.4, 56.0, 58.7, 80.3), and ZeRO++'s calls as DeepSpeed 0.19.8 issues them (cost/hierarchy.py: qwZ's scale
# all-gather beside each int8 one, qgZ's four all-to-alls per 2-D gradient and a flat reduce-scatter per 1-D one;
# before them 35.6, 56.7, 60.3, 81.3, all at the 0.75 efficiency). The baseline's 1-IB step (10.5 s) is ~9.4 s of ring
# traffic: 3 x 37.5 GB through the node's one NIC at 0.96 x 12.5 GB/s (~12 s at the assumed 0.75 before; at 1.0 the
# baseline would be 14.9 / 29.7 TFLOP/s), ~0.7 s of NCCL ring latency (367 calls x 1.9 ms: 360
# NVLink steps of the spec's 5 us), less ~1.6 s hidden behind compute (8.5 s exposed). The V100 GEMMs run at the DeepBench-derived ceiling, 0.808 of peak
# (docs/gemm_ceiling.md; at the assumed 0.72 before it: 3.06x, 2.34x, 1.52x, 1.10x). The planner's ZeRO++ runs at
# 4 IB come out 2.0x (1K) and 1.6x (2K) the paper's TFLOP/s (1.8x and 1.6x at the assumed 0.75), so communication weighs more.
PAPER = [
    pytest.param(1, 2, 14.0, 31.0, marks=pytest.mark.xfail(strict=True, reason=(
        "measured 2.99x vs paper 2.21x (+35%; 3.15x, +42%, at the assumed 0.75 scale-out efficiency)"))),
    pytest.param(1, 4, 26.0, 46.0, marks=pytest.mark.xfail(strict=True, reason=(
        "measured 2.24x vs paper 1.77x (+27%; 2.55x, +44%, at the assumed 0.75 scale-out efficiency)"))),
    # measured 1.51x vs 1.40x (+8%); a strict xfail at the assumed 0.75 scale-out efficiency: 1.73x (+23%; +12% before
    # the copies qgZ skips were taken off, cost/shard_copies.py), ZeRO++ at 64.7 TFLOP/s against the paper's 35 (68.3 now)
    pytest.param(4, 2, 25.0, 35.0),
    pytest.param(4, 4, 40.0, 53.0),  # measured 1.14x vs 1.33x (-14%; 1.20x, -9%, at the assumed 0.75)
]


@pytest.mark.parametrize("links, micro_batch, paper_base, paper_plus", PAPER)
def test_speedup_over_zero3_at_384_gpus(nics, links, micro_batch, paper_base, paper_plus):
    """Speed-up of ZeRO++ over ZeRO-3 within 20% of the figure's (the issue's tolerance)."""
    base, plus = _speedup(nics("dgx2-v100", links), micro_batch)
    assert plus / base == pytest.approx(paper_plus / paper_base, rel=0.20)


def test_zeropp_never_slower_and_gains_more_at_low_bandwidth(nics):
    """The figures' ordering: ZeRO++ beats ZeRO-3 on both clusters, by more with one IB link than with four."""
    low_base, low_plus = _speedup(nics("dgx2-v100", 1), 2)
    high_base, high_plus = _speedup(nics("dgx2-v100", 4), 2)
    assert low_plus > low_base and high_plus > high_base
    assert low_plus / low_base > high_plus / high_base
