"""Times of collectives as NCCL's own tuner models them, vectorised over candidates.

Source: NVIDIA/nccl at commit 5067397c2676d5aed50042fc39e5c8ee96eb0027 (2026-06-11). Line numbers below
are at that commit: tuning.cc = src/graph/tuning.cc, enqueue.cc = src/enqueue.cc, search.cc =
src/graph/search.cc.

NCCL gives every (algorithm, protocol) a latency and a bus bandwidth (ncclTopoTuneModel, tuning.cc:243-438)
and, per call of `b` bytes (the full buffer: enqueue.h ncclFuncMaxSendRecvCount), runs the fastest
(enqueue.cc:2028-2044) with time = latency + b / algorithm bandwidth (tuning.cc:630-655). The same table,
with k ranks per node, n nodes, N = k·n, B the bus bandwidth (below) and lat_up / lat_out the link latencies:

  ring, all-reduce:  base + 2(N-n)·s_up + 2(n-1)·s_out  [x1.4 Simple multi-node]  + 2(N-1)/N · b / B_p
  ring, all-gather:  base + (N-n)·s_up + (n-1)·s_out                             + (N-1)/N · b / B_p
        B_Simple = B, B_LL128 = 0.92·B, B_LL = min(0.5·B, llMaxBw)         (tuning.cc:327-329, 393-413, 647-650)
  tree, all-reduce:  base + 2((k-1)·s_up + log2i(n)·s_out)  + 2·b / (T_p · treeCorrection(b))
        T_Simple = 0.92·B, T_LL = min(0.92·B/3.8, llMaxBw), T_LL128 = 0.92·B·(7/9 one node, 120/128 more)
                                                                     (tuning.cc:330-335, 380, 414-417, 639-642)
  NVLS (one node, nvls), all-reduce: s_up + 2(N-1)/N · b / (2·e·(k-1)/(k+1)·W_up)    (tuning.cc:307-318, 424-426)
                         all-gather: s_up + b / (e·(k-1)²/(k(k+1))·W_up)                  (k <= 32: enqueue.cc:2004-2005)
  NVLS tree (nodes > 1, nvls), all-reduce: s_up + 2·log2i(n)·s_out + 2(N-1)/N · b / min(2·e·(k-1)/(k+1)·W_up,
        k·W_out·(2 if n <= 2 else 1), k·perChMaxNVLSTreeBw)                             (tuning.cc:307-323, 427-428)
  PAT (one rank per node), all-gather: 8 us + log2i(n)·s_out/3.5 + N·2.8 us + b / (0.75·B)
                                                                   (tuning.cc:216-223, 337, 429-434)

where e is NCCL's NVLS efficiency (per architecture, below), base is NCCL's baseLat (tuning.cc:150-155), log2i = floor(log2) (utils.h:56), and s_up, s_out the per-step
latencies: s_up = lat_up · hwLat[NVLINK][a][p] / 3.4 us, s_out = lat_out · hwLat[NET][a][p] / 14 us (see `_ratio`);
a multi-node ring's s_up is at least the proxy's net overhead (1 us, 3 us Simple) and a ring with one rank per
node takes the tree's s_out (tuning.cc:386-388, 404-410). Not offered: NVLS across nodes and NVLS
all-gather across nodes (they need CollNet/IB SHARP: tuning.cc:353-374, 504-506), NVLS tree in one node
(tuning.cc:502), PAT with more than one rank per node (tuning.cc:220), CollNet.

Bus bandwidth. W_up = intra·efficiency_up is a rank's NVLink bandwidth; W_out = inter·efficiency_out its share
of the NICs, so k·W_out is what the group's k ranks on a node can push through their NICs. A ring or tree
channel passes every rank's NVLink once and each node's NICs once, and NCCL's ring search keeps a channel's
intra and inter bandwidth equal (search.cc:1246, 1251, 1262, 1272): B = min(W_up, k·W_out), the slowest stage,
not a sum of phases; for a group that does not fill its nodes evenly (12 ranks on 8-GPU nodes: 8 + 4), N is its
ranks and k·W_out the emptiest node's (NCCL keeps the minimum bwInter over the ranks, init.cc:1436-1446;
topology.group_spread). The tree graph is taken at the same B (NCCL searches it separately). NVLS: a graph of k
channels, each pulling b from every GPU and 2b from its head (search.cc:410-443, 1126-1137), so b = W_up/(k+1)
and nChannels·b·(nChannels-1)/nChannels = (k-1)/(k+1)·W_up. Per-channel caps (perChMax*Bws) need NCCL's
channel count and are left out except NVLS tree's (k channels). The efficiencies scale link bandwidths before
NCCL's factors and caps.

Per GPU architecture (NCCL picks the row by the lowest compute capability in the communicator, tuning.cc:263-266):
the NVLS efficiency (0.85 Hopper, 0.74 Blackwell), the one-node llMaxBw and the NVLS-tree caps, `ARCHITECTURES`
below, chosen from the cluster spec's `compute_capability` (Hopper where the spec does not give one).
Assumed where NCCL reads the machine: an Intel host CPU (llMaxBw 39 / 20.4 GB/s across nodes, net overhead 1 us), NVLink inside
nodes (the NVLINK hwLat row), LL128 enabled (Hopper default, tuning.cc:518-536), the tree's BALANCED_TREE
pattern (no x0.85, tuning.cc:336), and the ring plateau factor at every size (NCCL skips it below 64 bytes
per channel and rank, where ring/Simple never wins).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

US = 1e-6
GB = 1e9
PROTOCOLS = ("LL", "LL128", "Simple")
LL, LL128, SIMPLE = range(3)

# baseLatencies, us, per protocol (LL, LL128, Simple): tuning.cc:150-155 (NVLS, NVLS tree: 0).
BASE_US = {"ring": (6.6, 14.0, 8.4), "tree": (6.8, 14.0, 8.4), "pat": (8.0, 8.0, 8.0)}
# hwLatencies per step, us: NVLINK row tuning.cc:159-162, NET row tuning.cc:171-174.
NVLINK_US = {"ring": (0.6, 1.9, 3.4), "tree": (0.6, 1.25, 4.0), "nvls": (0.0, 0.0, 25.0), "nvls_tree": (0.0, 0.0, 25.0)}
NET_US = {"ring": (2.7, 4.0, 14.0), "tree": (5.0, 8.5, 14.0), "nvls_tree": (0.0, 0.0, 20.9)}
# The link latencies in `links` stand for NCCL's ring/Simple step on that link (tuning.cc:159, 171).
NVLINK_REFERENCE_US, NET_REFERENCE_US = NVLINK_US["ring"][SIMPLE], NET_US["ring"][SIMPLE]
# Proxy overhead of a network step, us, Intel or unknown x86 host (tuning.cc:228-233), x3 for Simple (tuning.cc:408).
NET_OVERHEAD_US = (1.0, 1.0, 3.0)
# llMaxBws, GB/s, 2 nodes and more, Intel host: tuning.cc:179; index tuning.cc:267-272 (one node: `Architecture`).
LL_MAX_TWO_NODES_GB, LL_MAX_MORE_NODES_GB = 39.0, 20.4
RING_LL_FACTOR, RING_LL128_FACTOR = 0.5, 0.92  # tuning.cc:327, 329
TREE_FACTOR, TREE_LL_DIVISOR = 0.92, 3.8  # tuning.cc:331, 332
TREE_LL128_ONE_NODE, TREE_LL128_NODES = 7.0 / 9.0, 120.0 / 128.0  # tuning.cc:335
NVLS_MAX_ARITY = 32  # NCCL_MAX_NVLS_ARITY, device.h:213; all-gather/reduce-scatter only (enqueue.cc:2005)
PAT_FACTOR, PAT_LOG_DIVISOR, PAT_PER_RANK_US = 0.75, 3.5, 2.8  # tuning.cc:337, 432, 433


@dataclass(frozen=True)
class Architecture:
    """NCCL's tuner constants for one GPU generation (the rows of tuning.cc:138-211 that the model uses)."""

    name: str
    from_compute_capability: float  # NCCL's row from this compute capability up (tuning.cc:263-266)
    nvls_efficiency: float  # nvlsEfficiency, tuning.cc:139-144 (0 before Hopper: NVLS needs SM90, search.cc:1124)
    ll_max_one_node_gb: float  # llMaxBws[compCap][0], one node: tuning.cc:178-183
    nvls_tree_caps_gb: tuple[float, float]  # perChMaxNVLSTreeBws[compCap], 2 nodes / more: tuning.cc:205-211
    # Multi-node ring/Simple all-reduce latency factor, the ring's plateau: 1.9 below compute capability 8.0,
    # 1.4 from it (tuning.cc:647-650, `comm->minCompCap < 80 ? 1.9 : 1.4`).
    ring_plateau: float
    # Whether NVLS tree all-reduce takes the tree's treeCorrectionFactor below 1 GB (log2i(bytes >> 6) < 24): from
    # compute capability 10.0 on an x86 host, which the model assumes (tuning.cc:643-646, NCCL 2.29.2 on).
    nvls_tree_corrected: bool


