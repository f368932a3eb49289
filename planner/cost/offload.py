"""ZeRO-Infinity's traffic between the GPU and host memory or NVMe that runs during the passes, and the offloaded
gradient partition's round trips with gradient accumulation (the optimizer's copies are with the optimizer step,
cost/optimizer_step.py `optimizer`). Pure, vectorised."""

from __future__ import annotations

import numpy as np

from planner.cost.memory import activation_bytes_per_layer, element_bytes, sharding_degree
from planner.frameworks import any_stack_gives


def parameter_fetch(batch, cluster, w, units, unit, outside, gather, scatter, m, per_micro_batch, once=None,
                    per_step_once=None, chain_without_fetch=None):
    """ZeRO-Infinity: exposed seconds of fetching each rank's weight shard from host memory (PCIe, one link
    per GPU) or NVMe (the node's drives, shared by its GPUs) for forward and again for backward, every
    micro-batch. Bandwidth-centric partitioning: every rank reads only its own 1/dp shard, then the
    all-gather assembles the unit (ZeRO-Infinity section 6.1). DeepSpeed prefetches the next units' shards
    while one computes (partitioned_param_coordinator.py:380-416 prefetch, 557-580 `swap_in(...,
    async_op=True)` for NVMe): a unit's fetch runs ahead of its all-gather in the same prefetch chain, so it
    hides behind compute together with the gathers; the rest of the model is fetched exposed. On the `once`
    rows (FSDP2 with CPU offload under pipelining, cost.memory.unsharded_through_step) the shard is copied in
    for the step's one gather only, in cost/data_parallel.py's `per_step_once` chain.

    `chain_without_fetch`: per_micro_batch(gather, gather, scatter) where the caller has it already.

    Returns (exposed seconds per step, seconds the fetches take in all, exposed or hidden)."""
    rows = batch.offload >= 2
    if not np.any(rows):
        return np.zeros(len(batch)), np.zeros(len(batch))
    per_unit, per_outside = shard_fetch_s(batch, cluster, w, unit), shard_fetch_s(batch, cluster, w, outside)
    if chain_without_fetch is None:
        chain_without_fetch = per_micro_batch(gather, gather, scatter)
    chained = per_micro_batch(gather + per_unit, gather + per_unit, scatter) - chain_without_fetch
    seconds = m * (chained + 2.0 * per_outside)
    total = m * 2.0 * (units * per_unit + per_outside)  # forward and backward, hidden or not
    if once is not None and np.any(once & rows):
        seconds = np.where(once, per_step_once(gather + per_unit, scatter) - per_step_once(gather, scatter)
                           + per_outside, seconds)
        total = np.where(once, units * per_unit + per_outside, total)
    return np.where(rows, seconds, 0.0), np.where(rows, total, 0.0)


def shard_fetch_s(batch, cluster, w, elements):
    """Seconds of fetching each rank's 1/dp shard of `elements` parameters from where ZeRO-Infinity keeps them: over
    the GPU's PCIe link from host memory, or from the node's NVMe drives, which its GPUs share; 0 on the rows that
    keep their parameters on the GPU (offload below optimizer+params)."""
    node = cluster.node
    shard = w * elements / batch.dp
    gpus_on_node = np.minimum(cluster.gpus_per_node, batch.gpus)
    seconds = np.maximum(shard / node.pcie_bytes_per_s_per_accelerator,
                         np.where(batch.offload_nvme, shard * gpus_on_node / node.nvme_bytes_per_s, 0.0))
    return np.where(batch.offload >= 2, seconds, 0.0)


def gradient_round_trip_s(batch, cluster, fw, params):
    """Seconds of one round trip of the rank's offloaded gradient partition (`params` over the sharding group), up from host
    memory and back down, one direction after the other on one stream, over the GPU's PCIe link, where the stack
    accumulates the partition by way of the GPU under optimizer offload (Framework.offload_gradient_round_trip:
    DeepSpeed, frameworks/deepspeed.py); 0 elsewhere. ZeRO 1 and 2 move it in the parameters' dtype, ZeRO-3 in the
    gradient partition's (memory.element_bytes). How many a step makes, and on which stream, is the caller's
    (gradient_round_trips)."""
    if not any_stack_gives(fw, ("offload_gradient_round_trip",)):
        return np.zeros(len(batch))
    rows = (batch.offload >= 1) & (batch.zero >= 1) & (fw["offload_gradient_round_trip"] > 0)
    if not np.any(rows):
        return np.zeros(len(batch))
    elements = params / sharding_degree(batch, fw)
    held = element_bytes(batch, fw)
    partition_bytes = np.where(batch.zero == 3, held["grads"], held["weights"])
    return np.where(rows, 2.0 * partition_bytes * elements / cluster.node.pcie_bytes_per_s_per_accelerator, 0.0)


