"""Logged loss curves for the annealing law (planner.laws.annealing): constant-LR checkpoints and cool-down ends.

The format is the Gemstones files in data/laws/ (McLeish et al. 2025; data/SOURCES.md), JSON lines with
run_name, step and final_loss (the validation loss at that step):
- a constant-LR ("hot") file: checkpoints along runs at a constant learning rate after warm-up;
- a cool-down ("cool_end") file: the loss at the end of a cool-down branched off a hot checkpoint. Gemstones
  cool-downs decay the LR linearly to 0 over 10% of the tokens trained so far (model cards of the
  tomg-group-umd/Gemstone-*_cooldown models: "learning rate linearly decreased to 0 over 10% of the current
  training tokens"), so a cool-down ending at step e started at the hot checkpoint nearest e / 1.1.
ASSUMED for Gemstones: no warm-up is modelled (its length is not in the files; it ends long before the first
checkpoint at 2,385 steps) and every run's peak LR is its own unit (A and C are fitted per run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from planner.errors import PlannerInputError
from planner.laws.annealing import DEFAULT_DECAY, AnnealingLaw, fit_annealing_law, wsd_schedule
from planner.io import read_input_text

GEMSTONES_COOLDOWN_FRACTION = 0.1  # of the tokens (steps) trained before the cool-down; see the docstring
_START_TOLERANCE = 0.02  # a cool-down start must match a hot checkpoint within 2% of its step


@dataclass(frozen=True)
class Cooldown:
    start_step: int
    end_step: int
    loss: float
    shape: str = "linear"


@dataclass
class RunCurves:
    name: str
    params: float
    tokens_per_step: float
    hot_steps: np.ndarray
    hot_loss: np.ndarray
    cooldowns: list[Cooldown] = field(default_factory=list)
    width: float = float("nan")  # d_model and layers, where the file gives them (Gemstones does)
    depth: float = float("nan")


# The longest run a curve file may log, in steps: what `predict --steps` takes (its schedules are arrays of one
# value per step, so a step of 1e10 asked for 75 GiB).
MAX_STEP = 10**8
# Keys a row may carry beside run_name, step and final_loss: positive finite numbers where given.
NUMBER_KEYS = ("tokens", "params_active_precise", "width", "depth")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _row_problem(row: dict) -> str | None:
    """Why a row of a curve file cannot be read (None: it can)."""
    step = row["step"]
    if not (_is_number(step) and float(step).is_integer() and 1 <= step <= MAX_STEP):
        return f"expected step a whole number from 1 to {MAX_STEP:,}, got {step!r}"
    loss = row["final_loss"]
    if not (_is_number(loss) and np.isfinite(loss) and loss > 0):
        return f"expected final_loss a positive finite number, got {loss!r}"
    for key in NUMBER_KEYS:
        if key in row and not (_is_number(row[key]) and np.isfinite(row[key]) and row[key] > 0):
            return f"expected {key} a positive finite number, got {row[key]!r}"
    return None


def _rows(path: str) -> list[dict]:
    """The rows of a curve file, each checked (_row_problem) and a run's step given once: a repeated step was
    fitted twice (a copy with another loss fitted too), or matched to the other file's cool-downs."""
    text = read_input_text(path, "loss-curve file (JSON lines)", encoding="utf-8-sig")  # a BOM, as the CSV, YAML and fit-law readers take
    rows, seen = [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise PlannerInputError(f"{path} line {number}: not valid JSON ({error.msg})") from None
        for key in ("run_name", "step", "final_loss"):
            if not isinstance(row, dict) or key not in row:
                raise PlannerInputError(f"{path} line {number}: expected keys run_name, step, final_loss; {key!r} missing")
        problem = _row_problem(row)
        if problem is not None:
            raise PlannerInputError(f"{path} line {number}: {problem}")
        key = (str(row["run_name"]), int(row["step"]))
        if key in seen:
            raise PlannerInputError(f"{path} line {number}: run {key[0]!r} step {key[1]} again (first on line "
                                    f"{seen[key]}); expected each step of a run once")
        seen[key] = number
        rows.append(row)
    if not rows:
        raise PlannerInputError(f"{path}: no data rows")
    return rows


def read_curves(hot_path: str, cool_path: str | None = None,
                cooldown_fraction: float = GEMSTONES_COOLDOWN_FRACTION) -> dict[str, RunCurves]:
    """Runs of the hot file (with their cool-down ends from the cool file, if given), by run name."""
    runs: dict[str, RunCurves] = {}
    grouped: dict[str, list[dict]] = {}
    for row in _rows(hot_path):
        grouped.setdefault(str(row["run_name"]), []).append(row)
    for name, rows in grouped.items():
        rows.sort(key=lambda r: r["step"])
        steps = np.array([int(r["step"]) for r in rows])
        first = rows[0]
        tokens_per_step = float(first["tokens"]) / first["step"] if "tokens" in first else float("nan")
        runs[name] = RunCurves(name, float(first.get("params_active_precise", float("nan"))), tokens_per_step,
                               steps, np.array([float(r["final_loss"]) for r in rows]),
                               width=float(first.get("width", float("nan"))), depth=float(first.get("depth", float("nan"))))
    if cool_path is None:
        return runs
    for row in _rows(cool_path):
        run = runs.get(str(row["run_name"]))
        if run is None:
            continue  # a cool-down of a run with no constant-LR curve cannot be modelled
        end = int(row["step"])
        start = int(run.hot_steps[np.argmin(np.abs(run.hot_steps - end / (1.0 + cooldown_fraction)))])
        if abs(start * (1.0 + cooldown_fraction) - end) > _START_TOLERANCE * end:
            raise PlannerInputError(f"{cool_path}: run {run.name} cool-down ending at step {end} matches no constant-LR "
                                    f"checkpoint at {end / (1 + cooldown_fraction):.0f} (cool-downs of "
                                    f"{cooldown_fraction:.0%} of the steps before them)")
        run.cooldowns.append(Cooldown(start, end, float(row["final_loss"])))
    for run in runs.values():
        run.cooldowns.sort(key=lambda c: c.end_step)
    return runs


def hot_schedule(total_steps: int) -> np.ndarray:
    return np.ones(int(total_steps))


def cooldown_schedule(cooldown: Cooldown) -> np.ndarray:
    """Constant LR (1) up to the start, then the cool-down to 0 at its end."""
    return wsd_schedule(cooldown.end_step, 0, cooldown.end_step - cooldown.start_step, cooldown.shape,
                        cooldown_start=cooldown.start_step)


def cooldown_lengths(run: RunCurves) -> list[int]:
    """The distinct cool-down lengths of a run, in steps, shortest first."""
    return sorted({c.end_step - c.start_step for c in run.cooldowns})


def can_fit_decay(run: RunCurves) -> bool:
    """Whether lambda can be fitted to the run: it sets how the annealing gain grows with the cool-down's length
    (the momentum lags the LR by ~1/(1 - lambda) steps), so only cool-downs of two or more lengths tell values
    of lambda apart; with one length any lambda fits as well, C absorbing the difference."""
    return len(cooldown_lengths(run)) >= 2


def fit_run(run: RunCurves, decay: float | None = DEFAULT_DECAY) -> tuple[AnnealingLaw, dict]:
    """The annealing law of one logged run: its constant-LR checkpoints and its cool-down ends (decay=None fits
    lambda, which needs cool-downs of two or more lengths: `can_fit_decay`). info also holds the schedules and
    losses fitted, for diagnostics."""
    if not run.cooldowns:
        raise PlannerInputError(f"--cool-data: run {run.name!r} has no cool-down ends; a constant-LR curve alone cannot "
                                "fix the annealing coefficient C (give --cool-data with its cool-downs)")
    if decay is None and not can_fit_decay(run):
        raise PlannerInputError(f"--decay fit: run {run.name!r} has cool-downs of one length only "
                                f"({cooldown_lengths(run)[0]} steps); fitting lambda needs two or more lengths, "
                                "give --decay VALUE in [0, 1)")
    schedules = [hot_schedule(run.hot_steps.max())] + [cooldown_schedule(c) for c in run.cooldowns]
    steps = [run.hot_steps] + [np.array([c.end_step]) for c in run.cooldowns]
    losses = [run.hot_loss] + [np.array([c.loss]) for c in run.cooldowns]
    law, info = fit_annealing_law(schedules, steps, losses, decay=decay)
    return law, {**info, "schedules": schedules, "losses": losses}
