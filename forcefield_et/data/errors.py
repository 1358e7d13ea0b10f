"""Errors raised by the data layer."""

from __future__ import annotations

__all__ = ["DataFormatError", "DroppedFramesWarning"]


class DataFormatError(ValueError):
    """A data file (or an in-memory data set) is malformed.

    The message always names the file (or the data set's ``source``) and the key, line or
    entry that is wrong, e.g. ``"rmd17_aspirin_train_01.npz: missing key 'coords' (found: ...)"``.
    """


class DroppedFramesWarning(UserWarning):
    """A reader left out frames of a file (e.g. ANI-1x or SPICE frames whose energy or forces are
    NaN at the chosen level of theory). The message names the file, how many frames were dropped of
    how many, why, and which (the first few)."""
