"""DeepSpeed's ZeRO-3 of 2021 (frameworks/deepspeed_v03.py, cost/zero3_fetch.py): per-parameter collectives whose
host work walks the data-parallel group, prefetch stopped by stage3_max_live_parameters, re-gathers after
recompute past stage3_max_reuse_distance; and what it does to Narayanan et al. SC21 Table 2."""

from __future__ import annotations

import numpy as np
import pytest

from planner.cost import kernels, zero3_fetch
from planner.cost.estimate import simulate
from planner.frameworks import FRAMEWORK_CODES, framework_arrays
from planner.specs.clusters import load_cluster
from planner.specs.candidate_batch import single_batch
from planner.specs.layout import Layout
from planner.specs.model import PRESETS, make_model
from planner.profile.runs_csv import read_runs
from planner.calibrate.validation import run_to_config

GPT_175B = make_model("gpt3-175b-table2", layers=96, hidden=12288, heads=96, ffn=49152, seq_len=2048, vocab=51200)
GPT_530B = make_model("mt-nlg-530b-table2", layers=105, hidden=20480, heads=128, ffn=81920, seq_len=2048, vocab=51200)


def _zero3(model, gpus, micro_batch, framework, recompute="full"):
    return Layout(dp=gpus, zero=3, micro_batch=micro_batch, global_batch=gpus * micro_batch, recompute=recompute,
                  dtype="fp16", flash_attention=False, framework=framework)


def _batch(model, layout):
    return single_batch(model, layout)


def test_block_matrices_are_the_gpt_weights():
    qkv, out, fc1, fc2 = zero3_fetch.block_matrices(_batch(GPT_175B, _zero3(GPT_175B, 8, 1, "deepspeed-v0.3")))
    h = 12288
    assert (qkv[0], out[0], fc1[0], fc2[0]) == (3 * h * h, h * h, 4 * h * h, 4 * h * h)


def test_prefetch_stops_behind_matrices_at_the_live_limit():
    """175B: every matrix (at most 604M elements) is under 1e9, all prefetched. 530B: QKV (1.26e9), h->4h and
    4h->h (1.68e9 each) reach it, so the gathers that follow them are not: forward attention output, 4h->h and
    the next QKV; backward h->4h, attention output and the previous 4h->h."""
    limit = 1e9
    small = zero3_fetch.prefetched_shares(_batch(GPT_175B, _zero3(GPT_175B, 8, 1, "deepspeed-v0.3")), limit)
    assert small == (pytest.approx(1.0), pytest.approx(1.0))
    big = _batch(GPT_530B, _zero3(GPT_530B, 8, 1, "deepspeed-v0.3"))
    qkv, out, fc1, fc2 = (x[0] for x in zero3_fetch.block_matrices(big))
    forward, backward = zero3_fetch.prefetched_shares(big, limit)
    total = qkv + out + fc1 + fc2
    assert forward[0] == pytest.approx(1 - (out + fc2 + qkv) / total)
    assert backward[0] == pytest.approx(1 - (fc1 + out + fc2) / total)
    assert zero3_fetch.prefetched_shares(big, np.inf) == (pytest.approx(1.0), pytest.approx(1.0))


def test_recompute_regathers_what_is_reused_too_far_away():
    """175B under full recompute: 4h->h is reused at once (kept); h->4h sees 4h->h twice (1.2e9 >= 1e9) and is
    gathered again, and so are the attention output and QKV. Without recompute: nothing."""
    batch = _batch(GPT_175B, _zero3(GPT_175B, 8, 1, "deepspeed-v0.3"))
    qkv, out, fc1, fc2 = (x[0] for x in zero3_fetch.block_matrices(batch))
    elements, calls = zero3_fetch.regathered(batch, 1e9)
    assert calls[0] == 3 and elements[0] == pytest.approx(qkv + out + fc1)
    none = zero3_fetch.regathered(_batch(GPT_175B, _zero3(GPT_175B, 8, 1, "deepspeed-v0.3", recompute="none")), 1e9)
    assert none[1][0] == 0 and none[0][0] == 0


