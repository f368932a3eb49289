"""Parallel layout (dp, tp, pp, cp, vpp, ZeRO, offload, micro-batch, recompute) and candidate batches.

`Layout` is one validated, frozen layout; `check_layout(model, layout)` checks it against a model and
explains the arithmetic when it does not divide ("tp(8) * pp(4) * dp(3) * cp(1) = 96 != gpus(64)").

`CandidateBatch` is the struct-of-arrays form the cost model consumes: one numpy array per field,
one entry per candidate (model shape + layout). A single layout is a batch of size one, so the
scalar and vectorised paths are the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.errors import PlannerInputError
from planner.frameworks import (FP8_TENSORWISE_BY_DEFAULT, FRAMEWORK_CODES, FRAMEWORK_NAMES, FRAMEWORKS,
                                batch_framework_arrays, unsupported_features)
from planner.frameworks.moe import A2A_OVERLAP_CODES, A2A_OVERLAP_NAMES, moe_unsupported
from planner.specs.model import MLP_CODES, ModelSpec, flops_columns, param_breakdown, standard_attention

RECOMPUTE_CODES = {"none": 0, "selective": 1, "full": 2}
OFFLOAD_CODES = {"none": 0, "optimizer": 1, "optimizer+params": 2}
DTYPE_CODES = {"bf16": 0, "fp16": 1, "fp8": 2, "fp32": 3}
# Bytes per element of weights, activations and communicated tensors for each training dtype.
# fp8 training keeps bf16 weights/activations outside the matmuls (Transformer Engine recipe).
DTYPE_BYTES = np.array([2.0, 2.0, 2.0, 4.0])


class Layout(BaseModel):
    """How one training job is laid out over its GPUs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    dp: int = Field(default=1, gt=0)
    cp: int = Field(default=1, gt=0)
    vpp: int = Field(default=1, gt=0)
    zero: Literal[0, 1, 2, 3] = 0
    offload: Literal["none", "optimizer", "optimizer+params"] = "none"
    offload_device: Literal["cpu", "nvme"] = "cpu"
    micro_batch: int = Field(default=1, gt=0)
    global_batch: int = Field(default=1, gt=0)
    recompute: Literal["none", "selective", "full"] = "none"
    seq_parallel: bool = False
    dtype: Literal["bf16", "fp16", "fp8", "fp32"] = "bf16"
    flash_attention: bool = True
    # The training stack that runs the layout (planner.frameworks): what it shards, in which dtype,
    # which overlaps it has. "other" is a neutral default.
    framework: Literal[FRAMEWORK_NAMES] = "other"
    # Overlap tensor-parallel communication with the GEMMs (Transformer Engine userbuffers, torchtitan
    # async TP); None = the framework's default.
    tp_comm_overlap: bool | None = None
    # Overlap the gradient reduction with backward (and, where the framework has it, the parameter
    # all-gather with the next forward); None = the framework's default.
    dp_comm_overlap: bool | None = None
    # Hold and reduce gradients in fp32 (Megatron's default with bf16, `accumulate_allreduce_grads_in_fp32`)
    # or in the 16-bit model dtype (NeMo's performance recipes: grad_reduce_in_fp32=False; Megatron's
    # --grad-reduce-in-bf16); None = the framework's default.
    grad_reduce_in_fp32: bool | None = None
    # fp8 training with the Linear weights held as fp8 parameters and all-gathered in fp8 (Megatron's
    # --fp8-param-gather: Transformer Engine's fp8 model init, the distributed optimizer keeping the fp32 master;
    # NVIDIA-NeMo/Megatron-Bridge v0.2.0 src/megatron/bridge/training/mixed_precision.py:289, set by its FP8
    # current-scaling recipe): no 16-bit copy of those weights besides their fp8 data (cost.memory).
    fp8_param_gather: bool = False
    # How fp8 training scales each cast (Megatron-Core --fp8-recipe, TransformerConfig.fp8_recipe, default
    # 'delayed': megatron/core/transformer/transformer_config.py:594-600). 'delayed': the scale comes from the
    # amax history and the amax is taken inside the cast, one read of the 16-bit tensor; 'tensorwise' (per-tensor
    # current scaling, Megatron-Bridge's FP8-CS recipes): an amax pass over the tensor, a scale kernel, then the
    # cast, two reads (Transformer Engine pytorch/csrc/quantizer.cpp Float8CurrentScalingQuantizer::
    # quantize_impl). Used only with dtype fp8; None = the stack's default (`fp8_recipe_used`).
    fp8_recipe: Literal["delayed", "tensorwise"] | None = None
    # ZeRO-3 hierarchy (planner.cost.hierarchy). Defaults = flat ZeRO-3 over the whole data-parallel group.
    # ZeRO++ (Wang et al. 2023; DeepSpeed `zero_hpz_partition_size`, `zero_quantized_weights`,
    # `zero_quantized_gradients`, runtime/zero/config.py:294-310): hpZ keeps a secondary copy of the weights
    # sharded over `zero_hpz` data-parallel ranks inside a node, so backward gathers stay on the scale-up link;
    # qwZ all-gathers int8 weights; qgZ reduces gradients with a hierarchical int4 all-to-all.
    zero_hpz: int = Field(default=1, gt=0)
    zero_quantized_weights: bool = False
    zero_quantized_gradients: bool = False
    # Hierarchical partitioning: shard the model states over groups of `shard_group` data-parallel ranks and
    # replicate across dp / shard_group groups (MiCS `mics_shard_size`, PyTorch HSDP); None = the whole group.
    shard_group: int | None = Field(default=None, gt=0)
    # Gradients alone sharded over groups of `grad_shard_group` ranks (reduce-scatter inside the group,
    # all-reduce of the shard across groups at the step boundary), weights and optimizer as above: with
    # zero_hpz, the 3-level partitioning of Xu et al. on Frontier (GCD pair / node / all). None = as weights.
    grad_shard_group: int | None = Field(default=None, gt=0)
    # ZeRO-Infinity (Rajbhandari et al. 2021): memory-centric tiling splits each large Linear into this many
    # tiles fetched one at a time (section 5.1.3; DeepSpeed `TiledLinear`, runtime/zero/tiling.py:32-64), and
    # activation checkpoints kept in host memory (`activation_checkpointing.cpu_checkpointing`,
    # runtime/activation_checkpointing/checkpointing.py:59, 529-553; needs full recompute).
    zero_tiling: int = Field(default=1, gt=0)
    activation_offload: bool = False

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp * self.cp

    @property
    def tp_comm_overlap_on(self) -> bool:
        """Whether TP communication overlaps GEMMs: the explicit setting or the framework's default."""
        if self.tp_comm_overlap is None:
            return FRAMEWORKS[self.framework].tp_comm_overlap_default
        return self.tp_comm_overlap

    @property
    def dp_comm_overlap_on(self) -> bool:
        if self.dp_comm_overlap is None:
            return FRAMEWORKS[self.framework].dp_comm_overlap_default
        return self.dp_comm_overlap

    @property
    def fp8_recipe_used(self) -> str:
        """How fp8 casts are scaled: the explicit setting or the stack's default (its first fp8 recipe)."""
        return self.fp8_recipe or FRAMEWORKS[self.framework].fp8_recipes[0]

    @property
    def grad_accumulation(self) -> int:
        """Micro-batches per pipeline per optimizer step (m)."""
        return self.global_batch // (self.micro_batch * self.dp)

    # Mixture of experts (Megatron-Core's expert grid, planner.frameworks.moe): experts split over ep ranks,
    # each expert's matrices over etp ranks (None = tp, Megatron's default); ep x etp folds into the
    # tp x cp x dp ranks of a pipeline stage, and what is left, edp = tp·cp·dp / (ep·etp), is the expert
    # data-parallel group the experts' gradients and optimizer states are reduced and sharded over.
    ep: int = Field(default=1, gt=0)
    etp: int | None = Field(default=None, gt=0)
    # Tokens per expert are capped at capacity_factor x the mean (None = dropless, Megatron's default,
    # transformer_config.py:917); dropless routing runs at the busiest expert rank's load over the mean,
    # moe_load_imbalance (assumed 1.0 = balanced by default: DeepSeek-V3's auxiliary-loss-free balancing
    # keeps expert load balanced, arXiv:2412.19437 section 2.1.2; set it from a measured run).
    moe_capacity_factor: float | None = Field(default=None, gt=0)
    moe_load_imbalance: float = Field(default=1.0, ge=1.0)
    # With a capacity factor, pad every expert's input to the capacity (Megatron's
    # moe_pad_expert_input_to_capacity, transformer_config.py:921; Megatron-Bridge's token-drop recipe,
    # training/utils/moe_token_drop.py): static shapes, so no host sync on the token counts, and every expert
    # computes capacity_factor x the mean.
    moe_pad_to_capacity: bool = False
    # How the dispatch/combine all-to-all overlaps compute (planner.frameworks.moe.A2A_OVERLAPS).
    moe_a2a_overlap: Literal[A2A_OVERLAP_NAMES] = "none"

    @property
    def expert_tp(self) -> int:
        return self.etp or self.tp

    @property
    def expert_dp(self) -> int:
        """Expert data-parallel ranks: Megatron's expert_data_parallel_size (parallel_state.py:873-880)."""
        return self.tp * self.cp * self.dp // (self.ep * self.expert_tp)


