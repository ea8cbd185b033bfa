"""Exercises and what students get: every chapter has numbered exercises with solutions, solutions
are cut out exactly (book/pipeline/solutions.py), the handouts (`make handouts`) and the sources of
the student edition contain no solution text. The student edition's built pages are checked in
tests/test_book.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "book"))

from pipeline import publish  # noqa: E402
from pipeline.solutions import (  # noqa: E402
    UnclosedSolution,
    chapter_solutions,
    solution_texts,
    strip_solutions,
    student_cells,
    student_sources,
)

CHAPTERS = sorted(p for p in (REPO / "notebooks").glob("*.py") if not p.name.startswith("_"))
EXPERIMENTS = [p for p in CHAPTERS if p.stem[:2] in {"05", "06", "07", "08", "09", "10"}]
EXERCISE = re.compile(r"^# (:{3,}|`{3,})\{exercise\}\s*$\n^# :label: (\S+)", re.M)
SOLUTION = re.compile(r"^# (:{3,}|`{3,})\{solution\} (\S+)", re.M)

TEXT = """Intro.

:::{exercise}
:label: ex-a
Why?
:::

:::{solution} ex-a
:class: dropdown
Because of $x$ and a fence:
```python
print(1)
```
:::

Between.

````{solution} ex-b
Nested:
```{note}
inside
```
````
After.
"""


def body_lines(solutions: list[str]) -> list[str]:
    """The lines of solution text long enough to identify it anywhere."""
    return [ln.strip() for s in solutions for ln in s.splitlines() if len(ln.strip()) >= 25]


def assert_no_solution_text(text: str, solutions: list[str], where: str) -> None:
    assert "{solution}" not in text, f"{where}: a solution directive is left"
    leaked = [ln for ln in body_lines(solutions) if ln in text]
    assert not leaked, f"{where}: solution text left: {leaked[:2]}"


# ---------------------------------------------------------------------------------------------
# Cutting solutions out
# ---------------------------------------------------------------------------------------------


def test_strip_solutions_removes_exactly_the_solution_blocks():
    out = strip_solutions(TEXT)
    assert "Because" not in out and "print(1)" not in out and "inside" not in out and "Nested" not in out
    for kept in ("Intro.", ":::{exercise}", ":label: ex-a", "Why?", "Between.", "After."):
        assert kept in out
    assert out.endswith("After.\n")
    assert solution_texts(TEXT) == ["Because of $x$ and a fence:\n```python\nprint(1)\n```",
                                    "Nested:\n```{note}\ninside\n```"]
    assert strip_solutions("no solutions here\n") == "no solutions here\n"


def test_an_unclosed_solution_is_refused_rather_than_half_removed():
    with pytest.raises(UnclosedSolution, match="line 2"):
        strip_solutions("text\n:::{solution} ex-a\nanswer\n")


def test_student_cells_drop_tagged_cells_and_cells_left_empty():
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ":::{solution} ex-a\nanswer\n:::\n"},
        {"cell_type": "code", "metadata": {"tags": ["solution"]}, "source": "answer = 42"},
        {"cell_type": "markdown", "metadata": {}, "source": ["Keep ", "this.\n"]},
        {"cell_type": "markdown", "metadata": {}, "source": "Ask.\n\n:::{solution} ex-b\nno\n:::\n"},
    ]
    out = student_cells(cells)
    assert [c["source"] for c in out] == [["Keep ", "this.\n"], "Ask.\n"]
    assert cells[3]["source"].startswith("Ask.\n\n:::{solution}"), "the input cells must not change"


# ---------------------------------------------------------------------------------------------
# The chapters' exercises
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_has_exercises_each_with_a_plain_solution(path: Path):
    text = path.read_text()
    exercises = [m[2] for m in EXERCISE.finditer(text)]
    solved = [m[2] for m in SOLUTION.finditer(text)]
    assert len(exercises) >= 2, f"{path.name}: fewer than two sphinx-exercise exercises"
    assert solved == exercises, f"{path.name}: one solution per exercise, in order: {exercises} {solved}"
    # Gated solutions (solution-start/-end) crash a build with hide_solutions (sphinx-exercise #89).
    assert "{solution-start}" not in text and "{exercise-start}" not in text
    assert len(chapter_solutions(path)) == len(exercises)


def test_exercise_labels_are_unique_across_the_book():
    labels = [m[2] for p in CHAPTERS for m in EXERCISE.finditer(p.read_text())]
    assert len(labels) == len(set(labels)), "two exercises share a label"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_chapters_say_how_to_rerun_and_what_they_found(path: Path):
    text = path.read_text()
    assert re.search(r"make (chapter NB=" + path.stem + r"|sweep) ", text), \
        f"{path.name}: no exercise gives the command that reruns it"
    assert "{admonition} What we found" in text, f"{path.name}: no 'What we found' box"
    box = text.split("{admonition} What we found", 1)[1].split("# :::", 1)[0]
    assert "{glue:text}" in box, f"{path.name}: the 'What we found' box has no glued number"


# ---------------------------------------------------------------------------------------------
# Handouts and the student edition's sources
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def handouts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("handouts")
    proc = subprocess.run([sys.executable, str(REPO / "book" / "handouts.py"), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_handouts_are_one_notebook_per_chapter_without_solution_text(handouts: Path):
    import nbformat

    assert sorted(p.stem for p in handouts.glob("*.ipynb")) == [p.stem for p in CHAPTERS]
    for path in CHAPTERS:
        nb = nbformat.read(str(handouts / f"{path.stem}.ipynb"), as_version=4)
        nbformat.validate(nb)
        text = "\n".join(c.source for c in nb.cells)
        solutions = chapter_solutions(path)
        assert solutions and body_lines(solutions), f"{path.stem}: no solution text to look for"
        assert_no_solution_text(text, solutions, f"handout {path.stem}")
        assert "{exercise}" in text, f"{path.stem}: the handout lost its exercises"
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
        assert "Handout generated from" in nb.cells[0].source


def test_handouts_refuse_an_empty_folder(tmp_path: Path):
    proc = subprocess.run([sys.executable, str(REPO / "book" / "handouts.py"), "--notebooks", str(tmp_path),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--notebooks" in proc.stderr, proc.stderr


def test_student_sources_strip_notebooks_pages_and_the_zip(tmp_path: Path):
    stage = tmp_path / "src"
    stage.mkdir()
    (stage / "_static").mkdir()
    (stage / "_static" / "x.css").write_text("p {}")
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": TEXT},
                    {"cell_type": "code", "metadata": {"tags": ["solution"]}, "source": "answer = 42",
                     "outputs": [], "execution_count": None}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (stage / "01_a.ipynb").write_text(json.dumps(nb))
    (stage / "01_a.stamp.json").write_text("{}")
    (stage / "page.md").write_text(TEXT)
    (stage / "_config.yml").write_text("title: Book\nsphinx:\n  config: {}\n")
    publish.write_zip(stage, ["01_a"])
    dst = student_sources(stage)
    assert dst == tmp_path / "src-student"
    assert not (dst / "01_a.stamp.json").exists() and (dst / "_static" / "x.css").is_file()
    solutions = solution_texts(TEXT) + ["answer = 42"]
    assert_no_solution_text((dst / "01_a.ipynb").read_text(), solutions, "notebook")
    assert_no_solution_text((dst / "page.md").read_text(), solutions, "page")
    with zipfile.ZipFile(dst / publish.ZIP_NAME) as zf:
        assert zf.namelist() == ["01_a.ipynb"]
        assert_no_solution_text(zf.read("01_a.ipynb").decode(), solutions, "zip")
    assert "Because of" in (stage / "01_a.ipynb").read_text(), "the stage itself must keep its solutions"
    import yaml

    config = yaml.safe_load((dst / "_config.yml").read_text())
    assert config["sphinx"]["config"]["hide_solutions"] is True
    assert "student edition" in config["title"]
    (stage / "page.md").unlink()
    student_sources(stage)
    assert not (dst / "page.md").exists(), "a page removed from the stage stays in the student copy"
