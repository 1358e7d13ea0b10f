"""The learning-rate schedule: linear warm-up, then a cosine (over ``max_steps``, or over the steps
a CPU-time budget is measured to hold) or a constant rate that ``ReduceLROnPlateau`` lowers when
validation stops improving. Built on ``torch.optim.lr_scheduler``; its state travels in ``last.pt``."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Tuple

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from .config import UNLIMITED_STEPS, OptimConfig

# a cosine over a time budget ends its decay at this share of the steps the budget is measured to hold
BUDGET_COSINE_MARGIN = 0.95


class LearningRateSchedule:
    """The schedule of ``optimizer``, whose parameter groups each carry an ``lr_scale`` (their rate is
    that multiple of the schedule's). ``optim`` is read at every step, so that a resumed run may
    change how long it runs."""

    def __init__(self, optimizer: torch.optim.Optimizer, optim: OptimConfig) -> None:
        self.optimizer = optimizer
        self.optim = optim
        # a cosine over a time budget: the step count it decays over, measured once (see fit_budget_cosine)
        self.budget_cosine_steps: int | None = None
        self.budget_cosine_anchor: Tuple[int, float] | None = None
        self.budget_cosine_budget_s: float | None = None
        # warm-up, then cosine (or the constant rate that the plateau scheduler reduces)
        self.scheduler = LambdaLR(optimizer, lambda step: self.factor(step))  # a function: not pickled
        self.plateau: ReduceLROnPlateau | None = None
        if optim.schedule == "plateau":
            self.plateau = ReduceLROnPlateau(
                optimizer, mode="min", factor=optim.plateau_factor, patience=optim.plateau_patience,
                threshold=0.0, min_lr=[optim.min_lr * group["lr_scale"] for group in optimizer.param_groups],
            )

    def factor(self, step: int) -> float:
        """The LambdaLR factor of step ``step``: linear warm-up over ``warmup_steps``, then a cosine
        from ``lr`` to ``min_lr`` over :meth:`cosine_steps`, or 1 for the plateau schedule."""
        o = self.optim
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule != "cosine":
            return 1.0
        total = self.cosine_steps()
        if total is None:  # a cosine over a time budget before its step count is measured
            return 1.0
        progress = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
        return (o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * progress))) / o.lr

    def learning_rate(self, step: int) -> float:
        """The (head's) learning rate of step ``step``; for the plateau schedule after warm-up, the
        present, possibly reduced, rate."""
        if self.plateau is not None and step >= self.optim.warmup_steps:
            return float(self.optimizer.param_groups[0]["lr"])
        return self.optim.lr * self.factor(step)

    def budget_cosine(self) -> bool:
        """Whether the cosine decays over the time budget: schedule cosine, a time budget, and no step count."""
        o = self.optim
        return o.schedule == "cosine" and o.time_budget_s is not None and o.max_steps >= UNLIMITED_STEPS

    def cosine_steps(self) -> int | None:
        """The step count the cosine decays over: ``max_steps``, or for a cosine over a time budget the
        steps that fit in it (None until measured)."""
        return self.budget_cosine_steps if self.budget_cosine() else self.optim.max_steps

    # ---------------------------------------------------------------- events
    def after_step(self, step: int) -> None:
        """Set the rate of the step after ``step`` (the steps taken so far)."""
        if self.plateau is None or step <= self.optim.warmup_steps:
            self.scheduler.step()

    def after_validation(self, step: int, value: float) -> None:
        """Tell the plateau schedule the validation metric ``value`` at ``step`` (after warm-up)."""
        if self.plateau is not None and step >= self.optim.warmup_steps:
            self.plateau.step(value)

    def forget_best(self) -> None:
        """The plateau schedule's best becomes unknown (the run now selects by another metric)."""
        if self.plateau is not None:
            self.plateau.best = math.inf

    def fit_budget_cosine(self, step: int, cpu_seconds: float,
                          agree: Callable[[int], int] = lambda steps: steps) -> str | None:
        """At the validations after warm-up, for a cosine over a time budget: the first marks the start
        of a measurement, the second fixes the step count that fits in the budget from the CPU time per
        step in between (validation included), with a margin of :data:`BUDGET_COSINE_MARGIN`. The count
        is saved with the run, so the schedule does not depend on the machine's speed after that.
        ``agree`` makes data-parallel workers take one count. Returns a message when it fixes the count."""
        optim = self.optim
        if not self.budget_cosine() or self.budget_cosine_steps is not None or step < optim.warmup_steps:
            return None
        if self.budget_cosine_anchor is None:
            self.budget_cosine_anchor = (step, cpu_seconds)
            return None
        start_step, start_cpu = self.budget_cosine_anchor
        if step <= start_step:
            return None
        per_step = max(cpu_seconds - start_cpu, 1e-9) / (step - start_step)
        remaining = max(0.0, float(optim.time_budget_s) - cpu_seconds)
        self.budget_cosine_steps = agree(step + int(BUDGET_COSINE_MARGIN * remaining / per_step))
        self.budget_cosine_budget_s = float(optim.time_budget_s)
        return (f"cosine over the time budget: decays to the minimum learning rate at step "
                f"{self.budget_cosine_steps} ({per_step:.3g} CPU-s per step measured)")

    # ---------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        """The schedule's part of a training state (keys ``scheduler``, ``plateau_scheduler``,
        ``budget_cosine``)."""
        return {
            "scheduler": self.scheduler.state_dict(),
            "plateau_scheduler": self.plateau.state_dict() if self.plateau is not None else None,
            "budget_cosine": {"steps": self.budget_cosine_steps, "anchor": self.budget_cosine_anchor,
                              "budget_s": self.budget_cosine_budget_s},
        }

    def load_state_dict(self, state: Dict[str, Any], step: int) -> None:
        """Restore from a training state at ``step`` (also one written before the trainer used torch's
        schedulers, which stored the plateau state as [scale, bad, best]), and set the rate of the
        next step."""
        self._restore_budget_cosine(state.get("budget_cosine") or {})
        optim = self.optim
        if state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            self.scheduler.last_epoch = step
        legacy = state.get("plateau")
        if self.plateau is not None:
            if state.get("plateau_scheduler") is not None:
                self.plateau.load_state_dict(state["plateau_scheduler"])
            elif legacy is not None:
                scale, bad, best = legacy
                self.plateau.best, self.plateau.num_bad_epochs = float(best), int(bad)
                self.plateau.last_epoch = 0
        # the rate of the next step (the optimiser state holds the rate of the last one)
        if self.plateau is None or step < optim.warmup_steps:
            rate = optim.lr * self.factor(step)
        elif legacy is not None and state.get("plateau_scheduler") is None:
            rate = max(optim.min_lr, optim.lr * float(legacy[0]))
        else:
            rate = float(self.optimizer.param_groups[0]["lr"])
        for group in self.optimizer.param_groups:
            group["lr"] = rate * group.get("lr_scale", 1.0)

    def _restore_budget_cosine(self, saved: Dict[str, Any]) -> None:
        """The measured step count of a cosine over a time budget; a resumed run with another budget
        scales it by the ratio of the budgets."""
        anchor = saved.get("anchor")
        self.budget_cosine_anchor = (int(anchor[0]), float(anchor[1])) if anchor is not None else None
        steps, budget_s = saved.get("steps"), saved.get("budget_s")
        self.budget_cosine_steps = int(steps) if steps is not None else None
        self.budget_cosine_budget_s = float(budget_s) if budget_s is not None else None
        now = self.optim.time_budget_s
        if self.budget_cosine_steps is not None and budget_s and now and now != budget_s:
            self.budget_cosine_steps = int(round(self.budget_cosine_steps * now / budget_s))
            self.budget_cosine_budget_s = float(now)


__all__ = ["BUDGET_COSINE_MARGIN", "LearningRateSchedule"]
