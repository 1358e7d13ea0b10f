"""Fine-tuning to convergence on rMD17: pretrained start against the same ET from scratch, each
run until its validation error stops improving or it has used its CPU budget.

    python -m benchmarks.finetune_converged --molecules aspirin --sizes 1000 --starts scratch
    python -m benchmarks.finetune_converged                    # every cell: 4 molecules x {50, 1000} x 2 starts
    python -m benchmarks.finetune_converged --report           # tables and plots of the finished runs
    python -m benchmarks.finetune_converged --quick            # CI: ethanol, 50 frames, a tiny budget
    python -m benchmarks.finetune_converged --molecules aspirin --sizes 50 --replay   # a variant of the recipe
    python -m benchmarks.finetune_converged --bundle --zbl 0.75   # export the 1000-frame models (rmd17-<mol>)

Protocol (the same for both starts): train on the first N frames of the rMD17 ``train_01`` split
(N = 1000 means frames 0-949; frames 950-999 of the same split are the validation set for every N),
energy + force loss (per-atom energy MSE weight 1, force MSE weight 10), batch 8, AdamW with a
learning rate of 5e-4 after 100 warm-up steps, halved when the validation loss has not improved for
3 validations (floor 1e-6), EMA of the weights (decay 0.99), the compiled training step. Validation
every 250 steps at 1000 frames and every 100 steps at 50 frames. A run stops after 10 validations
without a new best or when it has used its CPU budget (2 CPU-hours at 1000 frames, 0.5 at 50),
whichever comes first. The best EMA weights by validation loss are tested on all 1000 frames of the
``test_01`` split; 200 of those frames (every fifth) are also evaluated at every validation for the
learning curve only. The scratch ET has the bundled pretrained model's architecture.

Variants of the recipe (``--replay [SHARE]``, ``--zbl``, ``--force-weight W``, ``--lr LR``, ``--patience P``,
``--schedule cosine``, ``--encoder-lr-scale S``, ``--budget-hours H``, ``--select-by force-mae``) run as cells of
their own (``<cell>-replay`` or ``<cell>-replay<SHARE>``, ``<cell>-zbl``, ``<cell>-fw<W>``, ``<cell>-lr<LR>``,
``<cell>-pat<P>``, ``<cell>-cosine``, ``<cell>-enc<S>``, ``<cell>-budget<H>h``, ``<cell>-fmae``)
and are reported against the unchanged cell with the same start, validation error first: a variant is kept
where it lowers the validation error.

The molecule's own GFN2-xTB stage (``--xtb-stage``, cells ``<molecule>-<N>-<start>-xtb...``): before the
rMD17 frames, the start is fine-tuned on GFN2-xTB frames of the molecule that ``forcefield-et corpus``
makes from its SMILES (no rMD17 frame): 20 Langevin trajectories at random temperatures between 300
and 800 K, 200 frames 10 fs apart from each, plus each trajectory's relaxed geometry; energies and
forces, the recipe at 1000 frames (5 % of the frames for validation), for 0.5 CPU-hours. These cells
use data that the other cells do not (the molecule's SMILES and a semi-empirical method), so they are
reported in columns of their own and never chosen as the pretrained start's cell; their CPU-hours
include the corpus and the stage (``cpu_hours_total``).

Runs live in ``runs/finetune_converged/<molecule>-<N>-<start>/`` and resume from their last
checkpoint; a finished run keeps ``best.pt``, ``metrics.csv``, ``learning_curve.csv`` and
``config.yaml`` and drops its optimiser state. Results go to ``benchmarks/results/finetune_converged/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List

import torch

from forcefield_et.cli.train import SELECT_BY
from forcefield_et.cli.validators import open_fraction_arg
from forcefield_et.files import DirectoryBusyError
from forcefield_et.training import config_from_dict, train, with_replay
from forcefield_et.training.config import UNLIMITED_STEPS
from forcefield_et.training.curves import read_validation_rows

from .finetune_study import pretrained_architecture, start_label
from .io import finished_runs, write_json_atomic, write_report
from .machine import machine_info
from .paths import DATA_ROOT, REPO, rmd17_file
from .rmd17_errors import rmd17_test_errors

RUNS_DIR = REPO / "runs" / "finetune_converged"
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "finetune_converged"
DOCS_IMG = REPO / "docs" / "img"
MOLECULES = ["aspirin", "ethanol", "naphthalene", "salicylic"]
VALID = "950:1000"
BUDGET_HOURS = {50: 0.5, 1000: 2.0}
PUBLISHED_50 = {  # force MAE, meV/Å, rMD17 with 50 training frames (MACE paper, Table 2)
    "MACE": {"aspirin": 43.9, "ethanol": 32.6, "naphthalene": 9.2, "salicylic": 28.4},
}
PUBLISHED_1000 = {  # force MAE, meV/Å, rMD17 with 1000 training frames (MACE paper, Table 2)
    "MACE": {"aspirin": 6.6, "ethanol": 2.1, "naphthalene": 1.6, "salicylic": 3.1},
    "NequIP": {"aspirin": 8.2, "ethanol": 2.8, "naphthalene": 1.3, "salicylic": 4.0},
}


LEARNING_RATE = 5e-4  # the recipe's peak learning rate
PLATEAU_PATIENCE = 3  # validations without improvement before the recipe halves the learning rate
EARLY_STOP_AFTER_PLATEAU = 7  # early stopping waits this many validations longer than the halving


def recipe(n_train: int) -> Dict[str, Any]:
    """The optimiser settings of the protocol for ``n_train`` requested frames."""
    return {
        "batch_size": 8, "max_steps": 10**8, "lr": LEARNING_RATE, "min_lr": 1e-6, "warmup_steps": 100,
        "schedule": "plateau", "plateau_factor": 0.5, "plateau_patience": PLATEAU_PATIENCE,
        "early_stop_patience": PLATEAU_PATIENCE + EARLY_STOP_AFTER_PLATEAU,
        "ema_decay": 0.99, "valid_every": 250 if n_train >= 500 else 100, "checkpoint_every": 250,
        "log_every": 50, "threads": 1, "compile": True,
        "time_budget_s": 3600 * BUDGET_HOURS.get(n_train, 2.0),
    }


# Replay (``--replay``): the rMD17 train splits of the six molecules that are not fine-tuning targets,
# a pretraining source at the fine-tuning level of theory (PBE/def2-SVP), as in configs/pretrain_mixed.yaml.
REPLAY_MOLECULES = ["benzene", "malonaldehyde", "toluene", "uracil", "paracetamol", "azobenzene"]
REPLAY_RATIO = 0.2


FORCE_WEIGHT = 10.0  # the recipe's force-loss weight (per-atom energy MSE weight 1)

# The molecule's own GFN2-xTB stage (``--xtb-stage``): ``forcefield-et corpus`` on the molecule's SMILES,
# XTB_STAGE_TRAJECTORIES copies (each copy one relaxation and one Langevin trajectory at its own random
# temperature, XTB_STAGE_MD_FRAMES frames), no displaced frames; then XTB_STAGE_HOURS of training on them.
SMILES = {"aspirin": "CC(=O)Oc1ccccc1C(=O)O", "ethanol": "CCO", "naphthalene": "c1ccc2ccccc2c1",
          "salicylic": "OC(=O)c1ccccc1O"}
XTB_STAGE_TRAJECTORIES = 20
XTB_STAGE_MD_FRAMES = 200
XTB_STAGE_HOURS = 0.5
XTB_STAGE_VALID_FRACTION = 0.05


@dataclass(frozen=True)
class Variant:
    """A change to the recipe, tried against the cell without it: replaying pretraining frames, the
    ZBL prior, another force-loss weight, another peak learning rate, or a more patient schedule
    (``patience`` validations without improvement before the learning rate is halved; early stopping
    waits :data:`EARLY_STOP_AFTER_PLATEAU` validations longer), a cosine schedule, a smaller learning
    rate for the representation than for the head (``encoder_lr_scale``), or another CPU budget than
    :data:`BUDGET_HOURS` gives the cell's size (``budget_hours``; 0: that one), or another CPU budget for the
    molecule's GFN2-xTB stage than :data:`XTB_STAGE_HOURS` (``xtb_stage_hours``; 0: that one)."""

    replay: float = 0.0  # share of every batch replayed from REPLAY_MOLECULES; 0: no replay
    zbl: float = 0.0  # the ZBL prior's switch-off scale (model ``zbl``); 0: off
    force_weight: float = FORCE_WEIGHT
    lr: float = LEARNING_RATE
    patience: int = PLATEAU_PATIENCE
    schedule: str = "plateau"  # or "cosine": decay over the CPU budget, no early stopping
    encoder_lr_scale: float = 1.0  # the representation's learning rate as a multiple of the head's
    xtb_stage: bool = False  # the start first fine-tuned on the molecule's own GFN2-xTB corpus
    budget_hours: float = 0.0  # the cell's CPU budget; 0: BUDGET_HOURS of its size
    select_by: str = "loss"  # the validation metric of best.pt, the schedule and early stopping (or "force-mae")
    xtb_stage_hours: float = 0.0  # the GFN2-xTB stage's CPU budget; 0: XTB_STAGE_HOURS

    def __post_init__(self) -> None:
        if self.xtb_stage_hours and not self.xtb_stage:
            raise ValueError("a GFN2-xTB stage budget (xtb_stage_hours) needs the stage (xtb_stage=True)")

    @property
    def labels(self) -> List[str]:
        labels = [f"the molecule's GFN2-xTB stage{self.stage_label}"] if self.xtb_stage else []
        labels += [("replay" if self.replay == REPLAY_RATIO else f"replay {self.replay:g}")] if self.replay else []
        labels += [("zbl" if self.zbl == 1.0 else f"zbl {self.zbl:g}")] if self.zbl else []
        labels += [f"force weight {self.force_weight:g}"] if self.force_weight != FORCE_WEIGHT else []
        labels += [f"learning rate {self.lr:g}"] if self.lr != LEARNING_RATE else []
        labels += [f"plateau patience {self.patience}"] if self.patience != PLATEAU_PATIENCE else []
        labels += ["cosine over the budget"] if self.schedule == "cosine" else []
        labels += [f"encoder learning rate × {self.encoder_lr_scale:g}"] if self.encoder_lr_scale != 1.0 else []
        labels += [f"{self.budget_hours:g} CPU-hour budget"] if self.budget_hours else []
        labels += ["selected by validation force MAE"] if self.select_by == "force-mae" else []
        return labels

    @property
    def recipe_labels(self) -> List[str]:
        """:attr:`labels` without the GFN2-xTB stage, for tables and plots that name the stage apart."""
        return replace(self, xtb_stage=False, xtb_stage_hours=0.0).labels

    @property
    def stage_label(self) -> str:
        """'' for the GFN2-xTB stage of :data:`XTB_STAGE_HOURS`, else its budget (" of 2 CPU-hours")."""
        return f" of {self.xtb_stage_hours:g} CPU-hours" if self.xtb_stage_hours else ""

    @property
    def stage_suffix(self) -> str:
        """The GFN2-xTB stage's part of names: '-xtb', or '-xtb<H>h' for a stage budget of H CPU-hours."""
        return ("-xtb" + (f"{self.xtb_stage_hours:g}h" if self.xtb_stage_hours else "")) if self.xtb_stage else ""

    @property
    def suffix(self) -> str:
        suffix = self.stage_suffix
        suffix += ("-replay" if self.replay == REPLAY_RATIO else f"-replay{self.replay:g}") if self.replay else ""
        suffix += ("-zbl" if self.zbl == 1.0 else f"-zbl{self.zbl:g}") if self.zbl else ""
        suffix += f"-fw{self.force_weight:g}" if self.force_weight != FORCE_WEIGHT else ""
        suffix += f"-lr{self.lr:g}" if self.lr != LEARNING_RATE else ""
        suffix += f"-pat{self.patience}" if self.patience != PLATEAU_PATIENCE else ""
        suffix += "-cosine" if self.schedule == "cosine" else ""
        suffix += f"-enc{self.encoder_lr_scale:g}" if self.encoder_lr_scale != 1.0 else ""
        suffix += f"-budget{self.budget_hours:g}h" if self.budget_hours else ""
        return suffix + ("-fmae" if self.select_by == "force-mae" else "")

    @classmethod
    def of(cls, result: Dict[str, Any]) -> Variant:
        return cls(float(result.get("replay") or 0.0), float(result.get("zbl") or 0.0),
                   float(result.get("force_weight", FORCE_WEIGHT)), float(result.get("lr", LEARNING_RATE)),
                   int(result.get("plateau_patience", PLATEAU_PATIENCE)), str(result.get("schedule", "plateau")),
                   float(result.get("encoder_lr_scale", 1.0)), bool(result.get("xtb_stage")),
                   float(result.get("budget_hours") or 0.0), str(result.get("select_by", "loss")),
                   float(result.get("xtb_stage_hours") or 0.0))

    def flags(self) -> List[str]:
        """The options of ``python -m benchmarks.finetune_converged`` that select this variant."""
        flags = ["--xtb-stage"] if self.xtb_stage else []
        flags += ["--xtb-stage-hours", f"{self.xtb_stage_hours:g}"] if self.xtb_stage_hours else []
        flags += ["--replay", f"{self.replay:g}"] if self.replay else []
        flags += ["--zbl", f"{self.zbl:g}"] if self.zbl else []
        flags += ["--force-weight", f"{self.force_weight:g}"] if self.force_weight != FORCE_WEIGHT else []
        flags += ["--lr", f"{self.lr:g}"] if self.lr != LEARNING_RATE else []
        flags += ["--patience", str(self.patience)] if self.patience != PLATEAU_PATIENCE else []
        flags += ["--schedule", "cosine"] if self.schedule == "cosine" else []
        flags += ["--encoder-lr-scale", f"{self.encoder_lr_scale:g}"] if self.encoder_lr_scale != 1.0 else []
        flags += ["--budget-hours", f"{self.budget_hours:g}"] if self.budget_hours else []
        return flags + (["--select-by", self.select_by] if self.select_by != "loss" else [])

    def optim(self) -> Dict[str, Any]:
        """The recipe's optimiser settings that this variant changes."""
        changes: Dict[str, Any] = {"lr": self.lr, "plateau_patience": self.patience,
                                   "early_stop_patience": self.patience + EARLY_STOP_AFTER_PLATEAU,
                                   "encoder_lr_scale": self.encoder_lr_scale}
        if self.budget_hours:
            changes["time_budget_s"] = 3600 * self.budget_hours
        if self.select_by != "loss":
            changes["select_by"] = SELECT_BY[self.select_by]
        if self.schedule == "cosine":  # the trainer fits the cosine's length to the CPU budget; the budget ends it
            changes.update({"schedule": "cosine", "max_steps": UNLIMITED_STEPS, "early_stop_patience": 0})
        return changes


