"""Deterministic batch mixing (forcefield_et.training.batching): shares of every batch per source,
a sampler that is a pure function of (seed, step) and covers every frame once per epoch, and batches
that gather exactly the picked frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from forcefield_et.data.conformations import ConformationSet
from forcefield_et.training.batching import (
    ENERGY,
    ENERGY_FORCES,
    EQUILIBRIUM,
    MixedBatchSampler,
    Source,
    TensorConformations,
    batch_shares,
    build_batch,
)

F64 = torch.float64


def test_batch_shares_examples():
    assert batch_shares([1, 1], 32) == [16, 16]
    assert batch_shares([0.5, 0.12, 0.12, 0.06, 0.1, 0.1], 32) == [16, 4, 4, 2, 3, 3]
    assert batch_shares([1000, 1], 8) == [7, 1]  # every source in use gets a frame
    assert batch_shares([1, 0, 1], 4) == [2, 0, 2]
    with pytest.raises(ValueError):
        batch_shares([1, 1, 1], 2)
    with pytest.raises(ValueError):
        batch_shares([0, 0], 4)


@settings(max_examples=200, deadline=None)
@given(
    ratios=st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=7).filter(
        lambda r: sum(r) > 0.01 and all(x == 0 or x > 1e-3 for x in r)
    ),
    extra=st.integers(0, 100),
)
def test_batch_shares_properties(ratios, extra):
    in_use = sum(r > 0 for r in ratios)
    size = in_use + extra
    shares = batch_shares(ratios, size)
    assert sum(shares) == size
    assert all(s >= 1 for s, r in zip(shares, ratios, strict=True) if r > 0)
    assert all(s == 0 for s, r in zip(shares, ratios, strict=True) if r == 0)
    ideal = np.asarray(ratios) / sum(ratios) * size
    deviation = np.abs(np.asarray(shares) - ideal)
    if all(i >= 1 for i, r in zip(ideal, ratios, strict=True) if r > 0):
        assert deviation.max() < 1 + 1e-9  # largest-remainder rounding of the exact proportions
    else:  # the at-least-one rule may take a few frames from the largest sources
        assert deviation.max() <= in_use


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 60), share=st.integers(1, 17), seed=st.integers(0, 2**31 - 1))
def test_sampler_covers_every_frame_once_per_epoch(size, share, seed):
    sampler = MixedBatchSampler([size], [share], seed)
    n_steps = (3 * size) // share + 2
    draws = np.concatenate([sampler.frames(step)[0] for step in range(n_steps)])
    assert all(len(sampler.frames(s)[0]) == share for s in (0, 5))
    for epoch in range(3):
        chunk = draws[epoch * size : (epoch + 1) * size]
        assert sorted(chunk.tolist()) == list(range(size))  # a permutation: no repeats, nothing missed


def test_sampler_is_a_pure_function_of_seed_and_step():
    sizes, shares = [50, 7, 1000], [5, 2, 9]
    a = MixedBatchSampler(sizes, shares, seed=11)
    b = MixedBatchSampler(sizes, shares, seed=11)
    steps = [0, 3, 999, 4, 3, 10_000, 0]
    for step in steps:  # any order, cache or not
        for x, y in zip(a.frames(step), b.frames(step), strict=True):
            assert np.array_equal(x, y)
    fresh = MixedBatchSampler(sizes, shares, seed=11)
    assert all(np.array_equal(x, y) for x, y in zip(fresh.frames(999), a.frames(999), strict=True))
    other = MixedBatchSampler(sizes, shares, seed=12)
    assert not all(np.array_equal(x, y) for x, y in zip(other.frames(0), a.frames(0), strict=True))
    # consecutive epochs use different orders
    e0 = np.concatenate([a.frames(s)[0] for s in range(10)])
    e1 = np.concatenate([a.frames(s)[0] for s in range(10, 20)])
    assert sorted(e0) == sorted(e1) == list(range(50)) and not np.array_equal(e0, e1)


def test_build_batch_gathers_the_picked_frames():
    rng = np.random.default_rng(0)
    a = ConformationSet(z=np.arange(1, 10) % 3 + 1, pos=rng.normal(size=(9, 3)), n_atoms=[2, 3, 4],
                        energy=[1.0, 2.0, 3.0], forces=rng.normal(size=(9, 3)))
    b = ConformationSet(z=[8, 1, 1, 8, 1, 1], pos=rng.normal(size=(6, 3)), n_atoms=[3, 3])
    sources = [Source("a", a, "energy_forces"), Source("b", b, "equilibrium")]
    batch = build_batch([TensorConformations(a, F64), TensorConformations(b, F64)], sources,
                        [np.array([2, 0]), np.array([1])])
    assert batch["n_atoms"].tolist() == [4, 2, 3]
    assert batch["batch"].tolist() == [0] * 4 + [1] * 2 + [2] * 3
    assert batch["objective"].tolist() == [ENERGY_FORCES, ENERGY_FORCES, EQUILIBRIUM]
    assert batch["source"].tolist() == [0, 0, 1]
    assert np.allclose(batch["pos"][:4].numpy(), a.pos[5:9])
    assert np.allclose(batch["pos"][6:].numpy(), b.pos[3:])
    assert np.allclose(batch["forces"][4:6].numpy(), a.forces[:2])
    assert torch.isnan(batch["forces"][6:]).all()  # b has no forces
    assert batch["energy"][:2].tolist() == [3.0, 1.0] and math.isnan(float(batch["energy"][2]))
    assert ENERGY not in batch["objective"].tolist()
