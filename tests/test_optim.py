"""The vectorised update rules of ``l2bn.optim`` against ``torch.optim``, step for step.

λ follows the paper: the objective is L(w) + λ‖w‖², so torch's coupled ``weight_decay`` is 2λ. The
hyperparameters below differ from the defaults on purpose (and ε is large), so that a rule that
ignored them, or put ε inside the square root, would fail.
"""

from __future__ import annotations

import pytest
import torch

from l2bn.optim import GridOptimizer
from l2bn.rules import get_rule, trainable_rules
from l2bn.scale import normalize_units_, unit_norms

RULES = trainable_rules()

DT = torch.float64
STEPS = 6
HYPER = {
    "sgd": {},
    "momentum": {"rho": 0.8},
    "nesterov": {"rho": 0.7},
    "rmsprop": {"rho": 0.85, "eps": 1e-3},
    "adam": {"rho1": 0.8, "rho2": 0.95, "eps": 1e-3},
    "adamw": {"rho1": 0.8, "rho2": 0.95, "eps": 1e-3},
    "normalized_sgd": {},
}
# name, shape of one model's parameter, role (as WideNet.param_roles gives them)
PARAMS = [("conv", (4, 3, 3, 3), "unit"), ("fc_w", (5, 4), "classifier"), ("gamma", (4,), "affine")]


def torch_optimizer(rule: str, groups: list[dict], eta: float, hp: dict) -> torch.optim.Optimizer:
    """The torch.optim counterpart that ``rule``'s record names; each group carries its own
    ``weight_decay`` (= 2λ). Normalised SGD, which torch.optim lacks, is SGD plus the projection."""
    return get_rule(rule).torch_optimizer(groups, eta, 0.0, hp) or torch.optim.SGD(groups, lr=eta)


def make_loss(seed: int):
    """A small smooth non-convex loss of one model's parameters (a dict name → tensor)."""
    g = torch.Generator().manual_seed(seed)
    mats = {name: torch.randn(7, torch.Size(shape).numel(), generator=g, dtype=DT)
            for name, shape, _ in PARAMS}
    targets = {name: torch.randn(7, generator=g, dtype=DT) for name, _, _ in PARAMS}

    def loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
        total = 0
        for name, p in params.items():
            z = torch.tanh(mats[name] @ p.reshape(-1))
            total = total + ((z - targets[name]) ** 2).sum() + 0.1 * (p**4).sum()
        return total

    return loss


def initial_params(n_models: int) -> dict[str, torch.Tensor]:
    """Stacked starting points; model m's does not depend on how many models there are."""
    gens = [torch.Generator().manual_seed(100 + m) for m in range(n_models)]
    return {name: torch.stack([torch.randn(shape, generator=g, dtype=DT) for g in gens])
            for name, shape, _ in PARAMS}


def run_grid(rule: str, lrs: list[float], l2s: list[float], steps: int = STEPS, alive=None,
             scales=None):
    """Trajectory of M stacked models under GridOptimizer; model m minimises loss m; ``scales``
    gives the schedule's factor of η at each step (default 1)."""
    m = len(lrs)
    params = {k: v.clone().requires_grad_(True) for k, v in initial_params(m).items()}
    roles = [(name, params[name], role) for name, _, role in PARAMS]
    opt = GridOptimizer(rule, roles, torch.tensor(lrs, dtype=DT), torch.tensor(l2s, dtype=DT),
                        **HYPER[rule])
    losses = [make_loss(seed=10 + i) for i in range(m)]
    alive = torch.ones(m, dtype=torch.bool) if alive is None else alive
    trajectory = []
    for t in range(steps):
        for p in params.values():
            p.grad = None
        sum(losses[i]({k: v[i] for k, v in params.items()}) for i in range(m)).backward()
        opt.step(1.0 if scales is None else scales[t], alive)
        trajectory.append({k: v.detach().clone() for k, v in params.items()})
    return trajectory, opt


def run_torch(rule: str, eta: float, lam: float, model: int, steps: int = STEPS, scales=None,
              rescale_momentum: bool = False):
    """Trajectory of model ``model`` alone under the torch.optim counterpart of ``rule``, with the
    learning rate η·``scales[t]`` at step t. ``rescale_momentum`` multiplies torch's momentum
    buffer by η_old/η_new whenever η changes: the velocity form v = −η·buf of the paper."""
    params = {k: v[model].clone().requires_grad_(True) for k, v in initial_params(model + 1).items()}
    groups = [{"params": [params[name]], "weight_decay": 0.0 if role == "affine" else 2 * lam}
              for name, _, role in PARAMS]
    opt = torch_optimizer(rule, groups, eta, HYPER[rule])
    loss_fn = make_loss(seed=10 + model)
    trajectory = []
    scales = [1.0] * steps if scales is None else scales
    for t in range(steps):
        for group in opt.param_groups:
            if rescale_momentum and t and scales[t] != scales[t - 1]:
                for p in group["params"]:
                    opt.state[p]["momentum_buffer"] *= scales[t - 1] / scales[t]
            group["lr"] = eta * scales[t]
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()
        if rule == "normalized_sgd":  # §5.5: plain SGD, then every unit (and class row) to norm 1
            with torch.no_grad():
                normalize_units_(params["conv"], lead=1)
                normalize_units_(params["fc_w"], lead=1)
        trajectory.append({k: v.detach().clone() for k, v in params.items()})
    return trajectory


