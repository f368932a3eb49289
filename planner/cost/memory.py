"""Bytes per GPU (and per node on the host / NVMe) as the allocators see them. Pure, vectorised.

Model states, per parameter P of one GPU's slice (its pipeline stage's parameters / tp), d the sharding
group (dp, or dp x cp where the stack shards over context-parallel ranks too), w the weight bytes,
g the gradient-buffer bytes (framework record, by dtype) and K the optimizer side (below):
  ZeRO-0: w·P + g·P + K·P                  Megatron bf16 18, fp16 20, fp32 16 (dist_optimizer.md:16-20)
  ZeRO-1: w·P + g·P + K·P/d                Megatron 6 + 12/d, 4 + 16/d, 8 + 8/d; DeepSpeed 4P + 16P/N
  ZeRO-2: w·P + g·P/d + K·P/d              DeepSpeed 2P + 18P/N (estimate_zero2_model_states_mem_needs)
  ZeRO-3: w3·P/d + g·P/d + K·P/d + gathered    DeepSpeed 20P/N + 4·largest, FSDP2 16P/N + units
K = 8 (Adam m, v in fp32) + the fp32 master copy (framework `optimizer_bytes` - 8: 4, or 0 where the
fp32 parameter is the master, FSDP/JAX, whose ZeRO-0/1 weights then add 4·P and ZeRO-2 4·P/d for it;
0 in fp32 training) + 4 for the fp32 gradient copy the
optimizer steps on whenever the gradient buffer is 16-bit (DeepSpeed stage_1_and_2.py:1892-1902 and
stage3.py:1895-1903 `single_grad_partition`; Megatron's fp16 row). The copy only exists during the
optimizer step; the model states count it throughout, as DeepSpeed's estimators and Megatron's table do. Where
the stack frees it and the 16-bit gradients after every step (Framework.gradients_freed_after_step: DeepSpeed at
ZeRO 0-2), the total is the larger of the two phases, the forward's activations or the step's own states, not
their sum (phase_overlap), and the parts list what is live at that peak.
The gathered working set of ZeRO-3 is the largest module's 16-bit weight and gradient (DeepSpeed,
stage3.py:3008-3044 `largest_layer_memory = 4 * largest_layer_params`) or whole transformer blocks
(FSDP2/Megatron-FSDP: `units_in_flight` blocks' 16-bit weights, plus the block being reduced: its
16-bit gradient and the reduce-dtype copy `foreach_reduce` makes, torch/distributed/fsdp/_fully_shard/
_fsdp_collectives.py@010ae4a8). Under pipeline parallelism torchtitan keeps the stage unsharded
(`reshard_after_forward = not pp_enabled`, torchtitan@b5bcd76c torchtitan/distributed/fsdp.py:129-132)
and torch's pipeline schedule accumulates unsharded gradients until the last backward
(`set_requires_gradient_sync(False)`, torch/distributed/pipelining/stage.py@01386103, in the reduce dtype:
_fsdp_param.py `to_accumulated_grad_if_needed`). Optimizer offload moves K (and the ZeRO-2/3 gradient
partitions) to the host; ZeRO-Infinity params offload moves the sharded weights too.

Activations per layer follow Korthikanti et al. 2022 ("Reducing Activation Recomputation"), in bytes
for 16-bit activations with T = micro-batch tokens: T·h·(10 + 24/t + 5·a·s/(h·t)) without sequence
parallelism, T·h·(34 + 5·a·s/h)/t with it, for a model trained with dropout; without dropout no mask is kept
and the dropout's output is the softmax's (8 + 24/t + 2·a·s/(h·t); REPLICATED_ACTIVATION_COEFF); in fp8 a stack
that keeps the GEMMs' quantised inputs keeps less (fp8_saved_input_savings); the score term vanishes with selective
recompute or flash attention; full recompute keeps only the 2·T·h layer input. The 24 generalises to GQA and
SwiGLU as (2 + 4g/a) + 2 + (4 or 6)·f/h. Pipeline stage r holds the micro-batches Megatron's schedule
has started and not finished: min(p - r, m) with 1F1B, and with interleaving (warm-up + 1) chunks of
1/v stage each, warm-up = 2(p - r - 1) + (v - 1)·p (Megatron-LM@d98e8a64
megatron/core/pipeline_parallel/schedules.py:929-975, get_pp_rank_microbatches); for r = 0 that is
p·(1 + (p - 1)/(p·v)) (Korthikanti §4.2.3). With dropout the first stage also keeps the embedding dropout's 1-byte
mask per token x hidden for each micro-batch that ran the embedding (embedding_dropout_mask_bytes). Memory is taken
on the first, the fullest middle and the last
stage (planner.specs.pipeline_stages.stage_layers: uneven stages allowed) and the largest binds.

Beside the tensors: the CUDA context and library workspaces, NCCL's per-connection buffers, TE's
userbuffers when TP communication overlaps the GEMMs, and allocator fragmentation as a fraction of the
bytes freed and re-allocated every micro-batch (`Efficiency.memory_reserve_fraction`; see
`reserve_parts`). `Efficiency.memory_reserve_bytes` is what is left unexplained (calibrated).
"""

from __future__ import annotations

import numpy as np

from planner.cost import distinct, moe
from planner.cost.stages import stage_moe_layers
from planner.frameworks import (CP_BUFFER_COLUMNS, CP_BUFFER_PHASES, CP_BUFFER_TERMS, any_stack_gives,
                                 batch_framework_arrays, interleaving_round)
from planner.frameworks.moe import interleaved_warmup_forwards, pairs_stages
from planner.specs.hardware import ClusterSpec
from planner.specs.topology import NCCL_CHANNELS
from planner.specs.candidate_batch import DTYPE_BYTES, DTYPE_CODES, CandidateBatch
from planner.specs.pipeline_chunks import even_deal, rank_chunks
from planner.specs.pipeline_stages import (padded_vocab, stage_argmax, stage_param_counts,
                                          vocab_padding_params)

MIB = 2.0**20
ADAM_STATE_BYTES = 8.0  # fp32 Adam m and v
FP32_GRAD_COPY_BYTES = 4.0  # fp32 gradient the optimizer steps on when the gradient buffer is 16-bit
HOST_BUFFER_FACTOR = 1.5  # DeepSpeed's additional_buffer_factor for CPU-side estimates
# DeepSpeed defaults (microsoft/DeepSpeed@38327e07 deepspeed/runtime/zero/config.py:109, 208):
# reduce_bucket_size = 5e8 elements (ZeRO-1/2/3 IPG buffer); stage3_prefetch_bucket_size = 5e7.
ZERO12_BUCKET_ELEMENTS = 5e8
ZERO3_BUCKET_ELEMENTS = 5e7
# Korthikanti's coefficients (Korthikanti et al. 2022 section 4.1): bytes per T·h that every tp rank keeps whole: two
# norm inputs 4, attention input 2, MLP input 2, and, where the model trains with dropout, the masks of the two hidden
# dropouts 1 + 1. The 5·a·s/h score bytes are the softmax output 2, the attention dropout's mask 1 and its output 2,
# which the product with V keeps. Without dropout (ModelSpec.dropout) no mask is kept and the dropout returns the
# softmax output itself (torch's dropout at p = 0), which is kept once: 2·a·s/h.
REPLICATED_ACTIVATION_COEFF = 8.0
HIDDEN_DROPOUT_MASK_COEFF = 2.0
SCORE_COEFF = 2.0
SCORE_DROPOUT_COEFF = 3.0
# The embedding's dropout (hidden_dropout) keeps a 1-byte mask per token x hidden on the first stage for each micro-batch
# in flight, of the sequence-parallel slice where the sequence is split (NVIDIA/Megatron-LM@d98e8a64
# megatron/core/models/common/embeddings/language_model_embedding.py:90, 142-156: scatter to the sequence-parallel
# region, then torch.nn.Dropout). It lies outside the transformer layers, so no recompute mode drops it.
EMBEDDING_DROPOUT_MASK_COEFF = 1.0
# CUDA context of a PyTorch process with lazy module loading (the default since CUDA 12.2 and set by
# PyTorch since 1.13): 287,047,680 bytes measured in pytorch/pytorch#86509 (666,632,192 eager).
CUDA_CONTEXT_BYTES = 287_047_680.0
# cuBLAS workspaces: PyTorch's default on Hopper 4096 KiB x 8 = 32 MiB per handle and stream
# (aten/src/ATen/cuda/CublasHandlePool.cpp parseChosenWorkspaceSize) and Transformer Engine's own
# 32 MiB + 1 KiB (NVIDIA/TransformerEngine@d0067d0d transformer_engine/pytorch/cpp_extensions/gemm.py:40-45).
LIBRARY_WORKSPACE_BYTES = 32 * MIB + (32 * MIB + 1024)
# TE userbuffers (tp_comm_overlap): one communication buffer of the gathered [s·b/cp, h] activation per
# overlapped GEMM, 10 of them (ring-exchange qkv/fc1 fprop, proj/fc2 dgrad; pipelined proj/fc2 fprop;
# bulk qkv/fc1 dgrad and wgrad: transformer_engine/pytorch/module/base.py:336-360), plus a cuBLAS
# workspace for each of its 3 streams (gemm.py:37, 53-57).
TP_OVERLAP_BUFFERS = 10
TP_OVERLAP_WORKSPACE_BYTES = 3 * (32 * MIB + 1024)
# NCCL buffers per peer connection, one per protocol (NVIDIA/nccl@5067397c src/init.cc:810-824):
# Simple NCCL_BUFFSIZE 4 MiB, LL128 120 x 640 x 8 steps x 8 B, LL 8 x 512 x 8 steps x 16 B
# (src/include/device.h:26, 97-98, 114-115).
NCCL_CONNECTION_BYTES = 4 * MIB + 120 * 640 * 8 * 8 + 8 * 512 * 8 * 16
# Each of a communicator's NCCL_CHANNELS (specs.topology) holds a ring's receive and send connection.
NCCL_CONNECTIONS_PER_CHANNEL = 2


