"""What every part of the build shares: where things are, its error, its log."""

from __future__ import annotations

from pathlib import Path

from l2bn.errors import L2bnError

BOOK = Path(__file__).resolve().parents[1]
REPO = BOOK.parent
NOTEBOOKS = REPO / "notebooks"
GLOBAL_PARAMETERS = ("profile", "dataset", "device")  # set by --profile/--dataset/--device
KERNEL = "python3"


class BuildError(L2bnError):
    """A build step failed (a cell raised, Sphinx warned, the kernel died); the message says which
    and what to do. Exit status 1; bad options are ``ParameterError`` (2), missing data
    ``DataError`` (2)."""


def log(msg: str) -> None:
    print(f"book: {msg}", flush=True)


def rel(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)
