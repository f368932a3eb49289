"""`planner calibrate RUNS.csv... --cluster NAME`: fit efficiencies, report train and held-out error, write a spec.

The rows fitted are those whose `cluster` cell names the spec as --cluster does: by its file name (NAME.yaml,
or the file name of a YAML path), the way simulate, validate and doctor resolve a row's cluster, not by the
spec's `name:` key, which a copied spec keeps from its original.
"""

from __future__ import annotations

import sys
from pathlib import Path

from planner.calibrate.error_bands import MIN_ROWS as BAND_MIN_ROWS

SKIPPED_SHOWN = 10  # rows of the cluster listed with their reason in the text output
DEFAULT_FOLDS = 5


def register(subparsers, name: str) -> None:
    from planner.cli.arguments import CLUSTER_DIR_HELP, output_path, whole_number

    parser = subparsers.add_parser(
        name, help="fit the cost model's efficiency parameters to measured runs of one cluster",
        description="Fit matmul efficiency vs size, bandwidth efficiencies, overlap and overheads to the measured "
                    "step times of the rows on --cluster, by robust least squares. Only parameters the rows "
                    "respond to, and that lower the cross-validated error, are fitted (forward selection); the "
                    "others keep their defaults and the output says why. Prints error before/after on the fitted "
                    "rows and on held-out rows, and writes <name>.calibrated.yaml into the user spec folder "
                    "(`planner clusters` shows it), --cluster-dir or --out.")
    parser.add_argument("runs", nargs="+", metavar="RUNS.csv", help="runs CSV files with measured step times (data/spec/runs_csv.md)")
    parser.add_argument("--cluster", required=True,
                        help="cluster spec name (or YAML path) whose rows to fit: rows whose cluster cell is this name "
                             "(a path's file name without .yaml), as simulate and validate resolve it, not the "
                             "spec's name: key")
    parser.add_argument("--cluster-dir", metavar="DIR", help=CLUSTER_DIR_HELP + "; the calibrated spec is written there too")
    parser.add_argument("--holdout-source", action="append", default=[], metavar="SOURCE",
                        help="hold out the rows of source SOURCE, or of every source starting with SOURCE when none is named "
                             "exactly that (repeatable); default: k-fold by source")
    parser.add_argument("--folds", type=whole_number(2, 1000),
                        help=f"k for k-fold cross-validation (default {DEFAULT_FOLDS}; not with --holdout-source)")
    parser.add_argument("--time-column", default="step_time_s", metavar="COLUMN",
                        help="measured step-time column to fit: step_time_s (default) or a step_time_<stat>_s column "
                             "of the runs files (step_time_p10_s for profiles taken on a shared machine, where "
                             "contention only slows steps down)")
    parser.add_argument("--out", metavar="FILE.yaml", type=output_path, help="where to write the calibrated spec "
                        "(default <name>.calibrated.yaml in --cluster-dir, else in the user spec folder, "
                        "~/.config/planner/cluster_specs on Linux)")
    parser.add_argument("--no-write", action="store_true", help="report only; write no spec")
    parser.add_argument("--force", action="store_true", help="overwrite an existing calibrated spec")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def _refuse_unused_flags(args) -> None:
    """A flag the mode asked for would not use is refused, never silently dropped: with --holdout-source the
    held-out error comes from those rows and no k-fold runs; with --no-write no spec is written."""
    from planner.cli.arguments import refuse_flags

    if args.holdout_source:
        refuse_flags(args, ("folds",), "the held-out rows are the --holdout-source ones, so no k-fold "
                                       "cross-validation runs; give one or the other")
    if args.no_write:
        refuse_flags(args, ("out", "force"), "--no-write writes no spec; drop one or the other")


OTHER_CLUSTERS_SHOWN = 5  # other clusters named in the too-few-rows error


