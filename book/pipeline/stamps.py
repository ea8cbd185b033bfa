"""Stamps: execute a chapter only when something it depends on changed.

``<stage>/<chapter>.stamp.json`` holds the hash of the chapter's inputs (its source, its
parameters, the dataset, the library, the helper modules ``notebooks/_*.py``, the pipeline) and,
for the status page and for a reader, what the last execution was: when it started, how long it
took, with which profile, dataset, device and code version, and which grids (``data/results/*.csv``)
it used: ``grids``, a list of ``{"file": "data/results/<rule>-<key>.csv", "cached": true}``.

Which grids a chapter used: the result files created or changed while it ran (trained now: the
files of the results folder with their size and mtime, before and after), plus every other result
file that its executed notebook names in an output (reused: the library prints the path of each
result it reuses or writes). A sweep run by another process at the same time counts as the
chapter's too.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from l2bn.errors import DataError, L2bnError
from l2bn.store import atomic_write

from .common import rel

# Bump when the way notebooks are executed or post-processed changes: every chapter reruns.
PIPELINE_VERSION = "2"


def _hash_files(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def library_identity() -> dict[str, str]:
    """The library as the chapters see it: its version, ``code_version()`` (the code behind the
    trained numbers) and a hash of the whole package, since modules outside ``code_version()``
    (theory, analysis, figures) decide what a chapter shows too."""
    import l2bn
    from l2bn.train import code_version

    return {"l2bn_version": l2bn.__version__, "code_version": code_version(),
            "package_sha256": _hash_files(sorted(Path(l2bn.__file__).parent.rglob("*.py")))}


def dataset_identity(dataset: str) -> str:
    """The data's fingerprint (no images loaded); a missing npz file is a ``DataError``."""
    from l2bn.data import dataset_fingerprint

    try:
        return dataset_fingerprint(dataset)
    except L2bnError:
        raise
    except (ValueError, RuntimeError) as err:  # the data module's own error types
        raise DataError(str(err)) from None


def stamp_inputs(source: Path, params: dict[str, Any], library: dict[str, str], data_id: str) -> dict:
    return {
        "pipeline": PIPELINE_VERSION,
        "source": source.name,
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "helpers_sha256": _hash_files(sorted(source.parent.glob("_*.py"))),
        "parameters": params,
        "dataset_fingerprint": data_id,
        **library,
    }


def stamp_hash(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def stamp_path(stage: Path, name: str) -> Path:
    return stage / f"{name}.stamp.json"


def is_current(stage: Path, name: str, digest: str) -> bool:
    """Whether the executed notebook of ``name`` exists and was made from inputs hashing to ``digest``."""
    stamp, executed = stamp_path(stage, name), stage / f"{name}.ipynb"
    if not (stamp.is_file() and executed.is_file()):
        return False
    try:
        return json.loads(stamp.read_text()).get("hash") == digest
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not a mapping
        return False


def last_seconds(stage: Path, name: str) -> float | None:
    """How long the last execution of ``name`` took, from its stamp (None without one)."""
    try:
        return float(json.loads(stamp_path(stage, name).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_stamp(stage: Path, name: str, inputs: dict, digest: str, run: dict[str, Any]) -> None:
    """The stamp: ``hash`` and ``inputs`` decide ``is_current``; the rest describes the run for a
    reader (``run``: started, executed (the end), seconds, grids)."""
    params = inputs["parameters"]
    stamp = {"hash": digest, "chapter": name, "profile": params.get("profile"),
             "dataset": params.get("dataset"), "device": params.get("device"),
             "code_version": inputs.get("code_version"), **run, "inputs": inputs}
    atomic_write(stamp_path(stage, name), (json.dumps(stamp, indent=2, default=str) + "\n").encode())


# ---------------------------------------------------------------------------------------------
# The cached grids a chapter used
# ---------------------------------------------------------------------------------------------

CSV = re.compile(r"[^\s'\"()\[\]<>,;]+\.csv")


def results_folder() -> Path:
    from l2bn.data import data_root

    return data_root() / "results"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Each result file in ``folder``: (size, mtime in ns)."""
    stats = {f.name: f.stat() for f in folder.glob("*.csv")}
    return {name: (st.st_size, st.st_mtime_ns) for name, st in stats.items()}


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _named_in_outputs(nb, folder: Path, cwd: Path) -> set[str]:
    names = set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = _text(out.get("text", "")) + "\n" + _text(out.get("data", {}).get("text/plain", ""))
            for token in CSV.findall(text):
                path = Path(token) if Path(token).is_absolute() else cwd / token
                if path.resolve().parent == folder.resolve() and path.is_file():
                    names.add(path.name)
    return names


def grids_used(before: dict[str, tuple[int, int]], nb, folder: Path, cwd: Path) -> list[dict[str, Any]]:
    """The result files the executed notebook ``nb`` used, each ``{"file": path relative to the
    repository, "cached": bool}``: created or changed since ``before`` (trained now, not cached),
    or named in one of its outputs and unchanged (reused from the cache)."""
    after = snapshot(folder)
    changed = {name for name, state in after.items() if before.get(name) != state}
    return [{"file": rel(folder / name), "cached": name not in changed}
            for name in sorted(changed | _named_in_outputs(nb, folder, cwd))]
