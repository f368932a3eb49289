"""What differs between training stacks, as data: one small module per stack, one table here.

The cost model never branches on a framework's name. It asks this table for per-candidate arrays
(`framework_arrays(codes)`): which dtype gradients are held and reduced in, which group shards the
optimizer, how many collective calls a ZeRO-3/FSDP pass makes, which overlaps exist and are on by
default, which schedules the stack can run. Each stack's module cites the source file or doc each
value comes from. `other` (also an empty cell in a runs CSV) is a neutral default. What the stacks do with
mixture-of-experts layers (expert parallelism, all-to-all overlaps) is in `moe.py`.
"""

from __future__ import annotations

import difflib
from dataclasses import fields

import numpy as np

from planner.errors import PlannerInputError
from planner.frameworks.base import Framework
from planner.frameworks.deepspeed import DEEPSPEED
from planner.frameworks.deepspeed_v02 import DEEPSPEED_V02
from planner.frameworks.deepspeed_v03 import DEEPSPEED_V03
from planner.frameworks.fsdp import FSDP
from planner.frameworks.jax import JAX
from planner.frameworks.llm_foundry import LLM_FOUNDRY
from planner.frameworks.megascale import MEGASCALE
from planner.frameworks.megatron import MEGATRON
from planner.frameworks.megatron_2022 import MEGATRON_2022
from planner.frameworks.other import OTHER

# New stacks go at the end: a stack's code is its position, stored in candidate batches.
FRAMEWORKS: dict[str, Framework] = {f.name: f for f in (MEGATRON, DEEPSPEED, FSDP, JAX, OTHER, MEGASCALE,
                                                               DEEPSPEED_V03, LLM_FOUNDRY, MEGATRON_2022,
                                                               DEEPSPEED_V02)}
FRAMEWORK_NAMES = tuple(FRAMEWORKS)
# Stacks searched when none is named (search.layouts, the CLI's --framework): the three the cost model knows in detail.
DEFAULT_FRAMEWORKS = ("megatron", "deepspeed", "fsdp")
FRAMEWORK_CODES = {name: code for code, name in enumerate(FRAMEWORK_NAMES)}
_NUMERIC = tuple(f.name for f in fields(Framework) if f.type in ("float", "bool", "int"))
# Per stack code: whether its default fp8 recipe is per-tensor current scaling (Layout.fp8_recipe_used).
FP8_TENSORWISE_BY_DEFAULT = np.array([FRAMEWORKS[n].fp8_recipes[0] == "tensorwise" for n in FRAMEWORK_NAMES])
# Per stack code: whether it partitions full-recompute checkpoints over tp unless told (Layout.partition_activations_on).
PARTITION_ACTIVATIONS_BY_DEFAULT = np.array([FRAMEWORKS[n].partition_activations_default for n in FRAMEWORK_NAMES])
# Framework.cp_attention_buffers as numeric columns "cp_buffers_<phase>_<term>" (0 where a stack gives no phase).
CP_BUFFER_PHASES = ("forward", "backward")
CP_BUFFER_TERMS = ("q", "kv", "kv_per_rank", "out_per_rank")
CP_BUFFER_COLUMNS = tuple(f"cp_buffers_{phase}_{term}" for phase in CP_BUFFER_PHASES for term in CP_BUFFER_TERMS)


def _cp_buffer_row(stack: Framework) -> list[float]:
    given = dict(stack.cp_attention_buffers)
    if set(given) - set(CP_BUFFER_PHASES) or any(len(m) != len(CP_BUFFER_TERMS) for m in given.values()):
        raise ValueError(f"{stack.name}: cp_attention_buffers takes phases {CP_BUFFER_PHASES} with "
                         f"{len(CP_BUFFER_TERMS)} multiples each ({', '.join(CP_BUFFER_TERMS)})")
    return [float(m) for phase in CP_BUFFER_PHASES for m in given.get(phase, (0.0,) * len(CP_BUFFER_TERMS))]


def _record_row(stack: Framework) -> list[float]:
    return [float(getattr(stack, field)) for field in _NUMERIC] + _cp_buffer_row(stack)


_COLUMNS = _NUMERIC + CP_BUFFER_COLUMNS
_TABLE = np.array([_record_row(FRAMEWORKS[n]) for n in FRAMEWORK_NAMES])


