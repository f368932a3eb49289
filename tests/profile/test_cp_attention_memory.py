"""torch's context-parallel attention buffers (planner/profile/cp_attention_memory.py), measured on this CPU, against
the committed profile (profiles/cp-attention-memory-cpu.json) and what the fsdp record charges for them
(Framework.cp_attention_buffers, cost/memory.py cp_attention_buffer_bytes); Megatron's by hand from its record."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from planner.cost.memory import per_gpu_memory
from planner.frameworks import FRAMEWORKS
from planner.profile import cp_attention_memory
from planner.specs.candidate_batch import single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import PRESETS

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch not installed (the 'profile' extra)")
PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "cp-attention-memory-cpu.json"
# torchtitan's backward: multiples of local Q, K + V, cp x K + V, cp x output.
Q, KV, KV_PER_RANK, OUT_PER_RANK = dict(FRAMEWORKS["fsdp"].cp_attention_buffers)["backward"]


def _charged(q_bytes, kv_bytes, cp):
    return Q * q_bytes + (KV_PER_RANK * cp + KV) * kv_bytes + OUT_PER_RANK * cp * q_bytes


def test_the_committed_profile_holds_the_figures_the_memory_model_cites():
    profile = json.loads(PROFILE.read_text())
    fit = profile["fit"]
    assert fit["q_bytes_multiple"] == pytest.approx(Q, abs=0.01)
    assert fit["kv_bytes_extra"] == pytest.approx(KV, abs=0.01)
    assert fit["kv_bytes_per_cp_rank"] == pytest.approx(KV_PER_RANK, abs=0.01)  # the gathered K, V: cp local copies
    assert KV_PER_RANK == 1.0 and OUT_PER_RANK == 0.0
    assert fit["worst_relative_residual"] < 0.01
    for row in profile["rows"]:  # each measured row, not only the fit
        assert row["extra"] == pytest.approx(_charged(row["q_bytes"], row["kv_bytes"], row["cp"]), rel=0.01)


@needs_torch
@pytest.mark.parametrize("cp, heads, kv_heads", [(4, 8, 2), (2, 8, 8)])
def test_torchs_ring_attention_backward_measured_here_is_what_the_model_charges(cp, heads, kv_heads):
    """Every rank of the group, the largest kept (with load balancing the ranks' chunks differ)."""
    ranks = [cp_attention_memory.backward_extra_bytes(cp, rank, heads, kv_heads) for rank in range(cp)]
    worst = max(ranks, key=lambda r: r["extra"])
    assert worst["extra"] == pytest.approx(_charged(worst["q_bytes"], worst["kv_bytes"], cp), rel=0.02)


@needs_torch
def test_the_emulated_collectives_are_put_back():
    from torch.distributed.tensor.experimental._context_parallel import _attention

    before = (_attention.dist.get_world_size, _attention.ft_c.all_gather_single, _attention.ft_c.permute_tensor)
    cp_attention_memory.backward_extra_bytes(2, 0, 4, 4)
    assert (_attention.dist.get_world_size, _attention.ft_c.all_gather_single,
            _attention.ft_c.permute_tensor) == before


def _memory(framework, cp, **layout):
    model, cluster = PRESETS["llama3-8b"], load_cluster("dgx-h100")
    batch = single_batch(model, Layout(dp=64 // cp, cp=cp, zero=3, micro_batch=1, global_batch=64 // cp, recompute="full",
                                       framework=framework, **layout))
    return batch, per_gpu_memory(batch, cluster)


def test_torchtitan_with_context_parallelism_is_charged_the_buffers_by_hand():
    """Llama 3 8B (32 query, 8 key/value heads, hidden 4096), its 8,192 tokens over cp 8: 1,024 local tokens; local
    Q = 1,024 x 4,096 x 2 bytes = 8 MiB, local K + V = 2 x 1,024 x 1,024 x 2 bytes = 4 MiB: 3 x 8 + (8 + 7.5) x 4 = 86
    MiB."""
    batch, result = _memory("fsdp", 8)
    assert int(batch.seq_len[0]) == 8192
    assert result["parts"]["cp_attention_buffers"][0] == pytest.approx(86 * 2**20, rel=1e-9)


def test_megatron_is_charged_transformer_engines_forward_buffers_by_hand():
    """Transformer Engine's p2p ring keeps every received K/V chunk and every step's output until the correction:
    8 x 4 MiB + 8 x 8 MiB = 96 MiB in forward, above its backward's Q + 4 x (K + V) = 24 MiB (frameworks/megatron.py)."""
    _, result = _memory("megatron", 8)
    assert result["parts"]["cp_attention_buffers"][0] == pytest.approx(96 * 2**20, rel=1e-9)


@pytest.mark.parametrize("framework", ["fsdp", "megatron"])
def test_no_context_parallelism_holds_no_buffers(framework):
    _, result = _memory(framework, 1)
    assert result["parts"]["cp_attention_buffers"][0] == 0.0


def test_a_stack_record_with_an_unknown_phase_or_the_wrong_multiples_is_refused():
    from dataclasses import replace

    from planner.frameworks import _cp_buffer_row

    with pytest.raises(ValueError, match="cp_attention_buffers takes phases"):
        _cp_buffer_row(replace(FRAMEWORKS["fsdp"], cp_attention_buffers=(("sideways", (1.0, 2.0, 3.0, 4.0)),)))
    with pytest.raises(ValueError, match="4 multiples each"):
        _cp_buffer_row(replace(FRAMEWORKS["fsdp"], cp_attention_buffers=(("forward", (1.0, 2.0)),)))


def test_mla_buffers_are_sized_by_its_up_projected_heads():
    """DeepSeek-V3 (128 heads; q and k 192 wide, v 128): K + V 128 x 320 = 40,960 elements a token, the output 16,384,
    not the hidden size's 7,168 (ModelSpec.attention_widths). Megatron at cp 4, 4,096 tokens: 1,024 local tokens, tp 1,
    bf16 -> forward 4 x (40,960 + 16,384) x 1,024 x 2 bytes, above its backward's 24,576 + 4 x 40,960."""
    from planner.cost.memory import cp_attention_buffer_bytes
    from planner.frameworks import batch_framework_arrays

    model = PRESETS["deepseek-v3"]
    batch = single_batch(model, Layout(dp=4, cp=4, ep=4, zero=1, micro_batch=1, global_batch=4, framework="megatron"))
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    held = cp_attention_buffer_bytes(batch, batch_framework_arrays(batch), tokens)
    assert int(tokens[0]) == 1024
    assert held[0] == pytest.approx(4 * (40960 + 16384) * 1024 * 2, rel=1e-12)
