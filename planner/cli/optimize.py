"""`planner optimize`: the best N, D, GPU count and layout under a budget, with runners-up and why."""

from __future__ import annotations

from planner.specs.clusters import DEFAULT_CLUSTER


def register(subparsers, name: str) -> None:
    from planner.cli.arguments import output_path

    parser = subparsers.add_parser(
        name, help="choose model size, tokens, GPUs and layout under a GPU-hour, money or loss target",
        description="Search model shapes x token counts x GPU counts x parallel layouts with the simulator and "
                    "a loss law; print the best plan, materially different runners-up and the loss-vs-time frontier.")
    add_optimize_arguments(parser)
    from planner.cli.fixed_model import add_fixed_model_arguments
    add_fixed_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--report", metavar="OUT.html", type=output_path,
                        help="also write the review document (OUT.html, OUT.md and OUT_figures/), as `planner report` does")
    parser.add_argument("--emit-deepspeed", metavar="DIR", type=output_path,
                        help="also write ds_config.json, Megatron-DeepSpeed arguments, a hostfile and launch.sh for a budget "
                             "plan (with --model or --params: --emit DIR, for the chosen layout's own stack)")
    parser.add_argument("--force", action="store_true", help="overwrite files written by --report/--emit-deepspeed/--emit/--all-layouts")
    parser.set_defaults(run=run)


def add_optimize_arguments(parser) -> None:
    """The problem flags (budget, cluster, law, constraints, training settings); shared with `planner report`."""
    from planner.cli.arguments import CLUSTER_DIR_HELP, RecordGiven, fraction, real_number, whole_number

    parser.add_argument("--budget", help="GPU-hours like '10000gpuh', or money like '$2M' (needs a cluster price)")
    parser.add_argument("--deadline", help="wall-clock limit like '14d' or '36h' (default 30d when choosing the model; with --model "
                                             "or --params none: the plan says how long the tokens take)")
    from planner.cli.fixed_model import parse_gpu_list
    parser.add_argument("--gpus", type=parse_gpu_list,
                        help="use exactly this many GPUs; with --model also a list '64,128' or a doubling range '256-8192'")
    parser.add_argument("--max-gpus", type=whole_number(), help="use at most this many GPUs")
    parser.add_argument("--cluster", default=DEFAULT_CLUSTER, help=f"cluster spec name or YAML path (default {DEFAULT_CLUSTER})")
    parser.add_argument("--cluster-dir", metavar="DIR", help=CLUSTER_DIR_HELP)
    parser.add_argument("--law", default=None, help="loss law name (see `planner laws`) or a law.yaml from `planner fit-law --out` (default epoch)")
    parser.add_argument("--unique-tokens", help="unique training data available, like '2T' (switches to the data-constrained law)")
    parser.add_argument("--target-loss", type=real_number(0.0, 20.0, low_open=True, high_open=True), help="instead of maximising quality, find the cheapest plan reaching this loss, in nats per token "
                             "like '2.1'")
    parser.add_argument("--inference-tokens", help="tokens to be served later, like '1T': minimise training + inference compute")
    parser.add_argument("--seq-len", type=whole_number(), default=4096, action=RecordGiven,
                        help="training sequence length in tokens (default 4096; with --model it replaces the model's)")
    # At least two tokens: with one there is nothing to predict (uniform guessing is 0 nats).
    parser.add_argument("--vocab", type=whole_number(2), default=32000, action=RecordGiven,
                        help="vocabulary size of the planned model (default 32000; with --model it replaces the model's)")
    from planner.cli.arguments import DTYPE_DEFAULT_HELP

    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp8", "fp32"],
                        help=f"training number format ({DTYPE_DEFAULT_HELP})")
    from planner.frameworks import DEFAULT_FRAMEWORKS, FRAMEWORK_NAMES

    stacks = ", ".join(f"{name} (a neutral stack with every ZeRO-3 option)" if name == "other" else name
                       for name in FRAMEWORK_NAMES)
    parser.add_argument("--framework", metavar="STACK[,STACK]",
                        help=f"training stacks whose layouts to search: {stacks} (default {','.join(DEFAULT_FRAMEWORKS)}); "
                             "the plan names the stack it chose")
    parser.add_argument("--flat-zero", action="store_true",
                        help="search flat ZeRO-3 only: without ZeRO++ hpZ or node-sized MiCS / HSDP shard groups, "
                             "which are tried by default where the data-parallel group spans nodes")
    parser.add_argument("--quantized-comm", action="store_true",
                        help="also try ZeRO++'s quantised collectives (qwZ int8 weight gathers, qgZ int4 gradient reduce); "
                             "off by default: the loss laws do not price their effect on training")
    parser.add_argument("--min-headroom", type=fraction(0.9), default=0.0, metavar="FRACTION",
                        help="HBM a plan must leave free, like '5%%' (default 0: the cost model's own reserves only; "
                             "plans under 5%% are flagged)")
    parser.add_argument("--batch-rule", default="step-law", choices=["step-law", "deepseek"],
                        help="optimal global batch law used to size and limit the batch (default step-law)")


