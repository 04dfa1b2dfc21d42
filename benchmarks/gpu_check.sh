#!/usr/bin/env bash
# One-shot GPU check (benchmarks/gpu_check.py): run from the project root on a machine with one
# CUDA GPU. Wheels the GPU image lacks (bitsandbytes, trl, datasets, jsonargparse, the bundled
# tokenizer, ...) are installed from .whl/ when it is there: prepare it beforehand with
#   bash ../shared/tools/device-wheels.sh
# Arguments go to gpu_check.py (e.g. --cpu-smoke, --only train_lora_4B,generate, --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec python3 benchmarks/gpu_check.py "$@"
