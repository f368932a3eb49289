"""--emit-deepspeed: ds_config.json accepted by DeepSpeed's own parser, launch files, CLI writing rules."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from planner.emit.deepspeed import (compatibility_notes, deepspeed_files, ds_config, megatron_arguments,
                                    step_law_learning_rate, train_sequences)
from planner.specs.layout import Layout
from planner.specs.model import preset

# Layouts covering every branch of ds_config: ZeRO 0-3, CPU/NVMe offload, optimizer+params offload,
# bf16/fp16/fp32, full recompute (activation checkpointing block), tp and pp.
LAYOUTS = {
    # fp32 runs without flash attention there (FlashSelfAttention asserts 16-bit inputs, transformer.py:419)
    "dp-zero0-fp32": Layout(dp=4, zero=0, global_batch=16, micro_batch=2, dtype="fp32", flash_attention=False),
    "dp-zero1": Layout(dp=96, zero=1, global_batch=480),
    "zero2-cpu-offload": Layout(dp=8, zero=2, offload="optimizer", global_batch=64, micro_batch=4),
    "zero3-full-recompute": Layout(tp=2, dp=32, zero=3, global_batch=512, recompute="full", seq_parallel=True),
    "zero3-infinity-nvme": Layout(dp=16, zero=3, offload="optimizer+params", offload_device="nvme", global_batch=32),
    "3d-fp16": Layout(tp=8, pp=4, dp=2, zero=1, global_batch=64, dtype="fp16", recompute="selective"),
    # bf16 with fp32 gradient accumulation at ZeRO-1: DeepSpeed's BF16_Optimizer (frameworks/deepspeed.py).
    "zero1-bf16-fp32-accumulation": Layout(dp=8, zero=1, global_batch=64, grad_reduce_in_fp32=True),
    # 16-bit gradients reduced in fp32 elsewhere: communication_data_type (the plan's 4-byte reduce).
    "zero2-bf16-fp32-reduce": Layout(dp=8, zero=2, global_batch=64, grad_reduce_in_fp32=True),
    "zero1-fp16-fp32-reduce": Layout(dp=8, zero=1, global_batch=64, dtype="fp16", grad_reduce_in_fp32=True),
}

# Run in a fresh interpreter: DeepSpeed's config parser reads the data-parallel world size from an
# initialised process group (a one-rank gloo group here) and the mpu; initialising that in the test
# process would leak into other tests.
DEEPSPEED_CHECK = textwrap.dedent("""
    import json, os, sys
    os.environ.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed
    from deepspeed.runtime.config import DeepSpeedConfig
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)

    class DataParallelOnly:
        def __init__(self, dp): self.dp = dp
        def get_data_parallel_world_size(self): return self.dp

    out = {}
    for name, (config, dp) in json.loads(sys.stdin.read()).items():
        parsed = DeepSpeedConfig(config, mpu=DataParallelOnly(dp))
        out[name] = {"train_batch_size": parsed.train_batch_size,
                     "micro": parsed.train_micro_batch_size_per_gpu,
                     "accumulation": parsed.gradient_accumulation_steps,
                     "zero_stage": parsed.zero_optimization_stage,
                     "grad_accum_dtype": parsed.grad_accum_dtype,
                     "communication_data_type": str(parsed.communication_data_type),
                     "overlap_comm": parsed.zero_config.overlap_comm,
                     "offload_optimizer": str(parsed.zero_config.offload_optimizer.device)
                                          if parsed.zero_config.offload_optimizer else None,
                     "offload_param": str(parsed.zero_config.offload_param.device)
                                      if parsed.zero_config.offload_param else None}
    print("RESULT " + json.dumps(out))
