"""The book's command line (``book/build.py``), in process and fast: no notebook is executed.

Every bad option or parameter is one line on stderr naming the option and what it accepts, exit
status 2, nothing executed and nothing written; random command lines (hypothesis) keep to that.
Also: the notation page's profile table, the exit status taken from the error's type, and the
record of which cached grids a chapter used."""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2bn import chapter
from l2bn.bench import book_specs
from l2bn.errors import Busy, DataError, ParameterError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "book"))
from pipeline import chapters, cli, options, site, stamps  # noqa: E402  (book/ is not a package)
from pipeline.common import BuildError  # noqa: E402

SMOKE = ["--profile", "smoke", "--dataset", "synthetic", "--device", "cpu"]


def run(*argv: str) -> tuple[int, str, str, list[Path]]:
    """main(argv) in process, stage and out in a fresh folder: (status, stdout, stderr, files written)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main([*SMOKE, "--stage", f"{tmp}/stage", "--out", f"{tmp}/out", *argv])
        return rc, out.getvalue(), err.getvalue(), list(Path(tmp).rglob("*"))


def assert_refused(argv: list[str], *expected: str) -> str:
    rc, out, err, written = run(*argv)
    assert rc == 2, (argv, rc, out, err)
    assert err.count("\n") == 1 and err.startswith("book: ERROR: "), err
    assert "Traceback" not in out + err and "executing" not in out, out
    assert not written, f"{argv}: wrote {written}"
    for text in expected:
        assert text in err, (text, err)
    return err


@pytest.fixture(scope="module")
def yaml_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("yaml")
    (folder / "list.yaml").write_text("- 1\n- 2\n")
    (folder / "broken.yaml").write_text("lrs: [0.1, 0.2\nl2s: 3\n")
    (folder / "latin1.yaml").write_bytes(b"d_min: \xe9\n")
    (folder / "ok.yaml").write_text("l2s: [0.0001, 0.01]\nepochs: 1\n")
    return folder


@pytest.mark.parametrize(("argv", "expected"), [
    (["-f", "{dir}/missing.yaml"], ["-f ", "missing.yaml", "no such file", "YAML mapping"]),
    (["-f", "{dir}/list.yaml"], ["-f ", "list", "NAME: VALUE"]),
    (["-f", "{dir}/broken.yaml"], ["-f ", "not valid YAML (line 2", "YAML mapping"]),
    (["-f", "{dir}/latin1.yaml"], ["-f ", "UTF-8"]),
    (["-f", "{dir}"], ["-f ", "is a folder"]),
    (["-y", "[1, 2]"], ["-y: ", "list", "NAME: VALUE"]),
    (["-y", "hello"], ["-y: ", "'hello'", "NAME: VALUE"]),
    (["-y", "a: &x [1]\nb: *x"], ["-y: ", "aliases"]),
    (["-y", "when: 2001-01-01"], ["-y: ", "date"]),
    (["-y", "1: 2"], ["-y: ", "not a parameter name"]),
    (["-p", "d_min"], ["-p/--parameters", "expected 2 arguments", "NAME VALUE"]),
    (["-r", "d_min"], ["-r/--parameters_raw", "expected 2 arguments", "NAME VALUE"]),
    (["-p", "no_such_parameter", "1"], ["-p no_such_parameter", "no chapter declares"]),
    (["-p", "profile", "paper"], ["-p profile", "--profile", "PROFILE="]),
    (["--only"], ["--only", "expected at least one argument", "chapters"]),
    (["--only", "99_nope"], ["--only", "'99_nope'", "04_update_rules"]),
    (["--only", "05_weight_norm", "-p", "seed", "1"], ["-p seed", "has no parameter 'seed'", "d_min"]),
    (["--profile", "huge"], ["--profile", "'huge'", "smoke, quick, paper"]),
    (["--dataset", "mnist"], ["--dataset", "'mnist'", "synthetic"]),
    (["--device", "tpu"], ["--device", "'tpu'", "cpu"]),
    (["--stage", ""], ["--stage", "empty path"]),
    (["--notebooks", "{dir}/none"], ["--notebooks", "not a folder"]),
    (["--bogus"], ["--bogus", "--help"]),
])
def test_each_bad_option_is_one_line_naming_it(yaml_files: Path, argv: list[str], expected: list[str]):
    assert_refused([a.replace("{dir}", str(yaml_files)) for a in argv], *expected)


@pytest.mark.parametrize(("argv", "expected"), [
    (["-p", "d_min", "-1"], ["-p d_min: ", "-1", "> 0"]),
    (["-p", "d_min", "nan"], ["-p d_min: ", "nan", "finite"]),
    (["-p", "learned_err", "5"], ["-p learned_err: ", "≤ 1"]),
    (["-y", "optimizers: []"], ["-y optimizers: ", "empty", "adam"]),
    (["-p", "optimizers", "3"], ["-p optimizers: ", "list", "adam"]),
    (["-p", "optimizers", "adam"], ["-p optimizers: ", "'adam'", "YAML"]),
    (["--only", "04_update_rules", "-p", "steps", "0"], ["-p steps: ", "04_update_rules", "whole number"]),
    (["--only", "02_effective_lr", "-p", "growth_steps", "-5"], ["-p growth_steps: ", "02_effective_lr"]),
    (["-y", "net_l2s: [0.1, .inf]"], ["-y net_l2s: ", "item 1"]),
    (["-y", "alpha_low: 2\nalpha_high: 1"], ["-y alpha_low: ", "alpha_high"]),
])
def test_each_bad_chapter_parameter_is_refused_before_executing(argv: list[str], expected: list[str]):
    assert_refused(argv, *expected)


def test_a_chapters_own_bad_default_is_refused_naming_its_file(tmp_path: Path):
    (tmp_path / "05_weight_norm.py").write_text(
        '# %% tags=["parameters"]\nprofile = "smoke"\ndataset = "synthetic"\ndevice = "cpu"\n'
        'optimizers = ["adam"]\nd_min = -3.0\nlearned_err = 0.8\n')
    assert_refused(["--notebooks", str(tmp_path)], "05_weight_norm.py, its parameters cell: d_min: ")


def test_good_options_in_a_dry_run_write_nothing():
    rc, out, err, written = run("--dry-run", "-p", "d_min", "3", "-y", "optimizers: [adam]",
                                "--only", "05_weight_norm")
    assert rc == 0 and not err and not written, (out, err)
    assert "05_weight_norm: would execute with" in out and "d_min=3" in out and "['adam']" in out


def test_papermill_style_parameters(yaml_files: Path):
    args = options.parse_args(["-p", "optimizer", "rmsprop", "-p", "epochs", "3", "-p", "fast", "True",
                               "-r", "tag", "007", "-y", "lrs: [0.01, 0.1]"])
    assert options.extra_parameters(args).values == {
        "optimizer": "rmsprop", "epochs": 3, "fast": True, "tag": "007", "lrs": [0.01, 0.1]}
    args = options.parse_args(["-f", str(yaml_files / "ok.yaml"), "-p", "epochs", "2"])
    extras = options.extra_parameters(args)
    assert extras.values == {"l2s": [0.0001, 0.01], "epochs": 2}
    assert extras.source == {"l2s": f"-f {yaml_files / 'ok.yaml'}", "epochs": "-p"}
    with pytest.raises(ParameterError, match="PROFILE"):
        options.extra_parameters(options.parse_args(["-p", "profile", "paper"]))


@pytest.mark.parametrize(("error", "status"), [
    (ParameterError("x: bad; accepted: y"), 2), (DataError("dataset: missing"), 2),
    (Busy("book: busy"), 3), (BuildError("notebook failed\n  details"), 1),
])
def test_the_exit_status_comes_from_the_errors_type(monkeypatch, error, status):
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "build", fail)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main([]) == status
    assert str(error).splitlines()[0] in err.getvalue()


# ---------------------------------------------------------------------------------------------
# Fuzzing the command line
# ---------------------------------------------------------------------------------------------

FLAGS = [f for flags, _ in options.OPTIONS for f in flags if f not in ("--stage", "--out", "--force")]
PARAMETERS = sorted({p for spec in chapter.CHAPTERS.values() for p in spec.params} - set(chapter.COMMON))
# No absolute paths: a random -f must not read /dev/zero.
TOKENS = st.one_of(
    st.sampled_from(FLAGS), st.sampled_from(PARAMETERS),
    st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e999", "-1e-999", "10" * 40, "[]", "[1, 2]", "True",
                     "None", "adam", "[adam]", "{}", "'", ":", "a: b: c", "notebooks", "05_weight_norm", ""]),
    st.text(alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), max_size=12),
)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_clean(argv: list[str]) -> None:
    rc, out, err, written = run("--dry-run", *argv)
    assert "Traceback" not in out + err, (argv, err)
    assert not written, (argv, written)
    if rc == 2:
        assert err.count("\n") == 1 and err.startswith("book: ERROR: "), (argv, err)
    else:
        assert rc == 0 and not err, (argv, rc, err)


@FUZZ
@given(argv=st.lists(TOKENS, max_size=8))
def test_random_command_lines_are_refused_cleanly_or_accepted(argv: list[str]):
    assert_clean(argv)


VALUE_TEXT = st.one_of(
    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e400", "-0", "0", "-1", "1.5", "2147483648", "10" * 50,
                     "True", "None", "[]", "adam", "all", "sgd", "''"]),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=10),
)


@FUZZ
@given(name=st.sampled_from(PARAMETERS), value=VALUE_TEXT, how=st.sampled_from(["-p", "-r", "-y"]))
def test_random_parameter_values_are_refused_cleanly_or_accepted(name: str, value: str, how: str):
    assert_clean(["-y", f"{name}: {value}"] if how == "-y" else [how, name, value])


# ---------------------------------------------------------------------------------------------
# The notation page's profile table; which cached grids a chapter used
# ---------------------------------------------------------------------------------------------


def test_profile_table_shows_every_grid_and_fails_loudly(monkeypatch):
    from l2bn import profiles

    table = site.profile_table()
    assert "?" not in table
    quick = next(line for line in table.splitlines() if line.startswith("| `quick`"))
    for family in site.lr_families():
        assert site._fmt(profiles.PROFILES["quick"]["lrs"][family]) in quick
    assert "η grid: RMSProp, ADAM, AdamW" in table
    broken = {name: {**p, "lrs": {k: v for k, v in p["lrs"].items() if k != "adaptive"}}
              for name, p in profiles.PROFILES.items()}
    monkeypatch.setattr(profiles, "PROFILES", broken)
    with pytest.raises(KeyError, match="adaptive"):
        site.profile_table()


def test_grids_used_are_the_changed_and_the_named_files(tmp_path: Path):
    folder = tmp_path / "results"
    folder.mkdir()
    for name in ("reused.csv", "untouched.csv", "rewritten.csv"):
        (folder / name).write_text("a\n1\n")
    before = stamps.snapshot(folder)
    (folder / "rewritten.csv").write_text("a\n1\n2\n")
    (folder / "new.csv").write_text("a\n")
    printed = f"l2bn: reusing cached result {folder / 'reused.csv'} (identical spec)\nand gone.csv: no file\n"
    output = nbformat.v4.new_output("stream", name="stdout", text=printed)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[output])])
    used = stamps.grids_used(before, nb, folder, tmp_path)
    assert [(Path(g["file"]).name, g["cached"]) for g in used] == [
        ("new.csv", False), ("reused.csv", True), ("rewritten.csv", False)]


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_the_bench_projects_the_grids_the_book_trains(profile):
    """``l2bn bench`` projects and measures the book's grids (``bench.book_specs``): those the
    build computes before the first chapter, every chapter at its defaults (``cli.train_grids``)."""
    built = set()
    for path in sorted((REPO / "notebooks").glob("[0-9]*.py")):
        values = {**chapters.literal_defaults(path), "profile": profile, "dataset": "synthetic",
                  "device": "cpu"}
        built.update(chapter.chapter_specs(path.stem, values))
    assert built == set(book_specs(profile))
