"""Build a Qwen3 (hub id, local directory or `random:` preset; LoRA or full; NF4), its attention
kernels, its FLOPs, its token-summed loss, and what a trained run folder holds."""
