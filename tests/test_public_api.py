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
    """The same plan as `planner optimize --budget 1000gpuh --json`, stacks included: plan() searched only the
    neutral 'other' stack (192 GPUs, loss 2.260 where the CLI gives megatron on 256 GPUs, 2.253)."""
    import json

    result = planner.plan(1000, max_gpus=256)
    assert result.status == "ok" and result.plan["gpu_hours"] == pytest.approx(1000, rel=1e-6)
    cli = subprocess.run([sys.executable, "-m", "planner", "optimize", "--budget", "1000gpuh", "--max-gpus", "256",
                          "--json", "--quiet"], capture_output=True, text=True, check=True)
    expected = json.loads(cli.stdout)["plan"]
    assert result.plan["layout"] == expected["layout"] and result.plan["gpus"] == expected["gpus"]
    assert result.plan["predicted_loss"] == pytest.approx(expected["predicted_loss"], rel=1e-12)
    assert planner.plan("1000gpuh", max_gpus=256).plan["layout"] == expected["layout"]  # a --budget string too


@pytest.mark.parametrize("call, message", [
    # dp=1 at 16 GPUs was simulated at 8 GPUs without a word; the CLI refuses it.
    (lambda: planner.simulate("llama3-8b", gpus=16, tp=8, dp=1), "= 8 != gpus\\(16\\)"),
    (lambda: planner.simulate("llama3-8b", gpus=8, tp=0), "tp, pp and cp must be whole numbers >= 1"),  # ZeroDivisionError
    (lambda: planner.simulate("llama3-8b", gpus="8"), "gpus must be a whole number >= 1, got '8'"),  # TypeError
    (lambda: planner.simulate("llama3-8b", gpus=True), "gpus must be a whole number >= 1, got True"),  # 1 GPU
    (lambda: planner.simulate(3), "model: give a preset name or a ModelSpec"),  # AttributeError
    (lambda: planner.simulate("llama3-8b", cluster=5), "cluster: give a cluster spec name or path"),
    (lambda: planner.search_layouts("gpt2-small", "dgx-h100", 0), "gpus must be a whole number >= 1, got 0"),
    (lambda: planner.search_layouts("gpt2-small", "dgx-h100", 8.5), "got 8.5"),  # searched 8
    (lambda: planner.plan(100, seq_len=0), "seq_len must be a whole number > 0"),  # a 4-line pydantic error
    (lambda: planner.plan(100, frameworks=("megatorn",)), "frameworks: unknown stack 'megatorn'"),
    # plan_fixed_model's options: TypeError, ValueError ('cannot convert float NaN'), or silently nothing fits.
    (lambda: planner.plan_fixed_model("gpt2-small", "dgx-h100", [8], deadline_s=86400.0), "need tokens"),
    (lambda: planner.plan_fixed_model("gpt2-small", "dgx-h100", [8], tokens=float("nan")), "tokens must be a finite"),
    (lambda: planner.plan_fixed_model("gpt2-small", "dgx-h100", [8], tokens=1e9, min_headroom=2), "min_headroom"),
    (lambda: planner.plan_fixed_model("gpt2-small", "dgx-h100", [8, 16], tokens=1e9, knee=5), "knee"),
    (lambda: planner.search_layouts("gpt2-small", "dgx-h100", 8, global_batch=0), "global_batch must be a whole"),
    (lambda: planner.search_layouts("gpt2-small", "dgx-h100", 8, min_headroom=2), "min_headroom must be"),
])
def test_bad_input_from_python_is_a_one_line_planner_error(call, message):
    """API-audit findings: each raised a bare Python error, or answered something else, where the CLI refuses."""
    with pytest.raises(PlannerInputError, match=message) as refused:
        call()
    assert "\n" not in str(refused.value)


def test_a_search_where_nothing_fits_says_so_when_its_best_is_used():
    """`s.layout(s.best)` / `s.rows([s.best])` with best None raised numpy's 'only 0-dimensional arrays' TypeError."""
    search = planner.search_layouts("llama2-70b", "dgx-h100", 8, frameworks=("megatron",))
    assert search.best is None
    for use in (lambda: search.layout(search.best), lambda: search.rows([search.best])):
        with pytest.raises(PlannerInputError, match="no layout of this search fits \\(best is None\\): [\\d,]+ does not fit"):
            use()


def test_fields_without_gpus_default_the_global_batch_as_the_cli():
    """Without gpus, micro_batch 4 on one replica failed 'global_batch(1) is not divisible'; the CLI takes one
    micro-batch per replica."""
    from planner.cost.estimate import simulate as run

    given = planner.simulate("llama3-8b", tp=8, micro_batch=4)
    spelled = run(planner.preset("llama3-8b"), planner.make_layout(tp=8, micro_batch=4, global_batch=4),
                  planner.load_cluster("dgx-h100"))
    assert given["step_time_s"] == spelled["step_time_s"]
    assert planner.plan_fixed_model("gpt2-small", "dgx-h100", 8, tokens=1e9).chosen.gpus == 8  # one count, not a list


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
    with pytest.raises(PlannerInputError, match="not a multiple of tp x pp x cp = 8"):
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