def cell_name(molecule: str, n_train: int, start: str, variant: Variant = Variant()) -> str:
    return f"{molecule}-{n_train}-{start_label(start)}" + variant.suffix


def recipe_config(run_dir: Path, sources: List[Dict[str, Any]], n_train: int, start: str = "pretrained",
                  optim: Dict[str, Any] | None = None, variant: Variant = Variant(),
                  model: Dict[str, Any] | None = None):
    """The protocol's training configuration for ``sources`` (``n_train`` frames requested): the recipe's
    optimiser settings (``optim`` entries replace them), seed 0, float32, from ``start`` (a checkpoint
    name or path; ``"scratch"``: the ``model`` architecture, default the bundled pretrained model's),
    with ``variant``'s force weight and ZBL prior (its replay is a change of ``sources``)."""
    values: Dict[str, Any] = {
        "run_dir": str(run_dir), "seed": 0, "dtype": "float32", "sources": sources,
        "objectives": {"energy_weight": 1.0, "force_weight": variant.force_weight},
        "optim": {**recipe(n_train), **variant.optim(), **(optim or {})},
    }
    if start == "scratch":
        values["model"] = dict(model) if model else pretrained_architecture()
    else:
        values["init_from"] = start
    if variant.zbl:
        values.setdefault("model", {})["zbl"] = True if variant.zbl == 1.0 else variant.zbl
    return config_from_dict(values)


