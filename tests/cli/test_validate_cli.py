"""`planner validate RUNS.csv`: every published run simulated, error within the guard, bad rows reported."""

from __future__ import annotations

import json

import pytest

from planner.profile.runs_csv import COLUMNS

STEP_TIME_MAPE_LIMIT = 0.15  # regression guard on the published runs (see tests/test_validation.py)


@pytest.fixture(scope="module")
def published_json(published_runs_csv):
    from planner.cli import main
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(published_runs_csv), "--json"])
    assert code == 0 and err.getvalue() == ""
    return json.loads(out.getvalue())


def test_every_published_run_is_simulated(published_json):
    assert published_json["skipped_rows"] == []
    assert published_json["unreadable_rows"] == []
    rows = published_json["rows"]
    assert len(rows) >= 60 and all("predicted_step_time_s" in r for r in rows)


def test_published_step_time_mape_within_guard(published_json):
    step = published_json["step_time"]
    assert step["count"] == len(published_json["rows"])
    assert step["mape"] <= STEP_TIME_MAPE_LIMIT, f"step-time MAPE {step['mape']:.1%}"


def test_per_source_figures_are_reported(published_json):
    by_source = published_json["step_time"]["by_source"]
    assert len(by_source) >= 3
    for stats in by_source.values():
        assert {"count", "mape", "median_ape", "worst_ape", "worst_id", "mean_signed"} <= set(stats)
    assert sum(s["count"] for s in by_source.values()) == published_json["step_time"]["count"]


def test_text_report_has_totals_and_sources(cli, published_runs_csv):
    code, out, _ = cli(["validate", published_runs_csv])
    assert code == 0
    assert "step time error by source" in out and "MAPE" in out
    assert "skipped:" not in out and "unreadable:" not in out


def _row(run_id: str, gpus: str = "8") -> str:
    cells = dict(id=run_id, source="test", cluster="dgx-a100-80gb", gpus=gpus, layers="12", hidden="768", heads="12",
                 seq_len="1024", vocab="50257", dp=gpus, micro_batch="1", global_batch="8", step_time_s="0.5")
    return ",".join(cells.get(c, "") for c in COLUMNS)


def test_corrupt_and_unsimulatable_rows_are_reported_and_the_rest_validated(cli, tmp_path):
    path = tmp_path / "runs.csv"
    lines = [",".join(COLUMNS), _row("1"), _row("2", gpus="lots"), _row("3") + ",extra,cells", _row("4", gpus="7")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, _ = cli(["validate", path, "--json"])
    assert code == 1  # some rows gave no result (the contract in planner.cli)
    report = json.loads(out)
    assert [r["id"] for r in report["rows"]] == ["1", "4"]
    assert report["unreadable_rows"][0].startswith(f"{path}:3: ")
    assert report["unreadable_rows"][1].startswith(f"{path}:4: ")
    assert [s["id"] for s in report["skipped_rows"]] == ["4"]  # global_batch(8) vs dp(7): kept with its reason
    assert report["step_time"]["count"] == 1
    code, out, _ = cli(["validate", path])
    assert code == 1 and f"unreadable: {path}:3:" in out and f"skipped: {path}:5 (id 4):" in out


def test_a_file_whose_rows_all_simulate_exits_0_and_one_skipped_row_makes_it_1(cli, tmp_path):
    """Exit 1 when some inputs gave no result (planner.cli's contract): validate exited 0 with every row skipped,
    and said "no rows with a measured step time" of rows that had one."""
    path = tmp_path / "runs.csv"
    path.write_text("\n".join([",".join(COLUMNS), _row("1"), _row("2")]) + "\n", encoding="utf-8")
    assert cli(["validate", path])[0] == 0
    path.write_text("\n".join([",".join(COLUMNS), _row("1", gpus="7")]) + "\n", encoding="utf-8")
    code, out, _ = cli(["validate", path])
    assert code == 1
    assert "step time: no simulated row with a measured step time (all 1 row(s) skipped)" in out


def test_rows_that_ran_but_are_predicted_not_to_fit_are_named_in_the_text(cli, tmp_path):
    """The text table showed no mark for a measured run the memory model books over its GPU's HBM (only --json had
    `fits`): a line names them, and says their step times are still compared."""
    path = tmp_path / "runs.csv"
    big = _row("big").replace(",768,12,", ",8192,64,").replace(",12,8192,", ",80,8192,")
    path.write_text("\n".join([",".join(COLUMNS), _row("1"), big]) + "\n", encoding="utf-8")
    code, out, _ = cli(["validate", path, "--json"])
    fits = {row["id"]: row["fits"] for row in json.loads(out)["rows"]}
    assert code == 0 and fits == {"1": True, "big": False}
    code, out, _ = cli(["validate", path])
    assert ("predicted not to fit: 1 row(s) that ran are predicted above their GPU's memory (rows big); their step "
            "times are still compared") in out


def test_missing_runs_file_is_a_one_line_error(cli, tmp_path):
    code, _, err = cli(["validate", tmp_path / "absent.csv"])
    assert code == 2 and err.count("\n") == 1 and "no such runs file" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["validate", "calibrate"])
