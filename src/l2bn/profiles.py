"""The three run profiles, as one table of plain values.

Everything that differs between a test run, a CPU lesson and the paper's setting lives here and
nowhere else: data size, network width, epochs, batch size and the default (η, λ) grids.

λ follows the paper's convention: the objective is L(w) + λ‖w‖², so its gradient adds 2λw
(PyTorch's coupled ``weight_decay`` is 2λ).
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ParameterError
from .rules import DECOUPLED, get_rule


def _decades(lo: int, hi: int, per_decade: int = 1) -> list[float]:
    """Log-spaced grid 10^lo … 10^hi with ``per_decade`` points per factor of ten."""
    n = (hi - lo) * per_decade
    return [float(f"{10 ** (lo + i / per_decade):.3g}") for i in range(n + 1)]


# Learning-rate grids come per family of update rules (a rule's record names its family). Momentum
# ρ = 0.9 multiplies the step by 1/(1 − ρ) = 10, so plain SGD needs ten times the η of momentum;
# adaptive rules normalise the gradient and need far smaller η. Normalised SGD works at ‖w‖ = 1,
# where η_eff = η, so it needs the η at which plain SGD's unit-norm steps are taken (η/‖w‖² with
# ‖w‖ of order 3).
LR_FAMILIES = ("plain", "heavy_ball", "normalized", "adaptive")

# The fields of a profile: training images (after the validation split), images held out of the
# training set for choosing η* (Figure 4), test images, output channels of the four conv layers,
# batch size, epochs, seed replicates of every grid, the η grid of each family, the λ grid, and the
# λ grid of decoupled decay (AdamW). A decoupled decay shrinks w by 2ηλ per step whatever the
# gradient's scale, with the adaptive rules' small η: the norm settles after ~1/(4ηλ) steps, so
# its λ must be a hundred times the coupled grid's for part of the grid to settle.
PROFILES: dict[str, dict[str, Any]] = {
    # Seconds: exercises every code path in the tests.
    "smoke": dict(n_train=512, n_val=256, n_test=512, widths=(4, 8, 8, 16), batch_size=64, epochs=2,
                  seeds=1, l2s=[1e-3, 1e-2], decoupled_l2s=[0.1, 1.0],
                  lrs={"plain": [0.1, 1.0], "heavy_ball": [0.01, 0.1], "normalized": [0.01, 0.1],
                       "adaptive": [1e-3, 1e-2]}),
    # The CPU teaching profile: every chapter of the book within minutes on two cores. The weight
    # norm settles after ~1/(ηλ) steps (times 1 − ρ with momentum), so the profile buys steps
    # rather than images: 2048 images in batches of 64 give 320 steps, 160 before η first drops,
    # and the λ grid starts where that is enough for part of the grid to reach equilibrium.
    # 5 × 5 = 25 models per update rule.
    "quick": dict(n_train=2048, n_val=1024, n_test=1024, widths=(8, 16, 32, 64), batch_size=64,
                  epochs=10, seeds=1, l2s=_decades(-3, -1, 2), decoupled_l2s=_decades(-1, 1, 2),
                  lrs={"plain": _decades(-1, 1, 2), "heavy_ball": _decades(-2, 0, 2),
                       "normalized": _decades(-2, 0, 2), "adaptive": _decades(-3, -1, 2)}),
    # The paper's setting (§6): full CIFAR-10, 100 epochs, batch 128; meant for a GPU. 7 × 7 = 49
    # models per update rule, half a decade apart, three seeds of each grid for the verdict.
    "paper": dict(n_train=45000, n_val=5000, n_test=10000, widths=(32, 64, 128, 256), batch_size=128,
                  epochs=100, seeds=3, l2s=_decades(-5, -2, 2), decoupled_l2s=_decades(-3, 0, 2),
                  lrs={"plain": _decades(-2, 1, 2), "heavy_ball": _decades(-3, 0, 2),
                       "normalized": _decades(-3, 0, 2), "adaptive": _decades(-5, -2, 2)}),
}


def get_profile(name: str) -> dict[str, Any]:
    """A copy of profile ``name`` (``smoke``, ``quick`` or ``paper``)."""
    if not isinstance(name, str) or name not in PROFILES:
        raise ParameterError(f"profile: unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return copy.deepcopy(PROFILES[name])


def default_grid(profile: str, optimizer: str) -> tuple[list[float], list[float]]:
    """The profile's (η grid, λ grid) for update rule ``optimizer`` (the η grid of its family, and
    the λ grid of its kind of decay)."""
    p, rule = get_profile(profile), get_rule(optimizer)
    return p["lrs"][rule.lr_family], p["decoupled_l2s" if rule.decay == DECOUPLED else "l2s"]
