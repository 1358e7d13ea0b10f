"""The data guard of the test suite: a missing or partial ../shared/data skips, never fails."""

from __future__ import annotations

import pytest

import tests.conftest as conftest


def test_a_partial_dataset_folder_skips_with_the_missing_files(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path)
    with pytest.raises(pytest.skip.Exception, match="data not found"):
        conftest.shared_path("rmd17")
    (tmp_path / "rmd17").mkdir()
    for name in conftest.DATASET_FILES["rmd17"][:-1]:
        (tmp_path / "rmd17" / name).write_bytes(b"x")
    with pytest.raises(pytest.skip.Exception, match="missing rmd17_uracil_test_01.npz"):
        conftest.shared_path("rmd17")
    (tmp_path / "rmd17" / "rmd17_uracil_test_01.npz").write_bytes(b"x")
    assert conftest.shared_path("rmd17") == tmp_path / "rmd17"
    assert conftest.shared_path("rmd17", "rmd17_aspirin_train_01.npz").is_file()
