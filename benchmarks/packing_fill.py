"""How much of each training batch is padding: random order, length-grouped, packed, padding-free.

    python benchmarks/packing_fill.py                       # the 500 Huatuo rows, batch 4 x 1024
    python benchmarks/packing_fill.py --data my.jsonl --batch-size 8 --max-length 2048

Runs SFTDataModule's real training loader over one epoch (no model) for each batching and counts
real tokens against the batch tensors' size. The rows are the 500 real Huatuo26M-Lite rows of
../shared/data when present, else data/sample/huatuo_sample.jsonl.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from record import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_ROWS = ROOT.parent / "shared/data/huatuo26m_lite/huatuo26m_lite_qa500.enddonkey.jsonl"
SAMPLE_ROWS = ROOT / "data/sample/huatuo_sample.jsonl"


def main() -> None:
    from medsft.data import SFTDataModule

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=SHARED_ROWS if SHARED_ROWS.is_file() else SAMPLE_ROWS
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--pad-to-multiple-of", type=int, default=1)
    parser.add_argument("--preset", default="huatuo", help="column preset of --data")
    args = parser.parse_args()
    figures: dict = {"rows": args.data.name, "pad_to_multiple_of": args.pad_to_multiple_of}
    for name, options in {
        "random order": {},
        "group_by_length": {"group_by_length": True},
        "packing": {"packing": True},
        "padding_free": {"packing": "padding_free"},
    }.items():
        dm = SFTDataModule(
            source=str(args.data),
            preset=args.preset,
            val_fraction=0.0,
            max_length=args.max_length,
            batch_size=args.batch_size,
            pad_to_multiple_of=args.pad_to_multiple_of,
            **options,
        )
        dm.setup("fit")
        real = padded = batches = 0
        for batch in dm.train_dataloader():
            real += int(batch["attention_mask"].sum())
            padded += batch["input_ids"].numel()
            batches += 1
        figures[name] = {
            "batches": batches,
            "tokens": real,
            "padding_fraction": round(1 - real / padded, 4),
        }
        print(f"{name:<16} {batches:>4} batches, {100 * (1 - real / padded):5.1f}% padding")
    name = f"packing_fill_{args.batch_size}x{args.max_length}"
    if args.preset != "huatuo":
        name += f"_{args.preset}"
    if args.pad_to_multiple_of != 1:
        name += f"_pad{args.pad_to_multiple_of}"
    write_result(name, figures, args=vars(args))


if __name__ == "__main__":
    main()
