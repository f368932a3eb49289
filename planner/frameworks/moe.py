"""What the training stacks do with mixture-of-experts layers, as data (one row per stack).

Sources:
- Megatron-Core (NVIDIA/Megatron-LM@d98e8a64): expert parallelism (`--expert-model-parallel-size`) and expert
  tensor parallelism (`--expert-tensor-parallel-size`, default tp: megatron/core/parallel_state.py:871-872);
  the expert grid etp x ep x edp x pp = world (parallel_state.py:873-880), its own rank generator with
  cp = 1 (parallel_state.py:887-895): "MoE Parallel Folding", attention TP x CP x DP x PP and MoE
  ETP x EP x EDP x PP over the same ranks (moe/README.md "MoE Parallel Folding"; Liu et al. 2025,
  arXiv:2504.14960), so ep may exceed dp by folding into tp and cp. EP all-to-all overlap
  `--overlap-moe-expert-parallel-comm --delay-wgrad-compute` "merging FWD-BWD passes of adjacent
  microbatches" (megatron/core/transformer/moe/README.md:434), default off (README.md:562); it needs ep > 1,
  no full recompute and, with pp > 1, an interleaved schedule (megatron/core/transformer/transformer_config.py:
  3007-3032). Capacity factor default None = dropless (transformer_config.py:917-919, README.md:553).
- DeepSeek-V3 (arXiv:2412.19437, section 3.2.1): DualPipe overlaps the dispatch/combine all-to-all of one
  chunk with the computation of a forward and a backward chunk ("both all-to-all and PP communication can
  be fully hidden"); its bubble is (PP/2 - 1)(F&B + B - 3W) against 1F1B's (PP - 1)(F + B) (Table 2), and
  it keeps two copies of the model parameters (Table 2, "Parameter 2x"). Dispatch in FP8, combine in BF16
  (section 3.3.1 / 3.3.4: "activations before MoE up-projections are quantised into FP8 ... then dispatch").
- DeepSpeed-MoE (deepspeed/moe/layer.py: `ep_size`) and torchtitan (expert parallel on FSDP2) run expert
  parallelism without a batch-level all-to-all overlap.

Overlap schemes (`A2A_OVERLAPS`): each says whether the all-to-all hides behind the other micro-batch's
compute, the pipeline bubble in forward+backward slots as a function of pp, and the parameter copies kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from planner.frameworks import FRAMEWORK_NAMES
from planner.specs.topology import NCCL_CHANNELS


# H100 / H800 SXM5 streaming multiprocessors (NVIDIA H100 datasheet): taken for an accelerator whose spec states no
# `sms` (specs.hardware.Accelerator).
HOPPER_SMS = 132


@dataclass(frozen=True)
class A2AOverlap:
    name: str
    code: int
    hides_all_to_all: bool  # dispatch/combine run while another micro-batch (chunk) computes
    parameter_copies: float  # model weights held (DualPipe keeps 2)
    needs_interleaving_with_pp: bool  # Megatron's overlap needs vpp > 1 when pp > 1
    source: str
    # SMs the overlapped communication kernels take from compute while they run (the rest of the accelerator's
    # `sms` computes): DualPipe's dispatch/combine kernels take 20 SMs (10 channels; of the H800's 132,
    # arXiv:2412.19437 section 3.2.2). Megatron's overlap runs NCCL's all-to-all: one CTA (one SM) per channel
    # (NCCL runs each channel as a thread block), at cost.memory's assumed 16 channels per communicator.
    communication_sms: float = 0.0
    # Whether compute runs on the SMs left only while the all-to-all runs beside it (NCCL's kernels hold
    # their CTAs while they run), or through the whole overlapped layer (DualPipe: the report allocates the 20 SMs
    # to communication for the overlapped chunks, sec. 3.2.2, and its compute kernels run on the rest).
    sms_held_only_while_communicating: bool = False
    # The overlap brings its own pipeline schedule: two model chunks per rank (no vpp), an even pp, and an even
    # number of micro-batches per step, at least micro_batches_per_stage x pp (0: no such count).
    own_pipeline_schedule: bool = False
    micro_batches_per_stage: int = 0
    # Forward micro-batches the interleaved schedule's warm-up runs beyond its own, so that every later 1F1B step
    # pairs an independent forward and backward (their activations are held too: cost.memory).
    extra_warmup_micro_batches: int = 0
    # Rank r holds pipeline stage r and stage pp - 1 - r and runs each micro-batch through one of them (a
    # bidirectional pipeline): the first and last stage share rank 0 (and pp - 1), their work and the embedding
    # the multi-token-prediction blocks read.
    pairs_stages: bool = False
    # The overlap pairs one micro-batch's forward with another's backward only in the steady state: the warm-up's
    # forwards and the cool-down's backwards run alone, their all-to-all exposed (cost.moe.unpaired_share).
    warmup_runs_alone: bool = False


# DualPipe's schedule (deepseek-ai/DualPipe, dualpipe/dualpipe.py, DualPipe.step): "assert num_ranks % 2 == 0" and
# "assert num_chunks > 0 and num_chunks % 2 == 0 and num_chunks >= num_ranks * 2" (num_ranks: pipeline stages,
# num_chunks: micro-batches per step); the report says the same, arXiv:2412.19437 section 3.2.1 ("DualPipe only
# requires that the pipeline stages and micro-batches be divisible by 2"). Each rank holds exactly two chunks,
# `modules: Tuple[nn.Module, nn.Module]` (DualPipe.__init__), so no interleaving beside it.
DUALPIPE_MICRO_BATCHES_PER_STAGE = 2

A2A_OVERLAPS = {
    "none": A2AOverlap("none", 0, False, 1.0, False, "all-to-all on the critical path"),
    "megatron": A2AOverlap("megatron", 1, True, 1.0, True,
                           "Megatron-Core --overlap-moe-expert-parallel-comm (moe/README.md:434)",
                           communication_sms=NCCL_CHANNELS,
                           sms_held_only_while_communicating=True,
                           # "we schedule one extra micro-batch forward step before the 1f1b stages" (NVIDIA/
                           # Megatron-LM@d98e8a64 core/pipeline_parallel/schedules.py:966-970, interleaved only).
                           extra_warmup_micro_batches=1,
                           # combined_1f1b.py: "The forward step for the first microbatch is executed alone, no a2a
                           # overlapping" and the last backward likewise (:76-77, 116-117) at pp 1; interleaved, the
                           # warm-up forwards and cool-down backwards (schedules.py:960-970).
                           warmup_runs_alone=True),
    "dualpipe": A2AOverlap("dualpipe", 2, True, 2.0, False, "DeepSeek-V3 DualPipe (arXiv:2412.19437 sec. 3.2.1)",
                           communication_sms=20, own_pipeline_schedule=True,
                           micro_batches_per_stage=DUALPIPE_MICRO_BATCHES_PER_STAGE,
                           # deepseek-ai/DualPipe examples/example_dualpipe.py: "local_full_modules = nn.Sequential(
                           # full_modules[rank], full_modules[pp_size - 1 - rank])", the forward direction's
                           # micro-batches entering rank 0 and the reverse's rank pp - 1; arXiv:2412.19437 section
                           # 3.2.3 ("Shared Embedding and Output Head for Multi-Token Prediction"): with DualPipe the
                           # shallowest layers, with the embedding, and the deepest, with the output head, sit on one
                           # PP rank, so the MTP module shares their parameters and gradients physically.
                           pairs_stages=True),
}
A2A_OVERLAP_NAMES = tuple(A2A_OVERLAPS)
# Per overlap code: A2AOverlap.extra_warmup_micro_batches.
EXTRA_WARMUP_MICRO_BATCHES = np.array([o.extra_warmup_micro_batches for o in A2A_OVERLAPS.values()], dtype=float)
A2A_OVERLAP_CODES = {name: o.code for name, o in A2A_OVERLAPS.items()}
# Per overlap code: A2AOverlap.warmup_runs_alone.
WARMUP_RUNS_ALONE = np.array([o.warmup_runs_alone for o in A2A_OVERLAPS.values()])
# Per overlap code: A2AOverlap.pairs_stages.
PAIRS_STAGES = np.array([o.pairs_stages for o in A2A_OVERLAPS.values()])


def interleaved_warmup_forwards(batch, rank) -> np.ndarray:
    """Forward passes (model chunks) pipeline rank `rank` runs before its first backward in the interleaved
    schedule: 2 (pp - rank - 1) + (vpp - 1) x the micro-batches of a round (NVIDIA/Megatron-LM@d98e8a64
    core/pipeline_parallel/schedules.py:960-965; torch's `_get_warmup_ops`), plus the all-to-all overlap's extra
    one (A2AOverlap.extra_warmup_micro_batches). Read by the activations in flight (cost.memory) and the overlap's
    unpaired passes (cost.moe.unpaired_share)."""
    from planner.frameworks import batch_framework_arrays, interleaving_round
    p, v, m = batch.pp, batch.vpp, batch.grad_accumulation
    per_round = interleaving_round(batch_framework_arrays(batch), p, m)
    extra = 0.0 if batch.a2a_overlap is None else EXTRA_WARMUP_MICRO_BATCHES[batch.a2a_overlap.astype(np.intp)]
    return 2.0 * (p - rank - 1.0) + (v - 1.0) * per_round + extra


def pairs_stages(batch) -> np.ndarray:
    """Per candidate, whether its pipeline runs stage r and stage pp - 1 - r on one rank (DualPipe, pp > 1); False
    for a dense batch (no overlap column)."""
    if batch.a2a_overlap is None:
        return np.zeros(len(batch), dtype=bool)
    return PAIRS_STAGES[batch.a2a_overlap.astype(np.intp)] & (batch.pp > 1)


def overlap_runs_pipeline(overlap_code, pp, vpp) -> np.ndarray:
    """Whether the overlap runs on this pipeline: one with a schedule of its own (DualPipe) needs an even pp and
    no interleaving (vpp 1). Arrays broadcast."""
    own = np.array([o.own_pipeline_schedule for o in A2A_OVERLAPS.values()])[np.asarray(overlap_code, dtype=np.intp)]
    return ~own | ((np.asarray(pp) % 2 == 0) & (np.asarray(vpp) == 1))


def overlap_micro_batches(overlap_code, pp, count) -> np.ndarray:
    """The fewest micro-batches per step at least `count` the overlap's schedule runs: for DualPipe even and at
    least 2 x pp; the others as they are. Arrays broadcast; moe_unsupported checks a layout against it, the
    searches size their batches by it."""
    per_stage = np.array([o.micro_batches_per_stage for o in A2A_OVERLAPS.values()])[np.asarray(overlap_code, dtype=np.intp)]
    count = np.maximum(np.asarray(count), per_stage * np.asarray(pp))
    return np.where(per_stage > 0, count + count % 2, count)


def bubble_slots(pp, overlap_code, standard):
    """Pipeline bubble in units of one micro-batch's forward + backward (F + B = 3F) on the slowest stage.

    1F1B / interleaved: `standard`, the caller's (cost.step_time.pipeline_bubble_slots: (p - 1)/v from p
    micro-batches on, Narayanan et al. 2021). DualPipe: (p/2 - 1)(F&B + B - 3W) with F&B = F + B (the pair's
    compute, its communication hidden), B = 2F, W = F (weight gradients are half the backward): (p/2 - 1)·2F =
    (p/2 - 1)·(2/3) slots (its schedule runs at least 2p micro-batches: overlap_micro_batches). Arrays broadcast.
    """
    p = np.asarray(pp, dtype=float)
    dualpipe = np.maximum(p / 2.0 - 1.0, 0.0) * (2.0 / 3.0)
    return np.where(np.asarray(overlap_code) == A2A_OVERLAP_CODES["dualpipe"], dualpipe, standard)


@dataclass(frozen=True)
class MoEStack:
    """A stack's MoE support."""

    expert_parallel: bool
    overlaps: tuple[str, ...]  # A2A_OVERLAPS names it can run
    fp8_dispatch: bool  # tokens dispatched in fp8 when training in fp8 (DeepSeek's recipe)
    source: str
    # Bytes per element the experts keep for backward in fp8 training, of (the expert input, the fc1 output =
    # the activation's input, the activation output = fc2's input); 16-bit training keeps (2, 2, 2).
    # Default: as in 16-bit (no source read for the stack's fp8 storage).
    fp8_saved_bytes: tuple[float, float, float] = (2.0, 2.0, 2.0)
    # Host-device synchronisations per MoE layer forward (dropless routing): the host waits for the GPU to
    # reach the point, so it cannot issue the rest of the layer ahead of the GPU (cost/moe.py).
    host_syncs_per_layer_forward: int = 0
    # fp8 dropless: each expert's rows are padded to the fp8 GEMM alignment by copying the dispatched tokens
    # into a padded buffer, and the experts' output copied back unpadded (forward; their gradients likewise in
    # backward).
    fp8_pads_expert_rows: bool = False
    # With more than one local expert the tokens received from the all-to-all arrive grouped by source rank and
    # are copied into expert order before the experts, and the experts' output copied back before the combine
    # (forward; their gradients likewise in backward): a second permutation beside the one around the all-to-all.
    sorts_received_tokens_by_expert: bool = False
    # At ZeRO-3 the experts run only without hpZ secondary groups and qgZ, and with etp 1 (DeepSpeed: see
    # ZERO3_EXPERT_LIMITS_SOURCE).
    zero3_expert_limits: bool = False
    # Routing where the layout names no capacity factor: tokens per expert capped at this multiple of the mean
    # (None = dropless), and whether each expert's input is then padded to the capacity (static shapes).
    # Default: dropless (Megatron-Core, torchtitan, MegaBlocks, MaxText: see MOE_STACKS).
    capacity_factor: float | None = None
    pads_to_capacity: bool = False
    # An MoE model at tp > 1 trains only with sequence parallelism: Megatron-Core's MoE layer raises on the first
    # training forward otherwise (NVIDIA/Megatron-LM@d98e8a64 megatron/core/transformer/moe/moe_layer.py:636-640;
    # validate_args only warns).
    tp_needs_sequence_parallel: bool = False
    # An MoE layer's MLP makes no tensor-parallel collective of its own over the attention's tp group: the dispatcher
    # takes the sequence-parallel shard of tokens as it is, and gathers and scatters only over the expert tp group
    # (etp, priced with the experts: cost/moe.py; the share in cost/model_parallel_comm.py), Megatron-Core's alltoall dispatcher (NVIDIA/Megatron-LM@d98e8a64
    # megatron/core/transformer/moe/token_dispatcher.py:85-89 tp_group = expt_tp, :741-750, :824-831). A shared
    # expert is a dense MLP on the attention's tp group and keeps its gather and reduce-scatter
    # (moe/shared_experts.py:131, 574-584). Default False: the layer's MLP collectives priced as a dense layer's
    # (torchtitan gathers an MoE module's input over tp and reduce-scatters its output as a dense MLP's).
    dispatcher_replaces_mlp_tp_collectives: bool = False
    # Node-limited dispatch: a token bound for several experts on one remote node crosses the scale-out network
    # once and is forwarded over NVLink inside it (DeepSeek-V3 section 3.2.2; DeepEP's internode dispatch). The
    # stacks' all-to-all dispatchers instead send one copy per routed (token, expert) pair: Megatron-Core's
    # alltoall dispatcher permutes tokens x top-k rows and splits them by destination rank
    # (NVIDIA/Megatron-LM@d98e8a64 megatron/core/transformer/moe/token_dispatcher.py:556, 671-678, 705-711; the
    # flex dispatcher on DeepEP, below, is opt-in), torchtitan's all_to_all_single of the routed counts (above),
    # DeepSpeed's [experts, capacity, d] buffer. `dispatches_once_per_node`: the stack's default (a layout's
    # moe_node_dispatch None); `can_dispatch_once_per_node`: whether a layout may ask for it. Megatron-Core runs it
    # with --moe-token-dispatcher-type flex --moe-flex-dispatcher-backend deepep, which "removes redundant tokens
    # during cross-node communication", for "cross-node EP, fine-grained MoE (DeepSeek-V3)" (moe/README.md:116-118,
    # 310 at d98e8a64), refused with padding to capacity (transformer_config.py:1754-1761); the searches run it
    # where the routing is node-limited (search.layouts).
    dispatches_once_per_node: bool = False
    can_dispatch_once_per_node: bool = False
    node_dispatch_refuses_padding: bool = False
    # SMs the node-limited dispatch kernels hold while they run beside compute under an all-to-all overlap (in
    # place of the overlap's own communication_sms where more): Megatron-Core sets DeepEP's to 20 unless
    # --moe-flex-dispatcher-num-sms says otherwise (NVIDIA/Megatron-LM@d98e8a64
    # megatron/core/transformer/moe/token_dispatcher.py:1287-1292); DeepSeek's own kernels take 20 of the H800's
    # 132 (arXiv:2412.19437 section 3.2.2).
    node_dispatch_sms: float = 0.0


