"""Training a whole (η, λ) grid for one update rule as one wide model, as in §6 of the paper.

``train_grid`` reads top to bottom: the data, the network (M copies in one wide model), the update
rule, the schedule (η ÷ 10 after 50% and 80% of the epochs) and the record of every model after
every epoch. The models of a grid share their initial weights, their data order and their
augmentation, so that everything that differs between them comes from η and λ. Model m of a grid
with learning rates ``lrs`` and regularisations ``l2s`` has η = lrs[m // len(l2s)],
λ = l2s[m % len(l2s)].
"""

from __future__ import annotations

import copy
import ctypes
import functools
import json
import math
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import store
from .checkpoint import Checkpoint, TrainState
from .data import Dataset, data_root, load_dataset, translate_flip
from .errors import ParameterError
from .fused import run_kernels
from .model import NORMS, PASSES, WideNet
from .optim import GridOptimizer
from .rules import get_rule
from .scale import effective_lr, lr_schedule, phase_ends, unit_norms
from .spec import (
    IMPLS,
    PRECISIONS,
    SweepSpec,
    check_impl,
    code_version,
    resolve_device,
    validate_params,
)

# The spec and the parameters of a run live in ``spec``; the CLI, the book and the chapters import
# them from here too.
__all__ = [
    "IMPLS", "NORMS", "PRECISIONS", "SweepSpec", "check_impl", "code_version", "resolve_device",
    "validate_params",
    "MAX_SHIFT", "load_spec_data", "check_spec_data", "to_input", "choose_impl", "remembered_impl",
    "numeric_precision", "train_step", "error_rate", "train_epoch", "evaluated", "epoch_measures",
    "record_epoch",
    "new_state", "train_grid", "run_facts", "grid_impl", "reuse_freed_memory",
]

MAX_SHIFT = 4  # pixels of random translation in the augmentation (§6)
Stats = tuple[torch.Tensor, torch.Tensor]  # per-channel mean and standard deviation of the images


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def load_spec_data(spec: SweepSpec) -> Dataset:
    """The data of ``spec``, loaded and checked (an npz file's arrays, shapes, dtypes and labels,
    CIFAR-10's md5s, enough images for the sizes): ``DataError('dataset: ...')`` otherwise, or
    ``ParameterError`` from ``check_spec_data``."""
    data = load_dataset(spec.dataset, spec.n_train, spec.n_val, spec.n_test)
    check_spec_data(spec, data)
    return data


def check_spec_data(spec: SweepSpec, data: Dataset) -> None:
    """``ParameterError('<param>: ...')`` unless ``data`` has the sizes of ``spec`` and its images
    leave batch normalisation more than one value per channel at the last layer (and passes
    ``Dataset.check``: equal image shapes, no constant channel)."""
    data.check()
    sizes = (len(data.x_train), len(data.x_val), len(data.x_test))
    if sizes != (spec.n_train, spec.n_val, spec.n_test):
        raise ParameterError(f"data: {data.name} has (train, val, test) sizes {sizes}; the spec "
                             f"needs {(spec.n_train, spec.n_val, spec.n_test)}")
    h, w = data.x_train.shape[-2:]
    for _ in range(len(spec.widths) - 1):  # max-pooling after all but the last conv
        h, w = h // 2, w // 2
    if spec.norm == "batch" and spec.batch_size * h * w < 2:
        raise ParameterError(f"batch_size: with {tuple(data.x_train.shape[-2:])} images the last layer "
                             f"is {h}×{w}, so batch normalisation needs batch_size ≥ 2; "
                             f"got {spec.batch_size}")


def to_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images → standardised float32, channels-last: the layout cuDNN is fastest in, and on a
    CPU oneDNN's channels-last kernels make one thread about as fast as two in the NCHW layout for
    the quick profile's network (measured), which lets grids train side by side (``results``)."""
    out = (x.float() - mean[:, None, None]) / std[:, None, None]
    return out.contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------------
# Memory: freed blocks kept for the next step
# ---------------------------------------------------------------------------------------------

# glibc's mallopt parameters (malloc.h), and the values ``reuse_freed_memory`` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 2**31 - 1  # the largest value mallopt's int takes: in effect, never give memory back


