"""Reading law data: the shared formats out of the box, configurable columns, runs and errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from planner.errors import PlannerInputError
from planner.laws.data import read_loss_data, read_moe_data


def test_epoch_csv_derives_tokens_from_flops(epoch_csv):
    data = read_loss_data(str(epoch_csv))
    assert data.loss.size == 245 and data.n_runs == 245       # one point per run
    assert data.columns == {"n": "Model Size", "c": "Training FLOP", "loss": "loss"}
    # First row of the file: N = 6795600349.29, C = 9.99385e18 -> D = C / (6 N).
    assert data.D[0] == pytest.approx(9.993852799709755e18 / (6 * 6795600349.289497), rel=1e-12)


def test_a_named_compute_column_is_used_over_a_tokens_column_found_by_name(tmp_path):
    """Helper-found: with columns N, D, C, `--c-col C` was dropped for the D column found by name (the fit
    said 'd=D' and took the tokens from it); both named at once is bad input."""
    path = tmp_path / "runs.csv"
    path.write_text("N,D,C,loss\n1e8,2e9,6e18,3.0\n2e8,4e9,2.4e19,2.8\n")
    data = read_loss_data(str(path), c_col="C")
    assert data.columns == {"n": "N", "c": "C", "loss": "loss"}
    assert data.D == pytest.approx(np.array([6e18 / (6 * 1e8), 2.4e19 / (6 * 2e8)]))  # C / 6N, not column D
    assert read_loss_data(str(path)).columns["d"] == "D"  # none named: the tokens column, as documented
    with pytest.raises(PlannerInputError, match="--d-col and --c-col"):
        read_loss_data(str(path), d_col="D", c_col="C")


def test_gemstones_checkpoints_group_into_runs(gemstones_hot):
    data = read_loss_data(str(gemstones_hot))
    assert data.n_runs == 22 and data.loss.size == 770
    final = data.final_points()
    assert final.sum() == 22 and np.all(data.D[final] == data.D.max())
    run = data.run_names.index("PyGemma-2048x27_pretrain")
    assert data.run_compute()[run] == pytest.approx(6 * 1904850944 * 350119526400, rel=1e-12)


def test_configurable_columns_and_count_syntax(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("size,toks,val,name\n70M,1.4B,3.1,a\n70M,2.8B,3.0,a\n1B,20B,2.6,b\n")
    data = read_loss_data(str(path), n_col="size", d_col="toks", loss_col="val", run_col="name")
    assert np.allclose(data.N, [7e7, 7e7, 1e9]) and np.allclose(data.D, [1.4e9, 2.8e9, 2e10])
    assert data.n_runs == 2 and list(data.run) == [0, 0, 1]


@pytest.mark.parametrize("text, message", [
    ("N,D,loss\n", "no data rows"),
    ('{"N": 1e9, "D": 2e10, "loss": 2.5}\n{"N": 1e9,\n', "line 2: not valid JSON"),
    ("N,D,loss\n1e9,2e10,\n", "line 2 column 'loss': empty"),
    ("N,D,loss\n1e9,two,2.5\n", "line 2 column 'D'"),
    ("params,loss\n1e9,2.5\n", "no token (D) or compute (C) column"),
    # A run trains one model: a second N in a run was fitted as that run; a null run name made a run "None".
    ("N,D,loss,run\n1e9,2e10,2.5,a\n2e9,4e10,2.4,a\n", "line 3: run 'a' has N=2e+09, but line 2 gives it N=1e+09"),
    ('{"N": 1e9, "D": 2e10, "loss": 2.5, "run": null}\n', "line 1 column 'run': empty"),
])
def test_errors_name_file_line_and_column(tmp_path, text, message):
    path = tmp_path / ("runs.jsonl" if text.startswith("{") else "runs.csv")
    path.write_text(text)
    with pytest.raises(PlannerInputError, match=re.escape(message)):
        read_loss_data(str(path))


def test_a_row_with_more_cells_than_the_header_is_refused(tmp_path):
    """'70000000,1,400,000,000,2.1' (a thousands separator) was read as N = 7e7, D = 1, loss = 400 with the rest
    silently dropped: a row longer than the header has shifted cells, so it is an error naming the line."""
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss\n1e8,2e9,3.1\n70000000,1,400,000,000,2.1\n")
    with pytest.raises(PlannerInputError, match=r"line 3: 6 cells but the header names 3 columns"):
        read_loss_data(str(path))


def test_moe_points_of_other_granularities_are_not_repeats(tmp_path):
    """Without a run column, rows at one total N and D but another granularity (another model) were warned about as
    "seed replicates" of each other; the MoE shape columns are part of what makes a point."""
    path = tmp_path / "moe.csv"
    path.write_text("total_params,active_params,granularity,D,loss\n"
                    "8.6e7,2e6,1,1.6e10,3.91\n8.6e7,2e6,2,1.6e10,3.82\n8.6e7,2e6,2,1.6e10,3.83\n")
    data, _, granularity = read_moe_data(str(path))
    assert list(granularity) == [1.0, 2.0, 2.0]
    assert len(data.notes) == 1 and "lines 3 and 4 have the same N" in data.notes[0], data.notes


def test_a_moe_run_with_a_second_shape_names_its_columns(tmp_path):
    """The review: a run whose granularity changes was refused with bare tuples, and two 'nan' cells counted as
    two shapes (NaN equals no NaN) before the cell itself was refused by name."""
    path = tmp_path / "moe.csv"
    header = "run,total_params,active_params,granularity,D,loss\n"
    path.write_text(header + "r,8e7,2e6,1,1e10,3.9\nr,8e7,2e6,2,2e10,3.8\n")
    with pytest.raises(PlannerInputError, match=re.escape("line 3: run 'r' has active_params=2000000.0, granularity=2.0, "
                                                          "but line 2 gives it active_params=2000000.0, granularity=1.0")):
        read_moe_data(str(path))
    path.write_text(header + "r,8e7,nan,1,1e10,3.9\nr,8e7,nan,1,2e10,3.8\n")
    with pytest.raises(PlannerInputError, match="line 2 column 'active_params'"):
        read_moe_data(str(path))
