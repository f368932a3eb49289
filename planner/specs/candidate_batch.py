"""Candidate batches: the struct-of-arrays form of (model shape + layout) the cost model consumes.

`CandidateBatch` holds one numpy array per field, one entry per candidate. A single layout is a batch of size
one, so the scalar and vectorised paths are the same code. Its own module because it is the boundary between
the specs (ModelSpec, Layout: validated objects) and the vectorised cost model (numeric codes and arrays).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from planner.frameworks import FP8_TENSORWISE_BY_DEFAULT, FRAMEWORK_CODES, FRAMEWORKS, PARTITION_ACTIVATIONS_BY_DEFAULT
from planner.frameworks.moe import A2A_OVERLAP_CODES, default_node_dispatch, default_routing_columns
from planner.specs.layout import Layout, moe_imbalance
from planner.specs.model import ModelSpec, flops_columns, param_breakdown, standard_attention, vector_tensors
from planner.specs.pipeline_stages import batch_stage_layers

RECOMPUTE_CODES = {"none": 0, "selective": 1, "full": 2}
OFFLOAD_CODES = {"none": 0, "optimizer": 1, "optimizer+params": 2}
DTYPE_CODES = {"bf16": 0, "fp16": 1, "fp8": 2, "fp32": 3}
# Bytes per element of weights, activations and communicated tensors for each training dtype.
# fp8 training keeps bf16 weights/activations outside the matmuls (Transformer Engine recipe).
DTYPE_BYTES = np.array([2.0, 2.0, 2.0, 4.0])


@dataclass(frozen=True)
class CandidateBatch:
    """Struct of arrays: entry i is candidate i. All arrays have the same length."""

    # Model shape
    layers: np.ndarray
    hidden: np.ndarray
    heads: np.ndarray
    kv_heads: np.ndarray
    ffn: np.ndarray
    mlp_matrices: np.ndarray  # 2 (GELU) or 3 (SwiGLU)
    vocab: np.ndarray
    seq_len: np.ndarray
    layer_params: np.ndarray  # exact parameters of one transformer block
    embedding_params: np.ndarray  # token (+ learned position) embedding
    logits_params: np.ndarray  # output projection (a copy of the embedding on the last stage when tied and pp > 1)
    total_params: np.ndarray
    tied_embeddings: np.ndarray  # bool
    # bool: the model trains with dropout (ModelSpec.dropout > 0), whose masks each layer keeps for backward
    dropout_masks: np.ndarray
    # Multi-token-prediction blocks (ModelSpec.mtp_layers), counted in `layers` and placed on the last pipeline
    # stage (stage_layers); each runs the shared output layer and a loss once more there.
    mtp_layers: np.ndarray
    # The true key/value heads (Megatron's num_query_groups; kv_heads above is effective on variant batches) and
    # the fused QKV projection's output elements per token, (heads + 2 x query_groups) x head_dim; 0 for MLA,
    # which projects through latents (MLASelfAttention has no linear_qkv).
    query_groups: np.ndarray
    qkv_width: np.ndarray
    # The attention core's query, key + value and output elements per token (ModelSpec.attention_widths), whole model.
    q_width: np.ndarray
    kv_width: np.ndarray
    attention_out_width: np.ndarray
    # Vector parameter tensors (norms, biases) per transformer layer and outside the layers
    # (planner.specs.model.vector_tensors): what ZeRO-3 keeps gathered and DeepSpeed gathers again after every
    # step. Per layer, each tensor's elements (whole model) and whether tp splits it: 2-D, (candidates, the most
    # any model of the batch has), 0 elements past a model's own; outside the layers each is `hidden` elements.
    vector_tensors_outside: np.ndarray
    vector_elements_per_layer: np.ndarray
    vector_split_per_layer: np.ndarray  # bool
    # Layout
    tp: np.ndarray
    pp: np.ndarray
    dp: np.ndarray
    cp: np.ndarray
    vpp: np.ndarray
    # Transformer layers the layout puts on the first and the last pipeline rank (Layout.first_stage_layers,
    # last_stage_layers); 0 = the stack's split.
    first_stage_layers: np.ndarray
    last_stage_layers: np.ndarray
    zero: np.ndarray
    offload: np.ndarray  # OFFLOAD_CODES
    offload_nvme: np.ndarray  # bool: ZeRO-Infinity target is NVMe rather than host memory
    micro_batch: np.ndarray
    global_batch: np.ndarray
    recompute: np.ndarray  # RECOMPUTE_CODES
    seq_parallel: np.ndarray  # bool
    flash_attention: np.ndarray  # bool
    dtype: np.ndarray  # DTYPE_CODES
    framework: np.ndarray  # FRAMEWORK_CODES
    tp_comm_overlap: np.ndarray  # bool, resolved (explicit setting or the framework's default)
    dp_comm_overlap: np.ndarray  # bool, resolved
    grad_reduce_in_fp32: np.ndarray  # -1 = the framework's default, 0 = the model dtype, 1 = fp32
    fp8_param_gather: np.ndarray  # bool
    fp8_current_scaling: np.ndarray  # bool: fp8_recipe 'tensorwise'
    # ZeRO-3 hierarchy (Layout fields of the same names; 0 = the whole sharding group)
    zero_hpz: np.ndarray
    zero_quantized_weights: np.ndarray  # bool
    zero_quantized_gradients: np.ndarray  # bool
    shard_group: np.ndarray
    grad_shard_group: np.ndarray
    zero_tiling: np.ndarray
    activation_offload: np.ndarray  # bool
    # bool, resolved: full-recompute checkpoints partitioned over tp (Layout.partition_activations_on: the setting
    # or the stack's default, only with full recompute and tp > 1)
    partition_activations: np.ndarray
    loss_fusion: np.ndarray  # bool: the stack's fused cross-entropy (Layout.loss_fusion)

    def __len__(self) -> int:
        return len(self.tp)

    def cached(self, key: str, compute):
        """compute(self), once per batch: memory and step time both need the stage split, the
        framework's columns, the activation bytes (a million-candidate batch pays for each once)."""
        memo = self.__dict__.setdefault("_memo", {})
        if key not in memo:
            memo[key] = compute(self)
        return memo[key]

    @property
    def gpus(self) -> np.ndarray:
        return self.cached("gpus", lambda b: b.tp * b.pp * b.dp * b.cp)

    @property
    def layer_params_per_tp_rank(self) -> np.ndarray:
        """One layer's parameters on a tp rank: the matrices and split biases over tp, and whole the tensors every
        tp rank holds, the norms' weights, the unsplit biases and an MoE router (Megatron-Core builds the router
        weight as a plain Parameter of experts x hidden, router.py:64-66 at d98e8a64; its own memory estimator
        counts router and norms as replicated, theoretical_memory_usage.py). Divided by tp with the rest, Qwen3-30B-A3B
        at tp 4 held 0.16 GiB less than Megatron's estimate (the Megatron-oracle audit)."""
        return self.cached("layer_params_per_tp_rank", _layer_params_per_tp_rank)

    @property
    def grad_accumulation(self) -> np.ndarray:
        return self.cached("grad_accumulation", lambda b: b.global_batch // (b.micro_batch * b.dp))

    @property
    def stages(self):
        """Layers on the first, fullest middle and last pipeline stage (pipeline_stages.batch_stage_layers)."""
        return self.cached("stages", batch_stage_layers)

    def take(self, index, carry=None) -> "CandidateBatch":
        """The sub-batch at `index` (an index array or boolean mask). `carry(key, value, index)`, when given, is
        the sub-batch's cached value for each of this batch's `cached` entries, or None to compute it afresh there
        (cost.distinct.take carries its column codes)."""
        sub = CandidateBatch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                                for f in fields(self)})
        if carry is not None:
            kept = {key: carried for key, value in self.__dict__.get("_memo", {}).items()
                    if (carried := carry(key, value, index)) is not None}
            if kept:
                sub.__dict__["_memo"] = kept
        return sub

    # Attention variants and MoE: None when every candidate is a dense model with standard attention (the
    # cost model then runs the dense path unchanged). kv_heads is then the effective count that gives the
    # attention GEMMs' weights (MLA, head_dim != hidden/heads) and ffn the per-layer mean dense MLP width.
    core_width: np.ndarray | None = None  # heads x (qk + v head dims)/2: the attention core's width (h for MHA)
    moe_layers: np.ndarray | None = None  # MoE layers of the model
    experts: np.ndarray | None = None
    top_k: np.ndarray | None = None
    expert_ffn: np.ndarray | None = None
    expert_params: np.ndarray | None = None  # routed experts' parameters of one MoE layer (all experts)
    dispatch_nodes: np.ndarray | None = None  # expert groups a token may pick (group-limited routing), else top_k
    route_groups: np.ndarray | None = None  # expert groups of group-limited routing (moe_groups), else 1
    # MoE layers (and MTP copies of one) with no shared expert: their MLP is the routed experts alone, which make no
    # dense-MLP tensor-parallel collective where the stack's dispatcher has its own
    # (cost.model_parallel_comm.mlp_tp_collective_share).
    routed_only_layers: np.ndarray | None = None
    # Dense layers before the first MoE layer (ModelSpec.moe_first_dense: DeepSeek-V3's first_k_dense_replace = 3):
    # they sit on the first pipeline rank, so the stages hold different numbers of MoE layers (cost.moe.stage_moe_layers).
    dense_prefix: np.ndarray | None = None
    # Router weights per layer (a mean over the layers, as layer_params): whole on every tp rank (layer_params_per_tp_rank).
    router_params: np.ndarray | None = None
    ep: np.ndarray | None = None
    etp: np.ndarray | None = None
    moe_imbalance: np.ndarray | None = None  # busiest expert rank's tokens over the mean (capacity-capped)
    a2a_overlap: np.ndarray | None = None  # A2A_OVERLAP_CODES
    moe_padded: np.ndarray | None = None  # 1 = expert inputs padded to capacity (static shapes)
    node_dispatch: np.ndarray | None = None  # 1 = each token crosses to a node once (DeepEP; Layout.moe_node_dispatch)
    # Sliding-window attention: keys per query (inf = full causal); None when no model of the batch has a
    # window (the cost model then runs the full-attention path unchanged).
    attention_window: np.ndarray | None = None
    # Each row's model (build_batch's `model_index`), read by no cost formula: every model column is a function of
    # it, so cost.distinct numbers the model columns on one row per model instead of sorting every row's values
    # (a budget search's chunk holds many models). Replacing a model column must replace this too; None: unknown.
    model_index: np.ndarray | None = None

    @property
    def has_moe(self) -> bool:
        return self.moe_layers is not None and bool(np.any(self.moe_layers > 0))


