"""Hyperparameters of a plan: peak learning rate, batch size, weight decay, warm-up and LR schedule.

Each value carries its source and the range its source was fitted on; `validity_warnings` names every
input outside that range (the value is then an extrapolation, a starting point to sweep around).

- Learning rate and batch size: Step Law (Li et al. 2025, "Predictable Scale: Part I", arXiv 2503.04715),
  eta_opt = 1.79 N^-0.713 D^0.307 and B_opt = 0.58 D^0.571 tokens, N non-embedding parameters, D tokens.
  The reference B_opt follows the plan's batch rule (planner.laws.batch_size.RULES: Step Law or DeepSeek LLM),
  the one the search sized the batch by; the learning rate is Step Law's whatever that rule, and the plan says
  so (Step Law fits eta and B together, so with another batch rule its eta is a starting point, not a pair).
  B is in tokens: the authors' fitting code multiplies the batch in sequences by the sequence length
  before the fit (step-law/steplaw, code/fit_tool.py, query_optimal_lr_bs_data). The paper's equation
  numbers could not be checked from here; the two formulas are the paper's headline "Step Law".
- Weight decay: Power Lines (Bergsma et al. 2025, arXiv 2505.13738) keep the AdamW timescale
  tau = B / (eta * lambda * D) (B and D in the same unit, here tokens) at an optimum that falls as a power law
  in tokens per parameter, tau_opt = c * (D/N)^m. Checked against the paper's own text (arXiv 2505.13738v2,
  abstract): the definition tau = B/(eta lambda D), "optimal lambda scales linearly with B, for a fixed N, D",
  and "optimal tau obeys a precise power law in the tokens-per-parameter ratio, D/N". The fitted c and m
  (their Figure 1 left / section 3) were NOT reachable: only a secondary review gives m ~ -0.527 and none
  gives c, so no Power Lines constant is used: the weight decay stays at the common 0.1 and the plan reports
  the timescale tau that 0.1 implies, for comparison with the paper's fit.
- Schedule: warm-up-stable-decay (WSD) with a (1 - sqrt) cool-down over the last 20% of training, decaying
  to zero (Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations",
  arXiv 2405.18392: a constant LR with a cool-down of about 20% of training matches cosine at the same length,
  and their (1 - sqrt) cool-down shape beats linear). Warm-up: linear, WARMUP_FRACTION of training.
"""

from __future__ import annotations


from planner.laws.batch_size import DEFAULT_RULE, RULE_NAMES, RULES, optimal_batch_tokens

# Step Law (Li et al. 2025): eta_opt = 1.79 * N^-0.713 * D^0.307; B_opt = 0.58 * D^0.571 tokens.
STEP_LAW_LR = (1.79, -0.713, 0.307)
STEP_LAW_LR_SOURCE = "Step Law (Li et al. 2025, 'Predictable Scale: Part I'): eta_opt = 1.79 N^-0.713 D^0.307"
# Range of the Step Law fit as confirmed here: the released grid runs start at N = 119M on 7B tokens
# (huggingface.co/StepLaw, StepLaw-N_119M-D_7.0B-*) and the paper's Figure 1 grid searches reach 400M / 40B
# and 1B / 100B (the held-out test point). The paper's full grid may reach a little lower; not checked.
STEP_LAW_PARAMS_RANGE = (1.19e8, 1.0e9)
STEP_LAW_TOKENS_RANGE = (7.0e9, 1.0e11)

# Power Lines (Bergsma et al. 2025): optimal AdamW timescale tau = B/(eta lambda D) ~ c (D/N)^m.
# Their runs: 111M to 3.3B parameters (Cerebras, SlimPajama). c and m are not used (see the docstring).
POWER_LINES_SOURCE = ("Power Lines (Bergsma et al. 2025): tau = B/(eta * lambda * D), tau_opt a power law in D/N; "
                      "fitted coefficient not available here, so lambda = 0.1 (Llama 2 / GPT-3 practice, assumed)")
POWER_LINES_PARAMS_RANGE = (1.11e8, 3.3e9)

# Optimizer settings every plan uses (Llama 2 / GPT-3 practice; assumed, not planned).
WEIGHT_DECAY = 0.1
ADAM_BETAS = (0.9, 0.95)
GRADIENT_CLIP = 1.0

# Schedule. WARMUP_FRACTION: assumed, 1% of samples of linear warm-up (common Llama / Megatron practice).
WARMUP_FRACTION = 0.01
# Hagele et al. 2024, section 3: cool-down of ~20% of training matches cosine; (1 - sqrt) shape; decay to 0.
COOLDOWN_FRACTION = 0.2
COOLDOWN_SHAPE = "1-sqrt"
WSD_MIN_LR_RATIO = 0.0
WARMUP_SOURCE = "assumed: Llama / Megatron practice (linear warm-up over 1% of training)"
SCHEDULE_SOURCE = ("WSD: Hagele et al. 2024, 'Scaling Laws and Compute-Optimal Training Beyond Fixed Training "
                   "Durations' (constant LR, then a (1-sqrt) cool-down over the last 20% to zero); "
                   "linear warm-up over 1% of training (assumed, Llama / Megatron practice)")


