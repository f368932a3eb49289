"""Seconds per optimizer step as a sum of named parts, for a batch of candidates. Pure, vectorised.

The step is simulated as a schedule, per layer, on every pipeline stage (first, fullest middle, last);
the slowest stage sets the pace:
  layer forward  = GEMMs (size-dependent efficiency) + attention core + memory-bound elementwise,
                   never faster than the CPU can issue its kernels (kernels x launch latency + dispatch);
  layer backward = 2 x GEMMs + attention backward + 2 x elementwise; recompute = one more forward
                   (full) or the attention core (selective);
  tensor parallel: 2 collectives per layer forward and 2 backward (+2 recompute), exposed unless the
                   layout overlaps them with the GEMMs (Transformer Engine userbuffers / async TP: then
                   only the first of tp chunks and what the GEMMs cannot cover are exposed);
  context parallel: K/V ring exchange hidden behind the attention core it feeds (ring attention);
  ZeRO-3 / FSDP: unit i+1's all-gather runs during unit i's compute (prefetch), so a pass exposes the
                   first gather plus, per unit, what its gather (+ reduce-scatter in backward) exceeds
                   the unit's compute by; the framework sets the calls per unit; ZeRO++ / MiCS / HSDP change
                   the groups, bytes and collectives of those gathers and reductions (cost.hierarchy), and
                   ZeRO-Infinity's fetch from host / NVMe joins the same chain (cost.offload);
  ZeRO-0/1/2: bucketed gradient reduce behind the last micro-batch's backward (a two-stage pipeline of
                   B buckets exposes max(a, b) + min(a, b)/B - a), ZeRO-2 in DeepSpeed after every
                   micro-batch; the parameter all-gather after the step behind the next forward where the
                   framework overlaps it (Megatron's distributed optimizer), else exposed;
  pipeline: m + (p-1)/v micro-batch slots (1F1B / interleaved bubble, Narayanan et al. 2021) of the
                   slowest stage, with p2p sends hidden where the framework overlaps them.
Then the optimizer (memory-bound Adam on HBM, or CPU-Adam with PCIe/NVMe copies when offloaded), and for
sharded data parallelism the HBM copies around its collectives (FSDP1's flat-parameter passes, FSDP2's
copy-in/out, DeepSpeed ZeRO-3's gradient bucket; `shard_copies`).
Mixture-of-experts layers (only in batches with MoE models; `cost/moe.py`) add, averaged over the layers,
the experts' grouped GEMMs, the router and the token permutation, the dispatch/combine all-to-all over the
ep group (exposed, or hidden behind the other micro-batch where the layout overlaps it), the experts'
gradient reduction over the expert data-parallel group and their Adam step; DualPipe sets the bubble.

Collectives are timed as NCCL runs them (`collectives`), over the links each group crosses
(`topology`). What differs between frameworks is looked up in `planner.frameworks`, never branched on.
`Efficiency.dp_overlap` / `tp_overlap` are residuals: the fraction of the communication the schedule can
hide that is hidden in practice (1 = the schedule's ideal; calibration fits them, e.g. CPU gloo ranks).
"""

from __future__ import annotations

import numpy as np

from planner.cost import collectives, distinct, hierarchy, kernels, moe, offload, shard_copies, zero3_fetch
from planner.cost.memory import (STAGE_STATE_COLUMNS, activation_bytes_per_layer, element_bytes, fp32_accumulation_rows,
                                 state_sharding_degrees, unsharded_through_step)
from planner.frameworks import batch_framework_arrays
from planner.frameworks.moe import bubble_slots as moe_bubble_slots
from planner.specs.hardware import DTYPES, ClusterSpec, Efficiency
from planner.specs.layout import (DTYPE_BYTES, DTYPE_CODES, CandidateBatch, padded_vocab, stage_argmax,
                                  stage_param_counts)
from planner.specs.model import attended_keys, training_flops_breakdown
from planner.specs.topology import group_links_arrays

ADAM_BYTES_PER_PARAM = 28.0  # fp32 Adam touches p, m, v, g (read 16) and writes p, m, v (12); + w-byte weight copy
# Cross-entropy over the vocabulary is memory-bound and runs in fp32 (Megatron's
# `vocab_parallel_cross_entropy`, PyTorch's `cross_entropy` on upcast logits): per logit element the
# forward reads the 16-bit logits (2) and writes fp32 (4), the max/sum-exp pass reads them (4) and the
# softmax is written for backward (4); backward reads it (4) and writes the 16-bit gradient (2). Derived: 20.
CROSS_ENTROPY_BYTES_PER_LOGIT = 20.0


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
    sizes = np.array([cluster.matmul_half_size(d) if getattr(cluster.accelerator.peak_flops, d) else np.nan
                      for d in DTYPES])
    return sizes[batch.dtype.astype(int)]


def overlap(compute, comm, eta):
    """Time of compute and communication that overlap by factor eta in [0, 1]: max() .. sum()."""
    return np.maximum(compute, comm) + (1.0 - eta) * np.minimum(compute, comm)


def hidden_behind(compute, comm, chunks, eta):
    """Exposed seconds of `comm` split into `chunks` pieces pipelined against `compute` of the same
    pieces (a two-stage pipeline: max(a, b) + min(a, b)/chunks - a), with the residual eta of what the
    schedule could hide actually hidden."""
    ideal = np.maximum(compute, comm) + np.minimum(compute, comm) / chunks - compute
    if eta == 1.0:  # the default: nothing beyond the schedule
        return ideal
    return ideal + (1.0 - eta) * (comm - ideal)


def _behind_later_chunks(backward, comm, buckets, eta, v, p):
    """Exposed seconds of a gradient reduction launched chunk by chunk (MegaScale section 3.2).

    With v model chunks per stage, chunk j's gradients are final when its last micro-batch backward is done;
    in the interleaved 1F1B cool-down about p chunk-steps of backward (each backward / v) separate one
    chunk's end from the next, so the first v-1 chunks' reductions (comm (v-1)/v) run behind a window of
    (v-1) p backward / v, and the last chunk's (comm / v) behind its own buckets as in `hidden_behind`.
    Derived from the schedule, an approximation: the earlier chunks' reductions are taken as one pipelined
    stream against that window.
    """
    last = hidden_behind(backward / v, comm / v, np.maximum(buckets / v, 1.0), eta)
    window = (v - 1.0) * p * backward / v
    earlier = np.maximum(comm * (v - 1.0) / v - eta * window, comm * (v - 1.0) / v * (1.0 - eta))
    return last + earlier


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


def _output_layer_rates(batch: CandidateBatch, cluster: ClusterSpec, gemm_peak, half):
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


def _attention_peak(batch: CandidateBatch, cluster: ClusterSpec, peak):
    """Attention runs in bf16 even in fp8 training (Transformer Engine keeps dot-product attention in
    bf16 unless fp8 attention is asked for: `transformer_engine/pytorch/attention`, fp8_dpa=False)."""
    bf16 = cluster.accelerator.peak_flops.bf16
    return np.where(batch.dtype == DTYPE_CODES["fp8"], bf16 if bf16 else peak, peak)


# Which rows of kernels.ATTENTION_KERNELS an accelerator's fused attention takes, by the accelerator's
# name: Hopper kernels on Hopper (Blackwell assumed to reach at least the Hopper fraction of its own peak),
# FlashAttention-2 on Ampere. Any other device (V100, MI250X, CPUs) has no published table here: its fused
# attention is timed as the two GEMMs it performs, like the unfused path, with attention_relative_efficiency.
FUSED_ATTENTION_TABLE = (("H100", "h100"), ("H200", "h100"), ("H800", "h100"), ("H20", "h100"),
                         ("B200", "h100"), ("A100", "a100"), ("A800", "a100"))


