"""The vocabulary a stack builds its embedding and output layer for: Megatron and Megatron-DeepSpeed pad it to a
multiple of make_vocab_size_divisible_by (128) x tp, the other stacks use it as it is (frameworks/base.py
vocab_padding_multiple). The padding is priced in time and memory; the model's parameter count stays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.cost.estimate import estimate
from planner.specs.clusters import load_cluster
from planner.specs.candidate_batch import single_batch
from planner.specs.layout import Layout
from planner.specs.model import PRESETS

LLAMA3_8B = PRESETS["llama3-8b"]  # vocabulary 128,256: not a multiple of 128 x 8


def _costs(model, framework, tp):
    layout = Layout(tp=tp, pp=2, dp=4, micro_batch=1, global_batch=64, framework=framework, zero=1)
    result = estimate(single_batch(model, layout), load_cluster("dgx-h100"))
    return float(result.time["step_time_s"][0]), float(result.memory["total_bytes"][0])


def _with_vocab(vocab):
    return LLAMA3_8B.model_copy(update={"vocab": vocab})


@pytest.mark.parametrize("framework", ["megatron", "deepspeed"])
def test_megatron_style_stacks_price_the_padded_vocabulary(framework):
    tp = 8
    multiple = 128 * tp
    padded = math.ceil(LLAMA3_8B.vocab / multiple) * multiple
    assert padded > LLAMA3_8B.vocab
    # Time and memory as if the tokenizer had the padded vocabulary (embedding, output layer, logits).
    assert _costs(LLAMA3_8B, framework, tp) == pytest.approx(_costs(_with_vocab(padded), framework, tp), rel=1e-12)
    assert _costs(LLAMA3_8B, framework, tp)[1] > _costs(_with_vocab(LLAMA3_8B.vocab - 256), framework, tp)[1]


def test_a_stack_without_padding_prices_the_vocabulary_as_it_is():
    tp = 8
    padded = math.ceil(LLAMA3_8B.vocab / (128 * tp)) * 128 * tp
    plain, with_padding = _costs(LLAMA3_8B, "fsdp", tp), _costs(_with_vocab(padded), "fsdp", tp)
    assert plain[0] < with_padding[0] and plain[1] < with_padding[1]


def test_padding_leaves_the_parameter_count():
    batch = single_batch(LLAMA3_8B, Layout(tp=8, framework="megatron"))
    assert np.asarray(batch.total_params)[0] == LLAMA3_8B.total_params
