"""Regenerate megatron_arguments.txt: every option Megatron-LM's own parser accepts, with its value kind.

    git clone https://github.com/NVIDIA/Megatron-LM && git -C Megatron-LM checkout <commit>
    python tests/emit/data/extract_megatron_arguments.py Megatron-LM > tests/emit/data/megatron_arguments.txt

Builds the real parser (`megatron/training/arguments.py`, `add_megatron_arguments`; most options are
generated from config dataclasses by `megatron/training/argument_utils.py` ArgumentGroupFactory, so
grepping the file for '--name' would miss them) and prints one line per option string. Needs torch;
the few Megatron modules that import triton (mamba / MoE kernels, not argument code) are stubbed.
Not a test (pytest collects test_*.py only).
"""

import argparse
import enum
import importlib.abc
import importlib.machinery
import subprocess
import sys
import typing
from unittest import mock

STUBBED = ("megatron.core.transformer.moe.ops.paged_stash", "megatron.core.ssm.ops")


class _Stub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if any(name == root or name.startswith(root + ".") for root in STUBBED):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = mock.MagicMock(name=spec.name)
        module.__path__, module.__spec__, module.__name__ = [], spec, spec.name
        return module

    def exec_module(self, module):
        pass


def option_kind(action) -> tuple[str, str]:
    """('flag', '') for options taking no value, else (value type[+nargs], comma-separated choices)."""
    if action.nargs == 0:
        return "flag", ""
    kind = getattr(action.type, "__name__", "str") if action.type else "str"
    choices = ""
    if action.choices is not None:
        choices = ",".join(c.name if isinstance(c, enum.Enum) else str(c) for c in action.choices)
        if any(isinstance(c, enum.Enum) for c in action.choices):
            kind = "enum"  # the CLI value is the member's name (ArgumentGroupFactory._get_enum_kwargs)
    if kind not in ("int", "float", "str", "enum"):
        kind = "str"  # custom converters (e.g. tuple parsers) take text
    if action.nargs not in (None, 1):
        kind += f"{action.nargs}"
    return kind, choices


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    if not hasattr(typing, "override"):  # Python < 3.12; Megatron imports typing.override
        typing.override = lambda function: function
    import torch.utils.flop_counter  # noqa: F401  (imported before the stubs exist)

    sys.meta_path.insert(0, _Stub())
    from megatron.training.arguments import add_megatron_arguments

    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_megatron_arguments(parser)
    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# NVIDIA/Megatron-LM@{commit} megatron/training/arguments.py add_megatron_arguments(): every option string")
    print("# produced by tests/emit/data/extract_megatron_arguments.py; columns: option, kind (flag = no value;")
    print("# int/float/str/enum = one value, a suffix = argparse nargs), choices (comma-separated, empty = any)")
    lines = set()
    for action in parser._actions:
        kind, choices = option_kind(action)
        for option in action.option_strings:
            if option.startswith("--"):
                lines.add(f"{option} {kind} {choices}".rstrip())
    print("\n".join(sorted(lines)))


if __name__ == "__main__":
    main(sys.argv[1])