ARCHITECTURES = {arch.name: arch for arch in (
    Architecture("volta", 0.0, 0.0, 39.0, (18.5, 10.0), 1.9, False),  # and anything older
    Architecture("ampere", 8.0, 0.0, 87.7, (23.6, 17.8), 1.4, False),
    Architecture("hopper", 9.0, 0.85, 141.0, (57.7, 45.5), 1.4, False),
    Architecture("blackwell", 10.0, 0.74, 2 * 141.0, (96.0, 80.0), 1.4, True),
)}
HOPPER = ARCHITECTURES["hopper"]


def architecture(compute_capability: float | None) -> Architecture:
    """NCCL's constants row for a GPU of this compute capability (major.minor): Blackwell from 10.0, Hopper from
    9.0, Ampere from 8.0, else Volta (tuning.cc:263-266). None (a spec that does not say, or not an NVIDIA GPU):
    Hopper, assumed."""
    if compute_capability is None:
        return HOPPER
    return max((arch for arch in ARCHITECTURES.values() if arch.from_compute_capability <= compute_capability),
               key=lambda arch: arch.from_compute_capability)


# treeCorrectionFactor by log2(bytes/64), 64 B to 256 MB (tuning.cc:623-627), applied to tree for log < 23
# (tuning.cc:640) and to Blackwell's NVLS tree for log < 24 (tuning.cc:643-646; the table's 24th column, 512 MB,
# is 1 for LL and LL128 and .9 for Simple), padded with 1 on both sides (below 64 B; 512 MB and up for tree).
TREE_CORRECTION = np.array([
    [1.0, 1.0, 1.0, 1.0, .9, .8, .7, .7, .7, .7, .6, .5, .4, .4, .5, .6, .7, .8, .9, 1.0, 1.0, 1.0, 1.0, 1.0],
    [1.0, 1.0, 1.0, 1.0, 1.0, .9, .8, .8, .8, .7, .6, .6, .6, .6, .6, .6, .8, .9, .9, .9, .9, 1.0, 1.0, 1.0],
    [.9, .9, .9, .9, .9, .9, .9, .8, .7, .6, .6, .5, .5, .5, .5, .6, .7, .8, .7, .7, .8, .9, .9, .9],
])
TREE_CORRECTION_PADDED = np.pad(TREE_CORRECTION[:, :23], ((0, 0), (1, 1)), constant_values=1.0)  # indices 0-24
NVLS_TREE_CORRECTION_PADDED = np.pad(TREE_CORRECTION[SIMPLE], (1, 1), constant_values=1.0)  # indices 0-25


