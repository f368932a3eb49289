"""Launch files for a plan, one module per training stack."""
