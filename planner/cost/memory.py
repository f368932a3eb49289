"""Bytes per GPU (and per node on the host / NVMe) for a batch of candidates. Pure, vectorised.

Model states follow DeepSpeed's own estimators (docs `memory.rst`, `estimate_zero2/3_model_states_mem_needs`):
each parameter has w-byte weights and w-byte gradients (w = 2 for 16-bit training) plus 16 bytes of
optimizer-side state (fp32 master copy 4, Adam m 4 and v 4, fp32 gradient partition 4), so
  ZeRO-0: 2w·P + 16·P          (Megatron fp16 without distributed optimizer: 20 B/param)
  ZeRO-1/2: 2w·P + 16·P/d        (DeepSpeed: 4P + 16P/N)
  ZeRO-3: 2w·largest + (w + 16)·P/d   (DeepSpeed: 4·largest_layer + 18P/N)
with P the parameters one GPU's model-parallel slice holds (stage params / tp) and d = dp.
Optimizer offload moves the 16 B part (and, for ZeRO-1/2, the gradients) to the host; ZeRO-Infinity
params offload moves the weights too, keeping only the gathered working set on the GPU.

Activations per layer follow Korthikanti et al. 2022 ("Reducing Activation Recomputation"), in bytes
for 16-bit activations with T = micro-batch tokens: T·h·(10 + 24/t + 5·a·s/(h·t)) without sequence
parallelism, T·h·(34 + 5·a·s/h)/t with it; the 5·a·s/h score term vanishes with selective recompute
or flash attention; full recompute keeps only the 2·T·h layer input. The 24 generalises to GQA and
SwiGLU as (2 + 4g/a) + 2 + (4 or 6)·f/h. With 1F1B the first stage holds min(p, m) micro-batches of
its L/p layers; interleaving multiplies that by 1 + (p-1)/(p·v). Recomputing one layer in backward
adds what that layer rebuilds beyond what it stored: its full activations less the kept input (full
recompute), or its attention scores when they are materialised (selective recompute without flash
attention), so memory keeps the order none >= selective >= full.
"""

from __future__ import annotations

import numpy as np

from planner.hardware import ClusterSpec
from planner.layout import DTYPE_BYTES, DTYPE_CODES, CandidateBatch

OPTIMIZER_BYTES_PER_PARAM = 16.0  # fp32 master 4 + Adam m 4 + v 4 + fp32 gradient partition 4 (DeepSpeed)
FP32_OPTIMIZER_BYTES_PER_PARAM = 8.0  # fp32 training: Adam m 4 + v 4 (weights and grads are already fp32)
HOST_BUFFER_FACTOR = 1.5  # DeepSpeed's additional_buffer_factor for CPU-side estimates
# DeepSpeed defaults: reduce_bucket_size = 5e8 elements (ZeRO-1/2); stage3_prefetch_bucket_size = 5e7.
ZERO12_BUCKET_ELEMENTS = 5e8
ZERO3_BUCKET_ELEMENTS = 5e7
# Korthikanti's coefficients: bytes per T·h that every tp rank keeps whole (two norm inputs 4,
# attention input 2, MLP input 2, two dropout masks 1 + 1).
REPLICATED_ACTIVATION_COEFF = 10.0


def stage_params(batch: CandidateBatch) -> tuple[np.ndarray, np.ndarray]:
    """Parameters held by one GPU's slice on the first and on the last pipeline stage (divided by tp)."""
    layers_per_stage = np.ceil(batch.layers / batch.pp)  # slowest/fullest stage
    blocks = layers_per_stage * batch.layer_params
    single_stage = batch.pp == 1
    first = blocks + batch.embedding_params
    # The last stage holds the output projection; when tied and pp == 1 it is the embedding itself.
    last_head = np.where(single_stage & batch.tied_embeddings, 0.0, batch.logits_params)
    last = np.where(single_stage, first + last_head, blocks + last_head)
    return first / batch.tp, last / batch.tp


