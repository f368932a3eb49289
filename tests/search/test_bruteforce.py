"""The chosen plan is the true optimum of the scored space.

A reduced space (3 family models x 4 GPU counts x small layout choices) is searched by `optimize`
and, independently, by brute force: every candidate goes through the scalar simulator
(`planner.cost.estimate.simulate`), and goodput, the loss law, the batch-size rule and the
budget/target arithmetic are re-implemented here from the module docstrings (score_chunk is never
called). The brute force must find no feasible plan the selection rule of search/selection.py ranks above
the chosen one, and the same counts of dropped candidates.
"""

from __future__ import annotations

import functools
import itertools
import math

import pytest

from planner.search.budget import build_constraints
from planner.cost.estimate import simulate
from planner.specs.clusters import load_cluster
from planner.laws.registry import load_law
from planner.specs.layout import make_layout
from planner.specs.model import family_model
from planner.search import space as space_module
from planner.search.optimize import optimize

REDUCED = {
    "DEPTHS": (24, 32, 40),  # with aspect 128: 2.6B, 5.9B and 11.3B parameters
    "ASPECT_RATIOS": (128,),
    "SUB_NODE_GPUS": (4,),
    "NODE_GRID": (1, 4, 16),  # 8, 32 and 128 GPUs
    "TP_CHOICES": (1, 2, 8),
    "PP_CHOICES": (1, 2, 4),
    "VPP_CHOICES": (1, 2),
    "CP_CHOICES": (1,),
    "SEQ_PARALLEL_CHOICES": (True,),  # tp > 1 always with sequence parallelism, as simulated() assumes
    "ZERO_OFFLOAD_CHOICES": ((0, 0), (1, 0), (3, 0), (2, 1)),
    "MICRO_BATCH_CHOICES": (1, 2),
    "RECOMPUTE_CHOICES": (0, 2),
}
GPU_OPTIONS = (4, 8, 32, 128)
SEQ_LEN, VOCAB = 4096, 32000
CLUSTER = "dgx-h100"

# From the docstrings: selection (search/selection.py), goodput (cost/goodput.py), batch rule (laws/batch_size.py).
LOSS_TIE, COST_TIE = 1e-3, 1e-2
CHECKPOINT_BYTES_PER_PARAM = 2 + 4 + 4 + 4  # bf16 weights, fp32 master, Adam m and v
NOMINAL_MFU = 0.45  # search/score.py: the MFU assumed before simulating, used to size D for the batch
RECOMPUTE = ("none", "selective", "full")
OFFLOAD = ("none", "optimizer")


@pytest.fixture
def reduced(monkeypatch):
    for name, value in REDUCED.items():
        monkeypatch.setattr(space_module, name, value)


@functools.lru_cache(maxsize=None)
def cluster():
    """dgx-h100 cut to the reduced grid's 16 nodes: space.gpu_counts also tries the whole cluster, which is then a
    count of the grid (128 GPUs) and not 4,096 nodes off it."""
    spec = load_cluster(CLUSTER)
    return spec.model_copy(update={"max_nodes": REDUCED["NODE_GRID"][-1]})


@functools.lru_cache(maxsize=None)
def models():
    out = []
    for depth in REDUCED["DEPTHS"]:
        m = family_model(depth, REDUCED["ASPECT_RATIOS"][0], seq_len=SEQ_LEN, vocab=VOCAB)
        out.append(m.model_copy(update={"kv_heads": 8}))  # 24+ heads: grouped-query attention with 8 kv heads
    return tuple(out)


@functools.lru_cache(maxsize=None)
def simulated(model_index, tp, pp, dp, vpp, zero, offload, micro, global_batch, recompute, hpz=1, qwz=False, qgz=False,
              shard=0):
    hierarchy = dict(zero_hpz=hpz, zero_quantized_weights=qwz, zero_quantized_gradients=qgz,
                     shard_group=shard or None)
    layout = make_layout(tp=tp, pp=pp, dp=dp, vpp=vpp, zero=zero, offload=OFFLOAD[offload], micro_batch=micro,
                         global_batch=global_batch, recompute=RECOMPUTE[recompute], seq_parallel=tp > 1,
                         dtype="bf16", **hierarchy)
    return simulate(models()[model_index], layout, cluster())


