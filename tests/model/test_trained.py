"""medsft.model.trained: where a run folder keeps what it trained, and its tokenizer."""

from __future__ import annotations

import json

import pytest

from medsft.model.trained import is_adapter, resolve_trained, tokenizer_source


def test_a_run_folder_resolves_to_its_adapter_model_or_export(tmp_path):
    run = tmp_path / "version_0"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "random:tiny"})
    )
    assert resolve_trained(run) == run / "adapter" and is_adapter(run / "adapter")
    assert tokenizer_source(run / "adapter") == "random:tiny"  # no tokenizer of its own
    (run / "adapter" / "tokenizer_config.json").write_text("{}")
    assert tokenizer_source(run / "adapter") == str(run / "adapter")
    full = tmp_path / "full"
    (full / "model").mkdir(parents=True)
    (full / "model" / "config.json").write_text("{}")
    assert resolve_trained(full) == full / "model" and not is_adapter(full / "model")
    with pytest.raises(FileNotFoundError, match="holds no adapter"):
        resolve_trained(tmp_path / "empty")
