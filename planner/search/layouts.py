"""Best layouts for a model already chosen: the fixed-model search (Calculon's llm-optimal-execution).

For one model, one cluster and one GPU count, every layout the chosen stacks can run is enumerated as
numpy arrays and scored in one vectorised pass of the cost model:

  tp      every divisor of the heads (and kv heads) up to 64, across nodes too;
  cp      1, 2, 4, 8, 16 dividing the sequence;
  pp      every divisor of gpus / (tp x cp) up to the depth, stages uneven as Megatron splits them
          (pipeline_stages.stage_layers), interleaved with, for each size of the fullest rank's largest chunk,
          the fewest chunks that give it (pipeline_stages.interleavings: every even split, where vpp x pp divides
          the depth, as Calculon's llm-optimal-execution enumerates them, and the uneven ones Megatron runs by
          layout string);
  dp      what is left: gpus / (tp x cp x pp);
  micro   with --global-batch: every divisor of the per-replica batch (as Calculon); without it, 1..64
          in powers of two, the global batch rounded to whole micro-batches x dp from the batch law;
  ZeRO 0-3 (pipelines up to the stack's max_zero_with_pipeline), optimizer / optimizer+params offload
  where the stack has it, recompute none/selective/full (the modes the stack has), sequence parallelism
  with tp > 1, and the tensor- and data-parallel communication overlaps on and off where the stack has
  them (each changes memory, so neither setting dominates);
  MoE     (MoE models) ep: every divisor of the experts that, with etp, divides tp x cp x dp (Megatron's
          expert grid); etp 1 and tp; the all-to-all overlaps the stack has (planner.frameworks.moe:
          Megatron's needs an interleaved schedule with pp > 1 and no full recompute).

Which stack runs what is data (planner.frameworks): a layout a stack cannot run is never enumerated
for it. The best layout trains the most tokens per second among those that fit (the shortest step when the
global batch is fixed; without one each layout rounds the batch law's to its own; ties: less memory).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import numpy as np

from planner.cost import distinct, row_chunks
from planner.cost.evaluation import batch_evaluation_fraction, with_evaluation
from planner.cost.goodput import goodput
from planner.cost.memory import per_gpu_memory, state_bytes_lower_bound, within_hbm
from planner.cost.step_time import step_time
from planner.errors import PlannerInputError
from planner.frameworks import (DEFAULT_FRAMEWORKS, FRAMEWORK_CODES, FRAMEWORK_NAMES, FRAMEWORKS, MICRO_BATCH_RULE_FIELDS,
                                flash_attention_by_default, framework_arrays, micro_batch_rules, runnable_micro_batches)
from planner.frameworks.moe import (A2A_OVERLAP_CODES, A2A_OVERLAP_NAMES, A2A_OVERLAPS, MOE_STACKS, default_routing_columns,
                                    overlap_micro_batches, overlap_runs_pipeline, zero3_expert_refused)
from planner.specs.hardware import ClusterSpec
from planner.laws import batch_size
from planner.specs.candidate_batch import DTYPE_CODES, OFFLOAD_CODES, RECOMPUTE_CODES, build_batch
from planner.specs.layout import make_layout
from planner.specs.layout_checks import tp_fits_the_nodes, tp_splits_model
from planner.specs.model import ModelSpec
from planner.specs.pipeline_stages import interleavings, lighter_last_most, lighter_last_splits
from planner.search.space import (LOSSLESS_HIERARCHY, checked_stacks, end_stage_fields, hierarchy_rows, kv_multiple_of,
                                  layout_fields, runnable_stacks, stack_runs, with_hierarchy)

MAX_TP = 64
MAX_VPP = 1 << 20  # no cap beyond the depth (tests shrink it)
MAX_MICRO_BATCH = 1 << 31  # no cap beyond the per-replica batch (tests shrink it)
# Layouts scored at once (_score_layouts): bounds the cost model's working memory. Measured on this 2-core VM
# (DeepSeek-V3 on 2,048 H800s, Megatron only, 19.5M layouts enumerated): 2M a block took 36 s (14 s of it the kernel
# faulting in fresh pages), 500k 29 s and 0.8 GB less; 250k no faster.
SCORE_BLOCK = 500_000
BATCH_LAW_MICRO_BATCHES = (1, 2, 4, 8, 16, 32, 64)  # without --global-batch
CP_CHOICES = (1, 2, 4, 8, 16)
RECOMPUTE_CHOICES = (0, 1, 2)  # none, selective, full
# (zero stage, offload code): offload is DeepSpeed's ZeRO-Offload (optimizer, ZeRO-2/3) and ZeRO-Infinity
# (optimizer + parameters, ZeRO-3).
ZERO_OFFLOAD_CHOICES = ((0, 0), (1, 0), (2, 0), (3, 0), (2, 1), (3, 1), (3, 2))
REASONS = ("does not fit GPU memory", "offload exceeds host memory", "offload exceeds NVMe capacity",
           "global batch above the batch law's limit")
@functools.lru_cache(maxsize=4096)
def divisors(n: int) -> tuple[int, ...]:
    n = int(n)
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return tuple(sorted(set(small + [n // d for d in small])))


def batch_sequences(model: ModelSpec, tokens: float, rule: str = batch_size.DEFAULT_RULE) -> int:
    """The batch law's optimal global batch for training `tokens`, in whole sequences."""
    tokens_per_batch = float(batch_size.optimal_batch_tokens(np.array([tokens]), np.array([model.non_embedding_params]), rule)[0])
    return max(1, round(tokens_per_batch / model.seq_len))


