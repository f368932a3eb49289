"""How long `planner validate` (and `planner doctor`) take on a large runs CSV, and how much memory.

Builds a runs CSV of `--rows` rows by repeating the rows of data/runs/published_runs_dev.csv
(each copy gets a unique id, so nothing is a duplicate), then runs the command in a child process and
reports its wall time and peak resident memory (`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`, the
high-water mark of the child, in KiB on Linux). Output of the command goes to /dev/null.

    python benchmarks/bench_validate_stream.py                      # validate, 200,000 rows
    python benchmarks/bench_validate_stream.py --rows 20000 --command doctor
    python benchmarks/bench_validate_stream.py --rows 1000000 --keep /tmp/runs_1m.csv   # near the 256 MiB cap

Issue 12 item 18 measured 225 s and 1.9 GB for 200,000 rows (51 MB) before streaming; see
benchmarks/README.md for the figures after.
"""

from __future__ import annotations

import argparse
import csv
import io
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEV_FILE = Path(__file__).resolve().parents[1] / "data" / "runs" / "published_runs_dev.csv"


def dev_file() -> Path:
    """The dev file: data/ in the checkout, or /work/shared as a fallback."""
    for candidate in (DEV_FILE, Path("/work/data/runs/published_runs_dev.csv")):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"cannot find published_runs_dev.csv (looked at {DEV_FILE})")


def write_big_csv(path: Path, rows: int, source: Path) -> int:
    """`rows` rows cycling through the rows of `source`, ids made unique; returns the file size in bytes."""
    with open(source, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        header, template = list(reader.fieldnames or []), list(reader)
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, header, lineterminator="\n")
        writer.writeheader()
        buffer = io.StringIO()
        chunk = csv.DictWriter(buffer, header, lineterminator="\n")
        for i in range(rows):
            row = dict(template[i % len(template)])
            row["id"] = f"{row['id']}-{i}"
            chunk.writerow(row)
            if buffer.tell() > 1 << 20:
                out.write(buffer.getvalue())
                buffer.seek(0)
                buffer.truncate()
        out.write(buffer.getvalue())
    return path.stat().st_size


def run_child(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS of the child in MiB, exit code) of one command, its stdout discarded."""
    start = time.perf_counter()
    completed = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    if completed.returncode not in (0, 1):
        sys.stderr.write(completed.stderr[-2000:])
    return seconds, peak_kib / 1024, completed.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--command", choices=("validate", "doctor"), default="validate")
    parser.add_argument("--keep", metavar="FILE.csv", help="write the generated CSV here and keep it")
    parser.add_argument("--json", action="store_true", help="run `validate --json` (validate only)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        path = Path(args.keep) if args.keep else Path(folder) / f"runs_{args.rows}.csv"
        size = write_big_csv(path, args.rows, dev_file())
        command = [sys.executable, "-m", "planner.cli", args.command, str(path)]
        if args.json and args.command == "validate":
            command.append("--json")
        seconds, peak_mib, code = run_child(command)
    print(f"planner {args.command}{' --json' if args.json else ''} on {args.rows:,} rows ({size / 2**20:.1f} MiB): "
          f"{seconds:.1f} s, peak RSS {peak_mib:.0f} MiB, exit {code}")
    return 0 if code in (0, 1) else code


if __name__ == "__main__":
    raise SystemExit(main())
