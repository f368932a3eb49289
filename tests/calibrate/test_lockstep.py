"""Fits run side by side (calibrate.lockstep) give what they give one after another, and fail as they would.

The forward selection's candidate fits run in lockstep, their cost-model calls priced together; each fit must see
exactly the numbers it would alone, so the selection's cross-validated errors, and the parameters it picks, are the
same to the bit."""

from __future__ import annotations

import numpy as np
import pytest

from planner.calibrate import selection
from planner.calibrate.lockstep import run_together
from planner.calibrate.samples import Sample, load_samples, sample_batch
from planner.cost import efficiency_sweep
from planner.cost.step_time import step_time
from planner.profile.runs_csv import MeasuredRun, read_runs
from planner.specs.candidate_batch import layouts_batch
from planner.specs.clusters import load_cluster
from planner.specs.layout import make_layout
from planner.specs.model import PRESETS


@pytest.fixture(scope="module")
def published(shared_dir):
    """Two sources of the published A100 runs (Narayanan's Table 1, Korthikanti's tables): 14 rows, two groups."""
    runs, _ = read_runs(shared_dir / "data" / "runs" / "published_runs_dev.csv")
    cluster = load_cluster("dgx-a100-80gb")
    samples, _ = load_samples(runs, cluster)
    kept = [s for s in samples if s.group in ("Korthikanti22 Table3/Table5", "Narayanan21 SC21 Table1")]
    assert len(kept) >= 10
    return kept, cluster


def test_each_job_gets_its_own_rows_priced_and_jobs_that_never_ask_end_too(published):
    samples, cluster = published
    batch = sample_batch(samples)
    settings = [{"matmul_peak_fraction": 0.5}, {"latency_scale": 30.0, "hbm_efficiency": 0.4}]

    def asking(rows, times):  # asks `times` times for its rows, under the settings
        return lambda ask: [ask(rows, settings) for _ in range(times)]

    jobs = [asking(np.arange(0, 5), 3), asking(np.arange(3, 11), 1), lambda ask: "no request", asking(None, 2)]
    results = run_together(batch, cluster, jobs)
    assert results[2] == "no request"
    for rows, answers in ((np.arange(0, 5), results[0]), (np.arange(3, 11), results[1]), (None, results[3])):
        own = batch if rows is None else batch.take(rows)
        alone = np.stack([step_time(own, cluster.with_efficiency(**s))["step_time_s"] for s in settings])
        for answer in answers:
            np.testing.assert_array_equal(answer, alone)


def test_the_first_failing_job_in_order_raises_after_every_job_ended(published):
    samples, cluster = published
    ended = []

    def failing(label):
        def job(ask):
            ask(np.arange(2), [{}])
            ended.append(label)
            raise ValueError(label)
        return job

    def fine(ask):
        ask(np.arange(3), [{}, {"dp_overlap": 0.5}])
        ended.append("fine")
        return "ok"

    with pytest.raises(ValueError, match="^second$"):
        run_together(sample_batch(samples), cluster, [fine, failing("second"), failing("third")])
    assert sorted(ended) == ["fine", "second", "third"]


def test_a_selection_round_in_lockstep_scores_as_one_fit_after_another(published):
    samples, cluster = published
    name_sets = [["matmul_peak_fraction"], ["latency_scale"], ["hbm_efficiency", "dp_overlap"]]
    together = selection._cv_mapes(samples, cluster, name_sets, 2)
    alone = [selection._cv_mape(samples, cluster, names, 2) for names in name_sets]
    assert together == alone  # exactly: the same fits, the same numbers


def test_a_request_that_fails_fails_its_own_job_only(published):
    """Pricing a round together fails on one job's bad rows: each request is then priced alone, so the other job
    gets its numbers and the bad one its own error (the first failing job in order, as one after another)."""
    samples, cluster = published
    got = []

    def good(ask):
        got.append(ask(np.arange(4), [{}]))
        return "good"

    def bad(ask):
        return ask(np.array([10_000]), [{}])  # no such row

    with pytest.raises(IndexError):
        run_together(sample_batch(samples), cluster, [good, bad])
    assert len(got) == 1 and got[0].shape == (1, 4)


