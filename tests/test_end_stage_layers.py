"""The end pipeline ranks' layers, as a layout sets them (Layout.first_stage_layers, last_stage_layers): Megatron-Core's
--decoder-first/last-pipeline-num-layers or a layout string's end ranks (NVIDIA/Megatron-LM@d98e8a64
megatron/core/transformer/transformer_config.py:2241-2345), which NVIDIA's recipes set to make room for the output
layer, the loss and the multi-token-prediction block on the last rank (Megatron-Bridge@067f987d recipes/deepseek/
deepseek_v3.py `layout_map`). simulate prices the split, the launch writes it, the fixed-model search tries the last
rank lighter (pipeline_stages.lighter_last_splits) and keeps what its cost model times fastest."""

import re

import numpy as np
import pytest

from planner.cost.estimate import estimate
from planner.emit.megatron import pipeline_split_arguments
from planner.specs.pipeline_chunks import rank_layers, virtual_stage_layers
from planner.errors import PlannerInputError
from planner.search.layouts import search_layouts
from planner.specs.candidate_batch import single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import make_layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import PRESETS, preset
from planner.specs.pipeline_stages import (chunk_share, last_rank_extra_layers, lighter_last_most, lighter_last_splits,
                                          stage_layers)


def _deepseek(**values):
    layout = dict(tp=1, pp=16, dp=16, ep=8, micro_batch=1, global_batch=2048, zero=1, dtype="fp8",
                  framework="megatron", dp_comm_overlap=True, grad_reduce_in_fp32=False, fp8_param_gather=True,
                  loss_fusion=True)
    layout.update(values)
    return make_layout(**layout)


def test_the_recipes_split_is_priced_and_written_as_set():
    """NVIDIA's DeepSeek-V3 B200 recipe (pp 16): 4 layers and the embedding on the first rank, 1 layer, the MTP block
    and the loss on the last, 4 on each other rank. The stages are what the layout says, the launch's layout string
    holds the same split, and the last rank (1 layer, the MTP block, two output-layer passes) no longer paces the step:
    it is shorter than with Megatron's own split (3 | 4 x 14 | 2 + MTP)."""
    model, cluster = PRESETS["deepseek-v3"], load_cluster("dgx-b200")
    recipe = _deepseek(first_stage_layers=4, last_stage_layers=1)
    check_layout(model, recipe, gpus=256)
    batch = single_batch(model, recipe)
    assert [float(x[0]) for x in batch.stages] == [4.0, 4.0, 2.0]  # the MTP block on the last rank
    assert rank_layers(61, 16, 1, 4, 1) == [4] * 15 + [1]
    (flag, layout_string), = pipeline_split_arguments(61, 16, 1, 1, 4, 1)
    stages = layout_string.split("|")
    assert flag == "--pipeline-model-parallel-layout" and stages[0] == "Et*4" and stages[-1] == "tmL"
    own = estimate(single_batch(model, _deepseek()), cluster).time["step_time_s"][0]
    assert estimate(batch, cluster).time["step_time_s"][0] < own


def test_an_unset_end_takes_the_lightest_share_and_the_middle_ranks_the_rest():
    assert [float(x) for x in stage_layers(61, 4, 1, last_set=13)] == [16.0, 16.0, 13.0]
    assert [float(x) for x in stage_layers(61, 4, 1, first_set=13)] == [13.0, 16.0, 16.0]
    assert [float(x) for x in stage_layers(61, 2, 1, last_set=29)] == [32.0, 32.0, 29.0]
    # Interleaved: the largest chunk of the fullest rank, an end rank where the layout fills it most (17 in 8: 3/17).
    assert float(chunk_share(61, 4, 8, 17, 12)) == pytest.approx(3 / 17)
    assert sum(virtual_stage_layers(61, 4, 8, 16, 13)) == 61


@pytest.mark.parametrize("values, named", [
    (dict(pp=1, dp=256, last_stage_layers=1), "needs pipeline parallelism"),
    (dict(pp=2, dp=128, first_stage_layers=30, last_stage_layers=30), "hold all 61"),
    (dict(pp=4, vpp=8, dp=64, last_stage_layers=5, moe_a2a_overlap="megatron"), "fewer than vpp(8)"),
    (dict(pp=4, dp=64, first_stage_layers=40, last_stage_layers=30), "fewer than vpp(1)"),
    (dict(pp=4, dp=64, last_stage_layers=13, framework="deepspeed", dtype="bf16", grad_reduce_in_fp32=None,
          fp8_param_gather=False, loss_fusion=False), "splits the layers over its pipeline ranks by its own rule"),
])
def test_splits_no_stack_can_run_are_refused(values, named):
    with pytest.raises(PlannerInputError, match=re.escape(named)):
        check_layout(PRESETS["deepseek-v3"], _deepseek(**values), gpus=256)


