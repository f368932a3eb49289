"""Mixture-of-experts layers in the cost model: expert GEMMs, router, token dispatch and combine, the
experts' gradient reduction and optimizer, and their memory. Pure, vectorised; called by step_time and
memory only for batches with MoE columns (a batch of dense models never gets here).

Per MoE layer and micro-batch, on one GPU of a pipeline stage (T = micro_batch x seq / cp tokens per tp
group, T/tp per rank as Megatron's alltoall dispatcher holds them under sequence parallelism):
  router      GEMM (T/tp, E, h) + softmax/top-k traffic over T/tp x E fp32 scores;
  dispatch    all-to-all over the ep group of the rank's T/tp x k token copies (h elements each, fp8 where
              the stack dispatches fp8 in fp8 training), combine the same back in the model dtype, both
              again in backward (and in a full recompute); with etp > 1 the received tokens are all-gathered
              over the etp group and the outputs reduce-scattered;
  experts     E/ep local experts, each a grouped GEMM of M = T·k·etp·ep / (tp·E) rows (the ep group's tokens
              routed to it) x the expert's matrices split over etp, at the matmul efficiency of that
              shape (the same curve as every other GEMM: the stacks' expert GEMMs are cuBLAS kernels,
              frameworks/moe.py), times the load imbalance (the busiest rank
              paces the layer; at most min(ep, E/k) where the rows are the routed ones,
              busiest_rank_load); backward 2x;
  permute     read and write the token copies on each side of the all-to-all (memory-bound); in fp8
              dropless on Megatron + TE, the copies that pad each expert's rows to the fp8 alignment; on
              Megatron with more than one local expert, the received rows sorted into expert order and the
              experts' output unsorted (its dispatcher's "Permutation 2");
  launches    the router's, dispatcher's and per-expert kernels the host issues (cost.kernels), after
              Megatron's per-layer host sync on the token counts (launch_floor_seconds).
Everything is averaged over the model's layers (moe_layers / layers of them are MoE), as the stage
split is.

Overlap (planner.frameworks.moe): with Megatron's --overlap-moe-expert-parallel-comm or DeepSeek's
DualPipe the all-to-all of one micro-batch runs while another computes: exposed = what the layer's
compute (forward + backward) does not cover; otherwise all of it is exposed.

Expert weights, gradients and optimizer states live on ep x etp ranks and are replicated over the
edp = tp·cp·dp / (ep·etp) expert data-parallel ranks: gradients are reduced and (ZeRO >= 1) the optimizer
sharded over edp (Megatron's expert data-parallel group, parallel_state.py:873-880).
"""

from __future__ import annotations

import numpy as np

from planner.cost import collectives, kernels
from planner.frameworks import FRAMEWORK_NAMES
from planner.frameworks.moe import A2A_OVERLAPS, MOE_STACKS, WARMUP_RUNS_ALONE, interleaved_warmup_forwards
from planner.specs.candidate_batch import DTYPE_BYTES, DTYPE_CODES, CandidateBatch

ROUTER_SCORE_BYTES = 4.0  # router logits and probabilities in fp32 (Megatron's router casts to fp32)
PROB_BYTES = 4.0
_HIDES = np.array([float(o.hides_all_to_all) for o in A2A_OVERLAPS.values()])
_COPIES = np.array([o.parameter_copies for o in A2A_OVERLAPS.values()])
_COMMUNICATION_SMS = np.array([o.communication_sms for o in A2A_OVERLAPS.values()], dtype=float)
_SMS_WHILE_COMMUNICATING = np.array([o.sms_held_only_while_communicating for o in A2A_OVERLAPS.values()])


def _stack_column(field: str) -> np.ndarray:
    """A MoEStack field per framework code (every stack has its row), as floats."""
    return np.array([np.asarray(getattr(MOE_STACKS[name], field), dtype=float)
                     for name in FRAMEWORK_NAMES])


_PADS = _stack_column("fp8_pads_expert_rows")
_SYNCS = _stack_column("host_syncs_per_layer_forward")
_SORTS = _stack_column("sorts_received_tokens_by_expert")
_NODE_DISPATCH_SMS = _stack_column("node_dispatch_sms")
_FP8_DISPATCH = _stack_column("fp8_dispatch")
_FP8_SAVED_BYTES = _stack_column("fp8_saved_bytes")  # (frameworks, 3)


