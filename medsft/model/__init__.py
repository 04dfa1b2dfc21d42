"""The model: build a Qwen3 (hub id, local directory or `random:` preset; LoRA or full; NF4) and
its tokenizer (`build`), the attention kernel per batch kind (`attention`), FLOPs (`flops`), the
token-summed loss shared by training and perplexity (`loss`), batched generation shared by
evaluation and training's sample answers (`generate`), and what a trained run folder holds
(`trained`).

May import: the shared top-level modules only (medsft.hub, medsft.errors, medsft.chat), so a
model builds and loads without any training, data or evaluation code.
"""
