"""The training stacks as data: every stack cites its source, the cost model reads them as arrays, and a
layout a stack cannot run is refused with the reason."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORK_CODES, FRAMEWORK_NAMES, FRAMEWORKS, framework_arrays
from planner.specs.candidate_batch import RECOMPUTE_CODES
from planner.specs.layout import Layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import PRESETS


def test_the_stacks_the_runs_csv_names():
    """runs_csv.md's framework column: megatron, deepspeed, fsdp, jax, other; then MegaScale (issue 16),
    DeepSpeed's ZeRO-3 of 2021 (deepspeed-v0.3), llm-foundry (FSDP1 under Composer, issue 11), Megatron-LM
    before Megatron-Core (megatron-2022) and DeepSpeed's ZeRO-2 of 2020 with the Megatron-LM fork of DeepSpeedExamples
    (deepspeed-v0.2), appended last so that the codes of the others stay as they were."""
    assert set(FRAMEWORK_NAMES) == {"megatron", "deepspeed", "fsdp", "jax", "other", "megascale", "deepspeed-v0.3",
                                    "llm-foundry", "megatron-2022", "deepspeed-v0.2"}
    assert FRAMEWORK_NAMES[:6] == ("megatron", "deepspeed", "fsdp", "jax", "other", "megascale")
    assert FRAMEWORK_NAMES[6:] == ("deepspeed-v0.3", "llm-foundry", "megatron-2022", "deepspeed-v0.2")


def test_deepspeed_v03_differs_from_deepspeed_only_in_its_zero3_collectives():
    """frameworks/deepspeed_v03.py: per-parameter calls, host work per rank, the persistent parameters' re-gather
    rank by rank after each step, fetch limits, ZeRO-1/2 reductions to each owner (not today's bucket all-reduce), no
    ZeRO-3 offload round trip of the first micro-batch's gradients, no pipeline masks (its Megatron-DeepSpeed had no
    GPTModelPipe), CPU checkpoint copies on the compute stream; ZeRO++, MiCS, the
    BF16_Optimizer (so fp16 is its default dtype), FlashAttention and today's coalesced gradient copies absent. A GPT block's gathers are 4 either way (its four weight matrices, one call per
    parameter then, per submodule now), so only the calls outside the layers differ in number."""
    from dataclasses import asdict
    old, new = asdict(FRAMEWORKS["deepspeed-v0.3"]), asdict(FRAMEWORKS["deepspeed"])
    differing = {k for k in new if old[k] != new[k]}
    assert differing == {"name", "gathers_outside_layers", "scatter_calls_per_layer",
                         "scatter_calls_outside_layers", "host_ops_per_rank_per_call",
                         "persistent_regather_views_per_rank", "persistent_regather_copies_per_rank",
                         "persistent_regather_calls_per_tensor",
                         "prefetch_live_limit_elements",
                         "reuse_limit_elements", "zeropp", "dtypes", "default_dtype", "fp32_grad_accumulation_bytes",
                         "shard_copies", "recompute_modes", "lineage", "flash_attention_default",
                         "sharded_reduce_all_reduces", "offload_zero3_first_round_trip", "offload_zero2_extra_copy_down",
                         "pipeline_mask_resident_bytes", "pipeline_mask_build_bytes",
                         "pipeline_mask_input_buffer_bytes", "activation_offload_blocking",
                         "zero3_scatter_bucket_elements", "param_gather_calls", "expert_param_group_elements"}
    assert FRAMEWORKS["deepspeed-v0.3"].lineage == "deepspeed"
    assert FRAMEWORKS["deepspeed-v0.3"].gathers_per_layer == FRAMEWORKS["deepspeed"].gathers_per_layer == 4.0
    assert FRAMEWORKS["deepspeed-v0.3"].dtypes == {"fp16", "fp32"}
    with pytest.raises(PlannerInputError, match="no ZeRO\\+\\+"):
        check_layout(PRESETS["gpt2-xl"], Layout(framework="deepspeed-v0.3", zero=3, dp=16, zero_hpz=8))


def test_deepspeed_v02_differs_from_deepspeed_in_its_model_code_kernels_and_what_did_not_exist():
    """frameworks/deepspeed_v02.py: the 2020 Megatron-LM fork's unfused kernels, its checkpoint rebuild's copies, the
    ZeRO-2 all-gather's copy-out, CPU checkpoint copies on the compute stream; no pipeline engine, offload, ZeRO-3,
    ZeRO++, bf16, selective recompute,
    sequence parallelism or FlashAttention yet."""
    from dataclasses import asdict
    old, new = asdict(FRAMEWORKS["deepspeed-v0.2"]), asdict(FRAMEWORKS["deepspeed"])
    assert {k for k in new if old[k] != new[k]} == {
        "name", "lineage", "unfused_score_accesses_forward", "unfused_score_accesses_backward",
        "unfused_hidden_accesses_forward", "unfused_qkv_accesses_forward", "unfused_ffn_accesses_forward",
        "checkpoint_gather_hbm_accesses", "shard_copies", "zero_stages", "supports_pipeline", "supports_offload",
        "zeropp", "dtypes", "default_dtype", "fp32_grad_accumulation_bytes", "recompute_modes",
        "partition_activations_with_sequence_parallel", "flash_attention_default", "sharded_reduce_all_reduces",
        "activation_offload_blocking", "param_gather_calls", "expert_param_group_elements"}
    assert FRAMEWORKS["deepspeed-v0.2"].lineage == "deepspeed"
    for layout, reason in [(dict(zero=3, dp=2, global_batch=2), "supports stages"),
                           (dict(pp=2, global_batch=2), "no pipeline parallelism"),
                           (dict(zero=1, dp=2, global_batch=2, offload="optimizer"), "no optimizer/parameter offload"),
                           (dict(dtype="bf16"), "trains in fp16, fp32"),
                           (dict(recompute="selective"), "recomputes activations none or full")]:
        with pytest.raises(PlannerInputError, match=reason):
            check_layout(PRESETS["gpt2-xl"], Layout(framework="deepspeed-v0.2", **{"dtype": "fp16", **layout}))


@pytest.mark.parametrize("name", ["megatron", "deepspeed", "fsdp", "jax", "megascale", "deepspeed_v03", "llm-foundry",
                                  "megatron_2022", "deepspeed_v02"])
def test_every_stack_cites_its_source(name):
    doc = importlib.import_module(f"planner.frameworks.{name.replace('-', '_')}").__doc__
    assert "Sources" in doc and (".py" in doc or ".yml" in doc or ".md" in doc)


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_every_stack_sizes_its_gradient_buckets_in_elements_or_bytes(name):
    """A bucket of zero elements would make infinitely many reduction calls: each stack states its bucket in
    elements (DeepSpeed, Megatron-Core) or in bytes (PyTorch DDP, XLA), not neither."""
    stack = FRAMEWORKS[name]
    assert stack.grad_bucket_elements > 0 or stack.grad_bucket_bytes > 0


def test_arrays_follow_the_codes_per_candidate():
    codes = [FRAMEWORK_CODES["megatron"], FRAMEWORK_CODES["deepspeed"], FRAMEWORK_CODES["fsdp"]]
    arrays = framework_arrays(np.array(codes))
    assert list(arrays["reduce_bytes_bf16"]) == [4.0, 2.0, 4.0]  # Megatron and torchtitan reduce bf16 grads in fp32
    assert list(arrays["shards_over_context_parallel"]) == [1.0, 0.0, 1.0]
    single = framework_arrays(np.full(5, FRAMEWORK_CODES["deepspeed"]))
    assert list(single["gathers_per_layer"]) == [FRAMEWORKS["deepspeed"].gathers_per_layer] * 5


@pytest.mark.parametrize("layout, reason", [
    (dict(framework="deepspeed", pp=2, vpp=2, global_batch=2), "no interleaved pipeline schedule"),
    (dict(framework="deepspeed", cp=2), "no context parallelism"),
    (dict(framework="megatron", zero=1, offload="optimizer"), "no optimizer/parameter offload"),
    (dict(framework="deepspeed", tp=2, tp_comm_overlap=True), "cannot overlap tensor-parallel communication"),
    (dict(framework="fsdp", tp=2, tp_comm_overlap=True), "only with sequence parallelism"),
    (dict(framework="llm-foundry", tp=2, zero=3), "no tensor parallelism"),
    (dict(framework="llm-foundry", pp=2, dp=2, zero=3, global_batch=4), "no pipeline parallelism"),
    (dict(framework="llm-foundry", zero=1), "supports stages"),
    # Megatron-LM v2.5 forces fp32 accumulation and reduction with bf16; priced with 16-bit gradients it was half the
    # gradient memory of a layout that cannot run.
    (dict(framework="megatron-2022", zero=1, dp=8, global_batch=8, dtype="bf16", grad_reduce_in_fp32=False),
     "grad_reduce_in_fp32=0 with dtype=bf16: megatron-2022 accumulates and reduces bf16 gradients in fp32 always"),
    (dict(framework="fsdp", dtype="fp8", fp8_recipe="delayed"), "fsdp scales fp8 casts with tensorwise"),
    (dict(framework="deepspeed", dtype="fp8", fp8_recipe="tensorwise"), "deepspeed scales fp8 casts with delayed"),
    # No Korthikanti selective recompute in torchtitan, Composer / llm-foundry or the Megatron-DeepSpeed of 2021.
    (dict(framework="fsdp", zero=3, dp=2, global_batch=2, recompute="selective"),
     "recompute=selective: fsdp recomputes activations none or full"),
    (dict(framework="llm-foundry", zero=3, dp=2, global_batch=2, recompute="selective"),
     "recompute=selective: llm-foundry recomputes activations none or full"),
    (dict(framework="deepspeed-v0.3", dtype="fp16", recompute="selective"),
     "recompute=selective: deepspeed-v0.3 recomputes activations none or full"),
    # Simulated with the checkpoints on the host (a 16 GiB saving on llama2-13b, 'fits: yes') while --emit refused it.
    (dict(framework="fsdp", zero=3, dp=8, global_batch=8, recompute="full", activation_offload=True),
     "activation_offload=1: fsdp keeps activation checkpoints on the GPU"),
    (dict(framework="megatron", zero=1, dp=8, global_batch=8, recompute="full", activation_offload=True),
     "activation_offload=1: megatron keeps activation checkpoints on the GPU"),
    (dict(framework="megascale", zero=1, dp=8, global_batch=8, recompute="full", activation_offload=True),
     "activation_offload=1: megascale keeps"),
    (dict(framework="megatron", cp=2, dp=4, global_batch=8, flash_attention=False),
     "flash_attention=0 with cp\\(2\\) > 1: megatron runs context parallelism only in its flash or fused"),
    # fp8 parameters: Megatron-Core's and the neutral stack's only (Framework.runs_fp8_param_gather; it was a list of
    # names in layout_checks).
    (dict(framework="fsdp", dtype="fp8", zero=2, dp=8, global_batch=8, fp8_param_gather=True), "--fp8-param-gather"),
    (dict(framework="megascale", dtype="fp8", zero=1, dp=8, global_batch=8, fp8_param_gather=True),
     "--fp8-param-gather"),
    # torch's context parallelism intercepts only the fused SDPA kernels (torch 2.13 _context_parallel/_attention.py:940-945).
    (dict(framework="fsdp", cp=2, dp=4, zero=3, global_batch=8, flash_attention=False),
     "flash_attention=0 with cp\\(2\\) > 1: fsdp runs context parallelism only in its flash or fused"),
])
def test_a_layout_the_stack_cannot_run_is_refused(layout, reason):
    with pytest.raises(PlannerInputError, match=reason):
        check_layout(PRESETS["gpt2-xl"], Layout(**layout))


def test_an_overlap_the_user_did_not_set_is_not_named_beside_the_real_reason():
    """Helper-found: ZeRO-3 on megatron-2022 was refused for its stages and for 'dp_comm_overlap at zero=3 ... (set
    --dp-comm-overlap 0)', an overlap that is only the ZeRO-3 default. Named when the user set it, or when it is the
    only reason."""
    with pytest.raises(PlannerInputError) as refused:
        check_layout(PRESETS["gpt2-xl"], Layout(framework="megatron-2022", zero=3, tp=2, dp=4, global_batch=8))
    assert "supports stages [0, 1]" in str(refused.value) and "dp_comm_overlap" not in str(refused.value)
    with pytest.raises(PlannerInputError, match="dp_comm_overlap at zero=3"):
        check_layout(PRESETS["gpt2-xl"], Layout(framework="megatron-2022", zero=3, tp=2, dp=4, global_batch=8,
                                                dp_comm_overlap=True))
    with pytest.raises(PlannerInputError, match="^layout: dp_comm_overlap at zero=0"):  # the only reason
        check_layout(PRESETS["gpt2-xl"], Layout(framework="deepspeed", zero=0, dp=4, global_batch=8,
                                                dp_comm_overlap=True))


def test_fp8_parameters_run_on_megatron_and_the_neutral_stack():
    for name in ("megatron", "other"):
        check_layout(PRESETS["gpt2-xl"], Layout(framework=name, dtype="fp8", zero=1, dp=8, global_batch=8,
                                                fp8_param_gather=True))


def test_the_stacks_that_keep_checkpoints_on_the_host_run_activation_offload():
    """DeepSpeed's cpu_checkpointing, llm-foundry's activation_cpu_offload, JAX's offloading remat policies; the neutral
    stack runs what it is given."""
    for name in ("deepspeed", "deepspeed-v0.3", "deepspeed-v0.2", "llm-foundry", "jax", "other"):
        stages = sorted(FRAMEWORKS[name].zero_stages - {0})
        check_layout(PRESETS["gpt2-xl"], Layout(framework=name, zero=stages[-1], dp=8, global_batch=8,
                                                recompute="full", activation_offload=True,
                                                dtype=FRAMEWORKS[name].default_dtype))


@pytest.mark.parametrize("seq_len, refused", [(1026, True), (1028, False)])
def test_context_parallelism_needs_two_chunks_per_rank_in_simulate_and_the_searches(seq_len, refused):
    """Megatron splits the sequence into 2 x cp load-balanced chunks (training/arguments.py:1335-1338 at d98e8a6), and
    so does torchtitan's default head-tail load balancer (torch 2.13 _context_parallel/_load_balancer.py:148 asserts
    seq_len % (2 x cp) == 0): seq 1026 at cp 2 divides by cp but not into 4 chunks. simulate accepted it while
    --emit refused it, and the searches' cp filter (seq_len % cp) let it through; the neutral stack has no such
    rule."""
    from planner.search.space import stack_runs

    model = PRESETS["gpt2-xl"].model_copy(update={"seq_len": seq_len})
    for layout in (Layout(framework="megatron", cp=2, dp=4, global_batch=8),
                   Layout(framework="fsdp", cp=2, dp=4, zero=3, global_batch=8)):
        if refused:
            with pytest.raises(PlannerInputError,
                               match=f"seq_len\\({seq_len}\\) is not a multiple of 2 \\* cp\\(2\\) = 4"):
                check_layout(model, layout)
        else:
            check_layout(model, layout)
    check_layout(model, Layout(framework="other", cp=2, dp=4, zero=3, global_batch=8))
    stacks = [FRAMEWORKS["megatron"], FRAMEWORKS["fsdp"], FRAMEWORKS["other"]]
    one = np.ones(6, dtype=np.int64)
    runs = stack_runs(stacks, np.array([0, 0, 1, 1, 2, 2]), np.array([1, 1, 3, 3, 3, 3]), one, one, one,
                      np.array([1, 2, 1, 2, 1, 2]), np.array([8, 4, 8, 4, 8, 4]), seq_len=seq_len)
    assert runs.tolist() == [True, not refused, True, not refused, True, True]


def test_every_stack_runs_without_recompute_and_names_only_layout_modes():
    for stack in FRAMEWORKS.values():
        assert stack.recompute_modes[0] == "none" and set(stack.recompute_modes) <= set(RECOMPUTE_CODES), stack.name
    check_layout(PRESETS["gpt2-xl"], Layout(framework="fsdp", zero=3, dp=2, global_batch=2, recompute="full"))


def test_fp8_recipe_defaults_to_the_stacks_and_search_batches_price_it():
    """torchtitan's float8 is tensorwise current scaling (frameworks/fsdp.py), Megatron's default delayed: a
    layout that names no recipe gets its stack's, and a search batch (build_batch with no recipe column) prices
    the same as the layout does. Before, every stack was priced as delayed, which torchtitan cannot run."""
    from planner.cost.estimate import estimate
    from planner.specs.clusters import load_cluster
    from planner.specs.candidate_batch import DTYPE_CODES, build_batch, single_batch

    assert Layout(framework="fsdp", dtype="fp8").fp8_recipe_used == "tensorwise"
    assert Layout(framework="megatron", dtype="fp8").fp8_recipe_used == "delayed"
    assert Layout(framework="megatron", dtype="fp8", fp8_recipe="tensorwise").fp8_recipe_used == "tensorwise"
    model, cluster = PRESETS["llama3-8b"], load_cluster("dgx-h100")
    layout = Layout(framework="fsdp", dtype="fp8", zero=3, dp=8, global_batch=8, recompute="full")
    priced = estimate(single_batch(model, layout), cluster).step_time_s[0]
    arrays = dict(dp=8, zero=3, global_batch=8, recompute=2, dtype=DTYPE_CODES["fp8"],
                  framework=FRAMEWORK_CODES["fsdp"], dp_comm_overlap=True)
    searched = estimate(build_batch([model], [0], **arrays), cluster).step_time_s[0]
    delayed = estimate(build_batch([model], [0], **arrays, fp8_current_scaling=False), cluster).step_time_s[0]
    assert searched == priced
    assert searched > delayed  # the amax pass before each cast costs time


def test_overlap_defaults_come_from_the_stack():
    assert not Layout(framework="megatron").dp_comm_overlap_on  # Megatron-LM: --overlap-grad-reduce off
    assert Layout(framework="fsdp").dp_comm_overlap_on
    assert Layout(framework="megatron", dp_comm_overlap=True).dp_comm_overlap_on
    assert Layout(framework="jax").tp_comm_overlap_on  # XLA collective matmul


def test_stacks_without_an_overlap_switch_overlap_by_default_and_refuse_it_off():
    """The framework-tables audit: Megatron's ZeRO-2/3 is Megatron-FSDP, which sets and asserts overlap_grad_reduce
    when it shards gradients (megatron_fsdp.py:326-337 at d98e8a64); it was priced with Megatron-LM's DDP default
    (off), 16% slow at ZeRO-2 (llama2-7b, dp 64), and an explicit 0 was priced though it cannot run. torchtitan's FSDP2
    and DDP overlap always. Megatron's ZeRO-0/1 keep the --overlap-grad-reduce switch (off by default)."""
    from planner import simulate
    from planner.specs.clusters import load_cluster

    assert Layout(framework="megatron", zero=2, dp=8).dp_comm_overlap_on
    assert Layout(framework="megatron", zero=3, dp=8).dp_comm_overlap_on
    assert not Layout(framework="megatron", zero=1, dp=8).dp_comm_overlap_on
    check_layout(PRESETS["gpt2-xl"], Layout(framework="megatron", zero=1, dp=8, global_batch=8, dp_comm_overlap=False))
    for framework, zero in (("megatron", 2), ("megatron", 3), ("fsdp", 0), ("fsdp", 2), ("fsdp", 3)):
        with pytest.raises(PlannerInputError, match=f"dp_comm_overlap=0 at zero={zero}: {framework} always overlaps"):
            check_layout(PRESETS["gpt2-xl"], Layout(framework=framework, zero=zero, dp=8, global_batch=8,
                                                    dp_comm_overlap=False))
    h100 = load_cluster("dgx-h100")
    layout = dict(framework="megatron", zero=2, dp=64, micro_batch=2, global_batch=1024)
    default = simulate(PRESETS["llama2-7b"], Layout(**layout), h100)["step_time_s"]
    assert default == simulate(PRESETS["llama2-7b"], Layout(**layout, dp_comm_overlap=True), h100)["step_time_s"]


