"""User spec folders (issue 15, item 3): cluster names resolve in the working directory, then the user
folder (platformdirs; XDG_CONFIG_HOME here), then the bundled specs; `calibrate` writes to the user folder
(or --out), and the name it suggests resolves; `planner clusters` lists every spec with its origin."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from planner.specs.clusters import default_cluster_dir, load_cluster, user_cluster_dir


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh HOME and XDG_CONFIG_HOME, and a fresh working directory; returns the user spec folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    folder = user_cluster_dir()
    assert folder == tmp_path / "home" / ".config" / "planner" / "cluster_specs"
    return folder


@pytest.fixture
def runs_csv(tmp_path) -> Path:
    path = tmp_path / "runs.csv"
    path.write_text("id,source,cluster,gpus,layers,hidden,heads,seq_len,vocab,tp,pp,dp,micro_batch,global_batch,step_time_s\n"
                    + "".join(f"r{i},s{i % 2},dgx-a100-80gb,8,24,2048,16,2048,50304,{tp},1,{8 // tp},1,8,{t}\n"
                              for i, (tp, t) in enumerate(((1, 1.5), (2, 1.7), (4, 2.0), (8, 2.6)))))
    return path


def _spec_with_price(price: float) -> str:
    data = yaml.safe_load((default_cluster_dir() / "dgx-h100.yaml").read_text(encoding="utf-8"))
    data["price_per_accelerator_hour"] = price
    return yaml.safe_dump(data, sort_keys=False)


def _suggested(err: str) -> list[str]:
    match = re.search(r"\(use (--cluster .*)\)$", err.strip().splitlines()[-1])
    assert match, err
    return match.group(1).split()


def test_calibrate_writes_the_user_folder_and_the_suggested_name_resolves(home, runs_csv, cli):
    code, out, err = cli(["calibrate", runs_csv, "--cluster", "dgx-a100-80gb", "--folds", "2"])
    assert code == 0, err
    written = home / "dgx-a100-80gb.calibrated.yaml"
    assert written.is_file() and f"wrote {written}" in err
    assert _suggested(err) == ["--cluster", "dgx-a100-80gb.calibrated"]
    code, out, err = cli(["simulate", "--model", "gpt2-small", "--gpus", "8", *_suggested(err)])
    assert code == 0 and "cluster  dgx-a100-80gb.calibrated" in out, err
    listed = json.loads(cli(["clusters", "--json"])[1])["clusters"]
    assert listed["dgx-a100-80gb.calibrated"]["origin"] == "user"
    assert listed["dgx-a100-80gb.calibrated"]["path"] == str(written)
    assert listed["dgx-h100"]["origin"] == "bundled"


def test_calibrate_out_in_the_working_directory_resolves_by_name(home, runs_csv, cli):
    """The issue's report: `--out my-a100.calibrated.yaml` then `--cluster my-a100.calibrated` was unknown."""
    code, _, err = cli(["calibrate", runs_csv, "--cluster", "dgx-a100-80gb", "--folds", "2",
                        "--out", "my-a100.calibrated.yaml"])
    assert code == 0, err
    assert _suggested(err) == ["--cluster", "my-a100.calibrated"]
    assert load_cluster("my-a100.calibrated").calibration.startswith(("calibrated", "uncalibrated"))
    code, out, _ = cli(["clusters"])
    line = next(line for line in out.splitlines() if line.startswith("my-a100.calibrated "))
    assert line.rstrip().endswith("working directory")
    assert not home.exists()  # --out wrote nothing into the user folder


