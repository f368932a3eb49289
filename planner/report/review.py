"""The numbers a capacity-planning review shows beyond the optimize result itself.

- the iso-FLOP curve: loss vs model size at the chosen plan's compute C = 6·N·D, with the law's band;
- the chosen plan's predicted loss curve under its schedule (as optimize computes it: planner.laws.plan_curve);
- the loss-vs-wall-clock frontier, each point with its law band;
- memory and step-time breakdowns of the chosen plan and the runners-up, as named parts;
- MFU vs number of GPUs for the chosen model and token count (best layout at each GPU count);
- every assumption: cluster spec (and whether it is calibrated), law, constraints, search settings;
- with --moe, the best dense and the best mixture-of-experts plan side by side (moe_comparison).

Sensitivity re-runs live in planner/report/sensitivity.py. planner/report/document.py turns this into text and plots.
"""

from __future__ import annotations

import numpy as np

from planner.calibrate.error_bands import band_origin
from planner.search.budget import MEMORY_RISK_FRACTION, Constraints
from planner.cost.goodput import checkpoint_bytes_per_param, goodput
from planner.errors import PlannerInputError
from planner.specs.hardware import ClusterSpec
from planner.laws.base import NO_INTERVAL, interval_basis
from planner.laws.batch_size import RULES as BATCH_RULES
from planner.specs.layout import Layout, make_layout
from planner.specs.model import ModelSpec, make_model
from planner.search.bounds import flops_per_token
from planner.search.branch_and_bound import score_space
from planner.search.optimize import OptimizeResult
from planner.search.problem_setup import build_problem
from planner.search.score import Problem, batch_tokens_estimate
from planner.report.render import human_amount, layout_text
from planner.search.space import LOSSLESS_HIERARCHY, enumerate_space, family_models, gpu_counts, layout_fields
from planner.laws.training_compute import dense_training_flops, tokens_for_compute

BAND_LEVEL = 0.8  # the band optimize reports (plan["loss_interval"])
ISOFLOP_SPAN = 12.0  # the curve spans N_opt / span .. N_opt x span (the search window is /12 .. x6)
SCALING_SPAN = 32.0  # MFU-vs-GPUs spans the plan's GPU count / 32 .. x 32 (what a re-plan would consider)
# Memory parts in stacking order (model states first, then what grows with the batch), with labels.
MEMORY_PARTS = (("weights", "weights"), ("gradients", "gradients"), ("optimizer", "optimizer states"),
                ("zero3_gathered", "ZeRO-3 gathered params"), ("comm_buckets", "communication buckets"),
                ("activations", "activations"), ("embedding_dropout_masks", "embedding dropout masks"),
                ("recompute_working", "recompute working set"),
                ("cp_attention_buffers", "context-parallel attention buffers"),
                ("logits", "logits"), ("pipeline_masks", "pipeline attention masks"), ("fp8_weights", "fp8 weight copies"), ("tp_overlap_buffers", "TP-overlap userbuffers"),
                ("expert_weights", "expert weights"), ("expert_gradients", "expert gradients"),
                ("expert_optimizer", "expert optimizer states"), ("moe_activations", "MoE activations"),
                ("moe_dispatch_buffers", "MoE dispatch buffers"), ("pipeline_weight_copy", "pipeline weight copy"),
                ("cuda_context", "CUDA context + workspaces"), ("nccl_buffers", "NCCL buffers"),
                ("fragmentation", "allocator fragmentation"), ("reserve", "unaccounted reserve"))
