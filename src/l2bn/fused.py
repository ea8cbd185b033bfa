"""Batch normalisation, ReLU and 2×2 max-pooling as one CPU kernel (``bn_relu_pool.c``).

In a training step on a CPU, PyTorch runs the three as separate kernels, each a pass over the
layer's largest tensor, and its batch-normalisation kernels for channels-last activations are far
slower than the memory they touch (measured on one thread at the quick network's first layer, 40
channels of 32×32 for a row of five models: the statistics at 8.8 ms per 10 MB, where a sum takes
0.4 ms). The fused kernel reads the activations twice for the statistics and once to normalise,
rectify and pool them, and writes only the pooled output and each window's winner; its backward
pass reads the activations twice more and writes their gradient once. Forward and backward
together were 2.2× faster than PyTorch's at that layer and 1.7× at the third (``bench``).

The numbers agree with PyTorch's to float32 rounding, not bit for bit (the statistics are summed
in double, in another order), so which kernels a run used is part of its provenance
(``kernels``): ``fused`` on one CPU thread in float32 (the book's workers) where a C compiler
built the kernel, ``native`` elsewhere or when ``L2BN_KERNELS=native``. The rounding does not
depend on the processor: every vector lane is one channel and no multiply–add is contracted. The
same kernel evaluates a model (with the running statistics): there PyTorch's separate maximum,
normalisation and ReLU took a third of the evaluation's time (measured, one thread, 15 models). The
library is built once per machine and source into ``data/kernels`` (half a second with gcc).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from .data import data_root
from .errors import ParameterError
from .store import temporary_name

KERNELS = ("native", "fused")
SOURCE = Path(__file__).with_name("bn_relu_pool.c")
# -ffp-contract=off: no fused multiply–add, so every machine rounds alike; -march=native: the
# widest vectors of the machine that builds it (the file name carries the machine's name).
CFLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-shared", "-fPIC")
_P, _I, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def library_path(compiler: str) -> Path:
    """Where the kernel built by ``compiler`` for this machine is kept."""
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(" ".join((compiler, *CFLAGS, platform.machine(), platform.node())).encode())
    return data_root() / "kernels" / f"bn_relu_pool-{h.hexdigest()[:16]}.so"


@functools.cache  # once per process
def library() -> ctypes.CDLL | None:
    """The built kernel (built now if needed), or None where there is no C compiler or the build
    fails: the run then uses PyTorch's kernels."""
    compiler = _compiler()
    if compiler is None:
        return None
    path = library_path(compiler)
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temporary_name(path)  # side-by-side workers each build their own, then rename
            subprocess.run([compiler, *CFLAGS, "-o", str(tmp), str(SOURCE), "-lm"], check=True,
                           capture_output=True, timeout=120)
            os.replace(tmp, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError):
        return None
    lib.bn_relu_pool_forward.argtypes = [_P, _I, _I, _I, _I, _P, _P, _D, _P, _P, _P, _P]
    lib.bn_relu_pool_backward.argtypes = [_P, _P, _P, _I, _I, _I, _I, _P, _P, _P, _D, _P, _P, _P]
    lib.bn_relu_pool_eval.argtypes = [_P, _I, _I, _I, _I, _P, _P, _P, _P, _D, _P, _P]
    return lib


def run_kernels(device: torch.device, precision: str) -> str:
    """The kernels a run on ``device`` at ``precision`` trains with, on this process's threads:
    ``fused`` on one CPU thread in float32 (``fp32``, or ``tf32``, which a CPU computes as fp32)
    where the kernel builds, unless ``L2BN_KERNELS=native``; ``native`` otherwise. (The fused kernel
    runs on one thread: with more, PyTorch's kernels share out the work the fused one would hold.)"""
    wanted = os.environ.get("L2BN_KERNELS", "fused")
    if wanted not in KERNELS:
        raise ParameterError(f"L2BN_KERNELS: unknown kernels {wanted!r}; choose one of {', '.join(KERNELS)}")
    usable = (device.type == "cpu" and precision != "bf16" and torch.get_num_threads() == 1
              and library() is not None)
    return "fused" if wanted == "fused" and usable else "native"


