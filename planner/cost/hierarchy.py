"""ZeRO-3 communication under hierarchical partitioning: ZeRO++ (qwZ, hpZ, qgZ), MiCS / HSDP shard groups
and gradient groups (the 3-level scheme of Xu et al. on Frontier). Pure, vectorised.

Per ZeRO-3 unit (a transformer layer's parameters, or the rest of the model) and micro-batch:

  forward gather   all-gather of the unit over the weight shard group (layout.shard_group, default all of dp);
                   qwZ sends int8 (1 byte per element) and adds the quantise / dequantise kernels
                   (DeepSpeed partition_parameters.py:769-806 `CUDAQuantizer`, 8 bits, symmetric, groups of
                   at most 16k elements; its fp32 scales follow in a call of their own, see Calls below);
  backward gather  the same, or with hpZ over the `zero_hpz` ranks of the secondary partition inside the node
                   (partition_parameters.py:1215-1225: `zero_param_process_group` when the param has a
                   `ds_secondary_tensor`; qwZ quantises it too, partitioned_param_coordinator.py:461-471);
                   the forward gathers of the step's later micro-batches too: the
                   secondary partition is written when a parameter is first released (`_partition` ->
                   `_partition_param_sec`, DeepSpeed 0.19.8 partition_parameters.py:1765-1769, 1900-1913)
                   and dropped only after the optimizer step (`invalidate_secondary_tensor`, stage3.py:755-759,
                   2846), so only the first micro-batch's forward gathers over the whole weight group;
  gradient reduce  reduce-scatter over the gradient group (grad_shard_group, default the shard group); qgZ
                   replaces it with DeepSpeed's `all_to_all_quant_reduce` (runtime/comm/coalesced_collectives.py:
                   31-78, called from stage3.py:1388): int4 swizzled quantisation, all-to-all inside the node,
                   reduction and re-quantisation, all-to-all across nodes between the ranks of one local index,
                   dequantisation and the sum of the node chunks;
  replica reduce   once per step, the all-reduce of each rank's gradient shard across the dp / group replicas
                   (MiCS at the accumulation boundary, mics.py:425-456; HSDP the same).

All-to-all is timed as a reduce-scatter of the same buffer over the same group (assumed: each rank sends
(N-1)/N of its buffer through the same bottleneck link; NCCL runs all-to-all as point-to-point sends whose
latency this does not model separately).

Calls (DeepSpeed 0.19.8, the installed release; line numbers of that file). A qwZ gather is two all-gathers on
the same group, one after the other: the int8 parameter and its fp32 scales (`_all_gather_sequential`,
runtime/zero/partition_parameters.py:1420-1437; `CUDAQuantizer.quantize` :867-894 makes one scale per group of
at most about `target_group_size` = 8000 elements, :859, 879-885; csrc/quantization/pt_binding.cpp:17-24 fp32).
qgZ's `all_to_all_quant_reduce` (runtime/comm/coalesced_collectives.py:42-75) loops over the bucket's gradient
tensors one by one: a 2-D one takes four `all_to_all_single` calls (data and scales inside the node, :62-63,
data and scales across nodes, :69-70), a 1-D one (norm weights, biases) its own flat `reduce_scatter_coalesced`
over the whole group (:43-44). The unit's 2-D tensors are taken as its gathers (`gather_calls`: DeepSpeed
fetches each submodule's weight in its own call, frameworks/deepspeed.py), its 1-D ones as the model's vector
tensors (planner.specs.model.vector_tensors). The scale buffers are latency: their bytes (a few per thousand of
the data) are counted, their kernels are not.

Cross-node volume: bytes that cross a node boundary, per node, for one data-parallel row (the dp ranks
of one tp/pp coordinate), counting each collective at its buffer size as ZeRO (section 7) and ZeRO++
(section 3) do, the (N-1)/N factors left out: a ring over nodes carries its whole buffer through every
node's NICs, the hierarchical all-to-all only its int4 quarter (ZeRO++'s 3M -> 0.75M).
"""

