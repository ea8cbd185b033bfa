"""Robustness of sweeps: interruption (SIGKILL, Ctrl-C), damaged files, concurrent runs, spec changes,
divergence across storage, bad input and determinism.

Sweeps through the real CLI run in subprocesses on a tiny 16×16 npz dataset (smoke profile, CPU, one
thread); the rest runs in-process on an even smaller spec. ``_robust_helper.py`` runs the CLI with a
SIGKILL (or a pause) at an exact ``os.replace``, the points where a crash is most likely to leave a
half-written state.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import l2bn.data
import l2bn.results
import l2bn.train
from l2bn import cli
from l2bn.data import CifarSource, DatasetError, load_cifar10
from l2bn.profiles import OPTIMIZERS
from l2bn.results import SweepRunning, load_result, result_path, run_sweep, sidecar
from l2bn.train import (
    NORMS,
    SweepSpec,
    check_impl,
    checkpoint_sidecar,
    code_version,
    resolve_device,
    save_checkpoint,
    validate_params,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals, flock and fork semantics of POSIX")

HERE = Path(__file__).parent
HELPER = HERE / "_robust_helper.py"
CLI_EPOCHS = 4
# Every parameter a validation message may name (the text before the first colon).
PARAMS = {"optimizer", "profile", "dataset", "device", "impl", "lrs", "l2s", "epochs", "batch_size",
          "n_train", "n_val", "n_test", "widths", "norm", "seed", "augment", "hyper", "out", "spec",
          "data", "precision"}
TIME_FIELDS = {"started", "finished", "session_wall_time_s", "wall_time_s", "sidecar_sha256"}


# ---------------------------------------------------------------------------------------------
# Data files and specs
# ---------------------------------------------------------------------------------------------


def write_npz(path: Path, n_train: int = 96, n_test: int = 32, size: int = 8, seed: int = 0,
              **replace: object) -> Path:
    """Learnable-ish uint8 NHWC images (a class pattern plus noise); ``replace`` swaps or, given
    None, drops arrays, to make a malformed file."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (10, size, size, 3)).astype(np.float32)

    def images(y: np.ndarray) -> np.ndarray:
        noise = rng.integers(0, 256, (len(y), size, size, 3))
        return (0.6 * base[y] + 0.4 * noise).astype(np.uint8)

    y_train, y_test = rng.integers(0, 10, n_train), rng.integers(0, 10, n_test)
    arrays = {"x_train": images(y_train), "y_train": y_train, "x_test": images(y_test), "y_test": y_test}
    for k, v in replace.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The npz files of this module: good ones and one per kind of malformation."""
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
        "not_npz": _write(d / "not_npz.npz", b"this is not a zip archive\n"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def tiny_spec(npz: Path, **kw: object) -> SweepSpec:
    """A sweep of seconds: 2 models, 8×8 images, widths 2, three steps an epoch."""
    args: dict = dict(lrs=[0.01, 0.1], l2s=[1e-4], epochs=2, batch_size=16, n_train=48, n_val=16,
                      n_test=32, widths=(2, 2, 2, 2))
    args.update(kw)
    optimizer = args.pop("optimizer", "sgd")
    return SweepSpec.from_profile("smoke", optimizer, f"npz:{npz}", **args)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the machine is shared, and CPU numbers depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def private_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data_root"
    monkeypatch.setenv("L2BN_DATA", str(root))
    return root


class Log(list):
    def __call__(self, msg: str) -> None:
        self.append(msg)

    def has(self, *parts: str) -> bool:
        return any(all(p in m for p in parts) for m in self)


def sweep(spec: SweepSpec, out: Path, **kw: object) -> tuple[l2bn.results.SweepResult, Log]:
    log = Log()
    kw.setdefault("impl", "wide")
    return run_sweep(spec, device="cpu", out=out, progress=False, log=log, **kw), log


def listing(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its content."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(out: Path) -> list[str]:
    """Temporary, lock and checkpoint files, which a finished sweep must not leave behind."""
    return [p for p in listing(out) if p.endswith((".tmp", ".lock", ".pt", ".sha256"))]


# ---------------------------------------------------------------------------------------------
# The CLI in subprocesses
# ---------------------------------------------------------------------------------------------


def cli_env(data_root: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "L2BN_DATA": str(data_root), **extra}


def cli_args(npz: Path, out: Path, impl: str = "auto") -> list[str]:
    return ["sweep", "--optimizer", "adam", "--profile", "smoke", "--dataset", f"npz:{npz}",
            "--device", "cpu", "--epochs", str(CLI_EPOCHS), "--impl", impl, "--no-progress",
            "--out", str(out)]


def start(args: list[str], env: dict[str, str], helper: bool = False, **popen: object) -> subprocess.Popen:
    prefix = [sys.executable, str(HELPER)] if helper else [sys.executable, "-m", "l2bn"]
    return subprocess.Popen(prefix + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=env["L2BN_DATA"], **popen)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def run_cli(args: list[str], env: dict[str, str], helper: bool = False, **extra: str) -> tuple[int, str, str]:
    return finish(start(args, {**env, **extra}, helper=helper))


def wait_until(cond, proc: subprocess.Popen, timeout: float = 180) -> bool:  # noqa: ANN001
    """Poll ``cond`` every 5 ms until it holds (True) or ``proc`` ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return cond()
        time.sleep(0.005)
    raise AssertionError("timed out waiting for the sweep")


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> tuple[int, str, str]:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    return finish(proc)


