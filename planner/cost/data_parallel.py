"""Data-parallel communication per step: ZeRO-3 / FSDP gathers and reduce-scatters per unit behind the units'
compute (ZeRO++ / MiCS / HSDP, cost/hierarchy.py, and ZeRO-Infinity's fetch, cost/offload.py, in the same chain),
the ZeRO-0/1/2 bucketed gradient reduction behind the last backward and the parameter all-gather after the step,
and the experts' gradient reduction over the expert data-parallel group in what the dense traffic leaves of
each window. Pure, vectorised.

Its own module: this traffic hides behind whole passes of a stage, not inside a layer
(cost/model_parallel_comm.py), and it is where the stacks differ most (what they shard, calls per unit, which
overlaps they have: planner.frameworks).
"""

from __future__ import annotations

import functools

import numpy as np

from planner.cost import collectives, distinct, groups, hierarchy, moe, offload, zero3_fetch
from planner.cost.gemm import rank_share
from planner.cost.memory import element_bytes, fp32_accumulation_rows, optimizer_sharded_rows, unsharded_through_step
from planner.cost.overlap import behind_later_chunks, hidden_behind
from planner.cost.stages import data_parallel_stage
from planner.frameworks import batch_framework_arrays
from planner.specs.candidate_batch import DTYPE_BYTES


def data_parallel(batch, cluster, fw, w, stage, params, m):
    """Exposed data-parallel seconds per step: ZeRO-3/FSDP gathers per micro-batch, gradient reduction,
    parameter all-gather after the step. `stage` has the pacing stage's layers and seconds."""
    kw = groups.collective_kwargs(cluster)
    zero = batch.zero
    reduce_bytes = element_bytes(batch, fw)["reduce"]
    many = batch.dp * batch.cp > 1
    timed = _data_parallel_collectives(batch, cluster)
    # FSDP2 under pipelining (memory.unsharded_through_step): the stage is gathered once per step, in the first
    # micro-batch's forward, and reduced once, after the last backward.
    once = many & unsharded_through_step(batch, fw)
    # Optimizer offload: the gradient partition's round trips through the GPU, on the stream of the reduction they
    # follow (cost/offload.py gradient_round_trip_s, gradient_round_trips).
    round_trip = offload.gradient_round_trip_s(batch, cluster, fw, params)
    zero3 = _zero3_traffic(batch, cluster, fw, w, stage, params, m, timed, reduce_bytes, many & (zero == 3), once, kw,
                           round_trip)
    sharded = _zero012_traffic(batch, fw, cluster.efficiency, stage, params, m, timed, once, round_trip)
    after_step = np.where(sharded["gathered"], sharded["gathers"] * sharded["param_gather"], 0.0)
    exposed = np.select([zero == 3], [zero3["step"]], sharded["reduce"] + after_step)
    bytes_moved = _bytes_moved(batch, cluster, w, reduce_bytes, stage["layers"], params, m, once,
                               zero3["regathered_bytes"], sharded)
    # MoE and activation-offload batches only: the dense search's hot path does not pay for the windows the experts'
    # reduction and the checkpoints' host copies read (expert_data_parallel, offload.activation_copies).
    used = (_windows_used(batch, m, many, once, timed, stage["layers"], zero3, sharded)
            if batch.has_moe or np.any(batch.activation_offload) else None)
    offload_exposed = zero3["offload_fetch"] + np.where(zero == 3, zero3["round_trip"], sharded["round_trip"])
    return np.where(many, exposed, 0.0), np.where(many, bytes_moved, 0.0), offload_exposed, used


