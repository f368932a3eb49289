"""No data loss (issue 12, items 12 and 15-17): a full disk or closed pipe is a one-line error, --append
never rewrites the user's rows, outputs never replace devices, folders or pipes, a report is written
all or nothing (also on SIGINT and SIGTERM), and new files' modes follow the umask.

Interrupts are made deterministic by raising from inside the write (a patched os.fsync or move), never
by sending a signal after a delay.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from planner import io as planner_io
from planner.cli import main
from planner.errors import PlannerInputError
from planner.profile.runs_csv import MeasuredRun, parse_runs, read_runs, runs_to_csv_text

REPO_ROOT = Path(__file__).resolve().parents[1]
LOGS = REPO_ROOT / "tests" / "fixtures" / "logs"
MEGATRON = LOGS / "megatron_gpt_1p3b_tp2_dp4.log"
TRUNCATED = LOGS / "megatron_deepspeed_truncated.log"
RUNS = REPO_ROOT / "data" / "runs" / "published_runs_dev.csv"
TRUNCATED_FLAGS = ["--gpus", "1", "--layers", "12", "--hidden", "768", "--seq-len", "1024"]
REPORT = ["report", "--budget", "500gpuh", "--cluster", "dgx-a100-80gb", "--no-sensitivity"]


def _planner(argv, **kwargs) -> subprocess.CompletedProcess:
    """`planner ARGV` in a fresh interpreter (what a user's shell runs)."""
    return subprocess.run([sys.executable, "-m", "planner.cli", *map(str, argv)], capture_output=True,
                          text=True, timeout=kwargs.pop("timeout", 300), **kwargs)


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd)


