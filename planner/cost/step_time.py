"""Seconds per optimizer step as a sum of named parts, for a batch of candidates. Pure, vectorised.

Per micro-batch, on the slowest pipeline stage (the last one: it also runs the output layer):
  forward  = sum over GEMMs of FLOPs / (peak · matmul_efficiency(size))  + attention core + elementwise
  backward = 2 x forward compute (dgrad + wgrad) + 2 x forward elementwise
  recompute: full = one more forward of every layer; selective = the attention core again
  tensor parallel: 2 all-reduces forward + 2 backward per layer (+2 with full recompute), exposed by
  (1 - tp_overlap); pipeline point-to-point sends per micro-batch and virtual stage.
The pipeline runs m + (p-1)/v micro-batch slots (1F1B / interleaved bubble, Narayanan et al. 2021).

Data parallel: ZeRO-0/1 reduce gradients once per step at the boundary, ZeRO-2 reduce-scatters every
micro-batch, ZeRO-3 gathers parameters in forward and backward and reduce-scatters gradients every
micro-batch (1.5x the all-reduce volume, ZeRO paper §7). Communication c overlaps compute x by the
explicit factor eta: max(x, c) + (1 - eta)·min(x, c)  (eta = 1: perfect overlap, 0: none).
Then the optimizer (memory-bound Adam on HBM, or CPU-Adam with PCIe/NVMe copies when offloaded).
"""

from __future__ import annotations

import numpy as np

from planner.cost import collectives
from planner.cost.memory import (ZERO3_BUCKET_ELEMENTS, ZERO12_BUCKET_ELEMENTS, activation_bytes_per_layer,
                                 stage_params)
from planner.hardware import DTYPES, ClusterSpec, Efficiency
from planner.layout import DTYPE_BYTES, CandidateBatch
from planner.model import training_flops_breakdown
from planner.topology import group_links_arrays

ZERO3_MODULES_PER_LAYER = 6  # norm, QKV, attention output, norm, MLP up, MLP down
ZERO3_MODULES_LAST_STAGE = 2  # final norm and output layer
ZERO3_MODULES_FIRST_STAGE = 1  # token embedding
ADAM_BYTES_PER_PARAM = 28.0  # fp32 Adam touches p, m, v, g (read 16) and writes p, m, v (12); + w-byte weight copy


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


def matmul_half_size_array(batch: CandidateBatch, cluster: ClusterSpec) -> np.ndarray:
    """Half-efficiency GEMM size per candidate (depends on the dtype's peak unless calibrated)."""
    sizes = np.array([cluster.matmul_half_size(d) if getattr(cluster.accelerator.peak_flops, d) else np.nan
                      for d in DTYPES])
    return sizes[batch.dtype.astype(int)]


def overlap(compute, comm, eta):
    """Time of compute and communication that overlap by factor eta in [0, 1]: max() .. sum()."""
    return np.maximum(compute, comm) + (1.0 - eta) * np.minimum(compute, comm)


def rank_share(batch: CandidateBatch, cluster: ClusterSpec):
    """How many accelerators' worth of compute one rank gets: 1 on GPUs; on a CPU node whose cores are
    split between the ranks, accelerators_per_node / ranks on the node."""
    if not cluster.node.compute_shared_by_ranks:
        return 1.0
    gpn = cluster.gpus_per_node
    return gpn / np.minimum(gpn, batch.gpus)


def peak_flops_array(batch: CandidateBatch, cluster: ClusterSpec) -> np.ndarray:
    """Peak FLOP/s of one accelerator for each candidate's dtype (times rank_share: what one rank gets)."""
    peaks = np.array([getattr(cluster.accelerator.peak_flops, d) or np.nan for d in DTYPES])
    return peaks[batch.dtype.astype(int)]


