"""report.md's sections: one registry of (key, compute, render), and the cell formatting they share.

A section is a `Section` in a module of the medsft.evaluation.sections package: `compute` (if
any) fills `report[key]` once the systems are scored, `render` turns the report into its lines of
report.md. `sections()` finds every module of that package, so a new section (a refusal rate, a
safety check) is one new module there, with no edit here or in run.py:

    # medsft/evaluation/sections/refusal.py
    from medsft.evaluation.report import Section

    def compute(run): return {o.name: sum("无法回答" in a for a in o.answers) for o in run.outputs}

    def render(report): return ["", "## Refusals", "", *(f"- {s}: {n}" for s, n in ...)]

    SECTIONS = (Section("refusal", render, compute, order=75),)

Sections compute and render in `order`; a section's compute sees what the earlier ones stored.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: rendering a report needs neither torch nor Lightning
    from medsft.evaluation.config import EvalConfig
    from medsft.evaluation.mcq import McqRun, McqSet
    from medsft.evaluation.systems import SystemOutput
    from medsft.evaluation.testset import Example


@dataclass
class Evaluation:
    """What a section's `compute` reads: the evaluation once every system is scored."""

    config: EvalConfig
    examples: list[Example]
    """The test set, in order."""
    outputs: list[SystemOutput]
    """Every system's answers, in config order."""
    mcq: McqSet | None
    """The multiple-choice set (`mcq_set`), when one is configured."""
    mcq_runs: list[McqRun]
    """Each (system, method)'s multiple-choice predictions."""
    out_dir: Path
    """Where the report and its files go."""
    report: dict[str, Any]
    """report.json so far: the scores, and what the sections before this one computed."""


@dataclass(frozen=True)
class Section:
    """One section of report.md and, when it computes something, of report.json."""

    key: str
    """The section's name, unique; with `compute`, the report.json key its result is stored at."""
    render: Callable[[dict[str, Any]], list[str]]
    """report.json's content -> this section's lines of report.md ([] to leave it out)."""
    compute: Callable[[Evaluation], Any] | None = None
    """The evaluation -> `report[key]` (JSON-serialisable); None: the section only renders."""
    order: int = 0
    """Position in report.md (and in computing), ascending; unique."""


SECTIONS_PACKAGE = "medsft.evaluation.sections"
"""The package whose modules' `SECTIONS` tuples make up the registry."""


@functools.cache
def sections() -> tuple[Section, ...]:
    """Every registered section, in order: the `SECTIONS` of each module of `SECTIONS_PACKAGE`.

    Raises:
        TypeError: a module of the package has no `SECTIONS` tuple of `Section`s.
        ValueError: two sections share a key or an order.
    """
    package = importlib.import_module(SECTIONS_PACKAGE)
    found: list[Section] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{SECTIONS_PACKAGE}.{info.name}")
        declared = getattr(module, "SECTIONS", None)
        if not isinstance(declared, tuple) or not all(isinstance(s, Section) for s in declared):
            raise TypeError(
                f"{module.__name__} must define SECTIONS = (Section(...), ...), the sections it "
                "adds to report.md (medsft.evaluation.report.Section)"
            )
        found += declared
    for attribute in ("key", "order"):
        values = [getattr(s, attribute) for s in found]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"report sections repeat the {attribute}(s) {repeated}")
    return tuple(sorted(found, key=lambda s: s.order))


def compute_sections(run: Evaluation) -> None:
    """Store each computing section's result at `run.report[key]`, in order."""
    for section in sections():
        if section.compute is not None:
            run.report[section.key] = section.compute(run)


def render_markdown(report: dict[str, Any]) -> str:
    """report.md from report.json's content: every section's lines, in order."""
    lines: list[str] = []
    for section in sections():
        lines += section.render(report)
    return "\n".join(lines) + "\n"


def fmt(entry: dict[str, Any] | None, digits: int = 2) -> str:
    """A score entry (`score`, and `low`/`high` when it has an interval) as one table cell."""
    if not entry or entry.get("score") is None:
        return "–"
    text = f"{entry['score']:.{digits}f}"
    if "low" in entry:
        text += f" [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"
    return text


def cell(text: str | None, limit: int = 300) -> str:
    """Free text as one Markdown table cell: cut at `limit` characters, pipes and newlines escaped."""
    if text is None:
        return "–"
    text = text.strip()
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.replace("|", "\\|").replace("\n", "<br>") or "*(empty)*"
