"""The status page: how each chapter of this copy of the book was computed, from its stamp.

The build writes ``<stage>/<chapter>.stamp.json`` after executing a chapter (what it depended on,
when it ran, how long it took). ``write_page(stage, chapters)`` turns those stamps, and the log
lines of the executed notebooks that name the stored sweeps they loaded or trained
(``l2bn: reusing cached result PATH`` / ``l2bn: wrote PATH``), into ``<stage>/status.md``: one row
per chapter with when it ran, how long it took, with which profile, dataset, device and code
version, which grids it used (from the cache or trained, on which device, in how long) and, where
the stamp records them, its claims' verdicts. A teacher reads there, before class, that the build
is complete and how long each chapter takes to rerun.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .common import REPO

PAGE = "status"
# What l2bn.results.run_sweep prints when it loads or stores a grid.
GRID_LOG = re.compile(r"l2bn: (?P<how>reusing cached result|wrote) (?P<path>\S+\.csv)")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _title(nb: dict[str, Any] | None, name: str) -> str:
    """The chapter's first heading, else its name."""
    for cell in (nb or {}).get("cells", []):
        if cell.get("cell_type") == "markdown":
            m = re.search(r"^#\s+(.+)$", "".join(cell.get("source", "")), re.M)
            if m:
                return m[1].strip()
    return name


def _stream_text(nb: dict[str, Any] | None) -> str:
    return "\n".join("".join(o.get("text", "")) for c in (nb or {}).get("cells", [])
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")


def grids_used(nb: dict[str, Any] | None, recorded: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The stored sweeps a chapter used: those its stamp records (``grids``), else those its
    executed notebook's log names; each with its update rule, whether it came from the cache, and
    the device and training time from its provenance file when that is at hand."""
    found = [dict(g) for g in recorded]
    if not found:
        seen: dict[str, dict[str, Any]] = {}
        for m in GRID_LOG.finditer(_stream_text(nb)):
            seen.setdefault(m["path"], {"file": m["path"], "cached": m["how"].startswith("reusing")})
        found = list(seen.values())
    for grid in found:
        meta = _read_json((REPO / grid["file"]).with_suffix(".json")) or {}  # relative: to the repository
        grid.setdefault("rule", meta.get("spec", {}).get("optimizer", Path(grid["file"]).stem.split("-")[0]))
        grid.setdefault("device", meta.get("device_name", meta.get("device")))
        grid.setdefault("seconds", meta.get("wall_time_s"))
    return found


def _grid_text(grid: dict[str, Any]) -> str:
    how = "cache" if grid.get("cached") else "trained"
    extra = [str(grid["device"])] if grid.get("device") else []
    if isinstance(grid.get("seconds"), (int, float)):
        extra.append(f"{grid['seconds']:.0f} s")
    return f"{grid['rule']} ({how}{': ' + ', '.join(extra) if extra else ''})"


def _claims_text(claims: Any) -> str:
    """'3 agree, 1 disagrees' from a {claim: verdict} mapping or a list of verdicts."""
    verdicts = list(claims.values()) if isinstance(claims, dict) else list(claims or [])
    counts = Counter(str(v) for v in verdicts)
    return ", ".join(f"{n} {word}" for word, n in sorted(counts.items())) or "—"


def chapter_row(stage: Path, name: str) -> dict[str, str]:
    """The status of one chapter as table cells (``ran`` is '' when it has not been executed)."""
    stamp = _read_json(stage / f"{name}.stamp.json")
    nb = _read_json(stage / f"{name}.ipynb")
    row = {"chapter": f"{{doc}}`{_title(nb, name)} <{name}>`" if nb else name}
    if stamp is None:
        return {**row, "ran": ""}
    inputs, params = stamp.get("inputs", {}), stamp.get("inputs", {}).get("parameters", {})
    grids = grids_used(nb, stamp.get("grids", ()))
    device = str(stamp.get("device", params.get("device", "?")))  # as asked; each grid names its own
    cached = sum(bool(g.get("cached")) for g in grids)
    trained = sum(g["seconds"] for g in grids if isinstance(g.get("seconds"), (int, float)))
    return {**row,
            "ran": str(stamp.get("executed", "?")).replace("T", " ")[:16],
            "took": f"{stamp.get('seconds', float('nan')):.1f} s",
            "settings": f"`{params.get('profile', '?')}`, `{params.get('dataset', '?')}`, {device}",
            "code": f"`{inputs.get('code_version', '?')}` (l2bn {inputs.get('l2bn_version', '?')})",
            "grids": f"{len(grids)} ({cached} cache, {len(grids) - cached} trained)" if grids else "none",
            "grid_list": "; ".join(_grid_text(g) for g in grids),
            "training": f"{trained:.0f} s" if grids else "—",
            "claims": _claims_text(stamp.get("claims"))}


def _table(headings: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]


def page(stage: Path, chapters: Iterable[str]) -> str:
    """The status page (MyST Markdown) for ``chapters`` (names such as ``05_weight_norm``): a summary,
    the settings when every chapter shares them, one row per chapter, then each chapter's grids."""
    rows = [chapter_row(stage, name) for name in chapters]
    done = [r for r in rows if r["ran"]]
    shared = {(r["settings"], r["code"]) for r in done}
    columns = ["chapter", "ran at", "took", "grids used", "their training time"]
    keys = ["chapter", "ran", "took", "grids", "training"]
    if len(shared) > 1:
        columns[1:1], keys[1:1] = ["profile, dataset, device", "code version"], ["settings", "code"]
    if any(r.get("claims", "—") != "—" for r in done):
        columns.append("claims")
        keys.append("claims")
    lines = [
        f"({PAGE})=", "# Build status", "",
        "How each chapter of this copy was computed, read from the stamps the build writes next to the "
        "executed notebooks (`book/_generated/<chapter>.stamp.json`). *Took* is the chapter's own "
        "execution; the training time of its grids is what rerunning it costs where they are not in "
        "`data/results` (*cache*: loaded from there, *trained*: computed during this build).", "",
        f"**{len(done)} of {len(rows)} chapters executed**, "
        f"{sum(float(r['took'].split()[0]) for r in done):.0f} s of execution in all.",
    ]
    if len(shared) == 1:
        settings, code = shared.pop()
        lines.append(f"Every executed chapter ran with profile, dataset and device {settings}; "
                     f"code version {code}.")
    blank = [""] * (len(keys) - 2)
    table = [[r.get(k, "") for k in keys] if r["ran"] else [r["chapter"], "not executed", *blank]
             for r in rows]
    lines += ["", *_table(columns, table), "", "## The grids each chapter used", ""]
    lines += [f"- {r['chapter']}: {r['grid_list']}" for r in done if r["grid_list"]] or ["None."]
    return "\n".join(lines) + "\n"


def write_page(stage: Path, chapters: Iterable[str]) -> Path:
    """Write ``<stage>/status.md`` (only when its text changes) and return its path."""
    path = stage / f"{PAGE}.md"
    text = page(stage, list(chapters))
    if not (path.is_file() and path.read_text() == text):
        path.write_text(text)
    return path
