"""The measured-runs CSV (`data/spec/runs_csv.md`): read it, write it.

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
from typing import Iterable, Iterator

from planner.errors import PlannerInputError
from planner.io import MAX_INPUT_BYTES, distinct_input_files, input_file, shown, write_text_atomic
from planner.specs.model import MAX_COUNT, MAX_LAYERS, MAX_TOKENS, MAX_WIDTH, ModelSpec

# The optional columns of the end pipeline ranks' transformer layers (Layout.first_stage_layers / last_stage_layers;
# empty = the stack's own split): kept in `MeasuredRun.extra`, read by calibrate.validation, filled by ingest.
PIPELINE_SPLIT_COLUMNS = ("first_stage_layers", "last_stage_layers")
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


# Largest value of a size or count column (gpus, layers, hidden, ..., global_batch). Derived:
# planner/specs/topology.py packs a parallel group's size and stride into 32 bits each, so 2**32 GPUs already
# fail there, and with every size column at 2**31 - 1 the cost model's float64 products stay finite and
# warning-free (tests/test_input_validation_gaps.py runs such a row). Real runs are far below it: hidden
# sizes reach ~2**15, vocabularies ~2**18, GPU counts ~2**17.
MAX_SIZE = 2**31 - 1
# The `status` column (spec/runs_csv.md): ok is a measurement (an empty cell too); failed and timeout are what
# `planner profile` records for a configuration that did not finish (harness.Outcome), oom a run recorded by hand
# as out of memory. Rows not ok are data, not simulated; any other value (a typo such as OK) is reported.
RUN_STATUSES = ("ok", "failed", "timeout", "oom")
# The `mem_method` column: what a row's mem_gib measured, so validate compares it with the like part of the
# predicted footprint (calibrate/validation.py). allocator-peak: torch's peak of allocated bytes
# (torch.cuda.max_memory_allocated, which Megatron's "max allocated" and DeepSpeed's MaxMemAllocated / Max_MA
# print), without the CUDA context, NCCL's buffers and the allocator's cache; counted-tensors: the model states and
# buffers a CPU profile counts. Empty: the whole device footprint (nvidia-smi, a paper's figure).
MEM_ALLOCATOR_PEAK, MEM_COUNTED_TENSORS = "allocator-peak", "counted-tensors"
# The columns a row needs before it can be simulated (validate skips a row without one; ingest reports it as
# incomplete): the model's shape, its cluster and its batch. Every other setting is inferred (cost.infer).
SIMULATION_COLUMNS = ("cluster", "layers", "hidden", "heads", "seq_len", "vocab", "global_batch")


def missing_simulation_columns(run) -> list[str]:
    """The SIMULATION_COLUMNS a row leaves empty: validate and calibrate skip it while any is."""
    return [name for name in SIMULATION_COLUMNS if getattr(run, name) is None]


def run_status(run) -> str:
    """A row's status; an empty cell is a measurement ("ok")."""
    return (run.extra.get("status") or "ok").strip()


def status_problem(run) -> str | None:
    """Why a row's status is not one of RUN_STATUSES (None when it is)."""
    status = run_status(run)
    if status in RUN_STATUSES:
        return None
    return (f"column 'status': expected {', '.join(RUN_STATUSES[:-1])} or {RUN_STATUSES[-1]} (spec/runs_csv.md), "
            f"got {status!r}; the row is not simulated")


# Inclusive ranges of the whole-number columns: sizes and counts are at least 1 (0 is not "unknown":
# an empty cell is); the ZeRO stage is 0-3 (spec/runs_csv.md) and seq_parallel a 0/1 switch.
# The model's sizes stop where ModelSpec's do (specs.model: MAX_LAYERS and the rest), so a row is refused by the
# reader, naming its column, rather than by the model it would build.
_MODEL_SIZE_LIMITS = {"layers": MAX_LAYERS, "hidden": MAX_WIDTH, "ffn": MAX_WIDTH, "heads": MAX_COUNT,
                      "kv_heads": MAX_COUNT, "seq_len": min(MAX_TOKENS, MAX_SIZE), "vocab": min(MAX_TOKENS, MAX_SIZE)}
INT_RANGES = {**{name: (1, _MODEL_SIZE_LIMITS.get(name, MAX_SIZE)) for name in INT_COLUMNS}, "zero": (0, 3),
              "seq_parallel": (0, 1)}
