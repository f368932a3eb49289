"""Hyperparameters of a plan (planner.laws.hyperparameters) and their way into the launch files."""

from __future__ import annotations

import json

import pytest

from planner.emit import launch_files
from planner.emit.schedule import train_sequences, train_steps
from planner.specs.clusters import load_cluster
from planner.laws.batch_size import optimal_batch_tokens
from planner.laws.hyperparameters import (COOLDOWN_FRACTION, WARMUP_FRACTION, WEIGHT_DECAY, plan_hyperparameters,
                                          step_law_learning_rate)
from planner.specs.layout import Layout
from planner.specs.model import preset


@pytest.mark.parametrize(("params", "tokens", "lr", "batch_tokens"), [
    # Step Law's two grid-searched settings in the paper's Figure 1 (400M on 40B tokens, 1B on 100B tokens).
    # Values worked by hand from eta = 1.79 N^-0.713 D^0.307 and B = 0.58 D^0.571 in logs, e.g. for 1B / 100B:
    # ln eta = ln 1.79 - 0.713 ln 1e9 + 0.307 ln 1e11 = 0.5822 - 14.7757 + 7.7758 = -6.4177 -> 1.632e-3, and
    # ln B = ln 0.58 + 0.571 ln 1e11 = -0.5447 + 14.4625 = 13.9178 -> 1.108e6 tokens (about 540 x 2048-token sequences).
    (4e8, 4e10, 2.368e-3, 6.565e5),
    (1e9, 1e11, 1.632e-3, 1.108e6),
])
def test_step_law_reproduces_worked_values(params, tokens, lr, batch_tokens):
    plan = plan_hyperparameters(params, tokens, global_batch_tokens=2**20)
    assert plan["learning_rate"]["peak"] == pytest.approx(lr, rel=2e-3)
    assert plan["batch_size"]["optimal_tokens"] == pytest.approx(batch_tokens, rel=2e-3)
    assert plan["validity_warnings"] == []  # both inside Step Law's range and Power Lines' 111M-3.3B


def test_step_law_exponents_and_the_batch_law_agree_with_the_batch_module():
    assert step_law_learning_rate(2e9, 1e11) / step_law_learning_rate(1e9, 1e11) == pytest.approx(2**-0.713)
    assert step_law_learning_rate(1e9, 2e11) / step_law_learning_rate(1e9, 1e11) == pytest.approx(2**0.307)
    plan = plan_hyperparameters(1e9, 1e11, global_batch_tokens=2 * 1.108e6)
    assert plan["batch_size"]["optimal_tokens"] == pytest.approx(float(optimal_batch_tokens(1e11)))
    assert plan["batch_size"]["planned_over_optimal"] == pytest.approx(2.0, rel=2e-3)


def test_every_value_names_its_source():
    plan = plan_hyperparameters(1e9, 1e11, global_batch_tokens=2**20)
    assert "Step Law" in plan["learning_rate"]["source"] and "1.79" in plan["learning_rate"]["source"]
    assert "0.58" in plan["batch_size"]["source"] and "Power Lines" in plan["weight_decay"]["source"]
    assert "Hagele" in plan["schedule"]["source"]
    assert plan["learning_rate"]["validity"] == {"non_embedding_params": [1.19e8, 1e9], "tokens": [7e9, 1e11]}


def test_weight_decay_reports_power_lines_timescale():
    plan = plan_hyperparameters(1e9, 1e11, global_batch_tokens=2**20)
    wd = plan["weight_decay"]
    assert wd["value"] == WEIGHT_DECAY and wd["tokens_per_parameter"] == pytest.approx(100)
    # tau = B / (eta * lambda * D)
    assert wd["timescale_tau"] * plan["learning_rate"]["peak"] * WEIGHT_DECAY * 1e11 == pytest.approx(2**20)


def test_schedule_is_wsd_with_a_one_minus_sqrt_cooldown():
    schedule = plan_hyperparameters(1e9, 1e11, global_batch_tokens=2**20)["schedule"]
    assert schedule["kind"] == "wsd" and schedule["cooldown_shape"] == "1-sqrt" and schedule["min_lr"] == 0.0
    assert schedule["cooldown_fraction"] == COOLDOWN_FRACTION == 0.2 and schedule["warmup_fraction"] == WARMUP_FRACTION


def test_validity_warnings_name_what_is_extrapolated():
    warnings = plan_hyperparameters(7e10, 1.5e13, global_batch_tokens=2**24)["validity_warnings"]
    text = " ".join(warnings)
    assert len(warnings) == 3 and "Step Law" in text and "Power Lines" in text and "above" in text
    below = plan_hyperparameters(5e8, 1e9, global_batch_tokens=2**18)["validity_warnings"]
    assert below == ["D (tokens) = 1e+09 is below the Step Law fitted range [7e+09, 1e+11]: extrapolated"]