def test_megascale_parallel_block_and_per_chunk_reduction_change_only_their_parts():
    """MegaScale (Jiang et al. 2024, sections 3.1-3.2): one TP collective per layer pass instead of two, and
    each model chunk's gradient reduction behind the backward of the chunks still running, which Megatron-Core
    does too with --overlap-grad-reduce (schedules.py:1419-1426): the same exposure."""
    from planner.cost.estimate import simulate
    from planner.specs.clusters import load_cluster

    cluster = load_cluster("dgx-a100-80gb")
    model = PRESETS["gpt3-175b"]
    common = dict(tp=8, pp=8, dp=4, vpp=2, micro_batch=1, global_batch=128, seq_parallel=True,
                  tp_comm_overlap=False, dp_comm_overlap=True)
    megatron = simulate(model, Layout(framework="megatron", **common), cluster)
    megascale = simulate(model, Layout(framework="megascale", **common), cluster)
    assert megascale["comm_bytes_per_step"]["tp"] == pytest.approx(megatron["comm_bytes_per_step"]["tp"] / 2)
    assert megascale["time"]["tp_comm"] == pytest.approx(megatron["time"]["tp_comm"] / 2, rel=1e-9)
    # Both reduce chunk by chunk (Framework.dp_reduce_per_model_chunk; the mechanism is tested below).
    assert FRAMEWORKS["megatron"].dp_reduce_per_model_chunk and FRAMEWORKS["megascale"].dp_reduce_per_model_chunk
    assert megascale["time"]["forward"] == pytest.approx(megatron["time"]["forward"], rel=1e-12)
    # Without interleaving there is no later chunk to hide behind: the reduction is Megatron's (tp 1, so that
    # the backward it hides behind is the same).
    flat = {**common, "vpp": 1, "tp": 1, "seq_parallel": False}
    flat_megascale = simulate(model, Layout(framework="megascale", **flat), cluster)
    flat_megatron = simulate(model, Layout(framework="megatron", **flat), cluster)
    assert flat_megascale["time"]["dp_comm_exposed"] == pytest.approx(flat_megatron["time"]["dp_comm_exposed"])
    # Pipeline sends: Megatron-LM overlaps them only with interleaving, MegaScale always, which then pays only the
    # pipeline's fill and drain (model_parallel_comm.pipeline_send).
    assert flat_megatron["time"]["pp_p2p"] > flat_megascale["time"]["pp_p2p"] > 0


