"""`l2bn bench` at a tiny size: the report has the promised shape and its numbers are consistent.

Speed itself is not asserted (benchmarks measure, tests check behaviour)."""

import json
import math
import os

import pytest
import torch

from l2bn import bench
from l2bn.bench import book_specs, figure_model_epochs, run_bench, train_flops_per_image
from l2bn.cli import main
from l2bn.errors import ParameterError
from l2bn.optim import GridOptimizer
from l2bn.profiles import default_grid, get_profile
from l2bn.rules import UpdateRule, get_rule, trainable_rules


def test_flops_follow_the_architecture():
    # 32-64-128-256 at 32/16/8/4: each conv costs 2·H·W·C_in·C_out·9; training is 3× forward.
    fwd = 2 * 9 * (32 * 32 * 3 * 32 + 16 * 16 * 32 * 64 + 8 * 8 * 64 * 128 + 4 * 4 * 128 * 256)
    assert train_flops_per_image((32, 64, 128, 256)) == 3 * fwd


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_figure_model_epochs_counts_every_figure_grid(profile):
    p = get_profile(profile)
    lrs, l2s = default_grid(profile, "sgd")
    per_rule = len(lrs) * len(l2s)  # every family's grid has the same size
    assert figure_model_epochs(profile) == 5 * per_rule * p["epochs"]


@pytest.fixture(scope="module")
def report():
    return run_bench("smoke", ms=(1, 3), device="cpu", steps=1, repeats=1)


def test_report_has_every_variant_for_every_m(report):
    rows = report["rows"]
    assert {(r["M"], r["variant"]) for r in rows} == {
        (m, v) for m in (1, 3) for v in ("wide", "rows", "loop", "separate")
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
        assert 0 < r["conv_share"] <= 1
        assert r["conv_ceiling"] == pytest.approx(r["model_epochs_per_s"] / r["conv_share"])
    best = max((r for r in report["rows"] if r["M"] == 3), key=lambda r: r["model_epochs_per_s"])
    assert report["figure_model_epochs"] == figure_model_epochs("smoke")
    assert report["projected_s"] == pytest.approx(figure_model_epochs("smoke") / best["model_epochs_per_s"])
    assert report["precision"] == "fp32" and "fp32 matmul" in report["summary"]
    assert "projected" in report["summary"] and "model-epochs/s" in report["summary"]


def test_the_convolution_share_counts_convolutions_and_nothing_else():
    """A step that is one large convolution spends most of its time in it; a step without one, none;
    a GPU's kernels are not on the host's clock, so there it is not measured."""
    cpu = torch.device("cpu")
    x, w = torch.randn(16, 32, 32, 32), torch.randn(64, 32, 3, 3)
    assert bench.conv_share(lambda: torch.nn.functional.conv2d(x, w), cpu, 3) > 0.5
    assert bench.conv_share(lambda: (x @ x).sum(), cpu, 3) == 0
    assert math.isnan(bench.conv_share(lambda: None, torch.device("cuda"), 3))


def test_cli_bench_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--profile", "smoke", "--device", "cpu", "--ms", "2", "--steps", "1",
                 "--repeats", "1", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:2] == ["M", "variant"]
    assert len(lines) == 1 + 4 + 1  # header, four variants, summary
    assert lines[-1].startswith("cpu") and "projected" in lines[-1]
    assert {r["variant"] for r in json.loads(out.read_text())["rows"]} == {"wide", "rows", "loop", "separate"}


def test_bench_rejects_bad_model_counts():
    with pytest.raises(ValueError, match="^ms:"):
        run_bench("smoke", ms=(0,), device="cpu")


def test_bench_in_bf16_states_its_precision():
    report = run_bench("smoke", ms=(2,), device="cpu", steps=1, repeats=1, variants=("wide",),
                       precision="bf16")
    assert report["precision"] == "bf16" and "bf16" in report["summary"]
    assert math.isfinite(report["rows"][0]["model_epochs_per_s"])