def run_config(molecule: str, n_train: int, start: str, data_root: Path, runs_dir: Path,
               optim: Dict[str, Any] | None = None, variant: Variant = Variant(),
               model: Dict[str, Any] | None = None, init_from: str | None = None):
    """The cell's training configuration; ``init_from`` (the checkpoint of ``start`` after the molecule's
    GFN2-xTB stage) replaces ``start`` as the initial weights, not in the cell's name."""
    train_file = str(rmd17_file(molecule, "train", data_root))
    source = {
        "name": molecule, "format": "rmd17", "path": train_file, "objective": "energy_forces",
        "frames": f"0:{min(n_train, 950)}", "valid_path": train_file, "valid_frames": VALID,
        "test_path": str(rmd17_file(molecule, "test", data_root)), "test_frames": "0:1000:5",
    }
    sources = [source]
    if variant.replay:
        sources = with_replay(sources, [str(rmd17_file(m, "train", data_root)) for m in REPLAY_MOLECULES],
                              variant.replay, format="rmd17")
    return recipe_config(runs_dir / cell_name(molecule, n_train, start, variant), sources, n_train,
                         init_from or start, optim, variant, model)


def xtb_stage_name(molecule: str, start: str, hours: float = 0.0) -> str:
    """The GFN2-xTB stage's name: <molecule>-<start>-xtb, with ``hours`` (its CPU budget, 0: the default
    :data:`XTB_STAGE_HOURS`) as <molecule>-<start>-xtb<hours>h."""
    return f"{molecule}-{start_label(start)}" + Variant(xtb_stage=True, xtb_stage_hours=hours).stage_suffix


def xtb_corpus(molecule: str, runs_dir: Path, trajectories: int = XTB_STAGE_TRAJECTORIES,
               md_frames: int = XTB_STAGE_MD_FRAMES) -> Dict[str, Any]:
    """Make (or finish) the molecule's GFN2-xTB corpus in ``<runs>/xtb_stage/<molecule>-corpus/`` with
    ``forcefield-et corpus``'s code; returns its summary and ``cpu_hours``, the CPU time of the call
    that completed it (a corpus resumed after a stop counts only its last stretch)."""
    from forcefield_et.training.xtb_stage import XtbStage, make_stage_corpus

    out = runs_dir / "xtb_stage" / f"{molecule}-corpus"
    cost_path = out.parent / f"{molecule}-corpus-cpu.json"
    before = time.process_time()
    summary = make_stage_corpus(XtbStage(SMILES[molecule], trajectories, md_frames), out, progress=False)
    if not cost_path.is_file():  # this call made (or finished) the corpus
        write_json_atomic(cost_path, {"cpu_hours": (time.process_time() - before) / 3600})
    return {**summary, "cpu_hours": json.loads(cost_path.read_text())["cpu_hours"]}