def attention_kernel_codes(batch: CandidateBatch, cluster: ClusterSpec):
    """Per candidate, the kernels.ATTENTION_KERNELS row its framework's fused attention runs on this GPU,
    or -1 when the accelerator has no published table."""
    from planner.frameworks import FRAMEWORKS, FRAMEWORK_NAMES

    name = cluster.accelerator.name.upper()
    gpu = next((table for tag, table in FUSED_ATTENTION_TABLE if tag in name), None)
    if gpu is None:
        return np.full(len(batch), -1)
    per_framework = np.array([
        kernels.attention_kernel_code(FRAMEWORKS[fw].attention_kernel_hopper if gpu == "h100"
                                      else FRAMEWORKS[fw].attention_kernel_ampere, gpu)
        for fw in FRAMEWORK_NAMES])
    return per_framework[batch.framework.astype(int)]


def _attention_table_lookup(head_dim, local_seq, code):
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


def _layer(batch: CandidateBatch, cluster: ClusterSpec, peak, gemm_peak, half, hbm, fw):
    """Seconds of one transformer layer for one micro-batch on one tp rank, by part."""
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
    if batch.core_width is None:
        gemm = sum(2.0 * m * n * k / (gemm_peak * matmul_efficiency(m, n, k, eff, half)) for m, n, k in gemms)
    else:  # attention variants / MoE: a model may have no dense MLP (ffn 0)
        gemm = sum(gemm_seconds(m, n, k, gemm_peak, eff, half) for m, n, k in gemms)
    # Attention core: per head (s x head_dim) x (head_dim x s) and back. Flash attention with a causal
    # mask skips the masked half; the older unfused path computes the whole square. MLA and heads whose
    # width differs from h/heads multiply by their own core width (model.flops_columns).
    core = h if batch.core_width is None else batch.core_width
    head_dim = core / batch.heads
    attention_peak = _attention_peak(batch, cluster, peak)
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
    code = attention_kernel_codes(batch, cluster)
    tabled = code >= 0
    safe_code = np.where(tabled, code, 0)
    # Fractions of the kernel's own GPU peak, taken as fractions of this accelerator's peak.
    flash_fwd, flash_bwd = _attention_table_lookup(head_dim, local_seq, safe_code)
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
    attention_bwd = bwd_ratio * core_flops / (attention_peak * bwd_eff)
    # Memory-bound kernels (norms, GELU/SwiGLU, dropout, residual adds, unfused softmax): about one pass
    # over the layer's activation bytes in forward (Korthikanti's breakdown), 2x in backward.
    elementwise = activation_bytes_per_layer(batch)["full"] / hbm
    # fp8 GEMMs first cast their inputs (read 2 bytes, write 1; current scaling reads them once more for the amax).
    fp8 = batch.dtype == DTYPE_CODES["fp8"]
    fp8_casts = 0.0 if not fp8.any() else np.where(
        fp8, sum(kernels.fp8_linear_cast_hbm_bytes(m, n, k, True, batch.fp8_current_scaling)
                 for m, n, k in gemms) / hbm, 0.0)
    forward = gemm + attention + elementwise + fp8_casts / 2.0  # the cast bytes are for forward + backward
    backward = 2.0 * gemm + attention_bwd + 2.0 * elementwise + fp8_casts / 2.0
    recompute = np.select([batch.recompute == 2, batch.recompute == 1],
                          [forward, attention + np.where(batch.flash_attention, 0.0, 0.3 * elementwise)], 0.0)
    # The CPU issues every kernel: a layer is never faster than its launches (eager frameworks).
    eager = fw["eager_dispatch"] > 0
    issue_fwd = kernels.layer_launch_floor_s(kernels.FORWARD, t, batch.seq_parallel, eager)
    issue_bwd = kernels.layer_launch_floor_s(kernels.BACKWARD, t, batch.seq_parallel, eager)
    # What the CPU needs to issue each pass; step_time charges the part the GPU's work (compute and
    # exposed communication) does not already cover.
    issue = {"forward": issue_fwd, "backward": issue_bwd,
             "recompute": np.where(batch.recompute == 2, issue_fwd, 0.0)}
    return {"gemm": gemm, "attention": attention, "attention_backward": attention_bwd, "forward": forward, "backward": backward,
            "recompute": recompute, "elementwise": elementwise, "issue": issue}


def _links(cluster: ClusterSpec, sizes, strides) -> dict[str, np.ndarray]:
    """Group links with the calibrated latency scale applied."""
    links = group_links_arrays(cluster, sizes, strides)
    scale = cluster.efficiency.latency_scale
    if scale != 1.0:
        links = {**links, "intra_latency_s": links["intra_latency_s"] * scale,
                 "inter_latency_s": links["inter_latency_s"] * scale}
    return links


def _layout_links(batch: CandidateBatch, cluster: ClusterSpec, group) -> dict[str, np.ndarray]:
    """_links of the group `group(tp, pp, dp, cp) -> (sizes, strides)`, computed once per distinct layout shape
    and spread to the rows (the same numbers as _links on the rows' own sizes)."""
    if len(batch) == 0:
        return _links(cluster, *group(batch.tp, batch.pp, batch.dp, batch.cp))
    sizes, inverse = distinct.parallel_shapes(batch)
    few = _links(cluster, *group(sizes["tp"], sizes["pp"], sizes["dp"], sizes["cp"]))
    names = tuple(few)
    table = np.stack([np.broadcast_to(few[name], sizes["tp"].shape) for name in names]).astype(float)
    return dict(zip(names, np.take(table, inverse, axis=1)))


# Groups as (sizes, strides) of the layout's parallel sizes, ranks placed tp-innermost, then cp, dp, pp.
def tp_group(t, p, d, c):
    return t, np.ones_like(t)


def cp_group(t, p, d, c):
    return c, t


def pp_group(t, p, d, c):
    return p, t * c * d


def dp_cp_group(t, p, d, c):  # gradient reduction: cp ranks hold the same weights
    return d * c, t


def dp_group(t, p, d, c):
    return d, t * c


def _collective_kwargs(cluster: ClusterSpec):
    eff = cluster.efficiency
    return {"efficiency_up": eff.scale_up_bandwidth_efficiency, "efficiency_out": eff.scale_out_bandwidth_efficiency,
            "nvls": cluster.node.scale_up.nvls}


class _Rows:
    """The candidates that run a collective, and their links, picked once and reused by every call on
    them. A search scores candidates of every kind at once (ZeRO-3 beside ZeRO-1, tp 1 beside tp 8): each
    row pays only for the collectives it runs, and the numbers are the same elementwise."""

    # Above this share of rows, computing every row and zeroing the others beats gathering the rows' links
    # and scattering the result back (the collectives are elementwise, so the numbers are the same).
    DENSE_SHARE = 0.5

    def __init__(self, mask, links):
        mask = np.asarray(mask, dtype=bool)
        self.size = mask.shape
        self.every = bool(mask.all())
        self.dense = not self.every and np.count_nonzero(mask) > self.DENSE_SHARE * mask.size
        self.mask = mask
        self.rows = None if self.every or self.dense else np.flatnonzero(mask)
        self.links = links if self.rows is None else {k: v[self.rows] for k, v in links.items()}

    def run(self, collective, volume, calls=1.0, **kw):
        """`collective` on these rows, 0 elsewhere."""
        if self.every:
            return collective(volume, self.links, calls=calls, **kw)
        if self.dense:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                return np.where(self.mask, collective(volume, self.links, calls=calls, **kw), 0.0)
        out = np.zeros(self.size)
        if self.rows.size:
            pick = lambda a: a[self.rows] if np.ndim(a) else a  # noqa: E731
            out[self.rows] = collective(pick(volume), self.links, calls=pick(calls), **kw)
        return out


