"""The measured tables of the docs, rebuilt from the committed results.

A table in ``docs/*.md`` or ``README.md`` that shows measured figures sits between two markers::

    <!-- table: NAME -->
    | ... |
    <!-- /table -->

and ``NAME`` is registered in :data:`TABLES` with a function that builds the table from the result
files under ``benchmarks/results``. So a figure in the docs is always the one its results file
holds, and a rerun of a benchmark followed by ``--write`` updates every page that cites it.

    python -m benchmarks.docs_tables            # check: lists stale tables, exit status 1 if any
    python -m benchmarks.docs_tables --write    # rewrite the docs' tables from the results
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
DOC_FILES = sorted((REPO_ROOT / "docs").glob("*.md")) + [REPO_ROOT / "README.md"]
INDENTED_MARKER = re.compile(r"^[ \t]+<!-- /?table\b.*$", re.M)
MARKER = re.compile(r"^<!-- table: (?P<name>[\w.-]+) -->\n(?P<body>.*?)^<!-- /table -->$", re.M | re.S)


def _json(relative: str) -> Dict[str, Any]:
    return json.loads((RESULTS / relative).read_text())


SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def scientific(value: float, digits: int = 1) -> str:
    """``0.00115`` -> ``1.2 × 10⁻³``."""
    mantissa, exponent = f"{value:.{digits}e}".split("e")
    return f"{mantissa} × 10{str(int(exponent)).translate(SUPERSCRIPTS)}"


def nve_drift() -> str:
    lines = ["| precision | drift (eV/atom/ns) | fluctuation around the fit (eV) | MD steps/s |", "|---|---|---|---|"]
    for run in _json("nve_drift.json")["runs"]:
        lines.append(f"| {run['dtype']} | {scientific(run['drift_eV_per_atom_per_ns'])} "
                     f"| {scientific(run['fluctuation_eV'])} | {run['steps_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def _percent(overhead: float) -> str:
    """A calculator overhead in percent; below 5 % it is within the machine's ±10 % run-to-run noise."""
    text = f"{overhead:.1f} %".replace("-", "−")
    return f"within noise ({text})" if abs(overhead) < 5 else text


def ase_calculator() -> str:
    lines = ["| torch threads | bare model ms/call | ETCalculator ms/call | overhead | ASE MD steps/s (VelocityVerlet) "
             "| ns/day at 0.5 fs |", "|---|---|---|---|---|---|"]
    for row in _json("ase_calculator.json")["rounds"]:
        text = _percent(row["calculator_overhead_percent"])
        lines.append(f"| {row['threads']} | {row['bare_model_ms']:.1f} | {row['calculator_ms']:.1f} | {text} "
                     f"| {row['md_steps_per_s']:.1f} | {row['md_ns_per_day']:.2f} |")
    return "\n".join(lines) + "\n"


def model_speed() -> str:
    labels = {"default": "default `build_model()` (128 hidden, 6 layers)",
              "pretrained": "bundled `pretrained` (128 hidden, 4 layers)"}
    lines = ["| model (aspirin, 21 atoms) | eager ms/call | `torch.jit.script` ms/call | scripted / eager "
             "| max |ΔF| eager vs scripted |", "|---|---|---|---|---|"]
    for name, row in _json("model_speed.json")["inference"].items():
        lines.append(f"| {labels.get(name, name)} | {row['eager_ms']:.1f} | {row['scripted_ms']:.1f} "
                     f"| {row['scripted_over_eager']:.2f} "
                     f"| {scientific(row['max_abs_force_difference_eV_A'], 1).replace('.0 ×', ' ×')} eV/Å |")
    return "\n".join(lines) + "\n"


