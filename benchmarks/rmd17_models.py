"""The bundled ``rmd17-<molecule>`` models: a fine-tuning run's best weights exported as an inference
checkpoint with its model card (data, recipe, cost, validation and test errors, training domain, priors).

    python -m benchmarks.finetune_converged --bundle --zbl 0.75    # from the converged study
    python -m benchmarks.finetune_study --bundle                   # from the short-budget study

The ZBL repulsion prior (:mod:`forcefield_et.model.priors`) has no weights. Where it is zero at every
atom pair of the training frames (each pair farther apart than the prior's switch-off distance,
``radius_scale`` times the sum of the two covalent radii), a model trained without it and one trained
with it are the same model, so the prior can be switched on at export: :func:`export_rmd17_model`
checks that condition on the training frames and refuses otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

import numpy as np

from forcefield_et.checkpoint import atomic_torch_save, checksum, read_checkpoint
from forcefield_et.data import read_rmd17
from forcefield_et.domain import training_domain
from forcefield_et.model.priors import covalent_radii
from forcefield_et.registry import export_checkpoint

from .paths import DATA_ROOT, rmd17_file

LEVEL_OF_THEORY = "PBE/def2-SVP (rMD17, Christensen & von Lilienfeld 2020)"
TRAIN_FRAMES = 950  # frames 0-949 of train_01 are the largest training set; 950-999 validate


def rmd17_training_domain(molecule: str, data_root: Path = DATA_ROOT, n_train: int = TRAIN_FRAMES) -> Dict[str, Any]:
    """The ``training_domain`` card entry of a model fitted to the first ``n_train`` rMD17 train_01 frames."""
    data = read_rmd17(rmd17_file(molecule, "train", data_root), max_frames=n_train)
    return training_domain(data.z, data.n_atoms)


def closest_pair_ratio(molecule: str, data_root: Path = DATA_ROOT, n_train: int = TRAIN_FRAMES) -> float:
    """The smallest r_ij / (r_cov,i + r_cov,j) over every atom pair of the first ``n_train`` rMD17
    train_01 frames (distances in Å, covalent radii as in :func:`~forcefield_et.model.priors.covalent_radii`).
    A ZBL prior with ``radius_scale`` below this value is zero on all of those frames."""
    return frames_closest_pair_ratio(read_rmd17(rmd17_file(molecule, "train", data_root), max_frames=n_train))


def frames_closest_pair_ratio(data: Any) -> float:
    """:func:`closest_pair_ratio` of frames already read (one molecule, a ConformationSet)."""
    n_atoms = int(data.n_atoms[0])
    positions = data.pos.reshape(len(data), n_atoms, 3)
    radii = np.asarray(covalent_radii(data.z[:n_atoms].tolist()))
    i, j = np.triu_indices(n_atoms, k=1)
    distances = np.linalg.norm(positions[:, j] - positions[:, i], axis=-1)  # [F, pairs]
    return float((distances / (radii[i] + radii[j])).min())


def export_rmd17_model(
    run_dir: Path, destination: Path, molecule: str, card: Dict[str, Any], n_train: int = TRAIN_FRAMES,
    data_root: Path = DATA_ROOT, zbl: float = 0.0, also_trained_on: Sequence[str] = (),
) -> Path:
    """Export ``run_dir/best.pt`` to ``destination`` with the ``card`` entries, plus the level of theory,
    the training domain (when the rMD17 files are there) and, for ``zbl`` > 0, the ZBL prior switched
    off at ``zbl`` times the covalent-radii sum (ValueError where it would act on a training frame: the
    first ``n_train`` frames of ``molecule`` and every train frame of the ``also_trained_on`` molecules,
    e.g. replayed ones)."""
    card = {"level_of_theory": LEVEL_OF_THEORY, **card}
    have_data = rmd17_file(molecule, "train", data_root).is_file()
    frames = read_rmd17(rmd17_file(molecule, "train", data_root), max_frames=n_train) if have_data else None
    if frames is not None:
        card["training_domain"] = training_domain(frames.z, frames.n_atoms)
    else:
        print(f"{rmd17_file(molecule, 'train', data_root)} not found: the card gets no training_domain")
    if zbl:
        if not have_data:
            raise FileNotFoundError(
                f"{rmd17_file(molecule, 'train', data_root)} not found: the ZBL prior is only added where the "
                "training frames show that it leaves them unchanged"
            )
        ratio = min([frames_closest_pair_ratio(frames)]
                    + [closest_pair_ratio(other, data_root, n_train=10**9) for other in also_trained_on])
        trained_on = ", ".join([molecule, *also_trained_on])
        if ratio <= zbl:
            raise ValueError(
                f"the ZBL prior at {zbl:g} x the covalent-radii sum acts on the training frames ({trained_on}; "
                f"closest pair at {ratio:.3f} x the sum): train with it instead of adding it at export"
            )
        hyperparameters = dict(read_checkpoint(run_dir / "best.pt")["metadata"]["hyperparameters"])
        hyperparameters["zbl"] = float(zbl)
        card["hyperparameters"] = hyperparameters
        card["priors"] = {
            "zbl_radius_scale": float(zbl),
            "closest_training_pair": round(ratio, 4),
            "note": (
                f"ZBL repulsion, zero beyond {zbl:g} x the covalent-radii sum; the closest pair of the "
                f"training frames ({trained_on}) is at {ratio:.3f} x that sum, so the prior leaves every "
                "training frame unchanged and only acts on compressed pairs (added at export)"
            ),
        }
    return export_checkpoint(run_dir / "best.pt", destination, card)


def add_training_domain(path: Path, molecule: str, data_root: Path = DATA_ROOT) -> Path:
    """Store the training domain in the exported checkpoint ``path`` (rewritten atomically, new
    checksum; weights and the other card entries unchanged)."""
    import json

    payload = read_checkpoint(path)
    meta = dict(payload["metadata"])
    meta["training_domain"] = rmd17_training_domain(molecule, data_root)
    out: Dict[str, Any] = {key: value for key, value in payload.items() if key not in ("metadata", "checksum")}
    out["metadata"] = json.dumps(meta, sort_keys=True)
    out["checksum"] = checksum(out)
    return atomic_torch_save(out, path)
