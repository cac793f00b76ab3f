"""Meterboard's benchmarks: `python -m bench <command>` (bench/__main__.py); `make bench` runs `all`."""
