"""`evaluate()`: the whole evaluation, step by step (see medsft.evaluation for the outputs)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from medsft.cache import digest
from medsft.errors import InputError
from medsft.evaluation.answers import answers_system
from medsft.evaluation.config import EvalConfig, SystemSpec, validate_config
from medsft.evaluation.endpoints import endpoint_system
from medsft.evaluation.html import case_question, write_html
from medsft.evaluation.lock import output_lock
from medsft.evaluation.mcq import McqRun, McqSet, load_mcq_set, mcq_runs
from medsft.evaluation.models import ModelSource, SharedModel, is_global_zero, model_system
from medsft.evaluation.report import Evaluation, compute_sections, render_markdown
from medsft.evaluation.scoring import (
    flag_lengths,
    length_summary,
    metric_tokenizer,
    paired_tests,
    score_texts,
    slice_scores,
    think_summary,
)
from medsft.evaluation.systems import SystemOutput
from medsft.evaluation.testset import Example, duplicate_summary, load_examples

log = logging.getLogger(__name__)


def evaluate(config: EvalConfig, *, resolved_config: str | None = None) -> dict[str, Any] | None:
    """Generate, score, judge and report. Returns the report (None on ranks other than 0).

    Refuses with `OutputDirBusy` when another evaluation holds `output_dir` (medsft.evaluation.lock).

    Args:
        config: the evaluation config.
        resolved_config: YAML of the resolved config, saved as `<output_dir>/config.yaml`.
    """
    with output_lock(config.output_dir, enabled=is_global_zero()):
        return _evaluate(config, resolved_config=resolved_config)


def _evaluate(config: EvalConfig, *, resolved_config: str | None) -> dict[str, Any] | None:
    kinds = validate_config(config)
    out_dir = Path(config.output_dir)
    examples = load_examples(config.test_set)
    val = load_examples(config.val_set, what="val_set") if config.val_set else None
    if any(ex.reference_think for ex in examples) and not config.generation.enable_thinking:
        raise InputError(
            f"{config.test_set.source}: the references have think blocks but "
            "generation.enable_thinking is false; set it to true for reasoning data"
        )
    if is_global_zero():
        out_dir.mkdir(parents=True, exist_ok=True)
        if resolved_config is not None:
            (out_dir / "config.yaml").write_text(resolved_config, encoding="utf-8")
    log.info("test set: %d questions from %s", len(examples), config.test_set.source)

    started = time.perf_counter()
    mcq = load_mcq_set(config.mcq_set) if config.mcq_set else None
    outputs: list[SystemOutput] = []
    runs: list[McqRun] = []
    for spec, kind in zip(config.systems, kinds, strict=True):
        output, system_runs = system_results(spec, kind, examples, val, mcq, config, out_dir)
        outputs += [output] if output is not None else []
        runs += system_runs
    if not is_global_zero():
        return None  # other ranks only help generate; scoring and the report are rank 0's

    report = score(outputs, examples, val, config)
    compute_sections(Evaluation(config, examples, outputs, mcq, runs, out_dir, report))
    report["seconds"] = round(time.perf_counter() - started, 2)
    write_report(report, out_dir)
    write_html(report, [case_question(ex) for ex in examples], out_dir)
    return report


def system_results(
    spec: SystemSpec,
    kind: str,
    examples: list[Example],
    val: list[Example] | None,
    mcq: McqSet | None,
    config: EvalConfig,
    out_dir: Path,
) -> tuple[SystemOutput | None, list[McqRun]]:
    """One system's test-set answers (None on ranks other than 0) and MCQ runs; a model system's
    weights are loaded at most once for all of them."""
    if kind == "answers":
        return answers_system(spec, examples, limited=config.test_set.limit is not None), []
    if kind == "endpoint":
        output = endpoint_system(spec, examples, config, out_dir)
        return output, mcq_runs(spec, kind, None, mcq, config, out_dir) if mcq else []
    model = SharedModel(ModelSource.resolve(spec, kind))
    try:
        output = model_system(model, examples, val, config, out_dir)
        return output, mcq_runs(spec, kind, model, mcq, config, out_dir) if mcq else []
    finally:
        model.release()


def score(
    outputs: list[SystemOutput],
    examples: list[Example],
    val: list[Example] | None,
    config: EvalConfig,
) -> dict[str, Any]:
    """report.json's sets, systems, scores, perplexities, think blocks, lengths and tests."""
    from medsft import __version__

    references = [ex.reference for ex in examples]
    scoring = config.scoring
    tokenizer = metric_tokenizer(scoring, references)
    test = config.test_set
    return {
        "medsft_version": __version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "output_dir": config.output_dir,
        "test_set": {
            "source": test.source,
            "preset": test.preset,
            "n": len(examples),
            "sha256": digest([[ex.prompt, ex.reference] for ex in examples]),
            "duplicates": duplicate_summary(examples, test.duplicates),
        },
        "val_set": {"source": config.val_set.source, "n": len(val)}
        if config.val_set and val
        else None,
        "metric_tokenizer": tokenizer,
        "systems": [
            {
                "name": o.name,
                "kind": o.kind,
                "source": o.source,
                "model_loaded": o.model_loaded,
                "generation": o.generation,
                "answers": o.answers,
            }
            for o in outputs
        ],
        "metrics": {
            o.name: score_texts(o.answers, references, scoring, tokenizer) for o in outputs
        },
        "perplexity": {o.name: o.perplexity for o in outputs if o.perplexity},
        "think": {o.name: think_summary(o, examples, scoring, tokenizer) for o in outputs},
        "length": lengths(outputs, references, tokenizer, config.baseline),
        "paired": paired_tests(outputs, references, scoring, tokenizer)
        if scoring.paired and scoring.n_resamples > 0 and len(outputs) > 1
        else [],
        "slices": {
            "column": test.slice_column,
            "groups": slice_scores(outputs, examples, scoring, tokenizer),
        }
        if test.slice_column
        else None,
    }


def lengths(
    outputs: list[SystemOutput], references: list[str], tokenizer: str, baseline: str | None
) -> dict[str, dict[str, Any]]:
    """Answer length of every system and of the references, flagged against the baseline's."""
    out = {"reference": length_summary(references, tokenizer)}
    for o in outputs:
        cut_off = o.generation["finish_reasons"]["length"] if o.generation else None
        out[o.name] = length_summary(o.answers, tokenizer, cut_off)
    flag_lengths(out, baseline)
    return out


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """report.json and report.md."""
    (out_dir / "report.json").write_text(
        json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    log.info("report written to %s", out_dir / "report.md")
