"""rMD17 (Christensen & von Lilienfeld 2020) and original MD17 / sGDML npz readers; kcal/mol, kcal/mol/Å -> eV, eV/Å."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...units import KCAL_PER_MOL_PER_ANGSTROM_TO_EV_PER_ANGSTROM, KCAL_PER_MOL_TO_EV, energy_factor, length_factor
from ..conformations import ConformationSet
from ..errors import DataFormatError
from ._common import (
    PathLike,
    _check_finite_frames,
    _check_shape,
    _existing,
    _finish,
    _fixed_size_set,
    _frame_vector,
    _get,
    _guard,
    _open_npz,
    _select,
)


def read_rmd17(
    path: PathLike,
    max_frames: int | None = None,
    indices: Any = None,
    old_labels: bool = False,
) -> ConformationSet:
    """Read a revised-MD17 npz (Christensen & von Lilienfeld 2020).

    File keys: ``nuclear_charges`` [N], ``coords`` [F,N,3] Å, ``energies`` [F] kcal/mol,
    ``forces`` [F,N,3] kcal/mol/Å, plus ``old_indices`` [F] (frame index in original MD17) and
    ``old_energies`` / ``old_forces`` (original MD17 PBE+vdW-TS labels; used if ``old_labels``).
    Returns energies in eV, forces in eV/Å, ``mol_id = 0`` for all frames,
    ``properties['old_index']`` when present. ``indices`` (int array or bool mask) selects
    frames first, then ``max_frames`` keeps the first ones of that selection.
    """
    p = _existing(path)
    name = p.name
    ekey, fkey = ("old_energies", "old_forces") if old_labels else ("energies", "forces")
    with _guard(name, "rMD17 npz"), _open_npz(p, name) as f:
        z = _get(f, name, "nuclear_charges", ndim=1, kinds="iu")
        coords = _get(f, name, "coords", ndim=3)
        n_frames, n = coords.shape[:2]
        _check_shape(coords, (n_frames, len(z), 3), name, "coords")
        energies = _frame_vector(_get(f, name, ekey), name, ekey, n_frames)
        forces = _get(f, name, fkey)
        _check_shape(forces, coords.shape, name, fkey, like="coords")
        props = {}
        if "old_indices" in f.files:
            oi = _get(f, name, "old_indices", kinds="iu")
            _check_shape(oi, (n_frames,), name, "old_indices")
            props["old_index"] = oi.astype(np.int64)
        sel = _select(n_frames, indices, max_frames)
        coords, energies, forces = coords[sel], energies[sel], forces[sel]
        props = {k: v[sel] for k, v in props.items()}
        _check_finite_frames(coords, name, "coords")
        _check_finite_frames(energies, name, ekey, "energies")
        _check_finite_frames(forces, name, fkey, "forces")
        cs = _fixed_size_set(
            z,
            coords.astype(np.float64),
            energies * KCAL_PER_MOL_TO_EV,
            forces.astype(np.float64) * KCAL_PER_MOL_PER_ANGSTROM_TO_EV_PER_ANGSTROM,
            source=f"rmd17:{name}",
            properties=props,
        )
        return _finish(cs)


def read_md17(
    path: PathLike,
    max_frames: int | None = None,
    indices: Any = None,
    energy_unit: str = "kcal/mol",
    length_unit: str = "Angstrom",
) -> ConformationSet:
    """Read an original MD17 / sGDML npz: ``R`` [F,N,3] Å, ``z`` [N], ``E`` [F] or [F,1] kcal/mol,
    ``F`` [F,N,3] kcal/mol/Å (units overridable). Returns eV, eV/Å, ``mol_id = 0``."""
    p = _existing(path)
    name = p.name
    e_fac = energy_factor(energy_unit)
    l_fac = length_factor(length_unit)
    with _guard(name, "MD17 npz"), _open_npz(p, name) as f:
        z = _get(f, name, "z", kinds="iu")
        if z.ndim != 1:
            raise DataFormatError(
                f"{name}: key 'z' has shape {z.shape}, expected [N] (a 2-D 'z' is the zero-padded "
                "QM7-X layout: use read_qm7x)"
            )
        R = _get(f, name, "R", ndim=3)
        n_frames = R.shape[0]
        _check_shape(R, (n_frames, len(z), 3), name, "R")
        E = _frame_vector(_get(f, name, "E"), name, "E", n_frames)
        F = _get(f, name, "F")
        _check_shape(F, R.shape, name, "F", like="R")
        sel = _select(n_frames, indices, max_frames)
        R, E, F = R[sel], E[sel], F[sel]
        _check_finite_frames(R, name, "R")
        _check_finite_frames(E, name, "E", "energies")
        _check_finite_frames(F, name, "F", "forces")
        cs = _fixed_size_set(
            z,
            R.astype(np.float64) * l_fac,
            E * e_fac,
            F.astype(np.float64) * (e_fac / l_fac),
            source=f"md17:{name}",
        )
        return _finish(cs)
