"""The plan's loss curve (issue 14 item 3; planner.laws.plan_curve): shape from the annealing law fitted on the
Gemstones runs, level anchored to the plan's law prediction L(N, D)."""

from __future__ import annotations

import numpy as np
import pytest

from planner.laws.annealing import annealing_areas, coarse_annealing_areas, plan_schedule, wsd_schedule
from planner.laws.curve_data import fit_run, read_curves
from planner.laws.hyperparameters import plan_hyperparameters
from planner.laws.plan_curve import load_shapes, nearest_shape, plan_loss_curve, shape_law


@pytest.mark.parametrize("decay", [0.0, 0.95, 0.999])
def test_coarse_areas_are_exact_per_step(decay):
    lr = wsd_schedule(5_000, 50, 1_000, "1-sqrt")
    s1, s2 = annealing_areas(lr, decay)
    c1, c2 = coarse_annealing_areas(lr, 1, decay)
    assert c1 == pytest.approx(s1, rel=1e-12) and c2 == pytest.approx(s2, rel=1e-9, abs=1e-9)


def test_coarse_areas_sampled_every_k_steps_match_the_per_step_ones():
    """The same WSD schedule sampled every 25 steps: the areas at the end agree within k / cool-down steps."""
    fine, coarse = wsd_schedule(100_000, 1_000, 20_000, "1-sqrt"), wsd_schedule(4_000, 40, 800, "1-sqrt")
    for decay in (0.95, 0.999):
        s1, s2 = annealing_areas(fine, decay)
        c1, c2 = coarse_annealing_areas(coarse, 25, decay)
        assert c1[-1] == pytest.approx(s1[-1], rel=1e-3) and c2[-1] == pytest.approx(s2[-1], rel=25 / 20_000)


def test_shipped_shapes_are_the_fits_of_the_shipped_data(laws_dir):
    """gemstones_curve_shapes.json is what its command writes: refit two runs at its lambda and compare curves."""
    shapes = load_shapes()
    runs = read_curves(str(laws_dir / "gemstones_hot_100b.jsonl"), str(laws_dir / "gemstones_cool_end.jsonl"))
    assert len(shapes["runs"]) == sum(1 for r in runs.values() if r.cooldowns)
    selection = shapes["decay_selection"]["held_out_mean_abs_rel_error"]
    assert shapes["decay"] == float(min(selection, key=selection.get))
    for shipped in (shapes["runs"][0], shapes["runs"][-1]):
        law, _ = fit_run(runs[shipped["run"]], decay=shapes["decay"])
        steps = np.ones(int(shipped["max_tokens"] / shipped["tokens_per_step"]))
        assert shape_law(shipped, shapes["decay"]).curve(steps) == pytest.approx(law.curve(steps), rel=1e-4)


def test_curve_ends_at_the_law_and_keeps_the_shape_of_the_run():
    """Last point = the anchor exactly; every point = anchor x f(t) / f(D), f the run's law on the plan's schedule
    stepped per step (an independent path: AnnealingLaw.curve, not the sampled areas)."""
    params, tokens, end = 1.0e9, 200e9, 2.345
    schedule = plan_hyperparameters(params, tokens, 4e6)["schedule"]
    curve = plan_loss_curve(params, tokens, end, schedule)
    shapes = load_shapes()
    run = nearest_shape(params, shapes)
    assert curve["shape_run"] == run["run"] and abs(np.log(run["params"] / params)) < np.log(1.2)
    assert curve["points"][-1]["loss"] == pytest.approx(end, rel=1e-12)
    assert curve["points"][-1]["tokens"] == pytest.approx(tokens)
    steps = int(round(tokens / run["tokens_per_step"]))
    f = shape_law(run, shapes["decay"]).curve(plan_schedule(schedule, steps))
    for point in curve["points"]:
        i = int(round(point["fraction"] * steps)) - 1
        assert point["loss"] == pytest.approx(end * f[i] / f[-1], rel=1e-6)
    loss = np.array([p["loss"] for p in curve["points"]])
    assert np.all(np.diff(loss) < 0)
    # The cool-down's extra drop: the last 20% falls by more than the constant-LR 20% before it.
    at = {round(p["fraction"], 2): p["loss"] for p in curve["points"]}
    assert at[0.8] - at[1.0] > at[0.6] - at[0.8]
    assert curve["warnings"] == []
    short = plan_loss_curve(params, 20e9, end, plan_hyperparameters(params, 20e9, 4e6)["schedule"])
    assert len(short["warnings"]) == 1 and "before run" in short["warnings"][0]  # 2B-10B: before the first checkpoint


