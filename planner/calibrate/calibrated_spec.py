"""The calibrated cluster spec written to disk: the original mapping with the fitted efficiencies and provenance.

Its own module because it turns a calibration report into a spec file's mapping (name, efficiency block,
the `calibration` line and the `calibrated_on` record a recalibration reads back), and computes nothing.
"""

from __future__ import annotations

import datetime as _dt

from planner.calibrate.fitting import PARAMETERS
from planner.calibrate.samples import CALIBRATED_SUFFIX
from planner.specs.hardware import ClusterSpec

def calibrated_spec_mapping(raw: dict, report: dict, sources: list[str], rows: int) -> dict:
    """The original spec mapping with the fitted efficiency block, a new name and the provenance."""
    fitted: ClusterSpec = report["cluster"]
    efficiency = {k: v for k, v in fitted.efficiency.model_dump(by_alias=True).items() if v is not None}
    date = _dt.date.today().isoformat()
    applied = report.get("applied", True)
    held = report["heldout"]["after" if applied else "before"]["mape"]
    fitted_names = ", ".join(report["fitted_parameters"]) or "nothing"
    if not applied:
        fitted_names += f" (a fit was not applied: {report['not_applied_because']})"
    mapping = dict(raw)
    mapping["name"] = f"{str(raw['name']).removesuffix(CALIBRATED_SUFFIX)}{CALIBRATED_SUFFIX}"
    mapping["efficiency"] = efficiency
    mapping["calibration"] = (f"calibrated {date} on {rows} rows of {', '.join(sources)}; fitted {fitted_names}; "
                              f"held-out step-time MAPE {100 * held:.1f}% ({report['heldout_kind']})")
    band = report["held_out_band"]
    before = raw.get("calibrated_on") if isinstance(raw.get("calibrated_on"), dict) else {}
    fitted_or_earlier = set(report["fitted_parameters"]) | set(report.get("earlier_fitted", {}))
    mapping["calibrated_on"] = {"held_out_rows": band["rows"],
                                "held_out_step_time_ratio_90": [round(band["low"], 4), round(band["high"], 4)],
                                "frameworks": report["fitted_frameworks"], "dtypes": report["fitted_dtypes"],
                                "defaults": {n: float(report["defaults"][n]) for n in PARAMETERS if n in fitted_or_earlier},
                                "earlier": earlier_records(raw, before)}
    return mapping


def earlier_records(raw: dict, before: dict) -> list[str]:
    """The provenance lines a recalibration keeps: those the spec kept, then its own calibration line (a spec
    loaded from a calibrated file; the uncalibrated default line is no record)."""
    records = list(before.get("earlier", []))
    line = str(raw.get("calibration", ""))
    if line.startswith("calibrated"):
        records.append(line)
    return records
