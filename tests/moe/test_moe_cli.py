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


def test_simulate_takes_the_expert_layout(capsys):
    code = main(["simulate", "--model", "mixtral-8x7b", "--cluster", "dgx-h100", "--gpus", "64", "--pp", "4", "--ep", "8",
                 "--global-batch", "256", "--recompute", "full", "--framework", "megatron", "--zero", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "12.9B active" in out and "ep=8 etp=1 edp=2" in out and "moe_experts" in out


def test_simulate_config_file_moe_keys(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: deepseek-v3\ncluster: h800-deepseek\ntp: 1\npp: 16\ndp: 128\nep: 64\nmicro_batch: 1\n"
                      "global_batch: 15360\nzero: 1\ndtype: fp8\nmoe_a2a_overlap: dualpipe\nmoe_load_imbalance: 1.1\n")
    code = main(["simulate", "--config", str(config), "--json"])
    out = capsys.readouterr().out
    assert code == 0 and "a2a_sm_share" in out
    config.write_text("model: deepseek-v3\nmoe_load_imbalance: fast\n")
    try:
        code = main(["simulate", "--config", str(config)])
    except SystemExit as stop:
        code = stop.code
    assert code == 2 and "moe_load_imbalance" in capsys.readouterr().err


def test_simulate_emit_for_moe_is_a_one_line_error(capsys, tmp_path):
    try:
        code = main(["simulate", "--model", "mixtral-8x7b", "--gpus", "8", "--ep", "8", "--emit", str(tmp_path / "x")])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and "mixture-of-experts" in err and not (tmp_path / "x").exists()
