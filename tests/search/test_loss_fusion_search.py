"""The searches plan with a stack's fused cross-entropy when asked (--loss-fusion).

Megatron-Core's Transformer Engine loss holds 2 bytes per token and vocabulary entry where its default path holds 6
(planner/frameworks/megatron.py; profiles/loss-memory-cpu.json). A Llama 3 8B (vocabulary 128,256) on 8 A100-40GB at
a 64-sequence batch: unfused, Megatron's fastest layout that fits is tp4 (16.90 s); fused, tp2 fits too and is faster
(16.81 s). Stacks without a fused loss (DeepSpeed, FSDP) run theirs as before, and the flag is refused where no
searched stack has one.
"""

from __future__ import annotations

import json

import pytest

from planner.cost.estimate import simulate
from planner.frameworks import FRAMEWORKS
from planner.search.layouts import search_layouts
from planner.specs.clusters import load_cluster
from planner.specs.model import preset

MODEL = preset("llama3-8b")
A100_40GB = load_cluster("dgx-a100-40gb")


def _search(loss_fusion: bool, frameworks=("megatron",)):
    return search_layouts(MODEL, A100_40GB, 8, global_batch=64, frameworks=frameworks, loss_fusion=loss_fusion)


def test_fused_loss_fits_a_faster_layout_than_the_unfused_search_can():
    plain, fused = _search(False), _search(True)
    chosen = fused.layout(fused.best)
    assert chosen.loss_fusion
    assert fused.step_time_s[fused.best] < plain.step_time_s[plain.best] * 0.999
    # The same layout with Megatron's default loss does not fit: the fused loss is what lets it run.
    unfused = simulate(MODEL, chosen.model_copy(update={"loss_fusion": False}), A100_40GB)
    assert not unfused["fits"]
    assert simulate(MODEL, chosen, A100_40GB)["fits"]


def test_the_fused_layouts_loss_is_priced_at_the_stacks_fused_bytes():
    fused = _search(True)
    chosen = fused.layout(fused.best)
    on = simulate(MODEL, chosen, A100_40GB)["memory"]["logits"]
    off = simulate(MODEL, chosen.model_copy(update={"loss_fusion": False}), A100_40GB)["memory"]["logits"]
    megatron = FRAMEWORKS["megatron"]
    assert on / off == pytest.approx(megatron.fused_loss_bytes_per_logit / megatron.loss_bytes_per_logit, rel=1e-9)
    assert float(fused.memory_bytes[fused.best]) == pytest.approx(
        simulate(MODEL, chosen, A100_40GB)["memory"]["total_bytes"], rel=1e-9)


def test_only_stacks_with_a_fused_loss_run_it():
    found = _search(True, frameworks=("megatron", "deepspeed", "fsdp"))
    rows = found.rows()
    assert {row["framework"] for row in rows} == {"megatron", "deepspeed", "fsdp"}
    assert all(row["loss_fusion"] == (FRAMEWORKS[row["framework"]].fused_loss_bytes_per_logit > 0) for row in rows)
    assert "loss_fusion" not in _search(False).rows([0])[0]  # other searches' rows (and CSVs) read as before


def test_budget_plan_runs_and_emits_the_fused_loss(cli, tmp_path):
    out = tmp_path / "launch"
    code, stdout, stderr = cli(["optimize", "--budget", "2000gpuh", "--framework", "megatron", "--vocab", "128256",
                                "--loss-fusion", "--json", "--emit", out, "--quiet"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["plan"]["layout"]["loss_fusion"] is True
    assert result["assumptions"]["loss_fusion"] is True
    args = (out / "megatron_args.txt").read_text().split()
    assert "--cross-entropy-loss-fusion" in args and args[args.index("--cross-entropy-fusion-impl") + 1] == "te"


@pytest.mark.parametrize("flags, named", [
    (("--budget", "2000gpuh", "--framework", "deepspeed,fsdp"), "none of the stacks searched (deepspeed, fsdp)"),
    (("--model", "llama3-8b", "--tokens", "1T", "--gpus", "64", "--framework", "fsdp"), "none of the stacks searched (fsdp)"),
    (("--moe", "--budget", "2000gpuh"), "does not apply to --moe"),
])
def test_loss_fusion_refused_where_it_would_change_nothing(cli, flags, named):
    code, stdout, stderr = cli(["optimize", *flags, "--loss-fusion"])
    assert code == 2
    assert "--loss-fusion" in stderr and named in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert stdout == ""


def test_the_reviews_scaling_table_keeps_the_plans_fused_loss():
    """The review's fastest layout at each GPU count (report.review.mfu_by_gpu_count) runs the plan's own loss: with
    the plan's fused loss a 6B model at vocabulary 128,256 holds micro-batch 4 under ZeRO-2 at 16-128 GPUs, where
    the unfused loss leaves it micro-batch 2."""
    import copy

    from planner.laws.registry import DEFAULT_LAW, load_law
    from planner.report.review import mfu_by_gpu_count
    from planner.search.budget import build_constraints
    from planner.search.optimize import optimize

    h100 = load_cluster("dgx-h100")
    law = load_law(DEFAULT_LAW, None)
    constraints = build_constraints(budget="2000gpuh", deadline=None, gpus=None, max_gpus=None, unique_tokens=None,
                                    target_loss=None, inference_tokens=None, price_per_gpu_hour=None,
                                    cluster_name=h100.name, min_headroom=0.0)
    plan = optimize(h100, law, constraints, vocab=128256, frameworks=("megatron",), loss_fusion=True).plan
    assert plan["layout"]["loss_fusion"]
    unfused = copy.deepcopy(plan)
    unfused["layout"]["loss_fusion"] = False
    fused_rows, plain_rows = (mfu_by_gpu_count(h100, law, constraints, p, "bf16", "step-law", 4096, 128256)
                              for p in (plan, unfused))
    assert all("fused-loss" in row["layout"] for row in fused_rows if row["feasible"])
    assert not any("fused-loss" in row["layout"] for row in plain_rows if row["feasible"])
    gains = [f["mfu"] - p["mfu"] for f, p in zip(fused_rows, plain_rows) if f["feasible"] and p["feasible"]]
    assert min(gains) >= -1e-12 and max(gains) > 0.002


def test_fixed_model_plan_names_the_fused_loss(cli):
    code, stdout, stderr = cli(["optimize", "--model", "llama3-8b", "--tokens", "100B", "--gpus", "8", "--global-batch",
                                "64", "--cluster", "dgx-a100-40gb", "--framework", "megatron", "--loss-fusion", "--quiet"])
    assert code == 0, stderr
    chosen = stdout.split("chosen:")[1].splitlines()[1]
    assert chosen.strip().startswith("layout") and "megatron tp2" in chosen and "fused-loss" in chosen
