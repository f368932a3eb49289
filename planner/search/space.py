"""The candidate space: model shapes x GPU counts x parallel layouts, enumerated as numpy arrays.

Model shapes come from the depth dial (`model.family_model`): depth in steps of 4, width = depth x
aspect ratio rounded to 128-wide heads, SwiGLU ffn rounded to 256, 8 kv heads once a model has 16+
heads (Llama-3 practice). GPU counts are whole nodes on a geometric grid, plus 1/2/4 GPUs inside a
node for small plans. Layouts: tp in {1, 2, 4, 8} (inside a node, dividing heads and kv heads), pp
dividing the depth, interleaving vpp in {1, 2}, context parallelism cp in {1, 2}, ZeRO 0-3 (0-1 with
pipelining), optimizer offload (ZeRO-2/3), micro-batch 1-8, recompute none/selective/full, sequence
parallelism on or off when tp > 1. Flat ZeRO-3 layouts whose data-parallel group spans nodes are also tried
with the ZeRO-3 hierarchy (LOSSLESS_HIERARCHY: ZeRO++ hpZ, a node-sized MiCS / HSDP shard group; with
--quantized-comm also hpZ + qwZ + qgZ), as the fixed-model search tries them, where the searched stack
(planner.frameworks "other") runs them. Everything is a cartesian product filtered with vector operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.frameworks import FRAMEWORKS
from planner.specs.model import ModelSpec, family_model

TP_CHOICES = (1, 2, 4, 8)
PP_CHOICES = (1, 2, 4, 8, 16, 32)
VPP_CHOICES = (1, 2)
CP_CHOICES = (1, 2)  # context parallelism: splits the sequence (ring attention) when activations bind
# Sequence parallelism with tp > 1 (same traffic, less activation memory); tp = 1 keeps only "off".
SEQ_PARALLEL_CHOICES = (False, True)
MICRO_BATCH_CHOICES = (1, 2, 4, 8)
RECOMPUTE_CHOICES = (0, 1, 2)  # none, selective, full
# (zero stage, offload code): offload only where DeepSpeed supports it well (ZeRO-2/3 + CPU optimizer).
ZERO_OFFLOAD_CHOICES = ((0, 0), (1, 0), (2, 0), (3, 0), (2, 1), (3, 1))
# ZeRO-3 hierarchy options tried beside flat ZeRO-3 (no offload), each with its group = the data-parallel
# ranks of one node, where the stack has it (planner.frameworks zeropp / shard_groups): (hpZ, qwZ, qgZ, shard group).
HPZ = (True, False, False, False)
HPZ_QUANTIZED = (True, True, True, False)  # full ZeRO++: int8 weight gathers, int4 gradient reduce
SHARD_GROUP = (False, False, False, True)
# Tried by default: the options that change where bytes go, not what they are. qwZ / qgZ quantise the
# weight gathers (int8) and the gradient reduce (int4); Wang et al. 2023 report loss parity on their runs, but
# the loss laws here cannot price a quantised run, so the search tries them only when asked (--quantized-comm).
LOSSLESS_HIERARCHY = (HPZ, SHARD_GROUP)
ALL_HIERARCHY = (HPZ, HPZ_QUANTIZED, SHARD_GROUP)
FLAT = ()
# The stack the budget search plans for (build_batch's default framework).
BUDGET_STACK = "other"
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
    arrays: dict  # name -> np.ndarray (model_index, gpus, tp, pp, dp, vpp, cp, seq_parallel, zero, offload, micro_batch, recompute)
    skipped_invalid: int  # combinations that do not divide (never scored)

    def __len__(self) -> int:
        return len(self.arrays["tp"])


def hierarchy_choices(flat: bool = False, quantized: bool = False) -> tuple:
    """The ZeRO-3 hierarchy options a search tries: none (--flat-zero), the lossless ones, or all."""
    return FLAT if flat else ALL_HIERARCHY if quantized else LOSSLESS_HIERARCHY


def enumerate_space(models: list[ModelSpec], gpu_options: list[int], gpus_per_node: int,
                    hierarchy: tuple = LOSSLESS_HIERARCHY) -> Space:
    """Every valid layout of every model at every GPU count in `gpu_options` (see enumerate_cells)."""
    cell_model, cell_gpus = (g.reshape(-1) for g in np.meshgrid(np.arange(len(models)), np.array(gpu_options, dtype=int),
                                                                 indexing="ij"))
    return enumerate_cells(models, cell_model, cell_gpus, gpus_per_node, hierarchy)


def enumerate_cells(models: list[ModelSpec], cell_model: np.ndarray, cell_gpus: np.ndarray, gpus_per_node: int,
                    hierarchy: tuple = LOSSLESS_HIERARCHY) -> Space:
    """Every valid layout of each (model, GPU count) cell, as flat arrays.

    Built in two steps so the full cartesian product is never materialised: first the placement
    (cell, tp, pp, vpp, cp, sp) filtered for divisibility, then each surviving placement crossed
    with the memory/schedule options (ZeRO and offload, micro-batch, recompute); then, with `hierarchy`,
    the ZeRO-3 hierarchy rows of the `hierarchy` choices (with_hierarchy; the columns are there either way).
    """
    layers = np.array([m.layers for m in models])
    heads = np.array([m.heads for m in models])
    kv_heads = np.array([m.kv for m in models])
    seq_lens = np.array([m.seq_len for m in models])
    grids = np.meshgrid(np.arange(len(cell_model)), np.array(TP_CHOICES), np.array(PP_CHOICES),
                        np.array(VPP_CHOICES), np.array(CP_CHOICES), np.array(SEQ_PARALLEL_CHOICES), indexing="ij")
    cell, tp, pp, vpp, cp, sp = (g.reshape(-1) for g in grids)
    model_index = np.asarray(cell_model, dtype=int)[cell]
    gpus = np.asarray(cell_gpus, dtype=int)[cell]
    L = layers[model_index]
    placement_ok = (
        (tp <= gpus_per_node) & (heads[model_index] % tp == 0) & (kv_heads[model_index] % tp == 0)
        & (gpus % (tp * pp * cp) == 0) & (seq_lens[model_index] % cp == 0) & (L % (pp * vpp) == 0)
        & ((vpp == 1) | (pp > 1)) & ((tp > 1) | (sp == SEQ_PARALLEL_CHOICES[0]))
        # Deep pipelines need at least one layer per (virtual) stage.
        & (L >= pp * vpp)
    )
    placements = np.flatnonzero(placement_ok)
    options = np.meshgrid(np.arange(len(ZERO_OFFLOAD_CHOICES)), np.array(MICRO_BATCH_CHOICES),
                          np.array(RECOMPUTE_CHOICES), indexing="ij")
    zo, micro, recompute = (o.reshape(-1) for o in options)
    # Cross every placement with every option: placement-major order, as a nested loop would give.
    p_index = np.repeat(placements, len(zo))
    o_index = np.tile(np.arange(len(zo)), len(placements))
    zero = np.array([z for z, _ in ZERO_OFFLOAD_CHOICES])[zo[o_index]]
    offload = np.array([o for _, o in ZERO_OFFLOAD_CHOICES])[zo[o_index]]
    dp = gpus[p_index] // (tp[p_index] * pp[p_index] * cp[p_index])
    # ZeRO stages only differ when there is data parallelism to shard over; pipeline parallelism runs with
    # ZeRO-0/1 only (Megatron's distributed optimizer and DeepSpeed's pipeline engine are both ZeRO-1).
    option_ok = ((dp > 1) | (zero == 0)) & ((pp[p_index] == 1) | (zero <= 1))
    keep = np.flatnonzero(option_ok)
    p_keep = p_index[keep]
    arrays = {
        "model_index": model_index[p_keep], "gpus": gpus[p_keep], "tp": tp[p_keep], "pp": pp[p_keep],
        "dp": dp[keep], "vpp": vpp[p_keep], "cp": cp[p_keep], "seq_parallel": (sp & (tp > 1))[p_keep],
        "zero": zero[keep], "offload": offload[keep], "micro_batch": micro[o_index[keep]],
        "recompute": recompute[o_index[keep]],
    }
    total = len(model_index) * len(zo)
    stack = FRAMEWORKS[BUDGET_STACK]
    every = np.full(len(keep), bool(hierarchy))
    arrays = with_hierarchy(arrays, every & stack.zeropp, every & stack.shard_groups, gpus_per_node, hierarchy)
    return Space(models=models, arrays=arrays, skipped_invalid=int(total - len(keep)))


def with_hierarchy(arrays: dict, zeropp: np.ndarray, shard_groups: np.ndarray, gpus_per_node: int,
                   choices: tuple = LOSSLESS_HIERARCHY) -> dict:
    """`arrays` with the ZeRO-3 hierarchy columns (zero_hpz 1, no quantisation, shard_group 0: flat) plus, for
    each flat ZeRO-3 row whose data-parallel group spans nodes, one row per entry of `choices` its stack
    runs (`zeropp`, `shard_groups`: per row), with hpZ / shard group = the node's data-parallel ranks. The
    extra rows follow the flat ones, so where a hierarchy only ties a flat layout the flat one stays first."""
    n = len(arrays["tp"])
    flat = {"zero_hpz": np.ones(n, dtype=np.int64), "zero_quantized_weights": np.zeros(n, dtype=bool),
            "zero_quantized_gradients": np.zeros(n, dtype=bool), "shard_group": np.zeros(n, dtype=np.int64)}
    out = {**arrays, **flat}
    span = arrays["tp"] * arrays["cp"]
    node_ranks = np.where(span <= gpus_per_node, gpus_per_node // np.maximum(span, 1), 0)
    base = ((arrays["zero"] == 3) & (arrays["offload"] == 0) & (node_ranks > 1) & (gpus_per_node % np.maximum(span, 1) == 0)
            & (arrays["dp"] > node_ranks) & (arrays["dp"] % np.maximum(node_ranks, 1) == 0))
    zeropp, shard_groups = np.asarray(zeropp, dtype=bool), np.asarray(shard_groups, dtype=bool)
    extra = []
    for hpz, qw, qg, shard in choices:
        rows = np.flatnonzero(base & (shard_groups if shard else zeropp))
        if not rows.size:
            continue
        block = {k: v[rows] for k, v in arrays.items()}
        block.update(zero_hpz=np.where(hpz, node_ranks[rows], 1), zero_quantized_weights=np.full(rows.size, qw),
                     zero_quantized_gradients=np.full(rows.size, qg),
                     shard_group=np.where(shard, node_ranks[rows], 0))
        extra.append(block)
    if not extra:
        return out
    return {k: np.concatenate([out[k]] + [b[k] for b in extra]) for k in out}


def hierarchy_fields(a: dict) -> dict:
    """The Layout fields of a row's ZeRO-3 hierarchy (only those set, so flat rows read as before)."""
    fields = {}
    if int(a.get("zero_hpz", 1)) > 1:
        fields["zero_hpz"] = int(a["zero_hpz"])
    for key in ("zero_quantized_weights", "zero_quantized_gradients"):
        if bool(a.get(key, False)):
            fields[key] = True
    if int(a.get("shard_group", 0)) > 0:
        fields["shard_group"] = int(a["shard_group"])
    return fields


def concatenate(spaces: list[Space]) -> Space:
    """One space holding the candidates of several (over the same model list), in order."""
    if not spaces:
        raise ValueError("concatenate needs at least one space")
    arrays = {key: np.concatenate([s.arrays[key] for s in spaces]) for key in spaces[0].arrays}
    return Space(models=spaces[0].models, arrays=arrays, skipped_invalid=sum(s.skipped_invalid for s in spaces))
