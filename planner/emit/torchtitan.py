"""A plan's layout as a torchtitan run: a TOML job config (`--job.config_file`) and a torchrun script.

Pure: model, layout and node size in, text out. torchtitan read TOML job configs until
pytorch/torchtitan@238fa995 (2026-02-23); the next commit, 9810191b (#2386), replaced them with Python
config functions (`--module`/`--config`, torchtitan/config/manager.py at b5bcd76c), which this module
does not write. Sections and keys follow torchtitan/config/job_config.py at 238fa995 (JC below; every
key listed in tests/emit/data/torchtitan_job_config.txt); other sources at the same commit:
  PAR = torchtitan/models/llama3/infra/parallelize.py   PD = torchtitan/distributed/parallel_dims.py
  PP  = torchtitan/distributed/pipeline_parallel.py     L3 = torchtitan/models/llama3/__init__.py
  MOD = torchtitan/models/llama3/model/model.py

Data parallelism: ZeRO-3 = FSDP2 over data_parallel_shard_degree (the fsdp mesh is dp_shard x cp, PD:197);
ZeRO-2 = the same with fsdp_reshard_after_forward "never" (JC:336-349: parameters stay gathered from
forward to backward, as ZeRO-2 keeps them whole); ZeRO-0 = DDP over data_parallel_replicate_degree,
which torchtitan runs only as the sole parallelism (PAR:148-151). ZeRO-1 has no torchtitan equivalent;
HSDP (replicate x shard) is the layout's shard_group: shard degree = shard_group / cp, replicate = dp / that.
"""

from __future__ import annotations

from planner.specs.pipeline_chunks import layout_chunks
from planner.emit.ranks import nodes, torchrun_ranks
from planner.emit.schedule import (ADAM_BETAS, COOLDOWN_FRACTION, GRADIENT_CLIP, SAVE_INTERVAL_WITHOUT_PLAN,
                                   WEIGHT_DECAY, WSD_MIN_LR_RATIO, train_steps, warmup_count)
from planner.specs.layout import Layout
from planner.specs.model import ModelSpec

TORCHTITAN_COMMIT = "pytorch/torchtitan@238fa995"
# torchtitan's Llama 3 flavors (L3:51-99): (dim, n_layers, n_heads, n_kv_heads, ffn_dim_multiplier, multiple_of);
# vocab_size is TransformerModelArgs' default 128256 (model/args.py:33).
LLAMA3_FLAVORS = {"8B": (4096, 32, 32, 8, 1.3, 1024), "70B": (8192, 80, 64, 8, 1.3, 4096),
                  "405B": (16384, 126, 128, 8, 1.2, 4096)}
LLAMA3_VOCAB = 128256
CUSTOM_FLAVOR = "planner"


# Checkpoint modes the launch writes: async is DCP's async_save, staged to host memory and persisted in the
# background (checkpoint.async_mode, JC:591; components/checkpoint.py).
LAUNCH_CHECKPOINT_MODES = ("sync", "async")
# What the launch cannot train in, whatever the model and layout (emit.dtype_problems): JC:282
# mixed_precision_param takes bfloat16 or float32.
DTYPE_REFUSALS = {"fp16": "dtype=fp16: torchtitan trains in bf16 or fp32 (training.mixed_precision_param)"}


