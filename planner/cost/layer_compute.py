"""One dense transformer layer's compute for one micro-batch on one tp rank, by part: its four GEMMs at their
size-dependent efficiency, the attention core (fused kernel from the published tables, or the unfused GEMMs), the
memory-bound elementwise passes, the fp8 input casts, recompute, and what the CPU needs to issue each pass.

Its own module because it is the one place that turns a layer's shape into seconds of arithmetic; step_time
assembles these with the communication (model_parallel_comm, data_parallel), the pipeline and the optimizer.
"""

from __future__ import annotations

import numpy as np

from planner.cost import fused_attention, kernels
from planner.cost.gemm import gemm_seconds, matmul_efficiency
from planner.cost.memory import activation_bytes_per_layer
from planner.specs.candidate_batch import DTYPE_BYTES, DTYPE_CODES, CandidateBatch
from planner.specs.hardware import ClusterSpec
from planner.specs.model import attended_keys


def layer_seconds(batch: CandidateBatch, cluster: ClusterSpec, peak, gemm_peak, half, hbm, fw):
    """Seconds of one transformer layer for one micro-batch on one tp rank, by part."""
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    gemms = _layer_gemm_shapes(batch, tokens)
    gemm = _layer_gemm_seconds(batch, cluster.efficiency, gemms, gemm_peak, half)
    attention, attention_bwd = _attention_core_seconds(batch, cluster, peak, half, tokens)
    # Memory-bound kernels (norms, GELU/SwiGLU, dropout, residual adds, unfused softmax): about one pass
    # over the layer's activation bytes in forward (Korthikanti's breakdown), 2x in backward.
    elementwise = activation_bytes_per_layer(batch)["traffic"] / hbm
    fp8_casts = _fp8_cast_seconds(batch, gemms, hbm)
    # The stack's unfused kernels, named apart in the step (step_time `unfused_elementwise`); today's stacks have none,
    # and their rows skip the arrays (scalar 0.0).
    unfused = ({name: part / hbm for name, part in unfused_elementwise_bytes(batch, fw).items()}
               if has_unfused_kernels(fw) else {"forward": 0.0, "backward": 0.0, "score_forward": 0.0})
    forward = gemm + attention + elementwise + fp8_casts / 2.0 + unfused["forward"]  # cast bytes: forward + backward
    backward = 2.0 * gemm + attention_bwd + 2.0 * elementwise + fp8_casts / 2.0 + unfused["backward"]
    full, selective = batch.recompute == 2, recomputes_attention_core(batch, fw)
    recompute = np.select([full, selective], [forward, attention + np.where(batch.flash_attention, 0.0, 0.3 * elementwise)
                                              + unfused["score_forward"]], 0.0)
    # A recompute forward runs the unfused kernels again: all of them (full) or the attention core's (selective).
    unfused_recompute = (np.select([full, selective], [unfused["forward"], unfused["score_forward"]], 0.0)
                         if has_unfused_kernels(fw) else 0.0)
    return {"gemm": gemm, "attention": attention, "attention_backward": attention_bwd, "forward": forward, "backward": backward,
            "recompute": recompute, "elementwise": elementwise, "issue": _layer_issue_seconds(batch, fw),
            "unfused": {"forward": unfused["forward"], "backward": unfused["backward"], "recompute": unfused_recompute}}


def recomputes_attention_core(batch, fw) -> np.ndarray:
    """Rows whose selective recompute runs the attention core again: all of them, but a fused (flash) core only
    where the stack checkpoints it (Framework.selective_recomputes_fused_attention)."""
    return (batch.recompute == 1) & (~batch.flash_attention | (fw["selective_recomputes_fused_attention"] > 0))


# The Framework fields unfused_elementwise_bytes reads (accesses of one activation element per element touched).
UNFUSED_FIELDS = ("unfused_score_accesses_forward", "unfused_score_accesses_backward", "unfused_hidden_accesses_forward",
                  "unfused_qkv_accesses_forward", "unfused_ffn_accesses_forward")


def has_unfused_kernels(fw) -> bool:
    """Whether any row's stack runs memory-bound kernels beyond the fused path (Framework.unfused_*_accesses)."""
    return any(np.any(fw[name]) for name in UNFUSED_FIELDS)


def unfused_elementwise_bytes(batch: CandidateBatch, fw) -> dict:
    """HBM bytes per layer, micro-batch and tp rank of the memory-bound kernels a stack's model code runs beyond the
    fused path the `elementwise` term prices (Framework.unfused_*_accesses; frameworks/deepspeed_v02.py): `forward`
    and `backward`, and `score_forward`, the part of forward over the attention scores (what a selective recompute
    runs again). Per element touched, accesses x the activation element's bytes; the s x s scores only where the
    layout runs no flash attention (the whole square, as the unfused path computes it). All zero for today's stacks."""
    if not has_unfused_kernels(fw):
        zeros = np.zeros(len(batch))
        return {"forward": zeros, "backward": zeros, "score_forward": zeros}
    w = DTYPE_BYTES[batch.dtype.astype(int)]
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    scores = np.where(batch.flash_attention, 0.0, tokens * batch.heads / batch.tp * batch.seq_len) * w
    up_width = (batch.mlp_matrices - 1.0) * batch.ffn  # the MLP's first projection, whose bias is added
    score_forward = fw["unfused_score_accesses_forward"] * scores
    forward = (score_forward + tokens * w * (fw["unfused_hidden_accesses_forward"] * batch.hidden
                                             + fw["unfused_qkv_accesses_forward"] * batch.qkv_width / batch.tp
                                             + fw["unfused_ffn_accesses_forward"] * up_width / batch.tp))
    return {"forward": forward, "backward": fw["unfused_score_accesses_backward"] * scores,
            "score_forward": score_forward}


