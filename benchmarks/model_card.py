"""The model card of the bundled ``pretrained`` checkpoint: ``docs/model_card.md``, its
training-curve plot and the results file the card's figures are rendered from.

    python -m benchmarks.model_card [--model pretrained] [--metrics runs/pretrain_mixed/metrics.csv]
                                    [--card configs/pretrained_mixed_card.yaml]

Every figure is read from the checkpoint's metadata (stored by the trainer at the validation that
selected it) or derived from the run's metrics log, and written to
``benchmarks/results/model_card.json``; the card's tables are rendered from that file (and
checked against it by ``python -m benchmarks.docs_tables``, like every measured table of the docs).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List

from .io import write_json_atomic, write_text_atomic
from .paths import repo_relative

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
RESULT = REPO_ROOT / "benchmarks" / "results" / "model_card.json"
STIFFNESS = REPO_ROOT / "benchmarks" / "results" / "denoise_stiffness.json"


def read_metrics(path: Path) -> List[Dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def plot_curves(rows: List[Dict[str, str]], path: Path) -> List[str]:
    """Training loss and per-source validation force MAE against step; returns the source names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r["kind"] == "train"]
    valid = [r for r in rows if r["kind"] == "valid"]
    keys = sorted(
        {
            k
            for r in valid
            for k, v in r.items()
            if v and (k.endswith("force_mae_meV_A") or k.endswith("eq_force_norm_meV_A"))
        }
    )
    fig, (ax_loss, ax_valid) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.semilogy([int(r["step"]) for r in train], [float(r["loss"]) for r in train], lw=0.8)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    for key in keys:
        points = [(int(r["step"]), float(r[key])) for r in valid if r.get(key)]
        ax_valid.semilogy(*zip(*points), "o-", ms=3, label=key.replace("_meV_A", ""))
    ax_valid.set_xlabel("step")
    ax_valid.set_ylabel("validation (meV/Å)")
    ax_valid.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return keys


def schedule_change(train_rows: List[Dict[str, str]], warmup_steps: int) -> Dict[str, Any] | None:
    """The logged step at which the learning rate fell by more than half from one log line to the
    next after the warm-up (a step budget lowered during the run: the cosine follows the new
    budget), with the rates before and after; ``None`` for a smooth schedule."""
    rates = [(int(r["step"]), float(r["lr"])) for r in train_rows if r.get("lr")]
    for (_, before), (step, after) in zip(rates, rates[1:]):
        if step > warmup_steps and after < 0.5 * before:
            return {"step": step, "lr_before": before, "lr_after": after}
    return None


def holdout_note(config: Dict[str, Any]) -> str:
    """How the run's validation frames were held out, from its sources' ``split`` settings."""
    sources = config.get("sources", [])
    by_frame = [s["name"] for s in sources if s.get("split") == "frame"]
    by_molecule = [s["name"] for s in sources if s.get("split", "molecule") != "frame"]
    note = "Validation holds out ~5% of each source"
    if by_molecule:
        note += (f": by molecule ({', '.join(by_molecule)}; the same molecule ids in every source that shares "
                 "a file)")
    if by_frame:
        note += f"{';' if by_molecule else ':'} by frame ({', '.join(by_frame)})"
    return note + "."


def _last_cpu_hours(rows: List[Dict[str, str]]) -> float | None:
    hours = [float(r["cpu_hours"]) for r in rows if r.get("cpu_hours")]
    return hours[-1] if hours else None


