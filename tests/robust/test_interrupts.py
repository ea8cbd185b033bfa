"""Interrupted sweeps: SIGKILL at any moment or at an exact rename, Ctrl-C, an exception after a
checkpoint; the same command then resumes, keeping the implementation and the divergence of the
interrupted run, and ends bitwise where an unbroken run ends."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time

import pandas as pd
import pytest
import torch
from robust_support import (
    CLI_EPOCHS,
    METRICS,
    assert_same_as_baseline,
    ckpt_epoch,
    cli_args,
    cli_env,
    files_of,
    interrupted,
    kill,
    leftovers,
    listing,
    run_cli,
    start,
    sweep,
    tiny_spec,
    wait_until,
)

import l2bn.train
from l2bn.results import sidecar
from l2bn.spec import code_version

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals, flock and fork semantics of POSIX")


# ---------------------------------------------------------------------------------------------
# SIGKILL and Ctrl-C of the real command, then the same command again
# ---------------------------------------------------------------------------------------------


def test_sigkill_at_timed_moments_then_resume_matches_unbroken_run(files, cli_root, baseline):
    """Three kills of `python -m l2bn sweep` (while starting, as the first checkpoint appears, in the
    middle of an epoch), then the same command to the end: the table is bitwise an unbroken run's."""
    out = cli_root / "timed"
    env = cli_env(cli_root)
    args = cli_args(files["cli"], out)

    # 1. As soon as the lock is taken: loading data, choosing the implementation or in epoch 1.
    p = start(args, env)
    assert wait_until(lambda: files_of(out)["lock"] is not None, p)
    assert kill(p)[0] == -signal.SIGKILL

    # 2. The instant the first checkpoint exists.
    p = start(args, env)
    assert wait_until(lambda: files_of(out)["ckpt"] is not None, p)
    assert kill(p)[0] == -signal.SIGKILL

    # 3. In the middle of the epoch after the next two checkpoints, timed by the interval between
    # them in this same run: the baseline's wall time per epoch also holds its start (data, the
    # pass race, building the fused kernel), several epochs of the CLI's tiny network.
    p = start(args, env)
    first = ckpt_epoch(out)
    assert first == 1  # step 2 killed the sweep the instant its first checkpoint appeared
    assert wait_until(lambda: ckpt_epoch(out) > first, p)
    t0 = time.monotonic()
    assert wait_until(lambda: ckpt_epoch(out) > first + 1, p)
    time.sleep(0.4 * (time.monotonic() - t0))
    rc, so, _ = kill(p)
    assert "resuming from checkpoint" in so and "cannot resume" not in so
    assert rc == -signal.SIGKILL, "the sweep ended before it could be killed"
    assert ckpt_epoch(out) == first + 2 < CLI_EPOCHS

    # 4. The same command again, to the end.
    rc, so, se = run_cli(args, env)
    assert rc == 0, se
    assert "resuming from checkpoint" in so and "cannot resume" not in so
    meta = assert_same_as_baseline(out, baseline)
    assert meta["resumed_from_epoch"] >= 2


# (suffix of the renamed file, which rename, before or after it, what the files look like after the kill)
EXACT_KILLS = [
    (".pt.sha256", 1, "before"),  # epoch 1's checkpoint is a temporary file, nothing renamed yet
    (".pt", 2, "before"),  # epoch 2's checksum file is in place, its checkpoint is not
    (".pt", 1, "after"),  # epoch 2 (resumed from 1) fully written
    (".json", 1, "after"),  # the result's sidecar is written (the store renames it first), its table is not
    (".csv", 1, "after"),  # table and sidecar written, the checkpoint not yet removed
]


