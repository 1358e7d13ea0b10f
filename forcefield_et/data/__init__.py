"""Data layer: the in-memory :class:`ConformationSet` container and readers for every data format.

All readers return Å / eV (forces eV/Å); see :mod:`forcefield_et.data.readers`.
"""

from __future__ import annotations

from .conformations import ConformationSet
from .errors import DataFormatError, DroppedFramesWarning
from .readers import (
    QM9_PROPERTY_UNITS,
    READERS,
    infer_format,
    read_ani1x,
    read_ase,
    read_ase_db,
    read_dataset,
    read_deepmd,
    read_md17,
    read_qm7x,
    read_qm9,
    read_rmd17,
    read_spice,
    read_xtb_corpus,
    smiles_formal_charge,
    xtb_start_sources,
)

__all__ = [
    "ConformationSet",
    "DataFormatError",
    "DroppedFramesWarning",
    "QM9_PROPERTY_UNITS",
    "READERS",
    "infer_format",
    "read_ani1x",
    "read_ase",
    "read_ase_db",
    "read_dataset",
    "read_deepmd",
    "read_md17",
    "read_qm7x",
    "read_qm9",
    "read_rmd17",
    "read_spice",
    "read_xtb_corpus",
    "smiles_formal_charge",
    "xtb_start_sources",
]
