"""Choose N, D, GPUs and layout under a budget: enumerate, score in vectorised chunks, pick, explain.

The chosen plan is the exact optimum of the scored space (ties broken by shorter wall-clock), so a
brute force over the same space with the scalar simulator finds nothing better (tests/search).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np

from planner.search.budget import Constraints
from planner.cost.estimate import simulate
from planner.cost.gemm import flop_rate_ceiling, rank_share
from planner.calibrate.error_bands import interval as step_time_interval
from planner.errors import PlannerInputError
from planner.specs.hardware import ClusterSpec
from planner.specs.candidate_batch import OFFLOAD_CODES, RECOMPUTE_CODES
from planner.specs.layout import make_layout, train_steps
from planner.laws.base import NO_INTERVAL, interval_basis
from planner.laws.hyperparameters import plan_hyperparameters
from planner.laws.plan_curve import plan_loss_curve
from planner.search.bounds import MISSES_DEADLINE, OVER_BUDGET, cell_bounds, flops_per_token
from planner.search.score import DROP_REASONS, NOMINAL_MFU, Problem, score_chunk
from planner.search.space import (BUDGET_STACK, LOSSLESS_HIERARCHY, Space, concatenate, enumerate_cells, family_models,
                                  checked_stacks, gpu_counts, hierarchy_fields, stack_fields)

CHUNK = 262_144  # candidates per vectorised batch: large enough for numpy, small enough for memory
CELLS_PER_ROUND = 48  # (model, GPU count) cells enumerated at once between bound checks
WINDOW_BELOW, WINDOW_ABOVE = 12.0, 6.0  # context: model sizes always scored around the compute-optimal N
MAX_CONTEXT_MODELS = 48


@dataclass
class OptimizeResult:
    status: str  # "ok" or "infeasible"
    plan: dict | None
    alternatives: list = field(default_factory=list)
    pareto: list = field(default_factory=list)
    dropped: dict = field(default_factory=dict)  # scored candidates dropped, by reason
    ruled_out: dict = field(default_factory=dict)  # (model, GPU count) cells never scored, by reason
    scored: int = 0
    skipped_invalid: int = 0
    explanation: list = field(default_factory=list)
    assumptions: dict = field(default_factory=dict)
    elapsed_s: float = 0.0


def _law_params(law, models) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    total = np.array([m.total_params for m in models], dtype=float)
    nonemb = np.array([m.non_embedding_params for m in models], dtype=float)
    return (nonemb if law.n_definition == "non-embedding" else total), total, nonemb


def tokens_for_loss(law, N: np.ndarray, target: float) -> np.ndarray:
    """Smallest D with L(N, D) <= target (bisection in log D); inf where even 1e16 tokens fall short."""
    lo, hi = np.full(len(N), np.log(1e6)), np.full(len(N), np.log(1e16))
    reachable = law.predict(N, np.exp(hi)) <= target
    for _ in range(60):
        mid = (lo + hi) / 2
        below = law.predict(N, np.exp(mid)) <= target
        hi = np.where(below, mid, hi)
        lo = np.where(below, lo, mid)
    return np.where(reachable, np.exp(hi), np.inf)


def most_gpus(cluster: ClusterSpec, constraints: Constraints) -> int:
    """The largest GPU count a plan may use: --gpus, else --max-gpus, else the whole cluster."""
    whole = cluster.max_nodes * cluster.gpus_per_node
    if constraints.gpus is not None:
        return constraints.gpus
    return min(whole, constraints.max_gpus) if constraints.max_gpus is not None else whole


def spendable_gpu_seconds(cluster: ClusterSpec, constraints: Constraints) -> float:
    """Budget mode: the GPU-seconds a plan can actually spend (the deadline and GPU cap may leave less)."""
    return min(constraints.gpu_seconds, most_gpus(cluster, constraints) * constraints.deadline_s)


def _context_centre(law, constraints: Constraints, cluster: ClusterSpec, dtype: str) -> float:
    """Compute-optimal N for the spendable compute at a nominal MFU (centres the always-scored window)."""
    if constraints.target_loss is None:
        flops = spendable_gpu_seconds(cluster, constraints) * cluster.peak_flops_per_s(dtype) * NOMINAL_MFU
    else:
        budgets = np.logspace(17, 28, 221)
        n_opt, d_opt = law.compute_optimal(budgets)
        reach = np.flatnonzero(law.predict(n_opt, d_opt) <= constraints.target_loss)
        flops = budgets[reach[0]] if len(reach) else budgets[-1]
    return float(law.compute_optimal(np.array([max(flops, 1.0)]))[0][0])


def context_models(models: list, n_opt: float) -> np.ndarray:
    """Indices of the models always scored: a window around n_opt (for alternatives and the frontier).

    The chosen plan does not depend on it (the search is exact over every model); it only decides
    which runners-up and frontier points are there to show.
    """
    total = np.array([m.total_params for m in models], dtype=float)
    inside = np.flatnonzero((total >= n_opt / WINDOW_BELOW) & (total <= n_opt * WINDOW_ABOVE))
    if len(inside) == 0:
        inside = np.array([int(np.argmin(np.abs(np.log(total / n_opt))))])
    if len(inside) > MAX_CONTEXT_MODELS:
        inside = inside[np.linspace(0, len(inside) - 1, MAX_CONTEXT_MODELS).round().astype(int)]
    return inside


UNIFORM_MARGIN = 1e-9  # relative: "just below" ln V, so the plan's predicted loss passes score's `loss > ln V` check


def build_problem(cluster, law, constraints, dtype, batch_rule, seq_len, vocab):
    """The scoring set-up over every family shape, and the compute-optimal N estimate."""
    models = family_models(seq_len, vocab, 0, np.inf)
    law_n, total, nonemb = _law_params(law, models)
    # A target at or above ln V (uniform guessing, which every model starts from and no plan is allowed to
    # predict above) is aimed at just below ln V: the cheapest plans that reach it. (Aimed at the target
    # itself, only plans pushed far past it by the batch floor survived, and it cost more than a harder one.)
    target = None if constraints.target_loss is None else min(constraints.target_loss,
                                                               math.log(vocab) * (1.0 - UNIFORM_MARGIN))
    needed = None if target is None else tokens_for_loss(law, law_n, target)
    problem = Problem(cluster=cluster, law=law, constraints=constraints, dtype=dtype, batch_rule=batch_rule,
                      law_params=law_n, total_params=total, nonembedding_params=nonemb,
                      tokens_estimate=None if needed is None else np.where(np.isfinite(needed), needed, 1e12),
                      tokens_needed=needed, flops_per_token=flops_per_token(models))
    return problem, models, _context_centre(law, constraints, cluster, dtype)


def candidate_gpu_counts(cluster: ClusterSpec, constraints: Constraints) -> list[int]:
    """Every GPU count the grid offers up to the caps (bounds, not a window, rule out the hopeless)."""
    return gpu_counts(cluster.gpus_per_node, cluster.max_nodes, constraints.gpus, constraints.max_gpus)


def _context_counts(counts: list[int], constraints: Constraints) -> np.ndarray:
    """GPU counts always scored: those that can spend a quarter of the budget and still take an hour."""
    counts = np.array(counts)
    if constraints.target_loss is not None or constraints.gpus is not None:
        return counts
    spend = constraints.gpu_seconds
    inside = counts[(counts >= spend / (4.0 * constraints.deadline_s)) & (counts <= spend / 3600.0)]
    return inside if len(inside) else counts[-1:]


def _progress(done: int, total: int, progress) -> None:
    """Report `done` of `total` (model, GPU count) cells scored to the caller's `progress(done, total)`, if any."""
    if callable(progress):
        progress(done, total)


