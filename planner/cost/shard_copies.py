"""The HBM copies sharded data parallelism makes around its collectives, per implementation: what the
gathered weights, the gradients and the shards go through besides the all-gather and reduce-scatter
themselves. Pure, vectorised.

Each stack names its implementation (`Framework.shard_copies`, one of SHARD_COPY_RECIPES); a recipe gives
the HBM bytes per unsharded parameter element per micro-batch, with w the parameter (gather) dtype bytes,
r the reduce dtype bytes and N the sharding world. The copies are memory-bound and take the HBM time they
would take alone (assumed for those on FSDP's side streams: a concurrent elementwise kernel does not find
idle bandwidth beside a GEMM; FSDP2's run on the compute stream itself).

PyTorch FSDP1 (FullyShardedDataParallel with FlatParameter), pytorch/pytorch v2.1 (the torch of
mosaicml/llm-foundry@b2a43a1's benchmark image `mosaicml/pytorch:2.1.0_cu121`,
scripts/train/benchmarking/sweep.sh), torch/distributed/fsdp (function names; the repository is too large
to bring here for line numbers):
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
  The all-gather writes straight into the flat unsharded parameter the views read: no copy out.
- Shard (1/N of the unit), per element: the fp32 shard cast to the parameter dtype before each all-gather
  (`_use_low_precision_shard`: read 4, write w; forward and, with FULL_SHARD, backward), the post-divide
  after the reduce-scatter (read r, write r, when N / f > 1) and the accumulation into the saved gradient
  shard on every micro-batch after the first (`_accumulate_sharded_gradient`: read 2r, write r).

PyTorch FSDP2 (fully_shard, per-parameter sharding; torchtitan's FSDP), torch 2.13.0 as installed here,
torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py (line numbers of that file):
- Every all-gather copies its output out into the per-parameter unsharded tensors the module reads
  (`foreach_all_gather_copy_out` :431-518, `split_with_sizes_copy` :485-491, on the compute stream after
  the gather's wait): read w, write w per unsharded element, per gather (forward, and backward again when
  resharded after forward: ZeRO-3).
- Every reduction copies the unsharded gradients into the reduce-scatter buffer in the reduce dtype
  (`foreach_reduce` :603, `foreach_reduce_scatter_copy_in` :778-785, `torch._chunk_cat` with an output of
  reduce_dtype: the cast is the copy): read w, write r, whether or not the dtypes differ. No division pass
  for fp32 / bf16 reductions: NCCL's AVG does it (`_get_gradient_divide_factors` :812-870).
- Shard (1/N), per element and gather: the fp32 shard cast to the parameter dtype with mixed precision
  (`_get_param_all_gather_inputs` :382-428, `_foreach_copy_` into a flat param-dtype tensor: read 4, write
  w) and copied into the all-gather input (`all_gather_copy_in` :263-276: read w, write w); per reduction:
  the reduced shard cast back to the fp32 sharded dtype when the reduce dtype is narrower
  (`_to_dtype_if_needed(reduce_output, orig_dtype)`, :696: read r, write 4) and added into the saved fp32
  gradient on every micro-batch after the first (`sharded_param.grad._local_tensor += ...` :749: read 8, write 4).

FSDP2 under torch.distributed.pipelining (torchtitan with pp > 1, memory.unsharded_through_step: gathered once
a step, reduced once after the last micro-batch), per unsharded element and step: the one gather's copy-out
(read w, write w); each micro-batch's gradient kept unsharded in the reduce dtype, the first cast into it
(`to_accumulated_grad_if_needed`, torch 2.13 _fully_shard/_fsdp_param.py:802-813: read w, write r, when the
dtypes differ) and the later ones added to it (`accumulate_unsharded_grad_if_needed` :815-821, or autograd's
own accumulation when the dtypes agree: read r + w, write r); the one reduction's copy-in from the
accumulated gradient (read r, write r); the shard terms of one gather and one reduction.

DeepSpeed ZeRO-3 (DeepSpeed@38327e07, deepspeed/runtime/zero/stage3.py unless named), every micro-batch's
gradient reduction, on its reduce_and_partition_stream, per unsharded element:
- the gradient is copied into the contiguous bucket (`__add_grad_to_ipg_bucket` :1279-1288,
  `contiguous_gradients` default True, zero/config.py:98): read w, write w;
- cast to the communication dtype when it differs (`__avg_scatter_grads` :1376-1377): read w, write r;
- `reduce_scatter_coalesced` (runtime/comm/coalesced_collectives.py) interleaves the bucket's tensors by
  rank into one flat buffer (`torch.cat` :199; skipped only for a single tensor that divides evenly, and a
  bucket of 5e8 elements, zero/config.py:109, holds many) and pre-divides it in place (`div_` :201):
  read r, write r, twice;
- shard (1/N): cast back from the communication dtype (:1397-1398) and copied (first micro-batch) or added
  (later ones) into the fp32 gradient partition (`partition_grads` :1481-1487).
With ZeRO++'s qgZ the bucket's tensors go through `all_to_all_quant_reduce` instead (DeepSpeed 0.19.8
runtime/zero/stage3.py:1928-1931): each 2-D gradient is quantised straight from the bucket
(coalesced_collectives.py:53-75, whose kernels cost/hierarchy.py prices), with no interleave and no pre-divide;
only the 1-D ones, a negligible share of the elements, still take `reduce_scatter_coalesced` (:43-44). The
bucket copy, the cast and the shard terms stay (stage3.py:1918-1920, 1943-1944).
DeepSpeed ZeRO-2 (deepspeed/runtime/zero/stage_1_and_2.py at the same commit), every micro-batch's reduction
(its backward hooks), per element: the gradient copied into the contiguous bucket
(`reduce_independent_p_g_buckets_and_remove_grads` :960-963, `contiguous_gradients` default True) and divided in
place before the reduce (`average_tensor` :1122): read w, write w, twice; the rank's own partition copied into
its gradient buffer (`copy_grads_in_partition` :1359-1361, 1/N). ZeRO-1 runs the same once per step (under
0.1% of a step; not charged), and bf16 with fp32 accumulation at ZeRO-1 is the BF16_Optimizer
(frameworks/deepspeed.py `fp32_grad_accumulation_bytes`).
Not charged: the copy out of a coalesced all-gather (partition_parameters.py:707, `torch.cat` of the rank
partitions into each parameter), which runs only when one fetch gathers several parameters; a fetch of a
single parameter gathers into its own buffer (:1246-1267), and how many parameters each of the
prefetcher's calls holds is not modelled (cost/zero3_fetch.py, frameworks/deepspeed.py).
"""

