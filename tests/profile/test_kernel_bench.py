"""planner/profile/kernel_bench.py on this machine's CPU at --quick sizes: every section runs and writes numbers the
comparison tests (tests/cost/test_h200_kernel_profile.py) read, and a bad --sections is refused."""

import importlib.util
import json

import pytest

from planner.profile import kernel_bench
from planner.profile.grid import expand, load_grid_file

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch not installed (the 'profile' extra)")


@needs_torch
def test_quick_run_writes_every_section_with_positive_figures(tmp_path):
    out = tmp_path / "kernels.json"
    assert kernel_bench.main(["--out", str(out), "--quick", "--sustain-s", "0.2"]) == 0
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["environment"]["device"] == "cpu"
    sections = report["sections"]
    assert set(sections) == set(kernel_bench.SECTIONS)
    assert not any(isinstance(v, dict) and "error" in v for v in sections.values())
    assert all(r["tflops"] > 0 and r["seconds"] > 0 for r in sections["gemm"])
    assert {r["label"] for r in sections["gemm"]} >= {"square 256", "h256 fc1 wgrad"}
    attention = [r for r in sections["attention"] if "error" not in r]
    assert attention and all(r["forward_tflops"] > 0 for r in attention)
    assert sections["memory"]["device_copy_bytes_per_s"] > 0
    assert sections["adam"][0]["seconds_per_parameter"] > 0
    assert sections["sustained"]["windows"] and sections["launch"]["add_ 1 element"]["host_issue_s_per_op"] > 0
    assert not (tmp_path / "kernels.json.tmp").exists()


@needs_torch
def test_a_subset_of_sections_runs_alone(tmp_path):
    out = tmp_path / "k.json"
    assert kernel_bench.main(["--out", str(out), "--quick", "--sections", "memory,launch"]) == 0
    assert set(json.loads(out.read_text())["sections"]) == {"memory", "launch"}


def test_unknown_section_is_refused_with_exit_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        kernel_bench.main(["--out", str(tmp_path / "k.json"), "--sections", "gemm,nvlink"])
    assert stop.value.code == 2
    assert "--sections" in capsys.readouterr().err
    assert not (tmp_path / "k.json").exists()


def test_the_gpu_1_grid_runs_one_rank_in_bf16_from_124m_to_2_7b():
    grid, _ = load_grid_file("gpu-1")
    configs = expand(grid, lambda dtype: "bf16" if dtype == "auto" else dtype).configs
    assert len(configs) == 11 and {c.world_size for c in configs} == {1}
    assert {c.dtype for c in configs} == {"bf16"} and {c.zero for c in configs} == {0, 1, 2, 3}
    assert configs[0].config_id == "L12-h768-a12-f3072-s1024-v50304-w1-z0-mb1-ga1-bf16"
