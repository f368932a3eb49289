"""Megatron-Core trains an MoE model at tp > 1 only with sequence parallelism.

Its MoE layer raises on the first training forward otherwise ("During training, performance may degrade if MoE and
tensor parallelism are enabled without also enabling sequence parallelism", NVIDIA/Megatron-LM@d98e8a64
megatron/core/transformer/moe/moe_layer.py:636-640; validate_args only warns). simulate priced such layouts, the
searches offered them and --emit wrote them; now the stack's data says so (MoEStack.tp_needs_sequence_parallel)
and all three refuse or skip them.
"""

from __future__ import annotations

import numpy as np
import pytest

from planner.emit import launch_problems
from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORK_CODES
from planner.search.layouts import search_layouts
from planner.specs.clusters import load_cluster
from planner.specs.layout import make_layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import preset

QWEN3 = preset("qwen3-30b-a3b")


def test_simulate_and_emit_refuse_megatron_moe_at_tp_without_sequence_parallelism():
    layout = make_layout(tp=2, dp=4, ep=4, global_batch=64, framework="megatron")
    with pytest.raises(PlannerInputError, match="seq_parallel=0 with an MoE model at tp"):
        check_layout(QWEN3, layout)
    assert any("seq_parallel=0" in problem for problem in launch_problems(QWEN3, layout))
    check_layout(QWEN3, layout.model_copy(update={"seq_parallel": True}))  # with it, it runs
    check_layout(preset("llama3-8b"), layout.model_copy(update={"ep": 1}))  # a dense model needs none


def test_the_layout_search_offers_megatron_moe_at_tp_only_with_sequence_parallelism():
    found = search_layouts(QWEN3, load_cluster("dgx-h100"), 16, global_batch=64, frameworks=("megatron",))
    tp, sp = found.arrays["tp"], found.arrays["seq_parallel"]
    assert (tp > 1).any() and (tp == 1).any()
    assert sp[tp > 1].all()
    assert (found.arrays["framework"] == FRAMEWORK_CODES["megatron"]).all()
    assert np.isfinite(found.step_time_s[found.fits]).all()
