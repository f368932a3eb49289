"""Partitioned activation checkpoints are rebuilt before each recompute: DeepSpeed's `gather_partitioned_activations`
all-gathers every checkpointed input over the tensor-parallel group with one synchronous all_gather_into_tensor
(DeepSpeed 0.19.8 runtime/activation_checkpointing/checkpointing.py:276-306), called in backward ahead of the
recompute it feeds (:706-708), so nothing hides it: once per recomputed layer per micro-batch, as its own part
`checkpoint_gather`. Layouts that keep whole checkpoints (every stack's default) pay nothing and keep their numbers."""

from __future__ import annotations

import numpy as np
import pytest

from planner.cost import collectives, groups
from planner.cost.step_time import step_time
from planner.frameworks import FRAMEWORK_CODES
from planner.specs.candidate_batch import RECOMPUTE_CODES, build_batch, single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import ModelSpec

CLUSTER = load_cluster("dgx-h100")
SHAPE = dict(layers=4, hidden=4096, heads=32, ffn=16384, vocab=32000, seq_len=2048)
LAYOUT = dict(tp=4, dp=1, micro_batch=2, global_batch=8, framework="deepspeed", recompute="full")


def _run(model, **layout):
    layout = Layout(**{**LAYOUT, **layout})
    check_layout(model, layout)
    batch = single_batch(model, layout)
    return batch, step_time(batch, CLUSTER)


def _gather(batch, volume):
    links = groups.layout_links(batch, CLUSTER, groups.tp_group)
    return float(collectives.all_gather_time(volume, links, **groups.collective_kwargs(CLUSTER))[0])


@pytest.mark.parametrize("seq_parallel", [False, True])
def test_one_exposed_all_gather_of_the_layer_input_per_recomputed_layer(seq_parallel):
    """deepspeed tp 4: the gathered buffer is the layer input, tokens x h x 2 bytes (bf16), the [s/4, b, h] slice
    under sequence parallelism; every layer of the one stage, every micro-batch."""
    model = ModelSpec(**SHAPE)
    batch, time = _run(model, partition_activations=True, seq_parallel=seq_parallel)
    volume = 2 * 2048 * 4096 * 2.0 / (4 if seq_parallel else 1)
    steps = float(batch.grad_accumulation[0]) * model.layers
    gather = _gather(batch, volume)
    assert gather > 0
    assert time["parts"]["checkpoint_gather"][0] == pytest.approx(steps * gather, rel=1e-12)
    assert time["step_time_s"][0] == pytest.approx(sum(float(v[0]) for v in time["parts"].values()), rel=1e-9)
    # Everything else is as with whole checkpoints (the gather runs on its own, before the recompute).
    _, whole = _run(model, seq_parallel=seq_parallel)
    assert "checkpoint_gather" not in whole["parts"]
    for name in ("forward", "backward", "recompute", "tp_comm", "elementwise"):
        assert time["parts"][name][0] == whole["parts"][name][0], name
    assert time["step_time_s"][0] == pytest.approx(whole["step_time_s"][0] + steps * gather, rel=1e-9)


@pytest.mark.parametrize("layout", [dict(), dict(partition_activations=False), dict(framework="megatron"),
                                    dict(tp=1, partition_activations=True, global_batch=2)])
def test_whole_checkpoints_pay_no_gather(layout):
    """The stacks' default (off), an explicit 0, and tp 1 (a group of one: DeepSpeed skips the gather,
    checkpointing.py:291-296)."""
    _, time = _run(ModelSpec(**SHAPE), **layout)
    assert "checkpoint_gather" not in time["parts"]


def test_only_partitioned_rows_pay_it_in_a_mixed_batch():
    """A search batch: the deepspeed row asked to partition pays; the megatron row at its default and the
    selective-recompute row (no checkpoints to partition) do not, whatever the column says."""
    model = ModelSpec(**SHAPE)
    batch = build_batch([model], np.zeros(3, dtype=np.int64), tp=4, global_batch=2,
                        framework=np.array([FRAMEWORK_CODES["deepspeed"], FRAMEWORK_CODES["megatron"],
                                            FRAMEWORK_CODES["deepspeed"]]),
                        recompute=np.array([RECOMPUTE_CODES["full"], RECOMPUTE_CODES["full"], RECOMPUTE_CODES["selective"]]),
                        partition_activations=np.array([True, False, True]))
    gather = step_time(batch, CLUSTER)["parts"]["checkpoint_gather"]
    assert gather[0] > 0 and gather[1] == 0.0 and gather[2] == 0.0
