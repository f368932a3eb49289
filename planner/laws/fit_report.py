"""The whole `fit-law` analysis as one function: fit, bootstrap, extrapolation check, frontier.

Returns the fitted law (with its bootstrap samples, ready to save) and a plain JSON-able report;
rendering it as text is the CLI's job.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from planner.errors import PlannerInputError
from planner.laws.base import MIN_INTERVAL_SAMPLES, LossLaw, interval_holding, percentile_interval
from planner.laws.bootstrap import bootstrap_over_runs, bootstrap_se, frontier_samples, parameter_intervals
from planner.laws.chinchilla import OvertrainingLaw
from planner.laws.data import FLAGS, LossData
from planner.laws.fitter import DataError, LawFitter, soundness_problem
from planner.laws.forms import FORMS
from planner.laws.holdout import extrapolation_error, heldout_runs

DEFAULT_BUDGETS = (1e21, 1e22, 1e23, 1e24, 1e25)  # FLOP
# Fraction of the most expensive runs held out for the extrapolation check when no N threshold is given.
DEFAULT_HOLDOUT_FRACTION = 0.1
WORST_RESIDUALS_SHOWN = 5


def drop_highest_loss(data: LossData, count: int) -> LossData:
    """Without the `count` highest-loss points (Besiroglu et al. 2024 dropped 5 from Chinchilla's). Points tied on
    the loss are ranked by (N, D), not by their place in the file, so the same rows in any order drop the same."""
    if count <= 0:
        return data
    keep = np.ones(data.loss.size, dtype=bool)
    keep[np.lexsort((data.D, data.N, data.loss))[-count:]] = False
    return data.subset(keep)


def data_spans(data: LossData) -> str:
    """The smallest and largest N, D and loss of the points, so a far-off cell (a unit or column slip) shows."""
    return ", ".join(f"{name} {values.min():.3g} to {values.max():.3g}"
                     for name, values in (("N", data.N), ("D", data.D), ("loss", data.loss)))


def fit_and_report(data: LossData, fitter: LawFitter, n_bootstrap: int = 200, level: float = 0.9,
                   budgets=DEFAULT_BUDGETS, holdout_n_above: float | None = None,
                   holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION, check_extrapolation: bool = True, seed: int = 0,
                   name: str = "fitted", n_definition: str = "total", progress=None) -> tuple[LossLaw, dict]:
    try:
        fitter.fit(data.N, data.D, data.loss)
    except DataError as error:
        raise DataError(f"{data.path}: {error}") from None
    at_bounds = list(fitter.at_bounds_)  # taken now: the holdout check refits `fitter`
    unsound = soundness_problem(fitter.law_)
    if unsound is not None:
        coefficients = ", ".join(f"{k} = {v:.4g}" for k, v in fitter.coef_.items())
        raise PlannerInputError(f"{data.path}: the {fitter.form} fit ({coefficients}) gives a law that is not finite, positive "
                                f"and falling with N and D (soundness check: {unsound}); no law saved. Check that the columns hold N, D and the loss "
                                f"({', '.join(f'{FLAGS[k]} {v!r}' for k, v in data.columns.items())}) and no cell is "
                                f"far off the others ({data_spans(data)}), or fix or bound parameters")
    boot = None
    if n_bootstrap > 0:
        boot = bootstrap_over_runs(fitter, data.N, data.D, data.loss, data.run, n_bootstrap, seed, progress)
    law = dataclasses.replace(
        fitter.law_, name=name, n_definition=n_definition,
        source=f"fitted by 'planner fit-law' to {data.path} ({data.loss.size} points, {data.n_runs} runs), "
               f"{fitter.form} form, Huber delta {fitter.huber_delta:g} on log L",
        samples=None if boot is None else boot.samples)

    budgets = np.asarray(budgets, dtype=float)
    n_opt, d_opt = law.compute_optimal(budgets)
    report = {
        "data": {"path": data.path, "columns": data.columns, "points": int(data.loss.size), "runs": data.n_runs},
        "form": fitter.form,
        "form_summary": FORMS[fitter.form].summary,
        "law": {"name": law.name, "n_definition": law.n_definition, "c_definition": law.c_definition,
                "validity": law.validity.as_dict()},
        "fit": {"objective": fitter.objective_, "iterations": fitter.n_iter_,
                "free_parameters": fitter.n_free_params_, "huber_delta": fitter.huber_delta,
                "fixed": dict(fitter.fixed or {}), "tied": [list(t) for t in fitter.tied or ()],
                "starts_run": fitter.n_starts},
        "parameters": _parameters(law, boot, level),
        "bootstrap": None if boot is None else {"resamples": n_bootstrap, "failed": boot.n_failed,
                                                "level": level, "unit": "run", "seed": seed,
                                                "se": "standard deviation of the resampled values",
                                                "note": _few_resamples_note(boot)},
        "residuals": _residuals(data, fitter),
        "extrapolation": None,
        "frontier": _frontier(law, budgets, n_opt, d_opt, level),
        "warnings": [*data.notes, *at_bounds, *law.extrapolation_warnings(n_opt, d_opt)],
    }
    if isinstance(law, OvertrainingLaw):
        report["gadre_coefficients"] = law.gadre_coefficients()
    if check_extrapolation:
        mask, rule = heldout_runs(data, holdout_n_above, holdout_fraction)
        report["extrapolation"] = dataclasses.asdict(extrapolation_error(fitter, data, mask, rule))
    return law, report


def _parameters(law: LossLaw, boot, level: float) -> dict:
    intervals = parameter_intervals(boot, level, law.coefficients()) if boot is not None else {}
    return {name: {"value": value, **intervals.get(name, {})} for name, value in law.coefficients().items()}


def _few_resamples_note(boot) -> str | None:
    """Why there are no intervals although a bootstrap ran: fewer converged resamples than the laws need for
    a band (base.MIN_INTERVAL_SAMPLES, the same count predict and optimize use)."""
    if len(boot.samples) >= MIN_INTERVAL_SAMPLES:
        return None
    return (f"{len(boot.samples)} resample(s) converged, fewer than the {MIN_INTERVAL_SAMPLES} an interval needs: no "
            "intervals, and the saved law carries no uncertainty; rerun with more --bootstrap resamples")


def _residuals(data: LossData, fitter: LawFitter) -> dict:
    log_residual = fitter.residuals_
    rel = np.expm1(log_residual)  # L_pred / L_obs - 1
    worst = np.argsort(-np.abs(rel))[:WORST_RESIDUALS_SHOWN]
    return {
        "rms_log": float(np.sqrt(np.mean(log_residual**2))),
        "mean_abs_rel": float(np.mean(np.abs(rel))),
        "max_abs_rel": float(np.max(np.abs(rel))),
        "worst": [{"run": data.run_names[data.run[i]], "N": float(data.N[i]), "D": float(data.D[i]),
                   "observed": float(data.loss[i]), "rel_error": float(rel[i])} for i in worst],
    }


def _frontier(law: LossLaw, budgets: np.ndarray, n_opt: np.ndarray, d_opt: np.ndarray, level: float) -> list[dict]:
    point = {"N_opt": n_opt, "D_opt": d_opt, "tokens_per_param": d_opt / n_opt, "loss": law.predict(n_opt, d_opt)}
    spread = None
    if law.samples is not None and len(law.samples) >= MIN_INTERVAL_SAMPLES:  # as parameter_intervals
        # Widened to hold the fit's own value, as parameter_intervals and LossLaw.predict_interval do.
        spread = {k: (*interval_holding(point[k], *percentile_interval(v, level)), bootstrap_se(v))
                  for k, v in frontier_samples(law, law.samples, budgets).items()}
    rows = []
    for j, budget in enumerate(budgets):
        row = {"C": float(budget)}
        for key, values in point.items():
            row[key] = float(values[j])
            if spread is not None:
                row[f"{key}_low"], row[f"{key}_high"], row[f"{key}_se"] = (float(v[j]) for v in spread[key])
        rows.append(row)
    return rows
