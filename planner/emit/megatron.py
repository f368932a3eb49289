"""A plan's layout as a Megatron-LM (Megatron-Core) run: `pretrain_gpt.py` arguments and a torchrun script.

Pure: model, layout and node size in, text out. Flag names are checked against NVIDIA/Megatron-LM@d98e8a64
(2026-08-22), whose parser builds most options from config dataclasses (megatron/training/argument_utils.py
ArgumentGroupFactory: field `foo_bar` -> `--foo-bar`; a bool defaulting to True -> `--disable-foo-bar`).
Sources, abbreviated below:
  MP  = megatron/training/arguments.py          MPC = megatron/core/model_parallel_config.py
  TC  = megatron/core/transformer/transformer_config.py
  TRC = megatron/training/config/training_config.py   CC = megatron/training/config/common_config.py
tests/emit/data/megatron_arguments.txt lists every option that parser accepts at that commit.

ZeRO maps onto Megatron-Core's data-parallel sharding: 0 = DDP, 1 = the distributed optimizer, 2 and 3 =
Megatron-FSDP with `optim_grads` / `optim_grads_params` (MP:3190, the FSDP strategies; CC:92
`--use-megatron-fsdp`). Offload is refused upstream (planner.frameworks.megatron: supports_offload).
"""

from __future__ import annotations

import shlex

from planner.specs.pipeline_chunks import split_kind, virtual_stage_layers
from planner.emit.ranks import nodes, torchrun_ranks
from planner.emit.schedule import (ADAM_BETAS, GRADIENT_CLIP, SAVE_INTERVAL_WITHOUT_PLAN, WARMUP_FRACTION,
                                   WEIGHT_DECAY, WSD_MIN_LR_RATIO, cooldown_count, train_sequences, warmup_count)
from planner.frameworks import FRAMEWORKS, interleaving_round, micro_batch_rules
from planner.specs.layout import Layout
from planner.specs.model import ModelSpec

MEGATRON_COMMIT = "NVIDIA/Megatron-LM@d98e8a64"
# Megatron-FSDP strategies by ZeRO stage (MP:3190-3192 choices no_shard, optim, optim_grads, optim_grads_params).
FSDP_STRATEGY = {2: "optim_grads", 3: "optim_grads_params"}
TRAIN_SAMPLES_UNKNOWN = "${TRAIN_SAMPLES:?set TRAIN_SAMPLES (sequences to train on)}"
LR_UNKNOWN = "${LR:?set LR (peak learning rate)}"

Argument = tuple[str, "str | None"]  # (flag, value or None for a switch)


# Checkpoint modes the launch writes: async is --async-save with its persistent worker, without which validate_args
# turns --async-save off with a warning (MP:1814-1820); the default --ckpt-format torch_dist is the one async save
# works with (training_config.py:486, 516-517).
LAUNCH_CHECKPOINT_MODES = ("sync", "async")
# Megatron-LM trains every dtype the plan prices (fp8 through Transformer Engine): nothing refused by dtype alone.
DTYPE_REFUSALS: dict[str, str] = {}
ASYNC_SAVE_ARGUMENTS = [("--async-save", None), ("--use-persistent-ckpt-worker", None)]


