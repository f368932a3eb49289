"""Safe file handling (issue 7, part 3): YAML only through the safe, bounded loader; outputs written
atomically and never over an existing file without --force; names read from data files never reach
a file outside the spec folder or the working directory; inputs that are not sane files refused."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import pytest
import yaml

from planner import io as planner_io
from planner.errors import PlannerInputError
from planner.specs.hardware import load_cluster_file
from planner.specs.clusters import default_cluster_dir, load_cluster
from planner.io import load_yaml, read_input_text, write_text_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC = default_cluster_dir() / "dgx-a100-80gb.yaml"


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------

def test_no_module_loads_yaml_unsafely():
    unsafe = re.compile(r"yaml\.(load|unsafe_load|full_load|load_all)\(|Loader\s*=|yaml\.(Unsafe|Full)?Loader\b")
    offenders = [f"{path.relative_to(REPO_ROOT)}:{number}" for path in sorted((REPO_ROOT / "planner").rglob("*.py"))
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                 if unsafe.search(line)]
    assert offenders == []


def test_python_tags_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n", encoding="utf-8")
    with pytest.raises(PlannerInputError, match=r"evil\.yaml:1: invalid YAML \(could not determine a constructor"):
        load_cluster_file(path)


def test_alias_bomb_is_refused_in_milliseconds():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 20)]  # 10^20 values
    started = time.perf_counter()
    with pytest.raises(PlannerInputError, match=r"bomb\.yaml:\d+: YAML expands to more than"):
        load_yaml("\n".join(lines), "bomb.yaml")
    assert time.perf_counter() - started < 1.0


def test_moderate_aliases_are_fine():
    data = load_yaml("base: &b {x: 1}\none: *b\ntwo: {<<: *b, y: 2}\n", "ok.yaml")
    assert data == {"base": {"x": 1}, "one": {"x": 1}, "two": {"x": 1, "y": 2}}


@pytest.mark.parametrize("text, fragment", [
    ("[" * 10_000 + "]" * 10_000, "nested more than"),
    ("a: &a [1, *a]\n", "recursive"),
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' (first at line 1)"),
    ("k: \x00\n", "control character 0x00"),
])
def test_hostile_yaml_gives_one_line_errors(text, fragment):
    with pytest.raises(PlannerInputError) as caught:
        load_yaml(text, "f.yaml")
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_yaml_size_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(planner_io, "MAX_YAML_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("x: " + "y" * 2000 + "\n", encoding="utf-8")
    with pytest.raises(PlannerInputError, match="more than the 1,000 accepted for a cluster spec"):
        load_cluster_file(path)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, fragment", [
    ("", "empty name"), (".", "is a folder"), ("/dev/zero", "not a regular file"), ("a\x00b", "expected a"),
    ("missing.csv", "no such"), ("x" * 5000, "cannot read"),
])
def test_inputs_that_are_not_sane_files(tmp_path, monkeypatch, name, fragment):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PlannerInputError, match=re.escape(fragment)):
        read_input_text(name, "runs file")


def test_input_size_is_bounded(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("id\n" + "x\n" * 600, encoding="utf-8")
    with pytest.raises(PlannerInputError, match="more than the 1,000 accepted"):
        read_input_text(path, "runs file", limit=1000)


def test_validate_refuses_a_device_instead_of_reading_forever(cli):
    code, _, err = cli(["validate", "/dev/zero"])
    assert code == 2 and "not a regular file" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------

def test_second_write_without_force_fails_and_keeps_the_first(tmp_path):
    path = tmp_path / "out.yaml"
    write_text_atomic(path, "first\n")
    with pytest.raises(PlannerInputError, match="already exists; pass --force"):
        write_text_atomic(path, "second\n")
    assert path.read_bytes() == b"first\n"
    write_text_atomic(path, "second\n", force=True)
    assert path.read_bytes() == b"second\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.yaml"]  # no temporary files left


def test_interrupted_overwrite_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "out.yaml"
    path.write_bytes(b"old\n")

    def crash(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(path, "new\n", force=True)
    assert path.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.yaml"]


def test_interrupted_new_write_leaves_nothing(tmp_path, monkeypatch):
    def crash(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "link", crash)
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(tmp_path / "new.yaml", "text\n")
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_appears_during_the_write_is_not_overwritten(tmp_path, monkeypatch):
    path = tmp_path / "out.csv"
    real_link = os.link

    def racing_link(source, target):
        Path(target).write_bytes(b"someone else's\n")  # another process wins the race
        return real_link(source, target)

    monkeypatch.setattr(os, "link", racing_link)
    with pytest.raises(PlannerInputError, match="already exists"):
        write_text_atomic(path, "mine\n")
    assert path.read_bytes() == b"someone else's\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_written_files_get_the_usual_permissions(tmp_path):
    old_umask = os.umask(0o022)
    try:
        new = write_text_atomic(tmp_path / "new.yaml", "x\n")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644  # not mkstemp's 0600
        kept = tmp_path / "kept.yaml"
        kept.write_text("x\n")
        kept.chmod(0o640)
        write_text_atomic(kept, "y\n", force=True)
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    finally:
        os.umask(old_umask)


@pytest.mark.parametrize("make, fragment", [
    (lambda d: d, "is a folder"),
    (lambda d: (d / "file").write_text("x") and d / "file" / "out.yaml", "cannot write"),
    (lambda d: "", "empty name"),
])
def test_unwritable_targets_are_one_line_errors(tmp_path, make, fragment):
    with pytest.raises(PlannerInputError, match=fragment):
        write_text_atomic(make(tmp_path), "x\n")


LAW_DATA = "run_name,N,D,loss\n" + "".join(
    f"r{i},{n:g},{n * 20:g},{1.8 + 400 / n ** 0.34 + 410 / (n * 20) ** 0.28:.5f}\n"
    for i, n in enumerate((5e7, 1e8, 2e8, 4e8, 8e8, 1.6e9, 3.2e9)))


def _runs_csv(folder: Path) -> Path:
    path = folder / "runs.csv"
    path.write_text("id,cluster,gpus,layers,hidden,heads,seq_len,vocab,tp,pp,dp,micro_batch,global_batch,step_time_s\n"
                    + "".join(f"{i},dgx-a100-80gb,8,24,2048,16,2048,50304,{tp},1,{8 // tp},1,8,{t}\n"
                              for i, (tp, t) in enumerate(((1, 1.5), (2, 1.7), (4, 2.0), (8, 2.6)))),
                    encoding="utf-8")
    return path


WRITERS = {
    # name: (argv that writes `target` in the working directory, target)
    "fit-law --out": (lambda d: ["fit-law", (d / "law.csv"), "--bootstrap", "0", "--no-holdout", "--out", "law.yaml"],
                      "law.yaml"),
    "calibrate --out": (lambda d: ["calibrate", _runs_csv(d), "--cluster", "dgx-a100-80gb", "--folds", "2",
                                   "--out", "calibrated.yaml"], "calibrated.yaml"),
    "ingest --out": (lambda d: ["ingest", REPO_ROOT / "tests/fixtures/logs/megatron_gpt_1p3b_tp2_dp4.log",
                                "--cluster", "dgx-a100-80gb", "--out", "runs_out.csv"], "runs_out.csv"),
    "simulate --emit-deepspeed": (lambda d: ["simulate", "--model", "gpt2-small", "--dp", "8",
                                             "--emit-deepspeed", "ds"], "ds/ds_config.json"),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_refuses_to_overwrite_without_force(cli, tmp_path, monkeypatch, writer):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "law.csv").write_text(LAW_DATA, encoding="utf-8")
    build, target = WRITERS[writer]
    argv = [str(a) for a in build(tmp_path)]
    code, out, err = cli(argv)
    assert code in (0, 1) and (tmp_path / target).is_file(), (out, err)
    first = (tmp_path / target).read_bytes()
    code, out, err = cli(argv)
    assert code == 2 and err.count("\n") == 1 and "already exists" in err and "--force" in err, err
    assert (tmp_path / target).read_bytes() == first
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temporary files left behind
    code, _, err = cli(argv + ["--force"])
    assert code in (0, 1), err


def test_calibrate_refuses_an_existing_output_before_fitting(cli, tmp_path, monkeypatch):
    import planner.calibrate.calibration

    monkeypatch.chdir(tmp_path)
    (tmp_path / "calibrated.yaml").write_text("keep\n")
    monkeypatch.setattr(planner.calibrate.calibration, "calibrate", lambda *a, **k: pytest.fail("fitted before refusing"))
    code, _, err = cli(["calibrate", _runs_csv(tmp_path), "--cluster", "dgx-a100-80gb", "--out", "calibrated.yaml"])
    assert code == 2 and "calibrated.yaml: already exists" in err
    assert (tmp_path / "calibrated.yaml").read_text() == "keep\n"


# ---------------------------------------------------------------------------------------------
# Names from data files stay inside the spec folder or the working directory
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def outside_spec(tmp_path):
    """A valid spec outside both the working directory (tmp/work) and the spec folder."""
    (tmp_path / "work").mkdir()
    outside = tmp_path / "outside.yaml"
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    spec["name"] = "outside"
    outside.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return outside


@pytest.mark.parametrize("cell", ["../outside.yaml", "{abs}", "../outside", "sub/../../outside.yaml", "link.yaml"])
def test_runs_csv_cluster_cell_cannot_leave(cli, tmp_path, monkeypatch, outside_spec, cell):
    work = tmp_path / "work"
    monkeypatch.chdir(work)
    (work / "link.yaml").symlink_to(outside_spec)
    cell = cell.format(abs=outside_spec)
    runs = work / "runs.csv"
    runs.write_text("id,cluster,layers,hidden,heads,seq_len,vocab,micro_batch,global_batch,step_time_s\n"
                    f"1,{cell},2,64,4,32,128,1,1,1.0\n", encoding="utf-8")
    code, out, _ = cli(["doctor", "runs.csv", "--cluster-dir", tmp_path / "work"])
    assert code == 1 and "points outside the cluster-spec folder" in out
    code, out, _ = cli(["validate", "runs.csv", "--json"])
    assert code == 1 and "points outside the cluster-spec folder" in out and '"outside"' not in out


def test_runs_csv_cluster_paths_under_the_working_directory_work(cli, tmp_path, monkeypatch, outside_spec):
    work = tmp_path / "work"
    (work / "specs").mkdir()
    (work / "specs" / "mine.yaml").write_text(outside_spec.read_text().replace("name: outside", "name: mine"))
    monkeypatch.chdir(work)
    runs = work / "runs.csv"
    runs.write_text("id,cluster,layers,hidden,heads,seq_len,vocab,micro_batch,global_batch,step_time_s\n"
                    "1,specs/mine.yaml,2,64,4,32,128,1,1,0.0005\n2,dgx-h100,2,64,4,32,128,1,1,0.0005\n", encoding="utf-8")
    assert cli(["doctor", "runs.csv"]) == (0, "runs.csv: ok\n", "")  # step times near the model's (doctor's 10x check)


def test_load_cluster_confines_only_names_from_data_files(tmp_path, monkeypatch, outside_spec):
    monkeypatch.chdir(tmp_path / "work")
    assert load_cluster(str(outside_spec)).name == "outside"  # typed by the user: any path
    with pytest.raises(PlannerInputError, match=r"runs\.csv:2: cluster .* points outside"):
        load_cluster(str(outside_spec), data_file="runs.csv:2")


def test_config_file_cluster_cannot_leave_but_the_flag_can(cli, tmp_path, monkeypatch, outside_spec):
    monkeypatch.chdir(tmp_path / "work")
    Path("config.yaml").write_text(yaml.safe_dump({"model": "gpt2-small", "cluster": "../outside.yaml"}))
    code, _, err = cli(["simulate", "--config", "config.yaml"])
    assert code == 2 and "--config config.yaml: cluster '../outside.yaml' points outside" in err
    code, out, err = cli(["simulate", "--config", "config.yaml", "--cluster", str(outside_spec)])
    assert code == 0 and "outside" in out, err
    Path("config.yaml").write_text(yaml.safe_dump({"model": "gpt2-small", "cluster_dir": str(tmp_path)}))
    code, _, err = cli(["simulate", "--config", "config.yaml"])
    assert code == 2 and "key 'cluster_dir'" in err


def test_spec_names_cannot_steer_the_calibrated_file(tmp_path):
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    spec["name"] = "../../elsewhere/evil"
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    with pytest.raises(PlannerInputError, match="key 'name': expected a plain name"):
        load_cluster_file(path)


def test_files_on_two_filesystems_are_written_together(tmp_path):
    """Review-found: one staging folder at the outputs' common folder made a command's outputs on two filesystems
    fail with EXDEV (and, with no common folder below /, staged in / itself). Each file is staged in its own folder."""
    import os
    import shutil

    from planner.io import write_files_atomic

    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem")
    there = other / f"planner-test-{os.getpid()}"
    try:
        written = write_files_atomic({tmp_path / "a.csv": b"a\n", there / "r.html": b"<html>"})
        assert [p.read_bytes() for p in written] == [b"a\n", b"<html>"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"] and sorted(os.listdir(there)) == ["r.html"]
    finally:
        shutil.rmtree(there, ignore_errors=True)
