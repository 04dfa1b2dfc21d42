"""medsft.cli.publish: the model card carries the run's settings and evaluation; dry runs send nothing."""

from __future__ import annotations

import json
import socket

import pytest
import yaml

from medsft.cli import publish

REPORT = (
    "# Evaluation report\n\n| system | BLEU-4 |\n|---|---|\n| finetuned | 12.3 |\n\n## Judge\n\n"
    "win rate 61.0%\n\n## Multiple choice\n\n![multiple-choice accuracy](mcq.png)\n\n"
    "## Training\n\n![training curves of finetuned](training_finetuned.png)\n\n"
    "## Plots\n\n![metrics](metrics.png)\n\nSee [the paper](https://example.org/p.pdf).\n"
)
"""Headings and links as medsft.evaluation.report writes them."""
PLOTS = ("mcq.png", "training_finetuned.png", "metrics.png")


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "logs" / "qlora" / "version_0"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 16}))
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 1000)
    (run / "adapter" / "README.md").write_text("PEFT's template card")
    config = {
        "seed_everything": 42,
        "trainer": {"max_steps": 2000, "precision": "bf16-mixed"},
        "model": {
            "name_or_path": "Qwen/Qwen3-4B-Instruct-2507",
            "finetune": "lora",
            "quantize": "nf4",
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
            "optimizer": {"name": "paged_adamw_8bit", "lr": 2e-4},
        },
        "data": {"source": "FreedomIntelligence/Huatuo26M-Lite", "max_length": 1024},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "report.md").write_text(REPORT, encoding="utf-8")
    for name in PLOTS:
        (tmp_path / "eval" / name).write_bytes(b"\x89PNG " + name.encode())
    return run


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the dry run opened a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr("huggingface_hub.HfApi.__init__", refuse)


def test_dry_run_writes_the_card_and_sends_nothing(run_dir, no_network, capsys):
    publish.main(
        [
            str(run_dir),
            "--repo_id",
            "me/qwen3-huatuo",
            "--report",
            str(run_dir.parents[2] / "eval"),
            "--dry_run",
        ]
    )
    card = (run_dir / "adapter" / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "peft"
    assert front["base_model"] == "Qwen/Qwen3-4B-Instruct-2507"
    assert front["datasets"] == ["FreedomIntelligence/Huatuo26M-Lite"]
    assert "| quantization | `nf4` |" in card and "| LoRA rank | `16` |" in card
    assert "| mode | QLoRA (LoRA adapters trained on a frozen nf4 4-bit base) |" in card
    assert "| steps | `2000` |" in card
    # The report verbatim, its sections nested under the card's own "## Evaluation", whose
    # heading replaces the report's title.
    evaluation = card.split("## Evaluation\n", 1)[1]
    assert "Evaluation report" not in card and "### Judge" in evaluation
    assert "| finetuned | 12.3 |" in evaluation and "win rate 61.0%" in evaluation
    headings = [line for line in card.splitlines() if line.strip()]
    for line, following in zip(headings, headings[1:], strict=False):
        assert not (line.startswith("#") and following.startswith("#")), (line, following)
    # Every plot the report links is in the folder uploaded, and the card links that copy.
    for name in PLOTS:
        copied = run_dir / "adapter" / "evaluation" / name
        assert copied.read_bytes() == (run_dir.parents[2] / "eval" / name).read_bytes()
        assert f"](evaluation/{name})" in card and f"]({name})" not in card
    assert "](https://example.org/p.pdf)" in card
    assert 'AutoPeftModelForCausalLM.from_pretrained("me/qwen3-huatuo")' in card
    assert "PEFT's template card" not in card
    out = capsys.readouterr().out
    assert "dry run: nothing sent" in out and "6 files" in out  # 3 of the adapter, 3 plots


def test_upload_creates_the_repo_and_sends_the_folder(run_dir, monkeypatch):
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs["repo_id"], kwargs))

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    card = publish.publish(run_dir, "me/qwen3-huatuo", private=True)
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]
    assert calls[0][2]["private"] is True and calls[0][2]["exist_ok"] is True
    assert calls[1][2]["folder_path"] == str(run_dir / "adapter") == str(card.parent)
    assert "No evaluation report was published." in card.read_text(encoding="utf-8")


def test_a_full_run_publishes_its_model_folder(run_dir, no_network):
    model = run_dir / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    card = publish.publish(run_dir, "me/full", what="model", dry_run=True)
    assert card == model / "README.md"
    text = card.read_text(encoding="utf-8")
    assert "library_name: transformers" in text
    assert 'AutoModelForCausalLM.from_pretrained("me/full")' in text


def test_a_full_fine_tuning_card_says_so_and_lists_no_lora_settings(run_dir, no_network):
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    # A full run's resolved config.yaml still holds LoRA's defaults: they were not used.
    config["model"] |= {"finetune": "full", "quantize": None}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    model = run_dir / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    text = publish.publish(run_dir, "me/full", what="model", dry_run=True).read_text("utf-8")
    assert "A fully fine-tuned model, trained with medsft" in text
    assert "| mode | full fine-tuning (every weight trained) |" in text
    assert "LoRA" not in text and "quantization" not in text
    assert "| learning rate | `0.0002` |" in text


def test_a_report_linking_a_missing_plot_is_one_error(run_dir, no_network, capsys):
    (run_dir.parents[2] / "eval" / "mcq.png").unlink()
    report = str(run_dir.parents[2] / "eval")
    with pytest.raises(SystemExit) as exit_info:
        publish.main([str(run_dir), "--repo_id", "me/x", "--report", report, "--dry_run"])
    text = str(exit_info.value.code)
    assert text.startswith("error: the report links mcq.png, which is not a file in")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repo_id", "no-owner"], "is not of the form owner/name"),
        (["--repo_id", "me/x", "--what", "merged"], "has no merged/ folder"),
        (["--repo_id", "me/x", "--report", "missing_dir"], "no evaluation report at"),
    ],
)
def test_bad_input_is_one_error_line(run_dir, no_network, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        publish.main([str(run_dir), *args, "--dry_run"])
    text = str(exit_info.value.code)
    assert text.startswith("error: ") and message in text and "\n" not in text


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        publish.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--dry_run" in out and "--repo_id" in out and "HF_TOKEN" in out
