"""Check hand-edited input files and list every problem at once, each with file and line.

Cluster specs (.yaml): bytes that are not UTF-8, YAML syntax, duplicate keys (YAML silently keeps the
last), then every schema problem pydantic finds (unknown keys, missing keys, bad units, non-positive
sizes), located on the line of the offending key, and a `name:` other than the file's name (a copied
spec that kept its original's name: rows and --cluster find a spec by file name, outputs show the key).
Runs CSVs (.csv): the header (no id column, a column given twice, a spec column misspelt by case or
separator), rows that do not parse (non-numeric cells, sizes and times outside their ranges, truncated
rows, duplicate ids with the line of the first), cells the spec restricts (confidence other than
high / medium / low, seq_parallel=1 at tp=1), then rows that parse but cannot be simulated (unknown
cluster, a cluster path leaving the spec folder, a layout that does not divide, missing shape, more GPUs
than the cluster has) with the arithmetic, and rows whose measured step time is more than UNIT_ERROR_RATIO
times off the model's prediction either way (a unit slip: ms for s, per micro-batch for per step). Rows whose `status` is failed, timeout or oom record runs
that did not finish; they are data, not problems, and are not simulated. A status outside the spec's values (OK
for ok) is a problem: the row is not simulated either. The file is streamed (a row at a time), so a file at the
input cap is checked in bounded memory.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import yaml
from pydantic import ValidationError

from planner.errors import PlannerInputError, describe_validation_problem
from planner.io import MAX_YAML_BYTES, input_file, parse_yaml, read_at_most, shown


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
    from planner.specs.hardware import ClusterSpec

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
    bad_name = False
    try:
        ClusterSpec.model_validate({**content, "source_file": str(path)})
    except ValidationError as error:
        findings += [Finding(f"{path}:{_line_for(problem['loc'], lines)}", describe_validation_problem(problem))
                     for problem in error.errors()]
        bad_name = any(tuple(problem["loc"][:1]) == ("name",) for problem in error.errors())
    if not bad_name and (message := name_key_problem(path, content)) is not None:
        findings.append(Finding(f"{path}:{lines.get(('name',), 1)}", message))
    return sorted(findings, key=lambda f: int(f.where.rsplit(":", 1)[1]))


def name_key_problem(path: Path, content: dict) -> str | None:
    """A spec whose `name:` is not its file name: a copy of another spec that kept its original's name. Rows'
    cluster cells, --cluster and `planner clusters` find a spec by its file name (specs/clusters.py
    load_cluster), while simulate's output and a calibrated spec's name follow the key, so the two names look
    like two clusters. A spec `planner calibrate` wrote (x.calibrated, with its calibrated_on record) is not
    flagged: its name records the spec it was calibrated from, which calibrate fits rows of, and --out chooses
    its file name."""
    from planner.calibrate.samples import CALIBRATED_SUFFIX

    name, stem = content.get("name"), Path(path).stem
    if not isinstance(name, str) or name == stem:
        return None
    if name.endswith(CALIBRATED_SUFFIX) and isinstance(content.get("calibrated_on"), dict):
        return None
    return (f"key 'name': {name!r} differs from the file name {stem!r}; a runs file's cluster column and --cluster "
            f"find this spec as {stem!r} (by file name), while simulate prints {name!r}; set name: {stem}, or "
            f"rename the file to {name}.yaml")


def _header_findings(path: Path, header: list[str]) -> list[Finding]:
    from planner.calibrate.validation import HIERARCHY_COLUMNS, PIPELINE_SPLIT_COLUMNS, SIMULATED_EXTRA_COLUMNS
    from planner.profile.runs_csv import COLUMNS

    findings = []
    seen: set[str] = set()
    # The core columns and the optional ones a simulation reads: a case or separator slip in either is a
    # column the reader ignores (validate then infers what the row says: Framework -> framework=other).
    known = (*COLUMNS, *SIMULATED_EXTRA_COLUMNS, *HIERARCHY_COLUMNS, *PIPELINE_SPLIT_COLUMNS)
    canonical = {re.sub(r"[\s_-]+", "_", c.lower()): c for c in known}
    for column in header:
        name = column.strip()
        if name and name in seen:
            findings.append(Finding(f"{path}:1", f"column '{name}' appears twice (only the last one would be read; "
                                                 "rows are not checked until it is renamed or removed)"))
        seen.add(name)
        close = canonical.get(re.sub(r"[\s_-]+", "_", name.lower()))
        if name not in known and close:
            findings.append(Finding(f"{path}:1", f"unknown column '{column}' (did you mean '{close}'?)"))
    return findings


def _until_text(lines) -> tuple[list[str], bool]:
    """The lines up to the first that is not blank, and whether there was one."""
    head = []
    for line in lines:
        head.append(line)
        if line.strip():
            return head, True
    return head, False


CONFIDENCE = ("high", "medium", "low")  # spec/runs_csv.md, column confidence
# A measured step time or memory this many times off the prediction, either way, is taken for a unit slip, not a
# model error: a unit slip is 1000x (ms for s, MB for GiB). The model's own misses reach 13-55x on the smallest
# runs of the project's H200 profile (profiles/h200-1gpu.csv: launch-bound steps of a few ms), which are real
# measurements, so the limit is above them. Assumed; doctor and validate share it.
UNIT_ERROR_RATIO = 100.0


def row_cell_findings(run) -> list[str]:
    """Cells of a parsed row the runs-CSV spec restricts beyond their type."""
    found = []
    if run.confidence is not None and run.confidence not in CONFIDENCE:
        found.append(f"column 'confidence': expected high, medium or low (spec/runs_csv.md), got {run.confidence!r}")
    if run.seq_parallel == 1 and (run.tp or 1) == 1:
        # Sequence parallelism splits activations over the tensor-parallel group: there is none at tp 1, and
        # Megatron turns the flag off there (Megatron-DeepSpeed megatron/arguments.py:384-388).
        found.append("seq_parallel=1 with tp=1: sequence parallelism needs tp > 1 (spec/runs_csv.md); set it to 0")
    return found


def row_findings(run, where: str) -> list[str]:
    """What doctor reports for one row without a measured-vs-model check: the cells the spec restricts
    (row_cell_findings), then, once the row has every column a simulation needs, why it cannot be simulated (the
    reason check_runs_csv gives). `planner ingest` refuses a row with any (profile/ingest.py). The unit-slip checks
    (ratio_finding, memory_finding) are left out: ingest works out the seconds and GiB itself, so a row far off the
    model is the model's miss (or a wrong --cluster) for validate to show, not a unit slip."""
    import dataclasses

    from planner.calibrate.validation import iter_predictions
    from planner.profile.runs_csv import missing_simulation_columns

    found = row_cell_findings(run)
    if not missing_simulation_columns(run):
        reason = next(iter_predictions([dataclasses.replace(run, origin=where)])).reason
        if reason is not None:
            found.append(reason.removeprefix(f"{where}: "))
    return found


