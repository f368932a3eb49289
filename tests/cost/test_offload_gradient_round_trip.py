"""DeepSpeed's optimizer offload keeps each rank's gradient partition in host memory and, with gradient accumulation,
brings it back over PCIe on every micro-batch after the first (ZeRO 2/3; at ZeRO-1 with the step's one reduction) to
add that micro-batch's gradient on the GPU, then sends the sum back; today's ZeRO-3 brings the first micro-batch's
partition straight back too (ZeRO 1/2: stage_1_and_2.py `async_accumulate_grad_in_cpu_via_gpu`; ZeRO-3: stage3.py
`partition_grads`; DeepSpeed@edaa722, v0.3.14 for deepspeed-v0.3; planner/cost/offload.py). Hand calculations of that
traffic, and where it hides."""

from __future__ import annotations

import numpy as np
import pytest

from planner.cost.memory import element_bytes, sharding_degree
from planner.cost.optimizer_step import optimizer
from planner.cost.stages import data_parallel_stage
from planner.cost.step_time import step_time
from planner.frameworks import batch_framework_arrays
from planner.specs.candidate_batch import single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import PRESETS, ModelSpec

MODEL = PRESETS["llama3-8b"]
CLUSTER = load_cluster("dgx-h100")


def _parts(**layout):
    batch = single_batch(MODEL, Layout(**layout))
    return batch, {name: float(np.asarray(v)[0]) for name, v in step_time(batch, CLUSTER)["parts"].items()}


def _round_trip_s(batch):
    """Both directions of one transfer of this rank's gradient partition, by hand: the partition's elements (the
    stage's parameters over the sharding group) x the bytes it moves in (the parameters' at ZeRO 1/2, the gradient
    partition's at ZeRO-3), each way over this GPU's PCIe link."""
    fw = batch_framework_arrays(batch)
    elements = data_parallel_stage(batch)[0][0] / sharding_degree(batch, fw)[0]
    held = element_bytes(batch, fw)["grads" if int(batch.zero[0]) == 3 else "weights"][0]
    return 2.0 * held * elements / CLUSTER.node.pcie_bytes_per_s_per_accelerator


@pytest.mark.parametrize("zero, framework, more", [(3, "deepspeed", 3), (2, "deepspeed", 3.5), (1, "deepspeed", 1),
                                                   (3, "deepspeed-v0.3", 3), (2, "deepspeed-v0.3", 3)])
def test_round_trips_with_four_micro_batches_against_one_when_nothing_overlaps(zero, framework, more):
    """overlap_comm off: the copies run on the compute stream (stage_1_and_2.py reduce_ipg_grads; stage3.py
    partition_grads after the reduce), exposed in full. 4 micro-batches against 1: three round trips more at ZeRO 2/3
    (today's ZeRO-3 makes 4 against 1; today's ZeRO-2 a copy down more, the first micro-batch's and, since v0.19.0
    (#7967), the boundary's, which v0.3.14 skipped: 3.5), one at ZeRO-1 (after the step's reduction, none with one
    micro-batch)."""
    dtype = "fp16" if framework == "deepspeed-v0.3" else "bf16"
    common = dict(dp=8, zero=zero, offload="optimizer", micro_batch=1, recompute="full", framework=framework,
                  dp_comm_overlap=False, dtype=dtype)
    batch, four = _parts(global_batch=32, **common)
    _, one = _parts(global_batch=8, **common)
    trip = _round_trip_s(batch)
    assert trip > 0.05  # 8B over 8 ranks, 2 bytes each way at the spec's ~50 GB/s (PCIe 5 x16): about 0.08 s
    # The rest of the step grows by whole micro-batches; the offload traffic by the round trips exactly.
    assert four["offload_copies"] - one["offload_copies"] == pytest.approx(more * trip, rel=1e-9)


