"""MoE in the cost model: all-to-all timing and volume by hand, the dense path untouched, memory with ep."""

import numpy as np
import pytest

from planner.cost import collectives
from planner.cost.estimate import estimate
from planner.cost.memory import per_gpu_memory
from planner.cost.step_time import step_time
from planner.errors import PlannerInputError
from planner.specs.clusters import load_cluster
from planner.specs.candidate_batch import build_batch, layouts_batch, single_batch
from planner.specs.layout import make_layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import PRESETS, make_model, model_training_flops

H100 = load_cluster("dgx-h100")


def test_all_to_all_time_by_hand():
    """8 ranks in one node: 7/8 of the buffer over NVLink; 2 nodes x 8: 8/16 over the NIC, 7/16 NVLink."""
    links = {"ranks_per_node": np.array([8.0, 8.0]), "nodes": np.array([1.0, 2.0]),
             "intra_bytes_per_s": np.array([400e9, 400e9]), "intra_latency_s": np.array([3e-6, 3e-6]),
             "inter_bytes_per_s": np.array([0.0, 50e9]), "inter_latency_s": np.array([0.0, 5e-6])}
    seconds = collectives.all_to_all_time(1.6e9, links, 1.0, 1.0)
    assert seconds[0] == pytest.approx(1.6e9 * 7 / 8 / 400e9 + 3e-6)
    assert seconds[1] == pytest.approx(max(1.6e9 * 7 / 16 / 400e9, 1.6e9 * 8 / 16 / 50e9) + 8e-6)
    one = {k: v[:1] for k, v in links.items()}
    one["ranks_per_node"] = np.array([1.0])
    assert collectives.all_to_all_time(1e9, one, 1.0, 1.0)[0] == 0.0  # a group of one sends nothing


def _mixtral(ep, **extra):
    values = dict(tp=1, pp=1, dp=8, ep=ep, micro_batch=1, global_batch=16, framework="megatron",
                  recompute="full", zero=1)
    values.update(extra)
    return make_layout(**values)


def test_all_to_all_volume_per_step_by_hand():
    """Mixtral 8x7B on 8 GPUs, ep 8: each of 32 MoE layers sends T x k token copies of h bf16 elements in
    dispatch and combine, both again in backward and in the full recompute; 2 micro-batches per step."""
    model = PRESETS["mixtral-8x7b"]
    layout = _mixtral(8)
    check_layout(model, layout, gpus=8)
    time = step_time(single_batch(model, layout), H100)
    T, k, h, bf16, layers, micro_batches = 4096, 2, 4096, 2, 32, 2
    # forward, backward, recompute: dispatch + combine each; 7 of the 8 equal parts leave the rank.
    per_layer = T * k * h * bf16 * (2 + 2 + 2) * 7 / 8
    assert time["comm_bytes_per_step"]["ep"][0] == pytest.approx(micro_batches * layers * per_layer)


def test_ep1_sends_nothing_and_dense_rows_are_unchanged():
    """ep = 1: no all-to-all. A dense model scored beside an MoE model gets exactly the dense path's numbers."""
    model = PRESETS["mixtral-8x7b"]
    time = step_time(single_batch(model, _mixtral(1)), H100)
    assert time["parts"]["ep_comm"][0] == 0.0 and time["comm_bytes_per_step"]["ep"][0] == 0.0
    dense = PRESETS["llama3-8b"]
    layout = make_layout(tp=2, pp=2, dp=2, micro_batch=1, global_batch=16, framework="megatron", zero=1)
    alone = estimate(single_batch(dense, layout), H100)
    mixed = estimate(layouts_batch([dense, model], [layout, _mixtral(8)]), H100)
    assert mixed.step_time_s[0] == alone.step_time_s[0]
    assert mixed.memory["total_bytes"][0] == alone.memory["total_bytes"][0]
    assert mixed.time["mfu"][0] == alone.time["mfu"][0]
    for name, value in alone.time["parts"].items():
        assert mixed.time["parts"][name][0] == value[0], name
    assert mixed.time["parts"]["moe_experts"][0] == 0.0


def test_one_expert_moe_counts_like_its_dense_model_plus_router():
    shape = dict(layers=8, hidden=1024, heads=8, vocab=32000, seq_len=2048, mlp="swiglu", ffn=2816)
    dense = make_model(**shape)
    moe = make_model(**shape, moe_experts=1, moe_top_k=1, moe_ffn=2816)
    assert moe.total_params == dense.total_params + 8 * 1024
    flops_dense, flops_moe = model_training_flops(dense, 1.0), model_training_flops(moe, 1.0)
    assert flops_moe["total"] == pytest.approx(flops_dense["total"] + 6.0 * 8 * 1024)


@pytest.mark.parametrize("zero", [0, 1])
def test_more_ep_never_increases_expert_memory(zero):
    model = PRESETS["mixtral-8x7b"]
    layouts = [_mixtral(ep, zero=zero) for ep in (1, 2, 4, 8)]
    memory = per_gpu_memory(layouts_batch([model] * 4, layouts), H100)
    expert = sum(memory["parts"][p] for p in ("expert_weights", "expert_gradients", "expert_optimizer"))
    assert np.all(np.diff(expert) < 0)
    assert np.all(np.isfinite(memory["total_bytes"]))