def _deepspeed_train_schedule(stages, micro_batches, stage):
    """The instruction list of DeepSpeed's TrainSchedule (`runtime/pipe/schedule.py`:189-289 @0457bb1c) for one
    stage: ("recv"|"send", "act"|"grad", micro-batch) and ("F"|"B", micro-batch), in execution order."""
    out, prev = [], -1
    valid = lambda k: 0 <= k < micro_batches  # noqa: E731
    for step in range(2 * (micro_batches + stages - 1)):
        forward = step % 2 == stage % 2
        base = step // 2 if step % 2 == 0 else (step - 1) // 2
        k = base - stage // 2 if forward else (
            base - stages + (stage + 1) // 2 if step % 2 == 0 else base - stages + 1 + stage // 2)
        if forward:
            out += [("recv", "act", k)] * (valid(k) and stage > 0) + [("send", "grad", prev)] * (valid(prev) and stage > 0)
        else:
            out += ([("send", "act", prev)] * (valid(prev) and stage < stages - 1)
                    + [("recv", "grad", k)] * (valid(k) and stage < stages - 1))
        out += [("F" if forward else "B", k)] * valid(k)
        prev = k
    return out


def _makespan(stages, micro_batches, forward_s, backward_s, transfer_s):
    """Each stage runs its instructions in order; a send and its matching receive are one blocking transfer
    (both sides wait for each other, then both take transfer_s): `dist.send` / `dist.recv`, p2p.py:52-85."""
    program = [_deepspeed_train_schedule(stages, micro_batches, s) for s in range(stages)]
    pos, clock, posted, moved = [0] * stages, [0.0] * stages, {}, True
    while moved:
        moved = False
        for s in range(stages):
            while pos[s] < len(program[s]):
                op = program[s][pos[s]]
                if op[0] in ("F", "B"):
                    clock[s] += forward_s if op[0] == "F" else backward_s
                    pos[s] += 1
                    moved = True
                    continue
                peer = s + 1 if (op[0] == "send") == (op[1] == "act") else s - 1
                key = (min(s, peer), op[1], op[2])
                if key in posted and posted[key][0] != s:
                    other, ready = posted.pop(key)
                    clock[s] = clock[other] = max(ready, clock[s]) + transfer_s
                    pos[s] += 1
                    pos[other] += 1
                    moved = True
                    continue
                posted.setdefault(key, (s, clock[s]))
                break
    assert pos == [len(p) for p in program]  # no deadlock: every instruction ran
    return max(clock)


