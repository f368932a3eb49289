"""`planner validate RUNS.csv`: simulate every measured run and report the prediction error."""

from __future__ import annotations


def register(subparsers, name: str) -> None:
    parser = subparsers.add_parser(
        name, help="predicted vs measured step time and memory for a runs CSV",
        description="Simulate every row of a runs CSV (shared/spec/runs_csv.md) and report the error: "
                    "per row, MAPE / median / worst overall and per source. Rows that cannot be simulated "
                    "are listed with the reason.")
    parser.add_argument("runs", nargs="+", metavar="RUNS.csv")
    parser.add_argument("--cluster-dir", metavar="DIR", help="resolve cluster names in this folder instead of the bundled specs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--write-error-bands", metavar="FILE.json",
                        help="write the step-time error bands (5th-95th percentile of measured/predicted, by framework) "
                             "that simulate and optimize attach to predictions (the shipped planner/error_bands.json)")
    parser.add_argument("--force", action="store_true", help="overwrite the --write-error-bands file")
    parser.set_defaults(run=run)


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


def run(args) -> int:
    from planner.render import table, to_json
    from planner.profile.runs_csv import read_runs_files
    from planner.validation import predict_runs, summarize

    from planner.error_bands import compute_bands
    from planner.io import check_new_outputs, write_text_atomic

    if args.write_error_bands:
        check_new_outputs([args.write_error_bands], args.force)
    runs, problems = read_runs_files(args.runs)
    results = predict_runs(runs, args.cluster_dir)
    bands = compute_bands(results)
    if args.write_error_bands:
        sources = sorted({r.run.source or "(no source)" for r in results if r.step_error is not None})
        write_text_atomic(args.write_error_bands, to_json({"runs": [str(p) for p in args.runs], "sources": sources,
                                                           "bands": bands}) + "\n", force=args.force)
    step = summarize(results, "step")
    memory = summarize(results, "memory")
    skipped = [r for r in results if r.reason]
    if args.json:
        print(to_json({
            "rows": [_row_json(r) for r in results],
            "step_time": step,
            "memory": memory,
            "unreadable_rows": [str(p) for p in problems],
            "skipped_rows": [{"id": r.run.id, "reason": r.reason} for r in skipped],
            "error_bands": bands,
        }))
        return 0
    rows = []
    for r in results:
        if r.reason:
            continue
        p = r.predicted
        rows.append([
            r.run.id, (r.run.source or "")[:34], r.cluster_name, r.run.gpus or "-",
            f"{r.run.step_time_s:.3f}" if r.run.step_time_s else "-", f"{p['step_time_s']:.3f}",
            f"{100 * r.step_error:+.1f}%" if r.step_error is not None else "-",
            f"{r.run.mem_gib:.1f}" if r.run.mem_gib else "-", f"{r.predicted_memory_bytes / 2**30:.1f}",
            f"{100 * r.memory_error:+.1f}%" if r.memory_error is not None else "-",
            ", ".join(f"{k}={v}" for k, v in r.inferred.items()),
        ])
    print(table(["id", "source", "cluster", "gpus", "step s", "pred s", "error", "mem GiB", "pred GiB", "mem err",
                 "inferred"], rows, align="lllrrrrrrrl"))
    for problem in problems:
        print(f"unreadable: {problem}")
    for r in skipped:
        print(f"skipped: {r.run.id}: {r.reason}")
    for label, summary in (("step time", step), ("memory", memory)):
        if summary is None:
            print(f"\n{label}: no rows with a measured {label}")
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
    return 0
