"""Turn logs of runs people already did into runs-CSV rows (one row per log file).

The layout comes from what the log printed (DeepSpeed's engine config and user JSON, the flops
profiler summary, Megatron's arguments block), and so do the training stack (`framework`: which engine
printed, and its version) and `flash_attention` (Megatron's attention arguments); flags fill what the log lacks and win where both
say something (a disagreement is reported), except --global-batch against the batch the log measured its step
time at (measured_batches: refused, as is a flag that makes a row `planner doctor` would reject, calibrate.doctor.row_findings; a log
whose own layout doctor rejects is skipped). Megatron's world_size is the GPU count; DeepSpeed's config print
`world_size` counts them only without Megatron (else it is the data-parallel size). A layout whose
tp * pp * dp * cp is not the GPU count gives no row. The step time comes from, in this order of preference:

  1. Megatron  "elapsed time per iteration (ms)" (already an average over the log interval)
  2. DeepSpeed ThroughputTimer: global batch / CurrSamplesPerSec (whole-step wall time)
  3. DeepSpeed wall_clock_breakdown: fwd + bwd + step global timers (excludes data loading)
  4. DeepSpeed flops profiler "iter latency" (one profiled step)

Each is the median over the logged steps after dropping the first `skip` (warm-up). The method used
is written in the row's notes; the others, where present, go in extra columns for cross-checking.
The row holds only values the runs-CSV reader accepts (runs_csv.check_value): a step time or size the
log gives outside that (NaN, infinite, zero, negative, absurd) is a problem, never a cell.
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

from planner.errors import PlannerInputError
from planner.frameworks.deepspeed_v03 import RELEASES as DEEPSPEED_V03_RELEASES
from planner.profile.deepspeed_logs import LogProblem, ParsedLog
from planner.specs.pipeline_stages import stage_layers
from planner.profile.runs_csv import (COLUMNS, INT_COLUMNS, INT_RANGES, MEM_ALLOCATOR_PEAK, PIPELINE_SPLIT_COLUMNS,
                                     SIMULATION_COLUMNS,
                                     MeasuredRun, check_value)

LAYOUT_FIELDS = (
    "cluster", "gpus", "layers", "hidden", "heads", "kv_heads", "ffn", "mlp", "seq_len", "vocab", "tp", "pp",
    "dp", "cp", "vpp", "zero", "offload", "micro_batch", "global_batch", "recompute", "seq_parallel", "dtype",
    "flash_attention", "framework", *PIPELINE_SPLIT_COLUMNS,
)
# Optional columns of the runs CSV (data/spec/runs_csv.md) a row from a log may fill.
OPTIONAL_LOG_COLUMNS = ("framework", "flash_attention", "bias", "norm", "tied_embeddings", "dropout",
                        *PIPELINE_SPLIT_COLUMNS)


def _truthy(text: str | None) -> bool | None:
    if text is None:
        return None
    return text.strip().lower() in ("true", "1", "yes")


def _int_or_none(text) -> int | None:
    """A whole number, or None for text that is not one ("None", "2.5", "inf", "1e400")."""
    try:
        value = float(str(text).strip())
    except (TypeError, ValueError):
        return None
    return int(value) if math.isfinite(value) and value == int(value) else None


# Printed Megatron-LM arguments (names as in megatron/training/arguments.py) and DeepSpeed engine config
# keys that give a whole-number runs-CSV column; a number there the CSV cannot hold is a log problem.
NUMERIC_KEYS = {
    "world_size": "gpus", "num_layers": "layers", "hidden_size": "hidden", "num_attention_heads": "heads",
    "num_query_groups": "kv_heads", "ffn_hidden_size": "ffn", "seq_length": "seq_len", "padded_vocab_size": "vocab",
    "vocab_size": "vocab", "tensor_model_parallel_size": "tp", "pipeline_model_parallel_size": "pp",
    "context_parallel_size": "cp", "virtual_pipeline_model_parallel_size": "vpp", "data_parallel_size": "dp",
    "micro_batch_size": "micro_batch", "global_batch_size": "global_batch",
    "dp_world_size": "dp", "train_micro_batch_size_per_gpu": "micro_batch", "train_batch_size": "global_batch",
    "zero_optimization_stage": "zero",
}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def unusable_numbers(log: ParsedLog) -> tuple[list[LogProblem], set[str]]:
    """Numbers the log printed for layout columns that a runs CSV cannot hold (1e400, 0, -3, 2.5, 2**40),
    as problems with their line, and the columns they were for (left out of the row)."""
    problems, columns = [], set()
    for printed in (log.megatron_args, log.ds_config):
        for key, text in printed.items():
            column = NUMERIC_KEYS.get(key)
            if column is None or not _is_number(text.strip()):
                continue
            reason = check_value(column, text.strip())
            if reason is not None:
                problems.append(LogProblem(f"{log.path}:{log.lines.get(key, 0)}", f"{key} = {text.strip()}: {reason}; ignored"))
                columns.add(column)
    return problems, columns


def _checked_layout(layout: dict, where: str, skip_reporting: set[str], problems: list[LogProblem]) -> dict:
    """`layout` without values the runs-CSV reader would refuse (check_value), each reported once."""
    kept = {}
    for key, value in layout.items():
        reason = check_value(key, value) if key in INT_RANGES else None
        if reason is None:
            kept[key] = value
        elif key not in skip_reporting:
            problems.append(LogProblem(where, f"{reason}; left empty"))
    return kept


def megatron_layout(args: dict[str, str], padded_vocab: int | None = None) -> dict:
    """Layout from Megatron-LM's printed arguments (names as in megatron/training/arguments.py) and the
    vocabulary Megatron printed when it padded it (`padded_vocab`): the arguments are printed before the
    tokenizer is built, so they show padded_vocab_size only when it was given, and vocab_size is unpadded."""
    if not args:
        return {}
    get = lambda name: _int_or_none(args.get(name))  # noqa: E731
    layout = {
        "gpus": get("world_size"), "layers": get("num_layers"), "hidden": get("hidden_size"),
        "heads": get("num_attention_heads"), "ffn": get("ffn_hidden_size"), "seq_len": get("seq_length"),
        "vocab": get("padded_vocab_size") or padded_vocab or get("vocab_size"), "tp": get("tensor_model_parallel_size"),
        "pp": get("pipeline_model_parallel_size"), "cp": get("context_parallel_size"),
        "vpp": get("virtual_pipeline_model_parallel_size"), "dp": get("data_parallel_size"),
        "micro_batch": get("micro_batch_size"), "global_batch": get("global_batch_size"),
    }
    if layout["vpp"] is None and "virtual_pipeline_model_parallel_size" in args:
        layout["vpp"] = 1  # printed as None: no interleaving
    if _truthy(args.get("group_query_attention")):
        layout["kv_heads"] = get("num_query_groups")
    elif layout["heads"] is not None:
        layout["kv_heads"] = layout["heads"]
    if "swiglu" in args:
        layout["mlp"] = "swiglu" if _truthy(args["swiglu"]) else "gelu"
    layout |= megatron_bias_and_norm(args)
    layout |= megatron_tied_embeddings(args)
    layout |= megatron_dropout(args)
    layout |= megatron_pipeline_split(args, layout)
    layout["offload"] = "optimizer" if _truthy(args.get("optimizer_cpu_offload")) else "none"
    if "use_distributed_optimizer" in args:
        layout["zero"] = 1 if _truthy(args["use_distributed_optimizer"]) else 0
    if "sequence_parallel" in args:
        layout["seq_parallel"] = 1 if _truthy(args["sequence_parallel"]) else 0
    if "recompute_granularity" in args:
        granularity = args["recompute_granularity"].strip().lower()
        layout["recompute"] = granularity if granularity in ("full", "selective") else "none"
    if _truthy(args.get("checkpoint_activations")):
        # Megatron-DeepSpeed keeps the old flag for DeepSpeed's activation checkpointing and leaves
        # recompute_granularity None (megatron/arguments.py:136-143, 862-866 at deepspeedai/Megatron-DeepSpeed
        # 4efb479d); its ParallelTransformer then runs every layer through _checkpointed_forward, ahead of any
        # recompute_granularity (megatron/model/transformer.py:1691, 2082-2089): full recompute.
        layout["recompute"] = "full"
    if args.get("fp8") not in (None, "None", "False", "false"):
        layout["dtype"] = "fp8"
    elif _truthy(args.get("bf16")):
        layout["dtype"] = "bf16"
    elif _truthy(args.get("fp16")):
        layout["dtype"] = "fp16"
    elif "bf16" in args or "fp16" in args:
        layout["dtype"] = "fp32"
    if layout["dp"] is None and layout["gpus"] and all(layout[k] for k in ("tp", "pp")):
        layout["dp"] = layout["gpus"] // (layout["tp"] * layout["pp"] * (layout["cp"] or 1))
    return {k: v for k, v in layout.items() if v is not None}


def megatron_pipeline_split(args: dict[str, str], layout: dict) -> dict:
    """The transformer layers a Megatron log puts on its first and last pipeline rank, as the runs CSV's
    first_stage_layers / last_stage_layers, where they are not the split the planner takes for a row that leaves them
    empty (planner.specs.pipeline_stages.stage_layers).

    `--decoder-first/last-pipeline-num-layers` set them outright. `--account-for-embedding-in-pipeline-split` and
    `--account-for-loss-in-pipeline-split` count the embedding and the loss as a layer each: pp divides the layers
    plus those slots, and the end rank with a slot builds one layer fewer (NVIDIA/Megatron-LM@d98e8a64
    megatron/core/transformer/transformer_block.py:76-203, get_num_layers_to_build). Megatron refuses both kinds
    together (:106-112). A layout string (`--pipeline-model-parallel-layout`) is pipeline_layout_problem's."""
    get = lambda name: _int_or_none(args.get(name))  # noqa: E731
    first, last = get("decoder_first_pipeline_num_layers"), get("decoder_last_pipeline_num_layers")
    if first is not None or last is not None:
        return {k: v for k, v in (("first_stage_layers", first), ("last_stage_layers", last)) if v is not None and v >= 1}
    embedding, loss = (bool(_truthy(args.get(f"account_for_{slot}_in_pipeline_split"))) for slot in ("embedding", "loss"))
    layers, pp, vpp = layout.get("layers"), layout.get("pp"), layout.get("vpp") or 1
    if not (embedding or loss) or not layers or not pp or pp == 1 or (layers + embedding + loss) % pp:
        return {}  # nothing set, or a split Megatron itself refuses
    per_rank = (layers + embedding + loss) // pp
    split = {"first_stage_layers": per_rank - 1} if embedding else {}
    split |= {"last_stage_layers": per_rank - 1} if loss else {}
    as_set = stage_layers(layers, pp, vpp, first_set=split.get("first_stage_layers", 0),
                          last_set=split.get("last_stage_layers", 0))
    if [int(x) for x in as_set] == [int(x) for x in stage_layers(layers, pp, vpp)]:
        return {}  # the planner's own split of that layout is the same (both slots where pp x vpp divides layers + 2)
    return split


