"""medsft.data.batching: collate, and padding-free packing (whole examples, best fit, exactly
the losses and gradients unpacked)."""

import random

import pytest
import torch

from medsft.chat import IGNORE_INDEX
from medsft.data import SFTDataModule, collate
from medsft.data.batching import _packed
from medsft.model.build import build_model


def _examples(lengths, seed=0):
    rng = random.Random(seed)
    out = []
    for i, n in enumerate(lengths):
        ids = [rng.randrange(10, 1000) for _ in range(n)]
        prompt = max(1, n // 3)
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:], "index": i})
    return out


def test_best_fit_keeps_examples_whole_and_fills_rows():
    rng = random.Random(1)
    lengths = [rng.randint(20, 400) for _ in range(300)]
    examples = _examples(lengths)
    rows = list(_packed(iter(examples), 1024, random.Random(0), window=100))
    assert all(len(r["input_ids"]) <= 1024 for r in rows)
    assert sorted(i for r in rows for i in r["index"]) == list(range(300))
    for row in rows:  # each piece intact, positions restarting at each example
        start = 0
        for i in row["index"]:
            n = lengths[i]
            assert row["input_ids"][start : start + n] == examples[i]["input_ids"]
            assert row["position_ids"][start : start + n] == list(range(n))
            assert row["labels"][start] == IGNORE_INDEX
            assert row["labels"][start + 1 : start + n] == examples[i]["labels"][1:]
            start += n
    # Best fit decreasing leaves little room: within 3% of the fewest rows possible.
    assert len(rows) <= 1.03 * sum(lengths) / 1024 + 3


def test_collate_pads_position_ids_and_counts_attention_per_example():
    rows = list(_packed(iter(_examples([5, 3, 9])), 10, random.Random(0)))
    batch = collate(rows, pad_token_id=0)
    assert batch["position_ids"].shape == batch["input_ids"].shape
    assert batch["attention_pairs"] == 15 + 6 + 45  # per example, not per packed row
    plain = collate(_examples([5, 3]), pad_token_id=0)
    assert "position_ids" not in plain and plain["attention_pairs"] == 15 + 6


