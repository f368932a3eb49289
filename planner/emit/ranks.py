"""How many ranks each node of a launch runs: whole nodes, then the rest of the plan's GPUs on the last one.

Its own module: the three launchers say it differently (torchrun's --nproc_per_node per node, the DeepSpeed
hostfile's slots per host), and each must start exactly the plan's world size. The stacks assert that world
size equals the product of their parallel degrees (torchtitan@238fa995 distributed/parallel_dims.py:53-56) or
derive data parallelism from it (Megatron-LM, Megatron-DeepSpeed), so a last node started full runs another
plan, or none.
"""

from __future__ import annotations

from planner.specs.layout import Layout


def nodes(layout: Layout, gpus_per_node: int) -> int:
    """Nodes the launcher starts: whole nodes, the last one possibly partly used."""
    return -(-layout.gpus // gpus_per_node)


def ranks_per_node(layout: Layout, gpus_per_node: int) -> list[int]:
    """Ranks on each node in rank order: gpus_per_node on every node but the last, which runs the rest."""
    count = nodes(layout, gpus_per_node)
    return [gpus_per_node] * (count - 1) + [layout.gpus - (count - 1) * gpus_per_node]


def torchrun_ranks(layout: Layout, gpus_per_node: int) -> tuple[str, list[str]]:
    """(--nproc_per_node's value, the shell lines that set it), for a script run on every node with NODE_RANK.

    Where the last node is partly used it starts fewer workers than the others. torchrun allows that: without
    TORCH_ELASTIC_WORKER_IDENTICAL each agent publishes its own local world size and rank 0's agent assigns
    global ranks by their running sum (torch 2.13 distributed/elastic/agent/server/api.py,
    SimpleElasticAgent._assign_worker_ranks), so the world is exactly the plan's GPUs; Megatron-LM and torchtitan
    pick the device from LOCAL_RANK (Megatron-LM@d98e8a64 megatron/training/initialize.py:288-290;
    torchtitan@238fa995 torchtitan/train.py:88-90), not from a rank modulo the node's device count."""
    counts = ranks_per_node(layout, gpus_per_node)
    if len(set(counts)) == 1:
        return str(counts[0]), []
    line = (f'NPROC_PER_NODE=$(( NODE_RANK == {len(counts) - 1} ? {counts[-1]} : {counts[0]} ))'
            f"  # the last node runs the remaining {counts[-1]} of {layout.gpus} ranks")
    return '"$NPROC_PER_NODE"', [line]
