"""GFN2-xTB Langevin trajectories (tblite through ASE) as a source of geometries that no model
trained on: benchmarks take frames from them as new or out-of-distribution test geometries. The
frames are data made here; :func:`cached_xtb_frames` keeps them under ``runs/xtb_md/``, never in
the repository."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .io import savez_atomic
from .paths import RUNS_DIR

CACHE_DIR = RUNS_DIR / "xtb_md"


def xtb_frames(z: np.ndarray, start: np.ndarray, n_frames: int, temperature_K: float = 500.0,
               timestep_fs: float = 0.5, equilibration_ps: float = 1.0, interval_ps: float = 0.25,
               seed: int = 0) -> np.ndarray:
    """Positions [n_frames, N, 3] (Å) of a GFN2-xTB Langevin trajectory (friction 0.01 fs^-1) from
    ``start`` (Å), with Maxwell-Boltzmann velocities at ``temperature_K``: after ``equilibration_ps``,
    one frame every ``interval_ps``."""
    from ase import Atoms, units
    from ase.md.langevin import Langevin
    from tblite.ase import TBLite

    from forcefield_et.md import maxwell_boltzmann

    rng = np.random.default_rng(seed)
    atoms = Atoms(numbers=z, positions=start)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    maxwell_boltzmann(atoms, temperature_K, rng)
    # fixcm stays at ASE's default (True, deprecated since ASE 3.28): the held-out frames behind the
    # published xtb_md figures were made with it, and frames made with fixcm=False would differ
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The implementation of `fixcm=True`", FutureWarning)
        dynamics = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K, friction=0.01 / units.fs,
                            rng=rng)
    dynamics.run(int(round(1000 * equilibration_ps / timestep_fs)))
    frames = []
    for _ in range(n_frames):
        dynamics.run(int(round(1000 * interval_ps / timestep_fs)))
        frames.append(atoms.positions.copy())
    return np.array(frames)


def cached_xtb_frames(name: str, z: np.ndarray, start: np.ndarray, n_frames: int, cache_dir: Path | None = None,
                      **settings: float) -> np.ndarray:
    """:func:`xtb_frames`, kept in ``cache_dir/<name>.npz`` (default :data:`CACHE_DIR`) with its
    settings; a cached file made with other settings or another start is made again."""
    path = Path(cache_dir if cache_dir is not None else CACHE_DIR) / f"{name}.npz"
    key = np.array(sorted(f"{k}={v}" for k, v in {**settings, "n_frames": n_frames}.items()))
    if path.is_file():
        stored = np.load(path)
        if (np.array_equal(stored["key"], key) and np.array_equal(stored["z"], z)
                and np.allclose(stored["start"], start)):
            return stored["positions"]
    positions = xtb_frames(z, start, n_frames, **settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    savez_atomic(path, key=key, z=z, start=start, positions=positions)
    return positions
