"""HeadCommittee: K energy heads on one ET representation, evaluated as a committee."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from forcefield_et import ETCalculator
from forcefield_et.checkpoint import save_checkpoint
from forcefield_et.model import Committee, HeadCommittee, Potential
from forcefield_et.registry import load_committee, load_model, write_committee_file
from tests.conftest import tiny_potential


def molecules():
    torch.manual_seed(123)
    z = torch.tensor([6, 6, 8, 1, 1, 1, 8, 1, 1], dtype=torch.long)
    pos = torch.tensor(
        [[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [2.2, 1.1, 0.0], [-0.5, 0.9, 0.1], [-0.4, -0.9, 0.2], [2.0, -0.9, -0.3],
         [0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]],
        dtype=torch.float64,
    )
    batch = torch.tensor([0] * 6 + [1] * 3)
    return z, pos + 0.05 * torch.randn_like(pos), batch


def test_identical_heads_give_the_single_model_and_zero_spread():
    model = tiny_potential()
    heads = HeadCommittee.from_potential(model, 3, head_noise=0.0).eval()
    z, pos, batch = molecules()
    single, out = model(z, pos, batch), heads(z, pos, batch)
    torch.testing.assert_close(out["energy"], single["energy"])
    torch.testing.assert_close(out["forces"], single["forces"])
    assert out["member_forces"].shape == (3, len(z), 3) and out["member_energies"].shape == (3, 2)
    assert float(out["forces_std"].abs().max()) < 1e-10
    assert float(out["energy_std"].detach().abs().max()) < 1e-10


def test_heads_equal_a_committee_of_checkpoints_with_the_same_heads():
    """Head k's energy and forces are those of a Potential with the shared representation and head k."""
    heads = HeadCommittee.from_potential(tiny_potential(), 3, head_noise=0.3, seed=5).eval()
    members = []
    for head in heads.all_heads():
        member = tiny_potential()
        member.load_state_dict({k: v for k, v in heads.state_dict().items() if not k.startswith("extra_heads")})
        member.head.load_state_dict(head.state_dict())
        members.append(member)
    z, pos, batch = molecules()
    out, reference = heads(z, pos, batch), Committee(members)(z, pos, batch)
    for key in ("energy", "forces", "energy_std", "forces_std", "member_forces", "member_energies"):
        torch.testing.assert_close(out[key], reference[key])
    assert float(out["forces_std"].min()) > 0
    heads.set_edge_chunking(4)  # one backward pass per head instead of the batched one
    chunked = heads(z, pos, batch)
    torch.testing.assert_close(chunked["member_forces"], out["member_forces"])


def test_the_single_model_is_unchanged():
    """A plain checkpoint still loads as a Potential (not a committee) with the same results."""
    model = tiny_potential()
    z, pos, batch = molecules()
    before = model(z, pos, batch)
    HeadCommittee.from_potential(model, 2, head_noise=0.5)
    after = model(z, pos, batch)
    torch.testing.assert_close(after["forces"], before["forces"], rtol=0, atol=0)
    loaded = load_model("pretrained")
    assert type(loaded) is Potential and not isinstance(loaded, Committee)


def test_training_mode_takes_each_structure_from_its_own_head():
    heads = HeadCommittee.from_potential(tiny_potential(), 2, head_noise=0.3, seed=1)
    z, pos, batch = molecules()
    reference = heads.eval()(z, pos, batch)
    heads.train()
    heads.structure_heads = torch.tensor([1, 0])
    out = heads(z, pos, batch)
    torch.testing.assert_close(out["energy"], torch.stack([reference["member_energies"][1, 0],
                                                           reference["member_energies"][0, 1]]))
    torch.testing.assert_close(out["forces"][:6], reference["member_forces"][1, :6])
    torch.testing.assert_close(out["forces"][6:], reference["member_forces"][0, 6:])
    out["forces"].pow(2).sum().backward()  # a force loss reaches both heads and the representation
    assert heads.head.mlp[0].weight.grad is not None and heads.extra_heads[0].mlp[0].weight.grad is not None
    heads.structure_heads = torch.tensor([2, 0])
    with pytest.raises(ValueError, match="structure_heads"):
        heads(z, pos, batch)


def test_checkpoint_round_trip_and_committee_consumers(tmp_path):
    heads = HeadCommittee.from_potential(tiny_potential(), 3, head_noise=0.3, seed=2).float().eval()
    path = save_checkpoint(tmp_path / "best.pt", heads, {"committee_heads": 3})
    loaded = load_model(path)
    assert isinstance(loaded, HeadCommittee) and len(loaded) == 3
    z, pos, batch = molecules()
    torch.testing.assert_close(loaded(z, pos.float(), batch)["forces_std"], heads(z, pos.float(), batch)["forces_std"])
    write_committee_file(tmp_path, ["best.pt"], extra={"kind": "heads"})
    assert isinstance(load_committee(tmp_path), HeadCommittee)
    assert json.loads((tmp_path / "committee.json").read_text())["kind"] == "heads"
    from ase import Atoms

    atoms = Atoms(numbers=z[:6].numpy(), positions=pos[:6].numpy())
    for model in (tmp_path, path):
        atoms.calc = ETCalculator(model, device="cpu", dtype="float64")
        atoms.get_forces()
        assert atoms.calc.is_committee
        assert atoms.calc.results["forces_std"].shape == (6,) and atoms.calc.results["forces_std"].max() > 0
    with pytest.raises(NotImplementedError):
        copy.deepcopy(loaded).compile_energy()


def test_needs_two_heads():
    with pytest.raises(ValueError, match="at least 2 heads"):
        HeadCommittee(1)


def test_automatic_compilation_leaves_a_heads_committee_eager():
    committee = HeadCommittee.from_potential(tiny_potential(), 3)
    calc = ETCalculator(committee, compile="auto")  # what md chooses for long runs
    assert calc.engine.compiled is False
    with pytest.raises(NotImplementedError, match="evaluate it eagerly"):
        ETCalculator(committee, compile=True)  # asked for explicitly: a clear error
    assert ETCalculator(tiny_potential(), compile="auto").engine.compiled is True
    with pytest.raises(ValueError, match="compile must be True, False or 'auto'"):
        ETCalculator(tiny_potential(), compile="yes")
