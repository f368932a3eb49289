"""Loss laws: published laws, a robust fitter, compute-optimal frontiers, batch-size limits."""
