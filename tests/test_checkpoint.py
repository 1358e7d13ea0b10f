"""Checkpoint I/O (forcefield_et.checkpoint): round trip, refusal of unsafe/corrupt/future files,
and model-name resolution."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import forcefield_et
from forcefield_et import CheckpointError, build_model, load_model, registry, save_checkpoint
from forcefield_et import checkpoint as ckpt
from forcefield_et.checkpoint import FORMAT_VERSION, checksum, read_checkpoint
from forcefield_et.registry import BUNDLED_DIR, bundled_models, export_checkpoint, resolve_model_path

# ethanol-like geometry (Å): C C O H H H H H H
ETHANOL_Z = torch.tensor([6, 6, 8, 1, 1, 1, 1, 1, 1])
ETHANOL_POS = torch.tensor([
    [-0.0007, -0.5570, 0.0000], [1.2016, 0.3832, 0.0000], [-1.1732, 0.2464, 0.0000],
    [-0.0289, -1.1923, 0.8899], [-0.0289, -1.1923, -0.8899], [1.1638, 1.0311, 0.8816],
    [1.1638, 1.0311, -0.8816], [2.1411, -0.1823, 0.0000], [-1.9488, -0.3188, 0.0000],
])


def tiny_model(seed=0):
    torch.manual_seed(seed)
    model = build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8)
    with torch.no_grad():  # non-trivial buffers, so that they are checked too
        model.head.atomic_energies.copy_(torch.linspace(-10, -1, len(model.elements)))
        model.head.scale.fill_(1.7)
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    model = tiny_model()
    meta = {"description": "unit test", "validation": {"x": 1.5}}
    path = save_checkpoint(tmp_path / "model.pt", model, meta)
    return model, path


def raw(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def energy(model, pos=ETHANOL_POS):
    return model(ETHANOL_Z, pos.to(model.head.scale.dtype))["energy"].detach()


# ----------------------------------------------------------------------------- round trip
def test_roundtrip_weights_and_metadata(saved):
    model, path = saved
    loaded = load_model(path)
    original = model.state_dict()
    assert set(loaded.state_dict()) == set(original)
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert torch.equal(energy(loaded), energy(model))
    assert not loaded.training

    meta = read_checkpoint(path)["metadata"]
    assert meta["hyperparameters"] == model.hyperparameters
    assert meta["units"] == {"length": "Angstrom", "energy": "eV", "forces": "eV/Angstrom",
                             "stress": "eV/Angstrom^3"}
    assert meta["package_version"] == forcefield_et.__version__
    assert "git_commit" in meta  # a commit hash, or None outside a git checkout
    assert meta["git_commit"] is None or len(meta["git_commit"]) == 40
    assert meta["description"] == "unit test" and meta["validation"] == {"x": 1.5}
    assert loaded.metadata["hyperparameters"]["hidden_channels"] == 16
    assert Path(loaded.checkpoint_path) == path


def test_load_in_float64(saved):
    model, path = saved
    loaded = load_model(path, dtype="float64")
    assert loaded.head.scale.dtype == torch.float64
    assert torch.allclose(energy(loaded).float(), energy(model), rtol=1e-5, atol=1e-5)


def test_training_state_roundtrip(tmp_path):
    model = tiny_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(ETHANOL_Z, ETHANOL_POS)["forces"].pow(2).sum().backward()
    opt.step()
    ema = [p.detach().clone() for p in model.parameters()]
    config = {"a": [1, 2], "b": None}
    state = {"step": 7, "optimizer": opt.state_dict(), "ema": ema,
             "best_valid": float("inf"), "plateau": [1.0, 0, 0.5], "config": config}
    path = save_checkpoint(tmp_path / "last.pt", model, training_state=state)
    back = read_checkpoint(path)["training_state"]
    assert back["step"] == 7 and back["best_valid"] == float("inf") and back["config"] == config
    assert all(torch.equal(a, b) for a, b in zip(back["ema"], state["ema"], strict=True))
    restored = torch.optim.AdamW(tiny_model().parameters(), lr=1e-3)
    restored.load_state_dict(back["optimizer"])
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_non_json_metadata_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path / "m.pt", tiny_model(), {"bad": object()})
    assert not (tmp_path / "m.pt").exists()


def test_export_checkpoint_drops_training_state_and_adds_card(tmp_path):
    model = tiny_model()
    src = save_checkpoint(tmp_path / "last.pt", model, training_state={"step": 3})
    dst = export_checkpoint(src, tmp_path / "out" / "inference.pt", {"name": "demo", "limits": "none"})
    payload = read_checkpoint(dst)
    assert "training_state" not in payload
    assert payload["metadata"]["name"] == "demo" and payload["metadata"]["limits"] == "none"
    assert torch.equal(energy(load_model(dst)), energy(model))


# ----------------------------------------------------------------------------- unsafe files
class _CreatesFile:
    """Unpickling this object would create a file (code execution during load)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _RunsShellCommand:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload_class", [_CreatesFile, _RunsShellCommand], ids=["open", "os.system"])
