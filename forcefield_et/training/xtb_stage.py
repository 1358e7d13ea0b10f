"""A GFN2-xTB stage before fine-tuning on few reference frames.

``forcefield-et finetune --xtb-stage SMILES [SMILES ...]`` first labels the molecules' own geometries with
GFN2-xTB (:func:`forcefield_et.data.corpus.make_corpus`: each trajectory one relaxation and one
Langevin run at its own random temperature, no random displacements), fine-tunes the start on those
frames (energies and forces), and only then fine-tunes on the reference frames. The run directory
holds the stage under ``xtb_stage/``::

    <out>/xtb_stage/stage.json   the SMILES and sizes (a resumed run must ask for the same)
    <out>/xtb_stage/corpus/      the GFN2-xTB shards (resumable)
    <out>/xtb_stage/run/         the stage's training run; its best.pt starts the final fine-tuning
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

from ..files import write_text_atomic

STAGE_DIR = "xtb_stage"
STAGE_FILE = "stage.json"


@dataclass(frozen=True)
class XtbStage:
    """The molecules (``smiles``: one SMILES or several) and the size of their GFN2-xTB stage:
    ``trajectories`` relaxations per molecule, each followed by a Langevin trajectory of ``md_frames``
    frames 10 fs apart; ``valid_fraction`` of the trajectories validate the stage every
    ``valid_every`` steps; the learning rate halves after ``plateau_patience`` validations without a
    new best, and the stage stops after ``early_stop_patience`` or after ``time_budget_s`` CPU seconds."""

    smiles: str | Tuple[str, ...]
    trajectories: int = 20
    md_frames: int = 200
    valid_fraction: float = 0.05
    time_budget_s: float = 1800.0
    seed: int = 0
    valid_every: int = 250
    plateau_patience: int = 3
    early_stop_patience: int = 10

    def __post_init__(self) -> None:
        molecules = (self.smiles,) if isinstance(self.smiles, str) else tuple(self.smiles)
        if not molecules or any(not isinstance(m, str) or len(m.split()) != 1 for m in molecules):
            raise ValueError(f"the GFN2-xTB stage needs SMILES strings without spaces, got {self.smiles!r}")
        if len(set(molecules)) != len(molecules):
            raise ValueError(f"the GFN2-xTB stage got a SMILES twice: {self.smiles!r}")
        object.__setattr__(self, "smiles", tuple(m.strip() for m in molecules))
        if int(self.trajectories) < 2:
            raise ValueError(
                f"the GFN2-xTB stage needs at least 2 trajectories (one validates), got {self.trajectories}"
            )
        if int(self.md_frames) < 1:
            raise ValueError(f"the GFN2-xTB stage needs at least 1 MD frame per trajectory, got {self.md_frames}")
        if not 0 < float(self.time_budget_s) < float("inf"):
            raise ValueError(f"the stage's time budget must be positive and finite, got {self.time_budget_s}")

    def corpus_settings(self):  # noqa: ANN201 (CorpusSettings; imported lazily)
        """The :class:`~forcefield_et.data.corpus.CorpusSettings` of the stage's corpus: MD frames only
        besides the relaxed ones (random displacements carry forces far larger than the molecule's MD
        at these temperatures), every trajectory in one shard."""
        from ..data.corpus import CorpusSettings

        return CorpusSettings(md_frames=self.md_frames, displacements=0, seed=self.seed,
                              molecules_per_shard=self.trajectories * len(self.smiles))

    def smiles_list(self) -> List[str]:
        """One copy of each SMILES per trajectory (each copy gets its own conformer and temperature)."""
        return [molecule for molecule in self.smiles for _ in range(int(self.trajectories))]


def stage_paths(run_dir: str | Path) -> Dict[str, Path]:
    """``root``, ``record`` (stage.json), ``corpus`` and ``run`` of the stage in ``run_dir``."""
    root = Path(run_dir) / STAGE_DIR
    return {"root": root, "record": root / STAGE_FILE, "corpus": root / "corpus", "run": root / "run"}


def check_stage_record(run_dir: str | Path, stage: XtbStage) -> None:
    """Write ``stage.json``, or raise ValueError when the stage already in ``run_dir`` was made for
    another molecule or size (its corpus and weights would not be this stage's)."""
    path = stage_paths(run_dir)["record"]
    wanted = json.loads(json.dumps(asdict(stage)))
    if path.is_file():
        held = json.loads(path.read_text())
        changed = sorted(k for k in set(held) | set(wanted) if held.get(k) != wanted.get(k))
        if changed:
            raise ValueError(
                f"{path.parent} holds a GFN2-xTB stage with other settings (differs in: {', '.join(changed)}); "
                "resume it with its own settings, choose another --out, or pass --overwrite"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(wanted, indent=2))


def remove_stage(run_dir: str | Path) -> None:
    """Delete the stage in ``run_dir`` (its corpus and training run), for ``--overwrite``."""
    root = stage_paths(run_dir)["root"]
    if root.is_dir():
        shutil.rmtree(root)


def make_stage_corpus(stage: XtbStage, out_dir: str | Path, progress: bool = True) -> Dict[str, Any]:
    """Make (or finish) the stage's GFN2-xTB corpus in ``out_dir``; returns its counts
    (:func:`~forcefield_et.data.corpus.summarize`). Needs ``pip install 'forcefield-et[corpus]'``."""
    from ..data.corpus import make_corpus

    summary = make_corpus(stage.smiles_list(), out_dir, stage.corpus_settings(), progress=progress)
    if summary["molecules_kept"] < 2:
        raise ValueError(
            f"GFN2-xTB labelled {summary['molecules_kept']} of {summary['molecules_tried']} trajectories of "
            f"{', '.join(stage.smiles)} (RDKit could not embed the SMILES, or every frame exceeded the corpus's "
            "force limit); check the SMILES"
        )
    return summary


def stage_shards(corpus_dir: str | Path) -> List[str]:
    """The corpus's shard files, in order."""
    shards = sorted(str(p) for p in Path(corpus_dir).glob("xtb_shard*.npz"))
    if not shards:
        raise FileNotFoundError(f"{corpus_dir} holds no xtb_shard*.npz")
    return shards


__all__ = ["STAGE_DIR", "XtbStage", "check_stage_record", "make_stage_corpus", "remove_stage", "stage_paths",
           "stage_shards"]
