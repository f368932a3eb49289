"""The budget search plans for the training stacks asked for (--framework), as the fixed-model search does:
every candidate is one its stack runs, the plan names its stack, and --emit writes that stack's launch files.
(Before, the budget search planned for the neutral 'other' stack whatever --framework said.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from planner.frameworks import FRAMEWORK_NAMES, FRAMEWORKS, unsupported_features
from planner.search.budget import build_constraints
from planner.search.layouts import DEFAULT_FRAMEWORKS
from planner.search.optimize import optimize
from planner.search.space import enumerate_space, family_models
from planner.specs.clusters import load_cluster
from planner.specs.candidate_batch import OFFLOAD_CODES, RECOMPUTE_CODES
from planner.specs.layout import make_layout
from planner.specs.layout_checks import check_layout
from planner.laws.registry import load_law


@pytest.fixture(scope="module")
def models():
    return family_models(4096, 32000, 1e9, 12e9)[::4]


def _layouts(space, rows):
    a = space.arrays
    for i in rows:
        yield make_layout(
            "x", tp=int(a["tp"][i]), pp=int(a["pp"][i]), dp=int(a["dp"][i]), vpp=int(a["vpp"][i]), cp=int(a["cp"][i]),
            zero=int(a["zero"][i]), offload=list(OFFLOAD_CODES)[int(a["offload"][i])],
            # pp micro-batches a step: the fewest the scored batch gives an interleaved Megatron row (score.py)
            micro_batch=int(a["micro_batch"][i]), global_batch=int(a["micro_batch"][i] * a["dp"][i] * a["pp"][i]),
            recompute=list(RECOMPUTE_CODES)[int(a["recompute"][i])], seq_parallel=bool(a["seq_parallel"][i]),
            framework=FRAMEWORK_NAMES[int(a["framework"][i])], dp_comm_overlap=bool(a["dp_comm_overlap"][i]),
            tp_comm_overlap=bool(a["tp_comm_overlap"][i]), zero_hpz=int(a["zero_hpz"][i]),
            shard_group=int(a["shard_group"][i]) or None)


def test_every_candidate_is_one_its_stack_runs(models):
    """Each row of a three-stack space passes its stack's own check (planner.frameworks.unsupported_features),
    sampled across the space; each stack is present."""
    space = enumerate_space(models, [64, 256], 8, frameworks=DEFAULT_FRAMEWORKS)
    codes = space.arrays["framework"]
    assert {FRAMEWORK_NAMES[c] for c in np.unique(codes)} == set(DEFAULT_FRAMEWORKS)
    rows = np.random.default_rng(0).choice(len(space), 3000, replace=False)
    for layout in _layouts(space, rows):
        assert unsupported_features(layout.framework, layout) == [], layout


def test_no_stack_is_given_a_layout_check_layout_refuses(models):
    """A space over every stack, in a dtype each trains in: sampled rows pass check_layout (the rule simulate applies),
    and each stack gets exactly its recompute modes (the search gave torchtitan selective recompute, which
    check_layout and its launch files refuse)."""
    space = enumerate_space(models, [8, 64], 8, frameworks=FRAMEWORK_NAMES)
    a = space.arrays
    stack = np.array(FRAMEWORK_NAMES)[a["framework"]]
    for name in FRAMEWORK_NAMES:
        offered = {list(RECOMPUTE_CODES)[r] for r in np.unique(a["recompute"][stack == name]).tolist()}
        assert offered == set(FRAMEWORKS[name].recompute_modes), name
    rows = np.random.default_rng(1).choice(len(space), 2000, replace=False)
    for i, layout in zip(rows, _layouts(space, rows)):
        dtype = "bf16" if "bf16" in FRAMEWORKS[layout.framework].dtypes else "fp16"
        check_layout(models[a["model_index"][i]], layout.model_copy(update={"dtype": dtype}), gpus=int(a["gpus"][i]))


def test_stack_capabilities_shape_the_space(models):
    space = enumerate_space(models, [256], 8, frameworks=DEFAULT_FRAMEWORKS)
    a = space.arrays
    stack = np.array([FRAMEWORK_NAMES[c] for c in a["framework"]])
    # ZeRO++ hpZ only on DeepSpeed; MiCS / HSDP shard groups only where the stack has them.
    assert np.all(np.isin(stack[a["zero_hpz"] > 1], [n for n in DEFAULT_FRAMEWORKS if FRAMEWORKS[n].zeropp]))
    assert set(stack[a["zero_hpz"] > 1]) == {"deepspeed"}
    assert np.all(np.isin(stack[a["shard_group"] > 0], [n for n in DEFAULT_FRAMEWORKS if FRAMEWORKS[n].shard_groups]))
    # Pipelining with data parallelism: ZeRO-1 at most on Megatron and DeepSpeed; torchtitan shards each stage
    # (ZeRO-2/3; no ZeRO-1, and replicated DP only alone).
    piped = (a["pp"] > 1) & (a["dp"] > 1)
    for name in ("megatron", "deepspeed"):
        assert np.all(a["zero"][piped & (stack == name)] <= 1)
    assert set(a["zero"][piped & (stack == "fsdp")].tolist()) == {2, 3}
    # Every stack's rows carry its gradient-reduce overlap; Megatron's TP overlap stays at its default (off).
    # (DeepSpeed's ZeRO-0 and its pipeline engine have none: frameworks/deepspeed.py reduce_overlaps_at_zero0,
    # reduce_overlaps_with_pipeline.)
    no_overlap = (stack == "deepspeed") & ((a["zero"] == 0) | (a["pp"] > 1))
    assert np.any(no_overlap & (a["pp"] > 1) & (a["zero"] == 1))
    assert np.all(a["dp_comm_overlap"] != no_overlap) and not np.any(a["tp_comm_overlap"][stack == "megatron"])


def test_one_stack_alone_is_the_neutral_space_unchanged(models):
    """The neutral stack alone gives the space the budget search used before stacks were searched."""
    other = enumerate_space(models, [64, 256], 8)
    assert set(FRAMEWORK_NAMES[c] for c in np.unique(other.arrays["framework"])) == {"other"}
    both = enumerate_space(models, [64, 256], 8, frameworks=("other", "megatron"))
    assert len(both) > len(other)


@pytest.fixture(scope="module")
def budget():
    cluster = load_cluster("dgx-h100")
    constraints = build_constraints(budget="3000gpuh", deadline=None, gpus=None, max_gpus=None, unique_tokens=None,
                                    target_loss=None, inference_tokens=None,
                                    price_per_gpu_hour=cluster.price_per_accelerator_hour, cluster_name=cluster.name,
                                    min_headroom=0.0)
    return cluster, load_law("epoch", None), constraints


@pytest.mark.parametrize("stack", DEFAULT_FRAMEWORKS)
def test_budget_plan_is_for_the_stack_asked(budget, stack):
    cluster, law, constraints = budget
    result = optimize(cluster, law, constraints, frameworks=(stack,))
    assert result.status == "ok" and result.assumptions["frameworks"] == [stack]
    assert result.plan["layout"]["framework"] == stack
    assert all(alt["layout"]["framework"] == stack for alt in result.alternatives)


def test_more_stacks_never_plan_worse(budget):
    """The search is exact over its space, and three stacks' space holds each one's: the plan's loss is at most
    each single stack's (within the 0.1% tie tolerance)."""
    cluster, law, constraints = budget
    together = optimize(cluster, law, constraints, frameworks=DEFAULT_FRAMEWORKS).plan["predicted_loss"]
    for stack in DEFAULT_FRAMEWORKS:
        alone = optimize(cluster, law, constraints, frameworks=(stack,)).plan["predicted_loss"]
        assert together <= alone * (1 + 1e-3)