# DeepSpeed 0.19.8 refuses its native MoE layer (deepspeed/moe/layer.py) at ZeRO-3 and runs MoE there only through
# AutoEP, which refuses zero_quantized_gradients, zero_hpz_partition_size > 1 and expert_tensor_parallel_size != 1
# (deepspeed/runtime/engine.py:2197-2232, _validate_zero3_moe_compatibility).
ZERO3_EXPERT_LIMITS_SOURCE = "DeepSpeed AutoEP at ZeRO-3, runtime/engine.py:2214-2232"


# Megatron-Core with Transformer Engine in fp8: TEGroupedMLP pads the permuted tokens per expert before fc1 and
# unpads fc2's output (megatron/core/transformer/moe/experts.py:857-866, 950-951 at core_v0.15.0, unless
# --moe-router-padding-for-fp8), and TE's Fp8Padding copies whenever a count is not a multiple of 16 (32 for
# MXFP8), transformer_engine/pytorch/module/fp8_padding.py:33-38 (forward), 53-64 (backward), 113-122 (v2.9):
# the routed counts vary, so taken as always. Drop-and-pad routing (moe_pad_to_capacity) pads to the
# capacity in the dispatcher and copies nothing here. GroupedLinear keeps its quantised fp8 input,
# column-wise only, for the wgrad GEMM (TE v2.9 pytorch/module/grouped_linear.py:196-203); Megatron's fused
# weighted SwiGLU keeps its 16-bit input (megatron/core/fusions/fused_bias_swiglu.py:194-196 at core_v0.15.0;
# fp8 only with activation_func_fp8_input_store, default off). The alltoall dispatcher copies the token counts
# to the host and waits on them before the expert-parallel all-to-all when ep or tp > 1, else before the experts
# (moe/token_dispatcher.py:524 "before_ep_alltoall", :533 "before_finish", :857-859 d2h_event.synchronize(),
# core_v0.15.0). With more than one local expert the alltoall dispatcher sorts the received tokens by local
# expert ("Permutation 2", sort_chunks_by_idxs, or a transpose copy when dropping and padding) and unsorts the
# experts' output ("Unpermutation 2"): moe/token_dispatcher.py:753-788 and 802-818 at d98e8a64.
MEGATRON_FP8_SAVED_BYTES = (1.0, 2.0, 1.0)
# DeepSeek-V3 section 3.3.2, "Low-Precision Storage": the expert inputs and the SwiGLU inputs cached in FP8,
# the SwiGLU output recomputed in the backward pass.
DEEPSEEK_FP8_SAVED_BYTES = (1.0, 1.0, 0.0)
# DeepSpeed's MoE layer drops tokens by default: deepspeed.moe.layer.MoE(capacity_factor=1.0, drop_tokens=True)
# (deepspeed/moe/layer.py:44, 49 in 0.19.8), each expert's capacity ceil(tokens / experts x capacity_factor x k)
# (moe/sharded_moe.py:152-162 _capacity, from top1gating :232, top2gating :364, topkgating :446), and the
# dispatched tokens placed in an [experts, capacity, d_model] buffer that the all-to-all and the experts take
# whole (MOELayer.forward, sharded_moe.py:681 _sparse_encode, :188-200, "slots nothing routes to read a zero
# pad row"): every expert's input padded to the capacity. Megatron-DeepSpeed passes --moe-train-capacity-factor
# (default 1.0) and drops tokens unless --disable-moe-token-dropping (deepspeedai/Megatron-DeepSpeed@4efb479d
# megatron/arguments.py:910-916, megatron/model/transformer.py:1077-1080). min_capacity (default 4 tokens per
# expert) is taken as below every expert's share of a training micro-batch: not modelled.
DEEPSPEED_CAPACITY_FACTOR = 1.0

