"""benchmarks.qm9_property: fold construction and the --quick pipeline on the real QM9 subset."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.qm9_property import N_FOLDS, N_VALID, fold_indices, main
from tests.conftest import shared_path


def test_folds_are_disjoint_and_cover_every_molecule():
    tests = []
    for fold in range(N_FOLDS):
        split = fold_indices(500, N_FOLDS, fold)
        assert len(split["valid"]) == N_VALID and len(split["test"]) == 100
        parts = [split["train"], split["valid"], split["test"]]
        assert sum(len(p) for p in parts) == 500
        assert len(np.unique(np.concatenate(parts))) == 500
        tests.append(split["test"])
    assert sorted(np.concatenate(tests).tolist()) == list(range(500))


def test_quick_run_compares_both_starts_on_held_out_molecules(tmp_path):
    data = shared_path("qm9", "qm9_500_U0_eV.db")
    summary = main(["--quick", "--data", str(data), "--out", str(tmp_path)])
    runs = summary["runs"]
    assert {r["start"] for r in runs} == {"pretrained", "scratch"}
    for run in runs:
        assert run["n_train"] == 360 and run["n_test"] == 100
        assert np.isfinite(run["test_u0_mae_meV"]) and run["test_u0_mae_meV"] > 0
    assert json.loads((tmp_path / "qm9_property.json").read_text())["runs"] == runs
    assert (tmp_path / "qm9_property.png").stat().st_size > 1000


def test_a_test_molecule_with_an_element_missing_from_training_is_excluded_and_listed():
    from benchmarks.qm9_property import testable_molecules
    from forcefield_et.data import read_qm9

    data = read_qm9(shared_path("qm9", "qm9_500_U0_eV.db"))
    for fold in range(N_FOLDS):
        split = fold_indices(len(data), N_FOLDS, fold)
        keep, excluded = testable_molecules(data, split)
        assert len(keep) + len(excluded) == len(split["test"])
        trained = {int(z) for i in split["train"] for z in data.to_ase(int(i)).numbers}
        assert all(set(data.to_ase(int(i)).numbers.tolist()) <= trained for i in keep)
        assert [e["formula"] for e in excluded] == (["CF4"] if fold == 4 else [])


def test_a_finished_run_of_another_start_model_is_trained_again(tmp_path, capsys):
    from benchmarks.qm9_property import start_model

    data = shared_path("qm9", "qm9_500_U0_eV.db")
    argv = ["--quick", "--data", str(data), "--out", str(tmp_path), "--starts", "pretrained"]
    first = main(argv)["runs"][0]
    assert first["start_model"] == start_model("pretrained") and "sha256" in first["start_model"]
    capsys.readouterr()
    assert main(argv)["runs"][0] == first  # the same start model: read back
    assert "training it again" not in capsys.readouterr().out
    result_path = tmp_path / "runs" / "fold0-pretrained" / "result.json"
    stale = {**first, "start_model": "pretrained: sha256 0000"}  # as from an earlier bundled pretrained
    result_path.write_text(json.dumps(stale))
    again = main(argv)["runs"][0]
    assert "training it again" in capsys.readouterr().out
    assert again["start_model"] == first["start_model"]
    assert json.loads(result_path.read_text())["start_model"] == first["start_model"]
