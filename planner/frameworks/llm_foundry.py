"""MosaicML llm-foundry on Composer: PyTorch FSDP1 (FullyShardedDataParallel), as its benchmark table ran it.

Sources: mosaicml/llm-foundry, mosaicml/composer, pytorch/pytorch v2.1 torch/distributed/fsdp/*.py (below).
The rows of llm-foundry's scripts/train/benchmarking/README.md were made with the code of their date:
the H100 tables by mosaicml/llm-foundry@b2a43a1 (2023-10-19, PR #543; sweep.sh: image
`mosaicml/pytorch:2.1.0_cu121`, composer >= 0.16.4, < 0.17 in setup.py; its A100-80GB amp_bf16 rows
re-run then), the A100-40GB table and the A100-80GB 70B rows ("bf16 PURE") already at llm-foundry@300cc5c
(2023-05-03), whose yamls also set attn_impl: triton and limit_all_gathers: true. Composer's FSDP
defaults are read at mosaicml/composer@28cc4ca (2023-10-13).

- Units: Composer wraps each block the model's `fsdp_wrap_fn` names (MPTBlock,
  llmfoundry/models/mpt/modeling_mpt.py:478) and the root FSDP instance keeps the rest (embedding, final
  norm; the output layer is the tied embedding, modeling_mpt.py:576): one gather per block per pass, one
  for the root. FSDP1 does not reshard the root after forward (torch `_runtime_utils._post_forward_reshard`).
- Sharding: yamls `sharding_strategy: FULL_SHARD` (ZeRO-3); SHARD_GRAD_OP (ZeRO-2), NO_SHARD (DDP) and
  HYBRID_SHARD (HSDP, Composer gates it on torch 2.1: composer#2656) also exist. Composer has no no_sync
  for FSDP (composer/trainer/trainer.py `_train_microbatches`: no_sync only for DDP): gradients are
  reduce-scattered after every micro-batch.
- Mixed precision: submit_benchmarks.py's `mod_parameters` default `fsdp_config_mixed_precision='DEFAULT'`
  with precision amp_bf16; Composer's DEFAULT is param_dtype bf16, reduce_dtype fp32, buffer bf16
  (composer/trainer/mosaic_fsdp_utils.py `get_mixed_precision`); the sharded flat parameter stays fp32,
  Adam keeps m and v (8 B). (Composer's PURE reduces in bf16: the layout's grad_reduce_in_fp32 = False.)
- Prefetch: Composer's defaults backward_prefetch BACKWARD_POST, forward_prefetch False
  (composer/trainer/dist_strategy.py:135, 138); the yamls set limit_all_gathers: true, which caps FSDP1
  at two all-gathers in flight (torch `_limiter_utils._FreeEventQueue`): two units unsharded at once.
- FlatParameter passes over HBM every micro-batch (cost/shard_copies.py).
- Attention: the yamls' `attn_impl: triton` (scripts/train/yamls/pretrain/mpt-*.yaml; submit_benchmarks.py
  `--attn_impl` default 'triton'), llm-foundry's copy of FlashAttention's Triton kernel
  (llmfoundry/models/layers/flash_attn_triton.py on triton-pre-mlir): kernels ATTENTION_KERNELS "triton".
- No tensor, pipeline or context parallelism in Composer 0.16 / llm-foundry v0.3; activation checkpointing
  per block (`activation_checkpointing_fn`, modeling_mpt.py:482).
"""

from planner.frameworks.base import Framework

