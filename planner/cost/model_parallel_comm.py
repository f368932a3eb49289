"""Tensor-, context- and pipeline-parallel communication per layer and micro-batch: the tp collectives (exposed,
or hidden behind the GEMMs they feed with Transformer Engine userbuffers / async TP), the cp ring's K/V exchange
behind the attention core (ring attention), and the pipeline's point-to-point transfers (exposed unless the
stack overlaps them). Pure, vectorised.

Its own module: these are the communications inside a layer's schedule, which step_time adds per layer;
data-parallel traffic, which hides behind whole passes of a stage, is in cost/data_parallel.py.
"""

from __future__ import annotations

import numpy as np

from planner.cost import collectives, groups
from planner.cost.layer_compute import recomputes_attention_core
from planner.cost.overlap import hidden_behind
from planner.frameworks import FRAMEWORK_NAMES
from planner.frameworks.moe import MOE_STACKS, pairs_stages
from planner.specs.pipeline_stages import padded_vocab


# Per stack code: whether an MoE layer's dispatcher replaces its MLP's tensor-parallel collectives (MoEStack).
_DISPATCHER_REPLACES_MLP_TP = np.array([float(MOE_STACKS[name].dispatcher_replaces_mlp_tp_collectives)
                                        for name in FRAMEWORK_NAMES])


def mlp_tp_collective_share(batch) -> np.ndarray:
    """Share of the layers whose MLP makes the dense tensor-parallel collectives: all but the MoE layers with no
    shared expert, where the stack's dispatcher replaces them (MoEStack.dispatcher_replaces_mlp_tp_collectives)."""
    replaces = _DISPATCHER_REPLACES_MLP_TP[batch.framework.astype(int)]
    return 1.0 - replaces * batch.routed_only_layers / batch.layers


def tensor_parallel(batch, cluster, layer, w, fw, hbm):
    """Exposed tensor- and context-parallel seconds per layer per micro-batch, forward and backward (`hbm`: the
    rank's HBM bytes/s, for the copies a partitioned checkpoint's rebuild makes)."""
    eff = cluster.efficiency
    t, c = batch.tp, batch.cp
    kw = groups.collective_kwargs(cluster)
    tokens = batch.micro_batch * batch.seq_len / c
    message = tokens * batch.hidden * w
    tp_links = groups.layout_links(batch, cluster, groups.tp_group)
    one = groups.only_where(t > 1, collectives.all_reduce_time, message, tp_links, **kw)
    # Overlapped (TE userbuffers, async TP): the collective is split into tp chunks pipelined against the
    # GEMM it feeds; the first chunk and what the GEMMs cannot cover stay exposed. Stacks whose overlap needs
    # one NVLink domain (Framework.tp_comm_overlap_within_scale_up) do not overlap a tp group across nodes.
    overlapped = batch.tp_comm_overlap & ((fw["tp_comm_overlap_within_scale_up"] == 0) | (tp_links["nodes"] <= 1))

    def exposed(count, gemm):
        comm = count * one
        hidden = hidden_behind(gemm, comm, t, eff.tp_overlap)
        return np.where(overlapped, hidden, comm)

    calls = fw["tp_collectives_per_layer"]  # 2, or 1 with the parallel block
    if batch.has_moe:  # the attention's, and the MLP's where the layer's MLP makes them (cost.moe)
        calls = np.where(calls >= 2, calls - 1.0 + mlp_tp_collective_share(batch), calls)
    recompute_tp = np.where(batch.recompute == 2, exposed(calls, layer["gemm"]), 0.0)
    tp_fwd, tp_bwd = exposed(calls, layer["gemm"]), exposed(calls, 2.0 * layer["gemm"]) + recompute_tp
    cp_fwd, cp_bwd = context_parallel_exchange(batch, cluster, layer, tokens, w, fw)
    qkv_fwd, qkv_bwd = kv_group_gather(batch, cluster, tokens, w, fw, tp_links)
    gather = checkpoint_gather(batch, cluster, message, tp_links, fw, hbm)
    return {"tp": tp_fwd + tp_bwd, "cp": cp_fwd + cp_bwd, "qkv_gather": qkv_fwd + qkv_bwd, "checkpoint_gather": gather,
            "forward": tp_fwd + cp_fwd + qkv_fwd, "backward": tp_bwd + cp_bwd + qkv_bwd + gather,
            "tp_count": calls * (2.0 + np.where(batch.recompute == 2, 1.0, 0.0)), "message": message}