def train_steps(layout: Layout, tokens: float, seq_len: int) -> int:
    """Optimizer steps to see `tokens` tokens, rounded up to a whole step: what a run executes. The plan reports
    this count and every launch target trains it (planner.emit.schedule)."""
    return math.ceil(tokens / (layout.global_batch * seq_len))


def make_layout(where: str = "layout", **values) -> Layout:
    """Build a Layout, turning validation errors into one-line PlannerInputErrors naming `where`."""
    try:
        return Layout(**values)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise PlannerInputError(f"{where}: {key}: {first['msg']} (got {first.get('input')!r})") from None


def check_layout(model: ModelSpec, layout: Layout, gpus: int | None = None, where: str = "layout") -> None:
    """Raise PlannerInputError when the layout cannot run this model, showing the arithmetic."""
    t, p, d, c, v = layout.tp, layout.pp, layout.dp, layout.cp, layout.vpp
    problems = []
    if gpus is not None and t * p * d * c != gpus:
        problems.append(f"tp({t}) * pp({p}) * dp({d}) * cp({c}) = {t * p * d * c} != gpus({gpus})")
    if model.heads % t:
        problems.append(f"heads({model.heads}) is not divisible by tp({t})")
    # Stacks shard the key/value heads whole over tp: torchtitan raises "tensor_parallel_degree must divide
    # n_kv_heads" (pytorch/torchtitan@b5bcd76c torchtitan/models/common/decoder.py:195-199), Megatron-DeepSpeed
    # divides them by tp (deepspeedai/Megatron-DeepSpeed@4efb479d megatron/model/transformer.py:566-567, `divide`
    # asserts). Megatron-Core also runs tp a multiple of them (Framework.tp_multiple_of_kv_heads).
    elif model.kv % t and not (FRAMEWORKS[layout.framework].tp_multiple_of_kv_heads and t % model.kv == 0):
        also = " or a multiple of them" if FRAMEWORKS[layout.framework].tp_multiple_of_kv_heads else ""
        problems.append(f"kv_heads({model.kv}) is not divisible by tp({t}): {layout.framework} needs tp a divisor of "
                        f"the key/value heads{also}")
    # Stages need not be even (see stage_layers), but every virtual stage needs a layer.
    if model.layers < p * v:
        problems.append(f"layers({model.layers}) < pp({p}) * vpp({v}) = {p * v}: a pipeline stage would have no layer")
    if v > 1 and p == 1:
        problems.append(f"vpp({v}) > 1 needs pipeline parallelism (pp > 1)")
    if model.seq_len % c:
        problems.append(f"seq_len({model.seq_len}) is not divisible by cp({c})")
    if layout.global_batch % (layout.micro_batch * d):
        problems.append(
            f"global_batch({layout.global_batch}) is not divisible by micro_batch({layout.micro_batch}) * dp({d})"
            f" = {layout.micro_batch * d}"
        )
    if layout.offload != "none" and layout.zero == 0:
        problems.append(f"offload={layout.offload} needs ZeRO (zero >= 1; params offload needs zero=3)")
    if layout.offload == "optimizer+params" and layout.zero != 3:
        problems.append(f"offload=optimizer+params (ZeRO-Infinity) needs zero=3, got zero={layout.zero}")
    if layout.offload_device != "cpu" and layout.offload == "none":
        problems.append(f"offload_device={layout.offload_device} says where offloaded state goes: needs --offload "
                        "optimizer or optimizer+params")
    problems += hierarchy_problems(layout)
    if layout.zero_tiling > 1 and layout.zero != 3:
        problems.append(f"--zero-tiling {layout.zero_tiling} (memory-centric tiling) needs zero=3, got zero={layout.zero}")
    if layout.moe_pad_to_capacity and layout.moe_capacity_factor is None:
        problems.append("--moe-pad-to-capacity pads each expert's input to its capacity: needs --moe-capacity-factor")
    if layout.fp8_param_gather and (layout.dtype != "fp8" or layout.zero not in (1, 2)
                                    or layout.framework not in ("megatron", "other")):
        problems.append(f"--fp8-param-gather keeps the Linear weights as fp8 parameters with the fp32 master in "
                        f"Megatron's distributed optimizer: needs dtype=fp8, zero 1 or 2 and framework megatron, got "
                        f"dtype={layout.dtype} zero={layout.zero} framework={layout.framework}")
    if layout.fp8_recipe is not None and layout.dtype != "fp8":
        problems.append(f"--fp8-recipe {layout.fp8_recipe} scales fp8 casts: needs dtype=fp8, got dtype={layout.dtype}")
    if layout.activation_offload and layout.recompute != "full":
        problems.append(f"--activation-offload keeps the activation checkpoints on the host: needs recompute=full, "
                        f"got recompute={layout.recompute}")
    problems += unsupported_features(layout.framework, layout)
    problems += moe_unsupported(layout.framework, layout, model)
    if problems:
        raise PlannerInputError(f"{where}: " + "; ".join(problems))


