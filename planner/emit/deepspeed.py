"""A plan's layout as files a DeepSpeed run starts from: ds_config.json, Megatron-DeepSpeed arguments,
a hostfile template and a launch script for the `deepspeed` launcher. Pure: layout in, text out.

Targets microsoft/Megatron-DeepSpeed's `pretrain_gpt.py` (tp/pp/sequence parallelism come from its
arguments; DeepSpeed gets the batch, ZeRO, offload and precision from ds_config.json). Megatron
builds its own optimizer and hands it to DeepSpeed, so ds_config.json has no "optimizer" block;
with optimizer offload `--cpu-optimizer` makes that optimizer DeepSpeed's CPU Adam, as ZeRO-Offload
requires. Bucket sizes are the ones the cost model assumes (planner.cost.memory), so the run
uses the memory the plan was checked against.
"""

from __future__ import annotations

import json

from planner.cost.memory import ZERO3_BUCKET_ELEMENTS, ZERO12_BUCKET_ELEMENTS
from planner.emit.ranks import nodes, ranks_per_node
from planner.emit.schedule import (COOLDOWN_FRACTION, MIN_LR_RATIO, SAVE_INTERVAL_WITHOUT_PLAN,  # noqa: F401
                                   WARMUP_FRACTION, WEIGHT_DECAY, step_law_learning_rate,
                                   train_sequences, warmup_count)
from planner.frameworks import FRAMEWORKS
from planner.specs.layout import Layout
from planner.specs.model import ModelSpec

# DeepSpeed's default stage3_param_persistence_threshold (elements): parameters this small stay
# gathered on every rank instead of being fetched per use (DeepSpeed docs, "ZeRO optimizations").
ZERO3_PERSISTENCE_THRESHOLD = 1e5
DEFAULT_SEQUENCES_WHEN_UNKNOWN = "${TRAIN_SAMPLES:?set TRAIN_SAMPLES (sequences to train on)}"
# Megatron-DeepSpeed cannot run the plan's WSD schedule: --lr-decay-style takes constant, linear, cosine or
# inverse-square-root (deepspeedai/Megatron-DeepSpeed@4efb479d megatron/arguments.py:1021-1022), and
# OptimizerParamScheduler.get_lr (megatron/optimizer_param_scheduler.py) decays from the end of the warm-up to
# --lr-decay-samples with no stable phase before it. The files therefore run cosine decay to MIN_LR_RATIO over
# the whole run, and say so (schedule_difference): megatron_args.txt has one argument per line and no comment
# syntax (argparse reads no argument files here; launch.sh does not read it), so the note goes to NOTES.md.
NOTES_FILE = "NOTES.md"
# Checkpoint modes the launch writes: Megatron-DeepSpeed saves with torch.save on the training ranks
# (megatron/checkpointing.py), synchronously.
LAUNCH_CHECKPOINT_MODES = ("sync",)
# What the launch cannot train in, whatever the model and layout: the reason, by dtype (emit.dtype_problems).
# fp8 runs through Transformer Engine's layer at pp 1 on a GPT-shaped model (Framework.fp8_with_pipeline,
# fp8_layer_shape: frameworks/deepspeed.py), which the layout checks hold; no dtype is refused outright.
DTYPE_REFUSALS: dict[str, str] = {}


def zero_block(layout: Layout) -> dict:
    """The zero_optimization section: stage, overlap, buckets, offload targets."""
    block = {"stage": layout.zero}
    if layout.zero == 0:
        return block
    # overlap_comm as priced: at ZeRO-1/2 the layout's dp_comm_overlap hides the bucketed reduction behind backward
    # (cost.step_time) and holds a second IPG bucket (cost.memory, stage_1_and_2.py:2048-2060); DeepSpeed's own
    # default is off there. At ZeRO-3 it prefetches the gathers and overlaps the reduce-scatters (cost.data_parallel),
    # by default on, as DeepSpeed's stage-3 default (zero/config.py:383-385 overlap_comm_valid).
    overlap = layout.dp_comm_overlap_on
    block.update({"overlap_comm": overlap, "contiguous_gradients": True,
                  "reduce_bucket_size": int(ZERO12_BUCKET_ELEMENTS)})
    if layout.zero in (1, 2):
        block.update({"reduce_scatter": True, "allgather_bucket_size": int(ZERO12_BUCKET_ELEMENTS)})
    if layout.zero == 3:
        block.update({"stage3_prefetch_bucket_size": int(ZERO3_BUCKET_ELEMENTS),
                      "stage3_param_persistence_threshold": int(ZERO3_PERSISTENCE_THRESHOLD),
                      "stage3_gather_16bit_weights_on_model_save": True})
        block.update(_hierarchy_keys(layout))
    if layout.offload != "none":
        block["offload_optimizer"] = _offload_target(layout)
    if layout.offload == "optimizer+params":
        block["offload_param"] = _offload_target(layout)
    return block


