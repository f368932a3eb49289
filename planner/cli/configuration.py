"""One training configuration from the command line: the flags (runs-CSV names), a --config YAML file, a --model
preset, merged into a validated (model, layout, cluster, gpus).

Flags override --config, which overrides --model. Its own module because reading and checking a
configuration is apart from simulating it and printing the result (cli.simulate, cli.simulation_text).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from pathlib import Path

from planner.cli.arguments import CLUSTER_DIR_HELP, CONFIG_HELP, DTYPE_DEFAULT_HELP, real_number, whole_number
from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORK_NAMES
from planner.specs.clusters import DEFAULT_CLUSTER

MODEL_KEYS = ("layers", "hidden", "heads", "kv_heads", "ffn", "mlp", "seq_len", "vocab", "attention_window", "bias", "norm",
              "tied_embeddings", "dropout")
LAYOUT_KEYS = ("tp", "pp", "dp", "cp", "vpp", "first_stage_layers", "last_stage_layers", "zero", "offload", "offload_device", "micro_batch",
               "global_batch", "recompute", "seq_parallel", "dtype", "flash_attention", "framework",
               "tp_comm_overlap", "dp_comm_overlap", "grad_reduce_in_fp32", "zero_hpz", "zero_quantized_weights",
               "zero_quantized_gradients", "shard_group", "grad_shard_group", "zero_tiling", "activation_offload",
               "fp8_param_gather", "fp8_recipe", "partition_activations", "loss_fusion")
OTHER_KEYS = ("cluster", "cluster_dir", "model", "gpus")
# Mixture-of-experts layout keys (planner.specs.layout.Layout: expert parallelism and routing).
MOE_LAYOUT_KEYS = ("ep", "etp", "moe_a2a_overlap", "moe_load_imbalance", "moe_capacity_factor", "moe_pad_to_capacity",
                   "moe_node_dispatch")
LAYOUT_KEYS += MOE_LAYOUT_KEYS


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags mirroring the runs-CSV columns; shared with other commands that take one configuration."""
    group = parser.add_argument_group("configuration (flags override --config, which overrides --model)")
    _add_shape_and_layout_flags(group)
    _add_stack_and_precision_flags(group)
    _add_zero3_hierarchy_flags(parser)


def _add_shape_and_layout_flags(group) -> None:
    """Where the configuration comes from (--config, --model, --cluster), the model's shape and the parallel
    layout: sizes, ZeRO, offload, recompute, sequence parallelism."""
    group.add_argument("--config", metavar="FILE.yaml", help="YAML mapping with any of these keys (runs-CSV names)")
    group.add_argument("--model", metavar="PRESET|FILE",
                       help="model preset, e.g. llama2-70b, gpt3-175b (see --list-models), or a model YAML file of ModelSpec "
                            "fields (as optimize --model takes: MoE shapes included)")
    group.add_argument("--cluster", help=f"cluster spec name (see `planner clusters`) or a path to a YAML file "
                                         f"(default {DEFAULT_CLUSTER}, as for optimize)")
    group.add_argument("--cluster-dir", metavar="DIR", help=CLUSTER_DIR_HELP)
    group.add_argument("--gpus", type=whole_number(), help="total GPUs (checked against tp*pp*dp*cp; sets dp if --dp is absent)")
    for key in ("layers", "hidden", "heads", "kv-heads", "ffn", "seq-len", "vocab",
                "tp", "pp", "dp", "cp", "vpp", "first-stage-layers", "last-stage-layers", "micro-batch", "global-batch"):
        group.add_argument(f"--{key}", type=whole_number(), help=CONFIG_HELP[key])
    group.add_argument("--mlp", choices=["gelu", "swiglu"], help=CONFIG_HELP["mlp"])
    group.add_argument("--bias", type=int, choices=[0, 1], help=CONFIG_HELP["bias"])
    group.add_argument("--norm", choices=["layernorm", "rmsnorm"], help=CONFIG_HELP["norm"])
    group.add_argument("--tied-embeddings", type=int, choices=[0, 1], help=CONFIG_HELP["tied-embeddings"])
    group.add_argument("--dropout", type=real_number(0.0, 1.0, high_open=True), help=CONFIG_HELP["dropout"])
    group.add_argument("--attention-window", type=whole_number(),
                       help="sliding-window attention: keys each query attends, itself included (Mistral, Gemma 2, "
                            "MegaScale; default: full causal attention)")
    group.add_argument("--zero", type=int, choices=[0, 1, 2, 3], help=CONFIG_HELP["zero"] + " (default 0)")
    group.add_argument("--offload", choices=["none", "optimizer", "optimizer+params"], help=CONFIG_HELP["offload"] + " (default none)")
    group.add_argument("--offload-device", choices=["cpu", "nvme"], help=CONFIG_HELP["offload-device"] + " (default cpu)")
    group.add_argument("--recompute", choices=["none", "selective", "full"], help=CONFIG_HELP["recompute"] + " (default none)")
    group.add_argument("--seq-parallel", type=int, choices=[0, 1], help=CONFIG_HELP["seq-parallel"] + " (default 0)")


