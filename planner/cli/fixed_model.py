"""`planner optimize --model PRESET|FILE` (or `--params 70B`): a model already chosen -> GPUs, layout, days.

    planner optimize --model gpt3-175b --gpus 64 --global-batch 1536 --cluster dgx-a100-80gb --dtype fp16
    planner optimize --model llama3-70b --tokens 15T --deadline 90d
    planner optimize --model llama3-70b --tokens 15T --gpus 256,512,1024,2048,4096,8192
    planner optimize --params 8B --gpus 512 --framework megatron --emit launch/

Exit 0 with a plan, 1 when no GPU count works (what binds is printed), 2 for bad input.
"""

from __future__ import annotations

import math

import argparse
import csv
import io
import sys

from planner.errors import PlannerInputError


def add_fixed_model_arguments(parser, outputs: bool = True) -> None:
    """The fixed-model flags. `outputs` False (`planner report`, which writes its own files and has its own --moe):
    without --all-layouts, --emit and --moe."""
    from planner.cli.arguments import output_path, real_number, whole_number

    group = parser.add_argument_group("a model already chosen (switches to the layout / GPU-count search)")
    group.add_argument("--model", metavar="PRESET|FILE", help="model preset (see `planner simulate --list-models`) or a model YAML")
    group.add_argument("--params", metavar="N", help="a model of about N parameters from the family dial, like '70B'")
    group.add_argument("--tokens", metavar="D", help="tokens to train on, like '15T': gives days, GPU-hours and cost")
    group.add_argument("--global-batch", type=whole_number(), help="global batch in sequences (default: the batch law for --tokens)")
    group.add_argument("--knee", type=real_number(0.0, 1.0, low_open=True), default=None,
                       help="scaling efficiency below which a sweep stops adding GPUs (default 0.8)")
    if outputs:
        group.add_argument("--all-layouts", metavar="OUT.csv", type=output_path, help="write every scored layout (feasible or not, with the reason)")
        group.add_argument("--emit", metavar="DIR", type=output_path, help="write the chosen plan's launch config for its stack (a budget plan or a fixed model's)")
        group.add_argument("--moe", action="store_true",
                           help="with --budget: the best dense and the best mixture-of-experts plan side by side "
                                "(Krajewski et al. 2024 laws)")
    group.add_argument("--moe-load-imbalance", type=real_number(1.0), default=None,
                       help="MoE models: the busiest expert rank's tokens over the mean (dropless routing; default 1.0; "
                            "each layout priced at most min(ep, experts / top-k) of it: 1 at ep 1)")
    group.add_argument("--grad-reduce-in-fp32", type=int, choices=[0, 1], default=None,
                       help="every layout holds and reduces its gradients in fp32 (1) or the 16-bit model dtype (0, as "
                            "NVIDIA's Megatron-Bridge performance recipes; not torchtitan, which reduces in fp32 only); "
                            "default: each stack's own (Megatron: fp32 with bf16). A numerics choice, so never the search's")


def wants_fixed_model(args) -> bool:
    return bool(getattr(args, "model", None) or getattr(args, "params", None))


def parse_gpu_list(text: str) -> list[int]:
    """'64' -> [64]; '64,128,256' -> those; '256-8192' -> powers of two from 256 to 8192."""
    raw = str(text).strip()
    expected = "a GPU count like '64', a list like '64,128,256' or a doubling range like '256-8192'"
    try:
        if "-" in raw:
            low, high = (int(part) for part in raw.split("-", 1))
            if not 1 <= low <= high:
                raise ValueError
            counts = [low]
            while counts[-1] < high:
                counts.append(counts[-1] * 2)
            if counts[-1] != high:
                # The range doubles: an end it does not reach would be dropped without a word.
                below = f"{counts[-2]} or " if len(counts) > 1 else ""
                raise argparse.ArgumentTypeError(
                    f"the doubling range {raw!r} steps {low}, {low * 2}, ... and does not reach {high}: end it at "
                    f"{below}{counts[-1]}, or list the counts ('{low},{high}')")
            return counts
        counts = [int(part) for part in raw.split(",")]
        if any(part.strip().startswith("0") for part in raw.split(",")[1:]):
            # '1,024' is a thousands separator, not the list 1, 24: refuse rather than guess
            raise argparse.ArgumentTypeError(f"a count in {text!r} has a leading zero; a comma separates counts "
                                             f"here, so write {raw.replace(',', '')} without it")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not counts or any(c < 1 or c > 2**31 for c in counts):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return counts


