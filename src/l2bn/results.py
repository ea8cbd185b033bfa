"""Sweep results on disk: a tidy CSV table per spec with a JSON sidecar of provenance.

A result lives at ``<dir>/<optimizer>-<key>.csv`` where ``key`` hashes the full spec, the version of
the code that computes it and the identity of the data, so a result is reused only for an identical
spec. Files are written atomically (temporary file, then rename); the sidecar, written last, holds
the table's sha256 and its own, so a truncated or altered table or sidecar is detected, reported and
recomputed, never loaded. While a spec is computed, an epoch checkpoint (with its own checksum file)
lives in ``<dir>/checkpoints/`` and a lock file ``<dir>/<optimizer>-<key>.lock`` keeps a second
process off the same spec. ``sweep_results`` gives the chapters their grids, training the missing
ones side by side on a CPU.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import io
import json
import multiprocessing
import os
import platform
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from .data import data_root, dataset_fingerprint
from .train import (
    SweepSpec,
    atomic_write,
    checkpoint_sidecar,
    code_version,
    discard_checkpoint,
    load_spec_data,
    train_grid,
    validate_params,
)

try:
    import fcntl
except ImportError:  # not POSIX: fall back to a lock file holding the owner's pid
    fcntl = None


# Read floats back exactly as written: pandas 3 does by default (and deprecates the option).
_EXACT_FLOATS = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


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


def checkpoint_path(path: Path) -> Path:
    """Where the epoch checkpoint of the result at ``path`` lives while it is computed."""
    return path.parent / "checkpoints" / f"{path.stem}.pt"


def _sidecar_digest(meta: dict[str, Any]) -> str:
    """sha256 of a sidecar's content, without its own ``sidecar_sha256`` entry."""
    body = {k: v for k, v in meta.items() if k != "sidecar_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def spec_command(spec: SweepSpec) -> str:
    """The command line that recomputes ``spec``."""
    grid = lambda xs: ",".join(f"{x:g}" for x in xs)  # noqa: E731
    return (
        f"l2bn sweep --optimizer {spec.optimizer} --profile {spec.profile} "
        f"--dataset {spec.dataset} --lrs {grid(spec.lrs)} --l2s {grid(spec.l2s)} "
        f"--epochs {spec.epochs} --seed {spec.seed} --norm {spec.norm} --precision {spec.precision}"
    )


def load_result(
    path: Path, log: Callable[[str], None] = print, spec: SweepSpec | None = None
) -> SweepResult | None:
    """The stored result at ``path``, or None when there is none. A result that is incomplete (table
    or sidecar missing), fails a checksum (the table's or the sidecar's own) or, given ``spec``, was
    computed for another spec is reported through ``log`` and also gives None, never a table."""
    meta_path = sidecar(path)
    have_table, have_meta = path.exists(), meta_path.exists()
    if not have_table and not have_meta:
        return None
    try:
        if not have_table or not have_meta:
            raise ValueError(f"its {'table' if not have_table else 'sidecar ' + meta_path.name} is missing")
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("the sidecar is not a JSON object")
        if meta.get("sidecar_sha256") != _sidecar_digest(meta):
            raise ValueError("the sidecar does not match its own checksum")
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != meta["table_sha256"]:
            raise ValueError("the table does not match the checksum in its sidecar")
        if spec is not None and (
            meta.get("key") != path.stem.rsplit("-", 1)[-1]
            or meta.get("spec") != json.loads(json.dumps(spec.to_dict()))
        ):
            raise ValueError("it was computed for another spec")
        table = pd.read_csv(io.BytesIO(raw), **_EXACT_FLOATS)
    except (ValueError, KeyError, TypeError, OSError) as err:
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
    """An exclusive lock on ``path`` for one spec, holding the owner's pid.

    On POSIX the lock is an ``flock`` on the file, which the kernel drops when its owner dies, even
    by SIGKILL: a lock file whose owner is gone is simply taken over. Elsewhere the file is created
    exclusively and a lock whose pid no longer runs is taken over.
    """

    def __init__(self, path: Path, log: Callable[[str], None] = print):
        self.path, self.log, self.fd = path, log, None

    def _running(self, pid: int) -> SweepRunning:
        who = f"pid {pid}" if pid else "another process"
        return SweepRunning(
            f"sweep: this spec is already running ({who}, lock {self.path}); wait for it to finish, "
            "then run the same command again to load its result"
        )

    def __enter__(self) -> _Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self._enter_pidfile()
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                pid = _read_pid(fd)
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._running(pid) from None
                if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # no flock here
                    return self._enter_pidfile()
                raise
            try:  # the previous owner may have removed the file between our open and our flock
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = _read_pid(fd)
            if old and old != os.getpid():
                self.log(f"l2bn: taking over the lock of pid {old}, which is no longer running")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.fd = fd
            return self
        raise SweepRunning(f"sweep: could not take the lock {self.path}; try again")

    def _enter_pidfile(self) -> _Lock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    raise self._running(pid) from None
                self.log(f"l2bn: taking over the lock of pid {pid}, which is no longer running")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise SweepRunning(f"sweep: could not take the lock {self.path}; try again")

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)  # while still holding it, so no one locks a removed file
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_temporaries(path: Path) -> None:
    """Delete the temporary files a killed writer of this result left behind (call under the lock)."""
    ck = checkpoint_path(path)
    for target in (path, sidecar(path), ck, checkpoint_sidecar(ck)):
        for tmp in target.parent.glob(f".{target.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


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
    otherwise trained (resuming from a checkpoint if an earlier run was interrupted) and stored.

    Everything is checked before any file is written: the spec, ``device`` and ``impl``
    (``ValueError('<param>: ...')``) and the data (``DatasetError('dataset: ...')``). A second process
    on the same spec gets ``SweepRunning`` while the first holds the lock.
    """
    validate_params(spec, device, impl)
    root = results_dir(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"out: {root} exists and is not a folder; give a folder for the results")
    path = result_path(spec, out)
    checkpoint = checkpoint_path(path)
    if not force and (cached := load_result(path, log, spec)) is not None:
        log(f"l2bn: reusing cached result {path} (identical spec)")
        if checkpoint.exists():  # left by a run killed just after it stored its result
            try:
                with _Lock(path.with_suffix(".lock"), lambda _: None):
                    discard_checkpoint(checkpoint)
                    _remove_temporaries(path)
            except SweepRunning:
                pass
        return cached
    data = load_spec_data(spec)  # a bad npz or missing CIFAR file fails here, before any file is written
    with _Lock(path.with_suffix(".lock"), log):
        _remove_temporaries(path)
        if not force and (cached := load_result(path, lambda _: None, spec)) is not None:
            log(f"l2bn: reusing cached result {path} (finished by another process meanwhile)")
            return cached
        if checkpoint.exists():
            log(f"l2bn: resuming from checkpoint {checkpoint}")
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        t0 = time.time()
        table, facts = train_grid(spec, device=device, impl=impl, data=data, progress=progress,
                                  checkpoint=checkpoint, log=log)
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
        provenance["sidecar_sha256"] = _sidecar_digest(provenance)
        atomic_write(path, raw)
        atomic_write(sidecar(path), json.dumps(provenance, indent=2).encode())
        discard_checkpoint(checkpoint)
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


def _train_in_worker(spec: SweepSpec, device: str, threads: int) -> None:
    """Compute one result in a worker process of ``train_side_by_side``, on ``threads`` threads."""
    torch.set_num_threads(threads)
    run_sweep(spec, device=device, progress=False)  # its messages (resuming, ...) go to stdout


def _epochs_done(spec: SweepSpec) -> int:
    """Epochs of ``spec`` finished so far, read from its checkpoint's checksum file (0 if none)."""
    path = result_path(spec)
    if path.exists():
        return spec.epochs
    try:
        return int(json.loads(checkpoint_sidecar(checkpoint_path(path)).read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def train_side_by_side(specs: list[SweepSpec], device: str = "auto", progress: bool = True,
                       jobs: int | None = None) -> None:
    """Train the specs that have no stored result at the same time, one worker process each, on a
    CPU: the quick profile's small convolutions use a second thread poorly (a grid runs about 10%
    faster on two threads than on one) but two grids run side by side nearly twice as fast. ``jobs``
    defaults to the number of torch threads on a CPU and to 1 on a GPU; each worker gets an equal
    share of the threads. With fewer than two jobs this does nothing and ``run_sweep`` trains the
    specs one by one. The progress bar counts epochs, read from the workers' checkpoints."""
    dev = validate_params(specs[0], device) if specs else None
    missing = [s for s in specs if load_result(result_path(s), spec=s) is None]  # damage is reported
    cores = torch.get_num_threads()
    if jobs is None:
        jobs = cores if dev is not None and dev.type == "cpu" else 1
    jobs = min(jobs, len(missing))
    if jobs < 2:
        return
    total = sum(s.epochs for s in missing)
    with (ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool,
          tqdm(total=total, desc=f"{len(missing)} grids, {jobs} at a time", unit="epoch",
               disable=not progress) as bar):
        pending = {pool.submit(_train_in_worker, s, device, max(1, cores // jobs)) for s in missing}
        while pending:
            done, pending = wait(pending, timeout=2, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()  # a worker's error is raised here, as if trained in this process
            bar.update(sum(_epochs_done(s) for s in missing) - bar.n)


def sweep_results(
    profile: str, rules: list[str], dataset: str, device: str = "auto", progress: bool = True
) -> dict[str, SweepResult]:
    """One result per update rule in ``rules``, each on ``profile``'s default grid: loaded from the
    cache, or trained (with a progress bar) when missing, side by side on a CPU
    (``train_side_by_side``). Every table is checked to hold exactly one row per model and epoch,
    the shape the analysis expects."""
    specs = [SweepSpec.from_profile(profile, rule, dataset) for rule in dict.fromkeys(rules)]
    train_side_by_side(specs, device, progress)
    results = {}
    for spec in specs:  # in order, without repeats
        rule = spec.optimizer
        result = run_sweep(spec, device=device, progress=progress)
        t = result.table
        if len(t) != t["model"].nunique() * t["epoch"].nunique():
            raise ValueError(f"results: {result.path} does not hold one row per model and epoch")
        results[rule] = result
    return results
