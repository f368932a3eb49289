"""The plan's batch against its law's B_opt reads with significant digits: a 3-sequence batch printed '(0.00x Step
Law's B_opt)' (optimize --model llama2-7b --tokens 1T --gpus 64 --global-batch 3)."""

from __future__ import annotations

import pytest

from planner.report.render import ratio_text


@pytest.mark.parametrize("ratio, text", [(2.333, "2.33x"), (1.0, "1.00x"), (0.1, "0.10x"), (0.0029, "0.0029x"),
                                         (0.003, "0.003x"), (242.0, "242.00x")])
def test_ratio_text_keeps_two_significant_digits_below_a_tenth(ratio, text):
    assert ratio_text(ratio) == text


def test_a_tiny_fixed_batch_prints_its_ratio(cli):
    code, out, _ = cli(["optimize", "--model", "llama2-7b", "--tokens", "1T", "--gpus", "64", "--global-batch", "3"])
    assert code == 0
    line = next(line for line in out.splitlines() if "B_opt" in line)
    assert "(0.00x" not in line and "(0.003x Step Law's B_opt)" in line, line


def test_the_reviews_hyperparameter_table_prints_it_the_same_way():
    """The review's table (report.document, shared by both reviews) printed the ratio with two decimals too."""
    from planner.laws.hyperparameters import plan_hyperparameters
    from planner.report.document import hyperparameter_table_blocks

    hyper = plan_hyperparameters(6.5e9, 1e12, 3 * 4096.0)  # llama2-7b's non-embedding N, 1T tokens, 3 sequences
    ratio = hyper["batch_size"]["planned_over_optimal"]
    assert ratio < 0.01
    rows = next(block for block in hyperparameter_table_blocks(hyper) if block[0] == "table")[2]
    batch = next(row for row in rows if row[0] == "batch size")[1]
    assert f"{ratio_text(ratio)} " in batch and "0.00x" not in batch, batch