def names_a_model_file(text: str) -> bool:
    """A --model value that names a model YAML file rather than a preset."""
    from pathlib import Path

    return text.endswith((".yaml", ".yml")) or Path(text).is_file()


def model_from_flag(text: str):
    """--model PRESET|FILE -> ModelSpec: a model YAML (a mapping of ModelSpec fields) or a preset's name."""
    from planner.specs.model import make_model, preset
    if names_a_model_file(text):
        from planner.io import load_yaml_file
        data = load_yaml_file(text, "model file (.yaml)")
        if not isinstance(data, dict):
            raise PlannerInputError(f"{text}: expected a YAML mapping of model fields (layers, hidden, heads, ...)")
        # Keys go in as keyword arguments: one that is not text, or is make_model's own `where`, would raise a bare
        # TypeError there.
        odd = next((key for key in data if not isinstance(key, str) or key == "where"), None)
        if odd is not None:
            raise PlannerInputError(f"{text}: key {odd!r}: not a model field (expected layers, hidden, heads, ...)")
        return make_model(text, **data)
    return preset(text)


def load_model(args):
    """--model PRESET|FILE or --params N -> ModelSpec. --seq-len/--vocab shape a --params model; given with
    --model they replace the model's own, as the flags of `planner simulate` override its --model."""
    from planner.cli.arguments import given
    from planner.specs.model import make_model
    if args.model and args.params:
        raise PlannerInputError("--model and --params: give one (a preset or file, or a size for the family dial)")
    if args.model:
        model = model_from_flag(args.model)
        overrides = {key: getattr(args, key) for key in ("seq_len", "vocab") if given(args, key)}
        return make_model(f"--model {args.model} with --seq-len/--vocab", **{**model.model_dump(), **overrides})
    from planner.specs import units
    from planner.search.space import family_models
    target = units.parse_count(args.params, "--params")
    family = family_models(args.seq_len, args.vocab, 0, float("inf"))
    # Nearest on a log scale: a linear ratio rounds to the same -1 for every member far below a huge target, and
    # named the smallest (helper-found: --params 1e29 was "nearest 60M").
    nearest = min(family, key=lambda m: abs(math.log(m.total_params / target)))
    # The family's neighbours are a few percent apart inside its range; outside it the nearest member can be
    # any size away (--params 100T was planned as 681B), so a target it cannot come near is refused.
    if abs(nearest.total_params / target - 1.0) > PARAMS_FAMILY_TOLERANCE:
        from planner.report.render import human_count
        sizes = sorted(m.total_params for m in family)
        raise PlannerInputError(f"--params {args.params}: the model family spans {human_count(sizes[0])} to "
                                f"{human_count(sizes[-1])} parameters and its nearest member is "
                                f"{human_count(nearest.total_params)}; give a size in that range, or --model for "
                                f"a shape of your own")
    return nearest


# How far from --params the family member planned may be: its largest gap between neighbours in range is ~10%
# (70B plans as 63.1B); beyond 25% the target is outside the family.
PARAMS_FAMILY_TOLERANCE = 0.25


def parse_frameworks(text: str | None) -> tuple[str, ...]:
    from planner.frameworks import check_framework_names
    from planner.search.layouts import DEFAULT_FRAMEWORKS
    if not text:
        return DEFAULT_FRAMEWORKS
    from planner.cli.arguments import comma_items

    names = tuple(comma_items(text, "--framework"))
    check_framework_names(names)
    return names


def _counts(args, cluster) -> list[int]:
    from planner.search.space import gpu_counts
    if args.gpus:
        counts = list(args.gpus)
    else:
        if not (args.deadline or args.budget):
            raise PlannerInputError("with --model/--params give --gpus N (or a list), or --tokens with --deadline or --budget")
        counts = gpu_counts(cluster.gpus_per_node, cluster.max_nodes, None, args.max_gpus)
    capacity = cluster.total_gpus
    if args.max_gpus and (above := [c for c in counts if c > args.max_gpus]):
        raise PlannerInputError(f"--gpus {above[0]} contradicts --max-gpus {args.max_gpus}")  # as the budget search says
    if above := [c for c in counts if c > capacity]:
        raise PlannerInputError(f"--gpus {above[0]}: more than the {capacity} GPUs of cluster {cluster.name!r} "
                                f"({cluster.max_nodes} nodes x {cluster.gpus_per_node})")
    return counts


