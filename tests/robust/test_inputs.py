"""Bad input: a one-line error naming the parameter, a non-zero exit and no file written, from the
command line and from a notebook; random parameters are run or refused, never a crash."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from robust_support import cli_env, leftovers, listing, run_cli, run_main, sweep, tiny_spec, write_npz

from l2bn.data import DatasetError
from l2bn.model import NORMS
from l2bn.results import run_sweep
from l2bn.rules import trainable_rules
from l2bn.spec import SweepSpec, check_impl, resolve_device, validate_params

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals, flock and fork semantics of POSIX")


# ---------------------------------------------------------------------------------------------
# Bad input: a one-line error naming the parameter, a non-zero exit, no file written
# ---------------------------------------------------------------------------------------------


# Every parameter a validation message may name (the text before the first colon).
PARAMS = {"optimizer", "profile", "dataset", "device", "impl", "lrs", "l2s", "epochs", "batch_size",
          "n_train", "n_val", "n_test", "widths", "norm", "seed", "augment", "hyper", "out", "spec",
          "data", "precision"}


# (extra CLI arguments, the parameter the message must name); npz:<name> refers to ``files``.
CLI_BAD = [
    (["--lrs", "0"], "lrs"), (["--lrs", "-0.1"], "lrs"), (["--lrs", "nan"], "lrs"),
    (["--lrs", "inf"], "lrs"), (["--lrs", "0.1,1e999"], "lrs"), (["--lrs", ""], "lrs"),
    (["--lrs", "0.2,0.1"], "lrs"), (["--lrs", "0.1,0.1"], "lrs"), (["--lrs", "abc"], "--lrs"),
    (["--l2s=-1e-4"], "l2s"), (["--l2s", "-1e-4"], "l2s"), (["--l2s", "nan"], "l2s"),
    (["--l2s", "0.1,0.01"], "l2s"),
    (["--optimizer", "sgdd"], "--optimizer"), (["--profile", "huge"], "--profile"),
    (["--dataset", "imagenet"], "dataset"), (["--dataset", "npz:"], "dataset"),
    (["--dataset", "npz:/nonexistent/x.npz"], "dataset"),
    (["--device", "tpu"], "device"), (["--device", "cuda:x"], "device"), (["--device", "cuda:99"], "device"),
    (["--epochs", "0"], "epochs"), (["--epochs", "-2"], "epochs"), (["--epochs", "two"], "--epochs"),
    (["--seed", "-1"], "seed"), (["--seed", str(2**64)], "seed"), (["--seed", "1.5"], "--seed"),
    (["--norm", "group"], "--norm"), (["--impl", "fast"], "--impl"),
    (["--out", "FILE"], "out"),
    *[(["--dataset", f"npz:{name}"], "dataset") for name in (
        "missing_array", "float_images", "three_dim", "five_channels", "label_10", "label_negative",
        "label_float", "label_length", "tiny_images", "too_few", "not_npz")],
]


if not torch.cuda.is_available():
    CLI_BAD.append((["--device", "cuda"], "device"))


@pytest.mark.parametrize("extra,param", CLI_BAD, ids=[" ".join(a) for a, _ in CLI_BAD])
def test_a_bad_cli_parameter_is_one_line_naming_it_and_writes_nothing(files, tmp_path, capsys,
                                                                     private_data_root, extra, param):
    out = tmp_path / "out"
    if extra[0] == "--out":
        out.write_text("a file, not a folder")
        extra = ["--out", str(out)]
    extra = [f"npz:{files[a[4:]]}" if a.startswith("npz:") and a[4:] in files else a for a in extra]
    argv = ["sweep", "--optimizer", "sgd", "--profile", "smoke", "--dataset", f"npz:{files['cli']}",
            "--device", "cpu", "--no-progress", "--out", str(out), *extra]
    assert run_main(argv) == 2
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1, captured.err
    prefix = f"l2bn sweep: error: {'argument ' if param.startswith('--') else ''}{param}"
    assert lines[0].startswith(prefix), lines[0]
    if param in ("--optimizer", "--profile", "--norm", "--impl", "device", "dataset"):
        assert "choose" in lines[0] or "npz" in lines[0] or "GPU" in lines[0], lines[0]
    assert captured.out == ""
    assert (out.is_file() if extra[0] == "--out" else not out.exists())
    assert listing(private_data_root) == {}


def test_bad_input_through_the_real_command(files, tmp_path):
    env = cli_env(tmp_path)
    out = tmp_path / "out"
    argv = ["sweep", "--optimizer", "sgd", "--profile", "smoke", "--dataset", f"npz:{files['label_10']}",
            "--device", "cpu", "--out", str(out)]
    rc, so, se = run_cli(argv, env)
    assert rc == 2 and so == "" and "Traceback" not in se
    assert se.strip().splitlines() == [se.strip()] and se.startswith("l2bn sweep: error: dataset:")
    assert "labels" in se and not out.exists()


# (overrides of from_profile, the parameter the message must name)
API_BAD = [
    (dict(lrs=[0]), "lrs"), (dict(lrs=[-1.0]), "lrs"), (dict(lrs=[math.nan]), "lrs"),
    (dict(lrs=[math.inf]), "lrs"), (dict(lrs=[]), "lrs"), (dict(lrs=[0.2, 0.1]), "lrs"),
    (dict(lrs="0.1"), "lrs"), (dict(lrs=0.1), "lrs"), (dict(lrs=["a"]), "lrs"), (dict(lrs=[True]), "lrs"),
    (dict(l2s=[-1e-3]), "l2s"), (dict(l2s=[None]), "l2s"),
    (dict(optimizer="foo"), "optimizer"), (dict(optimizer=None), "optimizer"),
    (dict(profile="huge"), "profile"), (dict(profile=None), "profile"), (dict(profile=["smoke"]), "profile"),
    (dict(dataset="imagenet"), "dataset"), (dict(dataset=None), "dataset"), (dict(dataset=5), "dataset"),
    (dict(epochs=0), "epochs"), (dict(epochs=-1), "epochs"), (dict(epochs=1.5), "epochs"),
    (dict(epochs="2"), "epochs"), (dict(epochs=True), "epochs"),
    (dict(batch_size=1000), "batch_size"), (dict(batch_size=0), "batch_size"),
    (dict(n_train=0), "n_train"), (dict(n_train=60000, dataset="synthetic"), "n_train"),
    (dict(n_test=20000, dataset="synthetic"), "n_test"), (dict(n_val=-5), "n_val"),
    (dict(widths=(4, 8)), "widths"), (dict(widths=5), "widths"), (dict(widths=(0, 1, 1, 1)), "widths"),
    (dict(norm="group"), "norm"),
    (dict(seed=-1), "seed"), (dict(seed=2**64), "seed"), (dict(seed=1.5), "seed"),
    (dict(hyper={"rho": 2.0}, optimizer="momentum"), "hyper"), (dict(hyper={"bogus": 1.0}), "hyper"),
    (dict(hyper="x"), "hyper"), (dict(hyper={"eps": -1.0}, optimizer="adam"), "hyper"),
    (dict(hyper={"rho": math.nan}, optimizer="momentum"), "hyper"),
    (dict(augment="yes"), "augment"), (dict(colour=True), "colour"),
]


@pytest.mark.parametrize("kw,param", API_BAD, ids=[f"{p}-{i}" for i, (_, p) in enumerate(API_BAD)])
def test_a_bad_notebook_parameter_is_a_one_line_value_error_naming_it(kw, param):
    kw = dict(kw)
    profile, optimizer = kw.pop("profile", "smoke"), kw.pop("optimizer", "sgd")
    with pytest.raises(ValueError) as err:
        SweepSpec.from_profile(profile, optimizer, **kw)
    msg = str(err.value)
    assert msg.startswith(f"{param}:") and "\n" not in msg, msg


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "CPU", "", None, 0, "cuda:99"]
                         + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"]))
def test_a_bad_device_is_a_one_line_value_error(device):
    with pytest.raises(ValueError, match=r"^device: [^\n]*(choose|GPU)[^\n]*$"):
        resolve_device(device)


def test_bad_impl_and_spec_are_value_errors():
    with pytest.raises(ValueError, match="^impl: .*choose one of auto, wide, rows, loop"):
        check_impl("fast")
    with pytest.raises(ValueError, match="^spec: "):
        validate_params({"optimizer": "sgd"})


def test_batch_normalisation_needs_two_values_per_channel(files, tmp_path):
    """8×8 images leave a 1×1 last layer: batch_size 1 would crash batch norm, so it is refused."""
    spec = tiny_spec(files["tiny"], batch_size=1)
    with pytest.raises(ValueError, match="^batch_size: "):
        sweep(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    fine = tiny_spec(files["tiny"], batch_size=1, norm="none", epochs=1)
    assert not sweep(fine, tmp_path / "ok")[0].reused


def test_layer_norm_trains_on_augmented_batches(files, tmp_path):
    sweep(tiny_spec(files["tiny"], norm="layer", epochs=1), tmp_path)


# ---------------------------------------------------------------------------------------------
# Property tests: random parameters are run or refused with a message naming one, never a crash
# ---------------------------------------------------------------------------------------------


_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.just(True),
                     st.text(max_size=3), st.none())


_grid = st.one_of(st.none(), st.lists(_numbers, max_size=4), st.floats(), st.text(max_size=4))


_count = st.one_of(st.none(), st.integers(-2, 70000), st.floats(-1, 100), st.just("8"), st.just(False))


def _check_rejection(err: Exception) -> None:
    msg = str(err)
    assert "\n" not in msg, msg
    assert msg.split(":", 1)[0] in PARAMS, msg


@settings(max_examples=150, deadline=None)
@given(
    profile=st.sampled_from(["smoke", "quick", "paper", "huge", None, 3]),
    optimizer=st.sampled_from([*trainable_rules(), "foo", None]),
    dataset=st.sampled_from(["synthetic", "cifar10", "npz:x.npz", "imagenet", "", None, "npz:"]),
    lrs=_grid, l2s=_grid, epochs=_count, batch_size=_count, n_train=_count, n_val=_count, n_test=_count,
    widths=st.one_of(st.none(), st.lists(st.integers(-1, 64), max_size=5), st.integers(),
                     st.text(max_size=2)),
    norm=st.sampled_from([*NORMS, "group", None, 1]),
    seed=st.one_of(st.none(), st.integers(-5, 2**65), st.floats(0, 10)),
    hyper=st.one_of(st.none(), st.dictionaries(st.sampled_from(["rho", "rho1", "rho2", "eps", "bogus"]),
                                               st.floats(allow_nan=True), max_size=3), st.text(max_size=2)),
    device=st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:7", "tpu", "", None]),
    impl=st.sampled_from(["auto", "wide", "loop", "fast", None]),
)
def test_property_the_validator_accepts_or_names_a_parameter(profile, optimizer, dataset, device, impl,
                                                             **kw):
    try:
        spec = SweepSpec.from_profile(profile, optimizer, dataset, **kw)
        validate_params(spec, device, impl)
    except ValueError as err:
        _check_rejection(err)


@pytest.fixture(scope="module")
def hyp_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hyp")
    return {
        "good": write_npz(d / "good.npz", n_train=64, n_test=16),
        "bad_dtype": write_npz(d / "bad_dtype.npz", x_train=np.zeros((64, 8, 8, 3), np.float32)),
        "bad_labels": write_npz(d / "bad_labels.npz", n_train=64, y_train=np.full(64, 11)),
        "missing": write_npz(d / "missing.npz", x_test=None),
    }


def _sorted_grid(low: float, high: float, size: int) -> st.SearchStrategy:
    return st.lists(st.floats(low, high), min_size=1, max_size=size, unique=True).map(sorted)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_a_one_step_sweep_runs_or_is_refused_before_writing(hyp_files, data):
    """Each parameter is valid nine times in ten and anything at all the tenth (so that about a third of
    the examples train a one-epoch sweep and the rest are refused, for one reason or several)."""

    def draw(good: st.SearchStrategy, bad: st.SearchStrategy, label: str) -> object:
        is_bad = data.draw(st.integers(0, 9), label=f"{label} bad?") == 5  # not 0: hypothesis favours it
        return data.draw(bad if is_bad else good, label=label)

    good, absent = hyp_files["good"], hyp_files["good"].with_name("absent.npz")
    dataset = draw(st.just(f"npz:{good}"), st.sampled_from(
        [f"npz:{hyp_files[k]}" for k in ("bad_dtype", "bad_labels", "missing")]
        + [f"npz:{absent}", "imagenet", "npz:"]), "dataset")
    n_train = draw(st.integers(1, 40), st.integers(-1, 70), "n_train")
    kw = dict(
        lrs=draw(_sorted_grid(1e-4, 1e9, 3), st.lists(st.one_of(
            st.floats(-1, 1e9), st.sampled_from([math.nan, math.inf, -math.inf, 0.0])), max_size=3), "lrs"),
        l2s=draw(_sorted_grid(0, 10, 2), st.lists(st.one_of(
            st.floats(-0.1, 10), st.sampled_from([math.nan, -1e-3])), max_size=2), "l2s"),
        epochs=draw(st.just(1), st.integers(-2, 0), "epochs"),
        n_train=n_train,
        batch_size=draw(st.sampled_from(sorted({n_train, max(n_train // 2, 1), 2})),
                        st.integers(-1, 70), "batch_size"),
        n_val=draw(st.integers(1, 8), st.integers(-1, 40), "n_val"),
        n_test=draw(st.integers(1, 16), st.integers(-1, 20), "n_test"),
        widths=draw(st.sampled_from([(1, 1, 1, 1), (2, 1, 2, 1)]),
                    st.sampled_from([(2, 2, 0, 2), (1, 1, 1), (1, 1, 1, 1, 1), (-1, 1, 1, 1)]), "widths"),
        norm=draw(st.sampled_from(NORMS), st.sampled_from(["group", "Batch", ""]), "norm"),
        seed=draw(st.integers(0, 2**63 - 1), st.integers(-(2**64), 2**65), "seed"),
        augment=data.draw(st.booleans(), label="augment"),
    )
    optimizer = draw(st.sampled_from(trainable_rules()), st.sampled_from(["foo", "Adam", ""]), "optimizer")
    no_gpu = [] if torch.cuda.is_available() else ["cuda"]
    device = draw(st.sampled_from(["cpu", "auto"] if not torch.cuda.is_available() else ["cpu"]),
                  st.sampled_from(["tpu", "cuda:x", "", *no_gpu]), "device")
    impl = draw(st.sampled_from(["wide", "loop", "auto"]), st.sampled_from(["fast", "", "WIDE"]), "impl")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        try:
            spec = SweepSpec.from_profile("smoke", optimizer, dataset, **kw)
            res = run_sweep(spec, device, impl, out, progress=False, log=lambda _: None)
        except (ValueError, DatasetError) as err:
            _check_rejection(err)
            event(f"refused: {str(err).split(':', 1)[0]}")
            assert not out.exists(), "a refused sweep wrote files"
            return
        event("ran")
        t = res.table
        assert len(t) == spec.n_models * spec.epochs and res.path.exists()
        assert t[t.diverged][["train_loss", "val_err"]].isna().all().all()
        assert leftovers(out) == []
