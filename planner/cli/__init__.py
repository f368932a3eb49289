"""`planner` command line: parse -> load -> call -> render. No modelling logic lives here.

Each subcommand is one module in this package with `register(subparsers)`; the module's
`run(args) -> int` does the work.

The contract every subcommand keeps (tests/cli/test_cli_contract.py runs each one):
- exit code 0: done; 1: done, and the answer is negative (no feasible plan, the layout does not fit,
  problems found, some inputs gave no result); 2: bad input, as one line naming the flag or key
  (`PlannerInputError`, or argparse's usage error); 70: a bug in the planner (with its traceback);
- results on stdout; status, warnings and progress on stderr;
- `--json` prints one JSON object with a top-level `schema_version` (planner.report.render.json_document);
- `--quiet` turns progress off (it is off anyway when stderr is not a terminal);
- `--help` shows every flag's default; a misspelt subcommand, flag or choice gets a "did you mean".

Standard output that cannot be written (a full disk) is one line and exit 2 too; a reader that went away
(`planner laws | head -1`) ends the command quietly with exit 141, as a shell reports SIGPIPE.
Ctrl-C and SIGTERM unwind the program (so partial outputs are cleaned up) and exit 130 and 143.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import os
import re
import signal
import sys
import traceback

from planner.cli.allocator import keep_freed_memory
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
    "predict": "predict",
    "report": "report",
    "clusters": "clusters",
    "doctor": "doctor",
    "completion": "completion",
}

# The exit codes every subcommand keeps (the module docstring says when each applies); a bug in the planner
# exits EX_SOFTWARE of BSD's sysexits.h.
EXIT_OK, EXIT_NEGATIVE, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 70


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Shows a flag's default in --help, unless its help text already says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        # `is`, not `in`: 0 == False, and an integer default of 0 (fit-law's --seed) is a value to show.
        if (not action.option_strings or "default" in text or default is None or default is False
                or default is argparse.SUPPRESS or default == [] or "%(default)" in text):
            return text
        return f"{text} (default: %(default)s)"


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """--json and --quiet on every subcommand (a module may define its own --json help)."""
    if "--json" not in parser._option_string_actions:
        parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    if "--quiet" not in parser._option_string_actions:
        parser.add_argument("--quiet", "-q", action="store_true",
                            help="no progress display on stderr (it shows only when stderr is a terminal)")


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse prints usage plus the error on several lines; we promise one line and exit 2.

    Abbreviated flags are refused: `--cluster` must not silently become `--cluster-dir`.
    """

    argv: list[str] = []  # the command line of the last parse_args, for error()'s hint on flag-like values

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        OneLineArgumentParser.argv = list(sys.argv[1:] if args is None else map(str, args))
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # argparse joins them with spaces, so an empty or blank one would vanish from the message
            message = "unrecognized arguments: " + " ".join(
                a if a.strip() == a and a and a.isprintable() else repr(a) for a in extras)
            command = getattr(parsed, "command", None)  # the subcommand they were given to names the error
            parser = self._subcommand(command) or self
            flags = [flag for flag in parser._option_string_actions if flag.startswith("--")]
            guesses = [difflib.get_close_matches(a.split("=")[0], flags, n=1, cutoff=0.6) for a in extras if a.startswith("--")]
            close = next((guess[0] for guess in guesses if guess), None)
            parser.error(message + (f"; did you mean {close!r}?" if close else ""))
        return parsed

    def _subcommand(self, command: str | None) -> argparse.ArgumentParser | None:
        action = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        return action.choices.get(command) if action is not None and command else None

    def error(self, message: str) -> None:  # type: ignore[override]
        invalid = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if invalid:  # "did you mean" for a misspelt subcommand or choice
            choices = re.findall(r"'([^']*)'", invalid.group(2))
            close = difflib.get_close_matches(invalid.group(1), choices, n=1, cutoff=0.5)
            message += f"; did you mean {close[0]!r}?" if close else ""
        missing = re.fullmatch(r"argument (--[\w-]+)(?:/[^:]*)?: expected one argument", message)
        if missing:  # argparse reads a value like -5gpuh as a flag: say how to pass it
            argv = OneLineArgumentParser.argv
            after = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == missing.group(1)]
            if after and after[-1].startswith("-"):
                message += f" (got the flag-like {after[-1]!r}: a value starting with '-' is written {missing.group(1)}={after[-1]})"
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
        add_common_flags(subparsers.choices[name])
    return parser


# Errors a write to standard output raises when the disk or quota is full or the device fails.
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EIO, getattr(errno, "EDQUOT", errno.ENOSPC)}
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE: what a shell shows for a writer whose reader went away


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that the `finally` blocks that remove temporary files
    run as they do for Ctrl-C (the default action kills the process on the spot)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def _set_sigterm(handler):
    """Install a SIGTERM handler; the previous one, or None where handlers cannot be set (not the main thread)."""
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


def _detach_stdout() -> None:
    """Point stdout at the null device: the interpreter flushes what is still buffered at exit, which would
    fail a second time with a traceback (the recipe in Python's `signal` docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # a captured stdout (tests) has no file descriptor
        pass


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. A bug (an exception the command did not expect) prints its traceback
    and exits EXIT_INTERNAL, so that 1 keeps meaning "a negative answer" to scripts."""
    keep_freed_memory()  # numpy temporaries reuse heap blocks instead of page-faulting (cli/allocator.py)
    try:
        return _run(argv)
    except Exception:  # noqa: BLE001 - the last resort: a traceback to report, and an exit code that says so
        traceback.print_exc()
        sys.stderr.write(f"planner: internal error (exit {EXIT_INTERNAL}); please report it with the command line\n")
        return EXIT_INTERNAL


def _refuse_empty_values(parser: argparse.ArgumentParser, args) -> None:
    """An option given an empty value (`--cluster ''`, `--tokens ''`) is bad input: every option's None already
    means "not given", and an empty text read as that default (the bundled cluster, no token count) answered a
    question the user did not ask."""
    command = parser._subparsers._group_actions[0].choices[args.command]  # noqa: SLF001 - argparse keeps it there
    for action in command._actions:  # noqa: SLF001
        value = getattr(args, action.dest, None)
        if action.option_strings and isinstance(value, str) and not value.strip():
            raise PlannerInputError(f"{action.option_strings[-1]}: expected a value, got {value!r}")


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        sys.stderr.write(f"planner: error: no command given; choose one of {', '.join(SUBCOMMANDS)}\n")
        return 2
    previous = _set_sigterm(_raise_terminated)
    try:
        _refuse_empty_values(parser, args)
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a full disk or closed pipe shows here, not in the interpreter's flush at exit
        return code
    except PlannerInputError as error:
        sys.stderr.write(f"planner {args.command}: error: {error}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        sys.stderr.write(f"planner {args.command}: {'terminated' if terminated else 'interrupted'}\n")
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except BrokenPipeError:
        _detach_stdout()
        return BROKEN_PIPE_EXIT
    except OSError as error:
        # Files are written through planner.io, which names them; an unnamed write error is stdout's.
        if error.errno not in _OUTPUT_ERRNOS or error.filename is not None:
            raise
        _detach_stdout()
        sys.stderr.write(f"planner {args.command}: error: cannot write standard output ({error.strerror})\n")
        return 2
    finally:
        if previous is not None:
            _set_sigterm(previous)


if __name__ == "__main__":
    sys.exit(main())
