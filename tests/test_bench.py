"""`l2bn bench` at a tiny size: the report has the promised shape and its numbers are consistent.

Speed itself is not asserted (benchmarks measure, tests check behaviour)."""

import json
import math

import pytest

from l2bn.bench import figure_model_epochs, run_bench, train_flops_per_image
from l2bn.cli import main
from l2bn.profiles import get_profile


def test_flops_follow_the_architecture():
    # 32-64-128-256 at 32/16/8/4: each conv costs 2·H·W·C_in·C_out·9; training is 3× forward.
    fwd = 2 * 9 * (32 * 32 * 3 * 32 + 16 * 16 * 32 * 64 + 8 * 8 * 64 * 128 + 4 * 4 * 128 * 256)
    assert train_flops_per_image((32, 64, 128, 256)) == 3 * fwd


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_figure_model_epochs_counts_every_figure_grid(profile):
    p = get_profile(profile)
    per_rule = len(p["lrs"]["sgd"]) * len(p["l2s"])  # every family's grid has the same size
    assert figure_model_epochs(profile) == 5 * per_rule * p["epochs"]


@pytest.fixture(scope="module")
def report():
    return run_bench("smoke", ms=(1, 3), device="cpu", steps=1, repeats=1)


def test_report_has_every_variant_for_every_m(report):
    rows = report["rows"]
    assert {(r["M"], r["variant"]) for r in rows} == {
        (m, v) for m in (1, 3) for v in ("wide", "loop", "separate")
    }
    for r in rows:
        for key in ("s_per_step", "model_epochs_per_s", "tflops", "peak_fraction", "peak_mem_mb",
                    "vs_separate"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)


def test_report_numbers_are_consistent(report):
    p = get_profile("smoke")
    steps_per_epoch = p["n_train"] // p["batch_size"]
    flops = train_flops_per_image(tuple(p["widths"]))
    for r in report["rows"]:
        assert r["model_epochs_per_s"] == pytest.approx(r["M"] / (r["s_per_step"] * steps_per_epoch))
        assert r["tflops"] == pytest.approx(r["M"] * p["batch_size"] * flops / r["s_per_step"] / 1e12)
        assert r["peak_fraction"] == pytest.approx(r["tflops"] / report["reference_peak_tflops"])
        if r["variant"] == "separate":
            assert r["vs_separate"] == pytest.approx(1.0)
    best = max((r for r in report["rows"] if r["M"] == 3), key=lambda r: r["model_epochs_per_s"])
    assert report["figure_model_epochs"] == figure_model_epochs("smoke")
    assert report["projected_s"] == pytest.approx(figure_model_epochs("smoke") / best["model_epochs_per_s"])
    assert report["precision"] == "fp32" and "fp32 matmul" in report["summary"]
    assert "projected" in report["summary"] and "model-epochs/s" in report["summary"]


def test_cli_bench_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--profile", "smoke", "--device", "cpu", "--ms", "2", "--steps", "1",
                 "--repeats", "1", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:2] == ["M", "variant"]
    assert len(lines) == 1 + 3 + 1  # header, three variants, summary
    assert lines[-1].startswith("cpu") and "projected" in lines[-1]
    assert {r["variant"] for r in json.loads(out.read_text())["rows"]} == {"wide", "loop", "separate"}


def test_bench_rejects_bad_model_counts():
    with pytest.raises(ValueError, match="^ms:"):
        run_bench("smoke", ms=(0,), device="cpu")


def test_bench_in_bf16_states_its_precision():
    report = run_bench("smoke", ms=(2,), device="cpu", steps=1, repeats=1, variants=("wide",),
                       precision="bf16")
    assert report["precision"] == "bf16" and "bf16" in report["summary"]
    assert math.isfinite(report["rows"][0]["model_epochs_per_s"])
