"""Microbenchmarks of the kernels the cost model times, on this machine's accelerator.

    python -m planner.profile.kernel_bench --out profiles/NAME-kernels.json [--quick]

What it measures, and the cost-model figure each one checks (planner/cost/...):

- bf16 GEMMs: square sizes and the shapes of a transformer layer (tokens x hidden x 3*hidden, ...), in
  TFLOP/s; gemm.matmul_efficiency's curve and the spec's matmul_peak_fraction.
- Sustained GEMM throughput: one large GEMM back to back for `--sustain-s` seconds, throughput per window
  with the SM clock and power read beside it; hardware.SUSTAINED_CLOCK_FACTOR.
- Attention through torch's scaled_dot_product_attention, each backend (flash, cuDNN, memory-efficient)
  forced in turn, causal and not, forward and backward, at FlashAttention's own benchmark shapes (16k
  tokens, model width 2048; flash-attention benchmarks/benchmark_flash_attention.py) and its FLOP count;
  kernels.ATTENTION_TFLOPS.
- Launch floors: host time of one eager op (a 1-element add_, a 64x64 matmul) issued back to back, and
  the device time of the same kernel replayed from a CUDA graph; kernels.EAGER_OP_S, KERNEL_LAUNCH_S.
- HBM: a device-to-device copy and a read-only reduction; the spec's hbm_efficiency.
- Host <-> device copies, pinned and pageable; the spec's pcie_bandwidth_per_accelerator (offload).
- AdamW steps (torch's foreach and fused implementations) over fp32 parameters: seconds per parameter;
  cost/optimizer_step.py.

Imports only torch and the standard library (like planner/profile/worker.py), so it runs on a GPU machine
with nothing else installed. Timing: CUDA events around `reps` back-to-back calls after `warmup` calls,
the median of `trials` such timings; random data (zeros run faster: less switching power).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def _torch():
    import torch
    return torch


class Timer:
    """Seconds per call of fn(): CUDA events on a GPU, perf_counter around a synchronize on CPU."""

    def __init__(self, device: str):
        self.torch = _torch()
        self.cuda = device == "cuda"

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def per_call(self, fn, reps: int, warmup: int = 2, trials: int = 3) -> float:
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(trials):
            if self.cuda:
                start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(reps):
                    fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3 / reps)
            else:
                began = time.perf_counter()
                for _ in range(reps):
                    fn()
                times.append((time.perf_counter() - began) / reps)
        return statistics.median(times)


def _gemm_shapes(quick: bool) -> list[tuple[str, int, int, int]]:
    """(label, m, n, k): squares for the size curve, then a transformer layer's GEMMs at 8,192 tokens."""
    squares = (256, 512, 1024) if quick else (256, 512, 1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384)
    shapes = [(f"square {s}", s, s, s) for s in squares]
    hiddens = (256,) if quick else (768, 1024, 2048, 4096, 8192)
    tokens = 256 if quick else 8192
    for h in hiddens:
        shapes += [
            (f"h{h} qkv fwd", tokens, 3 * h, h), (f"h{h} out-proj fwd", tokens, h, h),
            (f"h{h} fc1 fwd", tokens, 4 * h, h), (f"h{h} fc2 fwd", tokens, h, 4 * h),
            (f"h{h} fc1 wgrad", 4 * h, h, tokens), (f"h{h} fc2 dgrad", tokens, 4 * h, h),
        ]
    if not quick:
        # Thin GEMMs: small micro-batch x sequence (tokens), where the size curve matters most.
        shapes += [(f"h4096 fc1 fwd, {t} tokens", t, 16384, 4096) for t in (128, 512, 2048)]
    return shapes


def bench_gemms(timer: Timer, device: str, dtype, quick: bool) -> list[dict]:
    torch = timer.torch
    rows = []
    for label, m, n, k in _gemm_shapes(quick):
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        flops = 2.0 * m * n * k
        reps = max(2, min(50, int(2e13 / flops))) if not quick else 2
        seconds = timer.per_call(lambda: torch.mm(a, b), reps)
        rows.append({"label": label, "m": m, "n": n, "k": k, "seconds": seconds, "tflops": flops / seconds / 1e12})
        del a, b
    return rows