def _layer_forward(batch: CandidateBatch, cluster: ClusterSpec, peak, half, hbm):
    """Forward seconds of one transformer layer for one micro-batch on one tp rank, by part
    (`hbm`: the rank's achieved HBM bytes/s, which step_time also needs for the optimizer)."""
    eff = cluster.efficiency
    t, h = batch.tp, batch.hidden
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    qkv_width = h * (1.0 + 2.0 * batch.kv_heads / batch.heads)
    up_width = (batch.mlp_matrices - 1.0) * batch.ffn
    gemms = [  # (M, N, K) per tp rank
        (tokens, qkv_width / t, h),
        (tokens, h, h / t),
        (tokens, up_width / t, h),
        (tokens, h, batch.ffn / t),
    ]
    gemm_s = sum(2.0 * m * n * k / (peak * matmul_efficiency(m, n, k, eff, half)) for m, n, k in gemms)
    # Attention core: per head a (s x head_dim) x (head_dim x s) product and back. Flash attention with a
    # causal mask skips the masked half; the older unfused path computes the whole square.
    head_dim = h / batch.heads
    core_flops = 4.0 * tokens * batch.seq_len * h / t * np.where(batch.flash_attention, 0.5, 1.0)
    core_eff = matmul_efficiency(batch.seq_len / batch.cp, batch.seq_len, head_dim, eff, half) * eff.attention_relative_efficiency
    attention_s = core_flops / (peak * core_eff)
    # Memory-bound kernels (norms, GELU/SwiGLU, dropout, residual adds, unfused softmax). Counting their
    # reads and writes in Korthikanti's breakdown gives about one pass over the layer's activation
    # bytes in forward (GEMM inputs/outputs are hidden under the GEMMs); backward is charged 2x.
    elementwise_s = activation_bytes_per_layer(batch)["full"] / hbm
    return gemm_s, attention_s, elementwise_s


def _logits_forward(batch: CandidateBatch, cluster: ClusterSpec, peak, half):
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    m, n, k = tokens, batch.vocab / batch.tp, batch.hidden
    return 2.0 * m * n * k / (peak * matmul_efficiency(m, n, k, cluster.efficiency, half))


def _links(cluster: ClusterSpec, sizes, strides) -> dict[str, np.ndarray]:
    """Group links with the calibrated latency scale applied."""
    links = group_links_arrays(cluster, sizes, strides)
    scale = cluster.efficiency.latency_scale
    if scale != 1.0:
        links = {**links, "intra_latency_s": links["intra_latency_s"] * scale,
                 "inter_latency_s": links["inter_latency_s"] * scale}
    return links