# Step-time groups: the named parts; step_time.py's parts summed where one bar would do.
TIME_GROUPS = (("compute (forward + backward)", ("forward", "backward")),
               ("memory-bound kernels", ("elementwise", "unfused_elementwise", "shard_copies", "grad_accumulation")), ("recompute", ("recompute",)),
               ("pipeline bubble", ("bubble", "interleaved_lockstep")), ("tp communication (exposed)", ("tp_comm", "qkv_gather", "checkpoint_gather")),
               ("pp send/recv + embedding sync (exposed)", ("pp_p2p", "embedding_sync")), ("cp communication (exposed)", ("cp_comm",)),
               ("dp/ZeRO communication (exposed)", ("dp_comm_exposed", "expert_dp_comm_exposed")),
               ("offload copies", ("offload_copies",)),
               ("optimizer step", ("optimizer",)), ("fixed overheads", ("overhead",)),
               # What the host's kernel launches leave uncovered (cost.kernels): small work per GPU.
               ("kernel launches (host-bound)", ("launch_floor", "moe_launch_floor")),
               ("experts (MoE)", ("moe_experts", "a2a_sm_share")), ("expert all-to-all (exposed)", ("ep_comm",)))


def plan_model(plan: dict) -> ModelSpec:
    """The searched family model behind a plan (Llama-style), checked against the plan's parameter count."""
    model = make_model("plan", **plan["shape"])
    if model.total_params != plan["params"]:
        raise PlannerInputError(f"plan shape rebuilds to {model.total_params} parameters, plan says {plan['params']}")
    return model


def plan_layout(plan: dict) -> Layout:
    fields = {f: plan["layout"][f] for f in Layout.model_fields if f in plan["layout"]}
    return make_layout("plan", **fields)


def isoflop_curve(law, plan: dict, points: int = 97) -> dict:
    """Loss vs law-N along C = 6·N·D through the plan (and at C/2, 2C for scale), with the law's band."""
    compute = dense_training_flops(plan["law_params"], plan["tokens"])
    n_opt, d_opt = (float(v[0]) for v in law.compute_optimal(np.array([compute])))
    low_n = min(n_opt / ISOFLOP_SPAN, plan["law_params"] / 2)
    high_n = max(n_opt * ISOFLOP_SPAN, plan["law_params"] * 2)
    N = np.logspace(np.log10(low_n), np.log10(high_n), points)
    curves = {}
    for factor in (0.5, 1.0, 2.0):
        D = tokens_for_compute(factor * compute, N)
        low, high = law.predict_interval(N, D, BAND_LEVEL) if interval_basis(law) else (None, None)
        curves[factor] = {"loss": law.predict(N, D), "low": low, "high": high}
    return {"compute_flops": compute, "params": N, "curves": curves, "level": BAND_LEVEL,
            "optimum": {"params": n_opt, "loss": float(law.predict(n_opt, d_opt))},
            "chosen": {"params": plan["law_params"], "loss": plan["predicted_loss"]}}


def frontier_with_band(law, pareto: list[dict], seq_len: int, vocab: int) -> list[dict]:
    """The Pareto points with the law's band at each (N rebuilt from the searched family by total params)."""
    out = []
    for point in pareto:
        family = family_models(seq_len, vocab, point["params"], point["params"])
        n = (float(law.counted_params(family[0].total_params, family[0].non_embedding_params)) if family
             else float(point["params"]))
        if not interval_basis(law):  # no uncertainty: no band (laws.base.NO_INTERVAL)
            out.append({**point, "loss_low": None, "loss_high": None})
            continue
        low, high = law.predict_interval(np.array([n]), np.array([point["tokens"]]), BAND_LEVEL)
        out.append({**point, "loss_low": float(low[0]), "loss_high": float(high[0])})
    return out


def lowest_loss_point(frontier: list[dict]) -> dict | None:
    """The frontier's lowest-loss plan: what the search would pick with no preference for speed."""
    return min(frontier, key=lambda p: p["predicted_loss"]) if frontier else None


def fit_range_notes(law, plan: dict) -> list[str]:
    """Where the plan's N, D and D/N sit against the runs the law was fitted on."""
    v = law.validity
    checks = (("N", plan["law_params"], v.n_min, v.n_max), ("D", plan["tokens"], v.d_min, v.d_max),
              ("D/N", plan["tokens"] / plan["law_params"], v.tpp_min, v.tpp_max))
    notes = []
    for symbol, value, low, high in checks:
        if value > high:
            where = f"{value / high:.1f}x above the largest fitted ({high:.3g})"
        elif value < low:
            where = f"{low / value:.1f}x below the smallest fitted ({low:.3g})"
        else:
            where = f"inside the fitted range {low:.3g}-{high:.3g}"
        notes.append(f"{symbol} = {value:.3g} is {where}")
    return notes


