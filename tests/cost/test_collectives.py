"""Alpha-beta ring collectives (scaling-book "sharding"; NCCL bus-bandwidth convention), flat and hierarchical."""

from __future__ import annotations

import numpy as np
import pytest

from planner.cost import collectives
from planner.topology import group_links_arrays

GB = 1e9
NVLINK3 = 300e9  # A100 NVLink3 per direction
HDR = 25e9  # HDR InfiniBand per NIC per direction


def _links(cluster, size, stride):
    return group_links_arrays(cluster, np.array([size]), np.array([stride]))


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("volume", [1e6, 1 * GB, 13 * GB])
@pytest.mark.parametrize("efficiency", [1.0, 0.75])
def test_all_reduce_in_one_node_is_the_ring_formula(a100, n, volume, efficiency):
    """2·(n-1)/n · V / W + 2·(n-1)·alpha, W = NVLink bandwidth per direction x efficiency, alpha = hop latency."""
    alpha = a100.node.scale_up.latency_s
    expected = 2 * (n - 1) / n * volume / (NVLINK3 * efficiency) + 2 * (n - 1) * alpha
    got = collectives.all_reduce_time(np.array([volume]), _links(a100, n, 1), efficiency, 0.5)
    assert got[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n", [2, 8])
def test_all_gather_and_reduce_scatter_are_half_an_all_reduce_in_bandwidth(a100, n):
    volume = 4 * GB
    alpha = a100.node.scale_up.latency_s
    expected = (n - 1) / n * volume / NVLINK3 + (n - 1) * alpha
    links = _links(a100, n, 1)
    assert collectives.all_gather_time(volume, links, 1.0, 1.0)[0] == pytest.approx(expected, rel=1e-12)
    assert collectives.reduce_scatter_time(volume, links, 1.0, 1.0)[0] == pytest.approx(expected, rel=1e-12)


def test_large_messages_reach_bus_bandwidth(a100):
    """With latency negligible, bus bandwidth 2(n-1)/n·V/t equals the link bandwidth (nccl-tests convention)."""
    volume, n = 1e12, 8
    seconds = collectives.all_reduce_time(volume, _links(a100, n, 1), 1.0, 1.0)[0]
    assert 2 * (n - 1) / n * volume / seconds == pytest.approx(NVLINK3, rel=1e-4)


def test_single_rank_moves_nothing(a100):
    assert collectives.all_reduce_time(1 * GB, _links(a100, 1, 1), 1.0, 1.0)[0] == 0.0
    assert collectives.all_gather_time(1 * GB, _links(a100, 1, 1), 1.0, 1.0)[0] == 0.0


def test_group_across_nodes_is_slower_than_inside_one(a100):
    volume = np.array([2 * GB])
    inside = collectives.all_reduce_time(volume, _links(a100, 8, 1), 0.75, 0.75)[0]
    two_nodes = collectives.all_reduce_time(volume, _links(a100, 8, 2), 0.75, 0.75)[0]
    eight_nodes = collectives.all_reduce_time(volume, _links(a100, 8, 8), 0.75, 0.75)[0]
    assert inside < two_nodes < eight_nodes


def test_hierarchical_all_reduce_over_two_nodes(a100):
    """16 ranks = 8 per node x 2 nodes: ring inside the node on V, ring across nodes on V/8 per rank."""
    volume = 8 * GB
    k, n = 8, 2
    alpha_up, alpha_out = a100.node.scale_up.latency_s, a100.network.latency_s
    expected = (2 * (k - 1) / k * volume / NVLINK3 + 2 * (n - 1) / n * (volume / k) / HDR
                + 2 * ((k - 1) * n * alpha_up + (n - 1) * alpha_out))
    got = collectives.all_reduce_time(volume, _links(a100, 16, 1), 1.0, 1.0)[0]
    assert got == pytest.approx(expected, rel=1e-12)


def test_more_calls_cost_only_latency(a100):
    links = _links(a100, 8, 1)
    one = collectives.all_gather_time(1 * GB, links, 1.0, 1.0, calls=1)[0]
    ten = collectives.all_gather_time(1 * GB, links, 1.0, 1.0, calls=10)[0]
    assert ten - one == pytest.approx(9 * 7 * a100.node.scale_up.latency_s, rel=1e-9)


def test_point_to_point():
    assert collectives.p2p_time(1 * GB, HDR, 5e-6, 0.8) == pytest.approx(1 * GB / (HDR * 0.8) + 5e-6, rel=1e-15)


def test_vectorised_over_candidates(a100):
    sizes, strides = np.array([1, 2, 8, 8, 16]), np.array([1, 1, 1, 8, 1])
    volume = np.array([1, 2, 3, 4, 5]) * GB
    batch = collectives.all_reduce_time(volume, group_links_arrays(a100, sizes, strides), 0.75, 0.75)
    one_by_one = [collectives.all_reduce_time(volume[i:i + 1], _links(a100, sizes[i], strides[i]), 0.75, 0.75)[0]
                  for i in range(len(sizes))]
    np.testing.assert_array_equal(batch, one_by_one)