def _hierarchy_keys(layout: Layout) -> dict:
    """ZeRO++ keys for the layout's ZeRO-3 hierarchy, only those set (DeepSpeed@38327e07
    runtime/zero/config.py:294-310 zero_hpz_partition_size / zero_quantized_weights / zero_quantized_gradients;
    still read by DeepSpeed 0.19.8). A separate gradient group (grad_shard_group) has no upstream key."""
    keys = {}
    if layout.zero_hpz > 1:
        keys["zero_hpz_partition_size"] = layout.zero_hpz
    if layout.zero_quantized_weights:
        keys["zero_quantized_weights"] = True
    if layout.zero_quantized_gradients:
        keys["zero_quantized_gradients"] = True
    return keys  # no MiCS (mics_shard_size): today's DeepSpeed removed it (frameworks/deepspeed.py)


def _offload_target(layout: Layout) -> dict:
    if layout.offload_device == "nvme":
        return {"device": "nvme", "nvme_path": "/local_nvme", "pin_memory": True}
    return {"device": "cpu", "pin_memory": True}


def precision_block(dtype: str) -> dict:
    """bf16/fp16 sections. fp8 matmuls live in Transformer Engine, outside ds_config: run bf16 here."""
    if dtype in ("bf16", "fp8"):
        return {"bf16": {"enabled": True}}
    if dtype == "fp16":
        # Dynamic loss scaling (loss_scale 0) with DeepSpeed's documented defaults.
        return {"fp16": {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000,
                         "hysteresis": 2, "min_loss_scale": 1}}
    return {}


def ds_config(layout: Layout, gradient_clipping: float = 1.0) -> dict:
    """ds_config.json for one layout. DeepSpeed checks train_batch = micro x accumulation x dp."""
    config = {
        "train_batch_size": layout.global_batch,
        "train_micro_batch_size_per_gpu": layout.micro_batch,
        "gradient_accumulation_steps": layout.grad_accumulation,
        "gradient_clipping": gradient_clipping,
        "zero_optimization": zero_block(layout),
        **precision_block(layout.dtype),
        "steps_per_print": 10,
        "wall_clock_breakdown": False,
    }
    if layout.grad_reduce_in_fp32 and layout.dtype in ("bf16", "fp8") and layout.zero == 1:
        # bf16 with fp32 gradient accumulation at ZeRO-1: DeepSpeed's BF16_Optimizer, the stack the cost model
        # prices for this layout (runtime/constants.py:421-428 `data_types.grad_accum_dtype`; engine.py:1316-1318).
        # ZeRO-0 refuses the mix (Framework.fp32_grad_accumulation_min_zero, which check_layout reads).
        config["data_types"] = {"grad_accum_dtype": "fp32"}
    elif layout.grad_reduce_in_fp32 and layout.dtype != "fp32":
        # The plan reduces its 16-bit gradients in fp32 (4 bytes, cost.memory element_bytes); DeepSpeed reduces in the
        # model dtype unless communication_data_type says otherwise (runtime/engine.py:1719-1730, config.py:216-228).
        config["communication_data_type"] = "fp32"
    if layout.recompute == "full" or layout.activation_offload:
        # Megatron-DeepSpeed's --deepspeed-activation-checkpointing reads this block; checkpoints are partitioned
        # over tp as the plan priced them (Layout.partition_activations_on: the setting or the stack's default, off;
        # only with full recompute and tp > 1). Megatron-DeepSpeed passes its own --partition-activations /
        # --checkpoint-in-cpu to deepspeed.checkpointing.configure, which override these (checkpointing.py:1210-1220),
        # so megatron_arguments writes them too.
        config["activation_checkpointing"] = {"partition_activations": layout.partition_activations_on,
                                              "contiguous_memory_optimization": False,
                                              "cpu_checkpointing": bool(layout.activation_offload)}
    return config