def test_host_issue_grows_with_the_group_and_is_zero_for_flat_collectives():
    """One eager op (kernels.EAGER_OP_S) per rank per call: a 1,536-rank gather costs 13.2 ms of host time."""
    fw = framework_arrays(np.array([FRAMEWORK_CODES["deepspeed-v0.3"], FRAMEWORK_CODES["deepspeed"]]))
    def issue(ranks):
        links = {"ranks_per_node": np.array([8.0, 8.0]), "nodes": np.array([ranks / 8, ranks / 8])}
        # No backward compute to hide the reduce-scatters behind: every call exposed.
        return zero3_fetch.host_issue_s(fw, links, 1.0, False, 0.0, 0.0)
    calls = 2 * fw["gathers_per_layer"][0] + fw["scatter_calls_per_layer"][0]
    assert issue(1536)[0] == pytest.approx(calls * 1536 * kernels.EAGER_OP_S)
    assert issue(1536)[0] == pytest.approx(2 * issue(768)[0])
    assert issue(1536)[1] == 0.0


@pytest.mark.parametrize("change", [{"recompute": "full"}, {"flash_attention": False}])
def test_more_compute_never_shortens_a_step_with_per_rank_host_work(change):
    """The reduce-scatters' host issue hides behind a layer's backward, and so does the layer's ZeRO-3 traffic on
    the network: the layer takes the longest of the three, not their sum less the compute twice. (Counting the
    compute against each separately made full recompute 12% faster here: 2.78 s -> 2.45 s.)"""
    model = PRESETS["gpt3-13b"]
    cluster = load_cluster("dgx2-v100")
    base = Layout(tp=2, dp=256, zero=3, dtype="fp16", framework="deepspeed-v0.3", global_batch=256)
    plain = simulate(model, base, cluster)["step_time_s"]
    assert simulate(model, base.model_copy(update=change), cluster)["step_time_s"] >= plain


def test_a_shard_is_held_by_the_ranks_deepspeed_pads_it_over():
    """DeepSpeed pads a parameter to a multiple of the group and gives each rank ceil(n / N) elements
    (partition_parameters.py `_aligned_size`, `_allgather_params` :699-701 at v0.3.14): 12,288 over 1,536 ranks is
    8 each, all hold some; 20,480 over 2,240 is 10 each, so ranks 2,048 on hold padding only; 100 over 1,536: 100."""
    assert zero3_fetch.ranks_holding(12288.0, 1536.0) == 1536
    assert zero3_fetch.ranks_holding(20480.0, 2240.0) == 2048
    assert zero3_fetch.ranks_holding(100.0, 1536.0) == 100


TINY = dict(layers=2, hidden=1024, heads=16, ffn=4096, seq_len=1024, vocab=50304)
TINY_GPT = make_model("tiny-gpt", bias=True, norm="layernorm", **TINY)


@pytest.mark.parametrize("model, tensors", [
    (TINY_GPT, 2 * 8 + 2),  # per layer 2 LayerNorms (weight, bias) and 4 linear biases; the final LayerNorm's 2
    (make_model("tiny-llama", **TINY), 2 * 2 + 1),  # no biases: 2 RMSNorm weights per layer, the final norm's
])
def test_the_persistent_parameters_are_regathered_pair_by_pair_after_each_step(model, tensors):
    """DeepSpeed v0.3.14 `_post_step` (stage3.py:2350) -> `_allgather_params` (partition_parameters.py:686-708):
    per persistent parameter and per rank, two narrows (views, EAGER_OP_S - KERNEL_LAUNCH_S each) and a copy_
    (EAGER_OP_S), after one list-form all-gather (one eager op per rank). A 2-layer model (h 1,024, ffn 4,096) on
    64 ranks: its vector tensors (planner.specs.model.vector_tensors), each held by all 64 ranks."""
    codes = np.array([FRAMEWORK_CODES["deepspeed-v0.3"], FRAMEWORK_CODES["deepspeed"]])
    batch = _batch(model, _zero3(model, 64, 1, "deepspeed-v0.3"))
    pairs = tensors * 64
    per_pair = 2 * (kernels.EAGER_OP_S - kernels.KERNEL_LAUNCH_S) + kernels.EAGER_OP_S
    seconds = zero3_fetch.step_regather_s(framework_arrays(codes), batch, 64.0, 2.0, True)
    assert seconds[0] == pytest.approx(pairs * per_pair + 64 * kernels.EAGER_OP_S)
    assert seconds[1] == 0.0  # today's DeepSpeed gathers with coalesced collectives: no such loop