def model_arrays(models: list[ModelSpec]) -> dict[str, np.ndarray]:
    """Per-model scalars (shape and exact parameter parts) as arrays indexed by model number."""
    rows = []
    for model in models:
        parts = param_breakdown(model)
        vectors = vector_tensors(model)
        norm_params = parts["norms"] / (2 * model.layers + 1 + int(model.embedding_norm))
        layer = (parts["attention"] + parts["mlp"]) / model.layers + 2 * norm_params
        logits = parts["logits"] if parts["logits"] else model.vocab * model.hidden
        rows.append((
            model.layers, model.hidden, model.heads, model.kv, model.ffn_size,
            3 if model.mlp == "swiglu" else 2, model.vocab, model.seq_len,
            layer, parts["embedding"] + parts["position"], logits, parts["total"], model.tied_embeddings,
            model.kv, 0 if model.attention == "mla" else (model.heads + 2 * model.kv) * model.attention_head_dim,
            len(vectors[1]), model.mtp_layers, *model.attention_widths, model.dropout > 0,
        ))
    table = np.array(rows, dtype=float)
    names = ("layers", "hidden", "heads", "kv_heads", "ffn", "mlp_matrices", "vocab", "seq_len",
             "layer_params", "embedding_params", "logits_params", "total_params", "tied_embeddings",
             "query_groups", "qkv_width", "vector_tensors_outside", "mtp_layers", "q_width", "kv_width",
             "attention_out_width", "dropout_masks")
    arrays = {name: table[:, i] for i, name in enumerate(names)}
    arrays["tied_embeddings"] = arrays["tied_embeddings"].astype(bool)
    arrays["dropout_masks"] = arrays["dropout_masks"].astype(bool)
    arrays.update(_vector_arrays(models))
    if not all(standard_attention(m) and not m.is_moe and not m.mtp_layers for m in models):
        arrays.update(_moe_model_arrays(models))
    if any(m.attention_window is not None for m in models):
        arrays["attention_window"] = np.array([m.attention_window or np.inf for m in models], dtype=float)
    return arrays


