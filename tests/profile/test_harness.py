"""Harness pieces that need no DeepSpeed: rows from results, the profile store, timeouts, launch commands."""

import json
import os
import sys
import time

import pytest

from planner.errors import PlannerInputError
from planner.profile import harness
from planner.profile.grid import ProfileConfig
from planner.profile.runs_csv import read_runs

CONFIG = ProfileConfig(layers=2, hidden=64, heads=4, ffn=256, seq_len=32, vocab=512, world_size=2, zero=3,
                       offload="none", micro_batch=2, grad_accum=1, dtype="fp32")
SETTINGS = harness.RunSettings(steps=3, warmup=2, timeout_s=30, accelerator="cpu")


def fake_result(step_times=((0.10, 0.30, 0.20), (0.12, 0.25, 0.22))):
    def rank(index, times):
        memory = {"total_bytes": 3000, "module_bytes": 1000, "optimizer_bytes": 1500, "other_bytes": 500,
                  "offloaded_bytes": 0, "device_bytes": 3000 + index}
        return {
            "rank": index, "step_times_s": list(times),
            "breakdowns": [{"fwd": 0.01 * (i + 1), "bwd": 0.02, "bwd_allreduce": 0.005, "step": 0.003} for i in range(len(times))],
            "memory": {"after_backward": memory, "after_step": dict(memory, device_bytes=2000)},
            "peak_allocator_bytes": None, "loss": 6.2,
            "collectives": {
                "all_gather_into_tensor": {"calls": 96, "msg_bytes": 2012160, "calls_per_step": 32.0,
                                           "msg_bytes_per_step": 670720.0, "volume_bytes_per_step": 1341440.0,
                                           "latency_ms_per_call": {"median": 0.1, "min": 0.03, "max": 2.2, "total_per_step": 5.0}},
                "reduce_scatter_tensor": {"calls": 3, "msg_bytes": 2012160, "calls_per_step": 1.0,
                                          "msg_bytes_per_step": 670720.0, "volume_bytes_per_step": 670720.0,
                                          "latency_ms_per_call": {"median": 0.75, "min": 0.7, "max": 1.6, "total_per_step": 1.0}},
            },
        }

    return {
        "spec": harness.worker_spec(CONFIG, SETTINGS), "deepspeed_config": {}, "parameters": {"total": 167680},
        "environment": {"deepspeed": "0.19.8", "torch": "2.13.0+cpu", "accelerator": "cpu", "device_model": "AMD EPYC",
                        "backend": "gloo", "world_size": 2, "omp_num_threads": "1"},
        "ranks": [rank(i, times) for i, times in enumerate(step_times)],
    }


def test_summary_uses_slowest_rank_per_step_and_collective_families():
    summary = harness.summarize_result(fake_result())
    assert summary["step_time_s"] == pytest.approx(0.22)  # median of max per step: 0.12, 0.30, 0.22
    assert summary["step_time_p10_s"] == pytest.approx(0.12 + 0.2 * 0.10)
    assert summary["step_time_p90_s"] == pytest.approx(0.22 + 0.8 * 0.08)
    assert summary["fwd_s"] == pytest.approx(0.02)
    assert summary["allgather_bytes"] == 1341440 and summary["allgather_calls"] == 32
    assert summary["reduce_scatter_bytes"] == 670720 and summary["allreduce_bytes"] == 0
    assert summary["comm_s"] == pytest.approx(0.006)
    assert summary["mem_gib"] == pytest.approx(3001 / 2**30)  # largest probe on the largest rank
    assert summary["mem_method"] == "counted-tensors" and summary["params"] == 167680


def test_ok_row_fills_the_runs_csv_layout():
    row = harness.outcome_row(harness.Outcome(CONFIG, "ok", 12.0, result=fake_result()), SETTINGS, "cpu-local", "p")
    assert (row.id, row.cluster, row.gpus, row.dp, row.tp, row.pp, row.zero, row.offload) == (
        CONFIG.config_id, "cpu-local", 2, 2, 1, 1, 3, "none")
    assert (row.global_batch, row.dtype, row.mlp, row.kv_heads, row.recompute, row.confidence) == (4, "fp32", "gelu", 4, "none", "high")
    assert row.extra["status"] == "ok" and "counted" in row.notes
    assert (row.extra["bias"], row.extra["norm"]) == ("1", "layernorm")  # the worker's TinyGPT (the profile audit: it read as Llama's)