@pytest.mark.parametrize("stages,micro_batches", [(4, 8), (12, 48), (35, 240)])
def test_deepspeed_pipeline_schedule_is_1f1b_with_four_serial_transfers(stages, micro_batches):
    """Why frameworks/deepspeed.py sets p2p_transfers_per_microbatch = 4: simulating the engine's instruction list
    with blocking transfers gives the 1F1B makespan (m + p - 1)(F + B) without communication (so its bubble is
    Megatron's), and each further micro-batch costs F + B + 4 transfers (a middle stage's receive activation,
    send gradient, send activation, receive gradient in series; Megatron's batched send+recv: 2)."""
    forward_s, backward_s, transfer_s = 1.0, 3.0, 0.02  # full recompute: backward = 2 F + recompute F
    slots = micro_batches + stages - 1
    assert _makespan(stages, micro_batches, forward_s, backward_s, 0.0) == pytest.approx(slots * 4.0)
    extra = (_makespan(stages, 2 * micro_batches, forward_s, backward_s, transfer_s)
             - _makespan(stages, micro_batches, forward_s, backward_s, transfer_s)) / micro_batches
    assert (extra - forward_s - backward_s) / transfer_s == pytest.approx(4.0, abs=1e-6)


def test_deepspeed_pipeline_p2p_is_partitioned_serial_and_regathered():
    """frameworks/deepspeed.py: 1/tp per send plus a metadata send, 4 blocking transfers, and three tp all-gathers
    per micro-batch: the received activation, the stage's own output and the received gradient (engine.py:113-115,
    589-600, 909-915; utils.py:693-721 @0457bb1c; engine.py:571, 656, 670 @v0.5.4). Megatron v2.5 gathers two. The
    other stacks keep 2 batched transfers and gather nothing."""
    ds = FRAMEWORKS["deepspeed"]
    assert (ds.p2p_scatter_gather, ds.p2p_transfers_per_microbatch, ds.p2p_meta_sends_per_microbatch,
            ds.p2p_gathers_per_microbatch) == (True, 4.0, 4.0, 3.0)
    assert FRAMEWORKS["deepspeed-v0.3"].p2p_transfers_per_microbatch == 4.0
    assert FRAMEWORKS["megatron-2022"].p2p_gathers_per_microbatch == 2.0
    for name in ("megatron", "fsdp", "jax", "other", "megascale", "llm-foundry"):
        stack = FRAMEWORKS[name]
        assert (stack.p2p_transfers_per_microbatch, stack.p2p_meta_sends_per_microbatch,
                stack.p2p_gathers_per_microbatch) == (2.0, 0.0, 0.0), name


