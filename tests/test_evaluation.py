"""forcefield_et.evaluation: batched predictions that respect the batch size and the memory planner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forcefield_et import runtime
from forcefield_et.data import ConformationSet
from forcefield_et.evaluation import error_metrics, memory_batches, predict
from forcefield_et.training.batching import TensorConformations


def molecules(n_frames: int, seed: int = 0) -> ConformationSet:
    """Frames of 3 to 8 atoms (H, C, O) at random non-overlapping positions."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 9, n_frames)
    pos = [np.arange(n)[:, None] * np.array([1.1, 0.3, 0.0]) + rng.normal(0, 0.05, (n, 3)) for n in sizes]
    return ConformationSet(
        z=rng.choice([1, 6, 8], int(sizes.sum())), pos=np.concatenate(pos), n_atoms=sizes, source="test"
    )


def forward_sizes(model, monkeypatch) -> list:
    """Record the number of structures of every model call."""
    sizes: list = []
    original = type(model).forward

    def recording(self, z, pos, batch=None, cell=None):
        sizes.append(1 if batch is None else int(batch.max()) + 1)
        return original(self, z, pos, batch, cell)

    monkeypatch.setattr(type(model), "forward", recording)
    return sizes


def test_predict_uses_the_batch_size_and_splits_batches_to_fit_memory(small_model, monkeypatch):
    data = molecules(10)
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: None)
    sizes = forward_sizes(small_model, monkeypatch)
    reference = predict(small_model, data, batch_size=4)
    assert sizes == [4, 4, 2]
    # memory for about 60 edges: the batches shrink, the predictions stay the same
    per_edge = runtime.estimate_call_memory_bytes(1, 2, 32, 8)
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: 60 * per_edge / runtime.MEMORY_FRACTION)
    sizes.clear()
    tight = predict(small_model, data, batch_size=4)
    assert len(sizes) > 3 and sum(sizes) == 10
    np.testing.assert_allclose(tight["energy"], reference["energy"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tight["forces"], reference["forces"], rtol=1e-10, atol=1e-12)


def test_memory_batches_count_the_real_neighbour_pairs(small_model, monkeypatch):
    data = molecules(6, seed=1)
    tensors = TensorConformations(data, torch.float64)
    seen = []
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: None)
    original = runtime.plan_batches
    def recording(counts, *args, **kwargs):
        seen.append(counts)
        return original(counts, *args, **kwargs)

    monkeypatch.setattr(runtime, "plan_batches", recording)
    batches = memory_batches(small_model, tensors, 4)
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5]]
    pos = torch.as_tensor(data.pos)
    for frame, count in enumerate(seen[0]):
        a, b = data.offsets[frame], data.offsets[frame + 1]
        distances = torch.cdist(pos[a:b], pos[a:b])
        assert count == int(((distances < small_model.cutoff) & (distances > 0)).sum())


def test_a_frame_too_large_for_memory_is_refused_before_any_call(small_model, monkeypatch):
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: 1000)
    monkeypatch.setattr(type(small_model), "forward", lambda *a, **k: pytest.fail("the model must not be called"))
    with pytest.raises(MemoryError, match="frame 0 has .* neighbour pairs"):
        predict(small_model, molecules(3), batch_size=2)