def test_failed_row_keeps_the_error_and_has_no_step_time():
    outcome = harness.Outcome(CONFIG, "failed", 3.0, error="RuntimeError: boom")
    row = harness.outcome_row(outcome, SETTINGS, "cpu-local", "p")
    assert row.step_time_s is None and row.extra["status"] == "failed" and "RuntimeError: boom" in row.notes
    details = harness.outcome_details(outcome, SETTINGS)
    assert details["status"] == "failed" and details["error"] == "RuntimeError: boom"


def test_store_resume_reports_corrupt_rows_and_reruns_them(tmp_path):
    store = harness.ProfileStore(tmp_path, "p")
    good = harness.outcome_row(harness.Outcome(CONFIG, "ok", 1.0, result=fake_result()), SETTINGS, "cpu-local", "p")
    store.record(good, {"x": 1}, None)
    text = store.csv_path.read_text()
    broken_row = text.splitlines()[1].replace(CONFIG.config_id, "other-id").replace(",2,2,64,", ",two,2,64,", 1)
    store.csv_path.write_text(text + broken_row + "\n")
    warnings = []
    again = harness.ProfileStore(tmp_path, "p")
    again.open(resume=True, force=False, warn=warnings.append)
    assert again.done(CONFIG.config_id) and not again.done("other-id")
    assert any(f"{store.csv_path}:3" in w and "gpus" in w for w in warnings)
    assert list(tmp_path.glob("p.csv.corrupt-*"))
    with pytest.raises(PlannerInputError, match="--resume"):
        harness.ProfileStore(tmp_path, "p").open(resume=False, force=False, warn=warnings.append)


def test_store_sets_aside_unreadable_details(tmp_path):
    (tmp_path / "p.json").write_text('{"runs": {"a": ')
    warnings = []
    store = harness.ProfileStore(tmp_path, "p")
    store.open(resume=True, force=False, warn=warnings.append)
    assert store.details["runs"] == {} and any("p.json:1" in w for w in warnings)


def test_sweep_goes_on_after_a_failure(tmp_path, monkeypatch):
    other = ProfileConfig(**{**CONFIG.__dict__, "zero": 0})
    outcomes = {CONFIG.config_id: harness.Outcome(CONFIG, "failed", 1.0, error="RuntimeError: boom"),
                other.config_id: harness.Outcome(other, "ok", 1.0, result=fake_result())}
    monkeypatch.setattr(harness, "run_configuration", lambda config, settings: outcomes[config.config_id])
    store = harness.ProfileStore(tmp_path, "p")
    lines = []
    counts = harness.sweep([CONFIG, other], SETTINGS, store, "cpu-local", "p", False, lines.append)
    assert counts == {"ok": 1, "failed": 1, "timeout": 0, "skipped": 0}
    runs, problems = read_runs(store.csv_path)
    assert not problems and [r.extra["status"] for r in runs] == ["failed", "ok"]
    details = json.loads(store.json_path.read_text())
    assert details["runs"][CONFIG.config_id]["error"] == "RuntimeError: boom"
    # Resume skips the finished configuration and runs the failed one again.
    counts = harness.sweep([CONFIG, other], SETTINGS, store, "cpu-local", "p", True, lines.append)
    assert counts["skipped"] == 1 and counts["failed"] == 1