class Scoreboard:
    """What scoring keeps: metrics of feasible candidates and, for the infeasible, how many failed each
    combination of checks (a bit mask per candidate, score.DROP_REASONS order). The drop counts (first
    failed check) and the candidates failing one constraint alone (relaxing it would make them feasible)
    both follow from those combinations."""

    def __init__(self) -> None:
        self.kept: dict[str, list] = {}
        self.combinations: dict[int, int] = {}  # failed-check bit mask -> candidates
        self.closest = {"deadline_wall_s": np.inf, "budget_gpu_s": np.inf, "memory_bytes": np.inf}
        self.offset = 0
        self.best = np.inf  # best primary objective seen so far (branch-and-bound threshold)

    def add(self, problem: Problem, space: Space) -> None:
        n = len(space)
        for start in range(0, n, CHUNK):
            index = np.arange(start, min(start + CHUNK, n))
            arrays = {k: v[index] for k, v in space.arrays.items()}
            metrics = score_chunk(problem, space.models, arrays)
            failed, good = metrics["failed"], metrics["feasible"]
            masks, counts = np.unique(failed[~good], return_counts=True)
            for mask, count in zip(masks.tolist(), counts.tolist()):
                self.combinations[mask] = self.combinations.get(mask, 0) + count
            # How close candidates came: any that do not fit (memory), those failing the deadline or the
            # budget alone.
            for hit, key, value in (((failed & 1).astype(bool), "memory_bytes", "memory_bytes"),
                                    (failed == _bit(DEADLINE), "deadline_wall_s", "wall_s"),
                                    (failed == _bit(BUDGET), "budget_gpu_s", "gpu_seconds")):
                if hit.any():
                    self.closest[key] = min(self.closest[key], float(np.min(metrics[value][hit])))
            self.kept.setdefault("index", []).append(self.offset + index[good])
            for key, value in metrics.items():
                if key not in ("feasible", "failed"):
                    self.kept.setdefault(key, []).append(value[good])
            if good.any():
                primary, _ = primary_objective(problem, {k: v[good] for k, v in metrics.items()})
                self.best = min(self.best, float(np.min(primary)))
        self.offset += n

    def result(self) -> dict:
        feasible = {k: np.concatenate(v) for k, v in self.kept.items()} if self.kept else {"index": np.array([], int)}
        dropped = dict.fromkeys(DROP_REASONS, 0)
        for mask, count in self.combinations.items():
            dropped[DROP_REASONS[(mask & -mask).bit_length() - 1]] += count  # the first failed check
        sole = {reason: self.combinations.get(_bit(reason), 0) for reason in DROP_REASONS}
        return {"feasible": feasible, "dropped": dropped, "combinations": self.combinations, "sole": sole,
                "closest": self.closest}


