"""Fuzz runs CSVs: mutated cells, rows and headers, and arbitrary bytes (issue 7, part 2).

`read_runs` keeps what parses and reports the rest with file:line; `validate` and `doctor` turn the
file into a report or a one-line error; a row's cluster cell never reaches a file outside the spec
folder or the working directory.
"""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from planner.errors import PlannerInputError
from planner.profile.runs_csv import COLUMNS, read_runs

EXAMPLES = settings.default.max_examples
HEADER = ["id", "source", "cluster", "gpus", "layers", "hidden", "heads", "kv_heads", "ffn", "mlp", "seq_len", "vocab",
          "tp", "pp", "dp", "cp", "vpp", "zero", "offload", "micro_batch", "global_batch", "recompute", "seq_parallel",
          "dtype", "step_time_s", "mem_gib", "notes"]
ROWS = [
    ["1", "sc21", "dgx-a100-80gb", "32", "24", "2304", "24", "24", "9216", "gelu", "2048", "51200", "1", "1", "32", "1",
     "1", "0", "none", "16", "512", "full", "0", "fp16", "3.528", "", "table 1"],
    ["2", "sc21", "dgx-a100-80gb", "64", "30", "3072", "32", "32", "12288", "gelu", "2048", "51200", "2", "1", "32", "1",
     "1", "0", "none", "16", "512", "full", "0", "fp16", "3.697", "", ""],
    ["3", "tiny", "cpu-local", "2", "2", "256", "4", "4", "1024", "gelu", "128", "8192", "1", "1", "2", "1", "1", "1",
     "none", "2", "4", "none", "0", "fp32", "0.3357", "0.0865", "profile"],
    ["4", "tiny", "cpu-local", "1", "2", "256", "4", "", "", "swiglu", "128", "8192", "", "", "", "", "", "3",
     "optimizer", "1", "1", "selective", "", "fp32", "0.2", "", ""],
]
CELL_JUNK = ["", " ", "0", "-1", "1.5", "1e400", "-1e400", "nan", "NaN", "inf", "-inf", "1e-320", "99999999999999999999",
             "1" + "0" * 400, "x", "\u2603", "\x00", '"', '""', "a,b", "\n", "0x10", "1_000", "+3", "  7  ",
             "../../../etc/passwd.yaml", "/etc/hostname.yaml", "../clusters/cpu-local", "clusters/cpu-local.yaml",
             "cpu-local", "dgx-h100", "no-such-cluster", "spec.yaml", "optimizer+params", "full", "fp8", "swiglu"]
CELL = st.sampled_from(CELL_JUNK) | st.text(max_size=8)


def _csv(rows) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


@st.composite
def mutated_csvs(draw) -> str:
    header = list(HEADER)
    rows = [list(row) for row in draw(st.lists(st.sampled_from(ROWS), min_size=0, max_size=6))]
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["cell", "cell", "cell", "truncate", "extend", "header", "drop-column",
                                       "duplicate-id", "blank-line"]))
        if action == "header":
            header[draw(st.integers(0, len(header) - 1))] = draw(st.sampled_from(list(COLUMNS) + ["", "Step_Time_S", "extra"]))
        elif action == "drop-column":
            index = draw(st.integers(0, len(header) - 1))
            header.pop(index)
            for row in rows:
                if index < len(row):
                    row.pop(index)
        elif not rows:
            continue
        else:
            row = rows[draw(st.integers(0, len(rows) - 1))]
            if action == "cell" and row:
                row[draw(st.integers(0, len(row) - 1))] = draw(CELL)
            elif action == "truncate":
                del row[draw(st.integers(0, len(row))):]
            elif action == "extend":
                row.append(draw(CELL))
            elif action == "duplicate-id":
                rows.append(list(row))
            elif action == "blank-line":
                rows.insert(draw(st.integers(0, len(rows))), [])
    return _csv([header] + rows)


def _check_runs_file(path, cli_contract) -> None:
    try:
        runs, problems = read_runs(path)
    except PlannerInputError as error:
        assert "\n" not in str(error)
    else:
        for problem in problems:
            assert str(problem).startswith(f"{path}:") and "\n" not in str(problem), problem
    for argv in (["validate", path], ["validate", path, "--json"], ["doctor", path],
                 ["doctor", path, "--cluster-dir", "clusters"]):
        outcome = cli_contract(argv)
        # Whatever the cells say, no file outside the spec folder and the working directory was read.
        assert "root:" not in outcome.out and "passwd" not in outcome.err.replace("passwd.yaml", "")


@settings(max_examples=EXAMPLES * 2)
@given(text=mutated_csvs())
def test_mutated_runs_csv(text, case_dir, cli_contract):
    with case_dir() as folder:
        path = folder / "mutated.csv"
        path.write_text(text, encoding="utf-8")
        _check_runs_file("mutated.csv", cli_contract)


@settings(max_examples=max(20, EXAMPLES // 2))
@given(data=st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_arbitrary_bytes_as_a_runs_csv(data, case_dir, cli_contract):
    with case_dir() as folder:
        (folder / "bytes.csv").write_bytes(data)
        _check_runs_file("bytes.csv", cli_contract)
