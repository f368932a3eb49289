"""MoE acceptance figures: DeepSeek-V3's reported pre-training cost and Megatron-Bridge's published MoE
throughput. Tolerances are the issue's (20% and 15%); nothing here is fitted to these figures."""

import numpy as np
import pytest

from planner.cost.estimate import estimate
from planner.cost.goodput import goodput
from planner.specs.clusters import load_cluster
from planner.specs.candidate_batch import single_batch
from planner.specs.layout import make_layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import PRESETS
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
    layers); gradient reduction overlapped; dropless routing balanced (imbalance 1.0). The MTP module (one
    more MoE block and pass of the output head, section 2.2) is on the last stage, which DualPipe runs on rank 0
    beside the first (section 3.2.3)."""
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
    figure is wall-clock GPU-hours). Measured: 2.65M GPU-hours, -0.6% (2.68M, +0.6%, before each stage held its own MoE
    layers, cost.stages.stage_moe_layers: the rank DualPipe pairs with the last holds the three dense layers; 2.66M, -0.2%, before the MTP block's 2h -> h
    projection was priced; 2.67M, +0.4%, at the assumed 0.75 link
    efficiencies before the nccl-tests-derived ones, cluster_specs/h800-deepseek.yaml; unchanged when the MTP block moved to
    the last stage with its second output-layer pass, which DualPipe's pairing of stage 0 and 15 on one rank halves;
    without DualPipe that last stage paces the step: 4.23M, 3.58M before); 2.60M, -2.4%, before the output head was
    priced in bf16; 2.46M, -7.6%, before the per-accelerator GEMM ceilings of docs/gemm_ceiling.md)."""
    model, cluster = PRESETS["deepseek-v3"], load_cluster("h800-deepseek")
    layout = deepseek_report_layout()
    check_layout(model, layout, gpus=DEEPSEEK_GPUS)
    hours, result = _gpu_hours(model, layout, cluster)
    assert hours == pytest.approx(DEEPSEEK_GPU_HOURS, rel=0.20)
    # DualPipe hides the all-to-all the plain schedule exposes.
    plain, _ = _gpu_hours(model, deepseek_report_layout(moe_a2a_overlap="none"), cluster)
    assert plain > hours


def test_deepseek_v3_report_layout_fits():
    """Measured 73.7 GiB of the H800's 79.65 (76.7 before each stage held its own MoE layers: the paired end rank
    holds the three dense layers): it fits only with DeepSeek's fp8 storage of the expert activations
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
    """With DeepSeek's stack ('other': DualPipe, node-limited fp8 dispatch and activation storage) and the report's
    batch, the fixed-model search lands on the report's own layout, tp1 pp16 dp128 ZeRO-1 ep64 DualPipe: measured
    2.481M GPU-hours (-6.9%) on 2026-12-07, as examples/07 prints (2.558M, -4.0%, when this was written; 2.562M before
    that session's activation changes, 2.821M without the report's batch). It chose ep128 and ep256 (2.279M, -14.5%; 2.478M, -7.0%, at the last of the output
    head in bf16, the MTP block on the last stage and its projection) while each expert group counted as one node
    at any ep: at ep 256 a group of 32 experts spans 4 nodes, so node-limited routing saves nothing there
    (cost.moe._inter_node_bytes); at ep 64 a group is a node, the report's "64-way EP over 8 nodes"."""
    plan = plan_fixed_model(PRESETS["deepseek-v3"], load_cluster("h800-deepseek"), [DEEPSEEK_GPUS],
                            tokens=DEEPSEEK_TOKENS, dtype="fp8", frameworks=("other",), global_batch=15360)
    row = plan.chosen.row
    assert (row["tp"], row["pp"], row["zero"], row["ep"], row["moe_a2a_overlap"]) == (1, 16, 1, 64, "dualpipe")
    assert plan.chosen.gpu_hours == pytest.approx(DEEPSEEK_GPU_HOURS, rel=0.20)


