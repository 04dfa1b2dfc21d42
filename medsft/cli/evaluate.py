"""`python evaluate.py` / `python -m medsft.cli.evaluate`: the evaluation command.

Parses a config (configs/eval*.yaml) and dotted overrides into `medsft.evaluation.EvalConfig`,
saves it resolved into the output folder, and runs the evaluation; errors follow the shared
policy (medsft.cli.errors).
"""

from __future__ import annotations

import logging
from typing import Any

from jsonargparse import ActionConfigFile, set_parsing_settings

from medsft.cli.errors import add_debug_argument, run
from medsft.cli.parsing import ToolParser

QUIET_LOGGERS = (
    "lightning.pytorch",
    "lightning.fabric",
    "tensorboard",
    "httpx",
    "httpx2",
    "openai",
)
"""Device banners once per system, TensorBoard's notes on reading event files, one line per
judge request: noise during an evaluation."""


def build_parser() -> ToolParser:
    """The command line: --config files, then dotted overrides such as --generation.seed 1."""
    from medsft.evaluation import EvalConfig

    # The config dataclasses document each field in an attribute docstring: show them in --help.
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ToolParser(
        prog="python evaluate.py",
        description="Generate, score and compare systems on a test set, and write a report.",
        default_env=False,
    )
    parser.add_argument(
        "--config", action=ActionConfigFile, help="a YAML config, e.g. configs/eval.yaml"
    )
    add_debug_argument(parser)
    parser.add_class_arguments(EvalConfig, nested_key=None, as_group=False)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Parse the config, save it resolved into the output dir, and run the evaluation.

    Args:
        argv: the command line (None: sys.argv).
    """
    from medsft.errors import ConfigError
    from medsft.evaluation import (
        EvalConfig,
        evaluate,
        is_global_zero,
        judge_status,
        validate_config,
    )

    # Data-parallel ranks run this too; only rank 0 narrates.
    level = logging.INFO if is_global_zero() else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    parser = build_parser()
    cfg = parser.parse_args(argv)
    # The config holds names of environment variables only, never keys: safe to save as is.
    resolved = parser.dump(cfg, skip_unset=False)
    skip = {"config", "debug"}
    config = EvalConfig(**{k: v for k, v in vars(parser.instantiate(cfg)).items() if k not in skip})
    try:  # checked again by evaluate(); here a setting that cannot work is the user's to fix
        validate_config(config, warn=False)  # evaluate() says what it would ignore
        judge_status(config)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return evaluate(config, resolved_config=resolved)


def cli_main(argv: list[str] | None = None) -> None:
    """The command line entry point: evaluate under medsft's error policy."""
    run(main, argv)


if __name__ == "__main__":
    cli_main()
