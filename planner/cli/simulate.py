"""`planner simulate`: one configuration -> step time, memory verdict and their breakdowns.

Exit 0 when the layout fits in memory, 1 when it does not (the breakdown still prints), 2 on bad input.
The configuration is read by cli.configuration and the text rendered by cli.simulation_text.
"""

from __future__ import annotations

import sys

from planner.cli.configuration import add_config_arguments, add_moe_arguments, resolve_configuration
from planner.cli.simulation_text import format_simulation
from planner.errors import PlannerInputError


def register(subparsers, name: str) -> None:
    from planner.cli.arguments import output_path

    parser = subparsers.add_parser(name, help="simulate one configuration: step time, memory, fits or not",
                                   description="Simulate one training configuration on a cluster.")
    add_config_arguments(parser)
    add_moe_arguments(parser)
    parser.add_argument("--checkpoint-mode", choices=["sync", "async", "in-memory"],
                        help="how the job checkpoints, for the goodput line: training stops for the whole write "
                             "(sync), only for the copy to host memory (async: MegaScale's two-stage checkpoint) or "
                             "restores from host memory too (in-memory); default: the cluster spec's reliability.checkpoint")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--infer", action="store_true",
                        help="fill the settings not given (micro-batch, recompute, vpp, sequence parallelism, flash "
                             "attention) with the fastest that fits, and say which were inferred; a --framework not "
                             "given is 'other', the neutral stack (the stack is the run's, not a setting to tune)")
    parser.add_argument("--list-models", action="store_true", help="list model presets and exit")
    emit = parser.add_mutually_exclusive_group()
    emit.add_argument("--emit", metavar="DIR", type=output_path,
                      help="also write the launch config of the layout's --framework: deepspeed (ds_config.json, "
                           "Megatron-DeepSpeed arguments, launch.sh), megatron (Megatron-LM arguments, launch.sh) or "
                           "fsdp (torchtitan job_config.toml, launch.sh); refused when that stack cannot run the layout; written, with a "
                           "warning and exit 1, for a layout the model says does not fit (launch.sh says 'fits: NO')")
    emit.add_argument("--emit-deepspeed", metavar="DIR", type=output_path,
                      help="also write ds_config.json, Megatron-DeepSpeed arguments, a hostfile and launch.sh for this "
                           "layout whatever its framework (what that stack cannot run, or a layout that does not fit, "
                           "is a warning)")
    parser.add_argument("--force", action="store_true", help="overwrite files written by --emit/--emit-deepspeed")
    parser.set_defaults(run=run)


def _refuse_configuration_with_list_models(args) -> None:
    """--list-models prints the presets and simulates nothing: a configuration flag beside it is refused, not ignored
    (helper-found: `--list-models --config FILE --gpus 8` exited 0)."""
    from planner.cli.arguments import refuse_flags
    from planner.cli.configuration import LAYOUT_KEYS, MODEL_KEYS, OTHER_KEYS

    refuse_flags(args, ("config", *OTHER_KEYS, *MODEL_KEYS, *LAYOUT_KEYS, "emit", "emit_deepspeed", "infer"),
                 "--list-models lists the presets and simulates nothing; drop one or the other")


def run(args) -> int:
    from planner.cost.estimate import simulate
    from planner.specs.model import PRESETS
    from planner.report.render import human_count, json_document

    if args.list_models:
        _refuse_configuration_with_list_models(args)
        if args.json:
            print(json_document({"models": {name: {**spec.model_dump(), "params": spec.total_params}
                                            for name, spec in PRESETS.items()}}))
            return 0
        for name, spec in sorted(PRESETS.items()):
            print(f"{name:18} {human_count(spec.total_params):>7} params  L={spec.layers} h={spec.hidden} "
                  f"heads={spec.heads}/{spec.kv} ffn={spec.ffn_size} {spec.mlp} V={spec.vocab} s={spec.seq_len}")
        return 0
    model, layout, cluster, _ = resolve_configuration(args)
    if args.emit_deepspeed and model.is_moe:
        # The DeepSpeed files describe a dense GPT: an MoE model's experts, ep and etp would be silently dropped.
        raise PlannerInputError(f"--emit-deepspeed: the DeepSpeed files describe a dense GPT, not {model.name}'s "
                                f"experts; use --emit DIR with --framework megatron")
    # The launch saves checkpoints as the goodput below is priced: --checkpoint-mode where given (the check before
    # simulating judged the spec's own mode, refusing `--checkpoint-mode sync` on an in-memory spec).
    launch_cluster = cluster
    if getattr(args, "checkpoint_mode", None):
        launch_cluster = cluster.model_copy(update={"reliability": cluster.reliability.model_copy(
            update={"checkpoint_mode": args.checkpoint_mode})})
    if args.emit or args.emit_deepspeed:
        from planner.cli.report import deepspeed_outputs, launch_outputs
        from planner.io import check_new_outputs

        if args.emit:
            from planner.emit import check_emittable

            check_emittable(model, layout, launch_cluster)  # before simulating: a stack that cannot run it is bad input
        check_new_outputs([*deepspeed_outputs(args.emit_deepspeed), *launch_outputs(args.emit, [layout.framework])],
                          args.force)
    from planner.calibrate.error_bands import interval

    from planner.cost.goodput import goodput_summary

    from planner.cli.arguments import warn_outside_calibration

    warn_outside_calibration("simulate", cluster, layout.framework, layout.dtype)
    result = simulate(model, layout, cluster)
    result["step_time_band"] = interval(result["step_time_s"], layout.framework, cluster)
    result["goodput"] = goodput_summary(model.total_params, layout.gpus, cluster, getattr(args, "checkpoint_mode", None),
                                        framework=layout.framework, evaluation_fraction=result["evaluation_fraction"])
    result["inferred"] = getattr(args, "inferred", {})
    result["switched_off"] = getattr(args, "switched_off", [])
    if args.json:
        from planner.specs.layout import settings_used

        print(json_document({**result, "model": model.model_dump(), "params": model.total_params,
                       "layout": settings_used(layout), "gpus": layout.gpus, "cluster": cluster.name,
                       "calibration": cluster.calibration}))
    else:
        print(format_simulation(model, layout, cluster, result))
    if args.emit or args.emit_deepspeed:
        from planner.cli.report import emit_deepspeed, emit_launch

        summary = (f"simulated: {human_count(model.total_params)} params, {layout.gpus} GPUs of {cluster.name}, "
                   f"step {result['step_time_s']:.3g} s, fits: {'yes' if result['fits'] else 'NO'}")
        if not result["fits"]:
            flag = "--emit" if args.emit else "--emit-deepspeed"
            print(f"warning: {flag}: the layout does not fit (fits: NO above); its files are written for you to "
                  "change, and launch.sh says so", file=sys.stderr)
        if args.emit:
            emit_launch(args.emit, model, layout, launch_cluster, None, summary, args.force)
        else:
            emit_deepspeed(args.emit_deepspeed, model, layout, launch_cluster, None, summary, args.force)
    return 0 if result["fits"] else 1