def moe_fraction(batch: CandidateBatch) -> np.ndarray:
    return batch.moe_layers / batch.layers


def expert_params_per_gpu(batch: CandidateBatch, stage_moe_layers) -> np.ndarray:
    """Routed-expert parameters one GPU holds for `stage_moe_layers` MoE layers (its E/ep experts, 1/etp of each)."""
    return stage_moe_layers * batch.expert_params / (batch.ep * batch.etp)


def expert_dp(batch: CandidateBatch) -> np.ndarray:
    """Expert data-parallel ranks: tp·cp·dp / (ep·etp)."""
    return batch.tp * batch.cp * batch.dp / (batch.ep * batch.etp)


def busiest_rank_load(batch: CandidateBatch) -> np.ndarray:
    """The busiest expert rank's routed rows over the mean that the layers are priced at: the batch's
    moe_imbalance, at most what routing can put on one rank where the rows are the routed tokens (dropless, or
    capped by a capacity factor). Each of the ep ranks routes T·k token copies, T·k on a rank on average; a token
    picks k distinct experts, so it sends one rank at most min(k, E/ep) of them (that rank's E/ep experts), and
    that rank receives at most ep·T·min(k, E/ep): min(ep, E/k) times the mean. With ep = 1 the one rank computes
    every routed row, however the experts share them. Padded to a capacity, every expert computes its capacity
    whatever the routing, so the capacity factor stands as it is (frameworks.moe.routing_imbalance)."""
    top_k = np.asarray(batch.top_k, dtype=float)  # 0 on a dense model's rows in a mixed batch: bound 1 there
    most = np.minimum(batch.ep, np.divide(batch.experts, top_k, out=np.ones_like(top_k), where=top_k > 0))
    return np.where(batch.moe_padded > 0, batch.moe_imbalance, np.minimum(batch.moe_imbalance, most))


def _tokens(batch: CandidateBatch):
    """Tokens per rank (T/tp) and the token-expert rows this GPU's experts process (M_total), imbalance in."""
    T = batch.micro_batch * batch.seq_len / batch.cp
    per_rank = T / batch.tp
    rows = T * batch.top_k * batch.etp / batch.tp * busiest_rank_load(batch)
    return per_rank, rows


def dispatch_element_bytes(batch: CandidateBatch) -> np.ndarray:
    """Bytes per element of dispatched tokens: fp8 where the stack dispatches fp8 in fp8 training."""
    w = DTYPE_BYTES[batch.dtype.astype(int)]
    fp8 = (batch.dtype == DTYPE_CODES["fp8"]) & (_FP8_DISPATCH[batch.framework.astype(int)] > 0)
    return np.where(fp8, 1.0, w)


def all_to_all_bytes(batch: CandidateBatch) -> dict[str, np.ndarray]:
    """Bytes each rank puts into one dispatch and one combine all-to-all of one MoE layer (its T/tp x k token
    copies of h elements, at the busiest rank's load)."""
    per_rank, _ = _tokens(batch)
    copies = per_rank * batch.top_k * batch.hidden * busiest_rank_load(batch)
    return {"dispatch": copies * dispatch_element_bytes(batch), "combine": copies * DTYPE_BYTES[batch.dtype.astype(int)]}


def _inter_node_bytes(batch: CandidateBatch, links, volume):
    """Scale-out bytes per rank where node-limited routing sends each token to each node it picks once
    (DeepSeek-V3 section 3.2.2: IB to the target nodes, then NVLink within them), where the layout dispatches so
    (`node_dispatch`: Layout.moe_node_dispatch_used, MoEStack.dispatches_once_per_node). A token picks `dispatch_nodes` of the `route_groups` expert groups; the
    experts lie in order over the ep group's n nodes, so a group spans max(1, n / groups) nodes and a token reaches
    at most min(top_k, n, picked groups x that) nodes, (n-1)/n of them remote. None where no row dispatches so."""
    n = links["nodes"]
    limited = (batch.dispatch_nodes < batch.top_k) & (batch.node_dispatch > 0)
    if not np.any(limited & (n > 1)):
        return None
    ranks = collectives.group_ranks(links)
    naive = volume * (ranks - links["ranks_per_node"]) / np.maximum(ranks, 1.0)
    group_nodes = np.maximum(n / np.maximum(batch.route_groups, 1.0), 1.0)
    picked = np.minimum(np.minimum(batch.dispatch_nodes * group_nodes, batch.top_k), n)
    # Dense rows of a mixed batch (top_k 0) send nothing: divide by at least 1 so they stay 0, not 0/0.
    dedup = volume / np.maximum(batch.top_k, 1.0) * picked * (n - 1.0) / np.maximum(n, 1.0)
    return np.where(limited, np.minimum(dedup, naive), naive)


