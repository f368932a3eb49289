"""`planner ingest`: DeepSpeed and Megatron-LM logs -> runs-CSV rows (fixtures in tests/fixtures/logs)."""

import re
from pathlib import Path

import pytest

from planner.cli import main
from planner.errors import PlannerInputError
from planner.profile.deepspeed_logs import parse_log_file, parse_log_text, si_value
from planner.profile.ingest import deepspeed_layout, row_from_log
from planner.profile.runs_csv import read_runs

LOGS = Path(__file__).parent.parent / "fixtures" / "logs"


def test_si_values_as_deepspeed_prints_them():
    assert si_value("1.23 s") == pytest.approx(1.23)
    assert si_value("456.7 ms") == pytest.approx(0.4567)
    assert si_value("29.52 M") == pytest.approx(29.52e6)
    assert si_value("1.2 B") == pytest.approx(1.2e9)
    assert si_value("45.6 TFLOPS") == pytest.approx(45.6e12)
    assert si_value("12 FLOPS") == 12 and si_value("3") == 3


def test_megatron_log_gives_layout_and_median_step_time():
    log = parse_log_file(LOGS / "megatron_gpt_1p3b_tp2_dp4.log")
    run, problems = row_from_log(log, {"cluster": "dgx-a100-80gb"}, "m")
    assert not problems
    assert (run.gpus, run.tp, run.pp, run.dp, run.cp, run.vpp) == (8, 2, 1, 4, 1, 1)
    assert (run.layers, run.hidden, run.heads, run.kv_heads, run.ffn, run.seq_len, run.vocab) == (24, 2048, 16, 16, 8192, 2048, 50304)
    assert (run.micro_batch, run.global_batch, run.zero, run.offload, run.mlp) == (4, 256, 1, "none", "gelu")
    assert (run.recompute, run.seq_parallel, run.dtype, run.confidence) == ("none", 1, "bf16", "high")
    # Median of the logged intervals after the first (warm-up) one: 3725.9, 3718.4, 3731.0, 3722.6, 3716.8 ms.
    assert run.step_time_s == pytest.approx(3.7226)
    assert float(run.extra["tflops_per_gpu"]) == pytest.approx(159.7)
    assert run.mem_gib == pytest.approx(31544.06640625 / 1024)


def test_truncated_megatron_line_is_reported_with_file_and_line_and_skipped():
    log = parse_log_file(LOGS / "megatron_deepspeed_truncated.log")
    assert [str(p) for p in log.problems] == [
        f"{LOGS / 'megatron_deepspeed_truncated.log'}:5: Megatron iteration line has no "
        "'elapsed time per iteration (ms)' (truncated?); line skipped"]
    flags = {"gpus": 1, "layers": 12, "hidden": 768, "heads": 12, "seq_len": 1024, "vocab": 50257, "dtype": "fp16"}
    run, _ = row_from_log(log, flags, "md")
    assert run.step_time_s == pytest.approx(1.3224)  # median of 1322.4, 1318.9, 1325.1 ms
    assert float(run.extra["tflops_per_gpu"]) == pytest.approx(36.25)  # Megatron-DeepSpeed's "TFLOPs:" field
    assert run.global_batch == 8 and run.confidence == "medium" and "from flags: gpus" in run.notes


def test_flag_overrides_log_and_says_so():
    """The override is said on stderr and kept in the row: its notes name the log's value and it is not a
    high-confidence row (ingest --gpus 16 --dp 8 on an 8-GPU log wrote gpus 16, confidence high, notes silent)."""
    log = parse_log_file(LOGS / "megatron_gpt_1p3b_tp2_dp4.log")
    run, problems = row_from_log(log, {"micro_batch": 2}, "m")
    assert run.micro_batch == 2
    assert any("--micro-batch 2 overrides micro_batch=4 from the log" in str(p) for p in problems)
    assert run.confidence == "medium" and run.notes.endswith("; flags override the log: micro_batch (log 4)")
    same, _ = row_from_log(log, {"micro_batch": 4, "cluster": "dgx-a100-80gb"}, "m")
    assert same.confidence == "high" and "override" not in same.notes


def test_a_logged_memory_figure_is_marked_as_the_allocator_peak():
    """Every memory figure a log prints is torch's allocated peak (Megatron 'max allocated', DeepSpeed
    MaxMemAllocated, Max_MA); without mem_method validate compared it with the whole footprint, CUDA context,
    NCCL buffers and the allocator's cache included (1.2 GiB more for this row)."""
    from planner.calibrate.validation import iter_predictions

    log = parse_log_file(LOGS / "megatron_gpt_1p3b_tp2_dp4.log")
    run, _ = row_from_log(log, {"cluster": "dgx-a100-80gb"}, "m")
    assert run.extra["mem_method"] == "allocator-peak"
    result = next(iter(iter_predictions([run])))
    memory = result.predicted["memory"]
    assert result.predicted_memory_bytes == memory["allocated_bytes"] < memory["total_bytes"]
    no_memory = parse_log_text("[Rank 0] iteration 1/ 10 | elapsed time per iteration (ms): 100.0 |\n"
                               "[Rank 0] iteration 2/ 10 | elapsed time per iteration (ms): 100.0 |\n", "t.log")
    bare, _ = row_from_log(no_memory, {"gpus": 1, "global_batch": 8}, "t")
    assert bare.mem_gib is None and "mem_method" not in bare.extra