def solve_fixed_model(args):
    from planner.specs import units
    from planner.search.budget import parse_budget, parse_deadline
    from planner.specs.clusters import load_cluster
    from planner.search.fixed_model import DEFAULT_KNEE, plan_fixed_model

    for flag in ("target_loss", "unique_tokens", "inference_tokens", "law"):
        if getattr(args, flag, None) is not None:
            raise PlannerInputError(f"--{flag.replace('_', '-')} applies to choosing a model; with --model/--params "
                                    "the model is fixed (give --tokens instead)")
    from planner.cli.arguments import training_dtype

    cluster = load_cluster(args.cluster, args.cluster_dir)
    training_dtype(args, cluster)
    model = load_model(args)
    tokens = units.parse_count(args.tokens, "--tokens") if args.tokens else None
    deadline_s = parse_deadline(args.deadline) if args.deadline else None
    budget_s = parse_budget(args.budget, cluster.price_per_accelerator_hour, cluster.name)[0] if args.budget else None
    if (deadline_s or budget_s) and not tokens:
        raise PlannerInputError("--deadline/--budget with --model need --tokens (how much to train) to turn steps into days")
    imbalance = getattr(args, "moe_load_imbalance", None)
    if imbalance is not None and not model.is_moe:
        raise PlannerInputError(f"--moe-load-imbalance applies to mixture-of-experts models ({model.name} is dense)")
    from planner.cli.optimize import search_hierarchy

    counts = _counts(args, cluster)
    if args.knee is not None and (deadline_s or budget_s or len(counts) < 2):
        # plan_fixed_model stops only a sweep at the knee: the choice was otherwise made without it.
        raise PlannerInputError("--knee: only stops a sweep of several --gpus counts; "
                                + ("here --deadline/--budget choose the count" if deadline_s or budget_s
                                   else "one count has no knee"))
    return plan_fixed_model(model, cluster, counts, tokens=tokens, global_batch=args.global_batch,
                            frameworks=parse_frameworks(args.framework), dtype=args.dtype, deadline_s=deadline_s,
                            budget_gpu_s=budget_s, knee=args.knee or DEFAULT_KNEE, batch_rule=args.batch_rule,
                            min_headroom=args.min_headroom or 0.0, hierarchy=search_hierarchy(args),
                            counts_listed=bool(args.gpus), grad_reduce_in_fp32=_grad_reduce(args),
                            **({} if imbalance is None else {"moe_load_imbalance": imbalance}))


def _grad_reduce(args) -> bool | None:
    """--grad-reduce-in-fp32 as the searches take it: None where not given."""
    value = getattr(args, "grad_reduce_in_fp32", None)
    return None if value is None else bool(value)


def check_outputs(args, more=()) -> None:
    """Every file the command will write is new (or --force), and no two outputs name one file, checked before the
    search: --all-layouts, the report's files (`more`) and the files --emit may write for any searched stack."""
    from planner.cli import report as report_cli
    from planner.io import check_distinct_outputs, check_new_outputs
    paths = [args.all_layouts] if args.all_layouts else []
    emitted = report_cli.launch_outputs(getattr(args, "emit", None), parse_frameworks(args.framework))
    check_distinct_outputs({"--all-layouts": paths, "--report": list(more), "--emit": emitted})
    check_new_outputs([*paths, *more, *emitted], args.force)


def emittable_layout(count, model, limit: int = 5000):
    """The fastest layout of `count` whose stack's launcher runs it as priced (planner.emit.launch_problems),
    or None: --emit writes that one, so the config never describes a plan the stack would refuse."""
    from planner.emit import EMITTABLE, launch_problems

    for i in count.search.order[:limit]:
        layout = count.search.layout(int(i))
        if layout.framework in EMITTABLE and not launch_problems(model, layout, count.search.cluster):
            return int(i), layout
    return None


