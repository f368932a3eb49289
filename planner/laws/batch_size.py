"""Optimal and critical global batch size (in tokens), and the cost of batches above them.

B_opt, the batch that gives the lowest loss for a token budget D:
- "step-law": Li et al. 2025 (Step Law), B_opt = 0.58·D^0.571 tokens. Depends on D only, which is
  the form Power Lines (Bergsma et al. 2025) also finds: B_opt and B_crit grow as power laws in D,
  independent of N.
- "deepseek": DeepSeek LLM (2024), eq. 1, B_opt = 0.292·C^0.3271 tokens with C the training
  compute. DeepSeek counts C = M·D with M the non-embedding FLOPs per token; here C = 6·N·D with
  N the non-embedding parameters, the usual approximation of M.

Cost of large batches (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training"):
reaching a given loss takes S = S_min·(1 + B_noise/B) steps and E = E_min·(1 + B/B_noise)
tokens, with B_crit ≈ B_noise. Batches well above B_crit buy few steps for many tokens.

B_crit is not published as a function of D in the sources here, so it is tied to B_opt:
CRITICAL_OVER_OPTIMAL = 2 (ASSUMED). Kaplan et al. 2020 give B_crit(L) ≈ 2e8/L^(1/0.21) tokens;
at losses near 2 nats (GPT-3 / Chinchilla scale) that is 7-8e6 tokens, 1.7-3.5 times the Step-Law
B_opt at their token counts (5.0e6 at 1.4e12 tokens, 2.1e6 at 3e11). Different data and
tokenizers: an order-of-magnitude anchor, no better.
"""

from __future__ import annotations

import numpy as np

from planner.errors import PlannerInputError
from planner.laws.base import as_array
from planner.laws.training_compute import dense_training_flops

RULES = {
    "step-law": "Li et al. 2025 (Step Law): B_opt = 0.58 * D^0.571 tokens",
    "deepseek": "DeepSeek LLM 2024, eq. 1: B_opt = 0.292 * C^0.3271 tokens, C = 6ND (non-embedding N)",
}
# Short names for text output ("2.8x Step Law's B_opt").
RULE_NAMES = {"step-law": "Step Law", "deepseek": "DeepSeek LLM"}
DEFAULT_RULE = "step-law"
CRITICAL_OVER_OPTIMAL = 2.0  # ASSUMED, see the module docstring
# Largest batch allowed: one that needs at most this fraction more tokens than B_opt for the same
# loss under McCandlish's model. ASSUMED planning tolerance: 50% more tokens is already a lot.
DEFAULT_MAX_EXTRA_TOKENS = 0.5

# Kaplan et al. 2020, eq. 5.3 (section 5.1): B_crit(L) = B_* / L^(1/alpha_B).
KAPLAN_B_STAR_TOKENS = 2e8
KAPLAN_ALPHA_B = 0.21


def optimal_batch_tokens(D, N=None, rule: str = DEFAULT_RULE) -> np.ndarray:
    """B_opt in tokens for D training tokens (and N non-embedding parameters for "deepseek")."""
    D = as_array(D)
    if rule == "step-law":
        return 0.58 * D**0.571
    if rule == "deepseek":
        if N is None:
            raise PlannerInputError("batch-size rule 'deepseek' needs the model size N (it uses C = 6ND)")
        return 0.292 * dense_training_flops(as_array(N), D) ** 0.3271
    raise PlannerInputError(f"--batch-rule: unknown rule {rule!r}; choose one of {', '.join(RULES)}")


def critical_batch_tokens(D, N=None, rule: str = DEFAULT_RULE) -> np.ndarray:
    """B_crit ≈ B_noise in tokens: CRITICAL_OVER_OPTIMAL x B_opt (see the module docstring)."""
    return CRITICAL_OVER_OPTIMAL * optimal_batch_tokens(D, N, rule)


def kaplan_critical_batch_tokens(loss) -> np.ndarray:
    """Kaplan et al. 2020 eq. 5.3, B_crit from the loss in nats (their WebText2 losses)."""
    return KAPLAN_B_STAR_TOKENS / as_array(loss) ** (1.0 / KAPLAN_ALPHA_B)


def token_efficiency_penalty(B, D, N=None, rule: str = DEFAULT_RULE) -> np.ndarray:
    """Tokens needed at batch B relative to B_opt for the same loss: >= 1, and 1 at or below B_opt.

    McCandlish: E(B) / E(B_opt) = (1 + B/B_crit) / (1 + B_opt/B_crit). Below B_opt no penalty is
    charged: small batches cost steps (time), which the step-time model prices, not tokens.
    """
    b_opt = optimal_batch_tokens(D, N, rule)
    b_crit = CRITICAL_OVER_OPTIMAL * b_opt
    B = np.maximum(as_array(B), b_opt)
    return (1.0 + B / b_crit) / (1.0 + b_opt / b_crit)


def max_batch_tokens(D, N=None, rule: str = DEFAULT_RULE,
                     max_extra_tokens: float = DEFAULT_MAX_EXTRA_TOKENS) -> np.ndarray:
    """Largest global batch (tokens) whose token penalty stays within 1 + max_extra_tokens.

    Solving (1 + B/B_crit) / (1 + B_opt/B_crit) = 1 + x for B gives
    B_max = (1 + x)·(B_crit + B_opt) - B_crit; with the defaults (x = 0.5, B_crit = 2 B_opt)
    B_max = 2.5·B_opt = 1.25·B_crit.
    """
    if max_extra_tokens < 0:
        raise PlannerInputError(f"max_extra_tokens must be >= 0, got {max_extra_tokens}")
    b_opt = optimal_batch_tokens(D, N, rule)
    b_crit = CRITICAL_OVER_OPTIMAL * b_opt
    return (1.0 + max_extra_tokens) * (b_crit + b_opt) - b_crit
