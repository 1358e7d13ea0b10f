"""Tests of the data readers: real shared data (skipped when absent) and synthetic files."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forcefield_et.data import (
    QM9_PROPERTY_UNITS,
    ConformationSet,
    DataFormatError,
    infer_format,
    read_ani1x,
    read_ase,
    read_ase_db,
    read_dataset,
    read_deepmd,
    read_md17,
    read_qm7x,
    read_qm9,
    read_rmd17,
    read_spice,
    read_xtb_corpus,
    smiles_formal_charge,
    xtb_start_sources,
)
from forcefield_et.units import (
    BOHR_TO_ANGSTROM,
    HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM,
    HARTREE_TO_EV,
    KCAL_PER_MOL_TO_EV,
)
from tests.conftest import shared_path

RMD17_ATOMS = {
    "aspirin": 21,
    "azobenzene": 24,
    "benzene": 12,
    "ethanol": 9,
    "malonaldehyde": 9,
    "naphthalene": 18,
    "paracetamol": 20,
    "salicylic": 16,
    "toluene": 15,
    "uracil": 12,
}


def shared(rel: str) -> Path:
    """Path of a shared data file (``rel`` below ../shared/data); skips the test when it is absent."""
    return shared_path(*Path(rel).parts)


def assert_error_names(err: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(err.value)
    for part in parts:
        assert part in msg, f"{part!r} not in error message: {msg}"


# ============================================================================ real data
def test_rmd17_ethanol_units_shapes_and_values() -> None:
    p = shared("rmd17/rmd17_ethanol_train_01.npz")
    raw = np.load(p)
    cs = read_rmd17(p)
    assert len(cs) == 1000 and cs.n_total_atoms == 9000
    np.testing.assert_array_equal(cs.n_atoms, 9)
    np.testing.assert_array_equal(cs.frame(0)["z"], [6, 6, 8, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(cs.elements, [1, 6, 8])
    # kcal/mol -> eV, frame by frame
    assert cs.energy[17] == pytest.approx(raw["energies"][17] * KCAL_PER_MOL_TO_EV, rel=1e-12)
    assert cs.energy[0] == pytest.approx(-4209.78387266, abs=1e-6)
    np.testing.assert_allclose(cs.frame(5)["forces"], raw["forces"][5] * KCAL_PER_MOL_TO_EV, rtol=1e-12)
    np.testing.assert_array_equal(cs.frame(3)["pos"], raw["coords"][3])
    mean_f = np.abs(cs.forces).mean()
    assert 0.2 < mean_f < 3.0, mean_f  # eV/Å, ~23x smaller than kcal/mol/Å
    assert not cs.equilibrium.any() and set(cs.mol_id.tolist()) == {0}
    assert cs.source == "rmd17:rmd17_ethanol_train_01.npz"
    np.testing.assert_array_equal(cs.properties["old_index"], raw["old_indices"])
    # frame selection and the original MD17 labels
    sub = read_rmd17(p, indices=[10, 3, 7], max_frames=2)
    np.testing.assert_allclose(sub.energy, raw["energies"][[10, 3]] * KCAL_PER_MOL_TO_EV)
    assert len(read_rmd17(p, max_frames=5)) == 5
    old = read_rmd17(p, max_frames=3, old_labels=True)
    np.testing.assert_allclose(old.energy, raw["old_energies"][:3] * KCAL_PER_MOL_TO_EV)
    with pytest.raises(IndexError):
        read_rmd17(p, indices=[1000])


@pytest.mark.parametrize("mol", sorted(RMD17_ATOMS))
def test_rmd17_all_molecules_train_test_disjoint(mol: str) -> None:
    train = read_rmd17(shared(f"rmd17/rmd17_{mol}_train_01.npz"))
    test = read_rmd17(shared(f"rmd17/rmd17_{mol}_test_01.npz"))
    assert len(train) == len(test) == 1000
    np.testing.assert_array_equal(train.n_atoms, RMD17_ATOMS[mol])
    np.testing.assert_array_equal(train.frame(0)["z"], test.frame(0)["z"])
    assert set(train.properties["old_index"]).isdisjoint(test.properties["old_index"])
    # energies are total DFT energies: tens of keV negative, spread of a few eV
    assert train.energy.max() < -1000 and np.ptp(train.energy) < 20


def test_qm7x_padded_layout() -> None:
    p = shared("qm7x/qm7x_250_small.npz")
    raw = np.load(p)
    cs = read_qm7x(p)
    assert len(cs) == 2500
    mask = raw["z"] > 0
    assert cs.n_total_atoms == mask.sum()
    assert cs.n_atoms.min() == 4 and cs.n_atoms.max() == 23
    assert 0 not in cs.z
    np.testing.assert_array_equal(cs.elements, [1, 6, 7, 8, 16, 17])
    # eV stays eV, padding removed
    i = 123
    n = cs.n_atoms[i]
    assert cs.energy[i] == raw["E"][i, 0]
    np.testing.assert_array_equal(cs.frame(i)["pos"], raw["R"][i, :n])
    np.testing.assert_array_equal(cs.frame(i)["forces"], raw["F"][i, :n])
    # no molecule id in the file: one id per distinct atomic-number sequence
    assert len(np.unique(cs.mol_id)) == 195
    for m in (0, 57, 194):
        zs = {tuple(cs.frame(j)["z"]) for j in np.flatnonzero(cs.mol_id == m)}
        assert len(zs) == 1
    assert not cs.equilibrium.any()
    train, valid = cs.split_by_molecule(0.1, seed=0)
    assert set(train.mol_id).isdisjoint(valid.mol_id)


def test_qm7x_single_molecule_layout() -> None:
    p = shared("qm7x/qm7x_226.npz")
    raw = np.load(p)
    cs = read_qm7x(p)
    assert len(cs) == 100 and set(cs.n_atoms.tolist()) == {18}
    assert (cs.frame(0)["z"] == 6).sum() == 6 and (cs.frame(0)["z"] == 1).sum() == 12  # C6H12
    np.testing.assert_array_equal(cs.mol_id, 226)
    np.testing.assert_array_equal(cs.energy, raw["ePBE0+MBD"][:, 0])
    np.testing.assert_array_equal(cs.frame(9)["forces"], raw["totFOR"][9])
    assert cs.properties["vDIP"].shape == (100, 3)
    assert cs.atom_properties["hCHG"].shape == (1800,)
    charge = np.add.reduceat(cs.atom_properties["hCHG"], cs.offsets[:-1])
    np.testing.assert_allclose(charge, 0.0, atol=1e-3)  # neutral molecule
    assert infer_format(p) == "qm7x"


def test_qm9_xyz_and_databases_agree() -> None:
    xyz = read_qm9(shared("qm9/qm9_reduced_100.xyz"))
    db500 = read_qm9(shared("qm9/qm9_500_U0_eV.db"))
    db20 = read_qm9(shared("qm9/test_qm9_20.db"))
    assert (len(xyz), len(db500), len(db20)) == (100, 500, 20)
    for cs in (xyz, db500, db20):
        assert cs.equilibrium.all() and cs.forces is None and len(np.unique(cs.mol_id)) == len(cs)
    # CH4 first: U0 = -40.47893 Hartree
    np.testing.assert_array_equal(xyz.frame(0)["z"], [6, 1, 1, 1, 1])
    assert xyz.energy[0] == pytest.approx(-40.47893 * HARTREE_TO_EV, rel=1e-12)
    assert set(xyz.properties) == set(QM9_PROPERTY_UNITS) == set(db20.properties)
    assert xyz.properties["homo"][0] == pytest.approx(-0.3877 * HARTREE_TO_EV)
    assert xyz.properties["mu"][1] == pytest.approx(1.6256)  # Debye, unchanged
    assert xyz.properties["alpha"][0] == pytest.approx(13.21)  # bohr^3, unchanged
    # test_qm9_20.db stores Hartree (metadata) and must match the xyz after conversion
    np.testing.assert_allclose(db20.energy, xyz.energy[:20], rtol=1e-12)
    np.testing.assert_allclose(db20.properties["gap"], xyz.properties["gap"][:20], rtol=1e-12)
    np.testing.assert_allclose(db20.pos, xyz.subset(np.arange(20)).pos, atol=1e-6)
    # qm9_500_U0_eV.db stores eV (converted upstream with 27.211386 eV/Hartree: |diff| < 1e-4 eV).
    # The xyz skips three of the db's first 103 molecules (db rows 58, 61, 80), so match by energy.
    match = np.array([np.argmin(np.abs(db500.energy - e)) for e in xyz.energy])
    np.testing.assert_allclose(db500.energy[match], xyz.energy, atol=1e-4)
    np.testing.assert_array_equal(match[:58], np.arange(58))
    assert np.all(np.diff(match) > 0) and sorted(set(range(103)) - set(match)) == [58, 61, 80]
    np.testing.assert_array_equal(db500.subset(match).z, xyz.z)
    # generic readers keep raw units
    raw_db = read_dataset(shared("qm9/test_qm9_20.db"))
    assert raw_db.energy is None and raw_db.properties["energy_U0"][0] == pytest.approx(-40.47893)
    raw_u0 = read_ase_db(shared("qm9/qm9_500_U0_eV.db"), energy_key="energy_U0")
    np.testing.assert_allclose(raw_u0.energy, db500.energy)


def test_deepmd_water_and_combustion() -> None:
    water0 = read_deepmd(shared("water/data_0"))
    assert len(water0) == 80 and set(water0.n_atoms.tolist()) == {192}
    fr = water0.frame(0)
    assert (fr["z"] == 8).sum() == 64 and (fr["z"] == 1).sum() == 128
    np.testing.assert_allclose(np.diagonal(water0.cell, axis1=1, axis2=2), 12.4447, atol=1e-3)
    assert np.count_nonzero(water0.cell[:, ~np.eye(3, dtype=bool)]) == 0
    raw_f = np.load(shared("water/data_0/set.000/force.npy"))
    np.testing.assert_allclose(water0.frame(2)["forces"].reshape(-1), raw_f[2], rtol=1e-6)
    assert water0.energy[0] == pytest.approx(-29943.906, abs=1e-2)
    water = read_dataset(shared("water"))
    assert len(water) == 400 and len(np.unique(water.mol_id)) == 4  # data_1 has two sets
    c1 = read_deepmd(shared("combustion/C1H4O2"))
    assert len(c1) == 1562 and c1.cell is None
    np.testing.assert_array_equal(np.bincount(c1.frame(0)["z"], minlength=9)[[1, 6, 8]], [4, 1, 2])
    allc = read_deepmd(shared("combustion"))
    assert len(allc) == 1562 + 485 + 15 and len(np.unique(allc.mol_id)) == 3


@pytest.fixture(scope="module")
def xtb_corpus() -> ConformationSet:
    return read_xtb_corpus(shared("xtb/xtb_shard0.npz"))


def test_xtb_corpus(xtb_corpus: ConformationSet) -> None:
    cs = xtb_corpus
    assert len(cs) == 87_778 and cs.n_total_atoms == 1_119_885
    kind = cs.properties["kind"]
    np.testing.assert_array_equal(np.bincount(kind), [733, 70_368, 16_677])
    np.testing.assert_array_equal(cs.equilibrium, kind == 0)
    fnorm = np.linalg.norm(cs.forces, axis=1)
    by_kind = [fnorm[np.repeat(kind == k, cs.n_atoms)].mean() for k in range(3)]
    assert by_kind[0] < 0.1 < by_kind[1] < by_kind[2]
    np.testing.assert_array_equal(cs.elements, [1, 6, 7, 8, 9, 16, 17])
    sources = xtb_start_sources(shared("xtb/xtb_shard0.npz"))
    assert len(sources) == 733 and set(np.unique(cs.mol_id)) == set(range(733))
    assert {s.split("-")[0] for s in sources} == {"qm9", "qm7x", "rmd17"}
    # the first relaxed frame of molecule 0 is the first start structure (CH4 from QM9)
    assert sources[cs.mol_id[0]] == "qm9"
    np.testing.assert_array_equal(cs.frame(0)["z"], [6, 1, 1, 1, 1])


def test_xtb_kinds_and_source_exclusion() -> None:
    p = shared("xtb/xtb_shard0.npz")
    eq = read_xtb_corpus(p, kinds=(0,))
    assert len(eq) == 733 and eq.equilibrium.all()
    clean = read_xtb_corpus(p, kinds=(0, 2), exclude_sources=("rmd17-*",))
    sources = xtb_start_sources(p)
    assert not any(s.startswith("rmd17") for s in sources[clean.mol_id])
    assert set(clean.properties["kind"].tolist()) == {0, 2}
    assert len(np.unique(clean.mol_id)) == 733 - sum(s.startswith("rmd17") for s in sources)


@pytest.mark.parametrize(
    "rel, prefix",
    [
        ("rmd17/rmd17_uracil_test_01.npz", "rmd17:"),
        ("qm7x/qm7x_250_small.npz", "qm7x:"),
        ("qm7x/qm7x_226.npz", "qm7x:"),
        ("qm9/qm9_reduced_100.xyz", "ase:"),
        ("qm9/test_qm9_20.db", "ase_db:"),
        ("water/data_3", "deepmd:"),
        ("combustion/C4H3O1", "deepmd:"),
    ],
)
def test_read_dataset_dispatch_on_real_files(rel: str, prefix: str) -> None:
    cs = read_dataset(shared(rel))
    assert cs.source.startswith(prefix)
    cs.validate()


# ============================================================================ synthetic layouts
def write_md17(path: Path, n_frames: int = 4, nan_frame: int | None = None, **override) -> Path:
    rng = np.random.default_rng(1)
    d = {
        "R": rng.normal(size=(n_frames, 3, 3)),
        "z": np.array([8, 1, 1]),
        "E": rng.normal(size=(n_frames, 1)) - 47000.0,
        "F": rng.normal(size=(n_frames, 3, 3)) * 30,
        "name": np.array("water"),
    }
    if nan_frame is not None:
        d["R"][nan_frame, 1, 0] = np.nan
    d.update(override)
    np.savez(path, **{k: v for k, v in d.items() if v is not None})
    return path


def test_md17_original_layout(tmp_path: Path) -> None:
    p = write_md17(tmp_path / "md17_water.npz")
    d = np.load(p)
    cs = read_md17(p)
    assert infer_format(p) == "md17"
    assert len(cs) == 4 and cs.n_total_atoms == 12
    np.testing.assert_allclose(cs.energy, d["E"][:, 0] * KCAL_PER_MOL_TO_EV)
    np.testing.assert_allclose(cs.forces, d["F"].reshape(-1, 3) * KCAL_PER_MOL_TO_EV)
    np.testing.assert_array_equal(cs.pos, d["R"].reshape(-1, 3))
    np.testing.assert_array_equal(cs.z, np.tile([8, 1, 1], 4))
    assert read_dataset(p).source == "md17:md17_water.npz"


def write_ani1x(path: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(2)
    groups = {}
    with h5py.File(path, "w") as h:
        for name, z, n_frames in (("CH4", [6, 1, 1, 1, 1], 3), ("H2O", [8, 1, 1], 2)):
            g = h.create_group(name)
            n = len(z)
            R = rng.normal(size=(n_frames, n, 3)).astype(np.float32)
            E = rng.normal(size=n_frames) - 40.0
            F = rng.normal(size=(n_frames, n, 3)) * 0.05
            cc = rng.normal(size=n_frames) - 40.1
            if name == "CH4":
                E[1] = np.nan  # missing DFT label -> frame dropped
                cc[0] = np.nan
            g["atomic_numbers"] = np.array(z, dtype=np.uint8)
            g["coordinates"] = R
            g["wb97x_dz.energy"] = E
            g["wb97x_dz.forces"] = F
            g["ccsd(t)_cbs.energy"] = cc
            groups[name] = {"z": z, "R": R, "E": E, "F": F, "cc": cc}
    return path, groups


def test_ani1x_layout_units_and_missing_labels(tmp_path: Path) -> None:
    from forcefield_et.data import DroppedFramesWarning

    p, g = write_ani1x(tmp_path / "ani1x_small.h5")
    with pytest.warns(DroppedFramesWarning, match="'CH4' frame 1$"):
        cs = read_ani1x(p)
    assert infer_format(p) == "ani1x"
    assert len(cs) == 2 + 2  # CH4 frame 1 has NaN energy
    np.testing.assert_array_equal(cs.mol_id, [0, 0, 1, 1])
    np.testing.assert_array_equal(cs.n_atoms, [5, 5, 3, 3])
    np.testing.assert_allclose(cs.energy[:2], g["CH4"]["E"][[0, 2]] * HARTREE_TO_EV)
    np.testing.assert_allclose(cs.frame(1)["forces"], g["CH4"]["F"][2] * HARTREE_TO_EV)  # Hartree/Å
    np.testing.assert_allclose(cs.frame(3)["pos"], g["H2O"]["R"][1])  # Å unchanged
    np.testing.assert_array_equal(cs.frame(2)["z"], [8, 1, 1])
    with pytest.warns(DroppedFramesWarning, match="'CH4' frame 0$"):
        cc = read_ani1x(p, energy_key="ccsd(t)_cbs.energy", forces_key=None)
    assert cc.forces is None and len(cc) == 2 + 2
    np.testing.assert_allclose(cc.energy[:2], g["CH4"]["cc"][[1, 2]] * HARTREE_TO_EV)
    with pytest.warns(DroppedFramesWarning):
        assert read_dataset(p).source == "ani1x:ani1x_small.h5"


def test_hdf5_readers_report_the_frames_they_drop(tmp_path: Path) -> None:
    from forcefield_et.data import DroppedFramesWarning

    p, _ = write_ani1x(tmp_path / "ani1x_small.h5")
    with pytest.warns(DroppedFramesWarning) as caught:
        read_ani1x(p)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "ani1x_small.h5: dropped 1 of 5 frame(s) with non-finite (NaN/inf) 'wb97x_dz.energy' or 'wb97x_dz.forces' "
        "(labels missing at that level): 'CH4' frame 1"
    )
    # many dropped frames: the first 12 are named, the rest counted
    with h5py.File(tmp_path / "many.h5", "w") as h:
        for name in ("A", "B"):
            g = h.create_group(name)
            g["atomic_numbers"] = np.array([1, 1], dtype=np.uint8)
            g["coordinates"] = np.zeros((10, 2, 3), np.float32) + np.arange(10)[:, None, None]
            g["wb97x_dz.energy"] = np.where(np.arange(10) % 10 < 8, np.nan, -1.0)
            g["wb97x_dz.forces"] = np.zeros((10, 2, 3))
    with pytest.warns(DroppedFramesWarning, match=r"many.h5: dropped 16 of 20 frame\(s\) .*'A' frame 0, .*"
                      r"'A' frame 7, 'B' frame 0, .*'B' frame 3, and 4 more$"):
        assert len(read_ani1x(tmp_path / "many.h5")) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing dropped: no warning
        read_spice(write_spice(tmp_path / "spice_ok.h5")[0])
    spice, _ = write_spice(tmp_path / "spice_nan.h5")
    with h5py.File(spice, "a") as h:
        energy = h["methoxide"]["dft_total_energy"][()]
        energy[1] = np.inf
        h["methoxide"]["dft_total_energy"][...] = energy
    with pytest.warns(DroppedFramesWarning, match=r"spice_nan.h5: dropped 1 of 4 frame\(s\) with non-finite "
                      r"\(NaN/inf\) 'dft_total_energy' or 'dft_total_gradient' .*: 'methoxide' frame 1$"):
        assert len(read_spice(spice)) == 3


def write_spice(path: Path, nan_coord: bool = False, grad_shape_bad: bool = False) -> tuple[Path, dict]:
    rng = np.random.default_rng(3)
    mols = {
        "methoxide": (
            "[C:1]([O-:2])([H:3])([H:4])[H:5]",
            [6, 8, 1, 1, 1],
            "SPICE PubChem Set 1 Single Points v1.2",
        ),
        "ala dipeptide": (
            "[H:1][N:2]([H:3])[C:4]([H:5])=[O:6]",
            [1, 7, 1, 6, 1, 8],
            "SPICE Dipeptides Single Points",
        ),
    }
    out = {}
    with h5py.File(path, "w") as h:
        for name, (smiles, z, subset) in mols.items():
            g = h.create_group(name)
            n = len(z)
            R = rng.normal(size=(2, n, 3)) * 2.0  # bohr
            if nan_coord:
                R[0, 0, 0] = np.nan
            G = rng.normal(size=(2, n + (1 if grad_shape_bad else 0), 3)) * 0.01  # Hartree/bohr
            E = rng.normal(size=2) - 100.0
            g["atomic_numbers"] = np.array(z, dtype=np.int16)
            g["conformations"] = R.astype(np.float32)
            g["dft_total_energy"] = E
            g["dft_total_gradient"] = G.astype(np.float32)
            g["formation_energy"] = E + 99.5
            g.create_dataset("smiles", data=[smiles], dtype=h5py.string_dtype())
            g.create_dataset("subset", data=[subset], dtype=h5py.string_dtype())
            out[name] = {"R": R.astype(np.float32), "G": G.astype(np.float32), "E": E}
    return path, out


def test_spice_layout_units_and_gradient_sign(tmp_path: Path) -> None:
    p, m = write_spice(tmp_path / "spice_small.hdf5")
    cs = read_spice(p)
    assert infer_format(p) == "spice"
    # groups are read in sorted order: "ala dipeptide" (mol 0), "methoxide" (mol 1)
    np.testing.assert_array_equal(cs.n_atoms, [6, 6, 5, 5])
    np.testing.assert_array_equal(cs.mol_id, [0, 0, 1, 1])
    ref = m["methoxide"]
    np.testing.assert_allclose(cs.frame(2)["pos"], ref["R"][0].astype(np.float64) * BOHR_TO_ANGSTROM)
    np.testing.assert_allclose(
        cs.frame(3)["forces"], -ref["G"][1].astype(np.float64) * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
    )
    assert HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM == pytest.approx(51.4220675, rel=1e-8)
    np.testing.assert_allclose(cs.energy[2:], ref["E"] * HARTREE_TO_EV)
    np.testing.assert_allclose(cs.properties["formation_energy"][2:], (ref["E"] + 99.5) * HARTREE_TO_EV)
    np.testing.assert_array_equal(cs.properties["charge"], [0, 0, -1, -1])
    dip = read_spice(p, subsets=["dipeptides"])
    assert len(dip) == 2 and set(dip.n_atoms.tolist()) == {6}
    fe = read_spice(p, energy_key="formation_energy")
    np.testing.assert_allclose(fe.energy[2:], (ref["E"] + 99.5) * HARTREE_TO_EV)


@pytest.mark.parametrize(
    "smiles, charge",
    [
        ("CCO", 0),
        ("[NH4+]", 1),
        ("[O-]C(=O)C", -1),
        ("[Fe+2]", 2),
        ("[Cu++]", 2),
        ("[N+:1]([O-:2])=O", 0),
        ("[C@@H](N)O", 0),
    ],
)
def test_smiles_formal_charge(smiles: str, charge: int) -> None:
    assert smiles_formal_charge(smiles) == charge


def test_extxyz_roundtrip(tmp_path: Path) -> None:
    import ase.io

    rng = np.random.default_rng(4)
    cs = ConformationSet(
        z=[8, 1, 1, 8, 1, 1],
        pos=rng.normal(size=(6, 3)) + 5,
        n_atoms=[3, 3],
        energy=[-10.5, -10.25],
        forces=rng.normal(size=(6, 3)),
        cell=np.stack([np.eye(3) * 10, np.diag([9.0, 10.0, 11.0])]),
        properties={"temperature": np.array([300.0, 310.0]), "dip": rng.normal(size=(2, 3))},
        atom_properties={"charge_h": rng.normal(size=6)},
    )
    p = tmp_path / "frames.extxyz"
    ase.io.write(p, [cs.to_ase(i) for i in range(len(cs))], format="extxyz")
    back = read_ase(p)
    assert back.source == "ase:frames.extxyz"
    np.testing.assert_array_equal(back.z, cs.z)
    # extxyz stores 8 decimals
    np.testing.assert_allclose(back.pos, cs.pos, atol=1e-7)
    np.testing.assert_allclose(back.energy, cs.energy)
    np.testing.assert_allclose(back.forces, cs.forces, atol=1e-7)
    np.testing.assert_allclose(back.cell, cs.cell)
    np.testing.assert_allclose(back.properties["temperature"], [300.0, 310.0])
    np.testing.assert_allclose(back.properties["dip"], cs.properties["dip"])
    np.testing.assert_allclose(back.atom_properties["charge_h"], cs.atom_properties["charge_h"])
    assert read_dataset(p).n_frames == 2
    # energies / forces stored under custom keys in other units
    from ase import Atoms

    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    a.info["e_ha"] = -1.17
    a.arrays["f_ha_a"] = np.array([[0, 0, 0.1], [0, 0, -0.1]])
    q = tmp_path / "h2.xyz"
    ase.io.write(q, a, format="extxyz")
    h2 = read_ase(q, energy_key="e_ha", forces_key="f_ha_a", energy_unit="Hartree")
    assert h2.energy[0] == pytest.approx(-1.17 * HARTREE_TO_EV)
    assert h2.forces[1, 2] == pytest.approx(-0.1 * HARTREE_TO_EV)
    assert h2.cell is None


def test_ase_db_roundtrip(tmp_path: Path) -> None:
    import ase.db
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    p = tmp_path / "small.db"
    rng = np.random.default_rng(5)
    ref = []
    with ase.db.connect(p) as db:
        for i in range(4):
            a = Atoms("CH4" if i % 2 == 0 else "NH3", positions=rng.normal(size=(5 if i % 2 == 0 else 4, 3)))
            f = rng.normal(size=(len(a), 3))
            a.calc = SinglePointCalculator(a, energy=-100.0 - i, forces=f)
            db.write(a, mol_id=i // 2, e_kcal=-2300.0 - i, data={"dip": rng.normal(size=3)})
            ref.append((a, f))
    cs = read_ase_db(p)
    assert read_dataset(p).source == "ase_db:small.db"
    assert len(cs) == 4 and cs.n_atoms.tolist() == [5, 4, 5, 4]
    np.testing.assert_allclose(cs.energy, [-100, -101, -102, -103])
    np.testing.assert_allclose(cs.frame(3)["forces"], ref[3][1])
    np.testing.assert_allclose(cs.frame(2)["pos"], ref[2][0].positions)
    np.testing.assert_array_equal(cs.mol_id, [0, 0, 1, 1])
    assert cs.properties["dip"].shape == (4, 3) and cs.properties["e_kcal"][1] == -2301.0
    kc = read_ase_db(p, energy_key="e_kcal", energy_unit="kcal/mol", selection="mol_id=1")
    np.testing.assert_allclose(kc.energy, np.array([-2302.0, -2303.0]) * KCAL_PER_MOL_TO_EV)
    with pytest.raises(DataFormatError) as err:
        read_ase_db(p, energy_key="energy_U0")
    assert_error_names(err, "small.db", "'energy_U0'")


# ============================================================================ malformed input
def write_rmd17(path: Path, drop: str | None = None, **override) -> Path:
    rng = np.random.default_rng(6)
    d = {
        "nuclear_charges": np.array([6, 1, 1, 1, 1], dtype=np.uint8),
        "coords": rng.normal(size=(3, 5, 3)),
        "energies": rng.normal(size=3),
        "forces": rng.normal(size=(3, 5, 3)),
    }
    d.update(override)
    d.pop(drop, None)
    np.savez(path, **d)
    return path


def _nan_coords() -> np.ndarray:
    c = np.zeros((3, 5, 3))
    c[2, 4, 1] = np.nan
    return c


def _write_xtb(path: Path, **override) -> Path:
    d = {
        "n_atoms": np.array([2, 3], dtype=np.int32),
        "mol_id": np.array([0, 1], dtype=np.int32),
        "kind": np.array([0, 1], dtype=np.int8),
        "energy": np.array([-1.0, -2.0]),
        "z": np.array([1, 1, 8, 1, 1], dtype=np.int8),
        "pos": np.arange(15, dtype=np.float32).reshape(5, 3),
        "forces": np.zeros((5, 3), dtype=np.float32),
    }
    d.update(override)
    np.savez(path, **{k: v for k, v in d.items() if v is not None})
    return path


def _savez(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _deepmd_dir(root: Path, bad: str) -> Path:
    sysdir = root / "sys"
    (sysdir / "set.000").mkdir(parents=True)
    (sysdir / "type.raw").write_text("0 1 1\n")
    (sysdir / "type_map.raw").write_text("O\nH\n")
    coord = np.zeros((2, 9))
    if bad == "nan":
        coord[1, 4] = np.nan
    if bad != "no_coord":
        np.save(sysdir / "set.000" / "coord.npy", coord)
    np.save(sysdir / "set.000" / "energy.npy", np.zeros(2))
    np.save(sysdir / "set.000" / "force.npy", np.zeros((2, 8) if bad == "force_shape" else (2, 9)))
    return sysdir


MALFORMED = {
    # case: (writer(tmp_path) -> path, reader, expected substrings besides the file name)
    "rmd17_missing_coords": (lambda t: write_rmd17(t / "r.npz", drop="coords"), read_rmd17, ["'coords'"]),
    "rmd17_forces_shape": (
        lambda t: write_rmd17(t / "r.npz", forces=np.zeros((3, 4, 3))),
        read_rmd17,
        ["'forces'", "(3, 4, 3)"],
    ),
    "rmd17_nan_coords": (
        lambda t: write_rmd17(t / "r.npz", coords=_nan_coords()),
        read_rmd17,
        ["'coords'", "frame 2"],
    ),
    "md17_missing_F": (lambda t: write_md17(t / "m.npz", F=None), read_md17, ["'F'"]),
    "md17_nan_R": (lambda t: write_md17(t / "m.npz", nan_frame=1), read_md17, ["'R'", "frame 1"]),
    "md17_energy_shape": (lambda t: write_md17(t / "m.npz", E=np.zeros(3)), read_md17, ["'E'"]),
    "qm7x_forces_shape": (
        lambda t: _savez(
            t / "q.npz",
            R=np.ones((2, 4, 3)),
            z=np.ones((2, 4), int),
            E=np.zeros((2, 1)),
            F=np.ones((2, 3, 3)),
        ),
        read_qm7x,
        ["'F'"],
    ),
    "qm7x_missing_totFOR": (
        lambda t: _savez(
            t / "qm7x_1.npz",
            atXYZ=np.ones((2, 4, 3)),
            atNUM=np.ones((2, 4), int),
            **{"ePBE0+MBD": np.zeros((2, 1))},
        ),
        read_qm7x,
        ["'totFOR'"],
    ),
    "xtb_pos_shape": (lambda t: _write_xtb(t / "x.npz", pos=np.zeros((4, 3))), read_xtb_corpus, ["'pos'"]),
    "xtb_missing_kind": (lambda t: _write_xtb(t / "x.npz", kind=None), read_xtb_corpus, ["'kind'"]),
    "xtb_nan_pos": (
        lambda t: _write_xtb(t / "x.npz", pos=np.full((5, 3), np.nan)),
        read_xtb_corpus,
        ["'pos'"],
    ),
    "deepmd_missing_coord": (lambda t: _deepmd_dir(t, "no_coord"), read_deepmd, ["coord.npy"]),
    "deepmd_force_shape": (lambda t: _deepmd_dir(t, "force_shape"), read_deepmd, ["force.npy"]),
    "deepmd_nan_coord": (lambda t: _deepmd_dir(t, "nan"), read_deepmd, ["coord.npy", "'coord'"]),
    "spice_nan_conformations": (
        lambda t: write_spice(t / "s.h5", nan_coord=True)[0],
        read_spice,
        ["'conformations'"],
    ),
    "spice_gradient_shape": (
        lambda t: write_spice(t / "s.h5", grad_shape_bad=True)[0],
        read_spice,
        ["'dft_total_gradient'"],
    ),
    "ani1x_missing_forces": (
        lambda t: write_ani1x(t / "a.h5")[0],
        lambda p: read_ani1x(p, forces_key="wb97x_tz.forces"),
        ["'wb97x_tz.forces'", "CH4"],
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_names_file_and_key(case: str, tmp_path: Path) -> None:
    writer, reader, parts = MALFORMED[case]
    path = writer(tmp_path)
    with pytest.raises(DataFormatError) as err:
        reader(path)
    assert_error_names(err, path.name, *parts)


def test_malformed_ase_files(tmp_path: Path) -> None:
    import ase.io
    from ase import Atoms

    a = Atoms("H2O", positions=[[0, 0, 0], [0, 0, 1], [np.nan, 0, 0]])
    p = tmp_path / "nan.extxyz"
    ase.io.write(p, a, format="extxyz")
    with pytest.raises(DataFormatError) as err:
        read_ase(p)
    assert_error_names(err, "nan.extxyz", "'positions'")
    b = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]])
    q = tmp_path / "h2.extxyz"
    ase.io.write(q, b, format="extxyz")
    with pytest.raises(DataFormatError) as err:
        read_ase(q, energy_key="my_energy")
    assert_error_names(err, "h2.extxyz", "'my_energy'")
    with pytest.raises(DataFormatError) as err:
        read_qm9(q)
    assert_error_names(err, "h2.extxyz", "'U0'")


def test_unknown_npz_layout_and_format(tmp_path: Path) -> None:
    p = tmp_path / "other.npz"
    np.savez(p, foo=np.zeros(3))
    with pytest.raises(DataFormatError) as err:
        read_dataset(p)
    assert_error_names(err, "other.npz", "'foo'")
    with pytest.raises(ValueError, match="unknown format"):
        read_dataset(p, format="nope")


@pytest.mark.parametrize(
    "reader",
    [
        read_rmd17,
        read_md17,
        read_qm7x,
        read_qm9,
        read_ase,
        read_ase_db,
        read_deepmd,
        read_xtb_corpus,
        read_ani1x,
        read_spice,
        read_dataset,
    ],
)
def test_missing_file_raises_file_not_found(reader, tmp_path: Path) -> None:
    missing = tmp_path / "does_not_exist.npz"
    with pytest.raises(FileNotFoundError) as err:
        reader(missing)
    assert str(missing) in str(err.value)


# ============================================================================ fuzzing
_SUFFIXES = [".npz", ".h5", ".xyz", ".extxyz", ".db", ".bin", ".traj"]
_MAGIC = [
    b"",
    b"PK\x03\x04",
    b"\x89HDF\r\n\x1a\n",
    b"SQLite format 3\x00",
    b"\x93NUMPY",
    b"3\nProperties=species:S:1:pos:R:3\n",
]


@settings(max_examples=25, deadline=None)
@given(suffix=st.sampled_from(_SUFFIXES), magic=st.sampled_from(_MAGIC), payload=st.binary(max_size=1024))
def test_random_bytes_raise_data_format_error(suffix: str, magic: bytes, payload: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"random{suffix}"
        p.write_bytes(magic + payload)
        with pytest.raises(DataFormatError) as err:
            read_dataset(p)
        assert p.name in str(err.value)


@pytest.mark.parametrize(
    "rel, reader",
    [
        ("rmd17/rmd17_ethanol_test_01.npz", read_rmd17),
        ("qm7x/qm7x_226.npz", read_qm7x),
        ("qm9/qm9_500_U0_eV.db", read_qm9),
        ("qm9/test_qm9_20.db", read_ase_db),
        ("qm9/qm9_reduced_100.xyz", read_qm9),
        ("xtb/starts.npz", xtb_start_sources),
    ],
)
def test_truncated_real_files(rel: str, reader, tmp_path: Path) -> None:
    src = shared(rel)
    data = src.read_bytes()
    for frac in (0.5, 0.97):
        p = tmp_path / f"trunc_{frac}" / src.name
        p.parent.mkdir()
        p.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(DataFormatError) as err:
            reader(p)
        assert p.name in str(err.value)


def test_truncated_deepmd_and_hdf5(tmp_path: Path) -> None:
    src = shared("water/data_0")
    dst = tmp_path / "data_0"
    shutil.copytree(src, dst)
    coord = dst / "set.000" / "coord.npy"
    coord.write_bytes(coord.read_bytes()[:5000])
    with pytest.raises(DataFormatError) as err:
        read_deepmd(dst)
    assert_error_names(err, "coord.npy")
    h5 = tmp_path / "ani.h5"
    write_ani1x(h5)
    data = h5.read_bytes()
    h5.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError) as err:
        read_dataset(h5)
    assert_error_names(err, "ani.h5")
