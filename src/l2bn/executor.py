"""Fan sweeps out: a list of ``SweepSpec`` in, their results in ``data/results`` out.

One interface, ``run_specs``, over one engine, submitit, with two executors:

- ``local`` (the default): this machine. On a CPU, one worker process per core, each on one
  thread: the quick network's small convolutions use a second thread poorly (a grid runs about 10%
  faster on two threads than on one), but two grids side by side run nearly twice as fast. On a
  machine with several GPUs, one worker per GPU, pinned to it with ``CUDA_VISIBLE_DEVICES``. Each
  worker is one process that trains grid after grid, taking the next one no worker has claimed
  (``_Worker``), so the interpreter and torch start once per worker rather than once per grid. With
  one worker (one spec, one core, one GPU) the specs train here, one after another.
- ``slurm``: one Slurm job array, one task per spec, with the partition, time limit, GPUs and CPUs
  per task and array parallelism of ``SlurmOptions`` (``l2bn sweep`` options over a TOML file). The
  tasks write into the same results folder, which must lie on a filesystem the nodes share.

Every task is ``results.run_sweep``: the same cache key, lock, checksums and epoch checkpoints as a
lone sweep. Hence the faults: only specs without a valid stored result are submitted (a damaged one
is reported, then recomputed); a task that is cancelled, preempted or timed out keeps its last epoch
checkpoint, and its resubmission resumes from there with the numbers of an unbroken run (submitit
requeues a preempted or timed-out Slurm task by itself; a rerun resubmits a cancelled one); a task
that fails is reported with its error and its log, and the others go on.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import submitit
import torch
from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.helpers import Checkpointable
from tqdm import tqdm

from .checkpoint import checkpoint_sidecar
from .data import DatasetError, data_root
from .errors import L2bnError, ParameterError
from .model import SPLITTABLE
from .results import (
    SweepResult,
    cached_result,
    checkpoint_path,
    grid_parts,
    join_parts,
    load_result,
    result_path,
    results_dir,
    run_sweep,
)
from .spec import SweepSpec, resolve_device, validate_params
from .store import atomic_write
from .train import grid_impl

EXECUTORS = ("local", "slurm")
EXECUTOR_ENV = "L2BN_EXECUTOR"  # what `make book EXECUTOR=slurm` sets, so chapters need no change
SLURM_CONFIG_ENV = "L2BN_SLURM_CONFIG"
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (2 minutes) would stop a grid midway
LOCAL_POLL_S = 0.5  # how often the local workers and their grids are looked at
# Errors a task raises on purpose: they come back with their type, as from a lone run_sweep.
DELIBERATE = (L2bnError, ValueError, DatasetError)
# squeue's states of a task that waits for a node (anything else live is running).
WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED",
           "RESV_DEL_HOLD", "STOPPED"}


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmOptions:
    """What each array task (one spec) asks of the cluster."""

    partition: str | None = None  # None: the cluster's default partition
    time_min: int = 240  # per task; a task that runs out is requeued and resumes from its checkpoint
    gpus_per_task: int = 0
    cpus_per_task: int = 1  # also the task's torch threads
    array_parallelism: int = 32  # tasks of the array running at once
    mem_gb: float | None = None  # None: the partition's default
    poll_s: float = 15.0  # how often squeue is asked how the tasks stand

    def __post_init__(self) -> None:
        for name, least in (("time_min", 1), ("gpus_per_task", 0), ("cpus_per_task", 1),
                            ("array_parallelism", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ParameterError(f"{name}: expected an integer ≥ {least}; got {value!r}")
        for name in ("mem_gb", "poll_s"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)
                                      or value <= 0):
                raise ParameterError(f"{name}: expected a positive number; got {value!r}")

    @classmethod
    def load(cls, config: Path | str | None = None, **given: Any) -> SlurmOptions:
        """The options of the TOML file ``config`` (default ``$L2BN_SLURM_CONFIG``, else
        ``data/slurm.toml`` where it exists), each overridden by a ``given`` value that is not None."""
        named = config or os.environ.get(SLURM_CONFIG_ENV)
        path = Path(named or data_root() / "slurm.toml")
        values = _read_toml(path) if named or path.exists() else {}
        known = {f.name for f in fields(cls)}
        for name in values:
            if name not in known:
                raise ParameterError(f"slurm: unknown option {name!r} in {path}; accepted: "
                                     f"{', '.join(sorted(known))}")
        values.update({k: v for k, v in given.items() if v is not None})
        return cls(**values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ParameterError(f"slurm: the options file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ParameterError(f"slurm: cannot read the options file {path} ({err})") from None


@dataclass(frozen=True)
class _Run:
    """How every task of one fan-out runs: the arguments of ``run_sweep`` besides the spec."""

    device: str
    impl: str
    out: str  # absolute, so that workers started elsewhere write to the same folder
    force: bool


# ---------------------------------------------------------------------------------------------
# Tasks and their outcome
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)  # one task per spec; told apart by identity
class Task:
    """One spec's fate: ``cached``, ``pending``, ``running``, ``done`` or ``failed``; a failed one
    carries its error (and the exception itself when it came back whole) and its log. A sub-grid's
    task carries the pass of its whole grid in ``impl`` (None: the fan-out's own)."""

    spec: SweepSpec
    state: str = "pending"
    impl: str | None = None
    result: SweepResult | None = None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)
    log: Path | None = None

    @property
    def name(self) -> str:
        return result_path(self.spec).stem


