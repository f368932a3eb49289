"""The optimizer step: Adam over this GPU's optimizer shard, memory-bound on HBM, or CPU-Adam with its PCIe / NVMe
copies when offloaded; and the pass some stacks make every micro-batch adding 16-bit gradients into their fp32
copy, or into the 16-bit gradient kept for the step where no GEMM accumulates them. Pure, vectorised.

Its own module: these parts are timed by the bytes they move and the host's Adam throughput, not by the layer
schedule or the collectives; the MoE experts' Adam (cost/moe.py) is charged the same bytes per parameter.
"""

from __future__ import annotations

import numpy as np

from planner.cost import distinct
from planner.cost.gemm import rank_rates
from planner.cost.memory import (STAGE_STATE_COLUMNS, bf16_pipeline_optimizer_rows, element_bytes,
                                 fp32_accumulation_rows, optimizer_sharded_rows, state_sharding_degrees)
from planner.cost.stages import data_parallel_stage
from planner.frameworks import batch_framework_arrays
from planner.specs.candidate_batch import DTYPE_BYTES


ADAM_BYTES_PER_PARAM = 28.0  # fp32 Adam touches p, m, v, g (read 16) and writes p, m, v (12); + w-byte weight copy


def optimizer(batch, cluster):
    """_optimizer_per_row, computed once per distinct combination of memory.STAGE_STATE_COLUMNS (it reads only
    columns the model states read too; the batch is numbered by that key for the memory model already) and spread
    to the candidates."""
    return distinct.once_per_combination(batch, STAGE_STATE_COLUMNS, lambda b: _optimizer_per_row(b, cluster))


def _optimizer_per_row(batch, cluster):
    """Adam over this GPU's optimizer shard on HBM, or CPU-Adam with its PCIe/NVMe copies when offloaded."""
    fw = batch_framework_arrays(batch)
    w = DTYPE_BYTES[batch.dtype.astype(int)]
    hbm = rank_rates(batch, cluster)[1]
    params = data_parallel_stage(batch)[0]
    shard = state_sharding_degrees(batch, fw)["optimizer"]
    opt_params = np.where(optimizer_sharded_rows(batch, fw), params / shard, params)
    return adam_seconds(batch, cluster, opt_params, w, hbm)


def adam_seconds(batch, cluster, opt_params, w, hbm):
    """(Adam seconds, host copy seconds) of a step over `opt_params` parameters on this GPU: on HBM, memory-bound, or
    CPU-Adam with its PCIe/NVMe copies where the layout offloads the optimizer (the dense states' and the experts',
    cost.step_time._add_expert_parts)."""
    gpus_on_node = np.minimum(cluster.gpus_per_node, batch.gpus)
    pcie = cluster.node.pcie_bytes_per_s_per_accelerator
    host_adam = opt_params * gpus_on_node / cluster.node.host_adam_params_per_s
    # The node's NVMe is shared by its GPUs; each GPU also needs its own PCIe lanes. The optimizer state's
    # NVMe swaps run before and after CPU-Adam, not beside it: DeepSpeed pipelines them only with
    # offload_optimizer.pipeline_read / pipeline_write, off by default (runtime/zero/offload_config.py:78-84).
    nvme = 2.0 * 16.0 * opt_params * gpus_on_node / cluster.node.nvme_bytes_per_s
    copies = 2.0 * w * opt_params / pcie + np.where(batch.offload_nvme, nvme, 0.0)
    optimizer = np.where(batch.offload >= 1, host_adam, (ADAM_BYTES_PER_PARAM + w) * opt_params / hbm)
    return optimizer / cluster.efficiency.optimizer_relative_efficiency, np.where(batch.offload >= 1, copies, 0.0)


def grad_accumulation(batch, fw, hbm):
    """Seconds per parameter per micro-batch, averaged over the step's micro-batches, of the passes adding each
    micro-batch's gradients into those the step keeps: the stack's own pass into an fp32 copy on every micro-batch
    (memory.fp32_accumulation_rows) or, under its pipeline engine, into a 16-bit one
    (memory.bf16_pipeline_optimizer_rows), and the unfused in-place add of 16-bit gradients on every micro-batch
    after the first (Framework.unfused_16bit_grad_accumulation_bytes, where whole gradients are held in 16 bits:
    ZeRO 0 and 1); 0 elsewhere."""
    fp32 = np.where(fp32_accumulation_rows(batch, fw), fw["fp32_grad_accumulation_bytes"], 0.0)
    # The sharding optimizer under the pipeline engine: its own passes on every micro-batch (they include
    # autograd's accumulation, so the unfused add below is not charged again).
    piped = bf16_pipeline_optimizer_rows(batch, fw)
    own = np.where(piped, fw["bf16_pipeline_grad_accumulation_bytes"], 0.0)
    # A whole 16-bit gradient kept over the micro-batches: at ZeRO 2 and 3 the stacks reduce every micro-batch's
    # gradient into their shard and drop it (DeepSpeed's hooks; cost/shard_copies.py prices that copy).
    sixteen_bit = (element_bytes(batch, fw)["grads"] < 4.0) & (batch.zero < 2) & ~piped
    m = batch.grad_accumulation
    after_first = np.where(m > 0, (m - 1.0) / np.maximum(m, 1), 0.0)
    unfused = np.where(sixteen_bit, fw["unfused_16bit_grad_accumulation_bytes"] * after_first, 0.0)
    return (fp32 + own + unfused) / hbm
