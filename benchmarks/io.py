"""Atomic result files for the benchmarks: write a temporary file beside the target, then rename,
so that an interrupted benchmark never leaves a half-written JSON or state file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

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


def write_report(out: Path, json_name: str, summary: Any, table_name: str, markdown: str,
                 draw: Callable[[], Any] | None = None) -> str:
    """A benchmark's result set in ``out``: the summary as JSON, the markdown table, and the plot
    that ``draw()`` writes (skipped when None, e.g. with no finished runs). Returns the table."""
    out = Path(out)
    write_json_atomic(out / json_name, summary)
    write_text_atomic(out / table_name, markdown)
    if draw is not None:
        draw()
    return markdown
