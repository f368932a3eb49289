"""A budget question with mixtures of experts beside dense models: which wins, and by how much.

`planner optimize --budget B --moe`. Both sides are judged by one pair of laws fitted on the same data, so
their losses compare: Krajewski et al. 2024 (fine-grained MoE, C4) eq. 9 for the MoE and their dense
baseline (eq. 1, Table 1) for the dense model (planner.laws.moe). For each side, a fixed point between
the law and the cost model:

  1. the compute C the budget buys (start: every GPU at 40% of peak for the whole wall-clock);
  2. the law's compute-optimal shape for C: dense N and D (Chinchilla form), or the MoE's active
     parameters, tokens and granularity G (section 6.2, eq. 10 FLOPs) at each published expansion rate
     (E = 64, Table 1; E = 16, Appendix D Table 8), the lower loss winning; a shape none of whose layouts
     fits memory is shrunk until one does (an E = 64 optimum can hold trillions of parameters);
  3. the nearest shape of the planner's family (family_model / family_moe_model: 64·G experts of
     width ffn/G, top-G, the paper's fine-grained construction), searched over its layouts (expert
     parallelism included); for the MoE, the same depth at G/2, G/4, ... while the predicted loss falls
     (the law's G does not price the slower GEMMs of narrower experts);
  4. the tokens that layout trains in the wall-clock (tokens/s x goodput) give the compute of step 1 for
     the next round; three rounds, the round with the lowest predicted loss kept.

Each side is planned on the fewest GPUs that spend the budget by the deadline (the budget / deadline rounded
up to a count the cluster has; at most --max-gpus, where the cap then runs the whole deadline), then on those
that spend it by half and by a quarter of the deadline (a plan that finishes early meets the deadline too),
keeping the lowest loss. The fewest alone made a longer deadline worse: fewer GPUs hold less memory, so the
MoE shrank (100,000 GPU-hours: 1.773 on 96 GPUs by 60 days, 1.782 on 48 by 90). A larger count is planned
in full only where it can help: the best plan so far was shrunk to fit memory, or its own model trains to a
lower loss there (_best_side).

Every layout search here wants only the best layout that fits: those whose parameter states alone overflow HBM are
dropped before they are priced, most of them before they are enumerated (search_layouts(only_fitting=True); 70-91%
of a trillion-parameter MoE's layouts).

The answer is each side's model, layout, tokens and predicted loss, plus the inference cost per token
(2 x active parameters), which active parameters set for serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from planner.errors import PlannerInputError
from planner.specs.hardware import ClusterSpec
from planner.laws.batch_size import DEFAULT_RULE
from planner.laws.moe import KRAJEWSKI_2024, KRAJEWSKI_2024_DENSE, KRAJEWSKI_2024_E16, moe_compute_optimal
from planner.specs.model import ModelSpec, family_model, family_moe_model
from planner.search.layouts import search_layouts
from planner.search.selection import LOSS_TIE_RELATIVE
from planner.search.space import gpu_counts

ROUNDS = 3
# The deadline fractions whose fewest spending GPU counts each side also tries (a geometric set: x1, x2, x4 GPUs).
DEADLINE_FRACTIONS = (1.0, 0.5, 0.25)
START_MFU = 0.4  # assumed first guess only; the fixed point replaces it with the searched layout's rate
DEPTHS = range(4, 161)
SHRINK, SHRINK_TRIES = 0.7, 10  # step down from a shape that fits no layout (a search, not a fitted value)


@dataclass
class SidePlan:
    kind: str  # "dense" or "moe"
    model: ModelSpec
    layout: object | None
    tokens: float
    loss: float
    granularity: float
    step_time_s: float
    tokens_per_s: float
    mfu: float
    warnings: list = field(default_factory=list)
    law: str = ""
    gpus: int = 0  # the GPU count of this side's plan, and its wall-clock
    wall_s: float = 0.0
    shrunk: bool = False  # the law's shape fitted no layout on these GPUs and was shrunk until one did

    @property
    def inference_flops_per_token(self) -> float:
        return 2.0 * self.model.total_active_params


@dataclass
class MoEComparison:
    cluster: ClusterSpec
    gpus: int  # the fewest GPUs that spend the budget by the deadline (each side's own count is on its plan)
    wall_s: float
    gpu_seconds: float
    dense: SidePlan | None
    moe: SidePlan | None
    counts: tuple = ()  # every GPU count the sides were planned on, fewest first
    batch_rule: str = DEFAULT_RULE  # the batch-size law sizing and limiting each layout's global batch

    @property
    def winner(self) -> SidePlan | None:
        """The side with the lower predicted loss (the dense one on a tie), or None unless both have a plan."""
        if self.dense is None or self.moe is None:
            return None
        return self.moe if self.moe.loss < self.dense.loss else self.dense


def _nearest_dense(params: float, seq_len: int, vocab: int) -> ModelSpec:
    return min((family_model(d, seq_len=seq_len, vocab=vocab) for d in DEPTHS),
               key=lambda m: abs(np.log(m.non_embedding_params / params)))


def _nearest_moe(active: float, granularity: float, experts: int, seq_len: int, vocab: int) -> tuple[ModelSpec, float]:
    """The family MoE whose active non-embedding parameters are nearest `active`, at the largest power-of-two
    granularity <= G that divides its expert width."""
    dense = _nearest_dense(active, seq_len, vocab)
    g = int(2 ** np.floor(np.log2(max(granularity, 1.0))))
    while g > 1 and dense.ffn_size % g:
        g //= 2
    return family_moe_model(dense.layers, experts=experts, top_k=1, granularity=g, seq_len=seq_len, vocab=vocab), float(g)


def _fitting(make, size, cluster, gpus, dtype, frameworks, tokens_guess, memo, batch_rule=DEFAULT_RULE):
    """The model make(size) or, where none of its layouts fits, make(0.7·size), make(0.49·size), ...: the
    budget's compute-optimal shape can outgrow the GPUs' memory (an MoE's total parameters above all)."""
    for tries in range(SHRINK_TRIES):
        model, g = make(size)
        search = search_layouts(model, cluster, gpus, tokens=tokens_guess, frameworks=frameworks, dtype=dtype,
                                batch_rule=batch_rule, memo=memo, only_fitting=True)
        if search.best is not None:
            return model, g, search, tries > 0
        size *= SHRINK
    return None


def _evaluate(kind, law, model, g, search, wall_s) -> tuple[SidePlan, float]:
    """The plan of `model` on its searched best layout for the whole wall-clock, and the compute it spends."""
    best = search.best
    tokens = float(search.tokens_per_s[best]) * search.goodput * wall_s
    n = model.non_embedding_params
    parts = model.params()
    active = model.total_active_params - parts["embedding"] - parts["logits"]
    at_g = law if kind == "dense" else law.with_granularity(g)
    loss = float(at_g.predict(n, tokens))
    compute = float(at_g.training_flops(n, tokens, active_params=active))  # 6ND dense, eq. 10 MoE
    warnings = at_g.extrapolation_warnings(n, tokens)
    plan = SidePlan(kind, model, search.layout(best), tokens, loss, g, float(search.step_time_s[best]),
                    float(search.tokens_per_s[best]), float(search.mfu[best]), list(warnings), law.name,
                    search.gpus, wall_s)
    return plan, compute


def _coarser(plan, compute, law, cluster, gpus, wall_s, dtype, frameworks, seq_len, vocab, memo,
             batch_rule=DEFAULT_RULE):
    """The MoE plan at G/2, G/4, ... of the same depth while its predicted loss falls. The law's optimal G
    ignores that narrower experts run slower GEMMs: on the cost model a finer G can train so many fewer
    tokens that a coarser one reaches the lower loss (G 32 -> 16 on 24 GPUs and 12,000 GPU-hours: 2.068 -> 2.026)."""
    experts = int(law.expansion_rate)
    while plan.granularity > 1:
        g = plan.granularity / 2
        model = family_moe_model(plan.model.layers, experts=experts, top_k=1, granularity=int(g), seq_len=seq_len,
                                 vocab=vocab)
        search = search_layouts(model, cluster, gpus, tokens=plan.tokens, frameworks=frameworks, dtype=dtype,
                                batch_rule=batch_rule, memo=memo, only_fitting=True)
        if search.best is None:
            break
        other, other_compute = _evaluate("moe", law, model, g, search, wall_s)
        if other.loss >= plan.loss:
            break
        plan, compute = other, other_compute
    return plan, compute


def _side(kind, law, cluster, gpus, wall_s, dtype, frameworks, seq_len, vocab, memo=None,
          batch_rule=DEFAULT_RULE) -> SidePlan | None:
    """The lowest predicted loss of the fixed point's rounds (module docstring); each round is a plan for the
    same GPUs and wall-clock, and the last is not always the best."""
    compute = gpus * cluster.peak_flops_per_s(dtype) * START_MFU * wall_s
    plan = None
    experts = int(getattr(law, "expansion_rate", 1))
    for _ in range(ROUNDS):
        if kind == "dense":
            size, d_opt = (float(x) for x in law.compute_optimal(compute))
            make = lambda n: (_nearest_dense(n, seq_len, vocab), 1.0)  # noqa: E731
        else:
            optimum = moe_compute_optimal(compute, law)
            size, d_opt = float(optimum["active_params"][0]), float(optimum["tokens"][0])
            g_opt = float(optimum["granularity"][0])
            make = lambda n, g_opt=g_opt: _nearest_moe(n, g_opt, experts, seq_len, vocab)  # noqa: E731
        found = _fitting(make, size, cluster, gpus, dtype, frameworks, d_opt, memo, batch_rule)
        if found is None:
            break
        *fitted, shrunk = found
        candidate, compute = _evaluate(kind, law, *fitted, wall_s)
        if kind == "moe":
            candidate, compute = _coarser(candidate, compute, law, cluster, gpus, wall_s, dtype, frameworks,
                                          seq_len, vocab, memo, batch_rule)
        candidate.shrunk = shrunk
        if plan is None or candidate.loss < plan.loss:
            plan = candidate
    return plan


def _best_side(kind, laws, counts, gpu_seconds, deadline_s, cluster, dtype, frameworks, seq_len, vocab,
               batch_rule=DEFAULT_RULE):
    """The side's best plan over its `laws` and GPU `counts` (fewest first). On a larger count a law is planned
    in full where its best plan so far was shrunk to fit memory (or it has none), or where that plan's own model
    trains on it to a clearly lower loss than the side's best (more memory, faster layouts); otherwise its fixed
    point is skipped (each costs as much as the fewest count's)."""
    best = dict.fromkeys(laws)
    for larger, count in enumerate(counts):
        wall = min(deadline_s, gpu_seconds / count)
        leader = min((plan.loss for plan in best.values() if plan is not None), default=np.inf)
        for law, plan in list(best.items()):
            if larger and plan is not None and not plan.shrunk and \
                    not _gains(plan, law, cluster, count, wall, dtype, frameworks, leader, batch_rule):
                continue
            # The rounds repeat their layout searches: a memo for this law and count (search_layouts), dropped after.
            other = _side(kind, law, cluster, count, wall, dtype, frameworks, seq_len, vocab, {}, batch_rule)
            if other is not None and (plan is None or other.loss < plan.loss):
                best[law] = other
    plans = [plan for plan in best.values() if plan is not None]
    return min(plans, key=lambda plan: plan.loss) if plans else None


def _gains(plan, law, cluster, gpus, wall_s, dtype, frameworks, leader, batch_rule=DEFAULT_RULE) -> bool:
    """Whether `plan`'s model trains to a lower loss on `gpus` for `wall_s` than it and the side's `leader`, by
    more than the losses optimize counts as equal (LOSS_TIE_RELATIVE, far inside the law's own uncertainty)."""
    search = search_layouts(plan.model, cluster, gpus, tokens=plan.tokens, frameworks=frameworks, dtype=dtype,
                            batch_rule=batch_rule, only_fitting=True)
    if search.best is None:
        return False
    other, _ = _evaluate(plan.kind, law, plan.model, plan.granularity, search, wall_s)
    return other.loss < min(plan.loss, leader) * (1.0 - LOSS_TIE_RELATIVE)


def spending_gpu_count(cluster: ClusterSpec, gpu_seconds: float, deadline_s: float, max_gpus: int | None = None) -> int:
    """The fewest GPUs (of the counts the search tries) that spend `gpu_seconds` within the deadline: the smallest
    count >= budget / deadline, which finishes at or before it. (The largest count below it runs the whole
    deadline and leaves the rest of the budget unspent: 8 GPUs x 30 days of a 10,000 GPU-hour budget used
    58% of it.) Under `max_gpus`, or where the cluster has fewer, the largest count there is."""
    counts = gpu_counts(cluster.gpus_per_node, cluster.max_nodes, None, max_gpus)
    enough = [g for g in counts if g * deadline_s >= gpu_seconds]
    return min(enough) if enough else max(counts)


def comparison_gpu_counts(cluster: ClusterSpec, gpu_seconds: float, deadline_s: float,
                          max_gpus: int | None = None) -> list[int]:
    """The GPU counts each side is planned on: the fewest that spend the budget by the deadline, then by each
    shorter DEADLINE_FRACTIONS of it (a plan that finishes early meets the deadline too), distinct, fewest first."""
    counts = {spending_gpu_count(cluster, gpu_seconds, deadline_s * f, max_gpus) for f in DEADLINE_FRACTIONS}
    return sorted(counts)


def compare_dense_moe(cluster: ClusterSpec, gpu_seconds: float, deadline_s: float, *, dtype: str | None = None,
                      frameworks=("megatron",), seq_len: int = 4096, vocab: int = 32000,
                      gpus: int | None = None, max_gpus: int | None = None,
                      batch_rule: str = DEFAULT_RULE) -> MoEComparison:
    """Best dense and best MoE plan for a GPU-time budget and a deadline (module docstring); `dtype` None: the
    cluster's own training format (ClusterSpec.default_training_dtype). `batch_rule`: the batch-size law that
    sizes and limits each layout's global batch (planner.laws.batch_size), as in the budget search."""
    dtype = dtype or cluster.default_training_dtype
    if not gpu_seconds or gpu_seconds <= 0:
        raise PlannerInputError("--moe: give --budget (GPU-hours or money) to compare dense and MoE plans")
    counts = [gpus] if gpus is not None else comparison_gpu_counts(cluster, gpu_seconds, deadline_s, max_gpus)

    best = lambda kind, laws: _best_side(kind, laws, counts, gpu_seconds, deadline_s, cluster, dtype,  # noqa: E731
                                         tuple(frameworks), seq_len, vocab, batch_rule)
    dense = best("dense", (KRAJEWSKI_2024_DENSE,))
    # Both published expansion rates (E = 64, Table 1; E = 16, Table 8): the lower predicted loss wins.
    moe = best("moe", (KRAJEWSKI_2024, KRAJEWSKI_2024_E16))
    return MoEComparison(cluster, counts[0], min(deadline_s, gpu_seconds / counts[0]), gpu_seconds, dense, moe,
                         tuple(counts), batch_rule)
