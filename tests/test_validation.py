"""Predicted vs measured step time on published runs (golden regression guard), row handling, and the runs CSV."""

from __future__ import annotations

import dataclasses
import math

import pytest

from planner.errors import PlannerInputError
from planner.profile.runs_csv import COLUMNS, MeasuredRun, read_runs, runs_to_csv_text
from planner.calibrate.validation import predict_runs, run_to_config, summarize

# Regression guard, not the current value: the uncalibrated model must stay within 15% step-time MAPE
# on the published runs (peer tools: Calculon 3.65% mean on 8 Selene runs, vTrain 8.4-14.7% MAPE).
STEP_TIME_MAPE_LIMIT = 0.15


@pytest.fixture(scope="module")
def published_results(published_runs_csv):
    runs, problems = read_runs(published_runs_csv)
    assert problems == [], [str(p) for p in problems]
    return runs, predict_runs(runs)


def test_published_runs_step_time_mape(published_results):
    runs, results = published_results
    skipped = [(r.run.id, r.reason) for r in results if r.reason]
    assert skipped == []
    assert len(results) == len(runs) >= 60
    summary = summarize(results, "step")
    assert summary["count"] == len(runs)
    assert summary["mape"] <= STEP_TIME_MAPE_LIMIT, f"step-time MAPE {summary['mape']:.1%} > {STEP_TIME_MAPE_LIMIT:.0%}"


def test_published_runs_per_source_figures_exist(published_results):
    runs, results = published_results
    summary = summarize(results, "step")
    sources = {run.source for run in runs}
    assert set(summary["by_source"]) == sources and len(sources) >= 3
    for source, stats in summary["by_source"].items():
        assert stats["count"] > 0 and math.isfinite(stats["mape"]), source
        assert stats["median_ape"] <= stats["worst_ape"]
    assert sum(s["count"] for s in summary["by_source"].values()) == summary["count"]


# Issue 11 acceptance: step-time MAPE <= 12% for every source. The llm-foundry benchmark rows (FSDP1 under
# Composer, planner/frameworks/llm_foundry.py) measured 6.7% MAPE, bias -0.4% (14.4%, bias -13.8%, when
# they were simulated as torchtitan/FSDP2 with FlashAttention-2).
PER_SOURCE_MAPE_LIMIT = 0.12
LLM_FOUNDRY_SOURCE = "llm-foundry benchmarking/README.md"


def test_llm_foundry_rows_within_the_per_source_limit(published_results):
    runs, results = published_results
    stats = summarize(results, "step")["by_source"][LLM_FOUNDRY_SOURCE]
    assert stats["count"] == 30
    assert stats["mape"] <= PER_SOURCE_MAPE_LIMIT, f"llm-foundry MAPE {stats['mape']:.1%}"
    assert abs(stats["mean_signed"]) <= PER_SOURCE_MAPE_LIMIT / 2, f"bias {stats['mean_signed']:+.1%}"
    assert {r.extra.get("framework") for r in runs if r.source == LLM_FOUNDRY_SOURCE} == {"llm-foundry"}


def test_a_row_that_cannot_be_simulated_is_kept_with_its_reason(tmp_path):
    runs = [
        MeasuredRun(id="ok", source="t", cluster="dgx-a100-80gb", gpus=8, layers=12, hidden=768, heads=12, seq_len=1024,
                    vocab=50257, dp=8, micro_batch=4, global_batch=32, step_time_s=1.0),
        MeasuredRun(id="no-hidden", source="t", cluster="dgx-a100-80gb", layers=12, heads=12, seq_len=1024,
                    vocab=50257, micro_batch=1, global_batch=8),
        MeasuredRun(id="bad-gpus", source="t", cluster="dgx-a100-80gb", gpus=64, layers=12, hidden=768, heads=12,
                    seq_len=1024, vocab=50257, tp=8, pp=4, dp=3, micro_batch=1, global_batch=24),
        MeasuredRun(id="nowhere", source="t", cluster="no-such-cluster", layers=12, hidden=768, heads=12,
                    seq_len=1024, vocab=50257, micro_batch=1, global_batch=8),
    ]
    results = predict_runs(runs)
    assert [r.run.id for r in results] == ["ok", "no-hidden", "bad-gpus", "nowhere"]
    assert results[0].reason is None and results[0].step_error is not None
    assert "missing hidden" in results[1].reason
    assert "!= gpus(64)" in results[2].reason
    assert "unknown cluster" in results[3].reason
    summary = summarize(results, "step")
    assert summary["count"] == 1


