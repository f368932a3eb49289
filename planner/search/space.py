"""The candidate space: model shapes x GPU counts x parallel layouts, enumerated as numpy arrays.

Model shapes come from the depth dial (`model.family_model`): depth in steps of 4, width = depth x
aspect ratio rounded to 128-wide heads, SwiGLU ffn rounded to 256, 8 kv heads once a model has 16+
heads (Llama-3 practice). GPU counts are whole nodes on a geometric grid, plus 1/2/4 GPUs inside a
node for small plans. Layouts: tp in {1, 2, 4, 8} (inside a node, dividing heads and kv heads), pp
dividing the depth, interleaving vpp in {1, 2}, context parallelism cp in {1, 2}, ZeRO 0-3 (with
pipelining up to the stack's maximum), optimizer offload (ZeRO-2/3, where the stack has it), micro-batch
1-8, recompute none/selective/full (the modes the stack has), sequence parallelism on or off when tp > 1.
Flat ZeRO-3 layouts whose data-parallel group spans nodes are also tried with the ZeRO-3 hierarchy
(LOSSLESS_HIERARCHY: ZeRO++ hpZ, a node-sized MiCS / HSDP shard group; with --quantized-comm also hpZ + qwZ +
qgZ), as the fixed-model search tries them. Each layout is enumerated once per searched stack (planner.frameworks; the budget search's
--framework) and kept only where that stack runs it (stack_runs: its ZeRO stages, offload, schedules and
ZeRO-3 hierarchy options), with the stack's overlaps (stack_columns). Everything is a cartesian product
filtered with vector operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.frameworks import (FRAMEWORK_CODES, FRAMEWORK_NAMES, FRAMEWORKS, check_framework_names,
                                flash_attention_by_default, model_unsupported)
from planner.errors import PlannerInputError
from planner.specs.candidate_batch import OFFLOAD_CODES, RECOMPUTE_CODES
from planner.specs.layout_checks import tp_fits_the_nodes, tp_splits_model
from planner.specs.model import ModelSpec, family_model

TP_CHOICES = (1, 2, 4, 8)
PP_CHOICES = (1, 2, 4, 8, 16, 32)
VPP_CHOICES = (1, 2)
CP_CHOICES = (1, 2)  # context parallelism: splits the sequence (ring attention) when activations bind
# Sequence parallelism with tp > 1 (same traffic, less activation memory); tp = 1 keeps only "off".
SEQ_PARALLEL_CHOICES = (False, True)
MICRO_BATCH_CHOICES = (1, 2, 4, 8)
RECOMPUTE_CHOICES = (0, 1, 2)  # none, selective, full: those the stack has (Framework.recompute_modes)
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
# The stack enumerate_cells and the library's optimize() plan for when not told (build_batch's default
# framework); the CLI searches --framework, default planner.search.layouts.DEFAULT_FRAMEWORKS.
BUDGET_STACK = "other"
ASPECT_RATIOS = (64, 96, 128)
DEPTHS = tuple(range(8, 161, 4))
NODE_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024,
             1536, 2048, 3072, 4096, 6144, 8192)
SUB_NODE_GPUS = (1, 2, 4)
# Layout columns in 32 bits (products such as tp·pp·cp·dp stay far below 2^31): half the bytes of the
# millions of rows to gather and concatenate; the cost model converts each scored chunk to float.
_COLUMN_INT = np.int32


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
    """GPU counts to try: exact, or sub-node sizes plus whole nodes on a geometric grid within [low, high], and the
    most `max_gpus` or the cluster allows where it falls between two grid points (their whole nodes, or the limit
    itself within a node): such a limit was never tried, so `--max-gpus 40` answered from 32 GPUs that more were
    needed, where 40 met the deadline, and jean-zay-a100's 52 nodes were searched up to 48. Past the grid's end
    (NODE_GRID[-1] nodes) the grid stays the cap."""
    if exact is not None:
        return [exact]
    counts = [g for g in SUB_NODE_GPUS if g < gpus_per_node]
    counts += [n * gpus_per_node for n in NODE_GRID if n <= max_nodes]
    if max_gpus is not None and max_gpus < gpus_per_node:
        counts = sorted(set(counts) | {max_gpus})
    else:
        nodes = max_nodes if max_gpus is None else min(max_gpus // gpus_per_node, max_nodes)
        if nodes <= NODE_GRID[-1]:
            counts = sorted(set(counts) | {nodes * gpus_per_node})
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


def layout_space() -> dict:
    """The layout dimensions the budget searches cross (narrower than the fixed-model search's, search.layouts, to
    keep a search over every model shape and GPU count to seconds), for the plan's assumptions and its text."""
    return {"tp": list(TP_CHOICES), "pp": list(PP_CHOICES), "vpp": list(VPP_CHOICES), "cp": list(CP_CHOICES),
            "micro_batch": list(MICRO_BATCH_CHOICES), "tp_comm_overlap": "each stack's default"}


