"""Step time, throughput, memory and MFU of exactly what train.py runs, at real Qwen3 shapes.

    python benchmarks/train_bench.py                                      # demo.yaml, random:tiny, CPU
    python benchmarks/train_bench.py --config configs/qlora.yaml --preset Qwen3-4B
    python benchmarks/train_bench.py --config configs/lora.yaml --preset Qwen3-4B
    python benchmarks/train_bench.py --config configs/full.yaml --preset Qwen3-0.6B --devices 1
    python benchmarks/train_bench.py --config configs/qlora.yaml --preset Qwen3-0.6B --cpu \
        --batch-size 1 --seq-len 256 --steps 2 --warmup 1 --peft-kbit-upcast   # the old QLoRA setup

train.py's own `main()` with the config's module, data module, precision and optimizer, the
model swapped for a `random:<preset>` with the exact shapes (no download), on synthetic rows
whose rendered length is exactly `--seq-len` tokens, half of them supervised. A callback times
the steps after `--warmup`, and measures:
- activation memory: bytes saved for backward per token in one step, each storage once and the
  weights themselves left out (device independent; what checkpointing and dtypes change);
- peak memory: CUDA peak allocated on GPU, peak RSS of the process on CPU;
- MFU on a GPU in the table of medsft.model.flops.
`--peft-kbit-upcast` reproduces peft's prepare_model_for_kbit_training (fp32 embeddings, head and
norms), which medsft no longer calls, for the before/after comparison.
Writes benchmarks/results/train_<config>_<preset>[_<tag>].json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from record import write_result  # noqa: E402

from medsft.cli.train import main as train_main  # noqa: E402
from medsft.model.flops import mfu  # noqa: E402


def synthetic_rows(path: Path, n: int, seq_len: int, mixed: bool = False) -> None:
    """Rows that render to more than `seq_len` tokens; truncation makes every example exactly
    `seq_len` long with the answer supervised from about half-way. `mixed`: examples of 1/16 to
    1/2 of `seq_len` instead, so packing puts several in a row (as real data does)."""
    rng = random.Random(0)
    common = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质"
    q, a = seq_len // 2, seq_len

    def text(k):
        return "".join(rng.choice(common) for _ in range(k))

    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            if mixed:
                k = rng.randint(seq_len // 16, seq_len // 2)
                q, a = k // 3, k - k // 3
            f.write(json.dumps({"id": str(i), "question": text(q), "answer": text(a)}) + "\n")


class StepMeter(Callback):
    """Times optimizer steps after warmup; saved-activation bytes of one step; peak memory."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.steps, self.tokens, self.supervised = warmup, None, 0, 0, 0
        self.pairs, self.saved_bytes, self.saved_tokens, self.hooks = 0, 0, 0, None

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.start is None:
            self._sync()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            self.start = time.perf_counter()
        if trainer.global_step == self.warmup - 1 and self.hooks is None:  # one step, measured
            # Each storage once, weights excluded (a frozen weight saved for backward is no
            # activation); a weight's autocast copy is new memory and counts.
            # FSDP2 holds parameters as DTensors: their local shard is the storage.
            seen = {
                getattr(p, "to_local", lambda p=p: p)().untyped_storage().data_ptr()
                for p in module.parameters()
            }

            def pack(t):
                storage = t.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    self.saved_bytes += storage.nbytes()
                return t

            self.hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
            self.hooks.__enter__()
            self.saved_tokens = int(batch["attention_mask"].sum())
        if self.start is not None:
            self.tokens += int(batch["attention_mask"].sum())
            self.supervised += int(batch["targets"].numel())
            self.pairs += int(batch["attention_pairs"])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.hooks is not None and self.saved_tokens and self.start is None:
            self.hooks.__exit__(None, None, None)
            self.saved_tokens = -self.saved_tokens  # closed; keep the count
        if self.start is not None:
            self.steps += 1

    def result(self, module) -> dict:
        self._sync()
        elapsed = time.perf_counter() - self.start
        out = {
            "steps_timed": self.steps,
            "step_ms": 1000 * elapsed / self.steps,
            "tokens_per_s": self.tokens / elapsed,
            "supervised_tokens_per_s": self.supervised / elapsed,
            "saved_activation_kib_per_token": self.saved_bytes / abs(self.saved_tokens) / 1024,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        }
        if torch.cuda.is_available():
            out["cuda_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            flops = module.throughput.flops.step_flops(self.tokens, self.supervised, self.pairs)
            out["mfu"] = mfu(flops, elapsed, torch.cuda.get_device_name())
            out["model_tflops_per_s"] = flops / elapsed / 1e12
        return out


def upcast_like_peft() -> None:
    """Make build_model do what peft.prepare_model_for_kbit_training did (for comparison)."""
    import medsft.model.build as model_module

    original = model_module.load_base_model

    def load_and_upcast(*args, **kwargs):
        model = original(*args, **kwargs)
        for p in model.parameters():
            if p.dtype in (torch.float16, torch.bfloat16) and type(p).__name__ != "Params4bit":
                p.data = p.data.float()
        return model

    model_module.load_base_model = load_and_upcast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--preset", default="tiny", help="tiny, Qwen3-0.6B, Qwen3-4B, ...")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--cpu", action="store_true", help="run a GPU config on the CPU")
    parser.add_argument("--dtype", default=None, help="model.dtype override (e.g. bfloat16)")
    parser.add_argument("--peft-kbit-upcast", action="store_true")
    parser.add_argument("--tag", default="")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument(
        "--mixed-lengths",
        action="store_true",
        help="examples of seq_len/16 to seq_len/2 tokens, packed several to a row",
    )
    parser.add_argument("--out", type=Path, help="write the results here (default: results/)")
    # Any other option is a train.py override, e.g. --model.lora.r=64
    args, extra = parser.parse_known_args()
    if args.peft_kbit_upcast:
        upcast_like_peft()
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    rows = work / "rows.jsonl"

    n_rows = 64 * (args.batch_size or 8) * (6 if args.mixed_lengths else 1)
    synthetic_rows(rows, n_rows, args.seq_len, mixed=args.mixed_lengths)
    steps = args.warmup + args.steps
    overrides = [
        "--config",
        str(ROOT / args.config),
        "--model.name_or_path",
        f"random:{args.preset}",
        "--model.tokenizer",
        "qwen3",
        "--data.source",
        str(rows),
        "--data.val_fraction",
        "0",
        "--data.num_workers",
        "1",
        "--data.max_length",
        str(args.seq_len),
        "--data.shuffle_buffer",
        "1",
        "--trainer.max_steps",
        str(steps),
        "--trainer.accumulate_grad_batches",
        "1",
        "--trainer.val_check_interval",
        "null",
        "--trainer.check_val_every_n_epoch",
        "null",
        "--trainer.limit_val_batches",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.devices",
        str(args.devices),
        "--trainer.log_every_n_steps",
        "1000",
        "--trainer.logger.init_args.save_dir",
        str(work),
        "--checkpoint.save_last",
        "false",
        "--checkpoint.every_n_train_steps",
        "0",
        "--model.optimizer.warmup_steps",
        "0",
    ]
    if args.batch_size:
        overrides += ["--data.batch_size", str(args.batch_size)]
    if args.cpu:
        overrides += ["--trainer.accelerator", "cpu", "--model.optimizer.name", "adamw"]
        if "32" not in str(args.dtype):
            overrides += ["--trainer.precision", "bf16-mixed"]
    if args.dtype:
        overrides += ["--model.dtype", args.dtype]
    meter = StepMeter(args.warmup)
    sys.argv = sys.argv[:1]  # LightningCLI reads the overrides, not this script's options
    start = time.perf_counter()
    cli = train_main(overrides + extra, callbacks=[meter])
    figures = meter.result(cli.model)
    figures["wall_s"] = time.perf_counter() - start
    figures["batch_size"] = cli.datamodule.batch_size
    figures["seq_len"] = args.seq_len
    figures["precision"] = str(cli.trainer.precision)
    figures["peft_kbit_upcast"] = args.peft_kbit_upcast
    print(json.dumps(figures, indent=2))
    if not args.no_save and cli.trainer.is_global_zero:
        name = f"train_{Path(args.config).stem}_{args.preset}" + (
            f"_{args.tag}" if args.tag else ""
        )
        write_result(name, figures, args={**vars(args), "train_overrides": extra}, out=args.out)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
