"""Every bad input to ``l2bn`` gets one clear line and an exit status that says what kind of error it
was; every recorded command reproduces its result; grids in which every model diverged still draw.

The training here is tiny (16×16 images, widths 2, one or two epochs)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import l2bn.cli as cli
import l2bn.results
from l2bn import bench, figures
from l2bn.errors import Busy, DamagedFile, DataError, ParameterError
from l2bn.results import SweepResult, spec_command
from l2bn.spec import SweepSpec
from l2bn.train import train_grid

matplotlib.use("Agg")


def run(argv: list[str]) -> tuple[int, str, str]:
    """``l2bn argv`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def write_npz(path: Path, n_train: int = 96, n_test: int = 32, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, size, size, 3), dtype=np.uint8),
             y_train=rng.integers(0, 10, n_train), x_test=rng.integers(0, 256, (n_test, size, size, 3),
                                                                          dtype=np.uint8),
             y_test=rng.integers(0, 10, n_test))
    return path


# ---------------------------------------------------------------------------------------------
# Exit status from the type of the error
# ---------------------------------------------------------------------------------------------

RAISED = [(ParameterError("lrs: bad; η > 0"), 2), (DataError("dataset: bad; an npz"), 2),
          (Busy("sweep: running; wait"), 3), (DamagedFile("result: damaged; recomputed"), 1),
          (OSError(28, "No space left on device"), 1), (ValueError("norm: bad; batch"), 2),
          (KeyboardInterrupt(), 130)]


@pytest.mark.parametrize("error, code", RAISED, ids=[type(e).__name__ for e, _ in RAISED])
def test_the_exit_status_follows_the_type_of_the_error(monkeypatch, error, code):
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_info", fail)
    status, out, err = run(["info"])
    assert status == code
    line = one_line(err)
    if code != 130:
        assert line == f"l2bn info: error: {error}"
    assert out == ""


def test_the_documented_exit_statuses_are_those_of_the_error_types():
    doc = " ".join(cli.__doc__.split())
    for code, what, errors in ((1, "an operating-system error .* or a damaged stored file", [DamagedFile]),
                               (2, "a bad parameter or dataset", [ParameterError, DataError]),
                               (3, "the same spec is already being computed", [Busy])):
        assert re.search(rf"; {code} {what}", doc), what
        assert all(cls.exit_code == code for cls in errors)
    assert "; 130 interrupted" in doc


def test_importing_the_command_line_loads_no_torch():
    code = "import sys, l2bn.cli, l2bn.errors; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr


def test_ctrl_c_while_the_command_line_imports_is_one_line():
    """SIGINT raises KeyboardInterrupt wherever Python is; here it lands in the import of torch."""
    script = textwrap.dedent("""
        import sys
        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "torch":
                    raise KeyboardInterrupt
        sys.meta_path.insert(0, Interrupt())
        from l2bn.cli import main  # what the console script and python -m l2bn do
        sys.exit(main(["sweep", "--optimizer", "adam"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130
    assert one_line(proc.stderr) == "l2bn: interrupted while starting; nothing was done."
    assert proc.stdout == ""


# ---------------------------------------------------------------------------------------------
# The smaller ones: --out "", info --out FILE, negative numbers, η that float32 cannot hold
# ---------------------------------------------------------------------------------------------

SWEEP = ["sweep", "--optimizer", "adam", "--profile", "smoke", "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("command", [SWEEP, ["info"]], ids=["sweep", "info"])
def test_an_empty_out_is_refused_and_nothing_lands_in_the_current_folder(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    status, out, err = run([*command, "--out", ""])
    assert status == 2 and out == ""
    assert one_line(err).startswith(f"l2bn {command[0]}: error: out: the path is empty")
    assert list(tmp_path.iterdir()) == []


def test_info_with_a_file_for_out_says_so(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("not a folder")
    status, out, err = run(["info", "--out", str(target)])
    assert status == 2 and "cached results" not in out
    assert one_line(err) == (f"l2bn info: error: out: {target} exists and is not a folder; "
                             "give a folder for the results")
    status, _, err = run(["info", "--out", str(target / "inside")])  # through a file, too
    assert status == 2 and "exists and is not a folder" in err


@pytest.mark.parametrize("extra, param, shown", [
    (["--l2s", "-1e-3"], "l2s", "-0.001"), (["--l2s=-1e-3"], "l2s", "-0.001"),
    (["--lrs", "-1e-3,0.1"], "lrs", "-0.001"), (["--lrs", "-.5"], "lrs", "-0.5"),
    (["--l2s", "-inf"], "l2s", "-inf"), (["--lrs", "-nan"], "lrs", "nan"),
    (["--seed", "-1e3"], "argument --seed", "expected an integer, got '-1e3'"),
])
def test_a_negative_number_reaches_the_real_check(tmp_path, extra, param, shown):
    """Not argparse's 'expected one argument': the check of the value, which says what is accepted."""
    status, out, err = run([*SWEEP, "--out", str(tmp_path / "out"), *extra])
    assert status == 2 and out == ""
    line = one_line(err)
    assert line.startswith(f"l2bn sweep: error: {param}: ") and shown in line, line
    assert not (tmp_path / "out").exists()


def test_join_numbers_leaves_everything_else_alone():
    argv = ["sweep", "--lrs", "0.1", "--l2s", "-1e-3", "--out", "-x", "--force", "--", "-1"]
    assert cli.join_numbers(argv) == ["sweep", "--lrs", "0.1", "--l2s=-1e-3", "--out", "-x",
                                      "--force", "--", "-1"]


def test_an_eta_that_float32_cannot_hold_is_refused(tmp_path):
    status, out, err = run([*SWEEP, "--out", str(tmp_path / "out"), "--lrs", "1e-300,0.1"])
    assert status == 2 and out == ""
    assert one_line(err).startswith("l2bn sweep: error: lrs: η = 1e-300 is below float32's smallest "
                                    "normal number")
    assert not (tmp_path / "out").exists()


def test_an_eta_below_float32_precision_is_warned_about(capsys):
    cli.check_learning_rates((1e-30, 1e-3))
    line = one_line(capsys.readouterr().err)
    assert line.startswith("l2bn sweep: warning: lrs: η = 1e-30 is below float32's relative precision")
    cli.check_learning_rates((1e-3, 0.1))  # ordinary grids: nothing said
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------
# Every recorded command reproduces its result
# ---------------------------------------------------------------------------------------------


def test_the_recorded_command_gives_the_same_spec_key_and_reuses_the_result(tmp_path, swept_table):
    npz = write_npz(tmp_path / "my data" / "images (16px).npz")
    out = tmp_path / "results"
    common = ["--device", "cpu", "--no-progress", "--out", str(out)]
    first = ["sweep", "--optimizer", "nesterov", "--profile", "smoke", "--dataset", f"npz:{npz}",
             "--lrs", "0.0123456789,0.1", "--l2s", "0,1e-3", "--epochs", "1", "--n-train", "48",
             "--n-val", "16", "--n-test", "32", "--batch-size", "16", "--widths", "2,2,2,2",
             "--hyper", "rho=0.85", "--no-augment", "--seed", "3", *common]
    status, stdout, err = run(first)
    assert status == 0, err
    csv = swept_table(stdout)
    meta = json.loads(csv.with_suffix(".json").read_text())
    command = meta["command"]
    assert "0.0123456789" in command and shlex.quote(f"npz:{npz}") in command
    words = shlex.split(command)
    assert words[:2] == ["l2bn", "sweep"]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    status, stdout, err = run([*words[1:], *common])
    assert status == 0, err
    assert f"reusing cached result {csv}" in stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == before
    again = cli.sweep_spec(cli.build_parser().parse_args(cli.join_numbers(words[1:])))
    assert l2bn.results.spec_key(again) == meta["key"]
    assert json.loads(json.dumps(again.to_dict())) == meta["spec"]


_positive = st.floats(min_value=1e-37, max_value=1e6, allow_nan=False, allow_infinity=False)
_grid = st.lists(_positive, min_size=1, max_size=4, unique=True).map(sorted)


@settings(max_examples=60, deadline=None)
@given(lrs=_grid, l2s=st.one_of(_grid, _grid.map(lambda g: [0.0, *g])), seed=st.integers(0, 2**63 - 1),
       rho=st.floats(0, 0.999999), widths=st.lists(st.integers(1, 64), min_size=4, max_size=4),
       augment=st.booleans(), optimizer=st.sampled_from(["nesterov", "adam", "sgd"]),
       evaluate=st.sampled_from(["phase_ends", "every"]),
       path=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12))
def test_spec_command_round_trips_any_spec(lrs, l2s, seed, rho, widths, augment, optimizer, evaluate, path):
    hyper = {"rho": rho} if optimizer == "nesterov" else {"rho2": rho} if optimizer == "adam" else {}
    spec = SweepSpec.from_profile("smoke", optimizer, f"npz:{path}", lrs=lrs, l2s=l2s, seed=seed,
                                  widths=widths, hyper=hyper, augment=augment, evaluate=evaluate)
    words = shlex.split(spec_command(spec))
    assert cli.sweep_spec(cli.build_parser().parse_args(cli.join_numbers(words[1:]))) == spec


# ---------------------------------------------------------------------------------------------
# Grids in which every model (or most) diverged
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid_result(make_dataset):
    """A 2 × 2 SGD grid of two epochs on 16×16 random images, as a ``SweepResult``."""
    spec = SweepSpec.from_profile("smoke", "sgd", lrs=[0.01, 0.1], l2s=[1e-3, 1e-2], epochs=2,
                                  n_train=64, n_val=32, n_test=32, batch_size=32, widths=(2, 2, 2, 2))
    table, facts = train_grid(spec, device="cpu", data=make_dataset(64, 32, 32, size=16), progress=False)
    return SweepResult(table, {"spec": spec.to_dict(), "dataset": {"name": "synthetic"}, **facts},
                       Path("sgd-0.csv"), reused=False)


def diverged(result: SweepResult, models: set[int], rule: str | None = None) -> SweepResult:
    """``result`` with ``models`` marked diverged from the first epoch, as train_grid writes them:
    every measured column NaN."""
    t = result.table.copy()
    hit = t["model"].isin(models)
    kept = {"optimizer", "model", "lr", "l2", "epoch", "lr_scale", "diverged"}
    t.loc[hit, [c for c in t.columns if c not in kept]] = math.nan
    t.loc[hit, "diverged"] = True
    spec = dict(result.provenance["spec"])
    if rule is not None:
        t["optimizer"], spec["optimizer"] = rule, rule
    return SweepResult(t, {**result.provenance, "spec": spec}, result.path, result.reused)


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_figures_of_a_wholly_diverged_grid_draw_and_say_why(grid_result):
    dead = {rule: diverged(grid_result, {0, 1, 2, 3}, rule) for rule in ("sgd", "nesterov", "adam")}
    draw = {
        "Figure 1": lambda: figures.weight_norm_figure({"nesterov": dead["nesterov"], "adam": dead["adam"]}),
        "Figure 2": lambda: figures.test_error_figure({"nesterov": dead["nesterov"]}),
        "Figure 3": lambda: figures.normalized_weights_figure(diverged(grid_result, {0, 1, 2, 3},
                                                                       "normalized_sgd"), dead["sgd"]),
        "Figure 4": lambda: figures.best_lr_figure(dead),
    }
    for name, make in draw.items():
        fig = make()
        fig.canvas.draw()  # where "Data cannot be log-scaled" was raised
        assert figures.ALL_DIVERGED in texts(fig), name
        matplotlib.pyplot.close(fig)


def test_a_figure_of_a_partly_diverged_grid_has_no_empty_note(grid_result):
    fig = figures.weight_norm_figure({"sgd": diverged(grid_result, {3})})
    fig.canvas.draw()
    assert figures.ALL_DIVERGED not in texts(fig)
    matplotlib.pyplot.close(fig)


def test_degenerate_note_counts_and_names_the_diverged_cells(grid_result):
    assert figures.degenerate_note(grid_result) is None  # small η: nothing diverged
    assert figures.degenerate_note(diverged(grid_result, {0, 3})) is None  # half is not "mostly"
    note = figures.degenerate_note({"sgd": diverged(grid_result, {1, 2, 3}),
                                    "adam": diverged(grid_result, {0, 1, 2, 3}, "adam")})
    assert "\n" not in note
    assert "SGD: 3 of 4 cells diverged ((η=0.01, λ=0.01), (η=0.1, λ=0.001), (η=0.1, λ=0.01))" in note
    assert "ADAM: 4 of 4 cells diverged (all of them)" in note
    assert figures.degenerate_note(diverged(grid_result, {0, 1, 2, 3}).table).startswith(
        "**Degenerate grid.** SGD: 4 of 4")


# ---------------------------------------------------------------------------------------------
# Fuzzing the command line: one line, exit 2, no traceback, nothing written
# ---------------------------------------------------------------------------------------------


class Ran(Exception):
    """Raised where work would start: a bad input got that far."""


def _not(*valid: str) -> st.SearchStrategy[str]:
    """Any text but ``valid`` (or what argparse reads as --help)."""
    return st.text(max_size=12).filter(lambda t: t.strip() not in valid and not re.match("-h|--h", t))


_NUMBER_JUNK = st.sampled_from(["nan", "-nan", "inf", "-inf", "1e400", "", ",", "abc", "0x10", "1;2",
                                "1e-300", "--", "1,,x", "True", "None", "[0.1]"])
_BAD_GRID = st.one_of(_NUMBER_JUNK, st.floats(max_value=-1e-300).map(repr),
                      st.sampled_from(["0.1,0.01", "0.1,0.1", "0,1"]))
_BAD_COUNT = st.one_of(st.integers(max_value=0).map(str), st.sampled_from(["1.5", "1e3", "", "two", "nan",
                                                                          "10**3", "-0", "0x1"]))
_BAD_SIZE = st.one_of(_BAD_COUNT, st.just(str(10**6)))  # more images than the synthetic set has
_BAD_VALUES = {
    "--lrs": _BAD_GRID,
    "--l2s": st.one_of(_NUMBER_JUNK.filter(lambda t: t != "1e-300"),  # a tiny λ is a λ
                       st.floats(max_value=-1e-300).map(repr),
                       st.sampled_from(["0.1,0.01", "1,1"])),
    "--epochs": _BAD_COUNT, "--n-val": _BAD_SIZE, "--n-test": _BAD_SIZE, "--n-train": _BAD_SIZE,
    "--batch-size": _BAD_SIZE,
    "--seed": st.one_of(st.integers(max_value=-1).map(str), st.integers(min_value=2**63).map(str),
                        st.sampled_from(["1.5", "", "x", "inf"])),
    "--widths": st.sampled_from(["4,8", "0,1,1,1", "-1,2,3,4", "a,b,c,d", "", "4,8,8,16,32", "4.5,8,8,16"]),
    "--hyper": st.sampled_from(["rho=0.9", "rho1=1.5", "rho1=nan", "eps=0", "eps=-1", "x", "=1", "rho1=",
                                "rho1=0.9,rho1=0.8", "eps=1e999", "rho2=1"]),
    "--optimizer": _not("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "normalized_sgd"),
    "--profile": _not("smoke", "quick", "paper"),
    "--norm": _not("batch", "weight", "layer", "none"),
    "--precision": _not("fp32", "tf32", "bf16"),
    "--impl": _not("auto", "wide", "rows", "loop"),
    "--device": _not("auto", "cpu").filter(lambda t: not t.startswith("cuda")),
    "--dataset": st.one_of(_not("synthetic", "cifar10").filter(lambda t: not t.startswith("npz:")),
                           st.text(max_size=10).map(lambda t: f"npz:/nonexistent/{t}")),
    "--out": st.sampled_from(["", " ", "FILE", "FILE/below"]),
}


@settings(max_examples=250, deadline=None)
@given(data=st.data())
def test_fuzzed_sweep_arguments_are_one_line_exit_2_and_write_nothing(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "FILE").write_text("a file")
    options = data.draw(st.lists(st.sampled_from(sorted(_BAD_VALUES)), min_size=1, max_size=3, unique=True))
    bad = []
    for option in options:
        value = data.draw(_BAD_VALUES[option], label=option)
        if option == "--out" and value.startswith("FILE"):
            value = str(root / value)
        bad += [option, value]
    argv = [*SWEEP, "--dataset", "synthetic", "--out", str(root / "out"), *bad]
    with mock.patch.object(l2bn.results, "train_grid", side_effect=Ran), \
            mock.patch.dict(os.environ, {"L2BN_DATA": str(root / "data")}):
        status, out, err = run(argv)
    assert status == 2, (argv, err)
    assert one_line(err).startswith("l2bn sweep: error: "), argv
    assert out == ""
    assert sorted(p.name for p in root.iterdir()) == ["FILE"], argv


_BAD_BENCH = {"--ms": st.one_of(_BAD_COUNT, st.just("1,0")), "--steps": _BAD_COUNT, "--repeats": _BAD_COUNT,
              "--threads": _BAD_COUNT,
              "--json": st.sampled_from(["", "{root}", "{root}/no/report.json"]),
              **{k: _BAD_VALUES[k] for k in ("--optimizer", "--profile", "--precision", "--device")}}


@settings(max_examples=80, deadline=None)
@given(option=st.sampled_from(sorted(_BAD_BENCH)), data=st.data())
def test_fuzzed_bench_arguments_are_refused_before_it_times_anything(tmp_path_factory, option, data):
    root = tmp_path_factory.mktemp("bench")
    value = data.draw(_BAD_BENCH[option]).replace("{root}", str(root))
    with mock.patch.object(bench, "measured_peak_tflops", side_effect=Ran):
        status, out, err = run(["bench", "--profile", "smoke", option, value])
    assert status == 2, (option, value, err)
    assert one_line(err).startswith("l2bn bench: error: ")
    assert out == "" and list(root.iterdir()) == []


def test_running_out_of_memory_is_one_line_and_other_runtime_errors_keep_their_traceback(monkeypatch):
    refusal = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 21600000000 bytes. Error code 12")
    monkeypatch.setattr(cli, "_info", mock.Mock(side_effect=refusal))
    status, _, err = run(["info"])
    assert status == 1
    assert one_line(err).startswith("l2bn info: error: out of memory (tried to allocate 21600000000 bytes)")
    monkeypatch.setattr(cli, "_info", mock.Mock(side_effect=RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["info"])
