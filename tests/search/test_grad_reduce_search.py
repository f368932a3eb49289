"""The fixed-model search at a gradient dtype the user asks for (--grad-reduce-in-fp32): NVIDIA's Megatron-Bridge
performance recipes reduce gradients in bf16 (perf_recipes/_common.py: grad_reduce_in_fp32 False), while the searches
priced each stack's default (Megatron: fp32 with bf16). A numerics choice, so the user's, never the search's."""

from __future__ import annotations

import pytest

from planner.cost.estimate import simulate
from planner.search import layouts as layouts_module
from planner.search.layouts import search_layouts
from planner.specs.clusters import load_cluster
from planner.specs.layout_checks import check_layout
from planner.specs.model import ModelSpec

SMALL = ModelSpec(name="small", layers=8, hidden=1024, heads=8, kv_heads=8, mlp="swiglu", vocab=32000, seq_len=2048)


@pytest.fixture
def small_search(monkeypatch):
    monkeypatch.setattr(layouts_module, "MAX_VPP", 2)
    monkeypatch.setattr(layouts_module, "MAX_MICRO_BATCH", 4)
    cluster = load_cluster("dgx-h100")
    return cluster, lambda framework, reduce: search_layouts(SMALL, cluster, 16, global_batch=64,
                                                             frameworks=(framework,), grad_reduce_in_fp32=reduce)


@pytest.mark.parametrize("framework", ["megatron", "deepspeed"])
@pytest.mark.parametrize("reduce", [False, True])
def test_every_layout_is_scored_at_the_asked_gradient_dtype(small_search, framework, reduce):
    """Each layout the search returns carries the setting, and its memory and step time are what the scalar
    `simulate` gives that layout one at a time."""
    cluster, search = small_search
    result = search(framework, reduce)
    assert len(result) > 50 and result.best is not None
    for i in range(0, len(result), 7):
        layout = result.layout(i)
        assert layout.grad_reduce_in_fp32 is reduce
        check_layout(SMALL, layout, gpus=16)
        sim = simulate(SMALL, layout, cluster)
        assert sim["memory"]["total_bytes"] == pytest.approx(result.memory_bytes[i], rel=1e-9)
        if result.fits[i]:
            assert sim["step_time_s"] == pytest.approx(result.step_time_s[i], rel=1e-9)
    assert result.rows([result.best])[0]["grad_reduce_in_fp32"] is reduce


def test_megatron_bf16_gradients_change_the_model_states_as_its_table_says(small_search):
    """Megatron-Core's bytes per parameter (docs/source/api-guide/dist_optimizer.md, the table the cost model cites):
    bf16 with fp32 gradients 6 + 12/d under the distributed optimizer, 18 without; 16-bit gradients (the fp16 row,
    whose fp32 copy of the gradient the optimizer steps on) 4 + 16/d and 20. So bf16 gradients save 2 - 4/d bytes a
    parameter at ZeRO-1 and cost 2 more at ZeRO-0. The default is the fp32 search."""
    cluster, search = small_search
    default, bf16, fp32 = (search("megatron", reduce) for reduce in (None, False, True))
    assert default.layout(0).grad_reduce_in_fp32 is None and "grad_reduce_in_fp32" not in default.rows([0])[0]
    assert (default.memory_bytes == fp32.memory_bytes).all()

    def states(search_result, i):
        memory = simulate(SMALL, search_result.layout(i), cluster)["memory"]
        return memory["weights"] + memory["gradients"] + memory["optimizer"]

    for zero in (0, 1):
        rows = [i for i in range(len(bf16)) if bf16.arrays["zero"][i] == zero][:5]
        assert rows
        for i in rows:
            d = float(bf16.arrays["dp"][i] * bf16.arrays["cp"][i])
            params = simulate(SMALL, bf16.layout(i), cluster)["memory"]["weights"] / 2.0  # bf16 weights
            saved = (2.0 - 4.0 / d) if zero == 1 else -2.0
            assert states(fp32, i) - states(bf16, i) == pytest.approx(saved * params, rel=1e-6)


def test_deepspeed_fp32_gradients_leave_out_zero_0(small_search):
    """DeepSpeed accumulates 16-bit gradients in fp32 only from ZeRO-1 (Framework.fp32_grad_accumulation_min_zero:
    check_layout refuses ZeRO-0 with it), so the search asked for fp32 gradients enumerates no ZeRO-0 layout."""
    _, search = small_search
    assert (search("deepspeed", None).arrays["zero"] == 0).any()
    assert not (search("deepspeed", True).arrays["zero"] == 0).any()