""")


def _free_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def parsed_by_deepspeed(payload: dict) -> dict:
    """name -> what DeepSpeed's own config parser made of (ds_config, dp), in a CPU-only subprocess."""
    completed = subprocess.run([sys.executable, "-c", DEEPSPEED_CHECK, _free_port()], input=json.dumps(payload),
                               capture_output=True, text=True, timeout=300,
                               env={**os.environ, "DS_ACCELERATOR": "cpu"})
    result_lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and result_lines, completed.stderr[-3000:]
    return json.loads(result_lines[0].removeprefix("RESULT "))


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_deepspeed_parses_every_generated_config():
    payload = {name: (ds_config(layout), layout.dp) for name, layout in LAYOUTS.items()}
    parsed = parsed_by_deepspeed(payload)
    for name, layout in LAYOUTS.items():
        got = parsed[name]
        assert got["train_batch_size"] == layout.global_batch
        assert (got["micro"], got["accumulation"]) == (layout.micro_batch, layout.grad_accumulation)
        assert got["zero_stage"] == layout.zero
        # fp32 reduction of 16-bit gradients: the BF16_Optimizer's fp32 gradients (bf16 ZeRO-1), else the setting.
        bf16_optimizer = layout.dtype == "bf16" and layout.zero == 1
        assert (got["communication_data_type"] == "torch.float32") == bool(
            layout.grad_reduce_in_fp32 and layout.dtype != "fp32" and not bf16_optimizer), name
        offload = None if layout.offload == "none" else layout.offload_device
        assert (got["offload_optimizer"] or "none").endswith(offload or "none")
        assert (got["offload_param"] is not None) == (layout.offload == "optimizer+params")
        # What the engine's optimizer choice reads (engine.py:1017-1025, 1316-1318): fp32 only where asked for.
        assert got["grad_accum_dtype"] == ("fp32" if name == "zero1-bf16-fp32-accumulation" else None)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_deepspeed_parses_the_configs_launch_files_emits_for_searched_plans():
    """planner.emit.launch_files (--emit with --framework deepspeed): the fastest plans the layout search finds
    for several problems, and the LAYOUTS above, each accepted by DeepSpeed's own parser as planned."""
    from planner import search_layouts
    from planner.emit import launch_files
    from planner.specs.clusters import load_cluster

    cluster = load_cluster("dgx-h100")
    plans = {name: (preset("llama2-7b"), layout.model_copy(update={"framework": "deepspeed"}))
             for name, layout in LAYOUTS.items()}
    for name, gpus in (("llama3-8b", 64), ("llama3-70b", 256), ("gpt3-175b", 64), ("llama2-7b", 16)):
        search = search_layouts(preset(name), cluster, gpus, frameworks=("deepspeed",), tokens=1e11)
        plans[f"{name}-{gpus}"] = (preset(name), search.layout(search.best))
    payload = {name: (json.loads(launch_files(model, layout, cluster, tokens=1e11)["ds_config.json"]), layout.dp)
               for name, (model, layout) in plans.items()}
    parsed = parsed_by_deepspeed(payload)
    for name, (_, layout) in plans.items():
        got = parsed[name]
        assert (got["train_batch_size"], got["micro"], got["accumulation"], got["zero_stage"]) == (
            layout.global_batch, layout.micro_batch, layout.grad_accumulation, layout.zero), name
        assert got["overlap_comm"] == priced_overlap_comm(layout), name


def priced_overlap_comm(layout: Layout) -> bool:
    """The overlap_comm the plan was priced with: ZeRO-1/2 hide the bucketed reduction behind backward and hold a
    second IPG bucket only with the layout's dp_comm_overlap (cost.step_time, cost.memory); ZeRO-3 prefetches its
    gathers and overlaps its reduce-scatters only with it (cost.data_parallel), by default on as DeepSpeed's
    stage-3 default (runtime/zero/config.py overlap_comm_valid)."""
    if layout.zero == 3:
        return True if layout.dp_comm_overlap is None else layout.dp_comm_overlap
    return layout.dp_comm_overlap_on if layout.zero in (1, 2) else False


