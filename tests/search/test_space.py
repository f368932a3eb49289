"""The candidate space: family shapes, GPU counts and the valid layouts among their cartesian product."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from planner.specs.layout import make_layout
from planner.specs.layout_checks import check_hierarchy_on_node, check_layout
from planner.specs.model import family_model
from planner.search import space
from planner.search.space import Space, enumerate_space, family_models, gpu_counts


def test_family_models_cover_the_range_sorted_without_duplicates():
    models = family_models(seq_len=4096, vocab=32000, n_min=1e9, n_max=70e9)
    totals = [m.total_params for m in models]
    assert len(models) > 20
    assert all(1e9 <= n <= 70e9 for n in totals)
    assert totals == sorted(totals)
    assert len({(m.layers, m.hidden) for m in models}) == len(models)
    # Nothing in range is left out: every depth x aspect shape in [n_min, n_max] is there.
    expected = set()
    for depth, aspect in itertools.product(space.DEPTHS, space.ASPECT_RATIOS):
        m = family_model(depth, aspect, seq_len=4096, vocab=32000)
        kv = 8 if m.heads >= 16 and m.heads % 8 == 0 else m.heads
        if 1e9 <= m.model_copy(update={"kv_heads": kv}).total_params <= 70e9:
            expected.add((m.layers, m.hidden))
    assert {(m.layers, m.hidden) for m in models} == expected


def test_family_models_use_128_wide_heads_and_gqa_8_from_16_heads():
    for m in family_models(seq_len=2048, vocab=32000, n_min=0, n_max=np.inf):
        assert m.hidden == 128 * m.heads
        assert m.layers % 4 == 0
        assert m.seq_len == 2048 and m.vocab == 32000 and m.mlp == "swiglu"
        if m.heads >= 16 and m.heads % 8 == 0:
            assert m.kv == 8
        else:
            assert m.kv == m.heads


def test_gpu_counts_are_sub_node_sizes_then_whole_nodes():
    counts = gpu_counts(gpus_per_node=8, max_nodes=64, exact=None, max_gpus=None)
    assert counts[:3] == [1, 2, 4]
    assert all(g % 8 == 0 for g in counts[3:])
    assert counts[-1] == 64 * 8
    assert counts == sorted(counts)


def test_gpu_counts_respect_exact_max_and_window():
    assert gpu_counts(8, 1024, exact=96, max_gpus=None) == [96]
    assert max(gpu_counts(8, 1024, exact=None, max_gpus=100)) == 96
    windowed = gpu_counts(8, 1024, exact=None, max_gpus=None, low=10, high=300)
    assert windowed == [16, 24, 32, 48, 64, 96, 128, 192, 256]
    # An empty window keeps the nearest count under the limit so infeasibility can still be explained.
    assert gpu_counts(8, 1024, exact=None, max_gpus=64, low=1000, high=2000) == [64]


@pytest.mark.parametrize("max_gpus, most", [(40, 40), (1003, 1000), (6, 6), (100, 96), (10**6, 8192)])
def test_the_most_gpus_the_limit_allows_is_tried(max_gpus, most):
    """A --max-gpus between two grid points was never tried: `optimize --model llama3-8b --tokens 1T --deadline 30d
    --max-gpus 40` answered from 32 GPUs (32.3 days) that more GPUs were needed, where 40 take 25.9 days. The
    limit's whole nodes are tried (or the limit itself within a node), never past the cluster's nodes."""
    counts = gpu_counts(8, 1024, exact=None, max_gpus=max_gpus)
    assert max(counts) == most and counts == sorted(set(counts))
    assert set(gpu_counts(8, 1024, exact=None, max_gpus=None)) >= set(counts) - {most}


def test_the_whole_cluster_is_tried_between_grid_points():
    """jean-zay-a100's 52 nodes were searched up to 48 (384 GPUs): a plan 416 GPUs meet was never offered."""
    assert gpu_counts(8, 52, exact=None, max_gpus=None)[-3:] == [256, 384, 416]
    assert gpu_counts(8, 64, exact=None, max_gpus=None)[-2:] == [384, 512]


