"""Checks of a layout against a model and a cluster node, each failure showing its arithmetic.

`check_layout(model, layout)` explains why a layout cannot run a model ("tp(8) * pp(4) * dp(3) * cp(1) = 96
!= gpus(64)"); the ZeRO++ / hierarchical-partitioning checks need the data-parallel size and the node.
Its own module because these checks join a layout with a model, a framework and a node, while
specs.layout holds only what a layout is.
"""

from __future__ import annotations

import numpy as np

from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORKS, model_unsupported, unsupported_features
from planner.frameworks.moe import moe_unsupported
from planner.specs.layout import Layout
from planner.specs.model import ModelSpec
from planner.specs.pipeline_stages import fits_the_chunks, lightest_middle, split_set_by_layout


def tp_splits_model(heads, kv_heads, ffn, seq_len, tp, cp, seq_parallel, kv_multiple):
    """Where tp splits what tensor parallelism splits, by check_layout's rules (below, with their sources), on
    arrays for the searches: the heads, the key/value heads whole (or tp a multiple of them where the stack runs
    that, `kv_multiple`: Framework.tp_multiple_of_kv_heads), the MLP's inner width, and with sequence
    parallelism each rank's seq_len / cp."""
    tp = np.asarray(tp)
    kv_whole = (kv_heads % tp == 0) | (np.asarray(kv_multiple, dtype=bool) & (tp % kv_heads == 0))
    sequence = ~np.asarray(seq_parallel, dtype=bool) | (tp == 1) | ((seq_len // cp) % tp == 0)
    return (heads % tp == 0) & kv_whole & (ffn % tp == 0) & sequence


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
    # The MLP's inner width is split evenly over tp: Megatron-Core's RowParallelLinear divides its input size by
    # tp, and `divide` asserts (NVIDIA/Megatron-LM@d98e8a6 megatron/core/tensor_parallel/layers.py:1408).
    if model.ffn_size % t:
        problems.append(f"ffn({model.ffn_size}) is not divisible by tp({t})")
    # Sequence parallelism splits each rank's sequence (seq_len / cp) over tp along its first dimension, which
    # must divide (megatron/core/tensor_parallel/mappings.py:71-74 `_split_along_first_dim`).
    if layout.seq_parallel and t > 1 and (model.seq_len // c) % t:
        problems.append(f"seq_len({model.seq_len}) / cp({c}) = {model.seq_len // c} is not divisible by tp({t}): "
                        "sequence parallelism splits it over tp")
    # Stages need not be even (see stage_layers), but there must be a layer per chunk, or, interleaved, the split
    # must give the embedding and the loss a layer's slot each (fits_the_chunks).
    if not fits_the_chunks(model.layers, p, v):
        problems.append(f"layers({model.layers}) < pp({p}) * vpp({v}) = {p * v}: a pipeline stage would have no layer "
                        f"(with the embedding and the loss in a stage's slot each, pp x vpp must divide layers + 2 "
                        f"= {model.layers + 2})")
    if v > 1 and p == 1:
        problems.append(f"vpp({v}) > 1 needs pipeline parallelism (pp > 1)")
    problems += end_stage_problems(model.layers, layout)
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
    if layout.moe_pad_to_capacity and layout.moe_capacity_factor_used is None:
        problems.append(f"--moe-pad-to-capacity pads each expert's input to its capacity: needs --moe-capacity-factor "
                        f"({layout.framework} is dropless by default)")
    if layout.fp8_param_gather and (layout.dtype != "fp8" or layout.zero not in (1, 2)
                                    or not FRAMEWORKS[layout.framework].runs_fp8_param_gather):
        problems.append(f"--fp8-param-gather keeps the Linear weights as fp8 parameters with the fp32 master in "
                        f"Megatron's distributed optimizer: needs dtype=fp8, zero 1 or 2 and framework megatron, got "
                        f"dtype={layout.dtype} zero={layout.zero} framework={layout.framework}")
    if layout.fp8_recipe is not None and layout.dtype != "fp8":
        problems.append(f"--fp8-recipe {layout.fp8_recipe} scales fp8 casts: needs dtype=fp8, got dtype={layout.dtype}")
    if layout.partition_activations and layout.recompute != "full":
        problems.append(f"--partition-activations partitions the checkpoints of full recompute: needs recompute=full, "
                        f"got recompute={layout.recompute}")
    if layout.activation_offload and layout.recompute != "full":
        problems.append(f"--activation-offload keeps the activation checkpoints on the host: needs recompute=full, "
                        f"got recompute={layout.recompute}")
    problems += unsupported_features(layout.framework, layout)
    problems += model_unsupported(layout.framework, model, layout)
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


def tp_fits_the_nodes(tp, gpus_per_node):
    """Whether tensor-parallel groups (tp consecutive ranks: the cost model places tp innermost) line up with the
    nodes: tp divides the node's accelerators, or is a whole number of nodes. Otherwise some groups straddle two
    nodes and the group shape (specs.topology.group_shape) priced them all as on NVLink (tp 4 on 6-GPU nodes).
    Arrays broadcast."""
    tp = np.asarray(tp)
    return (gpus_per_node % tp == 0) | (tp % gpus_per_node == 0)


def check_tp_on_nodes(layout: Layout, gpus_per_node: int, where: str = "layout") -> None:
    if not tp_fits_the_nodes(layout.tp, gpus_per_node):
        raise PlannerInputError(
            f"{where}: tp({layout.tp}) neither divides nor is a multiple of gpus_per_node({gpus_per_node}): its "
            "groups would straddle nodes unevenly; use a tp that divides the node")


def check_hierarchy_on_node(layout: Layout, gpus_per_node: int, where: str = "layout") -> None:
    """hpZ's secondary group must lie inside one node (its point: backward gathers on the scale-up link):
    zero_hpz data-parallel ranks, tp apart (cp too), must divide the node's accelerators."""
    span = layout.zero_hpz * layout.tp * layout.cp
    if layout.zero_hpz > 1 and gpus_per_node % span:
        raise PlannerInputError(
            f"{where}: --zero-hpz {layout.zero_hpz} does not divide the node: zero_hpz({layout.zero_hpz}) * tp({layout.tp})"
            f" * cp({layout.cp}) = {span} ranks, gpus_per_node({gpus_per_node}) % {span} = {gpus_per_node % span}")


def end_stage_problems(layers: int, layout: Layout) -> list[str]:
    """What is wrong with the end ranks' layers the layout sets (Layout.first_stage_layers, last_stage_layers) over
    `layers` transformer layers: they need a pipeline, and every rank a layer per virtual stage, the middle ranks
    sharing what the ends leave (pipeline_stages.split_set_by_layout; Megatron-Core refuses an end of no layers and
    middle ranks left without layers, NVIDIA/Megatron-LM@d98e8a64 megatron/core/transformer/transformer_config.py:
    2302-2345)."""
    first, last, p, v = layout.first_stage_layers, layout.last_stage_layers, layout.pp, layout.vpp
    if first is None and last is None:
        return []
    named = " and ".join(f"{name}({value})" for name, value in (("first_stage_layers", first),
                                                                ("last_stage_layers", last)) if value is not None)
    if p == 1:
        return [f"{named} set the end pipeline ranks' layers: needs pipeline parallelism (pp > 1)"]
    f, m, l = (int(x) for x in split_set_by_layout(layers, p, first or 0, last or 0))
    ends = f + l
    if p == 2 and first is not None and last is not None and ends != layers:
        return [f"{named}: with pp(2) the two ranks hold all {layers} transformer layers, got {ends}"]
    fewest = lightest_middle(layers, p, f, l, m)
    if ends > layers or min(f, l, fewest) < v:
        verb = "leave" if first is not None and last is not None else "leaves"
        return [f"{named} {verb} a pipeline rank fewer than vpp({v}) of the {layers} transformer layers (first {f}, "
                f"middle ranks {fewest}..{m}, last {l}): every virtual stage needs a layer"]
    return []


__all__ = ["check_layout", "end_stage_problems", "tp_splits_model", "hierarchy_problems", "check_hierarchy_on_node", "check_tp_on_nodes",
           "tp_fits_the_nodes", "HIERARCHY_FLAGS"]