@pytest.mark.slow
def test_optimize_deepseek_v3_gpu_hours_within_20_percent():
    """planner optimize --model deepseek-v3 --tokens 14.8T --gpus 2048 --cluster h800-deepseek --dtype fp8.
    Measured 3.134M GPU-hours, +17.7%: Megatron-Core tp4 pp8 vpp2 dp64 z1 ep64 with its all-to-all overlap and the
    flex dispatcher on DeepEP, the last rank 5 layers beside the MTP block and the loss (layers 8|..|5, its two chunks
    4 and 1), global batch 4,672. It was 3.064M (+15.0%) on vpp 4 while unequal chunks were priced at the fullest
    rank's total: that plan's last rank, dealt 2, 1, 1, 1, ran 16% slower in the event simulation of Megatron-Core's
    schedule (step_time.interleaved_steady_slot). 3.056M (+14.7%) before the twenty-sixth session's pipeline and
    MoE-copy changes; 2.957M (+11.0%) before each stage held its own MoE layers (the middle ranks hold MoE layers
    only, cost.stages.stage_moe_layers). It was 3.209M (+20.4%, an xfail; tp4 pp4 vpp8 dp128 at 4,736) while the search split the layers only as
    Megatron does without a layout string: the last rank, with the MTP block and two output-layer passes, paced the
    step. The search now also tries the last rank lighter (pipeline_stages.lighter_last_splits), as NVIDIA's
    DeepSeek-V3 recipes split it (16/16/16/13 on pp 4 x vpp 2). While the fp8 accounting also saved the norm
    outputs that MLA's and the MoE layers' separate norms keep in 16 bits, the search fitted tp4 pp2 vpp16 and passed
    at 3.187M (+19.6%); the review of that change found the over-saving. Megatron's all-to-all overlap needs an interleaved
    pipeline, and the search tried vpp only where pp x vpp divides DeepSeek-V3's 61 layers (never), so it ran pp 1
    (tp4 pp1 dp512 ep256: 3.402M, +27.7%) until it tried the uneven interleaved splits Megatron runs by layout
    string, as NVIDIA's own recipe does (pipeline_stages.interleavings). The Megatron MoE rows below are predicted
    1.3x faster than published, so this figure is more likely low than high.
    Measured before the dispatch fix (while it passed for the wrong reasons the seventeenth session fixed): megatron tp4 pp1 dp512 z1 mb1 ep256 with the batch-level a2a overlap, 2.694M GPU-hours, +1.1% of
    2.664M (2.691M before the MTP projection was priced; z2 mb2, 2.514M, -5.6%, before the overlap's unpaired first forward and last backward were priced; tp2
    cp2, 2.457M, -7.8%, before the MTP block's second pass of the output layer was charged; 2.325M before the per-accelerator GEMM ceilings with the fp8 ratio, 2.207M before Megatron's fp8
    padding copies and host sync were modelled), on the optimistic side
    (the cost model is optimistic for Megatron MoE layers, see test_megatron_bridge_qwen3_30b_a3b_h100_tokendrop)."""
    plan = plan_fixed_model(PRESETS["deepseek-v3"], load_cluster("h800-deepseek"), [DEEPSEEK_GPUS],
                            tokens=DEEPSEEK_TOKENS, dtype="fp8")
    assert plan.chosen is not None
    assert plan.chosen.gpu_hours == pytest.approx(DEEPSEEK_GPU_HOURS, rel=0.20)
    row = plan.chosen.row  # an uneven interleaved pipeline: 61 layers over pp x vpp that does not divide them
    assert row["pp"] > 1 and row["vpp"] > 1 and 61 % (row["pp"] * row["vpp"]) != 0
    assert row["last_stage_layers"] is not None  # a lighter last rank than Megatron's own split gives


# Megatron-Bridge's own performance pages (NVIDIA-NeMo/Megatron-Bridge docs/performance-summary.md@00b7660b,
# 25.11 NeMo container; earlier releases in docs/performance-summary-archive.md). The layouts are the tables';
# everything else is the recipe that produced them, cited by file and line. "we force-balance the token
# distribution among experts and all benchmarks are token-dropless" (imbalance 1.0).


def _per_gpu(model, cluster, gpus, **values):
    layout = make_layout(**values)
    check_layout(model, layout, gpus=gpus)
    result = estimate(single_batch(model, layout), cluster)
    return float(result.time["tokens_per_s"][0]) / gpus, result


