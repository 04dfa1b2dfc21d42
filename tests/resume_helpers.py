"""A callback for the resume tests: the process kills itself with SIGKILL at a given step, as a
preempted job dies (no exception, no cleanup, no final checkpoint)."""

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
