"""Which transformer layers each (virtual) pipeline stage holds, in model order.

The cost model prices the first, a middle and the last pipeline rank (planner.specs.pipeline_stages.stage_layers);
a launch config has to name every stage. `virtual_stage_layers` spells out the same split: even when
pp x vpp divides the layers; else, when it divides layers + 2, the embedding and the loss each take a
layer's slot (first and last stage one layer lighter); else the first and last rank get what
stage_layers gives them (or the layout sets: Layout.first_stage_layers, last_stage_layers) and the middle ranks
share the rest, the fullest holding stage_layers' middle.
Each rank's layers are dealt over its vpp chunks, chunk c of the model living on rank c % pp
(Megatron-LM's interleaved schedule and torchtitan's looped schedules both place stages so): evenly, the first
chunks a layer more, except a lighter end rank of an uneven split with enough layers, whose chunks but the one
beside the embedding or the loss hold the middle ranks' largest chunk, as NVIDIA's DeepSeek-V3 recipe deals them
(_end_rank_chunks).
"""

from __future__ import annotations

import functools

from planner.errors import PlannerInputError
from planner.specs.pipeline_stages import slots_split, stage_layers


def split_kind(layers: int, pp: int, vpp: int, first_set: int = 0, last_set: int = 0) -> str:
    """'even', 'slots' (embedding and loss count as one layer each) or 'uneven' (also wherever the layout sets an end
    rank's layers, Layout.first_stage_layers / last_stage_layers: `first_set`, `last_set`, 0 = not set)."""
    if (first_set or last_set) and pp > 1:
        return "uneven"
    if layers % (pp * vpp) == 0:
        return "even"
    return "slots" if slots_split(layers, pp, vpp) else "uneven"


