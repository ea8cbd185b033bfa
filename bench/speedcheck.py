"""The whole quick book from scratch at an older commit and at HEAD, one after the other on this
machine, and the ratio of their times: ``make speedcheck`` (OLD=8101fca by default). With
``--grids`` (``make speedcheck ARGS=--grids``), only the training of the paper's five grids: the
same work at both commits, where the whole book has grown since 8101fca (more analysis, and the
grids of "After the paper").

Each commit's tree is taken out of git into a folder of its own and built there with this venv, its
own ``src`` first on ``PYTHONPATH`` (the chapters' kernels and the grid workers inherit it) and its
own empty data folder (synthetic images, results and pass choices made afresh), so both builds do
the same work from nothing: the same chapters, grids and seeds of the quick profile.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tree(commit: str, dest: Path) -> Path:
    """The files of ``commit`` under ``dest``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def timed(cmd: list[str], root: Path, log: Path) -> float:
    """Seconds of ``cmd`` run in ``root`` with that tree's ``src`` and an empty data folder of its
    own (synthetic images, results and pass choices made afresh); its output goes to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "L2BN_DATA": str(root / "data"),
           "L2BN_EXECUTOR": "local"}
    t0 = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"speedcheck: {cmd[1]} in {root} failed (exit {done.returncode}); see {log}")
    return seconds


def build_seconds(root: Path, profile: str, dataset: str, log: Path, impl: str = "auto") -> float:
    """Seconds of ``book/build.py`` in ``root`` from scratch. (``impl`` is only ``grids_seconds``'s
    twin: the book races its own pass, and ``main`` refuses another without ``--grids``.)"""
    return timed([sys.executable, "book/build.py", "--profile", profile, "--dataset", dataset,
                  "--device", "cpu", "--stage", str(root / "stage"), "--out", str(root / "html")], root, log)


# The grids of the paper's Figures 1–4 that every commit's quick book trains (the book at 8101fca
# had no others), and the script that trains them from scratch with a commit's own code: side by
# side on the CPU's cores, errors measured after every epoch (as 8101fca measured them).
PAPER_GRIDS = ("sgd", "nesterov", "rmsprop", "adam", "normalized_sgd")
GRIDS_SCRIPT = """
import dataclasses, sys
from l2bn import results
from l2bn.train import SweepSpec
every = {"evaluate": "every"} if "evaluate" in {f.name for f in dataclasses.fields(SweepSpec)} else {}
specs = [SweepSpec.from_profile(sys.argv[1], g, sys.argv[2], **every) for g in sys.argv[4:]]
if hasattr(results, "train_side_by_side"):  # before the executor, which always raced the passes
    results.train_side_by_side(specs, "cpu", progress=False)
else:
    from l2bn.executor import check, run_specs
    check(run_specs(specs, device="cpu", impl=sys.argv[3], progress=False))
"""


def grids_seconds(root: Path, profile: str, dataset: str, log: Path, impl: str = "auto") -> float:
    """Seconds to train ``PAPER_GRIDS`` from scratch with the code in ``root``, on pass ``impl``
    (``auto``: the pass the code races; a commit from before the executor always races)."""
    return timed([sys.executable, "-c", GRIDS_SCRIPT, profile, dataset, impl, *PAPER_GRIDS], root, log)


def passes(root: Path) -> str:
    """How many of the results ``root`` stored trained with each pass (the race, run once per
    machine, can pick another pass at each commit: it is part of what is measured), and the race's
    best time per pass where the commit keeps it (``train.RACE_SECONDS``)."""
    found = Counter()
    for meta in (root / "data" / "results").glob("*.json"):
        try:
            found[json.loads(meta.read_text()).get("impl", "?")] += 1
        except (OSError, ValueError, AttributeError):
            continue
    counted = ", ".join(f"{impl} ×{n}" for impl, n in sorted(found.items())) or "none found"
    from l2bn.train import RACE_SECONDS  # HEAD's name for the entry; older commits lack it

    try:
        races = json.loads((root / "data" / "impl_choices.json").read_text())[RACE_SECONDS].values()
    except (OSError, ValueError, KeyError, AttributeError):
        return counted
    return counted + "; raced: " + "; ".join(
        ", ".join(f"{impl} {t:.3f} s" for impl, t in sorted(race.items(), key=lambda it: it[1]))
        for race in races)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="8101fca", help="the commit to compare with (default 8101fca)")
    ap.add_argument("--new", default="HEAD", help="the commit to measure (default HEAD)")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--grids", action="store_true",
                    help="time only the training of the paper's five grids (the same work at every "
                         "commit, errors after every epoch), not the whole book")
    ap.add_argument("--impl", default="auto", choices=("auto", "wide", "rows", "loop"),
                    help="with --grids, the pass the grids of --new train with (default auto: raced "
                         "once on this machine, as the book does); --old races its own where it "
                         "has no choice")
    ap.add_argument("--rounds", type=int, default=1,
                    help="build each commit this many times, from scratch each time, in the order "
                         "old, new, new, old, old, … so that a machine whose speed drifts steadily "
                         "slows both alike (default 1: old, then new)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds: at least 1; got {args.rounds}")
    if args.impl != "auto" and not args.grids:
        ap.error(f"--impl: only with --grids (the whole book races its own pass); got {args.impl}")
    measure, what = (grids_seconds, "grids") if args.grids else (build_seconds, "book")
    times: dict[str, list[float]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="l2bn-speedcheck-") as tmp:
        for label in order(args.rounds):
            commit = getattr(args, label)
            root = Path(tmp) / f"{label}-{len(times[label])}"
            tree(commit, root)  # a fresh tree and data folder for every build: each from scratch
            log = Path(tempfile.gettempdir()) / f"l2bn-speedcheck-{label}-{len(times[label])}.log"
            print(f"speedcheck: the {args.profile} {what} at {commit} (log {log}) ...", flush=True)
            times[label].append(measure(root, args.profile, args.dataset, log,
                                        args.impl if label == "new" else "auto"))
            print(f"speedcheck: {commit}: {times[label][-1]:.1f} s (passes of its results: "
                  f"{passes(root)})", flush=True)
            shutil.rmtree(root)
    old, new = (sum(times[k]) / len(times[k]) for k in ("old", "new"))
    each = "" if args.rounds == 1 else (
        " (each: " + ", ".join(f"{o:.1f}/{n:.1f}" for o, n in zip(times["old"], times["new"], strict=True))
        + f"; mean of {args.rounds})")
    print(f"speedcheck: {args.old} {old:.1f} s, {args.new} {new:.1f} s, ratio {old / new:.2f}×{each} "
          f"({args.profile} {what}, {args.dataset} data, from scratch, one after the other on this "
          "machine)")
    return 0


def order(rounds: int) -> list[str]:
    """The builds in turn: old, new for one round; old, new, new, old, … for more."""
    return [label for r in range(rounds) for label in (("old", "new") if r % 2 == 0 else ("new", "old"))]


if __name__ == "__main__":
    sys.exit(main())