@pytest.mark.parametrize("rule", trainable_rules())
def test_the_separate_baseline_steps_as_the_rule_does(rule):
    """torch.optim's counterpart (or, lacking one, the library's update for one model) moves a
    weight as the grid optimiser does for the same rule, η and λ."""
    target = torch.tensor([[[0.5, -1.0, 2.0], [0.0, 1.0, 1.0]]])

    def one_step(use_torch: bool) -> torch.Tensor:
        w = torch.nn.Parameter(torch.tensor([[[1.0, 2.0, -3.0], [0.5, 0.5, -1.0]]]))  # (M, units, fan-in)
        ((w - target) ** 2).sum().backward()
        opt = get_rule(rule).torch_optimizer([w], 0.01, 0.05) if use_torch else None
        if opt is None:
            grid = GridOptimizer(rule, [("w", w, "unit")], torch.tensor([0.01]), torch.tensor([0.05]))
            grid.step(1.0, torch.ones(1, dtype=torch.bool))
        else:
            opt.step()
        return w.detach()

    if get_rule(rule).torch_optimizer([torch.nn.Parameter(torch.ones(1))], 0.01, 0.05) is None:
        assert rule == "normalized_sgd"  # the one rule torch.optim lacks
    assert torch.allclose(one_step(True), one_step(False), rtol=1e-5, atol=1e-7)


def test_the_separate_baseline_uses_the_chosen_rule(monkeypatch):
    made = []
    real = UpdateRule.torch_optimizer

    def spy(self, params, eta, lam, hyper=None):
        opt = real(self, params, eta, lam, hyper)
        made.append((self.name, type(opt).__name__))
        return opt

    monkeypatch.setattr(UpdateRule, "torch_optimizer", spy)
    report = run_bench("smoke", ms=(2,), device="cpu", steps=1, repeats=1, optimizer="adam",
                       variants=("separate",))
    assert made == [("adam", "Adam")] * 2  # one optimiser per separate model, not Nesterov
    assert report["optimizer"] == "adam" and ", adam, " in report["summary"]
    assert math.isfinite(report["rows"][0]["model_epochs_per_s"])


def test_bench_refuses_a_folder_for_json_before_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: pytest.fail("the benchmark ran"))
    for target in (tmp_path, tmp_path / "missing" / "report.json", ""):
        assert main(["bench", "--profile", "smoke", "--device", "cpu", "--json", str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("l2bn bench: error: json:"), err
    assert list(tmp_path.iterdir()) == []


def test_the_bench_runs_on_the_threads_asked_and_projects_the_book_on_one_thread_workers():
    """``threads=1`` times what each of the book's workers runs on (one thread per core), then
    restores the thread count; the book's projection counts every grid of the book."""
    before = torch.get_num_threads()
    r = run_bench("smoke", ms=(2,), device="cpu", steps=1, repeats=1, variants=("wide", "separate"),
                  threads=1)
    assert torch.get_num_threads() == before and r["threads"] == 1
    assert f"on {os.cpu_count()} worker(s) of 1 thread(s)" in r["summary"]
    best = max(row["model_epochs_per_s"] for row in r["rows"])
    p = get_profile("smoke")
    model_epochs = sum(s.n_models for s in book_specs("smoke")) * p["epochs"]
    assert model_epochs > figure_model_epochs("smoke")  # "After the paper" trains grids of its own
    assert r["projected_book_grids_s"] > model_epochs / best / os.cpu_count()  # evaluations on top
    with pytest.raises(ParameterError, match="^threads: must be a positive integer; got 0"):
        run_bench("smoke", ms=(1,), device="cpu", threads=0)


def test_the_gpu_script_writes_a_report_per_precision(tmp_path):
    """bench/gpu.sh, the one call a lent GPU machine gets, run here on a CPU at the smoke size: one
    JSON report for each precision, each saying which precision it measured."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "DEVICE": "cpu",
           "PROFILE": "smoke", "MS": "1", "STEPS": "1", "REPEATS": "1"}
    done = subprocess.run(["bash", str(repo / "bench" / "gpu.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for precision in ("fp32", "tf32", "bf16"):
        report = json.loads((tmp_path / f"bench-smoke-{precision}.json").read_text())
        assert report["precision"] == precision and report["profile"] == "smoke"
        assert {r["variant"] for r in report["rows"]} == {"wide", "rows", "loop", "separate"}



def test_speedcheck_alternates_the_commits_so_a_drift_slows_both_alike(capsys):
    """``bench/speedcheck.py --rounds``: old, new, new, old, …; fewer than one round, or a pass
    (``--impl``) for the whole book, which races its own, is refused in one line before anything is
    built."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "speedcheck.py"
    spec = importlib.util.spec_from_file_location("speedcheck", path)
    speedcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speedcheck)
    assert speedcheck.order(1) == ["old", "new"]
    assert speedcheck.order(2) == ["old", "new", "new", "old"]
    assert speedcheck.order(3)[4:] == ["old", "new"]
    with pytest.raises(SystemExit):
        speedcheck.main(["--rounds", "0"])
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("--rounds: at least 1; got 0")
    with pytest.raises(SystemExit):
        speedcheck.main(["--impl", "rows"])
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "--impl: only with --grids (the whole book races its own pass); got rows")