def test_sigkill_at_every_rename_then_resume_matches_unbroken_run(files, cli_root, baseline):
    """Five kills, each at an exact rename of a checkpoint, checksum file, table or sidecar; after each
    the same command goes on from what is on disk and the end result is bitwise an unbroken run's."""
    out = cli_root / "exact"
    env = cli_env(cli_root)
    args = cli_args(files["cli"], out)
    outputs = []
    for suffix, n, when in EXACT_KILLS:
        rc, so, se = run_cli(args, env, helper=True, L2BN_TEST_ACTION="kill", L2BN_TEST_WHEN=when,
                             L2BN_TEST_SUFFIX=suffix, L2BN_TEST_N=str(n))
        assert rc == -signal.SIGKILL, (suffix, n, when, se)
        outputs.append(so)
        f = files_of(out)
        temporaries = [p for p in listing(out) if p.endswith(".tmp")]
        if (suffix, when) == (".pt.sha256", "before"):
            assert f["ckpt"] is None and temporaries
        elif (suffix, n, when) == (".pt", 2, "before"):
            side = json.loads(f["ckpt_sum"].read_text())
            assert side["epoch"] == 2
            assert hashlib.sha256(f["ckpt"].read_bytes()).hexdigest() == side["previous_sha256"]
        elif (suffix, when) == (".pt", "after"):
            side = json.loads(f["ckpt_sum"].read_text())
            assert hashlib.sha256(f["ckpt"].read_bytes()).hexdigest() == side["sha256"]
        elif (suffix, when) == (".json", "after"):
            assert f["json"] is not None and f["csv"] is None and f["ckpt"] is not None
        else:
            assert f["csv"] is not None and f["json"] is not None and f["ckpt"] is not None
    # Each run after the first found the previous one's checkpoint intact and resumed from it.
    assert "resuming" not in outputs[0] and "resuming" not in outputs[1]
    for so in outputs[2:]:
        assert "resuming from checkpoint" in so and "cannot resume" not in so, so
    assert "ignoring damaged result" in outputs[4] and "missing" in outputs[4]

    rc, so, se = run_cli(args, env)
    assert rc == 0, se
    assert "reusing cached result" in so
    assert_same_as_baseline(out, baseline)


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(files, cli_root, baseline):
    out = cli_root / "sigint"
    env = cli_env(cli_root)
    args = cli_args(files["cli"], out)
    p = start(args, env)
    assert wait_until(lambda: files_of(out)["ckpt"] is not None, p)
    rc, so, se = kill(p, signal.SIGINT)
    assert rc == 130, se
    assert "Traceback" not in se and "KeyboardInterrupt" not in se
    assert "interrupted" in se and "run the same command again" in se
    assert "l2bn sweep --optimizer adam --profile smoke" in se  # the command to run
    f = files_of(out)
    assert f["lock"] is None and f["ckpt"] is not None and f["csv"] is None
    assert not [p for p in listing(out) if p.endswith(".tmp")]

    rc, so, se = run_cli(args, env)
    assert rc == 0, se
    assert "resuming from checkpoint" in so
    assert assert_same_as_baseline(out, baseline)["resumed_from_epoch"] >= 1


# ---------------------------------------------------------------------------------------------
# In-process interruption: what a checkpoint holds, resuming keeps impl and divergence
# ---------------------------------------------------------------------------------------------


def test_a_checkpoint_holds_everything_a_resume_needs(ckpt_case):
    spec, _, src = ckpt_case
    f = files_of(src)
    ck = torch.load(f["ckpt"], weights_only=True)
    side = json.loads(f["ckpt_sum"].read_text())
    assert hashlib.sha256(f["ckpt"].read_bytes()).hexdigest() == side["sha256"]
    assert side["epoch"] == ck["epoch"] == 1
    assert ck["spec"] == spec.to_dict() and ck["code_version"] == code_version()
    assert ck["impl"] == "wide" and ck["device_type"] == "cpu"
    steps = spec.n_train // spec.batch_size
    assert ck["opt"]["t"] == steps  # the step count (Adam's bias correction needs it)
    assert ck["gen"].dtype == torch.uint8  # data order and augmentation
    assert not torch.equal(ck["net"]["running_mean0"], torch.zeros_like(ck["net"]["running_mean0"]))
    assert ck["alive"].dtype == torch.bool and ck["alive"].shape == (spec.n_models,)
    assert len(ck["rows"]) == spec.n_models and ck["elapsed"] > 0
    assert ck["diverged_epoch"] == [None] * spec.n_models