def files_of(out: Path) -> dict[str, Path | None]:
    """The result table, its sidecar, the lock, the checkpoint and its checksum file under ``out``."""
    def one(pattern: str, where: Path = out) -> Path | None:
        found = sorted(where.glob(pattern)) if where.exists() else []
        return found[0] if found else None
    return {"csv": one("*.csv"), "json": one("*.json"), "lock": one("*.lock"),
            "ckpt": one("*.pt", out / "checkpoints"), "ckpt_sum": one("*.pt.sha256", out / "checkpoints")}


def ckpt_epoch(out: Path) -> int:
    """The epoch named by the checkpoint's checksum file (0 without one)."""
    f = files_of(out)["ckpt_sum"]
    try:
        return int(json.loads(f.read_text())["epoch"]) if f else 0
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
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


def assert_same_as_baseline(out: Path, baseline) -> dict:  # noqa: ANN001
    f = files_of(out)
    assert f["csv"] is not None and f["json"] is not None, listing(out)
    meta = json.loads(f["json"].read_text())
    expected, base_meta = baseline(meta["impl"])
    assert f["csv"].read_bytes() == expected, "the resumed sweep's table differs from an unbroken run's"
    assert meta["table_sha256"] == base_meta["table_sha256"]
    assert load_result(f["csv"], log=pytest.fail) is not None
    assert leftovers(out) == [], leftovers(out)
    return meta


# ---------------------------------------------------------------------------------------------
# Interruption: SIGKILL at any moment, then the same command again
# ---------------------------------------------------------------------------------------------


def test_sigkill_at_timed_moments_then_resume_matches_unbroken_run(files, cli_root, baseline):
    """Three kills of `python -m l2bn sweep` (while starting, as the first checkpoint appears, in the
    middle of an epoch), then the same command to the end: the table is bitwise an unbroken run's."""
    out = cli_root / "timed"
    env = cli_env(cli_root)
    args = cli_args(files["cli"], out)
    epoch_s = baseline("auto")[1]["wall_time_s"] / CLI_EPOCHS

    # 1. As soon as the lock is taken: loading data, choosing the implementation or in epoch 1.
    p = start(args, env)
    assert wait_until(lambda: files_of(out)["lock"] is not None, p)
    assert kill(p)[0] == -signal.SIGKILL

    # 2. The instant the first checkpoint exists.
    p = start(args, env)
    assert wait_until(lambda: files_of(out)["ckpt"] is not None, p)
    assert kill(p)[0] == -signal.SIGKILL

    # 3. In the middle of the epoch after the next checkpoint.
    p = start(args, env)
    first = ckpt_epoch(out)
    assert first >= 1
    assert wait_until(lambda: ckpt_epoch(out) > first, p)
    time.sleep(0.4 * epoch_s)
    rc, so, _ = kill(p)
    assert "resuming from checkpoint" in so and "cannot resume" not in so
    assert rc == -signal.SIGKILL, "the sweep ended before it could be killed"
    assert 2 <= ckpt_epoch(out) < CLI_EPOCHS

    # 4. The same command again, to the end.
    rc, so, se = run_cli(args, env)
    assert rc == 0, se
    assert "resuming from checkpoint" in so and "cannot resume" not in so
    meta = assert_same_as_baseline(out, baseline)
    assert meta["resumed_from_epoch"] >= 2


# (suffix of the renamed file, which rename, before or after it, what the files look like after the kill)
EXACT_KILLS = [
    (".pt.sha256", 1, "before"),  # epoch 1's checkpoint is a temporary file, nothing renamed yet
    (".pt", 2, "before"),  # epoch 2's checksum file is in place, its checkpoint is not
    (".pt", 1, "after"),  # epoch 2 (resumed from 1) fully written
    (".json", 1, "before"),  # the result table is written, its sidecar is not
    (".json", 1, "after"),  # table and sidecar written, the checkpoint not yet removed
]


