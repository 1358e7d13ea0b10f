"""The Equivariant Transformer potential: representation, heads and the force wrapper."""

from .committee import Committee
from .et import EquivariantAttention, EquivariantTransformer, NeighborEmbedding
from .head_committee import HeadCommittee
from .heads import DipoleHead, EnergyHead, ScalarPropertyHead
from .potential import DEFAULT_ELEMENTS, DEFAULT_HYPERPARAMETERS, Potential, build_model
from .radial import CosineCutoff, ExpNormalSmearing

__all__ = [
    "Committee",
    "HeadCommittee",
    "CosineCutoff",
    "DEFAULT_ELEMENTS",
    "DEFAULT_HYPERPARAMETERS",
    "DipoleHead",
    "EnergyHead",
    "EquivariantAttention",
    "EquivariantTransformer",
    "ExpNormalSmearing",
    "NeighborEmbedding",
    "Potential",
    "ScalarPropertyHead",
    "build_model",
]