def _only_where(mask, collective, volume, links, calls=1.0, **kw):
    """`collective` on the rows where `mask` holds, 0 elsewhere (one-off form of _Rows)."""
    return _Rows(mask, links).run(collective, volume, calls=calls, **kw)


def _tensor_parallel(batch, cluster, layer, w, fw):
    """Exposed tensor- and context-parallel seconds per layer per micro-batch, forward and backward."""
    eff = cluster.efficiency
    t, c = batch.tp, batch.cp
    kw = _collective_kwargs(cluster)
    tokens = batch.micro_batch * batch.seq_len / c
    message = tokens * batch.hidden * w
    tp_links = _layout_links(batch, cluster, tp_group)
    one = _only_where(t > 1, collectives.all_reduce_time, message, tp_links, **kw)
    # Overlapped (TE userbuffers, async TP): the collective is split into tp chunks pipelined against the
    # GEMM it feeds; the first chunk and what the GEMMs cannot cover stay exposed. Stacks whose overlap needs
    # one NVLink domain (Framework.tp_comm_overlap_within_scale_up) do not overlap a tp group across nodes.
    overlapped = batch.tp_comm_overlap & ((fw["tp_comm_overlap_within_scale_up"] == 0) | (tp_links["nodes"] <= 1))

    def exposed(count, gemm):
        comm = count * one
        hidden = hidden_behind(gemm, comm, t, eff.tp_overlap)
        return np.where(overlapped, hidden, comm)

    calls = fw["tp_collectives_per_layer"]  # 2, or 1 with the parallel block
    recompute_tp = np.where(batch.recompute == 2, exposed(calls, layer["gemm"]), 0.0)
    tp_fwd, tp_bwd = exposed(calls, layer["gemm"]), exposed(calls, 2.0 * layer["gemm"]) + recompute_tp
    # Context parallel (ring attention): K and V travel around the cp ring while the attention core
    # computes on the chunk at hand; forward moves K, V; backward K, V and their gradients.
    kv_bytes = 2.0 * tokens * batch.hidden * batch.kv_heads / batch.heads / t * w * c
    kv = _only_where(c > 1, collectives.all_gather_time, kv_bytes, _layout_links(batch, cluster, cp_group), **kw)
    cp_fwd = np.where(c > 1, hidden_behind(layer["attention"], kv, c, 1.0), 0.0)
    cp_bwd = np.where(c > 1, hidden_behind(layer["attention_backward"], 2.0 * kv, c, 1.0), 0.0)
    return {"tp": tp_fwd + tp_bwd, "cp": cp_fwd + cp_bwd, "forward": tp_fwd + cp_fwd, "backward": tp_bwd + cp_bwd, "tp_count": calls * (2.0 + np.where(batch.recompute == 2, 1.0, 0.0)),
            "message": message}


def _pipeline_transfers(batch, cluster, message, fw):
    """Seconds a stage waits for its point-to-point transfers per micro-batch and virtual stage (activation
    forward, gradient back), and the bytes of one transfer; with sequence parallelism the tensor is sharded over
    tp. It reads only distinct.LAYER_COLUMNS (tp, pp, dp, cp, the tp message, the stack, sp): _layer_seconds runs it
    once per distinct combination of them; _pipeline_send takes it over the virtual stages."""
    t, p = batch.tp, batch.pp
    links = _layout_links(batch, cluster, pp_group)
    spans_nodes = links["nodes"] > 1
    eff = cluster.efficiency
    bandwidth = np.where(spans_nodes, links["inter_bytes_per_s"], links["intra_bytes_per_s"])
    efficiency = np.where(spans_nodes, eff.scale_out_bandwidth_efficiency, eff.scale_up_bandwidth_efficiency)
    latency = np.where(spans_nodes, links["inter_latency_s"], links["intra_latency_s"])
    scattered = fw["p2p_scatter_gather"] > 0
    size = message / np.where(batch.seq_parallel | scattered, t, 1.0)
    # A group of one (pp = 1) has no link (bandwidth 0): divide by 1 there, the result is masked anyway.
    send = collectives.p2p_time(size, np.where(bandwidth > 0, bandwidth, 1.0), latency, efficiency)
    # Transfers the stage waits for one after another (2: send and receive of a step issued together; 4: each
    # its own blocking call, frameworks/base.py), plus latency-only metadata sends of partitioned tensors.
    serial = fw["p2p_transfers_per_microbatch"] * send + fw["p2p_meta_sends_per_microbatch"] * latency
    # Scatter/gather without sequence parallelism: the received activation (forward) and gradient (backward)
    # are all-gathered over tp before use, where the framework does it on the compute stream.
    regather = scattered & ~np.asarray(batch.seq_parallel, dtype=bool) & (fw["p2p_gather_after_recv"] > 0) & (t > 1) & (p > 1)
    gather = (_only_where(regather, collectives.all_gather_time, message, _links(cluster, t, np.ones_like(t)),
                          **_collective_kwargs(cluster)) if regather.any() else np.zeros(len(batch)))
    return serial + 2.0 * gather, size


def _pipeline_send(batch, transfers, size, fw):
    """Exposed point-to-point seconds per micro-batch per stage, and the bytes each stage sends (the
    _pipeline_transfers of every virtual stage)."""
    p = batch.pp
    # Megatron overlaps the sends with compute only in its interleaved schedule (`overlap_p2p_comm`,
    # forced off without virtual stages: megatron/training/arguments.py).
    overlapped = (fw["p2p_overlap"] > 0) & ((batch.vpp > 1) | (fw["p2p_overlap_without_interleaving"] > 0))
    exposed = np.where(overlapped, 0.0, batch.vpp * transfers)
    # Bytes each stage sends per micro-batch: the activation forward and the gradient back, however issued.
    return np.where(p > 1, exposed, 0.0), np.where(p > 1, 2.0 * batch.vpp * size, 0.0)