def warn_chosen_outside_calibration(command: str, result) -> None:
    """The calibrated-spec warning (arguments.warn_outside_calibration) for the chosen layout's stack and dtype;
    nothing when no layout was chosen."""
    from planner.cli.arguments import warn_outside_calibration

    if result.chosen is not None and result.chosen.best is not None:
        layout = result.chosen.search.layout(result.chosen.best)
        warn_outside_calibration(command, result.cluster, layout.framework, layout.dtype)


def run_fixed_model(args) -> int:
    from planner.report.render import json_document

    from planner.cli.arguments import refuse_flags
    from planner.cli import report as report_cli
    refuse_flags(args, ("emit_deepspeed",), "with --model or --params give --emit DIR, which writes the chosen "
                                            "layout's launch files for its stack (--framework deepspeed for DeepSpeed)")
    report_paths = report_cli.report_outputs(args.report, fixed_model=True) if args.report else {}
    check_outputs(args, report_paths.values())
    result = solve_fixed_model(args)
    warn_chosen_outside_calibration("optimize", result)
    emitted = None
    if args.emit and result.chosen is not None:
        emitted = emittable_layout(result.chosen, result.model)
        if emitted is None:
            raise PlannerInputError(f"--emit: no layout of the chosen {result.chosen.gpus} GPUs is one a launcher "
                                    "(deepspeed, megatron, fsdp/torchtitan) runs for this model; see `planner "
                                    "simulate --emit` for the reasons")
    if args.json:
        print(json_document(result_json(result)))
    else:
        print(format_fixed_model(result))
    # Every output written together, all or nothing (report.PendingOutputs).
    pending = report_cli.PendingOutputs()
    if args.all_layouts:
        pending.add({args.all_layouts: layouts_csv(result).encode("utf-8")})
    if report_paths:
        report_cli.write_fixed_model_report(result, report_paths, args.force, pending)
    if emitted is not None:
        chosen = result.chosen
        index, layout = emitted
        if index != chosen.best:
            sys.stderr.write(f"note: --emit writes the fastest layout its launcher runs, "
                             f"{float(chosen.search.step_time_s[index]):.3f} s/step against the best "
                             f"{float(chosen.search.step_time_s[chosen.best]):.3f} s"
                             f"{emitted_limits_text(result, index)}\n")
        summary = (f"optimize --model: {result.model.name}, {chosen.gpus} GPUs of {result.cluster.name}, "
                   f"step {float(chosen.search.step_time_s[index]):.3f} s")
        report_cli.emit_launch(args.emit, result.model, layout, result.cluster, result.tokens, summary, args.force,
                               pending)
    pending.write(args.force)
    return 0 if result.chosen is not None else 1


def emitted_limits_text(result, index: int) -> str:
    """'; it misses the deadline: ...' when the --emit layout `index` of the chosen count (slower than the plan's
    where the plan's stack has no launcher for it) misses --deadline / --budget, which the plan meets; else empty."""
    from planner.report.runners_up import missed_limit_text
    from planner.search.fixed_model import layout_time_and_cost, missed_limits

    if not result.tokens:
        return ""
    spent = layout_time_and_cost(result.chosen.search, index, result.tokens)
    budget_h = result.assumptions["budget_gpu_hours"]
    missed = missed_limits(spent["days"], spent["gpu_hours"], result.assumptions["deadline_s"],
                           None if budget_h is None else budget_h * 3600.0)
    return (f"; it misses the {' and '.join(missed)}: "
            + "; ".join(missed_limit_text(limit, spent, result.assumptions) for limit in missed)) if missed else ""


def layouts_csv(result) -> str:
    out = io.StringIO()
    rows = [row for count in result.counts if count.search is not None for row in count.search.rows()]
    if not rows:
        return ""
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _count_json(count) -> dict:
    # "feasible": a layout fits at this count; "misses": the --deadline / --budget its plan still misses.
    return {"gpus": count.gpus, "feasible": count.feasible, "reason": count.reason, "misses": count.misses,
            "steps": count.steps, "trained_tokens": count.trained_tokens,
            "layouts_scored": 0 if count.search is None else len(count.search),
            "best": count.row, "goodput": None if count.search is None else count.search.goodput,
            "days": count.days, "days_band": count.days_band, "gpu_hours": count.gpu_hours,
            "cost_usd": count.cost_usd, "scaling_efficiency": count.scaling_efficiency}


