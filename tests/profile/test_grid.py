"""Profiling grids: expansion, deterministic ids, invalid combinations, YAML validation, flag overrides."""

import pytest

from planner.errors import PlannerInputError
from planner.profile import grid as grids


def fp32(dtype):
    return "fp32" if dtype == "auto" else dtype


def test_ci_grid_is_zero_0_and_3_on_two_ranks():
    grid_file, _ = grids.load_grid_file("ci")
    expanded = grids.expand(grid_file, fp32)
    assert [(c.world_size, c.zero, c.dtype) for c in expanded.configs] == [(2, 0, "fp32"), (2, 3, "fp32")]
    assert expanded.configs[0].config_id == "L2-h64-a4-f256-s32-v512-w2-z0-mb2-ga1-fp32"


def test_default_grid_spans_the_sweep_axes():
    expanded = grids.expand(grids.load_grid_file("default")[0], fp32)
    configs = expanded.configs
    assert 30 <= len(configs) <= 60
    assert {c.world_size for c in configs} == {1, 2}
    assert {c.zero for c in configs} == {0, 1, 2, 3}
    assert {c.offload for c in configs} >= {"none", "optimizer"}
    assert len({(c.layers, c.hidden) for c in configs}) >= 3
    assert {c.micro_batch for c in configs} == {1, 2, 4}
    assert len({c.config_id for c in configs}) == len(configs)


def test_offload_without_zero_is_dropped_with_a_reason():
    data = {"grids": [{"models": [{"layers": 1, "hidden": 64, "heads": 2, "seq_len": 16, "vocab": 128}],
                       "zero": [0, 2], "offload": ["none", "optimizer", "optimizer+params"]}]}
    expanded = grids.expand(grids.parse_grid(data, "test"), fp32)
    assert [(c.zero, c.offload) for c in expanded.configs] == [(0, "none"), (2, "none"), (2, "optimizer")]
    assert any("offload needs ZeRO stage >= 1" in reason for reason in expanded.dropped)
    assert any("parameter offload needs ZeRO stage 3" in reason for reason in expanded.dropped)


def test_grid_file_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("grids:\n  - models: [{layers: 1, hidden: 64, heads: 2, seq_len: 16, vocab: 128}]\n    zeros: [1]\n")
    with pytest.raises(PlannerInputError, match=r"g\.yaml: unknown key 'grids\.0\.zeros'"):
        grids.load_grid_file(str(path))


def test_heads_must_divide_hidden_and_error_shows_arithmetic(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("grids:\n  - models: [{layers: 1, hidden: 100, heads: 3, seq_len: 16, vocab: 128}]\n")
    with pytest.raises(PlannerInputError, match=r"hidden\(100\) % heads\(3\) = 1 != 0"):
        grids.load_grid_file(str(path))


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("grids:\n  - models: [\n")
    with pytest.raises(PlannerInputError, match=r"g\.yaml:\d+: invalid YAML"):
        grids.load_grid_file(str(path))


def test_unknown_grid_name_lists_builtins():
    with pytest.raises(PlannerInputError, match="ci, default"):
        grids.load_grid_file("no-such-grid")


def test_flag_overrides_replace_axes_and_models():
    grid_file, _ = grids.load_grid_file("ci")
    changed = grids.override_axes(grid_file, {"world_size": [1], "zero": [1], "hidden": [128, 256], "layers": None}, "t")
    configs = grids.expand(changed, fp32).configs
    assert [(c.world_size, c.zero, c.hidden, c.heads, c.ffn, c.layers) for c in configs] == [
        (1, 1, 128, 2, 512, 2), (1, 1, 256, 4, 1024, 2)]


def test_global_batch_is_micro_times_accum_times_world():
    config = grids.ProfileConfig(layers=1, hidden=64, heads=2, ffn=256, seq_len=16, vocab=128, world_size=2,
                                 zero=0, offload="none", micro_batch=3, grad_accum=4, dtype="fp32")
    assert config.global_batch == 24
