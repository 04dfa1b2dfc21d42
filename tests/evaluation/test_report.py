"""medsft.evaluation.report: the sections registry, and report.md rendered from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import medsft.evaluation.sections
from medsft.evaluation import DataSpec, EvalConfig, SystemSpec, evaluate
from medsft.evaluation.report import Section, cell, fmt, render_markdown, sections
from tests.helpers import sample_report

ROOT = Path(__file__).resolve().parents[2]

REFUSAL = '''
"""A section added as one module: how many answers refuse."""

from medsft.evaluation.report import Section


def compute(run):
    return {o.name: sum("无法回答" in a for a in o.answers) for o in run.outputs}


def render(report):
    return ["", "## Refusals", ""] + [f"- {s}: {n}" for s, n in report["refusal"].items()]


SECTIONS = (Section("refusal", render, compute, order=75),)
'''


@pytest.fixture
def extra_sections(tmp_path, monkeypatch):
    """A folder whose modules join the sections package (as a new file in it would)."""
    folder = tmp_path / "more_sections"
    folder.mkdir()
    path = [*medsft.evaluation.sections.__path__, str(folder)]
    monkeypatch.setattr(medsft.evaluation.sections, "__path__", path)
    sections.cache_clear()
    yield folder
    sections.cache_clear()


def test_sections_come_in_order_with_unique_keys():
    found = sections()
    assert [s.order for s in found] == sorted(s.order for s in found)
    assert len({s.key for s in found}) == len(found)
    report = sample_report([1])
    md = render_markdown(report)
    # report.md is every section's lines, in registry order.
    assert md == "\n".join(line for s in found for line in s.render(report)) + "\n"
    # Sections with nothing to say leave no trace: no empty heading.
    silent = {s.key for s in found if not s.render(report)}
    assert silent == {"paired", "slices", "think", "mcq", "leakage", "ablation", "training"}


def test_a_new_section_is_one_module(extra_sections, tmp_path):
    (extra_sections / "refusal.py").write_text(REFUSAL, encoding="utf-8")
    answers = tmp_path / "answers.jsonl"
    questions = json.loads((ROOT / "data/sample/test_zh_med.json").read_text(encoding="utf-8"))
    rows = [
        {"question": q, "answer": "抱歉，无法回答。" if i else r}
        for i, (q, r) in enumerate(questions[:3])
    ]
    answers.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    config = EvalConfig(
        systems=[SystemSpec("mine", str(answers))],
        test_set=DataSpec(source=str(ROOT / "data/sample/test_zh_med.json"), limit=3),
        output_dir=str(tmp_path / "out"),
    )
    config.scoring.n_resamples = 0
    config.judge.enabled = False
    report = evaluate(config)
    computing = [s.key for s in sections() if s.compute is not None]
    assert "refusal" in computing and all(key in report for key in computing)
    assert report["refusal"] == {"mine": 2}
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## Refusals\n\n- mine: 2" in md
    assert md.index("### Thinking" if "### Thinking" in md else "## Scores") < md.index(
        "## Refusals"
    )
    assert md.index("## Refusals") < md.index("## Judge")


def test_a_module_without_sections_or_with_a_repeated_key_is_refused(extra_sections):
    (extra_sections / "broken.py").write_text("SECTION = None\n", encoding="utf-8")
    with pytest.raises(TypeError, match=r"broken must define SECTIONS"):
        sections()
    (extra_sections / "broken.py").unlink()
    (extra_sections / "repeated.py").write_text(
        "from medsft.evaluation.report import Section\n"
        "SECTIONS = (Section('judge', lambda report: [], order=999),)\n",
        encoding="utf-8",
    )
    sections.cache_clear()
    with pytest.raises(ValueError, match=r"repeat the key\(s\) \['judge'\]"):
        sections()


def test_cells_escape_tables_and_scores_show_their_interval():
    assert cell("a|b\nc") == "a\\|b<br>c" and cell("  ") == "*(empty)*" and cell(None) == "–"
    assert cell("x" * 10, limit=4) == "xxxx…"
    assert fmt({"score": 1.234, "low": 1.0, "high": 2.0}) == "1.23 [1.00, 2.00]"
    assert fmt({"score": None}) == fmt(None) == "–"
    assert isinstance(sections()[0], Section)