def load_inputs(args):
    """Parse the flags into (cluster, law, constraints); shared with `planner report`."""
    from planner.search.budget import build_constraints
    from planner.errors import PlannerInputError
    from planner.specs.clusters import load_cluster
    from planner.laws.registry import DEFAULT_LAW, load_law

    from planner.cli.arguments import training_dtype

    cluster = load_cluster(args.cluster, args.cluster_dir)
    training_dtype(args, cluster)
    if args.gpus and len(args.gpus) > 1:
        raise PlannerInputError("--gpus: a list of counts sweeps a fixed model; give --model or --params with it "
                                "(choosing the model takes one count)")
    constraints = build_constraints(
        budget=args.budget, deadline=args.deadline, gpus=args.gpus[0] if args.gpus else None, max_gpus=args.max_gpus,
        unique_tokens=args.unique_tokens, target_loss=args.target_loss, inference_tokens=args.inference_tokens,
        price_per_gpu_hour=cluster.price_per_accelerator_hour, cluster_name=cluster.name,
        min_headroom=getattr(args, "min_headroom", 0.0) or 0.0)
    if args.seq_len <= 0 or args.vocab <= 0:
        raise PlannerInputError(f"--seq-len and --vocab must be positive, got {args.seq_len} and {args.vocab}")
    law = load_law(args.law or DEFAULT_LAW, constraints.unique_tokens)
    return cluster, law, constraints


def solve(args, inputs=None):
    """Parse the flags (or take loaded `inputs`), run the search; shared with `planner report`."""
    from planner.cli.progress import Progress
    from planner.search.optimize import optimize

    from planner.cli.fixed_model import parse_frameworks

    cluster, law, constraints = inputs or load_inputs(args)
    frameworks = parse_frameworks(getattr(args, "framework", None))
    # One unit: a (model shape, GPU count) cell scored; the search stops early when no cell left can win.
    with Progress(args.command, unit="cells", quiet=args.quiet) as progress:
        return optimize(cluster, law, constraints, dtype=args.dtype, batch_rule=args.batch_rule,
                        seq_len=args.seq_len, vocab=args.vocab, progress=progress,
                        hierarchy=search_hierarchy(args), frameworks=frameworks)


def result_json(result) -> dict:
    return {
        "status": result.status, "plan": result.plan, "alternatives": result.alternatives, "pareto": result.pareto,
        "dropped": result.dropped, "ruled_out_cells": result.ruled_out, "candidates_scored": result.scored,
        "combinations_skipped_invalid": result.skipped_invalid, "explanation": result.explanation,
        "assumptions": result.assumptions,
    }  # no elapsed time: the same problem must give byte-identical JSON (the human output shows it)


