"""Every training stack has its own MoE row (frameworks.moe.MOE_STACKS): a stack without one used to run MoE as
"other", the neutral stack that stands for DeepSeek's (DualPipe, fp8 dispatch and fp8 expert storage)."""

import pytest

from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORK_NAMES
from planner.frameworks.moe import MOE_STACKS
from planner.specs.layout import make_layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import PRESETS


def test_every_stack_has_an_moe_row():
    assert set(MOE_STACKS) == set(FRAMEWORK_NAMES)


@pytest.mark.parametrize("framework, zero, overlap", [("megascale", 1, "dualpipe"), ("llm-foundry", 2, "megatron")])
def test_a_stack_runs_only_its_own_all_to_all_overlaps(framework, zero, overlap):
    pp = 2 if overlap == "dualpipe" else 1
    layout = make_layout(tp=1, pp=pp, dp=8, ep=8, micro_batch=1, global_batch=64, zero=zero, framework=framework,
                         moe_a2a_overlap=overlap)
    with pytest.raises(PlannerInputError, match=f"moe_a2a_overlap={overlap}: {framework} runs"):
        check_layout(PRESETS["mixtral-8x7b"], layout)
