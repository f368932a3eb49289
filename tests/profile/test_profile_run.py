"""`planner profile` for real: DeepSpeed ranks on this machine (gloo on CPU), ZeRO-0 and ZeRO-3 on 2 ranks.

Checks the measured collective volumes against what each stage must move per step (fp32, so 4 bytes
per parameter): ZeRO-0 all-reduces every gradient once; ZeRO-3 all-gathers every parameter twice
(forward and backward; the worker turns off persistence and reuse) and reduce-scatters every gradient.
A configuration DeepSpeed rejects (fp16 on a CPU accelerator without fp16 kernels) is recorded as failed
and the sweep goes on. Tiny model, 2 warm-up + 3 measured steps: about a minute on 2 cores.
"""

import importlib.util
import json

import pytest

from planner.cli import main
from planner.profile.runs_csv import read_runs
from planner.profile.worker import parameter_breakdown

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("test_profile_run"),  # one worker runs the profile (--dist loadgroup, pyproject.toml)
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                       reason="deepspeed is not importable: pip install torch==2.13.0 && DS_BUILD_OPS=0 pip install -e '.[profile]'"),
]

TINY = {"layers": 2, "hidden": 64, "heads": 4, "seq_len": 32, "vocab": 512}
GRID = f"""
grids:
  - models: [{json.dumps(TINY)}]
    world_size: [2]
    zero: [0, 3]
    micro_batch: [2]
  - models: [{json.dumps(TINY)}]
    world_size: [1]
    zero: [0]
    dtype: [fp16]
"""


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("profile")
    (folder / "grid.yaml").write_text(GRID)
    code = main(["profile", "--name", "ci", "--grid", str(folder / "grid.yaml"), "--out-dir", str(folder),
                 "--steps", "3", "--warmup", "2", "--timeout-s", "150"])
    runs, problems = read_runs(folder / "ci.csv")
    assert not problems
    details = json.loads((folder / "ci.json").read_text())
    return code, {run.zero if run.dtype == "fp32" else "fp16": run for run in runs}, details


def param_bytes() -> int:
    return 4 * parameter_breakdown(TINY["layers"], TINY["hidden"], 4 * TINY["hidden"], TINY["seq_len"], TINY["vocab"])["total"]


def _cpu_runs_fp16() -> bool:
    """DeepSpeed's CPU accelerator takes fp16 where oneDNN has fp16 kernels for this CPU (AVX512-FP16 / AMX-FP16:
    deepspeed/accelerator/cpu_accelerator.py `is_fp16_supported`), and rejects it elsewhere."""
    import torch
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except Exception:
        return False


def test_exit_code_says_one_configuration_failed(profile):
    """Exit 1 when a configuration failed (fp16, on a CPU without fp16 kernels), 0 when all ran."""
    code, rows, _ = profile
    assert set(rows) == {0, 3, "fp16"}
    assert code == (0 if _cpu_runs_fp16() else 1)


def test_rows_have_positive_step_time_and_layout(profile):
    _, rows, details = profile
    for zero in (0, 3):
        row = rows[zero]
        assert row.extra["status"] == "ok" and row.step_time_s > 0 and row.mem_gib > 0
        assert (row.cluster, row.gpus, row.dp, row.zero, row.global_batch, row.dtype) == ("cpu-local", 2, 2, zero, 4, "fp32")
        assert float(row.extra["step_time_p10_s"]) <= row.step_time_s <= float(row.extra["step_time_p90_s"])
        assert details["runs"][row.id]["parameters"]["total"] * 4 == param_bytes()
    assert details["environment"]["backend"] in ("gloo", "nccl", "ccl")


def test_zero0_all_reduces_every_gradient_once(profile):
    row = profile[1][0]
    # Plus a 4-byte all-reduce per step (DeepSpeed's overflow/norm check).
    assert int(row.extra["allreduce_bytes"]) == pytest.approx(param_bytes(), rel=0.01)
    assert int(row.extra["allgather_bytes"]) == 0 and int(row.extra["reduce_scatter_bytes"]) == 0


def test_zero3_gathers_parameters_twice_and_reduce_scatters_gradients(profile):
    row = profile[1][3]
    assert int(row.extra["allgather_bytes"]) == pytest.approx(2 * param_bytes(), rel=0.01)
    assert int(row.extra["reduce_scatter_bytes"]) == pytest.approx(param_bytes(), rel=0.01)
    assert int(row.extra["allreduce_bytes"]) < 1024  # only DeepSpeed's scalar checks
    # ZeRO-3 keeps a half of parameters, gradients and Adam state per rank, plus its bucket.
    assert row.mem_gib < profile[1][0].mem_gib + 5_000_000 * 4 / 2**30


def test_rejected_configuration_is_recorded_as_failed(profile):
    """The sweep records DeepSpeed's rejection and goes on (the other rows ran). On a CPU with fp16 kernels
    DeepSpeed accepts fp16 and the row is an ordinary measurement."""
    _, rows, details = profile
    failed = rows["fp16"]
    if _cpu_runs_fp16():
        assert failed.extra["status"] == "ok" and failed.step_time_s > 0 and failed.dtype == "fp16"
        return
    assert failed.extra["status"] == "failed" and failed.step_time_s is None
    assert "fp16" in failed.notes and "not supported" in failed.notes
    assert "not supported" in details["runs"][failed.id]["error"]
