"""The paper's simple network, M copies at once.

Four 3×3 convolutions, each followed by a normalisation and a ReLU, with 2×2 max-pooling after the
first three (resolutions 32, 16, 8, 4), global average pooling and a linear classifier.

The M models of a grid are stacked along a leading dimension of every parameter. The *wide* forward
pass runs them as one network: the first convolution maps the shared input to M·C channels, the later
ones are grouped convolutions (``groups=M``), and batch normalisation over M·C channels computes each
model's statistics exactly. The *rows* pass runs one row of the grid at a time (the models of one η,
``row`` of them) as such a wide network, and the *loop* pass one model at a time; which is fastest
depends on the device (see ``train.remembered_impl``). A block of models computes the same numbers
whichever other blocks run beside it, so a grid cut into sub-grids (``results.grid_parts``) gives
each model the numbers of the whole grid: cut along η with the rows pass, anywhere with the loop
pass; the wide pass's grouped convolutions round differently for another number of models
(measured).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import fused
from .scale import unit_norms

NORMS = ("batch", "weight", "layer", "none")
PASSES = ("wide", "rows", "loop")  # all M models as one network, a row of the grid at a time, one at a time
SPLITTABLE = ("rows", "loop")  # the passes whose numbers for a row do not depend on the other rows
DEFAULT_WIDTHS = (32, 64, 128, 256)  # channels double as resolution halves: equal FLOPs per layer
EPS = 1e-5


def max_pool(h: torch.Tensor) -> torch.Tensor:
    """2×2 max-pooling (an odd last row or column dropped), without gradients: the maximum of the
    four strided views, the same values (a maximum is exact) at about 1.6× the speed of
    ``max_pool2d`` on a CPU (measured on the quick network's channels-last activations)."""
    h = h[:, :, : h.shape[2] // 2 * 2, : h.shape[3] // 2 * 2]
    return torch.maximum(torch.maximum(h[:, :, 0::2, 0::2], h[:, :, 0::2, 1::2]),
                         torch.maximum(h[:, :, 1::2, 0::2], h[:, :, 1::2, 1::2]))


class ReluPool(torch.autograd.Function):
    """ReLU, then 2×2 max-pooling, with the gradient of ``max_pool2d(relu(h), 2)`` bit for bit.

    Autograd would send the pooled gradient back to full size, then mask it with the ReLU: a pass
    over the largest tensor of the network (at the quick network's first layer, 17 of about 300 ms
    of a 13-model training step on one thread). Each window's gradient goes to its maximum, and the
    ReLU passes it unless that maximum is ≤ 0, so masking the pooled gradient, a quarter of the
    size, by the pooled values gives the same gradient (a NaN maximum passes it in both)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:  # noqa: D102
        r = F.relu(h)
        out, index = F.max_pool2d(r, 2, return_indices=True)
        ctx.save_for_backward(r, out, index)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        r, out, index = ctx.saved_tensors
        grad = torch.where(out <= 0, 0.0, grad)  # the ReLU's mask, at each window's maximum
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, r, [2, 2], [2, 2], [0, 0], [1, 1],
                                                               False, index)


def relu_pool(h: torch.Tensor) -> torch.Tensor:
    """ReLU then 2×2 max-pooling: ``ReluPool`` with gradients, ``max_pool`` without."""
    return ReluPool.apply(h) if torch.is_grad_enabled() and h.requires_grad else max_pool(F.relu(h))


def global_average_pool(h: torch.Tensor) -> torch.Tensor:
    """Each channel's mean over the image, (B, C, H, W) → (B, C), as a sum and a division: the
    values and gradient of ``h.mean(dim=(2, 3))`` bit for bit (tested), where the mean's gradient
    reaches the ReLU before it as a divided expanded tensor, a slow path on a CPU (measured at the
    quick network's last layer, 64 images: batch norm, ReLU and pooling forward and back in 0.35
    against 0.92 ms)."""
    return h.sum(dim=(2, 3)).div(h.shape[2] * h.shape[3])


class WideNet(nn.Module):
    """``n_models`` copies of the 4-layer convnet with stacked parameters.

    Parameters (each with leading dimension M = ``n_models``):
      ``conv{l}`` (M, C_out, C_in, 3, 3): the units' weights, regularised and scale-invariant;
      ``gamma{l}``, ``beta{l}`` (M, C_out): the normalisation's scale and shift, never regularised;
      ``fc_w`` (M, 10, C_4), ``fc_b`` (M, 10): the classifier.
    Every model starts from the same initial weights, drawn from ``seed``, so that differences
    across a grid come from η and λ alone. ``row`` is the number of models the rows pass computes
    together (a grid's λ values; by default all M); ``impl`` names the pass (``PASSES``), and
    ``kernels`` (``fused.KERNELS``) whether a training step and an evaluation normalise, rectify
    and pool with one fused CPU kernel (``fused``) or with PyTorch's (``native``).
    """

    def __init__(
        self,
        n_models: int,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        norm: str = "batch",
        n_classes: int = 10,
        seed: int = 0,
        row: int | None = None,
        kernels: str = "native",
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm: unknown normalisation {norm!r}; choose one of {NORMS}")
        if len(widths) != 4:
            raise ValueError(f"widths: the network has four conv layers; got {widths}")
        self.n_models, self.widths, self.norm = n_models, tuple(widths), norm
        self.row = row or n_models
        self.impl, self.kernels = "wide", kernels
        g = torch.Generator().manual_seed(seed)
        c_in = 3
        for i, c in enumerate(widths):
            # He initialisation for ReLU units, the same draw for every model.
            w = torch.randn(1, c, c_in, 3, 3, generator=g) * math.sqrt(2.0 / (9 * c_in))
            self.register_parameter(f"conv{i}", nn.Parameter(w.repeat(n_models, 1, 1, 1, 1)))
            self.register_parameter(f"gamma{i}", nn.Parameter(torch.ones(n_models, c)))
            self.register_parameter(f"beta{i}", nn.Parameter(torch.zeros(n_models, c)))
            self.register_buffer(f"running_mean{i}", torch.zeros(n_models, c))
            self.register_buffer(f"running_var{i}", torch.ones(n_models, c))
            c_in = c
        bound = 1 / math.sqrt(c_in)
        fc_w = (torch.rand(1, n_classes, c_in, generator=g) * 2 - 1) * bound
        self.fc_w = nn.Parameter(fc_w.repeat(n_models, 1, 1))
        self.fc_b = nn.Parameter(torch.zeros(n_models, n_classes))

    @property
    def conv_weights(self) -> list[torch.Tensor]:
        """The four layers' unit weights, each (M, C_out, C_in, 3, 3)."""
        return [getattr(self, f"conv{i}") for i in range(len(self.widths))]

    def param_roles(self) -> list[tuple[str, nn.Parameter, str]]:
        """(name, parameter, role) with role ``unit`` (conv weights: L2, and kept at norm 1 by
        normalised SGD), ``classifier`` (the last linear layer: L2 only) or ``affine`` (γ, β and the
        classifier's bias: no L2)."""
        roles = []
        for name, p in self.named_parameters():
            role = "unit" if name.startswith("conv") else "classifier" if name == "fc_w" else "affine"
            roles.append((name, p, role))
        return roles

    def block_size(self) -> int:
        """The models each forward pass of ``impl`` computes together."""
        return {"wide": self.n_models, "rows": self.row, "loop": 1}[self.impl]

    def forward(self, x: torch.Tensor, skip: Sequence[bool] | None = None) -> torch.Tensor:
        """Logits of shape (M, B, n_classes) for a batch x of shape (B, 3, H, W), computed in blocks
        of ``block_size()`` models. A block whose models are all flagged in ``skip`` (diverged and
        frozen) is left out: its logits are NaN, its parameters get zero gradients, and the other
        blocks compute exactly what they would have computed (each is a forward pass of its own)."""
        size = self.block_size()
        if size >= self.n_models:
            return self._forward(x, dict(self.named_parameters()), slice(None))
        # Views from ``split``: its backward joins the blocks' gradients once, where slicing would
        # add each block's gradient into a zero-filled copy of the whole tensor.
        views = {name: p.split(size) for name, p in self.named_parameters()}
        logits = []
        for b, lo in enumerate(range(0, self.n_models, size)):
            hi = min(lo + size, self.n_models)
            if skip is not None and all(skip[lo:hi]):
                logits.append(x.new_full((hi - lo, x.shape[0], self.fc_b.shape[1]), math.nan))
            else:
                logits.append(self._forward(x, {n: v[b] for n, v in views.items()}, slice(lo, hi)))
        return torch.cat(logits)

    def _forward(self, x: torch.Tensor, p: dict[str, torch.Tensor], models: slice) -> torch.Tensor:
        h = x
        for i in range(len(self.widths)):
            w = p[f"conv{i}"]
            k, c_out, c_in = w.shape[:3]
            if self.norm == "weight":
                w = w / unit_norms(w)[..., None, None, None]
            h = F.conv2d(h, w.reshape(k * c_out, c_in, 3, 3), padding=1, groups=1 if i == 0 else k)
            pooled, gamma, beta = i < len(self.widths) - 1, p[f"gamma{i}"], p[f"beta{i}"]
            if pooled and self._fused(h):
                h = fused.batch_norm_relu_pool(h, gamma.reshape(-1), beta.reshape(-1),
                                               *self._running_stats(i, models), 0.1, EPS, self.training)
            elif pooled and self._pool_first(gamma, i, models):
                h = F.relu(self._normalize(max_pool(h), gamma, beta, i, models, k))
            else:
                # ReLU, then pooling. (In training, pooling first would give the same finite values
                # with a quarter of the ReLUs, but the two kernels treat NaN differently: an
                # overflowing model then kept a finite loss and was not marked diverged, measured.)
                h = self._normalize(h, gamma, beta, i, models, k)
                h = relu_pool(h) if pooled else F.relu(h)
        b = h.shape[0]
        h = global_average_pool(h).view(b, k, -1)
        return torch.einsum("bmc,moc->mbo", h, p["fc_w"]) + p["fc_b"][:, None, :]

    def _pool_first(self, gamma: torch.Tensor, i: int, models: slice) -> bool:
        """Whether layer ``i`` may pool before it normalises and applies the ReLU: in evaluation
        without gradients, with batch normalisation whose every scale γ/√(var + ε) is positive and
        finite. Each channel is then one monotone non-decreasing map x·a + b, also as rounded, and
        so is the ReLU, so the maximum of a window commutes with both: the same values bit for bit
        (tested), with the normalisation and the ReLU on a quarter of the activations."""
        if self.training or self.norm != "batch" or torch.is_grad_enabled():
            return False
        scale = gamma.reshape(-1) * torch.rsqrt(getattr(self, f"running_var{i}")[models].reshape(-1) + EPS)
        return bool(((scale > 0) & torch.isfinite(scale)).all())

    def _fused(self, h: torch.Tensor) -> bool:
        """Whether the batch normalisation, ReLU and pooling of ``h`` run as one fused kernel: in a
        training step or in evaluation without gradients, where ``kernels`` is ``fused`` and the
        kernel takes ``h`` (``fused.applies``)."""
        return (self.kernels == "fused" and self.norm == "batch" and fused.applies(h)
                and (self.training or not torch.is_grad_enabled()))

    def _running_stats(self, i: int, models: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``i``'s running mean and variance of ``models``: views of the (M, C) buffers, so
        that the statistics update in place per model."""
        return (getattr(self, f"running_mean{i}")[models].view(-1),
                getattr(self, f"running_var{i}")[models].view(-1))

    def _normalize(self, h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, i: int,
                   models: slice, k: int) -> torch.Tensor:
        gamma, beta = gamma.reshape(-1), beta.reshape(-1)
        if self.norm == "batch":
            return F.batch_norm(h, *self._running_stats(i, models), gamma, beta, self.training, 0.1, EPS)
        if self.norm == "layer":
            # Statistics over all units of one model's layer, per image: one fused kernel, about
            # 1.5× faster per training step than the mean, variance and division written out.
            b, _, hh, ww = h.shape
            h = F.layer_norm(h.reshape(b, k, -1), (h[0].numel() // k,), eps=EPS).view(b, -1, hh, ww)
        return h * gamma[:, None, None] + beta[:, None, None]
