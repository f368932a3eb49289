"""User-surface fixes of `planner fit-law` and `planner predict` with a moe law: what they say matches what they do."""

from __future__ import annotations

import json

import numpy as np
import pytest

FAST = ["--bootstrap", "0", "--n-starts", "5", "--no-holdout"]


def _rows(floor=1.8, n=40, seed=0):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(5e7), np.log(5e9), n))
    D = N * np.exp(rng.uniform(np.log(2.0), np.log(200.0), n))
    return list(zip(N, D, floor + 480 * N**-0.35 + 2100 * D**-0.37))


def _write(path, rows, header="N,D,loss"):
    path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


# 1. predict with the moe law: compute_flop is eq. 10 on the active parameters, and the definition says so.
def test_predict_moe_names_eq_10_as_its_compute_definition(cli):
    argv = ["predict", "--law", "krajewski-moe", "--active-params", "7B", "--tokens", "137.6B", "--granularity", "32"]
    code, out, err = cli([*argv, "--json"])
    assert code == 0, err
    definition = json.loads(out)["law"]["c_definition"]
    assert "eq. 10" in definition and "active" in definition and not definition.startswith("6ND")
    code, text, err = cli(argv)
    assert code == 0, err
    assert f"C = {definition}" in text and "C = 6ND on total N" not in text


def test_predict_dense_keeps_its_6nd_definition(cli):
    code, out, err = cli(["predict", "--law", "epoch", "--params", "1B", "--tokens", "20B", "--json"])
    assert code == 0, err
    assert json.loads(out)["law"]["c_definition"] == "6ND"


# 2. a data error names the physical line its record starts on, after a quoted multi-line cell.
def test_fit_law_line_numbers_count_physical_lines(cli, tmp_path):
    rows = _rows()
    data = tmp_path / "runs.csv"
    body = ["run,N,D,loss", '"first\nrun",' + ",".join(str(v) for v in rows[0]), "",
            *(f"r{i},{n},{d},{l}" for i, (n, d, l) in enumerate(rows[1:5])), "r9,1e8,2e9,oops"]
    data.write_text("\n".join(body) + "\n")  # the bad record is record 7, on physical line 9
    code, _, err = cli(["fit-law", str(data), *FAST])
    assert code == 2 and "line 9" in err and len(err.strip().splitlines()) == 1, err


# 3. flags the moe fit does not use are refused, not ignored.
@pytest.mark.parametrize("flag, value", [("--max-iter", "50"), ("--n-starts", "3"), ("--budgets", "1e21"),
                                         ("--n-definition", "total")])
def test_fit_law_moe_refuses_flags_it_ignores(cli, tmp_path, flag, value):
    data, out = tmp_path / "moe.csv", tmp_path / "law.yaml"
    data.write_text("run,active_params,total_params,granularity,tokens,loss\n")  # refused before it is read
    code, stdout, err = cli(["fit-law", str(data), "--form", "moe", flag, value, "--out", str(out)])
    assert code == 2 and f"{flag}: not supported with --form moe" in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists() and stdout == ""


# 4. --out naming the data file is refused even with --force: the runs would be replaced by the law.
@pytest.mark.parametrize("spelling", ["same", "dotted"])
def test_fit_law_refuses_out_onto_its_data(cli, tmp_path, spelling):
    data = _write(tmp_path / "runs.csv", _rows())
    before = data.read_text()
    out = str(data) if spelling == "same" else str(tmp_path / "." / "runs.csv")
    code, _, err = cli(["fit-law", str(data), *FAST, "--out", out, "--force"])
    assert code == 2 and "--out" in err and len(err.strip().splitlines()) == 1, err
    assert data.read_text() == before


# 5. a coefficient left on a bound is reported, with the bound that set it.
def _warnings(cli, data, *extra):
    code, out, err = cli(["fit-law", str(data), *FAST, "--json", *extra])
    assert code == 0, err
    return json.loads(out)["warnings"]


def test_fit_law_warns_when_a_user_bound_sets_a_coefficient(cli, tmp_path):
    data = _write(tmp_path / "runs.csv", _rows(floor=1.8))
    (line,) = [w for w in _warnings(cli, data, "--bound", "alpha=:0.33") if "bound" in w]
    assert line.startswith("alpha sits at its upper bound 0.33 ") and "--bound" in line and "not the data" in line
    code, text, _ = cli(["fit-law", str(data), *FAST, "--bound", "alpha=:0.33"])
    assert code == 0 and f"warning: {line}" in text


