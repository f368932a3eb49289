"""PyTorch FSDP2 (torchtitan). FSDP1 as MosaicML llm-foundry / Composer ran it: llm_foundry.py.

Sources: pytorch/torchtitan@b5bcd76c, pytorch/pytorch.
- torchtitan keeps sharded parameters in fp32 (`training.dtype = "float32"`), all-gathers them in bf16
  (`mixed_precision_param`) and reduce-scatters gradients in fp32 (`mixed_precision_reduce = "float32"`)
  (`torchtitan/config/configs.py`:87, 94, 102): 4 + 4 + 8 (Adam) = 16 B per parameter over the mesh.
  `mixed_precision_reduce` takes float32 only, so its launch cannot reduce in bf16 (`reduces_in_model_dtype`; FSDP2
  itself can, and `simulate` prices it; emit/torchtitan.py refuses it).
  Composer's FSDP 'DEFAULT' also reduces in fp32 (mosaicml/composer `mosaic_parallelism.py`).
- Units: each transformer block, the embedding, and the final norm with the output layer
  (`torchtitan/distributed/fsdp.py`:124-136, 238-265): one all-gather per unit per pass, one
  reduce-scatter per unit; "fully_shard groups parameters together for a single all-gather" (PyTorch
  fully_shard docs). Forward prefetches the next unit implicitly, backward explicitly: two units
  unsharded at once.
- The shard mesh is dp_shard x cp (`torchtitan/distributed/parallel_dims.py`:225-228, 281).
- torchtitan reduce-scatters every micro-batch (no `set_requires_gradient_sync(False)`, trainer.py:856-900),
  also with ZeRO-2 (reshard_after_forward never: the parameters are resharded after each backward), except
  under pipelining: there the stage is gathered once and reduced once a step (unsharded_stage_with_pp below;
  cost.memory.unsharded_through_step).
- Around each collective FSDP2 copies on HBM: the gathered output out into the per-parameter tensors, the
  gradients into the reduce-scatter buffer (cost/shard_copies.py, with file and line).
- Async tensor parallelism `enable_async_tensor_parallel` (off by default, needs compile; configs.py:298-312);
  interleaved and zero-bubble schedules from torch.distributed.pipelining; context parallelism.
"""

from planner.frameworks.base import Framework

