"""DeepSpeed ZeRO 1/2/3 (also Megatron-DeepSpeed).

Sources: microsoft/DeepSpeed@38327e07 (2025-02-21).
- `communication_data_type` defaults to the model dtype (fp16 or bf16) (`runtime/engine.py`:938-950,
  `runtime/constants.py`:239-253); with ZeRO gradients accumulate in the model dtype (engine.py:1017-1021).
- ZeRO-2 GPU estimate `2*P + 18*P/N` ("2 grads 16bit + 4 grads 32bit + 4 params 32bit + 8 optimizer
  states"), `runtime/zero/stage_1_and_2.py`:2430-2447; ZeRO-3 `4*largest_layer + 18*P/N`, stage3.py:3008-3044.
- ZeRO-3 fetches each submodule's direct parameters in one `all_gather_coalesced` call; prefetch adds
  whole parameters up to the prefetch bucket (5e7), never splitting one
  (`zero/partitioned_param_coordinator.py`:300-314, 380-413; `zero/partition_parameters.py`:1200-1320).
  Norms and biases under `param_persistence_threshold` (1e5) stay resident. The layer is Megatron-DeepSpeed's
  (the stack `--emit deepspeed` writes): fused `query_key_value` (GQA too), `dense`, `dense_h_to_4h` (2 x ffn
  with SwiGLU) and `dense_4h_to_h` (microsoft/Megatron-DeepSpeed@f4157bea megatron/model/transformer.py:117,
  151, 580-582, 632): 4 fetched submodules per layer per pass. The prefetch never makes that fewer calls in
  steady state: each fetch pops whole parameters up to min(prefetch bucket 5e7, stage3_max_live_parameters
  1e9 - gathered) elements (coordinator :380-395); modules of 5e7 elements and more (every layer from
  hidden ~4k at tp 1) go one per call, and smaller ones run the look-ahead into the live limit, after which
  each fetch prefetches about what the last release freed, one module. A HuggingFace Llama block has 7
  (q, k, v, o, gate, up, down): with it, count 7.
- Gradients go into `reduce_bucket_size` (5e8) buckets: one reduce-scatter each at ZeRO-3 (stage3.py:1258-1330), one
  all-reduce each at ZeRO-1/2 (`use_multi_rank_bucket_allreduce`, below); ZeRO-2 reduces during every micro-batch's
  backward.
- `overlap_comm` defaults to True only for stage 3 (`zero/config.py`:134, 351-353).
- Pipeline engine p2p (the same at microsoft/DeepSpeed@0457bb1c, 2021-09-30, the release line MT-NLG trained on,
  and @38327e07): every SendActivation / RecvGrad / RecvActivation / SendGrad instruction is its own blocking
  `dist.send` / `dist.recv` (`runtime/pipe/p2p.py`:52-85 @0457bb1c, `async_op=False` asserted; :46-84
  @38327e07), executed in instruction order (`pipe/engine.py` `_exec_schedule`), a forward step receiving
  then sending and a backward step sending then receiving (`pipe/schedule.py`:205-219 @0457bb1c, 200-223
  @38327e07): four transfers one after another per micro-batch, where Megatron issues a step's send and
  receive in one batch (two). An event simulation of that instruction list (tests/test_frameworks.py) gives
  the 1F1B makespan without communication and about four exposed transfers per micro-batch slot with it.
- With tensor parallelism the engine partitions what it sends over the tp ("slice") group:
  `is_pipe_partitioned = is_grad_partitioned = is_model_parallel` (engine.py:113-115 @0457bb1c;
  `pipe_partitioned` / `grad_partitioned` default True, `runtime/config.py`:467-468 @38327e07); each send is a
  LongTensor of metadata then the 1/tp part (engine.py:589-600, 867-870, 909-915), and the receiver rebuilds
  the whole tensor with `PartitionedTensor.full()`, one `dist.all_gather` over tp (`runtime/utils.py`:693-721),
  before its forward (engine.py:564-572) and backward (engine.py:649-670). A middle stage calls `full()` three
  times per micro-batch (`p2p_gathers_per_microbatch`): the received activation before forward (v0.5.4
  engine.py:571), and before backward its own output, whose data `_exec_forward_pass` replaced by `torch.zeros(1)`
  after partitioning it for the send (:591-599), and the received gradient (:656, :670); the same three in 0.19.8
  (pipe/engine.py:715, 819, 834, `all_gather_into_tensor`, runtime/utils.py:715-732). Megatron v2.5 gathers two
  (frameworks/megatron_2022.py). Not priced, each well under 1% of a step (MT-NLG 530B, tp 8, pp 35: the
  84 MB activation): `full()`'s HBM copies around the gather (a zeroed buffer, the list-form all_gather's copy-out
  at v0.5.4, a final `clone()`: about 5 bytes per gathered byte, 0.3 ms a call on an A100) and the host
  synchronisations per micro-batch (at v0.5.4: ThroughputTimer.start's `torch.cuda.synchronize()` at every forward,
  engine.py:556 and utils/timer.py:137-142; `meta.tolist()` of a CUDA tensor in `PartitionedTensor.from_meta`,
  utils.py:662; the metadata's blocking host-to-device copy in `to_meta`), each leaving the GPU idle for about
  one eager op.
- bf16 with fp32 gradient accumulation at ZeRO 0 or 1 runs the BF16_Optimizer (`_do_optimizer_sanity_check`,
  runtime/engine.py:1316-1318 for ZeRO-1 with grad_accum_dtype fp32; :1349-1350 for ZeRO-0, whose default
  grad_accum_dtype was fp32 until v0.18.0, engine.py:1017-1021; since then only when asked for, below): it shards the fp32 master and Adam states over dp (its own
  ZeRO-1), keeps full-size fp32 gradients (bf16_optimizer.py:162-163) and all-reduces them in fp32
  (`get_grads_for_reduction`). After every micro-batch's backward it adds each parameter's bf16 .grad into the
  fp32 copy, `hp_grad.add_(lp.grad.to(fp32))` (bf16_optimizer.py:332-347; called per micro-batch from
  `backward(update_hp_grads=True)`, :316-329, and the pipeline engine, pipe/engine.py:864-867): the cast reads 2
  and writes 4 bytes, the add reads 4 + 4 and writes 4, 18 bytes per parameter per micro-batch at HBM speed.
  (The lp gradients are set to None before each backward, :445-459, so nothing is zeroed or accumulated in bf16.)
  Its reduction is an all-reduce of the whole fp32 gradient, not a reduce-scatter: BF16_Optimizer has no
  `reduce_gradients`, so the engine falls back to `buffered_allreduce_fallback` (runtime/engine.py:2056-2062 @38327e07;
  the pipeline engine calls it directly, `_bf16_reduce_grads`, pipe/engine.py:293-304), which all-reduces buckets
  over dp (`allreduce_no_retain` -> `allreduce_bucket`, engine.py:2491-2535, `dist.all_reduce` :2505, :2511), though
  each rank then updates only its shard; `step` ends with `update_lp_params` (bf16_optimizer.py:312, 423-437), an
  `all_gather_dp_groups` of the updated bf16 parameters. The same at DeepSpeed 0.19.8 (engine.py:3088-3095,
  bf16_optimizer.py:593-603).
- bf16 at ZeRO-0 under the pipeline engine (pp > 1, a PipelineModule: engine.py:327) runs the BF16_Optimizer too,
  with bf16 gradient accumulation, the default (`_do_optimizer_sanity_check`, "if model_dtype == torch.bfloat16 and
  self.pipeline_parallelism: ... return BFLOAT16", deepspeedai/DeepSpeed@edaa7221 (0.19.6) runtime/engine.py:
  2014-2018; before #7515, v0.17.6, the same at :1410-1415): the fp32 master and Adam states sharded over dp
  (bf16_optimizer.py:161-171), a whole gradient buffer in the accumulation dtype kept for the run (:175-177, zeroed by
  `clear_hp_grads`, not freed) beside each micro-batch's bf16 .grad, the same all-reduce and the step's all-gather
  of the updated bf16 parameters. Per micro-batch, since v0.16.5 (#7018), the .grad is zeroed before each backward
  rather than set to None (`clear_lp_grads`, `torch._foreach_zero_`, bf16_optimizer.py:612-623 in 0.19.8, called
  from pipe/engine.py:838-840 and `backward_prologue`), so autograd adds into it and `hp_grad.add_(lp.grad)` (:523)
  adds it into the buffer: write 2, read 2 + 2 and write 2, read 2 + 2 and write 2 = 14 bytes per parameter. (The
  fp32-accumulating rows above are priced as before that change, with the .grad set to None: BLOOM's row ran it;
  today's release adds the same 8 bytes there too.) Without a pipeline, bf16 at ZeRO-0 is plain DDP (DDP_BFLOAT16, engine.py:2019).
- fp16 (or bf16 accumulated in bf16) at ZeRO 0 and 1: each micro-batch's gradients are added into `.grad` by
  autograd, `grad += new_grad` on every micro-batch after the first (pytorch/pytorch@035290b7 torch/csrc/autograd/
  functions/accumulate_grad.h:76-83), 6 bytes per parameter at HBM speed (`unfused_16bit_grad_accumulation_bytes`,
  as megatron-2022). No gradient-handling hook takes them earlier: ZeRO-1's optimizer installs hooks only with
  partitioned gradients, overlap_comm, a separate accumulation dtype or contiguous gradients
  (stage_1_and_2.py:713-715 in 0.19.8), and those reduce only at the accumulation boundary unless gradients are
  partitioned (`reduce_ready_partitions_and_remove_grads`, :2293-2295); the separate fp32 accumulation attribute
  (:397-404, 1234-1240) is used only when the accumulation dtype differs, which with bf16 is the BF16_Optimizer
  path below. The pipeline engine's backward is the engine's or `outputs.backward(gradient=...)` (pipe/engine.py:
  792-855), with the reduce after the last micro-batch (`_exec_reduce_grads`, :287). At ZeRO 2 and 3 the hooks reduce every micro-batch's gradient into
  the partition and drop it (shard_copies). From 6ae756c0 (#1246, 2021-07-26) until af033831 (#4887, 2024-01-05)
  ZeRO-1 ignored contiguous_gradients (engine.py:1075-1079 @v0.5.4), so `reduce_ipg_grads` took
  `buffered_reduce_fallback(None, ...)`, a flatten, an all-reduce of the whole 16-bit gradient over dp and a copy
  back (zero/stage2.py:1175-1190, 1303-1388 @v0.5.4): the all-reduce's bytes, as today's bucket all-reduce
  (`sharded_reduce_all_reduces`) prices them; only the flatten and copy-back (~0.02 s of MT-NLG's 60 s) are not.
- ZeRO-3 keeps the parameters of at most `stage3_param_persistence_threshold` (1e5) elements gathered between uses
  (`ds_persist`, partition_parameters.py:1292-1297; zero/config.py:228): the norms and biases
  (planner.specs.model.vector_tensors). Yet every `step` releases all parameters, the persistent ones too
  (stage3.py:2878 `_partition_all_parameters` -> `release_and_reset_all`, partitioned_param_coordinator.py:537-546,
  which does not look at ds_persist), and ends with `_post_step` gathering them again (stage3.py:2839-2841):
  `all_gather` -> `_all_gather(async_op=False)` -> `_allgather_params_coalesced` (partition_parameters.py:1596-1610,
  `stage3_allgather_sequential` false), which launches one `all_gather_into_tensor` per parameter (:2065-2074)
  before waiting on them all. The calls are serial on the group's NCCL stream, each paying the ring's latency over
  the whole sharding group, after the step's last kernel: exposed (planner.cost.data_parallel).
- Gradients live from backward to the end of the step only, at ZeRO 0-2 with 16-bit gradients (DeepSpeed 0.19.6,
  deepspeedai/DeepSpeed@edaa722): bf16 at ZeRO-0 runs FP16_Optimizer since v0.18.0 (#7515, 889f0ead: the gradient
  accumulation dtype defaults to the model's, engine.py:1485-1496, so `DDP_BFLOAT16`, :2019, 2065-2067), whose
  step flattens the 16-bit gradients into one fp32 copy, sets each `.grad` to None (fp16/fused_optimizer.py:288-294, 312-313)
  and drops the copy after the optimizer (:348-349); ZeRO-1/2 flatten their partition into the fp32 copy, free the
  16-bit gradients (`free_grad_in_param_list`, `averaged_gradients[i] = None`, zero/stage_1_and_2.py:2345-2372) and
  drop the copy after the optimizer (:2382); the engine then zeroes the gradients to None (engine.py:3358-3369). The
  H200 profile measured it (profiles/README.md): at 355M parameters ZeRO 0, 1 and 2 peak at the same 10.69 GiB, and
  the counted states are 16 bytes a parameter after backward, 14 after the step. ZeRO-3 keeps its gradient
  partitions in a buffer of their own (11.45 GiB there): not this rule. The 2020-21 engines free them alike at
  ZeRO-2 (v0.2.0 pt/deepspeed_zero_optimizer.py:930 `zero_grad(set_grads_to_None=True)`, :1126
  `averaged_gradients[i] = None`; v0.3.0 zero/stage2.py:1190-1199, 1409), so deepspeed-v0.2/-v0.3 keep the rule.
- Partitioned activation checkpoints (`activation_checkpointing.partition_activations`; Megatron-DeepSpeed
  --partition-activations, which deepspeed.checkpointing.configure lets override the config, DeepSpeed 0.19.8
  runtime/activation_checkpointing/checkpointing.py:1210-1211; deepspeedai/Megatron-DeepSpeed@4efb479d
  megatron/initialize.py:186-194). In forward each checkpointed floating-point input with at least mp_size elements
  is kept as its 1/mp_size slice, mp the tensor-parallel group (checkpointing.py:377-383, 387-440, 611-612;
  mp_group = the tensor-parallel group, :1236-1243), so the layer input kept under full recompute shrinks by tp
  (under sequence parallelism the input is already [s/tp, b, h] and is split again). In backward, before the
  recompute, `gather_partitioned_activations` rebuilds it with one synchronous `all_gather_into_tensor` over that
  group per checkpointed input (:276-306, called at :706-708): exposed, once per recomputed layer per micro-batch.
  Off by default: the config key defaults to False (activation_checkpointing/config.py:28) and Megatron-DeepSpeed's
  flag is `store_true` (megatron/arguments.py:1526), passed by none of its 59 example scripts that use
  --deepspeed-activation-checkpointing (nor by BLOOM's tr11-176B-ml.slurm); ZeRO's 100B run passed it
  (DeepSpeedExamples@405ce794 Megatron-LM/scripts/hyperscale/config6_25node.dat). The same code is in v0.3.14
  (microsoft/DeepSpeed@0cd9abf2 checkpointing.py:441-470 forward, `get_full_inputs` :284-312 with
  `dist.all_gather` over the model-parallel group, called before the recompute :629-632; default False,
  activation_checkpointing/config.py:28), so deepspeed-v0.3 inherits it.
- Optimizer offload with gradient accumulation (`offload_gradient_round_trip`, cost/offload.py): the rank's gradient
  partition is accumulated in host memory, by way of the GPU. ZeRO 1/2 (zero/stage_1_and_2.py at deepspeedai/
  DeepSpeed@edaa722): `reduce_ipg_grads` -> `copy_grads_in_partition` (:1650-1666) -> `async_accumulate_grad_in_cpu_via_gpu`
  (:1516-1563), which for each parameter touching the partition copies the host's running sum (a buffer of the
  parameter's numel in its dtype, :1522-1528) into a GPU buffer and adds the new gradient to it on every micro-batch
  after the first (`micro_step_id > 0`, H2D), then copies the sum back to pinned host memory (D2H); on the reduction
  stream with overlap_comm, else on the compute stream (:1719-1727). At ZeRO-2 that runs with every micro-batch's
  reduction; at ZeRO-1 with the step's one, after the last micro-batch (a round trip of a zeroed buffer, then the add).
  ZeRO-3 (stage3.py `partition_grads`, :1886-1933): the partition buffer lives on the host in the gradient-accumulation
  dtype (the model's unless grad_accum_dtype says otherwise, engine.py `get_data_types`; :742-746); every later
  micro-batch brings the sum back to the GPU, adds and copies it down again ("adding directly to cpu is very slow"),
  and the first copies its partition down and straight back up (:1904-1908, `offload_zero3_first_round_trip`), on the
  reduce-and-partition stream. Priced: a round trip on every micro-batch after the first at ZeRO-2, on every one at
  ZeRO-3, one a step at ZeRO-1 with more than one micro-batch; and at ZeRO-2 one more copy down a step
  (`offload_zero2_extra_copy_down`): the first micro-batch copies its gradient down (`copy_gradients_to_cpu` at
  micro_step_id 0, :1558-1560) and, since #7967 (9d632f10, 2026-04-11, v0.19.0), the boundary micro-batch copies
  its sum down too, beside the step's own fp32 copy. Before #6550 (c85c8703, v0.15.2) the boundary skipped that copy
  ("at the boundary we will send 32bit directly", v0.7.0 stage_1_and_2.py:1080-1082): m - 1 round trips; v0.15.2 to
  v0.18.x copied down only on the first micro-batch (v0.15.2 :1233-1236): m - 1 copies up and one down, m / 2
  round trips. This entry's ZeRO-2 offload is v0.19's. Not priced: a rank whose partition cuts a large tensor (the
  embedding) moves that tensor whole. v0.3.14 (deepspeed-v0.3) makes the round trips of the micro-batches after the first, skipping the
  boundary's copy down (zero/stage2.py:798-821, 913-925; stage3.py:1536-1551, 1640-1667; ZeRO-1 there brings a zeroed
  buffer up once a step, not priced), and no first-micro-batch round trip at ZeRO-3.
- Causal masks under the pipeline engine (pp > 1; deepspeedai/Megatron-DeepSpeed@4efb479d, the code `--emit deepspeed`
  launches): `model_provider` builds GPTModelPipe and a whole [1, 1, s, s] mask kept for the run in args.attn_mask,
  bool, 1 byte an element (pretrain_gpt.py:61-76, on every stage); and every micro-batch's `get_batch_pipe`
  (pretrain_gpt.py:176-209), called by the engine on the first and last stages (`_exec_load_micro_batch`, DeepSpeed
  0.19.8 runtime/pipe/engine.py:912-939), builds another through `get_ltor_masks_and_position_ids` without skip_mask,
  flash attention or not (megatron/utils.py:162-219: `torch.tril(torch.ones(...))`, two fp32 s x s tensors at once, 8
  bytes an element, then `< 0.5`, bool). The first stage clones the inputs, mask included, into its input buffer
  (engine.py:921-936), one per buffer, max(2, min(stages - stage_id, micro_batches)) of them (pipe/schedule.py:
  247-256). At pp 1 the launch runs GPTModel (`--no-pipeline-parallel`), whose `get_batch` skips the mask under flash
  attention (pretrain_gpt.py:116-123): nothing there. At 2,048 tokens a 4 MiB mask; at 32,768 tokens 1 GiB, and the
  build 8 GiB.
- The pipeline engine runs 1F1B only (`runtime/pipe/schedule.py`:189); no Megatron-style context
  parallelism (Ulysses sequence parallelism is a different scheme); the sharding group is the
  data(-and-sequence)-parallel group (engine.py:1655).
"""

