"""The searches try tp a multiple of the key/value heads where the stack runs it, as simulate accepts.

Megatron-Core runs tensor parallelism wider than the key/value heads, replicating each head over tp / kv ranks
(Framework.tp_multiple_of_kv_heads; its extra gathers are priced in cost/model_parallel_comm.py), and
`check_layout` accepted such layouts, but both searches required tp to divide the kv heads: Qwen3-30B-A3B (32 heads,
4 kv heads) was never searched at tp 8 on Megatron. torchtitan and Megatron-DeepSpeed shard the kv heads whole and
still get only divisors. What tp must split is one rule now (layout_checks.tp_splits_model), which check_layout's
messages and the two searches' filters agree with.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORK_CODES, FRAMEWORKS
from planner.search.layouts import search_layouts
from planner.search.space import enumerate_space
from planner.specs.clusters import load_cluster
from planner.specs.layout import make_layout
from planner.specs.layout_checks import check_layout, tp_splits_model
from planner.specs.model import make_model, preset


@pytest.mark.parametrize("framework", ["megatron", "fsdp", "deepspeed"])
def test_the_vectorised_rule_agrees_with_check_layout(framework):
    kv_multiple = FRAMEWORKS[framework].tp_multiple_of_kv_heads
    checked = 0
    for heads, kv, ffn, seq, tp, cp, sp in itertools.product((12, 16, 32), (1, 2, 4, 16), (1536, 3072, 5000),
                                                            (2048, 1000), (1, 2, 4, 8, 16), (1, 2), (False, True)):
        if heads % kv:
            continue
        model = make_model("m", layers=4, hidden=heads * 64, heads=heads, kv_heads=kv, ffn=ffn, seq_len=seq, vocab=1000)
        layout = make_layout(tp=tp, cp=cp, dp=1, global_batch=1, seq_parallel=sp, framework=framework)
        try:
            check_layout(model, layout)
            accepted = True
        except PlannerInputError as error:
            accepted = not any(word in str(error) for word in ("by tp", "tp a divisor"))
        assert bool(tp_splits_model(heads, kv, ffn, seq, tp, cp, sp, kv_multiple)) == accepted, (heads, kv, ffn, seq, tp, cp, sp)
        checked += 1
    assert checked > 1000


def test_layout_search_tries_tp_past_the_kv_heads_on_megatron_only():
    model = preset("qwen3-30b-a3b")
    assert (model.heads, model.kv) == (32, 4)
    found = search_layouts(model, load_cluster("dgx-h100"), 64, global_batch=512, frameworks=("megatron", "fsdp"))
    stack, tp = found.arrays["framework"], found.arrays["tp"]
    megatron, fsdp = FRAMEWORK_CODES["megatron"], FRAMEWORK_CODES["fsdp"]
    assert {8, 16} <= set(np.unique(tp[stack == megatron]).tolist())
    assert tp[stack == fsdp].max() == 4
    wide = int(np.flatnonzero((tp == 8) & found.fits)[0])
    check_layout(model, found.layout(wide))  # a layout simulate runs


def test_budget_search_space_does_the_same():
    model = make_model("gqa-2", layers=8, hidden=2048, heads=16, kv_heads=2, ffn=5632, mlp="swiglu", seq_len=2048,
                       vocab=32000)
    space = enumerate_space([model], [8], 8, frameworks=("megatron", "fsdp"))
    names = np.array([FRAMEWORKS[name].name for name in FRAMEWORKS])[space.arrays["framework"]]
    tp = space.arrays["tp"]
    assert set(tp[names == "megatron"].tolist()) == {1, 2, 4, 8}
    assert set(tp[names == "fsdp"].tolist()) == {1, 2}
    only_fsdp = enumerate_space([model], [8], 8, frameworks=("fsdp",))
    assert set(only_fsdp.arrays["tp"].tolist()) == {1, 2}