def _stack(batch: CandidateBatch, stack: dict | None) -> dict:
    return batch_framework_arrays(batch) if stack is None else stack


def _once_per_batch(batch: CandidateBatch, stack: dict | None, name: str, compute):
    """compute(batch, stack), cached on the batch under `name` when `stack` is the batch's own (memory and step
    time ask several times); another stack's is computed afresh. The cached arrays are shared: do not modify."""
    own = batch_framework_arrays(batch)
    if stack is None or stack is own:
        return batch.cached(name, lambda b: compute(b, own))
    return compute(batch, stack)


def sharding_degree(batch: CandidateBatch, stack: dict | None = None) -> np.ndarray:
    """Ranks the optimizer (and ZeRO-2/3 gradients, weights) are sharded over: dp, or dp x cp."""
    stack = _stack(batch, stack)
    return batch.dp * np.where(stack["shards_over_context_parallel"] > 0, batch.cp, 1.0)


def unsharded_through_step(batch: CandidateBatch, stack: dict | None = None) -> np.ndarray:
    """Rows whose sharded data parallelism gathers the stage's weights once per step and reduces its gradients
    once, after the last micro-batch, holding both unsharded in between: torchtitan's FSDP2 (ZeRO-2 or -3)
    under torch.distributed.pipelining (Framework.unsharded_stage_with_pp). torchtitan does not reshard after
    forward when pp > 1 (torchtitan@b5bcd76c `torchtitan/distributed/fsdp.py`:129-132), the pipeline stage turns
    gradient sync and reshard-after-backward off for every micro-batch (torch 2.13
    `distributed/pipelining/stage.py`:844-847) and reduces once in `perform_reduce_grad` (:1164-1185)."""
    return _once_per_batch(batch, stack, "unsharded_through_step", lambda b, s: (
        (s["unsharded_stage_with_pp"] > 0) & (b.pp > 1) & (b.zero >= 2)))


def state_sharding_degrees(batch: CandidateBatch, stack: dict | None = None) -> dict[str, np.ndarray]:
    """Ranks each model state is sharded over under hierarchical partitioning (layout.shard_group,
    grad_shard_group; 0 = the whole sharding group): weights and optimizer over the shard group (MiCS
    `mics_shard_size`, HSDP), gradients over the gradient group (default: the shard group), and `hpz`, the
    size of ZeRO++'s secondary weight partition (1 = none). Flat ZeRO: all equal sharding_degree."""
    d = sharding_degree(batch, stack)
    weights = np.where(batch.shard_group > 0, np.minimum(batch.shard_group, d), d)
    grads = np.where(batch.grad_shard_group > 0, np.minimum(batch.grad_shard_group, weights), weights)
    return {"weights": weights, "optimizer": weights, "grads": grads, "hpz": np.minimum(batch.zero_hpz, d)}


def element_bytes(batch: CandidateBatch, stack: dict | None = None) -> dict[str, np.ndarray]:
    """Bytes per parameter element: weights, sharded (ZeRO-3) weights, gradient buffer, gradient reduce
    dtype, and the optimizer side K (Adam, fp32 master, fp32 gradient copy); once per batch (_once_per_batch)."""
    return _once_per_batch(batch, stack, "element_bytes", _keyed_element_bytes)


def _keyed_element_bytes(batch: CandidateBatch, stack: dict) -> dict[str, np.ndarray]:
    """_element_bytes, computed once per distinct combination of STAGE_STATE_COLUMNS (more than it reads: the
    batch is numbered by that key for the model states already) when `stack` is the batch's own."""
    if stack is not batch_framework_arrays(batch):
        return _element_bytes(batch, stack)
    return distinct.once_per_combination(batch, STAGE_STATE_COLUMNS,
                                         lambda b: _element_bytes(b, batch_framework_arrays(b)))


def _element_bytes(batch: CandidateBatch, stack: dict) -> dict[str, np.ndarray]:
    dtype = batch.dtype.astype(int)
    fp32, fp16 = dtype == DTYPE_CODES["fp32"], dtype == DTYPE_CODES["fp16"]
    weights = DTYPE_BYTES[dtype]
    grads = np.where(fp32, 4.0, np.where(fp16, stack["grad_bytes_fp16"], stack["grad_bytes_bf16"]))
    reduce = np.where(fp32, 4.0, np.where(fp16, stack["reduce_bytes_fp16"], stack["reduce_bytes_bf16"]))
    # The layout's explicit choice (grad_reduce_in_fp32) overrides the framework's default.
    chosen = batch.grad_reduce_in_fp32
    # Reduced in fp32: held in fp32 where the stack does (Framework.holds_fp32_grads_*), else in the model dtype.
    holds = np.where(fp16, stack["holds_fp32_grads_fp16"], stack["holds_fp32_grads_bf16"]) > 0
    held_in_fp32 = np.where(holds & (batch.zero <= stack["holds_fp32_grads_max_zero"]), 4.0, weights)
    grads = np.select([chosen == 1, chosen == 0], [held_in_fp32, weights], grads)
    reduce = np.select([chosen == 1, chosen == 0], [4.0, weights], reduce)
    master = np.where(fp32, 0.0, stack["optimizer_bytes"] - ADAM_STATE_BYTES)
    grad_copy = np.where(grads < 4.0, FP32_GRAD_COPY_BYTES, 0.0)
    sharded_weights = np.where(fp32, 4.0, stack["sharded_param_bytes"])
    # Where the stack keeps no master copy on the optimizer side, its (sharded) fp32 parameter is the master
    # and lives beside the 16-bit compute weights at every ZeRO stage, not only as ZeRO-3's sharded weights.
    param_master = np.where(fp32 | (master > 0), 0.0, sharded_weights)
    return {"weights": weights, "sharded_weights": sharded_weights, "param_master": param_master,
            "grads": grads, "reduce": reduce, "optimizer": ADAM_STATE_BYTES + master + grad_copy}


def fp32_accumulation_rows(batch: CandidateBatch, stack: dict | None = None) -> np.ndarray:
    """Candidates whose stack adds each micro-batch's 16-bit gradients into an fp32 copy in a pass of its own
    (Framework.fp32_grad_accumulation_bytes > 0: DeepSpeed's BF16_Optimizer, which runs at ZeRO 0 and 1 only,
    runtime/engine.py:1316-1318, 1349-1350): 16-bit weights, gradients held in fp32."""
    return _once_per_batch(batch, stack, "fp32_accumulation_rows", _fp32_accumulation_rows)


def _fp32_accumulation_rows(batch: CandidateBatch, stack: dict) -> np.ndarray:
    sixteen_bit = batch.dtype.astype(int) != DTYPE_CODES["fp32"]
    return (stack["fp32_grad_accumulation_bytes"] > 0) & sixteen_bit & (element_bytes(batch, stack)["grads"] >= 4.0) \
        & (batch.zero <= 1)


def zero0_sharding_optimizer_rows(batch: CandidateBatch, stack: dict | None = None) -> np.ndarray:
    """ZeRO-0 candidates whose stack shards the fp32 master and Adam states over dp all the same, with a gradient
    buffer of its own that each micro-batch's 16-bit .grad is added into (DeepSpeed's BF16_Optimizer): with fp32
    accumulation where that optimizer all-reduces (Framework.fp32_accumulation_all_reduces), and bf16 under the
    stack's pipeline engine (Framework.bf16_pipeline_shards_optimizer)."""
    stack = _stack(batch, stack)
    fp32 = (stack["fp32_accumulation_all_reduces"] > 0) & fp32_accumulation_rows(batch, stack)
    return (batch.zero == 0) & (fp32 | bf16_pipeline_optimizer_rows(batch, stack))


def bf16_pipeline_optimizer_rows(batch: CandidateBatch, stack: dict) -> np.ndarray:
    """bf16 ZeRO-0 candidates under the stack's pipeline engine that run its sharding optimizer with 16-bit
    gradient accumulation (Framework.bf16_pipeline_shards_optimizer)."""
    return ((stack["bf16_pipeline_shards_optimizer"] > 0) & (batch.zero == 0) & (batch.pp > 1)
            & (batch.dtype.astype(int) == DTYPE_CODES["bf16"]) & (element_bytes(batch, stack)["grads"] < 4.0))


