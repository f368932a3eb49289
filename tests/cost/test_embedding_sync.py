"""A word embedding held on two pipeline stages has its gradient all-reduced between them once a step
(cost/model_parallel_comm.shared_embedding_sync): Megatron-Core's finalize_model_grads (finalize_model_grads.py:676,
when the output layer is tied or the model has MTP blocks, :132-149) and DeepSpeed's pipeline engine
(ReduceTiedGrads, engine.py:278-294). Over the first and the last pipeline rank (parallel_state.py:560-566),
the whole padded vocabulary x hidden / tp in the gradient buffer's dtype, exposed."""

from __future__ import annotations

import numpy as np
import pytest

from planner.cost import collectives, groups
from planner.cost.estimate import estimate
from planner.cost.evaluation import forward_only_seconds
from planner.errors import PlannerInputError
from planner.specs.candidate_batch import single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import PRESETS
from planner.search.layouts import enumerate_layouts
from planner.specs.pipeline_stages import padded_vocab

GPT3 = PRESETS["gpt3-175b"]  # tied, as Megatron's GPT builds it
A100 = load_cluster("dgx-a100-80gb")


def _parts(model, layout, cluster=A100):
    batch = single_batch(model, layout)
    return batch, estimate(batch, cluster).time


def _layout(**kw):
    base = dict(tp=8, pp=8, dp=4, micro_batch=1, global_batch=256, recompute="full", framework="megatron", zero=1)
    return Layout(**{**base, **kw})


@pytest.mark.parametrize("framework, dtype, grad_bytes", [
    ("megatron", "bf16", 4.0),   # main_grad in the fp32 gradient buffer (Megatron bf16 accumulates in fp32)
    ("megatron", "fp16", 2.0),
    ("deepspeed", "fp16", 2.0),  # the 16-bit weight.grad
])
def test_a_tied_embedding_is_all_reduced_between_the_first_and_last_stage(framework, dtype, grad_bytes):
    layout = _layout(framework=framework, dtype=dtype)
    batch, time = _parts(GPT3, layout)
    assert GPT3.tied_embeddings
    # The group: two ranks, (pp - 1) x tp x cp x dp apart (tp innermost, pp outermost): one per node here.
    links = groups.links(A100, np.array([2]), np.array([7 * 8 * 1 * 4]))
    assert links["nodes"][0] == 2
    volume = padded_vocab(batch) * GPT3.hidden / 8 * grad_bytes
    expected = collectives.all_reduce_time(volume, links, **groups.collective_kwargs(A100))
    assert time["parts"]["embedding_sync"][0] == pytest.approx(float(expected[0]), rel=1e-12)
    # 51,200 x 12,288 / 8 elements: 157 MB of fp16 over one HDR link each way takes milliseconds, not nothing.
    assert 2e-3 < time["parts"]["embedding_sync"][0] < 0.1


def test_it_is_part_of_the_step():
    batch, time = _parts(GPT3, _layout())
    assert time["step_time_s"][0] == pytest.approx(sum(float(v[0]) for v in time["parts"].values()), rel=1e-12)
    untied = GPT3.model_copy(update={"tied_embeddings": False})
    _, apart = _parts(untied, _layout())
    assert "embedding_sync" not in apart["parts"]


@pytest.mark.parametrize("layout", [_layout(pp=1, dp=32), _layout(pp=1, dp=32, framework="deepspeed")],
                         ids=["megatron pp 1", "deepspeed pp 1"])
def test_one_stage_holds_one_copy_and_syncs_nothing(layout):
    _, time = _parts(GPT3, layout)
    assert "embedding_sync" not in time["parts"]


def test_an_untied_model_with_mtp_blocks_syncs_the_mtp_embedding_copy():
    """DeepSeek-V3: untied, one MTP block on the last stage with its own copy of the embedding (gpt_model.py:173);
    Megatron's embedding group all-reduces it with the first stage's. DualPipe runs the first and last stage on one
    rank: one copy, nothing to send."""
    model = PRESETS["deepseek-v3"]
    assert not model.tied_embeddings and model.mtp_layers > 0
    cluster = load_cluster("dgx-h100")
    base = dict(tp=1, pp=16, ep=64, dp=128, micro_batch=1, global_batch=15360, framework="megatron")
    batch, time = _parts(model, Layout(**base), cluster)
    assert time["parts"]["embedding_sync"][0] > 0
    _, dualpipe = _parts(model, Layout(**base, moe_a2a_overlap="dualpipe"), cluster)
    assert "embedding_sync" not in dualpipe["parts"]
    _, no_mtp = _parts(model.model_copy(update={"mtp_layers": 0}), Layout(**base), cluster)
    assert "embedding_sync" not in no_mtp["parts"]