def test_log_without_step_time_gives_no_row():
    log = parse_log_text("hello\nworld\n", "empty.log")
    run, problems = row_from_log(log, {}, "x")
    assert run is None and "empty.log: no step time found" in str(problems[-1])


def test_deepspeed_timer_lines_old_and_new_names():
    text = "\n".join([
        "[2023-04-01 10:00:00,000] [INFO] [logging.py:96:log_dist] [Rank 0] time (ms) | forward: 100.00 | backward: 200.00 | backward_inner: 150.00 | backward_allreduce: 50.00 | step: 30.00",
        "[Rank 0] time (ms) | fwd_microstep: 90.00 | bwd_microstep: 190.00 | step_microstep: 20.00",
        "[Rank 0] time (ms) | fwd: 90.00 | bwd: 190.00 | bwd_inner: 140.00 | bwd_allreduce: 50.00 | step: 20.00",
        "[Rank 0] time (ms) | fwd: 92.00 | bwd: oops | step: 20.00",
    ])
    log = parse_log_text(text, "t.log")
    assert [t["fwd"] for _, t in log.timers] == [0.1, 0.09]
    assert len(log.micro_timers) == 1
    assert [str(p) for p in log.problems] == ["t.log:4: wall_clock_breakdown entry 'bwd: oops' is not 'name: milliseconds'; line skipped"]
    run, _ = row_from_log(log, {"gpus": 1, "global_batch": 8}, "t", skip=0)
    assert run.step_time_s == pytest.approx((0.33 + 0.30) / 2)


def test_a_pipeline_at_tensor_parallel_1_is_not_read_as_no_pipeline():
    """DeepSpeed's mp_world_size=1 was read as "no tensor or pipeline split", so a Megatron-DeepSpeed run at tp 1,
    pp 2 (its mpu the PipelineParallelGrid, whose model-parallel size is the tensor dimension alone:
    runtime/pipe/topology.py) gave pp 1 over Megatron's pipeline_model_parallel_size 2, and no row (tp x pp x dp
    != gpus). A hand-written log in the form of the other Megatron-DeepSpeed fixtures."""
    run, problems = row_from_log(parse_log_file(LOGS / "megatron_deepspeed_tp1_pp2.log"), {}, "pp2")
    assert run is not None, problems
    assert (run.gpus, run.tp, run.pp, run.dp) == (8, 1, 2, 4)
    plain = deepspeed_layout(parse_log_text("\t self.dp_world_size=8\n\t self.mp_world_size=1\n"
                                            "[INFO] [config.py:1000:print]   world_size ................... 8\n", "dp.log"))
    assert (plain.get("tp"), plain.get("pp")) == (1, 1)  # every rank a data replica: no pipeline either


def test_cli_writes_and_appends_rows(tmp_path, capsys):
    out = tmp_path / "runs.csv"
    megatron = str(LOGS / "megatron_gpt_1p3b_tp2_dp4.log")
    assert main(["ingest", megatron, "--cluster", "dgx-a100-80gb", "--out", str(out)]) == 0
    assert main(["ingest", megatron, "--cluster", "dgx-a100-80gb", "--out", str(out)]) == 2
    assert "--force to overwrite" in capsys.readouterr().err
    truncated = str(LOGS / "megatron_deepspeed_truncated.log")
    assert main(["ingest", truncated, "--gpus", "1", "--layers", "12", "--hidden", "768", "--seq-len", "1024",
                 "--out", str(out), "--append"]) == 0
    err = capsys.readouterr().err
    # heads and vocab are not in the log or flags: the row is kept (empty = not known), and the count line says
    # validate skips it (helper-found: it said only "1 row(s) -> runs.csv")
    assert "megatron_deepspeed_truncated.log:5:" in err and "1 row(s) -> " in err and "(1 incomplete: validate" in err
    runs, problems = read_runs(out)
    assert not problems and [r.id for r in runs] == ["megatron_gpt_1p3b_tp2_dp4", "megatron_deepspeed_truncated"]


def test_no_rows_error_leads_with_why_the_log_gave_none(capsys):
    """Helper-found: a log with a step time and a layout that disagrees with --gpus said "none of the 1 log(s) had
    a step time", the real reason further down the line."""
    megatron = str(LOGS / "megatron_gpt_1p3b_tp2_dp4.log")
    assert main(["ingest", megatron, "--gpus", "16"]) == 2
    err = capsys.readouterr().err
    assert "had a step time" not in err and "gave a row: " + megatron + ": tp(2) * pp(1) * dp(4) * cp(1) = 8 != gpus(16)" in err


def test_cli_exit_codes_for_logs_without_rows(tmp_path, capsys):
    empty = tmp_path / "empty.log"
    empty.write_text("nothing to see\n")
    assert main(["ingest", str(empty)]) == 2
    assert "no rows" in capsys.readouterr().err
    megatron = str(LOGS / "megatron_gpt_1p3b_tp2_dp4.log")
    assert main(["ingest", megatron, str(empty)]) == 1  # one row printed, one log without a step time
    captured = capsys.readouterr()
    assert captured.out.startswith("id,") and "empty.log: no step time found" in captured.err
    assert main(["ingest", str(tmp_path / "missing.log")]) == 2


