"""`planner report`: the capacity-planning review of one budget and cluster, as HTML and Markdown.

Writes OUT.html (self-contained: figures embedded as base64 PNG), OUT.md (the same text and tables)
and OUT_figures/*.png (the figures the Markdown links). Existing files are refused unless --force,
checked before the search starts. The files are written as one set, all or nothing: staged in a
temporary folder and moved in at the end, so Ctrl-C or SIGTERM never leaves a Markdown file linking
figures that are not there. Also home of the writers `optimize --report/--emit/--emit-deepspeed`
and `simulate --emit/--emit-deepspeed` share.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path

from planner.errors import PlannerInputError

DEEPSPEED_FILES = ("ds_config.json", "megatron_args.txt", "launch.sh", "hostfile", "NOTES.md")  # emit.deepspeed's


def register(subparsers, name: str) -> None:
    from planner.cli.arguments import output_path
    from planner.cli.optimize import add_optimize_arguments

    parser = subparsers.add_parser(
        name, help="write the plan review (HTML + Markdown with plots) for a budget and cluster",
        description="Run `planner optimize` for the problem, then write a review document: the chosen plan and "
                    "runners-up, iso-FLOP curve, loss-vs-wall-clock frontier, memory and step-time breakdowns, "
                    "MFU vs GPUs, sensitivity to slower compute/network and a 2x budget, uncertainty and every assumption. "
                    "With --model or --params (a model already chosen): the GPU counts searched, the chosen count "
                    "and layout with days, cost and their band, runners-up, hyperparameters, memory and step-time "
                    "breakdowns and the cluster assumptions.")
    add_optimize_arguments(parser)
    from planner.cli.fixed_model import add_fixed_model_arguments
    add_fixed_model_arguments(parser, outputs=False)
    parser.add_argument("--out", default="report.html", metavar="OUT.html", type=output_path,
                        help="HTML file to write; OUT.md and OUT_figures/ go beside it (default report.html)")
    parser.add_argument("--force", action="store_true", help="overwrite existing report files")
    parser.add_argument("--no-sensitivity", action="store_true",
                        help="skip the three sensitivity re-runs (each is a full search)")
    parser.add_argument("--moe", action="store_true",
                        help="add a section with the best dense and the best mixture-of-experts plan side by side "
                             "(`optimize --budget B --moe`; Krajewski et al. 2024 laws)")
    parser.set_defaults(run=run)


def report_outputs(out: str, fixed_model: bool = False) -> dict[str, Path]:
    """Every path the report writes: html, md, and one PNG per figure in OUT_figures/ (the budget review's figures,
    or with `fixed_model` the fixed-model review's)."""
    from planner.report.document import FIGURES as BUDGET_FIGURES
    from planner.report.fixed_model_review import FIGURES as FIXED_MODEL_FIGURES

    html_path = Path(out)
    if html_path.suffix.lower() not in (".html", ".htm"):
        raise PlannerInputError(f"--out {out}: expected an .html path (the Markdown twin goes beside it)")
    figures = html_path.with_name(f"{html_path.stem}_figures")
    return {"html": html_path, "md": html_path.with_suffix(".md"),
            **{name: figures / f"{name}.png" for name in (FIXED_MODEL_FIGURES if fixed_model else BUDGET_FIGURES)}}


def deepspeed_outputs(folder: str | None) -> list[Path]:
    return [Path(folder) / name for name in DEEPSPEED_FILES] if folder else []


def write_report(args, inputs, result, paths: dict[str, Path], sensitivity: bool, moe=None,
                 pending: PendingOutputs | None = None) -> None:
    from planner.report import document, plots
    from planner.report import review as review_module
    from planner.report.sensitivity import run_cases

    cluster, law, constraints = inputs
    options = {"dtype": args.dtype, "batch_rule": args.batch_rule, "seq_len": args.seq_len, "vocab": args.vocab}
    cases = None
    if sensitivity:
        from planner.cli.progress import Progress

        with Progress(f"{args.command}: sensitivity", unit="searches",
                      quiet=args.quiet) as progress:
            cases = run_cases(cluster, law, constraints, result, **options, progress=progress)
    review = review_module.build_review(cluster, law, constraints, result, sensitivity=cases,
                                        command=_command_line(), moe=moe, **options)
    figures = plots.all_figures(review) if result.status == "ok" else {}
    with collected(pending, args.force) as out:
        document_files(document.document(review), figures, paths, out)


class PendingOutputs:
    """The files one command writes (report, launch folders, layouts CSV), gathered and then written together, all or
    nothing (io.write_files_atomic): a failure in the last leaves none of the others behind. `notes`: the lines said
    on stderr once they are written."""

    def __init__(self) -> None:
        self.files: dict[Path, bytes] = {}
        self.executable: list[Path] = []
        self.notes: list[str] = []
        self.stale: list[Path] = []

    def add(self, files: dict, executable=(), note: str | None = None, stale=()) -> None:
        """`stale`: files of the same output an earlier run may have left that this one does not write (a review's
        figures its new plan has none of); removed after the writes when they are forced over the earlier output."""
        self.files.update({Path(path): data for path, data in files.items()})
        self.executable += [Path(path) for path in executable]
        self.stale += [Path(path) for path in stale]
        if note:
            self.notes.append(note)

    def write(self, force: bool) -> None:
        from planner.io import write_files_atomic

        write_files_atomic(self.files, force=force, executable=self.executable)
        if force:  # --force replaces the earlier output whole: no figure of another plan stays beside the new report
            for path in self.stale:
                if path not in self.files and (path.is_file() or path.is_symlink()):
                    path.unlink()
        for note in self.notes:
            sys.stderr.write(note + "\n")


@contextlib.contextmanager
def collected(pending: PendingOutputs | None, force: bool):
    """The outputs to add to: `pending`, written later with the command's other outputs, or a new set written here
    (all or nothing) when the block ends without an error."""
    if pending is not None:
        yield pending
        return
    own = PendingOutputs()
    yield own
    own.write(force)


def _add_launch_folder(pending: PendingOutputs, folder: str, files: dict[str, str], note: str) -> None:
    """A launch folder's files (file name -> text; its launch.sh executable) added to `pending`."""
    pending.add({Path(folder) / name: text.encode("utf-8") for name, text in files.items()},
                executable=[Path(folder) / "launch.sh"], note=note)


def document_files(blocks: list, figures: dict[str, bytes], paths: dict[str, Path], pending: PendingOutputs) -> None:
    """A review's blocks as OUT.html (figures embedded) and OUT.md linking OUT_figures/*.png, added to `pending`: the
    Markdown never links a missing figure (report.typeset)."""
    from planner.report import typeset

    markdown_dir = paths["md"].parent
    links = {name: os.path.relpath(paths[name], markdown_dir).replace(os.sep, "/") for name in figures}
    files = {paths["html"]: typeset.to_html(blocks, figures).encode("utf-8"),
             paths["md"]: typeset.to_markdown(blocks, links).encode("utf-8"),
             **{paths[name]: data for name, data in figures.items()}}
    figure_dir = f" (figures in {paths[next(iter(figures))].parent}/)" if figures else ""
    from planner.report.document import FIGURES as BUDGET_FIGURES
    from planner.report.fixed_model_review import FIGURES as FIXED_MODEL_FIGURES

    folder = paths["html"].with_name(f"{paths['html'].stem}_figures")
    stale = [folder / f"{name}.png" for name in (*BUDGET_FIGURES, *FIXED_MODEL_FIGURES) if name not in figures]
    pending.add(files, note=f"wrote {paths['html']} and {paths['md']}{figure_dir}", stale=stale)


def _command_line() -> str:
    return "planner " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""


def emit_deepspeed(folder: str, model, layout, cluster, tokens: float | None, summary: str, force: bool,
                   pending: PendingOutputs | None = None) -> None:
    """Write the --emit-deepspeed files (all or nothing; refused over existing files unless --force), or add them to
    `pending`, written with the command's other outputs."""
    from planner.emit import LAUNCH_TARGETS
    from planner.emit.deepspeed import compatibility_notes, deepspeed_files, unsupported
    from planner.emit.schedule import checkpoint_interval_steps, checkpoint_mode_problems

    files = deepspeed_files(model, layout, cluster.gpus_per_node, tokens=tokens, summary=summary,
                            save_interval=checkpoint_interval_steps(model, layout, cluster))
    with collected(pending, force) as out:
        _add_launch_folder(out, folder, files, f"wrote {', '.join(files)} to {folder}/")
    target = LAUNCH_TARGETS["deepspeed"]
    # Written whatever the layout's stack: what Megatron-DeepSpeed cannot run as planned is said, not refused
    # (fp8 once: compatibility_notes says what the files run instead).
    cannot = [p for p in unsupported(model, layout, cluster) if not p.startswith("dtype=fp8:")]
    for note in (compatibility_notes(layout, cluster.gpus_per_node) + cannot
                 + checkpoint_mode_problems(cluster, target.checkpoint_modes, target.name)):
        sys.stderr.write(f"warning: {note}\n")


def launch_outputs(folder: str | None, frameworks) -> list[Path]:
    """Every path --emit may write for any of these frameworks (checked before any work; none for a stack without
    one), each once."""
    from planner.emit import LAUNCH_FILE_NAMES

    names = dict.fromkeys(name for framework in frameworks for name in LAUNCH_FILE_NAMES.get(framework, ()))
    return [Path(folder) / name for name in names] if folder else []


def emit_launch(folder: str, model, layout, cluster, tokens: float | None, summary: str, force: bool,
                pending: PendingOutputs | None = None) -> None:
    """Write the launch config of the layout's framework (--emit): all or nothing, refused over existing
    files unless --force; a layout its stack cannot run is a one-line PlannerInputError, nothing written. With
    `pending`, added to it and written with the command's other outputs."""
    from planner.emit import launch_files

    files = launch_files(model, layout, cluster, tokens=tokens, summary=summary)
    with collected(pending, force) as out:
        _add_launch_folder(out, folder, files, f"wrote {', '.join(files)} ({layout.framework}) to {folder}/")


def _plan_summary(plan: dict, cluster) -> str:
    from planner.report.render import human_count, human_days

    return (f"plan: {human_count(plan['params'])} params on {human_count(plan['tokens'])} tokens, {plan['gpus']} GPUs "
            f"of {cluster.name}, predicted {human_days(plan['wall_clock_days'])}")


def emit_plan(folder: str, plan: dict, cluster, force: bool, pending: PendingOutputs | None = None) -> None:
    """--emit-deepspeed of a budget plan: DeepSpeed's files for its layout, whatever its stack."""
    from planner.report.review import plan_layout, plan_model

    emit_deepspeed(folder, plan_model(plan), plan_layout(plan), cluster, plan["tokens"], _plan_summary(plan, cluster),
                   force, pending)


def emit_plan_launch(folder: str, plan: dict, cluster, force: bool, pending: PendingOutputs | None = None) -> None:
    """--emit of a budget plan: the launch config of the stack the plan chose (emit_launch)."""
    from planner.report.review import plan_layout, plan_model

    emit_launch(folder, plan_model(plan), plan_layout(plan), cluster, plan["tokens"], _plan_summary(plan, cluster),
                force, pending)


def write_fixed_model_report(result, paths: dict[str, Path], force: bool, pending: PendingOutputs | None = None) -> None:
    """The fixed-model review (report.fixed_model_review) as OUT.html, OUT.md and OUT_figures/, all or nothing (or
    added to `pending`, written with the command's other outputs)."""
    from planner.report import fixed_model_review

    review = fixed_model_review.build_review(result, command=_command_line())
    with collected(pending, force) as out:
        document_files(fixed_model_review.document(review), fixed_model_review.figures(review), paths, out)


def run_fixed_model_report(args, paths: dict[str, Path]) -> int:
    """`planner report --model/--params`: the fixed-model search (cli.fixed_model), then its review."""
    from planner.cli.fixed_model import result_json, solve_fixed_model, warn_chosen_outside_calibration
    from planner.report.render import human_days, json_document

    if args.moe:
        raise PlannerInputError("--moe compares the best dense and MoE models for a budget; with --model or --params "
                                "the model is fixed (give a mixture-of-experts --model to plan it)")
    if args.no_sensitivity:
        raise PlannerInputError("--no-sensitivity: the review of a model already chosen (--model or --params) runs "
                                "no sensitivity searches; drop the flag")
    result = solve_fixed_model(args)
    warn_chosen_outside_calibration("report", result)
    write_fixed_model_report(result, paths, args.force)
    if args.json:
        print(json_document({**result_json(result), "written": {"html": str(paths["html"]), "md": str(paths["md"])}}))
    elif result.chosen is None:
        print("no feasible plan: " + "; ".join(result.explanation[-1:]))
    else:
        c = result.chosen
        timed = f", {human_days(c.days)}" if c.days is not None else ""
        print(f"chosen plan: {result.model.name} on {c.gpus} GPUs{timed}")
        print(f"report: {paths['html']} (Markdown: {paths['md']})")
    return 0 if result.chosen is not None else 1


def run(args) -> int:
    from planner.cli.fixed_model import wants_fixed_model
    from planner.cli.optimize import load_inputs, solve
    from planner.io import check_new_outputs
    from planner.report.render import human_count, human_days

    fixed_model = wants_fixed_model(args)
    paths = report_outputs(args.out, fixed_model=fixed_model)
    check_new_outputs(paths.values(), args.force)
    if fixed_model:
        return run_fixed_model_report(args, paths)
    from planner.cli.optimize import refuse_fixed_model_flags
    refuse_fixed_model_flags(args, "applies to a model already chosen (give --model or --params); the budget search "
                                   "chooses the model, its tokens and its batch")
    if args.moe:  # before the dense search, so a missing budget fails at once
        from planner.cli.moe_budget import require_budget

        require_budget(args)
    inputs = load_inputs(args)
    result = solve(args, inputs)
    moe = None
    if args.moe:  # on the chosen plan's GPUs, so the section and the plan share a cluster size
        from planner.cli.moe_budget import solve_moe_budget

        moe = solve_moe_budget(args, gpus=result.plan["gpus"] if result.status == "ok" else None, alone=False)
    from planner.cli.optimize import warn_plan_outside_calibration

    warn_plan_outside_calibration("report", inputs[0], result)
    write_report(args, inputs, result, paths, sensitivity=not args.no_sensitivity, moe=moe)
    if args.json:
        from planner.cli.moe_budget import result_json as moe_json
        from planner.cli.optimize import result_json
        from planner.report.render import json_document

        extra = {} if moe is None else {"moe_comparison": moe_json(moe)}
        print(json_document({**result_json(result), **extra,
                             "written": {"html": str(paths["html"]), "md": str(paths["md"])}}))
        return 0 if result.status == "ok" else 1
    if result.status != "ok":
        print("no feasible plan: " + "; ".join(result.explanation[-1:]))
        return 1
    plan = result.plan
    print(f"chosen plan: {human_count(plan['params'])} params, {human_count(plan['tokens'])} tokens, {plan['gpus']} GPUs, "
          f"{human_days(plan['wall_clock_days'])}, loss {plan['predicted_loss']:.3f}")
    print(f"report: {paths['html']} (Markdown: {paths['md']})")
    return 0