@pytest.mark.parametrize("framework", ["megatron-lm", "Megatron"])
def test_an_unknown_framework_is_a_reason_not_a_traceback(framework):
    """A framework value outside the stacks (a case or spelling slip) raised KeyError in the inference (exit 70
    from validate, calibrate and doctor); it is the row's reason, naming the column and the choices."""
    run = MeasuredRun(id="fw", source="t", cluster="dgx-a100-80gb", gpus=8, layers=12, hidden=768, heads=12,
                      seq_len=1024, vocab=50257, dp=8, global_batch=32, step_time_s=1.0, extra={"framework": framework})
    result, = predict_runs([run])
    assert f"column 'framework': expected one of megatron, deepspeed" in result.reason and repr(framework) in result.reason


def test_run_to_config_derives_dp_from_gpus():
    run = MeasuredRun(id="r", cluster="dgx-a100-80gb", gpus=64, layers=24, hidden=2048, heads=16, seq_len=2048,
                      vocab=50257, tp=2, pp=2, micro_batch=1, global_batch=64)
    _, layout, cluster = run_to_config(run)
    assert layout.dp == 16 and cluster.name == "dgx-a100-80gb"


@pytest.mark.parametrize("cell, expected", [("", None), ("0", False), ("1", True)])
def test_run_to_config_reads_the_gradient_reduce_dtype(cell, expected):
    """Composer's FSDP mixed_precision PURE reduces in bf16 (the llm-foundry A100-40GB table): column
    grad_reduce_in_fp32 = 0; empty keeps the framework's default (llm-foundry: fp32, Composer DEFAULT)."""
    run = MeasuredRun(id="r", cluster="dgx-a100-40gb", gpus=8, layers=24, hidden=2048, heads=16, seq_len=2048,
                      vocab=50368, zero=3, micro_batch=2, global_batch=16,
                      extra={"framework": "llm-foundry", "grad_reduce_in_fp32": cell})
    _, layout, _ = run_to_config(run)
    assert layout.grad_reduce_in_fp32 is expected
    bad = MeasuredRun(id="r", cluster="dgx-a100-40gb", gpus=8, layers=24, hidden=2048, heads=16, seq_len=2048,
                      vocab=50368, micro_batch=2, global_batch=16, extra={"grad_reduce_in_fp32": "fp32"})
    with pytest.raises(PlannerInputError, match="grad_reduce_in_fp32"):
        run_to_config(bad)


@pytest.mark.parametrize("bias, norm, expected", [("", "", (False, "rmsnorm")), ("1", "layernorm", (True, "layernorm")),
                                                    ("0", "RMSNorm", (False, "rmsnorm"))])
def test_run_to_config_reads_the_models_biases_and_norm(bias, norm, expected):
    """Columns bias and norm: Megatron-LM's GPT has a bias in every linear and LayerNorms with a bias
    (data/SOURCES.md); the row's model says so, which its parameters and the vector tensors ZeRO-3 keeps
    gathered follow (planner.specs.model.vector_tensors). Empty: ModelSpec's defaults."""
    run = MeasuredRun(id="r", cluster="dgx-a100-80gb", gpus=8, layers=24, hidden=2048, heads=16, seq_len=2048,
                      vocab=50257, dp=8, micro_batch=1, global_batch=8, extra={"bias": bias, "norm": norm})
    model, _, _ = run_to_config(run)
    assert (model.bias, model.norm) == expected
    for column, cell in (("bias", "2"), ("norm", "groupnorm")):
        bad = MeasuredRun(id="r", cluster="dgx-a100-80gb", gpus=8, layers=24, hidden=2048, heads=16, seq_len=2048,
                          vocab=50257, dp=8, micro_batch=1, global_batch=8, extra={column: cell})
        with pytest.raises(PlannerInputError, match=column):
            run_to_config(bad)


