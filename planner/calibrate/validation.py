"""Measured runs -> simulator inputs -> predicted vs measured, with error statistics.

Used by `planner validate` and by calibration. A row that cannot be simulated (missing shape,
unknown cluster, a layout that does not divide) is kept with its reason, never dropped silently.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from planner.cost.estimate import check_simulable, estimate, model_states
from planner.cost.memory import CUDA_CONTEXT_BYTES
from planner.cost.infer import INFERABLE, infer_layout
from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORKS
from planner.profile import runs_csv
from planner.profile.runs_csv import MEM_ALLOCATOR_PEAK, MEM_COUNTED_TENSORS
from planner.specs.hardware import ClusterSpec
from planner.specs.clusters import load_cluster
from planner.specs.candidate_batch import layouts_batch
from planner.specs.layout import Layout
from planner.specs.model import ModelSpec, make_model
from planner.profile.runs_csv import (MODEL_EXTRA_COLUMNS, SWITCH_CELLS, MeasuredRun, missing_simulation_columns,
                                     run_status, status_problem)



@dataclass(frozen=True)
class RowResult:
    run: MeasuredRun
    predicted: dict | None = None  # simulate()'s figures that validation reports (_figures)
    reason: str | None = None  # why the row could not be simulated
    cluster_name: str | None = None
    inferred: dict = field(default_factory=dict)  # settings the row left empty, as inferred (cost.infer)

    @property
    def step_error(self) -> float | None:
        """Signed relative error of predicted vs measured step time, or None."""
        if self.predicted is None or not self.run.step_time_s:
            return None
        return self.predicted["step_time_s"] / self.run.step_time_s - 1.0

    @property
    def predicted_memory_bytes(self) -> float | None:
        """Predicted bytes comparable to the row's mem_gib: the whole footprint; only the model states and
        buffers when the row counted tensors (CPU profiles: mem_method=counted-tensors); without what torch's
        caching allocator does not count when the row is its peak (GPU profiles: mem_method=allocator-peak,
        `torch.cuda.max_memory_allocated`)."""
        if self.predicted is None:
            return None
        method = self.run.extra.get("mem_method")
        if method == MEM_COUNTED_TENSORS:
            return self.predicted["memory"]["model_states_bytes"]
        if method == MEM_ALLOCATOR_PEAK:
            return self.predicted["memory"]["allocated_bytes"]
        return self.predicted["memory"]["total_bytes"]

    @property
    def memory_error(self) -> float | None:
        if self.predicted is None or not self.run.mem_gib:
            return None
        return self.predicted_memory_bytes / (self.run.mem_gib * 2**30) - 1.0


# What torch.cuda.max_memory_allocated leaves out of the model's footprint (cost/memory.py reserve_parts): the CUDA
# context itself (the driver's; CUDA_CONTEXT_BYTES of the cuda_context part, whose cuBLAS and Transformer Engine
# workspaces torch allocates through its caching allocator, ATen/cuda/CublasHandlePool.cpp getNewWorkspace), NCCL's
# buffers (NCCL's own cudaMalloc) and the allocator's cached but unallocated blocks (fragmentation).
OUTSIDE_ALLOCATED = ("nccl_buffers", "fragmentation")

# The optional 0/1 columns a row's simulation reads (data/spec/runs_csv.md), and with `framework` every
# optional column besides the core COLUMNS and HIERARCHY_COLUMNS.
SWITCH_COLUMNS = ("flash_attention", "tp_comm_overlap", "dp_comm_overlap", "grad_reduce_in_fp32", "partition_activations")
# MODEL_EXTRA_COLUMNS (profile.runs_csv): the optional columns that describe the row's model beyond its shape.
SIMULATED_EXTRA_COLUMNS = ("framework", *SWITCH_COLUMNS, *MODEL_EXTRA_COLUMNS)


def _switch(run: MeasuredRun, column: str, where: str) -> bool | None:
    """A 0/1 column kept in the row's extra cells; None when empty."""
    text = (run.extra.get(column) or "").strip().lower()
    if not text:
        return None
    if text not in SWITCH_CELLS:
        raise PlannerInputError(f"{where}: column '{column}': expected 0 or 1, got {text!r}")
    return SWITCH_CELLS[text]


