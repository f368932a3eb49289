"""`planner completion bash|zsh|tcsh`: the shell completion script for every subcommand and flag (shtab).

    planner completion bash > ~/.local/share/bash-completion/completions/planner
    planner completion zsh > "${fpath[1]}/_planner"
"""

from __future__ import annotations

SHELLS = ("bash", "zsh", "tcsh")


def register(subparsers, name: str) -> None:
    parser = subparsers.add_parser(
        name, help="print the shell completion script (bash, zsh or tcsh)",
        description="Print the completion script for every subcommand and flag. Install it with, for example, "
                    "`planner completion bash > ~/.local/share/bash-completion/completions/planner` or "
                    "`planner completion zsh > \"${fpath[1]}/_planner\"`, then start a new shell.")
    parser.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    parser.set_defaults(run=run)


def run(args) -> int:
    import shtab

    from planner.cli import build_parser
    from planner.report.render import json_document

    script = shtab.complete(build_parser(), shell=args.shell)
    print(json_document({"shell": args.shell, "script": script}) if args.json else script)
    return 0