def assert_same_trajectory(grid_traj, torch_traj, model: int) -> None:
    assert len(grid_traj) == len(torch_traj) >= 5
    for t, (a, b) in enumerate(zip(grid_traj, torch_traj, strict=True)):
        for name in b:
            torch.testing.assert_close(a[name][model], b[name], rtol=1e-10, atol=1e-12,
                                       msg=lambda m, t=t, name=name: f"step {t + 1}, {name}: {m}")


def test_every_rule_is_covered():
    assert set(RULES) == set(HYPER)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_single_model_matches_torch_optim(rule):
    eta = 3e-2 if rule in ("rmsprop", "adam", "adamw") else 0.1
    lam = 0.05
    grid, _ = run_grid(rule, [eta], [lam])
    reference = run_torch(rule, eta, lam, model=0)
    assert_same_trajectory(grid, reference, model=0)
    # The parameters really moved (a rule that did nothing would match nothing above anyway).
    start = initial_params(1)
    assert all(not torch.equal(grid[-1][k], start[k]) for k in start)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_model_of_a_grid_follows_its_own_run(rule):
    adaptive = rule in ("rmsprop", "adam", "adamw")
    lrs = [1e-2, 3e-2, 1e-1] if adaptive else [0.03, 0.1, 0.2]
    l2s = [0.2, 0.0, 0.01]
    grid, _ = run_grid(rule, lrs, l2s)
    for m, (eta, lam) in enumerate(zip(lrs, l2s, strict=True)):
        assert_same_trajectory(grid, run_torch(rule, eta, lam, model=m), model=m)


def test_normalized_sgd_keeps_every_unit_at_norm_one():
    grid, _ = run_grid("normalized_sgd", [0.05, 0.5, 5.0], [0.0, 1e-2, 1.0])
    start = initial_params(3)  # off the unit sphere
    assert not torch.allclose(unit_norms(start["conv"]), torch.ones(3, 4, dtype=DT))
    for step in grid:
        torch.testing.assert_close(unit_norms(step["conv"]), torch.ones(3, 4, dtype=DT))
        # The classifier's rows are projected too; γ and β are left alone.
        torch.testing.assert_close(unit_norms(step["fc_w"]), torch.ones(3, 5, dtype=DT))
        assert not torch.allclose(step["gamma"], start["gamma"])


@pytest.mark.parametrize("rule", sorted(RULES))
def test_l2_never_acts_on_affine_parameters(rule):
    """With λ huge, the affine parameters follow exactly the trajectory they follow with λ = 0, while
    the regularised ones do not. (The loss is a sum over parameters, so their gradients are
    independent.)"""
    eta = 1e-2
    no_l2, _ = run_grid(rule, [eta], [0.0])
    big_l2, _ = run_grid(rule, [eta], [5.0])
    for a, b in zip(no_l2, big_l2, strict=True):
        assert torch.equal(a["gamma"], b["gamma"])
    # Normalised SGD projects conv units and classifier rows back to norm 1, but they still rotate.
    assert not torch.allclose(no_l2[-1]["fc_w"], big_l2[-1]["fc_w"])
    assert not torch.allclose(no_l2[-1]["conv"], big_l2[-1]["conv"])


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_dead_model_is_frozen(rule):
    lrs, l2s = [1e-2, 2e-2, 3e-2], [1e-3, 1e-2, 1e-1]
    dead = torch.tensor([True, False, True])
    # Two steps with every model alive, so that the optimiser state is non-zero, then model 1 dies.
    params = {k: v.clone().requires_grad_(True) for k, v in initial_params(3).items()}
    roles = [(name, params[name], role) for name, _, role in PARAMS]
    opt = GridOptimizer(rule, roles, torch.tensor(lrs, dtype=DT), torch.tensor(l2s, dtype=DT),
                        **HYPER[rule])
    losses = [make_loss(seed=10 + i) for i in range(3)]

    def step(alive):
        for p in params.values():
            p.grad = None
        sum(losses[i]({k: v[i] for k, v in params.items()}) for i in range(3)).backward()
        return opt.step(1.0, alive)

    for _ in range(2):
        step(torch.ones(3, dtype=torch.bool))
    frozen = {k: v.detach()[1].clone() for k, v in params.items()}
    frozen_state = {(n, k): v[1].clone() for n, s in opt.state.items() for k, v in s.items()}
    if rule in ("momentum", "nesterov", "rmsprop", "adam", "adamw"):
        assert frozen_state and all(v.abs().sum() > 0 for v in frozen_state.values())
    for _ in range(3):
        measures = step(dead)
        # the unit parameter's measures
        for key in ("angle_0", "angle_sq_0", "grad_sq_0", "layer_angle_sq_0"):
            assert measures[key][1] == 0 and measures[key][0] > 0, key
    for k, v in params.items():
        assert torch.equal(v.detach()[1], frozen[k]), k
        assert not torch.equal(v.detach()[0], initial_params(3)[k][0]), k
    for (n, k), v in frozen_state.items():
        assert torch.equal(opt.state[n][k][1], v), (n, k)


