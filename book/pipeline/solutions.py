"""Solutions, and the copies of the book without them.

Solutions are written once, in the chapters' sources, as sphinx-exercise ``solution`` blocks
(``:::{solution} ex-label`` … ``:::``, or with backticks) inside markdown cells; a code cell that
belongs to a solution carries the tag ``solution``. Whatever a student sees is derived from those
sources by removing exactly these blocks and cells, never kept by hand in a second copy:
``book/handouts.py`` writes the handouts (``make handouts``), and ``student_sources`` the sources of
the student edition of the site (``make book SOLUTIONS=hide``), where sphinx-exercise's
``hide_solutions`` is on as well, so that neither the pages, the search index nor the notebooks
offered for download contain a solution.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import yaml

from . import publish
from .site import write_if_changed

SOLUTION_TAG = "solution"
# The opening line of a solution block: ':::{solution} label' or '```{solution} label' (any indent).
OPENING = re.compile(r"^[ \t]*(?P<fence>:{3,}|`{3,})\{solution\}")
OPTION = re.compile(r"^[ \t]*:[\w-]+:")


class UnclosedSolution(ValueError):
    """A solution block without its closing fence: stripping it could leave the rest in place."""


def _blocks(lines: list[str]) -> list[tuple[int, int]]:
    """(first, last) line index of every solution block in ``lines``."""
    spans, i = [], 0
    while i < len(lines):
        m = OPENING.match(lines[i])
        if not m:
            i += 1
            continue
        fence = m["fence"]
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), None)
        if end is None:
            raise UnclosedSolution(f"solution: the block opened on line {i + 1} ({lines[i].strip()!r}) "
                                   f"has no closing {fence!r}")
        spans.append((i, end))
        i = end + 1
    return spans


def solution_texts(text: str) -> list[str]:
    """The body of every solution block in ``text`` (a markdown cell), without its fences and options."""
    lines = text.splitlines()
    bodies = []
    for first, last in _blocks(lines):
        body = lines[first + 1 : last]
        while body and OPTION.match(body[0]):  # ':class: dropdown' and the like
            body = body[1:]
        bodies.append("\n".join(body).strip())
    return bodies


def strip_solutions(text: str) -> str:
    """``text`` without its solution blocks (and the blank line after each)."""
    lines = text.splitlines()
    drop: set[int] = set()
    for first, last in _blocks(lines):
        drop.update(range(first, last + 1))
        if last + 1 < len(lines) and not lines[last + 1].strip():
            drop.add(last + 1)
    kept = [ln for i, ln in enumerate(lines) if i not in drop]
    return "\n".join(kept).rstrip() + ("\n" if text.endswith("\n") else "")


def _source(cell) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def student_cells(cells: list) -> list:
    """The cells of a notebook as a student gets them: cells tagged ``solution`` dropped, solution
    blocks cut out of markdown cells, markdown cells left empty by that dropped too."""
    out = []
    for cell in cells:
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        if cell["cell_type"] == "markdown":
            text = _source(cell)
            stripped = strip_solutions(text)
            if stripped != text:
                if not stripped.strip():
                    continue
                cell = copy.deepcopy(cell)
                cell["source"] = stripped
        out.append(cell)
    return out


def chapter_solutions(path: Path) -> list[str]:
    """The solution texts of the chapter ``notebooks/<name>.py`` (blocks and tagged cells)."""
    import jupytext

    texts = []
    for cell in jupytext.read(path).cells:
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            texts.append(cell.source.strip())
        elif cell.cell_type == "markdown":
            texts.extend(solution_texts(cell.source))
    return texts



# ---------------------------------------------------------------------------------------------
# The student edition of the site
# ---------------------------------------------------------------------------------------------


def _student_copy(src: Path, target: Path) -> None:
    """Copy one source file of the site as the student edition needs it."""
    if src.suffix == ".ipynb":
        nb = json.loads(src.read_text())
        nb["cells"] = student_cells(nb["cells"])
        write_if_changed(target, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    elif src.suffix == ".md":
        write_if_changed(target, strip_solutions(src.read_text()))
    elif src.name == "_config.yml":
        config = yaml.safe_load(src.read_text())
        config.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
        config["title"] = f"{config.get('title', '')} (student edition)".strip()
        write_if_changed(target, "# Student edition of the generated configuration: do not edit.\n"
                          + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    elif not (target.is_file() and target.read_bytes() == src.read_bytes()):
        shutil.copy2(src, target)


def student_sources(stage: Path) -> Path:
    """A copy of the site's sources in ``stage`` (pages, executed notebooks, configuration, the zip
    of notebooks) without solutions, in ``<stage>-student``, with ``hide_solutions`` set for
    sphinx-exercise. Files are rewritten only when they change, so Sphinx rereads only what did."""
    dst = stage.with_name(stage.name + "-student")
    dst.mkdir(parents=True, exist_ok=True)
    skip = (".stamp.json", ".failed.ipynb", publish.ZIP_NAME)
    sources = [f for f in sorted(stage.iterdir()) if not f.name.startswith(".") and not f.name.endswith(skip)]
    for src in sources:
        if src.is_dir():
            shutil.copytree(src, dst / src.name, dirs_exist_ok=True)
        else:
            _student_copy(src, dst / src.name)
    if (stage / publish.ZIP_NAME).is_file():  # the zip again, from the notebooks without solutions
        publish.write_zip(dst, [f.stem for f in sources if f.suffix == ".ipynb"])
    wanted = {f.name for f in sources} | {publish.ZIP_NAME}
    for old in dst.iterdir():
        if old.name not in wanted:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    return dst
