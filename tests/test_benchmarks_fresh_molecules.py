"""benchmarks.fresh_molecules: the molecules tested are in none of the drug-like shards, and the table
reads the measured values."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

pytest.importorskip("rdkit", reason="benchmarks.fresh_molecules needs RDKit: pip install 'forcefield-et[corpus]'")


def test_chosen_molecules_are_in_no_shard_and_have_the_corpus_elements(tmp_path):
    from benchmarks.fresh_molecules import canonical, choose_smiles

    (tmp_path / "smiles").mkdir()
    (tmp_path / "xtb").mkdir()
    pool = ["SMILES", "CCO", "OCC", "CCBr", "CCN", "c1ccccc1", "CC(=O)O"]  # OCC is CCO written another way
    with gzip.open(tmp_path / "smiles" / "moses_train.csv.gz", "wt") as handle:
        handle.write("\n".join(pool) + "\n")
    np.savez(tmp_path / "xtb" / "xtb_druglike_shard0.npz", smiles=np.array(["OCC", "c1ccccc1"]))
    record = choose_smiles(tmp_path, n=10, seed=0)
    assert sorted(record["smiles"]) == sorted([canonical("CCN"), canonical("CC(=O)O")])
    assert record["excluded_shards"] == ["xtb_druglike_shard0.npz"] and record["excluded_molecules"] == 2
    assert choose_smiles(tmp_path, n=1, seed=0)["smiles"][0] in record["smiles"]


def test_table_lists_every_model_with_its_errors():
    from benchmarks.fresh_molecules import table

    summary = {"molecules": 3, "frames": {"md": 18, "displaced": 18, "relaxed": 3}, "models": [
        {"model": "pretrained", "md_force_mae_meV_A": 150.04, "displaced_force_mae_meV_A": 300.0,
         "relaxed_mean_force_norm_meV_A": 90.0},
        {"model": "snap.pt", "conformations_seen": 100000, "md_force_mae_meV_A": 200.0}]}
    lines = table(summary).splitlines()
    assert lines[2] == "| `pretrained` | – | 150.0 | 300.0 | 90.0 |"
    assert lines[3] == "| `snap.pt` | 100,000 | 200.0 | – | – |"
    assert "3 molecules: 18 MD, 18 displaced and 3 relaxed frames." in lines[-1]
