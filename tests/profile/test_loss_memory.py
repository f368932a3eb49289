"""The loss's bytes per token x vocabulary entry (planner/profile/loss_memory.py), measured on this CPU, against the
Framework records the cost model charges (Framework.loss_bytes_per_logit) and the committed profile
(profiles/loss-memory-cpu.json, measured with megatron-core 0.16.1 installed)."""

import importlib.util
import json
from pathlib import Path

import pytest

from planner.cost.memory import per_gpu_memory
from planner.frameworks import FRAMEWORKS
from planner.profile import loss_memory
from planner.specs.candidate_batch import single_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import Layout
from planner.specs.model import PRESETS
from planner.specs.pipeline_stages import padded_vocab

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch not installed (the 'profile' extra)")
PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "loss-memory-cpu.json"
# What the counter may add beyond tokens x vocab: the output layer's own tensors (tokens x 8 and vocab x 8 at 2 bytes,
# with their gradients), labels and per-token reductions; at 512 x 2048 well under 0.1 byte per logit.
SMALL_EXTRA = 0.1


@needs_torch
def test_the_counter_sees_the_saved_tensors_and_the_backwards_allocations():
    """F.cross_entropy on upcast logits, by hand: log_softmax saves its 4-byte output; the backward's start holds it,
    nll_loss's gradient and log_softmax's gradient, 4 bytes each; everything is freed once backward is done."""
    measured = loss_memory.peak_loss_bytes(loss_memory._torch_cross_entropy_upcast, tokens=512, vocab=2048)
    assert 12.0 <= measured["peak_bytes_per_logit"] < 12.0 + SMALL_EXTRA
    assert 4.0 <= measured["saved_bytes_per_logit"] < 4.0 + SMALL_EXTRA
    assert measured["left_after_backward_bytes_per_logit"] < SMALL_EXTRA


@needs_torch
def test_a_block_from_an_earlier_profiled_run_freed_inside_the_trace_is_not_counted():
    """The profiler reports the free of a block an earlier profiled run allocated (its memory reporter kept the size):
    counted, a DDP probe's leftover weight made the pipeline stage read 13 bytes a logit for 14. Here a 1 MB block
    from one trace is freed inside the next, beside a 4 kB block the run allocates and keeps."""
    import torch

    earlier = []
    loss_memory.allocation_trace(lambda: earlier.append(torch.empty(250_000)))
    kept = []

    def run():
        earlier.clear()
        kept.append(torch.empty(1_000))

    assert loss_memory.allocation_trace(run) == {"peak": 4_000, "at_backward": None, "left": 4_000}


@needs_torch
def test_a_loss_that_keeps_only_the_fp32_logits_measures_four_bytes_more_than_the_logits_cast():
    """A loss that saves nothing of tokens x vocab size (a sum of the upcast logits): the peak is the 2-byte logits
    and their 4-byte copy, 6; the counter does not double-count views."""
    measured = loss_memory.peak_loss_bytes(lambda logits, labels: logits.float().view(-1).sum(), tokens=512,
                                           vocab=2048)
    assert 6.0 <= measured["peak_bytes_per_logit"] < 6.0 + SMALL_EXTRA
    assert measured["saved_bytes_per_logit"] < SMALL_EXTRA


@needs_torch
def test_torchtitans_loss_is_what_the_fsdp_record_charges():
    measured = loss_memory.measure(512, 2048, ["torch-cross-entropy-upcast"])["torch-cross-entropy-upcast"]
    assert FRAMEWORKS["fsdp"].loss_bytes_per_logit == pytest.approx(measured["peak_bytes_per_logit"], abs=SMALL_EXTRA)


@pytest.mark.skipif(not loss_memory.installed("megatron.core"), reason="megatron-core not installed")
def test_megatrons_loss_measured_here_is_what_the_megatron_and_deepspeed_records_charge():
    measured = loss_memory.measure(512, 2048)
    for recipe, stacks in (("megatron-vocab-parallel", ("megatron", "megascale", "megatron-2022")),
                           ("megatron-vocab-parallel-upcast", ("deepspeed",))):
        for stack in stacks:
            assert FRAMEWORKS[stack].loss_bytes_per_logit == pytest.approx(
                measured[recipe]["peak_bytes_per_logit"], abs=SMALL_EXTRA), (recipe, stack)