HIERARCHY_FLAGS = {"zero_hpz": "--zero-hpz", "shard_group": "--shard-group", "grad_shard_group": "--grad-shard-group",
                   "zero_quantized_weights": "--zero-quantized-weights",
                   "zero_quantized_gradients": "--zero-quantized-gradients"}


def _is_hierarchical(layout: Layout) -> bool:
    return (layout.zero_hpz > 1 or layout.zero_quantized_weights or layout.zero_quantized_gradients
            or layout.shard_group is not None or layout.grad_shard_group is not None)


def hierarchy_problems(layout: Layout) -> list[str]:
    """The ZeRO++ / hierarchical-partitioning settings that do not fit the layout, with the arithmetic."""
    if not _is_hierarchical(layout):
        return []
    problems = []
    if layout.zero != 3:
        problems.append(f"ZeRO++ / hierarchical partitioning (--zero-hpz, --zero-quantized-*, --shard-group, "
                        f"--grad-shard-group) needs zero=3, got zero={layout.zero}")
    d = layout.dp
    g = layout.shard_group or d
    for key, size in (("shard_group", layout.shard_group), ("grad_shard_group", layout.grad_shard_group),
                      ("zero_hpz", layout.zero_hpz)):
        if size is not None and d % size:
            problems.append(f"{HIERARCHY_FLAGS[key]} {size} does not divide dp: dp({d}) % {size} = {d % size}")
    if layout.shard_group is not None and layout.grad_shard_group is not None and g % layout.grad_shard_group:
        problems.append(f"--grad-shard-group {layout.grad_shard_group} does not divide the weight shard group "
                        f"{g}: {g} % {layout.grad_shard_group} = {g % layout.grad_shard_group}")
    if layout.shard_group is not None and layout.zero_hpz > 1 and g % layout.zero_hpz:
        problems.append(f"--zero-hpz {layout.zero_hpz} does not divide the weight shard group {g}: "
                        f"{g} % {layout.zero_hpz} = {g % layout.zero_hpz}")
    return problems


