"""Sweep results on disk: a tidy CSV table per spec with a JSON sidecar of provenance.

A result lives at ``<dir>/<optimizer>-<key>.csv`` where ``key`` hashes the full spec, the version of
the code that computes it and the identity of the data, so a result is reused only for an identical
spec. Table and sidecar are one checksummed file of the store (``store.write_checked``): the sidecar
holds the table's sha256 and its own, so a truncated or altered table or sidecar is detected,
reported and recomputed, never loaded. While a spec is computed, an epoch checkpoint (with its own
checksum file) lives in ``<dir>/checkpoints/`` and a lock file ``<dir>/<optimizer>-<key>.lock``
(``store.exclusive``, holding the owner's pid) keeps a second process off the same spec.
``sweep_results`` gives the chapters their grids, computing the missing ones through ``executor``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import platform
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from . import store
from .checkpoint import discard_checkpoint
from .data import Dataset, data_root, dataset_fingerprint
from .errors import Busy, DamagedFile, ParameterError
from .profiles import get_profile
from .spec import SweepSpec, code_version, validate_params
from .train import load_spec_data, train_grid

# Read floats back exactly as written: pandas 3 does by default (and deprecates the option).
_EXACT_FLOATS = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


class SweepRunning(Busy):
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
    return results_dir(out) / f"{spec.grid_name.replace('@', '-')}-{spec_key(spec)}.csv"


def sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def checkpoint_path(path: Path) -> Path:
    """Where the epoch checkpoint of the result at ``path`` lives while it is computed."""
    return path.parent / "checkpoints" / f"{path.stem}.pt"


def spec_command(spec: SweepSpec) -> str:
    """The command line that recomputes ``spec``, to the bit: each float in its shortest text that
    reads back as the same number, each value quoted for the shell, and each field that differs from
    the profile's default given, so the command gives the same spec and so the same cache key."""
    default = SweepSpec.from_profile(spec.profile, spec.optimizer, spec.dataset)
    exact = lambda x: str(x) if isinstance(x, int) else repr(float(x))  # noqa: E731
    args = ["--optimizer", spec.optimizer, "--profile", spec.profile, "--dataset", spec.dataset,
            "--lrs", ",".join(map(exact, spec.lrs)), "--l2s", ",".join(map(exact, spec.l2s)),
            "--epochs", str(spec.epochs), "--seed", str(spec.seed), "--norm", spec.norm,
            "--precision", spec.precision]
    written = {"widths": lambda ws: ",".join(map(str, ws)),
               "hyper": lambda hp: ",".join(f"{k}={exact(v)}" for k, v in hp)}
    for name in ("n_train", "n_val", "n_test", "batch_size", "widths", "hyper"):
        value = getattr(spec, name)
        if value != getattr(default, name):
            args += ["--" + name.replace("_", "-"), written.get(name, str)(value)]
    if not spec.augment:
        args.append("--no-augment")
    if spec.evaluate != default.evaluate:
        args += ["--evaluate", spec.evaluate]
    return "l2bn sweep " + shlex.join(args)


def load_result(
    path: Path, log: Callable[[str], None] = print, spec: SweepSpec | None = None
) -> SweepResult | None:
    """The stored result at ``path``, or None when there is none. A result that is incomplete (table
    or sidecar missing), fails a checksum (the table's or the sidecar's own) or, given ``spec``, was
    computed for another spec is reported through ``log`` and also gives None, never a table."""
    if not path.exists() and not sidecar(path).exists():
        return None
    try:
        raw, meta = store.read_checked(path, sidecar(path))
        if spec is not None and (
            meta.get("key") != path.stem.rsplit("-", 1)[-1]
            or meta.get("spec") != json.loads(json.dumps(spec.to_dict()))
        ):
            raise DamagedFile("it was computed for another spec")
        table = pd.read_csv(io.BytesIO(raw), **_EXACT_FLOATS)
    except (DamagedFile, ValueError) as err:  # pandas reports a table it cannot parse as ValueError
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


