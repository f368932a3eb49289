"""Megatron-LM / Megatron-Core / NeMo (with Transformer Engine).

Sources (Megatron-LM, `main` as read 2026-11):
- Distributed optimizer bytes per parameter, `docs/source/api-guide/dist_optimizer.md` table: bf16
  params with fp32 grads 6 + 12/d, fp16 params with fp16 grads 4 + 16/d. So bf16 keeps fp32 main
  gradients (4 B) and 16-bit weights (2 B); the optimizer side is fp32 master + Adam m, v = 12 B
  (for fp16 the 16 includes a 4 B fp32 gradient copy).
- bf16 turns on `accumulate_allreduce_grads_in_fp32` (`megatron/training/arguments.py`), so gradients
  are reduced in fp32; fp16 reduces in fp16.
- The distributed optimizer and gradient reduce-scatter use the data-parallel group with the
  context-parallel ranks (`get_data_parallel_group(with_context_parallel=True)` in
  `megatron/core/optimizer/__init__.py` and `megatron/core/distributed/finalize_model_grads.py`).
- `--overlap-grad-reduce` / `--overlap-param-gather` overlap the bucketed reduce-scatter with backward
  and the parameter all-gather with the next forward (`distributed_data_parallel_config.py`).
- `--tp-comm-overlap` (Transformer Engine userbuffers) overlaps TP all-gather / reduce-scatter with the
  GEMMs; off by default in Megatron's arguments, on in NeMo's H100 GPT/Llama recipes.
- Interleaved 1F1B overlaps p2p communication with compute (`overlap_p2p_comm` in
  `megatron/core/pipeline_parallel/schedules.py`); context parallelism is native.
- ZeRO-3-style sharding is Megatron-FSDP (`megatron/core/distributed/fsdp`): one gather per layer.
"""

from planner.frameworks.base import Framework

MEGATRON = Framework(
    name="megatron",
    grad_bytes_bf16=4.0, grad_bytes_fp16=2.0, reduce_bytes_bf16=4.0, reduce_bytes_fp16=2.0,
    optimizer_bytes=12.0, sharded_param_bytes=2.0,
    shards_over_context_parallel=True,
    gathers_per_layer=1.0, gathers_outside_layers=2.0, units_in_flight=2.0, prefetches_next_unit=True,
    dp_comm_overlap_default=False, zero2_reduces_every_microbatch=False, param_gather_overlap=True,
    tp_comm_overlap_available=True, tp_comm_overlap_default=False, tp_comm_overlap_needs_sequence_parallel=True, p2p_overlap=True,
    supports_interleaving=True, supports_context_parallel=True, supports_offload=False,
    grad_bucket_elements=4.0e7,  # Megatron-Core DDP buckets of max(40M, 1M x dp) parameters (`distributed_data_parallel_config.py`, bucket_size)
    eager_dispatch=True,
    # Transformer Engine's DotProductAttention prefers the cuDNN fused-attention backend on Hopper
    # (`transformer_engine/pytorch/attention/dot_product_attention/utils.py`, get_attention_backend).
    attention_kernel_hopper="cudnn",
    # bucket_size = max(40000000, 1000000 * dp_group.size()) (megatron/core/distributed/distributed_data_parallel.py)
    grad_bucket_elements_per_rank=1.0e6,
)
