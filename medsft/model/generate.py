"""Batched chat generation: left padding, length buckets, answers cut by token position.

    from medsft.model.generate import GenerationSettings, encode_prompt, generate
    prompts = [encode_prompt(tokenizer, [{"role": "user", "content": q}]) for q in questions]
    completions = generate(model, tokenizer, prompts, GenerationSettings(max_new_tokens=256))
    completions[0].answer, completions[0].think, completions[0].finish_reason

Prompts are rendered with the model's chat template and the generation prompt
(`add_generation_prompt=True`, the `enable_thinking` switch), and tokenized exactly as in
training (medsft.chat: the rendered string, no extra special tokens).

The answer is cut by *token position*: a row's completion is the tokens after the padded prompt
width, up to the first stop token (`<|im_end|>` or the model's eos). It is never cut by the string
length of a decoded prompt: decoding drops or rewrites special tokens, so
`decode(full)[len(decode(prompt)):]` starts at the wrong character and truncates answers
mid-sentence. A `<think>...</think>` block is split off the answer (see `split_think`).

Generation runs in Lightning's predict loop (`GenerationModule` + `Trainer.predict`): one
process on CPU or one GPU, or data-parallel over several GPUs (`devices: 4`, strategy ddp), each
rank generating its share of the length buckets; the predictions are gathered across ranks and
returned in input order on every rank.

Sampling is seeded *per prompt*: every row of a batch draws its tokens from its own
`torch.Generator`, seeded from `GenerationSettings.seed` and the prompt (its token ids, or a key
the caller passes, see `prompt_seed`). HF `generate` has one global RNG per batch, so the draw is
done by `_PerRowSampler`, a logits processor run in greedy mode: it applies temperature, top-k
and top-p, samples each row with its own generator and leaves only the drawn token, which the
greedy step then picks. A prompt's answer therefore does not depend on the batch size, on the
other prompts in its batch, or on the number of devices (up to the last-bit differences batching
can make in bf16/fp16 logits, as for greedy decoding).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from lightning import LightningModule, Trainer
from torch.utils.data import DataLoader, Dataset

from medsft.chat import END_OF_TURN, Message, split_think


@dataclass
class GenerationSettings:
    """How answers are generated."""

    max_new_tokens: int = 512
    """Longest answer, in tokens (thinking included); longer ones end with finish_reason 'length'."""
    do_sample: bool = False
    """Sample (with temperature, top_p, top_k) instead of greedy decoding."""
    temperature: float = 0.7
    """Sampling temperature (sampling only)."""
    top_p: float = 0.8
    """Nucleus sampling mass (sampling only)."""
    top_k: int = 20
    """Sample among the k likeliest tokens; 0 disables (sampling only)."""
    seed: int = 0
    """Sampling seed. Each prompt gets its own seed, derived from this one and the prompt (see
    `prompt_seed`), so its answer does not depend on batch_size, devices or the other prompts."""
    enable_thinking: bool = False
    """Qwen3's thinking switch, passed to the chat template (as in training)."""
    batch_size: int = 8
    """Prompts per generate() call, per device; prompts of similar length are batched together."""
    repetition_penalty: float = 1.0
    """>1 discourages repeats (1.0 = off)."""

    def validate(self) -> None:
        """Raise ValueError, saying what to change, on impossible settings."""
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError(
                f"generation.max_new_tokens and generation.batch_size must be >= 1, got "
                f"{self.max_new_tokens} and {self.batch_size}"
            )
        if self.do_sample and (self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0):
            raise ValueError(
                "sampling needs generation.temperature > 0, 0 < top_p <= 1 and top_k >= 0; "
                "for greedy decoding set generation.do_sample: false"
            )
        if self.repetition_penalty <= 0:
            raise ValueError("generation.repetition_penalty must be > 0 (1.0 = off)")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change what is generated (cache keys).

        batch_size is left out, greedy or sampled: left padding is exact and sampling is seeded
        per prompt, so batching changes no answer in fp32. In bf16/fp16 a batch's padding and
        shape can change the logits in their last bits, which may rarely flip a near-tie token;
        the key accepts that, as it accepts kernel differences between GPUs.
        """
        out = asdict(self)
        out.pop("batch_size")
        if self.do_sample:
            out["sampler"] = "per-prompt-seed"  # answers saved with per-bucket seeds differ
        else:
            for name in ("temperature", "top_p", "top_k", "seed"):
                out.pop(name)
        return out


@dataclass
class Completion:
    """One generated reply."""

    index: int
    """Position of the prompt in the input list."""
    text: str
    """Everything generated before the stop token (think block included), special tokens dropped."""
    think: str | None
    """The `<think>` block's content; None when the reply has none."""
    answer: str
    """The reply without its think block: what is scored and judged."""
    prompt_tokens: int
    new_tokens: int
    """Tokens generated, the stop token included."""
    finish_reason: str
    """'stop' (ended at a stop token) or 'length' (hit max_new_tokens)."""