def unsupported(model: ModelSpec, layout: Layout, cluster=None) -> list[str]:
    """What Megatron-Core's GPT model cannot run as planned (beyond planner.frameworks.unsupported_features), on
    `cluster`'s accelerators where one is given."""
    problems = []
    # The experts the plan prices run as grouped GEMMs (moe_arguments: --moe-grouped-gemm), which validate_args
    # refuses below compute capability 8 (MP:1378-1380).
    capability = cluster.accelerator.compute_capability if cluster is not None else None
    if model.is_moe and capability is not None and capability < 8.0:
        problems.append(f"an MoE model on compute capability {capability:g} ({cluster.name}): Megatron's grouped "
                        "expert GEMMs need 8.0 or more")
    if model.position == "alibi":  # MP:2397 choices learned_absolute, rope, yarn, mrope, relative, none
        problems.append("position=alibi: Megatron-LM's --position-embedding-type has no ALiBi")
    if model.embedding_norm:
        problems.append("embedding_norm: Megatron-Core's GPT model has no LayerNorm after the embedding")
    # TC:1461-1468: num_query_groups must be a multiple or a divisor of the tensor-parallel size.
    if model.kv % layout.tp and layout.tp % model.kv:
        problems.append(f"kv_heads({model.kv}) is neither a multiple nor a divisor of tp({layout.tp})")
    if model.attention == "mla" and model.q_lora_rank is None:  # TC:3288 q_lora_rank: int = 512, no None from the CLI
        problems.append("q_lora_rank=None (queries projected directly): Megatron-LM's --q-lora-rank takes a number")
    if model.is_moe and model.bias and layout.expert_tp > 1:  # TC:2612-2615
        problems.append(f"bias with etp({layout.expert_tp}) > 1: Megatron-Core supports expert biases only at etp 1")
    # (Interleaving with fewer than pp micro-batches a step is refused by the stack's data: frameworks.megatron.)
    # (Activation checkpoints kept on the host, context parallelism's 2 x cp chunks and its fused attention are the
    # stack's data, frameworks.megatron, which simulate and the searches check too.)
    # The fused loss a plan prices (Layout.loss_fusion, frameworks/megatron.py) is Transformer Engine's, which
    # validate_args refuses (MP:1697-1702: "disabled due to stability issues", NVIDIA/Megatron-LM#5115, 2026-06-03);
    # the 'native' fusion it allows holds 10 bytes per logit where the unfused loss holds 6 (torch.compile'd:
    # profiles/loss-memory-cpu.json), so it would not be the plan's memory either.
    if layout.loss_fusion:
        problems.append("loss_fusion: Megatron-LM's training arguments refuse Transformer Engine's fused cross-entropy "
                        "(--cross-entropy-fusion-impl te, disabled for stability: NVIDIA/Megatron-LM#5115), and its "
                        "native fusion holds more than the unfused loss (10 bytes per logit to 6); plan with --loss-fusion 0")
    # TC:3034-3037 asserts a bf16 or fp16 model (fp8 training keeps bf16 parameters).
    if layout.moe_a2a_overlap == "megatron" and layout.dtype == "fp32":
        problems.append(f"moe_a2a_overlap=megatron with dtype={layout.dtype}: Megatron overlaps the expert-parallel "
                        "all-to-all only in bf16 or fp16 training")
    if layout.moe_a2a_overlap == "megatron" and model.mtp_layers > 1:  # TC:3043-3046
        problems.append(f"moe_a2a_overlap=megatron with mtp_layers={model.mtp_layers}: Megatron's all-to-all overlap "
                        "takes at most one multi-token prediction layer")
    # (An MoE model at tp > 1 without sequence parallelism: the stack's data, frameworks.moe, which launch_problems
    # reads through moe_unsupported.)
    if model.mtp_layers and model.position != "rotary":  # MP:881-886: rope or none only
        problems.append(f"mtp_layers with position={model.position}: Megatron's multi-token prediction takes rotary "
                        "(or no) position embeddings only")
    if model.positions < model.seq_len:  # MP:1353-1356
        problems.append(f"max_positions({model.positions}) < seq_len({model.seq_len}): Megatron needs "
                        "--max-position-embeddings >= --seq-length")
    if model.attention == "mla" and model.kv != model.heads:  # MP:1973-1974
        problems.append(f"attention=mla with kv_heads({model.kv}) != heads({model.heads}): Megatron's multi-latent "
                        "attention excludes grouped-query attention")
    if model.attention == "mla" and model.hidden % model.heads:  # MP:1331-1333 asserts hidden % heads == 0
        problems.append(f"attention=mla with hidden({model.hidden}) not divisible by heads({model.heads}): Megatron "
                        "asserts it divides")
    return problems