def test_a_split_bias_is_held_by_the_ranks_its_tp_slice_pads_over():
    """The QKV and h->4h biases are split over tp (column-parallel): at tp 8 a 3,072-element QKV bias is 384 per
    tp rank and a 4,096-element h->4h bias 512, so over 1,000 sharding ranks (one element each) 384 and 512 ranks
    hold some; the six vectors of hidden (1,024) size are whole on every tp rank (ceil(1,024 / 1,000) = 2 each:
    512 ranks)."""
    layout = Layout(tp=8, dp=8, zero=3, global_batch=8, dtype="fp16", framework="deepspeed-v0.3")
    per_rank = zero3_fetch.vector_elements_per_rank(_batch(TINY_GPT, layout))[0]
    assert sorted(per_rank) == [384, 512] + [1024] * 6
    held = zero3_fetch.ranks_holding(per_rank, 1000.0)
    assert held.sum() == 384 + 512 + 6 * 512


def test_the_regather_is_paid_once_per_step_whatever_the_micro_batches(monkeypatch):
    """The re-gather follows the optimizer step (once), not each micro-batch's backward: 1 or 4 micro-batches per
    step add the same seconds to the exposed data-parallel time."""
    model = TINY_GPT
    cluster = load_cluster("dgx-a100-80gb")
    added = {}
    for m in (1, 4):
        layout = Layout(dp=64, zero=3, micro_batch=1, global_batch=64 * m, dtype="fp16", framework="deepspeed-v0.3")
        with_loop = simulate(model, layout, cluster)["time"]["dp_comm_exposed"]
        monkeypatch.setattr(zero3_fetch, "step_regather_s", lambda *args: 0.0)
        added[m] = with_loop - simulate(model, layout, cluster)["time"]["dp_comm_exposed"]
        monkeypatch.undo()
    per_pair = 2 * (kernels.EAGER_OP_S - kernels.KERNEL_LAUNCH_S) + kernels.EAGER_OP_S
    assert added[1] == pytest.approx((2 * 8 + 2) * 64 * per_pair + 64 * kernels.EAGER_OP_S)
    assert added[4] == pytest.approx(added[1])


@pytest.fixture(scope="module")
def table2(published_runs_csv):
    """Narayanan et al. SC21 Table 2, ZeRO-3 rows (data/runs ids 11-16) as (model, layout, cluster, measured s)."""
    runs, _ = read_runs(published_runs_csv)
    rows = {run.id: run for run in runs}
    out = {}
    for i in range(11, 17):
        model, layout, cluster = run_to_config(rows[str(i)])
        out[i] = (model, layout, cluster, rows[str(i)].step_time_s)
    return out


def _step(config, framework):
    model, layout, cluster, _ = config
    return simulate(model, layout.model_copy(update={"framework": framework}), cluster)


def test_table2_rows_ran_deepspeed_v03(table2):
    """The paper is of April 2021 (arXiv 2104.04473v1): ZeRO-3 shipped in DeepSpeed v0.3.13 (March 2021) and kept
    per-parameter collectives until v0.5.5 (October 2021); data/SOURCES.md."""
    assert {layout.framework for _, layout, _, _ in table2.values()} == {"deepspeed-v0.3"}


def test_only_the_data_parallel_part_differs_from_todays_deepspeed(table2):
    old, new = _step(table2[12], "deepspeed-v0.3"), _step(table2[12], "deepspeed")
    for part, seconds in new["time"].items():
        if part not in ("dp_comm_exposed", "shard_copies"):  # today's DeepSpeed also copies (cost/shard_copies.py)
            assert old["time"][part] == pytest.approx(seconds), part
    assert old["time"]["dp_comm_exposed"] > new["time"]["dp_comm_exposed"]
    assert old["memory"]["total_bytes"] == new["memory"]["total_bytes"]


def test_the_530b_rows_wait_for_gathers_and_move_the_regathers(table2):
    """530B (Table 2 id 16): three of the four matrices reach stage3_max_live_parameters, so most of each
    layer's gathers wait in full; the re-gathers after recompute add their bytes to the data-parallel traffic."""
    model, layout, cluster, _ = table2[16]
    old, new = _step(table2[16], "deepspeed-v0.3"), _step(table2[16], "deepspeed")
    batch = single_batch(model, layout)
    elements, calls = zero3_fetch.regathered(batch, 1e9)
    assert calls[0] == 3
    extra = old["comm_bytes_per_step"]["dp"] - new["comm_bytes_per_step"]["dp"]
    assert extra == pytest.approx(model.layers * 2 * elements[0])  # fp16, one micro-batch per step
    ranks = layout.dp
    host = model.layers * (2 * 4 + 3) * ranks * kernels.EAGER_OP_S  # gathers alone, exposed in full
    assert old["time"]["dp_comm_exposed"] > host + 10 * new["time"]["dp_comm_exposed"]


