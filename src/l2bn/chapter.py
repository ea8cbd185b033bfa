"""The book's chapters and their parameters, declared once.

Every chapter (``notebooks/NN_name.py``) has a cell tagged ``parameters``; this table says what
each of those parameters accepts: a number's type and range, a non-empty list of update rules from
``l2bn.rules``, a profile of ``l2bn.profiles``, a dataset name, a device. The chapter calls
``check_parameters("NN_name", globals())`` right after its parameters (papermill's injected values
included), and ``book/build.py`` calls the same check on the merged command-line values before it
executes anything. A bad value is refused with one line, ``'<param>: problem; accepted values'``
(``ChapterParameterError``, a ``ParameterError``: exit status 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import L2bnError, ParameterError
from .model import NORMS
from .rules import ADAM, ADAMW, MAIN, RULES, SGD, rules_in, trainable_rules
from .spec import grid_name

COMMON = ("profile", "dataset", "device")  # every chapter declares these; the build sets them
SEED_MAX = 2**31 - 1  # numpy and torch both take any seed in [0, 2³¹)
MANY_STEPS = 10**6  # a toy or simulated run longer than this would take hours on a CPU


class ChapterParameterError(ParameterError):
    """A chapter parameter outside its accepted values; ``param`` names it."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


# ---------------------------------------------------------------------------------------------
# Kinds of parameter: each says what it accepts, and what is wrong with a value (None: nothing)
# ---------------------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad_length(items: list | tuple, longest: int) -> str:
    return "the list is empty" if not items else f"a list of {len(items)}, longer than {longest}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Number:
    """An int (``integer``) or a real number, finite, in [lo, hi] (lo excluded when ``lo_open``)."""

    lo: float
    hi: float
    integer: bool = False
    lo_open: bool = False

    def accepted(self) -> str:
        what, shown = ("a whole number", "{:d}") if self.integer else ("a finite number", "{:g}")
        lo, hi = shown.format(int(self.lo) if self.integer else self.lo), shown.format(self.hi)
        return f"{what} {'>' if self.lo_open else '≥'} {lo} and ≤ {hi}"

    def problem(self, value: Any) -> str | None:
        if self.integer and not (isinstance(value, int) and not isinstance(value, bool)):
            return f"expected a whole number, got {_shown(value)}"
        if not _is_number(value):
            return f"expected a number, got {_shown(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{value} is not a finite number"
        if value < self.lo or (self.lo_open and value == self.lo) or value > self.hi:
            return f"{_shown(value)} is out of range"
        return None


@dataclass(frozen=True)
class Name:
    """One name out of ``choices()`` (read when checking, so rules registered later count)."""

    choices: Callable[[], tuple[str, ...]]
    what: str = "update rule"

    def accepted(self) -> str:
        return f"one of {', '.join(self.choices())}"

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"expected the name of one {self.what}, got {_shown(value)}"
        return None if value in self.choices() else f"unknown {self.what} {_shown(value)}"


@dataclass(frozen=True)
class Names:
    """A non-empty list of names out of ``choices()``, at most ``longest`` of them."""

    choices: Callable[[], tuple[str, ...]]
    longest: int = 100

    def accepted(self) -> str:
        return f"a non-empty list of {', '.join(self.choices())} (YAML: [adam, sgd])"

    def problem(self, value: Any) -> str | None:
        if isinstance(value, str):
            return f"expected a list, got the single string {_shown(value)}"
        if not isinstance(value, (list, tuple)):
            return f"expected a list, got {_shown(value)}"
        if not value or len(value) > self.longest:
            return _bad_length(value, self.longest)
        bad = [v for v in value if not isinstance(v, str) or v not in self.choices()]
        return f"unknown update rule {_shown(bad[0])}" if bad else None


@dataclass(frozen=True)
class Numbers:
    """A non-empty list of at most ``longest`` numbers, each accepted by ``item``."""

    item: Number
    longest: int = 100

    def accepted(self) -> str:
        return f"a non-empty list of at most {self.longest} numbers, each {self.item.accepted()}"

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, (list, tuple)):
            return f"expected a list, got {_shown(value)}"
        if not value or len(value) > self.longest:
            return _bad_length(value, self.longest)
        return next((f"item {i}: {p}" for i, v in enumerate(value) if (p := self.item.problem(v))), None)


