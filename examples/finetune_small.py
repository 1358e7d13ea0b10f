"""Fine-tune the bundled pretrained model on a small dataset, evaluate it, and plot parities.

    python examples/finetune_small.py --train my_frames.xyz            # your data (any ASE-readable file)
    python examples/finetune_small.py                                  # rMD17 ethanol if ../shared/data exists,
                                                                       # else GFN2-xTB labels made with tblite

The data are split into training frames (--n-train), 20 validation frames (best-checkpoint
selection) and test frames (the rest, never seen in training). Outputs in --out: the run folder
(best.pt, metrics.csv), test metrics (metrics.json) and a parity plot (parity.png), for the
pretrained start and, with --compare-scratch, for the same model trained from scratch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from forcefield_et.data import ConformationSet, read_dataset, read_rmd17
from forcefield_et.evaluation import evaluate_model
from forcefield_et.training import config_from_dict, train

SHARED_ETHANOL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rmd17" / "rmd17_ethanol_train_01.npz"


def xtb_labelled_frames(n: int, sigma: float = 0.05) -> ConformationSet:
    """Random displacements of the bundled aspirin structure labelled with GFN2-xTB (tblite)."""
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise SystemExit(
            "no --train file, no ../shared/data, and tblite is not installed: pass --train FILE or `pip install tblite`"
        ) from None
    from ase.io import read

    from forcefield_et.structures import structure_path

    reference = read(structure_path("aspirin"))
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n):
        atoms = reference.copy()
        atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
        atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
        atoms.get_forces()
        frames.append(atoms)
    return ConformationSet.from_ase(frames, source="gfn2-xtb-aspirin")


def load_data(args: argparse.Namespace) -> ConformationSet:
    needed = args.n_train + 20 + args.n_test
    if args.train:
        return read_dataset(args.train)
    if SHARED_ETHANOL.exists():
        return read_rmd17(SHARED_ETHANOL, max_frames=needed)
    return xtb_labelled_frames(needed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", help="labelled frames (extxyz, ASE db, npz, ...)")
    parser.add_argument("--model", default="pretrained", help="starting model")
    parser.add_argument("--n-train", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--compare-scratch", action="store_true")
    parser.add_argument("--out", default="finetune_example")
    args = parser.parse_args()

    data = load_data(args)
    if len(data) < args.n_train + 21:
        raise SystemExit(f"need at least {args.n_train + 21} frames, the data have {len(data)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_file = out / "frames.xyz"
    from ase.io import write

    write(data_file, [data.to_ase(i) for i in range(len(data))])
    test = data.subset(np.arange(args.n_train + 20, min(len(data), args.n_train + 20 + args.n_test)))

    starts = [args.model] + (["scratch"] if args.compare_scratch else [])
    summary = {}
    for start in starts:
        run_dir = out / f"run_{Path(start).stem}"
        source = {
            "name": "data",
            "format": "ase",
            "path": str(data_file),
            "objective": "energy_forces",
            "frames": f"0:{args.n_train}",
            "valid_path": str(data_file),
            "valid_frames": f"{args.n_train}:{args.n_train + 20}",
        }
        values = {
            "run_dir": str(run_dir),
            "sources": [source],
            "optim": {
                "batch_size": 8,
                "max_steps": args.steps,
                "lr": 5e-4,
                "warmup_steps": max(1, args.steps // 20),
                "valid_every": max(1, args.steps // 5),
                "checkpoint_every": max(1, args.steps // 5),
                "ema_decay": 0.99,
            },
        }
        if start == "scratch":
            from forcefield_et import load_model

            values["model"] = dict(load_model(args.model).hyperparameters)
        else:
            values["init_from"] = start
        train(config_from_dict(values))
        summary[start] = evaluate_model(str(run_dir / "best.pt"), test, out_dir=run_dir / "test")
        print(
            f"{start}: test force MAE {summary[start]['force_mae_meV_A']:.1f} meV/Å, "
            f"energy MAE {summary[start]['energy_mae_meV']:.1f} meV ({len(test)} test frames)"
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