def _data_parallel(batch, cluster, fw, w, stage, params, m):
    """Exposed data-parallel seconds per step: ZeRO-3/FSDP gathers per micro-batch, gradient reduction,
    parameter all-gather after the step. `stage` has the pacing stage's layers and seconds."""
    eff = cluster.efficiency
    kw = _collective_kwargs(cluster)
    t, c, d = batch.tp, batch.cp, batch.dp
    zero = batch.zero
    reduce_bytes = element_bytes(batch, fw)["reduce"]
    replicas = d * c
    many = replicas > 1
    zero3 = many & (zero == 3)
    timed = _data_parallel_collectives(batch, cluster)
    shard_links = None  # this layout's group links, looked up per row only where a rarer stack needs them

    def row_shard_links():
        return _shard_links(batch, cluster, fw) if shard_links is None else shard_links

    # ZeRO-3 / FSDP: per transformer layer, its parameters gathered (forward, again in backward) and its
    # gradients reduce-scattered; the rest of the model (embedding, head) once each.
    unit = batch.layer_params / t
    gather, scatter = timed["gather"], timed["scatter"]
    units = stage["layers"]
    prefetch = fw["prefetches_next_unit"] > 0
    # Stacks whose fetch schedule has limits of its own (cost/zero3_fetch.py; DeepSpeed before v0.5.5): the
    # share of each pass's gathers that can be prefetched, and the re-gathers after a full recompute.
    limited = zero3 & (np.isfinite(fw["prefetch_live_limit_elements"]) | np.isfinite(fw["reuse_limit_elements"]))
    regather_calls, regathered_bytes = np.zeros(len(batch)), 0.0
    if limited.any():
        share_fwd, share_bwd = zero3_fetch.prefetched_shares(batch, fw["prefetch_live_limit_elements"])
        regather_elements, regather_calls = zero3_fetch.regathered(batch, fw["reuse_limit_elements"])
        regather_calls = np.where(limited, regather_calls, 0.0)
        regathered_bytes = np.where(limited, m * units * w * regather_elements, 0.0)
        shard_links = row_shard_links()
        gather_bwd = gather + _only_where(limited & (regather_calls > 0), collectives.all_gather_time,
                                          w * regather_elements, shard_links, calls=regather_calls, **kw)
    else:
        gather_bwd = gather

    def behind_units(comm, unit_compute):
        """Exposed seconds of a pass whose unit i+1 communication runs behind unit i's compute: the first unit's
        in full, then what each later one's exceeds its predecessor's compute."""
        return comm + (units - 1.0) * np.maximum(comm - unit_compute, 0.0)

    def hidden_in_practice(ideal, all_units):
        """The schedule's `ideal` exposure, with the residual eta of what it could hide actually hidden."""
        return ideal + (1.0 - eff.dp_overlap) * (all_units - ideal)

    def per_micro_batch(gather_fwd, gather_bwd, scatter_):
        """Exposed seconds of one micro-batch's ZeRO-3 traffic over the transformer layers."""
        fwd_exposed = behind_units(gather_fwd, stage["layer_forward"])
        bwd_exposed = behind_units(gather_bwd + scatter_, stage["layer_backward"])
        all_units = units * (gather_fwd + gather_bwd + scatter_)
        ideal = np.where(prefetch, fwd_exposed + bwd_exposed, all_units)
        if limited.any():  # what is not prefetched waits in full
            partial = (share_fwd * fwd_exposed + (1.0 - share_fwd) * units * gather_fwd
                       + share_bwd * bwd_exposed + (1.0 - share_bwd) * units * (gather_bwd + scatter_))
            ideal = np.where(prefetch & limited, partial, ideal)
        return hidden_in_practice(ideal, all_units)

    # FSDP2 under pipelining (memory.unsharded_through_step): the stage is gathered once per step, in the first
    # micro-batch's forward, and reduced once, after the last backward.
    once = many & unsharded_through_step(batch, fw)

    def per_step_once(gather_fwd, scatter_):
        """Exposed seconds of a step that gathers each unit once (the first micro-batch's forward, prefetched
        as ever) and reduce-scatters every unit after the last backward (`perform_reduce_grad`): no compute
        is left on the stage to hide the reduction behind."""
        all_units = units * gather_fwd
        ideal = np.where(prefetch, behind_units(gather_fwd, stage["layer_forward"]), all_units)
        return hidden_in_practice(ideal, all_units) + units * scatter_

    outside = np.maximum(params - units * unit, 0.0)
    outside_gather, outside_scatter = timed["outside_gather"], timed["outside_scatter"]
    layers_mb = per_micro_batch(gather, gather_bwd, scatter)
    zero3_mb = layers_mb + 2.0 * outside_gather + outside_scatter
    host_mb = 0.0
    if (zero3 & (fw["host_ops_per_rank_per_call"] > 0)).any():  # stacks whose collectives walk the group
        # The host issues a layer's reduce-scatters while the GPU is busy with that layer's backward, and the
        # collectives of the chain run on the network meanwhile: the layer takes the longest of the three, so
        # the issue hides only behind what the compute and the chain's own traffic already take (hiding it
        # behind the compute alone as well would count the same window twice).
        unit_backward = np.maximum(stage["layer_backward"], gather_bwd + scatter)
        host_mb = np.where(zero3, zero3_fetch.host_issue_s(fw, row_shard_links(), units, outside > 0, unit_backward,
                                                           regather_calls), 0.0)
    hbm = cluster.accelerator.hbm_bytes_per_s * eff.hbm_efficiency * rank_share(batch.gpus, cluster)
    flat_step = m * zero3_mb
    if once.any():
        flat_step = np.where(once, per_step_once(gather, scatter) + outside_gather + outside_scatter, flat_step)
    zero3_step = flat_step + m * host_mb + hierarchy.zero3_step_change(
        batch, cluster, w, reduce_bytes, unit, outside, flat_step, m, once, per_micro_batch, per_step_once, kw,
        lambda sizes, strides: _links(cluster, sizes, strides), hbm)
    # (Without re-gathers the layers' chain above is the one the fetch is added to: not computed twice.)
    offload_fetch, offload_fetch_s = offload.parameter_fetch(
        batch, cluster, w, units, unit, outside, gather, scatter, m, per_micro_batch, once, per_step_once,
        chain_without_fetch=layers_mb if gather_bwd is gather else None)

    # ZeRO-0/1/2: bucketed gradient reduction behind a backward pass.
    buckets = _gradient_buckets(batch, fw, params)
    all_reduce, reduce_scatter = timed["all_reduce"], timed["reduce_scatter"]
    sharded_12 = many & ((zero == 1) | (zero == 2))
    backward = stage["backward"]
    overlapped = batch.dp_comm_overlap
    per_chunk = (fw["dp_reduce_per_model_chunk"] > 0) & (batch.vpp > 1)
    behind = lambda comm: np.where(overlapped, np.where(  # noqa: E731
        per_chunk, _behind_later_chunks(backward, comm, buckets, eff.dp_overlap, batch.vpp, batch.pp),
        hidden_behind(backward, comm, buckets, eff.dp_overlap)), comm)
    every_mb = (zero == 2) & (fw["zero2_reduces_every_microbatch"] > 0) & ~once
    # Each row's own reduction (all-reduce at ZeRO-0, else reduce-scatter) behind its backward, in one pass of
    # `behind` (elementwise: the same numbers as a pass over each collective, at a third of the cost).
    reduce_behind = behind(np.where(zero == 0, all_reduce, reduce_scatter))
    # Under pipelining (once) FSDP2's ZeRO-2 reduces after the last backward, behind nothing.
    reduce = np.select([zero == 0, once, every_mb], [reduce_behind, reduce_scatter, m * reduce_behind], reduce_behind)
    # ZeRO-1/2: updated 16-bit parameters all-gathered after the step, behind the next forward if overlapped
    # (--fp8-param-gather: the layers' Linear weights in fp8, one byte).
    gathered_bytes = _parameter_gather_bytes(batch, w, params, units)
    param_gather_s = timed["param_gather"]
    param_gather = np.where(batch.dp_comm_overlap & (fw["param_gather_overlap"] > 0),
                            hidden_behind(stage["forward"], param_gather_s, buckets, eff.dp_overlap), param_gather_s)
    # FSDP's ZeRO-2 gathers before every micro-batch's forward (Framework.zero2_gathers_every_microbatch).
    gathers = np.where((zero == 2) & (fw["zero2_gathers_every_microbatch"] > 0) & ~once, m, 1.0)
    reductions = np.where(every_mb, m, 1.0)
    exposed = np.select([zero == 3], [zero3_step], reduce + np.where(zero >= 1, gathers * param_gather, 0.0))
    zero3_bytes_per_element = np.where(once, w + reduce_bytes, m * (2.0 * w + reduce_bytes))  # gathers + reductions
    bytes_moved = np.select([zero == 3], [zero3_bytes_per_element * params + regathered_bytes],
                            reduce_bytes * params * np.where(zero == 0, 2.0, reductions)
                            + np.where(zero >= 1, gathers * gathered_bytes, 0.0))
    hierarchical = np.flatnonzero(hierarchy.hierarchical_rows(batch))
    if hierarchical.size:  # ZeRO++ / shard-group rows only: the rest keep the flat count above
        sub, sub_fw, pick = hierarchy.sub_batch(batch, hierarchical)
        bytes_moved = np.array(bytes_moved, dtype=float)
        bytes_moved[hierarchical] = hierarchy.zero3_bytes_moved(sub, cluster, sub_fw, pick(w), pick(reduce_bytes),
                                                                pick(params), pick(m), pick(once))
    # The seconds of each compute window this traffic hides in, which the experts' own reduction over the same
    # links cannot use again (_expert_data_parallel): the last backward (gradient reduction, per reduction),
    # the first forward (parameter all-gather) and, with ZeRO-3, each micro-batch's passes. MoE batches only:
    # the dense search's hot path does not pay for it.
    used = None
    if batch.has_moe:
        reduce_s = np.select([zero == 0, once, every_mb], [all_reduce, reduce_scatter, m * reduce_scatter],
                             reduce_scatter)
        zero3_s = np.where(once, units * (gather + scatter) + outside_gather + outside_scatter,
                           m * (units * (gather + gather_bwd + scatter) + 2.0 * outside_gather + outside_scatter))
        zero3_on = many & (zero == 3)
        used = {"backward": np.where(many & ~zero3_on, np.maximum(reduce_s - reduce, 0.0) / reductions, 0.0),
                "forward": np.where(many & ~zero3_on, np.maximum(param_gather_s - param_gather, 0.0), 0.0),
                # ZeRO-Infinity's fetch from host or NVMe runs in the same prefetch chain as the gathers.
                "micro_batch": np.where(zero3_on, np.maximum(zero3_s + offload_fetch_s - flat_step - offload_fetch,
                                                             0.0) / m, 0.0)}
    return np.where(many, exposed, 0.0), np.where(many, bytes_moved, 0.0), offload_fetch, used


