"""Write constraints.txt: the exact versions of everything `pip install -e ".[dev]"` brings,
taken from an environment where the test suite passed.

    python .ci/lock.py            # rewrite constraints.txt from the installed packages
    python .ci/lock.py --check    # exit 1 if constraints.txt differs from them

pyproject.toml keeps the ranges medsft works with; this file pins one tested set of them, so a
new machine installs what CI last passed with (`pip install -e ".[dev]" -c constraints.txt`)
rather than whatever was released this morning. torch is left out, with what only torch needs:
users install the build for their CUDA (or the CPU wheel) first, and pip keeps it.

The walk starts at medsft[dev] as written in this checkout's pyproject.toml, follows each
installed distribution's requirements whose markers hold here (extras included), and pins the
installed version of each; a requirement that is not installed is an error (the environment
is not the one the extras describe).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
LEFT_OUT = {"torch"}
"""Installed by the user first (the build matching their hardware)."""
HEADER = """\
# The tested versions of everything `pip install -e ".[dev]"` installs besides torch (install
# torch first: the CPU wheel, or the build for your CUDA). Used as
#     pip install -e ".[dev]" -c constraints.txt
# pyproject.toml keeps the supported ranges. Written by `python .ci/lock.py` (see README.md,
# "Refreshing constraints.txt") from an environment where the whole test suite passed:
# Python {python}, {platform}, torch {torch}.
"""


def _holds(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    env = default_environment()
    return any(req.marker.evaluate({**env, "extra": e}) for e in extras or {""})


def _medsft_requirements(extras: set[str]) -> list[Requirement]:
    """medsft's own requirements with `extras`, from this checkout (not the installed copy)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    out = [Requirement(r) for r in project["dependencies"]]
    for extra in sorted(extras):
        out += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return out


def pins() -> dict[str, str]:
    """Canonical name -> installed version of each distribution medsft[dev] pulls in."""
    found: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [("medsft", {"dev"})]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        if name == "medsft":
            requirements = _medsft_requirements(extras)
        else:
            dist = md.distribution(name)
            found[name] = dist.version
            requirements = [Requirement(r) for r in dist.requires or []]
            requirements = [r for r in requirements if _holds(r, extras)]
        for req in requirements:
            child = canonicalize_name(req.name)
            if child in LEFT_OUT:
                continue
            if child != "medsft":
                try:
                    md.distribution(child)
                except md.PackageNotFoundError:
                    sys.exit(f"error: {req} (needed by {name}) is not installed here")
            todo.append((child, set(req.extras)))
    return dict(sorted(found.items()))


def render(found: dict[str, str]) -> str:
    import platform

    header = HEADER.format(
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        torch=md.version("torch"),
    )
    return header + "".join(f"{name}=={version}\n" for name, version in found.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="compare constraints.txt with the installed set"
    )
    args = parser.parse_args()
    found = pins()
    if args.check:
        written = {
            line.split("==")[0]: line.split("==")[1]
            for line in LOCK.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")
        }
        if written != found:
            changed = sorted(set(written.items()) ^ set(found.items()))
            sys.exit(f"error: constraints.txt differs from the installed packages: {changed}")
        print(f"constraints.txt matches the {len(found)} installed packages")
        return
    LOCK.write_text(render(found), encoding="utf-8")
    print(f"wrote {LOCK.relative_to(ROOT)}: {len(found)} packages")


if __name__ == "__main__":
    main()
