"""The cost model at the ends of its range: weak scaling to 16k GPUs, the launch floor of tiny work,
frameworks as data (overlaps, gradient dtype, sharding group), uneven pipeline stages."""

from __future__ import annotations

import numpy as np
import pytest

from planner.cost import kernels
from planner.cost.estimate import simulate
from planner.errors import PlannerInputError
from planner.cost.memory import per_gpu_memory
from planner.specs.candidate_batch import single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import PRESETS, make_model


@pytest.fixture(scope="module")
def h100():
    return load_cluster("dgx-h100")


@pytest.fixture(scope="module")
def a100():
    return load_cluster("dgx-a100-80gb")


def _zero3_70b(gpus, framework, cluster):
    """The issue's weak-scaling case: Llama-3 70B, ZeRO-3 / FSDP, tp1 pp1, micro-batch 2, seq 8192, full
    recompute, global batch 2 x GPUs."""
    layout = Layout(dp=gpus, zero=3, micro_batch=2, global_batch=2 * gpus, recompute="full", framework=framework)
    return simulate(PRESETS["llama3-70b"], layout, cluster)


@pytest.mark.parametrize("gpus", [2048, 8192])
def test_fsdp_weak_scaling_is_flat_to_8192_gpus(h100, gpus):
    """One all-gather per wrapped block, prefetched behind the previous block's compute (FSDP2): the
    step at 2,048 and 8,192 GPUs stays within 10% of 128 GPUs, as published FSDP weak scaling does."""
    base = _zero3_70b(128, "fsdp", h100)["step_time_s"]
    assert _zero3_70b(gpus, "fsdp", h100)["step_time_s"] / base == pytest.approx(1.0, abs=0.10)


@pytest.mark.parametrize("gpus", [2048, pytest.param(8192, marks=pytest.mark.xfail(strict=True, reason=(
    "measured 1.145 x the 128-GPU step (1.141, 18.95 s vs 16.61 s, before DeepSpeed's ZeRO-3 reduce-scatter was priced per 5e8-element bucket flush: 70B's 856M-element layers take 1.7 calls each; 1.146, 19.04 vs 16.62 s, at the assumed 0.75 link "
    "efficiencies; 1.068 before the persistent parameters' re-gather was "
    "priced): after every step today's DeepSpeed gathers each of Llama-3 70B's 161 norm weights again in an "
    "all-gather of its own over all 8,192 ranks (stage3.py:2839-2841 -> partition_parameters.py:2065-2074, "
    "frameworks/deepspeed.py), 8.2 ms of ring latency each by NCCL's model, 1.31 s a step; issue 11 asks "
    "for 10%, which DeepSpeed's own schedule does not give at this scale")))])
def test_deepspeed_zero3_weak_scaling_is_flat_to_8192_gpus(h100, gpus):
    """DeepSpeed fetches Megatron-DeepSpeed's four weight modules per layer in a call each (coalesced,
    prefetched on its own stream: partitioned_param_coordinator.py). NCCL's ring all-gather latency grows
    with the ranks (tuning.cc), yet four calls per layer still fit behind the layer's compute at 8,192 GPUs;
    the persistent parameters' re-gather after each step does not (xfail above). Within 10% of 128 GPUs, and
    its exposed communication never below FSDP's one call per layer (the steps also differ by each stack's
    HBM copies, cost/shard_copies.py)."""
    base = _zero3_70b(128, "deepspeed", h100)["step_time_s"]
    deepspeed = _zero3_70b(gpus, "deepspeed", h100)
    assert deepspeed["step_time_s"] / base == pytest.approx(1.0, abs=0.10)
    assert deepspeed["time"]["dp_comm_exposed"] >= _zero3_70b(gpus, "fsdp", h100)["time"]["dp_comm_exposed"]


