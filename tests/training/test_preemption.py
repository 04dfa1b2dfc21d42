"""Preemption on the demo config, as a scheduler does it: a signal from outside mid-run, then
the same command again. SIGTERM saves the step reached and exits 143; a resume loses no step.
Under SLURM, SIGUSR1 also requeues (a fake `scontrol` records the call)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medsft.training.preemption import Preemption, exit_code, slurm_job_id
from tests.helpers import ROOT, scalars

DEMO = [
    "--data.val_fraction",
    "0",
    "--trainer.max_steps",
    "8",
    "--trainer.log_every_n_steps",
    "1",
    "--trainer.val_check_interval",
    "null",
    "--trainer.enable_progress_bar",
    "false",
]


def start(tmp_path, env, *args, cwd=ROOT):
    """train.py on configs/demo.yaml in a subprocess that reports its step into a file."""
    step_file = tmp_path / "step"
    step_file.unlink(missing_ok=True)
    callbacks = (
        f'[{{"class_path": "tests.resume_helpers.StepFile", '
        f'"init_args": {{"path": "{step_file}"}}}}]'
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        str(ROOT / "configs/demo.yaml"),
        "--data.source",
        str(ROOT / "data/sample/huatuo_sample.jsonl"),
        *DEMO,
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        "--trainer.callbacks",
        callbacks,
        *args,
    ]
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return proc, step_file


def signal_at(proc, step_file, step, signum):
    """Send `signum` once the run has reached `step`; the seconds until it exits."""
    deadline = time.monotonic() + 600
    while not (step_file.exists() and int(step_file.read_text()) >= step):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    return time.monotonic() - sent, out, err


def ckpt_step(path):
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.slow
def test_sigusr1_requeues_then_sigterm_saves_and_the_run_resumes_without_loss(tmp_path):
    """One run preempted twice, as a SLURM job is: SIGUSR1 saves into the run and requeues
    (exit 138); the requeued job resumes by itself and is stopped by SIGTERM (exit 143, the step
    reached saved); the next start finishes it, with every step logged once in one run folder."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "sft",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    work = tmp_path / "cwd"
    work.mkdir()
    run = tmp_path / "demo" / "version_0"
    last = run / "checkpoints" / "last.ckpt"

    proc, step_file = start(tmp_path, slurm, cwd=work)
    _, _, err = signal_at(proc, step_file, 2, signal.SIGUSR1)
    assert proc.returncode == 128 + signal.SIGUSR1, err[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    assert list(work.iterdir()) == []  # no hpc_ckpt_1.ckpt where the job was started
    first = ckpt_step(last)
    assert first == int(step_file.read_text()) and 2 <= first < 8  # 0 steps lost

    # SLURM starts the same command again, with SLURM_RESTART_COUNT set: it resumes by itself.
    requeued, step_file = start(tmp_path, {**slurm, "SLURM_RESTART_COUNT": "1"}, cwd=work)
    seconds, out, err = signal_at(requeued, step_file, first + 2, signal.SIGTERM)
    assert requeued.returncode == 143, err[-3000:]
    assert f"resuming from {last}" in out
    second = ckpt_step(last)
    assert second == int(step_file.read_text()) and first + 2 <= second < 8, (first, second)
    assert f"SIGTERM: saved step {second}" in err and seconds < 120
    assert calls.read_text().split() == ["requeue", "4242"]  # SIGTERM does not requeue
    assert not (run / "model").exists()  # a stopped run is not a trained model

    finished, _ = start(tmp_path, {**slurm, "SLURM_RESTART_COUNT": "2"}, cwd=work)
    out, err = finished.communicate(timeout=600)
    assert finished.returncode == 0, err[-3000:]
    assert not (tmp_path / "demo" / "version_1").exists()
    assert len(scalars(run, "train/loss")) == 8  # one curve, every step once
    assert (run / "model").is_dir()
    assert {p.name for p in run.glob("config*.yaml")} == {
        "config.yaml",
        "config.resume-1.yaml",
        "config.resume-2.yaml",
    }


def test_sigint_mid_accumulation_finishes_the_step_saves_it_and_exits_130(tmp_path):
    """Ctrl-C arrives at the first micro-batch of step 3's window of 2: the window completes,
    step 3 is saved, and the exit status is 130."""
    from medsft.training.preemption import Preempted
    from tests.helpers import train

    sigint = (
        f'[{{"class_path": "tests.resume_helpers.SignalAt", '
        f'"init_args": {{"step": 2, "signum": {int(signal.SIGINT)}}}}}]'
    )
    # Ctrl-C's usual disposition, whatever this process started with (`pytest &` in a script
    # starts it with SIGINT ignored), and the one training must restore.
    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(Preempted) as stopped:
            train(
                tmp_path,
                "--model.finetune",
                "lora",
                "--trainer.accumulate_grad_batches",
                "2",
                "--data.batch_size",
                "2",
                "--trainer.max_steps",
                "6",
                "--trainer.callbacks",
                sigint,
                name="int",
            )
        restored = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, started_with)
    assert stopped.value.code == 130 and stopped.value.signum == signal.SIGINT
    assert stopped.value.checkpoint == str(tmp_path / "int/version_0/checkpoints/last.ckpt")
    assert ckpt_step(stopped.value.checkpoint) == 3
    assert restored is signal.default_int_handler  # handlers restored


def test_slurm_job_ids_and_exit_codes(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    assert slurm_job_id() is None
    assert Preemption().signals() == [signal.SIGTERM, signal.SIGINT]
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert slurm_job_id() == "77" and signal.SIGUSR1 in Preemption().signals()
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "70_3"
    assert exit_code(signal.SIGTERM) == 143 and exit_code(signal.SIGINT) == 130


def test_a_failed_requeue_is_said_not_hidden(monkeypatch, capsys):
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    Preemption(requeue=(str(Path("/nonexistent/scontrol")), "requeue"))._requeue()
    assert "could not requeue SLURM job 5" in capsys.readouterr().err


def test_the_sbatch_script_asks_for_the_requeue_signal_and_is_valid_bash():
    script = ROOT / "docs/slurm/train.sbatch"
    text = script.read_text()
    for directive in ("--signal=USR1@90", "--requeue", "--nodes=", "--ntasks-per-node="):
        assert f"#SBATCH {directive}" in text
    assert "srun python train.py" in text and "--ckpt_path" not in text.split("srun", 1)[1]
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_a_signal_during_the_final_write_waits_for_it_then_exits_143():
    from medsft.training.preemption import Preempted, signals_deferred

    before = signal.getsignal(signal.SIGTERM)
    written = []
    with pytest.raises(Preempted) as stopped, signals_deferred("the model"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler has run by now: the write goes on
        written.append(True)
    assert written and stopped.value.code == 143 and stopped.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    with signals_deferred("nothing"):  # no signal: no exit
        pass
