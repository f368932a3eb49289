"""Megatron-LM / Megatron-Core / NeMo (with Transformer Engine).

Sources: NVIDIA/Megatron-LM@d98e8a64 (MP = megatron/training/arguments.py, DDPC =
megatron/core/distributed/distributed_data_parallel_config.py, DDP = .../distributed_data_parallel.py).
- Bytes per parameter, `docs/user-guide/features/dist_optimizer.md`:16-20: bf16 params + fp32 grads
  18 -> 6 + 12/d; fp16 params + fp16 grads 20 -> 4 + 16/d. The fp32 gradient buffer stays whole on every
  rank (dist_optimizer.md:38-44).
- `--bf16` forces `accumulate_allreduce_grads_in_fp32` (MP:1204-1217); the buffer dtype follows it
  (`core/distributed/param_and_grad_buffer.py`:924): bf16 gradients are held and reduced in fp32.
- The distributed optimizer and the gradient reduction use `get_data_parallel_group(with_context_parallel=True)`
  (`core/optimizer/__init__.py`:1075-1076; DDP:148-149; `finalize_model_grads.py`:611): sharded over dp x cp.
- Buckets: `max(40000000, 1000000 * dp_group.size())` parameters (DDP:132-134), one bucket when the
  reduce is not overlapped (DDP:135-137); reduced once per step, after the last micro-batch (DDP:553-557).
- Overlaps default off: `overlap_grad_reduce`, `overlap_param_gather` (DDPC:18, 21), `tp_comm_overlap`
  (`core/model_parallel_config.py`:265); NeMo's H100 recipes turn all three on
  (NVIDIA/NeMo@8cfedd72 `nemo/collections/llm/recipes/llama31_405b.py`:127-128, 238-241).
- TE userbuffers overlap needs sequence parallelism (MP:1441) and one NVLink domain: Transformer Engine's
  userbuffers exchange through CUDA IPC, "only up to 8 GPUs in an NVLink domain", and "for TP-parallelism,
  only single node is implemented" (NVIDIA/TransformerEngine@d0067d0d transformer_engine/common/
  comm_gemm_overlap/userbuffers/userbuffers-host.cpp:664, userbuffers.h:194; multi-node NVLink fabrics
  excepted, :94-115). p2p overlap is on with interleaving and
  forced off without it (MP:1010-1013, 3118-3120).
- Schedules 1F1B and interleaved (`core/pipeline_parallel/schedules.py`); context parallelism native.
- ZeRO-2/3-style sharding is Megatron-FSDP (`megatron/core/distributed/fsdp`, `--use-megatron-fsdp`,
  `--data-parallel-sharding-strategy` optim_grads = ZeRO-2, optim_grads_params = ZeRO-3, MP:3190-3191): one
  gather per layer; "optim_grads: additionally, RS communication groups on all microbatches"
  (`core/distributed/fsdp/mcore_fsdp_adapter.py`:166-169), so its ZeRO-2 reduce-scatters every micro-batch.
"""

from planner.frameworks.base import EVAL_INTERVAL_STEPS, EVAL_ITERS, Framework

