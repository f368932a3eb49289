"""`planner simulate`: results as text and JSON, infeasible layouts as results, bad input as one-line errors (exit 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from planner.cost.estimate import simulate
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import PRESETS

GPT2 = ["--model", "gpt2-small"]


def _assert_one_line_error(code, out, err, fragment: str):
    assert code == 2, (out, err)
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert fragment in err, err


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

def test_json_output_matches_the_library(cli):
    code, out, err = cli(["simulate", "--cluster", "dgx-a100-80gb", "--model", "llama2-7b", "--tp", "2", "--dp", "4", "--zero", "1",
                          "--micro-batch", "2", "--global-batch", "64", "--json"])
    assert code == 0 and err == ""
    result = json.loads(out)
    expected = simulate(PRESETS["llama2-7b"], Layout(tp=2, dp=4, zero=1, micro_batch=2, global_batch=64),
                        load_cluster("dgx-a100-80gb"))
    assert result["step_time_s"] == pytest.approx(expected["step_time_s"], rel=1e-12)
    assert result["memory"]["total_bytes"] == pytest.approx(expected["memory"]["total_bytes"], rel=1e-12)
    assert result["gpus"] == 8 and result["params"] == 6_738_415_616 and result["cluster"] == "dgx-a100-80gb"
    assert result["layout"]["tp"] == 2 and result["layout"]["dp"] == 4


def test_text_output_names_the_parts(cli):
    code, out, _ = cli(["simulate", *GPT2, "--dp", "8", "--micro-batch", "4", "--global-batch", "64"])
    assert code == 0
    for fragment in ("step time", "MFU", "forward", "backward", "weights", "optimizer", "fits: yes"):
        assert fragment in out


def test_layout_that_does_not_fit_is_a_result_not_an_error(cli):
    """Not an error (nothing on stderr, the full result printed), but a negative answer: exit 1."""
    code, out, err = cli(["simulate", "--model", "gpt3-175b", "--json"])
    assert code == 1 and err == ""
    result = json.loads(out)
    assert result["fits"] is False
    assert result["memory"]["shortfall_bytes"] > 0
    code, out, _ = cli(["simulate", "--model", "gpt3-175b"])
    assert code == 1 and "fits: NO" in out


def test_offload_beyond_the_host_memory_does_not_fit(cli):
    """HBM holds the 405B shards, the eight GPUs' offloaded states do not fit the node's 2 TB: not a fit (exit 1),
    and the verdict says which tier binds (it printed "fits: yes" with exit 0)."""
    code, out, err = cli(["simulate", "--model", "llama3-405b", "--gpus", "8", "--zero", "3", "--offload",
                          "optimizer+params", "--framework", "deepspeed", "--recompute", "full", "--global-batch", "8"])
    assert code == 1 and err == ""
    assert "fits: NO - fits in HBM, but the offloaded states exceed the node's host memory" in out
    code, out, _ = cli(["simulate", "--model", "llama3-405b", "--gpus", "8", "--zero", "3", "--offload",
                        "optimizer+params", "--framework", "deepspeed", "--recompute", "full", "--global-batch", "8",
                        "--json"])
    memory = json.loads(out)["memory"]
    assert code == 1 and memory["hbm_fits"] and not memory["host_fits"] and not json.loads(out)["fits"]


def test_gpus_sets_dp(cli):
    code, out, _ = cli(["simulate", *GPT2, "--gpus", "16", "--tp", "2", "--json"])
    assert code == 0 and json.loads(out)["layout"]["dp"] == 8


def test_flags_override_config_which_overrides_preset(cli, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: gpt2-small\nlayers: 6\ntp: 2\ndp: 2\nglobal_batch: 8\n", encoding="utf-8")
    code, out, _ = cli(["simulate", "--config", config, "--dp", "4", "--json"])
    assert code == 0
    result = json.loads(out)
    assert result["model"]["layers"] == 6 and result["model"]["hidden"] == 768
    assert result["layout"]["tp"] == 2 and result["layout"]["dp"] == 4


@pytest.mark.parametrize("source", ["flag", "config"])
def test_bias_and_norm_reach_the_model_as_the_runs_csv_columns_do(cli, tmp_path, source):
    """--bias/--norm/--tied-embeddings/--dropout (or the config keys) describe a GPT-3-style custom shape as the runs
    CSV's bias, norm, tied_embeddings and dropout columns do: simulate of a dev row's settings gives validate's prediction for that row, and the model line
    names the norm. Without them a custom shape is Llama-style (no biases, RMSNorm), and ZeRO-3's persistent
    norm/bias tensors (re-gathered after every step by deepspeed-v0.3) differ."""
    from planner.calibrate.validation import predict_runs
    from planner.profile.runs_csv import read_runs

    runs, _ = read_runs(Path(__file__).resolve().parents[2] / "data" / "runs" / "published_runs_dev.csv")
    row = next(run for run in runs if str(run.id) == "13")  # SC21 Table 2: 175B, ZeRO-3 on 1,536 A100s, GPT biases
    assert (row.extra["bias"], row.extra["norm"], row.extra["tied_embeddings"], row.extra["dropout"]) == \
        ("1", "layernorm", "1", "0.1")
    base = ["--cluster", row.cluster, "--gpus", str(row.gpus), "--layers", str(row.layers), "--hidden", str(row.hidden),
            "--heads", str(row.heads), "--ffn", str(row.ffn), "--seq-len", str(row.seq_len), "--vocab", str(row.vocab),
            "--zero", "3", "--micro-batch", str(row.micro_batch), "--global-batch", str(row.global_batch),
            "--recompute", "full", "--dtype", "fp16", "--flash-attention", "0", "--framework", "deepspeed-v0.3",
            "--mlp", "gelu", "--json"]
    if source == "flag":
        argv = [*base, "--bias", "1", "--norm", "layernorm", "--tied-embeddings", "1", "--dropout", "0.1"]
    else:
        config = tmp_path / "gpt.yaml"
        config.write_text("bias: true\nnorm: layernorm\ntied_embeddings: true\ndropout: 0.1\n", encoding="utf-8")
        argv = [*base, "--config", config]
    code, out, _ = cli(["simulate", *argv])
    assert code == 0
    expected = predict_runs([row])[0]
    assert json.loads(out)["step_time_s"] == pytest.approx(expected.predicted["step_time_s"], rel=1e-9)
    code, llama_style, _ = cli(["simulate", *base])
    assert code == 0 and json.loads(llama_style)["step_time_s"] != pytest.approx(expected.predicted["step_time_s"], rel=1e-3)
    code, text, _ = cli(["simulate", *[a for a in argv if a != "--json"]])
    assert code == 0 and " gelu layernorm+bias " in text.splitlines()[0] and " tied " in text.splitlines()[0]
    # Untied, the output layer is 50,257 x 12,288 more parameters for ZeRO-3 to gather and update: slower.
    code, untied, _ = cli(["simulate", *argv, "--tied-embeddings", "0"])
    assert code == 0 and json.loads(untied)["step_time_s"] > json.loads(out)["step_time_s"]


@pytest.mark.parametrize("source", ["flag", "config"])
def test_partition_activations_round_trip(cli, tmp_path, source):
    """--partition-activations 1 (or the config key) reaches the layout, is shown on the layout line, and is priced
    as the library prices it: 1/tp checkpoints and the checkpoint_gather part (DeepSpeed partition_activations)."""
    base = ["--model", "llama2-7b", "--framework", "deepspeed", "--tp", "4", "--dp", "2", "--recompute", "full",
            "--global-batch", "8"]
    if source == "flag":
        argv = [*base, "--partition-activations", "1"]
    else:
        config = tmp_path / "run.yaml"
        config.write_text("partition_activations: true\n", encoding="utf-8")
        argv = [*base, "--config", config]
    code, out, err = cli(["simulate", *argv, "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["layout"]["partition_activations"] is True
    layout = Layout(tp=4, dp=2, recompute="full", global_batch=8, framework="deepspeed", partition_activations=True)
    expected = simulate(PRESETS["llama2-7b"], layout, load_cluster("dgx-h100"))
    assert result["step_time_s"] == pytest.approx(expected["step_time_s"], rel=1e-12)
    assert expected["time"]["checkpoint_gather"] > 0
    assert result["time"]["checkpoint_gather"] == pytest.approx(expected["time"]["checkpoint_gather"], rel=1e-12)
    _, default, _ = cli(["simulate", *base, "--json"])
    assert json.loads(default)["layout"]["partition_activations"] is False  # the stack's default, off, as it runs
    assert "checkpoint_gather" not in json.loads(default)["time"]
    _, text, _ = cli(["simulate", *argv])
    assert "partition_activations=1" in text and "checkpoint_gather" in text


def test_explicit_shape_without_preset(cli):
    code, out, _ = cli(["simulate", "--layers", "4", "--hidden", "256", "--heads", "4", "--kv-heads", "2",
                        "--ffn", "704", "--mlp", "swiglu", "--seq-len", "512", "--vocab", "1000", "--json"])
    assert code == 0
    model = json.loads(out)["model"]
    assert (model["kv_heads"], model["ffn"], model["mlp"]) == (2, 704, "swiglu")


def test_list_models(cli):
    code, out, _ = cli(["simulate", "--list-models"])
    assert code == 0 and "llama2-70b" in out and "gpt2-small" in out


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2 with one line on stderr
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--model", "gpt3-175b", "--gpus", "64", "--tp", "8", "--pp", "4", "--dp", "3", "--global-batch", "24"],
         "tp(8) * pp(4) * dp(3) * cp(1) = 96 != gpus(64)"),
        ([*GPT2, "--tp", "8"], "heads(12) is not divisible by tp(8)"),
        ([*GPT2, "--pp", "4", "--vpp", "4"], "layers(12) < pp(4) * vpp(4) = 16"),
        ([*GPT2, "--framework", "deepspeed", "--pp", "2", "--vpp", "2"], "deepspeed has no interleaved pipeline schedule"),
        ([*GPT2, "--framework", "megatron", "--tp", "2", "--tp-comm-overlap", "1"],
         "megatron overlaps TP communication only with sequence parallelism"),
        ([*GPT2, "--framework", "fsdp", "--zero", "3", "--dp", "2", "--recompute", "full", "--partition-activations", "1"],
         "--partition-activations 1: fsdp has no partitioned activation checkpoints"),
        ([*GPT2, "--framework", "megatron", "--tp", "2", "--seq-parallel", "1", "--recompute", "full",
          "--partition-activations", "1"], "megatron partitions checkpoints only without it"),
        ([*GPT2, "--framework", "deepspeed", "--tp", "2", "--recompute", "selective", "--partition-activations", "1"],
         "needs recompute=full"),
        ([*GPT2, "--dp", "4", "--micro-batch", "3", "--global-batch", "100"],
         "global_batch(100) is not divisible by micro_batch(3) * dp(4) = 12"),
        ([*GPT2, "--cluster", "no-such-cluster"], "unknown cluster 'no-such-cluster'"),
        ([*GPT2, "--cluster", "no-such-dir/spec.yaml"], "cluster spec file no-such-dir/spec.yaml does not exist"),
        (["--model", "llama9"], "unknown preset 'llama9'"),
        ([*GPT2, "--layers", "0"], "argument --layers: expected a whole number"),
        ([*GPT2, "--hidden", "-768"], "argument --hidden"),
        ([*GPT2, "--tp", "0"], "argument --tp: expected a whole number from 1"),
        ([*GPT2, "--micro-batch", "-1"], "argument --micro-batch"),
        ([*GPT2, "--global-batch", "1" + "0" * 30], "argument --global-batch"),
        (["--layers", "2"], "missing model shape"),
        ([*GPT2, "--cluster", "dgx-a100-80gb", "--dtype", "fp8"], "dtype 'fp8' is not supported"),  # no FP8 on A100
        ([*GPT2, "--zero", "5"], "--zero"),
        ([*GPT2, "--tp", "two"], "--tp"),
        ([*GPT2, "--bogus", "1"], "--bogus"),
        ([*GPT2, "--cluster", "cpu-local", "--dp", "4"], "cpu-local"),  # more GPUs than the cluster has
    ],
)
def test_bad_flags(cli, argv, fragment):
    _assert_one_line_error(*cli(["simulate", *argv]), fragment)


def test_bad_config_key(cli, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: gpt2-small\ntensor_parallel: 2\n", encoding="utf-8")
    _assert_one_line_error(*cli(["simulate", "--config", config]), "unknown key 'tensor_parallel'")


def test_config_that_is_not_a_mapping(cli, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("- 1\n- 2\n", encoding="utf-8")
    _assert_one_line_error(*cli(["simulate", "--config", config]), "expected a mapping")


def test_missing_config_file(cli, tmp_path):
    _assert_one_line_error(*cli(["simulate", "--config", tmp_path / "absent.yaml"]), "no such configuration file")


def _drop(section, key):
    def mutate(data):
        del data[section][key]
    return mutate


def _set(path, value):
    def mutate(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (_set(("accelerator", "hbm_size"), "80GiB"), "unknown key 'accelerator.hbm_size'"),
        (_set(("colour",), "green"), "unknown key 'colour'"),
        (_drop("network", "latency"), "missing required key 'network.latency'"),
        (_drop("accelerator", "hbm"), "missing required key 'accelerator.hbm'"),
        (_set(("accelerator", "hbm"), "0GiB"), "accelerator.hbm"),
        (_set(("accelerator", "hbm"), "-80GiB"), "accelerator.hbm"),
        (_set(("node", "accelerators_per_node"), 0), "node.accelerators_per_node"),
        (_set(("accelerator", "hbm"), "80 gigs"), "accelerator.hbm"),
        (_set(("network", "nic_bandwidth"), "200 furlongs/s"), "network.nic_bandwidth"),
        (_set(("accelerator", "peak_flops", "bf16"), "312"), "accelerator.peak_flops.bf16"),
    ],
)
def test_bad_cluster_spec(cli, cluster_yaml, mutate, fragment):
    path = cluster_yaml(mutate)
    code, out, err = cli(["simulate", *GPT2, "--cluster", path])
    _assert_one_line_error(code, out, err, fragment)
    assert str(path) in err  # the file is named


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no named pipes here")
def test_a_cluster_path_that_is_no_regular_file_says_what_stands_there(cli, tmp_path):
    """A named pipe given as --cluster was reported as missing (the seventeenth session's CLI audit); a folder as
    'not a file'. Each now says what it is, in one line, without opening the pipe."""
    import os

    pipe, folder = tmp_path / "spec.yaml", tmp_path / "folder.yaml"
    os.mkfifo(pipe)
    folder.mkdir()
    for path, says in ((pipe, "is not a regular file"), (folder, "is a folder, not a file"),
                       (tmp_path / "none.yaml", "does not exist")):
        code, out, err = cli(["simulate", *GPT2, "--cluster", path])
        _assert_one_line_error(code, out, err, f"cluster spec file {path} {says}")


def test_console_script_reports_bad_input_in_one_line(tmp_path):
    """The installed `planner` entry point, as a user runs it."""
    script = Path(sys.executable).with_name("planner")
    command = [str(script)] if script.exists() else [shutil.which("planner") or "planner"]
    done = subprocess.run(command + ["simulate", "--model", "gpt3-175b", "--gpus", "64", "--tp", "8", "--pp", "4",
                                     "--dp", "3", "--global-batch", "24"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "= 96 != gpus(64)" in done.stderr
    ok = subprocess.run(command + ["simulate", "--model", "gpt2-small", "--json"], capture_output=True, text=True,
                        timeout=60, cwd=tmp_path)
    assert ok.returncode == 0 and json.loads(ok.stdout)["fits"] is True


def test_goodput_and_its_inputs_in_text_and_json(cli):
    """simulate reports the effective training time with the failures and checkpoints it rests on; the JSON
    figures reproduce the goodput by Daly's first-order formula (planner/cost/goodput.py)."""
    base = ["simulate", "--cluster", "dgx-a100-80gb", "--model", "llama2-70b", "--tp", "8", "--pp", "4", "--dp", "32",
            "--global-batch", "1024", "--recompute", "full", "--seq-parallel", "1"]
    runs = {}
    for mode in ("sync", "async", "in-memory"):
        code, out, err = cli(base + ["--checkpoint-mode", mode, "--json"])
        assert code in (0, 1) and err == ""
        runs[mode] = json.loads(out)["goodput"]
        g = runs[mode]
        lag = g["checkpoint_write_s"] if mode != "in-memory" else g["checkpoint_stall_s"]
        overhead = (g["checkpoint_stall_s"] / g["checkpoint_interval_s"]
                    + (g["checkpoint_interval_s"] / 2 + lag + g["restart_s"]) / g["job_mtbf_s"])
        assert g["goodput"] == pytest.approx(1 / (1 + overhead), rel=1e-12)
        assert g["job_mtbf_s"] == pytest.approx(g["mtbf_per_gpu_s"] / 1024, rel=1e-12)
        assert g["checkpoint_bytes"] == 14 * PRESETS["llama2-70b"].total_params
    assert runs["sync"]["goodput"] < runs["async"]["goodput"] <= runs["in-memory"]["goodput"]
    code, out, err = cli(base)
    line = next(line for line in out.splitlines() if line.startswith("goodput"))
    assert f"{100 * runs['sync']['goodput']:.1f}%" in line and "failures a day" in line and "sync checkpoint" in line
    code, out, err = cli(base + ["--checkpoint-mode", "never"])
    assert code == 2 and "--checkpoint-mode" in err


def test_sequence_parallel_at_tp1_is_switched_off_and_said(cli):
    """Megatron-LM turns sequence parallelism off at tp 1 (arguments.py:1433-1439): the layout shown is sp=0 and
    a note says it was switched off, in text and JSON; the step time is that of seq_parallel 0."""
    flags = ["simulate", *GPT2, "--tp", "1", "--dp", "8"]
    code, out, err = cli([*flags, "--seq-parallel", "1"])
    assert code == 0, err
    layout_line = next(line for line in out.splitlines() if line.startswith("layout"))
    assert " sp=0 " in layout_line and " sp=1 " not in layout_line
    assert "seq_parallel=1 switched off" in out and "tp > 1" in out
    code, out, _ = cli([*flags, "--seq-parallel", "1", "--json"])
    sp_on = json.loads(out)
    assert sp_on["layout"]["seq_parallel"] is False and len(sp_on["switched_off"]) == 1
    code, out, _ = cli([*flags, "--seq-parallel", "0", "--json"])
    sp_off = json.loads(out)
    assert sp_off["switched_off"] == [] and sp_on["step_time_s"] == sp_off["step_time_s"]
    code, out, _ = cli(["simulate", *GPT2, "--tp", "2", "--dp", "4", "--seq-parallel", "1", "--json"])
    assert json.loads(out)["layout"]["seq_parallel"] is True and json.loads(out)["switched_off"] == []


def test_simulate_goodput_counts_and_prints_the_evaluation_passes(cli):
    """The goodput simulate prints divides by the launch's evaluation share (planner.cost.evaluation), as the
    search's does, and the line says so."""
    from planner.frameworks import FRAMEWORKS

    argv = ["simulate", "--model", "llama2-70b", "--gpus", "64", "--tp", "8", "--pp", "4", "--framework", "megatron"]
    _, out, _ = cli(argv)
    stack = FRAMEWORKS["megatron"]
    assert (f"{stack.eval_iters:g} forward-only iterations every {stack.eval_interval_steps:g} steps") in out
    _, text, _ = cli([*argv, "--json"])
    g = json.loads(text)["goodput"]
    assert g["evaluation_fraction"] > 0
    assert g["goodput"] == pytest.approx(g["failure_goodput"] / (1.0 + g["evaluation_fraction"]))


def test_a_model_file_simulates_as_optimize_takes_it(cli, tmp_path):
    """`simulate --model FILE.yaml` said 'unknown preset': a plan made with `optimize --model FILE.yaml` (an MoE shape
    of one's own above all) could not be simulated again from the command line. It takes the file as optimize does."""
    from planner.specs.model import make_model

    fields = dict(layers=4, hidden=512, heads=8, vocab=32000, seq_len=1024, mlp="swiglu", ffn=1024, moe_experts=4,
                  moe_top_k=2, moe_ffn=512)
    path = tmp_path / "moe.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in fields.items()))
    code, out, err = cli(["simulate", "--model", str(path), "--gpus", "8", "--ep", "4", "--global-batch", "8",
                          "--cluster", "dgx-h100", "--json"])
    assert code == 0, err
    layout = Layout(dp=8, ep=4, global_batch=8, dtype="bf16")
    expected = simulate(make_model("test", **fields), layout, load_cluster("dgx-h100"))
    assert json.loads(out)["step_time_s"] == pytest.approx(expected["step_time_s"], rel=1e-12)
    code, _, err = cli(["simulate", "--model", str(tmp_path / "none.yaml"), "--gpus", "8"])
    assert code == 2 and "none.yaml" in err and err.count("\n") == 1, err


def test_a_config_files_model_file_stays_under_the_working_directory(cli, tmp_path, monkeypatch):
    """A config file's `model:` may name a model file, as --model may; like its cluster folder it must lie under the
    working directory (the review: any YAML on disk was read through it)."""
    outside, work = tmp_path / "outside", tmp_path / "work"
    outside.mkdir(), work.mkdir()
    shape = "layers: 4\nhidden: 512\nheads: 8\nvocab: 32000\nseq_len: 1024\n"
    (outside / "m.yaml").write_text(shape)
    (work / "m.yaml").write_text(shape)
    monkeypatch.chdir(work)
    for given in (str(outside / "m.yaml"), "../outside/m.yaml"):
        (work / "c.yaml").write_text(f"model: {given}\ngpus: 8\n")
        code, _, err = cli(["simulate", "--config", "c.yaml"])
        assert code == 2 and "key 'model'" in err and "outside the working directory" in err, err
    (work / "c.yaml").write_text("model: m.yaml\ngpus: 8\n")
    assert cli(["simulate", "--config", "c.yaml"])[0] == 0
    assert cli(["simulate", "--model", str(outside / "m.yaml"), "--gpus", "8"])[0] == 0  # a flag may name any file
