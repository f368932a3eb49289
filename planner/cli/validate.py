"""`planner validate RUNS.csv`: simulate every measured run and report the prediction error.

Streams: rows are read, simulated a chunk at a time and folded into the summaries as they come, and
what is printed per row is spooled to a temporary file (disk about the size of the output), so memory
stays bounded on a file at the input cap (benchmarks/bench_validate_stream.py): what grows with the
rows is 8 bytes per error for the medians and percentiles, and the ids seen (duplicate ids). Nothing is printed until every row is done: an
input error found late (bytes that are not UTF-8 at row 150,000) leaves stdout empty. A progress
line shows on stderr when it is a terminal (planner.cli.progress).
"""

from __future__ import annotations

import json
import sys
import tempfile

from planner.report.render import to_json


def register(subparsers, name: str) -> None:
    from planner.cli.arguments import CLUSTER_DIR_HELP, output_path

    parser = subparsers.add_parser(
        name, help="predicted vs measured step time and memory for a runs CSV",
        description="Simulate every row of a runs CSV (data/spec/runs_csv.md) and report the error: "
                    "per row, MAPE / median / worst overall and per source. Rows that cannot be simulated "
                    "are listed with the reason. Exit 2 when no row of the files can be read.")
    parser.add_argument("runs", nargs="+", metavar="RUNS.csv", help="runs CSV files (data/spec/runs_csv.md)")
    parser.add_argument("--cluster-dir", metavar="DIR", help=CLUSTER_DIR_HELP)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--write-error-bands", metavar="FILE.json", type=output_path,
                        help="write the step-time error bands (5th-95th percentile of measured/predicted, by framework) "
                             "that simulate and optimize attach to predictions (the shipped planner/calibrate/error_bands.json)")
    parser.add_argument("--force", action="store_true", help="overwrite the --write-error-bands file")
    parser.set_defaults(run=run)


