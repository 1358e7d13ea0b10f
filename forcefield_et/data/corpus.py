"""Training frames from SMILES, labelled with a semi-empirical method (GFN2-xTB through tblite).

For each molecule: one RDKit ETKDG conformer relaxed with MMFF94; a GFN2-xTB relaxation (BFGS to
``relax_fmax``), kept as an equilibrium frame (kind 0) when it converged; a Langevin trajectory
at a random temperature, sampled every ``md_interval_fs`` after a warm-up (kind 1); and random
Cartesian displacements of the relaxed geometry (kind 2). Frames whose largest force exceeds
``max_force`` are dropped. Units: Å, eV, eV/Å. Each molecule is labelled at the total charge of its
SMILES' formal charges and the multiplicity of its radical electrons (one unpaired electron each, high
spin); the model has no charge input, so a corpus should hold one charge state per composition.

The output folder holds shards ``xtb_shard<K>.npz`` in the layout of the GFN2-xTB corpus
(``n_atoms``, ``mol_id``, ``kind``, ``energy``, ``z``, ``pos``, ``forces``) plus ``smiles``, ``charge``
(e) and ``multiplicity`` (2S+1) per molecule (``mol_id`` indexes them) and ``tried`` (how many of the
shard's SMILES were processed), so the folder is a pretraining source as it is (``format: xtb_corpus``,
``path: DIR``) and
``forcefield-et finetune --train DIR/xtb_shard0.npz --format xtb_corpus`` reads a shard. Each shard is
rewritten atomically and durably (:mod:`forcefield_et.files`) every ``save_every`` molecules; a
stopped run resumes after the last molecule saved, with the same random numbers (each molecule's
generator is seeded by the seed and its index). While a run writes into the folder it holds the
folder's lock (``.lock``): a second run on the same folder is refused.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..files import DirectoryLock, leftover_temporaries, savez_atomic, write_text_atomic

METHODS = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}
SETTINGS_FILE = "corpus_settings.json"


@dataclass
class CorpusSettings:
    """How each molecule is sampled and labelled (Å, eV, fs, K)."""

    method: str = "gfn2-xtb"
    seed: int = 0
    relax_fmax: float = 0.03
    relax_steps: int = 200
    md_frames: int = 6
    md_interval_fs: float = 10.0
    md_warmup_fs: float = 20.0
    md_timestep_fs: float = 1.0
    temperature_range_K: Tuple[float, float] = (300.0, 800.0)
    displacements: int = 6
    displacement_range_A: Tuple[float, float] = (0.02, 0.12)
    max_force: float = 50.0
    elements: Tuple[str, ...] = ("H", "C", "N", "O", "F", "S", "Cl")
    molecules_per_shard: int = 500
    save_every: int = 10

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}")
        for name in ("relax_steps", "molecules_per_shard", "save_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("md_frames", "displacements"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("relax_fmax", "md_interval_fs", "md_timestep_fs", "max_force"):
            if not 0 < float(getattr(self, name)) < float("inf"):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        self.temperature_range_K = tuple(float(t) for t in self.temperature_range_K)
        self.displacement_range_A = tuple(float(t) for t in self.displacement_range_A)
        self.elements = tuple(self.elements)


def require_dependencies() -> None:
    """Raise ImportError naming the optional extra when RDKit or tblite is missing."""
    missing = []
    for module in ("rdkit", "tblite"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(
            f"forcefield-et corpus needs {' and '.join(missing)}: pip install 'forcefield-et[corpus]' "
            "(or pip install rdkit tblite)"
        )


def read_smiles(path: str | os.PathLike) -> List[str]:
    """SMILES from a text or .gz file: the first comma-separated column of each line; a header
    line 'SMILES' and empty lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SMILES file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        rows = [line.strip().split(",")[0].strip() for line in handle]
    smiles = [s for s in rows if s and s.upper() != "SMILES"]
    if not smiles:
        raise ValueError(f"{path} holds no SMILES")
    return smiles