from __future__ import annotations

import numpy as np

from planner.cost.hierarchy import quantized_gradient_rows
from planner.cost.memory import sharding_degree, unsharded_through_step
from planner.frameworks import FRAMEWORKS, FRAMEWORK_NAMES

SHARDED_PARAM_BYTES = 4.0  # FSDP1 and FSDP2 keep the sharded parameter (and its gradient) in fp32


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


def fsdp1_bytes_per_element(world, w, r, gathers_per_micro_batch, micro_batches) -> np.ndarray:
    """HBM bytes FSDP1 moves per unsharded parameter element per micro-batch (averaged over the step's
    micro-batches), with w the parameter (gather) dtype bytes, r the reduce dtype bytes, N = world."""
    world = np.asarray(world, dtype=float)
    pre = predivide_factor(world)
    unsharded = 2.0 * w + np.where(r != w, w + r, 0.0) + np.where(pre > 1.0, 2.0 * r, 0.0)
    accumulate = 3.0 * r * (micro_batches - 1.0) / micro_batches
    shard = (gathers_per_micro_batch * (SHARDED_PARAM_BYTES + w) + np.where(world / pre > 1.0, 2.0 * r, 0.0)
             + accumulate)
    return unsharded + shard / world


def _fsdp2_shard_casts(w, r):
    """FSDP2's shard casts per element: the fp32 shard to the gather dtype before a gather, the reduced shard back
    to fp32 after a reduction, each where the dtype is narrower (module docstring)."""
    cast_in = np.where(w < SHARDED_PARAM_BYTES, SHARDED_PARAM_BYTES + w, 0.0)
    cast_out = np.where(r < SHARDED_PARAM_BYTES, r + SHARDED_PARAM_BYTES, 0.0)
    return cast_in, cast_out