def _log2i(x):
    """floor(log2(x)) for x >= 1, -1 for x < 1 (NCCL's log2i = log2Down, utils.h:56, bitops.h:292), exact."""
    return np.frexp(x)[1] - 1.0


def _group(links, efficiency_up, efficiency_out, arch: Architecture):
    """Shape of the group and its inverse bandwidths, seconds per byte (see the module docstring for B)."""
    k, n = np.asarray(links["ranks_per_node"], dtype=float), np.asarray(links["nodes"], dtype=float)
    ranks, fewest = _ranks_and_fewest(links, k, n)
    multi, inside = n > 1, k > 1
    # A link the group does not use has bandwidth 0 (topology.GroupLinks): 0 / (0 + 1) gives it 0 s/byte.
    # (Arithmetic rather than np.where, which costs ~8 multiplies on a random mask.)
    up = inside / (links["intra_bytes_per_s"] * efficiency_up + ~inside)  # 1 / W_up
    # 1 / (k·W_out), k the fewest members on a node: an uneven group's emptiest node bounds the ring (init.cc:1436-1446).
    out = multi / (fewest * links["inter_bytes_per_s"] * efficiency_out + ~multi)
    ll = (1.0 / LL_MAX_MORE_NODES_GB + (n == 1) * (1.0 / arch.ll_max_one_node_gb - 1.0 / LL_MAX_MORE_NODES_GB)
          + (n == 2) * (1.0 / LL_MAX_TWO_NODES_GB - 1.0 / LL_MAX_MORE_NODES_GB))
    return {"k": k, "n": n, "N": ranks, "multi": multi, "up": up, "out": out, "bus": np.maximum(up, out),
            "ll": ll / GB, "lat_up": links["intra_latency_s"], "lat_out": links["inter_latency_s"], "arch": arch}