# 25.11, DGX-H100: Qwen3_30B_a3B, 16 GPUs, FP8-CS, GBS 512, MBS 2, seq 4096, TP1 PP2 CP1 VP24 EP8, GA 32:
# 5,275 tokens/s/GPU (121 model TFLOP/s/GPU). Recipe (Megatron-Bridge v0.2.0, the 25.11 release):
# scripts/performance/configs/qwen3/workload_base_configs.py:233-239 (moe_a2a_overlap=True: utils/helpers.py:
# 182-186 sets overlap_moe_expert_parallel_comm + delay_wgrad_compute; its VP 12 and default MBS 1 disagree
# with the table, whose GA 32 needs MBS 2: the table's layout is kept); qwen3_llm_pretrain.py:33-47 (no
# recompute, router fusion, grad_reduce_in_fp32=False, force-balanced); utils/helpers.py:37-41 FP8-CS =
# bf16_with_fp8_current_scaling_mixed, which sets fp8_param_gather (src/megatron/bridge/training/
# mixed_precision.py:289); recipes/qwen/qwen3_moe.py:305-318 (distributed optimizer, overlapped grad reduce and
# param gather); models/qwen/qwen_provider.py:390-396 (aux-loss router, grouped GEMM, alltoall dispatcher,
# permute fusion). The maintainers call this figure a regression: "the perf in 25.11 is 2X slower than 25.09",
# dropless against token-drop (NVIDIA-NeMo/Megatron-Bridge issue #1998); 25.09 measured 10,494 on the same
# layout (below), later releases ~9,000 (26.02.01: 9,058; 26.04.01: 8,960, with other layouts).
# The loss is Transformer Engine's fused cross-entropy: GPTModelProvider's cross_entropy_loss_fusion True
# (src/megatron/bridge/models/gpt_provider.py:180 at v0.2.0, :152 at v0.1.0rc4), impl "te" (scripts/performance/
# utils/helpers.py:108, recipes/qwen/qwen3_moe.py:287; v0.1.0rc4's qwen3_30b_a3b_llm_pretrain.yaml:17), with TE 2.9
# (v0.2.0 uv.lock) / 2.6 (v0.1.0rc4): loss_fusion, 2 bytes per logit (frameworks/megatron.py).
QWEN3_H100_TOKENS_PER_S_PER_GPU = 5275


def qwen3_h100_recipe(**overrides):
    values = dict(tp=1, pp=2, vpp=24, dp=8, ep=8, micro_batch=2, global_batch=512, dtype="fp8",
                  framework="megatron", zero=1, dp_comm_overlap=True, moe_a2a_overlap="megatron",
                  grad_reduce_in_fp32=False, fp8_param_gather=True, fp8_recipe="tensorwise", loss_fusion=True)
    values.update(overrides)
    return values


@pytest.mark.xfail(strict=True, reason="measured 12,857 tokens/s/GPU with its current scaling (12,939 before the pipeline's fill and drain ran at each stage's own speed and the overlapped sends paid the fill; 12,897 before the activations dropped the dropout masks this dropout-free model does not make: its memory-bound passes are shorter; 11,808 before the overlap's SM share was charged only while its all-to-all runs, 11,945 before the overlap's warm-up and cool-down ran alone, 12,240 before the output head was priced in bf16, 12,739 priced as delayed, 13,815 before Megatron's second permutation was priced), 2.4x the published 5,275, a figure its maintainers "
                   "report as a 2x regression (Megatron-Bridge issue #1998); the counted MoE launches, the per-layer "
                   "host sync and the fp8 padding copies are in the cost model and explain little of it")
def test_megatron_bridge_qwen3_30b_a3b_h100():
    per_gpu, _ = _per_gpu(PRESETS["qwen3-30b-a3b"], load_cluster("dgx-h100"), 16, **qwen3_h100_recipe())
    assert per_gpu == pytest.approx(QWEN3_H100_TOKENS_PER_S_PER_GPU, rel=0.15)


def test_megatron_bridge_qwen3_30b_a3b_h100_fits():
    """It ran on 80 GB H100s. Measured 73.1 GiB of 79.6 (it was 87 GiB; 77.2 when every stack's loss was charged the
    fp32 logits alone, 4 bytes per logit; 75.5 while its layers kept dropout masks the dropout-free model does not
    make and 16-bit inputs of the dense GEMMs where TE keeps fp8 ones): the recipe's fp8 parameters (no bf16 weight
    copy), Megatron + TE keeping the GEMM inputs in fp8 (frameworks/megatron.py, frameworks/moe.py) and TE's fused
    cross-entropy, which writes the gradient into the bf16 logits (2 bytes per logit). With bf16 expert activations
    (81.5 GiB) it would not fit; bf16 weights beside the fp8 ones cost 4.2 GiB (77.4) and Megatron's unfused loss, 6
    bytes per logit, 4.9 GiB (78.0): both fit (the unfused loss did not, 80.4, under the earlier count)."""
    model, cluster = PRESETS["qwen3-30b-a3b"], load_cluster("dgx-h100")
    _, result = _per_gpu(model, cluster, 16, **qwen3_h100_recipe())
    assert bool(result.memory["fits"][0])
    _, bf16_weights = _per_gpu(model, cluster, 16, **qwen3_h100_recipe(fp8_param_gather=False))
    assert bf16_weights.memory["total_bytes"][0] > result.memory["total_bytes"][0] + 4 * 2**30
    moe_bytes = result.memory["parts"]["moe_activations"][0]
    bf16_moe = moe_bytes * (2 * 2048 + 6 * 768) / (2048 + 5 * 768)  # routed rows' bytes, T·k·(2h + 6f) vs (h + 5f)
    assert result.memory["total_bytes"][0] - moe_bytes + bf16_moe > result.memory["hbm_bytes"][0]
    _, unfused_loss = _per_gpu(model, cluster, 16, **qwen3_h100_recipe(loss_fusion=False))
    assert unfused_loss.memory["total_bytes"][0] > result.memory["total_bytes"][0] + 4 * 2**30


