"""The fixed-model CLI on MoE presets: the plan names its expert layout; --emit refuses rather than dropping it."""

from planner.cli import main


def _optimize(capsys, *argv):
    try:
        code = main(["optimize", *map(str, argv)])
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fixed_model_plan_shows_active_params_and_expert_layout(capsys):
    code, out, _ = _optimize(capsys, "--model", "qwen3-30b-a3b", "--gpus", 8, "--cluster", "dgx-h100",
                             "--tokens", "100B", "--framework", "megatron")
    assert code == 0
    assert "3.35B active (128 experts top-8 in 48 layers)" in out
    layout_line = next(line for line in out.splitlines() if line.strip().startswith("layout"))
    assert " ep" in layout_line


def test_emit_for_moe_is_a_one_line_error(capsys, tmp_path):
    code, _, err = _optimize(capsys, "--model", "qwen3-30b-a3b", "--gpus", 8, "--cluster", "dgx-h100",
                             "--tokens", "100B", "--framework", "megatron", "--emit", tmp_path / "launch")
    assert code == 2
    assert "mixture-of-experts" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "launch").exists()


def test_load_imbalance_slows_the_plan_and_is_refused_for_dense(capsys):
    import json

    runs = {}
    for extra in ([], ["--moe-load-imbalance", "1.5"]):
        code, out, _ = _optimize(capsys, "--model", "qwen3-30b-a3b", "--gpus", 8, "--cluster", "dgx-h100",
                                 "--tokens", "100B", "--framework", "megatron", "--global-batch", 256, "--json", *extra)
        assert code == 0
        runs[bool(extra)] = json.loads(out)
    slow, fast = runs[True], runs[False]
    assert slow["assumptions"]["moe_load_imbalance"] == 1.5
    assert slow["chosen"]["gpu_hours"] > fast["chosen"]["gpu_hours"]
    code, _, err = _optimize(capsys, "--model", "llama3-8b", "--gpus", 8, "--cluster", "dgx-h100", "--tokens", "100B",
                             "--moe-load-imbalance", "1.5")
    assert code == 2 and "dense" in err
