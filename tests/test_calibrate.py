"""Calibration: recovers efficiencies the rows were generated with, leaves unidentifiable ones alone,
reports held-out error honestly, and writes a spec that loads wherever a cluster name does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from planner.calibrate.calibration import calibrate
from planner.calibrate.fitting import fit
from planner.calibrate.samples import load_samples, predict
from planner.calibrate.selection import folds, identifiable
from planner.cli import main
from planner.specs.clusters import load_cluster
from planner.profile.runs_csv import MeasuredRun, write_runs

pytestmark = pytest.mark.xdist_group("test_calibrate")  # its module fixtures built once (pyproject.toml)


SHAPES = [  # (layers, hidden, heads, seq, vocab, tp, pp, dp, zero, micro, global, recompute)
    (24, 2048, 16, 2048, 50304, 1, 1, 8, 0, 4, 64, "none"),
    (24, 2048, 16, 2048, 50304, 2, 1, 4, 1, 2, 64, "selective"),
    (32, 4096, 32, 2048, 50304, 8, 1, 1, 0, 1, 16, "full"),
    (40, 5120, 40, 2048, 50304, 8, 2, 2, 1, 1, 64, "full"),
    (32, 4096, 32, 4096, 32000, 1, 1, 8, 3, 1, 32, "full"),
    (12, 768, 12, 1024, 50304, 1, 1, 8, 2, 16, 256, "none"),
    (48, 6144, 48, 2048, 50304, 8, 4, 1, 0, 1, 32, "full"),
    (16, 1024, 16, 2048, 50304, 1, 1, 4, 0, 8, 64, "none"),
]


# Two more, for a calibration whose held-out band simulate uses: it needs error_bands.MIN_ROWS (10) held-out rows.
MORE_SHAPES = [
    (24, 2048, 16, 2048, 50304, 1, 1, 8, 1, 2, 64, "full"),
    (32, 4096, 32, 2048, 50304, 4, 1, 2, 1, 1, 32, "selective"),
]


def rows(truth_cluster, source: str = "synthetic", shapes=SHAPES) -> list[MeasuredRun]:
    """Rows whose step times are what the model predicts under `truth_cluster`'s efficiencies."""
    runs = []
    for i, (L, h, a, s, V, tp, pp, dp, zero, mb, gb, rc) in enumerate(shapes):
        runs.append(MeasuredRun(
            id=f"r{i}", source=source, cluster="dgx-a100-80gb", gpus=tp * pp * dp, layers=L, hidden=h, heads=a,
            kv_heads=a, ffn=4 * h, mlp="gelu", seq_len=s, vocab=V, tp=tp, pp=pp, dp=dp, cp=1, vpp=1, zero=zero,
            micro_batch=mb, global_batch=gb, recompute=rc, seq_parallel=int(tp > 1), dtype="bf16", step_time_s=1.0))
    samples, skipped = load_samples(runs, truth_cluster)
    assert not skipped
    truth = predict(samples, truth_cluster)
    return [dataclasses.replace(r, step_time_s=float(t)) for r, t in zip(runs, truth)]


def test_fit_recovers_the_matmul_ceiling_the_rows_were_made_with():
    base = load_cluster("dgx-a100-80gb")
    truth = base.with_efficiency(matmul_peak_fraction=0.55)
    samples, _ = load_samples(rows(truth), base)
    fitted = fit(samples, base, ["matmul_peak_fraction"], prior_weight=1e-4)
    assert fitted.efficiency.matmul_peak_fraction == pytest.approx(0.55, rel=0.02)
    errors = predict(samples, fitted) / np.array([s.run.step_time_s for s in samples]) - 1
    assert np.max(np.abs(errors)) < 0.01