class SweepsFailed(L2bnError):
    """Some sweeps of a fan-out failed; the message names each with its error and its log."""


def check(tasks: list[Task]) -> list[SweepResult]:
    """The results of ``tasks``, in order. When one failed, raise the first failure's own error if it
    came back whole (say ``DatasetError('dataset: ...')``, as a lone ``run_sweep`` raises it), else
    ``SweepsFailed`` naming every failure."""
    failed = [t for t in tasks if t.state == "failed"]
    if failed and failed[0].exception is not None:
        raise failed[0].exception
    if failed:
        raise SweepsFailed(f"executor: {len(failed)} of {len(tasks)} sweeps failed: " + "; ".join(
            f"{t.name}: {t.error} (log {t.log})" for t in failed))
    return [t.result for t in tasks]


def _compute(spec: SweepSpec, run: _Run, progress: bool = False,
             log: Callable[[str], None] = print) -> BaseException | None:
    """Store ``spec``'s result; return None, or the deliberate error that stopped it."""
    try:
        run_sweep(spec, device=run.device, impl=run.impl, out=run.out, progress=progress,
                  force=run.force, log=log)
    except DELIBERATE as err:
        return err
    return None


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


class _Train(Checkpointable):
    """A task in a worker process: ``_compute`` on ``threads`` threads. As a ``Checkpointable``, a
    Slurm task that runs out of time is requeued by submitit (on the USR2 that Slurm sends before
    the limit) with the same arguments, and resumes from the epoch checkpoint that ``run_sweep``
    keeps on disk. A task that is cancelled or preempted (SIGTERM) stops at once, where submitit
    would let it run on until SIGKILL: its last epoch checkpoint is what a resubmission resumes from."""

    def __call__(self, spec: SweepSpec, run: _Run, threads: int) -> BaseException | None:
        signal.signal(signal.SIGTERM, _stop)
        torch.set_num_threads(threads)
        error = _compute(spec, run)
        if error is not None:
            print(f"l2bn: {error}", file=sys.stderr)  # the task's log says it too
        return error


def _fail(task: Task, error: str, log: Callable[[str], None] | None,
          exception: BaseException | None = None, log_path: Path | None = None) -> None:
    """Mark ``task`` failed and say so through ``log`` (None: ``check`` alone will tell)."""
    task.state, task.error, task.exception, task.log = "failed", error, exception, log_path
    where = f"; log {log_path}" if log_path is not None else ""
    if log is not None:
        log(f"l2bn: sweep {task.name} failed: {error}{where}")


def _sweeps(n: int) -> str:
    return f"{n} sweep{'' if n == 1 else 's'}"


