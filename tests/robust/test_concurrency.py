"""Concurrent sweeps: a second process on the same spec is refused while the first runs, a stale
lock is taken over, and grids trained side by side in worker processes equal grids trained here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from robust_support import (
    assert_same_as_baseline,
    cli_args,
    cli_env,
    finish,
    leftovers,
    listing,
    start,
    sweep,
    tiny_spec,
    wait_until,
)

from l2bn import cli
from l2bn.data import DatasetError
from l2bn.executor import check, run_specs
from l2bn.results import SweepRunning, load_result, result_path

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals, flock and fork semantics of POSIX")


# ---------------------------------------------------------------------------------------------
# One spec, two processes
# ---------------------------------------------------------------------------------------------


def test_second_sweep_on_the_same_spec_is_refused_while_the_first_completes(files, cli_root, baseline,
                                                                          capsys):
    """The first sweep is held at its first checkpoint rename; a second one on the same spec is refused
    with a clear message and exit status 3 and changes no file; the first then completes correctly."""
    out = cli_root / "concurrent"
    env = cli_env(cli_root)
    args = cli_args(files["cli"], out)
    go = cli_root / "concurrent-go"
    first = start(args, {**env, "L2BN_TEST_ACTION": "pause", "L2BN_TEST_WHEN": "before",
                         "L2BN_TEST_SUFFIX": ".pt", "L2BN_TEST_N": "1", "L2BN_TEST_GO": str(go)},
                  helper=True)
    try:
        assert wait_until(lambda: Path(f"{go}.waiting").exists(), first)
        before = listing(out)
        assert cli.main(args) == 3
        err = capsys.readouterr().err
        assert "already running" in err and f"pid {first.pid}" in err
        assert len(err.strip().splitlines()) == 1
        assert listing(out) == before  # the refused sweep wrote, moved and removed nothing
    finally:
        go.write_text("go")
    rc, so, se = finish(first)
    assert rc == 0, se
    assert_same_as_baseline(out, baseline)
    assert cli.main(args) == 0
    assert "reusing cached result" in capsys.readouterr().out


def test_a_stale_lock_is_taken_over(files, tmp_path):
    spec = tiny_spec(files["tiny"])
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = result_path(spec, out).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    lock.write_text(str(dead.pid))
    res, log = sweep(spec, out)
    assert not res.reused and log.has("taking over the lock", str(dead.pid))
    assert leftovers(out) == []


def test_a_held_lock_refuses_in_process_and_writes_nothing(files, tmp_path):
    fcntl = pytest.importorskip("fcntl")

    spec = tiny_spec(files["tiny"])
    out = tmp_path / "out"
    lock = result_path(spec, out).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        holder.write("4242\n")
        holder.flush()
        before = listing(out)
        with pytest.raises(SweepRunning, match="already running.*pid 4242"):
            sweep(spec, out)
        assert listing(out) == before
    res, _ = sweep(spec, out)  # once the holder lets go
    assert not res.reused


# ---------------------------------------------------------------------------------------------
# Grids side by side
# ---------------------------------------------------------------------------------------------


def side_by_side(specs: list) -> None:
    """The specs' results through the local executor, two worker processes at a time."""
    check(run_specs(specs, device="cpu", progress=False, workers=2))


def test_grids_trained_side_by_side_equal_grids_trained_here(files, private_data_root, tmp_path):
    """Two missing grids trained in two worker processes store the same tables, bit for bit, as the
    same specs trained in this process on as many threads (one); a stored grid is not retrained."""
    specs = [tiny_spec(files["tiny"], optimizer=rule) for rule in ("sgd", "adam")]
    side_by_side(specs)
    stored = [load_result(result_path(s), spec=s) for s in specs]
    assert all(r is not None for r in stored)
    assert {r.provenance["threads"] for r in stored} == {1}
    for spec, r in zip(specs, stored, strict=True):
        here, _ = sweep(spec, tmp_path / "here", impl="auto")
        assert not here.reused
        pd.testing.assert_frame_equal(r.table, here.table, check_exact=True)
    before = listing(private_data_root / "results")
    side_by_side(specs)
    assert listing(private_data_root / "results") == before


def test_damaged_results_are_reported_and_recomputed_side_by_side(files, capsys):
    specs = [tiny_spec(files["tiny"], optimizer=rule) for rule in ("sgd", "adam")]
    side_by_side(specs)
    paths = [result_path(s) for s in specs]
    good = [p.read_bytes() for p in paths]
    for p, raw in zip(paths, good, strict=True):
        p.write_bytes(raw[: len(raw) // 2])
    capsys.readouterr()
    side_by_side(specs)
    out = capsys.readouterr().out
    for spec, p, raw in zip(specs, paths, good, strict=True):
        assert f"ignoring damaged result {p.name}" in out
        assert load_result(p, spec=spec) is not None
        assert p.read_bytes() == raw  # recomputed, the same numbers


def test_a_failing_grid_side_by_side_raises_its_own_error(files):
    specs = [tiny_spec(files["tiny"]), tiny_spec(files["missing_array"], optimizer="adam")]
    with pytest.raises(DatasetError, match="^dataset:"):
        side_by_side(specs)
