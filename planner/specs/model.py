"""Decoder-only transformer shape -> exact parameter count and training FLOPs, as named breakdowns.

The breakdown functions take plain numbers or numpy arrays (they are pure arithmetic), so the same
code counts one model or a million candidate shapes in the search.

FLOPs follow Megatron-LM's `num_floating_point_operations` (REFERENCE.md): 3 passes (forward +
2x backward), full (non-causal) attention, no recompute:
  12·B·s·L·h²·[(1 + g/a + s/h) + (f/h)·k + V/(2·L·h)], k = 1 (GELU MLP) or 1.5 (SwiGLU).
That full count is what Megatron-LM logged until 8873b55d6a (2025-03-06) halved its attention term for the causal
mask; at d98e8a64 it logs the causal count (training.py:1163-1170, MLA :1128-1137), which `causal=True` gives and
the cost model's MFU uses.
"""

from __future__ import annotations

import difflib
import math
import typing
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from planner.errors import PlannerInputError, validation_input_error


# Upper bounds of the model's sizes: above any model trained (the deepest published, DeepNet, has 1,000 layers, Wang et
# al. 2022 arXiv:2203.00555; widths run to tens of thousands, vocabularies to a few million, contexts to millions of
# tokens), and low enough that every product the cost model forms stays exact in int64 and finite in float64, and a
# fixed-model search over the depth's pipeline splits ends (a YAML model of 10^23 layers overflowed numpy, one of 2^63
# never finished).
MAX_LAYERS = 4096
MAX_WIDTH = 1 << 24
MAX_COUNT = 1 << 20
MAX_TOKENS = 1 << 31