def unsupported(model: ModelSpec, layout: Layout, cluster=None) -> list[str]:
    """What torchtitan's Llama 3 trainer cannot run as planned (beyond planner.frameworks.unsupported_features)."""
    # The llama3 model (MOD): SwiGLU, RMSNorm, rotary, no biases, untied output layer.
    architecture = [(model.mlp != "swiglu", f"mlp={model.mlp}: torchtitan's llama3 model has a SwiGLU MLP only"),
                    (model.bias, "bias: torchtitan's llama3 model has no linear or norm biases"),
                    (model.position != "rotary",
                     f"position={model.position}: torchtitan's llama3 model has rotary embeddings only"),
                    (model.norm != "rmsnorm", f"norm={model.norm}: torchtitan's llama3 model has RMSNorm only"),
                    (model.tied_embeddings, "tied_embeddings: torchtitan's llama3 model has an untied output layer"),
                    (model.embedding_norm, "embedding_norm: torchtitan's llama3 model has no norm after the embedding"),
                    (model.dropout > 0, f"dropout={model.dropout:g}: torchtitan's llama3 model has no dropout"),
                    (model.is_moe or model.attention == "mla",
                     "mixture of experts / latent attention: torchtitan's llama3 model is dense with standard attention"),
                    # Attention.__init__: head_dim = dim // n_heads (MOD:200), no field to set it; no q/k norm.
                    (model.head_dim is not None and model.head_dim * model.heads != model.hidden,
                     f"head_dim={model.head_dim} with heads({model.heads}) x head_dim != hidden({model.hidden}): "
                     "torchtitan's llama3 model takes head_dim = hidden / heads"),
                    (model.qk_norm, "qk_norm: torchtitan's llama3 attention has no query/key norm")]
    problems = [text for failed, text in architecture if failed]
    if layout.zero == 1:
        problems.append("zero=1: torchtitan shards parameters with the optimizer (FSDP2, zero=2 or 3) or nothing "
                        "(DDP, zero=0)")
    # FSDP2 reduces in training.mixed_precision_reduce, whose only value is float32 (JC:290); FSDP2 prefetches and
    # reduces on its own streams and DDP buckets its all-reduce during backward, with no switch in the job config.
    if layout.grad_reduce_in_fp32 is False and layout.dtype != "fp32":
        problems.append("grad_reduce_in_fp32=0: torchtitan reduces gradients in fp32 only "
                        "(training.mixed_precision_reduce = float32)")
    if not layout.dp_comm_overlap_on and layout.dp * layout.cp > 1:
        problems.append("dp_comm_overlap=0: torchtitan's FSDP2 and DDP always overlap their communication with "
                        "compute (no switch to turn it off)")
    # HSDP: the FSDP mesh is dp_shard x cp (PD:137, 197), so the plan's shard group of ranks is dp_shard = group / cp.
    if layout.zero >= 2 and layout.shard_group and layout.cp > 1 and layout.shard_group % layout.cp:
        problems.append(f"shard_group({layout.shard_group}) with cp({layout.cp}): torchtitan shards over "
                        "data_parallel_shard_degree x cp ranks, so the group must be a multiple of cp")
    if layout.zero == 0 and layout.cp > 1:
        problems.append(f"zero=0 with cp({layout.cp}) > 1: torchtitan always shards parameters over the cp ranks "
                        "(FSDP over dp_shard x cp); plan zero=3")
    if layout.zero == 0 and layout.dp > 1 and layout.tp * layout.pp > 1:
        problems.append("zero=0 (DDP) with tp or pp > 1: torchtitan runs DDP only as the sole parallelism; plan zero=3")
    if layout.dtype in DTYPE_REFUSALS:
        problems.append(DTYPE_REFUSALS[layout.dtype])
    if layout.offload == "optimizer" or (layout.offload != "none" and layout.offload_device == "nvme"):
        problems.append(f"offload={layout.offload} to {layout.offload_device}: torchtitan's training.enable_cpu_offload "
                        "moves parameters, gradients and optimizer state together, to CPU only")
    if not layout.flash_attention_on:
        problems.append("flash_attention=0: torchtitan's attention is always a fused SDPA/flex kernel")
    divisor = 2 * layout.tp * layout.cp  # PD:365-372, asserted at PAR:67-74
    if model.seq_len % divisor:
        problems.append(f"seq_len({model.seq_len}) is not divisible by 2 * tp({layout.tp}) * cp({layout.cp}) = {divisor}")
    if model.kv % layout.tp:  # wk/wv are column-sharded by whole heads (MOD:206-207)
        problems.append(f"kv_heads({model.kv}) is not divisible by tp({layout.tp})")
    # Without FSDP (shard degree 1, no cp) and with tp or pp, torchtitan turns mixed precision off and trains in
    # fp32 (torchtitan@238fa995 distributed/utils.py:246-256, config/job_config.py:282-288).
    shard = shard_degree(layout)
    if shard == 1 and layout.cp == 1 and layout.tp * layout.pp > 1 and layout.dtype != "fp32":
        problems.append(f"dtype={layout.dtype} with no FSDP sharding (dp shard degree 1, cp 1) and tp or pp > 1: "
                        "torchtitan disables mixed precision there and trains in fp32")
    # Without FSDP, data-parallel replicas run as DDP, which torchtitan refuses beside tp or pp (PAR:148-151): an
    # HSDP shard group of 1 at zero 2-3 with tp or pp (in fp32, which the check above lets through).
    if layout.zero >= 2 and shard == 1 and layout.cp == 1 and layout.dp > 1 and layout.tp * layout.pp > 1:
        problems.append(f"shard_group({shard}) with dp({layout.dp}) replicas and tp or pp > 1: nothing is FSDP-sharded, "
                        "so torchtitan runs the replicas as DDP, which it refuses beside other parallelism")
    # enable_cpu_offload puts the model on the CPU (train.py:184-186) and only FSDP's CPUOffloadPolicy moves it in and
    # out (PAR:137, applied only where FSDP is): with nothing sharded the parameters stay on the CPU.
    if layout.offload != "none" and shard * layout.cp == 1:
        problems.append(f"offload={layout.offload} with nothing FSDP-sharded (dp shard degree 1, cp 1): torchtitan "
                        "offloads through FSDP only")
    # A middle pipeline chunk without layers is a stage without parameters, and the optimizer refuses an empty
    # parameter list (components/optimizer.py:81; the first and last chunks hold the embedding and the output).
    if layout.pp > 1 and 0 in layout_chunks(model.layers, layout)[1:-1]:
        problems.append(f"layers({model.layers}) over pp({layout.pp}) x vpp({layout.vpp}) leaves a middle pipeline "
                        "chunk without layers, a stage torchtitan's optimizer refuses (no parameters)")
    if layout.recompute == "selective":  # Korthikanti's attention-core recompute, which torchtitan does not have
        problems.append("recompute=selective: torchtitan's selective AC recomputes every nth layer or, op-level, every "
                        "second matmul (distributed/activation_checkpoint.py:27-49, 106-122), not the attention core "
                        "the plan priced; plan recompute none or full")
    if model.attention_window:
        problems.append(f"attention_window={model.attention_window}: torchtitan's llama3 attention is full causal")
    return problems