def _bit(reason: str) -> int:
    return 1 << DROP_REASONS.index(reason)


MEMORY, DEADLINE, BUDGET = DROP_REASONS[0], "misses the deadline", "over the budget"


def score_space(problem: Problem, space: Space, progress=None) -> dict:
    """Score every candidate of `space` in chunks; keep the metrics of feasible ones and count the dropped."""
    board = Scoreboard()
    board.add(problem, space)
    _progress(1, 1, progress)
    return board.result()


def branch_and_bound(problem: Problem, models: list, counts: list[int], context: tuple[np.ndarray, np.ndarray],
                     progress=None) -> tuple[dict, Space, dict]:
    """Exact search over every (model, GPU count) cell: context cells first, then the rest by bound,
    stopping where no cell's bound can reach the best found (within the tie tolerance).

    Returns the scoreboard result, the scored candidates as one Space, and the cells ruled out by
    their bound alone, by reason.
    """
    cell_model, cell_gpus = (g.reshape(-1) for g in np.meshgrid(np.arange(len(models)), np.array(counts), indexing="ij"))
    best_rate = problem.peak * flop_rate_ceiling(problem.cluster) * rank_share(cell_gpus, problem.cluster)
    cells = cell_bounds(problem.law, problem.constraints, best_rate, problem.law_params, problem.total_params,
                        problem.flops_per_token, problem.tokens_needed,
                        np.log(np.array([m.vocab for m in models], dtype=float)), cell_model, cell_gpus)
    bound, reason = cells["bound"], cells["reason"]
    in_context = np.isin(cell_model, context[0]) & np.isin(cell_gpus, context[1])
    # Context cells first (smallest bound first within them), then everything else by bound.
    order = np.lexsort((bound, ~in_context))
    order = order[np.isfinite(bound[order])]
    ruled_out = {r: int(np.count_nonzero(reason == r)) for r in set(reason.tolist()) if r}
    # The least wall-clock and GPU-seconds of the cells ruled out for the deadline or the budget, for the
    # explanation ("even at the best rate the fastest plan needs ...").
    for key, floor, why in (("deadline_wall_s", "wall_floor_s", MISSES_DEADLINE), ("budget_gpu_s", "gpu_seconds_floor", OVER_BUDGET)):
        hit = reason == why
        if hit.any():
            ruled_out[key] = float(np.min(cells[floor][hit]))
    board, spaces, done = Scoreboard(), [], 0
    tolerance = tie_tolerance(problem)
    while done < len(order):
        threshold = board.best + abs(board.best) * tolerance
        # The context in one round (it is scored whatever the bounds say), then the rest a round at a time.
        size = max(CELLS_PER_ROUND, int(np.count_nonzero(in_context[order[done:]])))
        take = order[done:done + size]
        take = take[in_context[take] | (bound[take] <= threshold)]
        if len(take) == 0:
            break
        space = enumerate_cells(models, cell_model[take], cell_gpus[take], problem.cluster.gpus_per_node,
                                problem.hierarchy, problem.frameworks)
        board.add(problem, space)
        spaces.append(space)
        done += size
        _progress(min(done, len(order)), len(order), progress)
    _progress(len(order), len(order), progress)
    scored = concatenate(spaces) if spaces else enumerate_cells(models, cell_model[:0], cell_gpus[:0],
                                                                problem.cluster.gpus_per_node, problem.hierarchy,
                                                                problem.frameworks)
    return board.result(), scored, ruled_out


