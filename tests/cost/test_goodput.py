"""Goodput: Young/Daly checkpoint interval and Daly's first-order fraction of wall-clock that trains."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.cost.goodput import goodput, goodput_summary
from planner.frameworks import FRAMEWORK_CODES
from planner.specs.clusters import load_cluster

DAY_S = 86400.0


@pytest.fixture(scope="module")
def h100():
    return load_cluster("dgx-h100")


def test_checkpoint_interval_is_young_daly_sqrt_2_delta_m(h100):
    # Llama-3-405B scale on 16,384 GPUs, by hand from the spec: MTBF 2000 GPU-days, 20 GB/s, 15 min restart.
    params, gpus = 405e9, 16384
    assert h100.reliability.mtbf_per_gpu_s == pytest.approx(2000 * DAY_S)
    assert h100.reliability.checkpoint_bytes_per_s == pytest.approx(20e9)
    delta = (2 + 4 + 4 + 4) * params / 20e9  # bf16 weights + fp32 master + Adam m, v = 14 B/param
    job_mtbf = 2000 * DAY_S / gpus
    out = goodput(params, gpus, h100)
    assert float(out["checkpoint_write_s"]) == pytest.approx(delta, rel=1e-12)  # 283.5 s
    assert float(out["job_mtbf_s"]) == pytest.approx(job_mtbf, rel=1e-12)  # 10,547 s (2.9 h)
    assert float(out["checkpoint_interval_s"]) == pytest.approx(math.sqrt(2 * delta * job_mtbf), rel=1e-12)
    assert float(out["expected_failures_per_day"]) == pytest.approx(DAY_S / job_mtbf, rel=1e-12)


def test_goodput_is_dalys_first_order_fraction(h100):
    params, gpus = 70e9, 2048
    delta = 14 * params / 20e9
    M = 2000 * DAY_S / gpus
    tau = math.sqrt(2 * delta * M)
    restart = 15 * 60.0
    expected = 1.0 / (1.0 + delta / tau + (tau / 2 + delta + restart) / M)
    assert float(goodput(params, gpus, h100)["goodput"]) == pytest.approx(expected, rel=1e-12)


def test_young_daly_interval_minimises_the_checkpoint_plus_rework_overhead(h100):
    # First-order overhead as a function of the interval: delta/tau + tau/(2M) (the other terms do not depend on tau).
    out = goodput(30e9, 4096, h100)
    delta, M, tau = (float(out[k]) for k in ("checkpoint_write_s", "job_mtbf_s", "checkpoint_interval_s"))
    overhead = lambda t: delta / t + t / (2 * M)  # noqa: E731
    taus = tau * np.array([0.5, 0.8, 0.95, 1.05, 1.25, 2.0])
    assert np.all(overhead(taus) > overhead(tau))


def test_goodput_falls_with_gpu_count_and_stays_in_zero_one(h100):
    gpus = np.array([1, 2, 8, 64, 512, 4096, 16384, 65536, 262144])
    for params in (1e8, 7e9, 70e9, 405e9, 1e12):
        g = goodput(params, gpus, h100)["goodput"]
        assert np.all((g > 0) & (g <= 1)), g
        assert np.all(np.diff(g) < 0), g


def test_goodput_falls_with_model_size_and_approaches_one_for_small_jobs(h100):
    params = np.array([1e8, 1e9, 1e10, 1e11, 1e12])
    g = goodput(params, 1024, h100)["goodput"]
    assert np.all(np.diff(g) < 0)
    # A 100M model on one GPU: a 70 ms checkpoint against a 2000-day MTBF - essentially no loss.
    assert float(goodput(1e8, 1, h100)["goodput"]) == pytest.approx(1.0, abs=1e-3)


def test_less_reliable_cluster_has_lower_goodput(h100):
    fragile = h100.model_copy(update={"reliability": h100.reliability.model_copy(
        update={"mtbf_per_gpu_s": h100.reliability.mtbf_per_gpu_s / 10})})
    assert float(goodput(70e9, 4096, fragile)["goodput"]) < float(goodput(70e9, 4096, h100)["goodput"])


def test_arrays_broadcast_elementwise(h100):
    params = np.array([1e9, 7e9, 70e9])
    gpus = np.array([8, 256, 4096])
    together = goodput(params, gpus, h100)["goodput"]
    one_by_one = [float(goodput(p, g, h100)["goodput"]) for p, g in zip(params, gpus)]
    assert together.shape == (3,)
    assert together == pytest.approx(one_by_one, rel=1e-15)


def test_async_checkpoint_stalls_only_for_the_host_copy(h100):
    """Two-stage checkpoint (MegaScale section 4.3): the stall is each GPU's share over PCIe; the next snapshot
    waits for the background write, and a failure restores the last persisted one."""
    params, gpus = 175e9, 12288
    out = goodput(params, gpus, h100, checkpoint="async")
    stall = 14 * params / gpus / h100.node.pcie_bytes_per_s_per_accelerator
    persist = 14 * params / h100.reliability.checkpoint_bytes_per_s
    M = h100.reliability.mtbf_per_gpu_s / gpus
    tau = max(math.sqrt(2 * stall * M), persist)
    assert float(out["checkpoint_stall_s"]) == pytest.approx(stall, rel=1e-12)
    assert float(out["checkpoint_interval_s"]) == pytest.approx(tau, rel=1e-12)
    expected = 1.0 / (1.0 + stall / tau + (tau / 2 + persist + h100.reliability.restart_s) / M)
    assert float(out["goodput"]) == pytest.approx(expected, rel=1e-12)


def test_checkpoint_modes_order_and_fast_restart_helps(h100):
    sync, asynchronous, memory = (float(goodput(175e9, 12288, h100, checkpoint=mode)["goodput"])
                                  for mode in ("sync", "async", "in-memory"))
    assert sync < asynchronous < memory < 1.0
    fast = float(goodput(175e9, 12288, h100, checkpoint="in-memory", restart_s=60.0)["goodput"])
    assert fast > memory


def test_unknown_checkpoint_mode_is_one_line_error(h100):
    from planner.errors import PlannerInputError

    with pytest.raises(PlannerInputError, match="checkpoint mode: expected one of sync, async, in-memory"):
        goodput(1e9, 8, h100, checkpoint="lazy")


def test_the_spec_names_its_checkpoint_mode():
    import yaml

    from planner.specs.hardware import parse_cluster_spec

    from planner.specs.clusters import default_cluster_dir

    data = yaml.safe_load((default_cluster_dir() / "dgx-h100.yaml").read_text(encoding="utf-8"))
    assert parse_cluster_spec(data, "h100.yaml").reliability.checkpoint_mode == "sync"  # the default
    data["reliability"]["checkpoint"] = "async"
    asynchronous = parse_cluster_spec(data, "async.yaml")
    assert float(goodput(175e9, 12288, asynchronous)["goodput"]) == float(
        goodput(175e9, 12288, asynchronous, checkpoint="async")["goodput"])
    data["reliability"]["checkpoint"] = "lazy"
    with pytest.raises(Exception, match="reliability.checkpoint"):
        parse_cluster_spec(data, "bad.yaml")


@pytest.mark.parametrize("framework, bytes_per_param", [("megatron", 2 + 4 + 8), ("deepspeed", 2 + 4 + 8),
                                                        ("fsdp", 4 + 8), ("jax", 4 + 8)])
def test_each_stack_writes_its_own_checkpoint(h100, framework, bytes_per_param):
    # Megatron's distributed optimizer and DeepSpeed save the 16-bit weights beside the fp32 master and Adam's m, v;
    # FSDP (DCP) and JAX (Orbax) save the fp32 parameters, which are the master, and the moments
    # (frameworks/*.py checkpoint_bytes_per_param, cited there).
    params, gpus = 70e9, 4096
    summary = goodput_summary(params, gpus, h100, framework=framework)
    assert summary["checkpoint_bytes"] == pytest.approx(bytes_per_param * params)
    assert summary["checkpoint_write_s"] == pytest.approx(bytes_per_param * params / h100.reliability.checkpoint_bytes_per_s)


def test_a_search_over_stacks_prices_each_rows_checkpoint(h100):
    from planner.search.layouts import search_layouts
    from planner.specs.model import PRESETS

    search = search_layouts(PRESETS["llama3-8b"], h100, 64, global_batch=512, frameworks=("megatron", "fsdp"))
    codes = search.arrays["framework"]
    # Evaluation passes (cost.evaluation) differ by layout; without them each stack has one goodput.
    failure_goodputs = np.round(search.goodputs * (1.0 + search.evaluation_fractions), 12)
    by_stack = {name: set(np.unique(failure_goodputs[codes == FRAMEWORK_CODES[name]])) for name in ("megatron", "fsdp")}
    assert all(len(values) == 1 for values in by_stack.values())
    assert by_stack["fsdp"].pop() > by_stack["megatron"].pop()  # 12 bytes a parameter write faster than 14
