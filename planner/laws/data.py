"""Read (N, D, loss) points for law fits from CSV or JSON-lines, grouped into runs.

Column names are configurable; by default the formats in data/laws/ work as they are:
the Epoch digitisation of Chinchilla (`Model Size`, `Training FLOP`, `loss`; D = C/(6N)) and the
Gemstones checkpoints (`params_active_precise`, `tokens`, `final_loss`, grouped by `run_name`, one
run contributing many rows). Rows without a run column are runs of their own. Counts accept the
planner's count syntax ("70B", "1.4e12"). Every problem is a one-line PlannerInputError naming
the file, row and column; a column (or JSON key) given twice, and one column named for two roles
(`--n-col loss`), are refused rather than one of them silently winning.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.errors import PlannerInputError
from planner.io import read_input_text, shown
from planner.specs.units import parse_count
from planner.laws.training_compute import dense_training_flops, tokens_for_compute

# Column names tried in order when no name is given (case-sensitive first, then case-insensitive).
CANDIDATES = {
    "n": ("N", "params", "parameters", "n_params", "Model Size", "params_active_precise", "model_size"),
    "d": ("D", "tokens", "n_tokens", "Training Tokens", "training_tokens"),
    "c": ("C", "flops", "FLOPs", "Training FLOP", "training_flops", "compute"),
    "loss": ("loss", "final_loss", "Loss", "eval_loss", "val_loss"),
    "run": ("run_name", "run", "run_id"),
}
FLAGS = {"n": "--n-col", "d": "--d-col", "c": "--c-col", "loss": "--loss-col", "run": "--run-col"}


@dataclass(frozen=True, eq=False)
class LossData:
    """Points of a law fit. `run` holds integer run codes indexing `run_names`."""

    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    run: np.ndarray
    run_names: tuple[str, ...]
    path: str
    columns: dict[str, str]
    notes: tuple[str, ...] = ()  # what the reader noticed and kept (repeated points), for the fit's warnings

    @property
    def n_runs(self) -> int:
        return len(self.run_names)

    def subset(self, mask: np.ndarray) -> "LossData":
        """Rows where mask holds, with run codes renumbered."""
        kept_codes, new_run = np.unique(self.run[mask], return_inverse=True)
        return LossData(self.N[mask], self.D[mask], self.loss[mask], new_run,
                        tuple(self.run_names[c] for c in kept_codes), self.path, self.columns, self.notes)

    def final_points(self) -> np.ndarray:
        """Mask of each run's last checkpoint (largest D): the run's final loss."""
        last = np.full(self.n_runs, -1)
        for i in np.lexsort((self.D, self.run)):
            last[self.run[i]] = i
        mask = np.zeros(self.N.size, dtype=bool)
        mask[last] = True
        return mask

    def run_compute(self) -> np.ndarray:
        """6·N·D of each run's final checkpoint, per run code (FLOP)."""
        out = np.zeros(self.n_runs)
        np.maximum.at(out, self.run, dense_training_flops(self.N, self.D))
        return out