@pytest.mark.parametrize("cell, expected", [("", False), ("0", False), ("1", True)])
def test_run_to_config_reads_a_tied_output_layer(cell, expected):
    """Column tied_embeddings: 1 when the output layer is the input embedding (GPT, BLOOM, MPT; data/SOURCES.md). The
    row's model has one copy fewer of vocabulary x hidden at pp 1; empty is ModelSpec's default, untied."""
    run = MeasuredRun(id="r", cluster="dgx-a100-80gb", gpus=8, layers=24, hidden=2048, heads=16, seq_len=2048,
                      vocab=50257, dp=8, micro_batch=1, global_batch=8, extra={"tied_embeddings": cell})
    model, _, _ = run_to_config(run)
    assert model.tied_embeddings is expected
    untied, _, _ = run_to_config(dataclasses.replace(run, extra={}))
    assert untied.total_params - model.total_params == (50257 * 2048 if expected else 0)
    bad = MeasuredRun(id="r", cluster="dgx-a100-80gb", gpus=8, layers=24, hidden=2048, heads=16, seq_len=2048,
                      vocab=50257, dp=8, micro_batch=1, global_batch=8, extra={"tied_embeddings": "yes please"})
    with pytest.raises(PlannerInputError, match="column 'tied_embeddings': expected 0 or 1"):
        run_to_config(bad)


@pytest.mark.parametrize("cell, expected", [("", 0.0), ("0", 0.0), ("0.1", 0.1)])
def test_run_to_config_reads_the_dropout(cell, expected):
    """Column dropout: the run's dropout probability (Megatron-LM's default 0.1 for the 2021-22 rows, MPTConfig's 0
    for llm-foundry's: data/SOURCES.md); empty is ModelSpec's default, none. Above 0 the layers keep their masks."""
    run = MeasuredRun(id="r", cluster="dgx-a100-80gb", gpus=8, layers=24, hidden=2048, heads=16, seq_len=2048,
                      vocab=50257, dp=8, micro_batch=1, global_batch=8, extra={"dropout": cell})
    model, _, _ = run_to_config(run)
    assert model.dropout == expected
    for cell in ("1", "-0.1", "nan", "a tenth"):
        bad = dataclasses.replace(run, extra={"dropout": cell})
        with pytest.raises(PlannerInputError, match="column 'dropout': expected a probability from 0 up to"):
            run_to_config(bad)


@pytest.mark.parametrize("cell, expected", [("", False), ("0", False), ("1", True)])
def test_run_to_config_reads_partitioned_checkpoints(cell, expected):
    """Column partition_activations: 1 when the run partitioned its full-recompute checkpoints over tp (DeepSpeed
    --partition-activations); empty is the stack's default, off (DeepSpeed activation_checkpointing/config.py:28)."""
    run = MeasuredRun(id="r", cluster="dgx-a100-80gb", gpus=8, layers=24, hidden=2048, heads=16, seq_len=2048,
                      vocab=50257, tp=4, micro_batch=1, global_batch=8, recompute="full",
                      extra={"framework": "deepspeed", "partition_activations": cell})
    _, layout, _ = run_to_config(run)
    assert layout.partition_activations is (None if cell == "" else expected)
    assert layout.partition_activations_on is expected
    bad = MeasuredRun(id="r", cluster="dgx-a100-80gb", gpus=8, layers=24, hidden=2048, heads=16, seq_len=2048,
                      vocab=50257, tp=4, micro_batch=1, global_batch=8, recompute="full",
                      extra={"framework": "deepspeed", "partition_activations": "yes please"})
    with pytest.raises(PlannerInputError, match="partition_activations"):
        run_to_config(bad)


def test_run_to_config_errors_are_one_line():
    run = MeasuredRun(id="r", cluster="dgx-a100-80gb", layers=24, hidden=2048, heads=16, seq_len=2048, vocab=50257,
                      tp=3, micro_batch=1, global_batch=8, origin="runs.csv:7")
    with pytest.raises(PlannerInputError) as error:
        run_to_config(run)
    assert str(error.value).startswith("runs.csv:7") and "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------
# runs CSV reading: corrupt rows are reported with file:line and skipped; the rest is read
# ---------------------------------------------------------------------------------------------

def _good_row(run_id: str, gpus: str = "8") -> list[str]:
    cells = dict(id=run_id, source="test", cluster="dgx-a100-80gb", gpus=gpus, layers="12", hidden="768", heads="12",
                 seq_len="1024", vocab="50257", dp=gpus, micro_batch="1", global_batch="8", step_time_s="0.5")
    return [cells.get(c, "") for c in COLUMNS]


def _write_csv(path, rows: list[list[str]]) -> None:
    path.write_text("\n".join([",".join(COLUMNS)] + [",".join(r) for r in rows]) + "\n", encoding="utf-8")