def _sync_s(model, layout, cluster=A100):
    return float(_parts(model, layout, cluster)[1]["parts"].get("embedding_sync", [0.0])[0])


def test_the_volume_by_hand_and_the_dtype_each_stack_holds_it_in():
    """GPT-3's 50,257 tokens padded to 128 x tp = 1,024 (Megatron's make_vocab_size_divisible_by): 51,200 x 12,288 /
    8 elements per rank. DeepSpeed's BF16_Optimizer sums its fp32 copy (`_hp_grad`, engine.py:291) when the layout
    accumulates in fp32 (grad_reduce_in_fp32, BLOOM's run), the 16-bit gradient otherwise: twice the bytes, and on
    this 25 GB/s link the all-reduce of two ranks is bandwidth-bound, so about twice the time."""
    batch, time = _parts(GPT3, _layout(framework="deepspeed", dtype="bf16"))
    assert padded_vocab(batch)[0] == 51200
    assert time["comm_bytes_per_step"]["embedding_sync"][0] == pytest.approx(51200 * 12288 / 8 * 2.0)
    untied = _parts(GPT3.model_copy(update={"tied_embeddings": False}), _layout(framework="deepspeed", dtype="bf16"))
    assert untied[1]["comm_bytes_per_step"]["embedding_sync"][0] == 0.0
    sixteen = _sync_s(GPT3, _layout(framework="deepspeed", dtype="bf16"))
    fp32 = _sync_s(GPT3, _layout(framework="deepspeed", dtype="bf16", grad_reduce_in_fp32=True))
    assert 1.8 < fp32 / sixteen <= 2.0


@pytest.mark.parametrize("layout", [_layout(vpp=4), _layout(framework="megatron-2022", dtype="fp16")],
                         ids=["interleaved", "megatron-2022"])
def test_interleaving_and_the_2022_megatron_sum_the_same_two_copies(layout):
    """With interleaving the embedding is pipeline rank 0's first chunk and the output layer rank pp - 1's last
    (Megatron-Core language_module.py): still two ranks, the same price. Megatron-LM v2.5 summed them too
    (training.py:372-393 at e269e200)."""
    reference = _layout(dtype=layout.dtype)
    assert _sync_s(GPT3, layout) == pytest.approx(_sync_s(GPT3, reference), rel=1e-12)


def test_an_evaluation_iteration_sums_no_gradients():
    _, time = _parts(GPT3, _layout())
    parts = time["parts"]
    assert parts["embedding_sync"][0] > 0
    without = {name: value for name, value in parts.items() if name != "embedding_sync"}
    assert forward_only_seconds(parts, np.array([1])) == pytest.approx(forward_only_seconds(without, np.array([1])))


def test_torchtitan_ties_only_without_pipelining():
    """torchtitan refuses weight tying with pipeline parallelism (models/common/decoder.py:168-171 at b5bcd76c; at
    238fa995 the tied output asserts the embedding the split removed): check_layout says so, and the fixed-model
    search does not enumerate the pair, while an untied model there and the tied one at pp 1 stay."""
    model = PRESETS["gpt3-1.3b"]
    with pytest.raises(PlannerInputError, match="tied_embeddings with pp\\(2\\) > 1: fsdp"):
        check_layout(model, Layout(pp=2, dp=4, zero=3, framework="fsdp", global_batch=64))
    check_layout(model, Layout(pp=1, dp=8, zero=3, framework="fsdp", global_batch=64))
    check_layout(model.model_copy(update={"tied_embeddings": False}),
                 Layout(pp=2, dp=4, zero=3, framework="fsdp", global_batch=64))
    tied = enumerate_layouts(model, 8, 64, ("fsdp",))
    untied = enumerate_layouts(model.model_copy(update={"tied_embeddings": False}), 8, 64, ("fsdp",))
    assert np.all(tied["pp"] == 1) and np.any(tied["pp"] == 1)
    assert np.any(untied["pp"] > 1)
    # The budget search's enumeration applies the same rule row by row (its family models are untied today).
    from planner.search.space import enumerate_cells
    cells = [enumerate_cells([m], np.array([0]), np.array([16]), 8, frameworks=("fsdp",)).arrays["pp"]
             for m in (model, model.model_copy(update={"tied_embeddings": False}))]
    assert np.all(cells[0] == 1) and np.any(cells[1] > 1)
