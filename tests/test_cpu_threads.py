"""train.py picks one CPU thread for a tiny model when the user has not set OMP_NUM_THREADS."""

import json

import pytest
import torch

from medsft.cli.train import choose_cpu_threads


@pytest.fixture
def threads(monkeypatch):
    """torch's intra-op thread count, set to 2 for the test and restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield torch.get_num_threads
    torch.set_num_threads(before)


def test_tiny_model_on_cpu_gets_one_thread(threads, tmp_path):
    choose_cpu_threads("random:tiny", "cpu")
    assert threads() == 1
    # A local model directory is judged by its config.json.
    torch.set_num_threads(2)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64}))
    choose_cpu_threads(str(tmp_path), "cpu")
    assert threads() == 1


def test_user_choice_larger_models_and_gpus_are_left_alone(threads, monkeypatch, tmp_path):
    choose_cpu_threads("random:Qwen3-0.6B", "cpu")
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 1024}))
    choose_cpu_threads(str(tmp_path), "cpu")
    choose_cpu_threads("random:tiny", "gpu")
    assert threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    choose_cpu_threads("random:tiny", "cpu")
    assert threads() == 2
