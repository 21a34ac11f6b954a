"""Prefect flows: wiring only. `experiment_flow` runs arms x seeds x rounds of `round_flow`."""