def optimizer_sharded_rows(batch: CandidateBatch, stack: dict | None = None) -> np.ndarray:
    """Candidates whose optimizer states (and step) are sharded over the data-parallel ranks: ZeRO 1 and up, and
    the ZeRO-0 rows of zero0_sharding_optimizer_rows."""
    return (batch.zero >= 1) | zero0_sharding_optimizer_rows(batch, stack)


def largest_matrix_params(batch: CandidateBatch) -> np.ndarray:
    """The largest single weight matrix on a tp rank (ZeRO-3 gathers one module at a time). With SwiGLU the
    gate and up projections are one module, `dense_h_to_4h` of width 2 x ffn, in Megatron(-DeepSpeed)
    (microsoft/Megatron-DeepSpeed@f4157bea megatron/model/transformer.py:112-117)."""
    h = batch.hidden
    qkv = h * (h + 2 * h * batch.kv_heads / batch.heads)
    fc1 = h * batch.ffn * (batch.mlp_matrices - 1.0)
    return np.maximum.reduce([padded_vocab(batch) * h, fc1, qkv]) / batch.tp


def gathered_bytes(params, batch: CandidateBatch, stack: dict | None = None) -> np.ndarray:
    """ZeRO-3 / FSDP working set of unsharded parameters (and their gradients) on one GPU."""
    stack = _stack(batch, stack)
    size = element_bytes(batch, stack)
    w, g, r = size["weights"], size["grads"], size["reduce"]
    # Memory-centric tiling (ZeRO-Infinity 5.1.3): one tile of the largest module is gathered at a time.
    tiles = np.maximum(batch.zero_tiling, 1.0)
    by_module = np.where(stack["gathers_largest_module"] > 0, (w + g) * largest_matrix_params(batch) / tiles, 0.0)
    unit = batch.layer_params_per_tp_rank
    if batch.has_moe:  # an MoE layer's unit gathers its local experts too (layer_params counts the dense part only)
        unit = unit + np.where(batch.moe_layers > 0, batch.expert_params / (batch.ep * batch.etp), 0.0)
    blocks = stack["units_in_flight"] * w * unit + (w + r) * unit
    # torchtitan + torch.distributed.pipelining: the whole stage stays unsharded, gradients accumulate
    # unsharded in the reduce dtype until the last micro-batch's backward.
    blocks = np.where(unsharded_through_step(batch, stack), (w + r) * params, blocks)
    by_block = np.where(stack["gathers_whole_layers"] > 0, blocks, 0.0)
    return np.where(batch.zero == 3, np.maximum(by_module, by_block), 0.0)


def model_state_bytes(params, batch: CandidateBatch, stack: dict | None = None) -> dict[str, np.ndarray]:
    """Weights, gradients, optimizer states and the ZeRO-3 gathered set on one GPU holding `params`
    (per tp rank), plus what optimizer/parameter offload moves to the host or NVMe."""
    stack = _stack(batch, stack)
    size = element_bytes(batch, stack)
    zero = batch.zero
    degree = state_sharding_degrees(batch, stack)
    d, d_grads = degree["weights"], degree["grads"]
    # ZeRO-0/1/2 on stacks whose fp32 parameter is the master (FSDP, JAX: `param_master`): it is sharded with the
    # parameters at ZeRO-2 (FSDP2 with reshard_after_forward=False, FSDP1 SHARD_GRAD_OP) and whole where the
    # parameters are replicated (DDP / NO_SHARD, MaxText without an fsdp axis), beside the 16-bit weights
    # computed from it (torchtitan: 4 + 4 + 8 = 16 B over the mesh, frameworks/fsdp.py).
    unsharded_master = size["param_master"] * params / np.where(zero == 2, d, 1.0)
    weights = np.where(zero == 3, size["sharded_weights"] * params / d, size["weights"] * params + unsharded_master)
    # ZeRO++ hpZ: the secondary partition, in the weights' 16-bit dtype, over hpz ranks (DeepSpeed
    # partition_parameters.py:1673-1700 `_partition_param_sec`: tensor_size // num_ranks_in_param_group).
    weights = weights + np.where((zero == 3) & (degree["hpz"] > 1), size["weights"] * params / degree["hpz"], 0.0)
    grads = np.where(zero >= 2, size["grads"] * params / d_grads, size["grads"] * params)
    # ZeRO-2 under pipelining (torchtitan's FSDP2): the stage's gradients accumulate unsharded in the reduce
    # dtype until the last micro-batch (ZeRO-3 counts them in its gathered set, gathered_bytes).
    # ZeRO-3 the same, in its gathered set; its sharded gradients appear only as the last backward's reduction
    # frees the unsharded ones unit by unit (the previous step's were set to None by zero_grad), so they do not
    # add to the peak: ZeRO-2 and -3 under torchtitan's pipeline hold the same states.
    piped = unsharded_through_step(batch, stack)
    grads = np.where(piped & (zero == 2), size["reduce"] * params, np.where(piped & (zero == 3), 0.0, grads))
    # BF16_Optimizer: each micro-batch's bf16 .grad lives beside the fp32 (or, under the pipeline engine at ZeRO-0,
    # bf16) buffer until it is added in (bf16_optimizer.py:332-347; set to None only before the next backward,
    # :445-459).
    own_buffer = fp32_accumulation_rows(batch, stack) | bf16_pipeline_optimizer_rows(batch, stack)
    grads = grads + np.where(own_buffer, size["weights"] * params, 0.0)
    optimizer = np.where(optimizer_sharded_rows(batch, stack), size["optimizer"] * params / d, size["optimizer"] * params)

    offloaded = np.where(batch.offload >= 1, optimizer, 0.0)
    # DeepSpeed reduces ZeRO-2/3 gradient partitions straight into host buffers under optimizer offload
    # (estimators: ZeRO-2 GPU 2P, ZeRO-3 GPU 4·largest + 2P/N); ZeRO-1 keeps its whole 16-bit gradients
    # until the accumulation boundary (stage_1_and_2.py:1425).
    grads_off = np.where((batch.offload >= 1) & (zero >= 2), grads, 0.0)
    weights_off = np.where(batch.offload >= 2, weights, 0.0)
    off_gpu = offloaded + grads_off + weights_off
    return {"weights": weights - weights_off, "gradients": grads - grads_off, "optimizer": optimizer - offloaded,
            "zero3_gathered": gathered_bytes(params, batch, stack),
            "host_per_gpu": np.where(batch.offload_nvme, 0.0, off_gpu),
            "nvme_per_gpu": np.where(batch.offload_nvme, off_gpu, 0.0)}


def fp8_weight_bytes(stage_layer_count, batch: CandidateBatch, stack: dict | None = None) -> np.ndarray:
    """Transformer Engine's fp8 copies of the Linear weights (fp8 training): row-wise and column-wise
    (transposed) data, cached across micro-batches in `_fp8_workspaces` (TransformerEngine@d0067d0d
    transformer_engine/pytorch/module/linear.py:467-490, 1958-1961, 2069-2071; Megatron passes
    `is_first_microbatch` so the cache is on, megatron/core/extensions/transformer_engine.py:1338-1344).
    With FSDP2 TE does not cache (linear.py:1958): only the blocks in flight hold copies."""
    stack = _stack(batch, stack)
    unit = batch.layer_params / batch.tp  # the layer's Linear weights per tp rank (and its small vectors, a hair)
    blocks = np.where(batch.zero == 3, stack["units_in_flight"], stage_layer_count) * unit
    return np.where(batch.dtype.astype(int) == DTYPE_CODES["fp8"], stack["fp8_weight_copy_bytes"] * blocks, 0.0)


def activation_bytes_per_layer(batch: CandidateBatch) -> dict[str, np.ndarray]:
    """Korthikanti per-layer activation bytes (see _activation_bytes_per_layer), once per batch: computed once per
    distinct combination of distinct.LAYER_COLUMNS (more than they read; the batch is numbered by that key once, for
    step_time's per-layer times too) and spread to the candidates."""
    return batch.cached("activation_bytes", lambda b: distinct.once_per_combination(
        b, distinct.LAYER_COLUMNS, _activation_bytes_per_layer))


