"""medsft's training path against TRL's SFTTrainer on the same work, side by side.

    pip install -e ".[bench]"                                     # TRL: for this benchmark only
    OMP_NUM_THREADS=1 python benchmarks/vs_trl.py                 # random:tiny, batch 4 x 512
    OMP_NUM_THREADS=1 python benchmarks/vs_trl.py --packing       # both sides padding-free
    OMP_NUM_THREADS=1 python benchmarks/vs_trl.py --sides medsft:padding_free,medsft:rows,medsft
    python benchmarks/vs_trl.py --preset Qwen3-0.6B --batch-size 2 --max-length 256 --steps 6

The same work on both sides: a `random:<preset>` Qwen3 (exact shapes, random weights, same seed),
the real Qwen3 tokenizer, the same rows (the 500 real Huatuo26M-Lite rows of ../shared/data when
present, else data/sample/huatuo_sample.jsonl, or `--data FILE` with question/answer fields),
LoRA of the same rank, alpha and dropout on every linear projection, AdamW at the same learning
rate, the same batch size and max length, fp32 (CPU) or bf16 (GPU), loss on the answer only.

- medsft: what train.py runs: SFTModule + SFTDataModule driven by a Lightning Trainer.
- TRL: SFTTrainer on prompt-completion conversations with `completion_only_loss=True` and
  gradient checkpointing off (TRL turns it on by default; medsft's configs leave it off).
  `--packing` gives TRL `packing=True, padding_free=True` (best-fit decreasing rows, a batch's
  rows end to end in one) and medsft `data.packing: padding_free` (the same: one best-fit row of
  up to batch x max_length tokens per micro-batch).
- `--sides` names the runs to alternate: `trl`, `medsft` (unpacked, or as `--packing` says) and
  `medsft:<data.packing>` (`rows`, `padding_free`), e.g. medsft's own packing modes side by side.

Each side trains in its own process (clean peak memory), alternately, for `--rounds` rounds.
A step's time is the interval between the ends of consecutive optimizer steps (data loading
included on both sides); the first `--warmup` steps are left out. Tokens are the non-padding
tokens of each batch, supervised tokens those with a label. Peak memory is the process's peak RSS
on CPU (model build included) and the CUDA allocator's peak on a GPU. Medians over rounds,
ratios (medsft / TRL, or to the last side) last. Writes
benchmarks/results/vs_trl_<preset>[_packing].json, or packing_modes_<preset>.json for `--sides`
without trl.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from record import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_ROWS = ROOT.parent / "shared/data/huatuo26m_lite/huatuo26m_lite_qa500.enddonkey.jsonl"
SAMPLE_ROWS = ROOT / "data/sample/huatuo_sample.jsonl"
IGNORE_INDEX = -100


class StepLog:
    """Per optimizer step: end time, non-padding tokens and supervised tokens of its batch."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.tokens: list[int] = []
        self.supervised: list[int] = []
        self._pending = (0, 0)

    def batch(self, batch: dict[str, Any]) -> None:
        labels = batch["labels"]
        mask = batch.get("attention_mask")
        tokens = int(mask.sum()) if mask is not None else labels.numel()  # padding-free: no pads
        self._pending = (tokens, int((labels[..., 1:] != IGNORE_INDEX).sum()))

    def step_end(self) -> None:
        self.ends.append(time.perf_counter())
        self.tokens.append(self._pending[0])
        self.supervised.append(self._pending[1])

    def figures(self, warmup: int) -> dict[str, Any]:
        """Steady state: the steps after the first `warmup`, timed from the end of the last one."""
        if len(self.ends) <= warmup + 1:
            raise RuntimeError(f"only {len(self.ends)} steps ran; need more than warmup + 1")
        seconds = self.ends[-1] - self.ends[warmup]
        intervals = [
            b - a for a, b in zip(self.ends[warmup:-1], self.ends[warmup + 1 :], strict=True)
        ]
        tokens, supervised = sum(self.tokens[warmup + 1 :]), sum(self.supervised[warmup + 1 :])
        return {
            "steps_timed": len(intervals),
            "step_s_median": statistics.median(intervals),
            "tokens_per_s": tokens / seconds,
            "supervised_tokens_per_s": supervised / seconds,
            "tokens_per_step": tokens / len(intervals),
            "supervised_per_step": supervised / len(intervals),
        }


