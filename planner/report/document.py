"""The capacity-planning review as a document: HTML (figures embedded) and its Markdown twin.

`document(review)` lays the review out as a list of blocks (headings, paragraphs, tables, figures)
with every number already formatted; planner/report/typeset.py only typesets those blocks
(`to_html`, `to_markdown`), so the two files always say the same thing. Nothing is computed here:
planner/report/review.py and planner/report/sensitivity.py build the data, planner/report/plots.py
draws the figures.
"""

from __future__ import annotations

from planner import __version__
from planner.report.render import (binding_text, human_amount, human_bytes, human_count, human_days, human_days_range,
                                   human_seconds, layout_text, peak_phase_text, ratio_text)

GIB = 2.0**30
FIGURES = ("isoflop", "loss_curve", "frontier", "memory", "step_time", "scaling")
# The layouts are render.layout_text's, as the CLI prints them; the document spells its abbreviations out.
LAYOUT_LEGEND = ("Layouts: the training stack, then the tensor (tp), pipeline (pp; vpp interleaved stages), context (cp) "
                 "and data (dp) parallel sizes; z = ZeRO stage, mb = micro-batch, rc = recompute, sp = sequence "
                 "parallelism.")


def _layout(lay: dict) -> str:
    """A budget plan's layout as every command names one (render.layout_text). Budget plans are dense models
    (search/space.py has no expert grid), so their Layout fields' ep 1 is no expert parallelism."""
    return layout_text({**lay, "ep": None})


def _loss_with_band(loss: float, low: float | None, high: float | None) -> str:
    """'2.067 [2.042-2.105]'; the loss alone when the law carries no uncertainty (low and high None)."""
    return f"{loss:.3f}" if low is None else f"{loss:.3f} [{low:.3f}-{high:.3f}]"


def _loss_header(law: dict) -> str:
    return "loss [80% band]" if law["has_band"] else "loss (no interval)"


def _money(value) -> str:
    return f"${human_amount(value)}" if value else "-"


def _delta(new: float, old: float) -> str:
    return f"{100 * (new / old - 1):+.0f}%" if old else "-"


def _loss_delta(new: float, old: float) -> str:
    return "same" if abs(new - old) < 5e-4 else f"{new - old:+.3f}"


def _budget_text(c: dict) -> str:
    if not c["budget_gpu_hours"]:
        return f"target loss {c['target_loss']}"
    money = f" (${human_amount(c['budget_usd'])})" if c["budget_usd"] else ""
    return f"{human_amount(c['budget_gpu_hours'])} GPU-hours{money}"



def _evaluation_text(plan: dict) -> str:
    """' and evaluation (...)': the launch's evaluation passes goodput counts (the plan's `evaluation`), if any."""
    evaluation = plan.get("evaluation")
    if not evaluation or not evaluation["fraction"]:
        return ""
    return (f" and evaluation ({evaluation['iters']:g} forward-only iterations every {evaluation['interval_steps']:g} "
            f"steps: {100 * evaluation['fraction']:.2f}% of training time)")


def _serving_split(review: dict, plan: dict) -> str:
    """' (X training, Y serving the T inference tokens)' where the plan's GPU-hours include serving
    (--inference-tokens), so that GPUs x days, which is the training alone, reads against the total."""
    serving = plan.get("inference_gpu_hours") or 0.0
    if not serving:
        return ""
    tokens = review["constraints"].get("inference_tokens")
    served = f"{human_count(tokens)} " if tokens else ""
    return (f" ({human_amount(plan['gpu_hours'] - serving)} training, {human_amount(serving)} serving the {served}"
            "inference tokens)")


