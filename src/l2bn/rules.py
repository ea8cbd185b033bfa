"""The update rules of §3–§5: one record each, read by everything else.

A record holds what the paper says about a rule and what the library needs to run it: the step in
the paper's notation (``optim``), its state, its defaults, which η grid it trains on, whether its
weight decay is coupled (L2, fed through the rule) or decoupled (applied to w directly), an optional
projection (normalised SGD) and its **scale symmetry**. From the symmetry follow, rather than being
tabulated, the effective-learning-rate power p (η_eff = η/‖w‖^p) and the equilibrium exponent e
(‖w‖ ∝ (η/λ)^e) of Table 1.

The symmetry. Normalisation makes the loss invariant to w → αw, so ∇L(αw) = ∇L(w)/α. A rule whose
step Δw scales as α^k when w does (k = −1 for a gradient step, 0 for a step divided by a running
gradient scale, +1 for a step through the inverse Hessian) reproduces, magnified by α, the run from
w₀ when started from αw₀ with η·α^a and λ·α^b, where

  a = 1 − k                      (the step on the unit sphere is Δw/‖w‖ ∝ η α^(k−1))
  b = −2 for coupled L2          (L_λ(αw) = L_{λα²}(w), §2)
  b = −a for decoupled decay     (w ← (1 − 2ηλ)w: only the product ηλ matters).

Hence η_eff = η/‖w‖^a, so p = a; and a steady state, which depends on (η, λ) only through the
invariant combination, has ‖w‖ ∝ (η/λ)^{1/(a−b)}, so e = 1/(a − b). A projected rule keeps ‖w‖ = 1:
p = e = 0. Newton's method has no steady state (its L2 term has curvature 2λ along w, where the
loss is flat, so every step removes a fixed fraction of ‖w‖): ‖w‖ → 0 and e = 0.

Adding a rule is one ``UpdateRule(...)`` passed to ``register`` (and its test): sweeps, the analysis,
Table 1, the figures and the command line read this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import ParameterError
from .scale import normalize_units_

Tensor = torch.Tensor
State = dict[str, Tensor]
Step = Callable[..., tuple[Tensor, State]]


# ---------------------------------------------------------------------------------------------
# The steps, in the paper's notation. g = ∇L(w) is the gradient of the unregularised loss; the L2
# term λ‖w‖² adds 2λw (∇L_λ = ∇L + 2λw). η and λ broadcast against w (shape (M, 1, …, 1)).
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The record
# ---------------------------------------------------------------------------------------------

COUPLED, DECOUPLED = "coupled", "decoupled"
# How the step scales with ‖w‖ (the k above), by the kind of step.
GRADIENT, ADAPTIVE, CURVATURE = -1, 0, 1


@dataclass(frozen=True)
class UpdateRule:
    """One update rule: how to run it and what the theory says about it."""

    name: str  # the name on the command line and in result files
    label: str  # the name in figures and tables
    step: Step | None  # the update in the paper's notation (None: toy unit only, see theory.py)
    state: tuple[str, ...] = ()  # names of the per-parameter state tensors, zero at the start
    defaults: dict[str, float] = field(default_factory=dict)  # ρ, ε as in §6
    lr_family: str = "plain"  # which of a profile's η grids it trains on (profiles.LR_FAMILIES)
    step_degree: int = GRADIENT  # k: Δw ∝ α^k when w → αw
    decay: str = COUPLED
    projection: Callable[[Tensor], Tensor] | None = None  # applied to unit weights after each step
    steady_state: bool = True  # False: ‖w‖ → 0 under L2 (Newton)
    in_paper: bool = True  # a row of the paper's Table 1
    printed_eta_eff: tuple[float, float] | None = None  # Table 1's last column as printed: η^a λ^b
    figures: tuple[str, ...] = ()  # the paper's figures that show this rule on the network
    toy_grid: tuple[tuple[float, ...], tuple[float, ...]] = ((0.1, 0.316, 1.0), (1e-3, 3.16e-3, 1e-2))
    # torch.optim's counterpart, (param groups, η, weight_decay = 2λ, hyperparameters) → optimiser;
    # None where torch.optim has none (the projection, Newton). Checked step for step in the tests.
    torch_optim: Callable[..., torch.optim.Optimizer] | None = None
    # The later literature's rotational equilibrium (``rotational``): "wan" (Wan et al. 2021: SGD
    # and heavy-ball momentum, μ = ``rho``) or "kosson" (Kosson et al. 2024: AdamW, β₁ = ``rho1``);
    # None where none is derived (Nesterov turns 1.17–1.19× faster than the heavy-ball form on the
    # toy unit, measured).
    rotation: str | None = None

    @property
    def symmetry(self) -> tuple[int, int]:
        """(a, b): the run from αw₀ with (η·α^a, λ·α^b) is the run from w₀ magnified by α."""
        a = 1 - self.step_degree
        return a, -2 if self.decay == COUPLED else -a

    @property
    def eta_eff_power(self) -> int:
        """p in η_eff = η/‖w‖^p."""
        return 0 if self.projection is not None else self.symmetry[0]

    @property
    def norm_exponent(self) -> float:
        """e in ‖w‖ ∝ (η/λ)^e at equilibrium (0: the norm is fixed or has no steady state)."""
        if self.projection is not None or not self.steady_state:
            return 0.0
        a, b = self.symmetry
        return 1.0 / (a - b)

    @property
    def eta_eff_exponents(self) -> tuple[float, float]:
        """(a, b) in η_eff ∝ η^a λ^b at equilibrium: η/‖w‖^p with ‖w‖ ∝ (η/λ)^e."""
        pe = self.eta_eff_power * self.norm_exponent
        return 1.0 - pe, pe

    @property
    def best_lr_slope(self) -> float:
        """d log η* / d log λ when η* keeps η_eff fixed: −b/a (−1 for SGD, −1/2 for ADAM)."""
        a, b = self.eta_eff_exponents
        return -b / a

    @property
    def trainable(self) -> bool:
        """Whether the network sweeps can run it (Newton needs the Hessian: toy unit only)."""
        return self.step is not None

    def torch_optimizer(self, params: Any, eta: float, lam: float,
                        hyper: dict[str, float] | None = None) -> torch.optim.Optimizer | None:
        """``torch.optim``'s counterpart with ``weight_decay`` = 2λ (the paper's L2 convention), or
        None for a rule ``torch.optim`` does not have."""
        if self.torch_optim is None:
            return None
        return self.torch_optim(params, eta, 2 * lam, self.hyper(hyper))

    def hyper(self, overrides: dict[str, float] | None = None) -> dict[str, float]:
        """The rule's hyperparameters: its defaults with ``overrides`` applied."""
        return {**self.defaults, **(overrides or {})}


