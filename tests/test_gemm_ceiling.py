"""Per-accelerator large-GEMM ceiling from the "Maximum Achievable Matmul FLOPS" (MAMF) table (docs/gemm_ceiling.md).

The golden figures are typed from the table (stas00/ml-engineering compute/accelerator/README.md at 744d01e,
"Maximum Achievable Matmul FLOPS comparison table"; MI250X from the older version at 15791b3; V100, which the
table has never had, from DeepBench's NVIDIA-run V100 sheet, baidu-research/DeepBench@30c5115), not read from
the YAML files: each spec's matmul_peak_fraction must equal MAMF / peak x the sustained-clock factor 0.9, and
its fp8 ceiling the table's fp8 efficiency over its bf16 one, to the 3 decimals the specs are written with.
"""

from __future__ import annotations

import numpy as np
import pytest

from planner.calibrate.calibrated_spec import calibrated_spec_mapping
from planner.cost.step_time import step_time
from planner.errors import PlannerInputError
from planner.specs.clusters import load_cluster
from planner.specs.hardware import SUSTAINED_CLOCK_FACTOR, Efficiency, load_yaml_file, parse_cluster_spec
from planner.specs.candidate_batch import single_batch
from planner.specs.layout import Layout
from planner.specs.model import PRESETS

ROUNDING = 5e-4  # the specs carry 3 decimals

# Table rows: (MAMF TFLOP/s, datasheet TFLOP/s) for bf16, and for fp8 where the table has one.
A100_SXM = (271.2, 312.0)
H100_SXM = (794.5, 989.0)  # "H200 is the same"
B200_SXM = (1745.0, 2250.0)
MI250X_GCD = (147.0, 191.5)  # ROCm-6.2 / 1 GCD, older v1 table
# DeepBench results/train/DeepBench_NV_V100.xlsx@30c5115, sheet "Results - FP16 ip, Mixed math" row 24 (DGX-1 V100
# SXM2): 2 x 4096 x 7000 x 4096 FLOP in 2.092 ms, the best of its 160 shapes; fp16 tensor peak 125 (V100 datasheet).
V100_DEEPBENCH = (2 * 4096 * 7000 * 4096 / 2.092e-3 / 1e12, 125.0)
H100_FP8 = (1402.6, 1979.0)
H200_FP8 = (1453.4, 1979.0)
B200_FP8 = (3432.5, 4500.0)

BF16_ROWS = {
    "dgx-a100-40gb": A100_SXM, "dgx-a100-80gb": A100_SXM, "jean-zay-a100": A100_SXM,
    "dgx-h100": H100_SXM, "h800-deepseek": H100_SXM,  # H800: H100 silicon, no row of its own
    "dgx-h200": H100_SXM, "dgx-b200": B200_SXM, "frontier-mi250x": MI250X_GCD,
    "dgx2-v100": V100_DEEPBENCH,  # fp16: Volta has no bf16
}
FP8_ROWS = {"dgx-h100": H100_FP8, "h800-deepseek": H100_FP8, "dgx-h200": H200_FP8, "dgx-b200": B200_FP8}


def _efficiency(row):
    measured, peak = row
    return measured / peak


def test_the_sustained_clock_factor_is_the_one_documented():
    assert SUSTAINED_CLOCK_FACTOR == 0.9


@pytest.mark.parametrize("name", sorted(BF16_ROWS))
def test_each_spec_ceiling_is_the_table_efficiency_times_the_clock_factor(name):
    spec = load_cluster(name)
    expected = _efficiency(BF16_ROWS[name]) * SUSTAINED_CLOCK_FACTOR
    assert spec.efficiency.matmul_peak_fraction == pytest.approx(expected, abs=ROUNDING)


@pytest.mark.parametrize("name", sorted(BF16_ROWS))
def test_each_spec_fp8_ceiling_is_the_table_fp8_efficiency(name):
    spec = load_cluster(name)
    e = spec.efficiency
    if name not in FP8_ROWS:  # A100, MI250X, V100: no fp8 tensor cores, no fp8 peak, relative left at 1
        assert spec.accelerator.peak_flops.fp8 is None and e.fp8_matmul_relative_efficiency == 1.0
        return
    assert e.fp8_matmul_relative_efficiency == pytest.approx(
        _efficiency(FP8_ROWS[name]) / _efficiency(BF16_ROWS[name]), abs=ROUNDING)
    # The fp8 ceiling as a fraction of the fp8 peak: the table's fp8 efficiency x the same clock factor.
    assert e.matmul_peak_fraction * e.fp8_matmul_relative_efficiency == pytest.approx(
        _efficiency(FP8_ROWS[name]) * SUSTAINED_CLOCK_FACTOR, abs=2 * ROUNDING)


