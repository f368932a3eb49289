"""`planner optimize --budget B --moe`: the best dense and the best mixture-of-experts plan side by side.

    planner optimize --budget 1000000gpuh --moe
    planner optimize --budget 1000000gpuh --moe --deadline 60d --cluster dgx-h200 --json

Both judged by Krajewski et al. 2024's pair of laws (planner.search.moe_budget). Exit 0 with both plans,
1 when either side has no layout that fits, 2 for bad input.
"""

from __future__ import annotations

from planner.errors import PlannerInputError
from planner.specs.layout import settings_used

DEFAULT_DEADLINE = "30d"


def require_budget(args) -> None:
    """--moe compares plans under a budget: one line naming the flag when there is none."""
    if not args.budget:
        raise PlannerInputError("--moe needs --budget (GPU-hours like '1000000gpuh' or money like '$2M')")


def solve_moe_budget(args, gpus: int | None = None, alone: bool = True):
    """The comparison for `optimize --moe` (alone: the flags of a single-law plan are refused) or for the
    review's section (`report --moe`: beside the plan, on its GPU count `gpus` unless --gpus says)."""
    from planner.search.budget import check_gpu_counts, parse_budget, parse_deadline
    from planner.specs.clusters import load_cluster
    from planner.search.moe_budget import compare_dense_moe

    if alone:
        from planner.cli.arguments import refuse_flags
        from planner.cli.optimize import refuse_fixed_model_flags
        # Nothing of a single plan's search applies: not its law, model, launch files, review or ZeRO-3 options.
        reason = "does not apply to --moe, which compares the Krajewski et al. 2024 dense and MoE laws' plans under a --budget"
        refuse_flags(args, ("target_loss", "unique_tokens", "inference_tokens", "law", "model", "params", "emit",
                            "emit_deepspeed", "report", "flat_zero", "quantized_comm", "min_headroom"), reason)
        refuse_fixed_model_flags(args, reason)
    require_budget(args)
    from planner.cli.arguments import training_dtype

    cluster = load_cluster(args.cluster, args.cluster_dir)
    training_dtype(args, cluster)
    gpu_seconds = parse_budget(args.budget, cluster.price_per_accelerator_hour, cluster.name)[0]
    deadline_s = parse_deadline(args.deadline or DEFAULT_DEADLINE)
    if args.gpus and len(args.gpus) > 1:
        raise PlannerInputError("--gpus: --moe compares the dense and MoE plans on one count; give one number")
    max_gpus = getattr(args, "max_gpus", None)
    check_gpu_counts(args.gpus[0] if args.gpus else None, max_gpus)
    gpus = args.gpus[0] if args.gpus else gpus
    if getattr(args, "framework", None):
        from planner.cli.fixed_model import parse_frameworks
        frameworks = parse_frameworks(args.framework)
    else:
        frameworks = ("megatron",)
    return compare_dense_moe(cluster, gpu_seconds, deadline_s, dtype=args.dtype, frameworks=frameworks,
                             seq_len=args.seq_len, vocab=args.vocab, gpus=gpus,
                             max_gpus=max_gpus, batch_rule=args.batch_rule)


def _side_json(side) -> dict | None:
    if side is None:
        return None
    m = side.model
    return {"kind": side.kind, "law": side.law, "model": m.name, "params": m.total_params,
            "active_params": m.total_active_params, "layers": m.layers, "hidden": m.hidden,
            "experts": m.moe_experts, "top_k": m.moe_top_k, "expert_ffn": m.moe_ffn, "granularity": side.granularity,
            "tokens": side.tokens, "gpus": side.gpus, "wall_clock_s": side.wall_s, "predicted_loss": side.loss, "layout": settings_used(side.layout) if side.layout else None,
            "step_time_s": side.step_time_s, "tokens_per_s": side.tokens_per_s, "mfu": side.mfu,
            "inference_flops_per_token": side.inference_flops_per_token, "warnings": side.warnings}


def result_json(result) -> dict:
    """The comparison as JSON. The top-level GPUs, wall-clock and GPU-hours are the winner's plan (each side's own
    are in its object); null unless both sides have a plan. They were the fewest GPU count tried, which neither
    plan need have used."""
    d, m, won = result.dense, result.moe, result.winner
    return {"status": "ok" if won is not None else "infeasible", "cluster": result.cluster.name,
            "gpus": won.gpus if won else None, "wall_clock_s": won.wall_s if won else None,
            "gpu_hours": won.gpus * won.wall_s / 3600.0 if won else None,
            "budget_gpu_hours": result.gpu_seconds / 3600.0, "gpu_counts_tried": list(result.counts),
            "batch_rule": result.batch_rule, "dense": _side_json(d), "moe": _side_json(m),
            "winner": won.kind if won else None, "loss_difference": None if won is None else d.loss - m.loss}


def format_result(result) -> str:
    from planner.report.render import table
    from planner.report.review import moe_comparison

    view = moe_comparison(result)
    lines = [view["header"], "", table(["", *view["kinds"]], view["rows"])]
    lines += ["", view["verdict"]] if view["verdict"] else []
    lines += [f"no plan     {m}" for m in view["missing"]]
    lines += [f"warning    {w}" for w in view["warnings"]]
    return "\n".join(lines)


def run_moe_budget(args) -> int:
    from planner.report.render import json_document

    result = solve_moe_budget(args)
    if args.json:
        print(json_document(result_json(result)))
    else:
        print(format_result(result))
    return 0 if result.dense is not None and result.moe is not None else 1