def parallel_arguments(model: ModelSpec, layout: Layout) -> list[Argument]:
    """tp/pp/vpp/cp, sequence parallelism and the pipeline split."""
    args: list[Argument] = [("--tensor-model-parallel-size", str(layout.tp)),      # MPC:55
                            ("--pipeline-model-parallel-size", str(layout.pp))]    # MPC:83
    args += pipeline_split_arguments(model.layers, layout.pp, layout.vpp, model.mtp_layers,
                                     layout.first_stage_layers or 0, layout.last_stage_layers or 0)
    m = layout.grad_accumulation
    group = int(interleaving_round(micro_batch_rules(FRAMEWORKS["megatron"]), layout.pp, m)) if layout.vpp > 1 else 0
    if layout.pp > 1 and layout.vpp > 1 and group != layout.pp:
        # With the default group of pp micro-batches per virtual stage a remainder below pp is refused
        # (schedules.py:1170-1180): the smallest group that divides m or leaves at least pp, the round the plan's
        # activations were priced at (frameworks.interleaving_round; MPC:431-436).
        args.append(("--microbatch-group-size-per-virtual-pipeline-stage", str(group)))  # MPC:431
    if layout.cp > 1:
        args.append(("--context-parallel-size", str(layout.cp)))                   # MPC:100
    if layout.seq_parallel and layout.tp > 1:  # MP:1433-1439 turns it off at tp = 1 anyway
        args.append(("--sequence-parallel", None))                                 # MPC:94
    if layout.tp_comm_overlap_on and layout.tp > 1:  # TE userbuffers; needs --sequence-parallel (MP:1441-1442)
        args.append(("--tp-comm-overlap", None))                                   # MPC:265
    return args


def pipeline_split_arguments(layers: int, pp: int, vpp: int, mtp_layers: int = 0, first_set: int = 0,
                             last_set: int = 0) -> list[Argument]:
    """How Megatron splits the layers over pp x vpp stages, as the plan priced it (planner.specs.pipeline_chunks).

    At most one of --num-virtual-stages-per-pipeline-rank and --pipeline-model-parallel-layout may be set
    (MP:928-939); the layout string also fixes vpp (MP:941-951). A layout string names each multi-token-
    prediction layer ('m'), in the last virtual stage of the last rank, before the loss
    (pipeline_parallel_layer_layout.py:112-114, 121-126). End ranks' layers the layout sets (`first_set`, `last_set`)
    go into the layout string too, which takes any split."""
    if pp == 1:
        return []
    kind = split_kind(layers, pp, vpp, first_set, last_set)
    args: list[Argument] = []
    if kind == "uneven":
        # MP:3103; grammar in megatron/core/transformer/pipeline_parallel_layer_layout.py:283-321:
        # stages split by '|', E = embedding, L = loss, t = one transformer layer, x*n repeats x.
        chunks = virtual_stage_layers(layers, pp, vpp, first_set, last_set)
        stages = [("E" if i == 0 else "") + (f"t*{n}" if n > 1 else "t" * n)
                  + ("m" * mtp_layers + "L" if i == len(chunks) - 1 else "") for i, n in enumerate(chunks)]
        return [("--pipeline-model-parallel-layout", "|".join(stages))]
    if kind == "slots":  # TC:137, 141; the split checked at TC:2372-2413
        args += [("--account-for-embedding-in-pipeline-split", None), ("--account-for-loss-in-pipeline-split", None)]
    if vpp > 1:  # interleaved 1F1B; pp = 2 is allowed with p2p overlap, on by default (MP:1000-1008)
        args.append(("--num-virtual-stages-per-pipeline-rank", str(vpp)))         # MP:3116
    return args


def expert_parallel_arguments(model: ModelSpec, layout: Layout) -> list[Argument]:
    """Expert parallelism (ep, expert tp) and the all-to-all overlap of an MoE plan; none for a dense model."""
    if not model.is_moe:
        return []
    args: list[Argument] = [("--expert-model-parallel-size", str(layout.ep))]    # MPC:127
    if layout.expert_tp != layout.tp:  # None = tp (MPC:130)
        args.append(("--expert-tensor-parallel-size", str(layout.expert_tp)))  # MPC:130
    if layout.moe_a2a_overlap == "megatron":
        args.append(("--overlap-moe-expert-parallel-comm", None))               # MPC:343
    return args