def layout_space_text(space: dict) -> str:
    """One line naming the budget search's layout space (layout_space) and where a wider search is."""
    span = lambda values: f"{values[0]}-{values[-1]}" if len(values) > 1 else f"{values[0]}"  # noqa: E731
    return (f"layouts searched: tp {span(space['tp'])}, pp {span(space['pp'])} (powers of two), vpp {span(space['vpp'])}, "
            f"cp {span(space['cp'])}, micro-batch {span(space['micro_batch'])}, tensor-parallel overlap at "
            f"{space['tp_comm_overlap']}; `planner optimize --model` searches the chosen model's layouts wider "
            "(a faster layout can shorten the run)")


def hierarchy_choices(flat: bool = False, quantized: bool = False) -> tuple:
    """The ZeRO-3 hierarchy options a search tries: none (--flat-zero), the lossless ones, or all."""
    return FLAT if flat else ALL_HIERARCHY if quantized else LOSSLESS_HIERARCHY


def enumerate_space(models: list[ModelSpec], gpu_options: list[int], gpus_per_node: int,
                    hierarchy: tuple = LOSSLESS_HIERARCHY, frameworks: tuple = (BUDGET_STACK,),
                    dtype: str = "bf16") -> Space:
    """Every valid layout of every model at every GPU count in `gpu_options` (see enumerate_cells)."""
    cell_model, cell_gpus = (g.reshape(-1) for g in np.meshgrid(np.arange(len(models)), np.array(gpu_options, dtype=int),
                                                                 indexing="ij"))
    return enumerate_cells(models, cell_model, cell_gpus, gpus_per_node, hierarchy, frameworks, dtype)