def _zero3_traffic(batch, cluster, fw, w, stage, params, m, timed, reduce_bytes, zero3, once, kw, round_trip):
    """ZeRO-3 / FSDP exposed seconds per step (`step`; `flat_step` before the hierarchy's change and the host's
    issue), the backward's gather seconds with re-gathers (`gather_bwd`), the re-gathered bytes,
    ZeRO-Infinity's fetch (`offload_fetch` exposed, `offload_fetch_s` in all) and the exposed seconds of the
    offloaded gradient partition's round trips (`round_trip`; `round_trip` in: one micro-batch's, whole stage)."""
    eff = cluster.efficiency
    # This layout's group links, looked up once and only where a rarer stack needs them.
    shard_links = functools.cache(lambda: _shard_links(batch, cluster, fw))
    # ZeRO-3 / FSDP: per transformer layer, its parameters gathered (forward, again in backward) and its
    # gradients reduce-scattered; the rest of the model (embedding, head) once each.
    unit = batch.layer_params_per_tp_rank
    gather, scatter = timed["gather"], timed["scatter"]
    units = stage["layers"]
    limited, shares, regather_calls, regathered_bytes, gather_bwd = _limited_fetch(batch, fw, zero3, gather, w, m,
                                                                                   units, shard_links, kw)
    per_micro_batch, per_step_once = _zero3_schedules(batch, fw, eff, stage, limited, shares)
    outside = np.maximum(params - units * unit, 0.0)
    outside_gather, outside_scatter = timed["outside_gather"], timed["outside_scatter"]
    layers_mb = per_micro_batch(gather, gather_bwd, scatter)
    zero3_mb = layers_mb + 2.0 * outside_gather + outside_scatter
    host_mb = _host_issue_s(fw, zero3, stage, gather_bwd, scatter, units, outside, regather_calls, shard_links)
    hbm = cluster.accelerator.hbm_bytes_per_s * eff.hbm_efficiency * rank_share(batch.gpus, cluster)
    flat_step = m * zero3_mb
    if once.any():
        flat_step = np.where(once, per_step_once(gather, scatter) + outside_gather + outside_scatter, flat_step)
    # Host work per micro-batch (issuing the collectives) and once per step (the persistent parameters' re-gather).
    host_s = m * host_mb + _persistent_regather_s(fw, zero3, batch, w, units, outside, shard_links, kw)
    change, hierarchical_s = hierarchy.zero3_step_change(
        batch, cluster, w, reduce_bytes, unit, units, outside, flat_step, m, once, per_micro_batch, per_step_once, hbm)
    zero3_step = flat_step + host_s + change
    # (Without re-gathers the layers' chain above is the one the fetch is added to: not computed twice.)
    offload_fetch, offload_fetch_s = offload.parameter_fetch(
        batch, cluster, w, units, unit, outside, gather, scatter, m, per_micro_batch, once, per_step_once,
        chain_without_fetch=layers_mb if gather_bwd is gather else None)
    # Each unit's share of the round trip follows its reduce-scatter on the same stream (stage3.py partition_grads);
    # the units outside the layers reduce outside the chain, their share exposed. The chain it is added to carries
    # ZeRO-Infinity's fetch already (the same prefetch chain, parameter_fetch): the two hide behind the passes once.
    exposed_trip = trips_s = 0.0
    if np.any(round_trip > 0):
        per_unit, per_outside = round_trip * unit / params, round_trip * outside / params
        fetch = offload.shard_fetch_s(batch, cluster, w, unit)
        with_fetch = (layers_mb if not np.any(fetch) else
                      per_micro_batch(gather + fetch, gather_bwd + fetch, scatter))
        trips = offload.gradient_round_trips(batch, fw)
        exposed_trip = trips * (per_micro_batch(gather + fetch, gather_bwd + fetch, scatter + per_unit) - with_fetch
                                + per_outside)
        trips_s = trips * round_trip
    # The chain's exposed seconds (the step's, less the host's issue) and its collectives' seconds in all, flat or as
    # the hierarchy changes them: what _windows_used reads the chain's hidden seconds from.
    chain_s = m * (units * (gather + gather_bwd + scatter) + 2.0 * outside_gather + outside_scatter)
    if once.any():
        chain_s = np.where(once, units * (gather + scatter) + outside_gather + outside_scatter, chain_s)
    chain_s = np.where(hierarchical_s > 0, hierarchical_s, chain_s)
    return {"step": zero3_step, "flat_step": flat_step, "chain_step": flat_step + change, "chain_s": chain_s,
            "gather_bwd": gather_bwd, "regathered_bytes": regathered_bytes, "offload_fetch": offload_fetch,
            "offload_fetch_s": offload_fetch_s, "round_trip": exposed_trip, "round_trips_s": trips_s}


def _limited_fetch(batch, fw, zero3, gather, w, m, units, shard_links, kw):
    """The rows whose stack's fetch schedule has limits of its own, the shares of each pass's gathers they
    prefetch (None when no row has), their re-gather calls and bytes per step, and the backward's gather seconds
    with the re-gathers."""
    # Stacks whose fetch schedule has limits of its own (cost/zero3_fetch.py; DeepSpeed before v0.5.5): the
    # share of each pass's gathers that can be prefetched, and the re-gathers after a full recompute.
    limited = zero3 & (np.isfinite(fw["prefetch_live_limit_elements"]) | np.isfinite(fw["reuse_limit_elements"]))
    if not limited.any():
        return limited, None, np.zeros(len(batch)), 0.0, gather
    shares = zero3_fetch.prefetched_shares(batch, fw["prefetch_live_limit_elements"])
    regather_elements, regather_calls = zero3_fetch.regathered(batch, fw["reuse_limit_elements"])
    regather_calls = np.where(limited, regather_calls, 0.0)
    regathered_bytes = np.where(limited, m * units * w * regather_elements, 0.0)
    gather_bwd = gather + groups.only_where(limited & (regather_calls > 0), collectives.all_gather_time,
                                            w * regather_elements, shard_links(), calls=regather_calls, **kw)
    return limited, shares, regather_calls, regathered_bytes, gather_bwd


