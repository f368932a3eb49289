"""A fixed-model plan that meets --deadline / --budget at its point estimate but not at the slow end of its own
step-time band says so, and names the GPU count whose plan meets the limits even there
(search.fixed_model.where_the_band_meets_limits). Checked against a brute-force sweep of every count's plan."""

from __future__ import annotations

import json

import pytest

from planner.search import fixed_model
from planner.search.fixed_model import plan_fixed_model, slow_end
from planner.specs.clusters import load_cluster
from planner.specs.model import preset

pytestmark = pytest.mark.xdist_group("test_band_meets_limits")  # its module fixtures built once (pyproject.toml)


COUNTS = [32, 64, 128, 256, 512]
TOKENS = 1e12


@pytest.fixture(scope="module")
def sweep():
    """Llama 3 8B on 1T tokens, dgx-h100: every count's best plan, its days, GPU-hours and band (no limits)."""
    model, cluster = preset("llama3-8b"), load_cluster("dgx-h100")
    plan = plan_fixed_model(model, cluster, COUNTS, tokens=TOKENS)
    assert all(c.feasible and c.days_band for c in plan.counts)  # the premise: every count has a plan and a band
    return model, cluster, {c.gpus: c for c in plan.counts}


def test_a_deadline_met_only_at_the_point_estimate_names_the_smallest_count_meeting_it_at_the_slow_end(sweep):
    model, cluster, counts = sweep
    deadline_s = counts[32].days * 1.02 * 86400.0  # inside 32 GPUs' band: its slow end is past it
    assert counts[32].days_band[1] * 86400.0 > deadline_s  # the premise
    plan = plan_fixed_model(model, cluster, COUNTS, tokens=TOKENS, deadline_s=deadline_s)
    check = plan.band_check
    assert plan.chosen.gpus == 32 and check["misses"] == ["deadline"]
    assert check["slow_end"]["days"] == pytest.approx(counts[32].days_band[1], rel=1e-12)
    expected = min(g for g in COUNTS if g > 32 and slow_end(counts[g])["days"] * 86400.0 <= deadline_s)
    met = check["meets_at"]
    assert met["gpus"] == expected and met["days"] == pytest.approx(counts[expected].days, rel=1e-12)
    assert met["slow_end"]["days"] * 86400.0 <= deadline_s
    assert check["counts_tried"] == [g for g in COUNTS if 32 < g <= expected] and check["counts_not_tried"] == []


def test_no_check_when_the_slow_end_meets_the_limits_too(sweep):
    model, cluster, counts = sweep
    deadline_s = counts[64].days_band[1] * 1.001 * 86400.0
    plan = plan_fixed_model(model, cluster, COUNTS, tokens=TOKENS, deadline_s=deadline_s)
    assert plan.chosen is not None and slow_end(plan.chosen)["days"] * 86400.0 <= deadline_s
    assert plan.band_check is None


def test_with_budget_alone_the_fastest_count_within_it_at_the_slow_end_is_named(sweep):
    """GPU-hours grow slowly with the count here (24,825 on 32 GPUs to 25,342 on 512), so a budget a hair above
    64 GPUs' slow end pays for every count at its point estimate, and at the slow end only for 32 and 64."""
    model, cluster, counts = sweep
    budget_s = slow_end(counts[64])["gpu_hours"] * 1.0001 * 3600.0
    plan = plan_fixed_model(model, cluster, COUNTS, tokens=TOKENS, budget_gpu_s=budget_s)
    within = [g for g in COUNTS if counts[g].gpu_hours * 3600.0 <= budget_s]
    assert plan.chosen.gpus == min(within, key=lambda g: counts[g].days)  # the premise: the plan's own rule
    check = plan.band_check
    assert check["misses"] == ["budget"] and check["slow_end"]["gpu_hours"] * 3600.0 > budget_s
    safe = [g for g in COUNTS if slow_end(counts[g])["gpu_hours"] * 3600.0 <= budget_s]
    best = min(safe, key=lambda g: counts[g].days)
    assert best != plan.chosen.gpus  # the premise: the slow end changes the answer
    met = check["meets_at"]
    assert met["gpus"] == best and met["days"] == pytest.approx(counts[best].days, rel=1e-12)
    assert met["slow_end"]["gpu_hours"] * 3600.0 <= budget_s


def test_counts_left_unsearched_by_the_cost_limit_are_named(sweep, monkeypatch):
    model, cluster, counts = sweep
    monkeypatch.setattr(fixed_model, "MAX_RESTRICTED_SEARCHES", 0)
    deadline_s = counts[32].days * 1.02 * 86400.0
    check = plan_fixed_model(model, cluster, COUNTS, tokens=TOKENS, deadline_s=deadline_s).band_check
    assert check["meets_at"] is None and check["counts_tried"] == [] and check["counts_not_tried"] == [64, 128, 256, 512]


def test_the_command_line_warns_and_names_the_count(cli, sweep):
    _, _, counts = sweep
    deadline = f"{counts[32].days * 1.02 * 24:.3f}h"
    argv = ["optimize", "--model", "llama3-8b", "--tokens", "1T", "--gpus", "32,64,128,256,512", "--deadline", deadline]
    code, out, _ = cli(argv + ["--json"])
    check = json.loads(out)["band_check"]
    assert code == 0 and check["misses"] == ["deadline"] and check["meets_at"]["gpus"] > 32
    code, text, _ = cli(argv)
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  warning    at the slow end of its step-time band"))
    assert "past the" in lines[at] and "deadline" in lines[at]
    assert lines[at + 1].strip().startswith(f"{check['meets_at']['gpus']} GPUs meet it even there: ")


def test_the_searches_after_the_choice_are_counted_in_the_account_of_layouts_scored(sweep, cli):
    """The band check's own searches (counts the choice never searched) are recorded with the layouts they scored,
    and the command's "searched ..." line adds them: the account covers every layout scored."""
    model, cluster, counts = sweep
    deadline_s = counts[32].days * 1.02 * 86400.0
    plan = plan_fixed_model(model, cluster, COUNTS, tokens=TOKENS, deadline_s=deadline_s)
    choice_searched = {c.gpus for c in plan.counts if c.search is not None}
    band = [s for s in plan.further_searches if s["purpose"] == "band check"]
    assert [s["gpus"] for s in band] == [g for g in plan.band_check["counts_tried"] if g not in choice_searched]
    assert band  # the premise: the check searched beyond the choice
    for s in band:  # each scored what a plain search of its count scores
        assert s["layouts_scored"] == len(counts[s["gpus"]].search)
    deadline = f"{deadline_s / 3600:.3f}h"
    argv = ["optimize", "--model", "llama3-8b", "--tokens", "1T", "--gpus", "32,64,128,256,512", "--deadline", deadline]
    code, out, _ = cli(argv + ["--json"])
    data = json.loads(out)
    scored_first = sum(c["layouts_scored"] for c in data["counts"])
    scored_after = sum(s["layouts_scored"] for s in data["further_searches"])
    assert code == 0 and scored_after > 0
    code, text, _ = cli(argv)
    line = next(line for line in text.splitlines() if line.startswith("searched "))
    assert line.startswith(f"searched {scored_first:,} layouts over ")
    assert f", then {scored_after:,} more over " in line and "the band check" in line