def unsupported(model: ModelSpec, layout: Layout, cluster=None) -> list[str]:
    """What Megatron-DeepSpeed + DeepSpeed cannot run as planned beyond the framework data
    (planner.frameworks.deepspeed: no vpp, no cp, ZeRO <= 1 with pp). `launch_files` refuses these;
    --emit-deepspeed only warns (compatibility_notes)."""
    problems = []
    if layout.dtype in DTYPE_REFUSALS:
        problems.append(DTYPE_REFUSALS[layout.dtype])
    if model.is_moe or model.attention == "mla":
        problems.append("mixture of experts / latent attention: the Megatron-DeepSpeed launch written here is a dense "
                        "GPT with standard attention (use --framework megatron)")
    # --use-flash-attn-v2's FlashSelfAttention asserts fp16 or bf16 inputs (deepspeedai/Megatron-DeepSpeed@4efb479d
    # megatron/model/transformer.py:419): an fp32 plan stops at its first forward.
    if layout.dtype == "fp32" and layout.flash_attention_on:
        problems.append("dtype=fp32 with flash attention: Megatron-DeepSpeed's flash attention takes fp16 or bf16 only "
                        "(plan --flash-attention 0, or a 16-bit dtype)")
    if layout.zero_tiling > 1:  # DeepSpeed tiles through deepspeed.zero.TiledLinear in the model code, no config key
        problems.append(f"zero_tiling={layout.zero_tiling}: Megatron-DeepSpeed's GPT does not wrap its linears in "
                        "deepspeed.zero.TiledLinear, so whole modules are gathered (plan zero_tiling 1)")
    if model.qk_norm:  # ParallelAttention normalises neither query nor key (megatron/model/transformer.py:507-879)
        problems.append("qk_norm: Megatron-DeepSpeed's attention has no query/key norm (use --framework megatron: "
                        "--qk-layernorm)")
    if model.attention_window:
        problems.append(f"attention_window={model.attention_window}: Megatron-DeepSpeed's GPT has no sliding-window "
                        "attention (use --framework megatron: --window-size)")
    # deepspeedai/Megatron-DeepSpeed@4efb479d: arguments.py has no ALiBi flag (megatron/enums.py:34 names it, nothing
    # reads it) and no LayerNorm after the embedding (language_model.py:158-170); the launch would train a model
    # with learned absolute positions and no embedding norm. (BigScience's fork, which trained BLOOM, had both.)
    if model.position == "alibi":
        problems.append("position=alibi: Megatron-DeepSpeed's arguments have no ALiBi; its launch would train learned "
                        "absolute positions")
    if model.embedding_norm:
        problems.append("embedding_norm: Megatron-DeepSpeed's GPT has no LayerNorm after the embedding")
    # ParallelAttention divides the key/value heads over tp (transformer.py:566-567, core.utils.divide asserts).
    if model.kv % layout.tp:
        problems.append(f"kv_heads({model.kv}) not a multiple of tp({layout.tp}): Megatron-DeepSpeed splits the "
                        "key/value heads over tp (transformer.py:566)")
    return problems


def compatibility_notes(layout: Layout, gpus_per_node: int) -> list[str]:
    """What the plan asks for that Megatron-DeepSpeed + DeepSpeed cannot run as written."""
    notes = []
    if layout.pp > 1 and layout.zero >= 2:
        notes.append(f"DeepSpeed's pipeline engine supports ZeRO stage 0 or 1 only; the plan has pp={layout.pp} with "
                     f"ZeRO-{layout.zero}: use Megatron-LM's distributed optimizer, or re-plan without pp")
    if layout.vpp > 1:
        notes.append(f"vpp={layout.vpp} (interleaved pipeline) is a Megatron-LM schedule that DeepSpeed's pipeline "
                     "engine lacks: run it with Megatron-LM, or accept the larger bubble of vpp=1")
    if layout.pp > 1 and (layout.first_stage_layers or layout.last_stage_layers):
        # GPTModelPipe partitions with partition_method='type:transformer' (frameworks/deepspeed.py): no per-rank counts.
        notes.append(f"first_stage_layers={layout.first_stage_layers}, last_stage_layers={layout.last_stage_layers}: "
                     "DeepSpeed's pipeline engine partitions the layers by its own method (type:transformer), not by "
                     "counts, so the launch runs its own split; run the planned one with Megatron-LM "
                     "(--pipeline-model-parallel-layout)")
    if layout.cp > 1:
        notes.append(f"cp={layout.cp}: Megatron-DeepSpeed has no context parallelism (its Ulysses "
                     "--ds-sequence-parallel-size is a different scheme); use Megatron-LM --context-parallel-size")
    if layout.dtype == "fp8":
        notes.append("fp8: ds_config.json runs bf16 and Megatron-DeepSpeed builds Transformer Engine's layer with fp8 "
                     "matmuls (--transformer-impl transformer_engine --fp8-hybrid, DelayedScaling): install "
                     "transformer-engine beside it")
    # _hierarchy_keys: no key groups the shards (MiCS's mics_shard_size is gone from today's DeepSpeed) or the
    # gradients alone, so ds_config.json runs flat ZeRO-3 over the whole data-parallel group.
    groups = [f"{name}={value}" for name, value in (("shard_group", layout.shard_group),
                                                   ("grad_shard_group", layout.grad_shard_group))
              if value is not None and value != layout.dp]
    if groups:
        notes.append(f"{', '.join(groups)}: DeepSpeed has no key for these groups; ds_config.json runs flat ZeRO-3 "
                     "over all data-parallel ranks (use --framework fsdp for HSDP)")
    return notes


