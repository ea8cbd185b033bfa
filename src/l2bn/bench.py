"""How fast a grid trains: the wide model against one model at a time.

For each M the benchmark times full training steps (forward, backward, update) of three variants on
random uint8 images of CIFAR-10's size (speed does not depend on the pixels):

  wide      M models as one network (grouped convolutions), one vectorised update
  rows      one row of the grid at a time (the profile's λ values: models of one η) as such a
            network, one vectorised update
  loop      the same stacked parameters, one model's forward pass at a time, one vectorised update
  separate  M ordinary single-model runs, each with its own ``torch.optim`` optimiser for the same
            update rule (the library's update for one model where torch.optim has no such rule)

The passes normalise, rectify and pool with the kernels a training run would use on the device
(``fused.run_kernels``: one fused kernel on a CPU); the separate runs with PyTorch's, as a user would.
Warm-up steps are excluded, each figure is the median of several timed repeats, and CUDA is timed
with synchronisation. FLOPs come from the architecture: 2·H·W·C_in·C_out·9 per convolution, ×3 for
a training step. The reference peak is measured on the spot (a large fp32 matrix product), so the
fraction of peak is relative to what this device reaches in its best case at that precision
(fp32; tf32, TF32 tensor cores on a GPU; bf16, bfloat16 autocast with float32 master weights). On a
CPU one more run of the steps goes through ``torch.profiler`` for the share of the step spent in
the convolutions' kernels (forward and backward): what a variant would reach if everything else
cost nothing is its ceiling with these kernels.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from .chapter import AFTER_PAPER_GRIDS
from .data import translate_flip
from .errors import ParameterError
from .fused import run_kernels
from .model import PASSES, WideNet
from .optim import GridOptimizer
from .profiles import default_grid, get_profile
from .rules import MAIN, RULES, get_rule, trainable_rules
from .scale import phase_ends
from .spec import SweepSpec
from .train import (
    MAX_SHIFT,
    PRECISIONS,
    numeric_precision,
    resolve_device,
    reuse_freed_memory,
    to_input,
    torch_threads,
    train_step,
)

# The rules the paper shows on the network (Figures 1–4): the runs a full reproduction makes.
FIGURE_RULES = tuple(name for name, r in RULES.items() if r.figures)
# The grids a profile's book trains: those of Figures 1–4 and of "After the paper" (every seed).
BOOK_GRIDS = tuple(dict.fromkeys([*FIGURE_RULES, *AFTER_PAPER_GRIDS]))


def train_flops_per_image(widths: tuple[int, ...], size: int = 32) -> float:
    """FLOPs of one training step per image: 3 × the forward convolutions' 2·H·W·C_in·C_out·9."""
    flops, c_in, s = 0.0, 3, size
    for i, c in enumerate(widths):
        flops += 2 * s * s * c_in * c * 9
        c_in = c
        if i < len(widths) - 1:
            s //= 2
    return 3 * flops


def measured_peak_tflops(device: torch.device, precision: str = "fp32", n: int | None = None,
                         repeats: int = 5) -> float:
    """TFLOP/s of a large n×n matrix product on ``device`` at ``precision``: the stated reference
    peak. By default n is 4096 on a GPU (enough to fill one), 1024 on a CPU, and 512 for bf16 on a
    CPU, which most CPUs emulate at a hundredth of their fp32 rate (seconds per 1024² product)."""
    if n is None:
        n = 4096 if device.type == "cuda" else 512 if precision == "bf16" else 1024
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times[1:]) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def conv_share(step: Callable[[], Any], device: torch.device, steps: int) -> float:
    """The fraction of the wall time of ``steps`` calls of ``step`` (on a CPU) spent in convolution
    kernels: the self time of every profiled operator whose name contains ``conv`` (forward,
    backward and their dispatch), over the profiled run's wall time; NaN on a GPU, whose kernels
    run apart from the host's clock."""
    if device.type != "cpu":
        return math.nan
    step()  # warm, as the timed runs are
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's own log: no GPU-count error on a CPU
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()  # after the profiler has started
        for _ in range(steps):
            step()
        wall_us = (time.perf_counter() - t0) * 1e6
    conv_us = sum(e.self_cpu_time_total for e in prof.key_averages() if "conv" in e.key.lower())
    return min(1.0, conv_us / wall_us)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's, in MiB