@pytest.mark.parametrize("framework, trips", [("deepspeed", 1), ("deepspeed-v0.3", 0)])
def test_todays_zero3_brings_the_first_micro_batchs_partition_straight_back(framework, trips):
    """stage3.py:1904-1908 at DeepSpeed@edaa722: the first micro-batch's partition is copied down and back up to the
    GPU at once, one micro-batch a step too; v0.3.14 did not. Beyond the step's own copies (optimizer_step.py)."""
    dtype = "fp16" if framework == "deepspeed-v0.3" else "bf16"
    batch, one = _parts(dp=8, zero=3, offload="optimizer", micro_batch=1, global_batch=8, recompute="full",
                        framework=framework, dp_comm_overlap=False, dtype=dtype)
    step_copies = float(optimizer(batch, CLUSTER)[1][0])
    assert one["offload_copies"] - step_copies == pytest.approx(trips * _round_trip_s(batch), rel=1e-9, abs=1e-12)


def test_overlapped_round_trips_hide_behind_the_backward_they_run_beside():
    """overlap_comm on (ZeRO-3's default): the copies run on the reduction stream beside the backward, so with a
    backward far longer than the copies little of them is exposed."""
    common = dict(dp=8, zero=3, offload="optimizer", micro_batch=4, recompute="full", framework="deepspeed")
    batch, four = _parts(global_batch=128, **common)
    _, one = _parts(global_batch=32, **common)
    exposed = four["offload_copies"] - one["offload_copies"]
    assert 0.0 <= exposed < 0.25 * 3.0 * _round_trip_s(batch)


def test_stacks_without_it_pay_nothing_more():
    """Without offload nothing moves; FSDP2 (CPUOffloadPolicy: the reduced shard goes to the host and is added
    there, torch _fully_shard/_fsdp_collectives.py foreach_reduce) is not priced this way."""
    base = dict(dp=8, zero=3, micro_batch=1, recompute="full", dp_comm_overlap=False)
    _, offloaded = _parts(global_batch=8, offload="optimizer", framework="deepspeed", **base)
    _, resident = _parts(global_batch=8, offload="none", framework="deepspeed", **base)
    _, fsdp_four = _parts(global_batch=32, offload="optimizer+params", framework="fsdp", **base)
    _, fsdp_one = _parts(global_batch=8, offload="optimizer+params", framework="fsdp", **base)
    batch = single_batch(MODEL, Layout(global_batch=32, offload="optimizer+params", framework="fsdp", **base))
    assert resident["offload_copies"] == 0.0 and offloaded["offload_copies"] > 0.0
    assert fsdp_four["offload_copies"] - fsdp_one["offload_copies"] < 3.0 * _round_trip_s(batch)


@pytest.mark.parametrize("factor", [1.1, 2.0, 8.0])
def test_round_trips_and_the_parameter_fetch_hide_behind_the_passes_once(factor):
    """ZeRO-Infinity (optimizer+params) fetches each unit's shard from the host in the same prefetch chain the round
    trips follow the reductions in: the round trips join the chain with the fetch in it. Each was added to the chain
    without the other, so both hid behind the same passes and slower compute shortened the step (8 layers of hidden
    2,048 on one dgx-b200 GPU, two micro-batches: half the peak, 666.6 -> 663.4 ms)."""
    model = ModelSpec(layers=8, hidden=2048, heads=16, mlp="swiglu", vocab=32000, seq_len=2048)
    layout = Layout(dp=1, zero=3, offload="optimizer+params", micro_batch=2, global_batch=2, recompute="full",
                    framework="deepspeed", dp_comm_overlap=True)
    b200 = load_cluster("dgx-b200")
    acc = b200.accelerator
    slower = b200.model_copy(update={"accelerator": acc.model_copy(update={"peak_flops": acc.peak_flops.model_copy(
        update={d: (v / factor if v else v) for d, v in acc.peak_flops.model_dump().items()})})})
    fast, slow = (float(step_time(single_batch(model, layout), cluster)["step_time_s"][0])
                  for cluster in (b200, slower))
    assert slow >= fast
