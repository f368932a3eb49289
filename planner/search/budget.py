"""What a user may spend and must respect, parsed with units at the edge into SI.

A `Constraints` object is frozen and checked once: contradictory settings (a target loss and a
budget that are both "the objective", --gpus with --max-gpus below it, a money budget on a
cluster with no price) are `PlannerInputError`s naming the flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.specs import units
from planner.errors import PlannerInputError

DEFAULT_DEADLINE_S = 30 * 86400.0  # assumed: plans longer than a month are rarely what people ask for
# Longest deadline accepted: a century is beyond any training plan, and it keeps GPUs x deadline (the budget
# of `--gpus N --deadline T`) and the token counts derived from it finite.
MAX_DEADLINE_S = 100 * 365.25 * 86400.0
# Below this fraction of HBM free a plan is flagged (optimize and the review): allocator spikes and fragmentation
# beyond the model's reserve have been measured at several GiB (GMLake: ~15% on average; cost/memory.py cites it).
MEMORY_RISK_FRACTION = 0.05


def memory_at_risk(headroom_bytes: float, hbm_bytes: float) -> bool:
    """Whether a plan leaves under MEMORY_RISK_FRACTION of HBM free (optimize and the review flag it)."""
    return headroom_bytes < MEMORY_RISK_FRACTION * hbm_bytes


def parse_deadline(text: str) -> float:
    """--deadline as seconds, at most a century; a bare number is refused (`--deadline 30` meant days, not the 30
    seconds it was read as, and came back as an infeasible plan instead of an error), as --budget refuses one."""
    seconds = units.parse_duration(text, "--deadline", bare=False)
    if seconds > MAX_DEADLINE_S:
        raise PlannerInputError(f"--deadline: expected a duration up to 100 years like '30d' or '12h', got {text!r}")
    return seconds


@dataclass(frozen=True)
class Constraints:
    """Budget, limits and objective of one planning problem (SI units)."""

    gpu_seconds: float | None = None  # budget in GPU-seconds (from GPU-hours, or money / price)
    money: float | None = None  # the money budget as given, for reporting
    deadline_s: float = DEFAULT_DEADLINE_S
    deadline_is_default: bool = True
    gpus: int | None = None  # exact GPU count
    max_gpus: int | None = None
    unique_tokens: float | None = None
    target_loss: float | None = None
    inference_tokens: float | None = None
    # Fraction of HBM a plan must leave free (--min-headroom): a user's margin against allocator spikes and
    # longer sequences, on top of the cost model's own reserves (cost/memory.py).
    min_headroom: float = 0.0

    @property
    def gpu_hours(self) -> float | None:
        return None if self.gpu_seconds is None else self.gpu_seconds / 3600.0


def parse_budget(text: str, price_per_gpu_hour: float | None, cluster_name: str) -> tuple[float, float | None]:
    """'10000gpuh' -> (3.6e7 GPU-s, None); '$2M' -> (GPU-s bought at the cluster price, 2e6)."""
    raw = str(text).strip()
    if raw.startswith("$"):
        money = units.parse_money(raw, "--budget")
        if not price_per_gpu_hour:
            raise PlannerInputError(
                f"--budget {raw}: cluster {cluster_name!r} has no price_per_accelerator_hour; give GPU-hours like '10000gpuh'")
        return money / price_per_gpu_hour * 3600.0, money
    return units.parse_gpu_hours(raw, "--budget"), None


def check_gpu_counts(gpus: int | None, max_gpus: int | None) -> None:
    """--gpus and --max-gpus are positive and agree; else a one-line error naming the flag."""
    if gpus is not None and gpus <= 0:
        raise PlannerInputError(f"--gpus: expected a positive whole number, got {gpus}")
    if max_gpus is not None and max_gpus <= 0:
        raise PlannerInputError(f"--max-gpus: expected a positive whole number, got {max_gpus}")
    if gpus is not None and max_gpus is not None and gpus > max_gpus:
        raise PlannerInputError(f"--gpus {gpus} contradicts --max-gpus {max_gpus}")


def build_constraints(*, budget: str | None, deadline: str | None, gpus: int | None, max_gpus: int | None,
                      unique_tokens: str | None, target_loss: float | None, inference_tokens: str | None,
                      price_per_gpu_hour: float | None, cluster_name: str, min_headroom: float = 0.0) -> Constraints:
    """Parse and cross-check the optimize flags."""
    if budget is None and target_loss is None and not (gpus and deadline):
        raise PlannerInputError("give --budget (e.g. '10000gpuh' or '$2M'), --target-loss (e.g. 2.1), "
                                "or both --gpus and --deadline (the budget is then all of those GPUs for that long)")
    gpu_seconds, money = parse_budget(budget, price_per_gpu_hour, cluster_name) if budget is not None else (None, None)
    if gpu_seconds is None and target_loss is None:
        # "1,024 H100s for 30 days": the budget is every GPU for the whole deadline.
        gpu_seconds = gpus * parse_deadline(deadline)
    check_gpu_counts(gpus, max_gpus)
    if target_loss is not None and not (0.0 < target_loss < 20.0):
        raise PlannerInputError(f"--target-loss: expected a loss in nats between 0 and 20, got {target_loss}")
    deadline_s = parse_deadline(deadline) if deadline is not None else DEFAULT_DEADLINE_S
    return Constraints(
        gpu_seconds=gpu_seconds, money=money, deadline_s=deadline_s, deadline_is_default=deadline is None,
        gpus=gpus, max_gpus=max_gpus,
        unique_tokens=units.parse_count(unique_tokens, "--unique-tokens") if unique_tokens is not None else None,
        target_loss=target_loss,
        inference_tokens=units.parse_count(inference_tokens, "--inference-tokens") if inference_tokens is not None else None,
        min_headroom=min_headroom,
    )