def _time_steps(step, device: torch.device, steps: int, repeats: int) -> float:
    """Median seconds per call of ``step`` over ``repeats`` runs of ``steps`` calls, after one
    warm-up run."""
    times = []
    for r in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        if r:
            times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def _separate_step(net: WideNet, optimizer: str, batch_in, y, device, precision: str):
    """A closure doing one ordinary training step of the single model ``net`` with ``optimizer``."""
    eta, lam = 0.01, 1e-4
    roles = net.param_roles()
    groups = [{"params": [p for _, p, role in roles if role != "affine"]},  # λ never acts on γ, β
              {"params": [p for _, p, role in roles if role == "affine"], "weight_decay": 0.0}]
    opt = get_rule(optimizer).torch_optimizer(groups, eta, lam)
    if opt is None:  # no torch.optim counterpart: the library's own update, for one model
        own = GridOptimizer(optimizer, roles, torch.full((1,), eta, device=device),
                            torch.full((1,), lam, device=device))
        alive = torch.ones(1, dtype=torch.bool, device=device)
        return lambda: train_step(net, own, batch_in(), y, 1.0, alive, precision)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = net(batch_in())[0]
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _variant_step(variant: str, m: int, widths, batch: int, device, optimizer: str, precision: str,
                  row: int | None = None):
    """A closure doing one training step of ``variant`` for ``m`` models, all with ``optimizer``
    (the rows pass ``row`` models at a time)."""
    gen = torch.Generator(device=device).manual_seed(0)
    x_u8 = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    mean = torch.full((3,), 128.0, device=device)
    std = torch.full((3,), 64.0, device=device)
    batch_in = lambda: to_input(translate_flip(x_u8, MAX_SHIFT, gen), mean, std)  # noqa: E731
    if variant in PASSES:
        net = WideNet(m, widths, row=row, kernels=run_kernels(device, precision)).to(device)
        net.impl = variant
        eta = torch.full((m,), 0.01, device=device)
        opt = GridOptimizer(optimizer, net.param_roles(), eta, torch.full((m,), 1e-4, device=device))
        alive = torch.ones(m, dtype=torch.bool, device=device)
        return lambda: train_step(net, opt, batch_in(), y, 1.0, alive, precision)
    steps = [_separate_step(WideNet(1, widths).to(device), optimizer, batch_in, y, device, precision)
             for _ in range(m)]

    def separate():
        for step in steps:
            step()

    return separate


def figure_model_epochs(profile: str = "paper") -> int:
    """Model-epochs of ``profile``'s grids for Figures 1–4 (training only, no evaluation)."""
    grids = [default_grid(profile, rule) for rule in FIGURE_RULES]
    return sum(len(lrs) * len(l2s) for lrs, l2s in grids) * get_profile(profile)["epochs"]


def book_specs(profile: str) -> list[SweepSpec]:
    """The specs of the grids ``profile``'s book trains on synthetic data (``BOOK_GRIDS``, every
    seed replicate: the verdict judges them all)."""
    seeds = range(get_profile(profile)["seeds"])
    return [SweepSpec.for_grid(profile, grid, "synthetic", seed=seed)
            for grid in BOOK_GRIDS for seed in seeds]


def run_bench(
    profile: str = "paper",
    ms: tuple[int, ...] = (1, 7, 49),
    device: str = "auto",
    steps: int = 5,
    repeats: int = 3,
    optimizer: str = MAIN.name,
    variants: tuple[str, ...] = (*PASSES, "separate"),
    precision: str = "fp32",
    threads: int | None = None,
) -> dict[str, Any]:
    """Time each variant for each M on ``profile``'s network and batch size, on ``threads`` CPU
    threads (default: this process's; the book's workers run on one each); return the rows and a
    one-line summary."""
    if not get_rule(optimizer).trainable:
        raise ParameterError(f"optimizer: {optimizer} cannot train the network; choose one of "
                             f"{', '.join(trainable_rules())}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision: unknown precision {precision!r}; choose one of {PRECISIONS}")
    if not ms or any(m < 1 for m in ms):
        raise ValueError(f"ms: model counts must be positive integers; got {ms}")
    if threads is not None and threads < 1:
        raise ParameterError(f"threads: must be a positive integer; got {threads}")
    with torch_threads(threads or torch.get_num_threads()):
        return _with_summary(_timed_rows(profile, ms, resolve_device(device), steps, repeats, optimizer,
                                         variants, precision), max(ms))


def _timed_rows(profile: str, ms: tuple[int, ...], dev: torch.device, steps: int, repeats: int,
                optimizer: str, variants: tuple[str, ...], precision: str) -> dict[str, Any]:
    """The report of ``run_bench`` without its summary."""
    malloc = reuse_freed_memory()  # as training runs: every variant, the peer too, gains from it
    p = get_profile(profile)
    widths, batch = tuple(p["widths"]), p["batch_size"]
    steps_per_epoch = p["n_train"] // batch
    flops_img = train_flops_per_image(widths)
    with numeric_precision(precision):
        peak = measured_peak_tflops(dev, precision)
    rows = []
    for m in ms:
        base = None
        for variant in variants:
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            step = _variant_step(variant, m, widths, batch, dev, optimizer, precision, len(p["l2s"]))
            with numeric_precision(precision):
                sec = _time_steps(step, dev, steps, repeats)
                share = conv_share(step, dev, steps)
            tflops = m * batch * flops_img / sec / 1e12
            row = {
                "M": m, "variant": variant, "s_per_step": sec,
                "model_epochs_per_s": m / (sec * steps_per_epoch),
                "tflops": tflops, "peak_fraction": tflops / peak,
                "conv_share": share, "conv_ceiling": m / (sec * steps_per_epoch) / share,
                "peak_mem_mb": _peak_memory_mb(dev),
            }
            rows.append(row)
            if variant == "separate":
                base = row["model_epochs_per_s"]
        for row in rows:
            if row["M"] == m and base:
                row["vs_separate"] = row["model_epochs_per_s"] / base
    return {"device": str(dev), "profile": profile, "widths": widths, "batch_size": batch,
            "optimizer": optimizer, "precision": precision, "malloc": malloc,
            "kernels": run_kernels(dev, precision),  # of the passes; the separate runs use PyTorch's
            "threads": torch.get_num_threads() if dev.type == "cpu" else None,
            "reference_peak_tflops": peak, "rows": rows}


