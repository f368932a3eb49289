"""`planner` command line: parse -> load -> call -> render. No modelling logic lives here.

Each subcommand is one module in this package with `register(subparsers)`; the module's
`run(args) -> int` does the work. Bad input anywhere surfaces as `PlannerInputError` and is
printed as one line with exit code 2; an infeasible plan exits 1 with its explanation.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from planner.errors import PlannerInputError

# Subcommand name -> module in planner.cli. Order is the order shown in --help.
SUBCOMMANDS = {
    "optimize": "optimize",
    "simulate": "simulate",
    "validate": "validate",
    "calibrate": "calibrate",
    "profile": "profile",
    "ingest": "ingest",
    "fit-law": "fit_law",
    "laws": "laws",
    "report": "report",
    "clusters": "clusters",
    "doctor": "doctor",
}


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse prints usage plus the error on several lines; we promise one line and exit 2.

    Abbreviated flags are refused: `--cluster` must not silently become `--cluster-dir`.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # argparse joins them with spaces, so an empty or blank one would vanish from the message
            self.error("unrecognized arguments: "
                       + " ".join(a if a.strip() == a and a and a.isprintable() else repr(a) for a in extras))
        return parsed

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {' '.join(message.split())}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="planner",
        description="Plan and simulate distributed LLM training: model size, tokens, GPUs, layout.",
    )
    from planner import __version__

    parser.add_argument("--version", action="version", version=f"planner {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineArgumentParser)
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(f"planner.cli.{module_name}")
        except ModuleNotFoundError as missing:
            # A subcommand whose module is not written yet is simply absent from the CLI.
            if missing.name == f"planner.cli.{module_name}":
                continue
            raise
        module.register(subparsers, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        sys.stderr.write(f"planner: error: no command given; choose one of {', '.join(SUBCOMMANDS)}\n")
        return 2
    try:
        return int(args.run(args) or 0)
    except PlannerInputError as error:
        sys.stderr.write(f"planner {args.command}: error: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"planner {args.command}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
