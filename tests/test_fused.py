"""The fused batch normalisation, ReLU and pooling kernel (fused.py): PyTorch's numbers to float32
rounding, forward and backward, NaNs and ties included, and the rule that decides when a run uses it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import l2bn.fused as fused
from l2bn.errors import ParameterError
from l2bn.train import SweepSpec, train_grid

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _built(private_data_root):
    if fused.library() is None:
        pytest.fail("the fused kernel did not build: is a C compiler (cc or gcc) installed?")


def _native(h, gamma, beta, mean, var):
    return F.max_pool2d(F.relu(F.batch_norm(h, mean, var, gamma, beta, True, 0.1, 1e-5)), 2)


def _fused(h, gamma, beta, mean, var):
    return fused.batch_norm_relu_pool(h, gamma, beta, mean, var, 0.1, 1e-5)


def _run(f, h, gamma, beta, grad):
    """Output, running statistics and gradients of ``f`` on copies of the inputs."""
    h, gamma, beta = (t.clone().requires_grad_() for t in (h, gamma, beta))
    mean, var = torch.zeros(len(gamma)), torch.ones(len(gamma))
    out = f(h, gamma, beta, mean, var)
    out.backward(grad)
    return {"out": out.detach(), "mean": mean, "var": var, "dh": h.grad, "dgamma": gamma.grad,
            "dbeta": beta.grad}


def _inputs(n, c, size, seed=0, h=None):
    g = torch.Generator().manual_seed(seed)
    if h is None:
        h = torch.randn(n, c, size, size, generator=g) * 3 + 1
    gamma = torch.rand(c, generator=g) + 0.5
    gamma[0] = -0.7  # a negative scale flips which pixel of a window wins
    beta = torch.randn(c, generator=g) * 0.3
    grad = torch.randn(n, c, size // 2, size // 2, generator=g).contiguous(memory_format=torch.channels_last)
    return h.contiguous(memory_format=torch.channels_last), gamma, beta, grad


@pytest.mark.parametrize("n,c,size", [(64, 40, 32), (8, 5, 6), (3, 17, 4), (2, 1, 2)])
def test_the_fused_kernel_gives_pytorchs_numbers_forward_and_backward(n, c, size):
    h, gamma, beta, grad = _inputs(n, c, size)
    assert fused.applies(h)
    got, want = _run(_fused, h, gamma, beta, grad), _run(_native, h, gamma, beta, grad)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=2e-5, atol=2e-5, msg=k)
    assert got["out"].is_contiguous(memory_format=torch.channels_last)
    assert got["dh"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("c,size,cut", [(8, 16, 3), (16, 8, 5), (32, 4, 11), (64, 4, 40), (300, 2, 150)])
def test_each_channels_numbers_are_the_same_whichever_width_computes_them(c, size, cut):
    # The kernel sums the narrow layers (8 to 64 channels) in registers, and others LANES (256)
    # channels at a time, and computes their gradient with the width a constant; each channel must
    # get the same operations in the same order either way, so the layer computed whole and as two
    # slices of other widths agree bit for bit.
    h, gamma, beta, grad = _inputs(6, c, size, seed=c)
    whole = _run(_fused, h, gamma, beta, grad)
    pieces = [_run(_fused, *(t[:, s] if t.dim() == 4 else t[s] for t in (h, gamma, beta, grad)))
              for s in (slice(None, cut), slice(cut, None))]
    for k, v in whole.items():
        assert torch.equal(v, torch.cat([p[k] for p in pieces], dim=1 if v.dim() == 4 else 0)), k


def test_ties_and_windows_of_zeros_send_the_gradient_where_pytorch_does():
    # Every window holds one value four times (a tie), and half the channels are negative after
    # normalisation (windows of ReLU zeros): the gradient goes to the first pixel or nowhere.
    g = torch.Generator().manual_seed(1)
    coarse = torch.randn(4, 6, 4, 4, generator=g)
    h, gamma, beta, grad = _inputs(4, 6, 8, h=coarse.repeat_interleave(2, 2).repeat_interleave(2, 3))
    got, want = _run(_fused, h, gamma, beta, grad), _run(_native, h, gamma, beta, grad)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=2e-5, atol=2e-5, msg=k)
    assert (want["out"] == 0).any() and (got["dh"] != 0).any()


def test_a_nan_or_an_overflow_makes_its_channel_nan_as_in_pytorch():
    h, gamma, beta, grad = _inputs(4, 3, 8)
    h[1, 0, 2, 5] = float("nan")
    h[0, 2, 0, 0] = float("inf")
    got, want = _run(_fused, h, gamma, beta, grad), _run(_native, h, gamma, beta, grad)
    for k in ("out", "dh", "mean", "var"):
        assert torch.equal(got[k].isnan(), want[k].isnan()), k
    assert got["out"][:, 0].isnan().all() and got["out"][:, 2].isnan().all()
    assert not got["out"][:, 1].isnan().any()


def test_a_run_uses_the_fused_kernel_only_on_one_cpu_thread_in_float32(monkeypatch):
    monkeypatch.delenv("L2BN_KERNELS", raising=False)
    assert fused.run_kernels(CPU, "fp32") == "fused"
    assert fused.run_kernels(CPU, "bf16") == "native"
    assert fused.run_kernels(torch.device("cuda"), "fp32") == "native"
    torch.set_num_threads(2)
    try:
        assert fused.run_kernels(CPU, "fp32") == "native"
    finally:
        torch.set_num_threads(1)
    monkeypatch.setenv("L2BN_KERNELS", "native")
    assert fused.run_kernels(CPU, "fp32") == "native"
    monkeypatch.setenv("L2BN_KERNELS", "fast")
    message = r"^L2BN_KERNELS: unknown kernels 'fast'; choose one of native, fused$"
    with pytest.raises(ParameterError, match=message):
        fused.run_kernels(CPU, "fp32")


def test_without_a_compiler_or_with_a_failing_build_the_run_uses_pytorchs_kernels(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails
    assert fused.library.__wrapped__() is None
    assert not list(tmp_path.rglob("*.so"))
    monkeypatch.setattr(fused, "library", lambda: None)
    monkeypatch.delenv("L2BN_KERNELS", raising=False)
    assert fused.run_kernels(CPU, "fp32") == "native"


def test_info_says_which_kernels_and_why(monkeypatch):
    monkeypatch.delenv("L2BN_KERNELS", raising=False)
    assert fused.describe().startswith("fused, built with ")
    monkeypatch.setattr(fused, "library", lambda: None)
    assert fused.describe().startswith("native (building bn_relu_pool.c with ")
    monkeypatch.setattr(fused, "_compiler", lambda: None)
    assert fused.describe() == "native (no C compiler: install gcc, or set CC, for the fused kernel)"
    monkeypatch.setenv("L2BN_KERNELS", "native")
    assert fused.describe() == "native (L2BN_KERNELS=native)"


def test_a_grid_trained_with_either_kernels_agrees_and_says_which(make_dataset, monkeypatch):
    spec = SweepSpec.from_profile("smoke", "sgd", "synthetic", n_train=128, n_val=32, n_test=32, epochs=1,
                                  batch_size=32, lrs=[0.1], l2s=[1e-3, 1e-2])
    data = make_dataset(128, 32, 32)
    tables = {}
    for kernels in fused.KERNELS:
        monkeypatch.setenv("L2BN_KERNELS", kernels)
        tables[kernels], facts = train_grid(spec, device="cpu", impl="rows", data=data, progress=False,
                                            log=lambda *_: None)
        assert facts["kernels"] == kernels
    for col in ("train_loss", "layer_norm_0", "unit_norm_3"):
        torch.testing.assert_close(torch.tensor(tables["fused"][col].to_numpy()),
                                   torch.tensor(tables["native"][col].to_numpy()), rtol=1e-4, atol=1e-6)


def test_in_evaluation_the_kernel_uses_the_running_statistics_as_pytorch_does():
    h, gamma, beta, _ = _inputs(16, 13, 8)
    g = torch.Generator().manual_seed(3)
    mean, var = torch.randn(13, generator=g), torch.rand(13, generator=g) + 0.1
    h[2, 4, 1, 6] = float("nan")
    kept = mean.clone(), var.clone()
    got = fused.batch_norm_relu_pool(h, gamma, beta, mean, var, 0.1, 1e-5, training=False)
    want = F.max_pool2d(F.relu(F.batch_norm(h, mean, var, gamma, beta, False, 0.1, 1e-5)), 2)
    assert torch.equal(got.isnan(), want.isnan()) and got.isnan().sum() == 1
    torch.testing.assert_close(got.nan_to_num(), want.nan_to_num(), rtol=2e-5, atol=2e-5)
    assert torch.equal(mean, kept[0]) and torch.equal(var, kept[1])  # evaluation changes nothing
    assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("impl", ["wide", "loop"])
def test_a_fused_net_evaluates_with_the_kernel_only_without_gradients(impl, monkeypatch):
    from l2bn.model import WideNet

    nets = {k: WideNet(3, (4, 8, 8, 16), seed=2, kernels=k) for k in fused.KERNELS}
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 3, 16, 16, generator=g).contiguous(memory_format=torch.channels_last)
    for net in nets.values():
        net.impl = impl
        net(x)  # a training pass moves the running statistics away from (0, 1)
        net.eval()
    calls = []
    kernel = fused.batch_norm_relu_pool
    monkeypatch.setattr(fused, "batch_norm_relu_pool", lambda *a: calls.append(a[-1]) or kernel(*a))
    with torch.inference_mode():
        logits = {k: net(x) for k, net in nets.items()}
    assert calls == [False] * (3 * (3 if impl == "loop" else 1))  # three pooled layers per block
    torch.testing.assert_close(logits["fused"], logits["native"], rtol=1e-4, atol=1e-5)
    calls.clear()
    nets["fused"](x)  # evaluation with gradients (not the book's): PyTorch's kernels
    assert calls == []
