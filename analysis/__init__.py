"""Numbers about runs: metrics with uncertainty (pure), path diversity, and the report."""