def summary_blocks(review: dict) -> list:
    plan, cl = review["plans"][0], review["cluster"]
    s, lay = plan["shape"], plan["layout"]
    text = (f"**{human_count(plan['params'])} parameters** ({s['layers']} layers x {s['hidden']} hidden) trained "
            f"on **{human_count(plan['tokens'])} tokens** ({plan['tokens_per_param']:.1f} tokens per parameter) using "
            f"**{plan['gpus']} {cl['accelerator']} GPUs** ({plan['nodes']} nodes) for **{human_days(plan['wall_clock_days'])}**: "
            f"{human_amount(plan['gpu_hours'])} GPU-hours{_serving_split(review, plan)}"
            f"{', ' + _money(plan['cost_usd']) if plan['cost_usd'] else ''}. "
            f"Predicted final loss **{plan['predicted_loss']:.3f}** nats/token ("
            + (plan["loss_interval_basis"] if plan["loss_interval"] is None else
               f"law's 80% band {plan['loss_interval'][0]:.3f}-{plan['loss_interval'][1]:.3f}") + ").")
    facts = [
        f"What binds: {binding_text(plan['binds'])}.",
        f"Layout: {_layout(lay)}, grad. accum. {lay['grad_accumulation']}; global batch {lay['global_batch']} sequences "
        f"({human_count(lay['global_batch'] * s['seq_len'])} tokens), {plan['steps']:,.0f} steps.",
        f"Speed: {human_seconds(plan['step_time_s'])} per step, {plan['tokens_per_s']:,.0f} tokens/s, "
        f"MFU {100 * plan['mfu']:.1f}% ({plan['tflops_per_gpu']:.0f} TFLOP/s per GPU), goodput {100 * plan['goodput']:.1f}% "
        f"after failures, checkpoints{_evaluation_text(plan)}.",
        f"Memory: {human_bytes(plan['memory_bytes'])} of {human_bytes(plan['hbm_bytes'])} HBM per GPU "
        f"({human_bytes(plan['memory_headroom_bytes'])} headroom)." + memory_risk(plan, review["memory_risk_fraction"]),
        (f"Cost model: **calibrated** ({cl['calibration']})." if cl["calibrated"] else
         "Cost model: **not calibrated**: the cluster spec's default efficiencies, published measurements where its "
         "efficiency block cites one, assumptions elsewhere.")
        + " Step times are predictions; see Sensitivity and Uncertainty.",
    ]
    best = review["lowest_loss"]
    # Only when the search minimised loss: with a target loss it minimised cost, and the frontier's lowest loss
    # is a far costlier plan, not one tied with the chosen one.
    if best and review["constraints"].get("target_loss") is None and best["predicted_loss"] < plan["predicted_loss"] - 5e-4:
        facts.append(f"Why not the lowest loss: {best['predicted_loss']:.3f} is reachable with {best['gpus']} GPUs in "
                     f"{human_days(best['wall_clock_days'])}; losses within 0.1% count as equal (far inside the law's "
                     "band), and among them the shorter wall-clock at the slow end of each plan's step-time band wins.")
    facts += logistics_facts(review)
    facts += [f"Warning: {w}" for w in plan.get("law_warnings", [])]
    return [("p", text), ("list", facts)]


def memory_risk(plan: dict, fraction: float) -> str:
    """The risk optimize flags when under `fraction` of HBM is left free (search.budget.MEMORY_RISK_FRACTION)."""
    headroom, hbm = plan["memory_headroom_bytes"], plan["hbm_bytes"]
    if headroom >= fraction * hbm:
        return ""
    return (f" **Risk:** only {100 * headroom / hbm:.1f}% of HBM free: an allocator spike or a longer sequence may "
            f"run out of memory; `--min-headroom {100 * fraction:g}%` plans with a margin.")


def _failures(expected: float) -> str:
    """The expected failures of a run: one decimal, two significant digits below 0.05 (0.006 read as 0.0)."""
    return f"{expected:.1f}" if expected >= 0.05 else f"{expected:.2g}"


