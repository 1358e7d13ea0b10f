"""Chemical elements: symbols, atomic numbers and covalent radii (Å)."""

from __future__ import annotations

from typing import Iterable

from ase.data import atomic_numbers, chemical_symbols, covalent_radii

__all__ = ["atomic_numbers", "chemical_symbols", "covalent_radii", "symbol", "number", "unsupported_elements"]


def symbol(z: int) -> str:
    """Chemical symbol of atomic number ``z`` (``'Z=<z>'`` outside 1-118)."""
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"


def number(sym: str) -> int:
    """Atomic number of a chemical symbol; raises ValueError for an unknown symbol."""
    try:
        return atomic_numbers[sym]
    except KeyError:
        raise ValueError(f"unknown chemical symbol {sym!r}") from None


def unsupported_elements(numbers: Iterable[int], supported: Iterable[int], owner: str, model: str) -> str | None:
    """The error message for atomic ``numbers`` outside the ``supported`` ones (None if all are
    supported), naming each element, the ``model`` and what it supports."""
    supported = list(supported)
    bad = sorted({int(z) for z in numbers} - {int(z) for z in supported})
    if not bad:
        return None
    names = ", ".join(f"{symbol(z)} (Z={z})" for z in bad)
    return f"{owner}: element(s) {names} not supported by {model}; supported: {' '.join(symbol(z) for z in supported)}"
