"""Why no plan is feasible: which constraints bind, with the numbers, and what would relax each.

Its own module because it reads only the scoreboard's tallies and the cells ruled out by their bound, and
says in words what the search found. In budget mode a deadline fails no candidate (a plan stops at it): one too
short to spend the budget shows as too few tokens, which is named as the deadline binding (deadline_caps_compute).
"""

from __future__ import annotations

import numpy as np

from planner.search.bounds import ABOVE_UNIFORM_GUESS
from planner.search.branch_and_bound import BUDGET, DEADLINE, MEMORY
from planner.search.problem_setup import most_gpus, spendable_gpu_seconds
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


# Budget mode: with ABOVE_UNIFORM_GUESS, the check a plan fails when it trains too few tokens (search.score sizes D
# by the compute it spends).
BATCH_LIMIT = "global batch above the batch-size limit"


def deadline_caps_compute(problem: Problem) -> bool:
    """Budget mode: even the most GPUs a plan may use run out of deadline before budget, so the deadline, not the
    budget, sizes every plan's tokens (search.score: wall = min(budget / gpus, deadline)). No candidate is then
    dropped for missing the deadline; it shows as too few tokens (batch limit, uniform guessing) instead."""
    c = problem.constraints
    return (c.target_loss is None and c.gpu_seconds is not None
            and most_gpus(problem.cluster, c) * c.deadline_s <= c.gpu_seconds * (1 + 1e-9))


def _more_gpus(problem: Problem) -> list[str]:
    """'allow more GPUs (flag)' unless the search already reached the cluster's largest count (then no flag helps)."""
    c, cluster = problem.constraints, problem.cluster
    if most_gpus(cluster, c) >= cluster.total_gpus:
        return []
    return [f"allow more GPUs ({'--gpus' if c.gpus is not None else '--max-gpus'})"]


def _either(advice: list[str]) -> str:
    """'a, b or c'."""
    return advice[0] if len(advice) == 1 else ", ".join(advice[:-1]) + " or " + advice[-1]


def _at_least(closest: dict, key: str) -> str:
    """'at least ' where the figure is the bound of cells ruled out before any layout was scored (a floor at the
    best FLOP rate any layout reaches, which the best real layout can miss by a third: the audit's target of 2.1 in
    one day on 64 GPUs said 5.46 days, and at 5.5 days said 6.89), else '' (a scored plan that fails that limit
    alone)."""
    return "at least " if closest.get(f"{key}_is_floor") else ""


def _deadline_line(problem: Problem, closest: dict) -> str:
    """The deadline binds: in target mode the fastest plan is slower than it; in budget mode it caps the compute
    (deadline_caps_compute), so every plan trains too few tokens."""
    c, cluster = problem.constraints, problem.cluster
    advice = _either(["give a longer --deadline"] + _more_gpus(problem))
    if c.target_loss is None:
        spendable = spendable_gpu_seconds(cluster, c) / 3600
        return (f"the deadline binds: within it the {most_gpus(cluster, c):,} GPUs a plan may use spend at most "
                f"{human_amount(spendable)} of the {human_amount(c.gpu_hours)} GPU-hours budgeted, too few tokens for "
                f"the global batch the batch-size limit allows or for a loss below uniform guessing; {advice}")
    shortest = closest["deadline_wall_s"]
    need = (f"the fastest plan needs {_at_least(closest, 'deadline_wall_s')}{shortest / 86400:.2f} days"
            if np.isfinite(shortest) else "no plan finishes")
    return f"the deadline binds: {need} (deadline {c.deadline_s / 86400:.2f} d); {advice}"


