"""What `calibrate` and `doctor` tell a user about names and columns: a spec is the cluster its file name says
(rows and --cluster find it so, not by its name: key), doctor flags a spec whose name: key says otherwise,
--time-column takes step times only, and doctor names every argument it cannot check."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from planner.calibrate.samples import load_samples, predict
from planner.calibrate.validation import predict_runs
from planner.profile.runs_csv import MeasuredRun, write_runs
from planner.specs.clusters import default_cluster_dir, load_cluster

SHAPES = [  # (layers, hidden, heads, seq, vocab, tp, pp, dp, zero, micro, global, recompute): one node of A100s
    (24, 2048, 16, 2048, 50304, 1, 1, 8, 0, 4, 64, "none"),
    (24, 2048, 16, 2048, 50304, 2, 1, 4, 1, 2, 64, "selective"),
    (32, 4096, 32, 2048, 50304, 8, 1, 1, 0, 1, 16, "full"),
    (12, 768, 12, 1024, 50304, 1, 1, 8, 2, 16, 256, "none"),
    (16, 1024, 16, 2048, 50304, 1, 1, 4, 0, 8, 64, "none"),
]
BUNDLED = default_cluster_dir() / "dgx-a100-80gb.yaml"  # name: dgx-a100-80gb


def _rows(*clusters: str) -> list[MeasuredRun]:
    """One row per cluster cell given (SHAPES in turn), with the step times the model predicts on the A100 spec
    at a matmul ceiling of 0.6, and p10 / forward-pass columns beside them as `planner profile` writes."""
    truth = load_cluster("dgx-a100-80gb").with_efficiency(matmul_peak_fraction=0.6)
    runs = [MeasuredRun(
        id=f"r{i}", source=f"s{i % 2}", cluster="dgx-a100-80gb", gpus=tp * pp * dp, layers=L, hidden=h, heads=a,
        kv_heads=a, ffn=4 * h, mlp="gelu", seq_len=s, vocab=V, tp=tp, pp=pp, dp=dp, cp=1, vpp=1, zero=zero,
        micro_batch=mb, global_batch=gb, recompute=rc, seq_parallel=int(tp > 1), dtype="bf16", step_time_s=1.0)
        for i, (L, h, a, s, V, tp, pp, dp, zero, mb, gb, rc) in enumerate(SHAPES[:len(clusters)])]
    samples, skipped = load_samples(runs, truth)
    assert not skipped
    return [dataclasses.replace(run, cluster=cluster, step_time_s=float(t),
                                extra={"step_time_p10_s": repr(0.98 * float(t)), "fwd_s": repr(0.3 * float(t))})
            for run, cluster, t in zip(runs, clusters, predict(samples, truth))]


@pytest.fixture
def mine(tmp_path) -> Path:
    """specs/mine.yaml: the bundled A100 spec copied under another file name, its name: key left as it was."""
    folder = tmp_path / "specs"
    folder.mkdir()
    shutil.copyfile(BUNDLED, folder / "mine.yaml")
    return folder / "mine.yaml"


def _runs_file(tmp_path: Path, runs: list[MeasuredRun]) -> Path:
    path = tmp_path / "runs.csv"
    write_runs(path, runs)
    return path


# ---------------------------------------------------------------------------------------------
# calibrate --cluster NAME: the rows of NAME as its file name says, as simulate and validate resolve them
# ---------------------------------------------------------------------------------------------

def test_calibrate_fits_the_rows_that_name_the_spec_as_the_command_line_does(cli, tmp_path, mine):
    """A copy of a bundled spec as specs/mine.yaml kept `name: dgx-a100-80gb`: calibrate --cluster mine skipped
    every row saying `mine` (the rows validate --cluster-dir specs simulates on that file) as another cluster's,
    and wrote dgx-a100-80gb.calibrated.yaml."""
    runs = _rows("mine", "mine", "mine", "mine", "mine")
    assert all(result.reason is None for result in predict_runs(runs, mine.parent))  # how validate resolves them
    code, out, err = cli(["calibrate", _runs_file(tmp_path, runs), "--cluster", "mine", "--cluster-dir", mine.parent,
                          "--folds", "2", "--json"])
    assert code == 0, err
    assert json.loads(out)["rows_fitted"] == 5
    written = mine.parent / "mine.calibrated.yaml"
    assert sorted(p.name for p in mine.parent.iterdir()) == ["mine.calibrated.yaml", "mine.yaml"]
    assert err == f"wrote {written} (use --cluster mine.calibrated --cluster-dir {mine.parent})\n"
    assert load_cluster("mine.calibrated", mine.parent).name == "mine.calibrated"
    assert cli(["doctor", written]) == (0, f"{written}: ok\n", "")


@pytest.mark.parametrize("given", ["name", "path"])
def test_rows_naming_only_the_name_key_are_refused_saying_which_name_rows_use(cli, tmp_path, mine, given):
    """Rows saying `dgx-a100-80gb` were fitted to specs/mine.yaml, though validate resolves them to the bundled
    spec (or, with --cluster-dir specs, to none)."""
    runs_file = _runs_file(tmp_path, _rows(*["dgx-a100-80gb"] * 5))
    cluster = ["mine", "--cluster-dir", mine.parent] if given == "name" else [mine]
    code, out, err = cli(["calibrate", runs_file, "--cluster", *cluster, "--no-write"])
    assert (code, out) == (2, "") and err.count("\n") == 1, err
    assert "at least 3 measured rows on cluster 'mine', got 0; 5 rows are on other clusters: dgx-a100-80gb (5)" in err
    assert (f"'dgx-a100-80gb' is only the name: key of {mine}; rows name a spec by its file name, as --cluster, "
            "simulate and validate do, so rows measured on it must say 'mine'") in err


def test_rows_left_out_for_naming_the_name_key_are_counted_in_one_warning(cli, tmp_path, mine):
    runs_file = _runs_file(tmp_path, _rows("mine", "mine", "mine", "mine", "dgx-a100-80gb"))
    code, out, err = cli(["calibrate", runs_file, "--cluster", "mine", "--cluster-dir", mine.parent, "--folds", "2",
                          "--no-write"])
    assert code == 0, err
    assert out.startswith("cluster mine: fitted on 4 rows") and "skipped 1 rows" in out, out
    assert err == (f"planner calibrate: warning: 1 row(s) name cluster 'dgx-a100-80gb', the name: key of {mine}, "
                   "and were left out: rows name a spec by its file name, as --cluster, simulate and validate do, so "
                   "this spec is 'mine'; set their cluster to mine if they were measured on it, and name: mine in "
                   "the spec (`planner doctor` flags it)\n")


def test_a_calibrated_spec_written_under_another_name_still_fits_the_rows_it_was_made_from(cli, tmp_path):
    """`--out my-a100.calibrated.yaml` keeps name: dgx-a100-80gb.calibrated, the spec it was calibrated from: a
    recalibration of that file fits the dgx-a100-80gb rows again, and doctor does not flag the file's name."""
    runs_file = _runs_file(tmp_path, _rows(*["dgx-a100-80gb"] * 5))
    out_file = tmp_path / "my-a100.calibrated.yaml"
    code, _, err = cli(["calibrate", runs_file, "--cluster", "dgx-a100-80gb", "--folds", "2", "--out", out_file])
    assert code == 0, err
    assert load_cluster(str(out_file)).name == "dgx-a100-80gb.calibrated"
    code, out, err = cli(["calibrate", runs_file, "--cluster", out_file, "--folds", "2", "--no-write", "--json"])
    assert code == 0 and "warning" not in err, err
    assert json.loads(out)["rows_fitted"] == 5
    assert cli(["doctor", out_file])[0] == 0