def test_pipeline_transfers_charge_one_tp_gather_per_regathered_tensor():
    """cost/model_parallel_comm.pipeline_transfers: each gather the stack makes per micro-batch adds one all-gather
    of the whole activation over tp (DeepSpeed 3, Megatron v2.5 2); none with sequence parallelism (the tensor
    stays sharded), at tp 1 or without a pipeline."""
    from planner.cost import collectives, groups
    from planner.cost.model_parallel_comm import pipeline_transfers
    from planner.frameworks import batch_framework_arrays
    from planner.specs.candidate_batch import single_batch
    from planner.specs.clusters import load_cluster

    cluster = load_cluster("dgx-a100-80gb")
    batch = single_batch(PRESETS["gpt3-175b"], Layout(framework="deepspeed", tp=8, pp=8, dp=1, zero=1,
                                                      micro_batch=1, global_batch=64))
    fw = batch_framework_arrays(batch)

    class Gathers(dict):  # the stack's arrays with p2p_gathers_per_microbatch set to n
        def __missing__(self, name):
            return fw[name]

    with_gathers = lambda n: Gathers(p2p_gathers_per_microbatch=np.array([n]))  # noqa: E731
    message = np.array([batch.seq_len[0] * batch.hidden[0] * 2.0])
    gather = collectives.all_gather_time(message, groups.links(cluster, batch.tp, np.ones_like(batch.tp)),
                                         **groups.collective_kwargs(cluster))
    by_count = {n: pipeline_transfers(batch, cluster, message, with_gathers(n))[0] for n in (0.0, 2.0, 3.0)}
    assert gather[0] > 0.0 and by_count[3.0] - by_count[2.0] == pytest.approx(gather, rel=1e-12)
    assert by_count[2.0] - by_count[0.0] == pytest.approx(2.0 * gather, rel=1e-12)
    assert pipeline_transfers(batch, cluster, message, fw)[0] == pytest.approx(by_count[3.0], rel=1e-12)
    sequence_parallel = single_batch(PRESETS["gpt3-175b"], Layout(framework="deepspeed", tp=8, pp=8, dp=1, zero=1,
                                                                  micro_batch=1, global_batch=64, seq_parallel=True))
    with_sp = {n: pipeline_transfers(sequence_parallel, cluster, message, with_gathers(n))[0] for n in (0.0, 3.0)}
    assert with_sp[3.0] == pytest.approx(with_sp[0.0], rel=1e-12)


def test_reducing_chunk_by_chunk_hides_more_than_one_reduction_after_the_last_backward():
    """Interleaved 1F1B with v model chunks: the first v-1 chunks' reductions run behind the cool-down's
    remaining backward (overlap.behind_later_chunks), so less is exposed than when the whole reduction waits
    for the stage's last backward; with one chunk the two agree."""
    from planner.cost.overlap import behind_later_chunks, hidden_behind

    backward, comm, buckets = np.array([0.2]), np.array([0.5]), np.array([8.0])
    flat = hidden_behind(backward, comm, buckets, 1.0)
    assert behind_later_chunks(backward, comm, buckets, 1.0, 2.0, 8.0) < flat
    assert behind_later_chunks(backward, comm, buckets, 1.0, 1.0, 8.0) == pytest.approx(flat, rel=1e-12)


@pytest.mark.parametrize("name, kernel", [("megatron", "cudnn"), ("jax", "cudnn"), ("fsdp", "flash2"),
                                          ("llm-foundry", "triton"), ("megascale", "flash2")])
