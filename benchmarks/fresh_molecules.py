"""Pretrained models on drug-like molecules that are in no shared data file: GFN2-xTB frames made here
with ``forcefield-et corpus`` from MOSES SMILES that no drug-like shard holds.

    python -m benchmarks.fresh_molecules                      # label (resumable), then test the bundled pretrained
    python -m benchmarks.fresh_molecules --models pretrained runs/pretrain_mixed/snapshots/step_31250.pt
    python -m benchmarks.fresh_molecules --quick --out DIR    # pipeline check: 2 molecules, frames in DIR/work

Molecules: ``--molecules`` (40) SMILES drawn with a fixed seed from ``smiles/moses_train.csv.gz``,
keeping only those whose RDKit canonical SMILES is in none of the ``xtb/xtb_druglike_*.npz`` shards
(the pretraining corpus) and whose elements are H C N O F S Cl. Frames: ``forcefield-et corpus``
with its defaults (GFN2-xTB, tblite): the relaxed geometry (kind 0), 6 Langevin MD frames at a
random 300-800 K (kind 1) and 6 random displacements of 0.02-0.12 Å (kind 2) per molecule, the
recipe of the drug-like shards. The frames are data: they go to ``runs/fresh_molecules/`` (ignored
by git), never into the repository.

Per model: force MAE (meV/Å) on the MD frames and on the displaced frames, and the mean predicted
|F| (meV/Å) at the relaxed geometries (0 is ideal), the measures the pretraining run validates on
its held-out molecules (``druglike_md``). Writes ``fresh_molecules.json`` and ``fresh_molecules.md``
to ``--out`` (default ``benchmarks/results/fresh_molecules/``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from .io import write_json_atomic, write_text_atomic
from .machine import machine_info
from .paths import DATA_ROOT, REPO

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "fresh_molecules"
WORK_DIR = REPO / "runs" / "fresh_molecules"
MOLECULES = 40
SEED = 2026
ELEMENTS = {"H", "C", "N", "O", "F", "S", "Cl"}
KINDS = {0: "relaxed", 1: "md", 2: "displaced"}


def canonical(smiles: str) -> str | None:
    """RDKit canonical SMILES (None when RDKit cannot parse it)."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    molecule = Chem.MolFromSmiles(smiles)
    return None if molecule is None else Chem.MolToSmiles(molecule)


def shard_smiles(data_root: Path) -> tuple[set, List[str]]:
    """Canonical SMILES of every molecule in the drug-like shards, and the shard file names."""
    files = sorted((data_root / "xtb").glob("xtb_druglike_*.npz"))
    known = set()
    for path in files:
        with np.load(path) as shard:
            known.update(c for c in (canonical(str(s)) for s in shard["smiles"]) if c)
    return known, [p.name for p in files]


def choose_smiles(data_root: Path, n: int, seed: int = SEED) -> Dict[str, Any]:
    """``n`` MOSES SMILES (seeded draw) in none of the drug-like shards, with H C N O F S Cl only."""
    from rdkit import Chem

    from forcefield_et.data.corpus import read_smiles

    pool = read_smiles(data_root / "smiles" / "moses_train.csv.gz")
    known, shards = shard_smiles(data_root)
    order = np.random.default_rng(seed).permutation(len(pool))
    chosen: List[str] = []
    for index in order:
        smiles = canonical(pool[index])
        if smiles is None or smiles in known or smiles in chosen:
            continue
        if {atom.GetSymbol() for atom in Chem.MolFromSmiles(smiles).GetAtoms()} - ELEMENTS:
            continue
        chosen.append(smiles)
        if len(chosen) == n:
            break
    return {"smiles": chosen, "excluded_shards": shards, "excluded_molecules": len(known), "seed": seed}


