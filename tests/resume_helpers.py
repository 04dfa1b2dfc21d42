"""Callbacks for the resume tests. KillAt: the process kills itself with SIGKILL at a given step,
as a preempted job dies (no exception, no cleanup, no final checkpoint); StepFile reports the step."""

import os
import signal

from lightning.pytorch import Callback


class KillAt(Callback):
    def __init__(self, step: int):
        """
        Args:
            step: the optimizer step after which the process dies.
        """
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class StepFile(Callback):
    """Writes the optimizer step reached after every batch, for a test that signals the
    process from outside once training is under way."""

    def __init__(self, path: str):
        """
        Args:
            path: the file to write the step into.
        """
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with open(f"{self.path}.tmp", "w") as f:
            f.write(str(trainer.global_step))
        os.replace(f"{self.path}.tmp", self.path)  # a reader never sees an empty file


class SignalAt(Callback):
    """Sends a signal to its own process after an optimizer step, as a user or scheduler would
    (the handler then runs between two Python instructions, not at a hook boundary)."""

    def __init__(self, step: int, signum: int):
        """
        Args:
            step: the optimizer step after which the signal is sent.
            signum: the signal, e.g. signal.SIGINT.
        """
        self.step, self.signum, self.sent = step, signum, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


class CrashInValidation(Callback):
    """Raises inside the validation that follows optimizer step `step`, as a crash or a kill
    there would stop it (the step's checkpoint is already saved: Lightning saves before it
    validates)."""

    def __init__(self, step: int):
        """
        Args:
            step: the optimizer step whose validation fails.
        """
        self.step = step

    def on_validation_batch_start(self, trainer, *args):
        if trainer.global_step == self.step and not trainer.sanity_checking:
            raise RuntimeError(f"crash while validating step {self.step}")