def _stage_layer_params(batch, stage_layers):
    """Parameters of the transformer layers (per tp rank) on the stage whose data-parallel traffic the step waits for."""
    return stage_layers * batch.layer_params / batch.tp


def _parameter_gather_bytes(batch, w, params, stage_layers):
    """Bytes of the ZeRO-1/2 parameter all-gather after the step (--fp8-param-gather: the layers' Linear weights
    in fp8, one byte)."""
    return w * params - np.where(batch.fp8_param_gather, (w - 1.0) * _stage_layer_params(batch, stage_layers), 0.0)


def _gradient_buckets(batch, fw, params):
    """Buckets the stage's gradients are reduced in (ZeRO-0/1/2), at least one."""
    bucket_elements = np.maximum(fw["grad_bucket_elements"], fw["grad_bucket_elements_per_rank"] * batch.dp)
    return np.maximum(np.ceil(params / bucket_elements), 1.0)


# What the stage split reads (specs.layout.stage_layers, stage_param_counts): the model, tp, pp, vpp and the
# stack (its vocabulary padding).
STAGE_COLUMNS = distinct.MODEL_COLUMNS + ("tp", "pp", "vpp", "framework")


def _stage_split(batch):
    """Layers and parameters (per tp rank) of the first, middle and last pipeline stage, and the data-parallel
    stage's (_data_parallel_stage), computed once per distinct combination of STAGE_COLUMNS (a search has a few
    dozen: cost/distinct.py) and spread to the candidates; once per batch."""
    return batch.cached("stage_split", lambda b: distinct.once_per_combination(b, STAGE_COLUMNS, _stage_split_per_row))


def _stage_split_per_row(batch):
    return {"layers": batch.stages, "params": stage_param_counts(batch), "data_parallel": _most_parameters_stage(batch)}


def _data_parallel_stage(batch):
    """The stage holding the most parameters, whose data-parallel traffic the step waits for (it is fixed by the
    model and layout, not by the hardware: taking the pacing stage's would let a slower GPU move the pace and
    shrink the traffic): its parameters, its layers and whether it is the last stage."""
    return _stage_split(batch)["data_parallel"]


def _most_parameters_stage(batch):
    first_layers, middle_layers, last_layers = batch.stages
    first_params, middle_params, last_params = stage_param_counts(batch)
    dp_stage = stage_argmax((first_params, middle_params, last_params))
    params = np.choose(dp_stage, [first_params, middle_params, last_params])
    dp_layers = np.choose(dp_stage, [first_layers, middle_layers, last_layers])
    return params, dp_layers, (dp_stage == 2) | (batch.pp == 1)


def _shard_links(batch, cluster, fw):
    """Links of the group the model states are sharded over: dp x cp where the stack shards over context-parallel
    ranks too, else dp."""
    # Gradients of cp ranks (different tokens, same weights) are reduced together with dp's.
    grad_links = _layout_links(batch, cluster, dp_cp_group)
    shard_over_cp = fw["shards_over_context_parallel"] > 0
    if shard_over_cp.all() or (batch.cp == 1).all():  # the same group either way: no second lookup
        return grad_links
    return {k: np.where(shard_over_cp, grad_links[k], v) for k, v in _layout_links(batch, cluster, dp_group).items()}


# What _data_parallel_collectives reads: the model, the parallel sizes and vpp (the stage's parameters and
# groups), ZeRO, the dtypes and the stack; not the micro-batch, the batch size, recompute or the hierarchy.
DATA_PARALLEL_COLUMNS = distinct.MODEL_COLUMNS + distinct.PARALLEL_SIZES + (
    "vpp", "zero", "dtype", "framework", "grad_reduce_in_fp32", "fp8_param_gather")


def _data_parallel_collectives(batch, cluster):
    """Seconds of the flat data-parallel collectives of _data_parallel (ZeRO-3 gathers and reduce-scatters per
    layer and outside the layers, ZeRO-0 all-reduce, ZeRO-1/2 reduce-scatter and parameter all-gather), once per
    distinct combination of DATA_PARALLEL_COLUMNS (cost/distinct.py) and spread to the candidates."""
    return distinct.once_per_combination(batch, DATA_PARALLEL_COLUMNS,
                                         lambda b: _data_parallel_collectives_per_row(b, cluster))


