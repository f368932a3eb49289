"""Sharded data parallelism's HBM copies (planner/cost/shard_copies.py) against the PyTorch code they count:
FSDP1's flat-parameter passes (the llm-foundry stack, planner/frameworks/llm_foundry.py) and FSDP2's
copy-in / copy-out (the fsdp stack, planner/frameworks/fsdp.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.cost import shard_copies
from planner.cost.step_time import step_time
from planner.specs.clusters import load_cluster
from planner.specs.candidate_batch import single_batch
from planner.specs.layout import Layout
from planner.specs.model import make_model


def _torch_predivide_factor(world_size: int) -> float:
    """torch/distributed/fsdp `_get_gradient_predivide_factor` (also DefaultState in
    torch/distributed/algorithms/_comm_hooks/default_hooks.py), as written there."""
    factor: int = 1
    while world_size % factor == 0 and world_size / factor > factor:
        factor *= 2
    return float(factor)


def test_predivide_factor_is_fsdp1s():
    worlds = np.arange(1, 2049)
    np.testing.assert_array_equal(shard_copies.predivide_factor(worlds), [_torch_predivide_factor(n) for n in worlds])
    assert shard_copies.predivide_factor(np.array([8, 32, 64, 128])).tolist() == [4.0, 8.0, 8.0, 16.0]


@pytest.mark.parametrize("reduce_bytes, unsharded", [(4.0, 18.0), (2.0, 8.0)])
def test_bytes_per_unsharded_element(reduce_bytes, unsharded):
    """bf16 parameters: assemble the flat gradient (2 + 2), cast to fp32 only when the reduce dtype differs
    (Composer DEFAULT: 2 + 4; PURE: none), pre-divide in place (r + r). The shard's passes are 1/N of a
    handful of bytes: at N = 1024 they add under 0.05 B."""
    got = shard_copies.fsdp1_bytes_per_element(1024, 2.0, reduce_bytes, 2.0, 1.0)
    assert unsharded < got < unsharded + 0.05
    # Shard passes: 2 gathers x (4 + 2) cast, post-divide 2r, accumulation 3r (m - 1)/m.
    shard = 2 * 6.0 + 2 * reduce_bytes + 3 * reduce_bytes * 3 / 4
    assert shard_copies.fsdp1_bytes_per_element(8, 2.0, reduce_bytes, 2.0, 4.0) == pytest.approx(unsharded + shard / 8)


def _llm_foundry_13b(framework, micro_batches=3, zero=3):
    """MPT-13B as llm-foundry's A100-80GB table ran it (8 GPUs, micro-batch 2, grad accumulation 3)."""
    model = make_model(layers=40, hidden=5120, heads=40, vocab=50368, seq_len=2048)
    layout = Layout(dp=8, zero=zero, micro_batch=2, global_batch=16 * micro_batches, recompute="none",
                    flash_attention=True, framework=framework)
    return single_batch(model, layout), model


def test_llm_foundry_step_charges_the_flat_parameter_passes():
    cluster = load_cluster("dgx-a100-80gb")
    batch, model = _llm_foundry_13b("llm-foundry")
    parts = step_time(batch, cluster)["parts"]
    hbm = cluster.accelerator.hbm_bytes_per_s * cluster.efficiency.hbm_efficiency
    # Every parameter of the model is gathered on each GPU (dp only): 3 micro-batches x bytes x params / HBM.
    expected = 3 * shard_copies.fsdp1_bytes_per_element(8, 2.0, 4.0, 2.0, 3.0) * model.total_params / hbm
    assert parts["shard_copies"][0] == pytest.approx(expected, rel=1e-6)
    assert 0.02 < parts["shard_copies"][0] / sum(parts.values())[0] < 0.2
    # FSDP2 (the fsdp stack) copies fewer bytes: no flat-gradient assembly, no pre-divide.
    fsdp2, _ = _llm_foundry_13b("fsdp")
    assert 0.0 < step_time(fsdp2, cluster)["parts"]["shard_copies"][0] < parts["shard_copies"][0]


