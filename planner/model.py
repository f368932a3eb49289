"""Decoder-only transformer shape -> exact parameter count and training FLOPs, as named breakdowns.

The breakdown functions take plain numbers or numpy arrays (they are pure arithmetic), so the same
code counts one model or a million candidate shapes in the search.

FLOPs follow Megatron-LM's `num_floating_point_operations` (REFERENCE.md): 3 passes (forward +
2x backward), full (non-causal) attention, no recompute:
  12·B·s·L·h²·[(1 + g/a + s/h) + (f/h)·k + V/(2·L·h)], k = 1 (GELU MLP) or 1.5 (SwiGLU).
"""

from __future__ import annotations

import difflib
import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from planner.errors import PlannerInputError


class ModelSpec(BaseModel):
    """A decoder-only transformer. Validated at construction; frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int | None = Field(default=None, gt=0)  # None = heads (multi-head attention)
    ffn: int | None = Field(default=None, gt=0)  # None = 4·hidden (GELU) or Llama's 8/3 rounding (SwiGLU)
    mlp: Literal["gelu", "swiglu"] = "gelu"
    vocab: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    tied_embeddings: bool = False
    # "learned" adds a max_positions x hidden table (GPT-2/3); "rotary"/"alibi" have no parameters.
    position: Literal["learned", "rotary", "alibi"] = "rotary"
    max_positions: int | None = Field(default=None, gt=0)
    bias: bool = False  # GPT-2/3 have biases in every linear and LayerNorm; Llama has none
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    embedding_norm: bool = False  # BLOOM normalises the embedding output (one extra norm)

    @model_validator(mode="after")
    def _check_shape(self) -> "ModelSpec":
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.heads % self.kv:
            raise ValueError(f"heads ({self.heads}) must be divisible by kv_heads ({self.kv})")
        return self

    @property
    def kv(self) -> int:
        return self.kv_heads or self.heads

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


def make_model(where: str = "model", **fields) -> ModelSpec:
    """Build a ModelSpec, turning validation errors into one-line PlannerInputErrors naming `where`."""
    try:
        return ModelSpec(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise PlannerInputError(f"{where}: {key + ': ' if key else ''}{message}") from None


def swiglu_ffn(hidden: int, multiple_of: int = 256) -> int:
    """Llama's SwiGLU width: 2/3 of 4h, rounded up to a multiple (Touvron et al. 2023, model.py)."""
    return multiple_of * math.ceil(int(8 * hidden / 3) / multiple_of)


def mlp_matrices(mlp):
    """2 weight matrices for GELU, 3 for SwiGLU (gate, up, down); works on strings or arrays of codes."""
    if isinstance(mlp, str):
        return 3 if mlp == "swiglu" else 2
    return np.where(np.asarray(mlp) == MLP_CODES["swiglu"], 3, 2)


MLP_CODES = {"gelu": 0, "swiglu": 1}


def param_breakdown(model: ModelSpec) -> dict[str, float]:
    """Exact parameter count by part. Checks itself: the parts sum to `total`."""
    h, L, V, f = model.hidden, model.layers, model.vocab, model.ffn_size
    head_dim = h // model.heads
    qkv_out = h + 2 * model.kv * head_dim
    # LayerNorm with bias has a weight and a bias vector; RMSNorm (or bias-free LayerNorm) only a weight.
    norm_params = 2 * h if model.norm == "layernorm" and model.bias else h
    bias = model.bias
    attention = L * (h * qkv_out + h * h + (qkv_out + h if bias else 0))
    matrices = mlp_matrices(model.mlp)
    mlp = L * (matrices * h * f + ((matrices - 1) * f + h if bias else 0))
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
    parts["total"] = sum(parts.values())
    return parts


