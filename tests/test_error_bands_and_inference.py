"""Step-time error bands from the published runs, and settings a run leaves empty inferred."""

from __future__ import annotations

import json

import pytest

from planner.cost.infer import infer_layout
from planner.calibrate.error_bands import compute_bands, interval, shipped_bands
from planner.specs.clusters import load_cluster
from planner.specs.model import PRESETS
from planner.profile.runs_csv import read_runs
from planner.calibrate.validation import predict_runs


def test_shipped_error_bands_match_a_fresh_validate(shared_dir):
    """planner/calibrate/error_bands.json is what `planner validate RUNS --write-error-bands` gives on the shipped runs:
    a cost-model change that moves the errors must regenerate it."""
    runs, _ = read_runs(shared_dir / "data" / "runs" / "published_runs_dev.csv")
    fresh = compute_bands(predict_runs(runs))
    assert fresh == shipped_bands()
    # A stack gets its own band only with enough published rows (MIN_ROWS): Megatron-Core and llm-foundry do.
    assert set(fresh) >= {"all", "megatron", "llm-foundry"}
    for band in fresh.values():
        assert band["low"] <= 1.0 <= band["high"] or band["rows"] >= 10


def test_interval_scales_the_prediction_by_the_band():
    band = shipped_bands()["llm-foundry"]
    got = interval(10.0, "llm-foundry")
    assert got["low_s"] == pytest.approx(10.0 * band["low"]) and got["high_s"] == pytest.approx(10.0 * band["high"])
    assert interval(10.0, "jax")["group"] == "all"  # too few published jax runs: all rows' band
    assert interval(10.0, "fsdp")["group"] == "all"  # no published FSDP2 row (the llm-foundry rows ran FSDP1)


def test_unknown_micro_batch_and_recompute_are_the_fastest_that_fit():
    """GPT-3 175B on 64 A100-80GB at tp8 pp8 with micro-batch and recompute unstated: the inferred layout
    fits, and no other choice of the two that fits is faster."""
    from planner.cost.estimate import simulate
    from planner.specs.layout import Layout

    model, cluster = PRESETS["gpt3-175b"], load_cluster("dgx-a100-80gb")
    fields = dict(tp=8, pp=8, dp=1, global_batch=64, framework="megatron")
    layout, inferred = infer_layout(model, cluster, fields, ("micro_batch", "recompute"), gpus=64)
    assert set(inferred) == {"micro_batch", "recompute"}
    best = simulate(model, layout, cluster)
    assert best["fits"]
    for micro_batch in (1, 2, 4, 8):
        for recompute in ("none", "selective", "full"):
            other = simulate(model, Layout(**fields, micro_batch=micro_batch, recompute=recompute), cluster)
            if other["fits"]:
                assert other["step_time_s"] >= best["step_time_s"] - 1e-12


def test_validate_infers_instead_of_skipping(tmp_path, cli):
    """A row without micro_batch, recompute or framework is simulated and says what was inferred."""
    csv = tmp_path / "runs.csv"
    csv.write_text("id,cluster,gpus,layers,hidden,heads,seq_len,vocab,tp,pp,global_batch,step_time_s\n"
                   "a,dgx-a100-80gb,64,96,12288,96,2048,51200,8,8,64,20.0\n")
    code, out, err = cli(["validate", str(csv), "--json"])
    assert code == 0, err
    row = json.loads(out)["rows"][0]
    assert "skipped" not in row
    assert set(row["inferred"]) >= {"micro_batch", "recompute", "framework"}


def test_a_plan_carries_the_step_time_band_into_tokens_or_days(cli):
    """At a fixed budget a slower step trains fewer tokens; at a target loss it takes longer."""
    code, out, err = cli(["optimize", "--budget", "2000gpuh", "--gpus", "64", "--json"])
    assert code == 0, err
    plan = json.loads(out)["plan"]
    band = plan["step_time_band"]
    assert band["low_s"] <= plan["step_time_s"] <= band["high_s"]
    low, high = plan["tokens_band"]
    assert low <= plan["tokens"] <= high
    code, out, err = cli(["optimize", "--target-loss", "2.3", "--gpus", "64", "--json"])
    assert code == 0, err
    plan = json.loads(out)["plan"]
    low, high = plan["wall_clock_days_band"]
    assert low <= plan["wall_clock_days"] <= high


