"""Megatron-LM launch files: every flag exists in Megatron-LM's parser at the cited commit, parses with its
types and choices, and carries the plan (parallel sizes, pipeline split, ZeRO as Megatron-Core sharding)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess

import pytest

from planner.emit import launch_files, launch_problems
from planner.emit.megatron import megatron_arguments, megatron_files, unsupported
from planner.specs.pipeline_chunks import virtual_stage_layers
from planner.errors import PlannerInputError
from planner.specs.layout import Layout
from planner.specs.pipeline_stages import stage_layers
from planner.specs.model import family_moe_model, preset

MEGATRON = dict(framework="megatron")
# (model, layout) pairs covering every branch: ZeRO 0-3, vpp, cp, even / slot / uneven pipeline splits,
# selective and full recompute, bf16/fp16/fp8/fp32, GQA, GPT-3 style (learned positions, biases, tied).
CASES = {
    "llama3-70b-3d-vpp": ("llama3-70b", Layout(tp=8, pp=4, vpp=5, dp=8, zero=1, global_batch=512, micro_batch=1,
                                              seq_parallel=True, tp_comm_overlap=True, dp_comm_overlap=True, **MEGATRON)),
    "llama3-70b-uneven": ("llama3-70b", Layout(tp=8, pp=3, dp=2, zero=1, global_batch=64, recompute="selective",
                                              seq_parallel=True, **MEGATRON)),
    "llama3-405b-slots": ("llama3-405b", Layout(tp=8, pp=16, vpp=2, dp=4, zero=1, global_batch=256, recompute="full",
                                               seq_parallel=True, dtype="fp8", grad_reduce_in_fp32=False, **MEGATRON)),
    "llama3-8b-cp-fsdp": ("llama3-8b", Layout(tp=2, cp=2, dp=16, zero=3, global_batch=64, seq_parallel=True,
                                             dp_comm_overlap=True, **MEGATRON)),
    "llama3-8b-zero2": ("llama3-8b", Layout(dp=64, zero=2, global_batch=256, micro_batch=2, **MEGATRON)),
    "gpt3-175b-fp16": ("gpt3-175b", Layout(tp=8, pp=8, dp=1, zero=0, global_batch=1536, dtype="fp16",
                                          flash_attention=False, grad_reduce_in_fp32=True, **MEGATRON)),
    "gpt2-fp32": ("gpt2-small", Layout(dp=8, global_batch=64, dtype="fp32", **MEGATRON)),
    "gpt3-175b-distributed-checkpoints": ("gpt3-175b", Layout(tp=8, pp=8, dp=1, global_batch=64, recompute="full",
                                                             partition_activations=True, **MEGATRON)),
    # Mixtures of experts: ep folded into dp, expert tp apart from tp, the a2a overlap, MLA, dense first layers.
    "qwen3-30b-a3b-ep": ("qwen3-30b-a3b", Layout(tp=1, pp=2, vpp=24, dp=8, ep=8, zero=1, global_batch=512,
                                                micro_batch=2, dtype="fp8", moe_a2a_overlap="megatron",
                                                **MEGATRON)),
    "deepseek-v3-mla": ("deepseek-v3", Layout(tp=2, pp=16, dp=32, ep=64, etp=1, zero=1, global_batch=2048,
                                             recompute="full", dtype="fp8", moe_capacity_factor=1.25,
                                             seq_parallel=True, **MEGATRON)),
    # Node-limited dispatch: the flex dispatcher on DeepEP (frameworks.moe.MoEStack.can_dispatch_once_per_node).
    "deepseek-v3-deepep": ("deepseek-v3", Layout(tp=1, pp=16, dp=64, ep=64, zero=1, global_batch=2048, dtype="fp8",
                                                moe_node_dispatch=True, **MEGATRON)),
}


def pairs(arguments_text: str) -> list[tuple[str, str | None]]:
    """megatron_args.txt back into (flag, value) pairs."""
    out = []
    for line in arguments_text.splitlines():
        flag, _, value = line.partition(" ")
        out.append((flag, value or None))
    return out


def megatron_parser(options: dict) -> argparse.ArgumentParser:
    """A reproduction of Megatron-LM's parser from the extracted option list: same names, value kinds and
    choices (allow_abbrev=False as in MP:119-120), so a misspelt flag or a bad value fails here as there."""
    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False, exit_on_error=False)
    types = {"int": int, "float": float, "str": str, "enum": str}
    for option, (kind, choices) in options.items():
        if kind == "flag":
            parser.add_argument(option, action="store_true")
            continue
        base = kind.rstrip("*+?0123456789")
        suffix = kind[len(base):]
        nargs = int(suffix) if suffix.isdigit() else suffix or None
        parser.add_argument(option, type=types[base], choices=choices, nargs=nargs)
    return parser


@pytest.mark.parametrize("case", CASES)
def test_every_emitted_flag_exists_in_megatron_and_parses(case, megatron_options, h100):
    name, layout = CASES[case]
    files = launch_files(preset(name), layout, h100, tokens=2e12)
    arguments = pairs(files["megatron_args.txt"])
    assert {flag for flag, _ in arguments} <= set(megatron_options)
    argv = [word for flag, value in arguments for word in ([flag] if value is None else [flag, value])]
    parsed = megatron_parser(megatron_options).parse_args(argv)
    assert (parsed.tensor_model_parallel_size, parsed.pipeline_model_parallel_size) == (layout.tp, layout.pp)
    assert (parsed.micro_batch_size, parsed.global_batch_size) == (layout.micro_batch, layout.global_batch)
    assert (parsed.context_parallel_size or 1) == layout.cp
    assert parsed.num_layers == preset(name).layers and parsed.seq_length == preset(name).seq_len


def test_moe_plans_carry_experts_router_and_expert_parallelism(megatron_options, h100):
    """The MoE flags a plan decides (issue 17: the emitters carry ep), checked against the preset and layout."""
    options = megatron_parser(megatron_options)

    def parsed(case):
        name, layout = CASES[case]
        arguments = pairs(launch_files(preset(name), layout, h100, tokens=1e12)["megatron_args.txt"])
        return options.parse_args([w for f, v in arguments for w in ([f] if v is None else [f, v])])

    qwen = parsed("qwen3-30b-a3b-ep")
    assert (qwen.num_experts, qwen.moe_router_topk, qwen.moe_ffn_hidden_size) == (128, 8, 768)
    assert qwen.expert_model_parallel_size == 8 and qwen.expert_tensor_parallel_size is None  # etp = tp = 1
    assert qwen.overlap_moe_expert_parallel_comm and qwen.moe_grouped_gemm and qwen.moe_token_dispatcher_type == "alltoall"
    assert qwen.kv_channels == 128 and qwen.qk_layernorm  # 32 heads x 128 on hidden 2048
    assert qwen.moe_layer_freq == "1" and not qwen.multi_latent_attention
    v3 = parsed("deepseek-v3-mla")
    model = preset("deepseek-v3")
    assert (v3.expert_model_parallel_size, v3.expert_tensor_parallel_size) == (64, 1)
    # Megatron evaluates the pattern (MP:327-349): 3 dense layers, then 58 MoE layers.
    assert eval(v3.moe_layer_freq) == [0] * 3 + [1] * 58  # noqa: S307 (Megatron's own parsing of the flag)
    assert v3.moe_shared_expert_intermediate_size == model.moe_shared_experts * model.expert_ffn_size
    assert v3.moe_router_enable_expert_bias and v3.moe_router_score_function == "sigmoid"
    assert (v3.moe_router_num_groups, v3.moe_router_group_topk) == (model.moe_groups, model.moe_topk_groups)
    assert v3.multi_latent_attention and (v3.q_lora_rank, v3.kv_lora_rank) == (model.q_lora_rank, model.kv_lora_rank)
    assert (v3.qk_head_dim, v3.qk_pos_emb_head_dim, v3.v_head_dim) == (128, 64, 128)
    assert v3.mtp_num_layers == model.mtp_layers and v3.moe_expert_capacity_factor == 1.25
    deepep = parsed("deepseek-v3-deepep")
    assert (deepep.moe_token_dispatcher_type, deepep.moe_flex_dispatcher_backend) == ("flex", "deepep")
    assert deepep.moe_router_dtype == "fp32" and v3.moe_token_dispatcher_type == "alltoall"
    name, layout = CASES["llama3-8b-zero2"]
    dense = pairs(launch_files(preset(name), layout, h100)["megatron_args.txt"])
    assert not any(flag.startswith(("--num-experts", "--moe-", "--expert-")) for flag, _ in dense)


def test_the_launch_script_passes_exactly_those_arguments(launch_folder, megatron_options, h100):
    model, layout = preset("llama3-70b"), CASES["llama3-70b-uneven"][1]
    files = launch_files(model, layout, h100, tokens=1e12, summary="test plan")
    tmp_path, path = launch_folder(files)
    env = {**os.environ, "PATH": path, "MEGATRON_LM": "/m",
           "DATA_PATH": "/data/prefix", "TOKENIZER": "tok", "MASTER_ADDR": "node0", "NODE_RANK": "1"}
    completed = subprocess.run(["bash", str(tmp_path / "launch.sh")], env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    argv = completed.stdout.splitlines()
    assert argv[:6] == ["--nproc_per_node", "8", "--nnodes", "6", "--node_rank", "1"]
    script_args = argv[argv.index("/m/pretrain_gpt.py") + 1:]
    expected = [w for f, v in pairs(files["megatron_args.txt"]) for w in ([f] if v is None else [f, v])]
    assert script_args[:len(expected)] == expected  # the layout string survives the shell (it holds | and *)
    assert script_args[script_args.index("--data-path") + 1] == "/data/prefix"
    assert {w for w in script_args if w.startswith("--")} <= set(megatron_options)


def parse_layout(layout: str) -> list[list[str]]:
    """Megatron's own layout grammar (megatron/core/transformer/pipeline_parallel_layer_layout.py:288-321 @d98e8a64)."""
    layout = layout.replace(",", "")
    for pattern in (r"\(([^)]+)\)\*(\d+)", r"(.)\*(\d+)"):
        layout = re.sub(pattern, lambda m: m.group(1) * int(m.group(2)), layout)
    return [list(stage) for stage in layout.split("|")]


