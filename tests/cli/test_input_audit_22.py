"""Bad input left by the twenty-first session's audit and mended in the twenty-second: the rule (README) is one line
naming the file, key or flag and the expected form, exit 2, nothing written."""

import csv
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent.parent.parent / "data" / "laws" / "chinchilla_epoch_svg_extracted.csv"


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_fit_law_on_a_far_off_cell_says_one_line_that_shows_it(tmp_path):
    """A parameter count of 1e300 in one row: numpy's overflow warnings came before the "not sound" line, which did not
    show the cell. Now one line, with the data's spans (N up to 1e+300), and no law written."""
    rows = list(csv.reader(DATA.open()))
    rows[5][rows[0].index("Model Size")] = "1e300"
    data, out = tmp_path / "bad.csv", tmp_path / "law.yaml"
    with data.open("w", newline="") as stream:
        csv.writer(stream).writerows(rows)
    done = subprocess.run([sys.executable, "-m", "planner", "fit-law", str(data), "--no-holdout", "--bootstrap", "0",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    line = _one_line(done.stderr)
    assert done.returncode == 2 and "RuntimeWarning" not in done.stderr
    assert str(data) in line and "N 5.73e+07 to 1e+300" in line
    assert not out.exists()


def test_curve_files_with_a_byte_order_mark_read_as_the_other_inputs_do(tmp_path):
    """A UTF-8 BOM (Excel, Windows editors) was refused by `predict --curve-data` alone of the data readers."""
    from planner.laws.curve_data import read_curves

    laws = DATA.parent
    plain = read_curves(str(laws / "gemstones_hot_100b.jsonl"), str(laws / "gemstones_cool_end.jsonl"))
    marked = tmp_path / "hot.jsonl"
    marked.write_bytes(b"\xef\xbb\xbf" + (laws / "gemstones_hot_100b.jsonl").read_bytes())
    with_bom = read_curves(str(marked), str(laws / "gemstones_cool_end.jsonl"))
    assert len(with_bom) == len(plain) > 0


LAYOUT = "tp: 1\npp: 1\ndp: 8\nmicro_batch: 1\n"


def test_a_config_files_model_or_cluster_that_does_not_load_names_its_key(tmp_path, cli, monkeypatch):
    """The preset loader's message named --model and the cluster loader's only the value, where the value came
    from the --config file's key."""
    monkeypatch.chdir(tmp_path)
    cases = {"model": ("model: nosuch\ncluster: dgx-h100\n", "key 'model': unknown preset 'nosuch'"),
             "cluster": ("model: llama3-8b\ncluster: nosuch\n", "key 'cluster': unknown cluster 'nosuch'"),
             "folder": ("model: llama3-8b\ncluster: dgx-h100\ncluster_dir: missing\n",
                        "key 'cluster' / 'cluster_dir': unknown cluster 'dgx-h100': cluster folder missing")}
    for name, (keys, named) in cases.items():
        config = tmp_path / f"{name}.yaml"
        config.write_text(keys + LAYOUT)
        code, out, err = cli(["simulate", "--config", config])
        assert code == 2 and not out and f"--config {config}: {named}" in _one_line(err)
    # a flag that gives the value is named as the flag, as before
    code, _, err = cli(["simulate", "--config", tmp_path / "model.yaml", "--model", "nosuch2"])
    assert code == 2 and _one_line(err).startswith("planner simulate: error: --model: unknown preset 'nosuch2'")


def test_a_flag_beside_a_config_key_is_not_blamed_on_the_file(tmp_path, cli, monkeypatch):
    """The review: with the cluster in the file and a bad --cluster-dir flag (or the reverse), the error named the
    file's key; it keeps the loader's own message, which names the folder or cluster, and a message that already names
    the file is not prefixed twice."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text("model: llama3-8b\ncluster: dgx-h100\n" + LAYOUT)
    code, _, err = cli(["simulate", "--config", config, "--cluster-dir", "nodir"])
    line = _one_line(err)
    assert code == 2 and "nodir" in line and "key 'cluster'" not in line
    outside = tmp_path / "outside.yaml"
    outside.write_text("model: llama3-8b\ncluster: /etc/passwd.yaml\n" + LAYOUT)
    code, _, err = cli(["simulate", "--config", outside])
    line = _one_line(err)
    assert code == 2 and line.count("--config") == 1


def test_runs_on_different_pipeline_splits_are_different_runs():
    from planner.profile.runs_csv import run_identity

    cells = {"step_time_s": "1.5", "pp": "2", "layers": "24", "first_stage_layers": "14"}
    assert run_identity(cells) != run_identity({**cells, "first_stage_layers": "10"})
    assert run_identity(cells) == run_identity({**cells, "first_stage_layers": "14.0"})


def test_fit_law_on_a_tiny_parameter_count_names_its_line(tmp_path):
    """The review: N = 1e-300 with a compute column made D = C / 6N overflow, with a RuntimeWarning before the error.
    Now one line naming the line and the column."""
    rows = list(csv.reader(DATA.open()))
    rows[5][rows[0].index("Model Size")] = "1e-300"
    data = tmp_path / "tiny.csv"
    with data.open("w", newline="") as stream:
        csv.writer(stream).writerows(rows)
    done = subprocess.run([sys.executable, "-m", "planner", "fit-law", str(data), "--no-holdout", "--bootstrap", "0"],
                          capture_output=True, text=True, timeout=300)
    line = _one_line(done.stderr)
    assert done.returncode == 2 and f"{data} line 6: D = C / (6 N) is not finite" in line and "'Model Size'" in line
