"""pyproject.toml's dependency ranges against the pins CI tests them with:
the floors are what `make test-oldest` installs (constraints/oldest.txt), the
newest pins (constraints/newest.txt) lie inside the ranges, and the runtime
requirements name no backend (`make check-wheel` checks the built wheel)."""

import os
import re

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
from packaging.requirements import Requirement  # noqa: E402
from packaging.version import Version  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _pins(name):
    pins = {}
    with open(os.path.join(ROOT, "constraints", name), encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                package, version = line.split("==")
                pins[_normal(package)] = Version(version)
    return pins


def _normal(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements():
    """Every requirement of the package and its extras, by package name
    (tensorflow-cpu, the dev extra's TensorFlow, is read as tensorflow)."""
    project = _project()
    found = {}
    for text in project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]:
        requirement = Requirement(text)
        name = _normal(requirement.name).replace("tensorflow-cpu", "tensorflow")
        if name != "keras-mtl" and requirement.specifier:
            found.setdefault(name, requirement.specifier)
    return found


def test_runtime_requirements_name_no_backend():
    names = {_normal(Requirement(r).name) for r in _project()["dependencies"]}
    assert names == {"keras", "numpy"}


def test_the_floors_are_the_oldest_pins():
    oldest = _pins("oldest.txt")
    for name, specifier in _requirements().items():
        floors = [Version(s.version) for s in specifier if s.operator == ">="]
        pinned = oldest.get(name, oldest.get(name + "-cpu"))
        if name in ("keras", "tensorflow", "jax", "keras-tuner", "tensorflow-datasets"):
            assert floors and pinned == floors[0], (name, specifier, pinned)


def test_the_newest_pins_lie_in_the_ranges():
    newest = _pins("newest.txt")
    for name, specifier in _requirements().items():
        pinned = newest.get(name, newest.get(name + "-cpu"))
        if pinned is not None:
            assert specifier.contains(pinned, prereleases=True), (name, specifier, pinned)