def test_corrupt_rows_are_reported_with_file_and_line_and_skipped(tmp_path):
    path = tmp_path / "runs.csv"
    too_many = _good_row("3") + ["surplus", "cells"]
    _write_csv(path, [_good_row("1"), _good_row("2", gpus="eight"), too_many, _good_row("4")])
    runs, problems = read_runs(path)
    assert [r.id for r in runs] == ["1", "4"]
    assert [p.origin for p in problems] == [f"{path}:3", f"{path}:4"]
    assert "gpus" in problems[0].reason and "'eight'" in problems[0].reason
    assert "more cells" in problems[1].reason
    assert runs[1].origin == f"{path}:5"


@pytest.mark.parametrize("cell, column", [("1.5", "gpus"), ("nan", "step_time_s"), ("inf", "mem_gib")])
def test_bad_numbers_are_row_problems(tmp_path, cell, column):
    row = _good_row("1")
    row[COLUMNS.index(column)] = cell
    path = tmp_path / "runs.csv"
    _write_csv(path, [row, _good_row("2")])
    runs, problems = read_runs(path)
    assert [r.id for r in runs] == ["2"] and column in problems[0].reason


def test_duplicate_ids_are_row_problems(tmp_path):
    path = tmp_path / "runs.csv"
    _write_csv(path, [_good_row("1"), _good_row("1")])
    runs, problems = read_runs(path)
    assert len(runs) == 1 and "duplicate id" in problems[0].reason


def test_missing_file_and_missing_header_are_input_errors(tmp_path):
    with pytest.raises(PlannerInputError, match="no such runs file"):
        read_runs(tmp_path / "absent.csv")
    headerless = tmp_path / "x.csv"
    headerless.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(PlannerInputError, match="no 'id' column"):
        read_runs(headerless)


