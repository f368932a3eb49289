"""The 2020 Megatron-LM fork of DeepSpeedExamples (the ZeRO paper's runs, stack `deepspeed-v0.2`) ran the attention
scale and mask, the bias adds, the residual adds and torch.matmul's q/k/v copies as kernels of their own, which
today's stacks fuse (frameworks/deepspeed_v02.py). They are priced as the named part `unfused_elementwise`: bytes
from the Framework fields' accesses per element touched, at the rank's HBM rate, in forward, backward and the
recompute forward. Its partitioned checkpoints are rebuilt through a zero-filled buffer and the list-form all-gather
(3 accesses per gathered element more), and its ZeRO-2 parameter all-gather copies its output out once a step.
Today's stacks pay none of it and keep their numbers."""

from __future__ import annotations

import numpy as np
import pytest

from planner.cost.estimate import simulate
from planner.cost.gemm import rank_rates
from planner.cost.layer_compute import unfused_elementwise_bytes
from planner.frameworks import FRAMEWORKS, framework_arrays
from planner.specs.candidate_batch import single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import make_model

V100 = load_cluster("dgx2-v100")
MODEL = make_model("zero-100b", layers=125, hidden=8192, heads=64, seq_len=1024, vocab=50257)
LAYOUT = dict(tp=16, dp=25, zero=2, dtype="fp16", recompute="full", micro_batch=32, global_batch=800,
              partition_activations=True, flash_attention=False)


def _run(framework, **changes):
    layout = Layout(**{**LAYOUT, "framework": framework, **changes})
    return layout, simulate(MODEL, layout, V100)


def _hbm(layout):
    return float(np.ravel(rank_rates(single_batch(MODEL, layout), V100)[1])[0])


def test_today_stacks_run_no_unfused_kernels():
    for stack in FRAMEWORKS.values():
        if stack.name == "deepspeed-v0.2":
            continue
        assert stack.unfused_score_accesses_forward == stack.unfused_hidden_accesses_forward == 0.0, stack.name
        assert stack.checkpoint_gather_hbm_accesses == 0.0, stack.name
    _, today = _run("deepspeed")
    assert "unfused_elementwise" not in today["time"]


def test_the_fork_s_extra_bytes_per_layer_from_its_kernels():
    """100B layer on a tp 16 rank, micro-batch 32 x 1024 tokens, fp16: forward 6 accesses per score element
    (divide, mask multiply, subtract), 8 per hidden element (two bias adds and two residual adds apart), 2 per
    q/k/v element (matmul's copies) and 2 per MLP element (F.linear's bias add); backward 4 per score element."""
    layout, _ = _run("deepspeed-v0.2")
    batch = single_batch(MODEL, layout)
    extra = unfused_elementwise_bytes(batch, framework_arrays(batch.framework))
    tokens, h, t = 32 * 1024, 8192, 16
    scores = 32 * 64 / t * 1024 * 1024
    forward = 2.0 * (6 * scores + tokens * (8 * h + 2 * 3 * h / t + 2 * 4 * h / t))
    assert extra["forward"][0] == pytest.approx(forward)
    assert extra["backward"][0] == pytest.approx(2.0 * 4 * scores)
    assert extra["score_forward"][0] == pytest.approx(2.0 * 6 * scores)
    flash = unfused_elementwise_bytes(single_batch(MODEL, layout.model_copy(update={"flash_attention": True})),
                                      framework_arrays(batch.framework))
    assert flash["backward"][0] == 0.0 and flash["forward"][0] == pytest.approx(forward - 2.0 * 6 * scores)


def test_the_part_is_forward_backward_and_recompute_over_the_layers():
    layout, old = _run("deepspeed-v0.2")
    batch = single_batch(MODEL, layout)
    extra = unfused_elementwise_bytes(batch, framework_arrays(batch.framework))
    expected = 125 * (2.0 * extra["forward"][0] + extra["backward"][0]) / _hbm(layout)
    assert old["time"]["unfused_elementwise"] == pytest.approx(expected)
    # The other compute parts are today's stack's: the kernels both run are priced once. (The data-parallel
    # reduction differs: the 2020 engine reduced each slice to its owner, today's all-reduces each bucket.)
    _, today = _run("deepspeed")
    for part in ("forward", "backward", "recompute", "elementwise", "tp_comm"):
        assert old["time"][part] == pytest.approx(today["time"][part], rel=1e-12), part
    _, plain = _run("deepspeed-v0.2", recompute="none", partition_activations=None)
    assert plain["time"]["unfused_elementwise"] == pytest.approx(
        125 * (extra["forward"][0] + extra["backward"][0]) / _hbm(layout))


def test_checkpoint_rebuild_copies_and_the_step_s_gather_copy_out():
    """Per recomputed layer: zero-fill (1 write) and the list-form all-gather's copy-out (1 read, 1 write) of the
    537 MB layer input; per step: the ZeRO-2 parameter all-gather's copy-out, read + write of the 2-byte weights."""
    layout, old = _run("deepspeed-v0.2")
    _, today = _run("deepspeed")
    hbm = _hbm(layout)
    layer_input = 32 * 1024 * 8192 * 2.0
    assert old["time"]["checkpoint_gather"] - today["time"]["checkpoint_gather"] == pytest.approx(
        125 * 3 * layer_input / hbm)
    params = old["memory"]["weights"] / 2.0  # the rank's 16-bit weights, unsharded at ZeRO-2
    assert old["time"]["shard_copies"] - today["time"]["shard_copies"] == pytest.approx(2 * 2.0 * params / hbm,
                                                                                         rel=1e-3)


def test_vectorised_batch_matches_simulate_for_the_fork_next_to_today():
    from planner.cost.estimate import estimate
    from planner.specs.candidate_batch import layouts_batch
    layouts = [Layout(**{**LAYOUT, "framework": fw, "flash_attention": fa})
               for fw in ("deepspeed", "deepspeed-v0.2") for fa in (False, True)]
    batch = estimate(layouts_batch([MODEL] * len(layouts), layouts), V100)
    for i, layout in enumerate(layouts):
        scalar = simulate(MODEL, layout, V100)
        assert batch.time["step_time_s"][i] == scalar["step_time_s"]
        assert np.all([batch.time["parts"][k][i] == v for k, v in scalar["time"].items()])