@functools.cache  # process-wide: once per process is enough
def reuse_freed_memory() -> str:
    """Ask glibc's malloc to keep the memory a training step frees for the next step.

    By default glibc serves each large block (the quick network's activations at 13 models are
    27 MB) with a fresh ``mmap`` and gives it back on free, so every step pays the kernel to fault
    in and zero the same pages again: measured on one thread at 25 models, 0.82–0.89 s per step
    with 883k–949k page faults, and 0.42–0.49 s with 210k–219k once freed memory is kept. The
    setting is process-wide, never changes a number (it moves no arithmetic), and costs the
    process its peak memory for its lifetime. Returns what the provenance records: ``kept`` where
    glibc took the setting, ``default`` elsewhere (macOS, Windows, musl)."""
    try:
        libc = ctypes.CDLL(None)  # the symbols the process has loaded, the C library's among them
        kept = libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES) and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
    except (OSError, AttributeError, TypeError):  # no such handle (Windows), or no mallopt
        return "default"
    return "kept" if kept else "default"


# ---------------------------------------------------------------------------------------------
# The network's passes: all models as one network (wide), a row of the grid at a time (rows), or one model
# at a time (loop)
# ---------------------------------------------------------------------------------------------


def choose_impl(net: WideNet, x: torch.Tensor, y: torch.Tensor, repeats: int = 5,
                precision: str = "fp32", passes: Sequence[str] = PASSES,
                seconds: dict[str, float] | None = None) -> str:
    """Time forward + backward of each of ``passes`` on one batch; return the fastest (and put each
    raced pass's best time in ``seconds``, when given).

    The passes are timed in alternation and each keeps its best time, so a burst of load from
    another process slows all rather than deciding the race. A pass whose blocks are another's (the
    rows pass of a grid with one η is the wide pass) is not raced. Timed on a copy, so the
    network's running statistics are untouched."""
    if net.n_models == 1:
        return passes[0]
    probe = copy.deepcopy(net)
    sizes = {}
    for impl in passes:
        probe.impl = impl
        sizes.setdefault(probe.block_size(), impl)
    timing = {impl: math.inf for impl in sizes.values()}
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
    if seconds is not None:
        seconds.update(timing)
    return min(timing, key=timing.get)


# The entry of ``impl_choices.json`` that keeps each race's best time per pass, in seconds.
RACE_SECONDS = "race seconds"


def race_key(net: WideNet, dev: torch.device, batch: int, precision: str, passes: Sequence[str]) -> str:
    """The entry of ``impl_choices.json`` that remembers the race of ``passes`` for ``net`` on
    ``dev`` at ``batch`` images: the machine, device and threads, torch, and the network's shape."""
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu×{torch.get_num_threads()}"
    return (f"{platform.node()}|{name}|torch {torch.__version__}|M={net.n_models}|row={net.row}|"
            f"widths={net.widths}|norm={net.norm}|batch={batch}|{precision}|{net.kernels}|{','.join(passes)}")


def remembered_impl(net: WideNet, x: torch.Tensor, y: torch.Tensor, precision: str,
                    passes: Sequence[str] = PASSES) -> str:
    """``choose_impl`` among ``passes``, measured once per machine, device and network shape and then
    remembered in ``data/impl_choices.json``. The passes agree only to rounding, which training
    amplifies, so a spec rerun on the same machine must take the same pass to give the same numbers.
    The race's times are kept beside the choices (under ``RACE_SECONDS``), so that a pick can be
    explained afterwards."""
    key, path = race_key(net, x.device, len(x), precision, passes), _choices_path()
    # Grids trained side by side share the file: one measures, the others wait and read its choice.
    with store.waiting(path.with_suffix(".lock")):
        choices = _read_choices(path)
        if choices.get(key) not in passes:
            seconds: dict[str, float] = {}
            choices[key] = choose_impl(net, x, y, precision=precision, passes=passes, seconds=seconds)
            races = choices.get(RACE_SECONDS)
            choices[RACE_SECONDS] = {**(races if isinstance(races, dict) else {}),
                                     key: seconds}
            store.atomic_write(path, json.dumps(choices, indent=1, sort_keys=True).encode())
    return choices[key]


def _choices_path() -> Path:
    """Where the races' picks and times are remembered (``remembered_impl``)."""
    return data_root() / "impl_choices.json"