def _stored(task: Task, run: _Run, log: Callable[[str], None]) -> None:
    """Mark ``task`` done with its stored result, or failed if the task left none."""
    task.result = load_result(result_path(task.spec, run.out), log, task.spec)
    if task.result is None:
        _fail(task, f"the task ended, but no valid result is stored at {result_path(task.spec, run.out)} "
              "(did the code change while it ran?)", log)
    else:
        task.state = "done"


def _collect(task: Task, job: submitit.Job, run: _Run, log: Callable[[str], None]) -> None:
    """Record how the ended ``job`` of ``task`` went; keep its logs only when it failed."""
    stdout = job.paths.stdout.read_text(errors="replace") if job.paths.stdout.exists() else ""
    for line in stdout.splitlines():  # the task's own messages (resuming, damaged result, ...)
        if line.startswith("l2bn:"):
            log(line)
    if not job.paths.result_pickle.exists():
        _fail(task, f"the task ended without a result (cancelled, out of time or memory, or killed): "
              f"{_last_line(job.paths.stderr)}", log, log_path=job.paths.stderr)
        return
    try:
        error = job.result()
    except (FailedJobError, UncompletedJobError) as err:
        _fail(task, _last_line_of(str(err)), log, log_path=job.paths.stderr)
        return
    if error is not None:
        _fail(task, str(error), log, exception=error, log_path=job.paths.stderr)
        return
    _stored(task, run, log)
    if task.state == "done":
        for path in job.paths.folder.glob(f"{job.job_id}_*"):  # its pickles and logs
            path.unlink(missing_ok=True)


def _last_line(path: Path) -> str:
    return _last_line_of(path.read_text(errors="replace")) if path.exists() else "no log"


def _last_line_of(text: str) -> str:
    """The last line of a log or traceback that says something (not a frame or a ruler)."""
    lines = [x.strip() for x in text.splitlines() if x.strip() and not x.strip().startswith(("-", "File "))]
    lines = [x for x in lines if not x.startswith(("You can check", "or at paths"))]
    marked = [x for x in lines if "***" in x]  # Slurm's own word: CANCELLED, DUE TO TIME LIMIT, ...
    return (marked or lines or ["no message"])[-1]


# ---------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------


