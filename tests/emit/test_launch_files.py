"""launch_files across stacks: every emitted plan uses only what its stack runs (read back from the files
and checked against planner.frameworks), everything else is refused in one line, and the CLI's --emit
writes the files or exits 2 with that line."""

from __future__ import annotations

import json
import subprocess
import tomllib

import numpy as np
import pytest

from planner import search_layouts
from planner.emit import EMITTABLE, LAUNCH_FILE_NAMES, launch_files, launch_problems
from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORKS
from planner.specs.layout import Layout
from planner.specs.model import preset

# Problems across shapes and scales: Llama 3 (GQA, SwiGLU), GPT-3 (GELU, biases, learned positions, tied),
# Llama 2, an ALiBi model (BLOOM, also with an embedding norm) that Megatron-LM and torchtitan cannot build.
PROBLEMS = [("llama3-8b", 64), ("llama3-70b", 256), ("gpt3-175b", 64), ("llama2-7b", 16), ("bloom-176b", 128)]
SAMPLES_PER_PROBLEM = 40
TOKENS = 1e11


def megatron_features(files: dict) -> dict:
    args = dict((line.split(" ", 1) + [None])[:2] for line in files["megatron_args.txt"].splitlines())
    pp = int(args["--pipeline-model-parallel-size"])
    layout_string = args.get("--pipeline-model-parallel-layout")
    vpp = int(args.get("--num-virtual-stages-per-pipeline-rank") or (len(layout_string.split("|")) // pp
                                                                     if layout_string else 1))
    zero = ({"optim_grads": 2, "optim_grads_params": 3}[args["--data-parallel-sharding-strategy"]]
            if "--use-megatron-fsdp" in args else int("--use-distributed-optimizer" in args))
    return {"tp": int(args["--tensor-model-parallel-size"]), "pp": pp, "vpp": vpp,
            "cp": int(args.get("--context-parallel-size", 1)), "zero": zero,
            "offload": "--optimizer-cpu-offload" in args, "tp_comm_overlap": "--tp-comm-overlap" in args}


def torchtitan_features(files: dict) -> dict:
    config = tomllib.loads(files["job_config.toml"])
    mesh = config["parallelism"]
    pp = mesh["pipeline_parallel_degree"]
    replicate, shard = mesh["data_parallel_replicate_degree"], mesh["data_parallel_shard_degree"]
    # FSDP2 over the shard (x cp) ranks: ZeRO-2 when parameters stay gathered after forward, else ZeRO-3.
    sharded = 2 if mesh.get("fsdp_reshard_after_forward") == "never" else 3
    zero = sharded if shard > 1 or mesh["context_parallel_degree"] > 1 else 0 if replicate > 1 else None  # None: no dp
    return {"tp": mesh["tensor_parallel_degree"], "pp": pp, "cp": mesh["context_parallel_degree"],
            "vpp": len(mesh["module_fqns_per_model_part"]) // pp if pp > 1 else 1, "zero": zero,
            "offload": config["training"].get("enable_cpu_offload", False),
            "tp_comm_overlap": mesh.get("enable_async_tensor_parallel", False)}


def deepspeed_features(files: dict) -> dict:
    config = json.loads(files["ds_config.json"])
    args = dict((line.split(" ", 1) + [None])[:2] for line in files["megatron_args.txt"].splitlines())
    assert not {"--num-layers-per-virtual-pipeline-stage", "--context-parallel-size"} & set(args)
    return {"tp": int(args["--tensor-model-parallel-size"]), "pp": int(args["--pipeline-model-parallel-size"]),
            "vpp": 1, "cp": 1, "zero": config["zero_optimization"]["stage"],
            "offload": "offload_optimizer" in config["zero_optimization"], "tp_comm_overlap": False}


READERS = {"megatron": megatron_features, "fsdp": torchtitan_features, "deepspeed": deepspeed_features}


def check_supported(framework: str, used: dict) -> None:
    """What the files ask of the stack is what planner.frameworks says it runs."""
    stack = FRAMEWORKS[framework]
    assert used["vpp"] == 1 or stack.supports_interleaving
    assert used["cp"] == 1 or stack.supports_context_parallel
    assert used["zero"] is None or used["zero"] in stack.zero_stages
    assert used["pp"] == 1 or used["zero"] is None or used["zero"] <= stack.max_zero_with_pipeline
    assert not used["offload"] or stack.supports_offload
    assert not used["tp_comm_overlap"] or stack.tp_comm_overlap_available


