"""optimize --budget B --moe: the best dense and the best MoE plan side by side under one pair of laws."""

import json

import numpy as np
import pytest

from planner.specs.clusters import load_cluster
from planner.laws.moe import KRAJEWSKI_2024_DENSE
from planner.search.moe_budget import compare_dense_moe


@pytest.fixture
def optimize(cli):
    """optimize(*argv) -> (exit code, stdout, stderr) of `planner optimize ...` (the shared `cli` runner)."""
    return lambda *argv: cli(["optimize", *argv])


def test_budget_moe_json_compares_both_sides(optimize):
    code, out, _ = optimize("--budget", "20000gpuh", "--moe", "--json")
    assert code == 0
    result = json.loads(out)
    dense, moe = result["dense"], result["moe"]
    assert dense["experts"] == 0 and moe["experts"] > 0
    assert moe["active_params"] < moe["params"] and dense["active_params"] == dense["params"]
    assert result["winner"] in ("dense", "moe")
    assert result["loss_difference"] == pytest.approx(dense["predicted_loss"] - moe["predicted_loss"])
    assert result["gpu_hours"] <= 20000 * (1 + 1e-9)
    # The dense side is the law's own prediction at the plan's shape and tokens.
    n = dense["params"] - 2 * 32000 * dense["hidden"]
    assert dense["predicted_loss"] == pytest.approx(float(KRAJEWSKI_2024_DENSE.predict(n, dense["tokens"])), rel=1e-9)


def test_budget_moe_text_names_the_winner(optimize):
    code, out, _ = optimize("--budget", "20000gpuh", "--moe")
    assert code == 0
    assert "predicted loss" in out and "inference GFLOP/token" in out
    assert ("MoE wins by" in out) or ("dense wins by" in out)


@pytest.mark.parametrize("argv, key", [
    (["--moe"], "--budget"),
    (["--budget", "1000gpuh", "--moe", "--law", "epoch"], "--law"),
    (["--budget", "1000gpuh", "--moe", "--model", "mixtral-8x7b"], "--model"),
    # Flags of a single plan's search are refused, not ignored (they were ignored before).
    (["--budget", "1000gpuh", "--moe", "--emit", "launch"], "--emit"),
    (["--budget", "1000gpuh", "--moe", "--report", "r.html"], "--report"),
    (["--budget", "1000gpuh", "--moe", "--tokens", "1T"], "--tokens"),
    (["--budget", "1000gpuh", "--moe", "--flat-zero"], "--flat-zero"),
    # Helper-found: planned on 1,024 GPUs past --max-gpus 256, and on the first count of a list silently.
    (["--budget", "100000gpuh", "--moe", "--gpus", "1024", "--max-gpus", "256"], "--max-gpus 256"),
    (["--budget", "100000gpuh", "--moe", "--gpus", "256-8192"], "--gpus"),
])
def test_budget_moe_bad_input_is_one_line(optimize, argv, key):
    code, _, err = optimize(*argv)
    assert code == 2 and key in err and len(err.strip().splitlines()) == 1


def test_more_budget_never_worse_on_either_side():
    cluster = load_cluster("dgx-h100")
    small = compare_dense_moe(cluster, 5_000 * 3600.0, 30 * 86400.0)
    large = compare_dense_moe(cluster, 50_000 * 3600.0, 30 * 86400.0)
    for kind in ("dense", "moe"):
        a, b = getattr(small, kind), getattr(large, kind)
        assert np.isfinite(a.loss) and np.isfinite(b.loss)
        assert b.loss <= a.loss + 1e-9