def xtb_stage(molecule: str, start: str, runs_dir: Path = RUNS_DIR, results_dir: Path = RESULTS_DIR,
              optim: Dict[str, Any] | None = None, trajectories: int = XTB_STAGE_TRAJECTORIES,
              md_frames: int = XTB_STAGE_MD_FRAMES, hours: float = 0.0) -> Dict[str, Any]:
    """``start`` fine-tuned on the molecule's own GFN2-xTB corpus (made first; relaxed and MD frames,
    energies and forces) with the recipe at 1000 frames for ``hours`` CPU-hours (0: :data:`XTB_STAGE_HOURS`;
    ``optim`` entries replace its settings); resumes like a cell. Returns the stage's record (also written to
    ``<results>/xtb_stage/<stage name>.json``, :func:`xtb_stage_name`); its weights are ``checkpoint``."""
    name = xtb_stage_name(molecule, start, hours)
    stage_dir = runs_dir / "xtb_stage" / name
    record_path = results_dir / "xtb_stage" / f"{name}.json"
    if record_path.is_file():
        if not (stage_dir / "best.pt").is_file():
            raise FileNotFoundError(
                f"{stage_dir / 'best.pt'} not found: the weights of the finished GFN2-xTB stage {name} are not on "
                f"this machine; move {record_path} aside to train the stage again"
            )
        return {**json.loads(record_path.read_text()), "checkpoint": str(stage_dir / "best.pt")}
    corpus = xtb_corpus(molecule, runs_dir, trajectories, md_frames)
    shard = Path(corpus["out_dir"]) / "xtb_shard0.npz"
    source = {"name": f"{molecule}_xtb", "format": "xtb_corpus", "path": str(shard), "objective": "energy_forces",
              "options": {"kinds": [0, 1]}, "valid_fraction": XTB_STAGE_VALID_FRACTION}
    config = recipe_config(stage_dir, [source], 1000, start,
                           {"time_budget_s": 3600 * (hours or XTB_STAGE_HOURS), **(optim or {})})
    trainer, _ = train(config, progress=False)
    from forcefield_et.checkpoint import read_checkpoint

    validation = read_checkpoint(stage_dir / "best.pt")["metadata"].get("validation", {})  # no model needed
    record = {
        "stage": name, "molecule": molecule, "smiles": SMILES[molecule], "start": start_label(start),
        "method": "gfn2-xtb", "trajectories": trajectories, "md_frames_per_trajectory": md_frames,
        "frames_relaxed": corpus["frames_relaxed"], "frames_md": corpus["frames_md"],
        "corpus_cpu_hours": corpus["cpu_hours"], "budget_hours": hours or XTB_STAGE_HOURS,
        "steps": trainer.step, "cpu_hours": trainer.cpu_seconds / 3600,
        "stop_reason": trainer.stop_reason or "max_steps",
        "valid_force_mae_meV_A": validation.get(f"{molecule}_xtb/force_mae_meV_A"),
        "valid_energy_mae_meV": validation.get(f"{molecule}_xtb/energy_mae_meV"),
        "machine": machine_info(),
    }
    (stage_dir / "last.pt").unlink(missing_ok=True)  # a finished stage keeps no optimiser state
    record_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record_path, record)
    return {**record, "checkpoint": str(stage_dir / "best.pt")}


def run_cell(molecule: str, n_train: int, start: str, data_root: Path = DATA_ROOT, runs_dir: Path = RUNS_DIR,
             results_dir: Path = RESULTS_DIR, optim: Dict[str, Any] | None = None, test_frames: int = 1000,
             variant: Variant = Variant(), model: Dict[str, Any] | None = None,
             extra: Dict[str, Any] | None = None,
             xtb_corpus_size: tuple = (XTB_STAGE_TRAJECTORIES, XTB_STAGE_MD_FRAMES)) -> Dict[str, Any]:
    """Train (or resume) one cell to its stop, then test its best weights; returns the result
    (``extra`` entries are stored with it). ``model``: the scratch architecture (default: the
    bundled pretrained model's). ``variant``: the change to the recipe, if any. ``xtb_corpus_size``:
    trajectories and MD frames per trajectory of the molecule's GFN2-xTB corpus (``variant.xtb_stage``)."""
    name = cell_name(molecule, n_train, start, variant)
    result_path = results_dir / "runs" / name / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    stage = (xtb_stage(molecule, start, runs_dir, results_dir, optim, *xtb_corpus_size, variant.xtb_stage_hours)
             if variant.xtb_stage else None)
    config = run_config(molecule, n_train, start, data_root, runs_dir, optim, variant, model,
                        init_from=stage["checkpoint"] if stage else None)
    trainer, _ = train(config, progress=False)
    run_dir = Path(config.run_dir)
    from forcefield_et import load_model

    model = load_model(run_dir / "best.pt", dtype="float32")
    metrics = rmd17_test_errors(model, molecule, data_root, test_frames)
    validation = model.metadata.get("validation", {})
    result = {
        "cell": name, **(extra or {}),
        "molecule": molecule, "n_train": min(n_train, 950), "n_train_requested": n_train, "start": start_label(start),
        "zbl": variant.zbl, "replay": variant.replay, "force_weight": variant.force_weight,
        "lr": variant.lr, "plateau_patience": variant.patience, "schedule": variant.schedule,
        "encoder_lr_scale": variant.encoder_lr_scale, "budget_hours": variant.budget_hours,
        "select_by": variant.select_by, "xtb_stage_hours": variant.xtb_stage_hours,
        "steps": trainer.step, "best_step": model.metadata["training"]["step"],
        "cpu_hours": trainer.cpu_seconds / 3600, "stop_reason": trainer.stop_reason or "max_steps",
        # the molecule's GFN2-xTB stage, if any: its record, and the CPU time of corpus + stage + this cell
        **({"xtb_stage": {k: v for k, v in stage.items() if k != "checkpoint"},
            "cpu_hours_total": trainer.cpu_seconds / 3600 + stage["cpu_hours"] + stage["corpus_cpu_hours"]}
           if stage else {}),
        "test_frames": metrics["frames"],
        "test_force_mae_meV_A": metrics["force_mae_meV_A"], "test_energy_mae_meV": metrics["energy_mae_meV"],
        "test_force_rmse_meV_A": metrics["force_rmse_meV_A"],
        # the machine that finished the cell; a resumed run's earlier stretches may have run on another,
        # and a CPU-hour buys a different number of steps on each ("curve" records both)
        "machine": machine_info(),
        "valid_force_mae_meV_A": validation.get(f"{molecule}/force_mae_meV_A"),
        "valid_energy_mae_meV": validation.get(f"{molecule}/energy_mae_meV"),
        "curve": [
            {"step": int(r["step"]), "cpu_hours": float(r["cpu_hours"]),
             "valid_force_mae_meV_A": float(r[f"{molecule}/force_mae_meV_A"]),
             "test_force_mae_meV_A": float(r[f"{molecule}/test_force_mae_meV_A"])}
            for r in read_validation_rows(run_dir) if r.get("cpu_hours")
        ],
    }
    (run_dir / "last.pt").unlink(missing_ok=True)  # a finished run keeps no optimiser state
    result_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result_path, result)
    return result