def _add_stack_and_precision_flags(group) -> None:
    """The number format and the training stack's settings: dtype, flash attention, framework, overlaps,
    gradient reduction dtype and the fp8 options."""
    group.add_argument("--dtype", choices=["bf16", "fp16", "fp8", "fp32"],
                       help=f"{CONFIG_HELP['dtype']} ({DTYPE_DEFAULT_HELP})")
    group.add_argument("--flash-attention", type=int, choices=[0, 1], help="1 (default): flash attention; 0: unfused softmax")
    group.add_argument("--framework", choices=list(FRAMEWORK_NAMES),
                       help="training stack: what it shards, in which dtype, which overlaps it has (default other)")
    group.add_argument("--tp-comm-overlap", type=int, choices=[0, 1],
                       help="overlap tensor-parallel communication with GEMMs (TE userbuffers / async TP); default: the framework's")
    group.add_argument("--dp-comm-overlap", type=int, choices=[0, 1],
                       help="overlap gradient reduction with backward (and the parameter all-gather with forward); default: the framework's")
    group.add_argument("--grad-reduce-in-fp32", type=int, choices=[0, 1],
                       help="hold and reduce gradients in fp32 (1) or the model dtype (0); default: the framework's "
                            "(Megatron: fp32 with bf16; NeMo's performance recipes: 0). DeepSpeed bf16 at ZeRO 0/1 "
                            "with 1 is its BF16_Optimizer, which adds each micro-batch's gradients into the fp32 "
                            "copy in a pass of its own")
    group.add_argument("--partition-activations", type=int, choices=[0, 1],
                       help="under --recompute full, keep each layer's checkpointed input as its 1/tp slice and "
                            "all-gather it over tp before the recompute (DeepSpeed partition_activations, "
                            "Megatron-DeepSpeed --partition-activations, Megatron-LM --distribute-saved-activations); "
                            "default: the stack's (off)")
    group.add_argument("--loss-fusion", type=int, choices=[0, 1],
                       help="the stack's fused cross-entropy loss as runs with Transformer Engine 2.6-2.17 had it "
                            "(Megatron --cross-entropy-fusion-impl te: 2 bytes per token and vocabulary entry where the "
                            "unfused loss holds 6), to model such runs: Megatron-LM rejects it since NVIDIA/Megatron-LM"
                            "#5115 and TE 2.18 holds 6, so --emit refuses it; refused where the stack has none; "
                            "default 0")
    group.add_argument("--fp8-param-gather", type=int, choices=[0, 1],
                       help="fp8 training with the Linear weights kept as fp8 parameters and all-gathered in fp8 "
                            "(Megatron --fp8-param-gather; needs --dtype fp8 and --zero 1 or 2; default 0)")
    group.add_argument("--fp8-recipe", choices=["delayed", "tensorwise"],
                       help="how fp8 casts are scaled (Megatron --fp8-recipe): delayed, from the amax history, or "
                            "tensorwise per-tensor current scaling (NeMo's FP8-CS recipes, torchtitan's float8: an "
                            "amax pass before every cast); needs --dtype fp8; default: the stack's (delayed; "
                            "tensorwise for fsdp, which has no delayed scaling)")


