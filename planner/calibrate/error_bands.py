"""How far off a step-time prediction is likely to be, from the model's errors on published runs.

`planner validate` on the published runs (data/runs) gives, per row, log(measured / predicted).
No constant of the cost model is fitted to those rows, so each residual is a held-out error. Their 5th
and 95th percentiles, per framework where there are at least MIN_ROWS rows of it (a release kept as its own entry,
deepspeed-v0.3 or megatron-2022, counts with the stack it is a release of: Framework.lineage) and over all rows
otherwise, make a 90% band that `simulate`, `validate` and `optimize` attach to every step time (and so to
a plan's days and GPU-hours).

Those rows ran on a few clusters (the table lists them). A cluster the user calibrated carries its own
held-out band (`planner calibrate` writes it into the spec: ClusterSpec.calibrated_on), which is used
instead: it measures this model on that hardware and stack. On a cluster that is neither, the published
band is all there is, and the band says it comes from other hardware.

The table ships with the package (`error_bands.json`) and is regenerated with
`planner validate RUNS.csv --write-error-bands`; a test checks the shipped one matches a fresh run.
"""

from __future__ import annotations

import functools
import json
import math
from array import array
from importlib import resources

import numpy as np

from planner.frameworks import band_group

MIN_ROWS = 10  # fewer residuals than this give no usable 5th/95th percentile: fall back to all rows
BAND_PERCENTILES = (5.0, 95.0)
TABLE_FILE = "error_bands.json"


class BandAccumulator:
    """compute_bands a row at a time: keeps one residual (8 bytes) per row, per group, not the rows."""

    def __init__(self) -> None:
        self._by_group: dict[str, array] = {}
        self.clusters: set[str] = set()  # the clusters the residuals come from

    def add(self, row) -> None:
        error = row.step_error
        if error is None or not math.isfinite(error) or error <= -1.0:
            return
        if row.cluster_name:
            self.clusters.add(row.cluster_name)
        framework = band_group((row.run.extra.get("framework") or "").strip() or "other")
        residual = -math.log1p(error)  # log(measured / predicted)
        self._by_group.setdefault(framework, array("d")).append(residual)
        self._by_group.setdefault("all", array("d")).append(residual)

    def bands(self) -> dict:
        bands = {}
        for group, residuals in sorted(self._by_group.items()):
            if group != "all" and len(residuals) < MIN_ROWS:
                continue
            values = np.frombuffer(residuals)
            low, high = np.percentile(values, BAND_PERCENTILES)
            bands[group] = {"rows": len(values), "low": round(float(np.exp(low)), 4),
                            "high": round(float(np.exp(high)), 4),
                            "mape": round(float(np.mean(np.abs(np.expm1(-values)))), 4)}
        return bands


def compute_bands(results) -> dict:
    """{group: {"rows", "low", "high", "mape"}} from validation results (RowResult list); groups are
    framework names with at least MIN_ROWS rows, plus "all"."""
    accumulator = BandAccumulator()
    for row in results:
        accumulator.add(row)
    return accumulator.bands()


@functools.lru_cache(maxsize=1)
def _shipped_table() -> dict:
    try:
        return json.loads(resources.files("planner.calibrate").joinpath(TABLE_FILE).read_text())
    except FileNotFoundError:
        return {}


def shipped_bands() -> dict:
    """The table shipped with the package (empty when absent)."""
    return _shipped_table().get("bands", {})


def shipped_clusters() -> list[str]:
    """The clusters the shipped table's published runs ran on."""
    return list(_shipped_table().get("clusters", []))


def band_for(framework: str, bands: dict | None = None) -> dict | None:
    """The band of `framework` (its lineage's when that has enough rows, else all rows'), with its group name."""
    bands = shipped_bands() if bands is None else bands
    group = band_group(framework)
    group = group if group in bands else "all"
    if group not in bands:
        return None
    return {"group": group, **bands[group]}


