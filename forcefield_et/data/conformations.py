"""In-memory container for sets of molecular/periodic conformations.

All arrays are concatenated over frames ("ragged" layout): per-frame arrays have a leading
dimension ``F`` (number of frames), per-atom arrays a leading dimension ``A`` (total number of
atoms, ``A == n_atoms.sum()``). Units are Å for lengths and eV for energies (forces eV/Å).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..units import energy_factor, length_factor
from .errors import DataFormatError

if TYPE_CHECKING:
    from ase import Atoms

__all__ = ["ConformationSet"]

# Keys of ``Atoms.info`` / ``Atoms.arrays`` that ``from_ase`` maps onto dedicated fields.
_RESERVED_INFO = {"energy", "mol_id", "equilibrium"}
_RESERVED_ARRAYS = {"numbers", "positions", "forces"}


def _as_index_array(indices: Any, n: int) -> np.ndarray:
    """Normalise an integer index array / boolean mask over ``n`` items to int64 (negatives wrap)."""
    arr = np.asarray(indices)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexError(f"boolean mask has shape {arr.shape}, expected ({n},)")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"indices must be integers or a boolean mask, got dtype {arr.dtype}")
    idx = arr.astype(np.int64).reshape(-1)
    idx = np.where(idx < 0, idx + n, idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = arr.reshape(-1)[(idx < 0) | (idx >= n)][0]
        raise IndexError(f"index {bad} is out of range for {n} frames")
    return idx


@dataclass(eq=False)
class ConformationSet:
    """Concatenated conformations in Å / eV. F frames, A atoms total.

    Attributes:
        z: int64 [A] atomic numbers.
        pos: float64 [A, 3] positions, Å.
        n_atoms: int64 [F] atoms per frame.
        energy: float64 [F] total energies, eV (NaN where a frame has none), or None.
        forces: float64 [A, 3] forces, eV/Å (a frame's forces are all NaN when missing), or None.
        cell: float64 [F, 3, 3] lattice vectors as rows, Å; None means no periodic boundaries.
            A zero lattice vector marks a direction without periodicity (a slab's or a wire's open
            direction), and in a mixed set an all-zero cell a non-periodic frame.
        equilibrium: bool [F], True for equilibrium (relaxed) geometries; None -> all False.
        mol_id: int64 [F] identity of the molecule, for splits by molecule; None -> arange(F).
        properties: name -> [F] or [F, k] per-frame extra labels (units documented by each reader).
        source: provenance string, e.g. ``"rmd17:rmd17_ethanol_train_01.npz"``.
        atom_properties: name -> [A] or [A, k] per-atom extra labels (e.g. QM7-X Hirshfeld charges).

    ``n_atoms`` is treated as immutable (``offsets`` is cached); build a new set instead of
    editing it in place.
    """

    z: np.ndarray
    pos: np.ndarray
    n_atoms: np.ndarray
    energy: np.ndarray | None = None
    forces: np.ndarray | None = None
    cell: np.ndarray | None = None
    equilibrium: np.ndarray | None = None
    mol_id: np.ndarray | None = None
    properties: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    atom_properties: dict[str, np.ndarray] = field(default_factory=dict)
    _offsets: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _offsets_of: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        self.z = np.asarray(self.z, dtype=np.int64)
        self.n_atoms = np.asarray(self.n_atoms, dtype=np.int64).reshape(-1)
        pos = np.asarray(self.pos, dtype=np.float64)
        self.pos = pos.reshape(0, 3) if pos.size == 0 else pos
        n_frames = self.n_atoms.shape[0]
        if self.energy is not None:
            e = np.asarray(self.energy, dtype=np.float64)
            if e.ndim == 2 and e.shape[1] == 1:
                e = e[:, 0]
            self.energy = e.reshape(-1) if e.ndim == 0 else e
        if self.forces is not None:
            f = np.asarray(self.forces, dtype=np.float64)
            self.forces = f.reshape(0, 3) if f.size == 0 else f
        if self.cell is not None:
            c = np.asarray(self.cell, dtype=np.float64)
            if c.shape == (3, 3):
                c = np.broadcast_to(c, (n_frames, 3, 3)).copy()
            elif c.ndim == 2 and c.shape[1] == 9:
                c = c.reshape(-1, 3, 3)
            self.cell = c
        if self.equilibrium is None:
            self.equilibrium = np.zeros(n_frames, dtype=bool)
        else:
            eq = np.asarray(self.equilibrium)
            self.equilibrium = np.full(n_frames, bool(eq)) if eq.ndim == 0 else eq.astype(bool)
        if self.mol_id is None:
            self.mol_id = np.arange(n_frames, dtype=np.int64)
        else:
            mid = np.asarray(self.mol_id, dtype=np.int64)
            self.mol_id = np.full(n_frames, int(mid), dtype=np.int64) if mid.ndim == 0 else mid
        self.properties = {str(k): np.asarray(v) for k, v in dict(self.properties).items()}
        self.atom_properties = {str(k): np.asarray(v) for k, v in dict(self.atom_properties).items()}
        self.source = str(self.source)

    # ------------------------------------------------------------------ basic properties
    def __len__(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def n_frames(self) -> int:
        """Number of frames F."""
        return len(self)

    @property
    def n_total_atoms(self) -> int:
        """Total number of atoms A over all frames."""
        return int(self.z.shape[0])

    @property
    def offsets(self) -> np.ndarray:
        """int64 [F+1] cumulative atom offsets: frame i owns atoms ``offsets[i]:offsets[i+1]``."""
        if self._offsets is None or self._offsets_of is not self.n_atoms:
            off = np.zeros(len(self.n_atoms) + 1, dtype=np.int64)
            np.cumsum(self.n_atoms, out=off[1:])
            self._offsets = off
            self._offsets_of = self.n_atoms
        return self._offsets

    @property
    def elements(self) -> np.ndarray:
        """Sorted unique atomic numbers (int64)."""
        return np.unique(self.z)

    @property
    def has_energy(self) -> np.ndarray:
        """bool [F]: frame has a (finite) energy label."""
        if self.energy is None:
            return np.zeros(len(self), dtype=bool)
        return np.isfinite(self.energy)

    @property
    def has_forces(self) -> np.ndarray:
        """bool [F]: frame has (finite) force labels."""
        if self.forces is None:
            return np.zeros(len(self), dtype=bool)
        bad_atom = ~np.isfinite(self.forces).all(axis=1)
        return (self._count_per_frame(bad_atom) == 0) & (self.n_atoms > 0)

    @property
    def stress_labels(self) -> np.ndarray:
        """float64 [F, 3, 3]: the ``stress`` property (eV/Å³, ASE's sign) of the frames periodic along
        a, b and c, NaN for the others (a slab's or a wire's stress is not the derivative with respect
        to a three-dimensional strain) and where a frame has none."""
        stress = np.full((len(self), 3, 3), np.nan)
        labels = self.properties.get("stress")
        if self.cell is not None and labels is not None and np.shape(labels)[1:] == (3, 3):
            periodic = (np.linalg.norm(np.asarray(self.cell), axis=-1) > 0).all(-1)
            stress[periodic] = np.asarray(labels, dtype=np.float64)[periodic]
        return stress

    @property
    def has_stress(self) -> np.ndarray:
        """bool [F]: frame has a (finite) stress label that counts (see :attr:`stress_labels`)."""
        return np.isfinite(self.stress_labels).all(axis=(1, 2))

    def _count_per_frame(self, atom_mask: np.ndarray) -> np.ndarray:
        """int64 [F]: number of True entries of a per-atom mask [A] in each frame."""
        frame_of_atom = np.repeat(np.arange(len(self)), self.n_atoms)
        return np.bincount(frame_of_atom[atom_mask], minlength=len(self)).astype(np.int64)

    def __repr__(self) -> str:
        labels = [k for k in ("energy", "forces", "cell") if getattr(self, k) is not None]
        return (
            f"ConformationSet(frames={len(self)}, atoms={self.n_total_atoms}, "
            f"elements={self.elements.tolist()}, molecules={len(np.unique(self.mol_id))}, "
            f"labels={labels}, properties={sorted(self.properties)}, source={self.source!r})"
        )

    # ------------------------------------------------------------------ validation
    def validate(self) -> ConformationSet:
        """Check shapes, dtypes and finiteness; raise DataFormatError naming the array. Returns self."""
        name = self.source or "ConformationSet"
        n_frames = len(self)

        def fail(key: str, msg: str) -> None:
            raise DataFormatError(f"{name}: {key!r} {msg}")

        if self.z.ndim != 1:
            fail("z", f"must be 1-D [A], got shape {self.z.shape}")
        n_at = self.z.shape[0]
        if self.n_atoms.ndim != 1:
            fail("n_atoms", f"must be 1-D [F], got shape {self.n_atoms.shape}")
        if n_frames and self.n_atoms.min() < 1:
            fail("n_atoms", f"has a frame with {self.n_atoms.min()} atoms (each frame needs >= 1)")
        if int(self.n_atoms.sum()) != n_at:
            fail("n_atoms", f"sums to {int(self.n_atoms.sum())} but 'z' has {n_at} atoms")
        if n_at and (self.z.min() < 1 or self.z.max() > 118):
            fail("z", f"has atomic numbers outside 1..118 (min {self.z.min()}, max {self.z.max()})")
        if self.pos.shape != (n_at, 3):
            fail("pos", f"has shape {self.pos.shape}, expected ({n_at}, 3)")
        if not np.isfinite(self.pos).all():
            fail("pos", "contains non-finite coordinates")
        from .labels import nonfinite_labels_accepted  # here: labels imports this module

        strict_labels = not nonfinite_labels_accepted()
        if self.energy is not None:
            if self.energy.shape != (n_frames,):
                fail("energy", f"has shape {self.energy.shape}, expected ({n_frames},)")
            infinite = np.isinf(self.energy)
            if strict_labels and infinite.any():
                first = int(np.argmax(infinite))
                fail("energy", f"is infinite in {int(infinite.sum())} frame(s) (first: frame {first})")
        if self.forces is not None:
            if self.forces.shape != (n_at, 3):
                fail("forces", f"has shape {self.forces.shape}, expected ({n_at}, 3) like 'pos'")
            infinite = self._count_per_frame(np.isinf(self.forces).any(axis=1)) > 0
            if strict_labels and infinite.any():
                first = int(np.argmax(infinite))
                fail("forces", f"is infinite in {int(infinite.sum())} frame(s) (first: frame {first})")
            nan_atom = np.isnan(self.forces).any(axis=1)
            if strict_labels and nan_atom.any():
                nan_count = self._count_per_frame(nan_atom)
                partial = (nan_count > 0) & (nan_count < self.n_atoms)
                if partial.any():
                    fail(
                        "forces",
                        f"frame {int(np.flatnonzero(partial)[0])} is partly NaN "
                        "(a frame's forces must be all finite or all NaN = missing)",
                    )
        if self.cell is not None:
            if self.cell.shape != (n_frames, 3, 3):
                fail("cell", f"has shape {self.cell.shape}, expected ({n_frames}, 3, 3)")
            if not np.isfinite(self.cell).all():
                fail("cell", "contains non-finite values")
        if self.equilibrium.shape != (n_frames,):
            fail("equilibrium", f"has shape {self.equilibrium.shape}, expected ({n_frames},)")
        if self.mol_id.shape != (n_frames,):
            fail("mol_id", f"has shape {self.mol_id.shape}, expected ({n_frames},)")
        if n_frames and self.mol_id.min() < 0:
            fail("mol_id", "has negative ids")
        for k, v in self.properties.items():
            if v.ndim == 0 or v.shape[0] != n_frames:
                fail(f"properties[{k}]", f"has shape {v.shape}, expected leading dimension {n_frames}")
        for k, v in self.atom_properties.items():
            if v.ndim == 0 or v.shape[0] != n_at:
                fail(f"atom_properties[{k}]", f"has shape {v.shape}, expected leading dimension {n_at}")
        return self

    # ------------------------------------------------------------------ access
    def frame(self, i: int) -> dict[str, Any]:
        """One frame as a dict of numpy arrays (views, do not modify).

        Keys: z [N], pos [N,3] Å, energy (float64 scalar eV or None), forces [N,3] eV/Å or None,
        cell [3,3] Å or None, equilibrium (bool), mol_id (int64), n_atoms (int),
        properties {name: value}, atom_properties {name: [N,...]}.
        """
        n_frames = len(self)
        i = int(i)
        if i < 0:
            i += n_frames
        if not 0 <= i < n_frames:
            raise IndexError(f"frame {i} out of range for {n_frames} frames")
        s, e = int(self.offsets[i]), int(self.offsets[i + 1])
        return {
            "z": self.z[s:e],
            "pos": self.pos[s:e],
            "energy": None if self.energy is None else self.energy[i],
            "forces": None if self.forces is None else self.forces[s:e],
            "cell": None if self.cell is None else self.cell[i],
            "equilibrium": self.equilibrium[i],
            "mol_id": self.mol_id[i],
            "n_atoms": e - s,
            "properties": {k: v[i] for k, v in self.properties.items()},
            "atom_properties": {k: v[s:e] for k, v in self.atom_properties.items()},
        }

    def atom_index(self, frame_indices: Any) -> np.ndarray:
        """int64 indices of the atoms of the given frames (in that order), vectorised."""
        idx = _as_index_array(frame_indices, len(self))
        counts = self.n_atoms[idx]
        starts = self.offsets[idx]
        new_off = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=new_off[1:])
        return np.repeat(starts - new_off[:-1], counts) + np.arange(new_off[-1], dtype=np.int64)

    def subset(self, indices: Any) -> ConformationSet:
        """New set with the given frames (integer array, order preserved, repeats allowed; or bool mask)."""
        idx = _as_index_array(indices, len(self))
        aidx = self.atom_index(idx)
        return ConformationSet(
            z=self.z[aidx],
            pos=self.pos[aidx],
            n_atoms=self.n_atoms[idx],
            energy=None if self.energy is None else self.energy[idx],
            forces=None if self.forces is None else self.forces[aidx],
            cell=None if self.cell is None else self.cell[idx],
            equilibrium=self.equilibrium[idx],
            mol_id=self.mol_id[idx],
            properties={k: v[idx] for k, v in self.properties.items()},
            source=self.source,
            atom_properties={k: v[aidx] for k, v in self.atom_properties.items()},
        )

    @classmethod
    def concatenate(cls, parts: Sequence[ConformationSet]) -> ConformationSet:
        """Join sets frame-wise. mol_ids of later parts are shifted so they stay distinct.

        The first part keeps its mol_ids; part k's ids are shifted by (max id so far + 1).
        Missing labels are filled: energy/forces with NaN, cell with zeros (non-periodic),
        properties with NaN (all arrays of one property must share their trailing shape).
        """
        parts = list(parts)
        if not parts:
            raise ValueError("ConformationSet.concatenate needs at least one set")
        for p in parts:
            if not isinstance(p, ConformationSet):
                raise TypeError(f"cannot concatenate {type(p).__name__}")

        def cat_optional(
            attr: str, per_atom: bool, fill: float, trailing: tuple[int, ...]
        ) -> np.ndarray | None:
            vals = [getattr(p, attr) for p in parts]
            if all(v is None for v in vals):
                return None
            out = []
            for p, v in zip(parts, vals, strict=True):
                n = p.n_total_atoms if per_atom else len(p)
                out.append(v if v is not None else np.full((n, *trailing), fill, dtype=np.float64))
            return np.concatenate(out, axis=0)

        mol_ids = []
        shift = 0
        for p in parts:
            mol_ids.append(p.mol_id + shift)
            if len(p):
                shift = int(mol_ids[-1].max()) + 1

        def cat_dict(attr: str, per_atom: bool) -> dict[str, np.ndarray]:
            keys: list[str] = []
            for p in parts:
                keys += [k for k in getattr(p, attr) if k not in keys]
            res = {}
            for k in keys:
                present = [getattr(p, attr)[k] for p in parts if k in getattr(p, attr)]
                trailing = present[0].shape[1:]
                if any(v.shape[1:] != trailing for v in present):
                    shapes = sorted({v.shape[1:] for v in present})
                    raise DataFormatError(f"concatenate: {attr}[{k!r}] has inconsistent shapes {shapes}")
                chunks = []
                for p in parts:
                    d = getattr(p, attr)
                    if k in d:
                        chunks.append(d[k])
                    else:
                        n = p.n_total_atoms if per_atom else len(p)
                        chunks.append(np.full((n, *trailing), np.nan))
                res[k] = np.concatenate(chunks, axis=0)
            return res

        sources: list[str] = []
        for p in parts:
            if p.source and p.source not in sources:
                sources.append(p.source)
        return cls(
            z=np.concatenate([p.z for p in parts]),
            pos=np.concatenate([p.pos for p in parts], axis=0),
            n_atoms=np.concatenate([p.n_atoms for p in parts]),
            energy=cat_optional("energy", False, np.nan, ()),
            forces=cat_optional("forces", True, np.nan, (3,)),
            cell=cat_optional("cell", False, 0.0, (3, 3)),
            equilibrium=np.concatenate([p.equilibrium for p in parts]),
            mol_id=np.concatenate(mol_ids),
            properties=cat_dict("properties", False),
            source="+".join(sources),
            atom_properties=cat_dict("atom_properties", True),
        )

    # ------------------------------------------------------------------ splits
    def split_by_molecule(
        self, valid_fraction: float = 0.1, seed: int = 0
    ) -> tuple[ConformationSet, ConformationSet]:
        """Hold out whole molecules (:func:`forcefield_et.data.splits.split_by_molecule`)."""
        from .splits import split_by_molecule

        return split_by_molecule(self, valid_fraction, seed)

    def split_random(
        self, valid_fraction: float = 0.1, seed: int = 0
    ) -> tuple[ConformationSet, ConformationSet]:
        """Random frame-level split (:func:`forcefield_et.data.splits.split_random`)."""
        from .splits import split_random

        return split_random(self, valid_fraction, seed)

    # ------------------------------------------------------------------ ASE interop
    def to_ase(self, i: int) -> Atoms:
        """Frame ``i`` as ``ase.Atoms`` (Å) with a SinglePointCalculator holding energy (eV)
        and forces (eV/Å) when present. mol_id, equilibrium and properties go into ``info``,
        atom_properties into ``arrays``."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        fr = self.frame(i)
        cell = fr["cell"]
        if cell is not None:
            pbc = np.linalg.norm(cell, axis=1) > 0
            atoms = Atoms(numbers=fr["z"], positions=fr["pos"], cell=cell, pbc=pbc)
        else:
            atoms = Atoms(numbers=fr["z"], positions=fr["pos"])
        atoms.info["mol_id"] = int(fr["mol_id"])
        atoms.info["equilibrium"] = bool(fr["equilibrium"])
        for k, v in fr["properties"].items():
            atoms.info[k] = v.item() if np.ndim(v) == 0 else np.array(v)
        for k, v in fr["atom_properties"].items():
            atoms.set_array(k, np.array(v))
        results: dict[str, Any] = {}
        if fr["energy"] is not None and np.isfinite(fr["energy"]):
            results["energy"] = float(fr["energy"])
        if fr["forces"] is not None and np.isfinite(fr["forces"]).all():
            results["forces"] = np.array(fr["forces"])
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    @classmethod
    def from_ase(
        cls,
        atoms_list: Iterable[Atoms],
        source: str = "",
        energy_key: str | None = None,
        forces_key: str | None = None,
        energy_unit: str = "eV",
        length_unit: str = "Angstrom",
    ) -> ConformationSet:
        """Build a set from ``ase.Atoms`` objects.

        Energy comes from the attached calculator (``calc.results['energy']``) or
        ``info['energy']``; with ``energy_key`` from ``info[energy_key]`` (or the calculator if
        ``energy_key == 'energy'``). Forces from the calculator or ``arrays['forces']``; with
        ``forces_key`` from ``arrays[forces_key]``. Values are converted from ``energy_unit`` /
        ``length_unit`` to eV / Å. A cell is kept when any frame has pbc. Numeric ``info``
        entries become ``properties`` (raw units), calculator ``stress`` becomes
        ``properties['stress']`` [F,3,3] eV/Å³, and extra numeric per-atom arrays become
        ``atom_properties`` (raw units). ``info['mol_id']`` / ``info['equilibrium']`` are honoured.
        Raises KeyError naming the key if ``energy_key``/``forces_key`` is found in no frame.
        """
        e_fac = energy_factor(energy_unit)
        l_fac = length_factor(length_unit)
        f_fac = e_fac / l_fac
        atoms_list = list(atoms_list)
        n_frames = len(atoms_list)
        zs, poss, cells, energies, forces = [], [], [], [], []
        any_pbc = False
        eq = np.zeros(n_frames, dtype=bool)
        mol_ids: list[int | None] = []
        props: dict[str, dict[int, np.ndarray]] = {}
        aprops: dict[str, dict[int, np.ndarray]] = {}
        e_seen = f_seen = False
        for fi, atoms in enumerate(atoms_list):
            n = len(atoms)
            zs.append(np.asarray(atoms.numbers, dtype=np.int64))
            poss.append(np.asarray(atoms.positions, dtype=np.float64) * l_fac)
            pbc = bool(np.any(atoms.pbc))
            any_pbc |= pbc
            # a zero lattice vector marks a direction without periodicity (the ``cell`` field)
            open_rows_zeroed = np.asarray(atoms.pbc, dtype=bool)[:, None]
            cells.append(np.asarray(atoms.cell.array, dtype=np.float64) * l_fac * open_rows_zeroed)
            results = dict(getattr(atoms.calc, "results", {}) or {}) if atoms.calc is not None else {}
            info = atoms.info
            # energy
            e = None
            if energy_key is None:
                e = results.get("energy", info.get("energy"))
            elif energy_key in info:
                e = info[energy_key]
            elif energy_key in results:
                e = results[energy_key]
            if e is not None:
                e_seen = True
                energies.append(float(np.asarray(e, dtype=np.float64).reshape(-1)[0]) * e_fac)
            else:
                energies.append(np.nan)
            # forces
            f = None
            if forces_key is None:
                f = results.get("forces", atoms.arrays.get("forces"))
            elif forces_key in atoms.arrays:
                f = atoms.arrays[forces_key]
            elif forces_key in results:
                f = results[forces_key]
            if f is not None:
                f_seen = True
                f = np.asarray(f, dtype=np.float64)
                if f.shape != (n, 3):
                    raise ValueError(f"frame {fi}: forces have shape {f.shape}, expected ({n}, 3)")
                forces.append(f * f_fac)
            else:
                forces.append(np.full((n, 3), np.nan))
            # special info keys
            eq[fi] = bool(info.get("equilibrium", False))
            mid = info.get("mol_id")
            mol_ids.append(int(mid) if isinstance(mid, (int, np.integer)) else None)
            # properties
            skip = _RESERVED_INFO | ({energy_key} if energy_key else set())
            for k, v in info.items():
                if k in skip:
                    continue
                arr = _numeric(v)
                if arr is not None:
                    props.setdefault(str(k), {})[fi] = arr
            if "stress" in results:
                s = np.asarray(results["stress"], dtype=np.float64)
                if s.shape == (6,):
                    xx, yy, zz, yz, xz, xy = s
                    s = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
                props.setdefault("stress", {})[fi] = s.reshape(3, 3) * (e_fac / l_fac**3)
            for k, v in results.items():
                if k in ("energy", "forces", "stress", energy_key, forces_key):
                    continue
                arr = _numeric(v)
                if arr is None:
                    continue
                if arr.ndim >= 1 and arr.shape[0] == n and k in ("charges", "magmoms", "energies"):
                    aprops.setdefault(str(k), {})[fi] = arr
                else:
                    props.setdefault(str(k), {})[fi] = arr
            for k, v in atoms.arrays.items():
                if k in _RESERVED_ARRAYS or k == forces_key:
                    continue
                arr = _numeric(v)
                if arr is not None:
                    aprops.setdefault(str(k), {})[fi] = arr
        if energy_key is not None and not e_seen and n_frames:
            raise KeyError(
                f"energy key {energy_key!r} not found in any frame (info keys: {sorted(atoms_list[0].info)})"
            )
        if forces_key is not None and not f_seen and n_frames:
            raise KeyError(
                f"forces key {forces_key!r} not found in any frame (arrays: {sorted(atoms_list[0].arrays)})"
            )
        n_atoms = np.array([len(z) for z in zs], dtype=np.int64)
        properties = _stack_props(props, n_frames, per_atom_counts=None)
        atom_properties = _stack_props(aprops, n_frames, per_atom_counts=n_atoms)
        ids = None
        if n_frames and all(m is not None for m in mol_ids):
            ids = np.array(mol_ids, dtype=np.int64)
        return cls(
            z=np.concatenate(zs) if zs else np.zeros(0, dtype=np.int64),
            pos=np.concatenate(poss, axis=0) if poss else np.zeros((0, 3)),
            n_atoms=n_atoms,
            energy=np.array(energies, dtype=np.float64) if e_seen else None,
            forces=np.concatenate(forces, axis=0) if f_seen else None,
            cell=np.stack(cells) if any_pbc else None,
            equilibrium=eq,
            mol_id=ids,
            properties=properties,
            source=source,
            atom_properties=atom_properties,
        )


def _numeric(v: Any) -> np.ndarray | None:
    """``v`` as a numeric (bool/int/float) numpy array, or None if it is not numeric."""
    if isinstance(v, (str, bytes)) or v is None:
        return None
    try:
        arr = np.asarray(v)
    except Exception:
        return None
    if arr.dtype.kind not in "biuf":
        return None
    return arr


def _stack_props(
    props: dict[str, dict[int, np.ndarray]], n_frames: int, per_atom_counts: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Stack per-frame values; frames missing a property get NaN. Inconsistent shapes are dropped."""
    out: dict[str, np.ndarray] = {}
    for k, vals in props.items():
        shapes = {v.shape[1:] if per_atom_counts is not None else v.shape for v in vals.values()}
        if len(shapes) != 1:
            warnings.warn(f"dropping property {k!r}: inconsistent shapes {sorted(shapes)}", stacklevel=3)
            continue
        (shape,) = shapes
        if per_atom_counts is not None:
            if any(v.ndim == 0 or v.shape[0] != per_atom_counts[i] for i, v in vals.items()):
                warnings.warn(f"dropping per-atom array {k!r}: length != number of atoms", stacklevel=3)
                continue
            if len(vals) == n_frames:
                out[k] = np.concatenate([vals[i] for i in range(n_frames)], axis=0)
            else:
                out[k] = np.concatenate(
                    [
                        vals[i].astype(np.float64)
                        if i in vals
                        else np.full((per_atom_counts[i], *shape), np.nan)
                        for i in range(n_frames)
                    ],
                    axis=0,
                )
        else:
            if len(vals) == n_frames:
                out[k] = np.stack([vals[i] for i in range(n_frames)])
            else:
                arr = np.full((n_frames, *shape), np.nan)
                for i, v in vals.items():
                    arr[i] = v
                out[k] = arr
    return out
