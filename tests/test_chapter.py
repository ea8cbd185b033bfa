"""The chapters' parameter declarations (``l2bn.chapter``): they match each notebook's parameters
cell, every notebook checks itself right after it, and any value is either accepted and sane or
refused with one ``'<param>: problem; accepted'`` line. Fast: no notebook is executed."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2bn import chapter, rules
from l2bn.chapter import CHAPTERS, ChapterParameterError, Checked, Name, Names, Number, Numbers
from l2bn.errors import ParameterError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "book"))
from pipeline.chapters import declared_parameters  # noqa: E402  (book/ is not a package)

NOTEBOOKS = sorted(p for p in (REPO / "notebooks").glob("*.py") if not p.name.startswith("_"))
PARAMS = [(name, p) for name, spec in CHAPTERS.items() for p in spec.params]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_declares_what_its_spec_says(path: Path):
    assert path.stem in CHAPTERS, f"{path.stem}: no declaration in l2bn.chapter.CHAPTERS"
    assert set(declared_parameters(path)) == set(CHAPTERS[path.stem].params)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_checks_its_parameters_right_after_them(path: Path):
    cells = re.split(r"^# %%.*$", path.read_text(), flags=re.M)
    markers = re.findall(r"^# %%.*$", path.read_text(), flags=re.M)
    i = next(k for k, m in enumerate(markers) if 'tags=["parameters"]' in m)
    assert f'check_parameters("{path.stem}", globals())' in cells[i + 2], \
        "the cell after the parameters cell must call check_parameters with the chapter's name"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebooks_defaults_are_accepted(path: Path):
    namespace: dict = {}
    source = re.search(r'^# %% tags=\["parameters"\]\n(.*?)^# %%', path.read_text(), flags=re.M | re.S)[1]
    exec(source, namespace)  # the parameters cell is plain assignments
    chapter.check_parameters(path.stem, namespace)


# The inputs of issue 16, each accepted silently or failing far away before.
ISSUE_CASES = [
    ("05_weight_norm", "d_min", -1), ("05_weight_norm", "d_min", math.nan),
    ("06_test_error", "learned_err", 5), ("05_weight_norm", "optimizers", []),
    ("05_weight_norm", "optimizers", 3), ("05_weight_norm", "optimizers", "adam"),
    ("04_update_rules", "steps", 0), ("02_effective_lr", "growth_steps", -5),
]


@pytest.mark.parametrize(("name", "param", "value"), ISSUE_CASES)
def test_issue_cases_are_refused_naming_the_parameter(name: str, param: str, value):
    with pytest.raises(ChapterParameterError) as err:
        chapter.check_parameters(name, {param: value})
    assert err.value.param == param and isinstance(err.value, ParameterError)
    assert str(err.value).startswith(f"{param}: ") and "; accepted: " in str(err.value)
    assert "\n" not in str(err.value)


def test_an_unknown_chapter_and_a_relation_are_refused():
    with pytest.raises(ParameterError, match="^chapter: unknown chapter 'nope'"):
        chapter.check_parameters("nope", {})
    with pytest.raises(ChapterParameterError, match="^alpha_low: "):
        chapter.check_parameters("01_invariance", {"alpha_low": 3.0, "alpha_high": 1.0})
    chapter.check_parameters("01_invariance", {"alpha_low": 3.0})  # the other one is not given


def test_a_rule_registered_later_is_accepted_where_rules_are():
    with pytest.raises(ChapterParameterError):
        chapter.check_parameters("05_weight_norm", {"optimizers": ["test_only_rule"]})
    rules.register(rules.UpdateRule("test_only_rule", "test rule", rules.sgd))
    try:
        chapter.check_parameters("05_weight_norm", {"optimizers": ["test_only_rule", "adam"]})
        chapter.check_parameters("04_update_rules", {"optimizer": "test_only_rule"})
    finally:
        rules.unregister("test_only_rule")


# ---------------------------------------------------------------------------------------------
# Fuzzing: random types, NaN, inf, negatives, empty and huge values for every parameter
# ---------------------------------------------------------------------------------------------

EDGES = st.sampled_from([math.nan, -math.nan, math.inf, -math.inf, 0, 0.0, -0.0, -1, -5, 1e-300, 1e300,
                         2**31, 2**64, 10**400, True, False, None, "", [], {}, [math.nan], [0.1] * 1000,
                         "adam", ["adam"], "all", "3", "nan"])
SCALARS = st.one_of(
    EDGES, st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 2),
    st.text(max_size=20), st.sampled_from(["sgd", "newton", "smoke", "synthetic", "cpu", "cuda", "npz:x"]),
)
VALUES = st.one_of(EDGES, SCALARS, st.lists(SCALARS, max_size=5),
                   st.lists(st.sampled_from(rules.trainable_rules())),
                   st.dictionaries(st.text(max_size=3), SCALARS, max_size=2))


def _sane(kind, value) -> bool:
    """What an accepted value must be, said independently of the check itself."""
    if isinstance(kind, Number):
        ok_type = type(value) is int if kind.integer else type(value) in (int, float)
        return ok_type and math.isfinite(value) and kind.lo <= value <= kind.hi
    if isinstance(kind, Names):
        return isinstance(value, list | tuple) and 0 < len(value) and set(value) <= set(kind.choices())
    if isinstance(kind, Numbers):
        return isinstance(value, list | tuple) and 0 < len(value) and all(_sane(kind.item, v) for v in value)
    if isinstance(kind, Name):
        return isinstance(value, str) and value in kind.choices()
    assert isinstance(kind, Checked)
    return isinstance(value, str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(PARAMS), value=VALUES)
def test_any_value_is_accepted_sanely_or_refused_in_one_line(case, value):
    name, param = case
    kind = CHAPTERS[name].params[param]
    try:
        chapter.check_parameters(name, {param: value})
    except ChapterParameterError as err:
        text = str(err)
        assert err.param == param and text.startswith(f"{param}: ") and "\n" not in text, text
        assert len(text) < 400, text
    else:
        assert _sane(kind, value), (name, param, value)