def _activation_bytes_per_layer(batch: CandidateBatch) -> dict[str, np.ndarray]:
    """Korthikanti per-layer activation bytes for one micro-batch: `stored` (kept for backward under the
    recompute mode), `full` (everything the layer's forward materialises, i.e. no recompute) and
    `working` (what recomputing the layer in backward materialises on top of what it stored)."""
    t = batch.tp
    h = batch.hidden
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    kv_fraction = batch.kv_heads / batch.heads
    mlp_coeff = np.where(batch.mlp_matrices == 3, 6.0, 4.0)
    sharded = (2.0 + 4.0 * kv_fraction) + 2.0 + mlp_coeff * batch.ffn / h
    masks = np.where(batch.dropout_masks, 1.0, 0.0)
    scores = (SCORE_COEFF + SCORE_DROPOUT_COEFF * masks) * batch.heads * (batch.seq_len / batch.cp) / h
    # Coefficients assume 2-byte activations and 1-byte masks; fp32 training doubles them (approximately).
    scale = DTYPE_BYTES[batch.dtype.astype(int)] / 2.0
    sp = batch.seq_parallel & (t > 1)
    replicated = REPLICATED_ACTIVATION_COEFF + HIDDEN_DROPOUT_MASK_COEFF * masks
    fp8 = fp8_saved_input_savings(batch)
    split = lambda whole, shards: np.where(sp, (whole + shards) / t, whole + shards / t)  # noqa: E731
    linear = split(replicated - fp8["replicated"], sharded - fp8["sharded"])
    # Flash attention never materialises the s x s scores; selective recompute drops them from storage.
    materialised_scores = np.where(batch.flash_attention, 0.0, scores / t)
    full = tokens * h * (linear + materialised_scores) * scale
    # What the memory-bound kernels read and write: the 16-bit tensors, whatever fp8 copy a GEMM keeps of them (the
    # casts are priced apart, layer_compute._fp8_cast_seconds).
    traffic = tokens * h * (split(replicated, sharded) + materialised_scores) * scale
    stored = tokens * h * (linear + np.where(batch.recompute == 0, materialised_scores, 0.0)) * scale
    layer_input = tokens * h * 2.0 * scale / np.where(sp, t, 1.0)
    # Partitioned checkpoints keep 1/tp of the input (of the sequence-split input under sequence parallelism: DeepSpeed
    # splits whatever it is given, checkpointing.py:387-440); `partition_activations` holds only with full
    # recompute and tp > 1 (candidate_batch).
    kept_input = layer_input / np.where(batch.partition_activations, t, 1.0)
    stored = np.where(batch.recompute == 2, kept_input, stored)
    # The recomputed layer's own stored input is part of its full activations: count it once. A partitioned input is
    # all-gathered into a whole new buffer before the recompute (checkpointing.py:296-306): the layer's full
    # activations, its whole input among them, are live on top of the slice already counted as stored.
    working = np.select([batch.recompute == 2, batch.recompute == 1],
                        [full - kept_input, tokens * h * materialised_scores * scale], 0.0)
    return {"stored": stored, "full": full, "working": working, "traffic": traffic}


def fp8_saved_input_savings(batch: CandidateBatch) -> dict[str, np.ndarray]:
    """Bytes per token x hidden (at Korthikanti's 2-byte coefficients) that fp8 training saves where the stack keeps
    the Linear layers' quantised inputs (Framework.fp8_keeps_quantised_linear_inputs), `replicated`: 1 of each norm
    output a fused norm-and-GEMM keeps, the QKV input (not under MLA, whose separate norm feeds two down-projections
    that keep an fp8 copy each: Megatron-Core's MLA spec, TENorm + TELinear) and the fc1 input of the dense layers
    (an MoE layer's norm is a separate TENorm whose 16-bit output the router keeps; its experts' inputs are
    frameworks.moe's fp8_saved_bytes); `sharded`: 1 per fc2 input element (f/h), less the attention output
    projection's fp8 copy kept beside the attention output under delayed scaling (-1)."""
    keeps = (batch.dtype.astype(int) == DTYPE_CODES["fp8"]) & (batch_framework_arrays(batch)["fp8_keeps_quantised_linear_inputs"] > 0)
    on = np.where(keeps, 1.0, 0.0)
    qkv_input = np.where(batch.qkv_width > 0, 1.0, 0.0)
    dense_mlp_input = 1.0 - (moe.moe_fraction(batch) if batch.moe_layers is not None else 0.0)
    delayed_copy = np.where(batch.fp8_current_scaling, 0.0, 1.0)
    return {"replicated": on * (qkv_input + dense_mlp_input), "sharded": on * (batch.ffn / batch.hidden - delayed_copy)}


def _inflight(batch: CandidateBatch, rank) -> np.ndarray:
    """Micro-batches (in whole-stage units) pipeline rank `rank` holds at its peak (Megatron's 1F1B and
    interleaved schedules, get_pp_rank_microbatches: warm-up forwards plus the first steady-state one).

    Interleaved, the warm-up is 2 (p - rank - 1) + (v - 1) x the micro-batches of a round (Megatron-Core: NVIDIA/
    Megatron-LM@d98e8a64 core/pipeline_parallel/schedules.py:960-965; torch: `_get_warmup_ops`, torch 2.13
    distributed/pipelining/schedules.py:2872-2888). A round is pp micro-batches where m is a multiple of pp, and
    more where it is not (frameworks.interleaving_round)."""
    p, v, m = batch.pp, batch.vpp, batch.grad_accumulation
    one_f_one_b = np.minimum(p - rank, m)
    return np.where(p == 1, 1.0, np.where(v > 1, _chunks_as_stages(batch, rank, _peak_forwards(batch, rank)), one_f_one_b))


def _peak_forwards(batch: CandidateBatch, rank) -> np.ndarray:
    """The chunk forwards rank `rank` has run at its peak, interleaved: the warm-up's (with Megatron's all-to-all
    overlap, one more) and the first steady-state one, at most every micro-batch's."""
    return np.minimum(interleaved_warmup_forwards(batch, rank) + 1, batch.grad_accumulation * batch.vpp)


def _chunks_as_stages(batch: CandidateBatch, rank, forwards) -> np.ndarray:
    """`forwards` chunk forwards of pipeline rank `rank` in whole-stage units: the layers of the chunks they ran over
    the rank's layers. The forwards run the chunks in order, a round of micro-batches each
    (frameworks.interleaving_round; Megatron's get_model_chunk_id), so the chunks the warm-up runs most often count
    most: the first ones, which hold a layer more where n mod v do (12 layers in 8 chunks, 71 forwards in rounds of
    8, hold 110 layers, 9.17 stages, not 71 / 8), and the rank's chunks as specs.pipeline_chunks.virtual_stage_layers
    deals them: where the embedding and the loss take a chunk's slot each, rank 0's first chunk and the last rank's
    last chunk a layer light; a lighter end rank's chunks filled as NVIDIA's recipe fills them (the last rank's
    2, 2, 2, 0 beside the MTP block and the loss: its warm-up's first chunks hold more than an even deal's)."""
    p = batch.pp
    first, middle, last = batch.stages
    layers = np.where(rank == 0, first, np.where(rank >= p - 1, last - batch.mtp_layers, middle))
    layers = np.maximum(layers, 1.0)
    rounds = _chunk_rounds(batch, forwards)
    sizes = _rank_chunk_layers(batch, rank, layers)
    ran = sum(_runs_of_chunk(rounds, float(c)) * size for c, size in enumerate(sizes))
    return ran / layers


def _rank_chunk_layers(batch: CandidateBatch, rank, layers) -> list[np.ndarray]:
    """Transformer layers of each model chunk of pipeline rank `rank` (0, 1 for the fullest middle rank, or pp - 1),
    one array per chunk index up to the batch's largest vpp, 0 beyond a row's own vpp (called once per distinct
    combination of INFLIGHT_COLUMNS: stage_inflight). With two ranks the middle row stands for the fuller end
    (stage_layers), so rank 1 takes that end's chunks; where the rank's chunks do not hold the `layers` the stage
    split gives it (DeepSpeed's first-heavy split, which no interleaved schedule runs), those layers dealt evenly."""
    ranks = np.broadcast_to(np.asarray(rank, dtype=float), batch.pp.shape)
    most = int(np.max(batch.vpp)) if batch.pp.size else 1
    sizes = np.zeros((most, batch.pp.size))
    for i, (n, mtp, p, v, f, l, r, count) in enumerate(zip(
            batch.layers, batch.mtp_layers, batch.pp, batch.vpp, batch.first_stage_layers, batch.last_stage_layers,
            ranks, layers)):
        p, v, r = int(p), int(v), min(int(r), int(p) - 1)
        if p == 1 or v == 1:  # not read (_inflight counts whole stages there)
            continue
        own = rank_chunks(int(n - mtp), p, v, int(f), int(l))
        dealt = max(own, key=sum) if p == 2 and r == 1 else own[r]
        sizes[:v, i] = dealt if sum(dealt) == int(count) else even_deal(int(count), v)
    return list(sizes)


def _chunk_rounds(batch: CandidateBatch, forwards):
    """A rank's first `forwards` chunk forwards as the interleaved schedule runs them, the chunks in order, a round of
    micro-batches each (frameworks.interleaving_round; Megatron's get_model_chunk_id): the round's size, the full
    cycles over the chunks, the chunk of the round in progress and the forwards it has run."""
    per_round = interleaving_round(batch_framework_arrays(batch), batch.pp, batch.grad_accumulation)
    rounds, rest = np.floor(forwards / per_round), np.mod(forwards, per_round)
    return per_round, np.floor(rounds / batch.vpp), np.mod(rounds, batch.vpp), rest


