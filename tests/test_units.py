"""Unit strings are parsed once at the edge into SI numbers; anything else is a one-line input error."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from planner.specs import units
from planner.errors import PlannerInputError

GiB = 2**30


@pytest.mark.parametrize(
    "text, expected",
    [
        ("80GiB", 80 * GiB),
        ("40GB", 40e9),
        ("1.5 TiB", 1.5 * 2**40),
        ("512MiB", 512 * 2**20),
        ("2TB", 2e12),
        ("4096", 4096.0),  # bare numbers are bytes
        (1024, 1024.0),
    ],
)
def test_parse_bytes(text, expected):
    assert units.parse_bytes(text, "hbm") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("400Gb/s", 50e9),  # NDR InfiniBand: 400 Gb/s = 50 GB/s (REFERENCE.md)
        ("200Gb/s", 25e9),  # HDR
        ("25GB/s", 25e9),
        ("1.6TB/s", 1.6e12),
        ("400Gbps", 50e9),
        ("100 Mbit/s", 12.5e6),
    ],
)
def test_parse_bandwidth(text, expected):
    assert units.parse_bandwidth(text, "nic_bandwidth") == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    "text, expected",
    [("989TFLOPs", 989e12), ("312 TFLOP/s", 312e12), ("19.5TFLOPS", 19.5e12), ("269GFLOPs", 269e9)],
)
def test_parse_flops_rate(text, expected):
    assert units.parse_flops_rate(text, "peak") == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    "text, expected",
    [("30d", 30 * 86400.0), ("14 days", 14 * 86400.0), ("12h", 43200.0), ("5us", 5e-6), ("15min", 900.0),
     ("2w", 14 * 86400.0), ("3", 3.0), ("250ms", 0.25)],
)
def test_parse_duration(text, expected):
    assert units.parse_duration(text, "deadline") == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("text, expected", [("2T", 2e12), ("70B", 70e9), ("300M", 300e6), ("1.4e12", 1.4e12)])
def test_parse_count(text, expected):
    assert units.parse_count(text, "tokens") == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("text", ["10000gpuh", "10k gpuh", "1e4 GPU-hours", "10000 GPUh"])
def test_parse_gpu_hours_gives_gpu_seconds(text):
    assert units.parse_gpu_hours(text, "--budget") == pytest.approx(3.6e7, rel=1e-15)


@pytest.mark.parametrize("text, expected", [("$2M", 2e6), ("$150k", 150e3), ("2000000", 2e6)])
def test_parse_money(text, expected):
    assert units.parse_money(text, "--budget") == expected


def test_zero_is_allowed_only_when_asked():
    assert units.parse_duration("0s", "latency", allow_zero=True) == 0.0
    with pytest.raises(PlannerInputError):
        units.parse_duration("0s", "latency")


@pytest.mark.parametrize(
    "parser, text",
    [
        (units.parse_bytes, "80 gigs"),
        (units.parse_bytes, "80gib"),  # unit case matters: Gi, not gi
        (units.parse_bytes, "-1GB"),
        (units.parse_bytes, "0GB"),
        (units.parse_bytes, "1e400GB"),  # overflows to inf
        (units.parse_bytes, "nan"),
        (units.parse_bytes, True),
        (units.parse_bytes, ""),
        (units.parse_bandwidth, "400"),  # a bandwidth needs explicit units
        (units.parse_bandwidth, "400GB"),
        (units.parse_bandwidth, "400Xb/s"),
        (units.parse_flops_rate, "989T"),
        (units.parse_flops_rate, "989TiFLOPs"),
        (units.parse_duration, "30 fortnights"),
        (units.parse_count, "2X"),
        (units.parse_gpu_hours, "10000"),
        (units.parse_gpu_hours, "-5gpuh"),
        (units.parse_money, "$2Q"),
    ],
)
def test_bad_units_are_one_line_errors_naming_where(parser, text):
    with pytest.raises(PlannerInputError) as error:
        parser(text, "cluster.yaml: accelerator.hbm")
    message = str(error.value)
    assert message.startswith("cluster.yaml: accelerator.hbm")
    assert "\n" not in message


def test_input_error_collapses_to_one_line():
    assert str(PlannerInputError("a\nb\n  c")) == "a b c"


@given(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False), st.sampled_from(["KiB", "MiB", "GiB", "TiB"]))
def test_binary_sizes_scale_by_powers_of_1024(value, unit):
    scale = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}[unit]
    parsed = units.parse_bytes(f"{value!r}{unit}", "x")
    assert math.isclose(parsed, value * scale, rel_tol=1e-12)


@given(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False), st.sampled_from(["k", "M", "G", "T"]))
def test_bits_are_an_eighth_of_bytes(value, prefix):
    bits = units.parse_bandwidth(f"{value!r}{prefix}b/s", "x")
    octets = units.parse_bandwidth(f"{value!r}{prefix}B/s", "x")
    assert math.isclose(bits * 8, octets, rel_tol=1e-12)


def test_power_parses_watts_and_kilowatts():
    from planner.specs.units import parse_power

    assert parse_power("700W", "x") == 700.0 and parse_power("10.2kW", "x") == 10200.0
    with pytest.raises(PlannerInputError, match="x: expected a power like"):
        parse_power("700", "x")


@pytest.mark.parametrize("parser", [units.parse_bandwidth, units.parse_flops_rate, units.parse_power,
                                    units.parse_gpu_hours])
def test_quantities_that_need_a_unit_say_so_for_a_bare_number(parser):
    """Every parser whose unit is required reads the number and unit one way (units._with_unit), so a bare
    number gets the same error from each: the expected form and that the unit is missing."""
    with pytest.raises(PlannerInputError, match=r"^--flag: expected .* with explicit units, got '700'$"):
        parser("700", "--flag")


def test_only_ascii_digits_are_numbers_and_any_space_still_separates_the_unit():
    """The audit: '１０gpuh' (full-width digits) was read as 10. The review: the fix must not refuse a non-breaking
    space between a number and its unit, which parsed before."""
    from planner.errors import PlannerInputError
    from planner.specs.units import parse_bytes, parse_count, parse_duration

    assert parse_bytes("80\xa0GiB", "x") == 80 * 2**30 and parse_duration("10\xa0ms", "x") == pytest.approx(0.01)
    assert parse_duration("5µs", "x") == pytest.approx(5e-6) and parse_count("1,000", "x") == 1000
    for text in ("１T", "٧B", "１,０００"):
        with pytest.raises(PlannerInputError):
            parse_count(text, "x")


@pytest.mark.parametrize("parse, text", [
    (units.parse_gpu_hours, "1,0000gpuh"), (units.parse_count, "1,5000B"), (units.parse_duration, "3,0000s"),
    (units.parse_count, "1,000,00"), (units.parse_count, "12,34"),
])
def test_digits_grouped_otherwise_than_in_threes_are_refused(parse, text):
    """'1,0000gpuh' read as 10,000 GPU-hours (the first group, then the digit after it glued back on): 1,000 or
    10,000 was meant, and the planner cannot tell which."""
    from planner.errors import PlannerInputError

    with pytest.raises(PlannerInputError, match="got '" + text):
        parse(text, "--flag")


def test_every_grouping_the_planner_prints_still_reads():
    assert units.parse_gpu_hours("737,280 GPU-hours", "x") == 737280 * 3600.0  # GPU-seconds inside
    assert units.parse_count("1,234,567.5", "x") == 1234567.5
