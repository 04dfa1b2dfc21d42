"""`python -m medsft.cli.chat`: print a training config's first examples with the supervised
spans marked, to audit the label mask (medsft.chat) on your own data before training."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import yaml

from medsft.chat import IGNORE_INDEX, highlight
from medsft.data.module import SFTDataModule


def _with_config(argv: list[str]) -> list[str]:
    """`argv` with a `--config` file's data section (and its model's tokenizer) put first, so
    that every `--data.*` override on the line wins."""
    config_path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None)
    if config_path is None:
        return argv
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    data_args = dict(config.get("data") or {})
    model_args = config.get("model") or {}
    data_args.setdefault(
        "tokenizer", model_args.get("tokenizer") or model_args.get("name_or_path", "qwen3")
    )
    return ["--data", json.dumps(data_args, ensure_ascii=False), *argv]


def main(argv: Sequence[str] | None = None) -> None:
    """Print the first examples of a training config's data with supervised spans marked.
    Takes train.py's `--data.*` overrides, with or without a config:

        python -m medsft.cli.chat --config configs/demo.yaml --data.source x.jsonl \\
            --data.preset sharegpt
        python -m medsft.cli.chat --data.source data/sample/sharegpt_sample.jsonl \\
            --data.preset sharegpt

    Args:
        argv: the command line (None: sys.argv).
    """
    from medsft.cli.parsing import tool_parser

    parser = tool_parser("python -m medsft.cli.chat", main.__doc__)
    parser.add_argument(
        "--config",
        help="a training config, e.g. configs/demo.yaml (its data: and model: sections are read)",
    )
    parser.add_argument("--n", type=int, default=3, help="how many examples to print")
    parser.add_argument(
        "--no-color",
        "--no_color",
        dest="no_color",
        action="store_true",
        help="mark spans with [[ ]] instead",
    )
    parser.add_class_arguments(SFTDataModule, "data")
    args = parser.parse_args(_with_config(list(sys.argv[1:] if argv is None else argv)))
    dm = parser.instantiate(args).data
    color = sys.stdout.isatty() and not args.no_color
    for k, example in enumerate(dm.preview(args.n)):
        n_sup = sum(label != IGNORE_INDEX for label in example["labels"])
        print(f"=== example {k}: {len(example['input_ids'])} tokens, {n_sup} supervised ===")
        print(highlight(example, dm.tokenizer, color=color))
    print(
        "Supervised spans are "
        + ("highlighted in green." if color else "between [[ and ]].")
        + " Everything else has label -100."
    )


if __name__ == "__main__":
    from medsft.cli.errors import run

    run(main)
