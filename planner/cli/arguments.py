"""Argument types shared by the subcommands: whole numbers and fractions checked where they are parsed.

argparse's plain `type=int` takes 0, -1 and 10**400 for a tensor-parallel degree; these types turn
such values into the one-line usage error naming the flag ("argument --tp: expected a whole number
from 1 to 9,007,199,254,740,992, got '0'"), exit code 2.
"""

from __future__ import annotations

import argparse
import math
import re

# Counts beyond 2**53 are not exact in the float64 arithmetic of the cost model.
MAX_WHOLE = 2**53


def whole_number(low: int = 1, high: int = MAX_WHOLE):
    """An argparse type: a whole number in [low, high] (Python's int syntax, so '8' or ' 8 ', or grouped by
    thousands as the planner prints it, '1,024')."""
    def parse(text: str) -> int:
        if re.fullmatch(r"\s*\d{1,3}(,\d{3})+\s*", text):
            text = text.replace(",", "")
        try:
            value = int(text.strip()) if text.strip().lstrip("+-").isdigit() and text.strip().isascii() else None
        except ValueError:  # more digits than Python converts
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low:,} to {high:,}, got {text!r}")
        return value

    parse.__name__ = "whole number"
    return parse


def comma_items(text: str, flag: str) -> list[str]:
    """The items of a comma-separated flag value, stripped; an empty item (',,' or a trailing comma) is refused, not
    dropped, as --gpus and --params already refused it (helper-found: '--framework megatron,,fsdp' was taken)."""
    from planner.errors import PlannerInputError

    items = [part.strip() for part in str(text).split(",")]
    if any(not item for item in items):
        raise PlannerInputError(f"{flag}: an empty item in {text!r}; expected items separated by single commas")
    return items


