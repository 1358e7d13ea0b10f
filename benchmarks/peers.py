"""Head-to-head at equal CPU budget on rMD17 aspirin: the ET (pretrained start and from scratch)
against NequIP and MACE, each trained by its own tool in its own virtual environment.

    python -m benchmarks.peers                                  # train (2 CPU-h each), evaluate, report
    python -m benchmarks.peers --models et-pretrained nequip-mdsim --budget 4h --md-budget 2h
    python -m benchmarks.peers --report                         # summarise what has finished
    python -m benchmarks.peers --quick                          # tiny models, a couple of CPU-minutes
    python -m benchmarks.peers --mdsim-full --device cuda       # MDsim's full protocol on a GPU (see below)

Data: the rMD17 ``train_01`` split of aspirin, frames 0-949 for training and 950-999 for validation
(checkpoint selection, learning curves); all 1000 frames of ``test_01`` for the test errors.

Models (``--models``, default all five):

- ``et-pretrained`` / ``et-scratch``: the ET with benchmarks/finetune_converged.py's recipe, from the
  bundled pretrained model or freshly initialised (same architecture). With the default 2 h budget these
  are exactly finetune_converged's ``aspirin-1000-pretrained`` / ``aspirin-1000-scratch`` cells (run
  folders ``runs/finetune_converged/``, results ``benchmarks/results/finetune_converged/runs/``): a
  finished cell is reused, an unfinished one resumed. Any other budget trains its own cells in
  ``runs/peers/et-<budget>/``.
- ``nequip-mdsim``: NequIP 0.19 through ``nequip-train`` at MDsim's MD17 settings
  (benchmarks/prepare.py ``NEQUIP_MDSIM``), ``nequip-compile`` for ASE.
- ``nequip-matched``: NequIP with MDsim's training settings at the size whose CPU cost per training
  step is closest to the ET's. A short probe times the ET's compiled training step (batch 8) and
  ``nequip-train`` steps (batch 5, a Lightning callback, benchmarks/peer_callbacks.py) for a ladder of
  sizes from MDsim's down; the chosen size and every measured cost go into the results.
- ``mace``: ``mace_run_train`` (mace-torch) at a small standard size: hidden irreps 32x0e + 32x1o,
  r_max 5 Å, 2 interactions, correlation order 3, 8 Bessel functions, float32, batch 5, E0s from the
  training set average, EMA 0.99, AMSGrad, mace_run_train's default loss weights (energy 1, forces 100).

CPU budget (``--budget``, default 2 h per model): every model trains on one core with one thread.
The ET's trainer counts its own CPU time and stops at the budget. For NequIP and MACE the driver
polls the CPU time (user + system) of the training process and its children once a second and
kills its process group at the budget (nothing past it counts); the CPU time at each checkpoint the peer
writes is recorded, so a stopped run resumes from its last checkpoint (``nequip-train ckpt_path``,
``mace_run_train --restart_latest``) with the budget it had used up to that checkpoint, as the ET
does. Each validation is stamped with the CPU time at which it appeared: the learning curves
(validation force MAE against training CPU-hours). CPU time is what is budgeted, so other load on
the machine slows a run without shortening it.

Evaluation (each model in its own Python, benchmarks/peer_worker.py, with the same code):
test energy and force MAE on the 1000 ``test_01`` frames (one ASE call per frame); ms per energy +
forces call and velocity-Verlet MD steps/s on aspirin at 1 thread, measured interleaved (rounds over
the models, one worker process per model, only one running at a time; the ET through its compiled
energy and forces, as ``forcefield-et md`` and the MD runs below use it, except with --quick); and
MD stability under the MDsim protocol (benchmarks/md_stability.py: 500 K Nose-Hoover from test
frame 0, 0.5 fs, collapse at a bond deviation > 0.5 Å, h(r) MAE against the test frames) for
``--md-time-ps`` (300) or ``--md-budget`` (1 CPU-hour) per model, whichever comes first.

Two cores: start one invocation per core (one of them with ``--wait``). Each trains the models the
other is not training (a lock per model under ``runs/peers/training/``) and runs the MD of the trained
models the other is not running (the lock of each MD run folder), so both cores stay busy until the
last MD run ends. The test errors and the interleaved speed rounds of all models are measured by the
invocation that finds every model trained (one at a time); the ``--wait`` one waits for the other's
models and MD runs, so its summary has every result, while one without ``--wait`` leaves what another
invocation is doing to it.

Everything resumable lives under ``runs/peers/`` (ignored); results go to
``benchmarks/results/peers/``: ``peers.json``, ``peers.md``, ``training_curves.png`` and
``md_progress.png``. ``--mdsim-full``: MDsim's own budget instead of the CPU budget (NequIP for
2000 epochs or until early stopping, 300 ps of MD per model without a CPU limit), in
``runs/peers-mdsim/`` and ``benchmarks/results/peers-mdsim/``; with ``--device cuda`` NequIP and
MACE train and every model runs its MD on the GPU (the ET keeps its CPU recipe).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from forcefield_et.files import DirectoryBusyError, DirectoryLock, file_sha256

from .io import write_json_atomic, write_text_atomic
from .paths import DATA_ROOT, checkout_path, repo_relative
from .prepare import NEQUIP_MDSIM, NEQUIP_TINY, TRAIN_FRAMES, VALID_FRAMES, log, nequip_config, write_extxyz

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "peers"
RESULTS = Path(__file__).resolve().parent / "results" / "peers"
DOCS_IMG = REPO / "docs" / "img"
MOLECULE = "aspirin"
ALL_MODELS = ("et-pretrained", "et-scratch", "nequip-mdsim", "nequip-matched", "mace")
DEFAULT_NEQUIP_PYTHON = "/work/peer-venvs/nequip/bin/python"
DEFAULT_MACE_PYTHON = "/work/peer-venvs/mace/bin/python"
WORKER_MARKER = "@@peer@@ "

# NequIP sizes for the step-cost match, from MDsim's down: (layers, l_max, features, radial MLP width)
NEQUIP_LADDER = [(5, 3, 32, 64), (4, 2, 32, 64), (3, 2, 32, 64), (3, 1, 32, 64), (3, 1, 16, 32), (2, 1, 16, 32),
                 (2, 1, 8, 16)]
NEQUIP_LADDER_QUICK = [(2, 1, 8, 16), (1, 1, 4, 8)]
MACE_SMALL = {"hidden_irreps": "32x0e + 32x1o", "r_max": 5.0, "num_interactions": 2, "correlation": 3,
              "num_radial_basis": 8, "batch_size": 5, "valid_batch_size": 10, "lr": 0.01, "ema_decay": 0.99,
              "default_dtype": "float32", "max_num_epochs": 2000}
MACE_TINY = {**MACE_SMALL, "hidden_irreps": "8x0e + 8x1o", "max_num_epochs": 1}


# ------------------------------------------------------------------------------------ budgets
def parse_duration(text: str | None) -> float | None:
    """'2h', '90m', '45s', '1.5h' or a number of seconds -> seconds; 'none' -> None (no limit)."""
    if text is None or str(text).lower() in ("none", "inf", "0"):
        return None
    match = re.fullmatch(r"\s*([0-9.]+)\s*([hms]?)\s*", str(text).lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 2h, 30m, 90s, none)")
    return float(match.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[match.group(2)]


def budget_tag(seconds: float | None) -> str:
    if seconds is None:
        return "nobudget"
    return f"{seconds / 3600:g}h" if seconds >= 3600 else f"{seconds:g}s"


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid``, its live descendants and its reaped children."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: Dict[int, tuple] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        stats[int(entry)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))  # ppid; utime stime cutime cstime
    total, frontier = 0, [pid]
    seen = set()
    while frontier:
        current = frontier.pop()
        if current in seen or current not in stats:
            continue
        seen.add(current)
        total += stats[current][1]
        frontier.extend(child for child, (ppid, _) in stats.items() if ppid == current)
    return total / tick


def _stop(proc: subprocess.Popen) -> None:
    """Kill the trainer's process group at once (SIGKILL). A gentler signal lets a trainer go on
    working past the budget (Lightning finishes epochs after SIGINT); a killed run loses only the
    work since its last checkpoint, which is where it resumes."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


