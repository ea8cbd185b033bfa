"""Publishing: the GitHub Actions workflows pass actionlint and call the Makefile as a person would;
repository and launch buttons appear only with a repository URL (book/pipeline/publish.py); the
zip of executed notebooks is reproducible."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
sys.path.insert(0, str(REPO / "book"))

from pipeline import publish  # noqa: E402


def actionlint() -> str:
    found = shutil.which("actionlint") or str(Path(sys.executable).with_name("actionlint"))
    if not Path(found).is_file():
        pytest.fail("actionlint is not installed: it comes with the test extras (requirements.lock)")
    return found


def steps(workflow: dict) -> list[dict]:
    return [s for job in workflow["jobs"].values() for s in job.get("steps", [])]


def test_workflows_pass_actionlint():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"test.yml", "pages.yml"}
    proc = subprocess.run([actionlint(), "-no-color", "-oneline", *map(str, files)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.no_such_context_value }}\n      - uses: actions/checkout\n")
    proc = subprocess.run([actionlint(), "-no-color", "-oneline", str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "bad.yml" in proc.stdout, proc.stdout + proc.stderr


def test_workflows_run_the_makefile_targets():
    test = yaml.safe_load((WORKFLOWS / "test.yml").read_text())
    runs = [s.get("run", "") for s in steps(test)]
    assert any(r.strip() == "make test" for r in runs)
    pages = yaml.safe_load((WORKFLOWS / "pages.yml").read_text())
    runs = " ".join(s.get("run", "") for s in steps(pages))
    assert "make book PROFILE=quick DATASET=cifar10" in runs and "REPOSITORY_URL=" in runs
    uses = [s.get("uses", "") for s in steps(pages)]
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    cached = [s["with"]["path"] for s in steps(pages) if s.get("uses", "").startswith("actions/cache@")]
    assert "data" in cached, "data/ (CIFAR-10 and the trained grids) is not cached between runs"
    deploy = pages["jobs"]["deploy"]["permissions"]
    assert deploy == {"pages": "write", "id-token": "write"}


def test_the_site_stays_offline_without_a_repository_url(monkeypatch):
    monkeypatch.delenv(publish.REPOSITORY_VARIABLE, raising=False)
    config = yaml.safe_load((REPO / "book" / "_config.yml").read_text())
    assert publish.repository_settings(config) is False
    theme = config["sphinx"]["config"]["html_theme_options"]
    assert theme["use_repository_button"] is False and theme["launch_buttons"] == {}
    assert not any(config["launch_buttons"].get(k) for k in ("binderhub_url", "colab_url", "jupyterhub_url"))
    monkeypatch.setenv(publish.REPOSITORY_VARIABLE, "  ")
    assert publish.repository_settings(config) is False


def test_a_repository_url_turns_on_the_buttons(monkeypatch):
    monkeypatch.setenv(publish.REPOSITORY_VARIABLE, "https://github.com/someone/l2bn/")
    monkeypatch.delenv(publish.BRANCH_VARIABLE, raising=False)
    config = yaml.safe_load((REPO / "book" / "_config.yml").read_text())
    assert publish.repository_settings(config) is True
    theme = config["sphinx"]["config"]["html_theme_options"]
    assert theme["repository_url"] == "https://github.com/someone/l2bn"
    assert theme["use_repository_button"] is True
    assert theme["repository_branch"] == publish.DEFAULT_BRANCH
    assert theme["launch_buttons"]["colab_url"] and theme["launch_buttons"]["binderhub_url"]
    assert config["repository"]["url"] == "https://github.com/someone/l2bn"


def test_the_zip_of_notebooks_is_reproducible(tmp_path: Path):
    for name in ("01_a", "02_b"):
        (tmp_path / f"{name}.ipynb").write_text(f'{{"cells": [], "name": "{name}"}}')
    first = publish.write_zip(tmp_path, ["01_a", "02_b"]).read_bytes()
    mtime = (tmp_path / publish.ZIP_NAME).stat().st_mtime_ns
    assert publish.write_zip(tmp_path, ["01_a", "02_b"]).read_bytes() == first
    assert (tmp_path / publish.ZIP_NAME).stat().st_mtime_ns == mtime, "an unchanged zip was rewritten"
    with zipfile.ZipFile(tmp_path / publish.ZIP_NAME) as zf:
        assert zf.namelist() == ["01_a.ipynb", "02_b.ipynb"]
        assert zf.read("02_b.ipynb") == (tmp_path / "02_b.ipynb").read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_figures_get_alt_text_from_their_caption_or_section(tmp_path: Path):
    import json

    png = {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo="}, "metadata": {}}
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": "# Chapter\n\n## Where $\\eta$ matters\n"},
        {"cell_type": "code", "metadata": {}, "source": "plot()", "outputs": [png]},
        {"cell_type": "markdown", "metadata": {}, "source": "Text.\n"},
        {"cell_type": "code", "metadata": {}, "source": "fig()", "outputs": [png]},
        {"cell_type": "markdown", "metadata": {}, "source": "**Figure 2.** Error against $\\lambda$, "
         "see {ref}`notation`.\n\nMore.\n"},
        {"cell_type": "code", "metadata": {}, "source": "x = 1", "outputs": []},
    ]
    path = tmp_path / "01_a.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    publish.add_alt_texts(tmp_path, ["01_a"])
    out = json.loads(path.read_text())["cells"]
    assert out[1]["metadata"]["mystnb"]["image"]["alt"] == "Figure of the section: Where eta matters"
    assert out[3]["metadata"]["mystnb"]["image"]["alt"] == "Figure 2. Error against lambda, see notation."
    assert "mystnb" not in out[5]["metadata"]
    mtime = path.stat().st_mtime_ns
    publish.add_alt_texts(tmp_path, ["01_a"])
    assert path.stat().st_mtime_ns == mtime, "a notebook whose alt texts are in place was rewritten"
