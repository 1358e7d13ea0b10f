"""Learning curves of a run directory: the validation rows of metrics.csv become learning_curve.csv
(errors against CPU-hours) and a plot, written atomically; a run without validations has none yet."""

from __future__ import annotations

import csv

from forcefield_et.training.curves import read_validation_rows, write_learning_curve

HEADER = ("step,kind,lr,loss,time_s,conf_per_s,cpu_hours,aspirin/energy_mae_meV,aspirin/force_mae_meV_A,"
          "aspirin/force_rmse_meV_A,aspirin/test_force_mae_meV_A,valid_loss")
ROWS = [
    "50,train,0.0005,0.2,1.0,20.0,0.004,,,,,",
    "100,valid,0.0005,,,,0.007,73.9,93.9,120.0,93.1,0.5",
    "150,train,0.0005,0.1,1.0,20.0,0.010,,,,,",
    "200,valid,0.0005,,,,0.014,40.2,51.5,70.0,50.8,0.2",
]


def _run(tmp_path, rows=ROWS):
    (tmp_path / "metrics.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    return tmp_path


def test_validation_rows_only(tmp_path):
    rows = read_validation_rows(_run(tmp_path))
    assert [row["step"] for row in rows] == ["100", "200"]
    assert read_validation_rows(tmp_path / "no_such_run") == []


def test_learning_curve_holds_step_cpu_hours_and_every_error_column(tmp_path):
    path = write_learning_curve(_run(tmp_path))
    assert path == tmp_path / "learning_curve.csv"
    with open(path, newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["step", "cpu_hours", "aspirin/energy_mae_meV", "aspirin/force_mae_meV_A",
                        "aspirin/test_force_mae_meV_A"]  # RMSE and losses are not errors of the curve
    assert table[1:] == [["100", "0.007", "73.9", "93.9", "93.1"], ["200", "0.014", "40.2", "51.5", "50.8"]]
    assert (tmp_path / "learning_curve.png").read_bytes().startswith(b"\x89PNG")
    # atomic writes leave no temporary file behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learning_curve.csv", "learning_curve.png", "metrics.csv"]


def test_no_curve_before_the_first_validation(tmp_path):
    assert write_learning_curve(_run(tmp_path, ROWS[:1])) is None
    assert not (tmp_path / "learning_curve.csv").exists()


def test_a_later_call_replaces_the_curve(tmp_path):
    run = _run(tmp_path, ROWS[:2])
    write_learning_curve(run, plot=False)
    assert not (tmp_path / "learning_curve.png").exists()
    _run(tmp_path)
    write_learning_curve(run, plot=False)
    assert len((tmp_path / "learning_curve.csv").read_text().splitlines()) == 3
