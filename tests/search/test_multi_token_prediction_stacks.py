"""Multi-token prediction (ModelSpec.mtp_layers) runs only on stacks whose model code builds it
(Framework.runs_multi_token_prediction): Megatron-Core does (--mtp-num-layers); torchtitan@238fa995,
Megatron-DeepSpeed@4efb479d, llm-foundry and the Megatron-LM of 2021-22 have none, so a plan on them priced MTP
blocks that the launched run would not train. simulate refuses, the searches leave those stacks out."""

from __future__ import annotations

import pytest

from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORKS
from planner.search.layouts import search_layouts
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import make_model

SHAPE = dict(layers=8, hidden=1024, heads=16, ffn=4096, mlp="swiglu", vocab=32000, seq_len=2048)
WITH_MTP = make_model("mtp-test", mtp_layers=1, **SHAPE)


def test_only_stacks_whose_code_builds_mtp_say_they_run_it():
    runs = {name for name, stack in FRAMEWORKS.items() if stack.runs_multi_token_prediction}
    assert {"megatron", "other"} <= runs
    assert not runs & {"fsdp", "deepspeed", "deepspeed-v0.2", "deepspeed-v0.3", "megatron-2022", "llm-foundry"}


@pytest.mark.parametrize("framework", ["fsdp", "deepspeed", "llm-foundry"])
def test_a_layout_of_a_stack_without_mtp_is_refused(framework):
    layout = Layout(dp=8, global_batch=8, framework=framework, zero=3 if framework != "deepspeed" else 1)
    with pytest.raises(PlannerInputError, match="multi-token prediction"):
        check_layout(WITH_MTP, layout)
    check_layout(make_model("no-mtp", **SHAPE), layout)  # the same model without MTP runs


def test_megatron_runs_it():
    check_layout(WITH_MTP, Layout(dp=8, global_batch=8, framework="megatron", zero=1))


def test_simulate_refuses_it_in_one_line(cli):
    """DeepSeek-V3 (one MTP block) on torchtitan."""
    code, out, err = cli(["simulate", "--model", "deepseek-v3", "--gpus", "2048", "--micro-batch", "1",
                          "--global-batch", "4096", "--framework", "fsdp"])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "multi-token prediction" in err and "fsdp" in err


def test_the_search_leaves_the_stacks_without_it_out():
    cluster = load_cluster("dgx-h100")
    found = search_layouts(WITH_MTP, cluster, 8, global_batch=64, frameworks=("megatron", "fsdp", "deepspeed"))
    assert {row["framework"] for row in found.rows(range(len(found.step_time_s)))} == {"megatron"}
    with pytest.raises(PlannerInputError, match="--framework fsdp: .*multi-token prediction"):
        search_layouts(WITH_MTP, cluster, 8, global_batch=64, frameworks=("fsdp",))