def test_fit_law_warns_when_the_default_floor_bound_sets_e(cli, tmp_path):
    rows = _rows(floor=0.0)
    data = _write(tmp_path / "runs.csv", rows)
    (line,) = [w for w in _warnings(cli, data) if "bound" in w]
    smallest = min(r[2] for r in rows)
    assert line.startswith(f"E sits at its lower bound {0.1 * smallest:.6g} ") and "default floor bound" in line, line


def test_fit_law_gives_no_bound_warning_for_an_interior_fit(cli, tmp_path):
    data = _write(tmp_path / "runs.csv", _rows(floor=1.8))
    assert not [w for w in _warnings(cli, data) if "bound" in w]


# 6. repeated points: within a run two losses at one checkpoint are refused; elsewhere they are named.
def test_fit_law_refuses_two_losses_for_one_checkpoint_of_a_run(cli, tmp_path):
    rows = [(f"r{i}", n, d, loss) for i, (n, d, loss) in enumerate(_rows())]
    rows.append(("r3", rows[3][1], rows[3][2], rows[3][3] + 0.5))  # line 42: r3 again, another loss
    data = _write(tmp_path / "runs.csv", rows, header="run,N,D,loss")
    code, out, err = cli(["fit-law", str(data), *FAST])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "line 42: run 'r3'" in err and "line 5 gives it" in err


def test_fit_law_names_repeated_points_it_keeps(cli, tmp_path):
    rows = _rows()
    rows += [rows[0], (rows[1][0], rows[1][1], rows[1][2] * 1.01)]  # lines 42, 43
    warnings = _warnings(cli, _write(tmp_path / "runs.csv", rows))
    assert "line 42 repeats line 2 (N, D and loss): the point is fitted twice" in warnings, warnings
    assert any(w.startswith("lines 3 and 43 have the same N=") and "seed replicates" in w for w in warnings), warnings


def _moe_rows(c: float, rows=40, seed=3):
    """Points of Krajewski et al. 2024 eq. 9 with Table 1's coefficients and the floor c given."""
    from planner.laws.moe import KRAJEWSKI_2024

    law = type(KRAJEWSKI_2024)(**{**KRAJEWSKI_2024.__dict__, "c": c})
    rng = np.random.default_rng(seed)
    out = []
    for i in range(rows):
        active = float(np.exp(rng.uniform(np.log(3e6), np.log(9e7))))
        G, D = float(rng.choice([1, 2, 4, 8, 16])), float(np.exp(rng.uniform(np.log(16e9), np.log(130e9))))
        out.append((f"r{i}", active, 43 * active, G, D, float(law.loss(43 * active, D, G))))
    return out


def test_fit_law_moe_warns_when_its_floor_bound_sets_c(cli, tmp_path):
    """fit-law --form moe said nothing when the floor 0.1 x the smallest loss set c (the dense fits warn)."""
    header = "run,active_params,total_params,granularity,tokens,loss"
    data = _write(tmp_path / "moe.csv", _moe_rows(c=1e-3), header=header)
    code, out, err = cli(["fit-law", str(data), "--form", "moe", "--json"])
    assert code == 0, err
    (line,) = [w for w in json.loads(out)["warnings"] if "bound" in w]
    assert line.startswith("c sits at its lower bound") and "default floor bound" in line, line
    code, text, _ = cli(["fit-law", str(data), "--form", "moe"])
    assert f"warning: {line}" in text
    interior = _write(tmp_path / "interior.csv", _moe_rows(c=0.47), header=header)
    code, out, _ = cli(["fit-law", str(interior), "--form", "moe", "--json"])
    assert code == 0 and not any("bound" in w for w in json.loads(out)["warnings"])


class _ClosedPipe:
    """stdout of `planner fit-law ... | head -0`: the reader has gone."""

    def write(self, text):
        raise BrokenPipeError

    def flush(self):
        raise BrokenPipeError

    def fileno(self):
        raise OSError


def test_fit_law_saves_its_out_file_before_a_closed_pipe_ends_it(tmp_path, monkeypatch):
    """`fit-law DATA --out law.yaml | head -2` exited 141 with no law.yaml: the report was printed first and the
    closed pipe ended the command before the save. The law is written first."""
    from planner.cli import main
    from planner.laws.law_file import load_law_file

    data, out = _write(tmp_path / "runs.csv", _rows()), tmp_path / "law.yaml"
    monkeypatch.setattr("sys.stdout", _ClosedPipe())
    assert main(["fit-law", str(data), *FAST, "--out", str(out)]) != 0
    assert load_law_file(out).coefficients()["alpha"] > 0
