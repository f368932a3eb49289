"""One call for the whole cost model: memory and step time of a candidate batch on a cluster."""

from __future__ import annotations

import math

from dataclasses import dataclass

import numpy as np

from planner.cost import row_chunks
from planner.cost.evaluation import evaluation_fraction
from planner.cost.memory import per_gpu_memory
from planner.cost.step_time import step_time
from planner.errors import PlannerInputError
from planner.frameworks import FRAMEWORK_CODES
from planner.specs.hardware import ClusterSpec
from planner.specs.candidate_batch import CandidateBatch, single_batch
from planner.specs.layout import Layout
from planner.specs.layout_checks import check_hierarchy_on_node, check_layout, check_tp_on_nodes
from planner.specs.model import ModelSpec


@dataclass(frozen=True)
class Estimate:
    """Per-candidate arrays: `memory` and `time` are the dicts of cost.memory and cost.step_time."""

    memory: dict
    time: dict

    @property
    def fits(self) -> np.ndarray:
        return self.memory["fits"]

    @property
    def step_time_s(self) -> np.ndarray:
        return self.time["step_time_s"]


def estimate(batch: CandidateBatch, cluster: ClusterSpec, threads: int | None = None) -> Estimate:
    """Memory and step time of every candidate. A large batch is scored in row chunks on `threads` threads
    (cost.row_chunks; default: PLANNER_THREADS or the process's cores), with the same numbers as in one piece."""
    count = row_chunks.thread_count() if threads is None else threads
    bounds = row_chunks.row_bounds(len(batch), count)
    if count == 1 or len(bounds) == 1:  # one thread: in one piece, as cheap as in chunks one after another
        return _estimate_rows(batch, cluster)
    parts = list(row_chunks.in_threads(lambda rows: _estimate_rows(batch.take(slice(*rows)), cluster), bounds,
                                       count))
    lengths = [stop - start for start, stop in bounds]
    return Estimate(memory=row_chunks.concatenate_rows([part.memory for part in parts], lengths),
                    time=row_chunks.concatenate_rows([part.time for part in parts], lengths))


def _estimate_rows(batch: CandidateBatch, cluster: ClusterSpec) -> Estimate:
    return Estimate(memory=per_gpu_memory(batch, cluster), time=step_time(batch, cluster))


def _scalar(tree):
    if isinstance(tree, dict):
        return {k: _scalar(v) for k, v in tree.items()}
    value = np.asarray(tree).reshape(-1)[0]
    return bool(value) if value.dtype == bool else float(value)


# What a tensor count sees (the CPU profiles' mem_method=counted-tensors): model states and buffers; MoE batches
# also have the experts' states and DualPipe's second weight copy (cost.memory, absent from dense batches).
MODEL_STATE_PARTS = ("weights", "gradients", "optimizer", "fp8_weights", "zero3_gathered", "comm_buckets",
                     "expert_weights", "expert_gradients", "expert_optimizer", "pipeline_weight_copy")


def model_states(parts: dict, index=None):
    """Bytes of the MODEL_STATE_PARTS among `parts` (memory parts of a batch; candidate `index` of it if given)."""
    return sum((parts[name] if index is None else parts[name][index]) for name in MODEL_STATE_PARTS if name in parts)


def check_simulable(model: ModelSpec, layout: Layout, cluster: ClusterSpec) -> None:
    """What simulate checks before it runs the model (validation and doctor check rows the same way)."""
    check_layout(model, layout)
    check_hierarchy_on_node(layout, cluster.gpus_per_node)
    check_tp_on_nodes(layout, cluster.gpus_per_node)
    cluster.peak_flops_per_s(layout.dtype)  # raises for a dtype the accelerator lacks
    capacity = cluster.total_gpus
    if layout.gpus > capacity:
        raise PlannerInputError(
            f"layout needs {layout.gpus} GPUs but cluster {cluster.name!r} has max_nodes({cluster.max_nodes})"
            f" * gpus_per_node({cluster.gpus_per_node}) = {capacity}"
        )


def simulate(model: ModelSpec, layout: Layout, cluster: ClusterSpec) -> dict:
    """The scalar path: validate, run the vectorised model on a batch of one, return plain numbers."""
    check_simulable(model, layout, cluster)
    result = estimate(single_batch(model, layout), cluster)
    memory = _scalar(result.memory)
    time = _scalar(result.time)
    if not (math.isfinite(time["step_time_s"]) and time["step_time_s"] > 0 and math.isfinite(memory["total_bytes"])):
        # Never a NaN score (issue 12): the spec's figures are what the arithmetic could not use.
        raise PlannerInputError(f"cluster spec {cluster.name!r}: its figures give a non-finite step time or memory for "
                                "this model and layout; check the peak FLOP/s, bandwidths and efficiency values")
    return {
        "step_time_s": time["step_time_s"],
        "tokens_per_s": time["tokens_per_s"],
        "tflops_per_gpu": time["tflops_per_gpu"],
        "mfu": time["mfu"],
        "hfu": time["hfu"],
        "model_flops_per_step": time["model_flops_per_step"],
        "fits": memory["fits"],
        "memory_parts": memory["parts"],
        "memory": {
            **memory["parts"],
            "total_bytes": memory["total_bytes"],
            "hbm_bytes": memory["hbm_bytes"],
            "shortfall_bytes": max(0.0, memory["total_bytes"] - memory["hbm_bytes"]),
            "model_states_bytes": model_states(memory["parts"]),
            "host_bytes_per_node": memory["host_bytes_per_node"],
            "nvme_bytes_per_node": memory["nvme_bytes_per_node"],
            "hbm_fits": memory["hbm_fits"],
            "host_fits": memory["host_fits"],
            "nvme_fits": memory["nvme_fits"],
            # Bytes of the parts above that are never live at once (cost.memory.phase_overlap), left out of the total,
            # and whether the optimizer step holds the peak (else the forward and backward do).
            "not_live_at_peak_bytes": memory["not_live_at_peak_bytes"],
            "step_holds_peak": memory["step_holds_peak"],
            "step_only_copy_bytes": memory["step_only_copy_bytes"],
        },
        "time": time["parts"],
        "comm_bytes_per_step": time["comm_bytes_per_step"],
        # Evaluation seconds per second of training (cost.evaluation): not a part of the step, a share of the run.
        "evaluation_fraction": float(np.asarray(evaluation_fraction(time["parts"], time["step_time_s"], layout.zero,
                                                         FRAMEWORK_CODES[layout.framework])).reshape(-1)[0]),
    }
