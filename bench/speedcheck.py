"""The whole quick book from scratch at an older commit and at HEAD, one after the other on this
machine, and the ratio of their times: ``make speedcheck`` (OLD=8101fca by default).

Each commit's tree is taken out of git into a folder of its own and built there with this venv, its
own ``src`` first on ``PYTHONPATH`` (the chapters' kernels and the grid workers inherit it) and its
own empty data folder (synthetic images, results and pass choices made afresh), so both builds do
the same work from nothing: the same chapters, grids and seeds of the quick profile.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tree(commit: str, dest: Path) -> Path:
    """The files of ``commit`` under ``dest``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def build_seconds(root: Path, profile: str, dataset: str, log: Path) -> float:
    """Seconds of ``book/build.py`` in ``root`` from scratch; its output goes to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "L2BN_DATA": str(root / "data"),
           "L2BN_EXECUTOR": "local"}
    cmd = [sys.executable, "book/build.py", "--profile", profile, "--dataset", dataset, "--device", "cpu",
           "--stage", str(root / "stage"), "--out", str(root / "html")]
    t0 = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"speedcheck: the build in {root} failed (exit {done.returncode}); see {log}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="8101fca", help="the commit to compare with (default 8101fca)")
    ap.add_argument("--new", default="HEAD", help="the commit to measure (default HEAD)")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--dataset", default="synthetic")
    args = ap.parse_args(argv)
    times = {}
    with tempfile.TemporaryDirectory(prefix="l2bn-speedcheck-") as tmp:
        for label in ("old", "new"):
            commit = getattr(args, label)
            root = tree(commit, Path(tmp) / label)
            log = Path(tempfile.gettempdir()) / f"l2bn-speedcheck-{label}.log"
            print(f"speedcheck: building the {args.profile} book at {commit} (log {log}) ...", flush=True)
            times[label] = build_seconds(root, args.profile, args.dataset, log)
            print(f"speedcheck: {commit}: {times[label]:.1f} s", flush=True)
    print(f"speedcheck: {args.old} {times['old']:.1f} s, {args.new} {times['new']:.1f} s, "
          f"ratio {times['old'] / times['new']:.2f}× ({args.profile} book, {args.dataset} data, "
          f"from scratch, one after the other on this machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
