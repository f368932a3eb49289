# Makes the bundled cluster specs importable as package data (`planner.cluster_specs`); see pyproject.toml.