def test_a_parameter_the_rows_do_not_touch_is_left_at_its_default():
    base = load_cluster("dgx-a100-80gb")
    single_node = [r for r in rows(base) if r.gpus <= base.gpus_per_node]
    samples, _ = load_samples(single_node, base)
    names, reasons = identifiable(samples, base)
    # No row crosses nodes or offloads: scale-out bandwidth cannot be seen.
    assert "scale_out_bandwidth_efficiency" not in names
    assert "scale_out_bandwidth_efficiency" in reasons


def test_calibration_improves_rows_generated_by_a_slower_cluster_and_reports_held_out_error():
    base = load_cluster("dgx-a100-80gb")
    truth = base.with_efficiency(matmul_peak_fraction=0.5, hbm_efficiency=0.5)
    samples, _ = load_samples(rows(truth), base)
    report = calibrate(samples, base, k=4)
    assert report["train"]["after"]["mape"] < report["train"]["before"]["mape"] / 3
    assert report["heldout"]["after"]["mape"] < report["heldout"]["before"]["mape"] / 2
    assert report["heldout_kind"].startswith("4-fold")
    low, high = report["prediction_interval_90"]
    assert low <= high


def test_cross_validation_keeps_the_defaults_when_they_already_predict_the_rows():
    base = load_cluster("dgx-a100-80gb")
    samples, _ = load_samples(rows(base), base)
    report = calibrate(samples, base, k=4)
    assert report["train"]["after"]["mape"] <= report["train"]["before"]["mape"] + 1e-9
    assert report["heldout"]["after"]["mape"] <= report["heldout"]["before"]["mape"] + 0.01


def test_folds_with_too_few_rows_to_calibrate_on_are_said_so_not_called_worse(tmp_path, capsys):
    """With 3 rows (the fewest calibrate takes) each fold's calibration would see 2, fewer than it needs, so every
    held-out row was predicted by the defaults: 'after' equalled 'before' and the fit was 'not applied: calibrating
    predicted held-out rows worse than the defaults (x% vs x%)' under 'selection and fit redone per fold', none true."""
    base = load_cluster("dgx-a100-80gb")
    made = rows(base.with_efficiency(matmul_peak_fraction=0.5, hbm_efficiency=0.5))[:3]
    samples, _ = load_samples(made, base)
    report = calibrate(samples, base, k=5)
    assert report["selection_path"][-1]["parameters"], "the rows should make selection choose a parameter"
    assert "redone per fold" not in report["heldout_kind"] and "predicted by the defaults" in report["heldout_kind"]
    assert report["applied"] is False
    assert not any("worse" in why for why in report["left_at_default"].values()), report["left_at_default"]
    runs_file = tmp_path / "runs.csv"
    write_runs(runs_file, made)
    capsys.readouterr()
    assert main(["calibrate", str(runs_file), "--cluster", "dgx-a100-80gb", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "not applied" in out and "worse" not in out, out


def test_a_fold_left_with_too_few_rows_is_named_in_the_held_out_kind():
    """Four rows of two sources (3 + 1): holding out the 3 leaves 1 row to calibrate on, so that fold's rows are
    predicted by the defaults; the held-out label said every fold's selection and fit were redone."""
    base = load_cluster("dgx-a100-80gb")
    made = rows(base.with_efficiency(matmul_peak_fraction=0.5, hbm_efficiency=0.5))[:4]
    made = [dataclasses.replace(r, source="a" if i < 3 else "b") for i, r in enumerate(made)]
    samples, _ = load_samples(made, base)
    report = calibrate(samples, base, k=5)
    assert report["selection_path"][-1]["parameters"]
    assert "1 of 2 folds" in report["heldout_kind"], report["heldout_kind"]


def test_cli_writes_a_loadable_calibrated_spec_and_refuses_to_overwrite(tmp_path, capsys):
    base = load_cluster("dgx-a100-80gb")
    runs_file = tmp_path / "runs.csv"
    good = rows(base.with_efficiency(matmul_peak_fraction=0.6))
    # A row of this cluster that cannot be simulated (its batch does not divide), and one of another cluster:
    # the first is listed with its reason (it was only counted), the second only counted.
    bad = dataclasses.replace(good[0], id="bad-batch", global_batch=good[0].global_batch + 1)
    other = dataclasses.replace(good[0], id="elsewhere", cluster="dgx-h100")
    write_runs(runs_file, good + [bad, other])
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "dgx-a100-80gb.yaml").write_text(Path(base.source_file).read_text())
    argv = ["calibrate", str(runs_file), "--cluster", "dgx-a100-80gb", "--cluster-dir", str(spec_dir), "--folds", "4"]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "skipped 2 rows" in out
    listed = [line for line in out.splitlines() if line.startswith("skipped    ")]
    assert len(listed) == 1 and "is not divisible" in listed[0]
    written = spec_dir / "dgx-a100-80gb.calibrated.yaml"
    calibrated = load_cluster("dgx-a100-80gb.calibrated", spec_dir)
    assert calibrated.calibration.startswith("calibrated")
    samples, _ = load_samples(rows(base.with_efficiency(matmul_peak_fraction=0.6)), base)
    measured = np.array([s.run.step_time_s for s in samples])
    error = lambda cluster: np.mean(np.abs(predict(samples, cluster) / measured - 1))  # noqa: E731
    assert error(calibrated) < error(base) / 2
    before = written.read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0]
    assert written.read_bytes() == before


