"""Save a fitted law as YAML (`planner fit-law --out law.yaml`) and load it back (`--law law.yaml`).

The file holds the form, coefficients in natural units, the N and C definitions, the validity
range, the bootstrap coefficient samples (so intervals survive the round trip; or, for a law
without samples, its assumed `relative_sigma`) and a free-form
`fit` record of how it was made. Loading uses planner.io.load_yaml (yaml.safe_load with size, depth and
alias limits, duplicate keys refused) and a strict schema: an unknown or
missing key is an error naming the key and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, FiniteFloat, ValidationError, model_validator

from planner.errors import PlannerInputError, validation_input_error
from planner.io import load_yaml_file, write_text_atomic
from planner.laws.base import LossLaw, Validity, behaviour_problem
from planner.laws.chinchilla import ChinchillaLaw, OvertrainingLaw
from planner.laws.farseer import FarseerLaw
from planner.laws.fitter import soundness_problem
from planner.laws.kaplan import KaplanLaw
from planner.laws.moe import KRAJEWSKI_2024, FineGrainedMoELaw

FORMAT_VERSION = 1
LAW_CLASSES: dict[str, type[LossLaw]] = {
    cls.form: cls for cls in (ChinchillaLaw, OvertrainingLaw, KaplanLaw, FarseerLaw, FineGrainedMoELaw)
}


# The compute each form's law counts, as fit-law writes it and `predict` computes it (LossLaw.training_flops):
# C = 6·N·D for the dense forms, Krajewski et al.'s own definition for the MoE law. A file is refused when it
# names another: the definition it prints would not be the compute given beside it.
C_DEFINITIONS = {form: "6ND" for form in LAW_CLASSES} | {FineGrainedMoELaw.form: KRAJEWSKI_2024.c_definition}


def _not_true_or_false(value):
    """A hand-edited `alpha: true` was read as 1.0. (A string stays readable: PyYAML reads `5.7e7`, with no
    dot, as text, and a number is what it says.)"""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    return value


Real = Annotated[float, BeforeValidator(_not_true_or_false)]  # a number, not true/false (bounds set by Field)
Number = Annotated[FiniteFloat, BeforeValidator(_not_true_or_false)]
Positive = Annotated[Real, Field(gt=0, allow_inf_nan=False)]


class _ValidityModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_min: Positive
    n_max: Positive
    d_min: Positive
    d_max: Positive
    tpp_min: Positive
    tpp_max: Positive
    far_factor: Real = Field(default=10.0, ge=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> "_ValidityModel":
        for low, high in (("n_min", "n_max"), ("d_min", "d_max"), ("tpp_min", "tpp_max")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low):g}) is above {high} ({getattr(self, high):g})")
        return self


class _LawFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    planner_law_file: Annotated[Literal[1], BeforeValidator(_not_true_or_false)]  # `true` == 1 in Python
    form: Literal[tuple(LAW_CLASSES)]  # type: ignore[valid-type]
    name: str
    source: str
    n_definition: Literal["total", "non-embedding"]
    c_definition: str
    coefficients: dict[str, Number]
    validity: _ValidityModel
    samples: list[list[Number]] | None = None
    relative_sigma: Real | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)  # a 1-sigma relative error
    # form moe: the expansion rate E the coefficients were fitted at (what --active-params converts with)
    expansion_rate: Real | None = Field(default=None, gt=0, allow_inf_nan=False)
    fit: dict[str, Any] = {}


def law_to_yaml(law: LossLaw, fit_record: dict | None = None) -> str:
    if law.form not in LAW_CLASSES:
        raise PlannerInputError(f"a {law.form} law cannot be saved to a law file")
    document = {
        "planner_law_file": FORMAT_VERSION,
        "form": law.form,
        "name": law.name,
        "source": law.source,
        "n_definition": law.n_definition,
        "c_definition": law.c_definition,
        "coefficients": law.coefficients(),
        "validity": law.validity.as_dict(),
        "samples": None if law.samples is None else [[float(v) for v in row] for row in law.samples],
        "relative_sigma": law.relative_sigma,
        **({"expansion_rate": float(law.expansion_rate)} if law.form == FineGrainedMoELaw.form else {}),
        "fit": fit_record or {},
    }
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=120)


def save_law(law: LossLaw, path: str, force: bool = False, fit_record: dict | None = None) -> Path:
    """Write `law` to `path`, unless it fails the soundness check (then nothing is written): a file that
    loading would refuse, or that gives a loss rising with N or D, is worse than none."""
    unsound = soundness_problem(law)
    if unsound is not None:
        raise PlannerInputError(f"{path}: not saved: the law {law.name!r} failed the soundness check: {unsound}")
    return write_text_atomic(path, law_to_yaml(law, fit_record), force=force)


def load_law_file(path: str) -> LossLaw:
    where = str(path)
    raw = load_yaml_file(path, "law file (.yaml)")
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else {list: "a list", str: "text", bool: "true/false"}.get(type(raw), "a number")
        raise PlannerInputError(f"{where}: expected a law file mapping (planner_law_file, form, coefficients, "
                                f"validity, ...) as written by 'planner fit-law --out', got {got}")
    try:
        model = _LawFileModel.model_validate(raw)
    except ValidationError as error:
        raise validation_input_error(error, where) from None
    cls = LAW_CLASSES[model.form]
    if model.c_definition != C_DEFINITIONS[model.form]:
        raise PlannerInputError(f"{where}: key 'c_definition': expected {C_DEFINITIONS[model.form]!r} for form "
                                f"{model.form} (the compute the planner counts for it), got {model.c_definition!r}")
    if set(model.coefficients) != set(cls.coefficient_names):
        raise PlannerInputError(f"{where}: key 'coefficients' must have exactly {', '.join(cls.coefficient_names)} "
                                f"for form {model.form}, got {', '.join(model.coefficients)}")
    samples = None
    if model.samples:
        width = len(cls.coefficient_names)
        for i, row in enumerate(model.samples):  # before numpy, which refuses ragged rows with a traceback
            if len(row) != width:
                raise PlannerInputError(f"{where}: key 'samples[{i}]' has {len(row)} values; each row needs "
                                        f"{width} ({', '.join(cls.coefficient_names)}) for form {model.form}")
        samples = np.array(model.samples, dtype=float)
    settings = {}
    if model.expansion_rate is not None:
        if cls is not FineGrainedMoELaw:
            raise PlannerInputError(f"{where}: key 'expansion_rate' belongs to form moe only, not {model.form}")
        settings["expansion_rate"] = model.expansion_rate
    try:
        law = cls(name=model.name, source=model.source, n_definition=model.n_definition,
                  c_definition=model.c_definition, validity=Validity(**model.validity.model_dump()),
                  samples=samples, relative_sigma=model.relative_sigma, **model.coefficients, **settings)
    except ValueError as error:
        raise PlannerInputError(f"{where}: {error}") from None
    _check_behaviour(law, where, "coefficients")
    for i, row in enumerate(samples if samples is not None else []):
        try:  # a row the form cannot hold (over-training with alpha != beta) is an edited file, not a crash
            sample_law = law.with_coefficients(row)
        except ValueError as error:
            raise PlannerInputError(f"{where}: key 'samples[{i}]': {error}") from None
        _check_behaviour(sample_law, where, f"samples[{i}]")
    return law


def _check_behaviour(law: LossLaw, where: str, key: str) -> None:
    """Coefficients a fit could not have produced make the planner divide by zero or overflow later;
    refuse them here (planner.laws.base.behaviour_problem)."""
    what = behaviour_problem(law)
    if what is not None:
        raise PlannerInputError(f"{where}: key '{key}' {law.coefficients()} give a {what} that is not finite, "
                                "positive and falling with N and D for N 1e6-1e14, D 1e6-1e17; was the file edited?")