def largest_matrix_params(batch: CandidateBatch) -> np.ndarray:
    """The largest single weight matrix on a tp rank (ZeRO-3 gathers one module at a time)."""
    h = batch.hidden
    qkv = h * (h + 2 * h * batch.kv_heads / batch.heads)
    return np.maximum.reduce([batch.vocab * h, h * batch.ffn, qkv]) / batch.tp


def model_state_bytes(params, batch: CandidateBatch) -> dict[str, np.ndarray]:
    """Weights, gradients, optimizer states and the ZeRO-3 gathered set on one GPU, plus host/NVMe bytes."""
    w = DTYPE_BYTES[batch.dtype.astype(int)]
    d = batch.dp
    zero = batch.zero
    offload_opt = batch.offload >= 1
    offload_params = batch.offload >= 2
    largest = largest_matrix_params(batch)

    weights = np.where(zero == 3, w * params / d, w * params)
    grads = np.where(zero == 3, 0.0, w * params)
    # fp32 training keeps no separate master copy or fp32 gradient partition: only Adam's m and v.
    state = np.where(batch.dtype.astype(int) == DTYPE_CODES["fp32"], FP32_OPTIMIZER_BYTES_PER_PARAM,
                     OPTIMIZER_BYTES_PER_PARAM)
    optimizer = np.where(zero >= 1, state * params / d, state * params)
    gathered = np.where(zero == 3, 2.0 * w * largest, 0.0)

    offloaded = np.where(offload_opt, optimizer, 0.0)
    optimizer = optimizer - offloaded
    # ZeRO-1/2 offload reduces gradients straight into host buffers (DeepSpeed estimator: GPU keeps 2P).
    grads_off = np.where(offload_opt & (zero < 3), grads, 0.0)
    grads = grads - grads_off
    weights_off = np.where(offload_params, weights, 0.0)
    weights = weights - weights_off
    off_gpu = offloaded + grads_off + weights_off
    host = np.where(batch.offload_nvme, 0.0, off_gpu)
    nvme = np.where(batch.offload_nvme, off_gpu, 0.0)
    return {"weights": weights, "gradients": grads, "optimizer": optimizer, "zero3_gathered": gathered,
            "host_per_gpu": host, "nvme_per_gpu": nvme}


def activation_bytes_per_layer(batch: CandidateBatch) -> dict[str, np.ndarray]:
    """Korthikanti per-layer activation bytes for one micro-batch: `stored` (kept for backward under the
    recompute mode), `full` (everything the layer's forward materialises, i.e. no recompute) and
    `working` (what recomputing the layer in backward materialises on top of what it stored)."""
    t = batch.tp
    h = batch.hidden
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    kv_fraction = batch.kv_heads / batch.heads
    mlp_coeff = np.where(batch.mlp_matrices == 3, 6.0, 4.0)
    sharded = (2.0 + 4.0 * kv_fraction) + 2.0 + mlp_coeff * batch.ffn / h
    scores = 5.0 * batch.heads * (batch.seq_len / batch.cp) / h
    # Coefficients assume 2-byte activations and 1-byte masks; fp32 training doubles them (approximately).
    scale = DTYPE_BYTES[batch.dtype.astype(int)] / 2.0
    sp = batch.seq_parallel & (t > 1)
    linear = np.where(sp, (REPLICATED_ACTIVATION_COEFF + sharded) / t, REPLICATED_ACTIVATION_COEFF + sharded / t)
    # Flash attention never materialises the s x s scores; selective recompute drops them from storage.
    materialised_scores = np.where(batch.flash_attention, 0.0, scores / t)
    full = tokens * h * (linear + materialised_scores) * scale
    stored = tokens * h * (linear + np.where(batch.recompute == 0, materialised_scores, 0.0)) * scale
    layer_input = tokens * h * 2.0 * scale / np.where(sp, t, 1.0)
    stored = np.where(batch.recompute == 2, layer_input, stored)
    # The recomputed layer's own stored input is part of its full activations: count it once.
    working = np.select([batch.recompute == 2, batch.recompute == 1],
                        [full - layer_input, tokens * h * materialised_scores * scale], 0.0)
    return {"stored": stored, "full": full, "working": working}