# ---------------------------------------------------------------------------------------------
# doctor: a spec whose name: key is not its file name
# ---------------------------------------------------------------------------------------------

def test_doctor_flags_a_name_key_that_is_not_the_file_name(cli, mine):
    line = next(i for i, text in enumerate(mine.read_text().splitlines(), 1) if text.startswith("name:"))
    code, out, err = cli(["doctor", mine])
    assert (code, err) == (1, "")
    assert out == (f"{mine}:{line}: key 'name': 'dgx-a100-80gb' differs from the file name 'mine'; a runs file's "
                   "cluster column and --cluster find this spec as 'mine' (by file name), while simulate prints "
                   "'dgx-a100-80gb'; set name: mine, or rename the file to dgx-a100-80gb.yaml\n1 problem(s) found\n")
    document = json.loads(cli(["doctor", mine, "--json"])[1])
    assert document["problems"] == 1 and document["files"][0]["problems"][0]["where"] == f"{mine}:{line}"
    mine.write_text(mine.read_text().replace("name: dgx-a100-80gb\n", "name: mine\n", 1))
    assert cli(["doctor", mine]) == (0, f"{mine}: ok\n", "")


def test_doctor_does_not_flag_the_name_calibrate_records_in_a_calibrated_spec(cli, tmp_path):
    copy = tmp_path / "my-cpu.calibrated.yaml"
    shutil.copyfile(default_cluster_dir() / "cpu-local.calibrated.yaml", copy)  # name: cpu-local.calibrated
    assert cli(["doctor", copy]) == (0, f"{copy}: ok\n", "")


