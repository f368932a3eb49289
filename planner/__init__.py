"""planner: a distributed-training scale planner and simulator.

Data flows one way: specs/ (units, hardware, clusters, topology, model, layout) -> frameworks/ and cost/
(the cost model) -> calibrate/ -> laws/ -> search/ -> emit/, report/ and cli/.
"""

__version__ = "0.1.0"

__all__ = ["load_cluster", "model", "preset", "make_model", "make_layout", "simulate", "plan", "search_layouts",
           "plan_fixed_model"]


def load_cluster(name: str | None = None, cluster_dir=None):
    """A bundled cluster spec by name (`planner clusters` lists them) or a spec YAML path; None = the
    default cluster the CLI uses (planner.specs.clusters.DEFAULT_CLUSTER)."""
    from planner.specs.clusters import DEFAULT_CLUSTER, load_cluster as load

    return load(name or DEFAULT_CLUSTER, cluster_dir)


def model(name: str):
    """A published model shape by name (`planner simulate --list-models`), e.g. planner.model("llama3-70b")."""
    from planner.specs.model import preset as get

    return get(name)


preset = model  # the same function under the name the CLI uses for it (--model PRESET)


def make_model(**fields):
    """A model from its shape: layers, hidden, heads (kv_heads, ffn, mlp, vocab, seq_len, ... optional)."""
    from planner.specs.model import make_model as make

    return make("model", **fields)


def make_layout(**fields):
    """A parallel layout: tp, pp, dp, cp, vpp, zero, offload, micro_batch, global_batch, recompute,
    seq_parallel, dtype, framework, ... (defaults: one GPU, no sharding, bf16)."""
    from planner.specs.layout import make_layout as make

    return make("layout", **fields)


def simulate(model, layout=None, cluster=None, *, gpus: int | None = None, **layout_fields) -> dict:
    """Step time (named parts), memory per GPU (named parts, fits), MFU/HFU of one model and layout.

    `model` may be a preset name, `cluster` a spec name. Give a `layout`, or `gpus` with any layout fields
    (tp, pp, cp, zero, micro_batch, ...): dp is then gpus / (tp x pp x cp) and the global batch defaults to
    one micro-batch per replica, e.g. `planner.simulate("llama3-70b", gpus=64, tp=8, zero=1)`, in the cluster's own
    training format unless `dtype` is given (bf16, fp16 on V100s). With neither, one GPU.
    """
    from planner.cost.estimate import simulate as run

    cluster = _cluster(cluster)
    if layout is None:
        layout_fields.setdefault("dtype", cluster.default_training_dtype)  # as the CLI's --dtype default
        if gpus is not None:
            span = layout_fields.get("tp", 1) * layout_fields.get("pp", 1) * layout_fields.get("cp", 1)
            if gpus % span:
                raise ValueError(f"gpus={gpus} is not a multiple of tp x pp x cp = {span}")
            layout_fields.setdefault("dp", gpus // span)
            layout_fields.setdefault("global_batch", layout_fields["dp"] * layout_fields.get("micro_batch", 1))
        layout = make_layout(**layout_fields)
    elif gpus is not None or layout_fields:
        raise TypeError("planner.simulate: give a layout, or gpus and layout fields, not both")
    return run(_model(model), layout, cluster)


def plan(budget_gpu_hours: float | None = None, *, cluster=None, law: str = "epoch", deadline: str | None = None,
         gpus: int | None = None, max_gpus: int | None = None, target_loss: float | None = None,
         unique_tokens: str | None = None, inference_tokens: str | None = None, seq_len: int = 4096,
         vocab: int = 32000, dtype: str | None = None):
    """`planner optimize` from Python: the best N, D, GPU count and layout for a budget in GPU-hours (or a
    target loss). `dtype` None: the cluster's own training format (bf16, fp16 on V100s). Returns
    planner.search.optimize.OptimizeResult (`.plan` is a dict, `.status` "ok" or "infeasible" with `.explanation`)."""
    from planner.search.budget import build_constraints
    from planner.laws.registry import load_law
    from planner.search.optimize import optimize

    cluster = _cluster(cluster)
    constraints = build_constraints(
        budget=None if budget_gpu_hours is None else f"{budget_gpu_hours}gpuh", deadline=deadline, gpus=gpus,
        max_gpus=max_gpus, unique_tokens=unique_tokens, target_loss=target_loss, inference_tokens=inference_tokens,
        price_per_gpu_hour=cluster.price_per_accelerator_hour, cluster_name=cluster.name)
    return optimize(cluster, load_law(law, constraints.unique_tokens), constraints, dtype=dtype, seq_len=seq_len,
                    vocab=vocab)


def search_layouts(model, cluster, gpus: int, **options):
    """Every layout of a chosen model on `gpus` GPUs, scored: `planner.search.layouts.search_layouts`.

    `model` and `cluster` may be names (a preset, a cluster spec) or loaded specs. The result's
    `rows()` are plain dicts a notebook turns into a table (`pandas.DataFrame(result.rows())`), `best`
    is the fastest layout that fits, `layout(i)` a validated Layout. Imported lazily so that
    `import planner` stays cheap.
    """
    from planner.search.layouts import search_layouts as search

    return search(_model(model), _cluster(cluster), gpus, **options)


def plan_fixed_model(model, cluster, gpus, **options):
    """GPU count, layout, days and cost for a chosen model: `planner.search.fixed_model.plan_fixed_model`
    (`gpus` is a list of counts to consider); names are accepted as in `search_layouts`."""
    from planner.search.fixed_model import plan_fixed_model as plan

    return plan(_model(model), _cluster(cluster), list(gpus), **options)


def _model(model):
    """A preset name, or a ModelSpec as it is."""
    return preset(model) if isinstance(model, str) else model


def _cluster(cluster):
    """A cluster spec name or path (None: the default cluster), or a ClusterSpec as it is."""
    return load_cluster(cluster) if cluster is None or isinstance(cluster, str) else cluster