def memory_parts(plan: dict) -> list[tuple[str, float]]:
    return [(label, float(plan["memory"].get(key, 0.0))) for key, label in MEMORY_PARTS]


def time_parts(plan: dict) -> list[tuple[str, float]]:
    return [(label, float(sum(plan["time"].get(k, 0.0) for k in keys))) for label, keys in TIME_GROUPS]


def _fixed_token_problem(cluster: ClusterSpec, law, constraints: Constraints, plan: dict, model: ModelSpec,
                         dtype: str, batch_rule: str, seq_len: int, vocab: int) -> Problem:
    """Scoring set-up for one model trained on the plan's tokens, with no deadline or budget to drop on.

    Batch sizing uses the search's own token estimate, so the plan's GPU count sees the same layouts
    the search scored; only memory, host memory and the batch-size limit can rule a layout out.
    """
    searched, models, _ = build_problem(cluster, law, constraints, dtype, batch_rule, seq_len, vocab)
    sizes = [m.total_params for m in models]
    estimate = (batch_tokens_estimate(searched, np.array([sizes.index(model.total_params)]), np.array([plan["gpus"]]))[0]
                if model.total_params in sizes else plan["tokens"])
    fixed = Constraints(target_loss=plan["predicted_loss"], deadline_s=np.inf)
    return Problem(cluster=cluster, law=law, constraints=fixed, dtype=dtype, batch_rule=batch_rule,
                   law_params=np.array([plan["law_params"]]), total_params=np.array([float(model.total_params)]),
                   nonembedding_params=np.array([float(model.non_embedding_params)]),
                   tokens_estimate=np.array([float(estimate)]), tokens_needed=np.array([plan["tokens"]]),
                   flops_per_token=flops_per_token([model]))


def mfu_by_gpu_count(cluster: ClusterSpec, law, constraints: Constraints, plan: dict, dtype: str,
                     batch_rule: str, seq_len: int, vocab: int, hierarchy: tuple = LOSSLESS_HIERARCHY) -> list[dict]:
    """Fastest layout to the plan's loss for the chosen model at each GPU count the cluster offers, on the plan's
    stack, over the ZeRO-3 hierarchy options the plan's search tried."""
    model = plan_model(plan)
    problem = _fixed_token_problem(cluster, law, constraints, plan, model, dtype, batch_rule, seq_len, vocab)
    low, high = plan["gpus"] / SCALING_SPAN, plan["gpus"] * SCALING_SPAN
    counts = [g for g in gpu_counts(cluster.gpus_per_node, cluster.max_nodes, None, None) if low <= g <= high]
    rows = []
    for gpus in counts:
        space = enumerate_space([model], [gpus], cluster.gpus_per_node, hierarchy, (plan["layout"]["framework"],), dtype)
        if len(space) == 0:
            rows.append({"gpus": gpus, "feasible": False, "reason": "no layout divides the model"})
            continue
        scored = score_space(problem, space)
        feasible = scored["feasible"]
        if len(feasible["index"]) == 0:
            reason = max(scored["dropped"], key=scored["dropped"].get)
            rows.append({"gpus": gpus, "feasible": False, "reason": reason})
            continue
        # Fastest to the plan's loss, not highest tokens/s: a larger global batch raises tokens/s but,
        # above the critical batch, needs more tokens, and can take longer in all.
        best = int(np.argmin(feasible["wall_s"]))
        i = int(feasible["index"][best])
        a = {k: int(v[i]) for k, v in space.arrays.items()}
        rows.append({"gpus": gpus, "feasible": True, "mfu": float(feasible["mfu"][best]),
                     # Perfect strong scaling from the plan's own point, for reference.
                     "ideal_wall_clock_days": plan["wall_clock_days"] * plan["gpus"] / gpus,
                     "tokens_per_s": float(feasible["tokens_per_s"][best]),
                     # Tokens to reach the plan's loss with this layout's global batch: above the critical
                     # batch the batch-size rule asks for more tokens, so days can rise with GPUs.
                     "tokens": float(feasible["tokens"][best]),
                     "global_batch": int(feasible["global_batch"][best]),
                     "wall_clock_days": float(feasible["wall_s"][best]) / 86400.0,
                     # Named as every layout table names one (the plan's stack first); a dense space, no ep.
                     "layout": layout_text(layout_fields(a))})
    return rows


