"""benchmarks.dft_generalisation: new PBE/def2-SVP frames agree with rMD17's labels where they
overlap, the pipeline evaluates the bundled model on them, and a stopped run resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import shared_path

pytest.importorskip("pyscf", reason="benchmarks.dft_generalisation needs PySCF: pip install 'forcefield-et[dft]'")
pytest.importorskip("tblite", reason="benchmarks.dft_generalisation needs tblite: pip install 'forcefield-et[corpus]'")


@pytest.mark.timeout(600)
def test_quick_run_reproduces_rmd17_labels_and_resumes(tmp_path, capsys):
    from benchmarks.dft_generalisation import labelled_frames, main

    data_root = shared_path("rmd17").parent
    out, work = tmp_path / "out", tmp_path / "work"
    main(["--quick", "--data-root", str(data_root), "--out", str(out), "--work", str(work)])
    result = json.loads((out / "dft_generalisation.json").read_text())["molecules"]["ethanol"]
    # PySCF at rMD17's level of theory gives rMD17's forces (eV/Å after the unit conversions) to a few
    # meV/Å, against forces of about 800 meV/Å
    assert result["reference_check_force_mae_meV_A"] < 5.0
    assert 300 < result["mean_abs_force_meV_A"]["new_frames"] < 3000
    bundled = result["models"]["bundled"]
    assert 0 < bundled["new_frames_force_mae_meV_A"] < 500 and 0 < bundled["test_01_force_mae_meV_A"] < 500
    assert (out / "dft_generalisation.png").stat().st_size > 1000
    stored = dict(np.load(work / "quick" / "ethanol.npz"))
    assert np.isfinite(stored["forces"]).all() and stored["positions"].shape == (2, 9, 3)
    capsys.readouterr()
    # everything is labelled: a second call computes no DFT
    again = labelled_frames("ethanol", data_root, 2, 1, 1, work / "quick")
    assert "forces" not in capsys.readouterr().out
    np.testing.assert_array_equal(again["forces"], stored["forces"])
    # a stopped run (one frame unlabelled) labels only what is missing
    stored["forces"][1] = np.nan
    np.savez(work / "quick" / "ethanol.npz", **stored)
    resumed = labelled_frames("ethanol", data_root, 2, 1, 1, work / "quick")
    assert "forces 2/2" in capsys.readouterr().out and "forces 1/2" not in capsys.readouterr().out
    np.testing.assert_allclose(resumed["forces"][1], again["forces"][1], atol=1e-6)
    with pytest.raises(ValueError, match="other settings"):
        labelled_frames("ethanol", data_root, 3, 1, 1, work / "quick")
    # a later run for other molecules keeps this molecule's entry (same settings); a model file that is
    # missing for a molecule is skipped
    summary = json.loads((out / "dft_generalisation.json").read_text())
    assert len(bundled["sha256"]) == 64
    summary["molecules"]["aspirin"] = {"frames": 2, "models": {}, "reference_check_force_mae_meV_A": 1.0}
    (out / "dft_generalisation.json").write_text(json.dumps(summary))
    main(["--quick", "--data-root", str(data_root), "--out", str(out), "--work", str(work), "--again",
          "--model", f"missing={tmp_path}/{{molecule}}.pt"])
    assert "missing.pt not found; skipped" in capsys.readouterr().out.replace(f"{tmp_path}/ethanol", "missing")
    kept = json.loads((out / "dft_generalisation.json").read_text())["molecules"]
    assert set(kept) == {"aspirin", "ethanol"} and set(kept["ethanol"]["models"]) == {"bundled"}
    # without --again, a molecule that already holds every model with the same weights is not evaluated again;
    # a model it lacks makes it evaluated again
    main(["--quick", "--data-root", str(data_root), "--out", str(out), "--work", str(work)])
    assert "ethanol: every model already evaluated" in capsys.readouterr().out
    assert json.loads((out / "dft_generalisation.json").read_text())["molecules"]["ethanol"] == kept["ethanol"]
    main(["--quick", "--data-root", str(data_root), "--out", str(out), "--work", str(work),
          "--model", "again=rmd17-ethanol"])
    printed = capsys.readouterr().out
    assert "already evaluated" not in printed and "ethanol again: new frames" in printed
