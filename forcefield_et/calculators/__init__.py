"""Calculators: the model behind simulation-package interfaces (ASE here; OpenMM in ``forcefield_et.openmm``)."""

from .ase import ETCalculator, NonFiniteError

__all__ = ["ETCalculator", "NonFiniteError"]
