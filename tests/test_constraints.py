"""constraints.txt (the tested versions, README's install) agrees with pyproject.toml's ranges:
every requirement of every extra but torch is pinned, within its range."""

import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib


def test_every_requirement_is_pinned_within_its_range():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [
        Requirement(r)
        for r in [*project["dependencies"], *sum(project["optional-dependencies"].values(), [])]
    ]
    outside = []
    for req in requirements:
        name = canonicalize_name(req.name)
        if name in ("medsft", "torch"):  # torch: installed first, the build for the hardware
            continue
        if name not in pins or not req.specifier.contains(pins[name], prereleases=True):
            outside.append((str(req), pins.get(name)))
    assert not outside, f"requirements not pinned in constraints.txt within range: {outside}"
    assert "torch" not in pins
