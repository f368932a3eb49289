"""The plan's predicted loss curve (issue 14 item 3): loss against tokens under the plan's WSD schedule.

Two pieces, from two places, and the output says which is which:
- SHAPE: Tissue et al. 2024's annealing law L(s) = L0 + A S1^-alpha - C S2 (planner.laws.annealing), fitted per
  run on the Gemstones constant-LR checkpoints and their cool-down ends (McLeish et al. 2025; data/laws). The
  plan uses the fit of the Gemstones run nearest its size (log of total parameters; the files' N is
  `params_active_precise`, ASSUMED comparable to the plan's total); runs within SAME_SIZE of that size
  (Gemstones varies width and depth at near-equal N) are told apart by the width / depth ratio nearest the
  plan's (hidden / layers; McLeish et al. vary shape because it changes the curves), and it evaluates the fit on the plan's schedule
  in that run's steps: the plan's token t is the run's step t / (run tokens per step). ASSUMED: equal tokens
  give equal loss whatever the batch, which holds below the critical batch size (McCandlish et al. 2018,
  "An Empirical Model of Large-Batch Training"); the plan's batch is sized near B_opt by its batch rule.
- LEVEL: the plan's loss law gives L(N, D), the loss at the end of a run of D tokens with its schedule
  complete. The curve is scaled by one factor so its last point equals that number:
      L_plan(t) = L(N, D) * f(t) / f(D),   f = the Gemstones run's annealing law on the plan's schedule.
  Multiplicative (relative drops carry over), not additive: a change of tokenizer or corpus rescales
  every loss by the same bytes-per-token factor (loss per token = bits per byte x bytes per token x ln 2),
  the main difference between Gemstones' losses and the law's. ASSUMED beyond that argument.
Checked on the Gemstones runs themselves (tests/laws/test_plan_curve.py): a shape from a run of N <= 600M,
scaled to a held-out larger run's final loss, gives that run's constant-LR checkpoints within 0.81% mean
absolute error (max 4.4%, at the earliest checkpoint).
So only the end point is the law's; everything before it is one ~1-2B-parameter Gemstones model's curve,
rescaled. For a plan far larger than the largest Gemstones run, or longer than the 350B tokens the runs
saw, the shape is extrapolated and the curve says so in its warnings.

The decay lambda of the annealing momentum is chosen once, on the Gemstones runs of N <= 600M only, as the
value of DECAY_GRID that best predicts their held-out cool-down ends (fit on each run's constant-LR curve and
first cool-down, predict the others); tests/laws/test_annealing.py checks the choice on the larger runs. The
fitted shapes ship as gemstones_curve_shapes.json (an installed planner has no data/ folder), written by
    python -m planner.laws.plan_curve data/laws/gemstones_hot_100b.jsonl data/laws/gemstones_cool_end.jsonl \\
        > planner/laws/gemstones_curve_shapes.json
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np

from planner.errors import PlannerInputError
from planner.laws.annealing import AnnealingLaw, annealing_areas, coarse_annealing_areas, plan_schedule

SHAPES_FILE = Path(__file__).with_name("gemstones_curve_shapes.json")
# lambda candidates: 1 - lambda evenly spread in log from 0.1 to 0.001 (0.999, the annealing module's unverified
# DEFAULT_DECAY, included).
DECAY_GRID = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
SELECTION_MAX_PARAMS = 600e6  # issue 14's split: choose on runs of N <= 600M, check on the larger ones
# Fractions of the plan's tokens at which the curve is reported; 0.8 is where the default cool-down starts.
CURVE_FRACTIONS = tuple(np.round(np.arange(1, 21) / 20, 2))
SAME_SIZE = 1.25  # runs within this factor of the nearest run's N count as the same size (then shape decides)
MAX_ENTRIES = 2**18  # schedule entries evaluated; longer runs are sampled every k steps (coarse_annealing_areas)
SHAPE_SOURCE = ("shape: Tissue et al. 2024 annealing law L = L0 + A S1^-alpha - C S2 fitted on Gemstones run {run} "
                "({params} params, constant LR + cool-downs, McLeish et al. 2025); level: scaled so the curve ends "
                "at the loss law's L(N, D)")


# --- fitting the shapes (the generator; not run by the planner) ------------------------------------------
def held_out_cooldown_error(run, decay: float) -> np.ndarray:
    """Relative errors of one run's cool-down ends, predicted by the law fitted on its constant-LR curve and
    its first cool-down only (C is not identifiable from constant-LR points alone)."""
    from planner.laws.annealing import fit_annealing_law
    from planner.laws.curve_data import cooldown_schedule, hot_schedule

    first, rest = run.cooldowns[0], run.cooldowns[1:]
    law, _ = fit_annealing_law([hot_schedule(run.hot_steps.max()), cooldown_schedule(first)],
                               [run.hot_steps, np.array([first.end_step])], [run.hot_loss, np.array([first.loss])],
                               decay=decay)
    ends = [annealing_areas(cooldown_schedule(c), decay) for c in rest]
    return np.array([law.from_areas(s1[-1], s2[-1]) / c.loss - 1.0 for (s1, s2), c in zip(ends, rest)])


def choose_decay(runs, max_params: float = SELECTION_MAX_PARAMS) -> tuple[float, dict]:
    """The DECAY_GRID value with the least mean |error| on the held-out cool-downs of runs of N <= max_params."""
    chosen = [r for r in runs.values() if r.params <= max_params and len(r.cooldowns) >= 2]
    if not chosen:
        raise PlannerInputError(f"curve data: no run of N <= {max_params:.3g} with two or more cool-downs")
    errors = {d: float(np.mean(np.abs(np.concatenate([held_out_cooldown_error(r, d) for r in chosen]))))
              for d in DECAY_GRID}
    return min(errors, key=errors.get), errors


def fit_shapes(hot_path: str, cool_path: str) -> dict:
    """Every run's annealing law (constant-LR curve and all its cool-downs) at the chosen lambda."""
    from planner.laws.curve_data import fit_run, read_curves

    runs = read_curves(hot_path, cool_path)
    decay, selection = choose_decay(runs)
    shapes = []
    for run in sorted(runs.values(), key=lambda r: (r.params, r.name)):
        if not run.cooldowns or not np.isfinite(run.tokens_per_step):
            continue
        law, info = fit_run(run, decay=decay)
        shapes.append({"run": run.name, "params": run.params, "width": run.width, "depth": run.depth,
                       "tokens_per_step": run.tokens_per_step,
                       "min_tokens": float(run.hot_steps.min() * run.tokens_per_step),
                       "max_tokens": float(run.hot_steps.max() * run.tokens_per_step),
                       **{k: getattr(law, k) for k in law.coefficient_names},
                       "fit_mean_abs_rel_error": float(np.mean(np.abs(np.expm1(info["residuals"]))))})
    return {"source": "McLeish et al. 2025 (Gemstones), data/laws; Tissue et al. 2024 eq. 1",
            "command": "python -m planner.laws.plan_curve " + " ".join(Path(p).as_posix() for p in (hot_path, cool_path)),
            "decay": decay, "decay_selection": {"max_params": SELECTION_MAX_PARAMS,
                                                "held_out_mean_abs_rel_error": {str(k): v for k, v in selection.items()}},
            "runs": shapes}


