"""Bundled cluster specs load, agree with the REFERENCE.md hardware table, and bad specs fail with one-line errors.

The golden figures below are typed from the "Hardware figures" table of shared/REFERENCE.md (vendor datasheets),
not read from the YAML files, so a typo in a spec fails here.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from planner.errors import PlannerInputError
from planner.specs.hardware import DTYPES, load_cluster_file
from planner.specs.clusters import available_clusters, default_cluster_dir, load_cluster

TOLERANCE = 0.02
GiB = 2**30
T = 1e12
G = 1e9

# REFERENCE.md table rows, per accelerator: dense bf16/fp16 FLOP/s (V100: fp16 only), fp8, HBM, HBM bandwidth,
# scale-up bandwidth per direction (the table gives totals: "600 GB/s total (300 each way)").
# HBM: the table's nominal "80 GB" capacities are binary sizes in practice (nvidia-smi shows 81920MiB on A100
# 80GB, 81559MiB on H100), so they are compared as GiB. B200's "180-192 GB" is 180 in a DGX B200 (1440 GB / 8).
REFERENCE_TABLE = {
    "dgx2-v100": dict(fp16=125 * T, hbm=32 * GiB, hbm_bw=0.9 * T, link=300 * G / 2),
    "dgx-a100-40gb": dict(bf16=312 * T, fp16=312 * T, hbm=40 * GiB, hbm_bw=1.555 * T, link=300 * G),
    "dgx-a100-80gb": dict(bf16=312 * T, fp16=312 * T, hbm=80 * GiB, hbm_bw=2.039 * T, link=600 * G / 2),
    "jean-zay-a100": dict(bf16=312 * T, fp16=312 * T, hbm=80 * GiB, hbm_bw=2.039 * T, link=600 * G / 2),
    "dgx-h100": dict(bf16=989 * T, fp16=989 * T, fp8=1979 * T, hbm=80 * GiB, hbm_bw=3.35 * T, link=450 * G),
    "dgx-h200": dict(bf16=989 * T, fp16=989 * T, fp8=1979 * T, hbm=141 * GiB, hbm_bw=4.8 * T, link=900 * G / 2),
    "dgx-b200": dict(bf16=2250 * T, fp16=2250 * T, fp8=4500 * T, hbm=180 * GiB, hbm_bw=8 * T, link=1.8 * T / 2),
    "frontier-mi250x": dict(bf16=191.5 * T, fp16=191.5 * T, hbm=64 * GiB, hbm_bw=1.6 * T),
}

# REFERENCE.md "Network" line: HDR 200 Gb/s = 25 GB/s per NIC, NDR 400 Gb/s = 50 GB/s; DGX A100 8 HDR, DGX H100 8 NDR.
REFERENCE_NICS = {
    "dgx-a100-40gb": (8, 25 * G),
    "dgx-a100-80gb": (8, 25 * G),
    "dgx-h100": (8, 50 * G),
    "dgx-h200": (8, 50 * G),
    "dgx-b200": (8, 50 * G),
}

# Specs this project ships; each must be present (other specs, e.g. calibrated copies, may be added).
EXPECTED_SPECS = {*REFERENCE_TABLE, "cpu-local"}


def _close(actual: float, expected: float) -> bool:
    return abs(actual - expected) <= TOLERANCE * expected


def test_expected_specs_are_bundled():
    missing = EXPECTED_SPECS - set(available_clusters())
    assert not missing, f"missing cluster specs: {sorted(missing)}"


@pytest.mark.parametrize("name", available_clusters())
def test_every_bundled_spec_loads(name):
    spec = load_cluster(name)
    if not name.endswith(".calibrated"):
        assert spec.name == name, f"{name}.yaml declares name {spec.name!r}"
    assert spec.gpus_per_node > 0
    assert spec.accelerator.hbm_bytes > 0 and spec.accelerator.hbm_bytes_per_s > 0
    assert spec.node.scale_up.link_bytes_per_s_per_direction > 0
    assert any(getattr(spec.accelerator.peak_flops, dtype) for dtype in DTYPES)


@pytest.mark.parametrize("name", sorted(REFERENCE_TABLE))
def test_spec_matches_reference_table(name):
    spec = load_cluster(name)
    expected = REFERENCE_TABLE[name]
    checks = {
        "hbm": spec.accelerator.hbm_bytes,
        "hbm_bw": spec.accelerator.hbm_bytes_per_s,
        "link": spec.node.scale_up.link_bytes_per_s_per_direction,
    }
    for dtype in ("bf16", "fp16", "fp8"):
        if dtype in expected:
            checks[dtype] = spec.peak_flops_per_s(dtype)
    for key, value in expected.items():
        assert _close(checks[key], value), f"{name}: {key} = {checks[key]:.4g}, REFERENCE.md says {value:.4g}"


@pytest.mark.parametrize("name", sorted(REFERENCE_NICS))
def test_nics_match_reference(name):
    spec = load_cluster(name)
    count, per_nic = REFERENCE_NICS[name]
    assert spec.network.nics_per_node == count
    assert _close(spec.network.nic_bytes_per_s_per_direction, per_nic)


def test_v100_has_no_bf16():
    spec = load_cluster("dgx2-v100")
    with pytest.raises(PlannerInputError, match="bf16"):
        spec.peak_flops_per_s("bf16")


def test_cpu_local_is_one_node_of_two_ranks():
    spec = load_cluster("cpu-local")
    assert spec.gpus_per_node == 2 and spec.max_nodes == 1
    assert spec.network.nics_per_node == 0 and spec.network.topology == "single-node"
    assert spec.peak_flops_per_s("fp32") > spec.peak_flops_per_s("bf16")  # bf16 ~20x slower (measured by the team)


# --- bad specs: one-line PlannerInputError naming the file and the key ---------------------------------------


def _base() -> dict:
    return yaml.safe_load((default_cluster_dir() / "dgx-a100-80gb.yaml").read_text(encoding="utf-8"))


def _set(data: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data[part]
    data[leaf] = value


def _drop(data: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data[part]
    del data[leaf]


BAD_SPECS = [
    ("unknown key", lambda d: _set(d, "node.nvlink_generation", 3), "node.nvlink_generation"),
    ("unknown top-level key", lambda d: _set(d, "gpus", 8), "gpus"),
    ("missing key", lambda d: _drop(d, "accelerator.hbm"), "accelerator.hbm"),
    ("missing section", lambda d: _drop(d, "reliability"), "reliability"),
    ("unparseable unit", lambda d: _set(d, "accelerator.hbm", "80 GiBs"), "accelerator.hbm"),
    ("bits where FLOPs expected", lambda d: _set(d, "accelerator.peak_flops.bf16", "312Tb/s"), "accelerator.peak_flops.bf16"),
    ("negative size", lambda d: _set(d, "accelerator.hbm", "-80GiB"), "accelerator.hbm"),
    ("zero size", lambda d: _set(d, "node.host_memory", "0GB"), "node.host_memory"),
    ("zero bandwidth", lambda d: _set(d, "node.scale_up.bandwidth_per_direction", "0GB/s"), "node.scale_up.bandwidth_per_direction"),
    ("negative bandwidth", lambda d: _set(d, "network.nic_bandwidth", "-200Gb/s"), "network.nic_bandwidth"),
    ("zero accelerators", lambda d: _set(d, "node.accelerators_per_node", 0), "node.accelerators_per_node"),
    # Regressions (issue 7 fuzzing): 10^7 accelerators per node built a 10^7-vertex topology graph
    # (MemoryError); a spec name with '/' steered `planner calibrate`'s output path.
    ("absurd accelerators", lambda d: _set(d, "node.accelerators_per_node", 10**7), "node.accelerators_per_node"),
    ("absurd NICs", lambda d: _set(d, "network.nics_per_node", 10**7), "network.nics_per_node"),
    ("absurd node count", lambda d: _set(d, "max_nodes", 10**12), "max_nodes"),
    ("path as name", lambda d: _set(d, "name", "../../elsewhere/x"), "name"),
    ("compute capability as text", lambda d: _set(d, "accelerator.compute_capability", "sm80"),
     "accelerator.compute_capability"),
    # A bare number in a key that names no unit had been the base unit: `hbm: 80` was 80 bytes, `latency: 3`
    # three seconds (the spec's own latencies are microseconds).
    ("bare HBM", lambda d: _set(d, "accelerator.hbm", 80), "accelerator.hbm"),
    ("bare quoted HBM", lambda d: _set(d, "accelerator.hbm", "80"), "accelerator.hbm"),
    ("bare latency", lambda d: _set(d, "network.latency", 3), "network.latency"),
    ("bare MTBF", lambda d: _set(d, "reliability.mtbf_per_gpu", 50000), "reliability.mtbf_per_gpu"),
]


@pytest.mark.parametrize("label, mutate, key", BAD_SPECS, ids=[case[0] for case in BAD_SPECS])
def test_bad_spec_raises_one_line_error_naming_file_and_key(tmp_path, label, mutate, key):
    data = copy.deepcopy(_base())
    mutate(data)
    path = tmp_path / "bad-cluster.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(PlannerInputError) as caught:
        load_cluster_file(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert f"'{key}'" in message


def test_a_bare_number_says_which_unit_it_would_have_been(tmp_path):
    data = copy.deepcopy(_base())
    _set(data, "accelerator.hbm", 80)
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(PlannerInputError, match=r"with explicit units, got 80 \(a bare number would be 80 bytes\)"):
        load_cluster_file(path)
    _set(data, "accelerator.hbm", "80GiB")
    _set(data, "reliability.restart_time", 0)  # zero needs no unit
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_cluster_file(path).reliability.restart_s == 0


def test_unmodified_base_spec_loads_from_tmp(tmp_path):
    # Guards the bad-spec tests: they fail because of the one mutation, not because of the copy.
    path = tmp_path / "good-cluster.yaml"
    path.write_text(yaml.safe_dump(_base()), encoding="utf-8")
    assert load_cluster_file(path).gpus_per_node == 8


def test_invalid_yaml_names_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\naccelerator: [unclosed\n", encoding="utf-8")
    with pytest.raises(PlannerInputError, match="broken.yaml"):
        load_cluster_file(path)


@pytest.mark.parametrize("change", [{"topology": "single-node"}, {"nics_per_node": 0}])
def test_a_cluster_without_a_network_must_be_one_node(tmp_path, change):
    """Regression (issue 7 fuzzing): with no way between nodes but max_nodes 4096, a layout spanning two
    nodes crashed simulate with networkx's NetworkXNoPath; the spec itself is now refused."""
    data = copy.deepcopy(_base())
    data["network"].update(change)
    path = tmp_path / "lonely.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(PlannerInputError, match=r"lonely\.yaml: .*set max_nodes: 1 \(got 4096\)"):
        load_cluster_file(path)
    data["max_nodes"] = 1
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_cluster_file(path).max_nodes == 1