def test_passes_grow_with_micro_batches_and_vanish_without_sharding():
    cluster = load_cluster("dgx-h100")
    one, _ = _llm_foundry_13b("llm-foundry", micro_batches=1)
    four, _ = _llm_foundry_13b("llm-foundry", micro_batches=4)
    t1 = step_time(one, cluster)["parts"]["shard_copies"][0]
    t4 = step_time(four, cluster)["parts"]["shard_copies"][0]
    assert t4 > 3.9 * t1
    ddp, _ = _llm_foundry_13b("llm-foundry", zero=0)
    assert step_time(ddp, cluster)["parts"]["shard_copies"][0] == 0.0


def test_llm_foundry_runs_the_triton_attention_kernel_on_both_gpus():
    """`attn_impl: triton` in llm-foundry's pretrain yamls: the same layout is slower in attention than under
    FlashAttention-2 (the fsdp entry) on A100 and H100."""
    for name in ("dgx-a100-80gb", "dgx-h100"):
        cluster = load_cluster(name)
        foundry, _ = _llm_foundry_13b("llm-foundry")
        fsdp2, _ = _llm_foundry_13b("fsdp")
        assert step_time(foundry, cluster)["parts"]["forward"][0] > step_time(fsdp2, cluster)["parts"]["forward"][0]


def test_fsdp2_bytes_per_unsharded_element():
    """bf16 gathers, fp32 reduction (torchtitan's mixed precision): two copy-outs of the gathered weights at
    ZeRO-3 (2 x (2 + 2)), one copy-with-cast into the reduce-scatter buffer (2 + 4); one copy-out at ZeRO-2.
    The shard's passes are 1/N: two casts fp32 -> bf16 (4 + 2) and copy-ins (2 + 2), accumulation 3 x 4 on
    all micro-batches but the first; a bf16 reduction adds the cast of the reduced shard back to fp32."""
    assert shard_copies.fsdp2_bytes_per_element(1 << 20, 2.0, 4.0, 2.0, 1.0) == pytest.approx(14.0, abs=1e-4)
    assert shard_copies.fsdp2_bytes_per_element(1 << 20, 2.0, 4.0, 1.0, 1.0) == pytest.approx(10.0, abs=1e-4)
    shard = 2 * (6.0 + 4.0) + 12.0 * 3 / 4
    assert shard_copies.fsdp2_bytes_per_element(8, 2.0, 4.0, 2.0, 4.0) == pytest.approx(14.0 + shard / 8)
    # bf16 reduction: the copy into the buffer is 2 + 2, the reduced shard is cast back (2 + 4).
    assert shard_copies.fsdp2_bytes_per_element(8, 2.0, 2.0, 2.0, 1.0) == pytest.approx(12.0 + (2 * 10.0 + 6.0) / 8)


def test_fsdp_stack_charges_fsdp2_copies():
    cluster = load_cluster("dgx-h100")
    batch, model = _llm_foundry_13b("fsdp", micro_batches=2)
    parts = step_time(batch, cluster)["parts"]
    hbm = cluster.accelerator.hbm_bytes_per_s * cluster.efficiency.hbm_efficiency
    expected = 2 * shard_copies.fsdp2_bytes_per_element(8, 2.0, 4.0, 2.0, 2.0) * model.total_params / hbm
    assert parts["shard_copies"][0] == pytest.approx(expected, rel=1e-6)
    zero2, _ = _llm_foundry_13b("fsdp", micro_batches=2, zero=2)
    assert 0.0 < step_time(zero2, cluster)["parts"]["shard_copies"][0] < parts["shard_copies"][0]
    ddp, _ = _llm_foundry_13b("fsdp", zero=0)
    assert step_time(ddp, cluster)["parts"]["shard_copies"][0] == 0.0


