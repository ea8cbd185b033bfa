"""Shared fixtures: small in-memory datasets, so that training tests never load the 50k-image set."""

from __future__ import annotations

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