def megatron_arguments(model: ModelSpec, layout: Layout, tokens: float | None, learning_rate: float | None) -> list[str]:
    """pretrain_gpt.py arguments for the model shape, the parallel layout and the schedule."""
    args = [f"--tensor-model-parallel-size {layout.tp}", f"--pipeline-model-parallel-size {layout.pp}"]
    if layout.pp == 1:
        args.append("--no-pipeline-parallel")  # Megatron-DeepSpeed: plain DeepSpeed engine, any ZeRO stage
    if layout.seq_parallel and layout.tp > 1:
        args.append("--sequence-parallel")
    args += [f"--num-layers {model.layers}", f"--hidden-size {model.hidden}",
             f"--ffn-hidden-size {model.ffn_size}", f"--num-attention-heads {model.heads}",
             f"--seq-length {model.seq_len}", f"--max-position-embeddings {model.seq_len}"]
    if model.kv != model.heads:
        args.append(f"--num-key-value-heads {model.kv}")
    # Per-head width: hidden / heads unless --kv-channels says otherwise (megatron/arguments.py:298-300, 625); the
    # attention projections and the rotary embedding take it (model/transformer.py:556-576, language_model.py:428-429).
    if model.head_dim and model.head_dim * model.heads != model.hidden:
        args.append(f"--kv-channels {model.head_dim}")
    args += _architecture_flags(model)
    args += [f"--micro-batch-size {layout.micro_batch}", f"--global-batch-size {layout.global_batch}"]
    samples = str(train_sequences(layout, tokens, model.seq_len)) if tokens else DEFAULT_SEQUENCES_WHEN_UNKNOWN
    args += [f"--train-samples {samples}"]
    if learning_rate and tokens:
        # Megatron-DeepSpeed's --lr-decay-style has no WSD (see NOTES_FILE above; the files' NOTES.md says so),
        # so the plan's WSD becomes cosine to MIN_LR_RATIO over the run, which Hagele et al. 2024 find matched by
        # WSD at equal length. ds_config.json gets no "scheduler": Megatron builds the scheduler and hands it to
        # deepspeed.initialize; a second one in the config would be ignored or, in older DeepSpeed, win.
        warmup = warmup_count(int(samples))
        args += [f"--lr {learning_rate:.3g}", f"--min-lr {learning_rate * MIN_LR_RATIO:.3g}", "--lr-decay-style cosine",
                 f"--lr-warmup-samples {warmup}", f"--lr-decay-samples {samples}"]
    else:  # no token count (simulate): the schedule is the user's to set
        args += ["--lr ${LR:?set LR (peak learning rate)}", "--lr-decay-style cosine",
                 f"--lr-warmup-fraction {WARMUP_FRACTION}"]
    args += [f"--weight-decay {WEIGHT_DECAY}", "--adam-beta1 0.9", "--adam-beta2 0.95", "--clip-grad 1.0",
             f"--attention-dropout {model.dropout:g}", f"--hidden-dropout {model.dropout:g}"]
    # fp8: Transformer Engine's layer in bf16 with fp8 matmuls (megatron/arguments.py:372-374, 506-519; DelayedScaling
    # in model/transformer.py:1716-1730 at deepspeedai/Megatron-DeepSpeed 4efb479d)
    args += {"bf16": ["--bf16"], "fp8": ["--bf16", "--transformer-impl transformer_engine", "--fp8-hybrid"],
             "fp16": ["--fp16"], "fp32": []}[layout.dtype]
    if layout.flash_attention_on:
        args.append("--use-flash-attn-v2")
    if layout.recompute == "full":
        args += ["--recompute-granularity full", "--recompute-method uniform", "--recompute-num-layers 1",
                 "--deepspeed-activation-checkpointing"]
        if layout.partition_activations_on:  # as ds_config's activation_checkpointing, which this flag overrides
            args.append("--partition-activations")
    elif layout.recompute == "selective":
        args.append("--recompute-granularity selective")
    if layout.activation_offload:  # checkpoints kept on the host, as the plan prices them (needs full recompute)
        args.append("--checkpoint-in-cpu")
    if layout.offload != "none":
        args.append("--cpu-optimizer")
    args += ["--deepspeed", "--deepspeed_config ds_config.json", f"--zero-stage {layout.zero}"]
    return args