def run(args) -> int:
    from planner.cli import report as report_cli
    from planner.io import check_distinct_outputs, check_new_outputs
    from planner.report.render import json_document

    from planner.cli.fixed_model import run_fixed_model, wants_fixed_model
    if getattr(args, "moe", False):
        from planner.cli.moe_budget import run_moe_budget
        return run_moe_budget(args)
    if wants_fixed_model(args):
        return run_fixed_model(args)
    refuse_fixed_model_flags(args, "applies to a model already chosen (give --model or --params); the budget search "
                                   "chooses the model, its tokens and its batch")
    from planner.cli.fixed_model import parse_frameworks

    report_paths = report_cli.report_outputs(args.report) if args.report else {}
    # --emit writes the launch files of whichever searched stack the plan picks: each needs a launcher (refused
    # before the search, not after the plan), and none of their files may be in the way.
    frameworks = parse_frameworks(args.framework)
    if args.emit:
        from planner.emit import EMITTABLE
        from planner.errors import PlannerInputError
        missing = [name for name in frameworks if name not in EMITTABLE]
        if missing:
            raise PlannerInputError(f"--emit: no launch config for stack {', '.join(missing)}; search stacks that have "
                                    f"one (--framework {','.join(EMITTABLE)}) or drop --emit")
    launch_paths = report_cli.launch_outputs(args.emit, frameworks)
    check_distinct_outputs({"--report": list(report_paths.values()),
                            "--emit-deepspeed": report_cli.deepspeed_outputs(args.emit_deepspeed), "--emit": launch_paths})
    check_new_outputs([*report_paths.values(), *report_cli.deepspeed_outputs(args.emit_deepspeed), *launch_paths],
                      args.force)
    inputs = load_inputs(args)  # fills args.dtype with the cluster's default where it was not given
    if args.emit:
        from planner.emit import dtype_problems
        from planner.errors import PlannerInputError
        for name in frameworks:
            if problems := dtype_problems(name, args.dtype):
                raise PlannerInputError(f"--emit: {name}'s launch cannot train this plan's dtype ({problems[0]}); "
                                        "give another --dtype or --framework, or drop --emit")
    result = solve(args, inputs)
    emitted = emit_deepspeed_notes(args.emit_deepspeed, result)
    warn_plan_outside_calibration("optimize", inputs[0], result)
    if args.json:
        print(json_document(result_json(result) | emitted))
    else:
        print(format_result(result) + "".join(f"\nemit-deepspeed  {note}" for note in emitted.get("emit_deepspeed", {})
                                                                              .values()))
    # Every output written together, all or nothing (report.PendingOutputs).
    pending = report_cli.PendingOutputs()
    if args.report:
        report_cli.write_report(args, inputs, result, report_paths, sensitivity=True, pending=pending)
    if args.emit_deepspeed and result.status == "ok":
        report_cli.emit_plan(args.emit_deepspeed, result.plan, inputs[0], args.force, pending)
    if args.emit and result.status == "ok":
        report_cli.emit_plan_launch(args.emit, result.plan, inputs[0], args.force, pending)
    pending.write(args.force)
    return 0 if result.status == "ok" else 1


def warn_plan_outside_calibration(command: str, cluster, result) -> None:
    """The calibrated-spec warning (arguments.warn_outside_calibration) for a budget plan's stack and dtype;
    nothing when no plan was found."""
    from planner.cli.arguments import warn_outside_calibration

    if result.plan:
        warn_outside_calibration(command, cluster, result.plan["layout"]["framework"], result.plan["layout"]["dtype"])


def emit_deepspeed_notes(folder: str | None, result) -> dict:
    """{"emit_deepspeed": {"schedule_difference": ...}} when --emit-deepspeed writes a plan's files: they cannot run
    its WSD schedule (planner.emit.deepspeed.schedule_difference); empty otherwise."""
    if not folder or result.status != "ok":
        return {}
    from planner.emit.deepspeed import schedule_difference
    return {"emit_deepspeed": {"schedule_difference": schedule_difference(result.plan["tokens"])}}


# Flags of the fixed-model search (cli/fixed_model.py) that the budget search has no use for.
FIXED_MODEL_ONLY = ("tokens", "global_batch", "knee", "all_layouts", "moe_load_imbalance")
# ... and its 0/1 switches, whose 0 is a choice (refuse_flags' unset (None,)).
FIXED_MODEL_SWITCHES = ("grad_reduce_in_fp32",)


def refuse_fixed_model_flags(args, reason: str) -> None:
    """refuse_flags for every fixed-model flag (FIXED_MODEL_ONLY, and FIXED_MODEL_SWITCHES whose 0 counts as given)."""
    from planner.cli.arguments import refuse_flags

    refuse_flags(args, FIXED_MODEL_ONLY, reason)
    refuse_flags(args, FIXED_MODEL_SWITCHES, reason, unset=(None,))


