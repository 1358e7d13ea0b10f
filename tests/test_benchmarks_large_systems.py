"""benchmarks.large_systems on the smallest box: the path the calculator took is recorded."""

from __future__ import annotations

from benchmarks.large_systems import measure
from tests.conftest import shared_path


def test_measure_records_the_path_time_and_memory_of_each_call():
    shared_path("water")
    chunked = measure("1,1,1", "4096", calls=1)  # 192 atoms, ~10k edges: three chunks
    assert chunked["atoms"] == 192 and chunked["path"] == "chunked" and chunked["finite_forces"]
    assert len(chunked["s_per_call"]) == 1 and chunked["peak_increase_gib"] >= 0
    assert measure("1,1,1", "auto", calls=1)["path"] == "all_edges"
