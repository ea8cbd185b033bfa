"""Training a whole (η, λ) grid for one update rule as one wide model.

The models of a grid share their initial weights, their data order and their augmentation, so that
everything that differs between them comes from η and λ. Model m of a grid with learning rates
``lrs`` and regularisations ``l2s`` has η = lrs[m // len(l2s)], λ = l2s[m % len(l2s)].
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import Dataset, check_dataset_name, load_dataset, translate_flip
from .model import NORMS, WideNet
from .optim import GridOptimizer
from .profiles import OPTIMIZER_DEFAULTS, OPTIMIZERS, PROFILES, default_grid, get_profile
from .scale import effective_lr, lr_schedule, unit_norms

IMPLS = ("auto", "wide", "loop")
MAX_SHIFT = 4  # pixels of random translation in the augmentation (§6)


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
        """The spec of ``profile`` for ``optimizer``, with any field overridden."""
        if optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer: unknown update rule {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        p = get_profile(profile)
        grid_lrs, grid_l2s = default_grid(profile, optimizer)
        hyper = {**OPTIMIZER_DEFAULTS[optimizer], **overrides.pop("hyper", {})}
        fields = {k: p[k] for k in ("epochs", "batch_size", "n_train", "n_val", "n_test", "widths")}
        fields.update({k: v for k, v in overrides.items() if v is not None})
        spec = cls(
            optimizer=optimizer,
            lrs=tuple(float(x) for x in (grid_lrs if lrs is None else lrs)),
            l2s=tuple(float(x) for x in (grid_l2s if l2s is None else l2s)),
            dataset=dataset,
            profile=profile,
            hyper=tuple(sorted(hyper.items())),
            **{k: tuple(v) if k == "widths" else v for k, v in fields.items()},
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
        """Raise ``ValueError`` with a one-line message naming the first bad field."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer: unknown update rule {self.optimizer!r}; "
                f"choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.profile not in PROFILES:
            raise ValueError(f"profile: unknown profile {self.profile!r}; choose one of "
                             f"{', '.join(PROFILES)}")
        check_dataset_name(self.dataset)
        for name, grid, low_ok in (("lrs", self.lrs, False), ("l2s", self.l2s, True)):
            what = "η > 0" if name == "lrs" else "λ ≥ 0"
            if not grid:
                raise ValueError(f"{name}: the grid is empty; give at least one value ({what})")
            if not all(isinstance(x, float) and math.isfinite(x) for x in grid):
                raise ValueError(f"{name}: every value must be a finite number ({what}); got {grid}")
            if any(x < 0 or (x == 0 and not low_ok) for x in grid):
                raise ValueError(f"{name}: every value must satisfy {what}; got {list(grid)}")
            if list(grid) != sorted(set(grid)):
                raise ValueError(f"{name}: the grid must be strictly increasing; got {list(grid)}")
        for name in ("epochs", "batch_size", "n_train", "n_val", "n_test"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}: must be a positive integer; got {v!r}")
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size: {self.batch_size} is larger than the training set "
                             f"(n_train = {self.n_train})")
        if len(self.widths) != 4 or not all(isinstance(c, int) and c > 0 for c in self.widths):
            raise ValueError(f"widths: four positive channel counts needed; got {self.widths}")
        if self.norm not in NORMS:
            raise ValueError(f"norm: unknown normalisation {self.norm!r}; choose one of {NORMS}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: must be a non-negative integer; got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hyper"] = dict(self.hyper)
        return d


def code_version() -> str:
    """sha256 of the modules whose code decides the numbers a sweep produces."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in ("data.py", "model.py", "optim.py", "scale.py", "train.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def resolve_device(device: str) -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device: unknown device {device!r}; choose one of auto, cpu, cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for but this machine has no usable GPU; "
                         "use --device cpu or auto")
    return torch.device(device)


# ---------------------------------------------------------------------------------------------
# The steps of training
# ---------------------------------------------------------------------------------------------


def to_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images → standardised float32."""
    return (x.float() - mean[:, None, None]) / std[:, None, None]


