"""What a plan's text and JSON say about itself: whole steps, the limits each GPU count misses, a band that lies
beside its estimate, and flags that would change nothing. Each was found printing a wrong or silent answer."""

from __future__ import annotations

import json
import math

import pytest

FIXED = ["optimize", "--model", "llama3-8b", "--cluster", "dgx-h100"]


def test_tokens_under_one_global_batch_are_timed_as_one_whole_step(cli):
    # 100M tokens at a global batch of 100,000 sequences (819M tokens): it used to be timed as 0.12 of a step.
    code, out, err = cli([*FIXED, "--tokens", "100M", "--gpus", "64", "--global-batch", "100000", "--json"])
    assert code == 0, err
    chosen = json.loads(out)["chosen"]
    step_s = chosen["best"]["step_time_s"]
    assert chosen["steps"] == 1
    assert chosen["trained_tokens"] == pytest.approx(100000 * 8192, rel=1e-9)
    assert chosen["days"] * 86400.0 == pytest.approx(step_s / chosen["goodput"], rel=1e-9)
    assert chosen["gpu_hours"] == pytest.approx(64 * step_s / chosen["goodput"] / 3600.0, rel=1e-9)
    code, out, _ = cli([*FIXED, "--tokens", "100M", "--gpus", "64", "--global-batch", "100000"])
    assert "the plan trains 1 whole step(s), 819M tokens" in out


def test_whole_steps_round_up_and_a_whole_number_of_batches_stays_put(cli):
    code, out, _ = cli([*FIXED, "--tokens", "10B", "--gpus", "64", "--global-batch", "1024", "--json"])
    chosen = json.loads(out)["chosen"]
    batch_tokens = 1024 * 8192
    assert chosen["steps"] == math.ceil(10e9 / batch_tokens)
    assert chosen["trained_tokens"] == pytest.approx(chosen["steps"] * batch_tokens, rel=1e-9)
    # Exactly 100 batches: 100 steps, not 101 from float error.
    code, out, _ = cli([*FIXED, "--tokens", str(100 * batch_tokens), "--gpus", "64", "--global-batch", "1024", "--json"])
    assert json.loads(out)["chosen"]["steps"] == 100


def test_counts_that_miss_the_deadline_are_marked_in_table_and_json(cli):
    args = ["optimize", "--model", "llama3-70b", "--tokens", "15T", "--cluster", "dgx-h100", "--deadline", "30d"]
    code, out, err = cli([*args, "--json"])
    assert code == 0, err
    result = json.loads(out)
    searched = [c for c in result["counts"] if c["feasible"]]
    assert any(c["misses"] == ["deadline"] for c in searched)  # 4,096 GPUs: 34.9 days
    for c in searched:
        assert (c["days"] > 30.0) == ("deadline" in c["misses"])
    assert result["chosen"]["misses"] == []
    code, out, _ = cli(args)
    late = [c for c in searched if c["misses"]]
    assert sum("(over deadline)" in line for line in out.splitlines()) == len(late)


def test_params_outside_the_family_are_refused(cli):
    for size in ("100T", "0.001B"):
        code, out, err = cli(["optimize", "--params", size, "--tokens", "1T", "--gpus", "512"])
        assert code == 2 and out == "", (out, err)
        assert f"--params {size}: the model family spans" in err and err.count("\n") == 1


def test_a_band_beside_its_estimate_says_so(cli):
    # DeepSpeed's published rows all ran slower than the model says, so its band lies wholly above the estimate.
    code, out, err = cli(["simulate", "--model", "llama3-8b", "--gpus", "64", "--zero", "2", "--framework", "deepspeed"])
    assert code == 0, err
    band = next(line for line in out.splitlines() if "90% band" in line)
    assert "the estimate lies below its band" in band
    code, out, err = cli(["simulate", "--model", "llama3-8b", "--gpus", "64", "--framework", "megatron"])
    band = next(line for line in out.splitlines() if "90% band" in line)
    assert "the estimate lies" not in band  # megatron's band holds its estimate


