"""The fixed-model CLI on MoE presets: the plan names its expert layout; --emit writes it for Megatron-LM and
refuses the stacks whose launch files would drop the experts."""

import json

from planner.cli import main


def test_fixed_model_plan_shows_active_params_and_expert_layout(cli):
    code, out, _ = cli(["optimize", "--model", "qwen3-30b-a3b", "--gpus", 8, "--cluster", "dgx-h100",
                        "--tokens", "100B", "--framework", "megatron"])
    assert code == 0
    assert "3.35B active (128 experts top-8 in 48 layers)" in out
    layout_line = next(line for line in out.splitlines() if line.strip().startswith("layout"))
    assert " ep" in layout_line


def test_emit_writes_the_expert_layout_the_plan_chose(cli, tmp_path):
    argv = ["optimize", "--model", "qwen3-30b-a3b", "--gpus", 8, "--cluster", "dgx-h100", "--tokens", "100B",
            "--framework", "megatron"]
    code, out, _ = cli([*argv, "--json"])
    assert code == 0
    ep = json.loads(out)["chosen"]["best"]["ep"]
    code, _, err = cli([*argv, "--emit", tmp_path / "launch"])
    assert code == 0, err
    arguments = (tmp_path / "launch" / "megatron_args.txt").read_text().splitlines()
    assert f"--expert-model-parallel-size {ep}" in arguments
    assert "--num-experts 128" in arguments and "--moe-router-topk 8" in arguments


def test_emit_for_moe_on_a_dense_only_launcher_is_a_one_line_error(cli, tmp_path):
    code, _, err = cli(["simulate", "--model", "mixtral-8x7b", "--gpus", "8", "--ep", "8", "--framework", "fsdp",
                        "--zero", "3", "--emit", tmp_path / "x"])
    assert code == 2 and "mixture of experts" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    code, _, err = cli(["simulate", "--model", "mixtral-8x7b", "--gpus", "8", "--ep", "8", "--framework", "megatron",
                        "--emit-deepspeed", tmp_path / "y"])
    assert code == 2 and "--emit-deepspeed" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "y").exists()


def test_load_imbalance_slows_the_plan_and_is_refused_for_dense(cli):
    runs = {}
    for extra in ([], ["--moe-load-imbalance", "1.5"]):
        code, out, _ = cli(["optimize", "--model", "qwen3-30b-a3b", "--gpus", 8, "--cluster", "dgx-h100",
                            "--tokens", "100B", "--framework", "megatron", "--global-batch", 256, "--json", *extra])
        assert code == 0
        runs[bool(extra)] = json.loads(out)
    slow, fast = runs[True], runs[False]
    assert slow["assumptions"]["moe_load_imbalance"] == 1.5
    assert slow["chosen"]["gpu_hours"] > fast["chosen"]["gpu_hours"]
    code, _, err = cli(["optimize", "--model", "llama3-8b", "--gpus", 8, "--cluster", "dgx-h100", "--tokens", "100B",
                        "--moe-load-imbalance", "1.5"])
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


def test_simulate_and_optimize_headers_name_the_shared_experts(cli):
    """DeepSeek-V3 has one always-on shared expert beside its 256 routed ones (config.json n_shared_experts 1):
    both headers say so, in the same words; a model without shared experts says nothing of them."""
    args = ["--model", "deepseek-v3", "--cluster", "h800-deepseek", "--gpus", 2048]
    code, simulated, _ = cli(["simulate", *args, "--pp", 16, "--ep", 64, "--zero", 1, "--global-batch", 15360,
                                 "--dtype", "fp8", "--recompute", "selective"])
    assert code == 0
    # 256 GPUs: the header is the model's, and the search there is 5 s rather than 40 at 2,048
    code, planned, _ = cli(["optimize", *args[:-1], 256, "--tokens", "100B", "--framework", "megatron",
                            "--global-batch", 2048])
    assert code == 0
    for out in (simulated, planned):
        assert "256 experts top-8 + 1 shared in 58 layers" in out.splitlines()[0]
    code, out, _ = cli(["simulate", "--model", "qwen3-30b-a3b", "--gpus", 64, "--ep", 8, "--zero", 1])
    assert code == 0 and "128 experts top-8 in 48 layers" in out.splitlines()[0] and "shared" not in out


def test_simulate_takes_node_limited_dispatch(cli):
    """--moe-node-dispatch 1 on Megatron (its flex dispatcher on DeepEP) crosses to each node once: DeepSeek-V3 at ep
    64 over 8 nodes exposes less all-to-all than the alltoall dispatcher's one copy per routed expert."""
    argv = ["simulate", "--model", "deepseek-v3", "--cluster", "h800-deepseek", "--gpus", 1024, "--pp", 16,
            "--dp", 64, "--ep", 64, "--dtype", "fp8", "--framework", "megatron", "--global-batch", 1024, "--json"]
    seconds = {}
    for flag in (0, 1):
        code, out, err = cli([*argv, "--moe-node-dispatch", flag])
        assert code in (0, 1), err
        seconds[flag] = json.loads(out)["time"]["ep_comm"]
    assert seconds[1] < seconds[0]
    code, out, _ = cli([*argv[:-1], "--moe-node-dispatch", 1])
    assert " node-dispatch" in next(line for line in out.splitlines() if line.startswith("layout"))