# Inclusive ranges of the measured columns. Assumed, generous on both sides: no training step takes less
# than a microsecond (one GPU kernel launch takes several) or more than 10**7 s (116 days); no device
# has a PiB (2**20 GiB) of memory or a KiB (2**-20 GiB) of it. Zero, negative and non-finite values are
# measurement or transcription errors, not "unknown" (an empty cell is).
FLOAT_RANGES = {"step_time_s": (1e-6, 1e7, "seconds"), "mem_gib": (2.0**-20, 2.0**20, "GiB")}
# Longest line read: far above any real row (the csv module refuses a cell over 128 KiB), and it keeps
# memory bounded when a file has no line breaks.
MAX_LINE_BYTES = 16 * 2**20


def _plain_number(text: str) -> float:
    """float() of a cell written as a plain number: ASCII, no digit-group underscores ('3_2' and full-width digits,
    which float() takes, were read as 32)."""
    if not text.isascii() or "_" in text:
        raise ValueError(f"not a plain number: {text!r}")
    return float(text)


def _parse_int(text: str, column: str) -> int:
    value = _plain_number(text)
    low, high = INT_RANGES[column]
    if not math.isfinite(value) or value != int(value) or not low <= value <= high:
        raise ValueError(f"column '{column}' must be a whole number from {low:,} to {high:,}, got {text!r}")
    return int(value)


def _parse_float(text: str, column: str, read_as: str | None = None) -> float:
    """A cell of `column` as the reader takes it: a plain number within the range of `read_as` (the column
    itself by default)."""
    value = _plain_number(text.strip())
    low, high, unit = FLOAT_RANGES[read_as or column]
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"column '{column}' must be a positive finite number of {unit} from {low:g} to {high:g}, "
                         f"got {text!r}")
    return value


def parse_step_time_cell(text: str, column: str) -> float:
    """A cell of another timing column (`planner profile`'s step_time_p10_s, what `calibrate --time-column`
    names) read as the reader reads step_time_s: a plain number of seconds within its range; ValueError, naming
    `column`, otherwise."""
    return _parse_float(text, column, read_as="step_time_s")


def check_value(column: str, value) -> str | None:
    """Why `value` cannot go in `column` of a runs CSV (the reader's rule), or None when it can.

    Row builders (`planner ingest`) use it so that they never write a row the reader refuses."""
    try:
        if column in INT_RANGES:
            _parse_int(repr(value) if isinstance(value, float) else str(value), column)
        elif column in FLOAT_RANGES:
            _parse_float(repr(float(value)), column)
    except (TypeError, ValueError, OverflowError) as error:
        message = str(error)
        return message if message.startswith("column") else f"column '{column}' must be a number, got {value!r}"
    return None


_SPEC_COLUMNS, _INT_SET, _FLOAT_SET = frozenset(COLUMNS), frozenset(INT_COLUMNS), frozenset(FLOAT_COLUMNS)


