"""How many bytes per token x vocabulary entry a stack's language-model loss holds at its peak, measured.

    python -m planner.profile.loss_memory --out profiles/loss-memory-cpu.json [--tokens T] [--vocab V]

The cost model charges the last pipeline stage `Framework.loss_bytes_per_logit x tokens x vocab / tp` bytes for
the loss (cost/memory.py, the "logits" part). That figure is what the stack's own loss code keeps alive, and it
differs by stack: Megatron's vocab-parallel cross-entropy turns its fp32 copy of the logits into the softmax in
place and hands that back as the gradient (megatron/core/tensor_parallel/cross_entropy.py), while
`F.cross_entropy(logits.float())` (torchtitan, Hugging Face) saves a log-softmax and allocates two fp32
gradients of the same size at the backward's start. This module counts it instead of reading it off the code.

How: torch's profiler with profile_memory reports every allocation and free the CPU allocator makes, with its size,
temporaries inside an op included, across processes and under DTensor alike; the running sum of those events over
`logits = hidden @ W^T; loss = loss_fn(logits, labels); del logits; loss.backward()` peaks at what the loss adds to
the activations already live: the step's peak is at the start of backward, and nothing of the layers is freed before
the loss's and the output layer's backward are done. The hidden size is kept tiny (8) so the output layer's own
tensors (tokens x hidden, vocab x hidden) are a rounding error next to tokens x vocab. Allocated bytes are what the
CUDA caching allocator's `allocated` counter counts, so a CPU run measures what a GPU run would, less the allocator's
rounding; the op sequence, autograd's saved tensors and the order of frees are the same on both.

Each recipe is a stack's loss code as the stack runs it. `megatron-*` import megatron-core's own functions and are
skipped, with the reason recorded, where megatron-core is not installed (`pip install --no-deps megatron-core`
is enough: its cross-entropy needs only torch). Imports only torch and the standard library otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import socket
import tempfile

HIDDEN = 8  # tiny, so the output layer's own tensors vanish next to tokens x vocab (module docstring)


BACKWARD_MARK = "planner.loss_memory.backward"


def allocation_trace(run) -> dict:
    """Bytes the CPU allocator holds while `run()` runs, relative to its start: the peak, the level where `run` opens
    torch.profiler.record_function(BACKWARD_MARK) (what the forward left for the backward; None without the mark) and
    the level at the end.

    Only blocks allocated inside the trace count, their frees included. The profiler also reports the free of a
    block that an earlier profiled run allocated (its CPU memory reporter remembers the sizes of the blocks it saw):
    a DDP probe's leftover 1 MiB weight freed inside the pipeline stage's trace read 13 bytes a logit for 14, every
    time the two ran in one process. Frees are matched to allocations by address (the event tree's Allocation ptr).

    Python's cyclic garbage collector is run before the trace and held off during it: a collection inside it frees
    whatever cycles earlier code left (a DDP-wrapped module is one), which read as -132 to +4 bytes a parameter in
    the DDP probe (tests/profile/test_ddp_memory.py: 26 of 60 repeated probes off, none with the collector held)."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
    finally:
        if was_enabled:
            gc.enable()
    nodes = list(_walk(prof.profiler.kineto_results.experimental_event_tree()))
    allocations = sorted((node.start_time_ns, node.extra_fields.ptr, node.extra_fields.alloc_size)
                         for node in nodes if type(node.extra_fields).__name__ == "_ExtraFields_Allocation")
    mark = min((node.start_time_ns for node in nodes if node.name == BACKWARD_MARK), default=None)
    live, level, peak, at_mark = set(), 0, 0, None
    for at, ptr, size in allocations:
        if mark is not None and at_mark is None and at >= mark:
            at_mark = level
        if size > 0:
            live.add(ptr)
        elif ptr in live:
            live.remove(ptr)
        else:
            continue  # a block from before the trace
        level += size
        peak = max(peak, level)
    if mark is not None and at_mark is None:
        at_mark = level
    return {"peak": peak, "at_backward": at_mark, "left": level}


def _walk(nodes):
    """Every node of the profiler's event tree, children after their parent."""
    for node in nodes:
        yield node
        yield from _walk(node.children)


def _per_logit(trace: dict, entries: float) -> dict:
    return {"peak_bytes_per_logit": trace["peak"] / entries,
            # None where the backward runs inside the stack's own code (a pipeline schedule), unmarked
            "saved_bytes_per_logit": None if trace["at_backward"] is None else trace["at_backward"] / entries,
            "left_after_backward_bytes_per_logit": trace["left"] / entries}


def peak_loss_bytes(loss_fn, tokens: int, vocab: int, dtype: str = "bf16") -> dict:
    """Peak live bytes, per token x vocabulary entry, of one output layer, `loss_fn(logits, labels)` and its
    backward; also the bytes still live between the forward and the backward (what the loss saves)."""
    import torch

    torch.manual_seed(0)
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    # Megatron's layout, [sequence, batch, hidden] with batch 1; the other stacks flatten the leading dimensions.
    hidden = torch.randn(tokens, 1, HIDDEN, dtype=weight_dtype, requires_grad=True)
    weight = torch.randn(vocab, HIDDEN, dtype=weight_dtype, requires_grad=True)
    labels = torch.randint(0, vocab, (tokens, 1))

    def step():
        logits = hidden @ weight.t()
        loss = loss_fn(logits, labels).sum()
        del logits  # torchtitan's train step: `del pred` before loss.backward(); Megatron's logits go out of scope
        with torch.profiler.record_function(BACKWARD_MARK):
            loss.backward()

    return _per_logit(allocation_trace(step), float(tokens * vocab))


def _torch_cross_entropy_upcast(logits, labels):
    """torchtitan's cross_entropy_loss without tensor parallelism (pytorch/torchtitan@238fa995
    torchtitan/components/loss.py:20-26; v0.3.0 :58-63): F.cross_entropy(pred.flatten(0, 1).float(),
    labels.flatten(0, 1), reduction="sum"). planner profile's TinyGPT computed its loss so until the H200 profile
    (profiles/h200-1gpu.*)."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(0, 1), reduction="sum")


def _profile_worker(logits, labels):
    """planner profile's TinyGPT (profile/worker.py in_place_cross_entropy): Megatron's in-place loss at tp 1,
    written with torch alone so that the profiled rows hold what the deepspeed stack they declare holds."""
    from planner.profile.worker import in_place_cross_entropy

    return in_place_cross_entropy(logits.flatten(0, 1), labels.flatten())


def _megatron_group():
    """A one-rank gloo group and Megatron's parallel state over it (the loss's all-reduces need a group)."""
    from megatron.core import parallel_state

    group = _one_rank_group()
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel()
    return group


def _megatron_vocab_parallel(logits, labels):
    """Megatron-Core's default loss path (cross_entropy_loss_fusion False): language_module.py
    compute_language_model_loss -> tensor_parallel.vocab_parallel_cross_entropy(logits, labels)."""
    from megatron.core.tensor_parallel.cross_entropy import vocab_parallel_cross_entropy

    _megatron_group()
    return vocab_parallel_cross_entropy(logits, labels)


def _megatron_vocab_parallel_upcast(logits, labels):
    """Megatron-LM of 2021-22 and Megatron-DeepSpeed: the caller casts (`vocab_parallel_cross_entropy(output.float(),
    labels)` unless --fp16-lm-cross-entropy), then the same in-place Function."""
    from megatron.core.tensor_parallel.cross_entropy import vocab_parallel_cross_entropy

    _megatron_group()
    return vocab_parallel_cross_entropy(logits.float(), labels)


def _megatron_fused_native(logits, labels):
    """Megatron-Core with --cross-entropy-loss-fusion and cross_entropy_fusion_impl 'native'."""
    from megatron.core.fusions.fused_cross_entropy import fused_vocab_parallel_cross_entropy

    return fused_vocab_parallel_cross_entropy(logits, labels, _megatron_group())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _one_rank_group():
    """A one-rank gloo process group (what Megatron's loss needs), made once and kept."""
    import torch.distributed as dist

    if not dist.is_initialized():
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(_free_port())
        dist.init_process_group("gloo", rank=0, world_size=1)
    return dist.group.WORLD


@contextlib.contextmanager
def one_rank_group():
    """A one-rank gloo process group for the measurement inside, torn down after it unless one was there before (a
    live gloo group can abort the process in its destructor at exit: profile/worker.py shut_down)."""
    import torch.distributed as dist

    made = not dist.is_initialized()
    group = _one_rank_group()
    try:
        yield group
    finally:
        if made:
            dist.destroy_process_group()


def pipeline_last_stage_bytes(tokens: int, vocab: int) -> dict:
    """torchtitan's last pipeline stage: torch.distributed.pipelining's PipelineStage and Schedule1F1B (which
    torchtitan's pipeline_parallel_schedule "1F1B" builds) computing torchtitan's loss on the stage's output. The stage
    keeps its output in fwd_cache until that micro-batch's backward (torch 2.13 distributed/pipelining/stage.py:913,
    966), so the 16-bit logits are live beside the loss's own bytes. One stage on a one-rank gloo group; the schedule
    runs once to infer its shapes before the measured step."""
    import torch
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B

    with one_rank_group():
        torch.manual_seed(0)
        output = torch.nn.Linear(HIDDEN, vocab, bias=False, dtype=torch.bfloat16)
        stage = PipelineStage(output, 0, 1, torch.device("cpu"))
        schedule = Schedule1F1B(stage, n_microbatches=1, loss_fn=_torch_cross_entropy_upcast)
        hidden = torch.randn(1, tokens, HIDDEN, dtype=torch.bfloat16)
        labels = torch.randint(0, vocab, (1, tokens))
        schedule.step(hidden, target=labels, losses=[])
        trace = allocation_trace(lambda: schedule.step(hidden, target=labels, losses=[], return_outputs=False))
    return _per_logit(trace, float(tokens * vocab))


LOSS_PARALLEL_RANKS = 2


def _loss_parallel_rank(rank: int, port: int, tokens: int, vocab: int, keep_output: bool, compiled: bool,
                        out_dir: str) -> None:
    """One rank of loss_parallel_bytes (a torch.multiprocessing.spawn target): writes its figures to out_dir."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, loss_parallel, parallelize_module

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=LOSS_PARALLEL_RANKS)
    try:
        mesh = init_device_mesh("cpu", (LOSS_PARALLEL_RANKS,))
        torch.manual_seed(0)
        output = torch.nn.Linear(HIDDEN, vocab, bias=False, dtype=torch.bfloat16)
        # torchtitan's output layer under tp: ColwiseParallel(input_layouts=Shard(1) or Replicate,
        # output_layouts=Shard(-1), use_local_output=not loss_parallel) (torchtitan@238fa995
        # torchtitan/models/llama3/infra/parallelize.py:174-181): the logits stay a DTensor sharded over the vocabulary.
        parallelize_module(output, mesh, ColwiseParallel(input_layouts=Replicate(), output_layouts=Shard(-1),
                                                         use_local_output=False))
        hidden = torch.randn(1, tokens, HIDDEN, dtype=torch.bfloat16, requires_grad=True)
        labels = torch.randint(0, vocab, (1, tokens))
        # compile.components ["model", "loss"] (what the launch writes with async TP) compiles the loss function
        # itself with the default backend (torchtitan@238fa995 components/loss.py:30-36).
        loss_fn = torch.compile(_torch_cross_entropy_upcast) if compiled else _torch_cross_entropy_upcast

        def step():
            with loss_parallel():  # train.py's train_context with loss parallel enabled (train.py:314-318)
                pred = output(hidden)
                loss = loss_fn(pred, labels)
                held = pred if keep_output else None  # the pipeline stage's fwd_cache, where it applies
                del pred
                with torch.profiler.record_function(BACKWARD_MARK):
                    loss.backward()
                del held

        if compiled:
            step()  # the first call compiles; measured is the second, as every step after the first runs
        figures = _per_logit(allocation_trace(step), float(tokens * vocab / LOSS_PARALLEL_RANKS))
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
            json.dump(figures, handle)
    finally:
        dist.destroy_process_group()


def loss_parallel_bytes(tokens: int, vocab: int, keep_output: bool = False, compiled: bool = False) -> dict:
    """torchtitan's loss at tp > 1: the output layer's logits a DTensor sharded over the vocabulary and
    F.cross_entropy on their upcast run under torch's loss_parallel(), whose log_softmax and nll_loss handlers work on
    each rank's shard (torch 2.13 distributed/tensor/parallel/loss.py:197-221, 451-518: the backward builds a zeroed
    gradient, exp of the saved log-softmax and their sum before scaling). Two gloo ranks in spawned processes; bytes
    per local logit (tokens x vocab / 2), the larger of the two ranks. `keep_output`: the logits stay referenced
    through the backward, as on a last pipeline stage. `compiled`: the loss function torch.compile'd, as torchtitan
    does when its compile.components name the loss."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_loss_parallel_rank, args=(_free_port(), tokens, vocab, keep_output, compiled, out_dir),
                 nprocs=LOSS_PARALLEL_RANKS, join=True)
        ranks = []
        for rank in range(LOSS_PARALLEL_RANKS):
            with open(os.path.join(out_dir, f"rank{rank}.json")) as handle:
                ranks.append(json.load(handle))
    return {key: max(rank[key] for rank in ranks) for key in ranks[0]}