class Probe:
    """What a peer's training has written so far: ``checkpoint()`` returns a marker that changes when
    a new resumable checkpoint appears; ``validations()`` the validation rows seen so far."""

    def checkpoint(self) -> Any:
        raise NotImplementedError

    def validations(self) -> List[Dict[str, Any]]:
        raise NotImplementedError


def run_budgeted(command: List[str], env: Dict[str, str], log_path: Path, state_path: Path,
                 budget_s: float | None, probe: Probe, poll_s: float = 1.0) -> Dict[str, Any]:
    """Run a peer's training command under a CPU budget, resumably (see the module docstring).

    The state file keeps the CPU time at the last checkpoint (where a resumed run restarts), the
    checkpoint events and the validation points, each stamped with the CPU seconds used by then."""
    state = json.loads(state_path.read_text()) if state_path.is_file() else {
        "committed_cpu_s": 0.0, "checkpoints": [], "validations": [], "segments": [], "finished": False}
    if state["finished"]:
        return state
    base = float(state["committed_cpu_s"])
    if budget_s is not None and base >= budget_s:
        state.update(finished=True, stop_reason="cpu budget", cpu_s=base)
        write_json_atomic(state_path, state)
        return state
    # work after the last checkpoint was lost when the run stopped: its validations go too
    state["validations"] = [v for v in state["validations"] if v["cpu_s"] <= base + 1e-6]
    seen = {json.dumps(v["key"]) for v in state["validations"]}
    marker = probe.checkpoint()
    env = {**os.environ, **env}
    started = time.perf_counter()
    with open(log_path, "a") as handle:
        handle.write(f"\n$ {' '.join(command)}\n")
        handle.flush()
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True)
    stopped, used = False, base

    def observe() -> None:
        nonlocal marker
        for row in probe.validations():
            key = json.dumps(row["key"])
            if key not in seen:
                seen.add(key)
                state["validations"].append({**row, "cpu_s": used})
        current = probe.checkpoint()
        if current != marker:
            marker = current
            state["checkpoints"].append({"marker": str(current), "cpu_s": used})
            state["committed_cpu_s"] = used
        write_json_atomic(state_path, state)

    try:
        while proc.poll() is None:
            time.sleep(poll_s)
            try:
                used = base + tree_cpu_seconds(proc.pid)
            except OSError:
                pass
            observe()
            if budget_s is not None and used >= budget_s:
                stopped = True
                _stop(proc)
                break
    except BaseException:
        _stop(proc)
        raise
    proc.wait()
    observe()
    if proc.returncode != 0 and not stopped:
        tail = log_path.read_text()[-3000:]
        state["segments"].append({"start_cpu_s": base, "end_cpu_s": used, "rc": proc.returncode})
        write_json_atomic(state_path, state)
        raise RuntimeError(f"{command[0]} failed (exit {proc.returncode}); see {log_path}:\n{tail}")
    state["segments"].append({"start_cpu_s": base, "end_cpu_s": used, "rc": proc.returncode,
                              "wall_s": time.perf_counter() - started})
    state.update(finished=True, cpu_s=used,
                 stop_reason="cpu budget" if stopped else "trainer finished (early stopping or epoch limit)")
    write_json_atomic(state_path, state)
    return state


def _bin(python: str, name: str) -> str:
    return str(Path(python).parent / name)


def _peer_env(threads: int = 1) -> Dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE",
            "PYTHONPATH": str(REPO)}


# ------------------------------------------------------------------------------------ ET
def train_et(start: str, budget_s: float | None, quick: bool, runs: Path, out: Path) -> Dict[str, Any]:
    """finetune_converged's recipe for ``start`` ('pretrained' or 'scratch'); returns its result."""
    import torch

    from . import finetune_converged as fc
    from .prepare import TINY_ARCHITECTURE

    torch.set_num_threads(1)
    if not quick and budget_s == 3600 * fc.BUDGET_HOURS[1000]:
        runs_dir, results_dir, optim, model = fc.RUNS_DIR, fc.RESULTS_DIR, None, None
        source = f"benchmarks.finetune_converged cell {fc.cell_name(MOLECULE, 1000, start)}"
    else:
        runs_dir = runs / f"et-{budget_tag(budget_s)}"
        results_dir = out / f"et-{budget_tag(budget_s)}"
        optim: Dict[str, Any] | None = {"time_budget_s": budget_s}
        model = None
        if quick:
            optim.update(compile=False, valid_every=10, checkpoint_every=10, log_every=10, warmup_steps=5)
            if budget_s is None:
                optim["max_steps"] = 30
            model = {k: v for k, v in TINY_ARCHITECTURE.items()}
        source = f"finetune_converged recipe, own cell in {runs_dir}"
    log(f"et-{start}: {source} (budget {budget_tag(budget_s)})")
    result = fc.run_cell(MOLECULE, 1000, start, DATA_ROOT, runs_dir, results_dir, optim,
                         test_frames=20 if quick else 1000, model=model)
    path = runs_dir / result["cell"] / "best.pt"
    return {
        "model_path": str(path), "kind": "et", "source": source, "cpu_hours": result["cpu_hours"],
        "stop_reason": result["stop_reason"], "steps": result["steps"], "best_step": result["best_step"],
        "curve": [{"cpu_hours": p["cpu_hours"], "valid_force_mae_meV_A": p["valid_force_mae_meV_A"], "step": p["step"]}
                  for p in result["curve"]],
        "recipe": {**fc.recipe(1000), **(optim or {})}, "architecture": _et_architecture(path),
    }


def _et_architecture(path: Path) -> Dict[str, Any]:
    from forcefield_et.checkpoint import read_checkpoint

    return dict(read_checkpoint(path)["metadata"].get("hyperparameters", {}))


