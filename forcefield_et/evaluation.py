"""Model evaluation on a dataset: energy/force errors as JSON plus a parity plot, and optionally
the predictions themselves as extxyz (with per-atom force errors where the data has labels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import torch

from .data import read_dataset
from .data.conformations import ConformationSet
from .files import atomic_path, write_text_atomic
from .inference import Evaluator
from .model import Potential
from .registry import load_model


def memory_batches(model: Potential, tensors: Any, batch_size: int) -> List[torch.Tensor]:
    """Frame indices of consecutive batches of a ``TensorConformations`` for energy+forces calls of
    ``model``: at most ``batch_size`` frames each, and small enough for the available memory
    (:meth:`forcefield_et.inference.Evaluator.memory_batches`)."""
    return Evaluator.wrap(model).memory_batches(tensors, batch_size)


def predict(
    model: Union[Potential, Evaluator], data: ConformationSet, batch_size: int = 32, progress: bool = False
) -> Dict[str, np.ndarray]:
    """Predicted energies [F] (eV) and forces [A, 3] (eV/Å) for every frame of ``data``, and stress
    [F, 3, 3] (eV/Å³) where ``data`` has stress labels, in batches of at most ``batch_size`` frames
    that fit in the available memory (:meth:`forcefield_et.inference.Evaluator.predict`; a model is
    used in its device and dtype)."""
    evaluator = model if isinstance(model, Evaluator) else Evaluator.wrap(model)
    keys = ("energy", "forces", "stress") if data.has_stress.any() else ("energy", "forces")
    return evaluator.predict(data, batch_size=batch_size, progress=progress, keys=keys)


def error_metrics(
    data: ConformationSet, prediction: Dict[str, np.ndarray], by_element: bool = False
) -> Dict[str, Any]:
    """Energy MAE/RMSE (meV, and meV/atom), force MAE/RMSE (meV/Å) and, where ``prediction`` has a
    stress, stress MAE/RMSE (meV/Å³, over the components) over labelled frames. With
    ``by_element``: also the force MAE and RMSE of each element's atoms, the largest per-atom
    force error (norm of the error vector, meV/Å) and the force RMSE relative to the RMS of the
    reference forces (%)."""
    metrics: Dict[str, Any] = {"frames": int(len(data)), "atoms": int(data.n_atoms.sum())}
    if data.energy is not None and np.isfinite(data.energy).any():
        ok = np.isfinite(data.energy)
        err = prediction["energy"][ok] - data.energy[ok]
        metrics["energy_mae_meV"] = float(1000 * np.abs(err).mean())
        metrics["energy_rmse_meV"] = float(1000 * np.sqrt((err**2).mean()))
        metrics["energy_mae_meV_per_atom"] = float(1000 * np.abs(err / data.n_atoms[ok]).mean())
    if data.forces is not None:
        ok = np.isfinite(data.forces).all(axis=1)
        err = prediction["forces"][ok] - data.forces[ok]
        metrics["force_mae_meV_A"] = float(1000 * np.abs(err).mean())
        metrics["force_rmse_meV_A"] = float(1000 * np.sqrt((err**2).mean()))
        if by_element and ok.any():
            metrics.update(_force_error_details(data.z[ok], err, data.forces[ok]))
    labels = data.stress_labels if "stress" in prediction else np.zeros((0, 3, 3))
    ok = np.isfinite(labels).all(axis=(1, 2))
    if ok.any():
        err = prediction["stress"][ok] - labels[ok]
        metrics["stress_frames"] = int(ok.sum())
        metrics["stress_mae_meV_A3"] = float(1000 * np.abs(err).mean())
        metrics["stress_rmse_meV_A3"] = float(1000 * np.sqrt((err**2).mean()))
    return metrics


def _force_error_details(numbers: np.ndarray, error: np.ndarray, reference: np.ndarray) -> Dict[str, Any]:
    """Per-element force MAE/RMSE (meV/Å), the largest per-atom error norm (meV/Å) and the
    relative force RMSE (%) of atoms with atomic ``numbers`` [A], ``error`` and ``reference`` [A, 3] (eV/Å)."""
    from .elements import symbol

    details: Dict[str, Any] = {"force_mae_meV_A_by_element": {}, "force_rmse_meV_A_by_element": {}}
    for z in np.unique(numbers):
        element_error = error[numbers == z]
        details["force_mae_meV_A_by_element"][symbol(int(z))] = float(1000 * np.abs(element_error).mean())
        details["force_rmse_meV_A_by_element"][symbol(int(z))] = float(1000 * np.sqrt((element_error**2).mean()))
    details["force_max_atom_error_meV_A"] = float(1000 * np.linalg.norm(error, axis=1).max())
    reference_rms = float(np.sqrt((reference**2).mean()))
    if reference_rms > 0:
        details["force_rmse_percent"] = float(100 * np.sqrt((error**2).mean()) / reference_rms)
    return details


def has_labels(data: ConformationSet) -> bool:
    """Whether ``data`` carries any finite energy or force label."""
    energies = data.energy is not None and bool(np.isfinite(data.energy).any())
    forces = data.forces is not None and bool(np.isfinite(data.forces).any())
    return energies or forces


def write_predictions(data: ConformationSet, prediction: Dict[str, np.ndarray], path: Union[str, Path]) -> Path:
    """extxyz with each frame's predicted energy (``info['predicted_energy']``, eV) and forces
    (``arrays['predicted_forces']``, eV/Å); where the data has labels also ``reference_energy``,
    ``reference_forces`` and the per-atom force error ``force_error`` (|F_pred - F_ref|, eV/Å); where
    the prediction has a stress, ``predicted_stress`` (and ``reference_stress`` for a labelled frame),
    3x3 in eV/Å³. Written atomically (:func:`forcefield_et.files.atomic_path`)."""
    from ase import Atoms
    from ase.io import write

    frames = []
    stress_labels = data.stress_labels if "stress" in prediction else None
    for k in range(len(data)):
        a, b = data.offsets[k], data.offsets[k + 1]
        atoms = Atoms(numbers=data.z[a:b], positions=data.pos[a:b])
        if data.cell is not None:
            atoms.cell, atoms.pbc = data.cell[k], np.linalg.norm(data.cell[k], axis=1) > 0
        atoms.info["predicted_energy"] = float(prediction["energy"][k])
        atoms.arrays["predicted_forces"] = prediction["forces"][a:b]
        if data.energy is not None and np.isfinite(data.energy[k]):
            atoms.info["reference_energy"] = float(data.energy[k])
        if data.forces is not None and np.isfinite(data.forces[a:b]).all():
            atoms.arrays["reference_forces"] = data.forces[a:b]
            atoms.arrays["force_error"] = np.linalg.norm(prediction["forces"][a:b] - data.forces[a:b], axis=1)
        if stress_labels is not None:
            atoms.info["predicted_stress"] = prediction["stress"][k]
            if np.isfinite(stress_labels[k]).all():
                atoms.info["reference_stress"] = stress_labels[k]
        frames.append(atoms)
    path = Path(path)
    with atomic_path(path) as tmp:
        write(tmp, frames, format="extxyz")
    return path


def parity_plot(
    data: ConformationSet, prediction: Dict[str, np.ndarray], path: Union[str, Path], title: str = ""
) -> Path:
    """Write a PNG with energy (per atom, shifted by the mean) and force-component parity panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    if data.energy is not None and np.isfinite(data.energy).any():
        ok = np.isfinite(data.energy)
        ref = data.energy[ok] / data.n_atoms[ok]
        pred = prediction["energy"][ok] / data.n_atoms[ok]
        shift = ref.mean()
        axes[0].scatter(ref - shift, pred - shift, s=4, alpha=0.5)
        lims = [min((ref - shift).min(), (pred - shift).min()), max((ref - shift).max(), (pred - shift).max())]
        axes[0].plot(lims, lims, "k--", lw=0.8)
        axes[0].set_xlabel("reference E/atom − mean (eV)")
        axes[0].set_ylabel("predicted E/atom − mean (eV)")
    else:
        axes[0].text(0.5, 0.5, "no energies", ha="center")
    if data.forces is not None:
        ok = np.isfinite(data.forces).all(axis=1)
        ref, pred = data.forces[ok].ravel(), prediction["forces"][ok].ravel()
        if len(ref) > 200_000:
            pick = np.random.default_rng(0).choice(len(ref), 200_000, replace=False)
            ref, pred = ref[pick], pred[pick]
        axes[1].scatter(ref, pred, s=2, alpha=0.3)
        lims = [min(ref.min(), pred.min()), max(ref.max(), pred.max())]
        axes[1].plot(lims, lims, "k--", lw=0.8)
        axes[1].set_xlabel("reference force component (eV/Å)")
        axes[1].set_ylabel("predicted (eV/Å)")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def evaluate_model(
    model: Union[str, Potential],
    data: Union[str, Path, ConformationSet],
    out_dir: Union[str, Path] | None = None,
    data_format: str = "auto",
    max_frames: int | None = None,
    dtype: str = "float32",
    batch_size: int = 32,
    progress: bool = False,
    predictions: bool = False,
    device: Union[str, torch.device] = "cpu",
    threads: int | None = None,
) -> Dict[str, Any]:
    """Evaluate ``model`` on ``data``; with ``out_dir``, write metrics.json and parity.png there
    (and ``predictions.extxyz`` with ``predictions``). Data without labels gives predictions only:
    the metrics say ``"labels": false``, and no parity plot is drawn. ``device``: ``"cpu"``,
    ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available), for a model given by name or path;
    ``threads``: torch CPU threads (None or 0: :func:`forcefield_et.runtime.choose_threads` for one
    batch)."""
    from .runtime import apply_threads, resolve_device

    name = model if isinstance(model, str) else type(model).__name__
    if not isinstance(model, torch.nn.Module):
        model = load_model(model, device=resolve_device(device), dtype=dtype)
    if not isinstance(data, ConformationSet):
        source = str(data)
        data = read_dataset(data, format=None if data_format == "auto" else data_format)
    else:
        source = data.source
    if max_frames is not None and len(data) > max_frames:
        data = data.subset(np.arange(max_frames))
    if model.head.scale.device.type == "cpu" and len(data):
        apply_threads(int(round(min(batch_size, len(data)) * float(np.mean(data.n_atoms)))), requested=threads or None)
    prediction = predict(model, data, batch_size=batch_size, progress=progress)
    labelled = has_labels(data)
    metrics = error_metrics(data, prediction, by_element=True) if labelled else {"frames": int(len(data)),
                                                                 "atoms": int(data.n_atoms.sum())}
    metrics.update({"model": str(name), "data": source, "labels": labelled})
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
        if labelled:
            parity_plot(data, prediction, out / "parity.png", title=f"{name} on {Path(source).name}")
        if predictions or not labelled:
            write_predictions(data, prediction, out / "predictions.extxyz")
    return metrics