def context_parallel_exchange(batch, cluster, layer, tokens, w, fw):
    """Exposed seconds (forward, backward) per layer per micro-batch of context parallelism's K/V exchange, as the
    stack schedules it beside the attention core's cp chunks (Framework.cp_gathers_kv_once):

    - a ring (Megatron-Core's default cp_comm_type "p2p", Transformer Engine's attention with CP): each chunk's K, V
      travel to the next rank while the attention of the chunk at hand computes; forward moves K, V; backward K, V
      and their gradients;
    - gathered once (torch's context-parallel SDPA with its default rotate method "allgather", which torchtitan@
      238fa995's training keeps: _cp_options.rotate_method, torch 2.13 torch/distributed/tensor/experimental/
      _context_parallel/_attention.py:77): forward all-gathers the whole K, V once, issued before the first chunk's
      attention and waited for before the second's (:273-300, 429-439), so only that first chunk hides it.
      Backward gathers K, V again the same way (:521-534) and rotates the K/V gradients around the ring with a
      permute (_AllToAllRotater, :253-270) in Framework.cp_kv_gradient_bytes per element (fp32:
      _cp_options.convert_to_f32, :75): each rotation hides behind the next chunk's backward (:595-627), the last
      is waited for after the loop with nothing to hide it (:646).

    Full recompute (and a selective one that reruns the attention core) runs the forward exchange again."""
    c = batch.cp
    zeros = np.zeros(len(batch))
    if not np.any(c > 1):
        return zeros, zeros
    cp_links = groups.layout_links(batch, cluster, groups.cp_group)
    local_kv = tokens * batch.kv_width / batch.tp * w  # this rank's K and V (MLA's up-projected heads)
    kv = groups.only_where(c > 1, collectives.all_gather_time, local_kv * c, cp_links,
                           **groups.collective_kwargs(cluster))
    attention, attention_bwd = layer["attention"], layer["attention_backward"]
    ring_fwd = hidden_behind(attention, kv, c, 1.0)
    ring_bwd = hidden_behind(attention_bwd, 2.0 * kv, c, 1.0)
    once = fw["cp_gathers_kv_once"] > 0
    if np.any(once & (c > 1)):
        gradient_bytes = np.where(fw["cp_kv_gradient_bytes"] > 0, fw["cp_kv_gradient_bytes"], w)
        rotation = neighbour_send(local_kv * gradient_bytes / w, cp_links, cluster.efficiency)
        once_fwd = np.maximum(kv - attention / c, 0.0)
        once_bwd = (np.maximum(kv - attention_bwd / c, 0.0)
                    + (c - 1.0) * np.maximum(rotation - attention_bwd / c, 0.0) + rotation)
        ring_fwd, ring_bwd = np.where(once, once_fwd, ring_fwd), np.where(once, once_bwd, ring_bwd)
    reruns = (batch.recompute == 2) | recomputes_attention_core(batch, fw)
    forward = np.where(c > 1, ring_fwd, 0.0)
    return forward, np.where(c > 1, ring_bwd + np.where(reruns, ring_fwd, 0.0), 0.0)


def neighbour_send(volume, links, eff):
    """Seconds of one point-to-point send of `volume` bytes to the next rank of a group laid out as `links`
    (groups.layout_links): over the scale-out link where the group spans nodes (its slowest hop paces a ring step),
    else over the scale-up link."""
    spans_nodes = links["nodes"] > 1
    bandwidth = np.where(spans_nodes, links["inter_bytes_per_s"], links["intra_bytes_per_s"])
    efficiency = np.where(spans_nodes, eff.scale_out_bandwidth_efficiency, eff.scale_up_bandwidth_efficiency)
    latency = np.where(spans_nodes, links["inter_latency_s"], links["intra_latency_s"])
    # A group of one has no link (bandwidth 0): divide by 1 there, the caller masks the result.
    return collectives.p2p_time(volume, np.where(bandwidth > 0, bandwidth, 1.0), latency, efficiency)


