"""Benchmarks of forcefield_et (run as ``python -m benchmarks.<name>``; results in benchmarks/results/)."""