def inflight_microbatches(batch: CandidateBatch) -> np.ndarray:
    """Micro-batches whose activations the first pipeline stage holds at its peak (1F1B, interleaved)."""
    p, v = batch.pp, batch.vpp
    m = batch.grad_accumulation
    one_f_one_b = np.minimum(p, m)
    interleave = np.where(v > 1, 1.0 + (p - 1) / (p * v), 1.0)
    return np.where(p > 1, one_f_one_b * interleave, 1.0)


def per_gpu_memory(batch: CandidateBatch, cluster: ClusterSpec) -> dict[str, np.ndarray]:
    """Named per-GPU bytes (worst pipeline stage), total, HBM verdict, and host/NVMe bytes per node."""
    first_params, last_params = stage_params(batch)
    per_layer = activation_bytes_per_layer(batch)
    layers_per_stage = np.ceil(batch.layers / batch.pp)  # slowest/fullest stage
    w = DTYPE_BYTES[batch.dtype.astype(int)]
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    # Recompute rebuilds one layer at a time in backward: what it rebuilds is live on top of what is stored.
    recompute_working = per_layer["working"]
    first_act = per_layer["stored"] * layers_per_stage * inflight_microbatches(batch) + recompute_working
    # Last stage: one micro-batch in flight plus the output layer's fp32 logits for the cross-entropy,
    # 4·s·b·V/t bytes (Korthikanti et al. 2022, section 4.1).
    logits = 4.0 * tokens * batch.vocab / batch.tp
    last_act = per_layer["stored"] * layers_per_stage + recompute_working + logits

    first = model_state_bytes(first_params, batch)
    last = model_state_bytes(last_params, batch)
    states_first = first["weights"] + first["gradients"] + first["optimizer"] + first["zero3_gathered"]
    states_last = last["weights"] + last["gradients"] + last["optimizer"] + last["zero3_gathered"]
    use_last = states_last + last_act > states_first + first_act
    pick = lambda a, b: np.where(use_last, b, a)  # noqa: E731 - choose the binding stage's figure

    params = pick(first_params, last_params)
    bucket_elements = np.where(batch.zero == 3, ZERO3_BUCKET_ELEMENTS, ZERO12_BUCKET_ELEMENTS)
    buckets = np.where(batch.zero >= 1, w * np.minimum(bucket_elements, params), 0.0)
    eff = cluster.efficiency
    hbm = cluster.accelerator.hbm_bytes
    parts = {
        "weights": pick(first["weights"], last["weights"]),
        "gradients": pick(first["gradients"], last["gradients"]),
        "optimizer": pick(first["optimizer"], last["optimizer"]),
        "zero3_gathered": pick(first["zero3_gathered"], last["zero3_gathered"]),
        "activations": pick(first_act - recompute_working, last_act - recompute_working - logits),
        "recompute_working": recompute_working,
        "logits": np.where(use_last, logits, 0.0),
        "comm_buckets": buckets,
        "reserve": np.full(len(batch), eff.memory_reserve_fraction * hbm + eff.memory_reserve_bytes),
    }
    total = sum(parts.values())
    gpus_on_node = np.minimum(cluster.gpus_per_node, batch.gpus)
    host_per_gpu = np.maximum(first["host_per_gpu"], last["host_per_gpu"])
    nvme_per_gpu = np.maximum(first["nvme_per_gpu"], last["nvme_per_gpu"])
    host_per_node = host_per_gpu * gpus_on_node * HOST_BUFFER_FACTOR
    return {
        "parts": parts,
        "total_bytes": total,
        "hbm_bytes": np.full(len(batch), hbm),
        "fits": total <= hbm,
        "host_bytes_per_node": host_per_node,
        "nvme_bytes_per_node": nvme_per_gpu * gpus_on_node,
        "host_fits": host_per_node <= cluster.node.host_memory_bytes,
        "params_per_gpu": params,
    }
