"""report.html: the case data, a page that needs nothing from the network and never runs an answer
as markup, and the case browser used in a real headless Chromium (skipped with the reason where
none can run): every question found, filters by slice, verdict, pair, length and flags, search,
a linked view, and a screenshot that is not blank. (The demo's own report in Chromium:
tests/test_evaluate.py, which evaluates the demo once.)"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from medsft.evaluation.html import case_data, read_outputs, render_html, summary_html
from tests.browser import BrowserUnavailable, Chromium, blob, choose, not_blank, questions_found
from tests.report_cases import synthetic_evaluation

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def judged(tmp_path_factory) -> tuple[Path, dict]:
    """A synthetic evaluation of 40 questions x 3 systems with judge verdicts and every flag."""
    out = tmp_path_factory.mktemp("judged")
    return out, synthetic_evaluation(out, n=40)


@pytest.fixture(scope="module")
def browser():
    try:
        with Chromium() as chromium:
            yield chromium
    except BrowserUnavailable as err:
        pytest.skip(str(err))


# -- the data ---------------------------------------------------------------------------------
def test_each_case_carries_answers_verdicts_in_both_orders_and_its_flags(judged):
    out, report = judged
    data = blob((out / "report.html").read_text(encoding="utf-8"))
    assert data["systems"] == ["base", "finetuned", "gpt"] and data["baseline"] == "gpt"
    assert set(data["judged"]) == {"base", "finetuned"} and data["slice_column"] == "department"
    cases = data["cases"]
    assert [c["q"] for c in cases] == [q["question"] for q in report["_questions"]]
    for c in cases:
        i = c["i"]
        assert c["a"] == [s["answers"][i] for s in report["systems"]]
        assert c["x"] == [int(i % 7 == 3), 0, 0]  # base's answers that hit max_new_tokens
        verdict = c["j"]["finetuned"]
        if i % 13 == 9:
            assert verdict["o"] == "error" and verdict["e"]
        else:
            assert verdict["ab"] in ("better", "worse", "equal") and verdict["rab"].startswith(
                "理由"
            )
            assert verdict["c"] is (i % 5 != 2)
        expected = {
            "disagree": i % 5 == 2 and i % 13 != 9,
            "empty": i % 11 == 5,
            "cut": i % 7 == 3,
            "leak": i % 17 == 4,
        }
        assert c["f"] == [f for f, on in expected.items() if on], i


def test_files_left_by_another_run_are_not_shown_as_this_ones(judged, tmp_path, caplog):
    out, report = judged
    for name in ("judge_finetuned.json", "report.md"):
        (tmp_path / name).write_text((out / name).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "generations").mkdir()
    rows = (out / "generations" / "base.jsonl").read_text(encoding="utf-8").splitlines()
    stale = [json.loads(r) for r in rows]
    stale[0]["answer"] += "（旧）"  # an answer this report does not hold
    (tmp_path / "generations" / "base.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in stale), encoding="utf-8"
    )
    other = [dict(q, question=q["question"] + "？") for q in report["_questions"]]
    with caplog.at_level(logging.WARNING, logger="medsft"):
        finish, records = read_outputs(report, report["_questions"], tmp_path)
        assert finish == {} and "does not hold this report's answers" in caplog.text
        assert set(records) == {"finetuned"}
        assert read_outputs(report, other, tmp_path)[1] == {}
        assert "does not match this test set" in caplog.text


HOSTILE = (
    '</script><script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> {{script}}'
)


def hostile_page(tmp_path: Path) -> Path:
    """A report whose answers, question and slice are markup and template markers."""
    report = {
        "systems": [
            {"name": "a", "kind": "answers", "answers": [HOSTILE, "普通的回答"]},
            {"name": "b", "kind": "answers", "answers": ["", "另一个回答"]},
        ],
        "judge": {"status": "skipped", "baseline": "b"},
        "slices": {"column": "dept"},
        "test_set": {"source": "t.jsonl"},
    }
    questions = [
        {"question": "<b>粗体</b>？", "reference": "参考", "group": "<i>科</i>", "where": "t:1"},
        {"question": "第二个问题", "reference": "参考二", "group": "内科", "where": "t:2"},
    ]
    markdown = (
        "# Evaluation report\n\n| dept | n |\n|---|---|\n| <img src=x onerror=alert(1)> | 1 |\n\n"
        "Answers in `generations/<system>.jsonl`.\n\n![metrics](metrics.png)\n\n"
        "![remote](http://example.com/x.png)\n\n## Examples\n\n" + HOSTILE + "\n"
    )
    png = "data:image/png;base64,iVBORw0KGgo="
    summary = summary_html(markdown, lambda name: png if name == "metrics.png" else None)
    page = render_html(report, summary, case_data(report, questions))
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def test_the_page_needs_no_network_and_shows_markup_as_text(tmp_path):
    page = hostile_page(tmp_path).read_text(encoding="utf-8")
    assert page.count("<script") == 2  # the data and the browser's code, nothing from answers
    sources = re.findall(r'\b(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith(("data:image/png", "#")) for s in sources), sources
    assert "[remote: http://example.com/x.png not found]" in page  # named, never fetched
    assert "@import" not in page and "url(" not in page
    summary = page.split('<section id="summary">')[1].split("</section>")[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in summary  # a table cell's markup, escaped
    assert "<code>generations/&lt;system&gt;.jsonl</code>" in summary  # escaped once, not twice
    assert "window.pwned" not in summary  # report.md's examples: the case browser shows them
    assert blob(page)["cases"][0]["a"][0] == HOSTILE  # the data itself is intact


def test_size_grows_linearly_with_questions_times_systems():
    def size(n: int) -> int:
        answers = [f"第{i}个回答：多喝水，注意休息，必要时就医。" * 5 for i in range(n)]
        report = {
            "systems": [{"name": s, "kind": "answers", "answers": answers} for s in "abcd"],
            "judge": {},
        }
        questions = [{"question": f"问题{i}", "reference": "参考" * 50} for i in range(n)]
        return len(render_html(report, "", case_data(report, questions)).encode())

    empty, one, two = size(0), size(500), size(1000)
    assert 0.97 < (two - one) / (one - empty) < 1.03


# -- in a real browser ------------------------------------------------------------------------
def test_markup_in_answers_stays_text_in_the_browser(tmp_path, browser):
    browser.open(hostile_page(tmp_path).as_uri())
    browser.wait_for("window.medsftReport && window.medsftReport.ready")
    assert browser.evaluate("window.pwned === undefined")
    shown = browser.evaluate(
        "[...document.querySelectorAll('#case-0 .answer .text')].map(e => e.textContent)"
    )
    assert HOSTILE in shown
    assert browser.evaluate("document.querySelector('#case-0 .question').textContent") == (
        "<b>粗体</b>？"
    )


def test_case_browser_finds_filters_and_searches_judged_cases(judged, browser, tmp_path):
    out, report = judged
    data = blob((out / "report.html").read_text(encoding="utf-8"))
    cases = data["cases"]
    browser.open((out / "report.html").as_uri())
    state = browser.wait_for(
        "window.medsftReport && window.medsftReport.ready && window.medsftReport"
    )
    assert state["total"] == 40 and state["matched"] == 40

    choose(browser, "f-size", "10")
    assert sorted(questions_found(browser)) == sorted(q["question"] for q in report["_questions"])

    # A slice: exactly its questions, each card labelled with it.
    slice_value = cases[1]["g"]
    state = choose(browser, "f-slice", slice_value)
    assert state["matched"] == sum(c["g"] == slice_value for c in cases)
    labels = browser.evaluate(
        "[...document.querySelectorAll('#case-list .case .badge.slice')].map(e => e.textContent)"
    )
    assert labels and set(labels) == {f"department: {slice_value}"}
    choose(browser, "f-slice", "")

    # Verdicts: the pairs whose two orders disagree, with the judge's reasons in both orders.
    state = choose(browser, "f-verdict", "finetuned\u0000disagree")
    disagree = [
        c for c in cases if c["j"]["finetuned"]["o"] == "tie" and not c["j"]["finetuned"]["c"]
    ]
    assert state["matched"] == len(disagree) > 0
    text = browser.evaluate("document.querySelector('#case-list .case').innerText")
    assert "finetuned vs gpt: tie, the orders disagree" in text
    assert "the judge's reasons" in text
    reasons = browser.evaluate(
        "[...document.querySelectorAll('#case-list .case .reason')].map(e => e.textContent)"
    )
    first = disagree[0]["j"]
    assert {first["base"]["rab"], first["finetuned"]["rab"], first["finetuned"]["rba"]} <= set(
        reasons
    )
    state = choose(browser, "f-verdict", "finetuned\u0000win")
    assert state["matched"] == sum(c["j"]["finetuned"]["o"] == "win" for c in cases)
    choose(browser, "f-verdict", "")

    # A pair side by side, and answers at least 60 characters longer than the baseline's.
    choose(browser, "f-pair", "1,2")
    columns = browser.evaluate(
        "[...document.querySelectorAll('#case-0 .answer h4')].map(e => e.firstChild.textContent)"
    )
    assert columns == ["reference", "finetuned", "gpt"]
    choose(browser, "f-dir", "a")
    state = choose(browser, "f-mindiff", "60")
    assert state["matched"] == sum(c["n"][1] - c["n"][2] >= 60 for c in cases) > 0
    choose(browser, "f-mindiff", "0")
    choose(browser, "f-pair", "")

    # Flags.
    for control, flags in (
        ("f-disagree", {"disagree"}),
        ("f-emptycut", {"empty", "cut"}),
        ("f-leak", {"leak"}),
    ):
        state = choose(browser, control, True)
        assert state["matched"] == sum(bool(flags & set(c["f"])) for c in cases) > 0, control
        choose(browser, control, False)

    # Search: every word must occur, in a question, an answer or the judge's reasons.
    word = "病例 25"
    browser.evaluate(
        f"(() => {{ const s = document.getElementById('f-search'); s.value = {json.dumps(word)};"
        " s.dispatchEvent(new Event('input')); })()"
    )

    def haystack(c: dict) -> str:
        reasons = [v[k] or "" for v in c["j"].values() for k in ("rab", "rba")]
        return "\n".join([f"#{c['i']}", c["q"], c["r"], c["g"], c["w"], *c["a"], *reasons])

    expected = sum(all(w in haystack(c) for w in word.split()) for c in cases)
    state = browser.wait_for(f"window.medsftReport.matched === {expected} && window.medsftReport")
    assert 0 < state["matched"] < 40

    # The view is in the address: opening the link shows the same filtered cases.
    url = browser.evaluate("location.href")
    assert "#cases?" in url and "search=" in url
    browser.open((out / "report.html").as_uri() + "#cases?slice=" + slice_value)
    state = browser.wait_for(
        "window.medsftReport && window.medsftReport.ready && window.medsftReport"
    )
    assert state["matched"] == sum(c["g"] == slice_value for c in cases)

    shot = browser.screenshot(tmp_path / "cases.png")
    colours, share = not_blank(shot)
    assert colours > 50 and share > 0.05, (colours, share)
