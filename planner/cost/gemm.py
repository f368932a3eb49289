"""What one rank computes at: the peak FLOP/s of its dtype (and the share of a node's compute one rank gets where
ranks share it), the HBM bandwidth beside it, and the fraction of that peak a GEMM of a given shape reaches (a
saturating curve over its size, hardware.Efficiency). Pure, vectorised.

Its own module because every timed kernel is taken of these rates (step_time's layers, cost/moe.py's expert
GEMMs, the optimizer step) and the search bounds what any layout can reach by them (flop_rate_ceiling) without
the step's schedule.
"""

from __future__ import annotations

import numpy as np

from planner.cost import kernels
from planner.specs.hardware import DTYPES, ClusterSpec, Efficiency
from planner.specs.candidate_batch import DTYPE_CODES, CandidateBatch


def matmul_efficiency(m, n, k, eff: Efficiency, half_size):
    """Fraction of peak a GEMM of (m, n, k) reaches: a saturating curve over its size.

    Size is the harmonic mean of the three dimensions, so a GEMM is as small as its thinnest side
    (a 81920 x 2304 x 768 GEMM behaves like a ~1,700-wide one).

    When the half size is derived from the peak (3 x peak / HBM bandwidth) and the exponent a > 1, the
    time flops / (peak x efficiency) grows again with the peak once half / size > (a - 1)^(-1/a): a GEMM
    that far below the ridge would be predicted faster on a slower GPU. There it is memory-bound, and it
    runs as fast as on the GPU whose peak minimises its time (a faster GPU can always go that fast): the
    returned fraction of the nominal peak is capped accordingly.
    """
    size = 3.0 / (1.0 / m + 1.0 / n + 1.0 / k)
    exponent = eff.matmul_size_exponent
    ratio = half_size / size
    usable = 1.0  # fraction of the nominal peak the GEMM can use (below 1 only when memory-bound, see above)
    if eff.matmul_half_size is None and exponent > 1.0:
        usable = np.minimum(1.0, (exponent - 1.0) ** (-1.0 / exponent) / ratio)
        ratio = ratio * usable
    return usable * eff.matmul_peak_fraction / (1.0 + ratio ** exponent)


def gemm_seconds(m, n, k, peak, eff: Efficiency, half):
    """Seconds of a GEMM of (m, n, k) at `peak` FLOP/s and its matmul_efficiency; 0 for an empty one."""
    m, n, k = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (m, n, k)))
    empty = (m * n * k) <= 0
    safe = [np.where(empty, 1.0, x) for x in (m, n, k)]
    seconds = 2.0 * safe[0] * safe[1] * safe[2] / (peak * matmul_efficiency(*safe, eff, half))
    return np.where(empty, 0.0, seconds)


def matmul_half_size_array(batch: CandidateBatch, cluster: ClusterSpec) -> np.ndarray:
    """Half-efficiency GEMM size per candidate (depends on the dtype's peak unless calibrated)."""
    calibrated = cluster.efficiency.matmul_half_size
    if calibrated is not None:  # one size for every dtype with a peak (a per-row array in cost.efficiency_sweep)
        has_peak = np.array([bool(getattr(cluster.accelerator.peak_flops, d)) for d in DTYPES])
        return np.where(has_peak[batch.dtype.astype(int)], calibrated, np.nan)
    sizes = np.array([cluster.matmul_half_size(d) if getattr(cluster.accelerator.peak_flops, d) else np.nan
                      for d in DTYPES])
    return sizes[batch.dtype.astype(int)]


def rank_share(gpus, cluster: ClusterSpec):
    """How many accelerators' worth of compute one rank of a `gpus`-rank job gets: 1 on GPUs; on a CPU
    node whose cores are split between the ranks, accelerators_per_node / ranks on the node."""
    if not cluster.node.compute_shared_by_ranks:
        return 1.0
    gpn = cluster.gpus_per_node
    return gpn / np.minimum(gpn, gpus)


def peak_flops_array(batch: CandidateBatch, cluster: ClusterSpec) -> np.ndarray:
    """Peak FLOP/s of one accelerator for each candidate's dtype (times rank_share: what one rank gets)."""
    peaks = np.array([getattr(cluster.accelerator.peak_flops, d) or np.nan for d in DTYPES])
    return peaks[batch.dtype.astype(int)]