def sampled_layouts(model, cluster, gpus: int, framework: str):
    """The fastest layout the search finds for the stack, and layouts spread over all that fit."""
    search = search_layouts(model, cluster, gpus, frameworks=(framework,), tokens=TOKENS)
    fitting = np.flatnonzero(search.fits)
    picks = fitting[np.linspace(0, len(fitting) - 1, min(SAMPLES_PER_PROBLEM, len(fitting))).astype(int)]
    best = [search.best] if search.best is not None else []
    return [search.layout(int(i)) for i in dict.fromkeys([*best, *picks.tolist()])]


@pytest.mark.parametrize("framework", EMITTABLE)
def test_every_emitted_plan_uses_only_what_its_stack_runs(framework, h100):
    emitted = refused = 0
    for name, gpus in PROBLEMS:
        model = preset(name)
        for layout in sampled_layouts(model, h100, gpus, framework):
            assert layout.framework == framework
            if launch_problems(model, layout):
                with pytest.raises(PlannerInputError) as error:
                    launch_files(model, layout, h100, tokens=TOKENS)
                assert str(error.value).startswith(f"{framework} (") and "\n" not in str(error.value)
                refused += 1
                continue
            files = launch_files(model, layout, h100, tokens=TOKENS)
            assert set(files) <= set(LAUNCH_FILE_NAMES[framework])
            used = READERS[framework](files)
            check_supported(framework, used)
            planned = {"tp": layout.tp, "pp": layout.pp, "vpp": layout.vpp, "cp": layout.cp,
                       "offload": layout.offload != "none", "tp_comm_overlap": layout.tp_comm_overlap_on and layout.tp > 1}
            assert {k: used[k] for k in planned} == planned, layout
            assert used["zero"] in (None, layout.zero) or (layout.dp == 1 and used["zero"] in (2, 3) and layout.cp > 1)
            emitted += 1
    assert emitted >= 20  # each stack emits plans across problems
    if framework != "deepspeed":
        assert refused > 0  # the ALiBi problem at least


def test_stacks_without_a_launch_config_are_refused(h100):
    from planner.specs.layout import Layout

    for framework in ("jax", "other"):
        with pytest.raises(PlannerInputError) as error:
            launch_files(preset("llama3-8b"), Layout(dp=8, global_batch=8, framework=framework), h100)
        assert f"framework {framework!r} has no launch config" in str(error.value)
        assert "supported: deepspeed, megatron, fsdp" in str(error.value)


BASE = ["simulate", "--model", "llama3-8b", "--cluster", "dgx-h100", "--global-batch", "64"]


@pytest.mark.parametrize("framework,flags,files", [
    ("deepspeed", ["--gpus", "16", "--zero", "1"], {"ds_config.json", "megatron_args.txt", "launch.sh", "hostfile",
                                                    "NOTES.md"}),
    ("megatron", ["--gpus", "16", "--tp", "2", "--seq-parallel", "1", "--zero", "1", "--dp-comm-overlap", "1"],
     {"megatron_args.txt", "launch.sh"}),
    ("fsdp", ["--gpus", "16", "--zero", "3"], {"job_config.toml", "launch.sh"}),
    # does not fit: 8B on 8 GPUs, no sharding, micro-batch 8 (exit 1, warned, files still written)
    ("megatron", ["--gpus", "8", "--micro-batch", "8"], {"megatron_args.txt", "launch.sh"}),
])
def test_simulate_emit_writes_the_stack_files_refuses_and_forces(framework, flags, files, cli, tmp_path):
    folder = tmp_path / "run"
    argv = [*BASE, *flags, "--framework", framework, "--emit", folder]
    code, out, err = cli(argv)
    fits = 0 if "fits: yes" in out else 1  # a layout that does not fit exits 1, its files still written
    assert code == fits and "step time" in out and f"({framework}) to {folder}/" in err, err
    assert {p.name for p in folder.iterdir()} == files
    assert subprocess.run(["bash", "-n", str(folder / "launch.sh")]).returncode == 0
    assert ("does not fit" in err) == bool(fits) and ("fits: NO" in (folder / "launch.sh").read_text()) == bool(fits)
    code, _, err = cli(argv)
    assert code == 2 and "already exists; pass --force" in err
    assert cli([*argv, "--force"])[0] == fits


