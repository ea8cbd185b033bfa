"""After the paper: what the later literature predicts for a scale-invariant unit, checked on the toy unit.

Three results refine §4–§5 with prefactors, not only exponents:

* Wan et al. 2021 (spherical motion dynamics): under SGD or heavy-ball momentum with weight decay, a
  scale-invariant weight settles at a norm where decay and gradient noise balance, and then turns
  through a fixed angle per step that depends on η and the decay alone;
* Kosson et al. 2024 (rotational equilibrium): the same balance for AdamW, whose update has a size
  of its own (about one per weight), so the norm no longer depends on the gradient;
* Li & Arora 2019: for a scale-invariant loss, SGD with L2 is *exactly* SGD without it under an
  exponentially growing learning rate.

The literature writes the decay as PyTorch's ``weight_decay`` (wd); this library's L2 term is λ‖w‖²,
whose gradient is 2λw, so wd = 2λ throughout (for AdamW too: its step w ← (1 − 2ηλ)w is
``torch.optim.AdamW`` with weight_decay = 2λ). The angles are per step, in radians, and the
predictions are root-mean-square angles: they come from balancing E‖Δw‖², so the toy measurements
compare √E[θ²] with them (the plain mean is smaller by E‖g̃‖/√E‖g̃‖², about 3% on the toy unit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .errors import ParameterError
from .rules import RULES, SGD, get_rule
from .scale import angular_update
from .theory import DTYPE, ToyUnit, make_toy, run_toy, single_thread, toy_grad, toy_w0

Value = float | np.ndarray


def weight_decay(lam: Value) -> Value:
    """PyTorch's coupled ``weight_decay`` for this library's penalty λ‖w‖²: wd = 2λ."""
    return 2 * np.asarray(lam, float)


# ---------------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------------


def wan_angle(eta: Value, lam: Value, momentum: Value = 0.0) -> Value:
    """Equilibrium angular update per step of SGD (μ = 0) or heavy-ball momentum μ, Wan et al. 2021:
    Δθ = √(2η·wd / (1 + μ)) with wd = 2λ, i.e. 2√(ηλ/(1 + μ)).

    η is the learning rate of the velocity form v ← μv − η∇L_λ, w ← w + v (``rules.momentum``),
    which is ``torch.optim.SGD(momentum=μ)`` at constant η; not the "effective" η/(1 − μ) of the
    dampened form. Derivation (small steps): stationarity of w·v and of ‖w‖² gives
    E‖v‖² = 2η·wd·E‖w‖²/(1 + μ), and v is nearly tangent to w, so θ² ≈ ‖v‖²/‖w‖². For SGD the
    exact angle of a norm-preserving step is arccos(1 − η·wd) (``theory.equilibrium_angle``)."""
    return np.sqrt(2 * np.asarray(eta, float) * weight_decay(lam) / (1 + np.asarray(momentum, float)))


def kosson_adamw_angle(eta: Value, lam: Value, beta1: Value) -> Value:
    """Equilibrium angular update per step of AdamW, Kosson et al. 2024:
    Δθ = √(2η·wd·(1 − β₁)/(1 + β₁)) with wd = 2λ (AdamW's decay factor is 1 − η·wd = 1 − 2ηλ).

    The factor (1 − β₁)/(1 + β₁) is the variance of an exponential average of uncorrelated unit
    steps; on a unit of C weights the gradient spans only the C − 1 directions orthogonal to w, so
    the measured angle is smaller by about √((C − 1)/C) (3% on a 16-weight toy unit)."""
    beta1 = np.asarray(beta1, float)
    return np.sqrt(2 * np.asarray(eta, float) * weight_decay(lam) * (1 - beta1) / (1 + beta1))


def wan_norm(eta: Value, lam: Value, grad_sq: Value, momentum: Value = 0.0) -> Value:
    """Equilibrium ‖w‖ of SGD or heavy-ball momentum, Wan et al. 2021:
    ‖w‖⁴ = η·E‖g̃‖² / (2·wd·(1 − μ)), wd = 2λ, where ``grad_sq`` = E‖g̃‖² is the mean squared
    gradient at the unit-norm weight w/‖w‖ (∇L(w) = g̃/‖w‖ for a scale-invariant loss).

    This is the small-step form, used as the literature states it. For SGD it follows from
    ‖w'‖² = (1 − η·wd)²‖w‖² + η²‖g̃‖²/‖w‖², whose exact fixed point has 2 − η·wd in place of 2 (the
    ratio measured/this grows like (1 − ηλ)^{−1/4}). With momentum, E‖v‖² = η²E‖g̃‖²/((1 − μ²)‖w‖²)
    holds when successive minibatch gradients are uncorrelated; combined with the angle above it
    gives the 1 − μ. A persistent (correlated) gradient would make the norm larger."""
    denom = 2 * weight_decay(lam) * (1 - np.asarray(momentum, float))
    return (np.asarray(eta, float) * np.asarray(grad_sq, float) / denom) ** 0.25


def kosson_adamw_norm(eta: Value, lam: Value, n_weights: int) -> Value:
    """Equilibrium ‖w‖ of one unit of ``n_weights`` (C) weights under AdamW, Kosson et al. 2024:
    ‖w‖ = √(η·C / (2·wd)), wd = 2λ. Adam's normalised step u has a size set by C, not by the
    gradient's scale: one averaged step has E‖u‖² ≈ C(1 − β₁)/(1 + β₁), and its correlation with the
    earlier steps still in the average pushes w outward by the rest, C·2β₁/(1 + β₁); the decay
    removes ≈ 2η·wd‖w‖² per step, hence no gradient term. The bookkeeping holds w fixed over the
    momentum's memory, so it needs η·wd ≪ 1 − β₁ (on the toy unit the norm is 10% short at
    η·wd/(1 − β₁) ≈ 0.2)."""
    return np.sqrt(np.asarray(eta, float) * n_weights / (2 * weight_decay(lam)))


# ---------------------------------------------------------------------------------------------
# The predictions measured on the toy unit
# ---------------------------------------------------------------------------------------------

def rotation_coefficient(rule: str, hp: dict[str, float] | None = None) -> float:
    """The hyperparameter that enters ``rule``'s rotational prediction (``UpdateRule.rotation``):
    μ for Wan et al.'s form (0 without momentum), β₁ for Kosson et al.'s; ``ParameterError`` for a
    rule without a prediction."""
    r = get_rule(rule)
    if r.rotation is None:
        with_one = ", ".join(n for n, o in RULES.items() if o.rotation)
        raise ParameterError(f"rule: no rotational prediction for {rule!r}; choose one of {with_one}")
    return r.hyper(hp).get("rho1" if r.rotation == "kosson" else "rho", 0.0)


def predicted_angle(rule: str, eta: Value, lam: Value, hp: dict[str, float] | None = None) -> Value:
    """The root-mean-square angle per step at equilibrium that ``rule``'s prediction gives."""
    coef = rotation_coefficient(rule, hp)
    if get_rule(rule).rotation == "kosson":
        return kosson_adamw_angle(eta, lam, coef)
    return wan_angle(eta, lam, coef)