@pytest.mark.parametrize("budget_hours", [10_000, 20_000])
def test_the_whole_budget_is_spent_by_the_deadline(budget_hours):
    """The fewest GPUs that spend the budget within the 30 days (it took the most GPUs that fit under budget /
    deadline instead, and left 42% of a 10,000 GPU-hour budget unspent on 8 GPUs)."""
    cluster, deadline = load_cluster("dgx-h100"), 30 * 86400.0
    result = compare_dense_moe(cluster, budget_hours * 3600.0, deadline)
    assert result.gpus * result.wall_s == pytest.approx(budget_hours * 3600.0, rel=1e-9)
    assert result.wall_s <= deadline
    fewer = max(g for g in (1, 2, 4, 8, 16, 32, 64, 128, 256) if g < result.gpus)
    assert fewer * deadline < budget_hours * 3600.0  # one count down could not have spent it


def test_max_gpus_caps_the_moe_comparison(optimize):
    """--max-gpus was ignored (256 GPUs under --max-gpus 64); under the cap the deadline binds and the header
    says how much of the budget is spent."""
    code, out, _ = optimize("--budget", "200000gpuh", "--moe", "--max-gpus", "64", "--json")
    result = json.loads(out)
    assert code == 0 and result["gpus"] == 64
    for side in ("dense", "moe"):
        layout = result[side]["layout"]
        assert layout["tp"] * layout["pp"] * layout["dp"] * layout["cp"] == 64
    assert result["gpu_hours"] == pytest.approx(64 * 30 * 24)
    code, out, _ = optimize("--budget", "200000gpuh", "--moe", "--max-gpus", "64")
    assert code == 0 and "(spends 46,080 of them" in out.splitlines()[0]



def test_moe_granularity_is_chosen_on_the_cost_model_not_the_law_alone():
    """20% more budget gave a worse MoE (2.054 at 10,000 GPU-hours, 2.068 at 12,000): the law's optimal G jumped
    16 -> 32 and 512 experts of width ffn/32 ran at 19% MFU where G 16 ran at 28% (2.026 on the same GPUs).
    The MoE side now keeps a coarser G of the same depth where it trains to the lower loss."""
    cluster, deadline = load_cluster("dgx-h100"), 30 * 86400.0
    small = compare_dense_moe(cluster, 10_000 * 3600.0, deadline).moe
    large = compare_dense_moe(cluster, 12_000 * 3600.0, deadline).moe
    assert large.loss <= small.loss
    assert large.loss < 2.026  # at least as good as G 16 at the old plan's depth on the same 24 GPUs


def test_comparison_layout_names_every_parallel_dimension():
    """The side-by-side table printed 'tp16 pp6 dp8 z1 mb4 ep16' for a plan on 1,536 GPUs: 16 x 6 x 8 = 768, its
    cp 2 (and vpp 11, etp 1) left out. The layout text names each dimension that is used."""
    from planner.report.review import moe_comparison
    from planner.search.moe_budget import MoEComparison, SidePlan
    from planner.specs.layout import Layout
    from planner.specs.model import family_model, family_moe_model

    moe_layout = Layout(tp=16, pp=6, cp=2, dp=8, vpp=11, zero=1, micro_batch=4, global_batch=1248, ep=16, etp=1)
    dense_layout = Layout(tp=8, pp=4, dp=48, vpp=19, zero=1, micro_batch=4, global_batch=2112)
    moe = SidePlan("moe", family_moe_model(66, experts=16, granularity=32), moe_layout, 1e12, 1.7, 32.0, 7.6, 6e5, 0.15)
    dense = SidePlan("dense", family_model(76), dense_layout, 3e12, 1.8, 1.0, 5.5, 1.5e6, 0.6)
    view = moe_comparison(MoEComparison(load_cluster("dgx-h100"), 1536, 86400.0, 1536 * 86400.0, dense, moe))
    row = next(row for row in view["rows"] if row[0] == "layout")
    layouts = dict(zip(view["kinds"], row[1:]))
    assert layouts["moe"] == "other tp16 pp6 vpp11 cp2 dp8 z1 mb4 ep16 etp1"
    assert layouts["dense"] == "other tp8 pp4 vpp19 dp48 z1 mb4"


