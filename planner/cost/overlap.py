"""Overlap arithmetic: the exposed seconds of communication that runs beside compute, as the schedule allows
(max() with perfect overlap .. sum() with none; a two-stage pipeline of chunks) and as calibration's residual eta
(Efficiency.dp_overlap / tp_overlap) says it happens in practice. Pure, vectorised; no collectives, no groups.

Its own module because tensor-, context-, pipeline- and data-parallel communication all hide behind compute by
the same arithmetic (cost/model_parallel_comm.py, cost/data_parallel.py).
"""

from __future__ import annotations

import numpy as np


def overlap(compute, comm, eta):
    """Time of compute and communication that overlap by factor eta in [0, 1]: max() .. sum()."""
    return np.maximum(compute, comm) + (1.0 - eta) * np.minimum(compute, comm)


def hidden_behind(compute, comm, chunks, eta):
    """Exposed seconds of `comm` split into `chunks` pieces pipelined against `compute` of the same
    pieces (a two-stage pipeline: max(a, b) + min(a, b)/chunks - a), with the residual eta of what the
    schedule could hide actually hidden."""
    ideal = np.maximum(compute, comm) + np.minimum(compute, comm) / chunks - compute
    if np.ndim(eta) == 0:
        if eta == 1.0:  # the default: nothing beyond the schedule
            return ideal
        return ideal + (1.0 - eta) * (comm - ideal)
    # A residual per row (cost.efficiency_sweep): the same numbers row by row, the default's rows exactly `ideal`.
    return np.where(eta == 1.0, ideal, ideal + (1.0 - eta) * (comm - ideal))


def behind_later_chunks(backward, comm, buckets, eta, v, p):
    """Exposed seconds of a gradient reduction launched chunk by chunk (MegaScale section 3.2).

    With v model chunks per stage, chunk j's gradients are final when its last micro-batch backward is done;
    in the interleaved 1F1B cool-down about p chunk-steps of backward (each backward / v) separate one
    chunk's end from the next, so the first v-1 chunks' reductions (comm (v-1)/v) run behind a window of
    (v-1) p backward / v, and the last chunk's (comm / v) behind its own buckets as in `hidden_behind`.
    Derived from the schedule, an approximation: the earlier chunks' reductions are taken as one pipelined
    stream against that window.
    """
    last = hidden_behind(backward / v, comm / v, np.maximum(buckets / v, 1.0), eta)
    window = (v - 1.0) * p * backward / v
    earlier = np.maximum(comm * (v - 1.0) / v - eta * window, comm * (v - 1.0) / v * (1.0 - eta))
    return last + earlier