@dataclass(frozen=True)
class Checked:
    """A string that a library function accepts; it raises ``ValueError`` or ``L2bnError``
    otherwise, with a one-line message of its own that already says what is accepted."""

    check: Callable[[str], Any]
    hint: str  # what is accepted, for values that are not even strings

    def accepted(self) -> str:
        return self.hint

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"expected a name, got {_shown(value)}; accepted: {self.hint}"
        try:
            self.check(value)
        except (ValueError, L2bnError) as err:
            return str(err).split(": ", 1)[-1]  # the library's message, without its '<param>: '
        return None


Kind = Number | Name | Names | Numbers | Checked


def _dataset(name: str) -> None:
    from .data import check_dataset_name

    check_dataset_name(name)


def _device(name: str) -> None:
    from .train import resolve_device  # imports torch: only when a device is checked

    resolve_device(name)


def _profiles() -> tuple[str, ...]:
    from .profiles import PROFILES

    return tuple(PROFILES)


def _all_rules() -> tuple[str, ...]:
    return (*RULES, "all")


def _rules_but_normalized() -> tuple[str, ...]:
    return tuple(r for r in trainable_rules() if RULES[r].projection is None)


# ---------------------------------------------------------------------------------------------
# The chapters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    """A condition on several parameters at once, checked when all of them are given."""

    names: tuple[str, ...]
    holds: Callable[..., bool]
    message: str  # '<first name>: problem; accepted'


@dataclass(frozen=True)
class ChapterSpec:
    """The parameters of one chapter's ``parameters`` cell, and what each accepts."""

    name: str
    params: dict[str, Kind]
    relations: tuple[Relation, ...] = field(default=())
    # The update rules whose profile grids the chapter reads, from its parameters, and whether it
    # reads every seed replicate of the profile (the verdict) or the first seed only.
    grids: Callable[[Mapping[str, Any]], list[str]] | None = None
    replicates: bool = False


def _chapter(name: str, own: dict[str, Kind], *relations: Relation,
             grids: Callable[[Mapping[str, Any]], list[str]] | None = None,
             replicates: bool = False) -> ChapterSpec:
    common: dict[str, Kind] = {
        "profile": Name(_profiles, "profile"),
        "dataset": Checked(_dataset, "synthetic, cifar10 or npz:PATH"),
        "device": Checked(_device, "auto, cpu, cuda or cuda:N (a GPU this machine has)"),
    }
    return ChapterSpec(name, {**common, **own}, relations, grids, replicates)


def _figure_rules(figure: str, more: str | None = None) -> Callable[[Mapping[str, Any]], list[str]]:
    """The rules the paper shows in ``figure``, then the chapter's ``optimizers``; the paper profile
    adds the rules of Table 1 that Figure 4 trains (repeats dropped)."""
    def grids(p: Mapping[str, Any]) -> list[str]:
        extra = rules_in("4") if p.get("profile") == "paper" else ()
        return list(dict.fromkeys([*rules_in(figure), *p.get(more or "optimizers", ()), *extra]))
    return grids


# The grids of "After the paper": SGD (Wan et al.) and Nesterov (Li & Arora) of the paper's figures,
# ADAM beside AdamW (decoupled decay), and SGD on networks with weight, layer and no normalisation
# (names ``rule@norm``, see ``spec.grid_name``). The verdict reads them too, to judge their claims.
AFTER_PAPER_GRIDS = (SGD.name, MAIN.name, ADAM.name, ADAMW.name,
                     *(grid_name(SGD.name, norm) for norm in NORMS if norm != "batch"))
SEED = Number(0, SEED_MAX, integer=True)
SCALE = Number(0, 1e6, lo_open=True)  # a factor α > 0 on the weights
STEPS = Number(100, MANY_STEPS, integer=True)
ETA = Number(0, 100, lo_open=True)  # η: beyond 100 even plain SGD on a unit sphere only jumps
RULE_LIST = Names(trainable_rules)
D_MIN = Number(0, 100, lo_open=True)  # relaxation times; ≤ 0 would count every cell as settled
TRAIN_ERR = Number(0, 1, lo_open=True)  # a fraction of the training images

