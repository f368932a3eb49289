"""Plans whose losses tie are ranked by wall-clock at the slow end of their stack's step-time band
(search/selection.py), so the search does not prefer a plan its own error band says will most likely not deliver
its point estimate (before: the DeepSpeed ZeRO-3 plan of examples/02, step 8.39 s with a band of 9.31-12.42 s)."""

from __future__ import annotations

import numpy as np
import pytest

from planner.calibrate.error_bands import band_for, slow_end_ratios
from planner.frameworks import DEFAULT_FRAMEWORKS, FRAMEWORK_NAMES
from planner.laws.registry import load_law
from planner.search.budget import build_constraints
from planner.search.optimize import optimize
from planner.search.selection import LOSS_TIE_RELATIVE, pessimistic_wall_s, select
from planner.specs.clusters import load_cluster

pytestmark = pytest.mark.xdist_group("test_band_tie_break")  # its module fixtures built once (pyproject.toml)


DAY = 86400.0


class _BudgetMode:
    """What select reads of a problem: budget mode (no target loss), so loss is the objective."""

    class constraints:
        target_loss = None


def _feasible(loss, wall_days, band_high=None):
    feasible = {"loss": np.array(loss, float), "wall_s": np.array(wall_days, float) * DAY}
    if band_high is not None:
        feasible["step_band_high"] = np.array(band_high, float)
    return feasible


def test_tied_plans_go_to_the_shorter_slow_end():
    # Two plans 0.05% apart in loss (a tie) on the same deadline: the one whose band's slow end is nearer wins,
    # though its point-estimate loss is the higher; without bands the lower loss wins, as before.
    assert select(_BudgetMode, _feasible([1.953, 1.954], [30, 30], [1.48, 1.0707])) == 1
    assert select(_BudgetMode, _feasible([1.953, 1.954], [30, 30])) == 0
    # One band for every plan (a calibrated cluster): the plain rule, shorter wall-clock then lower loss.
    assert select(_BudgetMode, _feasible([1.953, 1.954], [30, 30], [1.2, 1.2])) == 0
    assert select(_BudgetMode, _feasible([1.953, 1.954], [30, 29], [1.2, 1.2])) == 1


def test_the_band_only_breaks_ties():
    # A plan outside the 0.1% tie never wins on its band, however narrow; and a tied plan wins on the slow end of
    # its band only when that end is sooner (21 x 1.48 = 31.1 days is later than 29 x 1.07 = 31.0).
    outside = 1.953 * (1 + 3 * LOSS_TIE_RELATIVE)
    assert select(_BudgetMode, _feasible([1.953, outside], [30, 10], [1.48, 1.0])) == 0
    assert select(_BudgetMode, _feasible([1.953, 1.954], [21, 29], [1.48, 1.0707])) == 1
    assert select(_BudgetMode, _feasible([1.953, 1.954], [20, 29], [1.48, 1.0707])) == 0
    walls = pessimistic_wall_s(_feasible([1.953, 1.954], [21, 29], [1.48, 1.0707])) / DAY
    assert walls == pytest.approx([31.08, 31.0503])


def test_slow_end_ratios_are_each_stacks_band():
    """Uncalibrated published hardware: each stack's lineage band (calibrate/error_bands.json), 'all' for a stack
    with too few rows; a calibrated spec: its own held-out band for every stack."""
    ratios = dict(zip(FRAMEWORK_NAMES, slow_end_ratios(load_cluster("dgx-h100"), FRAMEWORK_NAMES)))
    for name in FRAMEWORK_NAMES:
        assert ratios[name] == pytest.approx(band_for(name)["high"], rel=1e-12)
    assert ratios["megatron"] < ratios["deepspeed"]
    calibrated = load_cluster("cpu-local.calibrated")
    high = calibrated.calibrated_on.held_out_step_time_ratio_90[1]
    assert slow_end_ratios(calibrated, FRAMEWORK_NAMES) == pytest.approx(np.full(len(FRAMEWORK_NAMES), high))


@pytest.fixture(scope="module")
def month_on_1024_h100():
    """examples/02: 1,024 H100s for 30 days, the budget they are worth."""
    cluster = load_cluster("dgx-h100")
    constraints = build_constraints(budget="737280gpuh", deadline="30d", gpus=1024, max_gpus=None, unique_tokens=None,
                                    target_loss=None, inference_tokens=None,
                                    price_per_gpu_hour=cluster.price_per_accelerator_hour, cluster_name=cluster.name)
    law = load_law("epoch", None)
    return {stacks: optimize(cluster, law, constraints, frameworks=stacks)
            for stacks in (DEFAULT_FRAMEWORKS, ("deepspeed",), ("megatron",))}


def test_the_chosen_plan_keeps_its_point_estimate_inside_its_band(month_on_1024_h100):
    """DeepSpeed's best plan is a thousandth of a nat lower by its point estimate, within the tie, but its band
    (x1.11-x1.48, from the published 2021-22 DeepSpeed runs) puts its step above the estimate; the search takes
    Megatron's, whose band holds its estimate, and which is the Megatron-only search's plan."""
    chosen = month_on_1024_h100[DEFAULT_FRAMEWORKS].plan
    deepspeed = month_on_1024_h100[("deepspeed",)].plan
    megatron = month_on_1024_h100[("megatron",)].plan
    assert deepspeed["predicted_loss"] < chosen["predicted_loss"] <= deepspeed["predicted_loss"] * (1 + LOSS_TIE_RELATIVE)
    assert deepspeed["step_time_band"]["low_s"] > deepspeed["step_time_s"]
    assert chosen["layout"]["framework"] == "megatron"
    assert chosen["step_time_band"]["low_s"] <= chosen["step_time_s"] <= chosen["step_time_band"]["high_s"]
    assert chosen["layout"] == megatron["layout"] and chosen["predicted_loss"] == megatron["predicted_loss"]
