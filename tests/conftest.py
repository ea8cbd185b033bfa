"""Shared fixtures: small in-memory datasets, so that training tests never load the 50k-image set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from l2bn.data import N_CLASSES, Dataset


def random_dataset(
    n_train: int = 128, n_val: int = 32, n_test: int = 32, seed: int = 0, size: int = 32
) -> Dataset:
    """A ``Dataset`` of uniformly random uint8 images (3×size×size) and labels, fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
        return x, torch.randint(0, N_CLASSES, (n,), generator=g)

    (xa, ya), (xv, yv), (xt, yt) = split(n_train), split(n_val), split(n_test)
    return Dataset(f"random-seed{seed}", xa, ya, xv, yv, xt, yt, checksum=f"random-seed{seed}")


@pytest.fixture(scope="session")
def make_dataset():
    """Factory for small random datasets: ``make_dataset(n_train=128, n_val=32, n_test=32, seed=0)``."""
    return random_dataset


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: the machine is shared, workers run on one thread each,
    and CPU numbers depend on the thread count. Modules opt in with ``usefixtures``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def private_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root of the test's own (downloads, results, impl choices), and no executor settings
    inherited from the environment."""
    root = tmp_path / "data_root"
    monkeypatch.setenv("L2BN_DATA", str(root))
    monkeypatch.delenv("L2BN_EXECUTOR", raising=False)
    monkeypatch.delenv("L2BN_SLURM_CONFIG", raising=False)
    return root



@pytest.fixture
def swept_table() -> Callable[[str], Path]:
    """swept_table(stdout) -> the table of the grid an ``l2bn sweep`` printed: on a machine of
    several cores the results folder also holds the tables of its parts, trained side by side."""
    def table(stdout: str) -> Path:
        [provenance] = [line.removeprefix("provenance: ") for line in stdout.splitlines()
                        if line.startswith("provenance: ")]
        return Path(provenance).with_suffix(".csv")
    return table
