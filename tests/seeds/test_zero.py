"""ZeRO (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
SC'20): 100B-parameter models on 400 V100s at over 15 PFLOP/s aggregate (over 38 TFLOP/s per GPU, ZeRO-2 with
Megatron model parallelism); models up to 13B train without model parallelism (ZeRO-2), up to 6B with ZeRO-1
(DeepSpeed docs/_tutorials/megatron.md:389-400@38327e07, the paper's abstract and Figure 2, reproduced in
DeepSpeed's docs/assets/images/zero-full.png: its bottom-right panel runs ZeRO-2 DP on 128 GPUs, the
"4.5 Pflops (aggregate)" line at 35 TFLOP/s per GPU; baseline DP points stop at 1.4B).

Hardware: 25 DGX-2 nodes (16 V100-SXM3-32GB, 8 x 100 Gb/s InfiniBand each): the dgx2-v100 spec.
Assumed where this reproduction could not read the paper's configuration table: the 100B model is a
GPT-2-style stack of 125 layers of hidden 8192 (12 L h^2 = 100.7B), 64 heads, sequence 1024, vocabulary
50257, tensor (Megatron) parallelism 16 inside a node, dp 25, micro-batch 4 and one micro-batch per step,
fp16, activation checkpointing; the 6-15B models for the fit verdicts are GPT-2 shapes (layers x hidden below)
at micro-batch 1 and 4 (the figure does not give them). The paper's TFLOP/s are Megatron's, which count the recompute forward:
hfu x peak is compared.
"""

from __future__ import annotations

import pytest

from planner.cost.estimate import simulate
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import make_model

V100 = load_cluster("dgx2-v100")
V100_FP16_PEAK = 125e12


def _fits(layers: int, hidden: int, zero: int, micro_batch: int) -> bool:
    model = make_model(f"zero-{layers}x{hidden}", layers=layers, hidden=hidden, heads=hidden // 64, seq_len=1024,
                       vocab=50257)
    layout = Layout(dp=128, zero=zero, framework="deepspeed", dtype="fp16", recompute="full",
                    micro_batch=micro_batch, global_batch=128 * micro_batch)
    return bool(simulate(model, layout, V100)["fits"])


# (layers, hidden, ~params, ZeRO stage, fits): "ZeRO-2 ... up to 13 billion parameters ... without any model
# parallelism", "ZeRO-1 supports up to 6 billion parameters" (megatron.md:400); 8B and 15B just beyond.
VERDICTS = [(62, 4096, "13B", 2, True), (62, 4096, "13B", 1, False), (62, 4096, "13B", 0, False),
            (64, 2816, "6B", 1, True), (72, 3072, "8B", 1, False), (72, 4096, "15B", 2, False)]


@pytest.mark.parametrize("layers, hidden, size, zero, fits", VERDICTS)
@pytest.mark.parametrize("micro_batch", [1, 4])
def test_largest_model_without_model_parallelism(layers, hidden, size, zero, fits, micro_batch):
    assert _fits(layers, hidden, zero, micro_batch) is fits


@pytest.mark.xfail(strict=True, reason="measured 23.0 TFLOP/s per GPU (9.2 PFLOP/s on 400) vs the paper's 38 (15.2 PF): "
                                       "-39%; 5.2 s of the 9.1 s step is the exposed ZeRO-2 reduce-scatter/all-gather of "
                                       "the 6.3B-parameter tp slice over 8 NICs shared by 16 GPUs")
def test_100b_on_400_v100s_at_15_petaflops():
    model = make_model("zero-100b", layers=125, hidden=8192, heads=64, seq_len=1024, vocab=50257)
    layout = Layout(tp=16, dp=25, zero=2, framework="deepspeed", dtype="fp16", recompute="full", micro_batch=4,
                    global_batch=100)
    result = simulate(model, layout, V100)
    assert result["fits"]
    aggregate = result["hfu"] * V100_FP16_PEAK * layout.gpus
    assert aggregate == pytest.approx(15e15, rel=0.15)
