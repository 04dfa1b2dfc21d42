"""report.html's size and time to interactive in headless Chromium, for the demo and a large set.

    python train.py --config configs/demo.yaml && python evaluate.py --config configs/eval_demo.yaml
    python benchmarks/html_report.py                   # the demo's report + 1,000 x 4 generated
    python benchmarks/html_report.py --questions 200 --loads 2 --out /tmp/html_report.json

Two case sets:

1. the demo's `outputs/eval_demo/report.html` (12 questions x 3 systems; `--demo` names another
   output folder), when it exists;
2. a generated evaluation (tests/report_cases.py: the demo test set's texts varied per case,
   scored by the real scorer, judge verdicts with reasons, cut/empty answers, leakage hits) of
   `--questions` x `--systems`, written by the real writer (medsft.evaluation.html.write_html).

For each: the file size (and the case data's share of it), and over `--loads` fresh loads from
file:// in Chromium (Debian's package, driven over the DevTools pipe as in the tests): the time
to interactive, from navigation start to the end of the page script's first render (its
`interactive` performance mark, after which every control works), and the load event. Then,
on the loaded page, the time (in the page, synchronous event handler to rendered page) of
filtering by a slice, searching every case for a word, and turning to the next page. Sizes of the
generated set at a quarter and a half of `--questions` show how the file grows.

Timings depend on the machine and its load: the record carries both (benchmarks/record.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from record import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import Chromium, find_chromium  # noqa: E402
from tests.report_cases import synthetic_evaluation  # noqa: E402

IN_PAGE = """(() => {{
  const c = document.getElementById({control});
  c.{prop} = {value};
  const start = performance.now();
  c.dispatchEvent(new Event('change'));
  return [performance.now() - start, window.medsftReport.matched];
}})()"""
"""Set a control and time its (synchronous) change handler: filter and render the page."""


def in_page(control: str, value: str) -> str:
    """The script that sets `control` to `value` and times its change handler."""
    return IN_PAGE.format(control=json.dumps(control), prop="value", value=json.dumps(value))


def measure(browser: Chromium, page: Path, loads: int) -> dict:
    """File size, time to interactive over `loads` fresh loads, and in-page interaction times."""
    text = page.read_text(encoding="utf-8")
    data = text.split('id="case-data">', 1)[1].split("</script>", 1)[0]
    tti, load_event = [], []
    for _ in range(loads):
        browser.open("about:blank")
        load_event.append(browser.open(page.as_uri()) * 1000)
        browser.wait_for("window.medsftReport && window.medsftReport.ready")
        tti.append(browser.evaluate("performance.getEntriesByName('interactive')[0].startTime"))
    state = browser.evaluate("window.medsftReport")
    slices = browser.evaluate(
        "[...document.getElementById('f-slice').options].map(o => o.value).filter(Boolean)"
    )
    figures = {
        "questions": state["total"],
        "systems": browser.evaluate(
            "document.querySelector('.case').querySelectorAll('.answer').length - 1"
        ),
        "file_bytes": page.stat().st_size,
        "case_data_bytes": len(data.encode()),
        "time_to_interactive_ms": round(statistics.median(tti), 1),
        "time_to_interactive_ms_all": [round(t, 1) for t in tti],
        "load_event_ms": round(statistics.median(load_event), 1),
        "cards_rendered_per_page": browser.evaluate("document.querySelectorAll('.case').length"),
    }
    if slices:
        ms, matched = browser.evaluate(in_page("f-slice", slices[0]))
        figures["filter_by_slice_ms"] = round(ms, 1)
        browser.evaluate(in_page("f-slice", ""))
    ms, matched = browser.evaluate(in_page("f-search", "医生"))
    figures["search_all_cases_ms"] = round(ms, 1)
    figures["search_matched"] = matched
    browser.evaluate(in_page("f-search", ""))
    figures["next_page_ms"] = (
        None
        if state["pages"] < 2
        else round(
            browser.evaluate(
                "(() => { const b = [...document.querySelectorAll('#pager-top button')]"
                ".find(b => b.textContent.startsWith('next')); const s = performance.now(); "
                "b.click(); return performance.now() - s; })()"
            ),
            1,
        )
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=ROOT / "outputs" / "eval_demo")
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--systems", type=int, default=4)
    parser.add_argument("--loads", type=int, default=5, help="fresh page loads timed per set")
    parser.add_argument("--out", type=Path, default=None, help="results file (default: results/)")
    args = parser.parse_args()
    if find_chromium() is None:
        sys.exit("error: no Chromium on PATH (Debian/Ubuntu: apt-get install -y chromium)")

    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp, Chromium() as browser:
        figures["chromium"] = browser.send("Browser.getVersion", session=False)["product"]
        demo = args.demo / "report.html"
        if demo.is_file():
            figures["demo"] = measure(browser, demo, args.loads)
        else:
            print(f"{demo} not found: run the demo's evaluation first (see --help); skipped")
        runs = ["base", "finetuned", *(f"run{k}" for k in range(3, args.systems))]
        names = (*runs[: args.systems - 1], "gpt")  # gpt: the judge's baseline, an answer file
        sizes = {}
        for n in sorted({max(1, args.questions // 4), max(1, args.questions // 2), args.questions}):
            out = Path(tmp) / f"n{n}"
            synthetic_evaluation(out, n=n, systems=names, baseline="gpt")
            sizes[n] = (out / "report.html").stat().st_size
        key = f"generated_{args.questions}x{len(names)}"
        figures[key] = measure(
            browser, Path(tmp) / f"n{args.questions}" / "report.html", args.loads
        )
        figures[key]["file_bytes_by_questions"] = sizes
        steps = sorted(sizes)
        if len(steps) > 1:
            per_case = [
                (sizes[b] - sizes[a]) / ((b - a) * len(names))
                for a, b in zip(steps, steps[1:], strict=False)
            ]
            figures[key]["bytes_per_question_and_system_between_sizes"] = [
                round(x) for x in per_case
            ]
    for name, f in figures.items():
        if isinstance(f, dict):
            print(
                f"{name}: {f['file_bytes'] / 1e6:.2f} MB, time to interactive "
                f"{f['time_to_interactive_ms']:.0f} ms (median of {args.loads}), search "
                f"{f['search_all_cases_ms']:.0f} ms"
            )
    write_result(
        f"html_report_{args.questions}x{args.systems}",
        figures,
        args={k: str(v) for k, v in vars(args).items()},
        out=args.out,
    )


if __name__ == "__main__":
    main()