# --- using them ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def load_shapes() -> dict:
    return json.loads(SHAPES_FILE.read_text(encoding="utf-8"))


def default_decay(run) -> tuple[float | None, str]:
    """lambda for fitting one logged run (planner.laws.curve_data.RunCurves) when none is given, and why: fitted
    (None) where the run's cool-downs have two or more lengths, which is what tells values of lambda apart
    (curve_data.can_fit_decay); else the value chosen on the Gemstones runs of N <= SELECTION_MAX_PARAMS
    (choose_decay, shipped in the shapes file), the one the plan's loss curve uses."""
    from planner.laws.curve_data import can_fit_decay, cooldown_lengths

    lengths = len(cooldown_lengths(run))
    if can_fit_decay(run):
        return None, f"fitted: the run has cool-downs of {lengths} lengths, which tell values of lambda apart"
    shapes = load_shapes()
    errors = shapes["decay_selection"]["held_out_mean_abs_rel_error"]
    return float(shapes["decay"]), (
        f"selected on the Gemstones runs of N <= {shapes['decay_selection']['max_params'] / 1e6:.0f}M (best of "
        f"{len(errors)} values at predicting held-out cool-down ends, {errors[str(shapes['decay'])]:.2%} mean error; "
        f"the value optimize's loss curve uses): the run's cool-downs have {lengths} length, too few to fit it")


def nearest_shape(params: float, shapes: dict, aspect: float | None = None) -> dict:
    """The run nearest `params` in log N; among runs within SAME_SIZE of it, the one whose width / depth is
    nearest `aspect` (the plan's hidden / layers), when given."""
    runs = shapes["runs"]
    nearest = min(runs, key=lambda r: (abs(np.log(r["params"] / params)), r["run"]))
    if aspect is None or not np.isfinite(aspect) or aspect <= 0:
        return nearest
    same = [r for r in runs if abs(np.log(r["params"] / nearest["params"])) <= np.log(SAME_SIZE)]
    return min(same, key=lambda r: (abs(np.log(r["width"] / r["depth"] / aspect)), r["run"]))


def shape_law(run: dict, decay: float) -> AnnealingLaw:
    return AnnealingLaw(L0=run["L0"], A=run["A"], alpha=run["alpha"], C=run["C"], decay=decay)


