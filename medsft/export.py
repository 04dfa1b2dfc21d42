"""Save what training produced, and merge an adapter into a standalone model.

    python -m medsft.export logs/qlora/version_0 --out merged/qwen3-4b-huatuo
    python -m medsft.export logs/demo/version_0/adapter --out merged/demo --dtype float32

A full fine-tuning run needs no export: its `model/` directory already is a standalone model
(export says so and where, and exits with status 1).

The merged model is a plain transformers checkpoint (safetensors): AutoModelForCausalLM loads it
with no medsft or peft code. A QLoRA adapter is merged into a full-precision reload of the base,
never into 4-bit weights (rounding the update into NF4 would change the model). After saving,
the reloaded merged model's logits are compared with the base + adapter's on a few examples;
the largest difference is printed, and export fails beyond the tolerance.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from medsft.chat import qa_messages
from medsft.model import DType, load_base_model, load_tokenizer, resolve_trained

CHECK_QUESTIONS = [
    ("最近总是头痛，应该怎么办？", "建议规律作息，如持续头痛请到神经内科就诊。"),
    ("What are the symptoms of anemia?", "Fatigue, pale skin and shortness of breath."),
    ("孩子发烧38.5度需要吃退烧药吗？", "可以在医生指导下使用对乙酰氨基酚，并多喝水。"),
]


def save_trained(module: Any, tokenizer: Any, trainer: Any) -> Path:
    """Write `adapter/` (PEFT format) or `model/` (full weights) beside the run's logs.

    Call on every rank: FSDP2-sharded weights are gathered collectively, rank 0 writes.
    """
    out = Path(trainer.log_dir or "logs") / ("adapter" if module.finetune == "lora" else "model")
    model = module.model
    state = None
    if module.finetune == "full" and module._device_mesh is not None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if getattr(model.config, "tie_word_embeddings", False):
            # Gathered copies no longer share storage; save the tied head once, as transformers does.
            head = model.get_output_embeddings()
            state.pop(next(n for n, m in model.named_modules() if m is head) + ".weight", None)
    if trainer.is_global_zero:
        model.save_pretrained(out, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(out)
        print(f"saved {'adapter' if module.finetune == 'lora' else 'model'} to {out}")
    trainer.strategy.barrier()
    return out


class AlreadyStandalone(ValueError):
    """Export of a full fine-tuning run: its model/ directory already is a standalone model."""


@torch.no_grad()
def _logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
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
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from medsft.chat import render
    from medsft.data.batching import collate

    adapter = resolve_trained(adapter)
    config_file = adapter / "adapter_config.json"
    if not config_file.exists() and (adapter / "config.json").exists():
        raise AlreadyStandalone(
            f"{adapter} already is a standalone model (a full fine-tuning run saves whole "
            "weights, not an adapter): there is nothing to merge. Use that directory as is, e.g. "
            f"AutoModelForCausalLM.from_pretrained({str(adapter)!r}) or `python evaluate.py` with "
            f"path: {adapter}, or copy it to {out}"
        )
    if not config_file.exists():
        raise FileNotFoundError(f"{adapter} is not a PEFT adapter (no adapter_config.json)")
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m medsft.export", description=export.__doc__)
    parser.add_argument("adapter", help="training run directory or its adapter/ directory")
    parser.add_argument("--out", required=True, help="output directory for the standalone model")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--tolerance", type=float, default=None, help="max |logit difference|")
    args = parser.parse_args()
    try:
        export(args.adapter, args.out, dtype=args.dtype, tolerance=args.tolerance)
    except AlreadyStandalone as err:
        raise SystemExit(f"nothing to export: {err}") from None


if __name__ == "__main__":
    main()