from __future__ import annotations


import numpy as np

from planner.cost import collectives, distinct, groups, zero3_fetch
from planner.cost.memory import (STAGE_STATE_COLUMNS, element_bytes, sharding_degree, state_sharding_degrees,
                                 unsharded_through_step)
from planner.frameworks import batch_framework_arrays

INT8_BYTES = 1.0  # qwZ: 8-bit weights (partition_parameters.py:805 `quantize(..., groups, 8, Symmetric)`)
INT4_BYTES = 0.5  # qgZ: 4-bit gradients (coalesced_collectives.py:57 `swizzle_quant(tensor, group, 4, ...)`)
SCALE_BYTES = 4.0  # fp32 quantisation scales (csrc/quantization/pt_binding.cpp:17-24, 130-138)
# qwZ: elements per scale, at most (CUDAQuantizer.target_group_size, partition_parameters.py:859; the group count
# starts at ceil(numel / 8000) and only grows, :879-885): the fewest scales a shard can have.
QWZ_GROUP_ELEMENTS = 8000.0


def quantized_gradient_rows(batch, gpus_per_node) -> np.ndarray:
    """The ZeRO-3 rows whose gradients take qgZ's `all_to_all_quant_reduce`: those that ask for it
    (zero_quantized_gradients) on a job of more than one node. DeepSpeed counts the job's nodes, not the
    group's (world size / devices per node), and with one node reduces with the plain `reduce_scatter_coalesced`
    (DeepSpeed 0.19.8 runtime/zero/stage3.py:1925-1931)."""
    return (batch.zero == 3) & batch.zero_quantized_gradients & (batch.gpus > gpus_per_node)


def sub_batch(batch, rows):
    """(sub, sub_fw, pick) for computing on `rows` only: the sub-batch `batch.take(rows)`, its framework
    arrays, and pick: a -> a at `rows` for the caller's whole-batch arrays and scalars alike (broadcast first)."""
    sub = batch.take(rows)
    return sub, batch_framework_arrays(sub), lambda a: np.broadcast_to(a, batch.tp.shape)[rows]


def hierarchical_rows(batch) -> np.ndarray:
    """Candidates whose ZeRO-3 runs with any hierarchy or quantisation option (the others keep the flat path)."""
    return ((batch.zero == 3) & ((batch.zero_hpz > 1) | batch.zero_quantized_weights | batch.zero_quantized_gradients
                                 | (batch.shard_group > 0) | (batch.grad_shard_group > 0)))


def _shape(size, stride, gpus_per_node):
    """(members per node, nodes) of a group of `size` ranks `stride` apart (topology.group_shape, vectorised)."""
    size, stride = np.asarray(size, dtype=float), np.asarray(stride, dtype=float)
    per_node = np.where(stride >= gpus_per_node, 1.0,
                        np.maximum(1.0, np.minimum(size, np.floor(gpus_per_node / np.maximum(stride, 1.0)))))
    per_node = np.where(size <= 1, 1.0, per_node)
    return per_node, np.where(size <= 1, 1.0, np.ceil(size / per_node))


