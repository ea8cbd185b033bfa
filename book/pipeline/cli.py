"""``main``: check everything, then execute what changed, then build the site.

The exit status comes from the error's type (``L2bnError.exit_code``): 2 for a bad option or
parameter (``ParameterError``) and for missing data (``DataError``), 3 when another build holds the
stage (``Busy``), 1 for a failed notebook or site (``BuildError``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from l2bn.errors import L2bnError, ParameterError
from l2bn.store import exclusive

from . import chapters, execute, options, site, solutions, stamps
from .chapters import Job
from .common import BuildError, log


def _settings(args, library: dict[str, str]) -> str:
    return (f"profile `{args.profile}`, dataset `{args.dataset}`, device `{args.device}` "
            f"(l2bn {library['l2bn_version']}, code version `{library['code_version']}`)")


def checked_plan(args) -> tuple[list[Path], list[Job]]:
    """Every check that needs no execution: options, settings, chapters, parameters. Writes nothing."""
    options.check_folders(args)
    found = chapters.discover(args.notebooks)
    targets = chapters.select(found, args.only)
    extras = options.extra_parameters(args)
    chapters.check_settings(args.profile, args.dataset, args.device)
    base = {"profile": args.profile, "dataset": args.dataset, "device": args.device}
    return found, chapters.plan(targets, base, extras, only=bool(args.only))


def outdated(args, stage: Path, jobs: list[Job], library: dict[str, str],
             data_id: str) -> list[tuple[Job, dict, str]]:
    """(job, stamp inputs, their hash) of each chapter to execute: changed, or all with --force."""
    todo = []
    for job in jobs:
        inputs = stamps.stamp_inputs(job.path, job.params, library, data_id)
        digest = stamps.stamp_hash(inputs)
        if not args.force and stamps.is_current(stage, job.path.stem, digest):
            log(f"{job.path.stem}: up to date")
        else:
            todo.append((job, inputs, digest))
    return todo


def chapter_workers(n: int) -> int:
    """How many chapters execute at once: one per core (the grids are trained by then, so each
    chapter's kernel is one mostly single-threaded process), at most ``n``."""
    return max(1, min(n, os.cpu_count() or 1))


def run_all(todo: list[tuple[Job, dict, str]], stage: Path) -> None:
    """Execute each chapter, side by side on the cores (each kernel on one thread); every one runs
    even when another fails, then all failures are reported, in the chapters' order."""
    workers = chapter_workers(len(todo))
    # The longest first, so that the last to start is short: by the last build's times where its
    # stamps say, else from the end of the book, whose chapters gather most (the verdict reads all).
    took = [stamps.last_seconds(stage, job.path.stem) or 0.0 for job, _, _ in todo]
    order = sorted(range(len(todo)), key=lambda k: (-took[k], -k))

    def one(i: int, job: Job, inputs: dict, digest: str) -> str | None:
        log(f"[{i}/{len(todo)}] {job.path.stem}: executing with {chapters.shown(job.params)}")
        try:
            execute.execute(job.path, job.params, stage, inputs, digest)
        except BuildError as err:
            log(f"FAILED: {str(err).splitlines()[0]} (details at the end)")
            return str(err)
        return None

    with one_thread_kernels(workers > 1):
        pool = ThreadPoolExecutor(workers)
        try:
            outcomes = dict(zip(order, pool.map(lambda k: one(k + 1, *todo[k]), order), strict=True))
        except KeyboardInterrupt:  # Ctrl-C reaches the kernels too; the chapters not begun never start
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    failures = [outcomes[k] for k in range(len(todo)) if outcomes[k] is not None]
    if failures:
        raise BuildError(f"{len(failures)} notebook(s) failed; no HTML was built:\n\n"
                         + "\n\n".join(failures))


@contextmanager
def one_thread_kernels(on: bool) -> Iterator[None]:
    """Kernels started meanwhile use one thread each (``OMP_NUM_THREADS``, which torch reads when
    it is imported), so that chapters side by side do not oversubscribe the cores."""
    before = os.environ.get("OMP_NUM_THREADS")
    if on:
        os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if on and before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        elif on:
            os.environ["OMP_NUM_THREADS"] = before


def train_grids(todo: list[tuple[Job, dict, str]], device: str) -> None:
    """Compute every grid the chapters to execute will read, all at once, before the first chapter
    runs: the executor (``$L2BN_EXECUTOR``) then keeps every core (or GPU, or Slurm node) busy until
    the last grid, instead of one chapter's few grids at a time. Stored grids are reused."""
    from l2bn.chapter import chapter_specs
    from l2bn.executor import check, run_specs

    specs = []
    for job, _, _ in todo:
        values = {**chapters.literal_defaults(job.path), **job.params}
        specs += chapter_specs(job.path.stem, values)
    if specs:
        specs = list(dict.fromkeys(specs))
        log(f"{len(specs)} grid(s) read by the chapters to execute; computing the missing ones first")
        check(run_specs(specs, device=device))


def build(args) -> None:
    found, jobs = checked_plan(args)
    stage, out = args.stage.resolve(), args.out.resolve()
    library, data_id = stamps.library_identity(), stamps.dataset_identity(args.dataset)
    settings = _settings(args, library)
    log(f"{len(found)} chapter(s); {settings}")
    if args.dry_run:
        for job, _, _ in outdated(args, stage, jobs, library, data_id):
            log(f"{job.path.stem}: would execute with {chapters.shown(job.params)}")
        return
    stage.mkdir(parents=True, exist_ok=True)
    with exclusive(stage / ".build.lock", f"the book build into {stage}"):
        todo = outdated(args, stage, jobs, library, data_id)
        if todo:
            execute.ensure_dataset(args.profile, args.dataset)
            train_grids(todo, args.device)
        run_all(todo, stage)
        site.remove_stale(stage, found)
        if args.no_html:
            return
        present = site.assemble(stage, found, settings)
        absent = [p.stem for p in found if p.stem not in present]
        if absent:
            log(f"not executed yet, left out of the site: {', '.join(absent)} (run the full build)")
        source = solutions.student_sources(stage) if args.solutions == "hide" else stage
        site.build_html(source, out, {p.stem: p for p in found})


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    try:
        build(options.parse_args(argv))
    except L2bnError as err:
        text = " ".join(str(err).split()) if isinstance(err, ParameterError) else str(err)
        lead = "\n" if "\n" in text else ""  # a long report (failed notebooks) is set off from the log
        print(f"{lead}book: ERROR: {text}", file=sys.stderr, flush=True)
        return err.exit_code
    log(f"done in {time.perf_counter() - t0:.1f} s")
    return 0
