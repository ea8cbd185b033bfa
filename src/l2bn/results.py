"""Sweep results on disk: a tidy CSV table per spec with a JSON sidecar of provenance.

A result lives at ``<dir>/<optimizer>-<key>.csv`` where ``key`` hashes the full spec, the version of
the code that computes it and the identity of the data, so a result is reused only for an identical
spec. Files are written atomically (temporary file, then rename); the sidecar, written last, holds
the table's sha256, so a truncated or altered table is detected and recomputed, never loaded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .data import data_root, dataset_fingerprint
from .train import SweepSpec, code_version, train_grid


class SweepRunning(RuntimeError):
    """Another process is computing the same spec right now."""


@dataclass
class SweepResult:
    """A sweep's table (one row per model and epoch), its provenance and where it is stored."""

    table: pd.DataFrame
    provenance: dict[str, Any]
    path: Path
    reused: bool


def results_dir(out: Path | str | None = None) -> Path:
    return Path(out) if out is not None else data_root() / "results"


def spec_key(spec: SweepSpec) -> str:
    """Hash of everything that decides the numbers: spec, code version and data identity."""
    blob = json.dumps(
        {"spec": spec.to_dict(), "code": code_version(), "data": dataset_fingerprint(spec.dataset)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def result_path(spec: SweepSpec, out: Path | str | None = None) -> Path:
    return results_dir(out) / f"{spec.optimizer}-{spec_key(spec)}.csv"


def sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def spec_command(spec: SweepSpec) -> str:
    """The command line that recomputes ``spec``."""
    grid = lambda xs: ",".join(f"{x:g}" for x in xs)  # noqa: E731
    return (
        f"l2bn sweep --optimizer {spec.optimizer} --profile {spec.profile} "
        f"--dataset {spec.dataset} --lrs {grid(spec.lrs)} --l2s {grid(spec.l2s)} "
        f"--epochs {spec.epochs} --seed {spec.seed} --norm {spec.norm}"
    )


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_result(path: Path, log: Callable[[str], None] = print) -> SweepResult | None:
    """The stored result at ``path``, or None when it is missing, incomplete or fails its checksum
    (reported through ``log``)."""
    meta_path = sidecar(path)
    if not path.exists() or not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != meta["table_sha256"]:
            raise ValueError("the table does not match the checksum in its sidecar")
        table = pd.read_csv(io.BytesIO(raw))
    except (ValueError, KeyError, OSError) as err:
        log(f"l2bn: ignoring damaged result {path.name} ({err}); it will be recomputed")
        return None
    return SweepResult(table, meta, path, reused=True)


def _git_commit() -> str:
    try:
        repo = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict[str, str]:
    import numpy
    import torch

    from . import __version__

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "pandas": pd.__version__, "l2bn": __version__}


class _Lock:
    """An exclusive lock file holding the owner's pid; a lock whose owner is gone is taken over."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> _Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    raise SweepRunning(
                        f"sweep: this spec is already running (pid {pid}, lock {self.path}); wait "
                        "for it to finish, or delete the lock if that process is gone"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its owner died
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise SweepRunning(f"sweep: could not take the lock {self.path}")

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_sweep(
    spec: SweepSpec,
    device: str = "auto",
    impl: str = "auto",
    out: Path | str | None = None,
    progress: bool = True,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """The result of ``spec``: loaded from the cache when an identical spec was run before,
    otherwise trained (resuming from a checkpoint if an earlier run was interrupted) and stored."""
    spec.validate()
    path = result_path(spec, out)
    if not force and (cached := load_result(path, log)) is not None:
        log(f"l2bn: reusing cached result {path} (identical spec)")
        return cached
    checkpoint = results_dir(out) / "checkpoints" / f"{path.stem}.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    with _Lock(path.with_suffix(".lock")):
        if checkpoint.exists():
            log(f"l2bn: resuming from checkpoint {checkpoint}")
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        t0 = time.time()
        table, facts = train_grid(spec, device=device, impl=impl, progress=progress,
                                  checkpoint=checkpoint)
        raw = table.to_csv(index=False).encode()
        provenance = {
            "spec": spec.to_dict(),
            "key": spec_key(spec),
            "code_version": code_version(),
            "dataset": {"name": spec.dataset, "fingerprint": dataset_fingerprint(spec.dataset),
                        "checksum": facts.pop("dataset_checksum")},
            "git_commit": _git_commit(),
            "versions": _versions(),
            "host": platform.node(),
            "started": started,
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "session_wall_time_s": time.time() - t0,
            "command": spec_command(spec),
            "table_sha256": hashlib.sha256(raw).hexdigest(),
            **facts,
        }
        atomic_write(path, raw)
        atomic_write(sidecar(path), json.dumps(provenance, indent=2).encode())
        checkpoint.unlink(missing_ok=True)
    log(f"l2bn: wrote {path} ({facts['wall_time_s']:.1f} s on {facts['device']})")
    return SweepResult(table, provenance, path, reused=False)


def list_results(out: Path | str | None = None) -> list[dict[str, Any]]:
    """One summary per stored result: file, rule, profile, dataset, models, epochs, device."""
    rows = []
    for meta_path in sorted(results_dir(out).glob("*.json")):
        try:
            meta = json.loads(meta_path.read_text())
            spec = meta["spec"]
            rows.append({"file": meta_path.with_suffix(".csv").name, "optimizer": spec["optimizer"],
                         "profile": spec["profile"], "dataset": spec["dataset"],
                         "models": len(spec["lrs"]) * len(spec["l2s"]), "epochs": spec["epochs"],
                         "device": meta.get("device_name", "?"), "finished": meta.get("finished")})
        except (ValueError, KeyError, OSError):
            rows.append({"file": meta_path.name, "optimizer": "damaged sidecar"})
    return rows