def _behind_units(comm, unit_compute, units):
    """Exposed seconds of a pass whose unit i+1 communication runs behind unit i's compute: the first unit's
    in full, then what each later one's exceeds its predecessor's compute."""
    return comm + (units - 1.0) * np.maximum(comm - unit_compute, 0.0)


def _hidden_in_practice(ideal, all_units, dp_overlap):
    """The schedule's `ideal` exposure, with the residual eta of what it could hide actually hidden."""
    return ideal + (1.0 - dp_overlap) * (all_units - ideal)


def _zero3_micro_batch_s(gather_fwd, gather_bwd, scatter_, *, stage, prefetch, dp_overlap, limited, shares):
    """Exposed seconds of one micro-batch's ZeRO-3 traffic over the transformer layers."""
    units = stage["layers"]
    fwd_exposed = _behind_units(gather_fwd, stage["layer_forward"], units)
    bwd_exposed = _behind_units(gather_bwd + scatter_, stage["layer_backward"], units)
    all_units = units * (gather_fwd + gather_bwd + scatter_)
    ideal = np.where(prefetch, fwd_exposed + bwd_exposed, all_units)
    if limited.any():  # what is not prefetched waits in full
        share_fwd, share_bwd = shares
        partial = (share_fwd * fwd_exposed + (1.0 - share_fwd) * units * gather_fwd
                   + share_bwd * bwd_exposed + (1.0 - share_bwd) * units * (gather_bwd + scatter_))
        ideal = np.where(prefetch & limited, partial, ideal)
    return _hidden_in_practice(ideal, all_units, dp_overlap)


def _zero3_step_once_s(gather_fwd, scatter_, *, stage, prefetch, dp_overlap):
    """Exposed seconds of a step that gathers each unit once (the first micro-batch's forward, prefetched
    as ever) and reduce-scatters every unit after the last backward (`perform_reduce_grad`): no compute
    is left on the stage to hide the reduction behind."""
    units = stage["layers"]
    all_units = units * gather_fwd
    ideal = np.where(prefetch, _behind_units(gather_fwd, stage["layer_forward"], units), all_units)
    return _hidden_in_practice(ideal, all_units, dp_overlap) + units * scatter_


def _zero3_schedules(batch, fw, eff, stage, limited, shares):
    """The ZeRO-3 chain's exposed seconds as functions of the per-unit collective seconds, for this stage and
    stack: per micro-batch (gather_fwd, gather_bwd, scatter) and per step gathered once (gather_fwd, scatter).
    cost/hierarchy.py and cost/offload.py rerun them on their own per-unit seconds."""
    # Without the layout's dp_comm_overlap the gathers and reduce-scatters run on the compute stream, one after the
    # other (DeepSpeed's overlap_comm False: parameter_offload.py:190, stage3.py:336 at DeepSpeed@edaa722).
    prefetch = (fw["prefetches_next_unit"] > 0) & batch.dp_comm_overlap
    per_micro_batch = functools.partial(_zero3_micro_batch_s, stage=stage, prefetch=prefetch,
                                        dp_overlap=eff.dp_overlap, limited=limited, shares=shares)
    per_step_once = functools.partial(_zero3_step_once_s, stage=stage, prefetch=prefetch, dp_overlap=eff.dp_overlap)
    return per_micro_batch, per_step_once


def _host_issue_s(fw, zero3, stage, gather_bwd, scatter, units, outside, regather_calls, shard_links):
    """Seconds per micro-batch the host's issue of the ZeRO-3 collectives adds where the stack's collectives walk
    the group (0.0 where none does)."""
    if not (zero3 & (fw["host_ops_per_rank_per_call"] > 0)).any():  # stacks whose collectives walk the group
        return 0.0
    # The host issues a layer's reduce-scatters while the GPU is busy with that layer's backward, and the
    # collectives of the chain run on the network meanwhile: the layer takes the longest of the three, so
    # the issue hides only behind what the compute and the chain's own traffic already take (hiding it
    # behind the compute alone as well would count the same window twice).
    unit_backward = np.maximum(stage["layer_backward"], gather_bwd + scatter)
    return np.where(zero3, zero3_fetch.host_issue_s(fw, shard_links(), units, outside > 0, unit_backward,
                                                    regather_calls), 0.0)


