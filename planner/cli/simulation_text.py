"""`planner simulate`'s text output: the model, cluster and layout lines, the step time and its band, goodput,
the time and memory tables and the memory verdict.

Its own module because it only renders a simulation result (cli.simulate computes it).
"""

from __future__ import annotations

def _hierarchy_text(layout) -> str:
    """The ZeRO-3 hierarchy settings that differ from flat ZeRO-3, as ' zero_hpz=16 ...' (empty when none)."""
    parts = [f"{key}={int(value)}" for key, value in (
        ("zero_hpz", layout.zero_hpz if layout.zero_hpz > 1 else None),
        ("qwZ", layout.zero_quantized_weights or None), ("qgZ", layout.zero_quantized_gradients or None),
        ("shard_group", layout.shard_group), ("grad_shard_group", layout.grad_shard_group)) if value]
    return "".join(" " + p for p in parts)


def _inferred_text(inferred: dict) -> str:
    """The settings --infer filled, and on what ground: the fastest that fits, or (cost/infer.py) when no choice
    fits, the one that needs the least memory."""
    settings = ", ".join(f"{k}={v}" for k, v in inferred.items() if k not in ("inferred_fits", "framework"))
    ground = ("none fits: the one needing the least memory" if inferred.get("inferred_fits") is False
              else "the fastest that fits")
    text = f"inferred {settings} ({ground})" if settings else ""
    if "framework" in inferred:  # not chosen among stacks: the neutral one (cost/infer.py)
        stack = f"framework={inferred['framework']} (none given: the neutral stack)"
        text = f"{text}; {stack}" if text else f"inferred {stack}"
    return text


def goodput_text(g: dict) -> str:
    """The goodput line: the effective training time and the failures and checkpoints it rests on."""
    from planner.report.render import human_bytes, human_days, human_seconds

    span = lambda seconds: human_days(seconds / 86400.0)  # noqa: E731
    stall = (f"stalls {human_seconds(g['checkpoint_stall_s'])} (copy to host), persists in {span(g['checkpoint_write_s'])}"
             if g["checkpoint_mode"] != "sync" else f"stalls {span(g['checkpoint_write_s'])}")
    paced = g["checkpoint_mode"] != "sync" and g["checkpoint_interval_s"] <= g["checkpoint_write_s"]
    cadence = "each waits for the last to persist" if paced else "Young/Daly"
    return (f"goodput {100 * g['goodput']:.1f}% (effective training time): {g['expected_failures_per_day']:.2f} failures "
            f"a day (job MTBF {span(g['job_mtbf_s'])}, restart {span(g['restart_s'])}); {g['checkpoint_mode']} checkpoint "
            f"of {human_bytes(g['checkpoint_bytes'])} every {span(g['checkpoint_interval_s'])} ({cadence}), {stall}"
            + (f"; evaluation {100 * g['evaluation_fraction']:.2f}% of training time ({g['eval_iters']:g} forward-only "
               f"iterations every {g['eval_interval_steps']:g} steps)" if g.get("evaluation_fraction") else ""))


def format_simulation(model, layout, cluster, result: dict) -> str:
    """What `planner simulate` prints for one configuration: the model, cluster and layout lines, the step time
    and what qualifies it, the time and memory tables, the memory verdict and the offload lines."""
    from planner.report.render import human_seconds, table

    step = result["step_time_s"]
    time_rows = [[name, human_seconds(value), f"{100 * value / step:5.1f}%"]
                 for name, value in result["time"].items() if value > 0]
    band_text = _band_text(result.get("step_time_band"), result["step_time_s"])
    lines = [
        _model_line(model),
        f"cluster  {cluster.name} ({cluster.accelerator.name}); {cluster.calibration}",
        # With the expert grid of an MoE model at its end.
        _layout_line(layout) + _moe_layout_text(model, layout),
        "",
        f"step time {human_seconds(step)}   tokens/s {result['tokens_per_s']:,.0f}   "
        f"TFLOP/s per GPU {result['tflops_per_gpu']:.1f}   MFU {100 * result['mfu']:.1f}%   HFU {100 * result['hfu']:.1f}%",
        *([band_text.strip()] if band_text else []),
        *([_inferred_text(result["inferred"])] if result.get("inferred") else []),
        *(f"note: {text}" for text in result.get("switched_off", [])),
        *([goodput_text(result["goodput"])] if result.get("goodput") else []),
        "",
        table(["time part", "seconds", "share"], time_rows),
        "",
        table(["memory per GPU", "bytes"], _memory_rows(result["memory_parts"], result["memory"])),
        *_peak_phase_lines(result["memory"]),
        _memory_verdict(result),
        *_offload_lines(result["memory"]),
    ]
    return "\n".join(lines)


def _memory_rows(parts: dict, memory: dict) -> list:
    """The memory table's rows: each part held per GPU, then the total."""
    from planner.report.render import human_bytes

    memory_rows = [[name, human_bytes(value)] for name, value in parts.items() if value > 0]
    memory_rows.append(["total", human_bytes(memory["total_bytes"])])
    return memory_rows


def _peak_phase_lines(memory: dict) -> list:
    """simulate's `peak:` line (report.render.peak_phase_text), where the stack frees its gradients after each step."""
    from planner.report.render import peak_phase_text

    text = peak_phase_text(memory)
    return [f"peak: {text}"] if text else []