# ---------------------------------------------------------------------------------------------
# calibrate --time-column: a step-time column, and a column of another kind said to be one
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("column", ["mem_gib", "gpus", "fwd_s"])
def test_a_time_column_that_exists_but_is_no_step_time_is_refused_as_such(cli, tmp_path, column):
    """`--time-column mem_gib` said "no such column" of a column every runs file has."""
    runs_file = _runs_file(tmp_path, _rows(*["dgx-a100-80gb"] * 5))
    code, out, err = cli(["calibrate", runs_file, "--cluster", "dgx-a100-80gb", "--no-write", "--time-column", column])
    assert (code, out) == (2, "")
    assert err == (f"planner calibrate: error: --time-column {column}: not a step-time column; --time-column takes "
                   "measured seconds per optimizer step: step_time_s or a step_time_<stat>_s column (step_time_p10_s "
                   "from `planner profile`); the runs files have step_time_s, step_time_p10_s\n")


def test_a_time_column_no_file_has_names_the_ones_they_have(cli, tmp_path):
    runs_file = _runs_file(tmp_path, _rows(*["dgx-a100-80gb"] * 5))
    code, _, err = cli(["calibrate", runs_file, "--cluster", "dgx-a100-80gb", "--no-write",
                        "--time-column", "step_time_p50_s"])
    assert code == 2 and err.count("\n") == 1
    assert f"--time-column step_time_p50_s: no such column in {runs_file}; " in err
    assert err.endswith("the runs files have step_time_s, step_time_p10_s\n")


def test_a_step_time_statistic_column_is_fitted(cli, tmp_path):
    runs_file = _runs_file(tmp_path, _rows(*["dgx-a100-80gb"] * 5))
    code, out, err = cli(["calibrate", runs_file, "--cluster", "dgx-a100-80gb", "--no-write", "--folds", "2",
                          "--time-column", "step_time_p10_s", "--json"])
    assert code == 0, err
    assert json.loads(out)["rows_fitted"] == 5


# ---------------------------------------------------------------------------------------------
# doctor A.csv MISSING.csv B.yaml: the convention (tests/test_doctor.py, cli/doctor.py) is exit 2 with one line
# and nothing checked; that line names every argument that is not a checkable file, not only the first.
# ---------------------------------------------------------------------------------------------

def test_every_argument_that_is_not_a_checkable_file_is_named_in_the_one_line(cli, tmp_path):
    good = tmp_path / "runs.csv"
    write_runs(good, _rows("dgx-a100-80gb"))
    code, out, err = cli(["doctor", good, tmp_path / "missing.csv", BUNDLED, tmp_path / "gone.yaml"])
    assert (code, out) == (2, "") and err.count("\n") == 1, (out, err)
    assert err == (f"planner doctor: error: {tmp_path / 'missing.csv'}: no such cluster spec (.yaml) or runs file "
                   f"(.csv); {tmp_path / 'gone.yaml'}: no such cluster spec (.yaml) or runs file (.csv)\n")


def test_many_uncheckable_arguments_are_named_up_to_a_count(cli, tmp_path):
    missing = [tmp_path / f"m{i}.csv" for i in range(8)]
    code, out, err = cli(["doctor", *missing])
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert all(str(path) in err for path in missing[:5]) and str(missing[5]) not in err
    assert err.endswith("; and 3 more argument(s) that are not checkable files\n")
