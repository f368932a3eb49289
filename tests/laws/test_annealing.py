"""The LR-annealing loss-curve law (issue 14 item 3): Tissue et al. 2024, 'Scaling Law with Learning Rate
Annealing' (arXiv 2408.11029), L(s) = L0 + A S1^-alpha - C S2, fitted on the Gemstones curves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from planner.errors import PlannerInputError
from planner.laws.annealing import (AnnealingLaw, annealing_areas, cosine_schedule, fit_annealing_law, plan_loss_curve,
                                    wsd_schedule)
from planner.laws.curve_data import cooldown_schedule, hot_schedule, read_curves
from planner.laws.hyperparameters import plan_hyperparameters

pytestmark = pytest.mark.xdist_group("test_annealing")  # its module fixtures built once (pyproject.toml)



def test_constant_lr_has_forward_area_only():
    s1, s2 = annealing_areas(np.full(100, 0.5))
    assert s1[-1] == pytest.approx(50.0) and np.all(s2 == 0)


def test_annealing_area_limits_of_the_momentum():
    """lambda = 0: m_i is the step's LR drop, so S2 = eta_peak - eta_s; lambda -> 1: m_i is the whole drop so
    far, S2 = sum (eta_peak - eta_i), the area between the peak and the LR curve."""
    lr = wsd_schedule(200, 0, 100, "linear")
    _, s2_zero = annealing_areas(lr, 0.0)
    assert s2_zero == pytest.approx(1.0 - lr)
    _, s2_one = annealing_areas(lr, 1.0 - 1e-12)
    assert s2_one == pytest.approx(np.cumsum(1.0 - lr), rel=1e-6)
    _, s2_mid = annealing_areas(lr, 0.99)
    assert s2_zero[-1] < s2_mid[-1] < s2_one[-1]


def test_warmup_is_not_annealing():
    _, s2 = annealing_areas(wsd_schedule(300, 50, 0))
    assert np.all(s2 == 0)


def test_fit_recovers_synthetic_coefficients():
    truth = AnnealingLaw(L0=2.5, A=4.0, alpha=0.45, C=2e-4, decay=0.999)
    schedules = [wsd_schedule(20_000, 200, 4_000, "1-sqrt"), cosine_schedule(12_000, 200)]
    steps = [np.arange(500, 20_001, 500), np.arange(500, 12_001, 500)]
    losses = [truth.curve(lr)[at - 1] for lr, at in zip(schedules, steps)]
    law, info = fit_annealing_law(schedules, steps, losses)
    for name in ("L0", "A", "alpha", "C"):
        assert getattr(law, name) == pytest.approx(getattr(truth, name), rel=1e-3), name
    assert info["converged"]


def test_fit_refuses_constant_lr_only():
    with pytest.raises(PlannerInputError, match="C cannot be fitted"):
        fit_annealing_law([np.ones(1000)], [np.arange(100, 1001, 100)], [np.linspace(4, 3, 10)])


def gemstones_cooldown_errors(hot, cool, decay=0.999, keep=lambda run: True):
    """Per run: fit on the constant-LR checkpoints (35 per run, 10B to 350B tokens) and the FIRST cool-down end
    (from 10B tokens; C is not identifiable from constant-LR points, where S2 = 0), then predict the run's other
    cool-down ends (from 20B ... 100B tokens). Relative errors of those predictions, and of the constant-LR curve
    alone at the same step (no annealing term), for comparison."""
    runs = read_curves(str(hot), str(cool))
    errors, hot_only = [], []
    for run in runs.values():
        if len(run.cooldowns) < 2 or not keep(run):
            continue
        first, rest = run.cooldowns[0], run.cooldowns[1:]
        law, _ = fit_annealing_law([hot_schedule(run.hot_steps.max()), cooldown_schedule(first)],
                                   [run.hot_steps, np.array([first.end_step])], [run.hot_loss, np.array([first.loss])],
                                   decay=decay)
        for c in rest:
            areas = annealing_areas(cooldown_schedule(c), decay)
            errors.append(law.from_areas(areas[0][-1], areas[1][-1]) / c.loss - 1)
            hot_only.append(law.from_areas(areas[0][-1], 0.0) / c.loss - 1)
    return np.array(errors), np.array(hot_only)


@pytest.fixture(scope="module")
def gemstones_errors(laws_dir):
    return gemstones_cooldown_errors(laws_dir / "gemstones_hot_100b.jsonl", laws_dir / "gemstones_cool_end.jsonl")


def test_gemstones_protocol_covers_every_cooldown(gemstones_errors):
    errors, hot_only = gemstones_errors
    assert errors.size == 179 and np.all(np.isfinite(errors))  # 20 runs' 199 cool-downs less each run's first
    # Measured: the constant-LR curve alone misses the cool-down ends by 2.73% (the gain of a cool-down).
    assert 0.02 < np.mean(np.abs(hot_only)) < 0.04


@pytest.mark.xfail(strict=True, reason="issue 14 acceptance, measured 8.40% mean absolute error (max 16.5%, every "
                                       "prediction too low): with lambda = 0.999 (DEFAULT_DECAY, unverified) the annealing area of "
                                       "the long cool-downs (2,373 steps from 100B) is 5.6x that of the 237-step "
                                       "cool-down C was fitted on, while the measured gain changes little. "
                                       "Not tuned; lambda = 0.99 would give 1.31% (reported, not used)")
def test_gemstones_cooldown_ends_within_1_percent(gemstones_errors):
    errors, _ = gemstones_errors
    assert np.mean(np.abs(errors)) <= 0.01


def test_plan_loss_curve_follows_the_plans_wsd_schedule():
    schedule = plan_hyperparameters(1e9, 20e9, 4e6)["schedule"]
    law = AnnealingLaw(L0=2.3, A=6.0, alpha=0.5, C=5e-4, decay=0.999)
    rows = plan_loss_curve(law, schedule, total_steps=5_000, tokens_per_step=4e6, points=10)
    assert [r["step"] for r in rows][-1] == 5_000 and rows[-1]["tokens"] == pytest.approx(2e10)
    loss = np.array([r["loss"] for r in rows])
    assert np.all(np.diff(loss) < 0)
    assert rows[-1]["lr_fraction"] == 0.0 and rows[0]["lr_fraction"] == 1.0
    # The cool-down's extra drop: the curve ends below the same law at constant LR.
    assert loss[-1] < AnnealingLaw(2.3, 6.0, 0.5, 0.0).curve(np.ones(5_000))[-1] - 0.01


def test_curve_cli_json(cli, laws_dir):
    code, out, err = cli(["predict", "--curve-data", laws_dir / "gemstones_hot_100b.jsonl", "--cool-data",
                          laws_dir / "gemstones_cool_end.jsonl", "--run", "PyGemma-512x12_pretrain", "--steps", "30000",
                          "--decay", "fit", "--points", "5", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert [r["step"] for r in result["curve"]] == [6000, 12000, 18000, 24000, 30000]
    assert result["cooldowns_fitted"] == 10 and result["fit_mean_abs_rel_error"] < 0.005
    assert result["curve"][-1]["loss"] < result["curve"][-2]["loss"] - 0.05  # the cool-down drop
    assert 0.9 <= result["law"]["coefficients"]["decay"] < 1.0


@pytest.mark.parametrize("argv, flag", [
    (["--run", "x", "--params", "1B", "--tokens", "1T"], "--run"),
    (["--law", "epoch"], "--params"),
    # The curve's schedule flags mean nothing for L(N, D): refused, not ignored (they were ignored).
    *[(["--law", "epoch", "--params", "1B", "--tokens", "1T", flag, value], flag)
      for flag, value in (("--schedule", "cosine"), ("--warmup", "0.1"), ("--cooldown", "0.3"),
                          ("--cooldown-shape", "linear"), ("--points", "5"), ("--decay", "fit"))],
])
def test_curve_cli_errors(cli, argv, flag):
    code, _, err = cli(["predict", *argv])
    assert code == 2 and flag in err and len(err.strip().splitlines()) == 1


def test_curve_cli_needs_cooldowns(cli, laws_dir):
    code, _, err = cli(["predict", "--curve-data", laws_dir / "gemstones_hot_100b.jsonl", "--run",
                        "PyGemma-512x12_pretrain"])
    assert code == 2 and "--cool-data" in err


@pytest.mark.parametrize("flag, value", [("--law", "chinchilla"), ("--level", "0.9"), ("--expansion-rate", "8")])
def test_curve_cli_refuses_the_flags_of_a_loss_law(cli, tmp_path, flag, value):
    """Helper-found: a loss law, its interval level and the MoE expansion rate were accepted with --curve-data
    and ignored (the curve fitted to the run has none of them)."""
    hot, cool = _one_cooldown_run(tmp_path)
    code, _, err = cli(["predict", "--curve-data", hot, "--cool-data", cool, flag, value])
    assert code == 2 and flag in err and err.count("\n") == 1, err


def test_cooldown_without_a_matching_checkpoint_is_refused(tmp_path):
    hot, cool = tmp_path / "hot.jsonl", tmp_path / "cool.jsonl"
    hot.write_text("\n".join(json.dumps({"run_name": "r", "step": s, "final_loss": 4.0 - s / 1e4})
                             for s in (1000, 2000, 3000)) + "\n")
    cool.write_text(json.dumps({"run_name": "r", "step": 2500, "final_loss": 3.6}) + "\n")  # 2500 / 1.1 = 2273
    with pytest.raises(PlannerInputError, match="matches no constant-LR checkpoint"):
        read_curves(str(hot), str(cool))
    cool.write_text(json.dumps({"run_name": "r", "step": 2200, "final_loss": 3.7}) + "\n")  # from step 2000
    (run,) = read_curves(str(hot), str(cool)).values()
    assert run.cooldowns[0].start_step == 2000 and run.cooldowns[0].end_step == 2200
    lr = cooldown_schedule(run.cooldowns[0])
    assert lr[1999] == 1.0 and lr[-1] == 0.0 and lr.size == 2200


SMALL_RUN_PARAMS = 600e6  # the law-fitting split of issue 14: fit on runs of N <= 600M, predict the larger ones


# lambda candidates, 1 - lambda evenly spread in log from 0.1 to 0.001 (DEFAULT_DECAY's unverified 0.999 included).
DECAY_GRID = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def test_gemstones_cooldown_ends_held_out_by_size(laws_dir):
    """The same protocol with lambda treated as a coefficient of the law (the paper's eq. 1 leaves it to the
    user): chosen once from DECAY_GRID on the runs of N <= 600M, then every larger run's L0, A, alpha, C fitted
    on its own constant-LR curve and first cool-down, and its other cool-down ends predicted. Measured: lambda
    0.95 (0.21% on the small runs), 0.76% mean absolute error (max 2.6%) on the 53 held-out cool-down ends of
    the 1B-2B runs, against 2.27% for the constant-LR curve alone (issue 14 asks <= 1%)."""
    hot, cool = laws_dir / "gemstones_hot_100b.jsonl", laws_dir / "gemstones_cool_end.jsonl"
    small = lambda run: run.params <= SMALL_RUN_PARAMS  # noqa: E731
    large = lambda run: run.params > SMALL_RUN_PARAMS  # noqa: E731
    fit_errors = [np.mean(np.abs(gemstones_cooldown_errors(hot, cool, lam, small)[0])) for lam in DECAY_GRID]
    decay = DECAY_GRID[int(np.argmin(fit_errors))]
    from planner.laws.plan_curve import load_shapes
    assert decay == load_shapes()["decay"]  # the plan curve's shipped shapes use the same choice
    errors, hot_only = gemstones_cooldown_errors(hot, cool, decay, large)
    assert errors.size > 50 and np.all(np.isfinite(errors))
    assert np.mean(np.abs(errors)) <= 0.01
    # The annealing term earns its place: the constant-LR curve alone misses the same points by more.
    assert np.mean(np.abs(errors)) < 0.5 * np.mean(np.abs(hot_only))


def test_curve_cli_default_decay_is_fitted_with_several_cooldown_lengths(cli, laws_dir):
    """Without --decay, a run with cool-downs of several lengths gets lambda fitted (was the unverified 0.999,
    which gave 2.5705 at the end of PyGemma-1024x28's default schedule against 2.6362 fitted, 2.6356 at the
    Gemstones-selected 0.95); the output says which lambda and why."""
    code, out, err = cli(["predict", "--curve-data", laws_dir / "gemstones_hot_100b.jsonl", "--cool-data",
                          laws_dir / "gemstones_cool_end.jsonl", "--run", "PyGemma-1024x28_pretrain", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["decay"]["basis"].startswith("fitted") and result["decay"]["lambda"] != 0.999
    assert result["curve"][-1]["loss"] == pytest.approx(2.6362, abs=5e-4)


def _one_cooldown_run(tmp_path):
    """A synthetic run: constant-LR checkpoints and ONE cool-down (from step 10,000 to 11,000, Gemstones' 10%)."""
    truth = AnnealingLaw(L0=2.5, A=20.0, alpha=0.5, C=4e-3, decay=0.95)
    hot, cool = tmp_path / "hot.jsonl", tmp_path / "cool.jsonl"
    steps = np.arange(1000, 20_001, 1000)
    loss = truth.curve(np.ones(20_000))[steps - 1]
    hot.write_text("".join(json.dumps({"run_name": "r", "step": int(s), "final_loss": float(v), "tokens": int(s) * 1000})
                           + "\n" for s, v in zip(steps, loss)))
    end = truth.curve(wsd_schedule(11_000, 0, 1000, "linear", cooldown_start=10_000))[-1]
    cool.write_text(json.dumps({"run_name": "r", "step": 11_000, "final_loss": float(end)}) + "\n")
    return hot, cool


def test_curve_cli_default_decay_is_gemstones_selected_with_one_cooldown_length(cli, tmp_path):
    from planner.laws.plan_curve import load_shapes
    hot, cool = _one_cooldown_run(tmp_path)
    code, out, err = cli(["predict", "--curve-data", hot, "--cool-data", cool, "--json"])
    assert code == 0, err
    decay = json.loads(out)["decay"]
    assert decay["lambda"] == load_shapes()["decay"] and "Gemstones" in decay["basis"]
    code, out, err = cli(["predict", "--curve-data", hot, "--cool-data", cool])
    assert code == 0 and f"lambda = {load_shapes()['decay']:g}: selected on the Gemstones runs" in out
    # lambda cannot be fitted from one cool-down length: refused, not fitted on noise.
    code, _, err = cli(["predict", "--curve-data", hot, "--cool-data", cool, "--decay", "fit"])
    assert code == 2 and "--decay" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(["predict", "--curve-data", hot, "--cool-data", cool, "--decay", "0.99", "--json"])
    assert code == 0 and json.loads(out)["decay"] == {"lambda": 0.99, "basis": "given (--decay)"}


@pytest.mark.parametrize("steps, expected", [
    ("10", "lie before run PyGemma-1024x28_pretrain's first logged checkpoint (2,385 steps)"),
    ("10000000", "120x more steps than run PyGemma-1024x28_pretrain was logged for (83,475 steps)"),
])
def test_curve_cli_warns_outside_the_logged_steps(cli, laws_dir, steps, expected):
    """The same extrapolation warnings as optimize's loss curve (plan_curve.logged_range_warnings); predict had
    none ('warnings': [] at --steps 10, whose step 1 loss is 15, and at 120x the logged range)."""
    argv = ["predict", "--curve-data", laws_dir / "gemstones_hot_100b.jsonl", "--cool-data",
            laws_dir / "gemstones_cool_end.jsonl", "--run", "PyGemma-1024x28_pretrain", "--steps", steps]
    code, out, err = cli([*argv, "--json"])
    assert code == 0, err
    assert any(expected in w for w in json.loads(out)["warnings"])
    code, out, err = cli(argv)
    assert code == 0 and any(line.startswith("warning") and expected in line for line in out.splitlines())


def test_curve_cli_no_warning_inside_the_logged_steps(cli, laws_dir):
    code, out, err = cli(["predict", "--curve-data", laws_dir / "gemstones_hot_100b.jsonl", "--cool-data",
                          laws_dir / "gemstones_cool_end.jsonl", "--run", "PyGemma-1024x28_pretrain", "--json"])
    assert code == 0 and json.loads(out)["warnings"] == []


@pytest.mark.parametrize("extra, message", [
    (["--schedule", "cosine", "--warmup", "1"], "--warmup 1: the warm-up takes all 100 steps, leaving none for the "
                                                "cosine schedule"),
    (["--steps", "2"], "--cooldown 0.2 of 2 steps is no whole step"),
])
def test_curve_cli_refuses_a_schedule_it_cannot_honour(cli, laws_dir, extra, message):
    """Audit-found: a cosine all warm-up never decayed, and a 0.2 cool-down of 2 steps rounded to none while the header
    still said 0.2; both printed a curve. Refused now, exit 2, naming the flag."""
    argv = ["predict", "--curve-data", laws_dir / "gemstones_hot_100b.jsonl", "--cool-data",
            laws_dir / "gemstones_cool_end.jsonl", "--run", "PyGemma-512x12_pretrain"]
    if "--steps" not in extra:
        argv += ["--steps", "100"]
    code, out, err = cli([*argv, *extra])
    assert code == 2 and message in err and out == ""


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
@pytest.mark.parametrize("flag, value", [("--cooldown", "0.3"), ("--cooldown-shape", "linear")])
def test_curve_cli_refuses_cooldown_flags_without_wsd(cli, laws_dir, schedule, flag, value):
    """--cooldown and --cooldown-shape shape the WSD cool-down only; with cosine or constant they were ignored."""
    code, _, err = cli(["predict", "--curve-data", laws_dir / "gemstones_hot_100b.jsonl", "--cool-data",
                        laws_dir / "gemstones_cool_end.jsonl", "--run", "PyGemma-512x12_pretrain",
                        "--schedule", schedule, flag, value])
    assert code == 2 and f"error: {flag}: only with --schedule wsd" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("row, problem", [
    ({"step": "abc"}, "expected step a whole number from 1 to 100,000,000, got 'abc'"),
    ({"step": True}, "expected step a whole number from 1 to 100,000,000, got True"),
    ({"step": 7155.7}, "expected step a whole number from 1 to 100,000,000, got 7155.7"),
    ({"step": 10**10}, "expected step a whole number from 1 to 100,000,000, got 10000000000"),
    ({"tokens": None}, "expected tokens a positive finite number, got None"),
    ({"width": "wide"}, "expected width a positive finite number, got 'wide'"),
])
def test_a_curve_row_that_cannot_be_read_is_named_by_its_line(tmp_path, row, problem):
    """Such rows crashed with a traceback (exit 70: float('abc'), int(inf)), asked for 75 GiB (a step of 1e10), or
    were read silently (True as step 1, 7155.7 as 7155)."""
    hot = tmp_path / "hot.jsonl"
    rows = [{"run_name": "r", "step": s, "final_loss": 4.0 - s / 1e4, "tokens": 1e6 * s} for s in (1000, 2000)]
    rows.append({"run_name": "r", "step": 3000, "final_loss": 3.7, "tokens": 3e9, **row})
    hot.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(PlannerInputError) as error:
        read_curves(str(hot))
    assert str(error.value) == f"{hot} line 3: {problem}"


def test_a_step_given_twice_is_refused(tmp_path):
    """A copy of a checkpoint with another loss was fitted too (46 points, 1.48% mean error, exit 0)."""
    hot = tmp_path / "hot.jsonl"
    hot.write_text("\n".join(json.dumps({"run_name": "r", "step": s, "final_loss": loss})
                             for s, loss in ((1000, 3.9), (2000, 3.8), (2000, 9.5))) + "\n")
    with pytest.raises(PlannerInputError, match=r"line 3: run 'r' step 2000 again \(first on line 2\)"):
        read_curves(str(hot))


def test_a_curve_below_zero_is_refused_and_a_stretched_cooldown_warned_of(cli, laws_dir):
    """--decay 0.99999 with a whole-run cool-down printed -1.86 nats (exit 0): its annealing area was 34x the
    run's cool-downs'. At 0.9999 and the default cool-down the curve stays positive but 5.7x past them."""
    base = ["predict", "--curve-data", laws_dir / "gemstones_hot_100b.jsonl", "--cool-data",
            laws_dir / "gemstones_cool_end.jsonl", "--run", "PyGemma-256x23_pretrain", "--points", "3"]
    code, out, err = cli([*base, "--cooldown", "1", "--decay", "0.99999"])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--decay 0.99999: the fitted curve falls to a loss of -1.864 under this schedule" in err
    code, out, _ = cli([*base, "--decay", "0.9999", "--json"])
    assert code == 0 and any("is 5.68x the largest of the run's cool-downs" in w for w in json.loads(out)["warnings"])
    code, out, _ = cli([*base, "--decay", "0.95", "--json"])
    assert code == 0 and not any("annealing area" in w for w in json.loads(out)["warnings"])