def any_stack_gives(columns: dict, names) -> bool:
    """Whether any row's stack has a non-zero value in one of the numeric columns `names` (framework_arrays, or a
    record_columns dict): from the stacks' table where the batch's codes are at hand, without a pass over the rows."""
    if isinstance(columns, _FrameworkColumns):
        codes = columns._index[:1] if columns._single else np.unique(columns._index)
        return bool(np.any(_TABLE[np.ix_(codes, [_COLUMNS.index(name) for name in names])]))
    return any(bool(np.any(columns[name])) for name in names)


def record_columns(stack: Framework, rows: int = 1) -> dict[str, np.ndarray]:
    """One stack record (a changed copy too) as the per-candidate arrays the cost model reads, for `rows` rows."""
    return {name: np.full(rows, value) for name, value in zip(_COLUMNS, _record_row(stack))}


class _FrameworkColumns(dict):
    """Per-candidate framework properties, each gathered on first use (a million-row batch reads only
    the few the cost model needs)."""

    def __init__(self, codes):
        super().__init__()
        self._index = np.asarray(codes, dtype=np.int64)
        self._single = len(self._index) > 0 and bool((self._index == self._index[0]).all())

    def __missing__(self, name: str) -> np.ndarray:
        column = _TABLE[:, _COLUMNS.index(name)]
        # One stack for the whole batch (the usual case): a broadcast view, no gather.
        value = (np.broadcast_to(column[self._index[0]], self._index.shape) if self._single
                 else column[self._index])
        self[name] = value
        return value


def framework_arrays(codes) -> dict[str, np.ndarray]:
    """Per-candidate values of every numeric framework property, looked up by framework code."""
    return _FrameworkColumns(codes)


def batch_framework_arrays(batch) -> dict[str, np.ndarray]:
    """framework_arrays of a CandidateBatch's stacks, gathered once per batch (memory and step time share it)."""
    return batch.cached("framework", lambda b: framework_arrays(b.framework))


# The Framework fields runnable_micro_batches reads (base.py: "How many micro-batches a step must hold").
MICRO_BATCH_RULE_FIELDS = ("interleaving_needs_pp_micro_batches", "one_f_one_b_needs_pp_micro_batches",
                           "interleaving_rounds_divide_micro_batches", "interleaving_needs_pp_multiple")


def band_group(framework: str) -> str:
    """The stack whose published runs' error band `framework` shares (its lineage; itself when it has none or
    is not a known stack)."""
    stack = FRAMEWORKS.get(framework)
    return (stack.lineage or stack.name) if stack is not None else framework


