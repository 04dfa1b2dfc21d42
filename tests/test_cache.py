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


def test_a_last_line_torn_at_any_byte_is_skipped_and_the_rest_kept(tmp_path):
    # The crash: a cut inside a multi-byte Chinese character raised UnicodeDecodeError.
    path = tmp_path / "store.jsonl"
    with JsonlStore(path) as store:
        store.put({"key": "a", "value": "头痛发热"})
    whole = path.read_bytes()
    last = json.dumps({"key": "b", "value": "布洛芬一次吃多少？"}, ensure_ascii=False).encode()
    assert len(last) > len(last.decode())  # multi-byte characters, so some cuts fall inside one
    for cut in range(len(last) + 1):
        path.write_bytes(whole + last[:cut])
        store = JsonlStore(path)
        expected = ["a", "b"] if cut == len(last) else ["a"]
        assert list(store.entries) == expected, cut
        assert store.skipped == (0 if cut in (0, len(last)) else 1), cut
        store.put({"key": "c", "value": "二"})
        store.close()
        again = JsonlStore(path)
        assert sorted(again.entries) == sorted([*expected, "c"]), cut
        assert again.get("c")["value"] == "二"
