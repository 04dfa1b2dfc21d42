"""Push a trained adapter or model to the Hugging Face Hub, with a model card carrying its evaluation.

    python -m medsft.cli.publish logs/qlora/version_0 --repo_id me/qwen3-4b-huatuo-lora \\
        --report outputs/eval --dry_run      # write the card, list the files, send nothing
    python -m medsft.cli.publish logs/qlora/version_0 --repo_id me/qwen3-4b-huatuo-lora --report outputs/eval

What goes up is one folder of the run: `adapter/` (LoRA/QLoRA, PEFT format), `model/` (full
fine-tuning) or `merged/` (`train.py --export true`), or any folder given with `--folder` (for
example `python -m medsft.cli.export`'s `--out`). Its `README.md` becomes the model card: the base
model, how it was trained (LoRA, QLoRA or full fine-tuning, read from the run's `config.yaml`,
with the settings of that mode only), and the evaluation report (`report.md` of `evaluate.py`'s
output_dir) verbatim under the card's `## Evaluation`, so the numbers published are the ones
computed. The files the report links (`metrics.png`, `mcq.png`, `training_<run>.png`) are copied
into the folder's `evaluation/` and uploaded with it. PEFT's template card in `adapter/` is
replaced.

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
"""Rows of the card's training table: (label, dotted key in the run's config.yaml). The mode's
row comes first (`mode`); LoRA's rows only for a LoRA run, quantization only when set."""
REPORT_FILES = "evaluation"
"""The folder, inside the published one, that holds the files the report links."""
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


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
    path = report_path(report)
    return None if path is None else path.read_text(encoding="utf-8")


def report_path(report: Path | None) -> Path | None:
    """report.md, given it or evaluate.py's output_dir holding it; None for no report."""
    if report is None:
        return None
    path = report / "report.md" if report.is_dir() else report
    if not path.is_file():
        raise UserError(
            f"no evaluation report at {path}: give evaluate.py's output_dir or report.md"
        )
    return path


def copy_linked_files(markdown: str, source: Path, folder: Path) -> str:
    """Copy every local file `markdown` links (its plots) from `source` into
    `folder/evaluation/`, and return the markdown linking the copies, so that the uploaded card
    shows them. A linked file that is missing is an error naming it."""
    import shutil

    def copy(m: re.Match[str]) -> str:
        target = m.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            return m.group(0)  # a URL or an anchor
        path = (source / target).resolve()
        if not path.is_file() or source.resolve() not in path.parents:
            raise UserError(
                f"the report links {target}, which is not a file in {source}: publish "
                "evaluate.py's whole output_dir (--report DIR)"
            )
        copied = folder / REPORT_FILES / path.relative_to(source.resolve())
        copied.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copied)
        return f"{m.group(1)}{REPORT_FILES}/{copied.relative_to(folder / REPORT_FILES).as_posix()}{m.group(3)}"

    return LINK.sub(copy, markdown)


def demote(markdown: str) -> str:
    """The report's sections one level down, under the card's `## Evaluation`: its own title
    (`# Evaluation report`) is dropped, the card's heading says it."""
    markdown = re.sub(r"\A\s*# [^\n]*\n+", "", markdown)
    return re.sub(r"^(#{1,5}) ", r"#\1 ", markdown, flags=re.MULTILINE)


def training_mode(config: dict[str, Any] | None, adapter: bool) -> str:
    """How the model was trained, in words, from the run's config (the folder's kind without
    one)."""
    finetune = dotted(config or {}, "model.finetune")
    quantize = dotted(config or {}, "model.quantize")
    if finetune == "full":
        return "full fine-tuning (every weight trained)"
    if finetune == "lora" and quantize:
        return f"QLoRA (LoRA adapters trained on a frozen {quantize} 4-bit base)"
    if finetune == "lora" or adapter:
        return "LoRA (adapters trained on a frozen base)"
    return "unknown (no config.yaml)"


def training_rows(config: dict[str, Any]) -> list[tuple[str, Any]]:
    """The card's training table: the settings that apply to the run's mode."""
    lora = dotted(config, "model.finetune") == "lora"
    rows = []
    for label, key in TRAINING_KEYS:
        value = dotted(config, key)
        if value is None or (key.startswith("model.lora.") and not lora):
            continue
        if key == "model.quantize" and str(value).lower() in ("none", "null", "false", ""):
            continue
        rows.append((label, value))
    return rows


def is_hub_id(value: Any) -> bool:
    return isinstance(value, str) and bool(REPO_ID.match(value)) and not Path(value).exists()


def model_card(
    repo_id: str, folder: Path, config: dict[str, Any] | None, report: str | None
) -> str:
    """The model card (README.md) for `folder`: front matter, how it was trained, evaluation.

    Args:
        repo_id: the hub repository, `owner/name`.
        folder: the folder published (an adapter's or a model's).
        config: the run's config.yaml, or None.
        report: report.md's text with its links pointing into `folder`, or None.
    """
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

    mode = training_mode(config, adapter)
    finetune = dotted(config or {}, "model.finetune")
    if adapter:
        kind = "A LoRA adapter"
    elif finetune == "lora":
        kind = "A model with its LoRA adapter merged into the base weights"
    elif finetune == "full":
        kind = "A fully fine-tuned model"
    else:
        kind = "A model"
    lines = [*front, "", f"# {repo_id.split('/')[1]}", ""]
    lines.append(
        f"{kind}, trained with medsft (supervised fine-tuning)"
        + (f" from `{base}`." if base else ".")
    )
    lines += ["", "## Training", ""]
    if config is None:
        lines.append("The run's config.yaml was not found; settings unknown.")
    else:
        lines += ["| setting | value |", "|---|---|", f"| mode | {mode} |"]
        lines += [f"| {label} | `{value}` |" for label, value in training_rows(config)]
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
    markdown = None
    if (path := report_path(report)) is not None:
        markdown = copy_linked_files(path.read_text(encoding="utf-8"), path.parent, folder)
    card.write_text(model_card(repo_id, folder, config, markdown), encoding="utf-8")
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
