"""The executors of ``l2bn.executor``: local worker processes and a real Slurm cluster, both behind
``run_specs``, store what a lone ``run_sweep`` stores, bit for bit on the same thread count; a
failing task is reported with its error and log while the others go on; a task cancelled mid-run
resumes from its epoch checkpoint when resubmitted, and a rerun submits only what is missing.

The Slurm test starts a one-node cluster on this machine (``tests/slurm_cluster.py``, once a
session). Where it cannot start, the test is skipped with the reason; under CI it fails instead.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import submitit
import torch
from slurm_cluster import ClusterError, SlurmCluster

from l2bn import cli
from l2bn.checkpoint import checkpoint_sidecar
from l2bn.data import DatasetError
from l2bn.errors import ParameterError
from l2bn.executor import (
    SlurmOptions,
    SweepsFailed,
    Task,
    _local_slots,
    _Run,
    check,
    executor_name,
    gpu_slots,
    local_parameters,
    run_specs,
    split_for_balance,
)
from l2bn.results import checkpoint_path, grid_parts, result_path, run_sweep
from l2bn.spec import SweepSpec


def write_npz(path: Path, n_train: int, n_test: int, size: int, drop: str | None = None) -> Path:
    """Random uint8 NHWC images and labels; ``drop`` leaves one array out (a malformed file)."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n_train, size, size, 3), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n_train),
              "x_test": rng.integers(0, 256, (n_test, size, size, 3), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n_test)}
    arrays.pop(drop, None)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("executor_npz")
    return {"smoke": write_npz(d / "smoke.npz", 800, 512, 16),  # room for the smoke profile's splits
            "tiny": write_npz(d / "tiny.npz", 96, 32, 8),
            "no_y_test": write_npz(d / "no_y_test.npz", 96, 32, 8, drop="y_test")}


def tiny_spec(npz: Path, rule: str = "sgd") -> SweepSpec:
    """Seconds of training: 2 models of widths 2 on 8×8 images, three steps an epoch."""
    return SweepSpec.from_profile("smoke", rule, f"npz:{npz}", lrs=[0.01, 0.1], l2s=[1e-4], epochs=2,
                                  batch_size=16, n_train=48, n_val=16, n_test=32, widths=(2, 2, 2, 2))


@pytest.fixture(autouse=True)
def _private_data_root(private_data_root: Path) -> Path:
    """Every test with its own data root (tests/conftest.py), on one thread as in every worker:
    CPU numbers depend on the thread count."""
    return private_data_root


pytestmark = pytest.mark.usefixtures("one_thread")


class Log(list):
    def __call__(self, msg: str) -> None:
        self.append(msg)

    def has(self, *parts: str) -> bool:
        return any(all(p in m for p in parts) for m in self)


def here(spec: SweepSpec, out: Path, impl: str) -> pd.DataFrame:
    """The table of ``spec`` computed in this process, on this process's one thread."""
    result = run_sweep(spec, device="cpu", impl=impl, out=out, progress=False, log=Log())
    assert not result.reused and result.provenance["threads"] == 1
    return result.table


# ---------------------------------------------------------------------------------------------
# local
# ---------------------------------------------------------------------------------------------


def test_a_failing_spec_is_reported_and_the_other_stored(npz, tmp_path):
    specs = [tiny_spec(npz["tiny"]), tiny_spec(npz["no_y_test"], "adam")]
    log = Log()
    good, bad = run_specs(specs, "local", device="cpu", impl="loop", out=tmp_path / "out",
                          progress=False, workers=2, log=log)
    assert good.state == "done" and good.result.provenance["threads"] == 1
    pd.testing.assert_frame_equal(good.result.table, here(specs[0], tmp_path / "here", "loop"),
                                  check_exact=True)
    assert bad.state == "failed" and isinstance(bad.exception, DatasetError)
    assert bad.error.startswith("dataset:") and "dataset:" in bad.log.read_text()
    assert log.has(f"sweep {bad.name} failed: dataset:", str(bad.log))
    assert not result_path(specs[1], tmp_path / "out").exists()
    with pytest.raises(DatasetError, match="^dataset:"):
        check([good, bad])


