"""ZeRO-Infinity (Rajbhandari et al. 2021, "ZeRO-Infinity: Breaking the GPU Memory Wall for Extreme Scale Deep
Learning", SC'21): a 1T-parameter model fine-tunes on one DGX-2 node; tens of trillions fit on 512 V100s;
over 25 PFLOP/s (40% of peak) on 512 V100s; and GPU-only ZeRO-3 > CPU offload > NVMe offload in throughput.

Hardware: DGX-2 nodes (dgx2-v100: 16 V100-32GB, 1.5 TB host memory, NVMe read at 16 GB/s per node, assumed
from its 8 Gen3 drives; 30 TB of NVMe, DGX-2 datasheet).
Stack: deepspeed-v0.3 (planner/frameworks/deepspeed_v03.py): ZeRO-Infinity shipped in DeepSpeed v0.3.15 (April 2021,
microsoft/DeepSpeed 0d4a54a0 #976), before the coalesced ZeRO-3 collectives of v0.5.5; its stage3_max_live_parameters
and stage3_max_reuse_distance are taken at their defaults (1e9), the paper's values not being known.
Assumed where this reproduction could not read the paper's configuration table: GPT shapes of hidden 25600 x
128 layers (1T) and 65536 x 390 layers (20T), heads of 160 / 512, sequence 1024, vocabulary 50257, fp16,
activation checkpointing, tp 1 (ZeRO-Infinity needs no model parallelism), micro-batch 1 per GPU, one
micro-batch per step; the 20T runs use memory-centric tiling 16 and activation checkpoints on the host (the
paper's sections 5.1.3 and 5.1.2), which they need to fit.
"""

from __future__ import annotations

import pytest

from planner.cost.estimate import simulate
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import make_model

V100 = load_cluster("dgx2-v100")
V100_FP16_PEAK = 125e12
MODEL_1T = make_model("infinity-1t", layers=128, hidden=25600, heads=160, seq_len=1024, vocab=50257)
MODEL_20T = make_model("infinity-20t", layers=390, hidden=65536, heads=512, seq_len=1024, vocab=50257)
BASE = dict(zero=3, framework="deepspeed-v0.3", dtype="fp16", recompute="full", micro_batch=1)


def _one_node(**options):
    return simulate(MODEL_1T, Layout(dp=16, global_batch=16, **BASE, **options), V100)


def test_1t_fine_tunes_on_one_dgx2_node_only_with_nvme():
    """Fit verdicts: GPU-only ZeRO-3 does not fit HBM, offload to host memory exceeds the 1.5 TB host, NVMe
    offload fits HBM and the node's 30 TB of NVMe, and is timed (a finite step)."""
    gpu_only = _one_node()
    cpu = _one_node(offload="optimizer+params", offload_device="cpu")
    nvme = _one_node(offload="optimizer+params", offload_device="nvme")
    assert not gpu_only["fits"]
    assert cpu["memory"]["hbm_fits"] and not cpu["memory"]["host_fits"] and not cpu["fits"]
    assert nvme["fits"] and nvme["memory"]["host_fits"] and nvme["memory"]["nvme_fits"]
    assert 0 < nvme["memory"]["nvme_bytes_per_node"] <= V100.node.nvme_capacity_bytes == 30e12
    assert 0 < nvme["step_time_s"] < 3 * 3600


def test_2t_does_not_fit_one_dgx2_node():
    """Twice the layers: its ~20 bytes per parameter on NVMe exceed the node's 30 TB."""
    model = make_model("infinity-2t", layers=256, hidden=25600, heads=160, seq_len=1024, vocab=50257)
    result = simulate(model, Layout(dp=16, global_batch=16, offload="optimizer+params", offload_device="nvme", **BASE),
                      V100)
    assert result["memory"]["hbm_fits"] and not result["memory"]["nvme_fits"] and not result["fits"]


def _at_512(**options):
    return simulate(MODEL_20T, Layout(dp=512, global_batch=512, offload="optimizer+params", offload_device="nvme",
                                      **BASE, **options), V100)


def test_tens_of_trillions_fit_on_512_gpus():
    tiled = _at_512(zero_tiling=16, activation_offload=True)
    assert MODEL_20T.total_params > 2e13
    assert tiled["fits"] and tiled["memory"]["host_fits"]
    assert tiled["memory"]["nvme_fits"]
    # Without tiling the gathered 4h x h Linear alone (2 x 2 bytes x 17e9) exceeds a V100's 32 GB.
    assert not _at_512()["fits"]


@pytest.mark.xfail(strict=True, reason="measured 27.5 TFLOP/s per GPU = 14.1 PFLOP/s on 512 (-43.7%) with deepspeed-v0.3 "
                                       "(41.5 / 21.2 PF, -15.1%, with today's deepspeed): per-parameter gathers, and "
                                       "the 17e9-element matrices exceed stage3_max_live_parameters and "
                                       "stage3_max_reuse_distance at their 1e9 defaults, so nothing is prefetched and "
                                       "every matrix but the last is gathered again after recompute (2,004 s exposed; the paper's "
                                       "values of these two settings are not known); the CPU-Adam step (628 s) and "
                                       "the NVMe swaps (1,427 s) take another third of the 5,998 s step")
def test_25_petaflops_on_512_v100s():
    """Within 15% of 25 PFLOP/s (the paper's TFLOP/s count the recompute forward: hfu x peak)."""
    result = _at_512(zero_tiling=16, activation_offload=True)
    assert result["hfu"] * V100_FP16_PEAK * 512 == pytest.approx(25e15, rel=0.15)


def test_gpu_only_beats_cpu_offload_beats_nvme():
    """The paper's ordering of ZeRO-3 on GPU memory, ZeRO-Infinity on CPU memory and on NVMe (a 50B model
    that fits all three on 4 DGX-2 nodes)."""
    model = make_model("infinity-50b", layers=62, hidden=8192, heads=64, seq_len=1024, vocab=50257)
    step = {}
    for name, options in {"gpu": {}, "cpu": dict(offload="optimizer+params", offload_device="cpu"),
                          "nvme": dict(offload="optimizer+params", offload_device="nvme")}.items():
        result = simulate(model, Layout(dp=64, global_batch=256, **{**BASE, "micro_batch": 4}, **options), V100)
        assert result["fits"] and result["memory"]["host_fits"], name
        step[name] = result["step_time_s"]
    assert step["gpu"] < step["cpu"] < step["nvme"]