def test_each_stack_runs_its_cited_attention_kernel_on_hopper(name, kernel):
    """Transformer Engine's DotProductAttention prefers cuDNN on Hopper (frameworks/megatron.py); MaxText's GPU
    configs set attention cudnn_flash_te (frameworks/jax.py); torchtitan SDPA's flash backend, llm-foundry's
    Triton kernel, MegaScale's FlashAttention-2 (section 3.3). The step uses that row of the kernel table."""
    from planner.cost.fused_attention import attention_kernel_codes
    from planner.cost import kernels
    from planner.specs.clusters import load_cluster
    from planner.specs.candidate_batch import single_batch
    from planner.specs.layout import Layout

    assert FRAMEWORKS[name].attention_kernel_hopper == kernel
    batch = single_batch(PRESETS["llama3-8b"], Layout(dp=8, framework=name))
    assert attention_kernel_codes(batch, load_cluster("dgx-h100"))[0] == kernels.attention_kernel_code(kernel, "h100")


def test_deepspeed_zero0_is_priced_without_a_reduce_overlap_it_cannot_run(cli):
    """DeepSpeed's ZeRO-0 all-reduces after backward (frameworks/deepspeed.py reduce_overlaps_at_zero0): simulate
    refuses the overlap there, and neither search offers it (they had priced it hidden behind backward)."""
    from planner.search.layouts import search_layouts
    from planner.specs.clusters import load_cluster
    from planner.specs.model import PRESETS

    code, _, err = cli(["simulate", "--model", "llama2-7b", "--gpus", "8", "--dp", "8", "--zero", "0",
                        "--global-batch", "64", "--framework", "deepspeed", "--dp-comm-overlap", "1"])
    assert code == 2 and "dp_comm_overlap at zero=0" in err
    search = search_layouts(PRESETS["llama2-7b"], load_cluster("dgx-h100"), 8, global_batch=64,
                            frameworks=("deepspeed", "megatron"))
    a = search.arrays
    zero0 = (a["zero"] == 0) & (a["dp"] > 1)
    deepspeed = a["framework"] == FRAMEWORK_CODES["deepspeed"]
    assert np.any(zero0 & deepspeed) and not np.any(a["dp_comm_overlap"][zero0 & deepspeed])
    assert np.any(a["dp_comm_overlap"][zero0 & ~deepspeed])  # Megatron's DDP overlaps its all-reduce


def test_deepspeed_pipelines_are_priced_without_a_reduce_overlap_their_engine_turns_off(cli):
    """DeepSpeed's pipeline engine reduces gradients after the last backward and disables overlap_comm for a
    PipelineModule (frameworks/deepspeed.py reduce_overlaps_with_pipeline): simulate refuses the overlap there, and
    neither search offers or assumes it (they had priced it hidden behind backward)."""
    from planner.search.layouts import search_layouts
    from planner.search.space import stack_columns
    from planner.specs.clusters import load_cluster
    from planner.specs.model import PRESETS

    base = ["simulate", "--model", "llama2-7b", "--gpus", "16", "--pp", "2", "--dp", "8", "--zero", "1",
            "--global-batch", "64", "--framework", "deepspeed"]
    code, _, err = cli([*base, "--dp-comm-overlap", "1"])
    assert code == 2 and "dp_comm_overlap with pp(2) > 1" in err
    assert cli([*base, "--dp-comm-overlap", "0"])[0] == 0
    unpiped = ["simulate", "--model", "llama2-7b", "--gpus", "16", "--dp", "16", "--zero", "1", "--global-batch", "64",
               "--framework", "deepspeed", "--dp-comm-overlap", "1"]
    assert cli(unpiped)[0] == 0  # without a pipeline DeepSpeed overlaps its reduce
    search = search_layouts(PRESETS["llama2-7b"], load_cluster("dgx-h100"), 16, global_batch=64,
                            frameworks=("deepspeed", "megatron"))
    a = search.arrays
    piped = (a["pp"] > 1) & (a["zero"] >= 1)
    deepspeed = a["framework"] == FRAMEWORK_CODES["deepspeed"]
    assert np.any(piped & deepspeed) and not np.any(a["dp_comm_overlap"][piped & deepspeed])
    assert np.any(a["dp_comm_overlap"][piped & ~deepspeed])  # Megatron-Core overlaps beside its pipeline
    assert np.any(a["dp_comm_overlap"][(a["pp"] == 1) & (a["zero"] >= 1) & deepspeed])
    # The budget search's rows take each stack's overlap where it runs: (deepspeed pp 1, pp 2; megatron pp 2).
    stacks = [FRAMEWORKS["deepspeed"], FRAMEWORKS["megatron"]]
    columns = stack_columns(stacks, np.array([0, 0, 1]), np.ones(3), np.zeros(3, dtype=bool), np.ones(3, dtype=int),
                            np.array([1, 2, 2]))
    assert columns["dp_comm_overlap"].tolist() == [True, False, True]


def test_megatron_deepspeed_selective_recompute_under_flash_attention_recomputes_nothing():
    """Megatron-DeepSpeed checkpoints only its unfused CoreAttention (transformer.py:625-629, 864-869); with
    --use-flash-attn-v2 selective recompute runs nothing again (frameworks/deepspeed.py
    selective_recomputes_fused_attention), where Megatron-Core recomputes the fused core too."""
    from planner.cost.estimate import simulate
    from planner.specs.clusters import load_cluster
    from planner.specs.model import preset

    cluster, model = load_cluster("dgx-h100"), preset("llama2-7b")

    def step(framework, recompute, flash):
        layout = Layout(tp=2, dp=4, zero=1, global_batch=32, recompute=recompute, flash_attention=flash,
                        framework=framework)
        result = simulate(model, layout, cluster)
        return result["step_time_s"], result["hfu"]

    assert step("deepspeed", "selective", True) == step("deepspeed", "none", True)
    assert step("deepspeed", "selective", False)[0] > step("deepspeed", "none", False)[0]  # the unfused core
    assert step("megatron", "selective", True)[0] > step("megatron", "none", True)[0]


