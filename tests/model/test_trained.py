"""medsft.model.trained: a run's trained folder is found, and one that lacks files is refused in
one line naming what it lacks (it would otherwise fail later, inside transformers)."""

import json

import pytest

from medsft.model.trained import (
    IncompleteModel,
    is_adapter,
    missing_files,
    resolve_trained,
    tokenizer_source,
)


def folder(path, *files, index=None):
    path.mkdir(parents=True)
    for name in files:
        (path / name).write_text("{}")
    if index:
        (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))
    return path


def test_what_each_kind_of_folder_needs(tmp_path):
    assert missing_files(folder(tmp_path / "a", "adapter_config.json")) == "adapter weights"
    assert missing_files(folder(tmp_path / "b", "adapter_config.json", "adapter_model.bin")) is None
    assert missing_files(folder(tmp_path / "c", "config.json")).startswith("model weights")
    weights_only = folder(tmp_path / "d", "config.json", "model.safetensors")
    assert missing_files(weights_only) == "its tokenizer (tokenizer_config.json)"
    shards = {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}
    sharded = folder(
        tmp_path / "e", "config.json", "tokenizer_config.json", shards["x"], index=shards
    )
    assert missing_files(sharded) == "weight shard model-00002-of-00002.safetensors"
    (sharded / shards["y"]).write_text("")
    assert missing_files(sharded) is None


def test_an_incomplete_model_folder_is_one_line_with_the_fix(tmp_path):
    run = tmp_path / "version_0"
    folder(run / "model", "config.json", "generation_config.json")  # a save cut short
    with pytest.raises(IncompleteModel) as err:
        resolve_trained(run)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{run / 'model'} is incomplete: it has no")
    assert "--ckpt_path last" in message
    with pytest.raises(FileNotFoundError, match="holds no adapter"):
        resolve_trained(tmp_path)


def test_a_run_folder_resolves_to_its_adapter_model_or_export(tmp_path):
    run = tmp_path / "version_0"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "random:tiny"})
    )
    (run / "adapter" / "adapter_model.safetensors").write_text("")
    assert resolve_trained(run) == run / "adapter" and is_adapter(run / "adapter")
    assert tokenizer_source(run / "adapter") == "random:tiny"  # no tokenizer of its own
    (run / "adapter" / "tokenizer_config.json").write_text("{}")
    assert tokenizer_source(run / "adapter") == str(run / "adapter")
    full = tmp_path / "full"
    (full / "model").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (full / "model" / name).write_text("{}")
    assert resolve_trained(full) == full / "model" and not is_adapter(full / "model")
    with pytest.raises(FileNotFoundError, match="holds no adapter"):
        resolve_trained(tmp_path / "empty")
