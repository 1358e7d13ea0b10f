"""The learning-rate schedule on its own: warm-up, cosine, plateau halving per parameter group,
and its state round trip (forcefield_et/training/schedule.py)."""

import math

import pytest
import torch

from forcefield_et.training.config import UNLIMITED_STEPS, OptimConfig
from forcefield_et.training.schedule import BUDGET_COSINE_MARGIN, LearningRateSchedule


def optimizer(lr=1e-3, encoder_scale=1.0):
    """Two parameter groups: a head at ``lr`` and an encoder at ``encoder_scale * lr``."""
    head, encoder = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [head], "lr": lr, "lr_scale": 1.0},
                            {"params": [encoder], "lr": lr * encoder_scale, "lr_scale": encoder_scale}], lr=lr)


def take_steps(schedule, steps):
    """The head's rate of each step (what the optimiser would use), advancing the schedule."""
    rates = []
    for step in range(1, steps + 1):
        rates.append(schedule.optimizer.param_groups[0]["lr"])
        schedule.optimizer.step()
        schedule.after_step(step)
    return rates


def test_warm_up_then_cosine_to_the_minimum_rate():
    optim = OptimConfig(lr=1e-3, min_lr=1e-5, warmup_steps=4, max_steps=20, schedule="cosine")
    schedule = LearningRateSchedule(optimizer(), optim)
    rates = take_steps(schedule, 20)
    assert rates[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    halfway = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.5))
    assert rates[12] == pytest.approx(halfway)  # step 12: 8 of the 16 cosine steps
    assert all(a >= b for a, b in zip(rates[4:-1], rates[5:], strict=True))
    assert schedule.learning_rate(20) == pytest.approx(1e-5) and schedule.learning_rate(50) == pytest.approx(1e-5)


def test_plateau_halves_every_group_in_proportion_and_stops_at_each_groups_floor():
    optim = OptimConfig(lr=1e-3, min_lr=2e-4, warmup_steps=1, schedule="plateau", plateau_patience=1)
    schedule = LearningRateSchedule(optimizer(encoder_scale=0.5), optim)
    take_steps(schedule, 2)
    for value in (1.0, 2.0, 2.0):  # a best, then two worse validations (> patience 1): halved once
        schedule.after_validation(2, value)
    assert [g["lr"] for g in schedule.optimizer.param_groups] == pytest.approx([5e-4, 2.5e-4])
    for _ in range(6):  # many more: each group stops at its own floor, min_lr times its scale
        schedule.after_validation(2, 2.0)
    assert [g["lr"] for g in schedule.optimizer.param_groups] == pytest.approx([2e-4, 1e-4])
    assert schedule.learning_rate(3) == pytest.approx(2e-4)


def test_validations_during_warm_up_do_not_reduce_the_rate():
    optim = OptimConfig(lr=1e-3, warmup_steps=10, schedule="plateau", plateau_patience=0)
    schedule = LearningRateSchedule(optimizer(), optim)
    take_steps(schedule, 3)
    for value in (1.0, 2.0, 3.0):
        schedule.after_validation(3, value)
    assert schedule.plateau.num_bad_epochs == 0 and schedule.learning_rate(3) == pytest.approx(4e-4)


def test_state_round_trip_restores_the_reduced_rate_and_the_plateau_best():
    optim = OptimConfig(lr=1e-3, min_lr=1e-6, warmup_steps=1, schedule="plateau", plateau_patience=0)
    schedule = LearningRateSchedule(optimizer(), optim)
    take_steps(schedule, 3)
    schedule.after_validation(3, 0.5)
    schedule.after_validation(3, 0.7)  # worse, patience 0: halved
    state = schedule.state_dict()
    assert set(state) == {"scheduler", "plateau_scheduler", "budget_cosine"}
    fresh = LearningRateSchedule(optimizer(), optim)
    fresh.optimizer.param_groups[0]["lr"] = 5e-4  # what the optimiser's own state holds after the stop
    fresh.load_state_dict(state, step=3)
    assert fresh.plateau.best == 0.5 and fresh.learning_rate(3) == pytest.approx(5e-4)
    fresh.forget_best()
    assert fresh.plateau.best == math.inf


def test_a_cosine_over_a_time_budget_is_measured_once_and_scaled_with_the_budget():
    optim = OptimConfig(lr=1e-3, min_lr=1e-5, warmup_steps=2, max_steps=UNLIMITED_STEPS, schedule="cosine",
                        time_budget_s=100.0)
    schedule = LearningRateSchedule(optimizer(), optim)
    assert schedule.budget_cosine() and schedule.cosine_steps() is None
    assert schedule.fit_budget_cosine(1, 0.5) is None  # still warming up: no measurement
    assert schedule.fit_budget_cosine(10, 10.0) is None  # the measurement starts
    message = schedule.fit_budget_cosine(20, 12.0)  # 0.2 CPU-s per step
    expected = 20 + int(BUDGET_COSINE_MARGIN * 88.0 / 0.2)
    assert schedule.cosine_steps() == expected and str(expected) in message
    assert schedule.fit_budget_cosine(30, 14.0) is None and schedule.cosine_steps() == expected  # fixed
    optim_longer = OptimConfig(**{**optim.__dict__, "time_budget_s": 300.0})
    longer = LearningRateSchedule(optimizer(), optim_longer)
    longer.load_state_dict(schedule.state_dict(), step=20)
    assert longer.cosine_steps() == round(expected * 3)


def test_the_lambda_is_not_stored_in_the_state():
    """LambdaLR stores callable objects' attributes; the schedule's factor is a plain function, so the
    state holds only numbers (it is read back with weights_only=True)."""
    schedule = LearningRateSchedule(optimizer(), OptimConfig(warmup_steps=2, max_steps=10))
    assert schedule.state_dict()["scheduler"]["lr_lambdas"] == [None, None]