def _refuse_too_few_rows(count: int, runs: list, cluster, cluster_dir, spec_key: str | None = None) -> None:
    """Too few rows of `cluster` to fit, while others are on other clusters: one line saying how many and where
    (a wrong --cluster then shows), before the fit refuses with the bare count. `spec_key` is the spec's name:
    key where it differs from the name --cluster gave: rows naming it are why, and the line says so."""
    from planner.calibrate.calibration import MIN_ROWS
    from planner.calibrate.samples import other_cluster_counts
    from planner.errors import PlannerInputError
    from planner.io import shown

    elsewhere = other_cluster_counts(runs, cluster, cluster_dir) if count < MIN_ROWS else {}
    if not elsewhere:
        return
    named = [f"{name} ({n})" for name, n in list(elsewhere.items())[:OTHER_CLUSTERS_SHOWN]]
    more = len(elsewhere) - len(named)
    raise PlannerInputError(
        f"calibration needs at least {MIN_ROWS} measured rows on cluster {cluster.name!r}, got {count}; "
        f"{sum(elsewhere.values())} rows are on other clusters: {', '.join(named)}"
        + (f" and {more} more" if more else "") + " (check --cluster)"
        + (f"; {spec_key!r} is only the name: key of {shown(cluster.source_file)}; rows name a spec by its file "
           f"name, as --cluster, simulate and validate do, so rows measured on it must say {cluster.name!r}"
           if spec_key in elsewhere else ""))


def _output_target(args, cluster) -> Path | None:
    """Where the calibrated spec goes (None with --no-write), refused if it exists without --force: checked before
    the fit, which takes minutes, not after it."""
    from planner.calibrate.samples import base_name
    from planner.errors import PlannerInputError
    from planner.io import check_new_outputs, refuse_output_onto_input
    from planner.specs.clusters import user_cluster_dir

    if args.no_write:
        return None
    folder = Path(args.cluster_dir) if args.cluster_dir else user_cluster_dir()
    target = Path(args.out) if args.out else folder / f"{base_name(cluster)}.calibrated.yaml"
    refuse_output_onto_input("--out", target, args.runs)
    if target.suffix.lower() not in (".yaml", ".yml"):
        # simulate --cluster and doctor take a spec by its .yaml / .yml name: another name would be written and then
        # refused by the command calibrate tells the user to run (helper-found).
        raise PlannerInputError(f"--out {args.out}: a cluster spec is a .yaml (or .yml) file, which --cluster reads")
    check_new_outputs([target], args.force)
    return target


def _refuse_writing_past_unreadable_rows(problems: list, target: Path | None) -> None:
    """A spec is not written from runs files with unreadable rows (helper-found: it was, exit 0, the row named only on
    stdout): the fit would silently lack a measurement the user meant to give. --no-write still fits without them and
    lists them."""
    from planner.errors import PlannerInputError

    if target is None or not problems:
        return
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise PlannerInputError(f"unreadable row {problems[0]}{more}; mend it, or fit without it with --no-write "
                            "(which lists every one), before a calibrated spec is written")


def _is_step_time_column(name: str) -> bool:
    """step_time_s, or a statistic of it a profile records beside it (step_time_p10_s, step_time_p90_s): the
    columns that hold seconds per whole optimizer step. fwd_s, comm_s and the like are parts of a step."""
    return name == "step_time_s" or (name.startswith("step_time_") and name.endswith("_s") and len(name) > len("step_time__s"))


def _refuse_unknown_time_column(args, runs: list) -> None:
    """A --time-column that no row has, or that is no step time, is refused by name with the columns that fit."""
    from planner.errors import PlannerInputError
    from planner.profile.runs_csv import COLUMNS

    column = args.time_column
    present = dict.fromkeys(key for run in runs for key in run.extra)
    usable = ", ".join(["step_time_s", *(key for key in present if _is_step_time_column(key) and key != "step_time_s")])
    expected = (f"--time-column takes measured seconds per optimizer step: step_time_s or a step_time_<stat>_s "
                f"column (step_time_p10_s from `planner profile`); the runs files have {usable}")
    if column in COLUMNS or column in present:
        if not _is_step_time_column(column):
            # A column of another kind (mem_gib, gpus, fwd_s) would be fitted as seconds per step, or skip every
            # row; either way the fit would not say why. It is refused as what it is, not as a missing column.
            raise PlannerInputError(f"--time-column {column}: not a step-time column; {expected}")
        return
    # A column no row has (a typo) would skip every row and leave only "needs at least 3 rows, got 0".
    raise PlannerInputError(f"--time-column {column}: no such column in {', '.join(args.runs)}; {expected}")