@pytest.mark.parametrize("framework", ["other", "fsdp"])
def test_ddp_8b_weak_scaling_to_16384_gpus(h100, framework):
    """An 8B DDP step (25 MiB gradient buckets all-reduced behind backward) at 16,384 GPUs within 10% of
    128: NCCL picks tree for the many mid-sized calls, whose latency grows with log2(nodes), and its ring
    bandwidth is the bottleneck link's, which does not fall with the node count."""
    def step(gpus):
        layout = Layout(dp=gpus, zero=0, micro_batch=1, global_batch=gpus, framework=framework)
        return simulate(PRESETS["llama3-8b"], layout, h100)["step_time_s"]

    assert step(16384) / step(128) == pytest.approx(1.0, abs=0.10)


def test_megatron_bucket_grows_with_dp(h100):
    """Megatron-Core sizes gradient buckets max(40M, 1M x dp) parameters: at dp 16,384 the 8B model is one
    bucket, reduced after backward rather than behind it (a cost of its design, not of the network)."""
    def exposed(gpus):
        layout = Layout(dp=gpus, zero=1, micro_batch=1, global_batch=gpus, framework="megatron", dp_comm_overlap=True)
        return simulate(PRESETS["llama3-8b"], layout, h100)["time"]["dp_comm_exposed"]

    assert exposed(16384) > 10 * exposed(128)


def test_tiny_work_cannot_run_faster_than_its_kernel_launches(a100):
    """12 layers of hidden 1024 at tp 8, micro-batch 1 on dgx-a100-80gb (issue 11). Three floors, each cited:
    - kernels x launch latency: 14 kernels forward and 24 backward per layer at tp 8 (kernels.py, counted
      from Megatron-Core's layer) x KERNEL_LAUNCH_S (2.6 us);
    - the eager per-layer dispatch, FRAMEWORK_OVERHEAD_PER_LAYER_S (12 x (8.6 - 2.6) us);
    - small-message collectives: each of the 4 tp all-reduces of 2048 x 1024 x 2 bytes pays NCCL's latency
      (tuning.cc: base + 2 x 7 NVLink steps), which no bandwidth can remove.
    A layer's pass takes max(issue time, GPU work + exposed communication)."""
    from planner.cost import collectives
    from planner.specs.topology import group_links_arrays

    model = make_model(name="tiny", layers=12, hidden=1024, heads=16, vocab=51200, seq_len=2048)
    result = simulate(model, Layout(tp=8, micro_batch=1, global_batch=1, framework="megatron"), a100)
    issue_fwd = 14 * kernels.KERNEL_LAUNCH_S + kernels.FRAMEWORK_OVERHEAD_PER_LAYER_S
    issue_bwd = 24 * kernels.KERNEL_LAUNCH_S + kernels.FRAMEWORK_OVERHEAD_PER_LAYER_S
    parts = result["time"]
    per_layer = sum(parts[k] for k in ("forward", "backward", "elementwise", "launch_floor", "tp_comm")) / 12
    assert per_layer >= issue_fwd + issue_bwd
    # The all-reduce latency alone (a 1-byte message) times 4 per layer is a floor of the tp time.
    links = group_links_arrays(a100, [8], [1])
    eff = a100.efficiency
    latency = collectives.all_reduce_time(1.0, links, eff.scale_up_bandwidth_efficiency,
                                          eff.scale_out_bandwidth_efficiency)[0]
    assert parts["tp_comm"] / 12 >= 4 * latency
    assert parts["tp_comm"] > parts["forward"] + parts["backward"]  # tiny layers are communication-bound
    # Shorter sequences: the GPU work and the collectives shrink below what the CPU needs to issue.
    short = make_model(name="tiny-short", layers=12, hidden=1024, heads=16, vocab=51200, seq_len=128)
    launch_bound = simulate(short, Layout(tp=1, micro_batch=1, global_batch=1, framework="megatron"), a100)["time"]
    assert launch_bound["launch_floor"] > 0
    # tp 1: 12 kernels forward, 22 backward; the output layer only adds to forward and backward.
    layer_issue = (12 + 22) * kernels.KERNEL_LAUNCH_S + 2 * kernels.FRAMEWORK_OVERHEAD_PER_LAYER_S
    passes = sum(launch_bound[k] for k in ("forward", "backward", "elementwise", "launch_floor"))
    assert passes >= 12 * layer_issue * (1 - 1e-12)
    # A GPT-3-sized layer is far above its floor.
    big = simulate(PRESETS["gpt3-175b"], Layout(tp=8, pp=8, micro_batch=1, global_batch=8, framework="megatron"), a100)
    assert big["time"]["launch_floor"] == 0.0


