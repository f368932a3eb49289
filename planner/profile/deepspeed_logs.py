"""Parse training logs into what they say about a run: DeepSpeed (0.10-0.19) and Megatron-LM lines.

Recognised, anywhere in a line (launcher prefixes such as "[default0]:" or timestamps are ignored):

DeepSpeed
  wall_clock_breakdown  `[Rank 0] time (ms) | fwd: 0.62 | bwd: 6.63 | bwd_inner: 0.86 | bwd_allreduce: 5.77 | step: 4.41`
                        (older releases: forward / backward / backward_inner / backward_allreduce / step)
  ThroughputTimer       `epoch=0/micro_step=20/global_step=20, RunningAvgSamplesPerSec=..., CurrSamplesPerSec=...,
                        MemAllocated=0.5GB, MaxMemAllocated=1.2GB`
  see_memory_usage      `MA 0.12 GB         Max_MA 0.45 GB         CA ... Max_CA ...`
  flops profiler        the "DeepSpeed Flops Profiler" summary (`world size:`, `iter latency:`, `FLOPS per GPU = ...`)
  version               `DeepSpeed info: version=0.19.8, git-hash=...` (deepspeed/__init__.py, at initialize)
  engine config         `[config.py:NNN:print]   train_batch_size ............. 4` and the user config after
                        `[config.py:NNN:print_user_config]   json = {` (multi-line JSON); the groups summary
                        (`self.dp_world_size=2`, `self.mp_world_size=1`, `self.sequence_parallel_size=1`)
Megatron-LM
  iterations            ` iteration       10/     100 | consumed samples: ... | elapsed time per iteration (ms): 1234.5 |
                        throughput per GPU (TFLOP/s/GPU): 150.3 | ... | global batch size:   512 | ...`
                        (Megatron-DeepSpeed writes `TFLOPs: 150.30`)
  arguments             the `------ arguments ------` block (`  num_layers ........... 24`)
  memory                `(after 10 iterations) memory (MB) | allocated: ... | max allocated: 2345.6 | ...`
  vocabulary            ` > padded vocab (size: 50257) with 47 dummy tokens (new size: 50304)`: the model's vocabulary,
                        printed when the tokenizer is built, after the arguments block (which shows padded_vocab_size
                        only when it was given)

A line that looks like one of these but cannot be read is a `LogProblem` (file:line, reason) and is
skipped; the rest of the log is still used. So is a time or rate that is NaN, infinite or negative
(or zero, for a step's elapsed time or a rate): it is never a measurement. All times are converted
to seconds, memory to GiB.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import PlannerInputError

# Older DeepSpeed timer names -> current ones.
TIMER_ALIASES = {"forward": "fwd", "backward": "bwd", "backward_inner": "bwd_inner", "backward_allreduce": "bwd_allreduce"}
SI_PREFIX = {"T": 1e12, "G": 1e9, "M": 1e6, "K": 1e3, "B": 1e9, "m": 1e-3, "u": 1e-6, "": 1.0}

_TIMER = re.compile(r"time \(ms\)\s*\|(.*)$")
_THROUGHPUT = re.compile(
    r"global_step=(\d+), RunningAvgSamplesPerSec=([^,]+), CurrSamplesPerSec=([^,]+), "
    r"MemAllocated=([^,]+?)GB, MaxMemAllocated=([^,\s]+?)GB")
_SEE_MEMORY = re.compile(r"\bMA ([\d.]+) GB\s+Max_MA ([\d.]+) GB")
_DS_CONFIG = re.compile(r"\[config\.py:\d+:print\]\s+(\w+) \.* ?(.*?)\s*$")
_DS_GROUPS = re.compile(r"^\s*self\.(dp_world_size|mp_world_size|sequence_parallel_size)=(\d+)\s*$")
_DS_VERSION = re.compile(r"DeepSpeed info: version=(\d+)\.(\d+)\.(\d+)")
_DS_JSON = re.compile(r"\[config\.py:\d+:print_user_config\]\s+json = (.*)$")
_FLOPS_FIELD = re.compile(r"(?:^|[\s:\]])(world size|data parallel size|model parallel size|batch size per GPU|params per GPU|"
                          r"fwd latency|bwd latency|step latency|iter latency|samples/second|"
                          r"FLOPS per GPU = [\d.]+ \* fwd flops per GPU / iter latency)\s*:\s+(\S.*?)\s*$")
_MEGATRON_ITERATION = re.compile(r"\biteration\s+(\d+)\s*/\s*(\d+)\s*\|(.*)$")
_MEGATRON_ARG = re.compile(r"\s(\w+) \.{2,} (.*?)\s*$")
# megatron/training/vocab_utils.py:36 and megatron/core/tokenizers/utils/build_tokenizer.py:142 (NVIDIA/Megatron-LM
# @d98e8a64), megatron/tokenizer/tokenizer.py:68 (deepspeedai/Megatron-DeepSpeed).
_MEGATRON_PADDED_VOCAB = re.compile(r"> padded vocab \(size: \d+\) with \d+ dummy tokens \(new size: (\d+)\)")
_MEGATRON_MEMORY = re.compile(r"memory \(MB\)\s*\|.*max allocated:\s*([\d.]+)")


@dataclass(frozen=True)
class LogProblem:
    origin: str  # "file:line"
    reason: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.reason}"


@dataclass
class ParsedLog:
    """Everything recognised in one log, each measurement with the line it came from."""

    path: str
    timers: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # global (per optimizer step), s
    micro_timers: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # per micro-step, s
    throughput: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    max_memory_gib: list[tuple[int, float]] = field(default_factory=list)
    flops_profile: dict[str, float] = field(default_factory=dict)
    ds_config: dict[str, str] = field(default_factory=dict)
    ds_user_config: dict | None = None
    ds_version: tuple[int, int, int] | None = None
    megatron_iterations: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    megatron_args: dict[str, str] = field(default_factory=dict)
    padded_vocab: int | None = None  # Megatron's "padded vocab (... new size: N)" line
    problems: list[LogProblem] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # where each Megatron argument / DeepSpeed config key was printed

    def problem(self, line: int, reason: str) -> None:
        self.problems.append(LogProblem(f"{self.path}:{line}", reason))


def si_value(text: str) -> float:
    """'1.23 s' -> 1.23, '456.7 ms' -> 0.4567, '29.52 M' -> 2.952e7, '45.6 TFLOPS' -> 4.56e13, '1.2 B' -> 1.2e9."""
    parts = text.strip().split(None, 1)
    number = float(parts[0])
    rest = parts[1] if len(parts) > 1 else ""
    if rest and rest[0] in SI_PREFIX and rest not in ("s", "FLOPS", "MACs") and not rest.startswith("FLOP"):
        return number * SI_PREFIX[rest[0]]
    return number


def _parse_timer_line(log: ParsedLog, number: int, body: str) -> None:
    values: dict[str, float] = {}
    for item in body.split("|"):
        if not item.strip():
            continue
        name, sep, value = item.partition(":")
        name = name.strip()
        try:
            if not sep:
                raise ValueError
            milliseconds = float(value)
        except ValueError:
            log.problem(number, f"wall_clock_breakdown entry {item.strip()!r} is not 'name: milliseconds'; line skipped")
            return
        if not math.isfinite(milliseconds) or milliseconds < 0:  # a timer can read 0 (nothing to reduce), never less
            log.problem(number, f"wall_clock_breakdown entry {item.strip()!r} is not a finite, non-negative time; "
                                "line skipped")
            return
        values[TIMER_ALIASES.get(name, name)] = milliseconds / 1000.0
    if any(name.endswith("_microstep") for name in values):
        log.micro_timers.append((number, {k.removesuffix("_microstep"): v for k, v in values.items()}))
    elif "fwd" in values or "bwd" in values:
        log.timers.append((number, values))


def _parse_throughput(log: ParsedLog, number: int, match: re.Match) -> None:
    try:
        entry = {"global_step": float(match.group(1)), "running_samples_per_s": float(match.group(2)),
                 "samples_per_s": float(match.group(3)), "mem_gib": float(match.group(4)),
                 "max_mem_gib": float(match.group(5))}
    except ValueError:
        log.problem(number, "ThroughputTimer line has a non-numeric field; line skipped")
        return
    if not math.isfinite(entry["samples_per_s"]) or entry["samples_per_s"] <= 0:
        log.problem(number, f"CurrSamplesPerSec={match.group(3)} is not a positive finite rate; line skipped")
        return
    if not all(math.isfinite(entry[k]) and entry[k] >= 0 for k in ("mem_gib", "max_mem_gib", "running_samples_per_s")):
        log.problem(number, "ThroughputTimer line has a negative or non-finite field; line skipped")
        return
    log.throughput.append((number, entry))
    log.max_memory_gib.append((number, entry["max_mem_gib"]))


def _parse_megatron_iteration(log: ParsedLog, number: int, match: re.Match) -> None:
    fields: dict[str, str] = {}
    for item in match.group(3).split("|"):
        key, sep, value = item.rpartition(":")
        if sep:
            fields[key.strip()] = value.strip()
    entry: dict[str, float] = {"iteration": float(match.group(1))}
    keys = {"elapsed time per iteration (ms)": "elapsed_s", "throughput per GPU (TFLOP/s/GPU)": "tflops",
            "TFLOPs": "tflops", "TFLOP/s": "tflops", "global batch size": "global_batch",
            "consumed samples": "consumed_samples"}
    for key, name in keys.items():
        if key in fields:
            try:
                entry[name] = float(fields[key])
            except ValueError:
                log.problem(number, f"Megatron field '{key}' has value {fields[key]!r}, not a number; line skipped")
                return
    if "elapsed_s" not in entry:
        log.problem(number, "Megatron iteration line has no 'elapsed time per iteration (ms)' (truncated?); line skipped")
        return
    if not all(math.isfinite(v) for v in entry.values()) or entry["elapsed_s"] <= 0:
        bad = "elapsed time per iteration (ms)" if not (math.isfinite(entry["elapsed_s"]) and entry["elapsed_s"] > 0) \
            else next(key for key, name in keys.items() if key in fields and not math.isfinite(entry[name]))
        log.problem(number, f"Megatron field '{bad}' has value {fields.get(bad)!r}, not a positive finite number; line skipped")
        return
    entry["elapsed_s"] /= 1000.0
    log.megatron_iterations.append((number, entry))


def _memory(log: ParsedLog, number: int, text: str, to_gib: float, what: str) -> None:
    try:
        value = float(text) * to_gib
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        log.problem(number, f"{what} value {text!r} is not a finite, non-negative number; ignored")
        return
    log.max_memory_gib.append((number, value))


def _read_json_block(log: ParsedLog, lines: list[str], start: int, first: str) -> int:
    """Collect the multi-line JSON that DeepSpeed prints after 'json = '; returns the last line index used."""
    chunks, depth, index = [first], first.count("{") - first.count("}"), start
    while depth > 0 and index + 1 < len(lines):
        index += 1
        chunks.append(lines[index])
        depth += lines[index].count("{") - lines[index].count("}")
    try:
        log.ds_user_config = json.loads("\n".join(chunks))
    except ValueError:
        log.problem(start + 1, "DeepSpeed user config JSON is truncated or malformed; ignored")
        return start
    return index


def parse_log_text(text: str, path: str) -> ParsedLog:
    log = ParsedLog(path=path)
    lines = text.splitlines()
    in_megatron_args = in_flops = False
    index = 0
    while index < len(lines):
        line, number = lines[index], index + 1
        if "---- arguments ----" in line or "-- arguments --" in line:
            in_megatron_args = True
        elif "end of arguments" in line:
            in_megatron_args = False
        elif match := _MEGATRON_PADDED_VOCAB.search(line):
            log.padded_vocab = int(match.group(1))
            log.lines["padded vocab"] = number
        elif in_megatron_args and (match := _MEGATRON_ARG.search(line)):
            log.megatron_args[match.group(1)] = match.group(2)
            log.lines[match.group(1)] = number
        elif "DeepSpeed Flops Profiler" in line:
            in_flops = True
        elif in_flops and (match := _FLOPS_FIELD.search(line)):
            name = "flops_per_gpu" if match.group(1).startswith("FLOPS per GPU") else match.group(1)
            try:
                value = si_value(match.group(2))
            except ValueError:
                log.problem(number, f"flops profiler '{match.group(1)}' value {match.group(2)!r} is not a number; skipped")
            else:
                if math.isfinite(value) and value >= 0 and not (name.endswith("latency") and value == 0):
                    log.flops_profile[name] = value
                    log.lines[f"flops profiler {name}"] = number
                else:
                    log.problem(number, f"flops profiler '{match.group(1)}' value {match.group(2)!r} is not a "
                                        f"{'positive' if name.endswith('latency') else 'non-negative'} finite number; skipped")
        elif match := _TIMER.search(line):
            _parse_timer_line(log, number, match.group(1))
        elif match := _THROUGHPUT.search(line):
            _parse_throughput(log, number, match)
        elif "CurrSamplesPerSec=" in line:
            log.problem(number, "ThroughputTimer line is incomplete (truncated?); line skipped")
        elif match := _SEE_MEMORY.search(line):
            _memory(log, number, match.group(2), 1.0, "see_memory_usage Max_MA")
        elif match := _DS_VERSION.search(line):
            log.ds_version = tuple(int(part) for part in match.groups())
            log.lines["deepspeed version"] = number
        elif match := _DS_JSON.search(line):
            index = _read_json_block(log, lines, index, match.group(1))
        elif match := _DS_GROUPS.search(line):  # the engine's "distributed groups summary"
            log.ds_config[match.group(1)] = match.group(2)
            log.lines[match.group(1)] = number
        elif match := _DS_CONFIG.search(line):
            log.ds_config[match.group(1)] = match.group(2)
            log.lines[match.group(1)] = number
        elif match := _MEGATRON_ITERATION.search(line):
            _parse_megatron_iteration(log, number, match)
        elif match := _MEGATRON_MEMORY.search(line):
            _memory(log, number, match.group(1), 1.0 / 1024.0, "Megatron 'max allocated'")
        index += 1
    return log


def parse_log_file(path: str | Path) -> ParsedLog:
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise PlannerInputError(f"{source}: no such log file")
    except OSError as error:
        raise PlannerInputError(f"{source}: cannot read log ({error.__class__.__name__})")
    return parse_log_text(text, str(source))