# Expert GEMM kernels: every stack's are cuBLAS's on Hopper, so the experts take the same GEMM curve as the dense
# layers (cost/moe.py) and no row names a kernel family. Megatron-Core's --moe-grouped-gemm runs TEGroupedMLP, TE's
# GroupedLinear (megatron/core/extensions/transformer_engine_spec_provider.py:75-85 at d98e8a64; no other grouped
# path is left), which issues one cuBLAS GEMM per local expert over several streams (TransformerEngine v1.9
# transformer_engine/common/gemm/cublaslt_gemm.cu:381-413, nvte_multi_stream_cublas_gemm). MCore v0.8
# (core_r0.8.0, baf94af3) took TEGroupedMLP with TE >= 1.9 (custom_layers/transformer_engine.py:569,
# models/gpt/gpt_layer_specs.py:125-140, transformer/moe/moe_layer.py:73-77), else the legacy GroupedMLP over
# fanshiqing/grouped_gemm (Dockerfile.ci:26 pins v1.1.2), which also loops cuBLAS per expert over 4 streams
# unless built for exactly sm_80 (csrc/grouped_gemm.cu:385-397, weight gradients always cuBLAS :327, at 63a7fb6e).
# tgale96/grouped_gemm (MegaBlocks) runs cuBLAS by default on every architecture (csrc/grouped_gemm.cu:494-501,
# 542-563, README.md:11-22 at ebeae0bb; before v0.1.6, cuBLAS unless built for sm_80, v0.1.4 :337-349). Its
# CUTLASS Sm80 (mma.sync) grouped kernel runs on H100 only in an opt-in GROUPED_GEMM_CUTLASS=1 build, measured
# below cuBLAS there (116.9 against 129.5 TFLOP/s, tgale96/grouped_gemm PR #37; "~30% slower", NVIDIA/cutlass
# issue #1280): not modelled.

