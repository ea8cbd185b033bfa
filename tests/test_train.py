"""Training a grid: M models at once equal M separate runs, and one diverging model harms no other.

Everything runs on the CPU on a small random dataset of 16×16 images (the network pools globally, so
any size from 8×8 works): a few seconds per grid.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import pandas as pd
import pytest
import torch

from l2bn.model import PASSES, WideNet
from l2bn.optim import GridOptimizer
from l2bn.train import SweepSpec, train_grid, train_step

SIZES = {"epochs": 2, "n_train": 128, "n_val": 32, "n_test": 32, "batch_size": 32}
# Functions of the weights recorded after every epoch, and the training loss.
CONTINUOUS = ["train_loss"] + [f"{k}_{i}" for k in ("unit_norm", "layer_norm", "eta_eff", "angle")
                               for i in range(4)]
ERRORS = ["train_err", "val_err", "test_err"]
METRICS = CONTINUOUS + ERRORS


@pytest.fixture(scope="module")
def run(make_dataset):
    """run(optimizer, lrs, l2s, impl) -> train_grid's table on one small dataset, cached: several
    tests share the same runs."""
    data = make_dataset(SIZES["n_train"], SIZES["n_val"], SIZES["n_test"], seed=5, size=16)

    @functools.cache
    def train(optimizer: str, lrs: tuple[float, ...], l2s: tuple[float, ...], impl: str):
        spec = SweepSpec.from_profile("smoke", optimizer, lrs=list(lrs), l2s=list(l2s), **SIZES)
        table, facts = train_grid(spec, device="cpu", impl=impl, data=data, progress=False)
        assert facts["impl"] == impl or spec.n_models == 1
        return table

    return train


def by_model(table: pd.DataFrame, models) -> pd.DataFrame:
    return table[table.model.isin(models)].sort_values(["model", "epoch"]).reset_index(drop=True)


def assert_equal_to_rounding(rows: pd.DataFrame, other: pd.DataFrame, obj: str = "") -> None:
    """The same training up to float rounding: the continuous metrics to 1e-4 relative, the error
    rates to one image (an argmax decision can flip on rounding)."""
    pd.testing.assert_frame_equal(rows[CONTINUOUS], other[CONTINUOUS], check_exact=False,
                                  rtol=1e-4, atol=1e-7, obj=obj)
    pd.testing.assert_frame_equal(rows[ERRORS], other[ERRORS], check_exact=False, rtol=0,
                                  atol=1.01 / SIZES["batch_size"], obj=obj)


# ---------------------------------------------------------------------------------------------
# M models at once = M runs of one model
# ---------------------------------------------------------------------------------------------

LRS, L2S = (0.03, 0.3), (1e-4, 1e-2)


@pytest.mark.parametrize("impl", PASSES)
def test_a_grid_equals_separate_single_model_runs(run, impl):
    grid = run("momentum", LRS, L2S, impl)
    assert len(grid) == len(LRS) * len(L2S) * SIZES["epochs"]
    assert not grid.diverged.any()
    for model, (lr, l2) in enumerate((lr, l2) for lr in LRS for l2 in L2S):
        rows = by_model(grid, [model])
        # Model m of the grid has η = lrs[m // len(l2s)], λ = l2s[m % len(l2s)].
        assert (rows.lr == lr).all() and (rows.l2 == l2).all()
        single = by_model(run("momentum", (lr,), (l2,), "wide"), [0])  # one model: no loop
        assert list(rows.epoch) == list(single.epoch) == list(range(1, SIZES["epochs"] + 1))
        assert_equal_to_rounding(rows, single, obj=f"model {model} (η={lr}, λ={l2})")
    # The models really differ from each other, so matching each to its own run means something.
    last = grid[grid.epoch == SIZES["epochs"]]
    assert last.unit_norm_0.nunique() == len(last) and last.train_loss.nunique() == len(last)


# ---------------------------------------------------------------------------------------------
# Divergence
# ---------------------------------------------------------------------------------------------

HUGE = 1e10  # η for SGD: the weights overflow within the first epoch
KEEP = [0, 1]


@pytest.mark.parametrize("impl", ["wide", "loop"])
def test_a_diverging_model_is_marked_and_harms_no_other(run, impl):
    diverged = run("sgd", (0.03, 0.3, HUGE), (1e-2,), impl)
    benign = run("sgd", (0.03, 0.3, 1.0), (1e-2,), impl)

    bad = by_model(diverged, [2])
    assert bad.diverged.all() and (bad.lr == HUGE).all()
    first = bad.epoch.min()
    assert first == 1
    assert bad[METRICS].isna().all().all()
    good = by_model(diverged, KEEP)
    assert not good.diverged.any() and good[METRICS].notna().all().all()
    assert not by_model(benign, [2]).diverged.any()

    # Bitwise the same as a run whose third model behaves (same M, same slot).
    pd.testing.assert_frame_equal(good, by_model(benign, KEEP), check_exact=True)


def test_a_diverging_model_changes_nothing_compared_to_leaving_it_out_loop(run):
    """The loop pass runs each model at its own shape, so leaving a model out changes no arithmetic:
    bitwise the same."""
    diverged = run("sgd", (0.03, 0.3, HUGE), (1e-2,), "loop")
    without = run("sgd", (0.03, 0.3), (1e-2,), "loop")
    pd.testing.assert_frame_equal(by_model(diverged, KEEP), by_model(without, KEEP), check_exact=True)


def test_a_diverging_model_changes_nothing_compared_to_leaving_it_out_wide(run):
    """In the wide pass, M sets the number of channels, and oneDNN's convolution gradients block
    (and so round) differently for different channel counts even when no model diverges: leaving a
    model out agrees to rounding. Isolation itself is bitwise (the test above, at the same M)."""
    diverged = by_model(run("sgd", (0.03, 0.3, HUGE), (1e-2,), "wide"), KEEP)
    without = by_model(run("sgd", (0.03, 0.3), (1e-2,), "wide"), KEEP)
    assert not diverged.diverged.any()
    assert_equal_to_rounding(diverged, without)


@pytest.mark.parametrize("impl", ["rows", "loop"])
def test_a_step_with_every_model_dead_changes_nothing(impl):
    """The rows and loop passes leave out the blocks of dead models; with all of them dead nothing is
    computed, and the step returns NaN losses and no measures instead of failing in backward (found
    by the property test of tests/robust with η = 1.4e8 and two models)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
    net = WideNet(2, (4, 8, 8, 16), seed=3, row=1)
    net.impl = impl
    opt = GridOptimizer("sgd", net.param_roles(), torch.tensor([0.1, 0.2]), torch.tensor([1e-3, 1e-2]))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss, err, alive, measures = train_step(net, opt, x, y, 1.0, torch.zeros(2, dtype=torch.bool))
    assert torch.isnan(loss).all() and not alive.any() and measures == {} and err.shape == (2,)
    for name, value in net.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("impl", PASSES)
