"""Edge chunking (forcefield_et.model.chunked): any chunk size gives the all-edges energy and forces
(the chunks only regroup sums over edges), the context manager restores the previous setting, and
training mode is refused. The water box and stress: tests/model/test_potential.py."""

from __future__ import annotations

import pytest
import torch

from forcefield_et.model.chunked import edge_chunking


def _molecule():
    generator = torch.Generator().manual_seed(1)
    z = torch.tensor([6, 6, 8, 1, 1, 1, 1, 7, 1, 8, 1, 6])
    pos = torch.randn(len(z), 3, generator=generator, dtype=torch.float64) * 1.4
    return z, pos, torch.zeros(len(z), dtype=torch.long)


@pytest.mark.parametrize("chunk", [1, 7, 10_000])  # one edge, a size that does not divide E, more than E
def test_every_chunk_size_gives_the_all_edges_energy_and_forces(small_model, chunk):
    z, pos, batch = _molecule()
    reference = small_model(z, pos, batch)
    with edge_chunking(small_model, chunk):
        chunked = small_model(z, pos, batch)
    torch.testing.assert_close(chunked["energy"], reference["energy"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked["forces"], reference["forces"], rtol=1e-10, atol=1e-12)


def test_the_context_manager_restores_the_previous_setting_even_on_errors(small_model):
    small_model.set_edge_chunking(32)
    with edge_chunking(small_model, 4):
        assert small_model.edge_chunk_size == 4
    assert small_model.edge_chunk_size == 32
    with pytest.raises(KeyError), edge_chunking(small_model, None):
        assert small_model.edge_chunk_size is None
        raise KeyError("inside the block")
    assert small_model.edge_chunk_size == 32


def test_training_mode_is_refused_with_the_way_out_named(small_model):
    z, pos, batch = _molecule()
    small_model.train()
    with edge_chunking(small_model, 4), pytest.raises(RuntimeError, match="set_edge_chunking\\(None\\)"):
        small_model(z, pos, batch)