def _data_parallel_collectives_per_row(batch, cluster):
    kw = _collective_kwargs(cluster)
    fw = batch_framework_arrays(batch)
    w = DTYPE_BYTES[batch.dtype.astype(int)]
    reduce_bytes = element_bytes(batch, fw)["reduce"]
    zero = batch.zero
    params, units, _ = _data_parallel_stage(batch)
    grad_links = _layout_links(batch, cluster, dp_cp_group)
    shard_links = _shard_links(batch, cluster, fw)
    many = batch.dp * batch.cp > 1
    zero3 = many & (zero == 3)
    unit = batch.layer_params / batch.tp
    zero3_rows = _Rows(zero3, shard_links)
    outside = np.maximum(params - units * unit, 0.0)
    outside_rows = _Rows(zero3 & (outside > 0), shard_links)
    buckets = _gradient_buckets(batch, fw, params)
    sharded_12 = many & ((zero == 1) | (zero == 2))
    return {
        "gather": zero3_rows.run(collectives.all_gather_time, w * unit, calls=fw["gathers_per_layer"], **kw),
        "scatter": zero3_rows.run(collectives.reduce_scatter_time, reduce_bytes * unit,
                                  calls=fw["scatter_calls_per_layer"], **kw),
        "outside_gather": outside_rows.run(collectives.all_gather_time, w * outside, calls=fw["gathers_outside_layers"],
                                           **kw),
        "outside_scatter": outside_rows.run(collectives.reduce_scatter_time, reduce_bytes * outside,
                                            calls=fw["scatter_calls_outside_layers"], **kw),
        "all_reduce": _only_where(many & (zero == 0), collectives.all_reduce_time, reduce_bytes * params, grad_links,
                                  calls=buckets, **kw),
        "reduce_scatter": _only_where(sharded_12, collectives.reduce_scatter_time, reduce_bytes * params, grad_links,
                                      calls=buckets, **kw),
        "param_gather": _only_where(sharded_12, collectives.all_gather_time, _parameter_gather_bytes(batch, w, params, units),
                                    shard_links, calls=buckets, **kw),
    }


def _optimizer(batch, cluster):
    """_optimizer_per_row, computed once per distinct combination of memory.STAGE_STATE_COLUMNS (it reads only
    columns the model states read too; the batch is numbered by that key for the memory model already) and spread
    to the candidates."""
    return distinct.once_per_combination(batch, STAGE_STATE_COLUMNS, lambda b: _optimizer_per_row(b, cluster))


def _optimizer_per_row(batch, cluster):
    """Adam over this GPU's optimizer shard on HBM, or CPU-Adam with its PCIe/NVMe copies when offloaded."""
    fw = batch_framework_arrays(batch)
    w = DTYPE_BYTES[batch.dtype.astype(int)]
    hbm = _rank_rates(batch, cluster)[1]
    params = _data_parallel_stage(batch)[0]
    eff = cluster.efficiency
    shard = state_sharding_degrees(batch, fw)["optimizer"]
    opt_params = np.where(batch.zero >= 1, params / shard, params)
    gpus_on_node = np.minimum(cluster.gpus_per_node, batch.gpus)
    pcie = cluster.node.pcie_bytes_per_s_per_accelerator
    host_adam = opt_params * gpus_on_node / cluster.node.host_adam_params_per_s
    # The node's NVMe is shared by its GPUs; each GPU also needs its own PCIe lanes. The optimizer state's
    # NVMe swaps run before and after CPU-Adam, not beside it: DeepSpeed pipelines them only with
    # offload_optimizer.pipeline_read / pipeline_write, off by default (runtime/zero/offload_config.py:78-84).
    nvme = 2.0 * 16.0 * opt_params * gpus_on_node / cluster.node.nvme_bytes_per_s
    copies = 2.0 * w * opt_params / pcie + np.where(batch.offload_nvme, nvme, 0.0)
    optimizer = np.where(batch.offload >= 1, host_adam, (ADAM_BYTES_PER_PARAM + w) * opt_params / hbm)
    return optimizer / eff.optimizer_relative_efficiency, np.where(batch.offload >= 1, copies, 0.0)


def _moe_layer(batch, cluster, gemm_peak, half, hbm, layer, comm):
    """The MoE parts of a layer (cost/moe.py) with the exposed all-to-all; None for a dense batch."""
    if not batch.has_moe:
        return None
    eff = cluster.efficiency
    parts = moe.moe_layer_times(batch, cluster, lambda m, n, k: gemm_seconds(m, n, k, gemm_peak, eff, half), hbm,
                                lambda size, stride: _links(cluster, size, stride), _collective_kwargs(cluster))
    # What the other micro-batch computes in this layer while the all-to-all runs (batch-level overlap).
    compute = moe.moe_fraction(batch) * (layer["forward"] + layer["backward"]) + parts["forward"] + parts["backward"]
    # It hides behind what the layer occupies the GPU for, its exposed tp/cp communication included: behind the
    # compute alone, compute that already hides the cp ring or tp collectives would hide the all-to-all again,
    # and a slower GPU would shorten the step.
    occupied = compute + moe.moe_fraction(batch) * (comm["forward"] + comm["backward"])
    parts["exposed"] = moe.exposed_ep_comm(parts, occupied)
    parts["sm_share"] = moe.sm_share_seconds(batch, compute)
    return parts


def _expert_data_parallel(batch, cluster, fw, w, stage, expert_params, dense_used):
    """Exposed seconds (and bytes) of the experts' gradient reduction over the expert data-parallel group
    (etp x ep consecutive ranks are one expert replica): all-reduce (ZeRO-0) or reduce-scatter and the
    parameter all-gather after the step (ZeRO-1/2), behind backward/forward where overlapped, as the dense
    gradients are; ZeRO-3 every micro-batch. It hides only in what the dense traffic leaves of each window
    (`dense_used`, from _data_parallel): both run on the same links while the same compute runs, so more
    compute can hide each at most once and never makes the step shorter."""
    eff = cluster.efficiency
    kw = _collective_kwargs(cluster)
    d = moe.expert_dp(batch)
    links = _links(cluster, d, batch.ep * batch.etp)
    reduce_bytes = element_bytes(batch, fw)["reduce"]
    bucket_elements = np.maximum(fw["grad_bucket_elements"], fw["grad_bucket_elements_per_rank"] * d)
    buckets = np.maximum(np.ceil(expert_params / bucket_elements), 1.0)
    many = (d > 1) & (expert_params > 0)
    sharded = batch.zero >= 1
    reduce = np.where(sharded, _only_where(many & sharded, collectives.reduce_scatter_time, reduce_bytes * expert_params,
                                           links, calls=buckets, **kw),
                      _only_where(many & ~sharded, collectives.all_reduce_time, reduce_bytes * expert_params, links,
                                  calls=buckets, **kw))
    gathered = np.where(batch.fp8_param_gather, 1.0, w) * expert_params  # --fp8-param-gather: fp8 expert weights
    gather = _only_where(many & sharded, collectives.all_gather_time, gathered, links, calls=buckets, **kw)
    overlapped = batch.dp_comm_overlap
    backward_left = np.maximum(stage["backward"] - dense_used["backward"], 0.0)
    forward_left = np.maximum(stage["forward"] - dense_used["forward"], 0.0)
    once = (np.where(overlapped, hidden_behind(backward_left, reduce, buckets, eff.dp_overlap), reduce)
            + np.where(overlapped & (fw["param_gather_overlap"] > 0),
                       hidden_behind(forward_left, gather, buckets, eff.dp_overlap), gather))
    # ZeRO-3 / FSDP: the experts' weights are gathered for forward and again for backward and their
    # gradients reduce-scattered every micro-batch, behind that micro-batch's compute where prefetched.
    m = batch.grad_accumulation
    zero3 = batch.zero == 3
    per_micro_batch = 2.0 * gather + reduce
    zero3_exposed = m * np.where(overlapped | (fw["prefetches_next_unit"] > 0),
                                 hidden_behind(np.maximum(stage["forward"] + stage["backward"] - dense_used["micro_batch"],
                                                          0.0), per_micro_batch, buckets, eff.dp_overlap),
                                 per_micro_batch)
    moved = reduce_bytes * expert_params * np.where(sharded, 1.0, 2.0) + np.where(sharded, gathered, 0.0)
    moved = np.where(zero3, m * (reduce_bytes + 2.0 * w) * expert_params, moved)
    return np.where(many, np.where(zero3, zero3_exposed, once), 0.0), np.where(many, moved, 0.0)