def gemm_peak_array(batch: CandidateBatch, cluster: ClusterSpec, peak):
    """The peak each candidate's GEMMs take their matmul_efficiency of: fp8 GEMMs reach
    fp8_matmul_relative_efficiency x the 16-bit ceiling as a fraction of the fp8 peak (the MAMF table's fp8
    vs bf16 efficiency, hardware.Efficiency); other dtypes the peak itself."""
    relative = cluster.efficiency.fp8_matmul_relative_efficiency
    if relative == 1.0:
        return peak
    return np.where(batch.dtype == DTYPE_CODES["fp8"], peak * relative, peak)


def output_layer_rates(batch: CandidateBatch, cluster: ClusterSpec, gemm_peak, half):
    """Peak and half-efficiency size of the output (vocabulary) projection's GEMMs. In fp8 training every
    stack here keeps it in bf16: Megatron-Core builds it as tensor_parallel.ColumnParallelLinear, outside
    Transformer Engine, unless fp8_output_proj with the mxfp8 recipe (NVIDIA/Megatron-LM@d98e8a64
    megatron/core/models/gpt/gpt_model.py:272-276, fp8_utils.py:730-746; fp8_output_proj defaults False,
    core/transformer/transformer_config.py:635); Megatron-DeepSpeed's parallel_lm_logits calls
    tensor_parallel.linear_with_grad_accumulation_and_async_allreduce (deepspeedai/Megatron-DeepSpeed@4efb479d
    megatron/model/language_model.py:37) and llm-foundry's lm_head is a torch nn.Linear (TE's fp8 autocast
    reaches TE modules only; mosaicml/llm-foundry llmfoundry/models/mpt/modeling_mpt.py:1140); the torchtitan config
    planner.emit writes filters "output" out of the float8 conversion (emit/torchtitan.py); MaxText: "We do not
    quantize the logits matmul" (AI-Hypercomputer/maxtext@e591f30c src/maxtext/layers/decoders.py:843);
    DeepSeek-V3 keeps "the output head" in its original precision (arXiv:2412.19437 section 3.3.1)."""
    bf16 = cluster.accelerator.peak_flops.bf16
    if not bf16:
        return gemm_peak, half
    fp8 = batch.dtype == DTYPE_CODES["fp8"]
    return (np.where(fp8, bf16 * rank_share(batch.gpus, cluster), gemm_peak),
            np.where(fp8, cluster.matmul_half_size("bf16"), half))


def flop_rate_ceiling(cluster: ClusterSpec) -> float:
    """The largest fraction of peak any model FLOP runs at in this cost model, so MFU <= this <= 1.

    GEMMs reach at most matmul_peak_fraction (fp8 ones that x fp8_matmul_relative_efficiency <= 1); fused attention at most the best entry of its measured
    tables (kernels.ATTENTION_EFFICIENCY); GEMM-timed attention matmul_peak_fraction x
    attention_relative_efficiency. Everything else (communication, elementwise, bubbles) only adds
    time. The search bounds what a layout can reach with it (search/bounds.py); tests/property hold
    every candidate to it.
    """
    eff = cluster.efficiency
    fractions = (eff.matmul_peak_fraction, float(np.nanmax(kernels.ATTENTION_EFFICIENCY)),
                 eff.matmul_peak_fraction * eff.attention_relative_efficiency)
    return min(1.0, max(fractions))


def rank_rates(batch: CandidateBatch, cluster: ClusterSpec):
    """Peak FLOP/s and HBM bytes/s one rank gets of its accelerator, the GEMMs' half-efficiency size and peak."""
    share = rank_share(batch.gpus, cluster)
    peak = peak_flops_array(batch, cluster) * share
    hbm = cluster.accelerator.hbm_bytes_per_s * cluster.efficiency.hbm_efficiency * share
    half = matmul_half_size_array(batch, cluster)
    gemm_peak = gemm_peak_array(batch, cluster, peak)  # the dense and expert GEMMs' peak
    return peak, hbm, half, gemm_peak
