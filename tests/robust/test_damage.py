"""Stored files: a damaged checkpoint, result or CIFAR-10 file is detected, reported and never used;
any change of the spec, the data or the code is a new result; divergence survives the CSV."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from robust_support import (
    METRICS,
    Log,
    files_of,
    flip,
    leftovers,
    listing,
    rewrite,
    run_main,
    sweep,
    tiny_spec,
    write_npz,
)

import l2bn.checkpoint
import l2bn.data
import l2bn.results
from l2bn import store
from l2bn.checkpoint import checkpoint_sidecar, save_checkpoint
from l2bn.data import CifarSource, DatasetError, load_cifar10
from l2bn.results import load_result, result_path, run_sweep, sidecar
from l2bn.spec import SweepSpec

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals, flock and fork semantics of POSIX")


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints: reported, and the sweep starts afresh
# ---------------------------------------------------------------------------------------------


def _resave(path: Path, **changes: object) -> None:
    """Rewrite the checkpoint with some entries changed, with a matching checksum file."""
    ck = torch.load(path, weights_only=True)
    ck.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        ck.pop(k)
    save_checkpoint(ck, path)


def _garbage_with_matching_sum(path: Path) -> None:
    """Random bytes in place of the checkpoint, with a checksum file (of the store's format) that
    matches them."""
    store.write_checked(path, os.urandom(4096), meta={"epoch": 1})


def _other_kernels(path: Path) -> str:
    """The kernels the checkpoint at ``path`` was not computed with."""
    return {"fused": "native"}.get(torch.load(path)["kernels"], "fused")


# name, damage (given the checkpoint path), the reason the log must give
CHECKPOINT_DAMAGE = [
    ("truncated", lambda p: rewrite(p, p.read_bytes()[: p.stat().st_size // 2]), "does not match"),
    ("empty", lambda p: rewrite(p, b""), "does not match"),
    ("bit flip", lambda p: flip(p, 0.6, 3), "does not match"),
    ("checksum file missing", lambda p: checkpoint_sidecar(p).unlink(), "missing"),
    ("checksum file garbled", lambda p: rewrite(checkpoint_sidecar(p), b"\x00{not json"), "unreadable"),
    ("checksum file not an object", lambda p: rewrite(checkpoint_sidecar(p), b"[1, 2]"), "unreadable"),
    ("wrong checksum", lambda p: rewrite(checkpoint_sidecar(p), b'{"sha256": "00"}'), "does not match"),
    ("not a torch file", _garbage_with_matching_sum, "cannot be unpickled"),
    ("state missing", lambda p: _resave(p, gen=None), "lacks"),
    ("another spec", lambda p: _resave(p, spec={**torch.load(p)["spec"], "seed": 7}), "another spec"),
    ("another format", lambda p: _resave(p, format=1), "format"),
    ("another device", lambda p: _resave(p, device_type="cuda"), "written on cuda"),
    ("epoch out of range", lambda p: _resave(p, epoch=99), "out of range"),
    ("other kernels", lambda p: _resave(p, kernels=_other_kernels(p)), "kernels, this run has the"),
]


@pytest.mark.parametrize("damage,reason", [c[1:] for c in CHECKPOINT_DAMAGE],
                         ids=[c[0] for c in CHECKPOINT_DAMAGE])
def test_a_damaged_checkpoint_is_reported_and_the_sweep_starts_afresh(ckpt_case, tmp_path, damage, reason):
    spec, unbroken, src = ckpt_case
    out = tmp_path / "out"
    shutil.copytree(src, out)
    damage(files_of(out)["ckpt"])
    res, log = sweep(spec, out)
    assert log.has("cannot resume from checkpoint", reason, "starting from scratch"), log
    assert res.provenance["resumed_from_epoch"] == 0
    pd.testing.assert_frame_equal(res.table, unbroken, check_exact=True)
    assert leftovers(out) == []


def test_a_checkpoint_of_other_code_is_not_resumed(ckpt_case, tmp_path, monkeypatch):
    spec, unbroken, src = ckpt_case
    out = tmp_path / "out"
    shutil.copytree(src, out)
    monkeypatch.setattr(l2bn.checkpoint, "code_version", lambda: "0123456789abcdef")
    res, log = sweep(spec, out)
    assert log.has("cannot resume", "another version of the training code")
    pd.testing.assert_frame_equal(res.table, unbroken, check_exact=True)


# ---------------------------------------------------------------------------------------------
# Damaged results: detected, reported, recomputed, never loaded
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored(files, tmp_path_factory):
    """A stored tiny result and one of another spec (seed 1)."""
    d = tmp_path_factory.mktemp("stored")
    spec = tiny_spec(files["tiny"])
    res = run_sweep(spec, "cpu", "wide", d / "out", progress=False, log=lambda _: None)
    other = run_sweep(tiny_spec(files["tiny"], seed=1), "cpu", "wide", d / "other", progress=False,
                      log=lambda _: None)
    return spec, res, other, d


def _edit_json(path: Path, edit) -> None:  # noqa: ANN001
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, indent=2))


RESULT_DAMAGE = [
    ("csv truncated", lambda c, j: rewrite(c, c.read_bytes()[: c.stat().st_size // 2])),
    ("csv empty", lambda c, j: rewrite(c, b"")),
    ("csv bit flip", lambda c, j: flip(c, 0.5, 0)),
    ("csv row appended", lambda c, j: rewrite(c, c.read_bytes() + c.read_bytes().splitlines(True)[-1])),
    ("csv missing", lambda c, j: c.unlink()),
    ("json truncated", lambda c, j: rewrite(j, j.read_bytes()[: j.stat().st_size // 2])),
    ("json bit flip", lambda c, j: flip(j, 0.5, 1)),
    ("json table checksum altered", lambda c, j: _edit_json(j, lambda m: m.update(sha256="0" * 64))),
    ("json provenance altered", lambda c, j: _edit_json(j, lambda m: m.update(device_name="a GPU"))),
    ("json not an object", lambda c, j: rewrite(j, b"[]")),
    ("json empty object", lambda c, j: rewrite(j, b"{}")),
    ("json not text", lambda c, j: rewrite(j, b"\xff\xfe\x00\x01")),
    ("json missing", lambda c, j: j.unlink()),
]


@pytest.mark.parametrize("damage", [c[1] for c in RESULT_DAMAGE], ids=[c[0] for c in RESULT_DAMAGE])
def test_a_damaged_result_is_reported_recomputed_and_never_loaded(stored, tmp_path, damage):
    spec, res, _, d = stored
    out = tmp_path / "out"
    shutil.copytree(d / "out", out)
    csv = result_path(spec, out)
    damage(csv, sidecar(csv))
    log = Log()
    assert load_result(csv, log, spec) is None  # never handed to a figure
    assert log.has("ignoring damaged result", csv.name)
    again, log = sweep(spec, out)
    assert not again.reused and log.has("ignoring damaged result")
    pd.testing.assert_frame_equal(again.table, res.table, check_exact=True)
    assert csv.read_bytes() == res.path.read_bytes()
    reloaded = load_result(csv, pytest.fail, spec)
    pd.testing.assert_frame_equal(reloaded.table, res.table, check_exact=True)


def test_a_result_of_another_spec_under_this_name_is_not_loaded(stored, tmp_path):
    spec, res, other, _ = stored
    out = tmp_path / "out"
    csv = result_path(spec, out)
    csv.parent.mkdir(parents=True)
    shutil.copy(other.path, csv)
    shutil.copy(sidecar(other.path), sidecar(csv))
    log = Log()
    assert load_result(csv, log, spec) is None and log.has("another spec")
    again, _ = sweep(spec, out)
    assert not again.reused
    pd.testing.assert_frame_equal(again.table, res.table, check_exact=True)


# ---------------------------------------------------------------------------------------------
# Any change of a spec, the data or the code is a new result
# ---------------------------------------------------------------------------------------------


SPEC_CHANGES = {
    "lrs": dict(lrs=[0.01, 0.2]),
    "l2s": dict(l2s=[1e-4, 1e-3]),
    "epochs": dict(epochs=3),
    "seed": dict(seed=1),
    "norm": dict(norm="weight"),
    "optimizer": dict(optimizer="momentum"),
    "batch_size": dict(batch_size=8),
    "n_train": dict(n_train=32),
    "n_val": dict(n_val=8),
    "widths": dict(widths=(2, 2, 2, 3)),
    "augment": dict(augment=False),
}


@pytest.mark.parametrize("change", list(SPEC_CHANGES.values()), ids=list(SPEC_CHANGES))
def test_a_changed_spec_never_reuses_a_stored_result(stored, tmp_path, change):
    spec, res, _, d = stored
    out = tmp_path / "out"
    shutil.copytree(d / "out", out)
    before = listing(out)
    changed = tiny_spec(Path(spec.dataset[4:]), **change)
    new, log = sweep(changed, out)
    assert not new.reused and not log.has("reusing") and new.path != res.path
    assert json.loads(json.dumps(new.provenance["spec"])) == json.loads(json.dumps(changed.to_dict()))
    assert {k: v for k, v in listing(out).items() if k in before} == before  # the old result is intact
    assert sweep(spec, out)[0].reused


def test_a_changed_hyperparameter_never_reuses(files, tmp_path):
    a = tiny_spec(files["tiny"], optimizer="momentum", epochs=1)
    b = tiny_spec(files["tiny"], optimizer="momentum", epochs=1, hyper={"rho": 0.5})
    assert sweep(a, tmp_path)[0].path != sweep(b, tmp_path)[0].path
    assert not sweep(b, tmp_path, force=True)[0].reused


def test_changed_data_or_code_never_reuses(files, tmp_path, monkeypatch):
    npz = shutil.copy(files["tiny"], tmp_path / "data.npz")
    spec = tiny_spec(Path(npz), epochs=1)
    out = tmp_path / "out"
    first, _ = sweep(spec, out)
    assert sweep(spec, out)[0].reused
    write_npz(Path(npz), seed=1)  # same name, other images
    second, _ = sweep(spec, out)
    assert not second.reused and second.path != first.path
    monkeypatch.setattr(l2bn.results, "code_version", lambda: "0123456789abcdef")
    third, log = sweep(spec, out)
    assert not third.reused and third.path not in (first.path, second.path) and not log.has("reusing")
    assert third.provenance["code_version"] == "0123456789abcdef"


# ---------------------------------------------------------------------------------------------
# Divergence survives storage
# ---------------------------------------------------------------------------------------------


def test_a_diverged_model_survives_the_csv_round_trip(diverging, tmp_path):
    res, _ = sweep(diverging, tmp_path)
    t = res.table
    dead = t[t.model == 1]
    first = int(dead[dead.diverged].epoch.min())
    assert first <= 2, "η = 10²⁰ should diverge within two epochs"
    assert dead[dead.epoch >= first].diverged.all() and not dead[dead.epoch < first].diverged.any()
    assert dead[dead.diverged][METRICS].isna().all().all()
    assert not t[t.model == 0].diverged.any() and t[t.model == 0][METRICS].notna().all().all()
    loaded, _ = sweep(diverging, tmp_path)
    assert loaded.reused
    assert loaded.table.diverged.dtype == bool
    pd.testing.assert_frame_equal(loaded.table, t, check_exact=True)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 integrity
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_cifar(private_data_root, monkeypatch):
    """A CIFAR-10 folder of 6 small batch files under the data root, with their md5s as the source."""
    import pickle

    pytest.importorskip("torchvision")
    folder = private_data_root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5s = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, 20).tolist()}
        raw = pickle.dumps(batch)
        (folder / name).write_bytes(raw)
        md5s.append((name, hashlib.md5(raw).hexdigest()))
    source = CifarSource("https://example.invalid/cifar-10-python.tar.gz", "0" * 32, tuple(md5s))
    monkeypatch.setattr(l2bn.data, "cifar10_source", lambda: source)
    return folder, source


CIFAR_DAMAGE = {
    "missing": lambda p: p.unlink(),
    "partial": lambda p: rewrite(p, p.read_bytes()[:1000]),
    "tampered": lambda p: flip(p, 0.7, 2),
}


@pytest.mark.parametrize("damage", list(CIFAR_DAMAGE.values()), ids=list(CIFAR_DAMAGE))
def test_a_missing_partial_or_tampered_cifar_file_is_caught_by_md5(fake_cifar, tmp_path, capsys, damage):
    folder, source = fake_cifar
    spec = SweepSpec.from_profile("smoke", "sgd", "cifar10", lrs=[0.1], l2s=[0.0], epochs=1, batch_size=16,
                                  n_train=48, n_val=16, n_test=16, widths=(1, 1, 1, 1))
    assert not sweep(spec, tmp_path / "intact")[0].reused  # the intact folder loads and trains
    damage(folder / "data_batch_3")
    with pytest.raises(DatasetError) as err:
        load_cifar10(folder.parent, source)
    msg = str(err.value)
    assert msg.startswith("dataset:") and "data_batch_3" in msg and "md5" in msg
    assert "l2bn info --fetch-cifar10" in msg  # how to fetch it again
    out = tmp_path / "out"
    argv = ["sweep", "--optimizer", "sgd", "--profile", "smoke", "--dataset", "cifar10", "--device", "cpu",
            "--out", str(out)]
    assert run_main(argv) == 2
    err_line = capsys.readouterr().err.strip()
    assert err_line.startswith("l2bn sweep: error: dataset:") and "md5" in err_line and "\n" not in err_line
    assert not out.exists()
