"""DeepSpeed ZeRO-3 as released from v0.3.13 (March 2021) until v0.5.5 (October 2021): per-parameter collectives.

The runs of 2021 papers with ZeRO-3 (Narayanan et al. SC21 Table 2, arXiv 2104.04473 of April 2021; ZeRO-Infinity,
April 2021) used this code. Stage 3 first shipped in v0.3.13 (microsoft/DeepSpeed 599258f9 "ZeRO 3 Offload",
2021-03-08; tag v0.3.13 2021-03-16). It differs from today's `deepspeed` entry only in how the ZeRO-3
collectives are issued. Sources: microsoft/DeepSpeed@0cd9abf2 (tag v0.3.14, 2021-04-08), files under
deepspeed/runtime/zero/; the same code is in v0.3.13 and v0.4.0 (same functions, shifted lines):

- One all-gather per parameter, not per submodule. `fetch_sub_module` and the prefetch pass the submodule's
  parameters to `_all_gather(..., async_op=True)` (stage3.py:402, 324), which calls `_allgather_param` once per
  parameter (partition_parameters.py:487-507, 493), each one `torch.distributed.all_gather` (:643). Coalesced
  gathers (`_allgather_params_coalesced`, `_all_gather_base`) arrived in c0eeb69d (#1188, 2021-10-31, first
  tagged v0.5.5); `runtime/comm/coalesced_collectives.py` in 4912e0ad (#1453, 2022-01-20).
- Parameters under `param_persistence_threshold` (1e5 elements, stage3.py:567, 1058) stay gathered: in a
  Megatron GPT block (the models of these runs) the norms and biases (h, 3h, 4h elements, h <= 25,000), so the
  four weight matrices (QKV, attention output, h->4h, 4h->h) are gathered: 4 calls per layer per pass. Outside
  the layers: the word and position embeddings (the final norm persists): 2.
- One reduce-scatter per parameter: `average_tensor` (stage3.py:1502-1519) calls `reduce_gradients_at_owner`
  (:1517) -> `_reduce_scatter_gradients`, one `torch.distributed.reduce_scatter` per parameter
  (partition_parameters.py:716-745, 725, 780), persistent parameters included (their gradients are
  partitioned too): a GPT block has 12 parameters (2 norms x weight, bias; 4 linears x weight, bias); outside
  the layers 4 (2 embeddings, final norm weight and bias).
- Each call walks the whole data-parallel group on the host: DeepSpeed builds one `narrow` view per rank
  (partition_parameters.py:637 all-gather, :755 reduce-scatter), and PyTorch's list-form collectives copy
  each rank's piece out of (all_gather) or into (reduce_scatter) a flat buffer, one `copy_` per rank
  (pytorch/pytorch@00f5dfd5 torch/lib/c10d/ProcessGroupNCCL.cpp, `ProcessGroupNCCL::allgather` "Copy the
  flattened output tensors to the outputs", `ProcessGroupNCCL::reduce_scatter` "Copy the input tensors to
  the flattened inputs"; the list form is the only all_gather DeepSpeed called before #1188). Counted as one
  eager op per rank per call: the view is an op without a launch (EAGER_OP_S - KERNEL_LAUNCH_S) and the copy
  at least a launch (KERNEL_LAUNCH_S), together planner.cost.kernels.EAGER_OP_S. The reduce-scatter loop
  also calls `view(-1)` per rank (:761), not counted (a lower bound).
- `_allgather_param` begins with `torch.cuda.synchronize()` (partition_parameters.py:625), and the gather is
  issued from the submodule's pre-forward/pre-backward hook before its compute is queued (stage3.py:1141-1177),
  so the host time of every gather runs while the GPU is idle: exposed. The reduce-scatters are issued from
  the gradient hooks while the layer's backward kernels are queued (stage3.py:1396-1420): their host time
  hides behind the layer's backward compute (cost.step_time).
- Prefetch looks one parameter ahead (prefetch bucket 5e7 elements, stage3.py:564, 188-218) and only while
  fewer than stage3_max_live_parameters (1e9) gathered elements are alive (stage3.py:319); a parameter gathered
  for the recompute forward is kept for its backward only while its reuse distance is under
  stage3_max_reuse_distance (1e9, `_keep_for_later` stage3.py:464-470): planner.cost.zero3_fetch.
- The persistent parameters are gathered again after every optimizer step, one (parameter, rank) pair at a time in
  Python. `backward` ends by partitioning every gathered parameter, the persistent ones too
  (`_partition_all_parameters`, stage3.py:2559-2563; `release_and_reset_parameter` does not look at ds_persist,
  :456-462); `step` ends with `_post_step` (:2394), which all-gathers them (:2350) through the blocking
  `_allgather_params` (partition_parameters.py:501-502): one list-form all_gather of their shards (:664-680),
  then for each parameter (:686) and each rank (:695) whose slice holds elements (:701) a `narrow` of the
  gathered buffer (:704), a `view(-1).narrow` of the parameter (:706) and a `copy_` (:708). Counted per pair:
  two views (the narrows; view(-1) not counted, as above) and one copy issued from Python (an eager op with its
  launch). Once per step, after the last kernel of the step: nothing hides it (planner.cost.zero3_fetch.
  step_regather_s). Same loop at v0.3.13 (partition_parameters.py:692) and v0.5.4 (:936).
Not modelled (its rows have no pipeline): up to v0.5.3, before e2fdd254 (#1407, 2021-09-29), the pipeline
engine sent the gradient whole, `is_grad_partitioned = False` (pipe/engine.py:107 @0cd9abf2), and gathered two
tensors per micro-batch, the received activation and its own output (:499, :915), not today's three.
Everything else (memory, buckets, overlaps, ZeRO-1/2) is taken as today's `deepspeed`; ZeRO++ (2023) and
MiCS (2022) did not exist, nor bf16 training (below).
"""

