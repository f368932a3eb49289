"""Fitted laws saved to YAML and loaded back: same predictions, same intervals, strict schema."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from planner.errors import PlannerInputError
from planner.laws.chinchilla import OvertrainingLaw
from planner.laws.farseer import FarseerLaw
from planner.laws.law_file import load_law_file, save_law
from planner.laws.published import EPOCH_2024, KAPLAN_2020
from planner.laws.registry import load_law

N, D = np.array([1e8, 1e9, 7e10]), np.array([2e9, 2e10, 1.4e12])


@pytest.mark.parametrize("law", [EPOCH_2024, KAPLAN_2020], ids=lambda l: l.name)
def test_round_trip_keeps_predictions_and_intervals(tmp_path, law):
    path = save_law(law, tmp_path / "law.yaml", fit_record={"note": "test"})
    loaded = load_law(str(path))
    assert type(loaded) is type(law) and loaded.name == law.name and loaded.n_definition == law.n_definition
    assert np.allclose(loaded.predict(N, D), law.predict(N, D), rtol=1e-12)
    for a, b in zip(loaded.predict_interval(N, D), law.predict_interval(N, D)):
        assert np.allclose(a, b, rtol=1e-12)
    assert np.allclose(loaded.compute_optimal(1e24), law.compute_optimal(1e24), rtol=1e-12)


def test_round_trip_of_fitted_only_forms(tmp_path):
    validity = EPOCH_2024.validity
    laws = [OvertrainingLaw(name="ot", source="s", n_definition="total", c_definition="6ND", validity=validity,
                            E=1.8, A=500.0, B=1500.0, alpha=0.33, beta=0.33),
            FarseerLaw(name="fs", source="s", n_definition="total", c_definition="6ND", validity=validity,
                       a1=-0.1, b1=-1.0, alpha=-0.3, a2=0.2, b2=7.0, beta=-0.2, a3=0.5, b3=0.6, gamma=-0.1)]
    for law in laws:
        loaded = load_law_file(save_law(law, tmp_path / f"{law.name}.yaml"))
        assert type(loaded) is type(law)
        assert np.allclose(loaded.predict(N, D), law.predict(N, D), rtol=1e-12)


def test_refuses_to_overwrite_without_force(tmp_path):
    path = save_law(EPOCH_2024, tmp_path / "law.yaml")
    with pytest.raises(PlannerInputError, match="--force"):
        save_law(KAPLAN_2020, path)
    save_law(KAPLAN_2020, path, force=True)
    assert load_law_file(path).name == "kaplan"


def _edited_law_file(tmp_path, edit):
    """The Epoch law saved as YAML, with `edit` applied to the parsed document before it is written back."""
    path = save_law(EPOCH_2024, tmp_path / "law.yaml")
    document = yaml.safe_load(path.read_text())
    edit(document)
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(colour="blue"), "'colour'"),
    (lambda d: d.pop("form"), "'form'"),
    (lambda d: d.update(form="cubic"), "'form'"),
    (lambda d: d["coefficients"].pop("beta"), "coefficients"),
    (lambda d: d["validity"].update(n_max="big"), "validity.n_max"),
    (lambda d: d.update(samples=[[1.0, 2.0]]), "samples"),
    # A hand-edited `true` was read as 1.0, and a file's own compute definition was printed beside 6ND's figure.
    (lambda d: d["coefficients"].update(alpha=True), "key 'coefficients.alpha': expected a number, not true or false"),
    (lambda d: d["validity"].update(far_factor=True), "key 'validity.far_factor': expected a number, not true or false"),
    (lambda d: d.update(planner_law_file=True), "key 'planner_law_file': expected a number, not true or false"),
    (lambda d: d.update(c_definition="8ND"), "key 'c_definition': expected '6ND' for form chinchilla"),
])
def test_schema_errors_name_the_key_and_file(tmp_path, edit, message):
    path = _edited_law_file(tmp_path, edit)
    with pytest.raises(PlannerInputError, match=message) as caught:
        load_law_file(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_number_written_as_yaml_text_still_reads(tmp_path):
    """PyYAML reads `5.7e7` (no dot) as text: a hand-written validity range in that form is the number it says."""
    from planner.laws.law_file import _LawFileModel

    document = yaml.safe_load(save_law(EPOCH_2024, tmp_path / "law.yaml").read_text())
    document["validity"]["n_min"] = yaml.safe_load("n: 5.7e7")["n"]
    assert document["validity"]["n_min"] == "5.7e7"
    assert _LawFileModel.model_validate(document).validity.n_min == 5.7e7


def test_not_yaml_is_an_input_error(tmp_path):
    path = tmp_path / "law.yaml"
    path.write_text("form: [unclosed\n")
    with pytest.raises(PlannerInputError, match=r"law\.yaml:\d+: invalid YAML"):
        load_law_file(path)


@pytest.mark.parametrize("edit, message", [
    # Regressions (issue 7 fuzzing): each of these loaded, then crashed `planner optimize`.
    (lambda d: d["validity"].update(n_max=0), "validity.n_max"),  # ZeroDivisionError in the range warning
    (lambda d: d["validity"].update(n_min=1e12), "n_min .* is above n_max"),
    (lambda d: d["coefficients"].update(A=4.8e302), "key 'coefficients'"),  # OverflowError in the frontier
    (lambda d: d["coefficients"].update(A=0.0), "key 'coefficients'"),  # inf frontier, RuntimeWarning
    (lambda d: d["coefficients"].update(alpha=-0.3), "key 'coefficients'"),  # loss rising with N
    (lambda d: d["coefficients"].update(E=float("nan")), "coefficients.E"),
    (lambda d: d.update(samples=[[1.8, 482.0, 2085.0, float("inf"), 0.37]]), "samples"),
    (lambda d: d.update(relative_sigma=-1.0), "relative_sigma"),
    (lambda d: d.update(relative_sigma=2e298), "relative_sigma"),  # exp overflow in the loss interval (campaign)
    (lambda d: d.update(samples=[[1.8, 0.0, 2085.0, 0.35, 0.37]]), r"key 'samples\[0\]'"),
])
def test_law_files_that_would_break_the_planner_are_refused(tmp_path, edit, message):
    path = _edited_law_file(tmp_path, edit)
    with pytest.raises(PlannerInputError, match=message) as caught:
        load_law_file(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("text, got", [("", "an empty file"), ("- a\n- b\n", "a list"), ("3\n", "a number")])
def test_a_law_file_that_is_not_a_mapping(tmp_path, text, got):
    """Regression (issue 7 fuzzing): the message named pydantic's internal model class."""
    path = tmp_path / "law.yaml"
    path.write_text(text)
    with pytest.raises(PlannerInputError, match=f"expected a law file mapping .* got {got}") as caught:
        load_law_file(path)
    assert "_LawFileModel" not in str(caught.value)


def test_an_overtraining_sample_with_alpha_not_beta_is_an_input_error(tmp_path):
    """A samples row of an over-training law with alpha != beta (an edited file) raised the form's ValueError
    out of the loader: a traceback and exit 70 instead of one line naming the row."""
    law = OvertrainingLaw(name="ot", source="s", n_definition="total", c_definition="6ND",
                          validity=EPOCH_2024.validity, E=1.8, A=500.0, B=1500.0, alpha=0.33, beta=0.33,
                          samples=np.array([[1.8, 500.0, 1500.0, 0.33, 0.33], [1.8, 500.0, 1500.0, 0.33, 0.34]]))
    path = save_law(law, tmp_path / "ot.yaml")
    with pytest.raises(PlannerInputError, match=r"key 'samples\[1\]'.*alpha = beta") as caught:
        load_law_file(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
