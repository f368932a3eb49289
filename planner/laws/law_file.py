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
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, model_validator

from planner.errors import PlannerInputError
from planner.io import load_yaml_file, write_text_atomic
from planner.laws.base import LossLaw, Validity
from planner.laws.chinchilla import ChinchillaLaw, OvertrainingLaw
from planner.laws.farseer import FarseerLaw
from planner.laws.kaplan import KaplanLaw

FORMAT_VERSION = 1
LAW_CLASSES: dict[str, type[LossLaw]] = {
    cls.form: cls for cls in (ChinchillaLaw, OvertrainingLaw, KaplanLaw, FarseerLaw)
}


Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _ValidityModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_min: Positive
    n_max: Positive
    d_min: Positive
    d_max: Positive
    tpp_min: Positive
    tpp_max: Positive
    far_factor: float = Field(default=10.0, ge=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> "_ValidityModel":
        for low, high in (("n_min", "n_max"), ("d_min", "d_max"), ("tpp_min", "tpp_max")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low):g}) is above {high} ({getattr(self, high):g})")
        return self


class _LawFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    planner_law_file: Literal[1]
    form: Literal[tuple(LAW_CLASSES)]  # type: ignore[valid-type]
    name: str
    source: str
    n_definition: Literal["total", "non-embedding"]
    c_definition: str
    coefficients: dict[str, FiniteFloat]
    validity: _ValidityModel
    samples: list[list[FiniteFloat]] | None = None
    relative_sigma: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)  # a 1-sigma relative error
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
        "fit": fit_record or {},
    }
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=120)


def save_law(law: LossLaw, path: str, force: bool = False, fit_record: dict | None = None) -> Path:
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
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise PlannerInputError(f"{where}: key {key!r}: {first['msg']}") from None
    cls = LAW_CLASSES[model.form]
    if set(model.coefficients) != set(cls.coefficient_names):
        raise PlannerInputError(f"{where}: key 'coefficients' must have exactly {', '.join(cls.coefficient_names)} "
                                f"for form {model.form}, got {', '.join(model.coefficients)}")
    samples = None
    if model.samples:
        samples = np.array(model.samples, dtype=float)
        if samples.ndim != 2 or samples.shape[1] != len(cls.coefficient_names):
            raise PlannerInputError(f"{where}: key 'samples' rows must have {len(cls.coefficient_names)} values "
                                    f"({', '.join(cls.coefficient_names)})")
    try:
        law = cls(name=model.name, source=model.source, n_definition=model.n_definition,
                  c_definition=model.c_definition, validity=Validity(**model.validity.model_dump()),
                  samples=samples, relative_sigma=model.relative_sigma, **model.coefficients)
    except ValueError as error:
        raise PlannerInputError(f"{where}: {error}") from None
    _check_behaviour(law, where, "coefficients")
    for i, row in enumerate(samples if samples is not None else []):
        _check_behaviour(law.with_coefficients(row), where, f"samples[{i}]")
    return law


# Model sizes, token counts and compute budgets a plan can ask a law about (the search's whole range).
_CHECK_N = np.logspace(6, 14, 9)
_CHECK_D = np.logspace(6, 17, 12)
_CHECK_C = np.logspace(15, 30, 16)


def _check_behaviour(law: LossLaw, where: str, key: str) -> None:
    """Coefficients a fit could not have produced make the planner divide by zero or overflow later;
    refuse them here: losses must be finite, positive and non-increasing in N and D, and the
    compute-optimal frontier finite and positive, over every size the search can ask about."""
    N, D = np.meshgrid(_CHECK_N, _CHECK_D, indexing="ij")
    try:
        with np.errstate(all="ignore"):
            loss = law.predict(N, D)
            n_opt, d_opt = law.compute_optimal(_CHECK_C)
    except (ArithmeticError, ValueError):
        loss = n_opt = d_opt = np.array([np.nan])
    sane = (np.all(np.isfinite(loss)) and np.all(loss > 0) and np.all(np.diff(loss, axis=0) <= 1e-12 * loss[1:])
            and np.all(np.diff(loss, axis=1) <= 1e-12 * loss[:, 1:]))
    frontier = np.all(np.isfinite(n_opt)) and np.all(n_opt > 0) and np.all(np.isfinite(d_opt)) and np.all(d_opt > 0)
    if not (sane and frontier):
        what = "loss" if not sane else "compute-optimal frontier"
        raise PlannerInputError(f"{where}: key '{key}' {law.coefficients()} give a {what} that is not finite, "
                                "positive and falling with N and D for N 1e6-1e14, D 1e6-1e17; was the file edited?")
