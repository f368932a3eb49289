"""Cost model: pure, numpy-vectorised functions from (model, layout, cluster) to memory and time.

memory.py       bytes per GPU as each framework holds them (weights, grads, optimizer, activations,
                CUDA context, NCCL buffers, fragmentation) and host/NVMe bytes
collectives.py  NCCL's tuner model (ring / tree / NVLS / PAT x LL / LL128 / Simple) on the links a group crosses;
                the all-to-all as NCCL's grouped per-peer sends
moe.py          mixture-of-experts layers: expert GEMMs, router, dispatch/combine all-to-all, expert states
kernels.py      published kernel data: fused-attention efficiencies, launch floor, fp8 cast bytes
gemm.py         what one rank computes at: peak FLOP/s per dtype, rank share, HBM, GEMM efficiency over size
fused_attention.py  which fused-attention kernel a candidate runs on its GPU, its peak and table efficiency
overlap.py      exposed seconds of communication beside compute (schedule, chunks, calibrated residual)
groups.py       process groups -> the links they cross; collectives run only on the rows that need them
model_parallel_comm.py  tensor-, context- and pipeline-parallel communication per layer and micro-batch
stages.py       the pipeline stage split: first, middle, last stage and the data-parallel stage
data_parallel.py  ZeRO/FSDP gathers and reductions, gradient reduction, parameter all-gather, experts' reduction
optimizer_step.py  Adam on HBM or CPU-Adam with its copies; fp32 gradient accumulation
layer_compute.py  one dense layer's compute per micro-batch: GEMMs, attention core, elementwise, fp8 casts, issue
step_time.py    seconds per optimizer step as named parts: a per-layer schedule of compute and overlapped comm
hierarchy.py    ZeRO-3 under ZeRO++ (hpZ, qwZ, qgZ) and MiCS / HSDP / gradient groups: times, cross-node bytes
offload.py      ZeRO-Infinity's parameter fetch and activation-checkpoint copies during the passes
infer.py        settings a run leaves unstated -> the fastest that fits
goodput.py      failures, checkpoints, restarts
evaluation.py   the launch files' evaluation passes as a share of training time
estimate.py     memory + time for a batch; `simulate` on a batch of one
distinct.py     a part of the model evaluated once per distinct combination of the columns it reads, spread back
efficiency_sweep.py  step times of a batch under several efficiency settings in one call (calibration's fits)
"""
