"""MoE and MLA model specs: parameter counts against the published totals, breakdowns, FLOPs."""

import numpy as np
import pytest

from planner.errors import PlannerInputError
from planner.specs.model import PRESETS, make_model, model_training_flops, param_breakdown

# (preset, published total, published active, how the publisher states them). Each publisher prints a
# few digits: a count is exact to the published figure when it prints as that figure the publisher's way.
#  Mixtral 8x7B: "46.7B total, 12.9B active" (Mistral AI, Mixtral of experts blog and Jiang et al. 2024):
#    rounded to 0.1B (12.88B prints 12.9B).
#  DeepSeek-V3: "671B total, 37B activated" (arXiv:2412.19437 abstract): whole billions, truncated
#    (37.55B counted with both embedding tables prints 37B; rounded it would be 38B).
#  Qwen3-30B-A3B: "30.5B total, 3.3B activated, 29.9B non-embedding" (Qwen/Qwen3-30B-A3B model card):
#    0.1B, truncated (3.353B prints 3.3B).
PUBLISHED = [
    ("mixtral-8x7b", 46.7e9, 12.9e9, 0.1e9, "round"),
    ("deepseek-v3", 671e9, 37e9, 1e9, "truncate"),
    ("qwen3-30b-a3b", 30.5e9, 3.3e9, 0.1e9, "truncate"),
]


def _printed(value, unit, how):
    steps = value / unit
    return (np.floor(steps) if how == "truncate" else np.round(steps)) * unit


@pytest.mark.parametrize("name, total, active, unit, how", PUBLISHED)
def test_total_and_active_parameters_match_published(name, total, active, unit, how):
    model = PRESETS[name]
    assert _printed(model.total_params, unit, how) == pytest.approx(total)
    assert _printed(model.total_active_params, unit, how) == pytest.approx(active)


def test_qwen3_non_embedding_params_match_model_card():
    assert _printed(PRESETS["qwen3-30b-a3b"].non_embedding_params, 0.1e9, "truncate") == pytest.approx(29.9e9)


def test_deepseek_v3_count_by_hand():
    """From config.json: MLA attention, 3 dense layers, 58 MoE layers of 256 + 1 experts, untied vocab."""
    h, H = 7168, 128
    attention = (h * 1536 + 1536 + 1536 * H * 192) + (h * 576 + 512 + 512 * H * 256) + H * 128 * h
    assert attention == 187_107_328
    expert = 3 * h * 2048
    dense_layer = attention + 3 * h * 18432 + 2 * h
    moe_layer = attention + 257 * expert + 256 * h + 256 + 2 * h
    total = 3 * dense_layer + 58 * moe_layer + 2 * 129280 * h + h
    assert PRESETS["deepseek-v3"].total_params == total == 671_026_419_200
    assert PRESETS["deepseek-v3"].moe_layers == 58


def test_mixtral_active_count_by_hand():
    h = 4096
    layer = h * (h + 2 * 1024) + h * h + 2 * 3 * h * 14336 + 8 * h + 2 * h
    assert PRESETS["mixtral-8x7b"].total_active_params == 32 * layer + 2 * 32000 * h + h


@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-v3", "qwen3-30b-a3b"])
def test_breakdowns_sum_and_active_le_total(name):
    model = PRESETS[name]
    for active in (False, True):
        parts = param_breakdown(model, active=active)
        total = parts.pop("total")
        assert sum(parts.values()) == total
    assert model.total_active_params < model.total_params


def test_active_training_flops_count_top_k_experts():
    """Experts' FLOPs are 6 x the active routed expert weights per token (Megatron's count)."""
    model = PRESETS["deepseek-v3"]
    flops = model_training_flops(model, 1.0)
    active = param_breakdown(model, active=True)
    assert flops["experts"] == pytest.approx(6.0 * active["experts"])
    assert flops["router"] == pytest.approx(6.0 * 58 * 256 * 7168)
    # Dense part: the 3 dense MLPs and 58 shared experts.
    assert flops["mlp"] == pytest.approx(6.0 * active["mlp"])
    # Non-attention-core FLOPs are about 6 x active parameters (embedding lookup excluded).
    linear = flops["total"] - flops["attention_core"] - flops["mtp"]
    assert linear == pytest.approx(6.0 * (model.total_active_params - 129280 * 7168), rel=1e-3)