def test_deepspeed_zeropp_hpz_and_qgz_only_at_tp_1(cli):
    """DeepSpeed builds hpZ's groups from consecutive world ranks and qgZ's all-to-all over the whole world's nodes
    (frameworks/deepspeed.py zeropp_groups_span_the_world): beside tp they mix tensor-parallel shards. simulate
    refuses them at tp > 1 (qwZ alone runs), and the search offers them only at tp 1."""
    from planner.search.layouts import search_layouts
    from planner.search.space import ALL_HIERARCHY
    from planner.specs.clusters import load_cluster
    from planner.specs.model import PRESETS

    base = ["simulate", "--model", "llama2-13b", "--gpus", "64", "--zero", "3", "--global-batch", "128",
            "--framework", "deepspeed"]
    code, _, err = cli([*base, "--tp", "2", "--dp", "32", "--zero-hpz", "4"])
    assert code == 2 and "--zero-hpz / --zero-quantized-gradients with tp(2) > 1" in err
    assert cli([*base, "--tp", "2", "--dp", "32", "--zero-quantized-gradients", "1"])[0] == 2
    assert cli([*base, "--tp", "2", "--dp", "32", "--zero-quantized-weights", "1"])[0] == 0
    assert cli([*base, "--dp", "64", "--zero-hpz", "8"])[0] == 0
    found = search_layouts(PRESETS["llama2-13b"], load_cluster("dgx-a100-40gb"), 64, global_batch=512,
                           frameworks=("deepspeed",), hierarchy=ALL_HIERARCHY)
    a = found.arrays
    hierarchical = (a["zero_hpz"] > 1) | a["zero_quantized_gradients"]
    assert np.any(hierarchical) and np.all(a["tp"][hierarchical] == 1)
    assert np.any((a["tp"] > 1) & (a["zero"] == 3))


def test_fp32_attention_runs_unfused_where_the_fused_kernels_take_16_bit_only(cli):
    """Transformer Engine turns FlashAttention and FusedAttention off for fp32 queries (utils.py:598-641 at d0067d0;
    frameworks/megatron.py fused_attention_dtypes): an fp32 Megatron layout that does not say runs, and is priced
    with, the unfused attention; asking for flash attention in fp32 is refused; the layout search prices its
    layouts the same way as simulate does the layout it returns."""
    from planner.cost.estimate import simulate
    from planner.search.layouts import search_layouts
    from planner.specs.clusters import load_cluster
    from planner.specs.model import preset

    model, cluster = preset("gpt3-1.3b"), load_cluster("dgx-h100")
    fp32 = Layout(dp=8, micro_batch=4, global_batch=32, dtype="fp32", framework="megatron")
    assert not fp32.flash_attention_on and fp32.model_copy(update={"dtype": "bf16"}).flash_attention_on
    assert FRAMEWORKS["fsdp"].flash_attention_default and Layout(dp=8, dtype="fp32", framework="fsdp").flash_attention_on
    unfused = simulate(model, fp32.model_copy(update={"flash_attention": False}), cluster)
    assert simulate(model, fp32, cluster)["step_time_s"] == unfused["step_time_s"]
    code, _, err = cli(["simulate", "--model", "gpt3-1.3b", "--gpus", "8", "--dp", "8", "--micro-batch", "4",
                        "--global-batch", "32", "--dtype", "fp32", "--framework", "megatron", "--flash-attention", "1"])
    assert code == 2 and "flash_attention=1 with dtype=fp32" in err
    found = search_layouts(model, cluster, 8, global_batch=32, frameworks=("megatron",), dtype="fp32")
    best = found.layout(found.best)
    assert not best.flash_attention_on
    assert simulate(model, best, cluster)["step_time_s"] == pytest.approx(found.step_time_s[found.best], rel=1e-9)


def test_megatron_2022_differs_from_megatron_in_its_pipeline_sends_and_what_did_not_exist():
    """frameworks/megatron_2022.py: blocking, device-synchronised pipeline sends split over tp and all-gathered on
    receipt (v2.5 p2p_communication.py:91-94, 126-140), micro-batches a multiple of pp when interleaved
    (schedules.py:35), fp16 gradients accumulated by an unfused add (no gradient_accumulation_fusion for them before
    07916bf2), bf16 gradients reduced in fp32 whatever is asked (arguments.py:143-152); no TE TP overlap, fp8 (nor fp8 parameters, nor TE's fp8 GEMM inputs), context parallelism, Megatron-FSDP, fused cross-entropy,
    multi-token prediction or end ranks' layer counts yet."""
    from dataclasses import asdict
    old, new = asdict(FRAMEWORKS["megatron-2022"]), asdict(FRAMEWORKS["megatron"])
    assert {k for k in new if old[k] != new[k]} == {
        "name", "lineage", "p2p_overlap", "p2p_scatter_gather", "p2p_gathers_per_microbatch",
        "interleaving_needs_pp_multiple",
        "tp_comm_overlap_available", "supports_context_parallel", "dtypes", "zero_stages", "param_gather_overlap",
        "dp_reduce_per_model_chunk", "reduce_overlaps_when_sharded", "unfused_16bit_grad_accumulation_bytes",
        "fused_loss_bytes_per_logit", "runs_multi_token_prediction", "runs_fp8_param_gather",
        "fp8_keeps_quantised_linear_inputs", "sets_end_stage_layers", "fp32_grad_reduce_forced_dtypes"}
    stack = FRAMEWORKS["megatron-2022"]
    assert (stack.lineage, stack.p2p_overlap, stack.p2p_scatter_gather, stack.p2p_gathers_per_microbatch) == (
        "megatron", False, True, 2.0)
    for layout, reason in ((Layout(framework="megatron-2022", tp=8, cp=2, dp=1), "cp"),
                           (Layout(framework="megatron-2022", tp=8, dp=2, dtype="fp8"), "fp8"),
                           (Layout(framework="megatron-2022", tp=8, dp=2, zero=3), "zero"),
                           (Layout(framework="megatron-2022", tp=8, dp=1, seq_parallel=True, tp_comm_overlap=True),
                            "tp_comm_overlap"),
                           (Layout(framework="megatron-2022", tp=8, dp=1, loss_fusion=True), "loss-fusion")):
        with pytest.raises(PlannerInputError, match=reason):
            check_layout(PRESETS["gpt3-175b"], layout)


def test_megatron_2022_interleaving_needs_a_multiple_of_pp_micro_batches():
    """v2.5 schedules.py:35 asserts it; today's Megatron-Core asks for at least pp (frameworks/megatron.py)."""
    from planner.frameworks import micro_batch_rules, runnable_micro_batches

    old, new = micro_batch_rules(FRAMEWORKS["megatron-2022"]), micro_batch_rules(FRAMEWORKS["megatron"])
    assert int(runnable_micro_batches(old, 4, 2, 6)) == 8 and int(runnable_micro_batches(new, 4, 2, 6)) == 6
    assert int(runnable_micro_batches(old, 4, 1, 6)) == 6  # 1F1B: any count of at least pp
    layout = dict(tp=8, pp=4, vpp=2, dp=1, micro_batch=1, global_batch=6)
    check_layout(PRESETS["gpt3-175b"], Layout(framework="megatron", **layout))
    with pytest.raises(PlannerInputError, match=r"multiple of pp\(4\)"):
        check_layout(PRESETS["gpt3-175b"], Layout(framework="megatron-2022", **layout))


