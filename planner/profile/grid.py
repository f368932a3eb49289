"""Profiling grids: which configurations `planner profile` runs, each with a deterministic id.

A grid is a union of cross products ("sub-grids"): each sub-grid lists model shapes and, per
axis, the values to combine (world size, ZeRO stage, offload, micro-batch, gradient accumulation,
dtype). Combinations DeepSpeed cannot run (offload without ZeRO, parameter offload below ZeRO-3)
are dropped and counted. Grids come built in (`ci`, `default`, `gpu-1`) or from a YAML file:

    steps: 10          # measured steps per configuration (optional)
    warmup: 5          # warm-up steps, not measured (optional)
    grids:
      - models:
          - {layers: 2, hidden: 256, heads: 4, seq_len: 128, vocab: 8192}   # ffn defaults to 4*hidden
        world_size: [1, 2]
        zero: [0, 3]
        offload: [none]
        micro_batch: [1, 2]
        grad_accum: [1]      # optional
        dtype: [auto]        # optional; auto = fp32 on CPU, bf16 on an accelerator

The configuration id (`config_id`) names every axis, so a resumed sweep recognises finished runs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from planner.errors import PlannerInputError, validation_input_error

Offload = Literal["none", "optimizer", "optimizer+params"]
Dtype = Literal["auto", "fp32", "bf16", "fp16"]
OFFLOAD_TAGS = {"none": "", "optimizer": "-offopt", "optimizer+params": "-offall"}


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelShape(_Strict):
    """A GPT shape for the profiling worker (multi-head attention, GELU MLP, untied LM head)."""

    layers: int = Field(ge=1)
    hidden: int = Field(ge=8)
    heads: int = Field(ge=1)
    seq_len: int = Field(ge=2)
    vocab: int = Field(ge=16)
    ffn: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _heads_divide_hidden(self):
        if self.hidden % self.heads:
            raise ValueError(f"hidden({self.hidden}) % heads({self.heads}) = {self.hidden % self.heads} != 0")
        return self

    @property
    def ffn_size(self) -> int:
        return self.ffn if self.ffn is not None else 4 * self.hidden


class SubGrid(_Strict):
    models: list[ModelShape] = Field(min_length=1)
    world_size: list[int] = Field(default=[1], min_length=1)
    zero: list[Literal[0, 1, 2, 3]] = Field(default=[0], min_length=1)
    offload: list[Offload] = Field(default=["none"], min_length=1)
    micro_batch: list[int] = Field(default=[1], min_length=1)
    grad_accum: list[int] = Field(default=[1], min_length=1)
    dtype: list[Dtype] = Field(default=["auto"], min_length=1)

    @model_validator(mode="after")
    def _positive(self):
        for axis in ("world_size", "micro_batch", "grad_accum"):
            bad = [v for v in getattr(self, axis) if v < 1]
            if bad:
                raise ValueError(f"{axis} values must be >= 1, got {bad}")
        return self


class GridFile(_Strict):
    steps: int | None = Field(default=None, ge=1)
    warmup: int | None = Field(default=None, ge=0)
    grids: list[SubGrid] = Field(min_length=1)


@dataclass(frozen=True)
class ProfileConfig:
    """One configuration to run: model shape, DeepSpeed layout, dtype. `dtype` is resolved (no 'auto')."""

    layers: int
    hidden: int
    heads: int
    ffn: int
    seq_len: int
    vocab: int
    world_size: int
    zero: int
    offload: str
    micro_batch: int
    grad_accum: int
    dtype: str

    @property
    def config_id(self) -> str:
        return (
            f"L{self.layers}-h{self.hidden}-a{self.heads}-f{self.ffn}-s{self.seq_len}-v{self.vocab}"
            f"-w{self.world_size}-z{self.zero}{OFFLOAD_TAGS[self.offload]}"
            f"-mb{self.micro_batch}-ga{self.grad_accum}-{self.dtype}"
        )

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size


@dataclass(frozen=True)
class Grid:
    configs: tuple[ProfileConfig, ...]
    dropped: tuple[str, ...]  # why combinations were left out, one entry each
    steps: int | None
    warmup: int | None


def why_invalid(zero: int, offload: str) -> str | None:
    """DeepSpeed's own constraints on ZeRO and offload; None if the pair can run."""
    if offload != "none" and zero == 0:
        return "offload needs ZeRO stage >= 1"
    if offload == "optimizer+params" and zero != 3:
        return "parameter offload needs ZeRO stage 3"
    return None


