"""Seconds per optimizer step as a sum of named parts, for a batch of candidates. Pure, vectorised.

The step is simulated as a schedule, per layer, on every pipeline stage (first, fullest middle, last);
the slowest stage sets the pace:
  layer forward  = GEMMs (size-dependent efficiency) + attention core + memory-bound elementwise,
                   never faster than the CPU can issue its kernels (kernels x launch latency + dispatch);
  layer backward = 2 x GEMMs + attention backward + 2 x elementwise; recompute = one more forward
                   (full) or the attention core (selective);
  tensor parallel: 2 collectives per layer forward and 2 backward (+2 recompute), exposed unless the
                   layout overlaps them with the GEMMs (Transformer Engine userbuffers / async TP: then
                   only the first of tp chunks and what the GEMMs cannot cover are exposed);
  partitioned checkpoints (full recompute): the layer input all-gathered over tp before each recompute,
                   exposed (`checkpoint_gather`, with the copies the stack's rebuild makes around it);
  unfused kernels: the memory-bound passes a stack's model code makes beyond the fused path the elementwise
                   term prices (the 2020 Megatron-LM fork's separate scale, mask, bias and residual kernels),
                   named apart (`unfused_elementwise`, cost/layer_compute.py);
  context parallel: K/V ring exchange hidden behind the attention core it feeds (ring attention);
  ZeRO-3 / FSDP: unit i+1's all-gather runs during unit i's compute (prefetch), so a pass exposes the
                   first gather plus, per unit, what its gather (+ reduce-scatter in backward) exceeds
                   the unit's compute by; the framework sets the calls per unit; ZeRO++ / MiCS / HSDP change
                   the groups, bytes and collectives of those gathers and reductions (cost.hierarchy), and
                   ZeRO-Infinity's fetch from host / NVMe joins the same chain (cost.offload);
  ZeRO-0/1/2: bucketed gradient reduce behind the last micro-batch's backward (a two-stage pipeline of
                   B buckets exposes max(a, b) + min(a, b)/B - a), ZeRO-2 in DeepSpeed after every
                   micro-batch; the parameter all-gather after the step behind the next forward where the
                   framework overlaps it (Megatron's distributed optimizer), else exposed;
  pipeline: m + (p-1)/v micro-batch slots (1F1B / interleaved bubble, Narayanan et al. 2021; p + (m-1)/v
                   where fewer micro-batches than stages run interleaved: pipeline_bubble_slots) of the
                   slowest stage, with p2p sends hidden where the framework overlaps them; a word embedding
                   held on the first and the last stage (tied output layer, MTP) has its gradient all-reduced
                   between the two once a step, exposed (`embedding_sync`); interleaved chunks of unequal size
                   run in lock-step, bounded from above (`interleaved_lockstep`: interleaved_steady_slot).
Then the optimizer (memory-bound Adam on HBM, or CPU-Adam with PCIe/NVMe copies when offloaded), and for
sharded data parallelism the HBM copies around its collectives (FSDP1's flat-parameter passes, FSDP2's
copy-in/out, DeepSpeed ZeRO-3's gradient bucket; `shard_copies`).
Mixture-of-experts layers (only in batches with MoE models; `cost/moe.py`) add, averaged over the layers,
the experts' grouped GEMMs, the router and the token permutation, the dispatch/combine all-to-all over the
ep group (exposed, or hidden behind the other micro-batch where the layout overlaps it), the experts'
gradient reduction over the expert data-parallel group and their Adam step; DualPipe sets the bubble.

Collectives are timed as NCCL runs them (`collectives`), over the links each group crosses
(`topology`). What differs between frameworks is looked up in `planner.frameworks`, never branched on.
`Efficiency.dp_overlap` / `tp_overlap` are residuals: the fraction of the communication the schedule can
hide that is hidden in practice (1 = the schedule's ideal; calibration fits them, e.g. CPU gloo ranks).

Where each part is computed (this module assembles one step from them: a layer's per-layer parts and
`step_time`): a dense layer's compute in cost/layer_compute.py, the rates one rank computes at and the GEMM
efficiency in cost/gemm.py, fused attention in cost/fused_attention.py, the overlap arithmetic in
cost/overlap.py, groups and their links in cost/groups.py, tensor-, context- and pipeline-parallel communication
in cost/model_parallel_comm.py, the stage split in cost/stages.py, data-parallel communication in
cost/data_parallel.py, the optimizer step in cost/optimizer_step.py, the MoE layers in cost/moe.py.
"""

from __future__ import annotations

import numpy as np

from planner.cost import (distinct, groups, hierarchy, layer_compute, moe, offload, optimizer_step, shard_copies,
                          stages)
from planner.cost.data_parallel import data_parallel, expert_data_parallel
from planner.cost.gemm import gemm_seconds, matmul_efficiency, output_layer_rates, rank_rates
from planner.cost.memory import element_bytes, expert_sharding
from planner.cost.model_parallel_comm import pipeline_send, pipeline_transfers, shared_embedding_sync, tensor_parallel
from planner.cost.stages import data_parallel_stage, stage_moe_layers, stage_split
from planner.frameworks import batch_framework_arrays
from planner.frameworks.moe import HOPPER_SMS, bubble_slots as moe_bubble_slots, pairs_stages
from planner.specs.candidate_batch import DTYPE_BYTES, CandidateBatch
from planner.specs.hardware import ClusterSpec
from planner.specs.pipeline_stages import padded_vocab, stage_argmax
from planner.specs.model import attended_keys, training_flops_breakdown