def zero3_unit_comm(batch, cluster, fw, w, reduce_bytes, elements, gather_calls, links, kw, hbm,
                    vector_tensors=0.0, vector_elements=0.0, scatter_calls=1.0) -> dict:
    """Seconds of one ZeRO-3 unit of `elements` parameters (per tp rank): forward gather, backward gather,
    gradient reduction (per micro-batch) and replica all-reduce (per step), see the module docstring. `links(sizes, strides)` gives group links (groups.links); `kw` the collective keywords;
    `hbm` the achieved HBM bytes/s for the quantisation kernels; `gather_calls` the unit's gathers (its 2-D
    tensors), `vector_tensors` and `vector_elements` its 1-D tensors (count, elements per tp rank), `scatter_calls` the
    flat reduce-scatter's calls (zero3_fetch.zero3_scatter_calls: a fraction where the stack's buckets hold several
    units)."""
    gpn = cluster.gpus_per_node
    degree = state_sharding_degrees(batch, fw)
    d = sharding_degree(batch, fw)
    # Sharding-group members are tp apart when the stack shards over cp ranks too, else tp x cp apart.
    stride = batch.tp * np.where(fw["shards_over_context_parallel"] > 0, 1.0, batch.cp)
    weights_group, grads_group = degree["weights"], degree["grads"]
    hpz = degree["hpz"]
    qw, qg = batch.zero_quantized_weights, quantized_gradient_rows(batch, gpn)
    sent = np.where(qw, INT8_BYTES, w)  # bytes per element on the wire of a weight gather

    def gather(size):
        group = links(size, stride)
        data = collectives.all_gather_time(sent * elements, group, calls=gather_calls, **kw)
        if qw.any():
            # qwZ: the int8 data, then its fp32 scales, one call each per gathered tensor (module docstring);
            # kernels: quantise the local shard of the gathering group (read w, write 1 byte), dequantise the
            # gathered unit (read 1, write w).
            scales = collectives.all_gather_time(SCALE_BYTES / QWZ_GROUP_ELEMENTS * elements, group,
                                                 calls=gather_calls, **kw)
            kernels = (elements / size + elements) * (w + INT8_BYTES) / hbm
            data = data + np.where(qw, scales + kernels, 0.0)
        return data * (size > 1)

    forward = gather(weights_group)
    backward = np.where(hpz > 1, gather(hpz), forward)

    # Gradient reduction: ring reduce-scatter, or qgZ's two all-to-alls of int4, each gradient tensor on its own
    # (module docstring): per 2-D tensor its data and its scales (one per group of max(rows, columns, world)
    # elements, coalesced_collectives.py:54; at least the hidden size or the group) inside and across nodes; per
    # 1-D tensor a flat reduce-scatter over the whole group.
    k, n = _shape(grads_group, stride, gpn)
    grad_links = links(grads_group, stride)
    ring = collectives.fractional(collectives.reduce_scatter_time)(reduce_bytes * elements, grad_links,
                                                                   calls=scatter_calls, **kw) * (grads_group > 1)
    replicas = d / grads_group
    replica = collectives.all_reduce_time(reduce_bytes * elements / grads_group, links(replicas, stride * grads_group),
                                          **kw) * (replicas > 1)
    if not qg.any():
        return {"forward": forward, "backward": backward, "scatter": ring, "replica": replica}
    intra_links, inter_links = links(k, stride), links(n, stride * k)
    scale_bytes = SCALE_BYTES * np.maximum(batch.hidden, grads_group) * gather_calls
    intra = (collectives.reduce_scatter_time(INT4_BYTES * elements, intra_links, calls=gather_calls, **kw)
             + collectives.reduce_scatter_time(scale_bytes, intra_links, calls=gather_calls, **kw)) * (k > 1)
    inter = (collectives.reduce_scatter_time(INT4_BYTES * elements / k, inter_links, calls=gather_calls, **kw)
             + collectives.reduce_scatter_time(scale_bytes / k, inter_links, calls=gather_calls, **kw)) * (n > 1)
    vectors = np.where(vector_tensors > 0, collectives.reduce_scatter_time(
        reduce_bytes * vector_elements, grad_links, calls=vector_tensors, **kw), 0.0) * (grads_group > 1)
    # Kernels (bytes per element of the unit): swizzled quantisation reads the gradient and writes int4;
    # the reduction reads the k received chunks and writes one; dequantisation reads 1/k of the unit in int4
    # and writes it in 16 bits; `sum(list(final_output.chunk(num_nodes))) / num_nodes` (coalesced_collectives.py:75)
    # is Python's sum over the n chunks of 1/(k n) each, 0 + c0 (read and write one chunk) then n - 1 adds (read
    # two, write one), and the division (read one, write one): (3n + 1) chunks.
    kernel_bytes = ((reduce_bytes + INT4_BYTES) + INT4_BYTES * (1.0 + 1.0 / k) + (INT4_BYTES + reduce_bytes) / k
                    + reduce_bytes * (3.0 * n + 1.0) / (k * n))
    scatter = np.where(qg, intra + inter + vectors + elements * kernel_bytes / hbm, ring)
    return {"forward": forward, "backward": backward, "scatter": scatter, "replica": replica}


