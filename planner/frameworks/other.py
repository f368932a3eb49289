"""A neutral default for a stack the planner does not know (or a runs-CSV row that does not say).

It takes the ZeRO paper's accounting (Rajbhandari et al. 2020, section 3/5: 2 B weights, 2 B gradients,
K = 12 B of fp32 optimizer state, here with DeepSpeed's extra 4 B fp32 gradient partition so its memory is
never below DeepSpeed's), gathers per layer as FSDP does, and assumes no overlap beyond the gradient
reduce bucketed behind backward, which every stack named here has.
"""

from planner.frameworks.base import Framework

OTHER = Framework(
    name="other",
    sets_end_stage_layers=True,  # the neutral stack runs what it is given
    runs_fp8_param_gather=True,  # the neutral stack runs what it is given
    grad_bytes_bf16=2.0, grad_bytes_fp16=2.0, reduce_bytes_bf16=2.0, reduce_bytes_fp16=2.0,
    optimizer_bytes=12.0, sharded_param_bytes=2.0,
    shards_over_context_parallel=False,
    gathers_per_layer=1.0, gathers_outside_layers=2.0, units_in_flight=2.0, prefetches_next_unit=True,
    dp_comm_overlap_default=True, zero2_reduces_every_microbatch=False, param_gather_overlap=False,
    tp_comm_overlap_available=False, tp_comm_overlap_default=False, tp_comm_overlap_needs_sequence_parallel=False, p2p_overlap=False,
    supports_interleaving=True, supports_context_parallel=True, supports_offload=True,
    # PyTorch DDP's default bucket, 25 MiB of gradients in their reduction dtype (torch 2.13 nn/parallel/distributed.py:
    # _DEFAULT_BUCKET_CAP_MB = 25, _MB_TO_BYTES = 1024 * 1024 at :31-33; bucket_bytes_cap at :86-104): 13.1M bf16
    # elements, 6.55M fp32 ones (it was 6.25e6 elements whatever the dtype).
    grad_bucket_elements=0.0, grad_bucket_bytes=25 * 2**20,
    eager_dispatch=True,
    # Memory never below DeepSpeed's: its bucket buffers, and the larger of its module working set and
    # FSDP's whole-block one.
    gathers_largest_module=True, gathers_whole_layers=True, grad_buckets_separate=True,
    # Neutral: every ZeRO-3 hierarchy option the cost model knows.
    zeropp=True, shard_groups=True, gradient_groups=True,
)
