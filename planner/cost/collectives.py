"""Alpha-beta times of collectives on the links a group crosses (numpy-vectorised).

Ring algorithms on n ranks moving V bytes (scaling-book "sharding"; NCCL bus-bandwidth convention):
  all-gather / reduce-scatter: (n-1)/n · V / W + (n-1)·alpha
  all-reduce:                  2·(n-1)/n · V / W + 2·(n-1)·alpha
where W is the per-rank bandwidth per direction and V the full (gathered) buffer size.

A group spanning nodes runs hierarchically (NCCL tree/ring-of-rings, as in ZeRO++ hpZ): reduce-scatter
inside the node over scale-up links, the collective on V/k across nodes over the network, then an
all-gather inside the node. `links` is the dict from `topology.group_links_arrays`.
"""

from __future__ import annotations

import numpy as np


def _ring_bandwidth_term(volume_bytes, ranks, bytes_per_s, passes: float):
    """Transfer seconds of `passes` ring sweeps over `ranks` ranks (no latency)."""
    ranks = np.asarray(ranks, dtype=float)
    fraction = np.where(ranks > 1, (ranks - 1) / np.maximum(ranks, 1), 0.0)
    safe_bw = np.where(bytes_per_s > 0, bytes_per_s, 1.0)
    return np.where(ranks > 1, passes * fraction * volume_bytes / safe_bw, 0.0)


def _collective(volume_bytes, links, efficiency_up, efficiency_out, passes: float, calls):
    """Hierarchical bandwidth term plus the latency of `calls` separate ring collectives.

    Bandwidth: each pass moves the data once inside the node (over k ranks) and, across n nodes, each
    rank carries its 1/k share. Latency: NCCL runs all-gather and reduce-scatter as rings over all
    k·n members, so every call pays (k-1)·n intra-node hops and n-1 inter-node hops per pass.
    """
    k, n = links["ranks_per_node"], links["nodes"]
    intra = _ring_bandwidth_term(volume_bytes, k, links["intra_bytes_per_s"] * efficiency_up, passes)
    inter = _ring_bandwidth_term(volume_bytes / np.maximum(k, 1), n, links["inter_bytes_per_s"] * efficiency_out, passes)
    hops_latency = (k - 1) * n * links["intra_latency_s"] + (n - 1) * links["inter_latency_s"]
    return intra + inter + passes * calls * hops_latency


def all_reduce_time(volume_bytes, links, efficiency_up: float, efficiency_out: float, calls=1.0):
    """Seconds to all-reduce `volume_bytes` per rank over the group, split into `calls` collectives."""
    return _collective(volume_bytes, links, efficiency_up, efficiency_out, 2.0, calls)


def all_gather_time(volume_bytes, links, efficiency_up: float, efficiency_out: float, calls=1.0):
    """Seconds to all-gather a buffer of `volume_bytes` (full size); reduce-scatter costs the same."""
    return _collective(volume_bytes, links, efficiency_up, efficiency_out, 1.0, calls)


reduce_scatter_time = all_gather_time


def p2p_time(volume_bytes, bytes_per_s, latency_s, efficiency: float):
    """One point-to-point send of `volume_bytes` over a link."""
    return volume_bytes / (bytes_per_s * efficiency) + latency_s
