"""The ``l2bn`` command end to end: a smoke sweep in a subprocess, its cache, ``info``, ``--help``
and the handling of bad input."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from l2bn.cli import main
from l2bn.data import load_dataset
from l2bn.profiles import default_grid, get_profile

SMOKE = get_profile("smoke")
SWEEP = ["sweep", "--optimizer", "adam", "--profile", "smoke", "--dataset", "synthetic", "--device", "cpu",
         "--no-progress"]


def l2bn(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "l2bn", *args], capture_output=True, text=True,
                          timeout=timeout)


def results_in(out: Path) -> dict[str, float]:
    """The stored tables in ``out``, with their modification times."""
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("*.csv"))}


@pytest.fixture(scope="module")
def first_sweep(tmp_path_factory):
    """One smoke sweep through the CLI (about 4 models × 2 epochs on 512 images)."""
    out = tmp_path_factory.mktemp("results")
    proc = l2bn(*SWEEP, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_sweep_writes_a_table_and_its_provenance(first_sweep, swept_table):
    out, proc = first_sweep
    csv = swept_table(proc.stdout)
    assert csv.parent == out and csv.name.startswith("adam-")
    meta = json.loads(csv.with_suffix(".json").read_text())
    table = pd.read_csv(csv)

    lrs, l2s = default_grid("smoke", "adam")
    assert len(table) == len(lrs) * len(l2s) * SMOKE["epochs"]
    assert set(zip(table.lr, table.l2, strict=True)) == {(lr, l2) for lr in lrs for l2 in l2s}
    assert sorted(table.epoch.unique()) == list(range(1, SMOKE["epochs"] + 1))
    for column in ("model", "diverged", "train_loss", "val_err", "test_err", "unit_norm_0"):
        assert column in table.columns
    assert table.train_loss.notna().all()

    spec = meta["spec"]
    assert (spec["optimizer"], spec["profile"], spec["dataset"]) == ("adam", "smoke", "synthetic")
    assert spec["epochs"] == SMOKE["epochs"] and spec["lrs"] == lrs and spec["l2s"] == l2s
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|unknown", meta["git_commit"])
    assert meta["versions"]["torch"] == torch.__version__
    assert {"python", "numpy", "pandas", "l2bn"} <= meta["versions"].keys()
    assert meta["device"] == "cpu"
    assert meta["impl"] in ("wide", "rows", "loop")
    assert meta["wall_time_s"] > 0
    data = load_dataset("synthetic", spec["n_train"], spec["n_val"], spec["n_test"])
    assert meta["dataset"]["name"] == "synthetic"
    assert meta["dataset"]["checksum"] == data.checksum
    assert meta["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()  # the store's checksum
    assert csv.name in proc.stdout and "best validation error" in proc.stdout


def test_an_identical_sweep_reuses_the_cache(first_sweep):
    out, first = first_sweep
    before = results_in(out)
    proc = l2bn(*SWEEP, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "reusing cached result" in proc.stdout
    assert "wrote" not in proc.stdout
    assert results_in(out) == before  # nothing rewritten
    # The same summary as the run that computed it.
    assert proc.stdout.splitlines()[-3:] == first.stdout.splitlines()[-3:]


def test_a_different_epoch_count_is_not_reused(first_sweep, swept_table):
    out, _ = first_sweep
    before = results_in(out)
    proc = l2bn(*SWEEP, "--epochs", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "reusing" not in proc.stdout and "wrote" in proc.stdout
    assert swept_table(proc.stdout).name not in before
    assert pd.read_csv(swept_table(proc.stdout)).epoch.max() == 1
    assert {k: v for k, v in results_in(out).items() if k in before} == before


def test_info_runs_and_lists_cached_results(first_sweep):
    out, _ = first_sweep
    script = Path(sys.executable).with_name("l2bn")  # the installed console script
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "l2bn"]
    proc = subprocess.run([*cmd, "info", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert torch.__version__ in proc.stdout
    assert "CPU kernels of one-thread training: fused, built with " in proc.stdout
    for name in results_in(out):
        assert name in proc.stdout


@pytest.mark.parametrize(
    "argv, expected",
    [([], ["sweep", "info", "bench"]), (["sweep"], ["--optimizer", "--lrs", "--l2s", "--profile"]),
     (["info"], ["--fetch-cifar10"]), (["bench"], ["--ms", "--repeats"])],
    ids=["l2bn", "sweep", "info", "bench"],
)
def test_help(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: l2bn")
    for word in expected:
        assert word in text


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse reports its errors this way
        return exit_.code


BAD = [
    (["--lrs", "-1"], "lrs"),
    (["--lrs", "abc"], "lrs"),
    (["--l2s", "0.1,0.01"], "l2s"),
    (["--optimizer", "lbfgs"], "optimizer"),
    (["--epochs", "0"], "epochs"),
    (["--epochs", "two"], "epochs"),
    (["--dataset", "mnist"], "dataset"),
    (["--device", "tpu"], "device"),
    (["--profile", "huge"], "profile"),
]


@pytest.mark.parametrize("extra, param", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_naming_the_parameter(tmp_path, capsys, extra, param):
    out = tmp_path / "results"
    code = run_main([*SWEEP, "--out", str(out), *extra])  # a later option overrides an earlier one
    captured = capsys.readouterr()
    assert code != 0
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "error" in lines[0] and param in lines[0]
    assert "Traceback" not in captured.err
    assert not out.exists() or not any(out.rglob("*"))


def test_bad_input_in_a_subprocess_exits_non_zero_and_writes_nothing(tmp_path):
    out = tmp_path / "results"
    proc = l2bn(*SWEEP, "--out", str(out), "--lrs", "-1", timeout=300)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "lrs" in proc.stderr
    assert not out.exists() or not any(out.rglob("*"))
