"""Save what training produced, and merge an adapter into a standalone model.

    python train.py --config configs/demo.yaml             # logs/demo/version_0/model/ (full)
    python -m medsft.cli.export logs/demo/version_0            # says the model is already standalone
    python train.py --config configs/demo.yaml --model.finetune lora   # version_1/adapter/
    python -m medsft.cli.export logs/demo/version_1 --out merged/demo

A full fine-tuning run needs no export: its `model/` directory already is a standalone model;
export says where in one line and exits with status 0.

The merged model is a plain transformers checkpoint (safetensors): AutoModelForCausalLM loads it
with no medsft or peft code. A QLoRA adapter is merged into a full-precision reload of the base,
never into 4-bit weights (rounding the update into NF4 would change the model). After saving,
the reloaded merged model's logits are compared with the base + adapter's on a few examples;
the largest difference is printed, and export fails beyond the tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsft.model.trained import is_adapter, resolve_trained

if TYPE_CHECKING:
    import torch

    from medsft.model.build import DType

CHECK_QUESTIONS = [
    ("最近总是头痛，应该怎么办？", "建议规律作息，如持续头痛请到神经内科就诊。"),
    ("What are the symptoms of anemia?", "Fatigue, pale skin and shortness of breath."),
    ("孩子发烧38.5度需要吃退烧药吗？", "可以在医生指导下使用对乙酰氨基酚，并多喝水。"),
]


def trained_folder(run_dir: str | Path | None, finetune: str) -> Path:
    """Where a run's `adapter/` (LoRA) or `model/` (full fine-tuning) goes.

    Args:
        run_dir: the run folder (`trainer.log_dir`; None: `logs`).
        finetune: `lora` or `full`.
    """
    return Path(run_dir or "logs") / ("adapter" if finetune == "lora" else "model")


def save_trained(module: Any, tokenizer: Any, trainer: Any) -> Path:
    """Write `adapter/` (PEFT format) or `model/` (full weights) beside the run's logs, whole or
    not at all (medsft.training.checkpoint.write_folder).

    Call on every rank: FSDP2-sharded weights are gathered collectively, rank 0 writes.
    """
    from medsft.training.checkpoint import write_folder

    out = trained_folder(trainer.log_dir, module.finetune)
    model = module.model
    state = None
    if module.finetune == "full" and module.device_mesh is not None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if getattr(model.config, "tie_word_embeddings", False):
            # Gathered copies no longer share storage; save the tied head once, as transformers does.
            head = model.get_output_embeddings()
            state.pop(next(n for n, m in model.named_modules() if m is head) + ".weight", None)
    if trainer.is_global_zero:

        def write(folder: Path) -> None:
            model.save_pretrained(folder, state_dict=state, safe_serialization=True)
            tokenizer.save_pretrained(folder)

        write_folder(out, write)
        print(f"saved {'adapter' if module.finetune == 'lora' else 'model'} to {out}")
    trainer.strategy.barrier()
    return out


class AlreadyStandalone(ValueError):
    """Export of a full fine-tuning run: its model/ directory already is a standalone model."""


def already_standalone(model_dir: Path) -> str:
    """The one line saying that `model_dir` needs no export, and how to use it."""
    return (
        f"{model_dir} already is a standalone model (full fine-tuning saves whole weights): "
        f"nothing to merge. Load it as is: AutoModelForCausalLM.from_pretrained({str(model_dir)!r}),"
        f" or give it to evaluate.py as a system's path."
    )


def _logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    import torch

    with torch.no_grad():
        return model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits.float()


def export(
    adapter: str | Path,
    out: str | Path,
    *,
    dtype: DType = "float32",
    tolerance: float | None = None,
) -> float:
    """Merge an adapter into its full-precision base, save it standalone, and verify it.

    Args:
        adapter: a training run directory or its adapter/ directory.
        out: where to write the standalone model (safetensors + tokenizer).
        dtype: precision of the reloaded base and the saved model.
        tolerance: largest allowed |logit difference|; default 1e-3 (float32) or 5e-2 (16-bit).

    Returns:
        The largest absolute logit difference between the merged and the adapter model.
    """
    adapter = resolve_trained(adapter)
    if not is_adapter(adapter):
        raise AlreadyStandalone(already_standalone(adapter))
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from medsft.chat import qa_messages, render
    from medsft.data.batching import collate
    from medsft.model.build import load_base_model, load_tokenizer

    config_file = adapter / "adapter_config.json"
    base_name = json.loads(config_file.read_text())["base_model_name_or_path"]
    tolerance = tolerance if tolerance is not None else (1e-3 if dtype == "float32" else 5e-2)
    tokenizer = load_tokenizer(str(adapter))
    # Full precision even for QLoRA: the base is reloaded unquantized.
    model = PeftModel.from_pretrained(load_base_model(base_name, dtype=dtype), str(adapter)).eval()
    batch = collate(
        [render(qa_messages(q, a), tokenizer) for q, a in CHECK_QUESTIONS], tokenizer.pad_token_id
    )
    expected = _logits(model, batch)
    merged = model.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del model, merged
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=getattr(torch, dtype)).eval()
    mask = batch["attention_mask"].bool()
    diff = (_logits(reloaded, batch) - expected).abs()[mask].max().item()
    print(f"merged model saved to {out}; max |logit difference| vs adapter model: {diff:.2e}")
    if diff > tolerance:
        raise RuntimeError(
            f"merged model differs from the adapter model by {diff:.3e} > tolerance {tolerance:.1e}"
        )
    return diff


def build_parser() -> argparse.ArgumentParser:
    """`python -m medsft.cli.export RUN [--out DIR]`: the examples and notes of the module docstring."""
    from medsft.cli.errors import add_debug_argument
    from medsft.cli.parsing import ArgparseTool

    parser = ArgparseTool(
        prog="python -m medsft.cli.export",
        description="Merge a LoRA/QLoRA run's adapter into a standalone model and check it.",
        epilog="examples:\n" + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_debug_argument(parser)  # medsft.cli.errors: `run` takes --debug off the command line
    parser.add_argument(
        "run", help="a training run directory (logs/<name>/version_N) or its adapter/ directory"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="where to write the standalone model (default: merged/ in the run directory)",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="precision of the reloaded base and the saved model (default: float32)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="largest allowed |logit difference| (default: 1e-3 for float32, 5e-2 for 16-bit)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Check the run before importing torch: a full fine-tuning run is answered in a moment."""
    args = build_parser().parse_args(argv)
    try:
        trained = resolve_trained(args.run)
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    if not is_adapter(trained):
        print(already_standalone(trained))
        return
    if args.out is None and trained.name != "adapter":
        sys.exit(
            f"error: {trained} is not a run's adapter/ directory: say where to write, --out DIR"
        )
    out = args.out or trained.parent / "merged"
    try:
        export(trained, out, dtype=args.dtype, tolerance=args.tolerance)
    except RuntimeError as err:  # beyond the tolerance
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    from medsft.cli.errors import run

    run(main)