def enumerate_cells(models: list[ModelSpec], cell_model: np.ndarray, cell_gpus: np.ndarray, gpus_per_node: int,
                    hierarchy: tuple = LOSSLESS_HIERARCHY, frameworks: tuple = (BUDGET_STACK,),
                    dtype: str = "bf16") -> Space:
    """Every valid layout of each (model, GPU count) cell, as flat arrays.

    Built in steps so the full cartesian product is never materialised: first the placement (cell, tp, pp,
    vpp, cp, sp) filtered for divisibility; each surviving placement crossed with the (ZeRO and offload, stack)
    options of the stacks in `frameworks`, keeping what each stack runs (stack_runs; its columns from
    stack_columns); each kept pair crossed with micro-batch and recompute; then, with `hierarchy`, the ZeRO-3
    hierarchy rows of the `hierarchy` choices where the stack has them (with_hierarchy; the columns are there
    either way). `dtype`: the training dtype, which decides the attention kernel the rows run (stack_runs: context
    parallelism only on fused attention where the stack needs it, which Megatron has no fp32 one of).
    """
    # Options: (ZeRO and offload, stack) pairs, each stack with its own ZeRO stages and offload modes only;
    # micro-batch and recompute are crossed in last, after the checks that do not depend on them.
    stacks = [FRAMEWORKS[name] for name in frameworks]
    kv_multiple = kv_multiple_of(stacks)
    grid, placements = _placement_grid(models, cell_model, cell_gpus, gpus_per_node, bool(kv_multiple.any()))
    model_index, gpus, tp, pp, vpp, cp, sp = (grid[k] for k in ("model_index", "gpus", "tp", "pp", "vpp", "cp", "sp"))
    own = _stack_tables(stacks)
    zero_option, offload_option, stack_of = _stack_options(own, len(stacks))
    # Every combination before any check: those not kept are counted as skipped_invalid.
    total = len(model_index) * len(ZERO_OFFLOAD_CHOICES) * len(stacks) * len(MICRO_BATCH_CHOICES) * len(RECOMPUTE_CHOICES)
    # Cross every placement with every option: placement-major order, as a nested loop would give (on a tie
    # between stacks the one listed first stays first).
    p_index = np.repeat(placements, len(stack_of))
    o_index = np.tile(np.arange(len(stack_of)), len(placements))
    zero, offload, f = zero_option[o_index], offload_option[o_index], stack_of[o_index]
    tp_p, pp_p, cp_p = tp[p_index], pp[p_index], cp[p_index]
    dp = gpus[p_index] // (tp_p * pp_p * cp_p)
    # What the stack runs (stack_runs: ZeRO only with ranks to shard over; e.g. pipelining with ZeRO-1 at most on
    # Megatron and DeepSpeed, ZeRO-3 on torchtitan; a tied model's pipeline where the stack ties across it).
    tied = np.array([model.tied_embeddings for model in models], dtype=bool)
    seq_lens = np.array([model.seq_len for model in models])
    runs = stack_runs(stacks, f, zero, tp_p, pp_p, vpp[p_index], cp_p, dp,
                      tied_embeddings=tied[model_index[p_index]] if tied.any() else False,
                      seq_len=seq_lens[model_index[p_index]], dtype=dtype)
    if kv_multiple.any() and not kv_multiple.all():  # tp a multiple of the kv heads: only the stacks that run it
        kv_heads = np.array([m.kv for m in models])[model_index[p_index]]
        runs &= kv_multiple[f] | (kv_heads % tp_p == 0)
    ok = np.flatnonzero(runs)
    keep, micro_rows, recompute_rows = _with_schedules(ok, f, own["recompute"])
    p_keep, f_keep = p_index[keep], f[keep]
    arrays = {
        "model_index": model_index[p_keep], "gpus": gpus[p_keep], "tp": tp[p_keep], "pp": pp[p_keep],
        "dp": dp[keep], "vpp": vpp[p_keep], "cp": cp[p_keep], "seq_parallel": (sp & (tp > 1))[p_keep],
        "zero": zero[keep], "offload": offload[keep], "micro_batch": micro_rows, "recompute": recompute_rows,
        **stack_columns(stacks, f_keep, tp[p_keep], (sp & (tp > 1))[p_keep], zero[keep], pp[p_keep]),
    }
    every = np.full(len(keep), bool(hierarchy))
    arrays = with_hierarchy(arrays, every & own["zeropp"][f_keep], every & own["shard_groups"][f_keep], gpus_per_node,
                            hierarchy)
    return Space(models=models, arrays=arrays, skipped_invalid=int(total - len(keep)))


def kv_multiple_of(stacks) -> np.ndarray:
    """Per stack: whether it runs tp a multiple of the key/value heads (Framework.tp_multiple_of_kv_heads)."""
    return np.array([s.tp_multiple_of_kv_heads for s in stacks], dtype=bool)


