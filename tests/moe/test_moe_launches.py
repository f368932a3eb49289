"""MoE layers as Megatron-Core + Transformer Engine run them: counted kernel launches, the per-layer host
sync of the alltoall dispatcher, the fp8 padding copies, what the experts keep for backward in fp8, and fp8
parameters (--fp8-param-gather). Every expected value is computed here by hand from the cited counts."""

import pytest

from planner.cost import groups
from planner.cost import kernels as K
from planner.cost import moe
from planner.cost.estimate import estimate, simulate
from planner.cost.gemm import gemm_seconds, matmul_half_size_array, peak_flops_array
from planner.errors import PlannerInputError
from planner.specs.clusters import load_cluster
from planner.specs.candidate_batch import single_batch
from planner.specs.layout import Layout, make_layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import PRESETS, ModelSpec, make_model

H100 = load_cluster("dgx-h100")
FORWARD, BACKWARD = K.FORWARD, K.BACKWARD


def test_moe_kernel_counts_add_up():
    """The forward table is the kernels before the host's wait plus those after; the per-expert loop costs
    KERNEL_LAUNCH_S per GEMM and, in fp8 with current scaling, 3 kernels per quantised operand (amax, scale,
    cast); with delayed scaling one fused cast per operand group, whatever the expert count."""
    assert K.MOE_KERNELS_PER_LAYER[FORWARD] == (sum(K.MOE_FORWARD_KERNELS_BEFORE_SYNC.values())
                                                + sum(K.MOE_FORWARD_KERNELS_AFTER_SYNC.values()))
    def slope(direction, fp8, current=False):
        return (K.moe_layer_issue_s(direction, 16, fp8, True, current)
                - K.moe_layer_issue_s(direction, 8, fp8, True, current)) / 8
    assert slope(FORWARD, False) == pytest.approx(2 * K.KERNEL_LAUNCH_S)
    assert slope(FORWARD, True, current=True) == pytest.approx((2 + 2 * 3) * K.KERNEL_LAUNCH_S)
    assert slope(BACKWARD, True, current=True) == pytest.approx((4 + 2 * 3) * K.KERNEL_LAUNCH_S)
    assert slope(FORWARD, True) == pytest.approx(slope(FORWARD, False))
    assert slope(BACKWARD, True) == pytest.approx(slope(BACKWARD, False))
    fused = K.moe_layer_issue_s(FORWARD, 8, True) - K.moe_layer_issue_s(FORWARD, 8, False)
    assert fused == pytest.approx(2 * K.KERNEL_LAUNCH_S)  # fc1 and fc2 inputs, one fused cast each
    eager_extra = K.moe_layer_issue_s(FORWARD, 4, eager=True) - K.moe_layer_issue_s(FORWARD, 4, eager=False)
    assert eager_extra == pytest.approx(K.MOE_KERNELS_PER_LAYER[FORWARD] * (K.EAGER_OP_S - K.KERNEL_LAUNCH_S))


def _tiny_moe():
    """Many tiny experts: the host issues kernels slower than the GPU runs them."""
    return make_model("tiny-moe", layers=4, hidden=256, heads=4, kv_heads=4, ffn=512, mlp="swiglu", vocab=1024,
                      seq_len=256, moe_experts=64, moe_top_k=4, moe_ffn=64)


def _parts(model, **values):
    layout = make_layout(**{**dict(tp=1, pp=1, dp=8, ep=8, micro_batch=1, global_batch=8, framework="megatron",
                                   zero=1), **values})
    check_layout(model, layout, gpus=8)
    return estimate(single_batch(model, layout), H100).time["parts"]