def test_overlap_comm_is_the_overlap_the_plan_priced():
    for zero in (1, 2, 3):
        for overlap in (None, False, True):
            layout = Layout(dp=8, zero=zero, global_batch=64, framework="deepspeed", dp_comm_overlap=overlap)
            assert ds_config(layout)["zero_optimization"]["overlap_comm"] == priced_overlap_comm(layout), (zero, overlap)


def test_batch_arithmetic_matches_deepspeeds_rule():
    for layout in LAYOUTS.values():
        config = ds_config(layout)
        assert config["train_batch_size"] == (config["train_micro_batch_size_per_gpu"]
                                              * config["gradient_accumulation_steps"] * layout.dp)


def test_precision_and_zero_blocks():
    assert ds_config(LAYOUTS["dp-zero1"])["bf16"] == {"enabled": True}
    assert ds_config(LAYOUTS["3d-fp16"])["fp16"]["loss_scale"] == 0  # dynamic loss scaling
    fp32 = ds_config(LAYOUTS["dp-zero0-fp32"])
    assert "bf16" not in fp32 and "fp16" not in fp32 and fp32["zero_optimization"] == {"stage": 0}
    zero3 = ds_config(LAYOUTS["zero3-full-recompute"])
    assert zero3["zero_optimization"]["stage3_prefetch_bucket_size"] == 50_000_000  # what the memory model assumes
    # Checkpoints partitioned as priced: the stack's default, off (frameworks/deepspeed.py), unless the layout asks.
    assert zero3["activation_checkpointing"]["partition_activations"] is False
    assert ds_config(LAYOUTS["zero2-cpu-offload"])["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


@pytest.mark.parametrize("setting, tp, recompute, expected", [
    (None, 4, "full", False),  # DeepSpeed's default, activation_checkpointing/config.py:28; the flag is store_true
    (True, 4, "full", True),
    (False, 4, "full", False),
    (True, 1, "full", False),  # a tp group of one has nothing to split: not priced, not written
])
def test_partitioned_checkpoints_are_written_as_priced(setting, tp, recompute, expected):
    """ds_config's activation_checkpointing.partition_activations and Megatron-DeepSpeed's --partition-activations
    (which overrides it, checkpointing.py:1210-1211) carry the layout's resolved setting, the one cost.memory and
    cost.step_time priced, not tp > 1 whatever the layout says."""
    layout = Layout(tp=tp, dp=8, zero=1, global_batch=64, recompute=recompute, framework="deepspeed",
                    partition_activations=setting)
    assert layout.partition_activations_on is expected
    assert ds_config(layout)["activation_checkpointing"]["partition_activations"] is expected
    assert ("--partition-activations" in megatron_arguments(preset("llama2-7b"), layout, None, None)) is expected


def test_compatibility_notes_name_what_deepspeed_cannot_run():
    assert compatibility_notes(LAYOUTS["dp-zero1"], 8) == []
    notes = " ".join(compatibility_notes(Layout(tp=2, pp=4, dp=4, vpp=2, zero=2, global_batch=32, dtype="fp8"), 8))
    assert "ZeRO stage 0 or 1 only" in notes and "vpp=2" in notes and "fp8" in notes
    assert compatibility_notes(Layout(dp=12, global_batch=12), 8) == []  # the hostfile runs it (test_ranks.py)


def test_megatron_arguments_carry_the_layout_and_the_schedule():
    model = preset("llama2-70b")
    layout = Layout(tp=8, pp=2, dp=4, zero=1, global_batch=512, recompute="selective", seq_parallel=True)
    args = megatron_arguments(model, layout, tokens=2e12, learning_rate=1.5e-4)
    for expected in ("--tensor-model-parallel-size 8", "--pipeline-model-parallel-size 2", "--sequence-parallel",
                     "--num-layers 80", "--num-key-value-heads 8", "--swiglu", "--global-batch-size 512",
                     "--recompute-granularity selective", "--zero-stage 1", "--lr 0.00015"):
        assert expected in args
    assert "--no-pipeline-parallel" not in args
    samples = train_sequences(layout, 2e12, model.seq_len)
    assert f"--train-samples {samples}" in args
    assert samples % layout.global_batch == 0 and samples * model.seq_len >= 2e12


def test_step_law_learning_rate_is_a_plausible_peak():
    # 11B non-embedding parameters on 226B tokens: Llama-scale runs use 1.5e-4 to 3e-4.
    assert 1e-4 < step_law_learning_rate(11e9, 2.26e11) < 1e-3


def launch_env(path: str) -> dict[str, str]:
    """The environment launch.sh asks for, with `path` (launch_folder's, holding the stub launcher) as PATH."""
    return {**os.environ, "PATH": path, "MEGATRON_DEEPSPEED": "/md", "DATA_PATH": "/data/prefix", "TOKENIZER": "tok"}


def test_files_and_launch_script_run_under_a_stub_launcher(launch_folder):
    model = preset("llama2-7b")
    layout = Layout(tp=2, dp=8, zero=1, global_batch=64, seq_parallel=True)
    files = deepspeed_files(model, layout, gpus_per_node=8, tokens=1e9, summary="test plan")
    assert set(files) == {"ds_config.json", "megatron_args.txt", "launch.sh", "hostfile", "NOTES.md"}
    assert files["hostfile"].count("slots=8") == 2
    folder, path = launch_folder(files, launcher="deepspeed")
    completed = subprocess.run(["bash", str(folder / "launch.sh")], env=launch_env(path), capture_output=True,
                               text=True)
    assert completed.returncode == 0, completed.stderr
    argv = completed.stdout.splitlines()
    assert argv[:4] == ["--hostfile", "hostfile", "--num_nodes", "2"]  # the hostfile's slots say 8 per node
    assert argv[4] == "/md/pretrain_gpt.py"
    assert argv[argv.index("--deepspeed_config") + 1] == "ds_config.json"
    assert argv[argv.index("--data-path") + 1] == "/data/prefix"


def test_simulate_emit_deepspeed_writes_refuses_and_forces(cli, tmp_path):
    folder = tmp_path / "run"
    flags = ["simulate", "--model", "llama2-7b", "--cluster", "dgx-a100-80gb", "--gpus", "16", "--zero", "2",
             "--micro-batch", "2", "--global-batch", "64", "--emit-deepspeed", folder]
    code, out, err = cli(flags)
    assert code == 0 and "step time" in out and "wrote ds_config.json" in err
    config = json.loads((folder / "ds_config.json").read_text())
    assert config["train_batch_size"] == 64 and config["gradient_accumulation_steps"] == 2
    launch = folder / "launch.sh"
    assert launch.stat().st_mode & stat.S_IXUSR
    assert subprocess.run(["bash", "-n", str(launch)]).returncode == 0
    assert "TRAIN_SAMPLES" in launch.read_text()  # simulate knows no token count
    code, _, err = cli(flags)
    assert code == 2 and "already exists; pass --force" in err
    code, _, _ = cli([*flags, "--force"])
    assert code == 0


def test_optimize_emit_deepspeed_matches_the_plan(cli, tmp_path):
    folder = tmp_path / "run"
    code, out, _ = cli(["optimize", "--budget", "500gpuh", "--cluster", "dgx-a100-80gb", "--json",
                        "--emit-deepspeed", folder])
    assert code == 0
    plan = json.loads(out)["plan"]
    config = json.loads((folder / "ds_config.json").read_text())
    assert config["train_batch_size"] == plan["layout"]["global_batch"]
    assert config["zero_optimization"]["stage"] == plan["layout"]["zero"]
    args = (folder / "megatron_args.txt").read_text()
    assert f"--num-layers {plan['shape']['layers']}" in args and "--lr " in args
    assert Path(folder / "hostfile").exists() == (plan["nodes"] > 1)


def test_optimize_emit_deepspeed_states_the_schedule_it_cannot_run(cli, tmp_path):
    """Megatron-DeepSpeed has no WSD (--lr-decay-style constant|linear|cosine|inverse-square-root, Megatron-DeepSpeed
    @4efb479d megatron/arguments.py:1021-1022): the files run cosine, and the plan output (text and JSON) and
    NOTES.md now say so (only a launch.sh comment did). megatron_args.txt stays one argument per line."""
    folder = tmp_path / "run"
    argv = ["optimize", "--budget", "500gpuh", "--cluster", "dgx-a100-80gb", "--emit-deepspeed", folder]
    code, out, err = cli([*argv, "--json"])
    assert code == 0, err
    difference = json.loads(out)["emit_deepspeed"]["schedule_difference"]
    assert "no WSD" in difference and "cosine" in difference and "1-sqrt cool-down" in difference
    assert difference[1:] in (folder / "NOTES.md").read_text()
    assert all(line.startswith("--") for line in (folder / "megatron_args.txt").read_text().splitlines())
    assert "--lr-decay-style cosine" in (folder / "megatron_args.txt").read_text()
    code, out, err = cli([*argv, "--force"])
    assert code == 0 and f"emit-deepspeed  {difference}" in out
    code, out, _ = cli(["optimize", "--budget", "500gpuh", "--cluster", "dgx-a100-80gb", "--json"])
    assert code == 0 and "emit_deepspeed" not in json.loads(out)


def test_sequence_parallel_launch_sets_the_connections_megatron_deepspeed_requires(launch_folder):
    """Megatron-DeepSpeed's validate_args raises for --sequence-parallel unless CUDA_DEVICE_MAX_CONNECTIONS is 1
    (deepspeedai/Megatron-DeepSpeed@4efb479d megatron/arguments.py:401-407); the launch script did not set it. It now
    exports it and names it once in .deepspeed_env, which the deepspeed launcher passes to the other nodes
    (DeepSpeed launcher/runner.py:39-40)."""
    model = preset("llama2-7b")
    layout = Layout(tp=2, dp=8, zero=1, global_batch=64, seq_parallel=True)
    files = deepspeed_files(model, layout, gpus_per_node=8, tokens=1e9, summary="test plan")
    folder, path = launch_folder(files, launcher="deepspeed",
                                 body='echo "connections=${CUDA_DEVICE_MAX_CONNECTIONS:-unset}"')
    env = launch_env(path)
    env.pop("CUDA_DEVICE_MAX_CONNECTIONS", None)
    for _ in range(2):  # run twice: the line is added once
        completed = subprocess.run(["bash", str(folder / "launch.sh")], env=env, capture_output=True, text=True)
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout.strip() == "connections=1"
    assert (folder / ".deepspeed_env").read_text().splitlines() == ["CUDA_DEVICE_MAX_CONNECTIONS=1"]
    plain = deepspeed_files(model, layout.model_copy(update={"seq_parallel": False}), gpus_per_node=8, tokens=1e9)
    assert "CUDA_DEVICE_MAX_CONNECTIONS" not in plain["launch.sh"]


def test_an_fp32_plan_with_flash_attention_is_refused():
    """--use-flash-attn-v2's FlashSelfAttention asserts 16-bit inputs (megatron/model/transformer.py:419). DeepSpeed
    itself runs whatever attention the model has (frameworks/deepspeed.py), so this is the launch target's check."""
    from planner.emit.deepspeed import unsupported

    layout = Layout(dp=8, global_batch=64, dtype="fp32", framework="deepspeed")
    assert layout.flash_attention_on
    assert any(p.startswith("dtype=fp32 with flash attention") for p in unsupported(preset("gpt2-small"), layout))
    assert not any(p.startswith("dtype=fp32") for p in unsupported(
        preset("gpt2-small"), layout.model_copy(update={"flash_attention": False})))
    assert not any(p.startswith("dtype=fp32") for p in unsupported(
        preset("gpt2-small"), layout.model_copy(update={"dtype": "bf16"})))


def test_a_head_width_other_than_hidden_over_heads_is_written_and_qk_norm_refused():
    """Megatron-DeepSpeed takes the per-head width from --kv-channels, else hidden / heads (megatron/arguments.py:
    298-300), for the projections and the rotary embedding; its attention has no query/key norm."""
    from planner.emit.deepspeed import unsupported

    base = preset("llama2-7b")
    layout = Layout(tp=2, dp=4, zero=1, global_batch=64, framework="deepspeed")
    assert not any(a.startswith("--kv-channels") for a in megatron_arguments(base, layout, None, None))
    assert "--kv-channels 64" not in megatron_arguments(base.model_copy(update={"head_dim": 128}), layout, None, None)
    assert "--kv-channels 64" in megatron_arguments(base.model_copy(update={"head_dim": 64}), layout, None, None)
    assert not any(p.startswith("qk_norm") for p in unsupported(base, layout))
    assert any(p.startswith("qk_norm") for p in unsupported(base.model_copy(update={"qk_norm": True}), layout))


def test_zero_tiling_is_refused():
    """DeepSpeed tiles with deepspeed.zero.TiledLinear in the model's code, which Megatron-DeepSpeed's GPT does not
    use: a plan priced with tiled gathers would gather whole modules."""
    from planner.emit.deepspeed import unsupported

    layout = Layout(dp=8, zero=3, global_batch=8, framework="deepspeed")
    assert not any(p.startswith("zero_tiling") for p in unsupported(preset("llama2-7b"), layout))
    tiled = layout.model_copy(update={"zero_tiling": 4})
    assert any(p.startswith("zero_tiling=4") for p in unsupported(preset("llama2-7b"), tiled))


def test_alibi_an_embedding_norm_and_kv_heads_tp_does_not_divide_are_refused():
    """deepspeedai/Megatron-DeepSpeed@4efb479d has no ALiBi flag and no embedding LayerNorm (BigScience's fork had
    both), and divides the key/value heads over tp (transformer.py:566): --emit wrote BLOOM's launch as learned
    absolute positions with no embedding norm, exit 0."""
    from planner.emit.deepspeed import unsupported

    bloom = preset("bloom-176b")
    layout = Layout(tp=8, pp=12, dp=4, zero=1, global_batch=2048, framework="deepspeed")
    found = unsupported(bloom, layout)
    assert any(p.startswith("position=alibi") for p in found) and any(p.startswith("embedding_norm") for p in found)
    llama = preset("llama2-7b")
    assert unsupported(llama.model_copy(update={"kv_heads": 8}), layout) == []
    assert [p for p in unsupported(llama.model_copy(update={"kv_heads": 4}), layout) if p.startswith("kv_heads")] == [
        "kv_heads(4) not a multiple of tp(8): Megatron-DeepSpeed splits the key/value heads over tp (transformer.py:566)"]


def test_emit_deepspeed_warns_of_what_the_stack_cannot_run_and_of_the_groups_it_drops(cli, tmp_path):
    """--emit-deepspeed writes for any stack's layout and warns of what Megatron-DeepSpeed cannot run: it warned
    only of pp/ZeRO, vpp, cp and fp8, so kv heads tp does not divide and an HSDP shard group (written as flat
    ZeRO-3) passed with nothing said."""
    base = ["simulate", "--model", "llama2-7b", "--gpus", "16", "--micro-batch", "1", "--global-batch", "64"]
    code, _, err = cli([*base, "--kv-heads", "4", "--tp", "8", "--zero", "1", "--framework", "megatron",
                        "--emit-deepspeed", tmp_path / "kv"])
    assert code in (0, 1) and "warning: kv_heads(4) not a multiple of tp(8)" in err
    code, _, err = cli([*base, "--zero", "3", "--shard-group", "8", "--framework", "fsdp",
                        "--emit-deepspeed", tmp_path / "hsdp"])
    assert code in (0, 1) and "warning: shard_group=8: DeepSpeed has no key for these groups" in err
    assert "mics_shard_size" not in (tmp_path / "hsdp" / "ds_config.json").read_text()
