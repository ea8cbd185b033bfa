"""One store for every file the library keeps: results, checkpoints, dataset caches, book stamps.

Three ideas, each written once:

- **atomic write**: a reader sees the old file or the new one, never a part (temporary file, fsync,
  rename);
- **checksummed file**: a payload with a JSON sidecar that holds the payload's sha256, the sha256
  of the payload it replaced (so a process killed between the two renames still leaves a valid
  pair), any metadata, and the sidecar's own sha256. ``read_checked`` refuses anything else with
  ``DamagedFile``;
- **lock**: an exclusive, non-blocking ``filelock`` lock, dropped by the kernel when its owner
  dies (even by SIGKILL), so a stale lock file is simply taken over. A held lock is ``Busy``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .errors import Busy, DamagedFile

SIDECAR_SUFFIX = ".sha256"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (dataset archives do not fit a bytes object well)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def temporary_name(path: Path) -> Path:
    """The temporary file a writer of ``path`` uses; ``remove_temporaries`` finds it by this name."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: Path, data: bytes, before_rename: Callable[[], None] | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    ``before_rename`` runs once the data is safely on disk, just before it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_temporaries(path: Path) -> None:
    """Delete the temporary files that killed writers of ``path`` and of its sidecar left behind
    (call it while holding the lock on ``path``)."""
    for target in (Path(path), default_sidecar(Path(path))):
        for tmp in target.parent.glob(f".{target.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def default_sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _self_digest(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "sidecar_sha256"}
    return sha256_bytes(json.dumps(body, sort_keys=True, default=str).encode())


def write_checked(
    path: Path,
    data: bytes,
    meta: dict[str, Any] | None = None,
    sidecar: Path | None = None,
    previous_sha256: str | None = None,
) -> str:
    """Store ``data`` at ``path`` with a checksummed sidecar (``path`` + ``.sha256`` unless
    ``sidecar`` is given) holding ``meta``; return the payload's sha256.

    The sidecar, naming the new checksum and ``previous_sha256`` (that of the payload being
    replaced), is renamed into place first, then the payload: a process killed at any instant leaves
    a payload that its sidecar accepts."""
    path = Path(path)
    digest = sha256_bytes(data)
    record = {**(meta or {}), "sha256": digest, "previous_sha256": previous_sha256}
    record["sidecar_sha256"] = _self_digest(record)
    side = sidecar or default_sidecar(path)
    atomic_write(path, data, before_rename=lambda: atomic_write(
        side, (json.dumps(record, indent=2, default=str) + "\n").encode()))
    return digest


def read_sidecar(path: Path, sidecar: Path | None = None) -> dict[str, Any]:
    """The sidecar of ``path`` after checking its own checksum; ``DamagedFile`` otherwise."""
    side = sidecar or default_sidecar(Path(path))
    try:
        meta = json.loads(side.read_text())
    except FileNotFoundError:
        raise DamagedFile(f"its checksum file {side.name} is missing") from None
    except (OSError, ValueError) as err:
        raise DamagedFile(f"its checksum file {side.name} is unreadable ({err})") from None
    if not isinstance(meta, dict):
        raise DamagedFile(f"its checksum file {side.name} is unreadable (not a JSON object)")
    if meta.get("sidecar_sha256") != _self_digest(meta):
        raise DamagedFile(f"its checksum file {side.name} does not match its own checksum")
    return meta


def read_checked(path: Path, sidecar: Path | None = None) -> tuple[bytes, dict[str, Any]]:
    """The payload at ``path`` and its sidecar's metadata, after checking both checksums;
    ``DamagedFile`` (saying why) when either file is missing, truncated or altered."""
    path = Path(path)
    if not path.exists():
        raise DamagedFile(f"{path.name} is missing")
    meta = read_sidecar(path, sidecar)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DamagedFile(f"it cannot be read ({err})") from None
    if sha256_bytes(data) not in {meta.get("sha256"), meta.get("previous_sha256")} - {None}:
        raise DamagedFile(f"{path.name} does not match the sha256 in its checksum file "
                          "(truncated or corrupted)")
    return data, meta


def discard(path: Path, sidecar: Path | None = None) -> None:
    """Remove the payload at ``path`` and its sidecar."""
    Path(path).unlink(missing_ok=True)
    (sidecar or default_sidecar(Path(path))).unlink(missing_ok=True)


@contextmanager
def exclusive(path: Path, what: str = "this work") -> Iterator[None]:
    """Hold the lock file ``path`` for the duration; ``Busy`` at once if another process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise Busy(f"{what}: already running in another process (lock {path}); wait for it to "
                   "finish, then run the same command again") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def waiting(path: Path) -> Iterator[None]:
    """Hold the lock file ``path``, waiting for another holder to finish first (for short critical
    sections such as updating a small shared file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield
