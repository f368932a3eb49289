"""What a ZeRO-3 stack's parameter-fetch schedule adds to its collectives, from the stack's own limits.

Three mechanisms, each switched on by a framework field (planner.frameworks.base) and absent (the functions
return their neutral value) for stacks that leave the field at its default:

- Prefetch stops while too many gathered parameters are alive (`prefetch_live_limit_elements`): DeepSpeed issues
  the next parameter's gather from a module's pre-hook only while `total_available_parameter_numel <
  max_available_parameters_in_numel` (stage3_max_live_parameters; frameworks/deepspeed_v03.py). A module whose
  own weight reaches the limit therefore computes with no gather in flight, and the gather of the module that
  follows it is exposed. Per GPT block, with its four gathered matrices in forward order QKV, attention output,
  h->4h, 4h->h (backward: the reverse), the share of the layer's gathered bytes that is prefetched.
- Re-gathers after recompute (`reuse_limit_elements`): with full recompute a layer's weights are gathered for
  the recompute forward and kept for the backward only while the reuse distance (the elements of the
  parameters used in between) is under `max_reuse_distance_in_numel` (stage3_max_reuse_distance); between a
  matrix's recompute-forward and its backward use run the recompute and the backward of every later matrix
  of the block: 2 x their elements. Matrices at or over the limit are gathered again.
- Host issue time of collectives that walk the group rank by rank (`host_ops_per_rank_per_call`).
- The re-gather of the persistent parameters (the model's vector tensors, planner.specs.model.vector_tensors)
  after every optimizer step, a Python loop over (parameter, rank) pairs (`persistent_regather_views_per_rank`,
  `persistent_regather_copies_per_rank`).
- The gradient reduce-scatter's calls where the stack fills buckets across layers
  (`zero3_scatter_bucket_elements`) rather than reducing unit by unit.
"""

from __future__ import annotations

import numpy as np

from planner.cost import collectives, kernels


def block_matrices(batch):
    """Elements per tp rank of a transformer block's four gathered weight matrices, in forward order:
    QKV, attention output, h->4h (gate and up fused for SwiGLU, as Megatron does), 4h->h."""
    h, t = batch.hidden, batch.tp
    qkv = h * (h + 2.0 * h * batch.kv_heads / batch.heads) / t
    out = h * h / t
    fc1 = (batch.mlp_matrices - 1.0) * h * batch.ffn / t
    fc2 = h * batch.ffn / t
    return qkv, out, fc1, fc2


def prefetched_shares(batch, limit):
    """(forward, backward) share of a block's gathered bytes whose gather runs behind the previous module's
    compute: the bytes of each matrix that follows one of at least `limit` elements count as not prefetched
    (forward: QKV -> out -> fc1 -> fc2 -> next QKV; backward: fc2 -> fc1 -> out -> QKV -> previous fc2).
    1 where `limit` is infinite."""
    qkv, out, fc1, fc2 = block_matrices(batch)
    total = qkv + out + fc1 + fc2
    big = lambda x: x >= limit  # noqa: E731
    forward = out * big(qkv) + fc1 * big(out) + fc2 * big(fc1) + qkv * big(fc2)
    backward = fc1 * big(fc2) + out * big(fc1) + qkv * big(out) + fc2 * big(qkv)
    return 1.0 - forward / total, 1.0 - backward / total


def regathered(batch, limit):
    """(elements, calls) per block gathered a second time in backward under full recompute: the matrices
    whose reuse distance, 2 x the elements of the later matrices of the block, reaches `limit`. 0 without
    full recompute or with an infinite limit."""
    qkv, out, fc1, fc2 = block_matrices(batch)
    later = (out + fc1 + fc2, fc1 + fc2, fc2, 0.0 * fc2)
    again = [2.0 * after >= limit for after in later]
    full = batch.recompute == 2
    elements = full * sum(m * a for m, a in zip((qkv, out, fc1, fc2), again))
    calls = full * sum(np.asarray(a, dtype=float) for a in again)
    return elements, calls


def host_issue_s(fw, shard_links, units, has_outside, unit_backward, regather_calls):
    """Exposed host seconds per micro-batch of issuing ZeRO-3 collectives that walk the group rank by rank.

    Where the stack's collectives do `host_ops_per_rank_per_call` eager ops per rank of the N-rank sharding
    group (list-form collectives: frameworks/deepspeed_v03.py), each call costs that x N x kernels.EAGER_OP_S
    of host time. The all-gathers are issued after a device synchronize from the hook that precedes the
    compute (forward and backward, re-gathers included): exposed in full. The reduce-scatters are issued while
    the layer's backward kernels run: exposed only beyond `unit_backward`, the seconds a layer's backward
    takes already (the longer of its compute and its share of the ZeRO-3 traffic); those of the rest of the
    model come after the last backward kernel: exposed. 0 where the stack issues flat-buffer collectives
    (ops = 0).
    """
    ranks = collectives.group_ranks(shard_links)
    per_call = fw["host_ops_per_rank_per_call"] * ranks * kernels.EAGER_OP_S
    gathers = per_call * (units * (2.0 * fw["gathers_per_layer"] + regather_calls)
                          + has_outside * 2.0 * fw["gathers_outside_layers"])
    scatters = (units * np.maximum(per_call * fw["scatter_calls_per_layer"] - unit_backward, 0.0)
                + has_outside * per_call * fw["scatter_calls_outside_layers"])
    return gathers + scatters


