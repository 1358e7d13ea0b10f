"""benchmarks.speed: the flush-to-zero wrapper of the TorchMD-Net comparison row."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from benchmarks.speed import flush_denormals_during_calls

SUBNORMAL = np.float32(1e-40)  # below float32's smallest normal number, 1.18e-38


class _Probe(Calculator):
    """Reports whether a float32 subnormal survives a multiplication inside ``calculate``."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.fail:
            raise RuntimeError("calculator failed")
        product = torch.tensor([SUBNORMAL], dtype=torch.float32) * torch.tensor([1.0])
        self.results = {"energy": float(product.item() != 0.0), "forces": np.zeros((len(atoms), 3))}


@pytest.fixture
def denormals_kept():
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormal floats (no SSE3)")
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


def _subnormal_survives_outside() -> bool:
    return (torch.tensor([SUBNORMAL], dtype=torch.float32) * torch.tensor([1.0])).item() != 0.0


def test_flushes_inside_the_call_only(denormals_kept):
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    assert _Probe().get_potential_energy(atoms) == 1.0  # unwrapped: the subnormal survives
    atoms.calc = flush_denormals_during_calls(_Probe())
    assert atoms.get_potential_energy() == 0.0  # flushed to zero inside the call
    assert _subnormal_survives_outside()  # and the process-wide flag is restored


def test_restores_the_flag_when_the_call_fails(denormals_kept):
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    atoms.calc = flush_denormals_during_calls(_Probe(fail=True))
    with pytest.raises(RuntimeError, match="calculator failed"):
        atoms.get_potential_energy()
    assert _subnormal_survives_outside()
