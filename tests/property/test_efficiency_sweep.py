"""A batch priced under several efficiency settings at once (cost.efficiency_sweep, what calibration's fits run)
gives each row the step time one `step_time` call under its own setting gives, bit for bit.

The settings are drawn over every parameter `planner calibrate` fits, with a different value per setting, on
layouts of every stack the property suite draws (ZeRO-3, offload, pipelines, tp, cp, MoE): a cost-model part that
read an efficiency on a subset of the rows, or once per distinct layout shape, would give some copy of a row
another setting's numbers (or fail to broadcast)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.calibrate.fitting import PARAMETERS
from planner.cost import distinct, efficiency_sweep
from planner.cost.step_time import step_time
from planner.specs.candidate_batch import layouts_batch

EXAMPLES = settings.default.max_examples


def _moe_cases():
    """tests/moe's MoE case strategy (tests run with --import-mode=importlib: loaded by path)."""
    path = Path(__file__).parents[1] / "moe" / "test_moe_properties.py"
    spec = importlib.util.spec_from_file_location("_moe_properties_for_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.moe_cases


MOE_CASES = _moe_cases()


# Values each fitted parameter may take in a drawn setting: within calibrate's bounds (fitting.PARAMETERS).
def _value(name):
    kind, low, high = PARAMETERS[name]
    if kind == "fraction":
        return st.floats(max(low, 0.01), min(high, 1.5), allow_nan=False)
    return st.floats(low, min(high, low * 1e4), allow_nan=False)


# matmul_half_size in every setting or in none: settings that mix a derived size (None) with a number are priced
# one by one (gemm.matmul_efficiency prices them by different rules), which would compare step_time with itself.
_OTHERS = {name: _value(name) for name in PARAMETERS if name != "matmul_half_size"}
_settings = st.one_of(
    st.lists(st.fixed_dictionaries({}, optional=_OTHERS), min_size=2, max_size=6),
    st.lists(st.fixed_dictionaries({"matmul_half_size": _value("matmul_half_size")}, optional=_OTHERS),
             min_size=2, max_size=6))


def _drawn_batch(gen, data, size):
    """A drawn cluster and a batch of `size` drawn (model, layout) rows on it."""
    cluster = data.draw(gen.clusters())
    models = [data.draw(gen.models()) for _ in range(size)]
    return cluster, layouts_batch(models, [data.draw(gen.layouts(model, cluster)) for model in models])


def _one_by_one(batch, cluster, drawn):
    return np.stack([step_time(batch, cluster.with_efficiency(**setting))["step_time_s"] for setting in drawn])


def _swept(batch, cluster, drawn):
    """step_times_under, counting its cost-model calls: one, on the tiled rows, where they fit one unkeyed batch."""
    calls = []
    with mock.patch.object(efficiency_sweep, "step_time", lambda b, c: calls.append(len(b)) or step_time(b, c)):
        swept = efficiency_sweep.step_times_under(batch, cluster, drawn)
    if len(batch) * len(drawn) < distinct.FEWEST_KEYED_ROWS:
        assert calls == [len(batch) * len(drawn)], calls
    return swept


@settings(max_examples=max(10, EXAMPLES // 2), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), size=st.integers(1, 30))
def test_each_setting_gives_what_step_time_gives_under_it_alone(gen, data, size):
    cluster, batch = _drawn_batch(gen, data, size)
    drawn = data.draw(_settings)
    np.testing.assert_array_equal(_swept(batch, cluster, drawn), _one_by_one(batch, cluster, drawn))


@settings(max_examples=max(10, EXAMPLES // 4), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_moe_rows_too(data):
    cases = [data.draw(MOE_CASES()) for _ in range(data.draw(st.integers(1, 6)))]
    cluster = cases[0][2]
    batch = layouts_batch([m for m, _, _ in cases], [layout for _, layout, _ in cases])
    drawn = data.draw(_settings)
    np.testing.assert_array_equal(_swept(batch, cluster, drawn), _one_by_one(batch, cluster, drawn))


@settings(max_examples=max(10, EXAMPLES // 4), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), size=st.integers(1, 20))
def test_requests_on_their_own_rows_get_what_those_rows_get_alone(gen, data, size):
    """step_times_of (calibrate.lockstep's fits priced together): each request's rows of the batch under each of its
    settings, as step_time gives them on those rows alone."""
    cluster, batch = _drawn_batch(gen, data, size)
    subsets = st.lists(st.integers(0, size - 1), min_size=1, max_size=size, unique=True).map(sorted)
    requests = data.draw(st.lists(st.tuples(st.one_of(st.none(), subsets.map(np.array)), _settings),
                                  min_size=1, max_size=5))
    answers = efficiency_sweep.step_times_of(batch, cluster, requests)
    for (rows, drawn), answer in zip(requests, answers):
        own = batch if rows is None else batch.take(rows)
        np.testing.assert_array_equal(answer, _one_by_one(own, cluster, drawn))


def test_a_sweep_too_large_for_one_unkeyed_batch_is_priced_in_parts(gen):
    """Settings x rows beyond distinct.FEWEST_KEYED_ROWS would let the cost model price rows once per distinct
    layout, across settings: the sweep splits such a sweep (here 3 settings of 1,000 rows: two tiled, one alone)."""
    from planner.specs.clusters import load_cluster
    from planner.specs.layout import make_layout
    from planner.specs.model import PRESETS

    model, cluster = PRESETS["gpt2-small"], load_cluster("dgx-h100")
    layout = make_layout(tp=2, dp=4, micro_batch=1, global_batch=32)
    rows = 1000
    assert 3 * rows >= distinct.FEWEST_KEYED_ROWS
    batch = layouts_batch([model] * rows, [layout] * rows)
    drawn = [{"matmul_peak_fraction": 0.3}, {"matmul_peak_fraction": 0.6, "latency_scale": 10.0}, {}]
    swept = efficiency_sweep.step_times_under(batch, cluster, drawn)
    assert np.all(swept[0] > swept[1]) and len(set(swept[:, 0])) == 3
    np.testing.assert_array_equal(swept, _one_by_one(batch, cluster, drawn))