def _add_zero3_hierarchy_flags(parser: argparse.ArgumentParser) -> None:
    """ZeRO++ / MiCS / HSDP groups, ZeRO-Infinity tiling and activation offload (need --zero 3)."""
    hierarchy = parser.add_argument_group("ZeRO-3 hierarchy (ZeRO++, MiCS / HSDP; need --zero 3)")
    hierarchy.add_argument("--zero-hpz", type=whole_number(),
                           help="ZeRO++ hpZ: secondary weight partition over this many data-parallel ranks inside a node, "
                                "backward all-gathers on the scale-up link (DeepSpeed zero_hpz_partition_size; default 1 = off)")
    hierarchy.add_argument("--zero-quantized-weights", type=int, choices=[0, 1],
                           help="ZeRO++ qwZ: all-gather int8 weights (DeepSpeed zero_quantized_weights)")
    hierarchy.add_argument("--zero-quantized-gradients", type=int, choices=[0, 1],
                           help="ZeRO++ qgZ: hierarchical int4 all-to-all gradient reduction (DeepSpeed zero_quantized_gradients)")
    hierarchy.add_argument("--shard-group", type=whole_number(),
                           help="shard model states over groups of this many data-parallel ranks and replicate across "
                                "groups (MiCS mics_shard_size, PyTorch HSDP); must divide dp; default: all of dp")
    hierarchy.add_argument("--grad-shard-group", type=whole_number(),
                           help="shard gradients over groups of this many ranks (all-reduced across groups once per step); "
                                "with --zero-hpz, the 3-level partitioning of Xu et al.; default: the shard group")
    hierarchy.add_argument("--zero-tiling", type=whole_number(),
                           help="ZeRO-Infinity memory-centric tiling: gather each large Linear in this many tiles "
                                "(DeepSpeed TiledLinear; default 1)")
    hierarchy.add_argument("--activation-offload", type=int, choices=[0, 1],
                           help="keep activation checkpoints in host memory (DeepSpeed cpu_checkpointing; needs "
                                "--recompute full)")


def add_moe_arguments(parser: argparse.ArgumentParser) -> None:
    """Expert-parallel layout flags (MoE models)."""
    from planner.cli.arguments import real_number, whole_number
    from planner.frameworks.moe import A2A_OVERLAP_NAMES

    group = parser.add_argument_group("mixture of experts (MoE presets: mixtral-8x7b, deepseek-v3, qwen3-30b-a3b)")
    group.add_argument("--ep", type=whole_number(), help="expert parallel ranks (fold into tp*cp*dp, as Megatron-Core)")
    group.add_argument("--etp", type=whole_number(), help="expert tensor parallel ranks (default: tp)")
    group.add_argument("--moe-a2a-overlap", choices=list(A2A_OVERLAP_NAMES),
                       help="all-to-all overlap: megatron (--overlap-moe-expert-parallel-comm) or dualpipe (DeepSeek-V3)")
    group.add_argument("--moe-load-imbalance", type=real_number(1.0),
                       help="the busiest expert rank's tokens over the mean (dropless; default 1.0; priced at most "
                            "min(ep, experts / top-k), what routing can send one rank: 1 at ep 1)")
    group.add_argument("--moe-capacity-factor", type=real_number(0.0, low_open=True),
                       help="cap tokens per expert at this multiple of the mean (default: the stack's, "
                            "dropless except deepspeed's 1.0)")
    group.add_argument("--moe-pad-to-capacity", type=int, choices=[0, 1],
                       help="pad every expert's input to the capacity (Megatron --moe-pad-expert-input-to-capacity): "
                            "static shapes, no host sync on the token counts; needs a capacity factor (default: the "
                            "stack's, 1 on deepspeed)")
    group.add_argument("--moe-node-dispatch", type=int, choices=[0, 1],
                       help="send each token to a remote node once, forwarded inside it (DeepEP; Megatron --moe-token-"
                            "dispatcher-type flex --moe-flex-dispatcher-backend deepep): fewer cross-node bytes under "
                            "node-limited routing (default: the stack's, 1 on other, 0 on megatron)")


_TEXT_KEYS = ("mlp", "norm", "offload", "offload_device", "recompute", "dtype", "cluster", "cluster_dir", "model", "framework",
              "fp8_recipe")
_SWITCH_KEYS = ("seq_parallel", "flash_attention", "tp_comm_overlap", "dp_comm_overlap", "grad_reduce_in_fp32",
                "zero_quantized_weights", "zero_quantized_gradients", "activation_offload", "fp8_param_gather",
                "moe_pad_to_capacity", "moe_node_dispatch", "partition_activations", "loss_fusion", "bias",
                "tied_embeddings")


