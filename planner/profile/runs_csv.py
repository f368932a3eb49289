"""The measured-runs CSV (`shared/spec/runs_csv.md`): read it, write it.

One row is one training configuration and what was measured on it. Reading never drops a row
silently: a row whose cells cannot be parsed becomes a `RowProblem` (file, line, reason) and the
rest of the file is still used. Writing is atomic and keeps the column order of the spec;
appending (`append_runs`) adds bytes after the existing ones and never rewrites a row.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import PlannerInputError
from planner.io import read_input_text, shown, write_text_atomic

# Column order of the spec; unknown columns are kept in `MeasuredRun.extra` and written after these.
COLUMNS = (
    "id", "source", "confidence", "cluster", "gpus", "layers", "hidden", "heads", "kv_heads", "ffn",
    "mlp", "seq_len", "vocab", "tp", "pp", "dp", "cp", "vpp", "zero", "offload", "micro_batch",
    "global_batch", "recompute", "seq_parallel", "dtype", "step_time_s", "mem_gib", "notes",
)
INT_COLUMNS = (
    "gpus", "layers", "hidden", "heads", "kv_heads", "ffn", "seq_len", "vocab", "tp", "pp", "dp",
    "cp", "vpp", "zero", "micro_batch", "global_batch", "seq_parallel",
)
FLOAT_COLUMNS = ("step_time_s", "mem_gib")
TEXT_COLUMNS = ("id", "source", "confidence", "cluster", "mlp", "offload", "recompute", "dtype", "notes")


@dataclass(frozen=True)
class MeasuredRun:
    """One row of a runs CSV. Empty cells are None ("not known")."""

    id: str
    source: str | None = None
    confidence: str | None = None
    cluster: str | None = None
    gpus: int | None = None
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    ffn: int | None = None
    mlp: str | None = None
    seq_len: int | None = None
    vocab: int | None = None
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    cp: int | None = None
    vpp: int | None = None
    zero: int | None = None
    offload: str | None = None
    micro_batch: int | None = None
    global_batch: int | None = None
    recompute: str | None = None
    seq_parallel: int | None = None
    dtype: str | None = None
    step_time_s: float | None = None
    mem_gib: float | None = None
    notes: str | None = None
    extra: dict = field(default_factory=dict, compare=False)
    # Where the row came from, for messages: "file.csv:12".
    origin: str = field(default="", compare=False)


@dataclass(frozen=True)
class RowProblem:
    """A row that could not be read; reported with file and line, then skipped."""

    origin: str
    reason: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.reason}"


def _parse_int(text: str, column: str) -> int:
    value = float(text)
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"column '{column}' must be a whole number, got {text!r}")
    return int(value)


def _parse_float(text: str, column: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"column '{column}' must be a finite number, got {text!r}")
    return value


def _parse_row(cells: dict[str, str], origin: str) -> MeasuredRun:
    values: dict[str, object] = {}
    extra: dict[str, str] = {}
    for key, raw in cells.items():
        if key is None:
            raise ValueError("row has more cells than the header has columns")
        if raw is None:
            raise ValueError(f"row has fewer cells than the header (truncated?): no cell for '{key}'")
        text = (raw or "").strip()
        if key not in COLUMNS:
            extra[key] = text
            continue
        if text == "":
            continue
        try:
            if key in INT_COLUMNS:
                values[key] = _parse_int(text, key)
            elif key in FLOAT_COLUMNS:
                values[key] = _parse_float(text, key)
            else:
                values[key] = text
        except ValueError as error:
            message = str(error)
            if not message.startswith("column"):
                message = f"column '{key}' must be a number, got {text!r}"
            raise ValueError(message) from None
    if "id" not in values:
        raise ValueError("column 'id' is empty")
    return MeasuredRun(**values, extra=extra, origin=origin)  # type: ignore[arg-type]


RUNS_FILE = "runs file (a runs CSV, see spec/runs_csv.md)"


def read_runs(path: str | Path, what: str = RUNS_FILE) -> tuple[list[MeasuredRun], list[RowProblem]]:
    """Read a runs CSV. Returns the parsed rows and the rows that could not be parsed.

    The file itself must be readable (bounded, UTF-8; see planner.io.read_input_text), and its header
    must parse: a header the csv module refuses (a cell over its 128 KiB field limit) is a one-line
    error naming the file, not csv's traceback.
    """
    return parse_runs(read_input_text(path, what), path)


def parse_runs(text: str, path: str | Path) -> tuple[list[MeasuredRun], list[RowProblem]]:
    """`read_runs` on text already read from `path` (doctor has the bytes in hand)."""
    source = Path(path)
    # Universal newlines, as open() in text mode would give: a bare CR ends a line too.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    reader = csv.DictReader(io.StringIO(text))
    try:
        header = reader.fieldnames or []
    except csv.Error as error:
        raise PlannerInputError(f"{shown(path)}: malformed CSV header ({error})") from None
    if "id" not in header:
        raise PlannerInputError(f"{source}: header has no 'id' column (expected the runs-CSV columns: {', '.join(COLUMNS[:6])}, ...)")
    runs: list[MeasuredRun] = []
    problems: list[RowProblem] = []
    seen: set[str] = set()
    try:
        for row in reader:
            origin = f"{source}:{reader.line_num}"
            try:
                run = _parse_row(row, origin)
                if run.id in seen:
                    raise ValueError(f"duplicate id {run.id!r}")
            except ValueError as error:
                problems.append(RowProblem(origin, str(error)))
                continue
            seen.add(run.id)
            runs.append(run)
    except csv.Error as error:
        problems.append(RowProblem(f"{source}:{reader.line_num}", f"malformed CSV ({error})"))
    return runs, problems


def read_runs_files(paths) -> tuple[list[MeasuredRun], list[RowProblem]]:
    """Rows (and unreadable rows) of several runs CSVs; a path that names no readable file is an error."""
    runs, problems = [], []
    for path in paths:
        file_runs, file_problems = read_runs(path)
        runs += file_runs
        problems += file_problems
    return runs, problems


def cell_text(value: object) -> str:
    """A CSV cell: empty for None; a float as its shortest text that reads back to the same float (repr),
    so that writing never rounds a measurement (also used for extra columns)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(float(value))  # float(): a numpy scalar's repr is 'np.float64(...)'
    return str(value)


