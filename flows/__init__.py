"""Prefect flows: thin wiring of the coool library (one module per stage + pipeline)."""
