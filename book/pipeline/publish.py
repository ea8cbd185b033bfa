"""What the published site offers beyond its pages: alt text on every figure (from its caption), a
zip of the executed notebooks (linked from the introduction) and, only when a repository is
configured, the repository and launch buttons.

By default the site is fully offline: no button points at another host. Setting one variable,
``L2BN_REPOSITORY_URL`` (``make book REPOSITORY_URL=https://github.com/OWNER/REPO``; the Pages
workflow sets it), adds a repository button and, per chapter, Binder and Colab buttons. Those open
the executed notebook ``<name>.ipynb`` from the branch ``L2BN_LAUNCH_BRANCH`` (default
``executed-notebooks``, which the Pages workflow pushes), since Colab opens only ``.ipynb`` files
and the chapters' sources in ``notebooks/`` are ``.py``.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ZIP_NAME = "notebooks.zip"
REPOSITORY_VARIABLE = "L2BN_REPOSITORY_URL"
BRANCH_VARIABLE = "L2BN_LAUNCH_BRANCH"
DEFAULT_BRANCH = "executed-notebooks"
BINDER = "https://mybinder.org"
COLAB = "https://colab.research.google.com"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # a fixed time stamp inside the zip: same notebooks, same bytes
ALT_LENGTH = 300  # characters of a caption kept as alt text
CAPTION = re.compile(r"^\*\*(Figure|Table)\b")


def _plain(markdown: str) -> str:
    """Markdown and TeX reduced to text a screen reader can say: roles, emphasis, $ and \\ dropped."""
    text = re.sub(r"\{[\w:-]+\}`([^`]*)`", r"\1", markdown)
    text = re.sub(r"[*`$]|\\(?:text|mathrm|operatorname)\b|\\", "", text)
    return " ".join(text.replace("{", "").replace("}", "").split())


def _source(cell: dict[str, Any]) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def alt_text(cells: list[dict[str, Any]], index: int) -> str:
    """Alt text for the figure that code cell ``index`` draws: the first sentences of the caption in
    the markdown cell that follows it (one starting with **Figure** or **Table**), else the heading
    of the section it is in."""
    for cell in cells[index + 1 : index + 3]:
        if cell["cell_type"] == "markdown" and CAPTION.match(_source(cell).lstrip()):
            caption = _plain(_source(cell).strip().split("\n\n", 1)[0])
            if len(caption) > ALT_LENGTH:
                caption = caption[:ALT_LENGTH].rsplit(" ", 1)[0] + " …"
            return caption
    for cell in reversed(cells[:index]):
        headings = re.findall(r"^#+\s+(.+)$", _source(cell), re.M) if cell["cell_type"] == "markdown" else []
        if headings:
            return f"Figure of the section: {_plain(headings[-1])}"
    return "Figure"


def add_alt_texts(stage: Path, names: Iterable[str]) -> None:
    """Give every figure of the executed notebooks ``stage/<name>.ipynb`` an alt text (MyST-NB reads
    it from the cell's ``mystnb.image.alt``); a notebook is rewritten only when one changes."""
    for name in names:
        path = stage / f"{name}.ipynb"
        nb = json.loads(path.read_text())
        changed = False
        for i, cell in enumerate(nb["cells"]):
            if not any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
                continue
            alt = alt_text(nb["cells"], i)
            image = cell["metadata"].setdefault("mystnb", {}).setdefault("image", {})
            if image.get("alt") != alt:
                image["alt"], changed = alt, True
        if changed:
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def write_zip(folder: Path, names: Iterable[str]) -> Path:
    """``folder/notebooks.zip`` holding ``folder/<name>.ipynb`` for each name (rewritten only when
    its content changes, so Sphinx does not copy it again)."""
    path = folder / ZIP_NAME
    tmp = folder / f".{ZIP_NAME}.tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            info = zipfile.ZipInfo(f"{name}.ipynb", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (folder / f"{name}.ipynb").read_bytes())
    if path.is_file() and path.read_bytes() == tmp.read_bytes():
        tmp.unlink()
    else:
        tmp.replace(path)
    return path


def repository_settings(config: dict[str, Any], url: str | None = None, branch: str | None = None) -> bool:
    """Turn on the repository and launch buttons in ``config`` (the book's ``_config.yml`` as a
    dict) when a repository URL is given (else ``$L2BN_REPOSITORY_URL``); leave it offline without
    one. Returns whether the buttons are on."""
    url = (os.environ.get(REPOSITORY_VARIABLE, "") if url is None else url).strip().rstrip("/")
    if not url:
        return False
    branch = branch or os.environ.get(BRANCH_VARIABLE) or DEFAULT_BRANCH
    launch = {"notebook_interface": "classic", "binderhub_url": BINDER, "colab_url": COLAB}
    config["repository"] = {"url": url, "path_to_book": "", "branch": branch}
    config.setdefault("html", {}).update(use_repository_button=True)
    config["launch_buttons"] = {**config.get("launch_buttons", {}), **launch}
    theme = config.setdefault("sphinx", {}).setdefault("config", {}).setdefault("html_theme_options", {})
    theme.update(repository_url=url, repository_branch=branch, path_to_docs="",
                 use_repository_button=True, launch_buttons=launch)
    return True