def test_the_searched_splits_lighten_the_last_rank_only():
    """DeepSeek-V3 on pp 4 x vpp 8 and on pp 16: the recipes' splits (16/16/16/13 and 4 x 15 | 1) are among those tried;
    none makes the last rank heavier than Megatron's own split, and every rank keeps a layer per virtual stage."""
    assert (16, 13) in lighter_last_splits(61, 4, 8) and (4, 1) in lighter_last_splits(61, 16, 1)
    for layers, pp, vpp in ((61, 4, 8), (61, 16, 1), (80, 8, 1), (126, 8, 8), (32, 4, 8), (61, 2, 1)):
        own_last = float(stage_layers(layers, pp, vpp)[2])
        for first, last in lighter_last_splits(layers, pp, vpp):
            f, m, l = (float(x) for x in stage_layers(layers, pp, vpp, first_set=first, last_set=last))
            assert l < own_last and min(f, l, (layers - f - l) // max(pp - 2, 1) if pp > 2 else m) >= vpp
            assert sum(rank_layers(layers, pp, vpp, first, last)) == layers
    assert lighter_last_splits(61, 1, 1) == []


def test_the_search_prices_a_searched_split_as_simulate_does():
    """A dense model whose output layer is a large share of a layer's work (Llama 3 8B: 128K vocabulary, 4,096 wide)
    on pp 4: the search scores the splits with a lighter last rank beside Megatron's own; the chosen layout, fed to
    simulate, gives the same step."""
    model, cluster = preset("llama3-8b"), load_cluster("dgx-h100")
    found = search_layouts(model, cluster, 8, global_batch=64, frameworks=("megatron",))
    last = found.arrays["last_stage_layers"]
    assert np.any(last > 0) and np.any(last == 0)
    pipelined = np.flatnonzero((last > 0) & found.feasible)
    i = int(pipelined[np.argmin(found.step_time_s[pipelined])])
    layout = found.layout(i)
    assert layout.last_stage_layers is not None
    step = estimate(single_batch(model, layout), cluster).time["step_time_s"][0]
    assert step == pytest.approx(found.step_time_s[i], rel=1e-9)


def test_the_search_tries_as_many_lighter_layers_as_the_last_rank_has_extra_work():
    """The output layer (and MTP block) in layers of the model's FLOPs, by hand for Llama 3 405B: 3 x 2·h·V over
    126 layers of 3 x (2 x 3.15B parameters' FLOPs + causal attention 2·s·h), about 0.63; the search's range follows it
    (rounded, at most 3): none where the head is under half a layer (GPT-3 175B, V = 50K at h = 12,288)."""
    model = preset("llama3-405b")
    h, V, s = model.hidden, model.vocab, model.seq_len
    head = 2.0 * h * V
    layer = 2.0 * (model.non_embedding_params / model.layers) + 2.0 * s * h  # attention core, causal: 4·s·h / 2
    assert last_rank_extra_layers(model) == pytest.approx(head / layer, rel=0.02)
    assert [lighter_last_most(preset(n)) for n in ("gpt3-175b", "llama3-405b", "llama3-70b", "llama3-8b")] == [0, 1, 1, 2]
    assert lighter_last_most(PRESETS["deepseek-v3"]) == 3 and last_rank_extra_layers(PRESETS["deepseek-v3"]) > 3.5
    assert lighter_last_splits(96, 8, 1, most=0) == []


def test_deepspeed_keeps_its_own_split_in_the_search():
    model, cluster = preset("llama3-8b"), load_cluster("dgx-h100")
    found = search_layouts(model, cluster, 8, global_batch=64, frameworks=("deepspeed",))
    assert not np.any(found.arrays["last_stage_layers"]) and np.any(found.arrays["pp"] > 1)


def test_the_deepspeed_launch_says_it_runs_its_own_split():
    """Review-found: --emit-deepspeed wrote a plan with a set split as plain --pipeline-model-parallel-size, and
    DeepSpeed's engine then ran its own partition silently; the launch notes now say so (as for vpp and cp)."""
    from planner.emit.deepspeed import compatibility_notes

    layout = make_layout(tp=2, pp=4, dp=8, micro_batch=1, global_batch=512, framework="megatron", zero=1,
                         first_stage_layers=9, last_stage_layers=6)
    assert any("first_stage_layers=9, last_stage_layers=6" in note and "its own split" in note
               for note in compatibility_notes(layout, 8))
    assert not any("first_stage_layers" in note for note in compatibility_notes(layout.model_copy(
        update={"first_stage_layers": None, "last_stage_layers": None}), 8))


def test_only_the_stacks_that_set_a_split_are_given_one():
    from planner.frameworks import FRAMEWORKS

    assert {name for name, stack in FRAMEWORKS.items() if stack.sets_end_stage_layers} == {"megatron", "fsdp", "other"}
