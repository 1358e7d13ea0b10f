"""Learning curves of a run directory: validation and test errors against CPU-hours.

``write_learning_curve(run_dir)`` turns the validation rows of ``metrics.csv`` into
``learning_curve.csv`` (step, CPU-hours, every force and energy error column) and
``learning_curve.png`` (force MAE in meV/Å against CPU-hours, one line per source and split).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Dict, List

from ..files import write_bytes_atomic

ERROR_SUFFIXES = ("force_mae_meV_A", "energy_mae_meV")


def read_validation_rows(run_dir: str | os.PathLike) -> List[Dict[str, str]]:
    """The ``kind == 'valid'`` rows of ``run_dir/metrics.csv`` (empty when there is none)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [row for row in csv.DictReader(handle) if row.get("kind") == "valid"]


def write_learning_curve(run_dir: str | os.PathLike, plot: bool = True) -> Path | None:
    """Write ``learning_curve.csv`` (and ``.png``) from the validation rows; returns the CSV path,
    or None when there are no validation rows yet. Both files are replaced atomically and durably."""
    run_dir = Path(run_dir)
    rows = read_validation_rows(run_dir)
    if not rows:
        return None
    columns = [c for c in rows[-1] if c.endswith(ERROR_SUFFIXES)]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["step", "cpu_hours"] + columns)
    for row in rows:
        writer.writerow([row["step"], row.get("cpu_hours", "")] + [row.get(c, "") for c in columns])
    path = run_dir / "learning_curve.csv"
    write_bytes_atomic(path, buffer.getvalue().encode())
    if plot:
        _plot(rows, [c for c in columns if c.endswith("force_mae_meV_A")], run_dir / "learning_curve.png")
    return path


def _plot(rows: List[Dict[str, str]], columns: List[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for column in columns:
        points = [(float(r["cpu_hours"]), float(r[column])) for r in rows if r.get("cpu_hours") and r.get(column)]
        if points:
            x, y = zip(*points)
            ax.plot(x, y, "o-" if "/test_" in column else "s--", ms=3, label=column.replace("_meV_A", ""))
    ax.set_xlabel("CPU-hours")
    ax.set_ylabel("force MAE (meV/Å)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


__all__ = ["read_validation_rows", "write_learning_curve"]