def neighbors_slopes() -> str:
    result = _json("neighbors.json")
    names = ("periodic", "nonperiodic", "matscipy")
    lines = ["| time | `radius_graph` periodic | `radius_graph` non-periodic | matscipy periodic |",
             "|---|---|---|---|"]
    for label, slopes in (("wall", result["slopes"]), ("user CPU", result["slopes_user_time"])):
        lines.append(f"| {label} | " + " | ".join(f"{slopes[n]:.2f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


NEIGHBOR_SIZES_SHOWN = (1536, 5184, 24000, 41472)


def neighbors_times() -> str:
    lines = ["| N atoms | periodic wall ms | non-periodic wall ms | matscipy wall ms | edges |",
             "|---|---|---|---|---|"]
    for row in _json("neighbors.json")["results"]:
        if row["n_atoms"] in NEIGHBOR_SIZES_SHOWN:
            lines.append(f"| {row['n_atoms']:,} | {1000 * row['periodic_s']:,.0f} | {1000 * row['nonperiodic_s']:,.0f} "
                         f"| {1000 * row['matscipy_s']:,.0f} | {row['periodic_edges']:,} |")
    return "\n".join(lines) + "\n"


def openmm_speed() -> str:
    labels = {"pretrained": "pretrained (4 layers)", "default": "default (6 layers)",
              "small": "small (2 layers, 32 hidden)"}
    rows = {(r["model"], r["force"]): r for r in _json("openmm_speed.json")["results"]}
    lines = ["| model | TorchForce ms/step | TorchForce ns/day | PythonForce ms/step | PythonForce ns/day |",
             "|---|---|---|---|---|"]
    for model in dict.fromkeys(m for m, _ in rows):
        cells = []
        for force in ("TorchForce", "PythonForce"):
            row = rows.get((model, force))
            cells += [f"{row['ms_per_step']:.1f}", f"{row['ns_per_day']:.3g}"] if row else ["–", "–"]
        lines.append(f"| {labels.get(model, model)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def large_systems() -> str:
    paths = {"all_edges": "all edges", "chunked": "chunked"}
    lines = ["| atoms | path the planner chose | s per call (call 1, call 2) | peak memory of the calls | estimate |",
             "|---|---|---|---|---|"]
    for row in _json("large_systems.json")["results"]:
        calls = ", ".join(f"{t:.1f}" for t in row["s_per_call"])
        lines.append(f"| {row['atoms']:,} | {paths.get(row['path'], row['path'])} | {calls} "
                     f"| {row['peak_increase_gib']:.1f} GiB | {row['estimated_gib']:.1f} GiB |")
    return "\n".join(lines) + "\n"


SPEED_LABELS = {"et": "`et` (eager, 6 layers)", "et-compiled": "`et-compiled` (same weights, `compile=True`)",
                "et-bundled": "`et-bundled` (ours, 4 layers)", "torchmd-net-et": "TorchMD-Net 3.1 ET",
                "torchmd-net-et-ftz": "TorchMD-Net 3.1 ET, subnormals flushed to zero",
                "nequip": "NequIP 0.19"}


def speed_compiled() -> str:
    rows = _json("speed_compiled/speed.json")["aspirin"]["threads"]["1"]
    lines = ["| model | ms/call | MD steps/s | ms ratio to `et` | MD steps/s ratio to `et` |", "|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {SPEED_LABELS.get(name, name)} | {row['ms_per_call']:.1f} | {row['md_steps_per_s']:.1f} "
                     f"| {row['ms_ratio_to_et']:.2f} | {row['md_speed_ratio_to_et']:.2f} |")
    return "\n".join(lines) + "\n"


def finetune_study() -> str:
    from . import finetune_study as study

    return study.table(study.finished_runs(RESULTS / "finetune_study"))


def finetune_study_summary() -> str:
    from . import finetune_study as study

    return study.summary_table(study.finished_runs(RESULTS / "finetune_study"))


def finetune_converged() -> str:
    from . import finetune_converged as study

    return study.table(study.finished(RESULTS / "finetune_converged"))


def finetune_converged_summary() -> str:
    from . import finetune_converged as study

    return study.summary_table(study.finished(RESULTS / "finetune_converged"))


def finetune_converged_xtb_stage() -> str:
    """The converged study's cells with the molecule's own GFN2-xTB stage against those without."""
    from . import finetune_converged as study

    return study.xtb_stage_table(study.finished(RESULTS / "finetune_converged"))


def train_speed() -> str:
    from . import train_speed as speed

    return speed.steps_table(_json("train_speed.json"))


def train_speed_data_parallel() -> str:
    from . import train_speed as speed

    return speed.data_parallel_table(_json("train_speed.json"))


def train_speed_batch_sizes() -> str:
    from . import train_speed as speed

    return speed.batch_size_table(_json("train_speed.json"))


def train_speed_phases() -> str:
    """Where the eager training step spends its time (``benchmarks.train_speed``)."""
    result = _json("train_speed.json")
    labels = {"parameter backward": "parameter backward (the second derivative)", "optimiser": "AdamW",
              "data": "batch assembly"}
    phases = result["eager_phases_ms"]
    lines = ["| phase of the eager step | ms |", "|---|---|"]
    lines += [f"| {labels.get(name, name)} | {ms:.0f} |"
              for name, ms in sorted(phases.items(), key=lambda item: -item[1])]
    return "\n".join(lines) + "\n"


def ablation() -> str:
    from . import ablation as study

    return study.table(_json("ablation/ablation.json")["rows"])


def qm9_property() -> str:
    from . import qm9_property as qm9

    return qm9.table(_json("qm9_property/qm9_property.json"))


def model_card_summary() -> str:
    from . import model_card

    return model_card.summary(_json("model_card.json"))


def model_card_data() -> str:
    from . import model_card

    return model_card.data_table(_json("model_card.json"))


def model_card_validation() -> str:
    from . import model_card

    return model_card.validation_table(_json("model_card.json"))


def md_stability() -> str:
    from . import md_stability as stability

    return stability.table(_json("md_stability/md_stability.json")["runs"])


def pretrain_size() -> str:
    """Pretraining model sizes at the same CPU budget (``benchmarks.pretrain_size``)."""
    from . import pretrain_size as sizes

    return sizes.table(_json("pretrain_size/pretrain_size.json")["runs"])


def pretrain_scaling() -> str:
    """Test force MAE against the conformations the start saw in pretraining (``benchmarks.pretrain_scaling``)."""
    from . import pretrain_scaling as scaling

    return scaling.table(_json("pretrain_scaling/pretrain_scaling.json")["runs"]).split("\n\n")[0] + "\n"


def pretrain_scaling_runs() -> str:
    """Steps, CPU-hours and stop reason of each pretraining-scaling run (``benchmarks.pretrain_scaling``)."""
    from . import pretrain_scaling as scaling

    return scaling.runs_table(_json("pretrain_scaling/pretrain_scaling.json")["runs"])


def pretrain_scaling_equal_steps() -> str:
    """The budget-bound pretraining-scaling columns at equal steps (``benchmarks.pretrain_scaling``)."""
    from . import pretrain_scaling as scaling

    return scaling.equal_steps_table(_json("pretrain_scaling/pretrain_scaling.json")["runs"])


def collapse_dft() -> str:
    """The frames up to each MD collapse, model against DFT (``benchmarks.collapse_dft``)."""
    from . import collapse_dft as check

    return check.table(_json("collapse_dft/collapse_dft.json")["runs"])


def collapse_repair() -> str:
    """Collapsed MD runs repaired with DFT frames of their collapse (``benchmarks.collapse_repair``)."""
    from . import collapse_repair as repair

    return repair.table(_json("collapse_repair/collapse_repair.json")["repairs"])


def md_stability_converged() -> str:
    """The 300 ps runs of the converged 1000-frame models (``benchmarks.md_stability``)."""
    from . import md_stability as stability

    return stability.table(_json("md_stability_converged/md_stability.json")["runs"])


def peers() -> str:
    """Every model of the head-to-head at equal CPU budget, trained and evaluated (``benchmarks.peers``)."""
    from . import peers as head_to_head

    return head_to_head.table(_json("peers/peers.json"))


def peers_versions() -> str:
    """The packages each model of ``benchmarks.peers`` was evaluated with, read in its own environment."""
    summary = _json("peers/peers.json")
    package = {"et": "forcefield_et " + summary["machine"]["forcefield_et"], "nequip": "nequip", "mace": "mace-torch"}
    lines = ["| model | environment | torch | model package | e3nn | ASE |", "|---|---|---|---|---|---|"]
    for name, entry in summary["evaluation"]["models"].items():
        kind, versions = summary["trained"][name]["kind"], entry["versions"]
        own = package[kind] if kind == "et" else f"{package[kind]} {versions[package[kind]]}"
        environment = "the project's" if kind == "et" else f"its own ({kind})"
        lines.append(f"| {name} | {environment} | {versions['torch']} | {own} "
                     f"| {versions['e3nn'] if kind != 'et' else '–'} | {versions['ase']} |")
    return "\n".join(lines) + "\n"


def speed_aspirin() -> str:
    """Aspirin energy+forces calls and MD through each model's ASE calculator (``benchmarks.speed``)."""
    result = _json("speed.json")
    models = result["models"]

    def label(name: str, first: bool) -> str:
        if not first:
            return SPEED_LABELS.get(name, name).split(" (")[0]
        h = models[name].get("hyperparameters", {})
        if name == "et":
            return f"`et` (ours, {h['hidden_channels']} hidden, {h['num_layers']} layers)"
        if name == "et-bundled":
            return f"`et-bundled` (ours, the trained `pretrained` model, {h['num_layers']} layers)"
        if name == "torchmd-net-et":
            return f"TorchMD-Net {models[name]['torchmdnet_version'].rsplit('.', 1)[0]} ET, same hyperparameters"
        if name == "nequip":
            return (f"NequIP 0.19, MDsim MD17 size (r {h['r_max']:g} Å, {h['num_layers']} layers, l_max {h['l_max']}, "
                    f"{h['num_features']} features)")
        return name

    lines = ["| threads | model | ms/call | MD steps/s | ms ratio to `et` | MD steps/s ratio to `et` |",
             "|---|---|---|---|---|---|"]
    seen = set()
    for threads, rows in result["aspirin"]["threads"].items():
        for name, row in rows.items():
            lines.append(f"| {threads} | {label(name, name not in seen)} | {row['ms_per_call']:.1f} "
                         f"| {row['md_steps_per_s']:.1f} | {row['ms_ratio_to_et']:.2f} "
                         f"| {row['md_speed_ratio_to_et']:.2f} |")
            seen.add(name)
    return "\n".join(lines) + "\n"


def speed_water() -> str:
    """ms per energy+forces call on tiled water boxes, 1 thread (``benchmarks.speed``)."""
    scaling = _json("speed.json")["scaling"]
    names = {"et": "`et`", "et-torch-nl": "`et` with the torch neighbour list", "torch-nl": "",
             "torchmd-net-et": "TorchMD-Net ET", "nequip": "NequIP"}
    series = {name: {r["atoms"]: r for r in rows} for name, rows in scaling["results"].items()}
    sizes = sorted({n for rows in series.values() for n, r in rows.items() if "ms_per_call" in r})

    def cell(row: Dict[str, Any] | None) -> str:
        if row is None:
            return "–"
        if "ms_per_call" in row:
            return f"{row['ms_per_call']:,.0f}"
        if row["skipped"].startswith("time") and "predicted_s_per_call" in row:
            return f"skipped (predicted {row['predicted_s_per_call']:.0f} s per call)"
        return "skipped (memory)" if row["skipped"].startswith("MemoryError") else "skipped"

    lines = ["| atoms | " + " | ".join(names.get(n, n) for n in series) + " |", "|---" * (len(series) + 1) + "|"]
    for n in sizes:
        lines.append(f"| {n:,} | " + " | ".join(cell(rows.get(n)) for rows in series.values()) + " |")
    return "\n".join(lines) + "\n"


def model_speed_training() -> str:
    """One full training step of the default model on GFN2-xTB MD frames (``benchmarks.model_speed``)."""
    row = _json("model_speed.json")["training"]
    return ("| model | data | batch | atoms per conformation | conformations/s | ms per step |\n"
            "|---|---|---|---|---|---|\n"
            f"| {row['model'].replace(' A)', ' Å)')} | {row['data']} | {row['batch_size']} "
            f"| {row['mean_atoms_per_conformation']:.1f} | {row['conformations_per_s']:.1f} "
            f"| {row['ms_per_step']:.0f} |\n")


def ase_batch_evaluate() -> str:
    row = _json("ase_calculator.json")["batch_evaluate"]
    return ("| evaluation (aspirin, 1 thread) | conformations/s |\n|---|---|\n"
            f"| one `ETCalculator` call per conformation | {row['one_by_one_conformations_per_s']:.1f} |\n"
            f"| `batch_evaluate`, batches of {row['batch_size']} | {row['conformations_per_s']:.1f} "
            f"({row['speedup']:.2f}×) |\n")


def threads() -> str:
    """``benchmarks.threads``: one energy+forces call at 1 and 2 threads and at the rule's count."""
    labels = {"aspirin": "aspirin (bundled structure)", "water_768": "64-water box tiled 2 × 2 × 1"}
    lines = ["| system | atoms | 1 thread | 2 threads | rule (threads) |", "|---|---|---|---|---|"]
    for name, row in _json("threads.json")["systems"].items():
        ms = {k: f"{v:,.0f}" if v >= 1000 else f"{v:.1f}" for k, v in row["ms_per_call"].items()}
        lines.append(f"| {labels.get(name, name)} | {row['atoms']} | {ms['1']} ms | {ms['2']} ms "
                     f"| {ms['rule']} ms ({row['rule_threads']}) |")
    return "\n".join(lines) + "\n"


def finetune_budget() -> str:
    """The study's 2,000-step cell against the same cell at a longer budget (``finetune_budget``)."""
    longer = _json("finetune_budget/finetune_study.json")["runs"]
    cells = {(r["molecule"], r["n_train"]) for r in longer}
    study = [r for r in _json("finetune_study/finetune_study.json")["runs"] if (r["molecule"], r["n_train"]) in cells]
    lines = ["| molecule, train frames | steps | force MAE scratch | force MAE pretrained | scratch / pretrained "
             "| energy MAE scratch | energy MAE pretrained | scratch / pretrained |",
             "|---|---|---|---|---|---|---|---|"]
    for runs in (study, longer):
        by = {(r["molecule"], r["n_train"], r["start"]): r for r in runs}
        for molecule, n_train in sorted(cells):
            a, b = by[(molecule, n_train, "scratch")], by[(molecule, n_train, "pretrained")]
            fa, fb = a["test_force_mae_meV_A"], b["test_force_mae_meV_A"]
            ea, eb = a["test_energy_mae_meV"], b["test_energy_mae_meV"]
            lines.append(f"| {molecule}, {n_train} | {a['steps']:,} | {fa:.1f} | {fb:.1f} | {fa / fb:.2f}× "
                         f"| {ea:.1f} | {eb:.1f} | {ea / eb:.2f}× |")
    return "\n".join(lines) + "\n"


def finetune_rebuild() -> str:
    """Committed study runs against the same run trained again (``rebuild.json``, written by
    ``python -m benchmarks.prepare --models et-scratch``)."""
    from .finetune_study import MOLECULE_NAMES

    lines = ["| run | test force MAE, study → rebuilt (meV/Å) | test energy MAE, study → rebuilt (meV) |",
             "|---|---|---|"]
    for path in sorted((RESULTS / "finetune_study" / "runs").glob("*/rebuild.json")):
        molecule, n_train, start = path.parent.name.rsplit("-", 2)
        row = json.loads(path.read_text())
        cells = []
        for key in ("test_force_mae_meV_A", "test_energy_mae_meV"):
            change = 100 * row["relative_difference"][key]
            cells.append(f"{row['stored'][key]:.2f} → {row['rebuilt'][key]:.2f} "
                         f"({change:+.2f} %)".replace("-", "−"))
        lines.append(f"| {MOLECULE_NAMES.get(molecule, molecule)}, {n_train}, {start} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _md_cell(run: Dict[str, Any] | None, full_ps: float) -> str:
    if run is None:
        return "not run"
    if run["collapsed"]:
        bonds = run.get("collapse_bonds") or {}
        stretched, formed = bonds.get("stretched") or [], bonds.get("formed") or []
        if stretched and formed:
            return (f"{run['stability_ps']:g} ps: proton transfer, {stretched[0]['bond'].replace('-', '–')} → "
                    f"{formed[0]['bond'].replace('-', '–')}")
        names = ", ".join(b["bond"].replace("-", "–") for b in stretched)
        return f"collapses at {run['stability_ps']:g} ps" + (f" ({names})" if names else "")
    reached = run.get("extension_reached_ps")
    if reached is not None:
        return f"no collapse in the {reached:g} ps simulated"
    if run["simulated_ps"] >= full_ps:
        return f"**{run['simulated_ps']:g} of {full_ps:g} ps**, no collapse"
    return f"no collapse in the {run['simulated_ps']:g} ps simulated"


def _md_summary(relative: str, scratch_model: str, pretrained_label: str) -> str:
    """One line per molecule of an MD-stability summary: the pretrained start (column ``pretrained_label``)
    against ``scratch_model``."""
    from .finetune_study import MOLECULE_NAMES

    result = _json(relative)
    full_ps = result["protocol"]["time_ps"]
    by = {(r["molecule"], r["model"]): r for r in result["runs"]}
    lines = [f"| molecule | {pretrained_label} | from scratch |", "|---|---|---|"]
    for molecule in sorted({m for m, _ in by}):
        lines.append(f"| {MOLECULE_NAMES.get(molecule, molecule)} | "
                     f"{_md_cell(by.get((molecule, 'et-pretrained-finetuned')), full_ps)} "
                     f"| {_md_cell(by.get((molecule, scratch_model)), full_ps)} |")
    return "\n".join(lines) + "\n"


def md_stability_summary() -> str:
    """The MD-stability runs of the 2,000-step models in one line per molecule (``benchmarks.md_stability``)."""
    return _md_summary("md_stability/md_stability.json", "et-scratch",
                       "pretrained → fine-tuned, 2,000 steps (bundled as `rmd17-<mol>` then)")


def md_stability_converged_summary() -> str:
    """The 300 ps runs of the converged 1000-frame models in one line per molecule."""
    return _md_summary("md_stability_converged/md_stability.json", "et-converged-scratch",
                       "pretrained → fine-tuned (the converged cell)")


def readme_results() -> str:
    """The README's headline figures, one line per benchmark."""
    ase = {r["threads"]: r for r in _json("ase_calculator.json")["rounds"]}[1]
    overhead = ase["calculator_overhead_percent"]
    speed = _json("speed.json")
    rows = speed["aspirin"]["threads"]["1"]
    et, tmd, nequip = rows["et"], rows["torchmd-net-et"], rows["nequip"]
    drift = _json("nve_drift.json")
    runs = {r["dtype"]: r for r in drift["runs"]}
    run = runs["float32"]
    checkpoint = drift.get("model_checkpoint") or {}
    model = (f"pretraining checkpoint at step {checkpoint['step']:,}" if checkpoint.get("step")
             else f"`{drift['model']}` model")
    neighbors = _json("neighbors.json")
    sizes = [r["n_atoms"] for r in neighbors["results"] if r["n_atoms"] >= neighbors["slope_fit_min_atoms"]]
    lines = [
        "| what | result | command |",
        "|---|---|---|",
        f"| ASE calculator overhead over the bare model (aspirin, 1 thread) | {_percent(overhead)} "
        "| `python -m benchmarks.ase_calculator` |",
        f"| ASE MD, aspirin, bundled model, float32, 1 thread | {ase['md_steps_per_s']:.0f} steps/s "
        f"({ase['md_ns_per_day']:.1f} ns/day at 0.5 fs) | `python -m benchmarks.ase_calculator` |",
        f"| energy+forces, aspirin, default size ({speed['models']['et']['hyperparameters']['num_layers']} layers), "
        f"1 thread: ours vs TorchMD-Net's ET vs NequIP | {et['ms_per_call']:.1f} / {tmd['ms_per_call']:.1f} / "
        f"{nequip['ms_per_call']:.0f} ms (1 : {tmd['ms_ratio_to_et']:.2f} : {nequip['ms_ratio_to_et']:.1f}) "
        "| `python -m benchmarks.speed` |",
        _readme_compiled_speed_row(),
        f"| NVE drift, aspirin, {run['timestep_fs']:g} fs, {run['steps'] * run['timestep_fs'] / 1000:g} ps, {model} "
        f"| {scientific(runs['float32']['drift_eV_per_atom_per_ns'])} (float32), "
        f"{scientific(runs['float64']['drift_eV_per_atom_per_ns'])} (float64) eV/atom/ns "
        f"| `python -m benchmarks.nve_drift --steps {run['steps']}` |",
        f"| neighbour-list scaling, periodic water, {sizes[0] / 1000:.1f}k–{sizes[-1] / 1000:.0f}k atoms "
        f"| log-log slope {neighbors['slopes']['periodic']:.2f} (wall), "
        f"{neighbors['slopes_user_time']['periodic']:.2f} (user CPU) | `python -m benchmarks.neighbors` |",
    ]
    return "\n".join(lines) + "\n"


def _readme_compiled_speed_row() -> str:
    speed = _json("speed_compiled/speed.json")
    rows = speed["aspirin"]["threads"]["1"]
    compiled, tmd, flushed = rows["et-compiled"], rows["torchmd-net-et"], rows["torchmd-net-et-ftz"]
    nequip = rows["nequip"]
    cpu = speed["machine"]["cpu"].replace("(R)", "").replace(" Processor", "")

    def ratio(row: Dict[str, Any]) -> float:
        return row["ms_per_call"] / compiled["ms_per_call"]

    return (f"| energy+forces as `forcefield-et md` runs it (compiled), aspirin, 1 thread, {cpu}: ours vs "
            f"TorchMD-Net's ET vs NequIP | {compiled['ms_per_call']:.1f} / {tmd['ms_per_call']:.1f} / "
            f"{nequip['ms_per_call']:.0f} ms (1 : {ratio(tmd):.2f} : {ratio(nequip):.1f}; TorchMD-Net "
            f"{ratio(flushed):.2f} with its subnormals flushed) | `python -m benchmarks.speed --models et et-compiled "
            "torchmd-net-et torchmd-net-et-ftz nequip --threads 1 --skip-scaling --no-profile "
            "--out benchmarks/results/speed_compiled` |")


def readme_snippets() -> str:
    """The README's examples as a user runs them, idle against busy cores (``benchmarks.readme_snippets``)."""
    data = _json("readme_snippets.json")
    lines = ["| README example | idle | other core busy | busy / idle |", "|---|---|---|---|"]
    for name, row in data["blocks"].items():
        wall = row["median_wall_s"]
        lines.append(f"| {name} | {wall['idle']:.1f} s | {wall['busy']:.1f} s | {row['busy_over_idle']:.2f}× |")
    return "\n".join(lines) + "\n"


UNCERTAINTY_MOLECULES = ("aspirin", "ethanol")


def _uncertainty_results(relative: str = "uncertainty.json") -> Dict[str, Dict[str, Any]]:
    """``benchmarks/results/uncertainty/<molecule>/<relative>`` of each molecule that has it."""
    return {m: _json(f"uncertainty/{m}/{relative}") for m in UNCERTAINTY_MOLECULES
            if (RESULTS / "uncertainty" / m / relative).is_file()}


DOCS_COMMITTEE = "heads8/uncertainty.json"  # the committee of the calibration tables (benchmarks.uncertainty)


def uncertainty_calibration() -> str:
    """Calibration of the 8-heads committees on rMD17 aspirin and ethanol (``benchmarks.uncertainty``)."""
    results = _uncertainty_results(DOCS_COMMITTEE)

    def row(name: str, cell: Any) -> str:
        return f"| {name} | " + " | ".join(cell(d) for d in results.values()) + " |"

    def mae(d: Dict[str, Any]) -> str:
        members = d["test_force_mae_meV_A"]["members"]
        mean = d["test_force_mae_meV_A"]["committee_mean"]
        return f"{mean:.1f} meV/Å (members {min(members):.1f}–{max(members):.1f})"

    header = " | ".join(f"{m} ({d['test_frames']} test frames, {d['test_frames'] * d['atoms_per_frame']:,} atoms)"
                        for m, d in results.items())
    lines = [f"| measure | {header} |", "|---|" + "---|" * len(results),
             row("force MAE of the committee mean", mae),
             row("median per-atom force error \\|F − F_DFT\\|", lambda d: f"{d['median_atom_error_meV_A']:.0f} meV/Å"),
             row("median per-atom predicted `forces_std`", lambda d: f"{d['median_atom_std_meV_A']:.1f} meV/Å"),
             row("Spearman correlation, per atom: `forces_std` vs \\|F − F_DFT\\|",
                 lambda d: f"{d['spearman_atom_std_vs_error']:.2f}"),
             row("Spearman correlation, per frame: mean `forces_std` vs force RMSE",
                 lambda d: f"{d['spearman_frame_mean_std_vs_rmse']:.2f}"),
             row("Spearman correlation, per frame: largest `forces_std` vs largest error",
                 lambda d: f"{d['spearman_frame_max_std_vs_max_error']:.2f}"),
             row("miscalibration area, raw std", lambda d: f"{d['miscalibration_area']:.3f}"),
             row("fraction of force components inside the 95 % interval, raw std",
                 lambda d: f"{100 * d['fraction_inside_95pct_interval']:.1f} %"),
             row("scale factor fitted on the 50 validation frames", lambda d: f"{d['validation_std_scale']:.1f}"),
             row("miscalibration area, scaled std", lambda d: f"{d['miscalibration_area_scaled']:.3f}"),
             row("fraction inside the 95 % interval, scaled std",
                 lambda d: f"{100 * d['fraction_inside_95pct_interval_scaled']:.1f} %")]
    return "\n".join(lines) + "\n"


def _share(fraction: float) -> str:
    return f"{100 * fraction:.1f}".rstrip("0").rstrip(".") + " %"


def uncertainty_out_of_distribution() -> str:
    """Largest per-atom force std per frame, in and out of distribution (``benchmarks.uncertainty``)."""
    results = _uncertainty_results(DOCS_COMMITTEE)
    names = {"displaced_0.05A": "test frames, every coordinate displaced by N(0, 0.05 Å)",
             "displaced_0.1A": "test frames, displaced by N(0, 0.1 Å)",
             "xtb_md_500_1000K": "GFN2-xTB Langevin frames at 500–1000 K, in the pretraining corpus",
             "xtb_md_1000K_fresh": "a new GFN2-xTB Langevin trajectory at 1000 K, in no corpus"}
    header = " | ".join(f"{m}: median (meV/Å) | {m}: above the test frames' 95th percentile" for m in results)
    lines = [f"| frames | {header} |", "|---|" + "---|" * (2 * len(results)),
             "| rMD17 test frames (" + ", ".join(f"{d['test_frames']} of {m}" for m, d in results.items()) + ") | "
             + " | ".join(f"{d['test_frame_max_std_meV_A_median']:.1f} | 5 % (by definition)" for d in results.values())
             + " |"]
    for key, label in names.items():
        cells = []
        for d in results.values():
            row = d["out_of_distribution"].get(key)
            cells.append(f"{row['median_frame_max_std_meV_A']:.1f} | {_share(row['fraction_above_test_p95'])}"
                         if row else "– | –")
        if key.startswith("xtb_md"):
            label += " (" + ", ".join(f"{d['out_of_distribution'][key]['frames']} frames of {m}"
                                      for m, d in results.items() if key in d["out_of_distribution"]) + ")"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def uncertainty_committee_kinds() -> str:
    """Checkpoint committee against one checkpoint with several heads, per molecule
    (``benchmarks.uncertainty --compare``)."""
    results = _uncertainty_results("committee_kinds.json")
    columns = []  # (molecule, kind, entry, single-model ms, steps trained)
    for m, d in results.items():
        for kind, entry in d["kinds"].items():
            trained = entry.get("trained_steps") or entry["steps"]
            columns.append((m, kind, entry, 1000 * d["inference_timing"]["single_model_cpu_s_per_frame"], trained))

    def row(name: str, cell: Any) -> str:
        return f"| {name} | " + " | ".join(cell(c) for c in columns) + " |"

    def title(c: Any) -> str:
        m, kind, e = c[0], c[1], c[2]
        return f"{m}: {e['members']} checkpoints" if kind == "checkpoints" else \
            f"{m}: 1 checkpoint, {e['members']} heads"

    def value(key: str, spec: str, factor: float = 1.0) -> Any:
        return lambda c: format(factor * c[2][key], spec)

    def ood(key: str) -> Any:
        def cell(c: Any) -> str:
            o = (c[2].get("out_of_distribution") or {}).get(key)
            return f"{o['median_frame_max_std_meV_A']:.0f} ({100 * o['fraction_above_test_p95']:.0f} %)" if o else "–"
        return cell

    lines = ["| | " + " | ".join(title(c) for c in columns) + " |", "|---|" + "---|" * len(columns),
             row("test frames", lambda c: f"{c[2]['test_frames']}"),
             row("training steps (of the schedule)", lambda c: f"{c[4]} of {c[2]['steps']}"),
             row("training CPU (s)", lambda c: f"{c[2]['training_cpu_s']:.0f}"),
             row("inference CPU per frame, ms (one model)",
                 lambda c: f"{1000 * c[2]['inference_cpu_s_per_frame']:.0f} ({c[3]:.0f})"),
             row("training + evaluating test and validation frames, CPU (s)",
                 lambda c: f"{c[2]['train_plus_evaluation_cpu_s']:.0f}"),
             row("test force MAE of the mean (meV/Å)",
                 lambda c: f"{c[2]['test_force_mae_meV_A']['committee_mean']:.1f}"),
             row("median per-atom `forces_std` (meV/Å)", value("median_atom_std_meV_A", ".1f")),
             row("Spearman, per atom: `forces_std` vs \\|F − F_DFT\\|", value("spearman_atom_std_vs_error", ".2f")),
             row("Spearman, per frame: mean std vs force RMSE", value("spearman_frame_mean_std_vs_rmse", ".2f")),
             row("Spearman, per frame: largest std vs largest error",
                 value("spearman_frame_max_std_vs_max_error", ".2f")),
             row("miscalibration area, raw std", value("miscalibration_area", ".3f")),
             row("inside the 95 % interval, raw std (%)", value("fraction_inside_95pct_interval", ".1f", 100)),
             row("scale factor fitted on the 50 validation frames", value("validation_std_scale", ".1f")),
             row("miscalibration area, scaled std", value("miscalibration_area_scaled", ".3f")),
             row("inside the 95 % interval, scaled std (%)",
                 value("fraction_inside_95pct_interval_scaled", ".1f", 100)),
             row("median largest per-atom std of a frame (meV/Å): test frames",
                 value("test_frame_max_std_meV_A_median", ".0f"))]
    labels = {"displaced_0.05A": "test frames displaced by 0.05 Å", "displaced_0.1A": "test frames displaced by 0.1 Å",
              "xtb_md_500_1000K": "GFN2-xTB MD frames, 500–1000 K (pretraining corpus)",
              "xtb_md_1000K_fresh": "new GFN2-xTB MD frames, 1000 K"}
    for key, label in labels.items():
        lines.append(row(f"... {label} (share above the test frames' 95th percentile)", ood(key)))
    return "\n".join(lines) + "\n"


def dft_generalisation() -> str:
    """Force MAE on new PBE/def2-SVP frames against test_01 (``benchmarks.dft_generalisation``); a
    one-row table while the results file does not exist yet."""
    lines = ["| molecule | model | test_01 force MAE (meV/Å) | new 500 K frames: force MAE (meV/Å) | new / test_01 "
             "| PySCF against rMD17 labels (meV/Å) | mean \\|F\\|: new / test_01 (meV/Å) |",
             "|---|---|---|---|---|---|---|"]
    relative = "dft_generalisation/dft_generalisation.json"
    if not (RESULTS / relative).is_file():
        return "\n".join(lines + [f"| not run yet: `benchmarks/results/{relative}` | | | | | | |"]) + "\n"
    for molecule, r in _json(relative)["molecules"].items():
        forces = r["mean_abs_force_meV_A"]
        for name, m in r["models"].items():
            label = f"`{m['path']}`" if name == "bundled" else f"{name} (`{m['path']}`)"
            lines.append(f"| {molecule} ({r['frames']} new frames) | {label} | {m['test_01_force_mae_meV_A']:.1f} "
                         f"| {m['new_frames_force_mae_meV_A']:.1f} | {m['ratio_new_over_test']:.2f}× "
                         f"| {r['reference_check_force_mae_meV_A']:.1f} | {forces['new_frames']:.0f} / "
                         f"{forces['test_01']:.0f} |")
    return "\n".join(lines) + "\n"


def md_warning(relative: str = "md_warning/md_warning.json") -> str:
    """Committee force std along MD runs, stable and collapsing (``benchmarks.md_warning``); a one-row
    table while the results file does not exist yet."""
    lines = ["| driver (500 K) | simulated | bond break | largest per-frame std before the break "
             "| frames above the threshold | first frame above the threshold | lead time |",
             "|---|---|---|---|---|---|---|"]
    if not (RESULTS / relative).is_file():
        return "\n".join(lines + [f"| not run yet: `benchmarks/results/{relative}` | | | | | | |"]) + "\n"
    d = _json(relative)
    molecule = d.get("molecule", "aspirin")
    drivers = {"et-pretrained-finetuned": f"`rmd17-{molecule}`", "s50": "50-frame scratch ET",
               "et-scratch": "short-budget scratch ET (2,000 steps)",
               "self4": "the 4-head committee itself (its mean)"}
    for model, run in d["runs"].items():
        values = [v for v in run["max_force_std_eV_A"] if v == v]  # finite (NaN != NaN)
        largest = 1000 * max(values)
        if run["collapsed"]:
            broke = f"at {run['break_ps']:.2f} ps"
        else:
            broke = "none" if run["role"] == "stable" else f"none within {run['simulated_ps']:.1f} ps"
        if run["role"] == "stable":
            largest_text, above, first, lead = f"{largest:.0f} meV/Å (the threshold)", "–", "–", "–"
        else:
            above = f"{run['frames_above_threshold']} of {len(run['time_ps'])}"
            largest_text = f"{largest:.0f} meV/Å"
            first = "none" if run["first_crossing_ps"] is None else f"{run['first_crossing_ps']:.2f} ps"
            lead = "–" if run["lead_time_ps"] is None else f"{run['lead_time_ps']:.2f} ps"
        name = drivers.get(model, f"`{model}`") + (" (the stable reference)" if run["role"] == "stable" else "")
        simulated = f"{run['simulated_ps']:.2f} ps" + (" (run in progress)" if run.get("partial") else "")
        lines.append(f"| {name} | {simulated} | {broke} | {largest_text} | {above} | {first} | {lead} |")
    return "\n".join(lines) + "\n"


def fresh_molecules() -> str:
    """Pretrained models on drug-like molecules in no shared file (``benchmarks.fresh_molecules``)."""
    from .fresh_molecules import table

    return table(_json("fresh_molecules/fresh_molecules.json"))


def selection_demo() -> str:
    """One round of committee-driven frame selection against random frames (``benchmarks.selection_demo``):
    test force MAE and MD stability of each committee; a one-row table while the benchmark has no result."""
    path = RESULTS / "selection_demo" / "selection_demo.json"
    d = json.loads(path.read_text()) if path.is_file() else None
    tested = f"on {d['test_frames']} test frames " if d else ""
    lines = [f"| committee | training frames | training (CPU-h, stopped by) | test force MAE {tested}(meV/Å) "
             "| test energy MAE (meV) | MD at 500 K | largest per-atom force std in MD (meV/Å) |",
             "|---|---|---|---|---|---|---|"]
    if d is None:
        return "\n".join(lines + ["| not run yet: `python -m benchmarks.selection_demo` | | | | | | |"]) + "\n"
    for name, label in (("start_25", "25 start frames"), ("random_50", "start + 25 random"),
                        ("selected_50", "start + 25 selected")):
        t, md = d["training"][name], d["md"].get(name)
        stop = "early stopping" if t["stop_reason"].startswith("no better") else t["stop_reason"].split(" of ")[0]
        run = "–" if md is None else (f"collapsed at {md['collapse_time_ps']:g} ps" if md["collapsed"]
                                      else f"no collapse in {md['simulated_ps']:g} ps")
        std = "–" if md is None else f"{md['max_force_std_meV_A']:.0f}"
        test = d["test"][name]
        energy = f"{test['energy_mae_meV']:.1f}" if "energy_mae_meV" in test else "–"
        lines.append(f"| {label} | {t['train_frames']} | {t['cpu_s'] / 3600:.2f}, {stop} "
                     f"| {test['force_mae_meV_A']:.1f} | {energy} | {run} | {std} |")
    return "\n".join(lines) + "\n"


def soak() -> str:
    """Kill-and-restart rounds of md and finetune against an uninterrupted run (``benchmarks.soak``)."""
    data = _json("soak.json")
    settings = data["settings"]
    labels = {"md": f"md (ethanol, {settings['md_steps']} steps, a frame every {settings['interval']})",
              "finetune": f"finetune (16 frames, {settings['finetune_steps']} steps, `last.pt` every 10)"}
    lines = ["| | rounds | kills | aimed after a state write | launches that resumed from a saved state |",
             "|---|---|---|---|---|"]
    for name, target in data["targets"].items():
        rounds = target["rounds"]
        aimed = sum(sum(phase != "start-up" for phase in r["kill_phases"]) for r in rounds)
        resumed = sum(r["resumed_from_saved_state"] for r in rounds)
        lines.append(f"| {labels[name]} | {len(rounds)} | {sum(r['kills'] for r in rounds)} | {aimed} | {resumed} |")
    return "\n".join(lines) + "\n"


TABLES: Dict[str, Callable[[], str]] = {
    "soak": soak,
    "uncertainty_calibration": uncertainty_calibration,
    "uncertainty_out_of_distribution": uncertainty_out_of_distribution,
    "uncertainty_committee_kinds": uncertainty_committee_kinds,
    "dft_generalisation": dft_generalisation,
    "md_warning": md_warning,
    "md_warning_self": lambda: md_warning("md_warning_self/md_warning.json"),
    "md_warning_ethanol": lambda: md_warning("md_warning_ethanol/md_warning.json"),
    "selection_demo": selection_demo,
    "fresh_molecules": fresh_molecules,
    "readme_snippets": readme_snippets,
    "finetune_study": finetune_study,
    "finetune_study_summary": finetune_study_summary,
    "finetune_converged": finetune_converged,
    "finetune_converged_summary": finetune_converged_summary,
    "finetune_converged_xtb_stage": finetune_converged_xtb_stage,
    "train_speed": train_speed,
    "train_speed_batch_sizes": train_speed_batch_sizes,
    "train_speed_data_parallel": train_speed_data_parallel,
    "train_speed_phases": train_speed_phases,
    "md_stability": md_stability,
    "md_stability_converged": md_stability_converged,
    "collapse_dft": collapse_dft,
    "collapse_repair": collapse_repair,
    "pretrain_size": pretrain_size,
    "pretrain_scaling": pretrain_scaling,
    "pretrain_scaling_runs": pretrain_scaling_runs,
    "pretrain_scaling_equal_steps": pretrain_scaling_equal_steps,
    "ablation": ablation,
    "qm9_property": qm9_property,
    "nve_drift": nve_drift,
    "ase_calculator": ase_calculator,
    "model_speed": model_speed,
    "neighbors_slopes": neighbors_slopes,
    "neighbors_times": neighbors_times,
    "openmm_speed": openmm_speed,
    "large_systems": large_systems,
    "speed_compiled": speed_compiled,
    "speed_aspirin": speed_aspirin,
    "speed_water": speed_water,
    "model_speed_training": model_speed_training,
    "ase_batch_evaluate": ase_batch_evaluate,
    "threads": threads,
    "finetune_budget": finetune_budget,
    "finetune_rebuild": finetune_rebuild,
    "md_stability_summary": md_stability_summary,
    "md_stability_converged_summary": md_stability_converged_summary,
    "peers": peers,
    "peers_versions": peers_versions,
    "readme_results": readme_results,
    "model_card_summary": model_card_summary,
    "model_card_data": model_card_data,
    "model_card_validation": model_card_validation,
}


def rendered(name: str) -> str:
    """The table ``name`` from its results. A table must end with a line break: without one the
    closing marker would join its last line, and the next rewrite would take everything up to the
    following table's closing marker for this table's body."""
    table = TABLES[name]()
    if table and not table.endswith("\n"):
        raise ValueError(f"the generator of table {name!r} returns text without a final line break")
    return table


def marked_tables(path: Path) -> List[Tuple[str, str]]:
    """(name, table text) of every marked table in ``path``."""
    return [(m["name"], m["body"]) for m in MARKER.finditer(path.read_text())]


def stale_tables() -> List[str]:
    """Descriptions of marked tables that differ from their results (or have no generator)."""
    problems = []
    for path in DOC_FILES:
        for line in INDENTED_MARKER.findall(path.read_text()):
            problems.append(f"{path.relative_to(REPO_ROOT)}: indented marker {line.strip()!r} (markers start a line)")
        for name, body in marked_tables(path):
            if name not in TABLES:
                problems.append(f"{path.relative_to(REPO_ROOT)}: table {name!r} has no generator in TABLES")
            elif body != rendered(name):
                problems.append(f"{path.relative_to(REPO_ROOT)}: table {name!r} differs from its results")
    return problems


def write_tables() -> List[str]:
    """Rewrite every marked table from its results; returns the files changed."""
    changed = []
    for path in DOC_FILES:
        text = path.read_text()
        unknown = sorted({name for name, _ in marked_tables(path)} - set(TABLES))
        if unknown:
            raise KeyError(f"{path}: tables {unknown} have no generator in benchmarks/docs_tables.py")
        new = MARKER.sub(lambda m: f"<!-- table: {m['name']} -->\n{rendered(m['name'])}<!-- /table -->", text)
        if new != text:
            tmp = path.with_suffix(".md.tmp")
            tmp.write_text(new)
            tmp.replace(path)
            changed.append(str(path.relative_to(REPO_ROOT)))
    return changed


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the docs' tables from the results")
    args = parser.parse_args(argv)
    if args.write:
        changed = write_tables()
        print("rewrote " + ", ".join(changed) if changed else "every table is up to date")
        return 0
    problems = stale_tables()
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("every table is up to date")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
