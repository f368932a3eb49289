"""The time left printed on `planner profile`'s sweep lines is rounded to what an estimate can say."""

from __future__ import annotations

import re

import pytest

from planner.cli import profile as profile_cli
from planner.profile import harness


class _Clock:
    """time.monotonic for the profile command: 0 when it starts, `elapsed_s` at every later reading."""

    def __init__(self, elapsed_s: float):
        self.readings, self.elapsed_s = 0, elapsed_s

    def monotonic(self) -> float:
        self.readings += 1
        return 0.0 if self.readings == 1 else self.elapsed_s


# 1 of 5 done after elapsed_s: 4 x elapsed_s left (22.24 s printed as "22.240 s" before).
@pytest.mark.parametrize("elapsed_s, expected", [(5.56, "22 s"), (0.01, "1 s"), (20.0, "1.33 min")])
def test_sweep_eta_is_rounded(cli, monkeypatch, tmp_path, elapsed_s, expected):
    def sweep(configs, settings, store, cluster, profile, resume, report, redo=frozenset()):
        report("[1/5] config-a: 1.0 s/step")  # one of five done: four more at the pace so far
        return {"ok": 5, "failed": 0, "timeout": 0, "skipped": 0}

    monkeypatch.setattr(harness, "require_deepspeed", lambda: None)
    monkeypatch.setattr(harness, "detect_accelerator", lambda: "cpu")
    monkeypatch.setattr(harness, "sweep", sweep)
    monkeypatch.setattr(profile_cli, "time", _Clock(elapsed_s))
    code, _, err = cli(["profile", "--name", "eta", "--grid", "ci", "--out-dir", tmp_path, "--quiet"])
    assert code == 0, err
    line = next(text for text in err.splitlines() if text.startswith("[1/5]"))
    left = re.search(r"about (.*) left", line).group(1)
    assert left == expected, line
