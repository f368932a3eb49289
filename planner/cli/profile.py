"""`planner profile`: run real DeepSpeed steps over a grid of configurations; write profiles/<name>.csv.

    planner profile --name cpu-local --grid default
    planner profile --name quick --grid ci --world-sizes 1,2 --zero 0,3 --steps 5
    planner profile --name mine --grid my_grid.yaml --hostfile hosts --cluster my-cluster --resume

Exit code 0 when every configuration ran, 1 when some failed or timed out (they are still recorded,
with status and error), 2 on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
import time

from planner.errors import PlannerInputError


def _int_list(flag: str):
    def parse(text: str) -> list[int]:
        try:
            return [int(part) for part in _items(text, flag)]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects comma-separated whole numbers, got {text!r}") from None
    return parse


def _items(text: str, flag: str) -> list[str]:
    """arguments.comma_items as an argparse type's error."""
    from planner.cli.arguments import comma_items

    try:
        return comma_items(text, flag)
    except PlannerInputError as error:
        raise argparse.ArgumentTypeError(str(error).split(": ", 1)[1]) from None


def _profile_name(text: str) -> str:
    """--name becomes OUT_DIR/NAME.csv and .json: a bare file name, so the files stay inside --out-dir."""
    if not text.strip() or any(sep in text for sep in ("/", "\\", os.sep)) or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"expected a file name without path separators (the files go in --out-dir), "
                                         f"got {text!r}")
    return text


def _text_list(text: str) -> list[str]:
    return _items(text, "list")


