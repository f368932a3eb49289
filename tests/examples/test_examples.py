"""Every example's README runs as written and still says what the planner prints.

A README's ```console blocks hold `$ planner ...` commands, each followed by the output lines the README
quotes. The test copies the example folder to a temporary directory, runs the commands in order there
(later commands may use files earlier ones wrote) and checks that the quoted lines appear in the output in
order. Lines may be left out; a quoted line ending in "..." matches any line that starts that way; "..."
alone is a visual gap. Numbers match within NUMBER_TOLERANCE so a small cost-model change does not
churn the READMEs, while a different plan (another GPU count, layout or model size) still fails.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NUMBER_TOLERANCE = 0.03  # relative; see the module docstring
NUMBER = re.compile(r"(?<![\w.])([-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?)")
COMMAND_TIMEOUT_S = 300


def example_dirs() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if (p / "README.md").is_file())


def console_blocks(readme: str) -> list[list[tuple[str, list[str]]]]:
    """[(command, quoted output lines)] per ```console block, in README order."""
    blocks = []
    for body in re.findall(r"```console\n(.*?)```", readme, flags=re.S):
        steps: list[tuple[str, list[str]]] = []
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                command = line[2:]
                while command.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command[:-1] + " " + lines[i].strip()
                steps.append((command, []))
            elif steps and line.strip() and line.strip() != "...":
                steps[-1][1].append(line)
            i += 1
        blocks.append(steps)
    return blocks


def tokens(line: str) -> list:
    """Text pieces (whitespace collapsed) and numbers (floats), alternating."""
    parts = NUMBER.split(line)
    out = []
    for index, part in enumerate(parts):
        if index % 2:
            out.append(float(part.replace(",", "")))
        else:
            text = " ".join(part.split())
            if text or index == 0:
                out.append(text)
    return out


def _numbers_match(expected: float, actual: float) -> bool:
    return math.isclose(expected, actual, rel_tol=NUMBER_TOLERANCE, abs_tol=1e-9)


def line_matches(expected: str, actual: str) -> bool:
    prefix = expected.rstrip().endswith("...")
    want = tokens(expected.rstrip().removesuffix("...") if prefix else expected)
    have = tokens(actual)
    if prefix:
        have = have[: len(want)]
    if len(want) != len(have):
        return False
    for index, (w, h) in enumerate(zip(want, have)):
        if isinstance(w, float) != isinstance(h, float):
            return False
        if isinstance(w, float):
            if not _numbers_match(w, h):
                return False
        elif prefix and index == len(want) - 1:
            if not h.startswith(w):
                return False
        elif w != h:
            return False
    return True


def first_missing(quoted: list[str], output: str) -> str | None:
    """The first quoted line not found (in order) in the output, or None."""
    lines = output.splitlines()
    position = 0
    for line in quoted:
        while position < len(lines) and not line_matches(line, lines[position]):
            position += 1
        if position == len(lines):
            return line
        position += 1
    return None


def run_command(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a README command with this interpreter's planner (no reliance on PATH), stderr merged."""
    if command.startswith("planner "):
        command = f"{sys.executable} -m planner.cli " + command[len("planner "):]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "DS_ACCELERATOR": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLES.parent), env.get("PYTHONPATH")]))
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=COMMAND_TIMEOUT_S)


@pytest.mark.parametrize("example", example_dirs(), ids=lambda p: p.name)
def test_example_runs_and_matches_readme(example: Path, tmp_path: Path):
    work = tmp_path / example.name
    shutil.copytree(example, work)
    blocks = console_blocks((example / "README.md").read_text(encoding="utf-8"))
    steps = [step for block in blocks for step in block]
    assert steps, f"{example.name}/README.md has no ```console block with `$ planner ...` commands"
    for command, quoted in steps:
        result = run_command(command, work)
        expected_code = 1 if any(line.strip() == "[exit 1]" for line in quoted) else 0
        assert result.returncode == expected_code, f"`{command}` exited {result.returncode}:\n{result.stdout[-3000:]}"
        missing = first_missing([q for q in quoted if q.strip() != "[exit 1]"], result.stdout)
        assert missing is None, (f"{example.name}/README.md: `{command}` no longer prints\n  {missing!r}\n"
                                 f"output was:\n{result.stdout[-4000:]}")


def test_every_example_has_a_readme():
    folders = [p for p in EXAMPLES.iterdir() if p.is_dir()]
    assert folders, "no examples"
    assert all((p / "README.md").is_file() for p in folders), [p.name for p in folders if not (p / "README.md").exists()]


def test_matcher_tolerates_small_number_changes_only():
    assert line_matches("  speed      step 3.247 s, 605,414 tokens/s, MFU 49.2%",
                        "  speed      step 3.251 s, 606,000 tokens/s, MFU 49.3%")
    assert not line_matches("  layout     tp=1 pp=1 dp=96", "  layout     tp=2 pp=1 dp=48")
    assert not line_matches("hardware   96 GPUs on 12 node(s)", "hardware   128 GPUs on 16 node(s)")
    assert line_matches("cluster dgx-h100 (uncalibrated...", "cluster dgx-h100 (uncalibrated: defaults)")
    assert not line_matches("fits: yes", "fits: NO - needs 114 GiB")
