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
