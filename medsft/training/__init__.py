"""Training: the LightningModule and its step (`module`), optimizer and schedule (`optim`),
tokens/s and MFU (`throughput`), FSDP2 (`fsdp`), atomic checkpoints (`checkpoint`), signals
(`preemption`), resuming the same run (`runs`), and the data counters logged (`datastats`).

May import: the shared top-level modules, medsft.model, medsft.data and medsft.metrics (the
token perplexity); never medsft.evaluation or medsft.cli.
"""