def logistics_facts(review: dict) -> list[str]:
    """Time and GPU-hour bands with the contingency they imply; checkpoints, storage and failures."""
    plan, g = review["plans"][0], review.get("logistics")
    if not g:
        return []
    facts = []
    if "gpu_hours_band" in g:
        days, hours = g["wall_clock_days_band"], g["gpu_hours_band"]
        facts.append(
            f"Time and GPU-hours for the plan's {human_count(plan['tokens'])} tokens"
            f"{' and its serving' if plan.get('inference_gpu_hours') else ''}: {human_days_range(*days)}, "
            f"{human_amount(hours[0])}-{human_amount(hours[1])} GPU-hours (90% band of the cost model's step-time error: "
            f"{g['band_origin']}). Contingency: hold back "
            f"{human_amount(g['contingency_gpu_hours'])} GPU-hours ({100 * g['contingency_gpu_hours'] / plan['gpu_hours']:.0f}% "
            "of the plan) for the slow end, or accept fewer tokens.")
    # How a checkpoint holds up training by the spec's mode (cost.goodput): a sync one for its whole write, an async
    # or in-memory one for the copy to host, the next then waiting for the last to persist (as simulate says it).
    if g["checkpoint_mode"] == "sync":
        written = f"a sync write of {human_days(g['checkpoint_write_s'] / 86400)}, training stalled meanwhile,"
    else:
        written = (f"{g['checkpoint_mode']}: training stalls {human_seconds(g['checkpoint_stall_s'])} for the copy to "
                   f"host and storage takes {human_days(g['checkpoint_write_s'] / 86400)},")
    paced = g["checkpoint_mode"] != "sync" and g["checkpoint_interval_s"] <= g["checkpoint_write_s"] * (1 + 1e-9)
    cadence = "each waits for the last to persist" if paced else "Young/Daly interval"
    facts.append(
        f"Checkpoints: {human_bytes(g['checkpoint_bytes'])} each ({g['checkpoint_contents']}, "
        f"{g['checkpoint_bytes_per_param']:g} bytes per parameter), {written} every "
        f"{human_days(g['checkpoint_interval_s'] / 86400)} ({cadence}), ~{g['checkpoints_written']:,.0f} over the run; "
        f"storage for the {g['checkpoints_kept']} kept at once (the one being written and the last complete one): "
        f"{human_bytes(g['storage_bytes'])}. Expected failures over the run: {_failures(g['expected_failures'])}.")
    if g["gpu_energy_j"]:
        serving = " (training and serving)" if plan.get("inference_gpu_hours") else ""
        facts.append(f"Energy: {g['gpu_energy_j'] / 3.6e9:,.1f} MWh for the GPUs{serving} at their {g['board_power_w']:.0f} W "
                     "board power (GPU-hours x max TDP, as Llama 2 counts it); host, network and cooling come on top.")
    else:
        facts.append("Energy: the cluster spec states no accelerator power (accelerator.power), so none is given.")
    return facts


# Columns that are the same for every plan (GPU-hours and cost when the budget binds them all) are stated
# once under the table rather than repeated down a column.
CONSTANT_COLUMNS = ("GPU-hours", "cost")


def plans_table(review: dict) -> list:
    headers = ["", "option", "N", "D", "D/N", "GPUs", "layout", "MFU", "GiB/GPU", "wall-clock", "GPU-hours", "cost",
               _loss_header(review["law"])]
    rows = [[tag, plan["label"], human_count(plan["params"]), human_count(plan["tokens"]),
             f"{plan['tokens_per_param']:.0f}", str(plan["gpus"]), _layout(plan["layout"]), f"{100 * plan['mfu']:.1f}%",
             f"{plan['memory_bytes'] / GIB:.1f}", human_days(plan['wall_clock_days']), human_amount(plan['gpu_hours']),
             _money(plan["cost_usd"]), _loss_with_band(plan["predicted_loss"], *(plan["loss_interval"] or (None, None)))]
            for tag, plan in zip(review["tags"], review["plans"])]
    constant = [headers.index(name) for name in CONSTANT_COLUMNS
                if len(rows) > 1 and len({row[headers.index(name)] for row in rows}) == 1]
    keep = [i for i in range(len(headers)) if i not in constant and not (headers[i] == "cost" and
                                                                         {row[i] for row in rows} == {"-"})]
    blocks = [("table", [headers[i] for i in keep], [[row[i] for i in keep] for row in rows])]
    # A cost column of dashes (a cluster with no price) is left out, not stated as "spends ..., -".
    spent = [rows[0][i] + (" GPU-hours" if headers[i] == "GPU-hours" else "") for i in constant if rows[0][i] != "-"]
    if spent:
        blocks.append(("p", f"Every plan spends {', '.join(spent)}: {_what_binds_all(review)} them all."))
    if any(plan.get("inference_gpu_hours") for plan in review["plans"]):
        tokens = review["constraints"].get("inference_tokens")
        blocks.append(("p", f"GPU-hours include serving {human_count(tokens) + ' ' if tokens else ''}inference "
                            "tokens, priced at each plan's training MFU; GPUs x wall-clock is the training alone."))
    return blocks