def test_calibrate_out_elsewhere_suggests_the_path(home, runs_csv, cli, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "mine.yaml"
    code, _, err = cli(["calibrate", runs_csv, "--cluster", "dgx-a100-80gb", "--folds", "2", "--out", target])
    assert code == 0, err
    assert _suggested(err) == ["--cluster", str(target)]
    assert Path(load_cluster(str(target)).source_file) == target


def test_search_order_working_directory_then_user_then_bundled(home, cli):
    bundled = load_cluster("dgx-h100").price_per_accelerator_hour
    home.mkdir(parents=True)
    (home / "dgx-h100.yaml").write_text(_spec_with_price(1.25))
    assert load_cluster("dgx-h100").price_per_accelerator_hour == 1.25 != bundled
    Path("dgx-h100.yaml").write_text(_spec_with_price(0.5))
    assert load_cluster("dgx-h100").price_per_accelerator_hour == 0.5
    document = json.loads(cli(["clusters", "--json"])[1])
    assert [entry["origin"] for entry in document["search_order"]] == ["working directory", "user", "bundled"]
    assert document["clusters"]["dgx-h100"]["origin"] == "working directory"
    assert document["clusters"]["dgx-h100"]["hides"] == ["user", "bundled"]
    row = next(line for line in cli(["clusters"])[1].splitlines() if line.startswith("dgx-h100 "))
    assert row.rstrip().endswith("working directory (hides user, bundled)")
    # --cluster-dir replaces the search path: only that folder
    assert load_cluster("dgx-h100", default_cluster_dir()).price_per_accelerator_hour == bundled


def test_other_yaml_in_the_working_directory_is_not_listed(home, cli):
    Path("law.yaml").write_text("form: chinchilla\nE: 1.8\n")
    Path("notes.yaml").write_text("- a list\n")
    code, out, _ = cli(["clusters", "--json"])
    assert code == 0 and not {"law", "notes"} & set(json.loads(out)["clusters"])


def test_a_broken_spec_that_hides_a_bundled_name_is_not_listed_as_the_bundled_one(home, cli):
    """CLI-audit-found: a binary ./dgx-h100.yaml was listed as the bundled dgx-h100 (exit 0) while simulate read the
    broken file (exit 2). clusters now says what every command reads: that file, which does not load."""
    Path("dgx-h100.yaml").write_bytes(bytes(range(128, 228)))
    code, _, err = cli(["clusters"])
    assert code == 2 and "dgx-h100.yaml" in err and err.count("\n") == 1
    code, _, err = cli(["simulate", "--model", "gpt2-small", "--gpus", "8", "--cluster", "dgx-h100"])
    assert code == 2 and "dgx-h100.yaml" in err


def test_a_folder_named_as_a_spec_hides_nothing(home, cli):
    """A folder ./dgx-h100.yaml/ is no spec: load_cluster reads the bundled one, and clusters says so (review-found:
    the rule above listed the folder)."""
    Path("dgx-h100.yaml").mkdir()
    code, out, _ = cli(["clusters", "--json"])
    assert code == 0 and json.loads(out)["clusters"]["dgx-h100"]["origin"] == "bundled"


def test_unknown_cluster_names_the_search_path_and_suggests(home, cli):
    code, out, err = cli(["simulate", "--model", "gpt2-small", "--gpus", "8", "--cluster", "h100"])
    assert code == 2 and out == ""
    assert "did you mean 'dgx-h100'?" in err and str(home) in err and "working directory" in err


def _clusters_row(out: str, name: str) -> list[str]:
    header, _, *rows = out.splitlines()
    column = header.index("16-bit TFLOP/s")
    row = next(r for r in rows if r.split()[:1] == [name])
    return [row, row[column:column + len("16-bit TFLOP/s")].strip()]


def test_clusters_16_bit_column_is_16_bit_and_precise(home, cli):
    """The 16-bit TFLOP/s column shows a spec's 16-bit peak to enough figures (cpu-local's 13.4 GFLOP/s is not
    0.0) and "-" for an accelerator with an fp32 peak alone (not its fp32 peak under a 16-bit label)."""
    data = yaml.safe_load((default_cluster_dir() / "dgx-h100.yaml").read_text(encoding="utf-8"))
    data["accelerator"]["peak_flops"] = {"fp32": "67TFLOPs"}
    (home / "fp32-only.yaml").parent.mkdir(parents=True, exist_ok=True)
    (home / "fp32-only.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    code, out, err = cli(["clusters"])
    assert code == 0, err
    assert _clusters_row(out, "fp32-only")[1] == "-"
    cpu_bf16 = load_cluster("cpu-local").accelerator.peak_flops.bf16
    assert float(_clusters_row(out, "cpu-local")[1]) == pytest.approx(cpu_bf16 / 1e12, rel=5e-3)
    h100_bf16 = load_cluster("dgx-h100").accelerator.peak_flops.bf16
    assert float(_clusters_row(out, "dgx-h100")[1].replace(",", "")) == pytest.approx(h100_bf16 / 1e12, rel=1e-3)


def test_cluster_dir_naming_a_file_says_not_a_folder(home, cli, tmp_path):
    a_file = tmp_path / "specs.yaml"
    a_file.write_text("name: x\n", encoding="utf-8")
    code, out, err = cli(["clusters", "--cluster-dir", a_file])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "is not a folder" in err and "does not exist" not in err
    code, _, err = cli(["clusters", "--cluster-dir", tmp_path / "absent"])
    assert code == 2 and "does not exist" in err