def test_comparison_layout_names_the_stack_and_what_changes_its_time():
    """The side-by-side table printed 'tp1 pp1 dp32 z2 mb1 ep16' for optimize --budget 10000gpuh --moe, whose JSON
    says Megatron with its all-to-all overlap: the stack, the overlap, recompute, sequence parallelism and the
    ZeRO-3 hierarchy change the step time, so the row names them as the fixed-model tables do."""
    from planner.report.review import moe_comparison
    from planner.search.moe_budget import MoEComparison, SidePlan
    from planner.specs.layout import Layout
    from planner.specs.model import family_model, family_moe_model

    moe_layout = Layout(tp=2, dp=16, zero=2, micro_batch=1, global_batch=480, ep=16, etp=1, framework="megatron",
                        moe_a2a_overlap="megatron", recompute="selective", seq_parallel=True)
    dense_layout = Layout(dp=16, zero=3, micro_batch=2, global_batch=480, framework="deepspeed", zero_hpz=8)
    moe = SidePlan("moe", family_moe_model(36, experts=16, granularity=4), moe_layout, 1e12, 2.0, 4.0, 7.6, 6e5, 0.45)
    dense = SidePlan("dense", family_model(36), dense_layout, 1e12, 2.3, 1.0, 7.6, 6e5, 0.6)
    view = moe_comparison(MoEComparison(load_cluster("dgx-h100"), 32, 86400.0, 32 * 86400.0, dense, moe))
    row = next(row for row in view["rows"] if row[0] == "layout")
    layouts = dict(zip(view["kinds"], row[1:]))
    assert layouts["moe"] == "megatron tp2 pp1 dp16 z2 mb1 ep16 etp1 a2a-overlap=megatron rc-selective sp"
    assert layouts["dense"] == "deepspeed tp1 pp1 dp16 z3 mb2 hpZ8"


def test_a_longer_deadline_never_gives_a_worse_plan():
    """The comparison ran both sides on the fewest GPUs that spend the budget by the deadline: a longer deadline
    meant fewer GPUs, less memory, a smaller MoE and a worse loss (100,000 GPU-hours: 1.773 on 96 GPUs by 60
    days, 1.782 on 48 by 90; here 1,000 GPU-hours: 2.322 on 4 GPUs by 20 days, 2.345 on 2 by 40). Each side now
    also tries the counts that finish by a shorter deadline, which the longer one allows too."""
    cluster, budget = load_cluster("dgx-h100"), 1_000 * 3600.0
    short = compare_dense_moe(cluster, budget, 20 * 86400.0, max_gpus=4)
    long = compare_dense_moe(cluster, budget, 40 * 86400.0, max_gpus=4)
    for kind in ("dense", "moe"):
        assert getattr(long, kind).loss <= getattr(short, kind).loss + 1e-9, kind
    assert long.moe.gpus * long.moe.wall_s == pytest.approx(budget, rel=1e-9)  # on its own count, all spent


def test_top_level_gpus_and_wall_clock_are_the_winners(optimize):
    """The top-level "gpus" and "wall_clock_s" were the fewest GPU count tried (4 for 2,000 GPU-hours), which
    neither side's plan need use (the MoE won on 16): they now describe the winner's plan."""
    code, out, _ = optimize("--budget", "2000gpuh", "--moe", "--json")
    result = json.loads(out)
    assert code == 0 and result["winner"] in ("dense", "moe")
    won = result[result["winner"]]
    assert (result["gpus"], result["wall_clock_s"]) == (won["gpus"], won["wall_clock_s"])
    assert result["gpu_hours"] == pytest.approx(won["gpus"] * won["wall_clock_s"] / 3600.0)
    tried = result["gpu_counts_tried"]
    assert won["gpus"] in tried and tried == sorted(tried) and tried[0] < won["gpus"]


