"""GFN2-xTB pretraining corpus reader (xtb_shard*.npz shards, starts.npz origins); Å, eV, eV/Å as stored."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

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


def _xtb_files(p: Path) -> list[Path]:
    if p.is_dir():
        files = sorted(p.glob("xtb_shard*.npz"))
        if not files:
            raise DataFormatError(f"{p.name}: no 'xtb_shard*.npz' in the folder")
        return files
    return [p]


def read_xtb_corpus(
    path: PathLike,
    kinds: Sequence[int] = (0, 1, 2),
    exclude_sources: Sequence[str] = (),
) -> ConformationSet:
    """Read the GFN2-xTB pretraining corpus (concatenated layout; Å, eV, eV/Å).

    Keys per frame: ``n_atoms``, ``mol_id`` (index into ``starts.npz``), ``kind`` (0 relaxed,
    1 Langevin MD, 2 random displacement), ``energy`` [F] eV; per atom: ``z``, ``pos`` [A,3] Å,
    ``forces`` [A,3] eV/Å. ``path`` is a shard file or a folder of ``xtb_shard*.npz``.
    Only frames whose kind is in ``kinds`` are kept; kind 0 -> ``equilibrium=True``;
    ``properties['kind']`` keeps the kind. ``mol_id`` is kept as in the file (NOT renumbered),
    so ``xtb_start_sources(path)[cs.mol_id]`` gives each frame's origin. ``exclude_sources``
    drops molecules whose start source matches a glob, e.g. ``("rmd17-*",)``.
    """
    p = _existing(path)
    files = _xtb_files(p)
    excluded_ids = None
    if exclude_sources:
        srcs = xtb_start_sources(p)
        bad = np.array([any(fnmatch.fnmatch(s, pat) for pat in exclude_sources) for s in srcs], dtype=bool)
        excluded_ids = np.flatnonzero(bad)
    parts = [_read_xtb_shard(fp, tuple(int(k) for k in kinds), excluded_ids) for fp in files]
    if len(parts) == 1:
        return _finish(parts[0])
    mol_ids = np.concatenate([q.mol_id for q in parts])
    cs = ConformationSet.concatenate(parts)
    cs.mol_id = mol_ids
    cs.source = f"xtb:{p.name}"
    return _finish(cs)


def _read_xtb_shard(p: Path, kinds: tuple[int, ...], excluded_ids: np.ndarray | None) -> ConformationSet:
    name = p.name
    with _guard(name, "xTB corpus npz"), _open_npz(p, name) as f:
        n_atoms = _get(f, name, "n_atoms", ndim=1, kinds="iu").astype(np.int64)
        n_frames = len(n_atoms)
        mol_id = _get(f, name, "mol_id", ndim=1, kinds="iu").astype(np.int64)
        _check_shape(mol_id, (n_frames,), name, "mol_id", like="n_atoms")
        kind = _get(f, name, "kind", ndim=1, kinds="iu").astype(np.int64)
        _check_shape(kind, (n_frames,), name, "kind", like="n_atoms")
        energy = _get(f, name, "energy", ndim=(1, 2))
        energy = _frame_vector(energy, name, "energy", n_frames)
        z = _get(f, name, "z", ndim=1, kinds="iu").astype(np.int64)
        n_total = int(n_atoms.sum())
        if n_frames and n_atoms.min() < 1:
            raise DataFormatError(f"{name}: key 'n_atoms' has a frame with {int(n_atoms.min())} atoms")
        if len(z) != n_total:
            raise DataFormatError(f"{name}: key 'z' has {len(z)} atoms but 'n_atoms' sums to {n_total}")
        pos = _get(f, name, "pos", ndim=2)
        _check_shape(pos, (n_total, 3), name, "pos", like="z")
        forces = _get(f, name, "forces", ndim=2)
        _check_shape(forces, (n_total, 3), name, "forces", like="pos")
        keep = np.isin(kind, np.asarray(kinds, dtype=np.int64))
        if excluded_ids is not None:
            keep &= ~np.isin(mol_id, excluded_ids)
        atom_keep = np.repeat(keep, n_atoms)
        pos = pos[atom_keep].astype(np.float64)
        forces = forces[atom_keep].astype(np.float64)
        if not np.isfinite(pos).all():
            raise DataFormatError(f"{name}: key 'pos' has non-finite coordinates")
        if not nonfinite_labels_accepted() and not np.isfinite(forces).all():
            bad_atom = ~np.isfinite(forces).all(axis=1)
            first = int(np.repeat(np.arange(int(keep.sum())), n_atoms[keep])[bad_atom][0])
            raise DataFormatError(f"{name}: key 'forces' has non-finite values (first: frame {first} of those read)")
        _check_finite_frames(energy[keep], name, "energy", "energies")
        kind = kind[keep]
        cs = ConformationSet(
            z=z[atom_keep],
            pos=pos,
            n_atoms=n_atoms[keep],
            energy=energy[keep],
            forces=forces,
            equilibrium=kind == 0,
            mol_id=mol_id[keep],
            properties={"kind": kind},
            source=f"xtb:{name}",
        )
        return cs


def xtb_start_sources(path: PathLike) -> np.ndarray:
    """Per-molecule origin strings of the xTB corpus (``'qm9'``, ``'qm7x'``, ``'rmd17-<mol>'``).

    ``path`` is ``starts.npz``, a shard next to it, or their folder. Index with a corpus
    ``mol_id``: ``xtb_start_sources(p)[cs.mol_id]``.
    """
    p = Path(path)
    if p.is_dir():
        starts = p / "starts.npz"
    elif p.name == "starts.npz":
        starts = p
    else:
        starts = p.parent / "starts.npz"
    starts = _existing(starts)
    name = starts.name
    with _guard(name, "xTB starts npz"), _open_npz(starts, name) as f:
        src = _get(f, name, "source", ndim=1, kinds="U")
        return src.astype(str)