@pytest.mark.parametrize("name", ["x" * 5000, "a\x00b", " "])
def test_cluster_names_no_file_can_have_are_one_line_errors(name):
    """Regression (issue 7 fuzzing): a 5000-character name raised OSError (File name too long)."""
    with pytest.raises(PlannerInputError) as caught:
        load_cluster(name)
    assert "\n" not in str(caught.value)


def test_every_gpu_spec_states_its_board_power():
    """The review's energy line needs accelerator.power; every bundled GPU cluster cites one (CPU specs need not)."""
    from planner.specs.clusters import available_clusters, load_cluster

    for name in available_clusters():
        cluster = load_cluster(name)
        if not name.startswith("cpu-"):
            assert cluster.accelerator.power_w and 100 <= cluster.accelerator.power_w <= 2000, name


def test_nvls_needs_a_hopper_or_later_gpu(tmp_path):
    """NCCL searches NVLS graphs only from compute capability 9.0 (src/graph/search.cc:1124): an A100 spec (8.0)
    claiming NVLink SHARP is refused in one line naming both keys; without a stated capability it is taken as given."""
    data = copy.deepcopy(_base())
    data["node"]["scale_up"]["nvls"] = True
    path = tmp_path / "sharp-a100.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(PlannerInputError, match=r"sharp-a100\.yaml: .*nvls: true needs "
                                                r"accelerator\.compute_capability 9\.0 or more.*got 8\.0") as caught:
        load_cluster_file(path)
    assert "\n" not in str(caught.value)
    del data["accelerator"]["compute_capability"]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_cluster_file(path).node.scale_up.nvls