def collect(model: str, metrics: Path, card_file: Path) -> Dict[str, Any]:
    """Everything the card shows, from the checkpoint's metadata, the run's metrics log and the
    card file the checkpoint was exported with (``card_file``: its path is quoted, not read)."""
    from forcefield_et.checkpoint import read_checkpoint
    from forcefield_et.elements import symbol
    from forcefield_et.registry import resolve_model_path

    path = Path(resolve_model_path(model))
    meta = read_checkpoint(path)["metadata"]
    training = meta.get("training", {})
    config = training.get("config", {})
    optim = config.get("optim", {})
    step = int(training.get("step") or 0)
    rows = read_metrics(metrics)
    train_rows = [r for r in rows if r["kind"] == "train" and int(r["step"]) <= step]
    rates = sorted(float(r["conf_per_s"]) for r in train_rows if r.get("conf_per_s"))
    median_rate = rates[len(rates) // 2] if rates else None
    batch_size = int(optim.get("batch_size", 1))
    stiffness = json.loads(STIFFNESS.read_text()) if STIFFNESS.exists() else None
    run_dir = Path(config.get("run_dir") or metrics.parent)
    return {
        "model": model,
        "checkpoint": repo_relative(path),
        "checkpoint_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "file_size_MB": path.stat().st_size / 1e6,
        "metrics_log": str(metrics),
        "reproduce": {"config": f"configs/{run_dir.name}.yaml", "run_dir": str(run_dir), "card": str(card_file)},
        "holdout": holdout_note(config),
        "description": meta.get("description", ""),
        "elements": [symbol(z) for z in meta["hyperparameters"]["elements"]],
        "hyperparameters": {k: v for k, v in meta["hyperparameters"].items() if k != "elements"},
        "level_of_theory": meta.get("level_of_theory", ""),
        "limits": meta.get("limits", ""),
        "step": step,
        "run_last_step": max((int(r["step"]) for r in rows), default=step),
        # CPU time the trainer measured (validation included), where the log has it
        "cpu_hours_at_step": _last_cpu_hours([r for r in rows if int(r["step"]) <= step]),
        "run_cpu_hours": _last_cpu_hours(rows),
        "optim": optim,
        "objectives": config.get("objectives", {}),
        "sources": training.get("sources", []),
        "validation": meta.get("validation", {}),
        "median_conformations_per_s": median_rate,
        "training_hours_at_median_rate": step * batch_size / median_rate / 3600 if median_rate else None,
        "schedule_change": schedule_change(train_rows, int(optim.get("warmup_steps", 0))),
        "denoise_stiffness": stiffness and {k: stiffness[k] for k in ("frames", "k_global_eV_per_A2",
                                                                      "k_median_eV_per_A2")},
    }


def summary(card: Dict[str, Any]) -> str:
    """The card's summary list."""
    from .docs_tables import scientific

    h, optim = card["hyperparameters"], card["optim"]
    step, max_steps = card["step"], int(optim.get("max_steps", card["step"]))
    lines = [
        f"- **Description.** {card['description']}",
        f"- **Elements.** {' '.join(card['elements'])}",
        f"- **Architecture.** Equivariant Transformer, {h['hidden_channels']} hidden channels, {h['num_layers']} "
        f"layers, {h['num_heads']} heads, {h['num_rbf']} exp-normal RBF, cosine cutoff {h['cutoff']} Å; file size "
        f"{card['file_size_MB']:.1f} MB.",
        f"- **Training state.** EMA weights at step {step:,} of {max_steps:,} (batch {optim.get('batch_size')}, "
        f"AdamW lr {optim.get('lr')} with {optim.get('warmup_steps')} warm-up steps and {optim.get('schedule')} "
        f"decay to {optim.get('min_lr'):g}, EMA {optim.get('ema_decay')}, gradient clip "
        f"{optim.get('clip_grad_norm')}).",
    ]
    change = card.get("schedule_change")
    if change:
        lines.append(
            f"- **Schedule.** The step budget was lowered to {max_steps:,} at step {change['step']:,} and the "
            f"cosine follows the budget, so the learning rate drops from {scientific(change['lr_before'])} to "
            f"{scientific(change['lr_after'])} at that step and anneals to {scientific(optim['min_lr'], 0)} over "
            f"the last {max_steps - change['step']:,} steps (the config as committed runs the plain cosine to "
            f"{max_steps:,} steps). The denoising term of the validation loss rose over the preceding "
            f"validations while every validation force error fell, so selection uses "
            f"`{optim.get('select_by', 'valid_loss')}` from that step on."
        )
    if card.get("training_hours_at_median_rate"):
        last = int(card.get("run_last_step", step))
        if last > step:
            after = (f"; the run went on to step {last:,}"
                     + (f" of {max_steps:,}" if last < max_steps else "") + " without a lower selection loss.")
        else:
            after = f"; {max_steps - step:,} steps of the budget remain." if max_steps > step else "."
        if card.get("cpu_hours_at_step"):
            spent = (f"{card['cpu_hours_at_step']:.1f} CPU-hours to reach step {step:,} (measured by the trainer, "
                     f"validation included; {card['run_cpu_hours']:.1f} for the whole run) on one core of a 2-core "
                     f"AMD EPYC, {card['median_conformations_per_s']:.0f} conformations/s in the median logged "
                     "training window")
        else:
            spent = (f"About {card['training_hours_at_median_rate']:.1f} h to reach step {step:,} on one core of a "
                     f"2-core AMD EPYC, at the median throughput of the logged training windows "
                     f"({card['median_conformations_per_s']:.0f} conformations/s; validation excluded)")
        lines.append(f"- **Training time.** {spent}" + after)
    lines += [
        f"- **Checkpoint selection.** The EMA weights with the lowest `{optim.get('select_by', 'valid_loss')}` "
        f"over the validations every {optim.get('valid_every')} steps.",
        f"- **Level of theory.** {card['level_of_theory']}",
        f"- **Known limits.** {card['limits']}",
    ]
    return "\n".join(lines) + "\n"


def data_table(card: Dict[str, Any]) -> str:
    """The sources with their objectives, and the equilibrium objectives' constants."""
    objectives, fit = card["objectives"], card.get("denoise_stiffness")
    lines = ["| source | frames (train) | objective | loss weight | share of batch |", "|---|---|---|---|---|"]
    for source in card["sources"]:
        lines.append(f"| {source['name']} | {source['frames']:,} | {source['objective']} | {source['weight']} "
                     f"| {source['ratio']} |")
    fit_text = (f"`python -m benchmarks.denoise_stiffness`: global fit {fit['k_global_eV_per_A2']:.1f} eV/Å², "
                f"median over {fit['frames']:,} frames {fit['k_median_eV_per_A2']:.1f} eV/Å²"
                if fit else "`python -m benchmarks.denoise_stiffness`")
    lines += [
        "",
        f"Equilibrium sources: a fraction {objectives.get('denoise_fraction')} of their frames in each batch is "
        f"perturbed with ε ~ N(0, σ²), σ = {objectives.get('sigma')} Å, and trained toward the restoring force "
        f"−k·ε with k = {objectives.get('k')} eV/Å² (weight {objectives.get('denoise_weight')}); the others are "
        f"trained to zero force (weight {objectives.get('zero_force_weight')}). k is the least-squares fit of "
        f"F = −k·δ on the GFN2-xTB displaced frames (kind 2) against their relaxed structures ({fit_text}); σ was "
        f"chosen, not tuned. {card['holdout']}",
    ]
    return "\n".join(lines) + "\n"


def validation_table(card: Dict[str, Any]) -> str:
    """The validation metrics stored with the selected checkpoint."""
    lines = ["| metric | value |", "|---|---|"]
    for key, value in sorted(card["validation"].items()):
        lines.append(f"| {key} | {value:.4g} |")
    return "\n".join(lines) + "\n"


def page(card: Dict[str, Any]) -> str:
    """docs/model_card.md, with its tables between the markers of ``benchmarks.docs_tables``."""

    def block(name: str, body: str) -> List[str]:
        return [f"<!-- table: {name} -->", body.rstrip("\n"), "<!-- /table -->"]

    reproduce = card["reproduce"]

    return "\n".join([
        f"# Model card: `{card['model']}`",
        "",
        "Generated by `python -m benchmarks.model_card` from the bundled checkpoint's metadata and the",
        f"run's metrics log (`{card['metrics_log']}`), through `benchmarks/results/model_card.json`.",
        f"Reproduce the checkpoint with `forcefield-et pretrain --config {reproduce['config']}`, then",
        f"`forcefield-et export --model {reproduce['run_dir']}/best.pt --format checkpoint "
        f"--card {reproduce['card']} --out {card['checkpoint']}`.",
        "",
        "## Summary",
        "",
        *block("model_card_summary", summary(card)),
        "",
        "## Data and objectives",
        "",
        *block("model_card_data", data_table(card)),
        "",
        "## Validation at the selected checkpoint",
        "",
        *block("model_card_validation", validation_table(card)),
        "",
        "`force_mae` is the mean absolute error of force components on held-out molecules; "
        "`eq_force_norm` is the mean predicted |F| at held-out equilibrium geometries (0 is ideal).",
        "",
        "![training curves](img/pretrain_curve.png)",
        "",
    ])


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained")
    parser.add_argument("--metrics", default="runs/pretrain_mixed/metrics.csv", help="the run's metrics log")
    parser.add_argument("--card", default="configs/pretrained_mixed_card.yaml",
                        help="the card file the checkpoint was exported with (quoted in the reproduce line)")
    parser.add_argument("--out", default=str(DOCS / "model_card.md"))
    parser.add_argument("--result", default=str(RESULT), help="the results file the card is rendered from")
    args = parser.parse_args(argv)

    card = collect(args.model, Path(args.metrics), Path(args.card))
    write_json_atomic(Path(args.result), card)
    plot_curves(read_metrics(Path(args.metrics)), DOCS / "img" / "pretrain_curve.png")
    write_text_atomic(Path(args.out), page(card))
    print(f"wrote {args.result} and {args.out}")


if __name__ == "__main__":
    main()
