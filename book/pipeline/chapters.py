"""The chapters: which there are, what parameters each declares, and the check of the values a
build would give them (``l2bn.chapter``), all before anything runs."""

from __future__ import annotations

import ast
import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2bn import chapter as declared
from l2bn.chapter import ChapterParameterError
from l2bn.errors import ParameterError

from .common import GLOBAL_PARAMETERS, KERNEL, log, rel
from .options import Extras


def discover(folder: Path) -> list[Path]:
    """The chapters: ``folder/*.py`` sorted by name, without helper modules named ``_*``."""
    chapters = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    if not chapters:
        raise ParameterError(f"--notebooks: no chapters in {folder}; it takes a folder of jupytext "
                             "percent-format .py files")
    return chapters


def select(chapters: list[Path], only: list[str] | None) -> list[Path]:
    """The chapters named in ``only`` (a stem such as ``04_update_rules`` or a path), else all."""
    if not only:
        return chapters
    by_stem = {p.stem: p for p in chapters}
    unknown = [name for name in only if Path(name).stem not in by_stem]
    if unknown:
        raise ParameterError(f"--only: no chapter {unknown[0]!r}; it takes chapter names, here "
                             f"{', '.join(by_stem)}")
    return [by_stem[Path(name).stem] for name in only]


def read_chapter(path: Path):
    """The chapter as a notebook (jupytext), with what papermill expects of every cell."""
    return _notebook(path.read_text())


def _notebook(text: str):
    import jupytext

    nb = jupytext.reads(text, fmt="py")
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])
    nb.metadata.setdefault("kernelspec", {"name": KERNEL, "display_name": "Python 3", "language": "python"})
    return nb


@functools.lru_cache(maxsize=64)
def _declared(text: str) -> dict[str, str]:
    import nbformat
    import papermill

    with tempfile.TemporaryDirectory(prefix="l2bn-book-inspect-") as tmp:
        ipynb = Path(tmp) / "chapter.ipynb"
        nbformat.write(_notebook(text), ipynb)
        return {name: p["default"] for name, p in papermill.inspect_notebook(ipynb).items()}


def declared_parameters(path: Path) -> dict[str, str]:
    """The parameters the chapter declares in its cell tagged ``parameters``: name → default as
    written there (papermill's own parser, through its public ``inspect_notebook``)."""
    return dict(_declared(path.read_text()))


def source_line(path: Path, cell_source: str) -> int | None:
    """The line of ``path`` where a cell with ``cell_source`` starts (1-based), if it is found."""
    lines = [ln for ln in cell_source.splitlines() if ln.strip()]
    if not lines:
        return None
    text = path.read_text().splitlines()
    for i, ln in enumerate(text):
        if ln == lines[0] and text[i : i + len(lines)] == lines[: len(text) - i]:
            return i + 1
    for i, ln in enumerate(text):
        if ln.strip() == lines[0].strip():
            return i + 1
    return None


# ---------------------------------------------------------------------------------------------
# The plan: each chapter to consider with its parameters, every value checked
# ---------------------------------------------------------------------------------------------


@dataclass
class Job:
    path: Path
    params: dict[str, Any]  # profile, dataset, device and the extras it declares


def check_settings(profile: str, dataset: str, device: str) -> None:
    """--profile, --dataset, --device as every chapter's parameters, named by their option."""
    for name, value in (("profile", profile), ("dataset", dataset), ("device", device)):
        try:
            declared.check_value(declared.ANY_CHAPTER, name, value)
        except ChapterParameterError as err:
            raise ParameterError(f"--{err}") from None


def _defaults(written: dict[str, str]) -> dict[str, Any]:
    """The declared defaults that are plain literals (``1 / 3`` is not, and is left out)."""
    out = {}
    for name, text in written.items():
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return out


def literal_defaults(path: Path) -> dict[str, Any]:
    """The literal defaults of ``path``'s parameters cell."""
    return _defaults(declared_parameters(path))


def _check(path: Path, written: dict[str, str], params: dict[str, Any], extras: Extras) -> None:
    try:
        declared.check_parameters(declared.spec_for(path.stem), {**_defaults(written), **params})
    except ChapterParameterError as err:
        option = extras.source.get(err.param)
        if option is None:  # the chapter's own default is refused
            raise ParameterError(f"{rel(path)}, its parameters cell: {err}") from None
        raise ParameterError(f"{option} {err} (chapter {path.stem})") from None


def plan(targets: list[Path], base: dict[str, Any], extras: Extras, only: bool) -> list[Job]:
    """(chapter, parameters) for each target: every extra parameter is declared by some chapter
    (by each chosen one with ``only``) and accepted by ``l2bn.chapter``'s declaration."""
    jobs, users = [], {k: [] for k in extras.values}
    for path in targets:
        written = declared_parameters(path)
        missing = [k for k in GLOBAL_PARAMETERS if k not in written]
        if missing:
            log(f"{path.stem}: note: its `parameters` cell does not declare {', '.join(missing)} "
                "(they are injected anyway)")
        params = dict(base)
        for k, v in extras.values.items():
            if k in written:
                params[k] = v
                users[k].append(path.stem)
            elif only:
                has = ", ".join(written) or "none (no cell tagged parameters)"
                raise ParameterError(f"{extras.source[k]} {k}: {path.stem} has no parameter {k!r}; its "
                                     f"parameters are: {has}")
        _check(path, written, params, extras)
        jobs.append(Job(path, params))
    unused = [k for k, chapters in users.items() if not chapters]
    if unused:
        k = unused[0]
        raise ParameterError(f"{extras.source[k]} {k}: no chapter declares the parameter {k!r}; see each "
                             "chapter's cell tagged parameters")
    return jobs


def shown(params: dict[str, Any]) -> str:
    """Parameters for the log, one line."""
    return " ".join(f"{k}={v!r}" for k, v in params.items())
