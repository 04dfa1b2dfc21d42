"""Preemption: a signal ends training at the next optimizer step with a checkpoint, non-zero.

SLURM, Kubernetes and spot instances send SIGTERM before they kill; a user presses Ctrl-C
(SIGINT). `Preemption` lets the optimizer step in progress finish (the rest of an accumulation
window included), writes `last.ckpt` at that step into the run's checkpoint folder (atomically,
through the strategy's checkpoint IO, see medsft.training.checkpoint), and exits with 128 + the signal
number, as a shell reports a process killed by it; a scheduler sees a failure and may restart,
and `--ckpt_path last` resumes with no step lost.

Under SLURM (`SLURM_JOB_ID` set), SIGUSR1 (`#SBATCH --signal=USR1@90`) does the same and then
requeues the job (`scontrol requeue`): the requeued job runs the same command, finds the
checkpoint and continues in the same `version_N` (medsft.cli.train). This takes over Lightning's
own SLURM auto-requeue, which would write `hpc_ckpt_<n>.ckpt` into the working directory, where
`--ckpt_path last` never looks: the handlers installed here replace Lightning's when training
starts.

With several processes, every rank checks at each optimizer step whether any rank was
signalled (one all-reduce of an integer), so all of them save and stop at the same step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

REQUEUE_SIGNAL = signal.SIGUSR1
"""The signal `#SBATCH --signal=USR1@<seconds>` sends before a SLURM job's time limit."""


def slurm_job_id() -> str | None:
    """The SLURM job to requeue (`<array job>_<task>` for an array task), or None outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID") or None


def exit_code(signum: int) -> int:
    """128 + the signal number: what a shell reports for a process ended by that signal."""
    return 128 + int(signum)


class Preempted(SystemExit):
    """Training stopped on a signal after saving; the exit status is 128 + the signal number."""

    def __init__(self, signum: int, checkpoint: str | None) -> None:
        super().__init__(exit_code(signum))
        self.signum = signum
        self.checkpoint = checkpoint


class Preemption(Callback):
    """Save at the next optimizer step and exit 128 + signal on SIGTERM, SIGINT and, under
    SLURM, SIGUSR1 (which also requeues the job).

    Must run after callbacks that update checkpointed state at the end of a batch (the data
    counters): medsft.cli.train inserts it just before the ModelCheckpoint callbacks.
    """

    def __init__(self, requeue: tuple[str, ...] = ("scontrol", "requeue")) -> None:
        """
        Args:
            requeue: the command that requeues a SLURM job; the job id is appended.
        """
        self.requeue = requeue
        self.signum: int | None = None
        self.received_at: float | None = None
        self._step_before = -1

    def signals(self) -> list[int]:
        """The signals handled: SIGTERM, SIGINT, and SIGUSR1 inside a SLURM job."""
        handled = [signal.SIGTERM, signal.SIGINT]
        if slurm_job_id() is not None:
            handled.append(REQUEUE_SIGNAL)
        return handled

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without waiting for the step
        if self.signum is None:
            self.signum, self.received_at = signum, time.monotonic()
            name = signal.Signals(signum).name
            print(
                f"{name} received: saving a checkpoint at the end of this optimizer step, "
                "then exiting",
                file=sys.stderr,
                flush=True,
            )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning registers its own SIGTERM (and, under SLURM, SIGUSR1) handlers just before
        # training; replacing them here is what takes the signals over. Lightning restores the
        # handlers that were there before it when fit ends.
        if trainer.received_sigterm and self.signum is None:  # arrived while setting up
            self.signum, self.received_at = int(signal.SIGTERM), time.monotonic()
        for signum in self.signals():
            try:
                signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals stay with their owner
                return

    def on_train_batch_start(self, trainer: Trainer, *_: Any) -> None:
        self._step_before = trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *_: Any) -> None:
        if trainer.global_step == self._step_before:
            return  # inside an accumulation window: the optimizer step is not done yet
        signum = self._agreed(trainer)
        if not signum:
            return
        path = self._save(trainer)
        if signum == REQUEUE_SIGNAL and trainer.is_global_zero:
            self._requeue()
        if trainer.is_global_zero:
            waited = time.monotonic() - (self.received_at or time.monotonic())
            print(
                f"{signal.Signals(signum).name}: saved step {trainer.global_step} to {path} "
                f"({waited:.1f} s after the signal); exiting with {exit_code(signum)}",
                file=sys.stderr,
                flush=True,
            )
        raise Preempted(signum, path)

    def _agreed(self, trainer: Trainer) -> int:
        """The signal any rank received (the same answer on every rank), or 0."""
        mine = int(self.signum or 0)
        if trainer.world_size == 1:
            return mine
        import torch

        flag = torch.tensor([mine], device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(flag, reduce_op="max").item())

    @staticmethod
    def _save(trainer: Trainer) -> str:
        from medsft.training.checkpoint import RunCheckpoint

        callback = trainer.checkpoint_callback
        if isinstance(callback, RunCheckpoint):
            # Through the callback, so that it knows last.ckpt holds this step.
            return callback.save_last_now(trainer)
        folder = getattr(callback, "dirpath", None) or os.path.join(
            trainer.log_dir or trainer.default_root_dir, "checkpoints"
        )
        path = os.path.join(folder, "last.ckpt")
        trainer.save_checkpoint(path)  # every rank: a collective under DDP and FSDP2
        return path

    def _requeue(self) -> None:
        job = slurm_job_id()
        if job is None:
            return
        command = [*self.requeue, job]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            print(
                f"could not requeue SLURM job {job} ({' '.join(command)}: {err}); resubmit "
                "the same command to continue",
                file=sys.stderr,
                flush=True,
            )
            return
        if result.returncode == 0:
            print(f"requeued SLURM job {job}", file=sys.stderr, flush=True)
        else:
            print(
                f"could not requeue SLURM job {job} ({' '.join(command)} exited "
                f"{result.returncode}: {result.stderr.strip()[:200]}); resubmit the same "
                "command to continue",
                file=sys.stderr,
                flush=True,
            )


@contextmanager
def signals_deferred(what: str) -> Iterator[None]:
    """SIGTERM, SIGINT (and SIGUSR1 under SLURM) wait until the block is done, then end the
    process with 128 + the signal number: for the final checkpoint and model, which a signal
    must not leave half written (Lightning has restored the previous handlers by then).

    Args:
        what: what the block writes, for the message.

    Raises:
        Preempted: a signal arrived during the block (after it completed).
    """
    received: list[int] = []

    def note(signum: int, frame: Any) -> None:
        if not received:
            print(
                f"{signal.Signals(signum).name} received while writing {what}: finishing it, "
                "then exiting",
                file=sys.stderr,
                flush=True,
            )
        received.append(signum)

    handled = [signal.SIGTERM, signal.SIGINT]
    if slurm_job_id() is not None:
        handled.append(REQUEUE_SIGNAL)
    try:
        previous = {s: signal.signal(s, note) for s in handled}
    except ValueError:  # not the main thread: signals stay with their owner
        previous = {}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        print(
            f"{signal.Signals(received[0]).name}: {what} written; exiting with "
            f"{exit_code(received[0])}",
            file=sys.stderr,
            flush=True,
        )
        raise Preempted(received[0], None)
