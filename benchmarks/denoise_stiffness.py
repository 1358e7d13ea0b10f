"""Fit the denoising stiffness k (eV/Å²) on the GFN2-xTB corpus.

    python -m benchmarks.denoise_stiffness [--corpus ../shared/data/xtb/xtb_shard0.npz]

Kind-2 frames of the corpus are random Cartesian displacements δ of a relaxed (kind-0)
structure with GFN2-xTB forces F. The isotropic harmonic model F ≈ −k·δ gives
k = −Σ F·δ / Σ δ·δ (global) and a per-frame k whose median is also reported, by
displacement size. Writes benchmarks/results/denoise_stiffness.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from forcefield_et.data import read_xtb_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="../shared/data/xtb/xtb_shard0.npz")
    parser.add_argument("--out", default="benchmarks/results/denoise_stiffness.json")
    args = parser.parse_args()
    data = read_xtb_corpus(args.corpus)
    kind = data.properties["kind"].astype(int)
    offsets = data.offsets
    relaxed = {int(m): i for i, (m, k) in enumerate(zip(data.mol_id, kind)) if k == 0}
    numerator = denominator = 0.0
    per_frame, rms_displacement = [], []
    for i in np.flatnonzero(kind == 2):
        j = relaxed.get(int(data.mol_id[i]))
        if j is None:
            continue
        delta = data.pos[offsets[i] : offsets[i + 1]] - data.pos[offsets[j] : offsets[j + 1]]
        force = data.forces[offsets[i] : offsets[i + 1]]
        a, b = -(force * delta).sum(), (delta**2).sum()
        numerator, denominator = numerator + a, denominator + b
        per_frame.append(a / b)
        rms_displacement.append(np.sqrt((delta**2).mean()))
    per_frame, rms_displacement = np.array(per_frame), np.array(rms_displacement)
    bins = [(0.0, 0.05), (0.05, 0.1), (0.1, 1.0)]
    result = {
        "frames": int(len(per_frame)),
        "k_global_eV_per_A2": float(numerator / denominator),
        "k_median_eV_per_A2": float(np.median(per_frame)),
        "k_quartiles_eV_per_A2": [float(q) for q in np.percentile(per_frame, [25, 75])],
        "k_median_by_rms_displacement": {
            f"{lo}-{hi} A": float(np.median(per_frame[(rms_displacement >= lo) & (rms_displacement < hi)]))
            for lo, hi in bins
            if ((rms_displacement >= lo) & (rms_displacement < hi)).any()
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