MOE_STACKS = {
    "megatron": MoEStack(True, ("none", "megatron"), False, "Megatron-Core MoE (moe/README.md)",
                         tp_needs_sequence_parallel=True, dispatcher_replaces_mlp_tp_collectives=True,
                         fp8_saved_bytes=MEGATRON_FP8_SAVED_BYTES, host_syncs_per_layer_forward=1,
                         fp8_pads_expert_rows=True, sorts_received_tokens_by_expert=True,
                         # The flex dispatcher on DeepEP, without padding to capacity (above).
                         can_dispatch_once_per_node=True, node_dispatch_refuses_padding=True, node_dispatch_sms=20,
                         capacity_factor=None),  # dropless: moe_expert_capacity_factor None (transformer_config.py:917-919)
    "deepspeed": MoEStack(True, ("none",), False, "DeepSpeed-MoE deepspeed/moe/layer.py ep_size; AutoEP at ZeRO-3",
                          zero3_expert_limits=True, capacity_factor=DEEPSPEED_CAPACITY_FACTOR, pads_to_capacity=True),
    # Dropless: the all-to-all dispatcher sends the routed counts, all_to_all_single with input/output splits
    # (pytorch/torchtitan@b5bcd76c torchtitan/models/common/token_dispatcher.py:296-313, AllToAllTokenDispatcher).
    "fsdp": MoEStack(True, ("none",), False, "torchtitan expert parallel"),
    # Dropless: "capacity_factor: -1.0 # ... no dropping by default" (AI-Hypercomputer/maxtext@e591f30c
    # src/maxtext/configs/base.yml:217).
    "jax": MoEStack(True, ("none",), False, "MaxText expert parallelism (ici_expert_parallelism)"),
    # "other" is the neutral default: any overlap, and it stands for in-house stacks such as DeepSeek's HAI-LLM.
    "other": MoEStack(True, ("none", "megatron", "dualpipe"), True, "neutral default (DeepSeek HAI-LLM runs here)",
                      fp8_saved_bytes=DEEPSEEK_FP8_SAVED_BYTES, dispatches_once_per_node=True,
                      can_dispatch_once_per_node=True, node_dispatch_sms=20),
    # llm-foundry runs MoE through MegaBlocks' dMoE (dropless MoE, Gale et al. 2022, arXiv:2211.15841), experts sharded over ffn_config.moe_world_size ranks
    # (llmfoundry/command_utils/train.py:147-153), with no batch-level all-to-all overlap.
    "llm-foundry": MoEStack(True, ("none",), False, "llm-foundry MegaBlocks dMoE, ffn_config moe_world_size"),
}
# MegaScale is Megatron-LM with its own techniques where they change time (frameworks/megascale.py; the paper
# describes no MoE of its own), so its experts are Megatron-Core's. deepspeed-v0.3 differs from the deepspeed
# entry only in how ZeRO-3 issues its collectives (frameworks/deepspeed_v03.py), so its experts are DeepSpeed's.
MOE_STACKS["megascale"] = replace(MOE_STACKS["megatron"], source="Megatron-Core MoE (MegaScale is built on Megatron-LM)")
MOE_STACKS["deepspeed-v0.3"] = replace(MOE_STACKS["deepspeed"], source="DeepSpeed-MoE, as the deepspeed entry")
# Megatron-LM before Megatron-Core had no mixture-of-experts layers (frameworks/megatron_2022.py).
MOE_STACKS["megatron-2022"] = MoEStack(False, ("none",), False, "none: MoE came with Megatron-Core")
# DeepSpeed of 2020 had no mixture-of-experts layers (DeepSpeed-MoE came with f2843244, 2021-08-17:
# frameworks/deepspeed_v02.py).
MOE_STACKS["deepspeed-v0.2"] = MoEStack(False, ("none",), False, "none: DeepSpeed-MoE came in 2021")


