"""Training data sources: file paths (globs, a data root), frame selections, reading with the
format's reader, and the filters and label screening of a source
(:class:`~forcefield_et.training.config.SourceConfig` holds their settings)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, List, Union

import numpy as np

from .conformations import ConformationSet
from .labels import accept_nonfinite_labels
from .readers import format_reader
from .screening import FrameOrigin, screen_labels, screen_outliers


def parse_slice(text: str) -> slice:
    """'100:200', ':950', '0:1000:2' -> slice; raises ValueError otherwise."""
    parts = str(text).split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"frame selection {text!r} must look like 'start:stop' or 'start:stop:step'")
    try:
        values = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ValueError(f"frame selection {text!r} must contain integers") from None
    return slice(*values)


def resolve_path(path: str, data_root: str | None) -> Path:
    p = Path(os.path.expandvars(path)).expanduser()
    if not p.is_absolute() and data_root:
        p = Path(os.path.expandvars(data_root)).expanduser() / p
    return p


def expand_paths(paths: List[str], data_root: str | None) -> List[Path]:
    """Resolve each path; a path with glob characters (``*?[``) expands to its sorted matches and
    must match at least one file."""
    out: List[Path] = []
    for path in paths:
        resolved = resolve_path(path, data_root)
        if any(c in resolved.name for c in "*?["):
            matches = sorted(resolved.parent.glob(resolved.name))
            if not matches:
                raise FileNotFoundError(f"no file matches {resolved}")
            out.extend(matches)
        else:
            out.append(resolved)
    return out


def read_source(
    source: Any,
    data_root: str | None,
    path: Union[str, List[str], None] = None,
    validation: bool | str = False,
    report: Callable[[str], None] | None = None,
) -> ConformationSet:
    """Read one source's data (or, with ``validation`` True/'valid' or 'test', its validation or
    test file) with the configured reader and filters, and screen its labels and outliers
    (:mod:`~forcefield_et.data.screening`; ``report`` receives the messages, default: print)."""
    if validation is True:
        validation = "valid"
    reader, native = format_reader(source.format)
    options = dict(source.options)
    if validation:
        options.update(source.valid_options)
    if native is None and source.units:
        options.setdefault("energy_unit", source.units.get("energy", "eV"))
        if source.format == "ase":
            options.setdefault("length_unit", source.units.get("length", "Angstrom"))
    paths = path or source.path
    paths = [paths] if isinstance(paths, str) else list(paths)
    files = expand_paths(paths, data_root)
    with accept_nonfinite_labels(source.drop_invalid_frames):
        parts = [reader(p, **options) for p in files]
    data = parts[0] if len(parts) == 1 else ConformationSet.concatenate(parts)
    origin = FrameOrigin.of_parts(files, [len(part) for part in parts])
    if source.max_force is not None and data.forces is not None:
        norms = np.linalg.norm(data.forces, axis=1)
        frame_max = np.maximum.reduceat(norms, data.offsets[:-1]) if len(data) else norms
        kept = np.flatnonzero(frame_max <= source.max_force)
        data, origin = data.subset(kept), origin.subset(kept)
    selection = {"valid": source.valid_frames, "test": source.test_frames}[validation] if validation else source.frames
    if selection is not None:
        kept = np.arange(len(data))[parse_slice(selection)]
        data, origin = data.subset(kept), origin.subset(kept)
    report = report or (lambda message: print(message, flush=True))
    data, origin = screen_labels(data, origin, source.objective, source.name, source.drop_invalid_frames, report)
    drop_z = None if validation == "test" else source.drop_outliers
    data, origin = screen_outliers(data, origin, source.objective, source.name, drop_z, report)
    if not validation and source.max_frames is not None and len(data) > source.max_frames:
        rng = np.random.default_rng(0)
        data = data.subset(np.sort(rng.choice(len(data), source.max_frames, replace=False)))
    data.source = source.name
    return data
