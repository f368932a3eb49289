"""DeepSpeed's optimizer offload at ZeRO 2 and 3 keeps each rank's gradient partition in host memory and, with
gradient accumulation, brings it back over PCIe on every micro-batch after the first to add that micro-batch's
gradient on the GPU, then sends the sum back (ZeRO-2: stage_1_and_2.py `async_accumulate_grad_in_cpu_via_gpu`;
ZeRO-3: stage3.py `partition_grads`; both at DeepSpeed@edaa722 and v0.3.14; planner/cost/offload.py
`gradient_round_trip_s`). Hand calculations of that traffic, and where it hides."""

from __future__ import annotations

import numpy as np
import pytest

from planner.cost.memory import element_bytes, sharding_degree
from planner.cost.stages import data_parallel_stage
from planner.cost.step_time import step_time
from planner.frameworks import batch_framework_arrays
from planner.specs.candidate_batch import single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import PRESETS

MODEL = PRESETS["llama3-8b"]
CLUSTER = load_cluster("dgx-h100")


def _parts(**layout):
    batch = single_batch(MODEL, Layout(**layout))
    return batch, {name: float(np.asarray(v)[0]) for name, v in step_time(batch, CLUSTER)["parts"].items()}


def _round_trip_s(batch):
    """Both directions of one micro-batch's transfer of this rank's gradient partition, by hand: the partition's
    elements (the stage's parameters over the sharding group) x the bytes the partition is held in, each way over
    this GPU's PCIe link."""
    fw = batch_framework_arrays(batch)
    elements = data_parallel_stage(batch)[0][0] / sharding_degree(batch, fw)[0]
    grad_bytes = element_bytes(batch, fw)["grads"][0]
    return 2.0 * grad_bytes * elements / CLUSTER.node.pcie_bytes_per_s_per_accelerator


@pytest.mark.parametrize("zero", [2, 3])
def test_each_micro_batch_after_the_first_moves_the_partition_both_ways_when_nothing_overlaps(zero):
    """overlap_comm off: the copies run on the compute stream (stage_1_and_2.py reduce_ipg_grads; stage3.py
    partition_grads after the reduce), exposed in full. 4 micro-batches against 1: three round trips more."""
    common = dict(dp=8, zero=zero, offload="optimizer", micro_batch=1, recompute="full", framework="deepspeed",
                  dp_comm_overlap=False)
    batch, four = _parts(global_batch=32, **common)
    _, one = _parts(global_batch=8, **common)
    trip = _round_trip_s(batch)
    assert trip > 0.05  # 8B over 8 ranks, 2 bytes each way at the spec's ~50 GB/s (PCIe 5 x16): about 0.08 s
    # The rest of the step grows by whole micro-batches; the offload traffic by three round trips exactly.
    assert four["offload_copies"] - one["offload_copies"] == pytest.approx(3.0 * trip, rel=1e-9)


def test_overlapped_round_trips_hide_behind_the_backward_they_run_beside():
    """overlap_comm on (ZeRO-3's default): the copies run on the reduction stream beside the backward, so with a
    backward far longer than the copies little of them is exposed."""
    common = dict(dp=8, zero=3, offload="optimizer", micro_batch=4, recompute="full", framework="deepspeed")
    batch, four = _parts(global_batch=128, **common)
    _, one = _parts(global_batch=32, **common)
    exposed = four["offload_copies"] - one["offload_copies"]
    assert 0.0 <= exposed < 0.25 * 3.0 * _round_trip_s(batch)


def test_one_micro_batch_and_stacks_without_it_pay_nothing_more():
    """No accumulation, no round trip; FSDP2 (CPUOffloadPolicy: the reduced shard goes to the host and is added
    there, torch _fully_shard/_fsdp_collectives.py foreach_reduce) is not priced this way."""
    base = dict(dp=8, zero=3, micro_batch=1, recompute="full", dp_comm_overlap=False)
    _, offloaded = _parts(global_batch=8, offload="optimizer", framework="deepspeed", **base)
    _, resident = _parts(global_batch=8, offload="none", framework="deepspeed", **base)
    # At one micro-batch the offload's parts are the step's own copies (optimizer_step.py), not the round trip.
    _, fsdp_four = _parts(global_batch=32, offload="optimizer+params", framework="fsdp", **base)
    _, fsdp_one = _parts(global_batch=8, offload="optimizer+params", framework="fsdp", **base)
    batch = single_batch(MODEL, Layout(global_batch=32, offload="optimizer+params", framework="fsdp", **base))
    assert resident["offload_copies"] == 0.0 and offloaded["offload_copies"] > 0.0
    assert fsdp_four["offload_copies"] - fsdp_one["offload_copies"] < 3.0 * _round_trip_s(batch)