def llama3_ffn(dim: int, ffn_dim_multiplier: float | None, multiple_of: int) -> int:
    """FeedForward hidden size as torchtitan computes it from 4 * dim (MOD:332-336)."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def llama3_flavor(model: ModelSpec) -> str | None:
    """The torchtitan flavor with exactly this shape, or None."""
    for name, (dim, layers, heads, kv, multiplier, multiple_of) in LLAMA3_FLAVORS.items():
        if ((model.hidden, model.layers, model.heads, model.kv, model.vocab) == (dim, layers, heads, kv, LLAMA3_VOCAB)
                and llama3_ffn(dim, multiplier, multiple_of) == model.ffn_size):
            return name
    return None


def custom_flavor(model: ModelSpec) -> str:
    """The TransformerModelArgs(...) to register as llama3_args["planner"] for a shape torchtitan does not ship."""
    base = int(2 * (4 * model.hidden) / 3)
    multiplier = None if base <= model.ffn_size else model.ffn_size / base
    multiple_of = 256 if llama3_ffn(model.hidden, multiplier, 256) == model.ffn_size else model.ffn_size
    assert llama3_ffn(model.hidden, multiplier, multiple_of) == model.ffn_size  # multiple_of = ffn always lands on it
    return (f"TransformerModelArgs(dim={model.hidden}, n_layers={model.layers}, n_heads={model.heads}, "
            f"n_kv_heads={model.kv}, vocab_size={model.vocab}, multiple_of={multiple_of}, "
            f"ffn_dim_multiplier={multiplier!r}, rope_theta=500000)")


def _value(value) -> str:
    """A TOML value: bool, int, float, string or (nested) list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_value(v) for v in value) + "]"


def stage_modules(layers: int, layout: Layout) -> list[list[str]]:
    """parallelism.module_fqns_per_model_part (JC:367): module names of each model chunk, chunk c on rank
    c % pp (looped schedules, PP:447-461), split as the plan priced it (planner.specs.pipeline_chunks)."""
    chunks, first = [], 0
    counts = layout_chunks(layers, layout)
    for index, count in enumerate(counts):
        names = [f"layers.{i}" for i in range(first, first + count)]
        first += count
        chunks.append((["tok_embeddings"] if index == 0 else []) + names
                      + (["norm", "output"] if index == len(counts) - 1 else []))
    return chunks