def group_ranks(links) -> np.ndarray:
    """The ranks of each row's group (topology.GroupLinks.ranks; k·n for links built by hand without it)."""
    k, n = np.asarray(links["ranks_per_node"], dtype=float), np.asarray(links["nodes"], dtype=float)
    return _ranks_and_fewest(links, k, n)[0]


def _ranks_and_fewest(links, k, n):
    """The group's ranks and the fewest members on a node it spans (topology.GroupLinks); links built by hand
    without them (an even group) give k·n and k."""
    ranks = links.get("ranks")
    fewest = links.get("fewest_per_node")
    return (k * n if ranks is None else np.asarray(ranks, dtype=float),
            k if fewest is None else np.asarray(fewest, dtype=float))


def _ratio(table: dict, algorithm: str, protocol: int, reference: float) -> float:
    """NCCL's per-step hwLat of (algorithm, protocol) relative to its ring/Simple step on the same link.

    NCCL's table has one number per (link, algorithm, protocol), the spec one per link: the spec's latency is
    taken as the ring/Simple step (NVLink 3.4 us, network 14 us in NCCL) and the table's ratios give the rest,
    so the spec (and calibration's latency_scale) sets the size and NCCL the shape. Spec latencies of 3.4 us
    and 14 us reproduce NCCL's latencies exactly.
    """
    return table[algorithm][protocol] / reference


def _ring(g, per_call, all_reduce: bool):
    """(name, seconds per call) of ring with each protocol (tuning.cc:289-291, 327-329, 376-413, 647-650)."""
    k, n, N, multi = g["k"], g["n"], g["N"], g["multi"]
    passes = 2.0 if all_reduce else 1.0
    intra_steps = (N - n) * passes
    proxied = intra_steps * multi  # across nodes an intra step costs at least the net overhead (tuning.cc:404-410)
    intra = intra_steps * g["lat_up"]  # seconds of the steps at the ring/Simple step
    inter = (n - 1.0) * passes * g["lat_out"]
    one_per_node = inter * (k == 1)  # ppn 1 takes the tree's network step (tuning.cc:386-388)
    moved = (1.0 - 1.0 / N) * per_call * passes  # bytes through each rank's link
    simple = moved * g["bus"]
    ll = np.maximum(g["bus"] * (1.0 / RING_LL_FACTOR), g["ll"]) * moved
    transfers = (ll, simple * (1.0 / RING_LL128_FACTOR), simple)
    # In-place updates on arrays of the links' shape: this runs on every candidate of the search.
    for p in range(3):
        latency = np.maximum(intra * _ratio(NVLINK_US, "ring", p, NVLINK_REFERENCE_US),
                             proxied * (NET_OVERHEAD_US[p] * US))
        latency += inter * _ratio(NET_US, "ring", p, NET_REFERENCE_US)
        tree_step = _ratio(NET_US, "tree", p, NET_REFERENCE_US) - _ratio(NET_US, "ring", p, NET_REFERENCE_US)
        if tree_step:
            latency += one_per_node * tree_step
        latency += BASE_US["ring"][p] * US
        if all_reduce and p == SIMPLE:
            latency *= multi * (g["arch"].ring_plateau - 1.0) + 1.0
        yield f"ring/{PROTOCOLS[p]}", latency + transfers[p]