@functools.lru_cache(maxsize=1)
def _nvml_handle():
    """NVML's handle of GPU 0, initialised once (None where pynvml or the driver is missing)."""
    try:
        import pynvml
        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # noqa: BLE001 - readings are optional context
        return None


def _gpu_readings() -> dict:
    """SM clock (MHz) and power (W) of GPU 0 through NVML, if pynvml is importable; else empty."""
    handle = _nvml_handle()
    if handle is None:
        return {}
    try:
        import pynvml
        return {"sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                "power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1e3,
                "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)}
    except Exception:  # noqa: BLE001 - readings are optional context, never a reason to stop
        return {}


def bench_sustained(timer: Timer, device: str, dtype, seconds: float, size: int) -> dict:
    torch = timer.torch
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    flops = 2.0 * size ** 3
    per_window = max(1, int(round(0.5 * 1e15 / flops))) if device == "cuda" else 1
    windows, began = [], time.perf_counter()
    while time.perf_counter() - began < seconds:
        t = timer.per_call(lambda: torch.mm(a, b), per_window, warmup=0, trials=1)
        windows.append({"at_s": round(time.perf_counter() - began, 2), "tflops": flops / t / 1e12, **_gpu_readings()})
    return {"size": size, "windows": windows}


def bench_attention(timer: Timer, device: str, dtype, quick: bool) -> list[dict]:
    torch = timer.torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION}
    if device != "cuda":
        backends = {"math": SDPBackend.MATH}
    tokens, width = (1024, 256) if quick else (16384, 2048)
    seqs = (128, 256) if quick else (512, 1024, 2048, 4096, 8192, 16384)
    rows = []
    for name, backend in backends.items():
        for head_dim in (64, 128):
            for causal in (False, True):
                for seq in seqs:
                    batch, heads = max(1, tokens // seq), width // head_dim
                    forward_flops = 4.0 * batch * seq * seq * heads * head_dim / (2 if causal else 1)
                    row = {"backend": name, "head_dim": head_dim, "causal": causal, "seq_len": seq, "batch": batch,
                           "heads": heads, "forward_flops": forward_flops}
                    try:
                        q, k, v = (torch.randn(batch, heads, seq, head_dim, device=device, dtype=dtype,
                                               requires_grad=True) for _ in range(3))
                        grad = torch.randn(batch, heads, seq, head_dim, device=device, dtype=dtype)
                        with sdpa_kernel(backend):
                            forward = timer.per_call(lambda: sdpa(q, k, v, is_causal=causal), 5 if not quick else 1)
                            both = timer.per_call(lambda: sdpa(q, k, v, is_causal=causal).backward(grad),
                                                  5 if not quick else 1)
                        backward = both - forward
                        row.update(forward_s=forward, backward_s=backward,
                                   forward_tflops=forward_flops / forward / 1e12,
                                   backward_tflops=2.5 * forward_flops / backward / 1e12 if backward > 0 else None)
                    except Exception as error:  # noqa: BLE001 - a backend refusing a shape is a result
                        row["error"] = f"{error.__class__.__name__}: {str(error).splitlines()[0][:200]}"
                    rows.append(row)
    return rows


def bench_launch(timer: Timer, device: str) -> dict:
    torch = timer.torch
    ops = 2000 if device != "cuda" else 20000
    x = torch.zeros(1, device=device)
    a = torch.randn(64, 64, device=device)
    result = {}
    for label, fn in (("add_ 1 element", lambda: x.add_(1.0)), ("mm 64x64", lambda: torch.mm(a, a))):
        for _ in range(100):
            fn()
        timer.sync()
        began = time.perf_counter()
        for _ in range(ops):
            fn()
        issued = time.perf_counter() - began
        timer.sync()
        drained = time.perf_counter() - began
        result[label] = {"ops": ops, "host_issue_s_per_op": issued / ops, "wall_s_per_op": drained / ops}
    if device == "cuda":
        graph_ops = 1000
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                x.add_(1.0)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(graph_ops):
                x.add_(1.0)
        per_replay = timer.per_call(graph.replay, 20)
        result["add_ 1 element, CUDA graph replay"] = {"ops": graph_ops, "device_s_per_op": per_replay / graph_ops}
        began = time.perf_counter()
        for _ in range(1000):
            torch.cuda.synchronize()
        result["synchronize (idle)"] = {"s_per_call": (time.perf_counter() - began) / 1000}
    return result


def bench_memory(timer: Timer, device: str, quick: bool) -> dict:
    torch = timer.torch
    nbytes = (64 << 20) if quick else (4 << 30)
    src = torch.empty(nbytes // 4, device=device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    copy = timer.per_call(lambda: dst.copy_(src), 5 if not quick else 1)
    read = timer.per_call(lambda: src.sum(), 5 if not quick else 1)
    result = {"bytes": nbytes, "device_copy_bytes_per_s": 2 * nbytes / copy, "device_read_bytes_per_s": nbytes / read}
    del dst
    if device == "cuda":
        host_bytes = 1 << 30
        gpu = torch.empty(host_bytes // 4, device=device, dtype=torch.float32)
        for pinned in (True, False):
            host = torch.empty(host_bytes // 4, dtype=torch.float32, pin_memory=pinned)
            to_device = timer.per_call(lambda: gpu.copy_(host, non_blocking=pinned), 3)
            to_host = timer.per_call(lambda: host.copy_(gpu, non_blocking=pinned), 3)
            kind = "pinned" if pinned else "pageable"
            result[f"host_to_device_{kind}_bytes_per_s"] = host_bytes / to_device
            result[f"device_to_host_{kind}_bytes_per_s"] = host_bytes / to_host
            del host
    return result


def bench_adam(timer: Timer, device: str, quick: bool) -> list[dict]:
    torch = timer.torch
    total = 1 << 20 if quick else 1 << 30  # fp32 parameters
    rows = []
    for impl in ("foreach", "fused"):
        if impl == "fused" and device != "cuda":
            continue
        # 64 tensors, like a model's parameter list (the foreach kernels batch across tensors).
        params = [torch.zeros(total // 64, device=device, dtype=torch.float32, requires_grad=True) for _ in range(64)]
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer = torch.optim.AdamW(params, lr=1e-4, **{impl: True})
        seconds = timer.per_call(optimizer.step, 3 if not quick else 1)
        rows.append({"implementation": impl, "parameters": total, "seconds": seconds,
                     "seconds_per_parameter": seconds / total})
        del optimizer, params
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def environment(device: str) -> dict:
    torch = _torch()
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
           "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(device_model=props.name, multiprocessors=props.multi_processor_count,
                   memory_bytes=props.total_memory, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
        try:
            query = "name,driver_version,power.limit,clocks.max.sm,clocks.max.mem,memory.total,pci.bus_id"
            env["nvidia_smi"] = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"],
                                               capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            env["nvidia_smi"] = f"unavailable: {error.__class__.__name__}"
    else:
        env["device_model"] = platform.processor() or platform.machine()
    return env


SECTIONS = ("launch", "gemm", "attention", "memory", "adam", "sustained")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write (written again after each section)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the machine")
    parser.add_argument("--sustain-s", type=float, default=15.0, help="seconds of the sustained-GEMM section")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    args = parser.parse_args(argv)
    wanted = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {unknown}; expected a comma-separated subset of {', '.join(SECTIONS)}")
    torch = _torch()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = False
    timer = Timer(device)
    report = {"environment": environment(device), "quick": args.quick, "sections": {}}

    def write():
        tmp = f"{args.out}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)
        os.replace(tmp, args.out)

    runners = {
        "launch": lambda: bench_launch(timer, device),
        "gemm": lambda: bench_gemms(timer, device, dtype, args.quick),
        "attention": lambda: bench_attention(timer, device, dtype, args.quick),
        "memory": lambda: bench_memory(timer, device, args.quick),
        "adam": lambda: bench_adam(timer, device, args.quick),
        "sustained": lambda: bench_sustained(timer, device, dtype, args.sustain_s, 256 if args.quick else 8192),
    }
    for section in wanted:
        began = time.perf_counter()
        try:
            report["sections"][section] = runners[section]()
        except Exception as error:  # noqa: BLE001 - keep the other sections' results
            report["sections"][section] = {"error": f"{error.__class__.__name__}: {error}"}
        print(f"kernel_bench: {section} done in {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
        write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