def plan_loss_curve(params: float, tokens: float, end_loss: float, schedule: dict, shapes: dict | None = None,
                    fractions=CURVE_FRACTIONS, aspect: float | None = None, vocab: int | None = None) -> dict | None:
    """The plan's loss at `fractions` of its `tokens` under `schedule` (plan_hyperparameters' 'schedule'), ending
    at `end_loss` (the law's L(N, D)); `aspect` is the model's hidden / layers; `vocab`, when given, flags points
    above uniform guessing (ln V), which no model's loss reaches after its first steps. See the module docstring. None
    when the schedule has no curve here (not WSD) or the inputs are not positive and finite."""
    if schedule.get("kind") != "wsd" or not all(np.isfinite(v) and v > 0 for v in (params, tokens, end_loss)):
        return None
    shapes = load_shapes() if shapes is None else shapes
    run = nearest_shape(params, shapes, aspect)
    law = shape_law(run, shapes["decay"])
    run_steps = max(1, int(round(tokens / run["tokens_per_step"])))
    per_entry = -(-run_steps // MAX_ENTRIES)
    entries = -(-run_steps // per_entry)
    lr = plan_schedule(schedule, entries)
    shape = law.from_areas(*coarse_annealing_areas(lr, per_entry, law.decay))
    at = np.clip(np.round(np.asarray(fractions, dtype=float) * entries).astype(int), 1, entries) - 1
    if not (np.all(np.isfinite(shape[at])) and np.all(shape[at] > 0) and shape[-1] > 0):
        return None
    scale = end_loss / shape[-1]
    points = [{"fraction": float(f), "tokens": float(f * tokens), "lr_fraction": float(lr[i]),
               "loss": float(scale * shape[i])} for f, i in zip(fractions, at)]
    return {"points": points, "shape_run": run["run"], "shape_run_params": run["params"],
            "shape_run_width_depth": [run["width"], run["depth"]],
            "shape_coefficients": {k: run[k] for k in law.coefficient_names} | {"decay": law.decay},
            "level_scale": float(scale), "anchored": "the last point equals the loss law's L(N, D); the shape before it "
                                                     "is the Gemstones run's, scaled by level_scale",
            "source": SHAPE_SOURCE.format(run=run["run"], params=f"{run['params'] / 1e9:.2g}B"),
            "schedule": {k: schedule[k] for k in ("kind", "warmup_fraction", "cooldown_fraction", "cooldown_shape")},
            "warnings": _extrapolation_warnings(params, points, run, shapes) + _above_uniform_warnings(points, vocab)}


def _above_uniform_warnings(points: list[dict], vocab: int | None) -> list[str]:
    """The scaled shape can rise above ln V early in a short run (a power law in tokens grows without bound as
    tokens shrink), where a real model sits at or below uniform guessing from its first steps: those points are
    not a loss, and the text says so rather than clipping them (the search drops plans whose final loss is there)."""
    if not vocab:
        return []
    ceiling = float(np.log(vocab))
    above = [p for p in points if p["loss"] > ceiling]
    if not above:
        return []
    return [f"loss curve: {len(above)} point(s) up to {above[-1]['tokens']:.3g} tokens lie above uniform guessing "
            f"(ln {vocab} = {ceiling:.2f} nats): there the shape is extrapolated past what any model's loss is"]


def _extrapolation_warnings(params: float, points: list[dict], run: dict, shapes: dict) -> list[str]:
    sizes = [r["params"] for r in shapes["runs"]]
    out = []
    if not min(sizes) / 2 <= params <= max(sizes) * 2:
        side = f"{params / max(sizes):.0f}x the largest" if params > max(sizes) else f"1/{min(sizes) / params:.0f} of the smallest"
        out.append(f"loss curve: the model ({params / 1e9:.3g}B params) is {side} Gemstones run "
                   f"({min(sizes) / 1e9:.2g}B-{max(sizes) / 1e9:.2g}B); the curve's shape is run {run['run']}'s, "
                   "only its end is the law's")
    return out + logged_range_warnings([p["tokens"] for p in points], run["min_tokens"], run["max_tokens"], run["run"],
                                       "tokens", lambda tokens: f"{tokens / 1e9:.0f}B tokens")


def logged_range_warnings(at: list[float], first_logged: float, last_logged: float, run_name: str, unit: str,
                          show) -> list[str]:
    """Warnings for a curve's points `at` (ascending, in `unit`: tokens or steps) past twice the run's last logged
    checkpoint or before half its first: there the fitted power law is extrapolated. `show` formats an amount.
    Used by the plan's curve (tokens) and by `planner predict --curve-data` (steps)."""
    out = []
    if at[-1] > 2 * last_logged:
        out.append(f"loss curve: {at[-1] / last_logged:.0f}x more {unit} than run {run_name} was logged for "
                   f"({show(last_logged)}): the power law in {unit} is extrapolated")
    if at[0] < first_logged / 2:
        early = sum(x < first_logged for x in at)
        out.append(f"loss curve: the first {early} point(s) lie before run {run_name}'s first logged checkpoint "
                   f"({show(first_logged)}): the early curve is extrapolated")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m planner.laws.plan_curve HOT.jsonl COOL.jsonl > gemstones_curve_shapes.json", file=sys.stderr)
        return 2
    print(json.dumps(fit_shapes(*argv), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
