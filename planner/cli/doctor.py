"""`planner doctor FILE...`: list every problem in cluster specs and runs files at once, with file and line.

Runs CSVs are streamed (bounded memory at the input cap); while one is read, a progress line shows on
stderr when it is a terminal (planner.cli.progress).
"""

from __future__ import annotations


def register(subparsers, name: str) -> None:
    from planner.cli.arguments import CLUSTER_DIR_HELP

    parser = subparsers.add_parser(
        name, help="check cluster specs (.yaml) and runs files (.csv); print every problem with file:line",
        description="Check hand-edited cluster specs and runs CSVs. Exit 0 when clean, 1 when problems were "
                    "found, 2 when a file cannot be checked at all.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="cluster specs (.yaml) and runs files (.csv) to check")
    parser.add_argument("--cluster-dir", metavar="DIR", help=CLUSTER_DIR_HELP)
    parser.set_defaults(run=run)


def run(args) -> int:
    from planner.cli.progress import Progress
    from planner.calibrate.doctor import RowsSeen, check_file, check_paths
    from planner.specs.clusters import check_cluster_dir
    from planner.report.render import json_document

    # A path that names no checkable file stops doctor before any output (exit 2, one line naming every such
    # path): the findings of the others would scroll the one-line error away, and exit 1 would say they were
    # all checked.
    check_paths(args.files)
    check_cluster_dir(args.cluster_dir)
    checked, seen = {}, RowsSeen()  # runs files are read as one set, as validate and calibrate read them
    for path in args.files:
        progress = Progress("doctor", quiet=args.quiet)  # on stderr when it is a terminal; erased before the findings print
        try:
            findings = check_file(path, args.cluster_dir, progress, seen)
        finally:
            progress.done()
        checked[path] = findings
        if args.json:
            continue
        for finding in findings:
            print(finding)
        if not findings:
            print(f"{path}: ok")
    total = sum(len(findings) for findings in checked.values())
    if args.json:
        print(json_document({"problems": total, "files": [
            {"path": path, "problems": [{"where": f.where, "message": f.message} for f in findings]}
            for path, findings in checked.items()]}))
    elif total:
        print(f"{total} problem(s) found")
    return 1 if total else 0