def read_loss_data(path: str, n_col=None, d_col=None, c_col=None, loss_col=None, run_col=None,
                   shape_cols: tuple[str, ...] = ()) -> LossData:
    """`shape_cols`: columns beside N that tell one model from another (a mixture of experts' active parameters
    and granularity), so that rows differing there are not taken for repeats of one point."""
    rows, header = _read_rows(path)
    where = str(path)
    if d_col is not None and c_col is not None:
        raise PlannerInputError("--d-col and --c-col: give one (D is read from a tokens column, or is C / 6N)")
    chosen = {key: _pick(header, key, given, where) for key, given in
              (("n", n_col), ("d", d_col), ("c", c_col), ("loss", loss_col), ("run", run_col))}
    if c_col is not None:  # the compute column named: not a tokens column found by name (it silently won)
        chosen["d"] = None
    _check_roles(chosen, where)
    for key in ("n", "loss"):
        if chosen[key] is None:
            raise PlannerInputError(f"{where}: no {_what(key)} column (looked for {', '.join(CANDIDATES[key])}); "
                                    f"name it with {FLAGS[key]}")
    if chosen["d"] is None and chosen["c"] is None:
        raise PlannerInputError(f"{where}: no token (D) or compute (C) column (looked for "
                                f"{', '.join(CANDIDATES['d'] + CANDIDATES['c'])}); name one with --d-col or --c-col")

    n = np.array([_count(r, chosen["n"], i, where) for i, r in rows])
    loss = np.array([_loss(r, chosen["loss"], i, where) for i, r in rows])
    if chosen["d"] is not None:
        d = np.array([_count(r, chosen["d"], i, where) for i, r in rows])
        chosen.pop("c")
    else:  # C = 6ND (Kaplan et al. 2020), the definition the Epoch digitisation states
        with np.errstate(over="ignore"):  # a tiny N (a unit slip) overflows D: refused just below, not warned
            d = tokens_for_compute(np.array([_count(r, chosen["c"], i, where) for i, r in rows]), n)
        if not np.all(np.isfinite(d)):
            k = int(np.argmin(np.isfinite(d)))
            raise PlannerInputError(f"{where} line {rows[k][0]}: D = C / (6 N) is not finite (N = {n[k]:.4g} in column "
                                    f"{chosen['n']!r}): check that column holds parameter counts")
        chosen.pop("d")
    if chosen["run"] is None:
        labels = [f"line {i}" for i, _ in rows]
    else:
        # A blank or null run cell was the run "" or "None", which grouped unrelated rows as one run.
        labels = [str(_cell(r, chosen["run"], i, where)).strip() for i, r in rows]
    names, codes = np.unique(np.array(labels, dtype=object), return_inverse=True)
    lines = [i for i, _ in rows]
    shapes = [tuple(_shape_value(r.get(column)) for column in shape_cols) for _, r in rows]
    if chosen["run"] is not None:
        _check_one_model_per_run(lines, labels, n, shapes, where, shape_cols)
    notes = repeated_points(lines, labels if chosen["run"] else None, n, d, loss, where, shapes)
    return LossData(n, d, loss, codes.astype(int), tuple(names), where,
                    {k: v for k, v in chosen.items() if v is not None}, tuple(notes))


def _shape_value(cell):
    """A shape column's cell as a key: finite numbers compared as numbers ("8" as 8.0), anything else as its text
    (NaN equals no NaN; a bad cell is refused later, naming its column)."""
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return str(cell).strip()
    return value if math.isfinite(value) else str(cell).strip()


def _check_one_model_per_run(lines: list[int], runs: list[str], n, shapes: list[tuple], where: str,
                             shape_cols: tuple[str, ...]) -> None:
    """A run trains one model: rows of one run with another N (or shape) were fitted as one run, which the
    bootstrap and the held-out split take as a unit. Refused, naming both lines."""
    def named(shape):
        return ", ".join(f"{column}={value}" for column, value in zip(shape_cols, shape))

    first: dict[str, int] = {}
    for k, line in enumerate(lines):
        j = first.setdefault(runs[k], k)
        if n[k] != n[j] or shapes[k] != shapes[j]:
            here, there = (f"N={n[k]:.4g}", f"N={n[j]:.4g}") if n[k] != n[j] else (named(shapes[k]), named(shapes[j]))
            raise PlannerInputError(f"{where} line {line}: run {runs[k]!r} has {here}, but line {lines[j]} gives it "
                                    f"{there}; a run trains one model: give each model a run name of its own")