def check_hierarchy_on_node(layout: Layout, gpus_per_node: int, where: str = "layout") -> None:
    """hpZ's secondary group must lie inside one node (its point: backward gathers on the scale-up link):
    zero_hpz data-parallel ranks, tp apart (cp too), must divide the node's accelerators."""
    span = layout.zero_hpz * layout.tp * layout.cp
    if layout.zero_hpz > 1 and gpus_per_node % span:
        raise PlannerInputError(
            f"{where}: --zero-hpz {layout.zero_hpz} does not divide the node: zero_hpz({layout.zero_hpz}) * tp({layout.tp})"
            f" * cp({layout.cp}) = {span} ranks, gpus_per_node({gpus_per_node}) % {span} = {gpus_per_node % span}")


def stage_layers(layers, pp, vpp):
    """Transformer layers on the first, a middle (the fullest) and the last pipeline stage.

    Even when pp x vpp divides the layers. Otherwise as Megatron-Core splits them: when it divides
    layers + 2, the embedding and the loss each take one layer's slot
    (`--account-for-embedding-in-pipeline-split`, `--account-for-loss-in-pipeline-split`; DeepSpeed's
    pipeline engine partitions BLOOM-176B's 70 layers + 2 over pp 12 the same way), so the first and the
    last stage hold one layer fewer; else the remainder goes to the middle stages and the first and
    last stage are the lighter ones (`--decoder-first/last-pipeline-num-layers`). One stage holds all.
    """
    layers, p, v = (np.asarray(x, dtype=float) for x in (layers, pp, vpp))
    shape = np.broadcast(layers, p, v).shape
    stages = p * v
    even = layers == np.floor(layers / stages) * stages
    per_stage = layers / p
    if even.all():  # the usual case, and every candidate of a search over divisors: no uneven arithmetic
        per_stage = np.broadcast_to(per_stage, shape)
        return per_stage, per_stage, per_stage
    slots = layers + 2.0
    with_slots = ~even & (slots == np.floor(slots / stages) * stages) & (p > 1)
    middle = np.where(with_slots, slots / p, np.ceil(per_stage))
    ends_with_slots = middle - 1.0
    # Remainder to the middle stages: first and last share what the p - 2 full middle stages leave.
    rest = layers - middle * np.maximum(p - 2.0, 0.0)
    ends = np.where(p > 2, np.maximum(np.floor(rest / 2.0), 1.0), np.floor(per_stage))
    first = np.select([p == 1, even, with_slots], [layers, per_stage, ends_with_slots], np.maximum(rest - ends, ends))
    last = np.select([p == 1, even, with_slots], [layers, per_stage, ends_with_slots], ends)
    first = np.where((p == 2) & ~even & ~with_slots, np.ceil(layers / 2.0), first)
    middle = np.where(p > 2, middle, np.maximum(first, last))
    return first, middle, last