def test_the_committed_profile_holds_the_figures_the_records_cite():
    """profiles/loss-memory-cpu.json, measured with megatron-core installed, is what frameworks/*.py cite."""
    recipes = json.loads(PROFILE.read_text())["recipes"]
    assert not any("skipped" in r for r in recipes.values())
    expect = {"torch-cross-entropy-upcast": ("fsdp",), "megatron-vocab-parallel": ("megatron", "megascale"),
              "planner-profile-worker": ("deepspeed",),
              "megatron-vocab-parallel-upcast": ("megatron-2022", "deepspeed")}
    for recipe, stacks in expect.items():
        for stack in stacks:
            assert FRAMEWORKS[stack].loss_bytes_per_logit == pytest.approx(
                recipes[recipe]["peak_bytes_per_logit"], abs=SMALL_EXTRA), (recipe, stack)
    fsdp = FRAMEWORKS["fsdp"]
    assert fsdp.loss_parallel_bytes_per_logit == pytest.approx(recipes["torch-loss-parallel"]["peak_bytes_per_logit"],
                                                               abs=SMALL_EXTRA)
    assert fsdp.async_tp_loss_bytes_per_logit == pytest.approx(
        recipes["torch-loss-parallel-compiled"]["peak_bytes_per_logit"], abs=SMALL_EXTRA)
    # The last pipeline stage: what the loss holds plus the bf16 logits the stage keeps (2 bytes), at tp 1 and tp 2.
    assert fsdp.pipeline_keeps_logits
    assert fsdp.loss_bytes_per_logit + 2.0 == pytest.approx(
        recipes["torch-pipeline-last-stage"]["peak_bytes_per_logit"], abs=SMALL_EXTRA)
    assert fsdp.loss_parallel_bytes_per_logit + 2.0 == pytest.approx(
        recipes["torch-loss-parallel-last-stage"]["peak_bytes_per_logit"], abs=SMALL_EXTRA)
    # Megatron's 'native' fused loss is torch.compile'd and holds more than the unfused one (frameworks/megatron.py);
    # no layout prices it.
    assert recipes["megatron-fused-native"]["peak_bytes_per_logit"] > FRAMEWORKS["megatron"].loss_bytes_per_logit + 1.0


@pytest.mark.parametrize("framework, bytes_per_logit, tp, pp, zero, overlap", [
    ("fsdp", 12.0, 1, 1, 3, False), ("fsdp", 16.0, 2, 1, 3, False), ("fsdp", 14.0, 1, 2, 3, False),
    ("fsdp", 18.0, 2, 2, 3, False), ("fsdp", 10.0, 2, 1, 3, True), ("fsdp", 12.0, 2, 2, 3, True),
    ("megatron", 6.0, 2, 1, 1, False), ("megatron", 6.0, 2, 2, 1, False), ("megatron", 6.0, 2, 1, 1, True),
    ("deepspeed", 6.0, 2, 1, 1, False), ("deepspeed", 6.0, 2, 2, 1, False),
    ("llm-foundry", 4.0, 1, 1, 3, False), ("other", 4.0, 2, 1, 1, False)])
def test_the_last_stage_is_charged_the_stacks_loss_bytes(framework, bytes_per_logit, tp, pp, zero, overlap):
    """The "logits" part is the stack's bytes per logit x tokens of one micro-batch x padded vocabulary / tp (it was
    the fp32 logits alone, 4 bytes, for every stack): torchtitan's 12 at tp 1, 16 under loss_parallel at tp > 1, 10
    where async TP compiles the loss, and 2 more on a last pipeline stage, which keeps the bf16 logits
    (profiles/loss-memory-cpu.json)."""
    model = PRESETS["llama3-8b"]  # seq_len 8192
    # Full recompute keeps the first stage's activations in flight small: the last stage, with the loss, binds.
    layout = Layout(tp=tp, pp=pp, dp=4, micro_batch=2, global_batch=64, zero=zero, framework=framework,
                    recompute="full", tp_comm_overlap=overlap, seq_parallel=overlap)
    batch = single_batch(model, layout)
    memory = per_gpu_memory(batch, load_cluster("dgx-h100"))
    expected = bytes_per_logit * 2 * 8192 * padded_vocab(batch)[0] / tp
    assert memory["binding_stage"][0] == 2  # the last stage (the loss's bytes make it the fullest here)
    assert memory["parts"]["logits"][0] == pytest.approx(expected, rel=1e-9)


def test_an_unknown_recipe_is_refused_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "loss.json"
    assert loss_memory.main(["--out", str(out), "--recipes", "torch-cross-entropy-upcast,bogus"]) == 2
    assert "--recipes" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "loss.json.tmp").exists()


@needs_torch
def test_the_command_writes_its_report(tmp_path):
    out = tmp_path / "loss.json"
    assert loss_memory.main(["--out", str(out), "--tokens", "256", "--vocab", "1024",
                             "--recipes", "torch-cross-entropy-upcast"]) == 0
    report = json.loads(out.read_text())
    assert report["tokens"] == 256 and set(report["recipes"]) == {"torch-cross-entropy-upcast"}
    assert report["recipes"]["torch-cross-entropy-upcast"]["peak_bytes_per_logit"] > 12.0


