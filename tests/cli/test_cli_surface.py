"""Pin the command-line surface: subcommand names, simulate flags, and the simulate --json keys.

Renaming or dropping any of these breaks scripts and docs; change this test on purpose when the surface changes.
"""

from __future__ import annotations

import argparse
import json

import pytest

from planner.cli import SUBCOMMANDS, build_parser

PLANNED_SUBCOMMANDS = {"optimize", "simulate", "validate", "calibrate", "profile", "ingest", "fit-law", "laws",
                       "report", "clusters", "doctor", "predict", "completion"}
# Subcommands whose modules are committed with the simulator core and must always be present.
REQUIRED_SUBCOMMANDS = {"simulate", "validate", "profile"}
SIMULATE_FLAGS = ("--cluster --layers --hidden --heads --kv-heads --ffn --mlp --seq-len --vocab --tp --pp --dp --cp "
                  "--vpp --zero --offload --micro-batch --global-batch --recompute --seq-parallel --dtype --model "
                  "--json").split()
SIMULATE_JSON_KEYS = {"step_time_s", "tokens_per_s", "mfu", "tflops_per_gpu", "fits", "memory", "time"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return dict(actions[0].choices)


def test_subcommand_names():
    assert set(SUBCOMMANDS) == PLANNED_SUBCOMMANDS
    present = set(_subparsers(build_parser()))
    assert REQUIRED_SUBCOMMANDS <= present
    assert present <= PLANNED_SUBCOMMANDS


@pytest.mark.parametrize("flag", SIMULATE_FLAGS)
def test_simulate_flags_exist(flag):
    simulate = _subparsers(build_parser())["simulate"]
    assert flag in simulate._option_string_actions


def test_validate_takes_csv_paths_and_json():
    validate = _subparsers(build_parser())["validate"]
    assert "--json" in validate._option_string_actions
    assert any(a.dest == "runs" and a.nargs == "+" for a in validate._actions)


def test_simulate_json_keys(cli):
    code, out, _ = cli(["simulate", "--model", "llama2-7b", "--dp", "8", "--zero", "2", "--offload", "optimizer",
                        "--global-batch", "8", "--json"])
    assert code == 0
    result = json.loads(out)
    assert SIMULATE_JSON_KEYS <= set(result)
    assert {"total_bytes", "host_bytes_per_node"} <= set(result["memory"])
    assert result["memory"]["host_bytes_per_node"] > 0
    assert {"forward", "backward", "bubble"} <= set(result["time"])


def test_version_and_help(cli):
    code, out, _ = cli(["--version"])
    assert code == 0 and out.startswith("planner ")
    code, _, _ = cli([])
    assert code == 2