def _read_choices(path: Path) -> dict[str, str]:
    """The remembered choices; an unreadable file counts as none (it is only a cache of timings)."""
    try:
        choices = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return choices if isinstance(choices, dict) else {}


def _start_impl(net: WideNet, data: Dataset, mean_std: Stats, spec: SweepSpec, impl: str,
                passes: Sequence[str] = PASSES) -> str:
    """The pass a new run computes with: ``impl``, or for ``auto`` the remembered race's winner
    among ``passes`` on one batch of the training images."""
    if impl != "auto":
        return impl
    x0 = to_input(data.x_train[: spec.batch_size], *mean_std)
    with numeric_precision(spec.precision):
        return remembered_impl(net, x0, data.y_train[: spec.batch_size], spec.precision, passes)


def grid_impl(spec: SweepSpec, device: str = "auto", threads: int | None = None,
              passes: Sequence[str] = PASSES) -> str:
    """The fastest of ``passes`` for ``spec``'s whole grid on this machine (the remembered race for
    its M models) when it trains on ``threads`` CPU threads (default: this process's): the pass of
    the sub-grids it is split into, as the passes round differently and every part must compute
    with the same one for the joined table to be the whole grid's on that pass."""
    dev = validate_params(spec, device)
    reuse_freed_memory()  # the pass is raced under the allocator it will train with
    with torch_threads(threads or torch.get_num_threads()):  # the kernels depend on the threads
        net = WideNet(spec.n_models, spec.widths, spec.norm, seed=spec.seed, row=len(spec.l2s),
                      kernels=run_kernels(dev, spec.precision)).to(dev)
        known = _read_choices(_choices_path()).get(
            race_key(net, dev, spec.batch_size, spec.precision, passes))
        if known in passes:  # a race already run: no data to load (0.3 s a grid for the quick book)
            return known
        data = load_spec_data(spec).to(dev)
        return _start_impl(net, data, tuple(s.to(dev) for s in data.channel_stats), spec, "auto", passes)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the enclosed tensor code on ``n`` CPU threads, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# One step of the update rule, and the error rate
