"""Push a trained adapter or model to the Hugging Face Hub, with a model card carrying its evaluation.

    python -m medsft.cli.publish logs/qlora/version_0 --repo_id me/qwen3-4b-huatuo-lora \\
        --report outputs/eval --dry_run      # write the card, list the files, send nothing
    python -m medsft.cli.publish logs/qlora/version_0 --repo_id me/qwen3-4b-huatuo-lora --report outputs/eval

What goes up is one folder of the run: `adapter/` (LoRA/QLoRA, PEFT format), `model/` (full
fine-tuning) or `merged/` (`train.py --export true`), or any folder given with `--folder` (for
example `python -m medsft.cli.export`'s `--out`). Its `README.md` becomes the model card: the base
model, the training settings read from the run's `config.yaml`, and the evaluation report
(`report.md` of `evaluate.py`'s output_dir) verbatim, so the numbers published are the ones
computed. PEFT's template card in `adapter/` is replaced.

The token is huggingface_hub's own: `HF_TOKEN` in the environment or `hf auth login`; it is never
read, printed or written by medsft.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from medsft.errors import UserError

FOLDERS = ("merged", "adapter", "model")
"""Run sub-folders that can be published, in the order `--what auto` looks for them."""

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

TRAINING_KEYS = (
    ("base model", "model.name_or_path"),
    ("fine-tuning", "model.finetune"),
    ("quantization", "model.quantize"),
    ("LoRA rank", "model.lora.r"),
    ("LoRA alpha", "model.lora.alpha"),
    ("LoRA dropout", "model.lora.dropout"),
    ("learning rate", "model.optimizer.lr"),
    ("optimizer", "model.optimizer.name"),
    ("data", "data.source"),
    ("data preset", "data.preset"),
    ("max length", "data.max_length"),
    ("micro-batch", "data.batch_size"),
    ("gradient accumulation", "trainer.accumulate_grad_batches"),
    ("steps", "trainer.max_steps"),
    ("precision", "trainer.precision"),
    ("seed", "seed_everything"),
)
"""Rows of the card's training table: (label, dotted key in the run's config.yaml)."""


def dotted(config: dict[str, Any], key: str) -> Any:
    """`config['a']['b']` for key `a.b`; None where any part is missing."""
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def find_folder(run_dir: Path, what: str) -> Path:
    """The folder of `run_dir` to publish: `what` is one of FOLDERS, or `auto` (first found)."""
    names = FOLDERS if what == "auto" else (what,)
    for name in names:
        if (run_dir / name / "config.json").is_file():
            return run_dir / name
        if (run_dir / name / "adapter_config.json").is_file():
            return run_dir / name
    raise UserError(
        f"{run_dir} has no {' or '.join(n + '/' for n in names)} folder with a saved model; "
        "give the run folder (logs/<name>/version_N) or --folder PATH"
    )


def read_report(report: Path | None) -> str | None:
    """report.md's text, from the file or from the evaluation output_dir holding it."""
    if report is None:
        return None
    path = report / "report.md" if report.is_dir() else report
    if not path.is_file():
        raise UserError(
            f"no evaluation report at {path}: give evaluate.py's output_dir or report.md"
        )
    return path.read_text(encoding="utf-8")


def demote(markdown: str) -> str:
    """Headings one level down, so the report nests under the card's `## Evaluation`."""
    return re.sub(r"^(#{1,5}) ", r"#\1 ", markdown, flags=re.MULTILINE)


def is_hub_id(value: Any) -> bool:
    return isinstance(value, str) and bool(REPO_ID.match(value)) and not Path(value).exists()