def _vector_arrays(models: list[ModelSpec]) -> dict[str, np.ndarray]:
    """Each model's per-layer vector tensors (vector_tensors) as rows of (elements, split over tp), padded with
    absent (0-element, whole) tensors to the longest list."""
    layers = [vector_tensors(model)[0] for model in models]
    width = max([1, *(len(tensors) for tensors in layers)])
    elements, split = np.zeros((len(models), width)), np.zeros((len(models), width), dtype=bool)
    for row, tensors in enumerate(layers):
        for column, tensor in enumerate(tensors):
            elements[row, column], split[row, column] = tensor.elements, tensor.split_over_tp
    return {"vector_elements_per_layer": elements, "vector_split_per_layer": split}


def _layer_params_per_tp_rank(batch: "CandidateBatch") -> np.ndarray:
    elements, split = batch.vector_elements_per_layer, batch.vector_split_per_layer
    if (elements.ndim == 2 and len(elements) and elements.strides[0] == 0 and np.ndim(split) == 2
            and split.strides[0] == 0):
        # One model's columns as broadcast views (build_batch): its sum once, not once per candidate.
        whole = float(np.sum(elements[0] * (1.0 - split[0])))
    else:
        whole = np.sum(elements * (1.0 - split), axis=-1)
    if batch.router_params is not None:
        whole = whole + batch.router_params
    return (batch.layer_params - whole) / batch.tp + whole


