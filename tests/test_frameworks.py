"""The training stacks as data: every stack cites its source, the cost model reads them as arrays, and a
layout a stack cannot run is refused with the reason."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORK_CODES, FRAMEWORK_NAMES, FRAMEWORKS, framework_arrays
from planner.layout import Layout, check_layout
from planner.model import PRESETS


def test_the_stacks_the_runs_csv_names():
    """runs_csv.md's framework column: megatron, deepspeed, fsdp, jax, other."""
    assert set(FRAMEWORK_NAMES) == {"megatron", "deepspeed", "fsdp", "jax", "other"}


@pytest.mark.parametrize("name", ["megatron", "deepspeed", "fsdp", "jax"])
def test_every_stack_cites_its_source(name):
    doc = importlib.import_module(f"planner.frameworks.{name}").__doc__
    assert "Sources" in doc and (".py" in doc or ".yml" in doc or ".md" in doc)


def test_arrays_follow_the_codes_per_candidate():
    codes = [FRAMEWORK_CODES["megatron"], FRAMEWORK_CODES["deepspeed"], FRAMEWORK_CODES["fsdp"]]
    arrays = framework_arrays(np.array(codes))
    assert list(arrays["reduce_bytes_bf16"]) == [4.0, 2.0, 4.0]  # Megatron and torchtitan reduce bf16 grads in fp32
    assert list(arrays["shards_over_context_parallel"]) == [1.0, 0.0, 1.0]
    single = framework_arrays(np.full(5, FRAMEWORK_CODES["deepspeed"]))
    assert list(single["gathers_per_layer"]) == [FRAMEWORKS["deepspeed"].gathers_per_layer] * 5


@pytest.mark.parametrize("layout, reason", [
    (dict(framework="deepspeed", pp=2, vpp=2, global_batch=2), "no interleaved pipeline schedule"),
    (dict(framework="deepspeed", cp=2), "no context parallelism"),
    (dict(framework="megatron", zero=1, offload="optimizer"), "no optimizer/parameter offload"),
    (dict(framework="deepspeed", tp=2, tp_comm_overlap=True), "cannot overlap tensor-parallel communication"),
    (dict(framework="fsdp", tp=2, tp_comm_overlap=True), "only with sequence parallelism"),
])
def test_a_layout_the_stack_cannot_run_is_refused(layout, reason):
    with pytest.raises(PlannerInputError, match=reason):
        check_layout(PRESETS["gpt2-xl"], Layout(**layout))


def test_overlap_defaults_come_from_the_stack():
    assert not Layout(framework="megatron").dp_comm_overlap_on  # Megatron-LM: --overlap-grad-reduce off
    assert Layout(framework="fsdp").dp_comm_overlap_on
    assert Layout(framework="megatron", dp_comm_overlap=True).dp_comm_overlap_on
    assert Layout(framework="jax").tp_comm_overlap_on  # XLA collective matmul
