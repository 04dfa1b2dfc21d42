"""Generate, score and compare fine-tuned, base and baseline answers on a test set, with a report.

    python evaluate.py --config configs/eval_demo.yaml          # offline, CPU: the demo run
    python evaluate.py --config configs/eval_demo.yaml --judge.base_url http://127.0.0.1:8000/v1
    python evaluate.py --config configs/eval.yaml --judge.language zh   # the Chinese judge prompt
    export OPENAI_API_KEY=...                                   # the judge's key, never in a config
    python evaluate.py --config configs/eval.yaml --runtime.devices 4   # data-parallel generation
    python evaluate.py --config configs/eval.yaml --generation.max_new_tokens 1024 \\
        --systems+ '{name: run2, path: logs/qlora/version_2}'   # one more system
    python evaluate.py --systems.help SystemSpec                # what a system entry takes
    python evaluate.py --config configs/eval.yaml --print_config   # the resolved config

Systems are base models (hub id, local dir, `random:tiny`), training runs (`logs/<name>/version_N`,
`logs/<name>/latest` = the newest), merged exports, or files of ready answers. Writes into
--output_dir: report.md, report.json, metrics.png, training_<run>.png, generations/ (reused by
later runs whose model, settings and questions are unchanged), judge_cache.jsonl, config.yaml.
See medsft/evaluation/ (one module per job).
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings  # noqa: E402

from medsft.console import quiet_known_noise  # noqa: E402
from medsft.evaluation import EvalConfig, evaluate, is_global_zero  # noqa: E402


def build_parser() -> ArgumentParser:
    """The command line: --config files, then dotted overrides such as --generation.seed 1."""
    # The config dataclasses document each field in an attribute docstring: show them in --help.
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(
        prog="python evaluate.py",
        description="Generate, score and compare systems on a test set, and write a report.",
        default_env=False,
    )
    parser.add_argument(
        "--config", action=ActionConfigFile, help="a YAML config, e.g. configs/eval.yaml"
    )
    parser.add_class_arguments(EvalConfig, nested_key=None, as_group=False)
    return parser


def main(argv: list[str] | None = None) -> dict | None:
    """Parse the config, save it resolved into the output dir, and run the evaluation."""
    # Data-parallel ranks run this script too; only rank 0 narrates.
    level = logging.INFO if is_global_zero() else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    quiet_known_noise()
    # Device banners once per system, TensorBoard's notes on reading event files, one line per
    # judge request: noise here.
    for name in (
        "lightning.pytorch",
        "lightning.fabric",
        "tensorboard",
        "httpx",
        "httpx2",
        "openai",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    parser = build_parser()
    cfg = parser.parse_args(argv)
    # The config holds names of environment variables only, never keys: safe to save as is.
    resolved = parser.dump(cfg, skip_unset=False)
    config = EvalConfig(**{k: v for k, v in vars(parser.instantiate(cfg)).items() if k != "config"})
    return evaluate(config, resolved_config=resolved)


if __name__ == "__main__":
    main()
