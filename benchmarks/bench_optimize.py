"""How fast `planner optimize --budget 10000gpuh` searches: candidates scored and seconds, in-process.

Run as a script (prints the best of 3 timings of `planner.cli.optimize.solve`, the whole command
minus printing: flag parsing, cluster and law loading, enumeration, vectorised scoring, selection,
runners-up and the Pareto frontier):

    python benchmarks/bench_optimize.py
    python benchmarks/bench_optimize.py --budget 1000000gpuh --cluster dgx-a100-80gb --repeats 5

or through pytest-benchmark (not collected by the default `pytest` run, whose testpaths is tests/):

    pytest benchmarks/bench_optimize.py --benchmark-enable

Target (issue 4, `planner optimize`): at least 1,000,000 candidates scored in under 5 s on the
2-core development machine, i.e. a rate above 0.2M candidates/s. Since the budget search plans for three
stacks (megatron, deepspeed, fsdp) the default command scores 4.9M candidates, about 7 s in-process.
"""

from __future__ import annotations

import argparse
import time

from planner.cli import build_parser
from planner.cli.optimize import solve

TARGET_CANDIDATES = 1_000_000
TARGET_S = 5.0


def optimize_args(budget: str, extra: list[str]):
    """The argparse namespace `planner optimize --budget BUDGET EXTRA...` would run with."""
    return build_parser().parse_args(["optimize", "--budget", budget, *extra])


def best_of(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="10000gpuh")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="more `planner optimize` flags, after --, e.g. -- --cluster dgx-b200")
    args = parser.parse_args(argv)

    optimize_flags = optimize_args(args.budget, args.extra)
    seconds, result = best_of(lambda: solve(optimize_flags), args.repeats)
    plan = result.plan
    print(f"planner optimize --budget {args.budget} {' '.join(args.extra)}".rstrip())
    print(f"candidates scored: {result.scored:,} ({result.skipped_invalid:,} invalid combinations never scored), "
          f"{result.assumptions['models_searched']} model shapes")
    print(f"solve: best of {args.repeats}: {seconds:.2f} s ({result.scored / seconds / 1e6:.2f} M candidates/s); "
          f"target >= {TARGET_CANDIDATES / 1e6:.0f}M candidates in < {TARGET_S:.0f} s")
    if plan is not None:
        print(f"chosen: {plan['params'] / 1e9:.1f}B params, {plan['tokens'] / 1e9:.0f}B tokens, {plan['gpus']} GPUs, "
              f"loss {plan['predicted_loss']:.3f}")
    # The target is a rate: 1M candidates in under 5 s. The default search has scored more than 1M since it
    # searches three stacks (4.9M), so the whole solve can take longer than 5 s while the rate holds; both
    # figures are printed above.
    met = result.scored >= TARGET_CANDIDATES and result.scored / seconds > TARGET_CANDIDATES / TARGET_S
    print("target met (rate)" if met else "target NOT met")
    return 0


def test_optimize_10000_gpu_hours(benchmark):
    """pytest-benchmark entry: 3 rounds of the default `planner optimize --budget 10000gpuh`."""
    flags = optimize_args("10000gpuh", [])
    result = benchmark.pedantic(solve, args=(flags,), rounds=3, iterations=1)
    assert result.status == "ok"
    assert result.scored >= TARGET_CANDIDATES


if __name__ == "__main__":
    raise SystemExit(main())
