"""The trainer on real data: learning, exact resume after SIGKILL, crash-safe checkpoints,
data parallelism (2 gloo processes), run-directory outputs and fine-tuning from a checkpoint.

Every run uses one thread and small models; subprocesses get OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from forcefield_et import build_model, load_model
from forcefield_et.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from forcefield_et.data import read_rmd17
from forcefield_et.evaluation import evaluate_model
from forcefield_et.training import Trainer, config_from_dict, load_config, train
from tests.conftest import shared_path

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL_MODEL = {"hidden_channels": 32, "num_layers": 2, "num_heads": 4, "num_rbf": 16}
TINY_MODEL = {"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8, "cutoff": 4.0}


def subprocess_env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def write_rmd17_npz(path, source, frames):
    """An rMD17-layout npz holding the given frames of ``source`` (used as a validation file)."""
    data = np.load(source)
    np.savez(path, nuclear_charges=data["nuclear_charges"], coords=data["coords"][frames],
             energies=data["energies"][frames], forces=data["forces"][frames])
    return path


# ============================================================================ learning on real data
@pytest.fixture(scope="module")
def ethanol_run(tmp_path_factory):
    """Train a small model from scratch on the first 200 rMD17 ethanol train frames (validation:
    train frames 200-249); evaluate before and after on 200 frames of the TEST split."""
    train_file = shared_path("rmd17", "rmd17_ethanol_train_01.npz")
    test_file = shared_path("rmd17", "rmd17_ethanol_test_01.npz")
    root = tmp_path_factory.mktemp("ethanol")
    valid_file = write_rmd17_npz(root / "ethanol_valid.npz", train_file, np.arange(200, 250))
    values = {
        "run_dir": str(root / "run"),
        "seed": 0,
        "dtype": "float32",
        "init_from": None,
        "model": dict(SMALL_MODEL),
        "sources": [{"name": "ethanol", "format": "rmd17", "path": str(train_file), "frames": "0:200",
                     "objective": "energy_forces", "valid_path": str(valid_file)}],
        "optim": {"batch_size": 8, "max_steps": 300, "lr": 2e-3, "warmup_steps": 20, "valid_every": 100,
                  "checkpoint_every": 100, "log_every": 25, "ema_decay": 0.99, "threads": 1},
    }
    config = config_from_dict(values)
    test = read_rmd17(test_file, max_frames=200)
    start = time.perf_counter()
    trainer = Trainer(config, progress=False)
    trainer.model.eval()
    before = evaluate_model(trainer.model, test)
    trainer.model.train()
    last_valid = trainer.run()
    best = load_model(Path(config.run_dir) / "best.pt")
    after = evaluate_model(best, test)
    return {"config": config, "values": values, "trainer": trainer, "before": before, "after": after,
            "last_valid": last_valid, "test": test, "valid_file": valid_file, "train_file": train_file,
            "seconds": time.perf_counter() - start}


def test_finetune_on_rmd17_ethanol_halves_the_test_force_error(ethanol_run):
    before, after = ethanol_run["before"], ethanol_run["after"]
    assert before["frames"] == after["frames"] == 200
    assert ethanol_run["test"].source.endswith("rmd17_ethanol_test_01.npz")
    # training used exactly the first 200 train frames, never a test frame
    train = ethanol_run["trainer"].sources[0].data
    assert len(train) == 200
    assert np.array_equal(train.pos, read_rmd17(ethanol_run["train_file"], max_frames=200).pos)
    assert len(ethanol_run["trainer"].valid_sets[0]) == 50
    print(f"force MAE on 200 test frames: {before['force_mae_meV_A']:.1f} -> {after['force_mae_meV_A']:.1f} "
          f"meV/Å ({ethanol_run['seconds']:.1f} s)")
    assert after["force_mae_meV_A"] < 0.5 * before["force_mae_meV_A"]
    assert after["force_mae_meV_A"] < 400  # absolute sanity: forces of ethanol are ~1 eV/Å
    # energies were fitted (per-element E0) and learned: far below the ~97,000 eV total energies
    assert after["energy_mae_meV"] < 1000


def test_run_directory_outputs(ethanol_run):
    config, trainer = ethanol_run["config"], ethanol_run["trainer"]
    run_dir = Path(config.run_dir)
    # config.yaml: the configuration used, loadable as a config again
    assert load_config(run_dir / "config.yaml") == config

    # metrics.csv: a train row every log_every steps, a valid row every valid_every steps
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    train_rows = [r for r in rows if r["kind"] == "train"]
    valid_rows = [r for r in rows if r["kind"] == "valid"]
    assert [int(r["step"]) for r in train_rows] == list(range(25, 301, 25))
    assert [int(r["step"]) for r in valid_rows] == [100, 200, 300]
    for r in train_rows:
        assert math.isfinite(float(r["loss"])) and float(r["conf_per_s"]) > 0
        assert float(r["lr"]) == pytest.approx(trainer.schedule.learning_rate(int(r["step"]) - 1), rel=1e-9)
    assert float(train_rows[-1]["loss"]) < float(train_rows[0]["loss"])
    assert "ethanol/force_mae_meV_A" in valid_rows[0]

    # best.pt: an inference checkpoint (no optimiser state) with the EMA weights of the best validation
    best_payload = read_checkpoint(run_dir / "best.pt")
    assert "training_state" not in best_payload
    best_valid = min(float(r["loss"]) for r in valid_rows)
    assert best_payload["metadata"]["validation"]["valid_loss"] == pytest.approx(best_valid, rel=1e-6)
    assert trainer.best_valid == pytest.approx(best_valid, rel=1e-6)
    best = load_model(run_dir / "best.pt")
    assert best.hyperparameters["hidden_channels"] == 32 and not best.training
    assert best_payload["metadata"]["training"]["sources"][0]["frames"] == 200
    if float(valid_rows[-1]["loss"]) == best_valid:  # best at the end: best.pt holds the final EMA
        for ema, p in zip(trainer.ema, best.parameters(), strict=True):
            assert torch.equal(ema, p.detach())

    # last.pt: resumable state at max_steps
    state = read_checkpoint(run_dir / "last.pt")["training_state"]
    assert state["step"] == 300 and len(state["ema"]) == len(list(trainer.model.parameters()))


def test_init_from_checkpoint_starts_from_its_weights_and_refits_reference_energies(ethanol_run, tmp_path):
    # The trained model with its per-element energies E0 zeroed: only the least-squares refit of
    # E0 at start-up can remove the ~-97,000 eV offset of the ethanol energies.
    parent = load_model(Path(ethanol_run["config"].run_dir) / "best.pt")
    with torch.no_grad():
        parent.head.atomic_energies.zero_()
    parent_path = save_checkpoint(tmp_path / "parent.pt", parent, {"name": "parent-model"})

    values = json.loads(json.dumps(ethanol_run["values"]))
    values["model"] = {}
    values["init_from"] = str(parent_path)
    values["run_dir"] = str(tmp_path / "finetune")
    finetune = Trainer(config_from_dict(values), progress=False)
    for (name, p), (_, q) in zip(finetune.model.named_parameters(), parent.named_parameters(), strict=True):
        assert torch.equal(p.detach(), q.detach()), name
    data = finetune.sources[0].data
    error = finetune._predict_energies(data) - data.energy
    assert np.abs(data.energy).min() > 4000  # raw ethanol energies: about -4209 eV (-97,000 kcal/mol)
    assert np.abs(error).mean() < 1.0  # eV: the offset is gone
    assert abs(error.mean()) < 0.05
    assert finetune._metadata()["training"]["parent"] == "parent-model"

    values_scratch = json.loads(json.dumps(ethanol_run["values"]))
    values_scratch["run_dir"] = str(tmp_path / "scratch")
    scratch = Trainer(config_from_dict(values_scratch), progress=False)
    v_finetune, v_scratch = finetune.validate(), scratch.validate()
    assert v_finetune["valid_loss"] < 0.5 * v_scratch["valid_loss"]
    assert v_finetune["ethanol/force_mae_meV_A"] < 0.5 * v_scratch["ethanol/force_mae_meV_A"]


# ============================================================================ exact resume after SIGKILL
def tiny_mixed_config(run_dir, **optim):
    eth = str(shared_path("rmd17", "rmd17_ethanol_train_01.npz"))
    mal = str(shared_path("rmd17", "rmd17_malonaldehyde_train_01.npz"))
    asp = str(shared_path("rmd17", "rmd17_aspirin_train_01.npz"))
    values = {
        "run_dir": str(run_dir),
        "seed": 5,
        "dtype": "float32",
        "model": dict(TINY_MODEL),
        "objectives": {"denoise_fraction": 0.5, "sigma": 0.05, "k": 20.0},
        "sources": [
            {"name": "eth", "format": "rmd17", "path": eth, "frames": "0:30", "objective": "forces",
             "split": "frame", "valid_fraction": 0.2, "ratio": 2},
            {"name": "mal_eq", "format": "rmd17", "path": mal, "frames": "0:20", "objective": "equilibrium",
             "split": "frame", "valid_fraction": 0.2},
            {"name": "asp", "format": "rmd17", "path": asp, "frames": "0:20", "objective": "energy_forces",
             "split": "frame", "valid_fraction": 0.2},
        ],
        "optim": {"batch_size": 6, "max_steps": 150, "lr": 2e-3, "warmup_steps": 5, "valid_every": 10,
                  "checkpoint_every": 3, "log_every": 5, "ema_decay": 0.9, "threads": 1, **optim},
    }
    return values


def read_metrics(path):
    with open(path) as handle:
        return [(r["step"], r["kind"], r["loss"]) for r in csv.DictReader(handle)]


def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    values = tiny_mixed_config(tmp_path / "unused")
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(values))
    killed_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "forcefield_et.cli", "pretrain", "--config", str(config_file),
               "--run-dir", str(killed_dir), "--no-progress"]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    last, step_seen, deadline = killed_dir / "last.pt", -1, time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if last.exists():
                try:
                    step_seen = read_checkpoint(last)["training_state"]["step"]
                except CheckpointError:  # cannot happen with atomic writes, but do not fail the poll on it
                    pass
                if step_seen >= 9:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and step_seen < 9:
            proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-2000:]
    killed_at = read_checkpoint(last)["training_state"]["step"]
    assert 9 <= killed_at < 150, "the run must be killed mid-way"

    # resume in a new process (same command), and train the uninterrupted reference meanwhile
    resume = subprocess.Popen(command, cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        reference = Trainer(config_from_dict(tiny_mixed_config(tmp_path / "reference")), progress=False)
        reference.run()
        out, _ = resume.communicate(timeout=120)
    finally:
        if resume.poll() is None:
            resume.kill()
            resume.wait()
    assert resume.returncode == 0, out[-2000:]

    a = read_checkpoint(killed_dir / "last.pt")
    b = read_checkpoint(tmp_path / "reference" / "last.pt")
    assert a["training_state"]["step"] == b["training_state"]["step"] == 150
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name in a["state_dict"]:
        assert torch.equal(a["state_dict"][name], b["state_dict"][name]), f"{name} differs after resume"
    for x, y in zip(a["training_state"]["ema"], b["training_state"]["ema"], strict=True):
        assert torch.equal(x, y)
    opt_a, opt_b = a["training_state"]["optimizer"]["state"], b["training_state"]["optimizer"]["state"]
    for key in opt_b:
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a[key][field], opt_b[key][field])
    assert a["training_state"]["best_valid"] == b["training_state"]["best_valid"]
    best_a = read_checkpoint(killed_dir / "best.pt")["state_dict"]
    best_b = read_checkpoint(tmp_path / "reference" / "best.pt")["state_dict"]
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_b)
    # the log was truncated at the resume point and continued: same rows, same losses, no duplicates
    assert read_metrics(killed_dir / "metrics.csv") == read_metrics(tmp_path / "reference" / "metrics.csv")


# ============================================================================ crash-safe checkpoint writes
KILL_SERVER = r'''
import io, json, os, random, signal, sys, time
import torch
from forcefield_et import checkpoint as ckpt

root, modes = sys.argv[1], sys.argv[2].split(",")


def child(path, mode, out):
    model = torch.nn.Linear(1000, 2000)  # 2 M parameters, 8 MB per checkpoint
    report = lambda text: os.write(out, (text + "\n").encode())
    for i in range(10**6):
        if i == 2 and mode == "fsync":  # stall after the data is written, before fsync + rename
            def stalled_fsync(fd):
                report("stall")
                time.sleep(600)
            os.fsync = stalled_fsync
        if i == 2 and mode == "half":  # stall with half of the archive written
            real_save = torch.save
            def half_save(obj, handle):
                buffer = io.BytesIO()
                real_save(obj, buffer)
                data = buffer.getvalue()
                handle.write(data[: len(data) // 2])
                handle.flush()
                report("stall")
                time.sleep(600)
            torch.save = half_save
        with torch.no_grad():
            model.weight.fill_(float(i))
            model.bias.fill_(float(i))
        ckpt.save_checkpoint(path, model, {"i": i})
        report(f"saved {i}")


rng = random.Random(0)
results = []
for trial, mode in enumerate(modes):
    path = os.path.join(root, f"trial{trial}", "model.pt")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            child(path, mode, w)
        finally:
            os._exit(1)
    os.close(w)
    reader = os.fdopen(r)
    last = None
    while True:
        line = reader.readline()
        if not line or line.startswith("stall"):
            break
        last = int(line.split()[1])
        if mode == "random":
            time.sleep(rng.uniform(0.0, 0.5))
            break
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    for line in reader:  # saves completed while we slept
        if line.startswith("saved"):
            last = int(line.split()[1])
    reader.close()
    results.append({"path": path, "mode": mode, "last": last})
print(json.dumps(results))
'''


def test_sigkill_during_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    script = tmp_path / "kill_server.py"
    script.write_text(KILL_SERVER)
    modes = ["half", "fsync", "random", "random", "random", "random"]
    result = subprocess.run([sys.executable, str(script), str(tmp_path), ",".join(modes)], cwd=REPO_ROOT,
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = json.loads(result.stdout.strip().splitlines()[-1])
    assert [t["mode"] for t in trials] == modes
    for trial in trials:
        path = Path(trial["path"])
        payload = read_checkpoint(path)  # always a complete, verified checkpoint
        i = payload["metadata"]["i"]
        assert torch.equal(payload["state_dict"]["weight"], torch.full((2000, 1000), float(i)))
        assert torch.equal(payload["state_dict"]["bias"], torch.full((2000,), float(i)))
        leftovers = [p for p in path.parent.iterdir() if p != path]
        assert all(p.name.startswith(".model.pt.") and p.name.endswith(".tmp") for p in leftovers)
        if trial["mode"] == "random":  # the last reported save, or one that finished just before the kill
            assert i in (trial["last"], trial["last"] + 1)
        else:  # killed while writing save #2: #1 is intact, the unfinished temp file never replaced it
            assert trial["last"] == 1 and i == 1
            assert len(leftovers) == 1
            if trial["mode"] == "half":
                with pytest.raises(CheckpointError):
                    read_checkpoint(leftovers[0])


class _FullDisk:
    """A file object on a disk that fills up after ``limit`` bytes."""

    def __init__(self, handle, limit):
        self.handle, self.limit, self.written = handle, limit, 0

    def write(self, data):
        if self.written + len(data) > self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written += len(data)
        return self.handle.write(data)

    def flush(self):
        self.handle.flush()

    def fileno(self):
        return self.handle.fileno()

    def close(self):
        self.handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def _disk_full_torch_save(obj, handle):
    handle.write(b"PK\x03\x04 partial archive")
    raise OSError(errno.ENOSPC, "No space left on device")


def _disk_full_fsync(fd):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["torch.save", "fsync", "file.write"])
def test_disk_full_during_save(tmp_path, monkeypatch, where):
    torch.manual_seed(0)
    old_model = build_model(**TINY_MODEL)
    path = save_checkpoint(tmp_path / "last.pt", old_model, {"generation": "old"})
    old_bytes = path.read_bytes()
    new_model = build_model(**TINY_MODEL)
    with torch.no_grad():
        new_model.head.scale.fill_(3.0)

    if where == "torch.save":
        monkeypatch.setattr(torch, "save", _disk_full_torch_save)
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", _disk_full_fsync)
    else:  # the real failure mode: the file's write() fails inside torch.save's archive writer
        real_fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k), 4096))
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, new_model, {"generation": "new"})
    monkeypatch.undo()
    message = str(info.value)
    assert str(path) in message
    assert "No space left" in message
    assert path.read_bytes() == old_bytes  # unchanged
    payload = read_checkpoint(path)
    assert payload["metadata"]["generation"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


# ============================================================================ data parallel (gloo)
DDP_WORKER = r'''
import json, os, sys
import torch
import torch.distributed as dist
torch.set_num_threads(1)
from forcefield_et.training import Trainer, config_from_dict

values = json.loads(open(sys.argv[1]).read())
trainer = Trainer(config_from_dict(values), progress=False)
assert (trainer.rank, trainer.world_size) == (int(os.environ["RANK"]), 2)
info = trainer.train_step()
batch = trainer._local_batch(0)
torch.save({
    "params": {n: p.detach().clone() for n, p in trainer.model.named_parameters()},
    "grads": {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()},
    "loss": info["loss"], "frames": info["frames"], "n_atoms": batch["n_atoms"].tolist(),
}, os.path.join(sys.argv[2], f"rank{trainer.rank}.pt"))
dist.barrier()
dist.destroy_process_group()
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    eth = str(shared_path("rmd17", "rmd17_ethanol_train_01.npz"))
    mal = str(shared_path("rmd17", "rmd17_malonaldehyde_train_01.npz"))
    asp = str(shared_path("rmd17", "rmd17_aspirin_train_01.npz"))
    values = {
        "run_dir": str(tmp_path / "run"),
        "seed": 1,
        "dtype": "float64",
        "model": dict(TINY_MODEL),
        # zero-force only: denoising noise is drawn per worker, by design not equal to one process
        "objectives": {"denoise_fraction": 0.0},
        "sources": [
            {"name": "eth", "format": "rmd17", "path": eth, "frames": "0:8", "objective": "forces",
             "valid_fraction": 0, "ratio": 2},
            {"name": "mal", "format": "rmd17", "path": mal, "frames": "0:8", "objective": "equilibrium",
             "valid_fraction": 0, "weight": 0.5},
            {"name": "asp", "format": "rmd17", "path": asp, "frames": "0:8", "objective": "energy_forces",
             "valid_fraction": 0, "weight": 2.0},
        ],
        "optim": {"batch_size": 4, "max_steps": 1, "lr": 1e-3, "warmup_steps": 0, "clip_grad_norm": 1e9,
                  "threads": 1},
    }
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(values))
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER)
    port = free_port()
    procs = []
    for rank in range(2):
        env = subprocess_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE=2, RANK=rank,
                             LOCAL_RANK=rank)
        procs.append(subprocess.Popen([sys.executable, str(worker), str(config_file), str(tmp_path)],
                                      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))

    # the single-process reference on the same global batch, meanwhile
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    single = Trainer(config_from_dict(values), progress=False)
    assert single.world_size == 1
    info = single.train_step()
    global_batch = single._local_batch(0)

    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=120)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc in procs:
        assert proc.returncode == 0, "\n".join(o[-3000:] for o in outputs)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    # the global batch of 4 frames (shares 2:1:1) was split 3 + 1, with different atom counts
    assert sorted(r["n_atoms"] for r in ranks) == sorted([[9, 9, 21], [9]])
    assert sum(r["frames"] for r in ranks) == info["frames"] == 4
    assert sorted(sum((r["n_atoms"] for r in ranks), [])) == sorted(global_batch["n_atoms"].tolist())
    for r in ranks:
        assert r["loss"] == pytest.approx(info["loss"], rel=1e-12)  # all-reduced global loss
    for name, p in single.model.named_parameters():
        g = p.grad.detach()
        for r in ranks:
            assert torch.allclose(r["grads"][name], g, rtol=1e-9, atol=1e-12), f"gradient of {name}"
            assert torch.allclose(r["params"][name], p.detach(), rtol=0, atol=1e-6), f"parameter {name}"
    assert any(float(p.grad.abs().max()) > 0 for p in single.model.parameters())


def test_gradients_sum_over_workers_to_the_single_process_gradient():
    """In-process check of the normalisation the DDP path relies on: local losses divided by
    GLOBAL counts add up (losses and gradients) to the single-process loss on the whole batch."""
    from forcefield_et.training.batching import ENERGY_FORCES, EQUILIBRIUM, FORCES
    from forcefield_et.training.objectives import ObjectiveConfig, compute_loss, count_terms, prepare_equilibrium

    g = torch.Generator().manual_seed(0)
    n_atoms = torch.tensor([3, 5, 4, 2, 6])
    total = int(n_atoms.sum())
    batch = {"z": torch.ones(total, dtype=torch.long), "pos": torch.randn(total, 3, generator=g, dtype=torch.float64),
             "forces": torch.randn(total, 3, generator=g, dtype=torch.float64),
             "batch": torch.repeat_interleave(torch.arange(5), n_atoms), "n_atoms": n_atoms,
             "energy": torch.randn(5, generator=g, dtype=torch.float64),
             "objective": torch.tensor([FORCES, EQUILIBRIUM, ENERGY_FORCES, FORCES, ENERGY_FORCES]),
             "source": torch.tensor([0, 1, 2, 0, 2])}
    config = ObjectiveConfig(denoise_fraction=0.0)
    prepare_equilibrium(batch, config, torch.Generator().manual_seed(0))
    out_f = torch.randn(total, 3, generator=g, dtype=torch.float64, requires_grad=True)
    out_e = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    full, _ = compute_loss({"forces": out_f, "energy": out_e}, batch, weights, config, count_terms(batch, 3))
    full_grad = torch.autograd.grad(full, [out_f, out_e])

    def part(frames):
        atoms = torch.cat([torch.nonzero(batch["batch"] == f).flatten() for f in frames])
        sub = {k: batch[k][atoms] for k in ("z", "pos", "forces")}
        sub.update({k: batch[k][frames] for k in ("n_atoms", "energy", "objective", "source", "denoised")})
        sub["batch"] = torch.repeat_interleave(torch.arange(len(frames)), sub["n_atoms"])
        return sub, atoms

    frames_per_rank = [torch.tensor([0, 2, 4]), torch.tensor([1, 3])]
    subs = [part(f) for f in frames_per_rank]
    global_counts = sum(count_terms(s, 3) for s, _ in subs)
    assert torch.equal(global_counts, count_terms(batch, 3))
    summed = 0.0
    grad_f, grad_e = torch.zeros_like(out_f), torch.zeros_like(out_e)
    for (sub, atoms), frames in zip(subs, frames_per_rank, strict=True):
        loss, _ = compute_loss({"forces": out_f[atoms], "energy": out_e[frames]}, sub, weights, config,
                               global_counts)
        gf, ge = torch.autograd.grad(loss, [out_f, out_e], allow_unused=True)
        grad_f += gf if gf is not None else 0
        grad_e += ge if ge is not None else 0
        summed = summed + loss.detach()
    assert torch.allclose(summed, full.detach(), rtol=1e-12)
    assert torch.allclose(grad_f, full_grad[0], rtol=1e-12, atol=1e-15)
    assert torch.allclose(grad_e, full_grad[1], rtol=1e-12, atol=1e-15)


# ============================================================================ small trainer behaviours
def test_learning_rate_schedule(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", max_steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-5)
    trainer = Trainer(config_from_dict(values), progress=False)
    lrs = [trainer.schedule.learning_rate(s) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10], strict=True))  # linear warm-up
    assert all(a >= b for a, b in zip(lrs[10:-1], lrs[11:], strict=True))  # cosine decay
    assert trainer.schedule.learning_rate(100) == pytest.approx(1e-5)


def test_train_step_is_deterministic_and_uses_the_step_batch(tmp_path):
    values = tiny_mixed_config(tmp_path / "run")
    a = Trainer(config_from_dict(values), progress=False)
    b = Trainer(config_from_dict(values), progress=False)
    b1 = a._local_batch(7)
    b2 = b._local_batch(7)
    for key in b1:
        assert torch.equal(b1[key], b2[key]), key
    b8 = a._local_batch(8)
    assert b8["pos"].shape != b1["pos"].shape or not torch.equal(b8["pos"], b1["pos"])
    for _ in range(3):
        a.train_step()
        b.train_step()
    assert a.step == b.step == 3
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))
    # the sources' objectives all contributed
    assert {"forces", "ef_forces", "energy"} <= set(a.train_step()) and a.step == 4



def test_fresh_start_drops_metrics_left_by_an_unsaved_run(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", max_steps=10, checkpoint_every=100, valid_every=100)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    header = "step,kind,lr,loss,time_s,conf_per_s\n"
    (run_dir / "metrics.csv").write_text(header + "5,train,0.001,9.9,1.0,1.0\n50,train,0.001,9.9,1.0,1.0\n")
    train(config_from_dict(values), progress=False)  # no last.pt: a fresh run, not a resume
    rows = read_metrics(run_dir / "metrics.csv")
    assert [step for step, kind, _ in rows if kind == "train"] == ["5", "10"]
    assert all(loss != "9.9" for _, _, loss in rows)


def test_resume_drops_a_metrics_row_cut_short_by_a_kill(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", max_steps=10, checkpoint_every=5, valid_every=100)
    train(config_from_dict(values), progress=False)
    run_dir = tmp_path / "run"
    complete = (run_dir / "metrics.csv").read_text()
    # a kill while appending the row of step 100 left "10" (its step field cut short, which parses as 10)
    (run_dir / "metrics.csv").write_text(complete + "10")
    train(config_from_dict(dict(values, optim=dict(values["optim"], max_steps=10))), progress=False)
    assert (run_dir / "metrics.csv").read_text() == complete


def test_resume_removes_temporary_files_left_by_a_killed_run(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", max_steps=5, checkpoint_every=5, valid_every=5)
    train(config_from_dict(values), progress=False)
    run_dir = tmp_path / "run"
    stale = [run_dir / ".last.pt.k3j2.tmp", run_dir / ".best.pt.x1.tmp", run_dir / "metrics.csv.tmp",
             run_dir / ".learning_curve.png.tmp", run_dir / ".config.yaml.tmp"]
    for path in stale:
        path.write_bytes(b"partial")
    keep = run_dir / "notes.txt"
    keep.write_text("not ours")
    train(config_from_dict(values), progress=False, existing="require")
    assert not any(path.exists() for path in stale)
    assert keep.exists() and sorted(p.name for p in run_dir.glob("*.tmp")) == []


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_again(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", max_steps=6, checkpoint_every=6, valid_every=3)
    reference = tiny_mixed_config(tmp_path / "reference", max_steps=6, checkpoint_every=6, valid_every=3)
    train(config_from_dict(reference), progress=False)
    # killed after the validation of step 3 wrote best.pt, before the first last.pt: a plain restart is
    # refused (the folder holds a run), so --resume must continue it
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").write_text("process 1\n")
    save_checkpoint(run_dir / "best.pt", build_model(**TINY_MODEL), {})
    with pytest.raises(ValueError, match="pass --resume"):
        Trainer(config_from_dict(values), progress=False, existing="refuse")
    train(config_from_dict(values), progress=False, existing="require")
    for name in ("last.pt", "best.pt"):
        ours, theirs = read_checkpoint(run_dir / name)["state_dict"], read_checkpoint(tmp_path / "reference" / name)[
            "state_dict"]
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    with pytest.raises(ValueError, match="nothing to resume"):  # a folder that never held a run
        Trainer(config_from_dict(tiny_mixed_config(tmp_path / "empty")), progress=False, existing="require")


def test_select_by_valid_loss_without_denoise_picks_best_by_the_force_terms(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", max_steps=20, valid_every=10, checkpoint_every=10,
                               select_by="valid_loss_without_denoise")
    trainer = Trainer(config_from_dict(values), progress=False)
    metrics = trainer.validate()
    # the equilibrium source's denoising term is part of valid_loss only
    assert 0.0 < metrics["valid_loss_without_denoise"] < metrics["valid_loss"]
    trainer.run()
    best = read_checkpoint(tmp_path / "run" / "best.pt")["metadata"]["validation"]
    assert trainer.best_valid == pytest.approx(best["valid_loss_without_denoise"])
    # resuming under another selection metric forgets the stored best (a value of the other metric)
    values["optim"].update(select_by="valid_loss", max_steps=30)
    resumed = Trainer(config_from_dict(values), progress=False)
    assert resumed.resume() and resumed.step == 20 and resumed.best_valid == math.inf


def test_valid_force_mae_pools_every_force_source_and_can_select_the_best(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", max_steps=20, valid_every=10, checkpoint_every=10,
                               select_by="valid_force_mae_meV_A")
    trainer = Trainer(config_from_dict(values), progress=False)
    metrics = trainer.validate()
    # ethanol (9 atoms) and aspirin (21 atoms) validation frames, weighted by their force components;
    # the equilibrium source has no reference forces
    components = {source.name: 3 * int(tensors.n_atoms.sum())
                  for source, tensors in zip(trainer.sources, trainer.valid_tensors) if source.name != "mal_eq"}
    pooled = sum(metrics[f"{name}/force_mae_meV_A"] * n for name, n in components.items()) / sum(components.values())
    assert metrics["valid_force_mae_meV_A"] == pytest.approx(pooled, rel=1e-9)
    trainer.run()
    best = read_checkpoint(tmp_path / "run" / "best.pt")["metadata"]["validation"]
    assert trainer.best_valid == pytest.approx(best["valid_force_mae_meV_A"])


def test_select_by_force_mae_without_reference_forces_is_a_clear_error(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", max_steps=4, valid_every=2, select_by="valid_force_mae_meV_A")
    values["sources"] = [values["sources"][1]]  # equilibrium frames only
    with pytest.raises(ValueError, match="no validation frame has reference forces"):
        train(config_from_dict(values), progress=False)


def test_select_by_rejects_unknown_metrics(tmp_path):
    from forcefield_et.training.config import ConfigError

    with pytest.raises(ConfigError, match="select_by"):
        config_from_dict(tiny_mixed_config(tmp_path / "run", select_by="force_mae"))


def test_reference_energy_fit_uses_the_batch_size_and_the_memory_planner(tmp_path, monkeypatch):
    from forcefield_et import runtime
    from forcefield_et.model import Potential

    data_path = str(shared_path("rmd17", "rmd17_ethanol_train_01.npz"))
    torch.manual_seed(0)
    parent = tmp_path / "parent.pt"
    save_checkpoint(parent, build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8))
    values = {
        "run_dir": str(tmp_path / "run"), "init_from": str(parent),
        "sources": [{"name": "ethanol", "path": data_path, "format": "rmd17", "objective": "energy_forces",
                     "frames": "0:10", "valid_fraction": 0.0}],
        "optim": {"batch_size": 3, "max_steps": 1, "compile": False},
    }
    sizes: list = []
    original = Potential.forward

    def recording(self, z, pos, batch=None, cell=None):
        sizes.append(int(batch.max()) + 1)
        return original(self, z, pos, batch, cell)

    monkeypatch.setattr(Potential, "forward", recording)
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: None)
    Trainer(config_from_dict(values), progress=False)
    assert sizes == [3, 3, 3, 1]  # optim.batch_size, not a fixed 64
    sizes.clear()
    per_edge = runtime.estimate_call_memory_bytes(1, 1, 16, 4)
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: 2 * 72 * per_edge / runtime.MEMORY_FRACTION)
    Trainer(config_from_dict(values), progress=False)
    assert sizes == [2] * 5  # two ethanol frames (72 neighbour pairs each) fit


def test_diverged_weights_stop_at_the_validation_instead_of_never_writing_best_pt(tmp_path):
    values = {
        "run_dir": str(tmp_path / "run"), "model": dict(TINY_MODEL),
        "sources": [{"name": "eth", "format": "rmd17", "path": str(shared_path("rmd17", "rmd17_ethanol_train_01.npz")),
                     "frames": "0:10", "objective": "forces", "split": "frame", "valid_fraction": 0.2}],
        "optim": {"batch_size": 4, "max_steps": 1, "valid_every": 1, "compile": False},
    }
    trainer = Trainer(config_from_dict(values), progress=False)
    with torch.no_grad():
        for average in trainer.ema:  # validation uses the weight average
            average.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite validation valid_loss .* at step 1"):
        trainer.run()
    assert not (tmp_path / "run" / "best.pt").exists()


# ---------------------------------------------------------------- device and training domain
def test_device_may_change_when_a_run_is_resumed(tmp_path):
    from forcefield_et.training.run_directory import config_fingerprint

    values = tiny_mixed_config(tmp_path / "run")
    on_cpu = config_from_dict({**values, "optim": {**values["optim"], "device": "cpu"}}).to_dict()
    on_gpu = config_from_dict({**values, "optim": {**values["optim"], "device": "cuda:1"}}).to_dict()
    assert config_fingerprint(on_cpu) == config_fingerprint(on_gpu)
    stored_before_device_existed = json.loads(json.dumps(on_cpu))
    del stored_before_device_existed["optim"]["device"]  # a last.pt written before the setting existed
    assert config_fingerprint(stored_before_device_existed) == config_fingerprint(on_gpu)


def test_a_data_file_named_another_way_resumes_the_same_run(tmp_path):
    from forcefield_et.training.run_directory import config_fingerprint

    values = tiny_mixed_config(tmp_path / "run")
    path = Path(values["sources"][0]["path"]).resolve()

    def fingerprint(spelling: str) -> dict:
        sources = [{**values["sources"][0], "path": spelling}] + values["sources"][1:]
        return config_fingerprint(config_from_dict({**values, "sources": sources}).to_dict())

    roundabout = str(path.parent / ".." / path.parent.name / path.name)  # the same file, named via ".."
    assert fingerprint(str(path)) == fingerprint(roundabout)
    assert fingerprint(str(path)) != fingerprint(str(path.parent / "another.npz"))


def test_bad_device_is_a_clear_error(tmp_path):
    from forcefield_et.training.config import ConfigError

    values = tiny_mixed_config(tmp_path / "run")
    with pytest.raises(ConfigError, match="optim.device must be auto, cpu, cuda or cuda:N"):
        config_from_dict({**values, "optim": {**values["optim"], "device": "tpu"}})
    if not torch.cuda.is_available():
        config = config_from_dict({**values, "optim": {**values["optim"], "device": "cuda"}})
        with pytest.raises(ValueError, match="CUDA is not available"):
            Trainer(config, progress=False)


def test_checkpoints_store_the_training_domain(tmp_path):
    values = tiny_mixed_config(tmp_path / "run", device="cpu")
    trainer = Trainer(config_from_dict(values), progress=False)
    assert trainer.device == torch.device("cpu")
    expected = {"elements": [1, 6, 8], "compositions": ["C2H6O", "C3H4O2", "C9H8O4"]}
    assert trainer.training_domain == expected  # ethanol, malonaldehyde, aspirin
    trainer.save_last()
    assert read_checkpoint(tmp_path / "run" / "last.pt")["metadata"]["training_domain"] == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the CPU paths are tested above)")
def test_training_on_cuda_matches_cpu_and_its_checkpoint_loads_on_cpu(tmp_path):
    losses = {}
    for device in ("cpu", "cuda"):
        values = tiny_mixed_config(tmp_path / device, device=device, max_steps=4, checkpoint_every=4, valid_every=4)
        trainer = Trainer(config_from_dict(values), progress=False)
        assert next(trainer.model.parameters()).device.type == device
        losses[device] = [trainer.train_step()["loss"] for _ in range(4)]
        assert trainer.ema[0].device.type == device
        trainer.save_last()
        metrics = trainer.validate()
        assert math.isfinite(metrics["valid_loss"])
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-3)  # float32 noise
    model = load_model(tmp_path / "cuda" / "last.pt", device="cpu")  # saved from the GPU, loaded on CPU
    assert next(model.parameters()).device.type == "cpu"
    resumed = Trainer(config_from_dict(tiny_mixed_config(tmp_path / "cuda", device="cpu", max_steps=4)), progress=False)
    assert resumed.resume() and resumed.step == 4


# ============================================================================ stress labels
def write_teacher_boxes(path: Path, n_frames: int, seed: int) -> None:
    """Periodic boxes of two water-like molecules (4.5 Å cube) labelled with energy, forces and stress
    by a randomly initialised teacher potential, written as ASE extxyz."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    torch.manual_seed(1)
    teacher = build_model(**TINY_MODEL).double().eval()
    rng = np.random.default_rng(seed)
    molecule = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    frames = []
    for _ in range(n_frames):
        pos = np.concatenate([molecule, molecule + [2.3, 2.2, 2.4]]) + rng.normal(scale=0.08, size=(6, 3))
        atoms = Atoms("OH2OH2", positions=pos, cell=np.eye(3) * 4.5, pbc=True)
        out = teacher(torch.as_tensor(atoms.numbers), torch.as_tensor(pos), None,
                      torch.as_tensor(atoms.cell.array).unsqueeze(0))
        atoms.calc = SinglePointCalculator(atoms, energy=float(out["energy"][0].detach()),
                                           forces=out["forces"].detach().numpy(),
                                           stress=out["stress"][0].detach().numpy())
        frames.append(atoms)
    write(path, frames, format="extxyz")


