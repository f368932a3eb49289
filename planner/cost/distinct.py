"""Evaluate a part of the cost model once per distinct combination of the few columns it reads.

A search scores many candidates that share most of what a part depends on: the per-layer times read the
model, tp, cp, the micro-batch, the dtype and a few switches, not pp, dp, ZeRO or the batch size; the model
states read the stage split and the sharding, not the micro-batch or recompute. `distinct_rows` finds the
distinct combinations of the named columns (and each row's combination), the part runs on one
representative row of each (`CandidateBatch.take`), and `spread` gathers its arrays back to every row.
The arithmetic is elementwise, so every row gets the numbers it would get on its own, bit for bit.

Model columns are numbered together on one row per model (CandidateBatch.model_index): a budget search's chunk
holds a handful of models over 262,144 rows, and sorting each float column's values cost a third of its time.

The caller names every column the part reads, directly or through what it calls: a column left out would
give rows that differ only there the representative's numbers.
"""

from __future__ import annotations

import numpy as np

from planner.specs.candidate_batch import CandidateBatch

# The model's shape and parameter columns, and the attention-variant / MoE ones (None on dense batches):
# every part reads some; in a one-model batch they are constant and cost one pass each to find so.
MODEL_COLUMNS = ("layers", "hidden", "heads", "kv_heads", "ffn", "mlp_matrices", "vocab", "seq_len", "layer_params",
                 "embedding_params", "logits_params", "total_params", "tied_embeddings", "dropout_masks", "mtp_layers",
                 "query_groups", "qkv_width", "q_width", "kv_width", "attention_out_width",
                 "vector_tensors_outside", "vector_elements_per_layer",
                 "vector_split_per_layer",
                 "core_width", "moe_layers", "experts", "top_k", "expert_ffn", "expert_params", "dispatch_nodes",
                 "route_groups", "routed_only_layers", "dense_prefix", "router_params", "attention_window")
PARALLEL_SIZES = ("tp", "pp", "dp", "cp")
# The layers the layout puts on the first and the last pipeline rank (Layout.first_stage_layers, last_stage_layers;
# 0 = the stack's split): in every key that reads the stage split.
STAGE_SPLIT = ("first_stage_layers", "last_stage_layers")
# What one transformer layer's activation bytes (cost.memory) and its times and exposed tensor/context-parallel
# communication (cost.step_time) read, directly or through what they call: the model, tp and cp (their groups'
# links), the micro-batch, the dtype, the stack and the layer's switches; not pp, dp, ZeRO, offload or the batch
# size. (pp and dp are in the key only because the batch's (tp, pp, dp, cp) shapes are numbered already.) One key
# for both modules, so that a batch is numbered by it once.
LAYER_COLUMNS = MODEL_COLUMNS + PARALLEL_SIZES + (
    "micro_batch", "dtype", "fp8_current_scaling", "flash_attention", "recompute", "seq_parallel", "framework",
    "tp_comm_overlap", "partition_activations")
# Largest key space numbered through a table of that many flags (one pass); larger ones are sorted.
_TABLE_LIMIT = 1 << 22
# Above this share of distinct rows, gathering and spreading costs more than computing every row.
_WORTHWHILE_SHARE = 0.25
# Below this many rows keying costs more than it saves (validate's and calibrate's batches of tens of rows,
# scored thousands of times by the calibration's fits): every row is computed. cost.efficiency_sweep relies on it:
# its rows carry their own efficiencies, which no key reads.
FEWEST_KEYED_ROWS = 2048