def _tree(g, per_call):
    """(name, seconds per call) of the double binary tree all-reduce (tuning.cc:330-335, 380, 414-417, 639-642)."""
    k, n = g["k"], g["n"]
    intra = (k - 1.0) * 2.0 * g["lat_up"]
    inter = _log2i(n) * 2.0 * g["lat_out"]
    # Two bytes per byte reduced (bus-to-algorithm ratio 0.5, tuning.cc:380) at 0.92 of the bus (tuning.cc:331).
    simple = per_call * (2.0 / TREE_FACTOR) * g["bus"]
    ll128 = simple * ((n == 1) * (1.0 / TREE_LL128_ONE_NODE - 1.0 / TREE_LL128_NODES) + 1.0 / TREE_LL128_NODES)
    ll = np.maximum(simple * TREE_LL_DIVISOR, per_call * 2.0 * g["ll"])
    # treeCorrectionFactor by log2i(bytes >> 6) (frexp's exponent is log2i + 1): index 0 of the padded table is
    # below 64 B, 24 is 512 MB and up.
    index = np.clip(np.frexp(per_call * (1.0 / 64.0))[1], 0, 24)
    for p, transfer in enumerate((ll, ll128, simple)):
        latency = intra * _ratio(NVLINK_US, "tree", p, NVLINK_REFERENCE_US)
        latency += inter * _ratio(NET_US, "tree", p, NET_REFERENCE_US)
        latency += BASE_US["tree"][p] * US
        yield f"tree/{PROTOCOLS[p]}", latency + transfer / TREE_CORRECTION_PADDED[p].take(index)


def _nvls(g, per_call, all_reduce: bool, nvls):
    """(name, seconds per call) of NVLS in one node and NVLS tree across nodes (Simple only, tuning.cc:301)."""
    k, n, N = g["k"], g["n"], g["N"]
    # Seconds per byte of k channels of (k-1)/(k+1)·W_up, x the NVLS efficiency (module docstring, tuning.cc:311-312).
    arch = g["arch"]
    intra = g["up"] * (k + 1.0) / (arch.nvls_efficiency * np.maximum(k - 1.0, 1.0))
    step_up = g["lat_up"] * _ratio(NVLINK_US, "nvls", SIMPLE, NVLINK_REFERENCE_US)
    usable = nvls & (k >= 2)  # NVLS needs two channels (tuning.cc:308-309)
    if all_reduce:
        moved = 2.0 * (N - 1.0) / N * per_call
        # All-reduce pipelines two operations (tuning.cc:314-315); latency = intraLat only (tuning.cc:424-426).
        yield "nvls/Simple", _unless(usable & ~g["multi"], step_up + moved * intra / 2.0)
        two = n <= 2
        inter = g["out"] * (1.0 - 0.5 * two)  # 2 nodes: twice the network (tuning.cc:320)
        two_nodes_cap, more_nodes_cap = arch.nvls_tree_caps_gb
        cap = (1.0 / GB / k) * (1.0 / more_nodes_cap + two * (1.0 / two_nodes_cap - 1.0 / more_nodes_cap))
        latency = (g["lat_up"] * _ratio(NVLINK_US, "nvls_tree", SIMPLE, NVLINK_REFERENCE_US)
                   + 2.0 * _log2i(n) * g["lat_out"] * _ratio(NET_US, "nvls_tree", SIMPLE, NET_REFERENCE_US))
        transfer = moved * np.maximum(np.maximum(intra / 2.0, inter), cap)
        if arch.nvls_tree_corrected:
            transfer = transfer / NVLS_TREE_CORRECTION_PADDED.take(np.clip(np.frexp(per_call * (1.0 / 64.0))[1], 0, 25))
        seconds = latency + transfer
        yield "nvls_tree/Simple", _unless(usable & g["multi"], seconds)
    else:
        # No bus-to-algorithm conversion for all-gather (tuning.cc:377); (k-1)/k is its share (tuning.cc:317).
        one_node = usable & ~g["multi"] & (k <= NVLS_MAX_ARITY)
        yield "nvls/Simple", _unless(one_node, step_up + per_call * intra * k / np.maximum(k - 1.0, 1.0))