from dataclasses import replace

from planner.frameworks.deepspeed import DEEPSPEED

# The releases that ran this code (above): v0.3.13, the first with stage 3, to v0.5.4, the last before the
# coalesced gathers of v0.5.5. `planner ingest` names a log of these versions' engine `deepspeed-v0.3`.
RELEASES = ((0, 3, 13), (0, 5, 4))

DEEPSPEED_V03 = replace(
    DEEPSPEED, name="deepspeed-v0.3", lineage="deepspeed",
    # cpu_checkpointing copies on the compute stream (base.py activation_offload_blocking; checkpointing.py:498).
    activation_offload_blocking=True,
    # FlashAttention (Dao et al., 2022) came after this stack: its runs computed the whole score matrix.
    flash_attention_default=False,
    gathers_per_layer=4.0, gathers_outside_layers=2.0,
    scatter_calls_per_layer=12.0, scatter_calls_outside_layers=4.0, zero3_scatter_bucket_elements=0.0,
    # ZeRO-1/2 all-gather the updated parameters group by group in allgather_bucket_size shards (v0.3.14
    # zero/stage2.py:1479-1503, `num_shards`), one call per bucket as the default prices it; no MoE yet.
    param_gather_calls=0.0, expert_param_group_elements=0.0,
    host_ops_per_rank_per_call=1.0,
    # After every step, per persistent parameter and rank: two narrows and a copy_ from Python
    # (partition_parameters.py:704, 706-708; docstring above).
    persistent_regather_views_per_rank=2.0, persistent_regather_copies_per_rank=1.0,
    # ... after one list-form all_gather of all of them (partition_parameters.py:664-680), not one per tensor as
    # today's `_allgather_params_coalesced` (frameworks/deepspeed.py).
    persistent_regather_calls_per_tensor=0.0,
    # stage3_max_live_parameters and stage3_max_reuse_distance, both 1e9 by default (constants.py:87, 91):
    # passed to the coordinator at stage3.py:636-637; prefetch only while fewer gathered elements are alive
    # (stage3.py:319), keep a parameter only while its reuse distance is under it (`_keep_for_later`, :464-470).
    prefetch_live_limit_elements=1e9, reuse_limit_elements=1e9,
    zeropp=False, shard_groups=False,
    # fp16 or fp32 only: no bf16 in runtime/config.py or constants.py at v0.3.14 or v0.5.4; bf16 came with
    # 648f7bfa (#1398, ZeRO-2, 2021-11-01) and 4912e0ad (#1453, ZeRO-3, 2022-01-20).
    dtypes=frozenset({"fp16", "fp32"}),
    default_dtype="fp16",  # 16-bit training could only be fp16 (above)
    # No BF16_Optimizer before bf16 existed (it came with BigScience's BLOOM work in 2022).
    fp32_grad_accumulation_bytes=0.0,
    # Its reduction predates reduce_scatter_coalesced (v0.3.14 stage3.py: a bucket copy :1461-1468 and an
    # in-place divide :1510, per parameter): not modelled, about 1% of Narayanan21 Table 2's ZeRO-3 steps.
    shard_copies="none",
    # No selective recompute before 2022: Megatron-DeepSpeed of these releases had --checkpoint-activations (whole
    # layers, --activations-checkpoint-method uniform or block) only (deepspeedai/Megatron-DeepSpeed@e64507f0,
    # 2021-10-31, megatron/arguments.py:416-425); --recompute-granularity selective came with bbab79f8 (2022-05-16).
    recompute_modes=("none", "full"),
    # Its ZeRO-3 optimizer offload accumulates only the micro-batches after the first through the GPU
    # (stage3.py:1536-1551, 1640-1667 at v0.3.14): no round trip of the first one; its ZeRO-2 skips the boundary's
    # copy down (stage2.py:818-821 at v0.3.14), so m - 1 round trips in all (frameworks/deepspeed.py).
    offload_zero3_first_round_trip=False, offload_zero2_extra_copy_down=False,
    # Its Megatron-DeepSpeed (deepspeedai/Megatron-DeepSpeed@e64507f0, 2021-10-31) has no GPTModelPipe and no
    # args.attn_mask in pretrain_gpt.py: not the pipeline masks of today's (frameworks/deepspeed.py).
    pipeline_mask_resident_bytes=0.0, pipeline_mask_build_bytes=0.0, pipeline_mask_input_buffer_bytes=0.0,
    # Before the multi-rank bucket all-reduce (#4695, v0.12.4) ZeRO-2's average_tensor reduced each slice to its
    # owner, `dist.reduce(grad_slice, dst, async_op=True)` (v0.3.14 zero/stage2.py:680-739), and ZeRO-1 called
    # reduce_scatter_gradients (runtime/engine.py:943-949): a reduce-scatter's bytes.
    sharded_reduce_all_reduces=False,
)
