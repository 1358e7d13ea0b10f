"""Stopping rules and the learning curve: CPU-time budget (also across a resume), early stopping,
test-set monitoring, snapshots and glob data paths."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from forcefield_et.checkpoint import checksum, read_checkpoint
from forcefield_et.training import Trainer, config_from_dict, train
from forcefield_et.training.config import UNLIMITED_STEPS, ConfigError, OptimConfig
from forcefield_et.training.trainer import progress_bar_settings
from tests.conftest import shared_path
from tests.training.test_trainer import tiny_mixed_config


def valid_rows(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        return [r for r in csv.DictReader(handle) if r["kind"] == "valid"]


def test_time_budget_stops_the_run_and_a_larger_budget_resumes_it(tmp_path):
    run_dir = tmp_path / "run"
    values = tiny_mixed_config(run_dir, max_steps=100_000, valid_every=25, checkpoint_every=25, time_budget_s=2.0)
    trainer, _ = train(config_from_dict(values), progress=False)
    assert trainer.stop_reason.startswith("time budget")
    assert 2.0 <= trainer.cpu_seconds < 60.0
    stopped_at = trainer.step
    assert 0 < stopped_at < 100_000
    state = read_checkpoint(run_dir / "last.pt")["training_state"]
    assert state["step"] == stopped_at and state["cpu_seconds"] == pytest.approx(trainer.cpu_seconds)
    # the stopping step was validated and logged with the CPU time used
    rows = valid_rows(run_dir)
    assert int(rows[-1]["step"]) == stopped_at and float(rows[-1]["cpu_hours"]) > 0
    # the same budget again: nothing more to train
    again, _ = train(config_from_dict(values), progress=False)
    assert again.step == stopped_at
    # a larger budget continues from the saved step and counts the earlier CPU time
    values["optim"]["time_budget_s"] = trainer.cpu_seconds + 2.0
    more, _ = train(config_from_dict(values), progress=False)
    assert more.step > stopped_at and more.cpu_seconds >= values["optim"]["time_budget_s"]


def test_the_progress_bar_counts_cpu_seconds_of_a_budget_and_steps_otherwise(tmp_path, capsys):
    budget = OptimConfig(max_steps=UNLIMITED_STEPS, time_budget_s=7200.0)
    assert {k: v for k, v in progress_bar_settings(budget, 500, 61.7).items() if k != "bar_format"} == {
        "total": 7200, "initial": 61, "unit": "CPU-s"}
    assert progress_bar_settings(budget, 9000, 7250.0)["initial"] == 7200
    assert progress_bar_settings(OptimConfig(max_steps=3000), 12, 5.0) == {"total": 3000, "initial": 12, "unit": "step"}
    open_ended = OptimConfig(max_steps=UNLIMITED_STEPS, early_stop_patience=5)
    assert progress_bar_settings(open_ended, 12, 5.0)["total"] is None
    # a budgeted run shows the CPU time used out of its budget, not an ETA over a step count it never reaches
    values = tiny_mixed_config(tmp_path / "run", max_steps=UNLIMITED_STEPS, valid_every=25, checkpoint_every=25,
                               time_budget_s=2.0)
    train(config_from_dict(values), progress=True)
    shown = capsys.readouterr().err
    assert "2/2 CPU-s" in shown and str(UNLIMITED_STEPS) not in shown


def test_early_stopping_after_patience_validations_without_a_new_best(tmp_path):
    run_dir = tmp_path / "run"
    # a learning rate below float32 resolution: the weights, and so the validation loss, never change
    values = tiny_mixed_config(run_dir, max_steps=1000, valid_every=5, checkpoint_every=5, lr=1e-30,
                               min_lr=1e-30, warmup_steps=1, early_stop_patience=3)
    trainer, _ = train(config_from_dict(values), progress=False)
    assert trainer.stop_reason == "no better valid_loss in 3 validations"
    rows = valid_rows(run_dir)
    losses = [float(r["valid_loss"]) for r in rows]
    best_step = int(rows[losses.index(min(losses))]["step"])
    assert best_step == 5 and len(set(losses)) == 1
    assert trainer.step == best_step + 3 * 5  # three validations after the last new best
    assert read_checkpoint(run_dir / "best.pt")["metadata"]["training"]["step"] == best_step


def test_learning_curve_has_validation_and_test_errors_against_cpu_hours(tmp_path):
    run_dir = tmp_path / "run"
    values = tiny_mixed_config(run_dir, max_steps=20, valid_every=10, checkpoint_every=10)
    asp = values["sources"][2]
    asp.update(test_path=str(shared_path("rmd17", "rmd17_aspirin_test_01.npz")), test_frames="0:12")
    trainer, metrics = train(config_from_dict(values), progress=False)
    assert len(trainer.test_tensors[2].n_atoms) == 12 and trainer.test_tensors[0] is None
    assert metrics["asp/test_force_mae_meV_A"] > 0 and metrics["asp/test_energy_mae_meV"] > 0
    with open(run_dir / "learning_curve.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["10", "20"]
    assert float(rows[0]["cpu_hours"]) < float(rows[1]["cpu_hours"])
    assert {"asp/force_mae_meV_A", "asp/test_force_mae_meV_A", "eth/force_mae_meV_A"} <= set(rows[0])
    assert (run_dir / "learning_curve.png").stat().st_size > 1000
    # the test errors never select the weights: best.pt follows the validation loss
    best = read_checkpoint(run_dir / "best.pt")["metadata"]["validation"]
    assert trainer.best_valid == pytest.approx(best["valid_loss"])


def test_snapshots_keep_the_ema_weights_of_the_listed_steps(tmp_path):
    run_dir = tmp_path / "run"
    values = tiny_mixed_config(run_dir, max_steps=12, valid_every=100, checkpoint_every=100, snapshot_steps=[4, 9])
    trainer, _ = train(config_from_dict(values), progress=False)
    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == ["step_4.pt", "step_9.pt"]
    meta = read_checkpoint(run_dir / "snapshots" / "step_9.pt")["metadata"]
    assert meta["snapshot"] == {"step": 9, "conformations_seen": 9 * 6}
    assert "training_state" not in read_checkpoint(run_dir / "snapshots" / "step_9.pt")


def test_init_from_accepts_only_the_zbl_switch(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", max_steps=2)
    values["init_from"] = "pretrained"
    values["model"] = {"zbl": True}
    trainer = Trainer(config_from_dict(values), progress=False)
    assert trainer.model.use_zbl and trainer.model.hyperparameters["zbl"] is True
    values["model"] = {"hidden_channels": 64}
    with pytest.raises(ValueError, match="only 'zbl'"):
        Trainer(config_from_dict(values), progress=False)


@pytest.mark.parametrize("key, value", [("time_budget_s", 0), ("time_budget_s", -5.0), ("early_stop_patience", -1),
                                        ("valid_every", 0), ("checkpoint_every", 0), ("log_every", -1),
                                        ("batch_size", 0), ("max_steps", -1), ("lr", 0.0), ("lr", float("nan")),
                                        ("plateau_factor", 1.5), ("ema_decay", 1.0), ("valid_every", 2.5),
                                        ("encoder_lr_scale", 0.0), ("encoder_lr_scale", float("inf"))])
def test_optimiser_and_stopping_settings_are_validated(tmp_path, key, value):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(tiny_mixed_config(tmp_path / "run", **{key: value}))


def test_an_empty_validation_set_is_an_error(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", max_steps=2)
    eth = values["sources"][0]
    eth.update(valid_path=eth["path"], valid_frames="1000:1050")  # the file has 1000 frames
    with pytest.raises(ValueError, match="'eth': the validation set .* is empty"):
        Trainer(config_from_dict(values), progress=False)


def test_plateau_schedule_halves_the_rate_after_patience_and_stops_at_min_lr(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", schedule="plateau", plateau_factor=0.5, plateau_patience=1,
                               warmup_steps=2, lr=1e-3, min_lr=3e-4)
    trainer = Trainer(config_from_dict(values), progress=False)
    rates = []
    for _ in range(3):
        rates.append(trainer.train_step()["lr"])
    assert rates == pytest.approx([5e-4, 1e-3, 1e-3])  # linear warm-up over 2 steps, then the base rate
    for value in (1.0, 0.9, 0.95, 0.95):  # better, better, worse, worse (> patience): halve
        trainer._after_validation({"valid_loss": value})
    assert trainer.train_step()["lr"] == pytest.approx(5e-4)
    for value in (0.95, 0.95):  # two more bad validations: halved again, but not below min_lr
        trainer._after_validation({"valid_loss": value})
    assert trainer.train_step()["lr"] == pytest.approx(3e-4)
    # the schedulers' state travels in last.pt: a resumed trainer continues at the reduced rate
    trainer.save_last()
    resumed = Trainer(config_from_dict(values), progress=False)
    assert resumed.resume() and resumed.train_step()["lr"] == pytest.approx(3e-4)
    assert resumed.schedule.plateau.best == pytest.approx(0.9)


def test_a_run_saved_before_torch_schedulers_resumes_with_its_rate_and_average(tmp_path):
    """Training states from before the schedulers and the EMA were torch's (``plateau`` as
    [scale, bad, best], ``ema`` as a list of tensors) resume where they stopped."""
    values = tiny_mixed_config(tmp_path / "run", schedule="plateau", warmup_steps=2, lr=1e-3, min_lr=1e-5)
    trainer = Trainer(config_from_dict(values), progress=False)
    for _ in range(4):
        trainer.train_step()
    trainer.save_last()
    path = tmp_path / "run" / "last.pt"
    payload = torch.load(path, weights_only=True)
    state = payload["training_state"]
    for key in ("scheduler", "plateau_scheduler", "ema_updates"):
        del state[key]
    state["plateau"] = [0.25, 2, 0.125]
    ema = [torch.full_like(t, 0.5) for t in state["ema"]]
    state["ema"] = ema
    payload["checksum"] = checksum(payload)
    torch.save(payload, path)
    resumed = Trainer(config_from_dict(values), progress=False)
    assert resumed.resume()
    assert resumed.step == 4 and resumed.train_step()["lr"] == pytest.approx(2.5e-4)
    assert resumed.schedule.plateau.best == 0.125 and resumed.schedule.plateau.num_bad_epochs == 2
    # the average went on from the stored EMA weights with the decay of step 5: (1 + 5) / (10 + 5)
    weight = 1 - 6 / 15
    for average, stored, current in zip(resumed.ema, ema, resumed.model.parameters(), strict=True):
        assert torch.allclose(average, stored + weight * (current.detach() - stored), atol=1e-6)


def test_a_cosine_over_a_time_budget_fixes_its_step_count_from_the_measured_speed_and_keeps_it(tmp_path):
    from forcefield_et.training.schedule import BUDGET_COSINE_MARGIN

    values = tiny_mixed_config(tmp_path / "run", schedule="cosine", max_steps=UNLIMITED_STEPS, time_budget_s=100.0,
                               warmup_steps=2, lr=1e-3, min_lr=1e-5)
    trainer = Trainer(config_from_dict(values), progress=False)
    assert trainer.schedule.budget_cosine() and trainer.schedule.cosine_steps() is None
    for _ in range(4):
        trainer.train_step()
    assert trainer.train_step()["lr"] == pytest.approx(1e-3)  # after warm-up, constant until measured
    # first validation after warm-up: the start of the measurement; second: 10 steps cost 2 CPU-s
    schedule = trainer.schedule
    assert schedule.fit_budget_cosine(trainer.step, 10.0) is None and schedule.cosine_steps() is None
    for _ in range(10):
        trainer.train_step()
    message = schedule.fit_budget_cosine(trainer.step, 12.0)
    expected = 15 + int(BUDGET_COSINE_MARGIN * (100.0 - 12.0) / 0.2)
    assert trainer.schedule.cosine_steps() == expected and str(expected) in message
    # the rate now follows the cosine over those steps, and ends at min_lr
    trainer.train_step()
    progress = (trainer.step - 2) / (expected - 2)
    cosine = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * progress))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(cosine)
    assert trainer.schedule.factor(expected + 5) * 1e-3 == pytest.approx(1e-5)
    # the count travels in last.pt (a resumed run does not measure again), scaled to a changed budget
    trainer.save_last()
    resumed = Trainer(config_from_dict(values), progress=False)
    assert resumed.resume() and resumed.schedule.cosine_steps() == expected
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(cosine, rel=1e-6)
    values["optim"]["time_budget_s"] = 200.0
    longer = Trainer(config_from_dict(values), progress=False)
    assert longer.resume() and longer.schedule.cosine_steps() == round(expected * 2)


def test_a_budgeted_cosine_run_decays_the_rate_before_its_budget_ends(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", schedule="cosine", max_steps=UNLIMITED_STEPS, valid_every=10,
                               checkpoint_every=50, time_budget_s=4.0, warmup_steps=2, lr=1e-3, min_lr=1e-5)
    trainer, _ = train(config_from_dict(values), progress=False)
    assert trainer.stop_reason.startswith("time budget") and trainer.schedule.cosine_steps() is not None
    with open(tmp_path / "run" / "metrics.csv") as handle:
        rates = [float(r["lr"]) for r in csv.DictReader(handle) if r["kind"] == "train"]
    assert rates[-1] < 0.2 * max(rates)


def test_encoder_lr_scale_gives_the_representation_a_proportional_rate_through_warm_up_plateau_and_resume(
        tmp_path):
    from forcefield_et.training.run_directory import config_fingerprint

    values = tiny_mixed_config(tmp_path / "run", schedule="plateau", plateau_factor=0.5, plateau_patience=1,
                               warmup_steps=2, lr=1e-3, min_lr=3e-4, encoder_lr_scale=0.1)
    trainer = Trainer(config_from_dict(values), progress=False)
    head, encoder = trainer.optimizer.param_groups
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert all(names[id(p)].startswith("representation.") for p in encoder["params"])
    assert not any(names[id(p)].startswith("representation.") for p in head["params"])
    assert len(head["params"]) + len(encoder["params"]) == len(names)

    def rates():
        return [group["lr"] for group in trainer.optimizer.param_groups]

    trainer.train_step()
    assert rates() == pytest.approx([1e-3, 1e-4])  # the warm-up scales both groups
    encoder_before = [p.detach().clone() for p in encoder["params"]]
    trainer.train_step()
    assert any(not torch.equal(a, p) for a, p in zip(encoder_before, encoder["params"], strict=True))
    for value in (1.0, 0.9, 0.95, 0.95, 0.95, 0.95):  # plateaus: halved twice, each group floored at its share
        trainer._after_validation({"valid_loss": value})
    assert rates() == pytest.approx([3e-4, 3e-5])
    trainer.save_last()
    resumed = Trainer(config_from_dict(values), progress=False)
    assert resumed.resume() and [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx([3e-4, 3e-5])
    # the default (1) is one group, and a configuration written before the setting existed has the same
    # fingerprint as one with the default
    values["optim"]["encoder_lr_scale"] = 1.0
    values["run_dir"] = str(tmp_path / "default")
    assert len(Trainer(config_from_dict(values), progress=False).optimizer.param_groups) == 1
    without = {**values, "optim": {k: v for k, v in values["optim"].items() if k != "encoder_lr_scale"}}
    assert config_fingerprint(without) == config_fingerprint(values)