def test_resume_from_an_intact_checkpoint_matches_unbroken_run(ckpt_case, tmp_path):
    spec, unbroken, src = ckpt_case
    out = tmp_path / "out"
    shutil.copytree(src, out)
    res, log = sweep(spec, out)
    assert log.has("resuming from checkpoint") and not log.has("cannot resume")
    assert res.provenance["resumed_from_epoch"] == 1
    pd.testing.assert_frame_equal(res.table, unbroken, check_exact=True)
    assert leftovers(out) == []


def test_resume_keeps_the_implementation_of_the_checkpoint(files, tmp_path, monkeypatch):
    spec = tiny_spec(files["tiny"], epochs=3)
    unbroken_loop = sweep(spec, tmp_path / "unbroken", impl="loop")[0].table
    interrupted(spec, tmp_path / "a", impl="loop")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    res, log = sweep(spec, tmp_path / "a", impl="wide")  # asked for wide: the checkpoint says loop
    assert log.has("resuming with impl=loop") and res.provenance["impl"] == "loop"
    pd.testing.assert_frame_equal(res.table, unbroken_loop, check_exact=True)

    def no_measuring(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a resumed sweep must not measure the implementation again")

    monkeypatch.setattr(l2bn.train, "choose_impl", no_measuring)
    res, _ = sweep(spec, tmp_path / "b", impl="auto")
    assert res.provenance["impl"] == "loop"
    pd.testing.assert_frame_equal(res.table, unbroken_loop, check_exact=True)


def test_a_diverged_model_stays_diverged_across_a_resume(diverging, tmp_path):
    unbroken, _ = sweep(diverging, tmp_path / "unbroken")
    dead = unbroken.table[unbroken.table.model == 1]
    first = int(dead[dead.diverged].epoch.min())
    ck = interrupted(diverging, tmp_path / "out", n=first)  # the checkpoint right after divergence
    state = torch.load(ck, weights_only=True)
    assert state["alive"].tolist() == [True, False] and state["diverged_epoch"] == [None, first]
    res, log = sweep(diverging, tmp_path / "out")
    assert log.has("resuming from checkpoint")
    pd.testing.assert_frame_equal(res.table, unbroken.table, check_exact=True)
    assert res.table[(res.table.model == 1) & (res.table.epoch >= first)].diverged.all()


# ---------------------------------------------------------------------------------------------
# Determinism and the provenance of randomness
# ---------------------------------------------------------------------------------------------


TIME_FIELDS = {"started", "finished", "session_wall_time_s", "wall_time_s", "sidecar_sha256"}


def test_the_same_spec_and_seed_give_identical_results(files, tmp_path):
    spec = tiny_spec(files["tiny"], optimizer="adam", lrs=[1e-3, 1e-2], l2s=[0.0, 1e-3])
    a, _ = sweep(spec, tmp_path, force=True)
    a_csv, a_meta = a.path.read_bytes(), json.loads(sidecar(a.path).read_text())
    b, _ = sweep(spec, tmp_path, force=True)
    assert not b.reused
    b_meta = json.loads(sidecar(b.path).read_text())
    assert b.path.read_bytes() == a_csv
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    differing = {k for k in a_meta.keys() | b_meta.keys() if a_meta.get(k) != b_meta.get(k)}
    assert differing <= TIME_FIELDS, differing
    assert a_meta["seed"] == a_meta["spec"]["seed"] == spec.seed
    rnd = a_meta["randomness"]
    for part in (f"seed {spec.seed}", "initial weights", "data order", "augmentation", "validation split"):
        assert part in rnd, part
    other, _ = sweep(tiny_spec(files["tiny"], optimizer="adam", lrs=[1e-3, 1e-2], l2s=[0.0, 1e-3], seed=5),
                     tmp_path)
    assert other.path != a.path and not other.table[METRICS].equals(a.table[METRICS])
    assert "seed 5" in other.provenance["randomness"]