def peak_memory_mib() -> dict[str, float]:
    import torch

    if torch.cuda.is_available():
        return {"cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20}
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_medsft(args: argparse.Namespace, log: StepLog) -> None:
    import lightning as L
    import torch

    from medsft.data import SFTDataModule
    from medsft.model.build import LoraSettings
    from medsft.training.module import SFTModule
    from medsft.training.optim import OptimizerSettings

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            log.batch(batch)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            log.step_end()

    data_args: dict[str, Any] = dict(
        source=str(args.data),
        tokenizer="qwen3",
        preset="huatuo",
        val_fraction=0.0,
        max_length=args.max_length,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    mode = args.side.partition(":")[2] or ("padding_free" if args.packing else "")
    if mode:
        if "position_ids" not in inspect.getsource(SFTModule.step):
            sys.exit(
                "--packing: this medsft's SFTModule.step does not pass a packed batch's "
                "position_ids to the model, so packed examples would attend to each other"
            )
        data_args["packing"] = mode
    L.seed_everything(args.seed)
    module = SFTModule(
        f"random:{args.preset}",
        tokenizer="qwen3",
        finetune="lora",
        lora=LoraSettings(r=args.lora_r, alpha=2 * args.lora_r, dropout=0.05),
        optimizer=OptimizerSettings(lr=args.lr, schedule="constant"),
    )
    gpu = torch.cuda.is_available()
    trainer = L.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision="bf16-true" if gpu else "32-true",
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[Timer()],
    )
    trainer.fit(module, datamodule=SFTDataModule(**data_args))


def run_trl(args: argparse.Namespace, log: StepLog) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from medsft.model.build import QWEN3_LINEAR, load_tokenizer, random_qwen3

    class Counted(SFTTrainer):
        def training_step(self, model, inputs, *rest, **kwargs):
            log.batch(inputs)
            return super().training_step(model, inputs, *rest, **kwargs)

    class Timer(TrainerCallback):
        def on_step_end(self, *_args, **_kwargs) -> None:
            log.step_end()

    rows = [json.loads(line) for line in args.data.read_text("utf-8").splitlines() if line.strip()]
    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": row["question"]}],
                "completion": [{"role": "assistant", "content": row["answer"]}],
                # medsft renders with enable_thinking=False too (empty think block in the prompt).
                "chat_template_kwargs": {"enable_thinking": False},
            }
            for row in rows
        ]
    )
    gpu = torch.cuda.is_available()
    model = random_qwen3(
        args.preset, seed=args.seed, dtype=torch.bfloat16 if gpu else torch.float32
    )
    config = SFTConfig(
        output_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "vs_trl"),
        report_to="none",
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_length=args.max_length,
        completion_only_loss=True,
        packing=args.packing,
        padding_free=args.packing,
        gradient_checkpointing=False,
        bf16=gpu,
        use_cpu=not gpu,
        save_strategy="no",
        logging_steps=10_000,
        seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        lora_dropout=0.05,
        target_modules=list(QWEN3_LINEAR),
        task_type="CAUSAL_LM",
    )
    trainer = Counted(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=load_tokenizer("qwen3"),
        peft_config=lora,
        callbacks=[Timer()],
    )
    trainer.train()


def child(args: argparse.Namespace) -> None:
    log = StepLog()
    (run_trl if args.side == "trl" else run_medsft)(args, log)
    print(json.dumps({**log.figures(args.warmup), **peak_memory_mib()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="random:<preset> model shape")
    parser.add_argument(
        "--data", type=Path, default=SHARED_ROWS if SHARED_ROWS.is_file() else SAMPLE_ROWS
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lora-r", type=int, default=16, help="rank; alpha = 2 r, dropout 0.05")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round and side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--packing", action="store_true", help="pack on both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sides",
        default="medsft,trl",
        help="comma-separated runs: trl, medsft, medsft:rows, medsft:padding_free",
    )
    parser.add_argument("--out", type=Path, help="write the results here (default: results/)")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return
    sides = args.sides.split(",")
    bad = [s for s in sides if s not in ("trl", "medsft", "medsft:rows", "medsft:padding_free")]
    if bad or len(sides) < 2 or len(set(sides)) < len(sides):
        sys.exit(
            f"--sides: two or more of trl, medsft, medsft:rows, medsft:padding_free; got {bad}"
        )
    if "trl" in sides:
        try:
            import trl  # noqa: F401
        except ImportError:
            sys.exit('TRL is not installed: pip install -e ".[bench]"')
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for round_ in range(args.rounds):
        for side in runs:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--side", side]
            load = os.getloadavg()[0]  # other work on a shared machine slows either side
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{side} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs[side].append({**result, "load_average_1min_before": round(load, 2)})
            print(f"round {round_ + 1} {side}: {runs[side][-1]}", flush=True)
        # Written after every round: a run stopped early still leaves its finished rounds.
        record(args, sides, runs, final=round_ + 1 == args.rounds)


def record(
    args: argparse.Namespace, sides: list[str], runs: dict[str, list[dict[str, Any]]], final: bool
) -> None:
    """Medians over the rounds so far, ratios to TRL (or the last side); printed when final."""
    summary = {
        side: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for side, results in runs.items()
    }
    reference = "trl" if "trl" in runs else sides[-1]
    memory = "cuda_peak_mib" if "cuda_peak_mib" in summary[reference] else "peak_rss_mib"
    keys = ("tokens_per_s", "supervised_tokens_per_s", "step_s_median", memory)
    ratios = {
        side: {key: summary[side][key] / summary[reference][key] for key in keys}
        for side in sides
        if side != reference
    }
    if final:
        print(f"\nmedian of {args.rounds} rounds; ratio: over {reference}")
        print(f"{'':<24}" + "".join(f"{side:>22}" for side in sides))
        for key in keys:
            cells = "".join(
                f"{summary[side][key]:>14.2f}"
                + (f" ({ratios[side][key]:.2f}x)" if side in ratios else " " * 8)
                for side in sides
            )
            print(f"{key:<24}{cells}")
    if reference == "trl":
        name = f"vs_trl_{args.preset}" + ("_packing" if args.packing else "")
    else:
        name = f"packing_modes_{args.preset}"
    figures = {"rows": str(args.data), "sides": sides, "rounds_done": len(runs[reference])}
    figures |= {**summary, f"ratios_over_{reference}": ratios, "rounds": runs}
    write_result(
        name,
        figures,
        args={k: str(v) for k, v in vars(args).items() if k not in ("side", "out")},
        out=args.out,
    )


if __name__ == "__main__":
    main()
