"""finetune --xtb-stage SMILES: the molecule's GFN2-xTB corpus, a fine-tuning stage on it, then the
fine-tuning on the reference frames from the stage's weights; resumable, refused when reused."""

from __future__ import annotations

import json

import pytest

from forcefield_et import load_model
from forcefield_et.checkpoint import read_checkpoint
from forcefield_et.cli import main
from forcefield_et.data import read_xtb_corpus
from forcefield_et.training.xtb_stage import XtbStage, check_stage_record, stage_paths
from tests.conftest import shared_path


@pytest.mark.parametrize("changes, message", [
    ({"smiles": ""}, "without spaces"),
    ({"smiles": "CCO CC"}, "without spaces"),
    ({"smiles": ()}, "without spaces"),
    ({"smiles": ("CCO", "CCO")}, "a SMILES twice"),
    ({"trajectories": 1}, "at least 2 trajectories"),
    ({"md_frames": 0}, "at least 1 MD frame"),
    ({"time_budget_s": float("inf")}, "positive and finite"),
])
def test_stage_settings_are_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        XtbStage(**{"smiles": "CCO", **changes})


def test_stage_corpus_has_relaxations_and_md_only_in_one_shard():
    settings = XtbStage("CCO", trajectories=7, md_frames=30, seed=3).corpus_settings()
    assert settings.displacements == 0 and settings.md_frames == 30
    assert settings.molecules_per_shard == 7 and settings.seed == 3
    assert XtbStage("CCO", trajectories=3).smiles_list() == ["CCO"] * 3
    two = XtbStage(["CCO", "CC=O"], trajectories=2)
    assert two.smiles == ("CCO", "CC=O") and two.smiles_list() == ["CCO", "CCO", "CC=O", "CC=O"]
    assert two.corpus_settings().molecules_per_shard == 4  # one shard


def test_a_stage_for_another_molecule_is_refused(tmp_path):
    check_stage_record(tmp_path, XtbStage("CCO"))
    check_stage_record(tmp_path, XtbStage("CCO"))  # the same stage: accepted
    with pytest.raises(ValueError, match="differs in: md_frames, smiles"):
        check_stage_record(tmp_path, XtbStage("CC=O", md_frames=5))


def _finetune(out, *extra):
    train = shared_path("rmd17", "rmd17_ethanol_train_01.npz")
    argv = ["finetune", "--model", "scratch", "--hidden-channels", 16, "--num-layers", 1, "--train", train,
            "--format", "rmd17", "--n-train", 10, "--n-valid-from-train", 5, "--steps", 3, "--batch-size", 4,
            "--xtb-stage-trajectories", 3, "--xtb-stage-frames", 2, "--xtb-stage-budget", "2s",
            "--out", out, "--no-progress", "--threads", 1, "--no-compile", *extra]
    return main([str(a) for a in argv])


@pytest.mark.timeout(600)
def test_finetune_with_an_xtb_stage_starts_from_the_stage_and_resumes(tmp_path, capsys):
    pytest.importorskip("rdkit", reason="--xtb-stage needs RDKit: pip install 'forcefield-et[corpus]'")
    pytest.importorskip("tblite", reason="--xtb-stage needs tblite: pip install 'forcefield-et[corpus]'")
    out = tmp_path / "run"
    assert _finetune(out, "--xtb-stage", "CCO") == 0
    err = capsys.readouterr().err
    paths = stage_paths(out)
    corpus = read_xtb_corpus(paths["corpus"] / "xtb_shard0.npz")
    assert set(corpus.properties["kind"].tolist()) <= {0, 1} and len(corpus) >= 3 * 2  # no displaced frames
    assert (corpus.z == 6).sum(axis=-1).max() > 0
    stage = load_model(paths["run"] / "best.pt").metadata
    assert stage["training"]["sources"][0]["name"] == "xtb_stage"
    assert stage["training"]["config"]["sources"][0]["format"] == "xtb_corpus"
    assert stage["training"]["config"]["optim"]["time_budget_s"] == 2.0
    assert "xtb_stage/force_mae_meV_A" in stage["validation"]
    # the final run started from the stage's weights, and says so in its metadata
    final = load_model(out / "best.pt").metadata
    assert final["training"]["config"]["init_from"] == str(paths["run"] / "best.pt")
    assert final["parent_training"]["config"]["sources"][0]["format"] == "xtb_corpus"
    assert final["training"]["step"] == 3 and "finetune/force_mae_meV_A" in final["validation"]
    assert "GFN2-xTB stage: 3 trajectories of each of CCO" in err and "fine-tuning on" in err
    assert json.loads((paths["record"]).read_text())["smiles"] == ["CCO"]
    assert main(["info", str(out / "best.pt")]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # the line wraps
    assert f"started: from {paths['run'] / 'best.pt'}, itself trained on xtb_stage (" in printed

    # the same command again is refused; --resume finds both stages done; another molecule is refused
    assert _finetune(out, "--xtb-stage", "CCO") == 2
    assert "already holds a run" in capsys.readouterr().err
    stage_step = read_checkpoint(paths["run"] / "last.pt")["training_state"]["step"]
    assert _finetune(out, "--xtb-stage", "CCO", "--resume") == 0
    printed = capsys.readouterr()
    assert "stopped earlier" in printed.out + printed.err
    assert read_checkpoint(paths["run"] / "last.pt")["training_state"]["step"] == stage_step
    assert _finetune(out, "--xtb-stage", "CC=O", "--resume") == 2
    assert "differs in: smiles" in capsys.readouterr().err
    # --workers and committees are refused before any work
    assert _finetune(tmp_path / "other", "--xtb-stage", "CCO", "--committee", 2) == 2
    assert "one process" in capsys.readouterr().err and not (tmp_path / "other").exists()


def test_overwriting_removes_the_stage_and_nothing_else(tmp_path):
    from forcefield_et.training.xtb_stage import remove_stage

    check_stage_record(tmp_path, XtbStage("CCO"))
    (stage_paths(tmp_path)["corpus"]).mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    remove_stage(tmp_path)
    assert not stage_paths(tmp_path)["root"].exists() and (tmp_path / "notes.txt").read_text() == "mine"
    remove_stage(tmp_path)  # nothing to remove: no error
    check_stage_record(tmp_path, XtbStage("CC=O"))  # another molecule is accepted after the removal
