"""DeePMD npy reader (system folders: type.raw, type_map.raw, set.*/coord.npy ...); Å, eV, eV/Å as stored."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...elements import number as _element_number
from ..conformations import ConformationSet
from ..errors import DataFormatError
from ._common import PathLike, _check_finite_frames, _existing, _finish, _guard


def read_deepmd(folder: PathLike, type_map: Sequence[str] | None = None) -> ConformationSet:
    """Read DeePMD npy data: one system folder, or a folder containing several (found recursively).

    A system has ``type.raw`` (one type index per atom), ``type_map.raw`` (element symbols;
    or pass ``type_map``) and ``set.*/`` folders with ``coord.npy`` [F, N*3] Å, ``energy.npy``
    [F] eV, ``force.npy`` [F, N*3] eV/Å and optionally ``box.npy`` [F, 9] Å (-> ``cell``
    [F,3,3], rows are lattice vectors; ignored when a ``nopbc`` file is present). Each system
    gets its own ``mol_id`` (0, 1, ... in sorted path order).
    """
    p = _existing(folder)
    if not p.is_dir():
        raise DataFormatError(f"{p.name}: DeePMD data must be a directory")
    if (p / "type.raw").exists():
        systems = [p]
    else:
        systems = sorted({t.parent for t in p.rglob("type.raw")})
    if not systems:
        raise DataFormatError(f"{p.name}: missing 'type.raw' (no DeePMD system found in the folder)")
    parts = []
    for i, sysdir in enumerate(systems):
        cs = _read_deepmd_system(sysdir, p, type_map)
        cs.mol_id = np.full(len(cs), i, dtype=np.int64)
        parts.append(cs)
    cs = parts[0] if len(parts) == 1 else ConformationSet.concatenate(parts)
    cs.source = f"deepmd:{p.name}"
    return _finish(cs)


def _read_raw_tokens(path: Path, label: str) -> list[str]:
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{label}: not a text file ({e})") from e
    return text.split()


def _read_deepmd_system(sysdir: Path, root: Path, type_map: Sequence[str] | None) -> ConformationSet:
    base = root.name if sysdir == root else f"{root.name}/{sysdir.relative_to(root).as_posix()}"
    lab = f"{base}/type.raw"
    with _guard(lab, "DeePMD type.raw"):
        tokens = _read_raw_tokens(sysdir / "type.raw", lab)
        try:
            types = np.array([int(t) for t in tokens], dtype=np.int64)
        except ValueError as e:
            raise DataFormatError(f"{lab}: entries must be integers ({e})") from e
    if types.size == 0:
        raise DataFormatError(f"{lab}: no atoms")
    if type_map is None:
        tm_path = sysdir / "type_map.raw"
        if not tm_path.exists():
            raise DataFormatError(f"{base}: missing 'type_map.raw' (or pass type_map=[...])")
        type_map = _read_raw_tokens(tm_path, f"{base}/type_map.raw")
    try:
        zmap = np.array([_element_number(s) for s in type_map], dtype=np.int64)
    except ValueError as e:
        raise DataFormatError(f"{base}/type_map.raw: {e}") from e
    if types.min() < 0 or types.max() >= len(zmap):
        raise DataFormatError(f"{lab}: type index {int(types.max())} outside type_map of length {len(zmap)}")
    z = zmap[types]
    n = len(z)
    nopbc = (sysdir / "nopbc").exists()
    set_dirs = sorted(d for d in sysdir.glob("set.*") if d.is_dir())
    if not set_dirs:
        raise DataFormatError(f"{base}: missing 'set.*' folder")
    poss, energies, forces, cells = [], [], [], []
    any_energy = any_forces = any_box = False
    for sd in set_dirs:
        rel = f"{base}/{sd.name}"

        def load(fname: str, required: bool, rel: str = rel, sd: Path = sd) -> np.ndarray | None:
            fp = sd / fname
            if not fp.exists():
                if required:
                    raise DataFormatError(f"{rel}: missing '{fname}'")
                return None
            with _guard(f"{rel}/{fname}", "an .npy array"):
                arr = np.load(fp, allow_pickle=False)
            if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
                raise DataFormatError(f"{rel}/{fname}: expected a numeric array")
            return arr

        coord = load("coord.npy", True)
        assert coord is not None
        n_frames = coord.shape[0] if coord.ndim >= 1 else 0
        if coord.size != n_frames * n * 3 or coord.ndim < 2:
            raise DataFormatError(
                f"{rel}/coord.npy: shape {coord.shape} does not match {n} atoms of 'type.raw'"
            )
        coord = coord.reshape(n_frames, n, 3).astype(np.float64)
        _check_finite_frames(coord, f"{rel}/coord.npy", "coord")
        poss.append(coord)
        en = load("energy.npy", False)
        if en is not None:
            any_energy = True
            if en.size != n_frames:
                raise DataFormatError(
                    f"{rel}/energy.npy: shape {en.shape}, expected ({n_frames},) like 'coord.npy'"
                )
            energies.append(en.reshape(-1).astype(np.float64))
        else:
            energies.append(np.full(n_frames, np.nan))
        fo = load("force.npy", False)
        if fo is not None:
            any_forces = True
            if fo.shape[:1] != (n_frames,) or fo.size != n_frames * n * 3:
                raise DataFormatError(
                    f"{rel}/force.npy: shape {fo.shape}, expected {(n_frames, n * 3)} like 'coord.npy'"
                )
            fo = fo.reshape(n_frames, n, 3).astype(np.float64)
            _check_finite_frames(fo, f"{rel}/force.npy", "force", "forces")
            forces.append(fo)
        else:
            forces.append(np.full((n_frames, n, 3), np.nan))
        box = None if nopbc else load("box.npy", False)
        if box is not None:
            any_box = True
            if box.size != n_frames * 9:
                raise DataFormatError(f"{rel}/box.npy: shape {box.shape}, expected ({n_frames}, 9)")
            box = box.reshape(n_frames, 3, 3).astype(np.float64)
            _check_finite_frames(box, f"{rel}/box.npy", "box", "cell vectors")
            cells.append(box)
        else:
            cells.append(np.zeros((n_frames, 3, 3)))
    pos = np.concatenate(poss, axis=0)
    n_frames = pos.shape[0]
    return ConformationSet(
        z=np.tile(z, n_frames),
        pos=pos.reshape(-1, 3),
        n_atoms=np.full(n_frames, n, dtype=np.int64),
        energy=np.concatenate(energies) if any_energy else None,
        forces=np.concatenate(forces, axis=0).reshape(-1, 3) if any_forces else None,
        cell=np.concatenate(cells, axis=0) if any_box else None,
        source=f"deepmd:{base}",
    )