# Cross-entropy over the vocabulary is memory-bound and runs in fp32 (Megatron's
# `vocab_parallel_cross_entropy`, PyTorch's `cross_entropy` on upcast logits): per logit element the
# forward reads the 16-bit logits (2) and writes fp32 (4), the max/sum-exp pass reads them (4) and the
# softmax is written for backward (4); backward reads it (4) and writes the 16-bit gradient (2). Derived: 20.
CROSS_ENTROPY_BYTES_PER_LOGIT = 20.0
# A layer's parts that only MoE layers have (_layer_with_moe), charged per MoE layer of the pacing stage.
MOE_LAYER_PARTS = ("moe_launch_floor", "moe_experts", "ep_comm", "a2a_sm_share")


def _moe_layer(batch, cluster, gemm_peak, half, hbm, layer, comm):
    """The MoE parts of a layer (cost/moe.py) with the exposed all-to-all; None for a dense batch."""
    if not batch.has_moe:
        return None
    eff = cluster.efficiency
    parts = moe.moe_layer_times(batch, cluster, lambda m, n, k: gemm_seconds(m, n, k, gemm_peak, eff, half), hbm,
                                lambda size, stride: groups.links(cluster, size, stride, batch.gpus),
                                groups.collective_kwargs(cluster))
    # What the other micro-batch computes in this layer while the all-to-all runs (batch-level overlap).
    compute = moe.moe_fraction(batch) * (layer["forward"] + layer["backward"]) + parts["forward"] + parts["backward"]
    # It hides behind what the layer occupies the GPU for, its exposed tp/cp communication included: behind the
    # compute alone, compute that already hides the cp ring or tp collectives would hide the all-to-all again,
    # and a slower GPU would shorten the step.
    occupied = compute + moe.moe_fraction(batch) * (comm["forward"] + comm["backward"])
    unpaired = moe.unpaired_share(batch)
    parts["exposed"] = moe.exposed_ep_comm(parts, occupied, unpaired)
    sms = cluster.accelerator.sms or HOPPER_SMS
    parts["sm_share"] = moe.sm_share_seconds(batch, compute, parts["comm"], unpaired, sms)
    return parts


def _layer_seconds(batch: CandidateBatch, cluster: ClusterSpec) -> dict:
    """_layer_seconds_per_row, computed once per distinct combination of distinct.LAYER_COLUMNS (what the per-layer
    times, their exposed tp/cp communication and the output layer read; a search has a few
    thousand among a million candidates: cost/distinct.py) and spread to the candidates. (Where the ranks share a
    node's compute, rank_share, a rank's peak also depends on the job's size: tp, pp, dp, cp are in the key.)"""
    with_layer = batch.has_moe  # the MoE parts read the layer's own arrays: spread them only for MoE batches
    return distinct.once_per_combination(batch, distinct.LAYER_COLUMNS,
                                         lambda b: _layer_seconds_per_row(b, cluster, with_layer))