def _with_loss(loss_fn):
    return lambda tokens, vocab: peak_loss_bytes(loss_fn, tokens, vocab)


# name -> (what measures it: (tokens, vocab) -> figures, the stacks whose code it is, the module it needs beyond torch)
RECIPES = {
    "torch-cross-entropy-upcast": (_with_loss(_torch_cross_entropy_upcast),
                                   "fsdp (torchtitan@238fa995, tp 1); planner profile's TinyGPT before 2026-12-04", None),
    "torch-loss-parallel": (loss_parallel_bytes, "fsdp (torchtitan@238fa995, tp > 1: loss_parallel)", None),
    "torch-loss-parallel-compiled": (lambda tokens, vocab: loss_parallel_bytes(tokens, vocab, compiled=True),
                                     "fsdp (torchtitan@238fa995, tp > 1 with async TP: the loss compiled)", None),
    "torch-pipeline-last-stage": (pipeline_last_stage_bytes,
                                  "fsdp (torchtitan@238fa995, last pipeline stage, tp 1)", None),
    "torch-loss-parallel-last-stage": (lambda tokens, vocab: loss_parallel_bytes(tokens, vocab, keep_output=True),
                                       "fsdp (torchtitan@238fa995, last pipeline stage, tp > 1)", None),
    "planner-profile-worker": (_with_loss(_profile_worker), "planner profile's TinyGPT (deepspeed rows)", None),
    "megatron-vocab-parallel": (_with_loss(_megatron_vocab_parallel), "megatron, megascale", "megatron.core"),
    "megatron-vocab-parallel-upcast": (_with_loss(_megatron_vocab_parallel_upcast),
                                       "megatron-2022, deepspeed (Megatron-DeepSpeed)", "megatron.core"),
    "megatron-fused-native": (_with_loss(_megatron_fused_native), "megatron with --cross-entropy-loss-fusion",
                              "megatron.core"),
}


