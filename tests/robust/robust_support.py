"""Helpers of the robustness tests: small npz datasets and specs, sweeps in this process and through
the real CLI in subprocesses, and views of the files a sweep leaves."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import l2bn.checkpoint
import l2bn.results
from l2bn import cli
from l2bn.results import load_result, run_sweep
from l2bn.spec import SweepSpec

# _robust_helper.py runs the CLI with a SIGKILL (or a pause) at an exact os.replace.
HELPER = Path(__file__).resolve().parents[1] / "_robust_helper.py"
CLI_EPOCHS = 4  # epochs of the CLI sweeps: enough for a kill to fall between two checkpoints
# Measures that are NaN for a diverged model and finite for the others.
METRICS = ["train_loss", "train_err", "val_err", "test_err", "unit_norm_0", "eta_eff_0", "angle_0"]


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


def write_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def tiny_spec(npz: Path, **kw: object) -> SweepSpec:
    """A sweep of seconds: 2 models, 8×8 images, widths 2, three steps an epoch."""
    args: dict = dict(lrs=[0.01, 0.1], l2s=[1e-4], epochs=2, batch_size=16, n_train=48, n_val=16,
                      n_test=32, widths=(2, 2, 2, 2))
    args.update(kw)
    optimizer = args.pop("optimizer", "sgd")
    return SweepSpec.from_profile("smoke", optimizer, f"npz:{npz}", **args)


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


def run_main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as e:  # argparse
        return e.code


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


def assert_same_as_baseline(out: Path, baseline) -> dict:  # noqa: ANN001
    f = files_of(out)
    assert f["csv"] is not None and f["json"] is not None, listing(out)
    meta = json.loads(f["json"].read_text())
    expected, base_meta = baseline(meta["impl"])
    assert f["csv"].read_bytes() == expected, "the resumed sweep's table differs from an unbroken run's"
    assert meta["sha256"] == base_meta["sha256"]
    assert load_result(f["csv"], log=pytest.fail) is not None
    assert leftovers(out) == [], leftovers(out)
    return meta


# ---------------------------------------------------------------------------------------------
# Interrupting a sweep in this process, and damaging files
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def interrupt_after_checkpoint(n: int = 1):
    """Raise KeyboardInterrupt right after the ``n``-th checkpoint is written."""
    real = l2bn.checkpoint.save_checkpoint
    count = 0

    def save(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        nonlocal count
        digest = real(*args, **kwargs)
        count += 1
        if count == n:
            raise KeyboardInterrupt
        return digest

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(l2bn.checkpoint, "save_checkpoint", save)
        yield


def interrupted(spec: SweepSpec, out: Path, n: int = 1, impl: str = "wide") -> Path:
    with interrupt_after_checkpoint(n), pytest.raises(KeyboardInterrupt):
        sweep(spec, out, impl=impl)
    ck = files_of(out)["ckpt"]
    assert ck is not None and files_of(out)["lock"] is None and files_of(out)["csv"] is None
    return ck


def rewrite(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def flip(path: Path, where: float = 0.5, bit: int = 0) -> None:
    raw = bytearray(path.read_bytes())
    i = int(len(raw) * where)
    raw[i] ^= 1 << bit
    path.write_bytes(bytes(raw))