def test_timeout_kills_the_whole_process_group(tmp_path, monkeypatch):
    pid_file = tmp_path / "child.pid"
    script = f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    monkeypatch.setattr(harness, "launcher_command", lambda *args: [sys.executable, "-c", script])
    settings = harness.RunSettings(steps=1, warmup=0, timeout_s=2, accelerator="cpu", work_dir=str(tmp_path))
    started = time.monotonic()
    outcome = harness.run_configuration(CONFIG, settings)
    assert outcome.status == "timeout" and "timed out after 2 s" in outcome.error
    assert time.monotonic() - started < 20
    grandchild = int(pid_file.read_text())
    time.sleep(0.2)
    assert not _running(grandchild)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers where PID 1 does not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_failure_reason_prefers_rank_error_file(tmp_path):
    out = tmp_path / "result.json"
    (tmp_path / "result.json.rank1.error.json").write_text(json.dumps({"rank": 1, "error": "ValueError: bad"}))
    assert harness._failure_reason(tmp_path, out, 1, ["x"]) == "ValueError: bad"
    tail = ["terminate called without an active exception",
            "[ERROR] [launch.py:259:sigkill_handler] [...] exits with return code = -6"]
    assert harness._failure_reason(tmp_path / "none", out, 250, tail) == \
        "terminate called without an active exception (a rank exited with code -6)"


def test_launcher_command_single_node_and_hostfile(tmp_path):
    command = harness.launcher_command(CONFIG, SETTINGS, tmp_path / "s.json", tmp_path / "o.json", 29500)
    assert command[1:4] == ["-u", "-m", "deepspeed.launcher.runner"]
    assert command[command.index("--num_gpus") + 1] == "2" and "--hostfile" not in command
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node1 slots=8\nnode2 slots=8  # second node\n")
    wide = ProfileConfig(**{**CONFIG.__dict__, "world_size": 16})
    settings = harness.RunSettings(steps=1, warmup=0, timeout_s=1, accelerator="cuda", hostfile=str(hostfile))
    command = harness.launcher_command(wide, settings, tmp_path / "s.json", tmp_path / "o.json", 29500)
    assert command[command.index("--num_nodes") + 1] == "2" and command[command.index("--num_gpus") + 1] == "8"
    with pytest.raises(PlannerInputError, match="world size 24 does not fit"):
        harness.nodes_and_ranks(24, [8, 8])


def test_cpu_threads_split_between_local_ranks():
    env = harness.launcher_env(CONFIG, SETTINGS)
    assert env["DS_ACCELERATOR"] == "cpu"
    assert env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))


def test_free_port_is_bindable():
    import socket

    port = harness.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_dry_run_lists_configurations_without_deepspeed(capsys, monkeypatch):
    from planner.cli import main

    monkeypatch.setattr(harness, "require_deepspeed", lambda: None)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert main(["profile", "--name", "x", "--grid", "ci", "--zero", "1", "--dry-run"]) == 0
    assert capsys.readouterr().out.split() == ["L2-h64-a4-f256-s32-v512-w2-z1-mb2-ga1-fp32"]


def test_missing_deepspeed_is_a_one_line_input_error(monkeypatch):
    monkeypatch.setattr(harness.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PlannerInputError, match=r"pip install torch==2\.13\.0"):
        harness.require_deepspeed()


def test_bad_flag_value_exits_2(capsys):
    from planner.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["profile", "--name", "x", "--zero", "one"])
    assert exit_info.value.code == 2
    assert "--zero expects comma-separated whole numbers" in capsys.readouterr().err


def test_redo_runs_a_finished_configuration_again_and_keeps_the_earlier_attempt(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "run_configuration",
                        lambda config, settings: harness.Outcome(config, "ok", 1.0, result=fake_result()))
    store = harness.ProfileStore(tmp_path, "p")
    harness.sweep([CONFIG], SETTINGS, store, "cpu-local", "p", False, lambda line: None)
    counts = harness.sweep([CONFIG], SETTINGS, store, "cpu-local", "p", True, lambda line: None,
                           redo=frozenset({CONFIG.config_id}))
    assert counts["ok"] == 1 and counts["skipped"] == 0
    attempts = json.loads(store.json_path.read_text())["runs"][CONFIG.config_id]["previous_attempts"]
    assert len(attempts) == 1 and attempts[0]["status"] == "ok" and len(attempts[0]["step_times_s"]) == 2