def chinchilla_loss(law, N, D):
    return law.E + law.A / N**law.alpha + law.B / D**law.beta


def tokens_for_target(law, N, target):
    """D with E + A/N^alpha + B/D^beta = target; inf beyond the optimizer's 1e16-token search range."""
    gap = target - law.E - law.A / N**law.alpha
    if gap <= 0:
        return math.inf
    D = (law.B / gap) ** (1.0 / law.beta)
    return D if D <= 1e16 else math.inf


def reference_goodput(params, gpus):
    r = cluster().reliability
    delta = CHECKPOINT_BYTES_PER_PARAM * params / r.checkpoint_bytes_per_s
    M = r.mtbf_per_gpu_s / gpus
    tau = math.sqrt(2 * delta * M)
    return 1.0 / (1.0 + delta / tau + (tau / 2 + delta + r.restart_s) / M)


def step_law_b_opt(D):
    return 0.58 * D**0.571  # Li et al. 2025, tokens


def gpu_options(c):
    """search/problem_setup.py searches every GPU count of the grid (bounds, not a window, rule out the hopeless)
    and the whole cluster, here the grid's largest (cluster())."""
    return GPU_OPTIONS


def flops_per_token(m):
    """Training model FLOPs per token, causal attention (model.py docstring, halved attention core)."""
    k = 3 if m.mlp == "swiglu" else 2
    per_layer = 2 * m.hidden**2 * (2 + 2 * m.kv / m.heads) + 0.5 * 4 * m.seq_len * m.hidden + 2 * k * m.hidden * m.ffn_size
    return 3 * (m.layers * per_layer + 2 * m.hidden * m.vocab)


def step_law_d_for_batch(batch_tokens):
    """Smallest D whose limit 2.5 B_opt(D) admits `batch_tokens` (score.py: target mode trains at least that)."""
    return (batch_tokens / (2.5 * 0.58)) ** (1 / 0.571)


def layouts(c):
    """The layouts the reduced space allows (rules of space.py's docstring)."""
    for mi, gpus, tp, pp, vpp, (zero, offload), micro, recompute in itertools.product(
            range(len(models())), gpu_options(c), REDUCED["TP_CHOICES"], REDUCED["PP_CHOICES"], REDUCED["VPP_CHOICES"],
            REDUCED["ZERO_OFFLOAD_CHOICES"], REDUCED["MICRO_BATCH_CHOICES"], REDUCED["RECOMPUTE_CHOICES"]):
        m = models()[mi]
        if tp > 8 or m.heads % tp or m.kv % tp or gpus % (tp * pp) or m.layers % (pp * vpp) or (vpp > 1 and pp == 1):
            continue
        dp = gpus // (tp * pp)
        if zero and dp == 1:
            continue
        if pp > 1 and zero > 1:  # pipeline engines run with ZeRO-0/1 only
            continue
        flat = dict(mi=mi, gpus=gpus, tp=tp, pp=pp, dp=dp, vpp=vpp, zero=zero, offload=offload, micro=micro,
                    recompute=recompute, hpz=1, qwz=False, qgz=False, shard=0)
        yield flat
        # space.py: flat ZeRO-3 whose data-parallel group spans nodes is also tried with hpZ, hpZ + qwZ + qgZ
        # and a shard group, each over the node's data-parallel ranks (the "other" stack runs all three).
        node_ranks = cluster().gpus_per_node // tp
        if zero == 3 and offload == 0 and node_ranks > 1 and dp > node_ranks and dp % node_ranks == 0:
            yield {**flat, "hpz": node_ranks}  # the default search's lossless hierarchy (no qwZ / qgZ)
            yield {**flat, "shard": node_ranks}