def test_expert_states_shard_over_expert_data_parallel():
    """ZeRO-1: Adam states of the experts / edp, edp = tp·cp·dp / (ep·etp) (Megatron's expert grid); Megatron
    bf16 keeps fp32 gradients and 12 optimizer bytes (6 + 12/d, dist_optimizer.md:16-20)."""
    model = PRESETS["mixtral-8x7b"]
    layout = _mixtral(4, zero=1)
    assert layout.expert_dp == 2
    memory = per_gpu_memory(single_batch(model, layout), H100)
    expert_params = 32 * 8 * 3 * 4096 * 14336 / 4
    assert memory["parts"]["expert_optimizer"][0] == pytest.approx(12 * expert_params / 2)
    assert memory["parts"]["expert_gradients"][0] == pytest.approx(4 * expert_params)
    assert memory["parts"]["expert_weights"][0] == pytest.approx(2 * expert_params)


@pytest.mark.parametrize("zero, master_shards", [(0, 1), (1, 1), (2, 2)])
def test_fsdp_expert_weights_carry_the_fp32_master_below_zero3(zero, master_shards):
    """torchtitan's fp32 parameter is the master (frameworks/fsdp.py, memory.model_state_bytes' param_master): the
    experts' 16-bit weights have it beside them at ZeRO 0-2, sharded over the expert data-parallel group at ZeRO-2
    (the audit: they were 2 bytes a parameter, so ZeRO-3's sharded 4 bytes came out above ZeRO-2)."""
    model = PRESETS["mixtral-8x7b"]
    layout = _mixtral(4, zero=zero).model_copy(update={"framework": "fsdp"})
    assert layout.expert_dp == 2
    memory = per_gpu_memory(single_batch(model, layout), H100)
    expert_params = 32 * 8 * 3 * 4096 * 14336 / 4
    assert memory["parts"]["expert_weights"][0] == pytest.approx((2 + 4 / master_shards) * expert_params)
    zero3 = per_gpu_memory(single_batch(model, layout.model_copy(update={"zero": 3})), H100)
    assert zero3["parts"]["expert_weights"][0] == pytest.approx(4 * expert_params / 2)


def test_fp8_full_recompute_rebuilds_the_moe_layer_as_fp8_keeps_it():
    """The MoE layer a full recompute rebuilds in backward keeps what its forward keeps without recompute (fp8: the
    quantised inputs); the audit's layout needed 80 MiB more under full recompute than without it."""
    model = make_model(layers=2, hidden=4096, heads=8, mlp="swiglu", vocab=32000, seq_len=4096, moe_experts=16,
                       moe_top_k=2, moe_ffn=2048)
    base = dict(tp=2, pp=2, dp=64, ep=4, micro_batch=2, global_batch=512, framework="megatron", dtype="fp8",
                seq_parallel=True)
    layouts = [make_layout(**base, recompute=mode) for mode in ("none", "full")]
    memory = per_gpu_memory(layouts_batch([model] * 2, layouts), H100)
    moe_acts = memory["parts"]["moe_activations"]
    # One layer a stage: the rebuilt layer is what the stored one was, per micro-batch in flight.
    assert moe_acts[1] <= moe_acts[0] and moe_acts[1] > 0
    assert memory["total_bytes"][1] <= memory["total_bytes"][0]


@pytest.mark.parametrize("values, key", [
    (dict(tp=1, pp=1, dp=8, ep=3), "ep(3)"),
    (dict(tp=1, pp=1, dp=4, ep=8), "expert grid"),
    (dict(tp=1, pp=2, dp=4, ep=4, moe_a2a_overlap="megatron"), "vpp"),
    (dict(tp=1, pp=1, dp=8, ep=1, moe_a2a_overlap="dualpipe"), "needs ep > 1"),
])
def test_bad_expert_layouts_are_one_line_errors(values, key):
    with pytest.raises(PlannerInputError) as error:
        check_layout(PRESETS["mixtral-8x7b"], make_layout(micro_batch=1, global_batch=64, **values))
    assert key in str(error.value) and "\n" not in str(error.value)


def test_ep_on_a_dense_model_is_refused():
    with pytest.raises(PlannerInputError, match="need an MoE model"):
        check_layout(PRESETS["llama3-8b"], make_layout(dp=8, ep=2, global_batch=8))


def test_overlap_hides_all_to_all_and_dualpipe_shrinks_the_bubble():
    model = PRESETS["deepseek-v3"]
    base = dict(tp=1, pp=4, dp=16, ep=16, micro_batch=1, global_batch=256, zero=1, dtype="fp8")
    plain = step_time(single_batch(model, make_layout(**base)), H100)
    dual = step_time(single_batch(model, make_layout(**base, moe_a2a_overlap="dualpipe")), H100)
    assert dual["parts"]["ep_comm"][0] < plain["parts"]["ep_comm"][0]
    assert dual["parts"]["bubble"][0] < plain["parts"]["bubble"][0]
    assert np.isfinite(dual["step_time_s"][0]) and dual["mfu"][0] < 1.0
    # DualPipe's communication kernels hold 20 of 132 SMs: the compute beside them is 132/112 slower; at most all of
    # it, where every layer of the pacing rank is an MoE layer (cost.moe.stage_moe_layers: DeepSeek-V3's dense
    # layers sit on the first rank).
    assert plain["parts"]["a2a_sm_share"][0] == 0.0
    compute = sum(dual["parts"][name][0] for name in ("moe_experts", "forward", "backward", "elementwise"))
    assert 0.0 < dual["parts"]["a2a_sm_share"][0] <= compute * (132 / 112 - 1.0) * (1 + 1e-9)


