"""`planner optimize` on the command line: JSON contract, determinism, quiet stderr, exit codes.

Exit codes: 0 with a plan, 1 for an infeasible problem (explained on stdout), 2 for bad input
(one line on stderr, no traceback).
"""

from __future__ import annotations

import json
import math
import os
import re
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from planner.cli import main

pytestmark = pytest.mark.xdist_group("test_optimize_cli")  # its module fixtures built once (pyproject.toml)


REPO_ROOT = Path(__file__).resolve().parents[2]
PLAN_KEYS = ("params", "tokens", "gpus", "layout", "step_time_s", "wall_clock_s", "gpu_hours", "predicted_loss",
             "memory_bytes")


def planner(*argv, **kwargs) -> subprocess.CompletedProcess:
    """Run `planner optimize ...` in a fresh interpreter with stdout and stderr piped (not a TTY)."""
    return subprocess.run([sys.executable, "-m", "planner.cli", "optimize", *map(str, argv)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, **kwargs)


def in_process(capsys, *argv):
    try:
        code = main(["optimize", *map(str, argv)])
    except SystemExit as stop:  # argparse errors exit through SystemExit
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def json_runs():
    """The same optimize problem twice, in two processes running side by side."""
    argv = [sys.executable, "-m", "planner.cli", "optimize", "--budget", "10000gpuh", "--json"]
    procs = [subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    runs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        runs.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return runs


def test_json_has_the_documented_keys(json_runs):
    run = json_runs[0]
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["status"] == "ok"
    for key in PLAN_KEYS:
        assert key in out["plan"], key
    for key in ("tp", "pp", "dp", "vpp", "zero", "offload", "micro_batch", "global_batch", "recompute"):
        assert key in out["plan"]["layout"], key
    assert isinstance(out["alternatives"], list) and out["alternatives"]
    assert isinstance(out["pareto"], list) and out["pareto"]
    assert isinstance(out["dropped"], dict)
    assert out["assumptions"]["budget_gpu_hours"] == pytest.approx(10_000)
    assert out["plan"]["gpu_hours"] <= 10_000 * (1 + 1e-9)
    assert out["plan"]["wall_clock_s"] <= 30 * 86400 * (1 + 1e-9)  # the default deadline
    assert out["plan"]["memory_bytes"] <= out["plan"]["hbm_bytes"]
    assert out["candidates_scored"] >= 1_000_000


def test_json_layout_gives_each_switch_as_the_plan_runs_it(json_runs):
    """The plan's layout shows the switches left to the stack at their values (specs.layout.settings_used), as
    simulate --json does; flash_attention was null. Fed back, they build the plan's layout."""
    from planner.specs.layout import Layout, settings_used

    layout = json.loads(json_runs[0].stdout)["plan"]["layout"]
    for key in ("flash_attention", "tp_comm_overlap", "dp_comm_overlap", "partition_activations"):
        assert isinstance(layout[key], bool), key
    rebuilt = Layout(**{k: layout[k] for k in Layout.model_fields if k in layout})
    assert settings_used(rebuilt) == {k: layout[k] for k in Layout.model_fields}


def test_json_is_byte_identical_across_runs(json_runs):
    first, second = (run.stdout for run in json_runs)
    assert first == second
    assert '"elapsed_s"' not in first  # timing is in the human output only


def test_piped_stderr_is_empty_on_success(json_runs):
    assert all(run.stderr == "" for run in json_runs)
    text = planner("--budget", "10000gpuh", "--gpus", "64")
    assert text.returncode == 0
    assert text.stderr == ""
    assert "chosen plan" in text.stdout and "planner optimize: scoring" not in text.stdout


def _optimize_on_a_terminal(*flags: str) -> tuple[subprocess.CompletedProcess, bytes]:
    """`planner optimize` with stderr on a pseudo-terminal: (the run, what the terminal received)."""
    primary, secondary = pty.openpty()
    try:
        run = subprocess.run([sys.executable, "-m", "planner.cli", "optimize", "--budget", "10000gpuh", "--gpus", "64",
                              *flags], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=secondary, timeout=120)
        os.close(secondary)
        secondary = None
        tty_text = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO once the child's side is closed and drained (Linux)
                break
            if not chunk:
                break
            tty_text += chunk
    finally:
        if secondary is not None:
            os.close(secondary)
        os.close(primary)
    return run, tty_text


def test_progress_goes_to_stderr_only_on_a_tty():
    run, tty_text = _optimize_on_a_terminal()
    assert run.returncode == 0
    # tqdm: "planner optimize:  50%|#####     | 58/117 cells [00:01<00:01]"
    assert b"planner optimize:" in tty_text
    assert re.search(rb"\d+/\d+ cells \[\d\d:\d\d<(\?|\d\d:\d\d)\]", tty_text), tty_text  # done/total [elapsed<ETA]
    assert b"planner optimize:" not in run.stdout
    quiet, tty_text = _optimize_on_a_terminal("--quiet")
    untimed = lambda out: [line for line in out.splitlines() if not line.startswith(b"searched ")]  # noqa: E731
    assert quiet.returncode == 0 and b"planner optimize" not in tty_text and untimed(quiet.stdout) == untimed(run.stdout)


@pytest.mark.parametrize("argv, needle", [
    (["--budget", "lots"], "--budget"),
    (["--budget", "-5gpuh"], "--budget"),
    (["--budget", "0gpuh"], "--budget"),
    (["--budget", "10000gpuh", "--cluster", "no-such-cluster"], "no-such-cluster"),
    (["--budget", "10000gpuh", "--law", "no-such-law"], "no-such-law"),
    (["--budget", "10000gpuh", "--gpus", "64", "--max-gpus", "32"], "--max-gpus 32"),
    (["--budget", "10000gpuh", "--gpus", "-8"], "--gpus"),
    (["--budget", "10000gpuh", "--deadline", "-3d"], "--deadline"),
    (["--budget", "10000gpuh", "--deadline", "soon"], "--deadline"),
    (["--target-loss", "-1"], "--target-loss"),
    (["--budget", "$2M", "--cluster", "jean-zay-a100"], "price"),
    (["--budget", "10000gpuh", "--unique-tokens", "-2T"], "--unique-tokens"),
    (["--budget", "10000gpuh", "--inference-tokens", "many"], "--inference-tokens"),
    (["--budget", "10000gpuh", "--law", "kaplan", "--unique-tokens", "2T"], "--unique-tokens"),
    (["--budget", "10000gpuh", "--seq-len", "0"], "--seq-len"),
    (["--budget", "10000gpuh", "--gpus", "1000000"], "--gpus"),
    (["--budget", "10000gpuh", "--gpus", "eight"], "--gpus"),
    (["--deadline", "30d"], "--budget"),
])
def test_bad_input_is_one_line_on_stderr_with_exit_code_2(capsys, argv, needle):
    code, out, err = in_process(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert needle in err
    assert "Traceback" not in err


def test_bad_input_in_a_fresh_process_has_no_traceback():
    run = planner("--budget", "$2M", "--cluster", "jean-zay-a100")
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith("planner optimize: error:")


@pytest.mark.parametrize("argv, binds", [
    (["--gpus", "1", "--target-loss", "2.4", "--deadline", "2d"], "deadline binds"),
    (["--target-loss", "1.5"], "target loss 1.5 is below"),
    (["--budget", "10000gpuh", "--gpus", "64", "--inference-tokens", "2P"], "--inference-tokens alone"),
])
def test_infeasible_problem_exits_1_and_names_what_binds(capsys, argv, binds):
    code, out, err = in_process(capsys, *argv)
    assert code == 1
    assert err == ""
    assert "no feasible plan" in out
    assert binds in out


def test_infeasible_json_carries_the_explanation(capsys):
    code, out, _ = in_process(capsys, "--gpus", "1", "--target-loss", "2.4", "--deadline", "2d", "--json")
    assert code == 1
    result = json.loads(out)
    assert result["status"] == "infeasible" and result["plan"] is None
    assert any("deadline binds" in line for line in result["explanation"])
    # Scored candidates that miss it, or (model, GPU count) cells ruled out before scoring for it.
    assert result["dropped"]["misses the deadline"] + result["ruled_out_cells"].get("misses the deadline", 0) > 0


def test_budget_spellings_give_the_same_plan(capsys):
    plans = []
    for budget in ("10000gpuh", "10k gpuh", "1e4 GPU-hours"):
        code, out, _ = in_process(capsys, "--budget", budget, "--gpus", "64", "--json")
        assert code == 0
        plans.append(json.loads(out)["plan"])
    assert plans[0] == plans[1] == plans[2]


def test_money_budget_on_a_priced_cluster(capsys):
    code, out, err = in_process(capsys, "--budget", "$2M", "--cluster", "dgx-a100-80gb", "--gpus", "512", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["assumptions"]["budget_usd"] == pytest.approx(2e6)
    assert result["assumptions"]["budget_gpu_hours"] == pytest.approx(1e6)  # at $2 per A100-hour
    assert result["plan"]["cost_usd"] <= 2e6 * (1 + 1e-9)
    assert result["plan"]["gpu_hours"] <= 1e6 * (1 + 1e-9)


def test_target_loss_mode_on_the_command_line(capsys):
    code, out, _ = in_process(capsys, "--target-loss", "2.2", "--gpus", "64", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["plan"]["predicted_loss"] <= 2.2 + 1e-9
    assert result["assumptions"]["target_loss"] == 2.2


def test_unique_tokens_flag_shows_the_data_constrained_law(capsys):
    code, out, _ = in_process(capsys, "--budget", "10000gpuh", "--gpus", "64", "--unique-tokens", "50B", "--json")
    assert code == 0
    assumptions = json.loads(out)["assumptions"]
    assert assumptions["law"] == "epoch+unique-tokens"
    assert "Muennighoff" in assumptions["law_source"]
    code, text, _ = in_process(capsys, "--budget", "10000gpuh", "--gpus", "64", "--unique-tokens", "50B")
    assert "law epoch+unique-tokens" in text and "unique tokens 50B" in text


def test_steps_are_the_whole_count_the_launch_files_train(capsys, tmp_path):
    """JSON 'steps' was tokens / batch (188523.49 for this problem) while the text printed it rounded to the
    nearest and the launch files train ceil (planner.specs.layout.train_steps): one whole count everywhere."""
    code, out, err = in_process(capsys, "--budget", "20000gpuh", "--gpus", "64", "--json", "--emit", tmp_path / "run")
    assert code == 0, err
    plan = json.loads(out)["plan"]
    tokens_per_step = plan["layout"]["global_batch"] * plan["shape"]["seq_len"]
    assert plan["steps"] == math.ceil(plan["tokens"] / tokens_per_step) and isinstance(plan["steps"], int)
    files = {path.name: path.read_text() for path in (tmp_path / "run").iterdir()}
    samples = re.search(r"--train-(samples|iters) (\d+)", files["megatron_args.txt"])
    per_step = plan["layout"]["global_batch"] if samples.group(1) == "samples" else 1
    assert int(samples.group(2)) == plan["steps"] * per_step
    code, out, _ = in_process(capsys, "--budget", "20000gpuh", "--gpus", "64")
    assert f"{plan['steps']:,} steps of" in out


def test_emit_refuses_a_dtype_the_launch_cannot_train_before_the_search(capsys, tmp_path):
    """Audit-found: `--framework deepspeed --dtype fp8 --emit` searched, printed its plan and only then refused the
    files. Refused first, nothing printed. Since the twenty-second session the reason is the stack's own: Megatron-
    DeepSpeed builds its fp8 (Transformer Engine) layer for a GELU/LayerNorm/MHA model only, and the budget family is
    SwiGLU/RMSNorm with GQA (frameworks.fp8_model_unsupported), so no plan exists to emit."""
    code, out, err = in_process(capsys, "--budget", "1000gpuh", "--framework", "deepspeed", "--dtype", "fp8",
                                "--max-gpus", "16", "--emit", tmp_path / "run")
    assert code == 2 and out == "" and not (tmp_path / "run").exists()
    assert "--framework deepspeed: dtype=fp8 with mlp swiglu, norm rmsnorm" in err and len(err.strip().splitlines()) == 1


def test_a_plan_that_leaves_budget_unspent_says_the_deadline_binds(capsys):
    """Helper-found: `optimize --budget 1e30gpuh` spent 23.6M GPU-hours in the 30-day deadline on the whole cluster
    but printed '... tokens in the budget' and never said what bound it ("Infeasible is not an error: say what
    binds", planner/errors.py:5). search.score: wall = min(budget / gpus, deadline), so a plan that does not spend
    the budget runs the whole deadline."""
    code, out, _ = in_process(capsys, "--budget", "1e30gpuh", "--max-gpus", "64", "--deadline", "7d", "--json")
    assert code == 0, out
    plan = json.loads(out)["plan"]
    binds = plan["binds"]
    assert binds["constraint"] == "deadline" and binds["gpu_cap"] == "--max-gpus"
    assert binds["gpus"] == plan["gpus"] == 64 and binds["budget_gpu_hours"] == pytest.approx(1e30)
    assert plan["gpu_hours"] == pytest.approx(64 * 7 * 24, rel=1e-6)  # 64 GPUs for the whole 7 days
    code, text, _ = in_process(capsys, "--budget", "1e30gpuh", "--max-gpus", "64", "--deadline", "7d")
    assert code == 0
    line = next(line for line in text.splitlines() if line.startswith("  binds"))
    assert "deadline (7.0 days) binds on 64 GPUs" in line and "--max-gpus" in line and "of 1e+30 GPU-hours" in line
    assert "budget 1e+30 GPU-hours" in text and "tokens in the budget" not in text


def test_a_plan_that_spends_the_budget_says_the_budget_binds(capsys):
    code, out, _ = in_process(capsys, "--budget", "10000gpuh", "--gpus", "64", "--json")
    assert code == 0
    plan = json.loads(out)["plan"]
    assert plan["binds"]["constraint"] == "budget" and plan["binds"]["gpu_cap"] is None
    assert plan["gpu_hours"] == pytest.approx(10_000, rel=1e-6)
    code, text, _ = in_process(capsys, "--budget", "10000gpuh", "--gpus", "64")
    assert "  binds      the budget binds: the plan spends 10,000 of 10,000 GPU-hours" in text.splitlines()


def test_each_runner_up_says_what_binds_it(capsys):
    """Helper-found: the runners-up (`alternatives` in --json, the "runners-up" table) did not say what binds them,
    and it can differ from the chosen plan. Every plan runs wall = min(budget / gpus, deadline) (search.score), so a
    runner-up spends the budget, or runs the whole deadline, or both. With 10,000 GPU-hours and a 15 h deadline the
    chosen plan spends the budget; the best on at most half its GPUs cannot (half its GPUs for the whole 15 h buy
    fewer GPU-hours than the budget), so the deadline binds it, on the largest count its rule allows."""
    budget_h, deadline_h = 10_000.0, 15.0
    code, out, _ = in_process(capsys, "--budget", "10000gpuh", "--deadline", "15h", "--json")
    assert code == 0, out
    result = json.loads(out)
    plan, alternatives = result["plan"], result["alternatives"]
    assert plan["binds"]["constraint"] == "budget" and alternatives
    for alt in alternatives:
        binds = alt["binds"]
        assert binds["gpu_hours"] == alt["gpu_hours"] and binds["gpus"] == alt["gpus"]
        spent = alt["gpu_hours"] >= budget_h * (1 - 1e-6)
        whole_deadline = alt["wall_clock_days"] * 24 >= deadline_h * (1 - 1e-6)
        assert spent or whole_deadline, alt["label"]
        assert binds["constraint"] == {(True, False): "budget", (False, True): "deadline",
                                       (True, True): "budget and deadline"}[spent, whole_deadline], alt["label"]
    half = next(alt for alt in alternatives if alt["label"] == "best with at most half the GPUs")
    assert plan["gpus"] / 2 * deadline_h < budget_h  # the arithmetic above: this runner-up cannot spend the budget
    assert half["binds"]["constraint"] == "deadline" and half["gpus"] <= plan["gpus"] / 2
    # The largest count at most half the chosen plan's: its rule, not the cluster or a flag, stops more GPUs.
    assert half["binds"]["largest_gpus"] <= plan["gpus"] / 2
    assert (half["binds"]["gpu_cap"] == "rule") == (half["gpus"] == half["binds"]["largest_gpus"])
    if half["binds"]["gpu_cap"] == "rule":
        from planner.report.render import binding_text
        assert f"binds on {half['gpus']} GPUs, the most its runner-up rule allows" in binding_text(half["binds"])
    code, text, _ = in_process(capsys, "--budget", "10000gpuh", "--deadline", "15h")
    assert code == 0
    lines = text.splitlines()
    table = lines[lines.index("runners-up") + 1:]
    assert table[0].split()[-1] == "binds"
    for alt in alternatives:
        row = next(line for line in table if line.startswith(alt["label"]))
        assert row.endswith("  " + alt["binds"]["constraint"]), row


def test_huge_spends_print_as_the_budget_does(capsys):
    """Helper-found: the budget and the binds line printed '1.6e+17' (render.human_amount) but the time/cost line and
    the runners-up every digit of the double ('159,806,551,858,029,568 GPU-hours, $479,419,655,574,088,704').
    Serving 1e25 tokens on a ~10B model is ~2 x 1e10 x 1e25 = 2e35 FLOP: ~1e17 GPU-hours at any H100 rate."""
    from planner.report.render import human_amount

    argv = ("--budget", "1e30gpuh", "--max-gpus", "64", "--deadline", "7d", "--inference-tokens", "1e25")
    code, out, _ = in_process(capsys, *argv, "--json")
    assert code == 0, out
    result = json.loads(out)
    plan = result["plan"]
    assert plan["inference_gpu_hours"] > 1e15 and result["alternatives"]
    code, text, _ = in_process(capsys, *argv)
    assert code == 0 and not re.search(r"\d{1,3}(,\d{3}){5,}", text), text  # 16+ digits: a double's noise
    line = next(line for line in text.splitlines() if line.startswith("  time/cost"))
    assert (f"{human_amount(plan['gpu_hours'])} GPU-hours, ${human_amount(plan['cost_usd'])} (incl. "
            f"{human_amount(plan['inference_gpu_hours'])} GPU-hours for inference)") in line, line
    for alt in result["alternatives"]:
        row = next(line for line in text.splitlines() if line.startswith(alt["label"]))
        assert f"  {human_amount(alt['gpu_hours'])}  " in row, row


def test_all_the_gpus_for_the_deadline_say_both_bind(capsys):
    """`--gpus N --deadline T` makes the budget N x T (search.budget.build_constraints): the plan spends it in
    exactly the deadline, so both bind, on the GPUs --gpus pins."""
    code, out, _ = in_process(capsys, "--gpus", "64", "--deadline", "1d", "--json")
    assert code == 0
    binds = json.loads(out)["plan"]["binds"]
    assert binds["constraint"] == "budget and deadline" and binds["gpu_cap"] == "--gpus"
    assert binds["gpu_hours"] == pytest.approx(64 * 24, rel=1e-6) == binds["budget_gpu_hours"]


def test_a_runner_up_stopped_at_half_the_wall_clock_says_its_rule_binds_it(capsys):
    """On one GPU count every budget plan spends the budget in the same time, so the half-time runner-up is a plan
    stopped early (search/stopping.py): half the GPU-hours, half the wall-clock, and its rule (not the deadline)
    binds it; the text says so."""
    from planner.report.render import binding_text

    code, out, _ = in_process(capsys, "--budget", "46080gpuh", "--gpus", "64", "--deadline", "30d", "--cluster",
                              "dgx-a100-80gb", "--json")
    assert code == 0, out
    result = json.loads(out)
    plan = result["plan"]
    half = next(alt for alt in result["alternatives"] if alt["label"] == "best finishing in at most half the wall-clock")
    assert half["binds"]["constraint"] == "half the wall-clock" and half["gpus"] == plan["gpus"] == 64
    assert half["wall_clock_s"] == pytest.approx(plan["wall_clock_s"] / 2, rel=1e-9)
    assert half["gpu_hours"] == pytest.approx(plan["gpu_hours"] / 2, rel=1e-9)
    assert binding_text(half["binds"]).startswith("its rule binds: it stops at half the chosen plan's wall-clock")
    # The frontier on one GPU count: the loss at each wall-clock, falling as the run goes on.
    walls = [p["wall_clock_days"] for p in result["pareto"]]
    losses = [p["predicted_loss"] for p in result["pareto"]]
    assert len(walls) > 10 and walls == sorted(walls) and losses == sorted(losses, reverse=True)


def test_the_runners_up_gpu_hours_say_they_include_serving(cli):
    """The runners-up's GPU-h column counts serving with --inference-tokens (a 1.5-day, 64-GPU plan at 10,000)."""
    note = "GPU-h includes serving the inference tokens (GPUs x wall-clock is the training alone)"
    code, out, _ = cli(["optimize", "--budget", "10000gpuh", "--gpus", "64", "--inference-tokens", "1T"])
    assert code == 0 and note in out
    code, out, _ = cli(["optimize", "--budget", "10000gpuh", "--gpus", "64"])
    assert code == 0 and note not in out