def moe_layer_times(batch: CandidateBatch, cluster, gemm_seconds, hbm, links, collective_kw) -> dict:
    """Seconds per layer (averaged over all layers) per micro-batch of the MoE parts; see the module doc.

    gemm_seconds(m, n, k): seconds of one GEMM at the cost model's efficiency; links(size, stride): the
    group links; collective_kw: NCCL keyword arguments (efficiencies, nvls).
    """
    frac = moe_fraction(batch)
    w = DTYPE_BYTES[batch.dtype.astype(int)]
    per_rank, rows = _tokens(batch)
    forward, backward = _compute_seconds(batch, per_rank, rows, w, gemm_seconds, hbm)
    recompute = np.where(batch.recompute == 2, forward, 0.0)
    volume = all_to_all_bytes(batch)
    comm_fwd, comm_bwd = _comm_seconds(batch, volume, rows, w, links, collective_kw)
    comm = comm_fwd + comm_bwd
    hides = _HIDES[batch.a2a_overlap.astype(int)] > 0
    return {
        "forward": frac * forward, "backward": frac * backward, "recompute": frac * recompute,
        "comm_forward": frac * comm_fwd, "comm_backward": frac * comm_bwd, "comm": frac * comm,
        "hides": hides,
        # Bytes each rank sends to other ranks in the all-to-alls of one layer (averaged) and micro-batch.
        "bytes": frac * (batch.ep - 1.0) / batch.ep * _all_to_all_layer_bytes(batch, volume),
    }


def _compute_seconds(batch: CandidateBatch, per_rank, rows, w, gemm_seconds, hbm) -> tuple[np.ndarray, np.ndarray]:
    """(forward, backward) seconds of one MoE layer's compute per micro-batch on this GPU: the experts' and
    the router's GEMMs and the memory-bound passes (backward twice those), plus the copies some stacks make
    to pad and to sort the expert rows (once each way)."""
    h, E = batch.hidden, batch.experts
    local_experts = E / batch.ep
    # Dense rows of a mixed batch have no experts (E = 0, k = 0): no rows, no GEMMs.
    m_per_expert = np.where(E > 0, rows / np.where(E > 0, local_experts, 1.0), 0.0)
    fe = batch.expert_ffn / batch.etp
    up_width = (batch.mlp_matrices - 1.0) * fe
    experts_fwd = local_experts * (gemm_seconds(m_per_expert, up_width, h) + gemm_seconds(m_per_expert, h, fe))
    router_fwd = gemm_seconds(per_rank, E, h)
    traffic = _elementwise_bytes(batch, per_rank, rows, w, fe)
    # fp8 training: each expert GEMM casts its operands (and backward its output gradient) as the dense
    # GEMMs do (cost.kernels.fp8_linear_cast_hbm_bytes, weights cached after the first micro-batch).
    fp8 = batch.dtype == DTYPE_CODES["fp8"]
    if fp8.any():
        current = batch.fp8_current_scaling
        casts = local_experts * (kernels.fp8_linear_cast_hbm_bytes(m_per_expert, up_width, h, True, current)
                                 + kernels.fp8_linear_cast_hbm_bytes(m_per_expert, h, fe, True, current))
        traffic = traffic + np.where(fp8, casts / 3.0, 0.0)  # forward 1/3, backward 2/3 (as elementwise below)
    elementwise = traffic / hbm
    padding = _fp8_padding_seconds(batch, rows, w, hbm)
    sorting = _expert_sort_seconds(batch, rows, w, local_experts, hbm)
    forward = experts_fwd + router_fwd + elementwise + padding + sorting
    backward = 2.0 * (experts_fwd + router_fwd + elementwise) + padding + sorting
    return forward, backward


