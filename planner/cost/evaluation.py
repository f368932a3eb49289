"""Evaluation passes: what a run spends on validation, as a fraction of its training time.

The launch files planner writes evaluate every `eval_interval_steps` optimizer steps for `eval_iters`
iterations (planner.frameworks: Framework.eval_interval_steps / eval_iters, one definition the emitters
write too). Megatron-LM runs each evaluation iteration as the training step's schedule with
forward_only=True under torch.no_grad(): the same global batch in the same micro-batches, no backward,
no recompute, no gradient reduction, no optimizer step (NVIDIA/Megatron-LM@d98e8a64
megatron/training/training.py:4915-4916 evaluate_and_print_results every eval_interval, :5126-5133 the
eval batch and micro-batch default to the training ones (arguments.py:708-711), :5175-5197 eval_iters
calls of forward_backward_func(..., forward_only=True)); Megatron-DeepSpeed's training loop is the same.

One evaluation iteration is priced from the step breakdown (planner.cost.step_time parts): the parts a
micro-batch pays in both passes (compute, elementwise, tp/cp/pipeline communication, the bubble, launch
floors, overheads, experts) scaled by forward's share of the compute, forward / (forward + backward +
recompute); the parts that exist only for gradients and the optimizer are dropped, except that ZeRO-3
gathers the parameters for forward again (its exposed data-parallel time scaled the same way).
The fraction of training time spent so, per step: iteration x eval_iters / eval_interval / step time.
"""

from __future__ import annotations

import numpy as np

from planner.frameworks import FRAMEWORK_CODES, FRAMEWORKS, framework_arrays

# Step parts of gradients and the optimizer only: an evaluation iteration has none of them.
GRADIENT_ONLY_PARTS = ("dp_comm_exposed", "expert_dp_comm_exposed", "optimizer", "grad_accumulation",
                       "shard_copies", "offload_copies", "embedding_sync")


def forward_only_seconds(parts: dict, zero) -> np.ndarray:
    """Seconds of one forward-only iteration of the step's global batch, per candidate (`zero`: ZeRO stages)."""
    compute = parts["forward"] + parts["backward"] + parts["recompute"]
    forward_share = np.divide(parts["forward"], compute, out=np.zeros_like(np.asarray(compute, dtype=float)),
                              where=np.asarray(compute) > 0)
    # forward_share x (forward + backward + recompute) is forward alone: no_grad recomputes nothing.
    both_passes = sum(value for name, value in parts.items() if name not in GRADIENT_ONLY_PARTS)
    gathers = np.where(np.asarray(zero) == 3, parts["dp_comm_exposed"], 0.0)
    return forward_share * (both_passes + gathers)


def evaluation_fraction(parts: dict, step_time_s, zero, framework_codes) -> np.ndarray:
    """Evaluation seconds per second of training, per candidate; 0 for stacks whose launch does not evaluate."""
    stack = framework_arrays(np.atleast_1d(framework_codes))
    interval, iters = stack["eval_interval_steps"], stack["eval_iters"]
    per_step = forward_only_seconds(parts, zero) * iters / np.maximum(interval, 1.0)
    return np.where(interval > 0, per_step / np.asarray(step_time_s, dtype=float), 0.0)


def with_evaluation(goodput, fraction) -> np.ndarray:
    """Goodput once evaluation is counted: of the wall-clock a failure-free run trains, 1 / (1 + fraction)."""
    return np.asarray(goodput, dtype=float) / (1.0 + np.asarray(fraction, dtype=float))


def batch_evaluation_fraction(batch, times: dict) -> np.ndarray:
    """evaluation_fraction of a CandidateBatch from its step_time result `times`."""
    return evaluation_fraction(times["parts"], times["step_time_s"], batch.zero, batch.framework)


def evaluation_record(framework: str, fraction: float) -> dict:
    """The evaluation passes a plan names: its share of training time, the interval and the iterations."""
    stack = FRAMEWORKS[framework]
    return {"fraction": float(fraction), "interval_steps": stack.eval_interval_steps, "iters": stack.eval_iters}


def plan_evaluation(plan: dict) -> dict:
    """A plan's (planner optimize) evaluation passes, from its step breakdown (evaluation_record)."""
    layout = plan["layout"]
    fraction = evaluation_fraction(plan["time"], plan["step_time_s"], layout["zero"], FRAMEWORK_CODES[layout["framework"]])
    return evaluation_record(layout["framework"], np.asarray(fraction).reshape(-1)[0])
