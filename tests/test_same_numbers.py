"""The same spec gives the same table, bit for bit, before and after the library was reorganised
around the update-rule registry, the store and the checkpoint module (issue 10).

The code of commit ``BEFORE`` is taken out of git into a temporary folder and trains a few tiny
grids in a subprocess; the current code trains the same grids in another; the tables' CSV sha256
must agree for every update rule family and both passes (wide and loop).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

BEFORE = "8101fca"  # the last commit before the registry, the store and the checkpoint module
REPO = Path(__file__).resolve().parents[1]
RULES = ("nesterov", "adam", "normalized_sgd", "rmsprop")  # momentum, adaptive, projected rules

# Run with the l2bn of PYTHONPATH, the tests folder and the rules as arguments; prints
# {"<rule>-<impl>": sha256 of the table's CSV}.
SCRIPT = """
import hashlib, json, sys
import torch
torch.set_num_threads(1)  # on a CPU the thread count can change the rounding of reductions
sys.path.insert(0, sys.argv[1])
from conftest import random_dataset
import l2bn
from l2bn.train import SweepSpec, train_grid
out = {"l2bn": l2bn.__file__}
for rule in sys.argv[2:]:
    for impl in ("wide", "loop"):
        spec = SweepSpec.from_profile("smoke", rule, "synthetic", n_train=128, n_val=32, n_test=32,
                                      epochs=2, batch_size=32)
        table, _ = train_grid(spec, device="cpu", impl=impl, data=random_dataset(128, 32, 32),
                              progress=False, log=lambda *_: None)
        # Columns added since (squared angles of units and layers, squared gradient at unit norm) are new.
        new = ("grad_sq_", "angle_sq_", "layer_angle_sq_")
        table = table.drop(columns=[c for c in table if c.startswith(new)])
        out[f"{rule}-{impl}"] = hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()
print(json.dumps(out))
"""


def _old_source(dest: Path) -> Path:
    """``src`` of commit ``BEFORE`` under ``dest``; skips the test when git or the commit is missing
    (a shallow clone, an unpacked archive)."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed: cannot take the code of the commit before out of git")
    found = subprocess.run([git, "-C", str(REPO), "cat-file", "-e", f"{BEFORE}^{{commit}}"],
                           capture_output=True)
    if found.returncode != 0:
        pytest.skip(f"commit {BEFORE} is not in this checkout (shallow clone or no .git)")
    archive = subprocess.run([git, "-C", str(REPO), "archive", "--format=tar", BEFORE, "src"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def _hashes(src: Path, tmp: Path) -> dict[str, str]:
    # PyTorch's own kernels (the fused one rounds differently, fused.py); the old code ignores this.
    env = {**os.environ, "PYTHONPATH": str(src), "L2BN_DATA": str(tmp / "data"), "OMP_NUM_THREADS": "1",
           "L2BN_KERNELS": "native"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO / "tests"), *RULES], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out.pop("l2bn")).is_relative_to(src), "the subprocess imported another l2bn"
    return out


def test_the_same_spec_gives_the_same_table_as_before_the_reorganisation(tmp_path):
    old = _hashes(_old_source(tmp_path / "before"), tmp_path)
    new = _hashes(REPO / "src", tmp_path)
    assert set(new) == {f"{r}-{i}" for r in RULES for i in ("wide", "loop")}
    assert new == old
    assert len(set(new.values())) == len(new)  # every grid trained something of its own