def interval(step_time_s: float, framework: str, cluster=None) -> dict | None:
    """The 90% interval of a predicted step time: measured/predicted ratios applied to the prediction.

    `basis` says where the ratios come from: "calibrated" (the held-out band `planner calibrate` wrote into
    `cluster`, where it has at least MIN_ROWS held-out rows, as a framework's band needs), "published" (the published runs, some of which ran on `cluster`, or no cluster given) or
    "other-hardware" (the published runs, none of which ran on `cluster`); `clusters` names the hardware."""
    calibrated = getattr(cluster, "calibrated_on", None)
    if calibrated is not None and calibrated.held_out_rows >= MIN_ROWS:
        low, high = calibrated.held_out_step_time_ratio_90
        return {"low_s": step_time_s * low, "high_s": step_time_s * high, "group": "calibrated",
                "rows": calibrated.held_out_rows, "basis": "calibrated", "clusters": [cluster.name]}
    band = band_for(framework)
    if band is None:
        return None
    clusters = shipped_clusters()
    from planner.calibrate.samples import base_name  # the spec a calibrated one was made from

    own = cluster is None or hardware_key(cluster) in _published_hardware()
    result = {"low_s": step_time_s * band["low"], "high_s": step_time_s * band["high"], "group": band["group"],
              "rows": band["rows"], "basis": "published" if own else "other-hardware", "clusters": clusters}
    if not own and base_name(cluster) in clusters:  # named as a published cluster, with other hardware
        result["differs_from"] = base_name(cluster)
    if calibrated is not None:  # calibrated, on fewer held-out rows than a band of its own needs
        result["calibration_held_out_rows"] = calibrated.held_out_rows
    return result


def slow_end_ratios(cluster, frameworks) -> np.ndarray:
    """Per name in `frameworks`: the upper measured/predicted ratio of its step-time band on `cluster`
    (interval's high end for a 1 s prediction; 1.0 where no band is known). The search ranks tied plans by
    wall-clock times this (search.selection)."""
    bands = [interval(1.0, name, cluster) for name in frameworks]
    return np.array([1.0 if band is None else band["high_s"] for band in bands])


# The published runs' band belongs to the hardware they were measured on, not to a spec's `name:` (a copy of
# dgx-h100.yaml keeps `name: dgx-h100` whatever its links or FLOP/s say). A spec is that hardware when its
# accelerator, node and network blocks equal those of a bundled spec of a cluster the runs ran on; its name,
# price, reliability and efficiencies (a calibration's fit) do not decide it.
HARDWARE_BLOCKS = ("accelerator", "node", "network")


def hardware_key(cluster) -> str:
    """The spec's hardware blocks as one comparable text."""
    return json.dumps([getattr(cluster, block).model_dump() for block in HARDWARE_BLOCKS], sort_keys=True)


@functools.lru_cache(maxsize=1)
def _published_hardware() -> frozenset[str]:
    from planner.specs.clusters import default_cluster_dir, load_cluster

    folder = default_cluster_dir()
    return frozenset(hardware_key(load_cluster(name, folder)) for name in shipped_clusters()
                     if (folder / f"{name}.yaml").is_file())


def estimate_outside_band(low: float, high: float, estimate: float) -> str:
    """A clause for a band that does not hold its own point estimate. The band is where measured steps fell
    around the model's estimate on the runs it comes from; for a stack the model has always run fast on
    (DeepSpeed's published rows: measured x1.11-x1.48 the estimate) the whole band lies above the estimate. The
    estimate is not moved to the band (that would fit the model to those rows), so the text says which the
    plan's figures are: "" when the estimate lies inside. `low`, `high` and `estimate` share a unit (a step's
    seconds, a run's days)."""
    low, high = low / estimate, high / estimate
    if low <= 1.0 + 1e-9 and high >= 1.0 - 1e-9:
        return ""
    side = "below" if low > 1.0 else "above"
    return (f"; the estimate lies {side} its band: measured steps there took x{low:.2f}-x{high:.2f} the model's "
            f"estimate, and the figures here are the estimate's")


def band_origin(band: dict) -> str:
    """Where a band's ratios come from, as the reports say it ("held-out residuals of 42 rows ...")."""
    if band.get("basis") == "calibrated":
        return f"held-out residuals of {band['rows']} rows of this cluster's calibration"
    runs = f"{band['rows']} published {'' if band['group'] == 'all' else band['group'] + ' '}runs"
    if band.get("basis") == "other-hardware":
        differs = (f"; this spec is named {band['differs_from']} but its {'/'.join(HARDWARE_BLOCKS)} differ from the "
                   f"bundled {band['differs_from']}'s" if band.get("differs_from") else "")
        few = band.get("calibration_held_out_rows")
        advice = ("calibrate this cluster for its own" if few is None else
                  f"its calibration held out {few} row(s), fewer than the {MIN_ROWS} a band of its own needs")
        return f"validate residuals of {runs} on other hardware ({', '.join(band['clusters'])}{differs}); {advice}"
    few = band.get("calibration_held_out_rows")
    return f"validate residuals of {runs}" + ("" if few is None else f" (its calibration held out {few} row(s), "
                                             f"fewer than the {MIN_ROWS} a band of its own needs)")