# Captured from this machine: `worker.py` under the DeepSpeed 0.19.8 launcher (CPU accelerator, gloo),
# log level info, 2 ranks; see tests/fixtures/logs/README.md.
ZERO2 = LOGS / "deepspeed_0.19.8_zero2_ga2_flops_profiler.log"
ZERO3_OFFLOAD = LOGS / "deepspeed_0.19.8_zero3_offload_optimizer.log"
TINY_FLAGS = {"cluster": "cpu-local", "layers": 2, "hidden": 128, "heads": 4, "seq_len": 64, "vocab": 1024, "mlp": "gelu"}


def test_deepspeed_zero2_log_layout_from_printed_config():
    log = parse_log_file(ZERO2)
    assert not log.problems
    assert log.ds_user_config["zero_optimization"]["stage"] == 2
    run, problems = row_from_log(log, TINY_FLAGS, "z2")
    assert not problems
    assert (run.gpus, run.dp, run.tp, run.pp, run.cp, run.zero, run.offload) == (2, 2, 1, 1, 1, 2, "none")
    assert (run.micro_batch, run.global_batch, run.dtype) == (2, 8, "fp32")  # 2 per rank x 2 ranks x 2 accumulation
    assert run.confidence == "medium" and "from flags: layers, hidden, heads, seq_len, vocab, mlp" in run.notes


def test_deepspeed_step_time_from_throughput_timer_with_timer_cross_check():
    run, _ = row_from_log(parse_log_file(ZERO2), TINY_FLAGS, "z2")
    # ThroughputTimer at global steps 4, 6, 8; the first is dropped: 8 samples / CurrSamplesPerSec.
    assert run.step_time_s == pytest.approx((8 / 145.16917795729015 + 8 / 146.94737061148405) / 2)
    assert "ThroughputTimer" in run.notes
    assert float(run.extra["timer_step_time_s"]) == pytest.approx(run.step_time_s, rel=0.3)
    assert float(run.extra["flops_profiler_step_time_s"]) == pytest.approx(0.05005)  # last profile: 50.05 ms
    assert float(run.extra["flops_profiler_tflops_per_gpu"]) == pytest.approx(8.58e-3)
    assert run.mem_gib == pytest.approx(0.41)  # MaxMemAllocated as DeepSpeed printed it


def test_a_global_batch_flag_does_not_relabel_the_throughput_timer_step_time():
    """DeepSpeed's ThroughputTimer prints CurrSamplesPerSec = the engine's train_batch_size / step time
    (deepspeed/runtime/engine.py:637-638 passes batch_size=self.train_batch_size(); deepspeed/utils/timer.py:271,
    DeepSpeed 0.19.8): a --global-batch flag that overrides the printed 8 doubled the step time to 16 / rate; then
    kept the batch-8 time under a batch-16 label. Now refused: the flag cannot relabel a measured batch."""
    with pytest.raises(PlannerInputError, match=r"--global-batch 16: the log's step time was measured at global batch 8"):
        row_from_log(parse_log_file(ZERO2), {**TINY_FLAGS, "global_batch": 16}, "z2")
    run, _ = row_from_log(parse_log_file(ZERO2), {**TINY_FLAGS, "global_batch": 8}, "z2")
    assert run.step_time_s == pytest.approx((8 / 145.16917795729015 + 8 / 146.94737061148405) / 2)


def test_deepspeed_offload_and_stage3_from_printed_zero_config():
    run, _ = row_from_log(parse_log_file(ZERO3_OFFLOAD), TINY_FLAGS, "z3")
    assert (run.zero, run.offload, run.global_batch, run.gpus) == (3, "optimizer", 4, 2)


def test_timers_only_when_no_throughput_lines():
    text = "\n".join(line for line in ZERO2.read_text().splitlines() if "CurrSamplesPerSec" not in line)
    run, _ = row_from_log(parse_log_text(text, "cut.log"), TINY_FLAGS, "t")
    assert "wall_clock_breakdown fwd+bwd+step" in run.notes
    assert run.step_time_s == pytest.approx(float(row_from_log(parse_log_file(ZERO2), TINY_FLAGS, "z")[0].extra["timer_step_time_s"]))


def test_truncated_deepspeed_config_json_is_reported_and_the_rest_used():
    lines = ZERO2.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "json = {" in line)
    text = "\n".join(lines[: start + 6])  # the log ends inside the printed JSON (a killed job)
    log = parse_log_text(text, "killed.log")
    assert [str(p) for p in log.problems] == [f"killed.log:{start + 1}: DeepSpeed user config JSON is truncated or malformed; ignored"]
    assert log.ds_config["zero_optimization_stage"] == "2"  # printed before the JSON, still used


# Silent wrong rows found by exploratory testing, each from a fixture edited as a user's log would differ.
MEGATRON_LOG = LOGS / "megatron_gpt_1p3b_tp2_dp4.log"
ITERATION = re.compile(r"^ \[.*\] iteration\s+(\d+)/.*$")


