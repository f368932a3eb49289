"""Measured runs against the cost model: validation (runs -> errors), calibration (fitted efficiencies,
held-out error), the step-time error bands every prediction carries, and `doctor`, which checks hand-edited
cluster specs and runs files (including rows the model predicts far off, a unit slip)."""