def _what_binds_all(review: dict) -> str:
    """What makes every plan spend the same: the budget when they spend it, else the GPUs they may use for the
    whole deadline (--gpus / --max-gpus / the cluster's size, with a budget left unspent): the chosen plan's
    binding constraint as the search recorded it (search.plan_record.binding)."""
    c, plan = review["constraints"], review["plans"][0]
    budget = c.get("budget_gpu_hours")
    if plan["binds"]["constraint"].startswith("budget"):
        return "the budget binds"
    left = f" (of the budget's {human_amount(budget)} GPU-hours)" if budget else ""
    return f"{plan['gpus']} GPUs for the {human_days(c['deadline_s'] / 86400.0)} deadline{left} bind"


def isoflop_blocks(review: dict) -> list:
    iso, law = review["isoflop"], review["law"]
    chosen, optimum = iso["chosen"], iso["optimum"]
    return [("figure", "isoflop", "Loss vs model size at the plan's training compute."), (
        "p", f"At the plan's compute C = 6ND = {iso['compute_flops']:.3g} FLOP the law ({law['name']}) puts the "
             f"loss-minimising model at N = {human_count(optimum['params'])} ({law['n_definition']} parameters), loss "
             f"{optimum['loss']:.4f}; the chosen N = {human_count(chosen['params'])} predicts {chosen['loss']:.4f}. "
             "The valley is flat: sizes near the minimum trade a few thousandths of a nat for faster or cheaper "
             "runs, which is why the search may pick one off the exact minimum. "
             + ("The shaded band is the law's 80% coefficient uncertainty; " if law["has_band"] else
                f"No band is shaded ({law['band']}); ")
             + "C/2 and 2C curves show what halving or doubling compute buys.")]


def loss_curve_blocks(review: dict) -> list:
    curve = review.get("loss_curve")
    if not curve:
        return [("p", "No loss curve: the plan's schedule is not one the curve model covers (WSD).")]
    schedule = curve["schedule"]
    rows = [[f"{100 * p['fraction']:.0f}%", human_count(p["tokens"]), f"{p['lr_fraction']:.2f}", f"{p['loss']:.4f}"]
            for p in curve["points"] if round(100 * p["fraction"]) % 10 == 0]
    return [("figure", "loss_curve", "Predicted loss along training under the plan's schedule."),
            ("p", f"The plan's {schedule['kind'].upper()} schedule (warm-up {100 * schedule['warmup_fraction']:.0f}%, "
                  f"{schedule['cooldown_shape']} cool-down over the last {100 * schedule['cooldown_fraction']:.0f}%). "
                  f"What is anchored: only the last point, which is the loss law's prediction for the plan. The "
                  f"{curve['source'].split('; level')[0]}; it is scaled by {curve['level_scale']:.3f} to end there. "
                  "Read the shape (how much the cool-down buys, how early the curve flattens), not the early "
                  "losses, as the prediction."),
            ("table", ["progress", "tokens", "LR / peak", "loss"], rows),
            *([("list", curve["warnings"])] if curve["warnings"] else [])]


def hyperparameter_blocks(review: dict) -> list:
    """The chosen plan's training hyperparameters (planner.laws.hyperparameters via optimize), each with the source
    optimize carries for it; nothing for a plan without them."""
    return hyperparameter_table_blocks(review["plans"][0].get("hyperparameters"))