def brute_force(law, c):
    """Score every layout one at a time. Returns (feasible rows, dropped counts by reason)."""
    peak = cluster().peak_flops_per_s("bf16")
    rows, dropped = [], {}
    for cand in layouts(c):
        model = models()[cand["mi"]]
        N = float(model.total_params)
        gpus = cand["gpus"]
        needed = tokens_for_target(law, N, c.target_loss) if c.target_loss is not None else None
        if c.target_loss is None:
            # score.py: what this GPU count can spend (budget after serving at peak, capped by the deadline).
            serving_floor = 2 * N * c.inference_tokens / peak if c.inference_tokens else 0.0
            spendable = max(min(c.gpu_seconds - serving_floor, gpus * c.deadline_s), 0.0)
            d_estimate = max(spendable * peak * NOMINAL_MFU / flops_per_token(model), 1.0)
        else:
            d_estimate = needed if math.isfinite(needed) else 1e12
        per_step = cand["micro"] * cand["dp"]
        global_batch = int(max(1, round(step_law_b_opt(d_estimate) / SEQ_LEN / per_step)) * per_step)
        sim = simulated(cand["mi"], cand["tp"], cand["pp"], cand["dp"], cand["vpp"], cand["zero"], cand["offload"],
                        cand["micro"], global_batch, cand["recompute"], cand["hpz"], cand["qwz"], cand["qgz"], cand["shard"])
        rate = sim["tokens_per_s"] * reference_goodput(N, gpus)
        # Serving 2·N FLOP per token at the plan's achieved FLOP rate (score.py docstring).
        inference_gpu_s = (2 * N * c.inference_tokens / (sim["tflops_per_gpu"] * 1e12)) if c.inference_tokens else 0.0
        if c.target_loss is None:
            wall = min(max(c.gpu_seconds - inference_gpu_s, 0.0) / gpus, c.deadline_s)
            tokens = rate * wall
        else:
            tokens = max(needed, step_law_d_for_batch(global_batch * SEQ_LEN))
            wall = tokens / rate
        gpu_s = gpus * wall + inference_gpu_s
        batch_limit = 2.5 * step_law_b_opt(max(tokens, 1.0))  # B_max = 2.5 B_opt with the defaults
        loss = chinchilla_loss(law, N, max(tokens, 1.0)) if math.isfinite(tokens) else math.inf
        reasons = [
            sim["memory"]["total_bytes"] > sim["memory"]["hbm_bytes"],
            not sim["memory"]["host_fits"],
            c.inference_tokens is not None and c.gpu_seconds is not None and inference_gpu_s >= c.gpu_seconds,
            global_batch * SEQ_LEN > batch_limit,
            c.target_loss is not None and not math.isfinite(tokens),
            math.isfinite(loss) and loss > math.log(VOCAB),  # worse than uniform guessing
            wall > c.deadline_s * (1 + 1e-9),
            c.gpu_seconds is not None and gpu_s > c.gpu_seconds * (1 + 1e-9),
        ]
        names = ("memory", "host", "inference", "batch", "target", "uniform", "deadline", "budget")
        failed = [name for name, bad in zip(names, reasons) if bad]
        if failed:
            dropped[failed[0]] = dropped.get(failed[0], 0) + 1
            continue
        rows.append({**cand, "params": N, "global_batch": global_batch, "tokens": tokens, "wall": wall,
                     "gpu_s": gpu_s, "loss": loss, "model": model, "inference_gpu_s": inference_gpu_s,
                     "memory_bytes": sim["memory"]["total_bytes"]})
    return rows, dropped


def stopped_rows(law, c, rows, limit):
    """search/stopping.py's rule, one row at a time: in budget mode each plan may stop at `limit` (its tokens in
    proportion, its GPU-seconds gpus x limit beside its serving), kept where its batch and loss still pass; in
    target mode only the plans that finish by then."""
    if c.target_loss is not None:
        return [r for r in rows if r["wall"] <= limit * (1 + 1e-9)]
    out = []
    for r in rows:
        wall = min(r["wall"], limit)
        tokens = r["tokens"] * wall / r["wall"]
        loss = chinchilla_loss(law, r["params"], max(tokens, 1.0))
        if r["global_batch"] * SEQ_LEN <= 2.5 * step_law_b_opt(max(tokens, 1.0)) and loss <= math.log(VOCAB):
            out.append({**r, "wall": wall, "tokens": tokens, "loss": loss,
                        "gpu_s": r["gpus"] * wall + r["inference_gpu_s"]})
    return out