MOE_MODEL_COLUMNS = ("core_width", "moe_layers", "experts", "top_k", "expert_ffn", "expert_params", "dispatch_nodes",
                     "route_groups", "routed_only_layers", "dense_prefix", "router_params")


def _moe_model_arrays(models: list[ModelSpec]) -> dict[str, np.ndarray]:
    """Columns of models with an attention variant, experts or multi-token prediction; overrides kv_heads, ffn and
    layer_params with their effective values (see CandidateBatch). Multi-token-prediction modules are simulated as
    that many more layers like the last, on the last pipeline stage, each with one more pass of the output layer
    and loss (their 2h -> h projection's FLOPs are left out: ~4% of DeepSeek-V3's MTP FLOPs)."""
    rows = []
    for model in models:
        parts = param_breakdown(model)
        columns = flops_columns(model)
        h, L, H = model.hidden, model.layers, model.heads
        attention = columns.get("attention_params")
        # The kv heads that make h·(h + 2·kv·h/H) + h·h the attention GEMMs' weights (exact for MHA/GQA).
        kv = model.kv if attention is None else H * (attention / (h * h) - 2.0) / 2.0
        norm_params = parts["norms"] / (2 * L + 1 + int(model.embedding_norm))
        moe = model.moe_layers
        mtp = model.mtp_layers
        # Per-layer means over the layers and the MTP blocks (each a copy of the last layer: an MoE layer
        # when the model has experts).
        mtp_width = model.moe_shared_experts * model.expert_ffn_size if moe else model.ffn_size
        ffn = (columns["ffn"] * L + mtp * mtp_width) / (L + mtp)
        expert_params = parts.get("experts", 0.0) / moe if moe else 0.0
        mtp_dense = model.mtp_params - mtp * expert_params
        layer = (parts["attention"] + parts["mlp"] + parts.get("router", 0.0) + 2 * norm_params * L + mtp_dense) / (L + mtp)
        moe_and_mtp = moe + (mtp if moe else 0)
        rows.append((L + mtp, kv, ffn, layer, columns.get("core_width", h), moe_and_mtp, model.moe_experts,
                     model.moe_top_k, model.expert_ffn_size if moe else 0.0, expert_params, model.routed_groups,
                     model.moe_groups, 0 if model.moe_shared_experts else moe_and_mtp, model.moe_first_dense if moe else 0,
                     parts.get("router", 0.0) / (L + mtp)))
    table = np.array(rows, dtype=float)
    names = ("layers", "kv_heads", "ffn", "layer_params") + MOE_MODEL_COLUMNS
    return {name: table[:, i] for i, name in enumerate(names)}