def _binding_line(reason: str, problem: Problem, closest: dict, models: list) -> str:
    """What one binding constraint is and what would relax it (only advice that can help: never a flag the
    user already set as far as it goes)."""
    c, cluster = problem.constraints, problem.cluster
    if reason == MEMORY:
        advice = _either(_more_gpus(problem) + ["use a cluster with more HBM", "a smaller model"])
        return f"memory binds: {_memory_shortfall(closest, cluster.accelerator.hbm_bytes, c.min_headroom)}; {advice}"
    if reason == "offload exceeds host memory":
        return "host memory binds: the layouts that fit in HBM offload more than the nodes' host memory holds"
    if reason == "inference alone exceeds the budget":
        return "serving --inference-tokens alone costs more than --budget; raise the budget or lower the inference volume"
    if reason == BATCH_LIMIT:
        # Every count below the cap is searched already: fewer GPUs help only where --gpus fixes the count.
        fewer = ["use fewer GPUs (--gpus)"] if c.gpus is not None and c.gpus > 1 else []
        return ("the batch-size limit binds: these GPU counts need a global batch above what the planned tokens "
                f"allow (the critical batch); {_either(fewer + ['raise --budget'])}")
    if reason == "target loss unreachable at this model size":
        floor = float(np.min(problem.law.predict(problem.law_params, np.full(len(models), 1e16))))
        return (f"the target loss {c.target_loss} is below what the law reaches for these model sizes "
                f"(about {floor:.3f} at 1e16 tokens); choose a higher --target-loss")
    if reason == ABOVE_UNIFORM_GUESS:
        if _law_never_below_uniform_guess(problem, models):
            return (f"the vocabulary binds: uniform guessing over {models[0].vocab:,} tokens is "
                    f"{np.log(models[0].vocab):.2f} nats, below the {_law_floor(problem):.2f} the law predicts however "
                    "large the model and data; no budget or deadline helps: plan with a vocabulary like the law's runs' (--vocab)")
        more = ["allow more --unique-tokens"] if c.unique_tokens is not None else []
        return (f"every plan's predicted loss is above uniform guessing over the vocabulary (ln V = "
                f"{np.log(models[0].vocab):.2f} nats): the law says nothing is learned; "
                f"{_either(more + ['raise --budget'])}")
    if reason == DEADLINE:
        return _deadline_line(problem, closest)
    if reason == BUDGET:
        cheapest = closest["budget_gpu_s"]
        need = (f"the cheapest plan needs {_at_least(closest, 'budget_gpu_s')}{human_amount(cheapest / 3600)} GPU-hours"
                if np.isfinite(cheapest) else "no plan fits it")
        return f"the budget binds: {need}; raise --budget or relax --target-loss"
    return f"{reason} binds"


# N and D far beyond any plan: the law's loss there is its floor (E for the Chinchilla forms).
_UNBOUNDED_PARAMS, _UNBOUNDED_TOKENS = 1e18, 1e21


def _law_floor(problem: Problem) -> float:
    return float(np.min(problem.law.predict(np.array([_UNBOUNDED_PARAMS]), np.array([_UNBOUNDED_TOKENS]))))


def _law_never_below_uniform_guess(problem: Problem, models: list) -> bool:
    """A vocabulary so small (--vocab 2: ln 2 = 0.69 nats) that uniform guessing beats the law's floor: every plan
    is above uniform guessing whatever the budget, so 'raise --budget' or 'a longer --deadline' would not help."""
    return _law_floor(problem) >= np.log(models[0].vocab)


def _too_few_tokens_is_the_deadline(problem: Problem, binding: list[str], models: list) -> list[str]:
    """Where the deadline caps the compute, the reasons that say 'too few tokens' are the deadline binding (not
    where no number of tokens would do: _law_never_below_uniform_guess)."""
    if not deadline_caps_compute(problem):
        return binding
    renamed = (BATCH_LIMIT,) if _law_never_below_uniform_guess(problem, models) else (BATCH_LIMIT, ABOVE_UNIFORM_GUESS)
    named = [DEADLINE if reason in renamed else reason for reason in binding]
    return list(dict.fromkeys(named))


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
            floor = ruled_out.get(key, np.inf)
            # A cell's bound at the best FLOP rate any layout reaches, not a plan: the line says "at least".
            closest[f"{key}_is_floor"] = floor < closest[key]
            closest[key] = min(closest[key], floor)
    if problem.constraints.target_loss is not None and "target loss unreachable at this model size" not in binding:
        floor = float(np.min(problem.law.predict(problem.law_params, np.full(len(models), 1e16))))
        if problem.constraints.target_loss < floor:
            binding.append("target loss unreachable at this model size")
    binding = _too_few_tokens_is_the_deadline(problem, binding, models)
    return lines + [_binding_line(reason, problem, closest, models) for reason in binding]
