"""The wide network: scale invariance of its normalisations (§3 of the paper) and wide = loop.

The invariance tests run in float64. Normalisation divides by √(σ² + ε), so y(αw) = y(w) holds exactly
only as ε → 0; the forward-pass tests set ε to 1e-12 to check the exact property, the gradient test
keeps the library's ε and a tolerance that covers it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import l2bn.model
from l2bn.model import PASSES, WideNet, global_average_pool, max_pool, relu_pool
from l2bn.scale import unit_norms

WIDTHS = (4, 8, 8, 16)
M = 3


@pytest.fixture
def tiny_eps(monkeypatch):
    monkeypatch.setattr(l2bn.model, "EPS", 1e-12)


def make_net(norm: str, n_models: int = M, seed: int = 0, dtype=torch.float64, row: int = 2) -> WideNet:
    """A wide net whose models differ (every parameter perturbed per model); the rows pass computes
    them in blocks of ``row``."""
    net = WideNet(n_models, WIDTHS, norm, seed=seed, row=row).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=dtype))
    return net


def batch(n: int = 8, seed: int = 2, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, 16, 16, generator=g, dtype=dtype),
            torch.randint(0, 10, (n,), generator=g))


def log_uniform(shape, lo: float, hi: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 10 ** (lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64))


def scaled_copy(net: WideNet, per_unit: bool, seed: int = 3) -> WideNet:
    """A copy of ``net`` with every conv layer's weights scaled: each unit (output channel) of each
    model by its own α, or each model's whole layer by one α."""
    other = make_net(net.norm)
    other.load_state_dict(net.state_dict())
    with torch.no_grad():
        for i, w in enumerate(other.conv_weights):
            shape = (w.shape[0], w.shape[1] if per_unit else 1, 1, 1, 1)
            w.mul_(log_uniform(shape, -1, 2, seed + i))  # α from 0.1 to 100
    return other


def loss_of(net: WideNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = net(x)
    return F.cross_entropy(logits.flatten(0, 1), y.repeat(net.n_models), reduction="sum")


# ---------------------------------------------------------------------------------------------
# Scale invariance
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["batch", "weight"])
@pytest.mark.parametrize("per_unit", [True, False], ids=["per-unit", "per-layer"])
def test_batch_and_weight_norm_are_invariant_to_each_units_scale(tiny_eps, norm, per_unit):
    net = make_net(norm).train()
    x, _ = batch()
    out = net(x)
    torch.testing.assert_close(scaled_copy(net, per_unit)(x), out, rtol=1e-9, atol=1e-9)


def test_layer_norm_is_invariant_to_the_layers_scale_but_not_to_each_units(tiny_eps):
    net = make_net("layer").train()
    x, _ = batch()
    out = net(x)
    torch.testing.assert_close(scaled_copy(net, per_unit=False)(x), out, rtol=1e-9, atol=1e-9)
    changed = (scaled_copy(net, per_unit=True)(x) - out).abs().amax(dim=(1, 2))
    assert (changed > 1e-2).all(), changed  # every model's output moves


def test_without_normalisation_scale_matters(tiny_eps):
    """The control: a plain ReLU network is not scale invariant, so the tests above can fail."""
    net = make_net("none").train()
    x, _ = batch()
    assert not torch.allclose(scaled_copy(net, per_unit=False)(x), net(x), rtol=1e-3)


@pytest.mark.parametrize("norm", ["batch", "weight"])
def test_gradient_scales_as_one_over_alpha(norm):
    """∇L(αw) = ∇L(w)/α for the scaled layer (here the second conv, every model at once)."""
    x, y = batch()

    def grad_at(alpha: float) -> torch.Tensor:
        net = make_net(norm).train()
        with torch.no_grad():
            net.conv1.mul_(alpha)
        loss_of(net, x, y).backward()
        return net.conv1.grad

    g1 = grad_at(1.0)
    assert g1.abs().max() > 1e-3
    for alpha in (0.1, 10.0, 100.0, 1000.0):
        torch.testing.assert_close(alpha * grad_at(alpha), g1, rtol=1e-3, atol=1e-3 * g1.abs().max())


def unit_cosines(norm: str) -> torch.Tensor:
    """cos(w, ∇L(w)) for every unit of every layer and model."""
    net = make_net(norm).train()
    x, y = batch()
    loss_of(net, x, y).backward()
    return torch.cat([
        ((w * w.grad).flatten(2).sum(-1) / (unit_norms(w) * unit_norms(w.grad)).clamp_min(1e-300))
        .flatten()
        for w in net.conv_weights
    ])


@pytest.mark.parametrize("norm", ["batch", "weight"])
def test_gradient_is_orthogonal_to_each_unit(tiny_eps, norm):
    assert unit_cosines(norm).abs().max() < 1e-8


def test_gradient_is_not_orthogonal_without_normalisation():
    assert unit_cosines("none").abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------------