FSDP = Framework(
    name="fsdp",
    sets_end_stage_layers=True,  # base.py: torchtitan's module lists per model chunk
    # Each pipeline stage's model chunk goes through the same parallelize function, FSDP2 included
    # (torchtitan@b5bcd76c `torchtitan/distributed/pipeline_parallel.py`:111): ZeRO-3 with pipelining.
    max_zero_with_pipeline=3,
    # FSDP2 (torchtitan@238fa995 `torchtitan/models/llama3/infra/parallelize.py`:125-151): ZeRO-3 is
    # fully_shard; ZeRO-2 the same with reshard_after_forward never (`config/job_config.py`:336-349:
    # parameters stay gathered from forward to backward); no ZeRO-1. DDP (ZeRO-0) only when it is the sole
    # parallelism ("DDP has not supported > 1D parallelism", parallelize.py:150) and parameters always sharded
    # over cp (the fsdp mesh is dp_shard x cp, `distributed/parallel_dims.py`:197); CPU offload moves
    # parameters, gradients and optimizer state together (training.enable_cpu_offload); bf16 or fp32
    # parameters (training.mixed_precision_param), fp8 through float8 linears, no fp16.
    zero_stages=frozenset({0, 2, 3}), replicated_dp_alone=True, offload_modes=frozenset({"optimizer+params"}),
    reduces_in_model_dtype=False,  # training.mixed_precision_reduce: float32 only (module docstring)
    offloads_activation_checkpoints=False,  # activation checkpoints stay on the GPU (base.py, cited there)
    nvme_offload_zero_stages=frozenset(),  # CPUOffload / CPUOffloadPolicy: host memory, no NVMe target
    # A torchtitan run that does not say: data_parallel_shard_degree = -1 shards over every data-parallel rank
    # (FSDP full shard, ZeRO-3) and mixed_precision_param = "bfloat16" (torchtitan/config/configs.py:133, 94).
    default_zero=3, default_dtype="bf16",
    dtypes=frozenset({"bf16", "fp8", "fp32"}),
    # fp8 is torchao's Float8Linear with dynamic (current) tensorwise scaling: the emitted config names no
    # recipe (`quantize.linear.float8.recipe_name` None, torchtitan@238fa995 config/job_config.py:738), which
    # builds torchao's default config, "Float8 tensorwise scaled training" (components/quantization/
    # float8.py:46-81); the recipes it can name are tensorwise and rowwise ones, no delayed scaling.
    fp8_recipes=("tensorwise",),
    # torchtitan@238fa995 has no multi-token prediction anywhere in its tree (git grep -i "mtp|multi_token").
    runs_multi_token_prediction=False,
    # torchao's Float8Linear keeps no fp8 weight copy: its matmul saves the high-precision input and weight for
    # backward and casts the weight to fp8 inside forward and again inside backward, one GEMM at a time (pytorch/ao@
    # 7ca1bfbe torchao/float8/float8_linear.py, matmul_with_hp_or_float8_args: save_for_backward(input_hp,
    # weight_hp_t)); the emitted config leaves FSDP's fp8 all-gather off (enable_fsdp_float8_all_gather False,
    # job_config.py:732), so the gathered weight is bf16. Transformer Engine's cached row- and column-wise copies
    # (2 bytes, frameworks/base.py) are not there; what is left is one GEMM's transient 1-byte cast, a rounding error.
    fp8_weight_copy_bytes=0.0,
    # No Korthikanti selective recompute (the attention core recomputed, every matmul output kept): torchtitan's
    # selective AC saves the compute-intensive ops' outputs, the attention kernel's among them, and recomputes every
    # second matmul (torchtitan@b5bcd76c torchtitan/distributed/activation_checkpoint.py:185-191, 268-273; at
    # @238fa995, which emit/torchtitan.py writes for, every nth layer or the same op-level policy, :27-49, 106-122).
    recompute_modes=("none", "full"),
    # The loss of the torchtitan emit/torchtitan.py writes for: F.cross_entropy(pred.flatten(0, 1).float(), labels)
    # (torchtitan@238fa995 torchtitan/components/loss.py:20-26; the same at tp 1 in v0.3.0), and the train step
    # deletes `pred` before backward (train.py:540-542). log_softmax saves its fp32 output (4 B per logit); at the
    # backward's start nll_loss's and log_softmax's backward each allocate an fp32 gradient of the same size before
    # the first is freed: 12 bytes per logit at the peak. Measured: 12.00 (planner/profile/loss_memory.py, recipe
    # torch-cross-entropy-upcast; profiles/loss-memory-cpu.json). tp > 1 and the last pipeline stage: below.
    # Not modelled: since 786e26f8 (2026-04-27) torchtitan's Llama 3 configs run the loss in 8 sequence chunks, each
    # with its own backward (ChunkedLossWrapper, num_chunks 8: components/loss.py:501-700 at b5bcd76c), about
    # (12 + 2) / 8 bytes per logit; the job configs this planner writes predate it.
    loss_bytes_per_logit=12.0,
    # The train step begins with `self.optimizers.zero_grad()` (torchtitan@238fa995 torchtitan/train.py:550; torch's
    # Optimizer.zero_grad sets .grad to None by default), and FSDP2's reduce-scatter makes each step's sharded fp32
    # gradients anew in backward (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py foreach_reduce): at
    # ZeRO-2 and 3 no gradient is live while the first micro-batch's forward builds its activations. Its ZeRO-0 is
    # DDP, whose .grad zero_grad frees the same way; its buckets' copy of them stays (zero0_bucket_gradient_copy, below).
    # No fp32 copy: the fp32 parameters are the master.
    gradients_freed_after_step=True, gradients_freed_min_zero=0, gradients_freed_max_zero=3,
    fp32_gradients_kept_for_the_run=False,
    grad_bytes_bf16=4.0, grad_bytes_fp16=4.0, reduce_bytes_bf16=4.0, reduce_bytes_fp16=4.0,
    optimizer_bytes=8.0, sharded_param_bytes=4.0,
    shards_over_context_parallel=True,
    gathers_per_layer=1.0, gathers_outside_layers=2.0, units_in_flight=2.0, prefetches_next_unit=True,
    dp_comm_overlap_default=True, zero2_reduces_every_microbatch=True, param_gather_overlap=True,
    # FSDP2 gathers and reduce-scatters on streams of its own and DDP buckets its all-reduce during backward, with no
    # switch in torchtitan's job config to run them after backward (the emitter's refusal, emit/torchtitan.py).
    dp_comm_overlap_always_from_zero=0,
    tp_comm_overlap_available=True, tp_comm_overlap_default=False, tp_comm_overlap_needs_sequence_parallel=True, p2p_overlap=False,
    # Async TP pipelines the all-gather through symmetric memory, which "works only when the group is within
    # NVLink domain or similar. It does not work across network interfaces" (torch 2.13
    # distributed/_symmetric_memory/__init__.py:479-486, used by _pipelined_all_gather_and_consume, :296).
    tp_comm_overlap_within_scale_up=True,
    supports_interleaving=True, supports_context_parallel=True, supports_offload=True,
    # Weight tying (Qwen3's small models) only without pipelining: the pipeline split drops tok_embeddings from the
    # later stages and the tied output asserts it (torchtitan@238fa995 models/qwen3/model/model.py:496-501); today
    # refused outright (torchtitan@b5bcd76c models/common/decoder.py:168-171, "Weight tying is not supported with
    # Pipeline Parallel").
    ties_embeddings_across_pipeline=False,
    # torchtitan's context parallelism is torch's context-parallel SDPA (models/llama3/infra/parallelize.py:98-104,
    # distributed/context_parallel.py:58-68) with torch's default rotate method, "allgather" (torch 2.13 distributed/
    # tensor/experimental/_context_parallel/_attention.py:77; torchtitan's context_parallel_rotate_method,
    # job_config.py:446, reaches set_rotate_method only in validation, distributed/utils.py:216): K, V all-gathered
    # once per pass, waited for after the first chunk's attention, and the K/V gradients rotated in fp32
    # (_attention.py:75 convert_to_f32, 273-300, 521-646).
    cp_gathers_kv_once=True, cp_kv_gradient_bytes=4.0,
    # Its split of the sequence: torchtitan's default context_parallel_load_balancer "headtail" (torchtitan@238fa995
    # config/job_config.py:431; @b5bcd76c config/configs.py:242, distributed/context_parallel/api.py:139-144) builds
    # torch's _HeadTailLoadBalancer, whose indices assert seq_len % (2 x cp) == 0: two chunks per cp rank, a head and
    # a tail (torch 2.13 distributed/tensor/experimental/_context_parallel/_load_balancer.py:78-149). torch's context
    # parallelism intercepts only the flash, memory-efficient and cuDNN SDPA kernels (_attention.py:940-945): the
    # math backend would attend over the local shard alone, so only fused attention runs it.
    context_parallel_chunks_per_rank=2, context_parallel_needs_fused_attention=True,
    # While a layer's attention backward runs that code holds, beyond the kernel's own, 3 x the local Q and (cp + 7.5) x
    # the local K + V (the gathered K, V; fp32 dQ, dK, dV accumulators; the concatenations it sends; the permute's
    # output): measured, planner/profile/cp_attention_memory.py (profiles/cp-attention-memory-cpu.json; exact over
    # three head shapes and cp 2-8). Its forward holds less (the gathered K, V and fp32 merge buffers).
    cp_attention_buffers=(("backward", (3.0, 7.5, 1.0, 0.0)),),
    # With tp > 1 torchtitan runs the loss under torch's loss_parallel() (train.py:314-318; the output layer's logits a
    # DTensor sharded over the vocabulary, models/llama3/infra/parallelize.py:182-186), whose nll_loss backward builds a
    # zeroed gradient, exp of the saved log-softmax and their sum before scaling (torch 2.13 distributed/tensor/
    # parallel/loss.py:451-518): 16 bytes per local logit at the peak. With pp > 1 torch.distributed.pipelining's
    # stage keeps its output, the bf16 logits, in fwd_cache until that micro-batch's backward (stage.py:913, 966):
    # 2 more. Measured: 16.01, 14.00 at tp 1 and 18.01 at tp 2 on the last stage (planner/profile/loss_memory.py,
    # recipes torch-loss-parallel, torch-pipeline-last-stage, torch-loss-parallel-last-stage; profiles/
    # loss-memory-cpu.json).
    loss_parallel_bytes_per_logit=16.0, pipeline_keeps_logits=True,
    # With async TP the launch compiles the loss as well (compile.components ["model", "loss"], emit/torchtitan.py;
    # components/loss.py:30-36). Compiled, the loss_parallel backward's elementwise steps fuse: 10 bytes per local
    # logit at the peak (measured 10.00, recipe torch-loss-parallel-compiled).
    async_tp_loss_bytes_per_logit=10.0,
    # torchtitan's pipeline_parallel_schedule 1F1B / Interleaved1F1B (emit/torchtitan.py) are torch's
    # Schedule1F1B, which refuses fewer micro-batches than stages (torch 2.13 distributed/pipelining/
    # schedules.py:1020-1024), and ScheduleInterleaved1F1B, which runs max(1, m // pp) rounds that must divide
    # m (:2935-2941: with pp 4, m 9 is refused, 7 and 10 run).
    one_f_one_b_needs_pp_micro_batches=True, interleaving_rounds_divide_micro_batches=True,
    # ZeRO-0 is DDP as torchtitan applies it, replicate(model, device_mesh=dp_mesh, bucket_cap_mb=100) (torchtitan@
    # 238fa995 models/llama3/infra/parallelize.py:372): 100 MiB buckets, the first one too (torch 2.13
    # nn/parallel/distributed.py:86-110: the 1 MiB first bucket only with the default cap), of gradients in their
    # reduction dtype (fp32 by default here; bf16 ones with --grad-reduce-in-fp32 0, twice as many a bucket).
    grad_bucket_elements=0.0, grad_bucket_bytes=100 * 2**20,
    # DDP's default gradient_as_bucket_view=False (distributed.py:828), which replicate() keeps: the Reducer
    # allocates each bucket's flat gradient tensor when it is built and copies every .grad in and the reduced values
    # back out, so the buckets hold a second copy of the gradients for the run. Measured: 12.0 bytes per fp32
    # parameter live after a backward under replicate() (parameter, .grad, bucket; tests/profile/test_ddp_memory.py).
    zero0_bucket_gradient_copy=True,
    # FSDP2 reduce-scatters each unit's gradients in that unit's post-backward (torch 2.13 distributed/fsdp/
    # _fully_shard/_fsdp_param_group.py `post_backward` -> `foreach_reduce`), with reshard_after_forward never
    # (ZeRO-2) as at ZeRO-3, and all-gathers per unit before forward; only ZeRO-0 is DDP's bucketed all-reduce.
    per_unit_collectives_from_zero=2,
    eager_dispatch=True,
    # With pp > 1 torchtitan does not reshard after forward (`distributed/fsdp.py`:129-132) and
    # torch.distributed.pipelining turns gradient sync off until the last backward (`pipelining/stage.py`,
    # `backward_maybe_with_nosync`): the stage's weights and its reduce-dtype gradients stay unsharded, and
    # the stage is gathered once (first micro-batch's forward) and reduced once (after the last backward) a step.
    # Without pp the final norm + output layer unit is not resharded after forward (fsdp.py:258-265).
    unsharded_stage_with_pp=True, output_unit_held=True,
    # HSDP: fully_shard over a 2-D (replicate, shard) mesh, torchtitan's data_parallel_replicate_degree x
    # data_parallel_shard_degree (`distributed/parallel_dims.py`); no quantised collectives. FSDP2 all-reduces
    # the reduce-scattered shard over the replicate group in the same post-backward reduction
    # (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py `foreach_reduce`, all_reduce_group), and
    # torchtitan reduces every micro-batch (above).
    shard_groups=True, replica_reduce_every_microbatch=True,
    # Per-parameter sharding copies every gather out into the parameters and every gradient into the
    # reduce-scatter buffer (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py; cost/shard_copies.py).
    shard_copies="fsdp2-per-parameter",
    # ZeRO-2 = reshard_after_forward False: FSDPParamGroup reshards after backward (reshard_after_backward
    # defaults True, torch 2.13 _fully_shard/_fsdp_param_group.py:223, 637), so each micro-batch gathers again.
    zero2_gathers_every_microbatch=True,
    # ZeRO-0 is DDP (`replicate(model, device_mesh=dp_mesh, bucket_cap_mb=100)`, torchtitan@238fa995 llama3/infra/
    # parallelize.py:362-374), and the train step runs every micro-batch's forward and backward with no `no_sync`
    # (train.py:575-590): DDP all-reduces the gradients after each micro-batch's backward.
    zero0_reduces_every_microbatch=True,
    # Checkpoint (DCP): the model's sharded parameters, fp32 (`training.dtype` float32, torchtitan@238fa995
    # config/job_config.py:275), and the optimizer's Adam state (components/checkpoint.py:48-49, 202-203): 4 + 8.
    checkpoint_bytes_per_param=12.0,
)