def test_v100_ceiling_is_the_deepbench_row_and_only_the_link_efficiencies_also_leave_the_defaults():
    # The sheet's own TFLOPS cell for the row, and 0.898 x 0.9 = 0.808 as the spec writes it.
    assert V100_DEEPBENCH[0] == pytest.approx(112.2758, abs=1e-3)
    v100 = load_cluster("dgx2-v100").efficiency
    assert v100.matmul_peak_fraction == 0.808
    # ... and the EDR NICs at the NCCL maintainers' 12 of 12.5 GB/s, the NVSwitch at a DGX-2's measured all-reduce
    # busbw (docs/link_efficiency.md, tests/cost/test_collectives.py).
    assert v100 == Efficiency(matmul_peak_fraction=0.808, scale_up_bandwidth_efficiency=0.824,
                              scale_out_bandwidth_efficiency=0.96)
    assert Efficiency().matmul_peak_fraction == 0.72  # the default, the H100 derivation, REFERENCE.md: 798/989 x 0.9
    assert Efficiency().fp8_matmul_relative_efficiency == 1.0


def test_h100_table_derivation_agrees_with_the_reference_measurement():
    # REFERENCE.md: 8192^3 bf16 matmul ~= 798 TFLOP/s on H100 -> 0.81 x 0.9 = 0.72; MAMF gives 0.723.
    assert _efficiency(H100_SXM) * SUSTAINED_CLOCK_FACTOR == pytest.approx(798 / 989 * 0.9, abs=0.005)


def _layer_forward(cluster, dtype):
    model = PRESETS["gpt3-175b"]
    layout = Layout(tp=8, pp=8, dp=1, micro_batch=4, global_batch=64, dtype=dtype)
    return float(np.asarray(step_time(single_batch(model, layout), cluster)["parts"]["forward"])[0])


def test_fp8_gemms_take_the_fp8_ceiling_and_bf16_gemms_do_not():
    h100 = load_cluster("dgx-h100")
    relative = h100.efficiency.fp8_matmul_relative_efficiency
    assert relative < 1.0
    forward = {r: _layer_forward(h100.with_efficiency(fp8_matmul_relative_efficiency=r), "fp8")
               for r in (1.0, 0.5, relative)}
    # Only GEMM seconds G depend on the relative value, as G / r: forward(r) = G / r + rest.
    gemm = forward[0.5] - forward[1.0]
    assert gemm > 0
    assert forward[relative] - forward[1.0] == pytest.approx(gemm * (1.0 / relative - 1.0), rel=1e-9)
    # bf16 training is untouched by the fp8 value.
    assert _layer_forward(h100, "bf16") == _layer_forward(h100.with_efficiency(fp8_matmul_relative_efficiency=1.0), "bf16")


def test_a_calibrated_ceiling_overrides_the_table_and_still_carries_fp8():
    h100 = load_cluster("dgx-h100")
    fitted = h100.with_efficiency(matmul_peak_fraction=0.5)
    raw = load_yaml_file(h100.source_file, "cluster spec (.yaml)")
    report = {"cluster": fitted, "heldout": {"after": {"mape": 0.1}}, "fitted_parameters": {"matmul_peak_fraction": 0.5},
              "heldout_kind": "test", "held_out_band": {"rows": 3, "low": 0.9, "high": 1.1},
              "fitted_frameworks": ["megatron"], "fitted_dtypes": ["bf16"],
              "defaults": {"matmul_peak_fraction": h100.efficiency.matmul_peak_fraction}}
    calibrated = parse_cluster_spec(calibrated_spec_mapping(raw, report, ["runs.csv"], 3), "calibrated.yaml")
    assert calibrated.efficiency.matmul_peak_fraction == 0.5
    assert calibrated.efficiency.fp8_matmul_relative_efficiency == h100.efficiency.fp8_matmul_relative_efficiency
    # The calibrated fraction moves fp8 GEMMs too (the relative value multiplies it).
    assert _layer_forward(calibrated, "fp8") > _layer_forward(h100, "fp8")


@pytest.mark.parametrize("value", [0.0, -0.1, 1.01, "fast"])
def test_a_bad_fp8_relative_efficiency_is_a_one_line_error_naming_the_key(value):
    raw = load_yaml_file(load_cluster("dgx-h100").source_file, "cluster spec (.yaml)")
    raw["efficiency"] = dict(raw["efficiency"], fp8_matmul_relative_efficiency=value)
    with pytest.raises(PlannerInputError, match="fp8_matmul_relative_efficiency") as info:
        parse_cluster_spec(raw, "bad.yaml")
    assert "\n" not in str(info.value)


def _forward_with_vocab(cluster, dtype, vocab):
    model = PRESETS["llama3-8b"].model_copy(update={"vocab": vocab})
    layout = Layout(tp=1, pp=1, dp=8, micro_batch=1, global_batch=8, dtype=dtype)
    return float(np.asarray(step_time(single_batch(model, layout), cluster)["parts"]["forward"])[0])


def test_the_output_layer_stays_bf16_in_fp8_training():
    # Megatron, Megatron-DeepSpeed, torchtitan as emitted, llm-foundry, MaxText and DeepSeek-V3 keep the vocabulary
    # projection out of fp8 (gemm.output_layer_rates): the forward seconds a larger vocabulary adds are the
    # bf16 GEMM's in fp8 training too, not half of them at the fp8 peak.
    h100 = load_cluster("dgx-h100")
    added = {dtype: _forward_with_vocab(h100, dtype, 256 * 1024) - _forward_with_vocab(h100, dtype, 128 * 1024)
             for dtype in ("bf16", "fp8")}
    assert added["bf16"] > 0
    assert added["fp8"] == pytest.approx(added["bf16"], rel=1e-9)