# DeepSpeed keeps a parameter gathered between uses when it has at most this many elements (on its tp rank):
# zero_optimization.stage3_param_persistence_threshold, default 1e5 (DeepSpeed 0.19.8 runtime/zero/config.py:228;
# `ds_numel <= ` at partition_parameters.py:1292, parameter_offload.py:325; v0.3.14 stage3.py:1058 used `<`).
PARAM_PERSISTENCE_THRESHOLD = 1e5


def persistent_elements_per_rank(batch):
    """vector_elements_per_rank of the vector tensors that persist (at most PARAM_PERSISTENCE_THRESHOLD elements),
    0 for the others: e.g. megatron-1t's h->4h bias at tp 1 (102,400 elements) is gathered with its module like a
    matrix, not again after the step."""
    elements = vector_elements_per_rank(batch)
    return np.where(elements <= PARAM_PERSISTENCE_THRESHOLD, elements, 0.0)


def persistent_tensors_per_layer(batch):
    """How many of a block's vector tensors persist (persistent_elements_per_rank > 0), per candidate."""
    return (persistent_elements_per_rank(batch) > 0).sum(axis=-1).astype(float)


def vector_elements_per_rank(batch):
    """Elements per tp rank of each vector tensor of a block (planner.specs.model.vector_tensors, the parameters
    that stay gathered between uses under DeepSpeed's param_persistence_threshold): (candidates, tensors), those
    split over tp divided by it, 0 for a model's absent ones."""
    tp = np.asarray(batch.tp, dtype=float)[:, None]
    return batch.vector_elements_per_layer / np.where(batch.vector_split_per_layer, tp, 1.0)


def ranks_holding(elements, ranks):
    """Ranks whose shard of an `elements` parameter holds any of it: DeepSpeed pads the parameter to a multiple
    of the group and gives each rank ceil(elements / ranks), so the last ranks may hold padding only."""
    return np.ceil(elements / np.maximum(np.ceil(elements / ranks), 1.0))  # 0 for an absent (0-element) tensor


def step_regather_s(fw, batch, ranks, units, has_outside):
    """Exposed host seconds per optimizer step of gathering the persistent parameters again (`units` blocks'
    vector tensors and, where the stage holds the rest of the model, those outside the layers): one
    list-form all-gather (`host_ops_per_rank_per_call` x ranks eager ops), then per parameter and per rank holding
    some of it the stack's views (EAGER_OP_S - KERNEL_LAUNCH_S each) and copies (EAGER_OP_S each). It runs after
    the step's last kernel, so nothing hides it. 0.0 where the stack has no such loop."""
    per_pair = (fw["persistent_regather_views_per_rank"] * (kernels.EAGER_OP_S - kernels.KERNEL_LAUNCH_S)
                + fw["persistent_regather_copies_per_rank"] * kernels.EAGER_OP_S)
    per_layer = ranks_holding(persistent_elements_per_rank(batch), np.expand_dims(ranks, -1)).sum(axis=-1)
    pairs = units * per_layer + has_outside * batch.vector_tensors_outside * ranks_holding(batch.hidden, ranks)
    gather = fw["host_ops_per_rank_per_call"] * ranks * kernels.EAGER_OP_S
    return np.where(per_pair > 0, pairs * per_pair + gather, 0.0)


def zero3_scatter_calls(fw, unit, outside):
    """ZeRO-3 reduce-scatter calls per micro-batch for one layer and for the parameters outside the layers: the
    stack's per-unit counts, or, where it fills buckets across layers (Framework.zero3_scatter_bucket_elements),
    each part's share of the buckets, a fraction where one bucket holds several layers, and the epilogue's flush
    of the last bucket with the parameters outside the layers."""
    bucket = fw["zero3_scatter_bucket_elements"]
    bucketed = bucket > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        layer = np.where(bucketed, unit / bucket, fw["scatter_calls_per_layer"])
        rest = np.where(bucketed, outside / bucket + 1.0, fw["scatter_calls_outside_layers"])
    return layer, rest
