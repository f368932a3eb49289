"""CLI surface of the ZeRO-3 hierarchy flags: bad groups are one line naming the flag and the arithmetic."""

from __future__ import annotations

import json

import pytest

BASE = ["simulate", "--model", "llama2-13b", "--cluster", "dgx-h100", "--zero", "3", "--framework", "deepspeed"]
FSDP = [*BASE[:-1], "fsdp"]


def _one_line(result, *fragments):
    code, out, err = result
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_hpz_group_not_dividing_the_node(cli):
    # 48 GPUs: dp 48 is divisible by 3, the 8-GPU node is not.
    _one_line(cli([*BASE, "--gpus", "48", "--zero-hpz", "3"]), "--zero-hpz 3 does not divide the node",
              "gpus_per_node(8) % 3 = 2")


def test_shard_group_not_dividing_dp(cli):
    _one_line(cli([*FSDP, "--gpus", "64", "--shard-group", "5"]), "--shard-group 5 does not divide dp",
              "dp(64) % 5 = 4")


def test_hierarchy_needs_zero3(cli):
    argv = ["simulate", "--model", "llama2-13b", "--cluster", "dgx-h100", "--zero", "2", "--framework", "deepspeed",
            "--gpus", "64", "--zero-hpz", "8"]
    _one_line(cli(argv), "needs zero=3")


def test_stack_without_zeropp_is_refused(cli):
    _one_line(cli([*FSDP, "--gpus", "64", "--zero-quantized-weights", "1"]), "fsdp has no ZeRO++")


def test_deepspeed_has_no_mics_shard_groups(cli):
    """DeepSpeed 0.19.8 removed MiCS and refuses mics_shard_size at start-up (runtime/config.py:119-140)."""
    _one_line(cli([*BASE, "--gpus", "64", "--shard-group", "8"]), "--shard-group", "deepspeed has no hierarchical")


@pytest.mark.parametrize("base, extra, expected", [
    (BASE, ["--zero-hpz", "8"], {"zero_hpz": 8}), (FSDP, ["--shard-group", "8"], {"shard_group": 8}),
    (BASE, ["--zero-quantized-weights", "1", "--zero-quantized-gradients", "1"],
     {"zero_quantized_weights": True, "zero_quantized_gradients": True})])
def test_flags_reach_the_layout(cli, base, extra, expected):
    code, out, err = cli([*base, "--gpus", "64", "--json", *extra])
    assert code == 0, err
    layout = json.loads(out)["layout"]
    assert {key: layout[key] for key in expected} == expected


def test_deepspeed_config_carries_zeropp_keys():
    from planner.emit.deepspeed import zero_block
    from planner.specs.layout import Layout

    block = zero_block(Layout(dp=64, zero=3, framework="deepspeed", zero_hpz=8, zero_quantized_weights=True,
                              zero_quantized_gradients=True, global_batch=64))
    assert (block["zero_hpz_partition_size"], block["zero_quantized_weights"], block["zero_quantized_gradients"]) == (8, True, True)
    # MiCS: today's DeepSpeed (0.19.8 runtime/config.py:119-140) refuses mics_shard_size: the stack has no shard
    # groups (planner.frameworks.unsupported_features), so no launch is written with a key that stops
    # deepspeed.initialize.
    from planner.frameworks import unsupported_features
    mics = Layout(dp=64, zero=3, framework="deepspeed", shard_group=8, global_batch=64)
    assert "mics_shard_size" not in zero_block(mics)
    assert any("MiCS" in problem for problem in unsupported_features("deepspeed", mics))
    assert "zero_hpz_partition_size" not in zero_block(Layout(dp=64, zero=3, framework="deepspeed", global_batch=64))


def test_runs_csv_columns_reach_validate(cli, tmp_path):
    """zero_hpz / zero_quantized_* columns of a runs CSV set the layout; a bad group skips the row with the
    arithmetic."""
    header = ("id,cluster,gpus,layers,hidden,heads,seq_len,vocab,zero,dtype,micro_batch,global_batch,recompute,"
              "framework,zero_hpz,zero_quantized_weights,zero_quantized_gradients,step_time_s")
    shape = "dgx2-v100,384,40,6144,32,512,50257,3,fp16,2,768,full,deepspeed"
    runs = tmp_path / "runs.csv"
    runs.write_text(f"{header}\nzpp,{shape},16,1,1,5.0\nflat,{shape},,,,5.0\nbad,{shape},5,,,5.0\n")
    code, out, err = cli(["validate", str(runs)])
    assert code == 1, err  # the bad row gave no result
    predicted = {line.split()[0]: float(line.split()[4]) for line in out.splitlines() if line.startswith(("zpp ", "flat "))}
    assert predicted["zpp"] < predicted["flat"]
    assert f"skipped: {runs}:4 (id bad):" in out and "--zero-hpz 5 does not divide dp: dp(384) % 5 = 4" in out


def test_torchtitan_mesh_carries_hsdp():
    from planner.emit.torchtitan import parallelism_table
    from planner.specs.layout import Layout
    from planner.specs.model import preset

    table = parallelism_table(preset("llama2-13b"), Layout(dp=64, zero=3, framework="fsdp", shard_group=8,
                                                           global_batch=64), async_tp=False)
    assert (table["data_parallel_replicate_degree"], table["data_parallel_shard_degree"]) == (8, 8)
