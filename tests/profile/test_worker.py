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