def test_error_metrics_by_element_agree_with_errors_computed_by_hand():
    data = molecules(6, seed=3)
    rng = np.random.default_rng(4)
    data.forces = rng.normal(0.0, 1.0, data.pos.shape)
    data.energy = rng.normal(0.0, 1.0, len(data))
    prediction = {"energy": data.energy + 0.01, "forces": data.forces + rng.normal(0.0, 0.05, data.pos.shape)}
    plain = error_metrics(data, prediction)
    detailed = error_metrics(data, prediction, by_element=True)
    assert "force_mae_meV_A_by_element" not in plain
    assert {key: detailed[key] for key in plain} == plain
    error = prediction["forces"] - data.forces
    for z, name in ((1, "H"), (6, "C"), (8, "O")):
        mine = error[data.z == z]
        assert detailed["force_mae_meV_A_by_element"][name] == pytest.approx(1000 * np.abs(mine).mean())
        assert detailed["force_rmse_meV_A_by_element"][name] == pytest.approx(1000 * np.sqrt((mine**2).mean()))
    # the per-element means, weighted by atom counts, give the overall MAE
    counts = {name: int((data.z == z).sum()) for z, name in ((1, "H"), (6, "C"), (8, "O"))}
    by_element = detailed["force_mae_meV_A_by_element"]
    weighted = sum(by_element[name] * n for name, n in counts.items()) / sum(counts.values())
    assert weighted == pytest.approx(plain["force_mae_meV_A"])
    assert detailed["force_max_atom_error_meV_A"] == pytest.approx(1000 * np.linalg.norm(error, axis=1).max())
    assert detailed["force_rmse_percent"] == pytest.approx(100 * np.sqrt((error**2).mean() / (data.forces**2).mean()))


def test_error_metrics_by_element_leave_out_atoms_without_force_labels():
    data = molecules(4, seed=5)
    data.forces = np.ones_like(data.pos)
    data.forces[:2] = np.nan  # the first two atoms have no label
    prediction = {"energy": np.zeros(len(data)), "forces": np.zeros_like(data.pos)}
    detailed = error_metrics(data, prediction, by_element=True)
    labelled = set(data.z[2:].tolist())
    assert len(detailed["force_mae_meV_A_by_element"]) == len(labelled)
    assert all(value == pytest.approx(1000.0) for value in detailed["force_mae_meV_A_by_element"].values())


def test_stress_errors_of_periodic_frames_with_stress_labels(small_model, tmp_path):
    """Stress MAE/RMSE (meV/Å³) over the components of the frames periodic in three directions that
    have a stress label; the model's own stress shifted by 2 meV/Å³ gives exactly that error."""
    rng = np.random.default_rng(0)
    cells = np.stack([np.eye(3) * 4.5, np.eye(3) * 4.6, np.diag([4.5, 4.5, 0.0])])  # two boxes, one slab
    pos = np.concatenate([rng.uniform(0, 4.5, size=(4, 3)) for _ in range(3)])
    data = ConformationSet(z=np.array([8, 1, 1, 6] * 3), pos=pos, n_atoms=[4, 4, 4], cell=cells)
    boxes = cells.copy()
    boxes[2] = np.eye(3) * 4.5
    own = predict(small_model, ConformationSet(z=data.z, pos=pos, n_atoms=data.n_atoms, cell=boxes,
                                               properties={"stress": np.zeros((3, 3, 3))}))
    assert own["stress"].shape == (3, 3, 3)
    labels = own["stress"] + 0.002
    labels[1] = np.nan  # the second box has no stress label
    labelled = ConformationSet(z=data.z, pos=pos, n_atoms=data.n_atoms, cell=cells, energy=np.zeros(3),
                               properties={"stress": labels})
    assert labelled.has_stress.tolist() == [True, False, False]  # the slab's label does not count
    metrics = error_metrics(labelled, predict(small_model, labelled))
    assert metrics["stress_frames"] == 1
    assert metrics["stress_mae_meV_A3"] == pytest.approx(2.0, rel=1e-6)
    assert metrics["stress_rmse_meV_A3"] == pytest.approx(2.0, rel=1e-6)
    assert "stress_mae_meV_A3" not in error_metrics(data, predict(small_model, data))  # no labels: no stress metric
    from ase.io import read

    from forcefield_et.evaluation import write_predictions

    frames = read(write_predictions(labelled, predict(small_model, labelled), tmp_path / "p.extxyz"), index=":")
    np.testing.assert_allclose(np.reshape(frames[0].info["predicted_stress"], (3, 3)), own["stress"][0], atol=1e-12)
    np.testing.assert_allclose(np.reshape(frames[0].info["reference_stress"], (3, 3)), labels[0], atol=1e-12)
    assert "reference_stress" not in frames[1].info and "predicted_stress" in frames[1].info