def executor_name(executor: str | None = None) -> str:
    """``executor``, else ``$L2BN_EXECUTOR``, else ``local``; ``ParameterError`` for another name."""
    name = executor or os.environ.get(EXECUTOR_ENV) or "local"
    if name not in EXECUTORS:
        raise ParameterError(f"executor: unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    return name


def run_specs(
    specs: list[SweepSpec],
    executor: str | None = None,
    device: str = "auto",
    impl: str = "auto",
    out: Path | str | None = None,
    progress: bool = True,
    force: bool = False,
    slurm: SlurmOptions | None = None,
    workers: int | None = None,
    log: Callable[[str], None] = print,
) -> list[Task]:
    """Compute the result of every spec into ``out`` (default ``data/results``) through
    ``executor`` (default ``$L2BN_EXECUTOR``, else ``local``); return one ``Task`` per distinct
    spec, in order, ``cached``, ``done`` or ``failed`` (``check`` turns them into results or raises).

    Only specs without a valid stored result are computed (unless ``force``). ``local`` runs
    ``workers`` at a time (default: one per CPU core, or one per GPU on a machine with several);
    ``slurm`` submits one job array with ``slurm`` (default ``SlurmOptions.load()``). The progress
    bar counts finished epochs, read from the tasks' checkpoints, and names how many sweeps are
    pending, running, done and failed. Bad parameters raise ``ParameterError`` before anything runs.
    """
    name = executor_name(executor)
    for spec in specs:  # on a cluster the device is the nodes', whose GPU this machine may lack
        validate_params(spec, device if name == "local" else "auto", impl)
    tasks = [Task(s) for s in dict.fromkeys(specs)]
    root = results_dir(out).resolve()
    for task in tasks:
        task.result = None if force else cached_result(task.spec, root, log)
        if task.result is not None:
            task.state = "cached"
    todo = [t for t in tasks if t.state == "pending"]
    if todo:
        run = _Run(device, impl, str(root), force)
        if name == "slurm":
            _run_slurm(todo, run, slurm or SlurmOptions.load(), progress, log)
        else:
            _run_local(todo, run, workers, progress, log)
    if todo and len(tasks) > 1:
        counts = {s: sum(t.state == s for t in tasks) for s in ("cached", "done", "failed")}
        log(f"l2bn: {_sweeps(len(tasks))}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return tasks


def _jobs_folder(run: _Run) -> Path:
    """Where submitit keeps the tasks' pickles and logs (removed as each task is done)."""
    return Path(run.out) / "jobs"


def _epochs_done(spec: SweepSpec, out: str) -> int:
    """Epochs of ``spec`` finished so far, read from its checkpoint's checksum file (0 if none)."""
    path = result_path(spec, out)
    if path.exists():
        return spec.epochs
    try:
        return int(json.loads(checkpoint_sidecar(checkpoint_path(path)).read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


class _Progress:
    """One bar over the epochs of all the tasks, with their states as its postfix."""

    def __init__(self, tasks: list[Task], run: _Run, what: str, enabled: bool):
        self.tasks, self.run, self.states = tasks, run, ""
        self.bar = tqdm(total=sum(t.spec.epochs for t in tasks), desc=what, unit="epoch",
                        disable=not enabled, dynamic_ncols=True)

    def update(self) -> None:
        self.bar.update(sum(_epochs_done(t.spec, self.run.out) for t in self.tasks) - self.bar.n)
        states = ", ".join(f"{s} {sum(t.state == s for t in self.tasks)}"
                           for s in ("pending", "running", "done", "failed"))
        if states != self.states:  # redrawn when it changes, not at every poll
            self.states = states
            self.bar.set_postfix_str(states)

    def close(self) -> None:
        self.update()
        self.bar.close()


# ---------------------------------------------------------------------------------------------
# local: this machine's cores or GPUs
# ---------------------------------------------------------------------------------------------


def gpu_slots() -> list[int]:
    """The GPUs local workers are pinned to, by the index ``CUDA_VISIBLE_DEVICES`` takes."""
    n = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(n))
    ids = [x.strip() for x in visible.split(",") if x.strip()][:n]
    if not all(x.isdigit() for x in ids):
        raise ParameterError(f"executor: CUDA_VISIBLE_DEVICES={visible} names GPUs other than by "
                             "index; give their indices to run one worker per GPU")
    return [int(x) for x in ids]


def _local_slots(run: _Run, workers: int | None, n_todo: int) -> list[int | None]:
    """One entry per worker: the GPU it is pinned to, or None for a CPU worker."""
    dev = resolve_device(run.device)
    if dev.type == "cuda" and dev.index is None:  # "auto" or "cuda": every GPU of the machine
        gpus = gpu_slots()
        return gpus[: min(workers or len(gpus), n_todo)]
    if dev.type == "cuda":
        return [None]  # one named GPU: the specs queue for it
    return [None] * min(workers or torch.get_num_threads(), n_todo)


def local_parameters(slot: int | None) -> dict[str, Any]:
    """submitit's parameters for a local worker on GPU ``slot`` (None: a CPU worker, which then
    sees no GPU: ``CUDA_VISIBLE_DEVICES`` is empty)."""
    gpus = () if slot is None else (slot,)
    return {"timeout_min": LOCAL_TIMEOUT_MIN, "gpus_per_node": len(gpus), "visible_gpus": gpus}


def split_for_balance(todo: list[Task], run: _Run, n_slots: int, log: Callable[[str], None] = print,
                      ) -> tuple[list[Task], dict[Task, list[Task]]]:
    """The tasks to run on ``n_slots`` CPU workers, largest first, and each split task's parts.

    When the grids do not divide evenly among the workers (five grids on two cores would leave one
    core idle while the fifth trains), every grid is cut into ``n_slots`` sub-grids
    (``results.grid_parts``) and trained with the faster of the passes that compute each row of the
    grid on its own (``model.SPLITTABLE``: rows and loop), so that a part gives its models' numbers
    bit for bit; the parts already stored are reused. The cuts fall between rows of η, except in
    the last grid on the loop pass, which computes each model on its own: there they may fall
    inside a row, and its pieces of rows, the smallest parts, are trained last and bring the
    workers' ends to within a few models of each other (whole rows left them a row apart: five
    quick grids of five rows on two workers ended 37 s apart, measured). The wide pass is left out
    of the race: its grouped convolutions round differently for another number of models
    (measured), and on one thread the rows pass computes a 25-model grid as fast (0.411 against
    0.409 s per step). A grid given ``impl='wide'``, or with a checkpoint of its own to resume
    from, stays whole."""
    if n_slots < 2 or len(todo) % n_slots == 0 or resolve_device(run.device).type != "cpu":
        return todo, {}
    runs, split = [], {}
    threads = max(1, torch.get_num_threads() // n_slots)  # the pass is raced as a worker will run it
    for task in todo:
        impl = (run.impl if run.impl != "auto" or task.spec.n_models == 1
                else grid_impl(task.spec, run.device, threads, SPLITTABLE))
        parts = ([task.spec] if impl not in SPLITTABLE
                 else grid_parts(task.spec, n_slots, whole_rows=impl != "loop" or task is not todo[-1]))
        if len(parts) == 1 or checkpoint_path(result_path(task.spec, run.out)).exists():  # resumes whole
            runs.append(task)
            continue
        split[task] = [Task(part, impl=impl) for part in parts]
        for part in split[task]:
            part.result = None if run.force else cached_result(part.spec, run.out, log)
            part.state = "pending" if part.result is None else "cached"
            runs.append(part)
    return sorted(runs, key=lambda t: -t.spec.n_models), split


def _join(split: dict[Task, list[Task]], run: _Run, log: Callable[[str], None]) -> None:
    """Each split task's result from its parts, or its first failed part's failure."""
    for whole, parts in split.items():
        failed = [p for p in parts if p.state == "failed"]
        if failed:
            _fail(whole, failed[0].error or "a part failed", None, failed[0].exception, failed[0].log)
        else:
            whole.result = join_parts(whole.spec, [p.result for p in parts], run.out)
            whole.state = "done"


def _run_local(todo: list[Task], run: _Run, workers: int | None, progress: bool,
               log: Callable[[str], None]) -> None:
    runs, split = split_for_balance(todo, run, len(_local_slots(run, workers, sys.maxsize)), log)
    pending = [t for t in runs if t.state == "pending"]
    slots = _local_slots(run, workers, len(pending))
    if len(slots) < 2:
        for task in pending:
            task.state = "running"
            error = _compute(task.spec, replace(run, impl=task.impl or run.impl), progress, log)
            if error is not None:  # a lone spec's error is only raised, as run_sweep's would be
                _fail(task, str(error), log if len(pending) > 1 else None, exception=error)
            else:
                _stored(task, run, log)
        _join(split, run, log)
        return
    _run_workers(pending, run, slots, progress, log)
    _join(split, run, log)


class _Worker:
    """A local worker process: trains, one after another, each grid of the fan-out (in its order,
    largest first) that no other worker has claimed, so that one process and its start (the
    interpreter and torch: about 4 s of a core here, measured) serve many grids. A grid is claimed
    by linking ``<name>.claim`` in the fan-out's ``queue`` folder to a file holding the worker's job
    id (a link is made once: one worker wins the grid); its outcome, None or the deliberate error that
    stopped it, is left in ``<name>.out``. An error not raised on purpose ends the worker."""

    def __call__(self, queue: Path, items: list[tuple[SweepSpec, _Run]], threads: int) -> None:
        mine = queue / f".{os.getpid()}"  # this worker's job id, linked to each claim it makes
        mine.write_text(submitit.JobEnvironment().job_id)
        for spec, run in items:
            name = result_path(spec).stem
            try:
                os.link(mine, queue / f"{name}.claim")  # atomic, and never a claim without its id
            except FileExistsError:
                continue
            error = _Train()(spec, run, threads)
            atomic_write(queue / f"{name}.out", pickle.dumps(error))


@dataclass(eq=False)
class _LocalWorker:
    """A running ``_Worker`` job, and how much of its output has been passed on."""

    job: submitit.Job
    read: int = 0  # characters of its stdout already relayed

    def relay(self, log: Callable[[str], None]) -> None:
        """Pass on the complete new lines of its output that are the task's own messages."""
        path = self.job.paths.stdout
        text = path.read_text(errors="replace")[self.read :] if path.exists() else ""
        done = text.rfind("\n") + 1
        for line in text[:done].splitlines():
            if line.startswith("l2bn:"):
                log(line)
        self.read += done

    def end_message(self) -> str:
        """Why the ended job stopped, in one line."""
        if not self.job.paths.result_pickle.exists():
            return _last_line(self.job.paths.stderr)
        try:
            self.job.result()
        except (FailedJobError, UncompletedJobError) as err:
            return _last_line_of(str(err))
        return "it ended without training it"


def _run_workers(pending: list[Task], run: _Run, slots: list[int | None], progress: bool,
                 log: Callable[[str], None]) -> None:
    """Train ``pending`` on one ``_Worker`` per slot until each task is done or failed; a worker
    that dies leaves its grid failed (its epoch checkpoint is what a rerun resumes from) and a new
    worker takes over the grids no one has claimed."""
    folder = _jobs_folder(run)
    folder.mkdir(parents=True, exist_ok=True)
    queue = Path(tempfile.mkdtemp(prefix="queue-", dir=folder))
    items = [(t.spec, replace(run, impl=t.impl or run.impl)) for t in pending]
    threads = max(1, torch.get_num_threads() // len(slots))
    pool = submitit.LocalExecutor(folder=folder)
    workers: dict[int, _LocalWorker] = {}  # by slot index
    bar = _Progress(pending, run, f"{len(pending)} grids, {len(slots)} at a time", progress)
    try:
        while True:
            for i, slot in enumerate(slots):
                if i not in workers and any(t.state == "pending" for t in pending):
                    pool.update_parameters(**local_parameters(slot))
                    workers[i] = _LocalWorker(pool.submit(_Worker(), queue, items, threads))
            ended = {i: w for i, w in workers.items() if w.job.done()}  # before reading outcomes
            by_job = {w.job.job_id: w for w in workers.values()}
            for worker in workers.values():
                worker.relay(log)
            for task in pending:
                _follow(task, queue, by_job, run, log)
            for i, worker in ended.items():
                _ended(worker, [t for t in pending if _owner(t, queue) == worker.job.job_id],
                       pending, log)
                del workers[i]
            bar.update()
            if not workers and not any(t.state in ("pending", "running") for t in pending):
                break
            time.sleep(LOCAL_POLL_S)
    except KeyboardInterrupt:  # each worker saves nothing more than its last epoch checkpoint
        for worker in workers.values():
            worker.job.cancel(check=False)
        raise
    finally:
        bar.close()
        shutil.rmtree(queue, ignore_errors=True)


def _owner(task: Task, queue: Path) -> str | None:
    """The job id of the worker that claimed ``task`` (None: unclaimed)."""
    try:
        return (queue / f"{task.name}.claim").read_text()
    except FileNotFoundError:
        return None


def _follow(task: Task, queue: Path, by_job: dict[str, _LocalWorker], run: _Run,
            log: Callable[[str], None]) -> None:
    """Move ``task`` on to ``running`` once claimed, and to ``done`` or ``failed`` once its outcome
    is left in ``queue``."""
    if task.state not in ("pending", "running"):
        return
    if (queue / f"{task.name}.claim").exists():
        task.state = "running"
    outcome = queue / f"{task.name}.out"
    if not outcome.exists():
        return
    error = pickle.loads(outcome.read_bytes())
    if error is None:
        _stored(task, run, log)
    else:
        worker = by_job.get(_owner(task, queue))
        _fail(task, str(error), log, exception=error,
              log_path=worker.job.paths.stderr if worker is not None else None)


def _ended(worker: _LocalWorker, claimed: list[Task], pending: list[Task],
           log: Callable[[str], None]) -> None:
    """Account for the ended ``worker``: the grid it was training when it died fails with its log;
    if it died before claiming any, so do the grids still unclaimed (each would die alike). Its
    logs are removed unless a grid failed there."""
    worker.relay(log)
    stderr = worker.job.paths.stderr
    for task in claimed:
        if task.state == "running":  # claimed, and no outcome
            _fail(task, f"the worker ended while training it (cancelled, out of time or memory, or "
                  f"killed): {worker.end_message()}", log, log_path=stderr)
    if not claimed:  # a worker that lives ends only once every grid is claimed
        for task in pending:
            if task.state == "pending":
                _fail(task, f"the worker ended before training it: {worker.end_message()}", log,
                      log_path=stderr)
    if not any(t.state == "failed" and t.log == stderr for t in pending):
        for path in worker.job.paths.folder.glob(f"{worker.job.job_id}_*"):  # its pickles and logs
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# slurm: one job array
# ---------------------------------------------------------------------------------------------


def _run_slurm(todo: list[Task], run: _Run, opts: SlurmOptions, progress: bool,
               log: Callable[[str], None]) -> None:
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise ParameterError("executor: slurm needs sbatch and squeue on the PATH, and this machine "
                             "has none; run on the cluster's login node, or use --executor local")
    pool = submitit.AutoExecutor(folder=_jobs_folder(run), cluster="slurm")
    params: dict[str, Any] = {"timeout_min": opts.time_min, "cpus_per_task": opts.cpus_per_task,
                              "tasks_per_node": 1, "nodes": 1, "name": "l2bn-sweep",
                              "slurm_array_parallelism": opts.array_parallelism}
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.gpus_per_task:
        params["gpus_per_node"] = opts.gpus_per_task
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    pool.update_parameters(**params)
    n = len(todo)
    jobs = pool.map_array(_Train(), [t.spec for t in todo], [run] * n, [opts.cpus_per_task] * n)
    array = jobs[0].job_id.split("_")[0]
    log(f"l2bn: submitted {_sweeps(n)} as Slurm job array {array} (logs in {_jobs_folder(run)})")
    bar = _Progress(todo, run, f"Slurm array {array}", progress)
    try:
        _watch(dict(zip(todo, jobs, strict=True)), array, run, bar, log, opts.poll_s)
    except KeyboardInterrupt:
        log(f"\nl2bn: the array goes on running on the cluster; `scancel {array}` stops it, and the "
            "same command later collects what it stored and submits only what is missing")
        raise
    finally:
        bar.close()
    _tidy(_jobs_folder(run), array, keep_script=any(t.state == "failed" for t in todo))


def _tidy(folder: Path, array: str, keep_script: bool) -> None:
    """Remove submitit's link to the array's sbatch script, and the script unless a task failed."""
    script = folder / f"{array}_submission.sh"
    for link in folder.glob(".submission_file_*.sh"):
        if link.is_symlink() and Path(os.readlink(link)).name == script.name:
            link.unlink()
    if not keep_script:
        script.unlink(missing_ok=True)


def _watch(jobs: dict[Task, submitit.Job], array: str, run: _Run, bar: _Progress,
           log: Callable[[str], None], poll_s: float) -> None:
    """Follow the array's tasks until each has ended: squeue for the live ones (it needs no
    accounting database, unlike sacct), the result pickle or its absence for the ended ones."""
    gone_before: set[Task] = set()
    while jobs:
        live = _squeue(array)
        for task, job in list(jobs.items()):
            state = None if live is None else live.get(job.job_id)
            if state is not None:
                task.state = "pending" if state in WAITING else "running"
            # gone twice in a row: not a task squeue has yet to list, nor a result still landing
            elif job.paths.result_pickle.exists() or (live is not None and task in gone_before):
                _collect(task, job, run, log)
                del jobs[task]
            elif live is not None:
                gone_before.add(task)
        bar.update()
        if jobs:
            time.sleep(poll_s)


def _squeue(array: str) -> dict[str, str] | None:
    """squeue's state of each live task of ``array`` by submitit's job id (``<array>_<task>``);
    None when squeue could not answer this time."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", array], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:  # an array that ended long ago is an invalid id to squeue
        return {} if "Invalid job id" in out.stderr else None
    return dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)