# Built-in grids. `ci`: the smallest run that still shows ZeRO-0 all-reduce and ZeRO-3 gather/scatter.
# `default`: the committed cpu-local sweep (profiles/README.md), ~60 runs, ~40 min on 2 cores.
_TINY = {"layers": 2, "hidden": 64, "heads": 4, "seq_len": 32, "vocab": 512}
_SIZES = {
    "A": {"layers": 2, "hidden": 256, "heads": 4, "seq_len": 128, "vocab": 8192},
    "B": {"layers": 4, "hidden": 384, "heads": 6, "seq_len": 512, "vocab": 8192},
    "C": {"layers": 4, "hidden": 512, "heads": 8, "seq_len": 256, "vocab": 16384},
    "D": {"layers": 6, "hidden": 768, "heads": 12, "seq_len": 256, "vocab": 16384},
}
_ALL = list(_SIZES.values())
# `gpu-1`: one GPU, bf16, GPT-2-vocabulary shapes from 124M to 2.7B parameters (profiles/README.md, the
# h200-1gpu profile): from small work per GPU (the launch floor) to a 2.7B model without recompute whose states
# and activations take tens of GB. Ordered so that a sweep cut short still has each regime.
_GPT = {"vocab": 50304}
_GPU_SIZES = {
    "124M": {"layers": 12, "hidden": 768, "heads": 12, "seq_len": 1024, **_GPT},
    "355M": {"layers": 24, "hidden": 1024, "heads": 16, "seq_len": 1024, **_GPT},
    "1.3B": {"layers": 24, "hidden": 2048, "heads": 16, "seq_len": 2048, **_GPT},
    "2.7B": {"layers": 32, "hidden": 2560, "heads": 32, "seq_len": 2048, **_GPT},
}
BUILTIN_GRIDS: dict[str, dict] = {
    "ci": {"steps": 3, "warmup": 2, "grids": [
        {"models": [_TINY], "world_size": [2], "zero": [0, 3], "micro_batch": [2]},
    ]},
    "default": {"steps": 10, "warmup": 5, "grids": [
        # ZeRO stages across sizes at 2 ranks.
        {"models": _ALL, "world_size": [2], "zero": [0, 1, 2, 3], "micro_batch": [2]},
        # Compute efficiency vs size and micro-batch, no communication.
        {"models": _ALL, "world_size": [1], "zero": [0], "micro_batch": [1, 2, 4]},
        # Micro-batch at 2 ranks, without ZeRO and with full sharding.
        {"models": _ALL, "world_size": [2], "zero": [0, 3], "micro_batch": [1, 4]},
        # ZeRO-Offload (DeepSpeedCPUAdam).
        {"models": [_SIZES["B"], _SIZES["C"], _SIZES["D"]], "world_size": [2], "zero": [1, 2, 3],
         "offload": ["optimizer"], "micro_batch": [2]},
        {"models": [_SIZES["B"], _SIZES["D"]], "world_size": [1], "zero": [2], "offload": ["optimizer"], "micro_batch": [2]},
        {"models": [_SIZES["C"]], "world_size": [2], "zero": [3], "offload": ["optimizer+params"], "micro_batch": [2]},
        # ZeRO bookkeeping cost with nothing to partition across.
        {"models": [_SIZES["C"]], "world_size": [1], "zero": [1, 2, 3], "micro_batch": [2]},
    ]},
    "gpu-1": {"steps": 10, "warmup": 3, "grids": [
        {"models": [_GPU_SIZES["124M"]], "world_size": [1], "zero": [0], "micro_batch": [1, 8]},
        {"models": [_GPU_SIZES["355M"]], "world_size": [1], "zero": [0, 1, 2, 3], "micro_batch": [4]},
        {"models": [_GPU_SIZES["1.3B"]], "world_size": [1], "zero": [0, 3], "micro_batch": [2]},
        {"models": [_GPU_SIZES["2.7B"]], "world_size": [1], "zero": [1], "micro_batch": [4]},
        {"models": [_GPU_SIZES["124M"]], "world_size": [1], "zero": [3], "micro_batch": [1, 8]},
    ]},
}