def test_every_nvidia_spec_states_its_compute_capability():
    """NCCL's tuner constants are picked by it (planner.cost.collectives.architecture): each bundled NVIDIA
    cluster states the generation NVIDIA's CUDA GPUs table gives its GPU."""
    from planner.cost.collectives import architecture
    from planner.specs.clusters import load_cluster

    expected = {"dgx2-v100": "volta", "dgx-a100-40gb": "ampere", "dgx-a100-80gb": "ampere",
                "jean-zay-a100": "ampere", "dgx-h100": "hopper", "dgx-h200": "hopper", "h800-deepseek": "hopper",
                "dgx-b200": "blackwell"}
    for name, generation in expected.items():
        assert architecture(load_cluster(name).accelerator.compute_capability).name == generation, name


@pytest.mark.parametrize("key, text", [("accelerators_per_node: 8", "accelerators_per_node: true"),
                                       ("price_per_accelerator_hour: 3.0", "price_per_accelerator_hour: on")])
def test_a_yaml_boolean_is_not_a_number(tmp_path, key, text, repo_root):
    """YAML reads true/on/yes as booleans, which pydantic's lax mode took as 1: one GPU a node, $1 an hour, with
    doctor saying ok. The spec's own booleans (nvls) still read as booleans."""
    spec = (repo_root / "cluster_specs" / "dgx-h100.yaml").read_text()
    assert key in spec
    path = tmp_path / "mine.yaml"
    path.write_text(spec.replace(key, text, 1))
    with pytest.raises(PlannerInputError, match=r"expected a number or text, got true \(YAML reads yes, no, on, off"):
        load_cluster(str(path))
