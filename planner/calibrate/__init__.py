"""Measured runs against the cost model: validation (runs -> errors), calibration (fitted efficiencies,
held-out error) and the step-time error bands every prediction carries."""