def _everything(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------------------------------------
# 12: a full device or a closed pipe on stdout
# ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_device_on_stdout_is_a_one_line_error():
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "planner.cli", "laws"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("planner laws: error: "), done.stderr
    assert "No space left on device" in done.stderr


def test_closed_stdout_pipe_exits_quietly_and_nonzero():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte, as with `| head -c 0`
    try:
        done = subprocess.run([sys.executable, "-m", "planner.cli", "laws"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode != 0
    assert done.stderr == ""


# ---------------------------------------------------------------------------------------------
# 15: --append adds bytes; it never rewrites existing rows
# ---------------------------------------------------------------------------------------------

def test_append_keeps_every_existing_byte(tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(MEGATRON), "--cluster", "dgx-a100-80gb", "--out", str(out)]) == 0
    header = out.read_text(encoding="utf-8").splitlines()[0].split(",")

    def row(**cells) -> str:
        return ",".join(cells.get(column, "") for column in header) + "\n"

    # A row the reader rejects (a typo) and a float with more than 6 significant digits: both are the user's.
    with open(out, "a", encoding="utf-8") as stream:
        stream.write(row(id="typo", gpus="eight") + row(id="precise", step_time_s="1.23456789012345"))
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--out", str(out), "--append"]) == 0
    after = out.read_bytes()
    assert after.startswith(before), "existing rows were rewritten"
    added = after[len(before):].decode("utf-8")
    assert added.count("\n") == 1 and added.startswith("megatron_deepspeed_truncated,")
    runs, _ = read_runs(out)
    assert [r.step_time_s for r in runs if r.id == "precise"] == [1.23456789012345]


def test_append_writes_rows_in_the_existing_files_column_order(tmp_path):
    fresh, out = tmp_path / "fresh.csv", tmp_path / "runs.csv"
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--out", str(fresh)]) == 0
    columns = fresh.read_text(encoding="utf-8").splitlines()[0].split(",")[::-1]
    out.write_text(",".join(columns) + "\n", encoding="utf-8")
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--out", str(out), "--append"]) == 0
    (expected,), _ = read_runs(fresh)
    (got,), problems = read_runs(out)
    assert not problems and got == expected and got.extra == expected.extra


@pytest.mark.parametrize("bom, separator", [("\ufeff", ","), ("", ", "), ("\ufeff", ", ")])
def test_append_reads_the_header_as_the_reader_does(tmp_path, bom, separator):
    """--append refused a header with a UTF-8 byte order mark or blanks after the commas ("no 'id' column"),
    which the reader and doctor accept (runs_csv.header_names)."""
    fresh, out = tmp_path / "fresh.csv", tmp_path / "runs.csv"
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--out", str(fresh)]) == 0
    header = fresh.read_text(encoding="utf-8").splitlines()[0].split(",")
    out.write_text(bom + separator.join(header) + "\nmine" + "," * (len(header) - 1) + "\n", encoding="utf-8")
    before = out.read_bytes()
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--out", str(out), "--append"]) == 0
    assert out.read_bytes().startswith(before)
    (expected,), _ = read_runs(fresh)
    (mine, got), problems = read_runs(out)
    assert not problems and mine.id == "mine" and got == expected and got.extra == expected.extra
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--id", "mine", "--out", str(out), "--append"]) == 2


def test_append_refuses_a_header_that_would_drop_values(tmp_path, capsys):
    out = tmp_path / "runs.csv"
    out.write_text("id,step_time_s\nmine,1.5\n", encoding="utf-8")
    before = out.read_bytes()
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--out", str(out), "--append"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and "gpus" in err and "tflops_per_gpu" in err, err
    assert out.read_bytes() == before


def _llama_style_log(tmp_path) -> Path:
    """The Megatron fixture as a Llama-style run prints itself: RMSNorm, no linear biases, an untied output layer and
    no dropout, every model column at ModelSpec's default."""
    text = MEGATRON.read_text(encoding="utf-8")
    text = text.replace("LayerNorm", "RMSNorm").replace(
        "untie_embeddings_and_output_weights ............. False", "untie_embeddings_and_output_weights ............. True")
    text = text.replace("  normalization ....", "  add_bias_linear ................................. False\n  normalization ....", 1)
    log = tmp_path / "llama_style.log"
    log.write_text(text, encoding="utf-8")
    return log


def test_append_takes_model_columns_at_their_defaults_onto_a_file_without_them(tmp_path, capsys):
    """A file without the model columns reads them as ModelSpec's defaults (no biases, RMSNorm, untied, no dropout):
    a new row saying those defaults loses nothing and is appended (every Megatron log fills the columns, so every
    one was refused); a row with GPT's biases, LayerNorm and tied output layer would lose them and is refused."""
    from planner.calibrate.validation import run_to_config

    llama, fresh, out = _llama_style_log(tmp_path), tmp_path / "fresh.csv", tmp_path / "runs.csv"
    flags = ["--cluster", "dgx-a100-80gb"]
    assert main(["ingest", str(llama), *flags, "--out", str(fresh)]) == 0
    header = fresh.read_text(encoding="utf-8").splitlines()[0].split(",")
    model_columns = ("bias", "norm", "tied_embeddings", "dropout")
    assert set(model_columns) <= set(header)
    out.write_text(",".join(name for name in header if name not in model_columns) + "\n", encoding="utf-8")
    before, _ = out.read_bytes(), capsys.readouterr()
    assert main(["ingest", str(MEGATRON), *flags, "--id", "gpt", "--out", str(out), "--append"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bias, norm, tied_embeddings" in err and "dropout" not in err, err
    assert out.read_bytes() == before
    assert main(["ingest", str(llama), *flags, "--out", str(out), "--append"]) == 0
    (expected,), _ = read_runs(fresh)
    (got,), problems = read_runs(out)
    assert not problems and not set(model_columns) & set(got.extra)
    assert run_to_config(got)[0] == run_to_config(expected)[0]


def test_append_refuses_an_id_already_in_the_file(tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--out", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--gpus", "2", "--out", str(out), "--append"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'megatron_deepspeed_truncated'" in err and "--id" in err, err
    assert out.read_bytes() == before
    # Another id is taken for another run (here another GPU count; the same run again is refused, test below).
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--gpus", "2", "--id", "again", "--out", str(out),
                 "--append"]) == 0
    assert [r.id for r in read_runs(out)[0]] == ["megatron_deepspeed_truncated", "again"]


def test_append_reads_a_given_id_as_the_reader_will(tmp_path, capsys):
    """--id "x " beside an 'x' already in the file was appended (the check compared it unstripped), and every reader,
    which strips cells, then saw the id twice and dropped the row. The id is taken stripped (a blank one is refused)."""
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--out", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--gpus", "2", "--id", " megatron_deepspeed_truncated ",
                 "--out", str(out), "--append"]) == 2
    assert "is already there" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--gpus", "2", "--id", "  ", "--out", str(out),
                 "--append"]) == 2
    assert "--id: expected a value" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--gpus", "2", "--id", " again ", "--out", str(out),
                 "--append"]) == 0
    rows, problems = read_runs(out)
    assert not problems and [r.id for r in rows] == ["megatron_deepspeed_truncated", "again"]


