"""Parallel layout (dp, tp, pp, cp, vpp, ZeRO, offload, micro-batch, recompute): one validated, frozen object.

`Layout` holds the settings of one training job and what follows from them alone (gpus, grad accumulation,
the resolved overlaps, expert groups). Its own module because every stage of the planner reads a layout,
while the checks against a model (specs.layout_checks), the pipeline split (specs.pipeline_stages) and the
array form the cost model consumes (specs.candidate_batch) are separate questions.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.errors import PlannerInputError, validation_input_error
from planner.frameworks import FRAMEWORK_CODES, FRAMEWORK_NAMES, FRAMEWORKS, flash_attention_by_default
from planner.frameworks.moe import A2A_OVERLAP_NAMES, MOE_STACKS, routing_imbalance


class Layout(BaseModel):
    """How one training job is laid out over its GPUs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    dp: int = Field(default=1, gt=0)
    cp: int = Field(default=1, gt=0)
    vpp: int = Field(default=1, gt=0)
    # Transformer layers on the first and on the last pipeline rank, all its virtual stages together (None = the
    # stack's split, specs.pipeline_stages.stage_layers): Megatron-Core's --decoder-first/last-pipeline-num-layers,
    # or a layout string's end ranks, which NVIDIA's recipes set to make room for the embedding, the output layer,
    # the loss and multi-token-prediction blocks (pipeline_stages.split_set_by_layout). The middle ranks share the rest.
    first_stage_layers: int | None = Field(default=None, gt=0)
    last_stage_layers: int | None = Field(default=None, gt=0)
    zero: Literal[0, 1, 2, 3] = 0
    offload: Literal["none", "optimizer", "optimizer+params"] = "none"
    offload_device: Literal["cpu", "nvme"] = "cpu"
    micro_batch: int = Field(default=1, gt=0)
    global_batch: int = Field(default=1, gt=0)
    recompute: Literal["none", "selective", "full"] = "none"
    seq_parallel: bool = False
    dtype: Literal["bf16", "fp16", "fp8", "fp32"] = "bf16"
    # Fused (flash) attention; None = the framework's default (Framework.flash_attention_default).
    flash_attention: bool | None = None
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
    # Under full recompute, keep each checkpointed layer input as its 1/tp slice and all-gather it over tp before
    # the layer is recomputed (DeepSpeed `activation_checkpointing.partition_activations` / Megatron-DeepSpeed
    # --partition-activations; Megatron-LM --distribute-saved-activations): cost.memory, cost.model_parallel_comm.
    # None = the stack's default (off in every stack: planner.frameworks).
    partition_activations: bool | None = None
    # The stack's fused cross-entropy (Megatron --cross-entropy-loss-fusion --cross-entropy-fusion-impl te): the loss
    # holds Framework.fused_loss_bytes_per_logit per token x vocabulary entry instead of loss_bytes_per_logit
    # (cost.memory). Off in every stack unless set; refused where the stack has none. On Megatron it models runs made
    # with Transformer Engine 2.6-2.17 (frameworks/megatron.py); its launch config is refused (emit/megatron.py).
    loss_fusion: bool = False
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
    def flash_attention_on(self) -> bool:
        """Whether attention runs as a fused (flash) kernel: the explicit setting or the framework's default in this
        dtype (frameworks.flash_attention_by_default)."""
        if self.flash_attention is None:
            return bool(flash_attention_by_default(FRAMEWORK_CODES[self.framework], self.dtype))
        return self.flash_attention

    @property
    def dp_comm_overlap_on(self) -> bool:
        """Whether data-parallel communication overlaps compute: the explicit setting or the framework's default
        (at ZeRO-3 its default there, Framework.dp_comm_overlap_default_at_zero3; on where the stack always overlaps,
        Framework.dp_comm_overlap_always_from_zero)."""
        if self.dp_comm_overlap is None:
            stack = FRAMEWORKS[self.framework]
            if self.zero >= stack.dp_comm_overlap_always_from_zero:
                return True
            return stack.dp_comm_overlap_default_at_zero3 if self.zero == 3 else stack.dp_comm_overlap_default
        return self.dp_comm_overlap

    @property
    def partition_activations_on(self) -> bool:
        """Whether full-recompute checkpoints are partitioned over tp: the explicit setting or the stack's default;
        only with full recompute and tp > 1 (a group of one has nothing to split)."""
        chosen = (FRAMEWORKS[self.framework].partition_activations_default if self.partition_activations is None
                  else self.partition_activations)
        return bool(chosen) and self.recompute == "full" and self.tp > 1

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
    # Tokens per expert are capped at capacity_factor x the mean (None = the stack's default,
    # MoEStack.capacity_factor: dropless on Megatron, transformer_config.py:917; 1.0 on DeepSpeed); dropless
    # routing runs at the busiest expert rank's load over the mean, moe_load_imbalance (assumed 1.0 = balanced by
    # default: DeepSeek-V3's auxiliary-loss-free balancing keeps expert load balanced, arXiv:2412.19437 section
    # 2.1.2; set it from a measured run). Routing cannot put more than min(ep, experts / top_k) times the mean on
    # one rank (1 at ep 1), and the cost model prices it at most there (cost.moe.busiest_rank_load), so one
    # measured figure can be given for a search over every ep.
    moe_capacity_factor: float | None = Field(default=None, gt=0)
    moe_load_imbalance: float = Field(default=1.0, ge=1.0)
    # With a capacity factor, pad every expert's input to the capacity (Megatron's
    # moe_pad_expert_input_to_capacity, transformer_config.py:921; Megatron-Bridge's token-drop recipe,
    # training/utils/moe_token_drop.py): static shapes, so no host sync on the token counts, and every expert
    # computes capacity_factor x the mean. None = the stack's default (MoEStack.pads_to_capacity: DeepSpeed pads).
    moe_pad_to_capacity: bool | None = None
    # How the dispatch/combine all-to-all overlaps compute (planner.frameworks.moe.A2A_OVERLAPS).
    moe_a2a_overlap: Literal[A2A_OVERLAP_NAMES] = "none"
    # Dispatch each token to a remote node once, forwarded inside it over the scale-up link (DeepEP; Megatron's
    # flex dispatcher on DeepEP), rather than one copy per routed expert: fewer scale-out bytes where the routing
    # is node-limited (DeepSeek-V3's). None = the stack's default (MoEStack.dispatches_once_per_node).
    moe_node_dispatch: bool | None = None

    @property
    def moe_capacity_factor_used(self) -> float | None:
        """Tokens per expert capped at this multiple of the mean: the explicit setting or the stack's default
        (None = dropless)."""
        if self.moe_capacity_factor is None:
            return MOE_STACKS[self.framework].capacity_factor
        return self.moe_capacity_factor

    @property
    def moe_pad_to_capacity_used(self) -> bool:
        """Whether experts' inputs are padded to the capacity: the explicit setting or the stack's default."""
        if self.moe_pad_to_capacity is None:
            return MOE_STACKS[self.framework].pads_to_capacity and self.moe_capacity_factor_used is not None
        return self.moe_pad_to_capacity

    @property
    def moe_node_dispatch_used(self) -> bool:
        """Whether tokens cross to a node once: the explicit setting or the stack's default."""
        if self.moe_node_dispatch is None:
            return MOE_STACKS[self.framework].dispatches_once_per_node
        return self.moe_node_dispatch

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


