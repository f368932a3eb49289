"""Check hand-edited input files and list every problem at once, each with file and line.

Cluster specs (.yaml): YAML syntax, then every schema problem pydantic finds (unknown keys, missing
keys, bad units, non-positive sizes), located on the line of the offending key.
Runs CSVs (.csv): rows that do not parse, then rows that parse but cannot be simulated (unknown
cluster, a layout that does not divide, missing shape) with the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from planner.errors import PlannerInputError


@dataclass(frozen=True)
class Finding:
    where: str  # "file:line"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def _key_lines(text: str) -> dict[tuple, int]:
    """(key, path...) -> 1-based line of that key in a YAML mapping tree."""
    lines: dict[tuple, int] = {}

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = path + (key_node.value,)
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key)

    try:
        walk(yaml.compose(text), ())
    except yaml.YAMLError:
        pass
    return lines


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    path = tuple(str(p) for p in loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def check_cluster_spec(path: Path) -> list[Finding]:
    from planner.hardware import ClusterSpec

    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        return [Finding(f"{path}:{mark.line + 1 if mark else 1}", f"invalid YAML ({getattr(error, 'problem', 'parse error')})")]
    if not isinstance(data, dict):
        return [Finding(f"{path}:1", "expected a mapping with keys name, accelerator, node, network, reliability")]
    lines = _key_lines(text)
    try:
        ClusterSpec.model_validate({**data, "source_file": str(path)})
    except ValidationError as error:
        findings = []
        for problem in error.errors():
            loc = problem["loc"]
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_for(loc, lines) or 1
            if problem["type"] == "extra_forbidden":
                message = f"unknown key '{key}'"
            elif problem["type"] == "missing":
                message = f"missing required key '{key}'"
            else:
                message = f"key '{key}': {problem['msg'].removeprefix('Value error, ')}"
            findings.append(Finding(f"{path}:{line}", message))
        return findings
    return []


def check_runs_csv(path: Path, cluster_dir=None) -> list[Finding]:
    from planner.profile.runs_csv import read_runs
    from planner.validation import run_to_config

    runs, problems = read_runs(path)
    findings = [Finding(p.origin, p.reason) for p in problems]
    for run in runs:
        try:
            run_to_config(run, cluster_dir)
        except PlannerInputError as error:
            text = str(error)
            prefix = f"{run.origin}: "
            findings.append(Finding(run.origin, text.removeprefix(prefix)))
    return findings


def check_file(path: str | Path, cluster_dir=None) -> list[Finding]:
    """Every problem in one file; raises PlannerInputError when the file cannot be checked at all."""
    source = Path(path)
    if not source.is_file():
        raise PlannerInputError(f"{source}: no such file (expected a cluster spec .yaml or a runs .csv)")
    suffix = source.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            return check_cluster_spec(source)
        if suffix == ".csv":
            return check_runs_csv(source, cluster_dir)
    except UnicodeDecodeError:
        raise PlannerInputError(f"{source}: not UTF-8 text")
    raise PlannerInputError(f"{source}: unknown file type {suffix or '(none)'} (expected .yaml cluster spec or .csv runs file)")