def embed(smiles: str, seed: int, elements: Sequence[str]) -> Tuple[np.ndarray, np.ndarray] | None:
    """(z [N], pos [N, 3] Å) of one RDKit ETKDG conformer relaxed with MMFF94, hydrogens added; None
    for an unparsable SMILES, an element outside ``elements``, or a failed embedding."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None or {atom.GetSymbol() for atom in molecule.GetAtoms()} - set(elements):
        return None
    molecule = Chem.AddHs(molecule)
    if AllChem.EmbedMolecule(molecule, randomSeed=int(seed)) != 0:
        return None
    if AllChem.MMFFHasAllMoleculeParams(molecule):
        AllChem.MMFFOptimizeMolecule(molecule, maxIters=500)
    z = np.array([atom.GetAtomicNum() for atom in molecule.GetAtoms()], dtype=np.int64)
    return z, np.asarray(molecule.GetConformer().GetPositions(), dtype=np.float64)


def charge_and_multiplicity(smiles: str) -> Tuple[int, int]:
    """(total charge in e, spin multiplicity 2S+1) of a SMILES: the sum of its formal charges, and one
    unpaired electron per radical electron (high spin); (0, 1) for an unparsable SMILES."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import Descriptors

    RDLogger.DisableLog("rdApp.*")
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        return 0, 1
    return int(Chem.GetFormalCharge(molecule)), int(Descriptors.NumRadicalElectrons(molecule)) + 1


Frame = Tuple[int, np.ndarray, float, np.ndarray, np.ndarray]  # kind, z, energy, pos, forces


def label_molecule(z: np.ndarray, pos: np.ndarray, settings: CorpusSettings, rng: np.random.Generator,
                   charge: int = 0, multiplicity: int = 1) -> List[Frame]:
    """The relaxed (kind 0), MD (kind 1) and displaced (kind 2) frames of one molecule of total
    ``charge`` (e) and spin ``multiplicity`` (2S+1)."""
    from ase import Atoms, units
    from ase.md.langevin import Langevin
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    from ..md import maxwell_boltzmann

    def calculator() -> Any:
        return TBLite(method=METHODS[settings.method], charge=charge, multiplicity=multiplicity, verbosity=0)

    def usable(forces: np.ndarray, energy: float) -> bool:
        return bool(np.isfinite(forces).all() and np.isfinite(energy) and np.abs(forces).max() <= settings.max_force)

    frames: List[Frame] = []
    atoms = Atoms(numbers=z, positions=pos)
    atoms.calc = calculator()
    try:
        converged = BFGS(atoms, logfile=None).run(fmax=settings.relax_fmax, steps=settings.relax_steps)
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    except Exception:  # noqa: BLE001 - an SCF failure skips the molecule
        return frames
    relaxed = atoms.positions.copy()
    if converged and usable(forces, energy):
        frames.append((0, z, energy, relaxed.copy(), forces.copy()))
    if settings.md_frames:
        temperature = rng.uniform(*settings.temperature_range_K)
        maxwell_boltzmann(atoms, temperature, rng)
        dynamics = Langevin(atoms, settings.md_timestep_fs * units.fs, temperature_K=temperature,
                            friction=0.02 / units.fs, fixcm=False, rng=rng)
        try:
            dynamics.run(int(round(settings.md_warmup_fs / settings.md_timestep_fs)))
            for _ in range(settings.md_frames):
                dynamics.run(max(1, int(round(settings.md_interval_fs / settings.md_timestep_fs))))
                energy, forces = atoms.get_potential_energy(), atoms.get_forces()
                if not usable(forces, energy):
                    break
                frames.append((1, z, energy, atoms.positions.copy(), forces.copy()))
        except Exception:  # noqa: BLE001 - keep the frames made before an SCF failure
            pass
    for _ in range(settings.displacements):
        sigma = rng.uniform(*settings.displacement_range_A)
        displaced = Atoms(numbers=z, positions=relaxed + rng.normal(0.0, sigma, relaxed.shape))
        displaced.calc = calculator()
        try:
            energy, forces = displaced.get_potential_energy(), displaced.get_forces()
        except Exception:  # noqa: BLE001
            continue
        if usable(forces, energy):
            frames.append((2, z, energy, displaced.positions.copy(), forces.copy()))
    return frames


def shard_path(out_dir: Path, shard: int) -> Path:
    return out_dir / f"xtb_shard{shard}.npz"


def _write_shard(path: Path, frames: List[Tuple[int, Frame]], smiles: List[str], tried: int) -> None:
    states = np.array([charge_and_multiplicity(s) for s in smiles], np.int16).reshape(-1, 2)

    def stacked(field: int, dtype: Any, width: int | None) -> np.ndarray:
        empty = np.zeros((0,) if width is None else (0, width), dtype)
        return np.concatenate([f[1][field] for f in frames]).astype(dtype) if frames else empty

    savez_atomic(
        path,
        dict(
            n_atoms=np.array([len(f[1][1]) for f in frames], np.int32),
            mol_id=np.array([f[0] for f in frames], np.int32),
            kind=np.array([f[1][0] for f in frames], np.int8),
            energy=np.array([f[1][2] for f in frames], np.float64),
            z=stacked(1, np.int8, None),
            pos=stacked(3, np.float32, 3),
            forces=stacked(4, np.float32, 3),
            smiles=np.array(smiles, dtype=str),
            charge=states[:, 0],
            multiplicity=states[:, 1],
            tried=np.array(tried, np.int64),
        ),
        compressed=True,
    )