def _architecture_flags(model: ModelSpec) -> list[str]:
    flags = []
    if model.mlp == "swiglu":
        flags.append("--swiglu")
    if model.norm == "rmsnorm":
        flags.append("--normalization rmsnorm")
    if model.position == "rotary":
        flags.append("--use-rotary-position-embeddings")
    if not model.tied_embeddings:
        flags.append("--untie-embeddings-and-output-weights")
    if not model.bias:
        flags.append("--disable-bias-linear")
    return flags


def schedule_difference(tokens: float | None) -> str:
    """How the emitted LR schedule differs from the plan's (see NOTES_FILE's comment above)."""
    emitted = (f"linear warm-up over {WARMUP_FRACTION:.0%} of the samples, then cosine decay to {MIN_LR_RATIO:.0%} of "
               "the peak over the rest of the run" + ("" if tokens else " (LR and TRAIN_SAMPLES are yours to set)"))
    return (f"the LR schedule differs from the plan's: Megatron-DeepSpeed has no WSD (--lr-decay-style constant, "
            f"linear, cosine or inverse-square-root, decaying from the end of the warm-up), so these files run "
            f"{emitted}, not a constant LR with a 1-sqrt cool-down over the last {COOLDOWN_FRACTION:.0%} to 0; the "
            "plan's loss curve assumes the WSD schedule (Hagele et al. 2024 find cosine matched by WSD at equal "
            "length); Megatron-LM (--emit with --framework megatron) runs WSD as planned")


def notes(layout: Layout, gpus_per_node: int, tokens: float | None) -> str:
    """NOTES.md: what the files do differently from the plan (the schedule) and what needs a hand."""
    difference = schedule_difference(tokens)
    items = [f"{difference[0].upper()}{difference[1:]}.",
             *(f"Warning: {note}." for note in compatibility_notes(layout, gpus_per_node))]
    return "# Notes on these files (planner --emit-deepspeed)\n\n" + "".join(f"- {item}\n" for item in items)


def hostfile(layout: Layout, gpus_per_node: int) -> str:
    """DeepSpeed hostfile template: one `host slots=N` line per node, the last with the rest of the plan's GPUs
    where they are not whole nodes; replace the names with yours.

    The slots are the ranks each host runs: launch.sh passes no --num_gpus, which would give every host that many
    (DeepSpeed 0.19.8 launcher/runner.py:400-404, apply_num_nodes_and_gpus), and the per-node launcher numbers
    the ranks by the running sum of the hosts' slots (launcher/launch.py:161-170), so the world is the plan's."""
    lines = ["# DeepSpeed hostfile: one line per node, `hostname slots=<ranks on that node>`.",
             "# Replace the placeholder names with your nodes (ssh-reachable without a password)."]
    lines += [f"node-{index:04d} slots={slots}" for index, slots in enumerate(ranks_per_node(layout, gpus_per_node))]
    return "\n".join(lines) + "\n"