def stage_param_counts(batch: "CandidateBatch"):
    """Parameters one tp rank holds on the first, a middle and the last pipeline stage: the blocks of its
    layers, the embedding on the first, the output layer on the last (the embedding itself when tied
    and pp = 1), both with the stack's padded vocabulary rows (padded_vocab)."""
    return batch.cached("stage_params", _stage_param_counts)


def padded_vocab(batch: "CandidateBatch") -> np.ndarray:
    """The vocabulary each candidate's stack builds its embedding and output layer for: rounded up to a multiple
    of the stack's vocab_padding_multiple x tp (Megatron's make_vocab_size_divisible_by; frameworks/base.py)."""
    return batch.cached("padded_vocab", _padded_vocab)


def _padded_vocab(batch: "CandidateBatch") -> np.ndarray:
    multiple = batch_framework_arrays(batch)["vocab_padding_multiple"] * batch.tp
    return np.ceil(batch.vocab / multiple) * multiple


def vocab_padding_params(batch: "CandidateBatch") -> np.ndarray:
    """Parameters the padded vocabulary rows add to the embedding, and again to an untied output layer."""
    return (padded_vocab(batch) - batch.vocab) * batch.hidden


def _stage_param_counts(batch: "CandidateBatch"):
    first_layers, middle_layers, last_layers = batch.stages
    single_stage = batch.pp == 1
    padding = vocab_padding_params(batch)
    head = np.where(single_stage & batch.tied_embeddings, 0.0, batch.logits_params + padding)
    first = first_layers * batch.layer_params + batch.embedding_params + padding + np.where(single_stage, head, 0.0)
    last = np.where(single_stage, first, last_layers * batch.layer_params + head)
    middle = np.where(batch.pp > 2, middle_layers * batch.layer_params, np.maximum(first, last))
    return first / batch.tp, middle / batch.tp, last / batch.tp


def stage_argmax(values) -> np.ndarray:
    """Per candidate, which of the first, middle and last stage (0, 1, 2) holds the largest of `values`, three
    float arrays (or a (3, candidates) array): np.argmax over the stages, with the same answer (the first of equal
    values; a NaN counts as the largest and the first NaN wins) in half the time (numpy runs that argmax as one
    3-element loop per candidate over a transposed copy)."""
    first, middle, last = values
    past_first = ~((middle <= first) | np.isnan(first))
    larger = np.where(past_first, middle, first)
    past_middle = ~((last <= larger) | np.isnan(larger))
    return np.where(past_middle, 2, past_first.astype(np.intp))