def _placement_grid(models: list[ModelSpec], cell_model: np.ndarray, cell_gpus: np.ndarray,
                    gpus_per_node: int, kv_multiple: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every (cell, tp, pp, vpp, cp, sp) placement as flat columns (model_index, gpus, tp, pp, vpp, cp, sp),
    and the indices of those that divide the model and the cell's GPUs (the rest are never crossed further);
    with `kv_multiple` tp may also be a multiple of the key/value heads (layout_checks.tp_splits_model)."""
    layers = np.array([m.layers for m in models])
    heads = np.array([m.heads for m in models])
    ffn = np.array([m.ffn_size for m in models])
    kv_heads = np.array([m.kv for m in models])
    seq_lens = np.array([m.seq_len for m in models])
    grids = np.meshgrid(np.arange(len(cell_model)), np.array(TP_CHOICES, dtype=_COLUMN_INT), np.array(PP_CHOICES, dtype=_COLUMN_INT),
                        np.array(VPP_CHOICES, dtype=_COLUMN_INT), np.array(CP_CHOICES, dtype=_COLUMN_INT),
                        np.array(SEQ_PARALLEL_CHOICES), indexing="ij")
    cell, tp, pp, vpp, cp, sp = (g.reshape(-1) for g in grids)
    model_index = np.asarray(cell_model, dtype=_COLUMN_INT)[cell]
    gpus = np.asarray(cell_gpus, dtype=_COLUMN_INT)[cell]
    L = layers[model_index]
    placement_ok = (
        (tp <= gpus_per_node) & tp_fits_the_nodes(tp, gpus_per_node)
        & tp_splits_model(heads[model_index], kv_heads[model_index], ffn[model_index], seq_lens[model_index], tp, cp,
                          sp, kv_multiple)
        & (gpus % (tp * pp * cp) == 0) & (seq_lens[model_index] % cp == 0) & (L % (pp * vpp) == 0)
        & ((vpp == 1) | (pp > 1)) & ((tp > 1) | (sp == SEQ_PARALLEL_CHOICES[0]))
        # Deep pipelines need at least one layer per (virtual) stage.
        & (L >= pp * vpp)
    )
    grid = {"model_index": model_index, "gpus": gpus, "tp": tp, "pp": pp, "vpp": vpp, "cp": cp, "sp": sp}
    return grid, np.flatnonzero(placement_ok)


def _stack_options(own: dict[str, np.ndarray], n_stacks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(zero, offload, stack index) of each (ZeRO and offload, stack) pair the stack runs (`own`: _stack_tables),
    ZeRO-and-offload-major as ZERO_OFFLOAD_CHOICES lists them."""
    pairs = np.meshgrid(np.arange(len(ZERO_OFFLOAD_CHOICES)), np.arange(n_stacks), indexing="ij")
    zo, stack_of = (o.reshape(-1) for o in pairs)
    zero_choice = np.array([z for z, _ in ZERO_OFFLOAD_CHOICES], dtype=_COLUMN_INT)
    offload_choice = np.array([o for _, o in ZERO_OFFLOAD_CHOICES], dtype=_COLUMN_INT)
    runs = own["zero"][stack_of, zero_choice[zo]] & own["offload"][stack_of, offload_choice[zo]]
    zo, stack_of = zo[runs], stack_of[runs]
    return zero_choice[zo], offload_choice[zo], stack_of


def _with_schedules(ok: np.ndarray, stack_index: np.ndarray,
                    recompute_modes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows `ok` (of the placement x option cross) each repeated once per (micro-batch, recompute), keeping the
    recompute modes its stack has (`recompute_modes[stack, code]`): (row, micro-batch, recompute) per kept row."""
    schedule = np.meshgrid(np.array(MICRO_BATCH_CHOICES, dtype=_COLUMN_INT), np.array(RECOMPUTE_CHOICES, dtype=_COLUMN_INT),
                           indexing="ij")
    micro_choice, recompute_choice = (o.reshape(-1) for o in schedule)
    # Each kept (placement, option) once per (micro-batch, recompute), the recompute modes its stack has.
    keep = np.repeat(ok, len(micro_choice))
    micro_rows, recompute_rows = np.tile(micro_choice, len(ok)), np.tile(recompute_choice, len(ok))
    if not recompute_modes.all():
        has_mode = recompute_modes[stack_index[keep], recompute_rows]
        keep, micro_rows, recompute_rows = keep[has_mode], micro_rows[has_mode], recompute_rows[has_mode]
    return keep, micro_rows, recompute_rows


def checked_stacks(frameworks, dtype: str, model=None) -> tuple:
    """The stacks of `frameworks` that train in `dtype` (and build `model`, where one is given), in order; bad input
    (an unknown name, or no stack with that precision or able to build the model: an error rather than "no layout")
    is a PlannerInputError naming --framework / --dtype."""
    check_framework_names(frameworks)
    usable = runnable_stacks(frameworks, dtype)
    if not usable:
        offered = ", ".join(f"{name}: {'/'.join(sorted(FRAMEWORKS[name].dtypes))}" for name in frameworks)
        raise PlannerInputError(f"--dtype {dtype}: no stack of --framework {','.join(frameworks)} trains in it ({offered})")
    builds = runnable_stacks(usable, dtype, model)
    if not builds:
        raise PlannerInputError(f"--framework {','.join(frameworks)}: "
                                + model_unsupported(usable[0], model, dtype=dtype)[0])
    return builds


def runnable_stacks(frameworks, dtype: str, model=None) -> tuple:
    """The names of `frameworks` that train in `dtype` and, where `model` is given, build it in that dtype
    (frameworks.model_unsupported), in order."""
    return tuple(name for name in frameworks if dtype in FRAMEWORKS[name].dtypes
                 and (model is None or not model_unsupported(name, model, dtype=dtype)))


def _stack_tables(stacks) -> dict[str, np.ndarray]:
    """Per-stack lookup tables: zero[stack, stage], offload[stack, code] and recompute[stack, code] (what it runs),
    zeropp and shard_groups."""
    offload_names = list(OFFLOAD_CODES)
    return {
        "recompute": np.array([[name in s.recompute_modes for name in RECOMPUTE_CODES] for s in stacks], dtype=bool),
        "zero": np.array([[z in s.zero_stages for z in range(4)] for s in stacks], dtype=bool),
        "offload": np.array([[o == 0 or (s.supports_offload and offload_names[o] in s.offload_modes)
                              for o in range(len(offload_names))] for s in stacks], dtype=bool),
        "zeropp": np.array([s.zeropp for s in stacks], dtype=bool),
        "shard_groups": np.array([s.shard_groups for s in stacks], dtype=bool),
    }


def stack_runs(stacks, stack_index, zero, tp, pp, vpp, cp, dp, dp_comm_overlap=None,
               tied_embeddings=False, seq_len=None, dtype: str = "bf16",
               grad_reduce_in_fp32: bool | None = None, end_stages_set=False, offload=None) -> np.ndarray:
    """Which rows their stack (stacks[stack_index]) can run, from the stacks' data (planner.frameworks): ZeRO
    only with ranks to shard over and with pipelining up to its maximum, replicated data parallelism only where
    it allows it, interleaving, context, tensor and pipeline parallelism where it has them, and (given the rows'
    `dp_comm_overlap`) a reduce overlap beside pipelining only where the stack overlaps it there
    (Framework.reduce_overlaps_with_pipeline), and a tied model's pipeline only where the stack ties across it
    (Framework.ties_embeddings_across_pipeline; `tied_embeddings` per row or for all), and (given the rows'
    `seq_len`) context parallelism where the sequence divides into the stack's chunks per cp rank
    (Framework.context_parallel_chunks_per_rank, as frameworks.model_unsupported refuses), on fused attention where
    the stack needs it (Framework.context_parallel_needs_fused_attention: the searched layouts run the stack's default
    attention in `dtype`, frameworks.flash_attention_by_default, unfused in fp32 on Megatron), and (given a gradient
    dtype for every row, `grad_reduce_in_fp32`) fp32 accumulation of 16-bit gradients only from the stack's lowest
    ZeRO stage for it (Framework.fp32_grad_accumulation_min_zero, check_layout's rule) and reduction in the 16-bit
    model dtype only where its launch has it (Framework.reduces_in_model_dtype), and end ranks' layers the rows set
    (`end_stages_set`, per row or for all) only where the stack sets them (Framework.sets_end_stage_layers), and fp8
    with a pipeline only where the stack builds its fp8 layers there (Framework.fp8_with_pipeline). The rows' ZeRO
    stage and offload mode are the
    stack's own already (both callers cross placements only with those: enumerate_cells via _stack_tables,
    layouts._stack_options); given the rows' `offload` (layouts' callers), ZeRO with offload runs on one rank too
    (the ZeRO-Offload paper's single GPU: DeepSpeed's ZeRO-2 and FSDP's CPU offload at world size 1, which the
    project's own cpu-local profile ran). A property every stack shares costs nothing per row."""
    index = np.asarray(stack_index, dtype=np.intp)

    def per_stack(attr):  # the rows' value of a stack property; a scalar when the stacks agree on it
        values = np.array([getattr(s, attr) for s in stacks])
        return values[0] if np.all(values == values[0]) else values[index]

    ok = (pp == 1) | (zero <= per_stack("max_zero_with_pipeline"))
    # ZeRO needs ranks to shard over: the data-parallel ones, times the context-parallel ones where the stack's
    # sharding group is dp x cp (cost.memory.sharding_degree: Megatron's distributed optimizer, FSDP's
    # dp_shard x cp mesh), so dp = 1 with cp > 1 still shards there.
    shards = (zero == 0) | (dp * np.where(per_stack("shards_over_context_parallel"), cp, 1) > 1)
    ok &= shards if offload is None else shards | (np.asarray(offload) > 0)
    alone = per_stack("replicated_dp_alone")
    if np.any(alone):
        ok &= ~(alone & (zero == 0) & ((cp > 1) | ((dp > 1) & (tp * pp > 1))))
    for attr, uses in (("supports_interleaving", lambda: vpp > 1), ("supports_context_parallel", lambda: cp > 1),
                       ("supports_tensor_parallel", lambda: tp > 1), ("supports_pipeline", lambda: pp > 1),
                       ("sets_end_stage_layers", lambda: np.asarray(end_stages_set, dtype=bool))):
        has = per_stack(attr)
        if not np.all(has):
            ok &= has | ~uses()
    if dp_comm_overlap is not None:
        ok &= ~(np.asarray(dp_comm_overlap, dtype=bool) & (pp > 1) & ~per_stack("reduce_overlaps_with_pipeline"))
    if np.any(tied_embeddings):
        ok &= ~np.asarray(tied_embeddings, dtype=bool) | (pp == 1) | per_stack("ties_embeddings_across_pipeline")
    if seq_len is not None:
        ok &= (cp == 1) | (np.asarray(seq_len) % (cp * per_stack("context_parallel_chunks_per_rank")) == 0)
    needs_fused = per_stack("context_parallel_needs_fused_attention")
    if np.any(needs_fused):
        fused = flash_attention_by_default([FRAMEWORK_CODES[s.name] for s in stacks], dtype)
        ok &= (cp == 1) | ~needs_fused | fused[index]
    if dtype == "fp8":
        ok &= (pp == 1) | per_stack("fp8_with_pipeline")
    if grad_reduce_in_fp32 and dtype in ("bf16", "fp8"):
        ok &= zero >= per_stack("fp32_grad_accumulation_min_zero")
    elif grad_reduce_in_fp32 is False and dtype != "fp32":
        ok &= per_stack("reduces_in_model_dtype")
        ok &= np.array([dtype not in s.fp32_grad_reduce_forced_dtypes for s in stacks])[index]
    return ok


def stack_columns(stacks, stack_index, tp, seq_parallel, zero, pp) -> dict[str, np.ndarray]:
    """The rows' stack columns: `framework` (its code), `dp_comm_overlap` on (every stack has a gradient-reduce
    overlap, a switch away where it is off by default: Megatron's --overlap-grad-reduce, DeepSpeed's
    overlap_comm; at ZeRO-0 only where the stack overlaps its all-reduce, Framework.reduce_overlaps_at_zero0, and with
    a sharded optimizer where it overlaps its reduce-scatter, Framework.reduce_overlaps_when_sharded, beside
    pipelining where it overlaps it there, Framework.reduce_overlaps_with_pipeline) and
    `tp_comm_overlap` at the stack's default (TE userbuffers cost memory, so turning them on
    is a trade-off the fixed-model search weighs, not a default), with sequence parallelism where it needs it."""
    index = np.asarray(stack_index, dtype=np.intp)
    zero0_overlap = np.array([s.reduce_overlaps_at_zero0 for s in stacks], dtype=bool)[index]
    sharded_overlap = np.array([s.reduce_overlaps_when_sharded for s in stacks], dtype=bool)[index]
    pipeline_overlap = np.array([s.reduce_overlaps_with_pipeline for s in stacks], dtype=bool)[index] | (np.asarray(pp) == 1)
    tp_overlap = np.array([s.tp_comm_overlap_default for s in stacks], dtype=bool)[index] & (tp > 1)
    needs_sp = np.array([s.tp_comm_overlap_needs_sequence_parallel for s in stacks], dtype=bool)[index]
    return {"framework": np.array([FRAMEWORK_CODES[s.name] for s in stacks], dtype=np.int32)[index],
            "tp_comm_overlap": tp_overlap & (~needs_sp | np.asarray(seq_parallel, dtype=bool)),
            "dp_comm_overlap": np.where(np.asarray(zero) > 0, sharded_overlap, zero0_overlap) & pipeline_overlap}


def with_hierarchy(arrays: dict, zeropp: np.ndarray, shard_groups: np.ndarray, gpus_per_node: int,
                   choices: tuple = LOSSLESS_HIERARCHY) -> dict:
    """`arrays` with the ZeRO-3 hierarchy columns (zero_hpz 1, no quantisation, shard_group 0: flat) plus, for
    each flat ZeRO-3 row whose data-parallel group spans nodes, one row per entry of `choices` its stack
    runs (`zeropp`, `shard_groups`: per row), with hpZ / shard group = the node's data-parallel ranks. The
    extra rows follow the flat ones, so where a hierarchy only ties a flat layout the flat one stays first."""
    rows, columns = hierarchy_rows(arrays, zeropp, shard_groups, gpus_per_node, choices)
    if len(rows) == len(arrays["tp"]):
        return {**arrays, **columns}
    return {**{k: v[rows] for k, v in arrays.items()}, **columns}


def hierarchy_rows(arrays: dict, zeropp: np.ndarray, shard_groups: np.ndarray, gpus_per_node: int,
                   choices: tuple = LOSSLESS_HIERARCHY) -> tuple[np.ndarray, dict]:
    """(rows, columns) of with_hierarchy: the row of `arrays` each of its candidates comes from (every row once, in
    order, then the hierarchy rows of each choice), and their four hierarchy columns. It reads only the arrays' tp,
    cp, zero, offload, dp and framework, so a caller can place the rows before it gathers its other columns."""
    n = len(arrays["tp"])
    span = arrays["tp"] * arrays["cp"]
    node_ranks = np.where(span <= gpus_per_node, gpus_per_node // np.maximum(span, 1), 0)
    base = ((arrays["zero"] == 3) & (arrays["offload"] == 0) & (node_ranks > 1) & (gpus_per_node % np.maximum(span, 1) == 0)
            & (arrays["dp"] > node_ranks) & (arrays["dp"] % np.maximum(node_ranks, 1) == 0))
    zeropp, shard_groups = np.asarray(zeropp, dtype=bool), np.asarray(shard_groups, dtype=bool)
    # Every choice holds hpZ, whose groups some stacks build over the whole world (Framework.zeropp_groups_span_the_world):
    # there only at tp 1.
    world_groups = np.array([FRAMEWORKS[name].zeropp_groups_span_the_world for name in FRAMEWORK_NAMES])
    zeropp = zeropp & ~(world_groups[arrays["framework"]] & (arrays["tp"] > 1))
    extra = []
    for hpz, qw, qg, shard in choices:
        rows = np.flatnonzero(base & (shard_groups if shard else zeropp))
        if rows.size:
            extra.append((rows, np.where(hpz, node_ranks[rows], 1), qw, qg, np.where(shard, node_ranks[rows], 0)))
    # Every row flat (zero_hpz 1, no quantisation, shard_group 0), then the hierarchy rows: written in place rather
    # than concatenated, since the flat rows are nearly all of them.
    total = n + sum(len(rows) for rows, *_ in extra)
    whole = np.int64 if extra else np.int32  # the dtypes the columns had when the parts were concatenated
    rows, hpz_ranks = np.arange(total), np.ones(total, dtype=whole)
    quantized_weights, quantized_gradients = np.zeros(total, dtype=bool), np.zeros(total, dtype=bool)
    shard_group = np.zeros(total, dtype=whole)
    start = n
    for extra_rows, hpz, qw, qg, shard in extra:
        part = slice(start, start + len(extra_rows))
        rows[part], hpz_ranks[part], shard_group[part] = extra_rows, hpz, shard
        quantized_weights[part], quantized_gradients[part] = qw, qg
        start = part.stop
    names = ("zero_hpz", "zero_quantized_weights", "zero_quantized_gradients", "shard_group")
    values = (hpz_ranks, quantized_weights, quantized_gradients, shard_group)
    return rows, dict(zip(names, values))


def layout_fields(a: dict) -> dict:
    """The Layout fields of one candidate (one element of each array), its codes named again: all but the global
    batch and the dtype, which the scoring chooses."""
    return dict(tp=int(a["tp"]), pp=int(a["pp"]), dp=int(a["dp"]), vpp=int(a["vpp"]), cp=int(a["cp"]),
                zero=int(a["zero"]), offload=list(OFFLOAD_CODES)[int(a["offload"])], micro_batch=int(a["micro_batch"]),
                recompute=list(RECOMPUTE_CODES)[int(a["recompute"])], seq_parallel=bool(a["seq_parallel"]),
                **end_stage_fields(a), **hierarchy_fields(a), **stack_fields(a))


def end_stage_fields(a: dict) -> dict:
    """The Layout fields of a row's end-rank layers, where it sets them (0 or absent: the stack's split)."""
    return {name: int(a[name]) for name in ("first_stage_layers", "last_stage_layers") if int(a.get(name, 0)) > 0}


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


def stack_fields(a: dict) -> dict:
    """The Layout fields of a row's stack and overlaps (none for a row without them: the Layout defaults)."""
    if "framework" not in a:
        return {}
    fields = {"framework": FRAMEWORK_NAMES[int(a["framework"])], "tp_comm_overlap": bool(a["tp_comm_overlap"]),
              "dp_comm_overlap": bool(a["dp_comm_overlap"])}
    if "partition_activations" in a:  # the fixed-model search tries both where the stack has the option
        fields["partition_activations"] = bool(a["partition_activations"])
    return fields


def concatenate(spaces: list[Space]) -> Space:
    """One space holding the candidates of several (over the same model list), in order."""
    if not spaces:
        raise ValueError("concatenate needs at least one space")
    arrays = {key: np.concatenate([s.arrays[key] for s in spaces]) for key in spaces[0].arrays}
    return Space(models=spaces[0].models, arrays=arrays, skipped_invalid=sum(s.skipped_invalid for s in spaces))