def hyperparameter_table_blocks(hyper: dict | None) -> list:
    """Training hyperparameters (planner.laws.hyperparameters.plan_hyperparameters) with their sources; nothing
    without them. Shared by the budget review and the fixed-model review (report.fixed_model_review)."""
    if not hyper:
        return []
    lr, schedule, wd, batch, opt = (hyper[k] for k in ("learning_rate", "schedule", "weight_decay", "batch_size",
                                                       "optimizer"))
    rows = [["peak learning rate", f"{lr['peak']:.3g}", lr["source"]],
            ["warm-up", f"linear, {100 * schedule['warmup_fraction']:g}% of training", schedule["warmup_source"]],
            ["schedule", f"{schedule['kind'].upper()}: constant, then a {schedule['cooldown_shape']} cool-down over the "
                         f"last {100 * schedule['cooldown_fraction']:g}% to {schedule['min_lr']:.3g}", schedule["source"]],
            ["weight decay", f"{wd['value']:g} (AdamW timescale tau = {wd['timescale_tau']:.3g} of training at "
                             f"{wd['tokens_per_parameter']:.1f} tokens per non-embedding parameter)", wd["source"]],
            ["batch size", f"{human_count(batch['planned_tokens'])} tokens, {ratio_text(batch['planned_over_optimal'])} "
                           f"{batch['rule_name']}'s B_opt ({human_count(batch['optimal_tokens'])})", batch["source"]],
            ["optimizer", f"{opt['name']}, betas ({opt['beta1']:g}, {opt['beta2']:g}), gradient clip "
                          f"{opt['gradient_clip']:g}", opt["source"]]]
    return [("h2", "Training hyperparameters"),
            ("p", "Starting points for the chosen plan from published laws, to sweep around rather than to trust. "
                  "The search sizes the batch by its batch rule; it does not use the others."),
            ("table", ["setting", "value", "source"], rows),
            *([("list", hyper["validity_warnings"])] if hyper.get("validity_warnings") else [])]


def frontier_blocks(review: dict) -> list:
    rows = [[human_days(p['wall_clock_days']), str(p["gpus"]), human_count(p["params"]), human_count(p["tokens"]),
             human_amount(p['gpu_hours']), _loss_with_band(p["predicted_loss"], p["loss_low"], p["loss_high"])]
            for p in review["frontier"]]
    within = ("under the budget" if review["constraints"].get("target_loss") is None else
              "among the plans reaching the target loss, whatever they cost")
    return [("figure", "frontier", "Loss vs wall-clock frontier."),
            ("p", f"Each point is the best-loss plan finishing within that wall-clock {within}. Going "
                  "faster needs more GPUs (larger batches, lower MFU) or a run stopped sooner, so loss rises as time "
                  "shrinks."),
            ("table", ["wall-clock", "GPUs", "N", "D", "GPU-hours", _loss_header(review["law"])], rows)]


def breakdown_blocks(review: dict) -> list:
    plan = review["plans"][0]
    _, parts, _ = review["memory"][0]
    memory_rows = [[name, human_bytes(value)] for name, value in parts if value > 0]
    memory_rows += [["total", human_bytes(plan["memory_bytes"])], ["HBM capacity", human_bytes(plan["hbm_bytes"])]]
    _, parts, step = review["time"][0]
    time_rows = [[name, human_seconds(value), f"{100 * value / step:.1f}%"] for name, value in parts if value > 0]
    time_rows.append(["step", human_seconds(step), "100%"])
    return [
        ("h2", "Memory per GPU"),
        ("figure", "memory", "Per-GPU memory breakdown against HBM capacity."),
        ("p", "Bars: the chosen plan and each runner-up (tags as in the table). Model states (weights, gradients, "
              "optimizer) shrink with ZeRO and tp/pp; activations grow with micro-batch and sequence length; the "
              "reserve is allocator fragmentation plus CUDA/NCCL context. Chosen plan:"),
        ("table", ["part", "per GPU"], memory_rows),
        # The phase that holds the peak where the stack frees its gradients between steps, as simulate says it.
        *([("p", f"The peak is in {peak}.")] if (peak := peak_phase_text(plan.get("memory", {}))) else []),
        ("h2", "Step time"),
        ("figure", "step_time", "Step-time breakdown."),
        ("p", "Exposed communication is the part not hidden behind compute. Chosen plan, one optimizer step:"),
        ("table", ["part", "time", "share"], time_rows),
    ]


