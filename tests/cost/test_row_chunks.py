"""A batch scored in row chunks on several threads (cost/row_chunks.py) gets the numbers it gets in one piece, bit for
bit: the cost model's estimate, the budget search's chunks and the fixed-model search's blocks. The chunk sizes are
shrunk here so that small batches are cut into many uneven chunks."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import numpy as np
import pytest

from planner.cost import row_chunks
from planner.cost.estimate import estimate
from planner.errors import PlannerInputError
from planner.laws.registry import load_law
from planner.search import branch_and_bound, layouts
from planner.search.budget import build_constraints
from planner.search.layouts import search_layouts
from planner.search.optimize import optimize
from planner.specs.clusters import load_cluster
from planner.specs.model import preset


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of at most 5,000 rows, cut wherever each keeps 1,000: a test batch of tens of thousands of rows is
    scored in a dozen chunks of sizes that do not divide it."""
    monkeypatch.setattr(row_chunks, "ROWS_PER_CHUNK", 5_000)
    monkeypatch.setattr(row_chunks, "FEWEST_ROWS_PER_CHUNK", 1_000)


@pytest.mark.parametrize("model_name, cluster_name", [("llama2-70b", "dgx-h100"), ("deepseek-v3", "h800-deepseek")])
def test_an_estimate_in_chunks_on_threads_equals_one_piece(small_chunks, mixed_batch, flatten, model_name,
                                                           cluster_name):
    batch, cluster = mixed_batch(model_name), load_cluster(cluster_name)
    assert len(row_chunks.row_bounds(len(batch), 3)) > 3
    whole = dict(flatten(dataclasses.asdict(estimate(batch, cluster, threads=1))))
    chunked = dict(flatten(dataclasses.asdict(estimate(dataclasses.replace(batch), cluster, threads=3))))
    assert whole.keys() == chunked.keys()
    for name, values in whole.items():
        assert chunked[name].shape == values.shape, name
        np.testing.assert_array_equal(chunked[name], values, err_msg=name)


def test_a_many_model_batch_in_chunks_equals_one_piece(small_chunks, mixed_batch, flatten):
    """A budget search's batch holds many models; the chunks each hold a share of them."""
    models = [preset(name) for name in ("llama3-8b", "llama2-70b", "mixtral-8x7b", "gpt3-13b")]
    batch, cluster = mixed_batch("", models), load_cluster("dgx-h100")
    whole = dict(flatten(dataclasses.asdict(estimate(batch, cluster, threads=1))))
    chunked = dict(flatten(dataclasses.asdict(estimate(dataclasses.replace(batch), cluster, threads=2))))
    for name, values in whole.items():
        np.testing.assert_array_equal(chunked[name], values, err_msg=name)


def _sorted(batch, key):
    """The batch's rows ordered by `key` (a column per row): chunks of a sorted batch differ in what their rows have."""
    return batch.take(np.argsort(key, kind="stable"))


@pytest.mark.parametrize("descending", [False, True])
def test_chunks_that_differ_in_their_parts_give_the_whole_batchs_parts(small_chunks, mixed_batch, flatten, descending):
    """The cost model leaves a part out where no row of its batch has it (an MoE model's expert memory and all-to-all,
    the interleaved schedule's lock-step). Sorted by model and by vpp, the first chunks lack what the last have, in
    either order: the chunked result has every part of the whole batch's, zero where the whole batch has zero."""
    models = [preset(name) for name in ("llama3-8b", "mixtral-8x7b")]
    batch, cluster = mixed_batch("", models), load_cluster("dgx-h100")
    sign = -1 if descending else 1
    batch = _sorted(batch, sign * (np.asarray(batch.model_index) * 10 + np.asarray(batch.vpp)))
    whole = dict(flatten(dataclasses.asdict(estimate(batch, cluster, threads=1))))
    parts_of = (lambda b: set(dict(flatten(dataclasses.asdict(estimate(b, cluster, threads=1))))))
    assert parts_of(batch.take(np.arange(2_000))) != parts_of(batch.take(np.arange(len(batch) - 2_000, len(batch))))
    chunked = dict(flatten(dataclasses.asdict(estimate(dataclasses.replace(batch), cluster, threads=3))))
    assert whole.keys() == chunked.keys()
    for name, values in whole.items():
        assert chunked[name].dtype == values.dtype, name
        np.testing.assert_array_equal(chunked[name], values, err_msg=name)


def test_numpy_error_state_holds_in_the_threads():
    """A caller's np.errstate(all="raise") holds in every thread, as on one (a new thread starts at numpy's default)."""
    with np.errstate(all="raise"), pytest.raises(FloatingPointError):
        list(row_chunks.in_threads(lambda x: np.array([1.0]) / np.array([0.0]), range(4), 2))