def test_simulate_infer_fills_what_the_user_left_out(cli):
    code, out, err = cli(["simulate", "--model", "gpt3-175b", "--cluster", "dgx-a100-80gb", "--gpus", "64", "--tp", "8",
                          "--pp", "8", "--global-batch", "64", "--framework", "megatron", "--recompute", "full",
                          "--infer", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert set(result["inferred"]) == {"micro_batch", "vpp", "seq_parallel", "flash_attention"}  # not recompute
    assert result["layout"]["recompute"] == "full" and result["fits"]
    code, out, _ = cli(["simulate", "--model", "gpt2-xl", "--gpus", "8", "--json"])
    assert json.loads(out)["inferred"] == {}  # without --infer the stated defaults apply


def test_infer_tries_interleaving_down_to_a_layer_per_virtual_stage(cli):
    """It tried vpp 1-8 only, while simulate accepts any vpp with pp x vpp <= layers: llama2-70b (80 layers) on tp8
    pp4 runs faster at vpp 20 (20 model chunks of one layer on each rank) than at vpp 8."""
    argv = ["simulate", "--model", "llama2-70b", "--gpus", "64", "--tp", "8", "--pp", "4", "--framework", "megatron",
            "--global-batch", "64", "--json"]
    code, out, err = cli([*argv, "--infer"])
    assert code == 0, err
    inferred = json.loads(out)
    assert inferred["layout"]["vpp"] > 8
    for vpp in (1, 2, 4, 5, 8, 10, 20):
        code, out, _ = cli([*argv, "--vpp", str(vpp), "--micro-batch", str(inferred["layout"]["micro_batch"]),
                            "--seq-parallel", "1"])
        assert json.loads(out)["step_time_s"] >= inferred["step_time_s"] * (1 - 1e-9)


def test_infer_interleaves_as_the_search_and_prices_the_largest_chunk(cli):
    """It tried every vpp up to layers // pp, also those that deal a rank's layers unevenly over its chunks, whose
    bubble the step priced at (p - 1)/v, too low (DeepSeek-V3's 61 layers on pp 8: 8 layers a rank at vpp 7 are
    chunks of 2 and 1, and the bubble follows the 2-layer chunks), so it inferred vpp 7. It now tries the search's
    (pipeline_stages.interleavings: the fewest chunks of each largest-chunk size), and the step prices the bubble
    by the largest chunk (chunk_share)."""
    argv = ["simulate", "--model", "deepseek-v3", "--gpus", "2048", "--tp", "2", "--pp", "8", "--ep", "64",
            "--etp", "1", "--framework", "megatron", "--dtype", "fp8", "--global-batch", "4096", "--zero", "1",
            "--moe-a2a-overlap", "megatron", "--json", "--infer"]
    code, out, err = cli(argv)
    assert code == 0, err
    assert json.loads(out)["layout"]["vpp"] in (2, 4)


def test_simulate_infer_says_when_nothing_fits(cli):
    """Helper-found: when no inferred choice fits, the text listed 'inferred_fits=False' among the settings and
    still called them 'the fastest that fits'."""
    argv = ["simulate", "--model", "llama3-70b", "--gpus", "64", "--tp", "8", "--global-batch", "256", "--infer"]
    code, out, _ = cli(argv)
    line = next(line for line in out.splitlines() if line.startswith("inferred "))
    assert code == 1 and json.loads(cli([*argv, "--json"])[1])["inferred"]["inferred_fits"] is False
    assert "none fits" in line and "fastest that fits" not in line and "inferred_fits" not in line


def test_simulate_infer_does_not_call_the_neutral_stack_the_fastest(cli):
    """Helper-found: --infer printed 'framework=other (the fastest that fits)' where megatron fits and is 9% faster.
    A framework not given is the neutral stack (cost/infer.py offers only it: the stack is the run's, not a setting);
    the line now says so, apart from the settings that were chosen for speed."""
    code, out, _ = cli(["simulate", "--model", "llama3-8b", "--tp", "1", "--dp", "8", "--global-batch", "64", "--zero",
                        "3", "--infer"])
    line = next(line for line in out.splitlines() if line.startswith("inferred "))
    assert code == 0
    assert line.endswith("(the fastest that fits); framework=other (none given: the neutral stack)"), line


def test_shipped_error_bands_name_the_clusters_of_the_published_runs(published_runs_csv):
    runs, _ = read_runs(published_runs_csv)
    from planner.calibrate.error_bands import shipped_clusters

    assert shipped_clusters() == sorted({run.cluster for run in runs if run.step_time_s})


def test_a_cluster_without_published_runs_says_its_band_comes_from_other_hardware(cli):
    """cpu-local has neither published runs nor a calibration: the band is the published one, and said to be
    from other hardware (it read as if measured on the cluster)."""
    from planner.calibrate.error_bands import band_origin

    own = interval(10.0, "megatron", load_cluster("dgx-a100-80gb"))
    other = interval(10.0, "megatron", load_cluster("cpu-local"))
    assert own["basis"] == "published" and other["basis"] == "other-hardware"
    assert (other["low_s"], other["high_s"]) == (own["low_s"], own["high_s"])
    assert "on other hardware (dgx-a100-40gb, dgx-a100-80gb, dgx-h100, jean-zay-a100)" in band_origin(other)
    code, out, err = cli(["simulate", "--model", "gpt2-small", "--cluster", "cpu-local", "--gpus", "2"])
    assert "published runs on other hardware (dgx-a100-40gb" in out
    code, out, err = cli(["simulate", "--model", "gpt2-small", "--cluster", "cpu-local", "--gpus", "2", "--json"])
    band = json.loads(out)["step_time_band"]
    assert band["basis"] == "other-hardware" and "dgx-h100" in band["clusters"]


def test_the_published_band_follows_the_hardware_not_the_specs_name(cli, tmp_path):
    """A copy of dgx-h100.yaml saved as my.yaml keeps `name: dgx-h100`: with its bf16 peak edited it claimed the
    published runs' band (the band was chosen by the name). The band now follows the hardware blocks: an edited
    copy is other hardware and says it is named as a bundled spec it differs from; a renamed unchanged copy is
    the published hardware; every shipped cluster of the published runs keeps its band."""
    import yaml

    from planner.calibrate.error_bands import band_origin, shipped_clusters
    from planner.specs.clusters import default_cluster_dir

    for name in shipped_clusters():
        assert interval(1.0, "megatron", load_cluster(name))["basis"] == "published", name
    data = yaml.safe_load((default_cluster_dir() / "dgx-h100.yaml").read_text(encoding="utf-8"))
    edited = {**data, "accelerator": {**data["accelerator"], "peak_flops": {**data["accelerator"]["peak_flops"],
                                                                             "bf16": "500TFLOPs"}}}
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(edited), encoding="utf-8")
    (tmp_path / "same.yaml").write_text(yaml.safe_dump({**data, "name": "same"}), encoding="utf-8")
    other = interval(1.0, "megatron", load_cluster(str(tmp_path / "my.yaml")))
    assert other["basis"] == "other-hardware" and other["differs_from"] == "dgx-h100"
    assert "named dgx-h100 but its accelerator/node/network differ" in band_origin(other)
    assert interval(1.0, "megatron", load_cluster(str(tmp_path / "same.yaml")))["basis"] == "published"
    code, out, _ = cli(["simulate", "--model", "gpt2-small", "--gpus", "8", "--cluster", tmp_path / "my.yaml", "--json"])
    assert code == 0 and json.loads(out)["step_time_band"]["basis"] == "other-hardware"