def test_a_fused_loss_is_charged_the_stacks_fused_bytes():
    """Megatron with TE's fused cross-entropy (Layout.loss_fusion): 2 bytes per logit, the gradient written into the
    16-bit logits (frameworks/megatron.py), where the unfused loss holds 6."""
    model = PRESETS["llama3-8b"]
    fused, unfused = (per_gpu_memory(single_batch(model, Layout(tp=2, dp=4, micro_batch=1, global_batch=32, zero=1,
                                                                framework="megatron", loss_fusion=flag)),
                                     load_cluster("dgx-h100")) for flag in (True, False))
    assert FRAMEWORKS["megatron"].fused_loss_bytes_per_logit == 2.0
    assert fused["parts"]["logits"][0] == pytest.approx(unfused["parts"]["logits"][0] / 3.0, rel=1e-12)
    assert unfused["total_bytes"][0] - fused["total_bytes"][0] >= 4.0 * 8192 * 128256 / 2


@pytest.mark.parametrize("framework", ["fsdp", "deepspeed", "megatron-2022", "llm-foundry"])
def test_a_fused_loss_is_refused_where_the_stack_has_none(cli, framework):
    code, out, err = cli(["simulate", "--model", "llama3-8b", "--gpus", "8", "--micro-batch", "1", "--global-batch",
                          "8", "--framework", framework, "--loss-fusion", "1"])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--loss-fusion 1" in err and framework in err


@needs_torch
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_the_profile_workers_loss_is_cross_entropy(dtype):
    """TinyGPT's in-place loss (profile/worker.py) gives F.cross_entropy's value and gradient."""
    import torch
    import torch.nn.functional as F

    from planner.profile.worker import in_place_cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(64, 1000, dtype=getattr(torch, dtype))
    targets = torch.randint(0, 1000, (64,))
    reference = logits.clone().requires_grad_()
    expected = F.cross_entropy(reference.float(), targets)
    expected.backward()
    mine = logits.clone().requires_grad_()  # fp32 logits are the fp32 copy, changed in place (as Megatron's are)
    loss = in_place_cross_entropy(mine, targets).mean()
    loss.backward()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    tolerance = 1e-6 if dtype == "float32" else 1e-3
    assert torch.allclose(mine.grad.float(), reference.grad.float(), atol=tolerance)
    assert mine.grad.dtype == mine.dtype


@needs_torch
def test_the_profile_worker_holds_what_the_stack_it_declares_is_charged():
    """Profiled rows declare framework deepspeed: TinyGPT's loss must hold what that record charges, 6 bytes per logit
    (it held 12 with F.cross_entropy on upcast logits when the H200 rows were taken)."""
    measured = loss_memory.measure(512, 2048, ["planner-profile-worker"])["planner-profile-worker"]
    assert measured["peak_bytes_per_logit"] == pytest.approx(FRAMEWORKS["deepspeed"].loss_bytes_per_logit,
                                                             abs=SMALL_EXTRA)


@needs_torch
@pytest.mark.parametrize("recipe, stack_bytes", [
    ("torch-loss-parallel", lambda fsdp: fsdp.loss_parallel_bytes_per_logit),
    ("torch-loss-parallel-compiled", lambda fsdp: fsdp.async_tp_loss_bytes_per_logit),
    ("torch-pipeline-last-stage", lambda fsdp: fsdp.loss_bytes_per_logit + 2.0),
    ("torch-loss-parallel-last-stage", lambda fsdp: fsdp.loss_parallel_bytes_per_logit + 2.0)])
def test_torchtitans_loss_at_tp_and_on_the_last_stage_measured_here_is_what_the_fsdp_record_charges(recipe, stack_bytes):
    """torch's loss_parallel on two gloo ranks (16: the backward's zeroed gradient, exp of the saved log-softmax and
    their sum, beside the saved log-softmax; 10 compiled, as async TP's launch runs it) and torch.distributed.
    pipelining's last stage, which keeps the bf16 logits (2 bytes) until their backward; measured again here."""
    measured = loss_memory.measure(512, 2048, [recipe])[recipe]
    assert stack_bytes(FRAMEWORKS["fsdp"]) == pytest.approx(measured["peak_bytes_per_logit"], abs=SMALL_EXTRA)


def test_a_megatron_namespace_without_core_is_not_megatron_core(tmp_path, monkeypatch):
    """An empty `megatron` package (what `pip uninstall megatron-core` leaves, or Megatron-DeepSpeed's own `megatron`)
    is importable, but its recipes need megatron.core: they are skipped, not run into a ModuleNotFoundError."""
    (tmp_path / "megatron").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    if loss_memory.installed("megatron.core"):
        pytest.skip("megatron-core is installed here")
    assert loss_memory.installed("megatron") and not loss_memory.installed("megatron.core")
    assert loss_memory.measure(64, 256, ["megatron-vocab-parallel"])["megatron-vocab-parallel"]["skipped"]