def measured_by_profile(run) -> bool:
    """Whether `planner profile` wrote the row (source `profile:NAME`): its seconds and GiB are the harness's own,
    so a row far off the model is the model's miss, not a unit slip (as with ingest's rows, row_findings). The
    profile's smallest ZeRO-3 rows on a loaded 2-core machine are 50-120x the uncalibrated cpu-local model (the
    profile audit)."""
    return str(run.source or "").startswith("profile:")


def ratio_finding(result, limit: float = UNIT_ERROR_RATIO) -> str | None:
    """A row whose measured / predicted step time is above `limit` or below its inverse (none for a profile's row,
    measured_by_profile)."""
    if measured_by_profile(result.run):
        return None
    error = result.step_error
    if error is None or not math.isfinite(error) or error <= -1.0:
        return None
    ratio = 1.0 / (1.0 + error)
    if 1.0 / limit <= ratio <= limit:
        return None
    return (f"step_time_s {result.run.step_time_s:g} s is {ratio:.3g}x the predicted {result.predicted['step_time_s']:.3g} s "
            f"(more than {limit:g}x off either way): check its unit (seconds per optimizer step)")


def memory_finding(result, limit: float = UNIT_ERROR_RATIO) -> str | None:
    """A row whose mem_gib cannot be a per-GPU peak on its cluster: above the accelerator's HBM, or more than
    `limit` off the predicted memory either way (MB or bytes entered as GiB); none for a profile's row."""
    from planner.profile.runs_csv import MEM_COUNTED_TENSORS

    if result.predicted is None or not result.run.mem_gib or measured_by_profile(result.run):
        return None
    measured = result.run.mem_gib * 2**30
    hbm = result.predicted["memory"]["hbm_bytes"]
    if result.run.extra.get("mem_method") != MEM_COUNTED_TENSORS and measured > hbm * (1.0 + 1e-9):
        return (f"mem_gib {result.run.mem_gib:g} GiB is more than the {hbm / 2**30:g} GiB of HBM of its cluster's "
                f"accelerator: check its unit (GiB per GPU, the peak the allocator reserved)")
    ratio = measured / result.predicted_memory_bytes
    if 1.0 / limit <= ratio <= limit:
        return None
    return (f"mem_gib {result.run.mem_gib:g} GiB is {ratio:.3g}x the predicted {result.predicted_memory_bytes / 2**30:.3g} "
            f"GiB (more than {limit:g}x off either way): check its unit (GiB per GPU)")


