"""Execution: the data on disk first, then each chapter through papermill's public
``execute_notebook``, its injected parameters folded, its stamp written."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from l2bn.errors import DataError, L2bnError
from l2bn.store import atomic_write

from . import stamps
from .chapters import read_chapter, source_line
from .common import KERNEL, BuildError, log, rel

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def ensure_dataset(profile: str, dataset: str) -> None:
    """With ``cifar10``, make sure it is on disk (downloading it if not); stop at once otherwise."""
    if dataset != "cifar10":
        return
    from l2bn.data import data_root, fetch_cifar10

    root = data_root()
    log(f"checking for CIFAR-10 in {root} (downloading it if missing)")
    try:
        fetch_cifar10(root)
    except (L2bnError, RuntimeError, OSError) as err:  # the data module's errors, a failed download
        raise DataError(
            f"{err}\n\nCIFAR-10 is not on this machine and could not be downloaded, so no notebook was "
            "run. To build offline, use the synthetic data set:\n"
            f"    make book PROFILE={profile} DATASET=synthetic\n"
            f"or copy cifar-10-batches-py/ into the data folder ({root}) and run `make book` again."
        ) from err


def failure_message(path: Path, err, failed_copy: Path, nb_source) -> str:
    """Where a cell failed, in the chapter's own source: cell number, line, the error, its traceback."""
    number = next((i + 1 for i, c in enumerate(nb_source.cells) if c.source == err.source), None)
    line = source_line(path, err.source or "")
    tb = ANSI.sub("", "\n".join(err.traceback or []))
    # IPython names the failing line of the cell itself in its first frame: "Cell In[3], line 8".
    in_cell = re.search(r"Cell In\[\d*\], line (\d+)", tb)
    where = f"cell {number}" if number else f"cell index {err.cell_index} of the executed notebook"
    if line and in_cell:
        blank = len(err.source) - len(err.source.lstrip("\n"))
        where += f" (line {line + int(in_cell[1]) - 1 - blank} of {rel(path)})"
    elif line:
        where += f" (which starts at line {line} of {rel(path)})"
    where += f", In [{err.exec_count}]"
    first = next((ln for ln in (err.source or "").splitlines() if ln.strip()), "")
    tb_tail = "\n".join("    " + ln for ln in tb.splitlines()[-15:])
    return (
        f"notebook {rel(path)} failed in {where}:\n"
        f"    {err.ename}: {err.evalue}\n"
        f"    the cell starts: {first}\n"
        f"{tb_tail}\n"
        f"    the executed notebook, with the error, is {failed_copy}"
    )


def _run(path: Path, nb, params: dict[str, Any], out: Path, failed_copy: Path):
    """papermill on ``nb`` into ``out``; a failure becomes a ``BuildError`` saying where."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    before = os.environ.get("PYDEVD_DISABLE_FILE_VALIDATION")
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # quiet debugpy's warning in the kernel
    try:
        return papermill.execute_notebook(nb, str(out), parameters=params, kernel_name=KERNEL,
                                          cwd=str(path.parent), progress_bar=False, log_output=False)
    except PapermillExecutionError as err:
        if out.exists():
            shutil.copyfile(out, failed_copy)
        raise BuildError(failure_message(path, err, failed_copy, nb)) from None
    except Exception as err:  # the kernel died, could not start, ...
        raise BuildError(f"notebook {rel(path)} could not be executed: {type(err).__name__}: {err}") from err
    finally:
        if before is None:
            os.environ.pop("PYDEVD_DISABLE_FILE_VALIDATION", None)


def _fold_injected(result, path: Path, executed: Path) -> None:
    # papermill records its input (here the notebook itself) and a temporary output path.
    result.metadata.papermill["input_path"] = rel(path)
    result.metadata.papermill["output_path"] = rel(executed)
    for cell in result.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]


def execute(path: Path, params: dict[str, Any], stage: Path, inputs: dict, digest: str) -> None:
    """Run one chapter into ``stage/<name>.ipynb`` and write its stamp."""
    import nbformat

    name = path.stem
    nb = read_chapter(path)
    failed_copy, executed = stage / f"{name}.failed.ipynb", stage / f"{name}.ipynb"
    folder = stamps.results_folder()
    before = stamps.snapshot(folder)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"l2bn-book-{name}-") as tmp:
        result = _run(path, nb, params, Path(tmp) / f"{name}.ipynb", failed_copy)
    seconds = time.perf_counter() - t0
    _fold_injected(result, path, executed)
    atomic_write(executed, nbformat.writes(result).encode())
    failed_copy.unlink(missing_ok=True)
    stamps.write_stamp(stage, name, inputs, digest, {
        "started": started, "executed": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 1),
        "grids": stamps.grids_used(before, result, folder, path.parent)})
    log(f"{name}: executed in {seconds:.1f} s")