def _elementwise_bytes(batch: CandidateBatch, per_rank, rows, w, fe) -> np.ndarray:
    """HBM bytes of one MoE layer's memory-bound forward passes per micro-batch: the token copies permuted and
    unpermuted, the experts' activation functions over their `rows` at width `fe`, the router's softmax / top-k."""
    h, k, E = batch.hidden, batch.top_k, batch.experts
    mlp_coeff = np.where(batch.mlp_matrices == 3, 6.0, 4.0)
    scale = w / 2.0
    return (2.0 * (per_rank * h * w + per_rank * k * h * w * busiest_rank_load(batch))  # permute + unpermute
            + rows * (2.0 * h + mlp_coeff * fe) * scale  # expert activation functions, one pass
            + 3.0 * per_rank * E * ROUTER_SCORE_BYTES)  # router softmax / top-k


def _fp8_padding_seconds(batch: CandidateBatch, rows, w, hbm) -> np.ndarray:
    """Seconds per direction of copying the expert rows into fp8-aligned buffers and back, where the stack does."""
    fp8 = batch.dtype == DTYPE_CODES["fp8"]
    # fp8 on stacks that pad each expert's rows to the fp8 GEMM alignment by copying (planner.frameworks.moe
    # fp8_pads_expert_rows) unless the dispatcher already padded them to capacity: forward the tokens into
    # the padded buffer and the experts' output back, each read and written in the model dtype; backward
    # their gradients the same way.
    pads = fp8 & (_PADS[batch.framework.astype(int)] > 0) & (batch.moe_padded == 0)
    return np.where(pads, 2.0 * 2.0 * rows * batch.hidden * w / hbm, 0.0)


def _expert_sort_seconds(batch: CandidateBatch, rows, w, local_experts, hbm) -> np.ndarray:
    """Seconds per direction of sorting the received rows into expert order and back, where the stack does."""
    # Stacks that sort the received tokens by local expert (planner.frameworks.moe): with more than one local
    # expert, the received rows read and written into expert order (in the dispatch dtype) and the experts'
    # output back (model dtype); backward moves their gradients the same way once.
    sorts = (_SORTS[batch.framework.astype(int)] > 0) & (local_experts > 1)
    return np.where(sorts, 2.0 * rows * batch.hidden * (dispatch_element_bytes(batch) + w) / hbm, 0.0)


def _comm_seconds(batch: CandidateBatch, volume: dict, rows, w, links, collective_kw) -> tuple[np.ndarray, np.ndarray]:
    """(forward, backward) seconds of one MoE layer's communication per micro-batch: the ep all-to-alls of
    `volume` and, with etp > 1, the etp collectives over the received `rows` (backward also repeats the
    forward's under full recompute)."""
    # Dispatch and combine over the ep group (ep consecutive expert-grid ranks, etp apart).
    ep_links = links(batch.ep, batch.etp)
    a2a = {name: _all_to_all_seconds(batch, ep_links, volume[name], collective_kw) for name in ("dispatch", "combine")}
    # Backward sends the gradients back the same way, in the model dtype.
    a2a_bwd_one = _all_to_all_seconds(batch, ep_links, volume["combine"], collective_kw)
    a2a_fwd = a2a["dispatch"] + a2a["combine"]
    a2a_bwd = 2.0 * a2a_bwd_one
    etp_comm = _etp_comm_seconds(batch, rows, w, links, collective_kw)
    comm_fwd = a2a_fwd + etp_comm
    comm_bwd = a2a_bwd + etp_comm + np.where(batch.recompute == 2, comm_fwd, 0.0)
    return comm_fwd, comm_bwd


def _all_to_all_seconds(batch: CandidateBatch, ep_links, volume, collective_kw) -> np.ndarray:
    """Seconds of one all-to-all of `volume` bytes per rank over the ep group, node-limited routing's
    scale-out bytes where it applies (_inter_node_bytes)."""
    inter = _inter_node_bytes(batch, ep_links, volume)
    return collectives.all_to_all_time(volume, ep_links, collective_kw["efficiency_up"],
                                       collective_kw["efficiency_out"], inter_bytes=inter)


