"""medsft.training.throughput without a Trainer: rates over the time between reads, padding, the worst
loss, MFU only where the GPU's peak is known, and a fresh start after each read."""

import pytest
import torch
from transformers import Qwen3Config

from medsft.model.flops import FlopCounter, bf16_peak_flops
from medsft.training.throughput import Throughput


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rates_padding_and_worst_loss_since_the_last_read():
    clock = Clock()
    meter = Throughput(clock=clock)
    clock.now = 150.0
    meter.restart()  # setup time before training is not counted
    # Two optimizer steps: [supervised, real tokens, attention pairs, token slots].
    meter.add(torch.tensor([30.0, 80.0, 500.0, 100.0], dtype=torch.float64), torch.tensor(2.5))
    meter.add(torch.tensor([10.0, 40.0, 200.0, 60.0], dtype=torch.float64), torch.tensor(1.5))
    clock.now = 154.0
    got = meter.read()
    assert got == pytest.approx(
        {
            "loss_max": 2.5,
            "supervised_tokens_per_s": 10.0,
            "tokens_per_s": 30.0,
            "padding_fraction": 0.25,
        }
    )
    assert "mfu" not in got  # no device name: a CPU run

    meter.add(torch.tensor([5.0, 10.0, 20.0, 10.0], dtype=torch.float64), torch.tensor(0.5))
    clock.now = 156.0
    assert meter.read() == pytest.approx(  # counted afresh from the last read
        {
            "loss_max": 0.5,
            "supervised_tokens_per_s": 2.5,
            "tokens_per_s": 5.0,
            "padding_fraction": 0.0,
        }
    )


def test_a_nonfinite_loss_shows_in_loss_max():
    clock = Clock()
    meter = Throughput(clock=clock)
    meter.add(torch.ones(4, dtype=torch.float64), torch.tensor(float("nan")))
    meter.add(torch.ones(4, dtype=torch.float64), torch.tensor(1.0))
    clock.now += 1.0
    assert torch.isnan(torch.tensor(meter.read()["loss_max"]))  # max does not hide a NaN
    meter.add(torch.ones(4, dtype=torch.float64), torch.tensor(float("inf")))
    clock.now += 1.0
    assert meter.read()["loss_max"] == float("inf")


def test_mfu_from_the_flop_counter_and_the_devices_peak():
    config = Qwen3Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    )
    counter = FlopCounter.from_config(config, "full")
    clock = Clock()
    meter = Throughput(counter, clock=clock)
    meter.add(torch.tensor([30.0, 80.0, 500.0, 100.0], dtype=torch.float64), torch.tensor(1.0))
    clock.now += 2.0
    got = meter.read(device_name="NVIDIA H100 80GB HBM3", devices=4)
    flops = counter.step_flops(80, 30, 500)
    assert got["mfu"] == pytest.approx(flops / 2.0 / (4 * bf16_peak_flops("H100 SXM")))
    meter.add(torch.ones(4, dtype=torch.float64), torch.tensor(1.0))
    clock.now += 1.0
    assert "mfu" not in meter.read(device_name="Some Unknown GPU")
