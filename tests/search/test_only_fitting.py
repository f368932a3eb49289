"""The dense-vs-MoE comparison's searches drop the layouts whose parameter states alone overflow HBM before pricing
their activations (search_layouts(only_fitting=True), cost.memory.state_bytes_lower_bound). The bound must never
exceed a layout's full memory (tests/cost/test_distinct.py), and the pruned search must pick exactly the layout the full one picks."""

from __future__ import annotations

import pytest

from planner.search.layouts import search_layouts
from planner.specs.clusters import load_cluster
from planner.specs.model import family_model, family_moe_model, preset


@pytest.mark.parametrize("model, gpus", [(family_moe_model(16, experts=64, granularity=4), 64),
                                         (family_model(40), 32), (preset("mixtral-8x7b"), 32)])
def test_the_pruned_search_picks_the_full_searchs_layout(model, gpus):
    cluster = load_cluster("dgx-h100")
    full = search_layouts(model, cluster, gpus, frameworks=("megatron",))
    pruned = search_layouts(model, cluster, gpus, frameworks=("megatron",), only_fitting=True)
    assert len(pruned.fits) < len(full.fits)  # it pruned something
    assert pruned.fits.sum() == full.fits.sum()  # but no layout that fits
    assert full.best is not None and pruned.layout(pruned.best) == full.layout(full.best)
    assert pruned.step_time_s[pruned.best] == full.step_time_s[full.best]


def _bounded(model, cluster, arrays, dtype, limit):
    """The rows of `arrays` whose parameter states fit `limit` (the exact per-layout test _score_layouts applies)."""
    import dataclasses

    import numpy as np

    from planner.cost.memory import state_bytes_lower_bound
    from planner.frameworks.moe import default_routing_columns
    from planner.specs.candidate_batch import DTYPE_CODES, build_batch

    batch = build_batch([model], np.zeros(len(arrays["tp"]), dtype=np.int64), **arrays, dtype=DTYPE_CODES[dtype])
    if model.is_moe:
        batch = dataclasses.replace(batch, **default_routing_columns(batch.framework, 1.0))
    kept = state_bytes_lower_bound(batch) <= limit
    return {name: column[kept] for name, column in arrays.items()}


@pytest.mark.parametrize("model, gpus, global_batch, frameworks, headroom", [
    (family_moe_model(24, experts=64, granularity=8), 128, None, ("megatron",), 0.0),
    (family_moe_model(16, experts=64, granularity=4), 64, 512, ("megatron", "deepspeed"), 0.1),
    (preset("mixtral-8x7b"), 32, None, ("megatron", "deepspeed", "fsdp"), 0.0),
    (preset("llama3-70b"), 64, 256, ("megatron", "deepspeed", "fsdp"), 0.05),
    (family_model(40), 32, None, ("megatron", "deepspeed", "fsdp"), 0.0),
])
def test_pairs_dropped_before_the_crossing_are_only_layouts_the_exact_bound_drops(model, gpus, global_batch,
                                                                                 frameworks, headroom):
    """enumerate_layouts(states_within=...) drops (placement, stack option) pairs whose every layout's parameter
    states overflow HBM before crossing them with micro-batches, recompute, sp, TP overlap and partitioned
    checkpoints. After the exact per-layout bound, the layouts kept are those of the full crossing, column for
    column and in the same order (which breaks the search's ties)."""
    import functools

    import numpy as np

    from planner.search.layouts import (LOSSLESS_HIERARCHY, _states_within, batch_sequences, enumerate_layouts)

    cluster = load_cluster("dgx-h100")
    limit = cluster.accelerator.hbm_bytes * (1.0 - headroom)
    target = None if global_batch else batch_sequences(model, 20.0 * model.total_params)
    options = dict(frameworks=frameworks, batch_target=target, dtype="bf16", gpus_per_node=cluster.gpus_per_node,
                   hierarchy=LOSSLESS_HIERARCHY)
    full = enumerate_layouts(model, gpus, global_batch, **options)
    within = functools.partial(_states_within, model, cluster, "bf16", 1.0, limit, cluster.gpus_per_node,
                               LOSSLESS_HIERARCHY)
    pruned = enumerate_layouts(model, gpus, global_batch, **options, states_within=within)
    assert len(pruned["tp"]) < len(full["tp"])  # it dropped pairs before the crossing
    expected, got = _bounded(model, cluster, full, "bf16", limit), _bounded(model, cluster, pruned, "bf16", limit)
    assert len(expected["tp"]) > 0 and sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
