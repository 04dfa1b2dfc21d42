"""Training: the LightningModule, optimizer, throughput, FSDP2, checkpoints, preemption, runs."""
