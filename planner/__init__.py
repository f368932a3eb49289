"""planner: a distributed-training scale planner and simulator.

Data flows one way: specs (units, hardware, model, layout) -> cost model (cost/) ->
calibration -> loss laws (laws/) -> search -> report / CLI.
"""

__version__ = "0.1.0"