def training_flops_breakdown(layers, hidden, heads, kv_heads, ffn, mlp_matrices, vocab, seq_len, tokens,
                             causal: bool = False):
    """Model FLOPs of one training step (forward + backward, no recompute) by part, for `tokens` tokens.

    Arguments may be numpy arrays (the search) or scalars. By default the attention core counts the
    full s x s score matrix, as Megatron-LM's logged TFLOP/s and llm-foundry's MFU do. `causal=True`
    counts the half a causal decoder needs (what a causal flash kernel computes): the cost model's MFU
    uses it, so MFU <= HFU <= 1 holds at any sequence length (with the full count, a 1M-token sequence
    "achieves" more than peak because its time is charged for the causal half only).
    """
    h = np.asarray(hidden, dtype=float)
    kv_fraction = np.asarray(kv_heads, dtype=float) / np.asarray(heads, dtype=float)
    passes = 3.0  # forward + backward (2x forward)
    per_token_layer = {
        # QKV projection (K and V shrink with GQA) and the output projection: 2·h·h·(2 + 2g/a).
        "attention_linear": 2.0 * h * h * (2.0 + 2.0 * kv_fraction),
        # Q·K^T and scores·V: 2·s·h each.
        "attention_core": 4.0 * np.asarray(seq_len, dtype=float) * h * (0.5 if causal else 1.0),
        # 2 or 3 matrices of h x f.
        "mlp": 2.0 * np.asarray(mlp_matrices, dtype=float) * h * np.asarray(ffn, dtype=float),
    }
    tokens = np.asarray(tokens, dtype=float)
    L = np.asarray(layers, dtype=float)
    parts = {name: passes * tokens * L * value for name, value in per_token_layer.items()}
    parts["logits"] = passes * tokens * 2.0 * h * np.asarray(vocab, dtype=float)
    parts["total"] = sum(parts.values())
    return parts


def model_flops_per_step(model: ModelSpec, global_batch: int) -> dict[str, float]:
    """Named training-FLOP breakdown for one optimizer step of `global_batch` sequences."""
    parts = training_flops_breakdown(
        model.layers, model.hidden, model.heads, model.kv, model.ffn_size, mlp_matrices(model.mlp),
        model.vocab, model.seq_len, global_batch * model.seq_len,
    )
    return {k: float(v) for k, v in parts.items()}


# ---------------------------------------------------------------------------------------------
# Presets: published shapes. Sources in comments.
# ---------------------------------------------------------------------------------------------

def _gpt(name, layers, hidden, heads, seq_len=2048, vocab=50257, **extra) -> ModelSpec:
    """GPT-2/3 style: learned positions, biases, LayerNorm, GELU 4h MLP, tied embeddings."""
    return ModelSpec(
        name=name, layers=layers, hidden=hidden, heads=heads, mlp="gelu", vocab=vocab, seq_len=seq_len,
        tied_embeddings=True, position="learned", bias=True, norm="layernorm", **extra,
    )


def _llama(name, layers, hidden, heads, kv_heads, ffn, vocab, seq_len, tied=False) -> ModelSpec:
    return ModelSpec(
        name=name, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, ffn=ffn, mlp="swiglu",
        vocab=vocab, seq_len=seq_len, tied_embeddings=tied, position="rotary", bias=False, norm="rmsnorm",
    )


def _megatron(name, layers, hidden, heads, vocab=51200, seq_len=2048) -> ModelSpec:
    """Megatron-LM SC'21 Table 1 shapes (Narayanan et al. 2021), GPT-style with untied head counted as in the CSV."""
    return ModelSpec(
        name=name, layers=layers, hidden=hidden, heads=heads, mlp="gelu", vocab=vocab, seq_len=seq_len,
        tied_embeddings=True, position="learned", bias=True, norm="layernorm",
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
    # MT-NLG 530B (Smith et al. 2022) and BLOOM-176B (BigScience tr11: ALiBi, vocab 250880, untied in PP).
    "mt-nlg-530b": _megatron("mt-nlg-530b", 105, 20480, 128, vocab=50272),
    "bloom-176b": ModelSpec(name="bloom-176b", layers=70, hidden=14336, heads=112, mlp="gelu", vocab=250880,
                            seq_len=2048, tied_embeddings=True, position="alibi", bias=True, norm="layernorm",
                            embedding_norm=True),
    # MosaicML MPT / llm-foundry benchmark shapes (benchmarking/README.md; vocab 50368).
    **{
        f"mpt-{size}": ModelSpec(name=f"mpt-{size}", layers=L, hidden=h, heads=a, mlp="gelu", vocab=50368,
                                 seq_len=2048, tied_embeddings=True, position="alibi", bias=False, norm="layernorm")
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