def repeated_points(lines: list[int], runs: list[str] | None, n, d, loss, where: str,
                    shapes: list[tuple] | None = None) -> list[str]:
    """Rows that repeat an earlier row's (run, N, D) and model shape (`shapes`, a tuple per row). Within a named
    run two losses at one checkpoint contradict each other: refused, naming both lines (they had both been fitted
    without a word). Without a run column each row is a run of its own, so equal N and D may be seed replicates:
    kept, with a warning; an identical row is kept and said to be fitted twice."""
    first: dict[tuple, int] = {}
    notes = []
    for k, line in enumerate(lines):
        shape = shapes[k] if shapes is not None else ()
        key = (runs[k] if runs is not None else None, float(n[k]), float(d[k]), shape)
        if key not in first:
            first[key] = k
            continue
        j = first[key]
        if loss[k] == loss[j]:
            notes.append(f"line {line} repeats line {lines[j]} (N, D and loss): the point is fitted twice")
        elif runs is not None:
            raise PlannerInputError(f"{where} line {line}: run {runs[k]!r} at N={n[k]:.4g}, D={d[k]:.4g} has loss "
                                    f"{loss[k]:g}, but line {lines[j]} gives it {loss[j]:g}; a run has one loss per "
                                    "checkpoint: drop one, or give each seed a run name of its own")
        else:
            notes.append(f"lines {lines[j]} and {line} have the same N={n[k]:.4g} and D={d[k]:.4g} with losses "
                         f"{loss[j]:g} and {loss[k]:g}: both are fitted, as separate runs (seed replicates?)")
    return notes


def _check_roles(chosen: dict[str, str | None], where: str) -> None:
    """One column cannot be two of N, D, C, loss and run (`--n-col loss` would fit the loss to itself)."""
    taken: dict[str, str] = {}
    for key in ("n", "d", "c", "loss", "run"):
        column = chosen[key]
        if column is None:
            continue
        if column in taken:
            raise PlannerInputError(f"{where}: column {column!r} cannot hold both {_role(taken[column])} and {_role(key)}; "
                                    f"name a different column with {FLAGS[key]} or {FLAGS[taken[column]]}")
        taken[column] = key


def _role(key: str) -> str:
    return {"n": "N (parameters)", "d": "D (tokens)", "c": "C (compute)", "loss": "the loss", "run": "the run name"}[key]