def _layer_seconds_per_row(batch: CandidateBatch, cluster: ClusterSpec, with_layer: bool) -> dict:
    """One transformer layer's seconds per micro-batch by step part (`per_layer`) and their sum (`dense_total`),
    what the layer occupies the GPU for in forward and backward (`occupied`: the window data-parallel traffic
    hides in), the output layer's forward (`logits`), the tp collectives' message bytes and count per layer and
    the pipeline's transfers (pipeline_transfers); with `with_layer` also _layer's and tensor_parallel's own
    arrays (`layer`, `comm`)."""
    eff = cluster.efficiency
    peak, hbm, half, gemm_peak = rank_rates(batch, cluster)
    fw = batch_framework_arrays(batch)
    layer = layer_compute.layer_seconds(batch, cluster, peak, gemm_peak, half, hbm, fw)
    comm = tensor_parallel(batch, cluster, layer, DTYPE_BYTES[batch.dtype.astype(int)], fw, hbm)
    tokens = batch.micro_batch * batch.seq_len / batch.cp
    logits_m, logits_n, logits_k = tokens, padded_vocab(batch) / batch.tp, batch.hidden  # the stack's padded rows too
    logits_peak, logits_half = output_layer_rates(batch, cluster, gemm_peak, half)
    logits_gemm = 2.0 * logits_m * logits_n * logits_k / (logits_peak * matmul_efficiency(logits_m, logits_n, logits_k,
                                                                                         eff, logits_half))
    cross_entropy = CROSS_ENTROPY_BYTES_PER_LOGIT * logits_m * logits_n / hbm
    # A multi-token-prediction block's 2h -> h projection of the normed hidden state and embedding (eh_proj, a
    # column-parallel linear without gathered output: NVIDIA/Megatron-LM@d98e8a64 megatron/core/transformer/
    # multi_token_prediction.py:1174-1187), forward; only models with MTP blocks run it.
    projection = (gemm_seconds(tokens, batch.hidden / batch.tp, 2.0 * batch.hidden, gemm_peak, eff, half)
                  if np.any(batch.mtp_layers) else 0.0)
    p2p_transfers, p2p_size = pipeline_transfers(batch, cluster, comm["message"], fw)
    issue = layer["issue"]
    # A pass is never shorter than the CPU's issue time: the floor is what the GPU's work leaves uncovered.
    floor = {"forward": np.maximum(issue["forward"] - layer["forward"] - comm["forward"], 0.0),
             "backward": np.maximum(issue["backward"] + issue["recompute"] - layer["backward"] - layer["recompute"]
                                    - comm["backward"], 0.0)}
    unfused = layer["unfused"]  # the stack's unfused kernels, named apart (zero for today's stacks)
    per_layer = {
        "forward": layer["forward"] - layer["elementwise"] - unfused["forward"],
        "backward": layer["backward"] - 2.0 * layer["elementwise"] - unfused["backward"],
        "elementwise": 3.0 * layer["elementwise"],
        "recompute": layer["recompute"] - unfused["recompute"],
        "launch_floor": floor["forward"] + floor["backward"],
        "tp_comm": comm["tp"],
        "cp_comm": comm["cp"],
        "overhead": np.full(len(batch), eff.layer_overhead_s),
    }
    if np.any(unfused["forward"]) or np.any(unfused["backward"]):  # only stacks whose model code runs them unfused
        per_layer["unfused_elementwise"] = unfused["forward"] + unfused["backward"] + unfused["recompute"]
    if comm["qkv_gather"].any():  # only stacks that run tp a multiple of the kv heads pay it
        per_layer["qkv_gather"] = comm["qkv_gather"]
    if comm["checkpoint_gather"].any():  # only layouts with partitioned full-recompute checkpoints pay it
        per_layer["checkpoint_gather"] = comm["checkpoint_gather"]
    seconds = {
        "per_layer": per_layer,
        "dense_total": sum(per_layer.values()),
        # Data-parallel traffic hides behind what a layer occupies the GPU for: its compute, its exposed
        # tp/cp communication and the launch floor (max(issue, compute + comm), monotone in every input).
        "occupied": {"forward": layer["forward"] + comm["forward"] + floor["forward"],
                     "backward": layer["backward"] + layer["recompute"] + comm["backward"] + floor["backward"]},
        # Forward of the output layer plus a third of the loss traffic, so that 3 x logits (forward and the
        # 2x backward) charges the GEMMs three times and the loss once.
        "logits": logits_gemm + cross_entropy / 3.0,
        "mtp_projection": projection,
        "tp_message": comm["message"],
        "tp_count": comm["tp_count"],
        "p2p_transfers": p2p_transfers,
        "p2p_size": p2p_size,
    }
    if with_layer:
        seconds.update(layer=layer, comm=comm, floor=floor)
    return seconds


def step_time(batch: CandidateBatch, cluster: ClusterSpec) -> dict[str, np.ndarray]:
    """Named seconds per step (summing to `step_time_s`) plus throughput figures, per candidate."""
    fw = batch_framework_arrays(batch)
    # What one rank gets of its accelerator's compute and HBM bandwidth.
    peak, hbm, half, gemm_peak = rank_rates(batch, cluster)
    w = DTYPE_BYTES[batch.dtype.astype(int)]
    m = batch.grad_accumulation
    seconds = _layer_seconds(batch, cluster)
    layer = _layer_with_moe(batch, cluster, fw, seconds, gemm_peak, half, hbm)
    p2p, p2p_bytes, p2p_fill = pipeline_send(batch, seconds["p2p_transfers"], seconds["p2p_size"], fw)
    head = _last_stage_head(batch, seconds)
    pace = _pacing_stage(batch, cluster, fw, hbm, layer, head, p2p)
    # Every stage gathers, reduces and all-gathers its own parameters; the stage holding the most sets the
    # data-parallel traffic the step waits for.
    params, dp_layers, dp_on_last = data_parallel_stage(batch)
    stage = _data_parallel_window(dp_layers, np.where(dp_on_last, head, 0.0), layer["forward"], layer["backward"])
    dp_exposed, dp_bytes, offload_fetch, dp_window_used = data_parallel(batch, cluster, fw, w, stage, params, m)
    layers_per_step = m * pace["layers"]  # the pacing stage's layers over the step's micro-batches
    parts = _step_parts(batch, cluster, fw, w, hbm, m, layer, pace, layers_per_step, p2p, p2p_fill, stage, params,
                        dp_exposed, offload_fetch)
    embedding_sync, embedding_bytes = shared_embedding_sync(batch, cluster, element_bytes(batch, fw)["grads"])
    if np.any(embedding_sync):  # a word embedding held on the first and the last stage (tied, or MTP's copy)
        parts["embedding_sync"] = embedding_sync
    moe_layer = layer["moe"]
    expert_window_used = None
    if moe_layer is not None:
        expert_dp_bytes, expert_window_used = _add_expert_parts(batch, cluster, fw, w, hbm, parts, layer["per_layer"],
                                                                layers_per_step, m * pace["moe_layers"], stage,
                                                                dp_window_used, m)
    if np.any(batch.activation_offload):  # the checkpoints' host copies, in what the dp traffic leaves of the passes
        parts["offload_copies"] = parts["offload_copies"] + offload.activation_copies(
            batch, cluster, fw, stage, m, dp_window_used, expert_window_used)
    # The pacing stage's per-micro-batch seconds are split into named parts above; the other stages idle
    # in the difference, which the slot (micro_batch_s) already accounts for.
    total = sum(parts.values())
    return {
        "parts": parts,
        "step_time_s": total,
        "tokens_per_s": batch.global_batch * batch.seq_len / total,
        **_flop_rates(batch, total, peak),
        "comm_bytes_per_step": {
            "tp": np.where(batch.tp > 1, layers_per_step * seconds["tp_count"] * seconds["tp_message"], 0.0),
            "dp": dp_bytes,
            "dp_cross_node": hierarchy.dp_cross_node(batch, cluster, fw, w, params, m, dp_bytes),
            "pp": m * p2p_bytes,
            "embedding_sync": embedding_bytes,
            **({} if moe_layer is None else {"ep": _over_moe_layers(batch, moe_layer["bytes"], layers_per_step,
                                                                    m * pace["moe_layers"]),
                                             "expert_dp": expert_dp_bytes}),
        },
    }