def _check_config_value(key: str, value, where: str):
    """A config value of the type its flag takes; errors name the file and the key."""
    from planner.cli.arguments import MAX_WHOLE

    if value is None:
        return None
    if key in _TEXT_KEYS:
        if not isinstance(value, str) or not value.isprintable():
            raise PlannerInputError(f"{where}: key '{key}': expected text, got {value!r}")
        choices = _text_choices().get(key)
        if choices is not None and value not in choices:
            raise PlannerInputError(f"{where}: key '{key}': expected one of {', '.join(choices)}, got {value!r}")
    elif key in _SWITCH_KEYS:
        if value not in (0, 1) or isinstance(value, float):  # True/False are 1/0
            raise PlannerInputError(f"{where}: key '{key}': expected true/false or 1/0, got {value!r}")
        return bool(value)
    elif key == "dropout":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise PlannerInputError(f"{where}: key '{key}': expected a probability from 0 up to (not including) 1, "
                                    f"got {value!r}")
        return float(value)
    elif key in _REAL_KEYS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise PlannerInputError(f"{where}: key '{key}': expected a positive number, got {value!r}")
        return float(value)
    else:
        stages = _zero_stages() if key == "zero" else None  # the stages Layout.zero takes
        low, high = (min(stages), max(stages)) if stages else (1, MAX_WHOLE)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise PlannerInputError(f"{where}: key '{key}': expected a whole number from {low} to {high:,}, got {value!r}")
    return value


# Mixture-of-experts config keys (MOE_LAYOUT_KEYS): the overlap scheme is text, the routing figures real numbers.
_TEXT_KEYS += ("moe_a2a_overlap",)
_REAL_KEYS = ("moe_load_imbalance", "moe_capacity_factor")


@functools.cache
def _zero_stages() -> tuple[int, ...]:
    """The ZeRO stages a layout takes, read from Layout.zero's Literal (0-3)."""
    import typing

    from planner.specs.layout import Layout

    return typing.get_args(Layout.model_fields["zero"].annotation)


@functools.cache  # read from the specs once, not once per key of a config file
def _text_choices() -> dict[str, tuple[str, ...]]:
    """The values each text key with a fixed set takes, read from the specs' own Literal fields (ModelSpec,
    Layout), so that a config file's bad value is named with its file and key like a flag's."""
    import typing

    from planner.specs.layout import Layout
    from planner.specs.model import ModelSpec

    def literal_values(annotation) -> tuple | None:  # Literal[...] or Optional[Literal[...]]
        if typing.get_origin(annotation) is typing.Literal:
            return typing.get_args(annotation)
        found = [values for arg in typing.get_args(annotation) if (values := literal_values(arg))]
        return found[0] if found else None

    return {name: values for spec in (ModelSpec, Layout) for name, field in spec.model_fields.items()
            if name in _TEXT_KEYS and (values := literal_values(field.annotation))}


def _load_config_file(path: str) -> dict:
    from planner.io import load_yaml_file

    where = f"--config {path}"
    try:
        data = load_yaml_file(path, "configuration file (.yaml)")
    except PlannerInputError as error:
        raise PlannerInputError(f"--config {error}") from None
    if not isinstance(data, dict) or not data:
        # An empty file is refused like the cluster and law loaders refuse one (helper-found: it was read as no
        # keys, exit 0): a configuration meant to say something says nothing.
        raise PlannerInputError(f"{where}: expected a mapping of keys like layers, hidden, tp, ..."
                                + (" (the file is empty)" if data is None or data == {} else ""))
    known = set(MODEL_KEYS + LAYOUT_KEYS + OTHER_KEYS)
    for key in data:
        if key not in known:
            raise PlannerInputError(f"{where}: unknown key '{key}' (expected: {', '.join(sorted(known))})")
    return {key: _check_config_value(key, value, where) for key, value in data.items()}


@contextlib.contextmanager
def _naming_the_config_key(config: str | None, used: list[str], from_file: list[str]):
    """A loader's refusal of values the --config file gave names the file and its key(s) (the preset loader's
    message names --model, the cluster loader's only the value). Only where every value the loader `used` came
    from the file: one a flag gave keeps the loader's message, which a message naming the file would misplace."""
    try:
        yield
    except PlannerInputError as error:
        message = str(error)
        if not used or not set(used) <= set(from_file) or message.startswith("--config "):
            raise
        named = " / ".join(f"'{key}'" for key in used)
        raise PlannerInputError(f"--config {config}: key {named}: {message.removeprefix('--model: ')}") from None