def test_host_sync_exposes_the_issue_time_of_a_host_bound_moe_layer():
    """Megatron's dropless alltoall dispatcher waits for the token counts every MoE layer forward, so the
    kernels after the wait meet an idle GPU; the drop-and-pad path (moe_pad_to_capacity) has static shapes
    and no wait (a capacity factor without padding still waits); a stack without the sync hides the MoE
    kernels' issue time behind the dense part's GPU slack."""
    model = _tiny_moe()
    dropless = _parts(model)["moe_launch_floor"][0]
    padded = _parts(model, moe_capacity_factor=1.0, moe_pad_to_capacity=True)["moe_launch_floor"][0]
    capped = _parts(model, moe_capacity_factor=1.0)["moe_launch_floor"][0]  # dropping without padding still waits
    no_sync = _parts(model, framework="deepspeed")["moe_launch_floor"][0]
    assert dropless > padded >= 0.0 and dropless > no_sync and capped == pytest.approx(dropless)
    # The wait costs at least one eager op of GPU idle per MoE layer forward and micro-batch.
    assert dropless - padded >= model.layers * K.EAGER_OP_S * 0.999


def test_large_experts_pay_only_the_wait():
    """Mixtral's experts are long GEMMs: after each wait (forward and the full recompute's forward, one
    micro-batch, 32 layers) the GPU idles only until the first kernel is issued; without the wait, nothing."""
    model = PRESETS["mixtral-8x7b"]
    assert _parts(model, recompute="full")["moe_launch_floor"][0] == pytest.approx(32 * 2 * K.EAGER_OP_S)
    assert _parts(model, recompute="full", moe_capacity_factor=1.0, moe_pad_to_capacity=True)["moe_launch_floor"][0] == 0.0


def _moe_times(model, layout):
    batch = single_batch(model, layout)
    eff = H100.efficiency
    peak, half = peak_flops_array(batch, H100), matmul_half_size_array(batch, H100)
    hbm = H100.accelerator.hbm_bytes_per_s * eff.hbm_efficiency
    times = moe.moe_layer_times(batch, H100, lambda m, n, k: gemm_seconds(m, n, k, peak, eff, half), hbm,
                                lambda size, stride: groups.links(H100, size, stride), groups.collective_kwargs(H100))
    return times, hbm


def test_fp8_padding_copies_by_hand():
    """Qwen3-30B-A3B, fp8, dropless on Megatron: the T·k dispatched rows of h bf16 elements are copied into
    the padded buffer and the output back (read + write each), forward and again backward; none when the
    dispatcher pads to capacity."""
    model = PRESETS["qwen3-30b-a3b"]
    base = dict(tp=1, pp=2, dp=8, ep=8, micro_batch=2, global_batch=512, dtype="fp8", framework="megatron", zero=1)
    dropless, hbm = _moe_times(model, make_layout(**base))
    padded, _ = _moe_times(model, make_layout(**base, moe_capacity_factor=1.0, moe_pad_to_capacity=True))
    rows, h, bf16 = 2 * 4096 * 8, 2048, 2
    copies = 2 * 2 * rows * h * bf16 / hbm  # pad + unpad, each read + write
    assert dropless["forward"][0] - padded["forward"][0] == pytest.approx(copies)
    assert dropless["backward"][0] - padded["backward"][0] == pytest.approx(copies)
    bf16_run, _ = _moe_times(model, make_layout(**{**base, "dtype": "bf16"}))
    bf16_pad, _ = _moe_times(model, make_layout(**{**base, "dtype": "bf16"}, moe_capacity_factor=1.0,
                                                moe_pad_to_capacity=True))
    assert bf16_run["forward"][0] == bf16_pad["forward"][0]  # 16-bit GEMMs need no alignment copies


