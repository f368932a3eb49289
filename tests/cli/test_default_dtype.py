"""--dtype's default follows the cluster (specs.hardware.DEFAULT_TRAINING_DTYPES): bf16 where the accelerator has
it, fp16 on V100s, fp32 on a CPU. It was bf16 everywhere, so `planner simulate/optimize --cluster dgx2-v100` without
--dtype was refused ("dtype 'bf16' is not supported by cluster 'dgx2-v100'") for a flag the user never gave."""

from __future__ import annotations

import json

import pytest

from planner.specs.clusters import load_cluster


@pytest.mark.parametrize("cluster, expected", [("dgx-h100", "bf16"), ("dgx-a100-80gb", "bf16"),
                                               ("frontier-mi250x", "bf16"), ("dgx2-v100", "fp16"),
                                               ("cpu-local", "fp32")])
def test_the_default_is_the_first_format_the_accelerator_has(cluster, expected):
    spec = load_cluster(cluster)
    assert spec.default_training_dtype == expected
    assert spec.peak_flops_per_s(expected) > 0  # never a format the spec would refuse


def test_a_spec_names_its_own_default_and_it_must_have_a_peak(cli, tmp_path):
    """cpu-local lists an effective bf16 rate 20x below fp32 (cluster_specs/cpu-local.yaml); it trains in fp32. A
    default_dtype the spec lists no peak for is one line of bad input naming the file and the key."""
    from pathlib import Path

    import planner

    cpu = load_cluster("cpu-local").accelerator
    assert cpu.peak_flops.bf16 is not None and cpu.default_dtype == "fp32"
    bundled = Path(planner.__file__).resolve().parent.parent / "cluster_specs" / "cpu-local.yaml"
    bad = tmp_path / "mine.yaml"
    bad.write_text(bundled.read_text(encoding="utf-8").replace("default_dtype: fp32", "default_dtype: fp16"),
                   encoding="utf-8")
    code, _, err = cli(["simulate", "--model", "gpt2-small", "--cluster", str(bad), "--gpus", "2"])
    assert code == 2 and err.count("\n") == 1
    assert "mine.yaml" in err and "default_dtype fp16 has no peak_flops entry (listed: bf16, fp32)" in err


def test_an_fp8_only_spec_defaults_to_bf16_and_the_refusal_names_what_it_has():
    spec = load_cluster("dgx-h100")
    peaks = spec.accelerator.peak_flops.model_copy(update={"bf16": None, "fp16": None, "fp32": None})
    fp8_only = spec.model_copy(update={"accelerator": spec.accelerator.model_copy(update={"peak_flops": peaks})})
    assert fp8_only.default_training_dtype == "bf16"
    with pytest.raises(Exception, match=r"dtype 'bf16' is not supported .*supported: fp8"):
        fp8_only.peak_flops_per_s(fp8_only.default_training_dtype)


def test_simulate_on_v100s_without_dtype_trains_in_fp16(cli):
    code, out, err = cli(["simulate", "--model", "gpt2-xl", "--cluster", "dgx2-v100", "--gpus", "16", "--zero", "1",
                          "--json"])
    assert code == 0, err
    assert json.loads(out)["layout"]["dtype"] == "fp16"
    code, out, _ = cli(["simulate", "--model", "gpt2-xl", "--cluster", "dgx-h100", "--gpus", "8", "--json"])
    assert code == 0 and json.loads(out)["layout"]["dtype"] == "bf16"


def test_a_given_dtype_still_wins_and_is_still_checked(cli):
    code, out, _ = cli(["simulate", "--model", "gpt2-xl", "--cluster", "dgx-h100", "--gpus", "8", "--dtype", "fp16",
                        "--json"])
    assert code == 0 and json.loads(out)["layout"]["dtype"] == "fp16"
    code, _, err = cli(["simulate", "--model", "gpt2-xl", "--cluster", "dgx2-v100", "--gpus", "16", "--zero", "1",
                        "--dtype", "bf16"])
    assert code == 2 and "dtype 'bf16' is not supported by cluster 'dgx2-v100'" in err and err.count("\n") == 1


def test_optimize_on_v100s_without_dtype_plans_in_fp16(cli):
    code, out, err = cli(["optimize", "--budget", "1000gpuh", "--cluster", "dgx2-v100", "--json"])
    assert code == 0, err
    assert json.loads(out)["plan"]["layout"]["dtype"] == "fp16"
    code, out, err = cli(["optimize", "--model", "gpt2-xl", "--gpus", "16", "--cluster", "dgx2-v100", "--json"])
    assert code == 0, err
    assert "fp16" in out and "bf16" not in out


def test_the_python_api_takes_the_same_default():
    import planner

    v100 = load_cluster("dgx2-v100")

    def peak(result):  # MFU is achieved FLOP/s over the peak of the layout's dtype
        return result["tflops_per_gpu"] * 1e12 / result["mfu"]

    default = planner.simulate("gpt2-xl", cluster="dgx2-v100", gpus=16, zero=1)  # bf16 would be refused here
    assert peak(default) == pytest.approx(v100.peak_flops_per_s("fp16"))
    given = planner.simulate("gpt2-xl", cluster="dgx2-v100", gpus=16, zero=1, dtype="fp32")
    assert peak(given) == pytest.approx(v100.peak_flops_per_s("fp32"))
    result = planner.plan(1000, cluster="dgx2-v100")
    assert result.status == "ok" and result.plan["layout"]["dtype"] == "fp16"
    searched = planner.search_layouts("gpt2-xl", "dgx2-v100", 16, global_batch=64)
    assert searched.dtype == "fp16" and searched.best is not None
    fixed = planner.plan_fixed_model("gpt2-xl", "dgx2-v100", [16], global_batch=64)
    assert fixed.chosen is not None and fixed.chosen.search.dtype == "fp16"


def test_clusters_lists_each_clusters_default(cli):
    code, out, _ = cli(["clusters"])
    assert code == 0 and "trains in" in out.splitlines()[0]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip() and " " in line}
    assert "fp16" in rows["dgx2-v100"] and "bf16" in rows["dgx-h100"] and "fp32" in rows["cpu-local"]
    code, out, _ = cli(["clusters", "--json"])
    listed = json.loads(out)["clusters"]
    assert {name: listed[name]["default_training_dtype"] for name in ("dgx2-v100", "dgx-h100", "cpu-local")} == \
        {"dgx2-v100": "fp16", "dgx-h100": "bf16", "cpu-local": "fp32"}
