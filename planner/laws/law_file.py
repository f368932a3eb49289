"""Save a fitted law as YAML (`planner fit-law --out law.yaml`) and load it back (`--law law.yaml`).

The file holds the form, coefficients in natural units, the N and C definitions, the validity
range, the bootstrap coefficient samples (so intervals survive the round trip; or, for a law
without samples, its assumed `relative_sigma`) and a free-form
`fit` record of how it was made. Loading uses yaml.safe_load and a strict schema: an unknown or
missing key is an error naming the key and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from planner.errors import PlannerInputError
from planner.io import write_text_atomic
from planner.laws.base import LossLaw, Validity
from planner.laws.chinchilla import ChinchillaLaw, OvertrainingLaw
from planner.laws.farseer import FarseerLaw
from planner.laws.kaplan import KaplanLaw

FORMAT_VERSION = 1
LAW_CLASSES: dict[str, type[LossLaw]] = {
    cls.form: cls for cls in (ChinchillaLaw, OvertrainingLaw, KaplanLaw, FarseerLaw)
}


class _ValidityModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_min: float
    n_max: float
    d_min: float
    d_max: float
    tpp_min: float
    tpp_max: float
    far_factor: float = 10.0


class _LawFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    planner_law_file: Literal[1]
    form: Literal[tuple(LAW_CLASSES)]  # type: ignore[valid-type]
    name: str
    source: str
    n_definition: Literal["total", "non-embedding"]
    c_definition: str
    coefficients: dict[str, float]
    validity: _ValidityModel
    samples: list[list[float]] | None = None
    relative_sigma: float | None = None
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
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise PlannerInputError(f"{where}: cannot read law file ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise PlannerInputError(f"{where}: not valid YAML ({' '.join(str(error).split())})") from None
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
        return cls(name=model.name, source=model.source, n_definition=model.n_definition,
                   c_definition=model.c_definition, validity=Validity(**model.validity.model_dump()),
                   samples=samples, relative_sigma=model.relative_sigma, **model.coefficients)
    except ValueError as error:
        raise PlannerInputError(f"{where}: {error}") from None