def _dense_codes(key: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """`key` (values in [0, size)) renumbered 0 .. distinct - 1 in increasing order, and the count. Through a
    table of `size` flags where that is not much larger than the key (a pass over the table), else sorted."""
    if size <= min(_TABLE_LIMIT, 8 * len(key)):
        present = np.zeros(size, dtype=bool)
        present[key] = True
        number = np.cumsum(present, dtype=np.int64) - 1
        return number[key], int(number[-1]) + 1
    unique, inverse = np.unique(key, return_inverse=True)
    return inverse.reshape(-1), len(unique)


def _column_codes(column: np.ndarray) -> tuple[np.ndarray | None, int]:
    """A column as codes 0 .. count - 1 (equal values, equal codes; not every code need occur) and the count;
    None for a constant column. A 2-D column (a vector per candidate) is numbered by its rows."""
    if column.ndim == 2:  # its sub-columns' codes combined, as _refined combines columns (a row sort is slow)
        key, size = np.zeros(len(column), dtype=np.int64), 1
        for j in range(column.shape[1]):
            codes, count = _column_codes(column[:, j])
            if codes is None:
                continue
            if size * count > _TABLE_LIMIT:
                key, size = _dense_codes(key, size)
            key, size = key * count + codes, size * count
        return (None, 1) if size == 1 else _dense_codes(key, size)
    if column.dtype == bool:
        return (column, 2) if column.any() and not column.all() else (None, 1)
    if len(column) == 0 or column.strides[0] == 0 or (column == column[0]).all():  # most key columns are constant
        return None, 1
    low, high = column.min(), column.max()
    if np.isfinite(high - low) and high - low < _TABLE_LIMIT:
        codes = column.astype(np.int64)
        if np.array_equal(codes, column):  # whole numbers in a small range (parallel sizes, codes, batch sizes)
            codes -= int(low)
            return codes, int(high - low) + 1
    unique, inverse = np.unique(column, return_inverse=True)
    return inverse.reshape(-1), len(unique)


def _codes(batch: CandidateBatch, name: str) -> tuple[np.ndarray | None, int]:
    """_column_codes of a batch column, once per batch (several parts key on the same columns)."""
    return batch.cached(f"distinct_codes:{name}", lambda b: _column_codes(np.asarray(getattr(b, name))))


def parallel_shapes(batch: CandidateBatch):
    """The distinct (tp, pp, dp, cp) of a batch and each row's index into them, once per batch. A search scores
    many rows per shape: group links are looked up per shape (groups.layout_links), and keys with all four
    sizes start from it."""
    return batch.cached("parallel_shapes", _parallel_shapes)


def _parallel_shapes(batch: CandidateBatch):
    key, size = _refined(batch, PARALLEL_SIZES, np.zeros(len(batch), dtype=np.int64), 1)
    inverse, count = _dense_codes(key, size)
    representative = _representatives(inverse, count)
    return {name: np.asarray(getattr(batch, name))[representative] for name in PARALLEL_SIZES}, inverse


def _refined(batch: CandidateBatch, columns: tuple[str, ...], key: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """`key` (codes below `size`) combined with the codes of `columns` (None and constant columns skipped): rows
    with equal keys have equal values in every column. Returns the new key and its size. The model columns
    among them count as one, numbered per model where the batch knows each row's model (_model_codes)."""
    if batch.model_index is not None:
        models = tuple(name for name in columns if name in _MODEL_COLUMN_SET and getattr(batch, name) is not None)
        if models:
            key, size = _combined(key, size, *_model_codes(batch, models))
            columns = tuple(name for name in columns if name not in _MODEL_COLUMN_SET)
    for name in columns:
        if getattr(batch, name) is not None:
            key, size = _combined(key, size, *_codes(batch, name))
    return key, size


def _combined(key: np.ndarray, size: int, codes: np.ndarray | None, count: int) -> tuple[np.ndarray, int]:
    """`key` (below `size`) refined by `codes` (below `count`; None: constant), renumbered first where the
    product would pass _TABLE_LIMIT."""
    if codes is None:
        return key, size
    if size * count > _TABLE_LIMIT:
        key, size = _dense_codes(key, size)
    return key * count + codes, size * count


_MODEL_COLUMN_SET = frozenset(MODEL_COLUMNS)


def _model_codes(batch: CandidateBatch, names: tuple[str, ...]) -> tuple[np.ndarray | None, int]:
    """Codes of the combination of the model columns `names`, once per batch: numbered on one row of each model
    (batch.model_index; every model column is a function of it) and gathered to every row. Equal values,
    equal codes, as numbering each column on every row gives, without sorting millions of float values."""
    return batch.cached("distinct_codes:model:" + ",".join(names), lambda b: _numbered_per_model(b, names))


def _numbered_per_model(batch: CandidateBatch, names: tuple[str, ...]) -> tuple[np.ndarray | None, int]:
    codes, size = _codes(batch, "model_index")
    if codes is None:  # one model: every model column is constant
        return None, 1
    model_of_row, models = _dense_codes(codes, size)  # every code occurs: one representative row each
    one_per_model = _representatives(model_of_row, models)
    key, size = np.zeros(models, dtype=np.int64), 1
    for name in names:
        column = getattr(batch, name)
        if column is not None:
            key, size = _combined(key, size, *_column_codes(np.asarray(column)[one_per_model]))
    if size == 1:
        return None, 1
    codes, count = _dense_codes(key, size)
    return codes[model_of_row], count


def _representatives(inverse: np.ndarray, count: int) -> np.ndarray:
    """One row of each of the `count` combinations that `inverse` numbers (any row of each will do)."""
    representative = np.empty(count, dtype=np.int64)
    representative[inverse] = np.arange(len(inverse))
    return representative


def _distinct_rows(batch: CandidateBatch, columns: tuple[str, ...]):
    if len(batch) < FEWEST_KEYED_ROWS:
        return None
    if set(PARALLEL_SIZES) <= set(columns):  # numbered already: the key starts from the row's shape
        sizes, key = parallel_shapes(batch)
        key, size = _refined(batch, tuple(name for name in columns if name not in PARALLEL_SIZES), key,
                             len(sizes["tp"]))
    else:
        key, size = _refined(batch, columns, np.zeros(len(batch), dtype=np.int64), 1)
    inverse, distinct = _dense_codes(key, size)
    if distinct > _WORTHWHILE_SHARE * len(batch):
        return None
    return _representatives(inverse, distinct), inverse


def distinct_rows(batch: CandidateBatch, columns: tuple[str, ...]):
    """(representative rows, each row's index into them) of the distinct combinations of `columns` (None
    columns skipped), or None where distinct combinations are too many for the detour to pay."""
    return batch.cached("distinct_rows:" + ",".join(columns), lambda b: _distinct_rows(b, columns))


def take(batch: CandidateBatch, rows: np.ndarray) -> CandidateBatch:
    """batch.take(rows), keeping what this module has numbered on `batch`: each column's codes and the parallel
    shapes, indexed by `rows` (not every code need occur: _column_codes), so that the sub-batch's keys are combined
    from them rather than numbered afresh (the searches price the layouts that fit out of millions)."""
    return batch.take(rows, carry=_codes_of_rows)


def _codes_of_rows(key: str, value, rows: np.ndarray):
    """A cached entry of this module's, at `rows`; None for any other entry (computed afresh on the sub-batch)."""
    if key.startswith("distinct_codes:"):
        codes, count = value
        return None if codes is None else codes[rows], count
    if key == "parallel_shapes":
        sizes, inverse = value
        return sizes, inverse[rows]
    return None


def once_per_combination(batch: CandidateBatch, columns: tuple[str, ...], compute):
    """compute(batch) (arrays per row, nested in dicts and tuples), evaluated on one representative row of each
    distinct combination of `columns` and spread to every row; on every row where that does not pay."""
    values, inverse = per_combination(batch, columns, compute)
    return values if inverse is None else spread(values, inverse)


def per_combination(batch: CandidateBatch, columns: tuple[str, ...], compute):
    """(compute of one representative row per distinct combination of `columns`, each row's index into them), or
    (compute(batch), None) where keying does not pay: for callers that combine the values before spreading them."""
    rows = distinct_rows(batch, columns)
    if rows is None:
        return compute(batch), None
    representative, inverse = rows
    return compute(batch.take(representative)), inverse


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
