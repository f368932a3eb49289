"""Every number the tool prints is accepted back as input, and durations read in the unit that suits them
(issue 15: a 1.25 h plan printed as "0.1 days"; inference cost without a unit)."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from planner.report.render import human_bytes, human_count, human_days, human_days_range, human_seconds
from planner.specs.units import parse_bytes, parse_count, parse_duration, parse_gpu_hours, parse_money


@pytest.mark.parametrize("days, text", [
    (1.25 / 24, "1.25 h"), (0.8125, "19.5 h"), (0.5 / 24, "30 min"), (1.6, "1.6 days"), (30.0, "30.0 days"),
    (12 / 86400, "12.000 s"),
])
def test_durations_under_a_day_print_as_hours_or_minutes(days, text):
    assert human_days(days) == text


def test_a_range_shares_its_unit_when_it_can():
    assert human_days_range(0.8, 0.9) == "19.2-21.6 h"
    assert human_days_range(0.9, 1.2) == "21.6 h-1.2 days"


def _close(printed: float, value: float) -> bool:
    return math.isclose(printed, value, rel_tol=0.06)  # the printed form keeps 2-3 significant digits


@given(st.floats(1e-9, 1e4))
def test_printed_durations_parse_back(days):
    assert _close(parse_duration(human_days(days), "x") / 86400, days)


@given(st.floats(1e-5, 1e7))
def test_printed_step_times_parse_back(seconds):
    assert _close(parse_duration(human_seconds(seconds), "x"), seconds)


@given(st.floats(100.0, 2.0**50))
def test_printed_sizes_parse_back(size):
    assert _close(parse_bytes(human_bytes(size), "x"), size)


@given(st.floats(100.0, 1e15))
def test_printed_counts_parse_back(count):
    assert _close(parse_count(human_count(count), "x"), count)


@given(st.floats(1.0, 9.99e14))
def test_printed_counts_have_no_exponent(count):
    """999.6e9 printed as '1e+03B' (the unit chosen before rounding to three digits)."""
    assert re.fullmatch(r"\d+(\.\d+)?[kMBT]?", human_count(count)), human_count(count)


@given(st.floats(1e15, 1e30))
def test_huge_counts_print_three_figures_that_parse_back(count):
    """'10000000000000T tokens' for 1e25 (a fixed-model plan given --tokens 1e25): now '1e+25'."""
    text = human_count(count)
    assert re.fullmatch(r"\d(\.\d+)?e\+\d+", text), text
    assert _close(parse_count(text, "x"), count)


@given(st.floats(1e4, 1e15))
def test_huge_durations_print_three_figures_that_parse_back(days):
    """'396374917737.3 days' for a plan of 4e11 days: '3.96e+11 days' from a million days on."""
    text = human_days(days)
    assert len(text.split()[0]) <= 9, text
    assert _close(parse_duration(text, "x") / 86400, days)


def test_printed_budgets_parse_back():
    assert parse_gpu_hours("737,280 GPU-hours", "x") == 737_280 * 3600
    assert parse_money("$2,211,840", "x") == 2_211_840


def test_plan_prints_wall_clock_in_hours_and_inference_with_its_unit(cli):
    code, out, _ = cli(["optimize", "--budget", "2000gpuh", "--gpus", "256", "--inference-tokens", "1T"])
    assert code == 0, out
    line = next(line for line in out.splitlines() if line.startswith("  time/cost"))
    assert " h wall-clock" in line and "days" not in line  # 2000 GPU-hours on 256 GPUs: under 8 h
    assert "GPU-hours for inference)" in line
    wall = line.split("time/cost")[1].split(" wall-clock")[0].strip()
    assert 0 < parse_duration(wall, "x") <= 2000 / 256 * 3600 * 1.01


def test_whole_numbers_take_thousands_separators_and_gpu_lists_refuse_ambiguity(cli):
    code, out, _ = cli(["simulate", "--model", "gpt2-small", "--gpus", "8", "--global-batch", "1,024", "--json"])
    assert code == 0 and '"global_batch": 1024' in out
    code, out, err = cli(["optimize", "--model", "llama2-7b", "--tokens", "1T", "--gpus", "1,024"])
    assert code == 2 and out == "" and "write 1024 without it" in err


def test_json_serialises_numpy_models_paths_and_non_finite_values():
    import json
    from pathlib import Path

    import numpy as np

    from planner.specs.layout import make_layout
    from planner.report.render import json_document

    document = json.loads(json_document({"a": np.float32(1.5), "b": np.arange(3), "c": np.int64(7), "d": np.nan,
                                         "e": np.bool_(True), "f": Path("x/y"), "g": make_layout(tp=2), "h": {3, 1}}))
    assert document["schema_version"] == 1
    assert (document["a"], document["b"], document["c"], document["d"], document["e"]) == (1.5, [0, 1, 2], 7, None, True)
    assert document["f"] == "x/y" and document["g"]["tp"] == 2 and document["h"] == [1, 3]


@pytest.mark.parametrize("value, text", [(737_280.0, "737,280"), (1e30, "1e+30"), (2.5e17, "2.5e+17"), (0.01, "0.01"),
                                         (36.44, "36.4"), (0.0, "0")])
def test_budgets_print_grouped_or_in_exponent_form_not_as_float_noise(value, text):
    """`--budget 1e30gpuh` printed '1,000,000,000,000,000,019,884,624,838,656 GPU-hours' (the double's exact
    value): past ~16 significant digits grouped digits are rounding noise."""
    from planner.report.render import human_amount

    assert human_amount(value) == text


@given(st.floats(1e-6, 1e300))
def test_printed_budgets_of_any_size_parse_back(value):
    from planner.report.render import human_amount

    assert _close(parse_gpu_hours(f"{human_amount(value)} GPU-hours", "x") / 3600, value)
    assert _close(parse_money("$" + human_amount(value), "x"), value)