def _megatron_variant(tmp_path, keep) -> Path:
    """The Megatron fixture with its iteration lines replaced by keep(number, line) (None drops the line)."""
    lines = []
    for line in MEGATRON_LOG.read_text().splitlines():
        match = ITERATION.match(line)
        new = keep(int(match.group(1)), line) if match else line
        if new is not None:
            lines.append(new)
    path = tmp_path / "variant.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_too_few_logged_steps_say_the_warm_up_is_in(tmp_path):
    """One logged iteration (the warm-up one): it was taken as the steady step with high confidence and notes
    saying it had been skipped."""
    log = parse_log_file(_megatron_variant(tmp_path, lambda n, line: line if n == 10 else None))
    run, problems = row_from_log(log, {"cluster": "dgx-a100-80gb"}, "one")
    assert run.step_time_s == pytest.approx(4.1052)
    assert run.confidence == "low" and "warm-up included" in run.notes
    assert any("includes the warm-up" in p.reason for p in problems)


def test_too_few_logged_steps_give_tflops_from_the_same_iterations_as_the_step_time(tmp_path):
    """Helper-found: with no more logged steps than --skip the step time was the median of all of them (warm-up
    included) while tflops_per_gpu, taken after the skip, was left out: one row, two sets of iterations. Both now
    come from the same ones (iteration 10 of the fixture: 4105.2 ms, 144.9 TFLOP/s/GPU), under one warning."""
    log = parse_log_file(_megatron_variant(tmp_path, lambda n, line: line if n == 10 else None))
    run, problems = row_from_log(log, {"cluster": "dgx-a100-80gb"}, "one")
    assert run.step_time_s == pytest.approx(4.1052)
    assert float(run.extra["tflops_per_gpu"]) == pytest.approx(144.9)
    warnings = [p.reason for p in problems if "warm-up" in p.reason]
    assert len(warnings) == 1 and "step time includes the warm-up, as does tflops_per_gpu" in warnings[0]
    assert "--skip 1" in warnings[0] and "only 1 logged step(s)" in warnings[0]


def test_megatron_ramp_up_iterations_are_left_out(tmp_path):
    """Batch-size ramp-up: iterations 10-40 at global batch 64 (~1 s), 50 on at 256. The row is at 256 and its
    step time only from those (the median mixed both regimes)."""
    def ramp(n, line):
        if n <= 40:
            line = re.sub(r"global batch size:\s+256", "global batch size:    64", line)
            return re.sub(r"elapsed time per iteration \(ms\): [\d.]+", "elapsed time per iteration (ms): 1001.0", line)
        return line
    run, problems = row_from_log(parse_log_file(_megatron_variant(tmp_path, ramp)), {"cluster": "dgx-a100-80gb"}, "r")
    assert run.global_batch == 256
    assert run.step_time_s == pytest.approx(3.7198, rel=1e-3)  # iterations 60 on (50 skipped): 3716.8, 3722.6, ...
    assert any("ramp-up" in p.reason for p in problems)


def test_deepspeed_accumulation_sizes_the_global_batch_without_train_batch_size(tmp_path):
    """Without a printed train_batch_size the global batch was micro x dp (4 instead of 16 with 4 accumulation
    steps), and the ThroughputTimer's step time a quarter of the real one."""
    text = ZERO2.read_text()
    text = re.sub(r"^.*train_batch_size \.+.*$\n", "", text, flags=re.M)
    text = re.sub(r'"train_batch_size": \d+,?\s*', "", text)
    path = tmp_path / "no_tbs.log"
    path.write_text(text)
    log = parse_log_file(path)
    run, _ = row_from_log(log, TINY_FLAGS, "ga")
    assert run.global_batch == run.micro_batch * run.dp * 2  # the fixture's gradient_accumulation_steps 2


def test_megatron_deepspeed_dtype_comes_from_megatrons_arguments(tmp_path):
    """A Megatron log (bf16 True) with one DeepSpeed config line was ingested as fp32: DeepSpeed's fallback for a
    config naming no half precision overrode Megatron's arguments."""
    text = MEGATRON_LOG.read_text() + "[2024-06-11 14:07:00,000] [INFO] [config.py:1000:print]   dp_world_size ........ 4\n"
    path = tmp_path / "mds.log"
    path.write_text(text)
    run, _ = row_from_log(parse_log_file(path), {"cluster": "dgx-a100-80gb"}, "mds")
    assert run.dtype == "bf16"


@pytest.mark.parametrize("user_json", ["5", "[1, 2]", '"abc"'])
def test_a_user_config_that_is_not_an_object_is_ignored(tmp_path, user_json):
    """A DeepSpeed user config printed as a number, a list or a string raised AttributeError (exit 70)."""
    path = tmp_path / "j.log"
    path.write_text("[2026] [INFO] [config.py:678:print]   zero_optimization_stage ...... 2\n"
                    f"[2026] [INFO] [config.py:664:print_user_config]   json = {user_json}\n"
                    "[Rank 0] time (ms) | fwd: 10 | bwd: 20 | step: 5\n" * 1)
    assert deepspeed_layout(parse_log_file(path))["zero"] == 2  # from the printed config