@dataclass(frozen=True)
class CandidateBatch:
    """Struct of arrays: entry i is candidate i. All arrays have the same length."""

    # Model shape
    layers: np.ndarray
    hidden: np.ndarray
    heads: np.ndarray
    kv_heads: np.ndarray
    ffn: np.ndarray
    mlp_matrices: np.ndarray  # 2 (GELU) or 3 (SwiGLU)
    vocab: np.ndarray
    seq_len: np.ndarray
    layer_params: np.ndarray  # exact parameters of one transformer block
    embedding_params: np.ndarray  # token (+ learned position) embedding
    logits_params: np.ndarray  # output projection (a copy of the embedding on the last stage when tied and pp > 1)
    total_params: np.ndarray
    tied_embeddings: np.ndarray  # bool
    # Layout
    tp: np.ndarray
    pp: np.ndarray
    dp: np.ndarray
    cp: np.ndarray
    vpp: np.ndarray
    zero: np.ndarray
    offload: np.ndarray  # OFFLOAD_CODES
    offload_nvme: np.ndarray  # bool: ZeRO-Infinity target is NVMe rather than host memory
    micro_batch: np.ndarray
    global_batch: np.ndarray
    recompute: np.ndarray  # RECOMPUTE_CODES
    seq_parallel: np.ndarray  # bool
    flash_attention: np.ndarray  # bool
    dtype: np.ndarray  # DTYPE_CODES
    framework: np.ndarray  # FRAMEWORK_CODES
    tp_comm_overlap: np.ndarray  # bool, resolved (explicit setting or the framework's default)
    dp_comm_overlap: np.ndarray  # bool, resolved
    grad_reduce_in_fp32: np.ndarray  # -1 = the framework's default, 0 = the model dtype, 1 = fp32
    fp8_param_gather: np.ndarray  # bool
    fp8_current_scaling: np.ndarray  # bool: fp8_recipe 'tensorwise'
    # ZeRO-3 hierarchy (Layout fields of the same names; 0 = the whole sharding group)
    zero_hpz: np.ndarray
    zero_quantized_weights: np.ndarray  # bool
    zero_quantized_gradients: np.ndarray  # bool
    shard_group: np.ndarray
    grad_shard_group: np.ndarray
    zero_tiling: np.ndarray
    activation_offload: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.tp)

    def cached(self, key: str, compute):
        """compute(self), once per batch: memory and step time both need the stage split, the
        framework's columns, the activation bytes (a million-candidate batch pays for each once)."""
        memo = self.__dict__.setdefault("_memo", {})
        if key not in memo:
            memo[key] = compute(self)
        return memo[key]

    @property
    def gpus(self) -> np.ndarray:
        return self.cached("gpus", lambda b: b.tp * b.pp * b.dp * b.cp)

    @property
    def grad_accumulation(self) -> np.ndarray:
        return self.cached("grad_accumulation", lambda b: b.global_batch // (b.micro_batch * b.dp))

    @property
    def stages(self):
        """Layers on the first, fullest middle and last pipeline stage (stage_layers)."""
        return self.cached("stages", lambda b: stage_layers(b.layers, b.pp, b.vpp))

    def take(self, index) -> "CandidateBatch":
        """The sub-batch at `index` (an index array or boolean mask)."""
        return CandidateBatch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                                 for f in fields(self)})

    # Attention variants and MoE: None when every candidate is a dense model with standard attention (the
    # cost model then runs the dense path unchanged). kv_heads is then the effective count that gives the
    # attention GEMMs' weights (MLA, head_dim != hidden/heads) and ffn the per-layer mean dense MLP width.
    core_width: np.ndarray | None = None  # heads x (qk + v head dims)/2: the attention core's width (h for MHA)
    moe_layers: np.ndarray | None = None  # MoE layers of the model
    experts: np.ndarray | None = None
    top_k: np.ndarray | None = None
    expert_ffn: np.ndarray | None = None
    expert_params: np.ndarray | None = None  # routed experts' parameters of one MoE layer (all experts)
    dispatch_nodes: np.ndarray | None = None  # most nodes a token is sent to (node-limited routing), else top_k
    ep: np.ndarray | None = None
    etp: np.ndarray | None = None
    moe_imbalance: np.ndarray | None = None  # busiest expert rank's tokens over the mean (capacity-capped)
    a2a_overlap: np.ndarray | None = None  # A2A_OVERLAP_CODES
    moe_padded: np.ndarray | None = None  # 1 = expert inputs padded to capacity (static shapes)
    # Sliding-window attention: keys per query (inf = full causal); None when no model of the batch has a
    # window (the cost model then runs the full-attention path unchanged).
    attention_window: np.ndarray | None = None

    @property
    def has_moe(self) -> bool:
        return self.moe_layers is not None and bool(np.any(self.moe_layers > 0))


def model_arrays(models: list[ModelSpec]) -> dict[str, np.ndarray]:
    """Per-model scalars (shape and exact parameter parts) as arrays indexed by model number."""
    rows = []
    for model in models:
        parts = param_breakdown(model)
        norm_params = parts["norms"] / (2 * model.layers + 1 + int(model.embedding_norm))
        layer = (parts["attention"] + parts["mlp"]) / model.layers + 2 * norm_params
        logits = parts["logits"] if parts["logits"] else model.vocab * model.hidden
        rows.append((
            model.layers, model.hidden, model.heads, model.kv, model.ffn_size,
            3 if model.mlp == "swiglu" else 2, model.vocab, model.seq_len,
            layer, parts["embedding"] + parts["position"], logits, parts["total"], model.tied_embeddings,
        ))
    table = np.array(rows, dtype=float)
    names = ("layers", "hidden", "heads", "kv_heads", "ffn", "mlp_matrices", "vocab", "seq_len",
             "layer_params", "embedding_params", "logits_params", "total_params", "tied_embeddings")
    arrays = {name: table[:, i] for i, name in enumerate(names)}
    arrays["tied_embeddings"] = arrays["tied_embeddings"].astype(bool)
    if not all(standard_attention(m) and not m.is_moe for m in models):
        arrays.update(_moe_model_arrays(models))
    if any(m.attention_window is not None for m in models):
        arrays["attention_window"] = np.array([m.attention_window or np.inf for m in models], dtype=float)
    return arrays