def _persistent_regather_s(fw, zero3, batch, w, units, outside, shard_links, kw):
    """Exposed seconds per step of gathering the persistent (vector) parameter tensors again after the optimizer
    step, as the stack does it (0.0 where it does not): rank by rank in Python (DeepSpeed before v0.5.5,
    zero3_fetch.step_regather_s), or one collective per tensor (Framework.persistent_regather_calls_per_tensor;
    the tensors are small, taken as `hidden` elements each, so each call is about NCCL's latency over the whole
    sharding group). Only tensors under DeepSpeed's persistence threshold persist (zero3_fetch)."""
    loop = fw["persistent_regather_views_per_rank"] + fw["persistent_regather_copies_per_rank"] > 0
    calls_per_tensor = fw["persistent_regather_calls_per_tensor"]
    seconds = 0.0
    if (zero3 & loop).any():
        links = shard_links()
        ranks = collectives.group_ranks(links)
        seconds = np.where(zero3 & loop, zero3_fetch.step_regather_s(fw, batch, ranks, units, outside > 0), 0.0)
    per_call = zero3 & (calls_per_tensor > 0)
    if per_call.any():
        calls = calls_per_tensor * (units * zero3_fetch.persistent_tensors_per_layer(batch)
                                    + (outside > 0) * batch.vector_tensors_outside)
        seconds = seconds + groups.only_where(per_call, collectives.all_gather_time, calls * batch.hidden * w,
                                              shard_links(), calls=np.maximum(calls, 1.0), **kw)
    return seconds


def _zero012_traffic(batch, fw, eff, stage, params, m, timed, once, round_trip):
    """ZeRO-0/1/2: the exposed gradient reduction per step (`reduce`) and parameter all-gather per call
    (`param_gather`), the calls of each per step (`reductions`, `gathers`), the rows reducing every
    micro-batch (`every_mb`) and the exposed seconds of the offloaded gradient partition's round trips
    (`round_trip`; `round_trip` in: one micro-batch's)."""
    zero = batch.zero
    # ZeRO-0/1/2: bucketed gradient reduction behind a backward pass, in the calls the collectives were priced in.
    buckets = timed["buckets"]
    all_reduce, reduce_scatter = timed["all_reduce"], timed["reduce_scatter"]
    backward = stage["backward"]
    overlapped = batch.dp_comm_overlap
    per_chunk = (fw["dp_reduce_per_model_chunk"] > 0) & (batch.vpp > 1)
    behind = lambda comm: np.where(overlapped, np.where(  # noqa: E731
        per_chunk, behind_later_chunks(backward, comm, buckets, eff.dp_overlap, batch.vpp, batch.pp),
        hidden_behind(backward, comm, buckets, eff.dp_overlap)), comm)
    every_mb, reductions, gathers = per_microbatch_counts(batch, fw, m, once)
    # Each row's own reduction (all-reduce where whole_gradient_all_reduced, else reduce-scatter) behind its
    # backward, in one pass of `behind` (elementwise: the same numbers as a pass over each collective, at a third of
    # the cost).
    whole = whole_gradient_all_reduced(batch, fw)
    reduction = np.where(whole, all_reduce, reduce_scatter)
    reduce_behind = behind(reduction)
    # Under pipelining (once) FSDP2's ZeRO-2 reduces after the last backward, behind nothing.
    reduce = np.where(once & ~whole, reduce_scatter, reductions * reduce_behind)
    # ZeRO 1/2 with optimizer offload: the partition's round trips follow the reductions on their stream
    # (stage_1_and_2.py reduce_ipg_grads), after each micro-batch's at ZeRO-2, after the step's one at ZeRO-1: what
    # the pair exposes beyond the reduction alone.
    exposed_trip = trips_s = 0.0
    if np.any(round_trip > 0):
        trips = np.where((zero == 1) | every_mb, offload.gradient_round_trips(batch, fw), 0.0)
        exposed_trip = trips * (behind(reduction + round_trip) - reduce_behind)
        trips_s = trips * round_trip
    # ZeRO-1/2 (and BF16_Optimizer): updated 16-bit parameters all-gathered after the step, behind the next forward
    # if overlapped (--fp8-param-gather: the layers' Linear weights in fp8, one byte; _parameter_gather_bytes).
    param_gather_s = timed["param_gather"]
    param_gather = np.where(batch.dp_comm_overlap & (fw["param_gather_overlap"] > 0),
                            hidden_behind(stage["forward"], param_gather_s, buckets, eff.dp_overlap), param_gather_s)
    return {"reduce": reduce, "param_gather": param_gather, "reductions": reductions,
            "gathers": gathers, "every_mb": every_mb, "whole": whole,
            "gathered": parameters_gathered_after_step(batch, fw), "round_trip": exposed_trip, "round_trips_s": trips_s}


