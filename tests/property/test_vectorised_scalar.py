"""The vectorised cost model (the search) and the scalar path (`simulate`) agree exactly (issue 7).

`simulate` runs the same vectorised code on a batch of one; the search scores a million candidates
at once. Any difference between the two would make the search pick a plan that `simulate` then
reports differently, so the comparison is bit-for-bit, not approximate.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from planner.cost.estimate import estimate, simulate
from planner.specs.candidate_batch import layouts_batch

EXAMPLES = settings.default.max_examples


def _batch(models, layouts):
    return layouts_batch(models, layouts)


@settings(max_examples=max(10, EXAMPLES // 2))
@given(data=st.data(), size=st.integers(2, 40))
def test_a_batch_gives_bit_identical_numbers_to_one_simulate_per_candidate(gen, data, size):
    cluster = data.draw(gen.clusters())
    models, layouts = [], []
    for _ in range(size):
        model = data.draw(gen.models())
        models.append(model)
        layouts.append(data.draw(gen.layouts(model, cluster)))
    batch = estimate(_batch(models, layouts), cluster)
    for i, (model, layout) in enumerate(zip(models, layouts)):
        scalar = simulate(model, layout, cluster)
        assert batch.time["step_time_s"][i] == scalar["step_time_s"], i
        for name, value in scalar["time"].items():
            assert batch.time["parts"][name][i] == value, (i, name)
        for key in ("mfu", "hfu", "tflops_per_gpu", "tokens_per_s", "model_flops_per_step"):
            assert batch.time[key][i] == scalar[key], (i, key)
        for name, value in batch.memory["parts"].items():
            assert value[i] == scalar["memory"][name], (i, name)
        assert batch.memory["total_bytes"][i] == scalar["memory"]["total_bytes"], i
        assert bool(batch.memory["fits"][i]) == scalar["fits"], i
        assert bool(batch.memory["host_fits"][i]) == scalar["memory"]["host_fits"], i
