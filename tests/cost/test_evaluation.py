"""Evaluation passes the launch files run are priced (planner.cost.evaluation), at the cadence they write."""

from __future__ import annotations

import numpy as np
import pytest

from planner.cost.estimate import simulate
from planner.cost.evaluation import forward_only_seconds
from planner.cost.goodput import goodput_summary
from planner.emit import launch_files
from planner.frameworks import FRAMEWORKS
from planner.specs.clusters import load_cluster
from planner.specs.layout import make_layout
from planner.specs.model import PRESETS


@pytest.fixture(scope="module")
def h100():
    return load_cluster("dgx-h100")


def _layout(framework: str, **fields):
    base = dict(tp=8, pp=4, dp=2, micro_batch=1, global_batch=64, zero=1 if framework != "fsdp" else 3,
                framework=framework)
    return make_layout("t", **{**base, **fields})


@pytest.mark.parametrize("framework, flags", [("megatron", ("--eval-interval", "--eval-iters")),
                                              ("deepspeed", ("--eval-interval", "--eval-iters"))])
def test_launch_files_evaluate_at_the_priced_cadence(h100, framework, flags):
    stack = FRAMEWORKS[framework]
    assert stack.eval_interval_steps > 0 and stack.eval_iters > 0
    layout = _layout(framework, pp=1, dp=8, zero=1)
    script = launch_files(PRESETS["llama2-7b"], layout, h100)["launch.sh"]
    words = script.split()
    interval, iters = (words[words.index(flag) + 1] for flag in flags)
    assert (float(interval), float(iters)) == (stack.eval_interval_steps, stack.eval_iters)


def test_an_evaluation_iteration_is_the_steps_forward_share(h100):
    model = PRESETS["llama2-70b"]
    result = simulate(model, _layout("megatron"), h100)
    parts = result["time"]
    iteration = float(forward_only_seconds(parts, 1))
    # More than the forward compute (its communication and bubble ride along), well under a training step
    # (no backward, no optimizer): forward is about a third of forward + backward.
    assert parts["forward"] < iteration < 0.5 * result["step_time_s"]
    stack = FRAMEWORKS["megatron"]
    expected = iteration * stack.eval_iters / stack.eval_interval_steps / result["step_time_s"]
    assert result["evaluation_fraction"] == pytest.approx(expected, rel=1e-9)


def test_zero3_prices_the_forward_parameter_gathers_again(h100):
    parts = simulate(PRESETS["llama2-70b"], _layout("megatron", tp=8, pp=1, dp=8, zero=1), h100)["time"]
    gathered = {**parts, "dp_comm_exposed": 1.0}
    assert float(forward_only_seconds(gathered, 3)) > float(forward_only_seconds(gathered, 1))


def test_a_launch_without_evaluation_prices_none(h100):
    result = simulate(PRESETS["llama3-8b"], make_layout("t", tp=1, pp=1, dp=64, zero=3, micro_batch=1,
                                                        global_batch=64, framework="fsdp"), h100)
    assert result["evaluation_fraction"] == 0.0


def test_goodput_and_days_count_evaluation(h100):
    model = PRESETS["llama2-70b"]
    result = simulate(model, _layout("megatron"), h100)
    fraction = result["evaluation_fraction"]
    summary = goodput_summary(model.total_params, 64, h100, framework="megatron", evaluation_fraction=fraction)
    assert summary["goodput"] == pytest.approx(summary["failure_goodput"] / (1.0 + fraction))


def test_the_layout_search_folds_evaluation_into_goodput(h100):
    from planner.search.layouts import search_layouts

    search = search_layouts(PRESETS["llama3-8b"], h100, 64, global_batch=512, frameworks=("megatron",))
    fitting = np.flatnonzero(search.fits)
    failure_only = goodput_summary(PRESETS["llama3-8b"].total_params, 64, h100, framework="megatron")["goodput"]
    assert np.all(search.goodputs[fitting] < failure_only)
    assert np.all(search.evaluation_fractions[fitting] > 0)



def test_the_report_names_the_evaluation_share_of_a_plan(h100):
    """planner report's speed line says what its goodput counts: the plan's evaluation passes among them."""
    from planner.cost.evaluation import plan_evaluation
    from planner.report.document import _evaluation_text

    layout = _layout("megatron")
    result = simulate(PRESETS["llama2-70b"], layout, h100)
    plan = {"layout": layout.model_dump(), "time": result["time"], "step_time_s": result["step_time_s"]}
    plan["evaluation"] = plan_evaluation(plan)  # as search/plan_record.describe records it
    assert plan["evaluation"]["fraction"] == pytest.approx(result["evaluation_fraction"])
    assert f"{100 * result['evaluation_fraction']:.2f}% of training time" in _evaluation_text(plan)
    fsdp = {**plan, "layout": {**plan["layout"], "framework": "fsdp"}}
    fsdp["evaluation"] = plan_evaluation(fsdp)
    assert fsdp["evaluation"]["fraction"] == 0.0 and _evaluation_text(fsdp) == ""
