"""Supervised fine-tuning of Qwen3 (QLoRA, LoRA or full) with PyTorch Lightning.

    python train.py --config configs/demo.yaml                       # offline, CPU, < 1 minute
    python train.py --config configs/qlora.yaml --trainer.devices 4  # Qwen3-4B on Huatuo26M-Lite
    python train.py --config configs/lora.yaml --model.lora.r 32 --data.batch_size 8
    python train.py --config configs/qlora.yaml --ckpt_path last     # resume the latest run
    python train.py --config configs/demo.yaml --print_config        # the resolved config

Each run writes logs/<name>/version_N/: config.yaml (resolved; a resume adds
config.resume-K.yaml), TensorBoard events (`tensorboard --logdir logs`), checkpoints/, and
adapter/ (PEFT) or model/ (full fine-tuning); `--export true` also writes merged/.

SIGTERM or Ctrl-C saves a checkpoint at the current step and exits 128 + the signal number;
under SLURM, SIGUSR1 also requeues (docs/slurm/train.sbatch). Errors print one `error:` line;
MEDSFT_DEBUG=1 or --debug shows the traceback. The code: medsft/cli/train.py.
"""

from medsft.cli.train import cli_main

if __name__ == "__main__":
    cli_main()
