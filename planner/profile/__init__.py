"""Measured runs: the runs CSV, the real-DeepSpeed profiling harness, and log ingestion."""