# ---------------------------------------------------------------------------------------------


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
    the update rule's measures of each conv layer (``GridOptimizer.step``: angular update, squared
    gradient at unit norm). A model whose loss is not finite is marked dead and not updated; the
    rows and loop passes no longer compute a block whose models are all dead (their loss is NaN
    from then on), and once every model is dead the step updates nothing and returns no measures.
    With ``precision='bf16'`` the forward pass runs under bfloat16 autocast; the loss, gradients,
    weights and optimiser state stay float32."""
    dead = None if net.impl == "wide" else (~alive).tolist()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = net(x, dead)
    logits = logits.float()
    m, b, c = logits.shape
    loss = F.cross_entropy(logits.reshape(m * b, c), y.repeat(m), reduction="none").view(m, b)
    loss = loss.mean(dim=1)
    alive = alive & torch.isfinite(loss)
    err = (logits.detach().argmax(dim=-1) != y).float().mean(dim=1)
    if not loss.requires_grad:  # the rows or loop pass left out every block: all models are dead
        return loss, err, alive, {}
    net.zero_grad(set_to_none=True)  # backward then writes each gradient, not adds it to zeros
    # Summed, not averaged, so each model gets exactly its own gradient; a dead model's NaNs stay
    # in its own slice of every tensor.
    loss.sum().backward()
    measures = opt.step(lr_scale, alive)
    return loss.detach(), err, alive, measures


@torch.inference_mode()
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


# ---------------------------------------------------------------------------------------------
# An epoch and its record
# ---------------------------------------------------------------------------------------------


def train_epoch(state: TrainState, spec: SweepSpec, data: Dataset, mean_std: Stats, lr_scale: float,
                bar: tqdm) -> dict[str, torch.Tensor]:
    """One pass over the training images in a fresh random order, each batch shifted and flipped at
    random (§6) when ``spec.augment``; returns each model's sums over the steps: ``loss`` (of the
    living models), ``err``, and ``angle_i``, ``angle_sq_i``, ``grad_sq_i`` and ``layer_angle_sq_i``
    for each conv layer (``GridOptimizer.step``)."""
    state.net.train()
    dev, gen, steps = data.x_train.device, state.generator, spec.n_train // spec.batch_size
    perm = torch.randperm(spec.n_train, generator=gen, device=dev)
    layers = range(len(spec.widths))
    sums = {k: torch.zeros(spec.n_models, device=dev)
            for k in ("loss", "err", *(f"{q}_{i}" for q in ("angle", "angle_sq", "grad_sq", "layer_angle_sq")
                                       for i in layers))}
    for s in range(steps):
        idx = perm[s * spec.batch_size : (s + 1) * spec.batch_size]
        xb = data.x_train[idx]
        if spec.augment:
            xb = translate_flip(xb, MAX_SHIFT, gen)
        loss, err, state.alive, measures = train_step(
            state.net, state.opt, to_input(xb, *mean_std), data.y_train[idx], lr_scale, state.alive,
            spec.precision,
        )
        sums["loss"] += torch.where(state.alive, loss, 0.0)
        sums["err"] += err
        for k, v in measures.items():
            sums[k] += v
        bar.update()
    return sums


def _layer_stats(net: WideNet, eta: torch.Tensor, optimizer: str) -> dict[str, torch.Tensor]:
    out = {}
    for i, w in enumerate(net.conv_weights):
        norms = unit_norms(w.detach())  # (M, C)
        out[f"unit_norm_{i}"] = norms.mean(dim=1)
        out[f"layer_norm_{i}"] = w.detach().flatten(1).norm(dim=1)
        # η over the mean unit norm: a mean of η/‖w_u‖^p would be dominated by collapsed units.
        out[f"eta_eff_{i}"] = effective_lr(eta, out[f"unit_norm_{i}"], get_rule(optimizer).eta_eff_power)
    return out


def evaluated(spec: SweepSpec, epoch: int) -> bool:
    """Whether the validation and test errors are measured after ``epoch`` (0-based): after every
    epoch, or (``phase_ends``) only where η is about to drop and after the last epoch."""
    return spec.evaluate == "every" or epoch in phase_ends(spec.epochs)


def epoch_measures(state: TrainState, spec: SweepSpec, data: Dataset, mean_std: Stats,
                   sums: dict[str, torch.Tensor], eta: torch.Tensor) -> dict[str, list[float]]:
    """Everything measured of each model after the epoch ``state.epoch`` has just trained, read back
    to the host together (one synchronisation per epoch): training loss and error (means over the
    epoch), validation and test error (NaN where the epoch is not ``evaluated``), each conv layer's
    mean unit norm ‖w‖, layer norm, η_eff at the current η, mean angular update per step, its mean
    square, and mean squared gradient at unit norm ‖g̃‖² per step."""
    steps, evaluate = spec.n_train // spec.batch_size, evaluated(spec, state.epoch)

    def errors(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not evaluate:
            return torch.full_like(sums["loss"], math.nan)
        return error_rate(state.net, x, y, *mean_std)

    stats = {
        "train_loss": sums["loss"] / steps,
        "train_err": sums["err"] / steps,
        "val_err": errors(data.x_val, data.y_val),
        "test_err": errors(data.x_test, data.y_test),
        **_layer_stats(state.net, eta, spec.optimizer),
        **{k: v / steps for k, v in sums.items() if k.startswith(("angle_", "grad_sq_", "layer_angle_sq_"))},
    }
    return {k: v.cpu().tolist() for k, v in stats.items()}


def record_epoch(state: TrainState, spec: SweepSpec, lr_scale: float,
                 measures: dict[str, list[float]]) -> None:
    """Append one row per model for the epoch just finished (``state.epoch`` + 1). A model that has
    diverged keeps its row, marked ``diverged``, with every measure NaN."""
    alive = state.alive.cpu().tolist()
    epoch = state.epoch + 1
    for i, (lr, l2) in enumerate(spec.grid):
        if not alive[i] and state.diverged_epoch[i] is None:
            state.diverged_epoch[i] = epoch
        dead = state.diverged_epoch[i] is not None
        row = {"optimizer": spec.optimizer, "model": i, "lr": lr, "l2": l2, "epoch": epoch,
               "lr_scale": lr_scale, "diverged": dead}
        row.update({k: math.nan if dead else v[i] for k, v in measures.items()})
        state.rows.append(row)


# ---------------------------------------------------------------------------------------------
# A whole grid
# ---------------------------------------------------------------------------------------------


def new_state(spec: SweepSpec, dev: torch.device) -> TrainState:
    """The start of a run: the M models with the same initial weights (seeded by ``spec.seed``), the
    update rule with each model's η and λ, and the generator of data order and augmentation."""
    m = spec.n_models
    net = WideNet(m, spec.widths, spec.norm, seed=spec.seed, row=len(spec.l2s),
                  kernels=run_kernels(dev, spec.precision)).to(dev)
    eta = torch.tensor([lr for lr, _ in spec.grid], device=dev)
    lam = torch.tensor([l2 for _, l2 in spec.grid], device=dev)
    opt = GridOptimizer(spec.optimizer, net.param_roles(), eta, lam, **dict(spec.hyper))
    gen = torch.Generator(device=dev).manual_seed(spec.seed)
    return TrainState(net, opt, gen, alive=torch.ones(m, dtype=torch.bool, device=dev),
                      diverged_epoch=[None] * m, rows=[])


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

    With ``checkpoint``, the ``TrainState`` at each epoch boundary is written there and a run
    finding one for the same spec resumes from it, ending with the same numbers as an unbroken run
    (``checkpoint.Checkpoint``). A damaged or foreign checkpoint is reported through ``log`` and the
    run starts from scratch.
    """
    dev = validate_params(spec, device, impl)
    malloc = reuse_freed_memory()
    t_start = time.perf_counter()
    # The data, on the training device whole.
    data = data or load_spec_data(spec)
    check_spec_data(spec, data)
    data = data.to(dev)
    mean_std = tuple(s.to(dev) for s in data.channel_stats)  # per channel, to standardise the inputs
    # The network and the update rule: new, or where an interrupted run of the spec stopped.
    state = new_state(spec, dev)
    saved = Checkpoint(checkpoint, spec, dev) if checkpoint is not None else None
    if saved is None or not saved.resume(state, impl, log):
        state.net.impl = _start_impl(state.net, data, mean_std, spec, impl)
    first_epoch, elapsed_before = state.epoch, state.elapsed
    # The schedule, epoch by epoch, and the record of each.
    steps = spec.n_train // spec.batch_size
    with numeric_precision(spec.precision), tqdm(
        total=spec.epochs * steps, initial=first_epoch * steps, disable=not progress,
        desc=f"{spec.optimizer} ×{spec.n_models}", unit="step", dynamic_ncols=True,
    ) as bar:
        for epoch in range(first_epoch, spec.epochs):
            lr_scale = lr_schedule(epoch, spec.epochs)
            sums = train_epoch(state, spec, data, mean_std, lr_scale, bar)
            measures = epoch_measures(state, spec, data, mean_std, sums, state.opt.eta * lr_scale)
            record_epoch(state, spec, lr_scale, measures)
            state.epoch, state.elapsed = epoch + 1, elapsed_before + time.perf_counter() - t_start
            bar.set_postfix(epoch=f"{state.epoch}/{spec.epochs}",
                            alive=f"{int(state.alive.sum())}/{spec.n_models}")
            if saved is not None:
                saved.save(state)
    wall_time_s = elapsed_before + time.perf_counter() - t_start
    return pd.DataFrame(state.rows), run_facts(spec, dev, state, data, wall_time_s, first_epoch, malloc)


def run_facts(spec: SweepSpec, dev: torch.device, state: TrainState, data: Dataset,
              wall_time_s: float, resumed_from_epoch: int, malloc: str) -> dict[str, Any]:
    """What a result's provenance says about the run that computed it."""
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "impl": state.impl,
        "kernels": state.net.kernels,  # normalisation, ReLU and pooling: fused or PyTorch's (fused.py)
        # On a CPU the thread count can change the rounding of reductions: part of "same machine".
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "malloc": malloc,  # freed memory kept for reuse, or the C library's default (speed only)
        "dataset_checksum": data.checksum,
        "wall_time_s": wall_time_s,
        "steps_per_epoch": spec.n_train // spec.batch_size,
        "resumed_from_epoch": resumed_from_epoch,
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
