"""The contract every subcommand keeps (planner/cli/__init__.py): `--json` prints one JSON object with a
top-level `schema_version` on stdout; exit 0 done, 1 a negative answer (infeasible, does not fit, problems
found), 2 bad input as one line on stderr; stderr carries status only; every flag has help and shows its
default; a completion script covers every subcommand.

Each subcommand runs in-process on a small input (the whole file takes well under a minute).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from planner.cli import SUBCOMMANDS, DefaultsHelpFormatter, build_parser
from planner.report.render import JSON_SCHEMA_VERSION

# What stderr may carry: status and warning lines, never a result. A line is status when it starts so.
# DeepSpeed's own log lines ("[2026-11-30 09:59:49,590] [WARNING] [real_accelerator.py:213:...") are status too.
STATUS_LINE = re.compile(r"^(planner [\w-]+: |wrote |saved |warning: |note: |\[[\d :,-]+\] \[[A-Z]+\] )")


@pytest.fixture
def inputs(tmp_path, repo_root, published_runs_csv):
    """Small input files in tmp_path: a runs CSV of four A100 rows and a cluster spec."""
    rows = [r for r in csv.DictReader(published_runs_csv.open()) if r["cluster"] == "dgx-a100-80gb"][:4]
    runs = tmp_path / "runs.csv"
    with runs.open("w", newline="") as out:
        writer = csv.DictWriter(out, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return {"runs": runs, "spec": repo_root / "cluster_specs" / "dgx-h100.yaml",
            "log": repo_root / "tests" / "fixtures" / "logs" / "megatron_gpt_1p3b_tp2_dp4.log",
            "laws": repo_root / "data" / "laws" / "chinchilla_epoch_svg_extracted.csv", "out": tmp_path}


# (case id, argv without --json, expected exit code). Every subcommand appears at least once.
CASES = [
    ("optimize", lambda f: ["optimize", "--budget", "10,000gpuh", "--gpus", "64"], 0),
    ("optimize-infeasible", lambda f: ["optimize", "--budget", "100gpuh", "--target-loss", "1.5"], 1),
    ("optimize-fixed-model", lambda f: ["optimize", "--model", "llama2-7b", "--gpus", "64,128", "--tokens", "1T"], 0),
    ("simulate", lambda f: ["simulate", "--model", "gpt2-small", "--gpus", "8"], 0),
    ("simulate-does-not-fit", lambda f: ["simulate", "--model", "llama2-70b", "--gpus", "8"], 1),
    ("simulate-list-models", lambda f: ["simulate", "--list-models"], 0),
    ("validate", lambda f: ["validate", f["runs"]], 0),
    ("calibrate", lambda f: ["calibrate", f["runs"], "--cluster", "dgx-a100-80gb", "--no-write", "--folds", "2"], 0),
    ("profile", lambda f: ["profile", "--name", "contract", "--grid", "ci", "--dry-run", "--out-dir", f["out"]], 0),
    ("ingest", lambda f: ["ingest", f["log"], "--cluster", "dgx-a100-80gb"], 0),
    ("fit-law", lambda f: ["fit-law", f["laws"], "--bootstrap", "0", "--no-holdout"], 0),
    ("laws", lambda f: ["laws"], 0),
    ("predict", lambda f: ["predict", "--params", "7B", "--tokens", "1T"], 0),
    ("report", lambda f: ["report", "--budget", "10000gpuh", "--gpus", "64", "--no-sensitivity",
                          "--out", f["out"] / "review.html"], 0),
    ("clusters", lambda f: ["clusters"], 0),
    ("doctor", lambda f: ["doctor", f["spec"]], 0),
    ("completion", lambda f: ["completion", "bash"], 0),
]


def test_every_subcommand_has_a_contract_case():
    anywhere = defaultdict(Path)
    assert {argv(anywhere)[0] for _, argv, _ in CASES} == set(SUBCOMMANDS)
    assert {code for _, _, code in CASES} == {0, 1}


@pytest.mark.parametrize("name, argv, expected", CASES, ids=[c[0] for c in CASES])
def test_json_exit_code_and_streams(cli, inputs, name, argv, expected):
    code, out, err = cli([*argv(inputs), "--json"])
    assert code == expected, err
    document = json.loads(out)  # stdout is exactly one JSON object
    assert isinstance(document, dict) and document["schema_version"] == JSON_SCHEMA_VERSION
    for line in err.splitlines():
        assert STATUS_LINE.match(line), f"stderr carries more than status: {line!r}"


@pytest.mark.parametrize("name, argv, expected", CASES, ids=[c[0] for c in CASES])
def test_text_output_same_exit_code_and_streams(cli, inputs, name, argv, expected):
    code, out, err = cli(argv(inputs))
    assert code == expected, err
    assert out.strip(), "a result goes to stdout"
    for line in err.splitlines():
        assert STATUS_LINE.match(line), f"stderr carries more than status: {line!r}"


def test_simulate_that_does_not_fit_still_prints_its_breakdown(cli):
    code, out, err = cli(["simulate", "--model", "llama2-70b", "--gpus", "8"])
    assert code == 1 and "fits: NO" in out and err == ""


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_bad_input_is_one_line_and_exit_2(cli, command):
    code, out, err = cli([command, "--no-such-flag", "--json"])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"planner {command}: error: ")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_every_flag_has_help_and_shows_its_default(command):
    parser = _subparsers()[command]
    formatter = DefaultsHelpFormatter(parser.prog)
    for action in parser._actions:
        assert action.help, f"planner {command} {action.option_strings or action.dest}: no help text"
        shown = formatter._get_help_string(action)
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS, []):
            assert "default" in shown, f"planner {command} {action.option_strings[0]}: default not shown"
    assert {"--json", "--quiet"} <= set(parser._option_string_actions)


def test_help_shows_defaults(cli):
    code, out, _ = cli(["fit-law", "--help"])
    assert code == 0 and re.search(r"--max-iter MAX_ITER\s+L-BFGS-B iterations per start \(default:\s+10000\)", out)


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_names_every_subcommand_and_flag(cli, shell):
    code, out, err = cli(["completion", shell])
    assert code == 0 and err == ""
    for command in SUBCOMMANDS:
        assert command in out
    assert "--min-headroom" in out and "--cluster-dir" in out


def test_simulate_and_optimize_default_to_the_same_cluster(cli):
    from planner.specs.clusters import DEFAULT_CLUSTER

    simulated = json.loads(cli(["simulate", "--model", "gpt2-small", "--gpus", "8", "--json"])[1])
    planned = json.loads(cli(["optimize", "--budget", "1000gpuh", "--gpus", "8", "--json"])[1])
    assert simulated["cluster"] == planned["assumptions"]["cluster"] == DEFAULT_CLUSTER


@pytest.mark.parametrize("argv, suggestion", [
    (["simulat"], "did you mean 'simulate'?"),
    (["simulate", "--model", "gpt2-small", "--clustr", "dgx-h100"], "did you mean '--cluster'?"),
    (["optimize", "--budget", "1000gpuh", "--dtype", "bf61"], "did you mean 'bf16'?"),
    # argparse takes a value starting with '-' for a flag ("expected one argument"): say how to write it
    (["optimize", "--budget", "-5gpuh"], "a value starting with '-' is written --budget=-5gpuh"),
    (["optimize", "--model", "llama3-8b", "--unique-tokens", "-1T"], "is written --unique-tokens=-1T"),
    # --framework of optimize is a comma list checked by the planner, not argparse's choices (the audit: no hint)
    (["optimize", "--budget", "1000gpuh", "--framework", "deepsped"], "did you mean 'deepspeed'?"),
    (["optimize", "--model", "llama2-7b", "--tokens", "1T", "--gpus", "64", "--framework", "megatron,fsdpp"],
     "did you mean 'fsdp'?"),
])
def test_misspelt_commands_flags_and_choices_get_a_suggestion(cli, argv, suggestion):
    code, out, err = cli(argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and suggestion in err


def test_bash_completion_script_is_valid_bash(cli, tmp_path):
    import shutil
    import subprocess

    if shutil.which("bash") is None:
        pytest.skip("no bash on this machine")
    script = tmp_path / "planner.bash"
    script.write_text(cli(["completion", "bash"])[1])
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    # sourced, it completes subcommands: `planner sim<TAB>` offers simulate
    probe = (f"source {script}; COMP_WORDS=(planner sim); COMP_CWORD=1; COMP_LINE='planner sim'; COMP_POINT=11; "
             "_shtab_planner; printf '%s\\n' \"${COMPREPLY[@]}\"")
    offered = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    assert "simulate" in offered.stdout.split(), offered.stderr


def test_profile_sweep_lines_say_how_long_is_left(cli, monkeypatch, tmp_path):
    """`planner profile` runs for minutes: each configuration's status line carries the time left at this pace."""
    from planner.profile import harness

    def fake_sweep(configs, settings, store, cluster, name, resume, report, redo=frozenset()):
        for index, config in enumerate(configs, 1):
            report(f"[{index}/{len(configs)}] {config.config_id}: ok")
        return {"ok": len(configs), "failed": 0, "timeout": 0, "skipped": 0}

    monkeypatch.setattr(harness, "require_deepspeed", lambda: None)
    monkeypatch.setattr(harness, "sweep", fake_sweep)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    code, out, err = cli(["profile", "--name", "eta", "--grid", "ci", "--out-dir", tmp_path, "--json"])
    assert code == 0 and json.loads(out)["counts"]["ok"] == 2
    lines = [line for line in err.splitlines() if line.startswith("[")]
    assert re.search(r"^\[1/2\] .*: ok; about [\d.]+ (us|ms|s) left$", lines[0]) and lines[1].endswith(": ok"), lines


def test_a_bug_exits_70_not_1(cli, monkeypatch):
    """1 means a negative answer; an unexpected exception must not look like one to a script."""
    import planner.cli.clusters as clusters

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(clusters, "run", broken)
    code, out, err = cli(["clusters"])
    assert code == 70 and out == "" and "ZeroDivisionError: a bug" in err and "internal error" in err