@pytest.mark.parametrize("argv,names", [
    (["simulate", "--model", "gpt3-1.3b", "--gpus", "8", "--zero", "3", "--framework", "fsdp"], "mlp=gelu"),
    ([*BASE, "--gpus", "8", "--zero", "1", "--framework", "fsdp"], "zero=1"),
    ([*BASE, "--gpus", "8", "--zero", "0", "--tp", "2", "--framework", "fsdp"], "replicated data parallelism"),
    (["simulate", "--model", "mpt-7b-alibi", "--gpus", "8", "--framework", "megatron"], "position=alibi"),
    ([*BASE, "--gpus", "8", "--dtype", "fp8", "--framework", "deepspeed"], "dtype=fp8"),
    ([*BASE, "--gpus", "8", "--framework", "jax"], "framework 'jax' has no launch config"),
    ([*BASE, "--gpus", "8"], "framework 'other' has no launch config"),
    # refused by the framework data (planner.frameworks) already while the layout is read
    ([*BASE, "--gpus", "16", "--pp", "4", "--vpp", "2", "--framework", "deepspeed"], "no interleaved pipeline"),
    ([*BASE, "--gpus", "8", "--zero", "2", "--offload", "optimizer", "--framework", "megatron"], "no optimizer/parameter offload"),
    ([*BASE, "--gpus", "16", "--pp", "2", "--zero", "2", "--framework", "megatron"], "pipelines with ZeRO stages up to 1"),
])
def test_unsupported_plans_exit_2_with_one_line_and_write_nothing(argv, names, cli, tmp_path, alibi_preset):
    folder = tmp_path / "run"
    code, out, err = cli([*argv, "--emit", folder])
    assert code == 2 and names in err, err
    assert len(err.strip().splitlines()) == 1 and out == ""
    assert not folder.exists()


@pytest.mark.parametrize("argv, names", [
    # torchtitan without FSDP sharding and with tp/pp turns mixed precision off (fp32 training)
    (["simulate", "--model", "llama3-70b", "--gpus", "64", "--tp", "8", "--pp", "8", "--zero", "3", "--seq-parallel",
      "1", "--global-batch", "64", "--framework", "fsdp"], "disables mixed precision"),
    # torch's 1F1B with fewer micro-batches than stages
    (["simulate", "--model", "llama3-70b", "--gpus", "64", "--tp", "8", "--pp", "4", "--zero", "3", "--seq-parallel",
      "1", "--recompute", "full", "--global-batch", "2", "--framework", "fsdp"], "needs at least one per stage"),
    # Megatron's interleaving with fewer micro-batches than pp
    ([*BASE[:-1], "48", "--gpus", "32", "--tp", "8", "--pp", "4", "--vpp", "2", "--micro-batch", "16",
      "--framework", "megatron"], "interleaved schedule needs at least pp(4)"),
    # activation offload: no CPU checkpointing in Megatron-LM or torchtitan
    (["simulate", "--model", "llama2-70b", "--gpus", "64", "--zero", "3", "--recompute", "full", "--activation-offload",
      "1", "--micro-batch", "16", "--global-batch", "1024", "--framework", "fsdp"], "activation_offload"),
    # today's DeepSpeed removed MiCS; ZeRO-0 bf16 refuses fp32 gradient accumulation
    (["simulate", "--model", "llama2-13b", "--gpus", "64", "--zero", "3", "--shard-group", "8", "--global-batch", "256",
      "--framework", "deepspeed"], "deepspeed has no hierarchical (MiCS / HSDP) sharding"),
    (["simulate", "--model", "llama2-7b", "--gpus", "8", "--zero", "0", "--grad-reduce-in-fp32", "1", "--global-batch",
      "64", "--framework", "deepspeed"], "in fp32 only from ZeRO-1"),
])
def test_launches_their_stack_would_refuse_are_refused(argv, names, cli, tmp_path):
    """Helper-found: each wrote files that stop at start-up (or, for torchtitan without FSDP, train in fp32)."""
    folder = tmp_path / "run"
    code, out, err = cli([*argv, "--emit", folder])
    assert code == 2 and names in err, err
    assert not folder.exists()