RULES: dict[str, UpdateRule] = {}


def add_new(table: dict[str, Any], key: str, record: Any, what: str) -> Any:
    """``table[key] = record`` for a new key; a second record under one key is refused (a
    registry's records are written once)."""
    if key in table:
        raise ParameterError(f"{what}: {key!r} is already registered")
    table[key] = record
    return record


def register(rule: UpdateRule) -> UpdateRule:
    """Add ``rule`` to the registry (a new name; replacing a rule is refused)."""
    return add_new(RULES, rule.name, rule, "optimizer")


def unregister(name: str) -> None:
    """Remove a rule added by ``register`` (for tests that define their own)."""
    RULES.pop(name, None)


def get_rule(name: Any) -> UpdateRule:
    """The record of rule ``name``; ``ParameterError('optimizer: ...')`` naming the choices otherwise."""
    if not isinstance(name, str) or name not in RULES:
        raise ParameterError(f"optimizer: unknown update rule {name!r}; choose one of "
                             f"{', '.join(trainable_rules())}")
    return RULES[name]


def trainable_rules() -> tuple[str, ...]:
    """Names of the rules a network sweep can train, in registry order."""
    return tuple(n for n, r in RULES.items() if r.trainable)


def rules_in(figure: str) -> tuple[str, ...]:
    """The rules the paper shows in ``figure`` ('1' … '4')."""
    return tuple(n for n, r in RULES.items() if figure in r.figures)