def test_megatron_2022_pays_its_blocking_pipeline_sends_with_interleaving():
    """With interleaving today's Megatron-Core hides the sends (overlap_p2p_comm); Megatron-LM of 2021-22 waited
    for each, synchronised the device and all-gathered the received 1/tp over NVLink: exposed, more without
    sequence parallelism (the all-gather) than with it. Compute is the same stack's."""
    from planner.cost.estimate import simulate
    from planner.specs.clusters import load_cluster

    cluster = load_cluster("dgx-a100-80gb")
    common = dict(tp=8, pp=4, vpp=3, dp=2, micro_batch=1, global_batch=64)
    out = {(fw, sp): simulate(PRESETS["gpt3-175b"], Layout(framework=fw, seq_parallel=sp, **common), cluster)
           for fw in ("megatron", "megatron-2022") for sp in (False, True)}
    # Megatron-Core pays only the fill and drain the overlap cannot hide (model_parallel_comm.pipeline_send).
    for sp in (False, True):
        assert 0.0 < out["megatron", sp]["time"]["pp_p2p"] < out["megatron-2022", sp]["time"]["pp_p2p"]
    twice = simulate(PRESETS["gpt3-175b"], Layout(framework="megatron", seq_parallel=True, **{**common, "global_batch": 128}),
                     cluster)
    assert twice["time"]["pp_p2p"] == pytest.approx(out["megatron", True]["time"]["pp_p2p"], rel=1e-12)
    assert out["megatron-2022", False]["time"]["pp_p2p"] > out["megatron-2022", True]["time"]["pp_p2p"] > 0.0
    assert out["megatron-2022", False]["time"]["forward"] == pytest.approx(out["megatron", False]["time"]["forward"])


def test_a_release_kept_as_its_own_stack_shares_its_lineages_error_band():
    """calibrate.error_bands: the rows of deepspeed-v0.3 and megatron-2022 count for deepspeed and megatron, and
    their layouts get that band."""
    from planner.calibrate.error_bands import band_for
    from planner.frameworks import band_group

    assert band_group("megatron-2022") == band_group("megatron") == "megatron"
    assert band_group("deepspeed-v0.3") == "deepspeed" and band_group("not-a-stack") == "not-a-stack"
    bands = {"all": {"rows": 64, "low": 0.9, "high": 1.3}, "megatron": {"rows": 24, "low": 0.97, "high": 1.1}}
    assert band_for("megatron-2022", bands)["group"] == band_for("megatron", bands)["group"] == "megatron"
    assert band_for("fsdp", bands)["group"] == "all"


def test_megatron_2022_distributed_optimizer_overlaps_nothing():
    """285068c8 training.py:425, 440: reduce_model_grads after backward and gather_model_params after the step, both
    blocking. dp_comm_overlap is refused at ZeRO-1 (Megatron-Core's is allowed) and the fixed-model search offers
    it only at ZeRO-0 (PyTorch DDP, --DDP-impl torch)."""
    from planner.search.layouts import enumerate_layouts

    layout = dict(tp=8, dp=16, zero=1, micro_batch=1, global_batch=64, dp_comm_overlap=True)
    check_layout(PRESETS["gpt3-13b"], Layout(framework="megatron", **layout))
    with pytest.raises(PlannerInputError, match="dp_comm_overlap at zero=1: megatron-2022"):
        check_layout(PRESETS["gpt3-13b"], Layout(framework="megatron-2022", **layout))
    a = enumerate_layouts(PRESETS["gpt3-13b"], 32, 256, ("megatron-2022",))
    assert np.any(a["dp_comm_overlap"]) and not np.any(a["dp_comm_overlap"] & (a["zero"] >= 1))


def test_deepspeed_refuses_fp32_gradient_accumulation_without_zero():
    """DeepSpeed 0.19 raises on bf16 with grad_accum_dtype fp32 at ZeRO-0 (engine.py:2020-2021 @edaa7221; ZeRO-0 is
    plain DDP since v0.17.6) and runs it at ZeRO-1 (BF16_Optimizer): simulate refuses what the launch would stop on,
    in one line naming the flag; the launch check reports it once."""
    from planner.emit import launch_problems
    model = PRESETS["llama3-8b"]
    layout = Layout(dp=8, zero=0, global_batch=64, grad_reduce_in_fp32=True, framework="deepspeed")
    with pytest.raises(PlannerInputError, match="zero=0 with grad_reduce_in_fp32 in bf16: deepspeed accumulates"):
        check_layout(model, layout, gpus=8)
    assert sum("grad_reduce_in_fp32" in p for p in launch_problems(model, layout)) == 1
    check_layout(model, layout.model_copy(update={"zero": 1}), gpus=8)
    check_layout(model, layout.model_copy(update={"framework": "megatron", "zero": 0}), gpus=8)
    check_layout(model, layout.model_copy(update={"grad_reduce_in_fp32": False}), gpus=8)


@pytest.mark.parametrize("spec, renamed", [("dgx-h100", "my-hopper"), ("dgx-a100-80gb", "ampere-box"),
                                           ("dgx-b200", "blackwell")])
def test_the_attention_table_follows_the_compute_capability_not_the_name(spec, renamed):
    """Helper-found: the fused-attention table was picked by a substring of the accelerator's free-text name, so a
    renamed H100 lost it and its steps moved by up to 11%. It follows accelerator.compute_capability, as NCCL's
    tuner constants do; a V100 (7.0) and a spec that gives none have no table."""
    from planner.cost.fused_attention import attention_kernel_codes, attention_table
    from planner.specs.clusters import load_cluster
    from planner.specs.candidate_batch import single_batch
    from planner.specs.layout import Layout

    cluster = load_cluster(spec)
    other = cluster.model_copy(update={"accelerator": cluster.accelerator.model_copy(update={"name": renamed})})
    batch = single_batch(PRESETS["llama3-8b"], Layout(dp=8, framework="fsdp"))
    assert attention_kernel_codes(batch, other)[0] == attention_kernel_codes(batch, cluster)[0] >= 0
    assert attention_table(7.0) is None and attention_table(None) is None
