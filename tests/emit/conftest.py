"""Fixtures for the launch-config tests: the option lists extracted from each stack's source (tests/emit/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def _read(name: str) -> tuple[str, list[list[str]]]:
    lines = (DATA / name).read_text().splitlines()
    header = "\n".join(line for line in lines if line.startswith("#"))
    return header, [line.split(" ") for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="session")
def megatron_options() -> dict[str, tuple[str, list[str] | None]]:
    """Megatron-LM option -> (kind, choices or None), from megatron_arguments.txt."""
    header, rows = _read("megatron_arguments.txt")
    assert "NVIDIA/Megatron-LM@d98e8a64ddf34856e74b24714e3bedb2f5a39553 megatron/training/arguments.py" in header
    return {row[0]: (row[1], row[2].split(",") if len(row) > 2 else None) for row in rows}


@pytest.fixture(scope="session")
def torchtitan_fields() -> dict[str, str]:
    """torchtitan JobConfig 'section.key' -> type, from torchtitan_job_config.txt."""
    header, rows = _read("torchtitan_job_config.txt")
    assert "pytorch/torchtitan@238fa9953e4aec2a62582121564273d7cbb1e9f1 torchtitan/config/job_config.py" in header
    return {key: kind for key, kind in rows}


@pytest.fixture(scope="session")
def h100():
    from planner.specs.clusters import load_cluster

    return load_cluster("dgx-h100")


@pytest.fixture
def launch_folder(tmp_path):
    """write(files) -> (folder, PATH with a stub `launcher`, torchrun by default, that runs `body`: by default it
    prints its arguments one per line)."""
    def write(files: dict[str, str], launcher: str = "torchrun", body: str = 'printf "%s\\n" "$@"'):
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        stub = tmp_path / "bin" / launcher
        stub.parent.mkdir()
        stub.write_text(f"#!/usr/bin/env bash\n{body}\n")
        stub.chmod(0o755)
        return tmp_path, f"{stub.parent}{os.pathsep}{os.environ['PATH']}"

    return write
