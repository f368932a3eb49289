"""Why no plan is feasible: which constraints bind, with the numbers, and what would relax each.

Its own module because it reads only the scoreboard's tallies and the cells ruled out by their bound, and
says in words what the search found.
"""

from __future__ import annotations

import numpy as np

from planner.search.branch_and_bound import BUDGET, DEADLINE, MEMORY
from planner.search.score import DROP_REASONS, Problem
from planner.specs.units import human_amount


def _memory_shortfall(closest: dict, hbm_bytes: float, min_headroom: float) -> str:
    """How far the layout nearest to fitting is over what a GPU may hold. Among the layouts that fail memory
    and nothing else (a plan if it fitted) when there are any; the amount over is printed apart, since the
    nearest layout is often a few MiB over and 'needs 79.65 GiB of 79.65 GiB' read as a contradiction."""
    alone = np.isfinite(closest["memory_alone_bytes"])
    needs = closest["memory_alone_bytes"] if alone else closest["memory_bytes"]
    allowed = hbm_bytes * (1.0 - min_headroom)
    over = needs - allowed
    over_text = f"{over / 2**30:.2f} GiB" if over >= 2**30 else f"{over / 2**20:.1f} MiB"
    which = "the layout nearest to fitting that meets every other limit" if alone else "the smallest layout"
    room = (f"the {allowed / 2**30:.2f} GiB left by --min-headroom {100 * min_headroom:g}% of {hbm_bytes / 2**30:.2f} "
            "GiB of HBM" if min_headroom else f"the {hbm_bytes / 2**30:.2f} GiB of HBM")
    return f"{which} needs {needs / 2**30:.2f} GiB per GPU, {over_text} over {room}"


def _binding_line(reason: str, problem: Problem, closest: dict, models: list) -> str:
    """What one binding constraint is and what would relax it."""
    c, cluster = problem.constraints, problem.cluster
    if reason == MEMORY:
        return (f"memory binds: {_memory_shortfall(closest, cluster.accelerator.hbm_bytes, c.min_headroom)}; allow "
                "more GPUs (--max-gpus/--gpus), use a cluster with more HBM, or a smaller model")
    if reason == "offload exceeds host memory":
        return "host memory binds: the layouts that fit in HBM offload more than the nodes' host memory holds"
    if reason == "inference alone exceeds the budget":
        return "serving --inference-tokens alone costs more than --budget; raise the budget or lower the inference volume"
    if reason == "global batch above the batch-size limit":
        return ("the batch-size limit binds: these GPU counts need a global batch above what the planned tokens "
                "allow (the critical batch); use fewer GPUs (--max-gpus) or a larger budget")
    if reason == "target loss unreachable at this model size":
        floor = float(np.min(problem.law.predict(problem.law_params, np.full(len(models), 1e16))))
        return (f"the target loss {c.target_loss} is below what the law reaches for these model sizes "
                f"(about {floor:.3f} at 1e16 tokens); choose a higher --target-loss")
    if reason == "predicted loss above uniform guessing (ln vocab)":
        return (f"every plan's predicted loss is above uniform guessing over the vocabulary (ln V = "
                f"{np.log(models[0].vocab):.2f} nats): the law says nothing is learned; allow more --unique-tokens "
                "or more budget")
    if reason == DEADLINE:
        shortest = closest["deadline_wall_s"]
        need = f"the fastest plan needs {shortest / 86400:.2f} days" if np.isfinite(shortest) else "no plan finishes"
        return (f"the deadline binds: {need} (deadline {c.deadline_s / 86400:.2f} d); give a longer --deadline "
                "or allow more GPUs")
    if reason == BUDGET:
        cheapest = closest["budget_gpu_s"]
        need = f"the cheapest plan needs {human_amount(cheapest / 3600)} GPU-hours" if np.isfinite(cheapest) else "no plan fits it"
        return f"the budget binds: {need}; raise --budget or relax --target-loss"
    return f"{reason} binds"


def explain_infeasible(problem: Problem, scored: dict, ruled_out: dict, models: list) -> list[str]:
    """Which constraints bind, and what would make the problem feasible.

    A constraint binds when some simulated candidate fails it and nothing else (relaxing it alone
    would give a plan); memory binds when a candidate that does not fit fails nothing else even at the
    best rate any layout reaches. When every candidate fails two or more, the combination closest to
    feasible is named; when nothing was scored, the reasons that ruled out whole (model, GPU count)
    cells by their optimistic bound.
    """
    lines = [f"{count:,} candidates dropped: {reason}" for reason, count in scored["dropped"].items() if count]
    lines += [f"{ruled_out[reason]:,} (model, GPU count) pairs ruled out even at the best FLOP rate any kernel "
              f"reaches: {reason}" for reason in DROP_REASONS if ruled_out.get(reason)]
    closest = dict(scored["closest"])
    binding = [reason for reason in DROP_REASONS if scored["sole"].get(reason) and reason != MEMORY]
    if not binding and scored["sole"].get(MEMORY):
        binding = [MEMORY]
    if not binding and scored["combinations"]:
        # Every scored candidate fails two or more: name the combination closest to feasible (fewest
        # constraints failed, then the most common).
        mask = min(scored["combinations"], key=lambda m: (bin(m).count("1"), -scored["combinations"][m]))
        binding = [reason for code, reason in enumerate(DROP_REASONS) if mask >> code & 1]
        lines.append("no single constraint binds alone: every candidate fails two or more; the closest fail "
                     + " and ".join(binding))
    if not binding:
        # Cells too small to reach the target never bind while larger ones do (checked below).
        binding = [reason for reason in DROP_REASONS
                   if ruled_out.get(reason) and reason != "target loss unreachable at this model size"]
        for key in ("deadline_wall_s", "budget_gpu_s"):
            closest[key] = min(closest[key], ruled_out.get(key, np.inf))
    if problem.constraints.target_loss is not None and "target loss unreachable at this model size" not in binding:
        floor = float(np.min(problem.law.predict(problem.law_params, np.full(len(models), 1e16))))
        if problem.constraints.target_loss < floor:
            binding.append("target loss unreachable at this model size")
    return lines + [_binding_line(reason, problem, closest, models) for reason in binding]
