"""Check hand-edited input files and list every problem at once, each with file and line.

Cluster specs (.yaml): bytes that are not UTF-8, YAML syntax, duplicate keys (YAML silently keeps the
last), then every schema problem pydantic finds (unknown keys, missing keys, bad units, non-positive
sizes), located on the line of the offending key.
Runs CSVs (.csv): the header (no id column, a column given twice, a spec column misspelt by case or
separator), rows that do not parse (non-numeric cells, truncated rows, duplicate ids with the line
of the first), then rows that parse but cannot be simulated (unknown cluster, a cluster path leaving
the spec folder, a layout that does not divide, missing shape) with the arithmetic. Rows whose
`status` is not ok record failed runs; they are data, not problems, and are not simulated.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from planner.errors import PlannerInputError
from planner.io import MAX_YAML_BYTES, input_file, parse_yaml


@dataclass(frozen=True)
class Finding:
    where: str  # "file:line"
    message: str

    def __str__(self) -> str:
        return " ".join(f"{self.where}: {self.message}".split())  # one finding, one line


def _key_lines(node: yaml.Node | None) -> dict[tuple, int]:
    """(key, path...) -> 1-based line of that key in a composed YAML mapping tree."""
    lines: dict[tuple, int] = {}
    stack = [(node, ())]
    while stack:
        current, path = stack.pop()
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                if isinstance(key_node, yaml.ScalarNode):
                    key = path + (key_node.value,)
                    lines.setdefault(key, key_node.start_mark.line + 1)
                    if len(key) < 16:
                        stack.append((value_node, key))
    return lines


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int:
    path = tuple(str(p) for p in loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return 1


def _decode(path: Path, data: bytes) -> tuple[str | None, list[Finding]]:
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        return None, [Finding(f"{path}:{line}", f"not UTF-8 text (byte 0x{data[error.start]:02x})")]


def check_cluster_spec(path: Path, data: bytes) -> list[Finding]:
    from planner.hardware import ClusterSpec, describe_validation_problem

    text, findings = _decode(path, data)
    if text is None:
        return findings
    content, problems, node = parse_yaml(text)
    findings = [Finding(f"{path}:{line}", message) for line, message in problems]
    if content is None and problems:
        return findings
    if not isinstance(content, dict):
        return findings + [Finding(f"{path}:1", "expected a mapping with keys name, accelerator, node, network, reliability")]
    lines = _key_lines(node)
    try:
        ClusterSpec.model_validate({**content, "source_file": str(path)})
    except ValidationError as error:
        findings += [Finding(f"{path}:{_line_for(problem['loc'], lines)}", describe_validation_problem(problem))
                     for problem in error.errors()]
    return sorted(findings, key=lambda f: int(f.where.rsplit(":", 1)[1]))


def _header_findings(path: Path, text: str) -> list[Finding]:
    from planner.profile.runs_csv import COLUMNS

    try:
        header = next(csv.reader(io.StringIO(text)), [])
    except csv.Error as error:
        return [Finding(f"{path}:1", f"malformed CSV header ({error})")]
    findings = []
    seen: set[str] = set()
    canonical = {re.sub(r"[\s_-]+", "_", c.lower()): c for c in COLUMNS}
    for column in header:
        name = column.strip()
        if name in seen:
            findings.append(Finding(f"{path}:1", f"column '{name}' appears twice (only the last one would be read)"))
        seen.add(name)
        close = canonical.get(re.sub(r"[\s_-]+", "_", name.lower()))
        if name not in COLUMNS and close:
            findings.append(Finding(f"{path}:1", f"unknown column '{column}' (did you mean '{close}'?)"))
    return findings


def _first_lines_of_ids(text: str) -> dict[str, int]:
    reader = csv.DictReader(io.StringIO(text))
    first: dict[str, int] = {}
    try:
        for row in reader:
            row_id = (row.get("id") or "").strip()
            if row_id:
                first.setdefault(row_id, reader.line_num)
    except csv.Error:
        pass
    return first


def check_runs_csv(path: Path, data: bytes, cluster_dir=None) -> list[Finding]:
    from planner.profile.runs_csv import parse_runs
    from planner.validation import run_to_config

    text, findings = _decode(path, data)
    if text is None:
        return findings
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as parse_runs reads it
    if not text.strip():
        return [Finding(f"{path}:1", "empty file (expected a header line with id, cluster, ... and one row per run)")]
    findings = _header_findings(path, text)
    if any(f.message.startswith("malformed CSV header") for f in findings):
        return findings
    try:
        runs, problems = parse_runs(text, path)  # the bytes already read: no second read of the file
    except PlannerInputError as error:
        return findings + [Finding(f"{path}:1", str(error).removeprefix(f"{path}: "))]
    first = _first_lines_of_ids(text)
    for problem in problems:
        message = problem.reason
        duplicate = re.fullmatch(r"duplicate id '(.*)'", message)
        if duplicate and duplicate.group(1) in first:
            message += f" (first at line {first[duplicate.group(1)]})"
        findings.append(Finding(problem.origin, message))
    if not runs and not problems:
        findings.append(Finding(f"{path}:1", "no rows after the header"))
    for run in runs:
        if (run.extra.get("status") or "ok").strip() != "ok":
            continue
        try:
            run_to_config(run, cluster_dir)
        except PlannerInputError as error:
            findings.append(Finding(run.origin, str(error).removeprefix(f"{run.origin}: ")))
    return sorted(findings, key=lambda f: int(f.where.rsplit(":", 1)[1]))


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".csv":
        return "csv"
    raise PlannerInputError(f"{path}: unknown file type {suffix or '(none)'} (expected .yaml cluster spec or .csv runs file)")


def check_paths(paths) -> list[Path]:
    """Every argument names a file doctor can check; else one error naming the first that does not."""
    checked = []
    for path in paths:
        source = input_file(path, "cluster spec (.yaml) or runs file (.csv)")
        _kind(source)
        checked.append(source)
    return checked


def check_file(path: str | Path, cluster_dir=None) -> list[Finding]:
    """Every problem in one file; raises PlannerInputError when the file cannot be checked at all."""
    source = check_paths([path])[0]
    limit = MAX_YAML_BYTES if _kind(source) == "yaml" else None
    try:
        with open(source, "rb") as stream:
            data = stream.read() if limit is None else stream.read(limit + 1)
    except OSError as error:
        raise PlannerInputError(f"{source}: cannot read ({error.strerror or error.__class__.__name__})") from None
    if _kind(source) == "yaml":
        if len(data) > MAX_YAML_BYTES:
            return [Finding(f"{source}:1", f"more than the {MAX_YAML_BYTES:,} bytes accepted for a cluster spec")]
        return check_cluster_spec(source, data)
    return check_runs_csv(source, data, cluster_dir)