def installed(module: str) -> bool:
    """Whether the dotted `module` can be imported. Its top-level name alone does not say: an empty `megatron`
    namespace (left by `pip uninstall megatron-core`, or Megatron-DeepSpeed's own `megatron` package) has no `core`."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def measure(tokens: int, vocab: int, recipes=None) -> dict:
    """Every recipe (or the named ones): its figures, or why it was skipped."""
    results = {}
    for name in recipes or RECIPES:
        run, stacks, needs = RECIPES[name]
        if needs and not installed(needs):
            results[name] = {"stacks": stacks, "skipped": f"{needs} not installed"}
            continue
        results[name] = {"stacks": stacks, **run(tokens, vocab)}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m planner.profile.loss_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="where the JSON report goes")
    parser.add_argument("--tokens", type=int, default=2048, help="tokens of one micro-batch (default 2048)")
    parser.add_argument("--vocab", type=int, default=8192, help="vocabulary size (default 8192)")
    parser.add_argument("--recipes", default=None,
                        help=f"comma-separated subset of {','.join(RECIPES)} (default: all)")
    args = parser.parse_args(argv)
    recipes = args.recipes.split(",") if args.recipes else None
    unknown = sorted(set(recipes or ()) - set(RECIPES))
    if unknown or args.tokens < 1 or args.vocab < 2:
        print(f"loss_memory: error: --recipes takes names from {','.join(RECIPES)} (got {','.join(unknown)}); "
              "--tokens >= 1, --vocab >= 2", file=sys.stderr)
        return 2
    import torch

    report = {"tokens": args.tokens, "vocab": args.vocab, "hidden": HIDDEN, "dtype": "bf16",
              "environment": {"torch": torch.__version__, "python": platform.python_version(),
                              "megatron_core": _version("megatron-core")},
              "recipes": measure(args.tokens, args.vocab, recipes)}
    tmp = f"{args.out}.tmp"
    with open(tmp, "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, args.out)
    return 0


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