def _etp_comm_seconds(batch: CandidateBatch, rows, w, links, collective_kw) -> np.ndarray:
    """Seconds of the expert-tensor-parallel collectives over the received `rows` of one layer, each pass
    (0 where etp = 1)."""
    # etp > 1: received tokens all-gathered over etp, outputs reduce-scattered (forward; backward the reverse).
    etp_comm = np.zeros(len(batch))
    if np.any(batch.etp > 1):
        etp_links = links(batch.etp, np.ones_like(batch.etp))
        gathered = rows * batch.hidden * w
        ag = collectives.all_gather_time(gathered, etp_links, **collective_kw)
        rs = collectives.reduce_scatter_time(gathered, etp_links, **collective_kw)
        etp_comm = np.where(batch.etp > 1, ag + rs, 0.0)
    return etp_comm


def _all_to_all_layer_bytes(batch: CandidateBatch, volume: dict) -> np.ndarray:
    """Bytes each rank puts into one MoE layer's all-to-alls per micro-batch (`volume`: all_to_all_bytes):
    dispatch and combine, the gradients sent back twice in the model dtype, and under full recompute the
    forward's again."""
    backward_volume = volume["combine"]
    return (volume["dispatch"] + volume["combine"] + 2.0 * backward_volume
            + np.where(batch.recompute == 2, volume["dispatch"] + volume["combine"], 0.0))


def exposed_ep_comm(moe: dict, layer_compute, unpaired=0.0) -> np.ndarray:
    """Exposed all-to-all seconds per layer per micro-batch: all of it, or with a batch-level overlap what
    the other micro-batch's compute of the layer (forward + backward) does not cover, except on the `unpaired`
    share of the passes, which run alone (unpaired_share)."""
    hidden = np.maximum(moe["comm"] - layer_compute, 0.0)
    paired = np.where(moe["hides"], hidden, moe["comm"])
    return unpaired * moe["comm"] + (1.0 - unpaired) * paired


def unpaired_share(batch: CandidateBatch) -> np.ndarray:
    """Share of the first pipeline rank's forward and backward passes (model chunks) that an overlap pairing one
    micro-batch's forward with another's backward runs alone (A2AOverlap.warmup_runs_alone; 0 for the others):
    at pp 1 the first forward and the last backward of the m micro-batches, 1/m (Megatron-Core combined_1f1b.py);
    interleaved, the 2 (pp - 1) + (vpp - 1) x round + 1 warm-up forwards and as many cool-down backwards of the
    m x vpp (the warm-up cost.memory._inflight counts, schedules.py:960-970)."""
    p, v, m = batch.pp, batch.vpp, batch.grad_accumulation
    warmup = np.where(p > 1, interleaved_warmup_forwards(batch, 0.0), 1.0)
    share = np.minimum(warmup / np.maximum(m * v, 1.0), 1.0)
    return np.where(WARMUP_RUNS_ALONE[batch.a2a_overlap.astype(np.intp)], share, 0.0)


