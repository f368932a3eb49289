"""Layouts are validated when built and checked against the model with the arithmetic in the message;
candidate batches are plain struct-of-arrays (the scalar path is a batch of one)."""

from __future__ import annotations

import numpy as np
import pytest

from planner.errors import PlannerInputError
from planner.specs.candidate_batch import OFFLOAD_CODES, RECOMPUTE_CODES, build_batch, model_arrays, single_batch
from planner.specs.layout import Layout, make_layout
from planner.specs.layout_checks import check_layout
from planner.specs.pipeline_chunks import virtual_stage_layers
from planner.specs.pipeline_stages import chunk_share, fits_the_chunks, interleavings, stage_layers, stage_argmax
from planner.specs.model import PRESETS, make_model

GPT3 = PRESETS["gpt3-175b"]  # 96 layers, 96 heads


def _check_error(model, gpus=None, **layout) -> str:
    with pytest.raises(PlannerInputError) as error:
        check_layout(model, Layout(**layout), gpus=gpus)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_gpu_count_mismatch_shows_the_arithmetic():
    message = _check_error(GPT3, gpus=64, tp=8, pp=4, dp=3, global_batch=24)
    assert "tp(8) * pp(4) * dp(3) * cp(1) = 96 != gpus(64)" in message


def test_heads_not_divisible_by_tp():
    assert "heads(12) is not divisible by tp(8)" in _check_error(PRESETS["gpt2-small"], tp=8)


@pytest.mark.parametrize("framework", ["deepspeed", "fsdp", "other"])
def test_kv_heads_not_divisible_by_tp(framework):
    """Llama 3 70B has 64 query heads but 8 kv heads: tp 16 divides the first, not the second. torchtitan and
    Megatron-DeepSpeed shard the kv heads whole (simulate priced half a kv head per rank)."""
    model = PRESETS["llama3-70b"]
    message = _check_error(model, gpus=16, tp=16, zero=1 if framework != "fsdp" else 3, global_batch=16,
                           framework=framework)
    assert f"kv_heads(8) is not divisible by tp(16): {framework} needs tp a divisor of the key/value heads" in message
    check_layout(model, Layout(tp=8, dp=2, zero=1 if framework != "fsdp" else 3, global_batch=16,
                               framework=framework), gpus=16)


def test_megatron_runs_tp_a_divisor_or_a_multiple_of_the_kv_heads():
    """Megatron-Core: num_query_groups a multiple or divisor of tp (transformer_config.py:1461-1468)."""
    check_layout(PRESETS["llama3-70b"], Layout(tp=16, dp=1, zero=1, global_batch=16, framework="megatron"), gpus=16)
    model = make_model(layers=4, hidden=3072, heads=24, kv_heads=8, vocab=1000, seq_len=1024)
    message = _check_error(model, gpus=12, tp=12, global_batch=1, framework="megatron")
    assert "kv_heads(8) is not divisible by tp(12): megatron needs tp a divisor of the key/value heads or a multiple" \
        in message


def test_ffn_not_divisible_by_tp():
    """Megatron-Core's RowParallelLinear divides the MLP's inner width by tp (`divide` asserts): simulate accepted
    ffn 1001 at tp 8 and --emit wrote a launch that fails."""
    model = make_model(layers=4, hidden=1024, heads=16, ffn=1001, vocab=1000, seq_len=1024)
    assert "ffn(1001) is not divisible by tp(8)" in _check_error(model, gpus=8, tp=8, global_batch=1)
    check_layout(model, Layout(tp=1, dp=8, global_batch=8), gpus=8)


def test_sequence_parallelism_needs_each_ranks_sequence_divisible_by_tp():
    """Megatron's _split_along_first_dim asserts the sequence (seq_len / cp per rank) divides over tp."""
    model = make_model(layers=4, hidden=1024, heads=16, vocab=1000, seq_len=1022)
    message = _check_error(model, gpus=4, tp=4, seq_parallel=True, global_batch=1)
    assert "seq_len(1022) / cp(1) = 1022 is not divisible by tp(4): sequence parallelism splits it over tp" in message
    check_layout(model, Layout(tp=4, seq_parallel=False, global_batch=1), gpus=4)
    # 2048 / cp 8 = 256 tokens a rank, which tp 4 splits.
    even = make_model(layers=4, hidden=1024, heads=16, vocab=1000, seq_len=2048)
    check_layout(even, Layout(tp=4, cp=8, seq_parallel=True, global_batch=1, framework="megatron"), gpus=32)