def test_interrupt_kills_the_whole_process_group_and_propagates(tmp_path, monkeypatch):
    import signal

    pid_file = tmp_path / "child.pid"
    script = f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    monkeypatch.setattr(harness, "launcher_command", lambda *args: [sys.executable, "-c", script])
    settings = harness.RunSettings(steps=1, warmup=0, timeout_s=60, accelerator="cpu", work_dir=str(tmp_path))

    def interrupt(signum, frame):  # what Ctrl-C (or SIGTERM in `planner profile`) does
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(2)
    try:
        with pytest.raises(KeyboardInterrupt):
            harness.run_configuration(CONFIG, settings)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    time.sleep(0.2)
    assert not _running(int(pid_file.read_text()))
    assert not list(tmp_path.glob(f"{CONFIG.config_id}.*"))  # the run folder is cleaned up


@pytest.mark.parametrize("make", ["parent is a file", "folder in the csv's place"])
def test_an_unwritable_profile_path_is_refused_before_any_configuration_runs(tmp_path, make):
    """--out-dir naming a file (or a folder named NAME.csv) was found only when the first configuration's row was
    written, after it had run (minutes on the default grid); the folder was taken for an existing profile."""
    if make == "parent is a file":
        out_dir = tmp_path / "file"
        out_dir.write_text("not a folder\n")
    else:
        out_dir = tmp_path
        (tmp_path / "p.csv").mkdir()
    with pytest.raises(PlannerInputError, match="cannot write|is a folder"):
        harness.ProfileStore(out_dir, "p").open(resume=False, force=True, warn=lambda text: None)


def test_a_launch_whose_port_was_taken_is_retried_on_a_fresh_one(monkeypatch):
    """free_port() probes a port and lets it go; another process can bind it before torchrun does (seen in a parallel
    suite run: 'DistNetworkError: The server socket has failed to listen ... EADDRINUSE'). Such a failure is launched
    again on a fresh port, up to PORT_RETRIES times; other failures are not, nor is a port the user gave."""
    ports, outcomes = [], []

    def launch(config, settings, port):
        ports.append(port)
        return outcomes.pop(0)

    monkeypatch.setattr(harness, "_launch", launch)
    taken = harness.Outcome(CONFIG, "failed", 1.0, error="DistNetworkError: ... code: -98, name: EADDRINUSE, "
                                                         "message: address already in use")
    ok = harness.Outcome(CONFIG, "ok", 1.0, result={})
    outcomes[:] = [taken, ok]
    relaunched = harness.run_configuration(CONFIG, SETTINGS)
    assert relaunched.status == "ok" and "relaunched 1 time(s)" in relaunched.warning
    assert len(ports) == 2  # a second launch, on a port probed afresh
    ports.clear()
    outcomes[:] = [taken] * (1 + harness.PORT_RETRIES)
    assert harness.run_configuration(CONFIG, SETTINGS).status == "failed" and len(ports) == 1 + harness.PORT_RETRIES
    ports.clear()
    # A bind warning in the log's tail beside another failure's own line is not a taken port.
    other = harness.Outcome(CONFIG, "failed", 1.0, error="RuntimeError: CUDA error",
                            log_tail=["[W socket.cpp] bind: address already in use (errno 98), retrying"])
    outcomes[:] = [other, ok]
    assert harness.run_configuration(CONFIG, SETTINGS).status == "failed" and len(ports) == 1
    ports.clear()
    outcomes[:] = [harness.Outcome(CONFIG, "failed", 1.0, error="RuntimeError: shapes do not match"), ok]
    assert harness.run_configuration(CONFIG, SETTINGS).status == "failed" and len(ports) == 1
    ports.clear()
    outcomes[:] = [taken, ok]
    fixed = harness.RunSettings(steps=3, warmup=2, timeout_s=30, accelerator="cpu", master_port=29511)
    assert harness.run_configuration(CONFIG, fixed).status == "failed" and ports == [29511]
