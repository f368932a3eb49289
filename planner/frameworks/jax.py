"""JAX / XLA stacks (MaxText, Pax).

Sources: AI-Hypercomputer/maxtext@e591f30c (B = src/maxtext/configs/base.yml, G = src/maxtext/configs/gpu/).
- Weights sharded over the fsdp mesh axis are gathered per layer inside the scanned layer loop
  (`scan_layers: true`, B:387), and XLA's latency-hiding scheduler overlaps the gather with the previous
  layer's compute; gradients are reduce-scattered per layer in the same way (the GPU recipes turn on
  `--xla_gpu_enable_latency_hiding_scheduler` and pipelined all-gather / reduce-scatter, G/a3/llama_3.1_405b/
  128vm.sh:25-33).
- Parameters and optimizer state are kept in fp32 by default (`weight_dtype: float32`, B:174; Adam's mu
  inherits it, B:993), gradients in fp32 (`grad_dtype: float32`, B:111); activations and gathered weights in
  bf16 (`dtype: bfloat16`, B:114).
- Attention on GPU: the GPU model configs set `attention: "cudnn_flash_te"` (G/models/llama3_8b.yml:25,
  llama3_70b.yml:25, llama2_7b.yml:10, mixtral_8x7b.yml:25; the 405B script :43), cuDNN's fused attention
  through Transformer Engine. (The base default `autoselected` runs a Pallas Triton kernel on GPU,
  src/maxtext/layers/attention_op.py:1439-1497.)
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
    # XLA combines the gradients' collectives up to a byte threshold that MaxText's GPU recipes set: 128 MiB for
    # reduce-scatter (G/a3/llama_3.1_405b/128vm.sh:29, llama_2_7b/*vm.sh) and 1 GiB for all-reduce (:28); the
    # reduce-scatter's, in bytes of the gradients' reduction dtype (fp32, B:111), for both: at either size a call's
    # latency is small.
    grad_bucket_elements=0.0, grad_bucket_bytes=134217728,
    eager_dispatch=False,
    attention_kernel_hopper="cudnn",  # cudnn_flash_te in MaxText's GPU configs (module docstring)
    # remat_policy (B:355-358): 'full', 'none', and 'minimal', which saves every named projection output except the
    # attention's context (src/maxtext/layers/decoders.py:357-359), i.e. recomputes the attention core: selective.
    recompute_modes=("none", "selective", "full"),
    # Checkpoint (Orbax): the train state's fp32 parameters (B:174) and Adam's mu and nu (B:993): 4 + 8.
    checkpoint_bytes_per_param=12.0,
)
