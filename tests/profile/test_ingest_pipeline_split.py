"""The end pipeline ranks' layers in the runs CSV: `planner ingest` reads them from a Megatron log, `validate` and
`calibrate` simulate the row on that split (data/spec/runs_csv.md: first_stage_layers, last_stage_layers)."""

import re
from pathlib import Path

import pytest

from planner.calibrate.validation import predict_runs, run_to_config
from planner.cli import main
from planner.errors import PlannerInputError
from planner.profile.ingest import megatron_pipeline_split
from planner.profile.runs_csv import read_runs

LOGS = Path(__file__).parent.parent / "fixtures" / "logs"
FIXTURE = LOGS / "megatron_gpt_1p3b_tp2_dp4.log"  # 24 layers, tp 2, pp 1, 8 GPUs


def _argument(text: str, name: str, value: str) -> str:
    """The fixture's arguments block with `name` set to `value` (added before world_size when it is not there)."""
    line = re.compile(rf"^(  {name} \.+ ).*$", re.MULTILINE)
    if line.search(text):
        return line.sub(lambda m: m.group(1) + value, text)
    return text.replace("  world_size ...", f"  {name} {'.' * max(3, 48 - len(name))} {value}\n  world_size ...", 1)


def _pipelined_log(tmp_path: Path, name: str = "gpt_pp2.log", **arguments: str) -> Path:
    """The fixture run on pp 2 (dp 2), with more printed arguments."""
    text = _argument(FIXTURE.read_text(encoding="utf-8"), "pipeline_model_parallel_size", "2")
    text = _argument(text, "data_parallel_size", "2")
    for key, value in arguments.items():
        text = _argument(text, key, value)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("arguments, expected", [
    # --decoder-first/last-pipeline-num-layers set the end ranks outright
    ({"decoder_first_pipeline_num_layers": "11", "decoder_last_pipeline_num_layers": "None"}, {"first_stage_layers": 11}),
    ({"decoder_first_pipeline_num_layers": "None", "decoder_last_pipeline_num_layers": "5"}, {"last_stage_layers": 5}),
    ({"decoder_first_pipeline_num_layers": "3", "decoder_last_pipeline_num_layers": "5"},
     {"first_stage_layers": 3, "last_stage_layers": 5}),
    # the embedding counted as a layer: 23 + 1 over pp 4, the first rank builds 5 (transformer_block.py:150-203)
    ({"num_layers": "23", "account_for_embedding_in_pipeline_split": "True"}, {"first_stage_layers": 5}),
    # the loss counted as a layer: the last rank builds 5 of 23, the others 6, which is the split the planner takes
    # for an empty cell (stage_layers: the lighter rank last), so the row needs no column
    ({"num_layers": "23", "account_for_loss_in_pipeline_split": "True"}, {}),
    # both, where pp x vpp divides the layers + 2: the split the planner takes for an empty cell anyway
    ({"num_layers": "22", "account_for_embedding_in_pipeline_split": "True",
      "account_for_loss_in_pipeline_split": "True"}, {}),
    ({"num_layers": "24", "account_for_embedding_in_pipeline_split": "True"}, {}),  # 25 over pp 4: Megatron refuses it
    ({"num_layers": "24"}, {}),  # nothing set: the stack's own split
])
def test_megatrons_pipeline_split_from_its_arguments(arguments, expected):
    layout = {"layers": int(arguments.get("num_layers", 24)), "pp": 4, "vpp": 1}
    assert megatron_pipeline_split(arguments, layout) == expected


def test_an_ingested_split_reaches_validate(tmp_path):
    """A log that set --decoder-first-pipeline-num-layers gives a row that says so, and validate simulates it on that
    split: the first rank with 11 layers, the last with 13 (its own split is 12 and 12), so the step is slower."""
    log = _pipelined_log(tmp_path, decoder_first_pipeline_num_layers="11", decoder_last_pipeline_num_layers="None")
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(log), "--cluster", "dgx-a100-80gb", "--out", str(out)]) == 0
    (run,), problems = read_runs(out)
    assert not problems and run.pp == 2 and run.extra["first_stage_layers"] == "11"
    assert "last_stage_layers" not in run.extra or not run.extra["last_stage_layers"]
    _, layout, _ = run_to_config(run)
    assert (layout.first_stage_layers, layout.last_stage_layers) == (11, None)
    even = type(run)(**{**run.__dict__, "extra": {k: v for k, v in run.extra.items() if k != "first_stage_layers"}})
    split, own = predict_runs([run, even])
    assert split.reason is None and own.reason is None
    assert split.predicted["step_time_s"] > own.predicted["step_time_s"]


def test_a_flag_sets_the_split_the_log_does_not_print(tmp_path):
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(_pipelined_log(tmp_path)), "--cluster", "dgx-a100-80gb", "--last-stage-layers", "10",
                 "--out", str(out)]) == 0
    (run,), _ = read_runs(out)
    assert run.extra["last_stage_layers"] == "10"


def test_a_split_doctor_rejects_is_refused(tmp_path, capsys):
    """25 layers on the first of two ranks of a 24-layer model: nothing written, the flag named."""
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(_pipelined_log(tmp_path)), "--cluster", "dgx-a100-80gb", "--first-stage-layers", "25",
                 "--out", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip()
    assert "first_stage_layers" in err and len(err.splitlines()) == 1


def test_a_pipeline_layout_string_gives_no_row(tmp_path, capsys):
    """A layout string places every virtual stage; the runs CSV holds the end ranks only, so the row would simulate
    another split: the file is skipped with the reason."""
    log = _pipelined_log(tmp_path, pipeline_model_parallel_layout="Et*11|t*13L")
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(log), "--cluster", "dgx-a100-80gb", "--out", str(out)]) == 2
    assert not out.exists()
    assert "pipeline_model_parallel_layout" in capsys.readouterr().err


def test_append_never_drops_a_split_the_header_lacks(tmp_path, capsys):
    """--append onto a file without the columns refuses a row that sets them (it would read as the stack's split)."""
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(FIXTURE), "--cluster", "dgx-a100-80gb", "--out", str(out)]) == 0
    before = out.read_bytes()
    assert b"first_stage_layers" not in before.split(b"\n")[0]
    log = _pipelined_log(tmp_path, decoder_first_pipeline_num_layers="11")
    assert main(["ingest", str(log), "--cluster", "dgx-a100-80gb", "--out", str(out), "--append"]) == 2
    assert out.read_bytes() == before
    assert "first_stage_layers" in capsys.readouterr().err


@pytest.mark.parametrize("cell", ["0", "x", "2.5", "-3"])
def test_validate_names_a_bad_split_cell(cell):
    run = next(iter(read_runs_text(cell)))
    with pytest.raises(PlannerInputError, match=r"column 'first_stage_layers': expected a whole number >= 1"):
        run_to_config(run)


def read_runs_text(cell: str):
    import io
    import tempfile

    header = ("id,cluster,gpus,layers,hidden,heads,seq_len,vocab,tp,pp,dp,micro_batch,global_batch,step_time_s,"
              "first_stage_layers")
    row = f"r1,dgx-a100-80gb,8,24,2048,16,2048,50304,1,2,4,1,8,1.0,{cell}"
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as stream:
        stream.write(header + "\n" + row + "\n")
    runs, _ = read_runs(stream.name)
    return runs