def test_every_model_starts_from_the_same_weights_whatever_m():
    one, many = WideNet(1, WIDTHS, seed=7), WideNet(4, WIDTHS, seed=7)
    other_seed = WideNet(1, WIDTHS, seed=8)
    for (name, p1), (_, pm) in zip(one.named_parameters(), many.named_parameters(), strict=True):
        assert pm.shape[0] == 4
        for m in range(4):
            assert torch.equal(pm[m], p1[0]), name
    assert not torch.equal(one.conv0, other_seed.conv0)


def test_parameter_roles():
    roles = {name: role for name, _, role in WideNet(2, WIDTHS).param_roles()}
    assert {n for n, r in roles.items() if r == "unit"} == {f"conv{i}" for i in range(4)}
    assert {n for n, r in roles.items() if r == "classifier"} == {"fc_w"}
    assert {n for n, r in roles.items() if r == "affine"} == (
        {f"gamma{i}" for i in range(4)} | {f"beta{i}" for i in range(4)} | {"fc_b"})


@pytest.mark.parametrize("bad", [{"norm": "group"}, {"widths": (4, 8, 8)}])
def test_bad_arguments_are_rejected(bad):
    with pytest.raises(ValueError):
        WideNet(2, **{"widths": WIDTHS, **bad})


# ---------------------------------------------------------------------------------------------
# Wide and loop forward passes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["batch", "weight", "layer", "none"])
def test_every_pass_gives_the_same_logits_and_gradients(norm):
    """The wide, rows (blocks of 2 and 1 of the 3 models) and loop passes agree to rounding."""
    x, y = batch(dtype=torch.float32)
    results = {}
    for impl in PASSES:
        net = make_net(norm, dtype=torch.float32)
        net.impl = impl
        loss = loss_of(net, x, y)
        loss.backward()
        net.eval()
        results[impl] = (net.train()(x).detach(), net.eval()(x).detach(),
                         {n: p.grad for n, p in net.named_parameters()}, dict(net.named_buffers()))
    wide_train, wide_eval, wide_grads, wide_bufs = results["wide"]
    assert wide_train.shape == (M, len(x), 10)
    # The models really differ, so a loop that ran model 0 M times would fail.
    assert not torch.allclose(wide_train[0], wide_train[1])
    for impl in ("rows", "loop"):
        train, evaluated, grads, bufs = results[impl]
        torch.testing.assert_close(train, wide_train, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(evaluated, wide_eval, rtol=1e-4, atol=1e-5)
        for name, g in wide_grads.items():
            torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5, msg=f"{impl} {name}")
        for name, b in wide_bufs.items():
            torch.testing.assert_close(bufs[name], b, rtol=1e-4, atol=1e-6, msg=f"{impl} {name}")