def test_nan_weights_in_a_middle_model_stay_in_that_model(impl):
    """One training step with model 1 of 3 poisoned (NaN weights): it is marked dead and frozen,
    and models 0 and 2 end bitwise where they end when model 1 is healthy."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)

    def one_step(poison: bool):
        net = WideNet(3, (4, 8, 8, 16), seed=3, row=2)  # rows: the poisoned model's block has two
        net.impl = impl
        if poison:
            with torch.no_grad():
                net.conv1[1, 0] = float("nan")
        opt = GridOptimizer("momentum", net.param_roles(), torch.tensor([0.1, 0.2, 0.3]),
                            torch.tensor([1e-3, 1e-3, 1e-2]))
        before = {k: v.clone() for k, v in net.state_dict().items()}
        alive = torch.ones(3, dtype=torch.bool)
        loss, _, alive, _ = train_step(net, opt, x, y, 1.0, alive)
        return loss, alive, before, net.state_dict(), opt.state

    loss, alive, before, after, state = one_step(poison=True)
    ref_loss, ref_alive, _, ref_after, ref_state = one_step(poison=False)
    assert alive.tolist() == [True, False, True] and ref_alive.all()
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()
    assert torch.equal(loss[[0, 2]], ref_loss[[0, 2]])
    for name, value in after.items():
        assert torch.equal(value[[0, 2]], ref_after[name][[0, 2]]), name
        if "running" not in name:  # the frozen model's weights do not move
            torch.testing.assert_close(value[1], before[name][1], rtol=0, atol=0, equal_nan=True)
    for name in state:
        assert torch.equal(state[name]["v"][[0, 2]], ref_state[name]["v"][[0, 2]]), name
        assert not state[name]["v"][1].any(), name  # its momentum never started


# ---------------------------------------------------------------------------------------------
# Precision: the faster paths compute the same thing
# ---------------------------------------------------------------------------------------------


def test_bf16_autocast_tracks_fp32_and_tf32_is_fp32_on_a_cpu(make_dataset):
    data = make_dataset(SIZES["n_train"], SIZES["n_val"], SIZES["n_test"], seed=5, size=16)

    def table(precision):
        spec = SweepSpec.from_profile("smoke", "momentum", lrs=[0.03], l2s=[1e-3], precision=precision,
                                      **SIZES)
        return train_grid(spec, device="cpu", impl="wide", data=data, progress=False)[0]

    fp32, bf16, tf32 = table("fp32"), table("bf16"), table("tf32")
    # bfloat16 keeps 8 bits of mantissa: the forward pass rounds at ~0.4%, and after two epochs the
    # training loss and the weights' scale still agree to a few percent.
    for col in ("train_loss", "unit_norm_0", "layer_norm_3"):
        assert bf16[col].to_numpy() == pytest.approx(fp32[col].to_numpy(), rel=0.05), col
    assert not bf16["train_loss"].equals(fp32["train_loss"])  # it really ran in bfloat16
    # TF32 only changes GPU matrix units: on a CPU the run is bitwise the fp32 one.
    pd.testing.assert_frame_equal(tf32[CONTINUOUS], fp32[CONTINUOUS])


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="^precision: unknown precision 'fp16'"):
        SweepSpec.from_profile("smoke", "sgd", precision="fp16")


def test_auto_impl_is_measured_once_then_remembered(make_dataset, tmp_path, monkeypatch):
    """The passes agree only to rounding, so a rerun must not re-race them: the first measurement is
    kept per machine and shape, and the rerun's numbers are bitwise the same."""
    import l2bn.train

    monkeypatch.setenv("L2BN_DATA", str(tmp_path))
    races = iter(["loop", "wide"])  # a second race would pick the other pass
    calls = []

    def race(net, x, y, repeats=5, precision="fp32", passes=(), seconds=None):
        calls.append(net.n_models)
        return next(races)

    monkeypatch.setattr(l2bn.train, "choose_impl", race)
    data = make_dataset(SIZES["n_train"], SIZES["n_val"], SIZES["n_test"], seed=5, size=16)
    spec = SweepSpec.from_profile("smoke", "nesterov", lrs=[0.01, 0.1], l2s=[1e-3], **SIZES)
    first, facts1 = train_grid(spec, device="cpu", data=data, progress=False)
    again, facts2 = train_grid(spec, device="cpu", data=data, progress=False)
    assert calls == [2] and facts1["impl"] == facts2["impl"] == "loop"
    pd.testing.assert_frame_equal(first, again)
    assert (tmp_path / "impl_choices.json").exists()