# The parts of a 3 × 2 grid cut in two: whole rows of η for the rows pass; for the loop pass, which
# computes each model on its own, three models each, so that the second row is cut in its middle.
PARTS = {"rows": [([0.01, 0.03], [1e-4, 1e-3]), ([0.1], [1e-4, 1e-3])],
         "loop": [([0.01], [1e-4, 1e-3]), ([0.03], [1e-4]), ([0.03], [1e-3]), ([0.1], [1e-4, 1e-3])]}


@pytest.mark.parametrize("impl", ["rows", "loop"])
def test_a_grid_that_would_leave_a_worker_idle_is_split_and_joined_bit_for_bit(npz, tmp_path, impl):
    """One grid on two workers: cut into sub-grids trained side by side, along η for the rows pass
    and inside a row for the loop pass; the joined table is byte for byte the whole grid's, and it
    is then reused."""
    # Two λ, so that the rows pass computes two models at once.
    spec = replace(tiny_spec(npz["tiny"], "nesterov"), lrs=(0.01, 0.03, 0.1), l2s=(1e-4, 1e-3))
    out, log = tmp_path / "out", Log()
    (task,) = run_specs([spec], "local", device="cpu", impl=impl, out=out, progress=False, workers=2,
                        log=log)
    meta = task.result.provenance
    assert task.state == "done" and [(p["lrs"], p["l2s"]) for p in meta["joined_from"]] == PARTS[impl]
    assert meta["impl"] == impl
    whole = run_sweep(spec, device="cpu", impl=impl, out=tmp_path / "here", progress=False, log=Log())
    assert result_path(spec, out).read_bytes() == whole.path.read_bytes()
    for part in grid_parts(spec, 2, whole_rows=impl == "rows"):  # each part is a stored result of its own
        assert result_path(part, out).exists()
    (again,) = run_specs([spec], "local", device="cpu", impl=impl, out=out, progress=False, workers=2,
                         log=log)
    assert again.state == "cached"


@pytest.mark.parametrize("impl", ["rows", "loop"])
def test_only_the_last_grid_is_cut_inside_its_rows_and_its_pieces_train_last(npz, tmp_path, impl):
    """Three 3 × 2 grids on two workers: each cut into two sub-grids of whole rows, except the
    last one on the loop pass, whose pieces of its middle row are the smallest parts, ordered last."""
    specs = [replace(tiny_spec(npz["tiny"], rule), lrs=(0.01, 0.03, 0.1), l2s=(1e-4, 1e-3))
             for rule in ("sgd", "nesterov", "adam")]
    runs, split = split_for_balance([Task(s) for s in specs], _Run("cpu", impl, str(tmp_path), False), 2,
                                    Log())
    assert [len(parts) for parts in split.values()] == [2, 2, 4 if impl == "loop" else 2]
    assert all(t.impl == impl and t.state == "pending" for t in runs)
    sizes = [4, 4, 2, 2, 2, 2, 1, 1] if impl == "loop" else [4, 4, 4, 2, 2, 2]
    assert [t.spec.n_models for t in runs] == sizes
    last = [t.spec for t in runs[-2:]]
    assert impl == "rows" or ([s.optimizer for s in last] == ["adam"] * 2
                              and [(s.lrs, s.l2s) for s in last] == [((0.03,), (1e-4,)), ((0.03,), (1e-3,))])


def test_the_split_decision_races_the_passes_on_a_workers_thread_count(npz, tmp_path, monkeypatch):
    """With ``impl='auto'`` the pass that decides the split is raced on the threads each worker will
    have (one of two), not on the parent's two: a race on two threads can pick the wide pass that a
    one-thread worker would not, and the grid would stay whole and leave a core idle."""
    import l2bn.train

    raced_on = []

    def race(net, x, y, repeats=5, precision="fp32", passes=(), seconds=None):
        raced_on.append((torch.get_num_threads(), tuple(passes)))
        return "loop"

    monkeypatch.setattr(l2bn.train, "choose_impl", race)
    spec = replace(tiny_spec(npz["tiny"], "nesterov"), lrs=(0.01, 0.03, 0.1))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (task,) = run_specs([spec], "local", device="cpu", impl="auto", out=tmp_path / "out",
                            progress=False, workers=2, log=Log())
    finally:
        torch.set_num_threads(before)
    assert raced_on[:1] == [(1, ("rows", "loop"))]  # the wide pass is not split
    assert task.state == "done" and len(task.result.provenance["joined_from"]) == 2


