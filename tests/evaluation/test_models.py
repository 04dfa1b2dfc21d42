"""medsft.evaluation.models: where a model system's caches live and what a rerun reuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import medsft.evaluation.config
import medsft.model.build
import medsft.model.generate
from medsft.evaluation import (
    DataSpec,
    EvalConfig,
    JudgeSettings,
    RuntimeSettings,
    ScoringSettings,
    SystemSpec,
    evaluate,
    load_examples,
)
from medsft.evaluation.models import ModelSource, ModelSystem
from medsft.model.generate import GenerationSettings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_TEST = ROOT / "data" / "sample" / "test_zh_med.json"


@pytest.fixture
def make(tmp_path, qwen3_tokenizer):
    examples = load_examples(DataSpec(source=str(ROOT / "data/sample/test_zh_med.json"), limit=3))

    def make(name: str = "qwen3.5-ft", **config) -> ModelSystem:
        spec = SystemSpec(name, "random:tiny")
        src = ModelSource(
            spec, "model", "random:tiny", "random:tiny", None, qwen3_tokenizer, "float32"
        )
        return ModelSystem(src, examples, None, EvalConfig(**config), tmp_path)

    return make


def test_a_dotted_system_name_keeps_its_own_files(make, tmp_path):
    system = make("qwen3.5-ft")
    names = {system.answers.path.name, system.ppls.path.name, system.meta_path.name}
    assert names == {"qwen3.5-ft.jsonl", "qwen3.5-ft.ppl.jsonl", "qwen3.5-ft.meta.json"}
    assert system.answers.path.parent == tmp_path / "generations"


def test_the_plan_reuses_exactly_what_the_caches_hold_for_these_settings(make):
    fingerprint = {"model": "random:tiny"}
    system = make()
    plan = system.plan(fingerprint)
    assert plan.todo == [0, 1, 2] and plan.ppl_todo == ["test"]
    system.answers.put({"key": plan.keys[1], "answer": "saved"})
    system.ppls.put({"key": plan.ppl_keys["test"], "score": 3.0})
    again = system.plan(fingerprint)
    assert again.keys == plan.keys and again.todo == [0, 2] and again.ppl_todo == []

    assert make(reuse=False).plan(fingerprint).todo == [0, 1, 2]
    other = make(generation=GenerationSettings(max_new_tokens=7)).plan(fingerprint)
    assert other.todo == [0, 1, 2] and other.ppl_keys == plan.ppl_keys  # PPL needs no decoding
    # A hub model not downloaded yet has no commit: nothing saved is known to be its.
    assert make().plan({"model": "org/x", "commit": None}).todo == [0, 1, 2]


def _model_config(out: Path, path: str, limit: int, **generation) -> EvalConfig:
    """One model system on the sample test set; fast settings, no judge."""
    return EvalConfig(
        systems=[SystemSpec("sys", path, kind="model", tokenizer="qwen3")],
        test_set=DataSpec(source=str(SAMPLE_TEST), limit=limit),
        output_dir=str(out),
        generation=GenerationSettings(max_new_tokens=6, **generation),
        scoring=ScoringSettings(n_resamples=0, paired=False, examples=0),
        judge=JudgeSettings(enabled=False),
        runtime=RuntimeSettings(accelerator="cpu", progress=False),
    )


def _system(report: dict) -> dict:
    return report["systems"][0]


def test_hub_model_downloaded_by_the_first_run_is_reused_by_the_second(tmp_path, monkeypatch):
    import huggingface_hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    downloaded: list[str] = []

    def in_cache(repo_id, filename, **kwargs):
        # The hub cache as huggingface_hub sees it: empty until the model is downloaded.
        if not downloaded:
            return None
        return f"/hub/models--{repo_id.replace('/', '--')}/snapshots/{commit}/{filename}"

    def download_and_load(name, **kwargs):
        downloaded.append(name)
        return medsft.model.build.random_qwen3("tiny")

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", in_cache)
    monkeypatch.setattr(medsft.model.build, "load_base_model", download_and_load)
    monkeypatch.setattr(medsft.evaluation.config, "ensure_hub_reachable", lambda *a, **k: None)
    config = _model_config(tmp_path, "acme/med-model", limit=3)
    first = _system(evaluate(config))
    assert downloaded == ["acme/med-model"] and first["generation"]["generated"] == 3
    saved = [json.loads(line) for line in (tmp_path / "generations" / "sys.jsonl").open()]
    assert len(saved) == 3

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded again although its answers were saved")

    monkeypatch.setattr(medsft.model.build, "load_base_model", no_load)
    monkeypatch.setattr(medsft.model.generate, "generate", no_load)
    second = evaluate(config)
    assert _system(second)["generation"]["generated"] == 0
    assert not _system(second)["model_loaded"]  # answers and perplexity both reused
    assert _system(second)["answers"] == first["answers"]


def test_sampled_answers_depend_only_on_their_own_cache_key(tmp_path, monkeypatch):
    from tests.helpers import tiny_model  # answers that differ from draw to draw

    model = tiny_model()
    monkeypatch.setattr(medsft.model.build, "load_base_model", lambda *a, **k: model)
    sampled = dict(do_sample=True, temperature=1.0)

    def answers(out: Path, limit: int) -> list[str]:
        config = _model_config(out, "random:tiny", limit, **sampled)
        config.scoring.perplexity = False
        return _system(evaluate(config))["answers"]

    # Two questions cached first, then all four (two reused, two generated) ...
    assert len(answers(tmp_path / "grown", 2)) == 2
    grown = answers(tmp_path / "grown", 4)
    # ... give the answers of one run of all four, and of each question alone.
    assert grown == answers(tmp_path / "fresh", 4)
    assert answers(tmp_path / "one", 1) == grown[:1]
    assert len(set(grown)) == 4  # not vacuous: the answers really differ
