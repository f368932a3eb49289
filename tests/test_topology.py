"""Rank placement (tp innermost) and the per-flow bandwidth of the links each group crosses."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from planner.specs.hardware import parse_cluster_spec

from planner.specs.clusters import default_cluster_dir
from planner.specs.topology import group_links, group_links_arrays, group_shape

NVLINK3_PER_DIRECTION = 300e9  # A100 datasheet: 600 GB/s total, 300 each way (REFERENCE.md)
HDR_PER_DIRECTION = 25e9  # HDR InfiniBand 200 Gb/s


def _spec(**changes):
    """dgx-a100-80gb with top-level sections patched, e.g. network={'topology': 'fat-tree'}."""
    data = yaml.safe_load((default_cluster_dir() / "dgx-a100-80gb.yaml").read_text(encoding="utf-8"))
    data = copy.deepcopy(data)
    for section, values in changes.items():
        data[section].update(values)
    return parse_cluster_spec(data, "test.yaml")


@pytest.mark.parametrize(
    "size, stride, gpn, expected",
    [
        (1, 1, 8, (1, 1)),
        (8, 1, 8, (8, 1)),  # tp=8 fills a node
        (4, 2, 8, (4, 1)),  # 4 ranks 2 apart: one node
        (16, 1, 8, (8, 2)),
        (8, 8, 8, (1, 8)),  # dp group with tp=8: one rank per node
        (4, 4, 8, (2, 2)),
        (8, 2, 16, (8, 1)),  # DGX-2: 16 GPUs per node
    ],
)
def test_group_shape(size, stride, gpn, expected):
    assert group_shape(size, stride, gpn) == expected


def test_group_inside_a_node_runs_at_nvlink_speed(a100):
    links = group_links(a100, 8, 1)
    assert (links.ranks_per_node, links.nodes) == (8, 1)
    assert links.intra_bytes_per_s == NVLINK3_PER_DIRECTION
    assert links.inter_bytes_per_s == 0.0
    # GPU -> NVSwitch -> GPU: the spec's scale-up latency end to end.
    assert links.intra_latency_s == pytest.approx(a100.node.scale_up.latency_s, rel=1e-12)


def test_group_across_nodes_gets_one_nic_per_rank_on_rails(a100):
    links = group_links(a100, 8, 8)
    assert (links.ranks_per_node, links.nodes) == (1, 8)
    assert links.inter_bytes_per_s == HDR_PER_DIRECTION
    assert links.inter_latency_s == pytest.approx(a100.network.latency_s, rel=1e-12)


def test_ranks_sharing_a_nic_share_its_bandwidth():
    """One NIC per node and 8 GPUs: the 8 concurrent cross-node rings each get an eighth of it."""
    cluster = _spec(network={"nics_per_node": 1})
    assert group_links(cluster, 8, 8).inter_bytes_per_s == pytest.approx(HDR_PER_DIRECTION / 8, rel=1e-12)


@pytest.mark.parametrize("topology", ["rail-optimized", "fat-tree"])
def test_more_nics_than_gpus_add_their_bandwidth(topology):
    """AWS p5's 32 EFA NICs of 100 Gb/s on 8 GPUs: NCCL spreads each GPU's channels over its 4 local NICs (topo.cc
    ncclTopoGetLocalNetType), so a GPU reaches 400 Gb/s, as 8 NICs of 400 Gb/s would. Each GPU was tied to one NIC
    and the other three carried nothing: a quarter of the bandwidth. 12 NICs give each GPU 1.5 NICs' worth."""
    gbit = 1e9 / 8
    p5 = _spec(network={"topology": topology, "nics_per_node": 32, "nic_bandwidth": "100 Gb/s"})
    wide = _spec(network={"topology": topology, "nics_per_node": 8, "nic_bandwidth": "400 Gb/s"})
    for size, stride in ((8, 8), (16, 8), (64, 1), (4, 16)):
        assert group_links(p5, size, stride).inter_bytes_per_s == pytest.approx(
            group_links(wide, size, stride).inter_bytes_per_s, rel=1e-12)
    assert group_links(p5, 8, 8).inter_bytes_per_s == pytest.approx(400 * gbit, rel=1e-12)
    twelve = _spec(network={"topology": topology, "nics_per_node": 12, "nic_bandwidth": "100 Gb/s"})
    assert group_links(twelve, 8, 8).inter_bytes_per_s == pytest.approx(150 * gbit, rel=1e-12)


def test_a_taper_on_a_rail_fabric_is_refused_not_ignored():
    """Audit-found: a rail-optimized spec's oversubscription was read and changed nothing (no ring crosses a spine in
    the rail graph). Refused with the key and what to write instead; 1 stays valid."""
    from planner.errors import PlannerInputError

    with pytest.raises(PlannerInputError, match="oversubscription 2 with topology rail-optimized: .* describe a "
                                                "tapered fabric as fat-tree"):
        _spec(network={"topology": "rail-optimized", "oversubscription": 2.0})
    assert _spec(network={"topology": "rail-optimized", "oversubscription": 1.0}).network.oversubscription == 1.0