def test_unknown_rule_is_rejected():
    with pytest.raises(ValueError, match="optimizer"):
        GridOptimizer("lbfgs", [], torch.ones(1), torch.ones(1))


DROP = [1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]  # the schedule's ÷10 drops, mid-trajectory


@pytest.mark.parametrize("rule", sorted(RULES))
def test_learning_rate_drops_match_torch_optim(rule):
    """After a ÷10 drop of η, every rule matches torch.optim with the same learning rate, except the
    momentum rules: their velocity form v ← ρv − η∇L keeps the velocity at the old η, which is
    torch's buffer rescaled by η_old/η_new (the notation page says so)."""
    eta = 3e-2 if rule in ("rmsprop", "adam", "adamw") else 0.1
    grid, _ = run_grid(rule, [eta], [0.05], steps=len(DROP), scales=DROP)
    momentum = rule in ("momentum", "nesterov")
    plain = run_torch(rule, eta, 0.05, model=0, steps=len(DROP), scales=DROP)
    if momentum:
        assert not torch.allclose(grid[-1]["conv"][0], plain[-1]["conv"], rtol=1e-6)
        assert_same_trajectory(grid, run_torch(rule, eta, 0.05, model=0, steps=len(DROP), scales=DROP,
                                               rescale_momentum=True), model=0)
    else:
        assert_same_trajectory(grid, plain, model=0)


def test_the_squared_gradient_at_unit_norm_is_measured_and_ignores_the_scale(monkeypatch):
    """``grad_sq_i`` is the mean over a layer's units of ‖w‖²‖∇L(w)‖², the squared gradient at
    ‖w‖ = 1: the same on a BN network whose conv weights are all scaled by α = 10 (with BN's ε
    made negligible, which otherwise breaks the invariance at the 1e-4 level)."""
    import l2bn.model
    from l2bn.model import WideNet

    monkeypatch.setattr(l2bn.model, "EPS", 1e-12)

    x, y = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 10

    def measured(alpha: float) -> dict[str, torch.Tensor]:
        net = WideNet(2, (4, 4, 4, 4), "batch", seed=0).double()
        with torch.no_grad():
            for w in net.conv_weights:
                w.mul_(alpha)
        loss = torch.nn.functional.cross_entropy(net(x.double()).flatten(0, 1), y.repeat(2), reduction="sum")
        loss.backward()
        by_hand = [(unit_norms(w) * unit_norms(w.grad)).square().mean(dim=1) for w in net.conv_weights]
        opt = GridOptimizer("sgd", net.param_roles(), torch.tensor([0.1, 0.1]), torch.tensor([0.0, 0.0]))
        out = opt.step(1.0, torch.ones(2, dtype=torch.bool))
        for i, expected in enumerate(by_hand):
            torch.testing.assert_close(out[f"grad_sq_{i}"], expected)
        return out

    one, ten = measured(1.0), measured(10.0)
    for i in range(4):
        assert one[f"grad_sq_{i}"].min() > 0
        torch.testing.assert_close(one[f"grad_sq_{i}"], ten[f"grad_sq_{i}"], rtol=1e-6, atol=0)


def test_the_whole_layers_angle_is_measured_per_model():
    """``layer_angle_sq_i`` is the squared angle between a model's whole layer before and after the
    step (not a mean over units): computed here from the weights themselves."""
    from l2bn.model import WideNet

    net = WideNet(2, (4, 4, 4, 4), "layer", seed=0).double()
    x, y = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1)).double(), torch.arange(8) % 10
    torch.nn.functional.cross_entropy(net(x).flatten(0, 1), y.repeat(2), reduction="sum").backward()
    before = [w.detach().clone() for w in net.conv_weights]
    opt = GridOptimizer("sgd", net.param_roles(), torch.tensor([0.1, 1.0]), torch.tensor([1e-3, 1e-2]))
    out = opt.step(1.0, torch.ones(2, dtype=torch.bool))
    for i, (old, new) in enumerate(zip(before, net.conv_weights, strict=True)):
        a, b = old.flatten(1), new.detach().flatten(1)
        cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
        torch.testing.assert_close(out[f"layer_angle_sq_{i}"], torch.arccos(cos.clamp(-1, 1)).square(),
                                   rtol=1e-6, atol=1e-12)
        assert out[f"layer_angle_sq_{i}"][1] > out[f"layer_angle_sq_{i}"][0]  # η = 1 turns further
