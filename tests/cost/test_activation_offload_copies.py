"""Activation checkpoints kept on the host (layout.activation_offload) go out over the GPU's PCIe link in forward and
come back for backward's recompute, behind the passes (planner/cost/offload.py `activation_copies`). The data-parallel
traffic hides behind the same passes; the copies get only what that traffic leaves of each one. Before, each hid
behind the whole window on its own, so where both exceeded it the step was their sum less the compute, and slower
compute or links shortened the step (found by reasoning over the overlap arithmetic, reproduced below)."""

from __future__ import annotations

import pytest

from planner.cost.estimate import _scalar, estimate
from planner.cost.memory import activation_bytes_per_layer
from planner.specs.candidate_batch import single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import ModelSpec

B200 = load_cluster("dgx-b200")


def _with_pcie_over(cluster, factor: float):
    node = cluster.node
    return cluster.model_copy(update={"node": node.model_copy(
        update={"pcie_bytes_per_s_per_accelerator": node.pcie_bytes_per_s_per_accelerator / factor})})


# B200 with a quarter of its PCIe bandwidth: SMALL's copies then exceed both passes on their own.
NARROW_HOST_LINK = _with_pcie_over(B200, 4.0)
A100_NARROW_HOST_LINK = _with_pcie_over(load_cluster("dgx-a100-80gb"), 4.0)
# The smallest reproduction: two layers, tp 8 on a node, dp 2 over two nodes, ZeRO-1, one micro-batch.
SMALL = (ModelSpec(layers=2, hidden=4096, heads=8, mlp="swiglu", vocab=32000, seq_len=4096),
         Layout(tp=8, dp=2, zero=1, global_batch=2, recompute="full", framework="jax", activation_offload=True))
# A Llama-3-8B-wide slice at dp 512, four micro-batches of four: the peak at half the FLOP/s shortened its step
# 0.0972 -> 0.0932 s.
WIDE = (ModelSpec(layers=8, hidden=4096, heads=32, kv_heads=8, ffn=14336, mlp="swiglu", vocab=128256, seq_len=4096,
                  position="rotary", norm="rmsnorm"),
        Layout(tp=8, dp=512, zero=1, micro_batch=4, global_batch=2048, recompute="full", framework="jax",
               activation_offload=True))

# FSDP's ZeRO-2 gathers the parameters before every micro-batch's forward (four here): the gathers hide in every
# forward, not the first alone (the fix's first version missed it: 31.3 -> 30.4 ms at half the peak).
FSDP_ZERO2 = (SMALL[0], Layout(tp=8, dp=2, zero=2, micro_batch=1, global_batch=8, recompute="full", framework="fsdp",
                               activation_offload=True))
# With experts the experts' reduction hides in what the dense traffic leaves, and the copies in what both leave (the
# fix's first version left the experts out: 13.46 -> 12.95 ms at half the peak).
MOE = (SMALL[0].model_copy(update={"moe_experts": 16, "moe_top_k": 2, "moe_ffn": 2048}),
       Layout(tp=8, dp=2, zero=2, global_batch=2, recompute="full", framework="fsdp", activation_offload=True))
# The audit of the fix's first version (each shortened the step when slowed):
EIGHT = ModelSpec(layers=8, hidden=2048, heads=16, mlp="swiglu", vocab=32000, seq_len=2048)
# - a reduction by model chunk (vpp 4) hides in the cool-down's backward passes, not in one (NVLink at half:
#   15.945 -> 15.813 ms);
BY_CHUNK = (EIGHT.model_copy(update={"layers": 16, "seq_len": 4096}),
            Layout(tp=8, pp=4, vpp=4, dp=8, zero=0, global_batch=32, recompute="full", framework="megascale",
                   activation_offload=True, dp_comm_overlap=True))
# - ZeRO-3 with optimizer offload: the gradient partition's round trips hide in the passes too (half the peak:
#   1463.7 -> 1460.9 ms);
ROUND_TRIPS = (WIDE[0], Layout(tp=8, dp=2, zero=3, offload="optimizer", global_batch=2, recompute="full",
                               framework="deepspeed", activation_offload=True, dp_comm_overlap=True))
# - ZeRO-Infinity on one data-parallel rank: the fetch from host memory hides in the passes with dp 1 too (NVLink
#   at half: 570.67 -> 570.30 ms);
INFINITY_ALONE = (EIGHT, Layout(tp=8, dp=1, zero=3, offload="optimizer+params", global_batch=2, recompute="full",
                                framework="deepspeed", activation_offload=True))
# - HSDP (a shard group of 8 of 64): the hierarchy changes what the chain exposes, and so what it hides (on A100s
#   with a quarter of their PCIe bandwidth, 10% less peak: 90.825 -> 90.254 ms).
HSDP = (EIGHT, Layout(tp=1, dp=64, zero=3, shard_group=8, global_batch=64, recompute="full", framework="fsdp",
                      activation_offload=True, dp_comm_overlap=True))
# - DeepSpeed v0.3's ZeRO-3, whose backward waits for the host to issue each rank's collectives (on dgx2-v100, half
#   the peak: 1123.2 -> 1107.3 ms); its copies are now blocking (test below), which leaves nothing to hide.
HOST_WAIT = (EIGHT, Layout(tp=8, dp=64, zero=3, micro_batch=2, global_batch=1024, recompute="full",
                           framework="deepspeed-v0.3", dtype="fp16", activation_offload=True))
CASES = {"host-wait": HOST_WAIT, "small": SMALL, "wide": WIDE, "fsdp-zero2": FSDP_ZERO2, "moe": MOE,
         "by-chunk": BY_CHUNK,
         "round-trips": ROUND_TRIPS, "infinity-alone": INFINITY_ALONE, "hsdp": HSDP}