MEGATRON = Framework(
    name="megatron",
    sets_end_stage_layers=True,  # base.py: --decoder-first/last-pipeline-num-layers, layout strings
    runs_fp8_param_gather=True,  # --fp8-param-gather (base.py); emit/megatron.py writes it
    # Transformer Engine's DotProductAttention (--attention-backend auto) turns FlashAttention 2/3/4 and its cuDNN
    # FusedAttention off for other query dtypes than bf16/fp16 (fp8 for FA3 and FusedAttention): an fp32 run has only
    # its unfused attention (NVIDIA/TransformerEngine@d0067d0 pytorch/attention/dot_product_attention/utils.py:
    # 598-641). fp8 training keeps attention in bf16.
    fused_attention_dtypes=frozenset({"bf16", "fp16", "fp8"}),
    # Transformer Engine's modules under Megatron-Core's layer spec (NVIDIA/TransformerEngine@d0067d0d): the fused
    # norm-and-quantise output of TELayerNormColumnParallelLinear (QKV, fc1) is kept in fp8, column-wise only on
    # Hopper, the local row-wise shard under sequence parallelism (pytorch/module/layernorm_linear.py:226-232,
    # 478-487); TERowParallelLinear keeps its quantised input (linear.py:428-436, 614-616), but for the attention
    # output projection under current scaling Megatron asks for the original input (core/transformer/attention.py:
    # 428-444 at d98e8a64; linear.py:597-598). The SwiGLU keeps its 16-bit input (core/fusions/fused_bias_swiglu.py:
    # 180-184; fp8 only with activation_func_fp8_input_store, default off, transformer_config.py:227).
    fp8_keeps_quantised_linear_inputs=True,
    grad_bytes_bf16=4.0, grad_bytes_fp16=2.0, reduce_bytes_bf16=4.0, reduce_bytes_fp16=2.0,
    optimizer_bytes=12.0, sharded_param_bytes=2.0,
    shards_over_context_parallel=True,
    gathers_per_layer=1.0, gathers_outside_layers=2.0, units_in_flight=2.0, prefetches_next_unit=True,
    dp_comm_overlap_default=False, zero2_reduces_every_microbatch=True, param_gather_overlap=True,
    # ZeRO-2/3 run as Megatron-FSDP, which turns overlap_grad_reduce on (and overlap_param_gather at ZeRO-3) and
    # asserts it whenever it shards gradients (core/distributed/fsdp/src/megatron_fsdp/megatron_fsdp.py:326-337 at
    # d98e8a64): no --overlap-grad-reduce switch there.
    dp_comm_overlap_always_from_zero=2,
    tp_comm_overlap_available=True, tp_comm_overlap_default=False, tp_comm_overlap_needs_sequence_parallel=True, p2p_overlap=True,
    tp_comm_overlap_within_scale_up=True,
    # microbatch_group_size_per_vp_stage defaults to pp (core/model_parallel_config.py:567-568) and may not exceed the
    # step's micro-batches (core/pipeline_parallel/schedules.py:1160-1168, NVIDIA/Megatron-LM@d98e8a64).
    interleaving_needs_pp_micro_batches=True,
    supports_interleaving=True, supports_context_parallel=True, supports_offload=False,
    # No host copy of recompute's checkpoints; cp in 2 x cp chunks, on fused attention only (base.py, cited there).
    offloads_activation_checkpoints=False, context_parallel_chunks_per_rank=2, context_parallel_needs_fused_attention=True,
    # Context parallelism's buffers: Transformer Engine's AttnFuncWithCPAndKVP2P (cp_comm_type "p2p", Megatron-Core's
    # default), read at NVIDIA/TransformerEngine v2.18 (27486e03) transformer_engine/pytorch/attention/
    # dot_product_attention/context_parallel.py (the same buffers in v1.13, v2.4, v2.8). Forward: every received K/V
    # buffer stays in its list until the output correction (:1685-1706, none set back to None), and every step's bf16
    # output with it (out_per_step, :1672-1674, read at :1982-2027): c x (K + V) and c x the output on the last cp rank
    # (its steps run whole). Backward: two [kv, dkv] pairs to send and receive (:2397-2401; the bf16 dK/dV accumulator
    # travels in them, :2727) and a bf16 dQ accumulator (:2396), beside the kernel's own outputs: Q + 4 x (K + V). The
    # fp32 log-sum-exps (c + 1 of Q / head_dim x 2, under 2% of Q at head dim 128) are left out. Read, not measured.
    cp_attention_buffers=(("forward", (0.0, 0.0, 1.0, 1.0)), ("backward", (1.0, 4.0, 0.0, 0.0))),
    grad_bucket_elements=4.0e7,  # Megatron-Core DDP buckets of max(40M, 1M x dp) parameters (`distributed_data_parallel_config.py`, bucket_size)
    eager_dispatch=True,
    # Transformer Engine's DotProductAttention prefers the cuDNN fused-attention backend on Hopper
    # (`transformer_engine/pytorch/attention/dot_product_attention/utils.py`, get_attention_backend).
    attention_kernel_hopper="cudnn",
    # bucket_size = max(40000000, 1000000 * dp_group.size()) (megatron/core/distributed/distributed_data_parallel.py)
    grad_bucket_elements_per_rank=1.0e6,
    # "Set bucket_size to infinity if overlap_grad_reduce is False" (distributed_data_parallel.py:135-137).
    one_bucket_without_overlap=True,
    # Pipeline tensors go whole: each tp rank sends its full [s/cp, b, h] activation (1/tp of it with sequence
    # parallelism, which shards it anyway). Megatron-LM's scatter/gather (Narayanan et al. 2021 section 4.1,
    # frameworks/megatron_2022.py) did not move into Megatron-Core with the pipeline code (39b83c79, 2023-01-31):
    # core/pipeline_parallel/p2p_communication.py at d98e8a64 splits nothing, and the unused
    # --no-scatter-gather-tensors-in-pipeline flag went with #4140 (10e7b745).
    p2p_scatter_gather=False,
    # With --overlap-grad-reduce and interleaving, each model chunk's gradient reduction starts with the backward
    # of its last micro-batch (`core/pipeline_parallel/schedules.py`:1419-1426 enables grad sync there; with
    # align_grad_reduce, training.py:4356-4359, `start_grad_sync` per chunk at :1438-1455), behind the other
    # chunks' remaining backward, as MegaScale describes it (section 3.2).
    dp_reduce_per_model_chunk=True,
    # num_query_groups "must be a multiple or divisor of" tp (core/transformer/transformer_config.py:1461-1468); with
    # fewer groups than tp the QKV output is all-gathered and sliced (core/transformer/attention.py:353-380,
    # 1851-1870; mappings.py:546-549: all-gather forward, reduce-scatter backward).
    tp_multiple_of_kv_heads=True,
    # --recompute-granularity full or selective (core/transformer/transformer_config.py:532; selective recomputes
    # "core_attn", :533-535), or none.
    recompute_modes=("none", "selective", "full"),
    # The vocabulary is padded to a multiple of make_vocab_size_divisible_by x tp, default 128 (MP:2441;
    # `core/tokenizers/utils/build_tokenizer.py`:133-146, applied with pad_vocab_size, default True,
    # `training/config/training_config.py`:686): embedding and output layer hold the padded rows.
    vocab_padding_multiple=128.0,
    # The loss: compute_language_model_loss -> tensor_parallel.vocab_parallel_cross_entropy(logits, labels)
    # (`core/models/common/language_module/language_module.py`:161-200; cross_entropy_loss_fusion is off by
    # default). Its forward casts the 16-bit logits to fp32 and turns that copy into the softmax in place, which it
    # saves and hands back as the gradient (`core/tensor_parallel/cross_entropy.py`:25, 41, 62, 77, 88, 181, 210);
    # autograd casts that to the 16-bit logits' dtype: 2 + 4 bytes per logit live at once, in the forward and again
    # in the backward. Measured: 6.00 (planner/profile/loss_memory.py, megatron-core 0.16.1, profiles/
    # loss-memory-cpu.json).
    loss_bytes_per_logit=6.0,
    # --cross-entropy-loss-fusion with --cross-entropy-fusion-impl te (core/model_parallel_config.py:320, 325; off
    # and 'native' by default; NVIDIA-NeMo/Megatron-Bridge's model providers turn it on, gpt_provider.py:152 at
    # v0.1.0rc4, and its performance recipes pick 'te'): Transformer Engine's parallel_cross_entropy (core/extensions/transformer_engine.py:
    # 3601-3614). TE 2.6-2.17's Triton kernel writes the gradient into the 16-bit logits in place in the forward and
    # saves that buffer; the backward scales it in place (NVIDIA/TransformerEngine v2.9 pytorch/triton/cross_entropy.py:
    # 175-187, 342-371; pytorch/cross_entropy.py:59): 2 bytes per logit. From TE 2.18 (01bbe3ee, #3193) it keeps a
    # separate fp32 gradient instead, 2 + 4 again, the fix of the numerical issue that made Megatron-LM's training
    # arguments refuse 'te' from 2026-06-03 (NVIDIA/Megatron-LM#5115; training/arguments.py:1697-1702 at d98e8a64,
    # a warning in core/model_parallel_config.py:536-542 for library users such as Megatron-Bridge). So this is the
    # loss of runs made with TE 2.6-2.17 (the published Megatron-Bridge recipe rows), for simulate to model them,
    # not an option the searches offer or emit.megatron writes. The 'native' fusion (cross_entropy_fusion_impl
    # 'native': core/fusions/fused_cross_entropy.py, its functions torch.compile'd by core/jit.py on torch >= 2.2) holds
    # more than the unfused loss: 10.0 measured (profiles/loss-memory-cpu.json, with inductor on this CPU; its
    # compiled functions return fresh fp32 buffers where the eager code works in place). Not priced: no layout asks
    # for it.
    fused_loss_bytes_per_logit=2.0,
    # Checkpoint: the model's bf16 state dict plus, per parameter, the distributed optimizer's "param" (the fp32 main
    # copy) and Adam's exp_avg and exp_avg_sq (`core/optimizer/distrib_optimizer.py`:1090-1117): 2 + 4 + 8.
    checkpoint_bytes_per_param=14.0,
    # --distribute-saved-activations (TransformerConfig.distribute_saved_activations, default False: core/transformer/
    # transformer_config.py:557): full recompute keeps the checkpointed layer input split into tp equal 1-D chunks
    # (`split_tensor_into_1d_equal_chunks`) and gathers it back with one all_gather_into_tensor over tp before the
    # recompute (`gather_split_1d_tensor`; core/tensor_parallel/random.py:621-625, 647-651, utils.py:79-95; the
    # Transformer Engine checkpoint likewise, NVIDIA/TransformerEngine@d0067d0d pytorch/distributed.py:381, 421-425).
    # Needs tp > 1 and full recompute (training/arguments.py:1410-1416) and refuses sequence parallelism
    # (transformer_config.py:1934-1938).
    partition_activations_available=True, partition_activations_default=False,
    partition_activations_with_sequence_parallel=False,
    # The launch planner.emit writes for Megatron-LM evaluates (--eval-interval / --eval-iters, base.py).
    eval_interval_steps=EVAL_INTERVAL_STEPS, eval_iters=EVAL_ITERS,
)
