"""Process groups and the links they cross: each parallel group (tp, cp, pp, dp, dp x cp) as (sizes, strides) of
the layout's parallel sizes, its links (specs.topology) with the calibrated latency scale, looked up once per
distinct layout shape; the cluster's collective keywords; and a collective run only on the rows that need it.
Pure, vectorised.

Its own module because every communication of the step (tensor, context, pipeline, data and expert parallel,
the MoE all-to-all) asks the same two questions of it: over which links, and on which rows.
"""

from __future__ import annotations

import numpy as np

from planner.cost import collectives, distinct
from planner.specs.hardware import ClusterSpec
from planner.specs.candidate_batch import CandidateBatch
from planner.specs.topology import group_links_arrays


def links(cluster: ClusterSpec, sizes, strides, job_ranks=None) -> dict[str, np.ndarray]:
    """Group links with the calibrated latency scale applied. `job_ranks`: the job's GPUs (the rows' batch.gpus), so
    a job holding one group on part of a node is not priced as the straddling groups of a larger job
    (topology.group_spread); None where not known (every way a group can fall)."""
    return _latency_scaled(group_links_arrays(cluster, sizes, strides, job_ranks), cluster.efficiency.latency_scale)


def _latency_scaled(links: dict, scale) -> dict:
    if np.ndim(scale) == 0 and scale == 1.0:
        return links
    return {**links, "intra_latency_s": links["intra_latency_s"] * scale,
            "inter_latency_s": links["inter_latency_s"] * scale}


def layout_links(batch: CandidateBatch, cluster: ClusterSpec, group) -> dict[str, np.ndarray]:
    """`links` of the group `group(tp, pp, dp, cp) -> (sizes, strides)`, computed once per distinct layout shape
    and spread to the rows (the same numbers as `links` on the rows' own sizes)."""
    if len(batch) == 0:
        return links(cluster, *group(batch.tp, batch.pp, batch.dp, batch.cp), batch.gpus)
    sizes, inverse = distinct.parallel_shapes(batch)
    # The job's GPUs: a job of one group on part of a node has no straddling group (topology.group_spread).
    job = sizes["tp"] * sizes["pp"] * sizes["dp"] * sizes["cp"]
    few = group_links_arrays(cluster, *group(sizes["tp"], sizes["pp"], sizes["dp"], sizes["cp"]), job_ranks=job)
    names = tuple(few)
    table = np.stack([np.broadcast_to(few[name], sizes["tp"].shape) for name in names]).astype(float)
    # Scaled on the rows, not the shapes: a sweep's latency scale is per row (cost.efficiency_sweep).
    return _latency_scaled(dict(zip(names, np.take(table, inverse, axis=1))), cluster.efficiency.latency_scale)


# Groups as (sizes, strides) of the layout's parallel sizes, ranks placed tp-innermost, then cp, dp, pp.
def tp_group(t, p, d, c):
    return t, np.ones_like(t)


def cp_group(t, p, d, c):
    return c, t


def pp_group(t, p, d, c):
    return p, t * c * d


def dp_cp_group(t, p, d, c):  # gradient reduction: cp ranks hold the same weights
    return d * c, t


def dp_group(t, p, d, c):
    return d, t * c


def embedding_group(t, p, d, c):  # the first and the last pipeline stage: the two copies of a shared embedding
    return np.where(p > 1, 2, 1), np.maximum(p - 1, 1) * t * c * d


def collective_kwargs(cluster: ClusterSpec):
    eff = cluster.efficiency
    return {"efficiency_up": eff.scale_up_bandwidth_efficiency, "efficiency_out": eff.scale_out_bandwidth_efficiency,
            "nvls": cluster.node.scale_up.nvls,
            "arch": collectives.architecture(cluster.accelerator.compute_capability)}


class Rows:
    """The candidates that run a collective, and their links, picked once and reused by every call on
    them. A search scores candidates of every kind at once (ZeRO-3 beside ZeRO-1, tp 1 beside tp 8): each
    row pays only for the collectives it runs, and the numbers are the same elementwise."""

    # Above this share of rows, computing every row and zeroing the others beats gathering the rows' links
    # and scattering the result back (the collectives are elementwise, so the numbers are the same).
    DENSE_SHARE = 0.5

    def __init__(self, mask, links):
        mask = np.asarray(mask, dtype=bool)
        self.size = mask.shape
        self.every = bool(mask.all())
        self.dense = not self.every and np.count_nonzero(mask) > self.DENSE_SHARE * mask.size
        self.mask = mask
        self.rows = None if self.every or self.dense else np.flatnonzero(mask)
        self.links = links if self.rows is None else {k: v[self.rows] for k, v in links.items()}

    def run(self, collective, volume, calls=1.0, **kw):
        """`collective` on these rows, 0 elsewhere."""
        if self.every:
            return collective(volume, self.links, calls=calls, **kw)
        if self.dense:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                return np.where(self.mask, collective(volume, self.links, calls=calls, **kw), 0.0)
        out = np.zeros(self.size)
        if self.rows.size:
            pick = lambda a: a[self.rows] if np.ndim(a) else a  # noqa: E731
            # Keywords too: a sweep's link efficiencies are per row (cost.efficiency_sweep).
            out[self.rows] = collective(pick(volume), self.links, calls=pick(calls),
                                        **{name: pick(value) for name, value in kw.items()})
        return out


def only_where(mask, collective, volume, links, calls=1.0, **kw):
    """`collective` on the rows where `mask` holds, 0 elsewhere (one-off form of Rows)."""
    return Rows(mask, links).run(collective, volume, calls=calls, **kw)
