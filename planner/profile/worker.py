"""One rank of a profiling run: a tiny GPT trained for a few DeepSpeed steps, measured.

The DeepSpeed launcher starts this file once per rank (`planner profile` builds the command);
it imports only torch, deepspeed and the standard library, so a remote node needs nothing but
the same file and those two packages. Rank 0 writes one result JSON (`--out`); a rank that
fails writes `<out>.rank<N>.error.json` with its traceback before exiting non-zero.

What is measured, per optimizer step after warm-up: wall time (max over ranks), DeepSpeed's
wall_clock_breakdown timers (fwd / bwd / bwd_inner / bwd_allreduce / step), and every collective
the comms logger sees with its message size and its own per-call latency. The comms logger's
latency column is cumulative per op name in DeepSpeed 0.19.x (its timer is never reset), so the
per-call time is the difference between successive cumulative values; we record that ourselves.

Memory: on CUDA the allocator's peak. On CPU the process RSS hides ZeRO's savings (freed
partitions stay mapped), so we count the bytes of the distinct tensor storages alive after
backward and after the optimizer step, split into module (parameters and gradients), optimizer
state (incl. fp32 master partitions) and other (ZeRO flat buffers). Activations are not counted.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
import traceback


def parameter_breakdown(layers: int, hidden: int, ffn: int, seq_len: int, vocab: int) -> dict[str, int]:
    """Exact parameter count of `TinyGPT`, as named parts (nanoGPT layout, untied LM head)."""
    per_layer = {
        "ln1": 2 * hidden,
        "attn_qkv": 3 * hidden * hidden + 3 * hidden,
        "attn_proj": hidden * hidden + hidden,
        "ln2": 2 * hidden,
        "mlp_fc1": hidden * ffn + ffn,
        "mlp_fc2": ffn * hidden + hidden,
    }
    parts = {
        "token_embedding": vocab * hidden,
        "position_embedding": seq_len * hidden,
        "blocks": layers * sum(per_layer.values()),
        "final_ln": 2 * hidden,
        "lm_head": hidden * vocab,
    }
    parts["total"] = sum(parts.values())
    return parts


def in_place_cross_entropy(logits, targets):
    """Per-token cross-entropy as the stack the profile rows declare (deepspeed: Megatron-DeepSpeed's model) computes
    it: Megatron's vocab-parallel loss at tp 1 (NVIDIA/Megatron-LM@d98e8a6 megatron/core/tensor_parallel/
    cross_entropy.py:25, 41, 62, 77, 88, 181, 210). The 16-bit logits are copied to fp32 once, that copy becomes the
    softmax in place and is saved, and the backward turns it into the gradient in place: 2 + 4 bytes per logit at
    the peak (Framework.loss_bytes_per_logit of deepspeed), where F.cross_entropy on upcast logits holds 12
    (planner/profile/loss_memory.py). `logits` is (tokens, vocab), `targets` (tokens,)."""
    return _in_place_cross_entropy_function().apply(logits, targets)


@functools.lru_cache(maxsize=1)
def _in_place_cross_entropy_function():
    """The autograd Function behind in_place_cross_entropy, built once (torch is imported lazily: the launcher's
    argument parsing needs no torch) rather than on every forward."""
    import torch

    class _InPlaceCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits16, target):
            probs = logits16.float()
            probs -= probs.max(dim=-1, keepdim=True)[0]
            rows = torch.arange(probs.shape[0], device=probs.device)
            picked = probs[rows, target].clone()
            torch.exp(probs, out=probs)
            total = probs.sum(dim=-1)
            probs /= total.unsqueeze(-1)
            ctx.save_for_backward(probs, target)
            return torch.log(total) - picked

        @staticmethod
        def backward(ctx, grad_loss):
            probs, target = ctx.saved_tensors
            rows = torch.arange(probs.shape[0], device=probs.device)
            probs[rows, target] -= 1.0
            probs *= grad_loss.unsqueeze(-1)
            return probs, None

    return _InPlaceCrossEntropy


def build_model(shape: dict):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self, hidden: int, heads: int, ffn: int):
            super().__init__()
            self.heads = heads
            self.ln1 = nn.LayerNorm(hidden)
            self.attn_qkv = nn.Linear(hidden, 3 * hidden)
            self.attn_proj = nn.Linear(hidden, hidden)
            self.ln2 = nn.LayerNorm(hidden)
            self.mlp_fc1 = nn.Linear(hidden, ffn)
            self.mlp_fc2 = nn.Linear(ffn, hidden)

        def forward(self, x):
            batch, tokens, width = x.shape
            q, k, v = self.attn_qkv(self.ln1(x)).split(width, dim=2)
            q, k, v = (t.view(batch, tokens, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.attn_proj(y.transpose(1, 2).reshape(batch, tokens, width))
            return x + self.mlp_fc2(F.gelu(self.mlp_fc1(self.ln2(x))))

    class TinyGPT(nn.Module):
        def __init__(self, layers, hidden, heads, ffn, seq_len, vocab):
            super().__init__()
            self.token_embedding = nn.Embedding(vocab, hidden)
            self.position_embedding = nn.Embedding(seq_len, hidden)
            self.blocks = nn.ModuleList(Block(hidden, heads, ffn) for _ in range(layers))
            self.final_ln = nn.LayerNorm(hidden)
            self.lm_head = nn.Linear(hidden, vocab, bias=False)

        def forward(self, tokens, targets):
            positions = torch.arange(tokens.shape[1], device=tokens.device)
            x = self.token_embedding(tokens) + self.position_embedding(positions)
            for block in self.blocks:
                x = block(x)
            logits = self.lm_head(self.final_ln(x))
            return in_place_cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1)).mean()

    keys = ("layers", "hidden", "heads", "ffn", "seq_len", "vocab")
    model = TinyGPT(*(shape[k] for k in keys))
    expected = parameter_breakdown(shape["layers"], shape["hidden"], shape["ffn"], shape["seq_len"], shape["vocab"])
    counted = sum(p.numel() for p in model.parameters())
    if counted != expected["total"]:
        raise RuntimeError(f"TinyGPT has {counted} parameters, breakdown says {expected['total']}")
    return model, expected


def deepspeed_config(spec: dict) -> dict:
    """The DeepSpeed config for one profiled configuration (recorded verbatim in the details)."""
    # DeepSpeed's default buckets (5e8 elements) make ZeRO-3 allocate a 2 GB fp32 gradient bucket
    # per rank; a moderate, recorded size keeps the counted memory about the model.
    bucket = int(spec.get("bucket_elements", 5_000_000))
    zero: dict = {"stage": spec["zero"], "reduce_bucket_size": bucket, "allgather_bucket_size": bucket}
    offload = spec.get("offload", "none")
    if offload in ("optimizer", "optimizer+params"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if offload == "optimizer+params":
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    if spec["zero"] == 3:
        # Gather every parameter on every use (no persistence, no reuse across forward/backward),
        # so the all-gather volume is the textbook two passes over the parameters per step.
        zero.update(stage3_param_persistence_threshold=0, stage3_max_reuse_distance=0, stage3_prefetch_bucket_size=0)
    # DeepSpeedCPUAdam for offload (what ZeRO-Offload is); torch's AdamW otherwise (no fused-op build).
    optimizer = {"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.0}}
    if offload == "none":
        optimizer["params"]["torch_adam"] = True
    config = {
        "train_micro_batch_size_per_gpu": spec["micro_batch"],
        "gradient_accumulation_steps": spec.get("grad_accum", 1),
        "optimizer": optimizer,
        "zero_optimization": zero,
        "wall_clock_breakdown": True,
        # The comms logger synchronises the device after every collective: on GPUs that removes
        # compute/communication overlap, so timing-only runs can switch it off (--no-comms-log).
        "comms_logger": {"enabled": bool(spec.get("comms_log", True)), "prof_all": True, "verbose": False, "debug": False},
        "steps_per_print": spec.get("steps_per_print", 10_000),
        "zero_allow_untested_optimizer": True,
    }
    # Anything else a caller wants in the DeepSpeed config (e.g. the flops profiler), merged on top.
    config.update(spec.get("deepspeed_overrides", {}))
    if spec["dtype"] == "bf16":
        config["bf16"] = {"enabled": True}
    elif spec["dtype"] == "fp16":
        config["fp16"] = {"enabled": True, "initial_scale_power": 12}
    return config


class CollectiveRecorder:
    """Wraps the comms logger's `append` to keep every call with its own (not cumulative) latency."""

    def __init__(self, comms_logger):
        self.calls: list[tuple[str, int, float]] = []  # (op, msg bytes, ms), measured steps only
        self.recording = False
        self._cumulative_ms: dict[str, float] = {}
        original = comms_logger.append

        def append(raw_name, record_name, latency, msg_size):
            per_call_ms = latency - self._cumulative_ms.get(record_name, 0.0)
            self._cumulative_ms[record_name] = latency
            if self.recording:
                self.calls.append((raw_name, int(msg_size), per_call_ms))
            return original(raw_name, record_name, latency, msg_size)

        comms_logger.append = append