def label(work: Path, data_root: Path, n: int, quick: bool = False) -> Dict[str, Any]:
    """Choose the molecules (kept in ``work/molecules.json``, so a rerun labels the same ones) and label
    them with ``forcefield-et corpus`` into ``work/corpus`` (resumable). Returns the selection record."""
    from forcefield_et.data.corpus import CorpusSettings, make_corpus

    record_path = work / "molecules.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
    else:
        record = choose_smiles(data_root, n)
        work.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record_path, record)
    settings = CorpusSettings(md_frames=1, displacements=1, relax_steps=50) if quick else CorpusSettings()
    start = time.process_time()
    record["corpus"] = make_corpus(record["smiles"], work / "corpus", settings, progress=True)
    record["labelling_cpu_s_this_run"] = time.process_time() - start
    return record


def evaluate(model_name: str, corpus: Path) -> Dict[str, Any]:
    """Force MAE on the MD and displaced frames, mean predicted |F| at the relaxed ones (meV/Å)."""
    from forcefield_et import load_model
    from forcefield_et.data import read_xtb_corpus
    from forcefield_et.evaluation import predict

    model = load_model(model_name, dtype="float32")
    out: Dict[str, Any] = {"model": model_name, "description": model.metadata.get("description"),
                           "conformations_seen": (model.metadata.get("snapshot") or {}).get("conformations_seen")}
    for kind, name in KINDS.items():
        data = read_xtb_corpus(corpus, kinds=(kind,))
        if not len(data):
            continue
        with torch.enable_grad():
            forces = predict(model, data)["forces"]
        if kind == 0:
            out[f"{name}_mean_force_norm_meV_A"] = float(1000 * np.linalg.norm(forces, axis=1).mean())
        else:
            out[f"{name}_force_mae_meV_A"] = float(1000 * np.abs(forces - data.forces).mean())
        out[f"{name}_frames"] = int(len(data))
    return out


def table(summary: Dict[str, Any]) -> str:
    lines = ["| model | conformations seen in pretraining | MD frames: force MAE (meV/Å) "
             "| displaced frames: force MAE (meV/Å) | relaxed geometries: mean predicted \\|F\\| (meV/Å) |",
             "|---|---|---|---|---|"]
    for row in summary["models"]:
        cells = [f"{row[key]:.1f}" if key in row else "–" for key in
                 ("md_force_mae_meV_A", "displaced_force_mae_meV_A", "relaxed_mean_force_norm_meV_A")]
        seen = f"{row['conformations_seen']:,}" if row.get("conformations_seen") else "–"
        lines.append(f"| `{row['model']}` | {seen} | " + " | ".join(cells) + " |")
    counts = summary["frames"]
    return "\n".join(lines) + (
        f"\n\n{summary['molecules']} molecules: {counts.get('md', 0)} MD, {counts.get('displaced', 0)} displaced "
        f"and {counts.get('relaxed', 0)} relaxed frames.\n"
    )


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["pretrained"], help="names or checkpoint paths")
    parser.add_argument("--molecules", type=int, default=MOLECULES)
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT, help="the shared data folder")
    parser.add_argument("--work", type=Path, default=WORK_DIR, help="where the labelled frames go (data)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true", help="2 molecules, 1 MD and 1 displaced frame each")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.molecules = 2
        args.work = args.out / "work" if args.work == WORK_DIR else args.work
    record = label(args.work, args.data_root, args.molecules, args.quick)
    rows = [evaluate(model, args.work / "corpus") for model in args.models]
    frames = {name: rows[0].get(f"{name}_frames", 0) for name in KINDS.values()} if rows else {}
    summary = {
        "benchmark": "fresh_molecules", "protocol": __doc__.split("Per model")[0].split("Molecules:")[1].strip(),
        "molecules": record["corpus"]["molecules_kept"], "molecules_tried": record["corpus"]["molecules_tried"],
        "smiles": record["smiles"], "excluded_shards": record["excluded_shards"],
        "excluded_molecules": record["excluded_molecules"], "frames": frames, "models": rows,
        "machine": machine_info(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "fresh_molecules.json", summary)
    write_text_atomic(args.out / "fresh_molecules.md", table(summary))
    print(table(summary))


if __name__ == "__main__":
    main()
