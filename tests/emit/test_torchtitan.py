"""torchtitan launch files: the TOML parses, every [section] key exists in torchtitan's JobConfig at the cited
commit with a value of its type, and the tables carry the plan (mesh degrees, batch, pipeline split)."""

from __future__ import annotations

import ast
import os
import subprocess
import tomllib

import pytest

from planner.emit import launch_files
from planner.emit.torchtitan import custom_flavor, llama3_ffn, llama3_flavor, unsupported
from planner.errors import PlannerInputError
from planner.specs.layout import Layout
from planner.specs.pipeline_stages import stage_layers
from planner.specs.model import preset

FSDP = dict(framework="fsdp")
CASES = {
    "llama3-8b-fsdp": ("llama3-8b", Layout(dp=64, zero=3, global_batch=256, micro_batch=2, **FSDP)),
    "llama3-8b-ddp": ("llama3-8b", Layout(dp=8, zero=0, global_batch=64, micro_batch=2, dtype="fp32", **FSDP)),
    "llama3-70b-tp-cp-async": ("llama3-70b", Layout(tp=8, cp=2, dp=8, zero=3, global_batch=64, seq_parallel=True,
                                                    tp_comm_overlap=True, **FSDP)),
    "llama3-70b-pp-vpp-fp8": ("llama3-70b", Layout(tp=8, pp=4, vpp=2, dp=4, zero=3, global_batch=64, micro_batch=2,
                                                   recompute="full", seq_parallel=True, dtype="fp8", **FSDP)),
    "llama3-405b-uneven-offload": ("llama3-405b", Layout(tp=8, pp=5, dp=2, zero=3, global_batch=40, seq_parallel=True,
                                                         offload="optimizer+params", **FSDP)),
    "llama2-7b-custom-flavor": ("llama2-7b", Layout(dp=16, zero=3, global_batch=64, **FSDP)),
}
# JobConfig annotation -> the TOML values tomllib gives for it (an int is a valid float, a bool is not an int).
TOML_TYPES = {"int": (int,), "float": (float, int), "str": (str,), "bool": (bool,), "list": (list,)}


def leaves(table: dict, prefix: str = ""):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("case", CASES)
def test_every_key_is_a_torchtitan_job_config_field_of_its_type(case, torchtitan_fields, h100):
    name, layout = CASES[case]
    config = tomllib.loads(launch_files(preset(name), layout, h100, tokens=1e12)["job_config.toml"])
    for key, value in leaves(config):
        assert key in torchtitan_fields, key  # what ConfigManager._dict_to_dataclass refuses (manager.py:160-171)
        kinds = tuple(t for kind in torchtitan_fields[key].split("|") for t in TOML_TYPES[kind])
        assert isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds), (key, value)