def test_a_wide_grid_stays_whole(npz, tmp_path):
    """The wide pass rounds differently for another number of models, so it is never split."""
    spec = replace(tiny_spec(npz["tiny"], "nesterov"), lrs=(0.01, 0.03, 0.1))
    (task,) = run_specs([spec], "local", device="cpu", impl="wide", out=tmp_path / "out",
                        progress=False, workers=2, log=Log())
    assert task.state == "done" and "joined_from" not in task.result.provenance
    assert not any(result_path(part, tmp_path / "out").exists() for part in grid_parts(spec, 2))


def test_a_failing_part_fails_its_whole_grid(npz, tmp_path):
    spec = replace(tiny_spec(npz["no_y_test"]), lrs=(0.01, 0.03, 0.1))
    (task,) = run_specs([spec], "local", device="cpu", impl="loop", out=tmp_path / "out",
                        progress=False, workers=2, log=Log())
    assert task.state == "failed" and isinstance(task.exception, DatasetError)
    assert not result_path(spec, tmp_path / "out").exists()


class Submissions(list):
    """The jobs ``submitit.LocalExecutor`` starts (``count_submissions``)."""


@pytest.fixture
def count_submissions(monkeypatch: pytest.MonkeyPatch) -> Submissions:
    jobs, submit = Submissions(), submitit.LocalExecutor.submit
    monkeypatch.setattr(submitit.LocalExecutor, "submit",
                        lambda self, *a, **k: jobs.append(submit(self, *a, **k)) or jobs[-1])
    return jobs


def test_each_local_worker_trains_grid_after_grid(npz, tmp_path, count_submissions):
    """Four grids on two workers start two processes, not four; every grid is stored as a lone
    run stores it, and the workers leave no queue and no logs behind."""
    specs = [replace(tiny_spec(npz["tiny"], rule), lrs=lrs) for rule in ("sgd", "adam")
             for lrs in ((0.01,), (0.1, 0.3))]
    out, log = tmp_path / "out", Log()
    tasks = run_specs(specs, "local", device="cpu", impl="loop", out=out, progress=False, workers=2, log=log)
    assert len(count_submissions) == 2
    assert [t.state for t in tasks] == ["done"] * 4
    for task in tasks:
        assert log.has("wrote", str(result_path(task.spec, out)))
        pd.testing.assert_frame_equal(task.result.table, here(task.spec, tmp_path / "here", "loop"),
                                      check_exact=True)
    assert not list((out / "jobs").iterdir())


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # a process that has just ended
            continue
    return found


