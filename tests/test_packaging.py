"""The wheel's package list: every package folder ships, under edgecomp (no generic top-level names).

.ci/wheel-check builds the wheel and runs it outside the checkout; these checks catch a new
subpackage that pyproject.toml forgets, in seconds.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import edgecomp
from edgecomp.profiles import list_profiles, profiles_dir

ROOT = Path(__file__).resolve().parents[1]
INSTALLED_AS = {"edgecomp": "edgecomp", "runtime": "edgecomp.runtime", "exporters": "edgecomp.exporters",
                "device_profiles": "edgecomp.device_profiles"}


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_in_the_wheel_under_edgecomp():
    on_disk = set()
    for top, name in INSTALLED_AS.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            on_disk.add(".".join((name, *rel)))
    listed = set(_setuptools()["packages"])
    assert on_disk - listed == set(), "package folders missing from pyproject.toml [tool.setuptools] packages"
    assert listed - on_disk == set(), "pyproject.toml lists packages that do not exist"
    assert all(name == "edgecomp" or name.startswith("edgecomp.") for name in listed)


def test_top_level_folders_map_into_edgecomp_and_profiles_are_package_data():
    setuptools = _setuptools()
    assert setuptools["package-dir"] == {"edgecomp.exporters": "exporters", "edgecomp.runtime": "runtime",
                                         "edgecomp.device_profiles": "device_profiles"}
    assert setuptools["package-data"]["edgecomp.device_profiles"] == ["*.yaml"]
    assert profiles_dir() == (ROOT / "device_profiles").resolve()
    assert {p.source.name for p in list_profiles()} == {p.name for p in (ROOT / "device_profiles").glob("*.yaml")}


def test_public_api_names_resolve():
    for name in edgecomp.__all__:
        assert getattr(edgecomp, name) is not None, name