def simulate(model, layout, cluster) -> dict:
    """cost.estimate.simulate's step time and time parts without its check that the stack runs the layout. Some cases
    keep the stack whose overlap they exercise (FSDP's gathers before every micro-batch, MegaScale's reduction by
    model chunk, HSDP's hierarchy) though that stack keeps its checkpoints on the GPU
    (Framework.offloads_activation_checkpoints): the overlap arithmetic must hold for any layout the cost model is
    given."""
    time = _scalar(estimate(single_batch(model, layout), cluster).time)
    return {"step_time_s": time["step_time_s"], "time": time["parts"]}


def _slower(cluster, what: str, factor: float = 2.0):
    """`cluster` with its dense peak FLOP/s, its NVLink or its NIC bandwidth `factor` times lower."""
    acc, node, net = cluster.accelerator, cluster.node, cluster.network
    if what == "peak":
        peaks = {d: (v / factor if v else v) for d, v in acc.peak_flops.model_dump().items()}
        return cluster.model_copy(update={"accelerator": acc.model_copy(
            update={"peak_flops": acc.peak_flops.model_copy(update=peaks)})})
    if what == "nvlink":
        up = node.scale_up
        return cluster.model_copy(update={"node": node.model_copy(update={"scale_up": up.model_copy(
            update={"link_bytes_per_s_per_direction": up.link_bytes_per_s_per_direction / factor})})})
    return cluster.model_copy(update={"network": net.model_copy(
        update={"nic_bytes_per_s_per_direction": net.nic_bytes_per_s_per_direction / factor})})


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("what", ["peak", "nvlink", "nic"])
@pytest.mark.parametrize("factor", [1.1, 2.0, 8.0])
def test_slower_hardware_never_shortens_a_step_with_host_checkpoints(case, what, factor):
    model, layout = case
    cluster = A100_NARROW_HOST_LINK if case is HSDP else load_cluster("dgx2-v100") if case is HOST_WAIT else B200
    fast = simulate(model, layout, cluster)["step_time_s"]
    slow = simulate(model, layout, _slower(cluster, what, factor))["step_time_s"]
    assert slow >= fast * (1 - 1e-12), f"{what} x{factor}: {fast} -> {slow}"


def _run(layout, cluster=NARROW_HOST_LINK):
    model = SMALL[0]
    result = simulate(model, layout, cluster)
    return result["time"]["offload_copies"], result["time"]["dp_comm_exposed"], result["step_time_s"]


def test_the_copies_keep_the_windows_where_the_traffic_does_not_overlap():
    """Without overlap the reduction runs after backward and uses no window: the copies are exposed as on one rank."""
    layout = SMALL[1]
    alone, _, _ = _run(layout.model_copy(update={"dp": 1, "global_batch": 1}))
    copies, dp, _ = _run(layout.model_copy(update={"dp_comm_overlap": False}))
    assert dp > 0
    assert copies == pytest.approx(alone, rel=1e-12)


def test_overlap_buys_nothing_where_the_copies_already_fill_the_passes():
    """Where the copies exceed both passes on their own, every second of the reduction (and of the parameter
    all-gather) that overlap hides comes out of the copies' windows: the copies' exposed seconds grow by what the
    data-parallel traffic's shrink, and the step is the same with overlap as without."""
    layout = SMALL[1]
    model = SMALL[0]
    copy = float(activation_bytes_per_layer(single_batch(model, layout))["stored"][0]) * model.layers \
        / NARROW_HOST_LINK.node.pcie_bytes_per_s_per_accelerator
    alone, _, step_alone = _run(layout.model_copy(update={"dp": 1, "global_batch": 1}))
    assert alone > copy  # beyond what one pass can hide: the copies exceed both passes
    copies_serial, dp_serial, step_serial = _run(layout.model_copy(update={"dp_comm_overlap": False}))
    copies, dp, step = _run(layout.model_copy(update={"dp_comm_overlap": True}))
    assert dp < dp_serial  # overlap hides some of the traffic...
    assert copies - copies_serial == pytest.approx(dp_serial - dp, rel=1e-9)  # ...all of it out of the copies' windows
    assert step == pytest.approx(step_serial, rel=1e-12)
    assert step > step_alone


@pytest.mark.parametrize("framework", ["deepspeed-v0.3", "deepspeed-v0.2"])
def test_old_deepspeed_waits_for_every_copy(framework):
    """DeepSpeed before #8282 copied each checkpoint out with `.cpu()` and back with get_full_inputs on the compute
    stream (v0.3.14 activation_checkpointing/checkpointing.py:498, 630-632; v0.2.0 deepspeed_checkpointing.py:409):
    nothing hides. Two micro-batches of SMALL without data parallelism: each checkpoint's bytes over PCIe, out and
    back, per micro-batch, by hand."""
    model = SMALL[0]
    layout = Layout(tp=8, zero=0, micro_batch=1, global_batch=2, recompute="full", framework=framework, dtype="fp16",
                    activation_offload=True)
    stored = float(activation_bytes_per_layer(single_batch(model, layout))["stored"][0])
    by_hand = 2 * 2 * stored * model.layers / B200.node.pcie_bytes_per_s_per_accelerator
    assert simulate(model, layout, B200)["time"]["offload_copies"] == pytest.approx(by_hand, rel=1e-12)
    today = simulate(model, layout.model_copy(update={"framework": "deepspeed", "dtype": "bf16"}), B200)
    assert today["time"]["offload_copies"] < by_hand  # today's copies run beside the passes