def routing_imbalance(load_imbalance, capacity_factor, padded) -> np.ndarray:
    """Busiest expert rank's tokens over the mean: dropless (capacity_factor NaN) the load imbalance; padded to
    the capacity, the capacity factor (every expert computes its capacity); else the load imbalance capped at the
    capacity factor (tokens beyond it are dropped). Arrays broadcast."""
    load, capacity = np.asarray(load_imbalance, dtype=float), np.asarray(capacity_factor, dtype=float)
    dropless = np.isnan(capacity)
    capped = np.where(np.asarray(padded, dtype=bool), capacity, np.minimum(load, capacity))
    return np.where(dropless, load, capped)


# Per framework code: the stack's default capacity factor (NaN = dropless) and whether it pads to it.
_DEFAULT_CAPACITY = np.array([np.nan if MOE_STACKS[n].capacity_factor is None else MOE_STACKS[n].capacity_factor
                              for n in FRAMEWORK_NAMES])
_DEFAULT_PADDED = np.array([MOE_STACKS[n].pads_to_capacity for n in FRAMEWORK_NAMES])
_DEFAULT_NODE_DISPATCH = np.array([MOE_STACKS[n].dispatches_once_per_node for n in FRAMEWORK_NAMES])


def default_routing_columns(framework_codes, load_imbalance=1.0) -> dict[str, np.ndarray]:
    """The moe_imbalance and moe_padded batch columns of layouts that give no capacity factor, at each row's
    stack default (MoEStack.capacity_factor, pads_to_capacity) and this load imbalance. (The searches apply it
    to their batches after the dispatch is chosen: it must not reset that column, default_node_dispatch's.)"""
    codes = np.asarray(framework_codes, dtype=np.intp)
    padded = _DEFAULT_PADDED[codes] & ~np.isnan(_DEFAULT_CAPACITY[codes])
    return {"moe_imbalance": routing_imbalance(load_imbalance, _DEFAULT_CAPACITY[codes], padded),
            "moe_padded": padded.astype(float)}


