"""The names a cluster spec goes by, which decide the rows calibrate fits (planner/calibrate/samples.py): the
file name --cluster gave, the name: key, and the spec a calibrated one was made from."""

from __future__ import annotations

import shutil

from planner.calibrate.samples import (given_name, named_as_given, rows_naming_the_name_key, rows_of_the_origin,
                                       uncalibrated_origin)
from planner.profile.runs_csv import MeasuredRun
from planner.specs.clusters import load_cluster


def _row(cluster: str, row_id: str = "r") -> MeasuredRun:
    return MeasuredRun(id=row_id, source="t", cluster=cluster, gpus=8, layers=12, hidden=768, heads=12, kv_heads=12,
                       ffn=3072, mlp="gelu", seq_len=1024, vocab=50304, tp=1, pp=1, dp=8, cp=1, vpp=1, zero=0,
                       micro_batch=4, global_batch=32, recompute="none", seq_parallel=0, dtype="bf16",
                       step_time_s=1.0)


def test_a_spec_file_is_named_by_its_file_and_a_plain_name_by_itself(tmp_path):
    copy = tmp_path / "mine.yaml"
    shutil.copy(load_cluster("dgx-a100-80gb").source_file, copy)
    assert given_name(str(copy)) == "mine"
    assert given_name("dgx-a100-80gb") == "dgx-a100-80gb"
    assert given_name(str(tmp_path / "absent.yaml")) == str(tmp_path / "absent.yaml")  # not a file: a name


def test_a_copied_spec_is_its_file_name_and_rows_naming_its_key_are_counted(tmp_path):
    copy = tmp_path / "mine.yaml"
    shutil.copy(load_cluster("dgx-a100-80gb").source_file, copy)
    spec = load_cluster(str(copy))
    assert spec.name == "dgx-a100-80gb"  # the name: key came along with the copy
    cluster = named_as_given(str(copy), spec)
    assert cluster.name == "mine"
    runs = [_row("dgx-a100-80gb", "key"), _row("mine", "file"), _row("other", "x")]
    assert rows_naming_the_name_key(runs, cluster, spec) == 1
    assert rows_naming_the_name_key(runs, spec, spec) == 0  # the same name: nothing to say


def test_a_name_with_a_folder_in_it_keeps_the_name_key():
    spec = load_cluster("dgx-a100-80gb")
    assert named_as_given("sub/x", spec) is spec


def test_a_calibrated_file_under_another_name_fits_the_rows_of_the_spec_it_came_from(tmp_path):
    origin = load_cluster("dgx-a100-80gb")
    spec = origin.model_copy(update={"name": "dgx-a100-80gb.calibrated"})
    cluster = spec.model_copy(update={"name": "tuned"})
    runs = [_row("dgx-a100-80gb", "origin"), _row("tuned", "given"), _row("dgx-h100", "other")]
    renamed = rows_of_the_origin(runs, cluster, spec)
    assert [r.cluster for r in renamed] == ["tuned", "tuned", "dgx-h100"]
    assert rows_of_the_origin(runs, spec, spec) == runs  # not renamed: nothing to do
    plain = origin.model_copy(update={"name": "plain"})
    assert rows_of_the_origin(runs, cluster, plain) == runs  # a name: key that records no origin gives no rows


def test_the_uncalibrated_origin_is_found_by_the_base_of_either_name():
    origin = load_cluster("dgx-a100-80gb")
    spec = origin.model_copy(update={"name": "dgx-a100-80gb.calibrated"})
    found = uncalibrated_origin(spec.model_copy(update={"name": "tuned"}), spec)
    assert found is not None and found.name == "dgx-a100-80gb"
    assert uncalibrated_origin(origin, origin) is None  # not calibrated: no origin to find
