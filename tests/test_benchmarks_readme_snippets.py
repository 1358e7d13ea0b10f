"""benchmarks.readme_snippets: the README blocks are found, shortened and timed under both
conditions, and the busy-core processes never outlive the run."""

from __future__ import annotations

import json
import os
import signal

import pytest

from benchmarks import readme_snippets


def test_finds_both_readme_blocks():
    blocks = readme_snippets.readme_blocks()
    assert set(blocks) == {"ase", "openmm"}
    assert "ETCalculator" in blocks["ase"] and "MLPotential" in blocks["openmm"]


def test_shortened_replaces_only_md_lengths():
    code = "dyn.run(1000)\nsimulation.step(1000)\nprint(1000)\n"
    assert readme_snippets.shortened(code, 3) == "dyn.run(3)\nsimulation.step(3)\nprint(1000)\n"
    assert readme_snippets.shortened(code, None) == code


def test_busy_cores_are_killed_on_error():
    with pytest.raises(RuntimeError):
        with readme_snippets.busy_cores(1) as pids:
            raise RuntimeError("boom")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_unknown_block_is_a_clear_error():
    with pytest.raises(SystemExit, match="no README block named nosuch"):
        readme_snippets.main(["--blocks", "nosuch", "--rounds", "1", "--steps", "1"])


def test_quick_run_writes_both_conditions(tmp_path):
    readme = tmp_path / "README.md"  # a stand-in block: the machinery, not the model, is under test
    readme.write_text("```python\nimport os, time  # ETCalculator\nassert 'OMP_NUM_THREADS' not in os.environ\n"
                      "time.sleep(0.05)\n```\n")
    result = readme_snippets.main(["--blocks", "ase", "--rounds", "1", "--out", str(tmp_path),
                                   "--readme", str(readme)])
    stored = json.loads((tmp_path / "readme_snippets.json").read_text())
    assert (tmp_path / "readme_snippets.png").stat().st_size > 0
    assert [(r["block"], r["condition"]) for r in stored["runs"]] == [("ase", "idle"), ("ase", "busy")]
    row = result["blocks"]["ase"]
    assert row["busy_over_idle"] == pytest.approx(row["median_wall_s"]["busy"] / row["median_wall_s"]["idle"])
    assert all(r["wall_s"] > 0 for r in stored["runs"])