def scaling_blocks(review: dict) -> list:
    rows = [[str(r["gpus"]), f"{100 * r['mfu']:.1f}%" if r["feasible"] else "-",
             f"{r['global_batch']:,}" if r["feasible"] else "-",
             human_count(r["tokens"]) if r["feasible"] else "-",
             human_days(r["wall_clock_days"]) if r["feasible"] else "-",
             r["layout"] if r["feasible"] else r["reason"]] for r in review["scaling"]]
    plan = review["plans"][0]
    return [("figure", "scaling", "MFU and wall-clock vs number of GPUs for the chosen model."),
            ("p", f"The chosen model ({human_count(plan['params'])}) trained to the plan's loss with the fastest "
                  "layout that fits at each GPU count in the budget search's layout space (same batch-size rule and "
                  "limit as the search; `planner optimize --model` searches a model's layouts wider). MFU falls as "
                  "the per-GPU batch shrinks and communication is exposed. More GPUs need a larger global batch; "
                  f"above the critical batch the rule asks for more than the plan's {human_count(plan['tokens'])} "
                  "tokens to reach the same loss, so wall-clock can rise with GPUs. " + LAYOUT_LEGEND),
            ("table", ["GPUs", "MFU", "global batch (seq.)", "tokens", "wall-clock", "best layout (or why none)"], rows)]


def sensitivity_blocks(review: dict) -> list:
    cases = review["sensitivity"]
    if cases is None:
        return [("p", "Sensitivity runs were skipped (--no-sensitivity).")]
    base = review["plans"][0]
    rows = []
    for case in cases:
        kept, new = case["kept"], case["replanned"]
        kept_text = (_unchanged_text(base) if kept is None else
                     f"{human_days(kept['wall_clock_days'])} ({_delta(kept['wall_clock_days'], base['wall_clock_days'])}), "
                     f"{human_amount(kept['gpu_hours'])} GPU-h ({_delta(kept['gpu_hours'], base['gpu_hours'])}), MFU {100 * kept['mfu']:.1f}%")
        if new is None:
            new_text = "no feasible plan: " + "; ".join(case["explanation"][-1:])
        else:
            new_text = (f"{human_count(new['params'])} on {human_count(new['tokens'])} tokens, {new['gpus']} GPUs, "
                        f"{_layout(new['layout'])}; MFU {100 * new['mfu']:.1f}%, {human_days(new['wall_clock_days'])}, "
                        f"loss {new['predicted_loss']:.3f} ({_loss_delta(new['predicted_loss'], base['predicted_loss'])})")
        rows.append([case["label"], case["change"], kept_text, new_text])
    return [("p", "Keep the plan: the chosen model, tokens, GPUs and layout under the changed conditions (same tokens, "
                  "so time and GPU-hours move). Re-plan: what the search picks with the changed inputs."),
            ("table", ["case", "what changes", "keep the plan", "re-plan"], rows)]


def _unchanged_text(base: dict) -> str:
    """The kept plan under a larger budget: unchanged, and why (what binds it: search.plan_record.binding)."""
    if base["binds"]["constraint"].startswith("budget"):
        return "unchanged (it spends the original budget)"
    return f"unchanged (the {base['binds']['constraint']} binds it, not the budget)"


def uncertainty_blocks(review: dict) -> list:
    law, cl = review["law"], review["cluster"]
    return [("list", [
        (f"Loss: the 80% bands are the {law['band']}: where the law's mean curve lies; single runs scatter around "
         "it by typically another ~0.01 nats." if law["has_band"] else
         f"Loss: {law['band']} (no coefficient samples, no stated relative error), so no band is given; single runs "
         "also scatter around the law's mean curve (typically ~0.01 nats)."),
        "Against the runs the law was fitted on: " + "; ".join(review["fit_range"]) + ".",
        ("Step time: the cluster's efficiency parameters were fitted to measured runs (" + cl["calibration"] + ")."
         if cl["calibrated"] else
         "Step time: the cluster's efficiency parameters are assumed defaults; `planner validate` shows the error "
         "against published runs and `planner calibrate` fits them to yours. The sensitivity table shows what "
         "20% slower compute or network does."),
    ])]


