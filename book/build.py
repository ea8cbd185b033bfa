"""Build the book: notebooks/*.py → executed notebooks → HTML (``make book``, ``make chapter``).

    python book/build.py [--profile quick] [--dataset cifar10] [--device auto]
                         [--only NAME ...] [-p NAME VALUE] [-r NAME VALUE] [-y YAML] [-f FILE]
                         [--force] [--dry-run] [--no-html] [--stage DIR] [--out DIR] [--notebooks DIR]

1. Every ``notebooks/*.py`` (jupytext percent format; names starting with ``_`` are skipped) is a
   chapter, in the order of its file name.
2. Before anything runs, every option and every chapter parameter is checked (``l2bn.chapter``
   declares what each accepts); a bad one is one line and exit status 2.
3. A chapter is executed only when its inputs changed since it was last executed: its source, its
   parameters, the dataset, the library and any helper ``notebooks/_*.py``, hashed into
   ``<stage>/<name>.stamp.json`` next to the executed notebook ``<stage>/<name>.ipynb``.
4. Execution is jupytext (``.py`` → notebook) then papermill, which injects ``profile``, ``dataset``,
   ``device`` and any ``-p/-r/-y/-f`` parameters after the cell tagged ``parameters`` (folded in
   the page: ``hide-cell``).
5. The table of contents is written from the chapters found, and ``jupyter-book build -W -n
   --keep-going`` turns the stage into ``<out>/_build/html`` without executing anything again.

The parts live in ``book/pipeline/`` (options, chapters, stamps, execute, site, cli).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.cli import main  # noqa: E402  (needs book/ on the path)

if __name__ == "__main__":
    sys.exit(main())
