"""Bad input found by the twenty-first session's read-only audit of every subcommand: each case once gave a traceback
(exit 70), a hang, a half-written file, a silently dropped or ignored value, or a misleading message. The rule
(README): one line naming the file, key or flag and the expected form, exit 2, nothing written."""

import csv

import pytest

from planner.search.space import family_models


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("key, value, named", [
    ("layers", 10**23, "key 'layers': Input should be less than or equal to 4096"),  # numpy OverflowError before
    ("layers", 2**63, "key 'layers': Input should be less than or equal to 4096"),  # never finished before
    ("vocab", 10**23, "key 'vocab': Input should be less than or equal to 2147483648"),
    ("hidden", 2**30, "key 'hidden': Input should be less than or equal to 16777216"),
])
def test_a_model_file_beyond_the_model_bounds_is_refused(tmp_path, cli, key, value, named):
    model = {"layers": 32, "hidden": 4096, "heads": 32, "seq_len": 4096, "vocab": 32000, "mlp": "swiglu", "ffn": 11008}
    model[key] = value
    path = tmp_path / "m.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in model.items()))
    code, _, err = cli(["optimize", "--model", path, "--tokens", "1T", "--gpus", "64"])
    assert code == 2 and f"{path}: {named}" in _one_line(err)


def test_calibrate_writes_no_spec_from_a_file_with_an_unreadable_row(tmp_path, cli, published_runs_csv):
    rows = list(csv.DictReader(published_runs_csv.open()))
    first_h100 = next(i for i, r in enumerate(rows) if r["cluster"] == "dgx-h100")
    rows[first_h100]["gpus"] = "abc"
    path = tmp_path / "runs.csv"
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    spec = tmp_path / "h100.yaml"
    code, _, err = cli(["calibrate", path, "--cluster", "dgx-h100", "--out", spec])
    assert code == 2 and f"{path}:{first_h100 + 2}: column 'gpus'" in _one_line(err) and "--no-write" in err
    assert not spec.exists()


def test_calibrate_refuses_an_out_file_that_is_no_cluster_spec(tmp_path, cli, published_runs_csv):
    code, _, err = cli(["calibrate", published_runs_csv, "--cluster", "dgx-h100", "--out", tmp_path / "spec.txt"])
    assert code == 2 and "a cluster spec is a .yaml (or .yml) file" in _one_line(err)
    assert not (tmp_path / "spec.txt").exists()


@pytest.mark.parametrize("command", ["validate", "doctor"])
def test_a_missing_cluster_folder_is_one_line(tmp_path, cli, published_runs_csv, command):
    code, out, err = cli([command, published_runs_csv, "--cluster-dir", tmp_path / "nonexist"])
    assert code == 2 and out == "" and "--cluster-dir" in _one_line(err) and "does not exist" in err


@pytest.mark.parametrize("argv, flag", [
    (["optimize", "--budget", "１０gpuh"], "--budget"),
    (["optimize", "--model", "llama3-8b", "--gpus", "8", "--tokens", "１T"], "--tokens"),
    (["predict", "--law", "epoch", "--params", "٧B", "--tokens", "1T"], "--params"),
    (["optimize", "--model", "llama3-8b", "--gpus", "8", "--framework", "megatron,,fsdp"], "--framework"),
    (["optimize", "--model", "llama3-8b", "--gpus", "8", "--framework", "megatron,"], "--framework"),
    (["simulate", "--list-models", "--gpus", "8"], "--gpus"),
])
def test_malformed_flag_values_are_refused_not_read_or_dropped(cli, argv, flag):
    code, _, err = cli(argv)
    assert code == 2 and flag in _one_line(err)


def test_fit_law_refuses_an_empty_budget_item(cli, shared_dir):
    path = shared_dir / "data" / "laws" / "chinchilla_epoch_svg_extracted.csv"
    code, _, err = cli(["fit-law", path, "--budgets", "1e21,,1e22", "--bootstrap", "0"])
    assert code == 2 and "--budgets: an empty item" in _one_line(err)


def test_params_far_above_the_family_names_its_largest_member(cli):
    largest = max(m.total_params for m in family_models(4096, 32000, 0, float("inf")))
    code, _, err = cli(["optimize", "--params", "1e29", "--tokens", "1T", "--gpus", "64"])
    assert code == 2 and f"nearest member is {round(largest / 1e9)}B" in _one_line(err)


def test_an_empty_config_file_is_refused(tmp_path, cli):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    code, _, err = cli(["simulate", "--config", path, "--model", "llama2-7b", "--gpus", "8"])
    assert code == 2 and "(the file is empty)" in _one_line(err)


@pytest.mark.parametrize("flag, make, why", [
    ("--keep-logs", "file", "is not a folder"),
    ("--work-dir", "file", "is not a folder"),
    ("--work-dir", None, "does not exist"),
])
def test_profile_checks_its_folders_before_making_any(tmp_path, cli, flag, make, why):
    pytest.importorskip("deepspeed")
    target = tmp_path / "target"
    if make == "file":
        target.write_text("x")
    out_dir = tmp_path / "out" / "sub"
    code, _, err = cli(["profile", "--name", "p", "--grid", "ci", "--out-dir", out_dir, "--world-sizes", "1",
                        "--zero", "0", "--steps", "1", "--warmup", "0", flag, target])
    assert code == 2 and f"{flag} {target}: {why}" in _one_line(err)
    assert not out_dir.exists()
