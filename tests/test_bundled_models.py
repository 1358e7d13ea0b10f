"""The checkpoints shipped in forcefield_et/checkpoints: they load offline in the safe format, and
their cards' test errors are what they really score (re-measured here on part of the test split)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forcefield_et import load_model
from forcefield_et.checkpoint import read_checkpoint
from forcefield_et.data import read_rmd17
from forcefield_et.evaluation import error_metrics, predict
from forcefield_et.registry import bundled_models
from tests.conftest import shared_path

BUNDLED = bundled_models()
FINE_TUNED = sorted(name for name in BUNDLED if name.startswith("rmd17-"))


def test_the_pretrained_checkpoint_is_bundled_and_loads_weights_only():
    assert "pretrained" in BUNDLED
    payload = torch.load(BUNDLED["pretrained"], map_location="cpu", weights_only=True)
    assert "optimizer" not in payload and "training_state" not in payload
    meta = read_checkpoint(BUNDLED["pretrained"])["metadata"]
    assert meta["name"] == "pretrained" and meta["training"]["step"] > 0


@pytest.mark.parametrize("name", FINE_TUNED)
def test_fine_tuned_rmd17_models_match_the_test_errors_in_their_cards(name):
    molecule = name.removeprefix("rmd17-")
    card = read_checkpoint(BUNDLED[name])["metadata"]["test_errors"]
    test = read_rmd17(shared_path("rmd17", f"rmd17_{molecule}_test_01.npz"))
    test = test.subset(np.arange(0, len(test), 10))  # every 10th test frame: 100 frames
    with torch.enable_grad():
        measured = error_metrics(test, predict(load_model(name), test))
    # the card's figure is over all 1000 test frames; a 100-frame sample agrees to within 15 %
    assert measured["force_mae_meV_A"] == pytest.approx(card["force_mae_meV_A"], rel=0.15)
