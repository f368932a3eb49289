"""Issue 15 (part): the package-top API, `python -m planner`, 'did you mean', numbers accepted as printed."""

from __future__ import annotations

import subprocess
import sys

import pytest

import planner
from planner.specs import units
from planner.errors import PlannerInputError


def test_python_dash_m_planner_is_the_cli():
    done = subprocess.run([sys.executable, "-m", "planner", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and planner.__version__ in done.stdout + done.stderr


def test_simulate_takes_names_and_matches_the_cost_model():
    from planner.cost.estimate import simulate
    from planner.specs.clusters import load_cluster
    from planner.specs.model import preset

    layout = planner.make_layout(tp=8, global_batch=8)
    by_name = planner.simulate("llama3-8b", layout, "dgx-h100")
    direct = simulate(preset("llama3-8b"), layout, load_cluster("dgx-h100"))
    assert by_name["step_time_s"] == direct["step_time_s"] and by_name["fits"] == direct["fits"]


def test_plan_is_optimize():
    result = planner.plan(1000)
    assert result.status == "ok" and result.plan["gpu_hours"] == pytest.approx(1000, rel=1e-6)


@pytest.mark.parametrize("call, hint", [
    (lambda: planner.load_cluster("h100"), "did you mean 'dgx-h100'"),
    (lambda: planner.preset("llama3-70"), "did you mean 'llama3-70b'"),
])
def test_unknown_names_suggest_the_closest(call, hint):
    with pytest.raises(PlannerInputError, match=hint):
        call()


@pytest.mark.parametrize("text, seconds", [("10,000gpuh", 3.6e7), ("737,280 GPU-hours", 737280 * 3600.0)])
def test_gpu_hours_as_printed_are_accepted(text, seconds):
    assert units.parse_gpu_hours(text, "--budget") == seconds


def test_months_and_years_are_durations():
    assert units.parse_duration("1mo", "--deadline") == 30 * 86400
    assert units.parse_duration("1y", "--deadline") == 365 * 86400


@pytest.mark.parametrize("text", ["1,5B", "10,00gpuh", ",100"])
def test_misplaced_separators_are_refused(text):
    with pytest.raises(PlannerInputError):
        (units.parse_gpu_hours if "gpuh" in text else units.parse_count)(text, "--flag")


def test_simulate_takes_gpus_and_layout_fields():
    """`planner.simulate("llama3-70b", gpus=64, tp=8, ...)`: dp follows from the GPUs, one micro-batch per replica."""
    import planner
    from planner.cost.estimate import simulate as run

    given = planner.simulate("llama3-70b", gpus=64, tp=8, zero=1, recompute="full")
    spelled = run(planner.preset("llama3-70b"),
                  planner.make_layout(tp=8, dp=8, zero=1, recompute="full", global_batch=8),
                  planner.load_cluster("dgx-h100"))
    assert given["step_time_s"] == spelled["step_time_s"] and given["fits"] == spelled["fits"]
    with pytest.raises(ValueError, match="not a multiple of tp x pp x cp = 8"):
        planner.simulate("llama3-70b", gpus=60, tp=8)
    with pytest.raises(TypeError, match="not both"):
        planner.simulate("llama3-70b", planner.make_layout(), gpus=8)


def test_model_by_name_is_the_issue_spelling():
    """Issue 15: `planner.simulate(planner.model("llama3-70b"), gpus=64, cluster="dgx-h100")` (the model
    module lives in planner.specs, so the package-top name is free for the function)."""
    from planner.specs.model import preset

    assert planner.model("llama3-70b") == preset("llama3-70b") == planner.preset("llama3-70b")
    got = planner.simulate(planner.model("llama3-70b"), gpus=64, cluster="dgx-h100")
    assert got["step_time_s"] == planner.simulate("llama3-70b", gpus=64, cluster="dgx-h100")["step_time_s"]
