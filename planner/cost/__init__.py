"""Cost model: pure, numpy-vectorised functions from (model, layout, cluster) to memory and time.

memory.py       bytes per GPU (weights, grads, optimizer, activations, buffers, reserve) and host/NVMe bytes
collectives.py  alpha-beta times of ring/hierarchical collectives on the links a group crosses
step_time.py    seconds per optimizer step as a sum of named parts, with an explicit overlap factor
"""