def test_megatrons_overlap_runs_the_warm_up_and_cool_down_alone():
    """Megatron's combined 1F1B pairs a forward with another micro-batch's backward only in the steady state: at
    pp 1 the first forward and the last backward run alone (combined_1f1b.py:76-77, 116-117), 1/m of the passes;
    interleaved, rank 0's 2 (pp - 1) + (vpp - 1) x pp + 1 warm-up forwards and as many cool-down backwards
    (schedules.py:960-970) of m x vpp. Their all-to-all is exposed; DualPipe's schedule is left as it was."""
    from planner.cost import moe
    model = PRESETS["mixtral-8x7b"]
    alone = lambda **values: float(moe.unpaired_share(single_batch(model, _mixtral(8, **values)))[0])  # noqa: E731
    assert alone(moe_a2a_overlap="megatron") == pytest.approx(1 / 2)  # m = 16 / 8
    assert alone(moe_a2a_overlap="megatron", global_batch=64) == pytest.approx(1 / 8)
    assert alone(moe_a2a_overlap="megatron", pp=4, vpp=2, dp=2, global_batch=16) == pytest.approx(11 / 16)
    assert alone(moe_a2a_overlap="megatron", pp=4, vpp=2, dp=2, global_batch=4) == 1.0  # all warm-up
    assert alone(moe_a2a_overlap="none") == 0.0
    parts = {"comm": np.array([3.0, 3.0]), "hides": np.array([True, False])}
    np.testing.assert_allclose(moe.exposed_ep_comm(parts, np.array([2.0, 2.0]), 0.25),
                               [0.25 * 3.0 + 0.75 * 1.0, 3.0])
    timed = {values["global_batch"]: step_time(single_batch(model, _mixtral(8, moe_a2a_overlap="megatron", **values)),
                                               H100)["parts"]["ep_comm"][0] for values in (dict(global_batch=16),
                                                                                          dict(global_batch=64))}
    assert timed[16] / 2 > timed[64] / 8  # per micro-batch, the fewer micro-batches the more runs alone


def test_megatrons_overlap_slows_compute_only_while_its_all_to_all_runs():
    """NCCL's all-to-all holds its 16 channels' SMs only while it runs: Megatron's overlap slows the compute beside
    it (132/116 on the paired passes), not the layer's whole compute, which charged Mixtral 8x7B at ep 8 597 ms a
    step to hide 147 ms, so the overlap was slower than none (6.03 s against 5.58 s). DualPipe's 20 SMs are taken
    for the whole overlapped chunk (test above)."""
    from planner.cost import moe

    model = PRESETS["mixtral-8x7b"]
    layout = dict(tp=1, dp=64, ep=8, micro_batch=1, global_batch=512, recompute="selective", framework="megatron")
    steps = {overlap: step_time(single_batch(model, make_layout(**layout, moe_a2a_overlap=overlap)), H100)
             for overlap in ("none", "megatron")}
    assert steps["megatron"]["step_time_s"][0] < steps["none"]["step_time_s"][0]
    # At most the whole all-to-all's time (what `none` exposes) of compute slowed by 132/116.
    all_to_all = steps["none"]["parts"]["ep_comm"][0]
    assert 0.0 < steps["megatron"]["parts"]["a2a_sm_share"][0] <= all_to_all * (132 / 116 - 1.0) * (1 + 1e-9)
    batch = single_batch(model, make_layout(**layout, moe_a2a_overlap="megatron"))
    np.testing.assert_allclose(moe.sm_share_seconds(batch, np.array([5.0]), np.array([2.0]), np.array([0.25]), 132),
                               [0.75 * 2.0 * (132 / 116 - 1.0)])


def test_the_sm_share_of_the_overlaps_follows_the_accelerators_sms():
    """The communication kernels' SMs were a share of Hopper's 132 on every GPU (the seventeenth session's note left
    it): on an A100 (108 SMs) NCCL's 16 channels take 14.8% of the compute, on a B200 (148) 10.8%. A spec without
    `sms` keeps Hopper's."""
    from planner.cost import moe

    model = PRESETS["mixtral-8x7b"]
    layout = dict(tp=1, dp=64, ep=8, micro_batch=1, global_batch=512, recompute="selective", framework="megatron")

    def share(sms, overlap="megatron"):
        accelerator = H100.accelerator.model_copy(update={"sms": sms})
        cluster = H100.model_copy(update={"accelerator": accelerator})
        return step_time(single_batch(model, make_layout(**layout, moe_a2a_overlap=overlap)),
                         cluster)["parts"]["a2a_sm_share"][0]

    assert share(None) == pytest.approx(share(132), rel=1e-12)
    assert share(108) > share(132) > share(148) > 0.0
    # The same seconds beside the all-to-all, slowed by sms / (sms - 16).
    assert share(108) / share(148) == pytest.approx((108 / 92 - 1.0) / (148 / 132 - 1.0), rel=1e-9)
    batch = single_batch(model, make_layout(**{**layout, "dp": 32}, moe_a2a_overlap="dualpipe", pp=2))
    np.testing.assert_allclose(moe.sm_share_seconds(batch, np.array([5.0]), np.array([2.0]), np.array([0.0]), 108),
                               [5.0 * (108 / 88 - 1.0)])
    assert {load_cluster(name).accelerator.sms for name in ("dgx-a100-80gb", "dgx-h100", "dgx-b200")} == {108, 132, 148}