def moe_layer_pattern(model: ModelSpec) -> str:
    """--moe-layer-freq: an integer N (one MoE layer every N, from the first) or, when the first layers are dense,
    the pattern expression Megatron evaluates (MP:327-349, e.g. "([0]*3+[1]*58)")."""
    if not model.moe_first_dense:
        return str(model.moe_layer_freq)
    flags = [int(i >= model.moe_first_dense and (i - model.moe_first_dense) % model.moe_layer_freq == 0)
             for i in range(model.layers)]
    runs: list[list[int]] = []
    for flag in flags:
        if runs and runs[-1][0] == flag:
            runs[-1][1] += 1
        else:
            runs.append([flag, 1])
    return "(" + "+".join(f"[{flag}]*{count}" for flag, count in runs) + ")"


def moe_arguments(model: ModelSpec, layout: Layout) -> list[Argument]:
    """The experts, the router and multi-head latent attention (TC fields unless noted)."""
    args: list[Argument] = []
    if model.is_moe:
        args += [("--num-experts", str(model.moe_experts)),                        # TC:239
                 ("--moe-router-topk", str(model.moe_top_k)),                      # TC:760
                 ("--moe-ffn-hidden-size", str(model.expert_ffn_size)),            # TC:740
                 ("--moe-layer-freq", moe_layer_pattern(model)),                   # TC:735
                 # The plan prices grouped expert GEMMs and the all-to-all dispatcher (planner.cost.moe);
                 # Megatron's defaults are a GEMM loop and the all-gather dispatcher (TC:850, 891).
                 ("--moe-grouped-gemm", None)]
        if layout.moe_node_dispatch_used:  # tokens cross to a node once: the flex dispatcher on DeepEP (TC:891-900,
            # moe/README.md:116-118), with the fp32 router probabilities DeepEP takes (token_dispatcher.py:1312-1316)
            args += [("--moe-token-dispatcher-type", "flex"), ("--moe-flex-dispatcher-backend", "deepep"),
                     ("--moe-router-dtype", "fp32")]                              # TC:811
        else:
            args.append(("--moe-token-dispatcher-type", "alltoall"))
        if model.moe_shared_experts:
            args.append(("--moe-shared-expert-intermediate-size",                 # TC:701
                         str(model.moe_shared_experts * model.expert_ffn_size)))
        if model.moe_router_bias:  # aux-loss-free balancing needs a sigmoid (or sqrtsoftplus) score (TC:2617-2625)
            args += [("--moe-router-enable-expert-bias", None),                   # TC:816
                     ("--moe-router-score-function", "sigmoid")]                  # TC:808
        elif model.moe_top_k == 1:  # a softmax over one selected score has no gradient: TC:2661-2669 raises without
            args.append(("--moe-router-pre-softmax", None))                       # TC:799 (softmax, then top-1)
        if model.moe_groups > 1:  # node-limited routing (DeepSeek-V3 section 3.2.2)
            args += [("--moe-router-num-groups", str(model.moe_groups)),          # TC:780
                     ("--moe-router-group-topk", str(model.moe_topk_groups))]     # TC:796
        if layout.moe_capacity_factor is not None:
            args.append(("--moe-expert-capacity-factor", f"{layout.moe_capacity_factor:g}"))  # TC:917
        if layout.moe_pad_to_capacity:
            args.append(("--moe-pad-expert-input-to-capacity", None))  # TC:921
    if model.mtp_layers:
        args.append(("--mtp-num-layers", str(model.mtp_layers)))                  # TC:68
    if model.attention == "mla":  # MLATransformerConfig (TC:3280-3300)
        args += [("--multi-latent-attention", None),                              # TC:288
                 ("--q-lora-rank", str(model.q_lora_rank)), ("--kv-lora-rank", str(model.kv_lora_rank)),
                 ("--qk-head-dim", str(model.qk_nope_head_dim)), ("--qk-pos-emb-head-dim", str(model.qk_rope_head_dim)),
                 ("--v-head-dim", str(model.v_head_dim))]
    return args


