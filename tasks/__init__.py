"""One module per stage (sample, verify, filter, train, evaluate), each a small Prefect task around pure functions."""