def test_append_refuses_a_row_that_repeats_a_run_already_in_the_file(tmp_path, capsys):
    """The same log appended again under another name (a copy, a link, --id) gave a second row with the same layout,
    step time and memory: validate and calibrate then weigh that one run twice, silently."""
    out, copy = tmp_path / "runs.csv", tmp_path / "renamed.log"
    copy.write_bytes(MEGATRON.read_bytes())
    assert main(["ingest", str(MEGATRON), "--cluster", "dgx-a100-80gb", "--out", str(out)]) == 0
    before = out.read_bytes()
    for again in (["ingest", str(copy)], ["ingest", str(MEGATRON), "--id", "again"]):
        capsys.readouterr()
        assert main([*again, "--cluster", "dgx-a100-80gb", "--out", str(out), "--append"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{out}:2" in err and "'megatron_gpt_1p3b_tp2_dp4'" in err, err
        assert out.read_bytes() == before
    # Another run (here: another GPU count given for the same log) is still appended.
    assert main(["ingest", str(copy), "--cluster", "dgx-a100-80gb", "--gpus", "16", "--dp", "8",
                 "--out", str(out), "--append"]) == 0


def test_ingest_refuses_two_logs_of_one_run(tmp_path, capsys):
    """Two copies of one log in one call gave two rows of one run (the same file twice was already refused)."""
    copy = tmp_path / "copy.log"
    copy.write_bytes(MEGATRON.read_bytes())
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(MEGATRON), str(copy), "--cluster", "dgx-a100-80gb", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(copy) in err and str(MEGATRON) in err, err
    assert not out.exists()


def test_append_to_a_file_without_a_final_newline_starts_a_new_line(tmp_path):
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--out", str(out)]) == 0
    out.write_bytes(out.read_bytes().rstrip(b"\n"))
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--gpus", "2", "--id", "b", "--out", str(out),
                 "--append"]) == 0
    runs, problems = read_runs(out)
    assert not problems and [r.id for r in runs] == ["megatron_deepspeed_truncated", "b"]


def test_append_refuses_a_file_ending_inside_a_quoted_cell(tmp_path, capsys):
    """A last row cut inside a quoted cell (no closing quote): the lenient reader took the cell to run to the end
    of the file, the appended row landed inside it, and `ingest` said it had written the row."""
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--out", str(out)]) == 0
    cut = out.read_bytes().rstrip(b"\n") + b',"notes cut, mid-cell'
    out.write_bytes(cut)
    capsys.readouterr()
    assert main(["ingest", str(TRUNCATED), *TRUNCATED_FLAGS, "--id", "b", "--out", str(out), "--append"]) == 2
    err = capsys.readouterr().err
    assert "malformed CSV (unexpected end of data)" in err and err.count("\n") == 1
    assert out.read_bytes() == cut


def test_a_failed_append_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    out = tmp_path / "runs.csv"
    out.write_text("id,notes\na,x\n", encoding="utf-8")

    def full_disk(fd, data):
        os.ftruncate(fd, os.fstat(fd).st_size + 3)  # the kernel took a few bytes, then the disk filled
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(PlannerInputError, match="No space left on device"):
        planner_io.append_text(out, "b,y\nc,z\n")
    assert out.read_bytes() == b"id,notes\na,x\n"


def test_new_floats_keep_full_precision():
    import numpy as np

    runs = [MeasuredRun(id="a", step_time_s=0.123456789012345, mem_gib=float(np.float64(71.23456789))),
            MeasuredRun(id="b", step_time_s=np.float64(0.1) * 3, mem_gib=80 / 3)]  # 0.30000000000000004
    back, problems = parse_runs(runs_to_csv_text(runs), "x.csv")
    assert not problems and [(r.step_time_s, r.mem_gib) for r in back] == [(r.step_time_s, r.mem_gib) for r in runs]
    assert "np.float64" not in runs_to_csv_text(runs)


# ---------------------------------------------------------------------------------------------
# 16: outputs are regular files; devices, folders and pipes are refused
# ---------------------------------------------------------------------------------------------

def _fifo(folder: Path) -> Path:
    path = folder / "out.csv"
    os.mkfifo(path)
    return path


def _device_link(folder: Path) -> Path:
    path = folder / "out.csv"  # a link, so that a failure replaces the link and never /dev/null itself
    path.symlink_to("/dev/null")
    return path


def _folder(folder: Path) -> Path:
    path = folder / "out.csv"
    path.mkdir()
    return path


NOT_FILES = {"fifo": (_fifo, "FIFO"), "device": (_device_link, "character device"), "folder": (_folder, "folder")}


def _unchanged(path: Path, kind: str) -> bool:
    info = os.lstat(path)
    return {"fifo": stat.S_ISFIFO, "device": stat.S_ISLNK, "folder": stat.S_ISDIR}[kind](info.st_mode)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("kind", sorted(NOT_FILES))
