"""medsft.model.build: impossible settings refused early, and the model each mode trains."""

from __future__ import annotations

import pytest

from medsft.errors import ConfigError
from medsft.model.build import (
    PRESETS,
    LoraSettings,
    build_model,
    check_source,
    random_qwen3,
    validate_model_args,
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("random:tiny", "full", "nf4", LoraSettings()), "cannot train 4-bit weights"),
        (("random:tiny", "lora", None, LoraSettings(r=0)), "lora.r must be >= 1"),
        (("random:tiny", "lora", None, LoraSettings(target_modules=[])), "target_modules is empty"),
        (("random:huge", "lora", None, LoraSettings()), "unknown preset 'random:huge'"),
        (("random:tiny", "adapter", None, LoraSettings()), "finetune must be 'lora' or 'full'"),
    ],
)
def test_impossible_settings_are_refused_with_the_fix(args, message):
    with pytest.raises(ConfigError, match=message):
        validate_model_args(*args)


def test_lora_trains_adapters_only_and_full_every_weight():
    lora = build_model("random:tiny", lora=LoraSettings(r=4), seed=0)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert lora.training and not lora.config.use_cache
    full = build_model("random:tiny", finetune="full")
    assert all(p.requires_grad for p in full.parameters())


def test_random_presets_have_their_shape_and_missing_paths_are_named():
    model = random_qwen3("tiny")
    assert model.config.hidden_size == PRESETS["tiny"]["hidden_size"]
    with pytest.raises(FileNotFoundError, match="'./no/such/model' does not exist"):
        check_source("./no/such/model")