def chosen_simulation(result) -> dict:
    """The cost model's full estimate of the chosen layout: the text's memory, step-part and memory-part lines
    and the JSON's breakdowns both read it."""
    from planner.cost.estimate import simulate

    return simulate(result.model, result.chosen.search.layout(result.chosen.best), result.cluster)


def _chosen_json(result) -> dict | None:
    """The chosen count, with the breakdowns the text prints: seconds per step part, bytes per memory part."""
    if result.chosen is None:
        return None
    sim = chosen_simulation(result)
    return {**_count_json(result.chosen),
            "memory": {"total_bytes": sim["memory"]["total_bytes"], "hbm_bytes": sim["memory"]["hbm_bytes"],
                       "parts_bytes": sim["memory_parts"]},
            "step_time_parts_s": sim["time"]}


def result_json(result) -> dict:
    from planner.search.fixed_model import fixed_model_hyperparameters

    return {
        "status": "ok" if result.chosen is not None else "infeasible",
        "model": {**result.model.model_dump(), "total_params": result.model.total_params},
        "cluster": result.cluster.name, "tokens": result.tokens,
        "chosen": _chosen_json(result),
        "hyperparameters": fixed_model_hyperparameters(result),
        # Other layouts at the chosen count within every limit given; those that miss the deadline or budget
        # apart, with "violates" (search.fixed_model.runners_up) and "meets_limits_at": the GPU count where the
        # fastest layout under the same restriction meets every limit given, or None with "counts_tried"
        # (search.fixed_model.where_restrictions_meet_limits).
        "runners_up": result.runners_up, "runners_up_set_aside": result.runners_up_set_aside,
        # Only when the chosen plan misses --deadline / --budget at the slow end of its step-time band: which, by
        # how much, and the count whose plan meets them there (search.fixed_model.where_the_band_meets_limits).
        "band_check": result.band_check, "further_searches": result.further_searches,
        "counts": [_count_json(c) for c in result.counts], "knee_gpus": result.knee_gpus,
        "explanation": result.explanation, "assumptions": result.assumptions,
    }


def _missed_mark(count, limit: str) -> str:
    """' (over deadline)' / ' (over budget)' beside a table cell whose count's plan misses that limit."""
    return f" (over {limit})" if limit in count.misses else ""


def _whole_steps_line(result) -> list[str]:
    """A note when the tokens asked are not a whole number of the chosen plan's global batches: the plan trains
    whole steps, so it trains (and is timed and priced for) more tokens than asked."""
    c = result.chosen
    if not result.tokens or c.trained_tokens is None or c.trained_tokens <= result.tokens * 1.001:
        return []
    from planner.report.render import human_count
    return [f"  note       {human_count(result.tokens)} tokens are {result.tokens / (c.trained_tokens / c.steps):.2f} "
            f"global batches of {human_count(c.trained_tokens / c.steps)} tokens: the plan trains {c.steps:,} whole "
            f"step(s), {human_count(c.trained_tokens)} tokens, and is timed and priced for them; a smaller "
            f"--global-batch trains closer to the tokens asked"]


def _limits_given_text(assumptions: dict) -> str:
    """'; deadline 90.0 days; budget 1,000,000 GPU-hours' for the limits given (--deadline, --budget), else empty: the
    header states what the plan is held to, as the budget plan's header does."""
    from planner.report.render import limits_given

    return "".join(f"; {limit}" for limit in limits_given(assumptions))