FSDP2_PROBE = r"""
import json, os, sys, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard, MixedPrecisionPolicy
from torch.profiler import profile, ProfilerActivity

def run(rank, world, port, reshard, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    blocks = [torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)) for _ in range(3)]
    model = torch.nn.Sequential(*blocks)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in blocks:
        fully_shard(block, mp_policy=policy, reshard_after_forward=reshard)
    fully_shard(model, mp_policy=policy, reshard_after_forward=reshard)
    x = torch.randn(8, 64)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model(x).sum().backward()
    if rank == 0:
        counts = {"copy_out": 0, "reduce_copy_in": 0}
        for event in prof.events():
            if event.name == "fsdp::split_with_sizes_copy":  # input: the gather output, (world, shard)
                counts["copy_out"] += event.input_shapes[0][0] * event.input_shapes[0][1]
            elif event.name == "fsdp::chunk_cat":  # output: the reduce-scatter buffer, (world, shard)
                counts["reduce_copy_in"] += event.input_shapes[-1][0] * event.input_shapes[-1][1]
        counts["params"] = sum(p.numel() for p in model.parameters())
        with open(out, "w") as handle:
            json.dump(counts, handle)
    dist.destroy_process_group()

if __name__ == "__main__":
    port, reshard, out = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
    torch.multiprocessing.spawn(run, args=(2, port, reshard, out), nprocs=2)
"""


def _run_probe(tmp_path, source: str, argument: str, tries: int = 3) -> dict:
    """Run a probe script (its ranks spawned on gloo, a free local port) with `argument`; return the counts
    JSON rank 0 wrote. The port is free when chosen but not held: another test's ranks (pytest -n runs them side
    by side) can take it before gloo binds it, and the ranks then abort; a run that fails is tried again on a new
    port, and the last failure is reported with the end of its output."""
    import json
    import socket
    import subprocess
    import sys

    out = tmp_path / "counts.json"
    script = tmp_path / "probe.py"
    script.write_text(source)
    for attempt in range(tries):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = str(probe.getsockname()[1])
        run = subprocess.run([sys.executable, str(script), port, argument, str(out)], capture_output=True, timeout=300)
        if run.returncode == 0:
            return json.loads(out.read_text())
    raise AssertionError(f"probe failed {tries} times (exit {run.returncode}): "
                         f"{run.stderr.decode(errors='replace')[-2000:]}")


@pytest.mark.parametrize("zero, reshard", [(3, "1"), (2, "0")])
def test_fsdp2_copies_are_what_torch_runs(tmp_path, zero, reshard):
    """The recipe's passes, counted in the real fully_shard (the installed torch, 2 ranks on gloo): one forward
    and backward of three bf16/fp32 mixed-precision units copies every gathered element out once per gather
    (twice at ZeRO-3: reshard_after_forward=True; once at ZeRO-2) and every gradient element once into the
    reduce-scatter buffer. The blocks' sizes divide by 2, so nothing is padded."""
    pytest.importorskip("torch.distributed.fsdp")
    counts = _run_probe(tmp_path, FSDP2_PROBE, reshard)
    gathers = 2.0 if zero == 3 else 1.0
    params = counts["params"]
    assert counts["copy_out"] == gathers * params
    assert counts["reduce_copy_in"] == params
    # Those elements at the recipe's dtypes are the recipe's unsharded bytes (its shard terms are 1/N).
    w, r = 2.0, 4.0
    observed = counts["copy_out"] * 2 * w + counts["reduce_copy_in"] * (w + r)
    assert shard_copies.fsdp2_bytes_per_element(1 << 30, w, r, gathers, 1.0) * params == pytest.approx(observed)


