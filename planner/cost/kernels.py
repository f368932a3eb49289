"""Kernel-level costs from published microbenchmarks: attention efficiency, launch floor, fp8 casts.

Pure numpy functions; every argument may be an array of candidates (scalars are size-1 arrays). Every
number here benchmarks a kernel in isolation (a paper figure, a README table, a source file); none is
fitted to training-run step times. docs/kernels.md lists the figures and the derivation rules.

1. flash_attention_efficiency: achieved fraction of the benchmark GPU's dense 16-bit peak for an
   attention kernel, by head dim, sequence length, causal mask and direction. FLOP convention of the
   FlashAttention benchmark scripts (flash-attention `benchmarks/benchmark_flash_attention.py` `flops`):
   forward 4·batch·s²·heads·head_dim, halved when causal (masked blocks are not counted), backward
   2.5x the forward (5 GEMMs against 2). `attention_flops` implements it; divide by efficiency·peak.
2. Launch floor: a layer's pass cannot finish before the host has issued its kernels (MoE layers: their
   router, dispatch and per-expert kernels, counted in MOE_*_KERNELS).
3. FP8: the fraction of fp8 peak a large fp8 GEMM reaches and the HBM bytes its operand casts move.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# ---------------------------------------------------------------------------------------------
# 1. Attention
# ---------------------------------------------------------------------------------------------


class AttentionKernel(NamedTuple):
    name: str
    gpu: str
    peak_flops_per_s: float  # dense fp16/bf16 datasheet peak of the benchmark GPU (REFERENCE.md table)
    source: str


A100_PEAK_FLOPS = 312e12
H100_PEAK_FLOPS = 989e12
FA2 = "Dao 2023, arXiv 2307.08691"
FA3 = "Shah et al. 2024, arXiv 2407.08608"
ATTENTION_KERNELS = (
    AttentionKernel("unfused", "a100", A100_PEAK_FLOPS, f"{FA2} Fig. 4 'Pytorch' (fwd+bwd only)"),
    AttentionKernel("flash2", "a100", A100_PEAK_FLOPS, f"{FA2} Fig. 4 (fwd+bwd only)"),
    AttentionKernel("flash2", "h100", H100_PEAK_FLOPS, f"{FA3} Figs. 5-6 'FlashAttention-2'"),
    AttentionKernel("flash3", "h100", H100_PEAK_FLOPS, f"{FA3} Figs. 5-6 'FlashAttention-3'"),
    AttentionKernel("cudnn", "h100", H100_PEAK_FLOPS, f"{FA3} Figs. 5-6 'cuDNN'"),
    AttentionKernel("unfused", "h100", H100_PEAK_FLOPS, f"{FA3} Figs. 5-6 'Standard attention'"),
    # The FlashAttention Triton kernel (flash_attn/flash_attn_triton.py on triton 2.0.0.dev20221202, which
    # llm-foundry copies as `attn_impl: triton`, llmfoundry/models/layers/flash_attn_triton.py).
    AttentionKernel("triton", "a100", A100_PEAK_FLOPS, f"{FA2} Fig. 4 'FlashAttention Triton' (fwd+bwd only)"),
    AttentionKernel("triton", "h100", H100_PEAK_FLOPS,
                    f"derived: {FA2} Fig. 7 'FlashAttention' x Fig. 4 'FlashAttention Triton'/'FlashAttention'"),
)
(UNFUSED_A100, FLASH2_A100, FLASH2_H100, FLASH3_H100, CUDNN_H100, UNFUSED_H100,
 TRITON_A100, TRITON_H100) = range(len(ATTENTION_KERNELS))
DIRECTIONS = ("forward", "backward")
FORWARD, BACKWARD = 0, 1
BACKWARD_FLOPS_RATIO = 2.5  # 5 GEMMs (dV, dP, dS->dQ, dK, recompute S) against the forward's 2

# Every figure's x axis (batch = 16k tokens / seq_len, hidden 2048); head dims on a log2 grid too.
SEQ_LENS = (512, 1024, 2048, 4096, 8192, 16384)
HEAD_DIMS = (64, 128, 256)

# Published TFLOP/s: [no causal mask, causal] x [head dim 64, 128, 256] x SEQ_LENS. `_` = not published
# (OOM, or no such panel). Values are the figures' bar labels; two labels hidden by the legend were
# digitised from bar height (marked *, about +-2%).
_ = np.nan
_NONE = [_] * 6
# Kernels published fwd+bwd only. Dao 2023 Fig. 4 = flash-attention README asset
# flash2_a100_fwd_bwd_benchmark.png (A100 80GB SXM4); the H100 Triton row is derived (below).
_FWD_BWD_ONLY = {
    UNFUSED_A100: [[[36, 40, 43, 45, 46, _], [53, 67, 76, 79, 86, _], _NONE],
                   [[15, 16, 17, 18, 18, _], [23, 28, 32, 32, 34, _], _NONE]],
    FLASH2_A100: [[[132, 153, 162, 171, 175, 176], [151, 173, 187, 196, 201, 203], _NONE],  # 151*
                  [[88, 119, 140, 156, 165, 171], [99, 133, 155, 173, 182, 189], _NONE]],
    TRITON_A100: [[[90, 102, 98, 98, 100, 100], [78, 85, 90, 93, 95, 95], _NONE],
                  [[59, 75, 79, 76, 79, 80], [50, 61, 68, 74, 78, 80], _NONE]],
}
# FlashAttention (v1, CUDA) fwd+bwd in the same figures: Dao 2023 Fig. 4 (A100) and Fig. 7 (H100 80GB SXM5,
# README asset flash2_h100_fwd_bwd_benchmark.png), [no mask, causal] x [hd 64, hd 128] x SEQ_LENS.
FLASH1_FWD_BWD_ONLY = [[[91, 92, 104, 108, 110, 110], [76, 72, 76, 80, 82, 83]],
                       [[58, 70, 77, 87, 92, 97], [55, 62, 69, 76, 80, 83]]]
FLASH1_H100_FWD_BWD = [[[157, 159, 161, 161, 166, 168], [127, 127, 128, 131, 137, 139]],
                       [[104, 123, 136, 138, 149, 156], [98, 109, 108, 126, 135, 137]]]


def _triton_h100_fwd_bwd() -> list:
    """The Triton kernel on H100 has no published benchmark. Both it (Triton 2.0 pre-MLIR, Ampere mma.sync
    code; llm-foundry builds it for sm90 from vchiley/triton@triton_pre_mlir_sm90, setup.py at
    mosaicml/llm-foundry@b2a43a1) and FlashAttention v1 predate Hopper's wgmma, and the kernel's docstring
    says its "forward + backward is slightly slower than CUDA" FlashAttention. Derived: FA1's H100 figure
    times the Triton/FA1 ratio both reach on A100 (Fig. 4), point by point."""
    triton = np.array(_FWD_BWD_ONLY[TRITON_A100][0][:2] + _FWD_BWD_ONLY[TRITON_A100][1][:2], dtype=float)
    ratio = triton.reshape(2, 2, -1) / np.array(FLASH1_FWD_BWD_ONLY, dtype=float)
    derived = ratio * np.array(FLASH1_H100_FWD_BWD, dtype=float)
    return [[list(derived[0, 0]), list(derived[0, 1]), _NONE], [list(derived[1, 0]), list(derived[1, 1]), _NONE]]


_FWD_BWD_ONLY[TRITON_H100] = _triton_h100_fwd_bwd()
# Shah et al. 2024 Fig. 5 (forward, H100 80GB SXM5, fp16) = flash-attention README asset flash3_fp16_fwd.png.
_H100_FORWARD = {
    UNFUSED_H100: [[[52, 63, 67, 72, 73, _], [74, 100, 119, 133, 139, _], _NONE],
                   [[16, 18, 18, 18, 18, _], [26, 31, 34, 35, 35, _], _NONE]],
    FLASH2_H100: [[[282, 306, 318, 321, 322, 324], [309, 350, 362, 368, 370, 370], [275, 313, 321, 323, 324, 326]],
                  [[180, 229, 262, 284, 295, 299], [191, 260, 298, 319, 333, 335], [208, 251, 278, 293, 297, 298]]],
    FLASH3_H100: [[[333, 392, 460, 476, 496, 497], [467, 565, 625, 638, 646, 648], [482, 630, 707, 736, 746, 756]],
                  [[197, 265, 371, 420, 460, 473], [292, 423, 521, 579, 602, 616], [286, 427, 537, 612, 628, 642]]],
    CUDNN_H100: [[[335, 373, 395, 408, 412, 413], [497, 574, 617, 609, 600, 595], [470, 546, 580, 581, 580, 581]],
                 [[225, 288, 334, 363, 379, 388], [315, 410, 484, 518, 529, 539], [308, 391, 450, 483, 497, 509]]],
}  # FLASH3_H100 hd256 no-mask 1k: 630*
# Shah et al. 2024 Fig. 6 (backward, no causal mask, head dim 64 and 128); read from a transcription of
# the figure (docs/kernels.md), consistent with the paper's "1.5-1.75x faster than FlashAttention-2".
_H100_BACKWARD_NO_MASK = {
    UNFUSED_H100: [[68, 76, 88, 92, 95, _], [104, 131, 159, 174, 181, _], _NONE],
    FLASH2_H100: [[198, 238, 264, 279, 287, 291], [214, 260, 291, 310, 318, 322], _NONE],
    FLASH3_H100: [[272, 363, 422, 453, 472, 474], [316, 424, 501, 542, 559, 561], _NONE],
    CUDNN_H100: [[266, 348, 395, 417, 432, 433], [305, 408, 465, 499, 518, 516], _NONE],
}
# Dao 2023 Fig. 7 = README asset flash2_h100_fwd_bwd_benchmark.png: not in the table (the FA3 paper's
# separate directions replace it); tests use it to check the H100 derivation rules.
FLASH2_H100_FWD_BWD_FIG7 = [[[215, 254, 274, 288, 294, 296], [248, 294, 320, 326, 335, 338]],
                            [[141, 192, 232, 257, 273, 284], [163, 221, 265, 294, 308, 328]]]


def _fill_unpublished(table: np.ndarray) -> np.ndarray:
    """Clamp unpublished points to their nearest published neighbour: an OOM 16k point takes the 8k
    value, an absent head-dim-256 panel takes head dim 128 (the same clamping as outside the grid)."""
    out = np.array(table, dtype=float)
    for row in out.reshape(-1, out.shape[-1]):
        for j in range(1, row.size):
            if np.isnan(row[j]):
                row[j] = row[j - 1]
    for h in range(1, out.shape[-2]):
        absent = np.isnan(out[..., h, :]).all(axis=-1, keepdims=True)
        out[..., h, :] = np.where(absent, out[..., h - 1, :], out[..., h, :])
    return out


def _split_fwd_bwd(fwd_bwd: np.ndarray, fwd_over_bwd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward TFLOP/s whose time-weighted mean is the published fwd+bwd figure,
    3.5/(1/f + 2.5/b) = fwd_bwd, at the forward/backward speed ratio f/b = fwd_over_bwd."""
    bwd = fwd_bwd * (1.0 / fwd_over_bwd + BACKWARD_FLOPS_RATIO) / (1.0 + BACKWARD_FLOPS_RATIO)
    return fwd_over_bwd * bwd, bwd