def parse_grid(data: object, source: str) -> GridFile:
    if not isinstance(data, dict):
        raise PlannerInputError(f"{source}: expected a YAML mapping with a 'grids' list (see planner/profile/grid.py)")
    try:
        return GridFile.model_validate(data)
    except ValidationError as error:
        raise validation_input_error(error, source) from None


def load_grid_file(name_or_path: str) -> tuple[GridFile, str]:
    """A built-in grid by name, or a YAML grid file. Returns the grid and where it came from."""
    if name_or_path in BUILTIN_GRIDS:
        return parse_grid(BUILTIN_GRIDS[name_or_path], f"built-in grid '{name_or_path}'"), name_or_path
    path = Path(name_or_path)
    if not path.exists():
        raise PlannerInputError(
            f"--grid: '{name_or_path}' is neither a built-in grid ({', '.join(BUILTIN_GRIDS)}) nor an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise PlannerInputError(f"{path}: cannot read grid file ({error.__class__.__name__})")
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise PlannerInputError(f"{where}: invalid YAML ({getattr(error, 'problem', 'parse error')})")
    return parse_grid(data, str(path)), str(path)


def override_axes(grid: GridFile, overrides: dict[str, list], source: str) -> GridFile:
    """Replace axes in every sub-grid (command-line flags win over the grid file).

    `overrides` maps an axis (world_size, zero, offload, micro_batch, grad_accum, dtype) or a model
    attribute (layers, hidden, heads, seq_len, vocab, ffn) to its values. Model attributes replace
    the models axis with the cross product of the given values; attributes not given are taken
    from each sub-grid's first model.
    """
    model_keys = ("layers", "hidden", "heads", "seq_len", "vocab", "ffn")
    shape_overrides = {k: v for k, v in overrides.items() if k in model_keys and v}
    axis_overrides = {k: v for k, v in overrides.items() if k not in model_keys and v}
    subgrids = []
    for sub in grid.grids:
        data = sub.model_dump() | axis_overrides
        if shape_overrides:
            base = sub.models[0].model_dump()
            keys = list(shape_overrides)
            data["models"] = [base | dict(zip(keys, values)) for values in itertools.product(*shape_overrides.values())]
            for model in data["models"]:
                if "hidden" in shape_overrides and "heads" not in shape_overrides:
                    model["heads"] = max(1, model["hidden"] // 64)  # head size 64 unless --heads says otherwise
                if "hidden" in shape_overrides and "ffn" not in shape_overrides:
                    model["ffn"] = None
        subgrids.append(data)
    return parse_grid({"steps": grid.steps, "warmup": grid.warmup, "grids": subgrids}, source)


def expand(grid: GridFile, resolve_dtype) -> Grid:
    """All valid configurations of the grid, in order, without duplicates.

    `resolve_dtype(dtype) -> dtype` turns 'auto' into what the accelerator runs (fp32 on CPU).
    """
    configs: dict[str, ProfileConfig] = {}
    dropped: list[str] = []
    for sub in grid.grids:
        axes = (sub.models, sub.world_size, sub.zero, sub.offload, sub.micro_batch, sub.grad_accum, sub.dtype)
        for model, world, zero, offload, micro, accum, dtype in itertools.product(*axes):
            reason = why_invalid(zero, offload)
            if reason:
                dropped.append(f"zero={zero} offload={offload}: {reason}")
                continue
            config = ProfileConfig(
                layers=model.layers, hidden=model.hidden, heads=model.heads, ffn=model.ffn_size,
                seq_len=model.seq_len, vocab=model.vocab, world_size=world, zero=zero, offload=offload,
                micro_batch=micro, grad_accum=accum, dtype=resolve_dtype(dtype),
            )
            configs.setdefault(config.config_id, config)
    return Grid(tuple(configs.values()), tuple(dropped), grid.steps, grid.warmup)
