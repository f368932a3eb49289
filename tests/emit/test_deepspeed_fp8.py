"""DeepSpeed in fp8: Megatron-DeepSpeed trains fp8 through Transformer Engine's layer, which it builds only without
pipeline parallelism (GPTModel at --no-pipeline-parallel; GPTModelPipe stacks the local layer) and only for a GELU,
LayerNorm, multi-head-attention model (deepspeedai/Megatron-DeepSpeed@4efb479d megatron/model/transformer.py:1771-1800).
The searches planned DeepSpeed fp8 layouts that `--emit` then refused outright; now the plans are the runnable ones and
the launch writes them."""

import json

from planner.search.fixed_model import plan_fixed_model
from planner.specs.clusters import load_cluster
from planner.specs.model import PRESETS

GPT = ["--model", "gpt3-1.3b", "--cluster", "dgx-h100", "--gpus", 8, "--framework", "deepspeed", "--dtype", "fp8",
       "--zero", 1]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_fp8_with_a_pipeline_or_a_llama_shape_is_refused_naming_why(cli):
    code, _, err = cli(["simulate", *GPT, "--pp", 2])
    assert code == 2 and "dtype=fp8 with pp(2) > 1" in _one_line(err)
    code, _, err = cli(["simulate", "--model", "llama2-7b", *GPT[2:]])
    line = _one_line(err)
    assert code == 2 and "mlp swiglu" in line and "norm rmsnorm" in line


def test_a_gpt_shaped_fp8_plan_at_pp1_is_launched_with_transformer_engine(cli, tmp_path):
    out = tmp_path / "launch"
    code, _, err = cli(["simulate", *GPT, "--emit", out])
    assert code == 0, err
    args = (out / "megatron_args.txt").read_text()
    assert "--transformer-impl transformer_engine" in args and "--fp8-hybrid" in args and "--bf16" in args
    assert "--no-pipeline-parallel" in args
    assert json.loads((out / "ds_config.json").read_text())["bf16"]["enabled"] is True


def test_the_fixed_model_search_plans_deepspeed_fp8_without_a_pipeline():
    plan = plan_fixed_model(PRESETS["gpt3-2.7b"], load_cluster("dgx-h100"), [64], tokens=5e10, dtype="fp8",
                            frameworks=("deepspeed",))
    assert plan.chosen is not None and plan.chosen.row["pp"] == 1


def test_a_budget_search_names_the_stack_that_cannot_build_the_family_in_fp8(cli):
    code, _, err = cli(["optimize", "--budget", "3000gpuh", "--dtype", "fp8", "--framework", "deepspeed",
                        "--cluster", "dgx-h100"])
    line = _one_line(err)
    assert code == 2 and "--framework deepspeed" in line and "mlp swiglu" in line
