"""Sample answers in TensorBoard: at each validation, a few fixed validation prompts answered
greedily and logged as text, so a run that collapses into repeating one phrase shows it while
`train/loss` still looks healthy.

`SampleAnswers` is a callback that train.py always adds (`--samples.*`, saved in config.yaml with
the rest of the run's config): `--samples.n 0` turns it off. At the end of each validation
(not the sanity check) rank 0 answers `n` prompts in one greedy batch of at most
`max_new_tokens` new tokens, so the cost is bounded by `max_new_tokens` decoding steps of a batch
of `n`, and logs for each prompt, under TensorBoard's TEXT tab as `samples/<k>`, the prompt, the
reference, the answer and the step, plus two scalars: `samples/seconds` (what the sampling cost)
and `samples/distinct-2` (the share of distinct character bigrams in the answers; a collapse into
one repeated phrase drives it down).

The prompts are the same at every validation: drawn with `seed` from the first `pool` validation
examples of the data module's validation split (its own source, or the hashed `val_fraction` of
the training source), in source order. Reading stops at `pool` examples, so a hub stream is
never read to its end for four prompts.

Distributed runs: under DDP rank 0 generates with its own full copy while the other ranks go on
to the next step and wait for it at the next collective. A sharded model (FSDP2) can only run a
forward pass with every rank taking part, so there sampling is skipped, with one logged line
saying why.

Generation is medsft.model.generate's (`generate_batch`: left padding, answers cut by token
position, exactly as evaluate.py answers), so a sample is what evaluate.py would produce from the
same weights and prompt.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from medsft.errors import ConfigError

log = logging.getLogger(__name__)


class SampleAnswers(Callback):
    """Greedy answers to fixed validation prompts, logged to TensorBoard at each validation."""

    def __init__(self, n: int = 4, max_new_tokens: int = 64, seed: int = 0, pool: int = 64):
        """
        Args:
            n: validation prompts answered at each validation; 0 turns sampling off.
            max_new_tokens: the longest answer, in tokens: each validation costs at most this
                many decoding steps of one batch of `n` prompts.
            seed: which prompts: drawn with this seed from the first `pool` validation examples.
            pool: validation examples (in source order) the prompts are drawn from; none are
                read beyond them.
        """
        if n < 0 or max_new_tokens < 1 or pool < 1:
            raise ConfigError(
                f"samples.n must be >= 0 (0: off), samples.max_new_tokens >= 1 and samples.pool "
                f">= 1; got {n}, {max_new_tokens} and {pool}"
            )
        self.n, self.max_new_tokens, self.seed, self.pool = n, max_new_tokens, seed, pool
        self.prompts: list[dict[str, Any]] | None = None
        """The chosen prompts (read at the first validation): `messages`, `reference`, `where`,
        `ids`."""
        self.seconds: list[float] = []
        """What each validation's sampling took, for benchmarks."""
        self._skipped = False

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.n == 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        writers = [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        reason = _why_not(trainer, writers)
        if reason is not None:
            if not self._skipped:
                log.warning("samples: no sample answers logged: %s", reason)
                self._skipped = True
            return
        start = time.perf_counter()
        if self.prompts is None:
            self.prompts = choose_prompts(trainer.datamodule, self.n, self.seed, self.pool)
        if not self.prompts:
            return
        completions = self._answer(trainer, pl_module)
        seconds = time.perf_counter() - start
        self.seconds.append(seconds)
        step = trainer.global_step
        for k, (prompt, completion) in enumerate(zip(self.prompts, completions, strict=True)):
            text = sample_markdown(prompt, completion, step)
            for writer in writers:
                writer.add_text(f"samples/{k}", text, global_step=step)
        from medsft.metrics import distinct

        answers = [c.answer for c in completions]
        scalars = {"samples/seconds": seconds}
        if any(a.strip() for a in answers):
            scalars["samples/distinct-2"] = distinct(answers, orders=2, tokenizer="char")[
                "distinct-2"
            ].score
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

    def _answer(self, trainer: Trainer, pl_module: LightningModule) -> list[Any]:
        from medsft.model.generate import GenerationSettings, generate_batch

        model = pl_module.model
        tokenizer = trainer.datamodule.tokenizer
        settings = GenerationSettings(max_new_tokens=self.max_new_tokens, batch_size=self.n)
        was_training = model.training
        model.eval()
        try:
            # The run's precision (autocast for mixed precision), as in its validation steps.
            with trainer.precision_plugin.forward_context():
                return generate_batch(model, tokenizer, [p["ids"] for p in self.prompts], settings)
        finally:
            model.train(was_training)


def _why_not(trainer: Trainer, writers: list[Any]) -> str | None:
    """Why no sample can be logged in this run, or None when it can."""
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    if isinstance(trainer.strategy, FSDPStrategy | ModelParallelStrategy):
        return (
            "the model is sharded (FSDP), and generating from it needs every rank in each forward "
            "pass; read the samples of an evaluation instead (evaluate.py), or --samples.n 0 "
            "to silence this"
        )
    if not writers:
        return "no TensorBoard logger (text needs one); --samples.n 0 to silence this"
    if trainer.datamodule is None or not hasattr(trainer.datamodule, "data_source"):
        return "the data module is not medsft's SFTDataModule"
    return None


def choose_prompts(datamodule: Any, n: int, seed: int, pool: int) -> list[dict[str, Any]]:
    """`n` validation examples drawn with `seed` from the first `pool` of the validation split
    whose prompt fits `data.max_length`, in source order; fewer when the split has fewer.

    Args:
        datamodule: the run's SFTDataModule (its validation source or fraction, tokenizer and
            chat settings).
        n: how many.
        seed: the draw's seed.
        pool: examples read at most.
    """
    from medsft.data.schema import in_validation, iter_conversations
    from medsft.model.generate import encode_prompt

    dm = datamodule
    if not dm.has_validation:
        return []
    separate = dm.val_source is not None
    found: list[dict[str, Any]] = []
    for conversation in iter_conversations(dm.data_source("val")):
        if not separate and not in_validation(conversation.key, dm.val_fraction):
            continue
        messages = conversation.messages
        answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if not answers:
            continue
        last = answers[-1]
        prompt = messages[:last]
        ids = encode_prompt(dm.tokenizer, prompt, enable_thinking=dm.enable_thinking)
        if len(ids) > dm.max_length:
            continue  # too long to have been validated on whole; and costly to answer
        found.append(
            {
                "messages": prompt,
                "reference": messages[last]["content"],
                "where": conversation.row.where,
                "ids": ids,
            }
        )
        if len(found) == pool:
            break
    chosen = sorted(random.Random(seed).sample(range(len(found)), min(n, len(found))))
    return [found[i] for i in chosen]


def _quoted(text: str) -> str:
    """A markdown block quote of `text`, line by line (TensorBoard renders markdown)."""
    return "\n".join(f"> {line}" if line.strip() else ">" for line in text.strip().splitlines())


def sample_markdown(prompt: dict[str, Any], completion: Any, step: int) -> str:
    """One sample as TensorBoard's text plugin shows it: the step, the prompt (its last user
    message, with how many turns came before), the reference and the greedy answer."""
    messages = prompt["messages"]
    question = messages[-1]["content"]
    earlier = len(messages) - 1
    ending = "hit max_new_tokens" if completion.finish_reason == "length" else "ended its turn"
    parts = [
        f"**step {step}** · {prompt['where']}"
        + (f" · {earlier} earlier message(s)" if earlier else ""),
        "**Prompt**",
        _quoted(question),
        "**Reference**",
        _quoted(prompt["reference"]),
        f"**Answer** (greedy; {completion.new_tokens} new tokens, {ending})",
        _quoted(completion.answer) if completion.answer.strip() else "*(empty answer)*",
    ]
    if completion.think:
        parts += ["**Thinking**", _quoted(completion.think)]
    return "\n\n".join(parts)