def kv_group_gather(batch, cluster, tokens, w, fw, tp_links):
    """Exposed seconds (forward, backward) per layer per micro-batch of the QKV all-gather that stacks running tp a
    multiple of the kv heads make (Framework.tp_multiple_of_kv_heads). With fewer query groups than tp, Megatron-Core
    all-gathers linear_qkv's whole output over tp and each rank slices its group out (NVIDIA/Megatron-LM@d98e8a64
    core/transformer/attention.py:1851-1871); all_gather_last_dim_from_tensor_parallel_region reduce-scatters the
    gradient back (core/tensor_parallel/mappings.py:384-402, 546-549). Plain NCCL calls on the compute stream,
    outside Transformer Engine's userbuffer overlap: exposed. Full recompute gathers again in backward; selective
    recompute ("core_attn") does not rerun linear_qkv. MLA rows (qkv_width 0) have no linear_qkv. Time only: whether the
    whole gathered buffer outlives the forward (v reaches Transformer Engine's fused attention as a view of it, saved as
    given, NVIDIA/TransformerEngine@d0067d0d attention/dot_product_attention/backends.py:1630-1664, unless its layout
    detection copies it, utils.py:2606-2616) is not settled, so the activation memory is left as it was."""
    zeros = np.zeros(len(batch))
    gathers = (fw["tp_multiple_of_kv_heads"] > 0) & (batch.tp > batch.query_groups) & (batch.qkv_width > 0)
    if not gathers.any():
        return zeros, zeros
    volume = tokens * batch.qkv_width * w  # the gathered [s/cp, b, (heads + 2 g) x head_dim] tensor
    kw = groups.collective_kwargs(cluster)
    gather = groups.only_where(gathers, collectives.all_gather_time, volume, tp_links, **kw)
    scatter = groups.only_where(gathers, collectives.reduce_scatter_time, volume, tp_links, **kw)
    return gather, scatter + np.where(batch.recompute == 2, gather, 0.0)


def checkpoint_gather(batch, cluster, message, tp_links, fw, hbm):
    """Exposed seconds per layer per micro-batch of rebuilding a partitioned checkpoint (batch.partition_activations):
    the layer input, kept as 1/tp slices, is all-gathered over tp before the layer's recompute in backward, one
    synchronous all_gather_into_tensor on the compute stream ahead of the recompute it feeds (DeepSpeed 0.19.8
    runtime/activation_checkpointing/checkpointing.py:276-306, called at :706-708; Megatron-LM's
    gather_split_1d_tensor, core/tensor_parallel/random.py:647-651): nothing to hide it behind. The gathered buffer is
    the whole input, [s/cp, b, h] (or the [s/(cp tp), b, h] sequence-parallel slice). Stacks whose rebuild zero-fills
    its buffer and gathers through the list-form all_gather add those copies, Framework.checkpoint_gather_hbm_accesses
    per gathered element, on the same stream before the recompute (frameworks/deepspeed_v02.py)."""
    partitioned = batch.partition_activations
    if not np.any(partitioned):
        return np.zeros(len(batch))
    volume = message / np.where(batch.seq_parallel, batch.tp, 1.0)
    gather = groups.only_where(partitioned, collectives.all_gather_time, volume, tp_links,
                               **groups.collective_kwargs(cluster))
    accesses = fw["checkpoint_gather_hbm_accesses"]
    if not np.any(accesses):
        return gather
    return gather + np.where(partitioned & (batch.tp > 1), accesses * volume / hbm, 0.0)


def pipeline_transfers(batch, cluster, message, fw):
    """Seconds a stage waits for its point-to-point transfers per micro-batch and virtual stage (activation
    forward, gradient back), and the bytes of one transfer; with sequence parallelism the tensor is sharded over
    tp. It reads only distinct.LAYER_COLUMNS (tp, pp, dp, cp, the tp message, the stack, sp): step_time._layer_seconds runs it
    once per distinct combination of them; pipeline_send takes it over the virtual stages."""
    t, p = batch.tp, batch.pp
    links = groups.layout_links(batch, cluster, groups.pp_group)
    latency = np.where(links["nodes"] > 1, links["inter_latency_s"], links["intra_latency_s"])
    scattered = fw["p2p_scatter_gather"] > 0
    size = message / np.where(batch.seq_parallel | scattered, t, 1.0)
    send = neighbour_send(size, links, cluster.efficiency)
    # Transfers the stage waits for one after another (2: send and receive of a step issued together; 4: each
    # its own blocking call, frameworks/base.py), plus latency-only metadata sends of partitioned tensors.
    serial = fw["p2p_transfers_per_microbatch"] * send + fw["p2p_meta_sends_per_microbatch"] * latency
    # Scatter/gather without sequence parallelism: whole tensors all-gathered over tp before use on the compute
    # stream, as many per micro-batch as the framework makes (the received activation and gradient; DeepSpeed's
    # engine its own output too: Framework.p2p_gathers_per_microbatch).
    gathers = fw["p2p_gathers_per_microbatch"]
    regather = scattered & ~np.asarray(batch.seq_parallel, dtype=bool) & (gathers > 0) & (t > 1) & (p > 1)
    gather = (groups.only_where(regather, collectives.all_gather_time, message,
                                groups.links(cluster, t, np.ones_like(t), batch.gpus), **groups.collective_kwargs(cluster))
              if regather.any() else np.zeros(len(batch)))
    return serial + gathers * gather, size