def _parse_row(cells: dict[str, str], origin: str) -> MeasuredRun:
    values: dict[str, object] = {}
    extra: dict[str, str] = {}
    for key, raw in cells.items():
        if key is None:
            raise ValueError("row has more cells than the header has columns")
        if raw is None:
            raise ValueError(f"row has fewer cells than the header (truncated?): no cell for '{key}'")
        text = (raw or "").strip()
        if key not in _SPEC_COLUMNS:
            extra[key] = text
            continue
        if text == "":
            continue
        try:
            if key in _INT_SET:
                values[key] = _parse_int(text, key)
            elif key in _FLOAT_SET:
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

    The file itself must be readable (bounded, UTF-8; see planner.io.input_file), and its header
    must parse: a header the csv module refuses (a cell over its 128 KiB field limit) is a one-line
    error naming the file, not csv's traceback.
    """
    return _split(iter_runs(path, what))


def parse_runs(text: str, path: str | Path) -> tuple[list[MeasuredRun], list[RowProblem]]:
    """`read_runs` on text already read from `path`."""
    # Universal newlines, as open() in text mode would give: a bare CR ends a line too.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _split(runs_from_lines(io.StringIO(text), path))


def iter_runs(path: str | Path, what: str = RUNS_FILE) -> Iterator[MeasuredRun | RowProblem]:
    """The rows of a runs CSV one at a time, in file order: a `MeasuredRun` or a `RowProblem` each.

    Streams the file (memory does not grow with its length, except for the ids seen, which duplicate
    ids need). A file that cannot be read at all (missing, over the size cap, not UTF-8, no or a bad
    header) raises PlannerInputError naming it, possibly after some rows were yielded (bytes that are
    not UTF-8 are found where they are): callers that print must hold output until the end."""
    return runs_from_lines(text_lines(path, what), path)


class UnreadableText(PlannerInputError):
    """Bytes of an input file that are not text (or a line too long), found at `line`."""

    def __init__(self, name: str, line: int, reason: str, what: str):
        super().__init__(f"{name}:{line}: {reason}; expected a {what}")
        self.line, self.reason = line, reason


def text_lines(path: str | Path, what: str, limit: int = MAX_INPUT_BYTES) -> Iterator[str]:
    """Lines of a UTF-8 text file with universal newlines, read as they are used.

    The checks of planner.io.read_input_text, without holding the text: the file must be readable
    (input_file), at most `limit` bytes (counted as read, for a FIFO), and UTF-8 (the error names the
    line of the first bad byte)."""
    source, name = input_file(path, what, limit), shown(path)
    total = 0
    try:
        with open(source, "rb") as stream:
            for number, raw in enumerate(iter(lambda: stream.readline(MAX_LINE_BYTES + 1), b""), start=1):
                total += len(raw)
                if total > limit:
                    raise PlannerInputError(f"{name}: more than the {limit:,} bytes accepted for a {what}")
                if len(raw) > MAX_LINE_BYTES:
                    raise UnreadableText(name, number, f"line longer than {MAX_LINE_BYTES:,} bytes", what)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise UnreadableText(name, number, f"not UTF-8 text (byte 0x{raw[error.start]:02x})", what) from None
                if "\r" not in text:
                    yield text
                    continue
                # A bare CR ends a line too (universal newlines); CR LF is one line end.
                pieces = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
                yield from (piece + "\n" for piece in pieces[:-1])
                if pieces[-1]:
                    yield pieces[-1]
    except OSError as error:
        raise PlannerInputError(f"{name}: cannot read {what} ({error.strerror or error.__class__.__name__})") from None


def check_header(header: list[str], path: str | Path) -> None:
    """A runs-CSV header needs an 'id' column and names each column once (csv.DictReader would keep
    only the last of two equal names, silently)."""
    source = shown(path)
    if "id" not in header:
        raise PlannerInputError(f"{source}: header has no 'id' column (expected the runs-CSV columns: "
                                f"{', '.join(COLUMNS[:6])}, ...)")
    duplicate = first_duplicate(header)
    if duplicate is not None:
        raise PlannerInputError(f"{source}:1: column {duplicate!r} appears twice in the header; "
                                "expected each column once (rename or remove one)")


def first_duplicate(header: list[str]) -> str | None:
    """The first column name (blank-trimmed) that appears twice in a header; empty names are ignored."""
    seen: set[str] = set()
    for column in header:
        name = column.strip()
        if name and name in seen:
            return name
        seen.add(name)
    return None


def header_names(cells: list[str]) -> list[str]:
    """Column names of a header row as written by hand or by a spreadsheet: blanks after the commas
    ("id, cluster") and a UTF-8 byte order mark before the first are not part of the name (they made every
    column 'missing'). The reader and `--append` both read a header through this."""
    names = [name.strip() for name in cells]
    if names:
        names[0] = names[0].lstrip("\ufeff").strip()
    return names


def runs_from_lines(lines: Iterable[str], path: str | Path, on_header=None) -> Iterator[MeasuredRun | RowProblem]:
    """Rows and row problems from lines of CSV text (see `iter_runs`); `on_header(names)`, when given,
    sees the header before it is checked (doctor lists what it finds in it)."""
    source = Path(path)
    reader = csv.DictReader(lines)
    try:
        header = reader.fieldnames or []
    except csv.Error as error:
        raise PlannerInputError(f"{shown(path)}: malformed CSV header ({error})") from None
    header = header_names(header)
    reader.fieldnames = header
    if on_header is not None:
        on_header(list(header))
    check_header(header, source)
    first_line: dict[str, int] = {}  # id -> line of its first readable row
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            # DictReader's own line_num moves only after a row it returns: the csv reader under it counts the line it
            # failed in (a cell over the field size limit was reported a line early).
            yield RowProblem(f"{source}:{reader.reader.line_num}", f"malformed CSV ({error})")
            return
        origin = f"{source}:{reader.line_num}"
        try:
            run = _parse_row(row, origin)
            if run.id in first_line:
                raise ValueError(f"duplicate id {run.id!r} (first at line {first_line[run.id]})")
        except ValueError as error:
            yield RowProblem(origin, str(error))
            continue
        first_line[run.id] = reader.line_num
        yield run


def _split(items: Iterable[MeasuredRun | RowProblem]) -> tuple[list[MeasuredRun], list[RowProblem]]:
    runs: list[MeasuredRun] = []
    problems: list[RowProblem] = []
    for item in items:
        (problems if isinstance(item, RowProblem) else runs).append(item)
    return runs, problems


def read_runs_files(paths) -> tuple[list[MeasuredRun], list[RowProblem]]:
    """Rows (and unreadable rows) of several runs CSVs; a path that names no readable file, or a file already
    named, is an error, and so is an id in two of the files (iter_runs_files)."""
    distinct_input_files(paths, RUNS_FILE)
    return _split(iter_runs_files(paths))


def iter_runs_files(paths) -> Iterator[MeasuredRun | RowProblem]:
    """iter_runs over several files in turn. An id already read from another file is a PlannerInputError naming
    both places: counting the row twice would weigh that run double in every error and fit, silently (within
    one file the reader reports a repeat as a row problem, as doctor does)."""
    first: dict[str, str] = {}  # id -> origin of its first row, "file.csv:12"
    for path in paths:
        for item in iter_runs(path):
            if isinstance(item, MeasuredRun):
                # Within a file the reader made a repeat a RowProblem: an id seen before is another file's.
                if item.id in first:
                    raise PlannerInputError(f"{item.origin}: id {item.id!r} is also in {first[item.id]}; expected "
                                            "each id once across the runs files (rename or remove one)")
                first[item.id] = item.origin
            yield item


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


def run_cells(run: MeasuredRun) -> dict[str, str]:
    """A row's cells as the CSV writes them, the extra columns included."""
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
        cells = run_cells(run)
        writer.writerow([cells.get(name, "") for name in columns])
    return buffer.getvalue()