def test_deepeps_kernels_hold_their_20_sms_beside_megatrons_overlap():
    """Under Megatron's overlap the flex dispatcher on DeepEP holds DeepEP's 20 SMs (token_dispatcher.py:1287-1292 at
    d98e8a64), not NCCL's 16 channels; without an overlap nothing runs beside the compute, so nothing is charged."""
    from planner.cost import moe

    model = PRESETS["deepseek-v3"]
    layout = dict(tp=1, pp=4, vpp=2, dp=16, ep=64, micro_batch=1, global_batch=64, framework="megatron", dtype="fp8",
                  moe_a2a_overlap="megatron")
    compute, comm, unpaired = np.array([5.0]), np.array([2.0]), np.array([0.25])
    share = {node: moe.sm_share_seconds(single_batch(model, make_layout(**layout, moe_node_dispatch=node)),
                                        compute, comm, unpaired, 132)[0] for node in (False, True)}
    assert share[False] == pytest.approx(0.75 * 2.0 * (132 / 116 - 1.0))
    assert share[True] == pytest.approx(0.75 * 2.0 * (132 / 112 - 1.0))
    plain = single_batch(model, make_layout(**{**layout, "moe_a2a_overlap": "none"}, moe_node_dispatch=True))
    assert moe.sm_share_seconds(plain, compute, comm, unpaired, 132)[0] == 0.0


def test_an_moe_pipeline_with_fewer_micro_batches_than_stages_idles_as_a_dense_one():
    """The MoE layouts' bubble (frameworks.moe.bubble_slots) kept (p - 1)/v whatever m: one micro-batch of
    Mixtral on fsdp pp 4 vpp 2 idled 1.5 slots where its stages run one after another (3)."""
    from planner.cost.step_time import pipeline_bubble_slots

    model = PRESETS["mixtral-8x7b"]
    bubble = {}
    for m in (1, 2, 4):  # micro-batches a step on pp 4 (one micro-batch's slot is the same in each)
        layout = make_layout(tp=2, pp=4, vpp=2, dp=8, ep=8, zero=3, micro_batch=1, global_batch=8 * m,
                             framework="fsdp")
        bubble[m] = step_time(single_batch(model, layout), H100)["parts"]["bubble"][0]
    assert bubble[1] / bubble[4] == pytest.approx(3.0 / 1.5, rel=1e-9)  # 3 slots against (4 - 1)/2
    assert bubble[2] / bubble[4] == pytest.approx(2.5 / 1.5, rel=1e-9)  # (4 - 2) + 1/2
    assert [float(pipeline_bubble_slots(4, 2, m)) for m in (1, 2, 4)] == [3.0, 2.5, 1.5]


def test_build_batch_refuses_ep_without_moe_model():
    with pytest.raises(ValueError):
        build_batch([PRESETS["llama3-8b"]], [0], ep=np.array([2]))


def test_megatron_sorts_received_tokens_by_local_expert(monkeypatch):
    """Megatron's alltoall dispatcher copies the received tokens into local-expert order and the experts' output
    back ("Permutation 2" / "Unpermutation 2", token_dispatcher.py:753-788, 802-818 @d98e8a64) when a rank holds
    more than one expert: 2 x rows x h x (dispatch + model bytes) of HBM traffic per MoE layer forward and again
    in backward, by hand for Qwen3-30B-A3B at ep 8 (16 local experts); none with one local expert (Mixtral ep 8)."""
    from planner.cost import groups, moe
    from planner.cost.gemm import gemm_seconds, matmul_half_size_array, peak_flops_array

    def forward_seconds(model, layout, sorts):
        batch = single_batch(model, layout)
        monkeypatch.setattr(moe, "_SORTS", moe._SORTS * 0.0 + (1.0 if sorts else 0.0))
        hbm = H100.accelerator.hbm_bytes_per_s * H100.efficiency.hbm_efficiency
        peak, half = peak_flops_array(batch, H100), matmul_half_size_array(batch, H100)
        parts = moe.moe_layer_times(batch, H100, lambda m, n, k: gemm_seconds(m, n, k, peak, H100.efficiency, half),
                                    hbm, lambda size, stride: groups.links(H100, size, stride),
                                    groups.collective_kwargs(H100))
        return float(parts["forward"][0]), float(parts["backward"][0]), hbm

    qwen = PRESETS["qwen3-30b-a3b"]
    layout = make_layout(dp=8, ep=8, micro_batch=2, global_batch=16, framework="megatron")
    (f1, b1, hbm), (f0, b0, _) = forward_seconds(qwen, layout, True), forward_seconds(qwen, layout, False)
    rows = 2 * qwen.seq_len * qwen.moe_top_k  # T·k routed rows received (tp 1, balanced)
    expected = qwen.moe_layers / qwen.layers * 2.0 * rows * qwen.hidden * (2.0 + 2.0) / hbm
    assert f1 - f0 == pytest.approx(expected, rel=1e-9) and b1 - b0 == pytest.approx(expected, rel=1e-9)
    mixtral = _mixtral(8)
    assert forward_seconds(PRESETS["mixtral-8x7b"], mixtral, True)[0] == forward_seconds(PRESETS["mixtral-8x7b"], mixtral, False)[0]