def per_microbatch_counts(batch, fw, m, once):
    """ZeRO-0/1/2's gradient reductions and parameter gathers per step: the rows reducing after every micro-batch's
    backward (`every_mb`: ZeRO-2 where the stack reduces as it goes, ZeRO-0 where its accumulation never suspends DDP's
    sync, Framework.zero0_reduces_every_microbatch), the reductions (m there, else 1) and the gathers (m where FSDP's
    ZeRO-2 gathers before every forward, Framework.zero2_gathers_every_microbatch, else 1); once a step on the `once`
    rows (FSDP2 under pipelining). The dense gradients' and the experts' alike."""
    zero = batch.zero
    every_mb = (((zero == 2) & (fw["zero2_reduces_every_microbatch"] > 0))
                | ((zero == 0) & (fw["zero0_reduces_every_microbatch"] > 0))) & ~once
    gathers = np.where((zero == 2) & (fw["zero2_gathers_every_microbatch"] > 0) & ~once, m, 1.0)
    return every_mb, np.where(every_mb, m, 1.0), gathers


def whole_gradient_all_reduced(batch, fw):
    """Rows (ZeRO 0-2) whose gradient reduction all-reduces the whole gradient over dp: ZeRO-0, the stack's
    fp32-accumulating optimizer where it has no reduce-scatter of its own (Framework.fp32_accumulation_all_reduces:
    DeepSpeed's BF16_Optimizer at ZeRO 0 or 1), and ZeRO-1/2 where the stack all-reduces its buckets
    (Framework.sharded_reduce_all_reduces: today's DeepSpeed). The rest reduce-scatter."""
    sharded_all_reduce = (batch.zero >= 1) & (batch.zero <= 2) & (fw["sharded_reduce_all_reduces"] > 0)
    return (batch.zero == 0) | sharded_all_reduce | _all_reducing_fp32_accumulation(batch, fw)


def parameters_gathered_after_step(batch, fw):
    """Rows whose updated 16-bit parameters are all-gathered over dp after the step: ZeRO 1 and up, and the
    optimizer that shards its master over dp at ZeRO-0 too (memory.zero0_sharding_optimizer_rows:
    BF16_Optimizer.update_lp_params)."""
    return optimizer_sharded_rows(batch, fw)


def _all_reducing_fp32_accumulation(batch, fw):
    return (fw["fp32_accumulation_all_reduces"] > 0) & fp32_accumulation_rows(batch, fw)


def _bytes_moved(batch, cluster, w, reduce_bytes, units, params, m, once, regathered_bytes, sharded):
    """Bytes each rank's data-parallel traffic moves per step: ZeRO-3's gathers and reductions (per the
    hierarchy where ZeRO++ / shard groups change them), or ZeRO-0/1/2's reductions and parameter all-gathers."""
    zero = batch.zero
    gathered_bytes = _parameter_gather_bytes(batch, w, params, units)
    zero3_bytes_per_element = np.where(once, w + reduce_bytes, m * (2.0 * w + reduce_bytes))  # gathers + reductions
    bytes_moved = np.select([zero == 3], [zero3_bytes_per_element * params + regathered_bytes],
                            reduce_bytes * params * np.where(sharded["whole"], 2.0, 1.0) * sharded["reductions"]
                            + np.where(sharded["gathered"], sharded["gathers"] * gathered_bytes, 0.0))
    hierarchical = np.flatnonzero(hierarchy.hierarchical_rows(batch))
    if hierarchical.size:  # ZeRO++ / shard-group rows only: the rest keep the flat count above
        sub, sub_fw, pick = hierarchy.sub_batch(batch, hierarchical)
        bytes_moved = np.array(bytes_moved, dtype=float)
        bytes_moved[hierarchical] = hierarchy.zero3_bytes_moved(sub, cluster, sub_fw, pick(w), pick(reduce_bytes),
                                                                pick(params), pick(m), pick(once))
    return bytes_moved