def test_a_worker_killed_mid_grid_fails_that_grid_and_a_new_worker_trains_the_rest(
        npz, tmp_path, count_submissions):
    """SIGKILL to a worker while it trains: that grid fails with the worker's log and keeps its epoch
    checkpoint; a new worker takes the grids no one had claimed. A rerun resumes the killed grid
    and ends with the numbers of an unbroken run."""
    specs = [replace(tiny_spec(npz["smoke"], rule), epochs=10, n_train=256, batch_size=8)
             for rule in ("sgd", "nesterov", "adam", "rmsprop")]
    out = tmp_path / "out"
    killed: list[str] = []

    def kill_the_first_worker_mid_grid() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for claim in (out / "jobs").glob("queue-*/*.claim"):
                training = checkpoint_path(out / f"{claim.stem}.csv").exists()  # an epoch is kept
                if training and not claim.with_suffix(".out").exists():
                    for pid in children(int(claim.read_text())):  # the job's task, under its controller
                        os.kill(pid, signal.SIGKILL)
                    killed.append(claim.stem)
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_the_first_worker_mid_grid)
    watcher.start()
    log = Log()
    tasks = run_specs(specs, "local", device="cpu", impl="loop", out=out, progress=False, workers=2, log=log)
    watcher.join()
    assert len(killed) == 1
    (dead,) = [t for t in tasks if t.name == killed[0]]
    assert dead.state == "failed" and dead.error.startswith("the worker ended while training it")
    assert dead.log.exists() and log.has(f"sweep {dead.name} failed: the worker ended")
    assert checkpoint_path(result_path(dead.spec, out)).exists()
    assert sorted(t.state for t in tasks) == ["done", "done", "done", "failed"]
    assert len(count_submissions) == 3  # the two, and one in the killed worker's place
    again = run_specs(specs, "local", device="cpu", impl="loop", out=out, progress=False, workers=2, log=log)
    assert [t.state for t in again] == ["done" if t is dead else "cached" for t in tasks]
    resumed = again[tasks.index(dead)].result
    assert resumed.provenance["resumed_from_epoch"] > 0
    pd.testing.assert_frame_equal(resumed.table, here(dead.spec, tmp_path / "here", "loop"), check_exact=True)


def test_executor_names_and_slurm_options(tmp_path, monkeypatch):
    with pytest.raises(ParameterError, match="^executor: unknown executor 'pbs'; choose one of local, slurm"):
        executor_name("pbs")
    monkeypatch.setenv("L2BN_EXECUTOR", "slurm")
    assert executor_name() == "slurm" and executor_name("local") == "local"
    conf = tmp_path / "slurm.toml"
    conf.write_text('partition = "gpu"\ngpus_per_task = 1\narray_parallelism = 4\n')
    monkeypatch.setenv("L2BN_SLURM_CONFIG", str(conf))
    opts = SlurmOptions.load(array_parallelism=8, partition=None)  # None: the file's value stands
    assert (opts.partition, opts.gpus_per_task, opts.array_parallelism) == ("gpu", 1, 8)
    assert opts.cpus_per_task == 1  # not in the file: the default
    conf.write_text("gpus = 2\n")
    with pytest.raises(ParameterError, match="^slurm: unknown option 'gpus'"):
        SlurmOptions.load()
    with pytest.raises(ParameterError, match="^cpus_per_task: expected an integer ≥ 1; got 0"):
        SlurmOptions(cpus_per_task=0)
    with pytest.raises(ParameterError, match="^slurm: the options file .*absent.toml does not exist"):
        SlurmOptions.load(tmp_path / "absent.toml")