def test_moe_json_has_schema_version_and_status(optimize):
    """Every --json is one object with a top-level schema_version (README); --moe's lacked it and `status`."""
    from planner.cli.moe_budget import result_json
    from planner.search.moe_budget import MoEComparison, SidePlan
    from planner.specs.model import family_model

    code, out, _ = optimize("--budget", "2000gpuh", "--moe", "--gpus", "8", "--json")
    result = json.loads(out)
    assert code == 0 and result["schema_version"] == 1 and result["status"] == "ok"
    # A side with no plan (exit 1): infeasible, and no single plan for the top level to describe.
    dense = SidePlan("dense", family_model(12), None, 1e9, 3.0, 1.0, 0.1, 1e5, 0.4, gpus=8, wall_s=3600.0)
    alone = result_json(MoEComparison(load_cluster("dgx-h100"), 8, 3600.0, 8 * 3600.0, dense, None, (8,)))
    assert alone["status"] == "infeasible" and alone["winner"] is None and alone["gpus"] is None
    assert alone["gpu_counts_tried"] == [8] and alone["dense"]["gpus"] == 8


def test_batch_rule_reaches_the_moe_comparison(optimize):
    """--batch-rule was silently ignored with --moe: each layout's global batch is sized by the rule given."""
    batches = {}
    for rule in ("step-law", "deepseek"):
        code, out, _ = optimize("--budget", "2000gpuh", "--moe", "--gpus", "8", "--batch-rule", rule, "--json")
        result = json.loads(out)
        assert code == 0 and result["batch_rule"] == rule
        batches[rule] = [result[side]["layout"]["global_batch"] for side in ("dense", "moe")]
    assert batches["step-law"] != batches["deepseek"]


def test_comparison_rows_show_short_runs_and_small_models_readably():
    """`optimize --budget 1gpuh --moe` printed 'GPUs 1 for 0.0 days' and 'inference GFLOP/token 0' on both sides."""
    from planner.report.review import moe_comparison
    from planner.search.moe_budget import MoEComparison, SidePlan
    from planner.specs.model import family_model, family_moe_model

    from planner.specs.layout import Layout

    dense = SidePlan("dense", family_model(7), Layout(micro_batch=32, global_batch=32), 1.77e9, 3.9, 1.0, 0.27, 6e5,
                     0.37, gpus=1, wall_s=3600.0)
    moe = SidePlan("moe", family_moe_model(7, experts=64, granularity=8), Layout(micro_batch=8, global_batch=8), 9.5e8,
                   3.5, 8.0, 0.62, 3e5, 0.2, gpus=1, wall_s=3600.0)
    view = moe_comparison(MoEComparison(load_cluster("dgx-h100"), 1, 3600.0, 3600.0, dense, moe, (1,)))
    rows = {row[0]: row[1:] for row in view["rows"]}
    assert rows["GPUs"] == ("1 for 1 h", "1 for 1 h")
    flops = [float(v) for v in rows["inference GFLOP/token"]]
    assert flops == pytest.approx([s.inference_flops_per_token / 1e9 for s in (dense, moe)], rel=5e-3)


def test_a_side_with_no_plan_names_every_count_tried():
    """'no MoE model ... fits a layout on 4 GPUs' named the fewest count, though the larger ones were tried too."""
    from planner.report.review import moe_comparison
    from planner.search.moe_budget import MoEComparison, SidePlan
    from planner.specs.layout import Layout
    from planner.specs.model import family_model

    dense = SidePlan("dense", family_model(12), Layout(dp=16, micro_batch=1, global_batch=64), 1e9, 3.0, 1.0, 0.1,
                     1e5, 0.4, gpus=16, wall_s=3600.0)
    view = moe_comparison(MoEComparison(load_cluster("dgx-h100"), 4, 4 * 3600.0, 16 * 3600.0, dense, None, (4, 8, 16)))
    assert view["missing"] == ["no MoE model of the family fits a layout on up to 16 GPUs"]
