"""ZeRO-Infinity (Rajbhandari et al. 2021, "ZeRO-Infinity: Breaking the GPU Memory Wall for Extreme Scale Deep
Learning", SC'21): a 1T-parameter model fine-tunes on one DGX-2 node; tens of trillions fit on 512 V100s;
over 25 PFLOP/s (40% of peak) on 512 V100s; and GPU-only ZeRO-3 > CPU offload > NVMe offload in throughput.

Hardware: DGX-2 nodes (dgx2-v100: 16 V100-32GB, 1.5 TB host memory, NVMe read at 16 GB/s per node, assumed
from its 8 Gen3 drives; 30 TB of NVMe, DGX-2 datasheet).
Stack: deepspeed-v0.3 (planner/frameworks/deepspeed_v03.py): ZeRO-Infinity shipped in DeepSpeed v0.3.15 (April 2021,
microsoft/DeepSpeed 0d4a54a0 #976), before the coalesced ZeRO-3 collectives of v0.5.5; its stage3_max_live_parameters
and stage3_max_reuse_distance are taken at their defaults (1e9), the paper's values not being known.
The 25 PFLOP/s figure is the 1T model's: DeepSpeed's SC21 talk (docs/assets/files/SC21-ZeRO-Infinity.pdf@a5b1cb1e,
slide 15 "Excellent Efficiency", ZeRO-Infinity on 512 V100s: about 46, 49, 44, 43 and 37 TFLOP/s per GPU for 0.5,
1, 5, 10 and 20T; slide 16, 25 PF on 512 GPUs), as the ZeRO-3 Offload release said before the paper
(docs/_posts/2021-03-08-zero3-offload.md:14@ba33e86e: "With 1 Trillion parameters, ZeRO-3 Offload sustains 25
PetaFlops ... on 512 NVIDIA V100 GPUs, achieving 49 TFlops/GPU"; its Figure 2, assets/images/zero3-offload-512-
v100.png: 48.9 at 1000B). That release offloaded to host memory: NVMe offload and TiledLinear first shipped in
v0.3.15 (offload_constants.py, runtime/zero/tiling.py: absent at v0.3.13 and v0.3.14), so the 1T row runs
ZeRO-3 with CPU offload and no tiling. The paper's configuration table (a figure to this reproduction) gives
model parallelism 4, 4 and 8 for its 5T, 10T and 20T rows as quoted in microsoft/DeepSpeed#1075, where a
maintainer confirms mp is Megatron model parallelism, combined with ZeRO-3 "for large hidden dimensions (>= 18K)".
Assumed where this reproduction could not read that table: GPT shapes of hidden 25600 x 128 layers (1T) and
65536 x 390 layers (20T), heads of 160 / 512, sequence 1024, vocabulary 50257, fp16, activation checkpointing,
tp 1 (the 20T fit verdicts too, although the table quoted above gives it mp 8), micro-batch 1 per GPU, one
micro-batch per step, the 1T row's parameters offloaded with its optimizer states (keeping them on the GPU
gives the same throughput to 0.1 TFLOP/s); the 20T runs use memory-centric tiling 16 and activation
checkpoints on the host (the paper's sections 5.1.3 and 5.1.2), which they need to fit at tp 1.
"""

from __future__ import annotations

import pytest

from planner.cost.estimate import simulate
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import make_model

V100 = load_cluster("dgx2-v100")
V100_FP16_PEAK = 125e12
# GPT blocks as DeepSpeed ran ZeRO-3 on them in 2021: Megatron-LM with a bias in every linear and LayerNorms
# (deepspeedai/DeepSpeedExamples@12737257 Megatron-LM-v1.1.5-ZeRO3: mpu/layers.py:200, 302 `bias=True`, kept by
# megatron/model/transformer.py:75-207; mpu.LayerNorm), whose norms and biases ZeRO-3 keeps persistent, with
# Megatron's default dropout 0.1 (--attention-dropout, --hidden-dropout: microsoft/DeepSpeedExamples@016a9b11
# Megatron-LM/arguments.py): each layer keeps its dropout masks.
GPT = dict(bias=True, norm="layernorm", dropout=0.1)
MODEL_1T = make_model("infinity-1t", layers=128, hidden=25600, heads=160, seq_len=1024, vocab=50257, **GPT)
MODEL_20T = make_model("infinity-20t", layers=390, hidden=65536, heads=512, seq_len=1024, vocab=50257, **GPT)
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
    model = make_model("infinity-2t", layers=256, hidden=25600, heads=160, seq_len=1024, vocab=50257, **GPT)
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


# Measured 41.8 TF/GPU = 21.4 PF on 512 (-14.4%) with deepspeed-v0.3 (58.7 / 30.1 PF, +20.3%, with today's deepspeed), the
# EDR NICs at the NCCL maintainers' 12 of 12.5 GB/s (cluster_specs/dgx2-v100.yaml) and the V100 GEMMs at the DeepBench-derived
# 0.808 of peak (docs/gemm_ceiling.md); 77.6 s of data-parallel traffic exposed of the 198.0 s step, the CPU-Adam step 31.5 s.
# It was a strict xfail before: 37.9 TF/GPU = 19.4 PF (-22.4%) at the assumed 0.75 scale-out efficiency (56.3 / 28.8 PF with
# today's deepspeed); at the assumed 0.72 GEMM ceiling before that 36.6 / 18.7 PF (-25.1%); 36.4 / 18.6 PF while the
# 102,400-element h->4h biases were counted as persistent; 38.2 / 19.5 PF before the persistent parameters' per-rank re-gather
# after each step was priced. Why so communication-bound: per-parameter gathers, and the 2.6e9-element 4h x h matrices exceed
# stage3_max_live_parameters and stage3_max_reuse_distance at their 1e9 defaults, so nothing is prefetched and every matrix
# but the last is gathered again after recompute (the run's values of these two settings are not known).
def test_25_petaflops_on_512_v100s():
    """Within 15% of 25 PFLOP/s for the 1T model with ZeRO-3 and CPU offload (the TFLOP/s count the recompute
    forward: hfu x peak)."""
    result = simulate(MODEL_1T, Layout(dp=512, global_batch=512, offload="optimizer+params", offload_device="cpu",
                                       **BASE), V100)
    assert result["fits"] and result["memory"]["host_fits"]
    assert result["hfu"] * V100_FP16_PEAK * 512 == pytest.approx(25e15, rel=0.15)


def test_gpu_only_beats_cpu_offload_beats_nvme():
    """The paper's ordering of ZeRO-3 on GPU memory, ZeRO-Infinity on CPU memory and on NVMe (a 50B model
    that fits all three on 4 DGX-2 nodes)."""
    model = make_model("infinity-50b", layers=62, hidden=8192, heads=64, seq_len=1024, vocab=50257, **GPT)
    step = {}
    for name, options in {"gpu": {}, "cpu": dict(offload="optimizer+params", offload_device="cpu"),
                          "nvme": dict(offload="optimizer+params", offload_device="nvme")}.items():
        result = simulate(model, Layout(dp=64, global_batch=256, **{**BASE, "micro_batch": 4}, **options), V100)
        assert result["fits"] and result["memory"]["host_fits"], name
        step[name] = result["step_time_s"]
    assert step["gpu"] < step["cpu"] < step["nvme"]
