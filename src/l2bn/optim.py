"""The update rules of §3–§5 (``l2bn.rules``), vectorised over a grid of M models with a per-model
η and λ.

Every rule's step is a pure function ``step(w, g, state, eta, lam, t, hp) -> (w', state')`` written
in the paper's notation, where ``g`` = ∇L(w) is the gradient of the unregularised loss and the L2
term λ‖w‖² adds 2λw to it (∇L_λ = ∇L + 2λw). ``eta`` and ``lam`` broadcast against ``w``: shape
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

import torch

from .rules import State, Tensor, get_rule
from .scale import angular_update, unit_norms


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
        self.rule, self.params = get_rule(rule), params
        self.hp = self.rule.hyper(hp)
        self.eta, self.lam = eta, lam
        self.t = 0
        self.state: dict[str, State] = {
            name: {k: torch.zeros_like(p) for k in self.rule.state}
            for name, p, _ in params
        }

    @torch.no_grad()
    def step(self, lr_scale: float, alive: Tensor) -> dict[str, Tensor]:
        """Apply one update with learning rates η·``lr_scale``; return, for the i-th ``unit``
        parameter, (M,) means over its units: ``angle_i``, the angle a unit turned through;
        ``angle_sq_i``, its square (the later literature predicts the root-mean-square angle); and
        ``grad_sq_i``, ‖g̃‖² = ‖w‖²‖∇L(w)‖², the squared gradient at unit norm (a scale-invariant
        unit's gradient falls as 1/‖w‖), which Wan et al.'s equilibrium norm needs; and
        ``layer_angle_sq_i``, the squared angle the whole layer's weights turned through (the
        scale-invariant vector under layer normalisation)."""
        self.t += 1
        measures, i = {}, 0
        for name, p, role in self.params:
            shape = (-1,) + (1,) * (p.dim() - 1)
            eta = (self.eta * lr_scale).view(shape)
            lam = self.lam.view(shape) if role != "affine" else torch.zeros_like(eta)
            new, state = self.rule.step(p, p.grad, self.state[name], eta, lam, self.t, self.hp)
            if self.rule.projection is not None and role != "affine":
                self.rule.projection(new)
            keep = alive.view(shape)
            if role == "unit":
                angle = angular_update(p, new)
                grad_sq = (unit_norms(p) * unit_norms(p.grad)).square()
                for key, value in (("angle", angle), ("angle_sq", angle.square()), ("grad_sq", grad_sq)):
                    measures[f"{key}_{i}"] = torch.where(alive, value.mean(dim=1), 0.0)
                layer = angular_update(p, new, lead=1).square()
                measures[f"layer_angle_sq_{i}"] = torch.where(alive, layer, 0.0)
                i += 1
            p.copy_(torch.where(keep, new, p))
            self.state[name] = {k: torch.where(keep, v, self.state[name][k]) for k, v in state.items()}
        return measures

    def state_dict(self) -> dict:
        return {"t": self.t, "state": self.state}

    def load_state_dict(self, sd: dict) -> None:
        self.t = sd["t"]
        self.state = sd["state"]