class Spool:
    """Items (JSON-able) written to a temporary file and read back in order: output that must wait
    for the end of the input without being held in memory."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self.count = 0

    def add(self, item) -> None:
        self._file.write(json.dumps(item) + "\n")
        self.count += 1

    def __iter__(self):
        self._file.seek(0)
        return (json.loads(line) for line in self._file)

    def close(self) -> None:
        self._file.close()


TABLE_HEADERS = ["id", "source", "cluster", "gpus", "step s", "pred s", "error", "mem GiB", "pred GiB", "mem err",
                 "inferred"]
TABLE_ALIGN = "lllrrrrrrrl"
NOT_FITTING_SHOWN = 10  # row ids named in the predicted-not-to-fit line


class SpooledTable:
    """planner.report.render.table's layout (columns as wide as their widest cell, two spaces apart, trailing
    blanks cut) for rows spooled one at a time."""

    def __init__(self, headers: list[str], align: str) -> None:
        self.headers, self.align = headers, align
        self.widths = [len(h) for h in headers]
        self.rows = Spool()

    def add(self, cells: list) -> None:
        cells = [str(c) for c in cells]
        self.widths = [max(w, len(c)) for w, c in zip(self.widths, cells)]
        self.rows.add(cells)

    def _line(self, values) -> str:
        return "  ".join(v.ljust(w) if a == "l" else v.rjust(w)
                         for v, w, a in zip(values, self.widths, self.align)).rstrip()

    def lines(self):
        yield self._line(self.headers)
        yield self._line(["-" * w for w in self.widths])
        yield from (self._line(cells) for cells in self.rows)


def _row_json(row) -> dict:
    out = {"id": row.run.id, "source": row.run.source, "cluster": row.run.cluster, "origin": row.run.origin}
    if row.reason:
        out["skipped"] = row.reason
        return out
    out["inferred"] = row.inferred
    out.update({
        "measured_step_time_s": row.run.step_time_s,
        "predicted_step_time_s": row.predicted["step_time_s"],
        "step_time_error": row.step_error,
        "measured_mem_gib": row.run.mem_gib,
        "predicted_mem_gib": row.predicted_memory_bytes / 2**30,
        "memory_error": row.memory_error,
        "fits": row.predicted["fits"],
        "mfu": row.predicted["mfu"],
    })
    return out


def _row_cells(r) -> list:
    p = r.predicted
    return [
        r.run.id, (r.run.source or "")[:34], r.cluster_name, r.run.gpus or "-",
        f"{r.run.step_time_s:.3f}" if r.run.step_time_s else "-", f"{p['step_time_s']:.3f}",
        f"{100 * r.step_error:+.1f}%" if r.step_error is not None else "-",
        f"{r.run.mem_gib:.1f}" if r.run.mem_gib else "-", f"{r.predicted_memory_bytes / 2**30:.1f}",
        f"{100 * r.memory_error:+.1f}%" if r.memory_error is not None else "-",
        ", ".join(f"{k}={v}" for k, v in r.inferred.items()),
    ]


class _Collected:
    """What validate prints, gathered while rows stream: summaries in memory (a float per row), per-row
    output in spools."""

    def __init__(self, as_json: bool) -> None:
        from planner.calibrate.error_bands import BandAccumulator
        from planner.calibrate.validation import ErrorSummary

        self.as_json = as_json
        self.step, self.memory, self.bands = ErrorSummary(), ErrorSummary(), BandAccumulator()
        self.sources: set[str] = set()
        self.rows_read = self.measured_rows = 0
        self.rows = Spool() if as_json else SpooledTable(TABLE_HEADERS, TABLE_ALIGN)
        self.unreadable, self.skipped = Spool(), Spool()
        self.first_problem = None
        # Rows that ran and are predicted not to fit in HBM: how many, and the first ids (rows stream: no list per row).
        self.not_fitting, self.not_fitting_ids = 0, []
        # Rows that are one run under two ids (profile.runs_csv.run_identity: the same layout, step time and memory)
        # count twice in every error figure: kept by the identity's hash (8 bytes a row), the first pair by id.
        self.first_id_of_run: dict[int, str] = {}
        self.repeated_runs, self.first_repeat = 0, None
        # Rows whose measurement is more than doctor's UNIT_ERROR_RATIO off the prediction (a step time in ms, a
        # memory in MB: about 1000x): they enter the error figures as they are, so validate says so.
        self.unit_suspects, self.first_unit_suspect = 0, None

    def problem(self, problem) -> None:
        self.first_problem = self.first_problem or problem
        self.unreadable.add(str(problem))

    def result(self, r) -> None:
        self.rows_read += 1
        self.measured_rows += bool(r.run.step_time_s or r.run.mem_gib)
        self._note_repeat(r.run)
        self._note_unit_suspect(r)
        source = r.run.source or "(no source)"
        self.step.add(source, r.run.id, r.step_error)
        self.memory.add(source, r.run.id, r.memory_error)
        self.bands.add(r)
        if r.step_error is not None:
            self.sources.add(source)
        if r.reason:
            self.skipped.add({"id": r.run.id, "origin": r.run.origin, "reason": r.reason})
        elif not r.predicted["fits"]:
            self.not_fitting += 1
            if len(self.not_fitting_ids) < NOT_FITTING_SHOWN:
                self.not_fitting_ids.append(r.run.id)
        if self.as_json:
            self.rows.add(to_json(_row_json(r)))  # rendered once, here: printing only copies the text
        elif not r.reason:
            self.rows.add(_row_cells(r))

    def _note_unit_suspect(self, r) -> None:
        from planner.calibrate.doctor import memory_finding, ratio_finding

        if r.reason:
            return
        finding = ratio_finding(r) or memory_finding(r)
        if finding is not None:
            self.unit_suspects += 1
            self.first_unit_suspect = self.first_unit_suspect or f"row {r.run.id!r}: {finding}"

    def _note_repeat(self, run) -> None:
        from planner.profile.runs_csv import run_cells, run_identity

        key = run_identity(run_cells(run))
        if key is None:
            return
        first = self.first_id_of_run.setdefault(hash(key), run.id)
        if first != run.id:
            self.repeated_runs += 1
            self.first_repeat = self.first_repeat or (first, run.id)

    def close(self) -> None:
        for spool in (self.rows.rows if isinstance(self.rows, SpooledTable) else self.rows, self.unreadable, self.skipped):
            spool.close()


def _collect(paths, cluster_dir, collected: _Collected, progress) -> None:
    from planner.profile.runs_csv import RowProblem, iter_runs_files
    from planner.calibrate.validation import iter_predictions

    def runs():
        for item in iter_runs_files(paths):
            if isinstance(item, RowProblem):
                collected.problem(item)
            else:
                yield item

    for result in iter_predictions(runs(), cluster_dir):
        collected.result(result)
        progress.update(collected.rows_read + collected.unreadable.count)


def run(args) -> int:
    from planner.cli.progress import Progress
    from planner.errors import PlannerInputError
    from planner.io import check_new_outputs, distinct_input_files, refuse_output_onto_input, write_text_atomic
    from planner.profile.runs_csv import RUNS_FILE
    from planner.specs.clusters import check_cluster_dir

    distinct_input_files(args.runs, RUNS_FILE)  # a missing, unreadable or repeated file stops validate first
    check_cluster_dir(args.cluster_dir)
    if args.write_error_bands:
        refuse_output_onto_input("--write-error-bands", args.write_error_bands, args.runs)
        check_new_outputs([args.write_error_bands], args.force)
    collected = _Collected(args.json)
    progress = Progress("validate", quiet=args.quiet)
    try:
        try:
            _collect(args.runs, args.cluster_dir, collected, progress)
        finally:
            progress.done()
        if collected.rows_read == 0:
            files = ", ".join(args.runs)
            if collected.first_problem is None:
                raise PlannerInputError(f"{files}: no rows after the header; expected one row per measured run")
            raise PlannerInputError(f"{files}: no readable row ({collected.unreadable.count} unreadable, the first "
                                    f"{collected.first_problem}); run `planner doctor` for every problem")
        bands = collected.bands.bands()
        if args.write_error_bands:
            # A "90% band" of one to nine rows is their spread, not a 5th-95th percentile (one row wrote a band
            # of zero width); the framework groups already need MIN_ROWS, and "all" needs them too.
            from planner.calibrate.error_bands import MIN_ROWS
            rows = bands.get("all", {}).get("rows", 0)
            if rows < MIN_ROWS:
                raise PlannerInputError(f"--write-error-bands: {rows} row(s) with a measured step time simulated; a "
                                        f"90% band needs at least {MIN_ROWS}, nothing written")
            write_text_atomic(args.write_error_bands, to_json({"runs": [str(p) for p in args.runs],
                                                               "sources": sorted(collected.sources),
                                                               "clusters": sorted(collected.bands.clusters),
                                                               "bands": bands}) + "\n", force=args.force)
        step, memory = collected.step.summary(), collected.memory.summary()
        if args.json:
            _print_json(collected, step, memory, bands)
        else:
            _print_text(collected, step, memory, bands)
    finally:
        collected.close()
    if collected.unit_suspects:
        more = f" (and {collected.unit_suspects - 1} more: `planner doctor` lists them)" if collected.unit_suspects > 1 else ""
        print(f"planner validate: warning: {collected.first_unit_suspect}{more}", file=sys.stderr)
    if collected.repeated_runs:
        first, again = collected.first_repeat
        more = f" (and {collected.repeated_runs - 1} more)" if collected.repeated_runs > 1 else ""
        print(f"planner validate: warning: rows {first!r} and {again!r} have the same layout, step time and memory: one "
              f"run under two ids counts twice in the error figures{more}", file=sys.stderr)
    if collected.measured_rows == 0:
        # Rows read but nothing measured to hold them against (a header naming `step_time_ms` or `mem_gb`
        # reads as extra columns): nothing was validated, which is no success.
        print(f"planner validate: {', '.join(args.runs)}: no row has a measured step_time_s or mem_gib, so nothing "
              "was compared (a column named otherwise is read as an extra column)", file=sys.stderr)
        return 1
    # Exit 1 when some rows gave no result (the contract in planner.cli): skipped or unreadable ones.
    return 1 if collected.skipped.count or collected.unreadable.count else 0


def _print_json(collected: _Collected, step, memory, bands) -> None:
    """The JSON document planner.report.render.to_json would make of the whole result (sorted keys, indent 2),
    written part by part: the lists of rows come from their spools, an item at a time."""
    from planner.report.render import JSON_SCHEMA_VERSION

    document = {"error_bands": bands, "memory": memory, "rows": collected.rows, "schema_version": JSON_SCHEMA_VERSION,
                "skipped_rows": collected.skipped, "step_time": step, "unreadable_rows": collected.unreadable}
    write = sys.stdout.write
    write("{\n")
    for n, (key, value) in enumerate(sorted(document.items())):
        write(f"  {json.dumps(key)}: ")
        if isinstance(value, Spool) and value.count:
            for i, item in enumerate(value):
                text = item if value is collected.rows else to_json(item)  # rows are spooled as JSON text
                write(("[\n    " if i == 0 else ",\n    ") + text.replace("\n", "\n    "))
            write("\n  ]")
        else:
            write(to_json([] if isinstance(value, Spool) else value).replace("\n", "\n  "))
        write(",\n" if n < len(document) - 1 else "\n")
    write("}\n")


def _print_text(collected: _Collected, step, memory, bands) -> None:
    from planner.report.render import table

    for line in collected.rows.lines():
        print(line)
    for problem in collected.unreadable:
        print(f"unreadable: {problem}")
    for skipped in collected.skipped:
        # file:line as the unreadable rows are named, then the id the table uses (helper-found: the id alone)
        where = f"{skipped['origin']} (id {skipped['id']})" if skipped.get("origin") else skipped["id"]
        print(f"skipped: {where}: {skipped['reason']}")
    if collected.not_fitting:
        # Rows that ran but that the memory model books over the GPU's HBM: their step times are still compared,
        # and the memory model is what is off for them (--json has each row's fits).
        ids = ", ".join(collected.not_fitting_ids) + (", ..." if collected.not_fitting > NOT_FITTING_SHOWN else "")
        print(f"predicted not to fit: {collected.not_fitting} row(s) that ran are predicted above their GPU's "
              f"memory (rows {ids}); their step times are still compared")
    for label, summary in (("step time", step), ("memory", memory)):
        if summary is None:
            none_simulated = collected.skipped.count == collected.rows_read
            skipped = f" (all {collected.skipped.count} row(s) skipped)" if none_simulated else ""
            print(f"\n{label}: no simulated row with a measured {label}{skipped}")
            continue
        print(f"\n{label} error by source")
        source_rows = [[src, s["count"], f"{100 * s['mape']:.1f}%", f"{100 * s['median_ape']:.1f}%",
                        f"{100 * s['worst_ape']:.1f}% ({s['worst_id']})", f"{100 * s['mean_signed']:+.1f}%"]
                       for src, s in summary["by_source"].items()]
        print(table(["source", "rows", "MAPE", "median", "worst", "bias"], source_rows, align="lrrrrr"))
        print(f"{label}: {summary['count']} rows, MAPE {100 * summary['mape']:.1f}%, median {100 * summary['median_ape']:.1f}%, "
              f"worst {100 * summary['worst_ape']:.1f}% (row {summary['worst_id']}), bias {100 * summary['mean_signed']:+.1f}%")
    if bands:
        print("\nstep-time error bands (90% of measured/predicted; simulate and optimize attach them)")
        print(table(["framework", "rows", "MAPE", "low", "high"],
                    [[g, b["rows"], f"{100 * b['mape']:.1f}%", f"x{b['low']:.3f}", f"x{b['high']:.3f}"] for g, b in bands.items()],
                    align="lrrrr"))
