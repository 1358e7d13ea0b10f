"""Single example geometries shipped with the package (sources in README.md here)."""

from __future__ import annotations

from pathlib import Path

STRUCTURE_DIR = Path(__file__).resolve().parent


def structure_path(name: str) -> Path:
    """Path of a bundled structure file by name (``"aspirin"`` -> aspirin.xyz) or file name
    (``"aspirin.pdb"``). Raises FileNotFoundError listing what is bundled."""
    candidates = [STRUCTURE_DIR / name, STRUCTURE_DIR / f"{name}.xyz"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    available = sorted(p.name for p in STRUCTURE_DIR.iterdir() if p.suffix in (".xyz", ".pdb"))
    raise FileNotFoundError(f"no bundled structure {name!r}; available: {', '.join(available) or 'none'}")
