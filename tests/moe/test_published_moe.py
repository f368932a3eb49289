"""MoE acceptance figures: DeepSeek-V3's reported pre-training cost and Megatron-Bridge's published MoE
throughput. Tolerances are the issue's (20% and 15%); nothing here is fitted to these figures."""

import numpy as np
import pytest

from planner.cost.estimate import estimate
from planner.cost.goodput import goodput
from planner.hardware import load_cluster
from planner.layout import check_layout, make_layout, single_batch
from planner.model import PRESETS
from planner.search.fixed_model import plan_fixed_model

# DeepSeek-V3 technical report (arXiv:2412.19437), Table 1: pre-training 2,664K H800 GPU-hours for 14.8T
# tokens on 2,048 H800 GPUs (section 3.1).
DEEPSEEK_GPU_HOURS = 2.664e6
DEEPSEEK_TOKENS = 14.8e12
DEEPSEEK_GPUS = 2048


def deepseek_report_layout(**overrides):
    """The report's layout (section 3.2): 16-way PP, 64-way EP over 8 nodes, ZeRO-1 DP (2048 / 16 = 128),
    no TP, DualPipe, FP8 mixed precision. Assumed where the report is silent: micro-batch 1; the final
    batch of 15,360 sequences of 4K (section 4.2; the ramp from 3,072 over the first 469B tokens is left
    out); selective recompute (section 3.2.3 recomputes RMSNorm and the MLA up-projections, not whole
    layers); gradient reduction overlapped; dropless routing balanced (imbalance 1.0); the MTP module
    (one more MoE block and output head, section 2.2) is not simulated."""
    values = dict(tp=1, pp=16, dp=128, ep=64, micro_batch=1, global_batch=15360, zero=1, dtype="fp8",
                  recompute="selective", framework="other", dp_comm_overlap=True, moe_a2a_overlap="dualpipe")
    values.update(overrides)
    return make_layout(**values)


def _gpu_hours(model, layout, cluster):
    result = estimate(single_batch(model, layout), cluster)
    tokens_per_s = float(result.time["tokens_per_s"][0])
    fraction = float(goodput(np.array([model.total_params]), np.array([DEEPSEEK_GPUS]), cluster)["goodput"][0])
    return DEEPSEEK_TOKENS / (tokens_per_s * fraction) * DEEPSEEK_GPUS / 3600.0, result


def test_deepseek_v3_report_layout_gpu_hours_within_20_percent():
    """The report's own layout, simulated on the h800-deepseek spec, with the planner's goodput (the report's
    figure is wall-clock GPU-hours). Measured: 2.46M GPU-hours (2.19M before goodput), -7.6%."""
    model, cluster = PRESETS["deepseek-v3"], load_cluster("h800-deepseek")
    layout = deepseek_report_layout()
    check_layout(model, layout, gpus=DEEPSEEK_GPUS)
    hours, result = _gpu_hours(model, layout, cluster)
    assert hours == pytest.approx(DEEPSEEK_GPU_HOURS, rel=0.20)
    # DualPipe hides the all-to-all the plain schedule exposes.
    plain, _ = _gpu_hours(model, deepseek_report_layout(moe_a2a_overlap="none"), cluster)
    assert plain > hours


def test_deepseek_v3_report_layout_fits():
    """Measured 76.1 GiB of the H800's 79.65: it fits only with DeepSeek's fp8 storage of the expert activations
    (section 3.3.2, frameworks/moe.py); in bf16 storage the experts alone would need 47 GiB (104 GiB in all).
    Its norm and MLA up-projection recomputation and BF16 Adam moments are not modelled."""
    model, cluster = PRESETS["deepseek-v3"], load_cluster("h800-deepseek")
    memory = estimate(single_batch(model, deepseek_report_layout()), cluster).memory
    assert bool(memory["fits"][0])
    def kept(**overrides):
        layout = deepseek_report_layout(framework="megatron", moe_a2a_overlap="none", **overrides)
        return estimate(single_batch(model, layout), cluster).memory["parts"]["moe_activations"][0]

    deepseek = memory["parts"]["moe_activations"][0]
    # 16-bit storage (2h + 6f bytes per routed row) against DeepSeek's fp8 (h + 2f); Megatron + TE in fp8 keeps
    # the quantised GEMM inputs and the 16-bit SwiGLU input (h + 4f + f) in between.
    assert kept(dtype="bf16") > 2.0 * deepseek
    assert deepseek < kept() < kept(dtype="bf16")


