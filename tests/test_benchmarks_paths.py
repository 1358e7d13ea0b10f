"""One home for where the benchmarks find the shared data."""

from pathlib import Path

import pytest

from benchmarks.paths import DATA_ROOT, REPO, rmd17_file, water_dir


def test_rmd17_files_are_named_by_molecule_and_split(tmp_path):
    assert rmd17_file("aspirin") == DATA_ROOT / "rmd17" / "rmd17_aspirin_train_01.npz"
    assert rmd17_file("ethanol", "test", tmp_path) == tmp_path / "rmd17" / "rmd17_ethanol_test_01.npz"
    assert water_dir(tmp_path) == tmp_path / "water" / "data_0"
    assert DATA_ROOT == (REPO.parent / "shared" / "data").resolve()
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        rmd17_file("aspirin", "valid")


def test_results_name_paths_inside_the_repository_relative_to_it(tmp_path):
    from benchmarks.paths import repo_relative

    results = REPO / "benchmarks" / "results" / "peers" / "peers.json"
    assert repo_relative(results) == "benchmarks/results/peers/peers.json"
    assert repo_relative(REPO / "runs" / ".." / "docs") == "docs"
    assert repo_relative(tmp_path / "elsewhere.pt") == str(tmp_path / "elsewhere.pt")


def test_checkout_path_finds_recorded_paths_in_this_checkout():
    from benchmarks.paths import checkout_path

    assert checkout_path("benchmarks/paths.py") == REPO / "benchmarks" / "paths.py"  # relative: in the repository
    assert checkout_path(REPO / "benchmarks" / "paths.py") == REPO / "benchmarks" / "paths.py"
    # recorded in another checkout: found again below its benchmarks/ folder
    assert checkout_path("/elsewhere/clone/benchmarks/paths.py") == REPO / "benchmarks" / "paths.py"
    assert checkout_path("/elsewhere/model.ckpt") == Path("/elsewhere/model.ckpt")  # nowhere here: as recorded