def test_a_grids_remembered_race_is_looked_up_without_loading_its_data(make_dataset, tmp_path,
                                                                       monkeypatch):
    """``grid_impl`` (the executor asks it once per grid before splitting) loads the data and races
    the passes only the first time; later grids of the same shape get the remembered pick at once."""
    import l2bn.train
    from l2bn.model import SPLITTABLE
    from l2bn.train import grid_impl

    monkeypatch.setenv("L2BN_DATA", str(tmp_path))
    data = make_dataset(SIZES["n_train"], SIZES["n_val"], SIZES["n_test"], seed=5, size=16)
    loads, races = [], iter(["loop", "rows"])  # a second race would pick the other pass
    monkeypatch.setattr(l2bn.train, "load_spec_data", lambda spec: loads.append(spec) or data)
    monkeypatch.setattr(l2bn.train, "choose_impl", lambda *a, **k: next(races))
    spec = SweepSpec.from_profile("smoke", "nesterov", lrs=[0.01, 0.1], l2s=[1e-3], **SIZES)
    other = SweepSpec.from_profile("smoke", "sgd", lrs=[0.1, 1.0], l2s=[1e-2], **SIZES)  # same shape
    assert [grid_impl(s, "cpu", passes=SPLITTABLE) for s in (spec, other, spec)] == ["loop"] * 3
    assert loads == [spec]


def test_the_race_keeps_each_passs_time_beside_its_pick(tmp_path, monkeypatch):
    """``remembered_impl`` stores the pass it picked and, under ``RACE_SECONDS``, the best time of
    each pass it raced, so that a pick can be explained; the fastest of those times is the pick."""
    import json

    from l2bn.train import RACE_SECONDS, remembered_impl

    monkeypatch.setenv("L2BN_DATA", str(tmp_path))
    net = WideNet(4, (4, 8, 8, 16), row=2)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    pick = remembered_impl(net, x, y, "fp32")
    choices = json.loads((tmp_path / "impl_choices.json").read_text())
    ((key, seconds),) = choices[RACE_SECONDS].items()
    assert choices[key] == pick and set(seconds) == set(PASSES)
    assert min(seconds, key=seconds.get) == pick and all(t > 0 for t in seconds.values())


