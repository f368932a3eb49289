"""Fuzzing harness: run the CLI in-process on hostile input and hold it to its contract.

The contract (planner/cli/__init__.py): a valid result (exit 0, or 1 for an infeasible plan / doctor
findings) or one line on stderr with exit 2 - never a traceback, never a Python warning, never a hang.
Every case runs in a fresh working directory holding a set of seed files (valid and broken), under a
wall-clock limit enforced with SIGALRM.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import signal
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from planner.specs.clusters import default_cluster_dir
from planner.laws.law_file import law_to_yaml
from planner.laws.published import EPOCH_2024

REPO_ROOT = Path(__file__).resolve().parents[2]
COUNTS = {"cases": 0, "cli_calls": 0}  # reported at the end of the run (the case count of the acceptance)
CASE_LIMIT_S = 30.0  # a case that runs longer is a hang (cases are built to take well under a second)


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` in the planner swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str = "the call"):
    def expire(signum, frame):
        message = f"{what}: no result after {seconds:g} s"
        print(message, file=sys.__stderr__, flush=True)  # live with -s: shrinking a hang takes minutes
        raise Hang(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Outcome:
    argv: list
    code: int
    out: str
    err: str
    warned: list

    def check(self) -> None:
        """Assert the CLI contract; the message carries the argv so a failure is reproducible."""
        where = f"argv={self.argv!r}\nstdout={self.out[-2000:]!r}\nstderr={self.err[-2000:]!r}"
        assert "Traceback" not in self.err and "Traceback" not in self.out, where
        assert not self.warned, f"Python warnings reached the user: {self.warned}\n{where}"
        if self.code == 2:
            lines = self.err.splitlines()
            assert len(lines) == 1 and self.err.endswith("\n"), f"exit 2 needs exactly one stderr line\n{where}"
            assert lines[0].startswith("planner") and ": error: " in lines[0], where
            assert self._names_its_subject(lines[0].split(": error: ", 1)[1]), f"the error names no flag or file\n{where}"
        else:
            assert self.code in (0, 1), f"unexpected exit code {self.code}\n{where}"
            assert self.out.strip(), f"exit {self.code} with no output\n{where}"
            if "--json" in self.argv and self.code == 0 and not any(a in ("-h", "--help") for a in self.argv):
                json.loads(self.out, parse_constant=_reject_constant)  # strict JSON: no NaN/Infinity


    def _names_its_subject(self, message: str) -> bool:
        """The message names a flag given (with or without dashes) or a file/name given on the line."""
        if re.search(r"--[a-z]", message) or "required" in message or "command" in message.lower():
            return True  # names the flag (or command) to give or to fix
        if any(not str(token).strip() for token in self.argv) and ("empty" in message or "''" in message):
            return True  # an empty argument, said so
        subjects = set()
        if re.search(r"[\w.-]+\.(yaml|yml|csv|jsonl|json|log|html)\b", message):
            return True  # names the file at fault (a spec the command found, a data file)
        for raw in map(str, self.argv):
            subjects.add(repr(raw))  # quoted as Python shows it
            if raw.strip() and "\0" not in raw:
                normalised = str(Path(raw))  # as pathlib normalises it ('0/' -> '0'), as typed or escaped
                subjects |= {normalised, repr(normalised)}
            token = raw.strip()
            if token.startswith("-") and len(token) > 1 and not token[1:2].isdigit():
                flag = token.split("=", 1)[0]
                subjects |= {flag.lstrip("-"), flag.lstrip("-").replace("-", "_")}
            elif token:
                subjects |= {token, repr(raw)[1:-1]}  # as typed, or escaped when it holds control characters
        return any(re.search(rf"(?<![\w.]){re.escape(subject)}(?!\w)", message) for subject in subjects)


def _reject_constant(name: str):
    raise AssertionError(f"{name} in JSON output (not valid JSON; expected null or a number)")


def run_cli(argv: list, limit_s: float = CASE_LIMIT_S) -> Outcome:
    """planner.cli.main(argv) with stdout/stderr captured and Python warnings recorded."""
    from planner.cli import main

    COUNTS["cli_calls"] += 1
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                time_limit(limit_s, f"planner {' '.join(map(str, argv))!r}"):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as stop:  # argparse errors, --help and --version
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    # Users see what Python shows by default: not DeprecationWarning/PendingDeprecationWarning.
    shown = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught
             if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    return Outcome(list(argv), code, out.getvalue(), err.getvalue(), shown)


def _alias_bomb(levels: int = 12) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def _law_rows() -> str:
    """A small, fittable (N, D, loss) table drawn from the Epoch law (two checkpoints per run)."""
    rows = ["run_name,N,D,loss"]
    for i, n in enumerate((5e7, 1e8, 2e8, 4e8, 8e8, 1.6e9)):
        for tokens_per_param in (10, 20):
            d = n * tokens_per_param
            rows.append(f"r{i},{n:g},{d:g},{float(EPOCH_2024.predict(n, d)):.5f}")
    return "\n".join(rows) + "\n"


def write_seeds(folder: Path) -> None:
    """Files a fuzzed command line may name: valid inputs and every kind of broken one."""
    specs = default_cluster_dir()
    (folder / "clusters").mkdir()
    for name in ("dgx-a100-80gb", "cpu-local"):
        shutil.copy(specs / f"{name}.yaml", folder / "clusters" / f"{name}.yaml")
    shutil.copy(specs / "dgx-a100-80gb.yaml", folder / "spec.yaml")
    published = REPO_ROOT / "data" / "runs" / "published_runs_dev.csv"
    runs = (published.read_text(encoding="utf-8").splitlines()[:5] if published.is_file() else
            ["id,cluster,gpus,layers,hidden,heads,seq_len,vocab,tp,pp,dp,micro_batch,global_batch,step_time_s",
             "1,dgx-a100-80gb,8,24,2048,16,2048,50304,1,1,8,1,8,1.5",
             "2,dgx-a100-80gb,8,24,2048,16,2048,50304,2,1,4,1,8,1.7",
             "3,dgx-a100-80gb,8,24,2048,16,2048,50304,8,1,1,1,8,2.5",
             "4,dgx-a100-80gb,16,24,2048,16,2048,50304,2,1,8,1,8,1.1"])
    (folder / "runs.csv").write_text("\n".join(runs) + "\n", encoding="utf-8")
    (folder / "escape.csv").write_text(
        "id,cluster,layers,hidden,heads,seq_len,vocab,micro_batch,global_batch,step_time_s\n"
        "1,../../../etc/passwd.yaml,2,64,4,32,128,1,1,1.0\n2,/etc/hostname.yaml,2,64,4,32,128,1,1,1.0\n",
        encoding="utf-8")
    (folder / "law.csv").write_text(_law_rows(), encoding="utf-8")
    (folder / "law.yaml").write_text(law_to_yaml(EPOCH_2024), encoding="utf-8")
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": "gpt2-small", "tp": 2, "dp": 2}), encoding="utf-8")
    (folder / "existing.yaml").write_text("keep: me\n", encoding="utf-8")
    (folder / "empty.csv").write_text("", encoding="utf-8")
    (folder / "empty.yaml").write_text("", encoding="utf-8")
    (folder / "header.csv").write_text("id,cluster\n", encoding="utf-8")
    (folder / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    (folder / "scalar.yaml").write_text("42\n", encoding="utf-8")
    (folder / "deep.yaml").write_text("[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    (folder / "bomb.yaml").write_text(_alias_bomb(), encoding="utf-8")
    (folder / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (folder / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    (folder / "nan.csv").write_text("N,D,loss\nnan,inf,-1\n1e400,1,2\n", encoding="utf-8")
    (folder / "subdir").mkdir()
    logs = REPO_ROOT / "tests" / "fixtures" / "logs"
    for log in sorted(logs.glob("*.log"))[:3]:
        shutil.copy(log, folder / log.name)


@pytest.fixture(scope="session")
def seed_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz-seeds")
    write_seeds(folder)
    return folder


@pytest.fixture(scope="session")
def case_dir(seed_dir):
    """case_dir() -> a context manager: a fresh working directory holding the seed files, as cwd."""
    import os

    @contextlib.contextmanager
    def enter():
        COUNTS["cases"] += 1
        folder = Path(tempfile.mkdtemp(prefix="case-", dir=seed_dir.parent))
        shutil.copytree(seed_dir, folder, dirs_exist_ok=True)
        before = os.getcwd()
        os.chdir(folder)
        try:
            yield folder
        finally:
            os.chdir(before)
            shutil.rmtree(folder, ignore_errors=True)

    return enter


@pytest.fixture(scope="session")
def cli_contract():
    """cli_contract(argv) -> Outcome, already checked against the contract."""
    def run(argv, limit_s: float = CASE_LIMIT_S) -> Outcome:
        outcome = run_cli(argv, limit_s)
        outcome.check()
        return outcome

    return run


@pytest.fixture(scope="module")
def small_search():
    """Shrink optimize's search space so fuzzed optimize cases take milliseconds; input handling is unchanged."""
    from planner.search import problem_setup, space

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(space, "NODE_GRID", (1, 2, 4))
        patch.setattr(space, "DEPTHS", (8, 16, 24, 32))
        patch.setattr(space, "MICRO_BATCH_CHOICES", (1, 4))
        patch.setattr(space, "PP_CHOICES", (1, 2))
        patch.setattr(problem_setup, "MAX_CONTEXT_MODELS", 4)
        yield


def pytest_terminal_summary(terminalreporter):
    if COUNTS["cases"]:
        terminalreporter.write_line(f"fuzz: {COUNTS['cases']:,} cases, {COUNTS['cli_calls']:,} CLI invocations "
                                    f"(each a result or a one-line exit-2 error)")
