"""What every launch target shares: how long to train and at which peak learning rate.

Pure arithmetic on a layout and a token count; each emitter spells the result in its stack's names.
"""

from __future__ import annotations

import math

from planner.layout import Layout

# Step Law (Li et al. 2025, "Predictable Scale: Part I", eq. 1): eta_opt = 1.79 N^-0.713 D^0.307
# with N non-embedding parameters and D tokens; the same paper's batch law sizes the plan's batch.
STEP_LAW_LR = (1.79, -0.713, 0.307)
WARMUP_FRACTION = 0.01  # assumed: 1% of samples of linear warm-up, common Llama/Megatron practice
MIN_LR_RATIO = 0.1  # assumed: cosine decay to 10% of the peak (Chinchilla, Llama 2)
# AdamW settings every emitter writes (Llama 2 / GPT-3 practice; assumed, not planned).
WEIGHT_DECAY = 0.1
ADAM_BETAS = (0.9, 0.95)
GRADIENT_CLIP = 1.0


def step_law_learning_rate(non_embedding_params: float, tokens: float) -> float:
    """Peak learning rate from Step Law; a starting point to sweep around, not a guarantee."""
    scale, n_exp, d_exp = STEP_LAW_LR
    return scale * non_embedding_params**n_exp * tokens**d_exp


def train_steps(layout: Layout, tokens: float, seq_len: int) -> int:
    """Optimizer steps to see `tokens` tokens, rounded up to a whole step."""
    return math.ceil(tokens / (layout.global_batch * seq_len))


def train_sequences(layout: Layout, tokens: float, seq_len: int) -> int:
    """Sequences to train on, rounded up to whole optimizer steps."""
    return train_steps(layout, tokens, seq_len) * layout.global_batch


def nodes(layout: Layout, gpus_per_node: int) -> int:
    """Nodes the launcher starts: whole nodes, the last one possibly partly used."""
    return -(-layout.gpus // gpus_per_node)