def _runs_of_chunk(rounds, chunk) -> np.ndarray:
    """Of a rank's chunk forwards (as _chunk_rounds gives them), those that ran its model chunk `chunk`."""
    per_round, full_cycles, last_chunk, rest = rounds
    return per_round * (full_cycles + (chunk < last_chunk)) + np.where(last_chunk == chunk, rest, 0.0)


def _last_chunk_runs(batch: CandidateBatch) -> np.ndarray:
    """Of the last rank's chunk forwards at its peak (_peak_forwards), those that ran its last model chunk."""
    return _runs_of_chunk(_chunk_rounds(batch, _peak_forwards(batch, batch.pp - 1.0)), batch.vpp - 1.0)


def mtp_inflight(batch: CandidateBatch, last_stage_inflight) -> np.ndarray:
    """Micro-batches whose multi-token-prediction blocks' activations the last pipeline rank holds at its peak. The
    blocks run with the output layer in the last model chunk (Megatron-Core builds them on the last virtual stage:
    NVIDIA/Megatron-LM@d98e8a64 core/transformer/multi_token_prediction.py:823-829), which an interleaved warm-up runs
    last: (v - 1) x pp forwards of the other chunks, then one (two with the all-to-all overlap's extra forward), once
    per distinct combination of INFLIGHT_COLUMNS. Elsewhere, and under DualPipe's paired stages, the blocks count as
    the rank's layers do: `last_stage_inflight` (stage_inflight's last row)."""
    return _where_interleaved(batch, _last_chunk_runs, last_stage_inflight)


def _where_interleaved(batch: CandidateBatch, chunk_runs, otherwise) -> np.ndarray:
    """`chunk_runs(batch)` (the runs of one model chunk, _first_chunk_runs or _last_chunk_runs) where the pipeline
    interleaves, once per distinct combination of INFLIGHT_COLUMNS; `otherwise` elsewhere, DualPipe's paired stages
    included."""
    interleaved = (batch.pp > 1) & (batch.vpp > 1) & ~np.asarray(pairs_stages(batch), dtype=bool)
    if not np.any(interleaved):
        return otherwise
    return np.where(interleaved, distinct.once_per_combination(batch, INFLIGHT_COLUMNS, chunk_runs), otherwise)


# What the micro-batches in flight read: the pipeline's size and interleaving, the micro-batches per step, the
# stack (its interleaved rounds), the all-to-all overlap (its extra warm-up forward) and the depth (the chunks' size).
INFLIGHT_COLUMNS = ("pp", "vpp", "grad_accumulation", "framework", "a2a_overlap", "layers", "mtp_layers") \
    + distinct.STAGE_SPLIT