@pytest.mark.parametrize("case", CASES)
def test_the_tables_carry_the_plan(case, h100):
    name, layout = CASES[case]
    model = preset(name)
    config = tomllib.loads(launch_files(model, layout, h100, tokens=1e12)["job_config.toml"])
    mesh, training = config["parallelism"], config["training"]
    replicate, shard = mesh["data_parallel_replicate_degree"], mesh["data_parallel_shard_degree"]
    # parallel_dims.py:53: replicate x shard x cp x tp x pp = world size
    assert replicate * shard * mesh["context_parallel_degree"] * mesh["tensor_parallel_degree"] \
        * mesh["pipeline_parallel_degree"] == layout.gpus
    assert replicate * shard == layout.dp and (shard == layout.dp if layout.zero == 3 else shard == 1)
    # train.py:196-215: accumulation = global / (local x dp); with pp the local batch is split into micro-batches
    local, micro = training["local_batch_size"], mesh.get("pipeline_parallel_microbatch_size", training["local_batch_size"])
    assert training["global_batch_size"] == layout.global_batch and training["global_batch_size"] % (local * layout.dp) == 0
    assert micro == layout.micro_batch
    assert (training["global_batch_size"] // (local * layout.dp)) * (local // micro) == layout.grad_accumulation
    assert training["seq_len"] == model.seq_len and training["steps"] * layout.global_batch * model.seq_len >= 1e12
    assert config["activation_checkpoint"]["mode"] == layout.recompute
    assert training.get("enable_cpu_offload", False) == (layout.offload != "none")
    if layout.pp > 1:
        parts = mesh["module_fqns_per_model_part"]
        assert len(parts) == layout.pp * layout.vpp
        assert mesh["pipeline_parallel_schedule"] == ("Interleaved1F1B" if layout.vpp > 1 else "1F1B")
        names = [n for part in parts for n in part]
        assert names == ["tok_embeddings", *(f"layers.{i}" for i in range(model.layers)), "norm", "output"]
        per_rank = [sum(n.startswith("layers.") for part in parts[r::layout.pp] for n in part) for r in range(layout.pp)]
        first, _, last = (int(x) for x in stage_layers(model.layers, layout.pp, layout.vpp))
        assert (per_rank[0], per_rank[-1]) == (first, last)
    assert mesh.get("enable_async_tensor_parallel", False) == (layout.tp_comm_overlap_on and layout.tp > 1)
    if mesh.get("enable_async_tensor_parallel"):
        assert config["compile"]["enable"] and "model" in config["compile"]["components"]  # tensor_parallel.py:16-23
    assert ("quantize.linear.float8" in config["model"].get("converters", [])) == (layout.dtype == "fp8")
    # checkpoint.enable defaults to False (job_config.py:488): the plan's goodput prices restarts from checkpoints
    assert config["checkpoint"]["enable"] and config["checkpoint"]["interval"] > 0


def test_shipped_flavors_are_named_and_other_shapes_get_model_args(h100):
    assert [llama3_flavor(preset(n)) for n in ("llama3-8b", "llama3-70b", "llama3-405b")] == ["8B", "70B", "405B"]
    assert llama3_flavor(preset("llama2-7b")) is None
    for name in ("llama2-7b", "llama2-70b", "chinchilla-70b"):
        model = preset(name)
        args = custom_flavor(model)
        multiple_of = int(args.split("multiple_of=")[1].split(",")[0])
        multiplier = ast.literal_eval(args.split("ffn_dim_multiplier=")[1].split(",")[0])  # a float or None
        assert llama3_ffn(model.hidden, multiplier, multiple_of) == model.ffn_size
    text = launch_files(preset("llama2-7b"), CASES["llama2-7b-custom-flavor"][1], h100)["job_config.toml"]
    assert 'flavor = "planner"' in text and 'llama3_args["planner"] = TransformerModelArgs(dim=4096' in text


@pytest.mark.parametrize("model,layout,reason", [
    ("gpt3-1.3b", Layout(dp=8, zero=3, global_batch=8), "mlp=gelu"),
    ("llama3-8b", Layout(dp=8, zero=1, global_batch=8), "zero=1"),
    ("llama3-8b", Layout(tp=2, dp=4, zero=0, global_batch=8), "zero=0 (DDP) with tp or pp > 1"),
    ("llama3-8b", Layout(cp=2, dp=4, zero=0, global_batch=8), "zero=0 with cp(2)"),
    ("llama3-8b", Layout(dp=8, zero=3, global_batch=8, dtype="fp16"), "dtype=fp16"),
    ("llama3-8b", Layout(dp=8, zero=3, global_batch=8, offload="optimizer"), "offload=optimizer"),
    ("llama3-8b", Layout(dp=8, zero=3, global_batch=8, flash_attention=False), "flash_attention=0"),
    ("llama3-70b", Layout(tp=16, dp=1, zero=3, global_batch=8), "kv_heads(8) is not divisible by tp(16)"),
    # torchtitan's op-level SAC recomputes every second matmul: not the attention-core recompute priced
    ("llama3-8b", Layout(dp=8, zero=3, global_batch=8, recompute="selective"), "recompute=selective"),
    # Each of these passed the checks above and stopped torchtitan@238fa995: an HSDP shard group of 1 leaves DDP
    # replicas beside tp (PAR:148-151 raises); CPU offload with nothing FSDP-sharded leaves the model on the CPU
    # (train.py:184-186, PAR:137); 26 layers over pp 8 x vpp 2 leave chunk 8 empty, a stage without parameters,
    # which the optimizer refuses (components/optimizer.py:81).
    ("llama3-8b", Layout(tp=2, dp=4, zero=3, shard_group=1, global_batch=8, dtype="fp32"), "shard_group(1) with dp(4)"),
    ("llama3-8b", Layout(dp=1, zero=3, global_batch=8, offload="optimizer+params"), "offload=optimizer+params with nothing"),
    ("llama3-8b", Layout(pp=8, vpp=2, dp=1, zero=3, global_batch=16), None),
    # Runnable, but not as priced: torchtitan reduces in fp32 only (JC:290) and always overlaps its data-parallel
    # communication; its FSDP mesh is dp_shard x cp (PD:137, 197), so a shard group must be a multiple of cp.
    ("llama3-8b", Layout(dp=8, zero=3, global_batch=8, grad_reduce_in_fp32=False), "grad_reduce_in_fp32=0"),
    ("llama3-8b", Layout(dp=8, zero=3, global_batch=8, dp_comm_overlap=False), "dp_comm_overlap=0"),
    ("llama3-8b", Layout(cp=2, dp=12, zero=3, shard_group=3, global_batch=12), "shard_group(3) with cp(2)"),
])
def test_what_torchtitan_cannot_run_is_refused(model, layout, reason, h100):
    if reason is None:  # the empty-chunk case: a 26-layer Llama 3 8B
        model, reason = preset(model).model_copy(update={"layers": 26}), "layers(26) over pp(8) x vpp(2)"
    else:
        model = preset(model)
    assert any(problem.startswith(reason) for problem in unsupported(model, layout)), unsupported(model, layout)
    with pytest.raises(PlannerInputError) as refused:
        launch_files(model, layout.model_copy(update={"framework": "fsdp"}), h100)
    assert str(refused.value).startswith("fsdp (torchtitan) cannot run this plan:") and reason in str(refused.value)


def test_the_launch_script_runs_torchtitan_with_the_config(launch_folder, h100):
    model, layout = preset("llama3-8b"), CASES["llama3-8b-fsdp"][1]
    files = launch_files(model, layout, h100, summary="test plan")  # no tokens: steps and lr from the environment
    tmp_path, path = launch_folder(files)
    titan = tmp_path / "torchtitan"
    titan.mkdir()
    env = {**os.environ, "PATH": path, "TORCHTITAN": str(titan),
           "HF_ASSETS": "/hf/tok", "MASTER_ADDR": "node0", "NODE_RANK": "0", "TRAIN_STEPS": "100", "LR": "3e-4"}
    completed = subprocess.run(["bash", str(tmp_path / "launch.sh")], env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    argv = completed.stdout.splitlines()
    assert argv[:4] == ["--nproc_per_node", "8", "--nnodes", "8"]
    assert argv[argv.index("-m") + 1] == "torchtitan.train"
    assert argv[argv.index("--job.config_file") + 1] == str(tmp_path / "job_config.toml")
    assert argv[argv.index("--training.steps") + 1] == "100" and argv[argv.index("--optimizer.lr") + 1] == "3e-4"
    assert "steps" not in tomllib.loads(files["job_config.toml"])["training"]
    env.pop("TRAIN_STEPS")
    missing = subprocess.run(["bash", str(tmp_path / "launch.sh")], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "TRAIN_STEPS" in missing.stderr


def test_zero2_is_fsdp2_that_keeps_parameters_gathered_after_forward():
    """ZeRO-2 = FSDP2 with reshard_after_forward "never" (job_config.py:336-349 @238fa995)."""
    import tomllib

    from planner.emit.torchtitan import torchtitan_files
    from planner.specs.layout import Layout as L
    from planner.specs.model import preset as p
    files = torchtitan_files(p("llama3-8b"), L(dp=8, zero=2, global_batch=8, framework="fsdp"), 8, tokens=1e9)
    mesh = tomllib.loads(files["job_config.toml"])["parallelism"]
    assert mesh["data_parallel_shard_degree"] == 8 and mesh["data_parallel_replicate_degree"] == 1
    assert mesh["fsdp_reshard_after_forward"] == "never"


def test_dropout_the_llama3_model_does_not_have_is_refused():
    """torchtitan's llama3 model has no dropout module: a plan whose layers keep dropout masks is not what it runs."""
    layout = Layout(dp=8, zero=3, global_batch=8, framework="fsdp")
    with_dropout = preset("llama3-8b").model_copy(update={"dropout": 0.1})
    assert any(p.startswith("dropout=0.1: torchtitan's llama3 model has no dropout") for p in unsupported(with_dropout, layout))
    assert not any(p.startswith("dropout") for p in unsupported(preset("llama3-8b"), layout))


def test_a_head_width_or_qk_norm_the_llama3_model_cannot_build_is_refused():
    """torchtitan's llama3 Attention takes head_dim = dim // n_heads (model/model.py:200 at 238fa995) and has no
    query/key norm: a Qwen3-style shape would train another model than the plan."""
    base = preset("llama3-8b")
    layout = Layout(dp=8, zero=3, global_batch=8, framework="fsdp")
    assert unsupported(base, layout) == []
    assert unsupported(base.model_copy(update={"head_dim": 128}), layout) == []  # 32 x 128 = 4096: the same shape
    wide = unsupported(base.model_copy(update={"head_dim": 64}), layout)
    assert any(problem.startswith("head_dim=64 with heads(32)") for problem in wide), wide
    assert any(problem.startswith("qk_norm") for problem in unsupported(base.model_copy(update={"qk_norm": True}), layout))


def test_hsdp_with_context_parallelism_shards_over_the_plans_group():
    """torchtitan's FSDP mesh is dp_shard x cp (parallel_dims.py:137, 197): a plan sharding over 4 ranks with cp 2
    writes a shard degree of 2 and 4 replicas (dp 8 x cp 2 / 4, the replicas cost.memory prices), not 4 and 2,
    which shard over 8 ranks."""
    from planner.emit.torchtitan import parallelism_table

    table = parallelism_table(preset("llama3-8b"), Layout(cp=2, dp=8, zero=3, shard_group=4, global_batch=8, **FSDP),
                              async_tp=False)
    assert (table["data_parallel_shard_degree"], table["data_parallel_replicate_degree"]) == (2, 4)
    flat = parallelism_table(preset("llama3-8b"), Layout(cp=2, dp=8, zero=3, global_batch=8, **FSDP), async_tp=False)
    assert (flat["data_parallel_shard_degree"], flat["data_parallel_replicate_degree"]) == (8, 1)