def et_step_cost(quick: bool, steps: int, runs: Path) -> Dict[str, Any]:
    """CPU ms per training step of the ET as finetune_converged trains it (batch 8, compiled step;
    eager and the tiny model with --quick), from train_speed's trainer."""
    import torch

    from .prepare import TINY_ARCHITECTURE
    from .train_speed import make_trainer, timed_block

    torch.set_num_threads(1)
    work = runs / "probe" / "et"
    shutil.rmtree(work, ignore_errors=True)
    model = {k: v for k, v in TINY_ARCHITECTURE.items()} if quick else None
    trainer = make_trainer(MOLECULE, 8, not quick, work, DATA_ROOT, model)
    warm = time.process_time()
    for _ in range(3):
        trainer.train_step()
    warm_cpu = time.process_time() - warm
    block = timed_block(trainer, steps)
    shutil.rmtree(work, ignore_errors=True)
    return {"ms_per_step": 1000 * block["cpu_s"] / steps, "steps": steps, "batch_size": 8, "compiled": not quick,
            "warmup_cpu_s": warm_cpu, "ms_per_frame": 1000 * block["cpu_s"] / steps / 8,
            "parameters": int(sum(p.numel() for p in trainer.model.parameters()))}


# ------------------------------------------------------------------------------------ NequIP
class NequipProbe(Probe):
    def __init__(self, train_dir: Path) -> None:
        self.train_dir = train_dir

    def checkpoint(self) -> Any:
        last = self.train_dir / "last.ckpt"
        return last.stat().st_mtime_ns if last.is_file() else None

    def validations(self) -> List[Dict[str, Any]]:
        return nequip_validations(self.train_dir)


def nequip_validations(train_dir: Path) -> List[Dict[str, Any]]:
    """Per-epoch validation force MAE (meV/Å) from nequip-train's CSV logs (all resumed versions)."""
    rows: Dict[int, Dict[str, Any]] = {}
    for path in sorted(train_dir.glob("csv/version_*/metrics.csv")):
        try:
            with open(path) as handle:
                for row in csv.DictReader(handle):
                    value = row.get("val0_epoch/forces_mae")
                    if value not in (None, "") and row.get("epoch") not in (None, ""):
                        epoch = int(float(row["epoch"]))
                        rows[epoch] = {"key": ["epoch", epoch], "epoch": epoch,
                                       "valid_force_mae_meV_A": 1000 * float(value)}
        except (OSError, ValueError, csv.Error):
            continue
    return [rows[k] for k in sorted(rows)]


def nequip_settings(size: tuple, quick: bool) -> Dict[str, Any]:
    layers, l_max, features, width = size
    base = NEQUIP_TINY if quick else NEQUIP_MDSIM
    return {**base, "num_layers": layers, "l_max": l_max, "num_features": features, "radial_mlp_width": width}


def _type_names() -> List[str]:
    from ase.data import chemical_symbols

    from forcefield_et.data import read_rmd17

    from .prepare import rmd17_train_path

    return [chemical_symbols[v] for v in sorted({int(v) for v in read_rmd17(rmd17_train_path(MOLECULE),
                                                                             max_frames=1).z})]


def nequip_step_costs(python: str, ladder: List[tuple], target_ms: float, quick: bool, runs: Path,
                      steps: int) -> List[Dict[str, Any]]:
    """CPU ms per nequip-train step (batch 5) down the size ladder, until a size is cheaper than
    ``target_ms`` (the smaller ones would be further from it)."""
    import yaml

    root = (runs / "probe" / "nequip").resolve()
    train_xyz, valid_xyz = root / "data" / "train.xyz", root / "data" / "val.xyz"
    write_extxyz(MOLECULE, (0, 50), train_xyz)
    write_extxyz(MOLECULE, (950, 960), valid_xyz)
    measured = []
    for size in ladder:
        settings = nequip_settings(size, quick)
        tag = "-".join(str(v) for v in size)
        run_dir = root / tag
        timings = run_dir / "steps.json"
        if not timings.is_file():
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            config = nequip_config(_type_names(), train_xyz, valid_xyz, settings, max_epochs=1, max_time="00:01:00:00")
            config["trainer"]["limit_train_batches"] = steps + 3
            config["trainer"]["limit_val_batches"] = 1
            config["trainer"]["callbacks"].append({"_target_": "benchmarks.peer_callbacks.StepCPUTimer",
                                                   "path": str(timings), "skip": 3})
            (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            command = [_bin(python, "nequip-train"), "-cp", str(run_dir), "-cn", "config.yaml",
                       f"hydra.run.dir={run_dir / 'train'}"]
            log(f"probe: nequip {tag} (layers, l_max, features, radial width): {steps + 3} steps")
            with open(run_dir / "nequip.log", "w") as handle:
                proc = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                                      env={**os.environ, **_peer_env()})
            if proc.returncode != 0 or not timings.is_file():
                raise RuntimeError(f"nequip-train probe failed; see {run_dir / 'nequip.log'}")
        row = json.loads(timings.read_text())
        measured.append({"size": dict(zip(("num_layers", "l_max", "num_features", "radial_mlp_width"), size)),
                         "ms_per_step": row["median_ms_per_step"], "ms_per_frame": row["median_ms_per_step"] / 5,
                         "parameters": row["parameters"], "steps_timed": len(row["steps_ms"]) - row["skip"]})
        log(f"probe: nequip {tag}: {row['median_ms_per_step']:.1f} CPU ms/step, {row['parameters']} parameters")
        if row["median_ms_per_step"] < target_ms:
            break
    return measured


def choose_matched(costs: List[Dict[str, Any]], target_ms: float) -> Dict[str, Any]:
    """The measured size whose step cost is closest to ``target_ms`` on a log scale."""
    return min(costs, key=lambda c: abs(math.log(c["ms_per_step"] / target_ms)))


def train_nequip(name: str, settings: Dict[str, Any], python: str, budget_s: float | None, quick: bool,
                 runs: Path, device: str) -> Dict[str, Any]:
    import yaml

    root = (runs / f"{name}-{budget_tag(budget_s)}").resolve()
    train_dir, data_dir = root / "train", root / "data"
    root.mkdir(parents=True, exist_ok=True)
    settings_path = root / "settings.json"
    if settings_path.is_file() and json.loads(settings_path.read_text()) != settings:
        raise RuntimeError(f"{root} was trained with other settings ({settings_path}); move it away or use --runs")
    write_json_atomic(settings_path, settings)
    train_xyz, valid_xyz = data_dir / "train.xyz", data_dir / "val.xyz"
    if not train_xyz.is_file():
        write_extxyz(MOLECULE, TRAIN_FRAMES, train_xyz)
        write_extxyz(MOLECULE, VALID_FRAMES, valid_xyz)
    max_epochs = 1 if quick else settings["max_epochs"]
    config = nequip_config(_type_names(), train_xyz, valid_xyz, settings, max_epochs, "30:00:00:00", quick=quick,
                           device=device)
    config["trainer"]["logger"]["flush_logs_every_n_steps"] = 1  # validation rows on disk when they happen
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    command = [_bin(python, "nequip-train"), "-cp", str(root), "-cn", "config.yaml", f"hydra.run.dir={train_dir}"]
    if (train_dir / "last.ckpt").is_file():
        command.append(f"++ckpt_path={train_dir / 'last.ckpt'}")
    log(f"{name}: nequip-train ({settings['num_layers']} layers, l_max {settings['l_max']}, "
        f"{settings['num_features']} features), budget {budget_tag(budget_s)} -> {root}")
    state = run_budgeted(command, _peer_env(), root / "nequip.log", root / "budget_state.json", budget_s,
                         NequipProbe(train_dir))
    best = train_dir / "best.ckpt"
    if not best.is_file() and state["finished"] and (root / "model.ckpt").is_file():
        best = root / "model.ckpt"  # a finished training keeps its best weights only, without the optimiser state
    if not best.is_file():
        raise RuntimeError(f"{name}: no {best} (stopped before its first validation?); see {root / 'nequip.log'}")
    compiled, deployment = nequip_deploy(python, best, root, device)
    curve = [{"cpu_hours": v["cpu_s"] / 3600, "valid_force_mae_meV_A": v["valid_force_mae_meV_A"],
              "epoch": v["epoch"]} for v in state["validations"]]
    return {"model_path": str(compiled), "deployment": deployment, "kind": "nequip", "cpu_hours": state["cpu_s"] / 3600,
            "stop_reason": state["stop_reason"], "epochs": len(curve), "curve": curve, "settings": settings,
            "config": str(root / "config.yaml"), "command": " ".join(command)}