def _pat(g, per_call):
    """(name, seconds per call) of PAT, one rank per node only (tuning.cc:220, 337, 377, 429-434)."""
    k, n, N = g["k"], g["n"], g["N"]
    # interLat with ppn 1 is the tree's network step, 14 us = the reference (tuning.cc:387).
    latency = (BASE_US["pat"][SIMPLE] * US + _log2i(n) * g["lat_out"] / PAT_LOG_DIVISOR
               + N * (PAT_PER_RANK_US * US))
    yield "pat/Simple", _unless((k == 1) & g["multi"], latency + per_call * g["bus"] / PAT_FACTOR)


def _unless(allowed, seconds):
    """`seconds` where the algorithm is allowed, +inf elsewhere (1 / False = inf; cheaper than np.where)."""
    return seconds + (1.0 / allowed - 1.0)


def _prepare(volume_bytes, links, efficiency_up, efficiency_out, calls, arch):
    """The group, the call count (at least one call moves the volume) and the bytes per call."""
    calls = np.maximum(np.asarray(calls, dtype=float), 1.0)
    per_call = np.asarray(volume_bytes, dtype=float) / calls
    with np.errstate(divide="ignore"):
        return _group(links, efficiency_up, efficiency_out, arch), calls, per_call


def _candidates(all_reduce: bool, g, per_call, nvls):
    """Every (algorithm/protocol, seconds per call) NCCL would weigh for this collective."""
    # A group of one has no link (bandwidth 0): what it yields is masked by the callers.
    with np.errstate(divide="ignore", invalid="ignore"):
        yield from _ring(g, per_call, all_reduce)
        yield from _tree(g, per_call) if all_reduce else _pat(g, per_call)
        if np.any(nvls):
            yield from _nvls(g, per_call, all_reduce, np.asarray(nvls, dtype=bool))


def _time(all_reduce: bool, volume_bytes, links, efficiency_up, efficiency_out, calls, nvls, arch):
    g, calls, per_call = _prepare(volume_bytes, links, efficiency_up, efficiency_out, calls, arch)
    # In place into the first candidate (ring/LL, a fresh array), one candidate alive at a time: this runs on
    # every candidate of the search, and fewer live temporaries measured 2x faster.
    fastest = None
    for _, seconds in _candidates(all_reduce, g, per_call, nvls):
        if fastest is None:
            fastest = np.asarray(seconds)
        elif np.broadcast_shapes(fastest.shape, np.shape(seconds)) == fastest.shape:
            np.minimum(fastest, seconds, out=fastest)
        else:
            fastest = np.minimum(fastest, seconds)
    # Ring is finite for every group, so a group of one or an empty buffer is zeroed by the mask.
    fastest *= calls
    fastest *= (g["N"] > 1) & (per_call > 0)
    return fastest


def all_reduce_time(volume_bytes, links, efficiency_up, efficiency_out, calls=1.0, nvls=False, arch=HOPPER):
    """Seconds to all-reduce `volume_bytes` per rank over the group, in `calls` equal collectives.

    NCCL picks ring, tree (or NVLS / NVLS tree where `nvls`: the node's NVSwitch does NVLink SHARP, as on
    DGX H100/H200/B200) and a protocol per call from the per-call size volume / calls; every call pays its
    latency (calls below 1 count as 1). Arrays broadcast; scalars work.
    """
    return _time(True, volume_bytes, links, efficiency_up, efficiency_out, calls, nvls, arch)


def all_gather_time(volume_bytes, links, efficiency_up, efficiency_out, calls=1.0, nvls=False, arch=HOPPER):
    """Seconds to all-gather a buffer of `volume_bytes` (full, gathered size) in `calls` equal collectives.

    NCCL weighs ring, PAT (one rank per node) and NVLS (one node, `nvls`). Reduce-scatter has the same
    table in NCCL (tuning.cc:289-304), except that PAT is skipped for averaging reductions (enqueue.cc:2010).
    """
    return _time(False, volume_bytes, links, efficiency_up, efficiency_out, calls, nvls, arch)


reduce_scatter_time = all_gather_time


def candidate_times(collective: str, volume_bytes, links, efficiency_up, efficiency_out, calls=1.0, nvls=False,
                    arch=HOPPER):
    """Seconds of each algorithm/protocol NCCL weighs, e.g. {"ring/LL": ..., "tree/Simple": ...}, over `calls`
    calls; +inf where it cannot run. Groups of one are not zeroed here. For explanations and tests.
    """
    if collective not in ("all_reduce", "all_gather", "reduce_scatter"):
        raise ValueError(f"collective must be all_reduce, all_gather or reduce_scatter, got {collective!r}")
    g, calls, per_call = _prepare(volume_bytes, links, efficiency_up, efficiency_out, calls, arch)
    return {name: calls * seconds for name, seconds in _candidates(collective == "all_reduce", g, per_call, nvls)}


