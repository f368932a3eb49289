"""Issue 12, input validation: silent wrong answers and crashes on measured runs, law data and logs.

Items 4, 5, 6, 10, 11, 13, 14 (validate's warnings) and 18 (streaming validate and doctor). Each test
names the item it guards; each failed before the fix (a wrong exit code, a traceback, a silently
used value) and passes after.
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings

import numpy as np
import pytest
import yaml

from planner.cost.estimate import simulate
from planner.errors import PlannerInputError
from planner.laws.fitter import LawFitter
from planner.laws.law_file import load_law_file, save_law
from planner.laws.published import EPOCH_2024
from planner.profile.deepspeed_logs import parse_log_text
from planner.profile.ingest import row_from_log
from planner.profile.runs_csv import INT_RANGES, MAX_SIZE, RowProblem, iter_runs, read_runs, runs_to_csv_text
from planner.calibrate.validation import iter_predictions, predict_runs, run_to_config, summarize

HEADER = "id,source,cluster,gpus,layers,hidden,heads,ffn,seq_len,vocab,tp,pp,dp,micro_batch,global_batch,step_time_s"
ROW = "{id},t,dgx-a100-80gb,8,24,2048,16,8192,2048,50304,1,1,8,1,8,{step}"


def _runs_file(tmp_path, rows: list[str], header: str = HEADER, name: str = "runs.csv"):
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _one_line_error(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------------
# Item 4: measured times and sizes positive, finite and in range; zero readable rows is an error
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["-3.5", "0", "1e-300", "1e300"])
def test_item4_step_time_out_of_range_is_a_row_problem_not_an_error_value(tmp_path, cli, cell):
    path = _runs_file(tmp_path, [ROW.format(id="bad", step=cell), ROW.format(id="good", step="1.5")])
    runs, problems = read_runs(path)
    assert [r.id for r in runs] == ["good"]
    assert problems[0].origin == f"{path}:2"
    assert "column 'step_time_s' must be a positive finite number of seconds from 1e-06 to 1e+07" in problems[0].reason
    code, out, _ = cli(["validate", path, "--json"])
    report = json.loads(out)
    assert code == 1 and report["step_time"]["count"] == 1 and len(report["unreadable_rows"]) == 1


def test_item4_zero_memory_is_not_silently_missing(tmp_path):
    path = _runs_file(tmp_path, [ROW.format(id="a", step="1.5") + ",0"], header=HEADER + ",mem_gib")
    runs, problems = read_runs(path)
    assert runs == [] and "column 'mem_gib' must be a positive finite number of GiB" in problems[0].reason


@pytest.mark.parametrize("column, cell, expected", [
    ("ffn", "1e300", "from 1 to 16,777,216"),
    ("hidden", "0", "from 1 to 16,777,216"),
    ("layers", "4097", "from 1 to 4,096"),
    ("tp", "-2", "from 1 to 2,147,483,647"),
    ("gpus", str(2**31), "from 1 to 2,147,483,647"),
])
def test_item4_absurd_sizes_are_refused_by_doctor_naming_column_and_range(tmp_path, cli, column, cell, expected):
    names = HEADER.split(",")
    cells = ROW.format(id="a", step="1.5").split(",")
    cells[names.index(column)] = cell
    path = _runs_file(tmp_path, [",".join(cells)])
    code, out, _ = cli(["doctor", path])
    assert code == 1
    assert f"{path}:2: column '{column}' must be a whole number {expected}, got '{cell}'" in out


@pytest.mark.parametrize("column, cell", [("zero", "4"), ("seq_parallel", "2")])
def test_item4_switch_columns_have_their_own_ranges(tmp_path, column, cell):
    path = _runs_file(tmp_path, [ROW.format(id="a", step="1.5") + f",{cell}"], header=HEADER + f",{column}")
    _, problems = read_runs(path)
    assert f"column '{column}' must be a whole number from 0 to" in problems[0].reason


def test_item4_and_14_every_size_at_the_bound_runs_through_the_model_without_warnings(tmp_path, cli):
    """MAX_SIZE is derived from the cost model: every size column at its bound (2**31 - 1; the model's sizes at
    ModelSpec's, specs.model MAX_LAYERS and the rest; the GPU count within the cluster) must simulate with no float
    overflow or other numpy warning."""
    big = MAX_SIZE
    layers, width = INT_RANGES["layers"][1], INT_RANGES["hidden"][1]
    row = f"a,t,dgx-a100-80gb,8,{layers},{width},1,{width},{big},{big},1,1,8,1,{big - 7},1.5"  # global_batch % 8 == 0
    path = _runs_file(tmp_path, [row])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, err = cli(["validate", path, "--json"])
    # The one stderr line is validate's own: a 1.5 s step against a model of this size is far off.
    assert code == 0 and err.startswith("planner validate: warning: row 'a': step_time_s 1.5 s is ") \
        and len(err.splitlines()) == 1, err
    assert json.loads(out)["rows"][0]["predicted_step_time_s"] > 0


def test_item14_validate_with_an_absurd_ffn_prints_no_numpy_warning(tmp_path, cli):
    path = _runs_file(tmp_path, [ROW.format(id="a", step="1.5").replace(",8192,", ",1e300,"), ROW.format(id="b", step="1")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, err = cli(["validate", path])
    assert code == 1 and err == "" and "unreadable: " in out and "column 'ffn'" in out


@pytest.mark.parametrize("rows", [[ROW.format(id="a", step="-1"), ROW.format(id="b", step="nan")], []])
def test_item4_validate_with_no_readable_row_exits_2_with_one_line(tmp_path, cli, rows):
    path = _runs_file(tmp_path, rows)
    code, out, err = cli(["validate", path])
    assert code == 2 and out == ""
    assert str(path) in _one_line_error(err) and ("no readable row" in err or "no rows after the header" in err)


# ---------------------------------------------------------------------------------------------
# Item 5: duplicate column names refused everywhere; fits count distinct (N, D) points
# ---------------------------------------------------------------------------------------------

def test_item5_runs_csv_with_a_column_twice_is_refused(tmp_path, cli):
    path = _runs_file(tmp_path, [ROW.format(id="a", step="1.5") + ",3.0"], header=HEADER + ",step_time_s")
    with pytest.raises(PlannerInputError, match=rf"{re.escape(str(path))}:1: column 'step_time_s' appears twice"):
        read_runs(path)
    code, out, err = cli(["validate", path])
    assert code == 2 and out == "" and "column 'step_time_s' appears twice" in _one_line_error(err)


def test_item5_law_csv_with_a_column_twice_is_refused(tmp_path, cli):
    path = tmp_path / "points.csv"
    path.write_text("N,D,loss,loss\n1e8,2e9,3.1,3.3\n", encoding="utf-8")
    code, out, err = cli(["fit-law", path, "--bootstrap", "0"])
    assert code == 2 and out == ""
    assert f"{path} line 1: column 'loss' appears twice" in _one_line_error(err)


def test_item5_law_jsonl_with_a_key_twice_is_refused(tmp_path, cli):
    path = tmp_path / "points.jsonl"
    path.write_text('{"N": 1e8, "D": 2e9, "loss": 3.1, "loss": 3.3}\n', encoding="utf-8")
    code, _, err = cli(["fit-law", path, "--bootstrap", "0"])
    assert code == 2 and f"{path} line 1: key 'loss' appears twice" in _one_line_error(err)


def test_item5_fifty_identical_rows_are_one_distinct_point(tmp_path, cli):
    path = tmp_path / "same.csv"
    path.write_text("N,D,loss\n" + "1e8,2e9,3.1\n" * 50, encoding="utf-8")
    code, out, err = cli(["fit-law", path])
    assert code == 2 and out == ""
    assert "50 data point(s) at 1 distinct (N, D)" in _one_line_error(err) and "need at least 6 distinct" in err


def test_item5_fitter_counts_distinct_points_not_rows():
    N = np.repeat([1e8, 2e8, 4e8, 8e8, 1.6e9], 4)  # 20 rows, 5 places: the chinchilla form has 5 parameters
    D = 20 * N
    with pytest.raises(PlannerInputError, match="20 data point.*5 distinct"):
        LawFitter().fit(N, D, 1.8 + 400 * N**-0.34 + 400 * D**-0.28)


# ---------------------------------------------------------------------------------------------
# Item 6 (and 13): ingest never writes nan, inf, zero or negative times, nor sizes it cannot read back
# ---------------------------------------------------------------------------------------------

MEGATRON_ITERATION = (" iteration       {n}/     100 | consumed samples: 80 | elapsed time per iteration (ms): {ms} | "
                      "global batch size:     8 |")
FLAGS = {"cluster": "dgx-a100-80gb", "gpus": 8, "layers": 24, "hidden": 2048, "heads": 16, "seq_len": 2048, "vocab": 50304}


@pytest.mark.parametrize("bad", ["nan", "inf", "-1200.0", "0.0"])
def test_item6_bad_megatron_times_are_log_problems_with_their_line(bad):
    text = "\n".join(MEGATRON_ITERATION.format(n=n, ms=ms) for n, ms in ((10, "1000.0"), (20, bad), (30, "1100.0")))
    run, problems = row_from_log(parse_log_text(text, "train.log"), FLAGS, "r", skip=0)
    assert run.step_time_s == pytest.approx(1.05)  # the median of the two readable lines
    assert any(str(p).startswith("train.log:2: Megatron field 'elapsed time per iteration (ms)'") for p in problems)


@pytest.mark.parametrize("line, where", [
    ("epoch=0/micro_step=2/global_step=2, RunningAvgSamplesPerSec=1.0, CurrSamplesPerSec=nan, MemAllocated=0.5GB, "
     "MaxMemAllocated=1.2GB", "CurrSamplesPerSec=nan"),
    ("[Rank 0] time (ms) | fwd: nan | bwd: 190.00 | step: 20.00", "fwd: nan"),
    ("[Rank 0] time (ms) | fwd: -90.00 | bwd: 190.00 | step: 20.00", "fwd: -90.00"),
    ("[Rank 0] time (ms) | fwd: 0.00 | bwd: 0.00 | step: 0.00", "fwd + bwd + step is 0 ms"),
])
def test_item6_bad_deepspeed_figures_never_become_the_step_time(line, where):
    text = line + "\n" + MEGATRON_ITERATION.format(n=10, ms="-5")
    run, problems = row_from_log(parse_log_text(text, "ds.log"), FLAGS, "r", skip=0)
    assert run is None  # no usable step time at all: no row, rather than a nan / inf / negative one
    assert any(str(p).startswith("ds.log:1: ") and where in str(p) for p in problems), [str(p) for p in problems]


def test_item6_rows_ingest_writes_read_back_without_problems(tmp_path):
    text = "\n".join([MEGATRON_ITERATION.format(n=10, ms="nan"), MEGATRON_ITERATION.format(n=20, ms="1000.0"),
                      "(after 10 iterations) memory (MB) | allocated: 1 | max allocated: 0.0 | reserved: 2"])
    run, problems = row_from_log(parse_log_text(text, "m.log"), FLAGS, "r", skip=0)
    assert run.step_time_s == 1.0 and run.mem_gib is None  # 0 MB of peak memory is not a measurement
    assert any("mem_gib left empty" in str(p) for p in problems)
    path = tmp_path / "runs.csv"
    path.write_text(runs_to_csv_text([run]), encoding="utf-8")
    assert read_runs(path)[1] == []


def test_item13_megatron_hidden_size_1e400_is_a_log_problem_not_an_overflow(tmp_path, cli, repo_root):
    original = (repo_root / "tests" / "fixtures" / "logs" / "megatron_gpt_1p3b_tp2_dp4.log").read_text()
    log = tmp_path / "m.log"
    log.write_text(re.sub(r"(hidden_size \.+ )2048", r"\g<1>1e400", original), encoding="utf-8")
    line = next(i for i, text in enumerate(log.read_text().splitlines(), start=1) if " hidden_size " in text)
    code, out, err = cli(["ingest", log, "--cluster", "dgx-a100-80gb"])
    assert code == 0 and "Traceback" not in err
    assert f"{log}:{line}: hidden_size = 1e400: column 'hidden' must be a whole number from 1 to 16,777,216" in err
    row = next(csv.DictReader(io.StringIO(out)))
    assert row["hidden"] == "" and float(row["step_time_s"]) > 0


def test_item13_a_size_flag_beyond_the_csv_range_is_not_written():
    text = MEGATRON_ITERATION.format(n=10, ms="1000.0")
    run, problems = row_from_log(parse_log_text(text, "m.log"), {**FLAGS, "hidden": 2**40}, "r", skip=0)
    assert run.hidden is None and any(f"--hidden {2**40}: column 'hidden'" in str(p) for p in problems)


def test_item13_law_file_with_a_short_samples_row_names_the_row(tmp_path, cli):
    path = save_law(EPOCH_2024.with_coefficients(EPOCH_2024.coefficients()), tmp_path / "law.yaml")
    document = yaml.safe_load(path.read_text())
    row = list(EPOCH_2024.coefficients().values())
    document["samples"] = [row, row[:4], row]  # one ragged row: numpy refused the whole array with a traceback
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(PlannerInputError, match=r"key 'samples\[1\]' has 4 values; each row needs 5"):
        load_law_file(path)
    code, out, err = cli(["optimize", "--budget", "1000gpuh", "--law", path])
    assert code == 2 and out == "" and f"{path}: key 'samples[1]'" in _one_line_error(err)


# ---------------------------------------------------------------------------------------------
# Item 10: fit-law arguments that divided by zero
# ---------------------------------------------------------------------------------------------

def test_item10_n_col_naming_the_loss_column_is_refused(tmp_path, cli):
    path = tmp_path / "points.csv"
    path.write_text("N,D,loss\n1e8,2e9,3.1\n2e8,4e9,2.9\n", encoding="utf-8")
    code, _, err = cli(["fit-law", path, "--bootstrap", "0", "--n-col", "loss"])
    assert code == 2 and "column 'loss' cannot hold both N (parameters) and the loss" in _one_line_error(err)


@pytest.mark.parametrize("delta", ["1e300", "0", "-1", "nan", "1e-300"])
def test_item10_huber_delta_outside_its_range_is_a_usage_error(tmp_path, cli, delta):
    path = tmp_path / "points.csv"
    path.write_text("N,D,loss\n1e8,2e9,3.1\n", encoding="utf-8")
    code, _, err = cli(["fit-law", path, "--huber-delta", delta])
    assert code == 2 and "argument --huber-delta: expected a finite number in [1e-09, 1]" in _one_line_error(err)
    with pytest.raises(PlannerInputError, match="--huber-delta"):
        LawFitter(huber_delta=float(delta)).fit([1e8] * 7, [2e9] * 7, [3.0] * 7)


def test_item10_bootstrap_0_means_no_intervals(tmp_path, cli):
    rng = np.random.default_rng(1)
    N = np.exp(rng.uniform(np.log(5e7), np.log(5e9), 30))
    D = N * np.exp(rng.uniform(np.log(2.0), np.log(200.0), 30))
    loss = 1.8 + 480 * N**-0.35 + 2100 * D**-0.37
    path = tmp_path / "points.csv"
    path.write_text("N,D,loss\n" + "".join(f"{n},{d},{l}\n" for n, d, l in zip(N, D, loss)), encoding="utf-8")
    code, out, err = cli(["fit-law", path, "--bootstrap", "0", "--n-starts", "5", "--json"])
    report = json.loads(out)
    assert code == 0 and report["bootstrap"] is None and "se" not in report["parameters"]["alpha"], err


def test_item10_a_fit_that_makes_no_usable_law_is_an_error_not_a_traceback(cli, shared_dir):
    """A column that is not D (here the plot's x pixel) fits a negative exponent on the Epoch data; the
    closed-form frontier is then a complex number (OverflowError, or a complex plan, before)."""
    path = shared_dir / "data" / "laws" / "chinchilla_epoch_svg_extracted.csv"
    code, _, err = cli(["fit-law", path, "--bootstrap", "0", "--d-col", "x", "--no-holdout"])
    assert code == 2 and "that is not finite, positive and falling with N and D" in _one_line_error(err)
    assert "--d-col 'x'" in err  # names the columns it fitted


# ---------------------------------------------------------------------------------------------
# Item 11: calibrate with a negative step time
# ---------------------------------------------------------------------------------------------

def test_item11_calibrate_with_a_negative_step_time_reports_the_row(tmp_path, cli, published_runs_csv):
    rows = [r for r in csv.DictReader(published_runs_csv.open()) if r["cluster"] == "dgx-a100-80gb"][:4]
    rows[1]["step_time_s"] = "-3.5"
    path = tmp_path / "cal.csv"
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    code, out, err = cli(["calibrate", path, "--cluster", "dgx-a100-80gb", "--no-write", "--folds", "2", "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert report["rows_fitted"] == 3 and "column 'step_time_s'" in report["unreadable_rows"][0]


def test_item11_calibration_residuals_are_checked_before_scipy_sees_them(a100, published_runs_csv):
    import dataclasses

    from planner.calibrate.fitting import fit
    from planner.calibrate.samples import load_samples

    runs = [r for r in read_runs(published_runs_csv)[0] if r.cluster == "dgx-a100-80gb"][:3]
    built = [dataclasses.replace(runs[0], step_time_s=-3.5, id="neg"), *runs[1:]]  # rows built in code
    samples, skipped = load_samples(built, a100)
    assert len(samples) == 2 and "step time -3.5 is not a positive finite number" in skipped[0]
    broken = [dataclasses.replace(samples[0], run=dataclasses.replace(samples[0].run, step_time_s=float("nan")))]
    with pytest.raises(PlannerInputError, match="not finite at the starting values"):
        fit(broken, a100, ["matmul_peak_fraction"])


# ---------------------------------------------------------------------------------------------
# Item 18: validate and doctor stream; results stay those of the row-by-row model
# ---------------------------------------------------------------------------------------------

def test_item18_batched_predictions_equal_simulate_row_by_row(published_runs_csv):
    runs, _ = read_runs(published_runs_csv)
    for result in predict_runs(runs):
        model, layout, cluster = run_to_config(result.run)
        single = simulate(model, layout, cluster)
        assert result.predicted["step_time_s"] == single["step_time_s"]
        assert result.predicted["mfu"] == single["mfu"] and result.predicted["fits"] == single["fits"]
        for key in ("total_bytes", "model_states_bytes"):
            assert result.predicted["memory"][key] == single["memory"][key], key


def test_item18_chunk_size_does_not_change_results(published_runs_csv):
    runs, _ = read_runs(published_runs_csv)
    whole = list(iter_predictions(runs))
    for size in (1, 7):
        chunked = list(iter_predictions(runs, chunk_rows=size))
        assert [r.predicted for r in chunked] == [r.predicted for r in whole]
        assert [(r.reason, r.inferred) for r in chunked] == [(r.reason, r.inferred) for r in whole]
    assert summarize(whole) == summarize(list(iter_predictions(runs, chunk_rows=5)))


def test_item18_streamed_json_is_what_to_json_of_the_whole_result_gives(cli, published_runs_csv):
    from planner.cli.validate import _row_json
    from planner.calibrate.error_bands import compute_bands
    from planner.report.render import json_document

    code, out, _ = cli(["validate", published_runs_csv, "--json"])
    results = predict_runs(read_runs(published_runs_csv)[0])
    expected = json_document({"rows": [_row_json(r) for r in results], "step_time": summarize(results, "step"),
                        "memory": summarize(results, "memory"), "unreadable_rows": [],
                        "skipped_rows": [{"id": r.run.id, "origin": r.run.origin, "reason": r.reason}
                                         for r in results if r.reason],
                        "error_bands": compute_bands(results)})
    assert code == 0 and out == expected + "\n"


def test_item18_spooled_table_matches_render_table():
    from planner.cli.validate import SpooledTable
    from planner.report.render import table

    rows = [["a", "long source name", 3, "x"], ["bb", "", 12345, "yy"]]
    spooled = SpooledTable(["id", "source", "n", "z"], "llrl")
    for row in rows:
        spooled.add(row)
    assert "\n".join(spooled.lines()) == table(["id", "source", "n", "z"], rows, align="llrl")


def test_item18_rows_are_read_lazily_and_a_late_bad_byte_prints_nothing(tmp_path, cli):
    path = tmp_path / "runs.csv"
    good = "\n".join([HEADER, *(ROW.format(id=i, step="1.5") for i in range(5))]) + "\n"
    path.write_bytes(good.encode() + b"late,\xff\n")
    items = iter_runs(path)
    assert next(items).id == "0"  # a row before the whole file is read
    code, out, err = cli(["validate", path])
    assert code == 2 and out == "" and f"{path}:7: not UTF-8 text (byte 0xff)" in _one_line_error(err)
    code, out, _ = cli(["doctor", path])
    assert code == 1 and f"{path}:7: not UTF-8 text (byte 0xff)" in out


def test_item18_reader_keeps_universal_newlines_and_line_numbers(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_bytes((HEADER + "\r" + ROW.format(id="a", step="1") + "\r\n" + ROW.format(id="a", step="2") + "\n").encode())
    items = list(iter_runs(path))
    assert items[0].origin == f"{path}:2"
    assert isinstance(items[1], RowProblem) and items[1].reason == "duplicate id 'a' (first at line 2)"


def test_item18_progress_only_on_a_terminal():
    from planner.cli.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress("validate", stream=stream, interval_s=0.0)
        progress.update(1000)
        progress.update(2000)
        progress.done()
    assert "planner validate: 2000 rows" in terminal.getvalue() and terminal.getvalue().endswith("\r")  # erased
    assert pipe.getvalue() == ""