def launch_floor_seconds(batch: CandidateBatch, moe: dict, dense_slack: dict, eager) -> dict[str, np.ndarray]:
    """{"forward", "backward"} seconds per layer (averaged over the layers) per micro-batch the GPU waits for the host to issue the MoE
    layers' own kernels (cost.kernels.moe_layer_issue_s): what their issue time exceeds the GPU time they
    launch (compute + the exposed all-to-all, `moe["exposed"]`) by, less the slack the dense part of the layer leaves (the GPU time by
    which it outlasts its own issue: the host runs ahead by that much).

    A host sync per layer forward (planner.frameworks.moe host_syncs_per_layer_forward: Megatron's dropless
    alltoall dispatcher) stops the host from running ahead: only the kernels before it hide behind
    the dense slack, those after it are issued to an idle GPU, which waits one eager op (EAGER_OP_S) for the
    first of them and then for whatever the rest takes to issue beyond their GPU time. A full recompute runs
    the forward (and its sync) again. `dense_slack`: {"forward", "backward"} seconds per layer, and under full recompute
    the dense recompute's own ("recompute"; the forward's where not given)."""
    frac = moe_fraction(batch)
    per_layer = np.where(frac > 0, frac, 1.0)
    local = batch.experts / batch.ep
    fp8 = batch.dtype == DTYPE_CODES["fp8"]
    issue_fwd = kernels.moe_layer_issue_s(kernels.FORWARD, local, fp8, eager, batch.fp8_current_scaling)
    issue_bwd = kernels.moe_layer_issue_s(kernels.BACKWARD, local, fp8, eager, batch.fp8_current_scaling)
    # The all-to-all holds the GPU past its compute only where it is exposed: what an overlap hides runs beside
    # compute that is already counted (the other micro-batch's), so it covers no issue time of its own. Counted
    # whole, a hidden all-to-all covered the host's issue, and a faster link or less imbalance (a shorter
    # all-to-all) lengthened the step.
    exposed = np.where(moe["comm"] > 0.0, moe["exposed"] / np.where(moe["comm"] > 0.0, moe["comm"], 1.0), 1.0)
    gpu_fwd = (moe["forward"] + exposed * moe["comm_forward"]) / per_layer
    recompute_comm = np.where(batch.recompute == 2, exposed * moe["comm_forward"], 0.0)
    gpu_bwd = (moe["backward"] + exposed * moe["comm_backward"] - recompute_comm) / per_layer
    before = kernels.moe_before_sync_issue_s(eager)
    wake = np.where(np.asarray(eager, dtype=bool), kernels.EAGER_OP_S, kernels.KERNEL_LAUNCH_S)
    # Megatron waits with ep or tp > 1 before the all-to-all, else before the experts (token_dispatcher.py:524,
    # 533; taken as the same split of the kernels). The drop-and-pad path (layout moe_pad_to_capacity) has
    # static shapes and returns before any sync point (:444-468); a capacity factor alone still waits (:470-480).
    syncs = _SYNCS[batch.framework.astype(int)] * (batch.moe_padded == 0)

    def forward_floor(slack):
        free = np.maximum(issue_fwd - gpu_fwd - slack, 0.0)
        synced = np.maximum(before - slack, 0.0) + wake + np.maximum(issue_fwd - before - gpu_fwd, 0.0)
        return np.where(syncs > 0, synced, free)

    floor_fwd = forward_floor(dense_slack["forward"])
    floor_bwd = np.maximum(issue_bwd - gpu_bwd - dense_slack["backward"], 0.0)
    # A full recompute's forward (and its floor) runs in the backward pass, behind the dense recompute's own slack
    # (`recompute`, where the caller gives it apart from the backward's).
    floor_rerun = np.where(batch.recompute == 2, forward_floor(dense_slack.get("recompute", dense_slack["forward"])),
                           0.0)
    has_experts = batch.experts > 0
    return {"forward": np.where(has_experts, frac * floor_fwd, 0.0),
            "backward": np.where(has_experts, frac * (floor_bwd + floor_rerun), 0.0)}


def sm_share_seconds(batch: CandidateBatch, layer_compute, comm, unpaired, sms: float) -> np.ndarray:
    """Extra seconds of the compute that runs beside overlapped communication kernels holding some of the
    accelerator's `sms` SMs, per MoE layer and micro-batch: DualPipe's 20 through the layer's whole compute
    (forward + backward); NCCL's channels in Megatron's overlap (DeepEP's 20 SMs under node-limited dispatch,
    MoEStack.node_dispatch_sms) only while the all-to-all (`comm`) runs beside it,
    on the passes it pairs (1 - `unpaired`). Charged on the whole compute, Megatron's overlap cost Mixtral 8x7B at
    ep 8 597 ms a step to hide 147 ms, slower than no overlap."""
    code = batch.a2a_overlap.astype(int)
    beside = np.where(_SMS_WHILE_COMMUNICATING[code], (1.0 - unpaired) * np.minimum(comm, layer_compute),
                      layer_compute)
    taken = _COMMUNICATION_SMS[code]
    # Node-limited dispatch runs the stack's own kernels (DeepEP under Megatron), holding their SMs instead.
    node_kernels = (batch.node_dispatch > 0) & (_HIDES[code] > 0)
    taken = np.where(node_kernels, np.maximum(taken, _NODE_DISPATCH_SMS[batch.framework.astype(int)]), taken)
    return beside * (sms / np.maximum(sms - taken, 1.0) - 1.0)


def parameter_copies(batch: CandidateBatch) -> np.ndarray:
    """Weight copies the pipeline schedule keeps (DualPipe: 2)."""
    return _COPIES[batch.a2a_overlap.astype(int)]


