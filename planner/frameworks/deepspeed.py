"""DeepSpeed ZeRO 1/2/3 (also Megatron-DeepSpeed).

Sources (microsoft/DeepSpeed, `master` as read 2026-11):
- Gradients are held and reduced in the 16-bit training dtype (`communication_data_type` defaults to
  the model dtype, `runtime/engine.py`); the optimizer side is fp32 master + Adam m, v (12 B) plus an
  fp32 gradient partition (4 B): `estimate_zero2_model_states_mem_needs` counts 16 B per parameter
  over the data-parallel ranks (`runtime/zero/stage_1_and_2.py`).
- ZeRO-3 fetches parameters submodule by submodule (`runtime/zero/partitioned_param_coordinator.py`,
  `fetch_sub_module`): in a GPT block the two norms, QKV, attention output and the two MLP matrices,
  one coalesced all-gather each; plus the embedding, final norm and output layer. The prefetch bucket
  (`stage3_prefetch_bucket_size`, 5e7) issues the next submodules' gathers while one computes.
- ZeRO-2 reduce-scatters gradients during every micro-batch's backward (`overlap_comm`, reduce buckets
  of `reduce_bucket_size` 5e8 elements) into the fp32 partition.
- The data-parallel group is the sharding group; Ulysses sequence parallelism is not context
  parallelism in Megatron's sense, and Megatron-DeepSpeed runs neither interleaving nor cp
  (`megatron/arguments.py` of Megatron-DeepSpeed refuses virtual pipeline with DeepSpeed's pipeline engine).
"""

from planner.frameworks.base import Framework

DEEPSPEED = Framework(
    name="deepspeed",
    grad_bytes_bf16=2.0, grad_bytes_fp16=2.0, reduce_bytes_bf16=2.0, reduce_bytes_fp16=2.0,
    optimizer_bytes=16.0, sharded_param_bytes=2.0,
    shards_over_context_parallel=False,
    gathers_per_layer=6.0, gathers_outside_layers=3.0, units_in_flight=2.0, prefetches_next_unit=True,
    dp_comm_overlap_default=False, zero2_reduces_every_microbatch=True, param_gather_overlap=False,
    tp_comm_overlap_available=False, tp_comm_overlap_default=False, tp_comm_overlap_needs_sequence_parallel=False, p2p_overlap=False,
    supports_interleaving=False, supports_context_parallel=False, supports_offload=True,
    grad_bucket_elements=5.0e8,  # DeepSpeed reduce_bucket_size default 5e8 elements (`runtime/zero/config.py`)
    eager_dispatch=True,
)