def _layer_with_moe(batch, cluster, fw, seconds, gemm_peak, half, hbm) -> dict:
    """A layer's seconds by part (`per_layer`) and their sum (`total`), what it occupies the GPU for in forward and
    backward (`forward`, `backward`), with the MoE parts (`moe`: cost/moe.py; None for a dense batch) added."""
    per_layer = dict(seconds["per_layer"])
    layer_total = seconds["dense_total"]
    layer_forward, layer_backward = seconds["occupied"]["forward"], seconds["occupied"]["backward"]
    moe_layer = None
    if batch.has_moe:  # averaged over the layers (cost/moe.py)
        layer, comm = seconds["layer"], seconds["comm"]
        moe_layer = _moe_layer(batch, cluster, gemm_peak, half, hbm, layer, comm)
        issue = layer["issue"]
        # GPU time the dense part of a layer leaves beyond its own issue time (the host's lead), by pass. Under full
        # recompute the backward pass runs two pairs of dense and MoE work: the recompute's (its compute, its forward
        # communication again and the checkpoint gather before it) and the backward's own. Each MoE part is floored
        # against its own pair's dense slack, and the dense floors of an MoE layer are taken pair by pair too: a
        # dense backward floor pooled over the two pairs let the recompute's slack cover the backward's deficit
        # and the MoE recompute's at once, so slower communication took more off the floors than it added
        # (megatron-2022, NVLink at half: the step 118.4 -> 117.4 ms).
        full = batch.recompute == 2
        rerun_gpu = layer["recompute"] + comm["forward"] + comm["checkpoint_gather"]
        own_gpu = layer["backward"] + layer["recompute"] + comm["backward"] - np.where(full, rerun_gpu, 0.0)
        own_issue = issue["backward"] + np.where(full, 0.0, issue["recompute"])
        slack = {"forward": np.maximum(layer["forward"] + comm["forward"] - issue["forward"], 0.0),
                 "backward": np.maximum(own_gpu - own_issue, 0.0),
                 "recompute": np.maximum(rerun_gpu - issue["recompute"], 0.0)}
        # The dense backward floor (_layer_seconds' `floor`, pooled over the pass) taken pair by pair instead.
        by_pair = np.maximum(issue["recompute"] - rerun_gpu, 0.0) + np.maximum(own_issue - own_gpu, 0.0)
        unpooled = np.where(full, moe.moe_fraction(batch) * (by_pair - seconds["floor"]["backward"]), 0.0)
        per_layer["launch_floor"] = per_layer["launch_floor"] + unpooled
        layer_total = layer_total + unpooled
        layer_backward = layer_backward + unpooled
        moe_floor = moe.launch_floor_seconds(batch, moe_layer, slack, fw["eager_dispatch"] > 0)
        per_layer["moe_launch_floor"] = moe_floor["forward"] + moe_floor["backward"]
        per_layer["moe_experts"] = moe_layer["forward"] + moe_layer["backward"] + moe_layer["recompute"]
        per_layer["ep_comm"] = moe_layer["exposed"]
        per_layer["a2a_sm_share"] = moe_layer["sm_share"]
        # The sum of every per_layer part, in per_layer's order (the dense parts' sum came with them).
        layer_total = (layer_total + per_layer["moe_launch_floor"] + per_layer["moe_experts"] + per_layer["ep_comm"]
                       + per_layer["a2a_sm_share"])
        # The MoE layers' launch floor too: the GPU is held by the layer meanwhile.
        layer_forward = layer_forward + moe_layer["forward"] + moe_floor["forward"]
        layer_backward = layer_backward + moe_layer["backward"] + moe_layer["recompute"] + moe_floor["backward"]
        # What the overlapped all-to-all hides in is taken from the windows the data-parallel traffic hides in, in
        # proportion to each pass's share: both run beside the same compute, on the same SMs and (where ep leaves
        # the node) the same NICs, so more compute hides each second of communication at most once. Counted
        # twice, halving every peak FLOP/s shortened a step (Qwen3-30B-A3B tp2 ep8 etp2 ZeRO-3, 2.617 -> 2.562 s).
        hidden = moe_layer["comm"] - moe_layer["exposed"]
        occupied = layer_forward + layer_backward
        left = np.maximum(occupied - hidden, 0.0) / np.where(occupied > 0.0, occupied, 1.0)
        layer_forward, layer_backward = layer_forward * left, layer_backward * left
    moe_total = 0.0 if moe_layer is None else sum(per_layer[name] for name in MOE_LAYER_PARTS)
    return {"per_layer": per_layer, "total": layer_total, "forward": layer_forward, "backward": layer_backward,
            "moe": moe_layer, "moe_total": moe_total}