def default_node_dispatch(framework_codes) -> np.ndarray:
    """The node_dispatch batch column of layouts that name no dispatcher: each row's stack default
    (MoEStack.dispatches_once_per_node)."""
    return _DEFAULT_NODE_DISPATCH[np.asarray(framework_codes, dtype=np.intp)].astype(float)


def zero3_expert_refused(limited, zero, zero_hpz, quantized_gradients, etp) -> np.ndarray:
    """Rows a stack with zero3_expert_limits (`limited`, per row) cannot run: ZeRO-3 with hpZ, qgZ or etp > 1.
    Arrays broadcast; moe_unsupported says which for one layout, the searches drop such rows."""
    return (np.asarray(limited, dtype=bool) & (np.asarray(zero) == 3)
            & ((np.asarray(zero_hpz) > 1) | np.asarray(quantized_gradients, dtype=bool) | (np.asarray(etp) != 1)))


def _zero3_expert_problems(framework: str, layout) -> list[str]:
    """What of `layout` the stack's ZeRO-3 expert limits refuse, each named by its flag."""
    given = [flag for flag, used in ((f"--zero-hpz {layout.zero_hpz}", layout.zero_hpz > 1),
                                     ("--zero-quantized-gradients", layout.zero_quantized_gradients),
                                     (f"--etp {layout.expert_tp} (default: tp)", layout.expert_tp != 1)) if used]
    if not given:
        return []
    return [f"{framework} runs experts at ZeRO-3 only through AutoEP, which refuses {', '.join(given)}: use --etp 1 "
            f"without hpZ / qgZ, or zero 1 or 2 ({ZERO3_EXPERT_LIMITS_SOURCE})"]


