"""ZeRO (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
SC'20): 100B-parameter models on 400 V100s at over 15 PFLOP/s aggregate (over 38 TFLOP/s per GPU, ZeRO-2 with
Megatron model parallelism); models up to 13B train without model parallelism (ZeRO-2), up to 6B with ZeRO-1
(DeepSpeed docs/_tutorials/megatron.md:389-400@38327e07, the paper's abstract and Figure 2, reproduced in
DeepSpeed's docs/assets/images/zero-full.png: its bottom-right panel runs ZeRO-2 DP on 128 GPUs, the
"4.5 Pflops (aggregate)" line at 35 TFLOP/s per GPU; baseline DP points stop at 1.4B).

Hardware: 25 DGX-2 nodes (16 V100-SXM3-32GB, 8 x 100 Gb/s InfiniBand each): the dgx2-v100 spec.
The 100B run's configuration is the paper authors' own sweep file, microsoft/DeepSpeedExamples@405ce794
(2020-03-31, "add hyperscale configs") Megatron-LM/scripts/hyperscale/config6_25node.dat:1, whose columns
ds_gpt_experiment_loop.sh:27-58@405ce794 names: 25 nodes, model parallelism 16, 125 layers, hidden 8192,
64 heads, --batch-size 32 (lines 2-3: 48, 64), ZeRO stage 2 with reduce-scatter and contiguous gradients,
reduce bucket 5e8 and all-gather bucket 2e8 elements, partitioned activation checkpoints kept on the GPU,
contiguous checkpointing, one layer per checkpoint; sequence 1024, fp16, GPT-2 BPE vocabulary (:69-92). The
partitioned checkpoints are the layout's partition_activations (kept as 1/tp, all-gathered over tp before each
recompute: that copy's Megatron-LM/mpu/random.py:344-350, 287, the mechanism DeepSpeed's activation_checkpointing
module has, checkpointing.py:387-440, 276-306).
--batch-size is per data-parallel rank (configure_data.py:122-123 multiplies it by the data-parallel size) and
each step is one forward, backward and optimizer step (pretrain_gpt2.py:401-432; ds_zero_stage_2_config.json
gradient_accumulation_steps 1): micro-batch 32, global batch 800, one micro-batch per step. overlap_comm is
not set (pretrain_gpt2.py:165-169 writes only the keys above), so it is off (microsoft/DeepSpeed v0.2.0
deepspeed/pt/deepspeed_zero_config.py:50-51), as the deepspeed entry's default. The sibling
hyperscale/config7_*.dat files run the 60B model (75 x 8192) on 4-25 nodes, the paper's super-linear
scaling figure. Still assumed: which of the swept batch sizes gave the paper's figure (the loop stops at the
first out-of-memory run, ds_gpt_experiment_loop.sh:141-146, so 32, the first line, is the one sure to have
run), vocabulary 50257 (padded by the stack); the 6-15B models for the fit verdicts are GPT-2 shapes
(layers x hidden below) at micro-batch 1 and 4 (the figure does not give them). The paper's TFLOP/s are
Megatron's, which count the recompute forward: hfu x peak is compared.
The 100B run is timed on the stack that ran it, `deepspeed-v0.2` (frameworks/deepspeed_v02.py: that Megatron-LM
fork's unfused scale/mask, bias and residual kernels, its partitioned checkpoints rebuilt through a zero-filled
buffer and the list-form all-gather, DeepSpeed's ZeRO-2 of 2020), without flash attention (the fork computes the
whole s x s score matrix and its softmax with PyTorch ops, mpu/transformer.py:116-134@405ce794; FlashAttention is of
2022). Megatron's TFLOP/s count that whole square too, as hfu does without flash attention.
"""

from __future__ import annotations

import pytest

from planner.cost.estimate import simulate
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import make_model

V100 = load_cluster("dgx2-v100")
V100_FP16_PEAK = 125e12
# The fork's --attention-dropout and --hidden-dropout default to 0.1 (microsoft/DeepSpeedExamples@016a9b11
# Megatron-LM/arguments.py), which the ZeRO scripts keep: each layer keeps its dropout masks.
DROPOUT = 0.1


def _fits(layers: int, hidden: int, zero: int, micro_batch: int) -> bool:
    model = make_model(f"zero-{layers}x{hidden}", layers=layers, hidden=hidden, heads=hidden // 64, seq_len=1024,
                       vocab=50257, dropout=DROPOUT)
    layout = Layout(dp=128, zero=zero, framework="deepspeed", dtype="fp16", recompute="full",
                    micro_batch=micro_batch, global_batch=128 * micro_batch)
    return bool(simulate(model, layout, V100)["fits"])


