"""MegaScale (Jiang et al., "MegaScale: Scaling Large Language Model Training to More Than 10,000 GPUs",
NSDI 2024, arXiv:2402.15627): the headline rows of issue 16, reproduced by the planner.

Headlines (abstract, Table 2): a 175B model at 55.2% MFU on 12,288 GPUs, 1.34x the MFU of Megatron-LM on the
same job (Megatron-LM 41.2%), and more than 90% effective training time (section 4). Tolerances: 10% on the
MFU, 15% on the ratio (issue 16's acceptance table); the effective training time is a bound (> 0.90).

Configurations. The paper's text beyond its abstract was not in the stored corpora this was written from,
so its settings are as recalled and flagged where assumed:
- Model: GPT-3 175B's shape (96 layers, hidden 12288, 96 heads: Brown et al. 2020 Table 2.1), sequence 2048,
  full causal attention (section 3.1 names sliding-window attention among MegaScale's techniques but, as
  recalled, gives no window size for this job; any window of 2048 or more is the same job);
  vocabulary 51,200 (assumed: GPT-3's 50,257 BPE padded to Megatron's multiple of 128 x tp).
- Job (Table 2): 12,288 GPUs, global batch 6,144 sequences. Layout tp 8 x pp 8 x dp 192 with sequence
  parallelism (section 3.2 overlaps TP/SP communication), micro-batch 1 (assumed), interleaved 1F1B
  (section 3.2) with 2 model chunks per stage (assumed: the paper does not give the count; the smallest
  interleaving is taken; the MFU is 0.540 at 2, 0.578 at 4, 0.591 at 6), no activation recomputation
  (assumed; the layout fits in 80 GB without it). Optimizer state sharded over data-parallel ranks (zero 1,
  Megatron's distributed optimizer): section 3.2 describes the DP traffic as an all-gather of parameters
  before the forward and a reduce-scatter of gradients after the backward.
- Cluster: dgx-a100-80gb (assumed: the paper's Ampere GPUs with one 200 Gb/s NIC per GPU on a non-blocking
  Clos, section 5).
- Megatron-LM: the same layout under framework megatron with Megatron-LM's defaults (no TP/DP overlap).
- Effective training time: the planner's goodput with the two-stage asynchronous checkpoint (section 4.3)
  on the cluster's reliability figures (assumed: the spec's MTBF and restart time; the paper's own failure
  counts were not available here).
"""

from __future__ import annotations

import pytest

from planner.cost.estimate import simulate
from planner.cost.goodput import goodput
from planner.specs.clusters import load_cluster
from planner.specs.layout import make_layout
from planner.specs.model import make_model

GPUS = 12288
MODEL = dict(layers=96, hidden=12288, heads=96, seq_len=2048, vocab=51200)
LAYOUT = dict(tp=8, pp=8, dp=192, vpp=2, micro_batch=1, global_batch=6144, seq_parallel=True, zero=1, dtype="bf16")


@pytest.fixture(scope="module")
def runs():
    cluster = load_cluster("dgx-a100-80gb")
    model = make_model(**MODEL)
    out = {fw: simulate(model, make_layout(framework=fw, **LAYOUT), cluster) for fw in ("megascale", "megatron")}
    assert all(r["fits"] for r in out.values())
    return out


def test_megascale_mfu_on_12288_gpus(runs):
    """Abstract / Table 2: 55.2% MFU (measured 0.540, -2.1%)."""
    assert runs["megascale"]["mfu"] == pytest.approx(0.552, rel=0.10)


def test_megascale_over_megatron_lm(runs):
    """Abstract / Table 2: 1.34x Megatron-LM's MFU on the same job (measured 0.540 / 0.461 = 1.172, -12.5%; the
    planner's Megatron-LM is 12% above the paper's 41.2%)."""
    ratio = runs["megascale"]["mfu"] / runs["megatron"]["mfu"]
    assert ratio == pytest.approx(1.34, rel=0.15)
    # The gain comes from the parts MegaScale changes: exposed TP and DP communication.
    for part in ("tp_comm", "dp_comm_exposed"):
        assert runs["megascale"]["time"][part] < runs["megatron"]["time"][part]


def test_effective_training_time_above_90_percent():
    """Section 4: more than 90% effective training time with its two-stage checkpoint and fast restart; the
    synchronous checkpoint of the same job is below it (measured 0.970 and 0.899: 2.5 failures a day on
    12,288 GPUs at the spec's 5,000 GPU-days MTBF, a 2.45 TB checkpoint at 20 GB/s, 15 min restart)."""
    cluster = load_cluster("dgx-a100-80gb")
    params = make_model(**MODEL).total_params
    asynchronous = float(goodput(params, GPUS, cluster, checkpoint="async")["goodput"])
    synchronous = float(goodput(params, GPUS, cluster, checkpoint="sync")["goodput"])
    assert asynchronous > 0.90
    assert synchronous < asynchronous


def test_effective_training_time_from_planner_simulate(capsys):
    """The same row through `planner simulate` (issue 16: each headline reproduced by simulate): the MegaScale
    job with --checkpoint-mode async reports goodput above 0.90 (measured 0.970), synchronous below it."""
    import json

    from planner.cli import main

    job = ["simulate", "--cluster", "dgx-a100-80gb", "--framework", "megascale", "--json",
           *[f"--{k.replace('_', '-')}={v}" for k, v in MODEL.items()],
           *[f"--{k.replace('_', '-')}={int(v) if isinstance(v, bool) else v}" for k, v in LAYOUT.items()]]
    out = {}
    for mode in ("async", "sync"):
        assert main(job + ["--checkpoint-mode", mode]) == 0
        out[mode] = json.loads(capsys.readouterr().out)
    assert out["async"]["goodput"]["goodput"] > 0.90
    assert out["sync"]["goodput"]["goodput"] < out["async"]["goodput"]["goodput"]
    assert out["async"]["mfu"] == pytest.approx(0.552, rel=0.10)