MOE_MODEL_COLUMNS = ("core_width", "moe_layers", "experts", "top_k", "expert_ffn", "expert_params", "dispatch_nodes")


def _moe_model_arrays(models: list[ModelSpec]) -> dict[str, np.ndarray]:
    """Columns of models with an attention variant or experts; overrides kv_heads, ffn and layer_params
    with their effective values (see CandidateBatch). Multi-token-prediction modules are simulated as
    that many more layers like the last (their projection and extra logits are left out: ~4% of
    DeepSeek-V3's MTP FLOPs)."""
    rows = []
    for model in models:
        parts = param_breakdown(model)
        columns = flops_columns(model)
        h, L, H = model.hidden, model.layers, model.heads
        attention = columns.get("attention_params")
        # The kv heads that make h·(h + 2·kv·h/H) + h·h the attention GEMMs' weights (exact for MHA/GQA).
        kv = model.kv if attention is None else H * (attention / (h * h) - 2.0) / 2.0
        norm_params = parts["norms"] / (2 * L + 1 + int(model.embedding_norm))
        moe = model.moe_layers
        mtp = model.mtp_layers
        # Per-layer means over the layers and the MTP blocks (each a copy of the last layer: an MoE layer
        # when the model has experts).
        mtp_width = model.moe_shared_experts * model.expert_ffn_size if moe else model.ffn_size
        ffn = (columns["ffn"] * L + mtp * mtp_width) / (L + mtp)
        expert_params = parts.get("experts", 0.0) / moe if moe else 0.0
        mtp_dense = model.mtp_params - mtp * expert_params
        layer = (parts["attention"] + parts["mlp"] + parts.get("router", 0.0) + 2 * norm_params * L + mtp_dense) / (L + mtp)
        dispatch = min(model.moe_top_k, model.moe_topk_groups) if model.moe_groups > 1 else model.moe_top_k
        rows.append((L + mtp, kv, ffn, layer, columns.get("core_width", h), moe + (mtp if moe else 0), model.moe_experts,
                     model.moe_top_k, model.expert_ffn_size if moe else 0.0, expert_params, dispatch))
    table = np.array(rows, dtype=float)
    names = ("layers", "kv_heads", "ffn", "layer_params") + MOE_MODEL_COLUMNS
    return {name: table[:, i] for i, name in enumerate(names)}


def build_batch(models: list[ModelSpec], model_index, **layout_arrays) -> CandidateBatch:
    """Gather model arrays by `model_index` and broadcast them with the layout arrays."""
    per_model = model_arrays(models)
    index = np.asarray(model_index, dtype=np.int64)
    columns = {name: values[index] for name, values in per_model.items()}
    defaults = dict(tp=1, pp=1, dp=1, cp=1, vpp=1, zero=0, offload=0, offload_nvme=False, micro_batch=1,
                    global_batch=1, recompute=0, seq_parallel=False, flash_attention=True, dtype=0,
                    framework=FRAMEWORK_CODES["other"], tp_comm_overlap=False,
                    dp_comm_overlap=FRAMEWORKS["other"].dp_comm_overlap_default, grad_reduce_in_fp32=-1,
                    fp8_param_gather=False,
                    zero_hpz=1, zero_quantized_weights=False, zero_quantized_gradients=False, shard_group=0,
                    grad_shard_group=0, zero_tiling=1, activation_offload=False)
    current_scaling = layout_arrays.pop("fp8_current_scaling", None)
    for name, default in defaults.items():
        value = np.asarray(layout_arrays.pop(name, default))
        columns[name] = np.broadcast_to(value, index.shape).astype(value.dtype if value.dtype == bool else float)
    if current_scaling is None:  # fp8 casts scaled as each stack does by default (Layout.fp8_recipe_used)
        current_scaling = ((columns["dtype"] == DTYPE_CODES["fp8"])
                           & FP8_TENSORWISE_BY_DEFAULT[columns["framework"].astype(np.int64)])
    columns["fp8_current_scaling"] = np.broadcast_to(np.asarray(current_scaling, dtype=bool), index.shape)
    # MoE layout columns, only when a model has the MoE/attention-variant columns (else dense path).
    moe_defaults = dict(ep=1.0, etp=columns["tp"], moe_imbalance=1.0, a2a_overlap=0.0, moe_padded=0.0)
    moe_layout = {name: layout_arrays.pop(name) for name in moe_defaults if name in layout_arrays}
    if "moe_layers" in columns:
        for name, default in moe_defaults.items():
            columns[name] = np.broadcast_to(np.asarray(moe_layout.get(name, default), dtype=float), index.shape)
    elif any(np.any(np.asarray(moe_layout[name]) != default) for name, default in moe_defaults.items()
             if name in moe_layout and name != "etp"):
        raise ValueError("ep, moe_imbalance and a2a_overlap need an MoE model")
    if layout_arrays:
        raise TypeError(f"unknown layout arrays: {sorted(layout_arrays)}")
    return CandidateBatch(**columns)


