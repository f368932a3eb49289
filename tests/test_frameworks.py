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
    """runs_csv.md's framework column: megatron, deepspeed, fsdp, jax, other; then MegaScale (issue 16) and
    DeepSpeed's ZeRO-3 of 2021 (deepspeed-v0.3), appended last so that the codes of the others stay as they were."""
    assert set(FRAMEWORK_NAMES) == {"megatron", "deepspeed", "fsdp", "jax", "other", "megascale", "deepspeed-v0.3"}
    assert FRAMEWORK_NAMES[:6] == ("megatron", "deepspeed", "fsdp", "jax", "other", "megascale")


def test_deepspeed_v03_differs_from_deepspeed_only_in_its_zero3_collectives():
    """frameworks/deepspeed_v03.py: per-parameter calls, host work per rank, fetch limits; ZeRO++ and MiCS absent."""
    from dataclasses import asdict
    old, new = asdict(FRAMEWORKS["deepspeed-v0.3"]), asdict(FRAMEWORKS["deepspeed"])
    differing = {k for k in new if old[k] != new[k]}
    assert differing == {"name", "gathers_per_layer", "gathers_outside_layers", "scatter_calls_per_layer",
                         "scatter_calls_outside_layers", "host_ops_per_rank_per_call", "prefetch_live_limit_elements",
                         "reuse_limit_elements", "zeropp", "shard_groups", "dtypes"}
    assert FRAMEWORKS["deepspeed-v0.3"].dtypes == {"fp16", "fp32"}
    with pytest.raises(PlannerInputError, match="no ZeRO\\+\\+"):
        check_layout(PRESETS["gpt2-xl"], Layout(framework="deepspeed-v0.3", zero=3, dp=16, zero_hpz=8))


@pytest.mark.parametrize("name", ["megatron", "deepspeed", "fsdp", "jax", "megascale", "deepspeed_v03"])
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


def test_megascale_parallel_block_and_per_chunk_reduction_change_only_their_parts():
    """MegaScale (Jiang et al. 2024, sections 3.1-3.2): one TP collective per layer pass instead of two, and
    each model chunk's gradient reduction behind the backward of the chunks still running."""
    from planner.cost.estimate import simulate
    from planner.hardware import load_cluster

    cluster = load_cluster("dgx-a100-80gb")
    model = PRESETS["gpt3-175b"]
    common = dict(tp=8, pp=8, dp=4, vpp=2, micro_batch=1, global_batch=128, seq_parallel=True,
                  tp_comm_overlap=False, dp_comm_overlap=True)
    megatron = simulate(model, Layout(framework="megatron", **common), cluster)
    megascale = simulate(model, Layout(framework="megascale", **common), cluster)
    assert megascale["comm_bytes_per_step"]["tp"] == pytest.approx(megatron["comm_bytes_per_step"]["tp"] / 2)
    assert megascale["time"]["tp_comm"] == pytest.approx(megatron["time"]["tp_comm"] / 2, rel=1e-9)
    assert megascale["time"]["dp_comm_exposed"] < megatron["time"]["dp_comm_exposed"]
    assert megascale["time"]["forward"] == pytest.approx(megatron["time"]["forward"], rel=1e-12)
    # Without interleaving there is no later chunk to hide behind: the reduction is Megatron's (tp 1, so that
    # the backward it hides behind is the same).
    flat = {**common, "vpp": 1, "tp": 1, "seq_parallel": False}
    flat_megascale = simulate(model, Layout(framework="megascale", **flat), cluster)
    flat_megatron = simulate(model, Layout(framework="megatron", **flat), cluster)
    assert flat_megascale["time"]["dp_comm_exposed"] == pytest.approx(flat_megatron["time"]["dp_comm_exposed"])
    # Pipeline sends: Megatron-LM overlaps them only with interleaving, MegaScale always.
    assert flat_megatron["time"]["pp_p2p"] > 0 and flat_megascale["time"]["pp_p2p"] == 0