def _windows_used(batch, m, many, once, timed, units, zero3, sharded):
    """Seconds of each compute window the dense data-parallel traffic uses (expert_data_parallel's `dense_used`,
    offload.activation_copies'), and how many forward windows carry the parameter all-gather (`gathers`) and backward
    windows the gradient reduction (`reductions`).

    The seconds each traffic hides in, which the experts' reduction and the checkpoints' host copies cannot use
    again: the gradient reduction (with the offloaded gradient partition's round trips on its stream) in the last
    backward, or in every backward where it runs every micro-batch (per reduction; a reduction by model chunk
    hides in more than one window, which activation_copies spills over), the parameter all-gather in the first
    forward (every forward where it runs every micro-batch), ZeRO-3's chain with ZeRO-Infinity's fetch and the
    round trips in each micro-batch's passes (`micro_batch`), or where the stage is gathered once a step (`once`)
    in the first forward. The fetch and the round trips use their windows with one data-parallel rank too."""
    zero = batch.zero
    all_reduce, reduce_scatter = timed["all_reduce"], timed["reduce_scatter"]
    zero3_on = zero == 3
    sharded_on = many & ~zero3_on
    reductions = np.where(zero3_on, 0.0, sharded["reductions"])
    reduce_s = np.where(once & ~sharded["whole"], reduce_scatter,
                        sharded["reductions"] * np.where(sharded["whole"], all_reduce, reduce_scatter))
    reduce_hidden = (np.where(sharded_on, np.maximum(reduce_s - sharded["reduce"], 0.0), 0.0)
                     + np.maximum(sharded["round_trips_s"] - sharded["round_trip"], 0.0))
    # ZeRO-3: the chain's hidden seconds (all it takes less what is exposed), the fetch's and the round trips'.
    chain_hidden = np.where(many, np.maximum(zero3["chain_s"] - zero3["chain_step"], 0.0), 0.0)
    zero3_hidden = (chain_hidden + np.maximum(zero3["offload_fetch_s"] - zero3["offload_fetch"], 0.0)
                    + np.maximum(zero3["round_trips_s"] - zero3["round_trip"], 0.0))
    once3 = zero3_on & once
    return {"reductions": reductions,
            "gathers": np.where(once3, 1.0, np.where(sharded_on & sharded["gathered"], sharded["gathers"], 0.0)),
            "backward": np.where(zero3_on, 0.0, reduce_hidden / np.maximum(reductions, 1.0)),
            "forward": np.where(once3, zero3_hidden, np.where(sharded_on, np.maximum(
                timed["param_gather"] - sharded["param_gather"], 0.0), 0.0)),
            "micro_batch": np.where(zero3_on & ~once, zero3_hidden / m, 0.0)}


def _stage_layer_params(batch, stage_layers):
    """Parameters of the transformer layers (per tp rank) on the stage whose data-parallel traffic the step waits for."""
    return stage_layers * batch.layer_params / batch.tp


def _parameter_gather_bytes(batch, w, params, stage_layers):
    """Bytes of the ZeRO-1/2 parameter all-gather after the step (--fp8-param-gather: the layers' Linear weights
    in fp8, one byte)."""
    return w * params - np.where(batch.fp8_param_gather, (w - 1.0) * _stage_layer_params(batch, stage_layers), 0.0)


def bucket_count(fw, params, ranks, overlapped, reduce_bytes):
    """Buckets the stack reduces `params` gradients in over `ranks` data-parallel ranks, at least one: its bucket
    size (Framework.grad_bucket_elements, or grad_bucket_bytes over the reduction's `reduce_bytes` per element), or
    a size per rank where the stack scales it with dp (grad_bucket_elements_per_rank); one where the reduction is not
    `overlapped` and the stack then reduces the buffer whole (Framework.one_bucket_without_overlap)."""
    size = np.maximum(np.maximum(fw["grad_bucket_elements"], fw["grad_bucket_bytes"] / reduce_bytes),
                      fw["grad_bucket_elements_per_rank"] * ranks)
    buckets = np.maximum(np.ceil(params / size), 1.0)
    return np.where((fw["one_bucket_without_overlap"] > 0) & ~np.asarray(overlapped, dtype=bool), 1.0, buckets)


def _gradient_buckets(batch, fw, params, units, outside, reduce_bytes):
    """Collectives the stage's gradients are reduced in (ZeRO-0/1/2), at least one: buckets (bucket_count; the
    reduction holds `reduce_bytes` bytes an element), or one per wrapped unit where the stack reduces unit by unit
    (Framework.per_unit_collectives_from_zero): `units` layers, and the units outside them where the stage holds
    parameters outside its layers (`outside` of them)."""
    buckets = bucket_count(fw, params, batch.dp, batch.dp_comm_overlap, reduce_bytes)
    per_unit = units * fw["gathers_per_layer"] + np.where(outside > 0, fw["gathers_outside_layers"], 0.0)
    return np.maximum(np.where(batch.zero >= fw["per_unit_collectives_from_zero"], per_unit, buckets), 1.0)


def _shard_links(batch, cluster, fw):
    """Links of the group the model states are sharded over: dp x cp where the stack shards over context-parallel
    ranks too, else dp."""
    # Gradients of cp ranks (different tokens, same weights) are reduced together with dp's.
    grad_links = groups.layout_links(batch, cluster, groups.dp_cp_group)
    shard_over_cp = fw["shards_over_context_parallel"] > 0
    if shard_over_cp.all() or (batch.cp == 1).all():  # the same group either way: no second lookup
        return grad_links
    return {k: np.where(shard_over_cp, grad_links[k], v) for k, v in groups.layout_links(batch, cluster, groups.dp_group).items()}


