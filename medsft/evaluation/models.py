"""Model systems (base models, training runs, exports): answers and reference perplexities, cached.

`generations/<system>.jsonl` holds one answer per question and `generations/<system>.ppl.jsonl`
the perplexity of each set, both keyed (medsft.cache) by a digest of the weights' fingerprint and
dtype, the settings and the exact inputs: a changed model, config or question redoes just what
changed. With several ranks, every rank loads the model, generates its share and computes its share
of the perplexities; rank 0 alone writes files and returns the output.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medsft.cache import JsonlStore, digest
from medsft.evaluation.config import EvalConfig, SystemSpec, resolve_run_dir
from medsft.evaluation.perplexity import perplexity_summary, shared_perplexity, world
from medsft.evaluation.systems import SystemOutput, hub_commits, model_fingerprint
from medsft.evaluation.testset import Example
from medsft.model.build import resolve_dtype, resolve_trained
from medsft.model.generate import encode_prompt, prompt_seed
from medsft.ranks import is_global_zero

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class ModelSource:
    """Where a model system's weights and tokenizer come from."""

    spec: SystemSpec
    kind: str
    weights: str
    """What is loaded: the run's adapter/ or model/, a hub id, a directory, a preset."""
    source: str
    """Shown in the report (the run directory that `latest` picked)."""
    run_dir: Path | None
    tokenizer: Any
    dtype: str
    """The dtype the weights load in (`auto` differs between a GPU and a CPU machine)."""

    @classmethod
    def resolve(cls, spec: SystemSpec, kind: str) -> ModelSource:
        from medsft.model.build import load_tokenizer, tokenizer_source

        dtype = str(resolve_dtype(spec.dtype)).removeprefix("torch.")
        if kind == "run":
            run_dir = resolve_run_dir(spec.path)
            weights = str(resolve_trained(run_dir))
            tokenizer = load_tokenizer(tokenizer_source(weights))
            return cls(spec, kind, weights, str(run_dir), run_dir, tokenizer, dtype)
        tokenizer = load_tokenizer(spec.tokenizer or spec.path)
        return cls(spec, kind, spec.path, spec.path, None, tokenizer, dtype)

    def load(self) -> Any:
        from medsft.model.build import load_base_model, load_trained

        log.info("%s: loading %s", self.spec.name, self.source)
        if self.run_dir is not None:
            return load_trained(self.run_dir, dtype=self.spec.dtype)[0]
        return load_base_model(self.spec.path, dtype=self.spec.dtype).eval()


class SharedModel:
    """A model system's weights, loaded on first use and shared by everything a run computes
    with them (test-set answers, perplexities, MCQ), then released once: one load per system."""

    def __init__(self, src: ModelSource) -> None:
        self.src = src
        self.loads = 0
        """How often the weights were loaded (0 when every result came from the caches)."""
        self._model: Any = None

    def get(self) -> Any:
        """The model, loaded now if this is its first use."""
        if self._model is None:
            self._model = self.src.load()
            self.loads += 1
        return self._model

    def release(self) -> None:
        """Drop the model and free its memory (a later `get` would load it again)."""
        if self._model is not None:
            self._model = None
            _release_memory()


@dataclass
class Plan:
    """The cache keys of this system's answers and perplexities, and what is not saved yet."""

    fingerprint: dict[str, Any]
    keys: list[str]
    ppl_keys: dict[str, str]
    todo: list[int]
    ppl_todo: list[str]