def zero3_unit_cross_node(batch, cluster, fw, w, reduce_bytes, elements) -> dict:
    """Bytes of one ZeRO-3 unit's collectives that cross node boundaries, per node of one data-parallel row
    (see the module docstring): forward and backward gathers and the gradient reduction per micro-batch, the
    replica all-reduce per step. Flat ZeRO-3 is the case of no options."""
    gpn = cluster.gpus_per_node
    degree = state_sharding_degrees(batch, fw)
    d = sharding_degree(batch, fw)
    stride = batch.tp * np.where(fw["shards_over_context_parallel"] > 0, 1.0, batch.cp)
    weights_group, grads_group, hpz = degree["weights"], degree["grads"], degree["hpz"]
    qg = quantized_gradient_rows(batch, gpn)
    sent = np.where(batch.zero_quantized_weights, INT8_BYTES, w)
    row_per_node, _ = _shape(d, stride, gpn)

    def crossing(volume, size, member_stride):
        per_node, nodes = _shape(size, member_stride, gpn)
        return np.where(nodes > 1, volume / per_node, 0.0) * row_per_node

    k, n = _shape(grads_group, stride, gpn)
    forward = crossing(sent * elements, weights_group, stride)
    replicas = d / grads_group
    return {
        "forward": forward,
        "backward": np.where(hpz > 1, crossing(sent * elements, hpz, stride), forward),
        "scatter": np.where(qg, crossing(INT4_BYTES * elements / k, n, stride * k),
                            crossing(reduce_bytes * elements, grads_group, stride)),
        "replica": crossing(2.0 * reduce_bytes * elements / grads_group, replicas, stride * grads_group),
    }


