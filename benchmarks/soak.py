"""Soak test of resumable runs: ``forcefield-et md`` and ``forcefield-et finetune`` killed with
SIGKILL at random times and started again, checked against an uninterrupted run.

    python -m benchmarks.soak                                  # md and finetune, 5 kills each
    python -m benchmarks.soak --duration 20m --kills 6         # rounds of kills for 20 minutes
    python -m benchmarks.soak --targets md --kills 3 --md-steps 200 --out /tmp/soak

For each target the driver runs the command once without interruption (the reference), then runs
it in rounds: each round starts the command afresh in its own folder, kills it (SIGKILL, the
process it started and nothing else) after a random delay, starts it again (the same command;
``finetune`` with ``--resume`` once the folder holds a checkpoint, as its refusal without it says),
and so on until ``--kills`` kills have landed, then lets it finish. ``--duration`` repeats rounds
until that much time has passed. After every round it checks:

- md: the trajectory has every saved frame once (``steps / interval + 1`` frames), md_log.csv has
  one row per frame at consecutive times (no gap, no duplicate), both are bit-identical to the
  reference (positions, energies, every logged value);
- finetune: metrics.csv has the reference's (step, kind) rows in order, each once, with the same
  values in every column except the timing ones (``time_s``, ``conf_per_s``, ``cpu_hours``), and
  last.pt and best.pt hold bit-identical weights;
- both: no temporary (``*.tmp``) file is left in the run folder, and every launch that was not
  killed exited with status 0.

Kill times: one kill in five at ``startup x U(0, 1.2)`` after the launch (imports, data loading);
the others a random share of the mean time between state writes after the launch's n-th write of
its resumable state (``md_state.npz`` of md, ``last.pt`` of finetune), n uniform in
1 .. state writes / (kills + 1) of the reference (a write: the file modified within one 0.05 s poll;
the start-up and the writes are measured on the reference). Counting state writes rather than
seconds puts every such kill after a saved state, so that the next launch resumes from it, however
loaded the machine is; the kills land in MD and training steps, validation, checkpoint and state
writes.
Results: ``soak.json`` and ``soak.png`` in ``--out``. Run folders go to ``--work`` (``runs/soak``,
deleted at the start).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

from .io import write_json_atomic
from .paths import rmd17_file

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("md", "finetune")
TIMING_COLUMNS = ("time_s", "conf_per_s", "cpu_hours")
STARTUP_KILL_SHARE = 0.2  # kills aimed at the start-up (imports, data loading); the rest at the work


class SoakFailure(AssertionError):
    """A check failed: lost or duplicated frames/rows, a leftover temporary file, a result that
    differs from the uninterrupted run, or a launch that failed."""


@dataclass
class Target:
    """A command to soak: ``first`` starts it in a run folder (and starts it again after a kill until
    the folder holds one of ``resume_when``), ``restart`` continues it there (``{out}`` in either is
    replaced by the folder), and ``check(reference_dir, run_dir)`` compares a finished run with
    the reference."""

    name: str
    first: List[str]
    restart: List[str]
    check: Callable[[Path, Path], Dict[str, Any]]
    resume_when: Sequence[str] = ()
    progress: Sequence[str] = ()  # the resumable state files: kills are aimed by counting their writes


@dataclass
class Launch:
    start_s: float
    end_s: float = 0.0
    killed: bool = False
    exit_status: int | None = None
    phase: str = ""  # when the kill was aimed: "start-up" (from the launch) or "after N writes"


@dataclass
class Round:
    launches: List[Launch] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def kills(self) -> int:
        return sum(launch.killed for launch in self.launches)


# ------------------------------------------------------------------------------------------ checks
def leftover_temporaries(run_dir: Path) -> List[str]:
    """Temporary files (``*.tmp``, hidden or not) anywhere under ``run_dir``."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.name.endswith(".tmp"))