def rule_best(rows, key, tolerance):
    """search/selection.py's rule: lowest `key`; within `tolerance` of it the shorter wall-clock wins (at the slow
    end of each plan's step-time band, which is one ratio here: every candidate is the one neutral stack's)."""
    if not rows:
        return None
    best = min(r[key] for r in rows)
    near = [r for r in rows if r[key] <= best + abs(best) * tolerance]
    fastest = min(r["wall"] for r in near)  # wall-clocks within 1e-6 are equal, then `key` decides
    return min((r for r in near if r["wall"] <= fastest * (1 + 1e-6)), key=lambda r: (r[key], r["wall"]))


def row_of(rows, plan):
    lay, shape = plan["layout"], plan["shape"]
    matches = [r for r in rows if (r["model"].layers, r["model"].hidden) == (shape["layers"], shape["hidden"])
               and (r["gpus"], r["tp"], r["pp"], r["dp"], r["vpp"], r["zero"], r["micro"], r["global_batch"])
               == (lay["gpus"], lay["tp"], lay["pp"], lay["dp"], lay["vpp"], lay["zero"], lay["micro_batch"],
                   lay["global_batch"])
               and OFFLOAD[r["offload"]] == lay["offload"] and RECOMPUTE[r["recompute"]] == lay["recompute"]
               and (r["hpz"], r["qwz"], r["qgz"], r["shard"]) == (lay["zero_hpz"], lay["zero_quantized_weights"],
                                                                  lay["zero_quantized_gradients"], lay["shard_group"] or 0)]
    assert len(matches) == 1, f"plan {lay} is not one feasible brute-force candidate"
    return matches[0]


# Names of score.py's drop reasons, keyed like brute_force's.
REASON_NAMES = {
    "memory": "does not fit GPU memory", "host": "offload exceeds host memory",
    "batch": "global batch above the batch-size limit", "inference": "inference alone exceeds the budget",
    "target": "target loss unreachable at this model size",
    "uniform": "predicted loss above uniform guessing (ln vocab)", "deadline": "misses the deadline",
    "budget": "over the budget",
}

ALTERNATIVE_RULES = {
    "best with at most half the GPUs": lambda r, b: r["gpus"] <= b["gpus"] / 2,
    "best finishing in at most half the wall-clock": lambda r, b: r["wall"] <= b["wall"] / 2,
    "best with data parallelism only (tp = pp = 1)": lambda r, b: r["tp"] == 1 and r["pp"] == 1,
    "best with a model at least 1.5x smaller": lambda r, b: r["params"] <= b["params"] / 1.5,
    "best with a model at least 1.5x larger": lambda r, b: r["params"] >= b["params"] * 1.5,
}

