"""Training a whole (η, λ) grid for one update rule as one wide model.

The models of a grid share their initial weights, their data order and their augmentation, so that
everything that differs between them comes from η and λ. Model m of a grid with learning rates
``lrs`` and regularisations ``l2s`` has η = lrs[m // len(l2s)], λ = l2s[m % len(l2s)].
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import numbers
import os
import platform
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

try:
    import fcntl
except ImportError:  # not POSIX: no lock, a concurrent measurement may be lost (and redone later)
    fcntl = None

from .data import (
    Dataset,
    check_dataset_name,
    data_root,
    dataset_names,
    load_dataset,
    translate_flip,
)
from .model import NORMS, WideNet
from .optim import GridOptimizer
from .profiles import OPTIMIZER_DEFAULTS, OPTIMIZERS, PROFILES, default_grid, get_profile
from .scale import effective_lr, lr_schedule, unit_norms

IMPLS = ("auto", "wide", "loop")
# fp32: plain float32 (TF32 tensor cores off, also for cuDNN, whose default is on); tf32: float32
# storage with TF32 matrix units on a GPU (no effect on a CPU); bf16: bfloat16 autocast of the
# forward pass with float32 master weights, optimiser state and loss.
PRECISIONS = ("fp32", "tf32", "bf16")
MAX_SHIFT = 4  # pixels of random translation in the augmentation (§6)
BUILTIN_SIZES = {"synthetic": (50000, 10000), "cifar10": (50000, 10000)}  # (train, test) images
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SweepSpec:
    """Everything that determines a sweep's results (and so its cache key)."""

    optimizer: str
    lrs: tuple[float, ...]
    l2s: tuple[float, ...]
    dataset: str = "synthetic"
    profile: str = "quick"
    epochs: int = 10
    batch_size: int = 128
    n_train: int = 4096
    n_val: int = 1024
    n_test: int = 2048
    widths: tuple[int, ...] = (8, 16, 32, 64)
    norm: str = "batch"
    seed: int = 0
    augment: bool = True
    hyper: tuple[tuple[str, float], ...] = field(default=())
    precision: str = "fp32"

    @classmethod
    def from_profile(
        cls,
        profile: str,
        optimizer: str,
        dataset: str = "synthetic",
        lrs: list[float] | None = None,
        l2s: list[float] | None = None,
        **overrides: Any,
    ) -> SweepSpec:
        """The spec of ``profile`` for ``optimizer``, with any field overridden (``None`` keeps the
        profile's value).

        Every argument is checked before anything is built: a bad one raises ``ValueError`` with a
        one-line message that starts with the parameter's name (``'lrs: ...'``).
        """
        if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer: unknown update rule {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        if not isinstance(profile, str):
            raise ValueError(f"profile: expected a name ({', '.join(PROFILES)}); got {profile!r}")
        p = get_profile(profile)
        known = {f.name for f in fields(cls)} - {"optimizer", "lrs", "l2s", "dataset", "profile"}
        for k in overrides:
            if k not in known:
                raise ValueError(f"{k}: not a parameter of a sweep; the overridable ones are "
                                 f"{', '.join(sorted(known))}")
        hyper_in = overrides.pop("hyper", None)
        if hyper_in is None:
            hyper_in = {}
        if not isinstance(hyper_in, Mapping):
            raise ValueError(f"hyper: expected a mapping of name to number "
                             f"({', '.join(OPTIMIZER_DEFAULTS[optimizer]) or 'none for this rule'}); "
                             f"got {hyper_in!r}")
        grid_lrs, grid_l2s = default_grid(profile, optimizer)
        hyper = {**OPTIMIZER_DEFAULTS[optimizer], **hyper_in}
        values = {k: p[k] for k in ("epochs", "batch_size", "n_train", "n_val", "n_test", "widths")}
        values.update({k: v for k, v in overrides.items() if v is not None})
        for k, v in values.items():  # numpy integers are fine; bools and floats are not
            if isinstance(v, numbers.Integral) and not isinstance(v, bool):
                values[k] = int(v)
        if "widths" in values:
            values["widths"] = _as_tuple("widths", values["widths"], "four positive channel counts")
            values["widths"] = tuple(
                int(c) if isinstance(c, numbers.Integral) and not isinstance(c, bool) else c
                for c in values["widths"]
            )
        try:
            hyper_items = tuple(sorted(hyper.items()))
        except TypeError:
            raise ValueError(f"hyper: names must be strings; got {list(hyper)}") from None
        spec = cls(
            optimizer=optimizer,
            lrs=_as_grid("lrs", grid_lrs if lrs is None else lrs, "η > 0"),
            l2s=_as_grid("l2s", grid_l2s if l2s is None else l2s, "λ ≥ 0"),
            dataset=dataset,
            profile=profile,
            hyper=hyper_items,
            **values,
        )
        spec.validate()
        return spec

    @property
    def n_models(self) -> int:
        return len(self.lrs) * len(self.l2s)

    @property
    def grid(self) -> list[tuple[float, float]]:
        """(η, λ) of each model, in model order."""
        return [(lr, l2) for lr in self.lrs for l2 in self.l2s]

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message ``'<field>: <problem>; <accepted values>'`` naming
        the first bad field. Types are checked as well as values, so a spec built by hand gets the
        same messages as one from ``from_profile``. The data itself is checked by ``load_spec_data``.
        """
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer: unknown update rule {self.optimizer!r}; "
                f"choose one of {', '.join(OPTIMIZERS)}"
            )
        if not isinstance(self.profile, str) or self.profile not in PROFILES:
            raise ValueError(f"profile: unknown profile {self.profile!r}; choose one of "
                             f"{', '.join(PROFILES)}")
        if not isinstance(self.dataset, str):
            raise ValueError(f"dataset: expected a name ({dataset_names()}); got {self.dataset!r}")
        check_dataset_name(self.dataset)
        for name, grid, low_ok in (("lrs", self.lrs, False), ("l2s", self.l2s, True)):
            what = "η > 0" if name == "lrs" else "λ ≥ 0"
            if not isinstance(grid, tuple):
                raise ValueError(f"{name}: expected a tuple of numbers ({what}); got {grid!r}")
            if not grid:
                raise ValueError(f"{name}: the grid is empty; give at least one value ({what})")
            if not all(isinstance(x, float) and math.isfinite(x) for x in grid):
                raise ValueError(f"{name}: every value must be a finite number ({what}); "
                                 f"got {list(grid)}")
            if any(x < 0 or (x == 0 and not low_ok) for x in grid):
                raise ValueError(f"{name}: every value must satisfy {what}; got {list(grid)}")
            if list(grid) != sorted(set(grid)):
                raise ValueError(f"{name}: the grid must be strictly increasing (sorted, no repeats); "
                                 f"got {list(grid)}")
        for name in ("epochs", "batch_size", "n_train", "n_val", "n_test"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}: must be a positive integer; got {v!r}")
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size: {self.batch_size} is larger than the training set "
                             f"(n_train = {self.n_train}); choose 1 … {self.n_train}")
        if self.dataset in BUILTIN_SIZES:
            n_avail, t_avail = BUILTIN_SIZES[self.dataset]
            if self.n_train + self.n_val > n_avail:
                raise ValueError(f"n_train: n_train + n_val = {self.n_train + self.n_val} exceeds the "
                                 f"{n_avail} training images of {self.dataset}")
            if self.n_test > t_avail:
                raise ValueError(f"n_test: {self.n_test} exceeds the {t_avail} test images of "
                                 f"{self.dataset}")
        if (not isinstance(self.widths, tuple) or len(self.widths) != 4
                or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                           for c in self.widths)):
            raise ValueError(f"widths: four positive channel counts needed; got {self.widths!r}")
        if not isinstance(self.norm, str) or self.norm not in NORMS:
            raise ValueError(f"norm: unknown normalisation {self.norm!r}; choose one of "
                             f"{', '.join(NORMS)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed: must be an integer in 0 … 2**63 - 1; got {self.seed!r}")
        if not isinstance(self.augment, bool):
            raise ValueError(f"augment: must be True or False; got {self.augment!r}")
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            raise ValueError(f"precision: unknown precision {self.precision!r}; choose one of "
                             f"{', '.join(PRECISIONS)}")
        self._validate_hyper()

    def _validate_hyper(self) -> None:
        allowed = OPTIMIZER_DEFAULTS[self.optimizer]
        names = ", ".join(allowed) or "none"
        if not isinstance(self.hyper, tuple) or not all(
            isinstance(kv, tuple) and len(kv) == 2 for kv in self.hyper
        ):
            raise ValueError(f"hyper: expected (name, value) pairs for {self.optimizer} ({names}); "
                             f"got {self.hyper!r}")
        for k, v in self.hyper:
            if k not in allowed:
                raise ValueError(f"hyper: {self.optimizer} has no hyperparameter {k!r}; it takes {names}")
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"hyper: {k} must be a finite number; got {v!r}")
            if k.startswith("rho") and not 0 <= v < 1:
                raise ValueError(f"hyper: {k} must lie in [0, 1); got {v!r}")
            if k == "eps" and not v > 0:
                raise ValueError(f"hyper: eps must be positive; got {v!r}")
        if len({k for k, _ in self.hyper}) != len(self.hyper):
            raise ValueError(f"hyper: a name is given twice in {self.hyper!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hyper"] = dict(self.hyper)
        return d


def _as_tuple(name: str, values: Any, what: str) -> tuple:
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise ValueError(f"{name}: expected a list of {what}; got {values!r}")
    return tuple(values)


def _as_grid(name: str, values: Any, what: str) -> tuple[float, ...]:
    """A grid as a tuple of floats; anything that is not a list of real numbers is a ``ValueError``."""
    out = _as_tuple(name, values, f"numbers ({what})")
    if not all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in out):
        raise ValueError(f"{name}: expected a list of numbers ({what}); got {list(out)!r}")
    return tuple(float(x) for x in out)


def code_version() -> str:
    """sha256 of the modules whose code decides the numbers a sweep produces."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in ("data.py", "model.py", "optim.py", "scale.py", "train.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def resolve_device(device: str) -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU; ``cuda`` without a GPU is an error, and so
    is anything but ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``ValueError``, message ``'device: ...'``)."""
    accepted = "choose one of auto, cpu, cuda, cuda:N"
    if not isinstance(device, str):
        raise ValueError(f"device: expected a name; got {device!r}; {accepted}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if m is None:
        raise ValueError(f"device: unknown device {device!r}; {accepted}")
    if not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for but this machine has no usable GPU; "
                         "use --device cpu or auto")
    n = torch.cuda.device_count()
    if m.group(1) is not None and int(m.group(1)) >= n:
        raise ValueError(f"device: {device} does not exist; this machine has {n} GPU(s), "
                         f"cuda:0 … cuda:{n - 1}")
    return torch.device(device)


def check_impl(impl: str) -> str:
    """``impl`` if it is one of ``IMPLS``, else ``ValueError('impl: ...')``."""
    if not isinstance(impl, str) or impl not in IMPLS:
        raise ValueError(f"impl: unknown implementation {impl!r}; choose one of {', '.join(IMPLS)}")
    return impl


def validate_params(spec: SweepSpec, device: str = "auto", impl: str = "auto") -> torch.device:
    """Check everything about a run that can be checked without loading data: the spec, the device
    and the implementation. Returns the device; raises ``ValueError('<param>: ...')``."""
    if not isinstance(spec, SweepSpec):
        raise ValueError(f"spec: expected a SweepSpec (see SweepSpec.from_profile); got {spec!r}")
    spec.validate()
    check_impl(impl)
    return resolve_device(device)


def load_spec_data(spec: SweepSpec) -> Dataset:
    """The data of ``spec``, loaded and checked (an npz file's arrays, shapes, dtypes and labels,
    CIFAR-10's md5s, enough images for the sizes): ``DatasetError('dataset: ...')`` otherwise, or
    ``ValueError`` from ``check_spec_data``."""
    data = load_dataset(spec.dataset, spec.n_train, spec.n_val, spec.n_test)
    check_spec_data(spec, data)
    return data


def check_spec_data(spec: SweepSpec, data: Dataset) -> None:
    """``ValueError('<param>: ...')`` unless ``data`` has the sizes of ``spec`` and its images leave
    batch normalisation more than one value per channel at the last layer."""
    sizes = (len(data.x_train), len(data.x_val), len(data.x_test))
    if sizes != (spec.n_train, spec.n_val, spec.n_test):
        raise ValueError(f"data: {data.name} has (train, val, test) sizes {sizes}; the spec needs "
                         f"{(spec.n_train, spec.n_val, spec.n_test)}")
    h, w = data.x_train.shape[-2:]
    for _ in range(len(spec.widths) - 1):  # max-pooling after all but the last conv
        h, w = h // 2, w // 2
    if spec.norm == "batch" and spec.batch_size * h * w < 2:
        raise ValueError(f"batch_size: with {tuple(data.x_train.shape[-2:])} images the last layer is "
                         f"{h}×{w}, so batch normalisation needs batch_size ≥ 2; got {spec.batch_size}")


# ---------------------------------------------------------------------------------------------
# The steps of training
# ---------------------------------------------------------------------------------------------


def to_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images → standardised float32, channels-last: the layout cuDNN is fastest in, and on a
    CPU oneDNN's channels-last kernels make one thread about as fast as two in the NCHW layout for
    the quick profile's network (measured), which lets grids train side by side (``results``)."""
    out = (x.float() - mean[:, None, None]) / std[:, None, None]
    return out.contiguous(memory_format=torch.channels_last)


@contextmanager
def numeric_precision(precision: str) -> Iterator[None]:
    """TF32 matrix units on for ``tf32`` and off otherwise, restored afterwards."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def train_step(
    net: WideNet, opt: GridOptimizer, x: torch.Tensor, y: torch.Tensor, lr_scale: float,
    alive: torch.Tensor, precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """One step for all M models. Returns per-model loss and error, the updated ``alive`` mask and
    the units' angular updates. A model whose loss is not finite is marked dead and not updated.
    With ``precision='bf16'`` the forward pass runs under bfloat16 autocast; the loss, gradients,
    weights and optimiser state stay float32."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = net(x)
    logits = logits.float()
    m, b, c = logits.shape
    loss = F.cross_entropy(logits.reshape(m * b, c), y.repeat(m), reduction="none").view(m, b)
    loss = loss.mean(dim=1)
    alive = alive & torch.isfinite(loss)
    net.zero_grad(set_to_none=False)
    # Summed, not averaged, so each model gets exactly its own gradient; a dead model's NaNs stay
    # in its own slice of every tensor.
    loss.sum().backward()
    angles = opt.step(lr_scale, alive)
    err = (logits.detach().argmax(dim=-1) != y).float().mean(dim=1)
    return loss.detach(), err, alive, angles


@torch.no_grad()
def error_rate(
    net: WideNet, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
    chunk: int = 256,  # small enough to stay in cache: 3–4× faster on a CPU than 1000
) -> torch.Tensor:
    """Each model's classification error on (x, y), in evaluation mode."""
    was_training = net.training
    net.eval()
    wrong = torch.zeros(net.n_models, device=x.device)
    for lo in range(0, len(x), chunk):
        logits = net(to_input(x[lo : lo + chunk], mean, std))
        wrong += (logits.argmax(dim=-1) != y[lo : lo + chunk]).sum(dim=1)
    net.train(was_training)
    return wrong / len(x)


def choose_impl(net: WideNet, x: torch.Tensor, y: torch.Tensor, repeats: int = 5,
                precision: str = "fp32") -> str:
    """Time forward + backward of the wide and the loop pass on one batch; return the faster.

    The two are timed in alternation and each keeps its best time, so a burst of load from another
    process slows both rather than deciding the race. Timed on a copy, so the network's running
    statistics are untouched."""
    if net.n_models == 1:
        return "wide"
    probe = copy.deepcopy(net)
    timing = {"wide": math.inf, "loop": math.inf}
    for r in range(repeats + 1):
        for impl in timing:
            probe.impl = impl
            if x.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = probe(x)
            F.cross_entropy(logits.float().flatten(0, 1), y.repeat(net.n_models)).backward()
            if x.is_cuda:
                torch.cuda.synchronize()
            if r:  # the first round warms up
                timing[impl] = min(timing[impl], time.perf_counter() - t0)
    return min(timing, key=timing.get)


def remembered_impl(net: WideNet, x: torch.Tensor, y: torch.Tensor, precision: str) -> str:
    """``choose_impl``, measured once per machine, device and network shape and then remembered in
    ``data/impl_choices.json``. The two passes agree only to rounding, which training amplifies, so
    a spec rerun on the same machine must take the same pass to give the same numbers."""
    dev = x.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu×{torch.get_num_threads()}"
    key = (f"{platform.node()}|{name}|torch {torch.__version__}|M={net.n_models}|widths={net.widths}|"
           f"norm={net.norm}|batch={len(x)}|{precision}")
    path = data_root() / "impl_choices.json"
    # Grids trained side by side share the file: one measures, the others wait and read its choice.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            choices = json.loads(path.read_text())
        except (OSError, ValueError):
            choices = {}
        if not isinstance(choices, dict) or choices.get(key) not in ("wide", "loop"):
            choices = choices if isinstance(choices, dict) else {}
            choices[key] = choose_impl(net, x, y, precision=precision)
            atomic_write(path, json.dumps(choices, indent=1, sort_keys=True).encode())
    return choices[key]


# ---------------------------------------------------------------------------------------------
# A whole grid
# ---------------------------------------------------------------------------------------------


def _layer_stats(net: WideNet, eta: torch.Tensor, optimizer: str) -> dict[str, torch.Tensor]:
    out = {}
    for i, w in enumerate(net.conv_weights):
        norms = unit_norms(w.detach())  # (M, C)
        out[f"unit_norm_{i}"] = norms.mean(dim=1)
        out[f"layer_norm_{i}"] = w.detach().flatten(1).norm(dim=1)
        # η over the mean unit norm: a mean of η/‖w_u‖^p would be dominated by collapsed units.
        out[f"eta_eff_{i}"] = effective_lr(eta, out[f"unit_norm_{i}"], optimizer)
    return out


# ---------------------------------------------------------------------------------------------
# Checkpoints: atomic, checksummed, refused unless they belong to this spec and this code
# ---------------------------------------------------------------------------------------------

CHECKPOINT_FORMAT = 2
_CHECKPOINT_KEYS = ("format", "spec", "code_version", "device_type", "epoch", "impl", "net", "opt",
                    "gen", "alive", "diverged_epoch", "rows", "elapsed")


class CheckpointError(Exception):
    """A checkpoint that must not be resumed from; the message says why."""


def checkpoint_sidecar(path: Path) -> Path:
    """The JSON file next to checkpoint ``path`` that holds its sha256."""
    return path.with_name(path.name + ".sha256")


def atomic_write(path: Path, data: bytes, before_rename: Callable[[], None] | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    ``before_rename`` runs once the data is safely on disk, just before it replaces ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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


def save_checkpoint(state: dict[str, Any], path: Path, previous_sha256: str | None = None) -> str:
    """Write ``state`` to ``path`` atomically, with its sha256 in ``checkpoint_sidecar(path)``; return
    the sha256.

    The new checkpoint goes to a temporary file first. The sidecar, naming the new checksum and that
    of the checkpoint it replaces (``previous_sha256``), is renamed into place next, then the
    checkpoint. A process killed at any instant so leaves a checkpoint that matches its sidecar.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    raw = buf.getvalue()
    digest = hashlib.sha256(raw).hexdigest()
    meta = {"sha256": digest, "previous_sha256": previous_sha256, "epoch": state.get("epoch"),
            "format": CHECKPOINT_FORMAT}
    atomic_write(path, raw, before_rename=lambda: atomic_write(
        checkpoint_sidecar(path), json.dumps(meta, indent=1).encode()))
    return digest


def load_checkpoint(path: Path, spec: SweepSpec, device: torch.device) -> tuple[dict[str, Any], str]:
    """The state saved at ``path`` and its sha256, after checking it against its sidecar, ``spec``,
    the code version and the device type; ``CheckpointError`` (saying why) when it must not be used."""
    try:
        meta = json.loads(checkpoint_sidecar(path).read_text())
        accepted = {meta["sha256"], meta.get("previous_sha256")} - {None}
    except FileNotFoundError:
        raise CheckpointError("its checksum file is missing") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"its checksum file is unreadable ({err})") from None
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"it cannot be read ({err})") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest not in accepted:
        raise CheckpointError("it does not match the sha256 in its checksum file (truncated or corrupted)")
    try:
        ck = torch.load(io.BytesIO(raw), map_location=device, weights_only=True)
    except Exception as err:  # torch raises many kinds for a bad file
        raise CheckpointError(f"it cannot be unpickled ({type(err).__name__}: {err})") from None
    if not isinstance(ck, dict) or any(k not in ck for k in _CHECKPOINT_KEYS):
        raise CheckpointError("it lacks some of the state a resume needs")
    if ck["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"it has format {ck['format']}, this l2bn writes {CHECKPOINT_FORMAT}")
    if ck["spec"] != spec.to_dict():
        raise CheckpointError("it belongs to another spec")
    if ck["code_version"] != code_version():
        raise CheckpointError("it was written by another version of the training code")
    if ck["device_type"] != device.type:
        raise CheckpointError(f"it was written on {ck['device_type']}, this run is on {device.type}")
    if ck["impl"] not in ("wide", "loop") or not 0 <= ck["epoch"] <= spec.epochs:
        raise CheckpointError("its contents are out of range")
    return ck, digest


def discard_checkpoint(path: Path) -> None:
    """Remove checkpoint ``path`` and its checksum file."""
    path.unlink(missing_ok=True)
    checkpoint_sidecar(path).unlink(missing_ok=True)


def train_grid(
    spec: SweepSpec,
    device: str = "auto",
    impl: str = "auto",
    data: Dataset | None = None,
    progress: bool = True,
    checkpoint: Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Train every model of ``spec``'s grid; return the tidy per-(model, epoch) table and facts
    about the run (device, implementation, dataset checksum, wall time).

    With ``checkpoint``, the state at each epoch boundary is written there (atomically, with a
    checksum) and a run finding one for the same spec resumes from it, ending with the same numbers
    as an unbroken run: weights, BN running statistics, optimiser state and step count, the data
    generator, the alive mask, the rows so far and the implementation chosen (``wide`` or ``loop``)
    all come from the checkpoint. A damaged or foreign checkpoint is reported through ``log`` and
    the run starts from scratch.
    """
    dev = validate_params(spec, device, impl)
    t_start = time.perf_counter()
    data = data or load_spec_data(spec)
    check_spec_data(spec, data)
    data = data.to(dev)
    mean, std = (s.to(dev) for s in data.channel_stats)
    m = spec.n_models
    eta = torch.tensor([lr for lr, _ in spec.grid], device=dev)
    lam = torch.tensor([l2 for _, l2 in spec.grid], device=dev)
    net = WideNet(m, spec.widths, spec.norm, seed=spec.seed).to(dev)
    opt = GridOptimizer(spec.optimizer, net.param_roles(), eta, lam, **dict(spec.hyper))
    gen = torch.Generator(device=dev).manual_seed(spec.seed)
    steps = spec.n_train // spec.batch_size
    alive = torch.ones(m, dtype=torch.bool, device=dev)
    diverged_epoch = [None] * m
    rows: list[dict[str, Any]] = []
    first_epoch, elapsed_before = 0, 0.0

    ck, ck_sha = None, None
    if checkpoint is not None and checkpoint.exists():
        try:
            ck, ck_sha = load_checkpoint(checkpoint, spec, dev)
        except CheckpointError as err:
            log(f"l2bn: cannot resume from checkpoint {checkpoint}: {err}; starting from scratch")
            discard_checkpoint(checkpoint)
    if ck is not None:
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"].cpu())
        alive, diverged_epoch, rows = ck["alive"].to(dev), list(ck["diverged_epoch"]), list(ck["rows"])
        first_epoch, elapsed_before = ck["epoch"], ck["elapsed"]
        if impl not in ("auto", ck["impl"]):
            log(f"l2bn: resuming with impl={ck['impl']} as the checkpoint was computed (not {impl}), "
                "so that the numbers match an unbroken run")
        net.impl = ck["impl"]
    else:
        x0 = to_input(data.x_train[: spec.batch_size], mean, std)
        if impl == "auto":
            with numeric_precision(spec.precision):
                impl = remembered_impl(net, x0, data.y_train[: spec.batch_size], spec.precision)
        net.impl = impl

    with numeric_precision(spec.precision):
        bar = tqdm(
            total=spec.epochs * steps, initial=first_epoch * steps, disable=not progress,
            desc=f"{spec.optimizer} ×{m}", unit="step", dynamic_ncols=True,
        )
        for epoch in range(first_epoch, spec.epochs):
            net.train()
            lr_scale = lr_schedule(epoch, spec.epochs)
            perm = torch.randperm(spec.n_train, generator=gen, device=dev)
            sums = {k: torch.zeros(m, device=dev) for k in ("loss", "err")}
            angle_sums = {f"angle_{i}": torch.zeros(m, device=dev) for i in range(len(spec.widths))}
            for s in range(steps):
                idx = perm[s * spec.batch_size : (s + 1) * spec.batch_size]
                xb = data.x_train[idx]
                if spec.augment:
                    xb = translate_flip(xb, MAX_SHIFT, gen)
                loss, err, alive, angles = train_step(
                    net, opt, to_input(xb, mean, std), data.y_train[idx], lr_scale, alive,
                    spec.precision,
                )
                sums["loss"] += torch.where(alive, loss, 0.0)
                sums["err"] += err
                for i, a in enumerate(angles.values()):
                    angle_sums[f"angle_{i}"] += a
                bar.update()
            # One read-back per epoch: everything measured goes to the host together.
            stats = {
                "train_loss": sums["loss"] / steps,
                "train_err": sums["err"] / steps,
                "val_err": error_rate(net, data.x_val, data.y_val, mean, std),
                "test_err": error_rate(net, data.x_test, data.y_test, mean, std),
                **_layer_stats(net, eta * lr_scale, spec.optimizer),
                **{k: v / steps for k, v in angle_sums.items()},
            }
            host = {k: v.cpu().tolist() for k, v in stats.items()}
            alive_host = alive.cpu().tolist()
            for i in range(m):
                if not alive_host[i] and diverged_epoch[i] is None:
                    diverged_epoch[i] = epoch + 1
                dead = diverged_epoch[i] is not None
                row = {
                    "optimizer": spec.optimizer, "model": i, "lr": spec.grid[i][0],
                    "l2": spec.grid[i][1], "epoch": epoch + 1, "lr_scale": lr_scale, "diverged": dead,
                }
                row.update({k: math.nan if dead else v[i] for k, v in host.items()})
                rows.append(row)
            bar.set_postfix(epoch=f"{epoch + 1}/{spec.epochs}", alive=f"{sum(alive_host)}/{m}")
            if checkpoint is not None:
                ck_sha = save_checkpoint({
                    "format": CHECKPOINT_FORMAT, "spec": spec.to_dict(), "code_version": code_version(),
                    "device_type": dev.type, "epoch": epoch + 1, "impl": net.impl,
                    "net": net.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                    "alive": alive, "diverged_epoch": diverged_epoch, "rows": rows,
                    "elapsed": elapsed_before + time.perf_counter() - t_start,
                }, checkpoint, previous_sha256=ck_sha)
        bar.close()
    facts = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "impl": net.impl,
        # On a CPU the thread count can change the rounding of reductions: part of "same machine".
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "dataset_checksum": data.checksum,
        "wall_time_s": elapsed_before + time.perf_counter() - t_start,
        "steps_per_epoch": steps,
        "resumed_from_epoch": first_epoch,
        "seed": spec.seed,
        "randomness": (
            f"seed {spec.seed} decides every random draw of training: the initial weights (a CPU "
            f"generator seeded with {spec.seed}, the same draw for every model), then the data order "
            f"and the augmentation (random shifts of up to {MAX_SHIFT} px and flips) from one "
            f"{dev.type} generator seeded with {spec.seed}, saved in every checkpoint; augmentation "
            f"{'on' if spec.augment else 'off'}. Fixed, whatever the seed: the validation split "
            "(numpy permutation, seed 12345) and the synthetic images (seed 0)."
        ),
    }
    return pd.DataFrame(rows), facts


