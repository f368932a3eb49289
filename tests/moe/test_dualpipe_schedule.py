"""DualPipe's schedule runs an even number of pipeline stages and an even number of micro-batches per step, at
least two per stage (deepseek-ai/DualPipe dualpipe.py, DualPipe.step's asserts; arXiv:2412.19437 section 3.2.1):
simulate refuses other layouts naming the flag, and the searches offer none."""

import numpy as np
import pytest

from planner.errors import PlannerInputError
from planner.frameworks.moe import A2A_OVERLAP_CODES
from planner.search.layouts import enumerate_layouts
from planner.specs.layout import make_layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import PRESETS

DUALPIPE = A2A_OVERLAP_CODES["dualpipe"]


def _layout(pp, micro_batches, vpp=1):
    dp = 8
    return make_layout(tp=1, pp=pp, vpp=vpp, dp=dp, ep=8, micro_batch=1, global_batch=micro_batches * dp, zero=1,
                       framework="other", moe_a2a_overlap="dualpipe")


@pytest.mark.parametrize("pp, micro_batches, vpp, words", [
    (1, 8, 1, "--pp 2, 4"), (3, 12, 1, "--pp 2, 4"), (4, 8, 2, "--vpp 1"), (4, 6, 1, "at least 2 x pp(4) = 8"),
    (4, 9, 1, "got global_batch"),
])
def test_simulate_refuses_what_dualpipe_cannot_schedule(pp, micro_batches, vpp, words):
    with pytest.raises(PlannerInputError) as error:
        check_layout(PRESETS["qwen3-30b-a3b"], _layout(pp, micro_batches, vpp))
    assert words in str(error.value) and "--moe-a2a-overlap dualpipe" in str(error.value)


@pytest.mark.parametrize("pp, micro_batches", [(2, 4), (4, 8), (4, 10)])
def test_dualpipe_schedules_run(pp, micro_batches):
    check_layout(PRESETS["qwen3-30b-a3b"], _layout(pp, micro_batches))


@pytest.mark.parametrize("batch", [dict(global_batch=192), dict(global_batch=None, batch_target=96)])
def test_the_search_offers_only_dualpipe_schedules_that_run(batch):
    arrays = enumerate_layouts(PRESETS["qwen3-30b-a3b"], 48, frameworks=("other",), **batch)
    dual = arrays["a2a_overlap"] == DUALPIPE
    assert (dual & (arrays["pp"] > 1)).any()
    m = arrays["global_batch"] // (arrays["micro_batch"] * arrays["dp"])
    pp = arrays["pp"][dual]
    assert (pp % 2 == 0).all() and (arrays["vpp"][dual] == 1).all()
    assert (m[dual] % 2 == 0).all() and (m[dual] >= 2 * pp).all()
