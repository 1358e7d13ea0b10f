"""Result files of the benchmarks. Writes are atomic (a temporary file beside the target, then a
rename), so that an interrupted benchmark never leaves a half-written JSON or state file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def holds_same_content(path: Path, payload: Dict[str, Any], ignore: Tuple[str, ...] = ("machine",),
                       unordered: Tuple[str, ...] = ()) -> bool:
    """Whether the JSON file ``path`` already holds ``payload`` (as :func:`write_json_atomic` would write
    it), apart from the top-level keys in ``ignore`` and the order of the lists under ``unordered``:
    a result that would change nothing else need not be written again."""
    try:
        stored = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    new = json.loads(json.dumps(payload, default=_json_default))
    if not isinstance(stored, dict):
        return False

    def content(summary: Dict[str, Any]) -> Dict[str, Any]:
        kept = {k: v for k, v in summary.items() if k not in ignore}
        for key in unordered:
            kept[key] = sorted(kept.get(key) or [], key=lambda item: json.dumps(item, sort_keys=True))
        return kept

    return content(stored) == content(new)


def write_json_atomic(path: Path, payload: Any) -> Path:
    """``payload`` as indented JSON (numpy scalars/arrays and paths allowed), written atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=_json_default))


def savez_atomic(path: Path, **arrays: Any) -> Path:
    """``np.savez`` to ``path``, flushed to disk before the rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def finished_runs(results_dir: Path, sort_key: Callable[[Dict[str, Any]], Any] | None = None) -> List[Dict[str, Any]]:
    """The ``result.json`` of every finished run under ``results_dir/runs/*/``, ordered by
    ``sort_key`` (default: by run folder name)."""
    rows = [json.loads(p.read_text()) for p in sorted((Path(results_dir) / "runs").glob("*/result.json"))]
    return sorted(rows, key=sort_key) if sort_key else rows


def write_report(out: Path, benchmark: str, protocol: str, rows: List[Dict[str, Any]], markdown: str,
                 plot: Callable[[List[Dict[str, Any]], Path], Any] | None = None, *, table_name: str | None = None,
                 figure_name: str | None = None, rows_key: str = "runs", **extra: Any) -> str:
    """A benchmark's result set in ``out``: ``<benchmark>.json`` (the benchmark, the machine, the
    protocol, the ``extra`` entries and the rows under ``rows_key``), the markdown table
    (``<benchmark>.md`` unless ``table_name``) and, when there are rows, the figure that
    ``plot(rows, path)`` draws (``<benchmark>.png`` unless ``figure_name``). Returns the table.

    A report whose files already hold the same content (all but the machine that wrote it) leaves
    them as they are, so that summarising again on another machine changes nothing."""
    from .machine import machine_info

    out = Path(out)
    summary = {"benchmark": benchmark, "machine": machine_info(), "protocol": protocol, **extra, rows_key: rows}
    json_path, table_path = out / f"{benchmark}.json", out / (table_name or f"{benchmark}.md")
    figure_path = out / (figure_name or f"{benchmark}.png")
    if (table_path.is_file() and table_path.read_text() == markdown and holds_same_content(json_path, summary)
            and (plot is None or not rows or figure_path.is_file())):
        return markdown
    write_json_atomic(json_path, summary)
    write_text_atomic(table_path, markdown)
    if plot is not None and rows:
        plot(rows, figure_path)
    return markdown
