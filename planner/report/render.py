"""Plain-text and JSON rendering shared by the commands. Formats numbers; computes nothing.

Every JSON object a command prints is a `json_document`: the result with a top-level `schema_version`
(JSON_SCHEMA_VERSION, raised when a key is renamed or removed or its meaning changes; new keys do not
raise it), so a script can check what it reads.
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath

import numpy as np
from pydantic import BaseModel

from planner.specs.units import human_amount  # noqa: F401  (formatted beside its parsers; used and re-exported here)


def human_bytes(value: float) -> str:
    """1.5 GiB style (binary units, as nvidia-smi and PyTorch report memory)."""
    if value is None or not math.isfinite(value):
        return "-"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


def peak_phase_text(memory: dict) -> str | None:
    """Which phase of the step holds the memory peak where the stack frees its gradients after each step (the parts
    listed are what is live then; cost.memory.phase_overlap), from simulate's memory dict; None where nothing is
    left out of the total."""
    freed = memory.get("not_live_at_peak_bytes", 0.0)
    if freed <= 0:
        return None
    if memory.get("step_holds_peak"):
        return f"the optimizer step; {human_bytes(freed)} of activations and logits are freed by then"
    # Where the gradients are 16-bit the optimizer steps on an fp32 copy, freed with them (DeepSpeed); FSDP2's are the
    # fp32 gradients themselves (cost.memory._step_only_states).
    copy = " and their fp32 copy" if memory.get("step_only_copy_bytes", 0.0) > 0 else ""
    return (f"the forward's activations; {human_bytes(freed)} of gradients{copy} exist only from backward to the end "
            "of the step (the framework frees them before the next forward)")


def human_seconds(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if value >= 86400:
        return f"{value / 86400:.2f} d"
    if value >= 3600:
        return f"{value / 3600:.2f} h"
    if value >= 1:
        return f"{value:.3f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.1f} us"


def human_days(days: float) -> str:
    """A wall-clock span given in days, in the unit that reads best: '4.2 days', '1.25 h', '45 min', '12.000 s'
    (never '0.1 days' for a 1.25 h plan). Every form is accepted back by units.parse_duration."""
    if days is None or not math.isfinite(days):
        return "-"
    hours = days * 24.0
    if hours * 60.0 < 1.0:
        return human_seconds(hours * 3600.0)
    if hours < 1.0:
        return f"{hours * 60.0:.3g} min"
    if hours < 24.0:
        return f"{hours:.3g} h" if hours < 10.0 else f"{hours:.1f} h"
    # From a million days (~2,700 years) on, three figures: '3.96e+11 days', not '396374917737.3 days'.
    return f"{days:.1f} days" if days < 1e6 else f"{days:.3g} days"


def limits_given(assumptions: dict) -> list[str]:
    """The limits a fixed-model plan is held to (--deadline, --budget), as ['deadline 90.0 days', 'budget 1,000,000
    GPU-hours']; empty when none was given. The CLI header and the review both state them from here."""
    deadline_s, budget = assumptions.get("deadline_s"), assumptions.get("budget_gpu_hours")
    return ([f"deadline {human_days(deadline_s / 86400.0)}"] if deadline_s is not None else []) + \
           ([f"budget {human_amount(budget)} GPU-hours"] if budget is not None else [])


def human_days_range(low: float, high: float) -> str:
    """'1.1-1.3 days', '19.2-22.0 h' (one unit when both ends share it), else '20.1 h-1.1 days'."""
    first, second = human_days(low), human_days(high)
    a, _, unit_a = first.partition(" ")
    b, _, unit_b = second.partition(" ")
    return f"{a}-{b} {unit_b}" if unit_a == unit_b else f"{first}-{second}"


def ratio_text(ratio: float) -> str:
    """'2.33x', but '0.003x' for a tiny ratio: two decimals printed a 3-sequence batch as 0.00x its B_opt."""
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def human_count(value: float) -> str:
    """7.0B, 1.4T, 350M; from 1e15 on three figures, '1e+25' (not '10000000000000T')."""
    if value is None or not math.isfinite(value):
        return "-"
    # The unit follows the printed digits: 999.6e9 shows as 1T, not 1e+03B.
    rounded = float(f"{value:.3g}")
    if abs(rounded) >= 1e15:
        return f"{rounded:.3g}"
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(rounded) >= scale:
            shown = rounded / scale
            return f"{shown:.3g}{unit}" if abs(shown) < 1000 else f"{shown:.0f}{unit}"
    return f"{value:.0f}"


def binding_text(binds: dict) -> str:
    """What binds a plan (search.plan_record.binding), in one line: the constraint, and what the plan spends
    of the budget. "Infeasible is not an error: say what binds" holds for a feasible plan too."""
    # Here, not at the top: plan_record pulls in the cost model and the search (1 s), which the rest of render
    # and the commands importing it (laws, clusters) do not need.
    from planner.search.plan_record import HALF_WALL_CLOCK

    spent = human_amount(binds["gpu_hours"])
    budget = binds["budget_gpu_hours"]
    of_budget = f" of {human_amount(budget)} GPU-hours" if budget else " GPU-hours"
    if binds["constraint"] == "target loss":
        return (f"the target loss {binds['target_loss']:g} binds: the cheapest plan reaching it spends {spent}"
                + (f" of the {human_amount(budget)} GPU-hour budget" if budget else " GPU-hours"))
    if binds["constraint"] == "budget":
        return f"the budget binds: the plan spends {spent}{of_budget}"
    if binds["constraint"] == HALF_WALL_CLOCK:  # a plan stopped early (search/stopping.py)
        return (f"its rule binds: it stops at half the chosen plan's wall-clock ({human_days(binds['deadline_days'])})"
                f" and spends {spent}{of_budget}")
    gpus, cap = binds["gpus"], binds["gpu_cap"]
    both = binds["constraint"] == "budget and deadline"
    at = {"--gpus": f"on the {gpus} GPUs of --gpus",
          "--max-gpus": f"on {gpus} GPUs, the most --max-gpus allows",
          "cluster": f"on {gpus} GPUs, the largest count searched on this cluster",
          "rule": f"on {gpus} GPUs, the most its runner-up rule allows",
          None: f"on {gpus} GPUs (no larger count, up to {binds['largest_gpus']}, gives a better feasible plan)"}[cap]
    default = ", default" if binds["deadline_is_default"] else ""
    return (f"the {'budget and the ' if both else ''}deadline ({human_days(binds['deadline_days'])}{default}) "
            f"{'both bind' if both else 'binds'} {at}: the plan spends {spent}{of_budget}")


def table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A fixed-width text table; `align` is a string of 'l'/'r' per column (default: first left)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(values):
        return "  ".join(v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(values, widths, align)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def layout_text(row: dict) -> str:
    """One line for a layout (a search row or a Layout's fields): the stack, each parallel dimension used and
    what changes its time. Every table that names a layout prints this one (the fixed-model tables, the
    dense-vs-MoE comparison, the review document), so a layout reads the same in every command's output.
    `ep` None or absent: a dense model (a Layout's fields carry ep 1 for one: the caller says which it is)."""
    text = f"{row['framework']} tp{row['tp']} pp{row['pp']}"
    text += f" vpp{row['vpp']}" if row["vpp"] > 1 else ""
    # End ranks' layers the layout sets (Layout.first_stage_layers, last_stage_layers), as "layers 8|..|5".
    first, last = row.get("first_stage_layers"), row.get("last_stage_layers")
    if first or last:
        text += f" layers {first or '*'}|..|{last or '*'}"
    text += f" cp{row['cp']}" if row["cp"] > 1 else ""
    text += f" dp{row['dp']} z{row['zero']} mb{row['micro_batch']}"
    if row.get("ep") is not None:  # MoE: expert parallel, expert tp (when not tp), all-to-all overlap
        expert_tp = row.get("etp") or row["tp"]  # a Layout's etp None: the experts use tp (Layout.expert_tp)
        text += f" ep{row['ep']}" + (f" etp{expert_tp}" if expert_tp != row["tp"] else "")
        text += "" if row["moe_a2a_overlap"] == "none" else f" a2a-overlap={row['moe_a2a_overlap']}"
        # Tokens cross to a node once (DeepEP): the searches set it where the routing is node-limited.
        text += " node-dispatch" if row.get("moe_node_dispatch") else ""
    text += "" if row["offload"] == "none" else f" offload={row['offload']}"
    text += "" if row["recompute"] == "none" else f" rc-{row['recompute']}"
    # Full-recompute checkpoints kept as 1/tp slices (Layout.partition_activations; a Layout's None is the stack's
    # default, off in every stack).
    text += "-partitioned" if row["recompute"] == "full" and row.get("partition_activations") else ""
    text += " sp" if row["seq_parallel"] else ""
    # ZeRO-3 hierarchy (search/space.py hierarchy_choices): ZeRO++ and MiCS / HSDP shard groups.
    text += f" hpZ{row['zero_hpz']}" if row.get("zero_hpz", 1) > 1 else ""
    text += " qwZ" if row.get("zero_quantized_weights") else ""
    text += " qgZ" if row.get("zero_quantized_gradients") else ""
    text += f" shard{row['shard_group']}" if (row.get("shard_group") or 0) > 0 else ""
    # The gradients' dtype where the plan was asked for one (--grad-reduce-in-fp32; None or absent: the stack's own).
    if row.get("grad_reduce_in_fp32") is not None:
        text += " grads-fp32" if row["grad_reduce_in_fp32"] else " grads-16bit"
    return text


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, BaseModel):
        return _jsonable(value.model_dump())
    if isinstance(value, PurePath):
        return str(value)
    return value


def to_json(value) -> str:
    """Deterministic JSON: sorted keys, NaN/inf as null, numpy scalars and arrays as plain numbers and lists,
    pydantic models as their fields, paths as text, sets as sorted lists."""
    return json.dumps(_jsonable(value), indent=2, sort_keys=True)


# The version of the JSON every command prints (`schema_version` at the top of each object).
JSON_SCHEMA_VERSION = 1


def json_document(value: dict) -> str:
    """What `--json` prints: `value` with the schema version at its top, as deterministic JSON (to_json)."""
    if "schema_version" in value:
        raise ValueError("a JSON result must not carry its own schema_version")
    return to_json({"schema_version": JSON_SCHEMA_VERSION, **value})
