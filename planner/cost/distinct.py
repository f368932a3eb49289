"""Evaluate a part of the cost model once per distinct combination of the few columns it reads.

A search scores many candidates that share most of what a part depends on: the per-layer times read the
model, tp, cp, the micro-batch, the dtype and a few switches, not pp, dp, ZeRO or the batch size; the model
states read the stage split and the sharding, not the micro-batch or recompute. `distinct_rows` finds the
distinct combinations of the named columns (and each row's combination), the part runs on one
representative row of each (`CandidateBatch.take`), and `spread` gathers its arrays back to every row.
The arithmetic is elementwise, so every row gets the numbers it would get on its own, bit for bit.

The caller names every column the part reads, directly or through what it calls: a column left out would
give rows that differ only there the representative's numbers.
"""

from __future__ import annotations

import numpy as np

from planner.specs.layout import CandidateBatch

# The model's shape and parameter columns, and the attention-variant / MoE ones (None on dense batches):
# every part reads some, and in a one-model batch they are constant, so they cost nothing in a key.
MODEL_COLUMNS = ("layers", "hidden", "heads", "kv_heads", "ffn", "mlp_matrices", "vocab", "seq_len", "layer_params",
                 "embedding_params", "logits_params", "total_params", "tied_embeddings", "core_width", "moe_layers",
                 "experts", "top_k", "expert_ffn", "expert_params", "dispatch_nodes", "attention_window")
# Largest key space numbered through a table of that many flags (one pass); larger ones are sorted.
_TABLE_LIMIT = 1 << 22
# Above this share of distinct rows, gathering and spreading costs more than computing every row.
_WORTHWHILE_SHARE = 0.25


def _dense_codes(key: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """`key` (values in [0, size)) renumbered 0 .. distinct - 1 in increasing order, and the count."""
    if size <= _TABLE_LIMIT:
        present = np.zeros(size, dtype=bool)
        present[key] = True
        number = np.cumsum(present, dtype=np.int64) - 1
        return number[key], int(number[-1]) + 1
    unique, inverse = np.unique(key, return_inverse=True)
    return inverse.reshape(-1), len(unique)


def _column_codes(column: np.ndarray) -> tuple[np.ndarray | None, int]:
    """A column as codes 0 .. count - 1 (equal values, equal codes) and the count; None for a constant column."""
    if column.dtype == bool:
        return (column.astype(np.int64), 2) if column.any() and not column.all() else (None, 1)
    low, high = column.min(), column.max()
    if low == high:
        return None, 1
    span = high - low
    if np.isfinite(span) and span < _TABLE_LIMIT:
        shifted = column - low
        codes = shifted.astype(np.int64)
        if np.array_equal(codes, shifted):  # small whole numbers (parallel sizes, codes, batch sizes)
            return _dense_codes(codes, int(span) + 1)
    unique, inverse = np.unique(column, return_inverse=True)
    return inverse.reshape(-1), len(unique)


def _codes(batch: CandidateBatch, name: str) -> tuple[np.ndarray | None, int]:
    """_column_codes of a batch column, once per batch (several parts key on the same columns)."""
    return batch.cached(f"distinct_codes:{name}", lambda b: _column_codes(np.asarray(getattr(b, name))))


def _distinct_rows(batch: CandidateBatch, columns: tuple[str, ...]):
    key, size = np.zeros(len(batch), dtype=np.int64), 1
    for name in columns:
        if getattr(batch, name) is None:
            continue
        codes, count = _codes(batch, name)
        if codes is None:
            continue
        if size * count > _TABLE_LIMIT:
            key, size = _dense_codes(key, size)
        key = key * count + codes
        size *= count
    inverse, distinct = _dense_codes(key, size)
    if distinct > _WORTHWHILE_SHARE * len(batch):
        return None
    representative = np.empty(distinct, dtype=np.int64)
    representative[inverse] = np.arange(len(batch))  # any row of each combination will do
    return representative, inverse


def distinct_rows(batch: CandidateBatch, columns: tuple[str, ...]):
    """(representative rows, each row's index into them) of the distinct combinations of `columns` (None
    columns skipped), or None where distinct combinations are too many for the detour to pay."""
    return batch.cached("distinct_rows:" + ",".join(columns), lambda b: _distinct_rows(b, columns))


def spread(values, inverse: np.ndarray):
    """Arrays (nested in dicts and tuples) of the representative rows gathered back to every row; scalars as they are.
    Arrays of shape (k, representatives), like the memory model's per-stage arrays, are gathered on their
    last axis."""
    if isinstance(values, dict):
        return {name: spread(value, inverse) for name, value in values.items()}
    if isinstance(values, tuple):
        return tuple(spread(value, inverse) for value in values)
    if np.ndim(values) == 0:
        return values
    return np.take(values, inverse, axis=-1)
