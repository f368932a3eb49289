"""`planner ingest LOG...`: runs-CSV rows from DeepSpeed and Megatron-LM training logs, one per log.

    planner ingest train.log --cluster dgx-a100-80gb --layers 24 --hidden 2048 --seq-len 2048 --vocab 50304
    planner ingest logs/*.log --cluster my-cluster --out runs.csv --append

Layout the log does not print is taken from the flags. Problems (unreadable lines, logs without a
step time, layout gaps) are printed as `file:line: reason`; the rest is used. Exit 0 when every log
gave a row, 1 when some did not, 2 when none did or the input is unusable.

A flag wins over the log, but never makes a row `planner doctor` rejects (a layout that does not divide:
global batch by micro-batch x dp, heads by kv heads, vpp without pp) and never relabels the global batch the
log measured its step time at: either is refused (exit 2, nothing written), naming the flags and the log's values.

--append adds the new rows at the end of --out and never rewrites what is there: the rows follow the
file's own header, and nothing is written when a new row's id is already in the file (give it another
--id, or remove the old row), when a new row repeats a run already there (same layout, step time and
memory: a log ingested again under another name) or when a new row fills a column the header lacks
(write to a new file; the commands that read runs take several files). A model column (bias, norm,
tied_embeddings, dropout) the header lacks reads as its default, so a row at the default is appended.
"""

from __future__ import annotations

import sys
from pathlib import Path

from planner.cli.arguments import CONFIG_HELP, output_path, whole_number
from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORK_NAMES

_INT_FLAGS = ("gpus", "layers", "hidden", "heads", "kv-heads", "ffn", "seq-len", "vocab", "tp", "pp", "dp", "cp",
              "vpp", "first-stage-layers", "last-stage-layers", "zero", "micro-batch", "global-batch", "seq-parallel")


