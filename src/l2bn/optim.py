"""The update rules of §3–§5, vectorised over a grid of M models with a per-model η and λ.

Every rule is a pure function ``step(w, g, state, eta, lam, t, hp) -> (w', state')`` written in the
paper's notation, where ``g`` = ∇L(w) is the gradient of the unregularised loss and the L2 term
λ‖w‖² adds 2λw to it (∇L_λ = ∇L + 2λw). ``eta`` and ``lam`` broadcast against ``w``: shape
(M, 1, …, 1) for stacked parameters.

Mapping to ``torch.optim`` (checked step for step in the tests):
  sgd            SGD(lr=η, weight_decay=2λ)
  momentum       SGD(lr=η, momentum=ρ, weight_decay=2λ)           v = −η·buf while η is constant
  nesterov       SGD(lr=η, momentum=ρ, nesterov=True, weight_decay=2λ)
  rmsprop        RMSprop(lr=η, alpha=ρ, eps=ε, weight_decay=2λ)   ε added outside the square root
  adam           Adam(lr=η, betas=(ρ₁, ρ₂), eps=ε, weight_decay=2λ)
  adamw          AdamW(lr=η, betas=(ρ₁, ρ₂), eps=ε, weight_decay=2λ): w ← (1 − 2ηλ)w, then Adam on ∇L
  normalized_sgd sgd, then every unit rescaled to ‖w‖ = 1 (§5.5): the conv units and the rows of
                 the classifier, so that no weight keeps a scale for λ to act on
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .profiles import OPTIMIZER_DEFAULTS
from .scale import angular_update, normalize_units_

Tensor = torch.Tensor
State = dict[str, Tensor]


def l2_gradient(w: Tensor, g: Tensor, lam: Tensor) -> Tensor:
    """∇L_λ(w) = ∇L(w) + 2λw."""
    return g + 2 * lam * w


def sgd(w, g, state, eta, lam, t, hp) -> tuple[Tensor, State]:
    """w ← w − η∇L_λ(w)."""
    return w - eta * l2_gradient(w, g, lam), state


def momentum(w, g, state, eta, lam, t, hp) -> tuple[Tensor, State]:
    """Heavy ball (§5.1): v ← ρv − η∇L_λ(w); w ← w + v."""
    v = hp["rho"] * state["v"] - eta * l2_gradient(w, g, lam)
    return w + v, {"v": v}


def nesterov(w, g, state, eta, lam, t, hp) -> tuple[Tensor, State]:
    """Nesterov (§5.1): v ← ρv − η∇L_λ(w + ρv); w ← w + v.

    Stored in the look-ahead variable u = w + ρv, where the gradient is taken, the same step reads
    v ← ρv − η∇L_λ(u); u ← u + ρv − η∇L_λ(u) (Sutskever et al., 2013; torch's ``nesterov=True``).
    """
    d = l2_gradient(w, g, lam)
    v = hp["rho"] * state["v"] - eta * d
    return w + hp["rho"] * v - eta * d, {"v": v}


def rmsprop(w, g, state, eta, lam, t, hp) -> tuple[Tensor, State]:
    """RMSProp (§5.2): s ← ρs + (1 − ρ)(∇L_λ)²; w ← w − η∇L_λ / (√s + ε)."""
    d = l2_gradient(w, g, lam)
    s = hp["rho"] * state["s"] + (1 - hp["rho"]) * d * d
    return w - eta * d / (s.sqrt() + hp["eps"]), {"s": s}


def _adam(w, d, state, eta, t, hp) -> tuple[Tensor, State]:
    r1, r2 = hp["rho1"], hp["rho2"]
    v = r1 * state["v"] + (1 - r1) * d
    s = r2 * state["s"] + (1 - r2) * d * d
    # Bias correction with the step count t = 1, 2, … (the paper's formula drops the exponent).
    denom = (s / (1 - r2**t)).sqrt() + hp["eps"]
    return w - eta * (v / (1 - r1**t)) / denom, {"v": v, "s": s}


def adam(w, g, state, eta, lam, t, hp) -> tuple[Tensor, State]:
    """ADAM (§5.3) on ∇L_λ: v ← ρ₁v + (1−ρ₁)∇L_λ; s ← ρ₂s + (1−ρ₂)(∇L_λ)²;
    w ← w − η v̂ / (√ŝ + ε) with bias-corrected v̂, ŝ."""
    return _adam(w, l2_gradient(w, g, lam), state, eta, t, hp)


def adamw(w, g, state, eta, lam, t, hp) -> tuple[Tensor, State]:
    """AdamW (Loshchilov & Hutter): the decay is taken out of the gradient,
    w ← (1 − 2ηλ)w, then an ADAM step on ∇L alone."""
    return _adam(w * (1 - 2 * eta * lam), g, state, eta, t, hp)


RULES: dict[str, Callable[..., tuple[Tensor, State]]] = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adamw,
    "normalized_sgd": sgd,
}
STATE_NAMES = {"momentum": ("v",), "nesterov": ("v",), "rmsprop": ("s",), "adam": ("v", "s"),
               "adamw": ("v", "s")}


class GridOptimizer:
    """One update rule applied to M stacked models, model m with its own η_m and λ_m.

    ``params`` is a list of (name, parameter, role) with roles as in ``WideNet.param_roles``: λ acts
    on ``unit`` and ``classifier`` parameters, never on ``affine`` ones (γ, β); normalised SGD keeps
    both ``unit`` and ``classifier`` rows at norm 1. Models whose entry of ``alive`` is False are
    frozen: neither their weights nor their optimiser state change.
    """

    def __init__(
        self,
        rule: str,
        params: list[tuple[str, Tensor, str]],
        eta: Tensor,
        lam: Tensor,
        **hp: float,
    ):
        if rule not in RULES:
            raise ValueError(f"optimizer: unknown update rule {rule!r}; choose one of {list(RULES)}")
        self.rule, self.params = rule, params
        self.hp = {**OPTIMIZER_DEFAULTS[rule], **hp}
        self.eta, self.lam = eta, lam
        self.t = 0
        self.state: dict[str, State] = {
            name: {k: torch.zeros_like(p) for k in STATE_NAMES.get(rule, ())}
            for name, p, _ in params
        }

    @torch.no_grad()
    def step(self, lr_scale: float, alive: Tensor) -> dict[str, Tensor]:
        """Apply one update with learning rates η·``lr_scale``; return, for each ``unit``
        parameter, the (M,) mean angle its units turned through."""
        self.t += 1
        angles = {}
        for name, p, role in self.params:
            shape = (-1,) + (1,) * (p.dim() - 1)
            eta = (self.eta * lr_scale).view(shape)
            lam = self.lam.view(shape) if role != "affine" else torch.zeros_like(eta)
            new, state = RULES[self.rule](p, p.grad, self.state[name], eta, lam, self.t, self.hp)
            if self.rule == "normalized_sgd" and role != "affine":
                normalize_units_(new)
            keep = alive.view(shape)
            if role == "unit":
                angles[name] = torch.where(alive, angular_update(p, new).mean(dim=1), 0.0)
            p.copy_(torch.where(keep, new, p))
            self.state[name] = {k: torch.where(keep, v, self.state[name][k]) for k, v in state.items()}
        return angles

    def state_dict(self) -> dict:
        return {"t": self.t, "state": self.state}

    def load_state_dict(self, sd: dict) -> None:
        self.t = sd["t"]
        self.state = sd["state"]