def chosen_algorithm(collective: str, volume_bytes, links, efficiency_up, efficiency_out, calls=1.0, nvls=False,
                     arch=HOPPER):
    """NCCL's pick per candidate as "algorithm/protocol" (e.g. "tree/LL128"); "none" for a group of one or
    an empty buffer. For explanations and tests; not on the hot path.
    """
    times = candidate_times(collective, volume_bytes, links, efficiency_up, efficiency_out, calls, nvls, arch)
    names = np.array(list(times))
    picked = names[np.argmin(np.stack(np.broadcast_arrays(*times.values())), axis=0)]
    g, _, per_call = _prepare(volume_bytes, links, efficiency_up, efficiency_out, calls, arch)
    return np.where((g["N"] > 1) & (per_call > 0), picked, "none")


def p2p_time(volume_bytes, bytes_per_s, latency_s, efficiency: float):
    """One point-to-point send of `volume_bytes` over a link."""
    return volume_bytes / (bytes_per_s * efficiency) + latency_s


def fractional(collective):
    """`collective` (one of the *_time functions) where a call count below one is that share of one call of
    volume / calls bytes, not a whole call as the functions count it: a layer's gradients in a bucket that also
    holds other layers' (Framework.zero3_scatter_bucket_elements) pay their share of the bucket's call."""
    def seconds(volume_bytes, links, calls=1.0, **kw):
        share = np.clip(np.asarray(calls, dtype=float), 1e-12, 1.0)
        return collective(np.asarray(volume_bytes, dtype=float) / share, links, calls=np.asarray(calls) / share,
                          **kw) * share
    return seconds


def all_to_all_time(volume_bytes, links, efficiency_up, efficiency_out, calls=1.0, inter_bytes=None):
    """Seconds of an all-to-all in which each rank holds `volume_bytes` split evenly over the N ranks of the
    group (itself included), in `calls` equal collectives.

    NCCL has no all-to-all algorithm: it is one grouped ncclSend/ncclRecv per peer (the `alltoall` of
    nccl-tests, src/alltoall.cu, and torch's all_to_all_single), so no tuning-table algorithm applies.
    Each rank sends V/N to each of its N - 1 peers: (k - 1)·V/N over the scale-up link to the peers in
    its node and (N - k)·V/N over its share of the scale-out link to the others, both at once; the
    exchange lasts as long as the slower of the two (the bottleneck link crossed). `inter_bytes`
    replaces the scale-out bytes per rank where the dispatch deduplicates across nodes (DeepSeek's
    node-limited routing); the scale-up link then also forwards what arrived over the network.
    Latency: one step on each link the group crosses (peers are served in parallel over NCCL's p2p
    channels; assumed). Arrays broadcast; a group of one or an empty buffer takes 0 s.
    """
    k = np.asarray(links["ranks_per_node"], dtype=float)
    n = np.asarray(links["nodes"], dtype=float)
    N, _ = _ranks_and_fewest(links, k, n)
    calls = np.maximum(np.asarray(calls, dtype=float), 1.0)
    per_call = np.asarray(volume_bytes, dtype=float) / calls
    out = per_call * (N - k) / N if inter_bytes is None else np.asarray(inter_bytes, dtype=float) / calls
    up = per_call * (k - 1.0) / N + np.where(inter_bytes is None, 0.0, out * (k - 1.0) / np.maximum(k, 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_up = np.where(k > 1, up / (links["intra_bytes_per_s"] * efficiency_up), 0.0)
        t_out = np.where(n > 1, out / (links["inter_bytes_per_s"] * efficiency_out), 0.0)
    latency = np.where(k > 1, links["intra_latency_s"], 0.0) + np.where(n > 1, links["inter_latency_s"], 0.0)
    seconds = calls * (np.maximum(t_up, t_out) + latency)
    return np.where((N > 1) & (per_call > 0), seconds, 0.0)
