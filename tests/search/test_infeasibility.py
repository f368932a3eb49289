"""search.infeasibility: an infeasible problem names what binds, and advises only what can help.

A sweep found a short --deadline in budget mode blamed on the batch-size limit and uniform guessing, with advice
to use fewer GPUs or a larger budget: the deadline sized the tokens (search.score: wall = min(budget / gpus,
deadline)) and `--deadline 5s` was feasible. And advice the user had already taken as far as it goes (more GPUs
when the search reached the whole cluster).
"""

from __future__ import annotations

import functools

from planner.laws.registry import load_law
from planner.search.budget import build_constraints
from planner.search.optimize import optimize
from planner.specs.clusters import load_cluster


@functools.cache
def _solved(budget=None, deadline=None, gpus=None, max_gpus=None, target_loss=None):
    spec = load_cluster("dgx-h100")
    constraints = build_constraints(budget=budget, deadline=deadline, gpus=gpus, max_gpus=max_gpus, unique_tokens=None,
                                    target_loss=target_loss, inference_tokens=None,
                                    price_per_gpu_hour=spec.price_per_accelerator_hour, cluster_name=spec.name)
    return optimize(spec, load_law("epoch"), constraints)


def _binding(**flags) -> list[str]:
    """The explanation's lines that say what binds (those after the drop and ruled-out counts)."""
    result = _solved(**flags)
    assert result.status == "infeasible", flags
    return [line for line in result.explanation if "candidates dropped" not in line and "pairs ruled out" not in line]


def test_a_deadline_too_short_to_train_says_the_deadline_binds():
    """`--budget 1000000gpuh --deadline 1s --max-gpus 8`: 8 GPUs for a second spend 0.00222 GPU-hours, too few
    tokens for one allowed batch; the deadline binds, not the batch limit, and a larger budget cannot help."""
    (line,) = _binding(budget="1000000gpuh", deadline="1s", max_gpus=8)
    assert line.startswith("the deadline binds: within it the 8 GPUs a plan may use spend at most 0.00222 of the "
                           "1,000,000 GPU-hours budgeted"), line
    assert line.endswith("give a longer --deadline or allow more GPUs (--max-gpus)"), line
    # Every count under --max-gpus was searched: fewer GPUs cannot help either.
    assert "budget" not in line.split(";")[-1] and "fewer GPUs" not in line
    assert _solved(budget="1000000gpuh", deadline="2s", max_gpus=8).status == "ok"


def test_a_short_deadline_on_the_whole_cluster_advises_only_a_longer_deadline():
    """The sweep's case: `--budget 10000gpuh --deadline 1s`. The search already reaches the cluster's 32,768 GPUs,
    so more GPUs is no advice."""
    lines = _binding(budget="10000gpuh", deadline="1s")
    assert len(lines) == 1 and lines[0].startswith("the deadline binds: within it the 32,768 GPUs"), lines
    assert lines[0].endswith("; give a longer --deadline"), lines[0]


def test_a_budget_too_small_to_learn_still_advises_more_budget():
    """When the budget (not the deadline) sizes the tokens, a larger budget is the advice, as before."""
    lines = _binding(budget="0.001gpuh")
    assert lines and all("deadline" not in line for line in lines), lines
    assert any(line.endswith("raise --budget") for line in lines), lines


def test_target_mode_deadline_advice_leaves_out_gpus_the_cluster_does_not_have():
    """`--target-loss 1.9`: the fastest plan on the whole cluster needs 30.71 days; 'or allow more GPUs' was advice
    no flag can follow."""
    (line,) = _binding(target_loss=1.9)
    assert line.startswith("the deadline binds: the fastest plan needs") and line.endswith("give a longer --deadline")
    (capped,) = _binding(target_loss=2.3, gpus=8, deadline="1d")
    assert capped.endswith("give a longer --deadline or allow more GPUs (--gpus)"), capped


def test_a_bound_of_cells_never_scored_is_said_as_at_least():
    """The audit's case: `--target-loss 2.1 --deadline 1d --max-gpus 64` said "the fastest plan needs 5.46 days",
    yet at 5.5 days no plan fits (the bound is at the best FLOP rate any layout reaches, not a layout's). The
    figure from a bound says "at least"; one from a scored plan failing that limit alone does not."""
    (line,) = _binding(target_loss=2.1, deadline="1d", max_gpus=64)
    assert "the fastest plan needs at least " in line, line
    days = float(line.split("needs at least ")[1].split(" days")[0])
    assert _solved(target_loss=2.1, deadline=f"{days * 1.01:.3f}d", max_gpus=64).status != "ok"
    (budget_line,) = _binding(target_loss=2.1, budget="1000gpuh")
    assert "the cheapest plan needs at least " in budget_line, budget_line


def test_a_vocabulary_below_the_laws_floor_says_so_whatever_the_budget(cli):
    """`--vocab 2`: uniform guessing is ln 2 = 0.69 nats, below the Epoch law's floor of 1.82 at any N and D, yet the
    advice was 'raise --budget', and with a huge budget 'give a longer --deadline'. Neither can help; the
    vocabulary binds. A vocabulary of one token is refused as input."""
    for budget in ("10000gpuh", "1e15gpuh"):
        code, out, _ = cli(["optimize", "--budget", budget, "--vocab", "2", "--quiet"])
        binding = out.strip().splitlines()[-1].strip()
        assert code == 1 and binding.startswith("the vocabulary binds: uniform guessing over 2 tokens is 0.69 nats, "
                                                "below the 1.82 the law predicts"), out
        assert "no budget or deadline helps" in binding and "raise --budget" not in out and "longer --deadline" not in out
    code, _, err = cli(["optimize", "--budget", "10000gpuh", "--vocab", "1"])
    assert code == 2 and "--vocab" in err and "from 2 to" in err, err
