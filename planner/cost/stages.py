"""The pipeline stage split: layers, MoE layers and parameters (per tp rank) of the first, fullest middle and last
stage, and the stage holding the most parameters, whose data-parallel traffic and optimizer step the step waits for. Once
per distinct combination of STAGE_COLUMNS. Pure, vectorised.

Its own module because the step's pacing (step_time), its data-parallel traffic (cost/data_parallel.py) and its
optimizer step (cost/optimizer_step.py) all read it.
"""

from __future__ import annotations

import functools

import numpy as np

from planner.cost import distinct
from planner.frameworks import batch_framework_arrays
from planner.specs.pipeline_chunks import lockstep_chunks, virtual_stage_layers
from planner.specs.pipeline_stages import chunk_share, stage_argmax, stage_param_counts


# What the stage split reads (specs.pipeline_stages.stage_layers, stage_param_counts): the model, tp, pp, vpp, the
# stack (its vocabulary padding) and the end ranks' layers where the layout sets them.
STAGE_COLUMNS = distinct.MODEL_COLUMNS + ("tp", "pp", "vpp", "framework", "a2a_overlap") + distinct.STAGE_SPLIT


def stage_split(batch):
    """Layers and parameters (per tp rank) of the first, middle and last pipeline stage, and the data-parallel
    stage's (data_parallel_stage), computed once per distinct combination of STAGE_COLUMNS (a search has a few
    dozen: cost/distinct.py) and spread to the candidates; once per batch."""
    return batch.cached("stage_split", lambda b: distinct.once_per_combination(b, STAGE_COLUMNS, _stage_split_per_row))


def _stage_split_per_row(batch):
    return {"layers": batch.stages, "params": stage_param_counts(batch), "data_parallel": _most_parameters_stage(batch),
            "moe_layers": _moe_layers_per_stage(batch)}


def stage_moe_layers(batch):
    """MoE layers on the first, the fullest middle (the middle rank with the most) and the last pipeline stage;
    the stages' layers for a dense batch or where every layer is an MoE layer. With two stages the middle stands
    for the fuller end, with one every stage holds all (as stage_layers)."""
    return stage_split(batch)["moe_layers"]


def _moe_layers_per_stage(batch):
    if batch.moe_layers is None or not np.any((batch.dense_prefix > 0) | (batch.moe_layers < batch.layers)):
        return batch.stages
    first_heavy = batch_framework_arrays(batch)["uneven_layers_to_first_stages"] > 0
    rows = [_moe_layers_of_row(*(int(v) for v in values), bool(heavy))
            for *values, heavy in zip(batch.layers, batch.mtp_layers, batch.moe_layers, batch.dense_prefix, batch.pp,
                                      batch.vpp, batch.first_stage_layers, batch.last_stage_layers, first_heavy)]
    return tuple(np.array(column, dtype=float) for column in zip(*rows))