@contextmanager
def _sweep_lock(lock: Path, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the lock of one spec (``store.exclusive``), with this process's pid in the lock file so
    that a refused second process can say who holds it (``SweepRunning``). The kernel drops the lock
    when its owner dies, even by SIGKILL: a lock file whose owner is gone is simply taken over."""
    with ExitStack() as held:
        try:
            held.enter_context(store.exclusive(lock, "sweep"))
        except Busy:
            pid = _lock_owner(lock)
            who = f"pid {pid}" if pid else "another process"
            raise SweepRunning(f"sweep: this spec is already running ({who}, lock {lock}); wait for it "
                               "to finish, then run the same command again to load its result") from None
        previous = _lock_owner(lock)
        if previous and previous != os.getpid():
            log(f"l2bn: taking over the lock of pid {previous}, which is no longer running")
        lock.write_text(f"{os.getpid()}\n")
        held.callback(lock.unlink, missing_ok=True)  # before the release: filelock skips a removed file
        yield


def _lock_owner(lock: Path) -> int:
    """The pid written in ``lock`` (0 when there is none)."""
    try:
        return int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _remove_temporaries(path: Path) -> None:
    """Delete the temporary files killed writers of this result and of its checkpoint left behind
    (call under the lock)."""
    for target in (path, sidecar(path), checkpoint_path(path)):
        store.remove_temporaries(target)


def cached_result(spec: SweepSpec, out: Path | str | None = None,
                  log: Callable[[str], None] = print) -> SweepResult | None:
    """The stored result of ``spec`` (reported as reused), or None when there is none or it is
    damaged (reported by ``load_result``). A checkpoint left by a run killed just after it stored
    the result is removed, unless another process holds the lock."""
    path = result_path(spec, out)
    cached = load_result(path, log, spec)
    if cached is None:
        return None
    log(f"l2bn: reusing cached result {path} (identical spec)")
    if not checkpoint_path(path).exists():
        return cached
    try:
        with _sweep_lock(path.with_suffix(".lock"), lambda _: None):
            discard_checkpoint(checkpoint_path(path))
            _remove_temporaries(path)
    except SweepRunning:
        pass
    return cached


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

    Everything is checked before any file is written: ``device``, ``impl`` and ``out``
    (``ParameterError('<param>: ...')``; the spec was checked when it was built) and the data
    (``DataError('dataset: ...')``). A second process on the same spec gets ``SweepRunning`` while
    the first holds the lock.
    """
    validate_params(spec, device, impl)
    root = results_dir(out)
    if root.exists() and not root.is_dir():
        raise ParameterError(f"out: {root} exists and is not a folder; give a folder for the results")
    if not force and (cached := cached_result(spec, out, log)) is not None:
        return cached
    path = result_path(spec, out)
    data = load_spec_data(spec)  # a bad npz or missing CIFAR file fails here, before any file is written
    with _sweep_lock(path.with_suffix(".lock"), log):
        _remove_temporaries(path)
        if not force and (cached := load_result(path, lambda _: None, spec)) is not None:
            log(f"l2bn: reusing cached result {path} (finished by another process meanwhile)")
            return cached
        result = _compute(spec, path, data, device, impl, progress, log)
    meta = result.provenance
    log(f"l2bn: wrote {path} ({meta['wall_time_s']:.1f} s on {meta['device']})")
    return result


def _compute(spec: SweepSpec, path: Path, data: Dataset, device: str, impl: str, progress: bool,
             log: Callable[[str], None]) -> SweepResult:
    """Train ``spec`` (from its checkpoint, if an earlier run left one) and store the table with its
    provenance as one checksummed file; call under the lock."""
    checkpoint = checkpoint_path(path)
    if checkpoint.exists():
        log(f"l2bn: resuming from checkpoint {checkpoint}")
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.time()
    table, facts = train_grid(spec, device=device, impl=impl, data=data, progress=progress,
                              checkpoint=checkpoint, log=log)
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
        **facts,
    }
    store.write_checked(path, table.to_csv(index=False).encode(), meta=provenance, sidecar=sidecar(path))
    discard_checkpoint(checkpoint)
    return SweepResult(table, store.read_sidecar(path, sidecar(path)), path, reused=False)


def grid_parts(spec: SweepSpec, n: int, whole_rows: bool = True) -> list[SweepSpec]:
    """``spec``'s grid cut into ``n`` runs of models of nearly equal size (the larger first), in the
    grid's order (η, then λ): each a sub-grid, a spec of its own trained and stored as any other,
    whose tables ``join_parts`` puts back together. The models of a grid are independent and share
    their initial weights, data order and augmentation, so a sub-grid computes its models exactly as
    the whole grid does on a pass that computes each row (``whole_rows``: cuts between η) or each
    model (cuts anywhere) on its own. A run that starts or ends inside a row is up to three
    sub-grids: the rest of its first row, its whole rows and the start of its last row."""
    units, unit = (len(spec.lrs), len(spec.l2s)) if whole_rows else (spec.n_models, 1)  # rows or models
    n = max(1, min(n, units))
    size, extra = divmod(units, n)
    cuts = [(i * size + min(i, extra)) * unit for i in range(n + 1)]  # in models
    return [part for a, b in zip(cuts, cuts[1:], strict=False) for part in _sub_grids(spec, a, b)]