def data_parallel_arguments(layout: Layout) -> list[Argument]:
    """ZeRO stage, gradient dtype and the data-parallel overlaps."""
    args: list[Argument] = []
    if layout.zero == 1:
        args.append(("--use-distributed-optimizer", None))                         # MP:3156
    elif layout.zero >= 2:
        args += [("--use-megatron-fsdp", None),                                    # CC:92
                 ("--data-parallel-sharding-strategy", FSDP_STRATEGY[layout.zero]),  # MP:3190
                 ("--ckpt-format", "fsdp_dtensor")]  # Megatron-FSDP requires it (MP:1169-1170; TRC:486)
    if layout.grad_reduce_in_fp32 is False and layout.dtype in ("bf16", "fp8"):
        args.append(("--grad-reduce-in-bf16", None))  # MP:3053; else bf16 reduces in fp32 (MP:1213-1217)
    elif layout.grad_reduce_in_fp32 and layout.dtype == "fp16":
        args.append(("--accumulate-allreduce-grads-in-fp32", None))                # MP:3069
    fp32_grads = layout.grad_reduce_in_fp32 or (layout.grad_reduce_in_fp32 is None and layout.dtype in ("bf16", "fp8"))
    if layout.zero >= 2 and layout.dtype != "fp32" and fp32_grads:
        # Megatron-FSDP ignores the two flags above: its gradients are held and reduce-scattered in the model's
        # 16-bit dtype unless asked (MP:3691 default 'auto' -> None, MP:1077-1092; megatron_fsdp/
        # param_and_grad_buffer.py:2313-2322), where the plan priced fp32 gradients.
        args.append(("--megatron-fsdp-main-grads-dtype", "fp32"))                   # MP:3691
    if layout.dp_comm_overlap_on and layout.dp * layout.cp > 1:
        args.append(("--overlap-grad-reduce", None))                               # MP:3121
        if layout.zero >= 1:  # needs the distributed optimizer or Megatron-FSDP, and --overlap-grad-reduce (MP:1023-1028)
            args.append(("--overlap-param-gather", None))                          # MP:3148
    return args


def model_arguments(model: ModelSpec) -> list[Argument]:
    """The transformer shape (TC fields unless noted)."""
    args: list[Argument] = [("--num-layers", str(model.layers)),                  # TC:65
                            ("--hidden-size", str(model.hidden)),                  # TC:145
                            ("--ffn-hidden-size", str(model.ffn_size)),            # TC:180
                            ("--num-attention-heads", str(model.heads))]           # TC:148
    if model.kv != model.heads:
        args += [("--group-query-attention", None), ("--num-query-groups", str(model.kv))]  # MP:2382, TC:175
    if model.head_dim and model.head_dim * model.heads != model.hidden:  # else hidden / heads (TC:1455-1456)
        args.append(("--kv-channels", str(model.head_dim)))                        # TC:184
    if model.qk_norm:
        args.append(("--qk-layernorm", None))                                      # TC:259
    if model.attention_window:  # FlashAttention's (left, right) window: the window counts the query itself
        args.append(("--window-size", f"{model.attention_window - 1},0"))          # MP:2384, TC:247
    args += [("--seq-length", str(model.seq_len)),                                # MP:3305
             ("--max-position-embeddings", str(model.positions)),                 # MP:2394
             ("--position-embedding-type", "rope" if model.position == "rotary" else "learned_absolute"),  # MP:2397
             ("--normalization", "RMSNorm" if model.norm == "rmsnorm" else "LayerNorm")]  # TC:256
    if model.mlp == "swiglu":
        args.append(("--swiglu", None))                                            # MP:2450
    if not model.tied_embeddings:
        args.append(("--untie-embeddings-and-output-weights", None))               # MP:2460
    if not model.bias:
        args.append(("--disable-bias-linear", None))  # TC:212 add_bias_linear (default True)
    return args


def compute_arguments(layout: Layout) -> list[Argument]:
    """Precision, recompute and the attention kernel."""
    args: list[Argument] = {"bf16": [("--bf16", None)], "fp16": [("--fp16", None)], "fp32": [],  # MPC:177, 180
                            # Transformer Engine fp8 GEMMs on bf16 weights (TC:587); hybrid = e4m3 fwd, e5m2 bwd.
                            "fp8": [("--bf16", None), ("--fp8-format", "hybrid")]}[layout.dtype]
    if layout.dtype == "fp8":  # the scaling the plan priced (transformer_config.py:594-600; default delayed)
        args.append(("--fp8-recipe", layout.fp8_recipe_used))
    if layout.fp8_param_gather:  # MP:2016; needs the distributed optimizer or Megatron-FSDP (MP:1097)
        args.append(("--fp8-param-gather", None))
    if layout.recompute == "full":  # TC:532, 543, 551: every layer's input kept, the layer recomputed
        args += [("--recompute-granularity", "full"), ("--recompute-method", "uniform"), ("--recompute-num-layers", "1")]
        if layout.partition_activations_on:  # TC:557 (a TransformerConfig flag); tp > 1, full recompute (MP:1410-1416)
            args.append(("--distribute-saved-activations", None))
    elif layout.recompute == "selective":  # no --recompute-method with selective (MP:1425-1428)
        args.append(("--recompute-granularity", "selective"))
    if not layout.flash_attention_on:
        args.append(("--attention-backend", "unfused"))  # TC:151; the default (auto) picks a fused kernel
    return args