def toy_rotation(
    rule: str,
    eta: Value,
    lam: Value,
    steps: int,
    seed: int = 0,
    toy: ToyUnit | None = None,
    batch: int = 32,
    window: float = 0.5,
    hp: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Train the toy unit (``theory.run_toy``, minibatches of ``batch``) with ``rule`` for ``steps``
    steps at each (η, λ) pair (scalars or equal-length lists, one copy each), and compare the last
    ``window`` of the run with the predictions of Wan et al. 2021 (SGD, momentum) or Kosson et al.
    2024 (AdamW). ``toy`` defaults to ``make_toy(d=16)``.

    Returns arrays, one entry per copy: ``lr``, ``l2``, ``angle`` (mean per step), ``angle_rms``
    (√E[θ²], what the formulas predict), ``angle_pred``, ``angle_ratio`` (rms/pred), ``norm`` (mean
    ‖w‖), ``norm_pred``, ``norm_ratio``, ``grad_sq`` (E‖g̃‖² at the unit-norm weight, measured, fed
    to Wan's norm) and ``drift`` (relative change of the mean ‖w‖ between the two halves of the
    window: small once the run is at equilibrium)."""
    coef = rotation_coefficient(rule, hp)  # refuses a rule without a prediction
    toy = make_toy(d=16, seed=seed) if toy is None else toy
    hyper = get_rule(rule).hyper(hp)
    run = run_toy(rule, toy, eta, lam, steps, batch=batch, seed=seed, hp=hyper, window=window)
    k = run.angles.shape[0]
    norms = run.norms[-k:]
    # grad_sq[t] is ‖∇L(w_t)‖² and norms[t] is ‖w_t‖: their product is ‖g̃‖² at step t.
    grad_sq = (run.grad_sq[-k:] * run.norms[-k - 1:-1] ** 2).mean(0).numpy()
    lr, l2 = run.lr, run.l2
    angle_pred = predicted_angle(rule, lr, l2, hyper)
    if get_rule(rule).rotation == "kosson":
        norm_pred = kosson_adamw_norm(lr, l2, toy.d)
    else:
        norm_pred = wan_norm(lr, l2, grad_sq, coef)
    angle_rms = run.angles.pow(2).mean(0).sqrt().numpy()
    norm = norms.mean(0).numpy()
    half = k // 2
    drift = np.abs(norms[half:].mean(0).numpy() / norms[:half].mean(0).numpy() - 1)
    return {"lr": lr, "l2": l2, "angle": run.angles.mean(0).numpy(), "angle_rms": angle_rms,
            "angle_pred": angle_pred, "angle_ratio": angle_rms / angle_pred, "norm": norm,
            "norm_pred": norm_pred, "norm_ratio": norm / norm_pred, "grad_sq": grad_sq, "drift": drift}


# ---------------------------------------------------------------------------------------------
# Li & Arora 2019: weight decay as an exponentially growing learning rate
# ---------------------------------------------------------------------------------------------


def exponential_lr(eta: float, lam: float, t: int) -> float:
    """The learning rate of step t (t = 0 for the step from w₀ to w₁) of SGD *without* L2 that
    reproduces SGD with L2 (rate η, penalty λ‖w‖²) on a scale-invariant loss, Li & Arora 2019:
    η_t = η·c^{−(2t+1)} with c = 1 − 2ηλ.

    Derivation: the L2 run is w_{t+1} = c·w_t − η∇L(w_t). Put w̃_t = c^{−t}w_t; as ∇L(αw) = ∇L(w)/α,
    w̃_{t+1} = w̃_t − η c^{−t−1}∇L(c^t w̃_t) = w̃_t − η c^{−2t−1}∇L(w̃_t), plain SGD from w̃₀ = w₀."""
    return eta * (1 - 2 * eta * lam) ** (-(2 * t + 1))


def exponential_lr_equivalence(
    eta: float,
    lam: float,
    steps: int,
    seed: int = 0,
    toy: ToyUnit | None = None,
    batch: int = 32,
    schedule: Callable[[float, float, int], float] = exponential_lr,
) -> dict[str, float]:
    """Run SGD with L2 at constant η (``rules.SGD``) and SGD without L2 at the rates ``schedule(η,
    λ, t)`` side by side on the toy unit (``toy`` defaults to ``make_toy(d=16)``), from the same w₀
    and on the same minibatches, in float64.

    Returns ``max_angle``, the largest angle between the two runs' weights over all steps (zero up
    to rounding when the schedule is Li & Arora's); ``max_norm_gap``, the largest
    |‖w̃_t‖·c^t/‖w_t‖ − 1| with c = 1 − 2ηλ (the no-L2 iterate is the L2 one magnified by c^{−t});
    and ``norm_ratio``, the final ‖w̃_T‖/‖w_T‖."""
    toy = make_toy(d=16, seed=seed) if toy is None else toy
    c = 1 - 2 * eta * lam
    w = toy_w0(toy, seed=seed).expand(2, toy.d).clone()  # row 0: with L2; row 1: without
    lams = torch.tensor([[lam], [0.0]], dtype=DTYPE)
    gen = torch.Generator().manual_seed(seed)
    max_angle = max_gap = 0.0
    with single_thread():
        for t in range(steps):
            g = toy_grad(w, toy, torch.randint(0, toy.n, (batch,), generator=gen))
            etas = torch.tensor([[eta], [schedule(eta, lam, t)]], dtype=DTYPE)
            w, _ = SGD.step(w, g, {}, etas, lams, t + 1, {})
            max_angle = max(max_angle, float(angular_update(w[:1], w[1:], lead=1)))
            r = w.norm(dim=-1)
            max_gap = max(max_gap, abs(float(r[1] / r[0]) * c ** (t + 1) - 1))
    r = w.norm(dim=-1)
    return {"max_angle": max_angle, "max_norm_gap": max_gap, "norm_ratio": float(r[1] / r[0])}


# ---------------------------------------------------------------------------------------------
# On the network: the end of a grid's constant-η phase
# ---------------------------------------------------------------------------------------------


def constant_lr_epoch(table: pd.DataFrame) -> int:
    """The last epoch before η first drops: the end of the phase in which an equilibrium is a fixed
    point of the dynamics (after a drop the norms take another relaxation time to follow)."""
    return int(table.loc[table["lr_scale"] == 1.0, "epoch"].max())


def unit_sizes(widths: Sequence[int], in_channels: int = 3, kernel: int = 3) -> list[int]:
    """C of each conv layer: the number of weights in one of its units (C_in·3·3)."""
    return [c_in * kernel * kernel for c_in in (in_channels, *widths[:-1])]


def network_rotation(cells: pd.DataFrame, rule: str, widths: Sequence[int],
                     per: str = "unit") -> pd.DataFrame:
    """For each fitted cell of ``cells`` (``claims.cell_frame`` at the end of the constant-η phase)
    and each conv layer of a network of ``widths``: the measured root-mean-square angle per step
    against ``predicted_angle``, and the measured mean unit norm against Wan et al.'s ``wan_norm``
    (from the measured mean ‖g̃‖² of that epoch) or Kosson et al.'s ``kosson_adamw_norm`` (from the
    layer's C); their ratios. One row per (seed, cell, layer). With ``per='layer'`` the angle is
    the whole layer's (the vector that layer normalisation makes scale-invariant) and the norm the
    layer's, without a predicted norm (the layer's ‖g̃‖² is not recorded)."""
    f = cells[cells["fitted"]]
    coef, wan = rotation_coefficient(rule), get_rule(rule).rotation == "wan"
    pred_angle = predicted_angle(rule, f["lr"], f["l2"])  # the same for every layer
    frames = []
    for i, c in enumerate(unit_sizes(widths)):
        if per == "layer":
            angle, norm, pred_norm = np.sqrt(f[f"layer_angle_sq_{i}"]), f[f"layer_norm_{i}"], np.nan
        else:
            angle, norm = np.sqrt(f[f"angle_sq_{i}"]), f[f"unit_norm_{i}"]
            pred_norm = (wan_norm(f["lr"], f["l2"], f[f"grad_sq_{i}"], coef) if wan
                         else kosson_adamw_norm(f["lr"], f["l2"], c))
        frames.append(pd.DataFrame({
            "seed": f["seed"], "lr": f["lr"], "l2": f["l2"], "layer": i, "angle": angle,
            "predicted_angle": pred_angle, "angle_ratio": angle / pred_angle, "norm": norm,
            "predicted_norm": pred_norm, "norm_ratio": norm / pred_norm}))
    return pd.concat(frames, ignore_index=True)