def rank_layers(layers: int, pp: int, vpp: int, first_set: int = 0, last_set: int = 0) -> list[int]:
    """Transformer layers on each pipeline rank (all its virtual stages together)."""
    kind = split_kind(layers, pp, vpp, first_set, last_set)
    if kind == "even":
        return [layers // pp] * pp
    if kind == "slots":
        per_rank = (layers + 2) // pp
        return [per_rank - 1, *([per_rank] * (pp - 2)), per_rank - 1]
    if pp == 1:
        return [layers]
    first, middle, last = (int(x) for x in stage_layers(layers, pp, vpp, first_set=first_set, last_set=last_set))
    # The middle ranks share the rest; stage_layers prices the fullest of them, which gets `middle`.
    share, extra = divmod(layers - first - last, pp - 2) if pp > 2 else (0, 0)
    ranks = [first, *(share + (1 if i < extra else 0) for i in range(pp - 2)), last]
    if pp > 2 and max(ranks[1:-1]) != middle:  # guards the arithmetic against stage_layers
        raise PlannerInputError(f"pipeline split {ranks} of {layers} layers over pp({pp}) is not the one priced "
                                f"(fullest middle stage {middle})")
    return ranks


def virtual_stage_layers(layers: int, pp: int, vpp: int, first_set: int = 0, last_set: int = 0) -> list[int]:
    """Layers of each of the pp x vpp model chunks in model order (chunk c runs on rank c % pp)."""
    return list(_virtual_stage_layers(int(layers), int(pp), int(vpp), int(first_set), int(last_set)))


# Once per split: the cost model asks per distinct combination of a part's columns (cost.distinct), and a search's
# combinations share a few dozen splits. Uncached, a DeepSeek-V3 layout search spent 11 of its 21 s here, in
# stage_layers' array arithmetic on one row at a time (47,761 calls).
@functools.lru_cache(maxsize=4096)
def _virtual_stage_layers(layers: int, pp: int, vpp: int, first_set: int, last_set: int) -> tuple[int, ...]:
    if split_kind(layers, pp, vpp, first_set, last_set) == "slots":  # the embedding's slot is in chunk 0, the loss's in the last
        per_chunk = (layers + 2) // (pp * vpp)
        chunks = [per_chunk] * (pp * vpp)
        chunks[0] -= 1
        chunks[-1] -= 1
        return tuple(chunks)
    chunks = [0] * (pp * vpp)
    ranks = rank_layers(layers, pp, vpp, first_set, last_set)
    fullest = max(ranks[1:-1] if pp > 2 else ranks)  # the fullest middle rank (with two ranks, the fuller end)
    widest = -(-fullest // vpp)  # its largest chunk
    uneven = split_kind(layers, pp, vpp, first_set, last_set) == "uneven"
    for rank, count in enumerate(ranks):
        if uneven and rank in (0, pp - 1) and pp > 1 and vpp > 1 and (vpp - 1) * widest <= count < fullest:
            dealt = _end_rank_chunks(count, vpp, widest, last=rank == pp - 1)
        else:
            dealt = even_deal(count, vpp)
        for v, size in enumerate(dealt):
            chunks[v * pp + rank] = size
    return tuple(chunks)


def even_deal(count: int, vpp: int) -> list[int]:
    """`count` layers over vpp chunks as evenly as they go, the first chunks a layer more."""
    base, extra = divmod(count, vpp)
    return [base + (1 if v < extra else 0) for v in range(vpp)]


def rank_chunks(layers: int, pp: int, vpp: int, first_set: int = 0, last_set: int = 0) -> list[list[int]]:
    """virtual_stage_layers per pipeline rank: rank r's chunks in model order (chunk c on rank c % pp)."""
    chunks = virtual_stage_layers(layers, pp, vpp, first_set, last_set)
    return [chunks[r::pp] for r in range(pp)]


def _end_rank_chunks(count: int, vpp: int, widest: int, last: bool) -> list[int]:
    """A lighter end rank's `count` layers over its vpp chunks as NVIDIA's DeepSeek-V3 recipes deal them, where the
    rank has enough for it ((vpp - 1) x widest <= count): every chunk but the one beside the embedding (the first
    rank's chunk 0) or the loss (the last rank's last chunk) holds the middle ranks' largest chunk (`widest`), that end
    chunk the rest, none if nothing is left ("Et|tt|tt|tt" ... "tt|tt|tt|mL" for 61 layers on pp 8 x vpp 4:
    Megatron-Bridge@067f987d perf_recipes/deepseek/h100/deepseek_v3.py). The interleaved schedule then runs the rank
    at its total (cost.step_time.interleaved_steady_slot): dealt evenly (2, 2, 1, 1 beside the MTP block and the
    loss), the light chunk beside the end one waits on the other ranks' chunks of two. Megatron-Core's layout string
    takes any split, an end chunk of no layers too (megatron/core/transformer/pipeline_parallel_layer_layout.py at
    NVIDIA/Megatron-LM@d98e8a64). A rank with fewer layers is dealt evenly: filling some chunks and emptying others
    ran slower in the simulation (the review: 61 layers on pp 8 x vpp 4 with the first rank's 8 dealt 0, 2, 3, 3)."""
    rest = count - (vpp - 1) * widest
    return [*([widest] * (vpp - 1)), rest] if last else [rest, *([widest] * (vpp - 1))]


def layout_chunks(layers: int, layout) -> list[int]:
    """virtual_stage_layers of a Layout: its pp, vpp and the end ranks' layers it sets."""
    return virtual_stage_layers(layers, layout.pp, layout.vpp, layout.first_stage_layers or 0,
                                layout.last_stage_layers or 0)


def lockstep_chunks(layers: int, pp: int, vpp: int, first_set: int = 0, last_set: int = 0) -> tuple[int, ...]:
    """Transformer layers of the chunks the interleaved schedule's steady state is priced from
    (cost.step_time.interleaved_steady_slot): the first rank's chunk 0 (beside the embedding), the largest of its other
    chunks, the largest chunk of any middle rank (0 with two ranks), the largest of the last rank's chunks but its
    last, and that last chunk (beside the output layer, the loss and any multi-token-prediction blocks), as
    virtual_stage_layers deals them."""
    ranks = rank_chunks(layers, pp, vpp, first_set, last_set)
    first, last = ranks[0], ranks[-1]
    middle = max((max(rank) for rank in ranks[1:-1]), default=0)
    return first[0], max(first[1:], default=0), middle, max(last[:-1], default=0), last[-1]
