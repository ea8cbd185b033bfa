"""The paper's theory (§2–§5) as small computations that check it.

The four theory chapters of the book call this module; nothing here trains the convnet on images.
Two test beds are used:

* the paper's network (``model.WideNet``), tiny and in float64, for the invariances of §2 and the
  gradient scaling of §3;
* a *toy unit*: one scale-invariant unit whose logit is γ·x·w/‖w‖ on a fixed set of noisy labels,
  trained with minibatches. Its loss depends on w only through w/‖w‖, as a normalised unit's does,
  and it is small enough that a whole (η, λ) grid of it runs as one (M, d) tensor in seconds, with
  the steps of the update rules' records (``l2bn.rules``) applied to all M copies at once.

Conventions follow the library: L_λ(w) = L(w) + λ‖w‖², so the L2 term adds 2λw to the gradient and
gradient descent shrinks the weights by (1 − 2ηλ) per step.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .model import WideNet
from .rules import RULES, SGD, UpdateRule, get_rule
from .scale import angular_update, equilibrium_norm, normalize_units_, unit_norms
from .train import torch_threads

Tensor = torch.Tensor
DTYPE = torch.float64  # the checks compare quantities that agree to ~1e-12; float32 would hide that

def single_thread() -> AbstractContextManager[None]:
    """Run the enclosed tensor code on one CPU thread, then restore the previous setting.

    The toy computations loop over thousands of steps on tensors of a few hundred numbers; extra
    intra-op threads only add synchronisation (over ten times slower on a busy two-core machine)."""
    return torch_threads(1)


def product_grid(lrs, l2s) -> tuple[np.ndarray, np.ndarray]:
    """Every (η, λ) pair of two lists, as two flat arrays (η major, as in ``SweepSpec.grid``)."""
    e, l = np.meshgrid(np.asarray(lrs, float), np.asarray(l2s, float), indexing="ij")
    return e.ravel(), l.ravel()


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(lx, ly, 1)[0])


# ---------------------------------------------------------------------------------------------
# §2 Invariance, on the paper's network
# ---------------------------------------------------------------------------------------------


def probe_net(
    norm: str, widths: tuple[int, ...] = (4, 8, 8, 16), n_images: int = 16, seed: int = 0
) -> tuple[WideNet, Tensor, Tensor]:
    """One small ``WideNet`` (float64, training mode) with a batch of random images and labels.

    Training mode matters for batch normalisation: the invariance y(αw) = y(w) holds for the
    batch statistics, not for the frozen running statistics used at test time."""
    g = torch.Generator().manual_seed(seed)
    net = WideNet(1, widths, norm, seed=seed).to(DTYPE).train()
    x = torch.randn(n_images, 3, 32, 32, generator=g, dtype=DTYPE)
    y = torch.randint(0, 10, (n_images,), generator=g)
    return net, x, y


def _scaled_conv(net: WideNet, factors: list[Tensor]) -> dict[str, Tensor]:
    """The conv weights with each unit (or layer) multiplied by its factor, as a parameter dict."""
    return {f"conv{i}": w.detach() * a.reshape(1, -1, 1, 1, 1) for i, (w, a) in
            enumerate(zip(net.conv_weights, factors, strict=True))}


def _logits(net: WideNet, x: Tensor, conv: dict[str, Tensor] | None = None) -> Tensor:
    params = {name: p.detach() for name, p in net.named_parameters()}
    params.update(conv or {})
    with torch.no_grad(), single_thread():
        return torch.func.functional_call(net, params, (x,))[0]


def scale_factors(
    net: WideNet, per: str, low: float = 1 / 3, high: float = 3.0, seed: int = 1
) -> list[Tensor]:
    """Random factors α, log-uniform in [low, high]: one per unit (``per="unit"``) or one per
    layer, shared by all its units (``per="layer"``)."""
    if per not in ("unit", "layer"):
        raise ValueError(f"per: choose 'unit' or 'layer'; got {per!r}")
    g = torch.Generator().manual_seed(seed)
    out = []
    for w in net.conv_weights:
        n = w.shape[1] if per == "unit" else 1
        u = torch.rand(n, generator=g, dtype=DTYPE)
        a = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        out.append(a.expand(w.shape[1]))
    return out


def output_change(norm: str, per: str, low: float = 1 / 3, high: float = 3.0, seed: int = 0) -> float:
    """max |y(αw) − y(w)| over the logits of a batch, the conv weights scaled per unit or per
    layer by random factors in [low, high] (the network's outputs are of order 1)."""
    net, x, _ = probe_net(norm, seed=seed)
    base = _logits(net, x)
    scaled = _logits(net, x, _scaled_conv(net, scale_factors(net, per, low, high, seed + 1)))
    return float((scaled - base).abs().max())


def penalised_loss(net: WideNet, x: Tensor, y: Tensor, lam: float, conv: dict[str, Tensor]) -> float:
    """L_λ(w) = L(w) + λ Σ‖w‖², with L the mean cross-entropy and the sum over the conv weights
    (the scale-invariant ones; the classifier is held fixed)."""
    logits = _logits(net, x, conv)
    penalty = sum(float((w**2).sum()) for w in conv.values())
    return float(F.cross_entropy(logits, y)) + lam * penalty


def l2_rescaling_gap(norm: str, alphas, lam: float = 1e-3, seed: int = 0) -> pd.DataFrame:
    """For each α: L_λ(αw) and L_{λα²}(w) on the probe network, and their relative difference."""
    net, x, y = probe_net(norm, seed=seed)
    ones = [torch.ones(w.shape[1], dtype=DTYPE) for w in net.conv_weights]
    rows = []
    for a in alphas:
        lhs = penalised_loss(net, x, y, lam, _scaled_conv(net, [a * o for o in ones]))
        rhs = penalised_loss(net, x, y, lam * a**2, _scaled_conv(net, ones))
        rows.append({"alpha": float(a), "L_lam(alpha w)": lhs, "L_lam_alpha2(w)": rhs,
                     "rel_gap": abs(lhs - rhs) / abs(rhs)})
    return pd.DataFrame(rows)


def loss_along_scale(norm: str, alphas, l2s, seed: int = 0) -> pd.DataFrame:
    """L(αw) and L_λ(αw) along the ray through the probe network's conv weights, for each λ."""
    net, x, y = probe_net(norm, seed=seed)
    ones = [torch.ones(w.shape[1], dtype=DTYPE) for w in net.conv_weights]
    rows = []
    for a in alphas:
        conv = _scaled_conv(net, [a * o for o in ones])
        data = penalised_loss(net, x, y, 0.0, conv)
        for lam in l2s:
            rows.append({"alpha": float(a), "l2": float(lam), "data_loss": data,
                         "penalised_loss": penalised_loss(net, x, y, lam, conv)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# §3 Gradients and Hessians at αw
# ---------------------------------------------------------------------------------------------


def net_loss_fn(norm: str = "batch", seed: int = 0):
    """The probe network's mean cross-entropy as a function of its flattened conv weights.

    Returns ``(loss_fn, w0, units)``: ``loss_fn(w)`` takes a flat vector, ``w0`` is the network's
    initial one and ``units`` lists each unit's index range in it (for per-unit checks)."""
    net, x, y = probe_net(norm, seed=seed)
    shapes = [w.shape for w in net.conv_weights]
    sizes = [s.numel() for s in shapes]
    fixed = {name: p.detach() for name, p in net.named_parameters() if not name.startswith("conv")}
    fixed.update({name: b for name, b in net.named_buffers()})

    def loss_fn(w: Tensor) -> Tensor:
        parts = torch.split(w, sizes)
        params = {**fixed, **{f"conv{i}": p.view(s) for i, (p, s) in enumerate(zip(parts, shapes,
                                                                                   strict=True))}}
        return F.cross_entropy(torch.func.functional_call(net, params, (x,))[0], y)

    w0 = torch.cat([w.detach().reshape(-1) for w in net.conv_weights])
    units, start = [], 0
    for s in shapes:
        per_unit = s[2:].numel()
        units += [(start + k * per_unit, start + (k + 1) * per_unit) for k in range(s[1])]
        start += s.numel()
    return loss_fn, w0, units


def grad_and_hvp(loss_fn, w: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """∇L(w) and the Hessian-vector product ∇²L(w)·v, by double backward."""
    w = w.detach().clone().requires_grad_(True)
    with single_thread():
        (g,) = torch.autograd.grad(loss_fn(w), w, create_graph=True)
        (hv,) = torch.autograd.grad(g @ v, w)
    return g.detach(), hv.detach()


def scaling_table(loss_fn, w: Tensor, alphas, seed: int = 0) -> pd.DataFrame:
    """‖∇L(αw)‖ and ‖∇²L(αw)·v‖ (v a fixed random direction) for each α."""
    v = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed), dtype=w.dtype)
    rows = []
    for a in alphas:
        g, hv = grad_and_hvp(loss_fn, a * w, v)
        rows.append({"alpha": float(a), "grad_norm": float(g.norm()), "hvp_norm": float(hv.norm())})
    return pd.DataFrame(rows)


def orthogonality(loss_fn, w: Tensor, units: list[tuple[int, int]]) -> float:
    """max over units of |w·∇L(w)| / (‖w‖‖∇L(w)‖), each unit's weights against its own gradient."""
    g, _ = grad_and_hvp(loss_fn, w, torch.zeros_like(w))
    worst = 0.0
    for lo, hi in units:
        a, b = w[lo:hi], g[lo:hi]
        worst = max(worst, float((a @ b).abs() / (a.norm() * b.norm())))
    return worst


# ---------------------------------------------------------------------------------------------
# The toy unit: logit γ·x·w/‖w‖, noisy labels, minibatches
# ---------------------------------------------------------------------------------------------


@dataclass
class ToyUnit:
    """A fixed data set for one scale-invariant unit: inputs ``x`` (N, d), labels ``y`` ∈ {−1, 1}
    (a teacher's labels with a fraction flipped at random) and the output scale ``gamma``."""

    x: Tensor
    y: Tensor
    gamma: float

    def __post_init__(self) -> None:
        # The loss depends on each sample only through y·x, so that product is kept ready.
        self.yx = self.y[:, None] * self.x

    @property
    def d(self) -> int:
        return self.x.shape[1]

    @property
    def n(self) -> int:
        return self.x.shape[0]


def make_toy(d: int = 16, n: int = 4096, flip: float = 0.2, gamma: float = 4.0, seed: int = 0) -> ToyUnit:
    """Gaussian inputs, labels from a random teacher direction, a fraction ``flip`` of them flipped.

    The flipped labels keep the minibatch gradient noisy at the optimum, which is what the noise
    model of §4 assumes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DTYPE)
    teacher = torch.randn(d, generator=g, dtype=DTYPE)
    y = torch.sign(x @ teacher)
    y = torch.where(torch.rand(n, generator=g, dtype=DTYPE) < flip, -y, y)
    return ToyUnit(x, y, gamma)


def toy_loss(w: Tensor, toy: ToyUnit, idx: Tensor | None = None) -> Tensor:
    """L(w) = mean log(1 + exp(−y·γ·x·w/‖w‖)) over the samples ``idx`` (all when None).
    ``w`` is (d,) or (M, d); the result is a scalar or (M,)."""
    yx = toy.yx if idx is None else toy.yx[idx]
    return F.softplus(-toy.gamma * (w / w.norm(dim=-1, keepdim=True)) @ yx.T).mean(dim=-1)


def toy_grad(w: Tensor, toy: ToyUnit, idx: Tensor | None = None) -> Tensor:
    """∇L(w) of ``toy_loss`` for (M, d) weights in closed form (autograd's gradient, faster):
    −(γ/‖w‖)(I − uuᵀ) mean_i σ(−γ u·y_i x_i) y_i x_i with u = w/‖w‖, orthogonal to w by
    construction."""
    yx = toy.yx if idx is None else toy.yx[idx]
    r = w.norm(dim=-1, keepdim=True)
    u = w / r
    a = torch.sigmoid((u @ yx.T).mul_(-toy.gamma)) @ yx
    return (a.mul_(-toy.gamma / yx.shape[0]) - (a * u).sum(-1, keepdim=True) * u).div_(r)


def toy_hessian(w: Tensor, toy: ToyUnit) -> Tensor:
    """The exact full-batch Hessian ∇²L(w) of each of M models, (M, d, d)."""
    return torch.func.vmap(torch.func.hessian(lambda v: toy_loss(v, toy)))(w)


def newton(w: Tensor, g: Tensor, hess: Tensor, eta: Tensor, lam: Tensor) -> Tensor:
    """Newton's method on L_λ (§5.4): w ← w − η (∇²L + 2λI)⁻¹ (∇L + 2λw), for (M, d) weights."""
    eye = torch.eye(w.shape[-1], dtype=w.dtype)
    h = hess + 2 * lam[..., None] * eye
    return w - eta * torch.linalg.solve(h, g + 2 * lam * w)


def toy_w0(toy: ToyUnit, norm: float = 1.0, seed: int = 0) -> Tensor:
    """A random starting direction with norm ``norm``."""
    w = torch.randn(toy.d, generator=torch.Generator().manual_seed(seed + 7), dtype=DTYPE)
    return norm * w / w.norm()


@dataclass
class ToyRun:
    """Trajectories of M copies of the toy unit trained with one rule, copy m with ``lr[m]`` and
    ``l2[m]``: ``norms`` (T+1, M) with ‖w_0‖ first, the squared norms ``grad_sq`` (T, M) of ∇L
    (without the L2 term), the angle each step turned the weights through over the last
    ``angles.shape[0]`` steps (the late window), and the final weights ``w`` (M, d)."""

    rule: str
    lr: np.ndarray  # η of each copy
    l2: np.ndarray  # λ of each copy
    norms: Tensor
    grad_sq: Tensor
    angles: Tensor
    w: Tensor

    def equilibrium_norm(self, window: float = 0.25) -> np.ndarray:
        """Each copy's ‖w‖ averaged over the last ``window`` fraction of the run."""
        n = self.norms.shape[0]
        return self.norms[n - max(1, int(n * window)):].mean(dim=0).numpy()

    def mean_angle(self) -> np.ndarray:
        """Each copy's angular update per step, averaged over the recorded late window."""
        return self.angles.mean(dim=0).numpy()


def _as_column(v) -> Tensor:
    """A scalar or a list of values as an (n, 1) float64 column, to broadcast against (M, d)."""
    return torch.as_tensor(v, dtype=DTYPE).reshape(-1, 1)


def _toy_step(records, cols, bounds, w: Tensor, g: Tensor, states: dict, hps: dict, t: int) -> Tensor:
    """One step of every rule on its own slice of the stacked copies (``states`` updated in place)."""
    parts = []
    for i, (name, r) in enumerate(records.items()):
        lo, hi = bounds[i], bounds[i + 1]
        eta, lam = cols[name]
        new, states[name] = r.step(w[lo:hi], g[lo:hi], states[name], eta, lam, t, hps[name])
        if r.projection is not None:
            r.projection(new, lead=1)
        parts.append(new)
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def run_toys(
    grids: dict[str, tuple],
    toy: ToyUnit,
    steps: int,
    batch: int = 32,
    w0: Tensor | None = None,
    seed: int = 0,
    hp: dict[str, dict[str, float]] | None = None,
    window: float = 0.25,
) -> dict[str, ToyRun]:
    """Train the toy unit with several update rules at once. ``grids`` maps the name of a
    first-order rule (``l2bn.rules``) to its (η values, λ values), one pair per copy (a scalar
    broadcasts).

    All copies of all rules start from ``w0`` (default ``toy_w0(toy)``) and see the same
    minibatches, so one gradient evaluation serves every copy; each rule then updates its own
    slice, with its record's defaults (overridden by ``hp[rule]``). A rule with a projection
    (normalised SGD) applies it after every step, as ``GridOptimizer`` does for the network's
    units. Angles are recorded over the last ``window`` of the steps."""
    records = {name: get_rule(name) for name in grids}
    for name, r in records.items():
        if not r.trainable:
            raise ValueError(f"rule: {name!r} needs the Hessian and runs alone, through run_toy")
    cols = {}
    for rule, (lrs, l2s) in grids.items():
        eta, lam = torch.broadcast_tensors(_as_column(lrs), _as_column(l2s))
        cols[rule] = (eta, lam)
    sizes = [c[0].shape[0] for c in cols.values()]
    bounds = np.cumsum([0, *sizes])
    w = (toy_w0(toy) if w0 is None else w0.to(DTYPE)).expand(sum(sizes), toy.d).clone()
    hps = {r: records[r].hyper((hp or {}).get(r)) for r in grids}
    states = {r: {k: torch.zeros(n, toy.d, dtype=DTYPE) for k in records[r].state}
              for r, n in zip(grids, sizes, strict=True)}
    gen = torch.Generator().manual_seed(seed)
    n_angle = max(1, int(steps * window))
    norms = torch.empty(steps + 1, w.shape[0], dtype=DTYPE)
    grad_sq = torch.empty(steps, w.shape[0], dtype=DTYPE)
    angles = torch.empty(n_angle, w.shape[0], dtype=DTYPE)
    norms[0] = unit_norms(w, lead=1)
    with single_thread():
        for t in range(1, steps + 1):
            g = toy_grad(w, toy, torch.randint(0, toy.n, (batch,), generator=gen))
            new = _toy_step(records, cols, bounds, w, g, states, hps, t)
            grad_sq[t - 1] = (g * g).sum(-1)
            if t > steps - n_angle:
                angles[t - 1 - (steps - n_angle)] = angular_update(w, new, lead=1)
            w = new
            norms[t] = unit_norms(w, lead=1)
    out = {}
    for i, (rule, (eta, lam)) in enumerate(cols.items()):
        sl = slice(bounds[i], bounds[i + 1])
        out[rule] = ToyRun(rule, eta[:, 0].numpy(), lam[:, 0].numpy(), norms[:, sl], grad_sq[:, sl],
                           angles[:, sl], w[sl])
    return out


def run_toy(
    rule: str,
    toy: ToyUnit,
    lrs,
    l2s,
    steps: int,
    batch: int = 32,
    w0: Tensor | None = None,
    seed: int = 0,
    hp: dict[str, float] | None = None,
    window: float = 0.25,
) -> ToyRun:
    """Train M copies of the toy unit with one rule, copy m with ``lrs[m]`` and ``l2s[m]``
    (see ``run_toys``). A rule without a first-order step (Newton's method) is allowed here: it
    takes full-batch steps with the exact Hessian (``batch`` is then unused)."""
    if get_rule(rule).trainable:
        return run_toys({rule: (lrs, l2s)}, toy, steps, batch, w0, seed, {rule: hp or {}},
                        window)[rule]
    # Newton's method has no hyperparameters besides η and λ.
    eta, lam = torch.broadcast_tensors(_as_column(lrs), _as_column(l2s))
    m = eta.shape[0]
    w = (toy_w0(toy) if w0 is None else w0.to(DTYPE)).expand(m, toy.d).clone()
    n_angle = max(1, int(steps * window))
    norms = torch.empty(steps + 1, m, dtype=DTYPE)
    grad_sq = torch.empty(steps, m, dtype=DTYPE)
    angles = torch.empty(n_angle, m, dtype=DTYPE)
    norms[0] = unit_norms(w, lead=1)
    with single_thread():
        for t in range(1, steps + 1):
            g = toy_grad(w, toy)
            new = newton(w, g, toy_hessian(w, toy), eta, lam)
            grad_sq[t - 1] = (g * g).sum(-1)
            if t > steps - n_angle:
                angles[t - 1 - (steps - n_angle)] = angular_update(w, new, lead=1)
            w = new
            norms[t] = unit_norms(w, lead=1)
    return ToyRun(rule, eta[:, 0].numpy(), lam[:, 0].numpy(), norms, grad_sq, angles, w)


# ---------------------------------------------------------------------------------------------
# §3.1, §5 Rescaling: every rule has a symmetry that trades the scale of w for η and λ
# ---------------------------------------------------------------------------------------------

# A rule's scale symmetry (``UpdateRule.symmetry``, derived in ``l2bn.rules``): the run from αw₀
# with (η·α^a, λ·α^b) is the run from w₀ magnified by α, step for step (the adaptive rules also
# need ε/α, since ε is added to a gradient scale that shrinks by α).


def rescaled_gap(rule: str, toy: ToyUnit, eta: float, lam: float, alpha: float, steps: int = 200,
                 w0: Tensor | None = None, seed: int = 0) -> float:
    """Largest relative gap between the run of ``rule`` from w₀ with (η, λ) and the run from αw₀
    with (η·α^a, λ·α^b) of the rule's ``symmetry`` divided by α, on the same minibatches: the norms
    at every step and the final weights."""
    a, b = get_rule(rule).symmetry
    w0 = toy_w0(toy) if w0 is None else w0
    hp = get_rule(rule).hyper()
    base = run_toy(rule, toy, eta, lam, steps, w0=w0, seed=seed, hp=hp)
    if "eps" in hp:
        hp["eps"] = hp["eps"] / alpha
    big = run_toy(rule, toy, eta * alpha**a, lam * alpha**b, steps, w0=alpha * w0, seed=seed, hp=hp)
    gap_norm = float(((big.norms / alpha - base.norms).abs() / base.norms).max())
    gap_w = float((big.w / alpha - base.w).norm() / base.w.norm())
    return max(gap_norm, gap_w)


# ---------------------------------------------------------------------------------------------
# §4 The noise model of the steady state
# ---------------------------------------------------------------------------------------------


def noise_model_run(
    lrs,
    l2s,
    steps: int,
    units: int = 64,
    d: int = 16,
    gamma: float = 1.0,
    sigma: float = 1.0,
    seed: int = 0,
) -> Tensor:
    """‖w_t‖ of ``units`` independent scale-invariant units per (η, λ) pair under the noise model of
    §4, trained by ``rules.SGD``: at every step the gradient is orthogonal to w, zero with
    probability ½ (a ReLU that is off), and otherwise γ·ξ/‖w‖ with ξ Gaussian in the plane
    orthogonal to w and E‖ξ‖² = σ². So E‖∇L‖² = γ²σ²/(2‖w‖²), as in the paper.

    Returns the norms, shape (steps + 1, n_pairs, units); every unit starts at ‖w‖ = 1."""
    eta = torch.as_tensor(lrs, dtype=DTYPE).reshape(-1, 1, 1)
    lam = torch.as_tensor(l2s, dtype=DTYPE).reshape(-1, 1, 1)
    eta, lam = torch.broadcast_tensors(eta, lam)
    p = eta.shape[0]
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(p, units, d, generator=gen, dtype=DTYPE)
    w = w / w.norm(dim=-1, keepdim=True)
    norms = torch.empty(steps + 1, p, units, dtype=DTYPE)
    norms[0] = 1.0
    scale = sigma / math.sqrt(d - 1)  # d − 1 directions orthogonal to w share E‖ξ‖² = σ²
    with single_thread():
        for t in range(1, steps + 1):
            r = w.norm(dim=-1, keepdim=True)
            u = w / r
            xi = scale * torch.randn(p, units, d, generator=gen, dtype=DTYPE)
            xi = xi - (xi * u).sum(-1, keepdim=True) * u
            gate = (torch.rand(p, units, 1, generator=gen, dtype=DTYPE) < 0.5).to(DTYPE)
            g = gate * gamma * xi / r
            w, _ = SGD.step(w, g, {}, eta, lam, t, {})
            norms[t] = w.norm(dim=-1)
    return norms


def paper_equilibrium_norm_as_printed(eta, lam, gamma: float = 1.0, sigma: float = 1.0):
    """The closed form exactly as §4 prints it, ‖w‖⁴ = η²γ²σ²/(4ηλ − 2η²λ²). It solves the
    recursion with the decay factor (1 − ηλ), i.e. a gradient λw; with this book's λ (gradient
    2λw) use ``l2bn.scale.equilibrium_norm``. Kept only to show the size of the mismatch."""
    return (eta**2 * gamma**2 * sigma**2 / (4 * eta * lam - 2 * eta**2 * lam**2)) ** 0.25


def noise_model_table(lrs, l2s, steps: int, units: int = 64, window: float = 0.25,
                      seed: int = 0) -> pd.DataFrame:
    """Simulated equilibrium ‖w‖ of the noise model (mean over units and the last ``window`` of
    the steps) next to the closed form ``equilibrium_norm`` (γ = σ = 1), its small-ηλ
    approximation (η/8λ)^{1/4} and the formula as the paper prints it."""
    norms = noise_model_run(lrs, l2s, steps, units=units, seed=seed)
    late = norms[steps + 1 - max(1, int((steps + 1) * window)):]
    lrs, l2s = np.asarray(lrs, float), np.asarray(l2s, float)
    sim = late.mean(dim=(0, 2)).numpy()
    closed = equilibrium_norm(lrs, l2s)
    return pd.DataFrame({
        "lr": lrs, "l2": l2s, "lr_l2": lrs * l2s, "simulated": sim, "closed_form": closed,
        "rel_err": sim / closed - 1, "approx": (lrs / (8 * l2s)) ** 0.25,
        "as_printed": paper_equilibrium_norm_as_printed(lrs, l2s),
    })


def equilibrium_angle(eta, lam):
    """The angle a unit turns through per SGD step once its norm is steady: θ* = arccos(1 − 2ηλ)
    ≈ 2√(ηλ).

    If a step w' = (1 − 2ηλ)w − η∇L with ∇L ⟂ w leaves ‖w'‖ = ‖w‖, then cos θ = w·w'/(‖w‖‖w'‖)
    = 1 − 2ηλ exactly, whatever the size of the gradient noise."""
    return np.arccos(1 - 2 * np.asarray(eta, float) * np.asarray(lam, float))


def settling_summary(table: pd.DataFrame, layer: int = 0, last: int = 3) -> pd.DataFrame:
    """For each model of a sweep table (``train_grid``'s), the last ``last`` epochs before the
    first learning-rate drop: mean angular update of ``layer`` against ``equilibrium_angle``,
    the relative spread of the unit norm over those epochs, and how many e-folds 4ηλ·steps of
    pure decay the first phase allowed (a unit far above equilibrium shrinks like e^{−4ηλt})."""
    first = table[table.lr_scale == 1.0]
    n_epochs = int(first.epoch.max())
    rows = []
    for (lr, l2), g in first.groupby(["lr", "l2"]):
        late = g[g.epoch > n_epochs - last]
        norm = late[f"unit_norm_{layer}"]
        rows.append({
            "lr": lr, "l2": l2, "angle": float(late[f"angle_{layer}"].mean()),
            "theta_star": float(equilibrium_angle(lr, l2)),
            "norm": float(norm.mean()), "norm_spread": float((norm.max() - norm.min()) / norm.mean()),
        })
    out = pd.DataFrame(rows)
    out["angle_ratio"] = out.angle / out.theta_star
    return out


# ---------------------------------------------------------------------------------------------
# §5 The update rules on the toy unit: effective learning rate and equilibrium norm
# ---------------------------------------------------------------------------------------------


def step_angle(rule: str, toy: ToyUnit, norms, eta: float, lam0: float = 0.0, seed: int = 0) -> np.ndarray:
    """The angle of the first step (fresh optimiser state) taken from w = r·u for each r in
    ``norms``, same direction u and minibatch for all; λ = lam0/r² keeps the problem the same up to
    scale (lam0 = 0 for first-order rules; Newton needs lam0 > 0 to be defined).

    Since the angle is η_eff·‖∇L(u)‖ to first order, its slope against r on log axes is −p in
    η_eff = η/‖w‖^p."""
    r = torch.as_tensor(norms, dtype=DTYPE)
    w0 = toy_w0(toy)
    out = []
    for ri in r:
        res = run_toy(rule, toy, eta, lam0 / ri**2, steps=1, w0=ri * w0, seed=seed)
        out.append(float(res.angles[0, 0]))
    return np.array(out)


def toy_optimum_direction(toy: ToyUnit, steps: int = 300, eta: float = 1.0) -> Tensor:
    """The minimiser of the full-batch toy loss on the unit sphere, by normalised gradient
    descent (a starting point where Newton's method is well behaved)."""
    w = toy_w0(toy)[None]
    with single_thread():
        for _ in range(steps):
            w = w - eta * toy_grad(w, toy)
            normalize_units_(w, lead=1)
    return w[0]


def no_l2_growth(toy: ToyUnit, eta: float, steps: int, seed: int = 0) -> dict[str, np.ndarray | float]:
    """SGD without L2 on the toy unit: ‖w_t‖, η_eff = η/‖w_t‖², and the largest relative error of
    the step identity ‖w_{t+1}‖² = ‖w_t‖² + η²‖∇L(w_t)‖² (exact because ∇L ⟂ w)."""
    run = run_toy(SGD.name, toy, eta, 0.0, steps, seed=seed)
    sq = run.norms[:, 0] ** 2
    pred = sq[:-1] + eta**2 * run.grad_sq[:, 0]
    return {"norm": run.norms[:, 0].numpy(), "eta_eff": (eta / sq).numpy(),
            "identity_err": float(((sq[1:] - pred).abs() / sq[1:]).max())}


# Table 1 on the toy unit: each rule's record holds a 3 × 3 grid (``toy_grid``), two decades of
# η/λ, chosen so that each step turns w by at most ~0.3 rad and equilibrium is reached within the
# run (see chapter 4); Newton's method has no equilibrium: one η, λ over two decades.


def theory_row(rule: UpdateRule) -> dict[str, float]:
    """Table 1's predictions for ``rule``: η_eff = η/‖w‖^p, ‖w‖ ∝ (η/λ)^e at equilibrium, hence
    η_eff ∝ η^a λ^b there (``eff_eta``, ``eff_lam``), and the exponent of the cross-validated
    η* ∝ λ^c (``eta_star``), all derived from the rule's scale symmetry."""
    a, b = rule.eta_eff_exponents
    return {"p": rule.eta_eff_power, "e": rule.norm_exponent, "eff_eta": a, "eff_lam": b,
            "eta_star": rule.best_lr_slope}


def _toy_row(r: UpdateRule, run: ToyRun, toy: ToyUnit, start: Tensor, window: float,
             seed: int) -> dict[str, float]:
    """One row of ``measure_update_rules``: the theory's values and what the toy run measured."""
    second_order = not r.trainable
    row = {"rule": r.name, **theory_row(r), "decay_measured": math.nan, "decay_theory": math.nan,
           "max_angle": math.nan, "p_measured": math.nan, "sym_gap": math.nan}
    if r.projection is None:  # a projected rule pins ‖w‖ = 1: no scale to vary, η_eff = η by construction
        radii = np.logspace(0, 2, 5)
        angle0 = step_angle(r.name, toy, radii, eta=1e-3, lam0=1e-3 if second_order else 0.0)
        row["p_measured"] = -loglog_slope(radii, angle0)
        eta0, lam0 = (float(np.median(g)) for g in r.toy_grid)
        row["sym_gap"] = rescaled_gap(r.name, toy, eta0, lam0, 10.0, steps=10 if second_order else 200,
                                      w0=start, seed=seed)
    eq = run.equilibrium_norm(window)
    fit = fit_exponents(run.lr, run.l2, eq)
    row["e_measured"] = fit["ratio"]
    row["e_eta"], row["e_lam"] = (fit["eta"], -fit["lam"]) if r.steady_state else (math.nan, math.nan)
    n = run.norms.shape[0]
    k = max(1, int(n * window))
    row["drift"] = float(np.abs(eq / run.norms[n - 2 * k:n - k].mean(0).numpy() - 1).max())
    if not r.steady_state:  # ‖w‖ shrinks by (1 − η) per step
        row["decay_measured"] = float((run.norms[-1] / run.norms[-11]).mean() ** 0.1)
        row["decay_theory"] = 1 - float(run.lr[0])
        row["eff_eta_measured"] = row["eff_lam_measured"] = math.nan
    else:
        ang = fit_exponents(run.lr, run.l2, run.mean_angle())
        row["eff_eta_measured"], row["eff_lam_measured"] = ang["eta"], ang["lam"]
        row["max_angle"] = float(run.mean_angle().max())
    return row


def measure_update_rules(
    toy: ToyUnit,
    rules=None,
    steps: int = 8000,
    newton_steps: int = 20,
    window: float = 0.25,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, ToyRun]]:
    """Table 1 measured on the toy unit, for ``rules`` (default: every registered rule, in registry
    order). For each rule: the first-step exponent p of η_eff = η/‖w‖^p (``step_angle`` over
    r = 1 … 100); the largest gap of its scale symmetry (``rescaled_gap`` with α = 10); the fitted
    exponent e of the late-window ‖w‖ against η/λ, and separately against η and λ; the relative
    drift of the late-window mean between the last two windows; and the exponents of the
    late-window angular update against η and λ (η_eff at equilibrium).

    The first-order rules run together for ``steps`` steps on their records' ``toy_grid``; a
    second-order rule (Newton) runs alone, full batch, for ``newton_steps`` from the optimum's
    direction, where its norm shrinks by (1 − η) per step."""
    chosen = [r for name, r in RULES.items() if rules is None or name in rules]
    grids = {r.name: product_grid(*r.toy_grid) for r in chosen if r.trainable}
    runs = run_toys(grids, toy, steps, seed=seed, window=window) if grids else {}
    start = toy_optimum_direction(toy)
    for r in chosen:
        if not r.trainable:
            runs[r.name] = run_toy(r.name, toy, *product_grid(*r.toy_grid), newton_steps, w0=start,
                                   window=window)
    rows = [_toy_row(r, runs[r.name], toy, start, window, seed) for r in chosen]
    return pd.DataFrame(rows), runs


def fit_exponents(lrs, l2s, values) -> dict[str, float]:
    """Fit log v = e·log(η/λ) + c (``ratio``), and log v = a·log η + b·log λ + c (``eta``,
    ``lam``) by least squares."""
    le, ll, lv = (np.log(np.asarray(v, float)) for v in (lrs, l2s, values))
    e = np.polyfit(le - ll, lv, 1)[0]
    a, b, _ = np.linalg.lstsq(np.stack([le, ll, np.ones_like(le)], 1), lv, rcond=None)[0]
    return {"ratio": float(e), "eta": float(a), "lam": float(b)}