def _fp32_grad_accumulation(batch, fw, hbm):
    """Seconds per parameter per micro-batch of the stack's own pass adding 16-bit gradients into their fp32
    copy (memory.fp32_accumulation_rows); 0 elsewhere."""
    return np.where(fp32_accumulation_rows(batch, fw), fw["fp32_grad_accumulation_bytes"] / hbm, 0.0)


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



def _rank_rates(batch: CandidateBatch, cluster: ClusterSpec):
    """Peak FLOP/s and HBM bytes/s one rank gets of its accelerator, the GEMMs' half-efficiency size and peak."""
    share = rank_share(batch.gpus, cluster)
    peak = peak_flops_array(batch, cluster) * share
    hbm = cluster.accelerator.hbm_bytes_per_s * cluster.efficiency.hbm_efficiency * share
    half = matmul_half_size_array(batch, cluster)
    gemm_peak = gemm_peak_array(batch, cluster, peak)  # the dense and expert GEMMs' peak
    return peak, hbm, half, gemm_peak


def _layer_seconds(batch: CandidateBatch, cluster: ClusterSpec) -> dict:
    """_layer_seconds_per_row, computed once per distinct combination of distinct.LAYER_COLUMNS (what the per-layer
    times, their exposed tp/cp communication and the output layer read; a search has a few
    thousand among a million candidates: cost/distinct.py) and spread to the candidates. (Where the ranks share a
    node's compute, rank_share, a rank's peak also depends on the job's size: tp, pp, dp, cp are in the key.)"""
    with_layer = batch.has_moe  # the MoE parts read the layer's own arrays: spread them only for MoE batches
    return distinct.once_per_combination(batch, distinct.LAYER_COLUMNS,
                                         lambda b: _layer_seconds_per_row(b, cluster, with_layer))


def _layer_seconds_per_row(batch: CandidateBatch, cluster: ClusterSpec, with_layer: bool) -> dict:
    """One transformer layer's seconds per micro-batch by step part (`per_layer`) and their sum (`dense_total`),
    what the layer occupies the GPU for in forward and backward (`occupied`: the window data-parallel traffic
    hides in), the output layer's forward (`logits`), the tp collectives' message bytes and count per layer and
    the pipeline's transfers (_pipeline_transfers); with `with_layer` also _layer's and _tensor_parallel's own
    arrays (`layer`, `comm`)."""
    eff = cluster.efficiency
    peak, hbm, half, gemm_peak = _rank_rates(batch, cluster)
    fw = batch_framework_arrays(batch)
    layer = _layer(batch, cluster, peak, gemm_peak, half, hbm, fw)
    comm = _tensor_parallel(batch, cluster, layer, DTYPE_BYTES[batch.dtype.astype(int)], fw)
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    logits_m, logits_n, logits_k = tokens, padded_vocab(batch) / batch.tp, batch.hidden  # the stack's padded rows too
    logits_peak, logits_half = _output_layer_rates(batch, cluster, gemm_peak, half)
    logits_gemm = 2.0 * logits_m * logits_n * logits_k / (logits_peak * matmul_efficiency(logits_m, logits_n, logits_k,
                                                                                         eff, logits_half))
    cross_entropy = CROSS_ENTROPY_BYTES_PER_LOGIT * logits_m * logits_n / hbm
    p2p_transfers, p2p_size = _pipeline_transfers(batch, cluster, comm["message"], fw)
    issue = layer["issue"]
    # A pass is never shorter than the CPU's issue time: the floor is what the GPU's work leaves uncovered.
    floor = {"forward": np.maximum(issue["forward"] - layer["forward"] - comm["forward"], 0.0),
             "backward": np.maximum(issue["backward"] + issue["recompute"] - layer["backward"] - layer["recompute"]
                                    - comm["backward"], 0.0)}
    per_layer = {
        "forward": layer["forward"] - layer["elementwise"],
        "backward": layer["backward"] - 2.0 * layer["elementwise"],
        "elementwise": 3.0 * layer["elementwise"],
        "recompute": layer["recompute"],
        "launch_floor": floor["forward"] + floor["backward"],
        "tp_comm": comm["tp"],
        "cp_comm": comm["cp"],
        "overhead": np.full(len(batch), eff.layer_overhead_s),
    }
    seconds = {
        "per_layer": per_layer,
        "dense_total": sum(per_layer.values()),
        # Data-parallel traffic hides behind what a layer occupies the GPU for: its compute, its exposed
        # tp/cp communication and the launch floor (max(issue, compute + comm), monotone in every input).
        "occupied": {"forward": layer["forward"] + comm["forward"] + floor["forward"],
                     "backward": layer["backward"] + layer["recompute"] + comm["backward"] + floor["backward"]},
        # Forward of the output layer plus a third of the loss traffic, so that 3 x logits (forward and the
        # 2x backward) charges the GEMMs three times and the loss once.
        "logits": logits_gemm + cross_entropy / 3.0,
        "tp_message": comm["message"],
        "tp_count": comm["tp_count"],
        "p2p_transfers": p2p_transfers,
        "p2p_size": p2p_size,
    }
    if with_layer:
        seconds.update(layer=layer, comm=comm)
    return seconds


