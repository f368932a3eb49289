"""The measured rows of one cluster, ready to fit: which rows belong to the cluster (by the names its spec goes
by), and their predicted step times.

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
from planner.profile.runs_csv import MeasuredRun, parse_step_time_cell
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


# The names a spec goes by. --cluster names it by file (load_cluster), rows by their cluster cell, and a
# calibrated spec's name: key records the spec it was made from; these decide which rows are this spec's.

def given_name(name_or_path: str) -> str:
    """The name --cluster gave the spec: itself, or for a path to a spec file that file's name without .yaml
    (load_cluster takes a .yaml/.yml argument naming a file as a path, anything else as NAME.yaml)."""
    path = Path(name_or_path)
    try:
        is_path = path.suffix in (".yaml", ".yml") and path.is_file()
    except (OSError, ValueError):
        is_path = False
    return path.stem if is_path else name_or_path


def named_as_given(name_or_path: str, spec: ClusterSpec) -> ClusterSpec:
    """The spec under the name --cluster gave it, which rows must give too: a row's cluster cell finds its spec
    by file name (load_cluster, as simulate, validate and doctor resolve it), so a spec copied to mine.yaml with
    its name: key unchanged is 'mine' to every row and command. Keyed by that key instead, calibrate fitted rows
    that simulate resolves to another spec (or to none) and left out the rows that name this one."""
    name = given_name(name_or_path)
    # A name that could not be a spec's name (a folder in it: --cluster sub/x) would also make a bad file name
    # for the calibrated spec (<name>.calibrated.yaml); such a spec keeps its name: key, as before.
    plain = name.strip() and name not in (".", "..") and not any(c in name for c in "/\\") and name.isprintable()
    return spec.model_copy(update={"name": name}) if plain and name != spec.name else spec


def rows_of_the_origin(runs: list[MeasuredRun], cluster: ClusterSpec, spec: ClusterSpec,
                       cluster_dir=None) -> list[MeasuredRun]:
    """`runs`, with the rows of the spec a calibrated one was made from renamed to `cluster`, when its name: key
    records that spec (x.calibrated, made from x) and --cluster gave the file another name (`--out FILE.yaml`
    chooses it): load_samples takes the rows of the given name and of its base name only, and a recalibration of
    such a file must still fit the rows of the spec it came from. Other specs' name: keys give no rows."""
    if spec is cluster or not spec.name.endswith(CALIBRATED_SUFFIX):
        return runs
    renamed = []
    for run in runs:
        try:
            origin = not on_cluster(run, cluster, cluster_dir) and on_cluster(run, spec, cluster_dir)
        except PlannerInputError:  # a spec path that does not resolve: load_samples lists the row with its reason
            origin = False
        renamed.append(dataclasses.replace(run, cluster=cluster.name) if origin else run)
    return renamed


def uncalibrated_origin(cluster: ClusterSpec, spec: ClusterSpec, cluster_dir=None) -> ClusterSpec | None:
    """The spec a calibrated one without a record of its defaults was made from, when it can be found by name:
    the base of the name --cluster gave, else of the name: key (calibrate records the origin there)."""
    if cluster.calibrated_on is not None and cluster.calibrated_on.defaults:
        return None
    for name in dict.fromkeys((base_name(cluster), base_name(spec))):
        if name in (cluster.name, spec.name):
            continue  # not calibrated by that name
        try:
            return load_cluster(name, cluster_dir)
        except PlannerInputError:
            continue
    return None


def rows_naming_the_name_key(runs: list[MeasuredRun], cluster: ClusterSpec, spec: ClusterSpec) -> int:
    """How many rows name the spec by its name: key where --cluster gave it another name (named_as_given): they
    count as another cluster's, and the caller says why."""
    if spec.name == cluster.name:
        return 0
    return sum(run.cluster == spec.name and run.cluster not in (cluster.name, base_name(cluster)) for run in runs)


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
            if not raw.strip():
                skipped.append(f"{run.origin or run.id}: no {time_column} value")
                continue
            try:
                value = parse_step_time_cell(raw, time_column)
            except ValueError as error:
                skipped.append(f"{run.origin or run.id}: no step time in {time_column} ({error})")
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