def fsdp2_bytes_per_element(world, w, r, gathers_per_micro_batch, micro_batches) -> np.ndarray:
    """HBM bytes FSDP2 moves per unsharded parameter element per micro-batch (averaged over the step's
    micro-batches): the copy out of every gather, the copy (and cast) into the reduce-scatter buffer, and the
    shard's casts, copy-in and accumulation (module docstring)."""
    world = np.asarray(world, dtype=float)
    unsharded = gathers_per_micro_batch * 2.0 * w + (w + r)
    cast_in, cast_out = _fsdp2_shard_casts(w, r)
    accumulate = 3.0 * SHARDED_PARAM_BYTES * (micro_batches - 1.0) / micro_batches
    shard = gathers_per_micro_batch * (cast_in + 2.0 * w) + cast_out + accumulate
    return unsharded + shard / world


def fsdp2_pipelined_bytes_per_element(world, w, r, micro_batches) -> np.ndarray:
    """HBM bytes FSDP2 under pipelining moves per unsharded parameter element per micro-batch (averaged over the
    step's micro-batches): one gather's copy-out, the unsharded gradient accumulation in the reduce dtype and
    one reduction's copy-in (module docstring)."""
    world = np.asarray(world, dtype=float)
    first_cast = np.where(r != w, w + r, 0.0)
    accumulate = (micro_batches - 1.0) * (2.0 * r + w)
    cast_in, cast_out = _fsdp2_shard_casts(w, r)
    per_step = 2.0 * w + first_cast + accumulate + 2.0 * r + (cast_in + 2.0 * w + cast_out) / world
    return per_step / micro_batches


def deepspeed_zero3_bytes_per_element(world, w, r, micro_batches, quantized_gradients=False) -> np.ndarray:
    """HBM bytes DeepSpeed ZeRO-3 moves per unsharded parameter element per micro-batch in its gradient
    reduction (module docstring): bucket copy, cast when the communication dtype differs, interleave and
    pre-divide (not with qgZ, `quantized_gradients`); on the shard, the cast back and the copy or add into the
    fp32 partition."""
    world = np.asarray(world, dtype=float)
    unsharded = 2.0 * w + np.where(r != w, w + r, 0.0) + np.where(quantized_gradients, 0.0, 4.0 * r)
    cast_back = np.where(r != w, r + w, 0.0)
    into_partition = (r + SHARDED_PARAM_BYTES) / micro_batches + (r + 2.0 * SHARDED_PARAM_BYTES) * (
        micro_batches - 1.0) / micro_batches
    return unsharded + (cast_back + into_partition) / world


def deepspeed_zero2_bytes_per_element(world, w) -> np.ndarray:
    """HBM bytes DeepSpeed ZeRO-2 moves per parameter element per micro-batch in its gradient reduction (module
    docstring): bucket copy and in-place divide, and the copy of the rank's partition."""
    return 4.0 * w + 2.0 * w / np.asarray(world, dtype=float)