def build_batch(models: list[ModelSpec], model_index, **layout_arrays) -> CandidateBatch:
    """Gather model arrays by `model_index` and broadcast them with the layout arrays."""
    per_model = model_arrays(models)
    index = np.asarray(model_index, dtype=np.int64)
    if len(models) == 1:  # one model (every layout search): its values as read-only views, not a copy per candidate
        columns = {name: np.broadcast_to(values[0], index.shape + values.shape[1:]) for name, values in per_model.items()}
    else:
        columns = {name: values[index] for name, values in per_model.items()}
    defaults = dict(tp=1, pp=1, dp=1, cp=1, vpp=1, first_stage_layers=0, last_stage_layers=0, zero=0, offload=0, offload_nvme=False, micro_batch=1,
                    global_batch=1, recompute=0, seq_parallel=False, flash_attention=True, dtype=0,
                    framework=FRAMEWORK_CODES["other"], tp_comm_overlap=False,
                    dp_comm_overlap=FRAMEWORKS["other"].dp_comm_overlap_default, grad_reduce_in_fp32=-1,
                    fp8_param_gather=False,
                    zero_hpz=1, zero_quantized_weights=False, zero_quantized_gradients=False, shard_group=0,
                    grad_shard_group=0, zero_tiling=1, activation_offload=False, loss_fusion=False)
    current_scaling = layout_arrays.pop("fp8_current_scaling", None)
    for name, default in defaults.items():
        value = np.asarray(layout_arrays.pop(name, default))
        columns[name] = np.broadcast_to(value, index.shape).astype(value.dtype if value.dtype == bool else float)
    if current_scaling is None:  # fp8 casts scaled as each stack does by default (Layout.fp8_recipe_used)
        current_scaling = ((columns["dtype"] == DTYPE_CODES["fp8"])
                           & FP8_TENSORWISE_BY_DEFAULT[columns["framework"].astype(np.int64)])
    columns["fp8_current_scaling"] = np.broadcast_to(np.asarray(current_scaling, dtype=bool), index.shape)
    partitioned = layout_arrays.pop("partition_activations", None)
    if partitioned is None:  # each stack's default (Layout.partition_activations_on)
        partitioned = PARTITION_ACTIVATIONS_BY_DEFAULT[columns["framework"].astype(np.int64)]
    columns["partition_activations"] = np.broadcast_to(
        np.asarray(partitioned, dtype=bool) & (columns["tp"] > 1) & (columns["recompute"] == RECOMPUTE_CODES["full"]),
        index.shape)
    # MoE layout columns, only when a model has the MoE/attention-variant columns (else dense path).
    # Routing not given: each row's stack default (frameworks.moe.MoEStack.capacity_factor, pads_to_capacity).
    moe_defaults = dict(ep=1.0, etp=columns["tp"], a2a_overlap=0.0, node_dispatch=default_node_dispatch(columns["framework"]),
                        **default_routing_columns(columns["framework"]))
    moe_layout = {name: layout_arrays.pop(name) for name in moe_defaults if name in layout_arrays}
    if "moe_layers" in columns:
        for name, default in moe_defaults.items():
            columns[name] = np.broadcast_to(np.asarray(moe_layout.get(name, default), dtype=float), index.shape)
    elif any(np.any(np.asarray(moe_layout[name]) != default) for name, default in moe_defaults.items()
             if name in moe_layout and name not in ("etp", "moe_padded", "node_dispatch")):
        raise ValueError("ep, moe_imbalance and a2a_overlap need an MoE model")
    if layout_arrays:
        raise TypeError(f"unknown layout arrays: {sorted(layout_arrays)}")
    return CandidateBatch(**columns, model_index=index)


