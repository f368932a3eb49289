"""Fuzz law inputs: (N, D, loss) data files for `fit-law` and saved law files for `--law` (issue 7, part 2).

Data: missing columns, non-numeric and non-finite cells, count syntax, JSON lines of every shape;
the reader returns finite positive arrays or a one-line error naming file, line and column, and
`fit-law` (kept cheap: two starts, at most 5 bootstrap resamples) gives a report or a one-line error. Law files:
mutated YAML; loading gives a law whose predictions are finite, or a one-line error naming the file.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.errors import PlannerInputError
from planner.laws.data import read_loss_data
from planner.laws.law_file import law_to_yaml
from planner.laws.published import EPOCH_2024, KAPLAN_2020
from planner.laws.registry import load_law

EXAMPLES = settings.default.max_examples
COLUMN_NAMES = ["N", "D", "C", "loss", "run_name", "params", "tokens", "final_loss", "Model Size", "Training FLOP",
                "extra", "", "n"]
CELLS = st.one_of(
    st.sampled_from(["1e8", "2e9", "70B", "1.4T", "300M", "2.5", "3.1", "0", "-1", "nan", "inf", "-inf", "1e400",
                     "", " ", "x", "1e-320", "true", "1,000", "\u2603"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10, 10**20).map(str), st.text(max_size=6),
)
FIT = ["--n-starts", "2", "--max-iter", "200", "--no-holdout"]


@st.composite
def csv_texts(draw) -> str:
    columns = draw(st.lists(st.sampled_from(COLUMN_NAMES), min_size=1, max_size=5))
    rows = draw(st.lists(st.lists(CELLS, min_size=len(columns), max_size=len(columns)), max_size=8))
    if draw(st.booleans()) and rows:  # ragged
        rows[0] = rows[0][: draw(st.integers(0, len(columns)))]
    lines = [",".join(columns)] + [",".join(cell.replace(",", ";").replace("\n", " ") for cell in row) for row in rows]
    return "\n".join(lines) + "\n"


JSON_VALUE = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=5),
                          lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
                          max_leaves=4)


@st.composite
def jsonl_texts(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.text(max_size=20)))  # not JSON
            continue
        row = draw(st.dictionaries(st.sampled_from(COLUMN_NAMES), CELLS | JSON_VALUE, max_size=5))
        lines.append(json.dumps(row))
    return "\n".join(lines) + "\n"


def _check_data_file(name: str, cli_contract, bootstrap: int) -> None:
    try:
        data = read_loss_data(name)
    except PlannerInputError as error:
        assert "\n" not in str(error)
    else:
        for values in (data.N, data.D, data.loss):
            assert np.all(np.isfinite(values)) and np.all(values > 0), (data.N, data.D, data.loss)
    cli_contract(["fit-law", name, *FIT, "--bootstrap", bootstrap])


@settings(max_examples=EXAMPLES)
@given(text=csv_texts(), bootstrap=st.sampled_from([0, 0, 5]))
def test_law_data_csv(text, bootstrap, case_dir, cli_contract):
    with case_dir() as folder:
        (folder / "data.csv").write_text(text, encoding="utf-8")
        _check_data_file("data.csv", cli_contract, bootstrap)


@settings(max_examples=max(20, EXAMPLES // 2))
@given(text=jsonl_texts(), bootstrap=st.sampled_from([0, 0, 5]))
def test_law_data_json_lines(text, bootstrap, case_dir, cli_contract):
    with case_dir() as folder:
        (folder / "data.jsonl").write_text(text, encoding="utf-8")
        _check_data_file("data.jsonl", cli_contract, bootstrap)


BASE_LAWS = [yaml.safe_load(law_to_yaml(EPOCH_2024)), yaml.safe_load(law_to_yaml(KAPLAN_2020))]
for _base in BASE_LAWS:  # three bootstrap samples are as good a target as a thousand, and print shorter
    _base["samples"] = _base["samples"][:3] if _base.get("samples") else _base.get("samples")
LAW_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-2**66, 2**66), st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=8), st.lists(st.floats(allow_nan=True), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def mutated_laws(draw) -> dict:
    law = copy.deepcopy(draw(st.sampled_from(BASE_LAWS)))
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(["top", "coefficients", "validity"]))
        target = law if section == "top" else law.get(section)
        if not isinstance(target, dict) or not target:
            continue
        key = draw(st.sampled_from(sorted(target, key=str)))
        action = draw(st.sampled_from(["delete", "replace", "scale", "add"]))
        if action == "delete":
            del target[key]
        elif action == "replace":
            target[key] = draw(LAW_JUNK)
        elif action == "add":
            target[draw(st.text(min_size=1, max_size=6))] = draw(LAW_JUNK)
        elif isinstance(target[key], (int, float)) and not isinstance(target[key], bool):
            target[key] = target[key] * draw(st.sampled_from([0, -1, 1e-300, 1e300]))
    return law


@settings(max_examples=EXAMPLES)
@given(law=mutated_laws())
def test_mutated_law_files(law, small_search, case_dir, cli_contract):
    with case_dir() as folder:
        (folder / "mutated.yaml").write_text(yaml.safe_dump(law), encoding="utf-8")
        try:
            loaded = load_law("mutated.yaml")
        except PlannerInputError as error:
            assert "\n" not in str(error) and "mutated.yaml" in str(error), str(error)
        else:
            N, D = np.array([1e8, 1e9, 7e10]), np.array([2e9, 2e10, 1.4e12])
            assert np.all(np.isfinite(loaded.predict(N, D))), law
        cli_contract(["optimize", "--law", "mutated.yaml", "--budget", "50gpuh", "--gpus", "8", "--json"])
