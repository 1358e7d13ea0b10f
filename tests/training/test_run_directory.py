"""Run directories are owned: a finished run is never silently reused, a resume must match the
run's configuration, --overwrite starts afresh, and a lock keeps a second writer out."""

from __future__ import annotations

import csv

import pytest
import yaml

from forcefield_et.checkpoint import read_checkpoint
from forcefield_et.cli import main
from forcefield_et.training import Trainer, config_from_dict
from forcefield_et.training.run_directory import METRIC_FIELDS, RunDirectory
from tests.conftest import shared_path
from tests.training.test_trainer import tiny_mixed_config


def finetune(out, capsys, *extra, steps=4, n_train=20):
    train = shared_path("rmd17", "rmd17_ethanol_train_01.npz")
    argv = ["finetune", "--model", "scratch", "--hidden-channels", "16", "--num-layers", "1", "--train", str(train),
            "--format", "rmd17", "--n-train", str(n_train), "--n-valid-from-train", "5", "--steps", str(steps),
            "--valid-every", "2", "--out", str(out), "--no-progress", "--threads", "1", "--no-compile", *extra]
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_finished_run_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert finetune(out, capsys)[0] == 0
    config_before = (out / "config.yaml").read_text()
    code, _, err = finetune(out, capsys, n_train=30)
    assert code == 2 and "already holds a training run (last.pt at step 4)" in err
    assert "--resume" in err and "--overwrite" in err
    assert (out / "config.yaml").read_text() == config_before  # still describes the weights beside it


def test_resume_continues_a_matching_run_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    assert finetune(out, capsys)[0] == 0
    code, stdout, _ = finetune(out, capsys, "--resume", steps=6)
    assert code == 0 and "resumed from" in stdout and "at step 4" in stdout
    assert read_checkpoint(out / "last.pt")["training_state"]["step"] == 6
    # other data is another run: refused, naming what differs
    code, _, err = finetune(out, capsys, "--resume", steps=8, n_train=30)
    assert code == 2 and "another configuration" in err and "sources.0.frames" in err
    assert read_checkpoint(out / "last.pt")["training_state"]["step"] == 6


def test_resume_needs_a_run_and_overwrite_starts_afresh(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = finetune(out, capsys, "--resume")
    assert code == 2 and "nothing to resume" in err
    assert finetune(out, capsys, steps=4)[0] == 0
    assert finetune(out, capsys, "--overwrite", steps=2, n_train=30)[0] == 0
    assert read_checkpoint(out / "last.pt")["training_state"]["step"] == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["sources"][0]["frames"] == "0:30"
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    assert max(int(r.split(",")[0]) for r in rows) == 2  # no rows of the replaced run


def test_a_second_writer_is_locked_out(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", max_steps=2, valid_every=1, checkpoint_every=1)
    first = Trainer(config_from_dict(values), progress=False)
    first.directory.lock()
    try:
        second = Trainer(config_from_dict(values), progress=False)
        with pytest.raises(RuntimeError, match="is in use by process"):
            second.run()
    finally:
        first.release()
    second.run()  # free again
    assert read_checkpoint(tmp_path / "run" / "last.pt")["training_state"]["step"] == 2


def test_a_run_directory_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "run").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        Trainer(config_from_dict(tiny_mixed_config(tmp_path / "run")), progress=False)


# ---------------------------------------------------------------- RunDirectory on its own
def test_metrics_rows_with_new_keys_widen_the_header_and_keep_earlier_rows(tmp_path):
    directory = RunDirectory(tmp_path / "run")
    directory.log_metrics({"step": 1, "kind": "train", "loss": 2.0})
    directory.log_metrics({"step": 2, "kind": "valid", "loss": 1.5, "valid_force_mae_meV_A": 30.0})
    with open(directory.metrics) as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[: len(METRIC_FIELDS)] == METRIC_FIELDS and "valid_force_mae_meV_A" in rows[0]
    assert [r["loss"] for r in rows] == ["2.0", "1.5"] and rows[0]["valid_force_mae_meV_A"] == ""
    directory.truncate_metrics(1)
    with open(directory.metrics) as handle:
        assert [r["step"] for r in csv.DictReader(handle)] == ["1"]


def test_unknown_existing_run_policy_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="existing must be one of"):
        RunDirectory(tmp_path / "run").check_existing("reuse", {})
