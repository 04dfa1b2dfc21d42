"""train.py end to end on tiny random Qwen3 models: modes, checkpoints, export, DDP, configs."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from medsft.cli.train import main
from tests.helpers import (
    ROOT,
    TRAIN_CONFIGS,
    four_rows,
    run_train,
    scalars,
    texts,
    train,
    train_process,
    train_py,
)


@pytest.mark.parametrize("config", TRAIN_CONFIGS, ids=lambda p: Path(p).name)
def test_every_training_config_parses(config, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--config", config, "--print_config"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "name_or_path:" in printed and "source:" in printed
    # Every config checkpoints periodically: by training time, and by steps where it says so.
    checkpoint = yaml.safe_load(printed)["checkpoint"]
    assert checkpoint["every_n_minutes"] == 30 and checkpoint["save_last"] is True
    assert checkpoint["enable_version_counter"] is False and checkpoint["save_top_k"] == 0
    if Path(config).name == "demo.yaml":
        assert checkpoint["every_n_train_steps"] == 10


def test_full_finetuning_of_a_4bit_model_is_rejected_with_a_fix():
    with pytest.raises(ValueError, match="quantize: nf4 \\(QLoRA\\)"):
        main(["--config", str(ROOT / "configs/demo.yaml"), "--model.quantize", "nf4"])


def test_a_missing_local_model_path_is_named_not_taken_for_a_hub_id():
    with pytest.raises(FileNotFoundError, match="logs/nope/version_9"):
        main(
            [
                "--config",
                str(ROOT / "configs/demo.yaml"),
                "--model.name_or_path",
                "logs/nope/version_9",
            ]
        )


def test_hub_only_config_fails_offline_with_a_message(monkeypatch):
    from medsft.model.build import HubUnreachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachable, match="not in the local cache"):
        main(["--config", str(ROOT / "configs/qlora.yaml")])


MODES = {
    "lora": ["--model.finetune", "lora", "--model.optimizer.lr", "0.02"],
    "qlora": [
        "--model.finetune",
        "lora",
        "--model.quantize",
        "nf4",
        "--model.optimizer.lr",
        "0.01",  # 4-bit base: at 0.02 the sixth step overshoots
    ],
    "full": ["--model.finetune", "full"],
}


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_trains_with_falling_loss(tmp_path, mode):
    cli = train(tmp_path, *MODES[mode])
    losses = scalars(cli.trainer.log_dir, "train/loss")
    assert len(losses) == 6
    assert losses[-1] < losses[0] - (2.0 if mode == "full" else 0.05), losses
    saved = Path(cli.trainer.log_dir) / ("model" if mode == "full" else "adapter")
    assert (saved / "tokenizer_config.json").exists()
    if mode != "full":
        assert (saved / "adapter_model.safetensors").exists()
        config = json.loads((saved / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "random:tiny"
        assert len(config["target_modules"]) == 7
    cfg = (Path(cli.trainer.log_dir) / "config.yaml").read_text()
    assert f"finetune: {'full' if mode == 'full' else 'lora'}" in cfg


def test_lora_checkpoint_holds_the_adapter_only_and_resumes(tmp_path, capsys):
    cli = train(tmp_path, *MODES["lora"], name="resume")
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    trainable = {n for n, p in cli.model.named_parameters() if p.requires_grad}
    assert set(state) == trainable and all("lora_" in k for k in state)
    assert ckpt.stat().st_size < 2_000_000  # the 40 MB base is not in it
    resumed = train(
        tmp_path, *MODES["lora"], "--trainer.max_steps", "9", "--ckpt_path", "last", name="resume"
    )
    assert resumed.trainer.global_step == 9
    # The same version folder: one curve of 9 steps, the first 6 as the first run logged them.
    assert resumed.trainer.log_dir == cli.trainer.log_dir
    curve = scalars(resumed.trainer.log_dir, "train/loss")
    assert len(curve) == 9
    # A fresh start would log exactly curve[0] (same data, same init); the resumed run starts
    # from the trained adapter instead, better than the fresh run's first two steps.
    assert curve[6] < min(curve[:2]) - 0.05, curve
    # Resumed again at its max_steps: nothing trains, nothing is written, and it says so. (This is
    # decided before any worker process starts, so the DDP case behaves the same.)
    capsys.readouterr()
    again = train(
        tmp_path, *MODES["lora"], "--trainer.max_steps", "9", "--ckpt_path", "last", name="resume"
    )
    assert "is at step 9, and trainer.max_steps is 9: nothing to train" in capsys.readouterr().out
    assert again.trainer.global_step == 0 and len(scalars(cli.trainer.log_dir, "train/loss")) == 9
    other = (
        "--model.lora.target_modules",
        "[q_proj, v_proj]",
        "--trainer.max_steps",
        "12",
        "--ckpt_path",
        str(ckpt),
    )
    with pytest.raises(ValueError, match="changed experiment: model.lora.target_modules"):
        train(tmp_path, *MODES["lora"], *other, name="other")
    # Allowed on purpose, the adapter in the file still cannot be loaded into another one.
    with pytest.raises(ValueError, match="adapter does not match"):
        train(
            tmp_path,
            *MODES["lora"],
            *other,
            "--allow_changed",
            "model.lora.target_modules",
            name="other",
        )


@pytest.mark.parametrize("mode", ["lora", "qlora"])
def test_adapter_round_trip_and_merged_export(tmp_path, mode):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from medsft.cli.export import export
    from medsft.model.build import load_base_model, load_trained

    cli = train(tmp_path, *MODES[mode], "--trainer.max_steps", "3")
    adapter = Path(cli.trainer.log_dir) / "adapter"
    ids = torch.tensor([[151644, 872, 198, 100, 200, 300, 151645]])
    reloaded = PeftModel.from_pretrained(load_base_model("random:tiny"), str(adapter)).eval()
    model, _ = load_trained(cli.trainer.log_dir)
    with torch.no_grad():
        expected = reloaded(input_ids=ids).logits
        torch.testing.assert_close(model(input_ids=ids).logits, expected)
        if mode == "lora":  # the in-memory trained model equals its saved adapter
            torch.testing.assert_close(cli.model.model.eval()(input_ids=ids).logits, expected)
        # Training changed the model: the adapter is not a no-op.
        assert not torch.allclose(load_base_model("random:tiny")(input_ids=ids).logits, expected)
    merged_dir = tmp_path / "merged"
    diff = export(adapter, merged_dir)
    assert diff < 1e-3
    weights = load_file(merged_dir / "model.safetensors")
    assert not any("lora" in k for k in weights)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)


def test_export_fails_beyond_tolerance(tmp_path):
    from medsft.cli.export import export

    cli = train(tmp_path, *MODES["lora"], "--trainer.max_steps", "2")
    with pytest.raises(RuntimeError, match="differs from the adapter model"):
        export(Path(cli.trainer.log_dir), tmp_path / "merged", tolerance=-1.0)


PARALLEL = {
    # mode: (arguments of both runs, of the two-process run only, saved weights, steps, rows)
    "qlora-ddp-accumulate": (
        # No LoRA dropout: each rank draws its own masks, which would differ from one process.
        # 11 rows, 2 x 2 per micro-batch, 2 micro-batches a step: each rank has 3 micro-batches,
        # so every epoch ends mid-window; that window must be completed and stepped, not dropped.
        ["--model.finetune", "lora", "--model.quantize", "nf4", "--model.lora.dropout", "0"]
        + ["--trainer.accumulate_grad_batches", "2", "--trainer.max_steps", "4"],
        ["--trainer.strategy", "ddp"],
        "adapter/adapter_model.safetensors",
        4,
        11,
    ),
    "full-fsdp2": ([], ["--trainer.strategy", "fsdp2"], "model/model.safetensors", 8, 13),
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", PARALLEL)
def test_two_processes_match_one(tmp_path, mode):
    """Same global batch, uneven shards: the same token-weighted losses and weights."""
    both, two_only, weights, steps, rows = PARALLEL[mode]
    data, val = tmp_path / "rows.jsonl", tmp_path / "val.jsonl"
    with open(ROOT / "data/sample/huatuo_sample.jsonl", encoding="utf-8") as f:
        lines = f.readlines()
    data.write_text("".join(lines[:rows]), encoding="utf-8")
    val.write_text("".join(lines[-2:]), encoding="utf-8")
    common = [
        "--data.source",
        str(data),
        "--data.val_source",
        str(val),
        "--samples.n",
        "2",
        "--samples.max_new_tokens",
        "4",
        "--data.shuffle_buffer",
        "1",
        "--trainer.max_steps",
        "8",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.val_check_interval",
        "4",
        "--trainer.check_val_every_n_epoch",
        "null",
        *both,
    ]
    # The reference runs in this process (one interpreter start fewer); the two ranks through
    # train.py, as a user starts them.
    one = Path(train(tmp_path, *common, "--data.batch_size", "4", name="one").trainer.log_dir)
    two = run_train(
        tmp_path, "two", *common, "--data.batch_size", "2", "--trainer.devices", "2", *two_only
    )
    # NF4 layers compute in bf16, which rounds differently on half batches; fp32 agrees to noise.
    rel = 1e-3 if "qlora" in mode else 1e-5
    for tag in ("train/loss", "train/supervised_tokens", "train/lr", "train/grad_norm"):
        a, b = scalars(one, tag), scalars(two, tag)
        assert len(a) == len(b) == steps
        assert a == pytest.approx(b, rel=rel * (10 if tag == "train/grad_norm" else 1)), tag
    # Sample answers at each validation (one per epoch): rank 0 generates under DDP and the
    # ranks go on together; a model sharded by FSDP2 is not sampled, and the log says why.
    sampled = texts(two)
    if "fsdp2" in mode:
        assert sampled == {}
        skipped = "samples: no sample answers logged: the model is sharded"
        assert (two / "stderr.txt").read_text(encoding="utf-8").count(skipped) == 1
    else:
        assert sampled.keys() == {"samples/0/text_summary", "samples/1/text_summary"}
        assert len(sampled["samples/0/text_summary"]) == len(scalars(two, "val/loss")) >= 1
    w1, w2 = load_file(one / weights), load_file(two / weights)
    assert w1.keys() == w2.keys()
    # Adam divides by sqrt(v): rarely-hit embedding rows magnify summation-order differences.
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=max(1e-3, rel * 10), rtol=rel * 100)


@pytest.mark.slow
def test_kill_9_and_resume_gives_the_uninterrupted_run(tmp_path):
    """SIGKILL at step 8, resume from the step-6 checkpoint: the same losses, learning rates,
    data counters and final weights as a run that was never interrupted (fp32 CPU, LoRA with
    dropout), under two-process DDP, padding-free micro-batches, across epoch boundaries. (Each
    packing mode's loader resumes exactly in-process: tests/data/test_module.py.)"""
    data = tmp_path / "rows.jsonl"
    with open(ROOT / "data/sample/huatuo_sample.jsonl", encoding="utf-8") as f:
        data.write_text("".join(f.readline() for _ in range(20)), encoding="utf-8")
    common = [
        "--data.source",
        str(data),
        "--data.val_fraction",
        "0",
        "--data.batch_size",
        "3",
        "--data.shuffle_buffer",
        "8",
        "--data.max_length",
        "256",
        "--data.packing",
        "padding_free",
        # No loader workers here: forking workers from a process that already runs gloo's threads
        # hung once in about six runs (tests/data/test_data.py resumes with workers in-process).
        "--data.num_workers",
        "0",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--model.finetune",
        "lora",
        "--model.optimizer.lr",
        "0.02",
        "--trainer.max_steps",
        "10",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.val_check_interval",
        "null",
        "--trainer.check_val_every_n_epoch",
        "null",
        "--checkpoint.every_n_train_steps",
        "3",
    ]
    assert train_process(tmp_path, "straight", *common).returncode == 0
    kill = '[{"class_path": "tests.resume_helpers.KillAt", "init_args": {"step": 8}}]'
    killed = train_process(tmp_path, "killed", *common, "--trainer.callbacks", kill)
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = train_process(tmp_path, "killed", *common, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight, run = tmp_path / "straight/version_0", tmp_path / "killed/version_0"
    assert not (tmp_path / "killed/version_1").exists()  # the same run continues
    # data/*: the checkpoint holds the counters of its own step (DataMonitor runs before it).
    for tag in (
        "train/loss",
        "train/lr",
        "train/supervised_tokens",
        "data/examples",
        "data/rows",
        "data/truncated",
    ):
        a, b = scalars(straight, tag), scalars(run, tag)
        assert len(a) == len(b) == 10, tag  # one curve: the killed run's steps 6-8 are purged
        assert b == pytest.approx(a, rel=1e-6, abs=1e-6), tag
    w1 = load_file(straight / "adapter/adapter_model.safetensors")
    w2 = load_file(run / "adapter/adapter_model.safetensors")
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_a_diverging_run_stops_nonzero_and_keeps_finite_weights(tmp_path, capsys):
    """lr 1e6: the run stops at the first non-finite step, exits 1 with one line naming the step,
    and neither the checkpoint nor a model directory holds NaN. (train.py's entry point, in this
    process.)"""
    args = [
        "--model.optimizer.lr",
        "1e6",
        "--trainer.max_steps",
        "20",
        "--trainer.log_every_n_steps",
        "1",
        "--checkpoint.every_n_train_steps",
        "1",
        "--trainer.logger.init_args.name",
        "nan",
    ]
    code, err = train_py(tmp_path, capsys, *args)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: step ") and "lower --model.optimizer.lr" in last, last
    run = tmp_path / "nan/version_0"
    assert not (run / "model").exists()
    ckpt = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert 0 < ckpt["global_step"] < 20
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())


LORA = ("--model.finetune", "lora")  # small checkpoints where the mode is not the point


def test_skip_mode_skips_nonfinite_steps_and_stops_after_too_many(tmp_path, monkeypatch):
    from medsft.training.module import NonFiniteLoss, SFTModule

    step = SFTModule.step
    poisoned = {2, 4, 5}  # optimizer steps whose loss is NaN (batch = step: no accumulation)
    weights_before_skip = {}

    def maybe_nan(self, batch):
        nll, n = step(self, batch)
        if self.global_step in poisoned:
            weights_before_skip[self.global_step] = [
                p.detach().clone() for p in self.parameters() if p.requires_grad
            ]
            return nll * float("nan"), n
        return nll, n

    monkeypatch.setattr(SFTModule, "step", maybe_nan)
    with pytest.raises(NonFiniteLoss, match="step 5"):
        train(
            tmp_path,
            *LORA,
            "--model.nonfinite",
            "skip",
            "--model.max_nonfinite_skips",
            "1",
            "--trainer.max_steps",
            "8",
        )
    # Step 2 was skipped: the weights after it equal those before it.
    # (Step 4 skipped too; step 5 was a second in a row, beyond max_nonfinite_skips=1.)
    assert set(weights_before_skip) == {2, 4, 5}
    for before, after in zip(weights_before_skip[4], weights_before_skip[5], strict=True):
        torch.testing.assert_close(before, after)  # step 4's update never happened


@pytest.mark.slow
def test_ckpt_path_last_searches_the_configured_checkpoint_folder(tmp_path, capsys):
    mine, other = tmp_path / "mine", tmp_path / "other"
    train(
        tmp_path, *LORA, "--checkpoint.dirpath", str(mine), "--trainer.max_steps", "2", name="exp"
    )
    train(
        tmp_path, *LORA, "--checkpoint.dirpath", str(other), "--trainer.max_steps", "4", name="exp"
    )
    resumed = train(
        tmp_path,
        *LORA,
        "--checkpoint.dirpath",
        str(mine),
        "--trainer.max_steps",
        "3",
        "--ckpt_path",
        "last",
        name="exp",
    )
    assert f"resuming from {mine / 'last.ckpt'}" in capsys.readouterr().out
    assert resumed.trainer.global_step == 3  # from mine's step 2, not other's step 4
    # ... and into the run folder mine's checkpoints were written from, not a new version_2
    assert Path(resumed.trainer.log_dir) == tmp_path / "exp/version_0"
    with pytest.raises(ValueError, match="no checkpoint matches"):
        train(
            tmp_path, *LORA, "--checkpoint.dirpath", str(tmp_path / "none"), "--ckpt_path", "last"
        )


def test_a_failed_start_leaves_no_version_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        train(tmp_path, "--data.source", str(tmp_path / "missing/*.jsonl"), name="bad")
    assert not list((tmp_path / "bad").glob("version_*"))


@pytest.mark.slow
def test_a_hub_stream_resumes_exactly(tmp_path, monkeypatch):
    """A dataset streamed by `datasets` (as from the hub; here its json builder, offline) resumes
    mid-epoch to the same losses and adapter as a run never stopped."""
    import datasets

    import medsft.data
    import medsft.data.sources
    import medsft.model.build

    hub_id = "someone/huatuo-like"
    load = datasets.load_dataset
    path = four_rows(tmp_path)
    with open(ROOT / "data/sample/huatuo_sample.jsonl", encoding="utf-8") as f:
        Path(path).write_text("".join(f.readline() for _ in range(24)), encoding="utf-8")

    def streamed(name, *args, **kwargs):
        assert name == hub_id and kwargs["streaming"]
        return load("json", data_files=path, split="train", streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", streamed)
    monkeypatch.setattr(medsft.model.build, "ensure_hub_reachable", lambda *a, **k: None)
    monkeypatch.setattr(medsft.data.sources, "ensure_hub_reachable", lambda *a, **k: None)
    is_local = medsft.data.sources.is_local
    for module in (medsft.data, medsft.data.sources):
        monkeypatch.setattr(module, "is_local", lambda s: s != hub_id and is_local(s))
    args = [
        "--data.source",
        hub_id,
        "--data.batch_size",
        "2",
        "--data.shuffle_buffer",
        "6",
        "--model.finetune",
        "lora",
        "--model.optimizer.lr",
        "0.02",
        "--checkpoint.every_n_train_steps",
        "3",
    ]
    straight = train(tmp_path, *args, "--trainer.max_steps", "8", name="straight")
    train(tmp_path, *args, "--trainer.max_steps", "3", name="stopped")
    resumed = train(
        tmp_path, *args, "--trainer.max_steps", "8", "--ckpt_path", "last", name="stopped"
    )
    a = scalars(straight.trainer.log_dir, "train/loss")
    b = scalars(resumed.trainer.log_dir, "train/loss")
    assert len(a) == len(b) == 8 and b == pytest.approx(a, rel=1e-6, abs=1e-6)
    pairs = zip(straight.model.named_parameters(), resumed.model.parameters(), strict=True)
    for (name, p), q in pairs:
        if p.requires_grad:
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6, msg=name)
