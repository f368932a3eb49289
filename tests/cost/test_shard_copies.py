"""Sharded data parallelism's HBM copies (planner/cost/shard_copies.py) against the PyTorch code they count:
FSDP1's flat-parameter passes (the llm-foundry stack, planner/frameworks/llm_foundry.py) and FSDP2's
copy-in / copy-out (the fsdp stack, planner/frameworks/fsdp.py)."""

from __future__ import annotations

import numpy as np
import pytest

from planner.cost import shard_copies
from planner.cost.step_time import step_time
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout, single_batch
from planner.specs.model import make_model


def _torch_predivide_factor(world_size: int) -> float:
    """torch/distributed/fsdp `_get_gradient_predivide_factor` (also DefaultState in
    torch/distributed/algorithms/_comm_hooks/default_hooks.py), as written there."""
    factor: int = 1
    while world_size % factor == 0 and world_size / factor > factor:
        factor *= 2
    return float(factor)


def test_predivide_factor_is_fsdp1s():
    worlds = np.arange(1, 2049)
    np.testing.assert_array_equal(shard_copies.predivide_factor(worlds), [_torch_predivide_factor(n) for n in worlds])
    assert shard_copies.predivide_factor(np.array([8, 32, 64, 128])).tolist() == [4.0, 8.0, 8.0, 16.0]


@pytest.mark.parametrize("reduce_bytes, unsharded", [(4.0, 18.0), (2.0, 8.0)])
def test_bytes_per_unsharded_element(reduce_bytes, unsharded):
    """bf16 parameters: assemble the flat gradient (2 + 2), cast to fp32 only when the reduce dtype differs
    (Composer DEFAULT: 2 + 4; PURE: none), pre-divide in place (r + r). The shard's passes are 1/N of a
    handful of bytes: at N = 1024 they add under 0.05 B."""
    got = shard_copies.hbm_bytes_per_element(1024, 2.0, reduce_bytes, 2.0, 1.0)
    assert unsharded < got < unsharded + 0.05
    # Shard passes: 2 gathers x (4 + 2) cast, post-divide 2r, accumulation 3r (m - 1)/m.
    shard = 2 * 6.0 + 2 * reduce_bytes + 3 * reduce_bytes * 3 / 4
    assert shard_copies.hbm_bytes_per_element(8, 2.0, reduce_bytes, 2.0, 4.0) == pytest.approx(unsharded + shard / 8)


def _llm_foundry_13b(framework, micro_batches=3, zero=3):
    """MPT-13B as llm-foundry's A100-80GB table ran it (8 GPUs, micro-batch 2, grad accumulation 3)."""
    model = make_model(layers=40, hidden=5120, heads=40, vocab=50368, seq_len=2048)
    layout = Layout(dp=8, zero=zero, micro_batch=2, global_batch=16 * micro_batches, recompute="none",
                    flash_attention=True, framework=framework)
    return single_batch(model, layout), model


def test_llm_foundry_step_charges_the_passes_and_only_it():
    cluster = load_cluster("dgx-a100-80gb")
    batch, model = _llm_foundry_13b("llm-foundry")
    parts = step_time(batch, cluster)["parts"]
    hbm = cluster.accelerator.hbm_bytes_per_s * cluster.efficiency.hbm_efficiency
    # Every parameter of the model is gathered on each GPU (dp only): 3 micro-batches x bytes x params / HBM.
    expected = 3 * shard_copies.hbm_bytes_per_element(8, 2.0, 4.0, 2.0, 3.0) * model.total_params / hbm
    assert parts["shard_copies"][0] == pytest.approx(expected, rel=1e-6)
    assert 0.02 < parts["shard_copies"][0] / sum(parts.values())[0] < 0.2
    fsdp2, _ = _llm_foundry_13b("fsdp")
    assert "shard_copies" not in step_time(fsdp2, cluster)["parts"]


def test_passes_grow_with_micro_batches_and_vanish_without_sharding():
    cluster = load_cluster("dgx-h100")
    one, _ = _llm_foundry_13b("llm-foundry", micro_batches=1)
    four, _ = _llm_foundry_13b("llm-foundry", micro_batches=4)
    t1 = step_time(one, cluster)["parts"]["shard_copies"][0]
    t4 = step_time(four, cluster)["parts"]["shard_copies"][0]
    assert t4 > 3.9 * t1
    ddp, _ = _llm_foundry_13b("llm-foundry", zero=0)
    assert step_time(ddp, cluster)["parts"]["shard_copies"][0] == 0.0


def test_llm_foundry_runs_the_triton_attention_kernel_on_both_gpus():
    """`attn_impl: triton` in llm-foundry's pretrain yamls: the same layout is slower in attention than under
    FlashAttention-2 (the fsdp entry) on A100 and H100."""
    for name in ("dgx-a100-80gb", "dgx-h100"):
        cluster = load_cluster(name)
        foundry, _ = _llm_foundry_13b("llm-foundry")
        fsdp2, _ = _llm_foundry_13b("fsdp")
        assert step_time(foundry, cluster)["parts"]["forward"][0] > step_time(fsdp2, cluster)["parts"]["forward"][0]
