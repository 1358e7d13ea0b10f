"""benchmarks.threads: one round on aspirin writes the JSON and plot with every thread setting."""

from __future__ import annotations

import json

from ase.io import read

from forcefield_et.structures import structure_path


def test_one_round_on_aspirin(tmp_path, monkeypatch):
    import torch

    import benchmarks.threads as bench
    from forcefield_et import runtime

    monkeypatch.setattr(runtime, "_user_set_threads", False)  # earlier tests may have set torch's count
    monkeypatch.setattr(runtime, "_threads_set_here", None)
    monkeypatch.setattr(runtime, "_torch_threads_at_import", torch.get_num_threads())
    monkeypatch.setattr(bench, "systems", lambda: {"aspirin": (read(structure_path("aspirin")), 2)})
    assert bench.main(["--rounds", "1", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "threads.json").read_text())
    entry = summary["systems"]["aspirin"]
    assert entry["atoms"] == 21 and entry["calls_per_setting"] == 2
    assert entry["threads_in_effect"]["1"] == 1 and entry["threads_in_effect"]["2"] == 2
    assert entry["threads_in_effect"]["rule"] == entry["rule_threads"] == 1
    assert all(value > 0 for value in entry["ms_per_call"].values())
    assert summary["load_average_1min"]["before"] is not None
    assert (tmp_path / "threads.png").stat().st_size > 0
