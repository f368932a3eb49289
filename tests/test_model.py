"""Model shapes: exact parameter counts against published (Hugging Face) totals, and FLOPs against
Megatron-LM's closed forms (REFERENCE.md "FLOPs")."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.errors import PlannerInputError
from planner.specs.model import (PRESETS, ModelSpec, family_model, make_model, model_flops_per_step, param_breakdown,
                           preset, swiglu_ffn)

# Exact totals as reported by Hugging Face transformers (`sum(p.numel() for p in model.parameters())`, tied
# weights counted once) for the published checkpoints.
PUBLISHED_PARAMS = {
    "gpt2-small": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "llama2-7b": 6_738_415_616,
    "llama2-13b": 13_015_864_320,
    "llama2-70b": 68_976_648_192,
    "llama3-8b": 8_030_261_248,
    "llama3-70b": 70_553_706_496,
    "llama3-405b": 405_853_388_800,
    "bloom-176b": 176_247_271_424,
}


@pytest.mark.parametrize("name, expected", sorted(PUBLISHED_PARAMS.items()))
def test_parameter_count_matches_published_total(name, expected):
    assert PRESETS[name].total_params == expected


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_breakdown_parts_sum_to_total(name):
    parts = param_breakdown(PRESETS[name])
    total = parts.pop("total")
    assert sum(parts.values()) == total
    assert all(value >= 0 for value in parts.values())


def test_gpt2_small_breakdown_by_hand():
    """GPT-2 small, counted by hand from the architecture (tied head, learned positions, biases everywhere)."""
    L, h, V, P = 12, 768, 50257, 1024
    parts = PRESETS["gpt2-small"].params()
    assert parts["embedding"] == V * h
    assert parts["position"] == P * h
    assert parts["attention"] == L * (h * 3 * h + 3 * h + h * h + h)
    assert parts["mlp"] == L * (2 * 4 * h * h + 4 * h + h)
    assert parts["norms"] == (2 * L + 1) * 2 * h
    assert parts["logits"] == 0  # tied to the embedding


def test_llama2_70b_gqa_attention_by_hand():
    """Llama-2 70B: 8 kv heads of 128 -> K and V projections are h x 1024 each; no biases; untied head."""
    L, h, f, V = 80, 8192, 28672, 32000
    parts = PRESETS["llama2-70b"].params()
    assert parts["attention"] == L * (h * h + 2 * h * 8 * 128 + h * h)
    assert parts["mlp"] == L * 3 * h * f
    assert parts["norms"] == (2 * L + 1) * h
    assert parts["logits"] == parts["embedding"] == V * h


def test_non_embedding_params_exclude_embeddings_and_head():
    model = PRESETS["llama2-7b"]
    assert model.non_embedding_params == model.total_params - 2 * 32000 * 4096


@pytest.mark.parametrize("hidden, published_ffn", [(4096, 11008), (5120, 13824)])
def test_swiglu_ffn_rounding_matches_llama2(hidden, published_ffn):
    assert swiglu_ffn(hidden) == published_ffn


# ---------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------

def megatron_gelu_flops(B, s, L, h, V):
    """Megatron-LM closed form for g = a, f = 4h, GELU (REFERENCE.md)."""
    return 72 * B * s * L * h**2 * (1 + s / (6 * h) + V / (12 * L * h))


def megatron_general_flops(B, s, L, h, a, g, f, k, V):
    """Megatron-LM `num_floating_point_operations` (REFERENCE.md), k = 1 (2-matrix MLP) or 1.5 (SwiGLU)."""
    return 12 * B * s * L * h**2 * ((1 + g / a + s / h) + (f / h) * k + V / (2 * L * h))


@pytest.mark.parametrize("name", ["gpt2-small", "gpt3-175b", "megatron-1t", "megatron-530b", "mpt-7b"])
@pytest.mark.parametrize("global_batch", [1, 512, 1536])
def test_flops_match_megatron_gelu_formula(name, global_batch):
    m = PRESETS[name]
    assert m.mlp == "gelu" and m.kv == m.heads and m.ffn_size == 4 * m.hidden
    expected = megatron_gelu_flops(global_batch, m.seq_len, m.layers, m.hidden, m.vocab)
    assert model_flops_per_step(m, global_batch)["total"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["llama2-7b", "llama2-70b", "llama3-8b", "llama3-405b", "gpt3-13b"])
def test_flops_match_megatron_general_formula(name):
    m = PRESETS[name]
    k = 1.5 if m.mlp == "swiglu" else 1.0
    expected = megatron_general_flops(1024, m.seq_len, m.layers, m.hidden, m.heads, m.kv, m.ffn_size, k, m.vocab)
    assert model_flops_per_step(m, 1024)["total"] == pytest.approx(expected, rel=1e-12)


def test_flops_general_formula_for_gqa_gelu_shape():
    m = make_model(layers=6, hidden=1024, heads=16, kv_heads=4, ffn=3000, mlp="gelu", vocab=7777, seq_len=512)
    expected = megatron_general_flops(8, 512, 6, 1024, 16, 4, 3000, 1.0, 7777)
    assert model_flops_per_step(m, 8)["total"] == pytest.approx(expected, rel=1e-12)


def test_flops_breakdown_parts_sum_to_total():
    parts = model_flops_per_step(PRESETS["llama3-70b"], 16)
    total = parts.pop("total")
    assert sum(parts.values()) == pytest.approx(total, rel=1e-15)


def test_flops_approach_six_n_d_when_attention_is_small():
    """Kaplan's C = 6·N·D: with s << h and a small vocabulary the count is within a few percent."""
    m = make_model(layers=48, hidden=8192, heads=64, mlp="gelu", vocab=1024, seq_len=256)
    tokens = 64 * 256
    ratio = model_flops_per_step(m, 64)["total"] / (6 * m.total_params * tokens)
    assert 1.0 < ratio < 1.02


