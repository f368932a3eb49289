"""Collectives as NCCL's tuner models them (src/graph/tuning.cc at NVIDIA/nccl 5067397c, as cited in
planner/cost/collectives.py): ring, tree, NVLS, NVLS tree and PAT, each protocol, fastest per call."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from planner.cost import collectives
from planner.specs.clusters import load_cluster
from planner.specs.topology import group_links_arrays

GB = 1e9
US = 1e-6
NVLINK3 = 300e9  # A100 NVLink3 per direction
HDR = 25e9  # HDR InfiniBand per NIC per direction


def _links(cluster, size, stride):
    return group_links_arrays(cluster, np.array([size]), np.array([stride]))


def _nccl_links(k, n, intra_latency_s=3.4 * US, inter_latency_s=14.0 * US):
    """Links of k ranks per node on n DGX A100 nodes; by default their latencies are NCCL's own ring/Simple
    steps (NVLink 3.4 us, network 14 us: tuning.cc:159, 171), so the model's latencies are NCCL's table verbatim."""
    inside, across = float(k > 1), float(n > 1)  # an unused link has bandwidth and latency 0 (topology.GroupLinks)
    return {"ranks_per_node": np.array([float(k)]), "nodes": np.array([float(n)]),
            "intra_bytes_per_s": np.array([NVLINK3 * inside]), "intra_latency_s": np.array([intra_latency_s * inside]),
            "inter_bytes_per_s": np.array([HDR * across]), "inter_latency_s": np.array([inter_latency_s * across])}


@pytest.fixture(scope="module")
def h100():
    return load_cluster("dgx-h100")


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("volume", [1 * GB, 13 * GB])
@pytest.mark.parametrize("efficiency", [1.0, 0.75])
def test_all_reduce_in_one_node_is_nccls_ring_formula(a100, n, volume, efficiency):
    """Ring/Simple in one node: baseLat 8.4 us (tuning.cc:151) + 2(n-1) steps (tuning.cc:289, 412) of the
    NVLink step + 2(n-1)/n · V / busBw (ratio nRanks/nsteps, tuning.cc:379; time, tuning.cc:653), with busBw
    the NVLink bandwidth per direction x efficiency. The link latency is NCCL's ring/Simple step."""
    alpha = a100.node.scale_up.latency_s
    links = _links(a100, n, 1)
    expected = 8.4 * US + 2 * (n - 1) * alpha + 2 * (n - 1) / n * volume / (NVLINK3 * efficiency)
    assert collectives.chosen_algorithm("all_reduce", volume, links, efficiency, 0.5)[0] == "ring/Simple"
    assert collectives.all_reduce_time(np.array([volume]), links, efficiency, 0.5)[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n", [2, 8])
def test_all_gather_and_reduce_scatter_are_half_an_all_reduce_on_the_ring(a100, n):
    """nsteps n-1 instead of 2(n-1) (tuning.cc:289-291)."""
    volume = 4 * GB
    alpha = a100.node.scale_up.latency_s
    expected = 8.4 * US + (n - 1) * alpha + (n - 1) / n * volume / NVLINK3
    links = _links(a100, n, 1)
    assert collectives.all_gather_time(volume, links, 1.0, 1.0)[0] == pytest.approx(expected, rel=1e-12)
    assert collectives.reduce_scatter_time(volume, links, 1.0, 1.0)[0] == pytest.approx(expected, rel=1e-12)


def test_small_messages_in_one_node_take_ll(a100):
    """LL: baseLat 6.6 us, NVLink step 0.6/3.4 of Simple's, half the bus bandwidth capped at llMaxBw
    (tuning.cc:151, 159, 272, 327)."""
    n, volume, alpha = 8, 4096.0, a100.node.scale_up.latency_s
    links = _links(a100, n, 1)
    ll_max = 141e9  # llMaxBws Hopper, one node (tuning.cc:181): below 0.5 x 300 GB/s
    expected = 6.6 * US + 2 * (n - 1) * alpha * 0.6 / 3.4 + 2 * (n - 1) / n * volume / min(0.5 * NVLINK3, ll_max)
    assert collectives.chosen_algorithm("all_reduce", volume, links, 1.0, 1.0)[0] == "ring/LL"
    assert collectives.all_reduce_time(volume, links, 1.0, 1.0)[0] == pytest.approx(expected, rel=1e-12)


def test_latencies_are_nccls_table_at_nccls_link_latencies():
    """With the link latencies at NCCL's ring/Simple steps, each latency is tuning.cc's:
    ring LL, 8 GPUs: 6.6 + 14·0.6 (lines 151, 159, 412); tree LL, 2 nodes of 8: 6.8 + 2(7·0.6 + 1·5.0) (line 416);
    ring Simple, 2 nodes of 8: (8.4 + 28·max(3.4, 3·1.0) + 2·14)·1.4 (lines 404-412, 647-650);
    NVLS, 8 GPUs: 25 (line 425); NVLS tree, 2 nodes: 25 + 2·1·20.9 (line 428);
    PAT, 4 nodes of 1: 8 + 2·14/3.5 + 4·2.8 (lines 431-433); ring LL, 4 nodes of 1: 6.6 + 3·5.0 (ppn 1, line 387)."""
    tiny = 1.0  # byte: the transfer is ~1e-11 s
    one_node, two_nodes, four_single = _nccl_links(8, 1), _nccl_links(8, 2), _nccl_links(1, 4)
    ar = collectives.candidate_times("all_reduce", tiny, one_node, 1.0, 1.0, nvls=True)
    ar2 = collectives.candidate_times("all_reduce", tiny, two_nodes, 1.0, 1.0, nvls=True)
    ag = collectives.candidate_times("all_gather", tiny, four_single, 1.0, 1.0)
    expected = [(ar["ring/LL"], 6.6 + 14 * 0.6), (ar2["tree/LL"], 6.8 + 2 * (7 * 0.6 + 5.0)),
                (ar2["ring/Simple"], (8.4 + 28 * 3.4 + 2 * 14.0) * 1.4), (ar["nvls/Simple"], 25.0),
                (ar2["nvls_tree/Simple"], 25.0 + 2 * 20.9), (ag["pat/Simple"], 8.0 + 2 * 14.0 / 3.5 + 4 * 2.8),
                (ag["ring/LL"], 6.6 + 3 * 5.0)]
    for got, us in expected:
        assert got[0] == pytest.approx(us * US, rel=1e-5)
    assert np.isinf(ar["nvls_tree/Simple"][0]) and np.isinf(ar2["nvls/Simple"][0])  # tuning.cc:502, 504-506


@pytest.mark.parametrize("size, stride, bus", [(8, 1, NVLINK3), (16, 1, 8 * HDR), (64, 8, HDR)])
def test_large_messages_reach_the_bottleneck_bus_bandwidth(a100, size, stride, bus):
    """Bus bandwidth 2(N-1)/N·V/t -> the slowest stage x efficiency: a ring channel crosses each NVLink and each
    node's NICs once and NCCL's ring search keeps intra = inter bandwidth (search.cc:1246-1272), so across
    nodes it is min(NVLink, the group's NICs on a node = k x per-rank share), not a sum of phases."""
    volume, efficiency = 1e13, 0.8
    links = _links(a100, size, stride)
    n_ranks = size
    seconds = collectives.all_reduce_time(volume, links, efficiency, efficiency)[0]
    assert 2 * (n_ranks - 1) / n_ranks * volume / seconds == pytest.approx(bus * efficiency, rel=1e-3)


def test_small_messages_across_many_nodes_take_the_tree_with_log_latency(h100):
    """Tree latency 2((k-1)·intra + log2(n)·inter) (tuning.cc:416): from 16 to 256 to 4096 nodes (8 GPUs each)
    it grows by the same 2·4 network steps each time, where the ring's grows with the node count."""
    volume = 64e3
    links = [_links(h100, 8 * nodes, 1) for nodes in (16, 256, 4096)]
    seconds = [collectives.all_reduce_time(volume, link, 0.75, 0.75)[0] for link in links]
    picks = [collectives.chosen_algorithm("all_reduce", volume, link, 0.75, 0.75)[0] for link in links]
    assert all(pick.startswith("tree/") for pick in picks), picks
    assert seconds[2] - seconds[1] == pytest.approx(seconds[1] - seconds[0], rel=1e-9)
    step = h100.network.latency_s * 5.0 / 14.0  # tree/LL network step relative to ring/Simple (tuning.cc:171)
    assert seconds[1] - seconds[0] == pytest.approx(2 * 4 * step, rel=1e-9)
    ring = collectives.candidate_times("all_reduce", volume, links[2], 0.75, 0.75)["ring/LL"][0]
    assert ring > 100 * seconds[2]


@pytest.mark.parametrize("nvls", [False, True])
def test_ddp_all_reduce_weak_scales_from_128_to_16384_gpus(h100, nvls):
    """A 16 GB gradient all-reduce over 16,384 H100s (2,048 nodes, 8 NDR NICs each) takes within 10% of the
    same at 128 GPUs: bandwidth-bound, ring at 128 (2(N-1)/N·V/B), tree (2V/(0.92·B), tuning.cc:331, 380) or
    NVLS tree (tuning.cc:307-323) at 16k, whose latency grows with log2(nodes) (tuning.cc:416, 428)."""
    eff = h100.efficiency
    volume = 16 * GB
    small, large = (group_links_arrays(h100, [gpus], [1]) for gpus in (128, 16384))
    t_small, t_large = (collectives.all_reduce_time(volume, links, eff.scale_up_bandwidth_efficiency,
                                                    eff.scale_out_bandwidth_efficiency, nvls=nvls)[0]
                        for links in (small, large))
    assert t_large == pytest.approx(t_small, rel=0.10)
    # B = min(W_up, k·W_out), the slower stage: at the spec's nccl-tests-derived efficiencies the NVLink (450 x 0.808 =
    # 364 GB/s) is, just, below the 8 NDR NICs (8 x 50 x 0.96 = 384 GB/s); with 0.75 on both it was the NICs.
    bus = min(8 * 50e9 * eff.scale_out_bandwidth_efficiency, 450e9 * eff.scale_up_bandwidth_efficiency)
    assert 2 * (16384 - 1) / 16384 * volume / bus < t_large < 2 * volume / (0.92 * bus) * 1.01


def test_the_chosen_algorithm_is_reported(h100):
    links = group_links_arrays(h100, [1, 8, 8, 16384, 16384], [1, 1, 1, 1, 1])
    volume = np.array([1e9, 1e9, 1e9, 64e3, 16e9])
    nvls = np.array([False, False, True, False, False])
    picks = collectives.chosen_algorithm("all_reduce", volume, links, 0.75, 0.75, nvls=nvls)
    assert list(picks) == ["none", "ring/Simple", "nvls/Simple", "tree/LL", "tree/Simple"]
    # PAT (all-gather, one rank per node, tuning.cc:216-223) wins at small sizes over many nodes.
    pat = collectives.chosen_algorithm("all_gather", 64e3, _nccl_links(1, 1024), 1.0, 1.0)
    assert list(pat) == ["pat/Simple"]
    assert list(collectives.chosen_algorithm("all_gather", 64e3, _nccl_links(2, 512), 1.0, 1.0)) != ["pat/Simple"]
    with pytest.raises(ValueError, match="collective"):
        collectives.chosen_algorithm("broadcast", 1.0, links, 1.0, 1.0)


def test_nvls_all_reduce_in_one_node(h100):
    """NVLS: k channels of (k-1)/(k+1)·W each, x0.85 (Hopper), x2 pipelined for all-reduce (tuning.cc:142,
    311-318); latency the NVLS NVLink step, 25 us vs ring/Simple's 3.4 (tuning.cc:161, 425)."""
    k, volume, eff = 8, 16 * GB, 0.75
    links = _links(h100, k, 1)
    alpha, w = h100.node.scale_up.latency_s, h100.node.scale_up.link_bytes_per_s_per_direction * eff
    expected = alpha * 25 / 3.4 + 2 * (k - 1) / k * volume / (2 * 0.85 * (k - 1) / (k + 1) * w)
    with_nvls = collectives.all_reduce_time(volume, links, eff, eff, nvls=True)[0]
    assert with_nvls == pytest.approx(expected, rel=1e-12)
    assert with_nvls < collectives.all_reduce_time(volume, links, eff, eff)[0]


@pytest.mark.parametrize("capability, generation", [(None, "hopper"), (7.0, "volta"), (7.5, "volta"), (8.0, "ampere"),
                                                     (8.6, "ampere"), (9.0, "hopper"), (10.0, "blackwell"),
                                                     (12.0, "blackwell")])
def test_nccl_picks_its_constants_by_compute_capability(capability, generation):
    """tuning.cc:263-266: Blackwell from sm100, Hopper from sm90, Ampere from sm80, else Volta; a spec that does
    not say is taken as Hopper (assumed)."""
    assert collectives.architecture(capability).name == generation


def test_blackwell_nvls_runs_at_nccls_blackwell_efficiency():
    """nvlsEfficiency 0.74 on Blackwell against 0.85 on Hopper (tuning.cc:139-144): the same NVLS all-reduce on the
    same links moves its bytes 0.85/0.74 times slower, at the same latency; the measured 8 GiB NVLS all-reduce on
    one B200 node (838.0 GB/s busbw, stas00/ml-engineering@744d01e network/README.md:933-941) is then predicted 6.2%
    slow at the spec's link efficiency (0.760, from the same node's ring), where Hopper's factor predicted it 7.8% fast."""
    b200 = load_cluster("dgx-b200")
    assert collectives.architecture(b200.accelerator.compute_capability).name == "blackwell"
    k, volume, eff = 8, 8 * 2**30, b200.efficiency.scale_up_bandwidth_efficiency
    links = _links(b200, k, 1)
    w = b200.node.scale_up.link_bytes_per_s_per_direction * eff
    latency = b200.node.scale_up.latency_s * 25 / 3.4
    blackwell, hopper = collectives.ARCHITECTURES["blackwell"], collectives.ARCHITECTURES["hopper"]
    times = {arch.name: collectives.candidate_times("all_reduce", volume, links, eff, eff, nvls=True, arch=arch)
             ["nvls/Simple"][0] for arch in (blackwell, hopper)}
    expected = latency + 2 * (k - 1) / k * volume / (2 * 0.74 * (k - 1) / (k + 1) * w)
    assert times["blackwell"] == pytest.approx(expected, rel=1e-12)
    assert (times["blackwell"] - latency) / (times["hopper"] - latency) == pytest.approx(0.85 / 0.74, rel=1e-12)
    chosen = collectives.all_reduce_time(volume, links, eff, eff, nvls=True, arch=blackwell)[0]
    busbw = volume / chosen * 2 * (k - 1) / k
    assert busbw == pytest.approx(838.0e9, rel=0.07)


@pytest.mark.parametrize("volume, factor", [(25e6, 0.7), (100e6, 0.8), (600e6, 0.9), (2e9, 1.0)])
def test_blackwell_nvls_tree_takes_the_tree_correction(volume, factor):
    """From sm100 on an x86 host NCCL scales NVLS tree all-reduce bandwidth by treeCorrectionFactor[Simple]
    [log2i(bytes >> 6)] below 1 GB (tuning.cc:643-646): 25 MB sits at log 18 (0.7), 100 MB at 20 (0.8), 600 MB at 23
    (0.9), 2 GB past the table (1.0). Hopper's NVLS tree takes no correction. (The audit's oracle, a port of
    ncclTopoTuneModel: 124.2 us for 25 MB over two B200 nodes.)"""
    b200 = load_cluster("dgx-b200")
    links = _links(b200, 16, 1)
    eff_up, eff_out = 0.76, 0.96
    blackwell, hopper = collectives.ARCHITECTURES["blackwell"], collectives.ARCHITECTURES["hopper"]

    def nvls_tree(arch):
        return collectives.candidate_times("all_reduce", volume, links, eff_up, eff_out, nvls=True,
                                           arch=arch)["nvls_tree/Simple"][0]

    latency = b200.node.scale_up.latency_s * 25 / 3.4 + 2 * 1 * b200.network.latency_s * 20.9 / 14
    transfer = nvls_tree(blackwell) - latency
    uncorrected = collectives.candidate_times("all_reduce", volume, links, eff_up, eff_out, nvls=True,
                                              arch=collectives.Architecture(**{**blackwell.__dict__,
                                                                               "nvls_tree_corrected": False})
                                              )["nvls_tree/Simple"][0] - latency
    assert transfer == pytest.approx(uncorrected / factor, rel=1e-9)
    assert not hopper.nvls_tree_corrected and blackwell.nvls_tree_corrected


def test_volta_ring_plateau_is_1_9():
    """The multi-node ring/Simple all-reduce latency is x1.9 below sm80 and x1.4 from it (tuning.cc:647-650)."""
    links = _nccl_links(8, 4)
    volta, ampere = collectives.ARCHITECTURES["volta"], collectives.ARCHITECTURES["ampere"]
    # A buffer of one byte has no transfer to speak of: the ring/Simple candidate is its latency.
    times = {arch.name: collectives.candidate_times("all_reduce", 1.0, links, 1.0, 1.0, arch=arch)["ring/Simple"][0]
             for arch in (volta, ampere)}
    assert times["volta"] / times["ampere"] == pytest.approx(1.9 / 1.4, rel=1e-6)


@pytest.mark.parametrize("generation, cap_gb", [("volta", 39.0), ("ampere", 87.7), ("hopper", 141.0),
                                                ("blackwell", 282.0)])
def test_one_node_ring_ll_is_capped_per_generation(generation, cap_gb):
    """llMaxBws for one node by GPU generation (tuning.cc:178-183): ring/LL runs at min(0.5·B, llMaxBw)
    (tuning.cc:327); with a fast enough link the cap binds. Across nodes the cap follows the host CPU, not the GPU."""
    k, volume = 8, 64 * 2**20
    arch = collectives.ARCHITECTURES[generation]
    links = _nccl_links(k, 1)
    links["intra_bytes_per_s"] = np.array([4e12])  # 0.5·B = 2 TB/s, above every cap
    ll = collectives.candidate_times("all_reduce", volume, links, 1.0, 1.0, arch=arch)["ring/LL"][0]
    latency = (6.6 + 2 * (k - 1) * 0.6) * US
    assert ll - latency == pytest.approx(2 * (k - 1) / k * volume / (cap_gb * GB), rel=1e-12)
    across = _nccl_links(k, 4)
    assert (collectives.candidate_times("all_reduce", volume, across, 1.0, 1.0, arch=arch)["ring/LL"][0]
            == collectives.candidate_times("all_reduce", volume, across, 1.0, 1.0)["ring/LL"][0])


def test_calls_each_pay_latency_and_choose_by_their_own_size(h100):
    """NCCL picks algorithm and protocol per call from that call's bytes (enqueue.cc:2127-2151)."""
    links = _links(h100, 1024, 1)
    volume, calls = 16 * GB, 640.0
    split = collectives.all_reduce_time(volume, links, 0.75, 0.75, calls=calls)[0]
    one_call = collectives.all_reduce_time(volume / calls, links, 0.75, 0.75)[0]
    assert split == pytest.approx(calls * one_call, rel=1e-12)
    assert split > collectives.all_reduce_time(volume, links, 0.75, 0.75)[0]
    assert (collectives.chosen_algorithm("all_reduce", volume, links, 0.75, 0.75, calls=calls)
            == collectives.chosen_algorithm("all_reduce", volume / calls, links, 0.75, 0.75))


def test_single_rank_or_empty_buffer_moves_nothing(a100):
    assert collectives.all_reduce_time(1 * GB, _links(a100, 1, 1), 1.0, 1.0, nvls=True)[0] == 0.0
    assert collectives.all_gather_time(1 * GB, _links(a100, 1, 1), 1.0, 1.0)[0] == 0.0
    assert collectives.all_reduce_time(0.0, _links(a100, 8, 1), 1.0, 1.0)[0] == 0.0


def test_group_across_nodes_is_slower_than_inside_one(a100):
    volume = np.array([2 * GB])
    inside = collectives.all_reduce_time(volume, _links(a100, 8, 1), 0.75, 0.75)[0]
    two_nodes = collectives.all_reduce_time(volume, _links(a100, 16, 1), 0.75, 0.75)[0]
    many = collectives.all_reduce_time(volume, _links(a100, 512, 1), 0.75, 0.75)[0]
    assert inside < two_nodes < many


def test_point_to_point():
    assert collectives.p2p_time(1 * GB, HDR, 5e-6, 0.8) == pytest.approx(1 * GB / (HDR * 0.8) + 5e-6, rel=1e-15)


def test_vectorised_equals_one_by_one(a100, h100):
    """The batch path is the scalar path on size-1 arrays: bit-identical, for every collective and pick."""
    sizes = np.array([1, 2, 8, 8, 16, 64, 1024, 4096, 8192, 3])
    strides = np.array([1, 1, 1, 8, 1, 8, 1, 1, 8, 2])
    volume = np.array([1e3, 2e9, 3e5, 4e9, 5e7, 6e4, 7e9, 8e6, 9e8, 1e9])
    calls = np.array([1.0, 3.0, 1.0, 10.0, 2.0, 1.0, 40.0, 1.0, 5.0, 1.0])
    nvls = np.array([True, False, True, True, False, True, True, False, True, False])
    for cluster in (a100, h100):
        links = group_links_arrays(cluster, sizes, strides)
        for name in ("all_reduce", "all_gather", "reduce_scatter"):
            batch = getattr(collectives, f"{name}_time")(volume, links, 0.75, 0.6, calls, nvls=nvls)
            picks = collectives.chosen_algorithm(name, volume, links, 0.75, 0.6, calls, nvls=nvls)
            for i in range(len(sizes)):
                one = _links(cluster, sizes[i], strides[i])
                assert batch[i] == getattr(collectives, f"{name}_time")(volume[i:i + 1], one, 0.75, 0.6, calls[i],
                                                                         nvls=nvls[i])[0]
                assert picks[i] == collectives.chosen_algorithm(name, volume[i], one, 0.75, 0.6, calls[i], nvls=nvls[i])[0]


@given(k=st.sampled_from([1, 2, 4, 8, 72]), n=st.sampled_from([1, 2, 3, 16, 2048]),
       volume=st.floats(1.0, 1e11), calls=st.floats(1.0, 1e3), nvls=st.booleans(),
       which=st.sampled_from(["intra_bytes_per_s", "inter_bytes_per_s", "intra_latency_s", "inter_latency_s"]),
       factor=st.floats(1.0, 100.0))
def test_a_slower_link_never_makes_a_collective_faster(k, n, volume, calls, nvls, which, factor):
    """Every candidate is non-decreasing in each latency and each inverse bandwidth, and so is their minimum."""
    links = _nccl_links(k, n, 3e-6, 5e-6)
    slower = dict(links)
    slower[which] = links[which] / factor if which.endswith("bytes_per_s") else links[which] * factor
    for name in ("all_reduce_time", "all_gather_time"):
        fast = getattr(collectives, name)(volume, links, 0.75, 0.75, calls, nvls=nvls)[0]
        slow = getattr(collectives, name)(volume, slower, 0.75, 0.75, calls, nvls=nvls)[0]
        assert slow >= fast * (1 - 1e-12), (name, fast, slow)


@pytest.mark.parametrize("gcds, busbw_gb", [(8, 125.0), (16, 85.0)])
def test_frontier_reproduces_rccl_all_reduce_busbw_on_its_node(gcds, busbw_gb):
    """rccl-tests all_reduce_perf, fp16 at 128 MiB, on LUMI-G, whose node is Frontier's (HPE Cray EX235a: 4x MI250X,
    4x Slingshot-11 200 Gb/s): 125 GB/s busbw on one node, 85 on two (the reference values of LUMI's regression tests,
    Lumi-supercomputer/lumi-reframe-tests@46d51236 checks/ai-guide/check_ddp_visualtransformer.py test_container_rccl).
    The frontier-mi250x spec's efficiencies (0.652 in the node, 0.924 over the network) are those at which the model
    gives them (docs/link_efficiency.md); within 1%."""
    frontier = load_cluster("frontier-mi250x")
    volume = 134217728.0
    up, out = frontier.efficiency.scale_up_bandwidth_efficiency, frontier.efficiency.scale_out_bandwidth_efficiency
    assert (up, out) == (0.652, 0.924)
    seconds = collectives.all_reduce_time(volume, _links(frontier, gcds, 1), up, out,
                                          arch=collectives.architecture(frontier.accelerator.compute_capability))[0]
    assert volume / seconds * 2 * (gcds - 1) / gcds == pytest.approx(busbw_gb * 1e9, rel=0.01)


def test_dgx2_reproduces_its_measured_nvswitch_all_reduce_busbw():
    """nccl-tests all_reduce_perf on a DGX-2, 12 of its 16 V100-SXM3-32GB, 8 GiB (one job of 12 ranks): busbw 123.56 GB/s
    (wohlbier/nccl-tests@33ee81a README.md, "Results on dgx-2"); the dgx2-v100 spec's 0.824 gives it within 1%."""
    dgx2 = load_cluster("dgx2-v100")
    volume, ranks = 8 * 2**30, 12
    eff = dgx2.efficiency
    # One group of 12 on the node (job_ranks): no straddling group as a larger job's (topology.group_spread).
    links = group_links_arrays(dgx2, np.array([ranks]), np.array([1]), job_ranks=ranks)
    seconds = collectives.all_reduce_time(volume, links, eff.scale_up_bandwidth_efficiency,
                                          eff.scale_out_bandwidth_efficiency,
                                          arch=collectives.architecture(dgx2.accelerator.compute_capability))[0]
    assert volume / seconds * 2 * (ranks - 1) / ranks == pytest.approx(123.56e9, rel=0.01)


@pytest.mark.parametrize("size, stride, job, spread", [
    (12, 1, 96, (8, 2, 4)),   # dp 12 at tp 1 (pp 8): groups of 12 consecutive ranks are 8 + 4 across two nodes
    (6, 2, 96, (4, 2, 2)),    # dp 6 at tp 2: the second group is 2 + 4
    (6, 1, 48, (4, 2, 2)),    # dp 6 at tp 1: ranks 6-11 straddle, though 6 fits in a node
    (6, 1, 6, (6, 1, 6)),     # one group of 6 on one node (a job of 6)
    (24, 1, 96, (8, 3, 8)),   # whole nodes: even
    (16, 1, 64, (8, 2, 8)),
])
def test_uneven_groups_are_priced_at_their_emptiest_node(h100, size, stride, job, spread):
    """The NCCL-oracle audit: a group that does not fill its nodes evenly (dp 12 on 8-GPU nodes) was priced as k·n
    ranks at k NICs a node, 34-47% fast: NCCL runs the ring at the slowest rank's bandwidth (init.cc:1436-1446),
    here the node with 4 members and 4 NICs, over the group's 12 ranks. (most on a node, nodes, fewest on a node)."""
    from planner.specs.topology import group_spread

    assert group_spread(size, stride, 8, job // (size * stride)) == spread
    links = group_links_arrays(h100, np.array([size]), np.array([stride]), job_ranks=job)
    most, nodes, fewest = spread
    assert (links["ranks_per_node"][0], links["nodes"][0], links["ranks"][0], links["fewest_per_node"][0]) == (
        most, nodes, size, fewest)
    if nodes > 1 and fewest < most:
        eff = 0.8
        uneven = collectives.all_reduce_time(500e6, links, eff, eff)[0]
        even = collectives.all_reduce_time(500e6, {**links, "fewest_per_node": links["ranks_per_node"],
                                                   "ranks": links["ranks_per_node"] * links["nodes"]}, eff, eff)[0]
        assert uneven > 1.3 * even
