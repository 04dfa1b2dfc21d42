"""report.html: the report as one self-contained page, with a browser of every test case.

The page has two parts:

- the summary: report.md's tables and plots, converted to HTML (the same text, so the two never
  disagree), every PNG inlined as a `data:` URI;
- the case browser: every test question with its reference, each system's answer side by side,
  the judge's verdict in both answer orders with its reasons, flags (the two orders disagree, an
  answer is empty or hit max_new_tokens, the leakage check flagged the item), filters (slice,
  system pair, verdict, length difference, flags) and search.

Nothing is fetched: CSS and script are inline, fonts are the system's (a CJK stack that every
desktop has one of), so the file opens from `file://`, offline, or attached to a paper's
supplement. The cases travel as one JSON blob that the script reads once and renders a page at a
time, so the file grows linearly with questions x systems and a 1,000 x 4 set stays quick
(benchmarks/html_report.py measures size and time to interactive in Chromium).

Inputs are plain data: report.json's dict, the questions (from the test set), and files the
evaluation leaves in its output folder: `report.md`, the PNG plots, `generations/<system>.jsonl`
(each answer's finish reason) and `judge_<system>.json` (each pair's verdicts and reasons).

The blob (`CASES_SCHEMA` in the page's script reads these keys): `systems`, `baseline`,
`judged` (system -> judge model), `slice_column`, and `cases`, each with `i` (index), `q`
(question), `r` (reference), `g` (slice value or null), `w` (file:line), `a`/`n`/`x` (per system:
answer, its length in characters, 1 when it hit max_new_tokens), `k` (leakage item or null), `j`
(judged system -> {o: outcome, c: both orders agree, ab/ba: verdict per order, rab/rba: the
judge's reasons per order, e: error}) and `f` (flags).
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the page is written without torch or Lightning
    from medsft.evaluation.testset import Example

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
_HAN = re.compile(r"[\u3400-\u9fff]")
_CODE_SPAN = re.compile(r"(`[^`]*`)")
_IMG_SRC = re.compile(r'<img alt="([^"]*)" src="([^"]+)" />')


def case_question(example: Example) -> dict[str, Any]:
    """What the case browser shows of a test question: `question`, `reference`, `group` (its
    slice) and `where` (file and line)."""
    return {
        "question": example.question,
        "reference": example.reference,
        "group": example.group,
        "where": example.where,
    }


def case_data(
    report: dict[str, Any],
    questions: Sequence[dict[str, Any]],
    *,
    finish_reasons: dict[str, list[str | None]] | None = None,
    judge_records: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """The case browser's data: one entry per test question (see the module docstring).

    Args:
        report: report.json's content (systems and their answers, judge, leakage, slices).
        questions: per test question, in test-set order: `question`, `reference`, and optionally
            `group` (its slice) and `where` (file and line).
        finish_reasons: per system, each answer's finish reason (`length` = hit
            max_new_tokens); systems without one (answer files) are never marked cut.
        judge_records: per judged system, the judge's pair records (judge_<system>.json's
            `records`), aligned with `questions`.
    """
    systems = [s["name"] for s in report["systems"]]
    answers = {s["name"]: s["answers"] for s in report["systems"]}
    n = len(questions)
    for name, texts in answers.items():
        if len(texts) != n:
            raise ValueError(f"system {name} has {len(texts)} answers for {n} questions")
    finish_reasons = finish_reasons or {}
    judge_records = judge_records or {}
    judge = report.get("judge") or {}
    judged = {
        name: judge.get("model")
        for name in (judge.get("results") or {})
        if name in judge_records and name in answers
    }
    leakage = report.get("leakage") or {}
    leak_items = {item["index"]: item for item in leakage.get("items", [])}
    cases = []
    for i, q in enumerate(questions):
        texts = [answers[s][i] for s in systems]
        cut = [int(s in finish_reasons and finish_reasons[s][i] == "length") for s in systems]
        verdicts = {s: _verdict(judge_records[s][i]) for s in judged}
        leak = _leak(leak_items.get(i))
        flags = []
        if any(v["c"] is False for v in verdicts.values()):
            flags.append("disagree")
        if any(not t.strip() for t in texts):
            flags.append("empty")
        if any(cut):
            flags.append("cut")
        if leak and leak["f"]:
            flags.append("leak")
        cases.append(
            {
                "i": i,
                "q": q["question"],
                "r": q["reference"],
                "g": q.get("group"),
                "w": q.get("where"),
                "a": texts,
                "n": [len(t.strip()) for t in texts],
                "x": cut,
                "k": leak,
                "j": verdicts,
                "f": flags,
            }
        )
    return {
        "systems": systems,
        "baseline": judge.get("baseline") if judged else None,
        "judged": judged,
        "slice_column": (report.get("slices") or {}).get("column"),
        "cases": cases,
    }


def _verdict(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "o": record["outcome"],
        "c": record["consistent"],
        "ab": record["verdict_ab"],
        "ba": record["verdict_ba"],
        "rab": record.get("reasons_ab") or record.get("raw_ab"),
        "rba": record.get("reasons_ba") or record.get("raw_ba"),
        "e": record.get("error"),
    }


def _leak(item: dict[str, Any] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {
        "f": bool(item["flagged"]),
        "qs": item["question_share"],
        "rs": item["reference_share"],
        "d": item.get("exact_duplicate"),
        "m": item.get("question_match") or item.get("reference_match"),
    }


def summary_html(markdown: str, image: Callable[[str], str | None]) -> str:
    """report.md as HTML, every raw `<`/`&` in its text escaped (answers and questions are
    model and user text, never markup) and each image inlined.

    Args:
        markdown: report.md's text.
        image: an image's file name -> its `data:` URI, or None when there is no such file
            (the image is then replaced by its caption).
    """
    import markdown as md

    body = md.markdown(
        _escape_markdown(_without_section(markdown, "## Examples")),
        extensions=["tables", "fenced_code"],
    )

    def inline(match: re.Match[str]) -> str:
        alt, src = match.group(1), match.group(2)
        uri = image(src)
        if uri is None:
            return f'<span class="missing">[{alt}: {escape(src)} not found]</span>'
        return f'<img alt="{alt}" src="{uri}" />'

    body = _IMG_SRC.sub(inline, body)
    return body.replace("<table>", '<div class="scroll"><table>').replace(
        "</table>", "</table></div>"
    )


def _without_section(markdown: str, heading: str) -> str:
    """`markdown` without the section under `heading` (the case browser shows every example)."""
    out, skipping = [], False
    for line in markdown.splitlines():
        if line.startswith("## "):
            skipping = line.strip() == heading
        if not skipping:
            out.append(line)
    return "\n".join(out)


def _escape_markdown(markdown: str) -> str:
    """Escape `&`, `<` and `>` outside code fences and spans, keeping report.md's own `<br>` line
    breaks (markdown escapes code itself)."""
    out, fence = [], None
    for line in markdown.splitlines():
        stripped = line.lstrip()
        if fence is None and stripped.startswith("```"):
            fence = stripped[: len(stripped) - len(stripped.lstrip("`"))]
        elif fence is not None and stripped.startswith(fence):
            fence = None
        elif fence is None:
            # Code spans are escaped by markdown itself: escape the text between them only.
            parts = _CODE_SPAN.split(line)
            line = "".join(
                part if k % 2 else escape(part, quote=False).replace("&lt;br&gt;", "<br>")
                for k, part in enumerate(parts)
            )
        out.append(line)
    return "\n".join(out)


def render_html(report: dict[str, Any], summary: str, cases: dict[str, Any]) -> str:
    """The whole page.

    Args:
        report: report.json's content (title line: test set, date, version).
        summary: the summary's HTML (`summary_html`).
        cases: the case browser's data (`case_data`).
    """
    blob = json.dumps(cases, ensure_ascii=False, separators=(",", ":"))
    # Inside <script>, "</script>" or "<!--" in an answer would end or confuse the element.
    blob = blob.replace("<", "\\u003c").replace(">", "\\u003e")
    test = report.get("test_set") or {}
    text = " ".join(c["q"] for c in cases["cases"][:50])
    lang = "zh-CN" if _HAN.search(text) else "en"
    title = f"Evaluation report: {test.get('source', '')}"
    page = (TEMPLATES / "report.html").read_text(encoding="utf-8")
    replacements = {
        "{{lang}}": lang,
        "{{title}}": escape(title),
        "{{created}}": escape(
            f"{report.get('created', '')}, medsft {report.get('medsft_version', '')}"
        ),
        "{{css}}": (TEMPLATES / "report.css").read_text(encoding="utf-8"),
        "{{summary}}": summary,
        "{{cases}}": blob,
        "{{script}}": (TEMPLATES / "report.js").read_text(encoding="utf-8"),
    }
    # One pass, so that text substituted in (an answer holding "{{script}}") is never replaced.
    pattern = re.compile("|".join(re.escape(k) for k in replacements))
    return pattern.sub(lambda m: replacements[m.group(0)], page)


def read_outputs(
    report: dict[str, Any], questions: Sequence[dict[str, Any]], out_dir: Path
) -> tuple[dict[str, list[str | None]], dict[str, list[dict[str, Any]]]]:
    """(finish reasons, judge records) of each system, read from the evaluation's output folder;
    a file that does not match this report's answers or questions (left by an earlier run) is
    ignored with a warning."""
    n = len(questions)
    finish: dict[str, list[str | None]] = {}
    for system in report["systems"]:
        path = out_dir / "generations" / f"{system['name']}.jsonl"
        if system["kind"] == "answers" or not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        by_index = {row.get("index"): row for row in rows}
        if [by_index.get(i, {}).get("answer") for i in range(n)] != system["answers"]:
            log.warning("%s does not hold this report's answers: cut answers not marked", path)
            continue
        finish[system["name"]] = [by_index[i].get("finish_reason") for i in range(n)]
    records: dict[str, list[dict[str, Any]]] = {}
    for name in (report.get("judge") or {}).get("results") or {}:
        path = out_dir / f"judge_{name}.json"
        if not path.is_file():
            continue
        found = json.loads(path.read_text(encoding="utf-8")).get("records") or []
        if [r["question"] for r in found] != [q["question"] for q in questions]:
            log.warning("%s does not match this test set: its verdicts are not shown", path)
            continue
        records[name] = found
    return finish, records


def write_html(report: dict[str, Any], questions: Sequence[dict[str, Any]], out_dir: Path) -> Path:
    """Write `<out_dir>/report.html` from report.json's content, the test questions and the
    files the evaluation wrote beside them (report.md first: its text is the summary).

    Args:
        report: report.json's content.
        questions: per test question: `question`, `reference`, `group`, `where`.
        out_dir: the evaluation's output folder.
    """
    out_dir = Path(out_dir)
    finish, records = read_outputs(report, questions, out_dir)
    cases = case_data(report, questions, finish_reasons=finish, judge_records=records)
    markdown = (out_dir / "report.md").read_text(encoding="utf-8")
    summary = summary_html(markdown, lambda name: _data_uri(out_dir, name))
    path = out_dir / "report.html"
    path.write_text(render_html(report, summary, cases), encoding="utf-8")
    log.info("case browser written to %s", path)
    return path


def _data_uri(out_dir: Path, name: str) -> str | None:
    """A PNG in the output folder as a `data:` URI; None for anything else (no path escapes
    the folder, no remote image is ever referenced)."""
    path = (out_dir / name).resolve()
    if path.suffix.lower() != ".png" or out_dir.resolve() not in path.parents or not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
