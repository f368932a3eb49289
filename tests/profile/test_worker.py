"""The profiling worker's pure parts: parameter count, DeepSpeed config, per-call comms latency."""

import importlib.util

import pytest

from planner.profile import worker


def test_parameter_breakdown_by_hand():
    # L=2, h=64, ffn=256, S=32, V=512: embeddings 2*512*64 + 32*64, per layer 4h^2 + 2h*ffn + 9h + ffn.
    parts = worker.parameter_breakdown(layers=2, hidden=64, ffn=256, seq_len=32, vocab=512)
    per_layer = 4 * 64 * 64 + 2 * 64 * 256 + 9 * 64 + 256
    assert parts["blocks"] == 2 * per_layer
    assert parts["total"] == 2 * 512 * 64 + 32 * 64 + 2 * per_layer + 2 * 64 == 167680


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed (the 'profile' extra)")
def test_tiny_gpt_has_exactly_the_counted_parameters():
    shape = {"layers": 3, "hidden": 96, "heads": 4, "ffn": 200, "seq_len": 16, "vocab": 300}
    model, breakdown = worker.build_model(shape)
    assert sum(p.numel() for p in model.parameters()) == breakdown["total"]
    assert sum(p.numel() for p in model.lm_head.parameters()) == breakdown["lm_head"]


def test_deepspeed_config_per_stage_and_offload():
    base = {"zero": 3, "micro_batch": 2, "dtype": "fp32", "offload": "none"}
    config = worker.deepspeed_config(base)
    zero = config["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_param_persistence_threshold"] == 0
    assert config["optimizer"]["params"]["torch_adam"] is True and "bf16" not in config
    assert config["comms_logger"]["enabled"] and config["wall_clock_breakdown"]
    offload = worker.deepspeed_config({**base, "offload": "optimizer+params", "dtype": "bf16", "comms_log": False})
    assert offload["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert offload["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert "torch_adam" not in offload["optimizer"]["params"]  # DeepSpeedCPUAdam, as ZeRO-Offload uses
    assert offload["bf16"] == {"enabled": True} and not offload["comms_logger"]["enabled"]


class FakeCommsLogger:
    def __init__(self):
        self.seen = []

    def append(self, raw_name, record_name, latency, msg_size):
        self.seen.append((raw_name, latency, msg_size))


def test_recorder_turns_cumulative_latency_into_per_call():
    logger = FakeCommsLogger()
    recorder = worker.CollectiveRecorder(logger)
    logger.append("all_reduce", "all_reduce", 5.0, 100)  # before measuring: tracked, not recorded
    recorder.recording = True
    logger.append("all_reduce", "all_reduce", 7.0, 100)
    logger.append("all_gather_into_tensor", "all_gather_into_tensor", 1.5, 10)
    logger.append("all_reduce", "all_reduce", 10.0, 4)
    assert recorder.calls == [("all_reduce", 100, 2.0), ("all_gather_into_tensor", 10, 1.5), ("all_reduce", 4, 3.0)]
    assert len(logger.seen) == 4  # DeepSpeed's own bookkeeping still happens


def test_collective_summary_counts_gathered_volume():
    calls = [("all_gather_into_tensor", 10, 1.0)] * 4 + [("all_reduce", 100, 2.0)] * 2
    summary = worker.collective_summary(calls, steps=2, world=2)
    assert summary["all_gather_into_tensor"]["volume_bytes_per_step"] == 40  # 4 calls * 10 B * 2 ranks / 2 steps
    assert summary["all_gather_into_tensor"]["msg_bytes_per_step"] == 20
    assert summary["all_reduce"]["volume_bytes_per_step"] == 100
    assert summary["all_reduce"]["latency_ms_per_call"]["total_per_step"] == 2.0


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed (the 'profile' extra)")
def test_the_memory_probe_is_not_timed_as_training_when_there_is_no_warm_up(monkeypatch):
    """With --warmup 0 the memory probe (a gc.collect and a scan of every live object, after backward) ran inside
    the first measured step and was counted in its step time."""
    import time

    import deepspeed.comm
    import torch

    probe_s = 0.2

    def slow_probe(engine, offload):
        time.sleep(probe_s)
        return {"device_bytes": 0, "offloaded_bytes": 0}

    class Engine:
        device = "cpu"

        def __call__(self, inputs, targets):
            return torch.zeros(())

        def backward(self, loss):
            pass

        def step(self):
            pass

        def get_wall_clock_timers(self):
            return {}

    class Accelerator:
        def device_name(self):
            return "cpu"

        def synchronize(self):
            pass

    monkeypatch.setattr(worker, "counted_tensor_bytes", slow_probe)
    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda: 0)
    monkeypatch.setattr(deepspeed.comm, "barrier", lambda: None)
    spec = {"vocab": 16, "micro_batch": 1, "seq_len": 4, "warmup": 0, "steps": 1, "grad_accum": 2}
    measured = worker.run_steps(Engine(), Accelerator(), spec, worker.CollectiveRecorder(FakeCommsLogger()))
    assert measured["memory"]["after_backward"] is not None  # the probe ran, in the measured step
    assert measured["step_times_s"][0] < probe_s / 2