def pipeline_layout_problem(log: ParsedLog) -> str | None:
    """Why a Megatron log that set a pipeline layout string gives no row, or None. The runs CSV holds the end ranks'
    layers (first_stage_layers, last_stage_layers) and splits the rest as Megatron does; a layout string places
    every virtual stage's layers (megatron/core/transformer/pipeline_parallel_layer_layout.py), which it cannot
    hold, so the row would be simulated on another split."""
    text = (log.megatron_args.get("pipeline_model_parallel_layout") or "").strip()
    if text in ("", "None"):
        return None
    return (f"pipeline_model_parallel_layout = {text}: a pipeline layout string, which the runs CSV cannot describe "
            "(it holds the first and last ranks' layers only: first_stage_layers, last_stage_layers); file skipped")


def megatron_bias_and_norm(args: dict[str, str]) -> dict:
    """The runs CSV's bias and norm columns from Megatron's printed arguments. `--normalization` (default
    'LayerNorm', choices LayerNorm / RMSNorm) and `--disable-bias-linear` (store_false into add_bias_linear, so
    biases unless given) (NVIDIA/Megatron-LM@7c00175e, core_r0.11.0, megatron/training/arguments.py:1066-1068,
    1451-1453). Logs printed before these arguments existed (add_bias_linear came with 2cc3dac7 of 2023-04-01,
    normalization with 6ff46266 of 2023-07-31) ran Megatron's GPT, whose linears all have biases (mpu/layers.py
    bias=True, :225, :324 at tag v2.5) and whose norms are LayerNorm (model/transformer.py:405, 420, 590): so
    does a Megatron-DeepSpeed log. The column's bias means every linear and norm has one: a LayerNorm model
    without linear biases is written bias 0 (its norms' bias vectors, 2h per layer, are then not counted)."""
    normalization = (args.get("normalization") or "LayerNorm").strip().lower()
    norm = {"layernorm": "layernorm", "rmsnorm": "rmsnorm"}.get(normalization)
    bias = _truthy(args.get("add_bias_linear")) if "add_bias_linear" in args else True
    return {"norm": norm, "bias": int(bool(bias))} if norm else {}