def test_deepseek_v3_mtp_module():
    """One MTP module (num_nextn_predict_layers 1): an MoE block, eh_proj (2h x h) and enorm, hnorm and the
    head's norm; with the embedding and head copies the checkpoint stores for it, 671.0B + 13.5B = 684.5B
    (DeepSeek-V3 README: "685B ... 671B of the Main Model weights and 14B of the MTP Module weights")."""
    model = PRESETS["deepseek-v3"]
    h = 7168
    block = 187_107_328 + 257 * 3 * h * 2048 + 256 * h + 256 + 2 * h
    assert model.mtp_params == block + 2 * h * h + 3 * h
    assert round((model.total_params + model.mtp_params + 2 * 129280 * h) / 1e9, 1) == 684.5
    flops = model_training_flops(model, 1.0)
    assert flops["total"] == pytest.approx(sum(v for k, v in flops.items() if k != "total"))
    # About one more MoE layer and one more output head per token.
    assert flops["mtp"] == pytest.approx(flops["experts"] / 58 + flops["logits"] + flops["attention_linear"] / 61
                                         + flops["attention_core"] / 61 + 6 * (3 * h * 2048 + 256 * h + 2 * h * h), rel=1e-6)


def test_flops_vectorise_over_arrays():
    model = PRESETS["mixtral-8x7b"]
    tokens = np.array([1.0, 2.0, 4.0])
    assert np.allclose(model_training_flops(model, tokens)["total"], model_training_flops(model, 1.0)["total"] * tokens)


@pytest.mark.parametrize("fields, key", [
    (dict(moe_experts=8, moe_top_k=9), "moe_top_k"),
    (dict(moe_top_k=2), "moe_top_k"),
    (dict(attention="mla"), "mla"),
    (dict(kv_lora_rank=512), "mla"),
    (dict(moe_experts=8, moe_top_k=2, moe_first_dense=4), "moe_first_dense"),
])
def test_bad_moe_specs_are_one_line_errors(fields, key):
    with pytest.raises(PlannerInputError) as error:
        make_model("model", layers=4, hidden=256, heads=4, vocab=1000, seq_len=128, **fields)
    assert key in str(error.value) and "\n" not in str(error.value)


def test_moe_layer_frequency():
    model = make_model(layers=12, hidden=256, heads=4, vocab=1000, seq_len=128, moe_experts=4, moe_top_k=1,
                       moe_layer_freq=2, moe_first_dense=1)
    assert model.moe_layers == len([i for i in range(1, 12) if (i - 1) % 2 == 0]) == 6


def test_moe_family_keeps_active_flops_across_granularity():
    """Krajewski et al. 2024: granularity G splits experts G ways and routes to G x top-k: same active FLOPs."""
    from planner.specs.model import family_model, family_moe_model

    coarse = family_moe_model(16, experts=8, top_k=2)
    fine = family_moe_model(16, experts=8, top_k=2, granularity=4)
    assert fine.moe_experts == 32 and fine.moe_top_k == 8 and fine.moe_ffn * 4 == coarse.moe_ffn
    assert fine.total_params == pytest.approx(coarse.total_params, rel=1e-3)  # routers grow with the experts
    assert model_training_flops(fine, 1.0)["experts"] == pytest.approx(model_training_flops(coarse, 1.0)["experts"])
    dense = family_model(16)
    one = family_moe_model(16, experts=1)
    assert one.total_params == dense.total_params + 16 * dense.hidden
    with pytest.raises(PlannerInputError):
        family_moe_model(16, experts=2, top_k=3)
