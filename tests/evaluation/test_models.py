"""medsft.evaluation.models: where a model system's caches live and what its plan reuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsft.evaluation import DataSpec, EvalConfig, SystemSpec, load_examples
from medsft.evaluation.generate import GenerationSettings
from medsft.evaluation.models import ModelSource, ModelSystem

ROOT = Path(__file__).resolve().parents[2]


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
