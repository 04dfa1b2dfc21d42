"""evaluate.py end to end on CPU: the demo trained, evaluated with a judge, its report.html opened
in headless Chromium, and rerun from its caches (the parts each have their module's test file
under tests/evaluation/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import medsft.model.generate
from medsft.evaluation import ScoringSettings
from medsft.evaluation.scoring import has_references, metric_names
from tests.helpers import scalars  # noqa: E402
from tests.judge_server import JudgeServer, prefer_longer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import medsft.cli.evaluate as evaluate_script  # noqa: E402

SECRET = "sk-test-DO-NOT-LEAK-5be1d0c7"
TEXT_METRICS = metric_names(ScoringSettings())  # the metrics table under default settings


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's real key must never reach a test server, nor OpenAI from a test.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


# -- end to end -------------------------------------------------------------------------------
def _demo_config(tmp_path: Path, logs: Path) -> Path:
    config = yaml.safe_load((ROOT / "configs" / "eval_demo.yaml").read_text())
    for system in config["systems"]:
        if system["path"].startswith("logs/"):
            system["path"] = str(logs / system["path"][len("logs/") :])
    path = tmp_path / "eval_demo.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


@pytest.mark.slow
def test_demo_training_then_evaluation_with_judge_and_reuse(tmp_path, monkeypatch):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    logs = tmp_path / "logs"
    train = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--config",
            "configs/demo.yaml",
            "--trainer.logger.init_args.save_dir",
            str(logs),
            "--trainer.max_steps",
            "20",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    # train.py on the demo config, end to end (this run is also the one evaluated below).
    run = logs / "demo" / "version_0"
    losses = scalars(run, "train/loss")
    assert losses[-1] < losses[0] - 2.0, losses
    val = scalars(run, "val/loss")
    assert len(val) >= 2 and val[-1] < val[0], val
    assert (run / "config.yaml").exists() and (run / "model" / "model.safetensors").exists()
    for tag in (
        "train/lr",
        "train/grad_norm",
        "train/tokens_per_s",
        "train/padding_fraction",
        "train/supervised_tokens_per_s",
        "val/ppl",
    ):
        assert scalars(run, tag), tag

    out = tmp_path / "eval"
    monkeypatch.chdir(ROOT)  # the demo config's data paths are relative to the repo
    monkeypatch.setenv("MEDSFT_DEMO_JUDGE_KEY", SECRET)
    with JudgeServer(prefer_longer) as server:
        argv = [
            "--config",
            str(_demo_config(tmp_path, logs)),
            "--output_dir",
            str(out),
            "--judge.base_url",
            server.base_url,
            "--generation.max_new_tokens",
            "16",
            "--scoring.n_resamples",
            "200",
            "--runtime.progress",
            "false",
        ]
        report = evaluate_script.main(argv)
        n = report["test_set"]["n"]
        assert n == 12
        assert server.request_count == 2 * n * 2  # base and finetuned vs gpt, both orders
        assert server.requests[0].authorization == f"Bearer {SECRET}"

        systems = {s["name"]: s for s in report["systems"]}
        assert systems["finetuned"]["source"] == str(logs / "demo" / "version_0")
        for name in ("base", "finetuned"):
            gen = systems[name]["generation"]
            assert gen["generated"] == n and gen["tokens_per_second"] > 0
        for name in ("base", "finetuned", "gpt"):
            metrics = report["metrics"][name]
            assert list(metrics) == TEXT_METRICS
            for name, m in metrics.items():
                # distinct-n has no bootstrap interval (see medsft.metrics.distinct)
                expected = {"score", "signature"} | (
                    {"low", "high"} if has_references(m) else set()
                )
                assert expected <= set(m), name
        for name in ("base", "finetuned"):
            assert report["perplexity"][name]["test"]["score"] > 1
        assert "gpt" not in report["perplexity"]
        compared = {n for n, m in report["metrics"]["gpt"].items() if has_references(m)}
        assert {t["metric"] for t in report["paired"]} == compared
        assert len(report["paired"]) == 3 * len(compared)  # each pair of the three systems

        judge = report["judge"]
        assert judge["status"] == "ok" and judge["baseline"] == "gpt"
        assert set(judge["results"]) == {"base", "finetuned"}
        for result in judge["results"].values():
            assert result["n_judged"] == n and result["consistency_rate"] is not None
            # The longer answer wins: the GPT baseline beats 16-token gibberish every time.
            assert result["counts"]["loss"] == n
        training = report["training"]["finetuned"]["scalars"]
        assert {"train/loss", "val/loss", "val/ppl"} <= set(training)

        for name in (
            "report.json",
            "report.md",
            "metrics.png",
            "training_finetuned.png",
            "config.yaml",
            "judge_base.json",
            "judge_finetuned.json",
            "generations/base.jsonl",
            "generations/finetuned.jsonl",
        ):
            assert (out / name).is_file(), name
        md = (out / "report.md").read_text(encoding="utf-8")
        for text in (
            "| system | BLEU-1",
            "PPL (test)",
            "adjusted win rate",
            "consistency",
            "## Examples",
            "training_finetuned.png",
        ):
            assert text in md, text
        for path in out.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".jsonl", ".md", ".yaml", ".html"):
                assert SECRET not in path.read_text(encoding="utf-8"), path
        # report.html's case browser carries the judge's two verdicts and reasons of every pair.
        page = (out / "report.html").read_text(encoding="utf-8")
        cases = json.loads(page.split('id="case-data">')[1].split("</script>")[0])
        assert set(cases["judged"]) == {"base", "finetuned"} and len(cases["cases"]) == n
        for case in cases["cases"]:
            verdict = case["j"]["finetuned"]
            assert (verdict["o"], verdict["ab"], verdict["ba"]) == ("loss", "worse", "better")
            assert verdict["rab"] and verdict["rba"]

        # The demo's report.html in a real browser: every question, each slice, the plots.
        browsed = _browse_demo_report(out / "report.html", tmp_path)

        # Second run: answers, perplexities and verdicts all come from the output dir.
        server.reset()
        saved = {p: p.stat().st_mtime_ns for p in (out / "generations").glob("*.jsonl")}

        def no_generation(*args, **kwargs):
            raise AssertionError("generation ran again although its answers were saved")

        monkeypatch.setattr(medsft.model.generate, "generate", no_generation)
        again = evaluate_script.main(argv)
        assert server.request_count == 0
        for name in ("base", "finetuned"):
            system = next(s for s in again["systems"] if s["name"] == name)
            assert system["generation"]["generated"] == 0 and not system["model_loaded"]
            assert system["answers"] == systems[name]["answers"]
            cached = again["judge"]["results"][name]
            assert (
                cached["usage"]["requests"] == 0 and cached["usage"]["cached_judgements"] == 2 * n
            )
            assert cached["counts"] == judge["results"][name]["counts"]
        assert again["metrics"] == report["metrics"]
        assert again["perplexity"] == report["perplexity"]
        assert saved == {p: p.stat().st_mtime_ns for p in saved}
    if browsed is not None:
        pytest.skip(f"report.html not opened in a browser: {browsed}")


def _browse_demo_report(page: Path, tmp_path: Path) -> str | None:
    """Open the demo's report.html from file:// in headless Chromium: every question found,
    filtered by each department, each plot decoded, a screenshot not blank. The reason when no
    Chromium can run here, else None."""
    from tests.browser import BrowserUnavailable, Chromium, choose, not_blank, questions_found

    config = yaml.safe_load((ROOT / "configs" / "eval_demo.yaml").read_text(encoding="utf-8"))
    rows = [
        json.loads(line)
        for line in (ROOT / config["test_set"]["source"]).read_text(encoding="utf-8").splitlines()
    ]
    try:
        with Chromium() as browser:
            browser.open(page.as_uri())
            state = browser.wait_for(
                "window.medsftReport && window.medsftReport.ready && window.medsftReport"
            )
            assert state["total"] == len(rows) == 12
            assert sorted(questions_found(browser)) == sorted(r["question"] for r in rows)
            images = browser.evaluate(
                "[...document.querySelectorAll('#summary img')].map(i => [i.alt, i.naturalWidth])"
            )
            assert {"metrics", "multiple-choice accuracy"} <= {alt for alt, _ in images}
            assert all(width > 100 for _, width in images), images
            for department in {r["department"] for r in rows}:
                state = choose(browser, "f-slice", department)
                shown = browser.evaluate(
                    "[...document.querySelectorAll('#case-list .case .badge.slice')]"
                    ".map(e => e.textContent)"
                )
                assert state["matched"] == len(shown) > 0
                assert set(shown) == {f"department: {department}"}
            choose(browser, "f-slice", "")
            browser.evaluate("document.getElementById('cases').scrollIntoView()")
            colours, share = not_blank(browser.screenshot(tmp_path / "demo.png"))
            assert colours > 50 and share > 0.05, (colours, share)
    except BrowserUnavailable as err:
        return str(err)
    return None