def _kv_table(pairs) -> tuple:
    return ("table", ["", ""], [[key, str(value)] for key, value in pairs])


def _efficiency_value(key: str, value) -> str:
    if value is None:
        return "derived: roofline ridge 3 x peak / HBM bandwidth" if key == "matmul_half_size" else "default"
    if key.endswith("_bytes"):
        return human_bytes(value)
    return f"{value:.4g}" + (" s" if key.endswith("_s") else "")


def cluster_blocks(cl: dict, dtype: str) -> list:
    """The cluster spec a plan rests on and its cost-model efficiencies (review.cluster_assumptions), as two tables."""
    rate = lambda v: f"{v / 1e9:.0f} GB/s"  # noqa: E731 - bandwidths as vendors quote them (per direction)
    cluster = [("name / file", f"{cl['name']} ({cl['file']})"), ("calibration", cl["calibration"]),
               ("accelerator", f"{cl['accelerator']}: {cl['peak_flops_per_s'] / 1e12:.0f} TFLOP/s dense {dtype}, "
                               f"{human_bytes(cl['hbm_bytes'])} HBM at {cl['hbm_bytes_per_s'] / 1e12:.2f} TB/s"),
               ("node", f"{cl['gpus_per_node']} GPUs, scale-up {rate(cl['scale_up_bytes_per_s_per_direction'])} per "
                        f"direction, host memory {human_bytes(cl['host_memory_bytes'])}"),
               ("network", f"{cl['nics_per_node']} NICs x {rate(cl['nic_bytes_per_s_per_direction'])} per direction, "
                           f"{cl['topology']}, oversubscription {cl['oversubscription']:g}"),
               ("size / price", f"up to {cl['max_nodes']} nodes; {_money(cl['price_per_gpu_hour'])} per GPU-hour"
                                if cl["price_per_gpu_hour"] else f"up to {cl['max_nodes']} nodes; no price"),
               ("reliability", f"MTBF per GPU {cl['mtbf_per_gpu_s'] / 3600:,.0f} h; {cl['checkpoint_mode']} checkpoints "
                               f"to storage at {cl['checkpoint_bytes_per_s'] / 1e9:.3g} GB/s; restart "
                               f"{human_days(cl['restart_s'] / 86400)} (goodput accounts for failures, checkpoints and "
                               "restarts)")]
    efficiency = [(key, _efficiency_value(key, value)) for key, value in cl["efficiency"].items()]
    return [("h3", "Cluster"), _kv_table(cluster), ("h3", "Cost-model efficiencies"), _kv_table(efficiency)]


