"""Build the book: notebooks/*.py → executed notebooks → HTML.

    python book/build.py [--profile quick] [--dataset cifar10] [--device auto]
                         [--only NAME ...] [-p NAME VALUE] [-r NAME VALUE] [-y YAML] [-f FILE]
                         [--force] [--no-html] [--stage DIR] [--out DIR] [--notebooks DIR]

1. Every ``notebooks/*.py`` (jupytext percent format; names starting with ``_`` are skipped) is a
   chapter, in the order of its file name.
2. A chapter is executed only when its inputs changed since it was last executed: its source, its
   parameters, the dataset, the library (``l2bn.__version__``, ``l2bn.train.code_version()`` and a
   hash of the package's source) and any helper ``notebooks/_*.py``. The inputs are hashed into
   ``<stage>/<name>.stamp.json`` next to the executed notebook ``<stage>/<name>.ipynb``.
3. Execution is jupytext (``.py`` → notebook) then papermill, which injects ``profile``, ``dataset``,
   ``device`` and any ``-p/-r/-y/-f`` parameters after the cell tagged ``parameters``. The injected
   cell is tagged ``hide-cell`` so the page shows it folded.
4. The table of contents is written from the chapters found, and ``jupyter-book build -W -n
   --keep-going`` turns the stage into ``<out>/_build/html`` without executing anything again.

Any failing cell fails the build with the notebook, cell and source line; so does any Sphinx warning.
With ``--dataset cifar10`` and no CIFAR-10 on disk, the data is fetched before anything runs, and
the build stops at once if that fails (offline: ``DATASET=synthetic``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

BOOK = Path(__file__).resolve().parent
REPO = BOOK.parent
NOTEBOOKS = REPO / "notebooks"
# The hand-written pages copied next to the executed notebooks (the sources of the site).
PAGES = ("intro.md", "notation.md", "bibliography.md", "references.bib")
GLOBAL_PARAMETERS = ("profile", "dataset", "device")
# Bump when the way notebooks are executed or post-processed changes: every chapter reruns.
PIPELINE_VERSION = "2"
KERNEL = "python3"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class BuildError(RuntimeError):
    """A build step failed; the message says which and what to do."""


def log(msg: str) -> None:
    print(f"book: {msg}", flush=True)


def rel(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# Chapters and their parameters
# ---------------------------------------------------------------------------------------------


def discover(folder: Path = NOTEBOOKS) -> list[Path]:
    """The chapters: ``folder/*.py`` sorted by name, without helper modules named ``_*``."""
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def select(chapters: list[Path], only: list[str] | None) -> list[Path]:
    """The chapters named in ``only`` (a stem such as ``04_update_rules`` or a path), else all."""
    if not only:
        return chapters
    by_stem = {p.stem: p for p in chapters}
    chosen = []
    for name in only:
        stem = Path(name).stem
        if stem not in by_stem:
            raise BuildError(f"no chapter {name!r}; the chapters are: {', '.join(by_stem)}")
        chosen.append(by_stem[stem])
    return chosen


def resolve_type(value: str) -> Any:
    """papermill's typing of ``-p`` values: True/False/None, int, float, else the string."""
    if value in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[value]
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def extra_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The ``-f``, ``-y``, ``-p``, ``-r`` parameters merged in papermill's order (later wins)."""
    params: dict[str, Any] = {}
    for path in args.parameters_file:
        params.update(yaml.safe_load(Path(path).read_text()) or {})
    for text in args.parameters_yaml:
        params.update(yaml.safe_load(text) or {})
    for name, value in args.parameters:
        params[name] = resolve_type(value)
    for name, value in args.parameters_raw:
        params[name] = value
    clash = sorted(set(params) & set(GLOBAL_PARAMETERS))
    if clash:
        raise BuildError(
            f"set {', '.join(clash)} with --profile/--dataset/--device (make: PROFILE=, DATASET=, DEVICE=), "
            "not as a notebook parameter"
        )
    return params


def declared_parameters(nb) -> dict[str, Any]:
    """The parameters a notebook declares in its cell tagged ``parameters`` (papermill's parser)."""
    from papermill.inspection import _infer_parameters

    return {p.name: p for p in _infer_parameters(nb)}


def read_chapter(path: Path):
    import jupytext

    nb = jupytext.read(path)
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])  # papermill expects every cell to have tags
    nb.metadata.setdefault("kernelspec", {"name": KERNEL, "display_name": "Python 3", "language": "python"})
    return nb


# ---------------------------------------------------------------------------------------------
# Stamps: execute only what changed
# ---------------------------------------------------------------------------------------------


def library_identity() -> dict[str, str]:
    """The library as the chapters see it: its version, ``code_version()`` (the code behind the
    trained numbers) and a hash of the whole package, since modules outside ``code_version()``
    (theory, analysis, figures) decide what a chapter shows too."""
    import l2bn
    from l2bn.train import code_version

    h = hashlib.sha256()
    for f in sorted(Path(l2bn.__file__).parent.rglob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return {"l2bn_version": l2bn.__version__, "code_version": code_version(),
            "package_sha256": h.hexdigest()[:16]}


def helpers_identity(folder: Path) -> str:
    """A hash of the helper modules ``notebooks/_*.py`` that chapters may import."""
    h = hashlib.sha256()
    for f in sorted(folder.glob("_*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def dataset_identity(dataset: str) -> str:
    from l2bn.data import DatasetError, dataset_fingerprint

    try:
        return dataset_fingerprint(dataset)
    except (ValueError, DatasetError) as err:
        raise BuildError(str(err)) from err


def stamp_inputs(source: Path, params: dict[str, Any], library: dict[str, str], data_id: str) -> dict:
    return {
        "pipeline": PIPELINE_VERSION,
        "source": source.name,
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "helpers_sha256": helpers_identity(source.parent),
        "parameters": params,
        "dataset_fingerprint": data_id,
        **library,
    }


def stamp_hash(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def is_current(stage: Path, name: str, digest: str) -> bool:
    stamp, executed = stage / f"{name}.stamp.json", stage / f"{name}.ipynb"
    if not (stamp.is_file() and executed.is_file()):
        return False
    try:
        return json.loads(stamp.read_text()).get("hash") == digest
    except ValueError:
        return False


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Preflight: fail at once, before any notebook runs
# ---------------------------------------------------------------------------------------------


def preflight(profile: str, dataset: str, device: str) -> None:
    """Check the settings, and that the dataset is on disk (fetching CIFAR-10 if it is not)."""
    from l2bn.data import DatasetError, check_dataset_name, data_root, fetch_cifar10
    from l2bn.profiles import get_profile
    from l2bn.train import resolve_device

    try:
        get_profile(profile)
        check_dataset_name(dataset)
        resolve_device(device)
    except ValueError as err:
        raise BuildError(str(err)) from err
    if dataset == "cifar10":
        root = data_root()
        log(f"checking for CIFAR-10 in {root} (downloading it if missing)")
        try:
            fetch_cifar10(root)
        except DatasetError as err:
            raise BuildError(
                f"{err}\n\nCIFAR-10 is not on this machine and could not be downloaded, so no notebook was "
                "run. To build offline, use the synthetic data set:\n"
                f"    make book PROFILE={profile} DATASET=synthetic\n"
                "or copy cifar-10-batches-py/ into the data folder "
                f"({root}) and run `make book` again."
            ) from err


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------


def _source_line(path: Path, cell_source: str) -> int | None:
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


def failure_message(path: Path, err, failed_copy: Path, nb_source) -> str:
    number = next((i + 1 for i, c in enumerate(nb_source.cells) if c.source == err.source), None)
    line = _source_line(path, err.source or "")
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


def execute(path: Path, params: dict[str, Any], stage: Path, inputs: dict, digest: str) -> None:
    """Run one chapter through papermill into ``stage/<name>.ipynb`` and write its stamp."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    name = path.stem
    nb = read_chapter(path)
    failed_copy = stage / f"{name}.failed.ipynb"
    env_before = os.environ.get("PYDEVD_DISABLE_FILE_VALIDATION")
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # quiet debugpy's warning in the kernel
    with tempfile.TemporaryDirectory(prefix=f"l2bn-book-{name}-") as tmp:
        out = Path(tmp) / f"{name}.ipynb"
        t0 = time.perf_counter()
        try:
            result = papermill.execute_notebook(
                nb, str(out), parameters=params, kernel_name=KERNEL, cwd=str(path.parent),
                progress_bar=False, log_output=False,
            )
        except PapermillExecutionError as err:
            if out.exists():
                shutil.copyfile(out, failed_copy)
            raise BuildError(failure_message(path, err, failed_copy, nb)) from None
        except Exception as err:  # the kernel died, could not start, ...
            raise BuildError(f"notebook {rel(path)} could not be executed: "
                             f"{type(err).__name__}: {err}") from err
        finally:
            if env_before is None:
                os.environ.pop("PYDEVD_DISABLE_FILE_VALIDATION", None)
        seconds = time.perf_counter() - t0
    # papermill records its input (here the notebook itself) and a temporary output path.
    result.metadata.papermill["input_path"] = rel(path)
    result.metadata.papermill["output_path"] = rel(stage / f"{name}.ipynb")
    for cell in result.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]
    atomic_write_text(stage / f"{name}.ipynb", nbformat.writes(result))
    failed_copy.unlink(missing_ok=True)
    stamp = {"hash": digest, "inputs": inputs, "seconds": round(seconds, 1),
             "executed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(stage / f"{name}.stamp.json", json.dumps(stamp, indent=2, default=str) + "\n")
    log(f"{name}: executed in {seconds:.1f} s")


# ---------------------------------------------------------------------------------------------
# The site
# ---------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def profile_table() -> str:
    """The profiles of ``l2bn.profiles`` as a Markdown table (for the notation page)."""
    from l2bn.profiles import PROFILES

    rows = [
        "| profile | train / val / test images | conv widths | batch | epochs | η grid (SGD-like) "
        "| η grid (ADAM-like) | λ grid |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, p in PROFILES.items():
        lrs = p.get("lrs", {})
        lrs = lrs if isinstance(lrs, dict) else {"sgd": lrs, "adam": lrs}
        cells = [
            f"`{name}`",
            " / ".join(_fmt(p.get(k, "?")) for k in ("n_train", "n_val", "n_test")),
            "-".join(_fmt(w) for w in p.get("widths", ())),
            _fmt(p.get("batch_size", "?")),
            _fmt(p.get("epochs", "?")),
            _fmt(lrs.get("sgd", "?")),
            _fmt(lrs.get("adam", "?")),
            _fmt(p.get("l2s", "?")),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def copy_if_changed(src: Path, dst: Path) -> None:
    """Copy keeping the time stamp, and only when the content differs (Sphinx rereads less)."""
    if dst.is_file() and dst.read_bytes() == src.read_bytes():
        return
    shutil.copy2(src, dst)


def write_if_changed(path: Path, text: str) -> None:
    if not (path.is_file() and path.read_text() == text):
        path.write_text(text)


def assemble(stage: Path, chapters: list[Path], settings: str) -> list[str]:
    """Write the Sphinx source folder: pages, configuration, table of contents. Returns the chapters
    that have an executed notebook (the others are left out of the table of contents)."""
    for page in PAGES:
        copy_if_changed(BOOK / page, stage / page)
    if (BOOK / "_static").is_dir():
        shutil.copytree(BOOK / "_static", stage / "_static", dirs_exist_ok=True)
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    config.setdefault("parse", {})["myst_substitutions"] = {
        "build_settings": settings,
        "profile_table": profile_table(),
    }
    header = "# Generated by book/build.py from book/_config.yml: edit that file, not this one.\n"
    text = header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    write_if_changed(stage / "_config.yml", text)
    present = [p.stem for p in chapters if (stage / f"{p.stem}.ipynb").is_file()]
    toc = {
        "format": "jb-book",
        "root": "intro",
        "chapters": [{"file": "notation"}, *({"file": s} for s in present), {"file": "bibliography"}],
    }
    header = "# Generated by book/build.py from notebooks/*.py: do not edit.\n"
    write_if_changed(stage / "_toc.yml", header + yaml.safe_dump(toc, sort_keys=False))
    return present


def remove_stale(stage: Path, chapters: list[Path]) -> None:
    """Delete executed notebooks whose source is gone from notebooks/."""
    names = {p.stem for p in chapters}
    for f in stage.glob("*.ipynb"):
        stem = f.name.split(".")[0]
        if stem not in names:
            f.unlink()
            (stage / f"{stem}.stamp.json").unlink(missing_ok=True)
            log(f"removed {f.name} (no notebooks/{stem}.py any more)")


NB_WARNING = re.compile(r"(?P<path>/\S+?/(?P<name>[^/\s]+)\.ipynb):(?P<line>\d+): (?:WARNING|ERROR)")


def source_location(stage: Path, sources: dict[str, Path], name: str, line: int) -> str | None:
    """Where a Sphinx message about ``<stage>/<name>.ipynb:<line>`` points in notebooks/<name>.py.

    MyST-NB numbers the lines of cell i (0-based) from (i + 1)·10000."""
    src, executed = sources.get(name), stage / f"{name}.ipynb"
    if src is None or not executed.is_file() or line < 10000:
        return None
    cells = json.loads(executed.read_text())["cells"]
    index, offset = line // 10000 - 1, line % 10000
    if not 0 <= index < len(cells):
        return None
    own = [i for i, c in enumerate(cells) if "injected-parameters" not in c["metadata"].get("tags", [])]
    if index not in own:
        return f"{rel(src)}, the injected parameters"
    text = "".join(cells[index]["source"])
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    start = _source_line(src, first) if cells[index]["cell_type"] == "code" else (
        _source_line(src, f"# {first}") or _source_line(src, first))
    where = f"{rel(src)}, cell {own.index(index) + 1}"
    return f"{where}, near line {start + offset}" if start else where


def build_html(stage: Path, out: Path, sources: dict[str, Path]) -> Path:
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(stage), "--path-output", str(out),
           "-W", "-n", "--keep-going"]
    # Sphinx reports a page's warnings only when it rereads the page: after a failed build, start from
    # a fresh environment, or an unchanged page with a warning would pass the second time.
    failed_marker = out / "_build" / ".last-build-failed"
    if failed_marker.exists():
        shutil.rmtree(out / "_build" / ".doctrees", ignore_errors=True)
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    for line in proc.stdout:
        m = NB_WARNING.search(line)
        if m:  # say where in notebooks/<name>.py a warning about an executed notebook points
            try:
                where = source_location(stage, sources, m["name"], int(m["line"]))
            except (OSError, ValueError, KeyError):
                where = None
            if where:
                line = line.rstrip("\n") + f"  [{where}]\n"
        sys.stdout.write(line)
    sys.stdout.flush()
    rc = proc.wait()
    failed_marker.parent.mkdir(parents=True, exist_ok=True)
    if rc != 0:
        failed_marker.touch()
        raise BuildError(f"jupyter-book build failed (exit status {rc}); the warnings above name the "
                         "page and line (a warning fails the build: -W)")
    failed_marker.unlink(missing_ok=True)
    html = out / "_build" / "html"
    log(f"HTML in {html} ({time.perf_counter() - t0:.1f} s); open {html / 'index.html'}")
    return html


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick", help="smoke, quick or paper (default quick)")
    ap.add_argument("--dataset", default="cifar10", help="cifar10, synthetic or npz:PATH (default cifar10)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="execute only these chapters (e.g. 04_update_rules)")
    ap.add_argument("-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a notebook parameter, typed as papermill does (bool, None, int, float, str)")
    ap.add_argument("-r", "--parameters_raw", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a notebook parameter kept as a string")
    ap.add_argument("-y", "--parameters_yaml", action="append", default=[], metavar="YAML",
                    help='notebook parameters as YAML, e.g. -y "lrs: [0.01, 0.1]"')
    ap.add_argument("-f", "--parameters_file", action="append", default=[], metavar="FILE",
                    help="notebook parameters from a YAML file")
    ap.add_argument("--force", action="store_true", help="execute the chosen chapters even if up to date")
    ap.add_argument("--no-html", action="store_true", help="execute notebooks only, no jupyter-book build")
    ap.add_argument("--stage", type=Path, default=BOOK / "_generated",
                    help="folder for executed notebooks and the site's sources (default book/_generated)")
    ap.add_argument("--notebooks", type=Path, default=NOTEBOOKS,
                    help="folder of the chapters' .py sources (default notebooks/)")
    ap.add_argument("--out", type=Path, default=BOOK,
                    help="jupyter-book --path-output; the site goes to OUT/_build/html (default book/)")
    return ap.parse_args(argv)


def plan(args: argparse.Namespace, chapters: list[Path], targets: list[Path], extras: dict[str, Any]):
    """(chapter, parameters) for each target, checking every extra parameter is declared somewhere."""
    base = {"profile": args.profile, "dataset": args.dataset, "device": args.device}
    jobs, declared_by = [], {k: [] for k in extras}
    for path in targets:
        declared = declared_parameters(read_chapter(path))
        missing = [k for k in GLOBAL_PARAMETERS if k not in declared]
        if missing:
            log(f"{path.stem}: note: its `parameters` cell does not declare {', '.join(missing)} "
                "(they are injected anyway)")
        params = dict(base)
        for k, v in extras.items():
            if k in declared:
                params[k] = v
                declared_by[k].append(path.stem)
            elif args.only:
                raise BuildError(f"{path.stem} has no parameter {k!r}; its parameters are: "
                                 f"{', '.join(declared) or 'none (no cell tagged parameters)'}")
        jobs.append((path, params))
    unused = [k for k, users in declared_by.items() if not users]
    if unused:
        raise BuildError(f"no chapter declares the parameter(s) {', '.join(unused)}")
    return jobs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    stage, out = args.stage.resolve(), args.out.resolve()
    try:
        chapters = discover(args.notebooks)
        if not chapters:
            raise BuildError(f"no notebooks found in {args.notebooks} (*.py, jupytext percent format)")
        targets = select(chapters, args.only)
        extras = extra_parameters(args)
        stage.mkdir(parents=True, exist_ok=True)
        library = library_identity()
        settings = (f"profile `{args.profile}`, dataset `{args.dataset}`, device `{args.device}` "
                    f"(l2bn {library['l2bn_version']}, code version `{library['code_version']}`)")
        log(f"{len(chapters)} chapter(s); {settings}")
        jobs = plan(args, chapters, targets, extras)
        data_id = dataset_identity(args.dataset)
        todo = []
        for path, params in jobs:
            inputs = stamp_inputs(path, params, library, data_id)
            digest = stamp_hash(inputs)
            if not args.force and is_current(stage, path.stem, digest):
                log(f"{path.stem}: up to date")
            else:
                todo.append((path, params, inputs, digest))
        if todo:
            preflight(args.profile, args.dataset, args.device)
        failures = []
        for i, (path, params, inputs, digest) in enumerate(todo, 1):
            shown = " ".join(f"{k}={v!r}" for k, v in params.items())
            log(f"[{i}/{len(todo)}] {path.stem}: executing with {shown}")
            try:
                execute(path, params, stage, inputs, digest)
            except BuildError as err:
                failures.append(str(err))
                log(f"FAILED: {str(err).splitlines()[0]} (details at the end)")
        if failures:
            raise BuildError(f"{len(failures)} notebook(s) failed; no HTML was built:\n\n"
                             + "\n\n".join(failures))
        remove_stale(stage, chapters)
        if args.no_html:
            return 0
        present = assemble(stage, chapters, settings)
        absent = [p.stem for p in chapters if p.stem not in present]
        if absent:
            log(f"not executed yet, left out of the site: {', '.join(absent)} (run the full build)")
        build_html(stage, out, {p.stem: p for p in chapters})
    except BuildError as err:
        print(f"\nbook: ERROR: {err}", file=sys.stderr, flush=True)
        return 2 if "could not be downloaded" in str(err) else 1
    log(f"done in {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