# Losses within 0.1% (cost within 1% in target mode) count as equal - far inside the law's own
# uncertainty band - and the shorter wall-clock wins among them.
LOSS_TIE_RELATIVE = 1e-3
COST_TIE_RELATIVE = 1e-2
WALL_TIE_RELATIVE = 1e-6


def tie_tolerance(problem: Problem) -> float:
    return LOSS_TIE_RELATIVE if problem.constraints.target_loss is None else COST_TIE_RELATIVE


def primary_objective(problem: Problem, feasible: dict) -> tuple[np.ndarray, float]:
    """What is minimised first (loss, or GPU-seconds in target mode) and its tie tolerance."""
    key = "loss" if problem.constraints.target_loss is None else "gpu_seconds"
    return feasible[key], tie_tolerance(problem)


def select(problem: Problem, feasible: dict, mask: np.ndarray | None = None) -> int | None:
    """Position (into feasible) of the best candidate, optionally among `mask`.

    Best = lowest primary objective; candidates within the tie tolerance of it are ordered by
    wall-clock, then by the objective itself.
    """
    primary, tolerance = primary_objective(problem, feasible)
    allowed = np.ones(len(primary), bool) if mask is None else mask
    if not allowed.any():
        return None
    best = np.min(primary[allowed])
    near = allowed & (primary <= best + abs(best) * tolerance)
    # Wall-clocks within WALL_TIE_RELATIVE are equal too (plans bound by the same budget differ only by
    # rounding, or by a negligible serving demand), and then the objective decides.
    wall = feasible["wall_s"]
    fastest = np.min(wall[near])
    candidates = np.flatnonzero(near & (wall <= fastest * (1 + WALL_TIE_RELATIVE)))
    order = np.lexsort((wall[candidates], primary[candidates]))
    return int(candidates[order[0]])


def pareto_front(feasible: dict, limit: int = 24) -> np.ndarray:
    """Positions of the loss-vs-wall-clock frontier: no other plan is both faster and better."""
    order = np.lexsort((feasible["loss"], feasible["wall_s"]))
    best_loss = np.minimum.accumulate(feasible["loss"][order])
    improving = np.concatenate([[True], best_loss[1:] < best_loss[:-1] - 1e-12])
    front = order[improving]
    if len(front) > limit:
        front = front[np.linspace(0, len(front) - 1, limit).round().astype(int)]
    return front