@pytest.mark.parametrize("layers,pp,vpp", [(80, 3, 1), (33, 4, 2), (7, 2, 1), (126, 8, 2), (80, 4, 2), (30, 4, 1)])
def test_the_pipeline_split_is_the_one_the_plan_priced(layers, pp, vpp):
    chunks = virtual_stage_layers(layers, pp, vpp)
    assert sum(chunks) == layers and len(chunks) == pp * vpp
    first, middle, last = (int(x) for x in stage_layers(layers, pp, vpp))
    per_rank = [sum(chunks[rank::pp]) for rank in range(pp)]
    assert (per_rank[0], per_rank[-1], max(per_rank)) == (first, last, max(first, middle, last))
    args = dict(megatron_arguments(preset("llama3-8b").model_copy(update={"layers": layers}),
                                   Layout(pp=pp, vpp=vpp, dp=1, global_batch=8, framework="megatron")))
    if layers % (pp * vpp) == 0:
        assert "--pipeline-model-parallel-layout" not in args
        assert args.get("--num-virtual-stages-per-pipeline-rank") == (str(vpp) if vpp > 1 else None)
    elif (layers + 2) % (pp * vpp) == 0:  # Megatron's own split: embedding and loss take a layer's slot each
        assert "--account-for-embedding-in-pipeline-split" in args and "--account-for-loss-in-pipeline-split" in args
        assert (chunks[0], chunks[-1]) == ((layers + 2) // (pp * vpp) - 1,) * 2
    else:
        stages = parse_layout(args["--pipeline-model-parallel-layout"])
        assert [stage.count("t") for stage in stages] == chunks
        assert stages[0][0] == "E" and stages[-1][-1] == "L"
        assert "--num-virtual-stages-per-pipeline-rank" not in args  # at most one of them (MP:928-939)


def test_zero_stages_map_to_megatron_core_sharding():
    model = preset("llama3-8b")
    flags = {zero: dict(megatron_arguments(model, Layout(dp=8, zero=zero, global_batch=8, framework="megatron")))
             for zero in (0, 1, 2, 3)}
    assert not {"--use-distributed-optimizer", "--use-megatron-fsdp"} & set(flags[0])
    assert "--use-distributed-optimizer" in flags[1] and "--use-megatron-fsdp" not in flags[1]
    assert flags[2]["--data-parallel-sharding-strategy"] == "optim_grads"
    assert flags[3]["--data-parallel-sharding-strategy"] == "optim_grads_params"
    assert flags[3]["--ckpt-format"] == "fsdp_dtensor"  # Megatron-FSDP requires it (MP:1169-1170)


def test_megatron_fsdp_holds_gradients_in_the_dtype_the_plan_priced():
    # Megatron-FSDP keeps gradients in the model dtype unless --megatron-fsdp-main-grads-dtype says otherwise
    # (arguments.py:3691, param_and_grad_buffer.py:2313-2322); the plan prices fp32 gradients with bf16/fp8.
    model = preset("llama3-8b")
    args = lambda **kw: dict(megatron_arguments(model, Layout(dp=8, global_batch=8, framework="megatron", **kw)))  # noqa: E731
    for zero in (2, 3):
        assert args(zero=zero)["--megatron-fsdp-main-grads-dtype"] == "fp32"
        assert args(zero=zero, dtype="fp16", grad_reduce_in_fp32=True)["--megatron-fsdp-main-grads-dtype"] == "fp32"
        assert "--megatron-fsdp-main-grads-dtype" not in args(zero=zero, grad_reduce_in_fp32=False)  # bf16, as priced
        assert "--megatron-fsdp-main-grads-dtype" not in args(zero=zero, dtype="fp16")
    assert "--megatron-fsdp-main-grads-dtype" not in args(zero=1)  # the distributed optimizer follows --bf16


def test_overlaps_precision_and_recompute_follow_the_layout():
    model = preset("llama3-70b")
    on = dict(megatron_arguments(model, CASES["llama3-70b-3d-vpp"][1]))
    assert {"--sequence-parallel", "--tp-comm-overlap", "--overlap-grad-reduce", "--overlap-param-gather"} <= set(on)
    off = dict(megatron_arguments(model, Layout(tp=8, dp=8, zero=0, global_batch=8, framework="megatron",
                                                dp_comm_overlap=True)))
    assert "--overlap-grad-reduce" in off and "--overlap-param-gather" not in off  # needs the dist. optimizer
    fp8 = dict(megatron_arguments(preset("llama3-405b"), CASES["llama3-405b-slots"][1]))
    assert fp8["--fp8-format"] == "hybrid" and "--bf16" in fp8 and "--grad-reduce-in-bf16" in fp8
    assert (fp8["--recompute-granularity"], fp8["--recompute-method"]) == ("full", "uniform")
    # Partitioned checkpoints as priced: Megatron-LM's --distribute-saved-activations (TC:557) only where the layout
    # partitions them; its default is off.
    assert "--distribute-saved-activations" in dict(
        megatron_arguments(preset("gpt3-175b"), CASES["gpt3-175b-distributed-checkpoints"][1]))
    assert "--distribute-saved-activations" not in fp8
    gpt3 = dict(megatron_arguments(preset("gpt3-175b"), CASES["gpt3-175b-fp16"][1]))
    assert "--fp16" in gpt3 and gpt3["--position-embedding-type"] == "learned_absolute"
    assert "--untie-embeddings-and-output-weights" not in gpt3 and "--disable-bias-linear" not in gpt3
    assert gpt3["--attention-backend"] == "unfused" and "--accumulate-allreduce-grads-in-fp32" in gpt3


def test_schedule_without_tokens_is_left_to_the_user():
    args = dict(megatron_arguments(preset("llama3-8b"), Layout(dp=8, global_batch=64, framework="megatron")))
    assert args["--train-samples"].startswith("${TRAIN_SAMPLES:?") and args["--lr"].startswith("${LR:?")
    with_tokens = dict(megatron_arguments(preset("llama3-8b"), Layout(dp=8, global_batch=64, framework="megatron"),
                                          tokens=1e9, learning_rate=3e-4))
    samples = int(with_tokens["--train-samples"])
    assert samples % 64 == 0 and samples * 8192 >= 1e9 and with_tokens["--lr-decay-samples"] == str(samples)


def test_what_megatron_core_cannot_build_is_refused_in_one_line(h100, alibi_preset):
    assert "ALiBi" in " ".join(unsupported(alibi_preset, Layout(dp=8, global_batch=8)))
    assert "embedding" in " ".join(unsupported(preset("bloom-176b"), Layout(dp=8, global_batch=8)))
    # kv_heads 8 with tp 16 is allowed: each query group is replicated on two ranks (TC:1461-1468).
    assert unsupported(preset("llama3-70b"), Layout(tp=16, dp=1, global_batch=8)) == []
    assert "kv_heads(3)" in " ".join(unsupported(preset("llama3-8b").model_copy(update={"heads": 24, "kv_heads": 3}),
                                                 Layout(tp=8, global_batch=8)))
    with pytest.raises(PlannerInputError) as refused:
        launch_files(alibi_preset, Layout(dp=8, global_batch=8, framework="megatron"), h100)
    assert str(refused.value).startswith("megatron (Megatron-LM) cannot run this plan: position=alibi")
    assert "\n" not in str(refused.value)


MEGATRON_VALIDATE_ARGS_CASES = [
    # (model, layout, refusal fragment, the Megatron-LM@d98e8a64 check it stands for)
    (dict(preset="llama3-8b", mtp_layers=1, position="learned"), dict(dp=8),
     "mtp_layers with position=learned", "MP:881-886"),
    (dict(preset="qwen3-30b-a3b", mtp_layers=2), dict(dp=8, ep=8, moe_a2a_overlap="megatron"),
     "mtp_layers=2", "TC:3043-3046"),
    (dict(preset="qwen3-30b-a3b"), dict(tp=2, dp=4, ep=4), "seq_parallel=0 with an MoE model at tp(2)",
     "moe/moe_layer.py:636-640"),
    (dict(preset="llama3-8b", seq_len=8196), dict(cp=4, dp=2), "not a multiple of 2 * cp(4)", "MP:1335-1338"),
    (dict(preset="llama3-8b", max_positions=4096), dict(dp=8), "max_positions(4096) < seq_len(8192)", "MP:1353-1356"),
    (dict(preset="llama3-8b"), dict(cp=2, dp=4, flash_attention=False), "flash_attention=0 with cp(2)",
     "TE attention/dot_product_attention/utils.py:1169-1173"),
    (dict(preset="deepseek-v3", kv_heads=64), dict(dp=8, ep=8), "kv_heads(64) != heads(128)", "MP:1973-1974"),
]


@pytest.mark.parametrize("model_fields, layout_fields, fragment, check", MEGATRON_VALIDATE_ARGS_CASES,
                         ids=[case[3] for case in MEGATRON_VALIDATE_ARGS_CASES])
def test_what_megatron_lms_argument_checks_reject_is_refused(model_fields, layout_fields, fragment, check):
    """Each combination passes Megatron's parser (which tests/emit reproduces) but fails a check after it, at the cited
    line of Megatron-LM@d98e8a64 (MP = training/arguments.py validate_args, TC = transformer_config.py) or of the
    Transformer Engine it runs on (d0067d0): refused here
    with the reason rather than written into a launch that stops at start-up."""
    fields = dict(model_fields)
    model = preset(fields.pop("preset")).model_copy(update=fields)
    layout = Layout(global_batch=64, framework="megatron", **layout_fields)
    problems = launch_problems(model, layout)
    assert any(fragment in problem for problem in problems), problems


def test_top_1_routing_with_a_softmax_router_asks_for_the_pre_softmax():
    """TC:2661-2669 raises "Please use --moe-router-pre-softmax when topk is 1" for a softmax score; the MoE family's
    top-1 models (search.moe_budget) have one. Routers with an expert bias use the sigmoid score and need none."""
    top1 = family_moe_model(8, experts=8, top_k=1)
    assert "--moe-router-pre-softmax" in dict(megatron_arguments(top1, Layout(dp=8, ep=8, global_batch=64,
                                                                             framework="megatron")))
    assert "--moe-router-pre-softmax" not in dict(megatron_arguments(preset("qwen3-30b-a3b"), Layout(
        dp=8, ep=8, global_batch=64, framework="megatron")))  # top-8


def test_files_without_a_token_count_still_launch(tmp_path):
    files = megatron_files(preset("gpt2-small"), Layout(dp=8, global_batch=64, framework="megatron"), 8)
    assert set(files) == {"megatron_args.txt", "launch.sh"}
    script = tmp_path / "launch.sh"
    script.write_text(files["launch.sh"])
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert '"${TRAIN_SAMPLES:?' in files["launch.sh"] and "--nnodes" not in files["launch.sh"]
    assert "CUDA_DEVICE_MAX_CONNECTIONS" not in files["launch.sh"]
    assert shlex.split(files["megatron_args.txt"].splitlines()[0]) == ["--tensor-model-parallel-size", "1"]


def test_multi_token_prediction_layers_are_in_the_layout_string():
    """DeepSeek-V3's 61 layers on pp 16 take a layout string; Megatron requires one 'm' per MTP layer in it, in the
    last virtual stage (pipeline_parallel_layer_layout.py:112-114, 121-130): without it every launch failed."""
    model = preset("deepseek-v3")
    args = dict(megatron_arguments(model, CASES["deepseek-v3-mla"][1]))
    stages = parse_layout(args["--pipeline-model-parallel-layout"])
    assert sum(stage.count("m") for stage in stages) == model.mtp_layers == int(args["--mtp-num-layers"])
    assert stages[-1][-1] == "L" and stages[-1][-1 - model.mtp_layers:-1] == ["m"] * model.mtp_layers
    assert sum(stage.count("t") for stage in stages) == model.layers


@pytest.mark.parametrize("global_batch, expected", [(8, None), (10, "5"), (7, "7"), (9, "5"), (14, "5"), (12, None),
                                                   (2, "refused")])
def test_interleaving_runs_the_micro_batches_megatron_accepts(global_batch, expected):
    """Megatron's interleaved schedule takes groups of at least pp micro-batches and refuses a last group of fewer
    than pp (schedules.py:1160-1180): with fewer than pp it cannot run; with a remainder the launch names the
    smallest group that divides m or leaves at least pp (10 -> 5 + 5, 9 -> 5 + 4), the round the plan's warm-up
    activations were priced at (frameworks.interleaving_round); all of m (10) held twice the warm-up chunks."""
    from planner.emit import launch_problems

    model = preset("llama3-8b")
    layout = Layout(pp=4, vpp=2, dp=1, micro_batch=1, global_batch=global_batch, framework="megatron")
    problems = launch_problems(model, layout)
    if expected == "refused":
        assert any("interleaved schedule needs at least pp(4)" in p for p in problems)
        return
    assert not problems
    args = dict(megatron_arguments(model, layout))
    assert args.get("--microbatch-group-size-per-virtual-pipeline-stage") == expected


def test_sliding_window_attention_is_written():
    """--attention-window was dropped: the launch ran full causal attention (13.5 s) for a plan priced with the
    window (9.6 s). Megatron's --window-size is FlashAttention's (left, right) (MP:2384, TC:247)."""
    model = preset("llama3-8b").model_copy(update={"attention_window": 4096})
    args = dict(megatron_arguments(model, Layout(dp=8, global_batch=64, framework="megatron")))
    assert args["--window-size"] == "4095,0"
    assert "--window-size" not in dict(megatron_arguments(preset("llama3-8b"), Layout(dp=8, global_batch=64,
                                                                                      framework="megatron")))


@pytest.mark.parametrize("name, dropout", [("llama3-8b", "0"), ("gpt3-1.3b", "0.1")])
def test_the_launch_trains_with_the_dropout_the_plan_priced(name, dropout):
    """The plan keeps dropout masks only for a model with dropout; the launch sets the model's probability (it wrote 0
    for every model, while a GPT-3 preset was priced with Megatron's default 0.1, TC:188, 191)."""
    args = dict(megatron_arguments(preset(name), Layout(dp=8, global_batch=64, framework="megatron")))
    assert (args["--attention-dropout"], args["--hidden-dropout"]) == (dropout, dropout)


def test_a_fused_loss_is_refused_as_megatron_lms_arguments_refuse_it(h100):
    """--loss-fusion 1 is priced as Transformer Engine's 2-byte cross-entropy (frameworks/megatron.py), which
    Megatron-LM@d98e8a64's validate_args refuses (training/arguments.py:1697-1702, NVIDIA/Megatron-LM#5115): the
    parser reproduction here accepts --cross-entropy-fusion-impl te, the assertion after it does not, so the emitter
    refuses the layout; Megatron's default, the unfused loss, is written as no --cross-entropy flag at all."""
    name, layout = CASES["qwen3-30b-a3b-ep"]
    fused = layout.model_copy(update={"loss_fusion": True})
    assert any(problem.startswith("loss_fusion: ") and "NVIDIA/Megatron-LM#5115" in problem
               for problem in launch_problems(preset(name), fused))
    with pytest.raises(PlannerInputError, match="cross-entropy"):
        launch_files(preset(name), fused, h100, tokens=2e12)
    plain = pairs(launch_files(preset(name), layout, h100, tokens=2e12)["megatron_args.txt"])
    assert not any(flag.startswith("--cross-entropy") for flag, _ in plain)

def test_the_all_to_all_overlap_is_refused_only_where_megatron_refuses_it():
    """TC:3034-3037 asserts a bf16 or fp16 model: fp16 was refused here too, fp32 alone is refused there."""
    model = preset("qwen3-30b-a3b")
    layout = Layout(dp=8, ep=8, global_batch=64, moe_a2a_overlap="megatron", framework="megatron")
    assert not any("moe_a2a_overlap" in p for p in unsupported(model, layout.model_copy(update={"dtype": "fp16"})))
    assert any("moe_a2a_overlap" in p for p in unsupported(model, layout.model_copy(update={"dtype": "fp32"})))


def test_an_moe_launch_on_volta_is_refused_for_its_grouped_gemms(h100):
    """Every MoE plan gets --moe-grouped-gemm (the grouped expert GEMMs it prices), which Megatron-LM@d98e8a64's
    validate_args refuses below compute capability 8 (MP:1378-1380): a V100 MoE launch stopped at start-up."""
    from planner.specs.clusters import load_cluster

    v100 = load_cluster("dgx2-v100")
    assert v100.accelerator.compute_capability == 7.0
    model, layout = preset("qwen3-30b-a3b"), Layout(dp=16, ep=8, global_batch=64, framework="megatron")
    assert any("compute capability 7" in p for p in launch_problems(model, layout, v100))
    assert launch_problems(model, layout, h100) == []
    assert launch_problems(preset("llama3-8b"), Layout(dp=16, global_batch=64, framework="megatron"), v100) == []
    with pytest.raises(PlannerInputError, match="grouped expert GEMMs"):
        launch_files(model, layout, v100)