def test_the_stack_comes_from_the_log_and_validate_reads_it(tmp_path):
    """ingest wrote neither `framework` nor `flash_attention`, so validate priced every ingested row on the
    neutral stack with flash attention inferred. Megatron's arguments block names megatron and its
    transformer_impl (TE's attention: flash / fused on by default); DeepSpeed's engine output names deepspeed."""
    megatron, _ = row_from_log(parse_log_file(LOGS / "megatron_gpt_1p3b_tp2_dp4.log"), {"cluster": "dgx-a100-80gb"}, "m")
    assert (megatron.extra["framework"], megatron.extra["flash_attention"]) == ("megatron", "1")
    zero2, _ = row_from_log(parse_log_file(LOGS / "deepspeed_0.19.8_zero2_ga2_flops_profiler.log"), {}, "d")
    assert zero2.extra["framework"] == "deepspeed" and "flash_attention" not in zero2.extra  # the log does not say
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(LOGS / "megatron_gpt_1p3b_tp2_dp4.log"), "--cluster", "dgx-a100-80gb",
                 "--out", str(out)]) == 0
    (run,), _ = read_runs(out)
    from planner.calibrate.validation import run_to_config
    inferred = {}
    _, layout, _ = run_to_config(run, inferred=inferred)
    assert (layout.framework, layout.flash_attention) == ("megatron", True)
    assert "framework" not in inferred and "flash_attention" not in inferred


@pytest.mark.parametrize("arguments, expected", [
    ({"normalization": "RMSNorm", "add_bias_linear": "False"}, {"norm": "rmsnorm", "bias": 0}),  # Llama recipe
    ({"normalization": "LayerNorm", "add_bias_linear": "True"}, {"norm": "layernorm", "bias": 1}),  # the defaults
    ({"normalization": "RMSNorm", "add_bias_linear": "True"}, {"norm": "rmsnorm", "bias": 1}),
    ({"num_layers": "24"}, {"norm": "layernorm", "bias": 1}),  # before the arguments existed: GPT (v2.5)
    ({"normalization": "FancyNorm"}, {}),  # a norm the runs CSV cannot hold: left empty
    ({}, {}),  # not a Megatron log
])
def test_bias_and_norm_from_megatrons_arguments(arguments, expected):
    """The runs CSV's bias and norm columns from --normalization / --disable-bias-linear (megatron/training/
    arguments.py), so an ingested Megatron GPT row is priced with its biases and LayerNorm, as validate prices the
    published GPT rows, not as a Llama."""
    from planner.profile.ingest import megatron_bias_and_norm, megatron_layout

    layout = megatron_layout(arguments)
    assert {key: layout[key] for key in ("norm", "bias") if key in layout} == expected
    if arguments:
        assert megatron_bias_and_norm(arguments) == expected


@pytest.mark.parametrize("arguments, expected", [
    ({"untie_embeddings_and_output_weights": "False", "num_layers": "24"}, {"tied_embeddings": 1}),
    ({"untie_embeddings_and_output_weights": "True", "num_layers": "80"}, {"tied_embeddings": 0}),  # Llama recipes
    ({"num_layers": "24"}, {"tied_embeddings": 1}),  # before 82c7ba57 (2022-12-07): Megatron's GPT always tied
    ({}, {}),  # not a Megatron log
])
def test_tied_embeddings_from_megatrons_arguments(arguments, expected):
    """The runs CSV's tied_embeddings column from --untie-embeddings-and-output-weights (megatron/training/
    arguments.py:2460; Megatron-DeepSpeed's too), so an ingested Llama-style run keeps its own output layer and a
    GPT run shares it, as validate prices the published rows."""
    from planner.profile.ingest import megatron_layout, megatron_tied_embeddings

    assert megatron_tied_embeddings(arguments) == expected
    layout = megatron_layout(arguments)
    assert {key: layout[key] for key in ("tied_embeddings",) if key in layout} == expected


@pytest.mark.parametrize("arguments, expected", [
    ({"attention_dropout": "0.1", "hidden_dropout": "0.1"}, {"dropout": 0.1}),  # Megatron's defaults (GPT)
    ({"attention_dropout": "0.0", "hidden_dropout": "0.0"}, {"dropout": 0.0}),  # Llama, DeepSeek, Qwen recipes
    ({"attention_dropout": "0.0", "hidden_dropout": "0.1"}, {"dropout": 0.1}),  # one probability: either mask kept
    ({"attention_dropout": "None", "hidden_dropout": "1.5"}, {}),  # not a probability: left empty
    ({"num_layers": "24"}, {}),  # a log cut before the arguments' end
])
def test_dropout_from_megatrons_arguments(arguments, expected):
    """The runs CSV's dropout column from Megatron's printed attention_dropout / hidden_dropout (TransformerConfig
    fields, megatron/core/transformer/transformer_config.py:188, 191): rows ingested from logs were priced without
    dropout, so a GPT run with Megatron's default 0.1 lost its masks' memory and passes."""
    from planner.profile.ingest import megatron_dropout, megatron_layout

    assert megatron_dropout(arguments) == expected
    layout = megatron_layout(arguments)
    assert {key: layout[key] for key in ("dropout",) if key in layout} == expected