CASES = {
    # Budget mode: 4 GPUs hit the 30-day default deadline before the budget runs out; 128 do not.
    "budget": dict(budget="10000gpuh"),
    "budget, 3-day deadline": dict(budget="10000gpuh", deadline="3d"),
    "budget with inference": dict(budget="10000gpuh", inference_tokens="300B"),
    # Target mode: at 2.3 nats 4 and 8 GPUs cost within 1% and the faster one must win.
    "target loss": dict(target_loss=2.3),
    # 8 GPUs would be cheapest but miss 4 days; on 128 GPUs the larger model costs over 2,900 GPU-hours.
    "target loss, deadline and budget": dict(target_loss=2.2, deadline="4d", budget="2900gpuh"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_chosen_plan_is_the_brute_force_optimum(reduced, case):
    c = build_constraints(**{**dict(budget=None, deadline=None, gpus=None, max_gpus=None, unique_tokens=None,
                                    target_loss=None, inference_tokens=None), **CASES[case]},
                          price_per_gpu_hour=None, cluster_name=CLUSTER)
    law = load_law("epoch")
    result = optimize(cluster(), law, c, seq_len=SEQ_LEN, vocab=VOCAB)
    rows, dropped = brute_force(law, c)

    # Same space: every candidate is scored or sits in a (model, GPU count) cell that branch and bound ruled
    # out, and only cells that cannot hold a plan (over the deadline or budget even at the best FLOP rate)
    # or cannot beat the plan are left unscored.
    assert result.assumptions["models_searched"] == len(models())
    total = len(rows) + sum(dropped.values())
    assert result.scored <= total
    expected = {REASON_NAMES[k]: dropped.get(k, 0) for k in REASON_NAMES}
    unscored = {reason: expected[reason] - result.dropped[reason] for reason in expected}
    assert all(n >= 0 for n in unscored.values()), unscored
    assert sum(unscored.values()) <= total - result.scored
    assert rows, "the case should have feasible plans"
    assert result.status == "ok"

    key, tolerance = ("loss", LOSS_TIE) if c.target_loss is None else ("gpu_s", COST_TIE)
    best = rule_best(rows, key, tolerance)
    plan = result.plan
    mine = row_of(rows, plan)
    # The plan's numbers are the brute force's numbers for the same candidate ...
    assert plan["predicted_loss"] == pytest.approx(mine["loss"], rel=1e-9)
    assert plan["tokens"] == pytest.approx(mine["tokens"], rel=1e-6)
    assert plan["wall_clock_s"] == pytest.approx(mine["wall"], rel=1e-9)
    assert plan["gpu_hours"] * 3600 == pytest.approx(mine["gpu_s"], rel=1e-9)
    assert plan["memory_bytes"] == pytest.approx(mine["memory_bytes"], rel=1e-12)
    # ... and no candidate ranks above it: nothing clearly better, nothing as good and faster.
    assert mine[key] <= best[key] * (1 + tolerance) + 1e-12
    assert mine["wall"] <= best["wall"] * (1 + 1e-6)
    assert not any(r[key] < mine[key] * (1 - 1e-9) and r[key] < best[key] + abs(best[key]) * tolerance
                   and r["wall"] < mine["wall"] * (1 - 1e-9) for r in rows)
    if c.target_loss is not None:
        assert plan["predicted_loss"] <= c.target_loss + 1e-9

    # Runners-up: each is the best plan under its own restriction.
    # Half the wall-clock: among the plans stopped by then too (search/stopping.py).
    for alt in result.alternatives:
        rule = ALTERNATIVE_RULES[alt["label"]]
        among = stopped_rows(law, c, rows, mine["wall"] / 2) if "half the wall-clock" in alt["label"] else rows
        allowed = [r for r in among if rule(r, mine)]
        alt_best = rule_best(allowed, key, tolerance)
        alt_row = row_of(among, alt)
        assert rule(alt_row, mine)
        assert alt["predicted_loss"] == pytest.approx(alt_row["loss"], rel=1e-9)
        assert alt["wall_clock_s"] == pytest.approx(alt_row["wall"], rel=1e-9)
        assert alt["gpu_hours"] * 3600 == pytest.approx(alt_row["gpu_s"], rel=1e-9)
        assert alt_row[key] == pytest.approx(alt_best[key], rel=1e-9)
        assert alt_row["wall"] == pytest.approx(alt_best["wall"], rel=1e-9)

    # Frontier: no feasible candidate is both strictly faster and strictly better than a frontier point, nor any
    # plan stopped by its wall-clock (the audit: in budget mode every scored plan spends the budget, so a frontier
    # of those alone offered 500B models on 50B tokens as the fast end).
    assert result.pareto
    for point in result.pareto:
        wall = point["wall_clock_days"] * 86400
        assert all(r["loss"] >= point["predicted_loss"] * (1 - 1e-9) for r in stopped_rows(law, c, rows, wall))
        assert not any(r["wall"] < wall * (1 - 1e-9) and r["loss"] < point["predicted_loss"] - 1e-9 for r in rows)