def step_time(batch: CandidateBatch, cluster: ClusterSpec) -> dict[str, np.ndarray]:
    """Named seconds per step (summing to `step_time_s`) plus throughput figures, per candidate."""
    eff = cluster.efficiency
    # What one rank gets of its accelerator's compute and HBM bandwidth (computed once: both need it).
    share = rank_share(batch, cluster)
    peak = peak_flops_array(batch, cluster) * share
    hbm = cluster.accelerator.hbm_bytes_per_s * eff.hbm_efficiency * share
    w = DTYPE_BYTES[batch.dtype.astype(int)]
    t, p, d, c, v = batch.tp, batch.pp, batch.dp, batch.cp, batch.vpp
    m = batch.grad_accumulation
    layers_per_stage = np.ceil(batch.layers / p)  # the slowest stage
    tokens = batch.micro_batch * batch.seq_len / c

    half = matmul_half_size_array(batch, cluster)
    gemm_s, attention_s, elementwise_s = _layer_forward(batch, cluster, peak, half, hbm)
    compute_fwd_layer = gemm_s + attention_s
    logits_fwd = _logits_forward(batch, cluster, peak, half)
    recompute_layer = np.select(
        [batch.recompute == 2, batch.recompute == 1],
        [compute_fwd_layer + elementwise_s, attention_s + np.where(batch.flash_attention, 0.0, elementwise_s * 0.3)],
        0.0,
    )

    # Tensor-parallel all-reduces of the layer activations (T·h·w bytes), 4 per layer (+2 recompute).
    tp_links = _links(cluster, t, np.ones_like(t))
    up_eff, out_eff = eff.scale_up_bandwidth_efficiency, eff.scale_out_bandwidth_efficiency
    activation_msg = tokens * batch.hidden * w
    tp_count = 4.0 + np.where(batch.recompute == 2, 2.0, 0.0)
    tp_layer = tp_count * collectives.all_reduce_time(activation_msg, tp_links, up_eff, out_eff) * (1.0 - eff.tp_overlap)
    tp_layer = np.where(t > 1, tp_layer, 0.0)
    # Context parallel: K and V gathered in forward, their gradients reduce-scattered in backward.
    cp_links = _links(cluster, c, t)
    kv_bytes = 2.0 * tokens * batch.hidden * batch.kv_heads / batch.heads / t * w * c
    cp_layer = np.where(c > 1, 2.0 * collectives.all_gather_time(kv_bytes, cp_links, up_eff, out_eff), 0.0)
    cp_layer = cp_layer * (1.0 - eff.tp_overlap)

    # Pipeline point-to-point: one activation forward and one gradient backward per micro-batch and
    # virtual stage; with sequence parallelism the tensor is sharded over tp.
    pp_links = _links(cluster, p, t * c * d)
    spans_nodes = pp_links["nodes"] > 1
    p2p_bw = np.where(spans_nodes, pp_links["inter_bytes_per_s"], pp_links["intra_bytes_per_s"])
    p2p_eff = np.where(spans_nodes, out_eff, up_eff)
    p2p_lat = np.where(spans_nodes, pp_links["inter_latency_s"], pp_links["intra_latency_s"])
    p2p_msg = activation_msg / np.where(batch.seq_parallel, t, 1.0)
    # A group of one (pp = 1) has no link (bandwidth 0): divide by 1 there, the result is masked anyway.
    p2p_send = collectives.p2p_time(p2p_msg, np.where(p2p_bw > 0, p2p_bw, 1.0), p2p_lat, p2p_eff)
    p2p_mb = np.where(p > 1, 2.0 * v * p2p_send, 0.0)

    stage_forward = layers_per_stage * compute_fwd_layer + logits_fwd
    stage_backward = 2.0 * stage_forward
    stage_elementwise = layers_per_stage * 3.0 * elementwise_s  # forward + 2x in backward
    stage_recompute = layers_per_stage * recompute_layer
    stage_tp = layers_per_stage * (tp_layer + cp_layer)
    mb_compute = stage_forward + stage_backward + stage_elementwise + stage_recompute
    layer_overheads = layers_per_stage * eff.layer_overhead_s
    micro_batch_s = mb_compute + stage_tp + p2p_mb + eff.microbatch_overhead_s + layer_overheads

    # Data-parallel / ZeRO communication over the dp group (members tp·cp apart).
    _, params_local = stage_params(batch)  # the last stage's parameters per GPU
    grad_bytes = params_local * w
    dp_links = _links(cluster, d, t * c)
    # Collective launches per pass: gradients go in reduce buckets (DeepSpeed reduce_bucket_size 5e8
    # elements); ZeRO-3 fetches parameters module by module (two norms, QKV, output projection and two
    # MLP matrices per layer, plus the embedding, final norm and output layer) and at most one prefetch
    # bucket (5e7 elements) per call.
    bucket_calls = np.ceil(params_local / ZERO12_BUCKET_ELEMENTS)
    modules = (ZERO3_MODULES_PER_LAYER * layers_per_stage + ZERO3_MODULES_LAST_STAGE
               + np.where(p == 1, ZERO3_MODULES_FIRST_STAGE, 0.0))  # the last stage, which is the first when p = 1
    gather_calls = np.maximum(modules, np.ceil(params_local / ZERO3_BUCKET_ELEMENTS))
    all_reduce = collectives.all_reduce_time(grad_bytes, dp_links, up_eff, out_eff, bucket_calls)
    all_gather = collectives.all_gather_time(grad_bytes, dp_links, up_eff, out_eff, bucket_calls)
    zero3_gather = collectives.all_gather_time(grad_bytes, dp_links, up_eff, out_eff, gather_calls)
    zero = batch.zero
    many = d > 1
    per_mb_comm = np.where(many, np.select([zero == 3, zero == 2], [3.0 * zero3_gather, all_gather], 0.0), 0.0)
    # ZeRO-Infinity fetches this rank's weight shard from host/NVMe for forward and backward.
    pcie = cluster.node.pcie_bytes_per_s_per_accelerator
    per_mb_comm = per_mb_comm + np.where(batch.offload >= 2, 2.0 * w * params_local / d / pcie, 0.0)
    boundary_comm = np.where(many, np.select([zero == 0, zero == 1], [all_reduce, all_gather], 0.0), 0.0)
    after_step_comm = np.where(many & ((zero == 1) | (zero == 2)), all_gather, 0.0)

    slot = overlap(micro_batch_s, per_mb_comm, eff.dp_overlap)
    per_mb_exposed = slot - micro_batch_s
    last_backward = stage_backward + layers_per_stage * 2.0 * elementwise_s
    boundary_exposed = overlap(last_backward, boundary_comm, eff.dp_overlap) - last_backward
    bubble_slots = np.where(p > 1, (p - 1) / v, 0.0)

    # Optimizer: HBM-bound Adam over this GPU's optimizer shard, or CPU-Adam when offloaded.
    opt_params = np.where(zero >= 1, params_local / d, params_local)
    gpus_on_node = np.minimum(cluster.gpus_per_node, batch.gpus)
    host_adam = opt_params * gpus_on_node / cluster.node.host_adam_params_per_s
    offload_copies = 2.0 * w * opt_params / pcie + np.where(
        batch.offload_nvme, 2.0 * 16.0 * opt_params * gpus_on_node / cluster.node.nvme_bytes_per_s, 0.0)
    optimizer = np.where(batch.offload >= 1, host_adam, (ADAM_BYTES_PER_PARAM + w) * opt_params / hbm)
    optimizer = optimizer / eff.optimizer_relative_efficiency
    offload_copies = np.where(batch.offload >= 1, offload_copies, 0.0)

    parts = {
        "forward": m * stage_forward,
        "backward": m * stage_backward,
        "elementwise": m * stage_elementwise,
        "recompute": m * stage_recompute,
        "tp_comm": m * layers_per_stage * tp_layer,
        "cp_comm": m * layers_per_stage * cp_layer,
        "pp_p2p": m * p2p_mb,
        "bubble": bubble_slots * slot,
        "dp_comm_exposed": m * per_mb_exposed + boundary_exposed + after_step_comm,
        "optimizer": optimizer,
        "offload_copies": offload_copies,
        "overhead": m * (eff.microbatch_overhead_s + layer_overheads) + eff.step_overhead_s,
    }
    total = sum(parts.values())
    flop_parts = training_flops_breakdown(batch.layers, batch.hidden, batch.heads, batch.kv_heads, batch.ffn,
                                          batch.mlp_matrices, batch.vocab, batch.seq_len,
                                          batch.global_batch * batch.seq_len)
    flops = flop_parts["total"]
    # Hardware FLOPs add what recompute runs again: one forward of every layer (full) or of the attention core.
    recompute_flops = np.select([batch.recompute == 2, batch.recompute == 1],
                                [(flops - flop_parts["logits"]) / 3.0, flop_parts["attention_core"] / 3.0], 0.0)
    tflops_per_gpu = flops / total / batch.gpus
    return {
        "parts": parts,
        "step_time_s": total,
        "tokens_per_s": batch.global_batch * batch.seq_len / total,
        "model_flops_per_step": flops,
        "tflops_per_gpu": tflops_per_gpu / 1e12,
        "mfu": tflops_per_gpu / peak,
        "hfu": (flops + recompute_flops) / total / batch.gpus / peak,
        "comm_bytes_per_step": {
            "tp": np.where(t > 1, m * layers_per_stage * tp_count * activation_msg, 0.0),
            "dp": np.where(many, np.select([zero == 3, zero == 2], [3.0 * m * grad_bytes, (m + 1) * grad_bytes],
                                           2.0 * grad_bytes), 0.0),
            "pp": np.where(p > 1, m * 2.0 * v * p2p_msg, 0.0),
        },
    }