def test_tp_comm_overlap_hides_most_of_the_tensor_parallel_time(h100):
    """Transformer Engine userbuffers: the collective split into tp chunks behind the GEMM it feeds."""
    model = PRESETS["llama3-70b"]
    base = dict(tp=8, pp=4, dp=2, micro_batch=1, global_batch=64, seq_parallel=True, framework="megatron",
                recompute="selective")
    off = simulate(model, Layout(**base, tp_comm_overlap=False), h100)["time"]["tp_comm"]
    on = simulate(model, Layout(**base, tp_comm_overlap=True), h100)["time"]["tp_comm"]
    assert 0 < on < 0.5 * off


def test_megatron_reduces_bf16_gradients_in_fp32(h100):
    """Megatron-LM with --bf16 accumulates and reduces gradients in fp32 (arguments.py); DeepSpeed
    reduces in the model dtype (communication_data_type), with an all-reduce of each bucket
    (frameworks/deepspeed.py sharded_reduce_all_reduces)."""
    model = PRESETS["llama3-8b"]
    layout = dict(dp=64, zero=1, micro_batch=1, global_batch=64)
    megatron = simulate(model, Layout(**layout, framework="megatron"), h100)["comm_bytes_per_step"]["dp"]
    deepspeed = simulate(model, Layout(**layout, framework="deepspeed"), h100)["comm_bytes_per_step"]["dp"]
    P = model.total_params
    assert deepspeed == pytest.approx((2 * 2 + 2) * P, rel=1e-3)  # bf16 all-reduce + bf16 parameter all-gather
    assert megatron == pytest.approx((4 + 2) * P, rel=1e-3)  # fp32 reduce-scatter + bf16 parameter all-gather


def test_deepspeed_bf16_optimizer_adds_each_micro_batch_into_fp32_gradients(h100):
    """DeepSpeed bf16 with fp32 gradient accumulation at ZeRO-1 runs the BF16_Optimizer (engine.py:1316-1318):
    after every micro-batch it casts each bf16 .grad to fp32 and adds it into the fp32 copy, 2 + 4 + 4 + 4 + 4
    = 18 bytes per parameter at HBM speed (bf16_optimizer.py:332-347), and holds both gradients. Megatron
    accumulates into its fp32 main_grad inside the wgrad GEMM: no such pass."""
    model = PRESETS["llama3-8b"]
    layout = dict(dp=8, zero=1, micro_batch=1, global_batch=32, grad_reduce_in_fp32=True)
    fp32 = simulate(model, Layout(**layout, framework="deepspeed"), h100)
    hbm = h100.accelerator.hbm_bytes_per_s * h100.efficiency.hbm_efficiency
    m, P = 4, model.total_params
    assert fp32["time"]["grad_accumulation"] == pytest.approx(m * 18.0 * P / hbm, rel=1e-6)
    assert fp32["memory"]["gradients"] == pytest.approx((4 + 2) * P, rel=1e-6)
    bf16 = simulate(model, Layout(**{**layout, "grad_reduce_in_fp32": False}, framework="deepspeed"), h100)
    megatron = simulate(model, Layout(**layout, framework="megatron"), h100)
    assert "grad_accumulation" not in megatron["time"]
    # Accumulated in bf16 there is no BF16_Optimizer pass, only autograd's in-place add after the first micro-batch
    # (test below).
    assert bf16["time"]["grad_accumulation"] == pytest.approx((m - 1) * 6.0 * P / hbm, rel=1e-6)
    assert fp32["step_time_s"] > bf16["step_time_s"]