def collective_summary(calls: list[tuple[str, int, float]], steps: int, world: int) -> dict:
    """Per op: calls and bytes per step, per-call latency stats, and the volume on the wire's terms.

    `msg_bytes` is the comms logger's message size: the input tensor (for all-gather, the local
    shard; for reduce-scatter, the full input). `volume_bytes` is the logical collective size the
    cost model uses: the gathered output for all-gather, the input for all-reduce/reduce-scatter.
    """
    summary: dict[str, dict] = {}
    for op, size, ms in calls:
        entry = summary.setdefault(op, {"calls": 0, "msg_bytes": 0, "latencies_ms": [], "sizes": {}})
        entry["calls"] += 1
        entry["msg_bytes"] += size
        entry["latencies_ms"].append(ms)
        entry["sizes"][str(size)] = entry["sizes"].get(str(size), 0) + 1
    for op, entry in summary.items():
        gathered = op.startswith("all_gather") and op != "all_gather_object"
        latencies = entry.pop("latencies_ms")
        entry["calls_per_step"] = entry["calls"] / steps
        entry["msg_bytes_per_step"] = entry["msg_bytes"] / steps
        entry["volume_bytes_per_step"] = entry["msg_bytes"] * (world if gathered else 1) / steps
        entry["latency_ms_per_call"] = {
            "median": statistics.median(latencies), "min": min(latencies), "max": max(latencies),
            "total_per_step": sum(latencies) / steps,
        }
    return summary