def _overlap_schedule_problems(layout) -> list[str]:
    """What of the layout's pipeline the overlap's own schedule refuses (DualPipe: even pp and micro-batches)."""
    overlap, code, m = layout.moe_a2a_overlap, A2A_OVERLAP_CODES[layout.moe_a2a_overlap], layout.grad_accumulation
    problems = []
    if not overlap_runs_pipeline(code, layout.pp, layout.vpp):
        problems.append(f"--moe-a2a-overlap {overlap} runs its own schedule, two model chunks per rank over an even "
                        f"number of pipeline stages: needs --pp 2, 4, ... and --vpp 1, got pp({layout.pp}) vpp({layout.vpp})")
    elif int(overlap_micro_batches(code, layout.pp, m)) != m:
        per_stage = A2A_OVERLAPS[overlap].micro_batches_per_stage
        problems.append(f"--moe-a2a-overlap {overlap} needs an even number of micro-batches per step, at least "
                        f"{per_stage} x pp({layout.pp}) = {per_stage * layout.pp}: got global_batch / (micro_batch x dp)"
                        f" = {m}")
    return problems


def moe_unsupported(framework: str, layout, model) -> list[str]:
    """MoE features of `layout` this stack (or model) cannot run, each with the reason."""
    stack = MOE_STACKS[framework]
    problems = []
    etp = layout.expert_tp
    grid = layout.tp * layout.cp * layout.dp
    if (layout.ep > 1 or etp != layout.tp) and not model.is_moe:
        problems.append(f"ep({layout.ep}) / etp({etp}) need an MoE model ({model.name} is dense)")
    # Routing settings of a dense model would change nothing: refused rather than ignored.
    routing = [name for name, given in (("moe_capacity_factor", layout.moe_capacity_factor is not None),
                                        ("moe_pad_to_capacity", layout.moe_pad_to_capacity),
                                        ("moe_load_imbalance", layout.moe_load_imbalance != 1.0),
                                        ("moe_node_dispatch", layout.moe_node_dispatch)) if given]
    if routing and not model.is_moe:
        problems.append(f"{', '.join(routing)} {'need' if len(routing) > 1 else 'needs'} an MoE model ({model.name} is dense)")
    if model.is_moe and model.moe_experts % layout.ep:
        problems.append(f"moe_experts({model.moe_experts}) is not divisible by ep({layout.ep})")
    if grid % (layout.ep * etp):
        problems.append(f"tp({layout.tp}) * cp({layout.cp}) * dp({layout.dp}) = {grid} is not divisible by "
                        f"ep({layout.ep}) * etp({etp}) = {layout.ep * etp} (Megatron's expert grid)")
    if model.is_moe and model.expert_ffn_size % etp:
        problems.append(f"moe_ffn({model.expert_ffn_size}) is not divisible by etp({etp})")
    if model.is_moe and stack.tp_needs_sequence_parallel and layout.tp > 1 and not layout.seq_parallel:
        problems.append(f"seq_parallel=0 with an MoE model at tp({layout.tp}): {framework}'s MoE layer trains with "
                        "tensor parallelism only under sequence parallelism (set --seq-parallel 1)")
    if layout.ep > 1 and not stack.expert_parallel:
        problems.append(f"ep({layout.ep}) > 1: {framework} has no expert parallelism")
    if layout.moe_node_dispatch and not stack.can_dispatch_once_per_node:
        problems.append(f"moe_node_dispatch=1: {framework}'s dispatcher sends one copy per routed expert (plan "
                        "--moe-node-dispatch 0)")
    elif layout.moe_node_dispatch_used and layout.moe_pad_to_capacity_used and stack.node_dispatch_refuses_padding:
        problems.append(f"moe_node_dispatch=1 with moe_pad_to_capacity=1: {framework}'s node-limited dispatcher does "
                        "not pad expert inputs to capacity (plan one of them)")
    overlap = layout.moe_a2a_overlap
    if overlap != "none":
        if overlap not in stack.overlaps:
            problems.append(f"moe_a2a_overlap={overlap}: {framework} runs {' or '.join(stack.overlaps)}")
        if layout.ep == 1:
            problems.append(f"moe_a2a_overlap={overlap} needs ep > 1")
        if A2A_OVERLAPS[overlap].needs_interleaving_with_pp and layout.pp > 1 and layout.vpp == 1:
            problems.append(f"moe_a2a_overlap={overlap} with pp({layout.pp}) > 1 needs vpp > 1")
        if overlap == "megatron" and layout.recompute == "full":
            problems.append("moe_a2a_overlap=megatron cannot run with recompute=full")
        problems += _overlap_schedule_problems(layout)
    if model.is_moe and stack.zero3_expert_limits and layout.zero == 3:
        problems += _zero3_expert_problems(framework, layout)
    return problems
