"""Choose N, D, GPUs and layout under a budget: enumerate, score in vectorised chunks, pick, explain.

The chosen plan is the exact optimum of the scored space (ties broken by shorter wall-clock), so a
brute force over the same space with the scalar simulator finds nothing better (tests/search).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from planner.budget import Constraints
from planner.cost.estimate import simulate
from planner.error_bands import interval as step_time_interval
from planner.errors import PlannerInputError
from planner.hardware import ClusterSpec
from planner.layout import OFFLOAD_CODES, RECOMPUTE_CODES, make_layout
from planner.search.score import DROP_REASONS, Problem, score_chunk
from planner.search.space import Space, enumerate_space, family_models, gpu_counts

CHUNK = 262_144  # candidates per vectorised batch: large enough for numpy, small enough for memory
NOMINAL_MFU = 0.45  # assumed, only to centre the model-size window before anything is simulated
WINDOW_BELOW, WINDOW_ABOVE = 12.0, 6.0  # model sizes searched around the law's compute-optimal N
MAX_MODELS = 48


@dataclass
class OptimizeResult:
    status: str  # "ok" or "infeasible"
    plan: dict | None
    alternatives: list = field(default_factory=list)
    pareto: list = field(default_factory=list)
    dropped: dict = field(default_factory=dict)
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


def _window(law, constraints: Constraints, cluster: ClusterSpec, dtype: str) -> tuple[float, float, float]:
    """Centre of the model-size window (compute-optimal N) and its bounds."""
    peak = cluster.peak_flops_per_s(dtype)
    if constraints.target_loss is None:
        flops = constraints.gpu_seconds * peak * NOMINAL_MFU
    else:
        budgets = np.logspace(17, 28, 221)
        n_opt, d_opt = law.compute_optimal(budgets)
        reach = np.flatnonzero(law.predict(n_opt, d_opt) <= constraints.target_loss)
        flops = budgets[reach[0]] if len(reach) else budgets[-1]
    n_opt = float(law.compute_optimal(np.array([flops]))[0][0])
    # Serving demand favours smaller, longer-trained models (Sardana et al. 2024): widen the window down.
    below = WINDOW_BELOW * (10.0 if constraints.inference_tokens else 1.0)
    return n_opt, n_opt / below, n_opt * WINDOW_ABOVE


def build_problem(cluster, law, constraints, dtype, batch_rule, seq_len, vocab):
    n_opt, n_lo, n_hi = _window(law, constraints, cluster, dtype)
    models = family_models(seq_len, vocab, n_lo, n_hi)
    if not models:
        models = family_models(seq_len, vocab, 0, np.inf)[:1] if n_hi < 1e8 else family_models(seq_len, vocab, 0, np.inf)[-1:]
    if len(models) > MAX_MODELS:
        models = [models[i] for i in np.linspace(0, len(models) - 1, MAX_MODELS).round().astype(int)]
    law_n, total, nonemb = _law_params(law, models)
    if constraints.target_loss is None:
        flops = constraints.gpu_seconds * cluster.peak_flops_per_s(dtype) * NOMINAL_MFU
        tokens_estimate, needed = flops / (6.0 * total), None
    else:
        needed = tokens_for_loss(law, law_n, constraints.target_loss)
        tokens_estimate = np.where(np.isfinite(needed), needed, 1e12)
    problem = Problem(cluster=cluster, law=law, constraints=constraints, dtype=dtype, batch_rule=batch_rule,
                      law_params=law_n, total_params=total, nonembedding_params=nonemb,
                      tokens_estimate=tokens_estimate, tokens_needed=needed)
    return problem, models, n_opt


def candidate_gpu_counts(cluster: ClusterSpec, constraints: Constraints) -> list[int]:
    low, high = 1.0, np.inf
    if constraints.target_loss is None and constraints.gpus is None:
        # Fewer GPUs than this cannot spend a quarter of the budget before the deadline; more than
        # this finish in under an hour.
        low = constraints.gpu_seconds / (4.0 * constraints.deadline_s)
        high = constraints.gpu_seconds / 3600.0
    return gpu_counts(cluster.gpus_per_node, cluster.max_nodes, constraints.gpus, constraints.max_gpus, low, high)


def _progress(done: int, total: int, enabled: bool) -> None:
    if not enabled:
        return
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\rscoring candidates [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def score_space(problem: Problem, space: Space, progress: bool = False) -> dict:
    """Score every candidate in chunks; keep the metrics of feasible ones and count the dropped."""
    n = len(space)
    kept: dict[str, list] = {}
    dropped = np.zeros(len(DROP_REASONS), dtype=np.int64)
    closest = {"deadline_wall_s": np.inf, "budget_gpu_s": np.inf, "memory_bytes": np.inf}
    for start in range(0, n, CHUNK):
        index = np.arange(start, min(start + CHUNK, n))
        arrays = {k: v[index] for k, v in space.arrays.items()}
        metrics = score_chunk(problem, space.models, arrays)
        dropped += np.bincount(metrics["drop_code"][~metrics["feasible"]], minlength=len(DROP_REASONS))
        for code, key, value in ((5, "deadline_wall_s", "wall_s"), (6, "budget_gpu_s", "gpu_seconds"),
                                 (0, "memory_bytes", "memory_bytes")):
            hit = metrics["drop_code"] == code
            if hit.any():
                closest[key] = min(closest[key], float(np.min(metrics[value][hit])))
        good = metrics["feasible"]
        kept.setdefault("index", []).append(index[good])
        for key, value in metrics.items():
            if key not in ("feasible", "drop_code"):
                kept.setdefault(key, []).append(value[good])
        _progress(int(index[-1]) + 1, n, progress)
    feasible = {k: np.concatenate(v) for k, v in kept.items()}
    return {"feasible": feasible, "dropped": dict(zip(DROP_REASONS, dropped.tolist())), "closest": closest}


# Losses within 0.1% (cost within 1% in target mode) count as equal - far inside the law's own
# uncertainty band - and the shorter wall-clock wins among them.
LOSS_TIE_RELATIVE = 1e-3
COST_TIE_RELATIVE = 1e-2


def primary_objective(problem: Problem, feasible: dict) -> tuple[np.ndarray, float]:
    """What is minimised first (loss, or GPU-seconds in target mode) and its tie tolerance."""
    if problem.constraints.target_loss is None:
        return feasible["loss"], LOSS_TIE_RELATIVE
    return feasible["gpu_seconds"], COST_TIE_RELATIVE


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
    candidates = np.flatnonzero(near)
    order = np.lexsort((primary[candidates], feasible["wall_s"][candidates]))
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
        seq_parallel=bool(a["seq_parallel"]), dtype=problem.dtype)
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
        "tflops_per_gpu": sim["tflops_per_gpu"], "steps": tokens / (layout.global_batch * model.seq_len),
        "memory_bytes": sim["memory"]["total_bytes"], "hbm_bytes": sim["memory"]["hbm_bytes"],
        "memory_headroom_bytes": sim["memory"]["hbm_bytes"] - sim["memory"]["total_bytes"],
        "memory": {k: v for k, v in sim["memory"].items()}, "time": sim["time"],
        "goodput": float(feasible["goodput"][position]), "wall_clock_s": float(feasible["wall_s"][position]),
        "wall_clock_days": float(feasible["wall_s"][position]) / 86400.0,
        "gpu_hours": gpu_hours, "inference_gpu_hours": float(feasible["inference_gpu_seconds"][position]) / 3600.0,
        "cost_usd": gpu_hours * price if price else None,
        "predicted_loss": float(feasible["loss"][position]), "loss_interval": [float(low[0]), float(high[0])],
        "law_warnings": problem.law.extrapolation_warnings(np.array([law_n]), np.array([tokens])),
    }
    # The step-time band from the published runs (error_bands): at a fixed budget a slower step trains fewer
    # tokens; at a fixed token count (target mode) it takes longer and costs more.
    band = step_time_interval(sim["step_time_s"], layout.framework)
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


def explain_infeasible(problem: Problem, dropped: dict, closest: dict, models: list) -> list[str]:
    """Which constraint binds, and what would make the problem feasible."""
    c, cluster = problem.constraints, problem.cluster
    lines = []
    binding = max(dropped, key=dropped.get) if any(dropped.values()) else None
    for reason, count in dropped.items():
        if count:
            lines.append(f"{count:,} candidates dropped: {reason}")
    # Memory only binds when nothing else does: layouts that do not fit are plentiful in every search,
    # so their count says little when the deadline, budget or target also dropped candidates.
    others = [r for r, n in dropped.items() if n and r not in ("does not fit GPU memory", "offload exceeds host memory")]
    if dropped.get("does not fit GPU memory") and not others:
        lines.append(f"memory binds: the smallest layout still needs {closest['memory_bytes'] / 2**30:.2f} GiB per GPU "
                     f"of {cluster.accelerator.hbm_bytes / 2**30:.2f} GiB; allow more GPUs (--max-gpus/--gpus), "
                     "use a cluster with more HBM, or a smaller model")
    if dropped.get("misses the deadline"):
        lines.append(f"the deadline binds: the fastest plan needs {closest['deadline_wall_s'] / 86400:.1f} days "
                     f"(deadline {c.deadline_s / 86400:.1f} d); give a longer --deadline or allow more GPUs")
    if dropped.get("over the budget"):
        lines.append(f"the budget binds: the cheapest plan needs {closest['budget_gpu_s'] / 3600:,.0f} GPU-hours; "
                     "raise --budget or relax --target-loss")
    # Only when no model searched reaches the target with any data: then it binds whatever else dropped
    # the candidates first (with --gpus 8 and target 1.7 every one is dropped for memory first).
    floor = (float(np.min(problem.law.predict(problem.law_params, np.full(len(models), 1e16))))
             if c.target_loss is not None else None)
    if floor is not None and c.target_loss < floor:
        lines.append(f"the target loss {c.target_loss} is below what the law reaches for these model sizes "
                     f"(about {floor:.3f} at 1e16 tokens); choose a higher --target-loss")
    if dropped.get("global batch above the batch-size limit") and binding == "global batch above the batch-size limit":
        lines.append("the batch-size limit binds: so many GPUs need a global batch far above the critical batch; "
                     "use fewer GPUs (--max-gpus) or a larger budget")
    if dropped.get("inference alone exceeds the budget"):
        lines.append("serving --inference-tokens alone costs more than --budget; raise the budget or lower the inference volume")
    return lines


def optimize(cluster: ClusterSpec, law, constraints: Constraints, dtype: str = "bf16", batch_rule: str = "step-law",
             seq_len: int = 4096, vocab: int = 32000, progress: bool = False) -> OptimizeResult:
    started = time.perf_counter()
    cluster.peak_flops_per_s(dtype)
    if constraints.gpus is not None and constraints.gpus > cluster.max_nodes * cluster.gpus_per_node:
        raise PlannerInputError(f"--gpus {constraints.gpus} exceeds cluster {cluster.name!r} "
                                f"({cluster.max_nodes} nodes x {cluster.gpus_per_node} GPUs)")
    problem, models, n_opt = build_problem(cluster, law, constraints, dtype, batch_rule, seq_len, vocab)
    space = enumerate_space(models, candidate_gpu_counts(cluster, constraints), cluster.gpus_per_node)
    scored = score_space(problem, space, progress)
    feasible = scored["feasible"]
    assumptions = {
        "cluster": cluster.name, "calibration": cluster.calibration, "law": law.name, "law_source": law.source,
        "law_n_definition": law.n_definition, "dtype": dtype, "seq_len": seq_len, "vocab": vocab,
        "batch_rule": batch_rule, "deadline_s": constraints.deadline_s,
        "deadline_is_default": constraints.deadline_is_default, "budget_gpu_hours": constraints.gpu_hours,
        "budget_usd": constraints.money, "target_loss": constraints.target_loss,
        "unique_tokens": constraints.unique_tokens, "inference_tokens": constraints.inference_tokens,
        "models_searched": len(models), "model_size_range": [models[0].total_params, models[-1].total_params],
        "compute_optimal_params_estimate": n_opt,
    }
    result = OptimizeResult(status="infeasible", plan=None, dropped=scored["dropped"], scored=len(space),
                            skipped_invalid=space.skipped_invalid, assumptions=assumptions)
    if len(feasible["index"]) == 0:
        result.explanation = explain_infeasible(problem, scored["dropped"], scored["closest"], models)
    else:
        best = select(problem, feasible)
        result.status = "ok"
        result.plan = describe(problem, space, feasible, best, "chosen plan")
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