@pytest.mark.parametrize("small, large", [(12, 13), (15, 16)])
def test_doubling_the_gpus_shrinks_the_step_less_than_with_coalesced_collectives(table2, small, large):
    """Table 2: ZeRO-3 on twice the GPUs (same global batch) is no faster (175B 768 -> 1,536: 66.7 s both; 530B
    1,120 -> 2,240: 180 -> 184 s). With per-parameter collectives and the persistent parameters' re-gather walking
    the group, the predicted ratio of step times moves from today's ~0.5 toward the measured one (175B past it:
    1.23, for 1.00 measured; 530B 0.95, for 1.02)."""
    target = table2[large][3] / table2[small][3]
    ratio = {fw: _step(table2[large], fw)["step_time_s"] / _step(table2[small], fw)["step_time_s"]
             for fw in ("deepspeed", "deepspeed-v0.3")}
    assert abs(ratio["deepspeed-v0.3"] - target) < abs(ratio["deepspeed"] - target)
    assert ratio["deepspeed"] < ratio["deepspeed-v0.3"]


@pytest.mark.xfail(strict=True, reason="measured with deepspeed-v0.3: -21.3%, -30.0%, -14.1% (175B on 384, 768, 1,536) "
                                       "and -25.8%, -29.5%, -34.4% (530B on 640, 1,120, 2,240); -14.0%, -24.2%, "
                                       "-27.0%, -31.9% for the last four at the assumed 0.75 link efficiencies "
                                       "before the measured ones (cluster_specs/dgx-a100-80gb.yaml); -28.8% to -51.6% "
                                       "before the persistent parameters' per-rank re-gather after each step; "
                                       "today's deepspeed: -31.0% to -75.1%. Not modelled: the GPU side of the "
                                       "per-rank copies, torch.distributed.get_rank per rank in the gather loop, NCCL "
                                       "2.8's own latencies")
def test_table2_zero3_rows_within_15_percent(table2):
    """Narayanan et al. SC21 Table 2 (ZeRO-3 without model parallelism), step time within 15%."""
    for config in table2.values():
        assert _step(config, config[1].framework)["step_time_s"] == pytest.approx(config[3], rel=0.15)


@pytest.mark.parametrize("preset, per_layer, outside", [
    ("llama3-70b", 2, 1),    # two RMSNorm weights per layer, the final norm
    ("gpt3-175b", 8, 2),     # two LayerNorms (weight, bias), QKV/out/fc1/fc2 biases; the final LayerNorm
    ("bloom-176b", 8, 4),    # GPT's, and BLOOM's embedding LayerNorm
    ("qwen3-30b-a3b", 4, 1),  # and Qwen3's q_norm, k_norm
    ("deepseek-v3", 4, 1),   # and MLA's q_a_layernorm, kv_a_layernorm
])
def test_vector_tensors_are_the_norms_and_biases(preset, per_layer, outside):
    """What ZeRO-3 keeps gathered as persistent (every tensor of at most 1e5 elements in these models: norms and
    biases of hidden or ffn/tp size), counted per layer and outside the layers (planner.specs.model), and the
    batch columns the cost model reads them from."""
    from planner.specs.model import vector_tensors

    layer, rest = vector_tensors(PRESETS[preset])
    assert (len(layer), len(rest)) == (per_layer, outside)
    assert max(t.elements for t in layer + rest) <= 1e5  # DeepSpeed 0.19.8 partition_parameters.py:1292
    batch = single_batch(PRESETS[preset], Layout(dp=8, global_batch=8))
    assert batch.vector_tensors_outside[0] == outside
    assert sorted(batch.vector_elements_per_layer[0]) == sorted(t.elements for t in layer)
    assert zero3_fetch.persistent_tensors_per_layer(batch)[0] == per_layer  # all of them under the persistence threshold