def test_deepspeed_bf16_at_zero_0_under_the_pipeline_engine_runs_the_sharding_bf16_optimizer(h100):
    """bf16 at ZeRO-0 with a pipeline (a PipelineModule) runs DeepSpeed's BF16_Optimizer with bf16 accumulation
    (engine.py:2014-2018 @edaa7221, frameworks/deepspeed.py): the fp32 master, Adam states and the step's fp32
    gradient copy (16 B per parameter) sharded over dp, a bf16 gradient buffer kept beside each micro-batch's bf16
    .grad (2 + 2 B), the gradient all-reduced and the updated bf16 parameters all-gathered (2 x 2P + 2P bytes).
    The step's fp32 gradient copy lives only in step(), not at the forward/backward peak.
    Without a pipeline bf16 ZeRO-0 is DDP (DDP_BFLOAT16): every state whole, no all-gather. The BF16_Optimizer with
    fp32 accumulation (ZeRO-1) shards the same."""
    model = PRESETS["llama3-8b"]
    layout = dict(dp=8, zero=0, micro_batch=1, global_batch=32, framework="deepspeed")
    piped = simulate(model, Layout(**layout, pp=2), h100)
    P = piped["comm_bytes_per_step"]["dp"] / (2 * 2.0 + 2.0)
    # Adam and the fp32 master over 8 ranks at the peak (the fp32 gradient copy is the step's, below).
    assert piped["memory"]["optimizer"] == pytest.approx(12.0 * P / 8, rel=1e-9)
    assert piped["memory"]["gradients"] == pytest.approx((2.0 + 2.0) * P, rel=1e-9)
    # The fp32 copy of the shard exists only in step() (bf16_optimizer.py:415-426); the bf16 buffer is kept.
    batch = single_batch(model, Layout(**layout, pp=2))
    held = per_gpu_memory(batch, h100)
    assert held["step_only_copy_bytes"][0] == pytest.approx(4.0 * P / 8, rel=1e-9)
    assert held["step_only_state_bytes"][0] == held["step_only_copy_bytes"][0]
    # Every micro-batch: .grad zeroed (2), autograd's add into it (6), hp_grad.add_ (6) = 14 B per parameter
    # (bf16_optimizer.py:612-623, 523 in 0.19.8); DDP at pp 1: autograd's add after the first micro-batch only.
    hbm = h100.accelerator.hbm_bytes_per_s * h100.efficiency.hbm_efficiency
    assert piped["time"]["grad_accumulation"] == pytest.approx(4 * 14.0 * P / hbm, rel=1e-6)
    ddp = simulate(model, Layout(**layout, pp=1), h100)
    P1 = ddp["comm_bytes_per_step"]["dp"] / (2 * 2.0)  # the all-reduce alone
    assert P1 == pytest.approx(model.total_params, rel=1e-5)
    assert ddp["memory"]["optimizer"] >= 12.0 * P1  # Adam and the fp32 master whole (the fp32 gradient copy is the step's)
    # The fp32-accumulating BF16_Optimizer (ZeRO-1; today's DeepSpeed refuses it at ZeRO-0) holds the same states.
    fp32 = simulate(model, Layout(**{**layout, "zero": 1}, pp=2, grad_reduce_in_fp32=True), h100)
    assert fp32["memory"]["optimizer"] == pytest.approx(piped["memory"]["optimizer"], rel=1e-12)


@pytest.mark.parametrize("zero, passes", [(0, 3), (1, 3), (2, 0)])
def test_deepspeed_16_bit_gradients_accumulate_by_autograd_at_zero_0_and_1(h100, zero, passes):
    """DeepSpeed fp16 at ZeRO 0 and 1 keeps each parameter's .grad over the micro-batches: no gradient hook reduces
    before the accumulation boundary (stage_1_and_2.py:713-715, 2293-2295), so autograd adds each later micro-batch's
    gradient in place, 2 + 2 read and 2 written bytes per parameter (frameworks/deepspeed.py): m - 1 = 3 passes for
    4 micro-batches. At ZeRO-2 the hooks reduce every micro-batch into the partition and drop the gradient: none."""
    model = PRESETS["llama3-8b"]
    result = simulate(model, Layout(dp=8, zero=zero, micro_batch=1, global_batch=32, dtype="fp16",
                                    framework="deepspeed"), h100)
    hbm = h100.accelerator.hbm_bytes_per_s * h100.efficiency.hbm_efficiency
    assert result["time"].get("grad_accumulation", 0.0) == pytest.approx(passes * 6.0 * model.total_params / hbm,
                                                                        rel=1e-6)