def pipeline_send(batch, transfers, size, fw):
    """Exposed point-to-point seconds per micro-batch per stage, the bytes each stage sends (the
    pipeline_transfers of every virtual stage), and the seconds per step the overlapped sends still add: the
    fill and the drain.

    Overlapped sends hide behind the next chunk's compute in the steady state, but nothing runs beside the hops
    of the first micro-batch's forward through the p x v chunks and of the last one's backward: 2 (p v - 1)
    transfers on the step's critical path. An event simulation of Megatron-Core's interleaved schedule
    (schedules.py get_schedule_table and the warm-up count at NVIDIA/Megatron-LM@d98e8a64, the pipeline-schedule
    audit) adds exactly that whatever the micro-batches at a group of pp micro-batches: Llama 3.1 405B tp8 pp16
    vpp8 on 16,384 H100s, 2.0% of the step, which the overlap had priced at 0."""
    p = batch.pp
    # Megatron overlaps the sends with compute only in its interleaved schedule (`overlap_p2p_comm`,
    # forced off without virtual stages: megatron/training/arguments.py).
    overlapped = (fw["p2p_overlap"] > 0) & ((batch.vpp > 1) | (fw["p2p_overlap_without_interleaving"] > 0))
    exposed = np.where(overlapped, 0.0, batch.vpp * transfers)
    one_hop = transfers / np.maximum(fw["p2p_transfers_per_microbatch"], 1.0)
    fill = np.where(overlapped & (p > 1), 2.0 * (p * batch.vpp - 1.0) * one_hop, 0.0)
    # Bytes each stage sends per micro-batch: the activation forward and the gradient back, however issued.
    return np.where(p > 1, exposed, 0.0), np.where(p > 1, 2.0 * batch.vpp * size, 0.0), fill


def shared_embedding_sync(batch, cluster, grad_bytes):
    """Exposed seconds per step of the all-reduce that keeps a word embedding held on two pipeline stages in step,
    and the bytes each of the two ranks sends in it (0 where there is one copy): the first stage's input embedding
    and the last stage's copy of it (the output layer of a tied model; the multi-token-prediction blocks'
    embedding), their gradients summed over the two ranks of the same tp, cp and dp index once a step, beside the
    data-parallel reduction (Megatron after it, DeepSpeed before it) and before the optimizer. `grad_bytes`: bytes
    per gradient element of the stack's gradient buffer (memory.element_bytes "grads").

    Megatron-Core: finalize_model_grads (NVIDIA/Megatron-LM@d98e8a64 megatron/core/distributed/
    finalize_model_grads.py:676, after finish_grad_sync at :640) all-reduces the main_grad of the shared weight
    (:204-258) when the output layer shares it or the model has MTP blocks (:132-149), over the first and last
    pipeline rank (parallel_state.py:560-566). DeepSpeed's pipeline engine: ReduceTiedGrads, the step's last
    instruction before ReduceGrads (deepspeedai/DeepSpeed@edaa72212 deepspeed/runtime/pipe/schedule.py:238-240,
    engine.py:278-294), a blocking all_reduce of each tied weight's gradient (the 16-bit one, or BF16_Optimizer's
    fp32 copy with grad_accum_dtype fp32: the layout's grad_reduce_in_fp32). Any stack that keeps the two copies
    must sum their gradients, so it is priced for every stack that runs the pair (torchtitan refuses it:
    Framework.ties_embeddings_across_pipeline); nothing overlaps it. A pipeline that runs the first and the last
    stage on one rank (DualPipe, frameworks/moe.pairs_stages) holds one copy and sends nothing."""
    two_copies = (batch.pp > 1) & (batch.tied_embeddings | (batch.mtp_layers > 0))
    if not np.any(two_copies):  # most batches (untied, or no pipeline): no DualPipe pairing to look up
        return np.zeros(len(batch)), np.zeros(len(batch))
    two_copies &= ~pairs_stages(batch)
    volume = padded_vocab(batch) * batch.hidden / batch.tp * grad_bytes
    links = groups.layout_links(batch, cluster, groups.embedding_group)
    seconds = groups.only_where(two_copies, collectives.all_reduce_time, volume, links,
                                **groups.collective_kwargs(cluster))
    # An all-reduce over two ranks sends each rank's whole buffer once, 2 (n - 1) / n of it (exact here; the `dp`
    # entry of comm_bytes_per_step counts its all-reduces at 2x, their large-group limit).
    return seconds, np.where(two_copies, volume, 0.0)