def _storage_key(tensor):
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def counted_tensor_bytes(engine, offload: str) -> dict:
    """Bytes of distinct live tensor storages on this rank, split by what holds them."""
    import torch

    # gc.get_objects() also lists garbage in reference cycles not yet collected (DeepSpeed leaves
    # parameter-sized flat buffers in such cycles); count only what is still reachable.
    gc.collect()
    everything: dict[int, int] = {}
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and not obj.is_meta:
                ptr, size = _storage_key(obj)
                if ptr:
                    everything[ptr] = max(size, everything.get(ptr, 0))
        except Exception:  # noqa: BLE001 - exotic tensor subclasses without storage
            continue
    module: dict[int, int] = {}
    for param in engine.module.parameters():
        for tensor in (param.data, param.grad, getattr(param, "ds_tensor", None)):
            if tensor is not None and tensor.numel():
                ptr, size = _storage_key(tensor)
                module[ptr] = size
    basic = getattr(engine.optimizer, "optimizer", engine.optimizer)
    optimizer: dict[int, int] = {}
    # ZeRO-3 empties param_groups between steps; the state dict keeps the master partitions as keys.
    masters = {id(p): p for group in basic.param_groups for p in group["params"]}
    masters.update({id(p): p for p in basic.state})
    for param in masters.values():
        for tensor in [param, param.grad, *basic.state.get(param, {}).values()]:
            if isinstance(tensor, torch.Tensor) and tensor.numel() and tensor.dim() > 0:
                ptr, size = _storage_key(tensor)
                optimizer[ptr] = size
    optimizer_only = {k: v for k, v in optimizer.items() if k not in module}
    offloaded = dict(optimizer_only) if offload != "none" else {}
    if offload == "optimizer+params":
        for param in engine.module.parameters():
            if getattr(param, "ds_tensor", None) is not None and param.ds_tensor.numel():
                ptr, size = _storage_key(param.ds_tensor)
                offloaded[ptr] = size
    total = sum(everything.values())
    return {
        "total_bytes": total,
        "module_bytes": sum(module.values()),
        "optimizer_bytes": sum(optimizer_only.values()),
        "other_bytes": total - sum(module.values()) - sum(optimizer_only.values()),
        "offloaded_bytes": sum(offloaded.values()),
        "device_bytes": total - sum(offloaded.values()),
    }


