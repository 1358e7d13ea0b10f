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


def ase_calculator() -> str:
    lines = ["| torch threads | bare model ms/call | ETCalculator ms/call | overhead | ASE MD steps/s (VelocityVerlet) "
             "| ns/day at 0.5 fs |", "|---|---|---|---|---|---|"]
    for row in _json("ase_calculator.json")["rounds"]:
        overhead = row["calculator_overhead_percent"]
        text = f"{overhead:.1f} %".replace("-", "−")
        if abs(overhead) < 5:  # the machine's run-to-run noise is about ±10 %
            text = f"within noise ({text})"
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
    lines = ["| atoms | path the plan chose | s per call (call 1, call 2) | peak memory of the calls | estimate |",
             "|---|---|---|---|---|"]
    for row in _json("large_systems.json")["results"]:
        calls = ", ".join(f"{t:.1f}" for t in row["s_per_call"])
        lines.append(f"| {row['atoms']:,} | {paths.get(row['path'], row['path'])} | {calls} "
                     f"| {row['peak_increase_gib']:.1f} GiB | {row['estimated_gib']:.1f} GiB |")
    return "\n".join(lines) + "\n"


SPEED_LABELS = {"et": "`et` (eager, 6 layers)", "et-compiled": "`et-compiled` (same weights, `compile=True`)",
                "et-bundled": "`et-bundled` (ours, 4 layers)", "torchmd-net-et": "TorchMD-Net 3.1 ET",
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


def train_speed() -> str:
    from . import train_speed as speed

    return speed.steps_table(_json("train_speed.json"))


def train_speed_data_parallel() -> str:
    from . import train_speed as speed

    return speed.data_parallel_table(_json("train_speed.json"))


def ablation() -> str:
    from . import ablation as study

    return study.table(_json("ablation/ablation.json")["rows"])


def qm9_property() -> str:
    from . import qm9_property as qm9

    return qm9.table(_json("qm9_property/qm9_property.json"))


def md_stability() -> str:
    from . import md_stability as stability

    return stability.table(_json("md_stability/md_stability.json")["runs"])


TABLES: Dict[str, Callable[[], str]] = {
    "finetune_study": finetune_study,
    "finetune_study_summary": finetune_study_summary,
    "train_speed": train_speed,
    "train_speed_data_parallel": train_speed_data_parallel,
    "md_stability": md_stability,
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
}


def marked_tables(path: Path) -> List[Tuple[str, str]]:
    """(name, table text) of every marked table in ``path``."""
    return [(m["name"], m["body"]) for m in MARKER.finditer(path.read_text())]


def stale_tables() -> List[str]:
    """Descriptions of marked tables that differ from their results (or have no generator)."""
    problems = []
    for path in DOC_FILES:
        for name, body in marked_tables(path):
            if name not in TABLES:
                problems.append(f"{path.relative_to(REPO_ROOT)}: table {name!r} has no generator in TABLES")
            elif body != TABLES[name]():
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
        new = MARKER.sub(lambda m: f"<!-- table: {m['name']} -->\n{TABLES[m['name']]()}<!-- /table -->", text)
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
