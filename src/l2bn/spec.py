"""What decides a sweep's numbers: its spec, checked against one table of accepted values, and the
version of the code that trains it.

Each field of ``SweepSpec`` is declared once in ``PARAMS``: the type of its values, which of them it
accepts and the accepted values as a message states them. A spec is validated once, when it is
built; every error is one line, ``'<param>: <problem>; <accepted values>'`` (``ParameterError``).
"""

from __future__ import annotations

import hashlib
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .data import check_dataset_name, dataset_names
from .errors import ParameterError
from .model import NORMS, PASSES
from .profiles import PROFILES, default_grid, get_profile
from .rules import get_rule, trainable_rules

IMPLS = ("auto", *PASSES)
# fp32: plain float32 (TF32 tensor cores off, also for cuDNN, whose default is on); tf32: float32
# storage with TF32 matrix units on a GPU (no effect on a CPU); bf16: bfloat16 autocast of the
# forward pass with float32 master weights, optimiser state and loss.
PRECISIONS = ("fp32", "tf32", "bf16")
# When the validation and test errors are measured: at the last epoch of each learning-rate phase
# (before each drop of η and at the end: every error the analysis reads), or after every epoch.
EVALUATIONS = ("phase_ends", "every")
BUILTIN_SIZES = {"synthetic": (50000, 10000), "cifar10": (50000, 10000)}  # (train, test) images
MAX_SEED = 2**63 - 1
# The modules whose code decides the numbers a sweep produces (checkpoint.py: those of a resumed run).
NUMERIC_CODE = ("data.py", "model.py", "fused.py", "bn_relu_pool.c", "optim.py", "rules.py", "scale.py",
                "train.py", "checkpoint.py")


def code_version() -> str:
    """sha256 of the modules in ``NUMERIC_CODE``: part of every cache key and checkpoint."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in NUMERIC_CODE:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The table of parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One field of a sweep: the type of its values, the test a value of that type must pass
    (given the whole spec, for the limits that depend on other fields), the accepted values as a
    message ends, and what a message says is wrong (by default the value itself)."""

    kind: type
    ok: Callable[[Any, Any], bool]
    accepted: Callable[[Any], str]
    problem: Callable[[Any, Any], str] = lambda v, spec: f"got {v!r}"