class RowsSeen:
    """The ids and runs of the rows doctor has read so far, over every runs file it is given: validate and
    calibrate read their files as one set, so an id in two files is refused there (runs_csv.read_runs_files), and
    one run under two ids counts twice in their error figures (runs_csv.run_identity). Streamed: a hash per run."""

    def __init__(self) -> None:
        self.first_origin_of_id: dict[str, str] = {}
        self.first_of_run: dict[int, tuple[str, str]] = {}  # hash(run_identity) -> (id, origin)

    def id_finding(self, run) -> str | None:
        """A row whose id an earlier file's row has (a repeat within one file is the reader's finding)."""
        first = self.first_origin_of_id.setdefault(run.id, run.origin)
        if first == run.origin:
            return None
        return (f"id {run.id!r} is also in {first}: validate and calibrate read their files as one set and refuse it; "
                "expected one id per row across the files")

    def repeat_finding(self, run) -> str | None:
        """A row that records the same run as an earlier row under another id."""
        from planner.profile.runs_csv import run_cells, run_identity

        key = run_identity(run_cells(run))
        if key is None:
            return None
        first_id, first_origin = self.first_of_run.setdefault(hash(key), (run.id, run.origin))
        if first_origin == run.origin:
            return None
        return (f"row {run.id!r} has the same layout, step time and memory as row {first_id!r} ({first_origin}): one "
                "run under two ids counts twice in validate's and calibrate's error figures; keep one of them")


def _rows_to_simulate(rows, findings: list[Finding], progress, counted: list[int], seen: RowsSeen):
    """The rows that parse and record a run, with the findings of the rest and of their cells."""
    from planner.profile.runs_csv import RowProblem, run_status, status_problem

    for item in rows:
        counted[0] += 1
        if progress is not None:
            progress.update(counted[0])
        if isinstance(item, RowProblem):
            findings.append(Finding(item.origin, item.reason))
            continue
        if (problem := seen.id_finding(item)) is not None:
            findings.append(Finding(item.origin, problem))
            continue
        if (problem := status_problem(item)) is not None:  # validate lists the row as skipped with this reason
            findings.append(Finding(item.origin, problem))
            continue
        if run_status(item) != "ok":
            continue
        findings.extend(Finding(item.origin, message) for message in row_cell_findings(item))
        if (problem := seen.repeat_finding(item)) is not None:
            findings.append(Finding(item.origin, problem))
        yield item