def peer_torch_version(python: str) -> str:
    return subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True,
                          check=True).stdout.strip()


def nequip_deploy(python: str, best: Path, root: Path, device: str) -> tuple[Path, str]:
    """The file the ASE evaluation loads. With torch < 2.10 in the NequIP environment:
    ``nequip-compile --mode torchscript`` -> ``model.nequip.pth`` (what benchmarks/prepare.py makes).
    nequip 0.19 has no TorchScript mode with torch >= 2.10 and its AOTInductor mode is a C++ build
    (minutes) whose own check fails on a non-periodic molecule (NaN stress), so there the best
    checkpoint itself is evaluated, eagerly, by ``NequIPCalculator._from_saved_model``."""
    version = tuple(int(v) for v in re.findall(r"\d+", peer_torch_version(python))[:2])
    if version >= (2, 10):
        weights = root / "model.ckpt"  # best.ckpt without the optimiser and scheduler states
        if not weights.is_file() or weights.stat().st_mtime < best.stat().st_mtime:
            strip = ("import sys, torch\nc = torch.load(sys.argv[1], map_location='cpu', weights_only=False)\n"
                     "for key in ('optimizer_states', 'lr_schedulers', 'loops'):\n    c.pop(key, None)\n"
                     "torch.save(c, sys.argv[2])\n")
            subprocess.run([python, "-c", strip, str(best), str(weights)], cwd=REPO, env={**os.environ, **_peer_env()},
                           check=True)
        return weights, (f"model.ckpt (best.ckpt less its optimiser state), eager, NequIPCalculator._from_saved_model; "
                         f"torch {'.'.join(map(str, version))} in the NequIP environment, where nequip-compile has "
                         "no TorchScript mode")
    compiled = root / "model.nequip.pth"
    targets = {"cpu": compiled, **({"cuda": root / "model.cuda.nequip.pth"} if device == "cuda" else {})}
    for target_device, target in targets.items():
        if not target.is_file() or target.stat().st_mtime < best.stat().st_mtime:
            with open(root / "nequip.log", "a") as handle:
                subprocess.run([_bin(python, "nequip-compile"), str(best), str(target), "--mode", "torchscript",
                                "--device", target_device], stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                               env={**os.environ, **_peer_env()}, check=True)
    return targets.get(device, compiled), "nequip-compile --mode torchscript"


# ------------------------------------------------------------------------------------ MACE
def mace_checkpoints(root: Path) -> List[Path]:
    """mace_run_train's checkpoints (``<name>_run-<seed>_epoch-<N>.pt``) by epoch."""
    files = [p for p in (root / "checkpoints").glob("*_epoch-*.pt")]
    return sorted(files, key=lambda p: int(re.search(r"epoch-(\d+)", p.name).group(1)))


class MaceProbe(Probe):
    def __init__(self, root: Path) -> None:
        self.root = root

    def checkpoint(self) -> Any:
        files = mace_checkpoints(self.root)
        return files[-1].name if files else None

    def validations(self) -> List[Dict[str, Any]]:
        return mace_validations(self.root)


_MACE_EPOCH = re.compile(r"Epoch (\d+):.*?MAE_F=\s*([0-9.eE+-]+)\s*(m?eV\s*/\s*A)")