def _split_holdout(samples: list, holdout_sources: list[str], cluster) -> tuple[list, list | None]:
    """(rows to fit, rows held out by --holdout-source, or None without it); a SOURCE matching no row is refused,
    since a held-out error over no rows would say nothing."""
    from planner.errors import PlannerInputError

    if not holdout_sources:
        return samples, None
    sources = {s.run.source or "" for s in samples}
    # A SOURCE that names a source exactly holds out that source only (one source's name can be
    # the prefix of another's); otherwise it is a prefix.
    held = lambda source, h: source == h if h in sources else source.startswith(h)  # noqa: E731
    holdout = [s for s in samples if any(held(s.run.source or "", h) for h in holdout_sources)]
    samples = [s for s in samples if s not in holdout]
    if not holdout:
        raise PlannerInputError(f"--holdout-source: no rows on {cluster.name} have a source starting with "
                                f"{' or '.join(map(repr, holdout_sources))}")
    return samples, holdout


def _spec_text(mapping: dict, report: dict) -> str:
    """The calibrated spec's YAML, headed by comments saying what was fitted, what was kept and why, and which
    earlier calibrations it follows, so the file explains itself without the calibrate output."""
    import yaml

    header = "".join(f"# {name}: {value:.6g} (fitted)\n" for name, value in report["fitted_parameters"].items())
    header += "".join(f"# {name}: left at {_kept(report, name)} ({why})\n" for name, why in report["left_at_default"].items())
    earlier = "".join(f"# earlier: {line}\n" for line in mapping["calibrated_on"]["earlier"])
    return (f"# {mapping['calibration']}\n{earlier}# written by `planner calibrate`\n{header}"
            + yaml.safe_dump(mapping, sort_keys=False))


def _write_spec(args, cluster, report: dict, rows: int, target: Path, spec_key: str) -> str:
    """Write the calibrated spec to `target`, checked to load first; returns the path written."""
    from planner.calibrate.calibrated_spec import calibrated_spec_mapping
    from planner.calibrate.samples import CALIBRATED_SUFFIX, base_name
    from planner.io import load_yaml_file, write_text_atomic
    from planner.specs.hardware import parse_cluster_spec

    raw = load_yaml_file(cluster.source_file, "cluster spec (.yaml)")
    mapping = calibrated_spec_mapping(raw, report, [Path(p).name for p in args.runs], rows)
    if not spec_key.endswith(CALIBRATED_SUFFIX):
        # Named after the spec as --cluster named it (its file), not after a name: key a copy kept from its
        # original: <name>.calibrated.yaml then says name: <name>.calibrated, and a recalibration's rows are
        # those of <name>. A calibrated spec keeps its name: calibrate recorded there the spec it was made from.
        mapping["name"] = f"{base_name(cluster)}{CALIBRATED_SUFFIX}"
    parse_cluster_spec(mapping, str(target))  # the file we write must load
    if not args.out and not args.cluster_dir:
        target.parent.mkdir(parents=True, exist_ok=True)  # the user folder, made on first use
    return str(write_text_atomic(target, _spec_text(mapping, report), force=args.force))


def _print_rows_left_out(problems: list, skipped: list[str], runs: list, cluster, cluster_dir) -> None:
    """The unreadable rows, the count skipped, and the first SKIPPED_SHOWN reasons for rows of this cluster."""
    from planner.calibrate.samples import other_cluster_reasons

    for problem in problems:
        print(f"unreadable: {problem}")
    print(f"skipped {len(skipped)} rows (other clusters, no step time, or not simulatable)")
    # Rows of this cluster that could not be used say why (a typo in a row should not vanish into a count).
    foreign = other_cluster_reasons(runs, cluster, cluster_dir)
    own = [reason for reason in skipped if reason not in foreign]
    for reason in own[:SKIPPED_SHOWN]:
        print(f"skipped    {reason}")
    if len(own) > SKIPPED_SHOWN:
        print(f"skipped    ... and {len(own) - SKIPPED_SHOWN} more (--json lists every one)")


