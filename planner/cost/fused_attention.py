"""Fused attention per candidate: which kernel its stack runs on its accelerator (a row of
kernels.ATTENTION_KERNELS, or none), at which peak (bf16 even in fp8 training), and that kernel's published
efficiency at the candidate's head dim and sequence. Pure, vectorised.

Its own module because kernels.py holds the published tables and knows nothing of accelerators, stacks or
candidates; this module maps a candidate onto them. cost/layer_compute.py times the attention core with it.
"""

from __future__ import annotations

import numpy as np

from planner.cost import kernels
from planner.specs.hardware import ClusterSpec
from planner.specs.candidate_batch import DTYPE_CODES, CandidateBatch


def attention_peak(batch: CandidateBatch, cluster: ClusterSpec, peak):
    """Attention runs in bf16 even in fp8 training (Transformer Engine keeps dot-product attention in
    bf16 unless fp8 attention is asked for: `transformer_engine/pytorch/attention`, fp8_dpa=False)."""
    bf16 = cluster.accelerator.peak_flops.bf16
    return np.where(batch.dtype == DTYPE_CODES["fp8"], bf16 if bf16 else peak, peak)


# Which rows of kernels.ATTENTION_KERNELS an accelerator's fused attention takes, by its CUDA compute capability
# (the spec's accelerator.compute_capability, which also picks NCCL's tuner constants: cost.collectives.architecture):
# Hopper kernels on Hopper, 9.x (H100, H200, H800, H20), and on Blackwell, 10.x (assumed to reach at least the
# Hopper fraction of its own peak); FlashAttention-2 on the data-centre Ampere parts, 8.0 (A100, A800), where its
# published benchmarks were run. Any other device (V100, MI250X, CPUs, other 8.x parts) has no published table here:
# its fused attention is timed as the two GEMMs it performs, like the unfused path, with
# attention_relative_efficiency. (It was the accelerator's free-text name: a renamed H100 lost its table.)
FUSED_ATTENTION_TABLE = ((9.0, 11.0, "h100"), (8.0, 8.1, "a100"))  # [from, below) compute capability -> table


def attention_table(compute_capability: float | None) -> str | None:
    """The fused-attention table of an accelerator of this compute capability (FUSED_ATTENTION_TABLE), or None."""
    if compute_capability is None:
        return None
    return next((table for low, high, table in FUSED_ATTENTION_TABLE if low <= compute_capability < high), None)


def attention_kernel_codes(batch: CandidateBatch, cluster: ClusterSpec):
    """Per candidate, the kernels.ATTENTION_KERNELS row its framework's fused attention runs on this GPU,
    or -1 when the accelerator has no published table."""
    from planner.frameworks import FRAMEWORKS, FRAMEWORK_NAMES

    gpu = attention_table(cluster.accelerator.compute_capability)
    if gpu is None:
        return np.full(len(batch), -1)
    per_framework = np.array([
        kernels.attention_kernel_code(FRAMEWORKS[fw].attention_kernel_hopper if gpu == "h100"
                                      else FRAMEWORKS[fw].attention_kernel_ampere, gpu)
        for fw in FRAMEWORK_NAMES])
    return per_framework[batch.framework.astype(int)]


def attention_table_lookup(head_dim, local_seq, code):
    """Forward and backward fused-attention efficiencies, interpolated once per distinct (kernel, head dim,
    sequence) of the batch (a search has a handful) and spread back to the candidates."""
    # The tables clamp beyond head dim 256 and 16k tokens: clamping before packing loses nothing.
    head = np.clip(head_dim, 1, (1 << 20) - 1).astype(np.int64)
    seq = np.clip(local_seq, 1, (1 << 34) - 1).astype(np.int64)
    keys = (code.astype(np.int64) * (1 << 20) + head) * (1 << 34) + seq
    unique = np.unique(keys)
    unique_code = unique >> 54
    unique_head = (unique >> 34) & ((1 << 20) - 1)
    unique_seq = unique & ((1 << 34) - 1)
    forward = kernels.flash_attention_efficiency(unique_head, unique_seq, True, unique_code, kernels.FORWARD)
    backward = kernels.flash_attention_efficiency(unique_head, unique_seq, True, unique_code, kernels.BACKWARD)
    if len(unique) == 1:
        return np.full(keys.shape, forward[0]), np.full(keys.shape, backward[0])
    index = np.searchsorted(unique, keys)
    return forward[index], backward[index]