def step_law_learning_rate(non_embedding_params: float, tokens: float) -> float:
    """Peak learning rate from Step Law; a starting point to sweep around, not a guarantee."""
    scale, n_exp, d_exp = STEP_LAW_LR
    return scale * non_embedding_params**n_exp * tokens**d_exp


def adamw_timescale(batch_tokens: float, learning_rate: float, weight_decay: float, tokens: float) -> float:
    """Power Lines' AdamW timescale tau = B / (eta * lambda * D): the EMA window as a fraction of training."""
    return batch_tokens / (learning_rate * weight_decay * tokens)


def _outside(name: str, value: float, bounds: tuple[float, float], source: str) -> list[str]:
    low, high = bounds
    if low <= value <= high:
        return []
    side = "below" if value < low else "above"
    return [f"{name} = {value:.3g} is {side} the {source} fitted range [{low:.3g}, {high:.3g}]: extrapolated"]


def validity_warnings(non_embedding_params: float, tokens: float) -> list[str]:
    """Every input outside the range the sources were fitted on."""
    return [*_outside("N (non-embedding parameters)", non_embedding_params, STEP_LAW_PARAMS_RANGE, "Step Law"),
            *_outside("D (tokens)", tokens, STEP_LAW_TOKENS_RANGE, "Step Law"),
            *_outside("N (non-embedding parameters)", non_embedding_params, POWER_LINES_PARAMS_RANGE, "Power Lines")]


def plan_hyperparameters(non_embedding_params: float, tokens: float, global_batch_tokens: float, *,
                         weight_decay: float = WEIGHT_DECAY, warmup_fraction: float = WARMUP_FRACTION,
                         cooldown_fraction: float = COOLDOWN_FRACTION, batch_rule: str = DEFAULT_RULE) -> dict:
    """Learning rate, batch size, weight decay and LR schedule for N non-embedding parameters, D tokens and
    the plan's global batch (tokens), each with its source and validity range; the batch's B_opt by
    `batch_rule` (the search's --batch-rule). Plain data (JSON-ready)."""
    if non_embedding_params <= 0 or tokens <= 0 or global_batch_tokens <= 0:
        raise ValueError(f"N, D and the global batch must be positive, got {non_embedding_params}, {tokens}, "
                         f"{global_batch_tokens}")
    if not 0 <= warmup_fraction + cooldown_fraction <= 1:
        raise ValueError(f"warm-up ({warmup_fraction}) + cool-down ({cooldown_fraction}) must be within [0, 1]")
    peak = step_law_learning_rate(non_embedding_params, tokens)
    b_opt = float(optimal_batch_tokens(tokens, non_embedding_params, rule=batch_rule))
    step_law_range = {"non_embedding_params": list(STEP_LAW_PARAMS_RANGE), "tokens": list(STEP_LAW_TOKENS_RANGE)}
    return {
        "learning_rate": {"peak": peak, "law": "Step Law", "source": STEP_LAW_LR_SOURCE, "validity": step_law_range},
        "batch_size": {"optimal_tokens": b_opt, "planned_tokens": float(global_batch_tokens),
                       "planned_over_optimal": global_batch_tokens / b_opt, "rule": batch_rule,
                       "rule_name": RULE_NAMES[batch_rule], "source": RULES[batch_rule],
                       **({"validity": step_law_range} if batch_rule == "step-law" else {})},
        "weight_decay": {"value": weight_decay,
                         "timescale_tau": adamw_timescale(global_batch_tokens, peak, weight_decay, tokens),
                         "tokens_per_parameter": tokens / non_embedding_params,
                         "source": POWER_LINES_SOURCE,
                         "validity": {"non_embedding_params": list(POWER_LINES_PARAMS_RANGE)}},
        "schedule": {"kind": "wsd", "warmup_fraction": warmup_fraction, "cooldown_fraction": cooldown_fraction,
                     "cooldown_shape": COOLDOWN_SHAPE, "peak_lr": peak, "min_lr": peak * WSD_MIN_LR_RATIO,
                     "source": SCHEDULE_SOURCE, "warmup_source": WARMUP_SOURCE},
        "optimizer": {"name": "AdamW", "beta1": ADAM_BETAS[0], "beta2": ADAM_BETAS[1],
                      "gradient_clip": GRADIENT_CLIP, "source": "Llama 2 / GPT-3 practice (assumed)"},
        "validity_warnings": validity_warnings(non_embedding_params, tokens),
    }
