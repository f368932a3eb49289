"""Launch files for a plan, one module per training stack: `launch_files` picks it by `layout.framework`.

- deepspeed  -> planner.emit.deepspeed:  ds_config.json, Megatron-DeepSpeed arguments, hostfile, launch.sh
- megatron   -> planner.emit.megatron:   Megatron-LM pretrain_gpt.py arguments, torchrun launch.sh
- fsdp       -> planner.emit.torchtitan: torchtitan TOML job config, torchrun launch.sh

Before writing anything a layout is checked twice: against the stack's data
(planner.frameworks.unsupported_features: schedules, cp, ZeRO stages, offload, overlaps) and against what
the launch target itself can express (each module's `unsupported`: model architecture, dtypes, how it
maps ZeRO). Either refusal is one PlannerInputError line naming the stack and every reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from planner.emit import deepspeed, megatron, torchtitan
from planner.emit.schedule import checkpoint_interval_steps, checkpoint_mode_problems, step_law_learning_rate
from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORK_NAMES, model_unsupported, unsupported_features
from planner.frameworks.moe import moe_unsupported
from planner.specs.layout import Layout
from planner.specs.model import ModelSpec


@dataclass(frozen=True)
class LaunchTarget:
    name: str  # named in messages
    unsupported: Callable  # (model, layout, cluster) -> what its launch cannot express
    checkpoint_modes: tuple  # the checkpoint modes its launch writes (cluster spec reliability.checkpoint)
    dtype_refusals: dict  # dtype -> why its launch cannot train in it, whatever the model and layout
    # (model, layout, gpus_per_node, tokens, learning_rate, summary, save_interval, checkpoint_mode) -> file name ->
    # text, and every file name it may return (hostfile only with several nodes)
    files: Callable
    file_names: tuple


def _deepspeed_files(model, layout, gpus_per_node, tokens, learning_rate, summary, save_interval, checkpoint_mode):
    """Megatron-DeepSpeed's files take no learning rate (its arguments carry the stack's own) and checkpoint as its
    launch does (LAUNCH_CHECKPOINT_MODES, checked before)."""
    return deepspeed.deepspeed_files(model, layout, gpus_per_node, tokens=tokens, summary=summary,
                                     save_interval=save_interval)


LAUNCH_TARGETS = {
    "deepspeed": LaunchTarget("Megatron-DeepSpeed", deepspeed.unsupported, deepspeed.LAUNCH_CHECKPOINT_MODES,
                              deepspeed.DTYPE_REFUSALS, _deepspeed_files,
                              ("ds_config.json", "megatron_args.txt", "launch.sh", "hostfile", deepspeed.NOTES_FILE)),
    "megatron": LaunchTarget("Megatron-LM", megatron.unsupported, megatron.LAUNCH_CHECKPOINT_MODES,
                             megatron.DTYPE_REFUSALS, megatron.megatron_files, ("megatron_args.txt", "launch.sh")),
    "fsdp": LaunchTarget("torchtitan", torchtitan.unsupported, torchtitan.LAUNCH_CHECKPOINT_MODES,
                         torchtitan.DTYPE_REFUSALS, torchtitan.torchtitan_files, ("job_config.toml", "launch.sh")),
}
EMITTABLE = tuple(LAUNCH_TARGETS)
LAUNCH_FILE_NAMES = {name: target.file_names for name, target in LAUNCH_TARGETS.items()}


def launch_problems(model: ModelSpec, layout: Layout, cluster=None) -> list[str]:
    """Every reason the layout's framework cannot run this plan as priced (empty when it can), on `cluster`'s
    accelerators where one is given."""
    framework = layout.framework
    if framework not in LAUNCH_TARGETS:
        return []
    target = LAUNCH_TARGETS[framework]
    return [*unsupported_features(framework, layout), *model_unsupported(framework, model, layout),
            *moe_unsupported(framework, layout, model),
            *target.unsupported(model, layout, cluster),
            *checkpoint_mode_problems(cluster, target.checkpoint_modes, target.name)]


def dtype_problems(framework: str, dtype: str) -> list[str]:
    """What the framework's launch target refuses about `dtype` alone, whatever the model and layout (torchtitan's
    fp16: LaunchTarget.dtype_refusals, which its `unsupported` reports too; DeepSpeed's fp8 limits are the stack's own,
    Framework.fp8_with_pipeline / fp8_layer_shape, which the searches keep): a budget
    search with --emit checks this before it searches, so that it never prints a plan only to refuse its files."""
    target = LAUNCH_TARGETS.get(framework)
    return [target.dtype_refusals[dtype]] if target is not None and dtype in target.dtype_refusals else []


def check_emittable(model: ModelSpec, layout: Layout, cluster=None) -> None:
    """Raise a one-line PlannerInputError when no launch config of the layout's framework runs the plan."""
    framework = layout.framework
    if framework not in LAUNCH_TARGETS:
        others = ", ".join(name for name in FRAMEWORK_NAMES if name not in LAUNCH_TARGETS)
        raise PlannerInputError(f"framework {framework!r} has no launch config to emit (none for: {others}); "
                                f"supported: {', '.join(EMITTABLE)} (set --framework)")
    problems = launch_problems(model, layout, cluster)
    if problems:
        raise PlannerInputError(f"{framework} ({LAUNCH_TARGETS[framework].name}) cannot run this plan: "
                                + "; ".join(problems))


def launch_files(model: ModelSpec, layout: Layout, cluster, tokens: float | None = None,
                 summary: str = "") -> dict[str, str]:
    """File name -> text of the launch config of `layout.framework` for this plan on `cluster`."""
    check_emittable(model, layout, cluster)
    learning_rate = step_law_learning_rate(model.non_embedding_params, tokens) if tokens else None
    save_interval = checkpoint_interval_steps(model, layout, cluster)
    # Checkpoints saved the way the plan's goodput was priced (check_emittable refused a mode the target cannot write).
    return LAUNCH_TARGETS[layout.framework].files(model, layout, cluster.gpus_per_node, tokens, learning_rate, summary,
                                                  save_interval, cluster.reliability.checkpoint_mode)


__all__ = ["launch_files", "check_emittable", "launch_problems", "EMITTABLE", "LAUNCH_TARGETS", "LaunchTarget",
           "LAUNCH_FILE_NAMES"]
