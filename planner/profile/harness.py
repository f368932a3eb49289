"""`planner profile`: run real DeepSpeed training steps over a grid and record one row per configuration.

Each configuration is one DeepSpeed launch (`python -m deepspeed.launcher.runner`, the same runner as
the `deepspeed` command) of `worker.py`, in its own process group, bounded by a timeout; a timeout
or Ctrl-C kills the whole group. On one machine the launcher starts N local ranks on 127.0.0.1;
with `--hostfile` it starts them across nodes (the work folder must then be on a shared filesystem,
since rank 0 writes its result there). The device comes from DeepSpeed's accelerator: NCCL and the
CUDA allocator's peak on GPUs; the CPU accelerator with gloo, fp32 and counted tensor bytes without.

The profile is `<out>/<name>.csv` (runs CSV, one row per configuration) plus `<out>/<name>.json`
(everything the worker measured, keyed by configuration id). Both are rewritten atomically after each
configuration, details first, so an interrupted sweep leaves complete files and `--resume` picks up
where it stopped. A configuration that fails is recorded with status=failed and its error; the sweep
goes on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import statistics
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import PlannerInputError
from planner.io import output_exists, write_text_atomic
from planner.profile.grid import ProfileConfig
from planner.profile.runs_csv import (MEM_ALLOCATOR_PEAK, MEM_COUNTED_TENSORS, MeasuredRun, cell_text, read_runs,
                                     write_runs)

WORKER = Path(__file__).with_name("worker.py")
INSTALL_HINT = "pip install torch==2.13.0 && DS_BUILD_OPS=0 pip install -e '.[profile]'"
KILL_GRACE_S = 5.0
_FAILURE_LINE = re.compile(r"\w+Error\b|Exception|terminate called|Killed|Segmentation fault|core dumped|out of memory")


@dataclass(frozen=True)
class RunSettings:
    steps: int
    warmup: int
    timeout_s: float
    accelerator: str  # DeepSpeed accelerator name: "cpu", "cuda", ...
    hostfile: str | None = None
    master_port: int | None = None
    work_dir: str | None = None
    keep_logs: str | None = None
    comms_log: bool = True
    bucket_elements: int = 5_000_000
    ds_log_level: str | None = None  # e.g. "info": ranks print the engine config (handy with --keep-logs)


@dataclass
class Outcome:
    config: ProfileConfig
    status: str  # ok | failed | timeout
    wall_s: float
    result: dict | None = None
    error: str | None = None
    warning: str | None = None
    log_tail: list[str] = field(default_factory=list)


def require_deepspeed() -> None:
    missing = [name for name in ("torch", "deepspeed") if importlib.util.find_spec(name) is None]
    if missing:
        raise PlannerInputError(f"planner profile needs {' and '.join(missing)} (the 'profile' extra): {INSTALL_HINT}")


def detect_accelerator() -> str:
    """DeepSpeed's accelerator name (DS_ACCELERATOR if set, else what DeepSpeed detects)."""
    if os.environ.get("DS_ACCELERATOR"):
        return os.environ["DS_ACCELERATOR"]
    from deepspeed.accelerator import get_accelerator

    return get_accelerator().device_name()


def resolve_dtype(accelerator: str):
    # fp32 on CPU: this CPU's bf16 matmuls run ~20x slower than fp32 and fp16 is unsupported.
    return lambda dtype: ("fp32" if accelerator == "cpu" else "bf16") if dtype == "auto" else dtype


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def hostfile_slots(path: str) -> list[int]:
    """Slots per host in a DeepSpeed hostfile ("host slots=N" lines)."""
    slots = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise PlannerInputError(f"--hostfile {path}: cannot read ({error.__class__.__name__})")
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].startswith("slots=") or not parts[1][6:].isdigit():
            raise PlannerInputError(f"{path}:{number}: expected 'HOST slots=N', got {line!r}")
        slots.append(int(parts[1][6:]))
    if not slots:
        raise PlannerInputError(f"{path}: no hosts (expected lines 'HOST slots=N')")
    return slots


def nodes_and_ranks(world: int, slots: list[int]) -> tuple[int, int]:
    """(nodes, ranks per node) for `world` ranks on a hostfile's first hosts, equal ranks per node."""
    per_node = min(world, min(slots))
    if world % per_node or world // per_node > len(slots):
        raise PlannerInputError(
            f"world size {world} does not fit the hostfile: {len(slots)} hosts x {min(slots)} slots, equal ranks per node")
    return world // per_node, per_node