def _is(value: Any, kind: type) -> bool:
    """``isinstance``, except that a bool is not an int."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _choice(what: str, choices: Callable[[], Iterable[str]]) -> Param:
    return Param(str, lambda v, s: v in choices(), lambda s: f"choose one of {', '.join(choices())}",
                 lambda v, s: f"unknown {what} {v!r}")


def _count(limit: Callable[[Any], int | None] | None = None,
           why: Callable[[Any], str] | None = None) -> Param:
    """A positive integer, at most ``limit(spec)`` where that is not None (``why(spec)`` says what
    the limit is)."""
    def top(s: Any) -> int | None:
        return None if limit is None else limit(s)

    return Param(int, lambda v, s: v > 0 and (top(s) is None or v <= top(s)),
                 lambda s: "expected a positive integer" + (
                     "" if top(s) is None else f" ≤ {top(s)} ({why(s)})"))


def _grid(symbol: str, zero_ok: bool) -> Param:
    what = f"{symbol} ≥ 0" if zero_ok else f"{symbol} > 0"

    def problem(v: Any, s: Any) -> str | None:
        if not v:
            return "the grid is empty"
        if not all(isinstance(x, float) and math.isfinite(x) for x in v):
            return f"{list(v)} holds a value that is not a finite number"
        if any(x < 0 or (x == 0 and not zero_ok) for x in v):
            return f"{list(v)} holds a value outside {what}"
        if list(v) != sorted(set(v)):
            return f"{list(v)} is not strictly increasing (sorted, no repeats)"
        return None

    return Param(tuple, lambda v, s: problem(v, s) is None,
                 lambda s: f"expected a strictly increasing list of finite numbers, {what}",
                 lambda v, s: problem(v, s) if isinstance(v, tuple) else f"got {v!r}")


def _known_dataset(name: str) -> bool:
    try:
        check_dataset_name(name)
    except ValueError:
        return False
    return True


def _available(s: Any, which: int) -> int | None:
    return BUILTIN_SIZES[s.dataset][which] if s.dataset in BUILTIN_SIZES else None


# Limits of the update rules' hyperparameters, by the start of their names (ρ, ρ₁, ρ₂ and ε).
HYPER_RANGES = {"rho": ("in [0, 1)", lambda v: 0 <= v < 1), "eps": ("> 0", lambda v: v > 0)}


def _hyper_problem(v: Any, s: Any) -> str | None:
    names = list(get_rule(s.optimizer).defaults)
    if not isinstance(v, tuple) or not all(isinstance(kv, tuple) and len(kv) == 2 for kv in v):
        return f"expected (name, value) pairs; got {v!r}"
    for k, x in v:
        if k not in names:
            return f"{s.optimizer} has no hyperparameter {k!r}"
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            return f"{k} must be a finite number; got {x!r}"
        for prefix, (text, ok) in HYPER_RANGES.items():
            if k.startswith(prefix) and not ok(x):
                return f"{k} must be {text}; got {x!r}"
    if len({k for k, _ in v}) != len(v):
        return f"a name is given twice in {v!r}"
    return None


def _hyper_accepted(s: Any) -> str:
    def limit(name: str) -> str:
        return next((f" {text}" for p, (text, _) in HYPER_RANGES.items() if name.startswith(p)), "")

    names = [name + limit(name) for name in get_rule(s.optimizer).defaults]
    return f"{s.optimizer} takes {', '.join(names) or 'none'}"


# In the order they are checked: a limit that depends on other fields comes after them.
PARAMS: dict[str, Param] = {
    "optimizer": _choice("update rule", trainable_rules),
    "profile": _choice("profile", lambda: PROFILES),
    "dataset": Param(str, lambda v, s: _known_dataset(v), lambda s: f"choose one of {dataset_names()}",
                     lambda v, s: f"unknown dataset {v!r}"),
    "lrs": _grid("η", zero_ok=False),
    "l2s": _grid("λ", zero_ok=True),
    "epochs": _count(),
    "n_val": _count(),
    "n_train": _count(lambda s: None if _available(s, 0) is None else _available(s, 0) - s.n_val,
                      lambda s: f"the {_available(s, 0)} training images of {s.dataset} less n_val"),
    "n_test": _count(lambda s: _available(s, 1), lambda s: f"the test images of {s.dataset}"),
    "batch_size": _count(lambda s: s.n_train, lambda s: "the size of the training set, n_train"),
    "widths": Param(tuple, lambda v, s: len(v) == 4 and all(_is(c, int) and c > 0 for c in v),
                    lambda s: "expected four positive channel counts"),
    "norm": _choice("normalisation", lambda: NORMS),
    "seed": Param(int, lambda v, s: 0 <= v <= MAX_SEED, lambda s: "expected an integer in 0 … 2**63 - 1"),
    "augment": Param(bool, lambda v, s: True, lambda s: "expected True or False"),
    "precision": _choice("precision", lambda: PRECISIONS),
    "evaluate": _choice("evaluation", lambda: EVALUATIONS),
    "hyper": Param(tuple, lambda v, s: _hyper_problem(v, s) is None, _hyper_accepted,
                   lambda v, s: _hyper_problem(v, s) or f"got {v!r}"),
}


# ---------------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSpec:
    """Everything that determines a sweep's results (and so its cache key): update rule, η grid
    ``lrs``, λ grid ``l2s``, data, network and training. Validated when built (``PARAMS``)."""

    optimizer: str
    lrs: tuple[float, ...]
    l2s: tuple[float, ...]
    dataset: str = "synthetic"
    profile: str = "quick"
    epochs: int = 10
    batch_size: int = 128
    n_train: int = 4096
    n_val: int = 1024
    n_test: int = 2048
    widths: tuple[int, ...] = (8, 16, 32, 64)
    norm: str = "batch"
    seed: int = 0
    augment: bool = True
    hyper: tuple[tuple[str, float], ...] = field(default=())
    precision: str = "fp32"
    evaluate: str = "phase_ends"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """``ParameterError('<field>: <problem>; <accepted values>')`` naming the first bad field, in
        the order of ``PARAMS``. The data itself is checked by ``train.load_spec_data``."""
        for name, param in PARAMS.items():
            value = getattr(self, name)
            if not (_is(value, param.kind) and param.ok(value, self)):
                raise ParameterError(f"{name}: {param.problem(value, self)}; {param.accepted(self)}")

    @classmethod
    def from_profile(
        cls,
        profile: str,
        optimizer: str,
        dataset: str = "synthetic",
        lrs: Iterable[float] | None = None,
        l2s: Iterable[float] | None = None,
        **overrides: Any,
    ) -> SweepSpec:
        """The spec of ``profile`` for ``optimizer``, with any field overridden (``None`` keeps the
        profile's value). Values are only brought to the spec's types (numpy integers to int,
        lists to tuples, the rule's default hyperparameters under ``hyper``); a bad one raises
        ``ParameterError`` with a one-line message that starts with the parameter's name."""
        rule = get_rule(optimizer)  # 'optimizer: ...' and 'profile: ...' for unknown names
        p = get_profile(profile)
        known = {f.name for f in fields(cls)} - {"optimizer", "lrs", "l2s", "dataset", "profile"}
        for k in overrides:
            if k not in known:
                raise ParameterError(f"{k}: not a parameter of a sweep; the overridable ones are "
                                     f"{', '.join(sorted(known))}")
        grid_lrs, grid_l2s = default_grid(profile, optimizer)
        hyper = overrides.pop("hyper", None)
        if hyper is None or isinstance(hyper, Mapping):
            hyper = tuple(sorted(rule.hyper(hyper).items(), key=lambda kv: str(kv[0])))
        values = {k: p[k] for k in ("epochs", "batch_size", "n_train", "n_val", "n_test", "widths")}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(optimizer=optimizer, profile=profile, dataset=dataset, hyper=hyper,
                   lrs=_floats(grid_lrs if lrs is None else lrs),
                   l2s=_floats(grid_l2s if l2s is None else l2s),
                   **{k: _normal(v) for k, v in values.items()})

    @property
    def n_models(self) -> int:
        return len(self.lrs) * len(self.l2s)

    @property
    def grid(self) -> list[tuple[float, float]]:
        """(η, λ) of each model, in model order: model m has η = lrs[m // len(l2s)], λ = l2s[m % len(l2s)]."""
        return [(lr, l2) for lr in self.lrs for l2 in self.l2s]

    @classmethod
    def for_grid(cls, profile: str, grid: str, dataset: str = "synthetic", **overrides: Any) -> SweepSpec:
        """The spec of the profile grid named ``grid`` (``grid_name``): ``from_profile`` with the
        grid's update rule and normalisation."""
        rule, norm = parse_grid(grid)
        return cls.from_profile(profile, rule, dataset, norm=norm, **overrides)

    @property
    def grid_name(self) -> str:
        """The name a results mapping gives this spec's grid (``grid_name``)."""
        return grid_name(self.optimizer, self.norm)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hyper"] = dict(self.hyper)
        return d


def grid_name(rule: str, norm: str = "batch") -> str:
    """The name of a profile grid in a results mapping: the update rule's, with ``@norm`` for a
    network normalised otherwise than by batch normalisation (``sgd``, ``sgd@weight``)."""
    return rule if norm == "batch" else f"{rule}@{norm}"


def parse_grid(name: str) -> tuple[str, str]:
    """(update rule, normalisation) of a grid name; ``ParameterError`` for an unknown normalisation
    (the rule is checked where the spec is built)."""
    rule, _, norm = name.partition("@") if isinstance(name, str) else (name, "", "")
    norm = norm or "batch"
    if norm not in NORMS:
        raise ParameterError(f"grid: unknown normalisation {norm!r} in {name!r}; "
                             f"choose one of {', '.join(NORMS)}")
    return rule, norm


def _normal(v: Any) -> Any:
    """Integers of any kind (numpy's too) as int, lists as tuples; anything else unchanged, for
    ``validate`` to judge."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, Iterable) and not isinstance(v, str | bytes | Mapping):
        return tuple(_normal(x) for x in v)
    return v


def _floats(values: Any) -> Any:
    """A grid as a tuple of floats, where every value is a real number (not a bool)."""
    values = _normal(values)
    if isinstance(values, tuple) and all(isinstance(x, numbers.Real) and not isinstance(x, bool)
                                         for x in values):
        return tuple(float(x) for x in values)
    return values


# ---------------------------------------------------------------------------------------------
# The parameters of a run that are not part of the spec: device and implementation
# ---------------------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU; ``cuda`` without a GPU is an error, and so
    is anything but ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``ParameterError('device: ...')``)."""
    accepted = "choose one of auto, cpu, cuda, cuda:N"
    if not isinstance(device, str):
        raise ParameterError(f"device: expected a name; got {device!r}; {accepted}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if m is None:
        raise ParameterError(f"device: unknown device {device!r}; {accepted}")
    if not torch.cuda.is_available():
        raise ParameterError("device: cuda was asked for but this machine has no usable GPU; "
                             "use --device cpu or auto")
    n = torch.cuda.device_count()
    if m.group(1) is not None and int(m.group(1)) >= n:
        raise ParameterError(f"device: {device} does not exist; this machine has {n} GPU(s), "
                             f"cuda:0 … cuda:{n - 1}")
    return torch.device(device)


def check_impl(impl: str) -> str:
    """``impl`` if it is one of ``IMPLS``, else ``ParameterError('impl: ...')``."""
    if not isinstance(impl, str) or impl not in IMPLS:
        raise ParameterError(f"impl: unknown implementation {impl!r}; choose one of {', '.join(IMPLS)}")
    return impl


def validate_params(spec: SweepSpec, device: str = "auto", impl: str = "auto") -> torch.device:
    """Check what a run adds to its spec (a ``SweepSpec`` is valid once built): the device and the
    implementation. Returns the device; raises ``ParameterError('<param>: ...')``."""
    if not isinstance(spec, SweepSpec):
        raise ParameterError(f"spec: expected a SweepSpec (see SweepSpec.from_profile); got {spec!r}")
    check_impl(impl)
    return resolve_device(device)
