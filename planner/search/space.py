"""The candidate space: model shapes x GPU counts x parallel layouts, enumerated as numpy arrays.

Model shapes come from the depth dial (`model.family_model`): depth in steps of 4, width = depth x
aspect ratio rounded to 128-wide heads, SwiGLU ffn rounded to 256, 8 kv heads once a model has 16+
heads (Llama-3 practice). GPU counts are whole nodes on a geometric grid, plus 1/2/4 GPUs inside a
node for small plans. Layouts: tp in {1, 2, 4, 8} (inside a node, dividing heads and kv heads), pp
dividing the depth, interleaving vpp in {1, 2}, ZeRO 0-3, optimizer offload (ZeRO-2/3), micro-batch
1-8, recompute none/selective/full, sequence parallelism whenever tp > 1 (same communication volume,
less memory). Everything is a cartesian product filtered with vector operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.model import ModelSpec, family_model

TP_CHOICES = (1, 2, 4, 8)
PP_CHOICES = (1, 2, 4, 8, 16, 32)
VPP_CHOICES = (1, 2)
MICRO_BATCH_CHOICES = (1, 2, 4, 8)
RECOMPUTE_CHOICES = (0, 1, 2)  # none, selective, full
# (zero stage, offload code): offload only where DeepSpeed supports it well (ZeRO-2/3 + CPU optimizer).
ZERO_OFFLOAD_CHOICES = ((0, 0), (1, 0), (2, 0), (3, 0), (2, 1), (3, 1))
ASPECT_RATIOS = (64, 96, 128)
DEPTHS = tuple(range(8, 161, 4))
NODE_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024,
             1536, 2048, 3072, 4096, 6144, 8192)
SUB_NODE_GPUS = (1, 2, 4)


def family_models(seq_len: int, vocab: int, n_min: float, n_max: float) -> list[ModelSpec]:
    """Family shapes whose total parameters fall in [n_min, n_max], smallest first, no duplicates."""
    models = {}
    for depth in DEPTHS:
        for aspect in ASPECT_RATIOS:
            model = family_model(depth, aspect, seq_len=seq_len, vocab=vocab)
            heads = model.heads
            kv = 8 if heads >= 16 and heads % 8 == 0 else heads
            model = model.model_copy(update={"kv_heads": kv, "name": f"d{depth}-w{model.hidden}"})
            if n_min <= model.total_params <= n_max:
                models[(model.layers, model.hidden)] = model
    return sorted(models.values(), key=lambda m: m.total_params)


def gpu_counts(gpus_per_node: int, max_nodes: int, exact: int | None, max_gpus: int | None,
               low: float = 1.0, high: float = np.inf) -> list[int]:
    """GPU counts to try: exact, or sub-node sizes plus whole nodes on a geometric grid within [low, high]."""
    if exact is not None:
        return [exact]
    counts = [g for g in SUB_NODE_GPUS if g < gpus_per_node]
    counts += [n * gpus_per_node for n in NODE_GRID if n <= max_nodes]
    limit = max_gpus if max_gpus is not None else np.inf
    kept = [g for g in counts if g <= limit and low <= g <= high]
    if not kept:  # keep the nearest feasible count so there is always something to explain
        kept = [max([g for g in counts if g <= limit] or [1])]
    return kept


@dataclass(frozen=True)
class Space:
    """Enumerated candidates: `model_index` into `models` plus one array per layout field."""

    models: list
    arrays: dict  # name -> np.ndarray (model_index, gpus, tp, pp, dp, vpp, zero, offload, micro_batch, recompute)
    skipped_invalid: int  # combinations that do not divide (never scored)

    def __len__(self) -> int:
        return len(self.arrays["tp"])


def enumerate_space(models: list[ModelSpec], gpu_options: list[int], gpus_per_node: int) -> Space:
    """Every valid (model, gpus, layout) combination, as flat arrays."""
    layers = np.array([m.layers for m in models])
    heads = np.array([m.heads for m in models])
    kv_heads = np.array([m.kv for m in models])
    zero_offload = np.arange(len(ZERO_OFFLOAD_CHOICES))
    grids = np.meshgrid(np.arange(len(models)), np.array(gpu_options), np.array(TP_CHOICES), np.array(PP_CHOICES),
                        np.array(VPP_CHOICES), zero_offload, np.array(MICRO_BATCH_CHOICES),
                        np.array(RECOMPUTE_CHOICES), indexing="ij")
    model_index, gpus, tp, pp, vpp, zo, micro, recompute = (g.reshape(-1) for g in grids)
    total = len(tp)
    L = layers[model_index]
    valid = (
        (tp <= gpus_per_node) & (heads[model_index] % tp == 0) & (kv_heads[model_index] % tp == 0)
        & (gpus % (tp * pp) == 0) & (L % (pp * vpp) == 0) & ((vpp == 1) | (pp > 1))
        # Interleaving only pays with several micro-batches; deep pipelines need enough layers.
        & (L >= pp * vpp)
    )
    zero = np.array([z for z, _ in ZERO_OFFLOAD_CHOICES])[zo]
    offload = np.array([o for _, o in ZERO_OFFLOAD_CHOICES])[zo]
    dp = np.where(valid, gpus // np.maximum(tp * pp, 1), 0)
    # ZeRO stages only differ when there is data parallelism to shard over.
    valid &= (dp > 1) | (zero == 0)
    keep = np.flatnonzero(valid)
    arrays = {
        "model_index": model_index[keep], "gpus": gpus[keep], "tp": tp[keep], "pp": pp[keep], "dp": dp[keep],
        "vpp": vpp[keep], "zero": zero[keep], "offload": offload[keep], "micro_batch": micro[keep],
        "recompute": recompute[keep],
    }
    return Space(models=models, arrays=arrays, skipped_invalid=int(total - len(keep)))