def _parameter_table(report: dict) -> str:
    """Each parameter's default and calibrated value, or what it was kept at and why."""
    from planner.report.render import table

    rows = [[name, f"{report['defaults'][name]:.4g}", f"{value:.4g}"] for name, value in report["fitted_parameters"].items()]
    rows += [[name, f"{report['defaults'][name]:.4g}", f"{_kept(report, name)}: {why}"]
             for name, why in report["left_at_default"].items()]
    return table(["parameter", "default", "calibrated"], rows, align="lrl")


def _error_table(report: dict) -> str:
    """Error before and after the fit, on the fitted rows and on the held-out ones."""
    from planner.report.render import table

    stat_rows = []
    for label, key in (("fitted rows", "train"), (f"held-out ({report['heldout_kind']})", "heldout")):
        for when in ("before", "after"):
            s = report[key][when]
            stat_rows.append([label, when, s["rows"], f"{100 * s['mape']:.1f}%", f"{100 * s['median_ape']:.1f}%",
                              f"{100 * s['worst_ape']:.1f}%", f"{100 * s['bias']:+.1f}%"])
    return table(["rows", "model", "n", "MAPE", "median", "worst", "bias"], stat_rows, align="llrrrrr")


def _print_fit_judgement(report: dict, written: str | None) -> None:
    """How the parameters were chosen, whether the fit was applied, fitted values far from their defaults, and the
    held-out error band: what a reader needs to judge the fit rather than trust it."""
    steps = " -> ".join(f"{'+'.join(step['parameters'][-1:]) or 'defaults'} {100 * step['cv_mape']:.1f}%"
                        for step in report["selection_path"])
    print(f"parameter selection (cross-validated MAPE on the fitted rows): {steps}")
    if not report["applied"]:
        print(f"not applied: {report['not_applied_because']}; the spec keeps the defaults")
    for name, ratio in report["implausible"].items():
        print(f"warning    {name} fitted {report['fitted_parameters'][name]:.3g} is {ratio:.2f}x its default "
              f"{report['defaults'][name]:.3g} (datasheet- or benchmark-derived): it more likely absorbs a cost the "
              f"model lacks for these runs than measures the hardware; judge the fit by its held-out error")
    from planner.calibrate.fitting import at_limits
    for name, (side, limit) in at_limits(report["fitted_parameters"]).items():
        print(f"warning    {name} fitted {report['fitted_parameters'][name]:.4g} is at its {side} limit {limit:g}: the "
              f"limit, not the data, stopped it; check the runs' units (--time-column in seconds) and settings")
    low, high = report["prediction_interval_90"]
    print(f"90% prediction interval from held-out residuals: {100 * low:+.1f}% .. {100 * high:+.1f}% of a predicted step time")
    band = report["held_out_band"]
    if band["rows"] < BAND_MIN_ROWS:
        used = (f"; fewer than {BAND_MIN_ROWS} rows give no usable 5th/95th percentile, so simulate and optimize "
                "keep the published runs' band")
    else:
        used = "; written into the spec, simulate and optimize use it" if written else ""
    print(f"step-time band for this cluster: measured {band['low']:.3g}x .. {band['high']:.3g}x the predicted (90% of "
          f"{band['rows']} held-out rows){used}")


