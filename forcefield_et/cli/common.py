"""What the subcommands share: help texts and their formatter, durations, thread counts and
``--model`` references."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Union

THREADS_HELP = (
    "torch CPU threads; 0: automatic (1 for molecules up to about 100 atoms, more for larger systems, at most "
    "the cores available and never more than OMP_NUM_THREADS; FORCEFIELD_ET_THREADS overrides it)"
)
DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default where it says something (not for flags, unset options, or help
    that already names its default) and keeps the examples' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def parse_duration(text: str) -> float:
    """'2h', '90m', '45s', '1h30m' or a bare number of hours -> seconds."""
    import re

    value = str(text).strip().lower()
    try:
        seconds = float(value) * 3600
    except ValueError:
        parts = re.fullmatch(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s)?", value)
        if not value or parts is None:
            raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 2h, 90m, 1h30m or 3600s") from None
        hours, minutes, secs = (float(g) if g else 0.0 for g in parts.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be positive and finite")
    return seconds


def threads_for(n_atoms: int, requested: int | None) -> int:
    """The torch thread count a command uses for ``n_atoms`` atoms (set process-wide)."""
    from ..runtime import apply_threads

    return apply_threads(n_atoms, requested=requested or None)


def model_or_committee(reference: str) -> Union[str, List[str]]:
    """A --model value as ETCalculator takes it: checkpoints separated by commas form a committee."""
    return reference.split(",") if "," in reference else reference


def model_fingerprint(reference: str) -> List[str]:
    """The model of an MD run, as ``md`` compares it on resuming: each name, and each file's SHA-256."""
    import hashlib

    entries = []
    for item in reference.split(","):
        path = Path(item)
        if path.is_dir():
            files = sorted(path.glob("*.json")) + sorted(path.glob("member_*/best.pt"))
        else:
            files = [path] if path.is_file() else []
        digests = [hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in files]
        entries.append(item + "".join(f" sha256:{d}" for d in digests))
    return entries