CHAPTERS: dict[str, ChapterSpec] = {spec.name: spec for spec in (
    _chapter("01_invariance", {"seed": SEED, "alpha_low": SCALE, "alpha_high": SCALE},
             Relation(("alpha_low", "alpha_high"), lambda lo, hi: lo <= hi,
                      "alpha_low: is larger than alpha_high; accepted: alpha_low ≤ alpha_high")),
    _chapter("02_effective_lr", {"seed": SEED, "eta": ETA, "growth_steps": STEPS}),
    _chapter("03_steady_state", {"seed": SEED, "steps": STEPS, "units": Number(1, 4096, integer=True),
                                 "epochs": Number(2, 1000, integer=True), "net_lr": ETA,
                                 "net_l2s": Numbers(Number(0, 1, lo_open=True), longest=49)}),
    _chapter("04_update_rules", {"seed": SEED, "optimizer": Name(_all_rules), "steps": STEPS,
                                 "newton_steps": Number(1, 1000, integer=True)}),
    _chapter("05_weight_norm", {"optimizers": RULE_LIST, "d_min": D_MIN, "learned_err": TRAIN_ERR},
             grids=_figure_rules("1")),
    _chapter("06_test_error", {"optimizers": RULE_LIST, "d_min": D_MIN, "learned_err": TRAIN_ERR},
             grids=_figure_rules("2")),
    _chapter("07_normalized_weights", {"compare_with": Name(_rules_but_normalized)},
             grids=lambda p: list(dict.fromkeys([*rules_in("3"), p["compare_with"]]))),
    _chapter("08_best_learning_rate", {"optimizers": RULE_LIST,
                                       "n_boot": Number(10, 100_000, integer=True)},
             grids=lambda p: list(dict.fromkeys([*rules_in("4"), *p["optimizers"]]))),
    _chapter("09_after_the_paper", {"seed": SEED, "toy_steps": STEPS},
             grids=lambda p: list(AFTER_PAPER_GRIDS)),
    _chapter("10_verdict", {"optimizers": RULE_LIST, "toy_steps": STEPS, "learned_err": TRAIN_ERR},
             grids=lambda p: list(dict.fromkeys([*p["optimizers"], *AFTER_PAPER_GRIDS])), replicates=True),
)}
# Chapters without an entry (a new one, the build's own tests) get their common parameters checked.
ANY_CHAPTER = _chapter("any", {})


def spec_for(chapter: str) -> ChapterSpec:
    """The declaration of ``chapter`` (a notebook's stem), else that of the common parameters."""
    return CHAPTERS.get(chapter, ANY_CHAPTER)


def check_value(spec: ChapterSpec, name: str, value: Any) -> None:
    """Refuse ``value`` for parameter ``name`` of ``spec`` with ``ChapterParameterError``."""
    kind = spec.params.get(name)
    if kind is None:
        raise ChapterParameterError(name, f"{name}: {spec.name} has no such parameter; its "
                                          f"parameters are {', '.join(spec.params)}")
    problem = kind.problem(value)
    if problem is None:
        return
    # A library check's message says what it accepts already.
    tail = "" if isinstance(kind, Checked) else f"; accepted: {kind.accepted()}"
    raise ChapterParameterError(name, f"{name}: {problem}{tail}")


def check_parameters(chapter: str | ChapterSpec, values: Mapping[str, Any]) -> None:
    """Check the parameters of ``chapter`` found in ``values`` (a notebook passes ``globals()``;
    names the chapter does not declare are ignored), then its relations between parameters.

    Raises ``ChapterParameterError`` (a ``ParameterError``) with ``'<param>: problem; accepted'``."""
    if isinstance(chapter, str):
        if chapter not in CHAPTERS:
            raise ParameterError(f"chapter: unknown chapter {chapter!r}; the chapters are "
                                 f"{', '.join(CHAPTERS)}")
        chapter = CHAPTERS[chapter]
    for name in chapter.params:
        if name in values:
            check_value(chapter, name, values[name])
    for rel in chapter.relations:
        if all(n in values for n in rel.names) and not rel.holds(*(values[n] for n in rel.names)):
            raise ChapterParameterError(rel.names[0], rel.message)


def chapter_rules(chapter: str, values: Mapping[str, Any]) -> list[str]:
    """The update rules whose grids ``chapter`` reads with parameters ``values`` (a notebook passes
    ``globals()``): the chapter's prose needs the paper's rules of its figure, then its own."""
    spec = spec_for(chapter)
    return [] if spec.grids is None else spec.grids(values)


def chapter_specs(chapter: str, values: Mapping[str, Any]) -> list[Any]:
    """Every sweep spec ``chapter`` reads: its rules' profile grids, for every seed replicate of the
    profile when the chapter judges claims (the verdict), else the first seed. The book's build
    computes the specs of all chapters before the first chapter runs (``executor.run_specs``)."""
    from .profiles import get_profile
    from .spec import SweepSpec

    seeds = range(get_profile(values["profile"])["seeds"]) if spec_for(chapter).replicates else (0,)
    return [SweepSpec.for_grid(values["profile"], grid, values["dataset"], seed=seed)
            for grid in chapter_rules(chapter, values) for seed in seeds]
