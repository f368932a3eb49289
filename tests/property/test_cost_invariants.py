"""Invariants the cost model keeps on every valid input (issue 7, part 1).

Random valid shapes, layouts and clusters (tests/property/conftest.py) go through `simulate` and the
vectorised `estimate`; each test states one rule a user relies on when comparing two plans.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from planner.cost.estimate import simulate
from planner.cost.memory import model_state_bytes, per_gpu_memory, sharding_degree, stage_params
from planner.frameworks import FRAMEWORKS
from planner.specs.candidate_batch import RECOMPUTE_CODES, single_batch

EXAMPLES = settings.default.max_examples
# Float noise allowed when a slower input must not give a smaller output: the step time is a sum of
# parts in which an overlap term is added and subtracted, so equal inputs can differ in the last bits.
REL = 1e-12


def _numbers(tree, path=""):
    """(path, value) of every number in a simulate() result."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _numbers(value, f"{path}.{key}" if path else key)
    elif isinstance(tree, (bool, np.bool_)):
        return
    else:
        yield path, float(tree)


def _states(batch) -> list[float]:
    """Model-state bytes (weights + gradients + optimizer + ZeRO-3 gathered set) of the first and last stage."""
    out = []
    for params in stage_params(batch):
        parts = model_state_bytes(params, batch)
        out.append(float((parts["weights"] + parts["gradients"] + parts["optimizer"] + parts["zero3_gathered"])[0]))
    return out


@settings(max_examples=EXAMPLES * 2)
@given(data=st.data())
def test_no_nan_inf_or_negative_time_or_memory(gen, data):
    model, layout, cluster = data.draw(gen.cases())
    result = simulate(model, layout, cluster)
    for path, value in _numbers(result):
        assert math.isfinite(value), f"{path} = {value}"
        assert value >= 0.0, f"{path} = {value}"
    assert result["step_time_s"] > 0 and result["memory"]["total_bytes"] > 0
    assert math.isclose(sum(result["time"].values()), result["step_time_s"], rel_tol=1e-9)


@given(data=st.data(), factor=st.sampled_from([2, 3, 4, 8]))
def test_zero3_model_states_never_grow_with_dp(gen, data, factor):
    """ZeRO-3 divides weights and optimizer states by dp; nothing per GPU may grow with more ranks."""
    cluster = data.draw(gen.clusters())
    model = data.draw(gen.models())
    small = data.draw(gen.layouts(model, cluster, zero=3, offload="none"))
    if small.dp * small.cp == 1 and small.gpus * 2 * factor <= cluster.max_nodes * cluster.gpus_per_node:
        # Going from one replica to two adds a gradient communicator and its NCCL buffers: compare from 2.
        small = small.model_copy(update={"dp": 2, "global_batch": small.global_batch * 2})
    large = small.model_copy(update={"dp": small.dp * factor, "global_batch": small.global_batch * factor})
    before, after = single_batch(model, small), single_batch(model, large)
    for first, second in zip(_states(before), _states(after)):
        assert second <= first * (1 + REL)
    # With the micro-batches per step held fixed the activations do not change either.
    grown = per_gpu_memory(after, cluster)
    shrunk = per_gpu_memory(before, cluster)
    new_communicator = grown["parts"]["nccl_buffers"][0] - shrunk["parts"]["nccl_buffers"][0]  # only from 1 replica
    assert grown["total_bytes"][0] - max(new_communicator, 0.0) <= shrunk["total_bytes"][0] * (1 + REL)