def cluster_assumptions(cluster: ClusterSpec, dtype: str) -> dict:
    """The spec the plan rests on, in SI units, and whether its efficiencies were fitted to measurements."""
    a, n, net = cluster.accelerator, cluster.node, cluster.network
    return {
        "name": cluster.name, "file": cluster.source_file, "description": cluster.description,
        "calibration": cluster.calibration, "calibrated": not cluster.calibration.startswith("uncalibrated"),
        "accelerator": a.name, "peak_flops_per_s": cluster.peak_flops_per_s(dtype), "hbm_bytes": a.hbm_bytes,
        "hbm_bytes_per_s": a.hbm_bytes_per_s, "gpus_per_node": cluster.gpus_per_node, "max_nodes": cluster.max_nodes,
        "scale_up_bytes_per_s_per_direction": n.scale_up.link_bytes_per_s_per_direction,
        "nics_per_node": net.nics_per_node, "nic_bytes_per_s_per_direction": net.nic_bytes_per_s_per_direction,
        "topology": net.topology, "oversubscription": net.oversubscription, "host_memory_bytes": n.host_memory_bytes,
        "price_per_gpu_hour": cluster.price_per_accelerator_hour,
        "mtbf_per_gpu_s": cluster.reliability.mtbf_per_gpu_s,
        "checkpoint_bytes_per_s": cluster.reliability.checkpoint_bytes_per_s,
        "checkpoint_mode": cluster.reliability.checkpoint_mode, "restart_s": cluster.reliability.restart_s,
        "efficiency": cluster.efficiency.model_dump(by_alias=False),
    }


def law_assumptions(law) -> dict:
    band = interval_basis(law) or NO_INTERVAL  # the basis predict and optimize state (laws.base)
    return {"name": law.name, "source": law.source, "form": law.form, "n_definition": law.n_definition,
            "c_definition": law.c_definition, "coefficients": law.coefficients(),
            "validity": law.validity.as_dict(), "band": band, "has_band": interval_basis(law) is not None}


# Checkpoints kept on storage at once: the one being written and the last complete one to restart from
# (the fewest that survive a failure during a write; a choice, stated in the review).
CHECKPOINTS_KEPT = 2


def checkpoint_contents(bytes_per_param: float, dtype: str) -> str:
    """What a restartable checkpoint of `bytes_per_param` holds (Framework.checkpoint_bytes_per_param: 14 where the
    stack saves the 16-bit weights beside the fp32 master, 12 where the fp32 parameters are the master)."""
    if bytes_per_param == 12.0:
        return "fp32 weights, which are the master copy, + Adam moments"
    weights = dtype if dtype in ("bf16", "fp16") else "16-bit"  # fp8 training keeps bf16 weights
    return f"{weights} weights + fp32 master + Adam moments"