def megatron_tied_embeddings(args: dict[str, str]) -> dict:
    """The runs CSV's tied_embeddings column from Megatron's printed arguments: `--untie-embeddings-and-output-
    weights` (store_true; NVIDIA/Megatron-LM@d98e8a64 megatron/training/arguments.py:2460, added by 82c7ba57 of
    2022-12-07, and in deepspeedai/Megatron-DeepSpeed@4efb479d megatron/arguments.py:680, whose GPTModelPipe ties through
    TiedLayerSpec unless it is given). A Megatron log printed before the argument existed ran a tied GPT."""
    if not args:
        return {}
    return {"tied_embeddings": int(not _truthy(args.get("untie_embeddings_and_output_weights", "False")))}


def megatron_dropout(args: dict[str, str]) -> dict:
    """The runs CSV's dropout column from Megatron's printed `attention_dropout` and `hidden_dropout` (TransformerConfig
    fields, 0.1 by default: NVIDIA/Megatron-LM@d98e8a64 megatron/core/transformer/transformer_config.py:188, 191, made
    arguments by megatron/training/arguments.py:2373; `--attention-dropout` / `--hidden-dropout` in older Megatron-LM
    and Megatron-DeepSpeed, the same defaults). The planner prices one probability for both (only whether it is
    above 0 changes the masks and passes it prices): the larger is taken, so a model that keeps either mask is
    priced with its masks. A log that prints neither (cut before the arguments' end) leaves the column empty."""
    printed = [_probability_or_none(args.get(name)) for name in ("attention_dropout", "hidden_dropout")]
    printed = [value for value in printed if value is not None]
    return {"dropout": max(printed)} if printed else {}


