"""`planner ingest` never writes a row that `planner doctor` rejects, and a flag never relabels the global batch a
log measured its step time at (helper-found: both wrote rows at confidence high)."""

import re
from pathlib import Path

import pytest

from planner.cli import main

LOGS = Path(__file__).parent.parent / "fixtures" / "logs"
MEGATRON = str(LOGS / "megatron_gpt_1p3b_tp2_dp4.log")  # tp 2, dp 4, micro-batch 4, global batch 256, 16 heads
ZERO2 = str(LOGS / "deepspeed_0.19.8_zero2_ga2_flops_profiler.log")  # the engine ran train_batch_size 8
TINY = ["--layers", "2", "--hidden", "128", "--heads", "4", "--seq-len", "64", "--vocab", "1024", "--mlp", "gelu"]
ITERATION = re.compile(r".*\biteration\s+(\d+)/")


def _refused(capsys, argv, out: Path) -> str:
    """Ingest `argv` into `out`: exit 2, nothing written, and the one error line (returned)."""
    assert main(["ingest", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert not out.exists()
    assert err.count("\n") == 1 and err.startswith("planner ingest: error: ")
    return err


# Flags that make a Megatron row doctor rejects, the check doctor reports, and the log's values it used.
DOCTOR_REJECTS = [
    (["--micro-batch", "3"], "global_batch(256) is not divisible by micro_batch(3) * dp(4) = 12",
     ["--micro-batch 3", "global_batch 256", "dp 4"]),
    (["--kv-heads", "5"], "heads (16) must be divisible by kv_heads (5)", ["--kv-heads 5", "heads 16"]),
    (["--vpp", "2"], "vpp(2) > 1 needs pipeline parallelism (pp > 1)", ["--vpp 2"]),
    # seq_parallel 1 is the log's (sequence_parallel True), tp 1 the flag's: the message names both.
    (["--tp", "1", "--dp", "8"], "seq_parallel=1 with tp=1", ["--tp 1", "seq_parallel 1 from the log"]),
]


@pytest.mark.parametrize("flags, check, named", DOCTOR_REJECTS)
def test_a_row_doctor_rejects_is_refused_naming_the_flags_and_the_log(tmp_path, capsys, flags, check, named):
    err = _refused(capsys, [MEGATRON, "--cluster", "dgx-a100-80gb", *flags], tmp_path / "runs.csv")
    assert MEGATRON in err and check in err and "planner doctor" in err
    for text in named:
        assert text in err


def test_doctors_cell_check_applies_without_a_cluster(tmp_path, capsys):
    """A DeepSpeed run without tensor parallelism (tp 1 from the log) cannot have sequence parallelism: doctor
    rejects the cell whatever else the row lacks, so ingest does too."""
    err = _refused(capsys, [ZERO2, "--seq-parallel", "1"], tmp_path / "runs.csv")
    assert "--seq-parallel 1" in err and "tp 1 from the log" in err and "seq_parallel=1 with tp=1" in err


def test_append_adds_nothing_when_a_row_is_refused(tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert main(["ingest", MEGATRON, "--cluster", "dgx-a100-80gb", "--out", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["ingest", MEGATRON, "--cluster", "dgx-a100-80gb", "--id", "again", "--micro-batch", "3",
                 "--out", str(out), "--append"]) == 2
    assert "micro_batch(3)" in capsys.readouterr().err and out.read_bytes() == before


@pytest.mark.parametrize("flags", [[], ["--micro-batch", "2"], ["--kv-heads", "8"], ["--global-batch", "256"],
                                   ["--micro-batch", "3"], ["--kv-heads", "5"], ["--vpp", "2"]])
def test_what_ingest_writes_doctor_accepts(tmp_path, capsys, flags):
    """The invariant: a row is either refused (nothing written) or one doctor finds nothing wrong with."""
    out = tmp_path / "runs.csv"
    code = main(["ingest", MEGATRON, "--cluster", "dgx-a100-80gb", *flags, "--out", str(out)])
    assert code in (0, 2)
    if code == 2:
        assert not out.exists()
    else:
        assert main(["doctor", str(out)]) == 0, capsys.readouterr().out


def test_a_global_batch_flag_that_contradicts_the_deepspeed_engine_is_refused(tmp_path, capsys):
    """The engine measured its step at train_batch_size 8: a row at 16 would carry the time of 8 samples."""
    err = _refused(capsys, [ZERO2, "--cluster", "cpu-local", *TINY, "--global-batch", "16"], tmp_path / "runs.csv")
    assert "--global-batch 16" in err and "measured at global batch 8" in err and "train_batch_size" in err


def test_a_global_batch_flag_the_deepspeed_log_agrees_with_is_used(tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert main(["ingest", ZERO2, "--cluster", "cpu-local", *TINY, "--global-batch", "8", "--out", str(out)]) == 0


def test_a_global_batch_flag_that_contradicts_megatrons_iterations_is_refused(tmp_path, capsys):
    """The Megatron path refused it too, but as 'no step time found' (every iteration left out as ramp-up)."""
    err = _refused(capsys, [MEGATRON, "--cluster", "dgx-a100-80gb", "--global-batch", "100"], tmp_path / "runs.csv")
    assert "--global-batch 100" in err and "measured at global batch 256" in err and "no step time" not in err


def test_a_global_batch_flag_may_pick_a_ramp_up_batch_megatron_logged(tmp_path, capsys):
    """Iterations the log printed at global batch 64 measured a step at 64: --global-batch 64 takes their time."""
    lines = []
    for line in Path(MEGATRON).read_text().splitlines():
        match = ITERATION.match(line)
        if match and int(match.group(1)) <= 40:
            line = re.sub(r"global batch size:\s+256", "global batch size:    64", line)
            line = re.sub(r"elapsed time per iteration \(ms\): [\d.]+", "elapsed time per iteration (ms): 1001.0", line)
        lines.append(line)
    log = tmp_path / "ramp.log"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(log), "--cluster", "dgx-a100-80gb", "--global-batch", "64", "--out", str(out)]) == 0
    text = out.read_text()
    assert ",64," in text and "1.001" in text


def test_following_the_ulysses_hint_gives_a_row_doctor_accepts(tmp_path, capsys):
    """The hint said "pass --gpus and --cp": a deepspeed row at cp 2, which doctor rejects (deepspeed has no context
    parallelism). It now names --framework other too, and that row is written and passes doctor."""
    text = Path(ZERO2).read_text().replace("self.sequence_parallel_size=1", "self.sequence_parallel_size=2")
    text = text.replace("self.dp_world_size=2", "self.dp_world_size=1")
    log = tmp_path / "ulysses.log"
    log.write_text(text.replace("world_size ................... 2", "world_size ................... 1.0"))
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(log), "--cluster", "cpu-local", *TINY, "--out", str(out)]) == 2
    assert "--framework other" in capsys.readouterr().err
    err = _refused(capsys, [str(log), "--cluster", "cpu-local", *TINY, "--gpus", "2", "--cp", "2"], out)
    assert "deepspeed has no context parallelism" in err and "--cp 2" in err and "framework deepspeed from the log" in err
    assert main(["ingest", str(log), "--cluster", "cpu-local", *TINY, "--gpus", "2", "--cp", "2",
                 "--framework", "other", "--out", str(out)]) == 0
    assert main(["doctor", str(out)]) == 0


def test_a_log_whose_own_layout_doctor_rejects_is_skipped_and_the_others_kept(tmp_path, capsys):
    """No flag is at fault, so the log is skipped as other unusable logs are (exit 1), not the whole input refused."""
    bad = tmp_path / "bad.log"
    bad.write_text(Path(MEGATRON).read_text().replace(
        "  micro_batch_size ................................ 4", "  micro_batch_size ................................ 3"))
    out = tmp_path / "runs.csv"
    assert main(["ingest", MEGATRON, str(bad), "--cluster", "dgx-a100-80gb", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: planner doctor would reject the row of the log's own layout: " in err and "file skipped" in err, err
    assert "micro_batch(3)" in err
    rows = out.read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("megatron_gpt_1p3b_tp2_dp4,")
    assert main(["doctor", str(out)]) == 0
