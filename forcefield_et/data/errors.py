"""Errors raised by the data layer."""

from __future__ import annotations

__all__ = ["DataFormatError"]


class DataFormatError(ValueError):
    """A data file (or an in-memory data set) is malformed.

    The message always names the file (or the data set's ``source``) and the key, line or
    entry that is wrong, e.g. ``"rmd17_aspirin_train_01.npz: missing key 'coords' (found: ...)"``.
    """
