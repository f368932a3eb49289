"""What a stack refuses for experts at ZeRO-3, in simulate and in the searches alike. DeepSpeed 0.19.8 runs MoE
at ZeRO-3 only through AutoEP, and its engine refuses qgZ, hpZ secondary groups and expert tensor parallelism
other than 1 there (deepspeed/runtime/engine.py, _validate_zero3_moe_compatibility)."""

import numpy as np
import pytest

from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORK_CODES
from planner.search.layouts import enumerate_layouts
from planner.specs.layout import make_layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import PRESETS


@pytest.mark.parametrize("extra, flag", [
    (dict(zero_hpz=8), "--zero-hpz 8"),
    (dict(zero_quantized_gradients=True), "--zero-quantized-gradients"),
    (dict(tp=2, dp=32, ep=8), "--etp 2"),
])
def test_deepspeed_moe_at_zero3_refuses_what_autoep_refuses(extra, flag):
    values = dict(tp=1, pp=1, dp=64, ep=8, micro_batch=1, global_batch=64, zero=3, framework="deepspeed")
    values.update(extra)
    with pytest.raises(PlannerInputError) as error:
        check_layout(PRESETS["mixtral-8x7b"], make_layout(**values))
    assert flag in str(error.value) and "AutoEP" in str(error.value) and "\n" not in str(error.value)
    # The same layout runs on a stack without the limit, and at ZeRO-3 with etp 1 and no hpZ / qgZ on DeepSpeed.
    check_layout(PRESETS["mixtral-8x7b"], make_layout(**{**values, "framework": "other"}))
    check_layout(PRESETS["mixtral-8x7b"], make_layout(**{**values, "zero_hpz": 1, "zero_quantized_gradients": False,
                                                         "etp": 1}))


def test_simulate_names_the_flag_with_exit_code_2(cli):
    code, out, err = cli(["simulate", "--model", "mixtral-8x7b", "--gpus", 64, "--ep", 8, "--zero", 3,
                          "--framework", "deepspeed", "--zero-hpz", 8])
    assert code == 2 and "--zero-hpz 8" in err and len(err.strip().splitlines()) == 1 and not out


def test_the_search_offers_no_zero3_expert_layout_deepspeed_refuses():
    arrays = enumerate_layouts(PRESETS["qwen3-30b-a3b"], 64, 256, ("deepspeed", "fsdp"), gpus_per_node=8)
    deepspeed = arrays["framework"] == FRAMEWORK_CODES["deepspeed"]
    zero3 = deepspeed & (arrays["zero"] == 3)
    assert zero3.any() and (deepspeed & (arrays["zero"] < 3) & (arrays["zero_hpz"] == 1)).any()
    assert not (zero3 & ((arrays["zero_hpz"] > 1) | arrays["zero_quantized_gradients"] | (arrays["etp"] != 1))).any()
    # FSDP has no such limit: its hierarchy rows stay.
    fsdp = arrays["framework"] == FRAMEWORK_CODES["fsdp"]
    assert (fsdp & (arrays["shard_group"] > 0)).any()