def _placements(model: ModelSpec, gpus: int, kv_multiple: bool = False, gpus_per_node: int | None = None) -> np.ndarray:
    """(tp, cp, pp, vpp, dp, first_stage_layers, last_stage_layers) rows that divide the GPUs and the model (tp also a
    multiple of the key/value heads with `kv_multiple`, where a searched stack runs that: enumerate_layouts keeps those
    rows for it alone), with `gpus_per_node` only a tp whose groups line up with the nodes
    (layout_checks.tp_fits_the_nodes). Each pipeline comes with the stack's own split (0, 0) and the splits with a
    lighter last rank (lighter_last_splits, up to lighter_last_most layers lighter); the stacks that cannot set a
    split take only the first (space.stack_runs)."""
    rows = []
    most = lighter_last_most(model)
    for tp in divisors(gpus):
        if gpus_per_node is not None and not tp_fits_the_nodes(tp, gpus_per_node):
            continue
        if tp > MAX_TP or not tp_splits_model(model.heads, model.kv, model.ffn_size, model.seq_len, tp, 1, False,
                                              kv_multiple):
            continue
        for cp in CP_CHOICES:
            if (gpus // tp) % cp or model.seq_len % cp:
                continue
            for pp in divisors(gpus // (tp * cp)):
                if pp > model.layers:
                    continue
                vpps = interleavings(model.layers, pp, MAX_VPP)
                dp = gpus // (tp * cp * pp)
                rows += [(tp, cp, pp, v, dp, first, last) for v in vpps
                         for first, last in ((0, 0), *_lighter_last(model.layers, pp, v, most))]
    return np.array(rows, dtype=np.int64).reshape(-1, 7)


@functools.lru_cache(maxsize=4096)
def _lighter_last(layers: int, pp: int, vpp: int, most: int) -> tuple:
    """pipeline_stages.lighter_last_splits, once per (layers, pp, vpp, most) of a search."""
    return tuple(lighter_last_splits(layers, pp, vpp, most))


def _expert_rows(model: ModelSpec, keep, tp, cp, dp, pp, vpp, recompute, stack_index, stacks, admitted=None):
    """`keep` repeated once per (ep, etp, all-to-all overlap) choice each layout can run (module docstring),
    and those choices as columns (with "choice", each row's number in that order); `keep` as it is and no columns
    for a dense model. `admitted`: a function of (choice number, keep) giving which of those rows may take that
    choice at all (enumerate_layouts' states_within)."""
    if not model.is_moe:
        return keep, {}
    tp, cp, dp, pp, vpp, recompute = (x[keep] for x in (tp, cp, dp, pp, vpp, recompute))
    grid = tp * cp * dp
    picks, columns = [], {"ep": [], "etp": [], "a2a_overlap": [], "node_dispatch": [], "choice": []}
    overlaps = np.array([[name in MOE_STACKS[s.name].overlaps for name in A2A_OVERLAP_NAMES]
                         for s in stacks])[stack_index[keep]]
    # Node-limited dispatch where the routing is node-limited and the stack can run it (MoEStack.
    # can_dispatch_once_per_node): it never moves more bytes (cost.moe._inter_node_bytes), so it is not a choice.
    node_dispatch = np.array([model.node_limited_routing and MOE_STACKS[s.name].can_dispatch_once_per_node
                              for s in stacks])[stack_index[keep]]
    for ep in divisors(model.moe_experts):
        for etp_is_tp in (False, True):
            etp = tp if etp_is_tp else np.ones_like(tp)
            fits = (grid % (ep * etp) == 0) & (model.expert_ffn_size % etp == 0)
            if etp_is_tp:
                fits &= tp > 1  # etp = tp = 1 is the first pass
            for name, overlap in A2A_OVERLAPS.items():
                ok = fits & overlaps[:, overlap.code]
                if name != "none":
                    ok &= (ep > 1) & overlap_runs_pipeline(overlap.code, pp, vpp)
                    if overlap.needs_interleaving_with_pp:
                        ok &= ((pp == 1) | (vpp > 1)) & (recompute != RECOMPUTE_CODES["full"])
                choice = len(picks)
                if admitted is not None:
                    ok &= admitted(choice, keep)
                rows = np.flatnonzero(ok)
                picks.append(rows)
                columns["ep"].append(np.full(len(rows), ep))
                columns["etp"].append(etp[rows])
                columns["a2a_overlap"].append(np.full(len(rows), A2A_OVERLAP_CODES[name]))
                columns["node_dispatch"].append(node_dispatch[rows])
                columns["choice"].append(np.full(len(rows), choice))
    index = np.concatenate(picks)
    return keep[index], {name: np.concatenate(values) for name, values in columns.items()}


def _micro_batches(placements: np.ndarray, global_batch: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(placement index, micro-batch) pairs: divisors of the per-replica batch, or powers of two."""
    powers = tuple(m for m in BATCH_LAW_MICRO_BATCHES if m <= MAX_MICRO_BATCH)
    choices = {}
    for dp in np.unique(placements[:, 4]).tolist():
        if global_batch is None:
            choices[dp] = powers
        elif global_batch % dp == 0:
            choices[dp] = tuple(m for m in divisors(global_batch // dp) if m <= MAX_MICRO_BATCH)
    per = [choices.get(dp, ()) for dp in placements[:, 4].tolist()]
    index = np.repeat(np.arange(len(per)), [len(c) for c in per])
    micro = np.array([m for c in per for m in c], dtype=np.int64)
    return index.astype(np.int64), micro


def _tp_runs(model: ModelSpec, placements: np.ndarray, stacks) -> np.ndarray:
    """[placement, stack, sequence parallelism off/on]: whether the stack runs the placement's tp on this model, once
    per distinct combination rather than per layout: tp splits what it splits (layout_checks.tp_splits_model: the
    key/value heads whole unless the stack runs tp a multiple of them), and an MoE model's tp > 1 comes with
    sequence parallelism on the stacks whose MoE layer needs it (frameworks.moe)."""
    tp, cp = placements[:, 0, None, None], placements[:, 1, None, None]
    sp = np.array([False, True])[None, None, :]
    runs = tp_splits_model(model.heads, model.kv, model.ffn_size, model.seq_len, tp, cp, sp,
                           kv_multiple_of(stacks)[None, :, None])
    if model.is_moe:
        needs_sp = np.array([MOE_STACKS[s.name].tp_needs_sequence_parallel for s in stacks], dtype=bool)
        runs &= ~(needs_sp[None, :, None] & (tp > 1) & ~sp)
    return runs


def _partition_choices(stack, recompute: int, sp: int) -> tuple:
    """Whether full-recompute checkpoints are kept partitioned over tp (Layout.partition_activations): both where
    the stack has the option (DeepSpeed's partition_activations, Megatron-LM's --distribute-saved-activations) under
    full recompute, with sequence parallelism only where it takes the mix; else the stack's default. It trades a
    tp all-gather per layer in backward for 1/tp of the checkpoints: the ZeRO paper's 100B run needed it to fit."""
    if (stack.partition_activations_available and recompute == RECOMPUTE_CODES["full"]
            and (not sp or stack.partition_activations_with_sequence_parallel)):
        return (0, 1)
    return (int(stack.partition_activations_default),)


def _dp_overlap_choices(stack, zero: int) -> tuple:
    """The data-parallel overlap settings a stack runs at a ZeRO stage: on only where it always overlaps
    (Framework.dp_comm_overlap_always_from_zero), off only where it cannot (reduce_overlaps_when_sharded /
    _at_zero0), else both."""
    if zero >= stack.dp_comm_overlap_always_from_zero:
        return (1,)
    return (0, 1) if (stack.reduce_overlaps_when_sharded if zero else stack.reduce_overlaps_at_zero0) else (0,)


def _stack_options(stacks) -> np.ndarray:
    """(zero, offload, recompute, sp, tp_overlap, dp_overlap, stack, partition_activations) rows each stack can run
    whatever the placement: its ZeRO stages, offload where it has it, its recompute modes, the TP overlap where it
    has it (with sequence parallelism where it needs it), partitioned checkpoints where it has them."""
    rows = []
    for f, s in enumerate(stacks):
        for z, o in ZERO_OFFLOAD_CHOICES:
            if z not in s.zero_stages or (o and (not s.supports_offload or list(OFFLOAD_CODES)[o] not in s.offload_modes)):
                continue
            for r in RECOMPUTE_CHOICES:
                if list(RECOMPUTE_CODES)[r] not in s.recompute_modes:
                    continue
                for sp in (0, 1):
                    for tpo in ((0, 1) if s.tp_comm_overlap_available and (sp or not s.tp_comm_overlap_needs_sequence_parallel) else (0,)):
                        rows += [(z, o, r, sp, tpo, dpo, f, pa)
                                 for dpo in _dp_overlap_choices(s, z)
                                 for pa in _partition_choices(s, r, sp)]
    return np.array(rows, dtype=np.int64).reshape(-1, 8)


def _with_hierarchy(arrays: dict, stacks, stack_index, gpus_per_node: int, choices: tuple) -> dict:
    """space.with_hierarchy with each row's stack deciding which hierarchy options it runs."""
    return with_hierarchy(arrays, *_hierarchy_stacks(stacks, stack_index), gpus_per_node, choices)


def _hierarchy_rows(arrays: dict, stacks, stack_index, gpus_per_node: int, choices: tuple) -> tuple[np.ndarray, dict]:
    """space.hierarchy_rows with each row's stack deciding which hierarchy options it runs."""
    return hierarchy_rows(arrays, *_hierarchy_stacks(stacks, stack_index), gpus_per_node, choices)


def _hierarchy_stacks(stacks, stack_index) -> tuple[np.ndarray, np.ndarray]:
    """Per row, whether its stack runs ZeRO++ and shard groups."""
    index = np.asarray(stack_index, dtype=np.int64)  # (an empty selection may come as floats)
    return (np.array([bool(s.zeropp) for s in stacks], dtype=bool)[index],
            np.array([bool(s.shard_groups) for s in stacks], dtype=bool)[index])


def enumerate_layouts(model: ModelSpec, gpus: int, global_batch: int | None, frameworks=DEFAULT_FRAMEWORKS,
                      batch_target: int | None = None, dtype: str = "bf16",
                      gpus_per_node: int | None = None, hierarchy: tuple = LOSSLESS_HIERARCHY,
                      states_within=None, grad_reduce_in_fp32: bool | None = None) -> dict[str, np.ndarray]:
    """Every layout of `model` on `gpus` GPUs each stack in `frameworks` can run, as arrays.

    `global_batch` fixes the batch (layouts whose dp does not divide it are not enumerated); without it,
    each layout's batch is `batch_target` rounded to whole micro-batches x dp. With `gpus_per_node`,
    ZeRO-3 layouts whose data-parallel group spans nodes are also tried with each `hierarchy` choice
    (space.py: ZeRO++ hpZ, hpZ + qwZ + qgZ, a node-sized MiCS / HSDP shard group) where the stack has it.
    `states_within`: a function of (placements, options, stacks) giving, per (placement, stack option), whether any
    layout made of them can hold its parameter states in HBM (_states_within); the pairs that cannot are not crossed
    with the settings that do not change those states. The layouts kept are the others, in the same order.
    `grad_reduce_in_fp32`: the gradient dtype of every layout; those their stack cannot run at it are not enumerated
    (space.stack_runs: DeepSpeed's ZeRO-0 with fp32 in bf16 or fp8, torchtitan with 16-bit).
    """
    if global_batch is None and batch_target is None:
        raise ValueError("enumerate_layouts needs a global_batch or a batch_target")
    stacks = [FRAMEWORKS[name] for name in runnable_stacks(frameworks, dtype, model)]
    placements = _placements(model, gpus, bool(kv_multiple_of(stacks).any()), gpus_per_node)
    p_index, micro = _micro_batches(placements, global_batch)
    options = _stack_options(stacks)
    # Sequence parallelism, the TP overlap and partitioned checkpoints only exist with tp > 1: placements without
    # tensor parallelism are crossed with the options that have none of them (a quarter of them or less).
    plain = np.flatnonzero((options[:, 3] == 0) & (options[:, 4] == 0) & (options[:, 7] == 0))
    with_tp = placements[p_index, 0] > 1
    pairs = [(np.flatnonzero(~with_tp), plain), (np.flatnonzero(with_tp), np.arange(len(options)))]
    rows = np.concatenate([np.repeat(r, len(o)) for r, o in pairs])
    option_index = np.concatenate([np.tile(o, len(r)) for r, o in pairs]).astype(np.int64)
    admitted = None
    if states_within is not None:
        # fits[placement, state, expert choice]: some layout of theirs holds its parameter states in HBM.
        option_state, fits = states_within(placements, options, stacks)
        held = fits.any(axis=2)[p_index[rows], option_state[option_index]]
        rows, option_index = rows[held], option_index[held]
        if model.is_moe:
            pair_placement, pair_state = p_index[rows], option_state[option_index]
            admitted = lambda choice, kept: fits[pair_placement[kept], pair_state[kept], choice]  # noqa: E731
    chosen = options[option_index].reshape(-1, options.shape[1])
    tp, cp, pp, vpp, dp, first_set, last_set = (placements[p_index[rows], k] for k in range(7))
    zero, offload, recompute, sp, tpo, dpo, f, pa = chosen.T
    runs = stack_runs(stacks, f, zero, tp, pp, vpp, cp, dp, dpo, model.tied_embeddings, model.seq_len, dtype,
                      grad_reduce_in_fp32, (first_set > 0) | (last_set > 0), offload=offload)
    # What each row's stack runs of its tp (_tp_runs: what tp splits, with sequence parallelism each rank's sequence).
    runs &= _tp_runs(model, placements, stacks)[p_index[rows], f, sp]
    # Micro-batch counts the stack's pipeline schedule refuses (frameworks.runnable_micro_batches): with a given
    # batch those layouts are not run; without one, the batch is rounded up to the next count the schedule runs
    # (what such a stack's user would run).
    per_stack = [micro_batch_rules(s) for s in stacks]
    schedule_rules = {name: np.array([rules[name] for rules in per_stack])[f] for name in MICRO_BATCH_RULE_FIELDS}
    if global_batch is not None:
        given = global_batch // (micro[rows] * dp)
        runs &= runnable_micro_batches(schedule_rules, pp, vpp, given) == given
    keep = np.flatnonzero(runs)
    keep, expert = _expert_rows(model, keep, tp, cp, dp, pp, vpp, recompute, f, stacks, admitted)
    expert.pop("choice", None)
    # An all-to-all overlap with a schedule of its own (DualPipe) runs only some micro-batch counts
    # (frameworks.moe.overlap_micro_batches): as above, refused with a given batch, rounded up without one.
    overlap = expert.get("a2a_overlap", np.zeros(len(keep), dtype=np.int64))
    if global_batch is not None:
        given = global_batch // (micro[rows[keep]] * dp[keep])
        runs = overlap_micro_batches(overlap, pp[keep], given) == given
        keep, overlap, expert = keep[runs], overlap[runs], {name: column[runs] for name, column in expert.items()}
    micro_batch = micro[rows[keep]]
    dp_kept = dp[keep]
    if global_batch is not None:
        batch = np.full(len(keep), global_batch)
    else:
        per_step = micro_batch * dp_kept
        steps = np.maximum(1, np.round(batch_target / per_step)).astype(np.int64)
        rules = {name: column[keep] for name, column in schedule_rules.items()}
        steps = runnable_micro_batches(rules, pp[keep], vpp[keep], steps)
        batch = overlap_micro_batches(overlap, pp[keep], steps) * per_step
    codes = np.array([FRAMEWORK_CODES[s.name] for s in stacks])
    framework = codes[f[keep]]
    # The rows of `keep` each layout comes from, hierarchy rows and ZeRO-3 refusals included, are placed first on the
    # few columns they read, so each of the other columns is gathered once: a DeepSeek-V3 search holds 22M rows.
    rows, hierarchy_columns = np.arange(len(keep)), {}
    if gpus_per_node is not None:
        placed = {"tp": tp[keep], "cp": cp[keep], "zero": zero[keep], "offload": offload[keep], "dp": dp_kept,
                  "framework": framework}
        rows, hierarchy_columns = _hierarchy_rows(placed, stacks, f[keep], gpus_per_node, hierarchy)
    take = keep[rows]
    if model.is_moe:  # (a dense model has no expert rows to refuse: no gathers for it)
        run = _runs_its_zero3_experts(model, framework[rows], zero[take], hierarchy_columns, expert["etp"][rows])
        if not run.all():
            rows, take = rows[run], take[run]
            hierarchy_columns = {name: column[run] for name, column in hierarchy_columns.items()}
    at = (lambda column: column) if len(rows) == len(keep) else (lambda column: column[rows])  # noqa: E731
    return {
        "tp": tp[take], "cp": cp[take], "pp": pp[take], "vpp": vpp[take], "dp": at(dp_kept),
        "first_stage_layers": first_set[take], "last_stage_layers": last_set[take], "micro_batch": at(micro_batch),
        "global_batch": at(batch), "zero": zero[take], "offload": offload[take], "recompute": recompute[take],
        "seq_parallel": sp[take].astype(bool), "tp_comm_overlap": tpo[take].astype(bool),
        "dp_comm_overlap": dpo[take].astype(bool), "framework": at(framework),
        "partition_activations": pa[take].astype(bool), **{name: at(column) for name, column in expert.items()},
        **hierarchy_columns,
    }


def _end_stage_columns(a: dict) -> dict:
    """A row's end-rank layers for its record, in every record (a CSV's columns): None where the stack's split is
    used (space.end_stage_fields)."""
    fields = end_stage_fields(a)
    return {name: fields.get(name) for name in ("first_stage_layers", "last_stage_layers")}


def _without_refused_zero3_experts(model: ModelSpec, arrays: dict) -> dict:
    """`arrays` less the MoE rows their stack cannot run at ZeRO-3 (frameworks.moe.zero3_expert_refused), so a
    search never plans what simulate refuses."""
    run = _runs_its_zero3_experts(model, arrays["framework"], arrays["zero"], arrays, arrays.get("etp"))
    return arrays if run.all() else {name: column[run] for name, column in arrays.items()}


def _runs_its_zero3_experts(model: ModelSpec, framework, zero, columns: dict, etp) -> np.ndarray:
    """Per row, False where the row is an MoE layout its stack cannot run at ZeRO-3 (frameworks.moe.
    zero3_expert_refused); `columns` holds the rows' zero_hpz and zero_quantized_gradients, or lacks them (flat rows)."""
    n = len(framework)
    if not model.is_moe:
        return np.ones(n, dtype=bool)
    limited = np.array([MOE_STACKS[name].zero3_expert_limits for name in FRAMEWORK_NAMES])
    return ~zero3_expert_refused(limited[framework], zero, columns.get("zero_hpz", np.ones(n)),
                                 columns.get("zero_quantized_gradients", np.zeros(n, dtype=bool)), etp)


# Columns of _stack_options that change a stage's parameter states (cost.memory.STAGE_STATE_COLUMNS): zero, offload,
# dp_comm_overlap (the gradient buckets), stack. Recompute, sequence parallelism, the TP overlap and partitioned
# checkpoints (and the micro-batch and batch) change only activations and time.
_STATE_OPTION_COLUMNS = (0, 1, 5, 6)


def _state_skeleton(model: ModelSpec, placements: np.ndarray, options: np.ndarray, stacks, gpus_per_node: int | None,
                    hierarchy: tuple) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, int]:
    """Every (placement, option's state columns) with each expert and ZeRO-3 hierarchy choice it can take under
    some setting of the other columns, as layout arrays (micro-batch 1, no recompute: the setting _expert_rows
    refuses nothing for; no batch or schedule filters, which only remove layouts). Returns the arrays, each row's
    pair number (placement x states + state) and expert choice number (0 for a dense model), each option's state
    number and the number of states."""
    states, option_state = np.unique(options[:, _STATE_OPTION_COLUMNS], axis=0, return_inverse=True)
    placement = np.repeat(np.arange(len(placements)), len(states))
    state = np.tile(np.arange(len(states)), len(placements))
    tp, cp, pp, vpp, dp, first_set, last_set = (placements[placement, k] for k in range(7))
    zero, offload, dpo, f = states[state].T
    # Sequence parallelism is not a state column: a state is kept where its tp runs with it on or off. The dtype's
    # attention rule is left to enumerate_layouts (bf16, the default, refuses the fewest: a superset is safe here).
    keep = np.flatnonzero(stack_runs(stacks, f, zero, tp, pp, vpp, cp, dp, dpo, model.tied_embeddings, model.seq_len,
                                     end_stages_set=(first_set > 0) | (last_set > 0), offload=offload)
                          & _tp_runs(model, placements, stacks).any(axis=2)[placement, f])
    none = np.full(len(placement), RECOMPUTE_CODES["none"], dtype=np.int64)
    keep, expert = _expert_rows(model, keep, tp, cp, dp, pp, vpp, none, f, stacks)
    n = len(keep)
    off = np.zeros(n, dtype=bool)
    codes = np.array([FRAMEWORK_CODES[s.name] for s in stacks])
    arrays = {
        "tp": tp[keep], "cp": cp[keep], "pp": pp[keep], "vpp": vpp[keep], "dp": dp[keep],
        "first_stage_layers": first_set[keep], "last_stage_layers": last_set[keep], "micro_batch": np.ones(n, dtype=np.int64), "global_batch": dp[keep], "zero": zero[keep],
        "offload": offload[keep], "recompute": none[keep], "seq_parallel": off, "tp_comm_overlap": off,
        "dp_comm_overlap": dpo[keep].astype(bool), "framework": codes[f[keep]], "partition_activations": off,
        "choice": np.zeros(n, dtype=np.int64), **expert, "pair": placement[keep] * len(states) + state[keep],
    }
    if gpus_per_node is not None:
        arrays = _with_hierarchy(arrays, stacks, f[keep], gpus_per_node, hierarchy)
    arrays = _without_refused_zero3_experts(model, arrays)
    pair, choice = arrays.pop("pair"), arrays.pop("choice")
    return arrays, pair, choice, np.asarray(option_state).reshape(-1), len(states)


def _expert_choices(model: ModelSpec) -> int:
    """How many (ep, etp, all-to-all overlap) choices _expert_rows numbers (1 for a dense model)."""
    return len(divisors(model.moe_experts)) * 2 * len(A2A_OVERLAPS) if model.is_moe else 1


def grad_reduce_code(grad_reduce_in_fp32: bool | None) -> int:
    """CandidateBatch's grad_reduce_in_fp32 column for a search-wide setting: -1 each stack's default, 0 the model
    dtype, 1 fp32."""
    return -1 if grad_reduce_in_fp32 is None else int(bool(grad_reduce_in_fp32))


def _states_within(model: ModelSpec, cluster: ClusterSpec, dtype: str, moe_load_imbalance: float, limit_bytes: float,
                   gpus_per_node: int | None, hierarchy: tuple, placements: np.ndarray, options: np.ndarray,
                   stacks, *, grad_reduce_in_fp32: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """enumerate_layouts' states_within for the searches that keep only the layouts that fit: each option's state
    number, and per (placement, state, expert choice) whether the smallest parameter states
    (cost.memory.state_bytes_lower_bound) of any layout made of them fit `limit_bytes`. Where it is False every
    such layout is over the limit, so dropping them before the crossing changes nothing but the time
    (tests/search/test_only_fitting.py checks it against the full crossing)."""
    arrays, pair, choice, option_state, states = _state_skeleton(model, placements, options, stacks, gpus_per_node,
                                                                 hierarchy)
    choices = _expert_choices(model)
    least = np.full(len(placements) * states * choices, np.inf)
    if len(pair):
        batch = build_batch([model], np.zeros(len(pair), dtype=np.int64), **arrays, dtype=DTYPE_CODES[dtype],
                            flash_attention=flash_attention_by_default(arrays["framework"], dtype),
                            grad_reduce_in_fp32=grad_reduce_code(grad_reduce_in_fp32))
        if model.is_moe:
            batch = dataclasses.replace(batch, **default_routing_columns(batch.framework, float(moe_load_imbalance)))
        np.minimum.at(least, pair * choices + choice, state_bytes_lower_bound(batch))
    return option_state, (least <= limit_bytes).reshape(len(placements), states, choices)


@dataclass
class LayoutSearch:
    """Every scored layout of one (model, cluster, GPU count), with the cost model's verdict."""

    model: ModelSpec
    cluster: ClusterSpec
    gpus: int
    dtype: str
    arrays: dict  # layout fields (codes as in planner.specs.layout), one entry per layout
    step_time_s: np.ndarray
    tokens_per_s: np.ndarray
    mfu: np.ndarray
    memory_bytes: np.ndarray
    fits: np.ndarray  # fits HBM and host memory
    reason_code: np.ndarray  # -1, or the index into REASONS of the first reason that rules the layout out
    goodputs: np.ndarray  # per layout: its stack's checkpoint size (cost.goodput) and evaluation passes (cost.evaluation)
    order: np.ndarray = field(default=None)  # feasible layouts, most tokens per second first
    moe_load_imbalance: float = 1.0  # MoE models: the busiest expert rank's load over the mean
    # Without a given global batch: each layout's batch (the law's target rounded to micro-batch x dp) is at most
    # the batch law's largest useful batch (batch_size.max_batch_tokens, the budget search's limit). None: all.
    within_batch_limit: np.ndarray | None = None
    # Would fit HBM and host memory without the --min-headroom margin: where `fits` is False, the margin alone
    # ruled the layout out (what an infeasible plan's explanation names). None: not recorded.
    fits_without_headroom: np.ndarray | None = None
    # Evaluation seconds per second of training, per layout (cost.evaluation; 0 where it does not fit), which
    # `goodputs` already divides by. None: not recorded.
    evaluation_fractions: np.ndarray | None = None
    # The gradient reduction's dtype every layout was scored with (Layout.grad_reduce_in_fp32; None: each stack's default).
    grad_reduce_in_fp32: bool | None = None

    @property
    def feasible(self) -> np.ndarray:
        """Fits memory and, where the search sized the batch, the batch limit."""
        return self.fits if self.within_batch_limit is None else self.fits & self.within_batch_limit

    def __post_init__(self) -> None:
        # By throughput, not step time: without a fixed global batch each layout rounds the batch law's target
        # to its own micro-batch x dp, so a shorter step can carry fewer tokens and train the tokens slower.
        # (With one global batch for all the two orders agree.) Trained tokens per second: x the stack's goodput.
        # Less memory breaks ties.
        feasible = np.flatnonzero(self.feasible)
        trained = self.tokens_per_s[feasible] * self.goodputs[feasible]
        self.order = feasible[np.lexsort((self.memory_bytes[feasible], -trained))]

    @property
    def goodput(self) -> float:
        """The best layout's goodput; without a feasible layout, the highest any layout would get."""
        return float(self.goodputs[self.best]) if self.best is not None else float(np.max(self.goodputs, initial=0.0))

    def reason(self, i: int) -> str:
        code = int(self.reason_code[i])
        return REASONS[code] if code >= 0 else ""

    def reason_counts(self) -> dict[str, int]:
        counts = np.bincount(self.reason_code[self.reason_code >= 0], minlength=len(REASONS))
        return {reason: int(n) for reason, n in zip(REASONS, counts) if n}

    def __len__(self) -> int:
        return len(self.step_time_s)

    @property
    def best(self) -> int | None:
        return int(self.order[0]) if len(self.order) else None

    def _position(self, i) -> int:
        """A layout's position, refusing None (`best` where nothing fits: numpy would index it as a new axis)."""
        if i is None:
            reasons = ", ".join(f"{n:,} {reason}" for reason, n in self.reason_counts().items()) or "none scored"
            raise PlannerInputError(f"no layout of this search fits (best is None): {reasons}")
        return int(i)

    def layout(self, i: int):
        """Layout i as a validated planner.specs.layout.Layout."""
        i = self._position(i)
        a = {k: v[i] for k, v in self.arrays.items()}
        moe = {} if "ep" not in a else dict(ep=int(a["ep"]), etp=int(a["etp"]),
                                             moe_a2a_overlap=A2A_OVERLAP_NAMES[int(a["a2a_overlap"])],
                                             moe_node_dispatch=bool(a["node_dispatch"]),
                                             moe_load_imbalance=self.moe_load_imbalance)
        return make_layout("layout", **moe, **layout_fields(a), **self._search_wide_fields(),
                           global_batch=int(a["global_batch"]), dtype=self.dtype)

    def _search_wide_fields(self) -> dict:
        """The Layout fields every layout of the search shares beyond the dtype: the gradient dtype, where given."""
        return {} if self.grad_reduce_in_fp32 is None else {"grad_reduce_in_fp32": self.grad_reduce_in_fp32}

    def rows(self, which=None) -> list[dict]:
        """Plain records (all layouts, or the positions in `which`), for a CSV or a DataFrame."""
        index = range(len(self)) if which is None else [self._position(i) for i in which]
        names = {code: name for name, code in FRAMEWORK_CODES.items()}
        out = []
        for i in index:
            a = {k: v[i] for k, v in self.arrays.items()}
            out.append({
                "gpus": self.gpus, "framework": names[int(a["framework"])], "tp": int(a["tp"]), "pp": int(a["pp"]),
                "vpp": int(a["vpp"]), **_end_stage_columns(a), "cp": int(a["cp"]), "dp": int(a["dp"]),
                "micro_batch": int(a["micro_batch"]),
                "global_batch": int(a["global_batch"]), "zero": int(a["zero"]),
                "offload": list(OFFLOAD_CODES)[int(a["offload"])], "recompute": list(RECOMPUTE_CODES)[int(a["recompute"])],
                "seq_parallel": bool(a["seq_parallel"]), "tp_comm_overlap": bool(a["tp_comm_overlap"]),
                "dp_comm_overlap": bool(a["dp_comm_overlap"]),
                "partition_activations": bool(a.get("partition_activations", False)), **_hierarchy_columns(a),
                **self._search_wide_fields(),
                "feasible": bool(self.feasible[i]), "reason": self.reason(i),
                "step_time_s": float(self.step_time_s[i]), "tokens_per_s": float(self.tokens_per_s[i]),
                "mfu": float(self.mfu[i]), "memory_gib": float(self.memory_bytes[i]) / 2**30,
            })
            if "ep" in a:
                out[-1].update({"ep": int(a["ep"]), "etp": int(a["etp"]),
                                "moe_a2a_overlap": A2A_OVERLAP_NAMES[int(a["a2a_overlap"])],
                                "moe_node_dispatch": bool(a["node_dispatch"])})
        return out


def _hierarchy_columns(a: dict) -> dict:
    """Every row's ZeRO-3 hierarchy values when the search tried them (same columns on every row, for CSVs)."""
    if "zero_hpz" not in a:
        return {}
    return {"zero_hpz": int(a["zero_hpz"]), "zero_quantized_weights": bool(a["zero_quantized_weights"]),
            "zero_quantized_gradients": bool(a["zero_quantized_gradients"]), "shard_group": int(a["shard_group"])}


def search_layouts(model: ModelSpec, cluster: ClusterSpec, gpus: int, *, moe_load_imbalance: float = 1.0,
                   global_batch: int | None = None,
                   tokens: float | None = None, frameworks=DEFAULT_FRAMEWORKS, dtype: str | None = None,
                   batch_rule: str = batch_size.DEFAULT_RULE, min_headroom: float = 0.0,
                   hierarchy: tuple = LOSSLESS_HIERARCHY, memo: dict | None = None, restrict=None,
                   only_fitting: bool = False, grad_reduce_in_fp32: bool | None = None) -> LayoutSearch:
    """Score every layout of `model` on `gpus` GPUs of `cluster`; see the module docstring.

    Without `global_batch` the batch law sizes it for `tokens` (default: 20 tokens per parameter,
    Chinchilla's compute-optimal ratio) and each layout rounds it to whole micro-batches x dp. A layout
    must leave `min_headroom` (a fraction) of HBM free. `hierarchy`: the ZeRO-3 hierarchy choices tried
    besides flat ZeRO-3 (space.hierarchy_choices; default the lossless ones, hpZ and shard groups).
    `memo`: a dict kept by a caller that searches the same model and batch again (the budget comparison's
    rounds): the layouts' memory and step times are scored once per (model, GPUs, batch target, options);
    only the batch limit, which follows the tokens, is applied anew. `restrict`: a function of the enumerated
    layout arrays returning a mask; only the layouts it keeps are scored (the fixed-model search's look at
    other GPU counts for one restriction, search.fixed_model.where_restrictions_meet_limits). `only_fitting`:
    the layouts whose parameter states alone overflow HBM (cost.memory.state_bytes_lower_bound) are dropped before
    their activations are priced, for callers that want only the best layout (the dense-vs-MoE comparison, whose
    trillion-parameter shapes overflow 70-90% of their layouts); the search then cannot say how far the others miss.
    Most are never enumerated: the (placement, stack option, expert choice) combinations none of whose layouts
    holds its states are dropped before they are crossed with micro-batches and the other settings
    (enumerate_layouts' states_within, _states_within). `dtype` None: the cluster's own training format
    (ClusterSpec.default_training_dtype). `grad_reduce_in_fp32`: every layout reduces (and accumulates) its gradients
    in fp32 (True) or in the 16-bit model dtype (False, as NVIDIA's Megatron-Bridge performance recipes do); None: as
    each stack does by default. A numerics choice, so the user's, never the search's.
    """
    dtype = dtype or cluster.default_training_dtype
    cluster.peak_flops_per_s(dtype)
    if grad_reduce_in_fp32 not in (None, True, False):  # 0 and 1 are False and True
        raise PlannerInputError(f"grad_reduce_in_fp32: expected None, True or False, got {grad_reduce_in_fp32!r}")
    # 0 and 1 as the booleans from here on: the stack rules below test `is False` (the fixed-model audit: 0 passed them
    # and priced torchtitan reducing in bf16).
    grad_reduce_in_fp32 = None if grad_reduce_in_fp32 is None else bool(grad_reduce_in_fp32)
    if grad_reduce_in_fp32 is not None and dtype == "fp32":
        raise PlannerInputError("--grad-reduce-in-fp32: fp32 training holds and reduces its gradients in fp32 whatever "
                                "it says; give it with --dtype bf16, fp16 or fp8")
    capacity = cluster.total_gpus
    if gpus > capacity:
        raise PlannerInputError(f"--gpus {gpus} exceeds cluster {cluster.name!r} ({cluster.max_nodes} nodes x "
                                f"{cluster.gpus_per_node} GPUs)")
    checked_stacks(frameworks, dtype, model)
    def reduces_in(stack):  # launches a gradient reduction in the model dtype `dtype`
        return stack.reduces_in_model_dtype and dtype not in stack.fp32_grad_reduce_forced_dtypes

    if grad_reduce_in_fp32 is False and not any(reduces_in(FRAMEWORKS[name]) for name in frameworks):
        able = ", ".join(name for name, stack in FRAMEWORKS.items() if reduces_in(stack))
        raise PlannerInputError(f"--grad-reduce-in-fp32 0: no stack searched ({', '.join(frameworks)}) launches a gradient "
                                f"reduction in {dtype} (torchtitan reduces in fp32 only, megatron-2022 its bf16 gradients); "
                                f"these do: {able}")
    target = limit = None
    if global_batch is None:
        trained = tokens if tokens else 20.0 * model.total_params
        target = batch_sequences(model, trained, batch_rule)
        # Rounding the target up to micro-batch x dp has no end at large dp (268M-token batches on 32,768 GPUs,
        # 242x the law's optimum, a few hundred steps): past this limit the tokens buy less loss than the law.
        limit = float(batch_size.max_batch_tokens(np.array([trained]), np.array([model.non_embedding_params]),
                                                  batch_rule)[0]) / model.seq_len
    key = (model.model_dump_json(), cluster.name, gpus, global_batch, target, tuple(frameworks), dtype, min_headroom,
           hierarchy, float(moe_load_imbalance), restrict, only_fitting, grad_reduce_in_fp32)
    scored = memo.get(key) if memo is not None else None
    if scored is None:
        scored = _score_layouts(model, cluster, gpus, global_batch, target, tuple(frameworks), dtype, min_headroom,
                                hierarchy, moe_load_imbalance, restrict, only_fitting, grad_reduce_in_fp32)
        if memo is not None:
            memo[key] = scored
    arrays, memory, in_hbm, fits, times = scored
    within = (np.ones(len(fits), dtype=bool) if limit is None
              else np.maximum(arrays["global_batch"], 1) <= max(limit, 1.0))
    reason = np.select([~in_hbm, ~memory["host_fits"], ~memory["nvme_fits"], ~within], [0, 1, 2, 3],
                       -1).astype(np.int8)
    return LayoutSearch(model=model, cluster=cluster, gpus=gpus, dtype=dtype, arrays=arrays,
                        step_time_s=times["step_time_s"], tokens_per_s=times["tokens_per_s"],
                        mfu=times["mfu"], memory_bytes=memory["total_bytes"], fits=fits, reason_code=reason,
                        goodputs=with_evaluation(goodput(model.total_params, float(gpus), cluster, bytes_per_param=
                            framework_arrays(arrays["framework"])["checkpoint_bytes_per_param"])["goodput"],
                            times["evaluation_fraction"]),
                        moe_load_imbalance=moe_load_imbalance, within_batch_limit=within,
                        fits_without_headroom=memory["fits"], evaluation_fractions=times["evaluation_fraction"],
                        grad_reduce_in_fp32=grad_reduce_in_fp32)


def _score_layouts(model, cluster, gpus, global_batch, target, frameworks, dtype, min_headroom, hierarchy,
                   moe_load_imbalance, restrict=None, only_fitting=False, grad_reduce_in_fp32=None):
    """Every layout of the search (those `restrict` keeps) and its memory, fit and step time (NaN where it
    does not fit)."""
    gpus_per_node = cluster.gpus_per_node if hierarchy else None
    limit = cluster.accelerator.hbm_bytes * (1.0 - min_headroom)
    within = (functools.partial(_states_within, model, cluster, dtype, moe_load_imbalance, limit, gpus_per_node, hierarchy,
                                grad_reduce_in_fp32=grad_reduce_in_fp32) if only_fitting else None)
    arrays = enumerate_layouts(model, gpus, global_batch, frameworks, target, dtype, gpus_per_node=gpus_per_node,
                               hierarchy=hierarchy, states_within=within, grad_reduce_in_fp32=grad_reduce_in_fp32)
    if restrict is not None:
        kept = np.asarray(restrict(arrays), dtype=bool)
        arrays = {name: column[kept] for name, column in arrays.items()}
    # Scored a block of layouts at a time: the cost model's intermediate arrays grow with the batch (a 12M-layout
    # DeepSeek-V3 search held 13 GB at once), the result does not.
    # On several threads (cost.row_chunks) each block is a share of SCORE_BLOCK, so the blocks in flight hold about what
    # one did (at most 8 default threads of at least FEWEST_ROWS_PER_CHUNK: 524,288 rows).
    count = len(arrays["tp"])
    threads = row_chunks.thread_count()
    bounds = row_chunks.row_bounds(count, threads, in_flight=SCORE_BLOCK)
    starts = [start for start, _ in bounds]
    blocks = list(row_chunks.in_threads(
        lambda rows: _score_block(model, cluster, {name: column[slice(*rows)] for name, column in arrays.items()},
                                  dtype, min_headroom, moe_load_imbalance, limit, only_fitting, grad_reduce_in_fp32),
        bounds, threads))
    # The layouts each block priced: all of them, or (only_fitting) those whose states fit. Taken from the whole
    # enumeration once, rather than a block's columns concatenated again (several seconds on a 3.5M-layout search).
    kept = np.concatenate([start + block[0] for start, block in zip(starts, blocks)])
    if len(kept) != count:
        arrays = {name: column[kept] for name, column in arrays.items()}
    memory, times = ({name: np.concatenate([block[i][name] for block in blocks]) for name in blocks[0][i]}
                     for i in (1, 4))
    in_hbm, fits = (np.concatenate([block[i] for block in blocks]) for i in (2, 3))
    return arrays, memory, in_hbm, fits, times


def _score_block(model, cluster, arrays, dtype, min_headroom, moe_load_imbalance, limit, only_fitting,
                 grad_reduce_in_fp32=None):
    """_score_layouts for one block of enumerated layouts: the positions in the block of the layouts it priced (every
    one, or those whose states fit where `only_fitting`), their memory, whether each is within HBM and fits, and their
    times."""
    # Attention as each stack runs it unless told (its fused kernels where they take the dtype), as the layouts the
    # search returns say (Layout.flash_attention_on).
    batch = build_batch([model], np.zeros(len(arrays["tp"]), dtype=np.int64), **arrays, dtype=DTYPE_CODES[dtype],
                        flash_attention=flash_attention_by_default(arrays["framework"], dtype),
                        grad_reduce_in_fp32=grad_reduce_code(grad_reduce_in_fp32))
    if model.is_moe:  # MoE models: the routing's load imbalance, one for the whole search, at each stack's capacity
        batch = dataclasses.replace(batch, **default_routing_columns(batch.framework, float(moe_load_imbalance)))
    priced = np.arange(len(arrays["tp"]))
    if only_fitting:  # the layouts whose parameter states alone overflow HBM cannot fit: not priced further
        priced = np.flatnonzero(state_bytes_lower_bound(batch) <= limit)
        batch = distinct.take(batch, priced)
    memory = per_gpu_memory(batch, cluster)
    in_hbm = within_hbm(memory, min_headroom)
    fits = in_hbm & memory["host_fits"] & memory["nvme_fits"]
    fitting = np.flatnonzero(fits)
    fitted = distinct.take(batch, fitting)
    times = step_time(fitted, cluster)

    def spread(values):  # back to every layout; those that do not fit get NaN
        out = np.full(len(batch), np.nan)
        out[fitting] = values
        return out

    # Only what the search keeps: a memo of whole memory breakdowns would hold gigabytes.
    memory = {k: memory[k] for k in ("total_bytes", "fits", "host_fits", "nvme_fits")}
    kept = {k: spread(times[k]) for k in ("step_time_s", "tokens_per_s", "mfu")}
    kept["evaluation_fraction"] = np.nan_to_num(spread(batch_evaluation_fraction(fitted, times)))  # cost.evaluation
    return priced, memory, in_hbm, fits, kept