def test_jobs_run_under_the_callers_numpy_error_state(published):
    samples, cluster = published
    with np.errstate(divide="raise"):
        with pytest.raises(FloatingPointError):
            run_together(sample_batch(samples), cluster, [lambda ask: np.float64(1.0) / 0.0])
    with pytest.warns(RuntimeWarning, match="divide by zero"):  # numpy's default state, where the caller kept it
        assert run_together(sample_batch(samples), cluster, [lambda ask: np.float64(1.0) / 0.0]) == [np.inf]


def _mixed_samples():
    """Dense and MoE rows on one H100 cluster (which columns a batch carries depends on all its models: the MoE,
    MLA and vector columns), their 'measured' times the model's own under other efficiencies."""
    cluster = load_cluster("dgx-h100")
    cases = [
        ("gpt3-1.3b", dict(tp=2, dp=4, micro_batch=2, global_batch=64), "dense"),
        ("llama3-8b", dict(tp=4, pp=2, dp=2, micro_batch=1, global_batch=32, recompute="full"), "dense"),
        ("llama3-8b", dict(tp=8, dp=1, micro_batch=1, global_batch=16, zero=1), "dense"),
        ("mixtral-8x7b", dict(tp=2, pp=4, dp=8, ep=8, micro_batch=1, global_batch=128, seq_parallel=True), "moe"),
        ("qwen3-30b-a3b", dict(tp=1, pp=2, dp=16, ep=8, micro_batch=1, global_batch=256), "moe"),
        ("deepseek-v3", dict(tp=2, pp=16, dp=32, ep=64, micro_batch=1, global_batch=1024, seq_parallel=True), "moe"),
    ]
    models = [PRESETS[name] for name, _, _ in cases]
    layouts = [make_layout(**values) for _, values, _ in cases]
    slower = cluster.with_efficiency(matmul_peak_fraction=0.45, latency_scale=20.0)
    measured = step_time(layouts_batch(models, layouts), slower)["step_time_s"]
    runs = [MeasuredRun(id=f"r{i}", source=group, cluster=cluster.name, gpus=1, layers=1, hidden=1, heads=1,
                        kv_heads=1, ffn=1, mlp="gelu", seq_len=1, vocab=1, tp=1, pp=1, dp=1, cp=1, vpp=1, zero=0,
                        micro_batch=1, global_batch=1, recompute="none", seq_parallel=0, dtype="bf16",
                        step_time_s=float(t)) for i, ((_, _, group), t) in enumerate(zip(cases, measured))]
    return [Sample(run, model, layout, run.source) for run, model, layout in zip(runs, models, layouts)], cluster


def test_a_fits_rows_priced_in_the_whole_sets_batch_are_what_its_own_batch_gives_on_dense_and_moe_rows():
    """The lockstep prices a fit's rows as rows of the batch of every sample, where a fit alone builds a batch of its
    own rows: on dense and MoE rows mixed, the same numbers."""
    samples, cluster = _mixed_samples()
    batch = sample_batch(samples)
    setting = {"matmul_peak_fraction": 0.5, "latency_scale": 7.0, "dp_overlap": 0.3}
    for rows in ([0, 1, 2], [3, 4, 5], [1, 4], [0, 2, 3, 5]):
        own = step_time(sample_batch([samples[i] for i in rows]), cluster.with_efficiency(**setting))["step_time_s"]
        together = efficiency_sweep.step_times_of(batch, cluster, [(np.array(rows), [setting, {}])])[0]
        np.testing.assert_array_equal(together[0], own)


def test_a_selection_round_on_dense_and_moe_rows_scores_as_one_fit_after_another():
    samples, cluster = _mixed_samples()
    name_sets = [["matmul_peak_fraction"], ["latency_scale"]]
    assert selection._cv_mapes(samples, cluster, name_sets, 2) == [
        selection._cv_mape(samples, cluster, names, 2) for names in name_sets]
