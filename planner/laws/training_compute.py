"""Training compute as the loss laws count it: C = 6·N·D FLOPs for a dense model of N parameters trained on D tokens
(Kaplan et al. 2020 section 2.1, C ≈ 6NBS: 2 FLOPs per parameter and token forward, 4 backward; Hoffmann et al. 2022
state and fit their laws on the same C, and the Epoch digitisation of Chinchilla's runs gives C by it). A
mixture-of-experts model's compute is Krajewski et al. 2024 eq. 10 on its active parameters (laws.moe.training_flops),
which builds on the same 6 per parameter.

One place for the 6, so that the laws, the budget searches, the report and the CLI turn compute into tokens alike.
The cost model counts FLOPs per layer itself (cost/layer_compute.py): this is the laws' measure, not a step's work."""

from __future__ import annotations

FLOPS_PER_PARAM_TOKEN = 6.0


def dense_training_flops(params, tokens):
    """C = 6·N·D: the training FLOPs of N parameters on D tokens (arrays or floats)."""
    return FLOPS_PER_PARAM_TOKEN * params * tokens


def tokens_for_compute(compute, params):
    """D = C / (6·N): the tokens that C FLOPs train N parameters on."""
    return compute / (FLOPS_PER_PARAM_TOKEN * params)
