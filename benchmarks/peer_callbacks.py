"""Lightning callback that ``python -m benchmarks.peers`` adds to a ``nequip-train`` config (through
Hydra's ``_target_``, with this repository on ``PYTHONPATH``) to measure the CPU cost of NequIP's
training steps. It imports only ``lightning``, which the NequIP environment has."""

from __future__ import annotations

import json
import os
import statistics
import time

import lightning


class StepCPUTimer(lightning.Callback):
    """Process CPU time of every training step (forward, loss, backward, optimiser and EMA update,
    i.e. everything between Lightning's batch-start and batch-end hooks), written to ``path`` as
    JSON at the end of training together with the model's parameter count. The first ``skip``
    steps are recorded but left out of the median."""

    def __init__(self, path: str, skip: int = 3) -> None:
        self.path = path
        self.skip = skip
        self.steps_ms: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps_ms.append(1000 * (time.process_time() - self._start))

    def on_train_end(self, trainer, pl_module) -> None:
        timed = self.steps_ms[self.skip:] or self.steps_ms
        payload = {
            "steps_ms": self.steps_ms, "skip": self.skip,
            "median_ms_per_step": statistics.median(timed) if timed else None,
            "parameters": int(sum(p.numel() for p in getattr(pl_module, "model", pl_module).parameters())),
            "torch_threads": int(__import__("torch").get_num_threads()),
        }
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as handle:
            json.dump(payload, handle, indent=2)
        os.replace(tmp, self.path)
