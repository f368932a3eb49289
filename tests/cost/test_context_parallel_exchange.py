"""Context parallelism's K/V exchange as each stack schedules it (cost/model_parallel_comm.py
context_parallel_exchange): Megatron-Core's ring (Transformer Engine cp_comm_type "p2p") hides each chunk's K/V
behind the attention of the chunk at hand; torchtitan's torch context-parallel SDPA with its default rotate method
"allgather" (torch 2.13 distributed/tensor/experimental/_context_parallel/_attention.py:77, 273-300, 429-439,
521-646) gathers the whole K/V once per pass, hidden only by the first chunk, and rotates the K/V gradients in fp32
with the last rotation exposed. Full recompute runs the forward exchange again on both."""

from __future__ import annotations

import numpy as np
import pytest

from planner.cost import collectives, groups
from planner.cost.model_parallel_comm import context_parallel_exchange, neighbour_send
from planner.cost.layer_compute import layer_seconds
from planner.cost.step_time import rank_rates, step_time
from planner.frameworks import FRAMEWORKS, batch_framework_arrays
from planner.specs.candidate_batch import single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import ModelSpec

CLUSTER = load_cluster("dgx-h100")


def _model(seq_len):
    return ModelSpec(layers=4, hidden=4096, heads=32, kv_heads=8, ffn=14336, mlp="swiglu", vocab=128256,
                     seq_len=seq_len)


def _layout(framework, cp, recompute="none"):
    return Layout(dp=1, cp=cp, micro_batch=1, global_batch=1, framework=framework, recompute=recompute,
                  zero=3 if framework == "fsdp" else 1)


def _exchange(framework, cp, seq_len=8192, recompute="none"):
    """(forward, backward) exposed seconds per layer and micro-batch, the row's layer times, its local K/V bytes
    and the cp group's links."""
    model, layout = _model(seq_len), _layout(framework, cp, recompute)
    check_layout(model, layout)
    batch = single_batch(model, layout)
    fw = batch_framework_arrays(batch)
    peak, hbm, half, gemm_peak = rank_rates(batch, CLUSTER)
    layer = layer_seconds(batch, CLUSTER, peak, gemm_peak, half, hbm, fw)
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    forward, backward = context_parallel_exchange(batch, CLUSTER, layer, tokens, 2.0, fw)
    local_kv = 2.0 * tokens * model.hidden * model.kv / model.heads * 2.0
    links = groups.layout_links(batch, CLUSTER, groups.cp_group)
    return float(forward[0]), float(backward[0]), layer, local_kv, links


def test_the_stacks_say_how_they_exchange():
    """Data, not an if-chain: torchtitan gathers once with fp32 gradients; Megatron-Core runs the ring."""
    assert FRAMEWORKS["fsdp"].cp_gathers_kv_once and FRAMEWORKS["fsdp"].cp_kv_gradient_bytes == 4.0
    assert not FRAMEWORKS["megatron"].cp_gathers_kv_once


@pytest.mark.parametrize("cp", [2, 8, 16])
def test_torchtitan_gathers_once_behind_the_first_chunk_and_exposes_the_last_fp32_rotation(cp):
    forward, backward, layer, local_kv, links = _exchange("fsdp", cp)
    gather = collectives.all_gather_time(local_kv * cp, links, **groups.collective_kwargs(CLUSTER))[0]
    rotation = neighbour_send(local_kv * 2.0, links, CLUSTER.efficiency)[0]  # fp32 gradients: twice the bf16 bytes
    attention, attention_bwd = float(layer["attention"][0]), float(layer["attention_backward"][0])
    assert forward == pytest.approx(max(gather - attention / cp, 0.0), rel=1e-12, abs=1e-15)
    assert backward == pytest.approx(max(gather - attention_bwd / cp, 0.0)
                                     + (cp - 1) * max(rotation - attention_bwd / cp, 0.0) + rotation, rel=1e-12)
    assert backward >= rotation > 0.0  # the last rotation is waited for after the loop: never hidden


def test_a_cp_group_across_nodes_sends_its_rotation_over_the_scale_out_link():
    _, _, _, local_kv, within = _exchange("fsdp", 8)
    _, _, _, local_kv_16, across = _exchange("fsdp", 16)
    assert within["nodes"][0] == 1 and across["nodes"][0] == 2
    assert (neighbour_send(local_kv_16, across, CLUSTER.efficiency)[0]
            > 2.0 * neighbour_send(local_kv_16, within, CLUSTER.efficiency)[0])


@pytest.mark.parametrize("seq_len", [8192, 131072])
def test_megatron_hides_its_ring_behind_each_chunk(seq_len):
    forward, backward, layer, local_kv, links = _exchange("megatron", 8, seq_len)
    ring = collectives.all_gather_time(local_kv * 8, links, **groups.collective_kwargs(CLUSTER))[0]
    attention = float(layer["attention"][0])
    # A two-stage pipeline of 8 chunks: with attention longer than the ring, 1/8 of the ring stays exposed.
    assert ring < attention and forward == pytest.approx(ring / 8, rel=1e-12)


def test_torchtitan_exposes_more_than_the_ring_where_the_first_chunk_cannot_hide_the_gather():
    """Short sequences across nodes: one chunk of attention is shorter than the whole gather."""
    titan = _exchange("fsdp", 16, 8192)
    ring = _exchange("megatron", 16, 8192)
    assert titan[0] + titan[1] > 2.0 * (ring[0] + ring[1])


@pytest.mark.parametrize("framework", ["megatron", "fsdp"])
def test_full_recompute_runs_the_forward_exchange_again(framework):
    forward, backward, *_ = _exchange(framework, 16, 8192)
    again, backward_again, *_ = _exchange(framework, 16, 8192, recompute="full")
    assert forward > 0.0 and again == forward
    assert backward_again == pytest.approx(backward + forward, rel=1e-12)


def test_the_step_prices_it_on_every_layer_and_micro_batch():
    model, layout = _model(8192), _layout("fsdp", 16)
    batch = single_batch(model, layout)
    forward, backward, *_ = _exchange("fsdp", 16)
    time = step_time(batch, CLUSTER)
    assert time["parts"]["cp_comm"][0] == pytest.approx(model.layers * (forward + backward), rel=1e-9)
    without = step_time(single_batch(model, _layout("fsdp", 1)), CLUSTER)
    assert float(np.asarray(without["parts"]["cp_comm"])[0]) == 0.0
