"""Look up a loss law by name (`--law epoch`) or by path to a fitted-law YAML (`--law law.yaml`).

The default is the Epoch AI refit of Chinchilla: it fits Hoffmann's own data far better than
Hoffmann's published coefficients do (Besiroglu et al. 2024), and its ~20 tokens per parameter
agrees with Hoffmann's approaches 1 and 2. `unique_tokens` turns any Chinchilla-form law into
its data-constrained variant (Muennighoff et al. 2023).
"""

from __future__ import annotations

import difflib

from pathlib import Path

from planner.errors import PlannerInputError
from planner.laws.base import LossLaw
from planner.laws.chinchilla import ChinchillaLaw
from planner.laws.data_constrained import DataConstrainedLaw, data_constrained
from planner.laws.law_file import load_law_file
from planner.laws.moe import KRAJEWSKI_2024, KRAJEWSKI_2024_E16, FineGrainedMoELaw
from planner.laws.published import EPOCH_2024, HOFFMANN_2022, KAPLAN_2020, MUENNIGHOFF_2023

BUILTIN_LAWS: dict[str, LossLaw] = {
    law.name: law for law in (EPOCH_2024, HOFFMANN_2022, KAPLAN_2020, MUENNIGHOFF_2023)
}
DEFAULT_LAW = "epoch"
# Mixture-of-experts laws: N is total parameters of an MoE at a granularity; a dense search must not use them
# as if they were dense laws, so load_law gives them only to callers that ask (allow_moe=True).
MOE_LAWS: dict[str, FineGrainedMoELaw] = {law.name: law for law in (KRAJEWSKI_2024, KRAJEWSKI_2024_E16)}
# Laws whose fit only means something with a cap on unique tokens.
NEEDS_UNIQUE_TOKENS = frozenset({"muennighoff"})


def load_law(name_or_path: str, unique_tokens: float | None = None, allow_moe: bool = False) -> LossLaw:
    law = _lookup(name_or_path)
    if isinstance(law, FineGrainedMoELaw):
        if not allow_moe:
            raise PlannerInputError(f"--law {name_or_path[:200]}: a mixture-of-experts law (N = total parameters at a "
                                    f"granularity); use it with 'planner predict --law {name_or_path[:200]} --granularity G'")
        if unique_tokens is not None:
            raise PlannerInputError(f"--unique-tokens works with Chinchilla-form laws; --law {name_or_path[:200]} is a moe law")
        return law
    if unique_tokens is None:
        if name_or_path in NEEDS_UNIQUE_TOKENS:
            raise PlannerInputError(f"--law {name_or_path} models repeated data and needs --unique-tokens")
        return law
    if not unique_tokens > 0:
        raise PlannerInputError(f"--unique-tokens: expected a positive count, got {unique_tokens!r}")
    if isinstance(law, DataConstrainedLaw):
        law = law.base
    if not isinstance(law, ChinchillaLaw):
        raise PlannerInputError(
            f"--unique-tokens works with Chinchilla-form laws (the repeated-data decay of Muennighoff et al. "
            f"2023 was fitted in that form); --law {name_or_path} is a {law.form} law")
    return data_constrained(law, unique_tokens)


def _is_file(path: str) -> bool:
    try:  # a 300-character name or a NUL byte is not a file, not a traceback
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def _lookup(name_or_path: str) -> LossLaw:
    if name_or_path in BUILTIN_LAWS:
        return BUILTIN_LAWS[name_or_path]
    if name_or_path in MOE_LAWS:
        return MOE_LAWS[name_or_path]
    if Path(name_or_path).suffix.lower() in (".yaml", ".yml") or _is_file(name_or_path):
        if not _is_file(name_or_path):
            raise PlannerInputError(f"--law {name_or_path[:200]}: no such law file")
        return load_law_file(name_or_path)
    names = [*BUILTIN_LAWS, *MOE_LAWS]
    close = difflib.get_close_matches(name_or_path, names, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise PlannerInputError(f"--law: unknown law {name_or_path[:200]!r}; {hint}choose one of {', '.join(names)} "
                            f"or a law file saved by 'planner fit-law --out'")