def stage_inflight(batch: CandidateBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Micro-batches in flight on the first (rank 0), fullest middle (rank 1) and last pipeline stage, computed
    once per distinct combination of INFLIGHT_COLUMNS (a search has a few dozen: cost/distinct.py)."""
    return distinct.once_per_combination(batch, INFLIGHT_COLUMNS, lambda b: (
        _inflight(b, 0.0), _inflight(b, 1.0), _inflight(b, b.pp - 1.0)))


def inflight_microbatches(batch: CandidateBatch) -> np.ndarray:
    """Micro-batches whose activations the first pipeline stage holds at its peak (1F1B, interleaved)."""
    return stage_inflight(batch)[0]


def stage_params(batch: CandidateBatch) -> tuple[np.ndarray, np.ndarray]:
    """Parameters held by one GPU's slice on the first and on the last pipeline stage (divided by tp)."""
    first, _, last = stage_param_counts(batch)
    return first, last


def nccl_communicators(batch: CandidateBatch, stack: dict | None = None) -> np.ndarray:
    """NCCL communicators a rank connects: tp, cp, pipeline neighbours, and the gradient group; MoE layouts also
    the expert-parallel group (dispatch and combine) and the expert data-parallel group (the experts' gradients),
    each its own process group in Megatron-Core (parallel_state.py's expert model- and data-parallel groups)."""
    groups = [batch.tp, batch.cp, batch.pp, sharding_degree(batch, stack)]
    if batch.has_moe:
        experts = batch.experts > 0
        groups += [np.where(experts, batch.ep, 1), np.where(experts, moe.expert_dp(batch), 1)]
    return sum(np.where(size > 1, 1.0, 0.0) for size in groups)


def reserve_parts(batch: CandidateBatch, cluster: ClusterSpec, transient, stack: dict | None = None) -> dict:
    """Bytes the allocator cannot hand to tensors.

    - cuda_context: CUDA context (lazy loading) and the cuBLAS workspaces of PyTorch and TE.
    - nccl_buffers: every connected communicator holds NCCL_CHANNELS x 2 connections x the three
      protocol buffers (connections are made when a communicator is first used, NCCL_RUNTIME_CONNECT=1
      since NCCL 2.22, docs/userguide/source/env.rst:1386-1395, so only groups that communicate count).
    - fragmentation: `memory_reserve_fraction` of the bytes freed and re-allocated every micro-batch
      (activations, logits, gathered parameters, buckets): the caching allocator's splitting leaves such
      blocks partly unusable. Assumed; published measurements of the PyTorch caching allocator on LLM
      training put the waste at ~15% of reserved memory on average (up to 33%) with recompute/ZeRO/offload
      (Guo et al. 2024, GMLake, ASPLOS) and up to 43% with interleaved pipelines (Huang et al. 2025,
      STWeaver, arXiv:2507.16274); expandable segments remove most of it (torchtitan's run_train.sh:43 turns
      them on; Megatron-Core refuses them with NCCL user-buffer registration, distributed_data_parallel_config.py:263).
    - reserve: `memory_reserve_bytes`, a fixed remainder for calibration to fit.
    """
    eff = cluster.efficiency
    n = len(batch)
    return {"cuda_context": np.full(n, CUDA_CONTEXT_BYTES + LIBRARY_WORKSPACE_BYTES),
            "nccl_buffers": nccl_communicators(batch, stack) * NCCL_CHANNELS * NCCL_CONNECTIONS_PER_CHANNEL
            * NCCL_CONNECTION_BYTES,
            "fragmentation": eff.memory_reserve_fraction * transient,
            "reserve": np.full(n, eff.memory_reserve_bytes)}


# What _stage_states reads, directly or through what it calls: the model, the stage split (tp, pp, vpp, STAGE_SPLIT), the
# sharding (dp, cp, ZeRO and its hierarchy, and for MoE models ep, etp and the schedule's weight copies), offload,
# dtypes and the stack; not the micro-batch, the batch size or recompute.
STAGE_STATE_COLUMNS = distinct.MODEL_COLUMNS + (
    "tp", "pp", "vpp", "dp", "cp", "zero", "offload", "offload_nvme", "dtype", "framework", "grad_reduce_in_fp32",
    "shard_group", "grad_shard_group", "zero_hpz", "zero_tiling", "fp8_param_gather", "dp_comm_overlap",
    "ep", "etp", "a2a_overlap") + distinct.STAGE_SPLIT
# The named parts of a stage's bytes in the order a breakdown lists them. Those of STATE_PARTS (and MoE_STATE_PARTS)
# are fixed by the stage's parameters (_stage_states, once per combination of STAGE_STATE_COLUMNS); the rest follow
# the micro-batch and are computed per candidate.
STATE_PARTS = ("weights", "gradients", "optimizer", "fp8_weights", "zero3_gathered", "comm_buckets")
MOE_STATE_PARTS = ("expert_weights", "expert_gradients", "expert_optimizer", "pipeline_weight_copy")
PART_ORDER = STATE_PARTS + ("activations", "embedding_dropout_masks", "recompute_working", "cp_attention_buffers",
                            "logits", "pipeline_masks", "tp_overlap_buffers") + MOE_STATE_PARTS + (
    "moe_activations", "moe_dispatch_buffers", "cuda_context", "nccl_buffers", "fragmentation", "reserve")
_STAGES = 3  # first, fullest middle and last pipeline stage
_MIDDLE = np.array([[False], [True], [False]])  # the fullest middle stage's row: it exists only where pp > 2
_FIRST = np.array([[1.0], [0.0], [0.0]])  # 1 on the first stage's row, 0 on the others
_LAST = np.array([[0.0], [0.0], [1.0]])  # 1 on the last stage's row


def _stage_states(batch: CandidateBatch, stack: dict) -> tuple[dict, np.ndarray | None]:
    """The parts of each stage's bytes fixed by its parameters (model states, fp8 copies, gathered set, gradient
    buckets, routed experts' states), their sum, and the host and NVMe bytes they put there: computed once per
    distinct combination of STAGE_STATE_COLUMNS (a search has a few thousand among a million candidates:
    cost/distinct.py) when `stack` is the batch's own. Returns (states of the representative rows, each candidate's
    index into them), or (states per candidate, None) where keying does not pay."""
    if stack is not batch_framework_arrays(batch):
        return _stage_states_per_row(batch, stack), None
    return distinct.per_combination(batch, STAGE_STATE_COLUMNS,
                                    lambda b: _stage_states_per_row(b, batch_framework_arrays(b)))


def _stage_states_per_row(batch: CandidateBatch, stack: dict) -> dict:
    params = np.stack(stage_param_counts(batch))
    layers = np.stack(batch.stages)
    last = _LAST
    states = model_state_bytes(params, batch, stack)
    size = element_bytes(batch, stack)
    w = size["weights"]
    # FSDP2 keeps the final norm + output layer gathered from forward to backward (torchtitan
    # distributed/fsdp.py:258-265).
    held = (batch.zero == 3) & (stack["output_unit_held"] > 0) & (batch.pp == 1)
    head = batch.logits_params + vocab_padding_params(batch)
    gathered = states["zero3_gathered"] + last * np.where(held, w * head / batch.tp, 0.0)
    # DeepSpeed's IPG gradient bucket (stage_1_and_2.py:2048-2060, two with overlap_comm; stage3.py:536-540)
    # and, for ZeRO-3, the prefetch bucket; never more than the parameters it buckets.
    ipg = np.where((batch.zero < 3) & batch.dp_comm_overlap, 2.0, 1.0) * np.minimum(ZERO12_BUCKET_ELEMENTS, params)
    prefetch = np.where(batch.zero == 3, np.minimum(ZERO3_BUCKET_ELEMENTS, params), 0.0)
    separate = (stack["grad_buckets_separate"] > 0) & (batch.zero >= 1)
    buckets = np.where(separate, w * (ipg + prefetch), 0.0)
    # DDP's buckets copy every gradient for the run (Framework.zero0_bucket_gradient_copy), in the gradients' dtype.
    ddp_copy = (stack["zero0_bucket_gradient_copy"] > 0) & (batch.zero == 0) & (batch.dp > 1)
    bucket_copy = np.where(ddp_copy, size["grads"] * params, 0.0)
    # --fp8-param-gather: the layers' Linear weights are fp8 parameters (their fp8 data are `fp8_weights`), with no
    # 16-bit copy beside them; embeddings and the output layer stay 16-bit.
    fp8_params = np.where(batch.fp8_param_gather, w * layers * batch.layer_params / batch.tp, 0.0)
    parts = {"weights": states["weights"] - fp8_params, "gradients": states["gradients"],
             "optimizer": states["optimizer"], "fp8_weights": fp8_weight_bytes(layers, batch, stack),
             "zero3_gathered": gathered, "comm_buckets": buckets + bucket_copy}
    host, nvme = states["host_per_gpu"], states["nvme_per_gpu"]
    if batch.has_moe:
        expert, off_gpu = _moe_state_parts(batch, stack, np.stack(stage_moe_layers(batch)), states)
        host, nvme = host + np.where(batch.offload_nvme, 0.0, off_gpu), nvme + np.where(batch.offload_nvme, off_gpu, 0.0)
        parts.update(expert)
    shape = (_STAGES, len(batch))
    parts = {name: np.broadcast_to(value, shape) for name, value in parts.items()}
    total = sum(parts.values())
    step_only = _step_only_states(params, batch, stack, states)
    step_only = {name: np.broadcast_to(value, shape) for name, value in step_only.items()}
    # A lower bound of the total whatever the micro-batches: without the bytes the forward may not hold.
    least = total - step_only["gradients"] - step_only["copy"]
    # What is freed and made again every micro-batch: not the stage torchtitan keeps unsharded from its gather to
    # the step's one reduction under pipelining (unsharded_through_step), which is held as ZeRO-2's gradients are.
    held_for_the_step = unsharded_through_step(batch, stack)
    return {"parts": parts, "layers": layers, "total": total,
            "transient": np.where(held_for_the_step, 0.0, gathered) + buckets,
            "step_only_gradients": step_only["gradients"], "step_only_copy": step_only["copy"],
            "largest_total": np.max(np.where(_MIDDLE & (batch.pp <= 2), -np.inf, least), axis=0),
            # Host and NVMe bytes per GPU of the fullest stage (offloaded states); the params of each stage.
            "host": host, "nvme": np.max(np.broadcast_to(nvme, shape), axis=0),
            "params": params}


def _step_only_states(params, batch: CandidateBatch, stack: dict, states: dict) -> dict:
    """The dense states a stack frees after every step (Framework.gradients_freed_after_step) and makes again in the
    next backward: the gradients and, where they are 16-bit, the fp32 copy of them the optimizer steps on
    (FP32_GRAD_COPY_BYTES, in the optimizer part), at the ZeRO stages the stack frees them at
    (gradients_freed_min_zero to _max_zero: DeepSpeed 0-2, torchtitan 0-3). 0 elsewhere, and for 32-bit
    gradients where the stack keeps them for the run (fp32_gradients_kept_for_the_run: DeepSpeed's BF16_Optimizer).
    Under optimizer offload the GPU's gradients are freed alike (DeepSpeed copies each to the host fp32 buffer and
    clears it, stage_1_and_2.py:1590-1605, 1650-1667 at edaa722, and the engine's zero_grad sets the rest to None,
    :2017-2028), and the fp32 copy is the host's, not the GPU's."""
    sixteen_bit = element_bytes(batch, stack)["grads"] < 4.0
    freed = ((stack["gradients_freed_after_step"] > 0) & (batch.zero >= stack["gradients_freed_min_zero"])
             & (batch.zero <= stack["gradients_freed_max_zero"])
             & (sixteen_bit | (stack["fp32_gradients_kept_for_the_run"] == 0)))
    # The BF16_Optimizer's 16-bit gradient buffer under the pipeline engine is kept for the run (zeroed by
    # clear_hp_grads), but the fp32 copy of its shard lives only inside step() (bf16_optimizer.py:415-426 in 0.19.8).
    kept_buffer = bf16_pipeline_optimizer_rows(batch, stack)
    shard = np.where(optimizer_sharded_rows(batch, stack), state_sharding_degrees(batch, stack)["optimizer"], 1.0)
    return {"gradients": np.where(freed & ~kept_buffer, states["gradients"], 0.0),
            "copy": np.where((freed | kept_buffer) & sixteen_bit & (batch.offload == 0),
                             FP32_GRAD_COPY_BYTES * params / shard, 0.0)}


# The parts that exist only while a micro-batch's forward and backward run (not during the optimizer step).
FORWARD_BACKWARD_PARTS = ("activations", "embedding_dropout_masks", "recompute_working", "cp_attention_buffers", "logits",
                          "pipeline_masks", "moe_activations", "moe_dispatch_buffers")


def phase_overlap(step_only, forward_backward) -> np.ndarray:
    """Bytes the sum of the parts counts that are never live at once: min(the step's own states, the forward's and
    backward's own parts). Live bytes rise to max(activations, gradients + copy) over the rest: in backward each
    layer's gradients appear as its activations go, and the copy exists only in the step."""
    return np.minimum(step_only, forward_backward)


def expert_sharding(batch: CandidateBatch, stack: dict) -> dict[str, np.ndarray]:
    """The experts' sharding degrees under this layout's (hierarchical) partitioning (cost.moe.expert_sharding),
    for their memory here and their Adam step (cost.step_time)."""
    return moe.expert_sharding(batch, state_sharding_degrees(batch, stack), sharding_degree(batch, stack))


def _moe_state_parts(batch: CandidateBatch, stack: dict, moe_layers, states) -> tuple[dict, np.ndarray]:
    """Routed experts' states on the GPU (sharded over the expert data-parallel group) of each stage's `moe_layers`
    (cost.stages.stage_moe_layers), their fp8 copies and the DualPipe second weight copy (cost/moe.py); and the bytes
    offload moves off the GPU (host or NVMe)."""
    expert_params = moe.expert_params_per_gpu(batch, moe_layers)
    expert = moe.expert_state_bytes(batch, expert_params, element_bytes(batch, stack), expert_sharding(batch, stack))
    fp8 = np.where(batch.dtype.astype(int) == DTYPE_CODES["fp8"], stack["fp8_weight_copy_bytes"] * expert_params, 0.0)
    weights = np.where(batch.fp8_param_gather, 0.0, expert["weights"])  # fp8 parameters: the fp8 data only
    # Offload moves the experts' states as model_state_bytes moves the dense ones: the optimizer states, ZeRO-2/3's
    # gradient partitions and ZeRO-Infinity's parameters go to the host (DeepSpeed offloads every parameter group,
    # the experts' included). Left on the GPU, Mixtral 8x7B's expert Adam states (84 GiB on 8 GPUs) failed layouts
    # that fit. Their host bytes are returned apart, added to the dense ones by the caller.
    optimizer_off = np.where(batch.offload >= 1, expert["optimizer"], 0.0)
    grads_off = np.where((batch.offload >= 1) & (batch.zero >= 2), expert["gradients"], 0.0)
    weights_off = np.where(batch.offload >= 2, weights, 0.0)
    return {"expert_weights": weights - weights_off + fp8, "expert_gradients": expert["gradients"] - grads_off,
            "expert_optimizer": expert["optimizer"] - optimizer_off,
            "pipeline_weight_copy": (moe.parameter_copies(batch) - 1.0) * _paired_stage(batch, states["weights"])}, \
        optimizer_off + grads_off + weights_off


def _paired_stage(batch: CandidateBatch, rows):
    """Per stage (first, middle, last), the values of the stage whose copy its rank holds beside its own: under a
    pipeline that pairs stage r with pp - 1 - r on a rank (frameworks.moe.pairs_stages) the first's are the last's
    and the last's the first's (a middle rank's partner is taken as alike); elsewhere its own."""
    return np.where(pairs_stages(batch), rows[::-1], rows)


def _per_candidate_parts(batch: CandidateBatch, cluster: ClusterSpec, stack: dict, layers, transient_states) -> dict:
    """The parts of each stage's bytes that follow the micro-batch: activations, the recompute's working set,
    logits, overlap buffers, MoE activations and dispatch buffers, and the allocator's reserves."""
    inflight = np.stack(stage_inflight(batch))
    last = _LAST
    per_layer = activation_bytes_per_layer(batch)
    w = element_bytes(batch, stack)["weights"]
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    # The last stage holds what the stack's loss keeps for one micro-batch: _loss_bytes_per_logit·s·b·V/t bytes, V the
    # stack's padded vocabulary.
    per_logit = _loss_bytes_per_logit(batch, stack, w)
    # Each multi-token-prediction block's loss keeps as much again until the micro-batch's backward
    # (megatron/core/transformer/multi_token_prediction.py process_mtp_loss: one output layer and loss per block).
    logits = last * ((1.0 + batch.mtp_layers) * per_logit * tokens * padded_vocab(batch) / batch.tp)
    overlap = np.where(batch.tp_comm_overlap, TP_OVERLAP_BUFFERS * tokens * batch.hidden * w
                       + TP_OVERLAP_WORKSPACE_BYTES, 0.0)
    layer_units = _layers_in_flight(batch, layers, inflight)
    stored = per_layer["stored"] * layer_units
    # Activation checkpoints on the host (DeepSpeed cpu_checkpointing): the GPU keeps the one being copied
    # out in forward and the one brought back for backward's recompute.
    on_host = batch.activation_offload
    parts = {
        "activations": np.where(on_host, np.minimum(stored, 2.0 * per_layer["stored"]), stored),
        # Recompute rebuilds one layer at a time in backward: what it rebuilds is live on top of what is stored.
        "recompute_working": per_layer["working"], "logits": logits, "tp_overlap_buffers": overlap,
    }
    # On the first stage; at pp 1 every row is that one GPU (the last row, which holds the logits, binds).
    on_first = np.where(batch.pp == 1, 1.0, _FIRST)
    parts["embedding_dropout_masks"] = on_first * embedding_dropout_mask_bytes(batch, inflight[0])
    transient = (parts["activations"] + parts["recompute_working"] + logits + parts["embedding_dropout_masks"]
                 + transient_states)
    cp_buffers = cp_attention_buffer_bytes(batch, stack, tokens)
    parts["cp_attention_buffers"] = np.zeros(len(batch)) if cp_buffers is None else cp_buffers
    if cp_buffers is not None:  # only batches with cp > 1 on a stack that gives them pay for the sum
        transient = transient + cp_buffers
    # (The run's own mask outlives the passes; counted with them, it misses the step's peak by s x s bytes.) A
    # micro-batch's mask is built before its forward, when the stage holds one micro-batch's activations (and on the
    # last stage its loss) less than at its peak, and no backward is rebuilding a layer (the recompute's working set
    # is live only then; DeepSpeed's TrainSchedule loads a micro-batch in a step of its own, pipe/schedule.py): only
    # what the build exceeds those by is charged. With the checkpoints on the host the GPU holds at most the two in
    # transit, of which the build can take the place of no more than are there.
    masks = pipeline_mask_bytes(batch, stack)
    if masks is None:
        parts["pipeline_masks"] = np.zeros(len(batch))
    else:
        held, build = masks
        one_micro_batch = (np.minimum(per_layer["stored"] * layers, parts["activations"]) + logits
                           + per_layer["working"])
        parts["pipeline_masks"] = held + np.maximum(build - one_micro_batch, 0.0)
        transient = transient + parts["pipeline_masks"]
    if batch.has_moe:
        acts = moe.moe_activation_bytes(batch)
        rebuilt = np.where(batch.recompute == 2, acts["working"], 0.0)
        parts["moe_activations"] = acts["stored"] * layer_units + rebuilt
        parts["moe_dispatch_buffers"] = acts["dispatch_buffers"]
        transient = transient + parts["moe_activations"] + parts["moe_dispatch_buffers"]
    parts.update(reserve_parts(batch, cluster, transient, stack))
    return {"parts": parts, "host_on_gpu_stored": np.where(on_host, stored, 0.0)}


def embedding_dropout_mask_bytes(batch: CandidateBatch, first_stage_inflight) -> np.ndarray:
    """The first pipeline rank's embedding dropout masks at its peak (EMBEDDING_DROPOUT_MASK_COEFF), where the model
    trains with dropout: one per micro-batch whose forward ran the embedding and whose backward has not, which
    interleaved is the runs of the rank's first model chunk (it holds the embedding), elsewhere the rank's micro-batches
    in flight (`first_stage_inflight`, stage_inflight's first row)."""
    if not np.any(batch.dropout_masks):
        return np.zeros(len(batch))
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    split = np.where(batch.seq_parallel & (batch.tp > 1), batch.tp, 1.0)
    one = EMBEDDING_DROPOUT_MASK_COEFF * tokens * batch.hidden / split
    held = _where_interleaved(batch, _first_chunk_runs, first_stage_inflight)
    return np.where(batch.dropout_masks, one * held, 0.0)


def _first_chunk_runs(batch: CandidateBatch) -> np.ndarray:
    """Of the first rank's chunk forwards at its peak (_peak_forwards), those that ran its first model chunk."""
    return _runs_of_chunk(_chunk_rounds(batch, _peak_forwards(batch, 0.0)), 0.0)


def _layers_in_flight(batch: CandidateBatch, layers, inflight) -> np.ndarray:
    """Per stage (first, middle, last), the layers x micro-batches whose activations it holds at its peak: its
    transformer layers by the micro-batches in flight (stage_inflight), its multi-token-prediction blocks by the runs
    of the last chunk, which holds them (mtp_inflight). They sit on the last stage: the last row, every row where pp
    is 1, and where pp is 2 the middle row when it holds the last stage's layers (stage_layers' middle is then the
    fuller end, and stage_inflight's middle row is rank 1, the last rank)."""
    if not np.any(batch.mtp_layers):
        return layers * inflight
    first, middle, last = layers
    p, mtp = batch.pp, batch.mtp_layers
    on_stage = np.stack([np.where(p == 1, mtp, 0.0), np.where((p == 1) | ((p == 2) & (middle == last)), mtp, 0.0), mtp])
    return (layers - on_stage) * inflight + on_stage * mtp_inflight(batch, inflight[2])


def cp_attention_buffer_bytes(batch: CandidateBatch, stack: dict, tokens) -> np.ndarray | None:
    """Bytes the stack's context parallelism holds while one layer's attention runs, beyond the attention kernel's own
    (Framework.cp_attention_buffers: per phase, multiples of this rank's local Q, K + V, cp x K + V and cp x attention
    output), the larger phase's; on top of the activations and the recomputed layer's working set. The tensors are the
    attention core's (ModelSpec.attention_widths: GQA's key/value heads, MLA's up-projected heads), in 16 bits under
    fp8 (attention stays in bf16), else in the training dtype. None where no row has cp > 1 on a stack that gives
    them."""
    parallel = batch.cp > 1
    if not any_stack_gives(stack, CP_BUFFER_COLUMNS) or not np.any(parallel):
        return None
    element = np.maximum(DTYPE_BYTES[batch.dtype.astype(int)], 2.0)
    per_token = tokens * element / batch.tp
    local = {"q": batch.q_width * per_token, "kv": batch.kv_width * per_token}
    sizes = {**local, "kv_per_rank": batch.cp * local["kv"], "out_per_rank": batch.cp * batch.attention_out_width * per_token}
    phases = []
    for phase in CP_BUFFER_PHASES:
        phase_bytes = np.zeros(len(batch))
        for term in CP_BUFFER_TERMS:
            column = f"cp_buffers_{phase}_{term}"
            if any_stack_gives(stack, (column,)):  # only the terms some stack of the batch gives
                phase_bytes = phase_bytes + stack[column] * sizes[term]
        phases.append(phase_bytes)
    held = np.where(parallel, np.maximum(*phases), 0.0)
    return held if np.any(held > 0) else None


def pipeline_mask_bytes(batch: CandidateBatch, stack: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """Bytes of the stack's pipeline model's s x s causal masks on the first, fullest middle and last stage ((3, n),
    the rows of _STAGES), with pp > 1 (Framework.pipeline_mask_*_bytes): those held through the passes (the run's
    mask on every stage, the first stage's input buffers, max(2, min(pp, micro-batches)) of them) and what building
    one micro-batch's mask holds for a moment on the first and last stages. None where no row has pp > 1 on a stack
    that builds them."""
    names = ("pipeline_mask_resident_bytes", "pipeline_mask_build_bytes", "pipeline_mask_input_buffer_bytes")
    if not any_stack_gives(stack, names):
        return None
    resident, build, per_buffer = (stack[name] for name in names)
    piped = (batch.pp > 1) & (resident + build + per_buffer > 0)
    if not np.any(piped):
        return None
    elements = batch.seq_len.astype(float) ** 2
    buffers = np.maximum(2.0, np.minimum(batch.pp, batch.grad_accumulation))
    held = elements * (resident + _FIRST * buffers * per_buffer)
    return np.where(piped, held, 0.0), np.where(piped, elements * (_FIRST + _LAST) * build, 0.0)


def _loss_bytes_per_logit(batch: CandidateBatch, stack: dict, w) -> np.ndarray:
    """Bytes per token x local vocabulary entry the stack's loss holds at its peak on top of the activations (4, the
    fp32 logits, in Korthikanti et al. 2022 section 4.1; measured per stack by planner/profile/loss_memory.py:
    Megatron 6, F.cross_entropy on upcast logits 12, 16 under torch's loss_parallel; frameworks/base.py): a fused loss
    (Layout.loss_fusion) holds fused_loss_bytes_per_logit; at tp > 1 a stack whose loss takes another path holds
    loss_parallel_bytes_per_logit, or async_tp_loss_bytes_per_logit where the tp overlap compiles the loss too; and a
    pipeline stage that keeps its output holds the logits themselves beside it, `w` bytes each."""
    tp_split = batch.tp > 1
    compiled = tp_split & batch.tp_comm_overlap & (stack["async_tp_loss_bytes_per_logit"] > 0)
    unfused = np.select([compiled, tp_split & (stack["loss_parallel_bytes_per_logit"] > 0)],
                        [stack["async_tp_loss_bytes_per_logit"], stack["loss_parallel_bytes_per_logit"]],
                        stack["loss_bytes_per_logit"])
    return (np.where(batch.loss_fusion, stack["fused_loss_bytes_per_logit"], unfused)
            + np.where((batch.pp > 1) & (stack["pipeline_keeps_logits"] > 0), w, 0.0))


def per_gpu_memory(batch: CandidateBatch, cluster: ClusterSpec, stack: dict | None = None) -> dict[str, np.ndarray]:
    """Named per-GPU bytes of the binding pipeline stage (first, fullest middle or last), total, HBM
    verdict, and host/NVMe bytes per node. `stack` overrides the framework record's arrays."""
    stack = _stack(batch, stack)
    states, inverse = _stage_states(batch, stack)
    each = (lambda values: values) if inverse is None else (lambda values: distinct.spread(values, inverse))
    layers = each(states["layers"])
    rest = _per_candidate_parts(batch, cluster, stack, layers, each(states["transient"]))
    shape = (_STAGES, len(batch))
    per_candidate = {name: np.broadcast_to(value, shape) for name, value in rest["parts"].items()}
    # Stacks that free the gradients after each step (Framework.gradients_freed_after_step): with one micro-batch a
    # step they are not live while the forward's activations are; with more, only the fp32 copy is the step's alone.
    # Spread to the candidates only where some combination frees anything (none does on most stacks).
    phased = bool(np.any(states["step_only_gradients"]) or np.any(states["step_only_copy"]))
    if phased:
        step_copy = each(states["step_only_copy"])
        freed_gradients = each(states["step_only_gradients"])  # spread once: the peak's split and the bound use it
        step_gradients = np.where(batch.grad_accumulation <= 1, freed_gradients, 0.0)
        step_only = step_copy + step_gradients
        forward_backward = sum(per_candidate[name] for name in FORWARD_BACKWARD_PARTS if name in per_candidate)
        overlap = phase_overlap(step_only, forward_backward)
    else:
        overlap = 0.0
    # The state parts summed once per combination, then the rest in a fixed order: a candidate's total is the same
    # whether it is scored alone or among a million.
    totals = each(states["total"]) + sum(per_candidate.values()) - overlap
    binding = stage_argmax(np.where(_MIDDLE & (batch.pp <= 2), -np.inf, totals))  # a middle stage needs pp > 2
    flat = binding * totals.shape[1] + np.arange(totals.shape[1])

    def pick(values):
        """The binding stage's entry of a (3, candidates) array (a stage-independent one as it is)."""
        values = np.broadcast_to(values, totals.shape)
        if values.strides[0] == 0:
            return values[0]
        return np.ascontiguousarray(values).reshape(-1)[flat]

    def pick_state(values):
        """pick for a (3, combinations) state array: the binding stage's entry at each candidate's combination."""
        if inverse is None:
            return pick(values)
        if values.strides[0] == 0:
            return values[0][inverse]
        return values[binding, inverse]

    named = {**{name: pick_state(value) for name, value in states["parts"].items()},
             **{name: pick(value) for name, value in per_candidate.items()}}
    # The parts live at the peak: the step's own states where the forward binds, else the forward's own parts go.
    not_live = pick(overlap)
    step_binds = np.zeros(len(batch), dtype=bool)
    step_only_states = np.zeros(len(batch))
    step_only_copy = np.zeros(len(batch))
    if phased:
        step_binds = pick(forward_backward) < pick(step_only)
        named["gradients"] = named["gradients"] - np.where(step_binds, 0.0, pick(step_gradients))
        named["optimizer"] = named["optimizer"] - np.where(step_binds, 0.0, pick(step_copy))
        for name in FORWARD_BACKWARD_PARTS:
            if name in named:
                named[name] = np.where(step_binds, 0.0, named[name])
        step_only_states = pick(step_copy + freed_gradients)
        step_only_copy = pick(step_copy)
    parts = {name: named[name] for name in PART_ORDER if name in named}
    total = pick(totals)
    hbm = cluster.accelerator.hbm_bytes
    gpus_on_node = np.minimum(cluster.gpus_per_node, batch.gpus)
    host = np.broadcast_to(each(states["host"]) + rest["host_on_gpu_stored"], shape)
    host_per_node = np.max(host, axis=0) * gpus_on_node * HOST_BUFFER_FACTOR
    nvme_per_node = each(states["nvme"]) * gpus_on_node
    host_fits = host_per_node <= cluster.node.host_memory_bytes
    nvme_fits = nvme_per_node <= (cluster.node.nvme_capacity_bytes or np.inf)
    hbm_fits = total <= hbm
    return {
        "parts": parts,
        "total_bytes": total,
        "hbm_bytes": np.full(len(batch), hbm),
        # A layout runs only where every tier holds what it is given: HBM, and the node's host memory and
        # NVMe for what offload moves there (the searches rule out the same, search/layouts.py).
        "fits": hbm_fits & host_fits & nvme_fits,
        "hbm_fits": hbm_fits,
        "host_bytes_per_node": host_per_node,
        "nvme_bytes_per_node": nvme_per_node,
        "host_fits": host_fits,
        "nvme_fits": nvme_fits,
        "params_per_gpu": pick_state(np.broadcast_to(states["params"], (_STAGES, states["params"].shape[-1]))),
        "binding_stage": binding,
        # Bytes of the parts that are never live together, left out of the total (phase_overlap), and whether the
        # optimizer step (True) or the forward and backward (False) hold the peak where it is above 0.
        "not_live_at_peak_bytes": not_live,
        "step_holds_peak": step_binds & (not_live > 0),
        # The binding stage's states that only the step holds whatever the micro-batches (its gradients and their
        # fp32 copy): state_bytes_lower_bound leaves them out.
        "step_only_state_bytes": step_only_states,
        # Of them, the fp32 copy the optimizer steps on where the gradients are 16-bit (0 where they are fp32: FSDP2).
        "step_only_copy_bytes": step_only_copy,
    }


def state_bytes_lower_bound(batch: CandidateBatch, stack: dict | None = None) -> np.ndarray:
    """Per candidate, the bytes its fullest pipeline stage holds for its parameters alone (_stage_states): a lower
    bound of per_gpu_memory's total, whose other parts (activations, buffers, reserves) are never negative (the
    efficiency spec's reserve fields are >= 0). A candidate above HBM here cannot fit; the searches that need only
    the layouts that fit skip the rest before pricing their activations (search.layouts.search_layouts)."""
    states, inverse = _stage_states(batch, _stack(batch, stack))
    return states["largest_total"] if inverse is None else distinct.spread(states["largest_total"], inverse)


def within_hbm(memory: dict, min_headroom: float = 0.0) -> np.ndarray:
    """Candidates of a per_gpu_memory result that leave `min_headroom` (a fraction) of HBM free: the
    searches' --min-headroom, a user's margin on top of the reserves above."""
    return memory["total_bytes"] <= memory["hbm_bytes"] * (1.0 - min_headroom)
