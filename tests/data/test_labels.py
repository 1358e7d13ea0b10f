"""forcefield_et.data.labels: which frames lack the labels an objective needs, and readers that
pass non-finite labels through only inside ``accept_nonfinite_labels``."""

from __future__ import annotations

import numpy as np
import pytest

from forcefield_et.data import ConformationSet, DataFormatError, read_rmd17
from forcefield_et.data.labels import accept_nonfinite_labels, invalid_label_frames, nonfinite_labels_accepted


def write_rmd17(path, n_frames=5, bad_energy=(), bad_forces=()):
    rng = np.random.default_rng(0)
    energies = rng.normal(-1000, 1, n_frames)
    forces = rng.normal(0, 10, (n_frames, 3, 3))
    for i in bad_energy:
        energies[i] = np.inf
    for i in bad_forces:
        forces[i, 1, 2] = np.nan
    np.savez(path, nuclear_charges=np.array([8, 1, 1]), coords=rng.normal(0, 1, (n_frames, 3, 3)),
             energies=energies, forces=forces)
    return path


def test_readers_refuse_nonfinite_labels_by_default_and_pass_them_inside_the_block(tmp_path):
    path = write_rmd17(tmp_path / "water.npz", bad_energy=(3,), bad_forces=(1,))
    with pytest.raises(DataFormatError, match=r"water\.npz.*first: frame 3"):
        read_rmd17(path)
    with accept_nonfinite_labels():
        assert nonfinite_labels_accepted()
        data = read_rmd17(path)
    assert not nonfinite_labels_accepted()
    assert len(data) == 5
    masks = invalid_label_frames(data, "energy_forces")
    assert np.flatnonzero(masks["energy"]).tolist() == [3] and np.flatnonzero(masks["forces"]).tolist() == [1]
    assert list(invalid_label_frames(data, "forces")) == ["forces"]
    assert invalid_label_frames(data, "equilibrium") == {}


def test_validate_names_the_first_frame_with_an_infinite_label():
    data = ConformationSet(z=[1, 1, 1, 1], pos=np.zeros((4, 3)) + np.arange(4)[:, None], n_atoms=[2, 2],
                           energy=[0.0, np.inf], forces=np.zeros((4, 3)))
    with pytest.raises(DataFormatError, match=r"'energy' is infinite in 1 frame\(s\) \(first: frame 1\)"):
        data.validate()
    with accept_nonfinite_labels():
        data.validate()


def test_unknown_objective_is_an_error():
    data = ConformationSet(z=[1], pos=np.zeros((1, 3)), n_atoms=[1])
    with pytest.raises(ValueError, match="unknown objective"):
        invalid_label_frames(data, "dipoles")