def _reference_layouts(models, gpu_options, gpus_per_node, hierarchy=True, quantized=False):
    """The layouts space.py's docstring promises, enumerated one by one with plain Python."""
    out = []
    for mi, gpus, tp, pp, vpp, cp, sp, (zero, offload), micro, recompute in itertools.product(
            range(len(models)), gpu_options, space.TP_CHOICES, space.PP_CHOICES, space.VPP_CHOICES,
            space.CP_CHOICES, space.SEQ_PARALLEL_CHOICES,
            space.ZERO_OFFLOAD_CHOICES, space.MICRO_BATCH_CHOICES, space.RECOMPUTE_CHOICES):
        m = models[mi]
        if tp > gpus_per_node or m.heads % tp or m.kv % tp or gpus % (tp * pp * cp) or m.seq_len % cp:
            continue
        if tp == 1 and sp != space.SEQ_PARALLEL_CHOICES[0]:  # sequence parallelism needs tp > 1
            continue
        if m.layers % (pp * vpp) or (vpp > 1 and pp == 1):
            continue
        dp = gpus // (tp * pp * cp)
        if zero > 0 and dp == 1:  # ZeRO only differs from plain DP when there is something to shard over
            continue
        if pp > 1 and zero > 1:  # Megatron and DeepSpeed pipelines run with ZeRO-0/1 only
            continue
        row = (mi, gpus, tp, pp, dp, vpp, cp, bool(sp and tp > 1), zero, offload, micro, recompute)
        out.append(row + (1, False, False, 0))
        # Flat ZeRO-3 whose data-parallel group spans nodes, also with hpZ and a shard group over the node's
        # data-parallel ranks, and with `quantized` hpZ + qwZ + qgZ (the "other" stack the budget search plans for
        # runs all three).
        node_ranks = gpus_per_node // (tp * cp) if tp * cp <= gpus_per_node else 0
        if hierarchy and zero == 3 and offload == 0 and node_ranks > 1 and dp > node_ranks and dp % node_ranks == 0:
            out += [row + (node_ranks, False, False, 0), row + (1, False, False, node_ranks)]
            out += [row + (node_ranks, True, True, 0)] if quantized else []
    return out


@pytest.mark.parametrize("hierarchy, quantized", [(True, False), (True, True), (False, False)])
def test_enumerated_space_is_exactly_the_valid_cartesian_product(hierarchy, quantized):
    models = family_models(4096, 32000, 2e9, 8e9)[:4]
    gpu_options = [1, 4, 8, 24, 64]
    s = enumerate_space(models, gpu_options, gpus_per_node=8,
                        hierarchy=space.hierarchy_choices(flat=not hierarchy, quantized=quantized))
    fields = ("model_index", "gpus", "tp", "pp", "dp", "vpp", "cp", "seq_parallel", "zero", "offload", "micro_batch",
              "recompute", "zero_hpz", "zero_quantized_weights", "zero_quantized_gradients", "shard_group")
    got = sorted(zip(*(s.arrays[f].tolist() for f in fields)))
    expected = sorted(_reference_layouts(models, gpu_options, 8, hierarchy, quantized))
    assert got == expected
    assert any(row[12] > 1 or row[15] > 0 for row in got) == hierarchy
    assert any(row[13] or row[14] for row in got) == quantized  # lossy qwZ / qgZ only when asked
    raw = (len(models) * len(gpu_options) * len(space.TP_CHOICES) * len(space.PP_CHOICES) * len(space.VPP_CHOICES)
           * len(space.CP_CHOICES) * len(space.SEQ_PARALLEL_CHOICES) * len(space.ZERO_OFFLOAD_CHOICES) * len(space.MICRO_BATCH_CHOICES) * len(space.RECOMPUTE_CHOICES))
    hierarchical = np.count_nonzero((s.arrays["zero_hpz"] > 1) | (s.arrays["shard_group"] > 0))
    assert len(s) - hierarchical + s.skipped_invalid == raw
    assert isinstance(s, Space) and s.models == models


def test_every_enumerated_layout_passes_layout_validation():
    models = family_models(4096, 32000, 5e9, 40e9)[::5]
    s = enumerate_space(models, [8, 16, 48, 128], gpus_per_node=8)
    a = s.arrays
    assert np.all(a["tp"] * a["pp"] * a["dp"] * a["cp"] == a["gpus"])
    assert np.all(a["tp"] <= 8)
    rng = np.random.default_rng(0)
    hierarchical = np.flatnonzero((a["zero_hpz"] > 1) | (a["shard_group"] > 0))
    assert hierarchical.size
    for i in np.concatenate([rng.choice(len(s), size=200, replace=False), hierarchical[:60]]):
        model = models[a["model_index"][i]]
        layout = make_layout(
            tp=int(a["tp"][i]), pp=int(a["pp"][i]), dp=int(a["dp"][i]), cp=int(a["cp"][i]), vpp=int(a["vpp"][i]),
            zero=int(a["zero"][i]),
            offload=("none", "optimizer")[a["offload"][i]], micro_batch=int(a["micro_batch"][i]),
            global_batch=int(a["micro_batch"][i] * a["dp"][i]), seq_parallel=bool(a["seq_parallel"][i]),
            **space.hierarchy_fields({k: v[i] for k, v in a.items()}))
        check_layout(model, layout, gpus=int(a["gpus"][i]))
        check_hierarchy_on_node(layout, 8)


def test_offload_only_with_zero_2_or_3():
    s = enumerate_space(family_models(4096, 32000, 5e9, 10e9)[:2], [16], gpus_per_node=8)
    zero, offload = s.arrays["zero"], s.arrays["offload"]
    assert offload.any()
    assert np.all(zero[offload == 1] >= 2)


@pytest.mark.parametrize("gpus_per_node", [4, 8])
def test_tensor_parallelism_stays_inside_a_node(gpus_per_node):
    s = enumerate_space(family_models(4096, 32000, 5e9, 10e9)[:2], [64], gpus_per_node=gpus_per_node)
    assert s.arrays["tp"].max() == gpus_per_node
