"""JAX / XLA stacks (MaxText, Pax).

Sources (google/maxtext, `MaxText/configs/base.yml` as read 2026-11):
- Weights sharded over the fsdp mesh axis are gathered per layer inside the scanned layer loop, and
  XLA's latency-hiding scheduler overlaps the gather with the previous layer's compute; gradients are
  reduce-scattered per layer in the same way.
- Parameters and optimizer state are kept in fp32 by default (`weight_dtype: float32`), gradients are
  reduced in fp32; activations and gathered weights in bf16.
- XLA's collective matmul overlaps tensor-parallel communication with the GEMMs.
- The whole step is one compiled program: no per-kernel Python dispatch.
"""

from planner.frameworks.base import Framework

JAX = Framework(
    name="jax",
    grad_bytes_bf16=4.0, grad_bytes_fp16=4.0, reduce_bytes_bf16=4.0, reduce_bytes_fp16=4.0,
    optimizer_bytes=8.0, sharded_param_bytes=4.0,
    shards_over_context_parallel=True,
    gathers_per_layer=1.0, gathers_outside_layers=2.0, units_in_flight=2.0, prefetches_next_unit=True,
    dp_comm_overlap_default=True, zero2_reduces_every_microbatch=False, param_gather_overlap=True,
    tp_comm_overlap_available=True, tp_comm_overlap_default=True, tp_comm_overlap_needs_sequence_parallel=False, p2p_overlap=True,
    supports_interleaving=False, supports_context_parallel=True, supports_offload=False,
    grad_bucket_elements=6.25e6,  # no gradient buckets in XLA: one reduce per layer, taken as DDP's 25 MiB
    eager_dispatch=False,
)
