"""Per-GPU memory: model states against DeepSpeed's estimators and Megatron's table, activations against
Korthikanti et al. 2022 Table 2, and in-flight micro-batches of 1F1B / interleaved schedules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.cost.memory import activation_bytes_per_layer, inflight_microbatches, model_state_bytes, per_gpu_memory
from planner.layout import Layout, single_batch
from planner.model import PRESETS, make_model

GPT3 = PRESETS["gpt3-175b"]


def _gpu_state_bytes(states: dict) -> float:
    return float((states["weights"] + states["gradients"] + states["optimizer"] + states["zero3_gathered"])[0])


def _largest_module_params(model) -> int:
    """Largest single weight matrix (the module ZeRO-3 gathers): embedding V·h, an MLP h·f, or the fused QKV."""
    head_dim = model.hidden // model.heads
    return max(model.vocab * model.hidden, model.hidden * model.ffn_size,
               model.hidden * (model.hidden + 2 * model.kv * head_dim))


# ---------------------------------------------------------------------------------------------
# Model states: DeepSpeed `estimate_zero2_model_states_mem_needs` / `estimate_zero3_model_states_mem_needs`
# (docs memory.rst). P = total params, N = GPUs (data-parallel ranks), 16-bit training.
# ---------------------------------------------------------------------------------------------

CASES = [(124_439_808, 1), (1.0e9, 8), (6_738_415_616, 64), (70e9, 1024), (3.3e8, 3)]


@pytest.mark.parametrize("P, N", CASES)
def test_zero2_gpu_bytes_match_deepspeed_estimator(batch_of, P, N):
    batch = batch_of(PRESETS["llama2-7b"], dp=N, zero=2, global_batch=N)
    assert _gpu_state_bytes(model_state_bytes(np.array([P]), batch)) == pytest.approx(4 * P + 16 * P / N, rel=1e-9)


@pytest.mark.parametrize("P, N", CASES)
def test_zero2_optimizer_offload_keeps_2p_on_gpu(batch_of, P, N):
    batch = batch_of(PRESETS["llama2-7b"], dp=N, zero=2, offload="optimizer", global_batch=N)
    assert _gpu_state_bytes(model_state_bytes(np.array([P]), batch)) == pytest.approx(2 * P, rel=1e-9)


@pytest.mark.parametrize("name", ["gpt2-small", "llama2-7b", "llama3-70b"])
@pytest.mark.parametrize("P, N", CASES)
def test_zero3_gpu_bytes_match_deepspeed_estimator(batch_of, name, P, N):
    model = PRESETS[name]
    largest_layer_memory = 4 * _largest_module_params(model)
    batch = batch_of(model, dp=N, zero=3, global_batch=N)
    got = _gpu_state_bytes(model_state_bytes(np.array([P]), batch))
    assert got == pytest.approx(largest_layer_memory + 18 * P / N, rel=1e-9)


@pytest.mark.parametrize("P, N", CASES)
def test_zero3_optimizer_offload(batch_of, P, N):
    model = PRESETS["llama2-7b"]
    batch = batch_of(model, dp=N, zero=3, offload="optimizer", global_batch=N)
    got = _gpu_state_bytes(model_state_bytes(np.array([P]), batch))
    assert got == pytest.approx(4 * _largest_module_params(model) + 2 * P / N, rel=1e-9)


@pytest.mark.parametrize("P, N", CASES)
def test_zero3_params_offload_keeps_only_the_largest_layer(batch_of, P, N):
    model = PRESETS["llama2-7b"]
    batch = batch_of(model, dp=N, zero=3, offload="optimizer+params", global_batch=N)
    got = _gpu_state_bytes(model_state_bytes(np.array([P]), batch))
    assert got == pytest.approx(4 * _largest_module_params(model), rel=1e-9)


@pytest.mark.parametrize("d", [1, 8, 64])
def test_megatron_fp16_distributed_optimizer_table(batch_of, d):
    """Megatron-LM distributed-optimizer docs, fp16 params and grads: 20 B/param without it, 4 + 16/d with it."""
    P = 1e9
    plain = batch_of(GPT3, dp=d, zero=0, dtype="fp16", global_batch=d)
    sharded = batch_of(GPT3, dp=d, zero=1, dtype="fp16", global_batch=d)
    assert _gpu_state_bytes(model_state_bytes(np.array([P]), plain)) == pytest.approx(20 * P, rel=1e-12)
    assert _gpu_state_bytes(model_state_bytes(np.array([P]), sharded)) == pytest.approx((4 + 16 / d) * P, rel=1e-12)


@pytest.mark.parametrize("zero, offload", [(1, "optimizer"), (2, "optimizer"), (3, "optimizer"), (3, "optimizer+params")])
def test_offload_moves_bytes_to_the_host_without_losing_any(batch_of, zero, offload):
    P, N = 7e9, 8
    on_gpu = model_state_bytes(np.array([P]), batch_of(GPT3, dp=N, zero=zero, global_batch=N))
    moved = model_state_bytes(np.array([P]), batch_of(GPT3, dp=N, zero=zero, offload=offload, global_batch=N))
    assert moved["host_per_gpu"][0] > 0 and moved["nvme_per_gpu"][0] == 0
    assert _gpu_state_bytes(moved) + moved["host_per_gpu"][0] == pytest.approx(_gpu_state_bytes(on_gpu), rel=1e-12)


def test_nvme_offload_lands_on_nvme_not_host(batch_of):
    batch = batch_of(GPT3, dp=8, zero=3, offload="optimizer+params", offload_device="nvme", global_batch=8)
    states = model_state_bytes(np.array([1e9]), batch)
    assert states["host_per_gpu"][0] == 0 and states["nvme_per_gpu"][0] > 0


# ---------------------------------------------------------------------------------------------
# Activations: Korthikanti et al. 2022, Table 2 (bytes per layer, 16-bit activations).
# ---------------------------------------------------------------------------------------------

KORTHIKANTI_SHAPES = [("gpt3-175b", 1), ("megatron-530b", 1), ("megatron-1t", 1), ("gpt3-13b", 4)]


def _per_layer(model, **layout) -> float:
    batch = single_batch(model, Layout(flash_attention=False, **layout))
    return float(activation_bytes_per_layer(batch)["stored"][0])


@pytest.mark.parametrize("name, b", KORTHIKANTI_SHAPES)
def test_activations_no_parallelism(name, b):
    m = PRESETS[name]
    s, h, a = m.seq_len, m.hidden, m.heads
    expected = s * b * h * (34 + 5 * a * s / h)
    assert _per_layer(m, micro_batch=b) == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("name, b", KORTHIKANTI_SHAPES)
@pytest.mark.parametrize("t", [2, 8])
def test_activations_tensor_parallel(name, b, t):
    m = PRESETS[name]
    s, h, a = m.seq_len, m.hidden, m.heads
    expected = s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    assert _per_layer(m, micro_batch=b, tp=t) == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("name, b", KORTHIKANTI_SHAPES)
@pytest.mark.parametrize("t", [2, 8])
def test_activations_tensor_and_sequence_parallel(name, b, t):
    m = PRESETS[name]
    s, h, a = m.seq_len, m.hidden, m.heads
    expected = s * b * h * (34 + 5 * a * s / h) / t
    assert _per_layer(m, micro_batch=b, tp=t, seq_parallel=True) == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("name, b", KORTHIKANTI_SHAPES)
@pytest.mark.parametrize("t", [2, 8])
def test_activations_sequence_parallel_with_selective_recompute(name, b, t):
    m = PRESETS[name]
    expected = 34 * m.seq_len * b * m.hidden / t
    assert _per_layer(m, micro_batch=b, tp=t, seq_parallel=True, recompute="selective") == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("name, b", KORTHIKANTI_SHAPES)
def test_activations_full_recompute_keeps_the_layer_input(name, b):
    m = PRESETS[name]
    assert _per_layer(m, micro_batch=b, recompute="full") == pytest.approx(2 * m.seq_len * b * m.hidden, rel=0.01)


def test_flash_attention_removes_the_score_term():
    m = GPT3
    batch = single_batch(m, Layout(tp=8, flash_attention=True))
    expected = m.seq_len * m.hidden * (10 + 24 / 8)
    assert activation_bytes_per_layer(batch)["stored"][0] == pytest.approx(expected, rel=0.01)


def test_activations_in_per_gpu_memory_are_layers_times_per_layer(a100):
    """pp = 1: the activation part is L x the per-layer figure (one micro-batch in flight)."""
    m = PRESETS["gpt3-13b"]
    layout = Layout(tp=8, micro_batch=2, global_batch=2, flash_attention=False)
    memory = per_gpu_memory(single_batch(m, layout), a100)
    s, h, a, b = m.seq_len, m.hidden, m.heads, 2
    expected = m.layers * s * b * h * (10 + 24 / 8 + 5 * a * s / (h * 8))
    assert memory["parts"]["activations"][0] == pytest.approx(expected, rel=0.01)


# ---------------------------------------------------------------------------------------------
# Micro-batches in flight on the first stage (Narayanan et al. 2021; Korthikanti et al. 2022 §4.2.3)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "pp, vpp, m, expected",
    [
        (1, 1, 8, 1.0),
        (4, 1, 8, 4.0),  # 1F1B: p in flight
        (8, 1, 4, 4.0),  # fewer micro-batches than stages: all of them
        (8, 3, 24, 8 * (1 + 7 / 24)),  # interleaved: p·(1 + (p-1)/(p·v))
        (4, 2, 16, 4 * (1 + 3 / 8)),
    ],
)
def test_inflight_microbatches(pp, vpp, m, expected):
    batch = single_batch(GPT3, Layout(pp=pp, vpp=vpp, micro_batch=1, global_batch=m))
    assert inflight_microbatches(batch)[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("pp, vpp, m, in_flight", [(8, 1, 16, 8), (8, 1, 4, 4), (4, 2, 16, 4 * (1 + 3 / 8))])
def test_first_stage_holds_its_layers_times_the_inflight_microbatches(a100, pp, vpp, m, in_flight):
    model = GPT3
    layout = Layout(tp=8, pp=pp, vpp=vpp, micro_batch=1, global_batch=m, seq_parallel=True, recompute="selective")
    memory = per_gpu_memory(single_batch(model, layout), a100)
    per_layer = 34 * model.seq_len * model.hidden / 8  # Korthikanti: TP + SP + selective recompute
    expected = per_layer * model.layers / pp * in_flight
    assert memory["parts"]["activations"][0] == pytest.approx(expected, rel=0.01)


# ---------------------------------------------------------------------------------------------
# Whole-GPU verdict and monotonicity
# ---------------------------------------------------------------------------------------------

def test_parts_sum_to_total_and_verdict_follows(a100):
    memory = per_gpu_memory(single_batch(PRESETS["llama2-70b"], Layout(tp=8, pp=2, global_batch=8)), a100)
    assert sum(memory["parts"].values())[0] == pytest.approx(memory["total_bytes"][0], rel=1e-12)
    assert bool(memory["fits"][0]) == (memory["total_bytes"][0] <= a100.accelerator.hbm_bytes)


def test_175b_on_one_gpu_does_not_fit(a100):
    memory = per_gpu_memory(single_batch(GPT3, Layout()), a100)
    assert not memory["fits"][0]
    # At least 16 B/param of model states (ZeRO paper, K = 12) for 175B parameters.
    assert memory["total_bytes"][0] > 16 * GPT3.total_params


@given(name=st.sampled_from(["gpt2-xl", "llama2-7b", "llama2-70b", "gpt3-13b"]),
       zero=st.sampled_from([0, 1, 2, 3]), tp=st.sampled_from([1, 2, 8]),
       recompute=st.sampled_from(["none", "selective", "full"]))
@settings(max_examples=40, deadline=None)
def test_more_data_parallel_gpus_never_raise_per_gpu_memory(a100, name, zero, tp, recompute):
    model = PRESETS[name]
    totals = []
    for dp in (1, 2, 4, 8, 16, 64, 256, 1024):
        layout = Layout(tp=tp, dp=dp, zero=zero, micro_batch=1, global_batch=dp, recompute=recompute)
        totals.append(per_gpu_memory(single_batch(model, layout), a100)["total_bytes"][0])
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in zip(totals, totals[1:]))
    if zero == 3:
        assert totals[-1] < totals[0]


def test_recompute_lowers_activation_memory(a100):
    """none > selective > full in stored activations (unfused attention, so selective has scores to drop)."""
    model = PRESETS["gpt3-13b"]
    results = {}
    for mode in ("none", "selective", "full"):
        layout = Layout(tp=8, micro_batch=4, global_batch=4, recompute=mode, flash_attention=False)
        memory = per_gpu_memory(single_batch(model, layout), a100)
        results[mode] = (memory["parts"]["activations"][0], memory["total_bytes"][0])
    assert results["none"][0] > results["selective"][0] > results["full"][0]
    assert results["none"][1] > results["selective"][1] > results["full"][1]


@pytest.mark.parametrize("flash", [True, False])
def test_recompute_order_holds_with_one_layer_in_flight(a100, flash):
    """Regression (issue 7 property suite): with one layer and one micro-batch, full recompute counted the
    layer's kept input twice (stored checkpoint + the rebuilt layer) and came out above no recompute;
    selective recompute without flash attention left out the scores it rebuilds in backward."""
    model = make_model(layers=1, hidden=8, heads=1, vocab=1, seq_len=1)
    totals = {}
    for mode in ("none", "selective", "full"):
        batch = single_batch(model, Layout(recompute=mode, flash_attention=flash))
        per_layer = activation_bytes_per_layer(batch)
        parts = per_gpu_memory(batch, a100)["parts"]
        totals[mode] = float(parts["activations"][0] + parts["recompute_working"][0])
        if mode == "full":  # the checkpointed input plus the rest of the layer rebuilt: the layer's full set
            assert totals[mode] == pytest.approx(float(per_layer["full"][0]), rel=1e-12)
    assert totals["none"] >= totals["selective"] >= totals["full"]


def test_tiny_model_memory_is_positive_and_small(a100):
    model = make_model(layers=2, hidden=64, heads=4, vocab=128, seq_len=32)
    memory = per_gpu_memory(single_batch(model, Layout()), a100)
    assert memory["fits"][0]
    assert 0 < memory["total_bytes"][0] - memory["parts"]["reserve"][0] < 2 * 20 * model.total_params