def _deepseek_ep_seconds(ep, framework, node_dispatch=None):
    """Exposed all-to-all seconds a step of DeepSeek-V3 at ep `ep` (etp 1, no overlap), and its scale-out bytes."""
    from planner.cost import groups, moe as moe_cost

    model, cluster = PRESETS["deepseek-v3"], load_cluster("h800-deepseek")
    layout = make_layout(tp=1, pp=16, dp=ep, ep=ep, micro_batch=1, global_batch=2 * ep * 16, dtype="fp8",
                         framework=framework, zero=1, moe_node_dispatch=node_dispatch)
    check_layout(model, layout, gpus=16 * ep)
    batch = single_batch(model, layout)
    links = groups.links(cluster, batch.ep, batch.etp)
    volume = moe_cost.all_to_all_bytes(batch)["dispatch"]
    inter = moe_cost._inter_node_bytes(batch, links, volume)
    return float(step_time(batch, cluster)["parts"]["ep_comm"][0]), volume[0], inter, links


def test_node_limited_dispatch_crosses_to_each_node_once_by_hand():
    """DeepSeek-V3 routes each token to experts in at most 4 of its 8 groups (n_group 8, topk_group 4). At ep 64 over
    8 nodes a group is a node: DeepEP-style dispatch sends each token to at most 4 nodes once, 7/8 of them remote, so
    the scale-out bytes are volume / 8 copies x 4 nodes x 7/8 (DeepSeek-V3 section 3.2.2); one copy per routed expert
    (Megatron's alltoall dispatcher: token_dispatcher.py:556, 671-678, 705-711 at d98e8a64) sends 7/8 of all 8."""
    seconds, volume, inter, links = _deepseek_ep_seconds(64, "megatron", node_dispatch=True)
    assert links["nodes"][0] == 8
    assert inter[0] == pytest.approx(volume / 8 * 4 * 7 / 8)
    plain_seconds, _, plain_inter, _ = _deepseek_ep_seconds(64, "megatron")
    assert plain_inter is None and plain_seconds > 1.5 * seconds
    # The neutral stack (DeepSeek's HAI-LLM runs here) dispatches so by default (its bytes: fp8, frameworks.moe).
    _, other_volume, other_inter, _ = _deepseek_ep_seconds(64, "other")
    assert other_inter[0] == pytest.approx(other_volume / 8 * 4 * 7 / 8)


def test_an_expert_group_spanning_nodes_limits_nothing():
    """At ep 256 (32 nodes) a group of 32 experts spans 4 nodes, so the 4 groups a token picks reach up to 16 nodes
    and its top-8 experts 8: node-limited dispatch saves nothing (it was priced as 4 nodes at any ep)."""
    seconds, volume, inter, links = _deepseek_ep_seconds(256, "megatron", node_dispatch=True)
    plain_seconds, *_ = _deepseek_ep_seconds(256, "megatron", node_dispatch=False)
    assert links["nodes"][0] == 32
    assert inter[0] == pytest.approx(volume * 31 / 32) and seconds == pytest.approx(plain_seconds)


@pytest.mark.parametrize("values, message", [
    (dict(framework="fsdp", zero=3, moe_node_dispatch=True), "fsdp's dispatcher sends one copy per routed expert"),
    (dict(framework="megatron", zero=1, moe_node_dispatch=True, moe_capacity_factor=1.0, moe_pad_to_capacity=True),
     "node-limited dispatcher does not pad"),
])
def test_node_dispatch_where_the_stack_cannot_run_it_is_refused(values, message):
    with pytest.raises(PlannerInputError, match=message):
        check_layout(PRESETS["deepseek-v3"], make_layout(tp=1, pp=16, dp=64, ep=64, global_batch=1024, **values),
                     gpus=1024)
    with pytest.raises(PlannerInputError, match="moe_node_dispatch needs an MoE model"):
        check_layout(PRESETS["llama3-8b"], make_layout(dp=8, global_batch=8, moe_node_dispatch=True), gpus=8)


def test_hierarchical_partitioning_replicates_the_experts_as_the_dense_states():
    """MoE-audit-found: a shard group (HSDP / MiCS) replicated the dense states 8 times but left the experts sharded
    over the whole expert data-parallel group. Mixtral on 64 GPUs, FSDP, ep 8: edp 8, shard group 8 of 64, so every
    state has 8 replicas and the experts' shards are whole (x8): each expert part grows by the dense weights' factor."""
    model, cluster = PRESETS["mixtral-8x7b"], load_cluster("dgx-h100")
    parts = {}
    for group in (None, 8):
        layout = make_layout(dp=64, ep=8, zero=3, framework="fsdp", global_batch=64, shard_group=group)
        check_layout(model, layout, gpus=64)
        parts[group] = estimate(single_batch(model, layout), cluster).memory["parts"]
    for name in ("expert_weights", "expert_gradients", "expert_optimizer"):
        assert parts[8][name][0] == pytest.approx(8.0 * parts[None][name][0])
    assert parts[8]["weights"][0] == pytest.approx(8.0 * parts[None]["weights"][0], rel=0.01)


def test_zero3_gathers_a_layers_local_experts_with_it():
    """MoE-audit-found: the ZeRO-3 / FSDP working set counted only an MoE layer's dense part (layer_params), so
    Llama 3 8B as a one-expert MoE (the same weights plus a router) gathered 1.37 GiB where the dense model gathers
    3.01: the experts' weights were never in flight. They are now, at 1/(ep x etp) of the layer's experts."""
    dense = PRESETS["llama3-8b"]
    one = make_model(**{**dense.model_dump(), "name": "llama3-8b-one-expert", "moe_experts": 1, "moe_top_k": 1,
                        "moe_ffn": dense.ffn_size})
    layout = make_layout(dp=8, zero=3, framework="fsdp", global_batch=8)
    gathered = [estimate(single_batch(m, layout), H100).memory["parts"]["zero3_gathered"][0] for m in (dense, one)]
    assert gathered[1] == pytest.approx(gathered[0], rel=0.01)


