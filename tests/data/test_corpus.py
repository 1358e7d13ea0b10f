"""forcefield-et corpus: SMILES -> RDKit conformers -> GFN2-xTB relaxed, MD and displaced frames,
in shards that the xtb_corpus reader and the trainer read; resumable; bad SMILES skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forcefield_et.cli import main
from forcefield_et.data import read_xtb_corpus
from forcefield_et.data.corpus import CorpusSettings, make_corpus, read_smiles, summarize

pytest.importorskip("rdkit", reason="forcefield-et corpus needs RDKit: pip install 'forcefield-et[corpus]'")
pytest.importorskip("tblite", reason="forcefield-et corpus needs tblite: pip install 'forcefield-et[corpus]'")

SMALL = dict(md_frames=2, displacements=2, relax_steps=100, md_warmup_fs=5.0, md_interval_fs=5.0)


@pytest.mark.timeout(600)
def test_corpus_from_smiles_is_readable_physical_and_resumable(tmp_path, capsys):
    smiles_file = tmp_path / "molecules.smi"
    smiles_file.write_text("SMILES\nCCO\nnot-a-smiles\nBrC\nC=O\n")  # Br is outside the elements
    out = tmp_path / "corpus"
    settings = CorpusSettings(molecules_per_shard=2, save_every=1, **SMALL)
    # a run stopped after the first two SMILES (one shard), then resumed over all four
    smiles = read_smiles(smiles_file)
    assert smiles == ["CCO", "not-a-smiles", "BrC", "C=O"]
    first = make_corpus(smiles[:2], tmp_path / "partial", settings, progress=False)
    assert first["molecules_tried"] == 2 and first["molecules_kept"] == 1
    summary = make_corpus(smiles, out, settings, progress=False)
    assert summary["molecules_tried"] == 4 and summary["molecules_kept"] == 2
    assert summary["frames_relaxed"] == 2 and summary["frames_md"] == 4 and summary["frames_displaced"] == 4
    data = read_xtb_corpus(out)
    assert len(data) == 10 and set(np.unique(data.mol_id)) == {0}  # each shard numbers its molecules from 0
    kind = data.properties["kind"]
    relaxed = data.subset(np.flatnonzero(kind == 0))
    displaced = data.subset(np.flatnonzero(kind == 2))
    # relaxed frames have (near) zero forces; displaced ones push back
    assert np.abs(relaxed.forces).max() < 0.05
    assert np.abs(displaced.forces).max() > 0.1
    assert np.isfinite(data.energy).all() and (data.energy < 0).all()
    # the same molecule, the same frames: the first shard equals the stopped run's shard
    partial = read_xtb_corpus(tmp_path / "partial")
    full_first = read_xtb_corpus(out / "xtb_shard0.npz")
    assert np.array_equal(partial.pos, full_first.pos) and np.array_equal(partial.energy, full_first.energy)
    # rerunning finds every SMILES done and adds nothing
    again = make_corpus(smiles, out, settings, progress=False)
    assert again == summary
    # other settings into the same folder are refused
    with pytest.raises(ValueError, match="other settings"):
        make_corpus(smiles, out, CorpusSettings(molecules_per_shard=2, md_frames=3), progress=False)
    # the command line: same pipeline, JSON summary
    code = main(["corpus", "--smiles", str(smiles_file), "--out", str(tmp_path / "cli"), "--max-molecules", "1",
                 "--md-frames", "1", "--displacements", "1", "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["molecules_kept"] == 1 and printed == summarize(tmp_path / "cli")


def test_corpus_settings_and_inputs_are_checked(tmp_path):
    with pytest.raises(ValueError, match="method"):
        CorpusSettings(method="dft")
    with pytest.raises(ValueError, match="molecules_per_shard"):
        CorpusSettings(molecules_per_shard=0)
    with pytest.raises(FileNotFoundError, match="SMILES file not found"):
        read_smiles(tmp_path / "missing.smi")
    (tmp_path / "empty.smi").write_text("SMILES\n\n")
    with pytest.raises(ValueError, match="no SMILES"):
        read_smiles(tmp_path / "empty.smi")


@pytest.mark.timeout(600)
def test_charged_and_radical_molecules_are_labelled_in_their_own_state(tmp_path):
    from ase import Atoms

    from forcefield_et.data.corpus import charge_and_multiplicity
    from forcefield_et.data.labelling import xtb_single_point

    assert charge_and_multiplicity("CCO") == (0, 1)
    assert charge_and_multiplicity("C[NH3+]") == (1, 1) and charge_and_multiplicity("CC(=O)[O-]") == (-1, 1)
    assert charge_and_multiplicity("[NH3+]CC(=O)[O-]") == (0, 1)  # a zwitterion is neutral
    assert charge_and_multiplicity("[CH3]") == (0, 2)
    settings = CorpusSettings(md_frames=1, displacements=0, relax_steps=100, md_warmup_fs=2.0, md_interval_fs=2.0)
    make_corpus(["C[NH3+]", "[CH3]"], tmp_path, settings, progress=False)
    with np.load(tmp_path / "xtb_shard0.npz") as shard:
        assert shard["charge"].tolist() == [1, 0] and shard["multiplicity"].tolist() == [1, 2]
    data = read_xtb_corpus(tmp_path)
    offsets = np.concatenate([[0], np.cumsum(data.n_atoms)])

    def first_frame(mol_id: int) -> tuple:
        frame = int(np.flatnonzero(data.mol_id == mol_id)[0])
        span = slice(offsets[frame], offsets[frame + 1])
        atoms = Atoms(numbers=data.z[span], positions=data.pos[span])
        return atoms, float(data.energy[frame])

    for mol_id, charge, multiplicity in ((0, 1, 1), (1, 0, 2)):
        atoms, labelled = first_frame(mol_id)
        energy, _ = xtb_single_point(atoms, "gfn2-xtb", charge, multiplicity)
        assert labelled == pytest.approx(energy, abs=1e-4)  # float32 positions in the shard
    cation, labelled = first_frame(0)
    assert len(cation) == 8
    neutral, _ = xtb_single_point(cation, "gfn2-xtb", 0, None)
    assert abs(neutral - labelled) > 0.1  # the cation was not labelled as if it were neutral