def zero3_step_change(batch, cluster, w, reduce_bytes, unit, units, outside, flat_step, m, once, per_micro_batch,
                      per_step_once, hbm):
    """What ZeRO++ / hierarchical partitioning changes in the ZeRO-3 step's exposed seconds (step_time's
    `per_micro_batch` pipeline over the per-unit times of zero3_unit_comm for the stage's `units` layers, or its
    `per_step_once` on the `once` rows that gather and reduce once per step, minus the flat `flat_step`): 0 on
    every other row, so flat
    ZeRO-3 keeps its numbers exactly. The replica all-reduce runs behind the last micro-batch's backward, once
    per step, or behind every micro-batch's where the stack reduces every micro-batch
    (Framework.replica_reduce_every_microbatch); on `once` rows with the one reduction after the last backward.

    Also returns the seconds the changed rows' collectives take in all per step, hidden or not (0 on the other
    rows), from which data_parallel._windows_used reads what they hide in."""
    rows = np.flatnonzero(hierarchical_rows(batch) & (batch.dp * batch.cp > 1))
    extra, traffic = np.zeros(len(batch)), np.zeros(len(batch))
    if not rows.size:
        return extra, traffic
    sub, sub_fw, pick = sub_batch(batch, rows)
    cluster = cluster.at_rows(pick)  # a sweep's per-row efficiencies at these rows (cost.efficiency_sweep)
    kw = groups.collective_kwargs(cluster)
    links = lambda sizes, strides: groups.links(cluster, sizes, strides, sub.gpus)  # noqa: E731

    w_, r_ = pick(w), pick(reduce_bytes)
    hbm_ = pick(hbm)
    layer_vectors = zero3_fetch.vector_elements_per_rank(sub)
    layer_scatters, outside_scatters = zero3_fetch.zero3_scatter_calls(sub_fw, pick(unit), pick(outside))
    layer = zero3_unit_comm(sub, cluster, sub_fw, w_, r_, pick(unit), sub_fw["gathers_per_layer"], links, kw, hbm_,
                            (layer_vectors > 0).sum(axis=-1).astype(float), layer_vectors.sum(axis=-1), layer_scatters)
    rest = zero3_unit_comm(sub, cluster, sub_fw, w_, r_, pick(outside), sub_fw["gathers_outside_layers"], links, kw,
                           hbm_, sub.vector_tensors_outside, sub.vector_tensors_outside * sub.hidden, outside_scatters)
    rest_mb = np.where(pick(outside) > 0, rest["forward"] + rest["backward"] + rest["scatter"], 0.0)

    def full(values):  # back to the whole batch's rows (the callee's per_micro_batch reads whole-batch arrays)
        out = np.zeros(len(batch))
        out[rows] = values
        return out

    gf, gb, rs, rep = (full(layer[k]) for k in ("forward", "backward", "scatter", "replica"))
    # The step's first micro-batch gathers forward over the weight group; the later ones gather forward as
    # backward does (over hpZ's secondary partition where there is one: module docstring, backward gather).
    first, first_last = per_micro_batch(gf, gb, rs), per_micro_batch(gf, gb, rs + rep)
    if np.array_equal(gf, gb):  # no hpZ rows: every micro-batch gathers as the first
        later, later_last = first, first_last
    else:
        later, later_last = per_micro_batch(gb, gb, rs), per_micro_batch(gb, gb, rs + rep)
    rest_later = full(np.where(pick(outside) > 0, 2.0 * rest["backward"] + rest["scatter"], 0.0))
    replica_rest = full(np.where(pick(outside) > 0, rest["replica"], 0.0))
    every = full(sub_fw["replica_reduce_every_microbatch"]) > 0
    m = np.broadcast_to(np.asarray(m, dtype=float), len(batch))
    hierarchical = np.where(
        every, first_last + (m - 1.0) * later_last + full(rest_mb) + (m - 1.0) * rest_later + m * replica_rest,
        np.where(m > 1, first + (m - 2.0) * later + later_last, first_last)
        + full(rest_mb) + (m - 1.0) * rest_later + replica_rest)
    # The same collectives' seconds in all: the first micro-batch's gathers, the later ones' (hpZ's backward
    # gathers), the reductions and the replica all-reduces, per step.
    replicas = np.where(every, m, 1.0)
    traffic_all = (units * (gf + gb + rs) + (m - 1.0) * units * (2.0 * gb + rs) + replicas * units * rep
                   + full(rest_mb) + (m - 1.0) * rest_later + replicas * replica_rest)
    if np.any(once[rows]):
        rest_once = full(np.where(pick(outside) > 0, rest["forward"] + rest["scatter"], 0.0))
        hierarchical = np.where(once, per_step_once(gf, rs + rep) + rest_once + replica_rest, hierarchical)
        traffic_all = np.where(once, units * (gf + rs + rep) + rest_once + replica_rest, traffic_all)
    extra[rows] = (hierarchical - flat_step)[rows]
    traffic[rows] = traffic_all[rows]
    return extra, traffic