@given(data=st.data())
def test_model_states_never_grow_with_the_zero_stage(gen, data):
    """ZeRO-0 -> 1 -> 2 -> 3 at fixed dp shards more and more; per-GPU model states never grow.

    One exception, which DeepSpeed's own estimator shares (estimate_zero3_model_states_mem_needs charges
    4 x largest_layer_params for the gathered fp16 module and its gradient): ZeRO-3 also holds the gathered
    working set (a module for DeepSpeed, whole blocks in flight for FSDP / Megatron-FSDP), which at small
    dp or in embedding-dominated toy models can exceed what sharding saves. There the sharded states alone
    must still not grow, and when the gathered set is clearly smaller (nine tenths) than what ZeRO-3's sharding of
    the weights saves, the whole must not either: ZeRO-3 adds nothing else. (The rule was "a quarter of ZeRO-2's
    states", which a campaign showed too loose: Megatron's 6.5 bytes a parameter at 4 shards put a quarter above
    the 1.5 bytes the weights' sharding saves. The saving is read from the two stages' weights, not derived from
    the shard count: the bf16 stacks' weights part holds the fp32 master, sharded at both stages.)
    """
    cluster = data.draw(gen.clusters())
    model = data.draw(gen.models())
    base = data.draw(gen.layouts(model, cluster, zero=0, offload="none"))
    # ZeRO over one replica shards nothing (FSDP then only adds its buffers): the framework's sharding
    # group (dp, or dp x cp) must have two ranks at least.
    shards = float(sharding_degree(single_batch(model, base))[0])
    assume(shards >= 2)
    batches = [single_batch(model, base.model_copy(update={"zero": zero})) for zero in (0, 1, 2, 3)]
    states = [_states(batch) for batch in batches]
    for stage in (0, 1):
        assert states[1][stage] <= states[0][stage] * (1 + REL)
        assert states[2][stage] <= states[1][stage] * (1 + REL)
    zero2, zero3 = batches[2], batches[3]
    params2, params3 = stage_params(zero2), stage_params(zero3)
    for stage in (0, 1):
        parts3 = model_state_bytes(params3[stage], zero3)
        gathered = float(parts3["zero3_gathered"][0])
        assert states[3][stage] - gathered <= states[2][stage] * (1 + REL)
        saved = float(model_state_bytes(params2[stage], zero2)["weights"][0] - parts3["weights"][0])
        if gathered <= 0.9 * saved:
            assert states[3][stage] <= states[2][stage] * (1 + REL)


@settings(max_examples=EXAMPLES * 2)
@given(data=st.data())
def test_recompute_trades_time_for_memory(gen, data):
    """Activation memory: none >= selective >= full recompute; step time the other way round (over the modes the
    layout's stack runs)."""
    model, layout, cluster = data.draw(gen.cases(recompute="none"))
    modes = [mode for mode in RECOMPUTE_CODES if mode in FRAMEWORKS[layout.framework].recompute_modes]
    results = [simulate(model, layout.model_copy(update={"recompute": mode}), cluster) for mode in modes]
    memory = [r["memory"]["total_bytes"] for r in results]
    time = [r["step_time_s"] for r in results]
    assert all(more >= less * (1 - REL) for more, less in zip(memory, memory[1:])), memory
    assert all(shorter <= longer * (1 + REL) for shorter, longer in zip(time, time[1:])), time
    if layout.pp == 1:  # one stage: the activation parts themselves are ordered too
        activations = [r["memory"]["activations"] + r["memory"]["recompute_working"] + r["memory"]["logits"]
                       for r in results]
        assert all(more >= less * (1 - REL) for more, less in zip(activations, activations[1:])), activations


def _slower(cluster, what: str, factor: float):
    """A copy of `cluster` with one link or rate `factor` times worse."""
    acc, node, net = cluster.accelerator, cluster.node, cluster.network
    up = node.scale_up
    if what == "peak":
        peaks = {d: (v / factor if v else v) for d, v in acc.peak_flops.model_dump().items()}
        return cluster.model_copy(update={"accelerator": acc.model_copy(update={"peak_flops": acc.peak_flops.model_copy(update=peaks)})})
    if what == "hbm_bandwidth":
        return cluster.model_copy(update={"accelerator": acc.model_copy(update={"hbm_bytes_per_s": acc.hbm_bytes_per_s / factor})})
    if what in ("scale_up_bandwidth", "scale_up_latency"):
        change = ({"link_bytes_per_s_per_direction": up.link_bytes_per_s_per_direction / factor}
                  if what == "scale_up_bandwidth" else {"latency_s": up.latency_s * factor})
        return cluster.model_copy(update={"node": node.model_copy(update={"scale_up": up.model_copy(update=change)})})
    if what in ("pcie", "nvme", "host_adam"):
        key = {"pcie": "pcie_bytes_per_s_per_accelerator", "nvme": "nvme_bytes_per_s", "host_adam": "host_adam_params_per_s"}[what]
        return cluster.model_copy(update={"node": node.model_copy(update={key: getattr(node, key) / factor})})
    change = {"nic_bandwidth": {"nic_bytes_per_s_per_direction": net.nic_bytes_per_s_per_direction / factor},
              "network_latency": {"latency_s": net.latency_s * factor},
              "oversubscription": {"oversubscription": net.oversubscription * factor}}[what]
    return cluster.model_copy(update={"network": net.model_copy(update=change)})