def _layer_gemm_shapes(batch, tokens) -> list:
    """The layer's four GEMMs (QKV, attention output, MLP up, MLP down) as (M, N, K) per tp rank."""
    t, h = batch.tp, batch.hidden
    qkv_width = h * (1.0 + 2.0 * batch.kv_heads / batch.heads)
    up_width = (batch.mlp_matrices - 1.0) * batch.ffn
    return [  # (M, N, K) per tp rank
        (tokens, qkv_width / t, h),
        (tokens, h, h / t),
        (tokens, up_width / t, h),
        (tokens, h, batch.ffn / t),
    ]


def _layer_gemm_seconds(batch, eff, gemms, gemm_peak, half):
    """Forward seconds of the layer's GEMMs at their size-dependent efficiency."""
    if batch.core_width is None:
        return sum(2.0 * m * n * k / (gemm_peak * matmul_efficiency(m, n, k, eff, half)) for m, n, k in gemms)
    # attention variants / MoE: a model may have no dense MLP (ffn 0)
    return sum(gemm_seconds(m, n, k, gemm_peak, eff, half) for m, n, k in gemms)


def _attention_core_seconds(batch, cluster, peak, half, tokens):
    """Forward and backward seconds of the attention core (fused kernel or unfused GEMMs)."""
    eff = cluster.efficiency
    t, h = batch.tp, batch.hidden
    # Attention core: per head (s x head_dim) x (head_dim x s) and back. Flash attention with a causal
    # mask skips the masked half; the older unfused path computes the whole square. MLA and heads whose
    # width differs from h/heads multiply by their own core width (model.flops_columns).
    core = h if batch.core_width is None else batch.core_width
    head_dim = core / batch.heads
    attention_peak = fused_attention.attention_peak(batch, cluster, peak)
    local_seq = batch.seq_len / batch.cp
    if batch.attention_window is None:
        core_flops = 4.0 * tokens * batch.seq_len * core / t * np.where(batch.flash_attention, 0.5, 1.0)
    else:
        # Sliding window: a fused kernel skips the key blocks outside the window as it skips the masked
        # half (flash-attention README changelog 2.3 'Local (i.e., sliding window) attention', window_size), so it runs the keys
        # each query attends (model.attended_keys); the unfused path still computes the whole square.
        # Its efficiency is read at the causal sequence with the same mean keys per query (2 x attended
        # keys: the same work per query row), capped at the local sequence. (An assumption: no published
        # sliding-window kernel benchmark was at hand; it is exact when the window covers the sequence.)
        keys = attended_keys(batch.seq_len, batch.attention_window)
        core_flops = 4.0 * tokens * core / t * np.where(batch.flash_attention, keys, batch.seq_len)
        local_seq = np.minimum(local_seq, 2.0 * keys)
    # Fused attention at the efficiency published for its kernel, head dim and (per cp rank) sequence;
    # the unfused path as its two thin GEMMs (the softmax is in the elementwise traffic).
    code = fused_attention.attention_kernel_codes(batch, cluster)
    tabled = code >= 0
    safe_code = np.where(tabled, code, 0)
    # Fractions of the kernel's own GPU peak, taken as fractions of this accelerator's peak.
    flash_fwd, flash_bwd = fused_attention.attention_table_lookup(head_dim, local_seq, safe_code)
    fused = batch.flash_attention & tabled
    # (Skipped when every candidate runs a tabled fused kernel, as in most searches.)
    unfused = 1.0 if fused.all() else matmul_efficiency(batch.seq_len / batch.cp, batch.seq_len, head_dim, eff, half)
    # attention_relative_efficiency scales the GEMM-based estimate only: the tables are measured kernels.
    gemm_based = unfused * eff.attention_relative_efficiency
    fwd_eff = np.where(fused, flash_fwd, gemm_based)
    bwd_eff = np.where(fused, flash_bwd, gemm_based)
    attention = core_flops / (attention_peak * fwd_eff)
    # Flash backward runs 5 GEMM-like products to forward's 2 (dQ, dK, dV, dP and the recomputed S) =
    # 2.5x (FlashAttention-2, section 3.1.2); the unfused path stores P and runs 4 (2x).
    bwd_ratio = np.where(batch.flash_attention, kernels.BACKWARD_FLOPS_RATIO, 2.0)
    return attention, bwd_ratio * core_flops / (attention_peak * bwd_eff)


def _fp8_cast_seconds(batch, gemms, hbm):
    """Seconds of the fp8 GEMMs' input casts for forward and backward (0.0 when no row is fp8)."""
    # fp8 GEMMs first cast their inputs (read 2 bytes, write 1; current scaling reads them once more for the amax).
    fp8 = batch.dtype == DTYPE_CODES["fp8"]
    return 0.0 if not fp8.any() else np.where(
        fp8, sum(kernels.fp8_linear_cast_hbm_bytes(m, n, k, True, batch.fp8_current_scaling)
                 for m, n, k in gemms) / hbm, 0.0)


def _layer_issue_seconds(batch, fw) -> dict:
    """What the CPU needs to issue each pass of a layer; step_time charges the part the GPU's work (compute and
    exposed communication) does not already cover."""
    # The CPU issues every kernel: a layer is never faster than its launches (eager frameworks).
    eager = fw["eager_dispatch"] > 0
    issue_fwd = kernels.layer_launch_floor_s(kernels.FORWARD, batch.tp, batch.seq_parallel, eager)
    issue_bwd = kernels.layer_launch_floor_s(kernels.BACKWARD, batch.tp, batch.seq_parallel, eager)
    return {"forward": issue_fwd, "backward": issue_bwd,
            "recompute": np.where(batch.recompute == 2, issue_fwd, 0.0)}