def test_an_ingested_megatron_row_carries_its_dropout_to_validate(tmp_path):
    """The fixture's Megatron printed attention_dropout and hidden_dropout 0.0; a log with Megatron's defaults (0.1)
    is priced with the masks: more activation memory than the same run without them."""
    from planner.calibrate.validation import run_to_config
    from planner.cost.memory import per_gpu_memory
    from planner.specs.candidate_batch import single_batch
    from planner.specs.clusters import load_cluster

    text = (LOGS / "megatron_gpt_1p3b_tp2_dp4.log").read_text(encoding="utf-8")
    with_defaults = tmp_path / "gpt_defaults.log"
    with_defaults.write_text(re.sub(r"(\s(?:attention|hidden)_dropout \.+ )0\.0", r"\g<1>0.1", text), encoding="utf-8")
    rows = []
    for log in (LOGS / "megatron_gpt_1p3b_tp2_dp4.log", with_defaults):
        out = tmp_path / f"{log.stem}.csv"
        assert main(["ingest", str(log), "--cluster", "dgx-a100-80gb", "--out", str(out)]) == 0
        (run,), _ = read_runs(out)
        rows.append(run)
    assert [float(run.extra["dropout"]) for run in rows] == [0.0, 0.1]
    (plain, masked) = [run_to_config(run) for run in rows]
    assert (plain[0].dropout, masked[0].dropout) == (0.0, 0.1)
    memory = [per_gpu_memory(single_batch(model, layout), load_cluster("dgx-a100-80gb"))["parts"]["activations"][0]
              for model, layout, _ in (plain, masked)]
    assert memory[1] > memory[0]


def test_an_ingested_megatron_row_carries_bias_and_norm_to_validate(tmp_path):
    out = tmp_path / "runs.csv"
    assert main(["ingest", str(LOGS / "megatron_gpt_1p3b_tp2_dp4.log"), "--cluster", "dgx-a100-80gb",
                 "--out", str(out)]) == 0
    (run,), _ = read_runs(out)
    assert (run.extra["bias"], run.extra["norm"]) == ("1", "layernorm")  # normalization LayerNorm, biases by default
    assert run.extra["tied_embeddings"] == "1"  # no untie_embeddings_and_output_weights: GPT's tied output layer
    from planner.calibrate.validation import run_to_config

    model, _, _ = run_to_config(run)
    assert (model.bias, model.norm, model.tied_embeddings) == (True, "layernorm", True)


@pytest.mark.parametrize("arguments, expected", [
    ({"attention_backend": "AttnBackend.auto"}, 1),
    ({"attention_backend": "AttnBackend.flash", "transformer_impl": "local"}, 1),
    ({"attention_backend": "AttnBackend.fused"}, 1),
    ({"attention_backend": "AttnBackend.unfused", "transformer_impl": "transformer_engine"}, 0),
    ({"attention_backend": "AttnBackend.local", "use_flash_attn": "True"}, 0),
    ({"use_flash_attn": "True", "transformer_impl": "local"}, 1),
    ({"use_flash_attn": "False", "transformer_impl": "transformer_engine"}, 1),
    ({"use_flash_attn": "False", "transformer_impl": "local"}, 0),
    ({"use_flash_attn": "False"}, None),  # Megatron before Transformer Engine: the args do not settle it
    ({}, None),
])
def test_flash_attention_from_megatrons_arguments(arguments, expected):
    from planner.profile.ingest import flash_attention_from_log

    assert flash_attention_from_log(arguments) == expected


@pytest.mark.parametrize("version, expected", [("0.3.12", "deepspeed"), ("0.3.13", "deepspeed-v0.3"),
                                               ("0.5.4", "deepspeed-v0.3"), ("0.5.5", "deepspeed"),
                                               ("0.10.0", "deepspeed")])
def test_deepspeed_releases_with_per_parameter_zero3_collectives_are_deepspeed_v03(version, expected):
    """frameworks/deepspeed_v03.py: v0.3.13 (first stage 3) to v0.5.4 (last before the coalesced gathers)."""
    from planner.profile.ingest import framework_from_log

    text = (f"[2021-04-01 10:00:00,000] [INFO] [logging.py:60:log_dist] [Rank 0] DeepSpeed info: version={version}, "
            "git-hash=abc, git-branch=master\n")
    assert framework_from_log(parse_log_text(text, "x.log")) == expected
    megatron_deepspeed = parse_log_text("------ arguments ------\n  deepspeed ........ True\n"
                                        "  num_layers ........ 24\n-- end of arguments --\n", "md.log")
    assert framework_from_log(megatron_deepspeed) == "deepspeed"


def test_stack_flags_win_over_the_log_and_say_so(capsys, tmp_path):
    log = str(LOGS / "megatron_gpt_1p3b_tp2_dp4.log")
    assert main(["ingest", log, "--cluster", "dgx-a100-80gb", "--framework", "megatron", "--flash-attention", "0"]) == 0
    captured = capsys.readouterr()
    assert "--flash-attention 0 overrides flash_attention=1 from the log" in captured.err
    header, row = captured.out.splitlines()[:2]
    cells = dict(zip(header.split(","), next(iter(__import__("csv").reader([row])))))
    assert (cells["framework"], cells["flash_attention"]) == ("megatron", "0")


