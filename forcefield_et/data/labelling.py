"""Reference labels for frames without them: energy and forces from GFN2-xTB or GFN1-xTB (tblite)
or from Kohn-Sham DFT (PySCF, e.g. ``dft:pbe/def2-svp``, rMD17's level of theory), written as
extended XYZ that ``forcefield-et finetune --train`` reads.

This is the labelling step of the active-learning loop (``forcefield-et select`` picks the frames,
this labels them, ``finetune`` trains on them). With labels from another code, write the energies
and forces into the selected frames' extxyz the same way (``energy`` in eV, ``forces`` in eV/Å).

The output is rewritten atomically every ``save_every`` frames. Each labelled frame records
``label_method``, ``label_source_sha256`` (of the input file) and ``label_index`` (its index in the
input), so that a stopped run resumes after the last frame written, and an output file from other
input or settings is never overwritten silently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from ..files import file_sha256, write_text_atomic

METHODS = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}  # tblite's names; DFT methods are "dft:<xc>/<basis>"
HARTREE_EV = 27.211386245988
BOHR_A = 0.529177210903

__all__ = ["METHODS", "dft_single_point", "file_sha256", "label_frames", "method_name", "xtb_single_point"]


def method_name(method: str) -> str:
    """The display name of a labelling method; ValueError for an unknown one. ``gfn2-xtb`` and
    ``gfn1-xtb`` run tblite; ``dft:<functional>/<basis>`` (e.g. ``dft:pbe/def2-svp``) runs PySCF."""
    if method in METHODS:
        return METHODS[method]
    if method.startswith("dft:"):
        functional, _, basis = method[4:].partition("/")
        if functional and basis:
            return f"{functional.upper()}/{basis} (PySCF)"
    raise ValueError(f"method must be one of {sorted(METHODS)} or dft:<functional>/<basis> "
                     f"(e.g. dft:pbe/def2-svp), got {method!r}")


def xtb_single_point(atoms: Any, method: str = "gfn2-xtb", charge: int = 0,
                     multiplicity: int | None = None) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces [N, 3] (eV/Å) of ``atoms`` from tblite (a fresh calculator, so no SCF
    guess carries over from another frame); ``CalculationFailed`` when the SCF fails."""
    from tblite.ase import TBLite

    atoms = atoms.copy()
    atoms.calc = TBLite(method=METHODS[method], charge=charge, multiplicity=multiplicity, verbosity=0)
    return float(atoms.get_potential_energy()), np.array(atoms.get_forces())


def dft_single_point(z: np.ndarray, positions: np.ndarray, functional: str = "pbe", basis: str = "def2-svp",
                     charge: int = 0, multiplicity: int = 1, grid_level: int = 3,
                     density_fit: bool = True) -> tuple[float, np.ndarray]:
    """Kohn-Sham energy (eV) and analytic forces [N, 3] (eV/Å) of a molecule (``z`` [N], ``positions``
    [N, 3] in Å) with PySCF: restricted for a singlet, unrestricted otherwise, density fitting,
    SCF tolerance 1e-10 Eh. RuntimeError when the SCF does not converge."""
    from pyscf import dft, gto

    molecule = gto.M(atom=[(int(a), tuple(map(float, r))) for a, r in zip(z, positions)], basis=basis,
                     unit="Angstrom", charge=int(charge), spin=int(multiplicity) - 1, verbose=0)
    kohn_sham = dft.RKS(molecule) if multiplicity == 1 else dft.UKS(molecule)
    if density_fit:
        kohn_sham = kohn_sham.density_fit()
    kohn_sham.xc = functional
    kohn_sham.grids.level = grid_level
    kohn_sham.conv_tol = 1e-10
    energy = kohn_sham.kernel()
    if not kohn_sham.converged:
        raise RuntimeError("the PySCF SCF did not converge")
    gradient = np.asarray(kohn_sham.nuc_grad_method().kernel())
    return float(energy) * HARTREE_EV, -gradient * HARTREE_EV / BOHR_A


def _check_dft_method(atoms: Any, functional: str, basis: str) -> None:
    """ValueError for a functional or basis set that PySCF does not know (before any frame is labelled,
    so that a typo does not make every frame fail)."""
    from pyscf import dft, gto

    try:
        dft.libxc.parse_xc(functional)
    except (KeyError, ValueError, NotImplementedError) as error:
        raise ValueError(f"PySCF does not know the functional {functional!r}: {error}") from None
    try:
        gto.M(atom=[(int(a), tuple(map(float, r))) for a, r in zip(atoms.numbers, atoms.positions)],
              basis=basis, unit="Angstrom", spin=None, verbose=0)
    except (KeyError, ValueError, RuntimeError, OSError) as error:
        raise ValueError(f"PySCF cannot build basis {basis!r} for these elements: {error}") from None


def _require_backend(method: str) -> None:
    module, extra = ("pyscf", "dft") if method.startswith("dft:") else ("tblite.ase", "corpus")
    try:
        __import__(module)
    except ImportError as error:
        raise ImportError(
            f"labelling with {method} needs {module.split('.')[0]}: pip install 'forcefield-et[{extra}]'"
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

    ``method``: ``gfn2-xtb``, ``gfn1-xtb`` (tblite) or ``dft:<functional>/<basis>`` (PySCF, molecules
    only; see :func:`dft_single_point`). ``charge`` (e) and ``multiplicity`` (2S+1; None: the lowest
    for the electron count with xTB, a singlet with DFT) apply to every frame. A frame whose SCF
    fails is left out and listed in the returned ``failed``. Returns a summary: frames in and
    labelled, ``failed`` indices, ``resumed_from`` and the output path.
    """
    from ase.calculators.calculator import CalculationFailed
    from ase.calculators.singlepoint import SinglePointCalculator

    name = method_name(method)
    if save_every < 1:
        raise ValueError(f"save_every must be >= 1, got {save_every}")
    if method.startswith("dft:") and any(atoms.pbc.any() for atoms in frames):
        raise ValueError(f"{method} labels molecules only; the frames include periodic ones (use gfn2-xtb)")
    _require_backend(method)
    functional, _, basis = method[4:].partition("/")
    if method.startswith("dft:") and frames:
        _check_dft_method(frames[0], functional, basis)

    def single_point(atoms: Any) -> tuple[float, np.ndarray]:
        if method.startswith("dft:"):
            return dft_single_point(atoms.numbers, atoms.positions, functional, basis, charge, multiplicity or 1)
        return xtb_single_point(atoms, method, charge, multiplicity)

    out = Path(out)
    done: List[Any] = []
    if out.exists() and not overwrite:
        done = _labelled_so_far(out, source_sha256, method)
    start = int(done[-1].info["label_index"]) + 1 if done else 0
    failed: List[int] = []
    indices = range(start, len(frames))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"labelling with {name}", unit="frame", initial=start, total=len(frames))
    pending = 0
    for index in indices:
        # a fresh calculation per frame: no SCF guess carried over, so a resumed run labels as an uninterrupted one
        try:
            energy, forces = single_point(frames[index])
        except (CalculationFailed, RuntimeError):
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
            "method": name, "out": str(out)}
