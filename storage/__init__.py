"""Parquet shards (writer), their schemas, and the DuckDB catalog of views over them."""