def _with_summary(report: dict[str, Any], largest: int) -> dict[str, Any]:
    """``report`` with the best variant at the largest M, the profile's projected training time
    and a one-line summary."""
    dev = torch.device(report["device"])
    best = max((r for r in report["rows"] if r["M"] == largest), key=lambda r: r["model_epochs_per_s"])
    profile, peak, precision = report["profile"], report["reference_peak_tflops"], report["precision"]
    model_epochs = figure_model_epochs(profile)
    projected_s = model_epochs / best["model_epochs_per_s"]
    workers = _workers(dev, report["threads"])
    book_s = projected_book_s(profile, best["model_epochs_per_s"], workers)
    measured = measured_grids_s(profile, dev)
    on = f"{report['threads']} thread(s)" if report["threads"] else ""  # CPU threads of each worker
    summary = (
        f"{dev.type} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}), "
        f"{profile} network {report['widths']} batch {report['batch_size']}, {report['optimizer']}, "
        f"{precision}, {report['kernels']} kernels{', ' + on if on else ''}: best at M={best['M']} is "
        f"{best['variant']} with {best['model_epochs_per_s']:.3g} model-epochs/s "
        f"({best.get('vs_separate', float('nan')):.2g}× separate, "
        f"{best['tflops']:.3g} TFLOP/s = {best['peak_fraction']:.1%} of a measured "
        f"{peak:.3g} TFLOP/s {precision} matmul{_ceiling(best)}); {profile} profile's Figures 1–4 "
        f"({model_epochs} model-epochs of training) projected at {projected_s / 60:.3g} min; the "
        f"book's {len(book_specs(profile))} grids with their evaluations, all seeds, on {workers} "
        f"worker(s){' of ' + on if on else ''}: projected {book_s / 60:.3g} min, "
        + (f"measured {measured / 60:.3g} min (the stored results' training times)" if measured
           else "not measured yet (no stored results of this profile)")
    )
    return {**report, "figure_model_epochs": model_epochs, "projected_s": projected_s,
            "projected_book_grids_s": book_s, "measured_book_grids_s": measured, "summary": summary}


def _ceiling(row: dict[str, Any]) -> str:
    """What the summary says of a row's convolution share (nothing where it was not measured)."""
    if math.isnan(row["conv_share"]):
        return ""
    return (f"; convolutions {row['conv_share']:.0%} of its step, so at most "
            f"{row['conv_ceiling']:.3g} model-epochs/s if all else cost nothing")


def _workers(dev: torch.device, threads: int | None = 1) -> int:
    """Grids trained at once on ``threads`` threads each: on a CPU the local executor runs one
    worker of one thread per core; on one GPU, one."""
    return max(1, (os.cpu_count() or 1) // (threads or 1)) if dev.type == "cpu" else 1


def projected_book_s(profile: str, model_epochs_per_s: float, workers: int) -> float:
    """The book's grids (``book_specs``) at ``model_epochs_per_s`` per worker, with each evaluation
    of the validation and test images at the end of each phase of η (a forward pass, a third of a
    training step per image), spread over ``workers`` (the executor splits grids to keep them all
    busy)."""
    p = get_profile(profile)
    share = len(phase_ends(p["epochs"])) / p["epochs"]  # of the epochs, those followed by an evaluation
    evaluation = share * (p["n_val"] + p["n_test"]) / (3 * p["n_train"])
    model_epochs = sum(spec.n_models for spec in book_specs(profile)) * p["epochs"]
    return model_epochs * (1 + evaluation) / model_epochs_per_s / workers


def measured_grids_s(profile: str, dev: torch.device) -> float | None:
    """The measured time of the book's grids: the stored results of ``book_specs``, their training
    times summed and shared among the local executor's workers; None when one is missing."""
    from .results import cached_result
    total = 0.0
    for spec in book_specs(profile):
        found = cached_result(spec, log=lambda _: None)
        if found is None:
            return None
        total += found.provenance["wall_time_s"]
    return total / _workers(dev)