def test_deepspeed_activation_offload_is_written_where_megatron_deepspeed_reads_it(h100):
    """--activation-offload was dropped (ds_config cpu_checkpointing false, no --checkpoint-in-cpu): the run kept
    its checkpoints on the GPU, 133 GiB for a plan that fits in 80. Megatron-DeepSpeed's own flags override the
    ds_config block (deepspeed checkpointing.py:1210-1220), so both say it."""
    from planner.specs.layout import Layout

    layout = Layout(dp=64, zero=3, recompute="full", activation_offload=True, micro_batch=16, global_batch=1024,
                    framework="deepspeed")
    files = launch_files(preset("llama2-70b"), layout, h100)
    config = json.loads(files["ds_config.json"])
    assert config["activation_checkpointing"]["cpu_checkpointing"] is True
    assert "--checkpoint-in-cpu" in files["launch.sh"] or "--checkpoint-in-cpu" in "".join(files.values())


@pytest.mark.parametrize("framework", ["megatron", "deepspeed", "fsdp"])
def test_checkpoints_are_saved_at_the_interval_the_plan_priced(framework):
    """The plan's goodput is priced with the Young/Daly checkpoint interval (cost.goodput); each stack's files
    save every that many steps (the interval over the simulated step time). Before, every launch file saved
    every 1,000 steps whatever the plan: 914 steps on this plan."""
    import re

    from planner.cost.estimate import simulate
    from planner.cost.goodput import goodput_summary
    from planner.specs.clusters import load_cluster
    from planner.specs.layout import Layout

    model, cluster = preset("llama3-8b"), load_cluster("dgx-h100")
    layout = Layout(dp=64, zero=1 if framework != "fsdp" else 3, micro_batch=1, global_batch=512, framework=framework)
    interval_s = goodput_summary(model.total_params, layout.gpus, cluster, framework=framework)["checkpoint_interval_s"]
    expected = round(interval_s / simulate(model, layout, cluster)["step_time_s"])
    assert expected != 1000 and expected > 1
    files = launch_files(model, layout, cluster, tokens=TOKENS)
    if framework == "fsdp":
        written = tomllib.loads(files["job_config.toml"])["checkpoint"]["interval"]
    else:
        written = int(re.search(r"--save-interval (\d+)", files["launch.sh"]).group(1))
    assert written == expected


def _with_checkpoint_mode(cluster, mode):
    return cluster.model_copy(update={"reliability": cluster.reliability.model_copy(update={"checkpoint_mode": mode})})


def test_launches_save_checkpoints_as_the_goodput_was_priced(megatron_options, torchtitan_fields, h100):
    """planner.cost.goodput prices async checkpoints (a host copy, persisted in the background) where the spec or
    simulate --checkpoint-mode says so; the launches write them: Megatron-LM's --async-save with the persistent
    worker it needs (validate_args turns --async-save off without it, arguments.py:1814-1820), torchtitan's
    checkpoint.async_mode (job_config.py:591). Megatron-DeepSpeed saves synchronously only, and no launch keeps
    checkpoints in memory: refused."""
    import tomllib

    from planner.emit import launch_files, launch_problems

    model = preset("llama3-8b")
    megatron = Layout(dp=8, zero=1, global_batch=64, framework="megatron")
    titan = Layout(dp=8, zero=3, global_batch=64, framework="fsdp")
    sync_args = launch_files(model, megatron, h100)["megatron_args.txt"]
    assert "--async-save" not in sync_args
    assert "async_mode" not in tomllib.loads(launch_files(model, titan, h100)["job_config.toml"])["checkpoint"]
    asynchronous = _with_checkpoint_mode(h100, "async")
    flags = launch_files(model, megatron, asynchronous)["megatron_args.txt"].split()
    assert {"--async-save", "--use-persistent-ckpt-worker"} <= set(flags) and "--async-save" in megatron_options
    assert "--use-persistent-ckpt-worker" in megatron_options
    checkpoint = tomllib.loads(launch_files(model, titan, asynchronous)["job_config.toml"])["checkpoint"]
    assert checkpoint["async_mode"] == "async" and torchtitan_fields["checkpoint.async_mode"] == "str"
    deepspeed = Layout(dp=8, zero=1, global_batch=64, framework="deepspeed")
    assert any(p.startswith("checkpoint mode async: Megatron-DeepSpeed") for p in
               launch_problems(model, deepspeed, asynchronous))
    assert not launch_problems(model, deepspeed, h100)
    in_memory = _with_checkpoint_mode(h100, "in-memory")
    for layout in (megatron, titan, deepspeed):
        refusals = [p for p in launch_problems(model, layout, in_memory) if p.startswith("checkpoint mode in-memory")]
        assert len(refusals) == 1  # one check, with the modes each LAUNCH_TARGETS entry writes