def test_every_field_of_a_spec_is_declared_once_in_the_table_of_parameters():
    """``spec.PARAMS`` is the one list of what a sweep accepts: every field is in it, nothing else,
    and a spec built by hand is validated as one from ``from_profile``."""
    from dataclasses import fields, replace

    from l2bn.errors import ParameterError
    from l2bn.spec import PARAMS

    assert set(PARAMS) == {f.name for f in fields(SweepSpec)}
    spec = SweepSpec.from_profile("smoke", "adam")
    with pytest.raises(ParameterError, match=r"^hyper: adam has no hyperparameter 'rho'; adam takes rho1"):
        replace(spec, hyper=(("rho", 0.9),))
    with pytest.raises(ParameterError, match=r"^lrs: \[0.1, 0.01\] is not strictly increasing"):
        SweepSpec("sgd", (0.1, 0.01), (0.0,))


def test_errors_are_measured_before_each_drop_of_eta_and_training_is_unchanged(make_dataset):
    """``evaluate="phase_ends"`` (the default) measures the validation and test errors only after
    the last epoch at each η and after the last epoch; everything else, and those errors, are the
    numbers of a run that evaluates after every epoch."""
    data = make_dataset(SIZES["n_train"], SIZES["n_val"], SIZES["n_test"], seed=5, size=16)
    tables = {}
    for evaluate in ("phase_ends", "every"):
        spec = SweepSpec.from_profile("smoke", "nesterov", lrs=[0.03], l2s=[1e-3], **{**SIZES, "epochs": 5},
                                      evaluate=evaluate)
        tables[evaluate], _ = train_grid(spec, device="cpu", impl="loop", data=data, progress=False)
    few, every = tables["phase_ends"], tables["every"]
    measured = few.val_err.notna()
    assert few.epoch[measured].tolist() == [3, 4, 5]  # η drops after epochs 3 and 4 of 5
    assert few.test_err.notna().tolist() == measured.tolist() and every.val_err.notna().all()
    pd.testing.assert_frame_equal(few[measured], every[measured])
    pd.testing.assert_frame_equal(few.drop(columns=["val_err", "test_err"]),
                                  every.drop(columns=["val_err", "test_err"]))


def test_a_grid_name_carries_the_normalisation_and_decoupled_decay_its_own_lambda_grid():
    """``sgd@weight`` names the profile's SGD grid on a weight-normalised network; the batch-norm
    grid keeps the rule's bare name (its results keep their file names); AdamW trains on the
    profile's λ grid of decoupled decay."""
    from l2bn.errors import ParameterError
    from l2bn.profiles import get_profile
    from l2bn.spec import parse_grid

    spec = SweepSpec.for_grid("smoke", "sgd@weight")
    assert (spec.optimizer, spec.norm, spec.grid_name) == ("sgd", "weight", "sgd@weight")
    assert SweepSpec.for_grid("smoke", "sgd").grid_name == "sgd" and parse_grid("adam") == ("adam", "batch")
    assert SweepSpec.for_grid("smoke", "sgd@weight").lrs == SweepSpec.from_profile("smoke", "sgd").lrs
    assert list(SweepSpec.for_grid("quick", "adamw").l2s) == get_profile("quick")["decoupled_l2s"]
    with pytest.raises(ParameterError, match=r"^grid: unknown normalisation 'group' in 'sgd@group'"):
        SweepSpec.for_grid("smoke", "sgd@group")


# Allocates and frees a 64 MiB tensor four times and prints the page faults of the last allocation,
# with (argument "keep") or without reuse_freed_memory (the first two may each take new memory).
FAULTS = """
import resource, sys, torch
from l2bn.train import reuse_freed_memory
print(reuse_freed_memory() if sys.argv[1] == "keep" else "default")
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)  # 64 MiB, written whole, then freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
for _ in range(3):
    faults()
print(faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_memory_is_kept_for_the_next_step_and_the_provenance_says_so(make_dataset):
    def second_faults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                             check=True).stdout.split()
        return out[0], int(out[1])

    # glibc gives a 64 MiB block back on free and faults in all 16384 of its pages again.
    assert second_faults("default") == ("default", pytest.approx(16384, rel=0.1))
    setting, faults = second_faults("keep")
    assert setting == "kept" and faults < 100
    spec = SweepSpec.from_profile("smoke", "sgd", "synthetic", **SIZES)
    _, facts = train_grid(spec, device="cpu", data=make_dataset(128, 32, 32, size=16), progress=False)
    assert facts["malloc"] == "kept"