def test_fine_tuning_on_stress_labels_learns_the_stress(tmp_path):
    """extxyz stress labels (ASE's sign, eV/Å³) enter the loss as the virial per atom; validation
    reports the stress MAE, and the stress term lowers it well below where the same run without
    it ends."""
    data = tmp_path / "boxes.extxyz"
    write_teacher_boxes(data, 40, seed=0)

    def run(stress_weight: float, name: str) -> tuple[dict, dict]:
        values = {
            "run_dir": str(tmp_path / name), "seed": 0, "dtype": "float32", "model": dict(TINY_MODEL),
            "objectives": {"energy_weight": 1.0, "force_weight": 1.0, "stress_weight": stress_weight},
            "sources": [{"name": "boxes", "format": "ase", "path": str(data), "objective": "energy_forces",
                         "split": "frame", "valid_fraction": 0.25}],
            "optim": {"batch_size": 4, "max_steps": 120, "lr": 3e-3, "warmup_steps": 5, "valid_every": 60,
                      "checkpoint_every": 1000, "log_every": 20, "threads": 1, "compile": False},
        }
        trainer = Trainer(config_from_dict(values), progress=False)
        before = trainer.validate()
        return before, trainer.run()

    before, with_stress = run(1e3, "with")
    _, without = run(0.0, "without")
    key = "boxes/stress_mae_meV_A3"
    assert before[key] > 0 and with_stress[key] < 0.5 * before[key]
    assert with_stress[key] < 0.5 * without[key], (before[key], with_stress[key], without[key])
    with open(tmp_path / "with" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert any(r["kind"] == "train" and float(r["train/stress"] or 0) > 0 for r in rows)
    assert any(r["kind"] == "valid" and r[key] for r in rows)


def test_periodic_frames_train_with_molecular_replay_frames(tmp_path):
    """A periodic fine-tuning source beside a molecular (non-periodic) replay source: their frames
    share every batch."""
    data = tmp_path / "boxes.extxyz"
    write_teacher_boxes(data, 12, seed=1)
    ethanol = str(shared_path("rmd17", "rmd17_ethanol_train_01.npz"))
    values = {
        "run_dir": str(tmp_path / "run"), "seed": 0, "dtype": "float32", "model": dict(TINY_MODEL),
        "sources": [{"name": "boxes", "format": "ase", "path": str(data), "objective": "energy_forces",
                     "split": "frame", "valid_fraction": 0.25},
                    {"name": "replay", "format": "rmd17", "path": ethanol, "frames": "0:12", "objective": "forces",
                     "split": "frame", "valid_fraction": 0.25}],
        "optim": {"batch_size": 4, "max_steps": 4, "warmup_steps": 1, "valid_every": 4, "checkpoint_every": 4,
                  "log_every": 1, "threads": 1, "compile": False},
    }
    trainer = Trainer(config_from_dict(values), progress=False)
    batch = trainer._local_batch(0)
    assert batch["cell"].shape[0] == len(batch["n_atoms"]) and set(batch["source"].tolist()) == {0, 1}
    last = trainer.run()
    assert math.isfinite(last["valid_loss"]) and last["replay/force_mae_meV_A"] > 0
    assert last["boxes/stress_mae_meV_A3"] > 0