def runnable_micro_batches(columns, pp, vpp, count) -> np.ndarray:
    """The fewest micro-batches a step at least `count` that the stack's pipeline schedule runs.

    `columns` maps the MICRO_BATCH_RULE_FIELDS to per-row values (framework_arrays, or one stack's). With
    pp > 1: interleaving (vpp > 1) or 1F1B (vpp 1) that needs a group of pp raises the count to pp; torch's
    interleaved rounds (max(1, m // pp) of them) must divide m, so the count rises to the next m they divide (a
    multiple of pp always is); a stack that asserts a multiple of pp raises it to the next one. Everything else
    runs as it is. Arrays broadcast;
    unsupported_features checks a layout against it, the searches size their batches by it."""
    pp, vpp = np.asarray(pp), np.asarray(vpp)
    piped, interleaved = pp > 1, vpp > 1
    needs_group = piped & np.where(interleaved, np.asarray(columns["interleaving_needs_pp_micro_batches"], dtype=bool),
                                   np.asarray(columns["one_f_one_b_needs_pp_micro_batches"], dtype=bool))
    count = np.maximum(np.asarray(count), np.where(needs_group, pp, 1))
    multiple = piped & interleaved & np.asarray(columns["interleaving_needs_pp_multiple"], dtype=bool)
    count = np.where(multiple, -(-count // np.maximum(pp, 1)) * np.maximum(pp, 1), count)
    rounds_rule = piped & interleaved & np.asarray(columns["interleaving_rounds_divide_micro_batches"], dtype=bool)
    if not rounds_rule.any():
        return count
    count = np.array(np.broadcast_to(count, np.broadcast_shapes(count.shape, rounds_rule.shape, pp.shape)))
    safe_pp = np.broadcast_to(np.maximum(pp, 1), count.shape)
    rounds_rule = np.broadcast_to(rounds_rule, count.shape)
    while True:  # at most pp - 1 steps: the next multiple of pp always runs
        refused = rounds_rule & (count % np.maximum(1, count // safe_pp) != 0)
        if not refused.any():
            return count
        count[refused] += 1


def flash_attention_by_default(framework_codes, dtype: str) -> np.ndarray:
    """Per stack code: whether a layout that does not say runs fused (flash) attention in `dtype` (the stack's
    default, where its fused kernels take that dtype: Framework.fused_attention_dtypes)."""
    table = np.array([s.flash_attention_default and dtype in s.fused_attention_dtypes for s in FRAMEWORKS.values()])
    return table[np.asarray(framework_codes, dtype=np.intp)]


def interleaving_round(columns, pp, count) -> np.ndarray:
    """Micro-batches per round of an interleaved pipeline schedule: the first stage's warm-up holds vpp - 1 rounds
    (cost.memory), so a round above pp costs activation memory.

    torch's ScheduleInterleaved1F1B (`columns`' interleaving_rounds_divide_micro_batches) runs max(1, m // pp)
    rounds of m / rounds (torch 2.13 distributed/pipelining/schedules.py:2935-2936). Megatron-Core's round is
    microbatch_group_size_per_vp_stage, pp by default (core/model_parallel_config.py:567-568), and a last group
    of fewer than pp is refused (NVIDIA/Megatron-LM@d98e8a64 core/pipeline_parallel/schedules.py:1165-1180): the
    round is the smallest group from pp up that divides m or leaves at least pp, which the Megatron launch names
    where it is not pp (emit/megatron.py). Stacks without interleaving run rounds of pp (unused). Arrays broadcast."""
    pp, count = np.asarray(pp), np.asarray(count)
    shape = np.broadcast_shapes(pp.shape, count.shape, np.shape(columns["interleaving_rounds_divide_micro_batches"]))
    pp, count = np.broadcast_to(np.maximum(pp, 1), shape), np.broadcast_to(count, shape)
    in_rounds = np.broadcast_to(np.asarray(columns["interleaving_rounds_divide_micro_batches"], dtype=bool), shape)
    group = np.array(pp)
    while True:  # at most m - pp steps: a group of all m always divides it
        remainder = count % group
        refused = ~in_rounds & (group < count) & (remainder > 0) & (remainder < pp)
        if not refused.any():
            break
        group[refused] += 1
    return np.where(in_rounds, count // np.maximum(1, count // pp), group)


def micro_batch_rules(stack: Framework) -> dict:
    """One stack's MICRO_BATCH_RULE_FIELDS, as runnable_micro_batches reads them for a single layout."""
    return {name: getattr(stack, name) for name in MICRO_BATCH_RULE_FIELDS}


def _micro_batch_rule(stack: Framework, layout) -> str:
    """Why the stack's pipeline schedule refuses the layout's micro-batch count (empty when it runs it)."""
    m = layout.grad_accumulation
    if int(runnable_micro_batches(micro_batch_rules(stack), layout.pp, layout.vpp, m)) == m:
        return ""
    if layout.vpp > 1 and stack.interleaving_needs_pp_multiple and m % layout.pp:
        return (f"vpp({layout.vpp}) with {m} micro-batch(es) per step: {stack.name}'s interleaved schedule needs a "
                f"multiple of pp({layout.pp})")
    if layout.vpp > 1 and stack.interleaving_needs_pp_micro_batches:
        return (f"vpp({layout.vpp}) with {m} micro-batch(es) per step: {stack.name}'s interleaved schedule needs at "
                f"least pp({layout.pp}) (a group of pp per virtual stage)")
    if layout.vpp > 1:
        return (f"vpp({layout.vpp}) with {m} micro-batches per step on pp({layout.pp}): {stack.name}'s interleaved "
                f"schedule runs max(1, m // pp) = {max(1, m // layout.pp)} rounds, which must divide m")
    return (f"{m} micro-batch(es) per step on pp({layout.pp}) stages: {stack.name}'s 1F1B schedule needs at least "
            "one per stage")


def model_unsupported(framework: str, model, layout=None, dtype: str | None = None) -> list[str]:
    """The features of `model` this stack's model code cannot build (with `layout`, on that layout and in its dtype;
    without, in `dtype` where given), each with the reason (empty when it can)."""
    stack = FRAMEWORKS[framework]
    if model.mtp_layers and not stack.runs_multi_token_prediction:
        return [f"mtp_layers({model.mtp_layers}): {framework} has no multi-token prediction (train without it, "
                "mtp_layers 0, or on megatron)"]
    if layout is not None and layout.pp > 1 and model.tied_embeddings and not stack.ties_embeddings_across_pipeline:
        return [f"tied_embeddings with pp({layout.pp}) > 1: {framework} ties the output layer to the embedding only "
                "without pipelining (set pp 1, or --tied-embeddings 0)"]
    if problems := fp8_model_unsupported(framework, model, layout.dtype if layout is not None else dtype):
        return problems
    chunks = stack.context_parallel_chunks_per_rank * (layout.cp if layout is not None else 1)
    if layout is not None and layout.cp > 1 and model.seq_len % chunks:
        return [f"seq_len({model.seq_len}) is not a multiple of {stack.context_parallel_chunks_per_rank} * "
                f"cp({layout.cp}) = {chunks}: {framework} splits the sequence into "
                f"{stack.context_parallel_chunks_per_rank} chunks per context-parallel rank"]
    return []


def fp8_model_unsupported(framework: str, model, dtype: str) -> list[str]:
    """Why this stack cannot train `model` in fp8 where its fp8 layers build one shape (Framework.fp8_layer_shape),
    or [] (any other dtype, or a stack without that limit)."""
    shape = FRAMEWORKS[framework].fp8_layer_shape
    if dtype != "fp8" or shape is None:
        return []
    mlp, norm = shape
    found = [what for what, wrong in ((f"mlp {model.mlp}", model.mlp != mlp), (f"norm {model.norm}", model.norm != norm),
                                      (f"kv_heads {model.kv} < heads {model.heads}", model.kv != model.heads),
                                      ("experts", model.is_moe), (f"{model.attention} attention", model.attention != "mha"))
             if wrong]
    if not found:
        return []
    return [f"dtype=fp8 with {', '.join(found)}: {framework}'s fp8 (Transformer Engine) layer builds only a {mlp} MLP, "
            f"{norm} and multi-head attention (train it in bf16, or on megatron)"]


def unsupported_features(framework: str, layout) -> list[str]:
    """The features of `layout` this stack cannot run, each with the reason (empty when it can)."""
    stack = FRAMEWORKS[framework]
    problems = []
    if layout.tp > 1 and not stack.supports_tensor_parallel:
        problems.append(f"tp({layout.tp}) > 1: {framework} has no tensor parallelism")
    if layout.pp > 1 and not stack.supports_pipeline:
        problems.append(f"pp({layout.pp}) > 1: {framework} has no pipeline parallelism")
    if (layout.first_stage_layers or layout.last_stage_layers) and not stack.sets_end_stage_layers:
        problems.append(f"first_stage_layers/last_stage_layers: {framework} splits the layers over its pipeline ranks by "
                        "its own rule, not by counts the layout sets (leave them unset)")
    if layout.vpp > 1 and not stack.supports_interleaving:
        problems.append(f"vpp({layout.vpp}) > 1: {framework} has no interleaved pipeline schedule")
    elif layout.pp > 1 and (reason := _micro_batch_rule(stack, layout)):
        problems.append(reason)
    if layout.cp > 1 and not stack.supports_context_parallel:
        problems.append(f"cp({layout.cp}) > 1: {framework} has no context parallelism")
    elif layout.cp > 1 and not layout.flash_attention_on and stack.context_parallel_needs_fused_attention:
        problems.append(f"flash_attention=0 with cp({layout.cp}) > 1: {framework} runs context parallelism only in its "
                        "flash or fused attention kernels, not the unfused one (plan --flash-attention 1, or cp 1)")
    if layout.activation_offload and not stack.offloads_activation_checkpoints:
        problems.append(f"activation_offload=1: {framework} keeps activation checkpoints on the GPU; it has no host "
                        "copy of them (plan --activation-offload 0)")
    if layout.zero not in stack.zero_stages:
        problems.append(f"zero={layout.zero}: {framework} supports stages {sorted(stack.zero_stages)}")
    if layout.pp > 1 and layout.zero > stack.max_zero_with_pipeline:
        problems.append(f"zero={layout.zero} with pp({layout.pp}) > 1: {framework} pipelines with ZeRO stages up to "
                        f"{stack.max_zero_with_pipeline}")
    if layout.grad_reduce_in_fp32 and layout.dtype in ("bf16", "fp8") and layout.zero < stack.fp32_grad_accumulation_min_zero:
        problems.append(f"zero={layout.zero} with grad_reduce_in_fp32 in {layout.dtype}: {framework} accumulates 16-bit "
                        f"gradients in fp32 only from ZeRO-{stack.fp32_grad_accumulation_min_zero} (set zero >= "
                        f"{stack.fp32_grad_accumulation_min_zero}, or --grad-reduce-in-fp32 0)")
    if layout.offload != "none" and not stack.supports_offload:
        problems.append(f"offload={layout.offload}: {framework} has no optimizer/parameter offload")
    elif layout.offload != "none" and layout.offload not in stack.offload_modes:
        problems.append(f"offload={layout.offload}: {framework} offloads only {' or '.join(sorted(stack.offload_modes))}")
    elif layout.offload != "none" and layout.offload_device == "nvme" and layout.zero not in stack.nvme_offload_zero_stages:
        where = (f"only at zero {' or '.join(map(str, sorted(stack.nvme_offload_zero_stages)))}"
                 if stack.nvme_offload_zero_stages else "never: it offloads to host memory")
        problems.append(f"--offload-device nvme: {framework} swaps offloaded state to NVMe {where}, got zero={layout.zero} "
                        "(use --offload-device cpu)")
    if stack.replicated_dp_alone and layout.zero == 0 and (layout.cp > 1 or (layout.dp > 1 and layout.tp * layout.pp > 1)):
        problems.append(f"zero=0 with tp, pp or cp > 1: {framework} runs replicated data parallelism only as the sole "
                        "parallelism and shards parameters over context-parallel ranks")
    # The overlap's problems after the others: where the user did not set it, it is the stack's default at that
    # ZeRO stage, which a layout the stack cannot run anyway (ZeRO-3 on megatron-2022, ZeRO-3 with deepspeed's
    # pipeline) turns on; naming a flag the user never gave beside the real reason only confuses.
    overlap_problems = []
    if layout.zero == 0 and layout.dp > 1 and layout.dp_comm_overlap_on and not stack.reduce_overlaps_at_zero0:
        overlap_problems.append(f"dp_comm_overlap at zero=0: {framework} all-reduces the gradients after backward at "
                                "ZeRO-0, behind nothing (set --dp-comm-overlap 0, or zero >= 1)")
    if layout.zero >= 1 and layout.dp_comm_overlap_on and not stack.reduce_overlaps_when_sharded:
        overlap_problems.append(f"dp_comm_overlap at zero={layout.zero}: {framework}'s sharded optimizer reduce-scatters "
                                "the gradients after backward, behind nothing (set --dp-comm-overlap 0)")
    if layout.pp > 1 and layout.zero >= 1 and layout.dp_comm_overlap_on and not stack.reduce_overlaps_with_pipeline:
        overlap_problems.append(f"dp_comm_overlap with pp({layout.pp}) > 1: {framework}'s pipeline engine reduces the "
                                "gradients after the last backward, behind nothing (set --dp-comm-overlap 0)")
    if layout.dp_comm_overlap is False and layout.zero >= stack.dp_comm_overlap_always_from_zero and layout.dp * layout.cp > 1:
        overlap_problems.append(f"dp_comm_overlap=0 at zero={layout.zero}: {framework} always overlaps its data-parallel "
                                "communication there, with no switch to turn it off (leave --dp-comm-overlap out)")
    if layout.dp_comm_overlap is not None or not problems:
        problems += overlap_problems
    if layout.grad_reduce_in_fp32 is False and layout.dtype in stack.fp32_grad_reduce_forced_dtypes:
        problems.append(f"grad_reduce_in_fp32=0 with dtype={layout.dtype}: {framework} accumulates and reduces "
                        f"{layout.dtype} gradients in fp32 always (set --grad-reduce-in-fp32 1, or leave it out)")
    if layout.flash_attention and layout.dtype not in stack.fused_attention_dtypes:
        problems.append(f"flash_attention=1 with dtype={layout.dtype}: {framework}'s fused attention takes "
                        f"{', '.join(sorted(stack.fused_attention_dtypes))} (plan --flash-attention 0, or a 16-bit dtype)")
    if layout.recompute not in stack.recompute_modes:
        problems.append(f"recompute={layout.recompute}: {framework} recomputes activations {' or '.join(stack.recompute_modes)}")
    if layout.dtype not in stack.dtypes:
        problems.append(f"dtype={layout.dtype}: {framework} trains in {', '.join(sorted(stack.dtypes))}")
    elif layout.dtype == "fp8" and layout.fp8_recipe is not None and layout.fp8_recipe not in stack.fp8_recipes:
        problems.append(f"--fp8-recipe {layout.fp8_recipe}: {framework} scales fp8 casts with "
                        f"{' or '.join(stack.fp8_recipes)}")
    elif layout.dtype == "fp8" and layout.pp > 1 and not stack.fp8_with_pipeline:
        problems.append(f"dtype=fp8 with pp({layout.pp}) > 1: {framework} builds its fp8 (Transformer Engine) layers "
                        "only without pipeline parallelism (plan pp 1, or bf16)")
    if layout.tp_comm_overlap and not stack.tp_comm_overlap_available:
        problems.append(f"tp_comm_overlap: {framework} cannot overlap tensor-parallel communication with GEMMs")
    if (layout.tp_comm_overlap and layout.tp > 1 and stack.tp_comm_overlap_needs_sequence_parallel
            and not layout.seq_parallel):
        problems.append(f"tp_comm_overlap: {framework} overlaps TP communication only with sequence parallelism (seq_parallel=1)")
    if layout.partition_activations and not stack.partition_activations_available:
        problems.append(f"--partition-activations 1: {framework} has no partitioned activation checkpoints")
    elif (layout.partition_activations and layout.seq_parallel and layout.tp > 1
          and not stack.partition_activations_with_sequence_parallel):
        problems.append(f"--partition-activations 1 with sequence parallelism: {framework} partitions checkpoints only "
                        "without it (seq_parallel=0)")
    if layout.loss_fusion and stack.fused_loss_bytes_per_logit <= 0:
        problems.append(f"--loss-fusion 1: {framework} has no fused cross-entropy option to turn on (its loss holds "
                        f"{stack.loss_bytes_per_logit:g} bytes per token and vocabulary entry as it runs)")
    if (layout.zero_hpz > 1 or layout.zero_quantized_weights or layout.zero_quantized_gradients) and not stack.zeropp:
        problems.append(f"--zero-hpz / --zero-quantized-weights / --zero-quantized-gradients: {framework} has no ZeRO++")
    elif ((layout.zero_hpz > 1 or layout.zero_quantized_gradients) and layout.tp > 1
          and stack.zeropp_groups_span_the_world):
        problems.append(f"--zero-hpz / --zero-quantized-gradients with tp({layout.tp}) > 1: {framework} builds ZeRO++'s "
                        "hpZ and qgZ groups from consecutive ranks of the whole world, which beside tensor parallelism "
                        "mix different tp shards (plan tp 1, or flat ZeRO-3)")
    if layout.shard_group is not None and not stack.shard_groups:
        problems.append(f"--shard-group: {framework} has no hierarchical (MiCS / HSDP) sharding (HSDP: --framework "
                        "fsdp; MiCS: --framework other)")
    if layout.grad_shard_group is not None and not stack.gradient_groups:
        problems.append(f"--grad-shard-group: {framework} has no gradient partition group of its own")
    return problems


def check_framework_names(names, where: str = "--framework") -> None:
    """A one-line PlannerInputError naming `where` for the first name that is not a stack, with the closest stack
    (as a misspelt cluster, law or preset gets: cli/__init__.py's rule) and every stack."""
    for name in names:
        if name not in FRAMEWORKS:
            close = difflib.get_close_matches(str(name), FRAMEWORK_NAMES, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise PlannerInputError(f"{where}: unknown stack {str(name)[:200]!r}; {hint}choose from "
                                    f"{', '.join(FRAMEWORK_NAMES)}")


__all__ = ["Framework", "FRAMEWORKS", "check_framework_names", "fp8_model_unsupported", "FRAMEWORK_NAMES", "FRAMEWORK_CODES", "FP8_TENSORWISE_BY_DEFAULT",
           "PARTITION_ACTIVATIONS_BY_DEFAULT", "framework_arrays", "batch_framework_arrays",
           "MICRO_BATCH_RULE_FIELDS", "micro_batch_rules", "runnable_micro_batches", "unsupported_features"]
