"""Model FLOPs: a hand count, torch's own FLOP counter on real steps, and the bf16 peak table."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Qwen3Config, Qwen3ForCausalLM

from medsft.model.build import QWEN3_LINEAR
from medsft.model.flops import FlopCounter, bf16_peak_flops, causal_pairs, mfu

# Every dimension different, so a swapped one changes the count.
TINY = dict(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    tie_word_embeddings=True,
)


def test_hand_count_for_a_tiny_config():
    config = Qwen3Config(**TINY)
    # One layer's projections, in x out: q 16x32, k 16x16, v 16x16, o 32x16, gate/up 16x48,
    # down 48x16. Sum of in*out = 512 + 256 + 256 + 512 + 768 + 768 + 768 = 3840.
    full = FlopCounter.from_config(config, "full")
    assert full.body_per_token == 2 * 6 * 3840  # 2 layers, forward + 2 backward matmuls
    assert full.head_per_token == 6 * 16 * 64
    # Attention: 2 matmuls x 2 FLOPs x head_dim 8 x 4 heads x 2 layers = 256 per pair forward.
    assert full.attention_per_pair == 3 * 256
    assert FlopCounter.from_config(config, "frozen").attention_per_pair == 256
    # LoRA r=2 on q and v: adapters 6 * 2 * (16 + 32) + 6 * 2 * (16 + 16) = 960 per layer; the
    # frozen base costs 4 * 3840 per layer, minus the first layer's q/v/k input gradients
    # (2 * 16 * (32 + 16 + 16) = 2048) and the q/v adapters' A input gradients (2 * 16 * 2 * 2).
    lora = FlopCounter.from_config(config, "lora", lora_r=2, lora_targets=["q_proj", "v_proj"])
    assert lora.body_per_token == 2 * (4 * 3840 + 960) - 2048 - 128
    assert lora.head_per_token == 4 * 16 * 64
    # A step of examples of 3 and 4 tokens, 5 of them supervised.
    assert causal_pairs([3, 4]) == 6 + 10
    assert full.step_flops(7, 5, 16) == 7 * 46080 + 5 * 6144 + 16 * 768


@pytest.mark.parametrize("mode", ["full", "lora", "frozen"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_equals_torch_flop_counter_on_a_real_step(mode, attention):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**TINY, attn_implementation=attention))
    if mode == "lora":
        config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=QWEN3_LINEAR)
        model = get_peft_model(model, config)
    ids = torch.randint(0, 64, (1, 10))
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(mode != "frozen"):
        logits = model(input_ids=ids).logits
        if mode != "frozen":
            logits.sum().backward()
    ours = FlopCounter.from_config(model.config, mode, lora_r=4)
    # torch counts eager attention's full (masked) 10 x 10 score matrix, and nothing for the
    # CPU sdpa kernel; the head runs at all 10 positions in a plain forward.
    pairs = 10 * 10 if attention == "eager" else 0
    assert ours.step_flops(10, 10, pairs) == counter.get_total_flops()


def test_peak_table_and_mfu():
    assert bf16_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bf16_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bf16_peak_flops("NVIDIA H200") == 989e12
    assert bf16_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert bf16_peak_flops("NVIDIA L40S") == 362e12
    assert bf16_peak_flops("NVIDIA L4") == 121e12
    assert bf16_peak_flops("NVIDIA A10") == 125e12
    assert bf16_peak_flops("NVIDIA GeForce RTX 4090") == 165.2e12
    for unknown in ("NVIDIA A10G", "Tesla V100-SXM2-16GB", "cpu", ""):
        assert bf16_peak_flops(unknown) is None
        assert mfu(1e12, 1.0, unknown) is None
    assert mfu(989e12 * 0.5, 2.0, "NVIDIA H100 80GB HBM3", devices=2) == pytest.approx(0.125)


def test_bad_arguments_say_what_to_fix():
    config = Qwen3Config(**TINY)
    with pytest.raises(ValueError, match="mode must be"):
        FlopCounter.from_config(config, "qlora")
    with pytest.raises(ValueError, match="lora_r >= 1"):
        FlopCounter.from_config(config, "lora")
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        FlopCounter.from_config(config, "lora", lora_r=2, lora_targets=["qkv"])