def test_too_few_rows_is_a_one_line_error(tmp_path, capsys):
    base = load_cluster("dgx-a100-80gb")
    runs_file = tmp_path / "runs.csv"
    write_runs(runs_file, rows(base)[:2])
    assert main(["calibrate", str(runs_file), "--cluster", "dgx-a100-80gb", "--no-write"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least 3" in err[0]


def test_too_few_rows_says_how_many_rows_were_on_which_other_clusters(tmp_path, capsys):
    """Helper-found: every row on other clusters gave only 'calibration needs at least 3 measured rows on cluster
    'dgx-a100-80gb', got 0': the user could not tell a wrong --cluster from an empty file."""
    base = load_cluster("dgx-a100-80gb")
    others = [dataclasses.replace(run, cluster="dgx-h100") for run in rows(base)[:4]]
    others += [dataclasses.replace(run, cluster="jean-zay-a100") for run in rows(base)[4:6]]
    runs_file = tmp_path / "runs.csv"
    write_runs(runs_file, others)
    assert main(["calibrate", str(runs_file), "--cluster", "dgx-a100-80gb", "--no-write"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "at least 3 measured rows on cluster 'dgx-a100-80gb', got 0" in err[0]
    assert "6 rows are on other clusters: dgx-h100 (4), jean-zay-a100 (2)" in err[0]


def test_a_time_column_no_runs_file_has_is_a_one_line_error_naming_the_flag(tmp_path, capsys):
    """`--time-column step_tme_s` (a typo) skipped every row and said only 'calibration needs at least 3 measured
    rows ..., got 0', naming neither the flag nor the column."""
    base = load_cluster("dgx-a100-80gb")
    runs_file = tmp_path / "runs.csv"
    write_runs(runs_file, rows(base))
    assert main(["calibrate", str(runs_file), "--cluster", "dgx-a100-80gb", "--no-write",
                 "--time-column", "step_tme_s"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--time-column step_tme_s" in err[0] and str(runs_file) in err[0], err


def test_the_folds_of_one_source_do_not_follow_the_files_row_order():
    """The folds of a one-source file (every `planner profile` output) were every k-th row in file order, so the
    same rows in another order fitted other parameters and reported another held-out error. They follow the ids."""
    base = load_cluster("dgx-a100-80gb")
    samples, _ = load_samples(rows(base, shapes=SHAPES + MORE_SHAPES), base)
    shuffled = [samples[i] for i in np.random.default_rng(7).permutation(len(samples))]

    def fold_ids(some):
        return sorted(sorted(some[i].run.id for i in fold) for fold in folds(some, 3))

    assert fold_ids(shuffled) == fold_ids(samples) == fold_ids(samples[::-1])
    assert len(fold_ids(samples)) == 3 and sum(map(len, fold_ids(samples))) == len(samples)


def test_a_time_column_cell_is_read_as_step_time_s_is(tmp_path):
    """--time-column read its cells with float(): '0.1_2' (0.12) and a full-width '１' were taken, which the reader
    refuses in step_time_s; now they are skipped with the reader's reason, as are blank and out-of-range cells."""
    base = load_cluster("dgx-a100-80gb")
    made = rows(base)
    cells = ["0.1_2", "１", "", "1e-9", " 0.25 "]
    runs = [dataclasses.replace(r, extra={"step_time_p10_s": cell}) for r, cell in zip(made, cells)]
    samples, skipped = load_samples(runs, base, "step_time_p10_s")
    assert [s.run.step_time_s for s in samples] == [0.25]
    assert len(skipped) == 4 and "not a plain number: '0.1_2'" in skipped[0] and "no step_time_p10_s value" in skipped[2]
    assert "from 1e-06 to 1e+07" in skipped[3]


def test_holdout_source_names_one_source_exactly_or_a_prefix(tmp_path, capsys):
    import json

    base = load_cluster("dgx-a100-80gb")
    made = rows(base)
    runs = [dataclasses.replace(r, source="paper T3" if i % 2 else "paper T3; README") for i, r in enumerate(made)]
    runs_file = tmp_path / "runs.csv"
    write_runs(runs_file, runs)
    exact = sum(r.source == "paper T3" for r in runs)
    common = ["calibrate", str(runs_file), "--cluster", "dgx-a100-80gb", "--no-write", "--json"]
    assert main(common + ["--holdout-source", "paper T3"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_held_out"] == exact
    assert main(common + ["--holdout-source", "paper T3;"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_held_out"] == len(runs) - exact


def test_fits_far_from_their_defaults_are_flagged_not_refused():
    """A fitted efficiency more than IMPLAUSIBLE_FACTOR from its (datasheet- or benchmark-derived) default is
    reported; overheads (default 0) and the latency multiplier are not judged."""
    from planner.calibrate.calibration import IMPLAUSIBLE_FACTOR, implausible_fits

    defaults = {"hbm_efficiency": 0.7, "matmul_peak_fraction": 0.72, "step_overhead_s": 0.0, "latency_scale": 1.0}
    fitted = {"hbm_efficiency": 0.185, "matmul_peak_fraction": 0.6, "step_overhead_s": 0.5, "latency_scale": 30.0}
    flagged = implausible_fits(fitted, defaults)
    assert set(flagged) == {"hbm_efficiency"} and flagged["hbm_efficiency"] == pytest.approx(0.185 / 0.7)
    edge = {"hbm_efficiency": 0.7 / IMPLAUSIBLE_FACTOR}
    assert implausible_fits(edge, defaults) == {}


def test_a_fit_that_predicts_the_given_hold_out_rows_worse_is_not_applied():
    """--holdout-source: rows made with a slow matmul ceiling are fitted, rows made with the defaults held out.
    The fit predicts the held-out rows worse than the defaults, so (README, "Calibration") it is not applied:
    the guard ran only for the k-fold hold-out, and such a fit was written with exit 0."""
    base = load_cluster("dgx-a100-80gb")
    fitting, _ = load_samples(rows(base.with_efficiency(matmul_peak_fraction=0.35), "slow"), base)
    held, _ = load_samples(rows(base, "defaults"), base)
    report = calibrate(fitting, base, holdout=held)
    assert report["heldout"]["after"]["mape"] > report["heldout"]["before"]["mape"]
    assert report["applied"] is False and report["fitted_parameters"] == {} and report["cluster"] == base


@pytest.fixture(scope="module")
def calibrated_spec(tmp_path_factory) -> tuple[Path, dict]:
    """A spec calibrated on ten synthetic rows with a spread of -6% .. +9% laid on their step times, and the
    report `calibrate --json` printed. Made once per module (the calibration's folds take most of a minute);
    the tests only read it."""
    import contextlib
    import io
    import json

    base = load_cluster("dgx-a100-80gb")
    spread = [0.94, 1.0, 1.09, 0.97, 1.05, 1.02, 0.99, 1.07, 1.03, 0.96]
    runs = [dataclasses.replace(r, step_time_s=r.step_time_s * f)
            for r, f in zip(rows(base.with_efficiency(matmul_peak_fraction=0.6), shapes=SHAPES + MORE_SHAPES), spread)]
    folder = tmp_path_factory.mktemp("calibrated")
    runs_file, out = folder / "runs.csv", folder / "mine.calibrated.yaml"
    write_runs(runs_file, runs)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["calibrate", str(runs_file), "--cluster", "dgx-a100-80gb", "--folds", "4", "--out", str(out),
                     "--json"])
    assert code == 0
    return out, json.loads(printed.getvalue())


def test_the_calibrated_spec_carries_its_held_out_band_and_simulate_uses_it(calibrated_spec, capsys):
    """simulate and optimize printed the published A100/H100 runs' band even on a calibrated cluster, whose own
    held-out interval calibrate had just printed."""
    import json

    spec, report = calibrated_spec
    calibrated = load_cluster(str(spec))
    band = report["held_out_band"]
    assert calibrated.calibrated_on.held_out_rows == band["rows"] == 10
    low, high = calibrated.calibrated_on.held_out_step_time_ratio_90
    assert (low, high) == (pytest.approx(band["low"], abs=1e-4), pytest.approx(band["high"], abs=1e-4))
    assert low < 1.0 < high
    simulate = ["simulate", "--model", "gpt2-xl", "--cluster", str(spec), "--gpus", "8"]
    assert main(simulate + ["--json"]) in (0, 1)
    result = json.loads(capsys.readouterr().out)
    got = result["step_time_band"]
    assert (got["basis"], got["rows"]) == ("calibrated", 10)
    assert got["low_s"] == pytest.approx(result["step_time_s"] * low) and got["high_s"] == pytest.approx(result["step_time_s"] * high)
    assert main(simulate) in (0, 1)
    assert "(held-out residuals of 10 rows of this cluster's calibration)" in capsys.readouterr().out
    assert main(["optimize", "--budget", "2000gpuh", "--gpus", "64", "--cluster", str(spec)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  band "))
    assert "(90%, held-out residuals of 10 rows of this cluster's calibration)" in line


def test_a_calibration_with_too_few_held_out_rows_keeps_the_published_band(calibrated_spec):
    """calibrate wrote a band from one held-out row (--holdout-source naming one row) and simulate scaled every step
    time by it: a band of zero width. Below error_bands.MIN_ROWS held-out rows the published runs' band stands, as
    it does for a framework with too few published rows."""
    from planner.calibrate.error_bands import MIN_ROWS, interval

    spec, _ = calibrated_spec
    calibrated = load_cluster(str(spec))
    assert interval(1.0, "megatron", calibrated)["basis"] == "calibrated"
    few = calibrated.model_copy(update={"calibrated_on": calibrated.calibrated_on.model_copy(
        update={"held_out_rows": MIN_ROWS - 1})})
    band = interval(1.0, "megatron", few)
    assert band.pop("calibration_held_out_rows") == MIN_ROWS - 1
    assert band["basis"] == "published" and band == interval(1.0, "megatron", load_cluster("dgx-a100-80gb"))
    # Said where the band is printed, not "calibrate this cluster for its own" (it was calibrated).
    from planner.calibrate.error_bands import band_origin
    assert band_origin(interval(1.0, "megatron", few)).endswith(
        f"(its calibration held out {MIN_ROWS - 1} row(s), fewer than the {MIN_ROWS} a band of its own needs)")


def test_a_calibrated_spec_warns_once_outside_the_fitted_frameworks_and_dtypes(calibrated_spec, capsys):
    """A calibrated spec was applied to any stack or number format silently."""
    spec, report = calibrated_spec
    calibrated = load_cluster(str(spec))
    assert calibrated.calibrated_on.frameworks == tuple(report["fitted_frameworks"]) == ("other",)  # rows that name no stack
    assert calibrated.calibrated_on.dtypes == tuple(report["fitted_dtypes"]) == ("bf16",)
    simulate = ["simulate", "--model", "gpt2-xl", "--cluster", str(spec), "--gpus", "8"]
    main(simulate + ["--framework", "other", "--dtype", "bf16"])
    assert "warning" not in capsys.readouterr().err
    main(simulate + ["--framework", "megatron", "--dtype", "fp16"])
    err = capsys.readouterr().err.splitlines()
    assert err == [f"planner simulate: warning: {calibrated.name} was calibrated on other bf16 runs, not framework "
                   "megatron and dtype fp16; its efficiencies may not transfer"]
    main(["optimize", "--budget", "2000gpuh", "--gpus", "64", "--cluster", str(spec), "--dtype", "fp16",
          "--framework", "other"])
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "warning" in line] == [
        f"planner optimize: warning: {calibrated.name} was calibrated on other bf16 runs, not dtype fp16; its "
        "efficiencies may not transfer"]


@pytest.mark.parametrize("question", [["--model", "gpt2-xl", "--tokens", "1B", "--gpus", "8"],
                                      ["--budget", "2000gpuh", "--gpus", "64", "--no-sensitivity"]])
def test_the_reviews_warn_outside_the_fitted_frameworks_and_dtypes_as_optimize_does(calibrated_spec, tmp_path, capsys,
                                                                                     question):
    """`report` (budget and fixed-model reviews) and `optimize --model` said nothing when their plan ran on a
    stack or dtype the calibrated spec was not fitted on; `optimize --budget` warned."""
    pytest.importorskip("matplotlib")
    spec, _ = calibrated_spec
    calibrated = load_cluster(str(spec))
    expected = (f"warning: {calibrated.name} was calibrated on other bf16 runs, not dtype fp16; its efficiencies "
                "may not transfer")
    asked = [*question, "--cluster", str(spec), "--dtype", "fp16", "--framework", "other"]
    commands = [["report", *asked, "--out", str(tmp_path / "r.html")]]
    if "--model" in question:
        commands.append(["optimize", *asked])
    for argv in commands:
        assert main(argv) == 0
        warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
        assert warnings == [f"planner {argv[0]}: {expected}"]


@pytest.mark.parametrize("with_record", [True, False])
def test_recalibrating_a_calibrated_spec_keeps_its_name_defaults_and_provenance(tmp_path, capsys, with_record):
    """Recalibrating X.calibrated wrote X.calibrated.calibrated, listed the first fit's values as defaults (and
    judged the new fit against them), and dropped the first calibration's record line. A spec calibrated before
    the record was kept (with_record False) finds its defaults in the spec it was made from."""
    import json

    import yaml

    from planner.calibrate.calibration import _default_value
    from planner.calibrate.fitting import PARAMETERS

    base = load_cluster("dgx-a100-80gb")
    runs_file, spec_dir = tmp_path / "runs.csv", tmp_path / "specs"
    write_runs(runs_file, rows(base.with_efficiency(matmul_peak_fraction=0.3)))
    spec_dir.mkdir()
    (spec_dir / "dgx-a100-80gb.yaml").write_text(Path(base.source_file).read_text())
    argv = ["calibrate", str(runs_file), "--cluster-dir", str(spec_dir), "--folds", "2", "--json"]
    assert main(argv + ["--cluster", "dgx-a100-80gb"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["fitted_parameters"]
    written = spec_dir / "dgx-a100-80gb.calibrated.yaml"
    first_line = load_cluster(str(written)).calibration
    if not with_record:
        mapping = yaml.safe_load(written.read_text())
        del mapping["calibrated_on"]
        written.write_text(yaml.safe_dump(mapping, sort_keys=False))
    assert main(argv + ["--cluster", "dgx-a100-80gb.calibrated", "--force"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in spec_dir.iterdir()) == ["dgx-a100-80gb.calibrated.yaml", "dgx-a100-80gb.yaml"]
    again = load_cluster("dgx-a100-80gb.calibrated", spec_dir)
    assert again.name == "dgx-a100-80gb.calibrated"
    assert again.calibrated_on.earlier == (first_line,)
    assert f"# earlier: {first_line}" in written.read_text()
    datasheet = {n: _default_value(base, n, []) for n in PARAMETERS if n != "matmul_half_size"}
    assert {n: second["defaults"][n] for n in datasheet} == pytest.approx(datasheet)
    assert set(second["earlier_fitted"]) >= set(first["fitted_parameters"])
    assert set(again.calibrated_on.defaults) >= set(first["fitted_parameters"]) | set(second["fitted_parameters"])
    # Judged against the datasheet: 0.3 of peak is under half the A100 default however often it is refitted.
    refit = second["fitted_parameters"]
    if "matmul_peak_fraction" in refit:
        assert "matmul_peak_fraction" in second["implausible"]


@pytest.mark.parametrize("extra, flag", [
    (["--holdout-source", "paper", "--folds", "3", "--no-write"], "--folds"),
    (["--no-write", "--out", "cal.yaml"], "--out"),
    (["--no-write", "--force"], "--force"),
])
def test_a_flag_the_mode_does_not_use_is_refused_not_ignored(tmp_path, capsys, monkeypatch, extra, flag):
    """--folds with --holdout-source (no k-fold runs: the given rows are the held-out ones) and --out / --force
    with --no-write (nothing is written) were accepted and silently dropped."""
    monkeypatch.chdir(tmp_path)
    runs_file = tmp_path / "runs.csv"
    write_runs(runs_file, [dataclasses.replace(r, source="paper") for r in rows(load_cluster("dgx-a100-80gb"))])
    capsys.readouterr()
    assert main(["calibrate", str(runs_file), "--cluster", "dgx-a100-80gb", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"error: {flag}: " in err[0]
    assert not (tmp_path / "cal.yaml").exists()


def test_rows_naming_the_spec_by_path_are_fitted_and_unresolvable_paths_listed(tmp_path, capsys, monkeypatch):
    # A row's cluster cell may be a path to the spec file (spec/runs_csv.md). Such rows never matched --cluster
    # and were left out as "other clusters", unlisted, even when the path named the very spec being calibrated.
    base = load_cluster("dgx-a100-80gb")
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "dgx-a100-80gb.yaml").write_text(Path(base.source_file).read_text())
    monkeypatch.chdir(tmp_path)
    good = rows(base.with_efficiency(matmul_peak_fraction=0.6))
    by_path = [dataclasses.replace(r, cluster="specs/dgx-a100-80gb.yaml") for r in good[:4]] + good[4:]
    missing = dataclasses.replace(good[0], id="missing-spec", cluster="specs/nowhere.yaml")
    write_runs(tmp_path / "runs.csv", by_path + [missing])
    argv = ["calibrate", "runs.csv", "--cluster", "dgx-a100-80gb", "--cluster-dir", "specs", "--folds", "4", "--no-write"]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"fitted on {len(good)} rows" in out, out
    listed = [line for line in out.splitlines() if line.startswith("skipped    ")]
    assert len(listed) == 1 and "nowhere.yaml" in listed[0], out


def test_band_describes_the_written_spec_when_nothing_is_chosen_on_all_rows(monkeypatch):
    # Selection on all rows chose nothing (the spec written is the defaults) while each fold's selection chose
    # matmul_peak_fraction: the band and the held-out "after" figures came from those fold fits, a spec never written.
    from planner.calibrate import calibration
    from planner.calibrate.calibration import held_out_band

    base = load_cluster("dgx-a100-80gb")
    samples, _ = load_samples(rows(base.with_efficiency(matmul_peak_fraction=0.45)), base)
    everything = len(samples)

    def select_parameters(train, cluster):
        if len(train) == everything:
            return cluster, {"fitted": [], "selection_path": [{"parameters": [], "cv_mape": 0.0}], "left_at_default": {}}
        fitted = fit(train, cluster, ["matmul_peak_fraction"])
        return fitted, {"fitted": ["matmul_peak_fraction"], "selection_path": [], "left_at_default": {}}

    monkeypatch.setattr(calibration, "select_parameters", select_parameters)
    report = calibrate(samples, base, k=4)
    measured = np.array([s.run.step_time_s for s in samples])
    defaults_errors = predict(samples, base) / measured - 1
    assert report["fitted_parameters"] == {}
    assert report["held_out_band"] == held_out_band(defaults_errors)
    assert report["heldout"]["after"] == report["heldout"]["before"]


def test_fit_residuals_are_evaluated_once_per_point_and_handed_out_as_copies():
    """least_squares asks for the residuals and then the Jacobian at the same point: the second evaluation
    is the kept value (the model runs once), and a caller that changes what it got cannot change it."""
    from planner.calibrate.fitting import _last_value_kept

    calls = []

    @_last_value_kept
    def residuals(free):
        calls.append(np.array(free))
        return np.asarray(free, dtype=float) * 2.0

    first = residuals(np.array([1.0, 2.0]))
    first[0] = 99.0
    again = residuals(np.array([1.0, 2.0]))
    assert len(calls) == 1 and again.tolist() == [2.0, 4.0]
    assert residuals(np.array([1.0, 2.5])).tolist() == [2.0, 5.0] and len(calls) == 2
    assert residuals(np.array([1.0, 2.0])).tolist() == [2.0, 4.0] and len(calls) == 3  # one point kept



def test_fitted_parameters_stopped_by_their_limits_are_named():
    """Step times in ms read as seconds sent three overheads to their upper limits and calibrate said nothing
    of it; at_limits names them (cli/calibrate.py prints a warning per name)."""
    from planner.calibrate.fitting import at_limits

    pinned = {"microbatch_overhead_s": 100.0, "layer_overhead_s": 10.0, "matmul_half_size": 9.996e4,
              "matmul_peak_fraction": 0.021}
    assert at_limits(pinned) == {"microbatch_overhead_s": ("upper", 100.0), "layer_overhead_s": ("upper", 10.0),
                                 "matmul_half_size": ("upper", 1e5), "matmul_peak_fraction": ("lower", 0.02)}
    assert at_limits({"matmul_peak_fraction": 0.7, "step_overhead_s": 0.01,
                      "scale_out_bandwidth_efficiency": 0.9}) == {}


def test_calibrate_says_a_band_of_too_few_held_out_rows_is_not_used(tmp_path, capsys):
    """The user's case: three rows held out by --holdout-source. calibrate said simulate and optimize use their
    band; simulate on the spec then printed a band of three residuals' 5th and 95th percentiles."""
    import json

    base = load_cluster("dgx-a100-80gb")
    runs = rows(base.with_efficiency(matmul_peak_fraction=0.6))
    runs = [dataclasses.replace(r, source="held") if i < 3 else r for i, r in enumerate(runs)]
    runs_file, out = tmp_path / "runs.csv", tmp_path / "mine.calibrated.yaml"
    write_runs(runs_file, runs)
    assert main(["calibrate", str(runs_file), "--cluster", "dgx-a100-80gb", "--holdout-source", "held",
                 "--out", str(out)]) == 0
    said = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("step-time band"))
    assert "(90% of 3 held-out rows); fewer than 10 rows give no usable 5th/95th percentile" in said
    assert load_cluster(str(out)).calibrated_on.held_out_rows == 3
    assert main(["simulate", "--model", "gpt2-xl", "--cluster", str(out), "--gpus", "8", "--json"]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["step_time_band"]["basis"] != "calibrated"