def mace_validations(root: Path) -> List[Dict[str, Any]]:
    """Validation force MAE per evaluated epoch from mace_run_train's log lines
    ('Epoch N: ... MAE_F=  x meV / A'); the last occurrence of an epoch wins (resumed runs)."""
    rows: Dict[int, Dict[str, Any]] = {}
    for path in sorted((root / "logs").glob("*.log")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for match in _MACE_EPOCH.finditer(text):
            epoch, value, unit = int(match.group(1)), float(match.group(2)), match.group(3).replace(" ", "")
            mae = value if unit.startswith("meV") else 1000 * value
            rows[epoch] = {"key": ["epoch", epoch], "epoch": epoch, "valid_force_mae_meV_A": mae}
    return [rows[k] for k in sorted(rows)]


def mace_arguments(root: Path, settings: Dict[str, Any], device: str, max_epochs: int) -> List[str]:
    return [
        "--name", "mace", "--seed", "123", "--work_dir", str(root), "--log_dir", str(root / "logs"),
        "--model_dir", str(root), "--checkpoints_dir", str(root / "checkpoints"),
        "--results_dir", str(root / "results"), "--downloads_dir", str(root / "downloads"),
        "--train_file", str(root / "data" / "train.xyz"), "--valid_file", str(root / "data" / "val.xyz"),
        "--energy_key", "REF_energy", "--forces_key", "REF_forces", "--E0s", "average",
        "--model", "MACE", "--hidden_irreps", settings["hidden_irreps"], "--r_max", str(settings["r_max"]),
        "--num_interactions", str(settings["num_interactions"]), "--correlation", str(settings["correlation"]),
        "--num_radial_basis", str(settings["num_radial_basis"]),
        "--batch_size", str(settings["batch_size"]), "--valid_batch_size", str(settings["valid_batch_size"]),
        "--lr", str(settings["lr"]), "--ema", "--ema_decay", str(settings["ema_decay"]), "--amsgrad",
        "--max_num_epochs", str(max_epochs), "--eval_interval", "1", "--default_dtype", settings["default_dtype"],
        "--device", device, "--restart_latest", "--save_cpu", "--error_table", "PerAtomMAE",
    ]


def train_mace(settings: Dict[str, Any], python: str, budget_s: float | None, quick: bool, runs: Path,
               device: str) -> Dict[str, Any]:
    root = (runs / f"mace-{budget_tag(budget_s)}").resolve()
    root.mkdir(parents=True, exist_ok=True)
    settings_path = root / "settings.json"
    if settings_path.is_file() and json.loads(settings_path.read_text()) != settings:
        raise RuntimeError(f"{root} was trained with other settings ({settings_path}); move it away or use --runs")
    write_json_atomic(settings_path, settings)
    if not (root / "data" / "train.xyz").is_file():
        write_extxyz(MOLECULE, TRAIN_FRAMES, root / "data" / "train.xyz", keys=("REF_energy", "REF_forces"))
        write_extxyz(MOLECULE, VALID_FRAMES, root / "data" / "val.xyz", keys=("REF_energy", "REF_forces"))
    command = [_bin(python, "mace_run_train"), *mace_arguments(root, settings, device, settings["max_num_epochs"])]
    log(f"mace: mace_run_train ({settings['hidden_irreps']}, {settings['num_interactions']} interactions, "
        f"r_max {settings['r_max']}), budget {budget_tag(budget_s)} -> {root}")
    state = run_budgeted(command, _peer_env(), root / "mace.log", root / "budget_state.json", budget_s,
                         MaceProbe(root))
    model = root / "mace.model"
    checkpoints = mace_checkpoints(root)
    if not checkpoints and not (state["finished"] and model.is_file()):  # a finished training may keep its model only
        raise RuntimeError(f"mace: no checkpoint in {root / 'checkpoints'}; see {root / 'mace.log'}")
    if checkpoints and (not model.is_file() or model.stat().st_mtime < checkpoints[-1].stat().st_mtime):
        # a run stopped at the budget has no exported model: rerun from its (best) checkpoint with
        # no epochs left, which makes mace_run_train load it and write the model file only
        epoch = int(re.search(r"epoch-(\d+)", checkpoints[-1].name).group(1))
        export = [_bin(python, "mace_run_train"), *mace_arguments(root, settings, device, epoch)]
        with open(root / "mace.log", "a") as handle:
            handle.write(f"\n$ {' '.join(export)}\n")
            handle.flush()
            subprocess.run(export, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                           env={**os.environ, **_peer_env()}, check=True)
    if not model.is_file():
        raise RuntimeError(f"mace: {model} was not written; see {root / 'mace.log'}")
    curve = [{"cpu_hours": v["cpu_s"] / 3600, "valid_force_mae_meV_A": v["valid_force_mae_meV_A"],
              "epoch": v["epoch"]} for v in state["validations"]]
    return {"model_path": str(model), "kind": "mace", "cpu_hours": state["cpu_s"] / 3600,
            "stop_reason": state["stop_reason"], "epochs": len(curve), "curve": curve, "settings": settings,
            "command": " ".join(command)}


# ------------------------------------------------------------------------------------ evaluation
class WorkerProcess:
    """A benchmarks.peer_worker process in one model's Python."""

    def __init__(self, name: str, python: str, log_path: Path, threads: int = 1) -> None:
        self.name = name
        self.log = open(log_path, "a")
        self.proc = subprocess.Popen([python, "-m", "benchmarks.peer_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, cwd=REPO, text=True,
                                     env={**os.environ, **_peer_env(threads)})

    def call(self, cmd: str, **arguments: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **arguments}) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(WORKER_MARKER):
                answer = json.loads(line[len(WORKER_MARKER):])
                if not answer["ok"]:
                    raise RuntimeError(f"{self.name}: {cmd} failed: {answer['error']}\n{answer['traceback']}")
                return answer["result"]
        raise RuntimeError(f"{self.name}: worker exited (see {self.log.name})")

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.log.close()


def test_and_speed(trained: Dict[str, Dict[str, Any]], pythons: Dict[str, str], args: argparse.Namespace,
                   runs: Path) -> Dict[str, Any]:
    """Test errors (cached per model file) and the interleaved speed of every trained model."""
    eval_dir = runs / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    workers: Dict[str, WorkerProcess] = {}
    out: Dict[str, Any] = {"models": {}}
    try:
        for name, entry in trained.items():
            worker = WorkerProcess(name, pythons[entry["kind"]], eval_dir / f"{name}.log")
            try:
                loaded = worker.call("load", name=name, kind=entry["kind"], path=str(model_file(entry)),
                                     device=args.device, compile=compiled_et(entry, args))
                digest = file_sha256(model_file(entry))
                cache = eval_dir / f"{name}.test.json"
                stored = json.loads(cache.read_text()) if cache.is_file() else {}
                if stored.get("sha256") != digest or stored.get("frames") != args.test_frames:
                    result = worker.call("test", molecule=MOLECULE, frames=args.test_frames)
                    stored = {"sha256": digest, "frames": args.test_frames, "test": result}
                    write_json_atomic(cache, stored)
            except Exception as error:  # one broken model must not stop the others
                worker.close()
                out["models"][name] = {"error": f"{type(error).__name__}: {error}"}
                log(f"{name}: evaluation failed: {error}")
                continue
            workers[name] = worker
            out["models"][name] = {"model_sha256": digest, "versions": loaded["versions"], "python": loaded["python"],
                                   "compiled": compiled_et(entry, args), "test": stored["test"]}
            log(f"{name}: test force MAE {stored['test']['force_mae_meV_A']:.2f} meV/Å, energy MAE "
                f"{stored['test']['energy_mae_meV']:.2f} meV ({stored['test']['frames']} frames)")
        out["speed"] = interleaved_speed(workers, {n: trained[n] for n in workers}, args, eval_dir)
    finally:
        for worker in workers.values():
            worker.close()
    return out


def md_run_dir(runs: Path, name: str) -> Path:
    """The MD-stability run folder of one model; its lock says which invocation runs it."""
    return runs / "md" / f"{MOLECULE}__{name}"


def run_md(name: str, entry: Dict[str, Any], pythons: Dict[str, str], args: argparse.Namespace,
           runs: Path) -> Dict[str, Any]:
    """One model's MD-stability run (resumed, or read back once finished), in the model's own Python.
    The caller holds the run folder's lock."""
    eval_dir = runs / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(name, pythons[entry["kind"]], eval_dir / f"{name}.log")
    try:
        # the MD run makes its own calculator (compiled where the run is long enough)
        worker.call("load", name=name, kind=entry["kind"], path=str(model_file(entry)), device=args.device)
        return worker.call("md", molecule=MOLECULE, run_dir=str(md_run_dir(runs, name)), time_ps=args.md_time_ps,
                           cpu_budget_s=args.md_budget_s, device=args.device, quiet=False,
                           save_every=args.md_save_every)
    finally:
        worker.close()


def train_model(name: str, summary: Dict[str, Any], args: argparse.Namespace, runs: Path, out: Path) -> Dict[str, Any]:
    """Train (or resume, or read back) one model of ``--models`` with its own tool."""
    if name.startswith("et-"):
        return train_et(name[3:], args.budget_s, args.quick, runs, out)
    if name == "nequip-mdsim":
        settings = dict(NEQUIP_TINY if args.quick else NEQUIP_MDSIM)
        return train_nequip(name, settings, args.nequip_python, args.budget_s, args.quick, runs, args.device)
    if name == "nequip-matched":
        settings = {**(NEQUIP_TINY if args.quick else NEQUIP_MDSIM), **summary["matched_size"]["chosen"]["size"]}
        return train_nequip(name, settings, args.nequip_python, args.budget_s, args.quick, runs, args.device)
    return train_mace(dict(MACE_TINY if args.quick else MACE_SMALL), args.mace_python, args.budget_s, args.quick,
                      runs, args.device)


def model_file(entry: Dict[str, Any]) -> Path:
    """The model file of a trained entry (stored relative to the repository where it lies inside it)."""
    return checkout_path(entry["model_path"])


def with_repo_paths(summary: Dict[str, Any]) -> Dict[str, Any]:
    """``summary`` as it is written: the trained models' files, configs and commands name paths
    inside the repository relative to it, so that the file names no machine's folders."""
    def entry_paths(entry: Dict[str, Any]) -> Dict[str, Any]:
        entry = dict(entry)
        for key in ("model_path", "config"):
            if key in entry:
                entry[key] = repo_relative(entry[key])
        if "command" in entry:
            entry["command"] = entry["command"].replace(f"{REPO}{os.sep}", "")
        return entry

    return {**summary, "trained": {name: entry_paths(e) for name, e in summary.get("trained", {}).items()}}


def with_others_trained(summary: Dict[str, Any], path: Path) -> Dict[str, Any]:
    """``summary`` with the trained models and the evaluation results (test errors, speed, MD runs)
    that another invocation has written to ``path`` since this one read it; this invocation's own
    entries win."""
    if not path.is_file():
        return summary
    on_disk = json.loads(path.read_text())
    merged = dict(summary)
    merged["trained"] = {**on_disk.get("trained", {}), **summary.get("trained", {})}
    theirs, ours = on_disk.get("evaluation", {}), summary.get("evaluation", {})
    if theirs or ours:
        evaluation = {part: {**theirs.get(part, {}), **ours.get(part, {})} for part in ("models", "md")}
        if "speed" in ours or "speed" in theirs:  # one interleaved measurement: never mixed
            evaluation["speed"] = ours.get("speed", theirs.get("speed"))
        merged["evaluation"] = evaluation
    return merged


def compiled_et(entry: Dict[str, Any], args: argparse.Namespace) -> bool:
    """Whether the ET is evaluated through its compiled energy and forces: as its long MD runs (and
    ``forcefield-et md``) run it; not for --quick, where the compilation would outlast the work."""
    return entry["kind"] == "et" and not args.quick


def interleaved_speed(workers: Dict[str, WorkerProcess], trained: Dict[str, Dict[str, Any]],
                      args: argparse.Namespace, eval_dir: Path) -> Dict[str, Any]:
    """Rounds over the models (each in its own worker, one at a time): ms per energy+forces call on
    aspirin and MD steps/s at 1 thread; cached for the same set of model files."""
    key = {name: file_sha256(model_file(entry)) for name, entry in trained.items()}
    rounds, n_calls, min_calls, call_budget_s, warmup, md_steps, md_budget_s = (
        (1, 5, 3, 0.5, 2, 5, 2.0) if args.quick else (3, 30, 10, 1.5, 10, 34, 20.0))
    settings = {"rounds": rounds, "calls": n_calls, "min_calls": min_calls, "call_budget_s": call_budget_s,
                "warmup_calls": warmup, "md_steps_per_round": md_steps, "md_budget_s_per_round": md_budget_s,
                "compiled": sorted(name for name, entry in trained.items() if compiled_et(entry, args))}
    cache = eval_dir / "speed.json"
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("models_sha256") == key and stored.get("settings") == settings:
            return stored
    calls: Dict[str, List[List[float]]] = {name: [] for name in workers}
    md: Dict[str, List[tuple]] = {name: [] for name in workers}
    for index in range(rounds):
        for name, worker in workers.items():
            answer = worker.call("speed", n_calls=n_calls, warmup=warmup if index == 0 else 2, min_calls=min_calls,
                                 call_budget_s=call_budget_s, md_steps=md_steps, md_budget_s=md_budget_s)
            calls[name].append(answer["ms"])
            md[name].append((answer["md_steps"], answer["md_seconds"]))
            log(f"speed round {index + 1}/{rounds}, {name}: {float(np.median(answer['ms'])):.2f} ms/call, "
                f"{answer['md_steps'] / answer['md_seconds']:.1f} MD steps/s")
    rows = {}
    for name in workers:
        medians = [float(np.median(times)) for times in calls[name]]
        rates = [n / s for n, s in md[name]]
        rows[name] = {"ms_per_call": float(np.median(medians)), "ms_per_call_rounds": medians,
                      "md_steps_per_s": float(np.median(rates)), "md_steps_per_s_rounds": rates,
                      "calls": sum(len(t) for t in calls[name]), "md_steps": sum(n for n, _ in md[name])}
    result = {"models_sha256": key, "settings": settings, "threads": 1,
              "structure": "aspirin (forcefield_et.structures)",
              "method": "benchmarks.speed.time_calls and _md_segment in each model's worker, rounds interleaved; "
                        "headline = median over rounds of the per-round median (ms) or rate (steps/s)",
              "load_average": [round(v, 2) for v in os.getloadavg()], "models": rows}
    write_json_atomic(cache, result)
    return result


# ------------------------------------------------------------------------------------ report
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(trained: Dict[str, Dict[str, Any]], path: Path, budget_s: float | None) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (name, entry) in enumerate(trained.items()):
        points = [(p["cpu_hours"], p["valid_force_mae_meV_A"]) for p in entry.get("curve", [])]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, "o-" if len(points) < 30 else "-", ms=3, color=f"C{k}", label=name)
    if budget_s is not None:
        ax.axvline(budget_s / 3600, color="k", lw=0.8, ls="--")
    ax.set_xlabel("training CPU-hours (1 thread)")
    ax.set_ylabel("validation force MAE (meV/Å)")
    ax.set_yscale("log")
    ax.set_title(f"rMD17 {MOLECULE}, 950 training frames, validation frames 950-999", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if any(entry.get("curve") for entry in trained.values()):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_md(md: Dict[str, Dict[str, Any]], path: Path) -> None:
    """Simulated ps against MD CPU-hours: each run's average rate from its start to where it ended;
    a cross marks a collapse."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (name, run) in enumerate(md.items()):
        hours = run.get("md_cpu_s", run["md_wall_s"]) / 3600
        ax.plot([0, hours], [0, run["simulated_ps"]], "-", color=f"C{k}", label=name)
        ax.plot([hours], [run["simulated_ps"]], "x" if run["collapsed"] else "o", color=f"C{k}", ms=8)
    ax.set_xlabel("MD CPU-hours (1 thread)")
    ax.set_ylabel("simulated ps (500 K Nosé–Hoover, 0.5 fs)")
    ax.set_title(f"rMD17 {MOLECULE}, MDsim protocol; x: collapsed, o: stable when stopped", fontsize=10)
    ax.grid(alpha=0.3)
    if md:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stop_text(reason: str) -> str:
    """Why a training stopped, in the table's words: the budget reads the same for every trainer."""
    return "CPU budget" if reason == "cpu budget" or reason.startswith("time budget of") else reason


def table(summary: Dict[str, Any]) -> str:
    lines = ["| model | training CPU-h | stopped by | test force MAE (meV/Å) | test energy MAE (meV) | ms/call "
             "| MD steps/s | MD: stable ps of simulated | h(r) MAE (×1e-4) |", "|---|---|---|---|---|---|---|---|---|"]
    evaluation = summary.get("evaluation", {})
    for name, entry in summary["trained"].items():
        test = evaluation.get("models", {}).get(name, {}).get("test")
        speed = evaluation.get("speed", {}).get("models", {}).get(name)
        md = evaluation.get("md", {}).get(name)
        md_text = "–"
        if md:
            md_text = f"{md['stability_ps']:.2f} of {md['simulated_ps']:.2f}"
            md_text += " (collapsed)" if md["collapsed"] else ""
        lines.append(
            f"| {name} | {entry['cpu_hours']:.2f} | {stop_text(entry['stop_reason'])} "
            f"| {test['force_mae_meV_A']:.2f} | {test['energy_mae_meV']:.2f} " if test else
            f"| {name} | {entry['cpu_hours']:.2f} | {stop_text(entry['stop_reason'])} | – | – ")
        lines[-1] += (f"| {speed['ms_per_call']:.2f} | {speed['md_steps_per_s']:.1f} " if speed else "| – | – ")
        lines[-1] += f"| {md_text} | {md['hr_mae'] * 1e4:.2f} |" if md else f"| {md_text} | – |"
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ driver
def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=ALL_MODELS, default=list(ALL_MODELS))
    parser.add_argument("--budget", default="2h", help="training CPU budget per model (e.g. 2h, 30m, none)")
    parser.add_argument("--md-budget", default="1h", help="MD CPU budget per model (e.g. 1h, none)")
    parser.add_argument("--md-time-ps", type=float, default=None, help="simulated time per model (default 300)")
    parser.add_argument("--md-save-every", type=int, default=100, help="MD steps between saved frames")
    parser.add_argument("--test-frames", type=int, default=None, help="test_01 frames (default all 1000)")
    parser.add_argument("--nequip-python", default=DEFAULT_NEQUIP_PYTHON, help="Python of the NequIP environment")
    parser.add_argument("--mace-python", default=DEFAULT_MACE_PYTHON, help="Python of the MACE environment")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where NequIP/MACE train and every model runs its MD (the ET trains on the CPU)")
    parser.add_argument("--runs", help="resumable state (default runs/peers, --quick runs/peers-quick)")
    parser.add_argument("--out", help="results (default benchmarks/results/peers, --quick runs/peers-quick/results)")
    parser.add_argument("--quick", action="store_true", help="tiny models and budgets (pipeline test)")
    parser.add_argument("--mdsim-full", action="store_true",
                        help="MDsim's budget: no CPU limits, NequIP to 2000 epochs / early stopping, 300 ps MD")
    parser.add_argument("--report", action="store_true", help="train and run nothing; summarise what is there")
    parser.add_argument("--probe-steps", type=int, default=None, help="timed steps per size in the step-cost probe")
    parser.add_argument("--wait", action="store_true",
                        help="another invocation (on another core) shares the training and MD runs: wait for its "
                        "models and runs, then summarise all (without it, what the other does is left to it)")
    parser.add_argument("--wait-poll-s", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    def terminate(signum, frame):  # a SIGTERM stops the peer's trainer too (see run_budgeted)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    if args.mdsim_full:
        args.budget, args.md_budget = "none", "none"
    args.budget_s = parse_duration(args.budget)
    args.md_budget_s = parse_duration(args.md_budget)
    if args.md_time_ps is None:
        args.md_time_ps = 0.1 if args.quick else 300.0
    if args.test_frames is None:
        args.test_frames = 20 if args.quick else 1000
    probe_steps = args.probe_steps or (4 if args.quick else 10)
    suffix = "-quick" if args.quick else ("-mdsim" if args.mdsim_full else "")
    runs = Path(args.runs or (REPO / "runs" / f"peers{suffix}")).resolve()
    out = Path(args.out or (runs / "results" if args.quick else RESULTS.with_name(f"peers{suffix}"))).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    pythons = {"et": sys.executable, "nequip": args.nequip_python, "mace": args.mace_python}

    summary_path = out / "peers.json"
    summary: Dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.setdefault("trained", {})
    summary.setdefault("skipped", {})
    trained: Dict[str, Dict[str, Any]] = {}
    skipped: Dict[str, str] = {}
    for name in args.models:
        kind = "et" if name.startswith("et-") else name.split("-")[0]
        if kind != "et" and not Path(pythons[kind]).is_file():
            skipped[name] = (f"{pythons[kind]} not found: make the {kind} environment (docs/benchmarks.md, "
                             f"'Head-to-head at equal CPU budget') or pass --{kind}-python")
            log(f"{name}: skipped ({skipped[name]})")
    names = [n for n in args.models if n not in skipped]
    if args.mdsim_full:
        unsupported = [n for n in names if n in ("nequip-matched", "mace")]
        for name in unsupported:
            skipped[name] = "not part of MDsim's protocol (--mdsim-full)"
        names = [n for n in names if n not in unsupported]

    if not args.report:
        started = time.perf_counter()
        matched_path = runs / "probe" / "matched.json"  # its own file: parallel invocations share it
        busy: Dict[str, str] = {}  # models another invocation is training now
        probe_lock = DirectoryLock(runs / "probe", "step-cost probe folder")
        if "nequip-matched" in names and "matched_size" not in summary:
            while True:
                try:
                    probe_lock.acquire()  # one probe at a time; a second invocation reads its result
                    break
                except DirectoryBusyError as error:
                    if args.wait:
                        log(f"nequip-matched: waiting for the invocation probing its size ({error})")
                        time.sleep(args.wait_poll_s)
                        continue
                    busy["nequip-matched"] = str(error)
                    names.remove("nequip-matched")
                    log(f"nequip-matched: left to the invocation probing its size ({error})")
                    break
        if matched_path.is_file():
            summary["matched_size"] = json.loads(matched_path.read_text())
        if "nequip-matched" in names and "matched_size" not in summary:
            try:
                et_cost = et_step_cost(args.quick, probe_steps, runs)
                log(f"probe: ET {et_cost['ms_per_step']:.1f} CPU ms/step (batch 8)")
                ladder = NEQUIP_LADDER_QUICK if args.quick else NEQUIP_LADDER
                costs = nequip_step_costs(args.nequip_python, ladder, et_cost["ms_per_step"], args.quick, runs,
                                          probe_steps)
                chosen = choose_matched(costs, et_cost["ms_per_step"])
                summary["matched_size"] = {"et": et_cost, "nequip": costs, "chosen": chosen,
                                           "rule": "closest CPU ms per training step on a log scale (ET batch 8, "
                                                   "NequIP batch 5), one thread; sizes probed from MDsim's down "
                                                   "until one is cheaper than the ET"}
                write_json_atomic(matched_path, summary["matched_size"])
                write_json_atomic(summary_path, with_repo_paths(summary))
            except Exception as error:
                skipped["nequip-matched"] = f"step-cost probe failed: {type(error).__name__}: {error}"
                names.remove("nequip-matched")
                log(f"nequip-matched: skipped ({skipped['nequip-matched']})")
        probe_lock.release()
        summary.setdefault("evaluation", {})
        pending = list(names)  # models this invocation has not trained or read back yet
        md_pending = list(names)  # models whose MD run this invocation has not run or read back yet
        md_seen_busy: set = set()  # MD runs seen under way elsewhere (logged once)
        while True:
            progressed = False
            for name in list(pending):
                # one invocation trains a model at a time: a second one (on another core) takes the next model
                training_lock = DirectoryLock(runs / "training" / f"{name}-{budget_tag(args.budget_s)}",
                                              "peer training")
                try:
                    training_lock.acquire()
                except DirectoryBusyError as error:
                    if name not in busy:
                        log(f"{name}: trained by another invocation ({error})")
                    busy[name] = str(error)
                    continue
                try:
                    entry = train_model(name, summary, args, runs, out)
                    pending.remove(name)
                    busy.pop(name, None)
                    trained[name] = entry
                    summary["trained"][name] = entry
                    write_json_atomic(summary_path, with_repo_paths(with_others_trained(summary, summary_path)))
                    log(f"{name}: trained, {entry['cpu_hours']:.3f} CPU-h ({entry['stop_reason']}), "
                        f"{len(entry['curve'])} validations")
                    progressed = True
                except DirectoryBusyError as error:  # an ET cell that another process trains
                    busy[name] = str(error)
                    log(f"{name}: trained by another process ({error})")
                except Exception as error:
                    pending.remove(name)
                    md_pending.remove(name)
                    skipped[name] = f"training failed: {type(error).__name__}: {error}"
                    log(f"{name}: {skipped[name]}")
                finally:
                    training_lock.release()
            # MD of the trained models, one run at a time, shared with another invocation as the training is;
            # then back to the training, which a stopped invocation may have left
            md_busy: List[str] = []
            for name in [n for n in md_pending if n in trained]:
                md_lock = DirectoryLock(md_run_dir(runs, name), "peer MD run folder")
                try:
                    md_lock.acquire()
                except DirectoryBusyError as error:
                    if name not in md_seen_busy:
                        log(f"{name}: MD run under way in another invocation ({error})")
                        md_seen_busy.add(name)
                    md_busy.append(name)
                    continue
                try:
                    log(f"{name}: MD stability, {args.md_time_ps:g} ps or {budget_tag(args.md_budget_s)} CPU, "
                        "whichever first")
                    summary["evaluation"].setdefault("md", {})[name] = run_md(name, trained[name], pythons, args, runs)
                except Exception as error:
                    summary["evaluation"].setdefault("models", {}).setdefault(name, {})["md_error"] = (
                        f"{type(error).__name__}: {error}")
                    log(f"{name}: MD failed: {error}")
                finally:
                    md_lock.release()
                md_pending.remove(name)
                write_json_atomic(summary_path, with_repo_paths(with_others_trained(summary, summary_path)))
                progressed = True
                break
            if progressed:
                continue
            if not (pending or md_pending) or not args.wait:
                break
            log(f"waiting for {sorted(pending)} (training) and {md_busy} (MD) in another invocation (--wait)")
            time.sleep(args.wait_poll_s)
        summary = with_others_trained(summary, summary_path)
        if busy:
            # the models' test errors and speed are measured together (one interleaved measurement): the
            # invocation that finds them all trained does it
            log(f"test errors and speed left to an invocation that finds {sorted(busy)} trained (e.g. one with "
                "--wait)")
        if md_pending:
            log(f"MD of {sorted(md_pending)} left to the invocation running or training it")
        evaluate_here = bool(trained) and not busy
        evaluation_lock = DirectoryLock(runs / "evaluation", "peer evaluation")
        if evaluate_here:
            try:  # one measurement at a time: its speed rounds are not to be shared
                evaluation_lock.acquire()
            except DirectoryBusyError as error:
                log(f"test errors and speed under way in another invocation ({error})")
                evaluate_here = False
        if evaluate_here:
            try:
                evaluation = test_and_speed(trained, pythons, args, runs)
            finally:
                evaluation_lock.release()
            for name, entry in evaluation["models"].items():  # keep an MD failure noted above
                md_error = summary["evaluation"].get("models", {}).get(name, {}).get("md_error")
                summary["evaluation"].setdefault("models", {})[name] = (
                    {**entry, "md_error": md_error} if md_error else entry)
            summary["evaluation"]["speed"] = evaluation["speed"]
            summary = with_others_trained(summary, summary_path)
        summary["wall_time_s"] = time.perf_counter() - started
    else:  # a rebuild: the models trained and measured stay as they were, and so does their machine
        trained = dict(summary["trained"])
        skipped = {k: v for k, v in skipped.items() if k not in trained}
    summary["skipped"] = {**{k: v for k, v in summary["skipped"].items() if k not in trained}, **skipped}

    from .machine import machine_info

    summary.update({
        "benchmark": "peers", "molecule": MOLECULE, "quick": args.quick, "mdsim_full": args.mdsim_full,
        "protocol": __doc__.split("Data:")[1].split("Everything resumable")[0].strip(),
        "training_budget": budget_tag(args.budget_s), "md_budget": budget_tag(args.md_budget_s),
        "md_time_ps": args.md_time_ps, "test_frames": args.test_frames, "device": args.device,
        "train_frames": f"rmd17_{MOLECULE}_train_01.npz[{TRAIN_FRAMES[0]}:{TRAIN_FRAMES[1]}]",
        "valid_frames": f"rmd17_{MOLECULE}_train_01.npz[{VALID_FRAMES[0]}:{VALID_FRAMES[1]}]",
        "machine": summary["machine"] if args.report and "machine" in summary else machine_info(),
        "created": (summary["created"] if args.report and "created" in summary
                    else time.strftime("%Y-%m-%d %H:%M:%S")),
        "data": "revised MD17 (Christensen & von Lilienfeld 2020), split 01, CC0",
        "figures": {figure: repo_relative(out / f"{figure}.png") for figure in ("training_curves", "md_progress")},
    })
    write_json_atomic(summary_path, with_repo_paths(summary))
    plot_training(summary["trained"], out / "training_curves.png", args.budget_s)
    plot_md(summary.get("evaluation", {}).get("md", {}), out / "md_progress.png")
    if out == RESULTS:  # the documented results: docs/benchmarks.md shows their figures
        for figure in ("training_curves", "md_progress"):
            shutil.copyfile(out / f"{figure}.png", DOCS_IMG / f"peers_{figure}.png")
    markdown = table(summary)
    write_text_atomic(out / "peers.md", markdown)
    print(markdown)
    for name, reason in summary["skipped"].items():
        print(f"skipped {name}: {reason}")
    log(f"wrote {summary_path}")
    return 1 if any(reason.startswith("training failed") for reason in skipped.values()) else 0


if __name__ == "__main__":
    sys.exit(main())


__all__: List[str] = ["parse_duration", "run_budgeted", "tree_cpu_seconds", "choose_matched", "main"]