def test_simulate_emits_with_its_checkpoint_mode(cli, tmp_path):
    """simulate --checkpoint-mode prices goodput with that mode; --emit saves the same way."""
    out = tmp_path / "run"
    code, _, err = cli(["simulate", "--model", "gpt2-small", "--gpus", "8", "--dp", "8", "--zero", "1",
                        "--global-batch", "64", "--framework", "megatron", "--checkpoint-mode", "async",
                        "--emit", str(out)])
    assert code == 0, err
    assert "--async-save" in (out / "megatron_args.txt").read_text().split()
    code, _, err = cli(["simulate", "--model", "llama3-8b", "--gpus", "8", "--dp", "8", "--zero", "1",
                        "--global-batch", "64", "--framework", "deepspeed", "--checkpoint-mode", "async",
                        "--emit", str(tmp_path / "ds")])
    assert code == 2 and "checkpoint mode async" in err and not (tmp_path / "ds").exists()


def test_the_emit_check_before_simulating_judges_the_checkpoint_mode_given(cli, tmp_path, repo_root):
    """The check before simulating read the spec's mode and --checkpoint-mode only after: a refused mode printed
    the whole simulation before its exit 2, and `--checkpoint-mode sync` on an in-memory spec was refused, telling
    the user to plan with --checkpoint-mode sync."""
    import yaml

    layout = ["--gpus", "8", "--dp", "8", "--zero", "1", "--global-batch", "64", "--framework", "deepspeed"]
    code, out, err = cli(["simulate", "--model", "llama3-8b", *layout, "--checkpoint-mode", "async",
                          "--emit", str(tmp_path / "ds")])
    assert code == 2 and "checkpoint mode async" in err and out == ""
    spec = yaml.safe_load((repo_root / "cluster_specs" / "dgx-h100.yaml").read_text())
    spec["reliability"]["checkpoint"] = "in-memory"
    (tmp_path / "gemini.yaml").write_text(yaml.safe_dump(spec))
    code, _, err = cli(["simulate", "--model", "llama3-8b", "--cluster", str(tmp_path / "gemini.yaml"), *layout,
                        "--checkpoint-mode", "sync", "--emit", str(tmp_path / "sync")])
    assert code in (0, 1) and "cannot run" not in err, err  # 1: the layout does not fit, written with a warning
    assert (tmp_path / "sync" / "ds_config.json").exists()


@pytest.mark.parametrize("argv", [
    ["simulate", "--model", "gpt2-small", "--gpus", "8", "--emit"],
    ["simulate", "--model", "gpt2-small", "--gpus", "8", "--emit-deepspeed"],
    ["optimize", "--model", "gpt2-small", "--tokens", "1B", "--gpus", "8", "--report"],
    ["optimize", "--model", "gpt2-small", "--tokens", "1B", "--gpus", "8", "--all-layouts"],
    ["optimize", "--model", "gpt2-small", "--tokens", "1B", "--gpus", "8", "--emit"],
    ["report", "--budget", "100gpuh", "--out"],
    ["ingest", "x.log", "--out"],
    ["fit-law", "--out"],
    ["validate", "x.csv", "--write-error-bands"],
    ["calibrate", "x.csv", "--cluster", "dgx-h100", "--out"],
])
def test_an_empty_output_name_is_refused(cli, argv):
    """`--emit ""` (a shell variable left unset) was read as not given: nothing written, exit 0."""
    code, out, err = cli([*argv, ""])
    assert code == 2 and out == ""
    assert err.strip().endswith("expected a file or folder name to write, got ''") and len(err.strip().splitlines()) == 1