@pytest.mark.parametrize("where", ["top", "state_dict"])
def test_pickled_code_is_refused_and_never_executed(tmp_path, payload_class, where):
    marker = tmp_path / "marker"
    model = tiny_model()
    payload = {"format": "forcefield_et", "format_version": 1, "metadata": json.dumps({}),
               "state_dict": dict(model.state_dict()), "checksum": "0"}
    if where == "top":
        payload["extra"] = payload_class(marker)
    else:
        payload["state_dict"]["evil"] = payload_class(marker)
    path = tmp_path / "evil.pt"
    torch.save(payload, path)  # plain torch.save, as an attacker would
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="pickled Python objects|not allowed") as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists(), "loading a checkpoint executed pickled code"


# ----------------------------------------------------------------------------- corrupt files
def test_truncated_file(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    for cut in (len(data) // 2, 100, 1):
        bad = tmp_path / f"truncated_{cut}.pt"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or not a checkpoint") as info:
            read_checkpoint(bad)
        assert str(bad) in str(info.value)
        with pytest.raises(CheckpointError):
            load_model(bad)


def test_random_bytes_and_empty_file(tmp_path):
    bad = tmp_path / "random.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(20_000))
    with pytest.raises(CheckpointError, match="random.pt"):
        read_checkpoint(bad)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):
        read_checkpoint(empty)


def test_not_a_forcefield_et_checkpoint(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a forcefield_et checkpoint"):
        read_checkpoint(path)


def test_modified_tensor_fails_the_checksum(saved, tmp_path):
    _, path = saved
    payload = raw(path)
    name = "head.mlp.0.weight"
    payload["state_dict"][name] = payload["state_dict"][name].clone()
    payload["state_dict"][name][0, 0] += 1e-6  # one tiny change; checksum entry kept as it was
    bad = tmp_path / "tampered.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="checksum"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="checksum"):
        load_model(bad)


def test_modified_metadata_fails_the_checksum(saved, tmp_path):
    _, path = saved
    payload = raw(path)
    meta = json.loads(payload["metadata"])
    meta["hyperparameters"]["cutoff"] = 6.0
    payload["metadata"] = json.dumps(meta, sort_keys=True)
    bad = tmp_path / "tampered_meta.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="checksum"):
        read_checkpoint(bad)


def test_checksum_matches_and_covers_every_entry(saved):
    _, path = saved
    payload = raw(path)
    assert checksum(payload) == payload["checksum"]
    payload["format_version"] = 0
    assert checksum(payload) != payload["checksum"]


def test_future_format_version_asks_to_upgrade(saved, tmp_path):
    _, path = saved
    payload = raw(path)
    payload["format_version"] = 99
    payload["checksum"] = checksum(payload)  # a valid file, just from the future
    bad = tmp_path / "future.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="(?i)upgrade") as info:
        read_checkpoint(bad)
    assert "99" in str(info.value) and str(FORMAT_VERSION) in str(info.value)


def test_incomplete_payload(saved, tmp_path):
    _, path = saved
    payload = raw(path)
    del payload["state_dict"]
    bad = tmp_path / "incomplete.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="state_dict"):
        read_checkpoint(bad)


def test_weights_not_matching_hyperparameters(saved, tmp_path):
    _, path = saved
    payload = raw(path)
    meta = json.loads(payload["metadata"])
    meta["hyperparameters"]["hidden_channels"] = 32
    payload["metadata"] = json.dumps(meta, sort_keys=True)
    payload["checksum"] = checksum(payload)
    bad = tmp_path / "mismatch.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="hyperparameters"):
        load_model(bad)


def _tampered(path, out, change_metadata=None, change_state=None):
    """A copy of the checkpoint at ``path`` with edited metadata / state dict and a valid checksum."""
    payload = raw(path)
    meta = json.loads(payload["metadata"])
    if change_metadata:
        change_metadata(meta)
    if change_state:
        change_state(payload["state_dict"])
    payload["metadata"] = json.dumps(meta, sort_keys=True)
    payload["checksum"] = checksum(payload)
    torch.save(payload, out)
    return out


def _set_hyper(**values):
    return lambda meta: meta["hyperparameters"].update(values)


@pytest.mark.parametrize(
    "change_metadata, change_state, field",
    [
        (_set_hyper(num_layers=10**6), None, "hyperparameters.num_layers"),
        (_set_hyper(num_layers=2), None, "hyperparameters.num_layers .*weights hold 1 layer"),
        (_set_hyper(hidden_channels=0), None, "hyperparameters.hidden_channels"),
        (_set_hyper(hidden_channels=10**9), None, "hyperparameters.hidden_channels"),
        (_set_hyper(hidden_channels="16"), None, "hyperparameters.hidden_channels"),
        (_set_hyper(num_rbf=-3), None, "hyperparameters.num_rbf"),
        (_set_hyper(num_heads=3), None, "hyperparameters.num_heads .*must divide"),
        (_set_hyper(cutoff=float("nan")), None, "hyperparameters.cutoff"),
        (_set_hyper(cutoff=float("inf")), None, "hyperparameters.cutoff"),
        (_set_hyper(cutoff=0.0), None, "hyperparameters.cutoff"),
        (_set_hyper(cutoff=-5.0), None, "hyperparameters.cutoff"),
        (_set_hyper(zbl=float("nan")), None, "hyperparameters.zbl"),
        (_set_hyper(elements=[1, 6, 7, 8, 9, 16, 500]), None, "hyperparameters.elements"),
        (_set_hyper(elements=[1, 1, 7, 8, 9, 16, 17]), None, "hyperparameters.elements"),
        (_set_hyper(elements=[1, 6, 7]), None, "'representation.embedding.weight'.*3 elements"),
        (_set_hyper(elements=[1, 6, 7, 8, 9, 16, 35]), None, "'element_index'\\] maps Z=17"),
        (_set_hyper(depth=3), None, "unknown entries \\['depth'\\]"),
        (lambda meta: meta.pop("hyperparameters"), None, "hyperparameters"),
        (None, lambda sd: sd["element_index"].__setitem__(6, 40), "'element_index'\\] maps Z=6 to 40"),
        (None, lambda sd: sd.__setitem__("head.mlp.0.weight", sd["head.mlp.0.weight"].to(torch.int32)),
         "'head.mlp.0.weight'.* must be float32 or float64"),
        (None, lambda sd: sd["head.scale"].fill_(float("nan")), "'head.scale'.* NaN"),
        (None, lambda sd: sd.__setitem__("representation.rbf.means", torch.zeros(5)), "'representation.rbf.means'"),
    ],
)
def test_checkpoint_entries_are_range_checked_before_the_model_is_built(
    saved, tmp_path, monkeypatch, change_metadata, change_state, field
):
    _, path = saved
    bad = _tampered(path, tmp_path / "bad.pt", change_metadata, change_state)
    built = []
    monkeypatch.setattr(forcefield_et.model.Potential, "__init__", lambda *a, **k: built.append(1))
    with pytest.raises(CheckpointError, match=field) as info:
        load_model(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    assert not built  # refused before anything was allocated


def test_export_refuses_a_checkpoint_whose_entries_do_not_check(saved, tmp_path):
    _, path = saved
    bad = _tampered(path, tmp_path / "bad.pt", _set_hyper(cutoff=-1.0))
    with pytest.raises(CheckpointError, match="hyperparameters.cutoff"):
        export_checkpoint(bad, tmp_path / "exported.pt")
    assert not (tmp_path / "exported.pt").exists()


def test_bundled_checkpoints_pass_the_entry_checks():
    for name, path in bundled_models().items():
        payload = read_checkpoint(path)
        ckpt.check_model_entries(payload["metadata"], payload["state_dict"], path)
        assert load_model(name).hyperparameters == payload["metadata"]["hyperparameters"]


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "nope.pt")


# ----------------------------------------------------------------------------- name resolution
def test_existing_file_resolves_to_itself(saved, tmp_path, monkeypatch):
    _, path = saved
    assert resolve_model_path(path) == path
    assert resolve_model_path(str(path)) == path
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("model.pt").resolve() == path.resolve()


def test_real_bundled_names_resolve_into_the_package():
    bundled = bundled_models()
    assert bundled, f"no bundled checkpoints in {BUNDLED_DIR}: the package ships them"
    for name, file in bundled.items():
        assert resolve_model_path(name) == file
        assert resolve_model_path(f"{name}.pt") == file
        assert file.parent == BUNDLED_DIR
        read_checkpoint(file)  # every shipped checkpoint is valid


@pytest.fixture
def fake_bundle(tmp_path, monkeypatch):
    """A stand-in for forcefield_et/checkpoints/ holding 'pretrained' and 'rmd17-aspirin'."""
    folder = tmp_path / "bundle"
    save_checkpoint(folder / "pretrained.pt", tiny_model(1))
    save_checkpoint(folder / "rmd17-aspirin.pt", tiny_model(2))
    monkeypatch.setattr(registry, "BUNDLED_DIR", folder)
    return folder


def test_bundled_names_resolve(fake_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # holds no pretrained.pt
    assert resolve_model_path("pretrained") == fake_bundle / "pretrained.pt"
    assert resolve_model_path("pretrained.pt") == fake_bundle / "pretrained.pt"
    assert resolve_model_path("rmd17-aspirin") == fake_bundle / "rmd17-aspirin.pt"
    assert torch.equal(energy(load_model("rmd17-aspirin")), energy(tiny_model(2)))
    # a bundled name inside another folder is a path, not a name
    with pytest.raises(CheckpointError):
        resolve_model_path("some/folder/pretrained.pt")


def test_unknown_name_lists_the_bundled_names(fake_bundle):
    with pytest.raises(CheckpointError) as info:
        resolve_model_path("pretrianed")
    message = str(info.value)
    assert "pretrianed" in message and "pretrained" in message and "rmd17-aspirin" in message


def test_unknown_name_without_bundled_models(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "BUNDLED_DIR", tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="none installed"):
        resolve_model_path("pretrained")


def test_local_file_shadows_the_bundled_model(fake_bundle, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    save_checkpoint(work / "pretrained.pt", tiny_model(3))
    monkeypatch.chdir(work)
    resolved = resolve_model_path("pretrained.pt")
    assert resolved.resolve() == (work / "pretrained.pt").resolve()
    assert torch.equal(energy(load_model("pretrained.pt")), energy(tiny_model(3)))
    # the bare name still means the bundled model
    assert resolve_model_path("pretrained") == fake_bundle / "pretrained.pt"


def test_a_torchscript_export_is_named_as_such(tmp_path):
    import torch

    from forcefield_et import load_model
    from forcefield_et.calculators.ase import ETCalculator
    from forcefield_et.checkpoint import CheckpointError, is_torchscript_file, read_checkpoint

    path = tmp_path / "model.torchscript.pt"
    torch.jit.script(load_model("pretrained")).save(str(path))
    assert is_torchscript_file(path)
    from forcefield_et.registry import bundled_models

    assert not is_torchscript_file(bundled_models()["pretrained"])
    with pytest.raises(CheckpointError, match="is a TorchScript model .* not a checkpoint"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="TorchForce"):
        ETCalculator(str(path))