def single_batch(model: ModelSpec, layout: Layout) -> CandidateBatch:
    """A batch of one: the scalar path through the same vectorised code."""
    return layouts_batch([model], [layout])


def layouts_batch(models: list[ModelSpec], layouts: list[Layout]) -> CandidateBatch:
    """Candidate i is models[i] with layouts[i] (validation and calibration rows, one batch)."""
    column = lambda f: np.array([f(layout) for layout in layouts])  # noqa: E731
    return build_batch(
        models, np.arange(len(layouts)), **_moe_layout_columns(layouts, column),
        tp=column(lambda l: l.tp), pp=column(lambda l: l.pp), dp=column(lambda l: l.dp), cp=column(lambda l: l.cp),
        vpp=column(lambda l: l.vpp), zero=column(lambda l: l.zero), offload=column(lambda l: OFFLOAD_CODES[l.offload]),
        offload_nvme=column(lambda l: l.offload_device == "nvme"), micro_batch=column(lambda l: l.micro_batch),
        global_batch=column(lambda l: l.global_batch), recompute=column(lambda l: RECOMPUTE_CODES[l.recompute]),
        seq_parallel=column(lambda l: l.seq_parallel and l.tp > 1), flash_attention=column(lambda l: l.flash_attention),
        dtype=column(lambda l: DTYPE_CODES[l.dtype]), framework=column(lambda l: FRAMEWORK_CODES[l.framework]),
        tp_comm_overlap=column(lambda l: l.tp_comm_overlap_on and l.tp > 1),
        dp_comm_overlap=column(lambda l: l.dp_comm_overlap_on),
        grad_reduce_in_fp32=column(lambda l: _tristate(l.grad_reduce_in_fp32)),
        fp8_param_gather=column(lambda l: l.fp8_param_gather),
        fp8_current_scaling=column(lambda l: l.dtype == "fp8" and l.fp8_recipe_used == "tensorwise"),
        zero_hpz=column(lambda l: l.zero_hpz), zero_quantized_weights=column(lambda l: l.zero_quantized_weights),
        zero_quantized_gradients=column(lambda l: l.zero_quantized_gradients),
        shard_group=column(lambda l: l.shard_group or 0), grad_shard_group=column(lambda l: l.grad_shard_group or 0),
        zero_tiling=column(lambda l: l.zero_tiling), activation_offload=column(lambda l: l.activation_offload),
    )


def _moe_layout_columns(layouts: list[Layout], column) -> dict:
    """ep, etp, the effective load imbalance and the overlap code, only for layouts that use them."""
    if all(l.ep == 1 and l.etp is None and l.moe_a2a_overlap == "none" and l.moe_load_imbalance == 1.0
           and l.moe_capacity_factor is None and not l.moe_pad_to_capacity for l in layouts):
        return {}
    return {"ep": column(lambda l: l.ep), "etp": column(lambda l: l.expert_tp),
            "moe_imbalance": column(lambda l: moe_imbalance(l)), "a2a_overlap": column(lambda l: A2A_OVERLAP_CODES[l.moe_a2a_overlap]),
            "moe_padded": column(lambda l: float(l.moe_pad_to_capacity))}


def moe_imbalance(layout: Layout) -> float:
    """Busiest expert rank's tokens over the mean: the dropless imbalance, capped by the capacity factor
    (tokens beyond capacity are dropped, Megatron's moe_expert_capacity_factor)."""
    if layout.moe_capacity_factor is None:
        return layout.moe_load_imbalance
    if layout.moe_pad_to_capacity:  # every expert's input padded to the capacity
        return layout.moe_capacity_factor
    return min(layout.moe_load_imbalance, layout.moe_capacity_factor)


def _tristate(value: bool | None) -> int:
    return -1 if value is None else int(value)


__all__ = ["Layout", "make_layout", "check_layout", "hierarchy_problems", "check_hierarchy_on_node", "stage_layers", "stage_param_counts", "padded_vocab", "vocab_padding_params", "stage_argmax", "CandidateBatch", "build_batch", "single_batch",
           "layouts_batch", "FRAMEWORK_CODES",
           "RECOMPUTE_CODES", "OFFLOAD_CODES", "DTYPE_CODES", "DTYPE_BYTES", "MLP_CODES"]
