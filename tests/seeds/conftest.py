"""Shared helpers for the seed-paper reproductions: clusters varied from the bundled specs."""

from __future__ import annotations

import pytest

from planner.specs.hardware import ClusterSpec

from planner.specs.clusters import load_cluster


def with_nics(name: str, nics_per_node: int) -> ClusterSpec:
    """A bundled spec with `nics_per_node` scale-out NICs per node (same NIC bandwidth), e.g. the 1-IB and
    4-IB DGX-2 clusters of the ZeRO++ evaluation."""
    spec = load_cluster(name)
    network = spec.network.model_copy(update={"nics_per_node": nics_per_node})
    return spec.model_copy(update={"network": network, "name": f"{name}-{nics_per_node}nic"})


@pytest.fixture(scope="session")
def nics():
    """with_nics, handed out as a fixture (tests run with --import-mode=importlib)."""
    return with_nics