# What _data_parallel_collectives reads: the model, the parallel sizes and vpp (the stage's parameters and
# groups), ZeRO, the dtypes, the stack and the overlap (the bucket count); not the micro-batch, the batch size,
# recompute or the hierarchy.
DATA_PARALLEL_COLUMNS = distinct.MODEL_COLUMNS + distinct.PARALLEL_SIZES + (
    "vpp", "zero", "dtype", "framework", "grad_reduce_in_fp32", "fp8_param_gather", "a2a_overlap",
    "dp_comm_overlap") + distinct.STAGE_SPLIT


def _data_parallel_collectives(batch, cluster):
    """Seconds of the flat data-parallel collectives of data_parallel (ZeRO-3 gathers and reduce-scatters per
    layer and outside the layers, ZeRO-0 all-reduce, ZeRO-1/2 reduce-scatter and parameter all-gather) and the
    ZeRO-0/1/2 calls they are made in (`buckets`, which the reduction hides behind backward in), once per
    distinct combination of DATA_PARALLEL_COLUMNS (cost/distinct.py) and spread to the candidates."""
    return distinct.once_per_combination(batch, DATA_PARALLEL_COLUMNS,
                                         lambda b: _data_parallel_collectives_per_row(b, cluster))


def _data_parallel_collectives_per_row(batch, cluster):
    kw = groups.collective_kwargs(cluster)
    fw = batch_framework_arrays(batch)
    w = DTYPE_BYTES[batch.dtype.astype(int)]
    reduce_bytes = element_bytes(batch, fw)["reduce"]
    zero = batch.zero
    params, units, _ = data_parallel_stage(batch)
    grad_links = groups.layout_links(batch, cluster, groups.dp_cp_group)
    shard_links = _shard_links(batch, cluster, fw)
    many = batch.dp * batch.cp > 1
    zero3 = many & (zero == 3)
    unit = batch.layer_params_per_tp_rank
    zero3_rows = groups.Rows(zero3, shard_links)
    outside = np.maximum(params - units * unit, 0.0)
    outside_rows = groups.Rows(zero3 & (outside > 0), shard_links)
    buckets = _gradient_buckets(batch, fw, params, units, outside, reduce_bytes)
    whole = many & whole_gradient_all_reduced(batch, fw)
    sharded_12 = many & ((zero == 1) | (zero == 2))
    gathered = many & (zero < 3) & parameters_gathered_after_step(batch, fw)
    layer_scatters, outside_scatters = zero3_fetch.zero3_scatter_calls(fw, unit, outside)
    return {
        "buckets": buckets,
        "gather": zero3_rows.run(collectives.all_gather_time, w * unit, calls=fw["gathers_per_layer"], **kw),
        "scatter": zero3_rows.run(collectives.fractional(collectives.reduce_scatter_time), reduce_bytes * unit,
                                  calls=layer_scatters, **kw),
        "outside_gather": outside_rows.run(collectives.all_gather_time, w * outside, calls=fw["gathers_outside_layers"],
                                           **kw),
        "outside_scatter": outside_rows.run(collectives.fractional(collectives.reduce_scatter_time),
                                            reduce_bytes * outside, calls=outside_scatters, **kw),
        "all_reduce": groups.only_where(whole, collectives.all_reduce_time, reduce_bytes * params,
                                        grad_links, calls=buckets, **kw),
        "reduce_scatter": groups.only_where(sharded_12 & ~whole, collectives.reduce_scatter_time, reduce_bytes * params,
                                            grad_links, calls=buckets, **kw),
        "param_gather": groups.only_where(gathered, collectives.all_gather_time,
                                          _parameter_gather_bytes(batch, w, params, units), shard_links,
                                          calls=np.where(fw["param_gather_calls"] > 0, fw["param_gather_calls"], buckets),
                                          **kw),
    }



