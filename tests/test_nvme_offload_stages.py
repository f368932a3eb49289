"""NVMe offload only where a stack swaps to NVMe: DeepSpeed's ZeRO-1/2 optimizer keeps any offloaded state in host
memory whatever offload_optimizer.device says (runtime/zero/stage_1_and_2.py:220-222, cpu_offload = True), and
only ZeRO-3 swaps to NVMe (stage3.py:826); FSDP's CPUOffload has no NVMe target. Such layouts were priced at
NVMe bandwidth, slower than what would run; now refused naming the flag."""

import pytest

from planner.errors import PlannerInputError
from planner.specs.layout import make_layout
from planner.specs.layout_checks import check_layout
from planner.specs.model import PRESETS


@pytest.mark.parametrize("framework, zero, offload", [
    ("deepspeed", 1, "optimizer"), ("deepspeed", 2, "optimizer"), ("other", 2, "optimizer"),
    ("fsdp", 3, "optimizer+params"),
])
def test_nvme_where_the_stack_cannot_swap_is_refused(framework, zero, offload):
    layout = make_layout(dp=8, global_batch=8, zero=zero, offload=offload, offload_device="nvme", framework=framework)
    with pytest.raises(PlannerInputError, match="--offload-device nvme"):
        check_layout(PRESETS["llama3-8b"], layout)
    check_layout(PRESETS["llama3-8b"], layout.model_copy(update={"offload_device": "cpu"}))


@pytest.mark.parametrize("framework, offload", [("deepspeed", "optimizer"), ("deepspeed", "optimizer+params"),
                                                ("other", "optimizer+params")])
def test_zero3_swaps_to_nvme(framework, offload):
    check_layout(PRESETS["llama3-8b"], make_layout(dp=8, global_batch=8, zero=3, offload=offload,
                                                   offload_device="nvme", framework=framework))


def test_simulate_exit_code(cli):
    code, out, err = cli(["simulate", "--model", "llama2-7b", "--gpus", 8, "--zero", 2, "--offload", "optimizer",
                          "--offload-device", "nvme", "--framework", "deepspeed"])
    assert code == 2 and "--offload-device nvme" in err and len(err.strip().splitlines()) == 1 and not out
