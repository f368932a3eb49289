"""The pipeline's fill, drain and overlapped sends against an event simulation of Megatron-Core's own schedule order
(NVIDIA/Megatron-LM@d98e8a64 megatron/core/pipeline_parallel/schedules.py): each rank runs its forward and backward
chunks in the order the schedule issues them, each starting when the rank is free and its input has arrived."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import planner
from planner.cost import step_time


def _schedule_table(m, v, g):
    """get_schedule_table (schedules.py:989-1016): groups of g micro-batches through the chunks in turn."""
    table = []
    for low in range(0, m, g):
        high = m if low + g >= m else low + g
        table.extend((mb, c) for c in range(v) for mb in range(low, high))
    return table


def _rank_ops(p, v, m, r):
    """Rank r's ops in issue order, (kind, micro-batch, chunk). 1F1B: warm-up min(p - r - 1, m) forwards
    (schedules.py:2277-2279, 2334-2460); interleaved at a group of p: warm-up 2(p - r - 1) + (v - 1) p chunks
    (get_pp_rank_microbatches, :957-978), backward chunks in reverse (get_model_chunk_id, :1244-1249)."""
    if v == 1:
        warm = min(p - r - 1, m)
        ops = [("F", i, 0) for i in range(warm)]
        for i in range(m - warm):
            ops += [("F", warm + i, 0), ("B", i, 0)]
        return ops + [("B", i, 0) for i in range(m - warm, m)]
    total = m * v
    warm = min(2 * (p - r - 1) + (v - 1) * p, total)
    table = _schedule_table(m, v, p)
    forward = lambda k: ("F", table[k][0], table[k][1])  # noqa: E731
    backward = lambda k: ("B", table[k][0], v - 1 - table[k][1])  # noqa: E731
    ops = [forward(k) for k in range(warm)]
    for k in range(total - warm):
        ops += [forward(warm + k), backward(k)]
    return ops + [backward(k) for k in range(total - warm, total)]


def megatron_makespan(p, v, m, forward, backward, send=0.0):
    """Seconds of one step's pipeline: forward[r][c], backward[r][c] per micro-batch of chunk c on rank r (virtual
    stage c p + r); every hop to another stage arrives `send` seconds after the op ends (asynchronous sends)."""
    stages = p * v
    ops = [_rank_ops(p, v, m, r) for r in range(p)]
    done, free, position = {}, [0.0] * p, [0] * p
    left = sum(len(o) for o in ops)
    while left:
        moved = False
        for r in range(p):
            while position[r] < len(ops[r]):
                kind, mb, c = ops[r][position[r]]
                s = c * p + r
                if kind == "F":
                    needs = ("F", mb, s - 1) if s > 0 else None
                else:
                    needs = ("B", mb, s + 1) if s < stages - 1 else ("F", mb, s)
                if needs is not None and needs not in done:
                    break
                start = max(free[r], done[needs] if needs else 0.0)
                end = start + (forward if kind == "F" else backward)[r][c]
                free[r] = end
                hops = (kind == "F" and s < stages - 1) or (kind == "B" and s > 0)
                done[(kind, mb, s)] = end + (send if hops else 0.0)
                position[r] += 1
                left -= 1
                moved = True
        assert moved, "the schedule deadlocked"
    return max(free)


def planner_pipeline(p, v, m, stage_seconds):
    """The planner's pipeline seconds of one step for per-micro-batch stage seconds (first, fullest middle, last):
    m slots of the slowest stage and step_time's bubble slots at the other stages' mean."""
    seconds = np.array(stage_seconds, dtype=float)[:, None]
    slowest = seconds.max(axis=0)
    slot = step_time._other_stages_mean(SimpleNamespace(pp=np.array([float(p)])), seconds, slowest)
    return float(m * slowest[0] + step_time.pipeline_bubble_slots(p, v, m) * slot[0])

def chunks(p, v, rank_seconds, share_backward=2.0 / 3.0):
    """forward/backward tables of p ranks whose v chunks share each rank's seconds evenly."""
    forward = [[s * (1 - share_backward) / v] * v for s in rank_seconds]
    backward = [[s * share_backward / v] * v for s in rank_seconds]
    return forward, backward


