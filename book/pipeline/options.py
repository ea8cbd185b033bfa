"""The build's command line. Every mistake in it is one ``ParameterError`` line that names the
option and what it accepts (exit status 2), raised before anything is executed or written.

``-p NAME VALUE`` (typed as papermill types it), ``-r NAME VALUE`` (a string), ``-y YAML`` and
``-f FILE`` (a YAML mapping) merge in papermill's order: files, then YAML, then ``-p``, then ``-r``.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from l2bn.errors import ParameterError

from .common import BOOK, GLOBAL_PARAMETERS, NOTEBOOKS

USAGE = "python book/build.py [OPTIONS]; --help lists them"
MAPPING = "a YAML mapping of NAME: VALUE, e.g. 'lrs: [0.01, 0.1]'"

def folder(text: str) -> Path:
    """A folder option's value: any path but the empty one (which would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path is not a folder")
    return Path(text)


# flags, argparse settings (the help says what the option accepts; error messages quote it).
OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--profile",), dict(default="quick", help="smoke, quick or paper (default quick)")),
    (("--dataset",), dict(default="cifar10", help="cifar10, synthetic or npz:PATH (default cifar10)")),
    (("--device",), dict(default="auto", help="auto, cpu, cuda or cuda:N (default auto)")),
    (("--only",), dict(nargs="+", metavar="NAME",
                       help="one or more chapters to execute, e.g. 04_update_rules")),
    (("-p", "--parameters"), dict(nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                                  help="NAME VALUE: a notebook parameter, typed as papermill does "
                                       "(True/False/None, int, float, else a string)")),
    (("-r", "--parameters_raw"), dict(nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                                      help="NAME VALUE: a notebook parameter kept as a string")),
    (("-y", "--parameters_yaml"), dict(action="append", default=[], metavar="YAML",
                                       help=f"notebook parameters as {MAPPING}")),
    (("-f", "--parameters_file"), dict(action="append", default=[], metavar="FILE",
                                       help=f"notebook parameters from a file holding {MAPPING}")),
    (("--force",), dict(action="store_true", help="execute the chosen chapters even if up to date")),
    (("--dry-run",), dict(action="store_true", help="check options and parameters, say what would be "
                                                    "executed, and stop (nothing is written)")),
    (("--no-html",), dict(action="store_true", help="execute notebooks only, no jupyter-book build")),
    (("--solutions",), dict(choices=("show", "hide"), default="show",
                            help="show (folded) or hide: the student edition, built from a copy of the "
                                 "sources without solutions in <stage>-student (default show)")),
    (("--stage",), dict(type=folder, default=BOOK / "_generated", metavar="DIR",
                        help="a folder for executed notebooks and the site's sources "
                             "(default book/_generated)")),
    (("--notebooks",), dict(type=folder, default=NOTEBOOKS, metavar="DIR",
                            help="the folder of the chapters' .py sources (default notebooks/)")),
    (("--out",), dict(type=folder, default=BOOK, metavar="DIR",
                      help="a folder: jupyter-book --path-output, the site goes to OUT/_build/html "
                           "(default book/)")),
)


class _Parser(argparse.ArgumentParser):
    """argparse that raises one ``ParameterError`` line instead of printing usage and exiting."""

    def error(self, message: str):
        named = re.match(r"argument (\S+):", message)
        flags = set(named[1].split("/")) if named else set()
        accepts = [kw["help"] for option, kw in OPTIONS if flags & set(option)]
        hint = f"; it takes {accepts[0]}" if accepts else f"; usage: {USAGE}"
        raise ParameterError(message.removeprefix("argument ") + hint)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = _Parser(description="Build the book: notebooks/*.py → executed notebooks → HTML.")
    for flags, settings in OPTIONS:
        ap.add_argument(*flags, **settings)
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# The notebook parameters carried by -f, -y, -p, -r
# ---------------------------------------------------------------------------------------------


@dataclass
class Extras:
    """The merged notebook parameters and, for each, the option that set it (for messages)."""

    values: dict[str, Any] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)

    def set(self, name: Any, value: Any, option: str) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ParameterError(f"{option}: {_shown(name)} is not a parameter name; it takes {MAPPING}")
        if name in GLOBAL_PARAMETERS:
            raise ParameterError(f"{option} {name}: set {name} with --{name} (make: {name.upper()}=), "
                                 "not as a notebook parameter")
        self.values[name], self.source[name] = value, option


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def resolve_type(value: str) -> Any:
    """papermill's typing of ``-p`` values: True/False/None, int, float, else the string."""
    if value in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[value]
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _plain(value: Any, option: str, seen: set[int]) -> None:
    """Refuse what papermill cannot write into a notebook as a Python literal (dates, bytes, sets)
    and YAML aliases (a value shared, or containing itself, would be written out again and again)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return  # NaN and inf too: a chapter's own check says whether it takes them
    if isinstance(value, (list, dict)):
        if id(value) in seen:
            raise ParameterError(f"{option}: YAML aliases (*name) are not accepted; it takes {MAPPING}")
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            _plain(key, option, seen)
            _plain(item, option, seen)
        return
    raise ParameterError(f"{option}: {type(value).__name__} values such as {_shown(value)} are not "
                         "accepted; it takes numbers, strings, true/false, null and lists of them")


def yaml_mapping(text: str, option: str) -> dict[str, Any]:
    """The mapping that ``text`` holds, or one ``ParameterError`` line saying what is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ParameterError(f"{option}: not valid YAML ({where}{err.problem}); it takes {MAPPING}") from None
    # PyYAML raises more than YAMLError on odd input: ValueError for a date such as 2001-13-45,
    # RecursionError for very deep nesting.
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        raise ParameterError(f"{option}: not valid YAML ({type(err).__name__}); it takes {MAPPING}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(f"{option}: holds {type(data).__name__} {_shown(data)}, not NAME: VALUE "
                             f"pairs; it takes {MAPPING}")
    _plain(data, option, set())
    return data


def read_parameters_file(path: str) -> dict[str, Any]:
    option = f"-f {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParameterError(f"{option}: no such file; it takes a file holding {MAPPING}") from None
    except IsADirectoryError:
        raise ParameterError(f"{option}: is a folder; it takes a file holding {MAPPING}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ParameterError(f"{option}: cannot be read ({type(err).__name__}); it takes a UTF-8 "
                             f"file holding {MAPPING}") from None
    return yaml_mapping(text, option)


def extra_parameters(args: argparse.Namespace) -> Extras:
    """The ``-f``, ``-y``, ``-p``, ``-r`` parameters merged in papermill's order (later wins)."""
    extras = Extras()
    for path in args.parameters_file:
        for name, value in read_parameters_file(path).items():
            extras.set(name, value, f"-f {path}")
    for text in args.parameters_yaml:
        for name, value in yaml_mapping(text, "-y").items():
            extras.set(name, value, "-y")
    for name, value in args.parameters:
        extras.set(name, resolve_type(value), "-p")
    for name, value in args.parameters_raw:
        extras.set(name, value, "-r")
    return extras


def check_folders(args: argparse.Namespace) -> None:
    """--stage and --out must be folders (or not exist yet), --notebooks an existing folder."""
    for option, path in (("--stage", args.stage), ("--out", args.out)):
        if path.exists() and not path.is_dir():
            raise ParameterError(f"{option}: {path} is a file; it takes a folder (created if missing)")
    if not args.notebooks.is_dir():
        raise ParameterError(f"--notebooks: {args.notebooks} is not a folder; it takes the folder of the "
                             "chapters' .py sources")
