"""Parts of the cost model evaluated once per distinct combination of the columns they read (cost/distinct.py)
give every candidate the numbers it gets when every row is computed: bit for bit, on a batch of mixed stacks,
dtypes, ZeRO stages, hierarchies and switches whose rows repeat."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from planner.cost import data_parallel, distinct, memory, stages
from planner.cost.estimate import estimate
from planner.specs.clusters import load_cluster
from planner.specs.candidate_batch import CandidateBatch, build_batch
from planner.specs.model import preset


@pytest.mark.parametrize("model_name, cluster_name", [("llama2-70b", "dgx-h100"), ("mixtral-8x7b", "dgx-h100"),
                                                      ("gpt3-13b", "frontier-mi250x"), ("deepseek-v3", "h800-deepseek")])
def test_distinct_evaluation_equals_every_row(monkeypatch, mixed_batch, flatten, model_name, cluster_name):
    batch, cluster = mixed_batch(model_name), load_cluster(cluster_name)
    keyed = dict(flatten(dataclasses.asdict(estimate(batch, cluster))))
    for columns in (distinct.LAYER_COLUMNS, data_parallel.DATA_PARALLEL_COLUMNS, memory.STAGE_STATE_COLUMNS,
                    stages.STAGE_COLUMNS, memory.INFLIGHT_COLUMNS):
        assert distinct.distinct_rows(batch, columns) is not None  # the keyed path ran
    monkeypatch.setattr(distinct, "_WORTHWHILE_SHARE", -1.0)  # never worthwhile: every part on every row
    fresh = dataclasses.replace(batch)
    every_row = dict(flatten(dataclasses.asdict(estimate(fresh, cluster))))
    assert keyed.keys() == every_row.keys()
    for name, values in every_row.items():
        np.testing.assert_array_equal(keyed[name], values, err_msg=name)


@pytest.mark.parametrize("cluster_name", ["dgx-h100", "frontier-mi250x"])
def test_a_many_model_batch_numbers_its_model_columns_per_model_with_the_same_numbers(monkeypatch, mixed_batch, flatten, cluster_name):
    """A budget search's chunk holds many models: cost.distinct numbers the model columns on one row per model
    (CandidateBatch.model_index) instead of sorting every row's values. With models that share some columns
    (Llama 2 and Llama 3 70B: layers, hidden, heads) and one model listed twice, every row gets the numbers it
    gets when each model column is numbered on every row, and when every part runs on every row."""
    models = [preset(name) for name in ("llama3-8b", "llama2-70b", "llama3-70b", "gpt3-13b", "llama3-8b")]
    batch, cluster = mixed_batch("", models), load_cluster(cluster_name)
    keyed = dict(flatten(dataclasses.asdict(estimate(batch, cluster))))
    codes, count = distinct._model_codes(batch, distinct.MODEL_COLUMNS)
    assert count == 4 and len(np.unique(codes)) == 4  # four distinct models among five listed
    first, twin = batch.model_index == 0, batch.model_index == 4
    assert first.any() and twin.any() and len(np.unique(codes[first | twin])) == 1
    per_column = dict(flatten(dataclasses.asdict(estimate(dataclasses.replace(batch, model_index=None), cluster))))
    monkeypatch.setattr(distinct, "_WORTHWHILE_SHARE", -1.0)  # never worthwhile: every part on every row
    every_row = dict(flatten(dataclasses.asdict(estimate(dataclasses.replace(batch), cluster))))
    assert keyed.keys() == per_column.keys() == every_row.keys()
    for name, values in every_row.items():
        np.testing.assert_array_equal(keyed[name], values, err_msg=name)
        np.testing.assert_array_equal(per_column[name], values, err_msg=name)


# The dense-vs-MoE comparison's searches drop the layouts whose parameter states (computed once per combination)
# alone overflow HBM (search_layouts(only_fitting=True)): that bound must never exceed a layout's full memory.
@pytest.mark.parametrize("model_name, cluster_name", [("llama2-70b", "dgx-h100"), ("mixtral-8x7b", "dgx-h100"),
                                                      ("gpt3-13b", "frontier-mi250x")])
def test_state_bytes_never_exceed_the_full_memory(mixed_batch, model_name, cluster_name):
    batch, cluster = mixed_batch(model_name), load_cluster(cluster_name)
    bound = memory.state_bytes_lower_bound(batch)
    full = memory.per_gpu_memory(batch, cluster)
    assert np.all(bound <= full["total_bytes"])
    # And it is no looser than the binding stage's own state parts (it is the largest stage's), less the states only
    # the optimizer step holds where the stack frees them after it (memory.phase_overlap; the bound cannot know
    # the micro-batches that decide whether they are live at the peak).
    states = [name for name in memory.STATE_PARTS + memory.MOE_STATE_PARTS if name in full["parts"]]
    live = sum(full["parts"][name] for name in states)
    assert np.all(bound >= (live - full["step_only_state_bytes"]) * (1 - 1e-12))


@pytest.mark.parametrize("model_name", ["llama2-70b", "mixtral-8x7b"])
def test_a_sub_batch_keeps_its_parents_codes_and_gets_the_same_numbers(mixed_batch, flatten, model_name):
    """distinct.take (the searches' layouts that fit, out of every layout) carries the parent's column codes and
    parallel shapes: the sub-batch is keyed from them and prices every row exactly as a fresh sub-batch does."""
    batch, cluster = mixed_batch(model_name), load_cluster("dgx-h100")
    estimate(batch, cluster)  # numbers the parent's columns
    rows = np.flatnonzero(np.random.default_rng(3).random(len(batch)) < 0.6)
    carried = distinct.take(batch, rows)
    assert any(name.startswith("distinct_codes:") for name in carried.__dict__["_memo"])
    kept = dict(flatten(dataclasses.asdict(estimate(carried, cluster))))
    fresh = dict(flatten(dataclasses.asdict(estimate(batch.take(rows), cluster))))
    assert kept.keys() == fresh.keys()
    for name, values in fresh.items():
        np.testing.assert_array_equal(kept[name], values, err_msg=name)


def test_spread_gathers_per_stage_arrays_on_the_candidate_axis():
    inverse = np.array([1, 0, 1, 1])
    spread = distinct.spread({"stages": np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), "scalar": 0.5}, inverse)
    np.testing.assert_array_equal(spread["stages"], [[2, 1, 2, 2], [4, 3, 4, 4], [6, 5, 6, 6]])
    assert spread["scalar"] == 0.5


def test_column_codes_number_equal_values_alike():
    codes, count = distinct._column_codes(np.array([4.0, 1.0, 4.0, 2.5, 1.0]))  # not whole: sorted path
    assert codes[0] == codes[2] and codes[1] == codes[4] and len(set(codes)) == 3 and count == 3
    codes, count = distinct._column_codes(np.array([8.0, 1.0, 8.0]))
    assert codes[0] == codes[2] != codes[1] and count == 8
    assert distinct._column_codes(np.full(5, 3.0)) == (None, 1)
    rows = np.array([[2.0, 1.0], [1.0, 2.0], [2.0, 1.0]])  # a vector per candidate: numbered by whole rows
    codes, count = distinct._column_codes(rows)
    assert codes.shape == (3,) and codes[0] == codes[2] != codes[1] and count == 2
    assert distinct._column_codes(np.tile([3.0, 4.0], (5, 1))) == (None, 1)


def test_an_empty_batch_is_not_keyed():
    batch = build_batch([preset("gpt3-13b")], np.zeros(0, dtype=np.int64))
    assert distinct.distinct_rows(batch, distinct.LAYER_COLUMNS) is None
    assert len(estimate(batch, load_cluster("dgx-h100")).step_time_s) == 0


# The candidate columns each keyed part does NOT read (checked by the bit-for-bit test above on the columns it
# varies). A column added to CandidateBatch fails this test until it is put in the part's key or here. Keys may
# name a batch property; it stands for the columns it is computed from (DERIVED).
DERIVED = {"grad_accumulation": {"global_batch", "micro_batch", "dp"}}
NOT_READ = {
    # The end ranks' layers (distinct.STAGE_SPLIT) change which layers a stage holds, not one layer's work.
    "layer": {"model_index", "first_stage_layers", "last_stage_layers", "loss_fusion", "a2a_overlap", "activation_offload", "dp_comm_overlap", "ep", "etp", "fp8_param_gather", "global_batch",
              "grad_reduce_in_fp32", "grad_shard_group", "moe_imbalance", "moe_padded", "node_dispatch", "offload", "offload_nvme",
              "shard_group", "vpp", "zero", "zero_hpz", "zero_quantized_gradients", "zero_quantized_weights",
              "zero_tiling"},
    "data_parallel": {"model_index", "loss_fusion", "activation_offload", "ep", "etp", "flash_attention",
                      "fp8_current_scaling", "global_batch", "grad_shard_group", "micro_batch", "moe_imbalance",
                      "moe_padded", "node_dispatch", "offload", "offload_nvme", "partition_activations", "recompute", "seq_parallel", "shard_group",
                      "tp_comm_overlap", "zero_hpz", "zero_quantized_gradients", "zero_quantized_weights", "zero_tiling"},
    "stage_states": {"model_index", "loss_fusion", "activation_offload", "flash_attention", "fp8_current_scaling",
                     "global_batch", "micro_batch", "moe_imbalance", "moe_padded", "node_dispatch", "partition_activations", "recompute",
                     "seq_parallel", "tp_comm_overlap", "zero_quantized_gradients", "zero_quantized_weights"},
    "stage": {"model_index", "loss_fusion", "activation_offload", "cp", "dp", "dp_comm_overlap", "dtype", "ep", "etp", "flash_attention",
              "fp8_current_scaling", "fp8_param_gather", "global_batch", "grad_reduce_in_fp32",
              "grad_shard_group", "micro_batch", "moe_imbalance", "moe_padded", "node_dispatch", "offload", "offload_nvme",
              "partition_activations", "recompute", "seq_parallel", "shard_group", "tp_comm_overlap", "zero", "zero_hpz", "zero_quantized_gradients",
              "zero_quantized_weights", "zero_tiling"},
    "inflight": {"model_index", "loss_fusion", "activation_offload", "attention_window", "core_width", "cp", "dispatch_nodes", "dropout_masks", "route_groups",
                 "routed_only_layers", "dense_prefix", "router_params",
                 "dp_comm_overlap", "dtype", "embedding_params", "ep", "etp", "expert_ffn", "expert_params", "experts",
                 "ffn", "flash_attention", "fp8_current_scaling", "fp8_param_gather", "grad_reduce_in_fp32",
                 "grad_shard_group", "heads", "hidden", "kv_heads", "layer_params", "logits_params",
                 "mlp_matrices", "moe_imbalance", "moe_layers", "moe_padded", "node_dispatch", "offload", "offload_nvme",
                 "partition_activations", "qkv_width", "q_width", "kv_width", "attention_out_width",
                 "query_groups", "recompute", "seq_len", "seq_parallel", "shard_group", "tied_embeddings", "top_k",
                 "total_params", "tp",
                 "tp_comm_overlap", "vector_elements_per_layer", "vector_split_per_layer", "vector_tensors_outside",
                 "vocab", "zero", "zero_hpz", "zero_quantized_gradients", "zero_quantized_weights",
                 "zero_tiling"},
}


@pytest.mark.parametrize("part, columns", [("layer", distinct.LAYER_COLUMNS),
                                           ("data_parallel", data_parallel.DATA_PARALLEL_COLUMNS),
                                           ("stage_states", memory.STAGE_STATE_COLUMNS),
                                           ("stage", stages.STAGE_COLUMNS),
                                           ("inflight", memory.INFLIGHT_COLUMNS)])
def test_every_candidate_column_is_keyed_or_declared_unread(part, columns):
    fields = {f.name for f in dataclasses.fields(CandidateBatch)}
    read = set().union(*(DERIVED.get(name, {name}) for name in columns))
    assert read <= fields
    assert fields - read == NOT_READ[part], "classify the new column: in the part's key or in NOT_READ"