def test_large_long_plan_says_what_is_extrapolated():
    schedule = plan_hyperparameters(70e9, 15e12, 16e6)["schedule"]
    curve = plan_loss_curve(70e9, 15e12, 1.9, schedule)
    text = " ".join(curve["warnings"])
    assert "the largest Gemstones run" in text and "extrapolated" in text and len(curve["warnings"]) == 2
    assert curve["points"][-1]["loss"] == pytest.approx(1.9)
    assert "L(N, D)" in curve["anchored"] and "Gemstones" in curve["source"]


def test_no_curve_for_other_schedules_or_bad_inputs():
    schedule = plan_hyperparameters(1e9, 20e9, 4e6)["schedule"]
    assert plan_loss_curve(1e9, 20e9, 2.3, {**schedule, "kind": "cosine"}) is None
    assert plan_loss_curve(1e9, 20e9, float("nan"), schedule) is None
    assert plan_loss_curve(1e9, 0.0, 2.3, schedule) is None


@pytest.mark.parametrize("aspect, run", [(5120 / 40, "PyGemma-2048x27_pretrain"), (300.0, "PyGemma-3072x12_pretrain"),
                                         (30.0, "PyGemma-1536x50_pretrain")])
def test_runs_of_the_same_size_are_told_apart_by_width_over_depth(aspect, run):
    """The three ~2B Gemstones runs (1.90B-2.01B): an 11B plan takes the one whose width / depth is nearest its own."""
    shapes = load_shapes()
    assert nearest_shape(11e9, shapes, aspect)["run"] == run
    assert nearest_shape(11e9, shapes)["run"] == "PyGemma-3072x12_pretrain"  # by size alone: the largest
    assert nearest_shape(1e8, shapes, aspect)["params"] < 2e8  # shape never overrides size


def test_shape_transfers_from_small_runs_to_held_out_large_ones(laws_dir):
    """The design's premise, on data: a shape from another, smaller model, scaled to end at a run's true final
    loss, gives that run's curve. For every Gemstones run of N > 600M (issue 14's split), take the shape of the
    nearest run of N <= 600M (plan_curve's choice), evaluate it on the large run's own schedule (constant LR,
    then its last cool-down, to 100B tokens), scale it to that cool-down's end and predict the run's constant-LR
    checkpoints before it (10B-91B tokens). Measured: 0.81% mean absolute error over 59 checkpoints (max 4.4%,
    at 10B tokens, every worst point the first and too low). Tolerance 1%, issue 14's bar for the annealing law.
    In the planner the anchor is the law's L(N, D), whose own error comes on top."""
    from planner.laws.curve_data import cooldown_schedule

    runs = read_curves(str(laws_dir / "gemstones_hot_100b.jsonl"), str(laws_dir / "gemstones_cool_end.jsonl"))
    shapes = load_shapes()
    small = {**shapes, "runs": [r for r in shapes["runs"] if r["params"] <= 600e6]}
    errors = []
    for run in runs.values():
        if run.params <= 600e6 or not run.cooldowns:
            continue
        shape = nearest_shape(run.params, small, run.width / run.depth)
        last = run.cooldowns[-1]
        f = shape_law(shape, shapes["decay"]).curve(cooldown_schedule(last))
        before = run.hot_steps <= last.start_step
        errors += list(last.loss / f[-1] * f[run.hot_steps[before] - 1] / run.hot_loss[before] - 1.0)
    errors = np.array(errors)
    assert errors.size > 50 and np.all(np.isfinite(errors))
    assert np.mean(np.abs(errors)) <= 0.01


def test_points_above_uniform_guessing_are_named():
    """A 0.01 GPU-hour plan (60M params, 26.4M tokens, vocab 32000) printed 15.2 nats at 10% of training, above
    ln 32000 = 10.37, without a word: no model's loss is there after its first steps."""
    params, tokens, end, vocab = 6.0e7, 26.4e6, 6.787, 32_000
    curve = plan_loss_curve(params, tokens, end, plan_hyperparameters(params, tokens, 16_384)["schedule"], vocab=vocab)
    above = [p for p in curve["points"] if p["loss"] > np.log(vocab)]
    assert above, "the case must still rise above ln V, or it tests nothing"
    (line,) = [w for w in curve["warnings"] if "uniform guessing" in w]
    assert line.startswith(f"loss curve: {len(above)} point(s) up to {above[-1]['tokens']:.3g} tokens") and "10.37" in line
    well_trained = plan_loss_curve(1e9, 200e9, 2.345, plan_hyperparameters(1e9, 200e9, 4e6)["schedule"], vocab=vocab)
    assert not any("uniform guessing" in w for w in well_trained["warnings"])
