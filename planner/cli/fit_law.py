"""`planner fit-law DATA`: fit a loss law to runs, with intervals, residuals and a held-out check.

Parse -> read the data -> planner.laws.fit_report.fit_and_report -> render (text or --json) ->
optionally save the law (--out law.yaml, loadable with `--law law.yaml`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from planner.cli.arguments import RecordGiven, comma_items, given, output_path, real_number, whole_number
from planner.errors import PlannerInputError
from planner.io import check_new_outputs, refuse_output_onto_input
from planner.laws.data import read_loss_data, read_moe_data
from planner.laws.fit_report import DEFAULT_BUDGETS, DEFAULT_HOLDOUT_FRACTION, drop_highest_loss, fit_and_report
from planner.laws.fitter import HUBER_DELTA_RANGE, LawFitter, soundness_problem
from planner.laws.forms import FORMS
from planner.laws.law_file import save_law
from planner.laws.moe import KRAJEWSKI_MOE_COEFFICIENTS, expansion_rate_from_params, fit_moe_law
from planner.report.render import json_document, to_json
from planner.specs.units import parse_count


DEFAULT_BOOTSTRAP = 200  # run-level resamples when --bootstrap is not given (the moe form has none)


def register(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="fit a loss law L(N, D) to training runs",
                              description="Fit a loss law to (N, D, loss) points from CSV or JSON-lines. "
                                          "Reproduce Epoch's Chinchilla refit with --drop-highest-loss 5.")
    p.add_argument("data", metavar="DATA", help="CSV or JSON-lines file of runs or checkpoints")
    p.add_argument("--form", default="chinchilla", choices=[*FORMS, "moe"],
                   help="law form (default chinchilla); moe: Krajewski et al. 2024 eq. 9, L(N total, D, granularity), "
                        "needs columns total_params, active_params, granularity (see --active-col)")
    cols = p.add_argument_group("columns (default: detected; the data/laws formats work as they are)")
    for key, what in (("n", "parameters N"), ("d", "tokens D"), ("c", "compute C = 6ND, used for D = C / 6N when named or when no D column is found (--form moe: eq. 10 FLOPs of Krajewski et al. 2024 on the active parameters)"),
                      ("loss", "loss"), ("run", "run name (checkpoints of a run are resampled together)")):
        cols.add_argument(f"--{key}-col", metavar="NAME", help=f"column holding {what}")
    cols.add_argument("--active-col", metavar="NAME", help="--form moe: column of active parameters (default active_params; "
                                                           "total parameters: --n-col, default total_params)")
    cols.add_argument("--granularity-col", metavar="NAME", help="--form moe: column of expert granularity d_ff / d_expert "
                                                                "(default granularity)")
    p.add_argument("--n-definition", default="total", choices=["total", "non-embedding"], action=RecordGiven,
                   help="what N counts in this data (recorded in the saved law; default total)")
    p.add_argument("--drop-highest-loss", type=whole_number(0), default=0, metavar="K",
                   help="drop the K highest-loss points first (Besiroglu et al. 2024 dropped 5)")
    fit = p.add_argument_group("fit")
    fit.add_argument("--huber-delta", type=real_number(*HUBER_DELTA_RANGE), default=1e-3,
                     help=f"Huber delta on log L, {HUBER_DELTA_RANGE[0]:g} to {HUBER_DELTA_RANGE[1]:g} (default 1e-3)")
    fit.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE", help="fix a parameter, e.g. alpha=0.34")
    fit.add_argument("--tie", action="append", default=[], metavar="NAME=NAME", help="tie two parameters, e.g. alpha=beta")
    fit.add_argument("--bound", action="append", default=[], metavar="NAME=LOW:HIGH",
                     help="bound a parameter (natural units; either side may be empty)")
    fit.add_argument("--n-starts", default="20", metavar="K|all", action=RecordGiven,
                     help="run L-BFGS-B from the K best grid starts, or from all (default 20)")
    fit.add_argument("--max-iter", type=whole_number(1, 10**7), default=10_000, action=RecordGiven, help="L-BFGS-B iterations per start")
    unc = p.add_argument_group("uncertainty and validation")
    unc.add_argument("--bootstrap", type=whole_number(0, 10**6), default=None, metavar="R",
                     help=f"run-level bootstrap resamples (0: no intervals; default {DEFAULT_BOOTSTRAP}; "
                          "not for --form moe)")
    unc.add_argument("--level", type=real_number(0.0, 1.0, low_open=True, high_open=True), default=0.9,
                     action=RecordGiven, help="level of the bootstrap intervals (default 0.9)")
    unc.add_argument("--seed", type=whole_number(0, 2**63 - 1), default=0, action=RecordGiven,
                     help="seed of the bootstrap resampling")
    unc.add_argument("--holdout-n-above", metavar="N",
                     help="hold out runs with more parameters than N (e.g. 600M)")
    unc.add_argument("--holdout-fraction", type=real_number(0.0, 1.0, low_open=True, high_open=True),
                     help=f"otherwise hold out this fraction of the most expensive runs (default {DEFAULT_HOLDOUT_FRACTION})")
    unc.add_argument("--no-holdout", action="store_true", help="skip the extrapolation check")
    p.add_argument("--budgets", default=",".join(f"{b:g}" for b in DEFAULT_BUDGETS), action=RecordGiven,
                   help="compute budgets (FLOP, comma-separated) for the frontier table")
    p.add_argument("--name", help="name of the saved law (default: fitted-<data file stem>)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", metavar="LAW.yaml", type=output_path, help="save the fitted law for `planner optimize --law`")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(run=run)


def run(args) -> int:
    refuse_output_onto_input("--out", args.out, [args.data])
    check_new_outputs([args.out] if args.out else [], args.force)
    if args.form == "moe":
        return run_moe(args)
    if args.active_col or args.granularity_col:
        raise PlannerInputError(f"--active-col/--granularity-col: only with --form moe, not --form {args.form}")
    _refuse_bootstrap_settings(args, "--bootstrap 0 asks for no bootstrap; give R > 0 resamples or leave it out"
                               if args.bootstrap == 0 else None)
    fitter = LawFitter(form=args.form, huber_delta=args.huber_delta, fixed=_pairs(args.fix, "--fix", _finite),
                       tied=_pair_list(args.tie, "--tie", str), bounds=_pairs(args.bound, "--bound", _range),
                       n_starts=_n_starts(args.n_starts), max_iter=args.max_iter)
    data = read_loss_data(args.data, args.n_col, args.d_col, args.c_col, args.loss_col, args.run_col)
    data = drop_highest_loss(data, args.drop_highest_loss)
    budgets = [parse_count(b, "--budgets") for b in comma_items(args.budgets, "--budgets")] if args.budgets.strip() else []
    if not budgets:  # an empty frontier table, headed as if it had rows
        raise PlannerInputError(f"--budgets: expected compute budgets in FLOP like '1e21,1e24', got {args.budgets!r}")
    if args.no_holdout and (args.holdout_n_above is not None or args.holdout_fraction is not None):
        flag = "--holdout-n-above" if args.holdout_n_above is not None else "--holdout-fraction"
        raise PlannerInputError(f"{flag} chooses the runs held out, which --no-holdout skips: give one of them")
    if args.holdout_n_above is not None and args.holdout_fraction is not None:
        # two rules for the runs held out: the N threshold silently won
        raise PlannerInputError("--holdout-n-above and --holdout-fraction: give one rule for the runs held out")
    holdout_n = None if args.holdout_n_above is None else parse_count(args.holdout_n_above, "--holdout-n-above")
    holdout_fraction = DEFAULT_HOLDOUT_FRACTION if args.holdout_fraction is None else args.holdout_fraction
    from planner.cli.progress import Progress

    with Progress("fit-law: bootstrap", unit="refits", quiet=args.quiet) as progress:
        law, report = fit_and_report(
            data, fitter, n_bootstrap=DEFAULT_BOOTSTRAP if args.bootstrap is None else args.bootstrap,
            level=args.level, budgets=budgets,
            holdout_n_above=holdout_n, holdout_fraction=holdout_fraction, check_extrapolation=not args.no_holdout,
            seed=args.seed, name=args.name or f"fitted-{Path(args.data).stem}", n_definition=args.n_definition,
            progress=progress)
    report["data"]["dropped_highest_loss"] = args.drop_highest_loss
    record = {k: report[k] for k in ("data", "fit", "bootstrap")}
    record["extrapolation_mean_abs_rel_error"] = (report["extrapolation"] or {}).get("mean_abs_rel_error")
    _save_and_print(args, law, json.loads(json.dumps(record)),
                    json_document(report) if args.json else render_text(report))  # strict JSON: no Infinity/NaN tokens
    return 0


def _save_and_print(args, law, fit_record: dict, text: str) -> None:
    """Write --out, then print the report: printed first, a reader that stops early (`| head`) ended the command
    before the law was saved. A law refused for saving (save_law's soundness check) still shows its report."""
    try:
        if args.out:
            save_law(law, args.out, force=args.force, fit_record=fit_record)
    except PlannerInputError:
        print(text)
        raise
    print(text)
    if args.out:
        sys.stderr.write(f"saved {args.out}\n")  # status, not the result


def run_moe(args) -> int:
    """--form moe: fit Krajewski et al. 2024 eq. 9 (no bootstrap, holdout or frontier: the MoE frontier needs
    the routing FLOPs of eq. 10, not 6ND; compare with the published Table 1 instead)."""
    for flag, value in (("--fix", args.fix), ("--tie", args.tie), ("--bound", args.bound),
                        ("--holdout-n-above", args.holdout_n_above), ("--holdout-fraction", args.holdout_fraction),
                        ("--no-holdout", args.no_holdout), ("--bootstrap", args.bootstrap)):
        if value:  # --bootstrap 0 asks for what the moe fit does anyway
            raise PlannerInputError(f"{flag}: not supported with --form moe")
    # The moe fit (fit_moe_law) has its own starts and solver, no frontier table, and records N as
    # non-embedding (eq. 9): these flags would do nothing, so they are refused rather than ignored.
    for flag, name in (("--max-iter", "max_iter"), ("--n-starts", "n_starts"), ("--budgets", "budgets"),
                       ("--n-definition", "n_definition")):
        if given(args, name):
            raise PlannerInputError(f"{flag}: not supported with --form moe")
    _refuse_bootstrap_settings(args, "the moe form has no bootstrap intervals")
    data, active, granularity = read_moe_data(args.data, args.n_col, args.active_col, args.granularity_col,
                                              args.d_col, args.c_col, args.loss_col, args.run_col)
    data, active, granularity = drop_highest_loss_moe(data, active, granularity, args.drop_highest_loss)
    law, info = fit_moe_law(data.N, data.D, granularity, data.loss, huber_delta=args.huber_delta,
                            name=args.name or f"fitted-{Path(args.data).stem}")
    # The expansion rate the data ran at: one E for all the points is the law's setting (what --active-params
    # converts with later); data at several E keep the published 64 and say so.
    rates = expansion_rate_from_params(data.N, active)
    one_rate = bool(np.max(rates) <= np.min(rates) * 1.01)
    if one_rate:
        law = type(law)(**{**law.__dict__, "expansion_rate": float(np.median(rates))})
    unsound = soundness_problem(law)
    if unsound is not None:
        raise PlannerInputError(f"{data.path}: the moe fit gives a law that fails the soundness check ({unsound}); no law saved")
    rel = np.expm1(info["residuals"])
    report = {"form": "moe", "form_summary": MOE_SUMMARY,
              "data": {"path": data.path, "columns": data.columns, "points": int(data.loss.size), "runs": data.n_runs,
                       "expansion_rate_range": [float(np.min(data.N / active)), float(np.max(data.N / active))],
                       "expansion_rate": law.expansion_rate if one_rate else None,
                       "granularity_range": [float(granularity.min()), float(granularity.max())]},
              "fit": {"objective": info["objective"], "huber_delta": args.huber_delta, "converged": info["converged"]},
              "parameters": {k: {"value": v, "published": KRAJEWSKI_MOE_COEFFICIENTS[k]} for k, v in law.coefficients().items()},
              "residuals": {"mean_abs_rel": float(np.mean(np.abs(rel))), "max_abs_rel": float(np.max(np.abs(rel)))},
              "bootstrap": None, "validity": law.validity.as_dict(), "warnings": [*data.notes, *info["at_bounds"]]}
    if args.json:
        text = json_document(report)
    else:
        d = report["data"]
        lines = [f"moe fit to {d['path']}: {d['points']} points, {d['runs']} runs (columns "
                 f"{', '.join(f'{k}={v}' for k, v in d['columns'].items())}); total/active "
                 f"{d['expansion_rate_range'][0]:.3g}-{d['expansion_rate_range'][1]:.3g}, G {d['granularity_range'][0]:g}-"
                 f"{d['granularity_range'][1]:g}", f"  {MOE_SUMMARY}", "",
                 "parameters   value      published (Krajewski et al. 2024, Table 1)"]
        lines += [f"  {k:<10} {_g(p['value']):<10} {_g(p['published'])}" for k, p in report["parameters"].items()]
        r = report["residuals"]
        lines += ["", f"residuals: mean |L_pred/L_obs - 1| = {r['mean_abs_rel']:.3%}, max {r['max_abs_rel']:.3%}",
                  "no bootstrap intervals for the moe form"]
        lines += [f"warning: {w}" for w in report["warnings"]]
        text = "\n".join(lines)
    _save_and_print(args, law, json.loads(to_json({k: report[k] for k in ("data", "fit")})), text)
    return 0


MOE_SUMMARY = "L = c + (g/G^gamma + a)/N^alpha + b/D^beta, N total non-embedding (Krajewski et al. 2024, eq. 9)"


def _refuse_bootstrap_settings(args, why_no_bootstrap: str | None) -> None:
    """--level and --seed set the bootstrap's intervals and resampling: given by the user (not their defaults)
    where no bootstrap runs, they would do nothing, so they are refused with `why_no_bootstrap`."""
    if why_no_bootstrap is None:
        return
    for name in ("level", "seed"):
        if given(args, name):
            raise PlannerInputError(f"--{name}: sets the bootstrap, and {why_no_bootstrap}")


def drop_highest_loss_moe(data, active, granularity, count: int):
    if count <= 0:
        return data, active, granularity
    keep = np.ones(data.loss.size, dtype=bool)
    keep[np.lexsort((granularity, data.D, data.N, data.loss))[-count:]] = False  # ties: as drop_highest_loss
    return data.subset(keep), active[keep], granularity[keep]


def _pairs(items: list[str], flag: str, convert) -> dict:
    """{NAME: value} of a repeated NAME=VALUE flag; a NAME given twice is refused (the later one silently won)."""
    out = {}
    for name, value in _pair_list(items, flag, convert):
        if name in out:
            raise PlannerInputError(f"{flag}: {name} given twice ({out[name]} and {value}); give it once")
        out[name] = value
    return out


def _pair_list(items: list[str], flag: str, convert) -> list[tuple]:
    """[(NAME, value)] of a repeated NAME=VALUE flag, in order (--tie alpha=beta --tie alpha=E keeps both)."""
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise PlannerInputError(f"{flag}: expected NAME=VALUE, got {item!r}")
        try:
            out.append((name.strip(), convert(value.strip())))
        except ValueError:
            expected = {"--fix": "NAME=VALUE with a finite number", "--bound": "NAME=LOW:HIGH with numbers (either may be "
                        "left empty for no limit)"}.get(flag)
            raise PlannerInputError(f"{flag}: expected {expected}, got {item!r}" if expected
                                    else f"{flag}: cannot read the value in {item!r}") from None
    return out


def _finite(text: str) -> float:
    """A --fix value: nan or inf (or 1e400) would only surface later as a fit that 'diverged'."""
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(text)
    return value


def _range(text: str) -> tuple[float | None, float | None]:
    """A --bound LOW:HIGH; nan is refused (the optimiser read it as no bound), inf is the same as an empty side."""
    low, sep, high = text.partition(":")
    if not sep:
        raise ValueError(text)
    low, high = (float(low) if low.strip() else None, float(high) if high.strip() else None)
    if any(side is not None and np.isnan(side) for side in (low, high)):
        raise ValueError(text)
    return low, high


def _n_starts(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise PlannerInputError(f"--n-starts: expected a positive integer or 'all', got {text!r}")
    return int(text)


def _g(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def render_text(report: dict) -> str:
    data, fit = report["data"], report["fit"]
    lines = [f"{report['form']} fit to {data['path']}: {data['points']} points, {data['runs']} runs "
             f"(columns {', '.join(f'{k}={v}' for k, v in data['columns'].items())}"
             + (f"; {data['dropped_highest_loss']} highest-loss points dropped" if data.get("dropped_highest_loss") else "")
             + ")",
             f"  {report['form_summary']}",
             f"  summed Huber loss {fit['objective']:.6g} (delta {fit['huber_delta']:g}), {fit['iterations']} "
             f"iterations, {fit['free_parameters']} free parameters"]
    boot = report["bootstrap"]
    head = "value" if boot is None else f"value      se         {boot['level']:.0%} interval (bootstrap over runs, {boot['resamples']} resamples, {boot['failed']} failed; se = std of the resamples)"
    lines += ["", f"parameters   {head}"]
    for name, p in report["parameters"].items():
        extra = "" if "se" not in p else f"  {_g(p['se']):<9}  [{_g(p['low'])}, {_g(p['high'])}]"
        lines.append(f"  {name:<10} {_g(p['value']):<10}{extra}")
    if "gadre_coefficients" in report:
        lines.append("  Gadre form: " + ", ".join(f"{k} = {_g(v)}" for k, v in report["gadre_coefficients"].items()))
    res = report["residuals"]
    lines += ["", f"residuals: mean |L_pred/L_obs - 1| = {res['mean_abs_rel']:.3%}, max {res['max_abs_rel']:.3%}, "
                  f"rms(log) {res['rms_log']:.4f}; worst:"]
    lines += [f"  {w['run']:<32} N={w['N']:.3g} D={w['D']:.3g} L={w['observed']:.4f} error {w['rel_error']:+.2%}"
              for w in res["worst"]]
    ext = report["extrapolation"]
    if ext:
        lines += ["", f"extrapolation: fit on {ext['n_train_runs']} runs, held out {ext['rule']}: final-loss error "
                      f"mean {ext['mean_abs_rel_error']:.2%}, max {ext['max_abs_rel_error']:.2%}"]
        lines += [f"  {r['run']:<32} N={r['N']:.3g} D={r['D']:.3g} L={r['observed']:.4f} "
                  f"predicted {r['predicted']:.4f} ({r['rel_error']:+.2%})" for r in ext["rows"]]
    with_spread = "N_opt_se" in (report["frontier"] or [{}])[0]
    lines += ["", "compute-optimal frontier (C = 6ND)"
              + (f", value ± se [{boot['level']:.0%} interval]:" if with_spread else ":")]
    for row in report["frontier"]:
        cell = lambda k: _g(row[k]) + (f" ± {_g(row[k + '_se'])} [{_g(row[k + '_low'])}, {_g(row[k + '_high'])}]"
                                       if k + "_se" in row else "")
        lines.append(f"  C={row['C']:.0e}  N_opt={cell('N_opt')}  D_opt={cell('D_opt')}  "
                     f"D/N={cell('tokens_per_param')}  L={cell('loss')}")
    lines += [f"warning: {w}" for w in report["warnings"]]
    lines += [f"note: {boot['note']}"] if boot is not None and boot.get("note") else []
    return "\n".join(lines)