MDS_ARGUMENTS = """------------------------ arguments ------------------------
  bf16 ............................................ True
  checkpoint_activations .......................... {checkpoint}
  deepspeed ....................................... True
  global_batch_size ............................... 256
  hidden_size ..................................... 2048
  micro_batch_size ................................ 4
  num_attention_heads ............................. 16
  num_layers ...................................... 24
  padded_vocab_size ............................... 50304
  pipeline_model_parallel_size .................... 2
  recompute_granularity ........................... None
  seq_length ...................................... 2048
  tensor_model_parallel_size ...................... 2
  world_size ...................................... 16
-------------------- end of arguments ---------------------
"""
MDS_ITERATION = (" iteration       {n}/    1000 | consumed samples:     2560 | elapsed time per iteration (ms): 3720.0 | "
                 "global batch size:   256 | TFLOPs: 150.30 |\n")


def _megatron_deepspeed_log(tmp_path, checkpoint="True", deepspeed_world=4, megatron_world=16) -> Path:
    """A Megatron-DeepSpeed log as its arguments block and DeepSpeed's config print write it."""
    text = MDS_ARGUMENTS.format(checkpoint=checkpoint).replace("world_size ...................................... 16",
                                                                f"world_size ...................................... {megatron_world}")
    text += ("[2024-06-11 14:02:05,000] [INFO] [config.py:988:print]   train_batch_size ............ 256\n"
             f"[2024-06-11 14:02:05,000] [INFO] [config.py:988:print]   world_size .................. {deepspeed_world}\n")
    text += "".join(MDS_ITERATION.format(n=n) for n in (10, 20, 30))
    path = tmp_path / "mds.log"
    path.write_text(text)
    return path


@pytest.mark.parametrize("checkpoint, expected", [("True", "full"), ("False", "none")])
def test_megatron_deepspeed_checkpoint_activations_is_full_recompute(tmp_path, checkpoint, expected):
    """Megatron-DeepSpeed's --checkpoint-activations (recompute_granularity stays None) was written as recompute=none."""
    run, _ = row_from_log(parse_log_file(_megatron_deepspeed_log(tmp_path, checkpoint)), {"cluster": "dgx-a100-80gb"}, "m")
    assert run.recompute == expected


def test_megatron_deepspeed_gpus_come_from_megatrons_world_size(tmp_path):
    """DeepSpeed's config print world_size is the data-parallel size under Megatron's mpu
    (deepspeed/runtime/config.py:458-463); ingest took it as gpus (4 for 16 GPUs at tp2 pp2 dp4)."""
    run, problems = row_from_log(parse_log_file(_megatron_deepspeed_log(tmp_path)), {"cluster": "dgx-a100-80gb"}, "m")
    assert (run.gpus, run.tp, run.pp, run.dp) == (16, 2, 2, 4)
    assert any("DeepSpeed world_size 4 differs from Megatron's world_size 16; gpus = 16" in str(p)
               and "it is the data-parallel size (4)" in str(p) for p in problems)


def test_a_deepspeed_world_size_that_is_neither_is_reported(tmp_path):
    run, problems = row_from_log(parse_log_file(_megatron_deepspeed_log(tmp_path, deepspeed_world=3)),
                                 {"cluster": "dgx-a100-80gb"}, "m")
    assert run.gpus == 16
    assert any("it is not the data-parallel size (4) either" in str(p) for p in problems)


def test_plain_deepspeed_world_size_is_still_the_gpu_count():
    log = parse_log_file(ZERO2)
    assert deepspeed_layout(log)["gpus"] == int(log.ds_config["world_size"])


def test_a_layout_that_does_not_multiply_to_the_gpus_is_not_written(tmp_path, capsys):
    """tp * pp * dp * cp != gpus made a row validate refuses; it is a problem of that log, nothing written."""
    path = _megatron_deepspeed_log(tmp_path)
    run, problems = row_from_log(parse_log_file(path), {"cluster": "dgx-a100-80gb", "dp": 2}, "m")
    assert run is None
    assert any("tp(2) * pp(2) * dp(2) * cp(1) = 8 != gpus(16); file skipped" in str(p) for p in problems)
    out = tmp_path / "rows.csv"
    assert main(["ingest", str(path), "--cluster", "dgx-a100-80gb", "--dp", "2", "--out", str(out)]) == 2
    assert not out.exists()
    assert "8 != gpus(16)" in capsys.readouterr().err