@pytest.mark.parametrize("preset", ["gpt3-175b", "bloom-176b", "llama3-70b", "qwen3-30b-a3b", "mpt-7b"])
def test_vector_tensors_add_up_to_the_norm_and_bias_parameters(preset):
    """The listed vectors are the parameters the model has beyond its matrices, by the parameter count itself:
    the model's total less that of its copy without biases and q/k norms (whose LayerNorms keep their weights:
    param_breakdown's norms), plus those norm weights."""
    from planner.specs.model import param_breakdown, vector_tensors

    model = PRESETS[preset]
    bare = model.model_copy(update={"bias": False, "qk_norm": False})
    layer, rest = vector_tensors(model)
    listed = model.layers * sum(t.elements for t in layer) + sum(t.elements for t in rest)
    extra = param_breakdown(model)["total"] - param_breakdown(bare)["total"]
    assert listed == param_breakdown(bare)["norms"] + extra


def test_vector_tensors_of_mla_are_its_norms_and_latent_norms():
    """DeepSeek-V3 (modeling_deepseek.py): per layer two RMSNorms of hidden, q_a_layernorm of q_lora_rank 1,536 and
    kv_a_layernorm of kv_lora_rank 512; no biases. The final norm outside the layers."""
    from planner.specs.model import vector_tensors

    model = PRESETS["deepseek-v3"]
    layer, rest = vector_tensors(model)
    assert sorted(t.elements for t in layer) == sorted([model.hidden] * 2 + [1536, 512])
    assert not any(t.split_over_tp for t in layer + rest) and [t.elements for t in rest] == [model.hidden]


@pytest.mark.parametrize("micro_batches", [1, 4])
def test_todays_deepspeed_regathers_each_persistent_tensor_in_a_call_of_its_own(monkeypatch, micro_batches):
    """Today's DeepSpeed releases every parameter at each step and gathers the persistent ones again with one
    all-gather per tensor (frameworks/deepspeed.py): Llama-3 70B's 2 x 80 + 1 norm weights, 161 calls over the
    1,024-rank group once per step, each of 8,192 bf16 elements; FSDP pays nothing of the kind."""
    from planner.cost import collectives, data_parallel, groups

    cluster = load_cluster("dgx-h100")
    added = {}
    for framework in ("deepspeed", "fsdp"):
        layout = Layout(dp=1024, zero=3, micro_batch=1, global_batch=1024 * micro_batches, recompute="full",
                        framework=framework)
        with_regather = simulate(PRESETS["llama3-70b"], layout, cluster)["time"]["dp_comm_exposed"]
        monkeypatch.setattr(data_parallel, "_persistent_regather_s", lambda *args: 0.0)
        added[framework] = with_regather - simulate(PRESETS["llama3-70b"], layout, cluster)["time"]["dp_comm_exposed"]
        monkeypatch.undo()
    sizes, strides = groups.dp_group(np.array([1]), np.array([1]), np.array([1024]), np.array([1]))
    expected = collectives.all_gather_time(np.array([161 * 8192 * 2.0]), groups.links(cluster, sizes, strides),
                                           calls=161.0, **groups.collective_kwargs(cluster))
    assert added["deepspeed"] == pytest.approx(float(expected[0]), rel=1e-9)
    assert added["deepspeed"] > 161 * 1e-6  # latency-bound: at least a microsecond a call
    assert added["fsdp"] == 0.0


def test_only_tensors_under_the_persistence_threshold_are_gathered_again():
    """DeepSpeed persists parameters of at most stage3_param_persistence_threshold = 1e5 elements on the rank
    (0.19.8 runtime/zero/config.py:228, partition_parameters.py:1292): megatron-1t's h->4h bias, 4 x 25,600 =
    102,400 elements, is over it at tp 1 (gathered with its module, not again after the step) and under it at
    tp 2 (51,200 per rank); its other seven vector tensors (25,600 or 3 x 25,600 / tp) persist either way."""
    assert zero3_fetch.PARAM_PERSISTENCE_THRESHOLD == 1e5
    model = PRESETS["megatron-1t"]
    counts = {tp: zero3_fetch.persistent_tensors_per_layer(single_batch(model, Layout(tp=tp, dp=8, zero=3)))[0]
              for tp in (1, 2)}
    assert counts == {1: 7.0, 2: 8.0}