def test_csv_round_trip_keeps_values_and_extra_columns(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text(",".join(COLUMNS + ("flash_attention",)) + "\n" + ",".join(_good_row("7") + ["0"]) + "\n",
                    encoding="utf-8")
    runs, _ = read_runs(path)
    again = tmp_path / "again.csv"
    again.write_text(runs_to_csv_text(runs), encoding="utf-8")
    reread, problems = read_runs(again)
    assert problems == [] and reread == runs and reread[0].extra == {"flash_attention": "0"}


KORTHIKANTI_SOURCES = ("Korthikanti22 Table3/Table5", "Korthikanti22 Table3/Table5; Megatron README MFU table")


def _mape_of(results, sources) -> tuple[int, float]:
    errors = [abs(r.step_error) for r in results if r.run.source in sources]
    return len(errors), sum(errors) / len(errors)


def test_korthikanti_rows_within_4_percent(published_results):
    """Issue 11 acceptance: the 8 Korthikanti et al. 2022 rows (Table 3/5; Calculon reports 3.65% on them) <= 4%,
    run as megatron-2022 (the Megatron-LM of that paper). Measured 2.4% (3.2% as today's Megatron-Core entry
    with the scatter/gather, before megatron-2022)."""
    _, results = published_results
    count, mape = _mape_of(results, KORTHIKANTI_SOURCES)
    assert count == 8 and mape <= 0.04, f"Korthikanti MAPE {mape:.1%}"


@pytest.mark.xfail(strict=True, reason=(
    "measured 7.68% (median 4.7%, bias -6.9%; 7.64% before the pipeline's fill and drain ran at each stage's own speed and DeepSpeed's collectives were counted per bucket and per optimizer group; 7.62% before this session's Megatron bucket, uneven-group and MoE-stage fixes; 7.52% before the rows said the dropout they ran (data/SOURCES.md): "
    "llm-foundry's MPT has none, so its layers keep no masks and its memory-bound passes are shorter, 5.97% to "
    "6.18%; 7.42% before the rows said their output layer is their embedding "
    "(tied_embeddings, data/SOURCES.md): llm-foundry's fewer parameters to gather went from 5.72% to 5.97%, BLOOM's "
    "embedding gradient sync between its stages from -4.2% to -3.5%; 7.45% before DeepSpeed's first-heavy pipeline split moved BLOOM's row "
    "from -6.3% to -4.2%; 7.46% before today's DeepSpeed's ZeRO-1 bucket all-reduce was priced; 7.07% at the assumed 0.75 link efficiencies before the nccl-tests-derived "
    "ones in cluster_specs (they speed communication up: the predictions fall further below the measured steps); 7.08% before the DeepSpeed pipeline engine's third tp all-gather per "
    "micro-batch, 7.3% before DeepSpeed's autograd accumulation of 16-bit gradients at "
    "ZeRO 0/1, 8.0% before megatron-2022's, 8.2% before megatron-2022): the six ZeRO-3 rows of Narayanan's Table 2 "
    "(deepspeed-v0.3, -14% to -34%) and the three MT-NLG rows (-19.7% to -22.7%) carry 2.4 and 1.0 points of it; "
    "the other 55 rows are at 4.9%. See the per-source xfails."))
def test_published_runs_within_issue_11s_7_percent(published_results):
    """Issue 11 acceptance: step-time MAPE <= 7% over the published dev runs, no per-row or per-source factors."""
    _, results = published_results
    assert summarize(results, "step")["mape"] <= 0.07


@pytest.mark.xfail(strict=True, reason=(
    "measured 14.66% (bias -14.66%; 14.56% before the pipeline's fill and drain ran at each stage's own speed; 14.55% before the twenty-fifth session's fixes; the same before the tied_embeddings column; 13.7% at the assumed 0.75 link efficiencies): the six ZeRO-3 rows (deepspeed-v0.3) "
    "-14.1% to -34.4% (tests/cost/test_zero3_fetch.py), the six PTD-P rows (megatron-2022) -1.3% to -4.9% (-0.7% to "
    "-4.3% at the assumed 0.75 link efficiencies, -5.5% to -8.4% before the unfused "
    "fp16 gradient accumulation)"))
def test_narayanan_table2_within_the_per_source_limit(published_results):
    """Issue 11 acceptance: MAPE <= 12% for every source; Narayanan et al. 2021 Table 2 (ZeRO-3 and PTD-P)."""
    _, results = published_results
    count, mape = _mape_of(results, ("Narayanan21 SC21 Table2",))
    assert count == 12 and mape <= PER_SOURCE_MAPE_LIMIT


MT_NLG_SOURCE = "MT-NLG paper (2201.11990) Sec2.4"


@pytest.mark.xfail(strict=True, reason=(
    "measured 21.5% MAPE, bias -21.5% (21.0% before the pipeline's fill and drain ran at each stage's own speed; rows 69-71 then -19.7%, -20.5%, -22.7%, with the tied embedding's gradient sync "
    "between the first and last stage priced, +11 ms; 21.3% before the ZeRO-1 gradient reduction "
    "was priced as the all-reduce of each bucket it is (frameworks/deepspeed.py sharded_reduce_all_reduces; in 2021 "
    "ZeRO-1 all-reduced the whole fp16 gradient, 6ae756c0 to af033831, the same bytes); 20.7% at the assumed 0.75 link efficiencies "
    "before the nccl-tests-derived ones (cluster_specs/dgx-a100-80gb.yaml); 20.8% before the engine's third tp "
    "all-gather per micro-batch, of its own output before backward, was priced (frameworks/deepspeed.py "
    "p2p_gathers_per_microbatch, +0.1 s on row 69); 24.6% before autograd's in-place add of "
    "each micro-batch's fp16 gradients at ZeRO-1 was priced, frameworks/deepspeed.py; 24.7% before the vocabulary was padded to 128 x tp as the stack does; 19.1% before the per-accelerator GEMM "
    "ceilings, 16.5% before the DeepSpeed pipeline "
    "engine's p2p was modelled from source, which makes the sends cheaper: 1/tp per send). Nothing else in the "
    "engine at microsoft/DeepSpeed@0457bb1c (schedule = 1F1B, ZeRO-1 reduce once per step) accounts for the "
    "~1.27x per-sample gap to Megatron's PTD-P on the same layout (rows 20-22: -1.3% to -3.0% as megatron-2022 (-0.7% to -2.5% at the assumed 0.75 link efficiencies), -5.5% to -7.2% before its unfused fp16 gradient accumulation, within 1% before "
    "the GEMM ceilings). Also read at DeepSpeed v0.5.4 and Megatron-DeepSpeed@acc3e9b5, no difference from "
    "Megatron: partition_balanced('type:transformer') puts 3 layers on every stage; GPTModelPipe stacks Megatron's "
    "fused ParallelTransformerLayer and checkpoints only those layers; the attention mask is not sent "
    "(args.attn_mask), DeepSpeed's checkpoint adds no device work with its defaults (no partition, CPU or "
    "contiguous checkpoints), and "
    "the engine's blocking sends pace a slot at F + B + 4 transfers (the event simulation in test_frameworks.py), "
    "not more. Unmodelled, each under 0.5% of row 69's step: "
    "the flatten/copy-back around ZeRO-1's all-reduce then (stage 1 forced contiguous_gradients off, 6ae756c0 to "
    "af033831: +0.02 s); PartitionedTensor.full()'s "
    "zeroed buffer, list-form all_gather copy-out and clone (~5 bytes per gathered byte, ~0.9 ms per micro-batch, "
    "+0.25 s); host syncs (ThroughputTimer's synchronize before each forward, meta.tolist(), to_meta's blocking "
    "copy: ~6 per micro-batch, each about one eager op of idle GPU, < 0.05 s); the fp16 overflow check "
    "(~2 ms) per step. "
    "Not applicable: the pre-e2fdd254 engine's whole-gradient sends (is_grad_partitioned False until 2021-09-29, "
    "+~8 ms per micro-batch) could not run Megatron-DeepSpeed's single-tensor GPTModelPipe at tp > 1."))
def test_mt_nlg_rows_within_the_per_source_limit(published_results):
    """MT-NLG Sec 2.4 iteration times (60.1, 50.2, 44.4 s on 2240/2800/3360 A100s, Megatron-DeepSpeed with
    DeepSpeed's pipeline engine, framework deepspeed): issue 11's per-source limit, 12%."""
    runs, results = published_results
    stats = summarize(results, "step")["by_source"][MT_NLG_SOURCE]
    assert stats["count"] == 3
    assert {r.extra.get("framework") for r in runs if r.source == MT_NLG_SOURCE} == {"deepspeed"}
    assert stats["mape"] <= PER_SOURCE_MAPE_LIMIT, f"MT-NLG MAPE {stats['mape']:.1%}"


@pytest.mark.parametrize("header_of", [lambda h: ", ".join(h), lambda h: "\ufeff" + ",".join(h)],
                         ids=["blanks after commas", "byte order mark"])
def test_a_hand_written_header_reads_as_its_names(tmp_path, header_of):
    """'id, cluster, ...' (blanks after the commas) made every column but the first 'missing', and a spreadsheet's
    UTF-8 byte order mark made the file 'have no id column'."""
    columns = ["id", "source", "cluster", "gpus", "layers", "hidden", "heads", "seq_len", "vocab", "dp",
               "micro_batch", "global_batch", "step_time_s"]
    path = tmp_path / "runs.csv"
    path.write_text(header_of(columns) + "\nr1,t,dgx-a100-80gb,8,12,768,12,1024,50257,8,4,32,1.0\n", encoding="utf-8")
    runs, problems = read_runs(path)
    assert not problems and runs[0].cluster == "dgx-a100-80gb" and runs[0].hidden == 768


def test_allocator_peak_rows_compare_what_torchs_allocator_counts():
    """profiles/h200-1gpu.csv (mem_method=allocator-peak, torch.cuda.max_memory_allocated): the prediction compared
    leaves out the CUDA context, NCCL's buffers and the allocator's cached blocks, which that figure never holds; a
    row with no mem_method (published runs) keeps the whole footprint."""
    from pathlib import Path

    from planner.cost.estimate import simulate
    from planner.cost.memory import CUDA_CONTEXT_BYTES

    rows, problems = read_runs(Path(__file__).resolve().parents[1] / "profiles" / "h200-1gpu.csv")
    assert not problems and {run.extra.get("mem_method") for run in rows} == {"allocator-peak"}
    for result in predict_runs(rows[:3]):
        model, layout, cluster = run_to_config(result.run)
        memory = simulate(model, layout, cluster)["memory"]
        expected = memory["total_bytes"] - CUDA_CONTEXT_BYTES - memory.get("nccl_buffers", 0.0) - memory["fragmentation"]
        assert result.predicted_memory_bytes == pytest.approx(expected, rel=1e-9)
        assert result.predicted_memory_bytes < result.predicted["memory"]["total_bytes"]
    plain = dataclasses.replace(rows[0], extra={k: v for k, v in rows[0].extra.items() if k != "mem_method"})
    (whole,) = predict_runs([plain])
    assert whole.predicted_memory_bytes == whole.predicted["memory"]["total_bytes"]
