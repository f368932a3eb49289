"""Megatron-LM as released from v2.0 (January 2021) until its pipeline code moved into Megatron-Core (2023-01-31).

The runs of Narayanan et al. (SC21, arXiv 2104.04473: their `examples/sc21` scripts landed as de7dc40f,
2021-08-10, tag v2.5) and Korthikanti et al. (arXiv 2205.05198, May 2022: sequence parallelism and selective
recompute, bbab79f8 of 2022-05-16) used this code. It differs from today's `megatron` entry in how the pipeline
stages talk and in what did not exist yet. Sources: NVIDIA/Megatron-LM at v2.5 (e269e200, 2021-08-10) and at
285068c8 (2023-01-11, the last commit before the move into core), files under megatron/:

- Pipeline sends block, then the device synchronises. `_communicate` issues its sends and receives as one
  `batch_isend_irecv`, waits on every request and calls `torch.cuda.synchronize()` (v2.5 p2p_communication.py:
  126-130; 285068c8 :227-231, "To protect against race condition when using batch_isend_irecv()"): nothing of
  the schedule runs while a transfer is in flight, with or without interleaving. `overlap_p2p_comm` came with
  f9283c5a (2023-05-31) and became the default with 4eeff55d (2023-10-12): today's `megatron` entry.
- Scatter/gather of pipeline tensors, on by default since 72e4230b (2021-02-16; `--no-scatter-gather-tensors-in-
  pipeline` turns it off, v2.5 arguments.py:585-587): each tp rank sends 1/tp of the activation
  (`split_tensor_into_1d_equal_chunks`, v2.5 p2p_communication.py:91-94) and the receiving stage all-gathers
  it over tp before it computes (`gather_split_1d_tensor`, :136-140), after the synchronize above: exposed; the
  activation in forward and the gradient in backward, two gathers per micro-batch (the sender keeps its output).
  With sequence parallelism the tensor is already sharded and neither happens (285068c8 :150, 190, 236).
  Megatron-Core dropped the scatter/gather when it took the pipeline code over (39b83c79, 2023-01-31).
- The interleaved schedule asserts that the step's micro-batches are a multiple of pp (v2.5 schedules.py:35;
  285068c8 :26); Megatron-Core later asked only for at least pp.
- Gradients: one all-reduce per dtype of the contiguous gradient buffer after the last micro-batch (v2.5
  model/distributed.py:188-197), never overlapped with backward; bf16 forces fp32 accumulation and reduction
  (v2.5 arguments.py:143-152), fp16 keeps them in fp16: as today's entry with its overlaps off. No reduction
  starts chunk by chunk (that came with --overlap-grad-reduce in Megatron-Core). The distributed optimizer
  (ZeRO-1) reduce-scatters after backward and all-gathers the parameters after its step, both blocking
  (285068c8 training.py:425, 440; optimizer/distrib_optimizer.py:536-584, 586-620): no overlap with backward or
  the next forward, so dp_comm_overlap is refused at ZeRO-1. At ZeRO-0, `--DDP-impl torch` (PyTorch DDP's
  bucketed all-reduce during backward, v2.5 arguments.py:607) overlaps; the local DDP, the default, does not.
- fp16 gradients accumulate over the micro-batches in a pass of their own. No weight-gradient GEMM accumulated in
  place before gradient_accumulation_fusion (83b1e42f, 2022-02-13), and that fusion ran only with fp32 main
  gradients (it switched itself off otherwise, 83b1e42f arguments.py) until 07916bf2 (2022-09-27) taught it fp16. So
  the SC21 fp16 runs (v2.5, `--DDP-impl local` without `--use-contiguous-buffers-in-ddp`, examples/sc21/CONFIG.sh;
  v2.5 training.py:253-256, model/distributed.py:124, 196-218) let autograd add each micro-batch's fp16 weight gradient into `.grad`:
  `optimizer.zero_grad()` sets it to None (v2.5 training.py:354-358, optimizer/optimizer.py:33-39, 283-294),
  AccumulateGrad steals the first micro-batch's gradient and adds `grad += new_grad` in place after it
  (pytorch/pytorch@035290b7 torch/csrc/autograd/functions/accumulate_grad.h:76-83): 2 + 2 bytes read and 2 written
  per parameter on each micro-batch after the first (`unfused_16bit_grad_accumulation_bytes`, the step's
  `grad_accumulation` part). With bf16, gradients accumulate in fp32 (v2.5 arguments.py:143-152) and are taken as
  the 2022 code fused them into the GEMM: no pass. Not priced: v2.5's bf16 runs (before the fusion) added
  into the fp32 main_grad after every micro-batch (distributed.py:171-176, 4 + 2 read, 4 written), and the fp16
  runs of the window's last four months had the fusion; from e8fb052f (2021-08-18) the contiguous buffer's hook
  made the add on the first micro-batch too (one pass more per step).
- Not there yet: Transformer Engine and its TP overlap (2023), fp8, context parallelism (2023), Megatron-FSDP
  (ZeRO-2/3-style sharding); the distributed optimizer (ZeRO-1, 329fe582 of 2022-02-10) was. Mixture-of-experts
  layers came with Megatron-Core (frameworks/moe.py).
Everything else (memory, vocabulary padding, recompute modes, partitioned checkpoints as
`--distribute-checkpointed-activations`, v2.5 arguments.py:413) is taken as today's `megatron`. FlashAttention
came at the end of this window (--use-flash-attn, d693034e of 2022-12-08), so it is not refused; the layout's
flash_attention (on unless set, as for every stack) decides, and the published rows of these papers set it 0.
"""

from dataclasses import replace

from planner.frameworks.megatron import MEGATRON

MEGATRON_2022 = replace(
    MEGATRON, name="megatron-2022", lineage="megatron",
    # Multi-token prediction came with Megatron-Core long after (no --mtp-num-layers at core_r0.9.0, 2024).
    runs_multi_token_prediction=False,
    # The end ranks' layers became settable with Megatron-Core (--decoder-first/last-pipeline-num-layers); Megatron-LM
    # of 2021-22 asserted that pp divides the layers.
    sets_end_stage_layers=False,
    runs_fp8_param_gather=False,  # fp8 parameters came with Megatron-Core too (and this stack has no fp8)
    fp8_keeps_quantised_linear_inputs=False,  # no Transformer Engine (no fp8 at all)
    p2p_overlap=False,
    # No fused cross-entropy yet (Megatron-LM's --cross-entropy-loss-fusion came with Megatron-Core, after 2022); the
    # loss is `vocab_parallel_cross_entropy(output.float(), labels)`, in place since 57064fd6 (2020-03-10): 6 bytes
    # per logit, as Megatron-Core's unfused loss (profiles/loss-memory-cpu.json, recipe megatron-vocab-parallel-upcast).
    fused_loss_bytes_per_logit=0.0,
    p2p_scatter_gather=True, p2p_gathers_per_microbatch=2.0,  # received activation and gradient (docstring)
    interleaving_needs_pp_multiple=True,
    unfused_16bit_grad_accumulation_bytes=6.0,  # autograd's `grad += new_grad` in fp16 (module docstring)
    fp32_grad_reduce_forced_dtypes=frozenset({"bf16"}),  # v2.5 arguments.py:143-152 (module docstring)
    tp_comm_overlap_available=False,
    param_gather_overlap=False, dp_reduce_per_model_chunk=False, reduce_overlaps_when_sharded=False,
    supports_context_parallel=False,
    dtypes=frozenset({"bf16", "fp16", "fp32"}),
    zero_stages=frozenset({0, 1}),
)
