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
