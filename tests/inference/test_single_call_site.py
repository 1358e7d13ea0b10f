"""The inference engine is the one caller of the model: a scan of the package, benchmarks,
examples and tools fails when a new direct call of a Potential or Committee appears elsewhere."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("forcefield_et", "benchmarks", "examples", "tools")
# Names that hold a Potential/Committee (or its forward) wherever the code calls one.
MODEL_NAMES = {
    "model", "potential", "committee", "ema_model", "member", "members", "network", "_forward", "model_call",
    "forward", "forward_with_neighbors", "module", "pot", "net",
}
# Where a direct call is the point: the model package itself, the engine, the trainer's loss
# (training and validation objective) and the TorchScript module that TorchForce runs (a scripted
# graph cannot call back into Python).
ALLOWED_MODULES = ("forcefield_et/model/", "forcefield_et/inference/")
ALLOWED_FUNCTIONS = {
    ("forcefield_et/training/trainer.py", "train_step"),
    ("forcefield_et/training/trainer.py", "validate"),
    ("forcefield_et/openmm/module.py", "forward"),
    ("benchmarks/train_speed.py", "eager_phases"),  # times train_step's phases one by one
}


def _callee_name(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def model_call_sites() -> List[Tuple[str, int, str, str]]:
    """(path, line, enclosing function, callee) of every call of a model-holding name."""
    sites = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(ALLOWED_MODULES):
                continue
            tree = ast.parse(path.read_text(), filename=relative)
            stack: List[Tuple[ast.AST, str]] = [(tree, "<module>")]
            while stack:
                node, function = stack.pop()
                for child in ast.iter_child_nodes(node):
                    name = function
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        name = child.name
                    if isinstance(child, ast.Call):
                        callee = _callee_name(child)
                        if callee in MODEL_NAMES and (relative, name) not in ALLOWED_FUNCTIONS:
                            sites.append((relative, child.lineno, name, callee))
                    stack.append((child, name))
    return sorted(sites)


def test_the_evaluator_is_the_only_caller_of_the_model():
    sites = model_call_sites()
    listing = "\n".join(f"  {path}:{line} in {function}(): {callee}(...)" for path, line, function, callee in sites)
    assert not sites, (
        "direct model calls outside forcefield_et.inference (call the model through "
        f"forcefield_et.inference.Evaluator, or allow the site here with its reason):\n{listing}"
    )


def test_the_scan_finds_a_direct_call(tmp_path, monkeypatch):
    """The scan itself works: a direct call in a scanned folder is reported."""
    import tests.inference.test_single_call_site as scan

    package = tmp_path / "forcefield_et"
    package.mkdir()
    (package / "rogue.py").write_text("def f(model, z, pos):\n    return model(z, pos)\n")
    monkeypatch.setattr(scan, "ROOT", tmp_path)
    monkeypatch.setattr(scan, "SCANNED", ("forcefield_et",))
    assert scan.model_call_sites() == [("forcefield_et/rogue.py", 2, "f", "model")]
