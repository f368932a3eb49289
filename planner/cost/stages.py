"""The pipeline stage split: layers and parameters (per tp rank) of the first, fullest middle and last stage, and
the stage holding the most parameters, whose data-parallel traffic and optimizer step the step waits for. Once
per distinct combination of STAGE_COLUMNS. Pure, vectorised.

Its own module because the step's pacing (step_time), its data-parallel traffic (cost/data_parallel.py) and its
optimizer step (cost/optimizer_step.py) all read it.
"""

from __future__ import annotations

import numpy as np

from planner.cost import distinct
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
    return {"layers": batch.stages, "params": stage_param_counts(batch), "data_parallel": _most_parameters_stage(batch)}


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