class ModelSpec(BaseModel):
    """A decoder-only transformer. Validated at construction; frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    layers: int = Field(gt=0, le=MAX_LAYERS)
    hidden: int = Field(gt=0, le=MAX_WIDTH)
    heads: int = Field(gt=0, le=MAX_COUNT)
    kv_heads: int | None = Field(default=None, gt=0, le=MAX_COUNT)  # None = heads (multi-head attention)
    ffn: int | None = Field(default=None, gt=0, le=MAX_WIDTH)  # None = 4·hidden (GELU) or Llama's 8/3 rounding (SwiGLU)
    mlp: Literal["gelu", "swiglu"] = "gelu"
    vocab: int = Field(gt=0, le=MAX_TOKENS)
    seq_len: int = Field(gt=0, le=MAX_TOKENS)
    tied_embeddings: bool = False
    # "learned" adds a max_positions x hidden table (GPT-2/3); "rotary"/"alibi" have no parameters.
    position: Literal["learned", "rotary", "alibi"] = "rotary"
    max_positions: int | None = Field(default=None, gt=0, le=MAX_TOKENS)
    bias: bool = False  # GPT-2/3 have biases in every linear and LayerNorm; Llama has none
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    embedding_norm: bool = False  # BLOOM normalises the embedding output (one extra norm)
    # Attention variants (all default to the standard multi-head/grouped-query attention above).
    # head_dim: per-head width when heads x head_dim != hidden (Qwen3: 32 x 128 on hidden 2048).
    head_dim: int | None = Field(default=None, gt=0, le=MAX_WIDTH)
    qk_norm: bool = False  # RMSNorm over each head's q and k (Qwen3: q_norm, k_norm of head_dim each)
    # Multi-head latent attention (DeepSeek-V2/V3): q and kv go through low-rank projections; names and
    # meanings as in DeepSeek-V3's config.json (q_lora_rank, kv_lora_rank, qk_rope_head_dim,
    # qk_nope_head_dim, v_head_dim). q_lora_rank None = q projected directly (DeepSeek-V2-Lite).
    attention: Literal["mha", "mla"] = "mha"
    q_lora_rank: int | None = Field(default=None, gt=0, le=MAX_WIDTH)
    kv_lora_rank: int | None = Field(default=None, gt=0, le=MAX_WIDTH)
    qk_rope_head_dim: int | None = Field(default=None, gt=0, le=MAX_WIDTH)
    qk_nope_head_dim: int | None = Field(default=None, gt=0, le=MAX_WIDTH)
    v_head_dim: int | None = Field(default=None, gt=0, le=MAX_WIDTH)
    # Mixture of experts (0 experts = dense). Layer i (0-based) is an MoE layer when i >= moe_first_dense
    # and (i - moe_first_dense) % moe_layer_freq == 0 (DeepSeek-V3's first_k_dense_replace = 3 and
    # moe_layer_freq = 1; Megatron-Core's --moe-layer-freq). Each MoE layer has moe_experts routed experts
    # of width moe_ffn (same MLP kind as the dense layers), moe_top_k of them per token, moe_shared_experts
    # always-on experts of the same width, and a linear router (hidden x experts, no bias; plus a per-expert
    # score-correction bias with moe_router_bias, DeepSeek-V3's e_score_correction_bias). Node-limited
    # routing: experts form moe_groups groups and each token picks from moe_topk_groups of them
    # (DeepSeek-V3 n_group 8, topk_group 4).
    moe_experts: int = Field(default=0, ge=0, le=MAX_COUNT)
    moe_top_k: int = Field(default=0, ge=0, le=MAX_COUNT)
    moe_shared_experts: int = Field(default=0, ge=0, le=MAX_COUNT)
    moe_ffn: int | None = Field(default=None, gt=0, le=MAX_WIDTH)
    moe_layer_freq: int = Field(default=1, gt=0, le=MAX_LAYERS)
    moe_first_dense: int = Field(default=0, ge=0, le=MAX_LAYERS)
    moe_router_bias: bool = False
    moe_groups: int = Field(default=1, gt=0, le=MAX_COUNT)
    moe_topk_groups: int = Field(default=1, gt=0, le=MAX_COUNT)
    # Multi-token prediction modules trained beside the model (DeepSeek-V3 section 2.2, config.json
    # num_nextn_predict_layers = 1): each is two RMSNorms, a 2h -> h projection and one more block like the
    # last layer, sharing the embedding and the output head. Trained (FLOPs, time, memory) but not counted
    # in the model's parameters, as the report's 671B does not count them.
    mtp_layers: int = Field(default=0, ge=0, le=MAX_LAYERS)
    # Sliding-window attention (Mistral 7B, Jiang et al. 2023 section 2; Gemma 2; MegaScale section 3.1):
    # each query attends to the `attention_window` most recent keys, itself included (FlashAttention's
    # window_size=(attention_window - 1, 0); Megatron-Core's TransformerConfig.window_size). None = full
    # causal attention. A window >= seq_len changes nothing.
    attention_window: int | None = Field(default=None, gt=0, le=MAX_TOKENS)
    # Dropout probability of the attention scores and of the hidden states after attention and after the MLP
    # (Megatron's --attention-dropout / --hidden-dropout, GPT-2's attn_pdrop / resid_pdrop). 0 = none, as Llama,
    # Mixtral, DeepSeek-V3, Qwen3 and MPT pre-train, and as this planner's launches set it. Only whether it is
    # above 0 is priced: each dropout keeps a 1-byte mask per element for backward, and at 0 none runs (torch's
    # dropout returns its input at p = 0: ATen native/Dropout.cpp; Megatron's bias-dropout-add calls it).
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_switch_for_a_number(cls, value, info):
        # pydantic's lax mode reads YAML's `layers: true` as 1 (a one-layer model, silently); a true/false is
        # only a value of the switch fields.
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and annotation is not bool:
            kinds = (annotation, *typing.get_args(annotation))
            kind = "a whole number" if int in kinds else "a number" if float in kinds else "text"
            raise ValueError(f"expected {kind}, not {str(value).lower()}")
        return value

    @field_validator("dropout", mode="before")
    @classmethod
    def _a_probability(cls, value):
        # Before the bounds, whose message for NaN ("Input should be less than 1") would mislead.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not 0.0 <= value < 1.0:
            raise ValueError(f"expected a probability from 0 up to (not including) 1, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_shape(self) -> "ModelSpec":
        if self.head_dim is None and self.attention == "mha" and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads}) unless head_dim is given "
                             "(a model YAML's head_dim key)")
        if self.heads % self.kv:
            raise ValueError(f"heads ({self.heads}) must be divisible by kv_heads ({self.kv})")
        mla = (self.kv_lora_rank, self.qk_rope_head_dim, self.qk_nope_head_dim, self.v_head_dim)
        if self.attention == "mla" and None in mla:
            raise ValueError("attention 'mla' needs kv_lora_rank, qk_rope_head_dim, qk_nope_head_dim and v_head_dim")
        if self.attention != "mla" and any(v is not None for v in mla + (self.q_lora_rank,)):
            raise ValueError("q_lora_rank, kv_lora_rank and the qk/v head dims need attention 'mla'")
        if self.moe_experts:
            if not 1 <= self.moe_top_k <= self.moe_experts:
                raise ValueError(f"moe_top_k ({self.moe_top_k}) must be between 1 and moe_experts ({self.moe_experts})")
            if self.moe_experts % self.moe_groups or self.moe_topk_groups > self.moe_groups:
                raise ValueError(f"moe_groups ({self.moe_groups}) must divide moe_experts ({self.moe_experts}) "
                                 f"and be >= moe_topk_groups ({self.moe_topk_groups})")
            if self.moe_layers == 0:
                raise ValueError(f"moe_first_dense ({self.moe_first_dense}) leaves no MoE layer of {self.layers}")
        elif self.moe_top_k or self.moe_shared_experts or self.moe_ffn:
            raise ValueError("moe_top_k, moe_shared_experts and moe_ffn need moe_experts > 0")
        return self

    @property
    def is_moe(self) -> bool:
        return self.moe_experts > 0

    @property
    def routed_groups(self) -> int:
        """Expert groups a token may pick from under group-limited routing (DeepSeek-V3's topk_group 4 of 8), capped
        at top-k (each picked group holds at least one of its experts); top-k where the routing is not grouped."""
        return min(self.moe_top_k, self.moe_topk_groups) if self.moe_groups > 1 else self.moe_top_k

    @property
    def node_limited_routing(self) -> bool:
        """Whether the routing limits a token to fewer expert groups than its top-k experts: where dispatching each
        token to a node once (Layout.moe_node_dispatch) can save scale-out bytes."""
        return self.routed_groups < self.moe_top_k

    @property
    def moe_layers(self) -> int:
        """Number of MoE layers (0 for a dense model)."""
        if not self.moe_experts:
            return 0
        return len(range(self.moe_first_dense, self.layers, self.moe_layer_freq))

    @property
    def mtp_params(self) -> int:
        """Parameters of the multi-token-prediction modules (without the embedding and head they share)."""
        if not self.mtp_layers:
            return 0
        parts = param_breakdown(self)
        h, L = self.hidden, self.layers
        block = attention_layer_params(self) + 2 * h
        if self.is_moe:
            moe = self.moe_layers
            block += (parts["mlp"] - (L - moe) * mlp_matrices(self.mlp) * h * self.ffn_size
                      + parts["experts"] + parts["router"]) // moe
        else:
            block += parts["mlp"] // L
        return self.mtp_layers * (block + 2 * h * h + 3 * h)

    @property
    def expert_ffn_size(self) -> int:
        return self.moe_ffn or self.ffn_size

    @property
    def attention_head_dim(self) -> int:
        """Width of one head's q, k (and v, outside MLA)."""
        return self.head_dim or self.hidden // self.heads

    @property
    def kv(self) -> int:
        return self.kv_heads or self.heads

    @property
    def attention_widths(self) -> tuple[int, int, int]:
        """Elements per token of the attention core's query, key + value and output, as the kernel sees them (whole
        model, before tp): heads x head_dim, 2 x kv heads x head_dim, heads x head_dim; under MLA the up-projected
        heads, q and k of qk_nope + qk_rope, v and the output of v_head_dim."""
        if self.attention == "mla":
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            return self.heads * qk, self.heads * (qk + self.v_head_dim), self.heads * self.v_head_dim
        d = self.attention_head_dim
        return self.heads * d, 2 * self.kv * d, self.heads * d

    @property
    def ffn_size(self) -> int:
        if self.ffn:
            return self.ffn
        return 4 * self.hidden if self.mlp == "gelu" else swiglu_ffn(self.hidden)

    @property
    def positions(self) -> int:
        return self.max_positions or self.seq_len

    def params(self) -> dict[str, int]:
        return {k: int(v) for k, v in param_breakdown(self).items()}

    @property
    def total_params(self) -> int:
        return int(param_breakdown(self)["total"])

    @property
    def non_embedding_params(self) -> int:
        parts = param_breakdown(self)
        return int(parts["total"] - parts["embedding"] - parts["position"] - parts["logits"])

    def active_params(self) -> dict[str, int]:
        return {k: int(v) for k, v in param_breakdown(self, active=True).items()}

    @property
    def total_active_params(self) -> int:
        """Parameters one token passes through: the total less the routed experts it is not sent to."""
        return int(param_breakdown(self, active=True)["total"])


def experts_summary(model: ModelSpec) -> str:
    """The expert layout as the CLI headers print it: "256 experts top-8 + 1 shared in 58 layers" (the shared
    experts every token passes through named, since the active count includes them); empty for a dense model."""
    if not model.is_moe:
        return ""
    shared = f" + {model.moe_shared_experts} shared" if model.moe_shared_experts else ""
    return f"{model.moe_experts} experts top-{model.moe_top_k}{shared} in {model.moe_layers} layers"


def make_model(where: str = "model", **fields) -> ModelSpec:
    """Build a ModelSpec, turning validation errors into one-line PlannerInputErrors naming `where`."""
    try:
        return ModelSpec(**fields)
    except ValidationError as error:
        raise validation_input_error(error, where) from None


def swiglu_ffn(hidden: int, multiple_of: int = 256) -> int:
    """Llama's SwiGLU width: 2/3 of 4h, rounded up to a multiple (Touvron et al. 2023, model.py)."""
    return multiple_of * math.ceil(int(8 * hidden / 3) / multiple_of)


def mlp_matrices(mlp):
    """2 weight matrices for GELU, 3 for SwiGLU (gate, up, down); works on strings or arrays of codes."""
    if isinstance(mlp, str):
        return 3 if mlp == "swiglu" else 2
    return np.where(np.asarray(mlp) == MLP_CODES["swiglu"], 3, 2)


MLP_CODES = {"gelu": 0, "swiglu": 1}


def attention_layer_params(model: ModelSpec) -> int:
    """Parameters of one layer's attention (projections and their biases, and MLA's/Qwen3's inner norms)."""
    h = model.hidden
    if model.attention == "mla":
        # DeepSeek-V3 modeling_deepseek.py DeepseekV3Attention: q_a_proj (h x q_lora) + q_a_layernorm +
        # q_b_proj (q_lora x heads·(nope + rope)), or q_proj (h x heads·(nope + rope)) without q_lora;
        # kv_a_proj_with_mqa (h x (kv_lora + rope)) + kv_a_layernorm + kv_b_proj (kv_lora x heads·(nope + v));
        # o_proj (heads·v x h). No biases (attention_bias false).
        H, qk = model.heads, model.qk_nope_head_dim + model.qk_rope_head_dim
        q = (h * model.q_lora_rank + model.q_lora_rank + model.q_lora_rank * H * qk) if model.q_lora_rank else h * H * qk
        kv = h * (model.kv_lora_rank + model.qk_rope_head_dim) + model.kv_lora_rank \
            + model.kv_lora_rank * H * (model.qk_nope_head_dim + model.v_head_dim)
        return q + kv + H * model.v_head_dim * h
    d = model.attention_head_dim
    q_out, qkv_out = model.heads * d, (model.heads + 2 * model.kv) * d
    biases = qkv_out + h if model.bias else 0
    return h * qkv_out + q_out * h + biases + (2 * d if model.qk_norm else 0)


class VectorTensor(typing.NamedTuple):
    """One parameter tensor that is a vector (a norm's weight or bias, a linear layer's bias): its elements in the
    whole model, and whether tensor parallelism splits it over the tp ranks. A column-parallel linear's bias is
    split, output_size / tp on each rank (QKV and h->4h: Megatron-LM@e269e200 megatron/mpu/layers.py:237, 262-266);
    norms and a row-parallel linear's bias (attention output, 4h->h; added after the reduction) are whole on every
    tp rank (layers.py:361-365)."""

    elements: int
    split_over_tp: bool


def vector_tensors(model: ModelSpec) -> tuple[tuple[VectorTensor, ...], tuple[VectorTensor, ...]]:
    """The parameter tensors that are vectors, in one transformer layer and in the rest of the model: the norms'
    weights (and LayerNorm biases), the linear layers' biases (the dense MLP's; an MoE model's expert biases are
    not listed), Qwen3's q/k norms and MLA's latent norms, as param_breakdown counts them (MLA's attention has no
    biases or q/k norms there). Outside the layers: the final norm and BLOOM's embedding norm, `hidden` elements
    each, whole on every tp rank. Matrices, routers included, and the router's score-correction bias are never
    listed.

    ZeRO-3 stacks keep tensors this small gathered between uses: DeepSpeed persists every parameter of at most
    param_persistence_threshold elements (default 1e5; DeepSpeed 0.19.8 runtime/zero/config.py:228,
    partition_parameters.py:1292 `ds_numel <=`, parameter_offload.py:325; v0.3.14 stage3.py:1058 `<`), counted
    on the tp rank. In the presets that is each vector listed here but megatron-1t's h->4h bias at tp 1
    (102,400), which the cost model leaves out (planner.cost.zero3_fetch.PARAM_PERSISTENCE_THRESHOLD), and no
    matrix but Mixtral's router (4,096 x 8, not counted). DeepSpeed gathers them again after every step
    (planner.cost.data_parallel, planner.cost.zero3_fetch.step_regather_s)."""
    h = model.hidden
    whole = lambda elements: VectorTensor(elements, False)  # noqa: E731
    norm = (whole(h),) * (2 if model.norm == "layernorm" and model.bias else 1)
    if model.attention == "mla":  # q_a_layernorm (with a q latent), kv_a_layernorm: DeepSeek-V3 modeling_deepseek.py
        attention = ((whole(model.q_lora_rank),) if model.q_lora_rank else ()) + (whole(model.kv_lora_rank),)
    else:
        d = model.attention_head_dim
        biases = (VectorTensor((model.heads + 2 * model.kv) * d, True), whole(h)) if model.bias else ()
        attention = biases + ((whole(d), whole(d)) if model.qk_norm else ())  # QKV, output; q_norm, k_norm
    # h->4h (gate and up fused, as Megatron does), split over tp; 4h->h, whole.
    mlp = (VectorTensor((mlp_matrices(model.mlp) - 1) * model.ffn_size, True), whole(h)) if model.bias else ()
    layer = norm + attention + norm + mlp
    outside = norm * (1 + int(model.embedding_norm))
    return layer, outside


def param_breakdown(model: ModelSpec, active: bool = False) -> dict[str, float]:
    """Exact parameter count by part. Checks itself: the parts sum to `total`.

    MoE models add `experts` (routed experts: all of them, or with `active` the top-k one token uses)
    and `router`; `mlp` holds the dense layers' MLPs and the shared experts.
    """
    h, L, V, f = model.hidden, model.layers, model.vocab, model.ffn_size
    # LayerNorm with bias has a weight and a bias vector; RMSNorm (or bias-free LayerNorm) only a weight.
    norm_params = 2 * h if model.norm == "layernorm" and model.bias else h
    bias = model.bias
    attention = L * attention_layer_params(model)
    matrices = mlp_matrices(model.mlp)
    one_mlp = lambda width: matrices * h * width + ((matrices - 1) * width + h if bias else 0)  # noqa: E731
    moe = model.moe_layers
    mlp = (L - moe) * one_mlp(f) + moe * model.moe_shared_experts * one_mlp(model.expert_ffn_size)
    norms = (2 * L + 1 + int(model.embedding_norm)) * norm_params
    embedding = V * h
    position = model.positions * h if model.position == "learned" else 0
    logits = 0 if model.tied_embeddings else V * h
    parts = {
        "embedding": embedding,
        "position": position,
        "attention": attention,
        "mlp": mlp,
        "norms": norms,
        "logits": logits,
    }
    if model.is_moe:
        used = model.moe_top_k if active else model.moe_experts
        parts["experts"] = moe * used * one_mlp(model.expert_ffn_size)
        parts["router"] = moe * model.moe_experts * (h + int(model.moe_router_bias))
    parts["total"] = sum(parts.values())
    return parts


def attended_keys(seq_len, window=None):
    """Mean keys a query attends under a causal mask, over the positions of a sequence (arrays welcome).

    Query i (continuous position x in [0, s)) attends min(window, x) keys, so the mean is
      (1/s)·integral_0^s min(w, x) dx = w - w²/(2s) for w < s, and s/2 (the causal half) for w >= s.
    The continuous form keeps the planner's causal convention (s/2, not (s+1)/2): with no window, or a
    window of at least s, it is exactly the causal half."""
    s = np.asarray(seq_len, dtype=float)
    if window is None:
        return 0.5 * s
    w = np.minimum(np.asarray(window, dtype=float), s)
    return w - w * w / (2.0 * s)


def training_flops_breakdown(layers, hidden, heads, kv_heads, ffn, mlp_matrices, vocab, seq_len, tokens,
                             causal: bool = False, *, attention_params=None, core_width=None, moe_layers=0.0,
                             expert_ffn=0.0, top_k=0.0, experts=0.0, attention_window=None):
    """Model FLOPs of one training step (forward + backward, no recompute) by part, for `tokens` tokens.

    Arguments may be numpy arrays (the search) or scalars. By default the attention core counts the
    full s x s score matrix, as Megatron-LM's logged TFLOP/s did before 8873b55d6a (2025-03-06) and llm-foundry's
    MFU does. `causal=True` counts the half a causal decoder needs (what a causal flash kernel computes, and what
    Megatron-LM logs since: training.py:1163-1170 at d98e8a64): the cost model's MFU
    uses it, so MFU <= HFU <= 1 holds at any sequence length (with the full count, a 1M-token sequence
    "achieves" more than peak because its time is charged for the causal half only).

    Attention variants and MoE (see `flops_columns`): `attention_params` is one layer's attention weight
    elements (default h·h·(2 + 2g/a)), `core_width` the heads x (qk + v head dims)/2 the core multiplies by
    (default h); `ffn` is then the per-layer mean dense MLP width (dense layers and shared experts), and
    each of `moe_layers` layers adds `top_k` routed experts of width `expert_ffn` (Megatron-LM's
    `num_floating_point_operations` counts them so) and a router GEMM of h x `experts`.

    Sliding-window attention (`attention_window`, keys per query; inf or None = none): the causal count
    charges each query the keys it attends (`attended_keys`), so the model FLOPs, and the MFU built on them,
    fall with the window. The full count (causal=False) ignores the window, as Megatron-LM's count does
    (megatron/training/training.py `num_floating_point_operations` at d98e8a6 has no window_size term, though
    --window-size exists in arguments.py line 2384).
    """
    h = np.asarray(hidden, dtype=float)
    passes = 3.0  # forward + backward (2x forward)
    if attention_params is None:
        kv_fraction = np.asarray(kv_heads, dtype=float) / np.asarray(heads, dtype=float)
        # QKV projection (K and V shrink with GQA) and the output projection: 2·h·h·(2 + 2g/a).
        attention_linear = 2.0 * h * h * (2.0 + 2.0 * kv_fraction)
    else:
        attention_linear = 2.0 * np.asarray(attention_params, dtype=float)
    width = h if core_width is None else np.asarray(core_width, dtype=float)
    m = np.asarray(mlp_matrices, dtype=float)
    per_token_layer = {
        "attention_linear": attention_linear,
        # Q·K^T and scores·V: 2·s·h each.
        "attention_core": (4.0 * np.asarray(seq_len, dtype=float) * width * (0.5 if causal else 1.0)
                           if attention_window is None or not causal
                           else 4.0 * attended_keys(seq_len, attention_window) * width),
        # 2 or 3 matrices of h x f.
        "mlp": 2.0 * m * h * np.asarray(ffn, dtype=float),
    }
    tokens = np.asarray(tokens, dtype=float)
    L = np.asarray(layers, dtype=float)
    parts = {name: passes * tokens * L * value for name, value in per_token_layer.items()}
    parts["logits"] = passes * tokens * 2.0 * h * np.asarray(vocab, dtype=float)
    if np.any(np.asarray(moe_layers) > 0):
        moe = passes * tokens * np.asarray(moe_layers, dtype=float)
        parts["experts"] = moe * 2.0 * m * h * np.asarray(expert_ffn, dtype=float) * np.asarray(top_k, dtype=float)
        parts["router"] = moe * 2.0 * h * np.asarray(experts, dtype=float)
    parts["total"] = sum(parts.values())
    return parts


def attention_matmul_params(model: ModelSpec) -> int:
    """Weight elements of one layer's attention GEMMs (no biases or norms): what its FLOPs multiply."""
    h = model.hidden
    if model.attention == "mla":
        H, qk = model.heads, model.qk_nope_head_dim + model.qk_rope_head_dim
        q = (h + H * qk) * model.q_lora_rank if model.q_lora_rank else h * H * qk
        kv = h * (model.kv_lora_rank + model.qk_rope_head_dim) + model.kv_lora_rank * H * (model.qk_nope_head_dim + model.v_head_dim)
        return q + kv + H * model.v_head_dim * h
    d = model.attention_head_dim
    return h * (model.heads + 2 * model.kv) * d + model.heads * d * h


def standard_attention(model: ModelSpec) -> bool:
    """Multi-head / grouped-query attention with heads x head_dim = hidden: the dense columns describe it."""
    return model.attention == "mha" and model.head_dim in (None, model.hidden // model.heads)


def flops_columns(model: ModelSpec) -> dict:
    """The keyword arguments of training_flops_breakdown that describe this model (attention variant and
    window, per-layer mean dense MLP width, MoE), beside layers, hidden, heads, kv_heads, mlp_matrices, vocab."""
    columns = {"ffn": model.ffn_size}
    if model.attention_window is not None:
        columns["attention_window"] = model.attention_window
    if not standard_attention(model):
        if model.attention == "mla":
            core = model.heads * (model.qk_nope_head_dim + model.qk_rope_head_dim + model.v_head_dim) / 2.0
        else:
            core = model.heads * model.attention_head_dim
        columns.update(attention_params=attention_matmul_params(model), core_width=core)
    if model.is_moe:
        dense, moe = model.layers - model.moe_layers, model.moe_layers
        columns.update(ffn=(dense * model.ffn_size + moe * model.moe_shared_experts * model.expert_ffn_size) / model.layers,
                       moe_layers=moe, expert_ffn=model.expert_ffn_size, top_k=model.moe_top_k,
                       experts=model.moe_experts)
    return columns


def model_training_flops(model: ModelSpec, tokens, causal: bool = False) -> dict:
    """training_flops_breakdown of one model for `tokens` tokens (active FLOPs for MoE), with `mtp`: the
    multi-token-prediction modules (one more last-type block, the 2h -> h projection and the shared head's
    logits each)."""
    columns = flops_columns(model)
    ffn = columns.pop("ffn")
    parts = training_flops_breakdown(model.layers, model.hidden, model.heads, model.kv, ffn, mlp_matrices(model.mlp),
                                     model.vocab, model.seq_len, tokens, causal, **columns)
    if model.mtp_layers:
        last = dict(columns)
        if model.is_moe:
            last.update(moe_layers=1)
        width = model.moe_shared_experts * model.expert_ffn_size if model.is_moe else model.ffn_size
        one = training_flops_breakdown(1, model.hidden, model.heads, model.kv, width, mlp_matrices(model.mlp),
                                       model.vocab, model.seq_len, tokens, causal, **last)
        projection = 3.0 * np.asarray(tokens, dtype=float) * 2.0 * 2.0 * model.hidden * model.hidden
        total = parts.pop("total")
        parts["mtp"] = model.mtp_layers * (one["total"] + projection)
        parts["total"] = total + parts["mtp"]
    return parts


def model_flops_per_step(model: ModelSpec, global_batch: int) -> dict[str, float]:
    """Named training-FLOP breakdown for one optimizer step of `global_batch` sequences."""
    parts = model_training_flops(model, global_batch * model.seq_len)
    return {k: float(v) for k, v in parts.items()}


# ---------------------------------------------------------------------------------------------
# Presets: published shapes. Sources in comments.
# ---------------------------------------------------------------------------------------------

# GPT-2's attn_pdrop and resid_pdrop (HF gpt2 config.json: 0.1 each) and Megatron-LM's defaults, which the
# 2021-22 Megatron and Megatron-DeepSpeed runs kept (TransformerConfig.hidden_dropout / attention_dropout = 0.1,
# NVIDIA/Megatron-LM@d98e8a64 megatron/core/transformer/transformer_config.py:188, 191; examples/academic_paper_
# scripts/sc21 set neither; BigScience's tr11-176B-ml.slurm@e726b159 sets neither).
GPT_DROPOUT = 0.1


def _gpt(name, layers, hidden, heads, seq_len=2048, vocab=50257, **extra) -> ModelSpec:
    """GPT-2/3 style: learned positions, biases, LayerNorm, GELU 4h MLP, tied embeddings, dropout 0.1."""
    return ModelSpec(
        name=name, layers=layers, hidden=hidden, heads=heads, mlp="gelu", vocab=vocab, seq_len=seq_len,
        tied_embeddings=True, position="learned", bias=True, norm="layernorm", dropout=GPT_DROPOUT, **extra,
    )


def _llama(name, layers, hidden, heads, kv_heads, ffn, vocab, seq_len, tied=False) -> ModelSpec:
    return ModelSpec(
        name=name, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, ffn=ffn, mlp="swiglu",
        vocab=vocab, seq_len=seq_len, tied_embeddings=tied, position="rotary", bias=False, norm="rmsnorm",
    )


def _megatron(name, layers, hidden, heads, vocab=51200, seq_len=2048) -> ModelSpec:
    """Megatron-LM SC'21 Table 1 shapes (Narayanan et al. 2021): Megatron's GPT, its output layer the input embedding
    (tied, as the runs CSV's rows say: data/SOURCES.md)."""
    return ModelSpec(
        name=name, layers=layers, hidden=hidden, heads=heads, mlp="gelu", vocab=vocab, seq_len=seq_len,
        tied_embeddings=True, position="learned", bias=True, norm="layernorm", dropout=GPT_DROPOUT,
    )


PRESETS: dict[str, ModelSpec] = {
    # GPT-2 (Radford et al. 2019; HF config): 1024 positions, vocab 50257.
    "gpt2-small": _gpt("gpt2-small", 12, 768, 12, seq_len=1024),
    "gpt2-medium": _gpt("gpt2-medium", 24, 1024, 16, seq_len=1024),
    "gpt2-large": _gpt("gpt2-large", 36, 1280, 20, seq_len=1024),
    "gpt2-xl": _gpt("gpt2-xl", 48, 1600, 25, seq_len=1024),
    # GPT-3 family (Brown et al. 2020, Table 2.1).
    "gpt3-125m": _gpt("gpt3-125m", 12, 768, 12),
    "gpt3-350m": _gpt("gpt3-350m", 24, 1024, 16),
    "gpt3-760m": _gpt("gpt3-760m", 24, 1536, 16),
    "gpt3-1.3b": _gpt("gpt3-1.3b", 24, 2048, 32),
    "gpt3-2.7b": _gpt("gpt3-2.7b", 32, 2560, 32),
    "gpt3-6.7b": _gpt("gpt3-6.7b", 32, 4096, 32),
    "gpt3-13b": _gpt("gpt3-13b", 40, 5120, 40),
    "gpt3-175b": _gpt("gpt3-175b", 96, 12288, 96),
    # Llama 2 (Touvron et al. 2023; HF configs).
    "llama2-7b": _llama("llama2-7b", 32, 4096, 32, 32, 11008, 32000, 4096),
    "llama2-13b": _llama("llama2-13b", 40, 5120, 40, 40, 13824, 32000, 4096),
    "llama2-70b": _llama("llama2-70b", 80, 8192, 64, 8, 28672, 32000, 4096),
    # Llama 3 / 3.1 (Dubey et al. 2024; HF configs).
    "llama3-8b": _llama("llama3-8b", 32, 4096, 32, 8, 14336, 128256, 8192),
    "llama3-70b": _llama("llama3-70b", 80, 8192, 64, 8, 28672, 128256, 8192),
    "llama3-405b": _llama("llama3-405b", 126, 16384, 128, 8, 53248, 128256, 8192),
    # Chinchilla 70B (Hoffmann et al. 2022, Table 4; SentencePiece vocab 32k). Counting this shape
    # gives 65.0B; the paper calls it 70B (its reported sizes run above a 12·L·h² count).
    "chinchilla-70b": ModelSpec(name="chinchilla-70b", layers=80, hidden=8192, heads=64, mlp="gelu",
                                vocab=32000, seq_len=2048, position="rotary", norm="rmsnorm"),
    # Megatron-LM SC'21 Table 1 (the shapes in published_runs_dev.csv).
    "megatron-1.7b": _megatron("megatron-1.7b", 24, 2304, 24),
    "megatron-3.6b": _megatron("megatron-3.6b", 30, 3072, 32),
    "megatron-7.5b": _megatron("megatron-7.5b", 36, 4096, 32),
    "megatron-18b": _megatron("megatron-18b", 40, 6144, 48),
    "megatron-39b": _megatron("megatron-39b", 48, 8192, 64),
    "megatron-76b": _megatron("megatron-76b", 60, 10240, 80),
    "megatron-145b": _megatron("megatron-145b", 80, 12288, 96),
    "megatron-310b": _megatron("megatron-310b", 96, 16384, 128),
    "megatron-530b": _megatron("megatron-530b", 105, 20480, 128),
    "megatron-1t": _megatron("megatron-1t", 128, 25600, 160),
    # MT-NLG 530B (Smith et al. 2022) and BLOOM-176B (BigScience tr11: ALiBi, vocab 250880), both tied: under
    # pipelining the last stage keeps a copy of the embedding whose gradient is summed with the first stage's.
    "mt-nlg-530b": _megatron("mt-nlg-530b", 105, 20480, 128, vocab=50272),
    "bloom-176b": ModelSpec(name="bloom-176b", layers=70, hidden=14336, heads=112, mlp="gelu", vocab=250880,
                            seq_len=2048, tied_embeddings=True, position="alibi", bias=True, norm="layernorm",
                            embedding_norm=True, dropout=GPT_DROPOUT),
    # Mixture-of-experts presets (HF config.json of each; seq_len is the pre-training length).
    # Mixtral 8x7B (Jiang et al. 2024, Table 1; mistralai/Mixtral-8x7B-v0.1 config.json): 8 experts,
    # top-2, every layer MoE, SwiGLU experts of 14336. 4096 tokens as NeMo's Mixtral recipes train it.
    "mixtral-8x7b": ModelSpec(name="mixtral-8x7b", layers=32, hidden=4096, heads=32, kv_heads=8, ffn=14336,
                              mlp="swiglu", vocab=32000, seq_len=4096, moe_experts=8, moe_top_k=2, moe_ffn=14336),
    # DeepSeek-V3 (DeepSeek-AI 2024, arXiv:2412.19437, sections 2 and 4.2; deepseek-ai/DeepSeek-V3
    # config.json): 61 layers, hidden 7168, 128 heads of MLA (q_lora_rank 1536, kv_lora_rank 512,
    # qk_rope_head_dim 64, qk_nope_head_dim 128, v_head_dim 128), first_k_dense_replace 3 dense layers of
    # intermediate_size 18432, then 256 routed experts (top-8, moe_intermediate_size 2048) + 1 shared,
    # sigmoid router with e_score_correction_bias, n_group 8 / topk_group 4 (node-limited routing),
    # vocab 129280, untied; pre-trained at 4K tokens (section 4.2). The 671B excludes the multi-token-
    # prediction module (one, num_nextn_predict_layers = 1; DeepSeek-V3 README: 685B = 671B main + 14B MTP):
    # it is trained (FLOPs, time, memory) but not in total_params.
    "deepseek-v3": ModelSpec(name="deepseek-v3", layers=61, hidden=7168, heads=128, ffn=18432, mlp="swiglu",
                             vocab=129280, seq_len=4096, attention="mla", q_lora_rank=1536, kv_lora_rank=512,
                             qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128, moe_experts=256,
                             moe_top_k=8, moe_shared_experts=1, moe_ffn=2048, moe_first_dense=3,
                             moe_router_bias=True, moe_groups=8, moe_topk_groups=4, mtp_layers=1),
    # Qwen3-30B-A3B (Qwen team 2025, Qwen3 technical report Table 2; Qwen/Qwen3-30B-A3B config.json):
    # 48 layers, hidden 2048, 32 q heads / 4 kv heads of head_dim 128 with q/k RMSNorm, 128 experts of 768,
    # top-8, no shared expert, vocab 151936, untied; 4096-token first pre-training stage.
    "qwen3-30b-a3b": ModelSpec(name="qwen3-30b-a3b", layers=48, hidden=2048, heads=32, kv_heads=4, head_dim=128,
                               qk_norm=True, ffn=6144, mlp="swiglu", vocab=151936, seq_len=4096, moe_experts=128,
                               moe_top_k=8, moe_ffn=768),
    # MosaicML MPT / llm-foundry benchmark shapes (scripts/train/benchmarking/README.md; vocab 50368) as its yamls
    # train them: scripts/train/yamls/pretrain/mpt-*.yaml set neither ALiBi nor no_bias, so MPTConfig's defaults
    # hold (learned_pos_emb=True, attn_config alibi=False, no_bias=False), and the README's NumParams grow with the
    # sequence length (mpt-125m 125,311,488 and mpt-70b 64,862,437,376 at 2,048). The released MPT-7B / 30B
    # checkpoints were trained with ALiBi and without biases instead. No dropout: the yamls set none and MPTConfig's
    # attn_pdrop, resid_pdrop and emb_pdrop default to 0 (llmfoundry/models/mpt/configuration_mpt.py).
    **{
        f"mpt-{size}": ModelSpec(name=f"mpt-{size}", layers=L, hidden=h, heads=a, mlp="gelu", vocab=50368,
                                 seq_len=2048, tied_embeddings=True, position="learned", bias=True, norm="layernorm")
        for size, L, h, a in [("125m", 12, 768, 12), ("350m", 24, 1024, 16), ("760m", 24, 1536, 12),
                              ("1b", 24, 2048, 16), ("3b", 32, 2560, 20), ("7b", 32, 4096, 32),
                              ("13b", 40, 5120, 40), ("30b", 48, 7168, 56), ("70b", 80, 8192, 64)]
    },
}


def preset(name: str) -> ModelSpec:
    try:
        return PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, PRESETS, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PlannerInputError(f"--model: unknown preset {name!r}; {hint}(known: {', '.join(sorted(PRESETS))})") from None


# ---------------------------------------------------------------------------------------------
# Model family from one size dial (nanochat-style): depth, with width = depth x aspect ratio.
# ---------------------------------------------------------------------------------------------

FAMILY_HEAD_DIM = 128  # Llama-2/3 and most recent models use 128-wide heads.
FAMILY_VOCAB = 32000   # assumed default tokenizer size for planned models (Llama-2 / Chinchilla scale)


def family_model(depth: int, aspect_ratio: int = 128, seq_len: int = 4096, vocab: int = FAMILY_VOCAB,
                 gqa_group: int = 1) -> ModelSpec:
    """A Llama-style model at `depth` layers: width = depth x aspect_ratio rounded to whole 128-wide heads
    (whole groups of 8 heads from width 2048);
    SwiGLU ffn rounded to 256 as Llama does; kv heads = heads / gqa_group (rounded to a divisor)."""
    # Widths of 2048 and up come in whole groups of 8 heads (multiples of 1024, as in Llama/GPT-3), so
    # 8 kv heads and tp up to 8 divide them; smaller widths are whole 128-wide heads.
    width = depth * aspect_ratio
    step = FAMILY_HEAD_DIM * 8 if width >= 2048 else FAMILY_HEAD_DIM
    hidden = max(FAMILY_HEAD_DIM, step * round(width / step))
    heads = hidden // FAMILY_HEAD_DIM
    kv_heads = max(1, heads // gqa_group)
    while heads % kv_heads:
        kv_heads -= 1
    return _llama(f"family-d{depth}-ar{aspect_ratio}", depth, hidden, heads, kv_heads, swiglu_ffn(hidden), vocab, seq_len)


def family_moe_model(depth: int, experts: int, top_k: int = 1, granularity: int = 1, shared_experts: int = 0,
                     aspect_ratio: int = 128, seq_len: int = 4096, vocab: int = FAMILY_VOCAB,
                     gqa_group: int = 1) -> ModelSpec:
    """The MoE sibling of family_model(depth): every layer's MLP becomes `experts` x `granularity` routed
    experts of width ffn / granularity, each token sent to `top_k` x `granularity` of them (Krajewski et al.
    2024, "Scaling Laws for Fine-Grained Mixture of Experts", section 3: granularity G splits each expert
    into G and routes to G times as many, keeping active FLOPs), plus `shared_experts` always-on ones of
    the same width. top_k = granularity = 1 with one expert is the dense model plus a router."""
    dense = family_model(depth, aspect_ratio, seq_len, vocab, gqa_group)
    if experts < 1 or top_k < 1 or granularity < 1 or top_k > experts:
        raise PlannerInputError(f"MoE family: need experts >= top_k >= 1 and granularity >= 1 (got experts={experts}, "
                                f"top_k={top_k}, granularity={granularity})")
    width = dense.ffn_size // granularity
    if width * granularity != dense.ffn_size or width == 0:
        raise PlannerInputError(f"MoE family: granularity {granularity} does not divide the expert width {dense.ffn_size}")
    return make_model("MoE family", **{**dense.model_dump(), **dict(
        name=f"family-d{depth}-ar{aspect_ratio}-e{experts}k{top_k}g{granularity}" + (f"s{shared_experts}" if shared_experts else ""),
        moe_experts=experts * granularity, moe_top_k=top_k * granularity, moe_ffn=width,
        moe_shared_experts=shared_experts * granularity)})