def resolve_configuration(args) -> tuple:
    """Merge preset < config file < flags into (model, layout, cluster, gpus)."""
    from planner.specs.clusters import load_cluster
    from planner.specs.layout import make_layout
    from planner.specs.layout_checks import check_hierarchy_on_node, check_layout
    from planner.cli.fixed_model import model_from_flag, names_a_model_file
    from planner.specs.model import make_model

    values = _load_config_file(args.config) if args.config else {}
    # A cluster named in the config file (not on the command line) must stay inside the spec folder or
    # under the working directory, as for runs files; so must a cluster folder named there.
    cluster_from_file = f"--config {args.config}" if values.get("cluster") and not args.cluster else None
    # So must a model file named there.
    for key, flag in (("cluster_dir", "--cluster-dir"), ("model", "--model")):
        named = values.get(key)
        if not named or getattr(args, key) or (key == "model" and not names_a_model_file(str(named))):
            continue
        if Path(str(named)).is_absolute() or not Path(str(named)).resolve().is_relative_to(Path.cwd().resolve()):
            raise PlannerInputError(f"--config {args.config}: key {key!r} {named!r} is outside the working directory; "
                                    f"give it with {flag} instead")
    # The file's keys whose value a loader may refuse: its message then names the key, not a flag never given.
    from_file = [key for key in ("model", "cluster", "cluster_dir") if values.get(key) and getattr(args, key, None) is None]
    for key in MODEL_KEYS + LAYOUT_KEYS + OTHER_KEYS:
        flag_value = getattr(args, key, None)
        if flag_value is not None:
            values[key] = flag_value
    with _naming_the_config_key(args.config, ["model"], from_file):
        # A preset or a model file, as optimize --model takes it (cli.fixed_model.model_from_flag).
        model_fields = model_from_flag(str(values["model"])).model_dump() if values.get("model") else {}
    model_fields.update({k: values[k] for k in MODEL_KEYS if values.get(k) is not None})
    if model_fields.get("kv_heads") is None and "heads" in model_fields and not values.get("model"):
        model_fields["kv_heads"] = model_fields["heads"]
    missing = [k for k in ("layers", "hidden", "heads", "vocab", "seq_len") if k not in model_fields]
    if missing:
        raise PlannerInputError(f"missing model shape: give --model PRESET or --{', --'.join(m.replace('_', '-') for m in missing)}")
    model = make_model("model", **model_fields)
    with _naming_the_config_key(args.config, [key for key in ("cluster", "cluster_dir") if values.get(key)], from_file):
        cluster = load_cluster(values.get("cluster") or DEFAULT_CLUSTER, values.get("cluster_dir"),
                               data_file=cluster_from_file)
    layout_fields = {k: values[k] for k in LAYOUT_KEYS if values.get(k) is not None}
    layout_fields.setdefault("dtype", cluster.default_training_dtype)  # --dtype's default (cli.arguments)
    gpus = values.get("gpus")
    if "dp" not in layout_fields and gpus:
        model_parallel = layout_fields.get("tp", 1) * layout_fields.get("pp", 1) * layout_fields.get("cp", 1)
        if gpus % model_parallel:
            raise PlannerInputError(f"--gpus {gpus} is not divisible by tp*pp*cp = {model_parallel}")
        layout_fields["dp"] = gpus // model_parallel
    layout_fields.setdefault("global_batch", layout_fields.get("micro_batch", 1) * layout_fields.get("dp", 1))
    for key in _SWITCH_KEYS:
        if key in layout_fields:
            layout_fields[key] = bool(layout_fields[key])
    args.switched_off = _switch_off_sequence_parallel(layout_fields)
    if getattr(args, "infer", False):
        from planner.cost.infer import INFERABLE, infer_layout

        unknown = tuple(name for name in INFERABLE if name not in layout_fields)
        layout, args.inferred = infer_layout(model, cluster, layout_fields, unknown, gpus=gpus, where="layout")
        return model, layout, cluster, gpus
    layout = make_layout("layout", **layout_fields)
    check_layout(model, layout, gpus=gpus)
    check_hierarchy_on_node(layout, cluster.gpus_per_node)
    return model, layout, cluster, gpus


# Megatron-LM turns sequence parallelism off at tp 1, with a warning, rather than refusing it
# (NVIDIA/Megatron-LM@d98e8a64 megatron/training/arguments.py:1430-1439): there is no tensor-parallel group to
# split the sequence over. The cost model already ignores it there; the layout shown must say so too.
SEQUENCE_PARALLEL_OFF_AT_TP1 = ("seq_parallel=1 switched off: sequence parallelism needs tp > 1 (Megatron-LM "
                                "turns it off at tp 1, megatron/training/arguments.py:1433-1439)")


def _switch_off_sequence_parallel(layout_fields: dict) -> list[str]:
    """Set seq_parallel off in `layout_fields` when tp is 1, as Megatron-LM does; the notes saying so."""
    if layout_fields.get("seq_parallel") and layout_fields.get("tp", 1) == 1:
        layout_fields["seq_parallel"] = False
        return [SEQUENCE_PARALLEL_OFF_AT_TP1]
    return []