def launcher_command(config: ProfileConfig, settings: RunSettings, spec: Path, out: Path, port: int) -> list[str]:
    command = [sys.executable, "-u", "-m", "deepspeed.launcher.runner", "--master_port", str(port), "--no_local_rank"]
    if settings.hostfile:
        nodes, per_node = nodes_and_ranks(config.world_size, hostfile_slots(settings.hostfile))
        command += ["--hostfile", settings.hostfile, "--num_nodes", str(nodes), "--num_gpus", str(per_node)]
    else:
        command += ["--num_gpus", str(config.world_size)]
    return command + [str(WORKER), "--spec", str(spec), "--out", str(out)]


def launcher_env(config: ProfileConfig, settings: RunSettings) -> dict[str, str]:
    env = dict(os.environ, DS_ACCELERATOR=settings.accelerator, PYTHONUNBUFFERED="1")
    if settings.accelerator == "cpu":
        ranks_here = config.world_size
        if settings.hostfile:
            ranks_here = nodes_and_ranks(config.world_size, hostfile_slots(settings.hostfile))[1]
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // ranks_here))
    return env


def worker_spec(config: ProfileConfig, settings: RunSettings) -> dict:
    return {
        "config_id": config.config_id, "layers": config.layers, "hidden": config.hidden, "heads": config.heads,
        "ffn": config.ffn, "seq_len": config.seq_len, "vocab": config.vocab, "micro_batch": config.micro_batch,
        "grad_accum": config.grad_accum, "zero": config.zero, "offload": config.offload, "dtype": config.dtype,
        "warmup": settings.warmup, "steps": settings.steps, "comms_log": settings.comms_log,
        "bucket_elements": settings.bucket_elements, "log_level": settings.ds_log_level,
    }


def kill_group(process: subprocess.Popen) -> None:
    """SIGTERM the launcher's whole process group (ranks included), SIGKILL it after a grace period."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return  # everyone already gone
    try:
        process.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    # The launcher may have exited while ranks linger; nobody in the group outlives this.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _tail(path: Path, lines: int = 30) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _failure_reason(run_dir: Path, out: Path, code: int, tail: list[str]) -> str:
    for error_file in sorted(run_dir.glob(f"{out.name}.rank*.error.json")):
        try:
            return json.loads(error_file.read_text(encoding="utf-8"))["error"]
        except (OSError, ValueError, KeyError):
            continue
    rank_code = next((line.rsplit("return code =", 1)[1].strip() for line in reversed(tail) if "return code =" in line), None)
    suffix = f" (a rank exited with code {rank_code})" if rank_code else f" (launcher exit code {code})"
    for line in reversed(tail):
        if _FAILURE_LINE.search(line) and "sigkill_handler" not in line:
            return line.strip()[-300:] + suffix
    return f"no result written{suffix}"


# A rendezvous port picked by free_port() is free when probed and taken by the launcher moments later; another
# process (a parallel run, gloo's own ephemeral sockets) can take it between the two. The launch is then retried on
# a fresh port, up to PORT_RETRIES more times; a port the user gave (--master-port) is never changed.
PORT_RETRIES = 2
_PORT_TAKEN = re.compile(r"EADDRINUSE|address already in use", re.IGNORECASE)


def run_configuration(config: ProfileConfig, settings: RunSettings) -> Outcome:
    """Launch one configuration and wait for it (bounded by `settings.timeout_s`), on a fresh rendezvous port again
    where the one picked was taken before the launcher bound it (PORT_RETRIES); the outcome's warning says so."""
    relaunches = 0
    while True:
        outcome = _launch(config, settings, settings.master_port or free_port())
        if settings.master_port or relaunches == PORT_RETRIES or not _port_was_taken(outcome):
            break
        relaunches += 1
    if relaunches:
        note = f"relaunched {relaunches} time(s) on a fresh rendezvous port after EADDRINUSE"
        outcome.warning = f"{outcome.warning}; {note}" if outcome.warning else note
    return outcome