def search_hierarchy(args) -> tuple:
    """The ZeRO-3 hierarchy choices --flat-zero / --quantized-comm ask the search to try."""
    from planner.errors import PlannerInputError
    from planner.search.space import hierarchy_choices

    flat, quantized = getattr(args, "flat_zero", False), getattr(args, "quantized_comm", False)
    if flat and quantized:
        raise PlannerInputError("--quantized-comm needs the ZeRO-3 hierarchy (ZeRO++), which --flat-zero turns off")
    if flat or quantized:
        # Accepted and ignored, these changed nothing for stacks without the options (--framework megatron).
        from planner.cli.fixed_model import parse_frameworks
        from planner.frameworks import FRAMEWORKS
        stacks = [FRAMEWORKS[name] for name in parse_frameworks(getattr(args, "framework", None))]
        flag, has = (("--quantized-comm", lambda fw: fw.zeropp) if quantized
                     else ("--flat-zero", lambda fw: fw.zeropp or fw.shard_groups))
        if not any(has(fw) for fw in stacks):
            offer = "ZeRO++'s quantised collectives" if quantized else "ZeRO++ hpZ or MiCS / HSDP shard groups"
            owners = ", ".join(name for name, fw in FRAMEWORKS.items() if has(fw))
            raise PlannerInputError(f"{flag}: none of the stacks searched ({', '.join(fw.name for fw in stacks)}) has "
                                    f"{offer}, so it would change nothing; these do: {owners}")
    return hierarchy_choices(flat=flat, quantized=quantized)


def hierarchy_text(lay: dict) -> str:
    """The ZeRO-3 hierarchy a plan uses (ZeRO++ hpZ / qwZ / qgZ, MiCS / HSDP shard group); empty when flat."""
    parts = [f"zero_hpz={lay['zero_hpz']}" if lay.get("zero_hpz", 1) > 1 else "",
             "qwZ" if lay.get("zero_quantized_weights") else "", "qgZ" if lay.get("zero_quantized_gradients") else "",
             f"shard_group={lay['shard_group']}" if lay.get("shard_group") else ""]
    return "".join(" " + p for p in parts if p)


def overlap_text(lay: dict) -> str:
    """The communication overlaps a plan's layout runs with, as ' (overlaps: ...)'; empty when none."""
    names = [name for key, name in (("dp_comm_overlap", "gradient reduce"), ("tp_comm_overlap", "tensor-parallel"))
             if lay.get(key)]
    return f" (overlaps: {', '.join(names)})" if names else ""


def _plan_lines(plan: dict) -> list[str]:
    from planner.report.render import binding_text, human_amount, human_bytes, human_count, human_days, human_seconds

    s, lay = plan["shape"], plan["layout"]
    cost = f", ${human_amount(plan['cost_usd'])}" if plan.get("cost_usd") else ""
    lines = [
        f"  model      {human_count(plan['params'])} params (law N {human_count(plan['law_params'])}): "
        f"{s['layers']} layers x {s['hidden']} hidden, {s['heads']} heads ({s['kv_heads']} kv), ffn {s['ffn']} {s['mlp']}, "
        f"vocab {s['vocab']}, seq {s['seq_len']}",
        f"  data       {human_count(plan['tokens'])} tokens ({plan['tokens_per_param']:.1f} per parameter), "
        f"{plan['steps']:,.0f} steps of {lay['global_batch']} sequences",
        f"  hardware   {plan['gpus']} GPUs on {plan['nodes']} node(s)",
        f"  layout     {lay['framework']}{overlap_text(lay)}: tp={lay['tp']} pp={lay['pp']} dp={lay['dp']} cp={lay['cp']} vpp={lay['vpp']} zero={lay['zero']} offload={lay['offload']} "
        f"micro_batch={lay['micro_batch']} grad_accum={lay['grad_accumulation']} recompute={lay['recompute']} "
        f"seq_parallel={int(lay['seq_parallel'])} {lay['dtype']}" + hierarchy_text(lay),
        f"  speed      step {human_seconds(plan['step_time_s'])}, {plan['tokens_per_s']:,.0f} tokens/s, "
        f"MFU {100 * plan['mfu']:.1f}% ({plan['tflops_per_gpu']:.0f} TFLOP/s per GPU), goodput {100 * plan['goodput']:.1f}%",
        *_band_lines(plan),
        f"  memory     {human_bytes(plan['memory_bytes'])} per GPU of {human_bytes(plan['hbm_bytes'])} "
        f"(headroom {human_bytes(plan['memory_headroom_bytes'])})",
        *memory_risk_lines(plan['memory_headroom_bytes'], plan['hbm_bytes']),
        f"  time/cost  {human_days(plan['wall_clock_days'])} wall-clock, {human_amount(plan['gpu_hours'])} GPU-hours{cost}"
        + (f" (incl. {human_amount(plan['inference_gpu_hours'])} GPU-hours for inference)"
           if plan.get("inference_gpu_hours") else ""),
        *([f"  binds      {binding_text(plan['binds'])}"] if plan.get("binds") else []),
        f"  loss       {plan['predicted_loss']:.3f} ({loss_band_text(plan)})",
        *hyperparameter_lines(plan.get("hyperparameters")),
        *loss_curve_lines(plan.get("loss_curve")),
    ]
    lines += [f"  warning    {w}" for w in plan.get("law_warnings", [])]
    return lines