def _pacing_stage(batch, cluster, fw, hbm, layer, head, p2p) -> dict:
    """The stage that sets the pace (the slowest per micro-batch): its `layers`, `moe_layers` (cost.stages.
    stage_moe_layers; its `layers` for a dense batch), `params` and the forward seconds of its output-layer passes
    (`head`) per micro-batch (`params`: its dense and routed-expert parameters on one GPU), the micro-batch slot
    `micro_batch_s`, a slot of the fill and drain `bubble_slot_s`, and the gradient accumulation per parameter per
    micro-batch (`accumulate`: optimizer_step.grad_accumulation). `layer`: _layer_with_moe's, whose MoE parts are
    a mean over the model's layers and are charged per MoE layer the stage holds; `head`: the last stage's
    output-layer forward seconds (_last_stage_head)."""
    split = stage_split(batch)
    accumulate = optimizer_step.grad_accumulation(batch, fw, hbm)  # seconds per parameter per micro-batch
    layers, moe_layers, params = split["layers"], split["moe_layers"], split["params"]
    if batch.has_moe:  # the stage's routed experts accumulate their gradients as its dense parameters do
        params = tuple(p + moe.expert_params_per_gpu(batch, e) for p, e in zip(params, moe_layers))
    heads = (0.0, 0.0, head)
    paired = pairs_stages(batch)
    if np.any(paired):
        # A rank holding stage r and stage pp - 1 - r runs each micro-batch through one of them, half the
        # micro-batches each: per micro-batch, the mean of the first and the last stage on the end ranks.
        def ends(rows):
            mean = (rows[0] + rows[2]) / 2.0
            return np.where(paired, mean, rows[0]), rows[1], np.where(paired, mean, rows[2])
        layers, moe_layers, params, heads = ends(layers), ends(moe_layers), ends(params), ends(heads)
    # Forward + 2x backward of the output layer (and the MTP projections) on the stages that run them.
    # A stage's layers at the model's mean layer, and its MoE layers beyond the mean's share of them (0 where every
    # layer is an MoE layer: the same numbers as the mean to the last bit).
    stage_seconds = np.stack([n * layer["total"] + _moe_layers_beyond_mean(batch, n, e) * layer["moe_total"]
                              + accumulate * p + (3.0 * h if np.ndim(h) or h else 0.0)
                              for n, e, h, p in zip(layers, moe_layers, heads, params)])
    pacing = stage_argmax(stage_seconds)
    pick = lambda rows: np.choose(pacing, [np.broadcast_to(row, pacing.shape) for row in rows])  # noqa: E731
    slowest = stage_seconds.max(axis=0)
    slot_rest = p2p + cluster.efficiency.microbatch_overhead_s
    lockstep = _interleaved_lockstep(batch, stage_seconds, layers, heads, slowest, paired)
    return {"layers": pick(layers), "moe_layers": pick(moe_layers), "params": pick(params), "head": pick(heads),
            "micro_batch_s": slowest + lockstep + slot_rest,
            "bubble_slot_s": _other_stages_mean(batch, stage_seconds, slowest) + slot_rest, "accumulate": accumulate,
            "lockstep_s": lockstep}


def interleaved_steady_slot(p, v, first_chunk0, first_other, middle, last_other, last_end):
    """Seconds per micro-batch of the interleaved schedule's steady state, from its chunks' seconds (forward and
    backward of one micro-batch): the first rank's chunk 0 (`first_chunk0`, beside the embedding), the largest of
    its other chunks, of any middle rank's, of the last rank's but its last, and that last chunk (`last_end`, with the
    output layer and the loss).

    Megatron-Core moves groups of pp micro-batches through a rank's v chunks in turn, forward and backward
    alternating (get_schedule_table and the warm-up counts at NVIDIA/Megatron-LM@d98e8a64
    megatron/core/pipeline_parallel/schedules.py:957-1016), so the ranks run in lock-step chunk by chunk: a chunk
    lighter than the same step's chunk on another rank waits for it, and a rank's heavier chunk holds up the others.
    The event simulation of that schedule (tests/cost/test_pipeline_schedule.py) runs every rank's total only where
    the chunks but the two end ones are of one size, whatever those two; elsewhere its steady state lies between the
    fullest rank's total and v times the largest chunk, with no closed form (its critical cycles mix ranks and chunks
    in fractional counts). A schedule never runs faster where a chunk takes longer, so raising every other chunk to
    the largest of them gives a bound the simulation reaches where the chunks deal evenly and exceeds elsewhere by
    what raising the lighter chunks costs: max(v Q, (v - 1) Q + the heavier end chunk), Q the largest of the
    others (with two ranks no rank holds v of them: (v - 1) Q + the heavier end chunk). In the simulation
    (tests/cost/test_pipeline_schedule.py, one second a layer): DeepSeek-V3's 61 layers on pp 8 x vpp 4 with 5 on the
    last rank (2, 1, 1, 1 beside the MTP block and the loss) were priced 16% fast at the fullest rank's total and are
    1.7% slow with the bound; NVIDIA's own 7|..|6 split, dealt as its recipe deals it (pipeline_chunks.
    _end_rank_chunks), and every even split are exact. The bound is 2-8% slow where chunks differ by a layer (Llama
    3.1 405B's 3, 3, 2 on pp 16 x vpp 3) and up to 26% where a light end rank's one-layer chunks sit beside middle
    chunks of three (61 layers, 4 on the last rank, pp 8 x vpp 4: 18% fast at the total): the search avoids such
    splits rather than choosing them for a speed they do not have."""
    widest = np.maximum(np.maximum(first_other, middle), last_other)
    ends = (v - 1.0) * widest + np.maximum(first_chunk0, last_end)
    return np.where(np.asarray(p) > 2, np.maximum(v * widest, ends), ends)