def _port_was_taken(outcome: Outcome) -> bool:
    """The launch failed because its rendezvous port was taken: the failure reason says so (the log's tail only
    where no failure line was found, so a harmless bind warning beside another failure does not relaunch it)."""
    if outcome.status != "failed":
        return False
    error = outcome.error or ""
    if _PORT_TAKEN.search(error):
        return True
    return error.startswith("no result written") and bool(_PORT_TAKEN.search(" ".join(outcome.log_tail)))


def _launch(config: ProfileConfig, settings: RunSettings, port: int) -> Outcome:
    """One launch of the configuration on rendezvous port `port`."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{config.config_id}.", dir=settings.work_dir))
    spec_path, out = run_dir / "spec.json", run_dir / "result.json"
    spec_path.write_text(json.dumps(worker_spec(config, settings)), encoding="utf-8")
    log_path = run_dir / "launcher.log"
    command = launcher_command(config, settings, spec_path, out, port)
    started = time.monotonic()
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=launcher_env(config, settings), start_new_session=True)
            try:
                code = process.wait(timeout=settings.timeout_s)
            except subprocess.TimeoutExpired:
                kill_group(process)
                code = None
            except BaseException:  # Ctrl-C: take the ranks down with us
                kill_group(process)
                raise
            kill_group(process)  # stragglers, if the launcher left any
        wall_s = time.monotonic() - started
        tail = _tail(log_path)
        if code is None:
            return Outcome(config, "timeout", wall_s, error=f"timed out after {settings.timeout_s:g} s", log_tail=tail)
        if out.exists():
            # Rank 0 writes the result after the last measured step; a crash in teardown after that
            # does not spoil the measurement, but it is worth saying.
            warning = None if code == 0 else f"launcher exited with code {code} after the result was written"
            result = json.loads(out.read_text(encoding="utf-8"))
            return Outcome(config, "ok", wall_s, result=result, warning=warning, log_tail=tail)
        return Outcome(config, "failed", wall_s, error=_failure_reason(run_dir, out, code, tail), log_tail=tail)
    finally:
        if settings.keep_logs:
            Path(settings.keep_logs).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log_path, Path(settings.keep_logs) / f"{config.config_id}.log")
        shutil.rmtree(run_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------- rows

# Comms-logger op names grouped the way the cost model names collectives.
COLLECTIVE_FAMILIES = {
    "all_reduce": "allreduce", "all_reduce_coalesced": "allreduce", "inference_all_reduce": "allreduce",
    "all_gather_into_tensor": "allgather", "all_gather": "allgather",
    "reduce_scatter_tensor": "reduce_scatter", "reduce_scatter": "reduce_scatter",
}


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), q in [0, 1]."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize_result(result: dict) -> dict:
    """Row values from a worker result: median step of the slowest rank, timers, collectives, memory."""
    ranks, env = result["ranks"], result["environment"]
    steps = len(ranks[0]["step_times_s"])
    slowest = [max(rank["step_times_s"][i] for rank in ranks) for i in range(steps)]

    def timer(name: str) -> float | None:
        values = [max(rank["breakdowns"][i].get(name, 0.0) for rank in ranks) for i in range(steps)]
        return statistics.median(values) if values else None

    families: dict[str, dict[str, float]] = {}
    for op, entry in ranks[0]["collectives"].items():
        family = families.setdefault(COLLECTIVE_FAMILIES.get(op, "other_collective"), {"bytes": 0.0, "calls": 0.0})
        family["bytes"] += entry["volume_bytes_per_step"]
        family["calls"] += entry["calls_per_step"]
    comm_s = sum(e["latency_ms_per_call"]["total_per_step"] for e in ranks[0]["collectives"].values()) / 1000
    if env["accelerator"] != "cpu":
        method, mem_bytes, offloaded = MEM_ALLOCATOR_PEAK, max(r["peak_allocator_bytes"] for r in ranks), 0
    else:
        probes = [m for r in ranks for m in r["memory"].values() if m]
        method = MEM_COUNTED_TENSORS
        mem_bytes = max(m["device_bytes"] for m in probes)
        offloaded = max(m["offloaded_bytes"] for m in probes)
    mem_text = (f"{env['accelerator']} allocator peak per rank" if method == MEM_ALLOCATOR_PEAK else
                "counted param+grad+optimizer+ZeRO-buffer tensor bytes per rank (activations excluded; offloaded state excluded)")
    threads = f", OMP_NUM_THREADS={env['omp_num_threads']}" if env.get("omp_num_threads") else ""
    notes = (f"{env['world_size']} rank(s) on {env['device_model']} via {env['backend']}{threads}; "
             f"DeepSpeed {env['deepspeed']}, torch {env['torch']}; step = median of {steps} steps (slowest rank) "
             f"after warm-up; mem_gib = {mem_text}")
    summary = {
        "step_time_s": statistics.median(slowest), "mem_gib": mem_bytes / 2**30, "notes": notes,
        "step_time_p10_s": _quantile(slowest, 0.1), "step_time_p90_s": _quantile(slowest, 0.9),
        "fwd_s": timer("fwd"), "bwd_s": timer("bwd"), "bwd_allreduce_s": timer("bwd_allreduce"), "opt_s": timer("step"),
        "comm_s": comm_s if ranks[0]["collectives"] else None,
    }
    for family in ("allreduce", "allgather", "reduce_scatter", "other_collective"):
        entry = families.get(family, {"bytes": 0.0, "calls": 0.0})
        summary[f"{family}_bytes"] = int(round(entry["bytes"])) if ranks[0]["collectives"] else None
        summary[f"{family}_calls"] = entry["calls"] if ranks[0]["collectives"] else None
    summary.update(params=result["parameters"]["total"], mem_method=method, mem_offloaded_gib=offloaded / 2**30,
                   deepspeed=env["deepspeed"], torch=env["torch"], device=env["device_model"])
    return summary


def _base_row(config: ProfileConfig, cluster: str, profile: str) -> dict:
    return {
        "id": config.config_id, "source": f"profile:{profile}", "confidence": "high", "cluster": cluster,
        "gpus": config.world_size, "layers": config.layers, "hidden": config.hidden, "heads": config.heads,
        "kv_heads": config.heads, "ffn": config.ffn, "mlp": "gelu", "seq_len": config.seq_len,
        "vocab": config.vocab, "tp": 1, "pp": 1, "dp": config.world_size, "cp": 1, "vpp": 1,
        "zero": config.zero, "offload": config.offload, "micro_batch": config.micro_batch,
        "global_batch": config.global_batch, "recompute": "none", "seq_parallel": 0, "dtype": config.dtype,
    }


def outcome_row(outcome: Outcome, settings: RunSettings, cluster: str, profile: str) -> MeasuredRun:
    """The runs-CSV row for one configuration (failed ones keep their error in `notes`)."""
    row = _base_row(outcome.config, cluster, profile)
    # The worker is a DeepSpeed engine whose attention is torch's fused scaled_dot_product_attention, and its TinyGPT
    # has biased linear layers and LayerNorm (worker.build_model; its learned position table has no runs-CSV column).
    extra = {"status": outcome.status, "steps": str(settings.steps), "warmup": str(settings.warmup),
             "grad_accum": str(outcome.config.grad_accum), "framework": "deepspeed", "flash_attention": "1",
             "bias": "1", "norm": "layernorm"}
    if outcome.status != "ok":
        row["notes"] = f"{outcome.status}: {outcome.error}"
        return MeasuredRun(**row, extra=extra)
    summary = summarize_result(outcome.result)
    row["step_time_s"] = summary.pop("step_time_s")
    row["mem_gib"] = summary.pop("mem_gib")
    row["notes"] = summary.pop("notes") + (f"; {outcome.warning}" if outcome.warning else "")
    extra.update({key: cell_text(value) for key, value in summary.items()})
    return MeasuredRun(**row, extra=extra)


def outcome_details(outcome: Outcome, settings: RunSettings) -> dict:
    details = {"config_id": outcome.config.config_id, "status": outcome.status, "wall_s": round(outcome.wall_s, 2),
               "spec": worker_spec(outcome.config, settings)}
    if outcome.result is not None:
        details.update(outcome.result)
        if outcome.warning:
            details.update(warning=outcome.warning, log_tail=outcome.log_tail)
    else:
        details.update(error=outcome.error, log_tail=outcome.log_tail)
    return details


# --------------------------------------------------------------------------------------- store


class ProfileStore:
    """`<name>.csv` + `<name>.json` in `out_dir`, rewritten atomically after every configuration."""

    def __init__(self, out_dir: str | Path, name: str):
        self.csv_path = Path(out_dir) / f"{name}.csv"
        self.json_path = Path(out_dir) / f"{name}.json"
        self.rows: dict[str, MeasuredRun] = {}
        self.details: dict = {"profile": name, "runs": {}}

    def open(self, resume: bool, force: bool, warn) -> None:
        # output_exists refuses, before any configuration runs, a path the first write would fail on (a parent
        # that is a file, a folder in the file's place): the sweep would otherwise stop after its first run.
        exists = any([output_exists(self.csv_path), output_exists(self.json_path)])
        if exists and not (resume or force):
            raise PlannerInputError(f"{self.csv_path}: profile already exists; pass --resume to continue it or --force to start over")
        try:  # the folder the rows go to, made now: one no folder can be made in (/proc/x) fails here, not after a run
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PlannerInputError(f"{self.csv_path.parent}: cannot write ({error.strerror or error.__class__.__name__})") from None
        if not exists or force:
            return
        if self.csv_path.exists():
            runs, problems = read_runs(self.csv_path)
            for problem in problems:
                warn(f"{problem}; skipped (its configuration will be run again if it is in the grid)")
            if problems:
                self._set_aside(self.csv_path, warn)
            self.rows = {run.id: run for run in runs}
        if self.json_path.exists():
            try:
                self.details = json.loads(self.json_path.read_text(encoding="utf-8"))
                self.details.setdefault("runs", {})
            except (OSError, UnicodeDecodeError, ValueError) as error:
                line = getattr(error, "lineno", None)
                warn(f"{self.json_path}{f':{line}' if line else ''}: unreadable details ({error.__class__.__name__}); starting a new details file")
                self._set_aside(self.json_path, warn)

    @staticmethod
    def _set_aside(path: Path, warn) -> None:
        keep = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copyfile(path, keep)
        warn(f"{path}: original kept as {keep}")

    def done(self, config_id: str) -> bool:
        run = self.rows.get(config_id)
        return run is not None and run.extra.get("status", "ok") == "ok" and run.step_time_s is not None

    def record(self, run: MeasuredRun, details: dict, environment: dict | None) -> None:
        earlier = self.details["runs"].get(run.id)
        if earlier:  # a re-run keeps what the earlier attempts measured
            history = earlier.pop("previous_attempts", [])
            details["previous_attempts"] = history + [_attempt_summary(earlier)]
        self.details["runs"][run.id] = details
        if environment:
            self.details["environment"] = environment
        write_text_atomic(self.json_path, json.dumps(self.details, indent=1) + "\n", force=True)
        self.rows[run.id] = run
        write_runs(self.csv_path, list(self.rows.values()), force=True)


def _attempt_summary(details: dict) -> dict:
    """What an earlier attempt of a configuration measured, kept when it is run again."""
    summary = {"status": details.get("status"), "wall_s": details.get("wall_s"), "error": details.get("error")}
    if details.get("ranks"):
        summary["step_times_s"] = [rank["step_times_s"] for rank in details["ranks"]]
    return summary


# --------------------------------------------------------------------------------------- sweep


def sweep(configs, settings: RunSettings, store: ProfileStore, cluster: str, profile: str, resume: bool, report,
          redo: frozenset[str] = frozenset()) -> dict:
    """Run every configuration not already done (or named in `redo`); record each as it finishes."""
    counts = {"ok": 0, "failed": 0, "timeout": 0, "skipped": 0}
    total = len(configs)
    for index, config in enumerate(configs, 1):
        prefix = f"[{index}/{total}] {config.config_id}"
        if resume and store.done(config.config_id) and config.config_id not in redo:
            counts["skipped"] += 1
            report(f"{prefix}: already in {store.csv_path.name}, skipped")
            continue
        outcome = run_configuration(config, settings)
        row = outcome_row(outcome, settings, cluster, profile)
        environment = outcome.result["environment"] if outcome.result else None
        store.record(row, outcome_details(outcome, settings), environment)
        counts[outcome.status] += 1
        if outcome.status == "ok":
            extra = row.extra
            report(f"{prefix}: {row.step_time_s:.4g} s/step (p10 {float(extra['step_time_p10_s']):.4g}, "
                   f"p90 {float(extra['step_time_p90_s']):.4g}), mem {row.mem_gib:.3g} GiB [{outcome.wall_s:.0f} s]")
        else:
            report(f"{prefix}: {outcome.status}: {outcome.error} [{outcome.wall_s:.0f} s]")
    return counts