def schedule_arguments(model: ModelSpec, layout: Layout, tokens: float | None,
                       learning_rate: float | None) -> list[Argument]:
    """Batch, length of training, learning-rate schedule and AdamW (TRC fields unless noted)."""
    args: list[Argument] = [("--micro-batch-size", str(layout.micro_batch)),      # TRC:11
                            ("--global-batch-size", str(layout.global_batch))]    # TRC:15
    samples = train_sequences(layout, tokens, model.seq_len) if tokens else None
    args.append(("--train-samples", str(samples) if samples else TRAIN_SAMPLES_UNKNOWN))  # TRC:69
    if samples and learning_rate:
        # WSD: warm-up, constant peak, (1 - sqrt) cool-down ("minus_sqrt") over the last COOLDOWN_FRACTION to
        # min-lr (planner.laws.hyperparameters: Hagele et al. 2024).
        args += [("--lr", f"{learning_rate:.3g}"),                                # MP:2984
                 ("--min-lr", f"{learning_rate * WSD_MIN_LR_RATIO:.3g}"),           # MP:2991
                 ("--lr-decay-style", "WSD"), ("--lr-wsd-decay-style", "minus_sqrt"),  # TRC:169
                 ("--lr-warmup-samples", str(warmup_count(samples))),                # TRC:193
                 ("--lr-decay-samples", str(samples)),                              # TRC:178
                 ("--lr-wsd-decay-samples", str(cooldown_count(samples)))]
    else:  # no token count (simulate): the schedule is the user's to set (WSD needs a cool-down length)
        args += [("--lr", LR_UNKNOWN), ("--lr-decay-style", "cosine"),
                 ("--lr-warmup-fraction", str(WARMUP_FRACTION))]                  # TRC:187
    args += [("--weight-decay", str(WEIGHT_DECAY)), ("--adam-beta1", str(ADAM_BETAS[0])),  # MP:2611, 2617
             ("--adam-beta2", str(ADAM_BETAS[1])), ("--clip-grad", str(GRADIENT_CLIP)),    # MP:2620, 2615
             ("--attention-dropout", f"{model.dropout:g}"), ("--hidden-dropout", f"{model.dropout:g}")]  # TC:191, 188
    return args


def megatron_arguments(model: ModelSpec, layout: Layout, tokens: float | None = None,
                       learning_rate: float | None = None) -> list[Argument]:
    """Every pretrain_gpt.py argument the plan decides, as (flag, value) pairs."""
    return [*parallel_arguments(model, layout), *expert_parallel_arguments(model, layout),
            *data_parallel_arguments(layout), *model_arguments(model), *moe_arguments(model, layout),
            *compute_arguments(layout), *schedule_arguments(model, layout, tokens, learning_rate)]


# Data, tokenizer, logging and checkpoints: the run's, not the plan's (MP:3255, 3266; TRC:698, 714, 247, 119, 115, 395-430).
# The evaluation cadence is the one the plan prices (planner.cost.evaluation; frameworks/base.py EVAL_*).
_EVALUATION = FRAMEWORKS["megatron"]
DATA_ARGUMENTS: list[Argument] = [
    ("--data-path", "$DATA_PATH"), ("--tokenizer-type", "HuggingFaceTokenizer"), ("--tokenizer-model", "$TOKENIZER"),
    ("--split", "98,2,0"), ("--log-interval", "10"), ("--eval-interval", f"{_EVALUATION.eval_interval_steps:g}"),
    ("--eval-iters", f"{_EVALUATION.eval_iters:g}"), ("--save", "$CHECKPOINTS"), ("--load", "$CHECKPOINTS")]