def test_cli_budget_honours_framework_and_emits_its_launch(cli, tmp_path):
    code, out, err = cli(["optimize", "--budget", "3000gpuh", "--framework", "fsdp", "--json", "--quiet",
                          "--emit", tmp_path / "launch"])
    assert code == 0, err
    plan = json.loads(out)["plan"]
    assert plan["layout"]["framework"] == "fsdp"
    assert sorted(p.name for p in (tmp_path / "launch").iterdir()) == ["job_config.toml", "launch.sh"]
    code, out, err = cli(["optimize", "--budget", "3000gpuh", "--framework", "megatron", "--quiet"])
    assert code == 0 and "layout     megatron (overlaps: gradient reduce): tp=" in out


def test_cli_budget_emit_refuses_a_stack_without_launcher_before_searching(cli, tmp_path):
    code, out, err = cli(["optimize", "--budget", "3000gpuh", "--framework", "megatron,other", "--emit",
                          tmp_path / "launch"])
    assert code == 2 and out == "" and "--emit" in err and "other" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "launch").exists()


@pytest.mark.parametrize("flag, value", [("--tokens", "1T"), ("--global-batch", "512"), ("--knee", "0.5"),
                                         ("--all-layouts", "all.csv"), ("--moe-load-imbalance", "1.5")])