def _interleaved_lockstep(batch, stage_seconds, layers, heads, slowest, paired):
    """What the interleaved steady state (interleaved_steady_slot) adds per micro-batch to the slowest stage's
    seconds, 0 without interleaving; each chunk at its rank's mean seconds per layer (the output-layer passes apart:
    `heads`, on the last chunk)."""
    on = (batch.pp > 1) & (batch.vpp > 1) & ~np.asarray(paired, dtype=bool)
    if not np.any(on):
        return np.zeros_like(slowest)
    first0, first_other, middle, last_other, last_end = stages.interleaved_chunks(batch)
    per_layer = [(s - 3.0 * np.asarray(h)) / np.maximum(n, 1.0) for s, n, h in zip(stage_seconds, layers, heads)]
    slot = interleaved_steady_slot(batch.pp, batch.vpp, first0 * per_layer[0], first_other * per_layer[0],
                                   middle * per_layer[1], last_other * per_layer[2],
                                   (last_end + batch.mtp_layers) * per_layer[2] + 3.0 * np.asarray(heads[2]))
    return np.where(on, np.maximum(slot - slowest, 0.0), 0.0)


def _other_stages_mean(batch, stage_seconds, slowest):
    """Seconds per micro-batch of the stages other than the slowest, on average: a slot of the pipeline's fill and
    drain. The first micro-batch's forward and the last one's backward pass every stage at that stage's own speed;
    only the steady state runs at the slowest's. Megatron-Core's schedule (get_schedule_table, warm-up counts at
    NVIDIA/Megatron-LM@d98e8a64 schedules.py:957-1016) run as an event simulation gives m S_max + (sum S - S_max)/v
    with stages S_r per micro-batch (the pipeline-schedule audit): Llama 3 70B tp8 pp8 on 64 H100s at 8 micro-batches
    was 4.1% slow at (p - 1)/v slots of the slowest stage, whose last rank holds the output layer. The middle row is
    the fullest middle stage (stage_layers), so the sum is never short; one stage: no fill."""
    first, middle, last = stage_seconds
    p = batch.pp
    total = first + np.maximum(p - 2.0, 0.0) * middle + last
    # Two stages: the other is the lighter real end (the middle row only stands for the fuller one).
    others = np.where(p == 2, np.minimum(first, last), (total - slowest) / np.maximum(p - 1.0, 1.0))
    return np.where(p > 1, others, slowest)


def _last_stage_head(batch, seconds):
    """Forward seconds per micro-batch of the last stage's output-layer passes: once for the model and once more
    for each multi-token-prediction block, which shares it (stage_layers), with that block's 2h -> h projection."""
    if not np.any(batch.mtp_layers):
        return seconds["logits"]
    return (1.0 + batch.mtp_layers) * seconds["logits"] + batch.mtp_layers * seconds["mtp_projection"]


def _data_parallel_window(dp_layers, dp_head, layer_forward, layer_backward) -> dict:
    """The compute the data-parallel traffic of the stage holding the most parameters hides behind: its layers,
    one layer's forward and backward, and its whole forward and backward pass (with `dp_head`, the output layer's
    forward seconds, on the last)."""
    return {
        "layers": dp_layers,
        "layer_forward": layer_forward,
        "layer_backward": layer_backward,
        "forward": dp_layers * layer_forward + dp_head,
        "backward": dp_layers * layer_backward + 2.0 * dp_head,
    }


def pipeline_bubble_slots(p, v, m, share=None):
    """The idle time of a pipeline step, in slots of one micro-batch's forward and backward on one stage.

    Each micro-batch passes through the p x v model chunks in turn, each 1/v of a slot on its stage, so the step's
    critical path is the first micro-batch's p slots plus 1/v for each of the m - 1 after it where they follow
    chunk by chunk: p + (m - 1)/v slots against m of work, (p - m) + (m - 1)/v idle. From m = p on the stages are
    full and it is the interleaved schedule's (p - 1)/v (Narayanan et al. 2021, SC21 Sec. 2.2.2); with v = 1, p - 1
    whatever m. Fewer micro-batches than stages run interleaved where the stack allows it (torch's
    ScheduleInterleaved1F1B: frameworks.interleaving_round), and were priced at (p - 1)/v: a 4-stage, 8-chunk
    pipeline of one micro-batch at 3/8 of a slot, where its stages can only run one after another.
    `share`: the largest chunk's share of a rank's micro-batch (pipeline_stages.chunk_share; 1/v where the layers
    deal evenly over the chunks, more where they do not, which each slot then takes)."""
    m = np.maximum(m, 1)
    share = 1.0 / v if share is None else share
    return np.maximum(p - m, 0) + (np.minimum(m, p) - 1) * share


