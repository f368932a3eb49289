"""Benchmark and acceptance figures for the loss-law fitter (run by hand, not a test).

    python benchmarks/bench_law_fit.py               # timing: 2,000 points, 200 run-level resamples
    python benchmarks/bench_law_fit.py --forms all   # the same timing for every law form
    python benchmarks/bench_law_fit.py --acceptance  # + Epoch refit, Hoffmann exponent, Gemstones holdout
    python benchmarks/bench_law_fit.py --covariance  # + the bootstrap covariance used in published.py
    python benchmarks/bench_law_fit.py --exhaustive  # + all 4,500 Epoch grid starts vs the pruned default

The timing data are synthetic: 100 runs x 20 checkpoints drawn around the Epoch law with a
per-run offset and per-checkpoint noise (0.5% each), so the bootstrap resamples runs as it
would for Gemstones-style data. The time covers the whole `fit-law` analysis: the fit from the
grid, 200 bootstrap refits, the extrapolation refit and the frontier with intervals. It is timed
twice: the analysis alone, and `planner fit-law DATA --json` end to end in-process (reading the file,
the soundness check, rendering), with warnings turned into errors, against the issue 14 budget of 5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from planner.cli import main as planner_main
from planner.laws.bootstrap import bootstrap_over_runs, frontier_samples, parameter_intervals, percentile_interval
from planner.laws.data import LossData, read_loss_data
from planner.laws.fit_report import drop_highest_loss, fit_and_report
from planner.laws.fitter import LawFitter
from planner.laws.forms import FORMS
from planner.laws.holdout import extrapolation_error, heldout_runs
from planner.laws.published import EPOCH_2024, HOFFMANN_2022

LAWS_DIR = Path(__file__).resolve().parents[1] / "data" / "laws"


def synthetic_runs(n_runs: int = 100, checkpoints: int = 20, seed: int = 0) -> LossData:
    rng = np.random.default_rng(seed)
    run_n = np.exp(rng.uniform(np.log(5e7), np.log(5e9), n_runs))
    final_tpp = np.exp(rng.uniform(np.log(5.0), np.log(400.0), n_runs))
    fractions = np.linspace(1.0 / checkpoints, 1.0, checkpoints)
    N = np.repeat(run_n, checkpoints)
    D = (run_n * final_tpp)[:, None] * fractions[None, :]
    run = np.repeat(np.arange(n_runs), checkpoints)
    offset = np.repeat(0.005 * rng.standard_normal(n_runs), checkpoints)
    loss = EPOCH_2024.predict(N, D.ravel()) * np.exp(offset + 0.005 * rng.standard_normal(N.size))
    return LossData(N, D.ravel(), loss, run, tuple(f"run{i}" for i in range(n_runs)), "synthetic", {})


FIT_LAW_BUDGET_S = 5.0  # issue 14 acceptance: fit-law on 2,000 points with 200 bootstraps


def timing(resamples: int, forms: list[str]) -> None:
    if resamples <= 0:
        return
    data = synthetic_runs()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "synthetic.csv"
        rows = zip(data.N, data.D, data.loss, data.run)
        path.write_text("N,D,loss,run\n" + "".join(f"{n:.17g},{d:.17g},{l:.17g},run{r}\n" for n, d, l, r in rows))
        for form in forms:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # fit output must not warn (issue 14)
                start = time.perf_counter()
                law, report = fit_and_report(data, LawFitter(form=form), n_bootstrap=resamples, seed=0)
                seconds = time.perf_counter() - start
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    code = planner_main(["fit-law", str(path), "--form", form, "--json", "--bootstrap", str(resamples)])
                cli_seconds = time.perf_counter() - start
            verdict = "within" if code == 0 and cli_seconds < FIT_LAW_BUDGET_S else "OVER"
            print(f"timing, {form}: {data.loss.size} points, {data.n_runs} runs, {resamples} bootstrap resamples "
                  f"({report['bootstrap']['failed']} failed): {seconds:.1f} s for the fit-law analysis, "
                  f"{cli_seconds:.1f} s for 'planner fit-law --json' (exit {code}; {verdict} the {FIT_LAW_BUDGET_S:g} s budget)")
            print("  fitted " + ", ".join(f"{k} = {v['value']:.4g}" for k, v in report["parameters"].items()))


def acceptance() -> None:
    epoch = drop_highest_loss(read_loss_data(str(LAWS_DIR / "chinchilla_epoch_svg_extracted.csv")), 5)
    fit = LawFitter().fit(epoch.N, epoch.D, epoch.loss)
    boot = bootstrap_over_runs(fit, epoch.N, epoch.D, epoch.loss, epoch.run, n_resamples=200, seed=0)
    intervals = parameter_intervals(boot, 0.9)
    print(f"Epoch refit ({epoch.loss.size} points, 200 resamples, 90% intervals):")
    for name, value in fit.coef_.items():
        i = intervals[name]
        print(f"  {name:<6} {value:<10.5g} se {i['se']:<9.3g} [{i['low']:.4g}, {i['high']:.4g}]")
    tpp = frontier_samples(fit.law_, boot.samples, np.array([1e24]))["tokens_per_param"]
    low, high = percentile_interval(tpp, 0.9)
    ours, theirs = float(fit.law_.tokens_per_param_opt(1e24)), float(EPOCH_2024.tokens_per_param_opt(1e24))
    print(f"  tokens/param at C = 1e24: {ours:.2f} [{low[0]:.1f}, {high[0]:.1f}] vs {theirs:.2f} from Epoch's "
          f"published coefficients ({ours / theirs - 1:+.1%})")
    budgets = np.logspace(20, 26, 7)
    n_opt, _ = HOFFMANN_2022.compute_optimal(budgets)
    print(f"Hoffmann law: N_opt ∝ C^{np.polyfit(np.log(budgets), np.log(n_opt), 1)[0]:.4f} (published 0.46)")
    gem = read_loss_data(str(LAWS_DIR / "gemstones_hot_100b.jsonl"))
    for form in ("chinchilla", "overtraining", "kaplan", "farseer"):
        mask, rule = heldout_runs(gem, n_above=600e6)
        result = extrapolation_error(LawFitter(form=form), gem, mask, rule)
        print(f"Gemstones hot, {form}: fit on {result.n_train_runs} runs (N <= 600M), final loss of "
              f"{result.n_heldout_runs} larger runs: mean |error| {result.mean_abs_rel_error:.2%}, "
              f"max {result.max_abs_rel_error:.2%}")


def covariance(resamples: int = 2000) -> None:
    epoch = drop_highest_loss(read_loss_data(str(LAWS_DIR / "chinchilla_epoch_svg_extracted.csv")), 5)
    fit = LawFitter().fit(epoch.N, epoch.D, epoch.loss)
    boot = bootstrap_over_runs(fit, epoch.N, epoch.D, epoch.loss, epoch.run, n_resamples=resamples, seed=12345)
    form = FORMS["chinchilla"]
    theta = np.array([form.to_theta_vector(dict(zip(boot.names, row))) for row in boot.samples])
    np.set_printoptions(precision=3)
    print(f"bootstrap covariance of (log E, log A, log B, alpha, beta), {resamples} resamples:")
    print(repr(np.cov(theta.T)))
    print("standard errors: " + ", ".join(f"{k} {v['se']:.3g}" for k, v in parameter_intervals(boot, 0.9).items()))


def exhaustive() -> None:
    epoch = drop_highest_loss(read_loss_data(str(LAWS_DIR / "chinchilla_epoch_svg_extracted.csv")), 5)
    start = time.perf_counter()
    every = LawFitter(n_starts=None).fit(epoch.N, epoch.D, epoch.loss)
    seconds = time.perf_counter() - start
    pruned = LawFitter().fit(epoch.N, epoch.D, epoch.loss)
    print(f"all {len(FORMS['chinchilla'].default_starts())} starts ({seconds:.0f} s): objective {every.objective_:.10g}; "
          f"default 20 starts: {pruned.objective_:.10g}; largest coefficient difference "
          f"{max(abs(every.coef_[k] / pruned.coef_[k] - 1) for k in every.coef_):.2e} (relative)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--forms", default="chinchilla", help="law forms to time, comma-separated, or 'all'")
    parser.add_argument("--acceptance", action="store_true")
    parser.add_argument("--covariance", action="store_true")
    parser.add_argument("--exhaustive", action="store_true")
    args = parser.parse_args()
    timing(args.resamples, list(FORMS) if args.forms == "all" else args.forms.split(","))
    if args.acceptance:
        acceptance()
    if args.covariance:
        covariance()
    if args.exhaustive:
        exhaustive()


if __name__ == "__main__":
    main()
