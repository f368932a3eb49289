"""Measured runs -> simulator inputs -> predicted vs measured, with error statistics.

Used by `planner validate` and by calibration. A row that cannot be simulated (missing shape,
unknown cluster, a layout that does not divide) is kept with its reason, never dropped silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from planner.cost.estimate import simulate
from planner.cost.infer import INFERABLE, infer_layout
from planner.errors import PlannerInputError
from planner.hardware import ClusterSpec, load_cluster
from planner.layout import Layout
from planner.model import ModelSpec, make_model
from planner.profile.runs_csv import MeasuredRun

REQUIRED = ("cluster", "layers", "hidden", "heads", "seq_len", "vocab", "global_batch")
_SWITCH_TEXT = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


@dataclass(frozen=True)
class RowResult:
    run: MeasuredRun
    predicted: dict | None = None  # simulate() output
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
        """Predicted bytes comparable to the row's mem_gib: peak allocator memory, or only the model
        states and buffers when the row counted tensors (CPU profiles: mem_method=counted-tensors)."""
        if self.predicted is None:
            return None
        if self.run.extra.get("mem_method") == "counted-tensors":
            return self.predicted["memory"]["model_states_bytes"]
        return self.predicted["memory"]["total_bytes"]

    @property
    def memory_error(self) -> float | None:
        if self.predicted is None or not self.run.mem_gib:
            return None
        return self.predicted_memory_bytes / (self.run.mem_gib * 2**30) - 1.0


def _switch(run: MeasuredRun, column: str, where: str) -> bool | None:
    """A 0/1 column kept in the row's extra cells; None when empty."""
    text = (run.extra.get(column) or "").strip().lower()
    if not text:
        return None
    if text not in _SWITCH_TEXT:
        raise PlannerInputError(f"{where}: column '{column}': expected 0 or 1, got {text!r}")
    return _SWITCH_TEXT[text]


def run_to_config(run: MeasuredRun, cluster_dir=None, clusters: dict | None = None,
                  inferred: dict | None = None) -> tuple[ModelSpec, Layout, ClusterSpec]:
    """Build (model, layout, cluster) from a runs-CSV row; raises PlannerInputError with the reason.

    Settings the row leaves empty (micro-batch, recompute, interleaving, sequence parallelism, flash
    attention, framework) are inferred (`cost.infer`); pass a dict as `inferred` to learn which."""
    where = run.origin or f"row {run.id}"
    status = (run.extra.get("status") or "ok").strip()
    if status != "ok":
        raise PlannerInputError(f"{where}: run status is {status!r}, not a measurement")
    missing = [name for name in REQUIRED if getattr(run, name) is None]
    if missing:
        raise PlannerInputError(f"{where}: missing {', '.join(missing)}")
    if clusters is not None and run.cluster in clusters:
        cluster = clusters[run.cluster]
    else:
        cluster = load_cluster(run.cluster, cluster_dir, data_file=where)  # confined: a CSV cannot name /etc/...
    model = make_model(
        where, name=f"row-{run.id}", layers=run.layers, hidden=run.hidden, heads=run.heads,
        kv_heads=run.kv_heads or run.heads, ffn=run.ffn, mlp=run.mlp or "gelu", vocab=run.vocab, seq_len=run.seq_len,
    )
    tp, pp, cp = run.tp or 1, run.pp or 1, run.cp or 1
    dp = run.dp or (run.gpus // (tp * pp * cp) if run.gpus else 1)
    framework = (run.extra.get("framework") or "").strip() or None
    fields = {
        "tp": tp, "pp": pp, "dp": dp, "cp": cp, "vpp": run.vpp, "zero": run.zero or 0,
        "offload": run.offload or "none", "micro_batch": run.micro_batch, "global_batch": run.global_batch,
        "recompute": run.recompute, "seq_parallel": None if run.seq_parallel is None else bool(run.seq_parallel),
        "dtype": run.dtype or "bf16", "flash_attention": _switch(run, "flash_attention", where),
        "framework": framework, "tp_comm_overlap": _switch(run, "tp_comm_overlap", where),
        "dp_comm_overlap": _switch(run, "dp_comm_overlap", where),
    }
    unknown = tuple(name for name in INFERABLE if fields.get(name) is None)
    fields = {k: v for k, v in fields.items() if v is not None}
    layout, filled = infer_layout(model, cluster, fields, unknown, gpus=run.gpus, where=where)
    if inferred is not None:
        inferred.update(filled)
    return model, layout, cluster


def predict_runs(runs: list[MeasuredRun], cluster_dir=None, clusters: dict | None = None) -> list[RowResult]:
    """Simulate every row; rows that cannot be simulated carry their reason."""
    results = []
    for run in runs:
        try:
            inferred: dict = {}
            model, layout, cluster = run_to_config(run, cluster_dir, clusters, inferred)
            results.append(RowResult(run, simulate(model, layout, cluster), cluster_name=cluster.name,
                                     inferred=inferred))
        except PlannerInputError as error:
            results.append(RowResult(run, reason=str(error)))
    return results


@dataclass(frozen=True)
class ErrorSummary:
    count: int
    mape: float
    median_ape: float
    worst_ape: float
    worst_id: str
    mean_signed: float
    by_source: dict = field(default_factory=dict)


def _stats(pairs: list[tuple[str, float]]) -> dict:
    errors = np.array([abs(e) for _, e in pairs])
    worst = int(np.argmax(errors))
    return {
        "count": len(pairs),
        "mape": float(errors.mean()),
        "median_ape": float(np.median(errors)),
        "worst_ape": float(errors[worst]),
        "worst_id": pairs[worst][0],
        "mean_signed": float(np.mean([e for _, e in pairs])),
    }


def summarize(results: list[RowResult], metric: str = "step") -> dict | None:
    """MAPE, median, worst and signed mean of the relative error, overall and per source."""
    pairs_by_source: dict[str, list[tuple[str, float]]] = {}
    pairs: list[tuple[str, float]] = []
    for row in results:
        error = row.step_error if metric == "step" else row.memory_error
        if error is None or not math.isfinite(error):
            continue
        pairs.append((row.run.id, error))
        pairs_by_source.setdefault(row.run.source or "(no source)", []).append((row.run.id, error))
    if not pairs:
        return None
    summary = _stats(pairs)
    summary["by_source"] = {source: _stats(p) for source, p in sorted(pairs_by_source.items())}
    return summary
