"""DeepSpeed's ZeRO-2 of 2020 with the Megatron-LM fork of DeepSpeedExamples: the ZeRO paper's 100B runs.

The ZeRO paper (Rajbhandari et al., SC'20) ran its model-parallel sweeps with the Megatron-LM copy in
microsoft/DeepSpeedExamples (405ce794, 2020-03-31, "add hyperscale configs": Megatron-LM/scripts/hyperscale/*.dat,
run by ds_gpt_experiment_loop.sh) on the ZeRO stage 2 that DeepSpeed released as the squash "Squased dev zero (#14)"
(microsoft/DeepSpeed e67a3def, 2020-05-01) and tagged v0.2.0 (96c4daab, 2020-06-11). It differs from today's
`deepspeed` entry (DeepSpeed 0.19 with Megatron-DeepSpeed) in the model code's kernels, in how the partitioned
checkpoints are rebuilt, in the parameter all-gather's copies, and in what did not exist yet. Sources: DeepSpeedExamples
@405ce794 Megatron-LM/ (M below); DeepSpeed@e67a3def deepspeed/pt/ (D); today's deepspeedai/Megatron-DeepSpeed@4efb479d
megatron/ (MDS), for what the `deepspeed` entry's model code fuses:

- Attention scores (no FlashAttention, 2022): M mpu/transformer.py:117-130 computes Q K^T, then divides by
  sqrt(head dim) (:119-120), multiplies by the causal mask and subtracts 10000 x (1 - mask) (:122-123), softmax
  (:126) and dropout (:129-130), each its own PyTorch kernel over the [b, heads/tp, s, s] scores in fp16
  (the model is `.half()`, pretrain_gpt2.py:81-89; fp16/fp16.py:59-65). MDS scales inside the Q K^T GEMM
  (`torch.baddbmm(..., alpha=1/norm_factor)`, model/transformer.py:313-317) and masks inside the softmax kernel
  (FusedScaleMaskSoftmax, :274-280; its fused CUDA kernel for fp16, s <= 4096, fused_softmax.py:152-172;
  --no-masked-softmax-fusion turns it off, arguments.py:899-903). Softmax and dropout both stacks run and the
  `elementwise` term prices; beyond them the fork makes three out-of-place passes in forward (divide, mask multiply,
  subtract: read + write each, 6 accesses per score element) and two in backward (the multiply's and the divide's
  gradients, `grad * mask` and `grad / sqrt(d)`; the subtraction passes its gradient through: 4).
  `unfused_score_accesses_*`.
- Bias, dropout and residual of the attention output and of the MLP output (per [s, b, h] element): M adds the
  row-parallel bias after the all-reduce in a kernel of its own (mpu/layers.py:321-325), the dropout is
  torch.nn.Dropout (transformer.py:144, 203) and the residual adds are separate (:280, 286): bias add (read, write),
  dropout, residual add (read both, write). MDS passes the bias unadded (skip_bias_add=True, model/transformer.py:
  124, 639) to one TorchScript function, bias_dropout_add_fused_train (:880-901, --no-bias-dropout-fusion off by
  default, arguments.py:907-909), that reads x and the residual and writes the sum. Beyond it the fork writes and
  reads back the bias-added tensor and the dropout output: 4 accesses per site, 8 per layer.
  `unfused_hidden_accesses_forward`.
- The MLP's first bias: M's ColumnParallelLinear calls F.linear on the 3-D activation (mpu/layers.py:243), which
  in the PyTorch of 2020 adds the bias in place after the matmul (torch/nn/functional.py `linear`: addmm only for
  2-D input, else `output = input.matmul(weight.t()); output += bias`); the GeLU follows as a TorchScript function
  (transformer.py:149-156, 199). MDS adds that bias inside bias_gelu_impl (model/transformer.py:178; fused_bias_gelu.
  py). Beyond it: the in-place add, 2 accesses per [s, b, ffn/tp] element. The QKV bias is added apart in both
  (MDS core/tensor_parallel/layers.py:281-283). `unfused_ffn_accesses_forward`.
- Query, key and value copies: M views the [b, s, 3h/tp] QKV output as [b, heads/tp, s, head dim] by a permute
  (transformer.py:91-99, 112-114) and hands it to torch.matmul (:117-118, 134), which must reshape the permuted
  4-D operand to a 3-D batch and so copies each of q, k (transposed) and v: read + write, 2 accesses per
  [s, b, 3h/tp] element. MDS views them as [s, b x heads/tp, head dim] and passes strided operands to baddbmm and
  bmm (model/transformer.py:299-317, 360): no copy. `unfused_qkv_accesses_forward`.
  A recompute forward (full) runs all of the above again; LayerNorm is apex FusedLayerNorm in both (M transformer.
  py:22; MDS), GeLU and the attention context's permute-copy are the same, so they are not counted here.
- Partitioned checkpoints (the hyperscale runs' --partition-activations, config6_*.dat column 12) are M's own
  implementation (mpu/random.py; pretrain_gpt2.py:177-185 sets it up), not deepspeed.checkpointing: before each
  recompute `get_full_inputs` zero-fills a new flat buffer (torch.zeros, random.py:277-280), copies the rank's slice
  in (:285) and gathers with the list-form `dist.all_gather(partitions, ...)` into the buffer's per-rank views
  (:281-287), which PyTorch's NCCL backend runs into a flat buffer of its own and copies out to each output
  (pytorch/pytorch@00f5dfd5 torch/lib/c10d/ProcessGroupNCCL.cpp `ProcessGroupNCCL::allgather`, "Copy the flattened
  output tensors to the outputs"). Beyond the gather: 1 write (zeros) + 1 read + 1 write (copy-out) per element of
  the layer input, on the compute stream before the recompute: `checkpoint_gather_hbm_accesses` = 3. Not counted:
  the 1/tp slice copies (random.py:285 in backward; the partition's clone and its copy into the contiguous buffer in
  forward, :351, 365), 1/tp of the above each.
- ZeRO-2 (D deepspeed_zero_optimizer.py): gradients copied into the contiguous bucket (:592-597; the run's
  `contigious_gradients`, so spelt in D deepspeed_zero_config.py:65-66 and in pretrain_gpt2.py:167, default True;
  DeepSpeed renamed the key `contiguous_gradients` on 2020-05-15, 8f7322cd, so v0.2.0 would ignore the script's
  spelling), divided in place (:653) and reduced by one `dist.reduce` per destination rank (:655-666, the same bytes
  as a reduce-scatter), on the compute stream, with no overlap (D has no overlap_comm; v0.2.0 added it off by
  default, deepspeed_zero_config.py:50-51): as the `deepspeed` entry with its overlap off. After the step the fp16
  partitions are gathered in shards of allgather_bucket_size (:1440-1475) through the list-form all_gather, whose
  copy-out (above) is the one HBM pass today's ZeRO-2 does not make: shard_copies "deepspeed-v0.2"
  (planner.cost.shard_copies). Not modelled: its latency of one reduce per destination rank per bucket (dp calls
  instead of one: ~0.04 s in 13 buckets x 25 ranks for the 100B run) and the step's per-tensor host syncs (overflow
  check `float(x.float().sum())` :1535-1540, norm `.double().norm(2).item()` per tensor :1072), a few ms.
- Not there yet: the pipeline engine (65c2f974, 2020-09-09, v0.3.0), ZeRO-Offload (v0.3.0), ZeRO-3 (599258f9,
  2021-03-08), MoE (f2843244, 2021-08-17), bf16 (2021), ZeRO++ and MiCS; selective recompute (the fork's
  --checkpoint-activations checkpoints whole layers, arguments.py:105-109); sequence parallelism (2022), so
  partitioned checkpoints never meet it.
Everything else (memory, buckets, ZeRO-1/2 reduction, vocabulary padding to 128 x tp, pretrain_gpt2.py:616) is taken
as today's `deepspeed`. FlashAttention (2022) did not exist: the layouts of these runs set flash_attention 0.
The fork's --synchronize-each-layer and --profile-backward (config6_*.dat columns 15-16: torch.cuda.synchronize and
synchronising timers around each checkpointed layer, random.py:308-315, 429-433, 443-446, 504-508) idle the GPU for
the host's time between layers, some 0.1 ms a layer and pass (not modelled: ~0.03 s of a 30 s step).
"""