def _columns(runs: list[MeasuredRun]) -> list[str]:
    """Spec columns, then extra columns in order of first appearance."""
    extra = dict.fromkeys(key for run in runs for key in run.extra if key not in COLUMNS)
    return list(COLUMNS) + list(extra)


def _cells(run: MeasuredRun) -> dict[str, str]:
    return {**run.extra, **{name: cell_text(getattr(run, name)) for name in COLUMNS}}


def runs_to_csv_text(runs: list[MeasuredRun], columns: list[str] | None = None, header: bool = True,
                     line_end: str = "\n") -> str:
    """Render rows in `columns` order (default: spec column order, extra columns after), with a header line."""
    columns = _columns(runs) if columns is None else columns
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=line_end)
    if header:
        writer.writerow(columns)
    for run in runs:
        cells = _cells(run)
        writer.writerow([cells.get(name, "") for name in columns])
    return buffer.getvalue()


def write_runs(path: str | Path, runs: list[MeasuredRun], force: bool = False) -> Path:
    """Write rows atomically; refuses to overwrite an existing file unless `force`."""
    return write_text_atomic(path, runs_to_csv_text(runs), force=force)


def append_runs(path: str | Path, runs: list[MeasuredRun]) -> Path:
    """Add rows at the end of an existing runs CSV without rewriting a byte of what is there.

    The new rows follow the file's own header (column order, line ending). Refused with a one-line
    error, before anything is written: a new id that the file already has (replacing that row would
    mean rewriting the file; two rows with one id would make the reader drop one), and a value for a
    column the header lacks (it would be lost). An empty file gets a header first.
    """
    from planner.io import append_text, output_exists

    if not output_exists(path):  # also refuses a FIFO or device before reading it
        raise PlannerInputError(f"{shown(path)}: no such runs file to append to")
    header, ids = _header_and_ids(path)
    if header is None:
        return append_text(path, runs_to_csv_text(runs))
    _check_appendable(path, header, ids, runs)
    line_end, open_last_line = _line_ends(path)
    text = runs_to_csv_text(runs, header, header=False, line_end=line_end)
    return append_text(path, (line_end if open_last_line else "") + text)


def _header_and_ids(path: str | Path) -> tuple[list[str] | None, dict[str, int]]:
    """The header of a runs CSV and the line of each id in it, streamed; rows the reader would refuse
    count too (their ids are taken all the same)."""
    name, line = shown(path), 1
    try:
        with open(path, encoding="utf-8", newline="") as stream:
            reader = csv.reader(stream)
            header = next(reader, None)
            if header is None:
                return None, {}
            if "id" not in header or len(set(header)) < len(header):
                raise PlannerInputError(f"{name}: header has no 'id' column or repeats a column; --append adds rows "
                                        "only to a runs CSV with a valid header")
            column, ids = header.index("id"), {}
            for row in reader:
                line = reader.line_num
                if len(row) > column:
                    ids.setdefault(row[column].strip(), line)
            return header, ids
    except UnicodeDecodeError:
        raise PlannerInputError(f"{name}: not UTF-8 text; --append adds rows only to a readable runs CSV") from None
    except csv.Error as error:
        raise PlannerInputError(f"{name}:{line}: malformed CSV ({error}); --append adds rows only to a readable "
                                "runs CSV") from None
    except OSError as error:
        raise PlannerInputError(f"{name}: cannot read ({error.strerror or error.__class__.__name__})") from None


def _check_appendable(path: str | Path, header: list[str], ids: dict[str, int], runs: list[MeasuredRun]) -> None:
    taken = [run.id for run in runs if run.id in ids]
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise PlannerInputError(f"{shown(path)}:{ids[taken[0]]}: id {taken[0]!r} is already there{more}; --append "
                                "never replaces rows: give the new row another id (--id) or remove the old one first")
    lost = [name for name in _columns(runs) if name not in header and any(_cells(run).get(name) for run in runs)]
    if lost:
        raise PlannerInputError(f"{shown(path)}: header has no column {', '.join(lost)}, which the new rows fill; "
                                "--append never rewrites the header: write the rows to a new file and pass both files")


def _line_ends(path: str | Path) -> tuple[str, bool]:
    """(the line ending of the file's header, whether its last line lacks one): appended rows match the
    file, and start on a line of their own."""
    with open(path, "rb") as stream:
        first = stream.readline()
        stream.seek(-1, 2)
        last = stream.read(1)
    return ("\r\n" if first.endswith(b"\r\n") else "\n"), last not in (b"\n", b"\r")
