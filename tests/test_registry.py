"""forcefield_et.registry: one resolver from a model name, path or object to a Potential."""

from __future__ import annotations

import pytest
import torch

from forcefield_et import build_model, save_checkpoint


def test_resolve_model_takes_a_potential_as_is_and_loads_names_and_paths(tmp_path):
    from forcefield_et.registry import resolve_model

    model = build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8)
    assert resolve_model(model, dtype="float64") is model  # never converted behind the caller's back
    loaded = resolve_model("pretrained", dtype="float64")
    assert loaded.head.scale.dtype == torch.float64 and not loaded.training
    path = tmp_path / "small.pt"
    save_checkpoint(path, model)
    assert resolve_model(str(path)).hyperparameters["hidden_channels"] == 16
    with pytest.raises(TypeError, match="bundled model name or a checkpoint path"):
        resolve_model(3)


def test_moved_names_still_import_from_checkpoint():
    from forcefield_et import checkpoint, dtypes, registry

    for name in ("BUNDLED_DIR", "bundled_models", "resolve_model_path", "load_model", "export_checkpoint"):
        assert getattr(checkpoint, name) is getattr(registry, name)
    assert checkpoint.resolve_dtype is dtypes.resolve_dtype
    with pytest.raises(AttributeError):
        checkpoint.no_such_name  # noqa: B018
