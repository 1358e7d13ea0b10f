"""Chemical elements: symbols, atomic numbers and covalent radii (Å)."""

from __future__ import annotations

from ase.data import atomic_numbers, chemical_symbols, covalent_radii

__all__ = ["atomic_numbers", "chemical_symbols", "covalent_radii", "symbol", "number"]


def symbol(z: int) -> str:
    """Chemical symbol of atomic number ``z`` ('X' if out of range)."""
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"


def number(sym: str) -> int:
    """Atomic number of a chemical symbol; raises ValueError for an unknown symbol."""
    try:
        return atomic_numbers[sym]
    except KeyError:
        raise ValueError(f"unknown chemical symbol {sym!r}") from None
