"""The resumable state of a training run and its checkpoint file.

A run keeps everything it needs to go on from an epoch boundary in one ``TrainState``. After each
epoch the state goes to a checksummed file of the store (``store.write_checked``: a reader sees the
old checkpoint or the new one, never a part), and a run finding one resumes from it, ending with the
same numbers as an unbroken run. A checkpoint is refused (``DamagedFile``, saying why) unless it is
intact and belongs to this spec, this code and this kind of device.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import store
from .errors import DamagedFile
from .model import PASSES, WideNet
from .optim import GridOptimizer
from .spec import SweepSpec, code_version

CHECKPOINT_FORMAT = 3
_KEYS = ("format", "spec", "code_version", "device_type", "epoch", "impl", "kernels", "net", "opt", "gen",
         "alive", "diverged_epoch", "rows", "elapsed")


@dataclass
class TrainState:
    """A run at an epoch boundary: the models, the update rule's state, the one generator of data
    order and augmentation, which models are alive (and since when they are not), the table so far,
    how many epochs are done and the seconds they took."""

    net: WideNet
    opt: GridOptimizer
    generator: torch.Generator
    alive: torch.Tensor  # (M,) bool: a model whose loss was not finite is frozen
    diverged_epoch: list[int | None]  # the epoch each model diverged in, None while alive
    rows: list[dict[str, Any]]
    epoch: int = 0
    elapsed: float = 0.0

    @property
    def impl(self) -> str:
        """The pass the network computes with (``model.PASSES``)."""
        return self.net.impl


def checkpoint_sidecar(path: Path) -> Path:
    """The JSON file next to checkpoint ``path`` that holds its sha256 and epoch."""
    return store.default_sidecar(Path(path))


def save_checkpoint(payload: dict[str, Any], path: Path, previous_sha256: str | None = None) -> str:
    """Write ``payload`` (a dict of tensors and plain values) to ``path`` as a checksummed file of
    the store; return its sha256. ``previous_sha256`` is that of the checkpoint it replaces, which
    its sidecar keeps accepting, so a process killed between the two renames leaves a valid pair."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    meta = {"epoch": payload.get("epoch"), "format": CHECKPOINT_FORMAT}
    return store.write_checked(path, buf.getvalue(), meta=meta, previous_sha256=previous_sha256)


def load_checkpoint(path: Path, spec: SweepSpec, device: torch.device) -> tuple[dict[str, Any], str]:
    """The payload saved at ``path`` and its sha256, after checking it against its sidecar, ``spec``,
    the code version and the device type; ``DamagedFile`` (saying why) when it must not be used."""
    raw, _ = store.read_checked(path)
    try:
        ck = torch.load(io.BytesIO(raw), map_location=device, weights_only=True)
    except Exception as err:  # torch raises many kinds for a bad file
        raise DamagedFile(f"it cannot be unpickled ({type(err).__name__}: {err})") from None
    if not isinstance(ck, dict) or any(k not in ck for k in _KEYS):
        raise DamagedFile("it lacks some of the state a resume needs")
    if ck["format"] != CHECKPOINT_FORMAT:
        raise DamagedFile(f"it has format {ck['format']}, this l2bn writes {CHECKPOINT_FORMAT}")
    if ck["spec"] != spec.to_dict():
        raise DamagedFile("it belongs to another spec")
    if ck["code_version"] != code_version():
        raise DamagedFile("it was written by another version of the training code")
    if ck["device_type"] != device.type:
        raise DamagedFile(f"it was written on {ck['device_type']}, this run is on {device.type}")
    if ck["impl"] not in PASSES or not 0 <= ck["epoch"] <= spec.epochs:
        raise DamagedFile("its contents are out of range")
    return ck, store.sha256_bytes(raw)


def discard_checkpoint(path: Path) -> None:
    """Remove checkpoint ``path`` and its checksum file."""
    store.discard(path)


class Checkpoint:
    """The checkpoint file of one run of ``spec`` on ``device``: ``resume`` a ``TrainState`` from
    it, ``save`` one to it after each epoch."""

    def __init__(self, path: Path, spec: SweepSpec, device: torch.device):
        self.path, self.spec, self.device = Path(path), spec, device
        self.sha256: str | None = None  # of the checkpoint on disk, which the next save replaces

    def resume(self, state: TrainState, impl: str, log: Callable[[str], None]) -> bool:
        """Load the saved state into ``state`` (a fresh one of the same spec) and say whether there
        was one. A damaged or foreign checkpoint, or one computed with other kernels than
        ``state``'s (``fused.run_kernels``), is reported through ``log`` and removed. The
        implementation is the checkpoint's whatever ``impl`` asks, so that the numbers match an
        unbroken run."""
        if not self.path.exists():
            return False
        try:
            ck, self.sha256 = load_checkpoint(self.path, self.spec, self.device)
            if ck["kernels"] != state.net.kernels:
                raise DamagedFile(f"it was computed with the {ck['kernels']} kernels, this run has the "
                                  f"{state.net.kernels} ones")
        except DamagedFile as err:
            log(f"l2bn: cannot resume from checkpoint {self.path}: {err}; starting from scratch")
            discard_checkpoint(self.path)
            return False
        state.net.load_state_dict(ck["net"])
        state.opt.load_state_dict(ck["opt"])
        state.generator.set_state(ck["gen"].cpu())
        state.alive = ck["alive"].to(self.device)
        state.diverged_epoch, state.rows = list(ck["diverged_epoch"]), list(ck["rows"])
        state.epoch, state.elapsed = ck["epoch"], ck["elapsed"]
        if impl not in ("auto", ck["impl"]):
            log(f"l2bn: resuming with impl={ck['impl']} as the checkpoint was computed (not {impl}), "
                "so that the numbers match an unbroken run")
        state.net.impl = ck["impl"]
        return True

    def save(self, state: TrainState) -> None:
        """Write ``state`` over the previous checkpoint."""
        self.sha256 = save_checkpoint({
            "format": CHECKPOINT_FORMAT, "spec": self.spec.to_dict(), "code_version": code_version(),
            "device_type": self.device.type, "epoch": state.epoch, "impl": state.impl,
            "kernels": state.net.kernels, "net": state.net.state_dict(), "opt": state.opt.state_dict(),
            "gen": state.generator.get_state(), "alive": state.alive,
            "diverged_epoch": state.diverged_epoch, "rows": state.rows, "elapsed": state.elapsed,
        }, self.path, previous_sha256=self.sha256)
