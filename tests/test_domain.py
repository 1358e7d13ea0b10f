"""forcefield_et.domain: training domains in checkpoints and the DomainWarning of ETCalculator,
forcefield-et md and the OpenMM forces."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.io import read

from forcefield_et import DomainWarning, ETCalculator
from forcefield_et.domain import domain_problem, hill_formula, merge_domains, training_domain
from forcefield_et.structures import structure_path

ASPIRIN_DOMAIN = {"training_domain": {"elements": [1, 6, 8], "compositions": ["C9H8O4"]}}


def aspirin() -> Atoms:
    return read(structure_path("aspirin"))


def test_hill_formula():
    assert hill_formula(aspirin().numbers) == "C9H8O4"
    assert hill_formula([8, 1, 1]) == "H2O"
    assert hill_formula([7, 1, 1, 1]) == "H3N"
    assert hill_formula([17, 6, 1, 1, 1]) == "CH3Cl"


def test_training_domain_lists_compositions_up_to_a_limit():
    z = np.array([8, 1, 1, 6, 1, 1, 1, 1, 8, 1, 1])
    domain = training_domain(z, np.array([3, 5, 3]))
    assert domain == {"elements": [1, 6, 8], "compositions": ["CH4", "H2O"]}
    assert training_domain(z, np.array([3, 5, 3]), max_compositions=1)["compositions"] is None
    merged = merge_domains([domain, {"elements": [1, 7], "compositions": ["H3N"]}])
    assert merged == {"elements": [1, 6, 7, 8], "compositions": ["CH4", "H2O", "H3N"]}
    assert merge_domains([domain, {"elements": [1], "compositions": None}])["compositions"] is None


def test_domain_problem_names_unseen_elements_and_other_compositions():
    assert domain_problem(aspirin().numbers, ASPIRIN_DOMAIN, "m") is None
    assert domain_problem(aspirin().numbers, {}, "m") is None  # no stored domain: nothing to check
    water = domain_problem(molecule("H2O").numbers, ASPIRIN_DOMAIN, "m")
    assert "trained on C9H8O4 only, not on H2O" in water
    ammonia = domain_problem(molecule("NH3").numbers, ASPIRIN_DOMAIN, "m")
    assert "element(s) N were not in the training data" in ammonia


def test_calculator_warns_once_for_the_bundled_aspirin_model_on_water():
    calc = ETCalculator("rmd17-aspirin", device="cpu")
    water = molecule("H2O")
    water.calc = calc
    with pytest.warns(DomainWarning, match="'rmd17-aspirin' was trained on C9H8O4 only, not on H2O"):
        water.get_potential_energy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainWarning)
        water.positions[0, 0] += 0.01
        water.get_forces()  # same composition again: no second warning


def test_calculator_does_not_warn_on_the_training_composition():
    atoms = aspirin()
    atoms.calc = ETCalculator("rmd17-aspirin", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainWarning)
        atoms.get_forces()


def test_calculator_warns_for_elements_outside_the_training_data(small_model):
    small_model.metadata = ASPIRIN_DOMAIN
    calc = ETCalculator(small_model, device="cpu")
    with pytest.warns(DomainWarning, match="element"):
        calc.batch_evaluate([molecule("NH3")])


def test_models_without_a_composition_warn_only_outside_their_elements():
    calc = ETCalculator("pretrained", device="cpu")  # trained on many molecules of H C N O F S Cl
    water = molecule("H2O")
    water.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainWarning)
        water.get_potential_energy()


def test_md_command_warns_for_another_composition(tmp_path, capsys):
    from forcefield_et.cli import main

    path = tmp_path / "water.xyz"
    molecule("H2O").write(path)
    with pytest.warns(DomainWarning, match="trained on C9H8O4 only, not on H2O"):
        code = main(["md", str(path), "--model", "rmd17-aspirin", "--steps", "2", "--interval", "1", "--no-relax",
                     "--out", str(tmp_path / "md"), "--no-progress"])
    assert code == 0


def test_openmm_force_warns_for_another_composition():
    pytest.importorskip("openmm")
    from forcefield_et.openmm.forces import python_force

    openmm = pytest.importorskip("openmm")
    if not hasattr(openmm, "PythonForce"):
        pytest.skip("openmm.PythonForce needs OpenMM >= 8.5")
    with pytest.warns(DomainWarning, match="not on H2O"):
        python_force("rmd17-aspirin", [8, 1, 1])


def test_md_command_prints_the_warning_on_one_line(tmp_path):
    import os
    import subprocess
    import sys

    path = tmp_path / "water.xyz"
    molecule("H2O").write(path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "forcefield_et.cli", "md", str(path), "--model", "rmd17-aspirin", "--steps", "2",
         "--interval", "1", "--no-relax", "--no-progress", "--out", str(tmp_path / "md")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    warning_lines = [line for line in result.stderr.splitlines() if "C9H8O4" in line]
    assert len(warning_lines) == 1
    assert warning_lines[0].startswith("forcefield-et md: warning: model 'rmd17-aspirin' was trained on C9H8O4 only")