def test_oversubscribed_fat_tree_divides_the_spine_share():
    flat = _spec(network={"topology": "fat-tree", "oversubscription": 1.0})
    tapered = _spec(network={"topology": "fat-tree", "oversubscription": 4.0})
    assert group_links(flat, 8, 8).inter_bytes_per_s == pytest.approx(HDR_PER_DIRECTION, rel=1e-12)
    assert group_links(tapered, 8, 8).inter_bytes_per_s == pytest.approx(HDR_PER_DIRECTION / 4, rel=1e-12)


def test_single_node_cluster_groups_inside_the_node():
    from planner.specs.clusters import load_cluster

    cpu = load_cluster("cpu-local")
    links = group_links(cpu, 2, 1)
    assert (links.ranks_per_node, links.nodes) == (2, 1)
    assert links.intra_bytes_per_s == cpu.node.scale_up.link_bytes_per_s_per_direction


def test_vectorised_lookup_matches_scalar(a100):
    sizes = np.array([1, 2, 8, 16, 8, 64, 2, 8])
    strides = np.array([1, 1, 1, 1, 8, 1, 8, 2])
    arrays = group_links_arrays(a100, sizes, strides)
    for i, (size, stride) in enumerate(zip(sizes, strides)):
        links = group_links(a100, int(size), int(stride))
        for name, values in arrays.items():
            assert values[i] == getattr(links, name), (size, stride, name)


# --- Three levels and a dragonfly (issue 16 item 3) -------------------------------------------------

def _frontier_data():
    return yaml.safe_load((default_cluster_dir() / "frontier-mi250x.yaml").read_text(encoding="utf-8"))


def test_frontier_groups_run_rings_over_the_infinity_fabric_links():
    """OLCF Frontier node diagram: 4 links (200 GB/s) inside an MI250X; between packages 1 or 2 links of 50.
    Rings over direct links, split as RCCL's channels are (the best packing): by hand,
    - tp 2 {0,1}: the package link, 200;
    - tp 4 {0,1,2,3}: one ring 0-1-3-2 through two single links, both directions: 2 x 50 = 100;
    - tp 8: the rings 0-1-3-2-4-5-7-6 and 0-1-5-4-6-7-3-2 use disjoint cross-package links; 2 rings x 2
      directions x 50 = 200;
    - dp 2 stride 2 {0,2}, {1,3}, ...: one single link each way, 50."""
    frontier = parse_cluster_spec(_frontier_data(), "frontier-mi250x.yaml")
    expected = {(2, 1): 200e9, (4, 1): 100e9, (8, 1): 200e9, (4, 2): 100e9, (2, 2): 50e9}
    for (size, stride), bandwidth in expected.items():
        assert group_links(frontier, size, stride).intra_bytes_per_s == pytest.approx(bandwidth, rel=1e-9), (size, stride)
    # The cross-node phase is one Slingshot NIC per package, shared by its two GCDs.
    assert group_links(frontier, 16, 1).inter_bytes_per_s == 25e9 / 2


def test_ring_packing_is_the_best_split_over_links():
    from planner.specs.topology import ring_packing_bytes_per_s

    # A triangle with one slow edge: each direction's ring is capped by it.
    capacity = {}
    for a, b, bandwidth in [(0, 1, 100e9), (1, 2, 100e9), (0, 2, 30e9)]:
        capacity[(a, b)] = capacity[(b, a)] = bandwidth
    assert ring_packing_bytes_per_s(capacity, [[0, 1, 2]]) == pytest.approx(60e9)
    assert ring_packing_bytes_per_s(capacity, [[0, 1, 3]]) is None  # 3 has no link


def test_without_explicit_links_the_package_level_is_a_faster_path():
    data = _frontier_data()
    del data["node"]["scale_up"]["links"], data["node"]["scale_up"]["link_bandwidth_per_direction"]
    coarse = parse_cluster_spec(data, "coarse.yaml")
    assert group_links(coarse, 2, 1).intra_bytes_per_s == 200e9  # through the package
    assert group_links(coarse, 8, 1).intra_bytes_per_s == 150e9  # the ring leaves each package on the fabric
    del data["node"]["package"]
    assert group_links(parse_cluster_spec(data, "flat.yaml"), 2, 1).intra_bytes_per_s == 150e9


def test_links_must_match_the_stated_bandwidths():
    data = _frontier_data()
    data["node"]["scale_up"]["links"][0] = [0, 1, 3]
    with pytest.raises(Exception, match=r"links \[0, 1, 3\] give 150 GB/s inside a package but package.bandwidth_per_direction is 200"):
        parse_cluster_spec(data, "bad.yaml")
    data = _frontier_data()
    data["node"]["scale_up"]["bandwidth_per_direction"] = "100GB/s"
    with pytest.raises(Exception, match="fastest accelerator's links outside its package give 150 GB/s"):
        parse_cluster_spec(data, "bad.yaml")
    data = _frontier_data()
    data["node"]["scale_up"]["links"].append([7, 8, 1])
    with pytest.raises(Exception, match=r"accelerator index is >= accelerators_per_node\(8\)"):
        parse_cluster_spec(data, "bad.yaml")


