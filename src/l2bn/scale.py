"""The scale of the weights and what it does to learning (§3–§5 of the paper).

A unit is one output channel of a layer: its weight vector w collects the filter over all input
channels. Normalisation makes the unit's output independent of ‖w‖, so what matters to learning is
its direction and the *effective* learning rate η_eff, the step size measured on the unit sphere.
"""

from __future__ import annotations

import math

import torch


def unit_norms(w: torch.Tensor, lead: int = 2) -> torch.Tensor:
    """‖w‖ of each unit: the norm over all but the first ``lead`` dimensions.

    For stacked conv weights of shape (M, C_out, C_in, k, k) this is an (M, C_out) tensor.
    """
    return w.flatten(lead).norm(dim=-1)


def normalize_units_(w: torch.Tensor, lead: int = 2) -> torch.Tensor:
    """Rescale every unit of ``w`` to norm 1, in place (the update of §5.5)."""
    w.div_(unit_norms(w, lead).reshape(*w.shape[:lead], *([1] * (w.dim() - lead))))
    return w


def effective_lr(eta: torch.Tensor | float, norm: torch.Tensor | float, power: int):
    """η_eff = η / ‖w‖^p, the learning rate seen by the unit-norm direction w/‖w‖ (Table 1; the
    power p of each update rule is ``rules.UpdateRule.eta_eff_power``)."""
    return eta / norm**power


def equilibrium_norm(eta, lam, gamma: float = 1.0, sigma: float = 1.0):
    """The steady-state ‖w‖ of SGD under the noise model of §4, in this library's convention
    (L2 gradient 2λw, so each step shrinks w by 1 − 2ηλ):

    ‖w‖⁴ = η²γ²σ² / (8ηλ − 8η²λ²), which is ≈ (ηγ²σ² / 8λ)^{1/4} when ηλ is small.

    The paper prints η²γ²σ² / (4ηλ − 2η²λ²): the same fixed point derived with the factor 1 − ηλ,
    i.e. with λ in the role of PyTorch's ``weight_decay`` (= 2λ here). Substituting λ → 2λ in the
    printed formula gives the one above.
    """
    return (eta**2 * gamma**2 * sigma**2 / (8 * eta * lam - 8 * eta**2 * lam**2)) ** 0.25


def angular_update(w_old: torch.Tensor, w_new: torch.Tensor, lead: int = 2) -> torch.Tensor:
    """Angle in radians between each unit's weights before and after a step.

    Uses 2·atan2(‖a−b‖, ‖a+b‖) on the unit vectors a, b, which stays accurate for the tiny angles
    where acos(a·b) rounds to zero in float32.
    """
    a = w_old.flatten(lead)
    b = w_new.flatten(lead)
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    return 2 * torch.atan2((a - b).norm(dim=-1), (a + b).norm(dim=-1))


def lr_schedule(epoch: int, epochs: int) -> float:
    """The paper's schedule: η, then η/10 after half of the epochs and η/100 after 80% of them."""
    if epoch >= math.ceil(0.8 * epochs):
        return 0.01
    if epoch >= math.ceil(0.5 * epochs):
        return 0.1
    return 1.0


def phase_ends(epochs: int) -> list[int]:
    """The epochs (0-based) after which η drops, and the last one: where each phase of the schedule
    ends."""
    return [e for e in range(epochs)
            if e + 1 == epochs or lr_schedule(e + 1, epochs) != lr_schedule(e, epochs)]
