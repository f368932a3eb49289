"""How many bytes per token x vocabulary entry a stack's language-model loss holds at its peak, measured.

    python -m planner.profile.loss_memory --out profiles/loss-memory-cpu.json [--tokens T] [--vocab V]

The cost model charges the last pipeline stage `Framework.loss_bytes_per_logit x tokens x vocab / tp` bytes for
the loss (cost/memory.py, the "logits" part). That figure is what the stack's own loss code keeps alive, and it
differs by stack: Megatron's vocab-parallel cross-entropy turns its fp32 copy of the logits into the softmax in
place and hands that back as the gradient (megatron/core/tensor_parallel/cross_entropy.py), while
`F.cross_entropy(logits.float())` (torchtitan, Hugging Face) saves a log-softmax and allocates two fp32
gradients of the same size at the backward's start. This module counts it instead of reading it off the code.

How: a TorchDispatchMode sees every tensor each aten op returns, forward and backward alike, and keeps the sum of
the live storages (a weakref finalizer subtracts one when it is freed). The peak of that sum over
`logits = hidden @ W^T; loss = loss_fn(logits, labels); del logits; loss.backward()` is what the loss adds to the
activations already live: the step's peak is at the start of backward, and nothing of the layers is freed before
the loss's and the output layer's backward are done. The hidden size is kept tiny (8) so the output layer's own
tensors (tokens x hidden, vocab x hidden) are a rounding error next to tokens x vocab. Live-tensor bytes are what
the CUDA caching allocator's `allocated` counter counts, so a CPU run measures what a GPU run would, less the
allocator's rounding; the op sequence, autograd's saved tensors and the order of frees are the same on both.

Each recipe is a stack's loss code as the stack runs it. `megatron-*` import megatron-core's own functions and are
skipped, with the reason recorded, where megatron-core is not installed (`pip install --no-deps megatron-core`
is enough: its cross-entropy needs only torch). Imports only torch and the standard library otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import weakref

HIDDEN = 8  # tiny, so the output layer's own tensors vanish next to tokens x vocab (module docstring)


def _live_bytes_mode():
    """A TorchDispatchMode that tracks the bytes of live tensor storages and their peak."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live: dict[int, int] = {}
            self.now = 0
            self.peak = 0

        def track(self, value) -> None:
            if not isinstance(value, torch.Tensor):
                return
            storage = value.untyped_storage()
            key = storage.data_ptr()
            if key in self.live or storage.nbytes() == 0:
                return  # a view of a storage already counted
            self.live[key] = storage.nbytes()
            self.now += storage.nbytes()
            self.peak = max(self.peak, self.now)
            weakref.finalize(storage, self._free, key)

        def _free(self, key: int) -> None:
            self.now -= self.live.pop(key, 0)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for value in tree_flatten(out)[0]:
                self.track(value)
            return out

    return LiveBytes


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
    with _live_bytes_mode()() as live:
        logits = hidden @ weight.t()
        loss = loss_fn(logits, labels).sum()
        del logits  # torchtitan's train step: `del pred` before loss.backward(); Megatron's logits go out of scope
        saved = live.now
        loss.backward()
        left = live.now
    entries = float(tokens * vocab)
    return {"peak_bytes_per_logit": live.peak / entries, "saved_bytes_per_logit": saved / entries,
            "left_after_backward_bytes_per_logit": left / entries}


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
    import torch.distributed as dist
    from megatron.core import parallel_state

    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
        dist.init_process_group("gloo", rank=0, world_size=1)
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel()
    return dist.group.WORLD


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


# name -> (the loss function, the stacks whose code it is, the module it needs beyond torch)
RECIPES = {
    "torch-cross-entropy-upcast": (_torch_cross_entropy_upcast,
                                   "fsdp (torchtitan@238fa995, tp 1); planner profile's TinyGPT before 2026-12-04", None),
    "planner-profile-worker": (_profile_worker, "planner profile's TinyGPT (deepspeed rows)", None),
    "megatron-vocab-parallel": (_megatron_vocab_parallel, "megatron, megascale", "megatron.core"),
    "megatron-vocab-parallel-upcast": (_megatron_vocab_parallel_upcast, "megatron-2022, deepspeed (Megatron-DeepSpeed)",
                                       "megatron.core"),
    "megatron-fused-native": (_megatron_fused_native, "megatron with --cross-entropy-loss-fusion", "megatron.core"),
}


def measure(tokens: int, vocab: int, recipes=None) -> dict:
    """Every recipe (or the named ones): its figures, or why it was skipped."""
    import importlib.util

    results = {}
    for name in recipes or RECIPES:
        loss_fn, stacks, needs = RECIPES[name]
        if needs and importlib.util.find_spec(needs.split(".")[0]) is None:
            results[name] = {"stacks": stacks, "skipped": f"{needs} not installed"}
            continue
        results[name] = {"stacks": stacks, **peak_loss_bytes(loss_fn, tokens, vocab)}
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