def _read_shard(path: Path) -> Tuple[List[Tuple[int, Frame]], List[str], int]:
    with np.load(path, allow_pickle=False) as data:
        offsets = np.concatenate([[0], np.cumsum(data["n_atoms"])])
        frames = [
            (int(m), (int(k), data["z"][a:b].astype(np.int64), float(e), data["pos"][a:b].astype(np.float64),
                      data["forces"][a:b].astype(np.float64)))
            for m, k, e, a, b in zip(data["mol_id"], data["kind"], data["energy"], offsets[:-1], offsets[1:])
        ]
        return frames, [str(s) for s in data["smiles"]], int(data["tried"])


def make_corpus(
    smiles: Sequence[str],
    out_dir: str | os.PathLike,
    settings: CorpusSettings | None = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Label ``smiles`` into shards in ``out_dir`` (resuming a run there made with the same
    settings and SMILES count). Returns counts: molecules tried, kept, frames per kind."""
    require_dependencies()
    settings = settings or CorpusSettings()
    out = Path(out_dir)
    with DirectoryLock(out, "corpus folder"):
        for stale in leftover_temporaries(out):  # of writes a killed run left unfinished
            stale.unlink(missing_ok=True)
        return _make_corpus(smiles, out, settings, progress)


def _make_corpus(smiles: Sequence[str], out: Path, settings: CorpusSettings, progress: bool) -> Dict[str, Any]:
    from tqdm.auto import tqdm

    recorded = {"settings": asdict(settings), "n_smiles": len(smiles)}
    recorded = json.loads(json.dumps(recorded))  # tuples as lists, as read back
    settings_path = out / SETTINGS_FILE
    if settings_path.is_file():
        previous = json.loads(settings_path.read_text())
        if previous != recorded:
            raise ValueError(
                f"{out} holds a corpus made with other settings or another SMILES list ({settings_path}); "
                "use another --out folder"
            )
    else:
        write_text_atomic(settings_path, json.dumps(recorded, indent=2))
    per_shard = settings.molecules_per_shard
    n_shards = (len(smiles) + per_shard - 1) // per_shard
    done = 0
    for shard in range(n_shards):  # resume: the first shard not complete
        path = shard_path(out, shard)
        tried = _read_shard(path)[2] if path.is_file() else 0
        done = shard * per_shard + tried
        if tried < min(per_shard, len(smiles) - shard * per_shard):
            break
    bar = tqdm(total=len(smiles), initial=done, desc="corpus", unit="mol", disable=not progress)
    index = done
    while index < len(smiles):
        shard = index // per_shard
        path = shard_path(out, shard)
        frames, kept, tried = _read_shard(path) if path.is_file() else ([], [], 0)
        stop = min((shard + 1) * per_shard, len(smiles))
        while index < stop:
            rng = np.random.default_rng([settings.seed, index])
            geometry = embed(smiles[index], seed=int(rng.integers(2**31)), elements=settings.elements)
            new = (label_molecule(*geometry, settings, rng, *charge_and_multiplicity(smiles[index]))
                   if geometry is not None else [])
            if new:
                frames += [(len(kept), frame) for frame in new]
                kept.append(smiles[index])
            index += 1
            tried += 1
            bar.update(1)
            bar.set_postfix(molecules=len(kept), frames=len(frames))
            if tried % settings.save_every == 0 or index == stop:
                _write_shard(path, frames, kept, tried)
    bar.close()
    return summarize(out)


def summarize(out_dir: str | os.PathLike) -> Dict[str, Any]:
    """Counts over the shards in ``out_dir``: molecules tried and kept, frames per kind."""
    tried, kept, kinds = 0, 0, {0: 0, 1: 0, 2: 0}
    for path in sorted(Path(out_dir).glob("xtb_shard*.npz")):
        frames, smiles, n = _read_shard(path)
        tried, kept = tried + n, kept + len(smiles)
        for _, frame in frames:
            kinds[frame[0]] = kinds.get(frame[0], 0) + 1
    return {"molecules_tried": tried, "molecules_kept": kept, "frames_relaxed": kinds[0], "frames_md": kinds[1],
            "frames_displaced": kinds[2], "out_dir": str(out_dir)}


__all__ = ["CorpusSettings", "charge_and_multiplicity", "embed", "label_molecule", "make_corpus", "read_smiles",
           "summarize"]
