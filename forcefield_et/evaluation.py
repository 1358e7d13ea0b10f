"""Model evaluation on a labelled dataset: energy/force errors as JSON plus a parity plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from .checkpoint import load_model
from .data import read_dataset
from .data.conformations import ConformationSet
from .model import Potential


def predict(model: Potential, data: ConformationSet, batch_size: int = 32) -> Dict[str, np.ndarray]:
    """Predicted energies [F] (eV) and forces [A, 3] (eV/Å) for every frame of ``data``."""
    from .training.batching import TensorConformations

    dtype = model.head.scale.dtype
    device = model.head.scale.device
    tensors = TensorConformations(data, dtype)
    energies, forces = [], []
    for start in range(0, len(data), batch_size):
        batch = tensors.gather(torch.arange(start, min(start + batch_size, len(data))))
        cell = batch.get("cell")
        out = model(
            batch["z"].to(device),
            batch["pos"].to(device),
            batch["batch"].to(device),
            None if cell is None else cell.to(device),
        )
        energies.append(out["energy"].detach().double().cpu())
        forces.append(out["forces"].detach().double().cpu())
    return {"energy": torch.cat(energies).numpy(), "forces": torch.cat(forces).numpy()}


def error_metrics(data: ConformationSet, prediction: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """Energy MAE/RMSE (meV, and meV/atom), force MAE/RMSE (meV/Å) over labelled frames."""
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
    return metrics


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
) -> Dict[str, Any]:
    """Evaluate ``model`` on ``data``; with ``out_dir``, write metrics.json and parity.png there."""
    name = model if isinstance(model, str) else type(model).__name__
    if not isinstance(model, torch.nn.Module):
        model = load_model(model, dtype=dtype)
    if not isinstance(data, ConformationSet):
        source = str(data)
        data = read_dataset(data, format=None if data_format == "auto" else data_format)
    else:
        source = data.source
    if max_frames is not None and len(data) > max_frames:
        data = data.subset(np.arange(max_frames))
    prediction = predict(model, data, batch_size=batch_size)
    metrics = error_metrics(data, prediction)
    metrics.update({"model": str(name), "data": source})
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        parity_plot(data, prediction, out / "parity.png", title=f"{name} on {Path(source).name}")
    return metrics