LLM_FOUNDRY = Framework(
    name="llm-foundry",
    supports_tensor_parallel=False, supports_pipeline=False,
    zero_stages=frozenset({0, 2, 3}), replicated_dp_alone=True,
    # The pretraining yamls run `precision: amp_bf16` with fsdp_config `sharding_strategy: FULL_SHARD` (ZeRO-3)
    # (scripts/train/yamls/pretrain/gpt-neo-125m.yaml:90, 94; likewise every pretrain yaml).
    default_zero=3, default_dtype="bf16",
    offload_modes=frozenset({"optimizer+params"}),  # FSDP1 CPUOffload(offload_params=True)
    nvme_offload_zero_stages=frozenset(),  # CPUOffload: host memory, no NVMe target
    dtypes=frozenset({"bf16", "fp16", "fp8", "fp32"}),  # Composer precision amp_bf16 / amp_fp16 / amp_fp8 / fp32
    grad_bytes_bf16=4.0, grad_bytes_fp16=4.0, reduce_bytes_bf16=4.0, reduce_bytes_fp16=4.0,
    optimizer_bytes=8.0, sharded_param_bytes=4.0,
    shards_over_context_parallel=True,
    gathers_per_layer=1.0, gathers_outside_layers=1.0, units_in_flight=2.0, prefetches_next_unit=True,
    dp_comm_overlap_default=True, zero2_reduces_every_microbatch=True, param_gather_overlap=True,
    tp_comm_overlap_available=False, tp_comm_overlap_default=False, tp_comm_overlap_needs_sequence_parallel=False,
    p2p_overlap=False,
    supports_interleaving=False, supports_context_parallel=False, supports_offload=True,
    # llm-foundry's models have no multi-token prediction (mosaicml/llm-foundry: "mtp" only in an eval dataset helper).
    runs_multi_token_prediction=False,
    grad_bucket_elements=0.0, grad_bucket_bytes=25 * 2**20,  # PyTorch DDP's default 25 MiB (frameworks/other.py); not used (below)
    # FSDP1 reduces each FlatParameter in its unit's post-backward hook at every sharding strategy, NO_SHARD's
    # all-reduce included (torch v2.1 distributed/fsdp/_runtime_utils.py `_post_backward_hook` -> `_reduce_grad`,
    # `_reduce_grad_no_shard`), and SHARD_GRAD_OP all-gathers per unit before forward.
    per_unit_collectives_from_zero=0,
    eager_dispatch=True,
    attention_kernel_hopper="triton", attention_kernel_ampere="triton",
    output_unit_held=True,
    # HYBRID_SHARD all-reduces the reduce-scattered shard across replicas in each post-backward
    # (torch `_runtime_utils._reduce_grad`), every micro-batch (above).
    shard_groups=True, replica_reduce_every_microbatch=True,
    shard_copies="fsdp1-flat-parameter",
    # SHARD_GRAD_OP frees the unsharded parameters after backward (torch `_runtime_utils._post_backward_reshard`):
    # every micro-batch's forward all-gathers them again.
    zero2_gathers_every_microbatch=True,
    # Activation checkpointing wraps whole blocks (`activation_checkpointing_fn` returns isinstance(module, MPTBlock),
    # llm-foundry@b2a43a1 llmfoundry/models/mpt/modeling_mpt.py:482-483): full or none.
    recompute_modes=("none", "full"),
    # The loss: loss_fn 'fused_crossentropy' by default (mosaicml/llm-foundry@8c8dd48f llmfoundry/models/mpt/
    # modeling_mpt.py:1461, 1495-1503), flash-attn's Triton cross-entropy (v2.7.4.post1, setup.py:107) without
    # inplace_backward: it reads the 16-bit logits in place and saves them (flash_attn/ops/triton/cross_entropy.py:
    # 54-56, 245), keeps only per-token fp32 results, and its backward allocates a 16-bit gradient of the logits'
    # size (:261). Composer keeps state.outputs through backward (composer@4bfb5fc4 trainer.py:2927, 2991): 2 + 2
    # bytes per logit. Read, not measured (a GPU kernel); planner/profile/loss_memory.py measures the torch stacks.
    loss_bytes_per_logit=4.0,
    # Checkpoint: FSDP's fp32 flat parameters and Adam's m and v (module docstring): 4 + 8.
    checkpoint_bytes_per_param=12.0,
)