def check_runs_csv(path: Path, cluster_dir=None, progress=None, seen: RowsSeen | None = None) -> list[Finding]:
    """Every problem of a runs CSV, streamed: rows are read and checked one at a time (simulated a chunk at a
    time), so memory holds the findings and the ids seen (duplicates), not the file. `progress.update(rows)`
    is called per row. `seen`: the rows of the files checked before this one (their ids and runs)."""
    from planner.profile.runs_csv import UnreadableText, runs_from_lines, text_lines
    from planner.calibrate.validation import iter_predictions

    lines = text_lines(path, "runs file (.csv)")
    findings: list[Finding] = []
    try:
        head, has_text = _until_text(lines)
        if not has_text:
            return [Finding(f"{path}:1", "empty file (expected a header line with id, cluster, ... and one row per run)")]
        rows = runs_from_lines(chain(head, lines), path, on_header=lambda h: findings.extend(_header_findings(path, h)))
        counted = [0]
        rows_to_simulate = _rows_to_simulate(rows, findings, progress, counted, seen or RowsSeen())
        for result in iter_predictions(rows_to_simulate, cluster_dir):
            origin = result.run.origin
            if result.reason is not None:  # cannot be simulated
                findings.append(Finding(origin, result.reason.removeprefix(f"{origin}: ")))
            else:
                findings.extend(Finding(origin, message)
                                for message in (ratio_finding(result), memory_finding(result)) if message is not None)
        if counted[0] == 0:
            findings.append(Finding(f"{path}:1", "no rows after the header"))
    except UnreadableText as error:
        findings.append(Finding(f"{path}:{error.line}", error.reason))
    except PlannerInputError as error:  # the header: no id column, a column twice, malformed
        if not any("appears twice" in f.message for f in findings):
            findings.append(Finding(f"{path}:1", str(error).removeprefix(f"{shown(path)}: ").removeprefix(f"{shown(path)}:1: ")))
    return sorted(findings, key=lambda f: int(f.where.rsplit(":", 1)[1]))


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".csv":
        return "csv"
    raise PlannerInputError(f"{path}: unknown file type {suffix or '(none)'} (expected .yaml cluster spec or .csv runs file)")


UNCHECKABLE_SHOWN = 5  # arguments named in check_paths' one-line error


def check_paths(paths) -> list[Path]:
    """Every argument names a file doctor can check; else one error naming each that does not (the first
    UNCHECKABLE_SHOWN). An argument that is no checkable file stops doctor before any output, with exit 2
    (the CLI's bad-input contract, cli/doctor.py): but naming only the first made a second typo cost a rerun."""
    checked, problems = [], []
    for path in paths:
        try:
            source = input_file(path, "cluster spec (.yaml) or runs file (.csv)")
            _kind(source)
        except PlannerInputError as error:
            problems.append(str(error))
            continue
        checked.append(source)
    if problems:
        more = len(problems) - UNCHECKABLE_SHOWN
        raise PlannerInputError("; ".join(problems[:UNCHECKABLE_SHOWN])
                                + (f"; and {more} more argument(s) that are not checkable files" if more > 0 else ""))
    return checked


def check_file(path: str | Path, cluster_dir=None, progress=None, seen: RowsSeen | None = None) -> list[Finding]:
    """Every problem in one file; raises PlannerInputError when the file cannot be checked at all. `seen`: the
    rows of the runs files checked before it, shared across the files of one doctor run."""
    source = check_paths([path])[0]
    if _kind(source) == "csv":
        return check_runs_csv(source, cluster_dir, progress, seen)
    data = read_at_most(source, MAX_YAML_BYTES)
    if len(data) > MAX_YAML_BYTES:
        return [Finding(f"{source}:1", f"more than the {MAX_YAML_BYTES:,} bytes accepted for a cluster spec")]
    return check_cluster_spec(source, data)