def loss_band_text(plan: dict) -> str:
    """'80% band 2.042-2.105', or why there is none (a law with no uncertainty)."""
    if plan["loss_interval"] is None:
        return plan["loss_interval_basis"]
    return f"80% band {plan['loss_interval'][0]:.3f}-{plan['loss_interval'][1]:.3f}"


def memory_risk_lines(headroom_bytes: float, hbm_bytes: float) -> list[str]:
    """The risk line of a plan with under search.budget.MEMORY_RISK_FRACTION of HBM free (the report says the same)."""
    from planner.search.budget import memory_at_risk  # imported on use, as the CLI does: a fast --help

    if not memory_at_risk(headroom_bytes, hbm_bytes):
        return []
    from planner.report.render import human_bytes
    return [f"  risk       only {human_bytes(headroom_bytes)} ({100 * headroom_bytes / hbm_bytes:.1f}%) of HBM free: an "
            "allocator spike or a longer sequence may run out of memory; --min-headroom 5% plans with a margin"]


def hyperparameter_lines(hyper: dict | None) -> list[str]:
    """The plan's learning rate, schedule and batch from their laws (planner.laws.hyperparameters)."""
    if not hyper:
        return []
    from planner.report.render import human_count, ratio_text

    lr, schedule, batch = hyper["learning_rate"], hyper["schedule"], hyper["batch_size"]
    lines = [f"  training   peak LR {lr['peak']:.3g} ({lr['law']}), {schedule['kind'].upper()} schedule: warm-up "
             f"{100 * schedule['warmup_fraction']:.0f}%, cool-down {100 * schedule['cooldown_fraction']:.0f}% "
             f"({schedule['cooldown_shape']}); weight decay {hyper['weight_decay']['value']:g}; batch "
             f"{human_count(batch['planned_tokens'])} tokens ({ratio_text(batch['planned_over_optimal'])} "
             f"{batch['rule_name']}'s B_opt)"]
    return lines + [f"  warning    {w}" for w in hyper.get("validity_warnings", [])]


# Fractions of the tokens the text output shows (JSON has every point): early, mid, cool-down start, end.
CURVE_TEXT_FRACTIONS = (0.1, 0.25, 0.5, 0.8, 0.9, 1.0)


def loss_curve_lines(curve: dict | None) -> list[str]:
    """A few points of the plan's predicted loss curve (planner.laws.plan_curve), and what is anchored."""
    if not curve:
        return []
    from planner.report.render import human_count

    shown = [p for p in curve["points"] if any(abs(p["fraction"] - f) < 1e-9 for f in CURVE_TEXT_FRACTIONS)]
    text = ", ".join(f"{human_count(p['tokens'])} {p['loss']:.3f}" for p in shown)
    return [f"  curve      loss by tokens: {text} (cool-down from {100 * (1 - curve['schedule']['cooldown_fraction']):.0f}%)",
            f"             {curve['source']}",
            *[f"  warning    {w}" for w in curve["warnings"]]]


def _band_lines(plan: dict) -> list[str]:
    """The step-time band (the cluster's calibration, else the published runs), and what it means for tokens or days."""
    band = plan.get("step_time_band")
    if not band:
        return []
    from planner.calibrate.error_bands import band_origin, estimate_outside_band
    from planner.report.render import human_amount, human_count, human_days_range, human_seconds

    text = (f"  band       step {human_seconds(band['low_s'])}-{human_seconds(band['high_s'])} (90%, "
            f"{band_origin(band)})")
    if plan.get("tokens_band"):
        low, high = plan["tokens_band"]
        # A slower step trains fewer tokens in whatever binds the plan: its budget, or its deadline.
        bound = "deadline" if plan.get("binds", {}).get("constraint") == "deadline" else "budget"
        text += f": {human_count(low)}-{human_count(high)} tokens in the {bound}"
    elif plan.get("wall_clock_days_band"):
        low, high = plan["wall_clock_days_band"]
        text += (f": {human_days_range(low, high)}, {human_amount(plan['gpu_hours_band'][0])}-"
                 f"{human_amount(plan['gpu_hours_band'][1])} GPU-hours")
    return [text + estimate_outside_band(band["low_s"], band["high_s"], plan["step_time_s"])]