def _step_parts(batch, cluster, fw, w, hbm, m, layer, pace, layers_per_step, p2p, p2p_fill, stage, params,
                dp_exposed, offload_fetch) -> dict:
    """The step's named dense parts: the pacing stage's per-layer parts over the step, the pipeline's sends and
    bubble, the data-parallel and offload traffic, the optimizer and the overheads."""
    eff = cluster.efficiency
    p, v = batch.pp, batch.vpp
    per_layer = layer["per_layer"]
    head, accumulate = pace["head"], pace["accumulate"]
    optimizer, offload_copies = optimizer_step.optimizer(batch, cluster)
    bubble_slots = pipeline_bubble_slots(p, v, m, stages.largest_chunk_share(batch))  # 0 without a pipeline (p = 1)
    paced = lambda part: layers_per_step * part  # noqa: E731 - a per-layer part over the step
    if layer["moe"] is not None:  # DualPipe's bubble (frameworks/moe.py)
        bubble_slots = moe_bubble_slots(p, batch.a2a_overlap, bubble_slots)
    parts = {
        "forward": paced(per_layer["forward"]) + m * head,
        "backward": paced(per_layer["backward"]) + m * 2.0 * head,
        "elementwise": paced(per_layer["elementwise"]),
        "recompute": paced(per_layer["recompute"]),
        "launch_floor": paced(per_layer["launch_floor"]),
        "tp_comm": paced(per_layer["tp_comm"]),
        "cp_comm": paced(per_layer["cp_comm"]),
        "pp_p2p": m * p2p + p2p_fill,
        "bubble": bubble_slots * pace["bubble_slot_s"],
        "dp_comm_exposed": dp_exposed,
        "optimizer": optimizer,
        "offload_copies": offload_copies + offload_fetch,
        "overhead": paced(per_layer["overhead"]) + m * eff.microbatch_overhead_s + eff.step_overhead_s,
    }
    if np.any(pace["lockstep_s"]):  # interleaved chunks of unequal seconds (interleaved_steady_slot)
        parts["interleaved_lockstep"] = m * pace["lockstep_s"]
    if np.any(accumulate):
        parts["grad_accumulation"] = m * accumulate * pace["params"]
    if "unfused_elementwise" in per_layer:  # the 2020 Megatron-LM fork's unfused kernels (layer_compute)
        parts["unfused_elementwise"] = paced(per_layer["unfused_elementwise"])
    if "qkv_gather" in per_layer:
        parts["qkv_gather"] = paced(per_layer["qkv_gather"])
    if "checkpoint_gather" in per_layer:  # partitioned checkpoints rebuilt over tp before each recompute
        parts["checkpoint_gather"] = paced(per_layer["checkpoint_gather"])
    # The HBM copies sharded data parallelism makes around its collectives (cost/shard_copies.py).
    copies = shard_copies.seconds_per_step(batch, fw, w, element_bytes(batch, fw)["reduce"], params, m, hbm,
                                          cluster.gpus_per_node)
    if copies is not None:
        parts["shard_copies"] = copies
    return parts


def _moe_layers_beyond_mean(batch, layers, moe_layers):
    """How many mean layers' worth of MoE parts `moe_layers` MoE layers add beyond what `layers` layers at the model's
    mean (moe_fraction of a layer MoE) hold: (moe_layers - fraction x layers) / fraction; 0 for a dense batch, and 0
    where every layer is an MoE layer (the same numbers as the mean to the last bit)."""
    if batch.moe_layers is None:
        return 0.0
    fraction = moe.moe_fraction(batch)
    return (moe_layers - fraction * layers) / np.where(fraction > 0, fraction, 1.0)


def _over_moe_layers(batch, part, layers_per_step, moe_layers_per_step):
    """A per-layer MoE part (a mean over the model's layers) over the pacing stage's step: its layers at the mean and
    its MoE layers beyond the mean's share of them (_moe_layers_beyond_mean)."""
    return layers_per_step * part + _moe_layers_beyond_mean(batch, layers_per_step, moe_layers_per_step) * part


