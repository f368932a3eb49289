"""Megatron-Core with tp a multiple of the kv heads (num_query_groups < tp) all-gathers linear_qkv's output over
tp in forward and reduce-scatters its gradient in backward (NVIDIA/Megatron-LM@d98e8a64
core/transformer/attention.py:1851-1870, core/tensor_parallel/mappings.py:384-402): the step pays both, on the
compute stream, as its own part `qkv_gather`; rows with g >= tp, MLA rows and other stacks pay nothing."""

from __future__ import annotations

import numpy as np
import pytest

from planner.cost import collectives, groups
from planner.cost.step_time import step_time
from planner.frameworks import FRAMEWORK_CODES
from planner.specs.candidate_batch import build_batch, single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import ModelSpec

CLUSTER = load_cluster("dgx-h100")
SHAPE = dict(layers=4, hidden=2048, heads=16, ffn=8192, mlp="swiglu", vocab=32000, seq_len=4096)
LAYOUT = dict(tp=8, dp=1, micro_batch=1, global_batch=2, framework="megatron", seq_parallel=True)


def _run(model, **layout):
    layout = Layout(**{**LAYOUT, **layout})
    check_layout(model, layout)
    batch = single_batch(model, layout)
    return batch, step_time(batch, CLUSTER)


def _gather_and_scatter(batch, model):
    """All-gather and reduce-scatter seconds of the gathered QKV output, tokens x (heads + 2 g) x head_dim x 2 bytes."""
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    volume = tokens * (model.heads + 2 * model.kv) * model.attention_head_dim * 2.0
    links = groups.layout_links(batch, CLUSTER, groups.tp_group)
    kw = groups.collective_kwargs(CLUSTER)
    return collectives.all_gather_time(volume, links, **kw), collectives.reduce_scatter_time(volume, links, **kw)


@pytest.mark.parametrize("recompute, gathers", [("none", 1.0), ("selective", 1.0), ("full", 2.0)])
def test_tp_twice_the_kv_heads_pays_the_qkv_gather_and_its_reduce_scatter(recompute, gathers):
    grouped = ModelSpec(kv_heads=4, **SHAPE)
    batch, time = _run(grouped, recompute=recompute)
    gather, scatter = _gather_and_scatter(batch, grouped)
    steps = batch.grad_accumulation * grouped.layers  # one pipeline stage: every layer, every micro-batch
    assert gather[0] > 0
    assert time["parts"]["qkv_gather"][0] == pytest.approx(float(steps[0] * (gathers * gather[0] + scatter[0])),
                                                           rel=1e-12)
    assert time["step_time_s"][0] == pytest.approx(sum(float(v[0]) for v in time["parts"].values()), rel=1e-9)
    # The tp layer collectives are those of the same model with as many kv heads as tp (same message).
    _, whole = _run(ModelSpec(kv_heads=8, **SHAPE), recompute=recompute)
    assert time["parts"]["tp_comm"][0] == whole["parts"]["tp_comm"][0]


def test_as_many_kv_heads_as_tp_pays_no_gather():
    for kv in (8, 16):
        _, time = _run(ModelSpec(kv_heads=kv, **SHAPE))
        assert "qkv_gather" not in time["parts"]


def test_mla_rows_pay_no_gather():
    """MLASelfAttention projects through latents, without linear_qkv's gather (core/transformer/
    multi_latent_attention.py), whatever kv_heads says."""
    mla = ModelSpec(kv_heads=4, attention="mla", kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
                    v_head_dim=128, **SHAPE)
    _, time = _run(mla)
    assert "qkv_gather" not in time["parts"]


def test_only_stacks_that_run_tp_a_multiple_of_the_kv_heads_pay_it():
    """A batch row of another stack at the same shape (its check_layout would refuse it) pays nothing; the
    Megatron row beside it does."""
    grouped = ModelSpec(kv_heads=4, **SHAPE)
    batch = build_batch([grouped], np.zeros(2, dtype=np.int64), tp=8, global_batch=2, seq_parallel=True,
                        framework=np.array([FRAMEWORK_CODES["megatron"], FRAMEWORK_CODES["other"]]))
    qkv = step_time(batch, CLUSTER)["parts"]["qkv_gather"]
    assert qkv[0] > 0 and qkv[1] == 0.0