@pytest.mark.parametrize("impl", PASSES)
def test_batch_norm_running_statistics_update_per_model(impl):
    """Each model's running mean and variance are those of the same model run on its own."""
    x, _ = batch(dtype=torch.float32)
    net = make_net("batch", dtype=torch.float32)
    net.impl = impl
    singles = []
    for m in range(M):
        single = WideNet(1, WIDTHS, "batch")
        single.load_state_dict({k: v[m : m + 1].clone() for k, v in net.state_dict().items()})
        singles.append(single)
    for _ in range(2):
        net.train()(x)
        for single in singles:
            single.train()(x)
    for i in range(len(WIDTHS)):
        for kind, start in (("mean", 0.0), ("var", 1.0)):
            stats = getattr(net, f"running_{kind}{i}")
            assert not torch.allclose(stats, torch.full_like(stats, start))  # they moved
            assert not torch.allclose(stats[0], stats[1])  # and differ between models
            for m, single in enumerate(singles):
                torch.testing.assert_close(stats[m], getattr(single, f"running_{kind}{i}")[0],
                                           rtol=1e-4, atol=1e-6, msg=f"running_{kind}{i}, model {m}")
    # Evaluation mode then uses them: each model's eval logits are its single run's.
    wide_eval = net.eval()(x)
    for m, single in enumerate(singles):
        torch.testing.assert_close(wide_eval[m], single.eval()(x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_max_pool_without_gradients_equals_max_pool2d(size):
    """The inference pooling (four strided views) gives max_pool2d's values, NaNs and odd edges
    included, on channels-last activations as the network computes them."""
    h = torch.randn(3, 4, *size).contiguous(memory_format=torch.channels_last)
    h[0, 1, 2, 3] = float("nan")
    h[1, 2, 0:2, 0:2] = 0.5  # a tie
    with torch.no_grad():
        fast = max_pool(h)
    assert torch.equal(fast.isnan(), F.max_pool2d(h, 2).isnan())
    assert torch.equal(fast.nan_to_num(), F.max_pool2d(h, 2).nan_to_num())


@pytest.mark.parametrize("size", [(4, 4), (3, 5), (1, 1)])
def test_global_average_pool_has_the_values_and_gradient_of_the_mean_bit_for_bit(size):
    """The sum-then-divide pooling after the last ReLU equals ``mean`` over the image, values and
    gradients, on channels-last fp32 activations as the network computes them (NaN included)."""
    h = F.relu(torch.randn(64, 24, *size) * 3).contiguous(memory_format=torch.channels_last)
    h[0, 1, 0, 0] = float("nan")
    grad = torch.randn(64, 24)
    ours, theirs = (h.clone().requires_grad_() for _ in range(2))
    out, ref = global_average_pool(ours), theirs.mean(dim=(2, 3))
    out.backward(grad)
    ref.backward(grad)
    assert torch.equal(out.nan_to_num(), ref.nan_to_num()) and torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(ours.grad, theirs.grad)


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_relu_pool_has_the_values_and_gradient_of_relu_then_max_pool2d_bit_for_bit(size):
    """The masked pooled gradient equals autograd's of max_pool2d(relu(h)): NaNs, windows of zeros
    after the ReLU, ties of positive values, -0.0 gradients and odd edges included."""
    h = torch.randn(3, 4, *size).contiguous(memory_format=torch.channels_last)
    h[0, 1, 2, 3] = float("nan")
    h[1, 2, 0:2, 0:2] = 0.5  # a tie of positive values
    h[2, 0, 2:4, 2:4] = -1.0  # a window the ReLU sets to zero
    grad = torch.randn(3, 4, size[0] // 2, size[1] // 2)
    grad[0, 0, 0, 0] = -0.0
    grad[0, 1, 1, 1] = float("nan")
    ours, theirs = (h.clone().requires_grad_() for _ in range(2))
    out = relu_pool(ours)
    out.backward(grad)
    ref = F.max_pool2d(F.relu(theirs), 2)
    ref.backward(grad)
    assert torch.equal(out.nan_to_num(), ref.nan_to_num()) and torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(ours.grad.nan_to_num(), theirs.grad.nan_to_num())
    assert torch.equal(ours.grad.isnan(), theirs.grad.isnan())
    assert torch.equal(ours.grad.signbit(), theirs.grad.signbit())
    assert ours.grad.is_contiguous(memory_format=torch.channels_last)


def test_layer_norm_standardises_each_models_layer_per_image():
    """The fused kernel computes the written-out definition: each image's activations over all units
    of one model's layer, mean 0 and variance 1 (biased), then each unit's γ and β."""
    net = make_net("layer")
    with torch.no_grad():
        net.gamma0.uniform_(0.5, 2.0)
        net.beta0.normal_()
    h = torch.randn(5, M * WIDTHS[0], 6, 6, dtype=torch.float64)
    out = net._normalize(h, net.gamma0, net.beta0, 0, slice(None), M)
    g = h.reshape(5, M, -1)
    z = ((g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True)
                                                    + l2bn.model.EPS)).view_as(h)
    expected = z * net.gamma0.reshape(-1)[:, None, None] + net.beta0.reshape(-1)[:, None, None]
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_the_loop_pass_leaves_out_the_models_it_is_told_to_skip():
    """A skipped model (diverged, frozen) gets NaN logits and zero gradients; the others compute
    exactly what they compute when no model is skipped."""
    x, y = batch(dtype=torch.float32)
    net = make_net("batch", dtype=torch.float32)
    net.impl = "loop"
    full = net(x).detach()
    part = net(x, [False, True, False])
    assert torch.isnan(part[1]).all()
    assert torch.equal(part[[0, 2]].detach(), full[[0, 2]])
    F.cross_entropy(part[[0, 2]].reshape(-1, 10), y.repeat(2)).backward()
    assert (net.conv0.grad[1] == 0).all() and (net.conv0.grad[0] != 0).any()


@pytest.mark.parametrize("impl", PASSES)
def test_evaluation_pools_first_and_gives_the_same_logits_bit_for_bit(impl, monkeypatch):
    """In evaluation, pooling before batch normalisation and the ReLU gives the logits of
    normalising first, bit for bit: random running statistics, channel counts that leave a tail
    after the vector lanes, a NaN pixel, and a negative γ (that block normalises first)."""
    net = make_net("batch", dtype=torch.float32)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for i in range(len(WIDTHS)):
            getattr(net, f"running_mean{i}").copy_(torch.randn(M, WIDTHS[i], generator=g))
            getattr(net, f"running_var{i}").copy_(torch.rand(M, WIDTHS[i], generator=g) + 0.1)
        net.gamma1[1, 2] = -0.5
    net.eval()
    net.impl = impl
    x, _ = batch(dtype=torch.float32)
    x = x.contiguous(memory_format=torch.channels_last)
    x[0, 1, 3, 3] = float("nan")
    used, pool_first = [], WideNet._pool_first
    monkeypatch.setattr(WideNet, "_pool_first", lambda *a: used.append(pool_first(*a)) or used[-1])
    with torch.inference_mode():
        fast = net(x)
    assert True in used and False in used  # pooled first where it may, normalised first elsewhere
    monkeypatch.setattr(WideNet, "_pool_first", lambda *a: False)
    with torch.inference_mode():
        slow = net(x)
    assert fast.isnan().any() and not fast.isnan().all()
    assert torch.equal(fast.isnan(), slow.isnan()) and torch.equal(fast.nan_to_num(), slow.nan_to_num())