SLOWDOWNS = ("peak", "hbm_bandwidth", "scale_up_bandwidth", "scale_up_latency", "pcie", "nvme", "host_adam",
             "nic_bandwidth", "network_latency", "oversubscription")


@settings(max_examples=EXAMPLES * 3)
@given(data=st.data(), what=st.sampled_from(SLOWDOWNS), factor=st.floats(1.0, 16.0))
def test_slower_hardware_never_shortens_a_step(gen, data, what, factor):
    model, layout, cluster = data.draw(gen.cases())
    fast = simulate(model, layout, cluster)["step_time_s"]
    slow = simulate(model, layout, _slower(cluster, what, factor))["step_time_s"]
    assert slow >= fast * (1 - REL), f"{what} x{factor}: {fast} -> {slow}"


@given(data=st.data(), factor=st.floats(1.0, 16.0))
def test_more_peak_flops_never_lengthens_a_step(gen, data, factor):
    """The converse, and the case that once failed: with the matmul half size derived from the peak
    (3 x peak / HBM bandwidth), a GEMM far below the ridge was predicted faster on a slower GPU."""
    model, layout, cluster = data.draw(gen.cases())
    slow = simulate(model, layout, _slower(cluster, "peak", factor))["step_time_s"]
    assert simulate(model, layout, cluster)["step_time_s"] <= slow * (1 + REL)


@settings(max_examples=EXAMPLES * 2)
@given(data=st.data())
def test_mfu_below_hfu_below_the_flop_rate_ceiling(gen, data):
    """Issue 12: MFU <= HFU <= 1 and TFLOP/s <= peak for every candidate, and MFU never above the
    ceiling the search's bounds assume (gemm.flop_rate_ceiling), at any sequence length."""
    from planner.cost.gemm import flop_rate_ceiling, rank_share

    model, layout, cluster = data.draw(gen.cases())
    result = simulate(model, layout, cluster)
    # The peak of what one rank gets (a CPU node's cores are shared by its ranks).
    peak = cluster.peak_flops_per_s(layout.dtype) * rank_share(layout.gpus, cluster)
    assert result["mfu"] <= result["hfu"] * (1 + REL)
    assert result["hfu"] <= 1.0 + REL
    assert result["mfu"] <= flop_rate_ceiling(cluster) * (1 + REL)
    assert result["tflops_per_gpu"] * 1e12 <= peak * (1 + REL)


def test_a_million_token_sequence_stays_below_peak():
    """Issue 12 reproduction 3: 2 layers, 2 heads of 2048, a 1M-token sequence gave MFU 107% (model FLOPs
    counted full attention while time charged the causal half)."""
    from planner.specs.clusters import load_cluster
    from planner.specs.layout import make_layout
    from planner.specs.model import ModelSpec

    model = ModelSpec(layers=2, hidden=4096, heads=2, vocab=32000, seq_len=1048576)
    result = simulate(model, make_layout(), load_cluster("dgx-h100"))
    assert 0 < result["mfu"] <= result["hfu"] <= 1.0