def run_logistics(plan: dict, cluster: ClusterSpec) -> dict:
    """What the run needs besides GPUs: a time and GPU-hour band with the contingency it implies, and the
    checkpoints (size, storage, cadence) and failures the goodput model assumes."""
    bytes_per_param = checkpoint_bytes_per_param(plan["layout"]["framework"])
    reliability = goodput(plan["params"], plan["gpus"], cluster, bytes_per_param=bytes_per_param)
    wall_s = plan["wall_clock_s"]
    checkpoint_bytes = bytes_per_param * plan["params"]
    out = {
        "checkpoint_bytes": checkpoint_bytes,
        "checkpoint_bytes_per_param": bytes_per_param,
        "checkpoint_contents": checkpoint_contents(bytes_per_param, plan["layout"]["dtype"]),
        "checkpoints_kept": CHECKPOINTS_KEPT,
        "storage_bytes": CHECKPOINTS_KEPT * checkpoint_bytes,
        "checkpoint_write_s": float(reliability["checkpoint_write_s"]),
        "checkpoint_stall_s": float(reliability["checkpoint_stall_s"]),
        "checkpoint_mode": cluster.reliability.checkpoint_mode,
        "checkpoint_interval_s": float(reliability["checkpoint_interval_s"]),
        "checkpoints_written": wall_s / float(reliability["checkpoint_interval_s"]),
        "expected_failures": wall_s / float(reliability["job_mtbf_s"]),
        # GPU energy as Llama 2's carbon accounting counts it (Touvron et al. 2023, sec. 2.2.1, Table 2):
        # GPU-hours x the board's max power; host CPUs, network and cooling (PUE) are not included.
        "gpu_energy_j": (plan["gpu_hours"] * 3600.0 * cluster.accelerator.power_w
                         if cluster.accelerator.power_w else None),
        "board_power_w": cluster.accelerator.power_w,
    }
    band = plan.get("step_time_band")
    if band:
        # The plan's own tokens at the band's slow and fast ends: time and GPU-hours scale with step time.
        low, high = band["low_s"] / plan["step_time_s"], band["high_s"] / plan["step_time_s"]
        out.update({"band_group": band["group"], "band_rows": band["rows"], "band_basis": band.get("basis"),
                    "band_origin": band_origin(band),
                    "wall_clock_days_band": [plan["wall_clock_days"] * low, plan["wall_clock_days"] * high],
                    "gpu_hours_band": [plan["gpu_hours"] * low, plan["gpu_hours"] * high],
                    # GPU-hours to hold back so the slow end of the band still finishes the plan's tokens.
                    "contingency_gpu_hours": max(0.0, plan["gpu_hours"] * (high - 1.0))})
    return out


def _moe_layout_text(side) -> str:
    # Built as the fixed-model tables build theirs: the stack, every parallel dimension used, what changes time.
    lay = side.layout
    return layout_text({**lay.model_dump(), "ep": lay.ep if side.kind == "moe" else None, "etp": lay.expert_tp})


def _counts_text(comparison) -> str:
    """The GPU counts both sides were planned on ('64', 'up to 256'): a side with no plan fitted on none of them."""
    counts = comparison.counts or (comparison.gpus,)
    return f"{counts[0]:,}" if len(counts) == 1 else f"up to {max(counts):,}"


