"""medsft.cache: the keyed JSONL store behind generations, perplexities and judge replies."""

from __future__ import annotations

import json

from medsft.cache import JsonlStore, digest


def test_digest_is_canonical_and_sensitive():
    assert digest({"a": 1, "b": [1, "二"]}) == digest({"b": [1, "二"], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2}) and len(digest(None)) == 64


def test_entries_survive_a_reopen_and_the_last_one_wins(tmp_path):
    path = tmp_path / "sub" / "store.jsonl"
    with JsonlStore(path) as store:
        store.put({"key": "a", "value": 1})
        store.put({"key": "b", "value": "二"})
        store.put({"key": "a", "value": 3})
        assert "a" in store and store.get("missing") is None
    again = JsonlStore(path)
    assert len(again) == 2 and again.get("a") == {"key": "a", "value": 3}
    assert again.get("b")["value"] == "二" and again.skipped == 0


def test_a_torn_last_line_is_skipped_and_the_next_entry_starts_a_fresh_line(tmp_path, caplog):
    path = tmp_path / "store.jsonl"
    with JsonlStore(path) as store:
        store.put({"key": "a", "value": 1})
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"key": "b", "val')  # the process died mid-write
    store = JsonlStore(path, "judge cache")
    assert store.skipped == 1 and list(store.entries) == ["a"]
    assert "judge cache" in caplog.text and "1 unreadable" in caplog.text
    store.put({"key": "c", "value": 2})
    store.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[-1] == '{"key": "c", "value": 2}' and lines[-2] == '{"key": "b", "val'
    assert sorted(JsonlStore(path).entries) == ["a", "c"]


def test_rewrite_keeps_only_the_given_entries_in_order(tmp_path):
    path = tmp_path / "store.jsonl"
    with JsonlStore(path) as store:
        for key in "abc":
            store.put({"key": key})
        store.rewrite([{"key": "c", "index": 0}, {"key": "a", "index": 1}])
    assert [json.loads(line)["key"] for line in path.open()] == ["c", "a"]
    assert list(JsonlStore(path).entries) == ["c", "a"]
    assert not list(tmp_path.glob("*.tmp"))


def test_without_a_path_entries_stay_in_memory(tmp_path):
    store = JsonlStore(None)
    store.put({"key": "a"})
    store.rewrite([{"key": "b"}])
    assert list(store.entries) == ["b"] and not list(tmp_path.iterdir())