def deepspeed_v02_zero2_bytes_per_element(world, w, micro_batches) -> np.ndarray:
    """HBM bytes DeepSpeed's ZeRO-2 of 2020 moves per parameter element per micro-batch: today's reduction copies
    (deepspeed_zero2_bytes_per_element: the same bucket copy, divide and partition copy, microsoft/DeepSpeed@e67a3def
    deepspeed/pt/deepspeed_zero_optimizer.py:592-597, 653, 682-686) and, once a step, the copy out of the parameter
    all-gather after the optimizer step: it gathers through the list-form `dist.all_gather` into the ranks' partition
    views (:1466-1475), which PyTorch's NCCL backend runs into a flat buffer and copies out to each output (pytorch/
    pytorch@00f5dfd5 torch/lib/c10d/ProcessGroupNCCL.cpp `ProcessGroupNCCL::allgather`, "Copy the flattened output
    tensors to the outputs"): read w, write w per element (frameworks/deepspeed_v02.py)."""
    return deepspeed_zero2_bytes_per_element(world, w) + 2.0 * w / np.asarray(micro_batches, dtype=float)


# ZeRO-3 gathers each unit twice per micro-batch (forward, and backward after resharding), ZeRO-2 once.
def _gathers(zero):
    return np.where(zero == 3, 2.0, 1.0)


# Framework.shard_copies names -> HBM bytes per unsharded parameter element per micro-batch, as a function of
# (world, zero stage, w, r, micro-batches, once: the rows that gather and reduce once a step,
# memory.unsharded_through_step; qgz: the rows reducing by ZeRO++'s qgZ), for the ZeRO stages the implementation
# shards with (None: no such copies).
SHARD_COPY_RECIPES = {
    "none": None,
    "fsdp1-flat-parameter": lambda world, zero, w, r, m, once, qgz: np.where(
        zero >= 2, fsdp1_bytes_per_element(world, w, r, _gathers(zero), m), 0.0),
    "fsdp2-per-parameter": lambda world, zero, w, r, m, once, qgz: np.where(
        zero >= 2, np.where(once, fsdp2_pipelined_bytes_per_element(world, w, r, m),
                            fsdp2_bytes_per_element(world, w, r, _gathers(zero), m)), 0.0),
    "deepspeed": lambda world, zero, w, r, m, once, qgz: np.select(
        [zero == 3, zero == 2],
        [deepspeed_zero3_bytes_per_element(world, w, r, m, qgz), deepspeed_zero2_bytes_per_element(world, w)], 0.0),
    "deepspeed-v0.2": lambda world, zero, w, r, m, once, qgz: np.where(
        zero == 2, deepspeed_v02_zero2_bytes_per_element(world, w, m), 0.0),
}


# Each stack's recipe, by framework code (the order of FRAMEWORK_NAMES).
_RECIPE_OF_STACK = tuple(SHARD_COPY_RECIPES[FRAMEWORKS[name].shard_copies] for name in FRAMEWORK_NAMES)


def seconds_per_step(batch, stack, w, r, params, m, hbm, gpus_per_node, world=None) -> np.ndarray | None:
    """Seconds per step of the copies on the `params` one GPU gathers (the stage's), for the candidates
    whose stack makes them, with sharded data parallelism over more than one rank; None when no stack of
    the batch makes any (the step then has no `shard_copies` part). `stack`: the batch's framework arrays;
    `gpus_per_node` tells the rows whose gradients take qgZ (hierarchy.quantized_gradient_rows); `world` the ranks
    the parameters are sharded over (the experts': their expert sharding group), the dense sharding degree if None."""
    codes = batch.framework.astype(int)
    present = np.flatnonzero(np.bincount(codes, minlength=len(FRAMEWORK_NAMES)))  # O(n), unlike np.unique
    recipes = [(code, _RECIPE_OF_STACK[code]) for code in present if _RECIPE_OF_STACK[code] is not None]
    if not recipes:
        return None
    world = sharding_degree(batch, stack) if world is None else world
    once = unsharded_through_step(batch, stack)
    qgz = quantized_gradient_rows(batch, gpus_per_node)  # qgZ's reduction, not the coalesced one
    seconds = np.zeros(len(batch))
    for code, recipe in recipes:
        rows = (world > 1) & (codes == code)
        if rows.any():
            seconds = np.where(rows, m * recipe(world, batch.zero, w, r, m, once, qgz) * params / hbm, seconds)
    return seconds