def zero3_bytes_moved(batch, cluster, fw, w, reduce_bytes, params, m, once):
    """Bytes per step each rank's ZeRO-3 collectives carry, buffer sizes as step_time's `dp` figure counts
    them: two gathers (int8 with qwZ) and the gradient reduction (qgZ: the int4 buffer inside the node plus
    1/k of it across nodes) per micro-batch, the replica all-reduce once per step or per micro-batch; on the
    `once` rows (memory.unsharded_through_step) one gather, one reduction and one replica all-reduce a step."""
    degree = state_sharding_degrees(batch, fw)
    stride = batch.tp * np.where(fw["shards_over_context_parallel"] > 0, 1.0, batch.cp)
    sent = np.where(batch.zero_quantized_weights, INT8_BYTES, w)
    k, n = _shape(degree["grads"], stride, cluster.gpus_per_node)
    scatter = np.where(quantized_gradient_rows(batch, cluster.gpus_per_node),
                       INT4_BYTES * (1.0 + np.where(n > 1, 1.0 / k, 0.0)), reduce_bytes)
    replicas = sharding_degree(batch, fw) / degree["grads"]
    replica = np.where(replicas > 1, 2.0 * reduce_bytes / degree["grads"], 0.0)
    replica_calls = np.where((fw["replica_reduce_every_microbatch"] > 0) & ~once, m, 1.0)
    return (np.where(once, sent + scatter, m * (2.0 * sent + scatter)) + replica_calls * replica) * params


def _groups_span_nodes(batch, cluster, fw):
    """Per row, whether its data-parallel group (dp x cp ranks) spans nodes, and whether its sharding group does.
    (It reads only columns the model states read too: memory.STAGE_STATE_COLUMNS.)"""
    stride = batch.tp * np.where(fw["shards_over_context_parallel"] > 0, 1.0, batch.cp)
    _, nodes = _shape(sharding_degree(batch, fw), stride, cluster.gpus_per_node)
    return batch.dp * batch.cp * stride > cluster.gpus_per_node, nodes > 1


def dp_cross_node(batch, cluster, fw, w, params, m, dp_bytes):
    """Data-parallel bytes per step crossing node boundaries, per node of one dp row (module docstring): ZeRO-3
    by collective (forward and backward gathers, gradient reduction, replica all-reduce; one gather and one
    reduction a step on memory.unsharded_through_step rows); ZeRO-0/1/2 their
    whole traffic when the group spans nodes."""
    reduce_bytes = element_bytes(batch, fw)["reduce"]
    if fw is batch_framework_arrays(batch):  # the batch's own stack: once per distinct combination (_groups_span_nodes)
        spans, sharding_spans = distinct.once_per_combination(
            batch, STAGE_STATE_COLUMNS, lambda b: _groups_span_nodes(b, cluster, batch_framework_arrays(b)))
    else:
        spans, sharding_spans = _groups_span_nodes(batch, cluster, fw)
    out = np.where(spans, dp_bytes, 0.0)
    zero3 = batch.zero == 3
    if not zero3.any():
        return out
    # Flat ZeRO-3: every collective runs over the whole sharding group, so the per-unit bytes of
    # zero3_unit_cross_node reduce to m x (2w + r) x params through each of its nodes (no replica term).
    once = unsharded_through_step(batch, fw)
    flat = np.where(sharding_spans, np.where(once, w + reduce_bytes, m * (2.0 * w + reduce_bytes)) * params, 0.0)
    out = np.where(zero3, flat, out)
    rows = np.flatnonzero(hierarchical_rows(batch))  # the general case, on the rows that need it
    if rows.size:
        sub, sub_fw, pick = sub_batch(batch, rows)
        cross = zero3_unit_cross_node(sub, cluster, sub_fw, pick(w), pick(reduce_bytes), pick(params))
        sub_once, sub_m = pick(once), pick(m)
        replica_calls = np.where((sub_fw["replica_reduce_every_microbatch"] > 0) & ~sub_once, sub_m, 1.0)
        # later micro-batches' forward gathers cross as backward's (module docstring)
        out[rows] = (np.where(sub_once, cross["forward"] + cross["scatter"],
                              cross["forward"] + (sub_m - 1.0) * cross["backward"]
                              + sub_m * (cross["backward"] + cross["scatter"]))
                     + replica_calls * cross["replica"])
    return out
