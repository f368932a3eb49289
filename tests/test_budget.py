"""planner.search.budget: budgets with units parsed at the edge into GPU-seconds; contradictions are input errors."""

from __future__ import annotations

import pytest

from planner.search.budget import DEFAULT_DEADLINE_S, build_constraints, parse_budget
from planner.errors import PlannerInputError

HOUR_S = 3600.0
DAY_S = 86400.0


def constraints(**overrides):
    values = dict(budget="10000gpuh", deadline=None, gpus=None, max_gpus=None, unique_tokens=None,
                  target_loss=None, inference_tokens=None, price_per_gpu_hour=3.0, cluster_name="test-cluster")
    values.update(overrides)
    return build_constraints(**values)


@pytest.mark.parametrize("text, gpu_hours", [
    ("10000gpuh", 10_000),
    ("10k gpuh", 10_000),
    ("10K GPU-hours", 10_000),
    ("1e4 GPUh", 10_000),
    ("2.5M gpuh", 2_500_000),
    ("  750 gpu-h ", 750),
])
def test_gpu_hour_budgets_become_gpu_seconds(text, gpu_hours):
    gpu_seconds, money = parse_budget(text, price_per_gpu_hour=None, cluster_name="no-price")
    assert gpu_seconds == pytest.approx(gpu_hours * HOUR_S, rel=1e-12)
    assert money is None


@pytest.mark.parametrize("text, dollars", [("$2M", 2e6), ("$150k", 1.5e5), ("$2000000", 2e6)])
def test_money_budget_buys_gpu_hours_at_the_cluster_price(text, dollars):
    gpu_seconds, money = parse_budget(text, price_per_gpu_hour=2.0, cluster_name="priced")
    assert money == pytest.approx(dollars)
    # $2M at $2 per GPU-hour is 1M GPU-hours.
    assert gpu_seconds == pytest.approx(dollars / 2.0 * HOUR_S, rel=1e-12)


def test_money_budget_on_a_cluster_without_price_names_the_cluster():
    with pytest.raises(PlannerInputError, match="'jean-zay'.*price"):
        parse_budget("$2M", price_per_gpu_hour=None, cluster_name="jean-zay")


@pytest.mark.parametrize("text", ["lots", "10000", "10000 hours", "-5gpuh", "0gpuh", "nan gpuh", "inf gpuh",
                                  "$-2M", "$2Q"])
def test_unparseable_or_non_positive_budgets_are_input_errors(text):
    with pytest.raises(PlannerInputError, match="--budget"):
        parse_budget(text, price_per_gpu_hour=2.0, cluster_name="priced")


def test_constraints_carry_si_units_and_the_default_deadline():
    c = constraints(budget="10k gpuh", unique_tokens="2T", inference_tokens="500B")
    assert c.gpu_seconds == pytest.approx(3.6e7)
    assert c.gpu_hours == pytest.approx(1e4)
    assert c.deadline_s == DEFAULT_DEADLINE_S == 30 * DAY_S
    assert c.deadline_is_default
    assert c.unique_tokens == pytest.approx(2e12)
    assert c.inference_tokens == pytest.approx(5e11)
    assert c.money is None


def test_explicit_deadline_and_money_are_kept():
    c = constraints(budget="$30k", deadline="36h", price_per_gpu_hour=3.0)
    assert c.deadline_s == pytest.approx(36 * HOUR_S)
    assert not c.deadline_is_default
    assert c.money == pytest.approx(3e4)
    assert c.gpu_hours == pytest.approx(1e4)


def test_target_loss_alone_is_a_complete_problem():
    c = constraints(budget=None, target_loss=2.1)
    assert c.gpu_seconds is None and c.gpu_hours is None
    assert c.target_loss == 2.1


@pytest.mark.parametrize("overrides, flag", [
    (dict(budget=None), "--budget"),
    (dict(gpus=0), "--gpus"),
    (dict(gpus=-8), "--gpus"),
    (dict(max_gpus=0), "--max-gpus"),
    (dict(gpus=64, max_gpus=32), "--max-gpus 32"),
    (dict(target_loss=-1.0), "--target-loss"),
    (dict(target_loss=0.0), "--target-loss"),
    (dict(target_loss=25.0), "--target-loss"),
    (dict(deadline="soon"), "--deadline"),
    (dict(deadline="-3d"), "--deadline"),
    (dict(unique_tokens="lots"), "--unique-tokens"),
    (dict(unique_tokens="-2T"), "--unique-tokens"),
    (dict(inference_tokens="1X"), "--inference-tokens"),
    (dict(budget="$1M", price_per_gpu_hour=None), "price"),
])
def test_bad_or_contradictory_flags_are_one_line_input_errors(overrides, flag):
    with pytest.raises(PlannerInputError) as error:
        constraints(**overrides)
    message = str(error.value)
    assert flag in message
    assert "\n" not in message


def test_gpus_and_deadline_without_budget_mean_all_those_gpus_for_that_long():
    c = constraints(budget=None, gpus=64, deadline="10d")
    assert c.gpu_seconds == pytest.approx(64 * 10 * DAY_S)
    assert c.deadline_s == pytest.approx(10 * DAY_S)


def test_gpus_equal_to_max_gpus_is_not_a_contradiction():
    c = constraints(gpus=64, max_gpus=64)
    assert (c.gpus, c.max_gpus) == (64, 64)
