"""The measured rows of one cluster, ready to fit: which rows belong to the cluster, and their predicted step times.

A row counts when it was measured on the cluster (named by its name, by the spec a `.calibrated` one was made
from, or by a path to its spec file), has a positive measured step time, and simulates; the others are
listed with their reasons. Its own module because fitting, parameter selection and the calibration report
all read these samples and predict them the same way (the vectorised code `simulate` runs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.calibrate.validation import run_to_config
from planner.cost.step_time import step_time
from planner.errors import PlannerInputError
from planner.profile.runs_csv import MeasuredRun
from planner.specs.candidate_batch import layouts_batch
from planner.specs.clusters import load_cluster
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import Layout
from planner.specs.model import ModelSpec

@dataclass(frozen=True)
class Sample:
    """One measured row ready to simulate."""

    run: MeasuredRun
    model: ModelSpec
    layout: Layout
    group: str


CALIBRATED_SUFFIX = ".calibrated"


def base_name(cluster: ClusterSpec) -> str:
    """The name of the spec a calibrated one was made from ('x' for 'x.calibrated'); a recalibration writes
    'x.calibrated' again, never 'x.calibrated.calibrated'."""
    return cluster.name.removesuffix(CALIBRATED_SUFFIX)


def _spec_named_by_path(run: MeasuredRun, cluster_dir=None) -> ClusterSpec | None:
    """The spec a row's cluster cell names by file path (spec/runs_csv.md: "or a path to a spec file"); None
    for a plain name. Raises PlannerInputError with the row's place when the path does not resolve."""
    if Path(run.cluster or "").suffix not in (".yaml", ".yml"):
        return None
    where = run.origin or run.id
    try:
        return load_cluster(run.cluster, cluster_dir, data_file=where)
    except PlannerInputError as error:
        text = str(error)
        raise PlannerInputError(text if text.startswith(f"{where}:") else f"{where}: {text}") from None


def on_cluster(run: MeasuredRun, cluster: ClusterSpec, cluster_dir=None) -> bool:
    """The row was measured on `cluster` (or on the spec a `.calibrated` one was made from), named by its
    name or by a path to its spec file. Raises PlannerInputError when the row's spec path does not resolve."""
    if run.cluster in (cluster.name, base_name(cluster)):
        return True
    spec = _spec_named_by_path(run, cluster_dir)
    if spec is None:
        return False
    same_file = bool(cluster.source_file) and Path(spec.source_file).resolve() == Path(cluster.source_file).resolve()
    return same_file or spec.name in (cluster.name, base_name(cluster))


def other_cluster_reason(run: MeasuredRun, cluster: ClusterSpec) -> str:
    """load_samples' reason for a row of another cluster (the CLI lists the other reasons only)."""
    return f"{run.origin or run.id}: cluster {run.cluster!r} is not {base_name(cluster)!r}"


def other_cluster_reasons(runs: list[MeasuredRun], cluster: ClusterSpec, cluster_dir=None) -> set[str]:
    """The reasons load_samples gives for rows measured on another cluster (a spec path that does not
    resolve is not among them: that row may be this cluster's, and is listed)."""
    reasons = set()
    for run in runs:
        try:
            if not on_cluster(run, cluster, cluster_dir):
                reasons.add(other_cluster_reason(run, cluster))
        except PlannerInputError:
            continue
    return reasons


def other_cluster_counts(runs: list[MeasuredRun], cluster: ClusterSpec, cluster_dir=None) -> dict[str, int]:
    """How many rows were measured on each other cluster (the row's cluster cell), most first; rows whose spec
    path does not resolve are not counted (they may be this cluster's: other_cluster_reasons)."""
    counts: dict[str, int] = {}
    for run in runs:
        try:
            if not on_cluster(run, cluster, cluster_dir):
                counts[run.cluster or "(none)"] = counts.get(run.cluster or "(none)", 0) + 1
        except PlannerInputError:
            continue
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def load_samples(runs: list[MeasuredRun], cluster: ClusterSpec, time_column: str = "step_time_s",
                 cluster_dir=None) -> tuple[list[Sample], list[str]]:
    """Rows with a measured step time that simulate on this cluster; the rest with reasons.

    `time_column` picks another measured column as the step time, e.g. `step_time_p10_s` from
    `planner profile` on a shared machine: contention only ever slows a step down, so a low
    percentile is the better estimate of the uncontended time.
    """
    samples, skipped = [], []
    for run in runs:
        if time_column != "step_time_s":
            raw = run.extra.get(time_column, "")
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if not np.isfinite(value) or value <= 0:
                skipped.append(f"{run.origin or run.id}: no positive {time_column} (got {raw!r})")
                continue
            run = dataclasses.replace(run, step_time_s=value)
        if run.step_time_s is None:
            skipped.append(f"{run.origin or run.id}: no measured step time")
            continue
        if not np.isfinite(run.step_time_s) or run.step_time_s <= 0:  # the CSV reader refuses these; rows built in code may not
            skipped.append(f"{run.origin or run.id}: step time {run.step_time_s!r} is not a positive finite number of seconds")
            continue
        try:
            if not on_cluster(run, cluster, cluster_dir):
                skipped.append(other_cluster_reason(run, cluster))
                continue
            model, layout, _ = run_to_config(run, clusters={run.cluster: cluster})
        except PlannerInputError as error:
            skipped.append(str(error))
            continue
        samples.append(Sample(run, model, layout, run.source or "(no source)"))
    if samples:
        # The fit takes log(predicted / measured): a row the model cannot predict (a zero, NaN or infinite
        # step time) would make every residual vector non-finite, so it is skipped here with its reason.
        with np.errstate(all="ignore"):
            predicted = predict(samples, cluster)
        keep = np.isfinite(predicted) & (predicted > 0)
        skipped += [f"{s.run.origin or s.run.id}: predicted step time {float(p)!r} is not a positive finite number"
                    for s, p, ok in zip(samples, predicted, keep) if not ok]
        samples = [s for s, ok in zip(samples, keep) if ok]
    return samples, skipped


def sample_batch(samples: list[Sample]):
    """All rows as one candidate batch, so each evaluation of the fit is one vectorised call."""
    return layouts_batch([s.model for s in samples], [s.layout for s in samples])


def predict(samples: list[Sample], cluster: ClusterSpec, batch=None) -> np.ndarray:
    """Predicted step times of the rows (the same vectorised code `simulate` runs)."""
    return step_time(batch if batch is not None else sample_batch(samples), cluster)["step_time_s"]