def test_megatron_2022_fp16_adds_each_micro_batch_gradient_after_the_first(a100):
    """Megatron-LM v2.5 in fp16 (no gradient_accumulation_fusion before 83b1e42f, and none for fp16 gradients until
    07916bf2): autograd's AccumulateGrad keeps the first micro-batch's fp16 weight gradient and adds every later one
    in place, read 2 + 2 and write 2 bytes per parameter at HBM speed (frameworks/megatron_2022.py). So m - 1 passes
    a step; none with one micro-batch, with bf16 (fp32 gradients, fused) or in Megatron-Core (fused)."""
    model = PRESETS["llama3-8b"]
    layout = dict(dp=8, micro_batch=1, global_batch=32, dtype="fp16", framework="megatron-2022")
    fp16 = simulate(model, Layout(**layout), a100)
    hbm = a100.accelerator.hbm_bytes_per_s * a100.efficiency.hbm_efficiency
    m, P = 4, model.total_params
    assert fp16["time"]["grad_accumulation"] == pytest.approx((m - 1) * 6.0 * P / hbm, rel=1e-6)
    one = simulate(model, Layout(**{**layout, "global_batch": 8}), a100)
    bf16 = simulate(model, Layout(**{**layout, "dtype": "bf16"}), a100)
    core = simulate(model, Layout(**{**layout, "framework": "megatron"}), a100)
    for other in (one, bf16, core):
        assert "grad_accumulation" not in other["time"]
    # In place: no second gradient copy is held.
    assert fp16["memory"]["gradients"] == pytest.approx(core["memory"]["gradients"], rel=1e-9)
    # The pass rides in every stage's micro-batch slot, on that stage's own parameters: the steady state's m slots
    # carry the pacing (last) stage's, the 1F1B fill and drain (p - 1 slots) the other stages' mean.
    piped = dict(layout, tp=8, pp=4, dp=1)
    fp16, bf16 = (simulate(model, Layout(**{**piped, "dtype": d}), a100)["time"] for d in ("fp16", "bf16"))
    from planner.cost.stages import stage_split
    from planner.specs.candidate_batch import single_batch
    first, middle, last = (float(x[0]) for x in stage_split(single_batch(model, Layout(**piped)))["params"])
    others = (first + 2 * middle) / 3  # the first and the two middle stages; the last paces (the output layer)
    per_pacing_slot = fp16["grad_accumulation"] / 32  # m = 32
    assert fp16["bubble"] - bf16["bubble"] == pytest.approx(3 * per_pacing_slot * others / last, rel=1e-6)


