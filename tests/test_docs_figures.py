"""Every figure README.md and docs/*.md quote beside a results file is in that file.

The convention: a figure belongs to the results files named in its paragraph or list item
(`benchmarks/results/NAME.json`, `results/NAME.md`, or a bare `NAME.json` that exists there).
A figure is a number with a unit (11.2x, 3.09%, 1,676 MiB, 35 s, 2.7 questions/s) or a decimal
fraction (0.71); plain counts (500 rows, 4 x 512, 3 rounds) are not checked. A figure matches a
JSON file when some number in it rounds to the figure at the figure's precision (a percentage
also as a share, a size also from bytes or between MiB and GB), and a markdown file when the file
writes the figure. A quoted figure with no such number is an error naming it, its page and line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RESULTS = ROOT / "benchmarks" / "results"
REFERENCE = re.compile(r"(?:benchmarks/)?(?:results/)?([\w.+-]+\.(?:json|md))")
UNITS = r"x|%|MiB|GiB|KiB|MB|GB|s|ms|tokens/s|questions/s"
FIGURE = re.compile(
    rf"(?<![\w.\-/])(\d{{1,3}}(?:,\d{{3}})+|\d+)(\.\d+)?(?:\s?({UNITS}))?(?![\w/.]*\w)"
)
SIZES = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "MB": 1e6, "GB": 1e9}


def units(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each paragraph or list item of a markdown page; code blocks
    and tables are left out (they quote commands and rendered reports)."""
    start, block, fenced = 0, [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(("```", "````")):
            fenced = not fenced
            line = ""
        new_item = re.match(r"\s*(?:[-*]|\d+\.) ", line) is not None
        if fenced or not line.strip() or line.lstrip().startswith("|") or new_item:
            if block:
                yield start, " ".join(block)
            block = [] if fenced or not line.strip() or line.lstrip().startswith("|") else [line]
            start = number
            continue
        if not block:
            start = number
        block.append(line)
    if block:
        yield start, " ".join(block)


def figures(text: str) -> Iterator[tuple[str, float, int, str | None]]:
    """(as written, value, decimals, unit) of each figure in `text` (see the module docstring)."""
    # "3.1 vs 3.0 GB": the first figure has the second's unit.
    text = re.sub(rf"(\d[\d,.]*)( vs )(\d[\d,.]*)(\s?)({UNITS})\b", r"\1\4\5\2\3\4\5", text)
    # Names with numbers in them are no figures: Qwen3-0.6B, 4B, bf16, x86, 2-core, v1.2.
    for m in FIGURE.finditer(text):
        whole, decimals, unit = m.group(1), m.group(2) or "", m.group(3)
        if unit == "x" and m.group(0).endswith(" x"):
            continue  # 4 x 512: a shape
        if unit is None and not decimals:
            continue  # a count
        if unit is None and whole != "0":
            continue  # 1.5 alone is a version or a setting more often than a figure
        value = float(whole.replace(",", "") + decimals)
        yield m.group(0), value, len(decimals) - 1 if decimals else 0, unit


def _numbers(node) -> Iterator[float]:
    if isinstance(node, bool):
        return
    if isinstance(node, int | float):
        yield float(node)
    elif isinstance(node, str):  # a tool's own message: "saved ... (0.8 s after the signal)"
        yield from (float(n) for n in re.findall(r"\d+(?:\.\d+)?", node))
    elif isinstance(node, dict):
        for v in node.values():
            yield from _numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _numbers(v)


def _candidates(value: float, unit: str | None) -> Iterator[float]:
    yield value
    if unit == "%":
        yield value * 100
    if unit in SIZES:
        yield value / SIZES[unit]  # bytes
        if unit in ("GB", "GiB"):
            yield value * 2**20 / SIZES[unit]  # MiB
        if unit in ("MiB", "MB"):
            yield value * 2**30 / SIZES[unit]  # GiB
            yield value * 1e9 / SIZES[unit]  # GB


def matches(figure: tuple[str, float, int, str | None], path: Path) -> bool:
    """Whether the results file holds the figure (see the module docstring)."""
    written, value, decimals, unit = figure
    if path.suffix == ".md":
        plain = written.replace(",", "")
        text = path.read_text(encoding="utf-8").replace(",", "")
        return re.search(rf"(?<![\d.]){re.escape(plain)}(?![\d])", text) is not None or (
            unit is not None
            and re.search(rf"(?<![\d.]){re.escape(plain[: -len(unit)].strip())}", text) is not None
        )
    tolerance = 0.5 * 10**-decimals + 1e-9
    data = json.loads(path.read_text(encoding="utf-8"))
    return any(
        abs(candidate - value) <= tolerance
        for number in _numbers(data)
        for candidate in _candidates(number, unit)
    )


def quoted(page: Path) -> Iterator[tuple[int, str, list[Path], list]]:
    """(line, paragraph, results files it names, figures it quotes) of each paragraph of `page`
    naming a results file."""
    for line, text in units(page.read_text(encoding="utf-8")):
        names = {m.group(1) for m in REFERENCE.finditer(text)}
        files = sorted(RESULTS / n for n in names if (RESULTS / n).is_file())
        if files:
            yield line, text, files, list(figures(text))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_figures_beside_a_results_file_are_in_it(page):
    wrong = [
        f"{page.name}:{line}: {figure[0]!r} is in none of {[f.name for f in files]}"
        for line, _, files, found in quoted(page)
        for figure in found
        if not any(matches(figure, f) for f in files)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_finds_figures_and_catches_a_wrong_one(tmp_path):
    text = (
        "medsft 1,588 vs 241 tokens/s (6.6x), peak RSS 3.1 vs 3.0 GB and 2.9% padding, "
        "rate 0.71, at Qwen3-0.6B with 500 rows of 4 x 512 on a 2-core machine, version 1.5"
    )
    found = {f[0]: f for f in figures(text)}
    assert list(found) == [
        "1,588 tokens/s",
        "241 tokens/s",
        "6.6x",
        "3.1 GB",
        "3.0 GB",
        "2.9%",
        "0.71",
    ]
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"speedup": 11.2, "rss_mib": [1676, 2952], "padding": 0.0309}))
    assert not matches(found["6.6x"], result) and not matches(found["2.9%"], result)
    assert matches(("11.2x", 11.2, 1, "x"), result)
    assert matches(("1,676 MiB", 1676.0, 0, "MiB"), result)
    assert matches(("3.09%", 3.09, 2, "%"), result)
    assert matches(("1.8 GB", 1.8, 1, "GB"), result)  # 1,676 MiB = 1.76 GB
    assert not matches(found["3.0 GB"], result)
    notes = tmp_path / "audit.md"
    notes.write_text("| fine | 29 (76%) |\n")
    assert matches(("76%", 76.0, 0, "%"), notes) and not matches(("75%", 75.0, 0, "%"), notes)


def test_every_page_quotes_some_checked_figure():
    # The convention is in use: the checker is not vacuous on the real pages.
    total = sum(len(found) for page in PAGES for *_, found in quoted(page))
    assert total >= 20