@pytest.mark.parametrize("p, v, m", [(4, 1, 4), (8, 1, 8), (8, 1, 32), (4, 2, 8), (8, 4, 16), (16, 2, 32)])
def test_balanced_stages_reproduce_the_closed_form(p, v, m):
    """Equal stages: (m + (p - 1)/v) slots, Narayanan et al. 2021 section 2.2.2; the simulation gives it exactly."""
    forward, backward = chunks(p, v, [1.0] * p)
    assert megatron_makespan(p, v, m, forward, backward) == pytest.approx(m + (p - 1) / v, rel=1e-9)
    assert planner_pipeline(p, v, m, (1.0, 1.0, 1.0)) == pytest.approx(m + (p - 1) / v, rel=1e-9)


@pytest.mark.parametrize("p, v, m", [(8, 1, 8), (8, 1, 32), (16, 1, 16), (8, 2, 16), (8, 4, 32)])
def test_fill_and_drain_run_at_each_stages_own_speed(p, v, m):
    """A last stage heavier by its output layer (Llama 3 70B tp8 pp8: 0.1233 against 0.1129 s a micro-batch, the
    pipeline-schedule audit) and a lighter first stage: the other stages fill and drain the pipeline at their own
    speed. The planner within 0.5% of the simulation, where (p - 1)/v slots of the slowest stage were 2-4% slow."""
    first, middle, last = 0.100, 0.1129, 0.1233
    rank_seconds = [first] + [middle] * (p - 2) + [last]
    forward, backward = chunks(p, v, rank_seconds)
    truth = megatron_makespan(p, v, m, forward, backward)
    assert planner_pipeline(p, v, m, (first, middle, last)) == pytest.approx(truth, rel=0.005)
    old = (m + step_time.pipeline_bubble_slots(p, v, m)) * last
    assert old > truth * 1.005


@pytest.mark.parametrize("p, v", [(4, 2), (8, 4), (16, 8)])
def test_overlapped_sends_still_fill_and_drain(p, v):
    """Interleaved with asynchronous sends: the steady state hides them, the first micro-batch's forward and the last
    one's backward cross every chunk boundary, 2 (p v - 1) hops a step whatever the micro-batches."""
    forward, backward = chunks(p, v, [1.0] * p)
    for m in (p, 2 * p, 4 * p):
        extra = megatron_makespan(p, v, m, forward, backward, send=0.01) - megatron_makespan(p, v, m, forward, backward)
        assert extra == pytest.approx(2 * (p * v - 1) * 0.01, rel=1e-9)
    # The planner's pipeline_send: Megatron's stack (send and receive of a step in one batch: two transfers a
    # micro-batch and virtual stage) overlapped with interleaving pays nothing per micro-batch and those hops once.
    from planner.cost.model_parallel_comm import pipeline_send
    from planner.frameworks import FRAMEWORK_CODES, framework_arrays
    fw = framework_arrays(np.array([FRAMEWORK_CODES["megatron"]]))
    rows = SimpleNamespace(pp=np.array([float(p)]), vpp=np.array([float(v)]))
    exposed, _, fill = pipeline_send(rows, np.array([2 * 0.01]), np.array([1.0]), fw)
    assert exposed[0] == 0.0 and fill[0] == pytest.approx(2 * (p * v - 1) * 0.01, rel=1e-12)


def test_llama3_405b_interleaved_pays_its_pipeline_fill_sends():
    """The planner adds those hops to `pp_p2p` where Megatron overlaps the sends (interleaved): 2 (p v - 1) of one
    hop's seconds; they were priced at 0."""
    result = planner.simulate("llama3-405b", cluster="dgx-h100", gpus=16384, tp=8, pp=16, vpp=8, micro_batch=1,
                              global_batch=2048, framework="megatron", seq_parallel=True)
    from planner.cost.step_time import _layer_seconds
    from planner.specs.candidate_batch import single_batch
    from planner.specs.layout import Layout
    from planner.specs.model import PRESETS
    batch = single_batch(PRESETS["llama3-405b"], Layout(tp=8, pp=16, vpp=8, dp=128, micro_batch=1, global_batch=2048,
                                                        framework="megatron", seq_parallel=True))
    one_hop = _layer_seconds(batch, planner.load_cluster("dgx-h100"))["p2p_transfers"][0] / 2.0  # send + receive
    assert result["time"]["pp_p2p"] == pytest.approx(2 * (16 * 8 - 1) * one_hop, rel=1e-9)
    assert 0.01 < result["time"]["pp_p2p"] / result["step_time_s"] < 0.05