def test_deepspeed_bf16_optimizer_all_reduces_the_whole_fp32_gradient_then_gathers(h100):
    """BF16_Optimizer has no reduce_gradients, so the engine all-reduces every fp32 gradient over dp
    (buffered_allreduce_fallback: runtime/engine.py:2056-2062, 2491-2535; pipe/engine.py:293-304 @38327e07) though
    each rank updates only its shard, and its step ends with an all-gather of the bf16 parameters (update_lp_params,
    bf16_optimizer.py:423-437): per rank 2 x 4P + 2P bytes, where ZeRO-1 with bf16 gradients all-reduces its bf16
    buckets (2 x 2P + 2P, frameworks/deepspeed.py sharded_reduce_all_reduces). Not overlapped (after the last
    backward)."""
    from planner.cost import collectives, groups
    model = PRESETS["llama3-8b"]
    layout = dict(dp=8, micro_batch=1, global_batch=32, framework="deepspeed")
    # Today's DeepSpeed runs it at ZeRO-1 only: at ZeRO-0 the engine raises (engine.py:2020-2021 @edaa7221).
    with pytest.raises(PlannerInputError, match="in fp32 only from ZeRO-1"):
        simulate(model, Layout(**layout, zero=0, grad_reduce_in_fp32=True), h100)
    fp32 = {z: simulate(model, Layout(**layout, zero=z, grad_reduce_in_fp32=True), h100) for z in (1,)}
    bf16 = simulate(model, Layout(**layout, zero=1, grad_reduce_in_fp32=False), h100)
    P = bf16["comm_bytes_per_step"]["dp"] / (2 * 2.0 + 2.0)  # the stage's parameters: all-reduce + all-gather, 2 B
    assert P == pytest.approx(model.total_params, rel=1e-5)
    for z in (1,):
        assert fp32[z]["comm_bytes_per_step"]["dp"] == pytest.approx((2 * 4.0 + 2.0) * P, rel=1e-12)
    # The time is that of the two collectives, one after the other: 8 ranks in one node, the all-reduce in 5e8-element
    # buckets (DeepSpeed's reduce_bucket_size), the all-gather one call per parameter group (Megatron-DeepSpeed's
    # two: bf16_optimizer.py update_lp_params -> runtime/utils.py all_gather_dp_groups, frameworks/deepspeed.py).
    links = groups.links(h100, 8, 1)
    kw = groups.collective_kwargs(h100)
    buckets = np.ceil(P / 5e8)
    expected = (collectives.all_reduce_time(4.0 * P, links, calls=buckets, **kw)
                + collectives.all_gather_time(2.0 * P, links, calls=2.0, **kw))
    for z in (1,):
        assert fp32[z]["time"]["dp_comm_exposed"] == pytest.approx(np.ravel(expected)[0], rel=1e-9)


def test_context_parallel_ranks_join_the_gradient_reduction(h100):
    """cp ranks hold the same weights on different tokens: their gradients are reduced with dp's."""
    model = PRESETS["llama3-8b"]
    with_cp = simulate(model, Layout(dp=8, cp=2, micro_batch=1, global_batch=8, framework="megatron"), h100)
    assert with_cp["comm_bytes_per_step"]["dp"] > 0
    single = simulate(model, Layout(dp=1, cp=2, micro_batch=1, global_batch=1, framework="megatron"), h100)
    assert single["comm_bytes_per_step"]["dp"] > 0  # dp = 1, but two cp ranks still all-reduce


@pytest.mark.parametrize("pp, vpp, gpus, global_batch", [(8, 8, 512, 512), (9, 7, 576, 504)])
def test_nvidia_llama31_405b_layouts_fit_in_80gb(h100, pp, vpp, gpus, global_batch):
    """NVIDIA's published Llama 3.1 405B layouts (126 layers, tp8 cp2, pp8 x vpp8 on 512 H100 and pp9 x vpp7
    on 576) with NeMo's recipe settings (NVIDIA/NeMo@8cfedd72 nemo/collections/llm/recipes/llama31_405b.py:
    micro-batch 1, global batch 512, seq 8192, sequence parallel, distributed optimizer, TP and DP overlap on,
    grad_reduce_in_fp32=False at line 251; no recompute, scripts/performance/.../model_configs_h100.csv):
    uneven stages (Megatron's embedding/loss slots on pp8 x vpp8), optimizer sharded over dp x cp, bf16
    gradients. Megatron-LM's default fp32 gradients would not fit, which is why NeMo turns them off.
    The recipe's 512 sequences are 128 micro-batches per data-parallel rank on 576 GPUs, which the Megatron-Core of
    those runs refused on pp 9 (interleaving needed a multiple of pp: core_v0.8.0 pipeline_parallel/schedules.py:
    613-617; today's runs them in groups of 13, frameworks.interleaving_round): the pp 9 layout is checked at 504,
    the nearest batch it could have run."""
    dp = gpus // (8 * pp * 2)
    recipe = dict(tp=8, pp=pp, cp=2, vpp=vpp, dp=dp, micro_batch=1, global_batch=global_batch, seq_parallel=True,
                  framework="megatron", zero=1, recompute="none", tp_comm_overlap=True, dp_comm_overlap=True)
    result = simulate(PRESETS["llama3-405b"], Layout(**recipe, grad_reduce_in_fp32=False), h100)
    assert result["fits"], result["memory"]["total_bytes"] / 2**30
    assert np.isfinite(result["step_time_s"]) and 0 < result["mfu"] < 1
    fp32_grads = simulate(PRESETS["llama3-405b"], Layout(**recipe), h100)
    assert fp32_grads["memory"]["total_bytes"] > result["memory"]["total_bytes"]