def test_deepspeed_zero3_bytes_per_unsharded_element():
    """bf16 gradients reduced in bf16 (DeepSpeed's default communication dtype): bucket copy (2 + 2),
    interleave (2 + 2) and pre-divide (2 + 2); with fp32 communication a cast (2 + 4) and both passes in 4
    bytes. Shard (1/N): copied into the fp32 partition on the first micro-batch (2 + 4), added on later
    ones (2 + 8), and cast back first when communicated in fp32."""
    assert shard_copies.deepspeed_zero3_bytes_per_element(1 << 30, 2.0, 2.0, 1.0) == pytest.approx(12.0, abs=1e-6)
    assert shard_copies.deepspeed_zero3_bytes_per_element(1 << 30, 2.0, 4.0, 1.0) == pytest.approx(26.0, abs=1e-6)
    shard = 6.0 / 4 + 10.0 * 3 / 4
    assert shard_copies.deepspeed_zero3_bytes_per_element(8, 2.0, 2.0, 4.0) == pytest.approx(12.0 + shard / 8)


def test_deepspeed_qgz_skips_the_interleave_and_the_predivide():
    """ZeRO++'s qgZ quantises each 2-D gradient straight from the bucket (all_to_all_quant_reduce,
    coalesced_collectives.py:53-75 in DeepSpeed 0.19.8): the bucket copy (2 + 2) and the shard terms stay, the
    interleave and the pre-divide of reduce_scatter_coalesced go; the cast to fp32 communication stays."""
    assert shard_copies.deepspeed_zero3_bytes_per_element(1 << 30, 2.0, 2.0, 1.0, True) == pytest.approx(4.0, abs=1e-6)
    assert shard_copies.deepspeed_zero3_bytes_per_element(1 << 30, 2.0, 4.0, 1.0, True) == pytest.approx(10.0, abs=1e-6)
    shard = 6.0 / 4 + 10.0 * 3 / 4
    assert shard_copies.deepspeed_zero3_bytes_per_element(8, 2.0, 2.0, 4.0, True) == pytest.approx(4.0 + shard / 8)


def test_deepspeed_charges_its_zero2_and_zero3_copies():
    """Stage 3's reduction (stage3.py) and stage 2's (stage_1_and_2.py: bucket copy and divide, 4 bytes per bf16
    element, plus the rank's partition); stage 1 reduces once per step and is not charged."""
    cluster = load_cluster("dgx-h100")
    model = make_model(layers=40, hidden=5120, heads=40, vocab=50368, seq_len=2048)
    parts = {zero: step_time(single_batch(model, Layout(dp=8, zero=zero, micro_batch=2, global_batch=32,
                                                        framework="deepspeed")), cluster)["parts"]
             for zero in (1, 2, 3)}
    hbm = cluster.accelerator.hbm_bytes_per_s * cluster.efficiency.hbm_efficiency
    # Megatron-DeepSpeed pads the vocabulary to a multiple of 128 (tp 1; frameworks/deepspeed.py): 50,432 rows.
    padding_rows = (math.ceil(model.vocab / 128) * 128 - model.vocab) * (1 if model.tied_embeddings else 2)
    params = model.total_params + padding_rows * model.hidden
    expected = 2 * shard_copies.deepspeed_zero3_bytes_per_element(8, 2.0, 2.0, 2.0) * params / hbm
    assert parts[3]["shard_copies"][0] == pytest.approx(expected, rel=1e-6)
    assert parts[2]["shard_copies"][0] == pytest.approx(2 * (8.0 + 4.0 / 8) * params / hbm, rel=1e-6)
    assert parts[1]["shard_copies"][0] == 0.0


def test_every_stack_names_a_known_recipe():
    from planner.frameworks import FRAMEWORKS

    assert {stack.shard_copies for stack in FRAMEWORKS.values()} <= set(shard_copies.SHARD_COPY_RECIPES)


