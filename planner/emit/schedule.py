"""What every launch target shares: how long to train and the plan's hyperparameters.

Pure arithmetic on a layout and a token count; each emitter spells the result in its stack's names. The
values and their sources live in planner.laws.hyperparameters (Step Law learning rate, WSD schedule with a
(1 - sqrt) cool-down, AdamW settings); this module turns fractions of training into sample and step counts.
"""

from __future__ import annotations

from planner.laws.hyperparameters import (ADAM_BETAS, COOLDOWN_FRACTION, GRADIENT_CLIP, WARMUP_FRACTION,
                                          WEIGHT_DECAY, WSD_MIN_LR_RATIO, plan_hyperparameters,
                                          step_law_learning_rate)
from planner.specs.layout import Layout, train_steps
from planner.specs.model import ModelSpec

# Steps between checkpoints when no cluster prices them (an emitter called on a layout alone); launch_files
# writes the plan's own interval (checkpoint_interval_steps).
SAVE_INTERVAL_WITHOUT_PLAN = 1000

# Cosine decay to 10% of the peak (Chinchilla, Llama 2): only for launch targets without WSD (Megatron-DeepSpeed).
MIN_LR_RATIO = 0.1


def train_sequences(layout: Layout, tokens: float, seq_len: int) -> int:
    """Sequences to train on, rounded up to whole optimizer steps."""
    return train_steps(layout, tokens, seq_len) * layout.global_batch


def warmup_count(total: int) -> int:
    """Warm-up length in the unit of `total` (samples or steps): WARMUP_FRACTION of it, at least 1."""
    return max(1, round(WARMUP_FRACTION * total))


def cooldown_count(total: int) -> int:
    """WSD cool-down length in the unit of `total`: COOLDOWN_FRACTION of it, at least 1."""
    return max(1, round(COOLDOWN_FRACTION * total))


def plan_hyperparameters_for(model: ModelSpec, layout: Layout, tokens: float) -> dict:
    """planner.laws.hyperparameters.plan_hyperparameters for this model, token count and global batch."""
    return plan_hyperparameters(model.non_embedding_params, tokens, layout.global_batch * model.seq_len)


def checkpoint_interval_steps(model: ModelSpec, layout: Layout, cluster) -> int:
    """Optimizer steps between checkpoints: the interval the plan's goodput is priced at (Young/Daly on the
    cluster's failure rate and checkpoint write time, planner.cost.goodput) over the simulated step time, at
    least 1. The launch files save at that cadence, so the plan's failure overhead is what the run pays."""
    from planner.cost.estimate import simulate
    from planner.cost.goodput import goodput_summary

    interval_s = goodput_summary(model.total_params, layout.gpus, cluster, framework=layout.framework)["checkpoint_interval_s"]
    return max(1, round(interval_s / simulate(model, layout, cluster)["step_time_s"]))


def checkpoint_mode_problems(cluster, writes: tuple, target: str) -> list[str]:
    """The plan's checkpoint mode (the cluster spec's reliability.checkpoint, which simulate --checkpoint-mode
    replaces) where `target`'s launch cannot write it: the plan's goodput and save interval were priced with it
    (planner.cost.goodput), so a launch saving another way would run another plan."""
    mode = None if cluster is None else cluster.reliability.checkpoint_mode
    if mode is None or mode in writes:
        return []
    return [f"checkpoint mode {mode}: {target}'s launch saves {' or '.join(writes)} checkpoints only "
            f"(plan with --checkpoint-mode {writes[-1]}, or set reliability.checkpoint in the cluster spec)"]


# The emitters read the plan's constants from here; their values and sources are planner.laws.hyperparameters'.
__all__ = ["ADAM_BETAS", "COOLDOWN_FRACTION", "GRADIENT_CLIP", "MIN_LR_RATIO", "SAVE_INTERVAL_WITHOUT_PLAN",
           "WARMUP_FRACTION", "WEIGHT_DECAY", "WSD_MIN_LR_RATIO", "checkpoint_interval_steps", "checkpoint_mode_problems", "cooldown_count", "plan_hyperparameters_for", "step_law_learning_rate",
           "train_sequences", "train_steps", "warmup_count"]