def _build_tflops() -> np.ndarray:
    """[kernel, direction, causal, head dim, seq] TFLOP/s with the rules of docs/kernels.md."""
    table = np.empty((len(ATTENTION_KERNELS), 2, 2, len(HEAD_DIMS), len(SEQ_LENS)))
    for k, fwd in _H100_FORWARD.items():
        fwd = _fill_unpublished(fwd)
        bwd_open = _fill_unpublished(_H100_BACKWARD_NO_MASK[k])
        # Causal backward unpublished: assume the mask slows the backward as much as the forward.
        bwd = np.stack([bwd_open, bwd_open * fwd[1] / fwd[0]])
        table[k] = fwd, bwd
    # A100 publishes fwd+bwd only: split at the forward/backward ratio the same code reaches on H100
    # (FA3 paper Figs. 5-6, no mask), for both masks.
    # The Triton kernel has no H100 forward/backward split either: split at FA2's (assumed).
    for k, ratio_kernel in ((FLASH2_A100, FLASH2_H100), (UNFUSED_A100, UNFUSED_H100), (TRITON_A100, FLASH2_H100),
                            (TRITON_H100, FLASH2_H100)):
        ratio = table[ratio_kernel, FORWARD, 0] / table[ratio_kernel, BACKWARD, 0]
        table[k] = [_fill_unpublished(t) for t in _split_fwd_bwd(np.array(_FWD_BWD_ONLY[k], dtype=float), ratio)]
    return table