def step_time(batch: CandidateBatch, cluster: ClusterSpec) -> dict[str, np.ndarray]:
    """Named seconds per step (summing to `step_time_s`) plus throughput figures, per candidate."""
    eff = cluster.efficiency
    fw = batch_framework_arrays(batch)
    # What one rank gets of its accelerator's compute and HBM bandwidth.
    peak, hbm, half, gemm_peak = _rank_rates(batch, cluster)
    w = DTYPE_BYTES[batch.dtype.astype(int)]
    p, v = batch.pp, batch.vpp
    m = batch.grad_accumulation

    seconds = _layer_seconds(batch, cluster)
    per_layer = dict(seconds["per_layer"])
    logits = seconds["logits"]
    layer_total = seconds["dense_total"]
    layer_forward, layer_backward = seconds["occupied"]["forward"], seconds["occupied"]["backward"]
    p2p, p2p_bytes = _pipeline_send(batch, seconds["p2p_transfers"], seconds["p2p_size"], fw)
    moe_layer = None
    if batch.has_moe:  # averaged over the layers (cost/moe.py)
        layer, comm = seconds["layer"], seconds["comm"]
        moe_layer = _moe_layer(batch, cluster, gemm_peak, half, hbm, layer, comm)
        issue = layer["issue"]
        # GPU time the dense part of a layer leaves beyond its own issue time (the host's lead).
        slack = {"forward": np.maximum(layer["forward"] + comm["forward"] - issue["forward"], 0.0),
                 "backward": np.maximum(layer["backward"] + layer["recompute"] + comm["backward"]
                                        - issue["backward"] - issue["recompute"], 0.0)}
        moe_floor = moe.launch_floor_seconds(batch, moe_layer, slack, fw["eager_dispatch"] > 0)
        per_layer["moe_launch_floor"] = moe_floor["forward"] + moe_floor["backward"]
        per_layer["moe_experts"] = moe_layer["forward"] + moe_layer["backward"] + moe_layer["recompute"]
        per_layer["ep_comm"] = moe_layer["exposed"]
        per_layer["a2a_sm_share"] = moe_layer["sm_share"]
        # The sum of every per_layer part, in per_layer's order (the dense parts' sum came with them).
        layer_total = (layer_total + per_layer["moe_launch_floor"] + per_layer["moe_experts"] + per_layer["ep_comm"]
                       + per_layer["a2a_sm_share"])
        # The MoE layers' launch floor too: the GPU is held by the layer meanwhile.
        layer_forward = layer_forward + moe_layer["forward"] + moe_floor["forward"]
        layer_backward = layer_backward + moe_layer["backward"] + moe_layer["recompute"] + moe_floor["backward"]
    split = _stage_split(batch)
    first_layers, middle_layers, last_layers = split["layers"]
    first_params, middle_params, last_params = split["params"]
    accumulate = _fp32_grad_accumulation(batch, fw, hbm)  # seconds per parameter per micro-batch
    # Per micro-batch on each stage; the output layer (forward + 2x backward) runs on the last.
    stage_seconds = np.stack([first_layers * layer_total + accumulate * first_params,
                              middle_layers * layer_total + accumulate * middle_params,
                              last_layers * layer_total + 3.0 * logits + accumulate * last_params])
    pacing = stage_argmax(stage_seconds)
    pace_layers = np.choose(pacing, [first_layers, middle_layers, last_layers])
    pace_params = np.choose(pacing, [first_params, middle_params, last_params])
    on_last = pacing == 2
    micro_batch_s = stage_seconds.max(axis=0) + p2p + eff.microbatch_overhead_s
    # Every stage gathers, reduces and all-gathers its own parameters; the stage holding the most sets the
    # data-parallel traffic the step waits for.
    params, dp_layers, dp_on_last = _data_parallel_stage(batch)
    stage = {
        "layers": dp_layers,
        "layer_forward": layer_forward,
        "layer_backward": layer_backward,
        "forward": dp_layers * layer_forward + np.where(dp_on_last, logits, 0.0),
        "backward": dp_layers * layer_backward + np.where(dp_on_last, 2.0 * logits, 0.0),
    }
    dp_exposed, dp_bytes, offload_fetch, dp_window_used = _data_parallel(batch, cluster, fw, w, stage, params, m)
    optimizer, offload_copies = _optimizer(batch, cluster)
    offload_fetch = offload_fetch + offload.activation_copies(batch, cluster, stage, m)
    bubble_slots = np.where(p > 1, (p - 1) / v, 0.0)
    layers_per_step = m * pace_layers  # the pacing stage's layers over the step's micro-batches
    pace = lambda part: layers_per_step * part  # noqa: E731 - a per-layer part over the step
    if moe_layer is not None:  # DualPipe's bubble (frameworks/moe.py)
        bubble_slots = moe_bubble_slots(p, v, batch.a2a_overlap)
    parts = {
        "forward": pace(per_layer["forward"]) + m * np.where(on_last, logits, 0.0),
        "backward": pace(per_layer["backward"]) + m * np.where(on_last, 2.0 * logits, 0.0),
        "elementwise": pace(per_layer["elementwise"]),
        "recompute": pace(per_layer["recompute"]),
        "launch_floor": pace(per_layer["launch_floor"]),
        "tp_comm": pace(per_layer["tp_comm"]),
        "cp_comm": pace(per_layer["cp_comm"]),
        "pp_p2p": m * p2p,
        "bubble": bubble_slots * micro_batch_s,
        "dp_comm_exposed": dp_exposed,
        "optimizer": optimizer,
        "offload_copies": offload_copies + offload_fetch,
        "overhead": pace(per_layer["overhead"]) + m * eff.microbatch_overhead_s + eff.step_overhead_s,
    }
    if np.any(accumulate):
        parts["grad_accumulation"] = m * accumulate * pace_params
    # The HBM copies sharded data parallelism makes around its collectives (cost/shard_copies.py).
    copies = shard_copies.seconds_per_step(batch, fw, w, element_bytes(batch, fw)["reduce"], params, m, hbm)
    if copies is not None:
        parts["shard_copies"] = copies
    if moe_layer is not None:
        expert_params = moe.expert_params_per_gpu(batch, dp_layers)
        expert_dp_exposed, expert_dp_bytes = _expert_data_parallel(batch, cluster, fw, w, stage, expert_params,
                                                                   dp_window_used)
        expert_optimizer = moe.expert_optimizer_seconds(batch, expert_params, ADAM_BYTES_PER_PARAM + w, hbm,
                                                        cluster.efficiency.optimizer_relative_efficiency)
        parts.update({"moe_experts": pace(per_layer["moe_experts"]), "ep_comm": pace(per_layer["ep_comm"]),
                      "moe_launch_floor": pace(per_layer["moe_launch_floor"]),
                      "a2a_sm_share": pace(per_layer["a2a_sm_share"]),
                      "expert_dp_comm_exposed": expert_dp_exposed})
        parts["optimizer"] = parts["optimizer"] + expert_optimizer
    # The pacing stage's per-micro-batch seconds are split into named parts above; the other stages idle
    # in the difference, which the slot (micro_batch_s) already accounts for.
    total = sum(parts.values())
    # Model FLOPs count the causal half of attention (what the model needs; with a sliding window only the
    # keys inside it, so the window lowers the model FLOPs and MFU does not credit the skipped pairs); the hardware also runs what
    # an unfused kernel computes in the masked half, and what recompute runs again (one forward of every
    # layer for full, of the attention core for selective). Same accounting as the time above, so
    # MFU <= HFU <= 1.
    variant = {} if batch.core_width is None else dict(
        core_width=batch.core_width, moe_layers=batch.moe_layers, expert_ffn=batch.expert_ffn, top_k=batch.top_k,
        experts=batch.experts)
    window = {} if batch.attention_window is None else {"attention_window": batch.attention_window}
    flop_parts = training_flops_breakdown(batch.layers, batch.hidden, batch.heads, batch.kv_heads, batch.ffn,
                                          batch.mlp_matrices, batch.vocab, batch.seq_len,
                                          batch.global_batch * batch.seq_len, causal=True, **variant, **window)
    flops = flop_parts["total"]
    # The unfused path computes the whole square: s keys per query against the attended ones counted.
    unfused_factor = 2.0 if not window else batch.seq_len / attended_keys(batch.seq_len, batch.attention_window)
    executed_core = flop_parts["attention_core"] * np.where(batch.flash_attention, 1.0, unfused_factor)
    executed = flops - flop_parts["attention_core"] + executed_core
    recompute_flops = np.select([batch.recompute == 2, batch.recompute == 1],
                                [(executed - flop_parts["logits"]) / 3.0, executed_core / 3.0], 0.0)
    tflops_per_gpu = flops / total / batch.gpus
    return {
        "parts": parts,
        "step_time_s": total,
        "tokens_per_s": batch.global_batch * batch.seq_len / total,
        "model_flops_per_step": flops,
        "tflops_per_gpu": tflops_per_gpu / 1e12,
        "mfu": tflops_per_gpu / peak,
        "hfu": (executed + recompute_flops) / total / batch.gpus / peak,
        "comm_bytes_per_step": {
            "tp": np.where(batch.tp > 1, layers_per_step * seconds["tp_count"] * seconds["tp_message"], 0.0),
            "dp": dp_bytes,
            "dp_cross_node": hierarchy.dp_cross_node(batch, cluster, fw, w, params, m, dp_bytes),
            "pp": m * p2p_bytes,
            **({} if moe_layer is None else {"ep": layers_per_step * moe_layer["bytes"], "expert_dp": expert_dp_bytes}),
        },
    }