def test_unfused_attention_backward_is_two_forwards_flash_two_and_a_half(a100):
    """FlashAttention recomputes the scores in backward (5 products to 2: 2.5x); the unfused path keeps P
    (4 to 2: 2x). With the same per-direction efficiency the ratio of backward to forward shows it."""
    assert kernels.BACKWARD_FLOPS_RATIO == 2.5


def test_torchtitan_ddp_all_reduces_after_every_micro_batch(h100):
    """torchtitan's ZeRO-0 is DDP with no `no_sync` in its accumulation loop (train.py:575-590 at 238fa995;
    frameworks/fsdp.py zero0_reduces_every_microbatch): 4 micro-batches all-reduce the gradients 4 times. Megatron's
    DDP reduces once, after the last backward."""
    model = make_model(layers=8, hidden=2048, heads=16, vocab=32000, seq_len=2048)

    def dp_bytes(framework, global_batch):
        layout = Layout(dp=8, zero=0, micro_batch=1, global_batch=global_batch, framework=framework)
        return simulate(model, layout, h100)["comm_bytes_per_step"]["dp"]

    assert dp_bytes("fsdp", 32) == pytest.approx(4 * dp_bytes("fsdp", 8), rel=1e-9)
    assert dp_bytes("fsdp", 8) == pytest.approx(2 * 4.0 * model.total_params, rel=1e-5)  # fp32 all-reduce
    assert dp_bytes("megatron", 32) == pytest.approx(dp_bytes("megatron", 8), rel=1e-9)


def test_fsdp_zero2_gathers_and_reduces_every_micro_batch(h100):
    """FSDP's ZeRO-2 (reshard_after_forward=False) reshards after each backward and torchtitan reduces every
    micro-batch: with 4 micro-batches it moves 4 all-gathers and 4 reduce-scatters of the model; Megatron's
    ZeRO-2 (Megatron-FSDP optim_grads) gathers once after the step; DeepSpeed's ZeRO-2 all-reduces every
    micro-batch (frameworks/deepspeed.py sharded_reduce_all_reduces) and gathers once."""
    model = make_model(layers=16, hidden=4096, heads=32, vocab=32000, seq_len=4096)

    def dp_bytes(framework):
        layout = Layout(dp=64, zero=2, micro_batch=1, global_batch=256, framework=framework)
        return simulate(model, layout, h100)["comm_bytes_per_step"]["dp"]

    params = model.total_params
    assert dp_bytes("fsdp") == pytest.approx(4 * (4.0 + 2.0) * params, rel=1e-5)  # fp32 reduce, bf16 gather
    assert dp_bytes("megatron") == pytest.approx(4 * 4.0 * params + 2.0 * params, rel=1e-5)
    assert dp_bytes("deepspeed") == pytest.approx(4 * 2 * 2.0 * params + 2.0 * params, rel=1e-5)