def job_config(model: ModelSpec, layout: Layout, tokens: float | None, learning_rate: float | None,
               save_interval: int = SAVE_INTERVAL_WITHOUT_PLAN, checkpoint_mode: str = "sync") -> dict:
    """The [section] -> {key: value} tables of the job config (JC line of each field in the comments)."""
    fp8 = layout.dtype == "fp8"
    async_tp = layout.tp_comm_overlap_on and layout.tp > 1
    steps = train_steps(layout, tokens, model.seq_len) if tokens else None
    pipelined = layout.pp > 1
    sections = {
        "job": {"dump_folder": "./outputs", "description": "planner plan"},              # JC:22, 25
        "model": {"name": "llama3", "flavor": llama3_flavor(model) or CUSTOM_FLAVOR,      # JC:101, 104
                  "hf_assets_path": "./assets/hf/tokenizer",                              # JC:107
                  **({"converters": ["quantize.linear.float8"]} if fp8 else {})},         # JC:118; float8.py:238
        "optimizer": {"name": "AdamW", **({"lr": float(f"{learning_rate:.3g}")} if learning_rate else {}),  # JC:135, 138
                      "beta1": ADAM_BETAS[0], "beta2": ADAM_BETAS[1], "weight_decay": WEIGHT_DECAY},   # JC:141, 142, 148
        # WSD (planner.laws.hyperparameters, Hagele et al. 2024): stable peak, then a (1 - sqrt) cool-down
        # ("sqrt") over the last decay_ratio of the steps down to min_lr_factor x peak.
        "lr_scheduler": {**({"warmup_steps": warmup_count(steps)} if steps else {}),   # JC:170
                         "decay_ratio": COOLDOWN_FRACTION, "decay_type": "sqrt",          # JC:183, 192
                         "min_lr_factor": WSD_MIN_LR_RATIO},                              # JC:200
        "training": {
            # Without pp, local_batch_size is the micro-batch and torchtitan accumulates up to the global
            # batch (train.py:196-213); with pp it is the whole per-replica batch the schedule splits into
            # pipeline_parallel_microbatch_size pieces (PP:186-194).
            "local_batch_size": layout.micro_batch * (layout.grad_accumulation if pipelined else 1),  # JC:253
            "global_batch_size": layout.global_batch,                                     # JC:256
            "seq_len": model.seq_len, "max_norm": GRADIENT_CLIP,                          # JC:261, 264
            **({"steps": steps} if steps else {}),                                        # JC:267
            "dataset": "c4",                                                              # JC:244
            # fp32 master weights; bf16 (or fp32) compute via FSDP/autocast, fp32 reduction (JC:275-290).
            "dtype": "float32", "mixed_precision_param": "float32" if layout.dtype == "fp32" else "bfloat16",
            "mixed_precision_reduce": "float32",
            **({"enable_cpu_offload": True} if layout.offload != "none" else {})},        # JC:270
        "parallelism": parallelism_table(model, layout, async_tp),
        "activation_checkpoint": {"mode": layout.recompute},  # none or full (JC:652; default selective)
        # Off by default (JC:488): without it a failure restarts from step 0, where the plan's goodput prices a
        # restart from the last checkpoint. At the plan's interval (schedule.checkpoint_interval_steps); in
        # {dump_folder}/checkpoint, loaded back on restart (components/checkpoint.py:558-633).
        "checkpoint": {"enable": True, "interval": save_interval,                           # JC:488, 519
                       **({"async_mode": "async"} if checkpoint_mode == "async" else {})},   # JC:591
    }
    if async_tp:  # async TP is a compiler pass: it needs the model compiled (tensor_parallel.py:16-23)
        sections["compile"] = {"enable": True, "components": ["model", "loss"]}          # JC:722, 725
    if fp8:  # tensorwise scaling by default; the output layer stays bf16
        sections["quantize.linear.float8"] = {"filter_fqns": ["output"]}
    return sections


def shard_degree(layout: Layout) -> int:
    """data_parallel_shard_degree: 1 without FSDP (zero 0-1), else the data-parallel ranks each FSDP group spans.
    HSDP shards inside groups and replicates across them; the FSDP mesh is dp_shard x cp (PD:137, 197), so a shard
    group of g ranks is dp_shard = g / cp (unsupported() refuses g not a multiple of cp), leaving dp / dp_shard
    replicas: the dp x cp / g replicas priced (cost.memory.state_sharding_degrees)."""
    if layout.zero < 2:
        return 1
    return layout.shard_group // layout.cp if layout.shard_group else layout.dp


def parallelism_table(model: ModelSpec, layout: Layout, async_tp: bool) -> dict:
    """[parallelism]: mesh degrees (PD:35-55: replicate x shard x cp x tp x pp = world size) and the schedule."""
    shard = shard_degree(layout)
    table = {"data_parallel_replicate_degree": layout.dp // shard,                           # JC:313
             "data_parallel_shard_degree": shard,                                            # JC:324
             "tensor_parallel_degree": layout.tp,                                          # JC:351
             "pipeline_parallel_degree": layout.pp,                                        # JC:360
             "context_parallel_degree": layout.cp}                                         # JC:428
    if layout.zero == 2:  # ZeRO-2: parameters stay gathered from forward to backward (JC:336-349)
        table["fsdp_reshard_after_forward"] = "never"
    if async_tp:
        table["enable_async_tensor_parallel"] = True                                      # JC:357
    if layout.pp > 1:
        table.update({"pipeline_parallel_schedule": "Interleaved1F1B" if layout.vpp > 1 else "1F1B",  # JC:396
                      "pipeline_parallel_microbatch_size": layout.micro_batch,            # JC:412
                      "module_fqns_per_model_part": stage_modules(model.layers, layout)})  # JC:367
    return table


