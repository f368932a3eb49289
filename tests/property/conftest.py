"""Strategies for the cost-model property tests: random valid shapes, layouts and clusters.

Handed out as the session fixture `gen` (tests run with --import-mode=importlib, so they cannot
import a helper module); tests draw from it with hypothesis' `st.data()`.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import strategies as st

from planner.specs.clusters import available_clusters, load_cluster
from planner.frameworks import (FRAMEWORK_NAMES, FRAMEWORKS, fp8_model_unsupported, micro_batch_rules,
                                runnable_micro_batches)
from planner.specs.layout import Layout
from planner.specs.layout_checks import check_hierarchy_on_node, check_layout, tp_fits_the_nodes
from planner.specs.model import ModelSpec

CLUSTERS = tuple(name for name in available_clusters() if not name.endswith(".calibrated"))
HEAD_DIMS = (8, 16, 32, 64, 128)
MAX_GPUS = 256  # keeps the topology graphs small; every rule the property tests check is scale-free


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def models(draw, max_layers: int = 24) -> ModelSpec:
    heads = draw(st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16, 32]))
    hidden = heads * draw(st.sampled_from(HEAD_DIMS))
    mlp = draw(st.sampled_from(["gelu", "swiglu"]))
    return ModelSpec(
        layers=draw(st.integers(1, max_layers)), hidden=hidden, heads=heads,
        kv_heads=draw(st.sampled_from(_divisors(heads))),
        # Any width tp 16 splits (layout_checks: ffn divisible by tp), from 16 to 8 h.
        ffn=draw(st.one_of(st.none(), st.integers(1, hidden // 2).map(lambda k: 16 * k))), mlp=mlp,
        vocab=draw(st.integers(1, 160_000)), seq_len=draw(st.sampled_from([1, 2, 64, 128, 256, 1024, 2048, 4096])),
        tied_embeddings=draw(st.booleans()), position=draw(st.sampled_from(["learned", "rotary", "alibi"])),
        bias=draw(st.booleans()), norm=draw(st.sampled_from(["layernorm", "rmsnorm"])),
        embedding_norm=draw(st.booleans()),
    )


@st.composite
def layouts(draw, model: ModelSpec, cluster, **fixed) -> Layout:
    """A layout that passes check_layout for `model` and fits the cluster's GPU count and dtypes."""
    capacity = min(MAX_GPUS, cluster.max_nodes * cluster.gpus_per_node)
    # Stacks that can run what the caller fixed (a ZeRO stage, plain replicated data parallelism, tp or pp).
    zero_fixed = fixed.get("zero")
    stacks = [name for name in FRAMEWORK_NAMES if (zero_fixed is None or (
        zero_fixed in FRAMEWORKS[name].zero_stages and not (zero_fixed == 0 and FRAMEWORKS[name].replicated_dp_alone)))
        and (fixed.get("tp", 1) == 1 or FRAMEWORKS[name].supports_tensor_parallel)
        and (fixed.get("pp", 1) == 1 or (FRAMEWORKS[name].supports_pipeline and (
            not model.tied_embeddings or FRAMEWORKS[name].ties_embeddings_across_pipeline)))
        and (fixed.get("cp", 1) == 1 or FRAMEWORKS[name].supports_context_parallel)
        and (fixed.get("vpp", 1) == 1 or FRAMEWORKS[name].supports_interleaving)]
    framework = fixed.get("framework", draw(st.sampled_from(stacks)))
    stack = FRAMEWORKS[framework]
    tp_options = [d for d in _divisors(model.heads) if d <= min(16, capacity)
                  and (model.kv % d == 0 or (stack.tp_multiple_of_kv_heads and d % model.kv == 0)) and (d == 1 or stack.supports_tensor_parallel)
                  and model.ffn_size % d == 0
                  # tp groups line up with the nodes (simulate refuses the others: layout_checks.tp_fits_the_nodes)
                  and bool(tp_fits_the_nodes(d, cluster.gpus_per_node))]
    tp = fixed.get("tp", draw(st.sampled_from(tp_options)))
    # Stages may be uneven (pipeline_stages.stage_layers); each virtual stage needs a layer.
    pp_options = list(range(1, min(model.layers, 16, capacity // tp) + 1))
    if ((zero_fixed is not None and zero_fixed > stack.max_zero_with_pipeline) or not stack.supports_pipeline
            or (model.tied_embeddings and not stack.ties_embeddings_across_pipeline)):
        pp_options = [1]
    pp = fixed.get("pp", draw(st.sampled_from(pp_options)))
    vpp_options = [v for v in (1, 2, 3, 4)
                   if v == 1 or (pp > 1 and pp * v <= model.layers and stack.supports_interleaving)]
    vpp = fixed.get("vpp", draw(st.sampled_from(vpp_options)))
    # The sequence splits into the stack's chunks per cp rank (Framework.context_parallel_chunks_per_rank).
    cp_options = [c for c in (1, 2, 4) if model.seq_len % (c * (stack.context_parallel_chunks_per_rank if c > 1 else 1)) == 0
                  and tp * pp * c <= capacity
                  and (c == 1 or stack.supports_context_parallel)]
    cp = fixed.get("cp", draw(st.sampled_from(cp_options)))
    most_dp = max(1, capacity // (tp * pp * cp))
    dp = fixed.get("dp", draw(st.integers(1, min(most_dp, 32))))
    zero_options = [z for z in sorted(stack.zero_stages) if (pp == 1 or z <= stack.max_zero_with_pipeline)
                    and not (z == 0 and stack.replicated_dp_alone and (cp > 1 or (dp > 1 and tp * pp > 1)))]
    zero = fixed.get("zero", draw(st.sampled_from(zero_options)))
    offload_options = ["none"]
    if stack.supports_offload:
        offload_options += (["optimizer"] if zero >= 1 else []) + (["optimizer+params"] if zero == 3 else [])
        offload_options = [o for o in offload_options if o == "none" or o in stack.offload_modes]
    offload = fixed.get("offload", draw(st.sampled_from(offload_options)))
    micro_batch = fixed.get("micro_batch", draw(st.integers(1, 8)))
    accumulation = fixed.get("accumulation", draw(st.integers(1, 16)))
    # A count the stack's pipeline schedule runs (Megatron interleaving, torch 1F1B: at least pp; torch
    # interleaving: rounds that divide it).
    accumulation = int(runnable_micro_batches(micro_batch_rules(stack), pp, vpp, accumulation))
    # Context parallelism only on fused attention where the stack needs it (Framework.context_parallel_needs_fused_attention).
    fused_only = cp > 1 and stack.context_parallel_needs_fused_attention
    # fp8 where the stack builds its fp8 layers on this pipeline and model (Framework.fp8_with_pipeline, fp8_layer_shape).
    fp8_builds = (pp == 1 or stack.fp8_with_pipeline) and not fp8_model_unsupported(stack.name, model, "fp8")
    dtypes = [d for d in ("bf16", "fp16", "fp8", "fp32") if getattr(cluster.accelerator.peak_flops, d) and d in stack.dtypes
              and (not fused_only or d in stack.fused_attention_dtypes) and (d != "fp8" or fp8_builds)]
    dtype = fixed.get("dtype", draw(st.sampled_from(dtypes)))
    layout = Layout(
        tp=tp, pp=pp, dp=dp, cp=cp, vpp=vpp, zero=zero, offload=offload,
        # Where offloaded state goes only means something with offload (a layout refuses nvme without it), and NVMe
        # only at the stages where the stack swaps to it (Framework.nvme_offload_zero_stages).
        offload_device=fixed.get("offload_device", draw(st.sampled_from(["cpu", "nvme"]))
                                 if offload != "none" and zero in stack.nvme_offload_zero_stages else "cpu"),
        micro_batch=micro_batch, global_batch=micro_batch * dp * accumulation,
        recompute=fixed.get("recompute", draw(st.sampled_from(stack.recompute_modes))),
        # Sequence parallelism splits each rank's sequence over tp (layout_checks.check_layout).
        seq_parallel=fixed.get("seq_parallel", draw(st.booleans()) if (model.seq_len // cp) % tp == 0 else False),
        dtype=dtype,
        # Fused attention only in the dtypes the stack's kernels take (Framework.fused_attention_dtypes).
        flash_attention=fixed.get("flash_attention", True if fused_only else draw(st.booleans())
                                  if dtype in stack.fused_attention_dtypes else False),
        framework=framework,
        # An explicit overlap only where the stack runs one (DeepSpeed's ZeRO-0 and its pipeline engine reduce after
        # backward), and never off where it always overlaps (Framework.dp_comm_overlap_always_from_zero).
        dp_comm_overlap=fixed.get("dp_comm_overlap", draw(st.sampled_from(
            [None, True] if zero >= stack.dp_comm_overlap_always_from_zero and dp * cp > 1 else
            [None, False, True] if (stack.reduce_overlaps_when_sharded if zero > 0 else stack.reduce_overlaps_at_zero0)
            and (pp == 1 or stack.reduce_overlaps_with_pipeline) else [None, False]))),
    )
    sequence_parallel = layout.seq_parallel and tp > 1
    if stack.tp_comm_overlap_available and (sequence_parallel or not stack.tp_comm_overlap_needs_sequence_parallel):
        layout = layout.model_copy(update={"tp_comm_overlap": fixed.get("tp_comm_overlap", draw(st.booleans()))})
    # Partitioned full-recompute checkpoints where the stack has them (frameworks: partition_activations_*).
    if (stack.partition_activations_available and layout.recompute == "full"
            and (not sequence_parallel or stack.partition_activations_with_sequence_parallel)):
        layout = layout.model_copy(update={"partition_activations": fixed.get("partition_activations",
                                                                              draw(st.sampled_from([None, False, True])))})
    # Megatron's fp8 parameters, gathered in fp8 after the step (layout_checks: fp8, ZeRO 1 or 2, megatron or other).
    if dtype == "fp8" and zero in (1, 2) and framework in ("megatron", "other"):
        layout = layout.model_copy(update={"fp8_param_gather": fixed.get("fp8_param_gather", draw(st.booleans()))})
    layout = layout.model_copy(update=draw(_hierarchy(layout, stack, cluster.gpus_per_node)))
    check_layout(model, layout)
    check_hierarchy_on_node(layout, cluster.gpus_per_node)
    return layout


@st.composite
def _hierarchy(draw, layout: Layout, stack, gpus_per_node: int) -> dict:
    """ZeRO-3 hierarchy options (ZeRO++, shard and gradient groups, tiling) the stack runs, valid for the layout."""
    update = {}
    if layout.recompute == "full" and stack.offloads_activation_checkpoints and draw(st.booleans()):
        update["activation_offload"] = True
    if layout.zero != 3 or not draw(st.booleans()):
        return update
    update["zero_tiling"] = draw(st.sampled_from([1, 2, 4]))
    dp_divisors = _divisors(layout.dp)
    group = layout.dp
    if stack.shard_groups and draw(st.booleans()):
        group = draw(st.sampled_from(dp_divisors))
        update["shard_group"] = group
    if stack.gradient_groups and draw(st.booleans()):
        update["grad_shard_group"] = draw(st.sampled_from(_divisors(group)))
    if stack.zeropp and (layout.tp == 1 or not stack.zeropp_groups_span_the_world):
        span = layout.tp * layout.cp
        hpz = [1] + [z for z in _divisors(group) if z > 1 and gpus_per_node % (z * span) == 0]
        update["zero_hpz"] = draw(st.sampled_from(hpz))
        update["zero_quantized_weights"] = draw(st.booleans())
        update["zero_quantized_gradients"] = draw(st.booleans())
    return update


@st.composite
def clusters(draw):
    """A bundled spec, sometimes with other (valid) efficiency values."""
    cluster = load_cluster(draw(st.sampled_from(CLUSTERS)))
    if draw(st.booleans()):
        fraction = st.floats(0.05, 1.0)
        cluster = cluster.with_efficiency(
            matmul_peak_fraction=draw(fraction), fp8_matmul_relative_efficiency=draw(fraction),
            hbm_efficiency=draw(fraction),
            scale_up_bandwidth_efficiency=draw(fraction), scale_out_bandwidth_efficiency=draw(fraction),
            dp_overlap=draw(st.floats(0.0, 1.0)), tp_overlap=draw(st.floats(0.0, 1.0)),
            matmul_size_exponent=draw(st.floats(0.5, 3.0)),
            matmul_half_size=draw(st.one_of(st.none(), st.floats(1.0, 1e4))),
            step_overhead_s=draw(st.floats(0.0, 1.0)), microbatch_overhead_s=draw(st.floats(0.0, 0.1)),
            layer_overhead_s=draw(st.floats(0.0, 0.01)), latency_scale=draw(st.floats(0.1, 100.0)),
        )
    return cluster


@st.composite
def cases(draw, **fixed):
    """(model, layout, cluster): a configuration `simulate` must accept."""
    cluster = draw(clusters())
    model = draw(models())
    return model, draw(layouts(model, cluster, **fixed)), cluster


class _Strategies(SimpleNamespace):
    def __repr__(self) -> str:  # keeps hypothesis' falsifying-example report short
        return "gen"


@pytest.fixture(scope="session")
def gen():
    """Strategy builders: gen.models(), gen.layouts(model, cluster, **fixed), gen.clusters(), gen.cases(**fixed)."""
    return _Strategies(models=models, layouts=layouts, clusters=clusters, cases=cases, divisors=_divisors)