# ---------------------------------------------------------------------------------------------
# Model family (one size dial) and validation
# ---------------------------------------------------------------------------------------------

@given(depth=st.integers(1, 120), aspect=st.sampled_from([32, 64, 96, 128, 160]), gqa=st.sampled_from([1, 2, 4, 8]))
@settings(max_examples=60, deadline=None)
def test_family_width_is_depth_times_aspect_in_whole_128_wide_heads(depth, aspect, gqa):
    """Width = depth x aspect ratio, rounded to whole 128-wide heads (whole groups of 8 heads from 2048 up)."""
    m = family_model(depth, aspect_ratio=aspect, gqa_group=gqa)
    width = depth * aspect
    step = 1024 if width >= 2048 else 128
    assert m.layers == depth
    assert m.hidden % step == 0 and m.hidden // m.heads == 128
    assert abs(m.hidden - width) <= step / 2 or m.hidden == 128
    assert m.heads % m.kv == 0 and m.kv <= m.heads
    assert m.ffn_size == swiglu_ffn(m.hidden)


@pytest.mark.parametrize("aspect", [64, 128])
def test_family_params_increase_with_depth(aspect):
    counts = [family_model(d, aspect_ratio=aspect).total_params for d in range(1, 81)]
    assert all(b > a for a, b in zip(counts, counts[1:]))


@pytest.mark.parametrize(
    "fields, fragment",
    [
        (dict(layers=2, hidden=100, heads=3, vocab=10, seq_len=8), "divisible by heads"),
        (dict(layers=2, hidden=128, heads=8, kv_heads=3, vocab=10, seq_len=8), "divisible by kv_heads"),
        (dict(layers=0, hidden=128, heads=8, vocab=10, seq_len=8), "layers"),
        (dict(layers=2, hidden=-128, heads=8, vocab=10, seq_len=8), "hidden"),
        (dict(layers=2, hidden=128, heads=8, vocab=10, seq_len=8, mlp="relu"), "mlp"),
        (dict(layers=2, hidden=128, heads=8, vocab=10, seq_len=8, depth=3), "depth"),
        (dict(layers=2, hidden=128, heads=8, vocab=10), "seq_len"),
    ],
)
def test_bad_model_shapes_are_one_line_input_errors(fields, fragment):
    with pytest.raises(PlannerInputError) as error:
        make_model("model", **fields)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(PlannerInputError, match="unknown preset 'llama9'.*llama2-7b"):
        preset("llama9")


def test_model_spec_is_frozen():
    with pytest.raises(Exception):
        PRESETS["gpt2-small"].layers = 3  # type: ignore[misc]
    assert isinstance(PRESETS["gpt2-small"], ModelSpec)


@pytest.mark.parametrize("name, published", [("mpt-125m", 125_311_488), ("mpt-1b", 1_315_950_592),
                                             ("mpt-13b", 12_853_954_560), ("mpt-70b", 64_862_437_376)])
def test_mpt_presets_are_the_benchmarked_shapes(name, published):
    """llm-foundry scripts/train/benchmarking/README.md, NumParams at SeqLen 2048: learned positions and biases (its
    yamls leave MPTConfig's learned_pos_emb=True, no_bias=False); the presets had ALiBi and no biases."""
    assert PRESETS[name].total_params == published
