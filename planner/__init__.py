"""planner: a distributed-training scale planner and simulator.

Data flows one way: specs/ (units, hardware, clusters, topology, model, layout) -> frameworks/ and cost/
(the cost model) -> calibrate/ -> laws/ -> search/ -> emit/, report/ and cli/.
"""

import os

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
    """A model from its shape: layers, hidden, heads, vocab, seq_len (kv_heads, ffn, mlp, ... optional)."""
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
    training format unless `dtype` is given (bf16, fp16 on V100s). With neither, one GPU. A `layout` is taken as
    given, its dtype included: make_layout's default is bf16, so on V100s give dtype="fp16" there (or use the
    fields form, which takes the cluster's format).
    """
    from planner.cost.estimate import simulate as run
    from planner.errors import PlannerInputError
    from planner.specs.layout_checks import check_layout

    cluster, model = _cluster(cluster), _model(model)
    if layout is None:
        layout_fields.setdefault("dtype", cluster.default_training_dtype)  # as the CLI's --dtype default
        if gpus is not None:
            _gpu_count(gpus, "planner.simulate")
            span = layout_fields.get("tp", 1) * layout_fields.get("pp", 1) * layout_fields.get("cp", 1)
            if not isinstance(span, int) or span < 1:
                raise PlannerInputError(f"planner.simulate: tp, pp and cp must be whole numbers >= 1, got "
                                        f"tp x pp x cp = {span!r}")
            if gpus % span:
                raise PlannerInputError(f"planner.simulate: gpus={gpus} is not a multiple of tp x pp x cp = {span}")
            layout_fields.setdefault("dp", gpus // span)
        # One micro-batch per replica unless given, as the CLI's --global-batch default (with or without gpus).
        micro_batch, dp = layout_fields.get("micro_batch", 1), layout_fields.get("dp", 1)
        if isinstance(micro_batch, int) and isinstance(dp, int):
            layout_fields.setdefault("global_batch", dp * micro_batch)
        layout = make_layout(**layout_fields)
        # The arithmetic the CLI checks (cli/configuration.py): an explicit dp that disagrees with gpus was
        # simulated at dp's count without a word.
        check_layout(model, layout, gpus=gpus)
    elif gpus is not None or layout_fields:
        raise TypeError("planner.simulate: give a layout, or gpus and layout fields, not both")
    return run(model, layout, cluster)


def plan(budget_gpu_hours: float | str | None = None, *, cluster=None, law: str = "epoch", deadline: str | None = None,
         gpus: int | None = None, max_gpus: int | None = None, target_loss: float | None = None,
         unique_tokens: str | None = None, inference_tokens: str | None = None, seq_len: int = 4096,
         vocab: int = 32000, dtype: str | None = None, frameworks=None, batch_rule: str = "step-law",
         min_headroom: float = 0.0):
    """`planner optimize` from Python: the best N, D, GPU count and layout for a budget in GPU-hours (or a
    target loss), searched over the same stacks as the CLI (`frameworks` None: megatron, deepspeed and fsdp, as
    `--framework` left out). `budget_gpu_hours` is a number of GPU-hours or a budget as `--budget` takes it
    ("10000gpuh", "$2M"). `dtype` None: the cluster's own training format (bf16, fp16 on V100s). Returns
    planner.search.optimize.OptimizeResult (`.plan` is a dict, `.status` "ok" or "infeasible" with `.explanation`)."""
    from planner.errors import PlannerInputError
    from planner.search.budget import build_constraints
    from planner.laws.registry import load_law
    from planner.search.layouts import DEFAULT_FRAMEWORKS
    from planner.search.optimize import optimize
    from planner.frameworks import check_framework_names

    cluster = _cluster(cluster)
    frameworks = DEFAULT_FRAMEWORKS if frameworks is None else tuple(frameworks)
    check_framework_names(frameworks, "frameworks")
    for name, value in (("seq_len", seq_len), ("vocab", vocab)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise PlannerInputError(f"planner.plan: {name} must be a whole number > 0, got {value!r}")
    budget = (budget_gpu_hours if isinstance(budget_gpu_hours, str) or budget_gpu_hours is None
              else f"{budget_gpu_hours}gpuh")
    constraints = build_constraints(
        budget=budget, deadline=deadline, gpus=gpus,
        max_gpus=max_gpus, unique_tokens=unique_tokens, target_loss=target_loss, inference_tokens=inference_tokens,
        price_per_gpu_hour=cluster.price_per_accelerator_hour, cluster_name=cluster.name, min_headroom=min_headroom)
    return optimize(cluster, load_law(law, constraints.unique_tokens), constraints, dtype=dtype, seq_len=seq_len,
                    vocab=vocab, batch_rule=batch_rule, frameworks=frameworks)


def search_layouts(model, cluster, gpus: int, **options):
    """Every layout of a chosen model on `gpus` GPUs, scored: `planner.search.layouts.search_layouts`.

    `model` and `cluster` may be names (a preset, a cluster spec) or loaded specs. The result's
    `rows()` are plain dicts a notebook turns into a table (`pandas.DataFrame(result.rows())`), `best`
    is the fastest layout that fits, `layout(i)` a validated Layout. Imported lazily so that
    `import planner` stays cheap.
    """
    from planner.search.layouts import search_layouts as search

    _check_options(options, "planner.search_layouts")
    if options.get("global_batch") is not None:
        _gpu_count(options["global_batch"], "planner.search_layouts", "global_batch")
    return search(_model(model), _cluster(cluster), _gpu_count(gpus, "planner.search_layouts"), **options)


def plan_fixed_model(model, cluster, gpus, **options):
    """GPU count, layout, days and cost for a chosen model: `planner.search.fixed_model.plan_fixed_model`
    (`gpus` is a count or a list of counts to consider); names are accepted as in `search_layouts`."""
    from planner.search.fixed_model import plan_fixed_model as plan

    counts = [gpus] if isinstance(gpus, int) else list(gpus)
    _check_options(options, "planner.plan_fixed_model")
    return plan(_model(model), _cluster(cluster), [_gpu_count(g, "planner.plan_fixed_model") for g in counts],
                **options)


def _check_options(options: dict, where: str) -> None:
    """The checks the CLI's flags get (cli/fixed_model.py, cli/arguments.py), for the same options given from Python:
    a positive finite token count, limits in seconds with it, a headroom in [0, 0.9) and a knee in (0, 1]."""
    import math

    from planner.errors import PlannerInputError

    def number(name, low, high, low_open=True, high_open=False):
        value = options.get(name)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not (
                (value > low if low_open else value >= low) and (value < high if high_open else value <= high)):
            raise PlannerInputError(f"{where}: {name} must be a finite number in "
                                    f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}, got {value!r}")

    number("tokens", 0.0, math.inf)
    number("deadline_s", 0.0, math.inf)
    number("budget_gpu_s", 0.0, math.inf)
    number("min_headroom", 0.0, 0.9, low_open=False, high_open=True)
    number("knee", 0.0, 1.0)
    if (options.get("deadline_s") or options.get("budget_gpu_s")) and not options.get("tokens"):
        raise PlannerInputError(f"{where}: deadline_s/budget_gpu_s need tokens (how much to train) to turn steps "
                                "into days")


def _gpu_count(gpus, where: str, name: str = "gpus") -> int:
    """A count as the CLI's --gpus takes it: a whole number >= 1 (8.5, 0, NaN or True is a one-line error)."""
    from planner.errors import PlannerInputError

    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise PlannerInputError(f"{where}: {name} must be a whole number >= 1, got {gpus!r}")
    return gpus


def _model(model):
    """A preset name, or a ModelSpec as it is (anything else is a one-line error, not an AttributeError later)."""
    from planner.errors import PlannerInputError
    from planner.specs.model import ModelSpec

    if isinstance(model, str):
        return preset(model)
    if not isinstance(model, ModelSpec):
        raise PlannerInputError(f"model: give a preset name or a ModelSpec (planner.make_model), got "
                                f"{type(model).__name__}")
    return model


def _cluster(cluster):
    """A cluster spec name or path (None: the default cluster), or a ClusterSpec as it is."""
    from planner.errors import PlannerInputError
    from planner.specs.hardware import ClusterSpec

    if cluster is None or isinstance(cluster, str):
        return load_cluster(cluster)
    if isinstance(cluster, os.PathLike):
        return load_cluster(os.fspath(cluster))
    if not isinstance(cluster, ClusterSpec):
        raise PlannerInputError(f"cluster: give a cluster spec name or path, or a ClusterSpec (planner.load_cluster), "
                                f"got {type(cluster).__name__}")
    return cluster