ATTENTION_TFLOPS = _build_tflops()
_PEAKS = np.array([kernel.peak_flops_per_s for kernel in ATTENTION_KERNELS])
ATTENTION_EFFICIENCY = ATTENTION_TFLOPS * 1e12 / _PEAKS[:, None, None, None, None]


def _direction_codes(direction) -> np.ndarray:
    direction = np.asarray(direction)
    if direction.dtype.kind in "US":
        unknown = sorted(set(direction.ravel().tolist()) - set(DIRECTIONS))
        if unknown:
            raise ValueError(f"unknown direction {unknown}; use one of {DIRECTIONS} or 0/1")
        return (direction == DIRECTIONS[BACKWARD]).astype(int)
    if ((direction != FORWARD) & (direction != BACKWARD)).any():
        raise ValueError(f"direction codes are {FORWARD} (forward) and {BACKWARD} (backward)")
    return direction.astype(int)


def _log2_position(values, grid: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Lower grid index and weight of the upper neighbour for log-linear interpolation on a
    power-of-two grid, clamped at both ends."""
    x = np.clip(np.log2(values) - np.log2(grid[0]), 0.0, len(grid) - 1.0)
    lower = np.minimum(np.floor(x), len(grid) - 2).astype(int)
    return lower, x - lower


def flash_attention_efficiency(head_dim, seq_len, causal, kernel, direction) -> np.ndarray:
    """Achieved fraction of the kernel's GPU dense 16-bit peak (ATTENTION_KERNELS[kernel].peak_flops_per_s),
    in the FLOP convention of `attention_flops` (causal counts half the FLOPs of no mask).

    kernel: code into ATTENTION_KERNELS; direction: 0/1 or "forward"/"backward". Interpolates linearly
    in log2(seq_len) and log2(head_dim) between the published points, clamped outside 512-16k and 64-256.
    """
    head_dim, seq_len, causal, kernel, direction = np.broadcast_arrays(
        np.asarray(head_dim, dtype=float), np.asarray(seq_len, dtype=float), np.asarray(causal, dtype=bool),
        np.asarray(kernel), _direction_codes(direction))
    bad = (kernel < 0) | (kernel >= len(ATTENTION_KERNELS)) | (kernel != np.round(kernel))
    if bad.any():
        raise ValueError(f"attention kernel code {kernel[bad].ravel()[0]} is not in ATTENTION_KERNELS "
                         f"(0..{len(ATTENTION_KERNELS) - 1})")
    if (head_dim <= 0).any() or (seq_len <= 0).any():
        raise ValueError("head_dim and seq_len must be positive")
    s0, ts = _log2_position(seq_len, SEQ_LENS)
    h0, th = _log2_position(head_dim, HEAD_DIMS)
    rows = (kernel.astype(int), direction, causal.astype(int))

    def at(h, s):
        return ATTENTION_EFFICIENCY[rows + (h, s)]

    low_h = at(h0, s0) * (1 - ts) + at(h0, s0 + 1) * ts
    high_h = at(h0 + 1, s0) * (1 - ts) + at(h0 + 1, s0 + 1) * ts
    return low_h * (1 - th) + high_h * th


def attention_kernel_code(name: str, gpu: str) -> int:
    """Code of the (kernel, GPU) row of ATTENTION_KERNELS, e.g. ("flash3", "h100") -> 3."""
    for code, kernel in enumerate(ATTENTION_KERNELS):
        if (kernel.name, kernel.gpu) == (name, gpu):
            return code
    known = ", ".join(f"{k.name}/{k.gpu}" for k in ATTENTION_KERNELS)
    raise ValueError(f"no attention kernel {name}/{gpu}; known: {known}")


def attention_flops(batch, seq_len, heads, head_dim, causal, direction) -> np.ndarray:
    """FLOPs the efficiencies refer to (flash-attention `benchmark_flash_attention.py` `flops`):
    4·batch·s²·heads·head_dim forward, halved when causal, x2.5 backward."""
    forward = 4.0 * np.asarray(batch) * np.asarray(seq_len, dtype=float) ** 2 * np.asarray(heads) * np.asarray(head_dim)
    forward = np.where(np.asarray(causal, dtype=bool), forward / 2, forward)
    return np.where(_direction_codes(direction) == BACKWARD, BACKWARD_FLOPS_RATIO * forward, forward)


# ---------------------------------------------------------------------------------------------
# 2. Launch floor
# ---------------------------------------------------------------------------------------------

# Host cost of one CUDA kernel launch: 2.6 us minimum measured for a conventional launch
# (makslevental/persistent_kernel README.md@1a1b230, "Takeaway" line; driver 510.39, GPU not named).
# No A100/H100-specific figure was found; the driver path is the same on both.
KERNEL_LAUNCH_S = 2.6e-6
# Host cost of one eager PyTorch op on a small CUDA tensor (Python -> dispatcher -> launch): 8.6 us for
# torch.take on 262,144 elements, pytorch/pytorch issue #114860 (torch.utils.benchmark, "Eager" column).
# This project's H200 profile (profiles/h200-kernels.json; torch 2.11, Python 3.12, gVisor) measured 11.2 us for a
# 1-element add_ issued back to back and 0.84 us of device time for the same kernel replayed from a CUDA graph:
# the host, not the GPU, sets the floor (tests/cost/test_h200_kernel_profile.py holds the two to a factor 1.5).
EAGER_OP_S = 8.6e-6
# Assumed: a kernel issued back to back cannot retire faster than the next one is issued.
MIN_KERNEL_S = KERNEL_LAUNCH_S

# Kernels one Megatron-Core GPT layer with the Transformer Engine spec launches per micro-batch, counted
# from NVIDIA/Megatron-LM@d98e8a6: gpt_layer_specs.py L317-338 (norms fused into TE LayerNormLinear),
# attention.py L1508/L1527 (RoPE on q and k, fused), L1569 core attention, L1628 linear_proj, mlp.py
# L263/L307-309/L347 (fc1, fused bias-activation, fc2), transformer_layer.py L754/L1105 (bias-dropout-add).
# Derived by reading the code (not measured), with rope fusion and gradient-accumulation fusion on.
FORWARD_KERNELS = {
    "layernorm (qkv LayerNormLinear)": 1, "qkv GEMM": 1, "rotary q, k": 2, "flash attention fwd": 1,
    "out-proj GEMM": 1, "bias-dropout-add": 1, "layernorm (fc1 LayerNormLinear)": 1, "fc1 GEMM": 1,
    "bias-activation": 1, "fc2 GEMM": 1, "bias-dropout-add 2": 1,
}
BACKWARD_KERNELS = {
    "dgrad + wgrad GEMMs (4 linears)": 8, "layernorm bwd + dgamma finalize (2 norms)": 4, "rotary q, k bwd": 2,
    "flash attention bwd (preprocess, main, dq convert)": 3, "bias-activation bwd": 1,
    "bias-dropout-add bwd (2)": 2, "residual gradient adds (2)": 2,
}
KERNELS_PER_LAYER_FORWARD = sum(FORWARD_KERNELS.values())  # 12
KERNELS_PER_LAYER_BACKWARD = sum(BACKWARD_KERNELS.values())  # 22
# Tensor-parallel collectives per layer (REFERENCE.md: 2 all-reduces forward + 2 backward; with sequence
# parallelism 2 all-gathers + 2 reduce-scatters forward, and in backward 2 re-gathers of the inputs for
# wgrad + 2 reduce-scatters of dgrad + 2 all-gathers of the row-parallel grad outputs).
TP_COLLECTIVES_PER_LAYER = {(FORWARD, False): 2, (BACKWARD, False): 2, (FORWARD, True): 4, (BACKWARD, True): 6}
# Python/framework dispatch per layer per pass. No published per-layer figure found. Assumed: each
# forward kernel costs one eager op of host time, of which KERNEL_LAUNCH_S is the launch itself
# (12 x 6.0 us = 72 us); the backward replays TE's Python autograd functions, so the same per pass.
FRAMEWORK_OVERHEAD_PER_LAYER_S = KERNELS_PER_LAYER_FORWARD * (EAGER_OP_S - KERNEL_LAUNCH_S)


def kernels_per_layer(direction, tensor_parallel=1, sequence_parallel=False) -> np.ndarray:
    """Kernels (compute + tensor-parallel collectives) one layer launches in one pass of one micro-batch."""
    direction = _direction_codes(direction)
    sequence_parallel = np.asarray(sequence_parallel, dtype=bool)
    compute = np.where(direction == BACKWARD, KERNELS_PER_LAYER_BACKWARD, KERNELS_PER_LAYER_FORWARD)
    collectives = np.select(
        [(direction == d) & (sequence_parallel == sp) for d, sp in TP_COLLECTIVES_PER_LAYER],
        list(TP_COLLECTIVES_PER_LAYER.values()))
    return compute + np.where(np.asarray(tensor_parallel) > 1, collectives, 0)


def layer_launch_floor_s(direction, tensor_parallel=1, sequence_parallel=False, framework_overhead=False):
    """Seconds below which one layer's pass cannot run: its kernels x KERNEL_LAUNCH_S, plus
    FRAMEWORK_OVERHEAD_PER_LAYER_S for eager Python dispatch (CUDA graphs remove both)."""
    floor = kernels_per_layer(direction, tensor_parallel, sequence_parallel) * KERNEL_LAUNCH_S
    return floor + np.where(np.asarray(framework_overhead, dtype=bool), FRAMEWORK_OVERHEAD_PER_LAYER_S, 0.0)


# Mixture-of-experts layers (cost/moe.py): Megatron-Core's MoE layer with the alltoall token dispatcher,
# permute and router fusion and the aux-loss load balancing (NVIDIA/Megatron-LM core_v0.15.0, the release of
# the NeMo 25.11 container; R = megatron/core/transformer/moe/router.py, D = .../moe/token_dispatcher.py) and
# Transformer Engine's GroupedLinear experts (NVIDIA/TransformerEngine v2.9). Counted by reading the code
# (not measured). Kernels launched once per MoE layer, issued one by one from Python:
MOE_FORWARD_KERNELS_BEFORE_SYNC = {
    "router GEMM (R:75 gating)": 1, "force-balance random logits (R:556, benchmarks only)": 1,
    "fused top-k + score function (R:490)": 1, "fused aux-loss scores (R:516)": 1,
    "aux loss: tokens per expert, fused loss, log scale, tracker add (R:267-291, moe_utils.py:740)": 4,
    "preprocess: counts, splits, count all-gather, slices and sums (D:429-550)": 7,
    "device-to-host copies of the splits (D:822-859)": 5,
    "fused permute with probs: row-id map + permute (D:597)": 4,
}
# The host waits for the token counts before the all-to-all (D:524, D:857-859) when ep or tp > 1 (else before
# the experts, D:533); the rest of the layer is issued after that wait.
MOE_FORWARD_KERNELS_AFTER_SYNC = {
    "dispatch all-to-all, tokens + probs (D:626-629)": 2,
    "sort chunks by local expert, tokens + probs (D:692)": 2, "fused weighted SwiGLU": 1,
    "sort chunks back (D:727)": 2, "combine all-to-all (D:770)": 1, "fused unpermute (D:793)": 1,
}
MOE_FORWARD_KERNELS = {**MOE_FORWARD_KERNELS_BEFORE_SYNC, **MOE_FORWARD_KERNELS_AFTER_SYNC}
MOE_BACKWARD_KERNELS = {
    "unpermute, combine all-to-all, sort chunks (reverse)": 4, "weighted SwiGLU backward": 1,
    "sort chunks, dispatch all-to-all (tokens + probs), permute (reverse)": 5,
    "top-k, aux-loss scores and aux loss backward": 3, "router GEMM dgrad + wgrad": 2,
    "router and expert-path input gradients summed": 1, "random logits (straight-through)": 1,
}
MOE_KERNELS_PER_LAYER = {FORWARD: sum(MOE_FORWARD_KERNELS.values()), BACKWARD: sum(MOE_BACKWARD_KERNELS.values())}
# Per local expert, looped in C++: GroupedLinear launches one cuBLAS GEMM per expert, round-robin on 4
# streams (TE v2.9 common/gemm/cublaslt_gemm.cu:924-960 multi_stream_cublas_gemm; Megatron's
# moe/README.md:223 "launch multiple local GEMM kernels in multiple streams"): fc1 and fc2 forward, their
# dgrad and wgrad backward.
MOE_GEMMS_PER_EXPERT = {FORWARD: 2, BACKWARD: 4}
# fp8 with per-tensor current scaling (Megatron-Bridge's FP8-CS): each GEMM's activation operand (forward: the
# expert's fc1 and fc2 inputs; backward: their output gradients) is quantised per expert, each with an amax,
# a scale and a cast kernel (TE v2.9 pytorch/csrc/quantizer.cpp:516-535 Float8CurrentScalingQuantizer::
# quantize_impl; split_quantize loops over the experts, csrc/extensions/cast.cpp:145-148, the fused multi-cast
# being for delayed scaling only, :116-143). The fp8 weights are cast on the first micro-batch only.
FP8_CURRENT_SCALING_KERNELS_PER_TENSOR = 3
MOE_QUANTIZED_OPERANDS_PER_EXPERT = {FORWARD: 2, BACKWARD: 2}
# Delayed scaling (Megatron-Core's default recipe) casts all the experts' operands of one GEMM in one fused
# kernel (nvte_multi_cast_transpose, "Currently only have fused kernel for FP8 delayed scaling": TE
# pytorch/csrc/extensions/cast.cpp multi_tensor_quantize_impl): one launch per operand group, not per expert.


def moe_before_sync_issue_s(eager=True) -> np.ndarray:
    """Host seconds of the MoE forward kernels issued before the host waits for the token counts."""
    per_fixed = np.where(np.asarray(eager, dtype=bool), EAGER_OP_S, KERNEL_LAUNCH_S)
    return sum(MOE_FORWARD_KERNELS_BEFORE_SYNC.values()) * per_fixed


def moe_layer_issue_s(direction, local_experts, fp8=False, eager=True, current_scaling=False) -> np.ndarray:
    """Host seconds to issue one MoE layer's own kernels (router, dispatch, experts, combine) in one pass of one
    micro-batch: the once-per-layer kernels at EAGER_OP_S each when issued from eager Python (KERNEL_LAUNCH_S
    otherwise), the per-expert loop (GEMMs and fp8 quantisation) at KERNEL_LAUNCH_S each (issued from C++).
    fp8 casts: per expert and operand with current scaling, one fused kernel per operand group with delayed."""
    direction = _direction_codes(direction)
    fixed = np.where(direction == BACKWARD, MOE_KERNELS_PER_LAYER[BACKWARD], MOE_KERNELS_PER_LAYER[FORWARD])
    gemms = np.where(direction == BACKWARD, MOE_GEMMS_PER_EXPERT[BACKWARD], MOE_GEMMS_PER_EXPERT[FORWARD])
    operands = np.where(direction == BACKWARD, MOE_QUANTIZED_OPERANDS_PER_EXPERT[BACKWARD],
                        MOE_QUANTIZED_OPERANDS_PER_EXPERT[FORWARD])
    current = np.asarray(current_scaling, dtype=bool)
    fp8 = np.asarray(fp8, dtype=bool)
    casts_per_expert = np.where(fp8 & current, FP8_CURRENT_SCALING_KERNELS_PER_TENSOR * operands, 0)
    fused_casts = np.where(fp8 & ~current, operands, 0)
    per_fixed = np.where(np.asarray(eager, dtype=bool), EAGER_OP_S, KERNEL_LAUNCH_S)
    local_experts = np.asarray(local_experts, dtype=float)
    return (fixed * per_fixed + local_experts * (gemms + casts_per_expert) * KERNEL_LAUNCH_S
            + fused_casts * KERNEL_LAUNCH_S)


def kernel_time_floor_s(compute_s) -> np.ndarray:
    """A kernel's time, no shorter than MIN_KERNEL_S however small its work (e.g. a tiny GEMM)."""
    return np.maximum(np.asarray(compute_s, dtype=float), MIN_KERNEL_S)


# ---------------------------------------------------------------------------------------------
# 3. FP8 GEMMs
# ---------------------------------------------------------------------------------------------

# 8192^3 fp8 GEMM at 1,461 TFLOP/s on an H800 SXM (tile-ai/tilelang benchmark/matmul_fp8/README.md@128a796,
# row K = 8192) over the 1,979 TFLOP/s dense fp8 peak H800 SXM shares with H100 SXM. Other published
# points: DeepGEMM README@5da24e2, 4096x7168x16384 at 1,358 TFLOP/s (0.69, block-scaled); the same
# tilelang table reaches 1,523 (0.77) at K = 16384.
H100_FP8_PEAK_FLOPS = 1979e12
FP8_GEMM_PEAK_FRACTION = 1461e12 / H100_FP8_PEAK_FLOPS
HIGH_PRECISION_BYTES = 2  # bf16 source of a cast
FP8_BYTES = 1


def fp8_quantize_hbm_bytes(elements, transpose=True, current_scaling=False) -> np.ndarray:
    """HBM bytes to quantise `elements` bf16 values to fp8 (Transformer Engine).

    Reads the bf16 tensor once (delayed scaling: amax comes from history and is taken inside the
    cast) or twice (current scaling: an amax pass, then the cast), TE docs
    fp8_delayed_scaling.rst L21-22 and fp8_current_scaling.rst L71. Writes one fp8 copy, plus a
    transposed one when `transpose`: on Hopper the backward GEMMs need column-wise fp8 data
    (fp8_current_scaling.rst L91; module/linear.py sets columnwise usage for training).
    """
    reads = HIGH_PRECISION_BYTES * np.where(np.asarray(current_scaling, dtype=bool), 2, 1)
    writes = FP8_BYTES * np.where(np.asarray(transpose, dtype=bool), 2, 1)
    return np.asarray(elements, dtype=float) * (reads + writes)


def fp8_gemm_cast_hbm_bytes(m, n, k, weight_cached=False, transpose=True, current_scaling=False) -> np.ndarray:
    """Extra HBM bytes to cast both operands of a forward GEMM Y[m,n] = X[m,k]·W[n,k]^T to fp8.

    TE re-quantises the weight only on the first micro-batch of a step (linear.py L479,
    `is_first_microbatch`); pass weight_cached=True for the others.
    """
    m, n, k = (np.asarray(v, dtype=float) for v in (m, n, k))
    activations = fp8_quantize_hbm_bytes(m * k, transpose, current_scaling)
    weights = fp8_quantize_hbm_bytes(n * k, transpose, current_scaling)
    return activations + np.where(np.asarray(weight_cached, dtype=bool), 0.0, weights)


def fp8_linear_cast_hbm_bytes(m, n, k, weight_cached=False, current_scaling=False) -> np.ndarray:
    """Extra HBM bytes of fp8 casts for one TE Linear (m tokens, k in, n out) in forward + backward of a
    micro-batch: the forward operands with their transposes (reused by the dgrad and wgrad GEMMs) and
    the grad output dY[m,n], quantised row- and column-wise (linear.py L905)."""
    forward = fp8_gemm_cast_hbm_bytes(m, n, k, weight_cached, True, current_scaling)
    grad_output = fp8_quantize_hbm_bytes(np.asarray(m, dtype=float) * np.asarray(n, dtype=float), True, current_scaling)
    return forward + grad_output