def test_default_threads_are_the_cores_at_most_eight(monkeypatch):
    monkeypatch.delenv(row_chunks.THREADS_VARIABLE, raising=False)
    monkeypatch.setattr(row_chunks, "cpu_quota_cores", lambda: None)
    monkeypatch.setattr(row_chunks.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert row_chunks.thread_count() == row_chunks.MOST_DEFAULT_THREADS == 8
    monkeypatch.setattr(row_chunks.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert row_chunks.thread_count() == 2
    monkeypatch.setenv(row_chunks.THREADS_VARIABLE, "16")  # asked for: more than the default's cap
    assert row_chunks.thread_count() == 16


def test_default_threads_stay_within_a_containers_cpu_quota(monkeypatch):
    monkeypatch.delenv(row_chunks.THREADS_VARIABLE, raising=False)
    monkeypatch.setattr(row_chunks.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(row_chunks, "cpu_quota_cores", lambda: 3)
    assert row_chunks.thread_count() == 3
    monkeypatch.setattr(row_chunks.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert row_chunks.thread_count() == 2  # the quota is a ceiling, not a floor


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "max 100000\n"}, None),  # cgroup v2, no quota
    ({"cpu.max": "200000 100000\n"}, 2),
    ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: rounded up
    ({"cpu.max": "50000 100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # cgroup v1, no quota
    ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),
    ({"cpu,cpuacct/cpu.cfs_quota_us": "300000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 3),
    ({}, None),  # nothing mounted
    ({"cpu.max": "garbage\n"}, None),
])
def test_cpu_quota_cores_reads_cgroup_v1_and_v2(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert row_chunks.cpu_quota_cores(tmp_path) == expected


@pytest.mark.parametrize("rows, threads", [(0, 2), (1, 1), (999, 4), (2_000, 2), (2_001, 8), (9_999, 1),
                                           (10_001, 1), (123_457, 3), (50_000, 64)])
def test_row_bounds_cover_every_row_once_in_even_chunks(small_chunks, rows, threads):
    bounds = row_chunks.row_bounds(rows, threads)
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))  # contiguous, in order
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1
    assert max(sizes) <= 5_000
    if threads > 1 and rows >= 2 * 1_000:  # one chunk a thread at least, none under the fewest rows
        assert len(bounds) >= min(threads, rows // 1_000) and min(sizes) >= 1_000 - 1
    if threads == 1 and rows <= 5_000:
        assert len(bounds) == 1


def test_in_threads_keeps_order_runs_at_once_and_holds_few_results():
    running, most, lock = [0], [0], threading.Lock()

    def slow_square(x):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02 if x % 3 else 0.05)  # later items finish first
        with lock:
            running[0] -= 1
        return x * x

    submitted = []

    def items():
        for x in range(12):
            submitted.append(x)
            yield x

    results = []
    for value in row_chunks.in_threads(slow_square, items(), 3):
        results.append(value)
        # At most `threads` items are handed out beyond those read: a search holds few chunks' results at once.
        assert len(submitted) - len(results) <= 3
    assert results == [x * x for x in range(12)]
    assert most[0] > 1  # ran at once


def test_in_threads_raises_a_calls_error():
    def fails_on_five(x):
        if x == 5:
            raise PlannerInputError("cluster spec 'x': bad")
        return x

    with pytest.raises(PlannerInputError, match="cluster spec 'x'"):
        list(row_chunks.in_threads(fails_on_five, range(10), 2))


@pytest.mark.parametrize("setting, expected", [("3", 3), (" 1 ", 1), ("", None)])
def test_thread_count_reads_planner_threads(monkeypatch, setting, expected):
    monkeypatch.setenv(row_chunks.THREADS_VARIABLE, setting)
    count = row_chunks.thread_count()
    assert count == expected if expected is not None else count >= 1


@pytest.mark.parametrize("setting", ["0", "-2", "two", "1.5"])
def test_a_bad_planner_threads_is_a_one_line_error(monkeypatch, setting):
    monkeypatch.setenv(row_chunks.THREADS_VARIABLE, setting)
    with pytest.raises(PlannerInputError, match="PLANNER_THREADS.*expected a whole number >= 1"):
        row_chunks.thread_count()


def test_cli_rejects_a_bad_planner_threads_with_exit_2(cli, monkeypatch):
    monkeypatch.setenv(row_chunks.THREADS_VARIABLE, "0")
    code, out, err = cli(["simulate", "--model", "llama3-8b", "--cluster", "dgx-h100", "--gpus", "8"])
    assert code == 2 and "PLANNER_THREADS" in err and len(err.strip().splitlines()) == 1 and not out


def test_the_budget_search_on_threads_chooses_and_counts_as_on_one(monkeypatch):
    """Chunks of 4,096 candidates scored three at a time and tallied in order: the same plan, alternatives, drop
    counts and scored count as each round's candidates in one chunk on one thread."""
    monkeypatch.setattr(row_chunks, "FEWEST_ROWS_PER_CHUNK", 1_024)
    cluster = load_cluster("dgx-h100")
    constraints = build_constraints(budget="3000gpuh", deadline=None, gpus=64, max_gpus=None, unique_tokens=None,
                                    target_loss=None, inference_tokens=None,
                                    price_per_gpu_hour=cluster.price_per_accelerator_hour, cluster_name=cluster.name,
                                    min_headroom=0.0)
    results = {}
    for threads, in_flight in (("1", 10**9), ("3", 3 * 4_096)):
        monkeypatch.setenv(row_chunks.THREADS_VARIABLE, threads)
        monkeypatch.setattr(branch_and_bound, "ROWS_IN_FLIGHT", in_flight)
        result = optimize(cluster, load_law("epoch", None), constraints, frameworks=("megatron",))
        assert result.status == "ok" and result.scored > 3 * 4_096
        results[threads] = json.dumps({"plan": result.plan, "alternatives": result.alternatives,
                                       "dropped": result.dropped, "scored": result.scored}, sort_keys=True, default=str)
    assert results["1"] == results["3"]


def test_the_layout_search_on_threads_prices_every_layout_as_on_one(monkeypatch):
    monkeypatch.setattr(layouts, "SCORE_BLOCK", 1_000)
    monkeypatch.setattr(row_chunks, "FEWEST_ROWS_PER_CHUNK", 200)
    model, cluster = preset("llama3-8b"), load_cluster("dgx-h100")
    rows = {}
    for threads in ("1", "3"):
        monkeypatch.setenv(row_chunks.THREADS_VARIABLE, threads)
        search = search_layouts(model, cluster, 16, tokens=1e12)
        assert len(search) > 3 * 1_000
        rows[threads] = json.dumps(search.rows(), sort_keys=True, default=str)
    assert rows["1"] == rows["3"]