def test_an_unknown_cluster_is_refused_before_anything_is_written(tmp_path, capsys):
    """--cluster nosuch wrote the row and exited 0; validate then could not simulate it."""
    out = tmp_path / "rows.csv"
    assert main(["ingest", str(MEGATRON_LOG), "--cluster", "nosuch", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert not out.exists() and captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert "--cluster nosuch: unknown cluster 'nosuch'" in line and "dgx-a100-80gb" in line


def _megatron_text_without(*markers: str) -> str:
    """The Megatron fixture without the lines containing any of `markers`."""
    text = (LOGS / "megatron_gpt_1p3b_tp2_dp4.log").read_text()
    return "\n".join(line for line in text.splitlines() if not any(marker in line for marker in markers))


def test_a_row_validate_cannot_simulate_is_reported_incomplete_not_high_confidence():
    """A log without the vocabulary (and no --vocab) gave a row with vocab empty, confidence high and no problem;
    validate then skipped it ("missing vocab"). Every column validate requires is checked, heads and vocab too."""
    log = parse_log_text(_megatron_text_without("padded_vocab_size", "padded vocab"), "megatron.log")
    run, problems = row_from_log(log, {"cluster": "dgx-a100-80gb"}, "m")
    assert run.vocab is None
    assert any("layout incomplete" in str(p) and "vocab" in str(p) for p in problems)
    assert run.confidence == "medium"


def test_megatron_vocabulary_comes_from_the_padded_vocab_line():
    """Megatron-LM prints its arguments before it builds the tokenizer (megatron/training/arguments.py
    _print_args, then vocab_utils.py), so a real log shows no padded_vocab_size argument, and vocab_size only when
    it was given, unpadded. The model's vocabulary is the ' > padded vocab (... new size: N)' line; it was never
    read (vocab left empty, or the unpadded size taken)."""
    as_printed = _megatron_text_without("padded_vocab_size")
    run, _ = row_from_log(parse_log_text(as_printed, "megatron.log"), {"cluster": "dgx-a100-80gb"}, "m")
    assert run.vocab == 50304 and run.confidence == "high"
    given = as_printed.replace("vocab_size ...................................... None",
                               "vocab_size ...................................... 50257")
    run, _ = row_from_log(parse_log_text(given, "megatron.log"), {"cluster": "dgx-a100-80gb"}, "m")
    assert run.vocab == 50304


@pytest.mark.parametrize("printed", ["8", "[8]", "[1, 16]"])
def test_a_mixture_of_experts_log_gives_no_row(printed):
    """The runs CSV has no expert columns: a MoE log gave the row of the dense model of the same shape, which
    validate then simulated as such. Megatron-LM prints num_experts as a number, Megatron-DeepSpeed as a list."""
    text = (LOGS / "megatron_gpt_1p3b_tp2_dp4.log").read_text().replace(
        "  num_layers ....", f"  num_experts ..................................... {printed}\n  num_layers ....")
    run, problems = row_from_log(parse_log_text(text, "moe.log"), {"cluster": "dgx-a100-80gb"}, "m")
    assert run is None and any("mixture-of-experts" in str(p) and "file skipped" in str(p) for p in problems)


@pytest.mark.parametrize("printed", ["None", "[1]"])
def test_a_dense_model_printing_num_experts_still_gives_its_row(printed):
    text = (LOGS / "megatron_gpt_1p3b_tp2_dp4.log").read_text().replace(
        "  num_layers ....", f"  num_experts ..................................... {printed}\n  num_layers ....")
    run, problems = row_from_log(parse_log_text(text, "dense.log"), {"cluster": "dgx-a100-80gb"}, "m")
    assert run is not None and not problems


def _ulysses_log(sequence_parallel: int):
    """The ZeRO-2 log as the engine prints it with DeepSpeed-Ulysses over both ranks: the config's world_size is
    the GPU count over the sequence-parallel size (deepspeed/runtime/config.py, mpu-less case)."""
    text = ZERO2.read_text().replace("self.sequence_parallel_size=1", f"self.sequence_parallel_size={sequence_parallel}")
    text = text.replace("self.dp_world_size=2", f"self.dp_world_size={2 // sequence_parallel}")
    text = text.replace("world_size ................... 2", f"world_size ................... {2 / sequence_parallel}")
    return parse_log_text(text, "ulysses.log")


def test_a_ulysses_log_gives_no_row_unless_cp_is_given():
    """The row took the printed world_size (1.0 for 2 GPUs at sequence_parallel_size 2) as the GPU count and no
    sequence split: a 1-GPU run, silently."""
    run, problems = row_from_log(_ulysses_log(2), TINY_FLAGS, "u")
    assert run is None and any("Ulysses" in str(p) and "file skipped" in str(p) for p in problems)
    # as context parallelism, under a stack that has it (deepspeed has none: doctor rejects cp > 1 there)
    run, _ = row_from_log(_ulysses_log(2), {**TINY_FLAGS, "gpus": 2, "cp": 2, "framework": "other"}, "u")
    assert (run.gpus, run.dp, run.cp) == (2, 1, 2) and run.extra["framework"] == "other"
    run, _ = row_from_log(_ulysses_log(1), TINY_FLAGS, "u")
    assert (run.gpus, run.dp, run.cp) == (2, 2, 1)


@pytest.mark.parametrize("arguments, expected", [
    ("  transformer_impl ........ transformer_engine\n  num_layers ........ 24\n", "megatron"),
    ("  transformer_impl ........ local\n", "megatron"),
    ("  num_layers ........ 24\n  scatter_gather_tensors_in_pipeline ........ True\n", "megatron-2022"),
])
def test_a_megatron_log_without_transformer_impl_is_megatron_2022(arguments, expected):
    """Megatron-LM prints every argument (`_print_args`); `transformer_impl` came with Transformer Engine
    (NVIDIA/Megatron-LM@3499542e, 2022-12-21), so a block without it is the Megatron-LM of before Megatron-Core
    (frameworks/megatron_2022.py)."""
    from planner.profile.ingest import framework_from_log

    text = "------------------------ arguments ------------------------\n" + arguments + \
        "-------------------- end of arguments ---------------------\n"
    assert framework_from_log(parse_log_text(text, "x.log")) == expected
