"""Megatron-DeepSpeed's pipeline model builds a whole s x s causal mask (the stack `--emit deepspeed` writes,
deepspeedai/Megatron-DeepSpeed@4efb479d): one bool mask for the run on every stage (pretrain_gpt.py:61-76,
args.attn_mask), and on the first and last stages a new one for every micro-batch, through two fp32 s x s tensors
(get_batch_pipe, pretrain_gpt.py:176-209 -> megatron/utils.py:162-219, no skip_mask under flash attention), which
the first stage keeps in each of its input buffers (DeepSpeed pipe/engine.py:912-936 `x.clone()`, schedule.py:247-256
max(2, min(stages - stage_id, micro_batches)) buffers). cost/memory.py pipeline_mask_bytes, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from planner.cost.memory import per_gpu_memory, pipeline_mask_bytes
from planner.frameworks import batch_framework_arrays
from planner.specs.candidate_batch import single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import ModelSpec, make_model

LONG = make_model("long", layers=32, hidden=4096, heads=32, kv_heads=8, ffn=14336, mlp="swiglu", norm="rmsnorm",
                  seq_len=16384, vocab=32000)
S2 = 16384.0**2


def _masks(framework="deepspeed", pp=4, global_batch=8, model=LONG):
    batch = single_batch(model, Layout(tp=8, pp=pp, dp=1, zero=1, micro_batch=1, global_batch=global_batch,
                                       recompute="full", seq_parallel=True, framework=framework))
    return pipeline_mask_bytes(batch, batch_framework_arrays(batch))


def test_each_stage_holds_the_runs_mask_and_the_first_and_last_build_one_per_micro_batch():
    """Held: the run's bool mask 1 on every stage, and on the first 4 input buffers x 1 (pp 4 <= 8 micro-batches).
    Built for a moment on the first and last: the fp32 build 8 (ones and their tril live together)."""
    held, build = _masks()
    assert tuple(float(np.asarray(stage)[0]) for stage in held) == (5.0 * S2, 1.0 * S2, 1.0 * S2)
    assert tuple(float(np.asarray(stage)[0]) for stage in build) == (8.0 * S2, 0.0, 8.0 * S2)


def test_the_first_stage_holds_at_least_two_input_buffers_and_at_most_pp():
    assert float(np.asarray(_masks(global_batch=1)[0][0])[0]) == (1 + 2) * S2  # max(2, min(4, 1)) = 2
    assert float(np.asarray(_masks(pp=2, global_batch=8)[0][0])[0]) == (1 + 2) * S2  # min(2, 8)


@pytest.mark.parametrize("framework, pp", [("megatron", 4), ("fsdp", 4), ("deepspeed", 1)])
def test_stacks_without_the_pipeline_model_and_no_pipeline_hold_none(framework, pp):
    """Megatron-Core builds no mask for causal flash attention; at pp 1 the launch runs GPTModel with
    --no-pipeline-parallel, whose get_batch skips the mask under flash attention (pretrain_gpt.py:116-123)."""
    masks = _masks(framework=framework, pp=pp)
    assert masks is None or not any(np.any(np.asarray(part)) for part in masks)


def test_the_first_stage_carries_its_masks_at_the_forwards_peak():
    """16,384 tokens, pp 4, 8 micro-batches per rank, no recompute: the first stage binds at the forward's peak, with
    its 5 x 268 M bytes of held masks beside the same activations as Megatron's, which has none. The build (8 x 268 M)
    happens before a micro-batch's forward, with one micro-batch's activations (8.9 GiB here) not yet there: nothing
    of it is charged on top."""
    cluster = load_cluster("dgx-h100")
    layout = dict(tp=8, pp=4, dp=8, zero=1, micro_batch=1, global_batch=64, recompute="none", seq_parallel=True)
    model = make_model("long-wide", layers=64, hidden=8192, heads=64, kv_heads=8, ffn=28672, mlp="swiglu",
                       norm="rmsnorm", seq_len=16384, vocab=32000)
    deepspeed, megatron = (per_gpu_memory(single_batch(model, Layout(framework=fw, **layout)), cluster)
                           for fw in ("deepspeed", "megatron"))
    assert int(deepspeed["binding_stage"][0]) == 0
    assert deepspeed["parts"]["pipeline_masks"][0] == 5.0 * S2
    assert deepspeed["parts"]["activations"][0] == megatron["parts"]["activations"][0]
    assert megatron["parts"]["pipeline_masks"][0] == 0.0


def test_a_build_larger_than_a_micro_batchs_activations_is_charged_what_it_exceeds_them_by():
    """A tiny model at 16,384 tokens: one micro-batch's activations on the last stage (1 layer of hidden 256 and its
    loss over a 1,000-entry vocabulary) are far below the 8 x 268 M bytes of the build, which is charged less them."""
    from planner.cost.memory import activation_bytes_per_layer

    model = make_model("tiny-long", layers=4, hidden=256, heads=4, seq_len=16384, vocab=1000)
    batch = single_batch(model, Layout(pp=4, dp=1, zero=1, micro_batch=1, global_batch=8, recompute="none",
                                       framework="deepspeed"))
    memory = per_gpu_memory(batch, load_cluster("dgx-h100"))
    stage = int(memory["binding_stage"][0])
    activations = float(activation_bytes_per_layer(batch)["stored"][0])  # one layer a stage
    charged = float(memory["parts"]["pipeline_masks"][0])
    held = (5.0 if stage == 0 else 1.0) * S2
    assert held + 8.0 * S2 - activations - float(memory["parts"]["logits"][0]) == pytest.approx(charged, rel=1e-9)


def test_the_build_is_not_charged_what_a_backwards_recompute_holds():
    """The build happens before a micro-batch's forward, in a schedule step of its own (DeepSpeed's TrainSchedule),
    when no backward is rebuilding a layer: under full recompute the working set of the layer being rebuilt is not
    live then, so it counts with the micro-batch's activations the build may take the place of. Before, this shape's
    first stage under full recompute was charged 30,720 bytes of its 32,768-byte build on top of its held masks and
    bound at 7,680 bytes more than no recompute's fullest stage (the property suite's recompute-ordering rule, found
    by a hypothesis campaign)."""
    from planner.cost.estimate import simulate

    model = ModelSpec(layers=2, hidden=16, heads=2, kv_heads=1, mlp="gelu", vocab=1, seq_len=64, bias=False,
                      position="learned", norm="layernorm")
    results = {recompute: simulate(model, Layout(pp=2, dp=1, zero=0, micro_batch=1, global_batch=1, recompute=recompute,
                                                 dtype="bf16", framework="deepspeed"), load_cluster("cpu-local"))
               for recompute in ("none", "selective", "full")}
    totals = [result["memory"]["total_bytes"] for result in results.values()]
    assert totals[0] >= totals[1] >= totals[2], totals
    # Now the first stage's build (fp32 ones and their tril, 8 x 64^2 bytes) equals its stored layer input plus the
    # rebuilt layer's working set: nothing of it is charged, and the last stage, with the loss, binds with the run's
    # mask alone (it was the first, with 3 x 64^2 held and 30,720 of build).
    assert results["full"]["memory"]["pipeline_masks"] == 1.0 * 64**2


def test_with_checkpoints_on_the_host_the_stage_still_holds_its_build():
    """DeepSpeed's cpu_checkpointing keeps at most two layers' checkpoints on the GPU, so a micro-batch's build can
    take the place of no more than those: the binding stage's activation-side parts (masks, activations, the rebuilt
    layer, the loss) are never below what the build moment holds, 5 x s^2 held plus 8 x s^2 built, here 13 GiB at
    32,768 tokens. Charging the build against a whole micro-batch's checkpoints, as if they were on the GPU, put it
    0.19 GiB short (the audit's case)."""
    model = make_model("long-32k", layers=32, hidden=4096, heads=32, kv_heads=8, ffn=14336, mlp="swiglu",
                       norm="rmsnorm", seq_len=32768, vocab=32000)
    batch = single_batch(model, Layout(tp=8, pp=4, dp=1, zero=1, micro_batch=1, global_batch=8, recompute="full",
                                       seq_parallel=True, framework="deepspeed", activation_offload=True))
    memory = per_gpu_memory(batch, load_cluster("dgx-h100"))
    assert int(memory["binding_stage"][0]) == 0
    parts = memory["parts"]
    transient = sum(float(parts[name][0]) for name in ("pipeline_masks", "activations", "recompute_working", "logits"))
    assert transient >= (5.0 + 8.0) * 32768.0**2 * (1 - 1e-12)
