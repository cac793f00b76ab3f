"""Benchmarks: `make bench` runs bench/run.py (ingestion throughput on the configured database)."""