def test_force_never_replaces_what_is_not_a_regular_file(tmp_path, capsys, kind):
    make, words = NOT_FILES[kind]
    target = make(tmp_path)
    code = main(["ingest", str(MEGATRON), "--cluster", "dgx-a100-80gb", "--out", str(target), "--force"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(target) in err and words in err, err
    assert _unchanged(target, kind)
    with pytest.raises(PlannerInputError, match=words):
        planner_io.write_text_atomic(target, "x\n", force=True)
    assert _unchanged(target, kind)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_report_refuses_a_fifo_among_its_outputs_before_searching(tmp_path, capsys):
    os.mkfifo(tmp_path / "r.md")
    assert main([*REPORT, "--out", str(tmp_path / "r.html"), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "r.md" in err and "FIFO" in err, err
    assert _everything(tmp_path) == ["r.md"] and stat.S_ISFIFO(os.lstat(tmp_path / "r.md").st_mode)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_append_target_must_be_a_regular_file(tmp_path):
    target = _fifo(tmp_path)  # reading it would wait for a writer forever
    done = _planner(["ingest", MEGATRON, "--cluster", "dgx-a100-80gb", "--out", target, "--append"], timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "FIFO" in done.stderr, done.stderr
    assert stat.S_ISFIFO(os.lstat(target).st_mode)


# ---------------------------------------------------------------------------------------------
# 17: multi-file outputs all or nothing; SIGINT and SIGTERM clean up; modes follow the umask
# ---------------------------------------------------------------------------------------------

def _fail_on_call(function, number: int, error: BaseException):
    """`function`, except that call `number` raises `error` (a deterministic interrupt mid-write)."""
    calls = []

    def patched(*args, **kwargs):
        calls.append(args)
        if len(calls) == number:
            raise error
        return function(*args, **kwargs)

    return patched


def test_interrupted_report_leaves_no_files(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(os, "fsync", _fail_on_call(os.fsync, 3, KeyboardInterrupt()))  # during the 3rd of 7 files
    assert main([*REPORT, "--out", str(tmp_path / "r.html")]) == 130
    assert _everything(tmp_path) == [], "a partial report (or a temporary) was left behind"
    assert "interrupted" in capsys.readouterr().err


def test_sigterm_during_report_cleans_up(tmp_path):
    pytest.importorskip("matplotlib")
    code = ("import os, signal, sys\n"
            "from planner.cli import main\n"
            "real, calls = os.fsync, []\n"
            "def fsync(fd):\n"
            "    calls.append(fd)\n"
            "    if len(calls) == 3:\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return real(fd)\n"
            "os.fsync = fsync\n"
            f"sys.exit(main({[*REPORT, '--out', 'r.html']!r}))\n")
    done = _python(code, tmp_path)
    assert done.returncode == 128 + signal.SIGTERM, (done.returncode, done.stderr)
    assert _everything(tmp_path) == [], "a partial report (or a temporary) was left behind"


def _files(folder: Path, names) -> dict:
    return {folder / name: name.encode() for name in names}


@pytest.mark.parametrize("mover", ["link", "replace"])
def test_a_set_interrupted_while_moving_in_is_rolled_back(tmp_path, monkeypatch, mover):
    names = ["a.html", "a.md", "a_figures/x.png", "a_figures/y.png"]
    force = mover == "replace"
    if force:  # an older set is in place; it must come back intact
        for path, data in _files(tmp_path, names).items():
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"old " + data)
    before = {name: (tmp_path / name).read_bytes() for name in names} if force else {}
    monkeypatch.setattr(os, mover, _fail_on_call(getattr(os, mover), 3, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        planner_io.write_files_atomic(_files(tmp_path, names), force=force)
    if force:
        assert {name: (tmp_path / name).read_bytes() for name in names} == before
        assert _everything(tmp_path) == ["a.html", "a.md", "a_figures", "a_figures/x.png", "a_figures/y.png"]
    else:
        assert _everything(tmp_path) == []


def test_a_set_with_one_existing_file_writes_none_without_force(tmp_path):
    (tmp_path / "a.md").write_bytes(b"mine")
    with pytest.raises(PlannerInputError, match="a.md: already exists"):
        planner_io.write_files_atomic(_files(tmp_path, ["a.html", "a.md", "a_figures/x.png"]))
    assert _everything(tmp_path) == ["a.md"] and (tmp_path / "a.md").read_bytes() == b"mine"


@pytest.mark.parametrize("umask, mode, script_mode", [(0o077, 0o600, 0o700), (0o022, 0o644, 0o755)])
def test_new_files_follow_the_umask(tmp_path, umask, mode, script_mode):
    pytest.importorskip("matplotlib")
    code = ("import os, sys\n"
            f"os.umask({umask:#o})\n"
            "from planner.cli import main\n"
            f"code = main({[*REPORT, '--out', 'r.html']!r})\n"
            "code = code or main(['simulate', '--model', 'gpt2-small', '--dp', '8', '--emit-deepspeed', 'ds'])\n"
            "sys.exit(code)\n")
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode)
             for name in ("r.html", "r.md", "r_figures/isoflop.png", "ds/ds_config.json", "ds/launch.sh")}
    assert modes == {**dict.fromkeys(modes, mode), "ds/launch.sh": script_mode}


@pytest.mark.parametrize("mode", ["--force", "--append"])
def test_ingest_never_writes_over_the_log_it_reads(tmp_path, capsys, mode):
    """`ingest LOG --out LOG --force` replaced the training log with one CSV row."""
    log = tmp_path / "train.log"
    log.write_bytes(MEGATRON.read_bytes())
    assert main(["ingest", str(log), "--cluster", "dgx-a100-80gb", "--out", str(log), mode]) == 2
    assert "is the input" in capsys.readouterr().err
    assert log.read_bytes() == MEGATRON.read_bytes()


@pytest.mark.parametrize("command", [
    ["validate", "{runs}", "--write-error-bands", "{out}", "--force"],
    ["calibrate", "--cluster", "dgx-a100-80gb", "{runs}", "--out", "{out}", "--force"],
])
@pytest.mark.parametrize("spelling", ["same", "link"])
def test_outputs_never_replace_the_runs_being_read(tmp_path, capsys, command, spelling):
    """`validate runs.csv --write-error-bands runs.csv --force` replaced the measured runs with a bands YAML
    (and calibrate --out likewise with a spec); a link to the runs is the same file."""
    runs = tmp_path / "runs.csv"
    runs.write_bytes(RUNS.read_bytes())
    out = runs
    if spelling == "link":
        out = tmp_path / "bands.yaml"
        out.symlink_to(runs)
    args = [part.format(runs=runs, out=out) for part in command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "is the input" in err and len(err.strip().splitlines()) == 1, err
    assert runs.read_bytes() == RUNS.read_bytes()


@pytest.mark.parametrize("command", [
    ["validate", "{a}", "{b}"],
    ["calibrate", "--cluster", "dgx-a100-80gb", "--no-write", "{a}", "{b}"],
    ["ingest", "{log}", "{log_again}", "--cluster", "dgx-a100-80gb"],
])
def test_a_file_named_twice_is_refused(tmp_path, capsys, command):
    """`validate a.csv a.csv` counted every row twice (and `calibrate` would hold a row out while its twin
    stayed in the training set); another name for the same file (a link, ../dir/file) is the same file."""
    runs = tmp_path / "a.csv"
    runs.write_text("id,cluster,model,gpus,tp,pp,dp,micro_batch,global_batch,measured_step_time_s\n"
                    "r1,dgx-a100-80gb,gpt3-1.3b,8,1,1,8,4,256,1.0\n")
    (tmp_path / "b.csv").symlink_to(runs)
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "train.log"
    log.write_bytes(MEGATRON.read_bytes())
    names = {"a": str(runs), "b": str(tmp_path / "b.csv"), "log": str(log),
             "log_again": str(tmp_path / "logs" / ".." / "logs" / "train.log")}
    assert main([part.format(**names) for part in command]) == 2
    err = capsys.readouterr().err
    assert "name each file once" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv", "logs"]  # nothing written


@pytest.mark.parametrize("name, cell, lost", [
    ("dropout", " ", False), ("dropout", "0.0", False), ("dropout", "0.1", True), ("norm", " RMSNorm ", False),
    ("norm", "layernorm", True), ("bias", "false", False), ("bias", "1", True), ("tied_embeddings", "no", False),
    ("flash_attention", "0", True),  # not a model column: empty there means "infer", so any value would be lost
    ("flash_attention", "  ", False),
])
def test_which_cells_a_header_without_the_column_would_lose(name, cell, lost):
    """runs_csv._lost_without_column: a model column's default, and a cell the reader takes as empty (blanks only:
    the review found them counted as lost), lose nothing; anything else would be dropped."""
    from planner.profile.runs_csv import _lost_without_column

    assert _lost_without_column(name, cell) is lost