def test_megatron_fp8_expert_activations_by_hand():
    """Per routed row Megatron + TE keep the fc1 input in fp8 (h bytes), the SwiGLU input in bf16 (2 x 2f)
    and fc2's input in fp8 (f); 16-bit training keeps 2h + 6f; DeepSeek's recipe h + 2f."""
    model = PRESETS["qwen3-30b-a3b"]
    h, f, T, k, E = 2048, 768, 4096, 8, 128
    router = T * (k * 4 + E * 4)

    def stored(**values):
        layout = make_layout(**{**dict(tp=1, pp=2, dp=8, ep=8, micro_batch=1, global_batch=64, dtype="fp8",
                                       framework="megatron", zero=1), **values})
        return moe.moe_activation_bytes(single_batch(model, layout))["stored"][0]

    assert stored() == pytest.approx(T * k * (h + 4 * f + f) + router)
    assert stored(dtype="bf16") == pytest.approx(T * k * (2 * h + 6 * f) + router)
    assert stored(framework="other") == pytest.approx(T * k * (h + 2 * f) + router)


def test_fp8_param_gather_drops_the_16_bit_weights_and_halves_the_gather():
    """--fp8-param-gather: the layers' Linear weights are their fp8 data only (the 2-byte copy goes, dense and
    expert), and the ZeRO-1 all-gather after the step moves them in one byte instead of two."""
    model = PRESETS["qwen3-30b-a3b"]
    base = dict(tp=1, pp=2, dp=8, ep=8, micro_batch=2, global_batch=512, dtype="fp8", framework="megatron", zero=1,
                dp_comm_overlap=True)
    plain = estimate(single_batch(model, make_layout(**base)), H100)
    fp8 = estimate(single_batch(model, make_layout(**base, fp8_param_gather=True)), H100)
    batch = single_batch(model, make_layout(**base))
    stage_layers = batch.stages[0][0]  # 24 of 48 on each of the two stages
    dense_linear = stage_layers * batch.layer_params[0]
    experts = moe.expert_params_per_gpu(batch, stage_layers)[0]
    parts, fp8_parts = plain.memory["parts"], fp8.memory["parts"]
    assert parts["weights"][0] - fp8_parts["weights"][0] == pytest.approx(2 * dense_linear)
    assert parts["expert_weights"][0] - fp8_parts["expert_weights"][0] == pytest.approx(2 * experts)
    moved = plain.time["comm_bytes_per_step"]["dp"][0] - fp8.time["comm_bytes_per_step"]["dp"][0]
    assert moved == pytest.approx(dense_linear)
    with pytest.raises(PlannerInputError, match="fp8-param-gather"):
        check_layout(model, make_layout(**{**base, "dtype": "bf16"}, fp8_param_gather=True), gpus=16)
    with pytest.raises(PlannerInputError, match="fp8-param-gather"):
        check_layout(model, make_layout(**{**base, "framework": "deepspeed"}, fp8_param_gather=True), gpus=16)


def test_pad_to_capacity_needs_a_capacity_and_runs_at_it():
    """Padding to capacity: every expert computes capacity_factor x the mean, whatever the imbalance."""
    model = PRESETS["qwen3-30b-a3b"]
    base = dict(tp=1, pp=2, dp=8, ep=8, micro_batch=1, global_batch=64, framework="megatron", zero=1)
    with pytest.raises(PlannerInputError, match="moe-pad-to-capacity"):
        check_layout(model, make_layout(**base, moe_pad_to_capacity=True), gpus=16)
    padded = single_batch(model, make_layout(**base, moe_capacity_factor=1.25, moe_pad_to_capacity=True))
    dropped = single_batch(model, make_layout(**base, moe_capacity_factor=1.25))
    assert padded.moe_imbalance[0] == 1.25 and dropped.moe_imbalance[0] == 1.0


