"""configs/loggers/*.yaml: W&B and MLflow beside TensorBoard, as a second --config.

The files must parse with train.py's CLI on top of a run config, keep TensorBoard first (it names
the run folder that holds config.yaml, checkpoints and the adapter), and log offline where the
tracker's package is installed (`pip install wandb` / `mlflow-skinny`; neither is a default
extra).
"""

from __future__ import annotations

import importlib
import inspect
import os

import pytest
import yaml

from tests.conftest import ROOT

LOGGERS = {
    "wandb": "lightning.pytorch.loggers.WandbLogger",
    "mlflow": "lightning.pytorch.loggers.MLFlowLogger",
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def logger_entries(name: str) -> list[dict]:
    return yaml.safe_load((ROOT / "configs" / "loggers" / f"{name}.yaml").read_text())["trainer"][
        "logger"
    ]


def resolve(class_path: str) -> type:
    module, _, attr = class_path.rpartition(".")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("name", LOGGERS)
def test_logger_file_names_real_classes_and_arguments(name):
    first, second = logger_entries(name)
    assert first["class_path"].endswith("TensorBoardLogger")
    assert "name" not in first["init_args"]  # the run config's name carries over
    assert second["class_path"] == LOGGERS[name]
    parameters = inspect.signature(resolve(second["class_path"]).__init__).parameters
    assert set(second["init_args"]) <= set(parameters), set(second["init_args"]) - set(parameters)


@pytest.mark.parametrize("name", LOGGERS)
def test_logger_config_keeps_the_run_folder(name, capsys, monkeypatch):
    """Over configs/demo.yaml, the resolved loggers are [TensorBoard named demo, the tracker]:
    `python train.py --config configs/demo.yaml --config configs/loggers/<name>.yaml`, through
    train.py's entry point in this process."""
    from medsft.cli.train import cli_main

    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as done:
        cli_main(
            [
                "--config",
                "configs/demo.yaml",
                "--config",
                f"configs/loggers/{name}.yaml",
                "--print_config",
            ]
        )
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    loggers = yaml.safe_load(printed)["trainer"]["logger"]
    assert [entry["class_path"] for entry in loggers] == [
        "lightning.pytorch.loggers.TensorBoardLogger",
        LOGGERS[name],
    ]
    assert loggers[0]["init_args"]["name"] == "demo"
    assert loggers[0]["init_args"]["save_dir"] == "logs"


def test_wandb_logs_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="pip install wandb to run W&B offline")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    entry = logger_entries("wandb")[1]
    logger = resolve(entry["class_path"])(**{**entry["init_args"], "save_dir": str(tmp_path)})
    logger.log_hyperparams({"lr": 0.01})
    logger.log_metrics({"train/loss": 2.5}, step=1)
    logger.finalize("success")
    logger.experiment.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_mlflow_logs_to_a_local_file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="pip install mlflow-skinny to run MLflow offline")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file stores otherwise
    entry = logger_entries("mlflow")[1]
    assert entry["init_args"]["tracking_uri"].startswith("file:")
    store = tmp_path / "mlruns"
    args = {**entry["init_args"], "tracking_uri": f"file:{store}"}
    logger = resolve(entry["class_path"])(**args)
    logger.log_hyperparams({"lr": 0.01})
    logger.log_metrics({"train/loss": 2.5}, step=1)
    logger.finalize("success")
    metric = list(store.glob("*/*/metrics/train/loss"))
    assert len(metric) == 1
    assert metric[0].read_text().split()[1] == "2.5"


@pytest.mark.slow
def test_train_with_a_logger_list_keeps_the_run_folder(tmp_path, monkeypatch):
    """train.py with [TensorBoard, a second logger] (CSV here: always installed) writes the run
    folder, config.yaml and model where TensorBoard alone would, and both loggers get scalars."""
    from medsft.cli.train import cli_main

    second = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {}}
    config = tmp_path / "csv.yaml"
    entries = [logger_entries("mlflow")[0], second]
    config.write_text(yaml.safe_dump({"trainer": {"logger": entries}}))
    logs = tmp_path / "logs"
    monkeypatch.chdir(tmp_path)  # the configs' relative save_dir: logs/ here
    cli_main(
        [
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            "--config",
            str(config),
            "--trainer.max_steps",
            "2",
            "--trainer.val_check_interval",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--data.source",
            str(ROOT / "data" / "sample" / "huatuo_sample.jsonl"),
        ]
    )
    run = logs / "demo" / "version_0"
    assert (run / "config.yaml").is_file() and (run / "model" / "model.safetensors").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    csv = list(logs.glob("demo/version_*/metrics.csv"))
    assert csv and "val/loss" in csv[0].read_text().splitlines()[0].split(",")
