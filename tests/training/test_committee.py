"""Committee training: K seeded members in ordinary run directories, one validation carve,
resumable, listed in committee.json for ETCalculator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from forcefield_et import ETCalculator, load_model
from forcefield_et.checkpoint import read_checkpoint
from forcefield_et.cli import main
from forcefield_et.training import Trainer, config_from_dict
from forcefield_et.training.committee import member_config
from tests.conftest import shared_path
from tests.training.test_trainer import tiny_mixed_config


def finetune(out, capsys, *extra, steps=4):
    train = shared_path("rmd17", "rmd17_ethanol_train_01.npz")
    argv = ["finetune", "--model", "scratch", "--hidden-channels", "16", "--num-layers", "1", "--train", str(train),
            "--format", "rmd17", "--n-train", "20", "--n-valid-from-train", "5", "--steps", str(steps),
            "--valid-every", "2", "--out", str(out), "--no-progress", "--threads", "1", "--no-compile", *extra]
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_committee_members_differ_by_seed_and_the_committee_loads(tmp_path, capsys):
    out = tmp_path / "committee"
    code, stdout, _ = finetune(out, capsys, "--committee", "2", "--committee-kind", "checkpoints", "--seed", "3")
    assert code == 0
    listing = json.loads((out / "committee.json").read_text())
    assert listing["members"] == ["member_0/best.pt", "member_1/best.pt"]
    members = [load_model(out / m) for m in listing["members"]]
    configs = [m.metadata["training"]["config"] for m in members]
    assert [c["seed"] for c in configs] == [3, 4]
    assert configs[0]["sources"] == configs[1]["sources"]  # the same training and validation frames
    weights = [m.state_dict() for m in members]
    assert any(not torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    atoms = read_ethanol()
    atoms.calc = ETCalculator(out, device="cpu", dtype="float64")
    atoms.get_forces()
    assert atoms.calc.results["forces_std"].shape == (9,) and atoms.calc.results["forces_std"].max() > 0


def test_rerunning_resumes_unfinished_members_and_skips_finished_ones(tmp_path, capsys):
    out = tmp_path / "committee"
    assert finetune(out, capsys, "--committee", "2", "--committee-kind", "checkpoints")[0] == 0
    # a longer run: both resume
    code, stdout, _ = finetune(out, capsys, "--committee", "2", "--committee-kind", "checkpoints", steps=6)
    assert code == 0 and stdout.count("resumed from") == 2
    steps = [read_checkpoint(out / f"member_{k}" / "last.pt")["training_state"]["step"] for k in range(2)]
    assert steps == [6, 6]
    code, stdout, _ = finetune(out, capsys, "--committee", "2", "--committee-kind", "checkpoints", steps=6)
    assert code == 0 and stdout.count("is finished; skipped") == 2 and "resumed from" not in stdout
    # a finished committee is not reused for other settings: the first member's run says what differs
    code, _, err = finetune(out, capsys, "--committee", "2", "--committee-kind", "checkpoints", "--lr", "1e-3", steps=6)
    assert code == 2 and "another configuration" in err and "optim.lr" in err


def test_committee_arguments_are_checked(tmp_path, capsys):
    code, _, err = finetune(tmp_path / "one", capsys, "--committee", "1")
    assert code == 2 and "at least 2 members" in err
    single = tmp_path / "single"
    assert finetune(single, capsys)[0] == 0
    code, _, err = finetune(single, capsys, "--committee", "2", "--committee-kind", "checkpoints")
    assert code == 2 and "holds a single training run" in err


def test_members_share_the_random_validation_carve(tmp_path):
    values = tiny_mixed_config(tmp_path / "committee")
    config = config_from_dict(values)
    trainers = [Trainer(member_config(config, k), progress=False) for k in range(2)]
    for a, b in zip(trainers[0].valid_sets, trainers[1].valid_sets):
        np.testing.assert_array_equal(a.pos, b.pos)
    for trainer in trainers:
        trainer.release()
    # without split_seed, the seed decides the carve: another seed holds out other frames
    other = Trainer(config_from_dict({**values, "seed": values["seed"] + 1, "run_dir": str(tmp_path / "x")}),
                    progress=False)
    assert any(a.pos.shape != b.pos.shape or not np.array_equal(a.pos, b.pos)
               for a, b in zip(trainers[0].valid_sets, other.valid_sets))


def read_ethanol():
    from ase import Atoms

    data = np.load(shared_path("rmd17", "rmd17_ethanol_train_01.npz"))
    return Atoms(numbers=data["nuclear_charges"], positions=data["coords"][0])


@pytest.mark.parametrize("index", [0, 2])
def test_member_config_names_the_run_directory_and_seed(tmp_path, index):
    config = config_from_dict(tiny_mixed_config(tmp_path / "c"))
    member = member_config(config, index)
    assert member.run_dir == str(tmp_path / "c" / f"member_{index}")
    assert member.seed == config.seed + index and member.split_seed == config.seed


def test_heads_committee_trains_one_run_with_k_heads(tmp_path, capsys):
    out = tmp_path / "heads"
    code, stdout, _ = finetune(out, capsys, "--committee", "3", "--committee-kind", "heads")
    assert code == 0
    listing = json.loads((out / "committee.json").read_text())
    assert listing["kind"] == "heads" and listing["members"] == ["best.pt"]
    model = load_model(out / "best.pt")
    assert len(model) == 3 and model.metadata["committee"]["kind"] == "heads"
    heads = model.all_heads()
    assert not torch.equal(heads[0].mlp[2].weight, heads[1].mlp[2].weight)
    atoms = read_ethanol()
    atoms.calc = ETCalculator(out, device="cpu", dtype="float64")
    atoms.get_forces()
    assert atoms.calc.results["forces_std"].shape == (9,) and atoms.calc.results["forces_std"].max() > 0
    code, _, _ = finetune(out, capsys, "--committee", "3", "--committee-kind", "heads")  # finished: resumes, no error
    assert code == 0
