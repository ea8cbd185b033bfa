"""The status page (book/pipeline/status.py): one row per chapter from its stamp and executed
notebook, the grids it used, and the chapters that have not been executed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "book"))

from pipeline import status  # noqa: E402


def executed(stage: Path, name: str, title: str, log: str = "", **stamp) -> None:
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": [f"# {title}\n", "Text."]},
                    {"cell_type": "code", "metadata": {}, "source": "x", "execution_count": 1,
                     "outputs": [{"output_type": "stream", "name": "stdout", "text": [log]}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (stage / f"{name}.ipynb").write_text(json.dumps(nb))
    base = {"hash": "h", "seconds": 12.34, "executed": "2026-01-02T03:04:05+0000",
            "inputs": {"parameters": {"profile": "smoke", "dataset": "synthetic", "device": "auto"},
                       "code_version": "abc123", "l2bn_version": "0.1.0"}}
    (stage / f"{name}.stamp.json").write_text(json.dumps({**base, **stamp}))


def stored_grid(folder: Path, rule: str, device: str, seconds: float) -> Path:
    csv = folder / f"{rule}-0123456789abcdef.csv"
    csv.write_text("model\n0\n")
    csv.with_suffix(".json").write_text(json.dumps({"spec": {"optimizer": rule}, "device_name": device,
                                                    "wall_time_s": seconds}))
    return csv


def test_every_chapter_gets_a_row_with_its_settings_and_grids(tmp_path: Path):
    cached = stored_grid(tmp_path, "nesterov", "NVIDIA H200", 812.0)
    trained = stored_grid(tmp_path, "adam", "cpu", 40.0)
    log = (f"l2bn: reusing cached result {cached} (identical spec)\n"
           f"l2bn: wrote {trained} (40.0 s on cpu)\nl2bn: reusing cached result {cached} (identical spec)\n")
    executed(tmp_path, "05_weight_norm", "Figure 1: the size of the weights", log)
    executed(tmp_path, "01_invariance", "Invariance", claims={"a": "agrees", "b": "agrees", "c": "disagrees"})
    text = status.page(tmp_path, ["01_invariance", "05_weight_norm", "06_test_error"])
    assert text.startswith(f"({status.PAGE})=\n# Build status")
    assert "**2 of 3 chapters executed**, 25 s of execution in all." in text
    assert "device `smoke`, `synthetic`, auto; code version `abc123` (l2bn 0.1.0)" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert rows[0] == "| chapter | ran at | took | grids used | their training time | claims |"
    assert rows[1] == ("| {doc}`Invariance <01_invariance>` | 2026-01-02 03:04 | 12.3 s | none | — "
                       "| 2 agrees, 1 disagrees |")
    assert rows[2].startswith("| {doc}`Figure 1: the size of the weights <05_weight_norm>` | 2026-01-02")
    assert "| 2 (1 cache, 1 trained) | 852 s |" in rows[2]
    assert rows[3].startswith("| 06_test_error | not executed |") and len(rows) == 4
    grids = "05_weight_norm>`: nesterov (cache: NVIDIA H200, 812 s); adam (trained: cpu, 40 s)"
    assert grids in text.split("## The grids each chapter used", 1)[1]


def test_settings_that_differ_get_their_own_columns(tmp_path: Path):
    executed(tmp_path, "01_invariance", "Invariance")
    executed(tmp_path, "02_effective_lr", "Effective", seconds=1.0,
             inputs={"parameters": {"profile": "quick", "dataset": "cifar10", "device": "cuda"},
                     "code_version": "def456", "l2bn_version": "0.1.0"})
    text = status.page(tmp_path, ["01_invariance", "02_effective_lr"])
    assert "| chapter | profile, dataset, device | code version | ran at |" in text
    assert "| `quick`, `cifar10`, cuda | `def456` (l2bn 0.1.0) |" in text
    header = text.split("| chapter", 1)[1].split("\n")[0]
    assert "Every executed chapter" not in text and "claims" not in header


def test_grids_recorded_in_the_stamp_win_over_the_log(tmp_path: Path):
    grid = stored_grid(tmp_path, "sgd", "cpu", 5.0)
    nb = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "stream",
                                                        "text": f"l2bn: wrote {tmp_path / 'other.csv'}"}]}]}
    found = status.grids_used(nb, [{"file": str(grid), "cached": True}])
    assert found == [{"file": str(grid), "cached": True, "rule": "sgd", "device": "cpu", "seconds": 5.0}]
    gone = status.grids_used(nb)
    assert gone == [{"file": str(tmp_path / "other.csv"), "cached": False, "rule": "other", "device": None,
                     "seconds": None}], "a grid whose provenance file is gone is still listed"


def test_write_page_rewrites_only_a_changed_page(tmp_path: Path):
    executed(tmp_path, "01_invariance", "Invariance")
    path = status.write_page(tmp_path, ["01_invariance"])
    before = path.stat().st_mtime_ns
    assert status.write_page(tmp_path, ["01_invariance"]).stat().st_mtime_ns == before
    assert "| {doc}`Invariance <01_invariance>` |" in path.read_text()
    (tmp_path / "01_invariance.stamp.json").write_text("{not json")
    assert "| not executed |" in status.write_page(tmp_path, ["01_invariance"]).read_text()