def _sub_grids(spec: SweepSpec, a: int, b: int) -> list[SweepSpec]:
    """Models ``a`` to ``b`` − 1 of ``spec``'s grid as sub-grids of whole rows or of a row's part."""
    row, parts = len(spec.l2s), []
    while a < b:
        r, c = divmod(a, row)
        if c == 0 and b - a >= row:  # whole rows
            end = a + (b - a) // row * row
            parts.append(replace(spec, lrs=spec.lrs[r : end // row]))
        else:  # a part of row r
            end = min(b, (r + 1) * row)
            parts.append(replace(spec, lrs=spec.lrs[r : r + 1], l2s=spec.l2s[c : c + end - a]))
        a = end
    return parts


def join_parts(spec: SweepSpec, parts: list[SweepResult], out: Path | str | None = None) -> SweepResult:
    """Store the result of ``spec`` put together from the results of its ``grid_parts``: each
    part's models renumbered into the whole grid's order and the rows in a whole run's order
    (epoch, then model), so the table is byte for byte the one the whole grid gives on the same pass.
    The provenance is the first part's, with the whole spec, the parts' keys and the summed time."""
    tables = []
    for part in parts:
        lrs, l2s = part.provenance["spec"]["lrs"], part.provenance["spec"]["l2s"]
        i, j = divmod(part.table["model"], len(l2s))  # the model's η and λ in the part's grid
        t = part.table.copy()
        t["model"] = (spec.lrs.index(lrs[0]) + i) * len(spec.l2s) + spec.l2s.index(l2s[0]) + j
        tables.append(t)
    table = pd.concat(tables).sort_values(["epoch", "model"], kind="stable").reset_index(drop=True)
    metas = [p.provenance for p in parts]
    provenance = {**metas[0], "spec": spec.to_dict(), "key": spec_key(spec), "command": spec_command(spec),
                  "started": min(m["started"] for m in metas), "finished": max(m["finished"] for m in metas),
                  "wall_time_s": sum(m["wall_time_s"] for m in metas),
                  "session_wall_time_s": sum(m["session_wall_time_s"] for m in metas),
                  "joined_from": [{"key": m["key"], "lrs": m["spec"]["lrs"], "l2s": m["spec"]["l2s"],
                                   "host": m["host"], "wall_time_s": m["wall_time_s"]} for m in metas]}
    if len({m["impl"] for m in metas}) != 1:
        raise ValueError(f"results: the parts of {spec.optimizer} were computed with different passes")
    path = result_path(spec, out)
    store.write_checked(path, table.to_csv(index=False).encode(), meta=provenance, sidecar=sidecar(path))
    return SweepResult(table, store.read_sidecar(path, sidecar(path)), path, reused=False)


def list_results(out: Path | str | None = None) -> list[dict[str, Any]]:
    """One summary per stored result: file, rule, profile, dataset, models, epochs, device."""
    rows = []
    for meta_path in sorted(results_dir(out).glob("*.json")):
        try:
            meta = json.loads(meta_path.read_text())
            spec = meta["spec"]
            rows.append({"file": meta_path.with_suffix(".csv").name, "optimizer": spec["optimizer"],
                         "norm": spec.get("norm", "batch"),
                         "profile": spec["profile"], "dataset": spec["dataset"],
                         "models": len(spec["lrs"]) * len(spec["l2s"]), "epochs": spec["epochs"],
                         "device": meta.get("device_name", "?"), "finished": meta.get("finished")})
        except (ValueError, KeyError, OSError):
            rows.append({"file": meta_path.name, "optimizer": "damaged sidecar"})
    return rows


def sweep_results(
    profile: str, rules: list[str], dataset: str, device: str = "auto", progress: bool = True,
    seeds: int | None = None,
) -> dict[str, SweepResult] | dict[str, list[SweepResult]]:
    """One result per grid named in ``rules`` (an update rule, or ``rule@norm`` for another
    normalisation: ``spec.grid_name``), each on ``profile``'s default grid: loaded from the cache,
    or computed (with a progress bar) through the executor that ``$L2BN_EXECUTOR`` names: ``local``
    by default, side by side on a CPU's cores or a machine's GPUs, or ``slurm``, one job array (see
    ``l2bn.executor``). With ``seeds`` (``0`` for the profile's own number), each grid gets the list
    of its seed replicates 0, 1, … instead. Every table is checked to hold exactly one row per model
    and epoch, the shape the analysis expects."""
    from .executor import check, run_specs  # the executor is built on this module

    n = 1 if seeds is None else (seeds or get_profile(profile)["seeds"])
    specs = [SweepSpec.for_grid(profile, grid, dataset, seed=s)
             for grid in dict.fromkeys(rules) for s in range(n)]
    results: dict[str, list[SweepResult]] = {}
    for spec, result in zip(specs, check(run_specs(specs, device=device, progress=progress)),
                            strict=True):
        t = result.table
        if len(t) != t["model"].nunique() * t["epoch"].nunique():
            raise ValueError(f"results: {result.path} does not hold one row per model and epoch")
        results.setdefault(spec.grid_name, []).append(result)
    return {r: v[0] for r, v in results.items()} if seeds is None else results