def output_path(text: str) -> str:
    """An argparse type for a file or folder the command writes: an empty name (`--emit ""`, a shell variable left
    unset) is refused rather than read as 'not given', which wrote nothing and exited 0."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a file or folder name to write, got {text!r}")
    return text


output_path.__name__ = "output path"


class RecordGiven(argparse.Action):
    """Stores the value as `store` does and records the flag's dest in `namespace.given`, so that a command can
    tell a flag the user gave from its default (optimize's --seq-len 4096 applies to a --model only when given)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def given(args, name: str) -> bool:
    """Whether the user gave the flag whose dest is `name` (one declared with action=RecordGiven)."""
    return name in getattr(args, "given", ())


def real_number(low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False):
    """An argparse type: a finite number in [low, high] (or the open interval where asked); no NaN or inf."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            left = "-inf" if low is None else f"{low:g}"
            right = "inf" if high is None else f"{high:g}"
            bounds = f"{'(' if low_open or low is None else '['}{left}, {right}{')' if high_open or high is None else ']'}"
            raise argparse.ArgumentTypeError(f"expected a finite number in {bounds}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def fraction(high: float = 1.0):
    """An argparse type: a fraction in [0, high) written as '5%' or '0.05'."""
    def parse(text: str) -> float:
        raw = text.strip()
        try:
            value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0.0 <= value < high):
            raise argparse.ArgumentTypeError(f"expected a fraction like '5%' or '0.05' (0 <= x < {high:g}), got {text!r}")
        return value

    parse.__name__ = "fraction"
    return parse


# Help for the flags that mirror runs-CSV columns (simulate, ingest): data/spec/runs_csv.md has the details.
CONFIG_HELP = {
    "gpus": "total GPUs",
    "layers": "transformer layers",
    "hidden": "hidden size (model width)",
    "heads": "attention heads",
    "kv-heads": "key/value heads (grouped-query attention; default: --heads)",
    "ffn": "feed-forward inner size (default: 4 x hidden for gelu, the preset's for swiglu)",
    "seq-len": "sequence length in tokens",
    "vocab": "vocabulary size",
    "tp": "tensor-parallel degree",
    "pp": "pipeline-parallel degree (stages)",
    "dp": "data-parallel degree",
    "cp": "context-parallel degree (sequence split across GPUs)",
    "vpp": "virtual pipeline stages per GPU (interleaved schedule)",
    "first-stage-layers": "transformer layers on the first pipeline rank (Megatron's --decoder-first-pipeline-num-layers; "
                          "default: the stack's split)",
    "last-stage-layers": "transformer layers on the last pipeline rank, beside the output layer, the loss and any MTP "
                         "blocks (Megatron's --decoder-last-pipeline-num-layers; default: the stack's split)",
    "zero": "ZeRO stage: 0 none, 1 optimizer states, 2 + gradients, 3 + parameters sharded",
    "micro-batch": "sequences per micro-batch per GPU",
    "global-batch": "sequences per optimizer step (default: micro-batch x dp)",
    "seq-parallel": "Megatron sequence parallelism (1) or not (0)",
    "mlp": "feed-forward kind (default: the preset's; gelu without --model)",
    "bias": "1: every linear layer and norm has a bias (GPT-2/3, Megatron-LM's GPT); 0: none (Llama) "
            "(default: the preset's; 0 without --model)",
    "norm": "the norm: layernorm or rmsnorm (default: the preset's; rmsnorm without --model)",
    "tied-embeddings": "1: the output layer is the input embedding (GPT-2/3, Megatron-LM's GPT before "
                       "--untie-embeddings-and-output-weights, MPT, BLOOM); 0: its own weights (Llama) (default: the "
                       "preset's; 0 without --model)",
    "dropout": "dropout probability of the attention scores and the hidden states (Megatron's --attention-dropout / "
               "--hidden-dropout); above 0 each layer keeps its dropout masks for backward (default: the preset's, 0.1 "
               "for GPT-2/3, Megatron's GPT and BLOOM; 0 without --model, as Llama-style models train)",
    "offload": "what ZeRO-Offload moves off the GPU",
    "offload-device": "where offloaded state lives",
    "recompute": "activation recomputation",
    "dtype": "training number format",
}

# --cluster-dir on every command that resolves cluster names (planner.specs.clusters.cluster_folders).
CLUSTER_DIR_HELP = ("resolve cluster names in this folder alone (default: the working directory, then the user "
                    "spec folder, then the bundled specs; `planner clusters` lists them)")


# --dtype's help where the cluster sets the default (optimize, report, simulate).
DTYPE_DEFAULT_HELP = "default: bf16 where the cluster's accelerator has it, else fp16 (V100), else fp32"


def training_dtype(args, cluster) -> str:
    """--dtype, or the cluster's own default where it was not given (ClusterSpec.default_training_dtype: bf16
    would be refused on V100s); stored back on `args` so that every later step of the command uses the same."""
    if getattr(args, "dtype", None) is None:
        args.dtype = cluster.default_training_dtype
    return args.dtype


def warn_outside_calibration(command: str, cluster, framework: str, dtype: str) -> None:
    """One stderr line when a calibrated spec is used for a stack or dtype its fitted rows did not have."""
    import sys

    recorded = cluster.calibrated_on
    outside = recorded.outside(framework, dtype) if recorded is not None else []
    if outside:
        sys.stderr.write(f"planner {command}: warning: {cluster.name} was calibrated on {', '.join(recorded.frameworks)} "
                         f"{'/'.join(recorded.dtypes)} runs, not {' and '.join(outside)}; its efficiencies may not "
                         "transfer\n")


def refuse_flags(args, names, reason: str, unset=(None, False, 0, 0.0)) -> None:
    """A one-line PlannerInputError naming the first of `names` (argparse dests) the user set, with `reason`:
    a flag that does not apply to the mode asked for is refused, never silently ignored. A flag counts as set
    when it is not one of `unset` (the defaults of the flags checked this way; (None,) for a 0/1 switch whose
    0 is a choice)."""
    from planner.errors import PlannerInputError

    for name in names:
        if getattr(args, name, None) not in unset:
            raise PlannerInputError(f"--{name.replace('_', '-')}: {reason}")