@functools.lru_cache(maxsize=4096)  # once per model and split: called per distinct combination of STAGE_COLUMNS
def _moe_layers_of_row(layers, mtp, moe_and_mtp, dense_prefix, pp, vpp, first_set, last_set, first_heavy):
    """(first, fullest middle, last) MoE layers of one candidate, from which layers each rank holds in model order
    (specs.pipeline_chunks: chunk c on rank c % pp; DeepSpeed's first-heavy split, Framework.uneven_layers_to_first_
    stages, at vpp 1) and which are MoE layers: from `dense_prefix` on, one in every moe_layer_freq (the frequency
    that gives the model's count: ModelSpec.moe_layers), the MTP blocks (copies of an MoE layer) on the last rank.
    The model's mean over its layers charged DeepSeek-V3's middle ranks 4 x 59/62 MoE layers where they hold 4
    (the Megatron-oracle audit)."""
    if not moe_and_mtp:  # a dense model's row of a mixed batch
        return 0, 0, 0
    transformer = layers - mtp
    moe = moe_and_mtp - mtp
    frequency = next((f for f in range(1, transformer + 1) if len(range(dense_prefix, transformer, f)) <= moe), 1)
    is_moe = np.zeros(transformer, dtype=bool)
    is_moe[dense_prefix:transformer:frequency] = True
    if first_heavy and pp > 1:
        base, extra = divmod(transformer, pp)
        chunks = [base + (1 if rank < extra else 0) for rank in range(pp)]
    else:
        chunks = virtual_stage_layers(transformer, pp, vpp, first_set, last_set)
    per_rank, layers_of_rank = [0] * pp, [0] * pp
    start = 0
    for c, size in enumerate(chunks):
        per_rank[c % pp] += int(is_moe[start:start + size].sum())
        layers_of_rank[c % pp] += size
        start += size
    per_rank[-1] += mtp
    layers_of_rank[-1] += mtp  # stage_layers counts the MTP blocks among the last rank's layers
    if pp == 1:
        return per_rank[0], per_rank[0], per_rank[0]
    if pp > 2:
        return per_rank[0], max(per_rank[1:-1]), per_rank[-1]
    # Two stages: the middle row stands for the end with more transformer layers (stage_layers' fuller end), with
    # that end's MoE layers (on a tie, the one with more): the end with more MoE layers beside the other end's layer
    # count made a stage heavier than either (the review: a dense-prefix model at pp 2 paced by it).
    fuller = max((layers_of_rank[0], per_rank[0]), (layers_of_rank[-1], per_rank[-1]))
    return per_rank[0], fuller[1], per_rank[-1]


def data_parallel_stage(batch):
    """The stage holding the most parameters, whose data-parallel traffic the step waits for (it is fixed by the
    model and layout, not by the hardware: taking the pacing stage's would let a slower GPU move the pace and
    shrink the traffic): its parameters, its layers and whether it is the last stage."""
    return stage_split(batch)["data_parallel"]


def _most_parameters_stage(batch):
    first_layers, middle_layers, last_layers = batch.stages
    first_params, middle_params, last_params = stage_param_counts(batch)
    dp_stage = stage_argmax((first_params, middle_params, last_params))
    params = np.choose(dp_stage, [first_params, middle_params, last_params])
    dp_layers = np.choose(dp_stage, [first_layers, middle_layers, last_layers])
    return params, dp_layers, (dp_stage == 2) | (batch.pp == 1)


def largest_chunk_share(batch):
    """pipeline_stages.chunk_share of each candidate (its transformer layers, pp and vpp): the share of the fullest
    rank's micro-batch its largest model chunk holds, which the interleaved bubble is paid in. Once per distinct
    combination of STAGE_COLUMNS, once per batch."""
    return batch.cached("chunk_share", lambda b: distinct.once_per_combination(
        b, STAGE_COLUMNS, lambda c: chunk_share(c.layers - c.mtp_layers, c.pp, c.vpp, c.first_stage_layers,
                                              c.last_stage_layers)))


def interleaved_chunks(batch):
    """pipeline_chunks.lockstep_chunks of each candidate, five arrays of transformer layers (the first rank's chunk
    0, its largest other chunk, a middle rank's largest chunk, the last rank's largest chunk but its last, and that
    last chunk); zeros without interleaving (vpp 1 or no pipeline), which the steady state does not read. Once per
    distinct combination of STAGE_COLUMNS, once per batch."""
    return batch.cached("interleaved_chunks", lambda b: distinct.once_per_combination(b, STAGE_COLUMNS,
                                                                                      _interleaved_chunks_per_row))


def _interleaved_chunks_per_row(batch):
    rows = [lockstep_chunks(int(n - mtp), int(p), int(v), int(f), int(l)) if p > 1 and v > 1 else (0,) * 5
            for n, mtp, p, v, f, l in zip(batch.layers, batch.mtp_layers, batch.pp, batch.vpp,
                                           batch.first_stage_layers, batch.last_stage_layers)]
    return tuple(np.array(column, dtype=float) for column in zip(*rows)) if rows else tuple(np.zeros(0) for _ in range(5))