def _json_object(pairs: list[tuple[str, object]], path: Path, number: int) -> dict:
    """json.loads' object hook: a key given twice is an error (json keeps the last one silently)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise PlannerInputError(f"{shown(path)} line {number}: key {key!r} appears twice in the object; "
                                    "expected each key once")
        out[key] = value
    return out


def _read_rows(name: str) -> tuple[list[tuple[int, dict]], list[str]]:
    """[(line number in the file, row)], column names."""
    text = read_input_text(name, "data file (CSV or JSON lines)", encoding="utf-8-sig")
    path = Path(name)
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson") or text.lstrip().startswith("{"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line, object_pairs_hook=lambda pairs: _json_object(pairs, path, number))
            except json.JSONDecodeError as error:
                raise PlannerInputError(f"{path} line {number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise PlannerInputError(f"{path} line {number}: expected a JSON object per line")
            rows.append((number, row))
        header = list(dict.fromkeys(k for _, r in rows for k in r))
    else:
        lines = text.splitlines()
        reader = csv.DictReader(lines)
        try:
            header = list(reader.fieldnames or [])
            if len(set(header)) < len(header):  # DictReader would keep the last of two equal names
                twice = next(column for i, column in enumerate(header) if column in header[:i])
                raise PlannerInputError(f"{shown(path)} line 1: column {twice!r} appears twice in the header; "
                                        "expected each column once (rename or remove one)")
            # The physical line each record starts on: a quoted cell may span lines, so counting records
            # (enumerate) drifts. A record begins after the line the previous one ended on (line_num),
            # past the empty lines DictReader skips (a record never starts with an empty line).
            rows, end = [], reader.line_num
            for row in reader:
                start = end + 1
                while start < reader.line_num and not lines[start - 1]:
                    start += 1
                rows.append((start, row))
                end = reader.line_num
            for number, row in rows:  # DictReader files surplus cells under None: the row's cells are shifted
                if None in row:
                    raise PlannerInputError(f"{shown(path)} line {number}: {len(header) + len(row[None])} cells but the "
                                            f"header names {len(header)} columns; expected one cell per column "
                                            "(no thousands separators; quote a cell that holds a comma)")
        except csv.Error as error:  # a cell over the csv module's 128 KiB field limit
            # line_num counts the lines read before the one that failed
            raise PlannerInputError(f"{shown(path)} line {reader.line_num + 1}: malformed CSV ({error})") from None
    if not rows:
        raise PlannerInputError(f"{path}: no data rows")
    return rows, header


def _pick(header: list[str], key: str, given: str | None, where: str) -> str | None:
    if given is not None:
        if given not in header:
            raise PlannerInputError(f"{where}: {FLAGS[key]} {given!r} is not a column; columns are {', '.join(header)}")
        return given
    for name in CANDIDATES[key]:
        if name in header:
            return name
    lowered = {h.lower(): h for h in header}
    return next((lowered[n.lower()] for n in CANDIDATES[key] if n.lower() in lowered), None)


def _what(key: str) -> str:
    return {"n": "parameter-count (N)", "loss": "loss"}[key]


def _count(row: dict, column: str, number: int, where: str) -> float:
    return parse_count(_cell(row, column, number, where), f"{where} line {number} column {column!r}")


def _loss(row: dict, column: str, number: int, where: str) -> float:
    raw = _cell(row, column, number, where)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(raw, bool) or not math.isfinite(value) or value <= 0:
        raise PlannerInputError(f"{where} line {number} column {column!r}: expected a positive finite loss, got {raw!r}")
    return value


def _cell(row: dict, column: str, number: int, where: str):
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise PlannerInputError(f"{where} line {number} column {column!r}: empty")
    return value


# Columns a mixture-of-experts fit needs beyond D and the loss (planner.laws.moe, Krajewski et al. 2024).
MOE_COLUMNS = {"total": "total_params", "active": "active_params", "granularity": "granularity"}


def read_moe_data(path: str, total_col=None, active_col=None, granularity_col=None, d_col=None, c_col=None,
                  loss_col=None, run_col=None) -> tuple[LossData, np.ndarray, np.ndarray]:
    """(points with N = total non-embedding parameters, active parameters, granularity) for a moe fit.

    Columns by default `total_params`, `active_params`, `granularity` (flags --n-col, --active-col,
    --granularity-col); a missing column, a bad value, or total below active is a one-line error."""
    rows, header = _read_rows(path)
    where = str(path)
    names = {"total": total_col or MOE_COLUMNS["total"], "active": active_col or MOE_COLUMNS["active"],
             "granularity": granularity_col or MOE_COLUMNS["granularity"]}
    flags = {"total": "--n-col", "active": "--active-col", "granularity": "--granularity-col"}
    what = {"total": "total non-embedding parameters", "active": "active parameters per token",
            "granularity": "expert granularity d_ff / d_expert"}
    for key, column in names.items():
        if column not in header:
            raise PlannerInputError(f"{where}: a moe fit needs a {column!r} column ({what[key]}); name it with "
                                    f"{flags[key]}; columns are {', '.join(header)}")
    data = read_loss_data(path, names["total"], d_col, c_col, loss_col, run_col,
                          shape_cols=(names["active"], names["granularity"]))
    active = np.array([_count(r, names["active"], i, where) for i, r in rows])
    granularity = np.array([_granularity(r, names["granularity"], i, where) for i, r in rows])
    below = data.N < active
    if below.any():
        i = int(np.argmax(below))
        raise PlannerInputError(f"{where} line {rows[i][0]}: {names['total']} ({data.N[i]:.4g}) is below "
                                f"{names['active']} ({active[i]:.4g}); expected total >= active")
    tokens = data.D
    if "c" in data.columns:
        # read_loss_data took D = C / (6·N) with N the total parameters; a MoE's training compute is eq. 10 of
        # Krajewski et al. 2024 on the active parameters (planner.laws.moe.training_flops), so D = C / F_token.
        from planner.laws.moe import expansion_rate_from_params, training_flops

        compute = dense_training_flops(data.N, data.D)
        tokens = compute / training_flops(active, 1.0, granularity, expansion_rate_from_params(data.N, active))
    columns = {**data.columns, "active": names["active"], "granularity": names["granularity"]}
    return (LossData(data.N, tokens, data.loss, data.run, data.run_names, data.path, columns, data.notes), active,
            granularity)


def _granularity(row: dict, column: str, number: int, where: str) -> float:
    raw = _cell(row, column, number, where)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(raw, bool) or not math.isfinite(value) or value < 1:
        raise PlannerInputError(f"{where} line {number} column {column!r}: expected a granularity >= 1, got {raw!r}")
    return value