def test_an_id_in_two_runs_files_is_refused_naming_both(cli, tmp_path, published_runs_csv, command):
    """The same id in two files was counted twice, silently (the reader caught repeats within one file only)."""
    lines = published_runs_csv.read_text(encoding="utf-8").splitlines()
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
    second.write_text("\n".join([lines[0], lines[5], lines[3]]) + "\n", encoding="utf-8")
    row_id = lines[3].split(",")[lines[0].split(",").index("id")]
    extra = ["--cluster", "dgx-a100-80gb", "--no-write"] if command == "calibrate" else []
    code, out, err = cli([command, str(first), str(second), *extra])
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert f"{second}:3: id {row_id!r} is also in {first}:4" in err


def test_empty_mlp_dtype_and_zero_cells_are_named_as_inferred_with_the_stacks_defaults(cli, tmp_path):
    # Empty mlp / dtype / zero cells were taken as gelu / bf16 / 0 whatever the stack and not named as inferred:
    # an fsdp row at tp 2 became ZeRO-0 (which torchtitan cannot run) and a DeepSpeed v0.3 row bf16 (which it
    # did not have). Each stack's default is in its frameworks table.
    header = "id,cluster,gpus,layers,hidden,heads,seq_len,vocab,tp,dp,micro_batch,global_batch,step_time_s,framework,mlp,dtype,zero"
    shape = "dgx-a100-80gb,8,12,768,12,1024,50257"
    path = tmp_path / "runs.csv"
    path.write_text("\n".join([
        header,
        f"plain,{shape},1,8,1,8,0.5,,,,",
        f"titan,{shape},2,4,1,8,0.5,fsdp,swiglu,bf16,",
        f"old-ds,{shape},1,8,1,8,0.5,deepspeed-v0.3,gelu,,2",
        f"stated,{shape},1,8,1,8,0.5,megatron,gelu,fp16,1",
    ]) + "\n", encoding="utf-8")
    code, out, err = cli(["validate", path, "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert report["skipped_rows"] == []
    inferred = {row["id"]: row["inferred"] for row in report["rows"]}
    assert {k: inferred["plain"][k] for k in ("mlp", "dtype", "zero")} == {"mlp": "gelu", "dtype": "bf16", "zero": 0}
    assert inferred["titan"]["zero"] == 3 and "dtype" not in inferred["titan"] and "mlp" not in inferred["titan"]
    assert inferred["old-ds"]["dtype"] == "fp16" and "zero" not in inferred["old-ds"]
    assert not {"mlp", "dtype", "zero"} & set(inferred["stated"])


def test_error_bands_from_fewer_than_ten_rows_are_refused(cli, published_runs_csv, tmp_path):
    """Four rows wrote a '90% band' (one row a band of zero width); now exit 2 and nothing written."""
    few = tmp_path / "four.csv"
    few.write_text("".join(published_runs_csv.read_text().splitlines(keepends=True)[:5]))
    out_file = tmp_path / "bands.json"
    code, out, err = cli(["validate", few, "--write-error-bands", out_file, "--quiet"])
    assert code == 2 and not out_file.exists()
    assert "--write-error-bands: 4 row(s)" in err and "at least 10" in err and err.count("\n") == 1


def test_a_file_with_nothing_measured_is_not_a_success(cli, tmp_path, published_runs_csv):
    """A header naming `step_time_ms` and `mem_gb` reads them as extra columns: validate simulated every row,
    compared nothing and exited 0."""
    lines = published_runs_csv.read_text().splitlines()
    header = lines[0].replace("step_time_s", "step_time_ms").replace("mem_gib", "mem_gb")
    renamed = tmp_path / "renamed.csv"
    renamed.write_text("\n".join([header, *lines[1:4]]) + "\n")
    code, out, err = cli(["validate", renamed])
    assert code == 1 and "no row has a measured step_time_s or mem_gib, so nothing was compared (a column named " \
        "otherwise is read as an extra column)" in err
    kept = tmp_path / "kept.csv"
    kept.write_text("\n".join(lines[:4]) + "\n")
    assert cli(["validate", kept])[0] == 0


def test_one_run_under_two_ids_is_warned_of(cli, tmp_path, published_runs_csv, capsys):
    """`ingest --append` refuses a run the file has under another id; validate and calibrate read two files (or a
    hand-copied row) and weighed the run twice with nothing said."""
    from planner.cli.calibrate import _warn_repeated_run
    from planner.profile.runs_csv import read_runs

    lines = published_runs_csv.read_text().splitlines()
    copied = tmp_path / "copied.csv"
    copied.write_text("\n".join([lines[0], lines[1], "copy-" + lines[1], lines[2]]) + "\n")
    code, _, err = cli(["validate", copied])
    first = lines[1].split(",")[0]
    assert code == 0 and err.strip() == (
        f"planner validate: warning: rows {first!r} and {'copy-' + first!r} have the same layout, step time and "
        "memory: one run under two ids counts twice in the error figures")
    runs, _ = read_runs(copied)
    _warn_repeated_run(runs)
    assert "one run under two ids weighs twice in the fit" in capsys.readouterr().err
    _warn_repeated_run([runs[0], runs[2]])
    assert capsys.readouterr().err == ""
    assert cli(["validate", published_runs_csv])[2] == ""


def test_a_measurement_in_the_wrong_unit_is_warned_of(cli, tmp_path, published_runs_csv):
    """A step time entered in milliseconds read as -99.9% and went into the MAPE with nothing said (doctor says
    it); validate says it too, on stderr, keeping the figures as they are."""
    import csv

    with open(published_runs_csv, newline="") as stream:
        rows = list(csv.DictReader(stream))
    rows = rows[:3]
    rows[1]["step_time_s"] = str(float(rows[1]["step_time_s"]) * 1000)
    wrong = tmp_path / "ms.csv"
    with open(wrong, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, _, err = cli(["validate", wrong])
    assert code == 0
    assert err.startswith(f"planner validate: warning: row {rows[1]['id']!r}: step_time_s ")
    assert "(more than 100x off either way): check its unit (seconds per optimizer step)" in err


def test_the_unit_warning_is_for_units_not_for_the_models_misses(cli, repo_root):
    """The H200 profile's small runs are 13-55x slower than predicted (the model's miss, which doctor flags at
    10x): validate, which the README runs on them, does not call that a unit slip; ms for s is about 1000x."""
    code, _, err = cli(["validate", repo_root / "profiles" / "h200-1gpu.csv"])
    assert "check its unit" not in err


def test_skipped_rows_are_not_said_to_lack_a_measurement(cli, tmp_path, published_runs_csv):
    lines = published_runs_csv.read_text().splitlines()
    path = tmp_path / "skipped.csv"
    path.write_text("\n".join([lines[0], lines[1].replace("dgx-a100-80gb", "no-such-cluster")]) + "\n")
    code, out, err = cli(["validate", path])
    assert code == 1 and "no row has a measured" not in err and "(all 1 row(s) skipped)" in out