from dataclasses import replace

from planner.frameworks.deepspeed import DEEPSPEED

DEEPSPEED_V02 = replace(
    DEEPSPEED, name="deepspeed-v0.2", lineage="deepspeed",
    # cpu_checkpointing copies on the compute stream (base.py activation_offload_blocking; deepspeed_checkpointing.py
    # :409 at v0.2.0).
    activation_offload_blocking=True,
    # FlashAttention (Dao et al., 2022) came after this stack: its runs computed the whole score matrix.
    flash_attention_default=False,
    # The fork's unfused model code (module docstring), in accesses of one fp16 element per element touched.
    unfused_score_accesses_forward=6.0,  # divide, mask multiply, subtract (transformer.py:119-123)
    unfused_score_accesses_backward=4.0,  # the multiply's and the divide's gradients
    unfused_hidden_accesses_forward=8.0,  # bias add and separate residual add, after attention and after the MLP
    unfused_qkv_accesses_forward=2.0,  # torch.matmul's copies of the permuted q, k and v
    unfused_ffn_accesses_forward=2.0,  # F.linear's in-place bias add on the 3-D MLP activation
    checkpoint_gather_hbm_accesses=3.0,  # zero-fill + list-form all_gather's copy-out (random.py:277-287)
    shard_copies="deepspeed-v0.2",  # today's ZeRO-2 copies + the parameter all-gather's copy-out
    zero_stages=frozenset({0, 1, 2}),
    supports_pipeline=False, supports_offload=False,
    zeropp=False, shard_groups=False,
    dtypes=frozenset({"fp16", "fp32"}),
    default_dtype="fp16",
    fp32_grad_accumulation_bytes=0.0,  # no BF16_Optimizer
    recompute_modes=("none", "full"),
    partition_activations_with_sequence_parallel=False,
    # Each slice reduced to its owner (v0.2.0 pt/deepspeed_zero_optimizer.py:603-659, `dist.reduce`), before the
    # multi-rank bucket all-reduce of v0.12.4: a reduce-scatter's bytes.
    sharded_reduce_all_reduces=False,
    # The updated parameters all-gathered group by group in allgather_bucket_size shards (v0.2.0
    # pt/deepspeed_zero_optimizer.py:1149-1173, `num_shards`): one call per bucket, the default; no MoE yet.
    param_gather_calls=0.0, expert_param_group_elements=0.0,
)
