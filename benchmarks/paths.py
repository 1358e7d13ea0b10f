"""Where the benchmarks find the repository, the shared reference data and their own outputs.

``DATA_ROOT`` is the shared data folder (``../shared/data`` beside the repository): it holds
``rmd17/``, ``xtb/``, ``water/``, ``qm9/`` and the others that ``../shared/data/README.md`` lists.
Every benchmark's ``--data-root`` means this folder."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = (REPO.parent / "shared" / "data").resolve()
RESULTS_DIR = REPO / "benchmarks" / "results"
RUNS_DIR = REPO / "runs"


def rmd17_file(molecule: str, split: str = "train", data_root: Path = DATA_ROOT) -> Path:
    """The revised-MD17 file of ``molecule``'s first ``split`` ("train" or "test") under ``data_root``."""
    if split not in ("train", "test"):
        raise ValueError(f"rMD17 split must be 'train' or 'test', not {split!r}")
    return Path(data_root) / "rmd17" / f"rmd17_{molecule}_{split}_01.npz"


def repo_relative(path: Path | str) -> str:
    """``path`` relative to the repository where it lies inside it, as given otherwise: results files
    name no machine's folders."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def checkout_path(recorded: Path | str) -> Path:
    """A path a results file records, in this checkout: relative ones lie in the repository; an
    absolute one from another checkout is found again below its ``forcefield_et``, ``runs`` or
    ``benchmarks`` folder; otherwise the path as recorded (which may not exist)."""
    path = Path(recorded)
    if not path.is_absolute():
        return REPO / path
    if path.exists():
        return path
    for anchor in ("forcefield_et", "runs", "benchmarks"):
        if anchor in path.parts:
            local = REPO.joinpath(*path.parts[path.parts.index(anchor):])
            if local.exists():
                return local
    return path


def water_dir(data_root: Path = DATA_ROOT) -> Path:
    """The first DeePMD water system (64 molecules, periodic) under ``data_root``."""
    return Path(data_root) / "water" / "data_0"