# 25.09, DGX-H100 (archive): Qwen3_30B_a3B (tokendrop), 16 GPUs, GBS 512, MBS 2, seq 4096, TP1 PP2 CP1 VP24 EP8,
# GA 32: 10,494 tokens/s/GPU. Recipe (Megatron-Bridge v0.1.0rc4): scripts/performance/configs/qwen3/
# qwen3_30b_a3b_llm_pretrain.yaml (no recompute, router fusion, grad_reduce_in_fp32 false; h100 fp8_cs: mbs 2,
# vp 12, no CUDA graphs), run_script.py:103-109 (apply_moe_token_drop: capacity factor 1.0 padded to capacity,
# training/utils/moe_token_drop.py), utils/helpers.py:97-101 + training/mixed_precision.py:268 (FP8-CS with
# fp8_param_gather). No expert-parallel overlap.
QWEN3_H100_TOKENDROP_TOKENS_PER_S_PER_GPU = 10494


def test_megatron_bridge_qwen3_30b_a3b_h100_tokendrop():
    """Issue 17's published MoE throughput within 15%. Measured 11,848 tokens/s/GPU, +12.9% of 10,494 (11,686, +11.4%, at the
    assumed 0.75 link efficiencies before the measured ones, cluster_specs/dgx-h100.yaml; 11,968, +14.0%, before
    the output head was priced in bf16, which every stack keeps it in), with the
    recipe's per-tensor current scaling (FP8-CS: an amax pass before every fp8 cast, TE quantizer.cpp
    Float8CurrentScalingQuantizer::quantize_impl); 12,385 (+18.0%) when it was priced as delayed scaling, 13,268
    (+26.4%) before Megatron's second permutation of the received tokens by local expert."""
    per_gpu, _ = _per_gpu(PRESETS["qwen3-30b-a3b"], load_cluster("dgx-h100"), 16,
                          **qwen3_h100_recipe(moe_a2a_overlap="none", moe_capacity_factor=1.0,
                                              moe_pad_to_capacity=True))
    assert per_gpu == pytest.approx(QWEN3_H100_TOKENDROP_TOKENS_PER_S_PER_GPU, rel=0.15)


# 25.11, DGX-B200: DeepSeekV3, 256 GPUs, FP8-MX, GBS 2048, MBS 1, seq 4096, TP1 PP16 CP1 VP1 EP8, GA 128:
# 2,139 tokens/s/GPU (557 model TFLOP/s/GPU); 25.09 measured 2,265 (token-drop) on the same layout. Recipe
# (Megatron-Bridge v0.2.0): configs/deepseek/workload_base_configs.py:63-71 (no expert-parallel overlap,
# recompute_modules=["mla_up_proj"]: not modelled), deepseek_llm_pretrain.py:31-43, 142 (router fusion,
# grad_reduce_in_fp32=False, force-balanced, overlapped grad reduce), MXFP8 = bf16_with_mxfp8_mixed with
# fp8_param_gather (training/mixed_precision.py:242-253; priced as the spec's fp8 peak), models/deepseek/
# deepseek_provider.py:74-79 (grouped GEMM, alltoall dispatcher, fp32 router: priced as the model dtype),
# :113-114 (TE's fused cross-entropy: loss_fusion).
# The recipe places the MTP layer on the last stage beside one transformer layer, the first stage holding 4 and the
# embedding (recipes/deepseek/deepseek_v3.py@v0.2.0, layout_map[(16, 1)]): the layout below sets that split
# (first_stage_layers 4, last_stage_layers 1). Megatron's own split without a layout string (3 | 4 x 14 | 2, the MTP
# block after the last 2) gives 2,771 tokens/s/GPU (1.30x): its last stage paces the step.
DEEPSEEK_B200_TOKENS_PER_S_PER_GPU = 2139