def test_package_must_divide_the_node():
    data = _frontier_data()
    data["node"]["package"]["accelerators_per_package"] = 3
    with pytest.raises(Exception, match=r"accelerators_per_package\(3\) does not divide accelerators_per_node\(8\)"):
        parse_cluster_spec(data, "bad.yaml")


def test_dragonfly_block_needs_a_dragonfly_topology():
    raw = yaml.safe_load((default_cluster_dir() / "dgx-a100-80gb.yaml").read_text(encoding="utf-8"))
    raw["network"]["dragonfly"] = {"nodes_per_group": 4, "global_bandwidth_per_group": "100GB/s"}
    with pytest.raises(Exception, match="a dragonfly block needs topology: dragonfly"):
        parse_cluster_spec(raw, "bad.yaml")


def test_tapered_global_links_slow_only_rings_that_leave_their_group():
    """A dragonfly whose groups of 4 nodes share 40 GB/s of global links (a 10:1 taper of 4 x 100 GB/s injection)."""
    data = _frontier_data()
    data["network"]["dragonfly"] = {"nodes_per_group": 4, "global_bandwidth_per_group": "40GB/s"}
    tapered = parse_cluster_spec(data, "tapered.yaml")
    nic_share = 25e9 / 2
    assert group_links(tapered, 4, 8).inter_bytes_per_s == nic_share  # 4 consecutive nodes: one group
    # 8 nodes, neighbours one node apart: one node per group sends its 8 flows out over the global links.
    assert group_links(tapered, 8, 8).inter_bytes_per_s == pytest.approx(40e9 / (1 * 8))
    # Pipeline-like hops 4 nodes apart: every node of a group sends out of it.
    assert group_links(tapered, 2, 32).inter_bytes_per_s == pytest.approx(40e9 / (4 * 8))
    # Frontier's global links (4 to each of the 76 other groups, 7.6 TB/s) taper its 12.8 TB/s injection 1.68x:
    # a ring of nodes 200 apart leaves its group from every node, 128 x 8 flows sharing them.
    frontier = parse_cluster_spec(_frontier_data(), "frontier-mi250x.yaml")
    assert group_links(frontier, 2, 8 * 200).inter_bytes_per_s == pytest.approx(7.6e12 / (128 * 8))
    assert group_links(frontier, 2, 8 * 200).inter_bytes_per_s < nic_share


def test_large_point_to_point_groups_take_the_path_model_quickly():
    """A 16-accelerator ring of links: enumerating 15! ring orders would never finish; the path model answers."""
    data = _frontier_data()
    data["node"]["accelerators_per_node"] = 16
    del data["node"]["package"]
    data["node"]["scale_up"]["links"] = [[i, (i + 1) % 16, 2] for i in range(16)]
    data["node"]["scale_up"]["bandwidth_per_direction"] = "200GB/s"
    data["network"]["nics_per_node"] = 8
    ring = parse_cluster_spec(data, "ring16.yaml")
    assert group_links(ring, 16, 1).intra_bytes_per_s == pytest.approx(100e9)  # one channel over 2 x 50 links


def test_links_must_join_every_accelerator():
    data = _frontier_data()
    data["node"]["scale_up"]["links"] = [link for link in data["node"]["scale_up"]["links"] if 7 not in link[:2]]
    with pytest.raises(Exception, match=r"leave accelerators \[7\] unreachable"):
        parse_cluster_spec(data, "bad.yaml")


def test_tensor_parallel_groups_that_would_straddle_nodes_are_refused_and_never_searched(tmp_path, cli, repo_root):
    """tp 4 on 6-GPU nodes: ranks 4-7 span two nodes, yet the group shape priced every tp group on NVLink (tp_comm
    as on 8-GPU nodes), and the fixed-model search listed 1,476 such layouts as feasible."""
    import csv

    spec = (repo_root / "cluster_specs" / "dgx-h100.yaml").read_text()
    path = tmp_path / "six.yaml"
    path.write_text(spec.replace("accelerators_per_node: 8 ", "accelerators_per_node: 6 ", 1))
    code, out, err = cli(["simulate", "--cluster", path, "--model", "llama2-7b", "--gpus", "12", "--tp", "4",
                          "--dp", "3", "--global-batch", "12"])
    assert code == 2 and out == "" and "tp(4) neither divides nor is a multiple of gpus_per_node(6)" in err
    code, _, err = cli(["simulate", "--cluster", path, "--model", "llama2-7b", "--gpus", "12", "--tp", "2",
                        "--dp", "6", "--global-batch", "12"])
    assert code in (0, 1), err
    table = tmp_path / "all.csv"
    code, _, err = cli(["optimize", "--model", "llama3-8b", "--gpus", "12", "--tokens", "100B", "--cluster", path,
                        "--all-layouts", table])
    assert code == 0, err
    with open(table, newline="") as stream:
        assert {int(row["tp"]) for row in csv.DictReader(stream)} == {1, 2}