FSDP2_PIPELINE_PROBE = r"""
import json, os, sys, torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard, MixedPrecisionPolicy
from torch.distributed.pipelining import PipelineStage, Schedule1F1B
from torch.profiler import profile, ProfilerActivity

def run(rank, world, port, microbatches, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("pp", "dp"))
    stage_index = mesh["pp"].get_local_rank()
    torch.manual_seed(stage_index)
    blocks = [torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)) for _ in range(2)]
    stage_module = torch.nn.Sequential(*blocks)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    # As torchtitan shards a pipeline stage: no reshard after forward with pp (distributed/fsdp.py:129-132).
    for block in blocks:
        fully_shard(block, mesh=mesh["dp"], mp_policy=policy, reshard_after_forward=False)
    fully_shard(stage_module, mesh=mesh["dp"], mp_policy=policy, reshard_after_forward=False)
    stage = PipelineStage(stage_module, stage_index, 2, torch.device("cpu"), group=mesh["pp"].get_group())
    schedule = Schedule1F1B(stage, n_microbatches=microbatches, loss_fn=lambda y, t: (y.float() - t).pow(2).mean())
    x, target = torch.randn(4 * microbatches, 64), torch.randn(4 * microbatches, 64)
    step = (lambda: schedule.step(x)) if stage_index == 0 else (lambda: schedule.step(target=target, losses=[]))
    step()  # the first step also infers the stages' shapes
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    counts = {"copy_out": 0, "reduce_copy_in": 0}
    for event in prof.events():
        if event.name == "fsdp::split_with_sizes_copy":
            counts["copy_out"] += event.input_shapes[0][0] * event.input_shapes[0][1]
        elif event.name == "fsdp::chunk_cat":
            counts["reduce_copy_in"] += event.input_shapes[-1][0] * event.input_shapes[-1][1]
    counts["params"] = sum(p.numel() for p in stage_module.parameters())
    if rank == 0:
        with open(out, "w") as handle:
            json.dump(counts, handle)
    dist.destroy_process_group()

if __name__ == "__main__":
    port, microbatches, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.multiprocessing.spawn(run, args=(4, port, microbatches, out), nprocs=4)
"""


@pytest.mark.parametrize("microbatches", [2, 4])  # 1F1B needs at least as many as stages
def test_fsdp2_under_pipelining_gathers_and_reduces_once_a_step(tmp_path, microbatches):
    """The real torch.distributed.pipelining 1F1B schedule over FSDP2 stages as torchtitan shards them (4 ranks on
    gloo: pp 2 x dp 2): whatever the number of micro-batches, one step copies every stage element out of a
    gather once and into a reduce-scatter buffer once, which is what memory.unsharded_through_step rows are
    charged (the per-micro-batch recipe would count 4 gathers' and 4 reductions' copies at 4 micro-batches)."""
    pytest.importorskip("torch.distributed.pipelining")
    counts = _run_probe(tmp_path, FSDP2_PIPELINE_PROBE, str(microbatches))
    assert counts["copy_out"] == counts["params"]
    assert counts["reduce_copy_in"] == counts["params"]


def test_fsdp2_pipelined_bytes_per_element():
    """bf16 weights, fp32 reduction, 4 micro-batches: one copy-out (2 + 2), the first gradient cast into the fp32
    accumulator (2 + 4), three adds into it (4 + 2 + 4 each), one copy-in from it (4 + 4); per micro-batch a
    quarter. One micro-batch with bf16 reduction is ZeRO-2's copy-out and copy-in (4 + 4) exactly."""
    big = 1 << 30
    assert shard_copies.fsdp2_pipelined_bytes_per_element(big, 2.0, 4.0, 4.0) == pytest.approx(
        (4.0 + 6.0 + 3 * 10.0 + 8.0) / 4, abs=1e-6)
    assert shard_copies.fsdp2_pipelined_bytes_per_element(big, 2.0, 2.0, 1.0) == pytest.approx(
        shard_copies.fsdp2_bytes_per_element(big, 2.0, 2.0, 1.0, 1.0), abs=1e-6)
    # Fewer bytes a micro-batch than gathering and reducing every micro-batch (14 at ZeRO-3 with fp32 reduce).
    assert shard_copies.fsdp2_pipelined_bytes_per_element(big, 2.0, 4.0, 32.0) < shard_copies.fsdp2_bytes_per_element(
        big, 2.0, 4.0, 2.0, 32.0)
