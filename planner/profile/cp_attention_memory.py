"""What torch's context-parallel attention holds beyond the attention kernel's own, measured.

    python -m planner.profile.cp_attention_memory --out profiles/cp-attention-memory-cpu.json

torchtitan's context parallelism runs torch's ring attention with its default rotate method "allgather"
(torch 2.13 distributed/tensor/experimental/_context_parallel/_attention.py; frameworks/fsdp.py). Its backward
(`_templated_ring_attention_backward`, :488-650) keeps, while one layer's attention backward runs: fp32 accumulators
for dQ, dK and dV (`convert_to_f32`, :75, :512-515), the whole K, V gathered from every cp rank (`_AllGatherRotater`,
:273-300), the local K, V concatenated for the send (:533), and the K/V gradients concatenated in fp32 and rotated
around the ring with a permute whose output is a buffer of the same size (`_AllToAllRotater`, :253-270; :626-628).
The cost model charges that, on top of the activations, as the "cp_attention_buffers" part (cost/memory.py).

How: the same counter as profile/loss_memory.py (torch's profiler memory events, every allocation and free with its
size) around torch's own `_templated_ring_attention_backward`, run in one process for each cp rank of a group of
`cp` ranks. The collectives are replaced by what NCCL's leave allocated: the all-gather's output (the local buffer
`cp` times) and the permute's (a buffer of the input's size); no data moves, so the numbers are garbage and the
allocations are torch's. The attention kernel is the CPU flash kernel
(`aten._scaled_dot_product_flash_attention_for_cpu_backward`), and its own peak, measured alone on the same
tensors, is subtracted: what remains is what the context-parallel code adds around the kernel, whichever kernel runs
(the CUDA flash kernel's own workspace is not charged for any stack). With load balancing the ring's peak can fall
inside a call on half the K/V (ranks >= 1), whose own peak is lower than the whole call's subtracted: there the figure
understates the code's buffers by up to half the local K + V. With causal masking and load balancing, as
torchtitan runs it; every rank measured, the largest kept.

The fit: extra = a x (local Q bytes) + (b x cp + e) x (local K + V bytes), all in the 16-bit activations' bytes, by
least squares over query/key-value head shapes (multi-head and grouped) and cp sizes. Imports only torch, numpy
and the standard library.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys

from planner.profile.loss_memory import allocation_trace, one_rank_group

# Shapes measured: (query heads, key/value heads), cp sizes, and the local sequence and head dim. The CPU kernel's
# own workspace does not grow with the tensors at short sequences, so its subtracted peak distorts the fit there (at
# 256 tokens: 2.19 Q + (cp + 7.5) K/V); from 1,024 tokens on it is 3.00 Q + (cp + 7.50) K/V (2,048: 2.99, 7.51).
HEAD_SHAPES = ((8, 8), (8, 4), (8, 2))
CP_SIZES = (2, 4, 8)
LOCAL_SEQ = 1024
HEAD_DIM = 64


@contextlib.contextmanager
def _emulated_group(attention_module, cp: int, rank: int):
    """torch's context-parallel code as rank `rank` of `cp` ranks, its collectives leaving NCCL's allocations."""
    import torch

    dist, ft_c = attention_module.dist, attention_module.ft_c
    saved = (dist.get_rank, dist.get_world_size, ft_c.all_gather_single, ft_c.permute_tensor)
    dist.get_rank = lambda group=None: rank
    dist.get_world_size = lambda group=None: cp
    ft_c.all_gather_single = lambda buffer, gather_dim=0, group=None: torch.cat([buffer] * cp)
    ft_c.permute_tensor = lambda buffer, dsts, group=None: buffer.clone()
    try:
        yield
    finally:
        dist.get_rank, dist.get_world_size, ft_c.all_gather_single, ft_c.permute_tensor = saved


def backward_extra_bytes(cp: int, rank: int, heads: int, kv_heads: int) -> dict:
    """Peak bytes torch's context-parallel attention backward allocates on rank `rank` of `cp`, less the attention
    kernel's own peak on the same tensors, with the local Q and K + V bytes."""
    import torch
    from torch.distributed.tensor.experimental._context_parallel import _attention

    forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
    backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default
    torch.manual_seed(rank)
    query = torch.randn(1, heads, LOCAL_SEQ, HEAD_DIM, dtype=torch.bfloat16)
    key, value = (torch.randn(1, kv_heads, LOCAL_SEQ, HEAD_DIM, dtype=torch.bfloat16) for _ in range(2))
    out, logsumexp = forward(query, key, value, is_causal=True)[:2]
    grad_out = torch.randn_like(query)
    results = []
    with one_rank_group() as group, _emulated_group(_attention, cp, rank):
        ring = allocation_trace(lambda: results.append(_attention._templated_ring_attention_backward(
            group, 2, backward, grad_out, "grad_out", query, key, value, out, logsumexp, True, dropout_p=0.0)))
        kernel = allocation_trace(lambda: results.append(
            backward(grad_out, query, key, value, out, logsumexp, 0.0, True)))
    return {"extra": ring["peak"] - kernel["peak"], "q_bytes": query.numel() * 2,
            "kv_bytes": (key.numel() + value.numel()) * 2}


def measure() -> dict:
    """Every shape and cp size (the largest rank each), and the least-squares fit of the module docstring."""
    import numpy as np

    rows = []
    for heads, kv_heads in HEAD_SHAPES:
        for cp in CP_SIZES:
            ranks = [backward_extra_bytes(cp, rank, heads, kv_heads) for rank in range(cp)]
            rows.append({"heads": heads, "kv_heads": kv_heads, "cp": cp, **max(ranks, key=lambda r: r["extra"])})
    design = np.array([[r["q_bytes"], r["cp"] * r["kv_bytes"], r["kv_bytes"]] for r in rows], dtype=float)
    extra = np.array([r["extra"] for r in rows], dtype=float)
    (q_multiple, cp_slope, kv_extra), *_ = np.linalg.lstsq(design, extra, rcond=None)
    worst = float(np.max(np.abs(design @ [q_multiple, cp_slope, kv_extra] - extra) / extra))
    return {"fit": {"q_bytes_multiple": round(float(q_multiple), 3), "kv_bytes_per_cp_rank": round(float(cp_slope), 3),
                    "kv_bytes_extra": round(float(kv_extra), 3), "worst_relative_residual": round(worst, 4)},
            "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m planner.profile.cp_attention_memory", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--out", metavar="FILE.json", help="write the report here (default: print it)")
    args = parser.parse_args(argv)
    import torch

    report = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
              "local_seq": LOCAL_SEQ, "head_dim": HEAD_DIM, **measure()}
    text = json.dumps(report, indent=1) + "\n"
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
