"""planner: a distributed-training scale planner and simulator.

Data flows one way: specs (units, hardware, model, layout) -> cost model (cost/) ->
calibration -> loss laws (laws/) -> search -> report / CLI.
"""

__version__ = "0.1.0"


def search_layouts(model, cluster, gpus: int, **options):
    """Every layout of a chosen model on `gpus` GPUs, scored: `planner.search.layouts.search_layouts`.

    `model` and `cluster` may be names (a preset, a cluster spec) or loaded specs. The result's
    `rows()` are plain dicts a notebook turns into a table (`pandas.DataFrame(result.rows())`), `best`
    is the fastest layout that fits, `layout(i)` a validated Layout. Imported lazily so that
    `import planner` stays cheap.
    """
    from planner.hardware import ClusterSpec, load_cluster
    from planner.model import ModelSpec, preset
    from planner.search.layouts import search_layouts as search

    model = model if isinstance(model, ModelSpec) else preset(model)
    cluster = cluster if isinstance(cluster, ClusterSpec) else load_cluster(cluster)
    return search(model, cluster, gpus, **options)


def plan_fixed_model(model, cluster, gpus, **options):
    """GPU count, layout, days and cost for a chosen model: `planner.search.fixed_model.plan_fixed_model`
    (`gpus` is a list of counts to consider); names are accepted as in `search_layouts`."""
    from planner.hardware import ClusterSpec, load_cluster
    from planner.model import ModelSpec, preset
    from planner.search.fixed_model import plan_fixed_model as plan

    model = model if isinstance(model, ModelSpec) else preset(model)
    cluster = cluster if isinstance(cluster, ClusterSpec) else load_cluster(cluster)
    return plan(model, cluster, list(gpus), **options)