def test_fewer_layers_than_virtual_stages():
    message = _check_error(GPT3, pp=16, vpp=8, global_batch=16)
    assert "layers(96) < pp(16) * vpp(8) = 128" in message


def test_uneven_stages_are_accepted():
    """Llama 3.1 405B's 126 layers on pp 8 x vpp 8 (NeMo's recipe) and GPT-3's 96 on pp 5."""
    check_layout(PRESETS["llama3-405b"], Layout(tp=8, pp=8, cp=2, vpp=8, dp=4, global_batch=32), gpus=512)
    check_layout(GPT3, Layout(pp=5))


@pytest.mark.parametrize("layers, pp, vpp, expected", [
    (96, 8, 1, (12, 12, 12)),     # even
    (126, 8, 8, (15, 16, 15)),    # (126 + 2) / 64 = 2 slots per virtual stage; embedding and loss take one each
    (126, 9, 7, (14, 14, 14)),    # NeMo's 576-GPU layout divides evenly
    (70, 12, 1, (5, 6, 5)),       # BLOOM-176B: 72 slots over 12 stages
    (31, 4, 1, (8, 8, 7)),        # remainder: middle stages full, the ends lighter
    (33, 2, 1, (17, 17, 16)),
    (40, 1, 1, (40, 40, 40)),
])
def test_stage_layers(layers, pp, vpp, expected):
    first, middle, last = stage_layers(layers, pp, vpp)
    assert (first, middle, last) == expected
    assert first + last + middle * max(pp - 2, 0) == (layers if pp > 1 else 2 * layers)


@pytest.mark.parametrize("layers, pp, expected", [
    (61, 8, (8, 8, 7)),     # 8, 8, 8, 8, 8, 7, 7, 7
    (70, 12, (6, 6, 5)),    # ten of 6, two of 5: BLOOM's layers without its fork's 'type:transformer|embedding'
    (45, 4, (12, 11, 11)),  # one extra: the first stage alone
    (33, 2, (17, 17, 16)),
    (96, 8, (12, 12, 12)),
])
def test_deepspeeds_pipeline_gives_the_extra_layers_to_the_first_stages(layers, pp, expected):
    """Megatron-DeepSpeed partitions its GPTModelPipe by transformer layers with DeepSpeed's partition_balanced
    (frameworks/deepspeed.py uneven_layers_to_first_stages); a DeepSpeed batch's stages follow it, a Megatron one's
    keep Megatron-Core's split."""
    assert tuple(float(x) for x in stage_layers(layers, pp, 1, 0, True)) == expected
    model = make_model(layers=layers, hidden=1024, heads=16, vocab=32000, seq_len=2048)
    stages = {fw: tuple(float(x[0]) for x in single_batch(model, Layout(pp=pp, framework=fw)).stages)
              for fw in ("deepspeed", "megatron")}
    assert stages["deepspeed"] == expected
    assert stages["megatron"] == tuple(float(x) for x in stage_layers(layers, pp, 1))


def test_first_heavy_split_is_deepspeeds_partition_balanced():
    """Against DeepSpeed's own function (runtime/utils.py partition_balanced) on GPTModelPipe's binary weights
    (embedding, transformer layers, norm, head: pipe/module.py 'type:transformer'), where DeepSpeed is installed."""
    utils = pytest.importorskip("deepspeed.runtime.utils")
    for layers in range(2, 50):
        for pp in range(2, min(layers, 12) + 1):
            weights = [0, 0] + [1] * layers + [0, 0, 0]
            parts = utils.partition_balanced(weights, pp)
            counts = [sum(weights[parts[i]:parts[i + 1]]) for i in range(pp)]
            expected = (counts[0], max(counts[1:-1]) if pp > 2 else max(counts[0], counts[-1]), counts[-1])
            assert tuple(float(x) for x in stage_layers(layers, pp, 1, 0, True)) == expected, (layers, pp, counts)


