"""`planner laws`: list the built-in loss laws and batch-size rules with coefficients and sources."""

from __future__ import annotations

import numpy as np

from planner.laws import batch_size
from planner.laws.registry import BUILTIN_LAWS, DEFAULT_LAW, MOE_LAWS, NEEDS_UNIQUE_TOKENS
from planner.report.render import json_document

# Budgets at which the frontier is summarised: its local exponent and tokens per parameter.
_EXPONENT_BUDGETS = (1e21, 1e25)
_TPP_BUDGET = 1e24


def register(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="list built-in loss laws and batch-size rules",
                              description="Built-in loss laws (for --law) and batch-size rules, with sources.")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(run=run)


def describe_laws() -> dict:
    laws = {}
    for name, law in BUILTIN_LAWS.items():
        n_lo, _ = law.compute_optimal(np.array(_EXPONENT_BUDGETS))
        exponent = float(np.log(n_lo[1] / n_lo[0]) / np.log(_EXPONENT_BUDGETS[1] / _EXPONENT_BUDGETS[0]))
        laws[name] = {
            "default": name == DEFAULT_LAW,
            "form": law.form,
            "source": law.source,
            "n_definition": law.n_definition,
            "c_definition": law.c_definition,
            "coefficients": law.coefficients(),
            "validity": law.validity.as_dict(),
            "needs_unique_tokens": name in NEEDS_UNIQUE_TOKENS,
            "n_opt_exponent": exponent,
            "tokens_per_param_at_1e24": float(law.tokens_per_param_opt(_TPP_BUDGET)),
        }
    rules = {rule: {"formula": text, "default": rule == batch_size.DEFAULT_RULE} for rule, text in batch_size.RULES.items()}
    moe = {name: {"form": law.form, "source": law.source, "n_definition": law.n_definition + " (total, all experts)",
                  "coefficients": law.coefficients(), "validity": law.validity.as_dict(),
                  "inputs": "total parameters N, tokens D, granularity G (planner predict --granularity)"}
           for name, law in MOE_LAWS.items()}
    return {"laws": laws, "moe_laws": moe, "batch_size_rules": rules,
            "critical_over_optimal": batch_size.CRITICAL_OVER_OPTIMAL,
            "max_extra_tokens": batch_size.DEFAULT_MAX_EXTRA_TOKENS}


def run(args) -> int:
    info = describe_laws()
    if args.json:
        print(json_document(info))
        return 0
    lines = []
    for name, law in info["laws"].items():
        tag = " (default)" if law["default"] else ""
        tag += " (needs --unique-tokens)" if law["needs_unique_tokens"] else ""
        v = law["validity"]
        lines += [f"{name}{tag}: {law['source']}",
                  "  " + ", ".join(f"{k} = {c:.5g}" for k, c in law["coefficients"].items()),
                  f"  N = {law['n_definition']} parameters, C = {law['c_definition']}; fitted on N {v['n_min']:.2g}-"
                  f"{v['n_max']:.2g}, D {v['d_min']:.2g}-{v['d_max']:.2g}, D/N {v['tpp_min']:.2g}-{v['tpp_max']:.2g}",
                  f"  compute-optimal: N_opt ∝ C^{law['n_opt_exponent']:.3f}, "
                  f"{law['tokens_per_param_at_1e24']:.1f} tokens/param at C = 1e24", ""]
    for name, law in info["moe_laws"].items():
        v = law["validity"]
        lines += [f"{name} (mixture of experts; predict only): {law['source']}",
                  "  " + ", ".join(f"{k} = {c:.5g}" for k, c in law["coefficients"].items()),
                  f"  inputs: {law['inputs']}; N = {law['n_definition']} parameters, fitted on N {v['n_min']:.2g}-"
                  f"{v['n_max']:.2g}, D {v['d_min']:.2g}-{v['d_max']:.2g}", ""]
    lines.append("batch-size rules (B_opt in tokens):")
    for rule, r in info["batch_size_rules"].items():
        lines.append(f"  {rule}{' (default)' if r['default'] else ''}: {r['formula']}")
    lines.append(f"  B_crit = {info['critical_over_optimal']:g} x B_opt (assumed); largest batch allowed: "
                 f"{info['max_extra_tokens']:.0%} more tokens than at B_opt (McCandlish et al. 2018)")
    print("\n".join(lines))
    return 0