@pytest.mark.parametrize("zero, offload", [(1, "optimizer"), (2, "optimizer"), (3, "optimizer+params")])
def test_offload_moves_the_experts_states_as_the_dense_ones(zero, offload):
    """MoE-audit-found: optimizer offload left the experts' Adam states on the GPU (Mixtral 8x7B, ZeRO-3, 8 GPUs: 84
    GiB) and ran their Adam step on HBM. Llama 3 8B as a one-expert MoE (its weights plus a router) offloads like the
    dense model: none of its Adam states on the GPU, the same host bytes and the same CPU-Adam time within 1%."""
    dense = PRESETS["llama3-8b"]
    one = make_model(**{**dense.model_dump(), "name": "llama3-8b-one-expert", "moe_experts": 1, "moe_top_k": 1,
                        "moe_ffn": dense.ffn_size})
    layout = make_layout(dp=8, zero=zero, offload=offload, framework="deepspeed", global_batch=8, recompute="full")
    check_layout(one, layout, gpus=8)
    results = [estimate(single_batch(m, layout), H100) for m in (dense, one)]
    assert results[1].memory["parts"]["expert_optimizer"][0] == 0.0
    host = [r.memory["host_bytes_per_node"][0] for r in results]
    assert host[1] == pytest.approx(host[0], rel=0.01)
    optimizer = [r.time["parts"]["optimizer"][0] for r in results]
    assert optimizer[1] == pytest.approx(optimizer[0], rel=0.01)


def test_the_search_prices_the_node_dispatch_its_layouts_name():
    """Review-found: the searches set node dispatch on Megatron's rows where the routing is node-limited, then reset
    the column to the stack's default (off) with the routing defaults, so a row labelled `node-dispatch` (and
    emitted as the flex dispatcher on DeepEP) was priced with one copy per routed expert. Each searched row is
    priced as simulate prices the layout it names."""
    from planner.search.fixed_model import plan_fixed_model

    model, cluster = PRESETS["deepseek-v3"], load_cluster("h800-deepseek")
    plan = plan_fixed_model(model, cluster, [1024], tokens=1e12, dtype="fp8", frameworks=("megatron",))
    search = plan.chosen.search
    rows = np.flatnonzero((search.arrays["ep"] == 64) & search.feasible)
    row = int(rows[np.argmin(search.step_time_s[rows])])
    layout = search.layout(row)
    assert layout.moe_node_dispatch
    simulated = estimate(single_batch(model, layout), cluster).step_time_s[0]
    assert float(search.step_time_s[row]) == pytest.approx(float(simulated), rel=1e-9)


@pytest.mark.parametrize("name, framework, mlp_share", [
    ("mixtral-8x7b", "megatron", 0.0),   # every layer MoE, no shared expert: the dispatcher's etp group only
    ("mixtral-8x7b", "fsdp", 1.0),       # torchtitan gathers the MoE module's input over tp as a dense MLP's
    ("deepseek-v3", "megatron", 1.0),    # a shared expert in every MoE layer, a dense MLP on the tp group
])
def test_an_moe_layers_mlp_makes_tp_collectives_only_where_its_stack_does(name, framework, mlp_share):
    """The audit: Mixtral at tp 2 was charged the dense MLP's tp gather and reduce-scatter in every layer, and the
    expert-tp ones again in ep_comm; Megatron-Core's alltoall dispatcher gathers only over the expert tp group
    (token_dispatcher.py:85-89, 741-750, 824-831). Tensor-parallel bytes per step by hand: with sequence
    parallelism each collective moves one T x h message (an all-gather and a reduce-scatter make one all-reduce's
    bytes), forward and backward, for the attention and (where it makes them) the MLP."""
    model = PRESETS[name]
    layout = make_layout(tp=2, dp=8, ep=8, seq_parallel=True, micro_batch=1, global_batch=16, zero=1,
                         framework=framework, **({"dtype": "bf16"} if name == "deepseek-v3" else {}))
    batch = single_batch(model, layout)
    time = step_time(batch, H100)
    T, h, bf16, micro_batches = model.seq_len, model.hidden, 2, 2
    layers = batch.layers[0]  # (MTP blocks included)
    message_bytes = T * h * bf16  # all-reduce bytes of one collective pair on each rank, as the model counts it
    by_hand = micro_batches * layers * (1.0 + mlp_share) * 2 * message_bytes
    assert time["comm_bytes_per_step"]["tp"][0] == pytest.approx(by_hand, rel=1e-9)


@pytest.mark.parametrize("framework, zero", [("deepspeed", 0), ("deepspeed", 1), ("deepspeed", 2), ("fsdp", 2),
                                             ("megatron", 1), ("megatron", 2)])
