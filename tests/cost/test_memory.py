"""Per-GPU memory: each stack's model states against its own estimator or documentation, activations
against Korthikanti et al. 2022 Table 2, micro-batches in flight against Megatron's schedule, uneven
pipeline stages, the reserve terms, and NVIDIA's published Llama 3.1 405B layouts."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from planner.specs.pipeline_chunks import virtual_stage_layers
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.cost.memory import (CUDA_CONTEXT_BYTES, LIBRARY_WORKSPACE_BYTES, NCCL_CONNECTION_BYTES,
                                 activation_bytes_per_layer, inflight_microbatches, model_state_bytes,
                                 per_gpu_memory, stage_inflight)
from planner.frameworks import FRAMEWORKS, record_columns
from planner.specs.clusters import load_cluster
from planner.specs.candidate_batch import single_batch
from planner.specs.layout import Layout
from planner.specs.pipeline_stages import stage_layers
from planner.specs.model import PRESETS, make_model

GPT3 = PRESETS["gpt3-175b"]
LLAMA2_7B = PRESETS["llama2-7b"]
GIB = 2**30


def _gpu_state_bytes(states: dict) -> float:
    return float((states["weights"] + states["gradients"] + states["optimizer"] + states["zero3_gathered"])[0])


def _states(P, model=LLAMA2_7B, **layout) -> float:
    return _gpu_state_bytes(model_state_bytes(np.array([float(P)]), single_batch(model, Layout(**layout))))


def _largest_module_params(model) -> int:
    """Largest single weight matrix (the module ZeRO-3 gathers): embedding V·h, an MLP h·f, or the fused QKV."""
    head_dim = model.hidden // model.heads
    return max(model.vocab * model.hidden, model.hidden * model.ffn_size,
               model.hidden * (model.hidden + 2 * model.kv * head_dim))


def _stack(framework) -> dict:
    """A framework record as the per-candidate arrays cost.memory reads (batch of one)."""
    return record_columns(framework)


# ---------------------------------------------------------------------------------------------
# DeepSpeed (microsoft/DeepSpeed@38327e07; DeepSpeed 0.19.8 installed here has the same estimators).
# P = parameters, N = data-parallel ranks, bf16 training.
# ---------------------------------------------------------------------------------------------

CASES = [(124_439_808, 1), (1.0e9, 8), (6_738_415_616, 64), (70e9, 1024), (3.3e8, 3)]
stage_1_and_2 = pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")
stage3 = pytest.importorskip("deepspeed.runtime.zero.stage3")


@pytest.mark.parametrize("P, N", CASES)
@pytest.mark.parametrize("offload", ["none", "optimizer"])
def test_zero2_matches_deepspeed_estimator(P, N, offload):
    """`estimate_zero2_model_states_mem_needs`, deepspeed/runtime/zero/stage_1_and_2.py:2430-2453:
    2P + 18P/N (2 params16 + 2 grads16 + 4 grads32 + 4 params32 + 8 Adam, all but the weights partitioned),
    2P with the optimizer offloaded."""
    _, expected = stage_1_and_2.estimate_zero2_model_states_mem_needs(
        P, num_gpus_per_node=N, num_nodes=1, cpu_offload=offload != "none")
    got = _states(P, dp=N, zero=2, offload=offload, global_batch=N, framework="deepspeed")
    assert got == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("name", ["gpt2-small", "llama2-7b", "llama3-70b"])
@pytest.mark.parametrize("P, N", CASES)
@pytest.mark.parametrize("offload", ["none", "optimizer", "optimizer+params"])
def test_zero3_matches_deepspeed_estimator(name, P, N, offload):
    """`estimate_zero3_model_states_mem_needs`, deepspeed/runtime/zero/stage3.py:3008-3044:
    4·largest_layer + 18P/N, + 2P/N with optimizer offload, 4·largest_layer with params offload too.
    Without offload the engine also keeps the 16-bit gradient partition `grad_partitions_flat_buffer`
    (stage3.py:547-549, `gradient_accumulation_dtype` = the model dtype, runtime/engine.py get_data_types)
    that the estimator leaves out: 2P/N more (offloaded with the optimizer, so absent there)."""
    model = PRESETS[name]
    largest = _largest_module_params(model)
    _, expected, _ = stage3.estimate_zero3_model_states_mem_needs(
        P, largest, num_gpus_per_node=N, num_nodes=1, cpu_offload=offload != "none",
        cpu_offload_params=offload == "optimizer+params")
    grad_partition = 2 * P / N if offload == "none" else 0.0
    got = _states(P, model, dp=N, zero=3, offload=offload, global_batch=N, framework="deepspeed")
    assert got == pytest.approx(expected + grad_partition, rel=0.01)


@pytest.mark.parametrize("P, N", CASES)
def test_zero1_keeps_whole_gradients_and_costs_more_than_zero2(P, N):
    """ZeRO-1 reduces only at the accumulation boundary (stage_1_and_2.py:1424-1426) and keeps every
    16-bit gradient until then: 4P + 16P/N. ZeRO-2 partitions them: less on GPU whenever N > 1."""
    zero1 = _states(P, dp=N, zero=1, global_batch=N, framework="deepspeed")
    zero2 = _states(P, dp=N, zero=2, global_batch=N, framework="deepspeed")
    assert zero1 == pytest.approx(4 * P + 16 * P / N, rel=1e-9)
    assert zero2 < zero1 if N > 1 else zero2 == pytest.approx(zero1)


# ---------------------------------------------------------------------------------------------
# Megatron-LM distributed optimizer: docs/user-guide/features/dist_optimizer.md:16-20 (Megatron-LM@d98e8a64;
# docs/source/api-guide/dist_optimizer.md before the docs moved). d includes the cp ranks.
# ---------------------------------------------------------------------------------------------

MEGATRON_TABLE = [("fp16", 20, 4, 16), ("bf16", 18, 6, 12), ("fp32", 16, 8, 8)]


@pytest.mark.parametrize("dtype, plain, fixed, sharded", MEGATRON_TABLE)
@pytest.mark.parametrize("dp, cp", [(1, 1), (8, 1), (64, 1), (4, 2), (16, 4)])
def test_megatron_distributed_optimizer_table(dtype, plain, fixed, sharded, dp, cp):
    """All three rows: without the distributed optimizer (zero=0) and with it (zero=1), d = dp x cp."""
    P, d = 1e9, dp * cp
    common = dict(dp=dp, cp=cp, dtype=dtype, global_batch=dp, framework="megatron")
    assert _states(P, **common, zero=0) == pytest.approx(plain * P, rel=0.01)
    assert _states(P, **common, zero=1) == pytest.approx((fixed + sharded / d) * P, rel=0.01)


# ---------------------------------------------------------------------------------------------
# FSDP2 (torchtitan@b5bcd76c): fp32 sharded params + fp32 sharded grads + Adam = 16P/N over dp x cp,
# plus two blocks' bf16 weights in flight and the block being reduced (bf16 grad + fp32 copy,
# torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py foreach_reduce).
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dp, cp", [(8, 1), (64, 1), (16, 2)])
def test_fsdp_shards_16_bytes_per_param_over_dp_and_cp(dp, cp):
    P, n = 7e9, dp * cp
    model = LLAMA2_7B
    states = model_state_bytes(np.array([P]), single_batch(model, Layout(dp=dp, cp=cp, zero=3, global_batch=dp,
                                                                         framework="fsdp")))
    sharded = float((states["weights"] + states["gradients"] + states["optimizer"])[0])
    assert sharded == pytest.approx(16 * P / n, rel=0.01)
    block = single_batch(model, Layout()).layer_params[0]
    assert float(states["zero3_gathered"][0]) == pytest.approx(2 * 2 * block + (2 + 4) * block, rel=1e-9)


@pytest.mark.parametrize("framework", ["fsdp", "llm-foundry", "jax"])
@pytest.mark.parametrize("zero, dp", [(0, 1), (2, 8), (2, 64)])
def test_fsdp_keeps_its_fp32_master_parameter_below_zero3(framework, zero, dp):
    """The stacks whose fp32 parameter is the master (no master on the optimizer side) hold it at ZeRO-0 and -2
    too: torchtitan DDP / FSDP1 NO_SHARD keep the fp32 parameter whole beside the bf16 copy the forward runs on
    (4 + 2 + 4 + 8 = 18 B); ZeRO-2 (FSDP2 reshard_after_forward=False, FSDP1 SHARD_GRAD_OP) shards it with the
    gradients and Adam (16 B / dp) and keeps the gathered bf16 weights (2 B)."""
    P = 7e9
    states = model_state_bytes(np.array([P]), single_batch(LLAMA2_7B, Layout(dp=dp, zero=zero, global_batch=dp,
                                                                             framework=framework)))
    total = float((states["weights"] + states["gradients"] + states["optimizer"])[0])
    expected = {0: 18 * P, 2: 2 * P + 16 * P / dp}[zero]
    assert total == pytest.approx(expected, rel=1e-9)


def test_fsdp_zero2_and_zero3_hold_the_same_states_under_pipelining():
    """Under pipelining torchtitan does not reshard after forward at ZeRO-2 or -3 (distributed/fsdp.py:129-132)
    and syncs gradients only after the last backward: either way the stage's bf16 weights and fp32 gradients
    unsharded, the fp32 master and Adam sharded, 6P + 12P/d. (ZeRO-2 held 4P/d less when its master was left
    out, ZeRO-3 4P/d more with sharded gradients that are not alive at the peak.)"""
    P, d = 4.4e9, 4
    states = {zero: _states(P, model=PRESETS["llama2-70b"], tp=2, pp=8, dp=d, zero=zero, global_batch=16,
                            framework="fsdp") for zero in (2, 3)}
    assert states[2] == pytest.approx(6 * P + 12 * P / d, rel=1e-9)
    assert states[3] == pytest.approx(states[2], rel=1e-9)


def test_fsdp_with_pipeline_keeps_the_stage_unsharded():
    """torchtitan does not reshard after forward with pp (distributed/fsdp.py:129-132) and the pipeline
    schedule syncs gradients only at the last backward: bf16 weights + fp32 gradients of the stage."""
    P = 5e9
    batch = single_batch(LLAMA2_7B, Layout(pp=4, dp=8, zero=3, global_batch=64, framework="fsdp"))
    assert model_state_bytes(np.array([P]), batch)["zero3_gathered"][0] == pytest.approx((2 + 4) * P, rel=1e-9)


@pytest.mark.parametrize("recompute", ["none", "full"])
def test_fsdp_zero3_with_pipeline_holds_what_zero2_holds(recompute):
    """Under pipelining torchtitan's ZeRO-2 and ZeRO-3 run alike (the stage gathered once, reduced once: the
    docstring above), so their peaks are equal. ZeRO-3's gathered stage had been charged the allocator's
    fragmentation of a set freed every micro-batch (+0.9 GiB on Llama-2 13B, tp2 pp2 on 32 H100s)."""
    cluster = load_cluster("dgx-h100")
    common = dict(tp=2, pp=2, dp=8, micro_batch=2, global_batch=256, recompute=recompute, framework="fsdp")
    two, three = (per_gpu_memory(single_batch(PRESETS["llama2-13b"], Layout(**common, zero=z)), cluster)
                  for z in (2, 3))
    assert three["parts"]["zero3_gathered"][0] > 0 and two["parts"]["zero3_gathered"][0] == 0
    assert three["total_bytes"][0] == pytest.approx(two["total_bytes"][0], rel=1e-12)
    assert three["parts"]["fragmentation"][0] == pytest.approx(two["parts"]["fragmentation"][0], rel=1e-12)


@pytest.mark.parametrize("framework, shards_cp", [("megatron", True), ("fsdp", True), ("deepspeed", False)])
def test_context_parallel_enlarges_the_sharding_group_where_the_stack_does(framework, shards_cp):
    """Megatron shards the distributed optimizer over dp x cp (core/optimizer/__init__.py:1075-1076), torchtitan
    over dp_shard x cp (parallel_dims.py); DeepSpeed over its data-parallel group only."""
    P, zero = 1e9, 3 if framework == "fsdp" else 1
    no_cp = _states(P, dp=8, cp=1, zero=zero, global_batch=8, framework=framework)
    with_cp = _states(P, dp=8, cp=4, zero=zero, global_batch=8, framework=framework)
    assert (with_cp < no_cp) == shards_cp
    if not shards_cp:
        assert with_cp == pytest.approx(no_cp, rel=1e-12)


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
@given(P=st.floats(1e6, 1e12), N=st.integers(1, 4096))
@settings(max_examples=30, deadline=None)
def test_other_is_never_below_deepspeed(zero, P, N):
    """The neutral stack keeps the ZeRO paper's accounting (Rajbhandari et al. 2020) with DeepSpeed's extra
    fp32 gradient partition and buffers, and the larger ZeRO-3 working set: never below DeepSpeed."""
    for offload in ("none", "optimizer"):
        if zero == 0 and offload != "none":
            continue
        common = dict(dp=N, zero=zero, offload=offload, global_batch=N)
        assert _states(P, **common, framework="other") >= _states(P, **common, framework="deepspeed") * (1 - 1e-12)


def test_fp8_adds_transformer_engines_weight_copies():
    """TE caches row-wise and column-wise fp8 copies of each Linear weight (module/linear.py:467-490,
    2069-2071): 2 B per layer parameter on the stage, on top of the bf16 weights."""
    cluster = load_cluster("dgx-h100")
    common = dict(tp=8, pp=4, dp=8, zero=1, global_batch=64, seq_parallel=True, framework="megatron")
    bf16 = per_gpu_memory(single_batch(PRESETS["llama3-70b"], Layout(**common, dtype="bf16")), cluster)["parts"]
    fp8 = per_gpu_memory(single_batch(PRESETS["llama3-70b"], Layout(**common, dtype="fp8")), cluster)["parts"]
    layer = single_batch(PRESETS["llama3-70b"], Layout()).layer_params[0]
    assert bf16["fp8_weights"][0] == 0
    assert fp8["fp8_weights"][0] == pytest.approx(2 * 20 * layer / 8, rel=1e-9)
    assert fp8["weights"][0] == pytest.approx(bf16["weights"][0], rel=1e-12)


@pytest.mark.parametrize("zero", [0, 2, 3])
def test_torchaos_fp8_keeps_no_weight_copy(zero):
    """torchtitan's fp8 is torchao's Float8Linear, which saves the bf16 weight and casts it inside each GEMM
    (frameworks/fsdp.py): fp8 adds no fp8 weights part, at any ZeRO stage, where Transformer Engine's stacks add 2 bytes
    per layer parameter (the test above)."""
    cluster = load_cluster("dgx-h100")
    dp = 1 if zero == 0 else 8  # torchtitan's DDP runs alone: no tp beside it
    common = dict(tp=1 if zero == 0 else 8, dp=dp, zero=zero, global_batch=8 * dp, framework="fsdp")
    fp8 = per_gpu_memory(single_batch(PRESETS["llama3-8b"], Layout(**common, dtype="fp8")), cluster)["parts"]
    bf16 = per_gpu_memory(single_batch(PRESETS["llama3-8b"], Layout(**common, dtype="bf16")), cluster)["parts"]
    assert fp8["fp8_weights"][0] == 0.0
    assert fp8["weights"][0] == pytest.approx(bf16["weights"][0], rel=1e-12)


@pytest.mark.parametrize("zero, offload",
                         [(1, "optimizer"), (2, "optimizer"), (3, "optimizer"), (3, "optimizer+params")])
def test_offload_moves_bytes_to_the_host_without_losing_any(zero, offload):
    P, N = 7e9, 8
    batch = lambda off: single_batch(GPT3, Layout(dp=N, zero=zero, offload=off, global_batch=N,  # noqa: E731
                                                  framework="deepspeed"))
    on_gpu = model_state_bytes(np.array([P]), batch("none"))
    moved = model_state_bytes(np.array([P]), batch(offload))
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
    assert _per_layer(m, micro_batch=b) == pytest.approx(s * b * h * (34 + 5 * a * s / h), rel=0.01)


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
    got = _per_layer(m, micro_batch=b, tp=t, seq_parallel=True, recompute="selective")
    assert got == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("name, b", KORTHIKANTI_SHAPES)
def test_activations_full_recompute_keeps_the_layer_input(name, b):
    m = PRESETS[name]
    assert _per_layer(m, micro_batch=b, recompute="full") == pytest.approx(2 * m.seq_len * b * m.hidden, rel=0.01)


# Partitioned checkpoints (DeepSpeed 0.19.8 runtime/activation_checkpointing/checkpointing.py:387-440: each
# checkpointed floating-point input kept as its 1/mp_size slice, mp = the tensor-parallel group; all-gathered into a
# whole new buffer before the recompute, :296-306).

@pytest.mark.parametrize("name, b", KORTHIKANTI_SHAPES)
@pytest.mark.parametrize("seq_parallel", [False, True])
def test_partitioned_checkpoints_keep_a_tp_slice_of_the_layer_input(name, b, seq_parallel):
    """deepspeed, tp 4, full recompute: the stored input is tokens x h x 2 bytes / 4, and under sequence parallelism
    the [s/4, b, h] input is split again (DeepSpeed partitions whatever it is given): / 16."""
    m = PRESETS[name]
    tokens_h_bytes = m.seq_len * b * m.hidden * 2.0
    layout = dict(micro_batch=b, tp=4, recompute="full", framework="deepspeed", seq_parallel=seq_parallel)
    whole = _per_layer(m, **layout)
    partitioned = _per_layer(m, partition_activations=True, **layout)
    assert whole == pytest.approx(tokens_h_bytes / (4 if seq_parallel else 1), rel=1e-12)
    assert partitioned == pytest.approx(tokens_h_bytes / (16 if seq_parallel else 4), rel=1e-12)


def test_the_recompute_rebuilds_the_whole_input_of_a_partitioned_checkpoint():
    """Stored plus working, the layer being recomputed, is its full activations either way: the gather's buffer is
    the whole input, of which the stored slice is a part."""
    def parts(**extra):
        batch = single_batch(GPT3, Layout(tp=4, recompute="full", framework="deepspeed", **extra))
        per_layer = activation_bytes_per_layer(batch)
        return {k: float(v[0]) for k, v in per_layer.items()}
    whole, partitioned = parts(), parts(partition_activations=True)
    assert partitioned["full"] == whole["full"]
    assert partitioned["stored"] + partitioned["working"] == pytest.approx(whole["full"], rel=1e-12)
    assert partitioned["working"] - whole["working"] == pytest.approx(whole["stored"] * 3 / 4, rel=1e-12)


@pytest.mark.parametrize("framework, tp, recompute", [("deepspeed", 1, "full"), ("deepspeed", 4, "none"),
                                                      ("deepspeed", 4, "selective"), ("megatron", 4, "full"),
                                                      ("deepspeed-v0.3", 4, "full")])
def test_checkpoints_are_whole_unless_partitioned(a100, framework, tp, recompute):
    """Every stack's default is off (DeepSpeed activation_checkpointing/config.py:28, Megatron-LM
    transformer_config.py:557), and partitioning touches nothing without full recompute over a tp group."""
    dtype = "fp16"
    batch = single_batch(GPT3, Layout(tp=tp, recompute=recompute, framework=framework, dtype=dtype))
    assert not batch.partition_activations[0]
    memory = per_gpu_memory(batch, a100)
    on = Layout(tp=tp, recompute=recompute, framework=framework, dtype=dtype,
                **({"partition_activations": True} if recompute == "full" else {}))
    same = per_gpu_memory(single_batch(GPT3, on), a100)
    if tp == 1 or recompute != "full":
        assert same["total_bytes"][0] == memory["total_bytes"][0]
    else:
        assert same["parts"]["activations"][0] == pytest.approx(memory["parts"]["activations"][0] / tp, rel=1e-12)


@pytest.mark.parametrize("name, b", KORTHIKANTI_SHAPES)
@pytest.mark.parametrize("t, seq_parallel", [(1, False), (8, False), (8, True)])
def test_without_dropout_no_mask_is_kept(name, b, t, seq_parallel):
    """Korthikanti et al. 2022 section 4.1 count a 1-byte mask per element for the two hidden dropouts (s·b·h each,
    replicated over tp) and, of the 5·a·s²·b score bytes, the attention dropout's mask (1) and its 16-bit output (2),
    which the product with V keeps beside the softmax output (2). A model trained without dropout keeps no mask, and
    its dropout returns the softmax output itself, kept once: torch's dropout returns its input at p = 0 (ATen
    native/Dropout.cpp; torch/_decomp/decompositions.py `dropout` under Megatron's torch.compile'd bias-dropout-add)."""
    with_dropout = PRESETS[name]
    m = with_dropout.model_copy(update={"dropout": 0.0})
    s, h, a = m.seq_len, m.hidden, m.heads
    layout = dict(micro_batch=b, tp=t, seq_parallel=seq_parallel)
    masks = s * b * h * (2.0 + 3.0 * a * s / h) / t if seq_parallel else s * b * h * (2.0 + 3.0 * a * s / (h * t))
    assert with_dropout.dropout > 0
    assert _per_layer(with_dropout, **layout) - _per_layer(m, **layout) == pytest.approx(masks, rel=1e-9)
    expected = s * b * h * ((32 + 2 * a * s / h) / t if seq_parallel else 8 + 24 / t + 2 * a * s / (h * t))
    assert _per_layer(m, **layout) == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("pp, vpp, micro_batches, held", [
    (1, 1, 8, 1),     # one micro-batch's forward and backward at a time
    (8, 1, 96, 8),    # 1F1B: rank 0 holds pp micro-batches at its peak
    (8, 2, 96, 15),   # interleaved: 2·7 + 8 warm-up forwards and one more, in rounds of 8: chunk 0 ran 8 + 7 of them
])
@pytest.mark.parametrize("t, seq_parallel", [(1, False), (8, False), (8, True)])
def test_the_embedding_dropout_keeps_a_mask_per_micro_batch_in_flight_on_the_first_stage(pp, vpp, micro_batches, held,
                                                                                         t, seq_parallel, monkeypatch):
    """Megatron-Core's embedding runs hidden_dropout on its output, of the sequence-parallel slice where the sequence is
    split (megatron/core/models/common/embeddings/language_model_embedding.py:90, 142-156): a 1-byte mask per token x
    hidden, kept on the first stage until the micro-batch's backward, whatever the recompute (it lies outside the
    layers). None without dropout."""
    from planner.cost.memory import embedding_dropout_mask_bytes, stage_inflight

    cluster, gpt = load_cluster("dgx-a100-80gb"), PRESETS["gpt3-175b"]
    layout = Layout(tp=t, pp=pp, vpp=vpp, seq_parallel=seq_parallel, micro_batch=1, global_batch=micro_batches,
                    recompute="full")
    one = gpt.seq_len * gpt.hidden / (t if seq_parallel else 1)

    def masks(model):
        batch = single_batch(model, layout)
        return float(embedding_dropout_mask_bytes(batch, stage_inflight(batch)[0])[0]), per_gpu_memory(batch, cluster)

    with_dropout, memory = masks(gpt)
    without, _ = masks(gpt.model_copy(update={"dropout": 0.0}))
    assert gpt.dropout > 0 and with_dropout == pytest.approx(held * one, rel=1e-12) and without == 0.0
    # The breakdown shows the binding stage's parts: the first stage's masks, or none where another stage binds; at
    # pp 1 every stage row is the one GPU, whose last row (with the logits) binds: the masks are there (the review
    # found them left out).
    shown = memory["parts"]["embedding_dropout_masks"][0]
    if pp == 1:
        assert shown == pytest.approx(with_dropout, rel=1e-12)
    else:
        assert shown in (0.0, pytest.approx(with_dropout, rel=1e-12))
    import planner.cost.memory as memory_module

    original = memory_module.embedding_dropout_mask_bytes
    monkeypatch.setattr(memory_module, "embedding_dropout_mask_bytes", lambda b, inflight: 0.0 * original(b, inflight))
    unmasked = per_gpu_memory(single_batch(gpt, layout), cluster)
    added = memory["total_bytes"][0] - unmasked["total_bytes"][0]
    assert added >= shown and added <= with_dropout * 1.1  # the part, and the allocator's share of it


@pytest.mark.parametrize("recipe, out_projection_copy", [("delayed", 1.0), ("tensorwise", 0.0)])
@pytest.mark.parametrize("t, seq_parallel", [(1, False), (4, True)])
def test_transformer_engine_keeps_the_quantised_linear_inputs_in_fp8(recipe, out_projection_copy, t, seq_parallel):
    """Megatron-Core on Transformer Engine in fp8 (NVIDIA/TransformerEngine@d0067d0d): the norm outputs feeding the QKV and
    fc1 GEMMs are kept in fp8 (layernorm_linear.py:226-232, 478-487) and so is fc2's input (linear.py:614-616): 1 byte
    where bf16 keeps 2. The attention output projection keeps an fp8 copy beside the attention output under delayed
    scaling (linear.py:428-436) and the 16-bit input itself under current scaling (Megatron's set_save_original_input,
    core/transformer/attention.py:428-444). The SwiGLU input stays bf16 (fused_bias_swiglu.py:180-184)."""
    m = PRESETS["llama3-70b"]
    tokens, h, f = m.seq_len, m.hidden, m.ffn_size
    layout = dict(tp=t, seq_parallel=seq_parallel, framework="megatron", flash_attention=True)
    bf16 = float(activation_bytes_per_layer(single_batch(m, Layout(dtype="bf16", **layout)))["stored"][0])
    fp8 = float(activation_bytes_per_layer(single_batch(m, Layout(dtype="fp8", fp8_recipe=recipe, **layout)))["stored"][0])
    saved = tokens * h * (2.0 / (t if seq_parallel else 1) + (f / h - out_projection_copy) / t)
    assert bf16 - fp8 == pytest.approx(saved, rel=1e-9)
    # The memory-bound kernels still read and write the 16-bit tensors (the casts are priced apart).
    assert float(activation_bytes_per_layer(single_batch(m, Layout(dtype="fp8", fp8_recipe=recipe, **layout)))["traffic"][0]) \
        == float(activation_bytes_per_layer(single_batch(m, Layout(dtype="bf16", **layout)))["traffic"][0])
    # torchao's Float8Linear (torchtitan) keeps the bf16 input and casts again in backward (float8_linear.py:45).
    fsdp = dict(layout, framework="fsdp", seq_parallel=seq_parallel)
    assert float(activation_bytes_per_layer(single_batch(m, Layout(dtype="fp8", **fsdp)))["stored"][0]) == \
        float(activation_bytes_per_layer(single_batch(m, Layout(dtype="bf16", **fsdp)))["stored"][0])


@pytest.mark.parametrize("name, qkv_input", [("mixtral-8x7b", 1.0), ("deepseek-v3", 0.0)])
def test_fp8_saves_no_norm_output_that_a_separate_norm_keeps(name, qkv_input):
    """An MoE layer's pre-MLP norm is a separate TENorm whose 16-bit output the router keeps (its experts' fp8 inputs
    are frameworks.moe's), and MLA's input norm feeds two down-projections that keep an fp8 copy each (Megatron-Core's
    MLA spec: TENorm + TELinear): only the dense layers' fc1 input and standard attention's QKV input are saved."""
    m = PRESETS[name]
    layout = dict(tp=1, framework="megatron", flash_attention=True, fp8_recipe="tensorwise")
    bf16 = float(activation_bytes_per_layer(single_batch(m, Layout(dtype="bf16", **layout)))["stored"][0])
    fp8 = float(activation_bytes_per_layer(single_batch(m, Layout(dtype="fp8", **layout)))["stored"][0])
    batch = single_batch(m, Layout(dtype="bf16", **layout))
    dense_fraction = 1.0 - float(batch.moe_layers[0] / batch.layers[0])
    saved = m.seq_len * m.hidden * (qkv_input + dense_fraction + float(batch.ffn[0]) / m.hidden)
    assert bf16 - fp8 == pytest.approx(saved, rel=1e-9)


def test_flash_attention_removes_the_score_term():
    batch = single_batch(GPT3, Layout(tp=8, flash_attention=True))
    expected = GPT3.seq_len * GPT3.hidden * (10 + 24 / 8)
    assert activation_bytes_per_layer(batch)["stored"][0] == pytest.approx(expected, rel=0.01)


def test_activations_in_per_gpu_memory_are_layers_times_per_layer(a100):
    """pp = 1: the activation part is L x the per-layer figure (one micro-batch in flight)."""
    m = PRESETS["gpt3-13b"]
    memory = per_gpu_memory(single_batch(m, Layout(tp=8, micro_batch=2, global_batch=2, flash_attention=False)), a100)
    s, h, a, b = m.seq_len, m.hidden, m.heads, 2
    expected = m.layers * s * b * h * (10 + 24 / 8 + 5 * a * s / (h * 8))
    assert memory["parts"]["activations"][0] == pytest.approx(expected, rel=0.01)


# ---------------------------------------------------------------------------------------------
# Micro-batches in flight per pipeline rank: Megatron-LM@d98e8a64 megatron/core/pipeline_parallel/
# schedules.py:929-975 (get_pp_rank_microbatches): warm-up (p - r - 1) for 1F1B, 2(p - r - 1) + (v - 1)·p
# chunks interleaved, plus the first steady-state forward; at most every micro-batch.
# ---------------------------------------------------------------------------------------------

def _megatron_peak_stage_microbatches(p, v, m, rank, layers=96, first_set=0, last_set=0, chunks=None) -> float:
    """In whole-stage units: the layers of the chunks the warm-up's forwards (and the first steady-state one) hold,
    each forward k running model chunk (k // group) mod v (get_model_chunk_id, schedules.py), over the rank's
    layers, the chunks as the launch splits them (specs.pipeline_chunks.virtual_stage_layers: uneven where pp x vpp does
    not divide the layers, GPT-3's 96 on pp 8 x vpp 8)."""
    if p == 1:
        return 1.0
    if v == 1:
        return min(p - rank - 1, m) + (1 if p - rank - 1 < m else 0)
    # microbatch_group_size_per_vp_stage: pp, or where a last group of fewer than pp is refused (schedules.py:
    # 1165-1180) the smallest group that divides m or leaves at least pp (what the Megatron launch writes).
    group = next(g for g in range(p, m + 1) if m % g == 0 or m % g >= p)
    warmup = min((p - rank - 1) * 2 + (v - 1) * group, m * v)
    chunks = virtual_stage_layers(layers, p, v, first_set, last_set) if chunks is None else chunks
    held = sum(chunks[((k // group) % v) * p + rank] for k in range(min(warmup + 1, m * v)))
    return held / sum(chunks[rank::p])


@pytest.mark.parametrize("pp, vpp, m", [(1, 1, 8), (4, 1, 8), (8, 1, 4), (8, 3, 24), (4, 2, 16), (8, 8, 128),
                                        (9, 7, 128), (16, 1, 64), (2, 1, 1), (14, 7, 126), (49, 2, 98),
                                        (7, 7, 21)])
def test_inflight_follows_megatrons_schedule(pp, vpp, m):
    batch = single_batch(GPT3, Layout(pp=pp, vpp=vpp, micro_batch=1, global_batch=m))
    first, middle, last = stage_inflight(batch)
    assert first[0] == pytest.approx(_megatron_peak_stage_microbatches(pp, vpp, m, 0), rel=1e-12)
    assert last[0] == pytest.approx(_megatron_peak_stage_microbatches(pp, vpp, m, pp - 1), rel=1e-12)
    if pp > 2:
        assert middle[0] == pytest.approx(_megatron_peak_stage_microbatches(pp, vpp, m, 1), rel=1e-12)


@pytest.mark.parametrize("first_set, last_set", [(7, 6), (8, 5), (0, 0)])
def test_inflight_counts_the_chunks_as_dealt(first_set, last_set):
    """61 layers on pp 8 x vpp 4 (DeepSeek-V3's depth): NVIDIA's recipe split 7|..|6 deals its end ranks 1, 2, 2, 2 and
    2, 2, 2, 0 (pipeline_chunks._end_rank_chunks), whose warm-up's first chunks hold more than an even deal's; the
    memory model counts the chunks as dealt. An even deal of the last rank's 6 layers (2, 2, 1, 1) held 15% fewer
    layers at the peak than the filled one (41 against 48)."""
    model = GPT3.model_copy(update={"layers": 61})
    p, v, m = 8, 4, 32
    batch = single_batch(model, Layout(pp=p, vpp=v, micro_batch=1, global_batch=m, first_stage_layers=first_set or None,
                                       last_stage_layers=last_set or None))
    first, middle, last = stage_inflight(batch)
    assert first[0] == pytest.approx(_megatron_peak_stage_microbatches(p, v, m, 0, 61, first_set, last_set), rel=1e-12)
    assert middle[0] == pytest.approx(_megatron_peak_stage_microbatches(p, v, m, 1, 61, first_set, last_set), rel=1e-12)
    assert last[0] == pytest.approx(_megatron_peak_stage_microbatches(p, v, m, p - 1, 61, first_set, last_set),
                                    rel=1e-12)
    if (first_set, last_set) == (7, 6):
        even = virtual_stage_layers(61, p, v, first_set, last_set)
        even[p - 1::p] = [2, 2, 1, 1]
        assert last[0] > 1.15 * _megatron_peak_stage_microbatches(p, v, m, p - 1, 61, chunks=even)


@pytest.mark.parametrize("pp, vpp, m", [(1, 1, 8), (4, 1, 8), (4, 2, 16), (4, 8, 64), (8, 4, 32), (2, 2, 3), (4, 2, 6)])
def test_multi_token_prediction_blocks_count_the_runs_of_the_last_chunk(pp, vpp, m):
    """The MTP blocks run with the output layer in the last rank's last model chunk (Megatron-Core builds them on the
    last virtual stage, multi_token_prediction.py:823-829), which the interleaved warm-up reaches last: at the peak
    the rank holds their activations for the forwards of that chunk (get_model_chunk_id), not for its whole-stage
    count, which counted them (v - 1) x p / v + ... times."""
    from planner.cost.memory import _layers_in_flight, mtp_inflight
    model = GPT3.model_copy(update={"mtp_layers": 1})
    batch = single_batch(model, Layout(pp=pp, vpp=vpp, micro_batch=1, global_batch=m))
    if pp == 1:
        expected = 1.0
    elif vpp == 1:
        expected = 1.0  # the last rank of 1F1B holds one micro-batch
    else:
        group = next(g for g in range(pp, m + 1) if m % g == 0 or m % g >= pp)
        forwards = min((vpp - 1) * group + 1, m * vpp)  # the last rank's warm-up and first steady-state forward
        expected = sum(1 for k in range(forwards) if (k // group) % vpp == vpp - 1)
    layers = np.stack(batch.stages)
    inflight = np.stack(stage_inflight(batch))
    assert mtp_inflight(batch, inflight[2])[0] == expected
    held = _layers_in_flight(batch, layers, inflight)
    assert held[2][0] == pytest.approx((layers[2][0] - 1) * inflight[2][0] + expected, rel=1e-12)
    if pp > 2:  # a middle rank holds no block
        assert held[1][0] == layers[1][0] * inflight[1][0]


@pytest.mark.parametrize("pp, vpp, m", [(4, 2, 7), (4, 4, 7), (8, 2, 15), (4, 2, 10), (4, 2, 8), (8, 3, 24), (2, 2, 3)])
def test_inflight_follows_torchs_interleaved_rounds_on_torchtitan(pp, vpp, m):
    """torch's ScheduleInterleaved1F1B (torchtitan, Framework.interleaving_rounds_divide_micro_batches) warms up
    (v - 1) x m / max(1, m // pp) + 2 (p - 1 - rank) forwards: its own `_get_warmup_ops`, called here, plus the
    first steady-state one. Where m is not a multiple of pp that is more than Megatron's (v - 1) x pp."""
    schedules = pytest.importorskip("torch.distributed.pipelining.schedules")
    batch = single_batch(GPT3, Layout(pp=pp, vpp=vpp, dp=1, zero=3, micro_batch=1, global_batch=m, framework="fsdp"))
    per_round = m // max(1, m // pp)
    for rank, held in zip((0, 1, pp - 1), stage_inflight(batch)):
        warmup = schedules._get_warmup_ops(rank, vpp, per_round, pp, m)
        assert held[0] == pytest.approx(min(warmup + 1, m * vpp) / vpp, rel=1e-12)
    if m % pp:  # more than rounds of pp would hold on the first stage
        assert inflight_microbatches(batch)[0] > min(2 * (pp - 1) + (vpp - 1) * pp + 1, m * vpp) / vpp


@pytest.mark.parametrize("pp, vpp, m, expected", [(4, 1, 8, 4.0), (8, 1, 4, 4.0), (8, 3, 24, 8 * (1 + 7 / 24)),
                                                  (4, 2, 16, 4 * (1 + 3 / 8))])
def test_first_stage_inflight_is_korthikantis(pp, vpp, m, expected):
    """First stage: min(p, m) with 1F1B, p·(1 + (p-1)/(p·v)) interleaved (Korthikanti et al. 2022, §4.2.3)."""
    batch = single_batch(GPT3, Layout(pp=pp, vpp=vpp, micro_batch=1, global_batch=m))
    assert inflight_microbatches(batch)[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("pp, vpp, m, in_flight", [(8, 1, 16, 8), (8, 1, 4, 4), (4, 2, 16, 4 * (1 + 3 / 8))])
def test_first_stage_holds_its_layers_times_the_inflight_microbatches(a100, pp, vpp, m, in_flight):
    layout = Layout(tp=8, pp=pp, vpp=vpp, micro_batch=1, global_batch=m, seq_parallel=True, recompute="selective")
    memory = per_gpu_memory(single_batch(GPT3, layout), a100)
    per_layer = 34 * GPT3.seq_len * GPT3.hidden / 8  # Korthikanti: TP + SP + selective recompute
    assert memory["binding_stage"][0] == 0
    assert memory["parts"]["activations"][0] == pytest.approx(per_layer * GPT3.layers / pp * in_flight, rel=0.01)


# ---------------------------------------------------------------------------------------------
# Uneven stages and NVIDIA's published Llama 3.1 405B layouts.
# NVIDIA/NeMo@8cfedd72 nemo/collections/llm/recipes/llama31_405b.py: seq 8192 (line 61), global batch 512
# and micro-batch 1 (line 199), no recompute set (scripts/performance/recommended_model_configs/
# model_configs_h100.csv:11-12: recompute_layers 0), sequence parallel (line 71), distributed optimizer
# (line 200), tp_comm_overlap (line 239) and bf16 gradient reduction, grad_reduce_in_fp32 = False (line 251).
# ---------------------------------------------------------------------------------------------

LLAMA405 = PRESETS["llama3-405b"]
NEMO_405B = dict(tp=8, cp=2, dp=4, zero=1, dtype="bf16", seq_parallel=True, micro_batch=1, global_batch=512,
                 recompute="none", framework="megatron", tp_comm_overlap=True)
# NeMo's performance recipes keep Megatron's gradient buffer in bf16 (grad_reduce_in_fp32=False).
NEMO_PERF_MEGATRON = _stack(dataclasses.replace(FRAMEWORKS["megatron"], grad_bytes_bf16=2.0, reduce_bytes_bf16=2.0))


def test_uneven_stages_405b_pp8_vpp8():
    """126 layers on pp 8 x vpp 8: the embedding and the loss take a layer's slot, 15 / 16 / 15 layers;
    the middle stage (16 layers, rank 1's p + (p-3)/v = 8.625 micro-batches) binds."""
    batch = single_batch(LLAMA405, Layout(pp=8, vpp=8, **NEMO_405B))
    assert [float(x[0]) for x in stage_layers(batch.layers, batch.pp, batch.vpp)] == [15, 16, 15]
    memory = per_gpu_memory(batch, load_cluster("dgx-h100"), NEMO_PERF_MEGATRON)
    assert memory["binding_stage"][0] == 1
    per_layer = activation_bytes_per_layer(batch)["stored"][0]
    assert memory["parts"]["activations"][0] == pytest.approx(per_layer * 16 * (8 + 5 / 8), rel=1e-9)
    # A layer on a tp rank: its matrices / tp and its norms whole (CandidateBatch.layer_params_per_tp_rank).
    norms = 2 * LLAMA405.hidden
    assert memory["params_per_gpu"][0] == pytest.approx(16 * ((batch.layer_params[0] - norms) / 8 + norms), rel=1e-9)


def test_embedding_on_the_first_stage_output_layer_on_the_last():
    """pp 9 x vpp 7: 14 layers a stage; the first adds the embedding (and binds: most in flight), the last the
    output layer (untied), a middle stage neither; both over Megatron's padded vocabulary, a multiple of
    128 x tp (frameworks/megatron.py)."""
    batch = single_batch(LLAMA405, Layout(pp=9, vpp=7, **NEMO_405B))
    padded_vocab = math.ceil(LLAMA405.vocab / (128 * 8)) * 128 * 8
    norms = 2 * LLAMA405.hidden  # whole on every tp rank (CandidateBatch.layer_params_per_tp_rank)
    blocks, head = 14 * ((batch.layer_params[0] - norms) / 8 + norms), padded_vocab * LLAMA405.hidden / 8
    memory = per_gpu_memory(batch, load_cluster("dgx-h100"), NEMO_PERF_MEGATRON)
    assert memory["binding_stage"][0] == 0
    assert memory["params_per_gpu"][0] == pytest.approx(blocks + head, rel=1e-6)
    last = per_gpu_memory(single_batch(LLAMA405, Layout(pp=9, vpp=1, **{**NEMO_405B, "global_batch": 4})),
                          load_cluster("dgx-h100"), NEMO_PERF_MEGATRON)
    assert last["binding_stage"][0] == 2  # one micro-batch each: the output layer and the loss's bytes bind
    assert last["params_per_gpu"][0] == pytest.approx(blocks + head, rel=1e-6)
    # Megatron's loss holds 6 bytes per logit at its peak: the 16-bit logits and their fp32 copy turned softmax in
    # place (frameworks/megatron.py loss_bytes_per_logit; measured by planner/profile/loss_memory.py).
    assert last["parts"]["logits"][0] == pytest.approx(6 * 8192 / 2 * padded_vocab / 8, rel=1e-9)


@pytest.mark.parametrize("pp, vpp, gpus, global_batch", [(8, 8, 512, 512), (9, 7, 576, 504)])
def test_nvidias_llama31_405b_layouts_fit_on_h100(pp, vpp, gpus, global_batch):
    """tp8 pp8 cp2 vpp8 on 512 H100 and tp8 pp9 cp2 vpp7 on 576 H100 ran: they must fit in 79.6 GiB.
    (With Megatron-LM's default fp32 gradient buffer, 6 + 12/d B/param, they would need ~8-9 GiB more.)
    The pp 9 run's batch is not published; Megatron-Core of its time (core_v0.8.0 pipeline_parallel/schedules.py:
    613-617) refused an interleaved step whose micro-batches were not a multiple of pp, so 512 sequences (128 per
    data-parallel rank) could not have run: 504 (126 = 14 x 9) is the nearest that could. At 512 today's Megatron
    runs it in groups of 13 (frameworks.interleaving_round), which holds 13.6 micro-batches and does not fit."""
    layout = Layout(pp=pp, vpp=vpp, **{**NEMO_405B, "global_batch": global_batch})
    assert layout.gpus == gpus
    memory = per_gpu_memory(single_batch(LLAMA405, layout), load_cluster("dgx-h100"), NEMO_PERF_MEGATRON)
    assert memory["fits"][0], f"{memory['total_bytes'][0] / GIB:.1f} GiB"
    assert memory["total_bytes"][0] > 0.85 * memory["hbm_bytes"][0]  # they were chosen to use the GPU


# ---------------------------------------------------------------------------------------------
# Reserve terms, whole-GPU verdict and monotonicity
# ---------------------------------------------------------------------------------------------

def test_reserve_terms(a100):
    """CUDA context + workspaces fixed; NCCL: 16 channels x 2 connections x (Simple 4 MiB + LL128 + LL) per
    connected communicator (nccl src/init.cc:810-824); fragmentation a fraction of the per-micro-batch bytes."""
    batch = single_batch(LLAMA2_7B, Layout(tp=4, pp=2, dp=4, zero=1, global_batch=32, framework="megatron"))
    parts = per_gpu_memory(batch, a100)["parts"]
    assert NCCL_CONNECTION_BYTES == pytest.approx(9.1875 * 2**20)
    assert parts["cuda_context"][0] == CUDA_CONTEXT_BYTES + LIBRARY_WORKSPACE_BYTES
    assert parts["nccl_buffers"][0] == pytest.approx(3 * 16 * 2 * NCCL_CONNECTION_BYTES)  # tp, pp, dp
    transient = sum(parts[k] for k in ("activations", "recompute_working", "logits", "zero3_gathered", "comm_buckets"))
    assert parts["fragmentation"][0] == pytest.approx(a100.efficiency.memory_reserve_fraction * transient[0])
    assert parts["reserve"][0] == a100.efficiency.memory_reserve_bytes
    single = per_gpu_memory(single_batch(LLAMA2_7B, Layout()), a100)["parts"]
    assert single["nccl_buffers"][0] == 0


def test_moe_layouts_connect_the_expert_groups_too(a100):
    """The expert-parallel group (all-to-all) and the expert data-parallel group (the experts' gradients) are
    communicators of their own: Mixtral on pp 4 x dp 16 with ep 8 connects pp, dp, ep and edp (was pp, dp)."""
    layout = Layout(pp=4, vpp=8, dp=16, ep=8, zero=1, global_batch=256, framework="megatron")
    parts = per_gpu_memory(single_batch(PRESETS["mixtral-8x7b"], layout), a100)["parts"]
    assert parts["nccl_buffers"][0] == pytest.approx(4 * 16 * 2 * NCCL_CONNECTION_BYTES)
    # ep = dp (edp 1): the expert gradients need no group of their own.
    whole = Layout(pp=4, vpp=8, dp=8, ep=8, zero=1, global_batch=256, framework="megatron")
    parts = per_gpu_memory(single_batch(PRESETS["mixtral-8x7b"], whole), a100)["parts"]
    assert parts["nccl_buffers"][0] == pytest.approx(3 * 16 * 2 * NCCL_CONNECTION_BYTES)


def test_parts_sum_to_total_and_verdict_follows(a100):
    memory = per_gpu_memory(single_batch(PRESETS["llama2-70b"], Layout(tp=8, pp=2, global_batch=8)), a100)
    assert sum(memory["parts"].values())[0] == pytest.approx(memory["total_bytes"][0], rel=1e-12)
    assert bool(memory["fits"][0]) == (memory["total_bytes"][0] <= a100.accelerator.hbm_bytes)
    assert bool(memory["hbm_fits"][0]) == bool(memory["fits"][0])  # no offload: HBM alone decides


def test_offload_beyond_the_node_host_memory_does_not_fit():
    """A layout whose offloaded states exceed the node's host memory does not run, whatever HBM holds: `fits`
    is false there as in the layout search (search/layouts.py), and `hbm_fits` still says HBM holds it."""
    h100 = load_cluster("dgx-h100")
    layout = Layout(dp=8, zero=3, offload="optimizer+params", framework="deepspeed", recompute="full", global_batch=8)
    memory = per_gpu_memory(single_batch(PRESETS["llama3-405b"], layout), h100)
    assert memory["hbm_fits"][0] and not memory["host_fits"][0]
    assert memory["host_bytes_per_node"][0] > h100.node.host_memory_bytes
    assert not memory["fits"][0]


def test_175b_on_one_gpu_does_not_fit(a100):
    memory = per_gpu_memory(single_batch(GPT3, Layout()), a100)
    assert not memory["fits"][0]
    # At least 16 B/param of model states (ZeRO paper, K = 12) for 175B parameters.
    assert memory["total_bytes"][0] > 16 * GPT3.total_params


@given(name=st.sampled_from(["gpt2-xl", "llama2-7b", "llama2-70b", "gpt3-13b"]),
       zero=st.sampled_from([0, 1, 2, 3]), tp=st.sampled_from([1, 2, 8]),
       recompute=st.sampled_from(["none", "selective", "full"]),
       framework=st.sampled_from(["megatron", "deepspeed", "fsdp", "other"]))
@settings(max_examples=40, deadline=None)
def test_more_data_parallel_gpus_never_raise_per_gpu_memory(a100, name, zero, tp, recompute, framework):
    """From dp = 2 on (dp = 1 has no gradient communicator, hence no NCCL buffers for it)."""
    model = PRESETS[name]
    totals = []
    for dp in (2, 4, 8, 16, 64, 256, 1024):
        layout = Layout(tp=tp, dp=dp, zero=zero, micro_batch=1, global_batch=dp, recompute=recompute,
                        framework=framework)
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
    fixed = sum(memory["parts"][k][0] for k in ("cuda_context", "nccl_buffers", "reserve"))
    assert memory["fits"][0]
    assert 0 < memory["total_bytes"][0] - fixed < 2 * 20 * model.total_params


def test_fsdp_zero2_with_pipeline_keeps_the_stage_gradients_unsharded():
    """ZeRO-2 (reshard_after_forward False) under pipelining: the stage's gradients accumulate unsharded in the
    fp32 reduce dtype until the last micro-batch (torch pipelining/stage.py:844-847), not 1/dp of them."""
    P = 5e9
    piped = single_batch(LLAMA2_7B, Layout(pp=4, dp=8, zero=2, global_batch=64, framework="fsdp"))
    flat = single_batch(LLAMA2_7B, Layout(pp=1, dp=8, zero=2, global_batch=64, framework="fsdp"))
    assert model_state_bytes(np.array([P]), piped)["gradients"][0] == pytest.approx(4 * P, rel=1e-9)
    assert model_state_bytes(np.array([P]), flat)["gradients"][0] == pytest.approx(4 * P / 8, rel=1e-9)


def test_megatrons_all_to_all_overlap_holds_one_more_warm_up_micro_batch():
    """--overlap-moe-expert-parallel-comm schedules one extra forward before the 1F1B steps of the interleaved
    schedule (Megatron-LM@d98e8a64 core/pipeline_parallel/schedules.py:966-970): one more virtual-stage chunk of
    activations on every rank, 1/vpp of a stage's."""
    model = PRESETS["qwen3-30b-a3b"]

    def inflight(overlap):
        layout = Layout(pp=2, vpp=24, dp=8, ep=8, zero=1, global_batch=512, micro_batch=2, dtype="fp8",
                        moe_a2a_overlap=overlap, framework="megatron")
        return np.array([stage[0] for stage in stage_inflight(single_batch(model, layout))])

    assert inflight("megatron") - inflight("none") == pytest.approx(np.full(3, 1 / 24), rel=1e-12)


@pytest.mark.parametrize("dtype, zero, held_bytes", [
    ("fp16", 0, 2.0),  # the FP16 optimizer: fp16 gradients, the reduction in fp32 (communication_data_type)
    ("fp16", 1, 2.0),
    ("bf16", 1, 4.0),  # the BF16_Optimizer: fp32 gradient accumulation
    ("bf16", 2, 2.0),  # ZeRO-2's buckets and partitions in the model dtype, reduced in fp32
])
def test_deepspeed_holds_fp32_gradients_only_where_its_bf16_optimizer_runs(dtype, zero, held_bytes):
    """The audit of --emit: an fp16 ZeRO-0 plan with --grad-reduce-in-fp32 1 was priced with fp32 gradients and the
    BF16_Optimizer's sharded master and Adam states (9 GiB, 'fits'), which DeepSpeed runs only for bf16 at ZeRO-1
    (runtime/engine.py:2305-2323); the emitted config runs the FP16 optimizer, 97 GiB unsharded."""
    common = dict(tp=2, dp=8, micro_batch=1, global_batch=64, zero=zero, framework="deepspeed", dtype=dtype,
                  recompute="full")
    states = {reduce: model_state_bytes(np.array([6.5e9]), single_batch(PRESETS["llama2-13b"],
                                                                        Layout(**common, grad_reduce_in_fp32=reduce)))
              for reduce in (True, False)}
    if held_bytes == 4.0:  # the fp32 accumulation buffer beside the bf16 .grad autograd writes into
        assert states[True]["gradients"][0] >= 6.5e9 * (4.0 + 2.0) * (1 - 1e-9)
    else:  # the same states as without fp32 reduction: only the communication differs
        assert states[True]["gradients"][0] == pytest.approx(6.5e9 * 2.0 / (8 if zero >= 2 else 1), rel=1e-9)
        for part in ("gradients", "optimizer"):
            assert states[True][part][0] == pytest.approx(states[False][part][0], rel=1e-12)