def test_ddp_buckets_hold_their_cap_in_bytes_of_the_reduction_dtype():
    """PyTorch DDP caps a bucket in bytes: bucket_cap_mb = 25 (_DEFAULT_BUCKET_CAP_MB) x 1024 x 1024 (_MB_TO_BYTES),
    torch 2.13 nn/parallel/distributed.py:31-33, 86-104. The neutral stack's 25 MiB hold 13,107,200 bf16 gradients or
    6,553,600 fp32 ones (it counted 6.25e6 elements whatever the dtype: twice the calls in bf16); torchtitan's
    replicate(bucket_cap_mb=100) likewise. Stacks that count elements (DeepSpeed's reduce_bucket_size, Megatron-Core's
    bucket_size) do not change with the dtype."""
    from planner.cost.data_parallel import bucket_count
    from planner.frameworks import FRAMEWORKS, record_columns

    other, fsdp = record_columns(FRAMEWORKS["other"]), record_columns(FRAMEWORKS["fsdp"])
    params = 25 * 2**20 * 10  # 262,144,000 gradient elements
    assert bucket_count(other, params, 64, overlapped=True, reduce_bytes=2.0)[0] == 20.0  # / 13,107,200
    assert bucket_count(other, params, 64, overlapped=True, reduce_bytes=4.0)[0] == 40.0  # / 6,553,600
    assert bucket_count(fsdp, params, 64, overlapped=True, reduce_bytes=4.0)[0] == 10.0  # / 26,214,400
    assert bucket_count(fsdp, params, 64, overlapped=True, reduce_bytes=2.0)[0] == 5.0
    deepspeed = record_columns(FRAMEWORKS["deepspeed"])
    assert (bucket_count(deepspeed, 8e9, 64, overlapped=True, reduce_bytes=2.0)[0]
            == bucket_count(deepspeed, 8e9, 64, overlapped=True, reduce_bytes=4.0)[0] == 16.0)
    # Through the cost model: the neutral stack's ZeRO-1 step reduces in that many buckets, in bf16 and in fp32.
    from planner.cost.data_parallel import _data_parallel_collectives
    from planner.cost.stages import data_parallel_stage

    model, h100 = PRESETS["llama3-8b"], load_cluster("dgx-h100")
    for dtype, element_bytes in (("bf16", 2), ("fp32", 4)):
        batch = single_batch(model, Layout(dp=64, micro_batch=1, global_batch=64, zero=1, framework="other",
                                           dtype=dtype))
        params = float(data_parallel_stage(batch)[0][0])
        buckets = float(_data_parallel_collectives(batch, h100)["buckets"][0])
        assert buckets == np.ceil(params / (25 * 2**20 / element_bytes)), dtype


def test_megatron_without_the_overlap_reduces_in_one_bucket():
    """Megatron-Core sets bucket_size = None when overlap_grad_reduce is off (distributed_data_parallel.py:135-137
    at d98e8a64): one call per buffer. It was priced in max(40M, 1M x dp)-parameter buckets, each paying the ring's
    latency, so doubling dp at a fixed per-GPU load shortened the step (the cost-model audit: BLOOM 176B on B200, dp
    96 -> 192, 2.139 -> 2.113 s). Now the reduction only grows with dp."""
    from planner.cost.data_parallel import bucket_count
    from planner.frameworks import FRAMEWORKS, record_columns

    megatron, deepspeed = record_columns(FRAMEWORKS["megatron"]), record_columns(FRAMEWORKS["deepspeed"])
    assert bucket_count(megatron, 8e9, 1024, overlapped=True, reduce_bytes=4.0)[0] == 8.0  # 8e9 / (1M x 1,024)
    assert bucket_count(megatron, 8e9, 1024, overlapped=False, reduce_bytes=4.0)[0] == 1.0
    # reduce_bucket_size 5e8 elements, no such rule
    assert bucket_count(deepspeed, 8e9, 1024, overlapped=False, reduce_bytes=4.0)[0] == 16.0
    b200 = load_cluster("dgx-b200")
    steps = []
    for dp in (48, 96, 192):
        layout = Layout(tp=16, pp=5, dp=dp, cp=2, vpp=2, micro_batch=6, global_batch=72 * dp, recompute="selective",
                        seq_parallel=True, framework="megatron", tp_comm_overlap=True)
        steps.append(simulate(PRESETS["bloom-176b"], layout, b200)["time"]["dp_comm_exposed"])
    assert steps == sorted(steps)
