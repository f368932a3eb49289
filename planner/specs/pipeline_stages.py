"""Pipeline stages: which layers and parameters sit on the first, a middle and the last stage.

The stage split (as Megatron-Core makes it, even or uneven), the vocabulary the stack pads its embedding and
output layer to, and the parameters one tp rank holds on each stage. Its own module because memory, step
time and the launch files all read the same split, and it is derived from a batch of candidates rather
than a property of one layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from planner.frameworks import batch_framework_arrays
from planner.frameworks.moe import pairs_stages

from planner.specs.model import model_training_flops

if TYPE_CHECKING:
    from planner.specs.candidate_batch import CandidateBatch
    from planner.specs.model import ModelSpec


def batch_stage_layers(batch: "CandidateBatch"):
    """stage_layers of each candidate, split as its stack splits (Framework.uneven_layers_to_first_stages) or as
    its layout sets the end ranks (Layout.first_stage_layers, last_stage_layers)."""
    first_heavy = batch_framework_arrays(batch)["uneven_layers_to_first_stages"] > 0
    return stage_layers(batch.layers - batch.mtp_layers, batch.pp, batch.vpp, batch.mtp_layers, first_heavy,
                        batch.first_stage_layers, batch.last_stage_layers)


def stage_layers(layers, pp, vpp, mtp_layers=0, first_heavy=False, first_set=0, last_set=0):
    """Transformer layers on the first, a middle (the fullest) and the last pipeline stage, with the
    `mtp_layers` multi-token-prediction blocks on the last.

    Even when pp x vpp divides the layers. Otherwise as Megatron-Core splits them: when it divides
    layers + 2, the embedding and the loss each take one layer's slot
    (`--account-for-embedding-in-pipeline-split`, `--account-for-loss-in-pipeline-split`; BLOOM-176B's
    Megatron-DeepSpeed fork split its 70 layers + 2 over pp 12 the same way, with `--pp-partition-method
    'type:transformer|embedding'`, which today's Megatron-DeepSpeed does not offer), so the first and the
    last stage hold one layer fewer; else the remainder goes to the middle stages and the first and
    last stage are the lighter ones (`--decoder-first/last-pipeline-num-layers`). One stage holds all.
    Where `first_heavy` (DeepSpeed's partition_balanced, Framework.uneven_layers_to_first_stages), the first
    (layers mod pp) stages hold one layer more than the rest instead.

    The multi-token-prediction blocks need the output layer, so they run where it does, after the split of the
    transformer layers: Megatron-Core builds them all on the last pipeline stage unless a layout string places
    them (NVIDIA/Megatron-LM@d98e8a64 megatron/core/transformer/multi_token_prediction.py:823-829, 877-881; the
    emitter's layout string puts them there too), and DeepSeek-V3 keeps them with the output head
    (arXiv:2412.19437 section 3.2.3).

    `first_set`, `last_set` (> 0; 0 = the rule above): the transformer layers the layout puts on the first and the
    last rank, as Megatron-Core's `--decoder-first-pipeline-num-layers` / `--decoder-last-pipeline-num-layers` or a
    layout string set them (split_set_by_layout).
    """
    first, middle, last = _transformer_stage_layers(layers, pp, vpp)
    if np.any(first_heavy):
        first, middle, last = _first_heavy(layers, pp, np.asarray(first_heavy), first, middle, last)
    if np.any(first_set) or np.any(last_set):
        first, middle, last = _split_set_by_layout(layers, pp, first_set, last_set, first, middle, last)
    mtp = np.asarray(mtp_layers, dtype=float)
    if not np.any(mtp):
        return first, middle, last
    p = np.asarray(pp)
    last = last + mtp
    first = np.where(p == 1, last, first)  # one stage holds all
    # With two stages or one, `middle` stands for the fuller end (as _transformer_stage_layers gives it).
    return first, np.where(p > 2, middle, np.maximum(first, last)), last


def slots_split(layers, pp, vpp):
    """Where the split counts the embedding and the loss as a layer each (stage_layers): pp x vpp does not divide the
    layers but divides layers + 2, with a pipeline. The one test of it: the split, the activations in flight
    (cost.memory), which chunks may hold no layer (fits_the_chunks) and the launch (specs.pipeline_chunks.split_kind)."""
    layers, p, v = np.asarray(layers), np.asarray(pp), np.asarray(vpp)
    chunks = p * v
    return (p > 1) & (layers % chunks != 0) & ((layers + 2) % chunks == 0)


def fits_the_chunks(layers, pp, vpp):
    """Whether `layers` transformer layers fill pp x vpp pipeline chunks as simulate accepts them: at least as many
    layers as chunks, or, interleaved, the split that counts the embedding and the loss as a layer each (pp x vpp
    divides layers + 2, stage_layers) with the first and last chunk holding only them. Megatron-Core builds such
    chunks (`--account-for-embedding-in-pipeline-split`, `--account-for-loss-in-pipeline-split`:
    NVIDIA/Megatron-LM@d98e8a64 megatron/core/transformer/transformer_config.py:2386-2413, which asks only that pp
    divides layers + 2 and vpp the quotient); NVIDIA's Llama 3.1 405B recipe on B200 runs 126 layers on pp 16 x
    vpp 8 so (Megatron-Bridge@067f987d perf_recipes/llama/b200/llama31.py:34). An uneven split can still leave a
    chunk of a light first or last rank empty; the searches skip those (interleavings)."""
    layers, v = np.asarray(layers), np.asarray(vpp)
    return (layers >= np.asarray(pp) * v) | ((v > 1) & slots_split(layers, pp, vpp))


def _every_chunk_holds_a_layer(layers: int, pp: int, vpp: int) -> bool:
    """Whether every chunk of the split holds a transformer layer, the embedding's and the loss's own slots
    excepted: every rank holds at least vpp layers (specs.pipeline_chunks.rank_layers deals the middle ranks' share)."""
    if slots_split(layers, pp, vpp):  # the embedding and the loss in a slot each
        return True
    first, middle, last = (int(x) for x in stage_layers(layers, pp, vpp))
    return min(first, last, lightest_middle(layers, pp, first, last, middle)) >= vpp


def chunk_share(layers, pp, vpp, first_set=0, last_set=0):
    """The share of the fullest pipeline rank's micro-batch its largest model chunk holds: 1/vpp where its layers
    (stage_layers' middle, or an end rank the layout fills more) deal evenly over its vpp chunks, ceil(n / vpp) / n
    where they do not (8 layers in 5 chunks: 2, 2, 2, 1, 1, so 2/8). The interleaved schedule's bubble and its
    warm-up's activations come in units of a chunk (Narayanan et al. 2021, SC21 Sec. 2.2.2), so the largest one sets
    them."""
    first, middle, last = stage_layers(layers, pp, vpp, first_set=first_set, last_set=last_set)
    if np.any(first_set) or np.any(last_set):
        middle = np.maximum(np.maximum(first, last), middle)
    n = np.maximum(np.asarray(middle, dtype=float), 1.0)
    v = np.asarray(vpp, dtype=float)
    return np.where(v > 1, np.ceil(n / v) / n, 1.0)


def interleavings(layers: int, pp: int, most: int) -> list[int]:
    """The virtual stages per rank (vpp, at most `most`) an interleaved schedule is tried with on `layers`
    transformer layers over `pp` ranks: every vpp whose chunks fit the layers (fits_the_chunks) with a layer in each
    (the embedding's and the loss's own slots excepted: torchtitan refuses a stage without parameters, and an empty
    stage of Megatron's layout string is not checked here), keeping for each size of the fullest rank's largest
    chunk (chunk_share) the fewest chunks. The bubble and the warm-up's
    activations follow that chunk (chunk_share), so more chunks of the same largest size only add sends and
    activations in flight. The even splits (pp x vpp dividing the depth, as Calculon's llm-optimal-execution
    enumerates them) are all kept; the uneven ones Megatron-Core runs with a layout string
    (`--pipeline-model-parallel-layout`, megatron/core/transformer/pipeline_parallel_layer_layout.py at
    NVIDIA/Megatron-LM@d98e8a64) and torchtitan with its module lists are tried too: NVIDIA's DeepSeek-V3
    recipes run 61 layers on pp 8 x vpp 4 and pp 2 x vpp 8 (Megatron-Bridge@067f987d perf_recipes/deepseek/
    h100/deepseek_v3.py, "Et|(tt|)*30mL"; gb300/deepseek_v3.py:83). [1] alone without a pipeline."""
    if pp <= 1:
        return [1]
    chosen, sizes = [1], set()
    for v in range(2, min(most, (layers + 2) // pp) + 1):
        if not (fits_the_chunks(layers, pp, v) and _every_chunk_holds_a_layer(layers, pp, v)):
            continue
        _, middle, _ = stage_layers(layers, pp, v)
        size = -(-int(middle) // v)  # the largest chunk's layers
        if size not in sizes:
            sizes.add(size)
            chosen.append(v)
    return chosen


def split_set_by_layout(layers, pp, first_set, last_set):
    """The transformer layers of the first, fullest middle and last rank where the layout sets an end rank's layers
    (> 0; 0 = not set). NVIDIA's recipes do so to make room for what else an end rank runs: the embedding on the first,
    the output layer, the loss and the multi-token-prediction blocks on the last (Megatron-Bridge@067f987d recipes/
    deepseek/deepseek_v3.py `layout_map`: DeepSeek-V3 on pp 16 runs 4 layers and the embedding on the first rank, 1
    layer, the MTP block and the loss on the last). An end not set holds what its share of the rest gives it, the
    lightest share: Megatron-Core deals the layers left over the ranks not set
    (NVIDIA/Megatron-LM@d98e8a64 megatron/core/transformer/transformer_config.py:2296-2345,
    transformer_block.py:104-143); the middle ranks share what both ends leave, the fullest holding the most
    (specs.pipeline_chunks.rank_layers deals them so)."""
    layers, p = np.asarray(layers, dtype=float), np.asarray(pp, dtype=float)
    first_set, last_set = np.asarray(first_set, dtype=float), np.asarray(last_set, dtype=float)
    unset = (first_set == 0).astype(float) + (last_set == 0)
    others = np.maximum(p - 2.0 + unset, 1.0)  # the ranks sharing what the set ends leave
    left = layers - first_set - last_set
    lightest = np.floor(left / others)
    first = np.where(first_set > 0, first_set, lightest)
    last = np.where(last_set > 0, last_set, lightest)
    middles = np.maximum(p - 2.0, 1.0)
    middle = np.where(p > 2, np.ceil((layers - first - last) / middles), np.maximum(first, last))
    return first, middle, last


def lightest_middle(layers: int, pp: int, first: int, last: int, middle: int) -> int:
    """The fewest layers a middle rank holds when the ends hold `first` and `last` (the middle ranks deal the rest,
    specs.pipeline_chunks.rank_layers); with two ranks or one, `middle` (stage_layers' stand-in for the fuller end)."""
    return (layers - first - last) // (pp - 2) if pp > 2 else middle


def split_set(batch: "CandidateBatch") -> np.ndarray:
    """Candidates whose layout sets an end rank's layers (split_set_by_layout) with a pipeline: their split is the
    layout's, never the one that gives the embedding and the loss a layer's slot (slots_split)."""
    return ((batch.first_stage_layers > 0) | (batch.last_stage_layers > 0)) & (batch.pp > 1)


def _split_set_by_layout(layers, pp, first_set, last_set, first, middle, last):
    where = ((np.asarray(first_set) > 0) | (np.asarray(last_set) > 0)) & (np.asarray(pp) > 1)
    f, m, l = split_set_by_layout(layers, pp, first_set, last_set)
    return np.where(where, f, first), np.where(where, m, middle), np.where(where, l, last)


# The searches try the last pipeline rank at most this many layers lighter than the others (lighter_last_splits):
# a bound on the search's size, which DeepSeek-V3's recipe splits reach (d = 3).
LIGHTER_LAST_MOST = 3


def last_rank_extra_layers(model: "ModelSpec") -> float:
    """The training FLOPs the last pipeline rank runs besides its transformer layers (the output layer and, per
    multi-token-prediction block, the block, its projection and another output-layer pass), in layers of the model's
    mean per-layer FLOPs (specs.model.model_training_flops, causal attention): 0.63 for Llama 3 405B, 1.14 for Llama
    3 70B, 3.92 for DeepSeek-V3. The searches try the last rank up to that many layers lighter (rounded, at most
    LIGHTER_LAST_MOST): a lighter one can pace the step no better than one whose layers and extra work match the
    others'. The cost model then times each split, so the choice is its, not this count's."""
    parts = model_training_flops(model, 1.0, causal=True)
    extra = parts["logits"] + parts.get("mtp", 0.0)
    return float(extra / ((parts["total"] - extra) / model.layers))


def lighter_last_most(model: "ModelSpec") -> int:
    """How many layers lighter than the others the searches try the last pipeline rank (last_rank_extra_layers)."""
    return int(min(LIGHTER_LAST_MOST, round(last_rank_extra_layers(model))))


def lighter_last_splits(layers: int, pp: int, vpp: int, most: int = LIGHTER_LAST_MOST) -> list[tuple[int, int]]:
    """(first, last) transformer layers of the splits a search tries beside the stack's own (Layout.first_stage_layers,
    last_stage_layers): the last rank d = 1 .. `most` layers lighter than the fullest, the other ranks sharing the rest
    with the remainder on the middle ones (the first rank holds the most activations in flight). The last rank runs the output layer, the loss and any multi-token-prediction blocks besides its
    layers; the cost model times each split and the search keeps the fastest, so what those cost in layers is the
    cost model's, not a rule's. NVIDIA's recipes split so: DeepSeek-V3 on pp 16 runs 4 layers on each rank and 1 beside
    the MTP block and the loss on the last (d = 3; Megatron-Bridge@067f987d recipes/deepseek/deepseek_v3.py
    `layout_map`), on pp 4 x vpp 2 16/16/16/13 (d = 3). Every rank keeps a layer per virtual stage; splits whose last
    rank is no lighter than in the stack's own, or that repeat one another, are left out. None without a pipeline."""
    if pp <= 1:
        return []
    own = tuple(int(x) for x in stage_layers(layers, pp, vpp))
    splits, seen = [], {own}
    for d in range(1, most + 1):
        fullest = -(-(layers + d) // pp)
        last = fullest - d
        first = (layers - last) // (pp - 1)  # the lightest share of the rest: the middle ranks take the remainder
        if min(first, last) < vpp or first + last > layers:
            continue
        middle = int(split_set_by_layout(layers, pp, first, last)[1])
        if pp == 2 and first + last != layers or lightest_middle(layers, pp, first, last, middle) < vpp:
            continue
        if last < own[2] and (first, middle, last) not in seen:
            seen.add((first, middle, last))
            splits.append((first, last))
    return splits


def _first_heavy(layers, pp, where, first, middle, last):
    """Where `where` and pp > 1: the first (layers mod pp) stages hold ceil(layers / pp), the rest floor."""
    layers, p = np.asarray(layers, dtype=float), np.asarray(pp, dtype=float)
    base = np.floor(layers / p)
    extra = layers - base * p  # stages 0 .. extra - 1 hold base + 1
    use = where & (p > 1)
    heavy_first = np.where(extra > 0, base + 1.0, base)
    heavy_middle = np.where(p > 2, np.where(extra > 1, base + 1.0, base), heavy_first)  # stage 1 is the fullest middle
    return (np.where(use, heavy_first, first), np.where(use, heavy_middle, middle), np.where(use, base, last))


def _transformer_stage_layers(layers, pp, vpp):
    layers, p, v = (np.asarray(x, dtype=float) for x in (layers, pp, vpp))
    shape = np.broadcast(layers, p, v).shape
    stages = p * v
    even = layers == np.floor(layers / stages) * stages
    per_stage = layers / p
    if even.all():  # the usual case, and every candidate of a search over divisors: no uneven arithmetic
        per_stage = np.broadcast_to(per_stage, shape)
        return per_stage, per_stage, per_stage
    slots = layers + 2.0
    with_slots = slots_split(layers, p, v)
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
    per_rank, tp = batch.layer_params_per_tp_rank, batch.tp  # a layer's parameters on a tp rank; the rest split
    first = first_layers * per_rank + (batch.embedding_params + padding + np.where(single_stage, head, 0.0)) / tp
    # The multi-token-prediction blocks read the token embedding: Megatron-Core builds a copy of it on their stage
    # (NVIDIA/Megatron-LM@d98e8a64 megatron/core/models/gpt/gpt_model.py:173, "if self.pre_process or
    # self.mtp_process"); a pipeline that runs the first and last stage on one rank (DualPipe) shares it.
    mtp_embedding = np.where((batch.mtp_layers > 0) & ~single_stage & ~pairs_stages(batch),
                             batch.embedding_params + padding, 0.0)
    last = np.where(single_stage, first, last_layers * per_rank + (head + mtp_embedding) / tp)
    middle = np.where(batch.pp > 2, middle_layers * per_rank, np.maximum(first, last))
    return first, middle, last


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



__all__ = ["stage_layers", "slots_split", "interleavings", "fits_the_chunks", "chunk_share", "batch_stage_layers", "stage_param_counts", "padded_vocab", "vocab_padding_params", "stage_argmax", "split_set_by_layout", "split_set", "lighter_last_splits", "lightest_middle", "lighter_last_most", "last_rank_extra_layers"]