def test_local_workers_are_pinned_one_per_gpu(monkeypatch, tmp_path):
    """With several GPUs, one worker per GPU, each seeing only its own as CUDA_VISIBLE_DEVICES
    (numbered as this process sees them); a named GPU or a CPU run keeps its own count."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    run = _Run("auto", "auto", str(tmp_path), False)
    assert gpu_slots() == [4, 5, 6] and _local_slots(run, None, 2) == [4, 5]
    assert _local_slots(_Run("cuda:1", "auto", str(tmp_path), False), None, 3) == [None]
    assert _local_slots(_Run("cpu", "auto", str(tmp_path), False), 2, 5) == [None, None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1a2b,GPU-3c4d")
    with pytest.raises(ParameterError, match="^executor: CUDA_VISIBLE_DEVICES="):
        gpu_slots()
    pool = submitit.LocalExecutor(folder=tmp_path / "jobs")  # what a worker on slot 5 sees
    pool.update_parameters(**local_parameters(5))
    assert pool.submit(os.getenv, "CUDA_VISIBLE_DEVICES").result() == "5"
    pool.update_parameters(**local_parameters(None))
    assert pool.submit(os.getenv, "CUDA_VISIBLE_DEVICES").result() == ""


# ---------------------------------------------------------------------------------------------
# slurm
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    """A one-node Slurm cluster on this machine, for the whole session; SLURM_CONF points at it."""
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except ClusterError as err:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no Slurm cluster on this machine: {err}")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before
    cluster.stop()


def cancel_after_first_epoch(cluster: SlurmCluster, spec: SweepSpec, out: Path, task: str) -> dict:
    """In a thread: ``scancel`` the array task whose id ends in ``_<task>`` as soon as ``spec``'s
    checkpoint holds one epoch; what it saw lands in the returned dict."""
    seen: dict = {}
    side = checkpoint_sidecar(checkpoint_path(result_path(spec, out)))

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                seen["epoch"] = json.loads(side.read_text())["epoch"]
                break
            except (OSError, ValueError, KeyError):
                time.sleep(0.02)
        ids = cluster.run("squeue", "-h", "-r", "-o", "%i").stdout.split()
        seen["task"] = next((i for i in ids if i.endswith(f"_{task}")), None)
        if seen["task"] is not None:
            cluster.run("scancel", seen["task"])

    seen["thread"] = threading.Thread(target=watch, daemon=True)
    seen["thread"].start()
    return seen


def test_a_cancelled_array_task_resumes_and_matches_a_local_run(slurm, npz, tmp_path, monkeypatch,
                                                                capsys):
    """Three tasks on two CPUs: one finishes, one is cancelled after its first epoch, one fails on
    its data. The failures are reported with their logs; ``l2bn sweep --executor slurm`` then
    resubmits the cancelled one alone, which resumes from its checkpoint; a last run submits
    nothing. The stored tables equal tables computed here, bit for bit."""
    out = tmp_path / "out"
    conf = tmp_path / "slurm.toml"
    conf.write_text("time_min = 10\ncpus_per_task = 1\npoll_s = 0.2\n")
    monkeypatch.setenv("L2BN_SLURM_CONFIG", str(conf))
    rule = lambda r, e: SweepSpec.from_profile("smoke", r, f"npz:{npz['smoke']}", epochs=e)  # noqa: E731
    specs = [rule("sgd", 2), rule("adam", 12), tiny_spec(npz["no_y_test"], "nesterov")]
    seen = cancel_after_first_epoch(slurm, specs[1], out, task="1")
    log = Log()
    first = run_specs(specs, "slurm", device="cpu", impl="loop", out=out, progress=False, log=log)
    seen["thread"].join(timeout=60)
    assert seen.get("task") and seen.get("epoch", 0) >= 1, seen
    assert [t.state for t in first] == ["done", "failed", "failed"], [t.error for t in first]
    assert "CANCELLED" in first[1].error and first[1].log.exists()
    assert isinstance(first[2].exception, DatasetError) and first[2].error.startswith("dataset:")
    assert log.has(f"sweep {first[1].name} failed", str(first[1].log))
    with pytest.raises(SweepsFailed, match=f"2 of 3 sweeps failed: {first[1].name}: .*CANCELLED"):
        check(first)
    left = sorted(p.name for p in (out / "jobs").iterdir() if not p.name.endswith("_submission.sh"))
    owners = {"_".join(name.split("_")[:2]) for name in left}  # <array>_<task>_...: whose files
    assert owners == {t.log.name.removesuffix("_0_log.err") for t in first[1:]}, left  # failed only

    capsys.readouterr()
    argv = ["sweep", "--executor", "slurm", "--optimizer", "adam", "--profile", "smoke",
            "--dataset", f"npz:{npz['smoke']}", "--epochs", "12", "--device", "cpu", "--impl", "loop",
            "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    said = capsys.readouterr().out
    assert "submitted 1 sweep as Slurm job array" in said and "resuming from checkpoint" in said

    last = run_specs(specs[:2], "slurm", device="cpu", impl="loop", out=out, progress=False, log=Log())
    assert [t.state for t in last] == ["cached", "cached"]
    assert 1 <= last[1].result.provenance["resumed_from_epoch"] < 12
    for spec, task in zip(specs[:2], last, strict=True):
        assert task.result.provenance["threads"] == 1
        pd.testing.assert_frame_equal(task.result.table, here(spec, tmp_path / "here", "loop"),
                                      check_exact=True)