def toml_text(sections: dict, header: list[str]) -> str:
    lines = [f"# {line}" for line in header]
    for section, table in sections.items():
        lines += ["", f"[{section}]", *(f"{key} = {_value(value)}" for key, value in table.items())]
    return "\n".join(lines) + "\n"


def launch_script(model: ModelSpec, layout: Layout, gpus_per_node: int, tokens: float | None, summary: str) -> str:
    """bash script running torchtitan.train under torchrun with the job config, one invocation per node."""
    node_count = nodes(layout, gpus_per_node)
    per_node, per_node_lines = torchrun_ranks(layout, gpus_per_node)
    launcher = f"torchrun --nproc_per_node {per_node}"
    if node_count > 1:
        launcher += (f' --nnodes {node_count} --node_rank "$NODE_RANK" --rdzv_backend c10d'
                     ' --rdzv_endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}"')
    overrides = ['--model.hf_assets_path "$HF_ASSETS"']  # CLI flags override the TOML (config/manager.py:46-58)
    if not tokens:
        overrides += ['--training.steps "$TRAIN_STEPS"', '--optimizer.lr "$LR"']
    lines = ["#!/usr/bin/env bash", f"# {summary}" if summary else "# planner launch script",
             f"# Generated by `planner --emit` for torchtitan up to {TORCHTITAN_COMMIT} (TOML job configs);",
             "# run it on every node (NODE_RANK 0..nodes-1).",
             "set -euo pipefail",
             'CONFIG="$(cd "$(dirname "$0")" && pwd)/job_config.toml"',
             ': "${TORCHTITAN:?set TORCHTITAN to your torchtitan checkout}"',
             f': "${{HF_ASSETS:?set HF_ASSETS to a Hugging Face tokenizer folder (vocab size {model.vocab})}}"']
    if not tokens:
        lines += [': "${TRAIN_STEPS:?set TRAIN_STEPS (optimizer steps to train)}"',
                  ': "${LR:?set LR (peak learning rate)}"']
    if node_count > 1:
        lines += [': "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"',
                  ': "${NODE_RANK:?set NODE_RANK to this node (0 for the node at MASTER_ADDR)}"', *per_node_lines]
    lines += ['cd "$TORCHTITAN"', 'export PYTORCH_ALLOC_CONF="expandable_segments:True"  # as run_train.sh does',
              " \\\n  ".join([f"{launcher} -m torchtitan.train", '--job.config_file "$CONFIG"', *overrides])]
    return "\n".join(lines) + "\n"


def torchtitan_files(model: ModelSpec, layout: Layout, gpus_per_node: int, tokens: float | None = None,
                     learning_rate: float | None = None, summary: str = "",
                     save_interval: int = SAVE_INTERVAL_WITHOUT_PLAN, checkpoint_mode: str = "sync") -> dict[str, str]:
    """File name -> text: job_config.toml and launch.sh."""
    flavor = llama3_flavor(model)
    header = [summary or "planner plan",
              f"torchtitan job config (--job.config_file) for torchtitan up to {TORCHTITAN_COMMIT} (2026-02-23);",
              "later torchtitan takes Python configs (--module/--config) instead of TOML."]
    if flavor is None:
        header += ["The model shape is not a shipped llama3 flavor: register it in torchtitan/models/llama3/__init__.py as",
                   f'llama3_args["{CUSTOM_FLAVOR}"] = {custom_flavor(model)}']
    if layout.tp > 1 and not layout.seq_parallel:
        header.append("torchtitan's tensor parallelism always shards norms over the sequence (sequence parallelism): "
                      "the plan's seq_parallel=0 activation memory is an upper bound")
    if tokens is None:
        header.append("No token count: launch.sh takes the steps and the peak learning rate from TRAIN_STEPS and LR.")
    return {"job_config.toml": toml_text(job_config(model, layout, tokens, learning_rate, save_interval,
                                                    checkpoint_mode), header),
            "launch.sh": launch_script(model, layout, gpus_per_node, tokens, summary)}
