"""The three descriptions of the environment agree: pyproject.toml (what the library needs),
environment.yml (the same for conda users) and requirements.lock (the exact versions the book is
built with)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pyproject_requirements() -> list[Requirement]:
    """``dependencies`` and every group of ``optional-dependencies``."""
    project = pyproject()["project"]
    lines = list(project["dependencies"])
    for group in project.get("optional-dependencies", {}).values():
        lines += group
    return [Requirement(line) for line in lines]


def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def conda_pip_requirements() -> list[Requirement]:
    """The pip section of environment.yml, without the editable install of the package itself."""
    deps = environment()["dependencies"]
    [pip] = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    return [Requirement(line) for line in pip if not line.startswith("-e")]


def key(req: Requirement) -> tuple:
    return (canonicalize_name(req.name), frozenset(req.extras), str(req.specifier), str(req.marker))


def lock_pins() -> dict[str, Version]:
    pins = {}
    for raw in (ROOT / "requirements.lock").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        [spec] = list(req.specifier)  # every line is one exact pin
        assert spec.operator == "==", f"requirements.lock: {line!r} is not pinned with =="
        name = canonicalize_name(req.name)
        assert name not in pins, f"requirements.lock pins {name} twice"
        pins[name] = Version(spec.version)
    return pins


def test_environment_yml_lists_exactly_the_pyproject_requirements():
    ours, conda = pyproject_requirements(), conda_pip_requirements()
    assert len({key(r) for r in ours}) == len(ours), "pyproject.toml lists a requirement twice"
    assert len({key(r) for r in conda}) == len(conda), "environment.yml lists a requirement twice"
    only_pyproject = sorted(str(r) for r in ours if key(r) not in {key(c) for c in conda})
    only_conda = sorted(str(r) for r in conda if key(r) not in {key(o) for o in ours})
    assert not only_pyproject and not only_conda, (
        f"in pyproject.toml only: {only_pyproject}; in environment.yml only: {only_conda}")


def test_environment_yml_installs_the_package_and_the_right_python():
    deps = environment()["dependencies"]
    [pip] = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert "-e ." in pip
    [python] = [d for d in deps if isinstance(d, str) and d.replace(" ", "").startswith("python")]
    conda_python = SpecifierSet(python.replace(" ", "")[len("python"):])
    assert conda_python == SpecifierSet(pyproject()["project"]["requires-python"])


@pytest.mark.parametrize("req", pyproject_requirements(), ids=str)
def test_the_lock_satisfies_every_requirement(req):
    pins = lock_pins()
    name = canonicalize_name(req.name)
    assert name in pins, f"{req} is not pinned in requirements.lock"
    assert req.specifier.contains(pins[name], prereleases=True), (
        f"requirements.lock pins {name}=={pins[name]}, outside {req}")