def environment(accelerator, world: int) -> dict:
    import deepspeed
    import torch

    device = accelerator.device_name()
    if device == "cuda":
        device_model = torch.cuda.get_device_name(accelerator.current_device())
    else:
        device_model = _cpu_model()
    return {
        "deepspeed": deepspeed.__version__, "torch": torch.__version__, "python": platform.python_version(),
        "accelerator": device, "device_model": device_model, "backend": accelerator.communication_backend_name(),
        "world_size": world, "hostname": socket.gethostname(), "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def start_engine(spec: dict):
    """Initialise distributed DeepSpeed on this rank's accelerator and wrap a fresh TinyGPT."""
    import deepspeed
    import torch
    from deepspeed.accelerator import get_accelerator

    if spec.get("log_level"):
        from deepspeed.utils.logging import set_log_level_from_string

        set_log_level_from_string(spec["log_level"])
    accelerator = get_accelerator()
    if accelerator.device_name() == "cpu":
        # DeepSpeed would otherwise JIT-compile its shared-memory allreduce op at init.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    else:
        accelerator.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    deepspeed.init_distributed(dist_backend=accelerator.communication_backend_name())
    torch.manual_seed(1234)
    model, breakdown = build_model(spec)
    config = deepspeed_config(spec)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    return engine, accelerator, config, breakdown


def run_steps(engine, accelerator, spec: dict, recorder: CollectiveRecorder) -> dict:
    """Warm-up then measured steps on one fixed random batch; memory is probed in the last warm-up step."""
    import deepspeed.comm as dist
    import torch

    generator = torch.Generator().manual_seed(1000 + dist.get_rank())
    tokens = torch.randint(0, spec["vocab"], (spec["micro_batch"], spec["seq_len"] + 1), generator=generator)
    inputs, targets = tokens[:, :-1].contiguous().to(engine.device), tokens[:, 1:].contiguous().to(engine.device)
    on_cpu, offload = accelerator.device_name() == "cpu", spec.get("offload", "none")
    memory = {"after_backward": None, "after_step": None}
    step_times, breakdowns = [], []
    for step in range(spec["warmup"] + spec["steps"]):
        measuring, probe = step >= spec["warmup"], step == max(0, spec["warmup"] - 1)
        if step == spec["warmup"]:
            dist.barrier()
            if not on_cpu:
                accelerator.reset_peak_memory_stats()
            recorder.recording = True
        accelerator.synchronize()
        started, probing_s = time.perf_counter(), 0.0
        for micro in range(spec.get("grad_accum", 1)):
            loss = engine(inputs, targets)
            engine.backward(loss)
            if probe and micro == spec.get("grad_accum", 1) - 1:
                probe_started = time.perf_counter()
                memory["after_backward"] = counted_tensor_bytes(engine, offload)
                probing_s = time.perf_counter() - probe_started
            engine.step()
        accelerator.synchronize()
        # With --warmup 0 the probe falls in a measured step: its gc scan is not training time.
        elapsed = time.perf_counter() - started - probing_s
        if probe:
            memory["after_step"] = counted_tensor_bytes(engine, offload)
        if measuring:
            step_times.append(elapsed)
            breakdowns.append({k: v / 1000.0 for k, v in engine.get_wall_clock_timers().items()})
    recorder.recording = False
    final_loss = loss.item()
    if not math.isfinite(final_loss):
        raise RuntimeError(f"loss is not finite after {len(step_times)} measured steps: {final_loss}")
    return {
        "step_times_s": step_times, "breakdowns": breakdowns, "memory": memory, "loss": final_loss,
        "peak_allocator_bytes": None if on_cpu else accelerator.max_memory_allocated(),
    }


def train_and_measure(spec: dict) -> dict | None:
    """Run one configuration on this rank; rank 0 returns everything all ranks measured."""
    import deepspeed.comm as dist
    from deepspeed.comm.comm import comms_logger

    recorder = CollectiveRecorder(comms_logger)
    engine, accelerator, config, breakdown = start_engine(spec)
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = {"rank": rank, **run_steps(engine, accelerator, spec, recorder),
            "collectives": collective_summary(recorder.calls, max(1, spec["steps"]), world)}
    # The comms logger calls exit(0) on ops it has no bandwidth formula for (all_gather_object).
    comms_logger.enabled = False
    everyone = [None] * world
    dist.all_gather_object(everyone, mine)
    if rank != 0:
        return None
    return {
        "spec": spec, "deepspeed_config": config, "parameters": breakdown,
        "environment": environment(accelerator, world), "ranks": everyone,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One rank of `planner profile` (run by the DeepSpeed launcher).")
    parser.add_argument("--spec", required=True, help="JSON file: the configuration to run")
    parser.add_argument("--out", required=True, help="result JSON written by rank 0")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    with open(args.spec, encoding="utf-8") as stream:
        spec = json.load(stream)
    try:
        result = train_and_measure(spec)
        if result is not None:
            temp = f"{args.out}.partial"
            with open(temp, "w", encoding="utf-8") as stream:
                json.dump(result, stream)
            os.replace(temp, args.out)
        shut_down()
    except BaseException as error:
        rank = os.environ.get("RANK", "0")
        with open(f"{args.out}.rank{rank}.error.json", "w", encoding="utf-8") as stream:
            json.dump({"rank": int(rank), "error": f"{type(error).__name__}: {error}",
                       "traceback": traceback.format_exc()}, stream)
        raise
    return 0


def shut_down() -> None:
    """Wait until rank 0 has written its result, then tear the process group down explicitly.

    Exiting with a live gloo process group can abort a rank in its destructor ("terminate called
    without an active exception"), and the launcher then kills the others, rank 0 included.
    """
    import deepspeed.comm as dist
    import torch.distributed

    dist.barrier()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
