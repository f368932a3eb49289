"""Sliding-window attention (ModelSpec.attention_window): model FLOPs, attention time, MFU, CLI surface.

Hand calculation used below (model.attended_keys): a query at position x attends min(w, x) keys, so the mean
over a sequence of s is w - w²/(2s) for w < s and s/2 (the causal half) otherwise. For s = 4096, w = 1024:
1024 - 1024²/8192 = 896 keys, against 2048 for full causal attention.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from planner.cli import main
from planner.cost.estimate import simulate
from planner.errors import PlannerInputError
from planner.specs.clusters import load_cluster
from planner.specs.layout import make_layout
from planner.specs.model import attended_keys, make_model, model_training_flops, preset

LLAMA = preset("llama2-7b")  # 32 layers, hidden 4096, seq 4096


def windowed(window, base=LLAMA):
    return make_model(**{**base.model_dump(), "attention_window": window})


def test_attended_keys_hand_calculation():
    assert float(attended_keys(4096, 1024)) == 896.0
    assert float(attended_keys(4096, None)) == 2048.0
    assert float(attended_keys(4096, 4096)) == 2048.0  # a window covering the sequence is full causal
    assert float(attended_keys(4096, 10**6)) == 2048.0
    assert float(attended_keys(4096, np.inf)) == 2048.0


def test_attended_keys_against_a_counted_mask():
    """The continuous mean is the counted mask's less w/(2s), as the causal s/2 is (s+1)/2 less 1/2."""
    s, w = 512, 64
    i, j = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    counted = ((j <= i) & (i - j < w)).sum() / s
    assert counted - float(attended_keys(s, w)) == pytest.approx(w / (2 * s), abs=1e-12)


def test_model_flops_fall_by_the_skipped_keys():
    tokens = 4096.0
    full = model_training_flops(LLAMA, tokens, causal=True)
    swa = model_training_flops(windowed(1024), tokens, causal=True)
    # 3 passes x tokens x layers x 4 x h x (2048 - 896) keys fewer.
    assert full["total"] - swa["total"] == pytest.approx(3 * tokens * 32 * 4 * 4096 * (2048 - 896), rel=1e-12)
    assert swa["attention_core"] / full["attention_core"] == pytest.approx(896 / 2048, rel=1e-12)
    # Megatron-LM's logged (full-square) count ignores the window.
    assert model_training_flops(windowed(1024), tokens)["total"] == model_training_flops(LLAMA, tokens)["total"]


@pytest.fixture(scope="module")
def h100():
    return load_cluster("dgx-h100")


def test_a_window_covering_the_sequence_changes_nothing(h100):
    layout = make_layout(tp=2, dp=4, global_batch=32, framework="megatron")
    full, covering = simulate(LLAMA, layout, h100), simulate(windowed(4096), layout, h100)
    for key in ("step_time_s", "mfu", "hfu", "model_flops_per_step"):
        assert covering[key] == full[key]


def test_a_short_window_shortens_attention(h100):
    layout = make_layout(tp=2, dp=4, global_batch=32, framework="megatron")
    full, swa = simulate(LLAMA, layout, h100), simulate(windowed(1024), layout, h100)
    assert swa["step_time_s"] < full["step_time_s"]
    assert swa["model_flops_per_step"] < full["model_flops_per_step"]
    # The attention core is in forward/backward: the drop is at most the core's share of the full time.
    assert full["time"]["forward"] - swa["time"]["forward"] > 0
    assert swa["mfu"] <= swa["hfu"] <= 1.0


def test_unfused_attention_computes_the_whole_square(h100):
    """Without a fused kernel the masked square is still computed: same time and HFU, MFU lower by the
    model FLOPs the window removes."""
    layout = make_layout(tp=2, dp=4, global_batch=32, framework="megatron", flash_attention=False)
    full, swa = simulate(LLAMA, layout, h100), simulate(windowed(1024), layout, h100)
    assert swa["step_time_s"] == pytest.approx(full["step_time_s"], rel=1e-12)
    assert swa["hfu"] == pytest.approx(full["hfu"], rel=1e-12)
    ratio = swa["model_flops_per_step"] / full["model_flops_per_step"]
    assert ratio < 1.0
    assert swa["mfu"] == pytest.approx(full["mfu"] * ratio, rel=1e-12)


def test_bad_window_is_one_line_input_error():
    with pytest.raises(PlannerInputError, match="attention_window"):
        windowed(0)


def test_simulate_flag_and_config_key(capsys, tmp_path):
    base = ["simulate", "--model", "llama2-7b", "--tp", "2", "--dp", "4", "--json"]
    assert main(base) == 0
    full = json.loads(capsys.readouterr().out)
    assert main(base + ["--attention-window", "1024"]) == 0
    swa = json.loads(capsys.readouterr().out)
    assert swa["model"]["attention_window"] == 1024
    assert swa["step_time_s"] < full["step_time_s"]
    config = tmp_path / "run.yaml"
    config.write_text("attention_window: 1024\n")
    assert main(base + ["--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["step_time_s"] == swa["step_time_s"]
    config.write_text("attention_window: 0\n")
    assert main(base + ["--config", str(config)]) == 2
    assert "attention_window" in capsys.readouterr().err


def test_a_mixed_batch_scores_each_model_as_alone(h100):
    """Windowed and full-attention models (an MLA MoE among them) in one vectorised batch: each row is what the
    scalar path gives it (the window column is inf for the full-attention rows)."""
    from planner.cost.step_time import step_time
    from planner.specs.candidate_batch import layouts_batch, single_batch

    deepseek = preset("deepseek-v3").model_copy(update={"layers": 8, "moe_first_dense": 1, "mtp_layers": 0})
    models = [LLAMA, windowed(1024), windowed(512, deepseek), deepseek]
    layouts = [make_layout(tp=2, dp=4, global_batch=32, framework="megatron", cp=c) for c in (1, 2, 1, 1)]
    layouts[2:] = [make_layout(tp=8, ep=8, dp=8, global_batch=64, framework="megatron")] * 2
    batch = step_time(layouts_batch(models, layouts), h100)
    for i, (model, layout) in enumerate(zip(models, layouts)):
        alone = step_time(single_batch(model, layout), h100)
        assert batch["step_time_s"][i] == pytest.approx(alone["step_time_s"][0], rel=1e-12)
        assert batch["mfu"][i] == pytest.approx(alone["mfu"][0], rel=1e-12)
    assert batch["step_time_s"][2] < batch["step_time_s"][3]