def expert_data_parallel(batch, cluster, fw, w, stage, expert_params, dense_used):
    """Exposed seconds, bytes and the seconds of each window used (as `_windows_used`) of the experts' gradient
    reduction over the expert data-parallel group
    (etp x ep consecutive ranks are one expert replica): all-reduce or reduce-scatter as the stack reduces the dense
    gradients (whole_gradient_all_reduced: ZeRO-0, and today's DeepSpeed's ZeRO-1/2 buckets, which take the expert
    parameters with the expert data-parallel group, stage_1_and_2.py:1648-1650, 1695-1696 at 0.19.8), after every
    micro-batch where the dense reduction is (ZeRO-2, _zero012_traffic's `every_mb`), and the parameter all-gather
    after the step (ZeRO-1/2; every micro-batch where FSDP's ZeRO-2 gathers the dense ones), behind backward/forward
    where overlapped, as the dense gradients are; ZeRO-3 every micro-batch. It hides only in what the dense traffic
    leaves of each window (`dense_used`, from data_parallel): both run on the same links while the same compute runs,
    so more compute can hide each at most once and never makes the step shorter."""
    eff = cluster.efficiency
    kw = groups.collective_kwargs(cluster)
    d = moe.expert_dp(batch)
    links = groups.links(cluster, d, batch.ep * batch.etp, batch.gpus)
    reduce_bytes = element_bytes(batch, fw)["reduce"]
    buckets = bucket_count(fw, expert_params, d, batch.dp_comm_overlap, reduce_bytes)
    many = (d > 1) & (expert_params > 0)
    sharded = batch.zero >= 1
    whole = whole_gradient_all_reduced(batch, fw)
    reduce = np.where(whole, groups.only_where(many & whole, collectives.all_reduce_time, reduce_bytes * expert_params,
                                               links, calls=buckets, **kw),
                      groups.only_where(many & ~whole, collectives.reduce_scatter_time, reduce_bytes * expert_params,
                                        links, calls=buckets, **kw))
    gathered = np.where(batch.fp8_param_gather, 1.0, w) * expert_params  # --fp8-param-gather: fp8 expert weights
    # DeepSpeed's ZeRO-1/2 gather the experts' parameters after the step group by group
    # (Framework.expert_param_group_elements); ZeRO-3 gathers them module by module, as the buckets price it.
    group_size = fw["expert_param_group_elements"]
    by_group = (group_size > 0) & (batch.zero < 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        gather_calls = np.where(by_group, np.maximum(np.ceil(expert_params / group_size), 1.0), buckets)
    gather = groups.only_where(many & sharded, collectives.all_gather_time, gathered, links, calls=gather_calls, **kw)
    # As often as the dense gradients and parameters (per_microbatch_counts).
    m = batch.grad_accumulation
    zero = batch.zero
    _, reductions, gathers = per_microbatch_counts(batch, fw, m, unsharded_through_step(batch, fw))
    overlapped = batch.dp_comm_overlap
    backward_left = np.maximum(stage["backward"] - dense_used["backward"], 0.0)
    forward_left = np.maximum(stage["forward"] - dense_used["forward"], 0.0)
    reduce_behind = np.where(overlapped, hidden_behind(backward_left, reduce, buckets, eff.dp_overlap), reduce)
    gather_behind = np.where(overlapped & (fw["param_gather_overlap"] > 0),
                             hidden_behind(forward_left, gather, buckets, eff.dp_overlap), gather)
    reduce_exposed, gather_exposed = reductions * reduce_behind, gathers * gather_behind
    # ZeRO-3 / FSDP: the experts' weights are gathered for forward and again for backward and their
    # gradients reduce-scattered every micro-batch, behind that micro-batch's compute where prefetched.
    zero3 = zero == 3
    per_micro_batch = 2.0 * gather + reduce
    # The dense ZeRO-3 traffic's use of each micro-batch's passes; where the stage is gathered once a step (FSDP2
    # under pipelining) its use of the first forward, spread over the micro-batches.
    dense_zero3_used = dense_used["micro_batch"] + np.where(zero3, dense_used["forward"], 0.0) / m
    zero3_exposed = m * np.where(overlapped & (fw["prefetches_next_unit"] > 0),
                                 hidden_behind(np.maximum(stage["forward"] + stage["backward"] - dense_zero3_used,
                                                          0.0), per_micro_batch, buckets, eff.dp_overlap),
                                 per_micro_batch)
    moved = (reductions * reduce_bytes * expert_params * np.where(whole, 2.0, 1.0)
             + gathers * np.where(sharded, gathered, 0.0))
    moved = np.where(zero3, m * (reduce_bytes + 2.0 * w) * expert_params, moved)
    exposed = np.where(many, np.where(zero3, zero3_exposed, reduce_exposed + gather_exposed), 0.0)
    # What it hides in (the keys of _windows_used without the counts): the last backward, the first forward, each
    # micro-batch's passes (offload.activation_copies hides the checkpoints' copies in what is left).
    once_a_step = many & ~zero3
    used = {"backward": np.where(once_a_step, reduce - reduce_behind, 0.0),
            "forward": np.where(once_a_step, gather - gather_behind, 0.0),
            "micro_batch": np.where(many & zero3, per_micro_batch - zero3_exposed / m, 0.0)}
    return exposed, np.where(many, moved, 0.0), used
