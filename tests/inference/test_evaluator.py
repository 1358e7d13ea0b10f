"""The inference engine: single structures, batches, committees, edge chunking, threads and the
allocator opt-in."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forcefield_et import ETCalculator, build_model, runtime
from forcefield_et.inference import Evaluator, edge_chunking
from forcefield_et.inference import evaluator as evaluator_module
from forcefield_et.model import Committee


def _molecule(seed: int = 0, n: int = 9):
    rng = np.random.default_rng(seed)
    numbers = rng.choice([1, 6, 8], size=n)
    positions = rng.uniform(0.0, 4.0, (n, 3)) + 10.0 * seed
    return numbers, positions


def test_one_structure_equals_the_bare_model_and_the_calculator(small_model):
    numbers, positions = _molecule()
    engine = Evaluator(small_model, device="cpu", dtype="float64")
    assert engine.model is small_model  # already float64 on CPU: no copy
    out = engine.evaluate(numbers, positions)
    assert not out["forces"].requires_grad and out["energy"].shape == (1,) and out["forces"].shape == (9, 3)
    centred = positions - positions.mean(axis=0)
    bare = small_model(torch.as_tensor(numbers), torch.as_tensor(centred))
    assert torch.equal(out["energy"], bare["energy"].detach())
    assert torch.equal(out["forces"], bare["forces"].detach())
    from ase import Atoms

    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = ETCalculator(small_model, device="cpu", dtype="float64")
    assert atoms.get_potential_energy() == float(out["energy"][0])
    np.testing.assert_array_equal(atoms.get_forces(), out["forces"].numpy())


def test_batches_equal_single_structures(small_model):
    engine = Evaluator(small_model, device="cpu", dtype="float64")
    structures = [(*_molecule(seed), None) for seed in range(4)]
    batched = engine.evaluate_structures(structures, batch_size=3)
    for (numbers, positions, _), out in zip(structures, batched):
        single = engine.evaluate(numbers, positions)
        assert float(out["energy"][0]) == pytest.approx(float(single["energy"][0]), rel=1e-12)
        torch.testing.assert_close(out["forces"], single["forces"], rtol=0, atol=1e-12)


def test_committee_results_carry_the_spread():
    torch.manual_seed(1)
    members = [build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8).double() for _ in range(3)]
    engine = Evaluator(Committee(members), device="cpu", dtype="float64")
    assert engine.is_committee
    numbers, positions = _molecule()
    out = engine.evaluate(numbers, positions)
    assert out["energy_std"].shape == (1,) and out["forces_std"].shape == (9,)
    batched = engine.evaluate_structures([(numbers, positions, None)] * 2)
    torch.testing.assert_close(batched[1]["forces_std"], out["forces_std"], rtol=0, atol=1e-12)


def test_chunked_strategy_equals_all_edges_and_lasts_one_call(small_model):
    numbers, positions = _molecule(n=12)
    reference = Evaluator(small_model, device="cpu", dtype="float64", edge_chunking=None).evaluate(numbers, positions)
    engine = Evaluator(small_model, device="cpu", dtype="float64", edge_chunking=16)
    chunked = engine.evaluate(numbers, positions)
    assert engine.last_path == "chunked" and small_model.edge_chunk_size is None
    torch.testing.assert_close(chunked["forces"], reference["forces"], rtol=0, atol=1e-12)
    with edge_chunking(small_model, 8):
        assert small_model.edge_chunk_size == 8
    assert small_model.edge_chunk_size is None


def test_no_process_wide_allocator_setting_unless_asked(small_model, monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append(1) or True)
    Evaluator(small_model, device="cpu", dtype="float64")
    ETCalculator(small_model, device="cpu", dtype="float64")
    assert calls == []
    ETCalculator(small_model, device="cpu", dtype="float64", tune_allocator=True)
    assert calls == [1]


def test_wrap_leaves_mode_threads_and_module_alone(small_model, monkeypatch):
    small_model.train()
    try:
        engine = Evaluator.wrap(small_model)
        assert engine.model is small_model and small_model.training and not engine.manage_threads
        monkeypatch.setattr(evaluator_module, "apply_threads", lambda *a, **k: pytest.fail("threads left alone"))
        numbers, positions = _molecule()
        z, pos = torch.as_tensor(numbers), torch.as_tensor(positions)
        out = engine.evaluate_batch(z, pos, torch.zeros(len(z), dtype=torch.long))
        assert out["forces"].shape == (9, 3)
    finally:
        small_model.eval()


def test_bad_settings_are_refused(small_model):
    with pytest.raises(ValueError, match="neighbor_list"):
        Evaluator(small_model, device="cpu", neighbor_list="fast")
    with pytest.raises(ValueError, match="edge_chunking"):
        Evaluator(small_model, device="cpu", edge_chunking=0)
    with pytest.raises(ValueError, match="threads"):
        Evaluator(small_model, device="cpu", threads=-1)