@pytest.mark.parametrize("layers, pp, vpp", [(61, 8, 4), (61, 4, 8), (61, 2, 8), (126, 8, 8), (126, 16, 4), (126, 16, 8)])
def test_uneven_splits_real_runs_interleave_are_searched(layers, pp, vpp):
    """NVIDIA's recipes interleave splits that pp x vpp does not divide (Megatron-Bridge@067f987d perf_recipes/):
    DeepSeek-V3's 61 layers on pp 8 x vpp 4 (deepseek/h100/deepseek_v3.py) and pp 2 x vpp 8 (deepseek/gb300/
    deepseek_v3.py:83), Llama 3.1 405B's 126 on pp 8 x vpp 8 and pp 16 x vpp 8 (llama/b200/llama31.py:34, the
    embedding and the loss in a chunk of their own, which simulate refused). The search enumerated only dividing
    ones, so it could never choose them."""
    assert vpp in interleavings(layers, pp, 1 << 20)
    assert layers % (pp * vpp) != 0  # what the old rule required
    check_layout(make_model("deep", layers=layers, hidden=1024, heads=8, seq_len=2048, vocab=32000),
                 Layout(tp=1, pp=pp, vpp=vpp, dp=1, micro_batch=1, global_batch=pp))


@pytest.mark.parametrize("layers", [24, 32, 40, 61, 62, 70, 80, 94, 96, 126])
@pytest.mark.parametrize("pp", [1, 2, 3, 4, 8, 16, 32])
def test_interleavings_keep_the_fewest_chunks_of_each_size_and_every_even_split(layers, pp):
    """For each size of the fullest rank's largest chunk (what the bubble and the warm-up's activations follow:
    chunk_share) the fewest chunks that give it; every even split (pp x vpp dividing the depth) among them; and
    every chunk of the split holds a layer, the first and last excepted where they hold the embedding and the loss
    (fits_the_chunks)."""
    chosen = interleavings(layers, pp, 1 << 20)
    assert chosen[0] == 1
    if pp == 1:
        assert chosen == [1]
        return
    fullest = lambda v: float(stage_layers(layers, pp, v)[1])  # noqa: E731
    largest = lambda v: -(-int(fullest(v)) // v)  # noqa: E731
    def filled(v):  # a layer in every chunk but the embedding's and the loss's (the launch's split), and a layer per
        # chunk on the end ranks but where the embedding and the loss take a slot each (an end rank the recipe's way
        # fills its other chunks and may leave its end chunk to the embedding or the loss: _end_rank_chunks)
        chunks = virtual_stage_layers(layers, pp, v)
        slots = layers % (pp * v) and (layers + 2) % (pp * v) == 0
        ends = min(sum(chunks[0::pp]), sum(chunks[pp - 1::pp]))
        return min(chunks[1:-1], default=1) >= 1 and (slots or ends >= v)

    if pp > layers:
        assert chosen == [1]
        return
    fit = [v for v in range(2, layers + 3) if fits_the_chunks(layers, pp, v) and filled(v)]
    expected = sorted({largest(v): v for v in reversed(fit)}.values())
    assert chosen[1:] == expected
    for v in chosen[1:]:
        assert float(chunk_share(layers, pp, v)) == pytest.approx(largest(v) / fullest(v))
    even = [v for v in range(2, layers // pp + 1) if layers % (pp * v) == 0]
    assert set(even) <= set(chosen)
    assert interleavings(layers, pp, 2) == [v for v in chosen if v <= 2]


def test_the_bubble_of_uneven_chunks_follows_the_largest():
    """8 layers a rank in 5 chunks (2, 2, 2, 1, 1) idle (p - 1) x 2/8 of a slot, as in 4 chunks, not (p - 1)/5."""
    from planner.cost.step_time import pipeline_bubble_slots

    assert float(chunk_share(61, 8, 5)) == float(chunk_share(61, 8, 4)) == 0.25
    assert float(pipeline_bubble_slots(8, 5, 64, chunk_share(61, 8, 5))) == pytest.approx(7 * 0.25)
    assert float(pipeline_bubble_slots(8, 5, 64)) == pytest.approx(7 / 5)


def test_stage_argmax_is_numpys_argmax_over_the_stages():
    """Ties go to the first stage and a NaN counts as the largest (the first NaN wins), as np.argmax has it."""
    nan = np.nan
    values = np.array([[1.0, 2.0, 3.0, 3.0, 2.0, 5.0, nan, 1.0, 1.0, nan, -np.inf, 0.0],
                       [2.0, 2.0, 1.0, 3.0, 4.0, 5.0, 1.0, nan, nan, nan, -np.inf, -0.0],
                       [0.0, 2.0, 3.0, 4.0, 4.0, 5.0, 9.0, 9.0, nan, nan, -np.inf, 0.0]])
    rng = np.random.default_rng(3)
    values = np.concatenate([values, rng.integers(0, 3, (3, 500)).astype(float)], axis=1)
    got = stage_argmax(values)
    np.testing.assert_array_equal(got, np.argmax(values, axis=0))
    assert got.dtype == np.argmax(values, axis=0).dtype
    np.testing.assert_array_equal(stage_argmax(tuple(values)), got)


def test_embedding_stage_partition_is_accepted():
    """BLOOM-176B ran 70 layers over pp=12 by giving the embedding and head a stage slot each (72 / 12)."""
    check_layout(PRESETS["bloom-176b"], Layout(tp=4, pp=12, dp=8, global_batch=2048), gpus=384)


def test_global_batch_not_divisible_by_micro_batch_times_dp():
    message = _check_error(GPT3, dp=4, micro_batch=3, global_batch=100)
    assert "global_batch(100) is not divisible by micro_batch(3) * dp(4) = 12" in message


def test_vpp_needs_pipeline():
    assert "needs pipeline parallelism" in _check_error(GPT3, vpp=2)


def test_seq_len_not_divisible_by_cp():
    model = make_model(layers=2, hidden=64, heads=4, vocab=100, seq_len=1000)
    assert "seq_len(1000) is not divisible by cp(3)" in _check_error(model, cp=3)


@pytest.mark.parametrize("zero, offload", [(0, "optimizer"), (2, "optimizer+params")])
def test_offload_needs_the_right_zero_stage(zero, offload):
    assert "offload" in _check_error(GPT3, dp=2, global_batch=2, zero=zero, offload=offload)


@pytest.mark.parametrize("values, says", [
    (dict(offload_device="nvme"), "offload_device=nvme"),  # nowhere to put: nothing is offloaded
    (dict(moe_capacity_factor=1.0), "moe_capacity_factor needs an MoE model"),
    (dict(moe_load_imbalance=1.2), "moe_load_imbalance needs an MoE model"),
])
def test_settings_that_would_change_nothing_are_refused(values, says):
    """Settings that only mean something with offload or with experts are refused on a layout without them
    (they were ignored)."""
    with pytest.raises(PlannerInputError, match=says):
        check_layout(PRESETS["llama3-8b"], make_layout(dp=8, global_batch=8, **values))
    check_layout(PRESETS["llama3-8b"], make_layout(dp=8, global_batch=8, zero=3, offload="optimizer", offload_device="nvme"))


def test_several_problems_are_reported_together():
    message = _check_error(GPT3, gpus=10, tp=7, pp=5)
    assert "!= gpus(10)" in message and "tp(7)" in message and "pp(5)" in message


@pytest.mark.parametrize(
    "values, key",
    [(dict(tp=0), "tp"), (dict(dp=-2), "dp"), (dict(micro_batch=0), "micro_batch"), (dict(zero=4), "zero"),
     (dict(recompute="some"), "recompute"), (dict(pipeline=2), "pipeline"), (dict(dtype="int4"), "dtype")],
)
def test_bad_layout_values_are_one_line_errors_naming_the_key(values, key):
    with pytest.raises(PlannerInputError) as error:
        make_layout("layout", **values)
    assert f"layout: {'unknown ' if key == 'pipeline' else ''}key '{key}'" in str(error.value)
    assert "\n" not in str(error.value)


def test_layout_derived_counts():
    layout = Layout(tp=8, pp=4, dp=16, cp=2, micro_batch=2, global_batch=512)
    assert layout.gpus == 8 * 4 * 16 * 2
    assert layout.grad_accumulation == 512 // (2 * 16)


def test_single_batch_carries_the_layout():
    layout = Layout(tp=4, pp=2, dp=8, vpp=3, zero=3, offload="optimizer", micro_batch=2, global_batch=64,
                    recompute="selective", seq_parallel=True, dtype="fp16")
    batch = single_batch(PRESETS["llama2-13b"], layout)
    assert len(batch) == 1
    assert batch.gpus[0] == 64 and batch.grad_accumulation[0] == 4
    assert batch.offload[0] == OFFLOAD_CODES["optimizer"] and batch.recompute[0] == RECOMPUTE_CODES["selective"]
    assert bool(batch.seq_parallel[0]) and not bool(batch.tied_embeddings[0])


def test_sequence_parallel_is_off_without_tensor_parallel():
    assert not single_batch(GPT3, Layout(seq_parallel=True)).seq_parallel[0]


def test_model_arrays_rebuild_the_exact_total():
    """Blocks + embeddings + head + final norm add back to the exact parameter count."""
    models = [PRESETS[n] for n in ("gpt2-small", "llama2-70b", "bloom-176b", "llama3-405b")]
    arrays = model_arrays(models)
    for i, model in enumerate(models):
        norm = param_breakdown_norm(model)
        head = 0 if model.tied_embeddings else arrays["logits_params"][i]
        rebuilt = model.layers * arrays["layer_params"][i] + arrays["embedding_params"][i] + head + norm
        assert rebuilt == arrays["total_params"][i] == model.total_params


def param_breakdown_norm(model) -> int:
    """Final norm (+ BLOOM's embedding norm): norms outside the blocks."""
    per_norm = 2 * model.hidden if model.norm == "layernorm" and model.bias else model.hidden
    return per_norm * (1 + int(model.embedding_norm))


def test_build_batch_broadcasts_and_take_selects():
    models = [PRESETS["gpt2-small"], PRESETS["llama2-7b"]]
    batch = build_batch(models, [0, 1, 1], tp=np.array([1, 2, 4]), dp=8, global_batch=64)
    assert len(batch) == 3
    np.testing.assert_array_equal(batch.dp, [8, 8, 8])
    np.testing.assert_array_equal(batch.hidden, [768, 4096, 4096])
    sub = batch.take(np.array([False, True, True]))
    np.testing.assert_array_equal(sub.tp, [2, 4])


def test_build_batch_rejects_unknown_arrays():
    with pytest.raises(TypeError, match="pipeline"):
        build_batch([PRESETS["gpt2-small"]], [0], pipeline=2)


def test_stacks_that_predate_flash_attention_run_the_unfused_path_unless_told():
    """deepspeed-v0.2 and -v0.3 (2020-21) had no FlashAttention (2022): a layout that does not say runs their
    unfused attention (Framework.flash_attention_default); simulate ran them with flash by default before."""
    from planner.frameworks import FRAMEWORKS

    for name, stack in FRAMEWORKS.items():
        assert Layout(framework=name).flash_attention_on == stack.flash_attention_default
    assert not Layout(framework="deepspeed-v0.2").flash_attention_on
    assert not Layout(framework="deepspeed-v0.3").flash_attention_on
    assert Layout(framework="deepspeed").flash_attention_on
    assert Layout(framework="deepspeed-v0.3", flash_attention=True).flash_attention_on
    batch = single_batch(PRESETS["gpt2-small"], Layout(framework="deepspeed-v0.3", dtype="fp16"))
    assert not batch.flash_attention[0]


@pytest.mark.parametrize("framework", ["megatron", "deepspeed", "fsdp", "deepspeed-v0.3", "other"])
@pytest.mark.parametrize("zero", [1, 3])
def test_settings_used_shows_what_the_stack_runs_and_builds_the_same_layout(framework, zero):
    """simulate --json reports each switch at the value it ran with (null was reported for the stack's
    defaults); fed back, those values make a layout that checks and runs the same."""
    from planner.frameworks import FRAMEWORKS
    from planner.specs.layout import settings_used

    if zero not in FRAMEWORKS[framework].zero_stages:
        pytest.skip(f"{framework} has no ZeRO-{zero}")
    model = PRESETS["llama2-7b"]
    dtype = "fp16" if framework == "deepspeed-v0.3" else "bf16"
    layout = Layout(tp=2, dp=4, zero=zero, global_batch=8, recompute="full", framework=framework, dtype=dtype)
    used = settings_used(layout)
    for name in ("flash_attention", "tp_comm_overlap", "dp_comm_overlap", "partition_activations"):
        assert isinstance(used[name], bool), name
    again = Layout(**used)
    check_layout(model, again, gpus=8)
    assert settings_used(again) == used
    first, second = (single_batch(model, x) for x in (layout, again))
    for column in ("flash_attention", "tp_comm_overlap", "dp_comm_overlap", "partition_activations"):
        np.testing.assert_array_equal(getattr(first, column), getattr(second, column))