def single_batch(model: ModelSpec, layout: Layout) -> CandidateBatch:
    """A batch of one: the scalar path through the same vectorised code."""
    return layouts_batch([model], [layout])


def layouts_batch(models: list[ModelSpec], layouts: list[Layout]) -> CandidateBatch:
    """Candidate i is models[i] with layouts[i] (validation and calibration rows, one batch)."""
    column = lambda f: np.array([f(layout) for layout in layouts])  # noqa: E731
    return build_batch(
        models, np.arange(len(layouts)), **_moe_layout_columns(layouts, column),
        tp=column(lambda l: l.tp), pp=column(lambda l: l.pp), dp=column(lambda l: l.dp), cp=column(lambda l: l.cp),
        vpp=column(lambda l: l.vpp), first_stage_layers=column(lambda l: l.first_stage_layers or 0),
        last_stage_layers=column(lambda l: l.last_stage_layers or 0), zero=column(lambda l: l.zero), offload=column(lambda l: OFFLOAD_CODES[l.offload]),
        offload_nvme=column(lambda l: l.offload_device == "nvme"), micro_batch=column(lambda l: l.micro_batch),
        global_batch=column(lambda l: l.global_batch), recompute=column(lambda l: RECOMPUTE_CODES[l.recompute]),
        seq_parallel=column(lambda l: l.seq_parallel and l.tp > 1), flash_attention=column(lambda l: l.flash_attention_on),
        dtype=column(lambda l: DTYPE_CODES[l.dtype]), framework=column(lambda l: FRAMEWORK_CODES[l.framework]),
        tp_comm_overlap=column(lambda l: l.tp_comm_overlap_on and l.tp > 1),
        dp_comm_overlap=column(lambda l: l.dp_comm_overlap_on),
        grad_reduce_in_fp32=column(lambda l: _tristate(l.grad_reduce_in_fp32)),
        fp8_param_gather=column(lambda l: l.fp8_param_gather),
        fp8_current_scaling=column(lambda l: l.dtype == "fp8" and l.fp8_recipe_used == "tensorwise"),
        zero_hpz=column(lambda l: l.zero_hpz), zero_quantized_weights=column(lambda l: l.zero_quantized_weights),
        zero_quantized_gradients=column(lambda l: l.zero_quantized_gradients),
        shard_group=column(lambda l: l.shard_group or 0), grad_shard_group=column(lambda l: l.grad_shard_group or 0),
        zero_tiling=column(lambda l: l.zero_tiling), activation_offload=column(lambda l: l.activation_offload),
        partition_activations=column(lambda l: l.partition_activations_on),
        loss_fusion=column(lambda l: l.loss_fusion),
    )


def _moe_layout_columns(layouts: list[Layout], column) -> dict:
    """ep, etp, the effective load imbalance and the overlap code, only for layouts that use them."""
    if all(l.ep == 1 and l.etp is None and l.moe_a2a_overlap == "none" and l.moe_load_imbalance == 1.0
           and l.moe_capacity_factor is None and l.moe_pad_to_capacity is None and l.moe_node_dispatch is None
           for l in layouts):
        return {}  # build_batch fills the stacks' default routing
    return {"ep": column(lambda l: l.ep), "etp": column(lambda l: l.expert_tp),
            "moe_imbalance": column(lambda l: moe_imbalance(l)), "a2a_overlap": column(lambda l: A2A_OVERLAP_CODES[l.moe_a2a_overlap]),
            "moe_padded": column(lambda l: float(l.moe_pad_to_capacity_used)),
            "node_dispatch": column(lambda l: float(l.moe_node_dispatch_used))}

def _tristate(value: bool | None) -> int:
    return -1 if value is None else int(value)


__all__ = ["CandidateBatch", "model_arrays", "build_batch", "single_batch", "layouts_batch", "RECOMPUTE_CODES",
           "OFFLOAD_CODES", "DTYPE_CODES", "DTYPE_BYTES"]
