"""medsft.hub: which names are hub ids, and a fast, explained failure for an unreachable repo."""

from __future__ import annotations

import pytest

from medsft.hub import BUNDLED_TOKENIZER, HubUnreachable, ensure_hub_reachable, is_hub_id


@pytest.mark.parametrize(
    "name, hub",
    [
        ("Qwen/Qwen3-0.6B", True),
        ("gpt2", True),
        ("random:tiny", False),
        (BUNDLED_TOKENIZER, False),
        ("./Qwen3", False),
        ("/models/qwen", False),
        ("~/models", False),
        ("logs/demo/version_0", False),  # two slashes: a path
    ],
)
def test_hub_ids_are_name_or_org_slash_name_and_nothing_on_disk(name, hub):
    assert is_hub_id(name) is hub


def test_an_existing_folder_is_never_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "Qwen").mkdir()
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id("Qwen") and is_hub_id("Qwen2")


def test_an_uncached_repo_offline_fails_at_once_saying_what_to_do(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnreachable, match="not in the local cache and HF_HUB_OFFLINE=1") as err:
        ensure_hub_reachable("medsft-tests/no-such-dataset", repo_type="dataset")
    assert "hf download medsft-tests/no-such-dataset --repo-type dataset" in str(err.value)