@given(data=st.data())
def test_zero3_states_never_grow_with_the_shard_group(gen, data):
    """Hierarchical partitioning (MiCS / HSDP: --shard-group g, and the gradient group inside it) shards the model
    states over g ranks and replicates across groups: a larger group divides them by more, so per-GPU model states
    never grow with it, and the full data-parallel group (no --shard-group) shards most. The ZeRO-3 ordering rule
    above draws its layouts at ZeRO-0 and never meets these groups."""
    cluster = data.draw(gen.clusters())
    model = data.draw(gen.models())
    stacks = [name for name, stack in FRAMEWORKS.items() if stack.shard_groups and 3 in stack.zero_stages]
    layout = data.draw(gen.layouts(model, cluster, zero=3, offload="none",
                                   framework=data.draw(st.sampled_from(stacks))))
    groups = gen.divisors(layout.dp)
    small = data.draw(st.sampled_from(groups))
    large = data.draw(st.sampled_from([g for g in groups if g % small == 0]))
    plain = {"shard_group": None, "grad_shard_group": None, "zero_hpz": 1, "zero_quantized_weights": False,
             "zero_quantized_gradients": False}
    states = [_states(single_batch(model, layout.model_copy(update={**plain, **group})))
              for group in ({"shard_group": small}, {"shard_group": large}, {})]
    for stage in (0, 1):
        assert states[1][stage] <= states[0][stage] * (1 + REL), states
        assert states[2][stage] <= states[1][stage] * (1 + REL), states


@given(data=st.data())
def test_hpz_trades_memory_for_cross_node_traffic(gen, data):
    """ZeRO++'s hpZ (--zero-hpz h) keeps a secondary copy of the weights sharded over h ranks inside the node, so
    backward's gathers stay on the node: per-GPU memory never falls and the bytes that cross nodes never grow
    (ZeRO++ section 3.2)."""
    cluster = data.draw(gen.clusters())
    model = data.draw(gen.models())
    stacks = [name for name, stack in FRAMEWORKS.items() if stack.zeropp and 3 in stack.zero_stages]
    layout = data.draw(gen.layouts(model, cluster, zero=3, offload="none", tp=1, cp=1,
                                   framework=data.draw(st.sampled_from(stacks))))
    sizes = [h for h in gen.divisors(layout.dp) if h > 1 and cluster.gpus_per_node % h == 0]
    assume(sizes)
    plain = layout.model_copy(update={"shard_group": None, "grad_shard_group": None, "zero_hpz": 1,
                                      "zero_quantized_weights": False, "zero_quantized_gradients": False})
    hpz = plain.model_copy(update={"zero_hpz": data.draw(st.sampled_from(sizes))})
    without, with_hpz = simulate(model, plain, cluster), simulate(model, hpz, cluster)
    assert with_hpz["memory"]["total_bytes"] >= without["memory"]["total_bytes"] * (1 - REL)
    crossing = [r["comm_bytes_per_step"]["dp_cross_node"] for r in (without, with_hpz)]
    assert crossing[1] <= crossing[0] * (1 + REL), crossing


@settings(max_examples=EXAMPLES * 2)
@given(data=st.data())
def test_offload_never_raises_gpu_memory(gen, data):
    """Moving the optimizer states (and at ZeRO-3 the parameters) to the host never adds GPU memory: what offload
    leaves on the GPU is a subset of what stays there without it (the audit's case: DeepSpeed ZeRO-1 with one
    micro-batch a step counted the 16-bit gradients as live at the forward's peak only without offload, though
    DeepSpeed frees them after the step either way)."""
    model, layout, cluster = data.draw(gen.cases(offload="none"))
    stack = FRAMEWORKS[layout.framework]
    modes = [mode for mode in ("optimizer", "optimizer+params") if mode in stack.offload_modes and layout.zero >= 1
             and (mode == "optimizer" or layout.zero == 3)]
    assume(stack.supports_offload and modes)
    without = simulate(model, layout, cluster)["memory"]["total_bytes"]
    for mode in modes:
        offloaded = simulate(model, layout.model_copy(update={"offload": mode, "offload_device": "cpu"}), cluster)
        assert offloaded["memory"]["total_bytes"] <= without * (1 + REL), (mode, offloaded["memory"], without)
