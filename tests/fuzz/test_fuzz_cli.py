"""Fuzz the command line: random argument lists for every cheap subcommand (issue 7, part 2).

Flags come from the real parser (so new flags are fuzzed without touching this file); values mix
sensible choices with hostile ones - zero, negative, huge, NaN/inf, empty, binary, paths that do not
exist, directories, files of the wrong kind. `profile` (real DeepSpeed) and `report` (plots and three
sensitivity searches per case) are left out; optimize runs on a shrunken search space.
"""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.cli import build_parser

EXAMPLES = settings.default.max_examples
FUZZED = ("simulate", "validate", "calibrate", "fit-law", "laws", "clusters", "doctor", "optimize", "ingest")
SKIPPED_FLAGS = {"--report"}  # writes plots: its file handling is covered in tests/test_safe_files.py
# Prepended (argparse keeps the last value, so a fuzzed flag still overrides them): keep fits small.
PREFIX = {"fit-law": ["--bootstrap", "0", "--n-starts", "2", "--max-iter", "200"],
          "calibrate": ["--folds", "2"]}

NUMBERS = ["0", "-1", "1", "2", "3", "4", "8", "16", "64", "1024", "3.5", "-0", "1e400", "-1e400", "nan", "NaN",
           "inf", "-inf", "99999999999999999999", "1" + "0" * 400, "0x10", "1_000", " 8 ", "\uff18", "", " ", "--",
           "-", "=", "\u2603", "a" * 300, "\x00", "1e-320", "4294967297"]
QUANTITIES = ["10gpuh", "100gpuh", "1k gpuh", "0gpuh", "-5gpuh", "nangpuh", "infgpuh", "1e400gpuh", "$100", "$0",
              "$-1", "$nan", "$1e400", "14d", "1h", "0s", "-1d", "1e400d", "nan d", "5us", "2T", "70B", "-2T",
              "1e12", "nanB", "80GiB", "400Gb/s", "989TFLOPs", "12", "1.5", "0.5:2", ":", "alpha=0.3", "alpha=nan",
              "beta=alpha", "=", "E=1:", "A=:1e3", "x=1", "all", "1,2", "1e21,1e23", ",", "1e400,1"]
FILES = ["spec.yaml", "clusters/dgx-a100-80gb.yaml", "clusters/cpu-local.yaml", "runs.csv", "escape.csv",
         "law.csv", "law.yaml", "config.yaml", "existing.yaml", "empty.csv", "empty.yaml", "header.csv",
         "list.yaml", "scalar.yaml", "deep.yaml", "bomb.yaml", "binary.csv", "binary.yaml", "nan.csv", "subdir",
         "missing.csv", "missing.yaml", "/", "/etc/hostname", "../outside.yaml",
         "megatron_deepspeed_truncated.log", "megatron_gpt_1p3b_tp2_dp4.log"]
NAMES = ["dgx-a100-80gb", "dgx-h100", "cpu-local", "clusters", "epoch", "hoffmann", "kaplan", "muennighoff",
         "gpt2-small", "llama2-7b", "gpt3-1.3b", "no-such-name", "../clusters/cpu-local", "/etc/passwd",
         "out.yaml", "out.csv", "out_dir", "new/deeper/out.yaml"]
ANY_VALUE = st.sampled_from(NUMBERS + QUANTITIES + FILES + NAMES) | st.text(max_size=20)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: action.choices[name] for name in FUZZED}


SUBPARSERS = _subparsers()


def _value_for(action) -> st.SearchStrategy:
    if action.choices:
        return st.sampled_from([str(c) for c in action.choices]) | ANY_VALUE
    name = action.dest
    if name in ("data", "runs", "files", "logs", "config", "cluster", "law", "grid", "cluster_dir"):
        return st.sampled_from(FILES + NAMES) | ANY_VALUE
    return st.sampled_from(NUMBERS + QUANTITIES) | ANY_VALUE


@st.composite
def argvs(draw, command: str) -> list[str]:
    parser = SUBPARSERS[command]
    optionals = [a for a in parser._actions if a.option_strings and not set(a.option_strings) & SKIPPED_FLAGS]
    positionals = [a for a in parser._actions if not a.option_strings]
    argv = [command] + PREFIX.get(command, [])
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(optionals))
        flag = draw(st.sampled_from(action.option_strings))
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)) and draw(st.integers(0, 9)):
            continue  # --help only now and then
        argv.append(flag)
        if action.nargs != 0:
            argv.append(draw(_value_for(action)))
    for action in positionals:
        count = {None: 1, "+": draw(st.integers(1, 2)), "*": draw(st.integers(0, 2))}.get(action.nargs, 1)
        argv += [draw(_value_for(action)) for _ in range(count)]
    if draw(st.integers(0, 9)) == 0:  # shuffle: positionals before flags, flags without values
        argv[1:] = draw(st.permutations(argv[1:]))
    return argv


# `clusters` takes three flags (--cluster-dir, --json, --quiet) and, run in a case folder, reads every hostile seed
# file there as a spec it might list (the YAML bomb and the deep file take about a second a case): a fifth of the
# cases covers its few flags (it took 116 s of the suite at 100).
EXAMPLES_FOR = {"clusters": max(10, EXAMPLES // 5)}


@pytest.mark.parametrize("command", FUZZED)
def test_fuzzed_command_lines_give_a_result_or_one_line_error(command, small_search, case_dir, cli_contract):
    @settings(max_examples=EXAMPLES_FOR.get(command, EXAMPLES))
    @given(argv=argvs(command))
    def case(argv):
        with case_dir():
            cli_contract(argv)

    case()


@settings(max_examples=max(20, EXAMPLES // 2))
@given(argv=st.lists(ANY_VALUE | st.sampled_from(list(SUBPARSERS) + ["--json", "--force", "--help", "profile"]),
                     max_size=6))
def test_arbitrary_token_lists(argv, small_search, case_dir, cli_contract):
    if argv and argv[0] in ("profile", "report"):
        argv = argv[1:]  # never launch DeepSpeed or write plot reports from the fuzzer
    with case_dir():
        cli_contract(argv)