def settings_used(layout: Layout) -> dict:
    """The layout's fields with each switch left to the stack (None) replaced by the value it runs at, as the text
    output shows them (the `_on` / `_used` properties): what `simulate --json` reports. Gradient-reduction dtype
    stays None (the cost model resolves it with the dtype, cost.memory), and so do the MoE routing settings."""
    return {**layout.model_dump(), "flash_attention": layout.flash_attention_on,
            "tp_comm_overlap": layout.tp_comm_overlap_on, "dp_comm_overlap": layout.dp_comm_overlap_on,
            "partition_activations": layout.partition_activations_on,
            "fp8_recipe": layout.fp8_recipe_used if layout.dtype == "fp8" else layout.fp8_recipe}


def make_layout(where: str = "layout", **values) -> Layout:
    """Build a Layout, turning validation errors into one-line PlannerInputErrors naming `where`."""
    try:
        return Layout(**values)
    except ValidationError as error:
        raise validation_input_error(error, where) from None


def moe_imbalance(layout: Layout) -> float:
    """Busiest expert rank's tokens over the mean: the dropless imbalance, capped by the capacity factor
    (tokens beyond capacity are dropped, Megatron's moe_expert_capacity_factor), or the capacity factor where
    every expert's input is padded to it (frameworks.moe.routing_imbalance)."""
    capacity = layout.moe_capacity_factor_used
    return float(routing_imbalance(layout.moe_load_imbalance, float("nan") if capacity is None else capacity,
                                   layout.moe_pad_to_capacity_used))


__all__ = ["Layout", "make_layout", "settings_used", "train_steps", "moe_imbalance"]