def test_cli_budget_refuses_fixed_model_flags(cli, tmp_path, flag, value):
    """Flags of the fixed-model search are refused in budget mode (they were ignored: --all-layouts wrote
    nothing, --tokens and --global-batch changed nothing)."""
    code, out, err = cli(["optimize", "--budget", "3000gpuh", flag, tmp_path / value if flag == "--all-layouts" else value])
    assert code == 2 and out == "" and flag in err and "--model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "all.csv").exists()


def test_interleaved_megatron_rows_get_at_least_pp_micro_batches():
    """Megatron's interleaved schedule needs pp micro-batches a step (schedules.py:1160-1168): the budget search
    gave tp8 pp2 vpp2 rows the law's batch of one micro-batch, a layout Megatron refuses to run."""
    from planner.search.score import global_batch_sequences
    from planner.frameworks import FRAMEWORK_CODES

    class Problem:  # what global_batch_sequences reads of the search problem
        pass

    arrays = {"model_index": np.zeros(4, dtype=int), "gpus": np.full(4, 64), "micro_batch": np.ones(4),
              "dp": np.full(4, 4), "pp": np.array([2, 2, 8, 8]), "vpp": np.array([2, 1, 2, 2]),
              "framework": np.array([FRAMEWORK_CODES["megatron"]] * 3 + [FRAMEWORK_CODES["fsdp"]])}
    import planner.search.score as score
    original = score.batch_tokens_estimate
    try:
        score.batch_tokens_estimate = lambda problem, mi, gpus: np.full(len(mi), 1e6)
        problem = Problem()
        problem.nonembedding_params, problem.batch_rule = np.array([1e8]), "step-law"
        from planner.laws import batch_size
        tiny = float(batch_size.optimal_batch_tokens(np.array([1e6]), np.array([1e8]), "step-law")[0])
        seq_len = np.full(4, tiny)  # one sequence is the whole optimal batch: the law asks for 1 micro-batch / dp
        batch = global_batch_sequences(problem, arrays, seq_len)
    finally:
        score.batch_tokens_estimate = original
    steps = batch / (arrays["micro_batch"] * arrays["dp"])
    assert steps.tolist() == [2, 1, 8, 1]  # interleaved Megatron rows at pp; vpp 1 and torchtitan as the law says


def test_an_fp32_space_has_no_context_parallel_row_on_unfused_attention(models):
    """Helper-found: the budget space was enumerated as if in bf16 whatever the dtype, so in fp32 it kept Megatron rows
    with cp > 1, which Megatron runs only on fused attention (none in fp32: frameworks.flash_attention_by_default); the
    plan then failed its own check_layout and `optimize --budget 3000gpuh --dtype fp32` on dgx-h100 exited 2. Every
    sampled fp32 row passes its stack's check, and Megatron keeps its cp > 1 rows in bf16."""
    fp32 = enumerate_space(models, [64, 256], 8, frameworks=("megatron",), dtype="fp32")
    bf16 = enumerate_space(models, [64, 256], 8, frameworks=("megatron",))
    assert np.any(bf16.arrays["cp"] > 1) and not np.any(fp32.arrays["cp"] > 1)
    rows = np.random.default_rng(1).choice(len(fp32), 500, replace=False)
    for layout in _layouts(fp32, rows):
        layout = layout.model_copy(update={"dtype": "fp32"})
        assert unsupported_features(layout.framework, layout) == [], layout


def test_the_budget_search_plans_in_fp32_on_hopper(budget):
    cluster, law, constraints = budget
    result = optimize(cluster, law, constraints, dtype="fp32", frameworks=("megatron",))
    assert result.status == "ok" and result.plan["layout"]["dtype"] == "fp32"
