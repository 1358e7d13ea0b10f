"""Reference labels for frames without them: energy and forces from a semi-empirical method
(GFN2-xTB or GFN1-xTB through tblite), written as extended XYZ that ``forcefield-et finetune
--train`` reads.

This is the labelling step of the active-learning loop (``forcefield-et select`` picks the frames,
this labels them, ``finetune`` trains on them) for users whose reference method is xTB; with
DFT labels, write the energies and forces into the selected frames' extxyz the same way
(``energy`` in eV, ``forces`` in eV/Å).

The output is rewritten atomically every ``save_every`` frames. Each labelled frame records
``label_method``, ``label_source_sha256`` (of the input file) and ``label_index`` (its index in the
input), so that a stopped run resumes after the last frame written, and an output file from other
input or settings is never overwritten silently.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from ..files import write_text_atomic

METHODS = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}

__all__ = ["METHODS", "file_sha256", "label_frames"]


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _require_tblite() -> None:
    try:
        import tblite.ase  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "labelling with xTB needs tblite: pip install 'forcefield-et[corpus]' (or pip install tblite)"
        ) from error


def _labelled_so_far(out: Path, source_sha256: str, method: str) -> List[Any]:
    """The frames of an earlier run of the same labelling in ``out``; ValueError for any other file."""
    from ase.io import read

    if out.stat().st_size == 0:
        return []
    try:
        frames = read(str(out), index=":", format="extxyz")
    except Exception as error:  # noqa: BLE001 -- any unreadable file is someone else's
        raise ValueError(f"{out} exists and is not an extxyz file of labelled frames ({error}); "
                         "choose another --out or pass --overwrite") from error
    for atoms in frames:
        if atoms.info.get("label_source_sha256") != source_sha256 or atoms.info.get("label_method") != method:
            raise ValueError(f"{out} exists and holds frames labelled from another input or with another method; "
                             "choose another --out or pass --overwrite")
    return frames


def _write_frames(out: Path, frames: Sequence[Any]) -> None:
    from io import StringIO

    from ase.io import write

    buffer = StringIO()
    if frames:
        write(buffer, list(frames), format="extxyz")
    write_text_atomic(out, buffer.getvalue())


def label_frames(
    frames: Sequence[Any],
    out: str | os.PathLike,
    source_sha256: str,
    method: str = "gfn2-xtb",
    charge: int = 0,
    multiplicity: int | None = None,
    save_every: int = 10,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict[str, Any]:
    """Label ``frames`` (ASE Atoms) with ``method``: energy (eV) and forces (eV/Å) of each frame,
    written to the extxyz file ``out`` (resumed when it holds an earlier run of the same labelling).

    ``charge`` (e) and ``multiplicity`` (2S+1; None: the lowest for the electron count) apply to
    every frame. A frame whose SCF fails is left out and listed in the returned ``failed``. Returns
    a summary: frames in and labelled, ``failed`` indices, ``resumed_from`` and the output path.
    """
    from ase.calculators.calculator import CalculationFailed
    from ase.calculators.singlepoint import SinglePointCalculator

    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if save_every < 1:
        raise ValueError(f"save_every must be >= 1, got {save_every}")
    _require_tblite()
    from tblite.ase import TBLite

    out = Path(out)
    done: List[Any] = []
    if out.exists() and not overwrite:
        done = _labelled_so_far(out, source_sha256, method)
    start = int(done[-1].info["label_index"]) + 1 if done else 0
    failed: List[int] = []
    indices = range(start, len(frames))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"labelling with {METHODS[method]}", unit="frame", initial=start,
                       total=len(frames))
    pending = 0
    for index in indices:
        atoms = frames[index].copy()
        # a fresh calculator per frame: no SCF guess carried over, so a resumed run labels as an uninterrupted one
        atoms.calc = TBLite(method=METHODS[method], charge=charge, multiplicity=multiplicity, verbosity=0)
        try:
            energy, forces = float(atoms.get_potential_energy()), np.array(atoms.get_forces())
        except CalculationFailed:
            failed.append(index)
            continue
        if not (np.isfinite(energy) and np.isfinite(forces).all()):
            failed.append(index)
            continue
        labelled = frames[index].copy()
        labelled.info.update({"label_method": method, "label_source_sha256": source_sha256, "label_index": index})
        labelled.calc = SinglePointCalculator(labelled, energy=energy, forces=forces)
        done.append(labelled)
        pending += 1
        if pending >= save_every:
            _write_frames(out, done)
            pending = 0
    if pending or not out.exists() or overwrite:
        _write_frames(out, done)
    return {"frames": len(frames), "labelled": len(done), "failed": failed, "resumed_from": start,
            "method": METHODS[method], "out": str(out)}