def write_runs(path: str | Path, runs: list[MeasuredRun], force: bool = False) -> Path:
    """Write rows atomically; refuses to overwrite an existing file unless `force`."""
    return write_text_atomic(path, runs_to_csv_text(runs), force=force)


# What makes two rows one run: every spec column but the names and notes. Rows alike in layout, step time and memory
# are one measurement written twice (a log ingested again under another id or file name, or a copy of it), which
# validate and calibrate would weigh double.
# With the optional end-rank columns: two runs on different pipeline splits are different runs.
RUN_IDENTITY_COLUMNS = (tuple(c for c in COLUMNS if c not in ("id", "source", "confidence", "notes"))
                        + PIPELINE_SPLIT_COLUMNS)


def _as_number(text: str) -> float | str:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return text


def run_identity(cells: dict[str, str]) -> tuple | None:
    """A row's layout and measurements (RUN_IDENTITY_COLUMNS; numbers compared as numbers, "8" as 8.0), or None
    for a row without a measured step time (nothing to count twice)."""
    if not (cells.get("step_time_s") or "").strip():
        return None
    return tuple(_as_number(cells.get(c) or "") for c in RUN_IDENTITY_COLUMNS)


def repeated_run(runs: list[MeasuredRun]) -> tuple[MeasuredRun, MeasuredRun] | None:
    """The first two of `runs` that are one run (run_identity), earlier first; None when there are none."""
    seen: dict[tuple, MeasuredRun] = {}
    for run in runs:
        key = run_identity(run_cells(run))
        if key is None:
            continue
        if key in seen:
            return seen[key], run
        seen[key] = run
    return None


def append_runs(path: str | Path, runs: list[MeasuredRun]) -> Path:
    """Add rows at the end of an existing runs CSV without rewriting a byte of what is there.

    The new rows follow the file's own header (column order, line ending). Refused with a one-line
    error, before anything is written: a new id that the file already has (replacing that row would
    mean rewriting the file; two rows with one id would make the reader drop one), a row that repeats a run the
    file has (run_identity: counted twice), and a value for a column the header lacks (it would be lost; a model
    column's default is not: _lost_without_column). An empty file gets a header first.
    """
    from planner.io import append_text, output_exists

    if not output_exists(path):  # also refuses a FIFO or device before reading it
        raise PlannerInputError(f"{shown(path)}: no such runs file to append to")
    header, ids, identities = _header_and_ids(path)
    if header is None:
        return append_text(path, runs_to_csv_text(runs))
    _check_appendable(path, header, ids, runs)
    _check_new_runs(path, header, identities, runs)
    line_end, open_last_line = _line_ends(path)
    text = runs_to_csv_text(runs, header, header=False, line_end=line_end)
    return append_text(path, (line_end if open_last_line else "") + text)