def test_estimate_outside_band_clause():
    from planner.calibrate.error_bands import estimate_outside_band

    assert estimate_outside_band(0.9, 1.2, 1.0) == ""
    assert "below its band: measured steps there took x1.10-x1.50" in estimate_outside_band(1.1, 1.5, 1.0)
    assert "above its band" in estimate_outside_band(0.5, 0.8, 1.0)


@pytest.mark.parametrize("flag", ["--quantized-comm", "--flat-zero"])
def test_hierarchy_flags_for_stacks_without_them_are_refused(cli, flag):
    code, out, err = cli(["optimize", "--budget", "1000gpuh", "--framework", "megatron", flag])
    assert code == 2 and out == "", (out, err)
    assert err.startswith(f"planner optimize: error: {flag}: none of the stacks searched (megatron)") and err.count("\n") == 1


def test_fixed_model_tables_show_each_rows_global_batch(cli):
    """Without --global-batch each layout rounds the batch law's target to its own micro-batch x dp, so the runners-up
    (1,500 sequences without tensor parallelism, 1,536 for the plan) trained other batches than the table showed."""
    args = ["optimize", "--model", "llama2-70b", "--tokens", "2T", "--cluster", "dgx-h100", "--deadline", "60d"]
    code, text, _ = cli(args)
    _, raw, _ = cli([*args, "--json"])
    assert code == 0
    result = json.loads(raw)
    counts = text.split("\n\n")[1].splitlines()
    assert counts[0].split()[:4] == ["GPUs", "best", "layout", "batch"]
    for count in (c for c in result["counts"] if c["best"]):  # counts skipped without a search have no row
        row = next(line for line in counts if line.startswith(f"{count['gpus']} "))
        assert f" {count['best']['global_batch']} " in row, row
    ups = text[text.index("runners-up on the chosen"):].splitlines()
    assert " batch " in ups[1]
    for up in result["runners_up"]:
        row = next(line for line in ups if line.startswith(up["label"]))
        assert f" {up['global_batch']} " in row, row


def test_fixed_model_json_carries_the_breakdowns_the_text_prints(cli):
    code, raw, _ = cli([*FIXED, "--tokens", "10B", "--gpus", "64", "--json"])
    chosen = json.loads(raw)["chosen"]
    memory, parts = chosen["memory"], chosen["step_time_parts_s"]
    assert sum(memory["parts_bytes"].values()) == pytest.approx(memory["total_bytes"], rel=1e-9)
    assert memory["total_bytes"] <= memory["hbm_bytes"]
    assert parts["forward"] > 0 and parts["backward"] > parts["forward"]
    # The parts are the step's exposed time (overlapped communication counts only where it shows): they add up.
    assert sum(parts.values()) == pytest.approx(chosen["best"]["step_time_s"], rel=0.05)


def test_a_plan_beside_its_frontier_says_why():
    """At 1M GPU-hours the plan (2048 GPUs, 20.3 days, loss 1.9480) sat beside the frontier's row at the same GPUs
    and days (1.9471) with no word on the tie rule that chose it."""
    from types import SimpleNamespace

    from planner.cli.optimize import _off_frontier_lines

    plan = {"gpus": 2048, "predicted_loss": 1.9480}
    beside = SimpleNamespace(plan=plan, assumptions={"target_loss": None},
                             pareto=[{"gpus": 2048, "predicted_loss": 1.9471}, {"gpus": 1536, "predicted_loss": 1.946}])
    (line,) = _off_frontier_lines(beside)
    assert "within 0.1% of the lowest count as equal" in line and "slow end" in line
    on = SimpleNamespace(plan=plan, assumptions={"target_loss": None}, pareto=[{"gpus": 2048, "predicted_loss": 1.9480}])
    assert _off_frontier_lines(on) == []