def format_fixed_model(result) -> str:
    from planner.report.render import human_amount, human_bytes, human_count, human_days, human_days_range, human_seconds
    from planner.report.render import layout_text, table
    from planner.report.runners_up import band_check_lines, runner_up_lines, searched_text
    from planner.specs.model import experts_summary

    m = result.model
    experts = f", {human_count(m.total_active_params)} active ({experts_summary(m)})" if m.is_moe else ""
    lines = [f"model {m.name}: {human_count(m.total_params)} params{experts}, L={m.layers} h={m.hidden} heads={m.heads}/{m.kv} "
             f"ffn={m.ffn_size} V={m.vocab} s={m.seq_len}; cluster {result.cluster.name}; stacks "
             f"{', '.join(result.assumptions['frameworks'])}; {result.assumptions['dtype']}"
             + (f"; {human_count(result.tokens)} tokens" if result.tokens else "") + _limits_given_text(result.assumptions)]
    lines.append(searched_text(result))
    skipped = [c for c in result.counts if c.search is None]
    if skipped:
        lines.append(f"skipped {len(skipped)} count(s) from {skipped[0].gpus} to {skipped[-1].gpus} GPUs without a search: "
                     f"{skipped[0].reason}")
    shown = [c for c in result.counts if c.search is not None]
    if len(shown) > 1 or (shown and not result.chosen):
        rows = []
        for c in shown:
            if not c.feasible:
                rows.append([str(c.gpus), c.reason or "-", "", "", "", "", "", "", ""])
                continue
            r = c.row
            knee = " <- knee" if result.knee_gpus == c.gpus else ""
            # The global batch (sequences) per row: without --global-batch each count rounds the batch law's
            # target to its own micro-batch x dp, so two rows can train different batches.
            rows.append([str(c.gpus), layout_text(r), str(r["global_batch"]), human_seconds(r["step_time_s"]),
                         f"{100 * r['mfu']:.1f}%",
                         f"{100 * c.scaling_efficiency:.0f}%{knee}",
                         "" if c.days is None else human_days(c.days) + _missed_mark(c, "deadline"),
                         "" if c.gpu_hours is None else human_amount(c.gpu_hours) + _missed_mark(c, "budget"),
                         "" if c.cost_usd is None else f"${human_amount(c.cost_usd)}"])
        lines += ["", table(["GPUs", "best layout", "batch", "step", "MFU", "scaling", "wall-clock", "GPU-h", "cost"],
                            rows, align="llrrrrrrr")]
    if result.chosen is None:
        return "\n".join(lines + ["", "no feasible plan:"] + [f"  {line}" for line in result.explanation])
    c = result.chosen
    r = c.row
    search = c.search
    sim = chosen_simulation(result)
    lines += ["", f"chosen: {c.gpus} GPUs", f"  layout     {layout_text(r)}, global batch {r['global_batch']}"
              + (" tp-overlap" if r["tp_comm_overlap"] else "") + (" dp-overlap" if r["dp_comm_overlap"] else ""),
              f"  speed      step {human_seconds(r['step_time_s'])}, {r['tokens_per_s']:,.0f} tokens/s, MFU "
              f"{100 * r['mfu']:.1f}%, goodput {100 * search.goodput:.1f}%",
              f"  memory     {human_bytes(sim['memory']['total_bytes'])} of {human_bytes(sim['memory']['hbm_bytes'])} "
              f"per GPU (headroom {human_bytes(sim['memory']['hbm_bytes'] - sim['memory']['total_bytes'])})"]
    from planner.cli.optimize import memory_risk_lines
    lines += memory_risk_lines(sim["memory"]["hbm_bytes"] - sim["memory"]["total_bytes"], sim["memory"]["hbm_bytes"])
    if c.days is not None:
        from planner.calibrate.error_bands import estimate_outside_band
        outside = estimate_outside_band(*c.days_band, c.days) if c.days_band else ""
        band = f" (band {human_days_range(*c.days_band)}{outside})" if c.days_band else ""
        cost = f", ${human_amount(c.cost_usd)}" if c.cost_usd else ""
        lines.append(f"  time/cost  {human_days(c.days)}{band}, {human_amount(c.gpu_hours)} GPU-hours{cost}")
        lines += _whole_steps_line(result)
        lines += band_check_lines(result)
    from planner.cli.optimize import hyperparameter_lines
    from planner.search.fixed_model import fixed_model_hyperparameters
    lines += hyperparameter_lines(fixed_model_hyperparameters(result))
    parts = sorted(((k, v) for k, v in sim["time"].items() if v > 0), key=lambda kv: -kv[1])
    lines.append("  step parts " + ", ".join(f"{k} {100 * v / sim['step_time_s']:.0f}%" for k, v in parts[:6]))
    memory = sorted(((k, v) for k, v in sim["memory_parts"].items() if v > 0), key=lambda kv: -kv[1])
    lines.append("  memory     " + ", ".join(f"{k} {human_bytes(v)}" for k, v in memory[:5]))
    return "\n".join(lines + runner_up_lines(result))


__all__ = ["add_fixed_model_arguments", "wants_fixed_model", "run_fixed_model", "solve_fixed_model", "parse_gpu_list"]