def _header_and_ids(path: str | Path) -> tuple[list[str] | None, dict[str, int], dict[tuple, tuple[int, str]]]:
    """The header of a runs CSV, the line of each id in it, and the (line, id) of each run (run_identity),
    streamed; rows the reader would refuse count too (their ids are taken all the same)."""
    name, line, reader = shown(path), 1, None
    try:
        with open(path, encoding="utf-8", newline="") as stream:
            # strict: a quoted cell left open at the end of the file is an error, not a cell that runs to the
            # end (an appended row would land inside it and be lost to every reader).
            reader = csv.reader(stream, strict=True)
            header = next(reader, None)
            if header is None:
                return None, {}, {}
            header = header_names(header)  # as the reader takes it (a BOM, blanks after commas)
            if "id" not in header or len(set(header)) < len(header):
                raise PlannerInputError(f"{name}: header has no 'id' column or repeats a column; --append adds rows "
                                        "only to a runs CSV with a valid header")
            column, ids, identities = header.index("id"), {}, {}
            for row in reader:
                line = reader.line_num
                if len(row) > column:
                    ids.setdefault(row[column].strip(), line)
                    key = run_identity(dict(zip(header, row)))
                    if key is not None:
                        identities.setdefault(key, (line, row[column].strip()))
            return header, ids, identities
    except UnicodeDecodeError:
        raise PlannerInputError(f"{name}: not UTF-8 text; --append adds rows only to a readable runs CSV") from None
    except csv.Error as error:
        line = reader.line_num if reader is not None else line  # where the reader stopped
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
    lost = [name for name in _columns(runs)
            if name not in header and any(_lost_without_column(name, run_cells(run).get(name)) for run in runs)]
    if lost:
        raise PlannerInputError(f"{shown(path)}: header has no column {', '.join(lost)}, which the new rows fill; "
                                "--append never rewrites the header: write the rows to a new file and pass both files")


# The optional columns that describe the row's model beyond its shape: its linear and norm biases (0/1), its norm
# (layernorm, rmsnorm), whether its output layer is the input embedding (0/1) and its dropout probability (0 up to 1);
# empty = ModelSpec's defaults (no biases, RMSNorm, an output layer of its own, no dropout). So a new row saying the
# default loses nothing on a file without the column (a Llama log's rmsnorm, bias 0, untied, dropout 0); the other
# optional columns read empty as "infer" or "not known", so any value there would be lost.
MODEL_EXTRA_COLUMNS = ("bias", "norm", "tied_embeddings", "dropout")
# How a 0/1 column's cell reads (case-insensitive).
SWITCH_CELLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _lost_without_column(name: str, cell: str | None) -> bool:
    """Whether a new row's `cell` for a column the file's header lacks would be lost: any value, except what the
    reader takes for the missing column (MODEL_EXTRA_COLUMNS)."""
    if not (cell or "").strip():  # empty as the reader takes it
        return False
    if name not in MODEL_EXTRA_COLUMNS:
        return True
    default, text = ModelSpec.model_fields[name].default, cell.strip().lower()
    if isinstance(default, bool):
        return SWITCH_CELLS.get(text) is not default
    if isinstance(default, float):
        try:
            return float(text) != default
        except ValueError:
            return True
    return text != default


def _check_new_runs(path: str | Path, header: list[str], identities: dict, runs: list[MeasuredRun]) -> None:
    """Refuse a new row that is a run the file already has (as its header shows it) or another new row is."""
    repeated = repeated_run(runs)
    if repeated is not None:
        first, again = repeated
        raise PlannerInputError(f"rows {first.id!r} and {again.id!r} have the same layout, step time and memory: one "
                                "run would count twice; ingest each log once")
    for run in runs:
        cells = run_cells(run)
        found = identities.get(run_identity({name: cells.get(name, "") for name in header}))
        if found is not None:
            line, old = found
            raise PlannerInputError(f"{shown(path)}:{line}: row {old!r} has the same layout, step time and memory as "
                                    f"the new row {run.id!r}: one run would count twice; --append adds only new runs "
                                    "(remove the old row first to replace it)")


def _line_ends(path: str | Path) -> tuple[str, bool]:
    """(the line ending of the file's header, whether its last line lacks one): appended rows match the
    file, and start on a line of their own."""
    with open(path, "rb") as stream:
        first = stream.readline()
        stream.seek(-1, 2)
        last = stream.read(1)
    return ("\r\n" if first.endswith(b"\r\n") else "\n"), last not in (b"\n", b"\r")
