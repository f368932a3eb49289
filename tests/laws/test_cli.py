"""`planner fit-law` and `planner laws` end to end: outputs, saved laws, and every bad-input class."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from planner.laws.registry import load_law

FAST = ["--bootstrap", "0", "--n-starts", "5"]


def write_csv(path, rows, header="N,D,loss"):
    path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


@pytest.fixture
def good_rows():
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(5e7), np.log(5e9), 40))
    D = N * np.exp(rng.uniform(np.log(2.0), np.log(200.0), 40))
    L = 1.8 + 480 * N**-0.35 + 2100 * D**-0.37
    return [list(r) for r in zip(N, D, L)]


def test_fit_law_saves_a_law_that_load_law_reads(cli, tmp_path, epoch_csv):
    out = tmp_path / "law.yaml"
    code, stdout, stderr = cli(["fit-law", epoch_csv, "--drop-highest-loss", "5", "--bootstrap", "20",
                                "--out", out, "--name", "epoch-refit"])
    assert code == 0, stderr
    assert "alpha" in stdout and "extrapolation" in stdout and "C=1e+24" in stdout
    law = load_law(str(out))
    assert law.name == "epoch-refit" and law.samples.shape == (20, 5)
    assert law.coefficients()["alpha"] == pytest.approx(0.347, abs=0.01)
    low, high = law.predict_interval(7e10, 1.4e12)
    assert low < law.predict(7e10, 1.4e12) < high
    # Saved once; a second run without --force refuses and leaves the file as it was.
    before = out.read_text()
    code, _, stderr = cli(["fit-law", epoch_csv, *FAST, "--out", out])
    assert code == 2 and "--force" in stderr and out.read_text() == before


def test_fit_law_json_on_gemstones_checkpoints(cli, gemstones_hot):
    code, stdout, stderr = cli(["fit-law", gemstones_hot, "--json", "--holdout-n-above", "600M", *FAST])
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["data"]["runs"] == 22 and report["data"]["columns"]["run"] == "run_name"
    assert report["extrapolation"]["n_heldout_runs"] == 6
    assert set(report["parameters"]) == {"E", "A", "B", "alpha", "beta"}
    assert [row["C"] for row in report["frontier"]] == [1e21, 1e22, 1e23, 1e24, 1e25]


def test_laws_lists_builtins_with_sources(cli):
    code, stdout, _ = cli(["laws", "--json"])
    info = json.loads(stdout)
    assert code == 0 and info["laws"]["epoch"]["default"]
    assert info["laws"]["chinchilla"]["n_opt_exponent"] == pytest.approx(0.46, abs=0.005)
    assert all(law["source"] for law in info["laws"].values())
    code, stdout, _ = cli(["laws"])
    assert code == 0 and "Hoffmann" in stdout and "step-law" in stdout


BAD_INPUTS = {
    "missing column": ("N,tokens_x,loss", [[1e9, 2e10, 2.5]] * 10, "no token (D) or compute (C) column"),
    "non-numeric": ("N,D,loss", [[1e9, 2e10, "abc"]] + [[1e9, 2e10, 2.5]] * 9, "line 2 column 'loss'"),
    "non-positive N": ("N,D,loss", [[0, 2e10, 2.5]] + [[1e9, 2e10, 2.5]] * 9, "column 'N'"),
    "negative D": ("N,D,loss", [[1e9, -2e10, 2.5]] + [[1e9, 2e10, 2.5]] * 9, "column 'D'"),
    "NaN": ("N,D,loss", [[1e9, 2e10, "nan"]] + [[1e9, 2e10, 2.5]] * 9, "positive finite loss"),
    "too few points": ("N,D,loss", [[1e9, 2e10, 2.5], [2e9, 4e10, 2.4], [3e9, 6e10, 2.3]], "need at least 6"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, case):
    header, rows, message = BAD_INPUTS[case]
    data = write_csv(tmp_path / "runs.csv", rows, header)
    out = tmp_path / "law.yaml"
    code, stdout, stderr = cli(["fit-law", data, "--out", out, *FAST])
    assert code == 2
    assert message in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not out.exists()


def test_non_convergence_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, good_rows):
    data = write_csv(tmp_path / "runs.csv", good_rows)
    out = tmp_path / "law.yaml"
    code, _, stderr = cli(["fit-law", data, "--out", out, "--max-iter", "2", *FAST])
    assert code == 2 and "did not converge" in stderr and stderr.count("\n") == 1
    assert not out.exists()


def test_flag_errors_are_one_line(cli, tmp_path, good_rows):
    data = write_csv(tmp_path / "runs.csv", good_rows)
    for argv, message in ((["--fix", "gamma=1"], "'gamma' is not in"), (["--tie", "alpha"], "--tie"),
                          (["--loss-col", "val"], "--loss-col 'val' is not a column"),
                          (["--budgets", "1e24,lots"], "--budgets"), (["--level", "2"], "--level"),
                          (["--budgets", " , "], "--budgets"),  # printed an empty frontier table (helper-found)
                          # contradictory: a hold-out rule with the hold-out skipped (the rule was ignored)
                          (["--no-holdout", "--holdout-n-above", "1B"], "--holdout-n-above"),
                          (["--no-holdout", "--holdout-fraction", "0.3"], "--holdout-fraction"),
                          # two hold-out rules: the fraction was ignored (helper-found)
                          (["--holdout-n-above", "1B", "--holdout-fraction", "0.5"], "--holdout-fraction")):
        code, _, stderr = cli(["fit-law", data, *FAST, *argv])
        assert code == 2 and message in stderr and stderr.count("\n") == 1, argv
    code, _, stderr = cli(["fit-law", tmp_path / "absent.csv"])
    assert code == 2 and "no such data file" in stderr


@pytest.mark.parametrize("argv, message", [
    (["--fix", "E=1.8", "--fix", "E=1.9"], "--fix: E given twice"),  # the later one silently won
    (["--bound", "alpha=0.3:0.4", "--bound", "alpha=0.5:0.6"], "--bound: alpha given twice"),
    (["--fix", "alpha=0.1", "--bound", "alpha=0.3:0.4"], "outside its bound"),  # the bound was dropped
    (["--fix", "alpha=0.1", "--tie", "alpha=beta", "--bound", "beta=0.3:0.4"], "outside its bound"),
])
def test_constraints_that_contradict_are_refused(cli, tmp_path, good_rows, argv, message):
    """Helper-found: contradictory --fix/--bound were fitted with one of them silently dropped."""
    code, _, stderr = cli(["fit-law", write_csv(tmp_path / "runs.csv", good_rows), *FAST, *argv])
    assert code == 2 and message in stderr and stderr.count("\n") == 1, stderr


@pytest.mark.parametrize("argv, low, high", [
    (["--bound", "A=500:100"], 500, 100),  # A is fitted as log(A): the error showed 6.2146... > 4.6051...
    (["--bound", "A=100:200", "--bound", "B=300:400", "--tie", "A=B"], 300, 200),
    (["--bound", "alpha=0.5:0.1"], 0.5, 0.1),
])
def test_empty_bounds_are_shown_in_the_users_units(cli, tmp_path, good_rows, argv, low, high):
    code, _, stderr = cli(["fit-law", write_csv(tmp_path / "runs.csv", good_rows), *FAST, *argv])
    assert code == 2 and stderr.count("\n") == 1, stderr
    shown = stderr.rsplit("(", 1)[1].rstrip(")\n").split(" > ")
    assert [float(v) for v in shown] == pytest.approx([low, high], rel=1e-9), stderr


def test_a_tie_across_a_log_and_a_linear_parameter_is_refused(cli, tmp_path, good_rows):
    """Helper-found: a tie shares one fitted coordinate, and E is fitted as log(E): --tie alpha=E fitted
    E = exp(alpha) and called them tied."""
    code, _, stderr = cli(["fit-law", write_csv(tmp_path / "runs.csv", good_rows), *FAST, "--tie", "alpha=E"])
    assert code == 2 and "cannot tie alpha and E" in stderr and stderr.count("\n") == 1, stderr


def test_every_tie_holds(cli, tmp_path, good_rows):
    """Helper-found: --tie A=B --tie A=E kept only the last tie of A (a dict by name)."""
    code, stdout, stderr = cli(["fit-law", write_csv(tmp_path / "runs.csv", good_rows), *FAST, "--json",
                                "--tie", "A=B", "--tie", "A=E"])
    values = json.loads(stdout)["parameters"]
    assert code == 0, stderr
    assert values["A"]["value"] == pytest.approx(values["B"]["value"]) == pytest.approx(values["E"]["value"])


def test_coefficients_off_their_signs_give_one_error_line_and_no_warning(cli, tmp_path, good_rows):
    """--fix alpha=-1: the soundness check took fractional powers of negatives and cast the complex result to
    float, and numpy's ComplexWarning printed two lines on stderr before the one-line error."""
    data = write_csv(tmp_path / "runs.csv", good_rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning fails the command instead of printing
        code, _, stderr = cli(["fit-law", data, *FAST, "--fix", "alpha=-1"])
    assert code == 2 and "soundness check" in stderr and stderr.count("\n") == 1


def test_fit_law_intervals_hold_the_fitted_value(cli, epoch_csv):
    """Two resamples (seed 3) put E's, B's and beta's 90% intervals and every frontier interval above the fit's
    own value; they are widened to hold it, as LossLaw.predict_interval widens its bands (base.interval_holding)."""
    code, out, err = cli(["fit-law", epoch_csv, "--bootstrap", "2", "--seed", "3", "--no-holdout", "--json"])
    assert code == 0, err
    report = json.loads(out)
    for name, p in report["parameters"].items():
        assert p["low"] <= p["value"] <= p["high"], name
    for row in report["frontier"]:
        for key in ("N_opt", "D_opt", "tokens_per_param", "loss"):
            assert row[f"{key}_low"] <= row[key] <= row[f"{key}_high"], (row["C"], key)
    assert report["bootstrap"]["note"] is None


def test_fit_law_notes_too_few_resamples_for_an_interval(cli, epoch_csv):
    """One resample gives no interval (fewer than base.MIN_INTERVAL_SAMPLES): a note line in the fit's output,
    not a silent table without intervals; nothing on stderr."""
    code, out, err = cli(["fit-law", epoch_csv, "--bootstrap", "1", "--no-holdout", "--n-starts", "5"])
    assert code == 0 and err == ""
    note = [line for line in out.splitlines() if line.startswith("note: ")]
    assert len(note) == 1 and "fewer than the 2 an interval needs" in note[0]


@pytest.mark.parametrize("flag, value", [("--level", "0.8"), ("--seed", "7"), ("--level", "0.9"), ("--seed", "0")])
def test_bootstrap_settings_without_a_bootstrap_are_refused(cli, tmp_path, good_rows, flag, value):
    """--level and --seed set the bootstrap: given with --bootstrap 0 they did nothing and were accepted. Only a
    flag the user gave is refused (the default values are given here explicitly, and refused too); the defaults
    alone, as FAST runs them everywhere, are fine."""
    data = write_csv(tmp_path / "runs.csv", good_rows)
    code, out, stderr = cli(["fit-law", data, *FAST, "--no-holdout", flag, value])
    assert code == 2 and out == "" and stderr.count("\n") == 1 and flag in stderr and "--bootstrap 0" in stderr
    code, _, stderr = cli(["fit-law", data, "--bootstrap", "3", "--n-starts", "5", "--no-holdout", flag, value])
    assert code == 0, stderr


def test_fit_law_bootstrap_does_not_depend_on_row_order(cli, tmp_path, good_rows):
    """Rows without a run column are runs named by their line number, so the seeded resamples drew other runs
    when the same rows came in another order: the 90% interval of beta moved (e.g. [0.359, 0.383] against
    [0.360, 0.377]). The same points and seed must give the same intervals whatever the file's order."""
    noisy = [[n, d, loss * (1 + 0.01 * np.sin(7 * i))] for i, (n, d, loss) in enumerate(good_rows)]
    reports = []
    for name, rows in (("forward.csv", noisy), ("backward.csv", noisy[::-1])):
        code, out, err = cli(["fit-law", write_csv(tmp_path / name, rows), "--bootstrap", "8", "--seed", "5",
                              "--n-starts", "5", "--no-holdout", "--json"])
        assert code == 0, err
        reports.append(json.loads(out))
    for name, forward in reports[0]["parameters"].items():
        backward = reports[1]["parameters"][name]
        for key in ("low", "high", "se"):
            assert backward[key] == pytest.approx(forward[key], rel=1e-5), (name, key)


@pytest.mark.parametrize("flag, value", [("--fix", "E=nan"), ("--fix", "alpha=inf"), ("--fix", "E=1e400"),
                                         ("--bound", "alpha=nan:1"), ("--bound", "alpha=0:nan")])
def test_fit_law_refuses_a_value_that_is_not_a_number(cli, tmp_path, good_rows, flag, value):
    """--fix E=nan reported that 'the fit diverged' (with a numpy RuntimeWarning for 1e400), and --bound alpha=nan:1
    fitted as if no bound had been given: a value that is not a finite number is a one-line error naming the flag."""
    code, _, stderr = cli(["fit-law", write_csv(tmp_path / "runs.csv", good_rows), *FAST, flag, value])
    assert code == 2 and stderr.count("\n") == 1
    assert f"{flag}: expected" in stderr and value in stderr


def test_fit_law_drops_the_same_tied_point_whatever_the_row_order(cli, tmp_path, good_rows):
    """--drop-highest-loss 1 with two points at the same highest loss dropped whichever came last in the file, so
    the same rows in reverse order fitted other points and gave another alpha. A tie is broken by (N, D)."""
    rows = [list(r) for r in good_rows]
    top = max(r[2] for r in rows) + 0.1
    rows[0][2] = rows[1][2] = top
    values = []
    for name, ordered in (("forward.csv", rows), ("backward.csv", rows[::-1])):
        code, out, err = cli(["fit-law", write_csv(tmp_path / name, ordered), *FAST, "--no-holdout",
                              "--drop-highest-loss", "1", "--json"])
        assert code == 0, err
        values.append({k: p["value"] for k, p in json.loads(out)["parameters"].items()})
    for name, forward in values[0].items():
        assert values[1][name] == pytest.approx(forward, rel=1e-6), name


def test_fit_law_holds_out_the_same_tied_run_whatever_the_row_order(cli, tmp_path, good_rows):
    """The held-out 10% are the runs of largest 6ND; two runs at the same 6ND on the boundary were split by their
    line-number names, so reversing the file held out the other one and changed the extrapolation error."""
    rows = [list(r) for r in good_rows]
    order = sorted(range(len(rows)), key=lambda i: rows[i][0] * rows[i][1])
    n, d, _ = rows[order[-5]]  # the 4 dearest runs are held out (10% of 40); the 5th gets a twin in 6ND
    rows[order[-4]][0], rows[order[-4]][1] = 2 * n, d / 2
    reports = []
    for name, ordered in (("forward.csv", rows), ("backward.csv", rows[::-1])):
        code, out, err = cli(["fit-law", write_csv(tmp_path / name, ordered), *FAST, "--json"])
        assert code == 0, err
        reports.append(json.loads(out)["extrapolation"])
    assert sorted(r["N"] for r in reports[1]["rows"]) == sorted(r["N"] for r in reports[0]["rows"])
