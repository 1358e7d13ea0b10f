"""Benchmarks of forcefield_et (run as ``python -m benchmarks.<name>``; results in benchmarks/results/).

The benchmarks run, as the CLI does, with glibc malloc's thresholds raised
(:func:`forcefield_et.runtime.keep_freed_memory`, an explicit process-wide opt-in): their committed
results were measured so."""

from forcefield_et.runtime import keep_freed_memory

keep_freed_memory()