def test_sigkill_at_every_rename_then_resume_matches_unbroken_run(files, cli_root, baseline):
    """Five kills, each at an exact rename of a checkpoint, checksum file, table or sidecar; after each
    the same command goes on from what is on disk and the end result is bitwise an unbroken run's."""
    out = cli_root / "exact"
    env = cli_env(cli_root)
    args = cli_args(files["cli"], out)
    outputs = []
    for suffix, n, when in EXACT_KILLS:
        rc, so, se = run_cli(args, env, helper=True, L2BN_TEST_ACTION="kill", L2BN_TEST_WHEN=when,
                             L2BN_TEST_SUFFIX=suffix, L2BN_TEST_N=str(n))
        assert rc == -signal.SIGKILL, (suffix, n, when, se)
        outputs.append(so)
        f = files_of(out)
        temporaries = [p for p in listing(out) if p.endswith(".tmp")]
        if (suffix, when) == (".pt.sha256", "before"):
            assert f["ckpt"] is None and temporaries
        elif (suffix, n, when) == (".pt", 2, "before"):
            side = json.loads(f["ckpt_sum"].read_text())
            assert side["epoch"] == 2
            assert hashlib.sha256(f["ckpt"].read_bytes()).hexdigest() == side["previous_sha256"]
        elif (suffix, when) == (".pt", "after"):
            side = json.loads(f["ckpt_sum"].read_text())
            assert hashlib.sha256(f["ckpt"].read_bytes()).hexdigest() == side["sha256"]
        elif (suffix, when) == (".json", "before"):
            assert f["csv"] is not None and f["json"] is None and f["ckpt"] is not None
        else:
            assert f["csv"] is not None and f["json"] is not None and f["ckpt"] is not None
    # Each run after the first found the previous one's checkpoint intact and resumed from it.
    assert "resuming" not in outputs[0] and "resuming" not in outputs[1]
    for so in outputs[2:]:
        assert "resuming from checkpoint" in so and "cannot resume" not in so, so
    assert "ignoring damaged result" in outputs[4] and "missing" in outputs[4]

    rc, so, se = run_cli(args, env)
    assert rc == 0, se
    assert "reusing cached result" in so
    assert_same_as_baseline(out, baseline)


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(files, cli_root, baseline):
    out = cli_root / "sigint"
    env = cli_env(cli_root)
    args = cli_args(files["cli"], out)
    p = start(args, env)
    assert wait_until(lambda: files_of(out)["ckpt"] is not None, p)
    rc, so, se = kill(p, signal.SIGINT)
    assert rc == 130, se
    assert "Traceback" not in se and "KeyboardInterrupt" not in se
    assert "interrupted" in se and "run the same command again" in se
    assert "l2bn sweep --optimizer adam --profile smoke" in se  # the command to run
    f = files_of(out)
    assert f["lock"] is None and f["ckpt"] is not None and f["csv"] is None
    assert not [p for p in listing(out) if p.endswith(".tmp")]

    rc, so, se = run_cli(args, env)
    assert rc == 0, se
    assert "resuming from checkpoint" in so
    assert assert_same_as_baseline(out, baseline)["resumed_from_epoch"] >= 1


def test_second_sweep_on_the_same_spec_is_refused_while_the_first_completes(files, cli_root, baseline,
                                                                          capsys):
    """The first sweep is held at its first checkpoint rename; a second one on the same spec is refused
    with a clear message and exit status 3 and changes no file; the first then completes correctly."""
    out = cli_root / "concurrent"
    env = cli_env(cli_root)
    args = cli_args(files["cli"], out)
    go = cli_root / "concurrent-go"
    first = start(args, {**env, "L2BN_TEST_ACTION": "pause", "L2BN_TEST_WHEN": "before",
                         "L2BN_TEST_SUFFIX": ".pt", "L2BN_TEST_N": "1", "L2BN_TEST_GO": str(go)},
                  helper=True)
    try:
        assert wait_until(lambda: Path(f"{go}.waiting").exists(), first)
        before = listing(out)
        assert cli.main(args) == 3
        err = capsys.readouterr().err
        assert "already running" in err and f"pid {first.pid}" in err
        assert len(err.strip().splitlines()) == 1
        assert listing(out) == before  # the refused sweep wrote, moved and removed nothing
    finally:
        go.write_text("go")
    rc, so, se = finish(first)
    assert rc == 0, se
    assert_same_as_baseline(out, baseline)
    assert cli.main(args) == 0
    assert "reusing cached result" in capsys.readouterr().out


def test_a_stale_lock_is_taken_over(files, tmp_path):
    spec = tiny_spec(files["tiny"])
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = result_path(spec, out).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    lock.write_text(str(dead.pid))
    res, log = sweep(spec, out)
    assert not res.reused and log.has("taking over the lock", str(dead.pid))
    assert leftovers(out) == []


def test_a_held_lock_refuses_in_process_and_writes_nothing(files, tmp_path):
    fcntl = pytest.importorskip("fcntl")

    spec = tiny_spec(files["tiny"])
    out = tmp_path / "out"
    lock = result_path(spec, out).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        holder.write("4242\n")
        holder.flush()
        before = listing(out)
        with pytest.raises(SweepRunning, match="already running.*pid 4242"):
            sweep(spec, out)
        assert listing(out) == before
    res, _ = sweep(spec, out)  # once the holder lets go
    assert not res.reused


def test_grids_trained_side_by_side_equal_grids_trained_here(files, private_data_root, tmp_path):
    """Two missing grids trained in two worker processes store the same tables, bit for bit, as the
    same specs trained in this process on as many threads (one); a stored grid is not retrained."""
    specs = [tiny_spec(files["tiny"], optimizer=rule) for rule in ("sgd", "adam")]
    l2bn.results.train_side_by_side(specs, device="cpu", progress=False, jobs=2)
    stored = [load_result(result_path(s), spec=s) for s in specs]
    assert all(r is not None for r in stored)
    assert {r.provenance["threads"] for r in stored} == {1}
    for spec, r in zip(specs, stored, strict=True):
        here, _ = sweep(spec, tmp_path / "here", impl="auto")
        assert not here.reused
        pd.testing.assert_frame_equal(r.table, here.table, check_exact=True)
    before = listing(private_data_root / "results")
    l2bn.results.train_side_by_side(specs, device="cpu", progress=False, jobs=2)
    assert listing(private_data_root / "results") == before