def test_expert_gradients_are_reduced_as_the_dense_ones(framework, zero, fields_with):
    """The framework-tables audit: the experts' gradients were reduce-scattered once a step at every sharded stage,
    while the dense ones follow the stack: today's DeepSpeed all-reduces its ZeRO-1/2 buckets, expert parameters
    included with the expert data-parallel group (stage_1_and_2.py:1648-1650, 1695-1696 at 0.19.8), and ZeRO-2
    reduces after every micro-batch (DeepSpeed, Megatron-FSDP, FSDP2). Mixtral 8x7B at DeepSpeed ZeRO-2, dp 64, m 8
    went 6.86 s -> 9.95 s. Llama 3 8B as a one-expert MoE (its weights plus a router) moves the dense model's
    data-parallel bytes (within the router's 0.01%), and with the overlap off (DeepSpeed's default) exposes as much,
    but for the parameter all-gather's calls at ZeRO-1/2: one per optimizer group, and DeepSpeed cuts the experts'
    groups at 178,956,971 elements (moe/utils.py:122-140), a group a layer here: 32 more calls' latency."""
    dense = PRESETS["llama3-8b"]
    one = make_model(**{**dense.model_dump(), "name": "llama3-8b-one-expert", "moe_experts": 1, "moe_top_k": 1,
                        "moe_ffn": dense.ffn_size})
    layout = make_layout(dp=8, zero=zero, framework=framework, global_batch=32, recompute="full")
    results = [estimate(single_batch(m, layout), H100) for m in (dense, one)]
    moved = [r.time["comm_bytes_per_step"] for r in results]
    assert moved[1]["dp"] + moved[1]["expert_dp"] == pytest.approx(moved[0]["dp"], rel=1e-4)
    if framework == "deepspeed":
        exposed = [r.time["parts"]["dp_comm_exposed"][0] + r.time["parts"].get("expert_dp_comm_exposed", [0.0])[0]
                   for r in results]
        if zero == 0:
            assert exposed[1] == pytest.approx(exposed[0], rel=1e-3)
        else:
            assert exposed[0] < exposed[1] < exposed[0] * 1.02
            # The difference is the experts' gather group by group (32 groups, one a layer): in one group, one call
            # beside the dense model's two, it is the dense exposure.
            from planner.frameworks import batch_framework_arrays
            batch = single_batch(one, layout)
            one_group = fields_with(batch_framework_arrays(batch), expert_param_group_elements=np.array([1e30]))
            batch.__dict__["_memo"]["framework"] = one_group
            again = estimate(batch, H100).time["parts"]
            assert again["dp_comm_exposed"][0] + again["expert_dp_comm_exposed"][0] == pytest.approx(exposed[0], rel=1e-3)


def test_the_router_and_the_norms_are_whole_on_every_tp_rank():
    """The Megatron-oracle audit: a layer's router weight (experts x hidden, a plain Parameter: Megatron-Core
    router.py:64-66 at d98e8a64) and its norms were divided by tp with the matrices; Megatron's own estimator counts
    them replicated (theoretical_memory_usage.py), and Qwen3-30B-A3B at tp 4 held 0.16 GiB less than it. A layer on
    a tp rank is now (layer - whole)/tp + whole: Qwen3's whole part is its router (128 x 2048) and its two RMSNorms
    (2048 each) and q/k norms (128 each)."""
    model = PRESETS["qwen3-30b-a3b"]
    per_rank = [single_batch(model, make_layout(tp=tp, dp=1, global_batch=1, framework="megatron"))
                .layer_params_per_tp_rank[0] for tp in (1, 4)]
    assert 4 * per_rank[1] - per_rank[0] == 3 * (128 * 2048 + 2 * 2048 + 2 * 128)


@pytest.mark.parametrize("layout, expected", [
    (dict(pp=16), (0, 4, 3)),                                          # ranks of 3 and 4 layers; the first 3 dense
    (dict(pp=16, first_stage_layers=2, last_stage_layers=2), (0, 4, 3)),  # rank 1 holds the third dense layer
    (dict(pp=16, first_stage_layers=4, last_stage_layers=1), (1, 4, 2)),  # NVIDIA's B200 recipe split
    (dict(pp=4, first_stage_layers=1, last_stage_layers=1), (0, 29, 2)),
    (dict(pp=3, vpp=21), (19, 20, 20)),                                # the embedding's and the loss's slots
    (dict(pp=7, vpp=3), (6, 9, 9)),
    (dict(pp=2), (28, 31, 31)),
    (dict(pp=1), (59, 59, 59)),
])
def test_each_stage_holds_its_own_moe_layers(layout, expected):
    """DeepSeek-V3: 61 layers, the first 3 dense, and one MTP block (a copy of an MoE layer) on the last rank. The
    experts' states, reduction and Adam step and the pacing stage's MoE parts were priced at the model's mean,
    4 x 59/62 MoE layers on a middle rank that holds 4, and the first rank's 3 dense layers as 2.85 MoE ones (the
    Megatron-oracle audit); an approximation of the placement then overcounted set splits (the review). Counted from
    the layers each rank holds in model order (specs.pipeline_chunks), checked here against the enumeration."""
    from planner.cost.stages import stage_moe_layers
    from planner.specs.pipeline_chunks import virtual_stage_layers

    model = PRESETS["deepseek-v3"]
    batch = single_batch(model, make_layout(dp=1, global_batch=64, framework="megatron", **layout))
    got = tuple(float(x[0]) for x in stage_moe_layers(batch))
    assert got == expected
    # The enumeration: chunk c on rank c % pp, in model order.
    pp, vpp = layout["pp"], layout.get("vpp", 1)
    chunks = virtual_stage_layers(61, pp, vpp, layout.get("first_stage_layers", 0), layout.get("last_stage_layers", 0))
    starts = np.cumsum([0] + chunks[:-1])
    per_rank = [0] * pp
    for c, (start, size) in enumerate(zip(starts, chunks)):
        per_rank[c % pp] += sum(1 for i in range(start, start + size) if i >= 3)
    per_rank[-1] += 1
    if pp > 2:
        assert got == (per_rank[0], max(per_rank[1:-1]), per_rank[-1])