def run(args) -> int:
    from planner.calibrate.calibration import calibrate
    from planner.calibrate.samples import load_samples, named_as_given, rows_of_the_origin, uncalibrated_origin
    from planner.cli.progress import Progress
    from planner.specs.clusters import load_cluster
    from planner.report.render import json_document
    from planner.profile.runs_csv import read_runs_files

    _refuse_unused_flags(args)
    spec = load_cluster(args.cluster, args.cluster_dir)
    cluster = named_as_given(args.cluster, spec)
    target = _output_target(args, cluster)
    runs, problems = read_runs_files(args.runs)
    _refuse_writing_past_unreadable_rows(problems, target)
    _refuse_unknown_time_column(args, runs)
    runs = rows_of_the_origin(runs, cluster, spec, args.cluster_dir)
    samples, skipped = load_samples(runs, cluster, args.time_column, args.cluster_dir)
    _refuse_too_few_rows(len(samples), runs, cluster, args.cluster_dir,
                         spec.name if spec.name != cluster.name else None)
    samples, holdout = _split_holdout(samples, args.holdout_source, cluster)
    with Progress("calibrate", unit="fits", quiet=args.quiet) as progress:
        report = calibrate(samples, cluster, k=args.folds or DEFAULT_FOLDS, holdout=holdout, progress=progress,
                           uncalibrated=uncalibrated_origin(cluster, spec, args.cluster_dir))
    sources = sorted({s.run.source or "(no source)" for s in samples})
    written = _write_spec(args, cluster, report, len(samples), target, spec.name) if target is not None else None
    out = {k: v for k, v in report.items() if k != "cluster"}
    out.update({"rows_fitted": len(samples), "rows_held_out": len(holdout or []), "skipped_rows": skipped,
                "unreadable_rows": [str(p) for p in problems], "written": written, "sources": sources})
    if args.json:
        print(json_document(out))
        _say_written(written, args.cluster_dir)
        _warn_rows_naming_the_name_key(runs, cluster, spec)
        _warn_repeated_run([s.run for s in [*samples, *(holdout or [])]])
        return 0
    print(f"cluster {cluster.name}: fitted on {len(samples)} rows from {len(sources)} source(s)"
          + (f", {len(holdout)} rows held out" if holdout else ""))
    _print_rows_left_out(problems, skipped, runs, cluster, args.cluster_dir)
    print(_parameter_table(report))
    print(_error_table(report))
    _print_fit_judgement(report, written)
    _say_written(written, args.cluster_dir)
    _warn_rows_naming_the_name_key(runs, cluster, spec)
    _warn_repeated_run([s.run for s in [*samples, *(holdout or [])]])
    return 0


def _warn_repeated_run(runs: list) -> None:
    """One stderr line when two rows calibrate reads, fitted or held out, are one run under two ids (the same layout,
    step time and memory): it weighs twice in the fit, or is held out against itself (`ingest --append` refuses
    such a row; two files can hold it)."""
    from planner.profile.runs_csv import repeated_run

    repeated = repeated_run(runs)
    if repeated is not None:
        first, again = repeated
        print(f"planner calibrate: warning: rows {first.id!r} and {again.id!r} have the same layout, step time and "
              "memory: one run under two ids weighs twice in the fit (or is held out against itself)", file=sys.stderr)


def _warn_rows_naming_the_name_key(runs: list, cluster, spec) -> None:
    """One stderr line when rows named the spec by its name: key, which differs from the name --cluster gave
    it: they were left out (other clusters), and the count alone would not say why. Written last, after the
    output, so that no later error makes it a second line beside a one-line error."""
    from planner.calibrate.samples import rows_naming_the_name_key
    from planner.io import shown

    named = rows_naming_the_name_key(runs, cluster, spec)
    if named:
        sys.stderr.write(
            f"planner calibrate: warning: {named} row(s) name cluster {spec.name!r}, the name: key of "
            f"{shown(cluster.source_file)}, and were left out: rows name a spec by its file name, as --cluster, "
            f"simulate and validate do, so this spec is {cluster.name!r}; set their cluster to {cluster.name} if "
            f"they were measured on it, and name: {cluster.name} in the spec (`planner doctor` flags it)\n")


def _kept(report: dict, name: str) -> str:
    """What a parameter this fit left alone stays at: the default, or an earlier calibration's value."""
    earlier = report.get("earlier_fitted", {})
    return f"{earlier[name]:.4g} from the earlier calibration" if name in earlier else "default"


def _say_written(written: str | None, cluster_dir: str | None) -> None:
    """Name the file as --cluster takes it: by name when that name resolves to it, else by path."""
    from planner.errors import PlannerInputError
    from planner.specs.clusters import load_cluster

    if not written:
        return
    name = Path(written).stem
    try:
        resolves = Path(load_cluster(name, cluster_dir).source_file).resolve() == Path(written).resolve()
    except PlannerInputError:
        resolves = False
    flag = f"--cluster {name}" + (f" --cluster-dir {cluster_dir}" if cluster_dir else "") if resolves else f"--cluster {written}"
    sys.stderr.write(f"wrote {written} (use {flag})\n")
