"""medsft.data.module: SFTDataModule's loaders, padding for finished ranks, setup checks, resume."""

import pytest
from torch.utils.data import DataLoader

from medsft.data import EmptySource, collate
from medsft.data.module import _UntilAllRanksDone
from tests.data.helpers import SAMPLE, dm


def test_validation_pads_finished_ranks_until_all_are_done():
    shards = {
        0: [{"input_ids": [5, 6], "labels": [5, 6]}] * 3,
        1: [{"input_ids": [7], "labels": [7]}],
    }
    loaders = {
        r: DataLoader(rows, batch_size=1, collate_fn=lambda b: collate(b, 0))
        for r, rows in shards.items()
    }
    iters = {
        r: iter(_UntilAllRanksDone(loaders[r], 0, lambda done, r=r: votes(r, done))) for r in shards
    }
    pending: dict[int, bool] = {}

    def votes(rank, done):  # a two-rank all-reduce, in lockstep
        pending[rank] = done
        return all(pending.values()) and len(pending) == 2

    steps = {0: [], 1: []}
    while True:
        out = {}
        for r in (0, 1):
            out[r] = next(iters[r], None)
        if out[0] is None or out[1] is None:
            assert out[0] is None and out[1] is None  # they stop together
            break
        for r in (0, 1):
            steps[r].append(bool(out[r].get("padding")))
    assert steps[0] == [False] * 3 and steps[1] == [False, True, True]


def test_group_by_length_pads_less():
    def padding(group):
        data = dm(
            f"{SAMPLE}/huatuo_sample.jsonl",
            shuffle_buffer=64,
            group_by_length=group,
            batch_size=4,
            pad_to_multiple_of=1,
        )
        data.setup()
        return sum((b["attention_mask"] == 0).sum().item() for b in data.train_dataloader())

    assert padding(True) < padding(False)


@pytest.mark.parametrize(
    "text, skip, match",
    [
        ("", False, "0 rows read"),
        ("\n  \n\n", False, "0 rows read"),
        ("[]", False, "0 rows read"),
        ('{"question": "q"}\n{"oops\n', True, r"2 rows read, 0 examples, .*2 invalid skipped"),
        (
            '{"question": "' + "很长的问题" * 100 + '", "answer": "a"}\n',
            False,
            "1 dropped with no supervised",
        ),
    ],
    ids=["empty", "blank-lines", "empty-array", "all-invalid", "prompt-too-long"],
)
def test_a_source_with_no_usable_example_fails_at_setup_naming_it(tmp_path, text, skip, match):
    path = tmp_path / "d.jsonl"
    path.write_text(text, encoding="utf-8")
    data = dm(str(path), skip_invalid=skip, max_length=64)
    with pytest.raises(EmptySource, match=f"no usable training example in {path}.*{match}"):
        data.setup("fit")
    ok = dm(f"{SAMPLE}/huatuo_sample.jsonl", val_source=str(path), skip_invalid=skip, max_length=64)
    with pytest.raises(EmptySource, match="no usable validation example"):
        ok.setup("fit")


@pytest.mark.parametrize(
    ("packing", "stop_after"),
    [(False, 1), (False, 4), (False, 7), (True, 4), ("padding_free", 4)],
)
def test_two_workers_resume_where_the_loader_stopped(packing, stop_after):
    """The data position of the batches trained on restarts the round robin of workers, each
    skipping what it delivered: the rest of the epoch is exactly the uninterrupted one's, in
    every packing mode (the kill -9 DDP test in tests/test_train.py runs padding-free rows)."""

    def run(position=None, limit=None):
        data = dm(
            f"{SAMPLE}/huatuo_sample.jsonl",
            val_fraction=0,
            shuffle_buffer=8,
            batch_size=3,
            num_workers=2,
            packing=packing,
            max_length=256,
        )
        if position is not None:
            data.position = position
        data.setup("fit")
        seen = []
        for batch in data.train_dataloader():
            if limit is not None and len(seen) == limit:
                break
            data.position.consumed(0, batch["stream_position"])
            seen.append(batch["index"])
        return seen, data.position

    everything, _ = run()
    first, position = run(limit=stop_after)
    rest, _ = run(position=position)
    assert first == everything[:stop_after] and first + rest == everything


def test_a_validation_share_that_holds_nothing_out_stops_and_shared_ids_are_named(tmp_path, caplog):
    """The split goes by id: 40 rows with one id all land on one side, which once trained on
    every row and logged no val/loss."""
    import json

    rows = [{"id": "same", "question": f"问题{i}", "answer": "回答"} for i in range(40)]
    path = tmp_path / "one_id.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    # 'same' hashes to the training side at 0.1 (and to validation at high enough fractions).
    with (
        caplog.at_level("WARNING", logger="medsft.data"),
        pytest.raises(EmptySource, match=r"val_fraction 0\.1 held out none of the 40 examples"),
    ):
        dm(str(path), val_fraction=0.1).setup("fit")
    assert "40 of 40 rows" in caplog.text and "id 'same': 40 rows" in caplog.text
    for row, i in zip(rows, range(40), strict=True):
        row["id"] = f"row-{i}"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    dm(str(path), val_fraction=0.1).setup("fit")  # distinct ids: some held out, no error
