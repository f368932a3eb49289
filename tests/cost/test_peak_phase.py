"""The phase that holds the memory peak on stacks that free their gradients after every step
(Framework.gradients_freed_after_step; DeepSpeed 0.19 at ZeRO 0-2: frameworks/deepspeed.py), and the H200 profile's
counted DeepSpeed states that show it (profiles/h200-1gpu.json, profiles/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from planner.cost.memory import FORWARD_BACKWARD_PARTS, FP32_GRAD_COPY_BYTES, per_gpu_memory
from planner.frameworks import FRAMEWORKS, record_columns
from planner.specs.candidate_batch import single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import make_model

PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "h200-1gpu.json"
# The 2.78B model of the H200 profile (L32 h2560, GPT-2 vocabulary, learned positions, biases, LayerNorm).
GPT_2_7B = dict(layers=32, hidden=2560, heads=32, seq_len=2048, vocab=50304, mlp="gelu", bias=True, norm="layernorm")


@pytest.fixture(scope="module")
def h200():
    return load_cluster("dgx-h200")


def _memory(cluster, framework="deepspeed", freed=None, **layout):
    settings = dict(dp=1, micro_batch=4, global_batch=4, dtype="bf16", framework=framework,
                    flash_attention=True)
    settings.update(layout)
    batch = single_batch(make_model(**GPT_2_7B), Layout(**settings))
    stack = None
    if freed is not None:  # the same stack with the field set as given
        stack = record_columns(FRAMEWORKS[framework])
        stack["gradients_freed_after_step"] = np.array([float(freed)])
    return per_gpu_memory(batch, cluster, stack)


def _scalar(memory, key):
    return float(np.asarray(memory[key]).reshape(-1)[0])


def _part(memory, name):
    return float(memory["parts"].get(name, np.zeros(1))[0])


def _forward_backward(memory):
    return sum(_part(memory, name) for name in FORWARD_BACKWARD_PARTS)


def test_deepspeed_and_fsdp_free_gradients_after_the_step_and_megatron_does_not():
    assert FRAMEWORKS["deepspeed"].gradients_freed_after_step
    assert not FRAMEWORKS["megatron"].gradients_freed_after_step
    # torchtitan's zero_grad at the step's start: FSDP2's sharded fp32 gradients and DDP's .grad (ZeRO-0) alike
    fsdp = FRAMEWORKS["fsdp"]
    assert fsdp.gradients_freed_after_step and (fsdp.gradients_freed_min_zero, fsdp.gradients_freed_max_zero) == (0, 3)
    assert not fsdp.fp32_gradients_kept_for_the_run


def test_one_micro_batch_leaves_the_gradients_and_their_fp32_copy_out_of_the_activation_peak(h200):
    summed = _memory(h200, freed=False)
    phased = _memory(h200)
    params = 2_780_451_840  # the profile's exact count for this shape (h200-1gpu.json); the model's is within 1%
    gradients = _part(summed, "gradients")
    copy = FP32_GRAD_COPY_BYTES / 2.0 * gradients  # 4 bytes where the 16-bit gradient has 2
    assert gradients == pytest.approx(2.0 * params, rel=0.01)
    assert _forward_backward(phased) > gradients + copy  # the forward holds the peak
    assert _scalar(phased, "total_bytes") == pytest.approx(_scalar(summed, "total_bytes") - gradients - copy, rel=1e-6)
    assert _part(phased, "gradients") == 0.0
    assert _part(phased, "optimizer") == pytest.approx(_part(summed, "optimizer") - copy, rel=1e-6)
    assert _scalar(phased, "not_live_at_peak_bytes") == pytest.approx(gradients + copy, rel=1e-6)
    assert not phased["step_holds_peak"][0]
    assert sum(phased["parts"].values())[0] == pytest.approx(_scalar(phased, "total_bytes"), rel=1e-12)


def test_with_more_micro_batches_the_gradients_stay_and_only_the_copy_is_the_steps_own(h200):
    summed = _memory(h200, freed=False, global_batch=8)
    phased = _memory(h200, global_batch=8)
    copy = FP32_GRAD_COPY_BYTES / 2.0 * _part(summed, "gradients")
    assert _scalar(phased, "total_bytes") == pytest.approx(_scalar(summed, "total_bytes") - copy, rel=1e-6)
    assert _part(phased, "gradients") == pytest.approx(_part(summed, "gradients"))


def test_when_the_activations_are_smaller_the_optimizer_step_holds_the_peak(h200):
    short = dict(micro_batch=1, global_batch=1)
    summed = _memory(h200, freed=False, **short)
    phased = _memory(h200, **short)
    activations = _forward_backward(summed)
    # 128 tokens: the activations and logits are far below the 6 bytes a parameter of the step's own states.
    batch_small = single_batch(make_model(**{**GPT_2_7B, "seq_len": 128}), Layout(dp=1, micro_batch=1,
                               global_batch=1, dtype="bf16", framework="deepspeed", flash_attention=True))
    small = per_gpu_memory(batch_small, h200)
    assert small["step_holds_peak"][0]
    assert all(_part(small, name) == 0.0 for name in FORWARD_BACKWARD_PARTS)
    assert _part(small, "gradients") > 0
    assert sum(small["parts"].values())[0] == pytest.approx(float(small["total_bytes"][0]), rel=1e-12)
    # One sequence of 2,048 tokens: whichever phase binds, the smaller of the two is what the total leaves out.
    assert _scalar(phased, "total_bytes") == pytest.approx(
        _scalar(summed, "total_bytes") - min(activations, _scalar(phased, "not_live_at_peak_bytes")), rel=1e-9)


@pytest.mark.parametrize("layout", [dict(zero=3), dict(zero=2, offload="optimizer"), dict(zero=1, grad_reduce_in_fp32=1),
                                    dict(framework="megatron")])
def test_the_rule_leaves_other_states_alone(h200, layout):
    """ZeRO-3's gradient partitions have a buffer of their own; offload moves the copy to the host; 32-bit gradients
    are the BF16_Optimizer's, kept for the run; Megatron's grad buffer lives for the whole run."""
    summed = _memory(h200, freed=False, **layout)
    phased = _memory(h200, **layout)
    assert _scalar(phased, "total_bytes") == _scalar(summed, "total_bytes")
    assert _scalar(phased, "not_live_at_peak_bytes") == 0.0


def test_zero1_offload_frees_the_gpu_gradients_too_and_its_copy_is_the_hosts(h200):
    """DeepSpeed ZeRO-1 under optimizer offload copies each 16-bit gradient of its partition to the host fp32 buffer
    and clears it (stage_1_and_2.py:1590-1605, 1650-1667 at edaa722); zero_grad sets the rest to None after the step
    (:2017-2028). With one micro-batch a step the gradients are out of the forward's peak as without offload (the
    audit: offload counted them as live and needed 1.1 GiB more than no offload); the fp32 copy is on the host."""
    summed = _memory(h200, freed=False, zero=1, offload="optimizer")
    phased = _memory(h200, zero=1, offload="optimizer")
    gradients = _part(summed, "gradients")
    assert gradients > 0 and _part(summed, "optimizer") == 0.0  # the whole 16-bit gradients, the states on the host
    assert _scalar(phased, "step_only_copy_bytes") == 0.0
    assert _scalar(phased, "not_live_at_peak_bytes") == pytest.approx(gradients, rel=1e-9)
    assert _scalar(phased, "total_bytes") == pytest.approx(_scalar(summed, "total_bytes") - gradients, rel=1e-9)
    assert _scalar(phased, "total_bytes") < _scalar(_memory(h200, zero=1), "total_bytes")


def _zero0_runs():
    runs = json.loads(PROFILE.read_text(encoding="utf-8"))["runs"]
    chosen = [r for r in runs.values() if r["spec"]["zero"] == 0 and r["spec"]["dtype"] == "bf16"]
    assert len(chosen) == 5
    return chosen


def test_counted_deepspeed_states_are_the_models_states_without_the_steps_copy():
    """DeepSpeed 0.19.8 on the H200, ZeRO-0 bf16: the distinct tensors live after backward are 16 bytes a parameter
    (16-bit weights and gradients, fp32 master and Adam) and after the step 14 (the gradients freed), counted by the
    profiling worker in the last warm-up step. The model's states are 2 + 2 + 16 with the 4-byte fp32 copy, which
    exists only inside the step (frameworks/deepspeed.py), so 16 and 14 without it."""
    deepspeed = FRAMEWORKS["deepspeed"]
    optimizer = deepspeed.optimizer_bytes + FP32_GRAD_COPY_BYTES
    weights = gradients = 2.0
    for run in _zero0_runs():
        params = run["parameters"]["total"]
        memory = run["ranks"][0]["memory"]
        after_backward = memory["after_backward"]["device_bytes"] / params
        after_step = memory["after_step"]["device_bytes"] / params
        assert after_backward == pytest.approx(weights + gradients + optimizer - FP32_GRAD_COPY_BYTES, rel=0.01)
        assert after_step == pytest.approx(weights + optimizer - FP32_GRAD_COPY_BYTES, rel=0.01)


def test_the_zero_0_1_2_peaks_of_one_model_are_equal_as_the_rule_says():
    """At 355M parameters ZeRO 0, 1 and 2 peaked at the same allocator bytes to 0.01% (one rank: nothing to shard), as they
    must if no gradient is live at the peak; ZeRO-3, whose gradient partitions have a buffer of their own, peaked
    2 bytes a parameter higher."""
    runs = json.loads(PROFILE.read_text(encoding="utf-8"))["runs"]
    peaks = {r["spec"]["zero"]: r["ranks"][0]["peak_allocator_bytes"] for r in runs.values()
             if r["spec"]["hidden"] == 1024}
    params = 406_382_592
    assert peaks[1] == pytest.approx(peaks[0], rel=1e-3) and peaks[2] == pytest.approx(peaks[0], rel=1e-3)
    assert (peaks[3] - peaks[0]) / params == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize("zero", [2, 3])
def test_fsdp_leaves_its_sharded_fp32_gradients_out_of_the_activation_peak(h200, zero):
    """torchtitan zeroes the gradients (to None) as each step begins and FSDP2 makes the sharded fp32 gradients again
    in backward (frameworks/fsdp.py): with one micro-batch a step they are not live at the forward's peak. No fp32
    copy: the optimizer steps on them as they are, so the optimizer part keeps its bytes."""
    layout = dict(framework="fsdp", zero=zero, dp=8, micro_batch=1, global_batch=8)
    summed = _memory(h200, freed=False, **layout)
    phased = _memory(h200, **layout)
    gradients = _part(summed, "gradients")
    params = 2_780_451_840
    assert gradients == pytest.approx(4.0 * params / 8, rel=0.01)  # fp32, sharded over 8
    assert _forward_backward(phased) > gradients  # 2,048 tokens of a 2.78B model: the forward binds
    assert _scalar(phased, "total_bytes") == pytest.approx(_scalar(summed, "total_bytes") - gradients, rel=1e-9)
    assert _part(phased, "gradients") == 0.0
    assert _part(phased, "optimizer") == pytest.approx(_part(summed, "optimizer"), rel=1e-12)
    assert _scalar(phased, "not_live_at_peak_bytes") == pytest.approx(gradients, rel=1e-9)


@pytest.mark.parametrize("layout", [dict(zero=0, dp=8, micro_batch=1, global_batch=16),
                                    dict(zero=3, dp=8, micro_batch=1, global_batch=16)])
def test_fsdp_keeps_accumulating_gradients(h200, layout):
    """With two micro-batches the gradients of the first are live at the second's forward, DDP's (ZeRO-0) and FSDP2's
    alike."""
    summed = _memory(h200, framework="fsdp", freed=False, **layout)
    phased = _memory(h200, framework="fsdp", **layout)
    assert _scalar(phased, "total_bytes") == _scalar(summed, "total_bytes")


def test_ddp_frees_its_grads_after_the_step_but_keeps_its_buckets_copy(h200):
    """torchtitan's ZeRO-0 is DDP: zero_grad sets each .grad to None at the step's start, so with one micro-batch a
    step they are not live at the forward's peak; the buckets' flat copy of them is, for the run
    (Framework.zero0_bucket_gradient_copy; tests/profile/test_ddp_memory.py measures it)."""
    layout = dict(zero=0, dp=8, micro_batch=4, global_batch=32)
    summed = _memory(h200, framework="fsdp", freed=False, **layout)
    phased = _memory(h200, framework="fsdp", **layout)
    gradients = _part(summed, "gradients")
    assert _part(phased, "comm_buckets") == pytest.approx(gradients, rel=1e-12)  # the copy: fp32, as the .grad
    assert _forward_backward(phased) > gradients  # the forward binds
    assert _part(phased, "gradients") == 0.0
    assert _scalar(phased, "total_bytes") == pytest.approx(_scalar(summed, "total_bytes") - gradients, rel=1e-9)


def test_simulate_names_the_phase_and_says_fsdp_has_no_fp32_copy(cli):
    """simulate's peak line: DeepSpeed frees 16-bit gradients and the fp32 copy the optimizer steps on; FSDP2 frees
    its fp32 gradients, and there is no copy to name."""
    shape = ["--layers", "32", "--hidden", "2560", "--heads", "32", "--seq-len", "2048", "--vocab", "50304",
             "--cluster", "dgx-h200"]
    code, out, _ = cli(["simulate", *shape, "--gpus", "8", "--micro-batch", "1", "--global-batch", "8",
                        "--framework", "fsdp", "--zero", "3"])
    assert code == 0
    line = next(l for l in out.splitlines() if l.startswith("peak:"))
    assert line.startswith("peak: the forward's activations;") and "fp32 copy" not in line
    code, out, _ = cli(["simulate", *shape, "--gpus", "1", "--micro-batch", "4", "--global-batch", "4",
                        "--framework", "deepspeed", "--zero", "0"])
    assert code == 0
    assert "of gradients and their fp32 copy exist only" in next(l for l in out.splitlines() if l.startswith("peak:"))