def test_the_flag_reaches_the_plan_and_the_launch(cli, tmp_path):
    """planner optimize --model ... --grad-reduce-in-fp32 0: the plan says so (layout line, JSON), and the Megatron
    launch it writes reduces in bf16 (--grad-reduce-in-bf16)."""
    argv = ["optimize", "--model", "llama3-8b", "--tokens", "10B", "--gpus", "16", "--framework", "megatron",
            "--grad-reduce-in-fp32", "0"]
    code, out, err = cli(argv)
    assert code == 0, err
    assert "grads-16bit" in out
    code, out, err = cli([*argv, "--emit", tmp_path / "launch"])
    assert code == 0, err
    assert "--grad-reduce-in-bf16" in (tmp_path / "launch" / "launch.sh").read_text()


@pytest.mark.parametrize("argv", [["optimize", "--budget", "1000gpuh"], ["optimize", "--budget", "1000gpuh", "--moe"],
                                  ["report", "--budget", "1000gpuh", "--out", "r.html"]])
@pytest.mark.parametrize("value", ["0", "1"])
def test_the_budget_searches_refuse_the_flag(cli, argv, value):
    """The budget searches choose the model and keep each stack's default: --grad-reduce-in-fp32 0 or 1 there is an
    error naming the flag (refuse_flags counted 0 as not given, so 0 would have been ignored)."""
    code, out, err = cli([*argv, "--grad-reduce-in-fp32", value])
    assert code == 2 and err.count("\n") == 1 and "--grad-reduce-in-fp32" in err and not out


def test_16_bit_gradients_leave_out_the_stacks_whose_launch_reduces_in_fp32_only(small_search):
    """torchtitan's training.mixed_precision_reduce takes float32 only (Framework.reduces_in_model_dtype False for
    fsdp; emit/torchtitan.py refuses the layout): asked for 16-bit gradients the search leaves fsdp out (the review
    found fsdp plans chosen at 16-bit gradients that `--emit` then refused), and with fsdp alone says why."""
    from planner.errors import PlannerInputError
    from planner.frameworks import FRAMEWORK_CODES

    cluster, _ = small_search
    mixed = search_layouts(SMALL, cluster, 16, global_batch=64, frameworks=("megatron", "fsdp"), grad_reduce_in_fp32=False)
    assert len(mixed) and not (mixed.arrays["framework"] == FRAMEWORK_CODES["fsdp"]).any()
    assert (search_layouts(SMALL, cluster, 16, global_batch=64, frameworks=("megatron", "fsdp")).arrays["framework"]
            == FRAMEWORK_CODES["fsdp"]).any()
    with pytest.raises(PlannerInputError, match="--grad-reduce-in-fp32 0: no stack searched"):
        search_layouts(SMALL, cluster, 16, global_batch=64, frameworks=("fsdp",), grad_reduce_in_fp32=False)
    # The integer 0, which the API takes for False, by the same rules (the fixed-model audit: it priced fsdp in bf16).
    with pytest.raises(PlannerInputError, match="--grad-reduce-in-fp32 0: no stack searched"):
        search_layouts(SMALL, cluster, 16, global_batch=64, frameworks=("fsdp",), grad_reduce_in_fp32=0)
    as_int = search_layouts(SMALL, cluster, 16, global_batch=64, frameworks=("megatron", "fsdp"), grad_reduce_in_fp32=0)
    assert len(as_int) == len(mixed)


@pytest.mark.parametrize("value, dtype, fragment", [("0", "bf16", "expected None, True or False"),
                                                    (False, "fp32", "fp32 training holds and reduces"),
                                                    (True, "fp32", "fp32 training holds and reduces")])
def test_a_setting_the_search_cannot_honour_is_refused(value, dtype, fragment):
    """The API took any truthy value as fp32 (the string '0' among them) and fp32 training with 0 was labelled
    16-bit: both refused, naming the setting."""
    from planner.errors import PlannerInputError

    cluster = load_cluster("dgx-a100-80gb")
    with pytest.raises(PlannerInputError, match=fragment):
        search_layouts(SMALL, cluster, 16, global_batch=64, dtype=dtype, grad_reduce_in_fp32=value)


def test_megatron_2022_is_not_searched_at_16_bit_gradients_in_bf16(small_search):
    """Megatron-LM v2.5 reduces bf16 gradients in fp32 whatever it is asked (frameworks/megatron_2022.py), so the
    search asked for 16-bit gradients in bf16 has no megatron-2022 layout: alone it says which stacks can, beside
    megatron every layout it returns is megatron's and runs (check_layout)."""
    from planner.errors import PlannerInputError

    cluster, search = small_search
    with pytest.raises(PlannerInputError, match="megatron-2022 its bf16 gradients"):
        search("megatron-2022", False)
    both = search_layouts(SMALL, cluster, 16, global_batch=64, frameworks=("megatron-2022", "megatron"),
                          grad_reduce_in_fp32=False)
    assert len(both) > 0 and {both.layout(i).framework for i in range(len(both))} == {"megatron"}
    assert len(search("megatron-2022", True)) > 0