def gradient_round_trips(batch, fw):
    """Round trips of the offloaded gradient partition a step makes (frameworks/deepspeed.py): one on every micro-batch
    after the first at ZeRO 2 and 3, and at ZeRO-3 one on the first too where the stack brings the partition it just
    copied down straight back (Framework.offload_zero3_first_round_trip); at ZeRO-2 half of one more (a copy down)
    where the stack sends the boundary's sum down as well (Framework.offload_zero2_extra_copy_down); at ZeRO-1 one a
    step, with the reduction after the last micro-batch. None with one micro-batch at ZeRO 1 and 2."""
    m = batch.grad_accumulation
    zero3_first = np.where(fw["offload_zero3_first_round_trip"] > 0, 1.0, 0.0)
    zero2_extra = np.where(fw["offload_zero2_extra_copy_down"] > 0, 0.5, 0.0)
    accumulates = m > 1
    return np.select([batch.zero == 3, batch.zero == 2, batch.zero == 1],
                     [m - 1.0 + zero3_first, np.where(accumulates, m - 1.0 + zero2_extra, 0.0),
                      np.where(accumulates, 1.0, 0.0)], 0.0)


def activation_copies(batch, cluster, fw, stage, m, dense_used, expert_used=None):
    """Activation checkpoints kept on the host (layout.activation_offload): each checkpoint goes out over the
    GPU's PCIe link in forward and comes back for backward's recompute, asynchronously (DeepSpeed's
    cpu_checkpointing copies on its own stream: runtime/activation_checkpointing/checkpointing.py
    `_get_cpu_offload_engine`); exposed is what the copies exceed the passes by, or all of them where the stack
    copies on the compute stream (`fw`'s activation_offload_blocking: DeepSpeed before #8282).

    The copies hide only in what the data-parallel traffic leaves of each pass (`dense_used`: data_parallel's
    `_windows_used`; `expert_used`: the experts' reduction's, data_parallel.expert_data_parallel, None without
    MoE), as the experts' reduction hides in what the dense traffic leaves: where the data-parallel group leaves
    the node its traffic runs over the same PCIe link (GPUDirect RDMA goes through the PCIe switch the GPU shares
    with its NIC), as do ZeRO-Infinity's fetch and the offloaded gradient partition's round trips, and one window
    of compute hides the two at most once. Within a node the two would run side by side (NVLink and PCIe); taking
    them as serial there is an upper bound. The used seconds fall on the windows _windows_used names: the
    all-gathers in the first forward (`gathers` of them), the reductions in the last backward (`reductions`),
    ZeRO-3's chain in every micro-batch's forward and backward in proportion to their compute; what exceeds a
    window (a reduction by model chunk hides in the cool-down's passes) spills into the passes before it."""
    if not np.any(batch.activation_offload):
        return 0.0
    pcie = cluster.node.pcie_bytes_per_s_per_accelerator
    copy = activation_bytes_per_layer(batch)["stored"] * stage["layers"] / pcie
    forward, backward = stage["forward"], stage["backward"]
    expert = expert_used or {"forward": 0.0, "backward": 0.0, "micro_batch": 0.0}
    every_pass = (dense_used["micro_batch"] + expert["micro_batch"]) / np.maximum(forward + backward,
                                                                                  np.finfo(float).tiny)

    def exposed_in(window, used):
        return np.maximum(copy - np.maximum(window - used, 0.0), 0.0)

    def over_passes(window, dense, dense_windows, expert_once):
        """Exposed seconds over the step's `m` passes of one kind: ZeRO-3's share in each, the dense traffic's in
        `dense_windows` of them (the first of which also holds the experts' once-a-step traffic); what exceeds those
        windows fills the others one after another."""
        share = np.minimum(every_pass * window, window)
        first = np.minimum(dense_windows, 1.0)
        loads = (share + expert_once + first * dense, share + dense)
        carried = (exposed_in(window, loads[0]) + (dense_windows - first) * exposed_in(window, loads[1]))
        spill = (np.maximum(loads[0] - window, 0.0) + (dense_windows - first) * np.maximum(loads[1] - window, 0.0))
        others = m - np.maximum(dense_windows, 1.0)
        room = window - share
        filled = np.where(room > 0.0, np.minimum(np.floor(spill / np.maximum(room, np.finfo(float).tiny)), others), 0.0)
        part = np.where(others > filled, np.minimum(spill - filled * room, room), 0.0)
        return (carried + filled * exposed_in(window, window) + (others > filled) * exposed_in(window, share + part)
                + np.maximum(others - filled - 1.0, 0.0) * exposed_in(window, share))

    exposed = (over_passes(forward, dense_used["forward"], dense_used["gathers"], expert["forward"])
               + over_passes(backward, dense_used["backward"], dense_used["reductions"], expert["backward"]))
    # A stack that copies on the compute stream (Framework.activation_offload_blocking) waits for every copy.
    exposed = np.where(fw["activation_offload_blocking"] > 0, 2.0 * m * copy, exposed)
    return np.where(batch.activation_offload, exposed, 0.0)