def encode_prompt(
    tokenizer: Any, messages: Sequence[Message], *, enable_thinking: bool = False
) -> list[int]:
    """Token ids of the inference prompt for `messages` (ending with a user turn)."""
    if not messages or messages[-1]["role"] == "assistant":
        raise ValueError("the prompt must end with a user (or tool) message, not an assistant one")
    text = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
    # Rendered then encoded without extra special tokens: the same ids training saw.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_seed(seed: int, prompt: str | Sequence[int]) -> int:
    """The sampling seed of one prompt: a hash of the settings' seed and the prompt's identity.

    Args:
        seed: `GenerationSettings.seed`.
        prompt: a key naming the prompt (e.g. an evaluation cache key), or its token ids.
    """
    identity = prompt if isinstance(prompt, str) else ",".join(map(str, prompt))
    digest = hashlib.sha256(f"{seed}\0{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def stop_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """`<|im_end|>` plus the tokenizer's and the model's eos ids."""
    ids = {tokenizer.convert_tokens_to_ids(END_OF_TURN), tokenizer.eos_token_id}
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    unk = tokenizer.unk_token_id
    return sorted(i for i in ids if i is not None and i != unk)


def cut_completion(
    row: Sequence[int], prompt_width: int, stop_ids: Sequence[int]
) -> tuple[list[int], bool]:
    """The generated ids of one output row: after `prompt_width`, before the first stop token.

    Args:
        row: one row of `generate()`'s output (padded prompt, then generated tokens).
        prompt_width: the padded prompt length (the input's width), the same for every row.
        stop_ids: token ids that end a reply.

    Returns:
        (ids, stopped): the reply's ids without the stop token, and whether a stop token ended it.
    """
    generated = list(row[prompt_width:])
    stops = set(stop_ids)
    for pos, token in enumerate(generated):
        if token in stops:
            return generated[:pos], True
    return generated, False


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (so an OOM shows at once)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), padded on the left so every prompt ends at the last column."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {row} is empty")
        input_ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return input_ids, mask


def _generation_config(settings: GenerationSettings, stop_ids: list[int], pad_id: int) -> Any:
    from transformers import GenerationConfig

    # Built from scratch: a hub model's generation_config.json (e.g. Qwen3's sampling defaults)
    # must not silently turn greedy evaluation into sampling. Sampling, too, runs in greedy mode:
    # `_PerRowSampler` draws the tokens (per-prompt seeds), so HF's own warpers stay off.
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        do_sample=False,
        eos_token_id=stop_ids,
        pad_token_id=pad_id,
        repetition_penalty=settings.repetition_penalty,
    )


class _PerRowSampler:
    """Logits processor that samples each row with its own generator and keeps only that token.

    Runs after HF's processors (repetition penalty), in greedy mode: it applies temperature,
    top-k and top-p (HF's own warpers), draws one token per row from the row's generator, and
    returns scores that are -inf everywhere but there, so the greedy step picks the drawn token.
    Every row draws once per step, so a row's tokens depend only on its own logits and seed.
    """

    def __init__(self, settings: GenerationSettings, seeds: Sequence[int], device: torch.device):
        from transformers import (
            LogitsProcessorList,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.warpers = LogitsProcessorList([TemperatureLogitsWarper(settings.temperature)])
        if settings.top_k > 0:
            self.warpers.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(settings.top_p))
        self.generators = []
        for seed in seeds:
            generator = torch.Generator(device=device)
            generator.manual_seed(int(seed))
            self.generators.append(generator)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(self.warpers(input_ids, scores).float(), dim=-1)
        drawn = torch.cat(
            [
                torch.multinomial(probs[row], 1, generator=generator)
                for row, generator in enumerate(self.generators)
            ]
        )
        out = torch.full_like(scores, -math.inf)
        out.scatter_(1, drawn[:, None], 0.0)
        return out


@torch.no_grad()
def generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    settings: GenerationSettings,
    *,
    indices: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[Completion]:
    """Generate replies for one batch of prompt ids (left-padded together).

    Args:
        model: a causal LM (transformers or PEFT), already on its device.
        tokenizer: its tokenizer (pad and stop ids, decoding).
        prompts: prompt token ids, e.g. from `encode_prompt`.
        settings: generation settings.
        indices: the prompts' positions in the whole input (default 0..n-1).
        seeds: each prompt's sampling seed (sampling only); default `prompt_seed(settings.seed,
            prompt ids)`.
    """
    indices = list(range(len(prompts))) if indices is None else list(indices)
    stop_ids = stop_token_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    device = next(model.parameters()).device
    input_ids, mask = left_pad(prompts, pad_id)
    extra: dict[str, Any] = {}
    if settings.do_sample:
        from transformers import LogitsProcessorList

        if seeds is None:
            seeds = [prompt_seed(settings.seed, p) for p in prompts]
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        extra["logits_processor"] = LogitsProcessorList([_PerRowSampler(settings, seeds, device)])
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        generation_config=_generation_config(settings, stop_ids, pad_id),
        **extra,
    )
    width = input_ids.shape[1]
    out = []
    for row, (index, prompt) in enumerate(zip(indices, prompts, strict=True)):
        ids, stopped = cut_completion(output[row].tolist(), width, stop_ids)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        think, answer = split_think(text)
        out.append(
            Completion(
                index=index,
                text=text,
                think=think,
                answer=answer,
                prompt_tokens=len(prompt),
                new_tokens=len(ids) + stopped,
                finish_reason="stop" if stopped else "length",
            )
        )
    return out


class _Buckets(Dataset):
    """Each item is one ready batch (a length bucket), so samplers shard whole buckets."""

    def __init__(
        self, prompts: Sequence[Sequence[int]], batch_size: int, seeds: Sequence[int] | None
    ):
        self.prompts, self.seeds = prompts, seeds
        self.buckets = length_buckets([len(p) for p in prompts], batch_size)

    def __len__(self) -> int:
        return len(self.buckets)

    def __getitem__(self, i: int) -> dict[str, Any]:
        indices = self.buckets[i]
        seeds = None if self.seeds is None else [self.seeds[j] for j in indices]
        return {
            "bucket": i,
            "indices": indices,
            "prompts": [self.prompts[j] for j in indices],
            "seeds": seeds,
        }


def _as_is(item: Any) -> Any:
    return item


class GenerationModule(LightningModule):
    """Wraps a model for `Trainer.predict`: each predict step generates one length bucket."""

    def __init__(
        self, model: Any, tokenizer: Any, settings: GenerationSettings, *, progress: bool = True
    ):
        super().__init__()
        self.model, self.tokenizer, self.settings, self.progress = (
            model,
            tokenizer,
            settings,
            progress,
        )
        self._bar: Any = None
        self._tokens = 0
        self._start = 0.0

    def on_predict_start(self) -> None:
        from tqdm.auto import tqdm

        self.model.eval()
        loader = self.trainer.predict_dataloaders
        # This rank's share: the buckets its (possibly distributed) sampler hands out.
        total = sum(len(loader.dataset.buckets[i]) for i in loader.sampler)
        shown = self.progress and self.trainer.is_global_zero
        desc = "generate" + (" (rank 0)" if self.trainer.world_size > 1 else "")
        self._bar = tqdm(total=total, desc=desc, unit="ans", disable=not shown, dynamic_ncols=True)
        self._tokens, self._start = 0, time.perf_counter()

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> list[Completion]:
        completions = generate_batch(
            self.model,
            self.tokenizer,
            batch["prompts"],
            self.settings,
            indices=batch["indices"],
            seeds=batch["seeds"],
        )
        self._tokens += sum(c.new_tokens for c in completions)
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        self._bar.set_postfix(tok_s=f"{self._tokens / elapsed:.1f}", refresh=False)
        self._bar.update(len(completions))
        return completions

    def on_predict_end(self) -> None:
        if self._bar is not None:
            self._bar.close()


@dataclass
class GenerationRun:
    """Completions in input order, with throughput."""

    completions: list[Completion]
    seconds: float
    new_tokens: int
    world_size: int

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of wall time, over all devices."""
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    settings: GenerationSettings,
    *,
    accelerator: str = "auto",
    devices: int | str = 1,
    strategy: str = "auto",
    progress: bool = True,
    seeds: Sequence[int] | None = None,
) -> GenerationRun:
    """Generate a reply to every prompt with `Trainer.predict`, data-parallel over `devices`.

    Every rank returns the same, complete list of completions in input order.

    Args:
        model: a causal LM (transformers or PEFT); Lightning moves it to each rank's device.
        tokenizer: its tokenizer.
        prompts: prompt token ids (see `encode_prompt`).
        settings: generation settings.
        accelerator: Lightning accelerator (`auto`, `cpu`, `gpu`).
        devices: devices per node (`auto` = all), as for Trainer.
        strategy: Lightning strategy; `auto` picks ddp for several devices.
        progress: show a progress bar with tokens per second (rank 0).
        seeds: each prompt's sampling seed (sampling only; e.g. `prompt_seed(settings.seed,
            cache key)`); default `prompt_seed(settings.seed, prompt ids)`.
    """
    settings.validate()
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    if not prompts:
        return GenerationRun([], 0.0, 0, 1)
    buckets = _Buckets(prompts, settings.batch_size, seeds)
    loader = DataLoader(buckets, batch_size=None, collate_fn=_as_is)
    trainer = Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=True,
    )
    module = GenerationModule(model, tokenizer, settings, progress=progress)
    start = time.perf_counter()
    local = trainer.predict(module, dataloaders=loader, return_predictions=True) or []
    completions = [c for batch in local for c in batch]
    if trainer.world_size > 1:
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, completions)
        completions = [c for part in gathered for c in part]
    seconds = time.perf_counter() - start
    # Samplers may repeat a bucket to even out ranks: keep one completion per prompt.
    by_index = {c.index: c for c in completions}
    missing = sorted(set(range(len(prompts))) - set(by_index))
    if missing:
        raise RuntimeError(f"generation lost prompts {missing[:10]} across ranks")
    ordered = [by_index[i] for i in range(len(prompts))]
    new_tokens = sum(c.new_tokens for c in ordered)
    return GenerationRun(ordered, seconds, new_tokens, trainer.world_size)
