"""forcefield-et label: GFN2-xTB energies and forces for unlabelled frames, as extxyz that the
fine-tuning reader takes; resumable, never overwriting another file silently."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import molecule
from ase.io import read, write

from forcefield_et.cli import main
from forcefield_et.data import read_ase
from forcefield_et.data.labelling import file_sha256, label_frames

pytest.importorskip("tblite", reason="labelling with xTB needs tblite: pip install 'forcefield-et[corpus]'")


def unlabelled_frames(path, n=3):
    """``n`` displaced ethanol geometries written as positions-only extxyz (as select writes them)."""
    rng = np.random.default_rng(0)
    frames = []
    for k in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        atoms.info = {"source_index": k}
        frames.append(atoms)
    write(str(path), frames, format="extxyz")
    return read(str(path), index=":")


def test_labels_are_xtb_energy_and_forces_and_the_trainer_reads_them(tmp_path):
    from tblite.ase import TBLite

    source = tmp_path / "to_label.extxyz"
    frames = unlabelled_frames(source)
    out = tmp_path / "labelled.extxyz"
    summary = label_frames(frames, out, file_sha256(source), progress=False)
    assert summary["labelled"] == 3 and summary["failed"] == [] and summary["resumed_from"] == 0
    reference = frames[1].copy()
    reference.calc = TBLite(method="GFN2-xTB", verbosity=0)
    data = read_ase(out)
    assert len(data) == 3 and data.has_energy.all() and data.has_forces.all()
    second = slice(9, 18)
    assert data.energy[1] == pytest.approx(reference.get_potential_energy(), abs=1e-6)  # eV
    np.testing.assert_allclose(data.forces[second], reference.get_forces(), atol=1e-6)  # eV/Å
    np.testing.assert_allclose(data.pos[second], frames[1].positions, atol=1e-6)
    # the forces are those of the energy surface: a finite difference along them lowers the energy
    step = 1e-3 * reference.get_forces() / np.linalg.norm(reference.get_forces())
    moved = reference.copy()
    moved.calc = TBLite(method="GFN2-xTB", verbosity=0)
    moved.positions += step
    predicted = -np.sum(reference.get_forces() * step)
    assert moved.get_potential_energy() - reference.get_potential_energy() == pytest.approx(predicted, rel=0.05)
    kept = read(str(out), index="1")
    assert kept.info["source_index"] == 1 and kept.info["label_index"] == 1
    assert kept.info["label_method"] == "gfn2-xtb"


def test_a_stopped_labelling_resumes_and_other_files_are_refused(tmp_path):
    source = tmp_path / "to_label.extxyz"
    frames = unlabelled_frames(source, n=3)
    digest = file_sha256(source)
    out = tmp_path / "labelled.extxyz"
    label_frames(frames[:2], out, digest, save_every=1, progress=False)  # as if stopped after two frames
    first_two = out.read_text()
    summary = label_frames(frames, out, digest, progress=False)
    assert summary["resumed_from"] == 2 and summary["labelled"] == 3
    assert out.read_text().startswith(first_two)
    again = label_frames(frames, out, digest, progress=False)  # finished: nothing to do
    assert again["resumed_from"] == 3 and again["labelled"] == 3
    with pytest.raises(ValueError, match="another input"):
        label_frames(frames, out, "0" * 64, progress=False)
    with pytest.raises(ValueError, match="another input"):
        label_frames(frames, out, digest, method="gfn1-xtb", progress=False)
    foreign = tmp_path / "notes.extxyz"
    foreign.write_text("not a structure file\n")
    with pytest.raises(ValueError, match="not an extxyz file"):
        label_frames(frames, foreign, digest, progress=False)
    assert foreign.read_text() == "not a structure file\n"
    replaced = label_frames(frames[:1], out, digest, overwrite=True, progress=False)
    assert replaced["labelled"] == 1 and len(read(str(out), index=":")) == 1


def test_label_command(tmp_path, capsys):
    source = tmp_path / "to_label.extxyz"
    unlabelled_frames(source, n=2)
    out = tmp_path / "labelled.extxyz"
    assert main(["label", str(source), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["labelled"] == 2 and summary["method"] == "GFN2-xTB"
    assert main(["label", str(tmp_path / "missing.extxyz"), "--out", str(out)]) == 2
    assert "missing.extxyz" in capsys.readouterr().err


# PySCF's own hint for the unknown basis below, before the ValueError this test expects
@pytest.mark.filterwarnings("ignore:Basis may be available in basis-set-exchange:UserWarning")
def test_dft_labels_are_the_gradient_of_the_dft_energy_and_bad_settings_fail_first(tmp_path):
    pytest.importorskip("pyscf", reason="DFT labels need PySCF: pip install 'forcefield-et[dft]'")
    from forcefield_et.data.labelling import dft_single_point

    water = molecule("H2O")
    water.positions += np.random.default_rng(1).normal(0.0, 0.03, water.positions.shape)
    energy, forces = dft_single_point(water.numbers, water.positions, "pbe", "def2-svp")
    assert -2100 < energy < -2000  # eV: PBE water is about -76.3 Hartree
    # F = -dE/dx in eV/Å: a central difference of the energy along one coordinate
    step = 1e-3
    for atom, axis in ((0, 2), (1, 1)):
        moved = [water.positions.copy(), water.positions.copy()]
        moved[0][atom, axis] += step
        moved[1][atom, axis] -= step
        e_plus, _ = dft_single_point(water.numbers, moved[0], "pbe", "def2-svp")
        e_minus, _ = dft_single_point(water.numbers, moved[1], "pbe", "def2-svp")
        assert forces[atom, axis] == pytest.approx(-(e_plus - e_minus) / (2 * step), abs=2e-3)
    source = tmp_path / "water.extxyz"
    write(str(source), [water], format="extxyz")
    out = tmp_path / "labelled.extxyz"
    summary = label_frames(read(str(source), index=":"), out, file_sha256(source), method="dft:pbe/def2-svp",
                           progress=False)
    assert summary["labelled"] == 1 and summary["method"] == "PBE/def2-svp (PySCF)"
    labelled = read_ase(out)
    np.testing.assert_allclose(labelled.forces, forces, atol=1e-5)
    assert labelled.energy[0] == pytest.approx(energy, abs=1e-5)
    for bad in ("dft:pbe/no-such-basis", "dft:no-such-functional/def2-svp"):
        with pytest.raises(ValueError, match="PySCF"):
            label_frames(read(str(source), index=":"), tmp_path / "bad.extxyz", "x", method=bad, progress=False)
        assert not (tmp_path / "bad.extxyz").exists()
