"""Settings a run leaves unstated, inferred as its framework's users would have run it.

A published run often gives the model, the GPU count and the parallel degrees but not the micro-batch,
the recompute mode, the interleaving or sequence parallelism. Rather than skip it, take the fastest
setting that fits in memory among those its framework supports (the settings a tuned run converges to),
and say which values were inferred. When nothing fits, the candidate that needs the least memory is
taken (the row ran, so the model's memory is what is wrong) and flagged.
"""

from __future__ import annotations

import itertools

import numpy as np

from planner.cost.estimate import estimate
from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORKS
from planner.specs.hardware import ClusterSpec
from planner.specs.candidate_batch import layouts_batch
from planner.specs.layout import Layout, make_layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import ModelSpec
from planner.specs.pipeline_stages import interleavings

INFERABLE = ("micro_batch", "recompute", "vpp", "seq_parallel", "flash_attention", "framework")
MAX_MICRO_BATCH = 64
# Interleaving is tried as the search tries it (pipeline_stages.interleavings), down to one layer per chunk; the cap
# only bounds the candidates of a very deep model (it was 8: llama2-70b tp8 pp4 ran 1.3% faster at vpp 20).
MAX_VPP = 64


def _options(name: str, model: ModelSpec, fields: dict) -> list:
    """Values one unknown setting can take given the known ones."""
    framework = FRAMEWORKS[fields.get("framework") or "other"]
    if name == "micro_batch":
        per_replica = fields["global_batch"] // fields.get("dp", 1)
        return [b for b in range(1, min(per_replica, MAX_MICRO_BATCH) + 1) if per_replica % b == 0] or [1]
    if name == "recompute":
        return list(framework.recompute_modes)
    if name == "vpp":
        pp = fields.get("pp", 1)
        if pp == 1 or not framework.supports_interleaving:
            return [1]
        return interleavings(model.layers, pp, MAX_VPP)
    if name == "seq_parallel":
        return [False, True] if fields.get("tp", 1) > 1 else [False]
    if name == "flash_attention":
        return [True, False]
    if name == "framework":
        return ["other"]
    raise ValueError(name)


def infer_layout(model: ModelSpec, cluster: ClusterSpec, fields: dict, unknown: tuple[str, ...],
                 gpus: int | None = None, where: str = "layout") -> tuple[Layout, dict]:
    """The fastest fitting layout over the `unknown` settings; returns it and {setting: inferred value}
    (with "inferred_fits": False when no choice fits)."""
    unknown = tuple(name for name in INFERABLE if name in unknown)
    if not unknown:
        layout = make_layout(where, **fields)
        check_layout(model, layout, gpus=gpus, where=where)
        return layout, {}
    known = {k: v for k, v in fields.items() if k not in unknown}
    grids = [_options(name, model, known) for name in unknown]
    layouts, problems = [], []
    for values in itertools.product(*grids):
        candidate = {**known, **dict(zip(unknown, values))}
        try:
            layout = make_layout(where, **candidate)
            check_layout(model, layout, gpus=gpus, where=where)
        except PlannerInputError as error:
            problems.append(str(error))
            continue
        layouts.append(layout)
    if not layouts:
        raise PlannerInputError(problems[0] if problems else f"{where}: no layout fills {', '.join(unknown)}")
    result = estimate(layouts_batch([model] * len(layouts), layouts), cluster)
    fits = result.memory["fits"]
    if fits.any():
        best = int(np.flatnonzero(fits)[np.argmin(result.step_time_s[fits])])
    else:
        best = int(np.argmin(result.memory["total_bytes"]))
    chosen = layouts[best]
    inferred = {name: getattr(chosen, name) for name in unknown}
    if not fits.any():
        inferred["inferred_fits"] = False
    return chosen, inferred