def launch_script(model: ModelSpec, layout: Layout, node_count: int, gpus_per_node: int, tokens: float | None,
                  learning_rate: float | None, summary: str, save_interval: int = SAVE_INTERVAL_WITHOUT_PLAN) -> str:
    """bash script running pretrain_gpt.py under the `deepspeed` launcher with this plan's arguments."""
    # One node: --num_gpus ranks on this host. More: each host runs its hostfile slots (hostfile()).
    launcher = (f"deepspeed --num_gpus {layout.gpus}" if node_count == 1
                else f"deepspeed --hostfile hostfile --num_nodes {node_count}")
    arguments = megatron_arguments(model, layout, tokens, learning_rate)
    data_args = ['--data-path "$DATA_PATH"', "--tokenizer-type HFTokenizer", '--tokenizer-model "$TOKENIZER"',
                 "--split 98,2,0", "--log-interval 10",
                 # the evaluation cadence the plan prices (planner.cost.evaluation; frameworks/base.py EVAL_*)
                 f"--eval-interval {FRAMEWORKS['deepspeed'].eval_interval_steps:g}",
                 f"--eval-iters {FRAMEWORKS['deepspeed'].eval_iters:g}",
                 f"--save-interval {save_interval}", '--save "$CHECKPOINTS"', '--load "$CHECKPOINTS"']
    body = " \\\n  ".join([f"{launcher} \"$MEGATRON_DEEPSPEED\"/pretrain_gpt.py", *arguments, *data_args])
    schedule = ("# The peak learning rate is Step Law's estimate for this N and D: a starting point to sweep around.\n"
                "# Schedule: linear warm-up, cosine decay to 10% (Megatron-DeepSpeed has no WSD; the plan's WSD with a\n"
                "# 1-sqrt cool-down over the last 20% runs as-is under Megatron-LM and torchtitan)."
                if learning_rate else "# Set TRAIN_SAMPLES and LR: a layout alone does not say how long to train.")
    lines = [
        "#!/usr/bin/env bash",
        f"# {summary}",
        "# Generated by `planner --emit-deepspeed`. Argument names follow microsoft/Megatron-DeepSpeed's",
        "# pretrain_gpt.py; check them against your checkout.",
        schedule,
        *(f"# WARNING: {note}" for note in compatibility_notes(layout, gpus_per_node)),
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        ': "${MEGATRON_DEEPSPEED:?set MEGATRON_DEEPSPEED to your Megatron-DeepSpeed checkout}"',
        ': "${DATA_PATH:?set DATA_PATH to the preprocessed dataset prefix}"',
        f': "${{TOKENIZER:?set TOKENIZER to a Hugging Face tokenizer with vocab size {model.vocab}}}"',
        'CHECKPOINTS="${CHECKPOINTS:-checkpoints}"',
        *sequence_parallel_lines(layout, node_count),
        body,
    ]
    return "\n".join(lines) + "\n"


def sequence_parallel_lines(layout: Layout, node_count: int) -> list[str]:
    """--sequence-parallel makes Megatron-DeepSpeed's validate_args raise unless CUDA_DEVICE_MAX_CONNECTIONS is 1
    (megatron/arguments.py:401-407). The deepspeed launcher carries a variable to the other nodes only when it is
    named in .deepspeed_env in the launch folder or home (DeepSpeed launcher/runner.py:39-40)."""
    if not (layout.seq_parallel and layout.tp > 1):
        return []
    lines = ["export CUDA_DEVICE_MAX_CONNECTIONS=1  # --sequence-parallel requires it (megatron/arguments.py:401-407)"]
    if node_count > 1:
        lines.append("grep -qx 'CUDA_DEVICE_MAX_CONNECTIONS=1' .deepspeed_env 2>/dev/null "
                     "|| echo 'CUDA_DEVICE_MAX_CONNECTIONS=1' >> .deepspeed_env  # passed to every node")
    return lines


def deepspeed_files(model: ModelSpec, layout: Layout, gpus_per_node: int, tokens: float | None = None,
                    summary: str = "", save_interval: int = SAVE_INTERVAL_WITHOUT_PLAN) -> dict[str, str]:
    """File name -> text for everything --emit-deepspeed writes."""
    node_count = nodes(layout, gpus_per_node)
    lr = step_law_learning_rate(model.non_embedding_params, tokens) if tokens else None
    files = {
        "ds_config.json": json.dumps(ds_config(layout), indent=2) + "\n",
        "megatron_args.txt": "\n".join(megatron_arguments(model, layout, tokens, lr)) + "\n",
        "launch.sh": launch_script(model, layout, node_count, gpus_per_node, tokens, lr, summary, save_interval),
    }
    if node_count > 1:
        files["hostfile"] = hostfile(layout, gpus_per_node)
    files[NOTES_FILE] = notes(layout, gpus_per_node, tokens)
    return files