def _torch_sgd(nesterov: bool = False) -> Callable[..., torch.optim.Optimizer]:
    return lambda params, eta, wd, hp: torch.optim.SGD(
        params, lr=eta, momentum=hp.get("rho", 0.0), nesterov=nesterov, weight_decay=wd)


def _torch_rmsprop(params, eta, wd, hp) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=eta, alpha=hp["rho"], eps=hp["eps"], weight_decay=wd)


def _torch_adam(cls: type[torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    return lambda params, eta, wd, hp: cls(params, lr=eta, betas=(hp["rho1"], hp["rho2"]), eps=hp["eps"],
                                           weight_decay=wd)


_MOMENTUM = {"rho": 0.9}
_ADAM = {"rho1": 0.9, "rho2": 0.999, "eps": 1e-8}
_ADAPTIVE_TOY = ((0.01, 0.0316, 0.1), (0.01, 0.0316, 0.1))
_SGD_ETA_EFF = (0.5, -0.5)  # Table 1 as printed
_ADAPTIVE_ETA_EFF = (2 / 3, -1 / 3)

for _rule in (
    UpdateRule("sgd", "SGD", sgd, figures=("4",), printed_eta_eff=_SGD_ETA_EFF, torch_optim=_torch_sgd(),
               rotation="wan"),
    UpdateRule("momentum", "momentum", momentum, ("v",), _MOMENTUM, lr_family="heavy_ball",
               printed_eta_eff=_SGD_ETA_EFF, torch_optim=_torch_sgd(), rotation="wan"),
    UpdateRule("nesterov", "Nesterov", nesterov, ("v",), _MOMENTUM, lr_family="heavy_ball",
               figures=("1", "2", "4"), printed_eta_eff=_SGD_ETA_EFF, torch_optim=_torch_sgd(nesterov=True)),
    UpdateRule("rmsprop", "RMSProp", rmsprop, ("s",), {"rho": 0.9, "eps": 1e-8}, lr_family="adaptive",
               step_degree=ADAPTIVE, figures=("4",), printed_eta_eff=_ADAPTIVE_ETA_EFF,
               toy_grid=_ADAPTIVE_TOY, torch_optim=_torch_rmsprop),
    UpdateRule("adam", "ADAM", adam, ("v", "s"), _ADAM, lr_family="adaptive", step_degree=ADAPTIVE,
               figures=("1", "2", "4"), printed_eta_eff=_ADAPTIVE_ETA_EFF, toy_grid=_ADAPTIVE_TOY,
               torch_optim=_torch_adam(torch.optim.Adam)),
    UpdateRule("adamw", "AdamW", adamw, ("v", "s"), _ADAM, lr_family="adaptive", step_degree=ADAPTIVE,
               decay=DECOUPLED, in_paper=False, toy_grid=((0.003, 0.01, 0.03), (0.1, 0.316, 1.0)),
               torch_optim=_torch_adam(torch.optim.AdamW), rotation="kosson"),
    # §5.5: every unit rescaled to norm 1 after each step, the conv units and the classifier's rows,
    # so that no weight keeps a scale for λ to act on.
    UpdateRule("normalized_sgd", "normalised SGD", sgd, lr_family="normalized",
               projection=normalize_units_, figures=("3",),
               toy_grid=((0.01, 0.0316, 0.1), (1e-3, 3.16e-3, 1e-2))),
    # §5.4: Newton's method, on the toy unit only (it needs the Hessian; see theory.newton).
    UpdateRule("newton", "Newton", None, step_degree=CURVATURE, steady_state=False,
               toy_grid=((0.2,), (1e-4, 1e-3, 1e-2))),
):
    register(_rule)

# Plain gradient descent: the rule of the paper's noise model (§4) and of the theory chapters' checks.
SGD = RULES["sgd"]
# The paper's main rule (Figures 1, 2 and 4): the default of the benchmark and the chapters' examples.
MAIN = RULES["nesterov"]
# ADAM with coupled L2 and with decoupled decay (AdamW): the pair the after-the-paper chapter compares.
ADAM, ADAMW = RULES["adam"], RULES["adamw"]