def arguments_text(arguments: list[Argument]) -> str:
    """One `--flag value` (or `--flag`) per line, values as written (megatron_args.txt)."""
    return "\n".join(flag if value is None else f"{flag} {value}" for flag, value in arguments) + "\n"


def _shell_word(value: str) -> str:
    # "$VAR" and "${VAR:?...}" expand; everything else is quoted (layout strings hold | and *).
    return f'"{value}"' if value.startswith("$") else shlex.quote(value)


def launch_script(model: ModelSpec, layout: Layout, gpus_per_node: int, arguments: list[Argument], summary: str,
                  save_interval: int = SAVE_INTERVAL_WITHOUT_PLAN) -> str:
    """bash script running pretrain_gpt.py under torchrun, one invocation per node."""
    node_count = nodes(layout, gpus_per_node)
    per_node, per_node_lines = torchrun_ranks(layout, gpus_per_node)
    launcher = f"torchrun --nproc_per_node {per_node}"
    if node_count > 1:
        launcher += (f' --nnodes {node_count} --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR"'
                     ' --master_port "${MASTER_PORT:-6000}"')
    words = [f'{launcher} "$MEGATRON_LM"/pretrain_gpt.py',
             *(flag if value is None else f"{flag} {_shell_word(value)}" for flag, value in [*arguments, *DATA_ARGUMENTS,
                                                                                     ("--save-interval", str(save_interval))])]
    lines = ["#!/usr/bin/env bash", f"# {summary}" if summary else "# planner launch script",
             f"# Generated by `planner --emit` for Megatron-LM pretrain_gpt.py; flags checked against {MEGATRON_COMMIT}",
             "# megatron/training/arguments.py. Run it on every node (NODE_RANK 0..nodes-1).",
             "set -euo pipefail", 'cd "$(dirname "$0")"',
             ': "${MEGATRON_LM:?set MEGATRON_LM to your Megatron-LM checkout}"',
             ': "${DATA_PATH:?set DATA_PATH to the preprocessed dataset prefix}"',
             f': "${{TOKENIZER:?set TOKENIZER to a Hugging Face tokenizer with vocab size {model.vocab}}}"',
             'CHECKPOINTS="${CHECKPOINTS:-checkpoints}"']
    if node_count > 1:
        lines += [': "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"',
                  ': "${NODE_RANK:?set NODE_RANK to this node (0 for the node at MASTER_ADDR)}"', *per_node_lines]
    lines += cuda_connections_lines(layout)
    lines.append(" \\\n  ".join(words))
    return "\n".join(lines) + "\n"


def cuda_connections_lines(layout: Layout) -> list[str]:
    """Before Blackwell, tp or cp > 1 needs CUDA_DEVICE_MAX_CONNECTIONS=1 (MP:1451-1479); FSDP needs it unset (MP:1166-1167)."""
    if layout.zero >= 2:
        return ["unset CUDA_DEVICE_MAX_CONNECTIONS  # Megatron-FSDP refuses 1 (arguments.py:1166)"]
    if layout.tp > 1 or layout.cp > 1:
        return ["export CUDA_DEVICE_MAX_CONNECTIONS=1  # tp/cp kernel ordering (arguments.py:1451-1479)"]
    return []


def megatron_files(model: ModelSpec, layout: Layout, gpus_per_node: int, tokens: float | None = None,
                   learning_rate: float | None = None, summary: str = "",
                   save_interval: int = SAVE_INTERVAL_WITHOUT_PLAN, checkpoint_mode: str = "sync") -> dict[str, str]:
    """File name -> text: megatron_args.txt (the plan's arguments) and launch.sh; checkpoints saved as the plan's
    goodput was priced (`checkpoint_mode`, one of LAUNCH_CHECKPOINT_MODES)."""
    arguments = megatron_arguments(model, layout, tokens, learning_rate)
    if checkpoint_mode == "async":
        arguments += ASYNC_SAVE_ARGUMENTS
    return {"megatron_args.txt": arguments_text(arguments),
            "launch.sh": launch_script(model, layout, gpus_per_node, arguments, summary, save_interval)}
