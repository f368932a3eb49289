"""Shared fixtures: where the repo and its data are, a reference cluster, and a CLI runner.

Tests run with --import-mode=importlib, so helpers are handed out as fixtures rather than imported.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, settings

from planner.specs.clusters import default_cluster_dir, load_cluster
from planner.specs.candidate_batch import single_batch
from planner.specs.layout import Layout

REPO_ROOT = Path(__file__).resolve().parents[1]

# Hypothesis profiles. "ci" (the default) is bounded and reproducible: a few thousand cases over the
# property and fuzz suites, the same ones every run. "campaign" is the long local hunt, random each
# time: HYPOTHESIS_PROFILE=campaign nice -n 10 python -m pytest tests/property tests/fuzz
# Tests that set max_examples scale it from settings.default.max_examples, so both profiles apply.
settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("campaign", max_examples=3000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Under pytest-xdist every core already runs a worker: the cost model's own threads (planner/cost/row_chunks.py) would
# only contend with them. tests/search with -n 2 on the 2-core machine: 235 s at one thread a worker, 260 s at two.
# The tests of the threaded path set PLANNER_THREADS themselves.
if os.environ.get("PYTEST_XDIST_WORKER") and "PLANNER_THREADS" not in os.environ:
    os.environ["PLANNER_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _own_user_config_folder(tmp_path_factory):
    """The suite's own (empty) user config folder: specs a person calibrated on this machine (in
    ~/.config/planner/cluster_specs, searched before the bundled ones) must not change what tests see."""
    saved = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("user-config"))
    yield
    if saved is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = saved


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Where the checking data live: `data/` in the repository (runs, laws, spec; data/SOURCES.md), so no
    test skips for want of a folder outside it. Tests address files as shared_dir / "data" / ..."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def published_runs_csv(shared_dir) -> Path:
    path = shared_dir / "data" / "runs" / "published_runs_dev.csv"
    if not path.is_file():
        pytest.skip(f"published runs CSV not found at {path}")
    return path


@pytest.fixture(scope="session")
def a100():
    """DGX A100 80GB (rail-optimised, 8 GPUs and 8 HDR NICs per node): the Megatron SC'21 cluster."""
    return load_cluster("dgx-a100-80gb")


class _FieldsWith(dict):
    """A stack's framework arrays with some fields replaced (framework_arrays computes the others on demand)."""

    def __init__(self, base, **fields):
        super().__init__(**fields)
        self.base = base

    def __missing__(self, key):
        return self.base[key]


@pytest.fixture
def fields_with():
    """fields_with(framework_arrays, field=array, ...) -> those arrays with the fields replaced."""
    return _FieldsWith


@pytest.fixture
def batch_of():
    """batch_of(model, **layout) -> the size-one CandidateBatch the scalar path builds."""

    def build(model, **layout):
        return single_batch(model, Layout(**layout))

    return build


@pytest.fixture
def cluster_yaml(tmp_path):
    """write(mutate) -> path of a copy of dgx-a100-80gb.yaml after `mutate(dict)` edits it in place."""
    base = yaml.safe_load((default_cluster_dir() / "dgx-a100-80gb.yaml").read_text(encoding="utf-8"))

    def write(mutate, name: str = "edited.yaml") -> Path:
        data = copy.deepcopy(base)
        mutate(data)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli(capsys):
    """cli(argv) -> (exit code, stdout, stderr) of `planner.cli.main(argv)` in-process."""
    from planner.cli import main

    def run(argv):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:  # argparse errors and --version exit through SystemExit
            code = stop.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def alibi_preset(monkeypatch):
    """The released MPT-7B's architecture (ALiBi, no biases; mosaicml/mpt-7b config.json), which Megatron-LM's and
    torchtitan's launch configs cannot build, registered as preset "mpt-7b-alibi" for the test."""
    from planner.specs import model as model_module

    alibi = model_module.PRESETS["mpt-7b"].model_copy(update={"name": "mpt-7b-alibi", "position": "alibi", "bias": False})
    monkeypatch.setitem(model_module.PRESETS, "mpt-7b-alibi", alibi)
    return alibi