def model_card(
    repo_id: str, folder: Path, config: dict[str, Any] | None, report: str | None
) -> str:
    """The model card (README.md) for `folder`: front matter, training settings, evaluation."""
    adapter = (folder / "adapter_config.json").is_file()
    base = dotted(config or {}, "model.name_or_path")
    source = dotted(config or {}, "data.source")
    front = ["---", f"library_name: {'peft' if adapter else 'transformers'}"]
    if is_hub_id(base):
        front.append(f"base_model: {base}")
    front += ["pipeline_tag: text-generation", "tags:", "  - medsft", "  - sft"]
    front.append("  - lora" if adapter else "  - qwen3")
    if is_hub_id(source):
        front += ["datasets:", f"  - {source}"]
    front.append("---")

    kind = "LoRA adapter" if adapter else "model"
    lines = [*front, "", f"# {repo_id.split('/')[1]}", ""]
    lines.append(
        f"A {kind} trained with medsft (supervised fine-tuning)"
        + (f" from `{base}`." if base else ".")
    )
    lines += ["", "## Training", ""]
    if config is None:
        lines.append("The run's config.yaml was not found; settings unknown.")
    else:
        lines += ["| setting | value |", "|---|---|"]
        for label, key in TRAINING_KEYS:
            value = dotted(config, key)
            if value is not None:
                lines.append(f"| {label} | `{value}` |")
    lines += ["", "## Evaluation", ""]
    lines.append(demote(report).strip() if report else "No evaluation report was published.")
    lines += ["", "## Use", "", "```python"]
    if adapter:
        lines += [
            "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer",
            f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
        ]
    else:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
        ]
    lines += ["```", ""]
    return "\n".join(lines)


def publish(
    run_dir: Path,
    repo_id: str,
    *,
    what: str = "auto",
    folder: Path | None = None,
    report: Path | None = None,
    private: bool = False,
    dry_run: bool = False,
) -> Path:
    """Write the model card into the folder to publish and, unless `dry_run`, upload the folder.

    Args:
        run_dir: a training run, `logs/<name>/version_N` (its config.yaml fills the card).
        repo_id: the hub repository, `owner/name`; created (private if asked) when missing.
        what: `auto`, `adapter`, `model` or `merged`: which folder of the run to publish.
        folder: publish this folder instead (e.g. medsft.cli.export's output).
        report: evaluate.py's output_dir, or its report.md, to put in the card.
        private: create the repository private.
        dry_run: write the card and list the files; send nothing.

    Returns:
        The path of the card written (`<folder>/README.md`).
    """
    if not REPO_ID.match(repo_id):
        raise UserError(f"--repo_id {repo_id!r} is not of the form owner/name")
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    if folder is None:
        folder = find_folder(run_dir, what)
    elif not folder.is_dir():
        raise UserError(f"--folder {folder} does not exist")
    config_path = run_dir / "config.yaml"
    config = (
        yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None
    )
    card = folder / "README.md"
    card.write_text(model_card(repo_id, folder, config, read_report(report)), encoding="utf-8")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    print(f"model card: {card}")
    print(f"{len(files)} files, {size / 1e6:.1f} MB from {folder}")
    if dry_run:
        print(f"dry run: nothing sent; without --dry_run this uploads to the hub repo {repo_id}")
        return card

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message=f"medsft: {folder.name} from {run_dir}",
        )
    except HfHubHTTPError as e:
        raise UserError(f"upload to {repo_id} failed: {str(e).splitlines()[0]}") from e
    print(f"uploaded to {repo_id}")
    return card


def main(argv: list[str] | None = None) -> None:
    """`python -m medsft.cli.publish RUN --repo_id owner/name [...]`.

    Args:
        argv: the command line (None: sys.argv).
    """
    from medsft.cli.errors import add_debug_argument
    from medsft.cli.parsing import ArgparseTool

    parser = ArgparseTool(
        prog="python -m medsft.cli.publish",
        description="Push a run's adapter or model to the Hugging Face Hub with a model card "
        "that carries its evaluation report. The token comes from HF_TOKEN or `hf auth login`.",
    )
    add_debug_argument(parser)  # medsft.cli.errors: `run` takes --debug off the command line
    parser.add_argument("run_dir", type=Path, help="the training run, logs/<name>/version_N")
    parser.add_argument("--repo_id", required=True, help="hub repository, owner/name")
    parser.add_argument(
        "--what",
        choices=("auto", *FOLDERS),
        default="auto",
        help="which folder of the run: auto = merged/, else adapter/, else model/",
    )
    parser.add_argument("--folder", type=Path, help="publish this folder instead")
    parser.add_argument("--report", type=Path, help="evaluate.py's output_dir or its report.md")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument(
        "--dry_run", action="store_true", help="write the card and list the files; send nothing"
    )
    args = parser.parse_args(argv)
    try:
        publish(
            args.run_dir,
            args.repo_id,
            what=args.what,
            folder=args.folder,
            report=args.report,
            private=args.private,
            dry_run=args.dry_run,
        )
    except UserError as e:
        sys.exit(f"error: {str(e).splitlines()[0]}")


if __name__ == "__main__":
    from medsft.cli.errors import run

    run(main)