from planner.frameworks.base import EVAL_INTERVAL_STEPS, EVAL_ITERS, Framework

# max_zero_with_pipeline stays 1: "ZeRO-2 and ZeRO-3 are incompatible with pipeline parallelism"
# (`deepspeed/runtime/pipe/engine.py`:78 @38327e07).
DEEPSPEED = Framework(
    name="deepspeed",
    grad_bytes_bf16=2.0, grad_bytes_fp16=2.0, reduce_bytes_bf16=2.0, reduce_bytes_fp16=2.0,
    # fp32 master 4 + Adam 8; with 16-bit gradients cost.memory adds the fp32 gradient partition the step
    # flattens (stage_1_and_2.py:1892-1902): 16 B/param as in the ZeRO-2 estimator's 18 = 2 + 16.
    optimizer_bytes=12.0, sharded_param_bytes=2.0,
    shards_over_context_parallel=False,
    gathers_per_layer=4.0, gathers_outside_layers=3.0, units_in_flight=2.0, prefetches_next_unit=True,
    dp_comm_overlap_default=False, zero2_reduces_every_microbatch=True, param_gather_overlap=False,
    tp_comm_overlap_available=False, tp_comm_overlap_default=False, tp_comm_overlap_needs_sequence_parallel=False, p2p_overlap=False,
    supports_interleaving=False, supports_context_parallel=False, supports_offload=True,
    # Optimizer offload: the gradient partition's sum via the GPU, and at ZeRO-3 the first micro-batch's too (docstring).
    offload_gradient_round_trip=True, offload_zero3_first_round_trip=True, offload_zero2_extra_copy_down=True,
    # Megatron-DeepSpeed's s x s causal masks under the pipeline engine (docstring): the run's bool mask, the fp32
    # build (ones and their tril), the bool clone in each of the first stage's input buffers.
    pipeline_mask_resident_bytes=1.0, pipeline_mask_build_bytes=8.0, pipeline_mask_input_buffer_bytes=1.0,
    grad_bucket_elements=5.0e8,  # DeepSpeed reduce_bucket_size default 5e8 elements (`runtime/zero/config.py`)
    # ZeRO-3 fills that bucket across layers in backward order and reduce-scatters it when the next gradient would
    # overflow it (DeepSpeed 0.19.8 zero/stage3.py:1583-1585), and once more in the backward's epilogue: one
    # reduce_scatter_tensor per flush (runtime/comm/coalesced_collectives.py:23, 128). Real DeepSpeed on gloo
    # makes 2/3/5/11 per step for 5.8M-68M-parameter models at a 5e6 bucket (profiles/cpu-local.json), as this
    # rule replayed over their parameters gives; llama2-7b at 5e8: 14 calls, where one a layer gave 33.
    zero3_scatter_bucket_elements=5.0e8,
    # ZeRO-1/2 all-gather the updated parameters with one all_gather_into_tensor per optimizer parameter group
    # whatever allgather_bucket_size says, wherever the backend has it, as NCCL and gloo do (zero/stage_1_and_2.py:
    # 3155-3159 -> runtime/utils.py:1008-1022; one call a step in all 20 two-rank ZeRO-1/2 runs of profiles/
    # cpu-local.json, which have one group, at a 5e6 bucket). Megatron-DeepSpeed builds two groups, with and without
    # weight decay (megatron/optimizer/__init__.py get_param_groups at deepspeedai/Megatron-DeepSpeed@4efb479d);
    # its MoE experts' parameters go to groups of their own, cut at 178,956,971 elements
    # (deepspeed/moe/utils.py:72-74, 122-140 `split_params_into_different_moe_groups_for_optimizer`).
    param_gather_calls=2.0, expert_param_group_elements=178_956_971.0,
    # bf16 with grad_accum_dtype fp32 without ZeRO: `_do_optimizer_sanity_check` raises "unsupported mix of
    # model_dtype and grad_accum_dtype" (deepspeedai/DeepSpeed@edaa7221 runtime/engine.py:2020-2021; since #7515,
    # v0.17.6, which made ZeRO-0 plain DDP); ZeRO-1 runs the BF16_Optimizer (:1994-1996).
    fp32_grad_accumulation_min_zero=1,
    # Gradients held in fp32 only by the BF16_Optimizer: a bf16 model with grad_accum_dtype fp32 at ZeRO-1
    # (DeepSpeed 0.19.8 runtime/engine.py:2305-2311). fp16 has no fp32 accumulation at all (ZeRO-0: the FP16
    # optimizer, :2313-2321; an fp16/fp32 mix raises, :2322-2323), and ZeRO-2/3 keep the model dtype's gradients
    # in their buckets and partitions: there grad_reduce_in_fp32 is `communication_data_type: fp32` alone, the
    # reduction cast to fp32 (engine.py:3795-3801 allreduce_bucket; zero/stage_1_and_2.py:320, 346-348), which is
    # what --emit writes.
    holds_fp32_grads_fp16=False, holds_fp32_grads_max_zero=1,
    eager_dispatch=True,
    # Memory: ZeRO-3 gathers submodule by submodule (estimator: 4 x largest layer, stage3.py:3019);
    # the IPG gradient bucket is its own buffer (stage_1_and_2.py:2048-2060, stage3.py:536-540).
    gathers_largest_module=True, gathers_whole_layers=False, grad_buckets_separate=True,
    # The persistent parameters' re-gather after every step: one all-gather per tensor (module docstring).
    persistent_regather_calls_per_tensor=1.0,
    # ZeRO++ (`zero_hpz_partition_size`, `zero_quantized_weights`, `zero_quantized_gradients`,
    # runtime/zero/config.py:294-310, still read by 0.19.8). No MiCS shard groups: DeepSpeed 0.19.8 removed MiCS
    # and refuses `mics_shard_size` at start-up (runtime/config.py:119-140, `_reject_removed_config_keys`), so
    # the searches do not offer them and simulate refuses them (HSDP under fsdp, or `other`, model the
    # scheme). No separate gradient group upstream (Xu et al. patch DeepSpeed for theirs).
    zeropp=True, shard_groups=False,
    # hpZ's secondary groups are consecutive world ranks (utils/groups.py:925-952 `_create_zero_param_parallel_group`,
    # called from stage3.py:753 without the mpu) and each rank's secondary slice is cut from its own tp-local parameter
    # (zero/partition_parameters.py:1932-1945); qgZ's two-stage all-to-all runs over node-local groups of the whole
    # world (runtime/comm/coalesced_collectives.py:35-40, utils/groups.py:738-760). With Megatron-DeepSpeed's tp ranks
    # adjacent, a group mixes shards of different tensor-parallel ranks, same shapes, other values: ZeRO++ hpZ / qgZ
    # only at tp 1 (qwZ alone quantises the data-parallel gather and is not affected).
    zeropp_groups_span_the_world=True,
    # fp8 through Transformer Engine with a DelayedScaling recipe, the only one Megatron-DeepSpeed builds
    # (deepspeedai/Megatron-DeepSpeed megatron/model/transformer.py:1716-1730).
    fp8_recipes=("delayed",),
    # ... and only without pipeline parallelism: Transformer Engine's layers (and its fp8_autocast) are built by
    # ParallelTransformer (megatron/model/transformer.py:1703-1730, 1759-1790, 2069 at deepspeedai/Megatron-DeepSpeed
    # 4efb479d), which GPTModel runs at pp 1 (--no-pipeline-parallel); the pipelined GPTModelPipe stacks
    # ParallelTransformerLayerPipe (model/gpt_model.py:388, transformer.py:1484), the local implementation, in bf16.
    fp8_with_pipeline=False,
    # That layer is transformer_engine.pytorch.TransformerLayer with its defaults (transformer.py:1771-1800): GELU MLP,
    # LayerNorm, and it asserts num_attention_heads == num_key_value_heads ("Transformer_engine does not support GQA").
    fp8_layer_shape=("gelu", "layernorm"),
    # Pipeline engine p2p (module docstring): partitioned over tp, four blocking transfers per micro-batch each
    # preceded by a metadata send, the whole tensor all-gathered over tp on receipt.
    p2p_scatter_gather=True, p2p_transfers_per_microbatch=4.0, p2p_meta_sends_per_microbatch=4.0,
    p2p_gathers_per_microbatch=3.0,  # received activation, own output, received gradient (module docstring)
    fp32_grad_accumulation_bytes=18.0,  # BF16_Optimizer's cast + add per micro-batch (module docstring)
    gradients_freed_after_step=True,  # module docstring: gradients and their fp32 copy live from backward to the step's end
    unfused_16bit_grad_accumulation_bytes=6.0,  # autograd's `grad += new_grad` at ZeRO 0/1 (module docstring)
    fp32_accumulation_all_reduces=True,  # BF16_Optimizer all-reduces the fp32 gradient, then all-gathers (docstring)
    bf16_pipeline_shards_optimizer=True,  # bf16 ZeRO-0 under the PipelineEngine: BF16_Optimizer (docstring)
    bf16_pipeline_grad_accumulation_bytes=14.0,  # zero 2 + autograd's add 6 + hp_grad.add_ 6 (docstring)
    # ZeRO-2's and ZeRO-3's gradient bucket copies and divides every micro-batch (cost/shard_copies.py).
    shard_copies="deepspeed",
    # DeepSpeed's own activation checkpointing recomputes whole calls (full); Megatron-DeepSpeed, the stack `--emit
    # deepspeed` writes, also has --recompute-granularity selective, the attention core alone (deepspeedai/
    # Megatron-DeepSpeed@4efb479d megatron/arguments.py:830-832, megatron/model/transformer.py:629).
    recompute_modes=("none", "selective", "full"),
    # ... but only of its unfused attention: `checkpoint_core_attention` is set where the core is CoreAttention
    # (transformer.py:625-629) and read only on that path (:864-869); the flash path (--use-flash-attn-v2, which
    # --emit deepspeed writes, with the default --transformer-impl local, arguments.py:516) runs FlashSelfAttention
    # without a checkpoint (:845-862), so selective recompute under flash attention recomputes nothing.
    selective_recomputes_fused_attention=False,
    # fused_attention_dtypes stays every dtype: DeepSpeed runs whatever attention the model has (the profiles'
    # TinyGPT runs torch's fused SDPA in fp32, profiles/). Megatron-DeepSpeed's FlashSelfAttention asserts 16-bit
    # inputs, which its launch target refuses (emit/deepspeed.py).
    # The model is Megatron-DeepSpeed's (the stack --emit deepspeed writes), which pads the vocabulary to a
    # multiple of --make-vocab-size-divisible-by (default 128) x tp (deepspeedai/Megatron-DeepSpeed@4efb479d
    # megatron/tokenizer/tokenizer.py:58-70, megatron/arguments.py:644).
    vocab_padding_multiple=128.0,
    # Megatron-DeepSpeed's GPTModelPipe partitions with partition_method='type:transformer'
    # (deepspeedai/Megatron-DeepSpeed@4efb479d megatron/model/gpt_model.py:463): weight 1 per transformer layer, 0
    # for the embedding, norm and head (pipe/module.py:412-417 @edaa7221), split by partition_balanced's linear
    # partition (runtime/utils.py:627-668), which gives the extra layers to the first stages: 61 layers over 8 stages
    # are 8, 8, 8, 8, 8, 7, 7, 7 (tests/test_layout.py runs DeepSpeed's own function where it is installed).
    uneven_layers_to_first_stages=True,
    # Megatron-DeepSpeed@4efb479d, the model code the launch writes for, has no multi-token prediction (git grep -i
    # "mtp|multi_token" finds nothing under megatron/).
    runs_multi_token_prediction=False,
    # Megatron-DeepSpeed's loss: `cross_entropy(output.float(), labels)` with Megatron's in-place vocab-parallel
    # cross-entropy (microsoft/Megatron-DeepSpeed@070c64be megatron/model/gpt_model.py, post_language_model_processing;
    # GPTModelPipe casts with float16_to_fp32, then CrossEntropy calls the same function): 2 + 4 bytes per logit, as
    # frameworks/megatron.py.
    # Measured: 6.00 (planner/profile/loss_memory.py, recipe megatron-vocab-parallel-upcast). planner profile's
    # TinyGPT (profile/worker.py) computes its loss the same way; the H200 rows were taken before it did, with
    # F.cross_entropy on upcast logits, 12 bytes per logit (profiles/README.md).
    loss_bytes_per_logit=6.0,
    # Checkpoint: the 16-bit module state dict (DeepSpeed 0.19.8 runtime/engine.py:5390) plus the ZeRO optimizer's
    # fp32 partition (SINGLE_PARTITION_OF_FP32_GROUPS) and Adam's state (runtime/zero/stage_1_and_2.py:3376-3388):
    # 2 + 4 + 8.
    checkpoint_bytes_per_param=14.0,
    # ZeRO-0 has no reduce hooks: the engine all-reduces every gradient after backward at the accumulation boundary
    # (runtime/engine.py:3082-3095 in 0.19.8, buffered_allreduce_fallback; the pipeline engine likewise after its
    # last backward, pipe/engine.py:287-294); overlap_comm is a ZeRO-1/2/3 key (zero/config.py).
    reduce_overlaps_at_zero0=False,
    # The pipeline engine reduces gradients in its ReduceGrads instruction after the schedule's last backward
    # (pipe/engine.py `_exec_reduce_grads`, :287 in 0.19.8; the same at v0.3.14, :221-226, and v0.5.4), and the engine
    # turns overlap_comm off for a PipelineModule: "Pipeline parallelism does not support overlapped communication,
    # will be disabled" (runtime/engine.py:2663-2666 in 0.19.8; :1083-1087 at v0.5.4).
    reduce_overlaps_with_pipeline=False,
    # ZeRO-1/2 reduce each IPG bucket with an all-reduce: `use_multi_rank_bucket_allreduce` defaults True
    # (zero/config.py:119, since v0.12.4, #4695), so average_tensor puts every slice in an "allreduce" bucket
    # (stage_1_and_2.py:1690-1712) and allreduce_and_copy_with_multiple_ranks flattens it and calls dist.all_reduce
    # (:1545-1575, 2367-2384) before each rank copies out its partition. The emitted ds_config leaves the default.
    sharded_reduce_all_reduces=True,
    # Partitioned activation checkpoints (module docstring): available, off unless asked, and with sequence
    # parallelism the sequence-split input is partitioned again.
    partition_activations_available=True, partition_activations_default=False,
    partition_activations_with_sequence_parallel=True,
    # The launch planner.emit writes for Megatron-DeepSpeed evaluates (--eval-interval / --eval-iters, base.py).
    eval_interval_steps=EVAL_INTERVAL_STEPS, eval_iters=EVAL_ITERS,
)