def _off_frontier_lines(result) -> list[str]:
    """Why the chosen plan can sit beside the frontier (a row at its GPUs and wall-clock with a loss lower by
    <0.1%): the selection rule (search.selection.select), which the review explains and the text did not."""
    from planner.search.selection import LOSS_TIE_RELATIVE

    plan = result.plan
    if result.assumptions.get("target_loss") or any(
            p["gpus"] == plan["gpus"] and p["predicted_loss"] == plan["predicted_loss"] for p in result.pareto):
        return []
    return [f"the chosen plan is not a row here: losses within {100 * LOSS_TIE_RELATIVE:g}% of the lowest count as "
            "equal (far inside the law's own band), and among them the shortest wall-clock at the slow end of its "
            "step-time band wins; the plan is chosen among runs that spend what the budget and deadline allow, the "
            "frontier's rows also among runs stopped sooner"]


def format_result(result) -> str:
    from planner.report.render import human_amount, human_count, human_days, table
    from planner.search.space import layout_space_text

    a = result.assumptions
    budget = (f"{human_amount(a['budget_gpu_hours'])} GPU-hours" if a["budget_gpu_hours"] else "none") + (
        f" (${human_amount(a['budget_usd'])})" if a["budget_usd"] else "")
    lines = [
        f"cluster {a['cluster']} ({a['calibration']}); law {a['law']} ({a['law_source']}; N = {a['law_n_definition']} params)",
        f"budget {budget}; deadline {human_days(a['deadline_s'] / 86400)}{' (default)' if a['deadline_is_default'] else ''}"
        + (f"; target loss {a['target_loss']}" if a["target_loss"] else "")
        + (f"; unique tokens {human_count(a['unique_tokens'])}" if a["unique_tokens"] else "")
        + (f"; inference tokens {human_count(a['inference_tokens'])}" if a["inference_tokens"] else "")
        + f"; {a['dtype']}, seq {a['seq_len']}",
        f"searched {result.scored:,} candidate layouts over {a['models_searched']} model shapes "
        f"({human_count(a['model_size_range'][0])}-{human_count(a['model_size_range'][1])} params) in {result.elapsed_s:.1f} s",
        layout_space_text(a["layout_space"]),
        "",
    ]
    if result.status != "ok":
        lines.append("no feasible plan:")
        lines += [f"  {line}" for line in result.explanation]
        return "\n".join(lines)
    lines.append("chosen plan")
    lines += _plan_lines(result.plan)
    if result.alternatives:
        lines += ["", "runners-up"]
        rows = [[alt["label"], human_count(alt["params"]), human_count(alt["tokens"]), alt["gpus"],
                 f"{alt['layout']['framework']} tp{alt['layout']['tp']} pp{alt['layout']['pp']} z{alt['layout']['zero']}",
                 f"{100 * alt['mfu']:.0f}%", human_days(alt['wall_clock_days']), human_amount(alt["gpu_hours"]),
                 f"{alt['predicted_loss']:.3f}", alt["binds"]["constraint"]] for alt in result.alternatives]
        # What binds each runner-up (search.plan_record.binding): the constraint only; --json has the whole record.
        lines.append(table(["", "N", "D", "GPUs", "layout", "MFU", "wall-clock", "GPU-h", "loss", "binds"], rows,
                           align="lrrrlrrrrl"))
        if any(alt.get("inference_gpu_hours") for alt in result.alternatives):
            lines.append("GPU-h includes serving the inference tokens (GPUs x wall-clock is the training alone)")
    if result.pareto:
        lines += ["", "loss vs wall-clock frontier (no plan is both faster and better)"]
        rows = [[human_days(p["wall_clock_days"]), p["gpus"], human_count(p["params"]), human_count(p["tokens"]),
                 f"{p['predicted_loss']:.3f}"] for p in result.pareto]
        lines.append(table(["wall-clock", "GPUs", "N", "D", "loss"], rows, align="rrrrr"))
        lines += _off_frontier_lines(result)
    dropped = ", ".join(f"{count:,} {reason}" for reason, count in result.dropped.items() if count)
    lines += ["", f"dropped: {dropped or 'none'}"]
    return "\n".join(lines)