def test_fp8_recipe_current_scaling_reads_each_cast_input_twice():
    """--fp8-recipe tensorwise (per-tensor current scaling) takes an amax pass over every cast input before the
    cast (TE quantizer.cpp Float8CurrentScalingQuantizer::quantize_impl): more HBM traffic and, for the
    experts, per-expert cast kernels; it needs fp8 and Megatron's launch carries it."""
    from planner.emit.megatron import compute_arguments

    model = PRESETS["qwen3-30b-a3b"]
    base = dict(tp=1, pp=1, dp=16, ep=8, micro_batch=2, global_batch=64, dtype="fp8", framework="megatron", zero=1)
    delayed = estimate(single_batch(model, make_layout(**base)), H100).time
    current = estimate(single_batch(model, make_layout(**base, fp8_recipe="tensorwise")), H100).time
    assert current["step_time_s"][0] > delayed["step_time_s"][0]
    assert current["parts"]["forward"][0] > delayed["parts"]["forward"][0]
    with pytest.raises(PlannerInputError, match="--fp8-recipe tensorwise .* needs dtype=fp8"):
        check_layout(model, make_layout(**{**base, "dtype": "bf16"}, fp8_recipe="tensorwise"), gpus=16)
    assert ("--fp8-recipe", "tensorwise") in compute_arguments(make_layout(**base, fp8_recipe="tensorwise"))
    assert ("--fp8-recipe", "delayed") in compute_arguments(make_layout(**base))


SIXTEEN_EXPERTS = ModelSpec(layers=8, hidden=2048, heads=16, mlp="swiglu", vocab=32000, seq_len=2048, moe_experts=16,
                            moe_top_k=2, moe_ffn=1024)
# Full recompute, each shortened by slower hardware before (dgx-b200):
FULL_RECOMPUTE_CASES = {
    # the MoE backward floored against a dense backward slack that still held the recompute's: NVLink at half,
    # 118.4 -> 117.4 ms;
    "megatron-2022": (Layout(tp=2, dp=64, zero=0, micro_batch=1, global_batch=512, recompute="full",
                             framework="megatron-2022"), "nvlink"),
    # the dense backward floor pooled over the recompute and the backward, while the MoE recompute used the
    # recompute's slack too: a tenth less peak, 10.757 -> 10.711 ms; NVLink at a tenth less, 20.253 -> 20.226 ms.
    "megascale-cp2": (Layout(tp=1, cp=2, dp=4, ep=4, zero=2, micro_batch=1, global_batch=4, recompute="full",
                             framework="megascale", dp_comm_overlap=True), "peak"),
    "megatron-pp4-cp2": (Layout(tp=1, pp=4, vpp=2, cp=2, dp=64, ep=8, zero=1, micro_batch=1, global_batch=256,
                                recompute="full", framework="megatron", dp_comm_overlap=False), "nvlink"),
}


def _slower(cluster, what, factor):
    if what == "peak":
        acc = cluster.accelerator
        return cluster.model_copy(update={"accelerator": acc.model_copy(update={"peak_flops": acc.peak_flops.model_copy(
            update={d: (v / factor if v else v) for d, v in acc.peak_flops.model_dump().items()})})})
    up = cluster.node.scale_up
    return cluster.model_copy(update={"node": cluster.node.model_copy(update={"scale_up": up.model_copy(
        update={"link_bytes_per_s_per_direction": up.link_bytes_per_s_per_direction / factor})})})


@pytest.mark.parametrize("case", FULL_RECOMPUTE_CASES.values(), ids=FULL_RECOMPUTE_CASES.keys())
@pytest.mark.parametrize("factor", [1.1, 2.0, 8.0])
def test_slower_hardware_never_shortens_a_full_recompute_step(case, factor):
    """Under full recompute the backward pass runs two pairs of dense and MoE work, the recompute's and the
    backward's own; each MoE part is floored against its own pair's dense slack (the host's lead) and the dense floors
    of an MoE layer are taken pair by pair, so no second of slack is counted twice."""
    layout, what = case
    b200 = load_cluster("dgx-b200")
    fast, slow = (simulate(SIXTEEN_EXPERTS, layout, cluster)["step_time_s"]
                  for cluster in (b200, _slower(b200, what, factor)))
    assert slow >= fast * (1.0 - 1e-12)  # to the rounding of a step the slower link does not touch