def _memory_verdict(result: dict) -> str:
    """Whether the configuration fits: the headroom left, or what does not fit (HBM, or the node's host memory
    or NVMe for what offload moves off the GPUs) and what to try."""
    from planner.report.render import human_bytes

    memory = result["memory"]
    if result["fits"]:
        return f"fits: yes ({human_bytes(memory['hbm_bytes'] - memory['total_bytes'])} headroom of {human_bytes(memory['hbm_bytes'])} HBM)"
    if not memory["hbm_fits"]:
        return (f"fits: NO - needs {human_bytes(memory['total_bytes'])} per GPU, HBM is {human_bytes(memory['hbm_bytes'])}"
                f" (short by {human_bytes(memory['shortfall_bytes'])}); try more tp/pp, a higher ZeRO stage,"
                f" recompute, a smaller micro-batch, or offload")
    # HBM holds it; what offload moves off the GPUs does not fit the node (lines below)
    tier = "host memory" if not memory["host_fits"] else "NVMe"
    return (f"fits: NO - fits in HBM, but the offloaded states exceed the node's {tier}; spread them over more "
            f"nodes or offload less")


def _band_text(band: dict | None, step_time_s: float) -> str:
    """The step time's 90% band, where it comes from, and whether it holds the estimate (empty without a band)."""
    from planner.calibrate.error_bands import band_origin, estimate_outside_band
    from planner.report.render import human_seconds

    return (f"   90% band {human_seconds(band['low_s'])} - {human_seconds(band['high_s'])} "
            f"({band_origin(band)}){estimate_outside_band(band['low_s'], band['high_s'], step_time_s)}") if band else ""


def _model_line(model) -> str:
    """The model line: parameters (active ones and the experts for MoE) and the shape."""
    from planner.report.render import human_count
    from planner.specs.model import experts_summary

    experts = f" ({human_count(model.total_active_params)} active: {experts_summary(model)})" if model.is_moe else ""
    return (f"model    {model.name}: {human_count(model.total_params)} params{experts}, L={model.layers} h={model.hidden} "
            f"heads={model.heads}/{model.kv} ffn={model.ffn_size} {model.mlp} {model.norm}{'+bias' if model.bias else ''} "
            f"V={model.vocab}{' tied' if model.tied_embeddings else ''} s={model.seq_len}"
            + (f" window={model.attention_window}" if model.attention_window else "")
            + (f" dropout={model.dropout:g}" if model.dropout else ""))


def _layout_line(layout) -> str:
    """The layout line: parallel sizes, ZeRO, batch, recompute, dtype, stack and overlaps, the fp8 options and the
    ZeRO-3 hierarchy where set."""
    fp8_params = (" fp8_param_gather=1" if layout.fp8_param_gather else "") + (
        f" fp8_recipe={layout.fp8_recipe_used}" if layout.dtype == "fp8" and layout.fp8_recipe_used != "delayed" else "")
    return (f"layout   gpus={layout.gpus} tp={layout.tp} pp={layout.pp} dp={layout.dp} cp={layout.cp} vpp={layout.vpp} "
            f"zero={layout.zero} offload={layout.offload} micro_batch={layout.micro_batch} global_batch={layout.global_batch} "
            f"(grad accumulation {layout.grad_accumulation}) recompute={layout.recompute} sp={int(layout.seq_parallel)} "
            f"dtype={layout.dtype} flash={int(layout.flash_attention_on)} framework={layout.framework} "
            f"tp_comm_overlap={int(layout.tp_comm_overlap_on)} dp_comm_overlap={int(layout.dp_comm_overlap_on)}"
            + (" partition_activations=1" if layout.partition_activations_on else "") + fp8_params
            + (" loss_fusion=1" if layout.loss_fusion else "") + _hierarchy_text(layout) + _end_stages_text(layout))


def _end_stages_text(layout) -> str:
    """' first_stage_layers=16 last_stage_layers=13' where the layout sets them (empty otherwise)."""
    return "".join(f" {name}={value}" for name, value in (("first_stage_layers", layout.first_stage_layers),
                                                          ("last_stage_layers", layout.last_stage_layers))
                   if value is not None)


def _moe_layout_text(model, layout) -> str:
    """The expert grid of an MoE model, as ' ep=8 etp=1 ...' (empty for a dense model)."""
    if not model.is_moe:
        return ""
    moe_layout = f" ep={layout.ep} etp={layout.expert_tp} edp={layout.expert_dp} a2a_overlap={layout.moe_a2a_overlap}"
    # Shown where tokens are capped, given or the stack's default (DeepSpeed's 1.0), so a dropless header reads as
    # before.
    if layout.moe_capacity_factor_used is not None:
        moe_layout += (f" capacity={layout.moe_capacity_factor_used:g}{' padded' if layout.moe_pad_to_capacity_used else ''}"
                       + ("" if layout.moe_capacity_factor is not None else f" ({layout.framework} default)"))
    if layout.moe_node_dispatch_used and model.node_limited_routing:  # where it can change the bytes
        moe_layout += " node-dispatch"
    return moe_layout


def _offload_lines(memory: dict) -> list:
    """What offload keeps per node in host memory and on NVMe, and whether it exceeds the node's."""
    from planner.report.render import human_bytes

    lines = []
    if memory["host_bytes_per_node"] > 0:
        lines.append(f"host memory per node for offload: {human_bytes(memory['host_bytes_per_node'])}"
                     f"{'' if memory['host_fits'] else ' - exceeds the node host memory'}")
    if memory["nvme_bytes_per_node"] > 0:
        lines.append(f"NVMe per node for offload: {human_bytes(memory['nvme_bytes_per_node'])}"
                     f"{'' if memory.get('nvme_fits', True) else ' - exceeds the node NVMe capacity'}")
    return lines
