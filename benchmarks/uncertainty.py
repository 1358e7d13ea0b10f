"""Committee uncertainty on rMD17: does the members' force spread predict the force error?

    python -m benchmarks.uncertainty                       # aspirin: train the committee (resumes), evaluate
    python -m benchmarks.uncertainty --molecule ethanol    # the same on ethanol -> results/uncertainty/ethanol/
    python -m benchmarks.uncertainty --quick               # CI: 2 members, a few steps, 20 test frames
    python -m benchmarks.uncertainty --kind heads          # one checkpoint with 4 heads -> <out>/heads/
    python -m benchmarks.uncertainty --compare             # the two kinds: calibration against CPU cost

Protocol (sized for a small shared CPU): a committee of 4 members fine-tuned from the bundled
``pretrained`` checkpoint on the first 50 frames of the rMD17 ``train_01`` split of ``--molecule``
(default aspirin), with frames 950-999 of the same split as validation (the same frames for every
member), seeds 0-3, 600 steps each (batch 8, energy + force loss, AdamW 5e-4 with warm-up and cosine
decay, EMA 0.99, eager training, 1 thread). The members are ordinary run directories under
``benchmarks/results/uncertainty/<molecule>/runs/`` (with ``committee.json``), so an interrupted
benchmark resumes; a finished committee is only evaluated again.

Evaluation, with the committee mean as the prediction and ``forces_std`` (per atom,
sqrt(mean over members |F_m - F_mean|^2), eV/Å) as the predicted uncertainty:

- in distribution: the 1000 frames of the rMD17 ``test_01`` split (``--test-stride k``: every k-th), with DFT labels:
  Spearman rank correlation of predicted std and actual error |F_mean - F_ref| per atom, and of the
  frame's mean std and its force RMSE per frame; calibration under a Gaussian assumption (each force
  component's error ~ N(0, (std/sqrt(3))^2)): observed against expected fraction of components inside
  the central interval at each confidence level, and the miscalibration area (mean |observed -
  expected| over 99 levels; 0 is perfectly calibrated). The same after scaling std by one factor
  fitted on the 50 validation frames (never on test frames).
- out of distribution, without labels: the same 200 test frames with Gaussian displacements of every
  coordinate (sigma 0.05 Å and 0.1 Å), and the 96 GFN2-xTB Langevin frames (500-1000 K) of the
  molecule in the shared xtb corpus (``xtb/xtb_shard0.npz``, kind 1; the pretraining corpus contains
  them), and 40 frames of a new GFN2-xTB Langevin trajectory at 1000 K started from ``test_01`` frame
  0 (seed 1, one frame every 0.1 ps after 0.5 ps; in no training or pretraining corpus; needs
  tblite): predicted std only, against the test frames.

Writes ``uncertainty.json`` and ``uncertainty.png`` to ``benchmarks/results/uncertainty/<molecule>/``
(a heads committee: to ``heads/`` for 4 heads, ``heads<K>/`` otherwise; the figure of the 8-heads
committee also to ``docs/img/uncertainty_<molecule>.png``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from forcefield_et.data import ConformationSet, read_rmd17
from forcefield_et.inference import Evaluator
from forcefield_et.registry import load_committee
from forcefield_et.training import config_from_dict
from forcefield_et.training.committee import train_committee, train_head_committee

from .io import write_json_atomic
from .machine import machine_info
from .paths import DATA_ROOT, rmd17_file
from .rmd17_errors import rmd17_test_set

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "uncertainty"
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
DEFAULT_MOLECULE = "aspirin"
DOCS_COMMITTEE = ("heads", 8)  # the committee whose calibration docs/uncertainty.md shows (kind, members)
SPLIT_FRAMES = 1000
VALID_FRAMES = 50
DISPLACEMENTS_A = (0.05, 0.1)
CONFIDENCE_LEVELS = np.linspace(0.01, 0.99, 99)


def committee_config(run_dir: Path, n_train: int, steps: int, data_root: Path,
                     molecule: str = DEFAULT_MOLECULE) -> Any:
    """The members' shared training configuration (seed 0; member k trains with seed k)."""
    train_file = str(rmd17_file(molecule, "train", data_root))
    source = {
        "name": molecule, "format": "rmd17", "path": train_file, "objective": "energy_forces",
        "frames": f"0:{n_train}", "valid_path": train_file,
        "valid_frames": f"{SPLIT_FRAMES - VALID_FRAMES}:{SPLIT_FRAMES}",
    }
    return fine_tuning_config(run_dir, source, steps)