def test_damaged_results_are_reported_and_recomputed_side_by_side(files, capsys):
    specs = [tiny_spec(files["tiny"], optimizer=rule) for rule in ("sgd", "adam")]
    l2bn.results.train_side_by_side(specs, device="cpu", progress=False, jobs=2)
    paths = [result_path(s) for s in specs]
    good = [p.read_bytes() for p in paths]
    for p, raw in zip(paths, good, strict=True):
        p.write_bytes(raw[: len(raw) // 2])
    capsys.readouterr()
    l2bn.results.train_side_by_side(specs, device="cpu", progress=False, jobs=2)
    out = capsys.readouterr().out
    for spec, p, raw in zip(specs, paths, good, strict=True):
        assert f"ignoring damaged result {p.name}" in out
        assert load_result(p, spec=spec) is not None
        assert p.read_bytes() == raw  # recomputed, the same numbers


def test_a_failing_grid_side_by_side_raises_its_own_error(files):
    specs = [tiny_spec(files["tiny"]), tiny_spec(files["missing_array"], optimizer="adam")]
    with pytest.raises(DatasetError, match="^dataset:"):
        l2bn.results.train_side_by_side(specs, device="cpu", progress=False, jobs=2)


# ---------------------------------------------------------------------------------------------
# In-process interruption: what a checkpoint holds, resuming keeps impl and divergence
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def interrupt_after_checkpoint(n: int = 1):
    """Raise KeyboardInterrupt right after the ``n``-th checkpoint is written."""
    real = l2bn.train.save_checkpoint
    count = 0

    def save(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        nonlocal count
        digest = real(*args, **kwargs)
        count += 1
        if count == n:
            raise KeyboardInterrupt
        return digest

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(l2bn.train, "save_checkpoint", save)
        yield


def interrupted(spec: SweepSpec, out: Path, n: int = 1, impl: str = "wide") -> Path:
    with interrupt_after_checkpoint(n), pytest.raises(KeyboardInterrupt):
        sweep(spec, out, impl=impl)
    ck = files_of(out)["ckpt"]
    assert ck is not None and files_of(out)["lock"] is None and files_of(out)["csv"] is None
    return ck


@pytest.fixture(scope="module")
def ckpt_case(files, tmp_path_factory):
    """A 3-epoch tiny spec: its unbroken table and a folder holding a checkpoint after epoch 1."""
    d = tmp_path_factory.mktemp("ckpt")
    spec = tiny_spec(files["tiny"], epochs=3)
    unbroken = run_sweep(spec, "cpu", "wide", d / "unbroken", progress=False, log=lambda _: None).table
    interrupted(spec, d / "interrupted")
    return spec, unbroken, d / "interrupted"


def test_a_checkpoint_holds_everything_a_resume_needs(ckpt_case):
    spec, _, src = ckpt_case
    f = files_of(src)
    ck = torch.load(f["ckpt"], weights_only=True)
    side = json.loads(f["ckpt_sum"].read_text())
    assert hashlib.sha256(f["ckpt"].read_bytes()).hexdigest() == side["sha256"]
    assert side["epoch"] == ck["epoch"] == 1
    assert ck["spec"] == spec.to_dict() and ck["code_version"] == code_version()
    assert ck["impl"] == "wide" and ck["device_type"] == "cpu"
    steps = spec.n_train // spec.batch_size
    assert ck["opt"]["t"] == steps  # the step count (Adam's bias correction needs it)
    assert ck["gen"].dtype == torch.uint8  # data order and augmentation
    assert not torch.equal(ck["net"]["running_mean0"], torch.zeros_like(ck["net"]["running_mean0"]))
    assert ck["alive"].dtype == torch.bool and ck["alive"].shape == (spec.n_models,)
    assert len(ck["rows"]) == spec.n_models and ck["elapsed"] > 0
    assert ck["diverged_epoch"] == [None] * spec.n_models


def test_resume_from_an_intact_checkpoint_matches_unbroken_run(ckpt_case, tmp_path):
    spec, unbroken, src = ckpt_case
    out = tmp_path / "out"
    shutil.copytree(src, out)
    res, log = sweep(spec, out)
    assert log.has("resuming from checkpoint") and not log.has("cannot resume")
    assert res.provenance["resumed_from_epoch"] == 1
    pd.testing.assert_frame_equal(res.table, unbroken, check_exact=True)
    assert leftovers(out) == []


def test_resume_keeps_the_implementation_of_the_checkpoint(files, tmp_path, monkeypatch):
    spec = tiny_spec(files["tiny"], epochs=3)
    unbroken_loop = sweep(spec, tmp_path / "unbroken", impl="loop")[0].table
    interrupted(spec, tmp_path / "a", impl="loop")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    res, log = sweep(spec, tmp_path / "a", impl="wide")  # asked for wide: the checkpoint says loop
    assert log.has("resuming with impl=loop") and res.provenance["impl"] == "loop"
    pd.testing.assert_frame_equal(res.table, unbroken_loop, check_exact=True)

    def no_measuring(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a resumed sweep must not measure the implementation again")

    monkeypatch.setattr(l2bn.train, "choose_impl", no_measuring)
    res, _ = sweep(spec, tmp_path / "b", impl="auto")
    assert res.provenance["impl"] == "loop"
    pd.testing.assert_frame_equal(res.table, unbroken_loop, check_exact=True)


def _rewrite(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _flip(path: Path, where: float = 0.5, bit: int = 0) -> None:
    raw = bytearray(path.read_bytes())
    i = int(len(raw) * where)
    raw[i] ^= 1 << bit
    path.write_bytes(bytes(raw))


def _resave(path: Path, **changes: object) -> None:
    """Rewrite the checkpoint with some entries changed, with a matching checksum file."""
    ck = torch.load(path, weights_only=True)
    ck.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        ck.pop(k)
    save_checkpoint(ck, path)


def _garbage_with_matching_sum(path: Path) -> None:
    raw = os.urandom(4096)
    path.write_bytes(raw)
    checkpoint_sidecar(path).write_text(json.dumps({"sha256": hashlib.sha256(raw).hexdigest()}))


# name, damage (given the checkpoint path), the reason the log must give
CHECKPOINT_DAMAGE = [
    ("truncated", lambda p: _rewrite(p, p.read_bytes()[: p.stat().st_size // 2]), "does not match"),
    ("empty", lambda p: _rewrite(p, b""), "does not match"),
    ("bit flip", lambda p: _flip(p, 0.6, 3), "does not match"),
    ("checksum file missing", lambda p: checkpoint_sidecar(p).unlink(), "missing"),
    ("checksum file garbled", lambda p: _rewrite(checkpoint_sidecar(p), b"\x00{not json"), "unreadable"),
    ("checksum file not an object", lambda p: _rewrite(checkpoint_sidecar(p), b"[1, 2]"), "unreadable"),
    ("wrong checksum", lambda p: _rewrite(checkpoint_sidecar(p), b'{"sha256": "00"}'), "does not match"),
    ("not a torch file", _garbage_with_matching_sum, "cannot be unpickled"),
    ("state missing", lambda p: _resave(p, gen=None), "lacks"),
    ("another spec", lambda p: _resave(p, spec={**torch.load(p)["spec"], "seed": 7}), "another spec"),
    ("another format", lambda p: _resave(p, format=1), "format"),
    ("another device", lambda p: _resave(p, device_type="cuda"), "written on cuda"),
    ("epoch out of range", lambda p: _resave(p, epoch=99), "out of range"),
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
    monkeypatch.setattr(l2bn.train, "code_version", lambda: "0123456789abcdef")
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
    ("csv truncated", lambda c, j: _rewrite(c, c.read_bytes()[: c.stat().st_size // 2])),
    ("csv empty", lambda c, j: _rewrite(c, b"")),
    ("csv bit flip", lambda c, j: _flip(c, 0.5, 0)),
    ("csv row appended", lambda c, j: _rewrite(c, c.read_bytes() + c.read_bytes().splitlines(True)[-1])),
    ("csv missing", lambda c, j: c.unlink()),
    ("json truncated", lambda c, j: _rewrite(j, j.read_bytes()[: j.stat().st_size // 2])),
    ("json bit flip", lambda c, j: _flip(j, 0.5, 1)),
    ("json table checksum altered", lambda c, j: _edit_json(j, lambda m: m.update(table_sha256="0" * 64))),
    ("json provenance altered", lambda c, j: _edit_json(j, lambda m: m.update(device_name="a GPU"))),
    ("json not an object", lambda c, j: _rewrite(j, b"[]")),
    ("json empty object", lambda c, j: _rewrite(j, b"{}")),
    ("json not text", lambda c, j: _rewrite(j, b"\xff\xfe\x00\x01")),
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
# Divergence survives storage and resuming
# ---------------------------------------------------------------------------------------------

METRICS = ["train_loss", "train_err", "val_err", "test_err", "unit_norm_0", "eta_eff_0", "angle_0"]


@pytest.fixture(scope="module")
def diverging(files):
    """sgd with η = 10⁶ next to a sane η: the large one's loss becomes NaN in epoch 1 or 2 of 3."""
    spec = tiny_spec(files["tiny"], lrs=[0.1, 1e6], epochs=3)
    return spec


def test_a_diverged_model_survives_the_csv_round_trip(diverging, tmp_path):
    res, _ = sweep(diverging, tmp_path)
    t = res.table
    dead = t[t.model == 1]
    first = int(dead[dead.diverged].epoch.min())
    assert first <= 2, "η = 10⁶ should diverge within two epochs"
    assert dead[dead.epoch >= first].diverged.all() and not dead[dead.epoch < first].diverged.any()
    assert dead[dead.diverged][METRICS].isna().all().all()
    assert not t[t.model == 0].diverged.any() and t[t.model == 0][METRICS].notna().all().all()
    loaded, _ = sweep(diverging, tmp_path)
    assert loaded.reused
    assert loaded.table.diverged.dtype == bool
    pd.testing.assert_frame_equal(loaded.table, t, check_exact=True)


def test_a_diverged_model_stays_diverged_across_a_resume(diverging, tmp_path):
    unbroken, _ = sweep(diverging, tmp_path / "unbroken")
    dead = unbroken.table[unbroken.table.model == 1]
    first = int(dead[dead.diverged].epoch.min())
    ck = interrupted(diverging, tmp_path / "out", n=first)  # the checkpoint right after divergence
    state = torch.load(ck, weights_only=True)
    assert state["alive"].tolist() == [True, False] and state["diverged_epoch"] == [None, first]
    res, log = sweep(diverging, tmp_path / "out")
    assert log.has("resuming from checkpoint")
    pd.testing.assert_frame_equal(res.table, unbroken.table, check_exact=True)
    assert res.table[(res.table.model == 1) & (res.table.epoch >= first)].diverged.all()


# ---------------------------------------------------------------------------------------------
# Bad input: a one-line error naming the parameter, a non-zero exit, no file written
# ---------------------------------------------------------------------------------------------

# (extra CLI arguments, the parameter the message must name); npz:<name> refers to ``files``.
CLI_BAD = [
    (["--lrs", "0"], "lrs"), (["--lrs", "-0.1"], "lrs"), (["--lrs", "nan"], "lrs"),
    (["--lrs", "inf"], "lrs"), (["--lrs", "0.1,1e999"], "lrs"), (["--lrs", ""], "lrs"),
    (["--lrs", "0.2,0.1"], "lrs"), (["--lrs", "0.1,0.1"], "lrs"), (["--lrs", "abc"], "--lrs"),
    (["--l2s=-1e-4"], "l2s"), (["--l2s", "-1e-4"], "--l2s"), (["--l2s", "nan"], "l2s"),
    (["--l2s", "0.1,0.01"], "l2s"),
    (["--optimizer", "sgdd"], "--optimizer"), (["--profile", "huge"], "--profile"),
    (["--dataset", "imagenet"], "dataset"), (["--dataset", "npz:"], "dataset"),
    (["--dataset", "npz:/nonexistent/x.npz"], "dataset"),
    (["--device", "tpu"], "device"), (["--device", "cuda:x"], "device"), (["--device", "cuda:99"], "device"),
    (["--epochs", "0"], "epochs"), (["--epochs", "-2"], "epochs"), (["--epochs", "two"], "--epochs"),
    (["--seed", "-1"], "seed"), (["--seed", str(2**64)], "seed"), (["--seed", "1.5"], "--seed"),
    (["--norm", "group"], "--norm"), (["--impl", "fast"], "--impl"),
    (["--out", "FILE"], "out"),
    *[(["--dataset", f"npz:{name}"], "dataset") for name in (
        "missing_array", "float_images", "three_dim", "five_channels", "label_10", "label_negative",
        "label_float", "label_length", "tiny_images", "too_few", "not_npz")],
]
if not torch.cuda.is_available():
    CLI_BAD.append((["--device", "cuda"], "device"))


def run_main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as e:  # argparse
        return e.code


@pytest.mark.parametrize("extra,param", CLI_BAD, ids=[" ".join(a) for a, _ in CLI_BAD])
def test_a_bad_cli_parameter_is_one_line_naming_it_and_writes_nothing(files, tmp_path, capsys,
                                                                     private_data_root, extra, param):
    out = tmp_path / "out"
    if extra[0] == "--out":
        out.write_text("a file, not a folder")
        extra = ["--out", str(out)]
    extra = [f"npz:{files[a[4:]]}" if a.startswith("npz:") and a[4:] in files else a for a in extra]
    argv = ["sweep", "--optimizer", "sgd", "--profile", "smoke", "--dataset", f"npz:{files['cli']}",
            "--device", "cpu", "--no-progress", "--out", str(out), *extra]
    assert run_main(argv) == 2
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1, captured.err
    prefix = f"l2bn sweep: error: {'argument ' if param.startswith('--') else ''}{param}"
    assert lines[0].startswith(prefix), lines[0]
    if param in ("--optimizer", "--profile", "--norm", "--impl", "device", "dataset"):
        assert "choose" in lines[0] or "npz" in lines[0] or "GPU" in lines[0], lines[0]
    assert captured.out == ""
    assert (out.is_file() if extra[0] == "--out" else not out.exists())
    assert listing(private_data_root) == {}


def test_bad_input_through_the_real_command(files, tmp_path):
    env = cli_env(tmp_path)
    out = tmp_path / "out"
    argv = ["sweep", "--optimizer", "sgd", "--profile", "smoke", "--dataset", f"npz:{files['label_10']}",
            "--device", "cpu", "--out", str(out)]
    rc, so, se = run_cli(argv, env)
    assert rc == 2 and so == "" and "Traceback" not in se
    assert se.strip().splitlines() == [se.strip()] and se.startswith("l2bn sweep: error: dataset:")
    assert "labels" in se and not out.exists()


# (overrides of from_profile, the parameter the message must name)
API_BAD = [
    (dict(lrs=[0]), "lrs"), (dict(lrs=[-1.0]), "lrs"), (dict(lrs=[math.nan]), "lrs"),
    (dict(lrs=[math.inf]), "lrs"), (dict(lrs=[]), "lrs"), (dict(lrs=[0.2, 0.1]), "lrs"),
    (dict(lrs="0.1"), "lrs"), (dict(lrs=0.1), "lrs"), (dict(lrs=["a"]), "lrs"), (dict(lrs=[True]), "lrs"),
    (dict(l2s=[-1e-3]), "l2s"), (dict(l2s=[None]), "l2s"),
    (dict(optimizer="foo"), "optimizer"), (dict(optimizer=None), "optimizer"),
    (dict(profile="huge"), "profile"), (dict(profile=None), "profile"), (dict(profile=["smoke"]), "profile"),
    (dict(dataset="imagenet"), "dataset"), (dict(dataset=None), "dataset"), (dict(dataset=5), "dataset"),
    (dict(epochs=0), "epochs"), (dict(epochs=-1), "epochs"), (dict(epochs=1.5), "epochs"),
    (dict(epochs="2"), "epochs"), (dict(epochs=True), "epochs"),
    (dict(batch_size=1000), "batch_size"), (dict(batch_size=0), "batch_size"),
    (dict(n_train=0), "n_train"), (dict(n_train=60000, dataset="synthetic"), "n_train"),
    (dict(n_test=20000, dataset="synthetic"), "n_test"), (dict(n_val=-5), "n_val"),
    (dict(widths=(4, 8)), "widths"), (dict(widths=5), "widths"), (dict(widths=(0, 1, 1, 1)), "widths"),
    (dict(norm="group"), "norm"),
    (dict(seed=-1), "seed"), (dict(seed=2**64), "seed"), (dict(seed=1.5), "seed"),
    (dict(hyper={"rho": 2.0}, optimizer="momentum"), "hyper"), (dict(hyper={"bogus": 1.0}), "hyper"),
    (dict(hyper="x"), "hyper"), (dict(hyper={"eps": -1.0}, optimizer="adam"), "hyper"),
    (dict(hyper={"rho": math.nan}, optimizer="momentum"), "hyper"),
    (dict(augment="yes"), "augment"), (dict(colour=True), "colour"),
]


@pytest.mark.parametrize("kw,param", API_BAD, ids=[f"{p}-{i}" for i, (_, p) in enumerate(API_BAD)])
def test_a_bad_notebook_parameter_is_a_one_line_value_error_naming_it(kw, param):
    kw = dict(kw)
    profile, optimizer = kw.pop("profile", "smoke"), kw.pop("optimizer", "sgd")
    with pytest.raises(ValueError) as err:
        SweepSpec.from_profile(profile, optimizer, **kw)
    msg = str(err.value)
    assert msg.startswith(f"{param}:") and "\n" not in msg, msg


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "CPU", "", None, 0, "cuda:99"]
                         + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"]))
def test_a_bad_device_is_a_one_line_value_error(device):
    with pytest.raises(ValueError, match=r"^device: [^\n]*(choose|GPU)[^\n]*$"):
        resolve_device(device)


def test_bad_impl_and_spec_are_value_errors():
    with pytest.raises(ValueError, match="^impl: .*choose one of auto, wide, loop"):
        check_impl("fast")
    with pytest.raises(ValueError, match="^spec: "):
        validate_params({"optimizer": "sgd"})


def test_batch_normalisation_needs_two_values_per_channel(files, tmp_path):
    """8×8 images leave a 1×1 last layer: batch_size 1 would crash batch norm, so it is refused."""
    spec = tiny_spec(files["tiny"], batch_size=1)
    with pytest.raises(ValueError, match="^batch_size: "):
        sweep(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    fine = tiny_spec(files["tiny"], batch_size=1, norm="none", epochs=1)
    assert not sweep(fine, tmp_path / "ok")[0].reused


def test_layer_norm_trains_on_augmented_batches(files, tmp_path):
    sweep(tiny_spec(files["tiny"], norm="layer", epochs=1), tmp_path)


# ---------------------------------------------------------------------------------------------
# Property tests: random parameters are run or refused with a message naming one, never a crash
# ---------------------------------------------------------------------------------------------

_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.just(True),
                     st.text(max_size=3), st.none())
_grid = st.one_of(st.none(), st.lists(_numbers, max_size=4), st.floats(), st.text(max_size=4))
_count = st.one_of(st.none(), st.integers(-2, 70000), st.floats(-1, 100), st.just("8"), st.just(False))


def _check_rejection(err: Exception) -> None:
    msg = str(err)
    assert "\n" not in msg, msg
    assert msg.split(":", 1)[0] in PARAMS, msg


@settings(max_examples=150, deadline=None)
@given(
    profile=st.sampled_from(["smoke", "quick", "paper", "huge", None, 3]),
    optimizer=st.sampled_from([*OPTIMIZERS, "foo", None]),
    dataset=st.sampled_from(["synthetic", "cifar10", "npz:x.npz", "imagenet", "", None, "npz:"]),
    lrs=_grid, l2s=_grid, epochs=_count, batch_size=_count, n_train=_count, n_val=_count, n_test=_count,
    widths=st.one_of(st.none(), st.lists(st.integers(-1, 64), max_size=5), st.integers(),
                     st.text(max_size=2)),
    norm=st.sampled_from([*NORMS, "group", None, 1]),
    seed=st.one_of(st.none(), st.integers(-5, 2**65), st.floats(0, 10)),
    hyper=st.one_of(st.none(), st.dictionaries(st.sampled_from(["rho", "rho1", "rho2", "eps", "bogus"]),
                                               st.floats(allow_nan=True), max_size=3), st.text(max_size=2)),
    device=st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:7", "tpu", "", None]),
    impl=st.sampled_from(["auto", "wide", "loop", "fast", None]),
)
def test_property_the_validator_accepts_or_names_a_parameter(profile, optimizer, dataset, device, impl,
                                                             **kw):
    try:
        spec = SweepSpec.from_profile(profile, optimizer, dataset, **kw)
        validate_params(spec, device, impl)
    except ValueError as err:
        _check_rejection(err)


@pytest.fixture(scope="module")
def hyp_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hyp")
    return {
        "good": write_npz(d / "good.npz", n_train=64, n_test=16),
        "bad_dtype": write_npz(d / "bad_dtype.npz", x_train=np.zeros((64, 8, 8, 3), np.float32)),
        "bad_labels": write_npz(d / "bad_labels.npz", n_train=64, y_train=np.full(64, 11)),
        "missing": write_npz(d / "missing.npz", x_test=None),
    }


def _sorted_grid(low: float, high: float, size: int) -> st.SearchStrategy:
    return st.lists(st.floats(low, high), min_size=1, max_size=size, unique=True).map(sorted)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_a_one_step_sweep_runs_or_is_refused_before_writing(hyp_files, data):
    """Each parameter is valid nine times in ten and anything at all the tenth (so that about a third of
    the examples train a one-epoch sweep and the rest are refused, for one reason or several)."""

    def draw(good: st.SearchStrategy, bad: st.SearchStrategy, label: str) -> object:
        is_bad = data.draw(st.integers(0, 9), label=f"{label} bad?") == 5  # not 0: hypothesis favours it
        return data.draw(bad if is_bad else good, label=label)

    good, absent = hyp_files["good"], hyp_files["good"].with_name("absent.npz")
    dataset = draw(st.just(f"npz:{good}"), st.sampled_from(
        [f"npz:{hyp_files[k]}" for k in ("bad_dtype", "bad_labels", "missing")]
        + [f"npz:{absent}", "imagenet", "npz:"]), "dataset")
    n_train = draw(st.integers(1, 40), st.integers(-1, 70), "n_train")
    kw = dict(
        lrs=draw(_sorted_grid(1e-4, 1e9, 3), st.lists(st.one_of(
            st.floats(-1, 1e9), st.sampled_from([math.nan, math.inf, -math.inf, 0.0])), max_size=3), "lrs"),
        l2s=draw(_sorted_grid(0, 10, 2), st.lists(st.one_of(
            st.floats(-0.1, 10), st.sampled_from([math.nan, -1e-3])), max_size=2), "l2s"),
        epochs=draw(st.just(1), st.integers(-2, 0), "epochs"),
        n_train=n_train,
        batch_size=draw(st.sampled_from(sorted({n_train, max(n_train // 2, 1), 2})),
                        st.integers(-1, 70), "batch_size"),
        n_val=draw(st.integers(1, 8), st.integers(-1, 40), "n_val"),
        n_test=draw(st.integers(1, 16), st.integers(-1, 20), "n_test"),
        widths=draw(st.sampled_from([(1, 1, 1, 1), (2, 1, 2, 1)]),
                    st.sampled_from([(2, 2, 0, 2), (1, 1, 1), (1, 1, 1, 1, 1), (-1, 1, 1, 1)]), "widths"),
        norm=draw(st.sampled_from(NORMS), st.sampled_from(["group", "Batch", ""]), "norm"),
        seed=draw(st.integers(0, 2**63 - 1), st.integers(-(2**64), 2**65), "seed"),
        augment=data.draw(st.booleans(), label="augment"),
    )
    optimizer = draw(st.sampled_from(OPTIMIZERS), st.sampled_from(["foo", "Adam", ""]), "optimizer")
    no_gpu = [] if torch.cuda.is_available() else ["cuda"]
    device = draw(st.sampled_from(["cpu", "auto"] if not torch.cuda.is_available() else ["cpu"]),
                  st.sampled_from(["tpu", "cuda:x", "", *no_gpu]), "device")
    impl = draw(st.sampled_from(["wide", "loop", "auto"]), st.sampled_from(["fast", "", "WIDE"]), "impl")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        try:
            spec = SweepSpec.from_profile("smoke", optimizer, dataset, **kw)
            res = run_sweep(spec, device, impl, out, progress=False, log=lambda _: None)
        except (ValueError, DatasetError) as err:
            _check_rejection(err)
            event(f"refused: {str(err).split(':', 1)[0]}")
            assert not out.exists(), "a refused sweep wrote files"
            return
        event("ran")
        t = res.table
        assert len(t) == spec.n_models * spec.epochs and res.path.exists()
        assert t[t.diverged][["train_loss", "val_err"]].isna().all().all()
        assert leftovers(out) == []


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
    "partial": lambda p: _rewrite(p, p.read_bytes()[:1000]),
    "tampered": lambda p: _flip(p, 0.7, 2),
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


# ---------------------------------------------------------------------------------------------
# Determinism and the provenance of randomness
# ---------------------------------------------------------------------------------------------


def test_the_same_spec_and_seed_give_identical_results(files, tmp_path):
    spec = tiny_spec(files["tiny"], optimizer="adam", lrs=[1e-3, 1e-2], l2s=[0.0, 1e-3])
    a, _ = sweep(spec, tmp_path, force=True)
    a_csv, a_meta = a.path.read_bytes(), json.loads(sidecar(a.path).read_text())
    b, _ = sweep(spec, tmp_path, force=True)
    assert not b.reused
    b_meta = json.loads(sidecar(b.path).read_text())
    assert b.path.read_bytes() == a_csv
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    differing = {k for k in a_meta.keys() | b_meta.keys() if a_meta.get(k) != b_meta.get(k)}
    assert differing <= TIME_FIELDS, differing
    assert a_meta["seed"] == a_meta["spec"]["seed"] == spec.seed
    rnd = a_meta["randomness"]
    for part in (f"seed {spec.seed}", "initial weights", "data order", "augmentation", "validation split"):
        assert part in rnd, part
    other, _ = sweep(tiny_spec(files["tiny"], optimizer="adam", lrs=[1e-3, 1e-2], l2s=[0.0, 1e-3], seed=5),
                     tmp_path)
    assert other.path != a.path and not other.table[METRICS].equals(a.table[METRICS])
    assert "seed 5" in other.provenance["randomness"]
