"""Fixtures of the robustness tests (tests/robust): the npz files, a private data root, one thread
per module, and the sweeps several modules compare against (computed once a session).

Sweeps through the real CLI run in subprocesses on a tiny 16×16 npz dataset (smoke profile, CPU, one
thread); the rest runs in-process on an even smaller spec (``robust_support.tiny_spec``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from robust_support import cli_args, cli_env, files_of, interrupted, run_cli, tiny_spec, write_file, write_npz

from l2bn.results import run_sweep


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The npz files of the robustness tests: good ones and one per kind of malformation."""
    d = tmp_path_factory.mktemp("npz")
    x8 = np.zeros((96, 8, 8, 3), np.uint8)
    y = np.zeros(96, np.int64)
    return {
        "tiny": write_npz(d / "tiny.npz"),  # 8×8, for in-process sweeps
        "cli": write_npz(d / "cli.npz", n_train=800, n_test=512, size=16),  # the smoke profile's sizes
        "missing_array": write_npz(d / "missing_array.npz", y_test=None),
        "float_images": write_npz(d / "float_images.npz", x_train=x8.astype(np.float32)),
        "three_dim": write_npz(d / "three_dim.npz", x_train=x8[..., 0]),
        "five_channels": write_npz(d / "five_channels.npz", x_train=np.zeros((96, 8, 8, 5), np.uint8)),
        "label_10": write_npz(d / "label_10.npz", y_train=y + 10),
        "label_negative": write_npz(d / "label_negative.npz", y_train=y - 1),
        "label_float": write_npz(d / "label_float.npz", y_train=y.astype(np.float64)),
        "label_length": write_npz(d / "label_length.npz", y_train=y[:50]),
        "tiny_images": write_npz(d / "tiny_images.npz", size=4),
        "too_few": write_npz(d / "too_few.npz", n_train=40, n_test=8),
        "not_npz": write_file(d / "not_npz.npz", b"this is not a zip archive\n"),
    }


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every robustness module on one thread (``one_thread`` of tests/conftest.py)."""


@pytest.fixture(autouse=True)
def _private_data_root(private_data_root: Path) -> Path:
    """Every robustness test with its own data root (``private_data_root`` of tests/conftest.py)."""
    return private_data_root


@pytest.fixture(scope="session")
def cli_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="session")
def baseline(files: dict[str, Path], cli_root: Path):
    """``baseline(impl)``: (CSV bytes, provenance) of an uninterrupted CLI sweep computed with ``impl``.

    ``--impl auto`` measures which of wide and loop is faster, so two runs may differ in it; a
    resumed run must match an unbroken run *with the same implementation*."""
    cache: dict[str, tuple[bytes, dict]] = {}
    env = cli_env(cli_root)

    def run(impl: str) -> tuple[bytes, dict]:
        out = cli_root / f"baseline-{impl}"
        rc, _, se = run_cli(cli_args(files["cli"], out, impl), env)
        assert rc == 0, se
        f = files_of(out)
        meta = json.loads(f["json"].read_text())
        cache[meta["impl"]] = (f["csv"].read_bytes(), meta)
        return cache[meta["impl"]]

    first = run("auto")

    def get(impl: str) -> tuple[bytes, dict]:
        if impl == "auto":
            return first
        return cache[impl] if impl in cache else run(impl)

    return get


@pytest.fixture(scope="module")
def ckpt_case(files, tmp_path_factory):
    """A 3-epoch tiny spec: its unbroken table and a folder holding a checkpoint after epoch 1
    (per module, so that it is computed on the module's one thread)."""
    d = tmp_path_factory.mktemp("ckpt")
    spec = tiny_spec(files["tiny"], epochs=3)
    unbroken = run_sweep(spec, "cpu", "wide", d / "unbroken", progress=False, log=lambda _: None).table
    interrupted(spec, d / "interrupted")
    return spec, unbroken, d / "interrupted"


@pytest.fixture(scope="session")
def diverging(files):
    """sgd with η = 10²⁰ next to a sane η: the large one's loss becomes NaN in epoch 1 of 3, so
    that two epochs follow its divergence. (With η = 10⁶ the epoch depended on the processor's
    rounding: 1 or 2 on the AVX2 machines before, 3, the last, on an AVX-512 one with the fused
    kernel.) Errors after every epoch, so that every measure of every living row is checked."""
    spec = tiny_spec(files["tiny"], lrs=[0.1, 1e20], epochs=3, evaluate="every")
    return spec