def train_step(
    net: WideNet, opt: GridOptimizer, x: torch.Tensor, y: torch.Tensor, lr_scale: float,
    alive: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """One step for all M models. Returns per-model loss and error, the updated ``alive`` mask and
    the units' angular updates. A model whose loss is not finite is marked dead and not updated."""
    logits = net(x)
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
    chunk: int = 1000,
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


def choose_impl(net: WideNet, x: torch.Tensor, y: torch.Tensor, repeats: int = 3) -> str:
    """Time forward + backward of the wide and the loop pass on one batch; return the faster.

    Timed on a copy, so the network's running statistics are untouched."""
    if net.n_models == 1:
        return "wide"
    probe = copy.deepcopy(net)
    timing = {}
    for impl in ("wide", "loop"):
        probe.impl = impl
        best = math.inf
        for _ in range(repeats + 1):  # the first call warms up
            if x.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            F.cross_entropy(probe(x).flatten(0, 1), y.repeat(net.n_models)).backward()
            if x.is_cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        timing[impl] = best
    return min(timing, key=timing.get)


# ---------------------------------------------------------------------------------------------
# A whole grid
# ---------------------------------------------------------------------------------------------


def _layer_stats(net: WideNet, eta: torch.Tensor, optimizer: str) -> dict[str, torch.Tensor]:
    out = {}
    for i, w in enumerate(net.conv_weights):
        norms = unit_norms(w.detach())  # (M, C)
        out[f"unit_norm_{i}"] = norms.mean(dim=1)
        out[f"layer_norm_{i}"] = w.detach().flatten(1).norm(dim=1)
        out[f"eta_eff_{i}"] = effective_lr(eta[:, None], norms, optimizer).mean(dim=1)
    return out


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_grid(
    spec: SweepSpec,
    device: str = "auto",
    impl: str = "auto",
    data: Dataset | None = None,
    progress: bool = True,
    checkpoint: Path | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Train every model of ``spec``'s grid; return the tidy per-(model, epoch) table and facts
    about the run (device, implementation, dataset checksum, wall time).

    With ``checkpoint``, the state at each epoch boundary is written there (atomically) and a run
    finding one for the same spec resumes from it, ending with the same numbers as an unbroken run.
    """
    spec.validate()
    if impl not in IMPLS:
        raise ValueError(f"impl: unknown implementation {impl!r}; choose one of {IMPLS}")
    dev = resolve_device(device)
    t_start = time.perf_counter()
    data = (data or load_dataset(spec.dataset, spec.n_train, spec.n_val, spec.n_test)).to(dev)
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

    if checkpoint is not None and checkpoint.exists():
        ck = torch.load(checkpoint, map_location=dev, weights_only=False)
        if ck["spec"] != spec.to_dict():
            raise ValueError(f"checkpoint: {checkpoint} belongs to another spec; delete it")
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"].cpu() if dev.type == "cpu" else ck["gen"])
        alive, diverged_epoch, rows = ck["alive"], ck["diverged_epoch"], ck["rows"]
        first_epoch, elapsed_before = ck["epoch"], ck["elapsed"]

    x0 = to_input(data.x_train[: spec.batch_size], mean, std)
    net.impl = choose_impl(net, x0, data.y_train[: spec.batch_size]) if impl == "auto" else impl

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
                net, opt, to_input(xb, mean, std), data.y_train[idx], lr_scale, alive
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
            _atomic_torch_save({
                "spec": spec.to_dict(), "epoch": epoch + 1, "net": net.state_dict(),
                "opt": opt.state_dict(), "gen": gen.get_state(), "alive": alive,
                "diverged_epoch": diverged_epoch, "rows": rows,
                "elapsed": elapsed_before + time.perf_counter() - t_start,
            }, checkpoint)
    bar.close()
    facts = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "impl": net.impl,
        "dataset_checksum": data.checksum,
        "wall_time_s": elapsed_before + time.perf_counter() - t_start,
        "steps_per_epoch": steps,
        "resumed_from_epoch": first_epoch,
        "randomness": (f"seed {spec.seed}: initial weights (CPU generator), then data order and "
                       f"augmentation (one {dev.type} generator)"),
    }
    return pd.DataFrame(rows), facts


