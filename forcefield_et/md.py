"""Molecular dynamics with ASE: one function behind ``forcefield-et md`` and the examples.

Writes an ASE trajectory, a CSV log (time in fs, energies in eV, temperature in K, largest bond
change in Å) and a PNG of energy and temperature against time. Every saved frame is checked
against the covalent bonds of the starting structure (:mod:`forcefield_et.bonds`), so that a
molecule that falls apart is reported, and with ``max_bond_change`` the run stops there. With a
committee calculator, the log also holds the largest per-atom force std of each saved frame
(eV/Å), and with ``max_force_std`` the run stops at the first frame the committee is unsure of.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
from ase import Atoms, units
from ase.io import Trajectory
from tqdm.auto import tqdm

from .bonds import BondWatch

THERMOSTATS = ("langevin", "nose-hoover", "nve")


def make_dynamics(
    atoms: Atoms,
    thermostat: str,
    timestep_fs: float,
    temperature_K: float,
    friction_per_fs: float,
    seed: int,
    tdamp_fs: float = 50.0,
):
    """An ASE dynamics object: Langevin, Nosé–Hoover chain NVT, or velocity-Verlet NVE."""
    rng = np.random.default_rng(seed)
    if thermostat == "langevin":
        from ase.md.langevin import Langevin

        # fixcm=False: ASE >= 3.28 deprecates fixcm=True (it biases the NVT distribution of small
        # systems); the centre of mass of a free molecule may then diffuse, which changes nothing.
        return Langevin(
            atoms,
            timestep_fs * units.fs,
            temperature_K=temperature_K,
            friction=friction_per_fs / units.fs,
            fixcm=False,
            rng=rng,
        )
    if thermostat == "nose-hoover":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(atoms, timestep_fs * units.fs, temperature_K=temperature_K, tdamp=tdamp_fs * units.fs)
    if thermostat == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep_fs * units.fs)
    raise ValueError(f"thermostat must be one of {THERMOSTATS}, got {thermostat!r}")


def initial_velocities(atoms: Atoms, temperature_K: float, seed: int, remove_rotation: bool | None = None) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` (K), then zero total momentum and, for a
    non-periodic structure (or when ``remove_rotation``), zero angular momentum."""
    from ase.md import velocitydistribution as vd

    rng = np.random.default_rng(seed)
    thermalize = getattr(vd, "thermalize_momenta", None)  # ASE >= 3.29 deprecates the older name
    if thermalize is not None:
        thermalize(atoms, temperature_K, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    vd.Stationary(atoms)
    if remove_rotation if remove_rotation is not None else not atoms.pbc.any():
        vd.ZeroRotation(atoms)


def run_md(
    atoms: Atoms,
    out_dir: Union[str, Path],
    steps: int = 2000,
    timestep_fs: float = 0.5,
    temperature_K: float = 300.0,
    thermostat: str = "langevin",
    friction_per_fs: float = 0.01,
    interval: int = 10,
    seed: int = 0,
    progress: bool = True,
    relax_fmax: float | None = None,
    relax_steps: int = 500,
    max_bond_change: float | None = None,
    max_force_std: float | None = None,
) -> Dict[str, Any]:
    """Run MD on ``atoms`` (which must have a calculator) and write trajectory.traj, md_log.csv
    and md.png into ``out_dir``. Returns a summary (steps/s, mean temperature, energy drift in NVE, the
    largest bond change).

    With ``relax_fmax`` (eV/Å), the structure is first relaxed with FIRE to that largest atomic
    force (at most ``relax_steps`` steps), so that MD starts near the model's own minimum instead
    of heating up from the potential energy of the input geometry.

    The covalent bonds of the structure MD starts from are checked at every saved frame
    (``max_bond_change_A`` in the log and the summary: the largest |length - start length|, Å).
    With ``max_bond_change`` (Å; MDsim's collapse criterion is 0.5) the run stops at the first
    saved frame beyond it, and the summary's ``stopped`` says when and which bonds changed.

    With a committee calculator (results ``forces_std``, see :class:`~forcefield_et.ETCalculator`),
    every saved frame's largest per-atom force std is logged (``max_force_std_eV_A``) and
    summarised; with ``max_force_std`` (eV/Å) the run stops at the first saved frame beyond it
    (``stopped`` names the atom), typically a frame to label and add to the training data."""
    import time

    if atoms.calc is None:
        raise ValueError("run_md: atoms has no calculator (set atoms.calc = ETCalculator(...))")
    if max_bond_change is not None and not max_bond_change > 0:
        raise ValueError(f"run_md: max_bond_change must be a positive length in Å, got {max_bond_change}")
    committee = "forces_std" in getattr(atoms.calc, "implemented_properties", ())
    if max_force_std is not None and not max_force_std > 0:
        raise ValueError(f"run_md: max_force_std must be a positive force in eV/Å, got {max_force_std}")
    if max_force_std is not None and not committee:
        raise ValueError(
            "run_md: max_force_std needs a committee model (several checkpoints, e.g. from forcefield-et finetune "
            "--committee); a single model has no force std"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    relaxation = relax(atoms, relax_fmax, relax_steps, out / "relax.log") if relax_fmax is not None else None
    periodic = bool(atoms.pbc.any())
    watch = BondWatch(atoms.numbers, atoms.positions, atoms.cell.array.copy() if periodic else None,
                      atoms.pbc.copy() if periodic else None)
    initial_velocities(atoms, temperature_K, seed)
    dynamics = make_dynamics(atoms, thermostat, timestep_fs, temperature_K, friction_per_fs, seed)
    rows: List[Dict[str, float]] = []
    trajectory = Trajectory(str(out / "trajectory.traj"), "w", atoms)

    def current_cell() -> np.ndarray | None:  # a barostat may change the cell; bond lengths follow it
        return atoms.cell.array if periodic else None

    def record() -> float:
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        bond_change = watch.change(atoms.positions, current_cell())
        row = {
            "time_fs": dynamics.nsteps * timestep_fs,
            "epot_eV": epot,
            "ekin_eV": ekin,
            "etot_eV": epot + ekin,
            "temperature_K": atoms.get_temperature(),
            "max_bond_change_A": bond_change,
        }
        if committee:
            row["max_force_std_eV_A"] = float(np.max(atoms.calc.get_property("forces_std", atoms)))
        rows.append(row)
        trajectory.write()
        return bond_change

    record()
    bar = tqdm(
        total=steps,
        disable=not progress,
        desc=f"MD {thermostat}",
        unit="step",
        mininterval=0.5 if sys.stderr.isatty() else 30.0,  # keep logs of background runs short
    )
    start = time.perf_counter()
    done = 0
    stopped: Dict[str, Any] | None = None
    try:
        while done < steps:
            chunk = min(interval, steps - done)
            dynamics.run(chunk)
            done += chunk
            bar.update(chunk)
            bond_change = record()
            if max_bond_change is not None and bond_change > max_bond_change:
                changes, reason = watch.broken(atoms.positions, max_bond_change, current_cell())
                stopped = {"time_fs": done * timestep_fs, "step": done, "reason": reason, "bond_changes": changes,
                           "criterion": "max_bond_change"}
                break
            if max_force_std is not None and rows[-1]["max_force_std_eV_A"] > max_force_std:
                stopped = {"time_fs": done * timestep_fs, "step": done, "criterion": "max_force_std",
                           **uncertain_atom(atoms, max_force_std)}
                break
    finally:
        bar.close()
        trajectory.close()
    elapsed = time.perf_counter() - start
    with open(out / "md_log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_md_log(rows, out / "md.png", title=f"{thermostat} MD, {temperature_K:g} K, {timestep_fs:g} fs")
    etot = np.array([r["etot_eV"] for r in rows])
    summary = {
        "steps": done,
        "steps_per_s": done / elapsed,
        "ns_per_day": done * timestep_fs * 1e-6 / elapsed * 86400,
        "mean_temperature_K": float(np.mean([r["temperature_K"] for r in rows[len(rows) // 2 :]])),
        "bonds_checked": int(len(watch.bonds)),
        "max_bond_change_A": float(max(r["max_bond_change_A"] for r in rows)),
        "out_dir": str(out),
    }
    if committee:
        summary["max_force_std_eV_A"] = float(max(r["max_force_std_eV_A"] for r in rows))
    if thermostat == "nve":  # a thermostat exchanges energy with its bath: drift means something only in NVE
        summary["total_energy_drift_eV"] = float(etot[-1] - etot[0])
    if stopped is not None:
        summary["stopped"] = stopped
    if relaxation is not None:
        summary["relaxation"] = relaxation
    return summary


def uncertain_atom(atoms: Atoms, threshold: float) -> Dict[str, Any]:
    """The atom with the largest committee force std (eV/Å) in ``atoms``' current results, and a
    one-line reason naming it against ``threshold`` (eV/Å)."""
    from ase.data import chemical_symbols

    std = np.asarray(atoms.calc.get_property("forces_std", atoms))
    index = int(np.argmax(std))
    name = f"{chemical_symbols[int(atoms.numbers[index])]}{index}"
    return {
        "reason": f"the committee's force std on atom {name} is {std[index]:.3g} eV/Å, above --max-force-std "
        f"{threshold:g} eV/Å: the model is unsure here (label this frame and add it to the training data)",
        "atom": index,
        "force_std_eV_A": float(std[index]),
    }


def relax(atoms: Atoms, fmax: float, max_steps: int, logfile: Union[str, Path, None] = None) -> Dict[str, Any]:
    """Relax ``atoms`` in place with FIRE until the largest atomic force is below ``fmax``
    (eV/Å) or ``max_steps`` is reached. Returns the energy change (eV), steps and final fmax."""
    from ase.optimize import FIRE

    energy_before = atoms.get_potential_energy()
    optimizer = FIRE(atoms, logfile=str(logfile) if logfile is not None else None)
    converged = bool(optimizer.run(fmax=fmax, steps=max_steps))
    return {
        "converged": converged,
        "steps": int(optimizer.nsteps),
        "fmax_eV_A": float(np.linalg.norm(atoms.get_forces(), axis=1).max()),
        "energy_change_eV": float(atoms.get_potential_energy() - energy_before),
    }


def plot_md_log(rows: List[Dict[str, float]], path: Union[str, Path], title: str | None = None) -> Path:
    """PNG with potential/kinetic/total energy and temperature against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([r["time_fs"] for r in rows]) / 1000.0
    fig, (ax_e, ax_t) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for key, label in (("epot_eV", "potential"), ("ekin_eV", "kinetic"), ("etot_eV", "total")):
        values = np.array([r[key] for r in rows])
        ax_e.plot(t, values - values[0], label=label)
    ax_e.set_ylabel("E − E(0) (eV)")
    ax_e.legend(loc="best", fontsize=8)
    ax_t.plot(t, [r["temperature_K"] for r in rows], color="C3")
    ax_t.set_ylabel("T (K)")
    ax_t.set_xlabel("time (ps)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