class ModelSystem:
    """One model system's inputs, caches and plan (see the module docstring)."""

    def __init__(
        self,
        src: ModelSource,
        examples: list[Example],
        val: list[Example] | None,
        config: EvalConfig,
        out_dir: Path,
        *,
        model: SharedModel | None = None,
        what: str = "test set",
    ) -> None:
        self.src, self.examples, self.config = src, examples, config
        self.model = model or SharedModel(src)
        self.what = what
        """The set answered, as the log names it."""
        thinking = config.generation.enable_thinking
        self.prompts = [
            encode_prompt(src.tokenizer, ex.prompt, enable_thinking=thinking) for ex in examples
        ]
        self.sets = {"test": examples, **({"val": val} if val else {})}
        folder, name = out_dir / "generations", src.spec.name  # a name may hold dots: no suffixes
        self.answers = JsonlStore(folder / f"{name}.jsonl", "generations")
        self.ppls = JsonlStore(folder / f"{name}.ppl.jsonl", "perplexities")
        self.meta_path = folder / f"{name}.meta.json"

    def plan(self, fingerprint: dict[str, Any]) -> Plan:
        """Keys for these weights, and what the caches do not hold yet."""
        config, tokenizer = self.config, self.src.tokenizer
        model_key = {"v": CACHE_VERSION, "weights": fingerprint, "dtype": self.src.dtype}
        gen_key = [model_key, config.generation.fingerprint()]
        keys = [digest([gen_key, p]) for p in self.prompts]
        scoring = config.scoring
        ppl_keys = {
            name: digest(
                [
                    model_key,
                    tokenizer.chat_template,
                    config.generation.enable_thinking,
                    scoring.ppl_max_length,
                    scoring.n_resamples,
                    scoring.seed,
                    [ex.conversation for ex in exs],
                ]
            )
            for name, exs in self.sets.items()
        }
        # A hub model not downloaded yet has no commit: no saved answer is known to be its.
        reuse = config.reuse and None not in hub_commits(fingerprint)
        todo = [i for i, k in enumerate(keys) if not (reuse and k in self.answers)]
        ppl_todo = [
            name
            for name, k in ppl_keys.items()
            if scoring.perplexity and not (reuse and k in self.ppls)
        ]
        return Plan(fingerprint, keys, ppl_keys, todo, ppl_todo)

    def load_if_needed(self, plan: Plan) -> tuple[Any, Plan]:
        """The model, when anything is to be computed on this rank; the plan, re-keyed if the
        weights loaded are not those fingerprinted before (a hub model downloaded just now)."""
        sharing = world()[1] > 1  # every rank computes its share of the perplexities
        if not (plan.todo or (plan.ppl_todo and (sharing or is_global_zero()))):
            return None, plan
        model = self.model.get()
        if not hub_commits(plan.fingerprint):
            return model, plan
        # Identified again now that the weights are loaded: the answers must be saved under the
        # key the next run computes (before loading) for the same weights.
        loaded = model_fingerprint(self.src.weights)
        if loaded == plan.fingerprint:
            return model, plan
        if plan.todo:
            return model, self.plan(loaded)  # every rank loaded and re-keys alike
        log.warning(
            "%s: the loaded weights (%s) are not those its saved answers were generated with "
            "(%s); set reuse: false to regenerate them",
            self.src.spec.name,
            hub_commits(loaded),
            hub_commits(plan.fingerprint),
        )
        new = self.plan(loaded)
        return model, Plan(plan.fingerprint, plan.keys, new.ppl_keys, [], new.ppl_todo)

    def generate(self, model: Any, plan: Plan) -> dict[str, Any]:
        """Generate what is missing (all ranks); rank 0 saves the answers. Returns the stats."""
        from medsft.model.generate import generate

        config, name = self.config, self.src.spec.name
        if not plan.todo:
            log.info(
                "%s: %s: reusing %d saved answers from %s",
                name,
                self.what,
                len(plan.keys),
                self.answers.path,
            )
            previous = json.loads(self.meta_path.read_text()) if self.meta_path.exists() else {}
            keep = ("seconds", "new_tokens", "tokens_per_second")
            return {
                "generated": 0,
                "reused": len(plan.keys),
                "previous_run": {k: previous.get(k) for k in keep},
            }
        log.info(
            "%s: %s: generating %d of %d answers", name, self.what, len(plan.todo), len(plan.keys)
        )
        settings = config.generation
        # A sampled answer's seed comes from its own cache key (which holds settings.seed): the
        # same key gets the same answer whatever else is generated, or cached, beside it.
        seeds = [prompt_seed(settings.seed, plan.keys[i]) for i in plan.todo]
        run = generate(
            model,
            self.src.tokenizer,
            [self.prompts[i] for i in plan.todo],
            settings,
            accelerator=config.runtime.accelerator,
            devices=config.runtime.devices,
            strategy=config.runtime.strategy,
            progress=config.runtime.progress,
            seeds=seeds if settings.do_sample else None,
        )
        rows = {plan.keys[i]: self.answers.get(plan.keys[i]) for i in range(len(plan.keys))}
        for i, completion in zip(plan.todo, run.completions, strict=True):
            completion_row = {k: v for k, v in asdict(completion).items() if k != "index"}
            rows[plan.keys[i]] = {
                "key": plan.keys[i],
                "question": self.examples[i].question,
                **completion_row,
            }
        stats = {
            "generated": len(plan.todo),
            "reused": len(plan.keys) - len(plan.todo),
            "seconds": round(run.seconds, 3),
            "new_tokens": run.new_tokens,
            "tokens_per_second": round(run.tokens_per_second, 2),
            "world_size": run.world_size,
        }
        if is_global_zero():
            self.answers.rewrite({**rows[k], "index": i} for i, k in enumerate(plan.keys))
            self.meta_path.write_text(json.dumps(stats, indent=2))
        return stats

    def perplexities(self, model: Any, plan: Plan) -> dict[str, Any]:
        """Each set's perplexity, computed (shared by all ranks) or reused."""
        config = self.config
        if not config.scoring.perplexity:
            return {}
        if plan.ppl_todo and model is not None:
            model.to(_scoring_device(config.runtime.accelerator))
        for name in plan.ppl_todo if model is not None else []:
            result = shared_perplexity(
                model,
                self.src.tokenizer,
                [ex.conversation for ex in self.sets[name]],
                batch_size=config.scoring.ppl_batch_size,
                max_length=config.scoring.ppl_max_length,
                enable_thinking=config.generation.enable_thinking,
                progress=config.runtime.progress and is_global_zero(),
            )
            entry = {"key": plan.ppl_keys[name], "set": name}
            summary = perplexity_summary(result, config.scoring)
            if is_global_zero():
                self.ppls.put({**entry, **summary})
        self.ppls.close()
        found = {name: self.ppls.get(key) for name, key in plan.ppl_keys.items()}
        return {
            name: {k: v for k, v in entry.items() if k not in ("key", "set")}
            for name, entry in found.items()
            if entry is not None
        }

    def output(
        self, plan: Plan, generation: dict[str, Any], perplexity: dict[str, Any], model_loaded: bool
    ) -> SystemOutput:
        rows = [self.answers.entries[k] for k in plan.keys]
        finish = {r: sum(row["finish_reason"] == r for row in rows) for r in ("length", "stop")}
        generation.update(
            finish_reasons=finish,
            mean_new_tokens=round(sum(row["new_tokens"] for row in rows) / len(rows), 1),
            file=str(self.answers.path),
        )
        src = self.src
        return SystemOutput(
            name=src.spec.name,
            kind=src.kind,
            source=src.source,
            answers=[row["answer"] for row in rows],
            thinks=[row["think"] for row in rows],
            generation=generation,
            new_tokens=[row["new_tokens"] for row in rows],
            perplexity=perplexity,
            model_loaded=model_loaded,
            run_dir=src.run_dir if src.run_dir is not None and src.run_dir.is_dir() else None,
        )


def model_system(
    model: SharedModel,
    examples: list[Example],
    val: list[Example] | None,
    config: EvalConfig,
    out_dir: Path,
    *,
    what: str = "test set",
) -> SystemOutput | None:
    """Generate (or reuse) a model system's answers to `examples` and its reference perplexities.

    The weights are loaded (once, by `model`) only when something is not cached; the caller
    releases them when done with the system. Every rank calls this for every system; ranks other
    than 0 help and return None.
    """
    system = ModelSystem(model.src, examples, val, config, out_dir, model=model, what=what)
    plan = system.plan(model_fingerprint(system.src.weights))
    loaded, plan = system.load_if_needed(plan)
    generation = system.generate(loaded, plan)
    perplexity = system.perplexities(loaded, plan)
    if not is_global_zero():
        return None
    return system.output(plan, generation, perplexity, loaded is not None)


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _scoring_device(accelerator: str) -> str:
    import torch

    # Lightning moves the model back to the CPU when predict ends; perplexity wants this rank's
    # GPU (the one Lightning set as current).
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"
