"""Multi-token-prediction blocks sit on the last pipeline stage, beside the output layer they share, as Megatron-Core
builds them (NVIDIA/Megatron-LM@d98e8a64 megatron/core/transformer/multi_token_prediction.py:823-829, 877-881) and
DeepSeek-V3 places them (arXiv:2412.19437 section 3.2.3): one more block there, one more pass of the output layer
and its loss per block, and on Megatron-Core a copy of the token embedding they read (gpt_model.py:173). DualPipe
runs stage r and stage pp - 1 - r on one rank (deepseek-ai/DualPipe examples/example_dualpipe.py), so the first
and last stage share a rank, their work and that embedding."""

import re

import numpy as np
import pytest

from planner.cost import step_time
from planner.cost.estimate import estimate
from planner.emit.megatron import pipeline_split_arguments
from planner.specs.candidate_batch import single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import make_layout
from planner.specs.model import PRESETS, preset
from planner.specs.pipeline_stages import stage_layers, stage_param_counts


def _deepseek(**values):
    layout = dict(tp=1, pp=16, dp=128, ep=64, micro_batch=1, global_batch=15360, zero=1, dtype="fp8",
                  recompute="selective", framework="megatron", dp_comm_overlap=True)
    layout.update(values)
    return single_batch(PRESETS["deepseek-v3"], make_layout(**layout))


def test_the_mtp_block_is_on_the_last_stage_as_megatrons_layout_string_places_it():
    """DeepSeek-V3's 61 layers over 16 stages split 3 | 4 x 14 | 2 (Megatron's uneven split, as before), and its
    MTP block goes after the last two: the launch's layout string names it ('m') in the same stage."""
    batch = _deepseek()
    first, middle, last = (float(x[0]) for x in batch.stages)
    assert (first, middle, last) == (3.0, 4.0, 3.0)
    (flag, layout_string), = pipeline_split_arguments(61, 16, 1, mtp_layers=1)
    assert flag == "--pipeline-model-parallel-layout"
    last_stage = layout_string.split("|")[-1]  # "t*2mL": x*n repeats x (pipeline_parallel_layer_layout.py:283-321)
    transformer = sum(int(n or 1) for n in re.findall(r"t(?:\*(\d+))?", last_stage))
    assert (transformer, last_stage.count("m"), last_stage.endswith("L")) == (2, 1, True)
    assert transformer + 1 == last
    # One stage: it holds every layer and the block.
    assert [float(x) for x in stage_layers(61, 1, 1, 1)] == [62.0, 62.0, 62.0]
    # Without the block the split is the model's own.
    assert [float(x) for x in stage_layers(61, 16, 1)] == [3.0, 4.0, 2.0]


def test_megatron_builds_the_embedding_again_on_the_mtp_stage_and_dualpipe_shares_it():
    model = PRESETS["deepseek-v3"]
    plain = _deepseek(framework="other", moe_a2a_overlap="none")
    paired = _deepseek(framework="other", moe_a2a_overlap="dualpipe")
    extra = stage_param_counts(plain)[2][0] - stage_param_counts(paired)[2][0]
    assert extra == pytest.approx(model.vocab * model.hidden, rel=1e-3)  # tp 1: the whole embedding (plus padding)
    assert stage_param_counts(plain)[0][0] == stage_param_counts(paired)[0][0]


def _dense_batch(mtp_layers, pp):
    model = preset("llama3-8b").model_copy(update={"mtp_layers": mtp_layers})
    layout = make_layout(tp=1, pp=pp, dp=1, micro_batch=1, global_batch=16, framework="megatron")
    return single_batch(model, layout)


def _dense(mtp_layers, pp):
    return estimate(_dense_batch(mtp_layers, pp), load_cluster("dgx-h100"))


def test_each_mtp_block_runs_the_output_layer_once_more_on_the_pacing_last_stage():
    """llama3-8b (32 layers) at pp 4 with one MTP block: the last stage (8 layers + the block) paces, with two
    passes of the output layer and the block's 2h -> h projection (eh_proj). A layer's and the output layer's forward
    seconds come from the model without it at pp 4 (8 layers + 1 pass) and pp 1 (32 + 1); the forward of the one
    with it is then 9 layers + 2 passes + the projection's GEMM (tokens x h x 2h)."""
    m = 16
    at_pp4, at_pp1 = (float(_dense(0, pp).time["parts"]["forward"][0]) / m for pp in (4, 1))
    layer = (at_pp1 - at_pp4) / 24.0
    head = at_pp4 - 8.0 * layer
    assert layer > 0 and head > 0
    with_mtp = float(_dense(1, 4).time["parts"]["forward"][0]) / m
    projection = float(step_time._layer_seconds(_dense_batch(1, 4), load_cluster("dgx-h100"))["mtp_projection"][0])
    assert 0 < projection < 0.5 * layer
    assert with_mtp == pytest.approx(9.0 * layer + 2.0 * head + projection, rel=1e-9)


def test_the_mtp_loss_keeps_its_logits_too():
    without, with_mtp = (_dense(mtp, 1).memory["parts"]["logits"][0] for mtp in (0, 1))
    assert with_mtp == pytest.approx(2.0 * without, rel=1e-12)


def _pace(batch, cluster):
    fw = step_time.batch_framework_arrays(batch)
    _, hbm, half, gemm_peak = step_time.rank_rates(batch, cluster)
    seconds = step_time._layer_seconds(batch, cluster)
    layer = step_time._layer_with_moe(batch, cluster, fw, seconds, gemm_peak, half, hbm)
    return step_time._pacing_stage(batch, cluster, fw, hbm, layer, step_time._last_stage_head(batch, seconds),
                                   np.zeros(1))


def test_dualpipe_paces_the_end_ranks_by_the_mean_of_the_first_and_last_stage():
    """Without pairing the last stage (2 layers + the MTP block + 2 output-layer passes) paces the 1F1B pipeline.
    DualPipe's rank 0 runs half the micro-batches through stage 0 (3 layers) and half through stage 15: per
    micro-batch 3 layers and one pass, or a middle rank's 4 layers, whichever is slower; never two passes."""
    cluster = load_cluster("h800-deepseek")
    batch = _deepseek(framework="other", moe_a2a_overlap="none")
    head = float(step_time._last_stage_head(batch, step_time._layer_seconds(batch, cluster))[0])
    unpaired = _pace(batch, cluster)
    assert float(unpaired["layers"][0]) == 3.0 and float(unpaired["head"][0]) == pytest.approx(head, rel=1e-12)
    paired = _pace(_deepseek(framework="other", moe_a2a_overlap="dualpipe"), cluster)
    assert (float(paired["layers"][0]), float(paired["head"][0])) in ((3.0, pytest.approx(head / 2)), (4.0, 0.0))