# (layers, hidden, ~params, ZeRO stage, fits, micro-batch): "ZeRO-2 ... up to 13 billion parameters ... without
# any model parallelism", "ZeRO-1 supports up to 6 billion parameters" (megatron.md:400); 8B and 15B just beyond
# (this project's brackets, not the paper's figures). 15B at ZeRO-2 with one sequence: the test below.
VERDICTS = [(62, 4096, "13B", 2, True), (62, 4096, "13B", 1, False), (62, 4096, "13B", 0, False),
            (64, 2816, "6B", 1, True), (72, 3072, "8B", 1, False)]


@pytest.mark.parametrize("layers, hidden, size, zero, fits, micro_batch",
                         [(*verdict, micro_batch) for verdict in VERDICTS for micro_batch in (1, 4)]
                         + [(72, 4096, "15B", 2, False, 4)])
def test_largest_model_without_model_parallelism(layers, hidden, size, zero, fits, micro_batch):
    assert _fits(layers, hidden, zero, micro_batch) is fits


def test_15b_at_zero_2_with_one_sequence_sits_at_the_edge_of_the_32_gb():
    """15B at ZeRO-2 on 128 V100s with micro-batch 1 and full recompute: its activations (0.8 GB) are smaller than
    the gradients and their fp32 copy that DeepSpeed frees after every step (frameworks/deepspeed.py; the same in
    v0.2.0, pt/deepspeed_zero_optimizer.py:930, 1126), so the optimizer step holds the peak and the model puts it
    within 2% of the 32 GB, where no source settles the verdict (fragmentation decides it; the paper states only
    "up to 13 billion"). Before the phase was modelled it was 0.8% over, then 1.3% under, now 1.0% under (the loss
    charged Megatron-DeepSpeed's 6 bytes per logit, frameworks/deepspeed.py): held within 2% either way."""
    model = make_model("zero-72x4096", layers=72, hidden=4096, heads=64, seq_len=1024, vocab=50257, dropout=DROPOUT)
    layout = Layout(dp=128, zero=2, framework="deepspeed", dtype="fp16", recompute="full", micro_batch=1,
                    global_batch=128)
    memory = simulate(model, layout, V100)["memory"]
    assert memory["total_bytes"] == pytest.approx(memory["hbm_bytes"], rel=0.02)
    assert memory["not_live_at_peak_bytes"] > 0


@pytest.mark.xfail(strict=True, reason="fits now that its partitioned checkpoints are priced (--partition-activations: "
                                       "each layer's 537 MB input kept as 1/16; 26.7 GB in all against 34.4 GB: 26.5 "
                                       "before the loss was charged its stack's 6 bytes per logit, 28.0 before the "
                                       "step's own states left the activation peak), but the "
                                       "timed step on the 2020 stack (deepspeed-v0.2, no flash attention) gives 48.1 "
                                       "TF/GPU = 19.2 PF on 400 vs the paper's 15 PF: +28.2%, with the V100 GEMMs at the "
                                       "DeepBench-derived 0.808 of peak (docs/gemm_ceiling.md), the EDR NICs at the "
                                       "NCCL maintainers' 12 of 12.5 GB/s and the DGX-2's NVSwitch at its measured "
                                       "nccl-tests busbw (0.824, cluster_specs/dgx2-v100.yaml; 47.2 TF/GPU, +25.9%, at the "
                                       "assumed 0.75 there; 45.7, +22.0%, at 0.75 for the NICs too). Of the 35.1 s step: the "
                                       "fork's unfused scale/mask, bias and residual kernels 2.74 s (unfused_elementwise), "
                                       "the checkpoint rebuilds 0.84 s (about a third of it their zero-fill and list-form "
                                       "copy-out), tp all-reduces 6.23 s (6.83 s at the assumed 0.75), "
                                       "ZeRO-2 reduce exposed 4.06 s. Today's `deepspeed` with flash attention (the "
                                       "earlier timing): 52.8 TF/GPU = 21.1 PF, +40.8%; without it 51.7 TF/GPU, +37.8%")
def test_100b_on_400_v100s_at_15_petaflops():
    model = make_model("zero-100b", layers=125, hidden=8192, heads=64, seq_len=1024, vocab=50257, dropout=DROPOUT)
    layout = Layout(tp=16, dp=25, zero=2, framework="deepspeed-v0.2", dtype="fp16", recompute="full", micro_batch=32,
                    global_batch=800, partition_activations=True, flash_attention=False)
    result = simulate(model, layout, V100)
    assert result["fits"]
    aggregate = result["hfu"] * V100_FP16_PEAK * layout.gpus
    assert aggregate == pytest.approx(15e15, rel=0.15)