@pytest.mark.parametrize("finetune", ["full", "lora"])
@pytest.mark.parametrize("capacity, n_rows", [(64, 2), (4 * 64, 1)], ids=["rows", "padding_free"])
def test_packed_equals_unpacked_losses_and_gradients(finetune, capacity, n_rows):
    from medsft.training.module import SFTModule

    torch.manual_seed(0)
    module = SFTModule(finetune=finetune)
    module.model = build_model("random:tiny", finetune=finetune).eval()  # eval: no dropout
    examples = _examples([37, 12, 50, 23])
    params = [p for p in module.parameters() if p.requires_grad]

    def loss_and_grads(batch):  # the training step itself, as train.py runs it
        nll, n = module.step(batch)
        grads = torch.autograd.grad(nll, params)
        return nll.detach(), int(n), grads

    plain = loss_and_grads(collate(examples, pad_token_id=0))
    # Rows of 64 tokens (37 + 23 and 50 + 12), or one padding-free row of batch 4 x 64.
    rows = list(_packed(iter(examples), capacity, random.Random(0)))
    assert len(rows) == n_rows
    packed_batch = collate(rows, pad_token_id=0)
    packed = loss_and_grads(packed_batch)
    assert packed[1] == plain[1]
    assert packed[0].item() == pytest.approx(plain[0].item(), rel=1e-5)
    for a, b in zip(packed[2], plain[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # Without its position ids the packed row attends across examples: other gradients.
    crossed = loss_and_grads({k: v for k, v in packed_batch.items() if k != "position_ids"})
    pairs = zip(crossed[2], plain[2], strict=True)
    assert not all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in pairs)


def test_packing_and_length_grouping_are_exclusive():
    with pytest.raises(ValueError, match="set one of them"):
        SFTDataModule(source="x.jsonl", packing=True, group_by_length=True)


def test_datamodule_packs_training_rows(qwen3_tokenizer):
    dm = SFTDataModule(
        source="data/sample/huatuo_sample.jsonl",
        val_fraction=0.0,
        max_length=512,
        batch_size=2,
        packing=True,
        shuffle_buffer=1,
    )
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    examples = list(dm.train_set.examples())
    assert sum(len(i) for b in batches for i in b["index"]) == len(examples)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    assert real == sum(len(ex["input_ids"]) for ex in examples)
    padded = sum(b["input_ids"].numel() for b in batches)
    assert real / padded > 0.9


def test_padding_free_batches_are_one_row_of_every_example(qwen3_tokenizer):
    dm = SFTDataModule(
        source="data/sample/huatuo_sample.jsonl",
        val_fraction=0.0,
        max_length=256,
        batch_size=3,
        packing="padding_free",
        shuffle_buffer=1,
        pad_to_multiple_of=8,
    )
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    examples = list(dm.train_set.examples())
    assert len(batches) > 1
    for b in batches:
        assert b["input_ids"].shape[0] == 1 and b["input_ids"].shape[1] <= 3 * 256
        assert b["input_ids"].shape[1] - int(b["attention_mask"].sum()) < 8  # the multiple of 8
        starts = b["position_ids"][0, : int(b["attention_mask"].sum())].eq(0).sum()
        assert starts == len(b["index"][0]) > 1  # positions restart at each example
    assert sorted(i for b in batches for i in b["index"][0]) == sorted(
        ex["index"] for ex in examples
    )
    rows = list(
        SFTDataModule(
            source="data/sample/huatuo_sample.jsonl",
            val_fraction=0.0,
            max_length=256,
            batch_size=3,
            packing=True,
            shuffle_buffer=1,
        ).train_dataloader()
    )
    assert len(batches) < len(rows)  # one row holds a whole micro-batch of rows' examples


def test_packing_modes_are_checked():
    with pytest.raises(ValueError, match="padding_free"):
        SFTDataModule(source="data/sample/huatuo_sample.jsonl", packing="yes")


@pytest.mark.slow
def test_padding_fraction_is_logged_and_packing_lowers_it(tmp_path):
    import json

    from medsft.cli.train import main
    from tests.helpers import scalars

    rng = random.Random(0)  # answers of very different lengths, as real data has
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"question": "头痛怎么办？", "answer": "多休息。" * rng.randint(1, 60)})
            + "\n"
            for _ in range(48)
        ),
        encoding="utf-8",
    )

    def padding(*args):
        cli = main(
            [
                "--config",
                "configs/demo.yaml",
                "--data.source",
                str(rows),
                "--data.val_fraction",
                "0",
                "--data.batch_size",
                "4",
                "--data.max_length",
                "512",
                "--data.shuffle_buffer",
                "48",
                "--trainer.max_steps",
                "3",
                "--trainer.log_every_n_steps",
                "1",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.val_check_interval",
                "null",
                "--trainer.check_val_every_n_epoch",
                "null",
                "--trainer.logger.init_args.save_dir",
                str(tmp_path),
                "--model.finetune",
                "lora",  # the batches are the point: the cheapest update will do
                *args,
            ]
        )
        return scalars(cli.trainer.log_dir, "train/padding_fraction")

    plain, packed = padding(), padding("--data.packing", "true")
    assert len(plain) == len(packed) == 3
    # Packing leaves padding only in the last, partly filled rows of the packing window.
    assert sum(plain) / 3 > 0.1 and sum(packed) < sum(plain) / 2, (plain, packed)


def test_collate_pads_labels_with_ignore_index():
    batch = collate(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}],
        pad_token_id=0,
        pad_to_multiple_of=4,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100], [8, -100, -100, -100]]
    assert batch["attention_mask"].sum().item() == 4
    # The loss's inputs, found on the CPU: positions whose next token is supervised.
    assert batch["positions"].tolist() == [0, 1] and batch["targets"].tolist() == [6, 7]
    assert batch["attention_pairs"].item() == 3 * 4 // 2 + 1
