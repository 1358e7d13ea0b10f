"""Molecular dynamics with ASE: one function behind ``forcefield-et md`` and the examples.

Writes an ASE trajectory, a CSV log (time in fs, energies in eV, temperature in K, largest bond
change in Å) and a PNG of energy and temperature against time. Every saved frame is checked
against the covalent bonds of the starting structure (:mod:`forcefield_et.bonds`), so that a
molecule that falls apart is reported, and with ``max_bond_change`` the run stops there. With a
committee calculator, or a committee ``watcher`` beside any driving model, the log also holds the
largest per-atom force std of each saved frame (eV/Å), and with ``max_force_std`` the run stops at
the first frame the committee is unsure of.

With ``pressure_bar`` the run is at constant pressure and temperature (NPT): ASE's isotropic
Martyna–Tobias–Klein barostat with the Nosé–Hoover chain thermostat, for structures periodic in all
three directions. The cell keeps its shape and scales its volume; the log adds the volume (Å³), the
density (g/cm³), the instantaneous pressure (bar, virial plus ideal-gas term) and the integrator's
conserved energy (eV), which stays flat only when the stress is the strain derivative of the energy.

A run is resumable (``existing="resume"``, the default of ``forcefield-et md``): after every saved
frame ``md_state.npz`` holds the step, positions, momenta, the thermostat's random generator or
Nosé–Hoover chain and the bond reference, written atomically (:mod:`forcefield_et.files`) once the
frame's trajectory entry and log row are on disk (fsynced). A run killed at any moment, or stopped
by a power cut, and started again with the same settings drops any frame or row written after the
last state, and continues from that state: it reproduces the uninterrupted run's trajectory and log
exactly (same device, dtype and thread count), and a larger ``steps`` extends a finished run. While
a run writes into its output folder it holds the folder's lock (``.lock``,
:class:`~forcefield_et.files.DirectoryLock`): a second run on the same folder is refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.io import Trajectory
from tqdm.auto import tqdm

from .bonds import BondWatch
from .files import (
    DirectoryLock,
    atomic_path,
    fsync_file,
    leftover_temporaries,
    savez_atomic,
    write_bytes_atomic,
    write_text_atomic,
)
from .units import AMU_PER_ANGSTROM3_TO_G_PER_CM3, BAR_TO_EV_PER_ANGSTROM3, EV_PER_ANGSTROM3_TO_BAR

THERMOSTATS = ("langevin", "nose-hoover", "nve")
EXISTING_MD_POLICIES = ("overwrite", "resume")
STATE_FILE = "md_state.npz"
SETTINGS_FILE = "md_settings.json"
TRAJECTORY_FILE = "trajectory.traj"
LOG_FILE = "md_log.csv"
PLOT_FILE = "md.png"
RELAX_LOG = "relax.log"
OUTPUT_FILES = (TRAJECTORY_FILE, LOG_FILE, PLOT_FILE, RELAX_LOG, STATE_FILE, SETTINGS_FILE)


def make_dynamics(
    atoms: Atoms,
    thermostat: str,
    timestep_fs: float,
    temperature_K: float,
    friction_per_fs: float,
    seed: int,
    tdamp_fs: float = 50.0,
    pressure_bar: float | None = None,
    barostat_time_fs: float = 500.0,
):
    """An ASE dynamics object: Langevin, Nosé–Hoover chain NVT, or velocity-Verlet NVE; with
    ``pressure_bar`` (bar) and the Nosé–Hoover thermostat, isotropic MTK NPT whose barostat has the
    time constant ``barostat_time_fs`` (fs)."""
    rng = np.random.default_rng(seed)
    if pressure_bar is not None:
        _check_npt(atoms, thermostat, pressure_bar, barostat_time_fs)
        from ase.md.nose_hoover_chain import IsotropicMTKNPT

        return IsotropicMTKNPT(atoms, timestep_fs * units.fs, temperature_K=temperature_K,
                               pressure_au=pressure_bar * BAR_TO_EV_PER_ANGSTROM3, tdamp=tdamp_fs * units.fs,
                               pdamp=barostat_time_fs * units.fs)
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


def maxwell_boltzmann(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Set ``atoms``' momenta to a Maxwell-Boltzmann draw at ``temperature_K`` (K) from ``rng``
    (ASE's ``thermalize_momenta``, or its older name before ASE 3.29; the same numbers)."""
    from ase.md import velocitydistribution as vd

    thermalize = getattr(vd, "thermalize_momenta", None)
    if thermalize is not None:
        thermalize(atoms, temperature_K, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


def initial_velocities(atoms: Atoms, temperature_K: float, seed: int, remove_rotation: bool | None = None) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` (K), then zero total momentum and, for a
    non-periodic structure (or when ``remove_rotation``), zero angular momentum."""
    from ase.md import velocitydistribution as vd

    maxwell_boltzmann(atoms, temperature_K, np.random.default_rng(seed))
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
    existing: str = "overwrite",
    settings: Dict[str, Any] | None = None,
    watcher: Calculator | None = None,
    pressure_bar: float | None = None,
    barostat_time_fs: float = 500.0,
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
    (``stopped`` names the atom), typically a frame to label and add to the training data.
    ``watcher``: a committee calculator that does not drive the MD and is evaluated only at the
    saved frames; its force std is logged and checked instead of the driver's. A committee that
    drives MD shares its errors on the geometries it visits, so its own spread tends to rise only
    just before a collapse; an independent watcher (e.g. fine-tuned on more frames) sees the run
    leave the training distribution earlier (docs/uncertainty.md).

    With ``pressure_bar`` (bar; needs ``thermostat="nose-hoover"``, a structure periodic along
    a, b and c, and a calculator with stress) the cell follows an isotropic MTK barostat with time
    constant ``barostat_time_fs`` (fs); the summary adds the mean volume, density and pressure of
    the second half of the run.

    ``existing`` says what to do with a run already in ``out_dir``: ``"overwrite"`` (the default)
    starts afresh; ``"resume"`` continues it from ``md_state.npz`` when it was started with the same
    settings (these arguments except ``steps`` and ``progress``, the input structure and
    ``settings``, e.g. the model; otherwise ValueError), returns a finished or stopped run's summary
    without running, and extends a finished run to a larger ``steps``. ``atoms`` then holds the
    resumed state. ``steps_per_s`` counts the MD time of every session.

    The run holds ``out_dir``'s :class:`~forcefield_et.files.DirectoryLock` from start to end
    (released also on an error or KeyboardInterrupt): while another process runs MD into
    ``out_dir``, RuntimeError names that process and nothing in the folder is changed."""
    import time

    if atoms.calc is None:
        raise ValueError("run_md: atoms has no calculator (set atoms.calc = ETCalculator(...))")
    if max_bond_change is not None and not max_bond_change > 0:
        raise ValueError(f"run_md: max_bond_change must be a positive length in Å, got {max_bond_change}")
    if watcher is not None and "forces_std" not in getattr(watcher, "implemented_properties", ()):
        raise ValueError("run_md: watcher must be a committee calculator (ETCalculator of a committee: several "
                         "checkpoints, or forcefield-et finetune --committee); a single model has no force std")
    # the atoms whose calculator gives the force std: the driver's own, or a copy carrying the watcher
    watched = atoms if watcher is None else atoms.copy()
    if watcher is not None:
        watched.calc = watcher
    committee = "forces_std" in getattr(watched.calc, "implemented_properties", ())
    if max_force_std is not None and not max_force_std > 0:
        raise ValueError(f"run_md: max_force_std must be a positive force in eV/Å, got {max_force_std}")
    if max_force_std is not None and not committee:
        raise ValueError(
            "run_md: max_force_std needs a committee model (several checkpoints, e.g. from forcefield-et finetune "
            "--committee) or a committee watcher; a single model has no force std"
        )
    if existing not in EXISTING_MD_POLICIES:
        raise ValueError(f"run_md: existing must be one of {EXISTING_MD_POLICIES}, got {existing!r}")
    npt = pressure_bar is not None
    if npt:
        _check_npt(atoms, thermostat, pressure_bar, barostat_time_fs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with DirectoryLock(out, "MD output folder"):  # held until the run ends, also on an error or Ctrl-C
        fingerprint = {
            "structure_sha256": structure_digest(atoms),
            "timestep_fs": timestep_fs,
            "temperature_K": temperature_K,
            "thermostat": thermostat,
            "friction_per_fs": friction_per_fs,
            "interval": interval,
            "seed": seed,
            "relax_fmax": relax_fmax,
            "relax_steps": relax_steps,
            "max_bond_change": max_bond_change,
            "max_force_std": max_force_std,
            "committee": committee,
            **({"watcher": True} if watcher is not None else {}),
            **({"pressure_bar": pressure_bar, "barostat_time_fs": barostat_time_fs} if npt else {}),
            **(settings or {}),
        }
        fingerprint = json.loads(json.dumps(fingerprint, default=str))  # as it reads back from the file
        state = _prepare_out_dir(out, fingerprint, existing, steps)
        periodic = bool(atoms.pbc.any())
        relaxation: Dict[str, Any] | None
        if state is None:
            relaxation = relax(atoms, relax_fmax, relax_steps, out / RELAX_LOG) if relax_fmax is not None else None
            reference = atoms.positions.copy()
            initial_velocities(atoms, temperature_K, seed)
        else:
            meta = json.loads(str(state["meta"]))
            # said at the start, with or without a progress bar, so that a killed resume shows it too
            print(f"resuming from {out / STATE_FILE} at step {int(meta['step'])} of {steps}", file=sys.stderr,
                  flush=True)
            relaxation = meta["relaxation"]
            reference = state["reference_positions"]
            if "cell" in state:  # a barostat changed it
                atoms.set_cell(state["cell"], scale_atoms=False)
            atoms.set_positions(state["positions"])
            atoms.set_momenta(state["momenta"])
        reference_cell = atoms.cell.array.copy() if state is None or "reference_cell" not in state \
            else state["reference_cell"]
        watch = BondWatch(atoms.numbers, reference, reference_cell if periodic else None,
                          atoms.pbc.copy() if periodic else None)
        dynamics = make_dynamics(atoms, thermostat, timestep_fs, temperature_K, friction_per_fs, seed,
                                 pressure_bar=pressure_bar, barostat_time_fs=barostat_time_fs)
        fieldnames = ["time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K", "max_bond_change_A"]
        if committee:
            fieldnames.append("max_force_std_eV_A")
        if npt:
            fieldnames += ["volume_A3", "density_g_cm3", "pressure_bar", "conserved_eV"]
        rows: List[Dict[str, float]] = []
        done = 0
        md_wall_s = 0.0
        stopped: Dict[str, Any] | None = None
        if state is not None:
            done, md_wall_s, stopped = int(meta["step"]), float(meta["md_wall_s"]), meta["stopped"]
            _restore_dynamics(dynamics, meta)
            dynamics.nsteps = done
            rows = _truncate_outputs(out, int(meta["frames"]))
        log_handle = open(out / LOG_FILE, "a" if state is not None else "w", newline="")
        log_writer = csv.DictWriter(log_handle, fieldnames)
        if state is None:
            log_writer.writeheader()
        trajectory = Trajectory(str(out / TRAJECTORY_FILE), "a" if state is not None else "w", atoms)

        def current_cell() -> np.ndarray | None:  # a barostat may change the cell; bond lengths follow it
            return atoms.cell.array if periodic else None

        def save_state() -> None:
            # the frames and rows the state counts reach the disk before it: after a power cut too, the
            # state never refers to more than the trajectory and the log hold
            os.fsync(log_handle.fileno())
            fsync_file(out / TRAJECTORY_FILE)
            meta = {"step": done, "frames": len(rows), "md_wall_s": md_wall_s, "stopped": stopped,
                    "relaxation": relaxation, **_dynamics_state(dynamics)}
            arrays = {"positions": atoms.get_positions(), "momenta": atoms.get_momenta(),
                      "reference_positions": reference, "meta": np.array(json.dumps(meta))}
            if npt:
                arrays.update(cell=atoms.cell.array.copy(), reference_cell=reference_cell)
            savez_atomic(out / STATE_FILE, arrays)

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
                if watched is not atoms:
                    watched.set_cell(atoms.cell)
                    watched.set_positions(atoms.positions)
                row["max_force_std_eV_A"] = float(np.max(watched.calc.get_property("forces_std", watched)))
            if npt:
                volume = atoms.get_volume()
                row["volume_A3"] = volume
                row["density_g_cm3"] = float(atoms.get_masses().sum()) / volume * AMU_PER_ANGSTROM3_TO_G_PER_CM3
                stress = atoms.get_stress(voigt=False, include_ideal_gas=True)
                row["pressure_bar"] = -float(np.trace(stress)) / 3 * EV_PER_ANGSTROM3_TO_BAR
                row["conserved_eV"] = dynamics.get_conserved_energy()
            rows.append(row)
            trajectory.write()  # flushed by ASE before it returns
            log_writer.writerow(row)
            log_handle.flush()
            return bond_change

        bar = tqdm(
            total=steps,
            initial=done,
            disable=not progress,
            desc=f"MD {thermostat}",
            unit="step",
            mininterval=0.5 if sys.stderr.isatty() else 30.0,  # keep logs of background runs short
        )
        try:
            if state is None:
                record()
                save_state()
            while done < steps and stopped is None:
                chunk = min(interval, steps - done)
                start = time.perf_counter()
                dynamics.run(chunk)
                md_wall_s += time.perf_counter() - start
                done += chunk
                bar.update(chunk)
                bond_change = record()
                if max_bond_change is not None and bond_change > max_bond_change:
                    changes, reason = watch.broken(atoms.positions, max_bond_change, current_cell())
                    stopped = {"time_fs": done * timestep_fs, "step": done, "reason": reason, "bond_changes": changes,
                               "criterion": "max_bond_change"}
                elif max_force_std is not None and rows[-1]["max_force_std_eV_A"] > max_force_std:
                    stopped = {"time_fs": done * timestep_fs, "step": done, "criterion": "max_force_std",
                               **uncertain_atom(watched, max_force_std)}
                save_state()  # after the frame and its row: a restart drops whatever came after the last state
        finally:
            bar.close()
            trajectory.close()
            log_handle.close()
        ensemble = f"NPT ({thermostat}, MTK barostat) at {pressure_bar:g} bar" if npt else f"{thermostat} MD"
        plot_md_log(rows, out / PLOT_FILE, title=f"{ensemble}, {temperature_K:g} K, {timestep_fs:g} fs")
        etot = np.array([r["etot_eV"] for r in rows])
        summary = {
            "steps": done,
            "steps_per_s": done / md_wall_s if md_wall_s > 0 else None,  # None: no step was timed
            "ns_per_day": done * timestep_fs * 1e-6 / md_wall_s * 86400 if md_wall_s > 0 else None,
            "mean_temperature_K": float(np.mean([r["temperature_K"] for r in rows[len(rows) // 2 :]])),
            "bonds_checked": int(len(watch.bonds)),
            "max_bond_change_A": float(max(r["max_bond_change_A"] for r in rows)),
            "out_dir": str(out),
        }
        if state is not None:
            summary["resumed_from_step"] = int(meta["step"])
        if committee:
            summary["max_force_std_eV_A"] = float(max(r["max_force_std_eV_A"] for r in rows))
        if npt:
            second_half = rows[len(rows) // 2 :]
            for key in ("volume_A3", "density_g_cm3", "pressure_bar"):
                summary[f"mean_{key}"] = float(np.mean([r[key] for r in second_half]))
            conserved = np.array([r["conserved_eV"] for r in rows])
            summary["conserved_energy_drift_eV"] = float(conserved[-1] - conserved[0])
        if thermostat == "nve":  # a thermostat exchanges energy with its bath: drift means something only in NVE
            summary["total_energy_drift_eV"] = float(etot[-1] - etot[0])
        if stopped is not None:
            summary["stopped"] = stopped
        if relaxation is not None:
            summary["relaxation"] = relaxation
        return summary


def _check_npt(atoms: Atoms, thermostat: str, pressure_bar: float, barostat_time_fs: float) -> None:
    """ValueError, with the reason, where a constant-pressure run cannot be set up."""
    if not np.isfinite(pressure_bar):
        raise ValueError(f"run_md: pressure_bar must be a finite pressure in bar, got {pressure_bar}")
    if not barostat_time_fs > 0:
        raise ValueError(f"run_md: barostat_time_fs must be a positive time in fs, got {barostat_time_fs}")
    if thermostat != "nose-hoover":
        raise ValueError(f"run_md: constant pressure runs with thermostat='nose-hoover' (ASE's isotropic MTK "
                         f"barostat with a Nosé–Hoover chain), got thermostat={thermostat!r}")
    if not atoms.pbc.all():
        raise ValueError(f"run_md: constant pressure needs a structure periodic along a, b and c, got pbc="
                         f"{atoms.pbc.tolist()} (a molecule or a slab has no pressure to hold)")
    if "stress" not in getattr(atoms.calc, "implemented_properties", ()):
        raise ValueError(f"run_md: constant pressure needs a calculator with stress; "
                         f"{type(atoms.calc).__name__} has none")
    if atoms.constraints:
        raise ValueError("run_md: constant pressure does not support constraints (ASE's MTK barostat has none)")


def structure_digest(atoms: Atoms) -> str:
    """SHA-256 of a structure's atomic numbers, positions, cell and periodicity (what MD starts from)."""
    h = hashlib.sha256()
    for array in (atoms.numbers.astype(np.int64), atoms.positions.astype(np.float64),
                  atoms.cell.array.astype(np.float64), atoms.pbc.astype(np.int8)):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


# settings that earlier versions stored and that no longer define a run (compiling changes results only
# by float32 rounding): a run that stored one resumes whatever its value
RETIRED_SETTINGS = ("compile",)


def _differences(stored: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    keys = (set(stored) | set(current)) - set(RETIRED_SETTINGS)
    return sorted(key for key in keys if stored.get(key) != current.get(key))


def _prepare_out_dir(out: Path, fingerprint: Dict[str, Any], existing: str, steps: int) -> Any:
    """Check ``out`` against ``existing`` and return the saved state to resume from (None: start
    afresh, after removing the outputs of a run that had saved no state yet)."""
    for stale in leftover_temporaries(out, OUTPUT_FILES):  # of an interrupted write: never complete
        stale.unlink()
    settings_path, state_path = out / SETTINGS_FILE, out / STATE_FILE
    state = None
    if existing == "resume":
        if settings_path.exists():
            stored = json.loads(settings_path.read_text())
            changed = _differences(stored, fingerprint)
            if changed:
                raise ValueError(
                    f"{out} holds an MD run with other settings (differs in: {', '.join(changed)}); rerun it with its "
                    "own settings, choose another --out, or pass --overwrite to replace it"
                )
            if state_path.exists():
                state = np.load(state_path)
                meta = json.loads(str(state["meta"]))
                if int(meta["step"]) > steps:
                    raise ValueError(
                        f"{out} holds an MD run of {meta['step']} steps, more than the {steps} asked for; ask for at "
                        "least as many steps, choose another --out, or pass --overwrite to replace it"
                    )
        elif any((out / name).exists() for name in OUTPUT_FILES):
            raise ValueError(
                f"{out} holds MD output without {SETTINGS_FILE} (not a resumable run); choose another --out or pass "
                "--overwrite to replace it"
            )
    if state is None:
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
        write_text_atomic(settings_path, json.dumps(fingerprint, indent=2))
    return state


def _dynamics_state(dynamics: Any) -> Dict[str, Any]:
    """What an ASE integrator carries from step to step besides positions and momenta: the
    Langevin random generator's state, the Nosé–Hoover chain's coordinates and momenta, and the
    MTK barostat's strain, its momentum and chain."""
    state: Dict[str, Any] = {}
    rng = getattr(dynamics, "rng", None)
    if rng is not None and hasattr(rng, "bit_generator"):
        state["rng"] = rng.bit_generator.state
    thermostat = getattr(dynamics, "_thermostat", None)
    if thermostat is not None:
        state["eta"] = np.array(thermostat._eta, dtype=np.float64).tolist()
        state["p_eta"] = np.array(thermostat._p_eta, dtype=np.float64).tolist()
    barostat = getattr(dynamics, "_barostat", None)
    if barostat is not None:  # isotropic MTK: cell = cell0 * exp(eps), its momentum and its chain
        state["barostat"] = {
            "xi": barostat._xi.tolist(), "p_xi": barostat._p_xi.tolist(), "eps": float(dynamics._eps),
            "p_eps": float(dynamics._p_eps), "cell0": dynamics._cell0.tolist(), "volume0": float(dynamics._volume0),
        }
    return state


def _restore_dynamics(dynamics: Any, meta: Dict[str, Any]) -> None:
    if "rng" in meta:
        dynamics.rng.bit_generator.state = meta["rng"]
    if "eta" in meta:  # JSON keeps floats exactly (shortest repr)
        thermostat = dynamics._thermostat
        thermostat._eta = np.array(meta["eta"], dtype=np.float64)
        thermostat._p_eta = np.array(meta["p_eta"], dtype=np.float64)
    if "barostat" in meta:
        saved = meta["barostat"]
        dynamics._barostat._xi = np.array(saved["xi"], dtype=np.float64)
        dynamics._barostat._p_xi = np.array(saved["p_xi"], dtype=np.float64)
        dynamics._eps, dynamics._p_eps = saved["eps"], saved["p_eps"]
        dynamics._cell0, dynamics._volume0 = np.array(saved["cell0"], dtype=np.float64), saved["volume0"]
        dynamics._update_atoms()  # the same cell as saved: cell0 * exp(eps), computed as the run did


def _truncate_outputs(out: Path, frames: int) -> List[Dict[str, float]]:
    """Cut trajectory.traj and md_log.csv back to the first ``frames`` saved frames (a run killed
    after writing a frame but before saving its state leaves one more); returns the log's rows."""
    with open(out / LOG_FILE, newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    if len(lines) < frames + 1:
        raise ValueError(f"{out / LOG_FILE} holds {len(lines) - 1} rows, fewer than the {frames} frames of "
                         f"{out / STATE_FILE}: the run cannot be resumed; pass --overwrite to start afresh")
    text = "".join(lines[: frames + 1])
    if len(lines) > frames + 1 or not text.endswith("\n"):
        write_text_atomic(out / LOG_FILE, text)
    with Trajectory(str(out / TRAJECTORY_FILE)) as trajectory:
        saved = len(trajectory)
        if saved < frames:
            raise ValueError(f"{out / TRAJECTORY_FILE} holds {saved} frames, fewer than the {frames} of "
                             f"{out / STATE_FILE}: the run cannot be resumed; pass --overwrite to start afresh")
        kept = [trajectory[i] for i in range(frames)] if saved > frames else None
    if kept is not None:
        with atomic_path(out / TRAJECTORY_FILE) as tmp, Trajectory(str(tmp), "w") as trajectory:
            for frame in kept:
                trajectory.write(frame)
    with open(out / LOG_FILE, newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


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
    """PNG with potential/kinetic/total energy and temperature against time (and the density, for
    a constant-pressure run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([r["time_fs"] for r in rows]) / 1000.0
    npt = bool(rows) and "density_g_cm3" in rows[0]
    fig, axes = plt.subplots(3 if npt else 2, 1, figsize=(7, 7 if npt else 5), sharex=True)
    ax_e, ax_t = axes[0], axes[1]
    for key, label in (("epot_eV", "potential"), ("ekin_eV", "kinetic"), ("etot_eV", "total")):
        values = np.array([r[key] for r in rows])
        ax_e.plot(t, values - values[0], label=label)
    ax_e.set_ylabel("E − E(0) (eV)")
    ax_e.legend(loc="best", fontsize=8)
    ax_t.plot(t, [r["temperature_K"] for r in rows], color="C3")
    ax_t.set_ylabel("T (K)")
    if npt:
        axes[2].plot(t, [r["density_g_cm3"] for r in rows], color="C4")
        axes[2].set_ylabel("density (g/cm³)")
    axes[-1].set_xlabel("time (ps)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return Path(path)