def fine_tuning_config(run_dir: Path, source: Dict[str, Any], steps: int) -> Any:
    """The short fine-tuning recipe from ``pretrained`` on one rMD17 source, ``steps`` steps of batch 8."""
    return config_from_dict({
        "run_dir": str(run_dir), "seed": 0, "dtype": "float32", "init_from": "pretrained",
        "sources": [source], "objectives": {"energy_weight": 1.0, "force_weight": 10.0},
        "optim": {
            "batch_size": 8, "max_steps": steps, "lr": 5e-4, "min_lr": 1e-6, "warmup_steps": max(1, steps // 20),
            "valid_every": max(1, steps // 5), "checkpoint_every": max(1, steps // 10),
            "log_every": max(1, steps // 25), "ema_decay": 0.99, "threads": 1, "compile": False,
        },
    })


def predict_committee(committee: Any, data: ConformationSet, batch_frames: int = 25) -> Dict[str, np.ndarray]:
    """Committee mean energy [F] (eV) and forces [A, 3] (eV/Å), per-atom force std [A] (eV/Å),
    energy std [F] (eV) and the members' forces [M, A, 3] for every frame of ``data``
    (non-periodic frames)."""
    energy, forces, forces_std, energy_std, members = [], [], [], [], []
    offsets = np.concatenate([[0], np.cumsum(data.n_atoms)])
    engine = Evaluator.wrap(committee)
    for start in range(0, len(data), batch_frames):
        stop = min(start + batch_frames, len(data))
        atoms = slice(offsets[start], offsets[stop])
        z = torch.as_tensor(data.z[atoms], dtype=torch.long)
        pos = torch.as_tensor(data.pos[atoms], dtype=torch.float32)
        batch = torch.repeat_interleave(torch.arange(stop - start), torch.as_tensor(data.n_atoms[start:stop]))
        output = engine.evaluate_batch(z, pos, batch)
        energy.append(output["energy"].double().numpy())
        forces.append(output["forces"].double().numpy())
        forces_std.append(output["forces_std"].double().numpy())
        energy_std.append(output["energy_std"].double().numpy())
        members.append(output["member_forces"].double().numpy())
    return {"energy": np.concatenate(energy), "forces": np.concatenate(forces),
            "forces_std": np.concatenate(forces_std), "energy_std": np.concatenate(energy_std),
            "member_forces": np.concatenate(members, axis=1)}


def pretrained_sha256() -> str:
    """SHA-256 of the bundled ``pretrained`` checkpoint the committees start from."""
    import hashlib

    from forcefield_et.registry import resolve_model_path

    return hashlib.sha256(resolve_model_path("pretrained").read_bytes()).hexdigest()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def calibration_curve(errors: np.ndarray, sigmas: np.ndarray, levels: np.ndarray = CONFIDENCE_LEVELS) -> np.ndarray:
    """Observed fraction of ``errors`` (force-component errors, eV/Å) inside the central Gaussian
    interval ±z(p)·sigma at each confidence level p (``sigmas``: per-component std, same shape)."""
    from scipy.stats import norm

    ratio = np.abs(errors) / np.maximum(sigmas, 1e-12)
    half_widths = norm.ppf(0.5 + levels / 2.0)
    return np.array([(ratio <= w).mean() for w in half_widths])


def miscalibration_area(observed: np.ndarray, levels: np.ndarray = CONFIDENCE_LEVELS) -> float:
    """Mean |observed - expected| over the confidence levels (0: calibrated; 0.5 at worst)."""
    return float(np.mean(np.abs(observed - levels)))


def frame_reduce(values: np.ndarray, n_atoms: np.ndarray, how: str) -> np.ndarray:
    """Per-frame mean or max of per-atom ``values``."""
    split = np.split(values, np.cumsum(n_atoms)[:-1])
    return np.array([getattr(np, how)(v) for v in split])


def displaced(data: ConformationSet, sigma: float, seed: int) -> ConformationSet:
    """A copy of ``data`` with every coordinate shifted by N(0, sigma^2) (Å); labels dropped."""
    positions = data.pos + np.random.default_rng(seed).normal(0.0, sigma, data.pos.shape)
    return ConformationSet(z=data.z.copy(), pos=positions, n_atoms=data.n_atoms.copy())


def hot_frames(data_root: Path, molecule: str = DEFAULT_MOLECULE) -> ConformationSet | None:
    """The frames of ``molecule`` (an rMD17 name) from the GFN2-xTB Langevin trajectories
    (500-1000 K) in the xtb corpus, as an unlabelled ConformationSet; None when the corpus is absent."""
    starts_path, shard_path = data_root / "xtb" / "starts.npz", data_root / "xtb" / "xtb_shard0.npz"
    if not (starts_path.is_file() and shard_path.is_file()):
        return None
    sources = [str(s) for s in np.load(starts_path)["source"]]
    ids = [i for i, s in enumerate(sources) if s == f"rmd17-{molecule}"]
    shard = np.load(shard_path)
    n_atoms = shard["n_atoms"]
    keep = np.isin(shard["mol_id"], ids) & (shard["kind"] == 1)
    atom_keep = np.repeat(keep, n_atoms)
    return ConformationSet(
        z=shard["z"][atom_keep].astype(np.int64), pos=shard["pos"][atom_keep].astype(np.float64),
        n_atoms=n_atoms[keep].astype(np.int64), energy=np.full(int(keep.sum()), np.nan),
    )


def fresh_hot_frames(data_root: Path, molecule: str, quick: bool = False) -> ConformationSet | None:
    """40 frames of a new GFN2-xTB Langevin trajectory at 1000 K from ``test_01`` frame 0 (seed 1;
    0.5 ps of equilibration, then one frame every 0.1 ps), in no training or pretraining corpus; 4
    frames after 0.05 ps with ``quick``. None without tblite."""
    try:
        import tblite.ase  # noqa: F401
    except ImportError:
        return None
    from .xtb_md import cached_xtb_frames

    test = np.load(rmd17_file(molecule, "test", data_root))
    z = test["nuclear_charges"].astype(np.int64)
    n_frames, equilibration = (4, 0.05) if quick else (40, 0.5)
    positions = cached_xtb_frames(f"{molecule}_1000K_seed1_{n_frames}", z, test["coords"][0], n_frames,
                                  temperature_K=1000.0, equilibration_ps=equilibration, interval_ps=0.1, seed=1)
    return ConformationSet(z=np.tile(z, n_frames), pos=positions.reshape(-1, 3).astype(np.float64),
                           n_atoms=np.full(n_frames, len(z)), energy=np.full(n_frames, np.nan))


def std_summary(frame_max_std: np.ndarray, atom_std: np.ndarray, reference_max: np.ndarray) -> Dict[str, float]:
    return {
        "frames": int(len(frame_max_std)),
        "median_atom_std_meV_A": 1000 * float(np.median(atom_std)),
        "median_frame_max_std_meV_A": 1000 * float(np.median(frame_max_std)),
        "fraction_above_test_p95": float(np.mean(frame_max_std > np.percentile(reference_max, 95))),
    }


def evaluate(committee_dir: Path, data_root: Path, test_stride: int, out: Path,
             max_other_frames: int | None = None, with_ood: bool = True,
             molecule: str = DEFAULT_MOLECULE) -> Dict[str, Any]:
    """Evaluate the committee (see the module docstring); ``max_other_frames`` limits the
    validation and high-temperature frames (for a quick check); ``with_ood=False`` skips the
    out-of-distribution frames."""
    committee = load_committee(committee_dir, dtype="float32")
    train_file = rmd17_file(molecule, "train", data_root)
    valid = read_rmd17(train_file).subset(np.arange(SPLIT_FRAMES - VALID_FRAMES, SPLIT_FRAMES)[:max_other_frames])
    test = rmd17_test_set(molecule, data_root, stride=test_stride)
    start, start_cpu = time.perf_counter(), time.process_time()
    pred_valid, pred_test = predict_committee(committee, valid), predict_committee(committee, test)
    in_distribution_cpu = time.process_time() - start_cpu

    # calibration factor on validation frames: per-component sigma = std / sqrt(3), scaled so that
    # the mean squared standardised error is 1
    valid_sigma = np.repeat(pred_valid["forces_std"][:, None] / np.sqrt(3), 3, axis=1)
    scale = float(np.sqrt(np.mean(((pred_valid["forces"] - valid.forces) / valid_sigma) ** 2)))

    error_vectors = pred_test["forces"] - test.forces
    atom_error = np.linalg.norm(error_vectors, axis=1)
    atom_std = pred_test["forces_std"]
    sigma = np.repeat(atom_std[:, None] / np.sqrt(3), 3, axis=1)
    observed = calibration_curve(error_vectors, sigma)
    observed_scaled = calibration_curve(error_vectors, scale * sigma)
    frame_std_mean = frame_reduce(atom_std, test.n_atoms, "mean")
    frame_std_max = frame_reduce(atom_std, test.n_atoms, "max")
    frame_rmse = np.sqrt(frame_reduce(atom_error**2, test.n_atoms, "mean") / 3)
    member_mae = [1000 * float(np.mean(np.abs(f - test.forces))) for f in pred_test["member_forces"]]

    ood: Dict[str, Any] = {}
    ood_std: Dict[str, np.ndarray] = {"test (rMD17, DFT-labelled)": frame_std_max}
    for k, sigma_a in enumerate(DISPLACEMENTS_A if with_ood else ()):
        moved = displaced(test, sigma_a, seed=k)
        pred = predict_committee(committee, moved)
        frame_max = frame_reduce(pred["forces_std"], moved.n_atoms, "max")
        ood[f"displaced_{sigma_a:g}A"] = std_summary(frame_max, pred["forces_std"], frame_std_max)
        ood_std[f"test + N(0, {sigma_a:g} Å) displacements"] = frame_max
    hot = hot_frames(data_root, molecule) if with_ood else None
    if hot is not None and max_other_frames is not None:
        hot = hot.subset(np.arange(min(len(hot), max_other_frames)))
    if hot is not None and len(hot):
        pred = predict_committee(committee, hot)
        frame_max = frame_reduce(pred["forces_std"], hot.n_atoms, "max")
        ood["xtb_md_500_1000K"] = std_summary(frame_max, pred["forces_std"], frame_std_max)
        ood_std["GFN2-xTB MD, 500-1000 K (pretraining corpus)"] = frame_max
    fresh = fresh_hot_frames(data_root, molecule, quick=max_other_frames is not None) if with_ood else None
    if fresh is not None:
        pred = predict_committee(committee, fresh)
        frame_max = frame_reduce(pred["forces_std"], fresh.n_atoms, "max")
        ood["xtb_md_1000K_fresh"] = std_summary(frame_max, pred["forces_std"], frame_std_max)
        ood_std["new GFN2-xTB MD, 1000 K"] = frame_max
    eval_seconds = time.perf_counter() - start

    members = committee.metadata.get("committee")
    kind = "checkpoints" if isinstance(members, list) else "heads"
    first = members[0] if kind == "checkpoints" else committee.metadata
    valid_mae = ([m["validation"].get(f"{molecule}/force_mae_meV_A") for m in members] if kind == "checkpoints"
                 else [first.get("validation", {}).get(f"{molecule}/force_mae_meV_A")])
    summary = {
        "protocol": __doc__.split("Writes")[0].strip(),
        "molecule": molecule,
        "atoms_per_frame": int(test.n_atoms[0]),
        "pretrained_sha256": pretrained_sha256(),
        "committee_kind": kind,
        "members": len(committee),
        "n_train": int(first["training"]["sources"][0]["frames"]),
        "steps": int(first["training"]["config"]["optim"]["max_steps"]),
        "trained_steps": training_steps(committee_dir),
        "best_step": int(first["training"].get("step", first["training"]["config"]["optim"]["max_steps"])),
        "member_valid_force_mae_meV_A": valid_mae,
        "test_frames": len(test),
        "test_force_mae_meV_A": {"committee_mean": 1000 * float(np.mean(np.abs(error_vectors))),
                                 "members": member_mae},
        "spearman_atom_std_vs_error": spearman(atom_std, atom_error),
        "spearman_frame_mean_std_vs_rmse": spearman(frame_std_mean, frame_rmse),
        "spearman_frame_max_std_vs_max_error": spearman(frame_std_max, frame_reduce(atom_error, test.n_atoms, "max")),
        "median_atom_std_meV_A": 1000 * float(np.median(atom_std)),
        "median_atom_error_meV_A": 1000 * float(np.median(atom_error)),
        "miscalibration_area": miscalibration_area(observed),
        "validation_std_scale": scale,
        "miscalibration_area_scaled": miscalibration_area(observed_scaled),
        "fraction_inside_95pct_interval": float(observed[94]),
        "fraction_inside_95pct_interval_scaled": float(observed_scaled[94]),
        "test_frame_max_std_meV_A_median": 1000 * float(np.median(frame_std_max)),
        "out_of_distribution": ood,
        "evaluation_wall_s": eval_seconds,
        "evaluation_cpu_s_validation_and_test": in_distribution_cpu,
        "training_cpu_s": training_cpu_seconds(committee_dir),
        "machine": machine_info(),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "uncertainty.json", summary)
    plot(atom_std, atom_error, observed, observed_scaled, scale, ood_std, out / "uncertainty.png", molecule,
         frame_std_mean, frame_rmse)
    return summary


def plot(atom_std: np.ndarray, atom_error: np.ndarray, observed: np.ndarray, observed_scaled: np.ndarray,
         scale: float, ood_std: Dict[str, np.ndarray], path: Path, molecule: str = DEFAULT_MOLECULE,
         frame_std: np.ndarray | None = None, frame_rmse: np.ndarray | None = None) -> None:
    """The figure of :func:`evaluate`: per-atom std against error, per-frame mean std against force
    RMSE, calibration curves, and each frame's largest std in and out of distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_s, ax_f, ax_c, ax_o) = plt.subplots(1, 4, figsize=(20, 4.6))
    if frame_std is not None and frame_rmse is not None:
        ax_f.scatter(1000 * frame_std, 1000 * frame_rmse, s=6, alpha=0.5, color="C2", rasterized=True)
        ax_f.set_xscale("log")
        ax_f.set_yscale("log")
        ax_f.set_xlabel("mean predicted force std of a frame (meV/Å)")
        ax_f.set_ylabel("force RMSE of the frame (meV/Å)")
        ax_f.set_title(f"per frame (Spearman {spearman(frame_std, frame_rmse):.2f})")
    else:
        ax_f.set_axis_off()
    ax_s.scatter(1000 * atom_std, 1000 * atom_error, s=3, alpha=0.3, color="C0", rasterized=True)
    low = min(atom_std.min(), atom_error[atom_error > 0].min())
    limits = [1000 * low, 1000 * max(atom_std.max(), atom_error.max())]
    ax_s.plot(limits, limits, "k--", lw=1, label="error = std")
    ax_s.set_xscale("log")
    ax_s.set_yscale("log")
    ax_s.set_xlabel("predicted force std per atom (meV/Å)")
    ax_s.set_ylabel("force error |F - F_DFT| per atom (meV/Å)")
    ax_s.set_title(f"rMD17 {molecule} test frames, per atom (Spearman {spearman(atom_std, atom_error):.2f})")
    ax_s.legend(loc="upper left", fontsize=8)
    ax_c.plot(CONFIDENCE_LEVELS, observed, label=f"committee std (area {miscalibration_area(observed):.3f})")
    ax_c.plot(CONFIDENCE_LEVELS, observed_scaled,
              label=f"std × {scale:.2f}, fitted on validation (area {miscalibration_area(observed_scaled):.3f})")
    ax_c.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    ax_c.set_xlabel("expected fraction inside the Gaussian interval")
    ax_c.set_ylabel("observed fraction")
    ax_c.set_title("calibration (force components)")
    ax_c.legend(loc="upper left", fontsize=8)
    bins = np.logspace(np.log10(min(v.min() for v in ood_std.values()) * 1000),
                       np.log10(max(v.max() for v in ood_std.values()) * 1000), 40)
    for label, values in ood_std.items():
        ax_o.hist(1000 * values, bins=bins, histtype="step", density=True, lw=1.5, label=label)
    ax_o.set_xscale("log")
    ax_o.set_xlabel("largest per-atom force std of a frame (meV/Å)")
    ax_o.set_ylabel("density")
    ax_o.set_title("in and out of distribution")
    ax_o.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def training_cpu_seconds(committee_dir: Path) -> float | None:
    """CPU seconds the committee's training used (the last ``cpu_hours`` of each run's metrics.csv:
    the member runs of a checkpoint committee, or the one run of a heads committee)."""
    import csv

    total, found = 0.0, False
    for metrics in sorted(committee_dir.glob("member_*/metrics.csv")) or [committee_dir / "metrics.csv"]:
        if not metrics.is_file():
            continue
        rows = [r for r in csv.DictReader(metrics.open()) if r.get("cpu_hours")]
        if rows:
            total, found = total + 3600 * float(rows[-1]["cpu_hours"]), True
    return total if found else None


def training_steps(committee_dir: Path) -> int | None:
    """Steps the committee trained (the last step in each run's metrics.csv; the fewest over the
    member runs of a checkpoint committee)."""
    import csv

    steps = []
    for metrics in sorted(committee_dir.glob("member_*/metrics.csv")) or [committee_dir / "metrics.csv"]:
        if metrics.is_file():
            rows = [r for r in csv.DictReader(metrics.open()) if r.get("step")]
            if rows:
                steps.append(int(rows[-1]["step"]))
    return min(steps) if steps else None


def inference_cpu_per_frame(models: Dict[str, Any], data: ConformationSet, rounds: int = 3) -> Dict[str, float]:
    """CPU seconds per frame of one call of each model or committee in ``models``, timed alternately
    in one process on the same frames (single frames, as MD calls them), median over ``rounds``."""
    from forcefield_et.inference import Evaluator

    times: Dict[str, List[float]] = {name: [] for name in models}
    evaluators = {name: Evaluator.wrap(model.eval()) for name, model in models.items()}
    frames = [data.subset(np.array([i])) for i in range(len(data))]
    for evaluator in evaluators.values():  # warm-up
        evaluator.evaluate(frames[0].z, frames[0].pos)
    for _ in range(rounds):
        for name, evaluator in evaluators.items():
            start = time.process_time()
            for frame in frames:
                evaluator.evaluate(frame.z, frame.pos)
            times[name].append((time.process_time() - start) / len(frames))
    return {name: float(np.median(values)) for name, values in times.items()}


def heads_dir_name(members: int) -> str:
    """Results folder of a heads committee of ``members`` heads, inside the molecule's folder."""
    return "heads" if members == 4 else f"heads{members}"


def heads_kinds(out: Path) -> List[str]:
    """The heads committees with results in ``out`` (``heads``, ``heads8``, ...), fewest heads first."""
    found = [p.parent.name for p in out.glob("heads*/uncertainty.json")]
    return sorted(found, key=lambda name: int(name[5:] or 4))


def time_inference(out: Path, data_root: Path, frames: int = 20, molecule: str = DEFAULT_MOLECULE) -> Dict[str, Any]:
    """``--time-inference``: CPU per frame of the checkpoint committee in ``<out>/runs``, of each heads
    committee in ``<out>/heads*/runs`` and of one model (see :func:`compare_kinds`), written to
    ``<out>/inference_timing.json``. The cost does not depend on the weights, so it can run while the
    heads are still training (on their latest ``best.pt``)."""
    from forcefield_et.model import Committee
    from forcefield_et.registry import load_model

    test = rmd17_test_set(molecule, data_root, frames)
    try:
        checkpoints = load_committee(out / "runs", dtype="float32")
        timed_with = "the member checkpoints"
    except Exception:  # noqa: BLE001 -- member weights are not kept in the repository
        k = len(json.loads((out / "runs" / "committee.json").read_text())["members"]) \
            if (out / "runs" / "committee.json").is_file() else 4
        checkpoints = Committee([load_model("pretrained") for _ in range(max(k, 2))])
        timed_with = f"{len(checkpoints)} copies of the bundled pretrained model (the members' architecture)"
    models: Dict[str, Any] = {"single": checkpoints.members[0], "checkpoints": checkpoints}
    for name in sorted({p.parent.parent.name for p in out.glob("heads*/runs/best.pt")}):
        runs = out / name / "runs"
        models[name] = load_committee(runs, dtype="float32") if (runs / "committee.json").is_file() else \
            load_model(runs / "best.pt")
    timing = {"frames": frames, "cpu_s_per_frame": inference_cpu_per_frame(models, test),
              "checkpoint_committee_timed_with": timed_with, "machine": machine_info()}
    write_json_atomic(out / "inference_timing.json", timing)
    return timing


def compare_kinds(out: Path, data_root: Path, frames: int = 20, molecule: str = DEFAULT_MOLECULE) -> Dict[str, Any]:
    """``--compare``: the checkpoint committee (``<out>/uncertainty.json``) against each heads committee
    (``<out>/heads*/uncertainty.json``): calibration, training CPU and inference CPU per frame
    (timed alternately on ``frames`` test frames, kept in ``<out>/inference_timing.json``; the
    checkpoint committee's cost does not depend on its weights, so when its member checkpoints are
    absent it is timed with copies of the bundled ``pretrained`` model, the members' architecture).
    Writes ``committee_kinds.json`` and ``committee_kinds.png``."""
    results = {"checkpoints": json.loads((out / "uncertainty.json").read_text())}
    results.update({name: json.loads((out / name / "uncertainty.json").read_text()) for name in heads_kinds(out)})
    timing_path = out / "inference_timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else None
    if timing is None or set(results) - set(timing["cpu_s_per_frame"]):
        timing = time_inference(out, data_root, frames, molecule)
    per_frame, timed_with = timing["cpu_s_per_frame"], timing["checkpoint_committee_timed_with"]
    keys = ("spearman_atom_std_vs_error", "spearman_frame_mean_std_vs_rmse", "spearman_frame_max_std_vs_max_error",
            "miscalibration_area", "miscalibration_area_scaled", "validation_std_scale",
            "fraction_inside_95pct_interval", "fraction_inside_95pct_interval_scaled", "median_atom_std_meV_A",
            "median_atom_error_meV_A", "test_force_mae_meV_A", "training_cpu_s", "test_frames", "members", "steps",
            "n_train", "trained_steps", "test_frame_max_std_meV_A_median", "out_of_distribution", "committee_kind")
    kinds = {}
    for kind, r in results.items():
        entry = {key: r.get(key) for key in keys}
        entry["committee_kind"] = entry["committee_kind"] or ("checkpoints" if kind == "checkpoints" else "heads")
        if entry["training_cpu_s"] is None:  # a result written before training CPU was recorded
            entry["training_cpu_s"] = training_cpu_seconds(out / ("runs" if kind == "checkpoints" else f"{kind}/runs"))
        entry["inference_cpu_s_per_frame"] = per_frame[kind]
        eval_frames = r["test_frames"] + VALID_FRAMES
        entry["train_plus_evaluation_cpu_s"] = (entry["training_cpu_s"] or float("nan")) + eval_frames * per_frame[kind]
        kinds[kind] = entry
    summary = {
        "command": f"python -m benchmarks.uncertainty --molecule {molecule} --compare",
        "molecule": molecule,
        "inference_timing": {"frames": frames, "single_model_cpu_s_per_frame": per_frame["single"],
                             "checkpoint_committee_timed_with": timed_with,
                             "note": f"one {molecule} frame per call, 1 thread, eager float32, median of 3 rounds"},
        "train_plus_evaluation": "training CPU + (test + validation frames) x inference CPU per frame",
        "kinds": kinds,
        "machine": machine_info(),
    }
    write_json_atomic(out / "committee_kinds.json", summary)
    plot_kinds(kinds, out / "committee_kinds.png", molecule)
    return summary


def plot_kinds(kinds: Dict[str, Dict[str, Any]], path: Path, molecule: str = DEFAULT_MOLECULE) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(kinds)
    labels = [f"{kinds[n]['members']} {kinds[n].get('committee_kind') or n}" for n in names]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    panels = [("spearman_atom_std_vs_error", "Spearman, per-atom std vs error"),
              ("miscalibration_area", "miscalibration area (raw std)"),
              ("training_cpu_s", "training CPU (s)"),
              ("inference_cpu_s_per_frame", "inference CPU per frame (s)")]
    for ax, (key, title) in zip(axes, panels):
        values = [kinds[n][key] or 0.0 for n in names]
        ax.bar(labels, values, color=[f"C{k}" for k in range(len(names))])
        for x, v in enumerate(values):
            ax.text(x, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"committee of checkpoints vs one checkpoint with heads (rMD17 {molecule}, "
                 f"{kinds[names[0]]['n_train']} training frames)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecule", default=DEFAULT_MOLECULE, help="rMD17 molecule (default aspirin)")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=50)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--test-stride", type=int, default=1, help="every k-th test_01 frame (1: all 1000)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--out", type=Path, default=None,
                        help="results directory (default benchmarks/results/uncertainty/<molecule>)")
    parser.add_argument("--kind", choices=["checkpoints", "heads"], default="checkpoints",
                        help="committee kind: K checkpoints (seeds 0..K-1), or one checkpoint with K heads "
                        "(forcefield-et finetune --committee-kind heads); heads results go to <out>/heads/ "
                        "(4 heads) or <out>/heads<K>/")
    parser.add_argument("--no-ood", action="store_true", help="skip the out-of-distribution frames")
    parser.add_argument("--quick", action="store_true",
                        help="2 members, 4 steps, 20 test frames, 10 validation and 10 hot frames (CI)")
    parser.add_argument("--compare", action="store_true",
                        help="compare the finished checkpoint and heads results in --out (no training)")
    parser.add_argument("--time-inference", action="store_true",
                        help="time one call of each committee kind (writes <out>/inference_timing.json)")
    args = parser.parse_args(argv)
    default_out = RESULTS_DIR / args.molecule
    args.out = args.out or default_out
    torch.set_num_threads(1)
    if args.time_inference:
        print(json.dumps(time_inference(args.out, args.data_root, molecule=args.molecule), indent=2))
        return
    if args.compare:
        summary = compare_kinds(args.out, args.data_root, molecule=args.molecule)
        if args.out.resolve() == default_out.resolve():  # the figure of docs/uncertainty.md
            shutil.copyfile(args.out / "committee_kinds.png", DOCS_IMG / f"committee_kinds_{args.molecule}.png")
        print(json.dumps(summary["kinds"], indent=2))
        return
    if args.quick:
        args.members, args.steps, args.test_stride = 2, 4, 50
    if not rmd17_file(args.molecule, "train", args.data_root).is_file():
        raise SystemExit(f"benchmarks.uncertainty: rMD17 {args.molecule} not found under {args.data_root}")
    molecule_out = args.out
    if args.kind == "heads":
        args.out = args.out / heads_dir_name(args.members)
    committee_dir = args.out / "runs"
    config = committee_config(committee_dir, args.n_train, args.steps, args.data_root, args.molecule)
    start = time.process_time()
    if args.kind == "heads":
        train_head_committee(config, args.members, progress=False)
    else:
        train_committee(config, args.members, progress=False)
    print(f"committee trained ({time.process_time() - start:.0f} CPU-s in this invocation); evaluating", flush=True)
    summary = evaluate(committee_dir, args.data_root, args.test_stride, args.out, 10 if args.quick else None,
                       with_ood=not args.no_ood, molecule=args.molecule)
    if (args.kind, args.members) == DOCS_COMMITTEE and molecule_out.resolve() == default_out.resolve():
        shutil.copyfile(args.out / "uncertainty.png", DOCS_IMG / f"uncertainty_{args.molecule}.png")
    keys = ("test_force_mae_meV_A", "spearman_atom_std_vs_error", "spearman_frame_mean_std_vs_rmse",
            "miscalibration_area", "validation_std_scale", "miscalibration_area_scaled", "out_of_distribution")
    for key in keys:
        print(f"{key}: {summary[key]}")


if __name__ == "__main__":
    main()