def _whole(run: MeasuredRun, column: str, where: str) -> int | None:
    """A whole-number column (>= 1) kept in the row's extra cells; None when empty."""
    text = (run.extra.get(column) or "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise PlannerInputError(f"{where}: column '{column}': expected a whole number >= 1, got {text!r}")
    return int(text)


def _probability(run: MeasuredRun, column: str, where: str) -> float | None:
    """A probability column (0 up to, not including, 1) kept in the row's extra cells; None when empty."""
    text = (run.extra.get(column) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < 1.0:  # NaN fails too
        raise PlannerInputError(f"{where}: column '{column}': expected a probability from 0 up to (not including) 1, "
                                f"got {text!r}")
    return value


def _model_cells(run: MeasuredRun, where: str) -> dict:
    """The ModelSpec fields a row's MODEL_EXTRA_COLUMNS give (make_model names a norm it does not know)."""
    cells = {"bias": _switch(run, "bias", where), "norm": (run.extra.get("norm") or "").strip().lower() or None,
             "tied_embeddings": _switch(run, "tied_embeddings", where), "dropout": _probability(run, "dropout", where)}
    return {name: value for name, value in cells.items() if value is not None}


# ZeRO-3 hierarchy columns (planner.specs.layout): whole numbers and 0/1 switches.
HIERARCHY_COLUMNS = {"zero_hpz": _whole, "shard_group": _whole, "grad_shard_group": _whole,
                     "zero_quantized_weights": _switch, "zero_quantized_gradients": _switch}


# The transformer layers the layout puts on the first and the last pipeline rank (planner.specs.layout:
# Layout.first_stage_layers / last_stage_layers; Megatron-Core's --decoder-first/last-pipeline-num-layers); empty =
# the stack's own split, whole numbers >= 1.
PIPELINE_SPLIT_COLUMNS = dict.fromkeys(runs_csv.PIPELINE_SPLIT_COLUMNS, _whole)


# The MLP of a row that does not say: GPT's two-matrix GELU MLP (Radford et al. 2019; Megatron-LM runs it unless
# --swiglu is given), the architecture of most published runs that leave the column out.
DEFAULT_MLP = "gelu"


def _defaults_for_empty_cells(run: MeasuredRun, framework: str | None) -> dict:
    """What a row's empty mlp, dtype and zero cells are taken as: the values its stack's users run (the
    framework table's default_dtype / default_zero; an empty framework cell is the neutral `other`)."""
    stack = FRAMEWORKS[framework or "other"]
    defaults = {"mlp": DEFAULT_MLP, "dtype": stack.default_dtype, "zero": stack.default_zero}
    return {name: value for name, value in defaults.items() if getattr(run, name) is None}


def run_to_config(run: MeasuredRun, cluster_dir=None, clusters: dict | None = None,
                  inferred: dict | None = None) -> tuple[ModelSpec, Layout, ClusterSpec]:
    """Build (model, layout, cluster) from a runs-CSV row; raises PlannerInputError with the reason.

    Settings the row leaves empty are inferred: mlp, dtype and zero as its stack's users run them
    (_defaults_for_empty_cells), micro-batch, recompute, interleaving, sequence parallelism, flash attention
    as the fastest that fits, and an empty framework as `other`, the neutral stack (`cost.infer`); pass a dict
    as `inferred` to learn which."""
    where = run.origin or f"row {run.id}"
    if (problem := status_problem(run)) is not None:
        raise PlannerInputError(f"{where}: {problem}")
    status = run_status(run)
    if status != "ok":
        raise PlannerInputError(f"{where}: run status is {status!r}, not a measurement")
    missing = missing_simulation_columns(run)
    if missing:
        raise PlannerInputError(f"{where}: missing {', '.join(missing)}")
    if clusters is not None and run.cluster in clusters:
        cluster = clusters[run.cluster]
    else:
        cluster = load_cluster(run.cluster, cluster_dir, data_file=where)  # confined: a CSV cannot name /etc/...
    framework = (run.extra.get("framework") or "").strip() or None
    if framework is not None and framework not in FRAMEWORKS:
        raise PlannerInputError(f"{where}: column 'framework': expected one of {', '.join(FRAMEWORKS)} or empty, "
                                f"got {framework!r}")
    defaulted = _defaults_for_empty_cells(run, framework)
    model = make_model(
        where, name=f"row-{run.id}", layers=run.layers, hidden=run.hidden, heads=run.heads,
        kv_heads=run.kv_heads or run.heads, ffn=run.ffn, mlp=defaulted.get("mlp", run.mlp), vocab=run.vocab,
        seq_len=run.seq_len, **_model_cells(run, where),
    )
    tp, pp, cp = run.tp or 1, run.pp or 1, run.cp or 1
    dp = run.dp or (run.gpus // (tp * pp * cp) if run.gpus else 1)
    fields = {
        "tp": tp, "pp": pp, "dp": dp, "cp": cp, "vpp": run.vpp, "zero": defaulted.get("zero", run.zero),
        "offload": run.offload or "none", "micro_batch": run.micro_batch, "global_batch": run.global_batch,
        "recompute": run.recompute, "seq_parallel": None if run.seq_parallel is None else bool(run.seq_parallel),
        "dtype": defaulted.get("dtype", run.dtype), "framework": framework,
        **{column: _switch(run, column, where) for column in SWITCH_COLUMNS},
        **{column: parse(run, column, where) for column, parse in HIERARCHY_COLUMNS.items()},
        **{column: parse(run, column, where) for column, parse in PIPELINE_SPLIT_COLUMNS.items()},
    }
    unknown = tuple(name for name in INFERABLE if fields.get(name) is None)
    fields = {k: v for k, v in fields.items() if v is not None}
    layout, filled = infer_layout(model, cluster, fields, unknown, gpus=run.gpus, where=where)
    if inferred is not None:
        inferred.update(defaulted)
        inferred.update(filled)
    return model, layout, cluster


# Rows simulated per call of the vectorised cost model: a call costs ~2.5 ms whatever its size up to a few
# thousand candidates (measured, 2-core VM), so batching is the speed-up; a chunk this size keeps the
# arrays (a few hundred per candidate) at a few MB.
CHUNK_ROWS = 2048


def predict_runs(runs: list[MeasuredRun], cluster_dir=None, clusters: dict | None = None) -> list[RowResult]:
    """Simulate every row; rows that cannot be simulated carry their reason."""
    return list(iter_predictions(runs, cluster_dir, clusters))


def iter_predictions(runs: Iterable[MeasuredRun], cluster_dir=None, clusters: dict | None = None,
                     chunk_rows: int = CHUNK_ROWS) -> Iterator[RowResult]:
    """`predict_runs` as a stream, in row order: rows are simulated a chunk at a time, one vectorised
    cost-model call per cluster in the chunk (the figures are those of simulate(), row by row)."""
    known = dict(clusters or {})  # clusters loaded so far, by the name a row gives
    chunk: list[MeasuredRun] = []
    for run in runs:
        chunk.append(run)
        if len(chunk) >= chunk_rows:
            yield from _predict_chunk(chunk, cluster_dir, known)
            chunk = []
    yield from _predict_chunk(chunk, cluster_dir, known)


def _predict_chunk(runs: list[MeasuredRun], cluster_dir, known: dict) -> list[RowResult]:
    results: list[RowResult | None] = [None] * len(runs)
    groups: dict[int, list] = {}  # id(cluster) -> [(row index, model, layout, inferred)]
    specs: dict[int, ClusterSpec] = {}
    for i, run in enumerate(runs):
        try:
            inferred: dict = {}
            model, layout, cluster = run_to_config(run, cluster_dir, known, inferred)
            check_simulable(model, layout, cluster)
        except PlannerInputError as error:
            results[i] = RowResult(run, reason=str(error))
            continue
        if run.cluster not in known:
            known[run.cluster] = cluster
        groups.setdefault(id(cluster), []).append((i, model, layout, inferred))
        specs[id(cluster)] = cluster
    for key, members in groups.items():
        cluster = specs[key]
        estimate_ = estimate(layouts_batch([m for _, m, _, _ in members], [l for _, _, l, _ in members]), cluster)
        for position, (i, _, _, inferred) in enumerate(members):
            results[i] = RowResult(runs[i], _figures(estimate_, position), cluster_name=cluster.name, inferred=inferred)
    return results  # type: ignore[return-value]


def _figures(result, i: int) -> dict:
    """Candidate i of a batch estimate: the figures of simulate() that validation reports."""
    memory, time = result.memory, result.time
    return {
        "step_time_s": float(time["step_time_s"][i]),
        "mfu": float(time["mfu"][i]),
        "fits": bool(memory["fits"][i]),
        "memory": {"total_bytes": float(memory["total_bytes"][i]),
                   "model_states_bytes": float(model_states(memory["parts"], i)),
                   "allocated_bytes": float(memory["total_bytes"][i] - CUDA_CONTEXT_BYTES - sum(
                       memory["parts"][name][i] for name in OUTSIDE_ALLOCATED if name in memory["parts"])),
                   "hbm_bytes": float(memory["hbm_bytes"][i])},
    }


def _stats(errors: np.ndarray, ids: list[str] | None = None, worst: tuple[float, str] | None = None) -> dict:
    absolute = np.abs(errors)
    return {
        "count": len(errors),
        "mape": float(absolute.mean()),
        "median_ape": float(np.median(absolute)),
        "worst_ape": float(worst[0]),
        "worst_id": worst[1],
        "mean_signed": float(np.mean(errors)),
    }


class ErrorSummary:
    """MAPE, median, worst and signed mean of relative errors, overall and per source, added a row at a
    time. Holds 8 bytes per error (the median needs them all) and the worst row's id per source."""

    def __init__(self) -> None:
        self._all = array("d")
        self._by_source: dict[str, array] = {}
        self._worst: dict[str, tuple[float, int, str]] = {}  # source -> (|error|, -row number, id)
        self._rows = 0

    def add(self, source: str, row_id: str, error: float | None) -> None:
        self._rows += 1
        if error is None or not math.isfinite(error):
            return
        self._all.append(error)
        self._by_source.setdefault(source, array("d")).append(error)
        candidate = (abs(error), -self._rows, row_id)  # ties go to the earlier row, as np.argmax's
        if source not in self._worst or candidate[:2] > self._worst[source][:2]:
            self._worst[source] = candidate

    def summary(self) -> dict | None:
        if not self._all:
            return None
        overall = max(self._worst.values(), key=lambda w: w[:2])
        summary = _stats(np.frombuffer(self._all), worst=(overall[0], overall[2]))
        summary["by_source"] = {source: _stats(np.frombuffer(errors), worst=(self._worst[source][0], self._worst[source][2]))
                                for source, errors in sorted(self._by_source.items())}
        return summary


def summarize(results: Iterable[RowResult], metric: str = "step") -> dict | None:
    """MAPE, median, worst and signed mean of the relative error, overall and per source."""
    accumulator = ErrorSummary()
    for row in results:
        accumulator.add(row.run.source or "(no source)", row.run.id,
                        row.step_error if metric == "step" else row.memory_error)
    return accumulator.summary()
