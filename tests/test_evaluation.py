"""forcefield_et.evaluation: batched predictions that respect the batch size and the memory planner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forcefield_et import runtime
from forcefield_et.data import ConformationSet
from forcefield_et.evaluation import memory_batches, predict
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
