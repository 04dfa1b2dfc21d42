"""Helpers shared by several test modules (test modules never import from each other)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]

QUESTIONS = [
    "感冒了怎么办？",
    "高血压患者平时饮食需要注意什么？请从盐、油、酒三个方面详细说明。",
    "布洛芬和对乙酰氨基酚有什么区别，孩子发烧三十九度应该先用哪一种，间隔多久可以再吃？",
    "失眠",
]


SAMPLED = {  # sampling settings an endpoint request asks for, some outside the OpenAI API
    "max_tokens": 64,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "do_sample": True,
    "repetition_penalty": 1.1,
    "enable_thinking": False,
}


def scalars(run_dir: str | Path, tag: str) -> list[float]:
    """The values TensorBoard logged under `tag` in a run directory, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


def texts(run_dir: str | Path, prefix: str = "samples/") -> dict[str, list[tuple[int, str]]]:
    """Text logged to TensorBoard in a run folder under `prefix`: {tag: [(step, text), ...]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return {
        tag: [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
        if tag.startswith(prefix)
    }


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The decoder layers of a transformers causal LM, through a PEFT wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(base.get_decoder().layers)


def tiny_model(*, tie: bool = True, seed: int = 0) -> Any:
    """A tiny Qwen3 whose greedy outputs differ from question to question.

    The `random:tiny` preset's default init (std 0.02, tied embeddings) answers everything with
    a run of "\\n\\n", which would make a batched-vs-single comparison vacuous; std 0.3 does not.
    """
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from medsft.model.build import PRESETS

    shape = {**PRESETS["tiny"], "tie_word_embeddings": tie}
    torch.manual_seed(seed)
    config = Qwen3Config(**shape, initializer_range=0.3, eos_token_id=151645, pad_token_id=151643)
    return Qwen3ForCausalLM(config).eval()


def prompts(tokenizer: Any, questions: list[str] = QUESTIONS, **kwargs: Any) -> list[list[int]]:
    """Chat-template prompt ids of single-turn `questions`."""
    from medsft.model.generate import encode_prompt

    return [encode_prompt(tokenizer, [{"role": "user", "content": q}], **kwargs) for q in questions]


def sample_run(distinct_orders: list[int], out_dir: Path = ROOT) -> Any:
    """The evaluation of two answer files ('short', and the baseline 'long' ~10x longer) over six
    sample questions, scored, the judge skipped (a medsft.evaluation.report.Evaluation)."""
    from medsft.evaluation import DataSpec, EvalConfig, ScoringSettings, load_examples
    from medsft.evaluation.report import Evaluation
    from medsft.evaluation.run import score
    from medsft.evaluation.sections.overview import examples_shown
    from medsft.evaluation.systems import SystemOutput

    examples = load_examples(DataSpec(source=str(ROOT / "data/sample/test_zh_med.json"), limit=6))
    refs = [ex.reference for ex in examples]
    outputs = [
        SystemOutput("short", "answers", "a.json", [r[:20] for r in refs], [None] * 6),
        SystemOutput("long", "answers", "b.json", [r + r[:30] for r in refs], [None] * 6),
    ]
    scoring = ScoringSettings(
        n_resamples=50, distinct_orders=distinct_orders, paired=False, examples=2
    )
    config = EvalConfig(scoring=scoring, baseline="long", output_dir=str(out_dir))
    report = score(outputs, examples, None, config)
    report["judge"] = {"status": "skipped", "baseline": "long", "reason": "no endpoint"}
    run = Evaluation(config, examples, outputs, None, [], out_dir, report)
    report.update(training={}, examples=examples_shown(run))
    return run


def sample_report(distinct_orders: list[int]) -> dict:
    """`sample_run`'s report.json content."""
    return sample_run(distinct_orders).report


SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "equal"}


class HostSyncCounter(TorchDispatchMode):
    """Ops that make the host wait for the device, attributed to medsft (`ours`, as
    "file.py:line") or to a library."""

    def __init__(self):
        super().__init__()
        self.ours: list[str] = []
        self.library: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        bool_index = name == "index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or [])
        )
        if name in SYNC_OPS or bool_index:
            frames = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename]
            caller = frames[-1]
            where = f"{Path(caller.filename).name}:{caller.lineno}"
            (self.ours if f"{ROOT}/medsft/" in caller.filename else self.library).append(where)
        return func(*args, **(kwargs or {}))


TRAIN_CONFIGS = sorted(
    p for p in glob.glob(str(ROOT / "configs/*.yaml")) if "eval" not in Path(p).name
)


def four_rows(tmp_path):
    path = tmp_path / "four.jsonl"
    with open(ROOT / "data/sample/huatuo_sample.jsonl", encoding="utf-8") as f:
        path.write_text("".join(f.readline() for _ in range(4)), encoding="utf-8")
    return str(path)


def train(tmp_path, *args, name="run", callbacks=()):
    """Train on one repeated batch of 4 rows, so the loss must fall step after step
    (`callbacks` observe or stop the run)."""
    from medsft.cli.train import main

    return main(
        [
            "--config",
            str(ROOT / "configs/demo.yaml"),
            "--data.source",
            four_rows(tmp_path),
            "--data.val_fraction",
            "0",
            "--data.batch_size",
            "4",
            "--data.shuffle_buffer",
            "1",
            "--trainer.max_steps",
            "6",
            "--trainer.log_every_n_steps",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.val_check_interval",
            "null",
            "--trainer.check_val_every_n_epoch",
            "1",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.logger.init_args.name",
            name,
            *args,
        ],
        callbacks=callbacks,
    )


def train_process(tmp_path, name, *args) -> subprocess.CompletedProcess:
    """train.py in a subprocess on the demo config, logging into `tmp_path/name`; its result."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "--config",
            str(ROOT / "configs/demo.yaml"),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.logger.init_args.name",
            name,
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_train(tmp_path, name, *args):
    """train.py in a subprocess on the demo config; asserts it succeeded; the run folder."""
    result = train_process(tmp_path, name, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / name / "version_0"
    (run / "stderr.txt").write_text(result.stderr, encoding="utf-8")  # what the run printed
    return run


def train_py(tmp_path, capsys, *args):
    """train.py's entry point (`cli_main`, what the script calls), in this process, on the demo
    config: (exit status, what it printed to stderr)."""
    from medsft.cli.train import cli_main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        cli_main(
            [
                "--config",
                str(ROOT / "configs/demo.yaml"),
                "--trainer.logger.init_args.save_dir",
                str(tmp_path),
                "--data.val_fraction",
                "0",
                "--trainer.enable_progress_bar",
                "false",
                *args,
            ]
        )
    return done.value.code, capsys.readouterr().err
