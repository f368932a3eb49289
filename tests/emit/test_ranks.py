"""A plan whose GPUs are not whole nodes: every launch starts exactly the plan's world size, the last node
running the rest (planner.emit.ranks). A full last node would run another data-parallel degree (Megatron-LM,
Megatron-DeepSpeed) or fail torchtitan's world-size assert (parallel_dims.py:53-56 at 238fa995)."""

from __future__ import annotations

import os
import subprocess

import pytest

from planner.emit import launch_files
from planner.emit.ranks import ranks_per_node
from planner.specs.layout import Layout
from planner.specs.model import preset


@pytest.mark.parametrize("gpus, expected", [(20, [8, 8, 4]), (16, [8, 8]), (4, [4]), (8, [8]), (9, [8, 1])])
def test_ranks_per_node_fills_whole_nodes_then_the_last(gpus, expected):
    assert ranks_per_node(Layout(dp=gpus, global_batch=gpus), 8) == expected


# 12 GPUs on 8-GPU nodes, one plan per launch target; the environment each launch.sh asks for.
TWELVE = {
    "megatron": ("llama3-8b", Layout(tp=4, dp=3, zero=1, global_batch=24, seq_parallel=True, framework="megatron"),
                 {"MEGATRON_LM": "/m", "DATA_PATH": "/d", "TOKENIZER": "tok", "MASTER_ADDR": "node0"}),
    "fsdp": ("llama3-8b", Layout(dp=12, zero=3, global_batch=24, framework="fsdp"),
             {"HF_ASSETS": "/hf", "MASTER_ADDR": "node0"}),
}


@pytest.mark.parametrize("framework", TWELVE)
def test_torchrun_launches_start_the_plans_world_size(framework, launch_folder, h100):
    name, layout, env = TWELVE[framework]
    folder, path = launch_folder(launch_files(preset(name), layout, h100, tokens=1e9, summary="12 GPUs"))
    started = []
    for node_rank in (0, 1):
        completed = subprocess.run(["bash", str(folder / "launch.sh")], capture_output=True, text=True,
                                   env={**os.environ, **env, "PATH": path, "NODE_RANK": str(node_rank),
                                        "TORCHTITAN": str(folder)})
        assert completed.returncode == 0, completed.stderr
        argv = completed.stdout.splitlines()
        assert argv[argv.index("--nnodes") + 1] == "2"
        started.append(int(argv[argv.index("--nproc_per_node") + 1]))
    assert started == [8, 4]


def test_the_deepspeed_hostfile_gives_the_last_node_the_rest(launch_folder, h100):
    layout = Layout(tp=2, dp=6, zero=1, global_batch=24, seq_parallel=True, framework="deepspeed")
    files = launch_files(preset("llama2-7b"), layout, h100, tokens=1e9, summary="12 GPUs")
    slots = [int(line.split("slots=")[1]) for line in files["hostfile"].splitlines() if not line.startswith("#")]
    assert slots == [8, 4]
    folder, path = launch_folder(files, launcher="deepspeed")
    completed = subprocess.run(["bash", str(folder / "launch.sh")], capture_output=True, text=True,
                               env={**os.environ, "PATH": path, "MEGATRON_DEEPSPEED": "/md", "DATA_PATH": "/d",
                                    "TOKENIZER": "tok"})
    assert completed.returncode == 0, completed.stderr
    argv = completed.stdout.splitlines()
    # --num_gpus would give every host that many ranks (DeepSpeed launcher/runner.py:400-404), 16 in all.
    assert argv[:4] == ["--hostfile", "hostfile", "--num_nodes", "2"] and "--num_gpus" not in argv
    assert "not a whole number" not in files["NOTES.md"]
