"""Handouts: one unexecuted notebook per chapter, without the solutions (``make handouts``).

    python book/handouts.py [--notebooks notebooks] [--out book/_build/handouts]

Each handout is the chapter's source (``notebooks/<name>.py``) as a notebook, with every solution
block and every cell tagged ``solution`` removed (``pipeline.solutions``) and a note on top; the
exercises stay. A student runs it from the top, as the book did.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from l2bn.errors import ParameterError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.chapters import discover, read_chapter  # noqa: E402  (needs book/ on the path)
from pipeline.solutions import UnclosedSolution, student_cells  # noqa: E402

BOOK = Path(__file__).resolve().parent
REPO = BOOK.parent
HANDOUT_NOTE = ("*Handout generated from `notebooks/{name}.py`: the exercises are here, their solutions "
                "are not. Run the cells from the top; the first code cells set the parameters.*")


def handout(path: Path):
    """The chapter ``path`` (jupytext ``.py``) as a notebook without solutions, with a note on top."""
    import nbformat

    nb = read_chapter(path)
    nb.cells = [nbformat.from_dict(c) for c in student_cells(nb.cells)]
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(HANDOUT_NOTE.format(name=path.stem)))
    nb.metadata.pop("jupytext", None)
    return nb


def write_handouts(chapters: list[Path], out: Path) -> list[Path]:
    """Write ``out/<name>.ipynb`` for every chapter; returns the files written."""
    import nbformat

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in chapters:
        target = out / f"{path.stem}.ipynb"
        nbformat.write(handout(path), str(target))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write one .ipynb per chapter without its solutions.")
    ap.add_argument("--notebooks", type=Path, default=REPO / "notebooks",
                    help="folder of the chapters' .py sources (default notebooks/)")
    ap.add_argument("--out", type=Path, default=BOOK / "_build" / "handouts",
                    help="folder for the handouts (default book/_build/handouts)")
    args = ap.parse_args(argv)
    try:
        written = write_handouts(discover(args.notebooks), args.out)
    except (UnclosedSolution, ParameterError) as err:
        print(f"handouts: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 1)
    print(f"handouts: {len(written)} notebook(s) without solutions in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