def assumption_blocks(review: dict) -> list:
    law, c, result = review["law"], review["constraints"], review["result"]
    validity = law["validity"]
    law_rows = [("law", f"{law['name']}: {law['source']}"), ("form", f"{law['form']}; N = {law['n_definition']} "
                                                                     f"parameters, C = {law['c_definition']}"),
                ("coefficients", ", ".join(f"{k} = {v:.4g}" for k, v in law["coefficients"].items())),
                ("fitted range", f"N {validity['n_min']:.3g}-{validity['n_max']:.3g}, D {validity['d_min']:.3g}-"
                                 f"{validity['d_max']:.3g}, D/N {validity['tpp_min']:.3g}-{validity['tpp_max']:.3g}"),
                ("uncertainty", law["band"])]
    size_range = c["model_size_range"]
    search = [("budget", _budget_text(c)), ("deadline", f"{c['deadline_s'] / 86400:g} days"
                                            + (" (default)" if c["deadline_is_default"] else "")),
              ("GPUs", f"exactly {c['gpus']}" if c["gpus"] else (f"at most {c['max_gpus']}" if c["max_gpus"] else "any")),
              ("unique data / inference", f"{human_count(c['unique_tokens']) if c['unique_tokens'] else 'unlimited'} / "
                                          f"{human_count(c['inference_tokens']) if c['inference_tokens'] else 'none'}"),
              ("training", f"{c['dtype']}, sequence length {c['seq_len']}, vocabulary {c['vocab']}"),
              ("batch size", c["batch_rule_text"]),
              ("models searched", f"{c['models_searched']} Llama-style shapes (SwiGLU, RMSNorm, rotary, GQA with 8 kv "
                                  f"heads from 16 heads), {human_count(size_range[0])}-{human_count(size_range[1])}"),
              ("candidates", f"{result.scored:,} scored; dropped: " + (", ".join(
                  f"{n:,} {why}" for why, n in result.dropped.items() if n) or "none")),
              ("ties", "plans within 0.1% of the best loss (1% of cost with a target) count as equal; the shorter "
                       "wall-clock at the slow end of each plan's step-time band wins")]
    return [*cluster_blocks(review["cluster"], c["dtype"]),
            ("h3", "Loss law"), _kv_table(law_rows), ("h3", "Constraints and search"), _kv_table(search)]


def moe_blocks(review: dict) -> list:
    """Dense or mixture of experts (--moe): the two best plans side by side under one pair of laws."""
    view = review.get("moe")
    if view is None:
        return []
    blocks = [("h2", "Dense or mixture of experts"),
              ("p", view["header"] + ". Both sides are planned on the chosen plan's GPU count (`planner optimize "
                    "--moe` plans them on the fewest GPUs that spend the budget by the deadline and by shorter "
                    "fractions of it, so its answer at this budget can differ). Both are judged by the "
                    "same pair of laws, fitted on the same data, so "
                    "their losses compare with each other; they do not compare with the chosen plan's loss above, "
                    "which comes from " + review["law"]["name"] + "."),
              ("table", ["", *view["kinds"]], [list(row) for row in view["rows"]])]
    blocks += [("p", view["verdict"] + ".")] if view["verdict"] else []
    blocks += [("list", view["missing"])] if view["missing"] else []
    blocks += [("list", view["warnings"])] if view["warnings"] else []
    return blocks


def document(review: dict) -> list:
    """The report as blocks: ("h1"|"h2"|"h3"|"p", text), ("list", items), ("table", headers, rows),
    ("figure", name, caption)."""
    c = review["constraints"]
    blocks = [("h1", f"Training plan: {_budget_text(c)} on {review['cluster']['name']}")]
    blocks.append(("p", f"Generated by planner {__version__}" + (f": `{review['command']}`." if review["command"] else ".")))
    if review["status"] != "ok":
        blocks += [("h2", "No feasible plan"), ("list", review["result"].explanation),
                   ("h2", "Assumptions"), *assumption_blocks(review)]
        return blocks
    blocks += [("h2", "Recommendation"), *summary_blocks(review),
               ("h2", "Chosen plan and runners-up"), *plans_table(review),
               ("p", "Runners-up are the best plans that differ materially (fewer GPUs, shorter wall-clock, dp only, "
                     "smaller or larger model). Loss in nats/token; "
                     + ("the band is the law's 80% interval." if review["law"]["has_band"] else
                        f"{review['law']['band']}.") + " " + LAYOUT_LEGEND),
               *moe_blocks(review),
               *hyperparameter_blocks(review),
               ("h2", "Loss vs model size (iso-FLOP)"), *isoflop_blocks(review),
               ("h2", "Loss along training"), *loss_curve_blocks(review),
               ("h2", "Loss vs wall-clock"), *frontier_blocks(review),
               *breakdown_blocks(review),
               ("h2", "MFU vs number of GPUs"), *scaling_blocks(review),
               ("h2", "Sensitivity"), *sensitivity_blocks(review),
               ("h2", "Uncertainty"), *uncertainty_blocks(review),
               ("h2", "Assumptions"), *assumption_blocks(review)]
    return blocks
