"""PyTorch FSDP / FSDP2 (torchtitan, Composer / llm-foundry).

Sources:
- torchtitan wraps each transformer block as one FSDP unit, plus the embedding and the final norm with
  the output layer (`torchtitan/models/llama3/infra/parallelize.py`, `apply_fsdp`): one all-gather per
  unit in forward, again in backward when resharded after forward, one reduce-scatter per unit.
- FSDP2 keeps the sharded parameters in fp32 and all-gathers them cast to `param_dtype` (bf16);
  `MixedPrecisionPolicy(reduce_dtype=float32)` is torchtitan's default
  (`mixed_precision_reduce = "float32"`, `torchtitan/config/job_config.py`), so gradients are reduced
  and held sharded in fp32: 4 (param) + 4 (grad) + 8 (Adam m, v) = 16 B per parameter over the mesh.
- FSDP2 prefetches the next unit's all-gather in forward and backward (implicit prefetch,
  `torch/distributed/fsdp/_fully_shard/_fsdp_state.py`): two units' unsharded weights are alive.
- The FSDP mesh is dp_shard x cp (`dp_shard_cp` in torchtitan's `parallel_dims.py`); torchtitan has
  async tensor parallelism (`enable_async_tensor_parallel`, off by default), interleaved pipeline
  schedules and context parallelism.
"""

from planner.frameworks.base import Framework

FSDP = Framework(
    name="fsdp",
    grad_bytes_bf16=4.0, grad_bytes_fp16=4.0, reduce_bytes_bf16=4.0, reduce_bytes_fp16=4.0,
    optimizer_bytes=8.0, sharded_param_bytes=4.0,
    shards_over_context_parallel=True,
    gathers_per_layer=1.0, gathers_outside_layers=2.0, units_in_flight=2.0, prefetches_next_unit=True,
    dp_comm_overlap_default=True, zero2_reduces_every_microbatch=False, param_gather_overlap=True,
    tp_comm_overlap_available=True, tp_comm_overlap_default=False, tp_comm_overlap_needs_sequence_parallel=True, p2p_overlap=False,
    supports_interleaving=True, supports_context_parallel=True, supports_offload=True,
    grad_bucket_elements=6.25e6,  # PyTorch DDP bucket_cap_mb = 25 MiB of fp32 gradients (`torch/nn/parallel/distributed.py`); FSDP reduces per unit
    eager_dispatch=True,
)