@pytest.mark.parametrize("bad", [dict(non_embedding_params=0), dict(tokens=-1), dict(global_batch_tokens=0),
                                 dict(warmup_fraction=0.5, cooldown_fraction=0.6)])
def test_impossible_inputs_are_refused(bad):
    kwargs = dict(non_embedding_params=1e9, tokens=1e11, global_batch_tokens=2**20) | bad
    with pytest.raises(ValueError):
        plan_hyperparameters(**kwargs)


def _plan_and_files(layout: Layout, tokens: float):
    model = preset("llama2-7b")
    files = launch_files(model, layout, load_cluster("dgx-h100"), tokens=tokens)
    plan = plan_hyperparameters(model.non_embedding_params, tokens, layout.global_batch * model.seq_len)
    return model, files, plan


def test_deepspeed_launch_files_carry_the_plans_lr_schedule():
    layout = Layout(tp=2, dp=8, zero=1, global_batch=64, seq_parallel=True, framework="deepspeed")
    model, files, plan = _plan_and_files(layout, 1e10)
    args = files["megatron_args.txt"].splitlines()
    samples = train_sequences(layout, 1e10, model.seq_len)
    peak = plan["learning_rate"]["peak"]
    for expected in (f"--lr {peak:.3g}", f"--min-lr {peak * 0.1:.3g}", "--lr-decay-style cosine",
                     f"--lr-warmup-samples {round(WARMUP_FRACTION * samples)}", f"--lr-decay-samples {samples}",
                     f"--train-samples {samples}", f"--weight-decay {plan['weight_decay']['value']}",
                     "--adam-beta1 0.9", "--adam-beta2 0.95"):
        assert expected in args
    assert "Step Law" in files["launch.sh"] and "WSD" in files["launch.sh"]


def test_megatron_and_torchtitan_run_the_plans_wsd_schedule():
    layout = Layout(tp=2, dp=8, global_batch=64, seq_parallel=True, framework="megatron")
    model, files, plan = _plan_and_files(layout, 1e10)
    samples = train_sequences(layout, 1e10, model.seq_len)
    args = files["megatron_args.txt"].splitlines()
    for expected in (f"--lr {plan['learning_rate']['peak']:.3g}", "--min-lr 0", "--lr-decay-style WSD",
                     "--lr-wsd-decay-style minus_sqrt", f"--lr-wsd-decay-samples {round(0.2 * samples)}",
                     f"--lr-decay-samples {samples}"):
        assert expected in args
    fsdp = Layout(dp=16, zero=3, global_batch=64, framework="fsdp")
    _, files, plan = _plan_and_files(fsdp, 1e10)
    toml = files["job_config.toml"]
    steps = train_steps(fsdp, 1e10, model.seq_len)
    for expected in (f"warmup_steps = {round(0.01 * steps)}", "decay_ratio = 0.2", 'decay_type = "sqrt"',
                     "min_lr_factor = 0.0"):
        assert expected in toml


def test_batch_rule_sets_the_reference_batch_and_the_learning_rate_names_its_law():
    """B_opt follows the search's batch rule (it was always Step Law's, so a DeepSeek-sized batch read '2.81x
    Step Law's B_opt'); the learning rate stays Step Law's and says so."""
    plan = plan_hyperparameters(1e9, 1e11, global_batch_tokens=2**22, batch_rule="deepseek")
    deepseek = float(optimal_batch_tokens(1e11, 1e9, rule="deepseek"))
    assert plan["batch_size"]["optimal_tokens"] == pytest.approx(deepseek)
    assert plan["batch_size"]["planned_over_optimal"] == pytest.approx(2**22 / deepseek)
    assert plan["batch_size"]["rule"] == "deepseek" and "DeepSeek" in plan["batch_size"]["source"]
    assert plan["learning_rate"]["law"] == "Step Law"
    assert plan_hyperparameters(1e9, 1e11, global_batch_tokens=2**22)["batch_size"]["rule"] == "step-law"


def test_optimize_reports_the_batch_against_its_own_rule(capsys):
    from planner.cli import main

    assert main(["optimize", "--budget", "20000gpuh", "--gpus", "64", "--batch-rule", "deepseek", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    batch = plan["hyperparameters"]["batch_size"]
    tokens, n = plan["tokens"], plan["hyperparameters"]["weight_decay"]["tokens_per_parameter"]
    assert batch["optimal_tokens"] == pytest.approx(float(optimal_batch_tokens(tokens, tokens / n, rule="deepseek")))
    assert main(["optimize", "--budget", "20000gpuh", "--gpus", "64", "--batch-rule", "deepseek"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("training"))
    assert "(Step Law)" in line and "DeepSeek LLM's B_opt" in line and "Step Law's B_opt" not in line
