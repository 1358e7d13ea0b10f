"""Training throughput: conformations per CPU-second of one fine-tuning step, eager against the
compiled training step (``optim.compile``, ``forcefield-et finetune --compile``), measured
interleaved in one run, with the eager step as it was before the radial basis dropped its
subnormal float32 tails (``eager, subnormal basis``: ``ExpNormalSmearing.exponent_limit`` set to
infinity, the formula without the cut; see :mod:`forcefield_et.model.radial`) as the baseline.

    python -m benchmarks.train_speed                     # aspirin, batch 8, pretrained start
    python -m benchmarks.train_speed --data-parallel 2   # also: compiled, 2 gloo workers (wall clock)
    python -m benchmarks.train_speed --quick             # CI-sized: ethanol, tiny model, few steps
    python -m benchmarks.train_speed --batch-sizes 8 16 32   # compiled step at several batch sizes

Both trainers start from the same weights and see the same batches (the batch of step s is a
function of the seed and s). After the warm-up (the compiled trainer compiles there) they run
alternating blocks of steps; each block's process CPU time is measured, so the ratio holds even
when the other core is busy. The eager step is also split into its phases (data, forward with
the force backward, parameter backward, optimiser, EMA). Writes ``train_speed.json`` and
``train_speed.png`` to ``benchmarks/results/``.

``--data-parallel N`` adds the compiled trainer on N data-parallel workers (gloo, one thread
each, the global batch split between them, as ``torchrun --nproc_per_node N``), timed by the wall
clock against one compiled worker and one eager worker, alternating. Wall-clock figures need N idle
cores: pause other work on the machine while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from forcefield_et.training import Trainer, config_from_dict
from forcefield_et.training.objectives import compute_loss, count_terms

from .io import write_json_atomic
from .machine import machine_info
from .paths import DATA_ROOT, rmd17_file

RESULTS = Path(__file__).resolve().parent / "results"
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
TINY_MODEL = {"hidden_channels": 32, "num_layers": 2, "num_heads": 4, "num_rbf": 16}


def make_trainer(molecule: str, batch_size: int, compile_step: bool, run_dir: Path, data_root: Path,
                 model: Dict[str, Any] | None) -> Trainer:
    """A fine-tuning trainer on rMD17 ``molecule`` (train_01 frames 0-949, validation 950-999)."""
    path = str(rmd17_file(molecule, "train", data_root))
    values: Dict[str, Any] = {
        "run_dir": str(run_dir),
        "sources": [{"name": molecule, "format": "rmd17", "path": path, "objective": "energy_forces",
                     "frames": "0:950", "valid_path": path, "valid_frames": "950:1000"}],
        "optim": {"batch_size": batch_size, "max_steps": 10**9, "warmup_steps": 10, "threads": 1,
                  "compile": compile_step},
    }
    if model is None:
        values["init_from"] = "pretrained"
    else:
        values["model"] = dict(model)
    return Trainer(config_from_dict(values), progress=False)


def timed_block(trainer: Trainer, steps: int) -> Dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    losses = [trainer.train_step()["loss"] for _ in range(steps)]
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall, "losses": losses}


def eager_phases(trainer: Trainer, steps: int) -> Dict[str, float]:
    """Mean CPU milliseconds per phase of the eager step (the same operations as ``train_step``)."""
    totals: Dict[str, float] = {}

    def tick(name: str, start: float) -> float:
        now = time.process_time()
        totals[name] = totals.get(name, 0.0) + now - start
        return now

    for _ in range(steps):
        t = time.process_time()
        batch = trainer._local_batch(trainer.step)
        counts = count_terms(batch, len(trainer.sources))
        t = tick("data", t)
        trainer.optimizer.zero_grad(set_to_none=False)
        output = trainer.model(batch["z"], batch["pos"], batch["batch"], batch.get("cell"))
        t = tick("forward + force backward", t)
        loss, _ = compute_loss(output, batch, trainer.source_weights, trainer.config.objectives, counts)
        loss.backward()
        t = tick("parameter backward", t)
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.config.optim.clip_grad_norm)
        trainer.optimizer.step()
        t = tick("optimiser", t)
        trainer.step += 1
        trainer.averaged.update_parameters(trainer.model)
        tick("EMA", t)
    return {name: 1000 * value / steps for name, value in totals.items()}


BASELINE = "eager, subnormal basis"


def measure(molecule: str, batch_size: int, rounds: int, block: int, warmup: int, data_root: Path,
            model: Dict[str, Any] | None, work_dir: Path) -> Dict[str, Any]:
    trainers = {
        BASELINE: make_trainer(molecule, batch_size, False, work_dir / "baseline", data_root, model),
        "eager": make_trainer(molecule, batch_size, False, work_dir / "eager", data_root, model),
        "compiled": make_trainer(molecule, batch_size, True, work_dir / "compiled", data_root, model),
    }
    # the radial basis without its cut at exp(-60): the trainer's function before the cut
    trainers[BASELINE].model.representation.rbf.exponent_limit = float("inf")
    first_losses = {}
    compile_s = 0.0
    for name, trainer in trainers.items():
        start = time.process_time()
        first_losses[name] = [trainer.train_step()["loss"] for _ in range(warmup)]
        if name == "compiled":
            compile_s = time.process_time() - start
    blocks: Dict[str, List[Dict[str, float]]] = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            blocks[name].append(timed_block(trainer, block))
    result: Dict[str, Any] = {"molecule": molecule, "batch_size": batch_size, "rounds": rounds,
                              "steps_per_block": block, "warmup_steps": warmup,
                              "compiled_warmup_cpu_s": compile_s}
    for name, rows in blocks.items():
        cpu = np.array([r["cpu_s"] for r in rows])
        per_block = batch_size * block / cpu
        result[name] = {
            "conformations_per_cpu_s": float(batch_size * block * len(rows) / cpu.sum()),
            "conformations_per_cpu_s_per_block": per_block.tolist(),
            "ms_per_step": float(1000 * cpu.sum() / (block * len(rows))),
        }
    result["speedup"] = result["compiled"]["conformations_per_cpu_s"] / result["eager"]["conformations_per_cpu_s"]
    result["speedup_over_baseline"] = (result["compiled"]["conformations_per_cpu_s"]
                                       / result[BASELINE]["conformations_per_cpu_s"])
    # the first steps run from the same weights on the same batches: their losses must agree
    first = np.array(first_losses["eager"])
    result["first_step_loss"] = {name: losses[0] for name, losses in first_losses.items()}
    result["first_step_loss_relative_difference"] = float(
        max(abs(losses[0] - first[0]) for losses in first_losses.values()) / abs(first[0])
    )
    result["eager_phases_ms"] = eager_phases(trainers["eager"], max(2, block // 2))
    return result


def measure_batch_sizes(molecule: str, batch_sizes: List[int], rounds: int, conformations_per_block: int,
                        warmup: int, data_root: Path, model: Dict[str, Any] | None, work_dir: Path) -> Dict[str, Any]:
    """Conformations per CPU-second of the compiled step at each batch size, in alternating blocks
    of the same number of conformations (``conformations_per_block`` / batch size steps each)."""
    trainers = {b: make_trainer(molecule, b, True, work_dir / f"batch{b}", data_root, model) for b in batch_sizes}
    for trainer in trainers.values():
        for _ in range(warmup):
            trainer.train_step()
    cpu = {b: 0.0 for b in batch_sizes}
    steps = {b: max(1, conformations_per_block // b) for b in batch_sizes}
    for _ in range(rounds):
        for b, trainer in trainers.items():
            cpu[b] += timed_block(trainer, steps[b])["cpu_s"]
    rows = [{"batch_size": b, "conformations_per_cpu_s": b * steps[b] * rounds / cpu[b],
             "ms_per_step": 1000 * cpu[b] / (steps[b] * rounds)} for b in batch_sizes]
    reference = rows[0]["conformations_per_cpu_s"]
    for row in rows:
        row["ratio_to_first"] = row["conformations_per_cpu_s"] / reference
    return {"compiled": True, "rounds": rounds, "conformations_per_block": conformations_per_block, "rows": rows}


def worker_main(args: argparse.Namespace) -> None:
    """One timed worker (also one rank of a gloo group): warm up, then time ``--rounds`` blocks of
    ``--block`` steps by the wall clock and by process CPU time; rank 0 writes ``--report``."""
    torch.set_num_threads(1)
    model = TINY_MODEL if args.quick else None
    trainer = make_trainer(args.molecule, args.batch_size, args.compile, Path(args.work_dir), Path(args.data_root),
                           model)
    for _ in range(args.warmup):
        trainer.train_step()
    if trainer.world_size > 1:
        torch.distributed.barrier()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.rounds * args.block):
        trainer.train_step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    cpu_total = torch.tensor([cpu], dtype=torch.float64)
    if trainer.world_size > 1:
        torch.distributed.all_reduce(cpu_total)
    if trainer.rank == 0:
        frames = args.batch_size * args.rounds * args.block
        write_json_atomic(Path(args.report), {
            "workers": trainer.world_size, "compiled": args.compile, "steps": args.rounds * args.block,
            "wall_s": wall, "cpu_s": float(cpu_total), "conformations_per_wall_s": frames / wall,
            "conformations_per_cpu_s": frames / float(cpu_total),
        })


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def run_workers(n_workers: int, compile_step: bool, args: argparse.Namespace, work: Path, tag: str) -> Dict[str, Any]:
    """Run :func:`worker_main` in ``n_workers`` processes (a gloo group when more than one)."""
    report = work / f"{tag}.json"
    port = _free_port()
    procs = []
    for rank in range(n_workers):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(key, None)
        if n_workers > 1:
            env.update(WORLD_SIZE=str(n_workers), RANK=str(rank), LOCAL_RANK=str(rank),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        command = [sys.executable, "-m", "benchmarks.train_speed", "--worker", "--report", str(report),
                   "--work-dir", str(work / f"{tag}-rank{rank}"), "--molecule", args.molecule,
                   "--batch-size", str(args.batch_size), "--rounds", str(args.rounds), "--block", str(args.block),
                   "--warmup", str(args.warmup), "--data-root", args.data_root]
        command += ["--compile"] if compile_step else []
        command += ["--quick"] if args.quick else []
        procs.append(subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[1]))
    codes = [proc.wait() for proc in procs]
    if any(codes):
        raise RuntimeError(f"train_speed worker(s) failed with exit codes {codes}")
    return json.loads(report.read_text())


def measure_data_parallel(args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    """Wall-clock throughput of 1 eager, 1 compiled and ``args.data_parallel`` compiled workers,
    in alternating rounds (each a fresh set of processes)."""
    setups = {"eager": (1, False), "compiled": (1, True), f"compiled x{args.data_parallel}": (args.data_parallel, True)}
    rows: Dict[str, List[Dict[str, Any]]] = {name: [] for name in setups}
    for round_index in range(args.data_parallel_rounds):
        for name, (n, compiled) in setups.items():
            rows[name].append(run_workers(n, compiled, args, work, f"{name.replace(' ', '_')}-{round_index}"))
    result: Dict[str, Any] = {}
    for name, runs in rows.items():
        wall = sum(r["wall_s"] for r in runs)
        cpu = sum(r["cpu_s"] for r in runs)
        frames = sum(r["conformations_per_wall_s"] * r["wall_s"] for r in runs)
        result[name] = {"workers": runs[0]["workers"], "conformations_per_wall_s": frames / wall,
                        "conformations_per_cpu_s": frames / cpu, "runs": runs}
    eager = result["eager"]["conformations_per_wall_s"]
    for name in setups:
        result[name]["wall_speedup_over_eager"] = result[name]["conformations_per_wall_s"] / eager
    return result


def steps_table(result: Dict[str, Any]) -> str:
    """Markdown table: conformations per CPU-second, ms per step and the ratio to the baseline, for
    the baseline (eager, subnormal basis), eager and compiled."""
    labels = {BASELINE: "eager, radial basis with subnormal tails (before)", "eager": "eager (double backward)",
              "compiled": "compiled (`--compile`, the default of `finetune`)"}
    base = result[BASELINE]["conformations_per_cpu_s"]
    lines = ["| training step | conformations per CPU-second | ms per step | × before |", "|---|---|---|---|"]
    for name, label in labels.items():
        row = result[name]
        lines.append(f"| {label} | {row['conformations_per_cpu_s']:.1f} | {row['ms_per_step']:.0f} "
                     f"| {row['conformations_per_cpu_s'] / base:.2f} |")
    return "\n".join(lines) + "\n"


def batch_size_table(result: Dict[str, Any]) -> str:
    """Markdown table of ``--batch-sizes``: the compiled step's throughput per batch size."""
    sweep = result["batch_size_sweep"]
    first = sweep["rows"][0]["batch_size"]
    lines = ["| batch size | conformations per CPU-second | ms per step | × batch " + str(first) + " |",
             "|---|---|---|---|"]
    for row in sweep["rows"]:
        lines.append(f"| {row['batch_size']} | {row['conformations_per_cpu_s']:.1f} | {row['ms_per_step']:.0f} "
                     f"| {row['ratio_to_first']:.2f} |")
    return "\n".join(lines) + "\n"