def register(subparsers, name: str) -> None:
    parser = subparsers.add_parser(
        name, help="turn DeepSpeed / Megatron-LM training logs into runs-CSV rows",
        description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("logs", nargs="+", metavar="LOG", help="training log files")
    parser.add_argument("--out", "-o", type=output_path, help="runs CSV to write (default: print to stdout)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true",
                      help="add rows at the end of --out without rewriting it; an id already there is refused "
                           "(pass another --id), as are a run already there and a column its header lacks")
    mode.add_argument("--force", action="store_true", help="overwrite --out")
    parser.add_argument("--skip", type=whole_number(0), default=1, help="logged steps to drop as warm-up before the median (default 1)")
    parser.add_argument("--id", help="row id (one log only; default: the log file name without extension)")
    parser.add_argument("--source", help="source column (default: the log path)")
    parser.add_argument("--confidence", choices=("high", "medium", "low"),
                        help="default: high when the log gave the whole layout, else medium")
    parser.add_argument("--notes", help="text put before the generated notes")
    layout = parser.add_argument_group("layout where the log lacks it (a flag wins over the log; a row doctor rejects and "
                                       "a --global-batch the log did not measure at are refused)")
    layout.add_argument("--cluster", help="cluster spec name (logs never say)")
    for flag in _INT_FLAGS:
        low, high = {"zero": (0, 3), "seq-parallel": (0, 1)}.get(flag, (1, None))
        layout.add_argument(f"--{flag}", type=whole_number(low, high) if high else whole_number(low), help=CONFIG_HELP[flag])
    layout.add_argument("--mlp", choices=("gelu", "swiglu"), help=CONFIG_HELP["mlp"])
    layout.add_argument("--offload", choices=("none", "optimizer", "optimizer+params"), help=CONFIG_HELP["offload"])
    layout.add_argument("--recompute", choices=("none", "selective", "full"), help=CONFIG_HELP["recompute"])
    layout.add_argument("--dtype", choices=("bf16", "fp16", "fp8", "fp32"), help=CONFIG_HELP["dtype"])
    layout.add_argument("--framework", choices=list(FRAMEWORK_NAMES),
                        help="the training stack that ran (default: what the log shows: deepspeed for DeepSpeed's "
                             "engine output, megatron for a Megatron-LM arguments block)")
    layout.add_argument("--flash-attention", type=int, choices=[0, 1],
                        help="1: fused flash attention, 0: unfused softmax (default: what Megatron's "
                             "attention arguments say; empty otherwise)")
    parser.set_defaults(run=run_ingest)


def _unique_id(wanted: str, taken: set[str]) -> str:
    candidate, n = wanted, 2
    while candidate in taken:
        candidate, n = f"{wanted}-{n}", n + 1
    return candidate


def run_ingest(args) -> int:
    from planner.profile.deepspeed_logs import parse_log_file
    from planner.profile.ingest import row_from_log
    from planner.io import distinct_input_files, output_exists, refuse_output_onto_input
    from planner.profile.runs_csv import (append_runs, missing_simulation_columns, repeated_run, runs_to_csv_text,
                                          write_runs)

    if args.id is not None:
        # A runs CSV's reader strips its cells: an id with blanks around it would be another id when written and
        # this one when read (beside an equal id already in an --append file, a row every reader drops).
        args.id = args.id.strip()  # (a blank one is refused with the other blank flags)
    if args.id and len(args.logs) > 1:
        raise PlannerInputError(f"--id: one id cannot name {len(args.logs)} logs; leave it out to use the file names")
    if (args.append or args.force) and not args.out:
        raise PlannerInputError("--append/--force need --out FILE")
    refuse_output_onto_input("--out", args.out, args.logs)  # --append would extend the very log being read
    exists = bool(args.out) and output_exists(args.out)  # also refuses a folder, device or FIFO
    if exists and not (args.append or args.force):
        raise PlannerInputError(f"--out {args.out}: already exists; pass --append to add rows or --force to overwrite it")
    distinct_input_files(args.logs, "training log")
    if args.cluster is not None:
        from planner.specs.clusters import load_cluster

        # The row names the cluster validate and calibrate will load: one they cannot find is bad input here,
        # before any row is written (the error lists the known names, as doctor's does).
        try:
            load_cluster(args.cluster)
        except PlannerInputError as error:
            raise PlannerInputError(f"--cluster {args.cluster}: {error}") from None
    flags = {key: value for key, value in vars(args).items() if value is not None}
    notes = []  # notes go to stderr once there is a result; with none they make the one error line
    rows, taken, failed, logs_of = [], set(), 0, {}
    reasons = []  # why each skipped log gave no row: row_from_log's last problem
    for path in args.logs:
        log = parse_log_file(path)
        row_id = _unique_id(args.id or Path(path).stem.strip(), taken)  # logs with one name in different folders
        run, problems = row_from_log(log, flags, row_id, skip=args.skip)
        if run is None:
            failed += 1
            reasons.append(str(problems[-1]))
            notes += [str(problem) for problem in problems[:-1]]
            continue
        notes += [str(problem) for problem in problems]
        if not run.cluster:
            notes.append(f"{path}: no --cluster given; the row's cluster is empty")
        taken.add(run.id)
        rows.append(run)
        logs_of[run.id] = path
    if not rows:
        # The reasons first: a log's other notes (skipped lines, ...) did not stop it giving a row.
        shown = [*reasons, *notes]
        text = "; ".join(shown[:3]) + (f"; and {len(shown) - 3} more" if len(shown) > 3 else "")
        raise PlannerInputError(f"no rows: none of the {len(args.logs)} log(s) gave a row: {text}")
    repeated = repeated_run(rows)
    if repeated is not None:  # copies of one log (the same file named twice was refused above)
        first, again = (logs_of[run.id] for run in repeated)
        raise PlannerInputError(f"{again}: gives the same layout, step time and memory as {first}: one run would count "
                                "twice; ingest each log once")
    if args.out and args.append and exists:
        append_runs(args.out, rows)  # refuses (nothing written) before the notes are printed
    elif args.out:
        write_runs(args.out, rows, force=args.force)
    for note in [*reasons, *notes]:
        sys.stderr.write(f"planner ingest: {note}\n")
    if args.out:
        # A row without its model's shape is kept (an empty cell means "not known", spec/runs_csv.md), but
        # validate and calibrate skip it until the missing columns are filled in: say so where the count is.
        incomplete = sum(bool(missing_simulation_columns(run)) for run in rows)
        unusable = (f" ({incomplete} incomplete: validate and calibrate skip them until the missing columns are "
                    "filled in)") if incomplete else ""
        sys.stderr.write(f"planner ingest: {len(rows)} row(s) -> {args.out}{unusable}\n")
    if args.json:
        from planner.report.render import json_document

        from dataclasses import asdict

        print(json_document({"rows": [{k: v for k, v in asdict(run).items() if k != "origin"} for run in rows],
                             "logs_without_row": failed,
                             "notes": [*reasons, *notes], "written": args.out}))
    elif not args.out:
        sys.stdout.write(runs_to_csv_text(rows))
    return 1 if failed else 0
