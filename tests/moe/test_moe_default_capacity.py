"""Each stack's default MoE routing is data (frameworks.moe.MoEStack.capacity_factor, pads_to_capacity): DeepSpeed's
MoE layer drops tokens at capacity factor 1.0 and pads every expert's input to the capacity, Megatron-Core is
dropless. A layout that names no capacity factor is priced at its stack's default; one that names it, as named."""

import inspect
import json

import numpy as np
import pytest

from planner.cli import main
from planner.frameworks.moe import MOE_STACKS
from planner.search.layouts import search_layouts
from planner.specs.clusters import load_cluster
from planner.specs.model import PRESETS

LAYOUT = ["--model", "mixtral-8x7b", "--cluster", "dgx-h100", "--gpus", "64", "--pp", "4", "--ep", "8",
          "--global-batch", "256", "--recompute", "full", "--zero", "1"]
IMBALANCE = ["--moe-load-imbalance", "1.3"]  # above every cap tried here, so a cap shows in the step time


def _simulate(capsys, *flags, text=False) -> dict | str:
    code = main(["simulate", *LAYOUT, *flags, *([] if text else ["--json"])])
    out = capsys.readouterr().out
    assert code == 0
    return out if text else json.loads(out)


def test_deepspeed_row_holds_its_moe_layer_defaults():
    layer = pytest.importorskip("deepspeed.moe.layer")
    parameters = inspect.signature(layer.MoE.__init__).parameters
    assert parameters["drop_tokens"].default is True
    assert MOE_STACKS["deepspeed"].capacity_factor == parameters["capacity_factor"].default
    assert MOE_STACKS["deepspeed"].pads_to_capacity
    assert MOE_STACKS["megatron"].capacity_factor is None and not MOE_STACKS["megatron"].pads_to_capacity


def test_deepspeed_without_capacity_flags_is_priced_at_its_default_capacity_padded(capsys):
    default = _simulate(capsys, "--framework", "deepspeed", *IMBALANCE)
    capacity = MOE_STACKS["deepspeed"].capacity_factor
    explicit = _simulate(capsys, "--framework", "deepspeed", *IMBALANCE, "--moe-capacity-factor", f"{capacity:g}",
                         "--moe-pad-to-capacity", "1")
    uncapped = _simulate(capsys, "--framework", "deepspeed", *IMBALANCE, "--moe-capacity-factor", "1.3",
                         "--moe-pad-to-capacity", "0")
    assert default["step_time_s"] == pytest.approx(explicit["step_time_s"], rel=1e-12)
    assert default["step_time_s"] < uncapped["step_time_s"]  # the cap drops the busiest rank's excess


def test_an_explicit_capacity_factor_wins_over_the_stack_default(capsys):
    default = _simulate(capsys, "--framework", "deepspeed", *IMBALANCE)
    wider = _simulate(capsys, "--framework", "deepspeed", *IMBALANCE, "--moe-capacity-factor", "1.25")
    assert wider["step_time_s"] > default["step_time_s"]
    header = _simulate(capsys, "--framework", "deepspeed", "--moe-capacity-factor", "1.25", text=True)
    assert "capacity=1.25 padded" in header and "default)" not in header


def test_megatron_stays_dropless(capsys):
    default = _simulate(capsys, "--framework", "megatron", *IMBALANCE)
    uncapped = _simulate(capsys, "--framework", "megatron", *IMBALANCE, "--moe-capacity-factor", "1.3")
    assert default["step_time_s"] == pytest.approx(uncapped["step_time_s"], rel=1e-12)
    assert "capacity=" not in _simulate(capsys, "--framework", "megatron", text=True)


def test_simulate_header_shows_the_stack_default_capacity(capsys):
    header = _simulate(capsys, "--framework", "deepspeed", text=True)
    capacity = MOE_STACKS["deepspeed"].capacity_factor
    assert f"capacity={capacity:g} padded (deepspeed default)" in header


def test_pad_to_capacity_on_a_dropless_stack_still_needs_a_capacity_factor(capsys):
    code = main(["simulate", *LAYOUT, "--framework", "megatron", "--moe-pad-to-capacity", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--moe-capacity-factor" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("framework, capped", [("deepspeed", True), ("megatron", False)])
def test_the_layout_search_prices_each_stack_at_its_default_capacity(framework, capped):
    model, cluster = PRESETS["mixtral-8x7b"], load_cluster("dgx-h100")

    def best_step(imbalance):
        search = search_layouts(model, cluster, 64, frameworks=(framework,), global_batch=256,
                                moe_load_imbalance=imbalance)
        return np.nanmin(search.step_time_s)

    balanced, skewed = best_step(1.0), best_step(1.3)
    assert (skewed == pytest.approx(balanced, rel=1e-12)) if capped else skewed > balanced


@pytest.mark.parametrize("capacity", [0.1, 0.5])
def test_a_capacity_below_the_mean_drops_tokens_from_the_model_flops_too(capsys, capacity):
    """A capacity factor below 1 drops every token beyond it, and the time is charged for the kept share only
    (frameworks.moe.routing_imbalance): the model FLOPs count the experts' kept share too, so MFU <= HFU <= 1 (at
    0.1 the experts' full count gave MFU 125%)."""
    full = _simulate(capsys, "--framework", "megatron")
    capped = _simulate(capsys, "--framework", "megatron", "--moe-capacity-factor", f"{capacity:g}")
    assert capped["mfu"] <= capped["hfu"] <= 1.0
    assert capped["model_flops_per_step"] < full["model_flops_per_step"]
    # The dropped share of the experts' FLOPs is what goes, in proportion to the capacity; the rest is as before.
    dropped = full["model_flops_per_step"] - capped["model_flops_per_step"]
    capped_more = _simulate(capsys, "--framework", "megatron", "--moe-capacity-factor", f"{capacity / 2:g}")
    dropped_more = full["model_flops_per_step"] - capped_more["model_flops_per_step"]
    assert dropped_more / dropped == pytest.approx((1 - capacity / 2) / (1 - capacity), rel=1e-9)


def test_a_searched_load_imbalance_slows_only_the_layouts_that_spread_the_experts():
    """One measured --moe-load-imbalance for a search over every ep: the layouts with every expert on one rank
    (ep 1) compute every routed row however they are shared, so they price exactly as balanced; the others never
    faster (cost.moe.busiest_rank_load)."""
    model, cluster = PRESETS["mixtral-8x7b"], load_cluster("dgx-h100")
    balanced, skewed = (search_layouts(model, cluster, 16, frameworks=("megatron",), global_batch=64,
                                       moe_load_imbalance=x) for x in (1.0, 1.5))
    assert all(np.array_equal(balanced.arrays[k], skewed.arrays[k]) for k in balanced.arrays)
    alone = balanced.arrays["ep"] == 1
    assert alone.any() and (~alone).any()
    assert np.array_equal(skewed.step_time_s[alone], balanced.step_time_s[alone], equal_nan=True)
    assert np.array_equal(skewed.memory_bytes[alone], balanced.memory_bytes[alone])
    spread = ~alone & np.isfinite(balanced.step_time_s) & np.isfinite(skewed.step_time_s)
    assert spread.any() and np.all(skewed.step_time_s[spread] > balanced.step_time_s[spread])