def describe(problem: Problem, space: Space, feasible: dict, position: int, label: str | None = None) -> dict:
    """Full plan record for one feasible candidate, re-simulated on the scalar path."""
    cluster = problem.cluster
    i = int(feasible["index"][position])
    a = {k: v[i] for k, v in space.arrays.items()}
    mi = int(a["model_index"])
    model = space.models[mi]
    # The space holds layout codes; each code is its name's position in OFFLOAD_CODES / RECOMPUTE_CODES.
    layout = make_layout(
        "plan", tp=int(a["tp"]), pp=int(a["pp"]), dp=int(a["dp"]), vpp=int(a["vpp"]), cp=int(a["cp"]), zero=int(a["zero"]),
        offload=list(OFFLOAD_CODES)[int(a["offload"])], micro_batch=int(a["micro_batch"]),
        global_batch=int(feasible["global_batch"][position]), recompute=list(RECOMPUTE_CODES)[int(a["recompute"])],
        seq_parallel=bool(a["seq_parallel"]), dtype=problem.dtype, **hierarchy_fields(a), **stack_fields(a))
    sim = simulate(model, layout, cluster)
    tokens = float(feasible["tokens"][position])
    law_n = float(problem.law_params[mi])
    low, high = problem.law.predict_interval(np.array([law_n]), np.array([tokens]), 0.8)
    gpu_hours = float(feasible["gpu_seconds"][position]) / 3600.0
    price = cluster.price_per_accelerator_hour
    plan = {
        "label": label,
        "params": int(model.total_params), "law_params": law_n, "non_embedding_params": int(model.non_embedding_params),
        "shape": {k: getattr(model, k) for k in ("layers", "hidden", "heads", "kv_heads", "ffn", "mlp", "vocab", "seq_len")},
        "tokens": tokens, "tokens_per_param": tokens / model.total_params,
        "gpus": layout.gpus, "nodes": -(-layout.gpus // cluster.gpus_per_node),
        "layout": {**layout.model_dump(), "grad_accumulation": layout.grad_accumulation, "gpus": layout.gpus},
        "step_time_s": sim["step_time_s"], "tokens_per_s": sim["tokens_per_s"], "mfu": sim["mfu"],
        "tflops_per_gpu": sim["tflops_per_gpu"], "steps": train_steps(layout, tokens, model.seq_len),
        "memory_bytes": sim["memory"]["total_bytes"], "hbm_bytes": sim["memory"]["hbm_bytes"],
        "memory_headroom_bytes": sim["memory"]["hbm_bytes"] - sim["memory"]["total_bytes"],
        "memory": {k: v for k, v in sim["memory"].items()}, "time": sim["time"],
        "goodput": float(feasible["goodput"][position]), "wall_clock_s": float(feasible["wall_s"][position]),
        "wall_clock_days": float(feasible["wall_s"][position]) / 86400.0,
        "gpu_hours": gpu_hours, "inference_gpu_hours": float(feasible["inference_gpu_seconds"][position]) / 3600.0,
        "cost_usd": gpu_hours * price if price else None,
        "predicted_loss": float(feasible["loss"][position]),
        # No band for a law with no uncertainty (its "band" is the point twice): null, and the basis says so.
        "loss_interval": [float(low[0]), float(high[0])] if interval_basis(problem.law) else None,
        "loss_interval_basis": interval_basis(problem.law) or NO_INTERVAL,
        "law_warnings": problem.law.extrapolation_warnings(np.array([law_n]), np.array([tokens])),
    }
    plan["hyperparameters"] = plan_hyperparameters(float(model.non_embedding_params), tokens,
                                                   float(layout.global_batch * model.seq_len),
                                                   batch_rule=problem.batch_rule)
    # The step-time band (error_bands: the cluster's own calibration, else the published runs): at a fixed budget
    # a slower step trains fewer tokens; at a fixed token count (target mode) it takes longer and costs more.
    band = step_time_interval(sim["step_time_s"], layout.framework, cluster)
    if band is not None:
        low, high = band["low_s"] / sim["step_time_s"], band["high_s"] / sim["step_time_s"]
        plan["step_time_band"] = band
        if problem.constraints.target_loss is None:
            plan["tokens_band"] = [tokens / high, tokens / low]
        else:
            plan["wall_clock_days_band"] = [plan["wall_clock_days"] * low, plan["wall_clock_days"] * high]
            plan["gpu_hours_band"] = [gpu_hours * low, gpu_hours * high]
    return plan


def alternatives(problem, space, feasible, best: int) -> list[dict]:
    """Runners-up that differ materially from the best plan."""
    gpus, wall = space.arrays["gpus"][feasible["index"]], feasible["wall_s"]
    tp = space.arrays["tp"][feasible["index"]]
    pp = space.arrays["pp"][feasible["index"]]
    params = problem.total_params[space.arrays["model_index"][feasible["index"]]]
    rules = [
        ("best with at most half the GPUs", gpus <= gpus[best] / 2),
        ("best finishing in at most half the wall-clock", wall <= wall[best] / 2),
        ("best with data parallelism only (tp = pp = 1)", (tp == 1) & (pp == 1)),
        ("best with a model at least 1.5x smaller", params <= params[best] / 1.5),
        ("best with a model at least 1.5x larger", params >= params[best] * 1.5),
    ]
    out, seen = [], {best}
    for label, mask in rules:
        position = select(problem, feasible, mask)
        if position is None or position in seen:
            continue
        seen.add(position)
        out.append(describe(problem, space, feasible, position, label))
    return out


def _binding_line(reason: str, problem: Problem, closest: dict, models: list) -> str:
    """What one binding constraint is and what would relax it."""
    c, cluster = problem.constraints, problem.cluster
    if reason == MEMORY:
        margin = f" less the {100 * c.min_headroom:g}% --min-headroom" if c.min_headroom else ""
        return (f"memory binds: the smallest layout still needs {closest['memory_bytes'] / 2**30:.2f} GiB per GPU "
                f"of {cluster.accelerator.hbm_bytes / 2**30:.2f} GiB{margin}; allow more GPUs (--max-gpus/--gpus), "
                "use a cluster with more HBM, or a smaller model")
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
        need = f"the cheapest plan needs {cheapest / 3600:,.0f} GPU-hours" if np.isfinite(cheapest) else "no plan fits it"
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


def optimize(cluster: ClusterSpec, law, constraints: Constraints, dtype: str = "bf16", batch_rule: str = "step-law",
             seq_len: int = 4096, vocab: int = 32000, progress=None, hierarchy: tuple = LOSSLESS_HIERARCHY,
             frameworks: tuple = (BUDGET_STACK,)) -> OptimizeResult:
    """The best plan under `constraints` (module docstring). `hierarchy`: the ZeRO-3 hierarchy choices tried
    besides flat ZeRO-3 (space.hierarchy_choices: () = flat only; default hpZ and MiCS / HSDP shard groups).
    `frameworks`: the training stacks whose layouts are searched (planner.frameworks names)."""
    started = time.perf_counter()
    cluster.peak_flops_per_s(dtype)
    if constraints.gpus is not None and constraints.gpus > cluster.max_nodes * cluster.gpus_per_node:
        raise PlannerInputError(f"--gpus {constraints.gpus} exceeds cluster {cluster.name!r} "
                                f"({cluster.max_nodes} nodes x {cluster.gpus_per_node} GPUs)")
    problem, models, n_opt = build_problem(cluster, law, constraints, dtype, batch_rule, seq_len, vocab)
    frameworks = checked_stacks(frameworks, dtype)
    problem = dataclasses.replace(problem, hierarchy=hierarchy, frameworks=frameworks)
    counts = candidate_gpu_counts(cluster, constraints)
    context = (context_models(models, n_opt), _context_counts(counts, constraints))
    scored, space, ruled_out = branch_and_bound(problem, models, counts, context, progress)
    feasible = scored["feasible"]
    searched_models = np.unique(space.arrays["model_index"])
    assumptions = {
        "cluster": cluster.name, "calibration": cluster.calibration, "law": law.name, "law_source": law.source,
        "law_n_definition": law.n_definition, "dtype": dtype, "seq_len": seq_len, "vocab": vocab,
        "batch_rule": batch_rule, "deadline_s": constraints.deadline_s,
        "deadline_is_default": constraints.deadline_is_default, "budget_gpu_hours": constraints.gpu_hours,
        "budget_usd": constraints.money, "target_loss": constraints.target_loss,
        "unique_tokens": constraints.unique_tokens, "inference_tokens": constraints.inference_tokens,
        "models_searched": len(models), "models_scored": int(len(searched_models)),
        "model_size_range": [models[0].total_params, models[-1].total_params],
        "compute_optimal_params_estimate": n_opt,
        # The ZeRO-3 hierarchy options tried, as (hpZ, qwZ, qgZ, shard group) flags (space.hierarchy_choices).
        "zero3_hierarchy": [list(choice) for choice in hierarchy],
        "frameworks": list(frameworks),
    }
    result = OptimizeResult(status="infeasible", plan=None, dropped=scored["dropped"], scored=len(space),
                            ruled_out={k: v for k, v in ruled_out.items() if k in DROP_REASONS},
                            skipped_invalid=space.skipped_invalid, assumptions=assumptions)
    if len(feasible["index"]) == 0:
        result.explanation = explain_infeasible(problem, scored, ruled_out, models)
    else:
        best = select(problem, feasible)
        result.status = "ok"
        result.plan = describe(problem, space, feasible, best, "chosen plan")
        # The chosen plan only: its loss along training, ending at the law's L(N, D) (planner.laws.plan_curve).
        result.plan["loss_curve"] = plan_loss_curve(float(result.plan["params"]), result.plan["tokens"],
                                                    result.plan["predicted_loss"],
                                                    result.plan["hyperparameters"]["schedule"],
                                                    aspect=result.plan["shape"]["hidden"] / result.plan["shape"]["layers"])
        result.alternatives = alternatives(problem, space, feasible, best)
        front = pareto_front(feasible)
        result.pareto = [{"wall_clock_days": float(feasible["wall_s"][p]) / 86400.0,
                          "predicted_loss": float(feasible["loss"][p]),
                          "gpus": int(space.arrays["gpus"][feasible["index"][p]]),
                          "params": int(problem.total_params[space.arrays["model_index"][feasible["index"][p]]]),
                          "tokens": float(feasible["tokens"][p]),
                          "gpu_hours": float(feasible["gpu_seconds"][p]) / 3600.0} for p in front]
    result.elapsed_s = time.perf_counter() - started
    return result
