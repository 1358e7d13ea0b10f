"""QM7-X npz reader (Hoja et al. 2021, PBE0+MBD; padded and single-molecule layouts); Å, eV, eV/Å as stored."""

from __future__ import annotations

import re

import numpy as np

from ..conformations import ConformationSet
from ..errors import DataFormatError
from ..labels import nonfinite_labels_accepted
from ._common import (
    PathLike,
    _check_finite_frames,
    _check_shape,
    _existing,
    _finish,
    _frame_vector,
    _get,
    _guard,
    _open_npz,
)


def read_qm7x(
    path: PathLike, energy_key: str | None = None, forces_key: str | None = None
) -> ConformationSet:
    """Read a QM7-X npz in one of two layouts (both Å, eV, eV/Å, PBE0+MBD).

    * Zero-padded multi-molecule layout (``qm7x_250_small.npz``): ``R`` [F,M,3], ``z`` [F,M]
      (``z == 0`` is padding), ``E`` [F,1], ``F`` [F,M,3]. The file stores no molecule id, so
      ``mol_id`` numbers the distinct atomic-number sequences (rows of ``z``) in order of first
      appearance: frames of one molecule share it; isomers written with the same atom order
      are grouped too (conservative for held-out-molecule splits).
    * Single-molecule layout (``qm7x_<id>.npz``): ``atXYZ`` [F,N,3], ``atNUM`` [F,N],
      ``ePBE0+MBD`` [F,1], ``totFOR`` [F,N,3], plus ``hCHG`` [F,N,1] (Hirshfeld charges, e),
      ``hRAT`` [F,N,1] (Hirshfeld volume ratios), ``vDIP`` [F,3] (dipole, e·Å). ``mol_id`` is
      the QM7-X molecule index parsed from the file name (``qm7x_226.npz`` -> 226), else 0.

    Other arrays are kept in raw units: [F,N,...] ones in ``atom_properties`` (trailing 1
    squeezed), [F,...] ones in ``properties``. Neither layout has an equilibrium flag; a
    boolean key ``equilibrium`` [F] is honoured if present, else all frames are False.
    """
    p = _existing(path)
    name = p.name
    with _guard(name, "QM7-X npz"), _open_npz(p, name) as f:
        files = set(f.files)
        if "atXYZ" in files or "atNUM" in files:
            zkey, rkey = "atNUM", "atXYZ"
            ekey = energy_key or "ePBE0+MBD"
            fkey = forces_key or "totFOR"
            m = re.search(r"qm7x_(\d+)$", p.stem)
            single_id = int(m.group(1)) if m else 0
        elif "R" in files and "z" in files:
            zkey, rkey = "z", "R"
            ekey = energy_key or "E"
            fkey = forces_key or "F"
            single_id = None
        else:
            raise DataFormatError(
                f"{name}: missing key 'R'/'z' (padded layout) or 'atXYZ'/'atNUM' (single-molecule layout) "
                f"(found: {sorted(files)})"
            )
        R = _get(f, name, rkey, ndim=3)
        n_frames, m_max = R.shape[:2]
        z = _get(f, name, zkey, kinds="iu")
        if z.ndim == 1:  # one z row for all frames
            z = np.broadcast_to(z, (n_frames, z.shape[0]))
        _check_shape(z, (n_frames, m_max), name, zkey, like=rkey)
        _check_shape(R, (n_frames, m_max, 3), name, rkey)
        E = _frame_vector(_get(f, name, ekey), name, ekey, n_frames)
        F = _get(f, name, fkey)
        _check_shape(F, R.shape, name, fkey, like=rkey)
        mask = z > 0
        n_atoms = mask.sum(axis=1)
        if n_frames and n_atoms.min() == 0:
            raise DataFormatError(
                f"{name}: key {zkey!r}: frame {int(np.argmin(n_atoms))} has no atoms (all z == 0)"
            )
        if (z < 0).any():
            raise DataFormatError(f"{name}: key {zkey!r} has negative atomic numbers")
        pos = R[mask]
        if not np.isfinite(pos).all():
            bad = ~np.isfinite(np.where(mask[..., None], R, 0.0)).all(axis=(1, 2))
            raise DataFormatError(
                f"{name}: key {rkey!r} has non-finite coordinates in {int(bad.sum())} frame(s) "
                f"(first: frame {int(np.argmax(bad))})"
            )
        _check_finite_frames(E, name, ekey, "energies")
        forces = F[mask].astype(np.float64)
        if not nonfinite_labels_accepted() and not np.isfinite(forces).all():
            bad = ~np.isfinite(np.where(mask[..., None], F, 0.0)).all(axis=(1, 2))
            raise DataFormatError(
                f"{name}: key {fkey!r} has non-finite forces in {int(bad.sum())} frame(s) "
                f"(first: frame {int(np.argmax(bad))})"
            )
        if single_id is None:
            _, first, inv = np.unique(z, axis=0, return_index=True, return_inverse=True)
            rank = np.empty(len(first), dtype=np.int64)
            rank[np.argsort(first)] = np.arange(len(first))
            mol_id = rank[np.asarray(inv).reshape(-1)]
        else:
            mol_id = np.full(n_frames, single_id, dtype=np.int64)
        equilibrium = None
        used = {zkey, rkey, ekey, fkey}
        if "equilibrium" in files:
            eq = _get(f, name, "equilibrium")
            _check_shape(eq.reshape(-1), (n_frames,), name, "equilibrium")
            equilibrium = eq.reshape(-1).astype(bool)
            used.add("equilibrium")
        props: dict[str, np.ndarray] = {}
        aprops: dict[str, np.ndarray] = {}
        for key in sorted(files - used):
            try:
                arr = np.asarray(f[key])
            except Exception as e:
                raise DataFormatError(f"{name}: key {key!r} cannot be read ({type(e).__name__}: {e})") from e
            if arr.dtype.kind not in "biuf" or arr.ndim == 0 or arr.shape[0] != n_frames:
                continue
            if arr.ndim >= 3 and arr.shape[1] == m_max:  # per-atom [F, N, k]
                a = arr[mask]
                aprops[key] = a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a
            else:
                props[key] = arr[:, 0] if arr.ndim == 2 and arr.shape[1] == 1 else arr
        cs = ConformationSet(
            z=z[mask],
            pos=pos.astype(np.float64),
            n_atoms=n_atoms,
            energy=E,
            forces=forces,
            equilibrium=equilibrium,
            mol_id=mol_id,
            properties=props,
            source=f"qm7x:{name}",
            atom_properties=aprops,
        )
        return _finish(cs)