@pytest.mark.parametrize("framework, zero, global_batch", [("fsdp", 3, 256), ("fsdp", 2, 64), ("deepspeed", 3, 64),
                                                           ("deepspeed", 1, 256), ("deepspeed", 2, 64),
                                                           ("megatron", 1, 64)])
def test_a_one_expert_model_copies_and_accumulates_what_its_dense_twin_does(framework, zero, global_batch):
    """The metamorphic audit: Llama 3 8B as a one-expert MoE at ep 1 holds the same parameters, but its HBM copies
    around the sharded reduction (shard_copies) and its per-micro-batch gradient accumulation left the experts out,
    so it ran up to 2.6% faster than the dense model on FSDP and DeepSpeed (Mixtral on FSDP ZeRO-3 at ep 1: about 1.1 s
    of 6.9 s missing). Both parts now take the experts' parameters, over the expert sharding group; the one-expert
    model adds its router and token permutation and is never faster."""
    dense = PRESETS["llama3-8b"]
    one = make_model(**{**dense.model_dump(), "name": "llama3-8b-one-expert", "moe_experts": 1, "moe_top_k": 1,
                        "moe_ffn": dense.ffn_size})
    layout = make_layout(dp=16, zero=zero, framework=framework, micro_batch=1, global_batch=global_batch)
    dense_time, one_time = (estimate(single_batch(m, layout), H100).time for m in (dense, one))
    for part in ("shard_copies", "grad_accumulation"):
        if part in dense_time["parts"]:
            assert one_time["parts"][part][0] == pytest.approx(dense_time["parts"][part][0], rel=1e-3), part
    assert one_time["step_time_s"][0] > dense_time["step_time_s"][0]


def test_two_stages_price_a_real_end_not_a_mix_of_both():
    """At pp 2 the middle row stands for the fuller end: its layers were that end's and its MoE layers the other's
    where they differ, a stage heavier than either that paced the step (the review: Mixtral with 8 dense layers
    first, 18 layers on the first rank). It is now the end with more layers, with its own MoE layers."""
    from planner.cost.stages import stage_moe_layers

    model = make_model(**{**PRESETS["mixtral-8x7b"].model_dump(), "name": "dense-first", "moe_first_dense": 8})
    batch = single_batch(model, make_layout(pp=2, dp=1, ep=1, global_batch=8, framework="megatron",
                                            first_stage_layers=18))
    first, middle, last = (float(x[0]) for x in stage_moe_layers(batch))
    assert (first, middle, last) == (10.0, 10.0, 14.0)  # 18 layers (8 dense) first, 14 MoE last


def _moe_step_and_memory(model, cluster, **layout):
    result = estimate(single_batch(model, make_layout(**layout)), cluster)
    return float(result.time["step_time_s"][0]), float(result.memory["total_bytes"][0])


def test_the_busiest_rank_carries_at_most_what_routing_can_send_it():
    """A token picks top_k distinct experts, so it sends one of the ep expert ranks at most min(k, E/ep) copies:
    the busiest rank receives at most min(ep, E/k) times the mean (cost.moe.busiest_rank_load). With ep = 1 the one
    rank computes every routed row however the experts share them, so a load imbalance cannot slow it (a
    --moe-load-imbalance 1.5 search priced its ep = 1 layouts 50% more expert work than exists); Mixtral's 8
    experts, top-2, at ep 8 cannot be more than 4x the mean."""
    model, cluster = PRESETS["mixtral-8x7b"], load_cluster("dgx-h100")
    base = dict(tp=1, pp=1, dp=8, micro_batch=1, global_batch=8, framework="megatron", zero=1)
    alone = {x: _moe_step_and_memory(model, cluster, **base, ep=1, moe_load_imbalance=x) for x in (1.0, 1.5, 9.0)}
    assert alone[1.5] == alone[9.0] == alone[1.0]
    spread = {x: _moe_step_and_memory(model, cluster, **base, ep=8, moe_load_imbalance=x)
              for x in (1.0, 2.0, 4.0, 6.0)}
    assert spread[1.0][0] < spread[2.0][0] < spread[4.0][0] == spread[6.0][0]  # min(ep 8, E/k 4) = 4
    assert spread[4.0][1] == spread[6.0][1] and spread[2.0][1] < spread[4.0][1]  # the dispatch buffers too
    two = {x: _moe_step_and_memory(model, cluster, **base, ep=2, moe_load_imbalance=x) for x in (2.0, 3.0)}
    assert two[2.0] == two[3.0]  # min(ep 2, E/k 4) = 2


def test_experts_padded_to_a_capacity_compute_it_whatever_the_ranks():
    """Padded to the capacity (static shapes), every expert computes capacity_factor x the mean rows, real work even
    with every expert on one rank: the bound on routed rows does not apply (frameworks.moe.routing_imbalance)."""
    model, cluster = PRESETS["mixtral-8x7b"], load_cluster("dgx-h100")
    base = dict(tp=1, pp=1, dp=8, ep=1, micro_batch=1, global_batch=8, framework="megatron", zero=1,
                moe_capacity_factor=1.5)
    padded = _moe_step_and_memory(model, cluster, **base, moe_pad_to_capacity=True)
    dropless = _moe_step_and_memory(model, cluster, **{k: v for k, v in base.items() if k != "moe_capacity_factor"})
    assert padded[0] > dropless[0]