def _probability_or_none(text) -> float | None:
    """A dropout probability Megatron printed (0 up to, not including, 1), or None for text that is not one."""
    try:
        value = float(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if 0.0 <= value < 1.0 else None


def _ran_deepspeed(log: ParsedLog) -> bool:
    """The DeepSpeed engine ran: it printed its version, config, timers, throughput or flops profile, or
    Megatron-DeepSpeed's arguments say `deepspeed True`."""
    return bool(log.ds_version or log.ds_config or log.ds_user_config is not None or log.timers or log.micro_timers
                or log.throughput or log.flops_profile or _truthy(log.megatron_args.get("deepspeed")))


def framework_from_log(log: ParsedLog) -> str | None:
    """The runs-CSV `framework` the log shows: `deepspeed` (DeepSpeed, Megatron-DeepSpeed), `deepspeed-v0.3` for
    the engine releases with per-parameter ZeRO-3 collectives (frameworks.deepspeed_v03.RELEASES), `megatron`
    for a Megatron-LM arguments block without DeepSpeed, `megatron-2022` when that block has no `transformer_impl`
    (the argument came with Transformer Engine, NVIDIA/Megatron-LM@3499542e of 2022-12-21, and `_print_args`
    prints every argument: such a Megatron-LM predates the move into Megatron-Core, frameworks/megatron_2022.py);
    None when the log shows neither."""
    if _ran_deepspeed(log):
        first, last = DEEPSPEED_V03_RELEASES
        return "deepspeed-v0.3" if log.ds_version and first <= log.ds_version <= last else "deepspeed"
    if not log.megatron_args:
        return None
    return "megatron" if "transformer_impl" in log.megatron_args else "megatron-2022"


def flash_attention_from_log(args: dict[str, str]) -> int | None:
    """1 when Megatron-LM's printed arguments put attention on a fused (flash or cuDNN) kernel, 0 on the unfused
    softmax, None when they do not say (NVIDIA/Megatron-LM@d98e8a64):
    - `attention_backend` (Megatron-Core >= 0.10): AttnBackend.local and .unfused run the unfused softmax;
      .flash, .fused and .auto leave Transformer Engine's flash and cuDNN fused attention enabled, which TE
      prefers where they run (megatron/core/models/common/language_module/language_module.py:129-147);
    - else `use_flash_attn True` (the flash-attn package, --use-flash-attn, megatron/training/arguments.py:2910);
    - else `transformer_impl transformer_engine`: TE's DotProductAttention, flash and fused attention on by
      default (NVTE_FLASH_ATTN / NVTE_FUSED_ATTN unset mean 1); `local` without --use-flash-attn: unfused."""
    backend = args.get("attention_backend", "").strip().rsplit(".", 1)[-1].lower()
    if backend in ("local", "unfused"):
        return 0
    if backend in ("flash", "fused", "auto"):
        return 1
    if _truthy(args.get("use_flash_attn")):
        return 1
    implementation = args.get("transformer_impl", "").strip().lower()
    if implementation == "transformer_engine":
        return 1
    if implementation == "local" and _truthy(args.get("use_flash_attn")) is False:
        return 0
    return None


def printed_world_is_data_parallel(log: ParsedLog) -> bool:
    """DeepSpeed's config print `world_size` is the data-parallel size when the engine got an mpu
    (deepspeed/runtime/config.py:458-463, DeepSpeed 0.19.8): Megatron-DeepSpeed always gives one, its own or,
    with pipeline parallelism, the pipeline module's grid (deepspeed/__init__.py:582-583; Megatron-DeepSpeed
    megatron/training.py:539-543), and a model-parallel size above 1 in the groups summary comes from one."""
    return bool(log.megatron_args) or (_int_or_none(log.ds_config.get("mp_world_size")) or 1) > 1


def world_size_problems(log: ParsedLog, layout: dict) -> list[LogProblem]:
    """DeepSpeed's printed world_size set against Megatron's: under an mpu it is the data-parallel size, so it
    may differ from Megatron's world_size (the GPU count, which the row takes); said when they differ, and
    flagged when it is not the data-parallel size either."""
    deepspeed_world = _int_or_none(log.ds_config.get("world_size"))
    megatron_world = _int_or_none(log.megatron_args.get("world_size"))
    if deepspeed_world is None or megatron_world is None or deepspeed_world == megatron_world:
        return []
    where = f"{log.path}:{log.lines.get('world_size', 0)}"
    data_parallel = layout.get("dp")
    if deepspeed_world == data_parallel:
        why = f"it is the data-parallel size ({data_parallel}), as DeepSpeed prints it under Megatron's mpu"
    else:
        why = (f"it is not the data-parallel size ({data_parallel if data_parallel else 'not known'}) either "
               "(DeepSpeed prints that under Megatron's mpu): check the log")
    return [LogProblem(where, f"DeepSpeed world_size {deepspeed_world} differs from Megatron's world_size "
                              f"{megatron_world}; gpus = {megatron_world} from Megatron; {why}")]


def mixture_of_experts_problem(log: ParsedLog) -> str | None:
    """Why a log of a mixture-of-experts model gives no row, or None. The runs CSV has no expert columns, so the
    row would describe (and validate would simulate) the dense model of the same shape. Megatron-LM prints
    num_experts None for a dense model (megatron/training/arguments.py, --num-experts), Megatron-DeepSpeed a list
    that is [1] for one (megatron/arguments.py:608 at deepspeedai/Megatron-DeepSpeed 4efb479d)."""
    counts = [int(n) for n in re.findall(r"\d+", log.megatron_args.get("num_experts", ""))]
    if not any(n > 1 for n in counts):
        return None
    return (f"num_experts = {log.megatron_args['num_experts'].strip()}: a mixture-of-experts run, which the runs CSV "
            "cannot describe (no expert columns: the row would be the dense model); file skipped")


def ulysses_problem(log: ParsedLog, flags: dict) -> str | None:
    """Why a DeepSpeed-Ulysses log (groups summary sequence_parallel_size > 1) gives no row unless --cp says how to
    describe it, or None. The engine's printed world_size is then the GPU count over the sequence-parallel size
    (deepspeed/runtime/config.py:458-470, DeepSpeed 0.19.8), so the row counted too few GPUs and no sequence split:
    the runs CSV's cp is context parallelism, which Ulysses is not (planner/frameworks/deepspeed.py)."""
    size = _int_or_none(log.ds_config.get("sequence_parallel_size"))
    if size is None or size <= 1 or flags.get("cp") is not None:
        return None
    # --framework other too: the deepspeed stack has no context parallelism (frameworks/deepspeed.py), so a row at
    # cp > 1 under it is one doctor rejects (ingest refuses it: doctor_rejection).
    return (f"DeepSpeed-Ulysses sequence parallelism (sequence_parallel_size={size}): the printed world_size leaves "
            "its GPUs out and the runs CSV has no Ulysses column; file skipped (pass --gpus, --cp and --framework "
            "other to describe it as context parallelism)")


def layout_product_problem(layout: dict) -> str | None:
    """Why tp * pp * dp * cp cannot be the GPU count (a row validate would refuse), or None."""
    if not all(layout.get(key) for key in ("gpus", "tp", "pp", "dp")):
        return None
    tp, pp, dp, cp = (layout.get(key) or 1 for key in ("tp", "pp", "dp", "cp"))
    if tp * pp * dp * cp == layout["gpus"]:
        return None
    return (f"tp({tp}) * pp({pp}) * dp({dp}) * cp({cp}) = {tp * pp * dp * cp} != gpus({layout['gpus']}); "
            "file skipped (pass the right --gpus/--tp/--pp/--dp/--cp)")


def measured_batches(log: ParsedLog, from_log: dict) -> set[int]:
    """The global batches the log measured step times at: those Megatron's iteration lines print (several under
    batch-size ramp-up), else the one the log's layout states (DeepSpeed's engine runs every step at its
    train_batch_size; Megatron's global_batch_size); empty when the log states none."""
    iterations = {int(e["global_batch"]) for _, e in log.megatron_iterations if "global_batch" in e}
    if iterations:
        return iterations
    return {from_log["global_batch"]} if "global_batch" in from_log else set()


def _batch_source(log: ParsedLog, engine_batch: int | None) -> str:
    """Where the log states the batch it measured at, for an error message."""
    if any("global_batch" in e for _, e in log.megatron_iterations):
        return "Megatron's logged iterations"
    key = "train_batch_size" if engine_batch is not None else "global_batch_size"
    owner = "the DeepSpeed engine's" if engine_batch is not None else "Megatron's"
    line = log.lines.get(key)
    return f"{owner} {key}" + (f", line {line}" if line else "")


def refuse_relabelled_batch(log: ParsedLog, from_log: dict, layout: dict, engine_batch: int | None) -> None:
    """Raise when --global-batch names a batch the log did not measure at.

    Every step time the log gives was measured at a batch it states, so a flag that names another would put the
    time of one batch under another: for DeepSpeed the engine's rate and timers are of its train_batch_size
    (measurements() never rescales them), for Megatron measurements() keeps only the iterations at the row's batch
    and, with none there, found "no step time" (which hid the cause). Both paths refuse the same way: a flag fills
    a batch the log lacks; it cannot relabel one it measured. A batch Megatron logged during ramp-up is measured:
    the flag picks those iterations."""
    flag = layout.get("global_batch")
    measured = measured_batches(log, from_log)
    if flag is None or flag == from_log.get("global_batch") or not measured or flag in measured:
        return
    shown = ", ".join(str(batch) for batch in sorted(measured))
    raise PlannerInputError(
        f"{log.path}: --global-batch {flag}: the log's step time was measured at global batch {shown} "
        f"({_batch_source(log, engine_batch)}); a flag fills a batch the log lacks and cannot relabel a measured one: "
        f"leave --global-batch out or pass {shown if len(measured) == 1 else 'one of ' + shown}")


# A layout column named in a doctor finding ("micro_batch(3)", "heads (16)", "8 GPUs"); longest first, so kv_heads
# is not heads.
_COLUMN_IN_TEXT = re.compile(r"\b(" + "|".join(sorted(LAYOUT_FIELDS, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def _named_values(text: str, layout: dict, from_log: dict, flags: dict) -> tuple[str, bool]:
    """The values `text` names, grouped by where they came from (flags, the log, worked out), and whether a flag
    is among them: the user sees which side to fix."""
    groups: dict[str, list[str]] = {"from the flags": [], "from the log": [], "worked out from the others": []}
    columns = [name.lower() for name in _COLUMN_IN_TEXT.findall(text)]
    if re.search(rf"\b{re.escape(str(layout.get('framework')))}\b has no", text):
        columns.append("framework")  # the stack's checks name it by value ("deepspeed has no context parallelism")
    for column in dict.fromkeys(columns):
        if column not in layout:
            continue
        if column in flags and flags[column] == layout[column]:
            groups["from the flags"].append(f"--{column.replace('_', '-')} {layout[column]}")
        else:
            origin = "from the log" if column in from_log else "worked out from the others"
            groups[origin].append(f"{column} {layout[column]}")
    named = "; ".join(f"{', '.join(values)} {origin}" for origin, values in groups.items() if values)
    return named, bool(groups["from the flags"])


def doctor_rejection(run: MeasuredRun, path: str, layout: dict, from_log: dict, flags: dict) -> str | None:
    """Why `planner doctor` would reject the row (ingest must not write a row its own checker refuses), or None.
    Raises when a flag is part of it: that is bad input (exit 2, nothing written). A log whose own layout is
    rejected gives the reason, and the file is skipped as other unusable logs are (exit 1 if others gave rows)."""
    from planner.calibrate.doctor import row_findings

    findings = row_findings(run, str(path))
    if not findings:
        return None
    text = "; ".join(findings)
    named, by_flag = _named_values(text, layout, from_log, flags)
    named = f" ({named})" if named else ""
    if by_flag:
        raise PlannerInputError(f"{path}: planner doctor would reject the row: {text}{named}; pass flags that agree "
                                "with the log, or leave them out; nothing written")
    return f"planner doctor would reject the row of the log's own layout: {text}{named}; file skipped"


def deepspeed_layout(log: ParsedLog) -> dict:
    """Layout from DeepSpeed's printed engine config, user JSON and flops profiler summary."""
    printed = log.ds_config
    # A user config that is not a JSON object (a number, a list) says nothing about the layout.
    user = log.ds_user_config if isinstance(log.ds_user_config, dict) else {}
    layout: dict = {}
    # The config print's world_size counts GPUs only when no mpu was passed (see printed_world_is_data_parallel);
    # the flops profiler prints the engine's dist.get_world_size() (runtime/engine.py:1945).
    printed_world = None if printed_world_is_data_parallel(log) else _int_or_none(printed.get("world_size"))
    world = printed_world or _int_or_none(log.flops_profile.get("world size"))
    if world:
        layout["gpus"] = world
    data_parallel = _int_or_none(printed.get("dp_world_size")) or _int_or_none(log.flops_profile.get("data parallel size"))
    if data_parallel:
        layout["dp"] = data_parallel
    model_parallel = _int_or_none(printed.get("mp_world_size")) or _int_or_none(log.flops_profile.get("model parallel size"))
    if model_parallel == 1:
        # No tensor split. Not "no pipeline" as well: under Megatron-DeepSpeed's pipeline engine the mpu is the
        # PipelineParallelGrid, whose model-parallel size is the tensor dimension alone (runtime/pipe/topology.py:
        # model_parallel_size = topo.get_dim('model'); engine.py: mp_world_size from the mpu). Every rank a data
        # replica is what says there is no pipeline either.
        layout["tp"] = 1
        if data_parallel and world and data_parallel == world:
            layout.update(pp=1, vpp=1)
    if _int_or_none(printed.get("sequence_parallel_size")) == 1:
        layout["cp"] = 1
    micro = _int_or_none(printed.get("train_micro_batch_size_per_gpu")) or _int_or_none(user.get("train_micro_batch_size_per_gpu")) \
        or _int_or_none(log.flops_profile.get("batch size per GPU"))
    if micro:
        layout["micro_batch"] = micro
    total = _int_or_none(printed.get("train_batch_size")) or _int_or_none(user.get("train_batch_size"))
    accumulation = (_int_or_none(printed.get("gradient_accumulation_steps"))
                    or _int_or_none(user.get("gradient_accumulation_steps")))
    if not total and micro and data_parallel and accumulation:
        # DeepSpeed's batch identity: train_batch_size = micro-batch x gradient accumulation x data parallel.
        total = micro * accumulation * data_parallel
    if total:
        layout["global_batch"] = total
    zero = user.get("zero_optimization") if isinstance(user.get("zero_optimization"), dict) else {}
    stage = _int_or_none(printed.get("zero_optimization_stage"))
    stage = stage if stage is not None else _int_or_none(zero.get("stage"))
    if stage is not None:
        layout["zero"] = stage
    offload = _offload(zero, printed.get("zero_config", ""))
    if offload:
        layout["offload"] = offload
    dtype = _dtype(user, printed)
    if dtype:
        layout["dtype"] = dtype
    return layout


def _offload(zero: dict, printed_zero: str) -> str | None:
    """none / optimizer / optimizer+params from the user JSON or the printed zero_config."""
    if not zero and not printed_zero:
        return None

    def offloaded(name: str) -> bool:
        entry = zero.get(name)
        if isinstance(entry, dict) and str(entry.get("device", "none")).lower() not in ("none", ""):
            return True
        return re.search(name + r"=DeepSpeedZeroOffload\w*Config\(device='(cpu|nvme)'", printed_zero) is not None

    if offloaded("offload_param"):
        return "optimizer+params"
    return "optimizer" if offloaded("offload_optimizer") else "none"


def _dtype(user: dict, printed: dict) -> str | None:
    for key, name in (("bf16", "bf16"), ("bfloat16", "bf16"), ("fp16", "fp16")):
        if isinstance(user.get(key), dict) and _truthy(str(user[key].get("enabled", False))):
            return name
    if _truthy(printed.get("bfloat16_enabled")) or "enabled=True" in printed.get("bfloat16_config", ""):
        return "bf16"
    # DeepSpeed 0.19 prints `float16_config ... enabled=True` (no fp16_enabled line).
    if _truthy(printed.get("fp16_enabled")) or "enabled=True" in printed.get("float16_config", ""):
        return "fp16"
    if user or printed:
        return "fp32"
    return None


def _median_after(entries: list, skip: int) -> tuple[float, int]:
    kept = entries[skip:] if len(entries) > skip else entries
    return statistics.median(kept), len(kept)


def measurements(log: ParsedLog, global_batch: int | None, skip: int,
                 problems: list[LogProblem] | None = None, accumulation: int | None = None,
                 logged: dict | None = None, engine_batch: int | None = None) -> tuple[dict, str | None]:
    """Candidate step times (s) and extra figures; returns (values, name of the method chosen).

    A step time the runs CSV cannot hold (planner.profile.runs_csv.check_value: positive, finite, in
    range) is never chosen: it is reported in `problems` and the next method is tried. Megatron iterations
    logged at another global batch (batch-size ramp-up) are left out. `logged` receives, per method, how many
    logged steps its median had to work with (the warm-up ones are in it when there were no more than `skip`).
    With gradient accumulation (`accumulation` > 1) the flops profiler's iter latency may cover one micro-batch,
    not the step: kept as a figure, never chosen. The ThroughputTimer's rate is the engine's train_batch_size over
    the step time (deepspeed/runtime/engine.py:637-638, deepspeed/utils/timer.py:271, DeepSpeed 0.19.8), so the
    step time divides `engine_batch` (what the engine printed) by it when known, never a batch given as a flag."""
    problems = problems if problems is not None else []
    logged = logged if logged is not None else {}
    values: dict[str, float] = {}
    iterations = [e for _, e in log.megatron_iterations]
    if iterations and global_batch:
        at_batch = [e for e in iterations if e.get("global_batch", global_batch) == global_batch]
        if len(at_batch) < len(iterations):
            problems.append(LogProblem(log.path, f"{len(iterations) - len(at_batch)} logged iteration(s) at another "
                                                 f"global batch (ramp-up) left out; step time at {global_batch}"))
        iterations = at_batch
    if iterations:
        values["megatron_step_time_s"], _ = _median_after([e["elapsed_s"] for e in iterations], skip)
        logged["megatron_step_time_s"] = len(iterations)
        # The same iterations as the step time (_median_after: the warm-up ones too when there are no more than
        # `skip`), so the row's TFLOP/s and step time describe the same steps.
        kept = iterations[skip:] if len(iterations) > skip else iterations
        tflops = [e["tflops"] for e in kept if "tflops" in e]
        if tflops:
            values["tflops_per_gpu"] = statistics.median(tflops)
    timer_batch = engine_batch or global_batch
    if log.throughput and timer_batch:
        values["throughput_step_time_s"], _ = _median_after([timer_batch / e["samples_per_s"] for _, e in log.throughput], skip)
        logged["throughput_step_time_s"] = len(log.throughput)
    timers = []
    for number, timer in log.timers:  # each entry is finite and >= 0 (the parser checks); their sum must be > 0
        if sum(timer.get(k, 0.0) for k in ("fwd", "bwd", "step")) > 0:
            timers.append((number, timer))
        else:
            problems.append(LogProblem(f"{log.path}:{number}", "wall_clock_breakdown fwd + bwd + step is 0 ms; line skipped"))
    if timers:
        totals = [sum(t.get(k, 0.0) for k in ("fwd", "bwd", "step")) for _, t in timers]
        values["timer_step_time_s"], _ = _median_after(totals, skip)
        logged["timer_step_time_s"] = len(totals)
        for key, name in (("fwd", "fwd_s"), ("bwd", "bwd_s"), ("bwd_allreduce", "bwd_allreduce_s"), ("step", "opt_s")):
            series = [t[key] for _, t in timers if key in t]
            if series:
                values[name], _ = _median_after(series, skip)
    if "iter latency" in log.flops_profile:
        values["flops_profiler_step_time_s"] = log.flops_profile["iter latency"]
    if "flops_per_gpu" in log.flops_profile:
        values["flops_profiler_tflops_per_gpu"] = log.flops_profile["flops_per_gpu"] / 1e12
    for method in STEP_TIME_METHODS:
        if method not in values:
            continue
        if method == "flops_profiler_step_time_s" and (accumulation or 1) > 1:
            # A profile may span one micro-batch or the whole step (0.019 s and 0.050 s in one log of two
            # micro-batches a step): kept as a figure, not taken as the step time.
            problems.append(LogProblem(log.path, f"flops profiler iter latency with {accumulation} micro-batches "
                                                 "a step (gradient accumulation) may cover one of them; not used "
                                                 "as the step time"))
            continue
        reason = check_value("step_time_s", values[method])
        if reason is None:
            return values, method
        problems.append(LogProblem(log.path, f"{METHOD_TEXT[method]} gives a step time of {values[method]:.6g} s: "
                                             f"{reason}; not used"))
        del values[method]
    return values, None


STEP_TIME_METHODS = ("megatron_step_time_s", "throughput_step_time_s", "timer_step_time_s", "flops_profiler_step_time_s")


METHOD_TEXT = {
    "megatron_step_time_s": "Megatron 'elapsed time per iteration'",
    "throughput_step_time_s": "DeepSpeed ThroughputTimer (global batch / CurrSamplesPerSec)",
    "timer_step_time_s": "DeepSpeed wall_clock_breakdown fwd+bwd+step",
    "flops_profiler_step_time_s": "DeepSpeed flops profiler iter latency (one step)",
}


def _layout_from_log(log: ParsedLog, reported: set[str], problems: list[LogProblem]) -> tuple[dict, int | None]:
    """The layout the log printed, checked, and the global batch the DeepSpeed engine printed (or None).

    The engine's own batch is kept apart because measurements() divides it, never a flag's, by the
    ThroughputTimer's rate; Megatron's and DeepSpeed's prints are merged here so flags can be weighed
    against one layout."""
    megatron, deepspeed = megatron_layout(log.megatron_args, log.padded_vocab), deepspeed_layout(log)
    problems += world_size_problems(log, megatron | deepspeed)
    if "dtype" in megatron and deepspeed.get("dtype") == "fp32":
        # Megatron-DeepSpeed: DeepSpeed's config says fp32 only because it names no half precision; Megatron's
        # arguments (bf16 / fp16) say what the model ran in.
        del deepspeed["dtype"]
    from_log = megatron | deepspeed
    stack = {"framework": framework_from_log(log), "flash_attention": flash_attention_from_log(log.megatron_args)}
    from_log |= {key: value for key, value in stack.items() if value is not None}
    megatron_batches = [e["global_batch"] for _, e in log.megatron_iterations if "global_batch" in e]
    if "global_batch" not in from_log and megatron_batches:
        from_log["global_batch"] = int(megatron_batches[-1])
    from_log = _checked_layout(from_log, log.path, reported, problems)
    return from_log, from_log.get("global_batch") if "global_batch" in deepspeed else None


def _layout_with_flags(from_log: dict, flags: dict, path: str, problems: list[LogProblem]) -> dict:
    """The log's layout with the layout flags laid over it: a flag wins, and a disagreement is reported so an
    override never passes silently; a flag the runs CSV cannot hold is reported and not used."""
    layout = dict(from_log)
    for key, value in flags.items():
        if key in LAYOUT_FIELDS and value is not None:
            reason = check_value(key, value) if key in INT_RANGES else None
            if reason is not None:  # a flag the runs CSV cannot hold (the CLI takes whole numbers up to 2**53)
                problems.append(LogProblem(path, f"--{key.replace('_', '-')} {value}: {reason}; not used"))
                continue
            if key in from_log and from_log[key] != value:
                problems.append(LogProblem(path, f"--{key.replace('_', '-')} {value} overrides {key}={from_log[key]} from the log"))
            layout[key] = value
    return layout


def _with_global_batch(layout: dict) -> dict:
    """The layout with a missing global batch taken as micro_batch * dp, the step time's batch when the log and
    flags name none."""
    if "global_batch" not in layout and all(k in layout for k in ("micro_batch", "dp")):
        return layout | {"global_batch": layout["micro_batch"] * layout["dp"]}  # no gradient accumulation known
    return layout


def _accumulation(layout: dict) -> int | None:
    """Micro-batches a step (gradient accumulation), or None when the layout cannot say; measurements() needs it
    to judge whether the flops profiler's latency covers the whole step."""
    per_step = layout.get("micro_batch", 0) * layout.get("dp", 0)
    return layout["global_batch"] // per_step if per_step and layout.get("global_batch") else None


def _peak_memory_gib(log: ParsedLog, problems: list[LogProblem]) -> float | None:
    """The largest memory figure the log printed, or None (reported) when the runs CSV could not hold it."""
    memory = [gib for _, gib in log.max_memory_gib]
    peak = max(memory) if memory else None
    if peak is not None and check_value("mem_gib", peak) is not None:
        problems.append(LogProblem(log.path, f"peak memory {peak:.6g} GiB: {check_value('mem_gib', peak)}; "
                                             "mem_gib left empty (a CPU run reads 0)"))
        peak = None
    return peak


def _warm_up_included(log: ParsedLog, values: dict, method: str, logged: dict, skip: int,
                      problems: list[LogProblem]) -> bool:
    """Whether the chosen step time had to keep the warm-up steps (no more logged steps than `skip`); says so in
    `problems`, since such a row is low confidence."""
    warm_up_in = skip > 0 and logged.get(method, skip + 1) <= skip
    if warm_up_in:  # too few logged steps to leave the warm-up out
        # tflops_per_gpu comes from Megatron's iterations (measurements): warm-up in when they were as few.
        tflops_warm = "tflops_per_gpu" in values and logged.get("megatron_step_time_s", skip + 1) <= skip
        also = ", as does tflops_per_gpu" if tflops_warm else ""
        problems.append(LogProblem(log.path, f"only {logged[method]} logged step(s), no more than --skip {skip}: the "
                                             f"step time includes the warm-up{also} (confidence low)"))
    return warm_up_in


def _notes(log: ParsedLog, method: str, logged: dict, skip: int, warm_up_in: bool, layout_from_flags: list[str],
           overridden: dict) -> str:
    """The row's notes: which file and method gave the step time, over which steps, what came from flags and what
    flags replaced (`overridden`: the log's values), so a reader of the CSV can judge the row without the log."""
    notes = (f"ingested from {Path(log.path).name}; step time: {METHOD_TEXT[method]}, "
             + (f"median of all {logged[method]} logged step(s), warm-up included" if warm_up_in
                else f"median after skipping {skip} logged step(s)"))
    if layout_from_flags:
        notes += f"; from flags: {', '.join(layout_from_flags)}"
    if overridden:
        notes += "; flags override the log: " + ", ".join(f"{k} (log {v})" for k, v in overridden.items())
    return notes


def _column_fields(layout: dict) -> dict:
    """The layout's values that are runs-CSV columns, whole-number columns as int (a flag may come as a float)."""
    fields = {k: v for k, v in layout.items() if k in COLUMNS}
    for key in INT_COLUMNS:
        if key in fields and fields[key] is not None:
            fields[key] = int(fields[key])
    return fields


def _extra_columns(values: dict, method: str, layout: dict) -> dict[str, str]:
    """The step-time methods not chosen and the other figures, kept for cross-checking, plus the stack columns."""
    extra = {key: f"{value:.6g}" for key, value in values.items() if key != method and math.isfinite(value)}
    # The stack columns are optional columns of the runs CSV (spec/runs_csv.md), kept with the extra ones.
    extra |= {key: str(layout[key]) for key in OPTIONAL_LOG_COLUMNS if key in layout}
    return extra


def row_from_log(log: ParsedLog, flags: dict, row_id: str, skip: int = 1) -> tuple[MeasuredRun | None, list[LogProblem]]:
    """One runs-CSV row from a parsed log and layout flags; (None, problems) if no step time was found. Raises
    PlannerInputError for a flag that relabels the measured global batch and for a row `planner doctor` rejects."""
    problems = list(log.problems)
    unusable, reported = unusable_numbers(log)
    problems += unusable
    from_log, engine_batch = _layout_from_log(log, reported, problems)
    layout = _layout_with_flags(from_log, flags, log.path, problems)
    unusable = (mixture_of_experts_problem(log) or pipeline_layout_problem(log) or ulysses_problem(log, flags)
                or layout_product_problem(layout))
    if unusable is not None:  # the row would be wrong or would not simulate: never written
        problems.append(LogProblem(log.path, unusable))
        return None, problems
    refuse_relabelled_batch(log, from_log, layout, engine_batch)
    layout = _with_global_batch(layout)
    accumulation = _accumulation(layout)
    logged: dict = {}
    values, method = measurements(log, layout.get("global_batch"), skip, problems, accumulation, logged,
                                  engine_batch=engine_batch)
    if method is None:
        problems.append(LogProblem(log.path, "no step time found (looked for Megatron 'elapsed time per iteration (ms)', "
                                             "DeepSpeed 'CurrSamplesPerSec=', 'time (ms) | fwd: ...', flops profiler 'iter latency'); file skipped"))
        return None, problems
    # Every column validate needs to simulate the row (runs_csv.SIMULATION_COLUMNS; the cluster is the CLI's note),
    # and gpus.
    missing = [k for k in ("gpus", *SIMULATION_COLUMNS) if k != "cluster" and k not in layout]
    if missing:
        problems.append(LogProblem(log.path, f"layout incomplete, not in the log or flags: {', '.join(missing)} (pass --{missing[0].replace('_', '-')} ...)"))
    layout_from_flags = [k for k in layout if k not in from_log and k != "cluster" and k in flags]
    # A flag that replaced what the log said is kept in the row, not only on stderr: the row is then the user's
    # word against the log's (a high-confidence row said gpus 16 where the log ran 8).
    overridden = {k: from_log[k] for k in layout if k in from_log and k in flags and layout[k] != from_log[k]}
    peak = _peak_memory_gib(log, problems)
    warm_up_in = _warm_up_included(log, values, method, logged, skip, problems)
    notes = _notes(log, method, logged, skip, warm_up_in, layout_from_flags, overridden)
    run = MeasuredRun(
        id=row_id, source=flags.get("source") or str(log.path),
        confidence=flags.get("confidence") or ("low" if warm_up_in else
                                               "medium" if layout_from_flags or overridden or missing else "high"),
        step_time_s=values[method], mem_gib=peak,
        notes=(flags.get("notes") + "; " if flags.get("notes") else "") + notes,
        extra={**_extra_columns(values, method, layout),
               # Every memory figure a log gives is torch's allocator peak (deepspeed_logs: max allocated,
               # MaxMemAllocated, Max_MA): without the column validate compared it with the whole footprint.
               **({"mem_method": MEM_ALLOCATOR_PEAK} if peak is not None else {})},
        **_column_fields(layout),
    )
    rejected = doctor_rejection(run, log.path, layout, from_log, flags)
    if rejected is not None:
        return None, [*problems, LogProblem(log.path, rejected)]
    return run, problems
