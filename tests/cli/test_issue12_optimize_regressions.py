"""Issue 12's reproductions for optimize and simulate, each a regression test (numbers = the issue's list).

Wrong answers (1, 2, 3, 7, 8) and crashes (9, 14) from the adversarial pass. The metamorphic
properties behind 1 and 2 are in tests/search/test_metamorphic.py; these are the exact commands.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from planner.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
# Item 14: a numpy RuntimeWarning on stderr is a failure too.
pytestmark = pytest.mark.filterwarnings("error")


def run(capsys, *argv):
    try:
        code = main([*map(str, argv)])
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def plan(capsys, *flags):
    code, out, err = run(capsys, "optimize", "--json", *flags)
    assert err == "", err
    return code, json.loads(out)


# 1. More budget must not make a feasible problem infeasible or worse.
@pytest.mark.parametrize("smaller, larger", [
    (["--budget", "1000gpuh", "--deadline", "30min"], ["--budget", "10000gpuh", "--deadline", "30min"]),
    (["--budget", "2000gpuh", "--max-gpus", "1"], ["--budget", "10000gpuh", "--max-gpus", "1"]),
    (["--budget", "6e7gpuh"], ["--budget", "1e9gpuh"]),
    (["--budget", "50000gpuh", "--gpus", "64", "--deadline", "7d"], ["--budget", "100000gpuh", "--gpus", "64", "--deadline", "7d"]),
])
def test_1_more_budget_never_worse(capsys, smaller, larger):
    code_a, a = plan(capsys, *smaller)
    code_b, b = plan(capsys, *larger)
    assert code_a == 0 and code_b == 0, b.get("explanation")
    assert b["plan"]["predicted_loss"] <= a["plan"]["predicted_loss"] * (1 + 1e-3)


def test_1_budget_in_money_beyond_any_cluster_plans(capsys):
    code, out = plan(capsys, "--budget", "$1B")
    assert code == 0 and out["plan"]["predicted_loss"] > 0


# 2. A negligible serving demand changes nothing.
def test_2_one_inference_token_changes_nothing(capsys):
    _, plain = plan(capsys, "--budget", "10000gpuh")
    _, served = plan(capsys, "--budget", "10000gpuh", "--inference-tokens", "1")
    for key in ("params", "gpus", "layout"):
        assert served["plan"][key] == plain["plan"][key]
    assert served["plan"]["predicted_loss"] == pytest.approx(plain["plan"]["predicted_loss"], rel=1e-9)


# 3. MFU and TFLOP/s at a 1M-token sequence stay below peak.
def test_3_mfu_at_a_million_token_sequence(capsys):
    code, out, err = run(capsys, "simulate", "--cluster", "dgx-h100", "--layers", "2", "--hidden", "4096",
                         "--heads", "2", "--vocab", "32000", "--seq-len", "1048576", "--json")
    result = json.loads(out)
    assert code == (0 if result["fits"] else 1) and err == ""  # 1: the layout does not fit (still simulated)
    assert 0 < result["mfu"] <= result["hfu"] <= 1.0
    assert result["tflops_per_gpu"] <= 989.0


# 7. A plan worse than uniform guessing is infeasible, with that reason.
def test_7_loss_above_uniform_guessing_is_infeasible(capsys):
    code, out = plan(capsys, "--budget", "10000gpuh", "--unique-tokens", "1M")
    assert code == 1 and out["status"] == "infeasible"
    assert any("uniform guessing" in line and f"{math.log(32000):.2f}" in line for line in out["explanation"])


# 8. Infeasible results name the constraint that binds.
def test_8_budget_binds_not_the_deadline(capsys):
    code, out = plan(capsys, "--budget", "10000gpuh", "--target-loss", "2.1")
    text = "\n".join(out["explanation"])
    assert code == 1 and "the budget binds" in text and "deadline binds" not in text


def test_8_trivial_target_plans(capsys):
    code, out = plan(capsys, "--target-loss", "19.99")
    assert code == 0 and out["plan"]["predicted_loss"] <= 19.99


@pytest.mark.parametrize("flags, named", [
    (["--target-loss", "2.2", "--gpus", "8", "--deadline", "1h"], "deadline binds"),
    (["--budget", "10gpuh", "--target-loss", "2.2"], "budget binds"),
    (["--target-loss", "1.7"], "below what the law reaches"),
    (["--budget", "10gpuh", "--inference-tokens", "1e15"], "inference-tokens alone"),
    (["--budget", "1000gpuh", "--gpus", "1", "--deadline", "1d", "--seq-len", "1048576"], "the closest fail"),
])
def test_8_every_infeasible_result_names_what_binds(capsys, flags, named):
    code, out = plan(capsys, *flags)
    assert code == 1
    assert any(named in line for line in out["explanation"]), out["explanation"]


def test_8_a_million_token_sequence_plans_on_enough_gpus(capsys):
    code, out = plan(capsys, "--budget", "10000gpuh", "--seq-len", "1048576")
    assert code == 0 and out["plan"]["predicted_loss"] > 0


# 9 and 14. Extreme inputs: a one-line error or a plan, never a traceback, NaN or warning.
@pytest.mark.parametrize("flags", [
    ["--budget", "1e300gpuh"], ["--budget", "$1e300"], ["--budget", "10000gpuh", "--inference-tokens", "1e300"],
])
def test_9_extreme_budgets_answer_cleanly(capsys, flags):
    code, out, err = run(capsys, "optimize", "--json", *flags)
    assert code in (0, 1) and err == ""
    assert "nan" not in out.lower()


def test_14_a_deadline_beyond_a_century_is_refused(capsys):
    code, out, err = run(capsys, "optimize", "--gpus", "8", "--deadline", "1e300s")
    assert code == 2 and err.count("\n") == 1 and "--deadline" in err


@pytest.mark.parametrize("deadline", ["30", "2.5"])
def test_a_bare_deadline_is_refused_as_a_bare_budget_is(capsys, deadline):
    """`--deadline 30` was read as 30 seconds and came back as an infeasible plan (exit 1), not as bad input."""
    code, out, err = run(capsys, "optimize", "--gpus", "1024", "--deadline", deadline)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--deadline" in err and "explicit units" in err and f"{float(deadline):g} seconds" in err


@pytest.mark.parametrize("line, key", [
    ("    bf16: 1e-300FLOPs", "peak_flops.bf16"),
    ("    bf16: 1e300FLOPs", "peak_flops.bf16"),
])
def test_9_implausible_spec_values_are_refused(tmp_path, capsys, line, key):
    text = (REPO_ROOT / "cluster_specs" / "dgx-h100.yaml").read_text()
    lines = [line if raw.strip().startswith("bf16:") else raw for raw in text.splitlines()]
    (tmp_path / "odd.yaml").write_text("\n".join(lines) + "\n")
    code, out, err = run(capsys, "simulate", "--cluster-dir", tmp_path, "--cluster", "odd", "--model", "llama3-8b")
    assert code == 2 and key in err and err.count("\n") == 1


@pytest.mark.parametrize("old, new, key", [
    ("nic_bandwidth: 400Gb/s", "nic_bandwidth: 1e-300b/s", "network.nic_bandwidth"),
    ("mtbf_per_gpu: 2000d", "mtbf_per_gpu: 0s", "reliability.mtbf_per_gpu"),
])
def test_9_14_zero_or_tiny_spec_values_are_refused(tmp_path, capsys, old, new, key):
    text = (REPO_ROOT / "cluster_specs" / "dgx-h100.yaml").read_text()
    assert old in text
    (tmp_path / "odd.yaml").write_text(text.replace(old, new))
    code, out, err = run(capsys, "optimize", "--cluster-dir", tmp_path, "--cluster", "odd", "--budget", "1000gpuh")
    assert code == 2 and key in err and err.count("\n") == 1


def test_9_infinite_matmul_half_size_is_refused(tmp_path, capsys):
    text = (REPO_ROOT / "cluster_specs" / "dgx-h100.yaml").read_text()
    assert "\nefficiency:\n" in text  # the spec's own block (its GEMM ceiling): add the key inside it
    (tmp_path / "odd.yaml").write_text(text.replace("\nefficiency:\n", "\nefficiency:\n  matmul_half_size: .inf\n", 1))
    code, out, err = run(capsys, "simulate", "--cluster-dir", tmp_path, "--cluster", "odd", "--model", "llama3-8b")
    assert code == 2 and "matmul_half_size" in err


def test_a_target_above_uniform_guessing_costs_no_more_than_a_harder_one(capsys):
    """At or above ln V (10.37 for the default vocabulary) the target is aimed just below ln V: it cost 17 GPU-s
    against 7.5 for --target-loss 10, only plans the batch floor pushed far past it being left."""
    costs = {}
    for target in ("9", "10", "10.5", "19.99"):
        code, out = plan(capsys, "--target-loss", target)
        assert code == 0
        costs[target] = out["plan"]["gpu_hours"]
    assert costs["19.99"] <= costs["10.5"] <= costs["10"] <= costs["9"]
