"""medsft.evaluation.systems: what identifies a model system's weights, for the caches' keys."""

from __future__ import annotations

import json

from medsft.evaluation.systems import hub_commits, model_fingerprint


def test_a_preset_is_its_name_and_a_folder_its_files(tmp_path):
    assert model_fingerprint("random:tiny") == {"model": "random:tiny"}
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "tokenizer.json").write_text("{}")
    before = model_fingerprint(str(tmp_path))
    assert set(before["files"]) == {"config.json", "model.safetensors"}  # tokenizers do not count
    (tmp_path / "model.safetensors").write_bytes(b"retrained")
    assert model_fingerprint(str(tmp_path)) != before  # new weights, new answers


def test_an_adapter_is_fingerprinted_with_its_base(tmp_path):
    adapter = {"base_model_name_or_path": "random:tiny"}
    (tmp_path / "adapter_config.json").write_text(json.dumps(adapter))
    fingerprint = model_fingerprint(str(tmp_path))
    assert fingerprint["base"] == {"model": "random:tiny"}
    assert hub_commits(
        {"model": "a/b", "commit": "c1", "base": {"model": "x", "commit": None}}
    ) == [
        "c1",
        None,
    ]
