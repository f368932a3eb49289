"""PyTorch FSDP1's FlatParameter passes over HBM, per micro-batch: what the gradient and the shard go
through besides the all-gather and reduce-scatter themselves. Pure, vectorised.

Source: pytorch/pytorch v2.1 (the torch of mosaicml/llm-foundry@b2a43a1's benchmark image
`mosaicml/pytorch:2.1.0_cu121`, scripts/train/benchmarking/sweep.sh), torch/distributed/fsdp (function names;
the repository is too large to bring here for line numbers):

- Unsharded gradient, every micro-batch's backward of every unit (sharded strategies), per element:
  * assembly: the module's parameters are views of the flat parameter (`FlatParamHandle._use_unsharded_views`,
    split + view), so autograd builds `flat_param.grad` by copying the per-parameter gradients into one
    flat tensor (the backward of `split`): read w, write w;
  * `_post_backward_hook` casts it to the reduce dtype when that differs from the parameter dtype
    (`flat_param.grad.to(handle._reduce_dtype)`, Composer mixed_precision DEFAULT: bf16 -> fp32,
    composer `mosaic_fsdp_utils.get_mixed_precision`): read w, write r;
  * `_reduce_grad` divides it in place by the pre-divide factor before the reduce-scatter
    (`_div_if_needed(padded_unsharded_grad, state._gradient_predivide_factor)`), factor > 1 unless the
    world size is 1 (`_get_gradient_predivide_factor`: doubles while N % f == 0 and N / f > f): read r, write r.
- Shard (1/N of the unit), per element: the fp32 shard cast to the parameter dtype before each all-gather
  (`_use_low_precision_shard`: read 4, write w; forward and, with FULL_SHARD, backward), the post-divide
  after the reduce-scatter (read r, write r, when N / f > 1) and the accumulation into the saved gradient
  shard on every micro-batch after the first (`_accumulate_sharded_gradient`: read 2r, write r).

The passes run on FSDP's post-backward / unshard streams beside the compute stream's kernels; they are
memory-bound and take the HBM time they would take alone (assumed: a concurrent elementwise kernel does
not find idle bandwidth beside a GEMM).
"""

from __future__ import annotations

import numpy as np

SHARDED_PARAM_BYTES = 4.0  # FSDP1 keeps the sharded flat parameter in fp32 (DEFAULT and PURE)


def predivide_factor(world) -> np.ndarray:
    """FSDP1's gradient pre-divide factor for a world of N ranks (`_get_gradient_predivide_factor`)."""
    world = np.asarray(world, dtype=float)
    factor = np.ones_like(world)
    for _ in range(64):  # doubles at most log2(N) times
        grow = (np.mod(world, factor) == 0) & (world / factor > factor)
        if not grow.any():
            break
        factor = np.where(grow, factor * 2.0, factor)
    return factor


def hbm_bytes_per_element(world, w, r, gathers_per_micro_batch, micro_batches) -> np.ndarray:
    """HBM bytes FSDP1 moves per unsharded parameter element per micro-batch (averaged over the step's
    micro-batches), with w the parameter (gather) dtype bytes, r the reduce dtype bytes, N = world."""
    world = np.asarray(world, dtype=float)
    pre = predivide_factor(world)
    unsharded = 2.0 * w + np.where(r != w, w + r, 0.0) + np.where(pre > 1.0, 2.0 * r, 0.0)
    accumulate = 3.0 * r * (micro_batches - 1.0) / micro_batches
    shard = (gathers_per_micro_batch * (SHARDED_PARAM_BYTES + w) + np.where(world / pre > 1.0, 2.0 * r, 0.0)
             + accumulate)
    return unsharded + shard / world


def seconds_per_step(batch, fw, w, r, params, m, hbm) -> np.ndarray:
    """Seconds per step of the flat-parameter passes on the `params` one GPU gathers (the stage's), for the
    candidates whose stack has them (`flat_param_passes`) with sharded data parallelism (ZeRO 2 or 3)."""
    world = batch.dp * batch.cp
    on = (fw["flat_param_passes"] > 0) & (world > 1) & (batch.zero >= 2)
    gathers = np.where(batch.zero == 3, 2.0, 1.0)  # FULL_SHARD gathers again for backward; SHARD_GRAD_OP does not
    per_micro_batch = hbm_bytes_per_element(world, w, r, gathers, m) * params / hbm
    return np.where(on, m * per_micro_batch, 0.0)
