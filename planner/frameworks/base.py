"""The properties by which training stacks differ, as one frozen record per stack."""

from __future__ import annotations

from dataclasses import dataclass

# The evaluation cadence the launch files planner writes set (planner.emit: Megatron-LM and Megatron-DeepSpeed
# --eval-interval / --eval-iters): a validation pass every EVAL_INTERVAL_STEPS optimizer steps of EVAL_ITERS
# forward-only iterations of one global batch each. Megatron's own defaults are eval_iters 100 and no interval
# (megatron/training/config/training_config.py:115, 119 @d98e8a64); these are the planner's choice, priced by
# planner.cost.evaluation so the plan's days include what the run spends evaluating.
EVAL_INTERVAL_STEPS = 1000
EVAL_ITERS = 10


@dataclass(frozen=True)
class Framework:
    """One training stack. Numbers and switches only, so the cost model can look them up as arrays.

    Byte counts are per parameter element for 16-bit training (bf16 or fp16 weights); fp32 training
    holds and reduces everything in 4 bytes whatever the stack.
    """

    name: str
    # Gradients: bytes per element the stack keeps them in, and communicates them in, by weight dtype.
    grad_bytes_bf16: float
    grad_bytes_fp16: float
    reduce_bytes_bf16: float
    reduce_bytes_fp16: float
    # Bytes per parameter the optimizer keeps in fp32 for 16-bit training: Adam m and v (8) plus the fp32
    # master weights (4), or Adam alone (8) where the sharded fp32 parameter is the master (FSDP, JAX).
    # cost.memory adds the 4-byte fp32 gradient copy the step uses whenever gradients are held in 16 bits.
    optimizer_bytes: float
    # ZeRO-3 / FSDP: sharded parameters are kept in fp32 (FSDP) instead of 16-bit (DeepSpeed).
    sharded_param_bytes: float
    # True when the optimizer/parameter sharding group is dp x cp rather than dp alone.
    shards_over_context_parallel: bool
    # ZeRO-3 / FSDP all-gather calls per transformer layer per pass, and for the rest of the model
    # (embedding, final norm, output layer).
    gathers_per_layer: float
    gathers_outside_layers: float
    # Units whose gathered (unsharded) 16-bit weights are alive at once: the one computing plus the
    # prefetched ones (FSDP2: 2; DeepSpeed: bounded by its prefetch bucket, counted in memory.py).
    units_in_flight: float
    # Gather of unit i+1 issued while unit i computes (FSDP prefetch, DeepSpeed prefetch bucket).
    prefetches_next_unit: bool
    # Default of the layout's dp_comm_overlap: gradient reduction overlapped with backward compute,
    # bucket by bucket (and, where the stack has it, the parameter all-gather with the next forward).
    dp_comm_overlap_default: bool
    # ZeRO-2: gradients are reduce-scattered after every micro-batch's backward (not once per step).
    zero2_reduces_every_microbatch: bool
    # Parameter all-gather after the optimizer step (distributed optimizer, ZeRO-1/2) overlapped with
    # the next forward.
    param_gather_overlap: bool
    # Tensor-parallel communication overlapped with GEMMs (TE userbuffers, async TP): available, default.
    tp_comm_overlap_available: bool
    tp_comm_overlap_default: bool
    # Pipeline sends/receives overlapped with compute (with an interleaved schedule).
    p2p_overlap: bool
    # TP communication overlap needs sequence parallelism (TE userbuffers overlap its all-gather /
    # reduce-scatter with the GEMMs).
    tp_comm_overlap_needs_sequence_parallel: bool
    supports_interleaving: bool
    supports_context_parallel: bool
    supports_offload: bool
    # Gradient elements per reduction bucket (ZeRO-0/1/2 and DDP): the reduce of a bucket starts when
    # backward has filled it, so only the last bucket is certain to be exposed. 0 where the stack caps its
    # buckets in bytes (grad_bucket_bytes).
    grad_bucket_elements: float
    # Kernels are issued one by one from Python (eager PyTorch) rather than from a compiled program.
    eager_dispatch: bool
    zero_stages: frozenset = frozenset({0, 1, 2, 3})
    # Default of the layout's dp_comm_overlap at ZeRO-3, where the switch also decides whether the per-unit gathers are prefetched on a stream of
    # their own: DeepSpeed's overlap_comm defaults to True at stage 3 only (zero/config.py:383-385 at
    # DeepSpeed@edaa722; ZERO3_OPTIMIZATION_OVERLAP_COMM_DEFAULT = True in v0.3.14 zero/constants.py:55), and
    # FSDP's prefetch has no switch: on for every stack.
    dp_comm_overlap_default_at_zero3: bool = True
    # Lowest ZeRO stage from which the stack always overlaps its data-parallel communication, with no switch to turn
    # it off (the layout's dp_comm_overlap is on there and 0 is refused); 4 = every stage has the switch.
    # Megatron-FSDP (Megatron's ZeRO-2/3) sets and asserts overlap_grad_reduce when it shards gradients;
    # torchtitan's FSDP2 and DDP overlap always (frameworks/megatron.py, frameworks/fsdp.py cite the lines).
    dp_comm_overlap_always_from_zero: int = 4
    # Highest ZeRO stage the stack runs together with pipeline parallelism (DeepSpeed's pipeline engine and
    # Megatron's distributed optimizer: 1; torchtitan shards each pipeline stage with FSDP2: 3).
    max_zero_with_pipeline: int = 1
    # Lowest ZeRO stage at which the stack accumulates 16-bit gradients in fp32 (Layout.grad_reduce_in_fp32);
    # 0: at every stage.
    fp32_grad_accumulation_min_zero: int = 0
    # Where the stack holds 16-bit gradients in fp32 when asked to reduce them in fp32 (Layout.grad_reduce_in_fp32 1):
    # per model dtype (bf16 stands for fp8's 16-bit side too) and up to a ZeRO stage. Elsewhere it holds them in the
    # model dtype and only communicates them in fp32 (DeepSpeed: frameworks/deepspeed.py).
    holds_fp32_grads_fp16: bool = True
    holds_fp32_grads_bf16: bool = True
    holds_fp32_grads_max_zero: int = 3
    # Whether its launch can reduce gradients in the 16-bit model dtype (Layout.grad_reduce_in_fp32 False): the fixed-
    # model search asked for that leaves out the stacks that cannot (torchtitan: frameworks/fsdp.py).
    reduces_in_model_dtype: bool = True
    # Model dtypes whose gradients the stack always accumulates and reduces in fp32, whatever it is asked
    # (Megatron-LM v2.5 with bf16: frameworks/megatron_2022.py): grad_reduce_in_fp32=0 there is a layout it cannot run.
    fp32_grad_reduce_forced_dtypes: frozenset = frozenset()
    # Offload modes the stack has (planner.specs.layout offload names), when supports_offload.
    offload_modes: frozenset = frozenset({"optimizer", "optimizer+params"})
    # ZeRO stages at which offloaded state can live on NVMe (ZeRO-Infinity) rather than in host memory. DeepSpeed
    # swaps to NVMe only in its ZeRO-3 optimizer (runtime/zero/stage3.py:826, 833); its ZeRO-1/2 optimizer keeps any
    # offloaded state in host memory whatever offload_optimizer.device says (stage_1_and_2.py:220-222).
    nvme_offload_zero_stages: frozenset = frozenset({3})
    # With optimizer offload and gradient accumulation each rank's gradient partition lives in host memory, and every
    # micro-batch after the first (at ZeRO-1 the step's one reduction) brings it back over PCIe, adds that micro-batch's
    # gradient on the GPU and sends the sum back (DeepSpeed: frameworks/deepspeed.py; cost/offload.py).
    offload_gradient_round_trip: bool = False
    # ... and at ZeRO-3 the first micro-batch's partition, copied down, is brought straight back to the GPU as well.
    offload_zero3_first_round_trip: bool = False
    # ... and at ZeRO-2 one more copy down a step, half a round trip: the boundary micro-batch's sum goes down to the
    # host as well, beside the step's own fp32 copy (DeepSpeed since #7967, v0.19.0).
    offload_zero2_extra_copy_down: bool = False
    # A tied output layer under pipelining: the last stage keeps a copy of the embedding and sums its gradient with
    # the first stage's (cost/model_parallel_comm.shared_embedding_sync); False where the stack refuses the pair.
    ties_embeddings_across_pipeline: bool = True
    # Plain replicated data parallelism (ZeRO-0 over dp > 1) only as the sole parallelism (no tp or pp), and
    # parameters always sharded over context-parallel ranks (no ZeRO-0 with cp > 1).
    replicated_dp_alone: bool = False
    dtypes: frozenset = frozenset({"bf16", "fp16", "fp8", "fp32"})
    # Activation recompute modes the stack runs (planner.specs.layout.Layout.recompute names): "selective" is
    # Korthikanti et al.'s, the attention core recomputed from kept projections (Megatron's
    # --recompute-granularity selective), which is what the cost model prices under that name.
    recompute_modes: tuple = ("none", "selective", "full")
    # Whether selective recompute still recomputes the attention core when it runs as a fused (flash) kernel. False
    # where the stack checkpoints only its unfused attention (Megatron-DeepSpeed): selective then recomputes nothing.
    selective_recomputes_fused_attention: bool = True
    # fp8 scaling recipes the stack runs (planner.specs.layout.Layout.fp8_recipe); the first is its default.
    fp8_recipes: tuple = ("delayed", "tensorwise")
    # Whether the stack trains in fp8 with pipeline parallelism (False where its pipelined model is built without
    # the fp8 layers: Megatron-DeepSpeed's GPTModelPipe, frameworks/deepspeed.py).
    fp8_with_pipeline: bool = True
    # Where the stack's fp8 layers build one transformer shape only: (MLP, norm), multi-head attention, no experts
    # (Megatron-DeepSpeed's Transformer Engine layer, frameworks/deepspeed.py). None: what it builds in 16 bits.
    fp8_layer_shape: tuple | None = None
    # The fused attention kernel the stack runs on Hopper (planner.cost.kernels.ATTENTION_KERNELS names);
    # on Ampere, attention_kernel_ampere.
    attention_kernel_hopper: str = "flash2"
    # The same on Ampere (A100 / A800): FlashAttention-2 unless the stack ran another kernel.
    attention_kernel_ampere: str = "flash2"
    # Bucket growth with the data-parallel size, elements per rank (the bucket is the larger of this x dp
    # and grad_bucket_elements), so per-call ring latency over many ranks stays amortised.
    grad_bucket_elements_per_rank: float = 0.0
    # A bucket cap in bytes, for stacks that size their buckets so (PyTorch DDP's bucket_cap_mb, XLA's combine
    # threshold): it holds this / the reduction dtype's bytes gradient elements (twice as many in bf16 as in fp32).
    # 0: the stack counts its buckets in elements alone (grad_bucket_elements).
    grad_bucket_bytes: float = 0.0
    # Without the layout's dp_comm_overlap the gradients are reduced (and, at ZeRO-1/2, the parameters gathered) in
    # one call per buffer rather than in buckets: Megatron-Core sets bucket_size = None there.
    one_bucket_without_overlap: bool = False
    # The ZeRO stage from which the stack reduces gradients (and, at ZeRO-1/2, gathers parameters) one collective
    # per wrapped unit, as it does at ZeRO-3 (gathers_per_layer per layer, gathers_outside_layers outside them),
    # rather than in grad_bucket_elements buckets: FSDP reduce-scatters in each unit's post-backward hook at
    # every sharding strategy. 4: never (bucketed at every stage below 3).
    per_unit_collectives_from_zero: int = 4
    # The TP overlap moves data by direct loads/stores between the GPUs' memories (TE userbuffers over CUDA IPC,
    # torch symmetric memory), so it works only inside one NVLink (scale-up) domain: a tp group across nodes
    # runs its collectives unoverlapped. False where the overlap runs over the network too (XLA's collective
    # matmul is built from NCCL collective-permutes).
    tp_comm_overlap_within_scale_up: bool = False
    # How many micro-batches a step must hold for the stack's pipeline schedules to run (frameworks.
    # runnable_micro_batches). Interleaved: groups of at least pp micro-batches per virtual stage, so at least
    # pp a step (Megatron-Core). Plain 1F1B: at least one per stage (torch.distributed.pipelining's
    # Schedule1F1B). Interleaved in rounds: max(1, m // pp) rounds that must divide m (torch's
    # ScheduleInterleaved1F1B). Stacks with none of these run any count.
    interleaving_needs_pp_micro_batches: bool = False
    # Interleaved: the step's micro-batches a multiple of pp (Megatron-LM before Megatron-Core asserted it,
    # frameworks/megatron_2022.py), so the count rises to the next multiple of pp.
    interleaving_needs_pp_multiple: bool = False
    one_f_one_b_needs_pp_micro_batches: bool = False
    interleaving_rounds_divide_micro_batches: bool = False
    # Pipeline sends carry 1/tp of the activation per tp rank, all-gathered over the scale-up link on the
    # other side (Narayanan et al. 2021, section 4.1, "scatter/gather"), even without sequence parallelism.
    p2p_scatter_gather: bool = False
    # Pipeline transfers a stage waits for, one after another, per micro-batch (per virtual stage): 2 where
    # the send and the receive of a schedule step go out together (Megatron's `send_forward_recv_backward`,
    # one batch_isend_irecv); 4 where each of receive activation, send gradient, send activation, receive
    # gradient is its own blocking call executed in order (DeepSpeed's pipeline engine, frameworks/deepspeed.py).
    p2p_transfers_per_microbatch: float = 2.0
    # Extra latency-only sends per micro-batch: the small metadata tensor sent ahead of each partitioned
    # (scatter/gather) activation or gradient (DeepSpeed's PartitionedTensor meta).
    p2p_meta_sends_per_microbatch: float = 0.0
    # With p2p_scatter_gather: tp all-gathers of whole pipeline tensors a (middle) stage makes per micro-batch, each
    # on the stage's stream before the compute it feeds (exposed). 2 where the received activation (forward) and
    # the received gradient (backward) are gathered (Megatron v2.5, frameworks/megatron_2022.py); 3 where the
    # stage also rebuilds its own output, whose data it freed after sending its 1/tp part, before backward
    # (DeepSpeed's pipeline engine, frameworks/deepspeed.py). 0: nothing gathered.
    p2p_gathers_per_microbatch: float = 0.0
    # Context parallelism's K/V exchange (cost/model_parallel_comm.py context_parallel_exchange). False: a ring, each
    # chunk's K, V sent on while the attention of the chunk at hand computes (Transformer Engine's cp_comm_type "p2p",
    # Megatron-Core's default). True: the whole K, V all-gathered once per pass, waited for after the first chunk's
    # attention, and the K/V gradients rotated around the ring in `cp_kv_gradient_bytes` per element (0: the compute
    # dtype), the last rotation exposed (torch's context-parallel SDPA with rotate method "allgather": fsdp.py).
    cp_gathers_kv_once: bool = False
    cp_kv_gradient_bytes: float = 0.0
    # Context parallelism's own buffers while one layer's attention runs, beyond the attention kernel's (cost/memory.py
    # cp_attention_buffer_bytes): (phase, multiples) pairs, phase "forward" or "backward", the multiples those of this
    # rank's local 16-bit tensors held at the phase's peak, in the order of CP_BUFFER_TERMS (planner.frameworks): Q,
    # K + V, K + V per cp rank, attention output per cp rank. The larger phase is charged; (): none priced.
    cp_attention_buffers: tuple = ()
    # The pipeline model's whole s x s causal masks, with pp > 1 (cost/memory.py pipeline_mask_bytes), bytes per mask
    # element: one kept for the run on every stage; one built for each micro-batch on the first and last stages (what
    # the build holds at its peak); one in each of the first stage's input buffers (Megatron-DeepSpeed:
    # frameworks/deepspeed.py). 0: no such masks.
    pipeline_mask_resident_bytes: float = 0.0
    pipeline_mask_build_bytes: float = 0.0
    pipeline_mask_input_buffer_bytes: float = 0.0
    # Memory (cost.memory). ZeRO-3 working set: the largest module's 16-bit weight and gradient (DeepSpeed
    # fetches submodule by submodule) and/or `units_in_flight` whole transformer blocks (FSDP units).
    gathers_largest_module: bool = False
    gathers_whole_layers: bool = True
    # ZeRO-0 is DDP without gradient_as_bucket_view (torch's default): with dp > 1 its Reducer keeps a flat copy of
    # every gradient in its buckets for the run, beside each .grad (fsdp.py).
    zero0_bucket_gradient_copy: bool = False
    # Gradient buckets are buffers of their own (DeepSpeed's IPG bucket) rather than views into a
    # contiguous gradient buffer (Megatron-Core) or the per-unit reduce (FSDP).
    grad_buckets_separate: bool = False
    # With pipeline parallelism the stage stays unsharded and gradients accumulate unsharded until the
    # last micro-batch (torchtitan's FSDP2 under torch.distributed.pipelining).
    unsharded_stage_with_pp: bool = False
    # ZeRO-3/FSDP without pipelining: the final norm + output layer stay gathered from forward to backward.
    output_unit_held: bool = False
    # Tensor-parallel collectives per transformer layer per pass (forward, backward, recompute): 2 for the
    # sequential block (after attention, after the MLP); 1 for the parallel block (attention and MLP read
    # the same input and their outputs are summed before one collective: GPT-J, PaLM, MegaScale).
    tp_collectives_per_layer: float = 2.0
    # Interleaved pipeline: the gradient reduction of each model chunk starts when that chunk's last
    # micro-batch backward is done, behind the backward of the other chunks (MegaScale section 3.2), rather
    # than once after the stage's last backward.
    dp_reduce_per_model_chunk: bool = False
    # Pipeline sends overlapped with compute in the non-interleaved 1F1B schedule too (MegaScale section 3.2:
    # send and receive decoupled, the warm-up's sends behind the next micro-batch's forward); Megatron-LM
    # overlaps them only with interleaving.
    p2p_overlap_without_interleaving: bool = False
    # fp8 training: bytes per Linear-weight element of the fp8 copies kept besides the 16-bit weights
    # (Transformer Engine: row-wise + column-wise fp8 data, 1 + 1).
    fp8_weight_copy_bytes: float = 2.0
    # fp8 training: the Linear layers keep their quantised (1-byte) inputs for the weight-gradient GEMM rather than
    # the 16-bit ones: the norm outputs that feed the QKV and fc1 GEMMs and fc2's input. The attention output
    # projection then keeps an fp8 copy of its input beside the attention output under delayed scaling and the
    # 16-bit input itself under current scaling. False: the 16-bit inputs are kept (torchao's Float8Linear
    # saves the high-precision input and casts again in backward, pytorch/ao@36027d82 torchao/float8/
    # float8_linear.py:45, 179-195), and the neutral default.
    fp8_keeps_quantised_linear_inputs: bool = False
    # ZeRO-3 hierarchy (planner.cost.hierarchy): ZeRO++'s hpZ / qwZ / qgZ; a shard group with replication
    # across groups (MiCS, HSDP); a gradient group of its own (the 3-level scheme of Xu et al.).
    zeropp: bool = False
    # Whether ZeRO++'s hpZ groups and qgZ's all-to-all are built from the world's ranks, as if every rank were a
    # data-parallel one: beside tensor parallelism they would mix ranks holding different tp shards.
    zeropp_groups_span_the_world: bool = False
    shard_groups: bool = False
    gradient_groups: bool = False
    # ZeRO-3 gradient reduce-scatter calls per transformer layer per micro-batch, and for the rest of the model
    # (1: one bucketed call; DeepSpeed before v0.5.5 issued one per parameter, frameworks/deepspeed_v03.py).
    scatter_calls_per_layer: float = 1.0
    scatter_calls_outside_layers: float = 1.0
    # ZeRO-3 gradients reduce-scattered bucket by bucket across the layers rather than unit by unit: a bucket of this
    # many elements is flushed when the next parameter would overflow it, and once more at the end of the backward
    # (DeepSpeed's reduce_bucket_size, frameworks/deepspeed.py). A layer then takes layer/bucket calls, a fraction
    # where a bucket holds several layers. 0: scatter_calls_per_layer per unit.
    zero3_scatter_bucket_elements: float = 0.0
    # ZeRO-1/2 parameter all-gather after the optimizer step: calls per step where the stack makes one per optimizer
    # parameter group whatever its bucket size (DeepSpeed, frameworks/deepspeed.py); 0: one per gradient bucket
    # (Megatron's distributed optimizer gathers bucket by bucket). The expert parameters' groups, where the stack
    # cuts them at a size (DeepSpeed's MoE groups): `expert_param_group_elements` each; 0: one per gradient bucket.
    param_gather_calls: float = 0.0
    expert_param_group_elements: float = 0.0
    # Host work per rank of the sharding group in every ZeRO-3 all-gather / reduce-scatter call, in eager ops
    # (planner.cost.kernels.EAGER_OP_S each): list-form collectives that build one tensor view per rank and
    # copy each into or out of a flat buffer (DeepSpeed before v0.5.5 over torch.distributed.all_gather /
    # reduce_scatter). 0: the call is one flat-buffer collective whatever the group size.
    host_ops_per_rank_per_call: float = 0.0
    # The parameters a ZeRO-3 stack keeps gathered between uses (the norms and biases,
    # planner.specs.model.vector_tensors) are gathered again after every optimizer step by a Python loop
    # over (parameter, rank) pairs; host work per pair: tensor views (no kernel, planner.cost.kernels.EAGER_OP_S -
    # KERNEL_LAUNCH_S each) and copies (EAGER_OP_S each). DeepSpeed before v0.5.5, frameworks/deepspeed_v03.py.
    # 0: no such loop.
    persistent_regather_views_per_rank: float = 0.0
    persistent_regather_copies_per_rank: float = 0.0
    # Collectives per persistent (vector) parameter tensor with which a ZeRO-3 stack gathers them again after every
    # optimizer step (planner.specs.model.vector_tensors; today's DeepSpeed: one all-gather each,
    # frameworks/deepspeed.py). Each pays the collective's latency over the whole sharding group. 0: none.
    persistent_regather_calls_per_tensor: float = 0.0
    # ZeRO-3 fetch limits in elements (planner.cost.zero3_fetch): the next parameter is prefetched only while
    # fewer gathered elements than this are alive; a gathered parameter is kept from the recompute forward to
    # its backward only while fewer elements than this are used in between. inf: not modelled.
    prefetch_live_limit_elements: float = float("inf")
    reuse_limit_elements: float = float("inf")
    # Hierarchical sharding: the all-reduce of the gradient shards across replica groups runs with every
    # micro-batch's reduce-scatter (FSDP2 HSDP under torchtitan) rather than once at the accumulation
    # boundary (DeepSpeed MiCS, mics.py:432-440).
    replica_reduce_every_microbatch: bool = False
    # ZeRO-2 keeps only a shard of the parameters between micro-batches and all-gathers them again before every
    # micro-batch's forward (FSDP's SHARD_GRAD_OP / reshard_after_forward=False: resharded after backward),
    # rather than once after the optimizer step (Megatron's distributed optimizer and Megatron-FSDP
    # optim_grads, DeepSpeed ZeRO-2: the 16-bit parameters stay whole).
    zero2_gathers_every_microbatch: bool = False
    # The HBM copies the stack's sharded data parallelism makes around its collectives (copy out of each
    # all-gather, copy/cast into the reduce-scatter buffer, shard casts): a recipe of
    # planner.cost.shard_copies.SHARD_COPY_RECIPES ("none", "fsdp1-flat-parameter", "fsdp2-per-parameter",
    # "deepspeed", "deepspeed-v0.2").
    shard_copies: str = "none"
    # tp may be a multiple of the key/value heads, not only a divisor (planner.specs.layout_checks.check_layout):
    # Megatron-Core column-splits the fused QKV projection across each head group and all-gathers its output over tp (a
    # reduce-scatter of its gradient in backward) so each rank attends with one kv head. Its weights and FLOPs per
    # rank are those priced; that all-gather / reduce-scatter per layer is not priced (an optimistic step time).
    tp_multiple_of_kv_heads: bool = False
    # Tensor and pipeline parallelism (Composer 0.16 / llm-foundry v0.3 shard with FSDP alone).
    supports_tensor_parallel: bool = True
    # Multi-token-prediction blocks (ModelSpec.mtp_layers): Megatron-Core builds them (--mtp-num-layers); stacks whose
    # model code has none would drop them from the run the plan prices. True where the code was not read.
    runs_multi_token_prediction: bool = True
    # fp8 parameters (--fp8-param-gather: the Linear weights kept as fp8 with the fp32 master in the distributed
    # optimizer, gathered in fp8): Megatron-Core's (megatron/training/arguments.py --fp8-param-gather, which needs the
    # distributed optimizer or Megatron-FSDP) and the neutral stack's; no other stack's code keeps them.
    runs_fp8_param_gather: bool = False
    supports_pipeline: bool = True
    # 16-bit weights with fp32 gradient accumulation (gradients held in 4 bytes) at ZeRO 0 or 1, where the
    # stack adds each micro-batch's 16-bit .grad into the fp32 copy in a pass of its own after backward: HBM
    # bytes per parameter per micro-batch (DeepSpeed's BF16_Optimizer, frameworks/deepspeed.py). 0 where the
    # weight-gradient GEMM accumulates into the fp32 buffer itself (Megatron's gradient_accumulation_fusion)
    # or no stack-level pass exists.
    fp32_grad_accumulation_bytes: float = 0.0
    # The stack frees its 16-bit gradients and the fp32 gradient copy the optimizer steps on once the step is done,
    # at ZeRO 0-2 (under optimizer offload too, where the copy is the host's), and makes them again in the next
    # backward (DeepSpeed 0.19: frameworks/deepspeed.py).
    # So neither is live when the next forward's activations peak: with one micro-batch a step the peak is
    # max(activations, gradients + copy) over the other states, not their sum (memory.phase_overlap); with more,
    # the gradients accumulate across the step's forwards and only the copy is the step's alone. False where a
    # gradient buffer lives for the whole run (Megatron's contiguous grad buffer) or where nothing was read.
    gradients_freed_after_step: bool = False
    # The ZeRO stages at which that holds, lowest and highest: DeepSpeed 0-2 (its ZeRO-3 keeps the gradient
    # partitions in a flat buffer for the run), torchtitan 0-3 (FSDP2's sharded gradients, and at ZeRO-0 DDP's
    # .grad; DDP's buckets keep their copy for the run, zero0_bucket_gradient_copy). And whether a 32-bit gradient
    # buffer lives for the run anyway (DeepSpeed's BF16_Optimizer keeps the fp32 gradients it accumulates into), so
    # that only 16-bit gradients are freed.
    gradients_freed_min_zero: int = 0
    gradients_freed_max_zero: int = 2
    fp32_gradients_kept_for_the_run: bool = True
    # Gradients held in 16 bits (fp16 without fp32 accumulation): HBM bytes per parameter of the unfused add of
    # each micro-batch's new weight gradient into the gradient kept for the step, on every micro-batch after the
    # first (autograd's AccumulateGrad steals the first and adds `grad += new_grad` in place after it: read 2 + 2,
    # write 2 = 6; frameworks/megatron_2022.py). 0 where the weight-gradient GEMM accumulates in place
    # (gradient_accumulation_fusion) or the stack's own pass is priced above.
    unfused_16bit_grad_accumulation_bytes: float = 0.0
    # Where that fp32-accumulating pass runs (memory.fp32_accumulation_rows), the stack all-reduces the whole fp32
    # gradient over dp after the last backward, though each rank updates only its shard of the master, and the
    # step ends with an all-gather of the updated 16-bit parameters, at ZeRO 0 as at 1 (DeepSpeed's BF16_Optimizer,
    # its own ZeRO-1 without a reduce-scatter: frameworks/deepspeed.py). False: the reduction follows the layout's
    # ZeRO stage (an all-reduce at 0, a reduce-scatter and the parameter all-gather at 1 and 2).
    fp32_accumulation_all_reduces: bool = False
    # bf16 at ZeRO-0 under the stack's pipeline engine (pp > 1) runs that same sharding optimizer with 16-bit
    # gradient accumulation: the fp32 master and Adam states sharded over dp, a whole 16-bit gradient buffer kept
    # for the run beside each micro-batch's .grad, the gradient all-reduced and the updated parameters all-gathered
    # (DeepSpeed's BF16_Optimizer: frameworks/deepspeed.py). False: ZeRO-0 keeps every state whole (DDP).
    bf16_pipeline_shards_optimizer: bool = False
    # Where it does, HBM bytes per parameter per micro-batch of the passes around each micro-batch's backward:
    # zeroing the kept 16-bit .grad, autograd's accumulation into it and the add into the optimizer's own buffer
    # (DeepSpeed: frameworks/deepspeed.py). They replace unfused_16bit_grad_accumulation_bytes there.
    bf16_pipeline_grad_accumulation_bytes: float = 0.0
    # The stack builds its embedding and output layer for the vocabulary padded up to a multiple of this x tp
    # (Megatron's make_vocab_size_divisible_by); 1: the vocabulary as it is. A cost matter only: the model's
    # parameter count stays the tokenizer's (the padded rows are never trained on).
    vocab_padding_multiple: float = 1.0
    # Where pp does not divide the layers, the first (layers mod pp) stages hold one layer more and the rest, the
    # last among them, one fewer (DeepSpeed's pipeline engine: frameworks/deepspeed.py). False: Megatron-Core's split
    # (planner.specs.pipeline_stages.stage_layers: embedding and loss slots, or the remainder to the middle stages).
    uneven_layers_to_first_stages: bool = False
    # Whether the layout may set the first and the last pipeline rank's layers (Layout.first_stage_layers,
    # last_stage_layers), which the searches try lighter (search.layouts): Megatron-Core by
    # --decoder-first/last-pipeline-num-layers or a layout string (NVIDIA/Megatron-LM@d98e8a64
    # megatron/core/transformer/transformer_config.py:2241-2345), torchtitan by its module lists per model chunk
    # (parallelism.module_fqns_per_model_part, emit/torchtitan.py). False where the split is the stack's own rule:
    # DeepSpeed's PipelineModule partitions by a method ('parameters', 'uniform', 'type:...'), not by counts.
    sets_end_stage_layers: bool = False
    # Bytes per token x (local) vocabulary entry the stack's language-model loss holds at its peak, on top of the
    # activations (cost/memory.py, the last stage's "logits" part): what the stack's own loss code allocates from the
    # output layer's 16-bit logits through its backward. 4 is the fp32 logits alone (Korthikanti et al. 2022,
    # section 4.1), for stacks whose loss code was not read. Measured per stack by planner/profile/loss_memory.py
    # (profiles/loss-memory-cpu.json): Megatron's in-place vocab-parallel loss 6.0, F.cross_entropy on upcast
    # logits 12.0. The vocabulary is split over tp by every stack's loss-parallel path.
    loss_bytes_per_logit: float = 4.0
    # With tp > 1, the bytes per local logit where the stack's loss takes another path than at tp 1 (torch's
    # loss_parallel: fsdp.py); 0: loss_bytes_per_logit at every tp.
    loss_parallel_bytes_per_logit: float = 0.0
    # The same where the layout's tp communication overlap compiles the loss too (torchtitan's async TP is a compiler
    # pass; its launch compiles model and loss: fsdp.py); 0: no such path.
    async_tp_loss_bytes_per_logit: float = 0.0
    # With pp > 1, the last stage also keeps the output layer's logits, in the compute dtype, until that micro-batch's
    # backward (torch.distributed.pipelining's fwd_cache: fsdp.py). False: the logits go out of scope once the loss
    # is computed (Megatron's forward_step returns the loss; DeepSpeed's pipeline buffer holds the fp32 logits that
    # Megatron's in-place loss turns into its saved softmax, the same storage: deepspeed.py).
    pipeline_keeps_logits: bool = False
    # The same for the stack's fused cross-entropy where a layout asks for it (Layout.loss_fusion); 0: the stack has
    # none, and such a layout is refused.
    fused_loss_bytes_per_logit: float = 0.0
    # Bytes per parameter a restartable checkpoint holds for 16-bit training (planner.cost.goodput): the 16-bit
    # weights 2 + fp32 master 4 + Adam m and v 8 = 14 where the stack saves both weight copies (Megatron's
    # distributed optimizer, DeepSpeed), fp32 parameters 4 + Adam 8 = 12 where the fp32 parameter is the master
    # (FSDP, JAX). The default is the ZeRO paper's accounting.
    checkpoint_bytes_per_param: float = 14.0
    # dp_comm_overlap exists at ZeRO-0 too: plain data parallelism all-reduces gradient buckets during backward
    # (DDP, Megatron-Core DDP). False where ZeRO-0 all-reduces only after the last backward, behind nothing.
    reduce_overlaps_at_zero0: bool = True
    # dp_comm_overlap with a sharded optimizer (ZeRO >= 1). False where that optimizer reduce-scatters only after the
    # last backward (Megatron-LM's distributed optimizer before Megatron-Core, frameworks/megatron_2022.py).
    reduce_overlaps_when_sharded: bool = True
    # dp_comm_overlap with pipeline parallelism. False where the pipeline engine reduces the gradients as its own
    # instruction after the last backward and turns the overlap off (DeepSpeed's PipelineEngine).
    reduce_overlaps_with_pipeline: bool = True
    # ZeRO-0: the replicated gradients are all-reduced after every micro-batch's backward, where the stack's gradient
    # accumulation never suspends DDP's sync (no `no_sync`), not once per step.
    zero0_reduces_every_microbatch: bool = False
    # ZeRO-1/2: each gradient bucket is all-reduced over dp (every rank then keeps its partition) instead of
    # reduce-scattered: twice the bytes.
    sharded_reduce_all_reduces: bool = False
    # Evaluation passes the stack's launch runs (planner.cost.evaluation prices them, planner.emit writes them):
    # one every eval_interval_steps optimizer steps, of eval_iters forward-only global batches; 0 = none (the
    # torchtitan job config planner writes leaves validation off). MegaScale and deepspeed-v0.3 keep the values of
    # the Megatron / Megatron-DeepSpeed training loop they derive from; other stacks without launch files: none.
    eval_interval_steps: float = 0.0
    eval_iters: float = 0.0
    # What a run on this stack used when it does not say (a runs-CSV row with an empty dtype or zero cell;
    # calibrate.validation names them as inferred): the stack's usual launch. bf16 with plain data parallelism
    # (ZeRO 0): DeepSpeed's zero_optimization.stage defaults to 0 (runtime/zero/config.py), Megatron's
    # --use-distributed-optimizer is off by default (megatron/training/arguments.py:3156), and 16-bit training in
    # bf16 is how both are run on Ampere and later (their dtype defaults, fp32, are not what a published run used).
    default_dtype: str = "bf16"
    default_zero: int = 0
    # Whether a layout that does not say runs fused (flash) attention: every stack today; not the stacks that
    # predate FlashAttention (Dao et al., 2022), whose runs computed the whole score matrix (deepspeed-v0.2, -v0.3).
    flash_attention_default: bool = True
    # The dtypes whose attention the stack's fused kernels take; in the others attention runs unfused by default,
    # and an explicit flash_attention is refused.
    fused_attention_dtypes: frozenset = frozenset({"bf16", "fp16", "fp8", "fp32"})
    # Partitioned activation checkpoints (planner.cost.memory, planner.cost.model_parallel_comm): under full recompute
    # each checkpointed layer input is kept as its 1/tp slice on every tp rank and all-gathered over tp, on the
    # compute stream, before the layer is recomputed in backward. Available where the stack has the option
    # (DeepSpeed `partition_activations`, Megatron-LM --distribute-saved-activations); on by default where the stack
    # turns it on by itself (none does: frameworks/deepspeed.py, megatron.py); with sequence parallelism where the
    # stack partitions the already sequence-split input again rather than refusing the mix.
    partition_activations_available: bool = False
    partition_activations_default: bool = False
    partition_activations_with_sequence_parallel: bool = False
    # Whether the stack's CPU activation checkpointing (Layout.activation_offload) copies each checkpoint to the host
    # and back on the compute stream, blocking, rather than on a stream of its own behind the passes: DeepSpeed
    # before #8282 (858e91eea, 2026-08-21) did, with `partition.cpu()` out (v0.2.0 deepspeed_checkpointing.py:409,
    # v0.3.14 activation_checkpointing/checkpointing.py:498) and get_full_inputs(device=cuda_device) back, its
    # transport stream commented out (v0.3.14 :630-632). cost/offload.py activation_copies.
    activation_offload_blocking: bool = False
    # Whether the stack keeps full recompute's activation checkpoints on the host (Layout.activation_offload):
    # DeepSpeed's activation_checkpointing.cpu_checkpointing (runtime/activation_checkpointing/checkpointing.py),
    # llm-foundry's fsdp_config.activation_cpu_offload (its README, "as a last resort"), JAX's offloading remat
    # policies. Megatron-Core's cpu_offloading refuses activation recomputation ("CPU offloading does not work when
    # activation recomputation is enabled", NVIDIA/Megatron-LM@d98e8a6 megatron/core/transformer/transformer_config.py:
    # 1896-1899), and torchtitan's activation checkpointing has no host copy (pytorch/torchtitan@b5bcd76c
    # distributed/activation_checkpoint.py; its enable_cpu_offload moves parameters, gradients and optimizer states,
    # config/configs.py:70-72).
    offloads_activation_checkpoints: bool = True
    # Context parallelism's split of the sequence: chunks per cp rank (the sequence must divide into cp x this many)
    # and whether only the stack's fused attention kernels run it. Megatron-Core with Transformer Engine splits it
    # into 2 x cp load-balanced causal chunks (megatron/training/arguments.py:1335-1338 at d98e8a6) and TE disables
    # its unfused attention under context parallelism (NVIDIA/TransformerEngine@d0067d0 pytorch/attention/
    # dot_product_attention/utils.py:1169-1173), so no backend is left without flash or fused attention.
    context_parallel_chunks_per_rank: int = 1
    context_parallel_needs_fused_attention: bool = False
    # Memory-bound kernels the stack's model code runs beyond the fused path the cost model's elementwise term stands
    # for (planner.cost.layer_compute.unfused_elementwise_bytes), in accesses of one activation element (a read or a
    # write of 2 bytes in 16-bit training) per element of the tensor they touch, per layer, micro-batch and tp rank:
    # over the b x heads/tp x s x s attention scores when the layout runs no flash attention (forward; backward), over
    # the [s, b, h] hidden state, over the [s, b, 3h/tp] query, key and value, and over the [s, b, ffn/tp] MLP
    # activation (forward; a recompute forward runs them again). Today's stacks: 0, their kernels fused (scale, mask
    # and softmax in one kernel; bias folded into the bias-GeLU and bias-dropout-add functions). The 2020 Megatron-LM
    # fork of DeepSpeedExamples ran them one by one (frameworks/deepspeed_v02.py).
    unfused_score_accesses_forward: float = 0.0
    unfused_score_accesses_backward: float = 0.0
    unfused_hidden_accesses_forward: float = 0.0
    unfused_qkv_accesses_forward: float = 0.0
    unfused_ffn_accesses_forward: float = 0.0
    # Partitioned checkpoints (partition_activations): HBM accesses per gathered element of the layer input that
    # the rebuild makes besides the all-gather itself (planner.cost.model_parallel_comm.checkpoint_gather). 0 where it
    # gathers straight into the buffer it uses (all_gather_into_tensor); 3 where it zero-fills a new buffer (1 write)
    # and gathers through PyTorch's list-form all_gather, which copies the flat result out into each rank's slice
    # (1 read, 1 write): frameworks/deepspeed_v02.py.
    checkpoint_gather_hbm_accesses: float = 0.0
    # A release of another stack kept as its own entry for the runs that used it (deepspeed-v0.3, megatron-2022):
    # that stack's name. Its published runs' residuals and the step-time error band are shared with it
    # (planner.calibrate.error_bands). Empty: the stack stands for itself.
    lineage: str = ""