def moe_comparison(comparison) -> dict:
    """The dense-vs-MoE answer of `optimize --budget B --moe` (planner.search.moe_budget.MoEComparison) as
    plain rows: one column per side that has a plan, the winner and by how much, the laws' warnings."""
    from planner.report.render import human_count, human_days

    sides = [s for s in (comparison.dense, comparison.moe) if s is not None]
    rows = [
        ("model", *(s.model.name for s in sides)),
        ("parameters (total)", *(human_count(s.model.total_params) for s in sides)),
        ("parameters (active)", *(human_count(s.model.total_active_params) for s in sides)),
        ("experts x top-k", *(f"{s.model.moe_experts} x {s.model.moe_top_k} (G {s.granularity:g})" if s.kind == "moe"
                             else "dense" for s in sides)),
        ("tokens", *(human_count(s.tokens) for s in sides)),
        ("GPUs", *(f"{s.gpus:,} for {human_days(s.wall_s / 86400)}" for s in sides)),
        ("layout", *(_moe_layout_text(s) for s in sides)),
        ("step time", *(f"{s.step_time_s:.2f} s" for s in sides)),
        ("MFU", *(f"{100 * s.mfu:.1f}%" for s in sides)),
        ("predicted loss", *(f"{s.loss:.3f}" for s in sides)),
        ("inference GFLOP/token", *(human_amount(s.inference_flops_per_token / 1e9) for s in sides)),
        ("law", *(s.law for s in sides)),
    ]
    verdict = None
    if comparison.dense is not None and comparison.moe is not None:
        d, m = comparison.dense, comparison.moe
        better = "MoE" if m.loss < d.loss else "dense"
        verdict = (f"{better} wins by {abs(d.loss - m.loss):.3f} nats of predicted loss; the MoE serves a token at "
                   f"{m.inference_flops_per_token / d.inference_flops_per_token:.2f}x the dense model's FLOPs "
                   f"(its {human_count(m.model.total_params)} parameters must all be in memory)")
    missing = [kind for kind, side in (("dense", comparison.dense), ("MoE", comparison.moe)) if side is None]
    spent = comparison.gpus * comparison.wall_s
    # Fewer GPUs than the budget needs by the deadline (--max-gpus, --gpus, the cluster's size): say what is left.
    unspent = (f" (spends {human_amount(spent / 3600)} of them: {comparison.gpus} GPUs cannot use more by the deadline)"
               if spent < comparison.gpu_seconds * (1 - 1e-9) else "")
    return {
        # Each side's own GPU count and wall-clock are in its column (the count of its lower loss).
        # The counts searched: `report --moe` holds both sides to the chosen plan's count, `optimize --moe` searches
        # every count, so the two can differ at one budget (the audit's question); the header says which.
        "header": (f"budget {human_amount(comparison.gpu_seconds / 3600)} GPU-hours{unspent} of "
                   f"{comparison.cluster.name}, on {_counts_text(comparison)} GPUs; "
                   f"losses from Krajewski et al. 2024 (dense eq. 1 and MoE eq. 9, C4)"),
        "kinds": [s.kind for s in sides], "rows": rows, "verdict": verdict,
        "missing": [f"no {kind} model of the family fits a layout on {_counts_text(comparison)} GPUs"
                    for kind in missing],
        "warnings": list(dict.fromkeys(w for s in sides for w in s.warnings)),
    }


def build_review(cluster: ClusterSpec, law, constraints: Constraints, result: OptimizeResult, *, dtype: str,
                 batch_rule: str, seq_len: int, vocab: int, sensitivity: list | None = None,
                 command: str = "", moe=None) -> dict:
    """Everything the report renders, as plain data; `moe` is the dense-vs-MoE comparison (--moe) or None."""
    review = {
        "command": command, "status": result.status, "result": result,
        "moe": None if moe is None else moe_comparison(moe),
        "cluster": cluster_assumptions(cluster, dtype), "law": law_assumptions(law),
        "constraints": {**result.assumptions, "gpus": constraints.gpus, "max_gpus": constraints.max_gpus,
                        "batch_rule_text": BATCH_RULES.get(batch_rule, batch_rule)},
        "sensitivity": sensitivity,
        "memory_risk_fraction": MEMORY_RISK_FRACTION,  # below it free, the plan's memory is flagged (as optimize does)
    }
    if result.status != "ok":
        return review
    plans = [result.plan, *result.alternatives]
    review.update({
        "plans": plans,
        # Short names the table, the figures and their captions all use for the plans.
        "tags": ["plan"] + [f"R{i}" for i in range(1, len(plans))],
        "isoflop": isoflop_curve(law, result.plan),
        "loss_curve": result.plan.get("loss_curve"),  # planner.laws.plan_curve, computed by optimize
        "frontier": frontier_with_band(law, result.pareto, seq_len, vocab),
        "lowest_loss": lowest_loss_point(result.pareto),
        "fit_range": fit_range_notes(law, result.plan),
        "memory": [(plan["label"], memory_parts(plan), plan["memory_bytes"]) for plan in plans],
        "time": [(plan["label"], time_parts(plan), plan["step_time_s"]) for plan in plans],
        "scaling": mfu_by_gpu_count(cluster, law, constraints, result.plan, dtype, batch_rule, seq_len, vocab,
                                    tuple(tuple(c) for c in result.assumptions.get("zero3_hierarchy", LOSSLESS_HIERARCHY))),
        "logistics": run_logistics(result.plan, cluster),
    })
    return review