def register(subparsers, name: str) -> None:
    from planner.cli.arguments import output_path, real_number, whole_number

    parser = subparsers.add_parser(
        name, help="run real DeepSpeed training steps over a grid and record them as a runs CSV",
        description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--name", required=True, type=_profile_name, help="profile name: writes OUT_DIR/NAME.csv and OUT_DIR/NAME.json")
    parser.add_argument("--grid", default="default", help="built-in grid (ci, default, gpu-1) or a grid YAML file (default: default)")
    parser.add_argument("--out-dir", default="profiles", type=output_path, help="folder for the profile files (default: profiles)")
    parser.add_argument("--cluster", default=None, help="cluster spec name for the rows (default: cpu-local on CPU; required on GPUs)")
    axes = parser.add_argument_group("grid axes (each replaces that axis in every sub-grid)")
    axes.add_argument("--world-sizes", type=_int_list("--world-sizes"), help="ranks, e.g. 1,2")
    axes.add_argument("--zero", type=_int_list("--zero"), help="ZeRO stages, e.g. 0,1,2,3")
    axes.add_argument("--offload", type=_text_list, help="none, optimizer, optimizer+params (comma-separated)")
    axes.add_argument("--micro-batch", type=_int_list("--micro-batch"), help="micro-batch sizes, e.g. 1,2,4")
    axes.add_argument("--grad-accum", type=_int_list("--grad-accum"), help="gradient accumulation steps")
    axes.add_argument("--dtype", type=_text_list, help="auto (fp32 on CPU, bf16 on GPUs), fp32, bf16, fp16")
    shape = parser.add_argument_group("model shape (replaces the models axis with the cross product)")
    for flag in ("layers", "hidden", "heads", "seq-len", "vocab", "ffn"):
        shape.add_argument(f"--{flag}", type=_int_list(f"--{flag}"), help=f"{flag} values, comma-separated")
    run = parser.add_argument_group("running")
    run.add_argument("--steps", type=whole_number(1), help="measured steps per configuration (default: the grid's, else 10)")
    run.add_argument("--warmup", type=whole_number(0), help="warm-up steps, not measured (default: the grid's, else 5)")
    run.add_argument("--timeout-s", type=real_number(0, low_open=True), default=600.0, help="wall-clock limit per configuration, in seconds (default 600)")
    run.add_argument("--hostfile", help="DeepSpeed hostfile ('HOST slots=N' lines) for multi-node runs; "
                     "--work-dir must then be on a shared filesystem")
    run.add_argument("--master-port", type=whole_number(1, 65535), help="rendezvous port (default: a free local port per run, "
                     "relaunched on a fresh one when another process took it first)")
    run.add_argument("--work-dir", type=output_path, help="folder for per-run temporary files (default: the system temp folder)")
    run.add_argument("--keep-logs", metavar="DIR", type=output_path, help="keep each configuration's launcher log in DIR")
    run.add_argument("--no-comms-log", action="store_true",
                     help="do not log collectives (the logger synchronises after each op, hiding overlap on GPUs)")
    run.add_argument("--bucket-elements", type=whole_number(1), default=5_000_000,
                     help="ZeRO reduce/all-gather bucket size in elements (default 5e6)")
    run.add_argument("--ds-log-level", choices=("debug", "info", "warning", "error"),
                     help="DeepSpeed log level in the ranks (info prints the engine config; default: DeepSpeed's)")
    state = parser.add_mutually_exclusive_group()
    state.add_argument("--resume", action="store_true", help="continue an existing profile: skip configurations already recorded as ok")
    state.add_argument("--force", action="store_true", help="discard an existing profile of this name and start over")
    parser.add_argument("--redo", type=_text_list, default=[], metavar="IDS",
                        help="with --resume: run these configuration ids again (comma-separated); earlier attempts stay in the JSON")
    parser.add_argument("--dry-run", action="store_true", help="list the configurations and exit without running")
    parser.set_defaults(run=run_profile)


def _overrides(args) -> dict[str, list]:
    return {
        "world_size": args.world_sizes, "zero": args.zero, "offload": args.offload,
        "micro_batch": args.micro_batch, "grad_accum": args.grad_accum, "dtype": args.dtype,
        "layers": args.layers, "hidden": args.hidden, "heads": args.heads, "seq_len": args.seq_len,
        "vocab": args.vocab, "ffn": args.ffn,
    }


def _check_run_folders(work_dir: str | None, keep_logs: str | None) -> None:
    """--work-dir must be a folder that exists (each run's temporary files go inside it), --keep-logs a folder or a name
    to make one: checked before the store's files are made (helper-found: a file or a missing folder there raised
    after the output folder was created, exit 70)."""
    from pathlib import Path

    from planner.errors import PlannerInputError

    if work_dir is not None and not Path(work_dir).is_dir():
        why = "is not a folder" if Path(work_dir).exists() else "does not exist"
        raise PlannerInputError(f"--work-dir {work_dir}: {why}; expected an existing folder for per-run temporary files")
    if keep_logs is not None and Path(keep_logs).exists() and not Path(keep_logs).is_dir():
        raise PlannerInputError(f"--keep-logs {keep_logs}: is not a folder; expected a folder (made if missing) for "
                                "the launcher logs")


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_profile(args) -> int:
    from planner.profile import grid as grids
    from planner.profile import harness
    from planner.cli.progress import with_time_left
    from planner.report.render import json_document

    grid_file, source = grids.load_grid_file(args.grid)
    grid_file = grids.override_axes(grid_file, _overrides(args), f"{source} with command-line axes")
    steps = args.steps if args.steps is not None else (grid_file.steps or 10)
    warmup = args.warmup if args.warmup is not None else (grid_file.warmup if grid_file.warmup is not None else 5)
    if steps < 1 or warmup < 0:
        raise PlannerInputError(f"--steps must be >= 1 and --warmup >= 0, got steps={steps} warmup={warmup}")
    if args.redo and not args.resume:
        raise PlannerInputError("--redo only makes sense with --resume")
    if args.cluster:  # the rows carry it, and validate and calibrate look it up: a name no spec has is bad input
        from planner.specs.clusters import load_cluster
        load_cluster(args.cluster)
    slots = harness.hostfile_slots(args.hostfile) if args.hostfile else None
    harness.require_deepspeed()
    # DeepSpeed's logger, made at its import, writes to stdout: its lines are held and said on stderr once the
    # arguments are known good, so that bad input stays a one-line error (they came first).
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        accelerator = harness.detect_accelerator()
    grid = grids.expand(grid_file, harness.resolve_dtype(accelerator))
    cluster = args.cluster or ("cpu-local" if accelerator == "cpu" else None)
    if cluster is None:
        raise PlannerInputError(f"--cluster: required on accelerator '{accelerator}' (name of the cluster spec the rows describe)")
    unknown = sorted(set(args.redo) - {config.config_id for config in grid.configs})
    if unknown:
        raise PlannerInputError(f"--redo: {', '.join(unknown)} not in the grid (see --dry-run for the ids)")
    if slots is not None:  # every world size must fit before the first launch
        for config in grid.configs:
            harness.nodes_and_ranks(config.world_size, slots)
    _check_run_folders(args.work_dir, args.keep_logs)
    store = None
    if not args.dry_run:  # its files are checked (and opened) before the first line is said
        store = harness.ProfileStore(args.out_dir, args.name)
        store.open(resume=args.resume, force=args.force, warn=lambda text: sys.stderr.write(f"warning: {text}\n"))
    sys.stderr.write(said.getvalue())

    began = time.monotonic()

    def report(line: str) -> None:
        """A status line on stderr; a sweep line ("[i/N] config: ...") also gets the time left at this pace."""
        sys.stderr.write(with_time_left(line, time.monotonic() - began) + "\n")
        sys.stderr.flush()

    report(f"planner profile: {len(grid.configs)} configurations from {source} on '{accelerator}' "
           f"({steps} steps after {warmup} warm-up, timeout {args.timeout_s:g} s each)"
           + (f"; {len(grid.dropped)} invalid combinations left out" if grid.dropped else ""))
    if args.dry_run:
        if args.json:
            print(json_document({"source": source, "accelerator": accelerator, "steps": steps, "warmup": warmup,
                                 "configurations": [config.config_id for config in grid.configs],
                                 "invalid_combinations_left_out": len(grid.dropped)}))
            return 0
        for config in grid.configs:
            print(config.config_id)
        return 0
    settings = harness.RunSettings(
        steps=steps, warmup=warmup, timeout_s=args.timeout_s, accelerator=accelerator, hostfile=args.hostfile,
        master_port=args.master_port, work_dir=args.work_dir, keep_logs=args.keep_logs,
        comms_log=not args.no_comms_log, bucket_elements=args.bucket_elements, ds_log_level=args.ds_log_level,
    )
    started = time.monotonic()
    # `kill PID` should clean up like Ctrl-C: the ranks run in their own session and would outlive us.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        counts = harness.sweep(list(grid.configs), settings, store, cluster, args.name, args.resume, report,
                               redo=frozenset(args.redo))
    finally:
        signal.signal(signal.SIGTERM, previous)
    report(f"planner profile: {counts['ok']} ok, {counts['failed']} failed, {counts['timeout']} timed out, "
           f"{counts['skipped']} skipped in {time.monotonic() - started:.0f} s -> {store.csv_path}, {store.json_path}")
    if args.json:
        print(json_document({"counts": counts, "csv": str(store.csv_path), "json": str(store.json_path)}))
    return 1 if counts["failed"] or counts["timeout"] else 0