def check_md(reference: Path, run: Path, steps: int, interval: int, timestep_fs: float) -> Dict[str, Any]:
    """Frames and rows of an md run against the reference (see the module docstring)."""
    from ase.io import read

    expected = steps // interval + 1
    frames, ref_frames = read(str(run / "trajectory.traj"), ":"), read(str(reference / "trajectory.traj"), ":")
    with open(run / "md_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    times = np.array([float(r["time_fs"]) for r in rows])
    expected_times = np.arange(expected) * interval * timestep_fs
    problems = []
    if len(frames) != expected:
        problems.append(f"trajectory holds {len(frames)} frames, expected {expected}")
    if len(rows) != expected or not np.array_equal(times, expected_times[: len(times)]):
        duplicates = int(len(times) - len(np.unique(times)))
        problems.append(f"md_log.csv holds {len(rows)} rows ({duplicates} duplicated times), expected {expected} "
                        f"at {interval * timestep_fs:g} fs apart")
    position_diff = max((float(np.abs(a.positions - b.positions).max()) for a, b in zip(frames, ref_frames)),
                        default=float("nan"))
    energy_diff = abs(frames[-1].get_potential_energy() - ref_frames[-1].get_potential_energy())
    log_identical = (run / "md_log.csv").read_bytes() == (reference / "md_log.csv").read_bytes()
    if position_diff != 0.0 or energy_diff != 0.0 or not log_identical:
        problems.append(f"differs from the uninterrupted run: positions by up to {position_diff:.3g} Å, last energy "
                        f"by {energy_diff:.3g} eV, md_log.csv {'identical' if log_identical else 'different'}")
    temporaries = leftover_temporaries(run)
    if temporaries:
        problems.append(f"temporary files left: {temporaries}")
    return {"frames": len(frames), "rows": len(rows), "max_position_diff_A": position_diff,
            "last_energy_diff_eV": energy_diff, "log_identical": log_identical, "temporaries": temporaries,
            "problems": problems}


def _metric_rows(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _weights(path: Path) -> Dict[str, np.ndarray]:
    from forcefield_et.checkpoint import read_checkpoint

    return {k: v.detach().cpu().numpy() for k, v in read_checkpoint(path)["state_dict"].items()}


def check_finetune(reference: Path, run: Path) -> Dict[str, Any]:
    """metrics.csv, last.pt and best.pt of a finetune run against the reference."""
    rows, ref_rows = _metric_rows(run / "metrics.csv"), _metric_rows(reference / "metrics.csv")
    keys, ref_keys = [(r["step"], r["kind"]) for r in rows], [(r["step"], r["kind"]) for r in ref_rows]
    problems = []
    duplicates = len(keys) - len(set(keys))
    if keys != ref_keys:
        missing = sorted(set(ref_keys) - set(keys), key=lambda k: int(k[0]))
        problems.append(f"metrics.csv rows differ from the reference: {len(keys)} rows vs {len(ref_keys)}, "
                        f"{duplicates} duplicated, missing {missing[:5]}")
    value_diff = 0.0
    for row, ref in zip(rows, ref_rows):
        for column, value in ref.items():
            if column in TIMING_COLUMNS or column in ("step", "kind") or value == row.get(column):
                continue
            try:
                value_diff = max(value_diff, abs(float(row.get(column) or "nan") - float(value)))
            except ValueError:
                value_diff = float("inf")
    weight_diff = {}
    for name in ("last.pt", "best.pt"):
        ours, theirs = _weights(run / name), _weights(reference / name)
        weight_diff[name] = max(float(np.abs(ours[k] - theirs[k]).max()) for k in theirs) if set(ours) == set(
            theirs) else float("inf")
    if value_diff != 0.0 or any(d != 0.0 for d in weight_diff.values()):
        problems.append(f"differs from the uninterrupted run: metrics by up to {value_diff:.3g}, weights by "
                        + ", ".join(f"{k} {v:.3g}" for k, v in weight_diff.items()))
    temporaries = leftover_temporaries(run)
    if temporaries:
        problems.append(f"temporary files left: {temporaries}")
    return {"rows": len(rows), "duplicated_rows": duplicates, "max_metric_diff": value_diff,
            "max_weight_diff": weight_diff, "temporaries": temporaries, "problems": problems}


# ------------------------------------------------------------------------------------------ runs
def child_environment() -> Dict[str, str]:
    """The children import this checkout's forcefield_et, single-threaded with passive OpenMP waits."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    return env


def _command(argv: Sequence[str], out: Path) -> List[str]:
    return [sys.executable, "-m", "forcefield_et.cli", *(str(a).replace("{out}", str(out)) for a in argv)]


def _start(argv: Sequence[str], out: Path, log: Path) -> subprocess.Popen:
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(_command(argv, out))}\n")
        handle.flush()
        return subprocess.Popen(_command(argv, out), stdout=handle, stderr=subprocess.STDOUT, env=child_environment(),
                                cwd=str(REPO))


def _failed(target: Target, status: int, log: Path) -> SoakFailure:
    tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
    return SoakFailure(f"{target.name}: a launch exited with status {status}; the end of {log}:\n{tail}")


def _last_write(folder: Path, names: Sequence[str] = ()) -> float:
    """The latest modification time (time.time()) of a file directly in ``folder`` (only the files
    ``names`` when given); 0 if none."""
    latest = 0.0
    try:
        for path in folder.iterdir():
            if names and path.name not in names:
                continue
            try:
                latest = max(latest, path.stat().st_mtime)
            except FileNotFoundError:  # a temporary file renamed while we looked
                pass
    except FileNotFoundError:
        pass
    return latest


def _wait_for_writes(process: subprocess.Popen, out: Path, since: float, count: int | None,
                     names: Sequence[str] = ()) -> int:
    """Until ``process`` has written into ``out`` (only the files ``names`` when given) ``count`` times
    after ``since`` (a time.time(); writes closer than the 0.05 s poll count once), or has ended;
    returns the writes seen."""
    seen, mark = 0, since
    while process.poll() is None and (count is None or seen < count):
        latest = _last_write(out, names)
        if latest > mark:
            seen, mark = seen + 1, latest
        time.sleep(0.05)
    return seen


def run_reference(target: Target, out: Path) -> Dict[str, float]:
    """The uninterrupted run; returns its wall time, the time to its first write into ``out``
    (startup) and how many writes it made (a write: files modified within one 0.05 s poll)."""
    log = out.parent / f"{out.name}.log"
    start, since = time.perf_counter(), time.time()
    process = _start(target.first, out, log)
    _wait_for_writes(process, out, since, 1)
    startup = time.perf_counter() - start
    writes = 1 + _wait_for_writes(process, out, _last_write(out), None)
    process.wait()
    state_writes = _count_state_writes(out, log, target)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise _failed(target, process.returncode, log)
    return {"wall_s": wall, "startup_s": startup, "work_s": max(wall - startup, 1e-3), "writes": writes,
            "state_writes": state_writes}


def _count_state_writes(out: Path, log: Path, target: Target) -> int:
    """How many times the finished reference wrote its resumable state: the saved frames of an md
    run (a state after each), the checkpoints of a training run (rows of metrics.csv at a
    ``--checkpoint-every`` step are not distinguishable, so: steps / checkpoint interval)."""
    if "md_state.npz" in target.progress:
        return max(1, sum(1 for _ in open(out / "md_log.csv")) - 1)
    if "last.pt" in target.progress:
        argv = target.first
        steps = int(argv[argv.index("--steps") + 1])
        every = int(argv[argv.index("--checkpoint-every") + 1])
        return max(1, steps // every)
    return 0


def run_interrupted(target: Target, out: Path, kills: int, delay: Callable[[], Tuple[int, float]]) -> Round:
    """Start, kill, restart, ... ``kills`` times, then run to the end. ``delay()`` says when to kill
    each launch: (0, t) t seconds after it starts; (n, t) t seconds after its n-th write into ``out``
    (counting progress rather than time, so that kills land in the work however loaded the machine is)."""
    log = out.parent / f"{out.name}.log"
    result = Round()
    start = time.perf_counter()
    argv = target.first
    while True:
        launch = Launch(start_s=time.perf_counter() - start)
        result.launches.append(launch)
        since = time.time()
        process = _start(argv, out, log)
        timeout = None
        if result.kills < kills:
            writes, timeout = delay()
            noun = "state writes" if target.progress else "writes"
            launch.phase = f"after {writes} {noun}" if writes else "start-up"
            if writes:
                _wait_for_writes(process, out, since, writes, target.progress)
        try:
            launch.exit_status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)  # only the process this driver started
            process.wait()
            launch.killed = True
            with open(log, "a") as handle:
                handle.write(f"--- killed (SIGKILL) after {time.perf_counter() - start - launch.start_s:.1f} s\n")
        launch.end_s = time.perf_counter() - start
        if launch.killed:
            argv = target.restart if any((out / name).exists() for name in target.resume_when) else target.first
            continue
        if launch.exit_status != 0:
            raise _failed(target, int(launch.exit_status), log)
        break
    result.wall_s = time.perf_counter() - start
    return result


def soak_target(target: Target, work: Path, kills: int, seed: int, duration_s: float) -> Dict[str, Any]:
    """Reference, then rounds of interrupted runs (at least one, more until ``duration_s``), each checked."""
    reference_dir = work / f"{target.name}_reference"
    reference = run_reference(target, reference_dir)
    rng = random.Random(f"{seed}:{target.name}")

    gap = reference["work_s"] / reference["writes"]  # mean time between writes

    def delay() -> Tuple[int, float]:  # one kill in five during start-up, the others into the work
        if rng.random() < STARTUP_KILL_SHARE:
            return 0, reference["startup_s"] * rng.uniform(0, 1.2)
        # about writes / (kills + 1) writes per launch, so that the kills use up only part of the run; with
        # state files named, their writes are counted, so that every such kill lands after a resumable state
        if target.progress:
            per_launch = max(1, round(reference["state_writes"] / (kills + 1)))
            return rng.randint(1, per_launch), reference["work_s"] / reference["state_writes"] * rng.uniform(0, 1)
        return rng.randint(1, max(1, round(reference["writes"] / (kills + 1)))), gap * rng.uniform(0, 1)

    rounds: List[Dict[str, Any]] = []
    start = time.perf_counter()
    while not rounds or time.perf_counter() - start < duration_s:
        run_dir = work / f"{target.name}_round{len(rounds)}"
        result = run_interrupted(target, run_dir, kills, delay)
        checks = target.check(reference_dir, run_dir)
        rounds.append({
            "wall_s": result.wall_s,
            "kills": result.kills,
            "launches": len(result.launches),
            "kill_times_s": [round(launch.end_s, 2) for launch in result.launches if launch.killed],
            "kill_phases": [launch.phase for launch in result.launches if launch.killed],
            "launch_spans_s": [[round(launch.start_s, 2), round(launch.end_s, 2)] for launch in result.launches],
            "resumed_from_saved_state": len(re.findall(r"resum(?:ed|ing) from ",
                                                          (work / f"{run_dir.name}.log").read_text())),
            "checks": checks,
            "passed": not checks["problems"],
        })
        if checks["problems"]:
            break
    return {
        "reference": reference,
        "rounds": rounds,
        "kills": sum(r["kills"] for r in rounds),
        "passed": all(r["passed"] for r in rounds),
        "reference_checks": {"temporaries": leftover_temporaries(reference_dir)},
    }


# ------------------------------------------------------------------------------------------ setup
def make_targets(args: argparse.Namespace, work: Path) -> Dict[str, Target]:
    from ase.build import molecule
    from ase.io import write

    targets = {}
    if "md" in args.targets:
        structure = work / "ethanol.xyz"
        write(str(structure), molecule("CH3CH2OH"))
        md = ["md", str(structure), "--model", args.md_model, "--steps", str(args.md_steps), "--interval",
              str(args.interval), "--timestep", str(args.timestep), "--thermostat", args.thermostat, "--seed", "1",
              "--relax-fmax", "0.1", "--device", "cpu", "--threads", "1", "--no-progress", "--out", "{out}"]
        targets["md"] = Target("md", md, md,
                               lambda ref, run: check_md(ref, run, args.md_steps, args.interval, args.timestep),
                               progress=("md_state.npz",))
    if "finetune" in args.targets:
        train = Path(args.train)
        if not train.is_file():
            raise FileNotFoundError(f"training data not found: {train} (--train)")
        finetune = ["finetune", "--model", "scratch", "--hidden-channels", "16", "--num-layers", "1", "--train",
                    str(train), "--format", "rmd17", "--n-train", "16", "--n-valid-from-train", "8", "--steps",
                    str(args.finetune_steps), "--batch-size", "4", "--valid-every", "5", "--checkpoint-every", "10",
                    "--no-compile", "--device", "cpu", "--threads", "1", "--seed", "0", "--no-progress", "--out",
                    "{out}"]
        # a restart adds --resume once the folder holds a checkpoint (as the refusal without it says); best.pt
        # comes first (validation every 5 steps, last.pt every 10), so kills land in between too
        targets["finetune"] = Target("finetune", finetune, finetune + ["--resume"], check_finetune,
                                     resume_when=("last.pt", "best.pt"), progress=("last.pt",))
    return targets


def plot(summary: Dict[str, Any], path: Path) -> None:
    """One line per round: launches as segments, kills as red crosses, the finish as a green dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = []
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.35 * sum(len(t["rounds"]) for t in summary["targets"].values())))
    y = 0
    for name, target in summary["targets"].items():
        for index, round_ in enumerate(target["rounds"]):
            for start, end in round_["launch_spans_s"]:
                ax.plot([start, end], [y, y], color="C0", lw=3, solid_capstyle="butt")
            for time_s, phase in zip(round_["kill_times_s"], round_["kill_phases"]):
                ax.plot([time_s], [y], "x", color="C1" if phase == "start-up" else "C3", ms=7)
            ax.plot([round_["wall_s"]], [y], "o", color="C2" if round_["passed"] else "C3", ms=6)
            labels.append(f"{name} {index}")
            y += 1
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("time since the round started (s)")
    ax.set_title(f"soak: {summary['kills']} SIGKILLs (x: red during the work, orange during start-up), every round "
                 f"checked against an uninterrupted run ({'all passed' if summary['passed'] else 'FAILED'})",
                 fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def parse_seconds(text: str) -> float:
    """'20m', '90s', '1h' or a number of seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    text = text.strip().lower()
    try:
        return float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 20m, 90s or 1h") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs per round and target (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--duration", type=parse_seconds, default=0.0,
                        help="repeat interrupted rounds until this much time has passed per target (20m, 1h)")
    parser.add_argument("--md-steps", type=int, default=400)
    parser.add_argument("--interval", type=int, default=5, help="md steps between saved frames")
    parser.add_argument("--timestep", type=float, default=0.5, help="md timestep (fs)")
    parser.add_argument("--thermostat", default="langevin", choices=["langevin", "nose-hoover", "nve"])
    parser.add_argument("--md-model", default="rmd17-ethanol", help="model of the md runs (ethanol, 9 atoms)")
    parser.add_argument("--finetune-steps", type=int, default=120)
    parser.add_argument("--train", default=str(rmd17_file("ethanol")),
                        help="training data of the finetune runs (rMD17 format)")
    parser.add_argument("--work", default=str(REPO / "runs" / "soak"), help="run folders (deleted at the start)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder of soak.json, soak.png")
    return parser


def main(argv: List[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.kills < 0 or args.md_steps < args.interval or args.finetune_steps < 10:
        raise SystemExit("soak: --kills must be >= 0, --md-steps >= --interval, --finetune-steps >= 10")
    work, out = Path(args.work), Path(args.out)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    targets = make_targets(args, work)
    results: Dict[str, Any] = {}
    errors: Dict[str, str] = {}
    started = time.perf_counter()

    def run(name: str) -> None:  # the targets run side by side, one thread (and one child process) each
        try:
            results[name] = soak_target(targets[name], work, args.kills, args.seed, args.duration)
        except Exception as error:  # reported in the summary and the exit status
            errors[name] = f"{type(error).__name__}: {error}"

    threads = [threading.Thread(target=run, args=(name,)) for name in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = {
        "command": "python -m benchmarks.soak " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("work", "out")},
        "wall_s": time.perf_counter() - started,
        "load_average": os.getloadavg(),
        "targets": results,
        "errors": errors,
        "kills": sum(t["kills"] for t in results.values()),
        "passed": not errors and all(t["passed"] for t in results.values()),
    }
    write_json_atomic(out / "soak.json", summary)
    plot(summary, out / "soak.png")
    for name, target in results.items():
        for index, round_ in enumerate(target["rounds"]):
            verdict = "passed" if round_["passed"] else "FAILED: " + "; ".join(round_["checks"]["problems"])
            print(f"{name} round {index}: {round_['kills']} kills, {round_['launches']} launches, "
                  f"{round_['wall_s']:.0f} s (reference {target['reference']['wall_s']:.0f} s): {verdict}")
    for name, error in errors.items():
        print(f"{name}: {error}", file=sys.stderr)
    print(f"{summary['kills']} kills in {summary['wall_s']:.0f} s: {'passed' if summary['passed'] else 'FAILED'} "
          f"-> {out / 'soak.json'}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