def _add_expert_parts(batch, cluster, fw, w, hbm, parts, per_layer, layers_per_step, moe_layers_per_step, stage,
                      dp_window_used, m):
    """Add the MoE layers' parts over the step (`moe_layers_per_step` of the pacing stage's MoE layers: the per-layer
    parts are means over the model's layers, charged per MoE layer), the experts' exposed gradient reduction and
    their Adam step to
    `parts`; returns the experts' data-parallel bytes and the seconds of each window their traffic hides in. The
    experts' reduction and Adam step are those of the stage holding the most MoE layers (cost.stages.stage_moe_layers),
    which the step waits for: the stage with the most dense parameters holds the embedding and, with a lighter end
    split, fewer experts (the cost-model audit: Qwen3-30B-A3B on pp 6 with ends of 4 layers priced the experts of 4
    layers where the middle ranks hold 10). The experts' HBM copies around their sharded reduction and gathers (cost/shard_copies.py, over the
    expert sharding group) are added to `shard_copies` as the dense parameters' are: a one-expert model ran 2.6%
    faster than its dense twin on FSDP without them (the metamorphic audit)."""
    expert_params = moe.expert_params_per_gpu(batch, np.max(np.stack(stage_moe_layers(batch)), axis=0))
    sharding = expert_sharding(batch, fw)
    copies = shard_copies.seconds_per_step(batch, fw, w, element_bytes(batch, fw)["reduce"], expert_params, m, hbm,
                                          cluster.gpus_per_node, world=sharding["grads"])
    if copies is not None:
        parts["shard_copies"] = parts["shard_copies"] + copies
    expert_dp_exposed, expert_dp_bytes, expert_window_used = expert_data_parallel(batch, cluster, fw, w, stage,
                                                                                  expert_params, dp_window_used)
    # Adam over this GPU's expert shard (ZeRO >= 1: over the expert sharding group), on HBM or, offloaded, on the
    # host with its copies, as the dense states' (optimizer_step.adam_seconds).
    shard = np.where(batch.zero >= 1, expert_params / sharding["weights"], expert_params)
    expert_optimizer, expert_copies = optimizer_step.adam_seconds(batch, cluster, shard, w, hbm)
    parts["offload_copies"] = parts["offload_copies"] + expert_copies
    paced = lambda part: _over_moe_layers(batch, part, layers_per_step, moe_layers_per_step)  # noqa: E731
    parts.update({"moe_experts": paced(per_layer["moe_experts"]), "ep_comm": paced(per_layer["ep_comm"]),
                  "moe_launch_floor": paced(per_layer["moe_launch_floor"]),
                  "a2a_sm_share": paced(per_layer["a2a_sm_share"]),
                  "expert_dp_comm_exposed": expert_dp_exposed})
    parts["optimizer"] = parts["optimizer"] + expert_optimizer
    return expert_dp_bytes, expert_window_used


def _flop_rates(batch, total, peak) -> dict:
    """Model FLOPs per step and the rates they give: TFLOP/s per GPU, MFU and HFU."""
    # Model FLOPs count the causal half of attention (what the model needs; with a sliding window only the
    # keys inside it, so the window lowers the model FLOPs and MFU does not credit the skipped pairs); the hardware also runs what
    # an unfused kernel computes in the masked half, and what recompute runs again (one forward of every
    # layer for full, of the attention core for selective where the stack recomputes it). Same accounting as the time above, so
    # MFU <= HFU <= 1.
    variant = {} if batch.core_width is None else dict(
        core_width=batch.core_width, moe_layers=batch.moe_layers, expert_ffn=batch.expert_ffn, top_k=batch.top_k,
        experts=batch.experts)
    window = {} if batch.attention_window is None else {"attention_window": batch.attention_window}
    flop_parts = training_flops_breakdown(batch.layers, batch.hidden, batch.heads, batch.kv_heads, batch.ffn,
                                          batch.mlp_matrices, batch.vocab, batch.seq_len,
                                          batch.global_batch * batch.seq_len, causal=True, **variant, **window)
    # Each multi-token-prediction block (counted in batch.layers) runs the output layer once more, and its 2h -> h
    # projection: forward and backward, 3 x 2 x tokens x 2h x h (Megatron counts it: training/training.py:1288-1296).
    mtp = np.any(batch.mtp_layers)  # most batches have none: no full-size passes for them
    flops = flop_parts["total"]
    if mtp:
        projection = 12.0 * batch.hidden * batch.hidden * batch.global_batch * batch.seq_len
        flops = flops + batch.mtp_layers * (flop_parts["logits"] + projection)
    if "experts" in flop_parts and batch.moe_imbalance is not None:
        # A capacity below the mean load (capacity factor < 1) drops the tokens beyond it (moe_imbalance is then the
        # capacity factor, frameworks.moe.routing_imbalance): the experts compute only the kept share, and the time
        # above is charged for that share, so the model FLOPs count it too.
        flops = flops - flop_parts["experts"] * (1.0 - np.fmin(batch.moe_imbalance, 1.0))
    # The unfused path computes the whole square: s keys per query against the attended ones counted.
    unfused_factor = 2.0 if not window else batch.seq_len / attended_keys(batch.seq_len, batch.attention_window)
    executed_core = flop_parts["attention_core"] * np.where(batch.flash_attention, 1.0, unfused_factor)
    executed = flops - flop_parts["attention_core"] + executed_core
    selective = layer_compute.recomputes_attention_core(batch, batch_framework_arrays(batch))
    recompute_flops = np.select([batch.recompute == 2, selective],
                                [(executed - (1.0 + batch.mtp_layers if mtp else 1.0) * flop_parts["logits"]) / 3.0,
                                 executed_core / 3.0], 0.0)
    tflops_per_gpu = flops / total / batch.gpus
    return {"model_flops_per_step": flops, "tflops_per_gpu": tflops_per_gpu / 1e12, "mfu": tflops_per_gpu / peak,
            "hfu": (executed + recompute_flops) / total / batch.gpus / peak}
