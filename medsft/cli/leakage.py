"""The leakage command: check a test set against training data (the check itself is
medsft.evaluation.leakage).

    python -m medsft.cli.leakage --test_set.source data/sample/test_zh_med.json \\
        --leakage.train_set.source FreedomIntelligence/Huatuo26M-Lite --leakage.train_set.preset huatuo
    python -m medsft.cli.leakage --help
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from medsft.cli.errors import run
from medsft.evaluation.config import DataSpec, LeakageSettings
from medsft.evaluation.leakage import check_leakage, render_leakage
from medsft.evaluation.testset import load_examples


@dataclass
class LeakageCommand:
    """`python -m medsft.cli.leakage`: check a test set against training data."""

    test_set: DataSpec = field(default_factory=DataSpec)
    """The test set (as in evaluate.py)."""
    leakage: LeakageSettings = field(default_factory=LeakageSettings)
    """The training data and thresholds."""
    output: str | None = None
    """Write the result as JSON here (and the markdown next to it, .md)."""


def build_parser() -> Any:
    """The command line of `python -m medsft.cli.leakage` (medsft.cli.parsing: formatted --help)."""
    from jsonargparse import ActionConfigFile

    from medsft.cli.parsing import tool_parser

    parser = tool_parser("python -m medsft.cli.leakage", main.__doc__)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(LeakageCommand, nested_key=None, as_group=False)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Check a test set against training data for leakage: print the report section, and
    write it as JSON (and markdown beside it) when --output is given.

        python -m medsft.cli.leakage --test_set.source data/sample/test_zh_med.json \\
            --leakage.train_set.source data/sample/huatuo_sample.jsonl \\
            --leakage.train_set.preset huatuo --output leakage.json

    Args:
        argv: the command line (None: sys.argv).
    """
    import json
    from pathlib import Path

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    cfg = parser.instantiate(parser.parse_args(argv))
    examples = load_examples(cfg.test_set)
    result = check_leakage(examples, cfg.leakage, what="leakage.train_set")
    markdown = "\n".join(render_leakage(result)).strip() + "\n"
    print(markdown)
    if cfg.output:
        Path(cfg.output).write_text(json.dumps(result, ensure_ascii=False, indent=1), "utf-8")
        Path(cfg.output).with_suffix(".md").write_text(markdown, encoding="utf-8")
    return result


if __name__ == "__main__":
    run(main)