@pytest.mark.slow
def test_search_on_deepseeks_stack_finds_a_dualpipe_pipeline():
    """With DeepSeek's stack ('other': DualPipe, fp8 dispatch and activation storage) and the report's batch,
    the fixed-model search lands near the report's own layout: measured tp1 pp16 dp128 ZeRO-1 ep128 DualPipe
    (the report: ep64), 2.279M GPU-hours (-14.5%)."""
    plan = plan_fixed_model(PRESETS["deepseek-v3"], load_cluster("h800-deepseek"), [DEEPSEEK_GPUS],
                            tokens=DEEPSEEK_TOKENS, dtype="fp8", frameworks=("other",), global_batch=15360)
    row = plan.chosen.row
    assert (row["tp"], row["pp"], row["zero"], row["moe_a2a_overlap"]) == (1, 16, 1, "dualpipe")
    assert plan.chosen.gpu_hours == pytest.approx(DEEPSEEK_GPU_HOURS, rel=0.20)


@pytest.mark.slow
def test_optimize_deepseek_v3_gpu_hours_within_20_percent():
    """planner optimize --model deepseek-v3 --tokens 14.8T --gpus 2048 --cluster h800-deepseek --dtype fp8.
    Measured: megatron tp2 pp1 cp2 dp512 z2 ep256 with the batch-level a2a overlap, 2.144M GPU-hours, -19.5%
    of 2.664M: at the edge of the tolerance, and on the optimistic side (the cost model is optimistic for MoE
    layers, see test_megatron_bridge_qwen3_30b_a3b_h100)."""
    plan = plan_fixed_model(PRESETS["deepseek-v3"], load_cluster("h800-deepseek"), [DEEPSEEK_GPUS],
                            tokens=DEEPSEEK_TOKENS, dtype="fp8")
    assert plan.chosen is not None
    assert plan.chosen.gpu_hours == pytest.approx(DEEPSEEK_GPU_HOURS, rel=0.20)


# Megatron-Bridge performance summary, 25.11 NeMo container, DGX-H100 table (NVIDIA-NeMo/Megatron-Bridge
# docs/performance-summary.md@00b7660b; docs.nvidia.com/nemo/megatron-bridge/latest/performance-summary.html):
# Qwen3_30B_a3B, 16 GPUs, FP8-CS, GBS 512, MBS 2, seq 4096, TP1 PP2 CP1 VP24 EP8, GA 32: 5,275 tokens/s/GPU
# (121 model TFLOP/s/GPU). "we force-balance the token distribution among experts and all benchmarks are
# token-dropless" (imbalance 1.0). Assumed: distributed optimizer (ZeRO-1) with overlapped gradient reduce
# and parameter gather (the NeMo performance recipes' default), no recompute.
QWEN3_H100_TOKENS_PER_S_PER_GPU = 5275


@pytest.mark.xfail(strict=True, reason="measured 13,826 tokens/s/GPU, 2.6x the published 5,275 (and 87 GiB, not "
                   "fitting 80 GB): MoE-layer overheads (per-expert GEMM launches of TE's grouped linear, "
                   "permutation kernels, router auxiliary losses, host-side dispatch) are not in the cost model")
def test_megatron_bridge_qwen3_30b_a3b_h100():
    model, cluster = PRESETS["qwen3-30b-a3b"], load_cluster("dgx-h100")
    layout = make_layout(tp=1, pp=2, vpp=24, dp=8, ep=8, micro_batch=2, global_batch=512, dtype="fp8",
                         framework="megatron", zero=1, dp_comm_overlap=True)
    check_layout(model, layout, gpus=16)
    result = estimate(single_batch(model, layout), cluster)
    per_gpu = float(result.time["tokens_per_s"][0]) / 16
    assert per_gpu == pytest.approx(QWEN3_H100_TOKENS_PER_S_PER_GPU, rel=0.15)


# The same page and release, DGX-B200 table: DeepSeekV3, 256 GPUs, FP8-MX, GBS 2048, MBS 1, seq 4096,
# TP1 PP16 CP1 VP1 EP8, GA 128: 2,139 tokens/s/GPU (557 model TFLOP/s/GPU). FP8-MX (MXFP8 block scaling)
# is priced as the spec's fp8 peak; otherwise assumed as the H100 row.
DEEPSEEK_B200_TOKENS_PER_S_PER_GPU = 2139


@pytest.mark.xfail(strict=True, reason="measured 3,921 tokens/s/GPU, 1.8x the published 2,139: the same MoE-layer "
                   "overheads as the Qwen3 row")
def test_megatron_bridge_deepseek_v3_b200():
    model, cluster = PRESETS["deepseek-v3"], load_cluster("dgx-b200")
    layout = make_layout(tp=1, pp=16, dp=16, ep=8, micro_batch=1, global_batch=2048, dtype="fp8",
                         framework="megatron", zero=1, dp_comm_overlap=True)
    check_layout(model, layout, gpus=256)
    result = estimate(single_batch(model, layout), cluster)
    per_gpu = float(result.time["tokens_per_s"][0]) / 256
    assert per_gpu == pytest.approx(DEEPSEEK_B200_TOKENS_PER_S_PER_GPU, rel=0.15)