def describe() -> str:
    """One line for ``l2bn info``: the kernels one-thread float32 training on a CPU uses, and why."""
    compiler = _compiler()
    if os.environ.get("L2BN_KERNELS") == "native":
        return "native (L2BN_KERNELS=native)"
    if compiler is None:
        return "native (no C compiler: install gcc, or set CC, for the fused kernel)"
    if library() is None:
        return f"native (building {SOURCE.name} with {compiler} failed)"
    return f"fused, built with {compiler} into {library_path(compiler)}"


def applies(h: torch.Tensor) -> bool:
    """Whether ``batch_norm_relu_pool`` takes activations ``h``: float32 on a CPU, channels-last,
    even height and width."""
    return (h.device.type == "cpu" and h.dtype == torch.float32 and h.shape[2] % 2 == 0
            and h.shape[3] % 2 == 0 and h.is_contiguous(memory_format=torch.channels_last))


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _pooled(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's outputs for activations ``h``: the pooled values and each window's winner,
    (N, C, H/2, W/2) channels-last."""
    n, c, hh, ww = h.shape
    shape = (n, c, hh // 2, ww // 2)
    return (torch.empty(shape, memory_format=torch.channels_last),
            torch.empty(shape, dtype=torch.int32, memory_format=torch.channels_last))


class BatchNormReluPool(torch.autograd.Function):
    """``max_pool2d(relu(batch_norm(h, training=True)), 2)`` with its gradient, as two calls of the
    fused kernel; the running statistics are updated as ``batch_norm`` updates them."""

    @staticmethod
    def forward(ctx, h, gamma, beta, running_mean, running_var, momentum: float, eps: float):  # noqa: D102
        n, c, hh, ww = h.shape
        out, idx = _pooled(h)
        mean, var = torch.empty(c), torch.empty(c)
        gamma, beta = gamma.detach().contiguous(), beta.detach().contiguous()
        library().bn_relu_pool_forward(_ptr(h), n, hh, ww, c, _ptr(gamma), _ptr(beta), eps, _ptr(out),
                                       _ptr(idx), _ptr(mean), _ptr(var))
        count = n * hh * ww  # the running variance is the unbiased one, as batch_norm keeps it
        running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        running_var.mul_(1 - momentum).add_(var * (count / max(count - 1, 1)), alpha=momentum)
        ctx.save_for_backward(h, idx, gamma, mean, var)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        h, idx, gamma, mean, var = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        n, c, hh, ww = h.shape
        dh = torch.empty_like(h, memory_format=torch.channels_last)
        dgamma, dbeta = torch.empty(c), torch.empty(c)
        library().bn_relu_pool_backward(_ptr(h), _ptr(grad), _ptr(idx), n, hh, ww, c, _ptr(gamma),
                                        _ptr(mean), _ptr(var), ctx.eps, _ptr(dh), _ptr(dgamma),
                                        _ptr(dbeta))
        return dh, dgamma, dbeta, None, None, None, None


def batch_norm_relu_pool(h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                         running_mean: torch.Tensor, running_var: torch.Tensor, momentum: float,
                         eps: float, training: bool = True) -> torch.Tensor:
    """Batch normalisation of ``h`` (N, C, H, W), then ReLU and 2×2 max-pooling, in one kernel
    (``applies(h)`` must hold). In ``training``, with the batch's statistics, updating the running
    ones; otherwise (evaluation, without gradients) with the running statistics."""
    if training:
        return BatchNormReluPool.apply(h, gamma, beta, running_mean, running_var, momentum, eps)
    n, c, hh, ww = h.shape
    out, scratch = _pooled(h)
    gamma, beta = gamma.contiguous(), beta.contiguous()
    running_mean, running_var = running_mean.contiguous(), running_var.contiguous()
    library().bn_relu_pool_eval(_ptr(h), n, hh, ww, c, _ptr(gamma), _ptr(beta), _ptr(running_mean),
                                _ptr(running_var), eps, _ptr(out), _ptr(scratch))
    return out