@pytest.mark.xfail(strict=True, reason="measured 3,338 tokens/s/GPU, 1.56x the published 2,139, on the recipe's split (first rank 4 layers, last 1 and the MTP block; 3,307 before the pipeline's fill and drain ran at each stage's own speed; 3,390 before each stage held its own MoE layers, cost.stages.stage_moe_layers); 2,771, 1.30x, on Megatron's own split before the layout set the recipe's (2,768 before the activations dropped the dropout masks the model does not make; 2,777 before the MTP embedding copy's gradient sum with the first stage's was priced, embedding_sync; 2,809 before the MTP projection was priced, 3,535 before the MTP block and its second output-layer pass sat on the last stage, 3,479 at the assumed 0.75 link efficiencies before the measured ones, cluster_specs/dgx-b200.yaml; 3,589 before the output head was priced in bf16, 3,748 before the second permutation); the same page's dense "
                   "Llama3.1-405B FP8 B200 row (661) was predicted +26% before the MAMF GEMM ceilings (not a test here)")
def test_megatron_bridge_deepseek_v3_b200():
    per_gpu, _ = _per_gpu(PRESETS["deepseek-v3"], load_cluster("dgx-b200"), 256, tp=1, pp=16, dp=16, ep=8,
                          micro_batch=1, global_batch=2048, dtype="fp8", framework="megatron", zero=1,
                          dp_comm_overlap=True, grad_reduce_in_fp32=False, fp8_param_gather=True, loss_fusion=True,
                          first_stage_layers=4, last_stage_layers=1)
    assert per_gpu == pytest.approx(DEEPSEEK_B200_TOKENS_PER_S_PER_GPU, rel=0.15)


# Megatron-Core's MoE page (NVIDIA/Megatron-LM@0b981f9c megatron/core/transformer/moe/README.md:3, 297-312):
# "Mixtral 8X7B bf16 training to achieve 438 TFLOPS as of MCore v0.8" and, in the same revision, the reference
# mapping of MCore v0.8 on 8xH100 nodes (NVLink 4, 8x400 Gb/s IB): dropless, all-to-all dispatcher, BF16,
# 64 GPUs, seq 4096, TP1 EP8 PP4 VP8 MBS1 GBS256. Assumed where it is silent: that the 438 TFLOPS were measured
# with that mapping; its example script's distributed optimizer with overlapped gradient reduce and parameter
# gather (README.md:201-209, and the tuning advice at :289); no recompute; balanced routing (imbalance 1.0).
# Megatron counts model FLOPs per token as 12·L·h²·[(1 + g/a + s/h) + (f/h)·k·3/2 + V/(2·L·h)] (core_r0.8.0 megatron/training/
# training.py:73-108): 82.93 GFLOP, so 438 TFLOP/s is 5,282 tokens/s/GPU.
# Ruled out as the cause of the gap: the expert GEMM kernels. At EP8 each rank holds one of the 8 experts, so the
# grouped GEMM is one GEMM of ~8,192 routed rows per layer and micro-batch, and both of v0.8's grouped paths run
# it in cuBLAS (Hopper-native), not in grouped_gemm's CUTLASS Sm80 kernel (frameworks/moe.py, "Expert GEMM
# kernels"); the README's benchmark image has TE v1.9 (README.md:312 at 0b981f9c), so MCore v0.8 picks TEGroupedMLP; it
# advises grouped GEMM "when num_local_experts>1" (:293-295).
MIXTRAL_MEGATRON_FLOPS_PER_TOKEN = 12 * 32 * 4096**2 * ((1 + 8 / 32 + 4096 / 4096) + 14336 / 4096 * 2 * 1.5
                                                       + 32000 / (2 * 32 * 4096))
MIXTRAL_H100_TOKENS_PER_S_PER_GPU = 438e12 / MIXTRAL_MEGATRON_FLOPS_PER_TOKEN


@pytest.mark.xfail(strict=True, reason="measured 6,692 tokens/s/GPU (554 Megatron TFLOP/s), +26.7% of the published "
                   "438 TFLOP/s = 5,282 tokens/s/GPU (6,807, +28.9%, before interleaving's overlapped sends paid the pipeline's fill and drain; 6,791, +28.6%, with dropout masks the model does not make; 6,770, +28.2%, at the assumed 0.75 link efficiencies, cluster_specs/dgx-h100.yaml)")
def test_megatron_core_mixtral_8x7b_h100():
    per_gpu, _ = _per_gpu(PRESETS["mixtral-8x7b"], load_cluster("dgx-h100"), 64, tp=1, pp=4, vpp=8, dp=16, ep=8,
                          micro_batch=1, global_batch=256, dtype="bf16", framework="megatron", zero=1,
                          dp_comm_overlap=True)
    assert per_gpu == pytest.approx(MIXTRAL_H100_TOKENS_PER_S_PER_GPU, rel=0.15)
