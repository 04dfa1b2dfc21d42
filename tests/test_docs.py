"""docs/: the GPU table is the estimate script's output, and every relative link resolves."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path) if path else page
        missing = not resolved.exists()
        if not missing and anchor:
            missing = anchor not in anchors(resolved.read_text(encoding="utf-8"))
        if missing:
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_gpu_table_is_the_estimate_scripts_output():
    done = subprocess.run(
        [sys.executable, "benchmarks/estimate_gpu.py", "--markdown"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout
    assert table.count("\n| `") == 9  # three configs at three shapes
    assert table in (ROOT / "docs" / "gpu.md").read_text(encoding="utf-8")


PROJECT_PATH = re.compile(r"`((?:medsft|benchmarks|configs|docs|tests|data/sample)/[\w./-]*)`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_project_paths_named_in_docs_exist(page):
    """Every `medsft/...`, `benchmarks/...`, `configs/...` path the page names is in the repo."""
    named = set(PROJECT_PATH.findall(page.read_text(encoding="utf-8")))
    missing = sorted(p for p in named if "*" not in p and not (ROOT / p).exists())
    assert not missing, f"{page.name} names paths that do not exist: {missing}"