def finished(results_dir: Path) -> List[Dict[str, Any]]:
    """Every finished cell's result, ordered by molecule, size and start."""
    return finished_runs(results_dir, lambda r: (r["molecule"], r["n_train"], r["start"]))


def value_at(curve: List[Dict[str, Any]], hours: float) -> float | None:
    """Best test force MAE the run had reached by ``hours`` CPU-hours (None before its first point)."""
    reached = [p["test_force_mae_meV_A"] for p in curve if p["cpu_hours"] <= hours + 1e-9]
    return min(reached) if reached else None


def variant(result: Dict[str, Any]) -> str:
    """'' for a cell of the study's grid (bundled pretrained or scratch start, the recipe unchanged),
    else what sets it apart: the start's label and the variant's labels."""
    parts = [] if result["start"] in ("pretrained", "scratch") else [result["start"]]
    return " + ".join(parts + Variant.of(result).labels)


def variants_table(results: List[Dict[str, Any]]) -> str:
    """Each variant cell against the cell with the same molecule, frames and start and the recipe
    unchanged: validation force MAE (what decides whether the variant is kept) and test force MAE."""
    base = {(r["molecule"], r["n_train"], r["start"]): r for r in results if not Variant.of(r).labels}
    lines = ["| molecule | train frames | start | variant | valid force MAE: base / variant (meV/Å) "
             "| test force MAE: base / variant (meV/Å) | CPU-hours: base / variant |", "|---|---|---|---|---|---|---|"]
    for r in results:
        extra = Variant.of(r).labels
        if not extra:
            continue
        b = base.get((r["molecule"], r["n_train"], r["start"]))
        r = {**r, "cpu_hours": r.get("cpu_hours_total", r["cpu_hours"])}  # a GFN2-xTB stage counts in full
        pairs = [(f"{b[key]:.2f}" if b and b.get(key) is not None else "–") + f" / {r[key]:.2f}"
                 for key in ("valid_force_mae_meV_A", "test_force_mae_meV_A", "cpu_hours")]
        cells = [r["molecule"], str(r["n_train"]), r["start"], " + ".join(extra), *pairs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


MOLECULE_NAMES = {"salicylic": "salicylic acid"}


def summary_table(results: List[Dict[str, Any]]) -> str:
    """Markdown: test force MAE per molecule for both starts at 1000 and 50 frames (the cell chosen on
    validation, :func:`chosen_cell`, with its variant named), beside the published NequIP and MACE figures
    ('–': the cell has not been run). Where cells with the molecule's GFN2-xTB stage have finished, a
    column after the 50-frame pretrained one holds the pretrained start's chosen stage cell."""
    stage_cells = any(r.get("xtb_stage") and r["n_train_requested"] == 50 for r in results)

    def cell(molecule: str, n_train: int, start: str, xtb_stage: bool = False) -> str:
        r = chosen_cell(results, molecule, start, n_train, xtb_stage)
        if r is None:
            return "–"
        labels = Variant.of(r).recipe_labels  # the column names the stage
        return f"{r['test_force_mae_meV_A']:.1f}" + (f" ({', '.join(labels)})" if labels else "")

    stage_header = " | pretrained + the molecule's GFN2-xTB stage" if stage_cells else ""
    lines = ["| molecule | 1000 frames: scratch | pretrained | NequIP | MACE "
             f"| 50 frames: scratch | pretrained{stage_header} | MACE |",
             "|---|---|---|---|---|---|---|" + ("---|" if stage_cells else "") + "---|"]
    for m in MOLECULES:
        stage = f"| {cell(m, 50, 'pretrained', True)} " if stage_cells else ""
        lines.append(f"| {MOLECULE_NAMES.get(m, m)} | {cell(m, 1000, 'scratch')} | {cell(m, 1000, 'pretrained')} "
                     f"| {PUBLISHED_1000['NequIP'][m]} | {PUBLISHED_1000['MACE'][m]} | {cell(m, 50, 'scratch')} "
                     f"| {cell(m, 50, 'pretrained')} {stage}| {PUBLISHED_50['MACE'][m]} |")
    return "\n".join(lines) + "\n"


def xtb_stage_table(results: List[Dict[str, Any]]) -> str:
    """Markdown: per molecule and start, the chosen cell with the molecule's GFN2-xTB stage (its corpus, the
    stage's training and xTB validation error, the cell's test errors) beside the chosen cell of the same
    start and size without the stage; '' when no such cell has finished."""
    lines = ["| molecule | train frames | start | xTB frames (relaxed + MD) | stage: steps, CPU-h | stage: xTB valid "
             "force MAE (meV/Å) | test force MAE without / with the stage (meV/Å) | test energy MAE without / with "
             "(meV) | CPU-h without / with (corpus + stage + cell) | MACE (50 frames) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["molecule"], r["n_train_requested"], r["start"]) for r in results if r.get("xtb_stage")},
                  key=lambda k: (MOLECULES.index(k[0]) if k[0] in MOLECULES else len(MOLECULES), k[0], k[1], k[2]))
    for molecule, n_train, start in keys:
        staged = chosen_cell(results, molecule, start, n_train, xtb_stage=True)
        plain = chosen_cell(results, molecule, start, n_train)
        stage = staged["xtb_stage"]

        def pair(key: str, plain: Dict[str, Any] | None = plain, staged: Dict[str, Any] = staged) -> str:
            return (f"{plain[key]:.1f}" if plain else "–") + f" / {staged[key]:.1f}"

        published = PUBLISHED_50["MACE"].get(molecule, "–") if n_train == 50 else "–"
        plain_hours = f"{plain['cpu_hours']:.2f}" if plain else "–"
        lines.append(
            f"| {MOLECULE_NAMES.get(molecule, molecule)} | {staged['n_train']} | {start} "
            f"| {stage['frames_relaxed']} + {stage['frames_md']} | {stage['steps']:,}, {stage['cpu_hours']:.2f} "
            f"| {stage['valid_force_mae_meV_A']:.1f} | {pair('test_force_mae_meV_A')} | {pair('test_energy_mae_meV')} "
            f"| {plain_hours} / {staged['cpu_hours_total']:.2f} "
            f"({stage['corpus_cpu_hours']:.2f} + {stage['cpu_hours']:.2f} + {staged['cpu_hours']:.2f}) | {published} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def gain_at_equal_time(scratch: Dict[str, Any], pretrained: Dict[str, Any]) -> str:
    """Scratch over pretrained test force MAE, each the best reached by the CPU time at which the shorter
    run stopped ("–" where a run has no point by then)."""
    hours = min(scratch["cpu_hours"], pretrained["cpu_hours"])
    at_scratch, at_pretrained = value_at(scratch["curve"], hours), value_at(pretrained["curve"], hours)
    return f"{at_scratch / at_pretrained:.2f}× at {hours:.2f} CPU-h" if at_scratch and at_pretrained else "–"


def table(results: List[Dict[str, Any]]) -> str:
    """The study's grid (bundled pretrained and scratch starts) and the pretraining gains; the other
    cells (snapshot starts, replay, ZBL) in a second table against their base cells."""
    all_results = results
    grid = [r for r in results if not variant(r)]
    others = variants_table(results)
    results = grid
    lines = ["| molecule | train frames | start | test force MAE (meV/Å) | test energy MAE (meV) | CPU-hours "
             "| steps | stopped by |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['molecule']} | {r['n_train']} | {r['start']} | {r['test_force_mae_meV_A']:.2f} "
                     f"| {r['test_energy_mae_meV']:.2f} | {r['cpu_hours']:.2f} | {r['steps']} | {r['stop_reason']} |")
    gains = ["", "| molecule | train frames | recipe: gain at convergence (scratch / pretrained) "
             "| recipe: gain at equal CPU time | chosen on validation: scratch / pretrained "
             "| chosen: gain at equal CPU time | chosen: gain at convergence |", "|---|---|---|---|---|---|---|"]
    by_key = {(r["molecule"], r["n_train_requested"], r["start"]): r for r in results}
    for molecule, requested in sorted({(r["molecule"], r["n_train_requested"]) for r in all_results}):
        chosen = [chosen_cell(all_results, molecule, start, requested) for start in ("scratch", "pretrained")]
        if None in chosen:
            continue
        recipe = [by_key.get((molecule, requested, start)) for start in ("scratch", "pretrained")]
        at_convergence = (f"{recipe[0]['test_force_mae_meV_A'] / recipe[1]['test_force_mae_meV_A']:.2f}×"
                          if None not in recipe else "–")
        names = " / ".join(" + ".join(Variant.of(c).labels) or "recipe" for c in chosen)
        gains.append(f"| {molecule} | {chosen[0]['n_train']} | {at_convergence} "
                     f"| {gain_at_equal_time(*recipe) if None not in recipe else '–'} | {names} "
                     f"| {gain_at_equal_time(*chosen)} "
                     f"| {chosen[0]['test_force_mae_meV_A'] / chosen[1]['test_force_mae_meV_A']:.2f}× |")
    return "\n".join(lines + (gains if len(gains) > 3 else [])) + "\n" + ("\n" + others if others else "")


def plot(results: List[Dict[str, Any]], path: Path) -> None:
    """Time to accuracy: test force MAE against training CPU-hours, one panel per molecule, for the cell
    that validation chose at each number of frames and start (the tables' chosen cells)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    molecules = sorted({r["molecule"] for r in results})
    n_columns = min(2, len(molecules))
    n_rows = -(-len(molecules) // n_columns)
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(5.6 * n_columns, 4.2 * n_rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(molecules):]:
        ax.set_visible(False)
    for ax, molecule in zip(axes.flat, molecules):
        for n_train in sorted({r["n_train_requested"] for r in results if r["molecule"] == molecule}):
            for start, xtb in (("pretrained", False), ("scratch", False), ("pretrained", True), ("scratch", True)):
                cell = chosen_cell(results, molecule, start, n_train, xtb)
                if cell is None:
                    continue
                style = {("pretrained", False): "-", ("scratch", False): "--", ("pretrained", True): ":",
                         ("scratch", True): "-."}[start, xtb]
                colour = "#1f77b4" if n_train >= 500 else "#ff7f0e"
                # a GFN2-xTB stage's cell starts at the CPU time its corpus and stage took
                offset = cell.get("cpu_hours_total", cell["cpu_hours"]) - cell["cpu_hours"]
                x = [p["cpu_hours"] + offset for p in cell["curve"]]
                y = [p["test_force_mae_meV_A"] for p in cell["curve"]]
                rest = " + ".join(Variant.of(cell).recipe_labels)
                label = f"{start}{' + xTB stage' if xtb else ''}, {cell['n_train']} frames"
                label += f" ({rest})" if rest else ""
                ax.plot(x, y, style, color=colour, label=label)
        ax.set_title(molecule)
        ax.set_xlabel("training CPU-hours")
        ax.set_ylabel("test force MAE (meV/Å)")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper right")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    if path.parent.resolve() == RESULTS_DIR.resolve():  # the committed results: the figure the docs show
        shutil.copyfile(path, DOCS_IMG / "time_to_accuracy.png")


def chosen_cell(results: List[Dict[str, Any]], molecule: str, start: str, n_train: int = 1000,
                xtb_stage: bool = False) -> Dict[str, Any] | None:
    """The finished cell of ``molecule`` at ``n_train`` requested frames from ``start`` with the lowest
    validation force MAE, the recipe and its variants alike (None: no such cell has finished); cells with
    the molecule's GFN2-xTB stage (which see more than the rMD17 frames) only with ``xtb_stage``, and
    then only those."""
    candidates = [r for r in results if r["molecule"] == molecule and r["n_train_requested"] == n_train
                  and r["start"] == start_label(start) and r.get("valid_force_mae_meV_A") is not None
                  and bool(r.get("xtb_stage")) == xtb_stage]
    return min(candidates, key=lambda r: r["valid_force_mae_meV_A"], default=None)


def export_model(molecule: str, start: str, destination: Path, results_dir: Path = RESULTS_DIR,
                 runs_dir: Path = RUNS_DIR, data_root: Path = DATA_ROOT, zbl: float = 0.0) -> Path:
    """Export the 1000-frame cell of ``molecule`` from ``start`` chosen by :func:`chosen_cell` to
    ``destination`` (an inference checkpoint named after the file) with its model card: recipe, variant,
    CPU-hours, validation and test errors, training domain; the ZBL prior at ``zbl`` where it leaves the
    training frames unchanged (see :mod:`benchmarks.rmd17_models`)."""
    from .rmd17_models import export_rmd17_model

    result = chosen_cell(finished(results_dir), molecule, start)
    if result is None:
        raise FileNotFoundError(
            f"no finished 1000-frame {start_label(start)} cell of {molecule} in {results_dir}: run python -m "
            f"benchmarks.finetune_converged --molecules {molecule} --sizes 1000 --starts {start} first"
        )
    if not (runs_dir / result["cell"] / "best.pt").is_file():
        raise FileNotFoundError(
            f"{runs_dir / result['cell'] / 'best.pt'} not found: the weights of the finished cell {result['cell']} "
            f"are not on this machine; move {results_dir / 'runs' / result['cell'] / 'result.json'} aside and run "
            "the cell again"
        )
    variant_labels = Variant.of(result).labels
    origin = ("The bundled pretrained ET fine-tuned" if result["start"] == "pretrained"
              else f"The ET (the pretrained model's architecture) trained from {result['start']}")
    card = {
        "name": destination.stem,
        "description": (
            f"{origin} to convergence on rMD17 {molecule} (train_01 frames 0-{result['n_train'] - 1}; "
            f"best EMA weights by the validation frames 950-999) with benchmarks/finetune_converged.py"
            + (f" ({', '.join(variant_labels)})" if variant_labels else "")
            + f": {result['steps']} steps of batch 8 in {result['cpu_hours']:.2f} CPU-hours (stopped: "
            f"{result['stop_reason']}); energy + force loss (force weight "
            f"{result.get('force_weight', FORCE_WEIGHT):g})."
        ),
        "limits": f"Fitted to one molecule: use it for {molecule} only.",
        "training_cost": {"cpu_hours": round(result["cpu_hours"], 3), "steps": result["steps"],
                          "best_step": result["best_step"], "cell": result["cell"]},
        "test_errors": {
            "split": "rmd17 test_01", "frames": result["test_frames"],
            "force_mae_meV_A": result["test_force_mae_meV_A"], "energy_mae_meV": result["test_energy_mae_meV"],
            "force_rmse_meV_A": result["test_force_rmse_meV_A"],
        },
    }
    return export_rmd17_model(runs_dir / result["cell"], destination, molecule, card, result["n_train"],
                              data_root, zbl, also_trained_on=REPLAY_MOLECULES if result.get("replay") else ())


def export_destination(molecule: str, start: str, runs_dir: Path = RUNS_DIR) -> Path:
    """Where ``--bundle`` exports a start's chosen cell: ``<runs>/exported/rmd17-<molecule>.pt`` for the
    pretrained start (then bundled, :func:`bundle`), ``<runs>/exported/rmd17-<molecule>-<start>.pt`` for any
    other."""
    label = start_label(start)
    return runs_dir / "exported" / (f"rmd17-{molecule}.pt" if label == "pretrained" else f"rmd17-{molecule}-{label}.pt")


def fine_tuned_from(model: Dict[str, Any], start: Dict[str, Any]) -> bool:
    """Whether the checkpoint metadata ``model`` records a training that started from the model whose
    metadata is ``start`` (its ``parent_training`` is that model's ``training``)."""
    return model.get("parent_training") is not None and model.get("parent_training") == start.get("training")


def bundle(export: Path, bundled_dir: Path | None = None) -> str:
    """Copy the pretrained start's export ``export`` (``rmd17-<molecule>.pt``) into the bundled checkpoints,
    unless the bundled file of that name is the repair of the same cell (``python -m benchmarks.collapse_repair
    --bundle``), which stays. Returns what it did."""
    from forcefield_et.checkpoint import read_checkpoint
    from forcefield_et.files import atomic_write
    from forcefield_et.registry import BUNDLED_DIR

    bundled = (bundled_dir or BUNDLED_DIR) / export.name
    exported = read_checkpoint(export)["metadata"]
    if bundled.is_file():
        current = read_checkpoint(bundled)["metadata"]
        if "repair" in current and fine_tuned_from(current, exported):
            return (f"kept {bundled}: the repair of {exported['training_cost']['cell']} "
                    "(python -m benchmarks.collapse_repair --bundle)")
    with atomic_write(bundled) as handle:
        handle.write(export.read_bytes())
    return f"bundled {export} as {bundled}"


def report(results_dir: Path = RESULTS_DIR) -> str:
    results = finished(results_dir)
    return write_report(results_dir, "finetune_converged", __doc__.split("Protocol")[1].split("Runs live")[0].strip(),
                        results, table(results), plot, figure_name="time_to_accuracy.png",
                        published_1000_frames_force_mae_meV_A=PUBLISHED_1000,
                        published_50_frames_force_mae_meV_A=PUBLISHED_50)


QUICK_BUDGET_S = 6  # --quick: CPU seconds of training (a few validations of the tiny pipeline check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", nargs="+", default=MOLECULES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 50])
    parser.add_argument("--starts", nargs="+", default=["scratch", "pretrained"])
    parser.add_argument("--zbl", nargs="?", type=float, const=1.0, default=0.0, metavar="SCALE",
                        help="switch the ZBL repulsion prior on, off at SCALE (default 1) times the covalent radii "
                        "sum (cells <cell>-zbl, <cell>-zbl<SCALE>; with --bundle: in the exported models)")
    parser.add_argument("--force-weight", type=float, default=FORCE_WEIGHT,
                        help=f"force-loss weight (default {FORCE_WEIGHT:g}; other values: cells <cell>-fw<W>)")
    parser.add_argument("--lr", type=float, default=LEARNING_RATE,
                        help=f"peak learning rate (default {LEARNING_RATE:g}; other values: cells <cell>-lr<LR>)")
    parser.add_argument("--patience", type=int, default=PLATEAU_PATIENCE,
                        help=f"validations without improvement before the learning rate is halved (default "
                        f"{PLATEAU_PATIENCE}; early stopping waits {EARLY_STOP_AFTER_PLATEAU} more; other values: "
                        "cells <cell>-pat<P>)")
    parser.add_argument("--schedule", choices=["plateau", "cosine"], default="plateau",
                        help="plateau (the recipe), or cosine: decay to the minimum learning rate over the CPU "
                        "budget, without early stopping (cells <cell>-cosine)")
    parser.add_argument("--encoder-lr-scale", type=float, default=1.0, metavar="S",
                        help="learning rate of the representation as a multiple of the head's (default 1; other "
                        "values: cells <cell>-enc<S>)")
    parser.add_argument("--replay", nargs="?", type=open_fraction_arg, const=REPLAY_RATIO, default=0.0, metavar="SHARE",
                        help=f"replay the rMD17 train frames of {', '.join(REPLAY_MOLECULES)} (SHARE of every batch, "
                        f"default {REPLAY_RATIO:g}; forces only); the cells are named <cell>-replay, or "
                        "<cell>-replay<SHARE> for another share")
    parser.add_argument("--budget-hours", type=float, default=0.0, metavar="H",
                        help="CPU budget per cell (default: " + ", ".join(f"{h:g} at {n} frames" for n, h in
                        BUDGET_HOURS.items()) + "; another budget: cells <cell>-budget<H>h)")
    parser.add_argument("--select-by", choices=sorted(SELECT_BY), default="loss",
                        help="the validation metric that picks best.pt and that the schedule and early stopping "
                        "follow: loss (the recipe) or force-mae (the validation force MAE; cells <cell>-fmae)")
    parser.add_argument("--xtb-stage", action="store_true",
                        help="fine-tune the start on the molecule's own GFN2-xTB frames first (made from its SMILES "
                        "by forcefield-et corpus; needs pip install 'forcefield-et[corpus]'); cells <cell>-xtb...")
    parser.add_argument("--xtb-stage-hours", type=float, default=0.0, metavar="H",
                        help=f"with --xtb-stage: the stage's CPU budget (default {XTB_STAGE_HOURS:g}; another budget: "
                        "stages <molecule>-<start>-xtb<H>h, cells <cell>-xtb<H>h...)")
    parser.add_argument("--data-root", default=str(DATA_ROOT), help="the shared data folder (holds rmd17/)")
    parser.add_argument("--runs", default=str(RUNS_DIR))
    parser.add_argument("--out", default=str(RESULTS_DIR))
    parser.add_argument("--report", action="store_true", help="train nothing; summarise the finished runs")
    parser.add_argument("--bundle", action="store_true",
                        help="train nothing; export, per molecule and start, the finished 1000-frame cell with the "
                        "lowest validation force MAE to <runs>/exported/rmd17-<molecule>-<start>.pt (the pretrained "
                        "start: rmd17-<molecule>.pt, then bundled as forcefield_et/checkpoints/rmd17-<molecule>.pt "
                        "unless the bundled file is the repair of the same cell, benchmarks.collapse_repair --bundle; "
                        "with --zbl SCALE: the ZBL prior switched on)")
    parser.add_argument("--quick", action="store_true", help="ethanol, 50 frames, scratch, a 6 s budget, eager")
    return parser


def variant_of_arguments(args: argparse.Namespace) -> Variant:
    """The recipe's variant that the parsed command-line options select."""
    return Variant(args.replay, args.zbl, args.force_weight, args.lr, args.patience, args.schedule,
                   args.encoder_lr_scale, args.xtb_stage, args.budget_hours, args.select_by, args.xtb_stage_hours)


def main(argv: List[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        variant = variant_of_arguments(args)
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    optim, test_frames, xtb_corpus_size = None, 1000, (XTB_STAGE_TRAJECTORIES, XTB_STAGE_MD_FRAMES)
    if args.bundle:
        missing = []
        for molecule in args.molecules:
            for start in args.starts:
                try:
                    path = export_model(molecule, start, export_destination(molecule, start, Path(args.runs)), out,
                                        Path(args.runs), Path(args.data_root), args.zbl)
                    print(bundle(path) if start_label(start) == "pretrained" else path)
                except FileNotFoundError as error:  # export the others, then say what is missing
                    missing.append(str(error))
        if missing:
            raise SystemExit("not exported:\n  " + "\n  ".join(missing))
        return
    if args.quick:
        args.molecules, args.sizes, args.starts = ["ethanol"], [50], ["scratch"]
        optim, test_frames = {"time_budget_s": QUICK_BUDGET_S, "compile": False, "valid_every": 4}, 50
        xtb_corpus_size = (2, 4)
    if not args.report:
        for molecule in args.molecules:
            for size in args.sizes:
                for start in args.starts:
                    try:
                        result = run_cell(molecule, size, start, Path(args.data_root), Path(args.runs), out, optim,
                                          test_frames, variant, xtb_corpus_size=xtb_corpus_size)
                    except DirectoryBusyError as error:  # another process trains it: the next cell
                        print(f"skipped: {error}", flush=True)
                        continue
                    print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
    print(report(out))


if __name__ == "__main__":
    main()