def data_parallel_table(result: Dict[str, Any]) -> str:
    """Markdown table of ``--data-parallel``: wall-clock and CPU throughput per setting."""
    lines = ["| setting | conformations per wall-second | × eager | conformations per CPU-second |",
             "|---|---|---|---|"]
    for name, row in result["data_parallel"].items():
        workers = row["workers"]
        kind = "eager" if name == "eager" else "compiled"
        label = f"{kind}, 1 worker" if workers == 1 else f"{kind}, {workers} data-parallel workers (gloo)"
        lines.append(f"| {label} | {row['conformations_per_wall_s']:.1f} | {row['wall_speedup_over_eager']:.2f} "
                     f"| {row['conformations_per_cpu_s']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parallel = result.get("data_parallel")
    fig, axes = plt.subplots(1, 3 if parallel else 2, figsize=(13.5 if parallel else 9, 3.6))
    left, right = axes[0], axes[1]
    names = [BASELINE, "eager", "compiled"]
    values = [result[n]["conformations_per_cpu_s"] for n in names]
    left.bar(["before", "eager", "compiled"], values, color=["#cccccc", "#999999", "#1f77b4"])
    for x, v in enumerate(values):
        left.text(x, v, f"{v:.1f}", ha="center", va="bottom")
    left.set_ylabel("conformations per CPU-second")
    left.set_title(f"{result['molecule']}, batch {result['batch_size']}: "
                   f"{result['speedup_over_baseline']:.2f}× before")
    phases = result["eager_phases_ms"]
    right.barh(list(phases), list(phases.values()), color="#999999")
    right.set_xlabel("ms per eager step (CPU)")
    right.set_title("eager step, by phase")
    if parallel:
        names = list(parallel)
        values = [parallel[n]["conformations_per_wall_s"] for n in names]
        axes[2].bar(names, values, color=["#999999", "#1f77b4", "#2ca02c"][: len(names)])
        for x, (v, n) in enumerate(zip(values, names)):
            axes[2].text(x, v, f"{v:.0f} ({parallel[n]['wall_speedup_over_eager']:.2f}×)", ha="center", va="bottom")
        axes[2].set_ylabel("conformations per wall-second")
        axes[2].set_ylim(0, 1.15 * max(values))
        axes[2].set_title("data-parallel workers, wall clock")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecule", default="aspirin")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6, help="alternating blocks per trainer")
    parser.add_argument("--block", type=int, default=20, help="steps per block")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps (the compilation)")
    parser.add_argument("--data-root", default=str(DATA_ROOT), help="the shared data folder (holds rmd17/)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--quick", action="store_true", help="ethanol, a tiny model from scratch, 2 x 3 steps")
    parser.add_argument("--data-parallel", type=int, default=0, metavar="N",
                        help="also time the compiled trainer on N gloo workers by the wall clock (needs N idle cores)")
    parser.add_argument("--data-parallel-rounds", type=int, default=2, metavar="R",
                        help="alternating rounds of the wall-clock comparison")
    parser.add_argument("--batch-sizes", nargs="+", type=int, metavar="B",
                        help="only the batch-size sweep of the compiled step (alternating blocks of equal numbers "
                        "of conformations), added to an existing train_speed.json as 'batch_size_sweep'")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.quick:
            args.molecule = "ethanol"
        worker_main(args)
        return {}
    torch.set_num_threads(1)
    model = None
    if args.quick:
        args.molecule, args.rounds, args.block, args.warmup, model = "ethanol", 2, 3, 2, TINY_MODEL
    import tempfile

    if args.batch_sizes:
        path = Path(args.out) / "train_speed.json"
        existing = json.loads(path.read_text()) if path.is_file() else {}
        with tempfile.TemporaryDirectory() as work:
            per_block = max(args.batch_sizes) * args.block
            sweep = measure_batch_sizes(args.molecule, args.batch_sizes, args.rounds, per_block, args.warmup,
                                        Path(args.data_root), model, Path(work))
        sweep["load_average_1min_at_end"] = os.getloadavg()[0]
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {**existing, "batch_size_sweep": sweep, "batch_size_sweep_machine": machine_info()})
        for row in sweep["rows"]:
            print(f"batch {row['batch_size']}: {row['conformations_per_cpu_s']:.1f} conformations per CPU-second "
                  f"({row['ratio_to_first']:.2f}x batch {sweep['rows'][0]['batch_size']})")
        return sweep
    with tempfile.TemporaryDirectory() as work:
        result = measure(args.molecule, args.batch_size, args.rounds, args.block, args.warmup,
                         Path(args.data_root), model, Path(work))
        if args.data_parallel > 1:
            result["data_parallel"] = measure_data_parallel(args, Path(work))
            result["data_parallel_rounds"] = args.data_parallel_rounds
    result["model"] = "pretrained (fine-tuning start)" if model is None else model
    result["load_average_1min_at_end"] = os.getloadavg()[0]  # other work on the machine while it ran
    result["machine"] = machine_info()
    result["threads"] = 1
    out = Path(args.out)
    # measurements this run did not repeat are kept, each with the machine it ran on
    previous_path = out / "train_speed.json"
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else {}
    for key in ("data_parallel", "batch_size_sweep"):
        if key in previous and key not in result:
            result[key] = previous[key]
            result[key + "_machine"] = previous.get(key + "_machine", previous.get("machine"))
            if key == "data_parallel":
                result["data_parallel_rounds"] = previous.get("data_parallel_rounds")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "train_speed.json", result)
    plot(result, out / "train_speed.png")
    if out.resolve() == RESULTS:  # the documentation shows the figure of the recorded run
        shutil.copyfile(out / "train_speed.png", DOCS_IMG / "train_speed.png")
    print(f"{args.molecule}, batch {args.batch_size}: before {result[BASELINE]['conformations_per_cpu_s']:.1f}, "
          f"eager {result['eager']['conformations_per_cpu_s']:.1f}, "
          f"compiled {result['compiled']['conformations_per_cpu_s']:.1f} conformations per CPU-second "
          f"({result['speedup_over_baseline']:.2f}x before; first-step losses differ by "
          f"{result['first_step_loss_relative_difference']:.1e})")
    for name, row in result.get("data_parallel", {}).items():
        print(f"  {name}: {row['conformations_per_wall_s']:.1f} conformations per wall-second "
              f"({row['wall_speedup_over_eager']:.2f}x eager), {row['conformations_per_cpu_s']:.1f} per CPU-second")
    return result


if __name__ == "__main__":
    main()