def expert_sharding(batch: CandidateBatch, dense: dict, dense_degree) -> dict[str, np.ndarray]:
    """Ranks the experts' weights (and optimizer states) and gradients are sharded over: the expert data-parallel
    group, less the replicas hierarchical partitioning makes. A shard group of g of the dense sharding group's
    `dense_degree` ranks (cost.memory.state_sharding_degrees: `dense`) replicates every state dense_degree / g
    times, the experts' too, so they are sharded over edp x g / dense_degree ranks (at least 1)."""
    d = expert_dp(batch)
    return {name: np.maximum(d * dense[name] / dense_degree, 1.0) for name in ("weights", "grads")}


def expert_state_bytes(batch: CandidateBatch, expert_params, size: dict, shards: dict) -> dict[str, np.ndarray]:
    """Weights, gradients and optimizer states of `expert_params` routed-expert parameters on one GPU,
    sharded over the expert data-parallel group as the dense part is over dp (ZeRO stage by stage; `shards`:
    expert_sharding's degrees); `size` is cost.memory.element_bytes. Where the stack's fp32 parameter is the master (FSDP, JAX:
    `param_master`, as in memory.model_state_bytes) it lives beside the 16-bit expert weights below ZeRO-3,
    sharded with the gradients at ZeRO-2 and whole below; ZeRO-3's sharded weights already are it."""
    zero, d, g = batch.zero, shards["weights"], shards["grads"]
    master = size["param_master"] * expert_params / np.where(zero == 2, d, 1.0)  # with the weights, as the dense one
    weights = np.where(zero == 3, size["sharded_weights"] * expert_params / d, size["weights"] * expert_params)
    grads = np.where(zero >= 2, size["grads"] * expert_params / g, size["grads"] * expert_params)
    optimizer = np.where(zero >= 1, size["optimizer"] * expert_params / d, size["optimizer"] * expert_params)
    # DualPipe's second copy is of the compute weights; the master is one (DeepSeek keeps it with the optimizer).
    weights = weights * parameter_copies(batch) + np.where(zero == 3, 0.0, master)
    return {"weights": weights, "gradients": grads, "optimizer": optimizer}


def moe_activation_bytes(batch: CandidateBatch) -> dict[str, np.ndarray]:
    """Activation bytes per layer (averaged over layers) per micro-batch the experts keep for backward
    (`stored`; only the layer input under full recompute, counted by the dense part), what rebuilding one layer
    under full recompute keeps (`working`), and the dispatch/combine send and receive buffers of one layer in flight."""
    h = batch.hidden
    w = DTYPE_BYTES[batch.dtype.astype(int)]
    per_rank, rows = _tokens(batch)
    fe = batch.expert_ffn / batch.etp
    mlp_coeff = np.where(batch.mlp_matrices == 3, 6.0, 4.0)
    # Per routed row: the expert input (2h, fc1's wgrad), fc1 outputs and the activation output
    # (Korthikanti's MLP terms at the expert width); per token: the top-k probabilities and router scores.
    router = per_rank * (batch.top_k * PROB_BYTES + batch.experts * ROUTER_SCORE_BYTES)
    full = (rows * (2.0 * h + mlp_coeff * fe) * w / 2.0 + router) * moe_fraction(batch)
    # fp8 training: what each stack keeps of (expert input, fc1 output, activation output), bytes per element
    # (planner.frameworks.moe fp8_saved_bytes: Megatron + TE keep the quantised GEMM inputs, DeepSeek also
    # the fc1 output in fp8 and recomputes the activation output).
    saved = _FP8_SAVED_BYTES[batch.framework.astype(int)]
    fc1_out = (mlp_coeff / 2.0 - 1.0) * fe  # elements per routed row: (matrices - 1) x expert ffn
    fp8_kept = (rows * (saved[:, 0] * h + saved[:, 1] * fc1_out + saved[:, 2] * fe) + router) * moe_fraction(batch)
    low_precision = batch.dtype == DTYPE_CODES["fp8"]
    kept = np.where(low_precision, fp8_kept, full)
    stored = np.where(batch.recompute == 2, 0.0, kept)
    buffers = 2.0 * per_rank * batch.top_k * h * w * busiest_rank_load(batch)
    # A full recompute reruns one layer's forward under autograd in backward, which keeps what that forward keeps
    # without recompute (in fp8 the quantised inputs, not the 16-bit tensors): `working`, never above `stored`'s
    # per-layer figure without recompute.
    return {"stored": stored, "working": kept, "dispatch_buffers": buffers}
