"""How fast the fixed-model layout search scores GPT-3 175B on 64 A100-80GB (batch 1536, fp16), against Calculon.

The case is Calculon's (github calculon-ai/calculon, `llm-optimal-execution`): its models/gpt3-175B.json
on 64 GPUs of systems/a100_80g.json, max batch 1536, float16. Here the same case goes through
`planner.search.layouts.search_layouts` (enumeration + memory + step time of every layout, the best picked).

Run as a script (prints layouts scored, the best of 3 in-process timings, layouts/s, the best layout, one
wall-clock timing of `planner optimize --model gpt3-175b --gpus 64 ...` where the CLI has it, and a table
of Calculon's search dimensions against this search's):

    python benchmarks/bench_fixed_model.py
    python benchmarks/bench_fixed_model.py --frameworks megatron deepspeed fsdp

With `--calculon DIR` (an installed Calculon: a virtualenv, a `pip install --target` folder or a source
checkout; its dependencies numpy, pandas and psutil importable from there) Calculon runs side by side in
the same benchmark run, as subprocesses with its logging muted: first `llm-optimal-execution -d` (its
own loop without evaluating anything) for the exact number of executions its search holds, then the real
command on every STRIDE-th of its outer (tp, pp, interleaving, recompute, sharding, comm type) tasks,
timed; executions/s from that sample, and the whole search's time extrapolated from it. Its full search
takes hours on 2 cores (about 10.5 M executions at a few hundred per second), hence the sample;
`--calculon-stride 1` runs it whole. Then the ratio of the two rates:

    python -m venv --system-site-packages /tmp/calculon-venv
    /tmp/calculon-venv/bin/pip install pandas && /tmp/calculon-venv/bin/pip install --no-deps /tmp/calculon
    python benchmarks/bench_fixed_model.py --calculon /tmp/calculon-venv --calculon-inputs /tmp/calculon

or through pytest-benchmark (not collected by the default `pytest` run, whose testpaths is tests/):

    pytest benchmarks/bench_fixed_model.py --benchmark-enable

Targets (issue 13): `planner optimize --model gpt3-175b --gpus 64 --global-batch 1536 --cluster
dgx-a100-80gb --dtype fp16` answers in <= 1.5 s wall on the 2-core development machine, and the search
scores layouts at >= 1,000x Calculon's executions/s on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from planner.specs.clusters import load_cluster
from planner.specs.model import preset
from planner.search.layouts import search_layouts

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks share one timing helper
from bench_optimize import best_of  # noqa: E402

MODEL, CLUSTER, GPUS, GLOBAL_BATCH, DTYPE = "gpt3-175b", "dgx-a100-80gb", 64, 1536, "fp16"
CALCULON_MODEL, CALCULON_SYSTEM, CALCULON_DTYPE = "models/gpt3-175B.json", "systems/a100_80g.json", "float16"
TARGET_CLI_S = 1.5
TARGET_RATIO = 1000.0
DEFAULT_STRIDE = 236  # 10 of Calculon's 2,358 outer tasks for this case: a sample of about 40,000 executions

# Calculon's search dimensions (calculon/llm/optimal_execution.py and llm.py at caa4b11, 2024-02-22) and
# what this search has for each.
SPACE = (
    ("tensor_par", "optimal_execution.py:80; llm.py:212: divisors of procs dividing hidden and heads (1-32 here)",
     "tp: divisors of heads (and kv heads) up to 64, across nodes: same set here"),
    ("pipeline_par", "optimal_execution.py:82; llm.py:218: divisors of procs/tp dividing the blocks",
     "pp: divisors of gpus/(tp x cp) up to the depth, uneven stages too (adds pp 64 here)"),
    ("data_par", "optimal_execution.py:84: procs / (tp x pp)", "dp: gpus / (tp x cp x pp)"),
    ("pipeline_interleaving", "optimal_execution.py:85; llm.py:233: divisors of blocks/pp (up to 48 here)",
     "every vpp with pp x vpp dividing the depth: same set"),
    ("batch_size", "optimal_execution.py:86,165: largest multiple of dp <= max batch",
     "global batch fixed (1536); dp must divide it"),
    ("microbatch_size", "optimal_execution.py:205; llm.py:242: every divisor of the local batch (mbs x seq % tp == 0)",
     "every divisor of the per-replica batch: same set"),
    ("activation_recompute", "optimal_execution.py:89: full, attn_only, none", "recompute full, selective, none"),
    ("optimizer_sharding", "optimal_execution.py:90: on/off with dp > 1", "ZeRO 1 (and ZeRO 2, 3 beyond it)"),
    ("tensor_par_comm_type", "optimal_execution.py:91: ar, p2p_rs_ag, rs_ag",
     "seq_parallel off = all-reduce, on = reduce-scatter/all-gather; p2p_rs_ag not modelled"),
    ("seq_par_ag_redo", "optimal_execution.py:189; llm.py:252: redo the all-gather in backward (rs_ag, recompute != full)",
     "not modelled"),
    ("data_par_overlap", "optimal_execution.py:192: on/off with dp > 1", "dp_comm_overlap on/off"),
    ("tensor_par_overlap", "optimal_execution.py:194: none, ring, pipe with tp > 1",
     "tp_comm_overlap on/off (one overlapped schedule, no ring/pipe choice)"),
    ("weight_offload", "optimal_execution.py:196: on/off (system has mem2)",
     "offload optimizer+params with ZeRO-3 only; no weight offload on its own"),
    ("activations_offload", "optimal_execution.py:197: on/off unless recompute full", "not modelled"),
    ("optimizer_offload", "optimal_execution.py:202: on/off", "offload optimizer (ZeRO 2/3)"),
    ("fused_activation", "optimal_execution.py:204 (-f, default true only)", "not a dimension (fixed per framework)"),
    ("tensor/pipeline/data_par_net", "optimal_execution.py:208-210: which of the 2 networks each group uses",
     "not searched: groups placed in Megatron rank order, links from the span (planner.specs.topology)"),
    ("(none)", "no context parallelism, no ZeRO 2/3, no framework", "cp 1-16, ZeRO 0-3, megatron/deepspeed/fsdp"),
)

# Runs inside Calculon's interpreter: `llm-optimal-execution` through Calculon's own argument parser and
# run_command, logging muted (root logger at CRITICAL; the command's own summary lines captured), its
# process pool fed every STRIDE-th of the tasks run_command builds. Prints one JSON line.
DRIVER = r"""
import json, logging, sys, time
started = time.perf_counter()
import argparse
import calculon
from calculon.llm import optimal_execution
app, system, procs, batch, dtype, out, cpus, stride, debug = sys.argv[1:10]
stride, debug = int(stride), debug == "1"
logging.getLogger().setLevel(logging.CRITICAL)
lines = []
class Capture(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())
command_logger = logging.Logger("calculon-command", logging.INFO)
command_logger.addHandler(Capture())
sample = {}
RealPool = optimal_execution.mp.Pool
class SampledPool:
    def __init__(self, processes):
        self.pool = RealPool(processes)
    def __enter__(self):
        self.pool.__enter__()
        return self
    def __exit__(self, *exc):
        return self.pool.__exit__(*exc)
    def starmap(self, function, tasks):
        chosen = tasks[stride // 2::stride] if stride > 1 else tasks
        sample.update(tasks=len(tasks), sampled_tasks=len(chosen))
        return self.pool.starmap(function, chosen)
optimal_execution.mp.Pool = SampledPool
parser = argparse.ArgumentParser()
sub = parser.add_subparsers(dest="command")
for cls in calculon.CommandLine.command_lines():
    cls.create_parser(sub)
argv = ["llm-optimal-execution", app, procs, batch, dtype, system, out, "-c", cpus, "-n"] + (["-d"] if debug else [])
args = parser.parse_args(argv)
rc = args.func(command_logger, args)
def figure(label):
    for line in lines:
        if line.startswith(label + ":"):
            return float(line.split(":")[1].split()[0])
    return None
best = None
if not debug:
    try:
        with open(out) as fd:
            best = json.load(fd)["0"]["execution"]
    except Exception:
        best = None
print(json.dumps({"rc": rc, "executions": figure("Total executions"), "good": figure("Good executions"),
                  "bad": figure("Bad executions"), "rate": figure("Calculation rate"), "cpus": args.cpus,
                  "wall_s": time.perf_counter() - started, "best": best, **sample}))
"""

# Runs inside Calculon's interpreter: its (tp, pp, dp, interleaving, micro-batch) placements for the case,
# from the same Llm helpers its search loops over.
PLACEMENTS = r"""
import json, sys
from calculon.llm import Llm
procs, batch = int(sys.argv[1]), int(sys.argv[2])
app = Llm.Application(json.load(open(sys.argv[3])))
rows = []
for tp in Llm.get_all_tensor_parallelisms(procs, app.hidden, app.attn_heads):
    for pp in Llm.get_all_pipeline_parallelisms(procs, tp, app.num_blocks):
        dp = Llm.get_data_parallelism(procs, tp, pp)
        for v in Llm.get_valid_pipeline_interleavings(app.num_blocks, pp):
            local = (batch // dp) * dp  # get_batch_size: the largest multiple of dp <= batch
            rows += [(tp, pp, dp, v, m) for m in Llm.get_valid_microbatch_sizes(app.seq_size, tp, dp, local, pp)]
print(json.dumps(rows))
"""


def search(frameworks: tuple[str, ...]):
    return search_layouts(preset(MODEL), load_cluster(CLUSTER), GPUS, global_batch=GLOBAL_BATCH,
                          frameworks=frameworks, dtype=DTYPE)


def cli_wall(repeats: int) -> tuple[list[float] | None, str]:
    """Wall seconds of each of `repeats` runs of the issue's `planner optimize --model ...` command (a fresh
    process each), or None and why not."""
    planner_cli = shutil.which("planner")
    flags = ["optimize", "--model", MODEL, "--gpus", str(GPUS), "--global-batch", str(GLOBAL_BATCH),
             "--cluster", CLUSTER, "--dtype", DTYPE]
    command = ([planner_cli] if planner_cli else [sys.executable, "-m", "planner.cli"]) + flags
    shown = "planner " + " ".join(flags)
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        walls.append(time.perf_counter() - start)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            return None, f"`{shown}` exited {done.returncode}: {last}"
    return walls, shown


def calculon_python(directory: Path) -> tuple[str, dict]:
    """The interpreter and environment that import the Calculon installed in `directory`."""
    env = dict(os.environ)
    for candidate in (directory / "bin" / "python", directory / "bin" / "python3"):
        if candidate.exists():
            return str(candidate), env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(directory), env.get("PYTHONPATH", "")]))
    return sys.executable, env


def run_calculon(directory: Path, inputs: Path, stride: int, cpus: int | None, timeout: float) -> dict:
    python, env = calculon_python(directory)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_fixed_model_calculon_{os.getpid()}.json"
    if not cpus:  # Calculon's default -c: the physical cores
        cpus = int(subprocess.run([python, "-c", "import psutil; print(psutil.cpu_count(logical=False))"],
                                  env=env, capture_output=True, text=True, check=True).stdout)

    def once(sample_stride: int, debug: bool) -> dict:
        argv = [python, "-c", DRIVER, str(inputs / CALCULON_MODEL), str(inputs / CALCULON_SYSTEM), str(GPUS),
                str(GLOBAL_BATCH), CALCULON_DTYPE, str(out), str(cpus), str(sample_stride), "1" if debug else "0"]
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"calculon run failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        report["process_wall_s"] = wall
        return report

    placements = subprocess.run([python, "-c", PLACEMENTS, str(GPUS), str(GLOBAL_BATCH), str(inputs / CALCULON_MODEL)],
                                env=env, capture_output=True, text=True, check=True).stdout
    try:
        count = once(1, debug=True)
        sample = once(stride, debug=False)
    finally:
        out.unlink(missing_ok=True)
    return {"count": count, "sample": sample, "placements": {tuple(row) for row in json.loads(placements)}}


def print_space() -> None:
    print("\nsearch space: Calculon llm-optimal-execution (file:line at caa4b11) -> this search")
    width = max(len(name) for name, _, _ in SPACE)
    for name, theirs, ours in SPACE:
        print(f"  {name:<{width}}  {theirs}")
        print(f"  {'':<{width}}  -> {ours}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", nargs="+", default=["megatron"],
                        help="stacks searched (default megatron, the execution Calculon models)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cli", action="store_true", help="skip the `planner optimize --model` wall-clock timing")
    parser.add_argument("--calculon", type=Path, metavar="DIR", help="an installed Calculon: run it side by side")
    parser.add_argument("--calculon-inputs", type=Path, metavar="SRC",
                        help="folder with Calculon's models/ and systems/ (default: DIR, else /tmp/calculon)")
    parser.add_argument("--calculon-stride", type=int, default=DEFAULT_STRIDE,
                        help=f"time every STRIDE-th of Calculon's outer tasks (default {DEFAULT_STRIDE}; 1 = all)")
    parser.add_argument("--calculon-cpus", type=int, help="Calculon's -c (default: its own, physical cores)")
    parser.add_argument("--calculon-timeout", type=float, default=900.0, help="seconds allowed per Calculon run")
    args = parser.parse_args(argv)
    frameworks = tuple(args.frameworks)

    search(frameworks)  # warm-up: imports, cluster and topology caches
    seconds, result = best_of(lambda: search(frameworks), args.repeats)
    rate = len(result) / seconds
    print(f"case: {MODEL} on {GPUS} x {CLUSTER}, global batch {GLOBAL_BATCH}, {DTYPE}, frameworks {','.join(frameworks)}")
    print(f"layouts scored: {len(result):,} ({int(result.fits.sum()):,} fit memory)")
    print(f"search_layouts: best of {args.repeats}: {seconds:.3f} s ({rate:,.0f} layouts/s)")
    if result.best is not None:
        row = result.rows([result.best])[0]
        print(f"best: {row['framework']} tp {row['tp']} pp {row['pp']} vpp {row['vpp']} cp {row['cp']} dp {row['dp']} "
              f"micro-batch {row['micro_batch']} ZeRO {row['zero']} offload {row['offload']} "
              f"recompute {row['recompute']} seq-parallel {row['seq_parallel']} tp-overlap {row['tp_comm_overlap']} "
              f"dp-overlap {row['dp_comm_overlap']}: {row['step_time_s']:.1f} s/step, MFU {row['mfu']:.3f}, "
              f"{row['memory_gib']:.1f} GiB")
    met = True
    if not args.no_cli:
        walls, what = cli_wall(args.repeats)
        if walls is None:
            print(f"CLI: not timed: {what}")
        else:
            print(f"CLI: {what} (its default stacks): best of {args.repeats}: {min(walls):.2f} s wall "
                  f"({', '.join(f'{w:.2f}' for w in walls)}; target <= {TARGET_CLI_S} s)")
            met &= min(walls) <= TARGET_CLI_S

    if args.calculon:
        inputs = args.calculon_inputs
        if inputs is None:
            inputs = args.calculon if (args.calculon / CALCULON_MODEL).exists() else Path("/tmp/calculon")
        calc = run_calculon(args.calculon, inputs, args.calculon_stride, args.calculon_cpus, args.calculon_timeout)
        count, sample = calc["count"], calc["sample"]
        executions = int(count["executions"])
        sampled = int(sample["executions"])
        calc_rate = sample["rate"]  # its own "Calculation rate": executions / seconds of its process pool
        print(f"\nCalculon llm-optimal-execution {inputs / CALCULON_MODEL} {GPUS} {GLOBAL_BATCH} {CALCULON_DTYPE} "
              f"{inputs / CALCULON_SYSTEM} (-c {sample['cpus']}, logging muted)")
        print(f"  executions in its search: {executions:,} (its -d loop, {count['tasks']:,} outer tasks, "
              f"{count['process_wall_s']:.1f} s)")
        whole = "whole search" if sample["sampled_tasks"] == sample["tasks"] else \
            f"sample: every {args.calculon_stride}th outer task, {sample['sampled_tasks']} of {sample['tasks']}"
        print(f"  timed ({whole}): {sampled:,} executions ({int(sample['good']):,} good) in "
              f"{sampled / calc_rate:.1f} s of its pool ({sample['process_wall_s']:.1f} s process wall): "
              f"{calc_rate:,.0f} executions/s")
        if sample["best"]:
            b = sample["best"]
            print(f"  its best in that run: tp {b['tensor_par']} pp {b['pipeline_par']} dp {b['data_par']} "
                  f"interleave {b['pipeline_interleaving']} micro-batch {b['microbatch_size']} "
                  f"recompute {b['activation_recompute']} comm {b['tensor_par_comm_type']}")
        print(f"  whole search at that rate: {executions / calc_rate / 3600:.1f} h")
        keys = ("tp", "pp", "dp", "vpp", "micro_batch")
        a = result.arrays
        ours = {row for row, cp in zip(zip(*(a[k].tolist() for k in keys)), a["cp"].tolist()) if cp == 1}
        theirs = calc["placements"]
        missing = theirs - ours
        print(f"  its (tp, pp, dp, interleaving, micro-batch) placements: {len(theirs):,}; here (cp 1): {len(ours):,}; "
              f"{len(theirs) - len(missing):,} of its in this space, {len(missing):,} not "
              f"({sum(1 for r in missing if r[3] > 16):,} with interleaving > 16, "
              f"{sum(1 for r in missing if r[4] > 64):,} with micro-batch > 64), {len(ours - theirs):,} here only")
        ratio = rate / calc_rate
        print(f"\nratio: {rate:,.0f} / {calc_rate:,.0f} = {ratio:,.0f}x Calculon's layouts/s "
              f"(target >= {TARGET_RATIO:,.0f}x); whole search {executions / calc_rate:,.0f} s vs {seconds:.3f} s")
        met &= ratio >= TARGET_RATIO

    print_space()
    print("\ntarget met" if met else "\ntarget NOT met")
    return 0


def test_fixed_model_search(benchmark):
    """pytest-benchmark entry: 3 rounds of the Calculon case through search_layouts (megatron)."""
    search(("megatron",))
    result = benchmark.pedantic(search, args=(("megatron",),), rounds=3, iterations=1)
    assert len(result) > 100_000
    assert result.best is not None


if __name__ == "__main__":
    raise SystemExit(main())
