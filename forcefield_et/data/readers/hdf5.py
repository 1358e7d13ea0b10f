"""HDF5 readers: ANI-1x (Hartree, Å) and SPICE (Hartree, bohr) release layouts; -> Å, eV, eV/Å."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ...units import BOHR_TO_ANGSTROM, HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, HARTREE_TO_EV
from ..conformations import ConformationSet
from ..errors import DataFormatError, DroppedFramesWarning
from ._common import PathLike, _existing, _finish, _fixed_size_set, _guard


@contextmanager
def _open_h5(p: Path, name: str) -> Iterator[Any]:
    import h5py

    if p.is_dir():
        raise DataFormatError(f"{name}: is a directory, not an HDF5 file")
    try:
        h = h5py.File(p, "r")
    except Exception as e:
        raise DataFormatError(f"{name}: not a readable HDF5 file ({type(e).__name__}: {e})") from e
    try:
        yield h
    finally:
        h.close()


def _h5_molecule_groups(h: Any, marker: str) -> list[tuple[str, Any]]:
    """All groups (recursively, sorted by name) that contain the dataset ``marker``."""
    import h5py

    out: list[tuple[str, Any]] = []

    def visit(g: Any) -> None:
        for key in sorted(g.keys()):
            item = g[key]
            if isinstance(item, h5py.Group):
                if marker in item:
                    out.append((item.name.lstrip("/"), item))
                else:
                    visit(item)

    visit(h)
    return out


@contextmanager
def _h5_molecules(path: PathLike, kind: str, marker: str) -> Iterator[tuple[str, list[tuple[str, Any]]]]:
    """Open an HDF5 release file and yield its name and its molecule groups (those holding the dataset
    ``marker``); errors inside name the file and the format ``kind``."""
    p = _existing(path)
    name = p.name
    with _guard(name, kind), _open_h5(p, name) as h:
        groups = _h5_molecule_groups(h, marker)
        if not groups:
            raise DataFormatError(f"{name}: no group with key {marker!r} (top-level keys: {sorted(h.keys())[:20]})")
        yield name, groups


MAX_LISTED_DROPPED = 12  # dropped frames named in the warning; the rest are counted


class _DroppedFrames:
    """Frames a reader leaves out for non-finite labels, reported once per file as a
    :class:`~forcefield_et.data.errors.DroppedFramesWarning`."""

    def __init__(self) -> None:
        self.total = 0
        self.dropped: list[tuple[str, np.ndarray]] = []

    def add(self, gname: str, keep: np.ndarray) -> None:
        self.total += len(keep)
        if not keep.all():
            self.dropped.append((gname, np.flatnonzero(~keep)))

    def warn(self, name: str, labels: str) -> None:
        import warnings

        count = sum(len(frames) for _, frames in self.dropped)
        if not count:
            return
        listed = [f"{gname!r} frame {int(i)}" for gname, frames in self.dropped for i in frames][:MAX_LISTED_DROPPED]
        more = f", and {count - len(listed)} more" if count > len(listed) else ""
        warnings.warn(
            f"{name}: dropped {count} of {self.total} frame(s) with non-finite (NaN/inf) {labels} (labels missing at "
            f"that level): {', '.join(listed)}{more}",
            DroppedFramesWarning,
            stacklevel=3,
        )


def _h5_get(g: Any, name: str, gname: str, key: str, ndim: int | None = None) -> np.ndarray:
    if key not in g:
        raise DataFormatError(f"{name}: group {gname!r}: missing key {key!r} (found: {sorted(g.keys())})")
    try:
        arr = np.asarray(g[key][()])
    except Exception as e:
        raise DataFormatError(
            f"{name}: group {gname!r}: key {key!r} cannot be read ({type(e).__name__}: {e})"
        ) from e
    if arr.dtype.kind not in "biuf":
        raise DataFormatError(f"{name}: group {gname!r}: key {key!r} has dtype {arr.dtype}, expected numeric")
    if ndim is not None and arr.ndim != ndim:
        raise DataFormatError(
            f"{name}: group {gname!r}: key {key!r} has shape {arr.shape}, expected {ndim}-D"
        )
    return arr


def _h5_str(g: Any, key: str) -> str | None:
    if key not in g:
        return None
    v = g[key][()]
    v = np.asarray(v).reshape(-1)
    if v.size == 0:
        return None
    s = v[0]
    return s.decode() if isinstance(s, bytes) else str(s)


def _molecule_frames(
    name: str,
    gname: str,
    z: np.ndarray,
    R: np.ndarray,
    rkey: str,
    E: np.ndarray | None,
    ekey: str | None,
    F: np.ndarray | None,
    fkey: str | None,
) -> np.ndarray:
    """Shape checks for one HDF5 molecule group; returns the mask of frames with finite labels."""
    n_frames = R.shape[0]
    if z.ndim != 1:
        raise DataFormatError(
            f"{name}: group {gname!r}: key 'atomic_numbers' has shape {z.shape}, expected [N]"
        )
    if R.shape != (n_frames, len(z), 3):
        raise DataFormatError(
            f"{name}: group {gname!r}: key {rkey!r} has shape {R.shape}, expected [F, {len(z)}, 3]"
        )
    keep = np.ones(n_frames, dtype=bool)
    if E is not None:
        if E.ndim == 2 and E.shape[1] == 1:
            E = E[:, 0]
        if E.shape != (n_frames,):
            raise DataFormatError(
                f"{name}: group {gname!r}: key {ekey!r} has shape {E.shape}, expected ({n_frames},)"
            )
        keep &= np.isfinite(E)
    if F is not None:
        if F.shape != R.shape:
            raise DataFormatError(
                f"{name}: group {gname!r}: key {fkey!r} has shape {F.shape}, expected {R.shape} like {rkey!r}"
            )
        keep &= np.isfinite(F.reshape(n_frames, -1)).all(axis=1)
    bad = ~np.isfinite(R[keep].reshape(int(keep.sum()), -1)).all(axis=1)
    if bad.any():
        raise DataFormatError(f"{name}: group {gname!r}: key {rkey!r} has non-finite coordinates")
    return keep


def read_ani1x(
    path: PathLike,
    energy_key: str = "wb97x_dz.energy",
    forces_key: str | None = "wb97x_dz.forces",
    max_groups: int | None = None,
) -> ConformationSet:
    """Read the ANI-1x HDF5 release layout.

    One group per formula (e.g. ``C2H6O``, nested groups are searched too) with datasets
    ``atomic_numbers`` [N], ``coordinates`` [F,N,3] Å, ``<level>.energy`` [F] Hartree and
    ``<level>.forces`` [F,N,3] Hartree/Å (``energy_key``/``forces_key`` pick the level, e.g.
    ``'ccsd(t)_cbs.energy'`` with ``forces_key=None``). Frames whose selected energy or forces
    contain NaN (label missing at that level) are dropped, with a
    :class:`~forcefield_et.data.errors.DroppedFramesWarning` saying how many and which. Returns eV, eV/Å;
    ``mol_id`` = group index (a formula group can hold several isomers).
    """
    parts = []
    dropped = _DroppedFrames()
    with _h5_molecules(path, "ANI-1x HDF5", "coordinates") as (name, groups):
        for gi, (gname, g) in enumerate(groups[:max_groups] if max_groups is not None else groups):
            z = _h5_get(g, name, gname, "atomic_numbers", ndim=1).astype(np.int64)
            R = _h5_get(g, name, gname, "coordinates", ndim=3)
            E = _h5_get(g, name, gname, energy_key)
            F = _h5_get(g, name, gname, forces_key) if forces_key else None
            keep = _molecule_frames(name, gname, z, R, "coordinates", E, energy_key, F, forces_key)
            dropped.add(gname, keep)
            if not keep.any():
                continue
            E = E.reshape(-1)[keep].astype(np.float64) * HARTREE_TO_EV
            Fk = None if F is None else F[keep].astype(np.float64) * HARTREE_TO_EV  # Hartree/Å -> eV/Å
            parts.append(_fixed_size_set(z, R[keep].astype(np.float64), E, Fk, f"ani1x:{name}", mol_id=gi))
    if not parts:
        raise DataFormatError(
            f"{name}: no frame has finite {energy_key!r}" + (f"/{forces_key!r}" if forces_key else "")
        )
    dropped.warn(name, f"{energy_key!r}" + (f" or {forces_key!r}" if forces_key else ""))
    return _finish(_join_molecules(parts, f"ani1x:{name}"))


def _join_molecules(parts: list[ConformationSet], source: str) -> ConformationSet:
    """Concatenate per-group sets keeping their (already distinct) mol_ids."""
    mol_ids = np.concatenate([q.mol_id for q in parts])
    cs = ConformationSet.concatenate(parts)
    cs.mol_id = mol_ids
    cs.source = source
    return cs


_SMILES_BRACKET = re.compile(r"\[([^\]]*)\]")
_SMILES_CHARGE = re.compile(r"([+-]+)(\d*)$")


def smiles_formal_charge(smiles: str) -> int:
    """Total formal charge of a SMILES string (sum of the charges in its bracket atoms)."""
    total = 0
    for content in _SMILES_BRACKET.findall(smiles):
        content = content.split(":")[0]  # drop atom-map class
        m = _SMILES_CHARGE.search(content)
        if not m:
            continue
        signs, digits = m.group(1), m.group(2)
        sign = 1 if signs[0] == "+" else -1
        total += sign * (int(digits) if digits else len(signs))
    return total


def read_spice(
    path: PathLike,
    energy_key: str | None = None,
    subsets: Sequence[str] | None = None,
    max_molecules: int | None = None,
) -> ConformationSet:
    """Read the SPICE HDF5 layout (Eastman et al. 2023; versions 1 and 2).

    One group per molecule with ``atomic_numbers`` [N], ``conformations`` [F,N,3] in **bohr**,
    ``dft_total_energy`` and ``formation_energy`` [F] in Hartree, ``dft_total_gradient``
    [F,N,3] in Hartree/bohr, ``smiles`` and optionally ``subset`` (string datasets).
    Returns positions in Å, ``energy`` = ``energy_key`` (default ``dft_total_energy``, or
    ``formation_energy`` if the file has no total energy) in eV, and
    ``forces = -gradient`` in eV/Å. ``properties``: ``formation_energy`` (eV, when present
    and not the energy) and ``charge`` (total formal charge from the SMILES, e).
    ``subsets`` keeps only groups whose ``subset`` matches (case-insensitive substring).
    Frames with non-finite energy or gradient are dropped, with a
    :class:`~forcefield_et.data.errors.DroppedFramesWarning` saying how many and which;
    ``mol_id`` = group index.
    """
    parts = []
    dropped = _DroppedFrames()
    with _h5_molecules(path, "SPICE HDF5", "conformations") as (name, groups):
        ekey = energy_key
        if ekey is None:
            g0 = groups[0][1]
            ekey = (
                "dft_total_energy"
                if "dft_total_energy" in g0 or "formation_energy" not in g0
                else "formation_energy"
            )
        wanted = [s.lower() for s in subsets] if subsets is not None else None
        n_used = 0
        for gi, (gname, g) in enumerate(groups):
            if max_molecules is not None and n_used >= max_molecules:
                break
            if wanted is not None:
                sub = (_h5_str(g, "subset") or "").lower()
                if not any(w in sub for w in wanted):
                    continue
            n_used += 1
            z = _h5_get(g, name, gname, "atomic_numbers", ndim=1).astype(np.int64)
            R = _h5_get(g, name, gname, "conformations", ndim=3)
            E = _h5_get(g, name, gname, ekey)
            G = _h5_get(g, name, gname, "dft_total_gradient")
            keep = _molecule_frames(name, gname, z, R, "conformations", E, ekey, G, "dft_total_gradient")
            dropped.add(gname, keep)
            if not keep.any():
                continue
            nk = int(keep.sum())
            props: dict[str, np.ndarray] = {}
            if ekey != "formation_energy" and "formation_energy" in g:
                fe = _h5_get(g, name, gname, "formation_energy").reshape(-1)
                if fe.shape != (len(keep),):
                    raise DataFormatError(
                        f"{name}: group {gname!r}: key 'formation_energy' has shape {fe.shape}"
                    )
                props["formation_energy"] = fe[keep].astype(np.float64) * HARTREE_TO_EV
            smiles = _h5_str(g, "smiles")
            props["charge"] = np.full(nk, float(smiles_formal_charge(smiles)) if smiles else np.nan)
            parts.append(
                _fixed_size_set(
                    z,
                    R[keep].astype(np.float64) * BOHR_TO_ANGSTROM,
                    E.reshape(-1)[keep].astype(np.float64) * HARTREE_TO_EV,
                    -G[keep].astype(np.float64) * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM,
                    f"spice:{name}",
                    mol_id=gi,
                    properties=props,
                )
            )
    if not parts:
        raise DataFormatError(
            f"{name}: no molecule with finite {ekey!r} and 'dft_total_gradient' was selected"
        )
    dropped.warn(name, f"{ekey!r} or 'dft_total_gradient'")
    return _finish(_join_molecules(parts, f"spice:{name}"))
